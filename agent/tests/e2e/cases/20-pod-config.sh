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
eventually "a Failed event with the message" 'Failed .*Error: configmap "later" not found' 20 -- k get events
k create configmap later --from-literal=x=now-here >/dev/null
eventually "the pod starts once the configmap exists" '^missingcfg +1/1 +Running ' 60 -- k get pod missingcfg --no-headers
eventually "and sees the value" 'got now-here' 20 -- k logs missingcfg

# Volumes: configMap (then updated), secret, emptyDir in memory, downwardAPI, hostPath under $WORK.
mkdir -p "$WORK/hostvol"
cat >"$WORK/vol-pod.yaml" <<Y
apiVersion: v1
kind: Pod
metadata: {name: volpod, labels: {app: voltest}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: c
    image: localhost/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "echo cfg=\$(cat /cfg/greeting); echo item=\$(cat /items/hello.txt); echo sec=\$(cat /sec/password); echo podname=\$(cat /info/name); cat /info/labels; echo; mount | grep -E ' /(mem|sec) ' | sed 's/^/mnt /'; echo written > /host/out; touch /mem/x && echo mem writable; touch /cfg/x 2>/dev/null || echo cfg read-only; stat -L -c 'mode %a' /sec/password; echo conf=\$(cat /etc/app.conf); touch /host-ro/y 2>/dev/null || echo host read-only; while true; do echo now=\$(cat /cfg/greeting); sleep 1; done"]
    volumeMounts:
    - {name: cfg, mountPath: /cfg}
    - {name: items, mountPath: /items}
    - {name: sec, mountPath: /sec}
    - {name: mem, mountPath: /mem}
    - {name: info, mountPath: /info}
    - {name: host, mountPath: /host}
    - {name: host, mountPath: /host-ro, readOnly: true}
    - {name: cfg, mountPath: /etc/app.conf, subPath: greeting}
  volumes:
  - {name: cfg, configMap: {name: cfg}}
  - {name: items, configMap: {name: cfg, items: [{key: greeting, path: hello.txt}]}}
  - {name: sec, secret: {secretName: sec, defaultMode: 0400}}
  - {name: mem, emptyDir: {medium: Memory, sizeLimit: 8Mi}}
  - name: info
    downwardAPI:
      items:
      - {path: name, fieldRef: {fieldPath: metadata.name}}
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
  - {name: host, hostPath: {path: $WORK/hostvol, type: Directory}}
Y
k apply -f "$WORK/vol-pod.yaml" >/dev/null && pass "create a pod with volumes" || fail "create the volume pod"
eventually "the volume pod runs" '^volpod +1/1 +Running ' 60 -- k get pod volpod --no-headers
eventually "volumes: the pod printed its files" 'now=' 20 -- k logs volpod
VOL_OUT=$(k logs volpod 2>&1)
for want in '^cfg=hello$' '^item=hello$' '^sec=s3cret$' '^podname=volpod$' '^app="voltest"$' '^mnt tmpfs on /mem type tmpfs .*size=8192k' \
  '^mnt tmpfs on /sec type tmpfs \(ro' '^mem writable$' '^cfg read-only$' '^mode 400$' \
  '^conf=hello$' '^host read-only$'; do
  grep -qE -- "$want" <<<"$VOL_OUT" && pass "volumes: /$want/" || fail "volumes: /$want/" "$VOL_OUT"
done
[ "$(cat "$WORK/hostvol/out" 2>/dev/null)" = written ] && pass "hostPath: the pod wrote to the host" || fail "hostPath: the pod wrote to the host"
k create configmap cfg --from-literal=greeting=updated --from-literal=color=blue --dry-run=client -o yaml | k apply -f - >/dev/null 2>&1
eventually "a configmap update reaches the mounted file" '^now=updated$' 90 -- k logs volpod --tail=3

# A bad hostPath type: the pod waits, saying why.
cat >"$WORK/badvol-pod.yaml" <<Y
apiVersion: v1
kind: Pod
metadata: {name: badvol}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - {name: c, image: localhost/busybox:1, imagePullPolicy: Never, command: ["sleep", "3600"]}
  volumes:
  - {name: h, hostPath: {path: $WORK/hostvol/out, type: Directory}}
Y
k apply -f "$WORK/badvol-pod.yaml" >/dev/null
eventually "a bad hostPath type keeps the pod waiting with upstream's message" 'MountVolume.SetUp failed for volume "h" : hostPath type check failed: .* is not a directory' 40 -- \
  k get pod badvol -o 'jsonpath={.status.containerStatuses[0].state.waiting.message}'
eventually "and a FailedMount event" 'FailedMount .*hostPath type check failed' 20 -- k get events

