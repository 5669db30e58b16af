#!/usr/bin/env bash
# Torque/PBS client commands for distproc's `pbs` tests: Slurm's Torque wrappers (Debian's
# slurm-wlm-torque: qsub, qstat, qdel, ... as perl scripts over sbatch/squeue/scancel), used against the
# Slurm cluster of tests/services/slurm.sh.
#
#   tests/services/torque.sh install DIR   put the wrappers in DIR/bin (put DIR/bin first on PATH)
#
# The package is unpacked, not installed: it conflicts with gridengine-client (both ship qsub), and the
# `sge` tests need Grid Engine's. Its perl dependencies are installed. The wrappers call sbatch etc. from
# their own directory, so DIR/bin links Slurm's commands beside them. Needs root for apt-get.
set -euo pipefail

action=${1:?usage: torque.sh install DIR}
dir=${2:?usage: torque.sh install DIR}
[[ $action == install ]] || { echo "usage: torque.sh install DIR" >&2; exit 2; }

export DEBIAN_FRONTEND=noninteractive
perl_deps=(libslurm-perl libslurmdb-perl libswitch-perl)
if ! dpkg -s "${perl_deps[@]}" >/dev/null 2>&1; then
  apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends "${perl_deps[@]}" >/dev/null 2>&1 \
    || { apt-get update >/dev/null && apt-get -o DPkg::Lock::Timeout=300 install -y \
           --no-install-recommends "${perl_deps[@]}" >/dev/null; }
fi
mkdir -p "$dir/deb" "$dir/root" "$dir/bin"
(cd "$dir/deb" && apt-get download slurm-wlm-torque >/dev/null 2>&1) \
  || { apt-get update >/dev/null && (cd "$dir/deb" && apt-get download slurm-wlm-torque >/dev/null); }
dpkg-deb -x "$dir"/deb/slurm-wlm-torque_*.deb "$dir/root"
for command in qsub qstat qdel; do
  cp "$dir/root/usr/bin/$command" "$dir/bin/$command"
done
for command in sbatch salloc srun squeue scancel scontrol; do
  ln -sf "$(command -v "$command")" "$dir/bin/$command"
done
