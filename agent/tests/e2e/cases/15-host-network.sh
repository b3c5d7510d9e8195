# hostNetwork: the pod shares the node's network (here: the lab namespace), reports the node's IP, and gets no
# namespace, veth or pod IP of its own.
cat >"$WORK/hostnet.yaml" <<'Y'
apiVersion: v1
kind: Pod
metadata: {name: hostnet}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    image: localhost/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /www; echo from-host-network >/www/index.html; exec httpd -f -p 127.0.0.1:18080 -h /www"]
Y
k apply -f "$WORK/hostnet.yaml" >/dev/null && pass "create a hostNetwork pod" || fail "create a hostNetwork pod"
eventually "hostNetwork pod Running" '^hostnet +1/1 +Running' 60 -- k get pod hostnet --no-headers
ip=$(k get pod hostnet -o 'jsonpath={.status.podIP}')
[ "$ip" = 127.0.0.1 ] && pass "its pod IP is the node's" || fail "hostNetwork pod IP" "$ip"
eventually "it serves on the node's own address" 'from-host-network' 20 -- lab busybox wget -qO- http://127.0.0.1:18080/
out=$(k exec hostnet -- ip -o link 2>&1)
grep -q skiff0 <<<"$out" && pass "it sees the node's interfaces" || fail "hostNetwork interfaces" "$out"
[ "$(ls "$WORK/run/netns" 2>/dev/null | wc -l)" = 0 ] && pass "no network namespace made for it" || fail "hostNetwork pod got a netns"
k delete pod hostnet --timeout=60s >/dev/null 2>&1 && pass "delete the hostNetwork pod" || fail "delete the hostNetwork pod"
