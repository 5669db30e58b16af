#!/usr/bin/env bash
# Start or stop an XRootD server on localhost for distproc's `xrootd` tests.
#
#   tests/services/xrootd.sh install                   install Debian's xrootd-server if missing
#   tests/services/xrootd.sh start DIR PORT [FILE...]   install it if missing, copy
#                                                      FILEs into DIR/data and serve DIR/data read-only
#                                                      as root://localhost:PORT//DIR/data/NAME, and
#                                                      DIR/scratch writable (checkpoints written there)
#   tests/services/xrootd.sh stop DIR                  stop it (by its pid file)
#
# xrootd refuses to run as root, so it runs as the `xrootd` user (created if missing); DIR/data must be
# readable by that user, hence DIR is made world-readable. Needs root to install and to switch user.
set -euo pipefail

install_packages() {
  if ! command -v xrootd >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends xrootd-server >/dev/null 2>&1 \
      || { apt-get update >/dev/null && apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends xrootd-server >/dev/null; }
  fi
}

action=${1:?usage: xrootd.sh install | start DIR PORT [FILE...] | stop DIR}
if [[ $action == install ]]; then install_packages; exit 0; fi
dir=${2:?usage: xrootd.sh start DIR PORT [FILE...] | stop DIR}
pidfile=$dir/run/xrootd.pid

# shellcheck source=pidfile.sh
source "$(dirname "${BASH_SOURCE[0]}")/pidfile.sh"

if [[ $action == stop ]]; then
  stop_pidfile "$pidfile"
  exit 0
fi
[[ $action == start ]] || { echo "usage: xrootd.sh start DIR PORT [FILE...] | stop DIR" >&2; exit 2; }
port=${3:?usage: xrootd.sh start DIR PORT [FILE...]}
shift 3

install_packages
id xrootd >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin xrootd

mkdir -p "$dir/data" "$dir/run" "$dir/scratch"
for file in "$@"; do cp "$file" "$dir/data/"; done
chmod 0755 "$dir" "$dir/data"
chmod -R a+rX "$dir/data"
chown xrootd:xrootd "$dir/run" "$dir/scratch"
cat > "$dir/xrootd.cfg" <<CONF
all.export $dir/data r/o
all.export $dir/scratch
all.adminpath $dir/run
all.pidpath $dir/run
xrd.port $port
xrootd.chksum adler32
CONF

# -b daemonizes; the log goes to $dir/run/distproc/xrootd.log (xrootd adds the instance name).
(cd "$dir/run" && xrootd -b -R xrootd -n distproc -c "$dir/xrootd.cfg" -l "$dir/run/xrootd.log" -s "$pidfile")
for _ in $(seq 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    exit 0
  fi
  sleep 0.1
done
echo "xrootd did not start listening on port $port; log:" >&2
tail -n 30 "$dir"/run/distproc/xrootd.log >&2 || true
exit 1
