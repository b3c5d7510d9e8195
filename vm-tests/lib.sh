# Shared by every host backend: results, polling and timings. A backend sources this, then defines
#   k ARGS            kubectl against the cluster, from outside the hosts
#   on_host N CMD...  run CMD on host N (its network)
#   host_ip N, host_name N, HOSTS (count)
#   agent_run_dir N   the agent's --run-dir on host N, as on_host N sees it
#   stop_agent N / start_agent N, stop_proxy N / start_proxy N, stop_cp / start_cp, cut_link N / heal_link N
# and sources the scenarios (vm-tests/scenarios/*.sh, in name order).
PASSED=0; FAILED=0; KNOWN=0
TIMINGS=()
pass() { PASSED=$((PASSED + 1)); echo "ok - $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL - $1"; [ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/    /'; }
# A known bug, written up in docs/vm-tests.md ("Findings"): shown, counted apart, not failing the run.
known() { KNOWN=$((KNOWN + 1)); echo "KNOWN - $1"; }
now() { date +%s.%N; }
# elapsed T0: seconds since T0, one decimal.
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# timing NAME T0: print and record the seconds since T0.
timing() { local s; s=$(elapsed "$2"); echo "time - $1: ${s}s"; TIMINGS+=("$1: ${s}s"); }
# eventually NAME PATTERN TRIES -- CMD...: poll CMD every 0.5 s until its output matches PATTERN.
eventually() {
  local name=$1 pattern=$2 tries=$3; shift 4
  local out
  for _ in $(seq 1 "$tries"); do
    out=$("$@" 2>&1)
    grep -qE -- "$pattern" <<<"$out" && { pass "$name"; return 0; }
    sleep 0.5
  done
  fail "$name (never matched /$pattern/)" "$out"; return 1
}
# ready_count SELECTOR: how many pods matching SELECTOR are Running and ready.
ready_count() { k get pods -l "$1" --no-headers 2>/dev/null | grep -cE ' 1/1 +Running '; }
# pod_node POD: the node a pod is bound to.
pod_node() { k get pod "$1" -o 'jsonpath={.spec.nodeName}' 2>/dev/null; }
summary() {
  echo "== timings"
  printf '  %s\n' "${TIMINGS[@]}"
  echo "${RUN_NAME:-vm-tests}: $PASSED passed, $FAILED failed, $KNOWN known bugs seen"
}

# run_scenarios: every scenarios/*.sh in name order (only those named in ONLY, when given; 10-cluster always: it sets
# up what the others use), sourced in this shell; logs on failure, the timings and the summary. Its status is the
# run's: 0 when nothing failed. Needs HERE (the backend's dir), ONLY, HOSTS, WORK, T0 from the backend.
run_scenarios() {
  local f name S0 n
  for f in "$HERE"/../scenarios/*.sh; do
    name=$(basename "$f" .sh)
    if [ ${#ONLY[@]} -gt 0 ] && [ "$name" != 10-cluster ] && ! printf '%s\n' "${ONLY[@]}" | grep -qx "$name"; then continue; fi
    echo "== scenario $name"
    S0=$(now)
    # shellcheck source=/dev/null
    source "$f"
    timing "scenario $name" "$S0"
    if [ "$name" = 10-cluster ] && [ "$FAILED" -gt 0 ]; then echo "the cluster is not usable: skipping the other scenarios"; break; fi
  done
  if [ "$FAILED" -gt 0 ]; then
    for n in $(seq 1 "$HOSTS"); do echo "--- host $n agent log (tail)"; tail -15 "$WORK/h$n/agent.log"; done
    echo "--- control plane log (tail)"; tail -20 "$WORK/h1/cp.log"
  fi
  timing "whole run" "$T0"
  summary
  [ "$FAILED" -eq 0 ]
}
