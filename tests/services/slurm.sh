#!/usr/bin/env bash
# Start or stop a one-node Slurm cluster on localhost for distproc's `slurm` tests.
#
#   tests/services/slurm.sh install      install Debian's slurmctld/slurmd/slurm-client/munge if missing
#   tests/services/slurm.sh start DIR    install them if missing, write DIR/slurm.conf, start munged,
#                                        slurmctld and slurmd
#   tests/services/slurm.sh stop DIR     stop the daemons started for DIR (by their pid files)
#
# Client commands (sbatch, squeue, scancel) need SLURM_CONF=DIR/slurm.conf in their environment.
# Works without systemd: every daemon is started directly. Needs root (CI runs as root).
# Environment: SLURMCTLD_PORT (default 6817), SLURMD_PORT (6818), SLURM_NODE_CPUS (8),
# SLURM_NODE_MEMORY_MB (8000); the node's CPUs/memory are declared, not measured (config_overrides), so
# a 2-core machine can run several single-core workers.
set -euo pipefail

install_packages() {
  if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
     || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null 2>&1 \
      || { apt-get update >/dev/null && apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends \
             slurmctld slurmd slurm-client munge >/dev/null; }
  fi
}

action=${1:?usage: slurm.sh install | slurm.sh start|stop DIR}
if [[ $action == install ]]; then install_packages; exit 0; fi
dir=${2:?usage: slurm.sh start|stop DIR}
ctld_port=${SLURMCTLD_PORT:-6817}
slurmd_port=${SLURMD_PORT:-6818}
cpus=${SLURM_NODE_CPUS:-8}
memory=${SLURM_NODE_MEMORY_MB:-8000}

# shellcheck source=pidfile.sh
source "$(dirname "${BASH_SOURCE[0]}")/pidfile.sh"

if [[ $action == stop ]]; then
  stop_pidfile "$dir/slurmd.pid"
  stop_pidfile "$dir/slurmctld.pid"
  stop_pidfile "$dir/munged.pid"
  exit 0
fi
[[ $action == start ]] || { echo "usage: slurm.sh start|stop DIR" >&2; exit 2; }

install_packages

mkdir -p "$dir/state" "$dir/spool" "$dir/log"
host=$(hostname -s)

# munge: the key is made by the package; the daemon runs as the munge user with /run/munge its own.
if [[ ! -s /etc/munge/munge.key ]]; then
  mungekey --create --force 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
if ! munge -n >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
  for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
  cp /run/munge/munged.pid "$dir/munged.pid"
fi

cat > "$dir/slurm.conf" <<CONF
ClusterName=distproc
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=2
KillWait=2
InactiveLimit=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

export SLURM_CONF=$dir/slurm.conf
/usr/sbin/slurmctld -f "$SLURM_CONF"
/usr/sbin/slurmd -f "$SLURM_CONF"
for _ in $(seq 100); do
  if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
    exit 0
  fi
  sleep 0.1
done
echo "slurm did not become ready; logs in $dir/log:" >&2
tail -n 20 "$dir"/log/*.log >&2 || true
sinfo >&2 || true
exit 1
