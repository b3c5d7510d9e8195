# Restarting an agent keeps its containers running (re-adopted, not restarted); restarting the control plane
# restarts no pod, and watches resume (a change made after the restart reaches the agents).
states() { k get pods -o 'jsonpath={range .items[*]}{.metadata.name} {.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount}{"\n"}{end}' 2>/dev/null | sort; }
n=$HOSTS
before=$(states)
pid_before=$(on_host "$n" cat "$(agent_run_dir "$n")/pods/$(k get pod "client-$n" -o 'jsonpath={.metadata.uid}')/c/0/pid" 2>/dev/null)
t=$(now)
stop_agent "$n"
on_host "$n" kill -0 "$pid_before" 2>/dev/null && pass "containers on $(host_name "$n") keep running while its agent is down" ||
  fail "container died with the agent (pid '$pid_before')"
start_agent "$n"
sleep 2
eventually "$(host_name "$n") Ready after its agent restarted" "^$(host_name "$n") +Ready " 60 -- k get node "$(host_name "$n")" --no-headers
timing "agent restart to Ready" "$t"
sleep 3
after=$(states)
[ "$before" = "$after" ] && pass "no container restarted or replaced by the agent restart" || fail "agent restart" "$(diff <(echo "$before") <(echo "$after"))"
on_host "$n" kill -0 "$pid_before" 2>/dev/null && pass "same container process after the agent restart" || fail "container process replaced"
out=$(k exec "client-$n" -- echo still here 2>&1)
[ "$out" = "still here" ] && pass "exec after the agent restart" || fail "exec after the agent restart" "$out"

holder() { k -n kube-system get lease kube-controller-manager -o 'jsonpath={.spec.holderIdentity}' 2>/dev/null; }
old_holder=$(holder)
names_before=$(k get pods -o name | sort)
t=$(now)
stop_cp
start_cp && pass "control plane restarted" || fail "control plane restart" "$(tail -20 "$WORK/h1/cp.log")"
timing "control plane restart to /readyz" "$t"
# Every pod the restarted controllers create shows in a watch, however short-lived.
nsenter --net="/run/netns/$LAB" kubectl get pods --watch-only -o name >"$WORK/watch-after-cp" 2>/dev/null &
watch_pid=$!
eventually "the restarted controllers take the leader lease" '^.+$' 120 -- sh -c "h=\$(nsenter --net=/run/netns/$LAB kubectl -n kube-system get lease kube-controller-manager -o 'jsonpath={.spec.holderIdentity}'); [ \"\$h\" != '$old_holder' ] && echo \$h"
timing "control plane restart to controllers leading" "$t"
sleep 5
kill "$watch_pid" 2>/dev/null; wait "$watch_pid" 2>/dev/null
created=$(sort -u "$WORK/watch-after-cp" | comm -13 <(echo "$names_before") - | tr '\n' ' ')
[ -z "$created" ] && pass "the restarted controllers created no pod" ||
  fail "the restarted ReplicaSet controller created (and deleted again) pods: $created"
eventually "all nodes Ready after the control plane restart" "^$HOSTS\$" 60 -- sh -c "nsenter --net=/run/netns/$LAB kubectl get nodes --no-headers | grep -c ' Ready '"
sleep 5
after=$(states)
[ "$before" = "$after" ] && pass "no pod restarted or replaced by the control plane restart" || fail "control plane restart" "$(diff <(echo "$before") <(echo "$after"))"
# Watches resumed: a pod created now runs, the Service still answers.
t=$(now)
k run after-cp --image localhost/busybox:1 --image-pull-policy Never --restart Never -- sh -c 'echo hi' >/dev/null 2>&1
eventually "a pod created after the restart completes" 'Succeeded' 60 -- k get pod after-cp -o 'jsonpath={.status.phase}'
timing "pod create→Succeeded after the control plane restart" "$t"
k delete pod after-cp --wait=false >/dev/null 2>&1
out=$(lab curl -s -m 5 "http://$(host_ip 2):30080/")
[ -n "$out" ] && pass "the NodePort answers after the restarts ($out)" || fail "NodePort after the restarts"
