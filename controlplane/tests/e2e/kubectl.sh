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

# Static tokens: alice (no roles yet), and the devs group.
ALICE_TOKEN=alice-0123456789abcdef; BOB_TOKEN=bob-0123456789abcdef0
printf '%s\n' "$ALICE_TOKEN,alice,1001" "$BOB_TOKEN,bob,1002,\"devs,qa\"" >"$WORK/tokens.csv"

start_server() {
  "$BIN" --data-dir "$DATA" --listen "127.0.0.1:$PORT" --bookmark-interval-secs 1 --token-auth-file "$WORK/tokens.csv" ${SKIFF_E2E_EXTRA_ARGS:-} >>"$WORK/server.log" 2>&1 &
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
expect "the API server keeps default/kubernetes: 10.96.0.1:443 to its port, no selector" 0 '^10\.96\.0\.1 443 [0-9]+ $' -- k get svc kubernetes -n default -o 'jsonpath={.spec.clusterIP} {.spec.ports[0].port} {.spec.ports[0].targetPort} {.spec.selector}'
expect "default/kubernetes can be deleted"       0 'service "kubernetes" deleted' -- k delete svc kubernetes -n default
eventually "the API server makes default/kubernetes again (within its 10 s round)" '^10\.96\.0\.1 443$' -- k get svc kubernetes -n default -o 'jsonpath={.spec.clusterIP} {.spec.ports[0].port}'
expect "service got a ClusterIP and NodePort"  0 '^10\.(9[6-9]|1[01][0-9])\.[0-9]+\.[0-9]+ 3[0-2][0-9]{3}$' -- k get svc app -o 'jsonpath={.spec.clusterIP} {.spec.ports[0].nodePort}'
sed -i 's/replicas: 2/replicas: 3/' "$WORK/app.yaml"
expect "apply --server-side"                   0 'serverside-applied'            -- k apply --server-side -f "$WORK/app.yaml"
expect "server-side apply changed replicas"    0 '^3$'                           -- k get deploy app -o 'jsonpath={.spec.replicas}'
expect "scale"                                 0 'deployment.apps/app scaled'    -- k scale deploy app --replicas=5
# Revision history and rollback, as upstream: the Deployment's revision annotation, change-cause on the ReplicaSets.
expect "create deployment undo"               0 'deployment.apps/undo created' -- k create deployment undo --image=busybox:1 --replicas=1
expect "annotate a change-cause"              0 'annotated'                    -- k annotate deploy undo kubernetes.io/change-cause=first
eventually "the Deployment carries its revision" '^1 first$' -- k get rs -l app=undo -o 'jsonpath={.items[0].metadata.annotations.deployment\.kubernetes\.io/revision} {.items[0].metadata.annotations.kubernetes\.io/change-cause}'
expect "set image"                            0 'image updated'                -- k set image deploy/undo busybox=busybox:2
expect "second change-cause"                  0 'annotated'                    -- k annotate deploy undo kubernetes.io/change-cause=second --overwrite
eventually "rollout history lists both revisions with their change-cause" '1 +first.*2 +second' -- sh -c 'kubectl --request-timeout=20s rollout history deploy/undo | tr "\n" " "'
expect "rollout undo"                         0 'deployment.apps/undo rolled back' -- k rollout undo deploy/undo
eventually "undo restored the first template as revision 3" '^busybox:1 3 first$' -- k get deploy undo -o 'jsonpath={.spec.template.spec.containers[0].image} {.metadata.annotations.deployment\.kubernetes\.io/revision} {.metadata.annotations.kubernetes\.io/change-cause}'
expect "rollout undo --to-revision"           0 'rolled back'                  -- k rollout undo deploy/undo --to-revision=2
eventually "and back to the second" '^busybox:2 4$' -- k get deploy undo -o 'jsonpath={.spec.template.spec.containers[0].image} {.metadata.annotations.deployment\.kubernetes\.io/revision}'
expect "undo to a revision that is not there" 1 'unable to find specified revision 9' -- k rollout undo deploy/undo --to-revision=9
expect "delete deployment undo"               0 'deleted'                      -- k delete deploy undo
# StatefulSet: ordered pods with stable names and claims, rolling update from the top, history and undo. No node
# runs these pods: their status is set here as an agent would (Running and Ready).
cat >"$WORK/sts.yaml" <<'Y'
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: c, image: "busybox:1"}]}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
Y
sts_ready() { k patch pod "$1" --subresource=status --type=merge -p '{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}'; }
expect "statefulset created"                  0 'statefulset.apps/db created' -- k apply -f "$WORK/sts.yaml"
eventually "db-0 first, with its claim, hostname and subdomain" '^db-0 db-0 db data-db-0 0$' -- k get pods -l app=db -o 'jsonpath={range .items[*]}{.metadata.name} {.spec.hostname} {.spec.subdomain} {.spec.volumes[0].persistentVolumeClaim.claimName} {.metadata.labels.apps\.kubernetes\.io/pod-index}{"\n"}{end}'
expect "the claim data-db-0 is made from the template" 0 '^data-db-0 1Gi db$' -- k get pvc data-db-0 -o 'jsonpath={.metadata.name} {.spec.resources.requests.storage} {.metadata.labels.app}'
expect "db-1 waits for db-0 to be ready (OrderedReady)" 1 'NotFound' -- k get pod db-1
expect "db-0 reported ready"                 0 'patched'                      -- sts_ready db-0
eventually "then db-1" '^db-1$' -- k get pod db-1 -o 'jsonpath={.metadata.name}'
expect "db-1 reported ready"                 0 'patched'                      -- sts_ready db-1
eventually "status counts 2 ready at one revision" '^2 2 2 db-[a-z0-9]+ db-[a-z0-9]+$' -- k get sts db -o 'jsonpath={.status.replicas} {.status.readyReplicas} {.status.updatedReplicas} {.status.currentRevision} {.status.updateRevision}'
expect "get sts prints READY"                 0 'db +2/2'                     -- k get sts db
expect "rollout status sts"                   0 'roll out complete: 2 new pods' -- k rollout status sts/db --timeout=10s
expect "a ControllerRevision per template"    0 'statefulset.apps/db +1'      -- k get controllerrevisions
expect "set image on the StatefulSet"         0 'image updated'                -- k set image sts/db c=busybox:2
eventually "the rolling update replaces the highest ordinal first" '^db-1 busybox:2$' -- k get pod db-1 -o 'jsonpath={.metadata.name} {.spec.containers[0].image}'
expect "db-0 still runs the old image meanwhile" 0 '^busybox:1$'              -- k get pod db-0 -o 'jsonpath={.spec.containers[0].image}'
expect "the new db-1 reported ready"         0 'patched'                      -- sts_ready db-1
eventually "then db-0" '^busybox:2$' -- k get pod db-0 -o 'jsonpath={.spec.containers[0].image}'
expect "db-0 reported ready"                 0 'patched'                      -- sts_ready db-0
eventually "the update revision becomes current" '^2 (db-[a-z0-9]+) \1$' -- k get sts db -o 'jsonpath={.status.updatedReplicas} {.status.currentRevision} {.status.updateRevision}'
expect "rollout history sts"                  0 '1 +<none>.*2 +<none>'         -- sh -c 'kubectl --request-timeout=20s rollout history sts/db | tr "\n" " "'
expect "rollout undo sts"                     0 'statefulset.apps/db rolled back' -- k rollout undo sts/db
eventually "undo restored busybox:1 in the template" '^busybox:1$' -- k get sts db -o 'jsonpath={.spec.template.spec.containers[0].image}'
expect "spec fields other than replicas/template/... are immutable" 1 'updates to statefulset spec for fields other than' -- k patch sts db --type=merge -p '{"spec":{"serviceName":"other"}}'
expect "bad podManagementPolicy is refused"   1 'spec.podManagementPolicy: Unsupported value: "Sometimes"' -- sh -c "sed 's/^  serviceName: db/  serviceName: db\n  podManagementPolicy: Sometimes/; s/name: db}/name: db2}/' '$WORK/sts.yaml' | kubectl --request-timeout=20s apply -f -"
expect "scale sts"                            0 'statefulset.apps/db scaled'  -- k scale sts db --replicas=1
eventually "scaling down removes the highest ordinal" '^db-0 ?$' -- k get pods -l app=db -o 'jsonpath={range .items[*]}{.metadata.name} {end}'
expect "delete sts"                           0 'deleted'                      -- k delete sts db
eventually "its pods and revisions go with it" '^$' -- sh -c 'kubectl --request-timeout=20s get pods,controllerrevisions -l app=db -o name'
expect "its claims stay (whenDeleted: Retain)" 0 'data-db-0.*data-db-1'      -- sh -c 'kubectl --request-timeout=20s get pvc -o name | tr "\n" " "'
expect "delete the claims"                    0 'deleted'                      -- k delete pvc data-db-0 data-db-1
# CronJob: kubectl create cronjob, the table, validation, a Job from it by hand; one that runs every minute is checked
# near the end (its first Job is made at the next full minute).
expect "create cronjob"                       0 'cronjob.batch/tick created'   -- k create cronjob tick --image=busybox:1 --schedule='* * * * *' -- true
expect "get cj prints schedule, timezone, suspend, active" 0 '^tick +\* \* \* \* \* +<none> +False +0 +<none> ' -- k get cj tick --no-headers
expect "cronjob defaults"                     0 '^Allow 3 1 OnFailure$'             -- k get cj tick -o 'jsonpath={.spec.concurrencyPolicy} {.spec.successfulJobsHistoryLimit} {.spec.failedJobsHistoryLimit} {.spec.jobTemplate.spec.template.spec.restartPolicy}'
expect "a volume named like a host path is refused" 1 'spec.volumes\[0\].name: Invalid value: "/etc"' -- k run volpath --image=busybox:1 --overrides='{"spec":{"volumes":[{"name":"/etc","emptyDir":{}}]}}'
expect "a setuid volume file mode is refused"  1 'defaultMode: Invalid value: 2541' -- k run volmode --image=busybox:1 --overrides='{"spec":{"volumes":[{"name":"c","configMap":{"name":"x","defaultMode":2541}}]}}'
expect "a 33-bit runAsUser is refused"         1 'runAsUser: Invalid value: 4294967296' -- k run bigid --image=busybox:1 --overrides='{"spec":{"securityContext":{"runAsUser":4294967296}}}'
expect "a negative cpu limit is refused"       1 'must be greater than or equal to 0' -- k run negcpu --image=busybox:1 --overrides='{"spec":{"containers":[{"name":"negcpu","image":"busybox:1","resources":{"limits":{"cpu":"-1"}}}]}}'
expect "a bad schedule is refused"            1 'spec.schedule: Invalid value: "every minute"' -- k create cronjob bad --image=busybox:1 --schedule='every minute'
expect "TZ in the schedule is refused"        1 'use timeZone field instead'   -- k create cronjob bad --image=busybox:1 --schedule='CRON_TZ=UTC * * * * *'
expect "an unknown time zone is refused"      1 'spec.timeZone: Invalid value: "Mars/Olympus"' -- k patch cj tick --type=merge -p '{"spec":{"timeZone":"Mars/Olympus"}}'
expect "a time zone"                          0 'patched'                       -- k patch cj tick --type=merge -p '{"spec":{"timeZone":"Europe/Berlin"}}'
expect "create job --from=cronjob"            0 'job.batch/by-hand created'    -- k create job by-hand --from=cronjob/tick
expect "the Job from the cronjob's template"  0 '^tick busybox:1 manual$'      -- k get job by-hand -o 'jsonpath={.metadata.ownerReferences[0].name} {.spec.template.spec.containers[0].image} {.metadata.annotations.cronjob\.kubernetes\.io/instantiate}'
expect "delete the job made by hand"          0 'deleted'                       -- k delete job by-hand
# PodDisruptionBudget and the eviction API: the budget's status from its pods (their status set here as an agent
# would), an eviction that takes from the budget, one refused with 429, a Pending pod that goes regardless.
expect "create deployment for a budget"       0 'created'                       -- k create deployment guarded --image=busybox:1 --replicas=3
eventually "its three pods"                   '^3$'                             -- sh -c "kubectl --request-timeout=20s get pods -l app=guarded -o name | wc -l"
for p in $(k get pods -l app=guarded -o name); do k patch "$p" --subresource=status --type=merge -p '{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}' >/dev/null; done
expect "create pdb"                           0 'poddisruptionbudget.policy/guarded created' -- k create pdb guarded --selector=app=guarded --min-available=2
eventually "the budget allows one disruption" '^guarded +2 +N/A +1 '            -- k get pdb guarded --no-headers
expect "pdb status"                           0 '^3 3 2 True SufficientPods$'   -- k get pdb guarded -o 'jsonpath={.status.expectedPods} {.status.currentHealthy} {.status.desiredHealthy} {.status.conditions[0].status} {.status.conditions[0].reason}'
evict() { printf '{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"%s","namespace":"default"}}' "$1" >"$WORK/eviction.json"; kubectl --request-timeout=20s create --raw "/api/v1/namespaces/default/pods/$1/eviction" -f "$WORK/eviction.json"; }
read -r G1 G2 G3 <<<"$(k get pods -l app=guarded -o 'jsonpath={.items[*].metadata.name}')"
expect "an eviction within the budget"        0 '"status":"Success"'            -- evict "$G1"
expect "the evicted pod is gone"              1 'NotFound'                      -- k get pod "$G1"
expect "one beyond it: 429 with the budget's cause" 1 'Cannot evict pod as it would violate the pod.s disruption budget' -- evict "$G2"
expect "the refused pod stays"                0 "$G2"                           -- k get pod "$G2" -o name
expect "a Pending pod goes regardless"        0 '"status":"Success"'            -- sh -c "evict_pending=\$(kubectl --request-timeout=20s get pods -l app=guarded --field-selector=status.phase=Pending -o 'jsonpath={.items[0].metadata.name}'); printf '{\"apiVersion\":\"policy/v1\",\"kind\":\"Eviction\",\"metadata\":{\"name\":\"%s\"}}' \"\$evict_pending\" >'$WORK/e2.json'; kubectl --request-timeout=20s create --raw \"/api/v1/namespaces/default/pods/\$evict_pending/eviction\" -f '$WORK/e2.json'"
expect "minAvailable and maxUnavailable together are refused" 1 'minAvailable and maxUnavailable cannot be both set' -- k patch pdb guarded --type=merge -p '{"spec":{"maxUnavailable":1}}'
expect "two budgets for one pod: the eviction cannot decide" 0 'created' -- k create pdb guarded2 --selector=app=guarded --max-unavailable=1
expect "eviction with two budgets: 500"       1 'more than one PodDisruptionBudget' -- evict "$G3"
expect "delete the budgets and the deployment" 0 'deleted'                     -- k delete pdb guarded guarded2
k delete deployment guarded >/dev/null 2>&1
# PriorityClasses and the Priority admission.
expect "the system classes exist"             0 '^system-cluster-critical +2000000000 +false .*system-node-critical +2000001000 +false ' -- sh -c 'kubectl --request-timeout=20s get pc --no-headers | tr "\n" " "'
expect "create priorityclass"                 0 'priorityclass.scheduling.k8s.io/high created' -- k create priorityclass high --value=1000 --description="important pods"
expect "values above one billion are reserved" 1 'maximum allowed value of a user defined priority is 1000000000' -- k create priorityclass huge --value=2000000000
expect "system- names are reserved"           1 "priority class names with 'system-' prefix are reserved" -- k create priorityclass system-mine --value=1
expect "a class's value cannot change"        1 'value: Forbidden: may not be changed in an update' -- k patch pc high --type=merge -p '{"value":5}'
expect "system classes cannot be deleted"     1 'this is a system priority class and cannot be deleted' -- k delete pc system-node-critical
expect "a pod of a class gets its priority"   0 '^1000 PreemptLowerPriority$'   -- sh -c "kubectl --request-timeout=20s run prio --image=busybox:1 --overrides='{\"spec\":{\"priorityClassName\":\"high\"}}' >/dev/null && kubectl --request-timeout=20s get pod prio -o 'jsonpath={.spec.priority} {.spec.preemptionPolicy}'"
expect "a pod naming a missing class is refused" 1 'no PriorityClass with name nope was found' -- k run noclass --image=busybox:1 --overrides='{"spec":{"priorityClassName":"nope"}}'
expect "a pod may not state its own priority" 1 'the integer value of priority \(5\) must not be provided in pod spec' -- k run selfprio --image=busybox:1 --overrides='{"spec":{"priority":5}}'
expect "a pod without a class: priority 0"    0 '^0 PreemptLowerPriority$'      -- sh -c "kubectl --request-timeout=20s run plain --image=busybox:1 >/dev/null && kubectl --request-timeout=20s get pod plain -o 'jsonpath={.spec.priority} {.spec.preemptionPolicy}'"
expect "a global default class"               0 'created'                       -- k create priorityclass fallback --value=7 --global-default --preemption-policy=Never
expect "only one global default"              1 'is already marked as default. Only one default can exist' -- k create priorityclass fallback2 --value=8 --global-default
expect "a pod without a class gets the default" 0 '^fallback 7 Never$'          -- sh -c "kubectl --request-timeout=20s run defaulted --image=busybox:1 >/dev/null && kubectl --request-timeout=20s get pod defaulted -o 'jsonpath={.spec.priorityClassName} {.spec.priority} {.spec.preemptionPolicy}'"
expect "clean up the priority pods and classes" 0 'deleted'                     -- sh -c "kubectl --request-timeout=20s delete pod prio plain defaulted --wait=false && kubectl --request-timeout=20s delete pc high fallback"
# LimitRanges: defaults for containers that name none, and refusals outside the range.
k create namespace limited >/dev/null
printf '%s' '{"apiVersion":"v1","kind":"LimitRange","metadata":{"name":"lr","namespace":"limited"},"spec":{"limits":[{"type":"Container","max":{"cpu":"1"},"default":{"cpu":"500m","memory":"128Mi"},"defaultRequest":{"cpu":"100m"}}]}}' >"$WORK/lr.json"
expect "create a LimitRange"                  0 'limitrange/lr created'         -- k create -f "$WORK/lr.json"
expect "its defaults as upstream fills them"  0 '^500m 128Mi 100m 128Mi$'       -- k get limits lr -n limited -o 'jsonpath={.spec.limits[0].default.cpu} {.spec.limits[0].default.memory} {.spec.limits[0].defaultRequest.cpu} {.spec.limits[0].defaultRequest.memory}'
expect "a pod without resources gets the defaults" 0 '^\{"limits":\{"cpu":"500m","memory":"128Mi"\},"requests":\{"cpu":"100m","memory":"128Mi"\}\} LimitRanger plugin set: cpu, memory request for container lr; cpu, memory limit for container lr$' -- sh -c "kubectl --request-timeout=20s run lr -n limited --image=busybox:1 >/dev/null && kubectl --request-timeout=20s get pod lr -n limited -o 'jsonpath={.spec.containers[0].resources} {.metadata.annotations.kubernetes\.io/limit-ranger}'"
expect "a pod above the max is refused"       1 'maximum cpu usage per Container is 1, but limit is 2' -- k run big -n limited --image=busybox:1 --overrides='{"spec":{"containers":[{"name":"big","image":"busybox:1","resources":{"limits":{"cpu":"2"}}}]}}'
expect "a bad range is refused"               1 'min value 2 is greater than max value 1' -- k patch limits lr -n limited --type=json -p '[{"op":"add","path":"/spec/limits/0/min","value":{"cpu":"2"}}]'
expect "delete the limited namespace"         0 'deleted'                       -- k delete namespace limited --wait=false
# ResourceQuota: the controller's account, the admission's refusals with upstream's words, what deletion gives back.
k create namespace quotaed >/dev/null
expect "create quota"                         0 'resourcequota/q created'      -- k create quota q -n quotaed --hard=pods=2,requests.cpu=1,services=1
eventually "the controller accounts for it"   '^0 0 0$'                         -- k get quota q -n quotaed -o 'jsonpath={.status.used.pods} {.status.used.requests\.cpu} {.status.used.services}'
qpod() { k run "$1" -n quotaed --image=busybox:1 --overrides="{\"spec\":{\"containers\":[{\"name\":\"$1\",\"image\":\"busybox:1\",\"resources\":{\"requests\":{\"cpu\":\"$2\"}}}]}}"; }
expect "a pod without a cpu request is refused" 1 'failed quota: q: must specify requests.cpu for: bare' -- k run bare -n quotaed --image=busybox:1
expect "a pod within the quota"               0 'pod/p1 created'                -- qpod p1 600m
expect "one past requests.cpu is refused"     1 'exceeded quota: q, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1' -- qpod p2 600m
expect "a smaller one fits"                   0 'pod/p3 created'                -- qpod p3 300m
expect "a third pod is past pods=2"           1 'exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2' -- qpod p4 10m
expect "get quota shows used/hard"            0 'pods: 2/2, requests.cpu: 900m/1, services: 0/1' -- k get quota q -n quotaed --no-headers
expect "a service within the quota"           0 'created'                       -- k create service clusterip s1 -n quotaed --tcp=80:80
expect "a second service is past services=1"  1 'exceeded quota: q, requested: services=1, used: services=1, limited: services=1' -- k create service clusterip s2 -n quotaed --tcp=80:80
expect "delete a pod"                         0 'deleted'                       -- k delete pod p1 -n quotaed
eventually "its share comes back"             '^1 300m$'                        -- k get quota q -n quotaed -o 'jsonpath={.status.used.pods} {.status.used.requests\.cpu}'
expect "then another pod fits"                0 'pod/p5 created'                -- qpod p5 600m
expect "delete the quotaed namespace"         0 'deleted'                       -- k delete namespace quotaed --wait=false
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

