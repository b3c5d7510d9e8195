# Partition a worker: cut its cable while its agent and netproxy keep running. It goes NotReady (its lease cannot
# be renewed) and its pods are evicted and replaced; once healed it is Ready again, drops what was evicted, and
# its NodePort answers. Runs after 50-kill-worker deleted the workload: makes its own.
n=2
victim=$(host_name "$n")
k create deployment part --image localhost/busybox:1 --replicas 3 -- sh -c 'mkdir -p /www; hostname >/www/index.html; exec httpd -f -p 8080 -h /www' >/dev/null &&
  k expose deployment part --port 80 --target-port 8080 --type NodePort >/dev/null && pass "create a Deployment and NodePort Service" ||
  fail "create the partition workload"
eventually "3 replicas ready" '^3$' 120 -- ready_count app=part
np=$(k get svc part -o 'jsonpath={.spec.ports[0].nodePort}')
t=$(now)
cut_link "$n"
eventually "$victim goes NotReady while partitioned" "^$victim +NotReady" 120 -- k get node "$victim" --no-headers
timing "partition → NotReady" "$t"
eventually "3 replicas ready off $victim" '^3$' 120 -- sh -c "nsenter --net=/run/netns/$LAB kubectl get pods -l app=part --no-headers -o wide | grep -v ' $victim ' | grep -cE ' 1/1 +Running '"
timing "partition → replicas ready elsewhere" "$t"
t=$(now)
heal_link "$n"
eventually "$victim Ready after the heal" "^$victim +Ready " 120 -- k get node "$victim" --no-headers
timing "heal → Ready" "$t"
eventually "no pod of the Deployment left on $victim" '^0$' 120 -- sh -c "nsenter --net=/run/netns/$LAB kubectl get pods -l app=part --no-headers -o wide | grep -c ' $victim '"
timing "heal → evicted pods gone" "$t"
eventually "the NodePort on the healed host answers 10 of 10" '^10$' 60 -- sh -c "for i in 1 2 3 4 5 6 7 8 9 10; do nsenter --net=/run/netns/$LAB curl -s -m 3 -o /dev/null -w '%{http_code}\n' http://$(host_ip "$n"):$np/; done | grep -c 200"
timing "heal → NodePort 10/10" "$t"
k delete svc part >/dev/null 2>&1; k delete deployment part >/dev/null 2>&1
eventually "no pod of the Deployment left" '^0$' 120 -- sh -c "nsenter --net=/run/netns/$LAB kubectl get pods -l app=part --no-headers 2>/dev/null | wc -l"
