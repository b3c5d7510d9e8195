#!/usr/bin/env bash
# The netproxy benchmark (docs/benchmarks.md): full sync and one-Service change at 1,000 and 10,000 Services against
# the kube-proxy-shaped anchor, on both iptables backends, each run in a fresh network namespace. Root only.
# Usage: bash netproxy/bench/run.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --locked -p skiff-netproxy --bin skiff-netproxy-bench
exec ./target/release/skiff-netproxy-bench --services 1000,10000 --runs "${1:-3}" --changes 5 \
  --anchor "${ANCHOR:-../shared/tools/kube-proxy-ruleset.py}"
