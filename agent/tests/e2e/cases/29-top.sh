# kubectl top: metrics.k8s.io from the agent's samples of its cgroups. A pod spinning under a 100m CPU limit shows
# about that much (the limit holds it there); the node shows its own usage; the API is read-only.
cat >"$WORK/top.yaml" <<'Y'
apiVersion: v1
kind: Pod
metadata: {name: burner, labels: {app: burner}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: spin
    image: localhost/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do :; done"]
    resources: {limits: {cpu: 100m, memory: 64Mi}}
Y
k apply -f "$WORK/top.yaml" >/dev/null && pass "a pod spinning under a 100m limit" || fail "create the burner pod"
eventually "burner runs" '^burner +1/1 +Running ' 120 -- k get pod burner --no-headers
# Two samples 10 s apart are needed for a rate.
eventually "kubectl top node" '^lab-node +[0-9]+m +[0-9]+% +[0-9]+Mi +[0-9]+% *$' 90 -- k top node --no-headers
eventually "kubectl top pod shows the limited spinner" '^burner +(6[0-9]|[7-9][0-9]|1[0-2][0-9])m +[0-9]+Mi *$' 60 -- k top pod burner --no-headers
eventually "kubectl top pod --containers" '^burner +spin +[0-9]+m +[0-9]+Mi *$' 20 -- k top pod -l app=burner --containers --no-headers
expect_out() { local name=$1 want=$2; shift 2; local out; out=$("$@" 2>&1); grep -qE -- "$want" <<<"$out" && pass "$name" || fail "$name" "$out"; }
expect_out "PodMetrics over the API" '"kind":"PodMetrics".*"name":"spin"' k get --raw /apis/metrics.k8s.io/v1beta1/namespaces/default/pods/burner
expect_out "metrics are read-only" 'MethodNotAllowed|not allowed|405' k delete --raw /apis/metrics.k8s.io/v1beta1/namespaces/default/pods/burner
expect_out "a pod without metrics is NotFound" 'NotFound|not found' k get --raw /apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope
k delete pod burner --wait=true >/dev/null 2>&1
eventually "burner gone" 'NotFound|not found' 60 -- k get pod burner
