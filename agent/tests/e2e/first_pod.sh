#!/usr/bin/env bash
# End-to-end, as root: the control plane and the node agent in a lab network namespace (no route out), a busybox
# image built here and imported into the agent's store, one pod through the real path (API → scheduler → agent →
# sandbox → skiff-runtime), its logs through the API server, its network, and a delete that leaves nothing behind.
# Usage: first_pod.sh BIN_DIR   (BIN_DIR holds skiff-controlplane, skiff-agent, skiff-runtime, skiff-images)
set -u
BIN=$(realpath "${1:?usage: first_pod.sh BIN_DIR}")
skip() { echo "skipping first-pod e2e: $1"; echo "first pod e2e: 0 passed, 0 failed"; exit 0; }
[ "$(id -u)" = 0 ] || skip "not running as root"
for tool in ip nsenter umoci busybox kubectl curl; do command -v "$tool" >/dev/null || skip "$tool is missing"; done
[ -e /proc/self/ns/net ] || skip "no network namespaces"

WORK=$(mktemp -d /tmp/skiff-first-pod.XXXXXX)
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
  for a in sh echo sleep cat ls ip hostname; do ln -sf busybox "bundle/rootfs/bin/$a"; done &&
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
cat >"$WORK/pod.yaml" <<'Y'
apiVersion: v1
kind: Pod
metadata: {name: hello}
spec:
  terminationGracePeriodSeconds: 10
  containers:
  - name: hello
    image: localhost/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "trap 'exit 0' TERM; echo hello from skiff; echo ip $(hostname); while true; do sleep 1 & wait; done"]
Y
if k apply -f "$WORK/pod.yaml" >/dev/null; then pass "create the pod"; else fail "create the pod"; fi
eventually "pod is Running on the node" '^hello +1/1 +Running +0 .*lab-node' 60 -- k get pod hello -o wide --no-headers
IP=$(k get pod hello -o 'jsonpath={.status.podIP}')
if [[ "$IP" =~ ^10\.244\.0\.[0-9]+$ ]]; then pass "pod IP $IP is in the node's pod CIDR"; else fail "pod IP in the pod CIDR" "$IP"; fi
eventually "kubectl logs through the API server" 'hello from skiff' 20 -- k logs hello
if lab busybox ping -c 1 -W 2 "$IP" >/dev/null 2>&1; then pass "the pod answers on its IP (inside the lab)"; else
  [ -n "${E2E_PAUSE:-}" ] && sleep "$E2E_PAUSE"
  fail "ping the pod" "$(ip -n "$LAB" -br addr; ip -n "$LAB" route; for n in "$WORK"/run/netns/*; do nsenter --net="$n" ip -br addr; nsenter --net="$n" ip route; done)"
fi
START=$(date +%s)
if k delete pod hello --timeout=60s >/dev/null 2>&1; then pass "delete the pod ($(( $(date +%s) - START )) s)"; else fail "delete the pod"; fi
eventually "the pod is gone from the API" 'NotFound|not found' 40 -- k get pod hello
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
echo "first pod e2e: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
