#!/usr/bin/env bash
# End-to-end, as root: the control plane and the node agent in a lab network namespace (no route out), a busybox
# image built here and imported into the agent's store, then every case in cases/*.sh (in name order) against that
# one cluster: pods through the real path (API → scheduler → agent → sandbox → skiff-runtime).
# Usage: run.sh BIN_DIR [CASE...]   (BIN_DIR holds skiff-controlplane, skiff-agent, skiff-runtime, skiff-images;
#        CASE: a name like 10-first-pod to run only some cases)
# Each case file is sourced: it uses k (kubectl in the lab), lab, pass, fail, eventually, $WORK, $BIN, $LAB and
# must leave no pod behind.
set -u
BIN=$(realpath "${1:?usage: run.sh BIN_DIR [CASE...]}")
shift
HERE=$(dirname "$(realpath "$0")")
ONLY=("$@")
skip() { echo "skipping agent e2e: $1"; echo "agent e2e: 0 passed, 0 failed"; exit 0; }
[ "$(id -u)" = 0 ] || skip "not running as root"
for tool in ip nsenter umoci busybox kubectl curl; do command -v "$tool" >/dev/null || skip "$tool is missing"; done
[ -e /proc/self/ns/net ] || skip "no network namespaces"

WORK=$(mktemp -d /tmp/skiff-agent-e2e.XXXXXX)
LAB=skiff-e2e-$$
CGROOT=skiff-e2e-$$
PORT=$((21000 + RANDOM % 20000))
CP_PID=""; AGENT_PID=""
PASSED=0; FAILED=0
export HOME=$WORK/home KUBECACHEDIR=$WORK/home/cache KUBECONFIG=$WORK/cp/kubeconfig
mkdir -p "$HOME"

cleanup() {
  for pid in $AGENT_PID $CP_PID; do kill "$pid" 2>/dev/null; done
  for pid in $AGENT_PID $CP_PID; do wait "$pid" 2>/dev/null; done
  # After a failed run, container monitors (their own sessions, by design) may still run: they are ours when their
  # command line names this run's private temp dir. Stopped by PID.
  for pid in $(ps -eo pid=,args= | grep -F "$WORK/" | grep -v grep | awk '{print $1}'); do
    [ "$pid" != "$$" ] && kill -9 "$pid" 2>/dev/null
  done
  # Whatever a failed run left: mounts under WORK, cgroups under CGROOT, the lab namespace.
  grep -F " $WORK/" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/unified/ /sys/fs/cgroup/; do
    [ -d "$h$CGROOT" ] && find "$h$CGROOT" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  ip netns del "$LAB" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

pass() { PASSED=$((PASSED + 1)); echo "ok - $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL - $1"; [ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/    /'; }
lab() { nsenter --net="/run/netns/$LAB" "$@"; }
k() { lab kubectl --request-timeout=20s "$@"; }
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

# A busybox image, built here.
(
  cd "$WORK" && umoci init --layout oci >/dev/null && umoci new --image oci:busybox >/dev/null &&
  umoci unpack --image oci:busybox bundle >/dev/null 2>&1 && mkdir -p bundle/rootfs/bin &&
  cp "$(command -v busybox)" bundle/rootfs/bin/busybox &&
  for a in sh echo sleep cat ls ip hostname id env wc head nc httpd wget test grep sort mount touch stat; do ln -sf busybox "bundle/rootfs/bin/$a"; done &&
  umoci repack --image oci:busybox bundle >/dev/null && tar -C oci -cf busybox.tar .
) || { fail "build the test image"; exit 1; }
"$BIN/skiff-images" --root "$WORK/node/images" import --name localhost/busybox:1 "$WORK/busybox.tar" >/dev/null ||
  { fail "import the test image"; exit 1; }

ip netns add "$LAB" && ip -n "$LAB" link set lo up || { fail "create the lab namespace"; exit 1; }
# nsenter (not the lab function: that would fork a subshell and $! would not be the server's PID) execs the binary.
nsenter --net="/run/netns/$LAB" "$BIN/skiff-controlplane" --data-dir "$WORK/cp" --listen "127.0.0.1:$PORT" >"$WORK/cp.log" 2>&1 &
CP_PID=$!
for _ in $(seq 1 100); do [ -s "$WORK/cp/kubeconfig" ] && lab curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
nsenter --net="/run/netns/$LAB" "$BIN/skiff-agent" --node-name lab-node --node-ip 127.0.0.1 --port 0 --kubeconfig "$WORK/cp/kubeconfig" \
  --root-dir "$WORK/node" --run-dir "$WORK/run" --log-dir "$WORK/logs" --runtime "$BIN/skiff-runtime" \
  --cgroup-root "$CGROOT" >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!

eventually "node registers and is Ready" '^lab-node +Ready ' 60 -- k get nodes --no-headers
eventually "node has a lease" 'lab-node' 20 -- k -n kube-node-lease get leases --no-headers
for case_file in "$HERE"/cases/*.sh; do
  name=$(basename "$case_file" .sh)
  if [ ${#ONLY[@]} -gt 0 ] && ! printf '%s\n' "${ONLY[@]}" | grep -qx "$name"; then continue; fi
  echo "== case $name"
  # shellcheck source=/dev/null
  source "$case_file"
done

# Whatever the cases did, nothing of their pods may remain on the host.
eventually "no pod left in the API" '^No resources found' 60 -- k get pods -A
left=$(ls "$WORK/run/netns" 2>/dev/null | wc -l)
[ "$left" = 0 ] && pass "no network namespace left" || fail "network namespaces left: $left"
links=$(ip -n "$LAB" -o link | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -vE '^(lo|skiff0)$' | wc -l)
[ "$links" = 0 ] && pass "no veth left" || fail "links left: $links" "$(ip -n "$LAB" -o link)"
mounts=$(grep -cF " $WORK/node/" /proc/mounts)
[ "$mounts" = 0 ] && pass "no rootfs mount left" || fail "mounts left: $mounts"
cgs=$(for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/unified/; do [ -d "$h$CGROOT" ] && find "$h$CGROOT" -mindepth 1 -type d; done | wc -l)
[ "$cgs" = 0 ] && pass "no pod cgroup left" || fail "cgroups left: $cgs"
monitors=$(ps -eo args= | grep -F "$WORK" | grep -cF " monitor ")
[ "$monitors" = 0 ] && pass "no monitor process left" || fail "monitors left: $monitors"

if [ "$FAILED" -gt 0 ]; then
  echo "--- agent log (tail)"; tail -30 "$WORK/agent.log"
fi
echo "agent e2e: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