# Security: who gets in, and what they may do.
U="https://127.0.0.1:$PORT"
code() { curl -s -o /dev/null -w '%{http_code}' --cacert "$DATA/pki/ca.crt" "$@"; true; }
expect "anonymous: health is public"           0 '^200$'  -- code "$U/readyz"
expect "anonymous: the API is refused (401)"   0 '^401$'  -- code "$U/api/v1/namespaces/default/pods"
expect "anonymous: discovery is refused (401)" 0 '^401$'  -- code "$U/apis"
expect "unknown bearer token: 401"             0 '^401$'  -- code -H "Authorization: Bearer not-a-token-0123456789" "$U/api"
expect "plain HTTP to the TLS port is refused" 0 '^(000|400)$' -- bash -c "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$PORT/api; true"
expect "an unverified server is refused by curl" 60 '' -- curl -s -o /dev/null "$U/readyz"
# A client certificate from another CA: the handshake fails.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=other-ca" -keyout "$WORK/oca.key" -out "$WORK/oca.crt" >/dev/null 2>&1
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=mallory/O=system:masters" -keyout "$WORK/m.key" -out "$WORK/m.csr" >/dev/null 2>&1
openssl x509 -req -in "$WORK/m.csr" -CA "$WORK/oca.crt" -CAkey "$WORK/oca.key" -CAcreateserial -days 1 -out "$WORK/m.crt" >/dev/null 2>&1
expect "a certificate from another CA: no connection" 0 '^000$' -- code --cert "$WORK/m.crt" --key "$WORK/m.key" "$U/api/v1/secrets"
expect "token user without roles: 403"         0 '^403$'  -- code -H "Authorization: Bearer $ALICE_TOKEN" "$U/api/v1/namespaces/default/pods"
expect "token user: discovery is allowed"      0 '^200$'  -- code -H "Authorization: Bearer $ALICE_TOKEN" "$U/apis"
expect "403 names the user and the verb"       1 'User "alice" cannot list resource "pods" in API group "" in the namespace "default"' -- k --as alice get pods
expect "RoleBinding to view"                   0 'created' -- k create rolebinding alice-view --clusterrole=view --user=alice -n default
eventually "alice can list pods now"           'No resources|NAME' -- k --as alice get pods
expect "view does not allow delete"            1 'forbidden' -- k --as alice delete deploy app
expect "view stays in its namespace"           1 'forbidden' -- k --as alice get pods -n kube-system
expect "a Role with resourceNames"             0 'created' -- k create role cm-one --verb=get --resource=configmaps --resource-name=load-1 -n default
expect "bound to a group"                      0 'created' -- k create rolebinding devs-cm-one --role=cm-one --group=devs -n default
eventually "group member reads the named configmap" '^200$' -- code -H "Authorization: Bearer $BOB_TOKEN" "$U/api/v1/namespaces/default/configmaps/load-1"
expect "but not another one"                   0 '^403$'  -- code -H "Authorization: Bearer $BOB_TOKEN" "$U/api/v1/namespaces/default/configmaps/load-2"
expect "impersonation needs permission"        0 '^403$'  -- code -H "Authorization: Bearer $ALICE_TOKEN" -H "Impersonate-User: skiff-admin" -H "Impersonate-Group: system:masters" "$U/api/v1/secrets"
expect "invalid RoleBinding is refused"        1 'roleRef.kind' -- bash -c "printf '%s' '{\"apiVersion\":\"rbac.authorization.k8s.io/v1\",\"kind\":\"RoleBinding\",\"metadata\":{\"name\":\"bad\"},\"roleRef\":{\"kind\":\"Pod\",\"name\":\"x\"}}' | kubectl create -f -"
# Bootstrap tokens: valid, expired.
expect "bootstrap token secret"                0 'created' -- k -n kube-system create secret generic bootstrap-token-abcdef --type=bootstrap.kubernetes.io/token --from-literal=token-id=abcdef --from-literal=token-secret=0123456789abcdef --from-literal=usage-bootstrap-authentication=true
expect "bootstrap token authenticates"         0 '^200$'  -- code -H "Authorization: Bearer abcdef.0123456789abcdef" "$U/api"
expect "bootstrap token with a wrong secret"   0 '^401$'  -- code -H "Authorization: Bearer abcdef.0123456789abcdee" "$U/api"
expect "expired bootstrap token"               0 'created' -- k -n kube-system create secret generic bootstrap-token-zzzzzz --type=bootstrap.kubernetes.io/token --from-literal=token-id=zzzzzz --from-literal=token-secret=0123456789abcdef --from-literal=usage-bootstrap-authentication=true --from-literal=expiration=2020-01-01T00:00:00Z
expect "expired bootstrap token: 401"          0 '^401$'  -- code -H "Authorization: Bearer zzzzzz.0123456789abcdef" "$U/api"
# CertificateSigningRequests: a bootstrapper gets a node certificate, never a masters one; an administrator approves
# or denies the rest (kubectl certificate approve|deny), and an issued certificate works.
csr_body() { # NAME SIGNER KEY-FILE SUBJECT
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$3" -subj "$4" 2>/dev/null |
    python3 -c 'import base64,json,sys; print(json.dumps({"apiVersion":"certificates.k8s.io/v1","kind":"CertificateSigningRequest","metadata":{"name":sys.argv[1]},"spec":{"request":base64.b64encode(sys.stdin.buffer.read()).decode(),"signerName":sys.argv[2],"usages":["digital signature","key encipherment","client auth"]}}))' "$1" "$2"
}
csr_body node-boot kubernetes.io/kube-apiserver-client-kubelet "$WORK/nb.key" "/O=system:nodes/CN=system:node:boot" >"$WORK/nb.json"
expect "a bootstrapper asks for a node certificate" 0 '^201$' -- code -H "Authorization: Bearer abcdef.0123456789abcdef" -H 'Content-Type: application/json' --data @"$WORK/nb.json" "$U/apis/certificates.k8s.io/v1/certificatesigningrequests"
eventually "it is approved and issued"          'Approved,Issued' -- k get csr node-boot
expect "the requester is the token, not the body" 0 '^system:bootstrap:abcdef$' -- k get csr node-boot -o 'jsonpath={.spec.username}'
k get csr node-boot -o 'jsonpath={.status.certificate}' | base64 -d >"$WORK/nb.crt"
expect "the issued certificate authenticates the node" 0 '^200$' -- code --cert "$WORK/nb.crt" --key "$WORK/nb.key" "$U/api/v1/nodes"
csr_body evil kubernetes.io/kube-apiserver-client-kubelet "$WORK/evil.key" "/O=system:masters/CN=system:node:evil" >"$WORK/evil.json"
expect "a bootstrapper asks for a masters certificate" 0 '^201$' -- code -H "Authorization: Bearer abcdef.0123456789abcdef" -H 'Content-Type: application/json' --data @"$WORK/evil.json" "$U/apis/certificates.k8s.io/v1/certificatesigningrequests"
sleep 2
expect "it stays pending"                       0 'Pending'  -- k get csr evil
expect "the administrator denies it"            0 'denied'   -- k certificate deny evil
expect "denied, never issued"                   0 '^Denied$' -- k get csr evil -o 'jsonpath={.status.conditions[0].type}{.status.certificate}'
expect "a bootstrapper may not approve"         0 '^403$'    -- code -H "Authorization: Bearer abcdef.0123456789abcdef" -X PUT -H 'Content-Type: application/json' --data @"$WORK/evil.json" "$U/apis/certificates.k8s.io/v1/certificatesigningrequests/evil/approval"
csr_body carol kubernetes.io/kube-apiserver-client "$WORK/carol.key" "/CN=carol" >"$WORK/carol.json"
expect "a client certificate request"           0 'created'  -- k create -f "$WORK/carol.json"
expect "the administrator approves it"          0 'approved' -- k certificate approve carol
eventually "issued"                             'Approved,Issued' -- k get csr carol
k get csr carol -o 'jsonpath={.status.certificate}' | base64 -d >"$WORK/carol.crt"
expect "carol is authenticated (and has no role)" 0 '^403$' -- code --cert "$WORK/carol.crt" --key "$WORK/carol.key" "$U/api/v1/namespaces/default/pods"
expect "a CSR that is not a request is refused" 1 'CERTIFICATE REQUEST' -- bash -c "printf '%s' '{\"apiVersion\":\"certificates.k8s.io/v1\",\"kind\":\"CertificateSigningRequest\",\"metadata\":{\"name\":\"junk\"},\"spec\":{\"request\":\"aGVsbG8=\",\"signerName\":\"kubernetes.io/kube-apiserver-client\",\"usages\":[\"client auth\"]}}' | kubectl create -f -"

