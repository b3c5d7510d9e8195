# kubectl exec (pipes and a terminal) and attach, through the API server to the agent over WebSocket.
cat >"$WORK/exec.yaml" <<'Y'
apiVersion: v1
kind: Pod
metadata: {name: shell}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: localhost/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); echo tick $i; sleep 1 & wait; done"]
Y
k apply -f "$WORK/exec.yaml" >/dev/null && pass "create a pod to exec into" || fail "create a pod to exec into"
eventually "exec pod is Running" '^shell +1/1 +Running' 60 -- k get pod shell --no-headers
out=$(k exec shell -- echo hello exec 2>&1)
[ "$out" = "hello exec" ] && pass "exec prints the command's output" || fail "exec output" "$out"
k exec shell -- sh -c 'exit 3' >/dev/null 2>&1; rc=$?
[ "$rc" = 3 ] && pass "exec exits with the command's exit code" || fail "exec exit code (got $rc)"
out=$(printf 'line one\nline two\n' | k exec -i shell -- wc -l 2>&1)
[ "$(echo "$out" | tr -d ' ')" = 2 ] && pass "exec -i passes stdin and its end" || fail "exec stdin" "$out"
out=$(k exec shell -- sh -c 'echo to-err >&2' 2>&1 >/dev/null)
[ "$out" = "to-err" ] && pass "exec keeps stderr apart" || fail "exec stderr" "$out"
out=$(k exec shell -- no-such-command 2>&1); rc=$?
[ "$rc" != 0 ] && grep -qiE 'no-such-command|not found|no such file' <<<"$out" && pass "exec of a missing command fails clearly" ||
  fail "exec of a missing command (rc $rc)" "$out"
out=$(k exec shell -c nope -- true 2>&1); rc=$?
[ "$rc" != 0 ] && grep -q 'nope' <<<"$out" && pass "exec into an unknown container is refused" || fail "exec unknown container" "$out"
# A terminal: kubectl needs one itself, so script(1) gives it a pty; the size it sends reaches the container. (As
# with containerd, the size is set once the terminal exists, racing a command that asks for it at once: wait.)
out=$(lab script -qec "stty cols 91 rows 27; kubectl --request-timeout=20s exec -it shell -- sh -c 'tty; sleep 1; stty size; exit 4'" /dev/null 2>&1 </dev/null); rc=$?
grep -q '/dev/pts/' <<<"$out" && pass "exec -t gets a terminal" || fail "exec -t terminal" "$out"
grep -q '27 91' <<<"$out" && pass "exec -t passes the terminal size" || fail "exec -t size" "$out"
[ "$rc" = 4 ] && pass "exec -t exits with the command's exit code" || fail "exec -t exit code (got $rc)" "$out"
out=$(timeout 4 nsenter --net="/run/netns/$LAB" kubectl attach shell 2>&1)
grep -qE '^tick [0-9]+' <<<"$out" && pass "attach streams the container's output" || fail "attach" "$out"
left=$(ls "$WORK/run/exec" 2>/dev/null | wc -l)
[ "$left" = 0 ] && pass "exec sessions leave nothing in the run dir" || fail "exec leftovers: $left"
k delete pod shell --timeout=60s >/dev/null 2>&1 && pass "delete the exec pod" || fail "delete the exec pod"
