# Sourced by the service scripts beside it.
# stop_pidfile FILE: stop the process whose pid FILE holds (TERM, then KILL after 5 s) and remove FILE.
# A pid file left by another boot or machine (Grid Engine's spool is machine-wide) may name a pid that is
# now someone else's: only a process whose command name contains FILE's stem (execd.pid: sge_execd) is
# stopped.
stop_pidfile() {
  local pidfile=$1 pid stem
  [[ -f $pidfile ]] || return 0
  pid=$(cat "$pidfile")
  stem=$(basename "$pidfile" .pid)
  if kill -0 "$pid" 2>/dev/null && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == *"$stem"* ]]; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$pidfile"
}
