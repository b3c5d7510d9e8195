#!/usr/bin/env bash
# End-to-end: start skiff-controlplane and drive the real kubectl (and the Python client) against it.
# Usage: kubectl.sh PATH-TO-skiff-controlplane
# SKIFF_E2E_EXTRA_ARGS: more server flags, such as "--etcd-servers http://127.0.0.1:2379" (word-split).
# Uses only 127.0.0.1. Everything it starts is stopped, and its temp dir removed, on exit.
set -u
BIN=$(realpath "${1:?usage: kubectl.sh PATH-TO-skiff-controlplane}")
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d /tmp/skiff-e2e.XXXXXX)
export HOME=$WORK/home KUBECACHEDIR=$WORK/home/cache
mkdir -p "$HOME"
DATA=$WORK/data
PORT=$((20000 + RANDOM % 20000))
SERVER_PID=""
PASSED=0; FAILED=0

cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

start_server() {
  "$BIN" --data-dir "$DATA" --listen "127.0.0.1:$PORT" --bookmark-interval-secs 1 ${SKIFF_E2E_EXTRA_ARGS:-} >>"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    [ -s "$DATA/kubeconfig" ] && curl -sf --cacert "$DATA/pki/ca.crt" "https://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && admin_creds && return 0
    sleep 0.1
  done
  echo "server did not start"; cat "$WORK/server.log"; exit 1
}

# The admin's client certificate out of the kubeconfig, for curl (acurl: curl as the admin).
admin_creds() {
  KUBECONFIG=$DATA/kubeconfig kubectl config view --raw -o 'jsonpath={.users[0].user.client-certificate-data}' | base64 -d >"$WORK/admin.crt" &&
  KUBECONFIG=$DATA/kubeconfig kubectl config view --raw -o 'jsonpath={.users[0].user.client-key-data}' | base64 -d >"$WORK/admin.key"
}
acurl() { curl --cacert "$DATA/pki/ca.crt" --cert "$WORK/admin.crt" --key "$WORK/admin.key" "$@"; }

