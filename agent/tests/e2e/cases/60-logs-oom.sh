# Logs: --since, --limit-bytes, --tail, --timestamps, --previous and rotation by size; a memory limit enforced and
# reported as OOMKilled.
cat >"$WORK/logs.yaml" <<'Y'
apiVersion: v1
kind: Pod
metadata: {name: chatty}
spec:
  terminationGracePeriodSeconds: 2
  restartPolicy: OnFailure
  containers:
  - name: main
    image: localhost/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "seq 1 40000; echo old-line; sleep 3; echo new-line; trap 'exit 0' TERM; sleep 30 & wait; exit 1"]
Y
k apply -f "$WORK/logs.yaml" >/dev/null && pass "create a chatty pod" || fail "create a chatty pod"
eventually "its first run wrote old-line" 'old-line' 60 -- k logs chatty --tail 5
sleep 1.5
out=$(k logs chatty --since=1s 2>&1)
! grep -q 'old-line' <<<"$out" && pass "--since leaves older lines out" || fail "--since" "$out"
out=$(k logs chatty --limit-bytes=7 2>&1)
[ "${#out}" -le 7 ] && pass "--limit-bytes cuts the output (${#out} bytes)" || fail "--limit-bytes" "$out"
out=$(k logs chatty --tail 1 --timestamps 2>&1)
[[ "$out" =~ ^20[0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9:.]+Z\ old-line$ ]] && pass "--tail 1 --timestamps" || fail "--tail --timestamps" "$out"
dir=$(ls -d "$WORK"/logs/default_chatty_*/main)
files=$(ls "$dir" | tr '\n' ' ')
[[ "$files" == *"0.log.1"* && "$files" == *"0.log.2"* && "$files" != *"0.log.3"* ]] && pass "the log rotates by size, keeping 3 files ($files)" ||
  fail "log rotation" "$files"
big=$(du -b "$dir/0.log" | cut -f1)
[ "$big" -le 70000 ] && pass "the current log file stays under the limit ($big bytes)" || fail "log file size $big"
eventually "the container restarts after exit 1" '^chatty +1/1 +Running +1 ' 60 -- k get pod chatty --no-headers
eventually "--previous shows the last run's end" 'new-line' 20 -- k logs chatty --previous --tail 2
k delete pod chatty --timeout=60s >/dev/null 2>&1 && pass "delete the chatty pod" || fail "delete the chatty pod"

cat >"$WORK/oom.yaml" <<'Y'
apiVersion: v1
kind: Pod
metadata: {name: hungry}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: localhost/busybox:1
    imagePullPolicy: Never
    command: ["dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"]
    resources: {limits: {memory: 32Mi}}
Y
k apply -f "$WORK/oom.yaml" >/dev/null && pass "create a pod over its memory limit" || fail "create the OOM pod"
eventually "the OOM kill is reported" '^OOMKilled 137 Failed$' 60 -- \
  k get pod hungry -o 'jsonpath={.status.containerStatuses[0].state.terminated.reason} {.status.containerStatuses[0].state.terminated.exitCode} {.status.phase}'
k delete pod hungry --timeout=60s >/dev/null 2>&1 && pass "delete the OOM pod" || fail "delete the OOM pod"
