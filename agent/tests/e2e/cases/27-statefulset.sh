# StatefulSet with real pods: stable names and hostnames, a local-path volume per pod made from the claim template;
# a replaced pod gets its own volume back with the data in it; scaling down removes the highest ordinal and keeps
# its claim; deleting the set (whenDeleted: Delete) takes the claims, their volumes and directories with it.
STS_STORE="$WORK/sts-storage"
cat >"$WORK/sts.yaml" <<Y
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: lab-sts}
provisioner: skiff.io/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
parameters: {nodePath: "$STS_STORE"}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  persistentVolumeClaimRetentionPolicy: {whenDeleted: Delete, whenScaled: Retain}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: localhost/busybox:1
        imagePullPolicy: Never
        command: ["sh", "-c", "hostname >> /data/boots; trap 'exit 0' TERM; while true; do sleep 1 & wait; done"]
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      storageClassName: lab-sts
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 16Mi}}
Y
k apply -f "$WORK/sts.yaml" >/dev/null && pass "create a StatefulSet with a claim template" || fail "create the StatefulSet" "$(k apply -f "$WORK/sts.yaml" 2>&1)"
eventually "db-0 and db-1 run" '^db-0 +1/1 +Running .*db-1 +1/1 +Running ' 120 -- lab sh -c 'kubectl --request-timeout=20s get pods -l app=db --no-headers | tr "\n" " "'
eventually "the set counts them ready" '^2 2$' 20 -- k get sts db -o 'jsonpath={.status.readyReplicas} {.status.currentReplicas}'
expect_out() { local name=$1 want=$2; shift 2; local out; out=$("$@" 2>&1); [ "$out" = "$want" ] && pass "$name" || fail "$name" "$out"; }
expect_out "each pod's hostname is its name" "db-1" k exec db-1 -- hostname
eventually "each pod has its own bound claim" '^data-db-0 +Bound .*data-db-1 +Bound ' 20 -- lab sh -c 'kubectl --request-timeout=20s get pvc --no-headers | tr "\n" " "'
expect_out "db-0 wrote to its volume" "db-0" k exec db-0 -- cat /data/boots
UID0=$(k get pod db-0 -o 'jsonpath={.metadata.uid}')
k delete pod db-0 --wait=false >/dev/null 2>&1
eventually "a deleted db-0 is made again" '^Running true$' 120 -- lab sh -c "[ \"\$(kubectl --request-timeout=20s get pod db-0 -o 'jsonpath={.metadata.uid}')\" != '$UID0' ] && kubectl --request-timeout=20s get pod db-0 -o 'jsonpath={.status.phase} {.status.containerStatuses[0].ready}'"
expect_out "the new db-0 has the old one's volume and data" "db-0
db-0" k exec db-0 -- cat /data/boots
expect_out "db-1's volume is its own" "db-1" k exec db-1 -- cat /data/boots
k scale sts db --replicas=1 >/dev/null
eventually "scaling down removes db-1" 'NotFound|not found' 60 -- k get pod db-1
expect_out "its claim stays (whenScaled: Retain)" "Bound" k get pvc data-db-1 -o 'jsonpath={.status.phase}'
DIRS=$(k get pv -o 'jsonpath={range .items[*]}{.spec.hostPath.path} {end}')
k delete sts db >/dev/null 2>&1
eventually "deleting the set deletes its pods" '^No resources found' 60 -- k get pods -l app=db
eventually "and its claims (whenDeleted: Delete)" '^No resources found' 60 -- k get pvc
eventually "and the provisioned volumes" '^No resources found' 60 -- k get pv
left=0; for d in $DIRS; do [ -e "$d" ] && left=$((left + 1)); done
[ "$left" = 0 ] && pass "the agent removed the volumes' directories" || fail "volume directories left: $left" "$DIRS"
k delete storageclass lab-sts >/dev/null 2>&1
