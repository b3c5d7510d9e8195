# All nodes Ready; a Deployment of 3 replicas spread over the hosts behind a NodePort Service; a client pod on every
# host. The ClusterIP from a pod on another host, pod-to-pod across hosts, the NodePort from outside the hosts.
# Later scenarios use what this one creates (web, its Service, client-N): it always runs first.
t=$(now)
eventually "all $HOSTS nodes Ready" "^$HOSTS\$" 120 -- sh -c "nsenter --net=/run/netns/$LAB kubectl get nodes --no-headers | grep -c ' Ready '"
timing "nodes Ready after start" "$T0"
eventually "every node has a podCIDR" "^$HOSTS\$" 40 -- sh -c "nsenter --net=/run/netns/$LAB kubectl get nodes -o jsonpath='{range .items[*]}{.spec.podCIDR}{\"\n\"}{end}' | grep -c /"
{
cat <<'Y'
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: web}}}
      containers:
      - name: web
        image: localhost/busybox:1
        imagePullPolicy: Never
        command: ["sh", "-c", "mkdir -p /www; hostname >/www/index.html; echo web up; exec httpd -f -p 8080 -h /www"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web-lb}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: http, nodePort: 30080}]
Y
for n in $(seq 1 "$HOSTS"); do
cat <<Y
---
apiVersion: v1
kind: Pod
metadata: {name: client-$n, labels: {app: client}}
spec:
  terminationGracePeriodSeconds: 1
  nodeSelector: {kubernetes.io/hostname: $(host_name "$n")}
  containers:
  - name: c
    image: localhost/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "echo client on \$(hostname); trap 'exit 0' TERM; while true; do sleep 1 & wait; done"]
Y
done
} >"$WORK/cluster.yaml"
t=$(now)
k apply -f "$WORK/cluster.yaml" >/dev/null && pass "create the Deployment, Service and clients" || fail "create the workload"
eventually "3 web replicas ready" '^3$' 180 -- ready_count app=web
eventually "a client on every host running" "^$HOSTS\$" 120 -- ready_count app=client
timing "Deployment of 3 + $HOSTS clients ready" "$t"
nodes=$(k get pods -l app=web -o 'jsonpath={range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort -u | wc -l)
[ "$nodes" = "$HOSTS" ] || [ "$nodes" = 3 ] && pass "the replicas are spread over $nodes hosts" ||
  fail "spread over hosts" "$(k get pods -l app=web -o wide)"

# Pod-to-pod across hosts: client-1 fetches every replica by pod IP (two of them live on other hosts).
t=$(now)
ok=0; total=0
while read -r pname pip pnode; do
  total=$((total + 1))
  out=$(k exec client-1 -- timeout 5 wget -qO- "http://$pip:8080/" 2>&1)
  [ "$out" = "$pname" ] && ok=$((ok + 1)) || echo "    client-1 -> $pname ($pip on $pnode): $out"
done < <(k get pods -l app=web -o 'jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.spec.nodeName}{"\n"}{end}')
[ "$ok" = "$total" ] && [ "$total" -ge 3 ] && pass "pod-to-pod across hosts: client-1 reached all $total replicas by pod IP" ||
  fail "pod-to-pod across hosts ($ok of $total)"
timing "pod-to-pod checks" "$t"

# The ClusterIP from a pod on every host: all three replicas answer (most of them on other hosts).
cip=$(k get svc web -o 'jsonpath={.spec.clusterIP}')
for n in $(seq 1 "$HOSTS"); do
  t=$(now)
  seen=$(k exec "client-$n" -- sh -c "for i in \$(seq 1 20); do timeout 5 wget -qO- http://$cip/; done" 2>/dev/null | sort -u | wc -l)
  [ "$seen" -ge 3 ] && pass "ClusterIP $cip from client-$n on $(host_name "$n") reaches all 3 replicas" ||
    fail "ClusterIP from client-$n (saw $seen replicas)" "$(tail -5 "$WORK/h$n/netproxy.log")"
  timing "20 ClusterIP requests from host $n" "$t"
done

# The NodePort from the lab (outside every host) to every host's address.
for n in $(seq 1 "$HOSTS"); do
  t=$(now)
  seen=$(for i in $(seq 1 20); do lab curl -s -m 5 "http://$(host_ip "$n"):30080/"; echo; done | grep . | sort -u | wc -l)
  [ "$seen" -ge 3 ] && pass "NodePort $(host_ip "$n"):30080 from outside the hosts reaches all 3 replicas" ||
    fail "NodePort on host $n (saw $seen replicas)"
  timing "20 NodePort requests to host $n" "$t"
done

# The LoadBalancer address from the inventory's pool, from the lab.
eventually "web-lb gets a LoadBalancer address" '^[0-9.]+$' 60 -- k get svc web-lb -o 'jsonpath={.status.loadBalancer.ingress[0].ip}'
lbip=$(k get svc web-lb -o 'jsonpath={.status.loadBalancer.ingress[0].ip}')
# netproxy adds the address's rules at its next sync after the address is assigned.
eventually "the LoadBalancer address answers" '^web-' 20 -- lab curl -s -m 2 "http://$lbip/"
t=$(now)
out=$(for i in $(seq 1 20); do lab curl -s -m 5 "http://$lbip/" || echo "(failed)"; echo; done | grep . | sort | uniq -c)
seen=$(grep -vc failed <<<"$out")
[ "$seen" -ge 3 ] && pass "LoadBalancer $lbip from outside the hosts reaches all 3 replicas" || fail "LoadBalancer $lbip (saw $seen replicas)" "$out$(echo; k get endpointslices -l kubernetes.io/service-name=web-lb -o wide)"
timing "20 LoadBalancer requests" "$t"
