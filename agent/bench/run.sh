#!/usr/bin/env bash
# Agent benchmarks, as root in a lab network namespace (the e2e cluster of agent/tests/e2e/lib.sh):
# pod startup latency (API create → seen Ready, image present) for pods created one by one and 50 at once,
# delete-to-gone latency, and the agent's memory idle and with 50 pods.
# Usage: agent/bench/run.sh [BIN_DIR]   (default target/release; build with `cargo build --release --workspace`)
set -u
cd "$(dirname "$0")/../.."
BIN=$(realpath "${1:-target/release}")
E2E_NAME="agent bench"
# shellcheck source=../tests/e2e/lib.sh
source agent/tests/e2e/lib.sh
[ "$FAILED" = 0 ] || { echo "cluster setup failed"; exit 1; }
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null; }
# Proportional set size: the monitors share the binary's pages, which RSS would count once per monitor.
pss() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null; }
monitors_pss() { local t=0; for p in $(ps -eo pid=,args= | grep -F "$WORK/" | grep -E '(skiff-monitor| monitor) ' | grep -v grep | awk '{print $1}'); do t=$((t + $(pss "$p"))); done; echo "$t"; }
bench() { nsenter --net="/run/netns/$LAB" "$BIN/skiff-agent-bench" --kubeconfig "$WORK/cp/kubeconfig" "$@"; }

sleep 5
IDLE=$(rss "$AGENT_PID")
echo "== one by one (20 pods)"
bench --mode serial --pods 20 | tee "$WORK/serial.txt"
echo "== 50 at once"
( peak=0; while kill -0 "$AGENT_PID" 2>/dev/null && [ ! -e "$WORK/stop-sampling" ]; do r=$(rss "$AGENT_PID"); [ "${r:-0}" -gt "$peak" ] && peak=$r && echo "$peak" >"$WORK/peak"; sleep 0.2; done ) &
SAMPLER=$!
# CPU time the whole machine spends from the 50 creates to all Ready (every process: API server, scheduler, agent,
# runtime, monitors, containers): a steadier measure of the work than the latency on this shared VM.
busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
BUSY0=$(busy)
bench --mode parallel --pods 50 --hold-secs 8 | tee "$WORK/parallel.txt" &
B=$!
# While the 50 pods are held: the agent's and the monitors' memory.
for _ in $(seq 1 1200); do grep -q '^holding' "$WORK/parallel.txt" 2>/dev/null && break; sleep 0.1; done
BUSY1=$(busy)
sleep 4
WITH50=$(rss "$AGENT_PID"); MON50=$(monitors_pss); NMON=$(ps -eo args= | grep -F "$WORK/" | grep -cE '(skiff-monitor| monitor) ')
wait "$B"; touch "$WORK/stop-sampling"; wait "$SAMPLER"
PEAK=$(cat "$WORK/peak" 2>/dev/null || echo 0)
echo
echo "| measure | value | goal |"
echo "|---|---|---|"
sed -n 's/^startup (serial.*: n=\([0-9]*\) p50=\([0-9]*ms\) p90=\([0-9]*ms\) p99=\([0-9]*ms\).*/| startup one by one (n=\1) p50 \/ p99 | \2 \/ \4 | p99 ≤ 1000ms |/p' "$WORK/serial.txt"
sed -n 's/^startup (parallel, 50 pods, all Ready in \([0-9.]*s\)): n=\([0-9]*\) p50=\([0-9]*ms\) p90=\([0-9]*ms\) p99=\([0-9]*ms\).*/| startup 50 at once p50 \/ p99 (all Ready in \1) | \3 \/ \5 | p99 ≤ 1000ms |/p' "$WORK/parallel.txt"
sed -n 's/^delete-to-gone (\([0-9]*\) pods.*: n=[0-9]* p50=\([0-9]*ms\) p90=[0-9]*ms p99=\([0-9]*ms\).*/| delete-to-gone, \1 at once, p50 \/ p99 | \2 \/ \3 | |/p' "$WORK/parallel.txt" "$WORK/serial.txt"
echo "| CPU time, 50 at once, create to all Ready (all processes) | $(( (BUSY1 - BUSY0) * 1000 / $(getconf CLK_TCK) )) ms | |"
# KiB from /proc → MB (10^6 bytes, the goal's unit) with one decimal.
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k * 1024 / 1e6 }'; }
echo "| agent RSS idle | $(mb "$IDLE") MB | ≤ 30 MB |"
echo "| agent RSS with 50 pods (peak during the run) | $(mb "$WITH50") MB ($(mb "$PEAK") MB) | ≤ 30 MB |"
echo "| per-container monitors with 50 pods (PSS each) | $NMON × $(( MON50 / (NMON > 0 ? NMON : 1) )) KiB | |"
