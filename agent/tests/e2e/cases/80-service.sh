# A Deployment behind a Service: the controllers make the pods and the EndpointSlice, the agent runs them and
# reports them ready, skiff-netproxy programs the ClusterIP, and a client pod reaches both replicas through it —
# and a replica reaches itself through its own Service (hairpin).
if [ -z "$PROXY_PID" ]; then
  echo "skipping the Service case: skiff-netproxy is not built"
else
cat >"$WORK/svc.yaml" <<'Y'
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: localhost/busybox:1
        imagePullPolicy: Never
        command: ["sh", "-c", "mkdir -p /www; hostname >/www/index.html; exec httpd -f -p 8080 -h /www"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: localhost/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1 & wait; done"]
Y
k apply -f "$WORK/svc.yaml" >/dev/null && pass "create a Deployment, its Service and a client" || fail "create the Service objects"
eventually "both replicas ready" '^2$' 90 -- sh -c "nsenter --net=/run/netns/$LAB kubectl get pods -l app=web --no-headers | grep -c '1/1 *Running'"
eventually "the EndpointSlice lists both" '^[0-9.]+ [0-9.]+$' 40 -- \
  k get endpointslices -l kubernetes.io/service-name=web -o 'jsonpath={.items[0].endpoints[*].addresses[0]}' --no-headers
cip=$(k get svc web -o 'jsonpath={.spec.clusterIP}')
seen=""
for _ in $(seq 1 30); do
  out=$(k exec client -- timeout 5 wget -qO- "http://$cip/" 2>/dev/null)
  [ -n "$out" ] && ! grep -qw "$out" <<<"$seen" && seen="$seen $out"
  [ "$(wc -w <<<"$seen")" -ge 2 ] && break
done
[ "$(wc -w <<<"$seen")" -ge 2 ] && pass "the ClusterIP $cip reaches both replicas from a pod ($seen )" ||
  fail "ClusterIP from a pod (saw:$seen)" "$(tail -5 "$WORK/netproxy.log")"
one=$(k get pods -l app=web -o 'jsonpath={.items[0].metadata.name}')
out=$(k exec "$one" -- sh -c "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do timeout 5 wget -qO- http://$cip/; done" 2>&1)
grep -qx "$one" <<<"$out" && pass "a replica reaches itself through its Service (hairpin)" || fail "hairpin" "$out"
# Service environment variables: a pod started after the Service gets them, one with enableServiceLinks: false not.
cat >"$WORK/links.yaml" <<'Y'
apiVersion: v1
kind: Pod
metadata: {name: links}
spec:
  restartPolicy: Never
  containers:
  - {name: c, image: localhost/busybox:1, imagePullPolicy: Never, command: ["sh", "-c", "env | grep ^WEB_ | sort"]}
---
apiVersion: v1
kind: Pod
metadata: {name: nolinks}
spec:
  restartPolicy: Never
  enableServiceLinks: false
  containers:
  - {name: c, image: localhost/busybox:1, imagePullPolicy: Never, command: ["sh", "-c", "env | grep -c ^WEB_; true"]}
Y
k apply -f "$WORK/links.yaml" >/dev/null && pass "create pods with and without service links" || fail "create the service-link pods"
eventually "both service-link pods succeeded" '^Succeeded Succeeded$' 60 -- \
  k get pod links nolinks -o 'jsonpath={.items[*].status.phase}'
out=$(k logs links 2>&1)
grep -qx "WEB_SERVICE_HOST=$cip" <<<"$out" && grep -qx "WEB_SERVICE_PORT=80" <<<"$out" &&
  grep -qx "WEB_PORT_80_TCP=tcp://$cip:80" <<<"$out" && grep -qx "WEB_PORT_80_TCP_ADDR=$cip" <<<"$out" &&
  pass "the pod sees WEB_SERVICE_HOST=$cip and the Docker link variables" || fail "service env vars" "$out"
out=$(k logs nolinks 2>&1)
[ "$out" = 0 ] && pass "enableServiceLinks: false gives no service variables" || fail "enableServiceLinks: false" "$out"
k delete -f "$WORK/links.yaml" --timeout=60s >/dev/null 2>&1 || fail "delete the service-link pods"
k delete -f "$WORK/svc.yaml" --timeout=60s >/dev/null 2>&1 && pass "delete the Service objects" || fail "delete the Service objects"
eventually "the replicas are gone" '^0$' 60 -- sh -c "nsenter --net=/run/netns/$LAB kubectl get pods -l app=web --no-headers 2>/dev/null | wc -l"
fi
