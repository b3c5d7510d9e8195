# Persistent volumes: a claim of a WaitForFirstConsumer local-path class gets a volume provisioned on the node of
# its first pod; data written there outlives the pod; a static hostPath volume binds to a claim of no class and is
# mounted read-only when the pod says so; a claim in use is not deleted before its pod; deleting the claim deletes
# the provisioned volume and the agent removes its directory; a Retain volume is Released; a pod naming a missing
# claim waits with upstream's message.
STORE="$WORK/storage"; mkdir -p "$WORK/static"
cat >"$WORK/pv.yaml" <<Y
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: lab-local}
provisioner: skiff.io/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
parameters: {nodePath: "$STORE"}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  storageClassName: lab-local
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: lab-static}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce, ReadOnlyMany]
  storageClassName: ""
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: "$WORK/static", type: Directory}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: static}
spec:
  storageClassName: ""
  accessModes: [ReadOnlyMany]
  resources: {requests: {storage: 100Mi}}
Y
k apply -f "$WORK/pv.yaml" >/dev/null && pass "create a storage class, claims and a static volume" || fail "create the storage objects"
eventually "the static volume binds at once" '^static +Bound +lab-static +1Gi +RWO,ROX ' 30 -- k get pvc static --no-headers
eventually "the local-path claim waits for its first consumer" 'WaitForFirstConsumer' 20 -- k describe pvc data
echo "from the host" >"$WORK/static/hello"
pv_pod() { # NAME CLAIM READONLY COMMAND
  cat <<Y
apiVersion: v1
kind: Pod
metadata: {name: $1}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: localhost/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "$4"]
    volumeMounts: [{name: v, mountPath: /data, readOnly: $3}]
  volumes: [{name: v, persistentVolumeClaim: {claimName: $2}}]
Y
}
pv_pod writer data false 'echo persisted > /data/note && cat /data/note' | k apply -f - >/dev/null
eventually "a pod with the claim runs to completion" '^writer +0/1 +Completed ' 90 -- k get pod writer --no-headers
eventually "the claim is bound to a provisioned volume" '^data +Bound +pvc-[0-9a-f-]+ +64Mi +RWO +lab-local ' 20 -- k get pvc data --no-headers
PV=$(k get pvc data -o 'jsonpath={.spec.volumeName}')
[ "$(k get pv "$PV" -o 'jsonpath={.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}')" = lab-node ] &&
  pass "the volume is pinned to the pod's node" || fail "the provisioned volume's node affinity" "$(k get pv "$PV" -o yaml 2>&1)"
DIR=$(k get pv "$PV" -o 'jsonpath={.spec.hostPath.path}')
[ "$(cat "$DIR/note" 2>&1)" = persisted ] && pass "the data is in $STORE on the node" || fail "the data on the node" "$(ls -la "$STORE" 2>&1)"
pv_pod reader data false 'cat /data/note' | k apply -f - >/dev/null
eventually "a second pod reads what the first wrote" 'persisted' 60 -- k logs reader
pv_pod ro static true 'cat /data/hello; touch /data/x && echo WRITABLE' | k apply -f - >/dev/null
eventually "the static volume is mounted" 'from the host' 60 -- k logs ro
OUT=$(k logs ro 2>&1); grep -q WRITABLE <<<"$OUT" && fail "a readOnly claim is writable" "$OUT" || pass "readOnly: true is read-only"
# A claim in use stays until its pod is gone (pvc-protection).
pv_pod holder data false 'sleep 3600' | k apply -f - >/dev/null
eventually "a pod holds the claim" '^holder +1/1 +Running ' 60 -- k get pod holder --no-headers
k delete pvc data --wait=false >/dev/null 2>&1
sleep 2
eventually "the claim in use is Terminating, not gone" '^data +Terminating ' 10 -- k get pvc data --no-headers
k delete pod holder writer reader --wait=true >/dev/null 2>&1
eventually "once the pods are gone, the claim goes" 'NotFound|not found' 40 -- k get pvc data
eventually "and its volume is deleted (reclaim policy Delete)" 'NotFound|not found' 40 -- k get pv "$PV"
[ ! -e "$DIR" ] && pass "the agent removed the volume's directory" || fail "the volume's directory is still there" "$(ls -la "$DIR" 2>&1)"
# Retain: the static volume outlives its claim, Released.
k delete pod ro --wait=true >/dev/null 2>&1; k delete pvc static >/dev/null 2>&1
eventually "a Retain volume is Released when its claim goes" '^lab-static .* Released ' 30 -- k get pv lab-static --no-headers
[ -f "$WORK/static/hello" ] && pass "and its data stays" || fail "the Retain volume's data is gone"
# A missing claim: the pod waits, saying why.
pv_pod orphan nope false 'true' | k apply -f - >/dev/null
eventually "a pod with a missing claim is unschedulable" 'persistentvolumeclaim "nope" not found' 30 -- k describe pod orphan
k delete pod orphan --wait=true >/dev/null 2>&1
k delete pv lab-static --wait=true >/dev/null 2>&1; k delete storageclass lab-local >/dev/null 2>&1
eventually "no volume left" '^No resources found' 30 -- k get pv
