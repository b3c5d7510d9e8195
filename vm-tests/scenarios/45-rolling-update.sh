# Rolling update under steady traffic: a Deployment of 3 replicas with a readiness probe and a preStop pause, behind
# a NodePort; a client outside the hosts sends requests without pause to every host's NodePort in turn while the
# Deployment rolls to a new template (maxSurge 1, maxUnavailable 0). Goal: zero failed requests.
cat >"$WORK/roll.yaml" <<'Y'
apiVersion: apps/v1
kind: Deployment
metadata: {name: roll}
spec:
  replicas: 3
  selector: {matchLabels: {app: roll}}
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata: {labels: {app: roll}}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: web
        image: localhost/busybox:1
        imagePullPolicy: Never
        env: [{name: VERSION, value: "1"}]
        # Like a real server, it stops at SIGTERM (httpd as PID 1 would ignore it and serve on until SIGKILL).
        command: ["sh", "-c", "mkdir -p /www; echo v$VERSION >/www/index.html; httpd -f -p 8080 -h /www & trap 'kill $!; exit 0' TERM; wait"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /, port: http}, periodSeconds: 1}
        # Endpoints drop a terminating pod, then every host's proxy forgets it; the pause covers that interval
        # (what users of Kubernetes do for zero-downtime rollouts).
        lifecycle: {preStop: {exec: {command: ["sleep", "3"]}}}
---
apiVersion: v1
kind: Service
metadata: {name: roll}
spec:
  type: NodePort
  selector: {app: roll}
  ports: [{port: 80, targetPort: http, nodePort: 30081}]
Y
t=$(now)
k apply -f "$WORK/roll.yaml" >/dev/null && pass "create the roll Deployment and its NodePort" || fail "create the roll Deployment"
eventually "3 roll replicas ready" '^3$' 180 -- ready_count app=roll
# The NodePort answers on every host before the traffic starts.
for n in $(seq 1 "$HOSTS"); do
  eventually "NodePort 30081 answers on host $n" '^v1$' 40 -- lab curl -s -m 2 "http://$(host_ip "$n"):30081/"
done
timing "roll Deployment ready and reachable" "$t"

# Steady traffic from the lab: one request after another, round-robin over the hosts, until the stop file appears.
traffic() {
  local i=0 n out end=$((SECONDS + 400))
  # Also ends when the harness tears down (WORK gone) or after 400 s, so it never outlives a failed run.
  while [ ! -e "$WORK/roll.stop" ] && [ -d "$WORK" ] && [ "$SECONDS" -lt "$end" ]; do
    n=$((i % HOSTS + 1)); i=$((i + 1))
    out=$(lab curl -s -m 2 "http://$(host_ip "$n"):30081/" 2>&1) && [ -n "$out" ] && echo "ok $out" || echo "fail host$n $out"
  done >"$WORK/roll.traffic"
}
rm -f "$WORK/roll.stop"
traffic &
TRAFFIC_PID=$!
sleep 2
t=$(now)
k set env deployment/roll VERSION=2 >/dev/null && pass "roll to a new template (VERSION=2)" || fail "set env on roll"
if k rollout status deployment/roll --timeout=180s >/dev/null 2>&1; then pass "the rollout completes"; else fail "rollout status" "$(k get pods -l app=roll -o wide)"; fi
timing "rolling update of 3 replicas" "$t"
# Traffic goes on until every old pod is gone (their preStop pauses and grace periods included).
eventually "only new pods are left" '^3$' 120 -- sh -c "nsenter --net=/run/netns/$LAB kubectl get pods -l app=roll --no-headers 2>/dev/null | wc -l"
sleep 2
touch "$WORK/roll.stop"
wait "$TRAFFIC_PID"
total=$(wc -l <"$WORK/roll.traffic")
failed=$(grep -c '^fail' "$WORK/roll.traffic")
v1=$(grep -c '^ok v1$' "$WORK/roll.traffic"); v2=$(grep -c '^ok v2$' "$WORK/roll.traffic")
echo "time - requests during the rollout: $total ($v1 from v1, $v2 from v2, $failed failed)"
TIMINGS+=("requests during the rolling update: $total, failed: $failed")
[ "$total" -ge 100 ] && pass "steady traffic: $total requests during the rollout" || fail "too little traffic ($total requests)"
[ "$failed" = 0 ] && pass "zero failed requests during the rolling update" ||
  fail "$failed of $total requests failed during the rolling update" "$(grep '^fail' "$WORK/roll.traffic" | sort | uniq -c | head -10)"
[ "$v2" -gt 0 ] && [ "$(tail -20 "$WORK/roll.traffic" | grep -c '^ok v2$')" = 20 ] && pass "after the rollout every answer comes from v2" ||
  fail "v2 after the rollout" "$(tail -5 "$WORK/roll.traffic")"
k delete -f "$WORK/roll.yaml" --timeout=90s >/dev/null 2>&1 && pass "delete the roll Deployment" || fail "delete the roll Deployment"
eventually "the roll pods are gone" '^0$' 120 -- sh -c "nsenter --net=/run/netns/$LAB kubectl get pods -l app=roll --no-headers 2>/dev/null | wc -l"
