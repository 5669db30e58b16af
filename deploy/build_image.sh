#!/usr/bin/env bash
# Build the distproc worker image from deploy/Dockerfile with podman (or docker), and on failure say
# which build step failed and why.
#
#   deploy/build_image.sh [-t TAG] [--base IMAGE] [--wheels DIR] [-- EXTRA BUILD ARGS...]
#
#   -t TAG         image name (default distproc:VERSION, VERSION from pyproject.toml)
#   --base IMAGE   base image (the Dockerfile's BASE_IMAGE; default python:PYTHON_VERSION-slim); its
#                  python3 must be the client's major.minor
#   --wheels DIR   install offline from the wheels in DIR (e.g. made by `pip download -r
#                  deploy/requirements.txt -d DIR hatchling`); mounted at /wheels during the build
#   CONTAINER_ENGINE=podman|docker picks the engine (default: podman when installed). podman honours
#   BUILDAH_ISOLATION (e.g. chroot where containers cannot be run, as in distproc's tests).
#
# Run from anywhere; the build context is the repository root. Exit status: the engine's.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$root/pyproject.toml" | head -n1)
tag="distproc:$version"
args=()
while (($#)); do
  case $1 in
    -t|--tag) tag=${2:?-t needs a name}; shift 2 ;;
    --base) args+=(--build-arg "BASE_IMAGE=${2:?--base needs an image}"); base=$2; shift 2 ;;
    --wheels)
      wheels=$(cd "${2:?--wheels needs a directory}" && pwd)
      args+=(--build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/wheels --volume "$wheels:/wheels:ro")
      shift 2 ;;
    --) shift; args+=("$@"); break ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build_image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

engine=${CONTAINER_ENGINE:-}
if [[ -z $engine ]]; then
  if command -v podman >/dev/null; then engine=podman
  elif command -v docker >/dev/null; then engine=docker
  else echo "build_image.sh: neither podman nor docker is installed" >&2; exit 127
  fi
fi

log=$(mktemp "${TMPDIR:-/tmp}/distproc-build.XXXXXX")
trap 'rm -f "$log"' EXIT
status=0
"$engine" build -f "$root/deploy/Dockerfile" -t "$tag" "${args[@]}" "$root" 2>&1 | tee "$log" \
  || status=${PIPESTATUS[0]}
if ((status == 0)); then
  echo "build_image.sh: built $tag with $engine"
  exit 0
fi

# podman prints "STEP 3/12: RUN ...", docker (BuildKit) "#7 [3/9] RUN ..." before each step: the last one
# printed is the one that failed.
step=$(grep -E '^STEP [0-9]+/[0-9]+: ' "$log" | tail -n1 | sed 's/^STEP //') || true
if [[ -z $step ]]; then
  step=$(grep -oE '\[ *[^]]*[0-9]+/[0-9]+\] .*' "$log" | tail -n1 | sed -E 's/^\[ *([^]]*)\] /\1: /') || true
fi
case ${step#*: } in
  FROM*)
    why="the base image ${base:-of the Dockerfile (python:PYTHON_VERSION-slim)} is not present locally and could not be pulled; pull or import it, or pass --base an image that exists" ;;
  *"pip install -r"*)
    why="pip could not install deploy/requirements.txt (a version that does not exist or does not fit this Python, or no package index: see pip's error above; --wheels DIR installs offline)" ;;
  *"pip install --no-deps"*)
    why="distproc itself did not install, or pip check / the import check failed (see the output above)" ;;
  "")
    step="(none started)"; why="$engine failed before the first step (see its error above)" ;;
  *)
    why="see the output above" ;;
esac
echo "build_image.sh: building $tag failed at step ${step}" >&2
echo "build_image.sh: $why" >&2
exit "$status"