# securityContext: user and groups, fsGroup on a volume, read-only rootfs, capabilities, no-new-privs, runAsNonRoot.
cat >"$WORK/sec-pod.yaml" <<'Y'
apiVersion: v1
kind: Pod
metadata: {name: secpod}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  securityContext: {runAsUser: 1000, runAsGroup: 3000, supplementalGroups: [4000], fsGroup: 2000}
  containers:
  - name: c
    image: localhost/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "id; touch /rootfile 2>/dev/null && echo rootfs writable || echo rootfs read-only; touch /data/f && echo data writable; stat -c 'data group %g' /data; grep -E '^(CapBnd|NoNewPrivs)' /proc/self/status"]
    securityContext:
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}
    volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, emptyDir: {}}]
Y
k apply -f "$WORK/sec-pod.yaml" >/dev/null && pass "create a pod with a securityContext" || fail "create the securityContext pod"
eventually "the securityContext pod completes" '^secpod +0/1 +Completed ' 60 -- k get pod secpod --no-headers
SEC_OUT=$(k logs secpod 2>&1)
for want in '^uid=1000 gid=3000 groups=.*2000' 'groups=.*4000' '^rootfs read-only$' '^data writable$' '^data group 2000$' \
  '^CapBnd:\s+0000000000000400$' '^NoNewPrivs:\s+1$'; do
  grep -qE -- "$want" <<<"$SEC_OUT" && pass "securityContext: /$want/" || fail "securityContext: /$want/" "$SEC_OUT"
done
cat >"$WORK/nonroot-pod.yaml" <<'Y'
apiVersion: v1
kind: Pod
metadata: {name: nonroot}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - {name: c, image: localhost/busybox:1, imagePullPolicy: Never, command: ["sleep", "3600"], securityContext: {runAsNonRoot: true}}
Y
k apply -f "$WORK/nonroot-pod.yaml" >/dev/null
eventually "runAsNonRoot with a root image: CreateContainerConfigError" '^nonroot +0/1 +CreateContainerConfigError ' 40 -- k get pod nonroot --no-headers
eventually "with upstream's message" 'container has runAsNonRoot and image will run as root' 10 -- \
  k get pod nonroot -o 'jsonpath={.status.containerStatuses[0].state.waiting.message}'

# An image whose config names its user (`nobody`): resolved through the image's /etc/passwd, read from its layers.
cat >"$WORK/nameduser-pod.yaml" <<'Y'
apiVersion: v1
kind: Pod
metadata: {name: nameduser}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  containers:
  - {name: c, image: localhost/busybox:nobody, imagePullPolicy: Never, command: ["sh", "-c", "id -u; id -g"]}
Y
k apply -f "$WORK/nameduser-pod.yaml" >/dev/null
eventually "the image's named user runs the container" '^nameduser +0/1 +Completed ' 60 -- k get pod nameduser --no-headers
nameduser_ids() { k logs nameduser 2>&1 | tr '\n' ' '; }
eventually "as its uid and gid from the image's /etc/passwd" '^65534 65534 $' 10 -- nameduser_ids

# Privileged (every capability the agent holds, /sys writable) and a namespaced sysctl from the pod.
cat >"$WORK/priv-pod.yaml" <<'Y'
apiVersion: v1
kind: Pod
metadata: {name: privpod}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  securityContext:
    sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: "80"}]
  containers:
  - name: c
    image: localhost/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "grep -E '^CapEff' /proc/self/status; echo port start $(cat /proc/sys/net/ipv4/ip_unprivileged_port_start); mount | grep ' /sys ' | sed 's/^/mnt /'"]
    securityContext: {privileged: true}
Y
k apply -f "$WORK/priv-pod.yaml" >/dev/null
eventually "the privileged pod completes" '^privpod +0/1 +Completed ' 60 -- k get pod privpod --no-headers
PRIV_OUT=$(k logs privpod 2>&1)
HOST_CAPS=$(awk '/^CapBnd/ {print $2}' /proc/self/status)
for want in "^CapEff:\s+$HOST_CAPS\$" '^port start 80$' '^mnt sysfs on /sys type sysfs \(rw'; do
  grep -qE -- "$want" <<<"$PRIV_OUT" && pass "privileged/sysctl: /$want/" || fail "privileged/sysctl: /$want/" "$PRIV_OUT"
done

# Init containers: one by one, to completion, before the app; kubectl shows Init:i/n meanwhile. A sidecar
# (restartPolicy: Always) starts first and keeps running beside the app.
cat >"$WORK/init-pod.yaml" <<'Y'
apiVersion: v1
kind: Pod
metadata: {name: initpod}
spec:
  terminationGracePeriodSeconds: 2
  initContainers:
  - {name: side, restartPolicy: Always, image: localhost/busybox:1, imagePullPolicy: Never, command: ["sh", "-c", "echo side >> /w/order; trap 'exit 0' TERM; while true; do sleep 1 & wait; done"], volumeMounts: [{name: w, mountPath: /w}]}
  - {name: first, image: localhost/busybox:1, imagePullPolicy: Never, command: ["sh", "-c", "echo first >> /w/order; sleep 4"], volumeMounts: [{name: w, mountPath: /w}]}
  - {name: second, image: localhost/busybox:1, imagePullPolicy: Never, command: ["sh", "-c", "echo second >> /w/order"], volumeMounts: [{name: w, mountPath: /w}]}
  containers:
  - {name: app, image: localhost/busybox:1, imagePullPolicy: Never, command: ["sh", "-c", "echo app >> /w/order; cat /w/order; sleep 3600"], volumeMounts: [{name: w, mountPath: /w}]}
  volumes: [{name: w, emptyDir: {}}]
