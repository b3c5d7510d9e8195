# The first real pod: scheduled, Running with an IP of the pod CIDR, logs through the API, reachable, deleted.
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
# Any int64 sinceSeconds is a time before the log began (chrono's range ends ~262,000 years back).
eventually "logs with a sinceSeconds beyond the calendar" 'hello from skiff' 5 -- k get --raw "/api/v1/namespaces/default/pods/hello/log?sinceSeconds=9000000000000000"
eventually "logs with sinceSeconds=0 are refused as upstream" 'sinceSeconds: Invalid value: 0' 5 -- k get --raw "/api/v1/namespaces/default/pods/hello/log?sinceSeconds=0"
# The image's overlay is mounted by the runtime inside the container's mount namespace only: no rootfs mount on the
# host, and the container's / is the overlay, writable (into the pod's layer on disk).
n=$(grep -cE " $WORK/run/sandboxes/[^ ]*/rootfs " /proc/mounts)
[ "$n" = 0 ] && pass "no rootfs mount on the host" || fail "rootfs mounts on the host: $n" "$(grep " $WORK/run/sandboxes/" /proc/mounts)"
eventually "the container's root is the image's overlay" '^overlay / overlay ' 10 -- k exec hello -- grep ' / ' /proc/mounts
if k exec hello -- sh -c 'echo written > /written' && [ "$(cat "$WORK"/disk/node/pods/*/hello-0/upper/written 2>/dev/null)" = written ]; then
  pass "a write to / lands in the pod's writable layer"
else fail "a write to / lands in the pod's writable layer" "$(ls -R "$WORK"/disk/node/pods 2>&1 | head -20)"; fi
if lab busybox ping -c 1 -W 2 "$IP" >/dev/null 2>&1; then pass "the pod answers on its IP (inside the lab)"; else
  [ -n "${E2E_PAUSE:-}" ] && sleep "$E2E_PAUSE"
  fail "ping the pod" "$(ip -n "$LAB" -br addr; ip -n "$LAB" route; for n in "$WORK"/run/netns/*; do nsenter --net="$n" ip -br addr; nsenter --net="$n" ip route; done)"
fi
START=$(date +%s)
if k delete pod hello --timeout=60s >/dev/null 2>&1; then pass "delete the pod ($(( $(date +%s) - START )) s)"; else fail "delete the pod"; fi
eventually "the pod is gone from the API" 'NotFound|not found' 40 -- k get pod hello
