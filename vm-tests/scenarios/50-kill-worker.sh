# Kill a worker host: its agent and netproxy stop and its cable is cut (its containers keep running, unreachable, as
# on a machine that fell off the network). Timed: NotReady, eviction of its pods, replacements ready, the Service
# answering again only from live hosts. Then the host comes back and cleans up what was evicted meanwhile.
n=$HOSTS
victim=$(host_name "$n")
k delete pod "client-$n" --wait=false >/dev/null 2>&1
on_victim=$(k get pods -l app=web -o "jsonpath={range .items[?(@.spec.nodeName==\"$victim\")]}{.metadata.name}{\"\n\"}{end}" | head -1)
[ -n "$on_victim" ] && pass "a web replica runs on $victim ($on_victim)" || fail "no web replica on $victim" "$(k get pods -o wide)"
t=$(now)
stop_agent "$n"; stop_proxy "$n"; cut_link "$n"
eventually "$victim goes NotReady" "^$victim +NotReady" 120 -- k get node "$victim" --no-headers
timing "kill → NotReady" "$t"
eventually "its replica is evicted (Terminating)" '^[^<]' 60 -- k get pod "$on_victim" -o 'jsonpath={.metadata.deletionTimestamp}'
timing "kill → eviction" "$t"
eventually "a replacement is bound to a live host" '^3$' 120 -- sh -c "nsenter --net=/run/netns/$LAB kubectl get pods -l app=web --no-headers -o wide | grep -v ' $victim ' | wc -l"
timing "kill → replacement bound" "$t"
eventually "3 replicas ready on the live hosts" '^3$' 120 -- sh -c "nsenter --net=/run/netns/$LAB kubectl get pods -l app=web --no-headers -o wide | grep -v ' $victim ' | grep -cE ' 1/1 +Running '"
timing "kill → replacement ready" "$t"
ok=0
for _ in $(seq 1 120); do
  good=$(for i in $(seq 1 10); do k exec client-1 -- timeout 3 wget -qO- "http://$cip/" >/dev/null 2>&1 && echo y; done | wc -l)
  [ "$good" = 10 ] && { ok=1; break; }
  sleep 0.5
done
[ "$ok" = 1 ] && pass "the ClusterIP answers 10 of 10 again" || fail "the ClusterIP after the kill"
timing "kill → Service answers 10/10" "$t"
out=$(for i in $(seq 1 10); do lab curl -s -m 3 "http://$(host_ip 1):30080/" >/dev/null && echo y; done | wc -l)
[ "$out" = 10 ] && pass "the NodePort answers 10 of 10 from outside" || fail "NodePort after the kill ($out of 10)"

# The host comes back: Ready again, and the pods evicted while it was away are gone from it and from the API.
t=$(now)
heal_link "$n"; start_agent "$n"; start_proxy "$n"
eventually "$victim Ready again" "^$victim +Ready " 120 -- k get node "$victim" --no-headers
timing "heal → Ready" "$t"
eventually "the evicted replica is gone from the API" '^0$' 120 -- sh -c "nsenter --net=/run/netns/$LAB kubectl get pod --no-headers $on_victim 2>/dev/null | wc -l"
timing "heal → evicted pods cleaned up" "$t"

# sandboxes N: how many pod network namespaces the agent of host N still holds.
sandboxes() { on_host "$1" ls "$(agent_run_dir "$1")/netns" 2>/dev/null | wc -l; }
# Leave nothing: delete everything and check every host is empty.
k delete -f "$WORK/cluster.yaml" --wait=false >/dev/null 2>&1
eventually "no pod left in the API" '^No resources found' 120 -- k get pods -A
for m in $(seq 1 "$HOSTS"); do
  eventually "no pod sandbox left on host $m" '^0$' 40 -- sandboxes "$m"
done
