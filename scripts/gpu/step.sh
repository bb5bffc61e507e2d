# Sourced by the device scripts: `step NAME SECONDS COMMAND...` runs one Python process under its own timeout (a
# call that ends with a process still running loses the next device call), its output in $work/logs/NAME.log, shows
# the lines matching $SHOW (and errors), then calls the script's `pack`, so a call stopped at its limit keeps what
# ended. STEPS=a,b runs only the steps named.
step() {
  local name=$1 seconds=$2; shift 2
  [[ -z "${STEPS:-}" || ",$STEPS," == *",$name,"* ]] || return 0
  echo "== $name: $*"
  timeout -k 5 "$seconds" "$@" > "$work/logs/$name.log" 2>&1; echo "   exit $?"
  grep -E "${SHOW:-tok/s}|rror|Traceback" "$work/logs/$name.log" | cut -c1-200 | tail -n "${SHOW_LINES:-16}"
  pack
}
