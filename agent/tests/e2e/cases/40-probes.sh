# Probes (exec readiness, httpGet liveness, tcpSocket startup), the preStop hook, and the events the agent records.
cat >"$WORK/probes.yaml" <<'Y'
apiVersion: v1
kind: Pod
metadata: {name: probed}
spec:
  terminationGracePeriodSeconds: 10
  containers:
  - name: web
    image: localhost/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "trap 'echo got TERM; exit 0' TERM; mkdir -p /www /tmp; echo ok >/www/healthz; httpd -f -p 8080 -h /www & wait"]
    ports: [{name: http, containerPort: 8080}]
    startupProbe: {tcpSocket: {port: http}, periodSeconds: 1, failureThreshold: 30}
    livenessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1, failureThreshold: 2}
    readinessProbe: {exec: {command: ["test", "-f", "/tmp/ready"]}, periodSeconds: 1}
    lifecycle:
      preStop: {exec: {command: ["sh", "-c", "echo prestop ran >/proc/1/fd/1; sleep 1"]}}
Y
k apply -f "$WORK/probes.yaml" >/dev/null && pass "create a pod with probes" || fail "create a pod with probes"
eventually "running but not ready until the readiness probe passes" '^probed +0/1 +Running' 60 -- k get pod probed --no-headers
sleep 2
out=$(k get pod probed -o 'jsonpath={.status.containerStatuses[0].started} {.status.containerStatuses[0].ready} {.status.conditions[?(@.type=="Ready")].status}')
[ "$out" = "true false False" ] && pass "startup passed, readiness not yet: Ready=False" || fail "status before ready" "$out"
k exec probed -- touch /tmp/ready >/dev/null 2>&1
eventually "ready once the readiness probe passes" '^probed +1/1 +Running +0 ' 20 -- k get pod probed --no-headers
k exec probed -- rm /tmp/ready >/dev/null 2>&1
eventually "not ready again when it fails" '^probed +0/1 +Running +0 ' 20 -- k get pod probed --no-headers
k exec probed -- rm /www/healthz >/dev/null 2>&1
eventually "a failing liveness probe restarts the container" '^probed +0/1 +Running +1 ' 40 -- k get pod probed --no-headers
eventually "events: probe failure and the kill" 'Unhealthy.*Liveness probe failed: HTTP probe failed with statuscode: 404' 20 -- \
  k get events --field-selector involvedObject.name=probed -o 'custom-columns=R:.reason,M:.message' --no-headers
out=$(k get events --field-selector involvedObject.name=probed -o 'custom-columns=R:.reason' --no-headers | sort -u | tr '\n' ' ')
for r in Pulled Created Started Unhealthy Killing; do
  grep -qw "$r" <<<"$out" && pass "event $r recorded" || fail "event $r" "$out"
done
out=$(k describe pod probed 2>&1)
grep -q 'failed liveness probe, will be restarted' <<<"$out" && pass "kubectl describe shows the events" || fail "describe events" "$(tail -15 <<<"$out")"
eventually "restarted container serves again" '^probed +0/1 +Running +1 ' 20 -- k get pod probed --no-headers
lab kubectl logs -f probed >"$WORK/probed.log" 2>&1 &
LOGS_PID=$!
sleep 1
k delete pod probed --timeout=60s >/dev/null 2>&1 && pass "delete the probed pod" || fail "delete the probed pod"
wait "$LOGS_PID" 2>/dev/null
grep -q 'prestop ran' "$WORK/probed.log" && grep -q 'got TERM' "$WORK/probed.log" &&
  [ "$(grep -n 'prestop ran' "$WORK/probed.log" | cut -d: -f1)" -lt "$(grep -n 'got TERM' "$WORK/probed.log" | cut -d: -f1)" ] &&
  pass "preStop runs before SIGTERM" || fail "preStop before TERM" "$(cat "$WORK/probed.log")"
