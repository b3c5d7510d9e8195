# Pod configuration: env from the downward API, ConfigMaps and Secrets; volumes (configMap, secret, emptyDir in
# memory, downwardAPI, hostPath) with a ConfigMap update reaching the mounted file; securityContext; init
# containers; a missing ConfigMap giving CreateContainerConfigError. Every pod is deleted at the end.
k create configmap cfg --from-literal=greeting=hello --from-literal=color=blue >/dev/null &&
  k create secret generic sec --from-literal=password=s3cret >/dev/null &&
  pass "create a configmap and a secret" || fail "create a configmap and a secret"

cat >"$WORK/env-pod.yaml" <<'Y'
apiVersion: v1
kind: Pod
metadata: {name: envpod, labels: {app: envtest}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  containers:
  - name: c
    image: localhost/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "env | sort; echo ARGS \"$@\"", "sh"]
    args: ["$(GREETING)", "$$(GREETING)", "$(NOPE)"]
    resources: {limits: {memory: 64Mi}}
    envFrom:
    - configMapRef: {name: cfg}
      prefix: CFG_
    - secretRef: {name: absent, optional: true}
    env:
    - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: POD_NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
    - {name: APP, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
    - {name: MEM_MI, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
    - {name: GREETING, valueFrom: {configMapKeyRef: {name: cfg, key: greeting}}}
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: sec, key: password}}}
    - {name: MSG, value: "$(GREETING) world"}
Y
k apply -f "$WORK/env-pod.yaml" >/dev/null && pass "create a pod with env from everywhere" || fail "create the env pod"
eventually "the env pod completes" '^envpod +0/1 +Completed ' 60 -- k get pod envpod --no-headers
ENV_OUT=$(k logs envpod 2>&1)
for want in '^POD_NAME=envpod$' '^POD_NS=default$' '^POD_IP=10\.244\.' '^NODE=lab-node$' '^APP=envtest$' '^MEM_MI=64$' \
  '^CFG_greeting=hello$' '^CFG_color=blue$' '^GREETING=hello$' '^PASSWORD=s3cret$' '^MSG=hello world$' \
  '^ARGS hello \$\(GREETING\) \$\(NOPE\)$'; do
  grep -qE -- "$want" <<<"$ENV_OUT" && pass "env: /$want/" || fail "env: /$want/" "$ENV_OUT"
done

# A missing ConfigMap: CreateContainerConfigError with upstream's message; creating it lets the pod start.
cat >"$WORK/missing-pod.yaml" <<'Y'
apiVersion: v1
kind: Pod
metadata: {name: missingcfg}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: c
    image: localhost/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "echo got $X; sleep 3600"]
    env:
    - {name: X, valueFrom: {configMapKeyRef: {name: later, key: x}}}
Y
k apply -f "$WORK/missing-pod.yaml" >/dev/null
eventually "a missing configmap: CreateContainerConfigError" '^missingcfg +0/1 +CreateContainerConfigError ' 60 -- k get pod missingcfg --no-headers
eventually "with upstream's message" 'configmap "later" not found' 10 -- k get pod missingcfg -o 'jsonpath={.status.containerStatuses[0].state.waiting.message}'
k create configmap later --from-literal=x=now-here >/dev/null
eventually "the pod starts once the configmap exists" '^missingcfg +1/1 +Running ' 60 -- k get pod missingcfg --no-headers
eventually "and sees the value" 'got now-here' 20 -- k logs missingcfg

k delete pod --all --timeout=60s >/dev/null 2>&1 && pass "delete every pod" || fail "delete every pod"
k delete configmap cfg later >/dev/null 2>&1; k delete secret sec >/dev/null 2>&1
