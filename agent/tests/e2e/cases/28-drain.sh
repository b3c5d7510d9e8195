# kubectl drain against a PodDisruptionBudget, with real pods: the budget holds the drain back (kubectl retries the
# 429s until its timeout), a looser budget lets one pod go, no budget lets the rest go; uncordon brings them back.
cat >"$WORK/drain.yaml" <<'Y'
apiVersion: apps/v1
kind: Deployment
metadata: {name: drainme}
spec:
  replicas: 2
  selector: {matchLabels: {app: drainme}}
  template:
    metadata: {labels: {app: drainme}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: localhost/busybox:1
        imagePullPolicy: Never
        command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1 & wait; done"]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: drainme}
spec:
  minAvailable: 2
  selector: {matchLabels: {app: drainme}}
Y
k apply -f "$WORK/drain.yaml" >/dev/null && pass "a deployment of 2 and a budget of minAvailable 2" || fail "create the deployment and budget"
eventually "both pods run" '^2$' 120 -- lab sh -c 'kubectl --request-timeout=20s get pods -l app=drainme --no-headers | grep -c " 1/1 *Running "'
eventually "the budget allows no disruption" '^drainme +2 +N/A +0 ' 20 -- k get pdb drainme --no-headers
OUT=$(k drain lab-node --ignore-daemonsets --timeout=8s 2>&1)
grep -q "violate the pod's disruption budget" <<<"$OUT" && pass "drain is held back by the budget" || fail "drain past the budget" "$OUT"
expect_node() { local want=$1 name=$2; local got; got=$(k get node lab-node -o 'jsonpath={.spec.unschedulable}'); [ "$got" = "$want" ] && pass "$name" || fail "$name" "unschedulable=$got"; }
expect_node true "the node is cordoned"
[ "$(lab kubectl --request-timeout=20s get pods -l app=drainme --no-headers 2>/dev/null | grep -c ' Running ')" = 2 ] && pass "both pods still run" || fail "a pod was evicted past the budget"
k patch pdb drainme --type=merge -p '{"spec":{"minAvailable":1}}' >/dev/null
eventually "a looser budget allows one" '^drainme +1 +N/A +1 ' 20 -- k get pdb drainme --no-headers
OUT=$(k drain lab-node --ignore-daemonsets --timeout=8s 2>&1)
grep -q 'evicted' <<<"$OUT" && pass "drain evicts one pod" || fail "drain evicted nothing" "$OUT"
grep -q "violate the pod's disruption budget" <<<"$OUT" && pass "and is held back for the other (its replacement cannot run)" || fail "drain went past the budget" "$OUT"
eventually "one pod runs, its replacement waits for a node" '^1 1$' 30 -- lab bash -c 'p=$(kubectl --request-timeout=20s get pods -l app=drainme --no-headers); echo "$(grep -c " Running " <<<"$p") $(grep -c " Pending " <<<"$p")"'
k delete pdb drainme >/dev/null 2>&1
OUT=$(k drain lab-node --ignore-daemonsets --timeout=60s 2>&1)
grep -q 'node/lab-node drained' <<<"$OUT" && pass "without a budget the drain finishes" || fail "drain without a budget" "$OUT"
k uncordon lab-node >/dev/null 2>&1
expect_node "" "uncordon"
eventually "the pods run again after uncordon" '^2$' 120 -- lab sh -c 'kubectl --request-timeout=20s get pods -l app=drainme --no-headers | grep -c " 1/1 *Running "'
k delete deployment drainme >/dev/null 2>&1
eventually "the deployment's pods are gone" '^No resources found' 60 -- k get pods -l app=drainme
