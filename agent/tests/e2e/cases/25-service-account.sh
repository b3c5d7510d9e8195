# Service accounts: every pod gets the kube-api-access projected volume (a token bound to the pod, the cluster CA,
# the namespace) at /var/run/secrets/kubernetes.io/serviceaccount unless automounting is off; the token
# authenticates as the pod's service account and names the pod and its node; a projection with an audience of its
# own is not an API token (TokenReview with that audience accepts it); a node mints tokens only for its pods' own
# service accounts; deleting the pod revokes its tokens; no token reaches a log.
SA_DIR=/var/run/secrets/kubernetes.io/serviceaccount
as_token() { local t=$1; shift; lab kubectl --request-timeout=20s --kubeconfig /dev/null --server "https://127.0.0.1:$PORT" \
  --certificate-authority "$WORK/cp/pki/ca.crt" --token "$t" "$@"; }

k create serviceaccount robot >/dev/null && pass "create a service account" || fail "create a service account"
cat >"$WORK/sa-pods.yaml" <<'Y'
apiVersion: v1
kind: Pod
metadata: {name: sapod}
spec:
  serviceAccountName: robot
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: localhost/busybox:1
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    volumeMounts: [{name: vault, mountPath: /vault}]
  volumes:
  - name: vault
    projected: {sources: [{serviceAccountToken: {path: token, audience: vault, expirationSeconds: 600}}]}
---
apiVersion: v1
kind: Pod
metadata: {name: nosapod}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: localhost/busybox:1
    imagePullPolicy: Never
    command: ["sleep", "3600"]
Y
k apply -f "$WORK/sa-pods.yaml" >/dev/null && pass "create pods with and without a service account token" || fail "create the service account pods"
eventually "the pod with a token runs" '^sapod +1/1 +Running ' 60 -- k get pod sapod --no-headers
eventually "the pod without one runs" '^nosapod +1/1 +Running ' 60 -- k get pod nosapod --no-headers
VOL=$(k get pod sapod -o 'jsonpath={.spec.volumes[*].name} {.spec.containers[0].volumeMounts[*].mountPath}')
grep -qE "kube-api-access-[a-z0-9]{5}.* $SA_DIR" <<<"$VOL" && pass "admission adds the kube-api-access volume and mount" || fail "kube-api-access volume" "$VOL"
TOKEN=$(k exec sapod -- cat "$SA_DIR/token" 2>&1)
grep -qE '^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$' <<<"$TOKEN" && pass "the pod reads its token" || fail "the pod's token" "$TOKEN"
[ "$(k exec sapod -- cat "$SA_DIR/namespace" 2>&1)" = default ] && pass "and its namespace" || fail "the pod's namespace file"
k exec sapod -- cat "$SA_DIR/ca.crt" 2>/dev/null | cmp -s - "$WORK/cp/pki/ca.crt" && pass "and the cluster CA" || fail "the pod's ca.crt"
OUT=$(k exec sapod -- touch "$SA_DIR/x" 2>&1) && fail "the token volume is writable" "$OUT" || pass "the token volume is read-only"
WHO=$(as_token "$TOKEN" auth whoami 2>&1)
for want in 'system:serviceaccount:default:robot' 'system:serviceaccounts:default' 'pod-name +\[sapod\]' 'node-name +\[lab-node\]'; do
  grep -qE -- "$want" <<<"$WHO" && pass "the token speaks for: /$want/" || fail "whoami with the pod's token: /$want/" "$WHO"
done
OUT=$(as_token "$TOKEN" get pods 2>&1) && fail "the service account reads pods without a role" "$OUT" ||
  { grep -q 'cannot list resource "pods"' <<<"$OUT" && pass "without a role it may not list pods (403)" || fail "403 without a role" "$OUT"; }
k create rolebinding robot-view --clusterrole=view --serviceaccount=default:robot >/dev/null && pass "bind it the view role" || fail "bind the view role"
eventually "with the role it lists pods" '^sapod ' 20 -- as_token "$TOKEN" get pods --no-headers
VAULT=$(k exec sapod -- cat /vault/token 2>&1)
OUT=$(as_token "$VAULT" get pods 2>&1) && fail "a token for another audience is accepted by the API" "$OUT" ||
  { grep -q Unauthorized <<<"$OUT" && pass "a token for another audience is refused (401)" || fail "401 for a vault token" "$OUT"; }
REVIEW=$(printf '{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"%s","audiences":["vault"]}}' "$VAULT" |
  k create -f - -o 'jsonpath={.status.authenticated} {.status.user.username} {.status.audiences}' 2>&1)
grep -qE '^true system:serviceaccount:default:robot \["vault"\]' <<<"$REVIEW" && pass "TokenReview for the vault audience accepts it" || fail "TokenReview with an audience" "$REVIEW"
OUT=$(k exec nosapod -- ls /var/run/secrets 2>&1) && fail "automountServiceAccountToken: false still mounts a token" "$OUT" || pass "automountServiceAccountToken: false: no token"
# The node: tokens only bound to its pods, for their own service accounts.
NK=(lab kubectl --request-timeout=20s --kubeconfig "$WORK/node.kubeconfig")
OUT=$("${NK[@]}" create token robot 2>&1) && fail "a node mints an unbound token" "$OUT" || pass "a node may not mint an unbound token"
OUT=$("${NK[@]}" create token robot --bound-object-kind Pod --bound-object-name nosapod 2>&1) &&
  fail "a node mints a token for a service account its pod does not use" "$OUT" || pass "nor one for an account its pod does not use"
OUT=$("${NK[@]}" create token robot --bound-object-kind Pod --bound-object-name sapod 2>&1) &&
  pass "but it may for its pod's own account" || fail "node token for its own pod" "$OUT"
grep -qF "${TOKEN##*.}" "$WORK/agent.log" "$WORK/cp.log" && fail "a token appears in a log" || pass "no token in the agent's or the control plane's log"
# The token lives in memory (the run dir, a tmpfs), never in the agent's disk state.
OUT=$(grep -rlF "${TOKEN##*.}" "$WORK/disk" 2>&1) && fail "the token is written to disk" "$OUT" || pass "the token is not on disk"
grep -rlsF "${TOKEN##*.}" "$WORK/run/sandboxes" >/dev/null && pass "it is in the run dir" || fail "the token is not in the run dir"
k delete pod sapod nosapod --wait=true >/dev/null 2>&1; k delete rolebinding robot-view >/dev/null 2>&1
eventually "deleting the pod revokes its token" 'Unauthorized' 20 -- as_token "$TOKEN" auth whoami
k delete serviceaccount robot >/dev/null 2>&1
