# Restarting the agent: running containers keep running and are re-adopted (same container, no restart); a pod
# force-deleted from the API while the agent was down is cleaned up when it returns.
for name in survivor doomed; do
  cat <<Y | k apply -f - >/dev/null || fail "create pod $name"
apiVersion: v1
kind: Pod
metadata: {name: $name}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: localhost/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1 & wait; done"]
Y
done
eventually "both pods Running" '^doomed +1/1 +Running.*survivor +1/1 +Running' 60 -- sh -c "nsenter --net=/run/netns/$LAB kubectl get pods --no-headers | tr '\n' ' '"
before=$(k get pod survivor -o 'jsonpath={.status.containerStatuses[0].containerID} {.status.containerStatuses[0].state.running.startedAt} {.status.containerStatuses[0].restartCount}')
pid_before=$(cat "$WORK"/run/pods/"$(k get pod survivor -o 'jsonpath={.metadata.uid}')"/main/0/pid 2>/dev/null)
stop_agent
k delete pod doomed --grace-period=0 --force >/dev/null 2>&1
kill -0 "$pid_before" 2>/dev/null && pass "containers keep running while the agent is down" || fail "container died with the agent (pid $pid_before)"
start_agent
eventually "node Ready again after the restart" '^lab-node +Ready ' 60 -- k get nodes --no-headers
sleep 3
after=$(k get pod survivor -o 'jsonpath={.status.containerStatuses[0].containerID} {.status.containerStatuses[0].state.running.startedAt} {.status.containerStatuses[0].restartCount}')
[ -n "$before" ] && [ "$before" = "$after" ] && pass "the running container is re-adopted, not restarted" || fail "re-adoption" "before: $before
after:  $after"
kill -0 "$pid_before" 2>/dev/null && pass "same container process after the restart" || fail "container process replaced"
out=$(k exec survivor -- echo still here 2>&1)
[ "$out" = "still here" ] && pass "exec works after the agent restart" || fail "exec after restart" "$out"
eventually "the pod deleted meanwhile is cleaned up" '^1$' 40 -- sh -c "ls '$WORK/run/netns' | wc -l"
k delete pod survivor --timeout=60s >/dev/null 2>&1 && pass "delete the re-adopted pod" || fail "delete the re-adopted pod"
