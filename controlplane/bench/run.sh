#!/usr/bin/env bash
# Store and API benchmarks, side by side with their peers (raw SQLite, etcd 3.4) in the same run.
# Prints Markdown tables (copied into docs/benchmarks.md). Only 127.0.0.1 is used.
# Usage: bash controlplane/bench/run.sh [SECONDS]   (SKIFF_BENCH_PROFILE=debug: skip the release build; slower)
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-5}
if ! command -v etcd >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
fi
PROFILE=${SKIFF_BENCH_PROFILE:-release}
if [ "$PROFILE" = release ]; then cargo build --release --locked -p skiff-controlplane >&2; else cargo build --locked -p skiff-controlplane >&2; fi
BENCH=${CARGO_TARGET_DIR:-./target}/$PROFILE/skiff-bench
WORK=$(mktemp -d /var/tmp/skiff-bench.XXXXXX)
ETCD_PID=""
cleanup() { if [ -n "$ETCD_PID" ]; then kill "$ETCD_PID" 2>/dev/null; wait "$ETCD_PID" 2>/dev/null || true; fi; rm -rf "$WORK"; }
trap cleanup EXIT
CPORT=$((23000 + RANDOM % 1000)); PPORT=$((CPORT + 1000))
etcd --name bench --data-dir "$WORK/etcd" \
  --listen-client-urls "http://127.0.0.1:$CPORT" --advertise-client-urls "http://127.0.0.1:$CPORT" \
  --listen-peer-urls "http://127.0.0.1:$PPORT" --initial-advertise-peer-urls "http://127.0.0.1:$PPORT" \
  --initial-cluster "bench=http://127.0.0.1:$PPORT" --log-level error >"$WORK/etcd.log" 2>&1 &
ETCD_PID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$CPORT/health" >/dev/null 2>&1 && break; sleep 0.1; done

echo "# skiff-bench $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(uname -r); etcd $(etcd --version | head -1 | awk '{print $3}')"
$BENCH store --seconds "$SECS" --writers 1,32 --dir "$WORK"
$BENCH api --seconds "$SECS" --clients 1,32 --etcd "http://127.0.0.1:$CPORT" --dir "$WORK"
$BENCH watch --watchers 100 --events 500 --dir "$WORK"
$BENCH memory --pods 10000 --dir "$WORK"
