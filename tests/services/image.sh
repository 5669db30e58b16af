#!/usr/bin/env bash
# Container tools and a chroot launcher for distproc's `image` tests (tests/test_image.py).
#
#   tests/services/image.sh install          install podman and debootstrap (Debian packages) if missing
#   tests/services/image.sh base IMAGE       make the local base image IMAGE unless podman has it: a
#                                            minimal Debian (debootstrap, the host's release, python3 and
#                                            python3-venv) imported with `podman import` (no registry
#                                            is needed)
#   tests/services/image.sh exec ROOT BINDS -- CMD...
#                                            run CMD inside the file system ROOT (a mounted image or an
#                                            unpacked image directory) with the host's network and
#                                            processes: a private mount namespace (unshare -m) binds
#                                            /dev, /proc, /sys and each directory of the colon-separated
#                                            BINDS at the same path, then chroot. The stand-in for
#                                            `apptainer exec --bind BINDS ROOT CMD...` where no container
#                                            can be run (podman run fails in distproc's sandbox).
# Needs root.
set -euo pipefail

action=${1:?usage: image.sh install|base|exec ...}

if [[ $action == install ]]; then
  if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    pkgs=(podman debootstrap)
    apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1 \
      || { apt-get update >/dev/null && apt-get -o DPkg::Lock::Timeout=300 install -y \
             --no-install-recommends "${pkgs[@]}" >/dev/null; }
  fi
  podman --version
  exit 0
fi

if [[ $action == base ]]; then
  image=${2:?usage: image.sh base IMAGE}
  podman image exists "$image" && exit 0
  # shellcheck disable=SC1091
  release=$(. /etc/os-release && echo "${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}")
  mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
  rootfs=$(mktemp -d "${TMPDIR:-/tmp}/distproc-rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv "$release" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
    || { tail -n 30 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
  rm -f "$rootfs.log"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
  exit 0
fi

if [[ $action == exec ]]; then
  root=${2:?usage: image.sh exec ROOT BINDS -- CMD...}
  binds=${3?usage: image.sh exec ROOT BINDS -- CMD...}
  [[ ${4:-} == -- ]] || { echo "usage: image.sh exec ROOT BINDS -- CMD..." >&2; exit 2; }
  shift 4
  [[ -x $root/bin/sh ]] || { echo "image.sh: $root is not an image's file system (no /bin/sh)" >&2; exit 2; }
  # The host's Python settings would point the image's Python at host paths.
  unset PYTHONPATH PYTHONHOME VIRTUAL_ENV
  exec unshare --mount --propagation private -- bash -c '
    set -e
    root=$1 binds=$2; shift 2
    mount --rbind /dev "$root/dev"
    mount -t proc proc "$root/proc"
    mount --rbind /sys "$root/sys"
    IFS=: read -r -a dirs <<<"$binds"
    for dir in "${dirs[@]}"; do
      [[ -n $dir ]] || continue
      mkdir -p "$root$dir"
      mount --bind "$dir" "$root$dir"
    done
    for file in /etc/hosts /etc/resolv.conf; do  # as apptainer does
      if [[ -f $file && -f $root$file ]]; then mount --bind "$file" "$root$file"; fi
    done
    exec chroot "$root" "$@"
  ' image-exec "$root" "$binds" "$@"
fi

echo "usage: image.sh install|base|exec ..." >&2
exit 2