Y
k apply -f "$WORK/init-pod.yaml" >/dev/null && pass "create a pod with init containers" || fail "create the init pod"
eventually "kubectl shows the first init container running (after the sidecar)" '^initpod +[01]/2 +Init:1/3 ' 40 -- k get pod initpod --no-headers
eventually "app waits with PodInitializing" 'PodInitializing' 10 -- k get pod initpod -o 'jsonpath={.status.containerStatuses[0].state.waiting.reason}'
eventually "Initialized is False meanwhile" 'containers with incomplete status: \[first second\]' 10 -- \
  k get pod initpod -o 'jsonpath={.status.conditions[?(@.type=="Initialized")].message}'
eventually "the app runs after the init containers, beside the sidecar" '^initpod +2/2 +Running ' 60 -- k get pod initpod --no-headers
init_order() { k logs initpod -c app | tr '\n' ' '; }
eventually "in order: side, first, second, app" 'side first second app' 20 -- init_order
eventually "init container logs" '^$' 10 -- k logs initpod -c second
eventually "init statuses: both Completed" '^Completed Completed$' 10 -- k get pod initpod -o 'jsonpath={.status.initContainerStatuses[*].state.terminated.reason}'
cat >"$WORK/initfail-pod.yaml" <<'Y'
apiVersion: v1
kind: Pod
metadata: {name: initfail}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  initContainers:
  - {name: bad, image: localhost/busybox:1, imagePullPolicy: Never, command: ["sh", "-c", "exit 3"]}
  containers:
  - {name: app, image: localhost/busybox:1, imagePullPolicy: Never, command: ["sleep", "3600"]}
Y
k apply -f "$WORK/initfail-pod.yaml" >/dev/null
eventually "a failed init container with restartPolicy Never: Init:Error" '^initfail +0/1 +Init:Error ' 40 -- k get pod initfail --no-headers
eventually "and the pod Failed" '^Failed$' 10 -- k get pod initfail -o 'jsonpath={.status.phase}'

# Pod-level cgroup: a Guaranteed pod's cgroup holds the sums of its containers' limits (the kubelet's pod cgroup).
cat >"$WORK/limits-pod.yaml" <<'Y'
apiVersion: v1
kind: Pod
metadata: {name: limits}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: a, image: localhost/busybox:1, imagePullPolicy: Never, command: ["sleep", "3600"],
     resources: {limits: {cpu: 200m, memory: 32Mi}}}
  - {name: b, image: localhost/busybox:1, imagePullPolicy: Never, command: ["sleep", "3600"],
     resources: {limits: {cpu: 300m, memory: 16Mi}}}
Y
k apply -f "$WORK/limits-pod.yaml" >/dev/null
eventually "the limits pod runs" '^limits +2/2 +Running ' 60 -- k get pod limits --no-headers
pod_cgroup() { # file -> its value in the pod's cgroup (v2 when the host is pure v2, else v1)
  local uid d; uid=$(k get pod limits -o 'jsonpath={.metadata.uid}')
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then d=/sys/fs/cgroup/$CGROOT/guaranteed/pod$uid
  else case $1 in memory.*) d=/sys/fs/cgroup/memory/$CGROOT/guaranteed/pod$uid ;; *) d=/sys/fs/cgroup/cpu/$CGROOT/guaranteed/pod$uid ;; esac; fi
  cat "$d/$1" 2>&1
}
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  eventually "pod cgroup memory.max = 48Mi" '^50331648$' 5 -- pod_cgroup memory.max
  eventually "pod cgroup cpu.max = 500m" '^50000 100000$' 5 -- pod_cgroup cpu.max
else
  eventually "pod cgroup memory limit = 48Mi" '^50331648$' 5 -- pod_cgroup memory.limit_in_bytes
  eventually "pod cgroup CFS quota = 500m" '^50000$' 5 -- pod_cgroup cpu.cfs_quota_us
  eventually "pod cgroup cpu.shares from the requests" '^512$' 5 -- pod_cgroup cpu.shares
fi

k delete pod --all --timeout=60s >/dev/null 2>&1 && pass "delete every pod" || fail "delete every pod"
# Failed/Succeeded pods leave the API at once; the agent's cleanup of them follows.
sandboxes_left() { ls "$WORK/run/netns" 2>/dev/null | wc -l; }
eventually "the agent cleaned every sandbox up" '^0$' 60 -- sandboxes_left
k delete configmap cfg later >/dev/null 2>&1; k delete secret sec >/dev/null 2>&1