pass() { PASSED=$((PASSED + 1)); echo "ok - $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL - $1"; [ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/    /'; }

# expect NAME WANT-EXIT PATTERN -- command...: run, check the exit code and that the output matches PATTERN (grep -E).
expect() {
  local name=$1 want=$2 pattern=$3; shift 4
  local out code
  out=$("$@" 2>&1); code=$?
  if [ "$code" -ne "$want" ]; then fail "$name (exit $code, want $want)" "$out"; return; fi
  if [ -n "$pattern" ] && ! grep -qE -- "$pattern" <<<"$out"; then fail "$name (output lacks /$pattern/)" "$out"; return; fi
  pass "$name"
}

# eventually NAME PATTERN -- command...: retry for up to 15 s until the output matches.
eventually() {
  local name=$1 pattern=$2; shift 3
  local out
  for _ in $(seq 1 75); do
    out=$("$@" 2>&1) && grep -qE -- "$pattern" <<<"$out" && { pass "$name"; return; }
    sleep 0.2
  done
  fail "$name (output never matched /$pattern/)" "$out"
}

start_server
export KUBECONFIG=$DATA/kubeconfig
k() { kubectl --request-timeout=20s "$@"; }

expect "kubeconfig written, get ns"           0 '^default +Active'              -- k get ns
expect "version is 1.32"                       0 'Server Version: v1\.32'        -- k version
expect "api-resources lists short names"       0 'deployments +deploy +apps/v1'  -- k api-resources
cat >"$WORK/pod.yaml" <<'Y'
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: web
    image: nginx:1.25
    ports: [{containerPort: 80}]
Y
expect "create -f pod"                         0 'pod/web created'               -- k create -f "$WORK/pod.yaml"
expect "create again is AlreadyExists"         1 'AlreadyExists|already exists'  -- k create -f "$WORK/pod.yaml"
expect "get pod table"                         0 '^web +0/1 +Pending +0 '        -- k get pod web
expect "get -o wide has node columns"          0 'NOMINATED NODE'                -- k get pods -o wide
expect "get -o yaml"                           0 'restartPolicy: Always'         -- k get pod web -o yaml
expect "get -o json"                           0 '"qosClass": "BestEffort"'      -- k get pod web -o json
expect "jsonpath uid"                          0 '^[0-9a-f-]{36}$'               -- k get pod web -o 'jsonpath={.metadata.uid}'
expect "describe pod"                          0 'Image: +nginx:1\.25'           -- k describe pod web
expect "label"                                 0 'pod/web labeled'               -- k label pod web tier=front
expect "label selector, set-based"             0 '^web '                         -- k get pods -l 'tier in (front,back),app=web' --no-headers
expect "label selector, no match"              0 'No resources found'            -- k get pods -l 'tier notin (front)'
expect "annotate"                              0 'pod/web annotated'             -- k annotate pod web note=hello
expect "field selector"                        0 '^web '                         -- k get pods --field-selector status.phase=Pending --no-headers
expect "unsupported field selector"            1 'field label not supported'     -- k get pods --field-selector spec.bogus=1

# Bad input: kubectl shows upstream's messages.
cat >"$WORK/bad.yaml" <<'Y'
apiVersion: v1
kind: Pod
metadata: {name: bad}
spec:
  containers: [{name: c}]
Y
expect "422 with field cause"                  1 'The Pod "bad" is invalid: spec\.containers\[0\]\.image: Required value' -- k create -f "$WORK/bad.yaml"
cat >"$WORK/unknown.yaml" <<'Y'
apiVersion: v1
kind: Pod
metadata: {name: unk}
spec:
  containers: [{name: c, image: x, imagePullPolicyy: Always}]
Y
expect "strict field validation"               1 'unknown field "spec\.containers\[0\]\.imagePullPolicyy"' -- k create -f "$WORK/unknown.yaml"
expect "no partial write after errors"         1 'NotFound|not found'            -- k get pod bad unk
printf '{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"' >"$WORK/trunc.json"
expect "malformed JSON rejected"               1 'error'                         -- k create -f "$WORK/trunc.json"
expect "namespace must exist"                  1 'namespaces "nope" not found'   -- k -n nope run x --image=busybox

# Watch (bounded): the new pod shows up.
( sleep 1.5; k run watched --image=busybox >/dev/null 2>&1 ) &
WRITER=$!
expect "get -w sees a new pod"                 124 'watched'                     -- timeout 5 kubectl get pods -w
wait "$WRITER"

# Apply: create, then update by strategic merge patch; server-side apply.
cat >"$WORK/app.yaml" <<'Y'
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  replicas: 2
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers:
      - {name: app, image: "nginx:1.25", env: [{name: A, value: "1"}]}
      - {name: side, image: "busybox:1.36"}
---
apiVersion: v1
kind: Service
metadata: {name: app}
spec:
  type: NodePort
  selector: {app: app}
  ports: [{port: 80, targetPort: 8080}]
Y
expect "apply creates"                         0 'deployment.apps/app created'   -- k apply -f "$WORK/app.yaml"
sed -i 's/nginx:1.25/nginx:1.26/' "$WORK/app.yaml"
expect "apply updates (strategic merge)"       0 'deployment.apps/app configured' -- k apply -f "$WORK/app.yaml"
expect "apply kept both containers"            0 '^nginx:1\.26 busybox:1\.36 2$' -- k get deploy app -o 'jsonpath={.spec.template.spec.containers[0].image} {.spec.template.spec.containers[1].image} {.metadata.generation}'
expect "service got a ClusterIP and NodePort"  0 '^10\.(9[6-9]|1[01][0-9])\.[0-9]+\.[0-9]+ 3[0-2][0-9]{3}$' -- k get svc app -o 'jsonpath={.spec.clusterIP} {.spec.ports[0].nodePort}'
sed -i 's/replicas: 2/replicas: 3/' "$WORK/app.yaml"
expect "apply --server-side"                   0 'serverside-applied'            -- k apply --server-side -f "$WORK/app.yaml"
expect "server-side apply changed replicas"    0 '^3$'                           -- k get deploy app -o 'jsonpath={.spec.replicas}'
expect "scale"                                 0 'deployment.apps/app scaled'    -- k scale deploy app --replicas=5
expect "scale took effect"                     0 '^5$'                           -- k get deploy app -o 'jsonpath={.spec.replicas}'
expect "get all"                               0 'deployment\.apps/app'          -- k get all
expect "get all lists services"                0 'service/app +NodePort'         -- k get all

# Generator commands send protobuf bodies.
expect "create namespace (protobuf)"           0 'namespace/team created'        -- k create namespace team
expect "create deployment (protobuf)"          0 'deployment.apps/gen created'   -- k -n team create deployment gen --image=busybox:1.36 --replicas=2
expect "create configmap (protobuf)"           0 'configmap/cfg created'         -- k -n team create configmap cfg --from-literal=a=b
expect "create secret (protobuf)"              0 'secret/sec created'            -- k -n team create secret generic sec --from-literal=x=y
expect "secret data is base64"                 0 '^eQ==$'                        -- k -n team get secret sec -o 'jsonpath={.data.x}'
expect "protobuf deployment is complete"       0 '^busybox:1\.36 2$'             -- k -n team get deploy gen -o 'jsonpath={.spec.template.spec.containers[0].image} {.spec.replicas}'
eventually "deployment controller made a ReplicaSet" '^gen-[a-z0-9]+ +2 +2 '      -- k -n team get rs --no-headers
eventually "replica set controller made 2 pods"      '^2$'                         -- bash -c "kubectl -n team get pods -l app=gen --no-headers | wc -l"
expect "set image starts a new revision"       0 'image updated'                 -- k -n team set image deploy/gen busybox=busybox:1.37
eventually "rollout history has two revisions"  '^2 '                            -- bash -c "kubectl -n team rollout history deploy/gen | tail -n +3 | sort -n | tail -1"

# A Node object, cordoned.
cat >"$WORK/node.json" <<'Y'
{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1","labels":{"kubernetes.io/hostname":"n1"}},
 "status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","message":"ok","lastHeartbeatTime":null,"lastTransitionTime":null}]}}