# Node credentials and the node authorizer.
for n in n-a n-b; do
  "$BIN" kubeconfig --data-dir "$DATA" --user "system:node:$n" --group system:nodes --server "$U" --out "$WORK/$n.kubeconfig"
done
na() { kubectl --kubeconfig "$WORK/n-a.kubeconfig" --request-timeout=20s "$@"; }
expect "node creates its own Node"             0 'created' -- bash -c "printf '%s' '{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{\"name\":\"n-a\"}}' | kubectl --kubeconfig $WORK/n-a.kubeconfig create -f -"
expect "node may not create another Node"      1 'can only change its own Node' -- bash -c "printf '%s' '{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{\"name\":\"n-b\"}}' | kubectl --kubeconfig $WORK/n-a.kubeconfig create -f -"
expect "node labels itself"                    0 'labeled' -- na label node n-a team=x
expect "node may not touch another Node"       1 'forbidden' -- na label node n1 team=x
expect "node reads pods"                       0 'NAME|No resources' -- na get pods -A
expect "node may not read secrets it has no pod for" 1 'no relationship found' -- na -n kube-system get secret bootstrap-token-abcdef
expect "pod on n-a using a secret"             0 'created' -- k create secret generic for-a --from-literal=k=v
expect "pod bound to n-a"                      0 'created' -- bash -c "printf '%s' '{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"on-a\"},\"spec\":{\"nodeName\":\"n-a\",\"containers\":[{\"name\":\"c\",\"image\":\"busybox\",\"envFrom\":[{\"secretRef\":{\"name\":\"for-a\"}}]}]}}' | kubectl create -f -"
expect "node reads the secret of its pod"      0 'for-a'   -- na get secret for-a -o name
expect "another node may not"                  1 'forbidden' -- kubectl --kubeconfig "$WORK/n-b.kubeconfig" get secret for-a
expect "node may not delete pods of others"    1 'forbidden' -- kubectl --kubeconfig "$WORK/n-b.kubeconfig" delete pod on-a --wait=false
expect "node may not create non-mirror pods"   1 'mirror pods' -- bash -c "printf '%s' '{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"sneaky\"},\"spec\":{\"nodeName\":\"n-a\",\"containers\":[{\"name\":\"c\",\"image\":\"busybox\"}]}}' | kubectl --kubeconfig $WORK/n-a.kubeconfig create -f -"
expect "node may not read RBAC"                1 'forbidden' -- na get clusterroles
expect "nothing written by refused requests"   1 'NotFound|not found' -- k get node n-b
# Service accounts: one named default in every namespace with the CA ConfigMap, tokens (bound, legacy Secrets),
# the pod admission, reviews (kubectl auth can-i / whoami, TokenReview), OIDC discovery.
sat() { local t=$1; shift; kubectl --request-timeout=20s --kubeconfig /dev/null --server "$U" --certificate-authority "$DATA/pki/ca.crt" --token "$t" "$@"; }
expect "a new namespace has the default service account" 0 'serviceaccount/default' -- bash -c "kubectl create ns sa-test >/dev/null && kubectl -n sa-test get sa default -o name"
expect "and the cluster CA as kube-root-ca.crt" 0 'BEGIN CERTIFICATE' -- k -n sa-test get cm kube-root-ca.crt -o 'jsonpath={.data.ca\.crt}'
k -n sa-test delete sa default >/dev/null; k -n sa-test patch cm kube-root-ca.crt -p '{"data":{"ca.crt":"tampered"}}' >/dev/null
ok=""; for _ in $(seq 1 60); do
  [ "$(k -n sa-test get sa default -o name 2>/dev/null)" = serviceaccount/default ] &&
    k -n sa-test get cm kube-root-ca.crt -o 'jsonpath={.data.ca\.crt}' | cmp -s - "$DATA/pki/ca.crt" && { ok=1; break; }
  sleep 0.5; done
