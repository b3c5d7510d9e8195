# kubectl logs and kubectl exec reach pods on every host (API server on host 1 → each host's agent).
for n in $(seq 1 "$HOSTS"); do
  t=$(now)
  out=$(k logs "client-$n" 2>&1)
  grep -q "^client on client-$n" <<<"$out" && pass "logs of client-$n on $(host_name "$n")" || fail "logs on host $n" "$out"
  out=$(k exec "client-$n" -- sh -c 'echo exec in $(hostname)' 2>&1)
  [ "$out" = "exec in client-$n" ] && pass "exec in client-$n on $(host_name "$n")" || fail "exec on host $n" "$out"
  out=$(echo piped | k exec -i "client-$n" -- cat 2>&1)
  [ "$out" = piped ] && pass "exec -i (stdin) on $(host_name "$n")" || fail "exec -i on host $n" "$out"
  timing "logs + 2 execs on host $n" "$t"
done
for p in $(k get pods -l app=web -o 'jsonpath={.items[*].metadata.name}'); do
  out=$(k logs "$p" 2>&1)
  [ "$out" = "web up" ] && pass "logs of $p on $(pod_node "$p")" || fail "logs of $p" "$out"
done