Y
expect "create node"                           0 'node/n1 created'               -- k create -f "$WORK/node.json"
eventually "node IPAM gives the node a pod CIDR"  '^10\.244\.0\.0/24$'           -- k get node n1 -o 'jsonpath={.spec.podCIDR}'
expect "cordon"                                0 'node/n1 cordoned'              -- k cordon n1
expect "cordoned node shows SchedulingDisabled" 0 'Ready,SchedulingDisabled'     -- k get nodes

# Delete.
expect "delete pod"                            0 'pod "web" deleted'             -- k delete pod web
expect "deleted pod is gone"                   1 'NotFound|not found'            -- k get pod web
expect "delete namespace"                      0 'namespace "team" deleted'      -- k delete namespace team --wait=true --timeout=30s
expect "namespace contents are gone"           0 'No resources found'            -- k get deploy -n team

# Cascading deletion: the API server marks, the controller manager's garbage collector carries it out.
for d in bg fg or; do k create deployment "$d" --image=busybox:1.36 --replicas=2 >/dev/null; done
eventually "deployments for the cascade have pods"  '^6$'                         -- bash -c "kubectl get pods -l 'app in (bg,fg,or)' --no-headers | wc -l"
expect "delete --cascade=background"           0 'deployment.apps "bg" deleted'  -- k delete deploy bg --cascade=background
eventually "background: ReplicaSet and pods collected" '^0$'                      -- bash -c "kubectl get rs,pods -l app=bg --no-headers 2>/dev/null | wc -l"
expect "delete --cascade=foreground"           0 'deployment.apps "fg" deleted'  -- k delete deploy fg --cascade=foreground --timeout=30s
expect "foreground: dependents gone before the owner" 0 'No resources found'    -- k get rs,pods -l app=fg
expect "delete --cascade=orphan"               0 'deployment.apps "or" deleted'  -- k delete deploy or --cascade=orphan --timeout=30s
expect "orphan: the ReplicaSet stays, unowned" 0 '^or-[a-z0-9]+ :$'              -- k get rs -l app=or -o 'jsonpath={range .items[*]}{.metadata.name} :{.metadata.ownerReferences}{end}'
expect "orphan: its pods stay"                 0 '^2$'                           -- bash -c "kubectl get pods -l app=or --no-headers | wc -l"
expect "delete the orphaned ReplicaSet"        0 'deleted'                       -- k delete rs -l app=or

# Survive kill -9 under a write load: every acknowledged create is there after the restart.
RV=$(k get deploy app -o 'jsonpath={.metadata.resourceVersion}')
ACKED=$WORK/acked; : >"$ACKED"
(
  for i in $(seq 1 100000); do
    code=$(acurl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' -X POST \
      --data "{\"metadata\":{\"name\":\"load-$i\"},\"data\":{\"i\":\"$i\"}}" \
      "https://127.0.0.1:$PORT/api/v1/namespaces/default/configmaps") || break
    [ "$code" = 201 ] || break
    echo "configmap/load-$i" >>"$ACKED"
  done
) &
LOADER=$!
sleep 2
kill -9 "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null; SERVER_PID=""
wait "$LOADER"
start_server
k get configmaps -o name | sort >"$WORK/stored"
MISSING=$(sort "$ACKED" | comm -23 - "$WORK/stored" | wc -l)
if [ "$(wc -l <"$ACKED")" -gt 10 ] && [ "$MISSING" -eq 0 ]; then
  pass "kill -9 under load: all $(wc -l <"$ACKED") acknowledged creates survived"
else
  fail "kill -9 under load: $MISSING of $(wc -l <"$ACKED") acknowledged creates missing"
fi
expect "state survives kill -9"                0 "^5 $RV$"                        -- k get deploy app -o 'jsonpath={.spec.replicas} {.metadata.resourceVersion}'
expect "writes continue after restart"         0 'deployment.apps/app scaled'    -- k scale deploy app --replicas=1
expect "watch resumes from an old resourceVersion" 0 '"type":"MODIFIED"' -- acurl -sf --max-time 3 "https://127.0.0.1:$PORT/apis/apps/v1/namespaces/default/deployments?watch=true&resourceVersion=$RV&timeoutSeconds=1"
expect "bookmarks on request"                  0 '"type":"BOOKMARK"' -- acurl -s --max-time 4 "https://127.0.0.1:$PORT/api/v1/namespaces/default/pods?watch=true&allowWatchBookmarks=true&timeoutSeconds=2"
expect "metrics"                               0 'apiserver_request_total\{.*resource="deployments"' -- acurl -sf "https://127.0.0.1:$PORT/metrics"

# The Python client.
expect "python kubernetes client"              0 'python client: [0-9]+ passed, 0 failed' -- python3 "$HERE/python_client.py" "$KUBECONFIG"

echo "kubectl e2e: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
