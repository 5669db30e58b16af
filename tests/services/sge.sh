#!/usr/bin/env bash
# Start or stop a one-host Grid Engine cluster on localhost for distproc's `sge` tests.
#
#   tests/services/sge.sh install      install Debian's gridengine-master/-exec/-client if missing
#   tests/services/sge.sh start DIR    install them if missing, start
#                                      sge_qmaster and sge_execd, and make localhost an admin, submit and
#                                      execution host with a queue all.q of SGE_SLOTS slots
#   tests/services/sge.sh stop DIR     stop both daemons (by their pid files)
#
# Client commands (qsub, qstat, qdel) need the environment written to DIR/env (SGE_ROOT, SGE_CELL and
# the two ports). Works without systemd: the daemons are started directly. Needs root (CI runs as root).
# Grid Engine's cell (/var/lib/gridengine/default) and spool are machine-wide: one cluster at a time.
# Environment: SGE_QMASTER_PORT (default 6444), SGE_EXECD_PORT (6445), SGE_SLOTS (8).
# Jobs run as the submitting user; root, as in CI, is allowed by lowering min_uid/min_gid to 0.
set -euo pipefail
# Grid Engine's own client commands, whatever else on PATH is called qsub/qstat (Slurm's Torque wrappers).
export PATH=/usr/bin:/usr/sbin:$PATH

install_packages() {
  if ! command -v qsub >/dev/null || ! command -v qconf >/dev/null || [[ ! -x /usr/sbin/sge_qmaster ]] \
     || [[ ! -x /usr/sbin/sge_execd ]]; then
    export DEBIAN_FRONTEND=noninteractive
    # Debian's postinst creates the cell when asked to configure it.
    debconf-set-selections <<SEL
gridengine-common gridengine/gridengineconfig boolean true
gridengine-master gridengine/gridengineconfig boolean true
gridengine-client gridengine/gridengineconfig boolean true
gridengine-common gridengine/gridenginemaster string localhost
gridengine-client gridengine/gridenginemaster string localhost
gridengine-master gridengine/gridenginemaster string localhost
SEL
    pkgs=(gridengine-master gridengine-exec gridengine-client)
    apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1 \
      || { apt-get update >/dev/null && apt-get -o DPkg::Lock::Timeout=300 install -y \
             --no-install-recommends "${pkgs[@]}" >/dev/null; }
  fi
}

action=${1:?usage: sge.sh install | sge.sh start|stop DIR}
if [[ $action == install ]]; then install_packages; exit 0; fi
dir=${2:?usage: sge.sh start|stop DIR}
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
export SGE_QMASTER_PORT=${SGE_QMASTER_PORT:-6444} SGE_EXECD_PORT=${SGE_EXECD_PORT:-6445}
slots=${SGE_SLOTS:-8}
spool=/var/spool/gridengine

# shellcheck source=pidfile.sh
source "$(dirname "${BASH_SOURCE[0]}")/pidfile.sh"

if [[ $action == stop ]]; then
  stop_pidfile "$spool/execd/localhost/execd.pid"
  stop_pidfile "$spool/qmaster/qmaster.pid"
  exit 0
fi
[[ $action == start ]] || { echo "usage: sge.sh start|stop DIR" >&2; exit 2; }

install_packages
[[ -f $SGE_ROOT/$SGE_CELL/common/bootstrap ]] \
  || { echo "no Grid Engine cell in $SGE_ROOT/$SGE_CELL (the package's configuration did not run)" >&2; exit 1; }

mkdir -p "$dir"
# The qmaster compares the name a client's address resolves to with the name the client sends: on
# loopback both are made "localhost", whatever this machine calls itself.
echo localhost > "$SGE_ROOT/$SGE_CELL/common/act_qmaster"
echo "localhost $(hostname -s) $(hostname)" > "$SGE_ROOT/$SGE_CELL/common/host_aliases"
mkdir -p /var/run/gridengine "$spool/execd"
chown sgeadmin:sgeadmin /var/run/gridengine "$spool/execd"

if ! qconf -sh >/dev/null 2>&1; then
  /usr/sbin/sge_qmaster
  for _ in $(seq 100); do qconf -sh >/dev/null 2>&1 && break; sleep 0.2; done
fi
qconf -sh >/dev/null || { echo "sge_qmaster did not start:" >&2; tail -n 20 "$spool/qmaster/messages" >&2; exit 1; }

# Configuration (idempotent: each object is added only when missing). qconf's -m*/-a* commands edit
# with $EDITOR: a sed script is the editor.
editor() {  # editor NAME SED-EXPRESSION...: a script editing its argument in place
  local script=$dir/$1; shift
  printf '#!/bin/sh\nexec sed -i' > "$script"
  printf " -e '%s'" "$@" >> "$script"
  printf ' "$1"\n' >> "$script"
  chmod +x "$script"
  echo "$script"
}
qconf -ss 2>/dev/null | grep -qx localhost || qconf -as localhost >/dev/null
EDITOR=$(editor conf.sed 's/^min_uid .*/min_uid 0/' 's/^min_gid .*/min_gid 0/') qconf -mconf >/dev/null 2>&1
# Schedule every second and on each submission/finish, not every 15 s.
EDITOR=$(editor sched.sed 's/^schedule_interval .*/schedule_interval 0:0:1/' 's/^flush_submit_sec .*/flush_submit_sec 1/' \
  's/^flush_finish_sec .*/flush_finish_sec 1/') qconf -msconf >/dev/null 2>&1
if ! qconf -sel 2>/dev/null | grep -qx localhost; then
  cat > "$dir/exechost" <<HOST
hostname              localhost
load_scaling          NONE
complex_values        NONE
user_lists            NONE
xuser_lists           NONE
projects              NONE
xprojects             NONE
usage_scaling         NONE
report_variables      NONE
HOST
  qconf -Ae "$dir/exechost" >/dev/null
fi
# The queue: every slot on localhost, whatever the load (a busy shared machine would put it in alarm).
queue_op=-aq
qconf -sql 2>/dev/null | grep -qx all.q && queue_op=-mq
EDITOR=$(editor queue.sed 's/^hostlist .*/hostlist localhost/' "s/^slots .*/slots $slots/" \
  's|^shell .*|shell /bin/bash|' 's/^pe_list .*/pe_list NONE/' 's/^load_thresholds .*/load_thresholds NONE/') \
  qconf "$queue_op" all.q >/dev/null

if ! qstat -f -q all.q@localhost 2>/dev/null | grep -q '^all.q@localhost .* [0-9.]\+ *lx-amd64 *$'; then
  stop_pidfile "$spool/execd/localhost/execd.pid"
  /usr/sbin/sge_execd
fi
cat > "$dir/env" <<ENV
SGE_ROOT=$SGE_ROOT
SGE_CELL=$SGE_CELL
SGE_QMASTER_PORT=$SGE_QMASTER_PORT
SGE_EXECD_PORT=$SGE_EXECD_PORT
ENV
# The queue instance is usable once the execd reports a load (state column empty, not "au").
for _ in $(seq 150); do
  if qstat -f -q all.q@localhost 2>/dev/null | grep -qE '^all\.q@localhost +BI[PC]* +[0-9]+/[0-9]+/[0-9]+ +[0-9.]+ +[a-z0-9-]+ *$'; then
    exit 0
  fi
  sleep 0.2
done
echo "the Grid Engine execution host did not come up:" >&2
qstat -f >&2 || true
tail -n 20 "$spool/qmaster/messages" "$spool/execd/localhost/messages" >&2 || true
exit 1
