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
# attach -i: a stdin/stdinOnce container reads what the client sends, and sees the end of input when the session ends.
cat >"$WORK/stdin-pod.yaml" <<'Y'
apiVersion: v1
kind: Pod
metadata: {name: reader}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: localhost/busybox:1
    imagePullPolicy: Never
    stdin: true
    stdinOnce: true
    command: ["sh", "-c", "echo ready; while read l; do echo \"got $l\"; done; echo eof"]
Y
k apply -f "$WORK/stdin-pod.yaml" >/dev/null
eventually "the stdin pod runs (and waits for input)" '^ready$' 60 -- k logs reader
out=$(printf 'one\ntwo\n' | timeout 30 nsenter --net="/run/netns/$LAB" kubectl attach -i reader -c c 2>&1)
grep -qx 'got one' <<<"$out" && grep -qx 'got two' <<<"$out" && pass "attach -i feeds the container's stdin" || fail "attach -i" "$out"
eventually "stdinOnce: end of input after the session, the container finishes" '^Succeeded$' 30 -- k get pod reader -o 'jsonpath={.status.phase}'
eventually "its log shows the input and the end of it" 'got two eof' 10 -- sh -c "nsenter --net=/run/netns/$LAB kubectl logs reader | tr '\n' ' '"
out=$(echo world | timeout 60 nsenter --net="/run/netns/$LAB" kubectl run runi -i --rm --restart=Never --image=localhost/busybox:1 \
  --image-pull-policy=Never --command -- sh -c 'read x; echo "hello $x"' 2>&1)
grep -q 'hello world' <<<"$out" && pass "kubectl run -i --rm sends stdin and shows the answer" || fail "kubectl run -i" "$out"
k delete pod reader --timeout=30s >/dev/null 2>&1
# kubectl run -it: a container on a terminal (tty: true, stdin: true); kubectl (in script(1) for a terminal of its
# own) types into the container's shell and sees its prompt and answers; --rm deletes the pod after exit.
out=$( (sleep 6; printf 'tty; echo tty-$((6*7))\n'; sleep 3; printf 'exit 0\n'; sleep 8) |
  lab script -qec "kubectl --request-timeout=60s run shelltty -it --rm --restart=Never --image=localhost/busybox:1 --image-pull-policy=Never -- sh" /dev/null 2>&1)
grep -q 'tty-42' <<<"$out" && pass "kubectl run -it: the shell answers on its terminal" || fail "kubectl run -it" "$out"
grep -q '/dev/pts/' <<<"$out" && pass "kubectl run -it: the container's stdin is a terminal" || fail "run -it terminal" "$out"
eventually "kubectl run -it --rm: the pod is gone" '^0$' 30 -- sh -c "nsenter --net=/run/netns/$LAB kubectl get pod shelltty --no-headers 2>/dev/null | wc -l"
left=$(ls "$WORK/run/exec" 2>/dev/null | wc -l)
[ "$left" = 0 ] && pass "exec sessions leave nothing in the run dir" || fail "exec leftovers: $left"
k delete pod shell --timeout=60s >/dev/null 2>&1 && pass "delete the exec pod" || fail "delete the exec pod"
