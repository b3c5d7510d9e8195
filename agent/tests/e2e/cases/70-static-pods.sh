# Static pods: a manifest in --pod-manifest-path runs on the node and is mirrored to the API; deleting the mirror
# pod brings it back, changing the file replaces it, removing the file removes it; a bad file is skipped and said.
mkdir -p "$WORK/manifests"
echo "kind: Deployment" >"$WORK/manifests/broken.yaml"
cat >"$WORK/manifests/.static.yaml.swp" <<'Y'
not: a manifest
Y
write_static() {
  cat >"$WORK/manifests/static.yaml.tmp" <<Y
apiVersion: v1
kind: Pod
metadata: {name: static-web, labels: {version: "$1"}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: localhost/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "echo version $1; trap 'exit 0' TERM; while true; do sleep 1 & wait; done"]
Y
  mv "$WORK/manifests/static.yaml.tmp" "$WORK/manifests/static.yaml"
}
write_static 1
eventually "the static pod runs as a mirror pod" '^static-web-lab-node +1/1 +Running' 60 -- k get pod static-web-lab-node --no-headers
out=$(k get pod static-web-lab-node -o 'jsonpath={.metadata.annotations.kubernetes\.io/config\.source} {.metadata.ownerReferences[0].kind} {.spec.nodeName}')
[ "$out" = "file Node lab-node" ] && pass "mirror pod: source annotation, owned by the Node, bound" || fail "mirror pod metadata" "$out"
eventually "its logs through the API" 'version 1' 20 -- k logs static-web-lab-node
grep -q 'static pod manifest skipped.*broken.yaml\|broken.yaml.*static pod manifest skipped' "$WORK/agent.log" &&
  pass "a bad manifest is skipped with a log line" || fail "bad manifest log" "$(grep -i static "$WORK/agent.log" | tail -3)"

k delete pod static-web-lab-node --timeout=60s >/dev/null 2>&1
eventually "a deleted mirror pod comes back" '^static-web-lab-node +1/1 +Running' 60 -- k get pod static-web-lab-node --no-headers
write_static 2
eventually "a changed manifest replaces the pod" 'version 2' 60 -- k logs static-web-lab-node
[ "$(k get pod static-web-lab-node -o 'jsonpath={.metadata.labels.version}')" = 2 ] && pass "the new pod has the new labels" || fail "static pod labels"
rm -f "$WORK/manifests/static.yaml"
eventually "removing the manifest removes the pod" 'NotFound|not found' 60 -- k get pod static-web-lab-node
rm -f "$WORK/manifests/broken.yaml" "$WORK/manifests/.static.yaml.swp"