[ -n "$ok" ] && pass "a deleted default account and a changed CA ConfigMap are put back" || fail "default account / CA ConfigMap repair"
expect "kubectl create token"                  0 '^eyJ' -- k -n sa-test create token default
SA_TOKEN=$(k -n sa-test create token default --duration 15m)
expect "the token authenticates as the account" 0 'system:serviceaccount:sa-test:default' -- sat "$SA_TOKEN" auth whoami
expect "the account has no role yet"           1 'cannot list resource "pods"' -- sat "$SA_TOKEN" get pods -n sa-test
expect "a token shorter than 10 minutes is refused" 1 'less than 10 minutes' -- k -n sa-test create token default --duration 5m
expect "a token for a missing account"         1 'serviceaccounts "nope" not found' -- k -n sa-test create token nope
printf '{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":[null]}' >"$WORK/badtoken.json"
expect "a TokenRequest whose spec is not an object" 1 'spec must be an object' -- k create --raw /api/v1/namespaces/sa-test/serviceaccounts/default/token -f "$WORK/badtoken.json"
expect "a pod of a missing account is refused" 1 'error looking up service account sa-test/nope' -- k -n sa-test run p0 --image=busybox --overrides='{"spec":{"serviceAccountName":"nope"}}'
expect "a pod gets the token volume"           0 '^kube-api-access-[a-z0-9]{5} /var/run/secrets/kubernetes.io/serviceaccount$' -- bash -c "kubectl -n sa-test run p --image=busybox >/dev/null && kubectl -n sa-test get pod p -o jsonpath='{.spec.volumes[0].name} {.spec.containers[0].volumeMounts[0].mountPath}'"
POD_TOKEN=$(k -n sa-test create token default --bound-object-kind Pod --bound-object-name p)
expect "a token bound to the pod names it"     0 'pod-name +\[p\]' -- sat "$POD_TOKEN" auth whoami
expect "bound to a pod that is not there"      1 'pods "gone" not found' -- k -n sa-test create token default --bound-object-kind Pod --bound-object-name gone
k -n sa-test delete pod p --force --grace-period=0 >/dev/null 2>&1
expect "deleting the pod revokes its token"    0 '^401$' -- code -H "Authorization: Bearer $POD_TOKEN" "$U/api"
printf '%s' '{"apiVersion":"v1","kind":"Secret","metadata":{"name":"legacy","annotations":{"kubernetes.io/service-account.name":"default"}},"type":"kubernetes.io/service-account-token"}' >"$WORK/legacy.json"
expect "a service-account-token Secret is filled in" 0 'created' -- k -n sa-test create -f "$WORK/legacy.json"
LEGACY=$(k -n sa-test get secret legacy -o 'jsonpath={.data.token}' | base64 -d)
expect "its token authenticates"               0 '^200$' -- code -H "Authorization: Bearer $LEGACY" "$U/api"
expect "deleting the Secret revokes it"        0 '^401$' -- bash -c "kubectl -n sa-test delete secret legacy >/dev/null; curl -s -o /dev/null -w '%{http_code}' --cacert $DATA/pki/ca.crt -H 'Authorization: Bearer $LEGACY' $U/api"
expect "a token Secret for a missing account is refused" 1 'serviceaccount "nope" not found' -- bash -c "sed 's/\"default\"/\"nope\"/' $WORK/legacy.json | kubectl -n sa-test create -f -"
expect "a token of a deleted account is refused" 0 '^401$' -- bash -c "kubectl -n sa-test delete sa default >/dev/null; curl -s -o /dev/null -w '%{http_code}' --cacert $DATA/pki/ca.crt -H 'Authorization: Bearer $SA_TOKEN' $U/api"
expect "kubectl auth can-i (admin)"            0 '^yes$' -- k auth can-i create pods
expect "kubectl auth can-i --as alice: no"     1 '^no$'  -- k auth can-i delete deployments --as alice -n default
expect "kubectl auth can-i --as alice: yes"    0 '^yes$' -- k auth can-i list pods --as alice -n default
expect "kubectl auth can-i --list"             0 'pods +\[\] +\[\] +\[get list watch\]' -- k auth can-i --list --as alice -n default
expect "kubectl auth whoami"                   0 'skiff-admin' -- k auth whoami
expect "a user asks about themselves with their own token" 0 '^no$' -- bash -c "kubectl --kubeconfig /dev/null --server $U --certificate-authority $DATA/pki/ca.crt --token $ALICE_TOKEN auth can-i delete nodes; true"
expect "TokenReview of a forged token"         0 'invalid bearer token' -- bash -c "printf '%s' '{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenReview\",\"spec\":{\"token\":\"eyJhbGciOiJFUzI1NiJ9.e30.AAAA\"}}' | kubectl create -f - -o 'jsonpath={.status.error}'"
expect "SubjectAccessReview"                   0 '^true$' -- bash -c "printf '%s' '{\"apiVersion\":\"authorization.k8s.io/v1\",\"kind\":\"SubjectAccessReview\",\"spec\":{\"user\":\"alice\",\"resourceAttributes\":{\"namespace\":\"default\",\"verb\":\"get\",\"resource\":\"pods\"}}}' | kubectl create -f - -o 'jsonpath={.status.allowed}'"
expect "OIDC discovery document"               0 '"jwks_uri"' -- acurl -s "$U/.well-known/openid-configuration"
expect "and its keys"                          0 '"kty":"EC"' -- acurl -s "$U/openid/v1/jwks"
expect "a user without the role may not read them" 0 '^403$' -- code -H "Authorization: Bearer $ALICE_TOKEN" "$U/openid/v1/jwks"
# Storage: the default class, a claim's defaults, validation, static binding, release.
expect "the default StorageClass"              0 '^local-path \(default\) +skiff.io/local-path +Delete +WaitForFirstConsumer' -- k get storageclass --no-headers
expect "a claim without a class gets the default" 0 '^local-path kubernetes.io/pvc-protection$' -- bash -c "printf '%s' '{\"apiVersion\":\"v1\",\"kind\":\"PersistentVolumeClaim\",\"metadata\":{\"name\":\"lazy\"},\"spec\":{\"accessModes\":[\"ReadWriteOnce\"],\"resources\":{\"requests\":{\"storage\":\"1Gi\"}}}}' | kubectl create -f - >/dev/null && kubectl get pvc lazy -o 'jsonpath={.spec.storageClassName} {.metadata.finalizers[0]}'"
expect "a bad claim is refused"                1 'spec.accessModes: Unsupported value: "Sometimes"' -- bash -c "printf '%s' '{\"apiVersion\":\"v1\",\"kind\":\"PersistentVolumeClaim\",\"metadata\":{\"name\":\"bad\"},\"spec\":{\"accessModes\":[\"Sometimes\"],\"resources\":{\"requests\":{\"storage\":\"1Gi\"}}}}' | kubectl create -f -"
expect "a local volume needs node affinity"    1 'Local volumes require node affinity' -- bash -c "printf '%s' '{\"apiVersion\":\"v1\",\"kind\":\"PersistentVolume\",\"metadata\":{\"name\":\"l\"},\"spec\":{\"capacity\":{\"storage\":\"1Gi\"},\"accessModes\":[\"ReadWriteOnce\"],\"local\":{\"path\":\"/mnt\"}}}' | kubectl create -f -"
printf '%s' '{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"PersistentVolume","metadata":{"name":"static-pv"},"spec":{"capacity":{"storage":"2Gi"},"accessModes":["ReadWriteOnce"],"storageClassName":"","hostPath":{"path":"/srv/x"}}},{"apiVersion":"v1","kind":"PersistentVolumeClaim","metadata":{"name":"static-claim"},"spec":{"storageClassName":"","accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"1Gi"}}}}]}' >"$WORK/static-pv.json"
expect "a static volume and a claim"           0 'created' -- k create -f "$WORK/static-pv.json"
eventually "they bind"                         '^static-claim +Bound +static-pv +2Gi +RWO ' -- k get pvc static-claim --no-headers
expect "the claim is immutable"                1 'spec is immutable after creation' -- k patch pvc static-claim -p '{"spec":{"accessModes":["ReadWriteMany"]}}'
k delete pvc static-claim lazy >/dev/null 2>&1
eventually "its volume is Released (Retain)"   '^static-pv +2Gi +RWO +Retain +Released +default/static-claim ' -- k get pv static-pv --no-headers
expect "and deleted when asked"                0 'deleted' -- k delete pv static-pv
printf 'X-Big: %s\r\n' "$(head -c 200000 /dev/zero | tr '\0' a)" >"$WORK/big-header"
# The server answers 431 and closes while curl may still be sending the header; the reset can then reach curl
# before the answer does (000). A few tries, so that the answer is seen.
big_header_code() { local c; for _ in 1 2 3 4 5; do c=$(code -H @"$WORK/big-header" -H "Authorization: Bearer $ALICE_TOKEN" "$U/api"); [ "$c" = 431 ] && break; done; echo "$c"; }
expect "oversized request headers: 431"        0 '^431$'  -- big_header_code
expect "oversized body: 413"                   0 '^413$'  -- bash -c "head -c 4000000 /dev/zero | tr '\0' a | curl -s -o /dev/null -w '%{http_code}' --cacert $DATA/pki/ca.crt --cert $WORK/admin.crt --key $WORK/admin.key -H 'Content-Type: application/json' -X POST --data-binary @- $U/api/v1/namespaces/default/configmaps"
expect "the server is still up"                0 '^200$'  -- code "$U/readyz"

