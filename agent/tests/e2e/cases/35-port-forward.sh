# kubectl port-forward through the API server to the agent: SPDY/3.1 tunneled in WebSocket (kubectl's default) and
# plain SPDY (its fallback), to a pod and to a Service, big transfers both ways, many connections at once, a port
# where nothing listens, and malformed frames sent straight to the agent.
cat >"$WORK/pf.yaml" <<'Y'
apiVersion: v1
kind: Pod
metadata: {name: pf, labels: {app: pf}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    image: localhost/busybox:1
    imagePullPolicy: Never
    # httpd on 80 (a small page and a 4 MiB file); on 9000 each connection gets the md5 of what it sent.
    command: ["sh", "-c", "mkdir -p /www && echo hello from pf >/www/index.html && dd if=/dev/urandom of=/www/big bs=1024 count=4096 2>/dev/null && printf '#!/bin/sh\\nexec busybox md5sum\\n' >/sum && busybox chmod +x /sum && { nc -ll -p 9000 -e /sum & } && exec httpd -f -p 80 -h /www"]
    ports: [{name: http, containerPort: 80}]
    readinessProbe: {tcpSocket: {port: 80}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: pf}
spec:
  selector: {app: pf}
  ports: [{port: 8080, targetPort: http}]
Y
PF_PIDS=()
# kubectl port-forward in the lab, in the background; its output in $WORK/pf-NAME.{out,err}. The command line names
# $WORK (the kubeconfig), so the run's cleanup stops it even when this case fails half-way. Extra env first.
pf_start() {
  local name=$1; shift
  local envs=()
  while [ $# -gt 0 ] && [[ $1 == *=* ]]; do envs+=("$1"); shift; done
  nsenter --net="/run/netns/$LAB" env "${envs[@]}" kubectl --kubeconfig "$KUBECONFIG" port-forward "$@" \
    >"$WORK/pf-$name.out" 2>"$WORK/pf-$name.err" &
  PF_PID=$!
  PF_PIDS+=("$PF_PID")
  eventually "port-forward $name listens" '^Forwarding from 127.0.0.1' 40 -- cat "$WORK/pf-$name.out"
}
# Stops one port-forward by PID (and the kubectl the dispatcher runs, if it runs it as a child).
pf_stop() {
  local pid=$1 child
  for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do kill "$child" 2>/dev/null; done
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  return 0
}
get() { lab curl -s --max-time 30 "$@"; }
# The md5 the pod's port-9000 server reports for FILE, sent through local port PORT and half-closed.
upload_md5() {
  lab python3 - "$1" "$2" <<'PY'
import socket, sys
data = open(sys.argv[2], "rb").read()
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=60)
s.sendall(data)
s.shutdown(socket.SHUT_WR)
out = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    out += b
print(out.decode().split()[0] if out.split() else "")
PY
}

k apply -f "$WORK/pf.yaml" >/dev/null && pass "create a pod serving HTTP and its Service" || fail "create the port-forward pod"
eventually "port-forward pod is ready" '^pf +1/1 +Running' 60 -- k get pod pf --no-headers
want_big=$(k exec pf -- busybox md5sum /www/big 2>&1 | awk '{print $1}')

# kubectl's default: SPDY tunneled in WebSocket.
pf_start ws pod/pf 28080:80 28090:9000
ws_pid=$PF_PID
out=$(get http://127.0.0.1:28080/)
[ "$out" = "hello from pf" ] && pass "port-forward (WebSocket) fetches a page from the pod" || fail "port-forward page" "$out$(cat "$WORK/pf-ws.err")"
got=$(get http://127.0.0.1:28080/big | md5sum | awk '{print $1}')
[ -n "$want_big" ] && [ "$got" = "$want_big" ] && pass "a 4 MiB download arrives intact" || fail "big download ($got, want $want_big)"
head -c 3000000 /dev/urandom >"$WORK/up.bin"
want_up=$(md5sum <"$WORK/up.bin" | awk '{print $1}')
if command -v python3 >/dev/null; then
  got=$(upload_md5 28090 "$WORK/up.bin" 2>&1)
  [ "$got" = "$want_up" ] && pass "a 3 MB upload arrives intact (the pod half-closed and answered)" || fail "big upload ($got, want $want_up)"
else
  echo "skipping the upload check: no python3"
fi
pids=()
for i in $(seq 1 30); do get -o "$WORK/pf-c$i" http://127.0.0.1:28080/ & pids+=($!); done
for p in "${pids[@]}"; do wait "$p"; done
ok=$(for i in $(seq 1 30); do cat "$WORK/pf-c$i" 2>/dev/null; echo; done | grep -c '^hello from pf$')
[ "$ok" = 30 ] && pass "30 concurrent forwarded connections all answered" || fail "concurrent connections: $ok/30"
grep 'port-forward session' "$WORK/agent.log" | grep -q websocket && pass "kubectl used the WebSocket tunnel" ||
  fail "no WebSocket port-forward session in the agent log"
pf_stop "$ws_pid"

# kubectl's fallback: plain SPDY/3.1.
pf_start spdy KUBECTL_PORT_FORWARD_WEBSOCKETS=false pod/pf 28081:80
spdy_pid=$PF_PID
out=$(get http://127.0.0.1:28081/)
[ "$out" = "hello from pf" ] && pass "port-forward (plain SPDY) fetches a page" || fail "plain SPDY page" "$out$(cat "$WORK/pf-spdy.err")"
got=$(get http://127.0.0.1:28081/big | md5sum | awk '{print $1}')
[ "$got" = "$want_big" ] && pass "a 4 MiB download over plain SPDY arrives intact" || fail "plain SPDY big download ($got)"
grep 'port-forward session' "$WORK/agent.log" | grep -q spdy && pass "kubectl used plain SPDY" || fail "no plain SPDY session in the agent log"
pf_stop "$spdy_pid"

# A Service: kubectl picks a pod behind it and maps the Service port to the (named) target port.
pf_start svc svc/pf 28082:8080
svc_pid=$PF_PID
out=$(get http://127.0.0.1:28082/)
[ "$out" = "hello from pf" ] && pass "port-forward to a Service reaches its pod" || fail "port-forward svc" "$out$(cat "$WORK/pf-svc.err")"
pf_stop "$svc_pid"

# A hostNetwork pod: no namespace of its own, so the agent connects in its own (the container's, checked).
cat >"$WORK/pf-host.yaml" <<'Y'
apiVersion: v1
kind: Pod
metadata: {name: pf-host}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    image: localhost/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "mkdir -p /www; echo from pf-host >/www/index.html; exec httpd -f -p 127.0.0.1:28600 -h /www"]
Y
k apply -f "$WORK/pf-host.yaml" >/dev/null && pass "create a hostNetwork pod to forward to" || fail "create the hostNetwork pod"
eventually "hostNetwork pod Running" '^pf-host +1/1 +Running' 60 -- k get pod pf-host --no-headers
pf_start host pod/pf-host 28085:28600
out=$(get http://127.0.0.1:28085/)
[ "$out" = "from pf-host" ] && pass "port-forward to a hostNetwork pod" || fail "port-forward hostNetwork" "$out$(cat "$WORK/pf-host.err")"
pf_stop "$PF_PID"
k delete -f "$WORK/pf-host.yaml" --timeout=60s >/dev/null 2>&1 && pass "delete the hostNetwork pod" || fail "delete the hostNetwork pod"

# The WebSocket channel protocol (v4.channel.k8s.io, ports in the query), as the Python client speaks it: one
# connection to 80 and one to 81, where nothing listens.
if lab python3 -c 'import kubernetes' 2>/dev/null; then
  out=$(lab timeout 60 python3 - 2>&1 <<'PY'
import time
from kubernetes import client, config
from kubernetes.stream import portforward
config.load_kube_config()
pf = portforward(client.CoreV1Api().connect_get_namespaced_pod_portforward, "pf", "default", ports="80,81")
s = pf.socket(80)
s.setblocking(True)
s.sendall(b"GET / HTTP/1.0\r\n\r\n")
data = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    data += b
print("body:", data.split(b"\r\n\r\n", 1)[-1].decode().strip())
for _ in range(100):
    if pf.error(81):
        break
    time.sleep(0.1)
print("error81:", pf.error(81))
PY
)
  grep -q '^body: hello from pf$' <<<"$out" && pass "port-forward over the WebSocket channel protocol (Python client)" ||
    fail "channel protocol page" "$out"
  grep -q '^error81: error forwarding port 81 to pod default/pf.*refused' <<<"$out" &&
    pass "the channel protocol reports a closed port on its error channel" || fail "channel protocol error" "$out"
else
  echo "skipping the WebSocket channel protocol check: no Python kubernetes client"
fi

# Nothing listens on 81: the connection fails, kubectl prints the agent's error and gives up the session (as it does
# with a kubelet), and the agent carries on.
pf_start closed pod/pf 28083:81
closed_pid=$PF_PID
out=$(get http://127.0.0.1:28083/ 2>&1); rc=$?
[ "$rc" != 0 ] || [ -z "$out" ] && pass "a connection to a port nothing listens on fails" || fail "closed port answered" "$out"
eventually "kubectl prints the error" 'error forwarding port 81 to pod default/pf.*refused' 20 -- cat "$WORK/pf-closed.err"
for _ in $(seq 1 20); do kill -0 "$closed_pid" 2>/dev/null || break; sleep 0.5; done
kill -0 "$closed_pid" 2>/dev/null && fail "kubectl still runs after the error" || pass "kubectl ends its session after the error"
pf_stop "$closed_pid"

# Malformed frames straight to the agent: after the upgrade, a frame of SPDY version 2. The agent closes that
# connection, logs why, and serves the next one.
agent_port=$(k get node lab-node -o 'jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}')
kubectl --kubeconfig "$WORK/node.kubeconfig" config view --raw -o 'jsonpath={.users[0].user.client-certificate-data}' | base64 -d >"$WORK/node.crt"
kubectl --kubeconfig "$WORK/node.kubeconfig" config view --raw -o 'jsonpath={.users[0].user.client-key-data}' | base64 -d >"$WORK/node.key"
# The agent takes TLS with a client certificate of the cluster CA (the admin's here; normally the API server's).
raw_agent() { # CERT-BASENAME: the request and the bad frame through openssl s_client (its own chatter on stderr
  # is dropped: it would take the place of the response in the 200 bytes kept, and end the session early)
  lab timeout 10 bash -c '{ printf "POST /portForward/default/pf HTTP/1.1\r\nHost: agent\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: portforward.k8s.io\r\nContent-Length: 0\r\n\r\n"
    sleep 0.5; printf "\x80\x02\x00\x06\x00\x00\x00\x04junk"; sleep 3; } |
    openssl s_client -quiet -connect 127.0.0.1:'"$agent_port"' '"$1"' 2>/dev/null' | head -c 200 | tr -d '\0'
}
# The admin certificate as it is now (certificates live two minutes here and are renewed in the kubeconfig).
kubectl config view --raw -o 'jsonpath={.users[0].user.client-certificate-data}' | base64 -d >"$WORK/admin.crt"
kubectl config view --raw -o 'jsonpath={.users[0].user.client-key-data}' | base64 -d >"$WORK/admin.key"
out=$(raw_agent "-cert $WORK/admin.crt -key $WORK/admin.key")
grep -q '^HTTP/1.1 101' <<<"$out" && pass "the agent upgrades a raw SPDY request" || fail "raw SPDY upgrade" "$out"
eventually "the agent logs the malformed frame" 'port-forward session closed.*version 2' 20 -- cat "$WORK/agent.log"
out=$(raw_agent "")
grep -q '^HTTP/1.1 101' <<<"$out" && fail "the agent served a caller without a client certificate" "$out" || pass "the agent refuses callers without a client certificate"
out=$(raw_agent "-cert $WORK/node.crt -key $WORK/node.key")
grep -q '^HTTP/1.1 403' <<<"$out" && pass "the agent refuses another cluster identity (a node's) with 403" || fail "a node's certificate at the agent" "$out"
kill -0 "$AGENT_PID" 2>/dev/null && pass "the agent is still up" || fail "the agent died"
pf_start after pod/pf 28084:80
out=$(get http://127.0.0.1:28084/)
[ "$out" = "hello from pf" ] && pass "port-forward works after the malformed session" || fail "port-forward after malformed" "$out"
pf_stop "$PF_PID"

for p in "${PF_PIDS[@]}"; do pf_stop "$p"; done
left=$(for p in "${PF_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && echo "$p"; done | wc -l)
[ "$left" = 0 ] && pass "every kubectl port-forward stopped" || fail "port-forwards left: $left"
k delete -f "$WORK/pf.yaml" --timeout=60s >/dev/null 2>&1 && pass "delete the port-forward pod and Service" || fail "delete the port-forward objects"
