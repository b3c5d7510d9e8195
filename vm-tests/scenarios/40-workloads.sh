# A DaemonSet lands on every node; a Job completes; the Deployment scales up and down.
cat >"$WORK/workloads.yaml" <<'Y'
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: everywhere}
spec:
  selector: {matchLabels: {app: everywhere}}
  template:
    metadata: {labels: {app: everywhere}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: d
        image: localhost/busybox:1
        imagePullPolicy: Never
        command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1 & wait; done"]
---
apiVersion: batch/v1
kind: Job
metadata: {name: sum}
spec:
  completions: 3
  parallelism: 3
  backoffLimit: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: j
        image: localhost/busybox:1
        imagePullPolicy: Never
        command: ["sh", "-c", "seq 1 100 | wc -l"]
Y
t=$(now)
k apply -f "$WORK/workloads.yaml" >/dev/null && pass "create a DaemonSet and a Job" || fail "create the DaemonSet and Job"
eventually "the DaemonSet runs one pod on every node" "^$HOSTS\$" 120 -- sh -c "nsenter --net=/run/netns/$LAB kubectl get pods -l app=everywhere -o jsonpath='{range .items[*]}{.spec.nodeName} {.status.phase}{\"\n\"}{end}' | grep Running | sort -u | wc -l"
timing "DaemonSet on $HOSTS nodes" "$t"
eventually "the Job completes (3 of 3)" '^3$' 120 -- k get job sum -o 'jsonpath={.status.succeeded}'
timing "Job of 3 completions" "$t"
k delete -f "$WORK/workloads.yaml" --wait=false >/dev/null 2>&1

t=$(now)
k scale deployment web --replicas 6 >/dev/null && pass "scale web to 6" || fail "scale web to 6"
eventually "6 replicas ready" '^6$' 180 -- ready_count app=web
timing "scale 3→6" "$t"
nodes=$(k get pods -l app=web -o 'jsonpath={range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort | uniq -c | awk '{print $1}' | sort -u | tr '\n' ' ')
[ "$nodes" = "2 " ] && pass "6 replicas spread 2 per host" || fail "spread after scale-up (per-host counts: $nodes)" "$(k get pods -l app=web -o wide)"
t=$(now)
k scale deployment web --replicas 3 >/dev/null && pass "scale web to 3" || fail "scale web to 3"
eventually "back to 3 replicas" '^3$' 120 -- sh -c "nsenter --net=/run/netns/$LAB kubectl get pods -l app=web --no-headers | wc -l"
timing "scale 6→3" "$t"
eventually "the DaemonSet and Job pods are gone" '^0$' 120 -- sh -c "nsenter --net=/run/netns/$LAB kubectl get pods -l 'app=everywhere' --no-headers 2>/dev/null | wc -l"
