# tests/launch/run_lib.sh — sourced by the launch tests: `run NAME CMD...` runs CMD with its output
# in NAME.log and its wall time (seconds) in NAME.s, and on a non-zero status prints the log's tail
# and sets fail=1; `now` gives milliseconds, `secs MS` prints them as seconds.
# shellcheck shell=bash
now() { date +%s%3N; }  # milliseconds
secs() { printf '%d.%02d' $(($1 / 1000)) $(($1 % 1000 / 10)); }
run() {  # name, then the command; keeps its output in name.log, its wall time in name.s
  local name=$1 t0
  shift
  t0=$(now)
  "$@" >"$name.log" 2>&1
  local rc=$?
  secs $(($(now) - t0)) >"$name.s"
  if ((rc != 0)); then
    echo "FAIL: $name exited with $rc:"
    tail -20 "$name.log"
    # shellcheck disable=SC2034  # read by the script that sources this
    fail=1
  fi
}