# The every-minute CronJob made its first Job by now (at most a minute after it was created).
cron_job=""
for _ in $(seq 1 150); do
  cron_job=$(kubectl get jobs -o 'jsonpath={range .items[?(@.metadata.ownerReferences[0].name=="tick")]}{.metadata.name} {.metadata.annotations.batch\.kubernetes\.io/cronjob-scheduled-timestamp}{"\n"}{end}' 2>&1 | head -1)
  grep -qE '^tick-[0-9]+ [0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:00\+01:00$' <<<"$cron_job" && break
  sleep 0.5
done
grep -qE '^tick-[0-9]+ [0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:00\+01:00$' <<<"$cron_job" && pass "the CronJob made a Job at its time, stamped in its time zone" || fail "no Job from the CronJob" "$cron_job"
expect "status lastScheduleTime and active"   0 '^[0-9T:-]+Z tick-[0-9]+'            -- k get cj tick -o 'jsonpath={.status.lastScheduleTime} {.status.active[*].name}'
expect "a SuccessfulCreate event"             0 'SuccessfulCreate +CronJob/tick +Created job tick-' -- k events --for cronjob/tick
expect "suspend the CronJob"                  0 'patched'                       -- k patch cj tick --type=merge -p '{"spec":{"suspend":true}}'
expect "delete the CronJob"                   0 'deleted'                       -- k delete cj tick
eventually "its Jobs go with it"              '^$'                              -- sh -c "kubectl --request-timeout=20s get jobs -o name | grep tick; true"

# The Python client.
expect "python kubernetes client"              0 'python client: [0-9]+ passed, 0 failed' -- python3 "$HERE/python_client.py" "$KUBECONFIG"

# Last (it leaves odd objects behind): malformed requests of every kind get a status, and the server stays whole.
expect "fuzzing: every malformed request answered, lists read back" 0 'fuzz: 3000 requests, 0 findings' -- python3 "$HERE/fuzz.py" "$KUBECONFIG" 7 3000

echo "kubectl e2e: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
