# Shared by the agent's e2e run (run.sh) and benchmarks (agent/bench): one cluster — control plane and node agent —
# as root in a lab network namespace (no route out), and a busybox image built here and imported into the agent's
# image store. Source it with BIN (the binaries' directory) set; it sets WORK, LAB, CGROOT, PORT, CP_PID, AGENT_PID,
# PROXY_PID, KUBECONFIG, and a trap that removes everything at exit. E2E_NAME names the run in messages.
# Helpers: k (kubectl in the lab), lab, pass, fail, eventually, start_agent, stop_agent.
skip() { echo "skipping ${E2E_NAME:-agent e2e}: $1"; echo "${E2E_NAME:-agent e2e}: 0 passed, 0 failed"; exit 0; }
[ "$(id -u)" = 0 ] || skip "not running as root"
for tool in ip nsenter umoci busybox kubectl curl; do command -v "$tool" >/dev/null || skip "$tool is missing"; done
[ -e /proc/self/ns/net ] || skip "no network namespaces"

WORK=$(mktemp -d /tmp/skiff-agent-e2e.XXXXXX)
LAB=skiff-e2e-$$
CGROOT=skiff-e2e-$$
PORT=$((21000 + RANDOM % 20000))
CP_PID=""; AGENT_PID=""; PROXY_PID=""
PASSED=0; FAILED=0
export HOME=$WORK/home KUBECACHEDIR=$WORK/home/cache KUBECONFIG=$WORK/cp/kubeconfig
mkdir -p "$HOME"

cleanup() {
  for pid in $AGENT_PID $PROXY_PID $CP_PID; do kill "$pid" 2>/dev/null; done
  for pid in $AGENT_PID $PROXY_PID $CP_PID; do wait "$pid" 2>/dev/null; done
  # After a failed run, container monitors (their own sessions, by design) may still run: they are ours when their
  # command line names this run's private temp dir. Stopped by PID.
  for pid in $(ps -eo pid=,args= | grep -F "$WORK/" | grep -v grep | awk '{print $1}'); do
    [ "$pid" != "$$" ] && kill -9 "$pid" 2>/dev/null
  done
  # Containers of pods a failed run left behind: the processes in this run's cgroups (ours by construction).
  for f in $(find /sys/fs/cgroup/*/"$CGROOT" /sys/fs/cgroup/"$CGROOT" -name cgroup.procs 2>/dev/null); do
    for pid in $(cat "$f" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
  done
  sleep 0.2
  # Whatever a failed run left: mounts under WORK, cgroups under CGROOT, the lab namespace.
  grep -F " $WORK/" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/unified/ /sys/fs/cgroup/; do
    [ -d "$h$CGROOT" ] && find "$h$CGROOT" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  ip netns del "$LAB" 2>/dev/null
  [ -n "${E2E_KEEP:-}" ] && { echo "kept $WORK"; return; }; rm -rf "$WORK"
}
trap cleanup EXIT
# The agent's run directory on a tmpfs, as its default /run/skiff is on a real host (runtime state, netns pins,
# monitor state: nothing that outlives a reboot). Unmounted by cleanup with the other mounts under WORK.
mkdir -p "$WORK/run" && mount -t tmpfs -o mode=0755 tmpfs "$WORK/run"
# The agent's disk state (root dir, logs) lives in WORK/disk and is named through symlinks, WORK/node and WORK/logs:
# the agent must resolve them (mounts under its root dir are found by their real paths). SKIFF_E2E_DISK=ext4 makes
# WORK/disk a fresh ext4 file system with a journal (mke2fs's default, as a Debian install has) in a loop-mounted
# image, instead of a directory on WORK's own file system.
mkdir -p "$WORK/disk"
if [ "${SKIFF_E2E_DISK:-}" = ext4 ]; then
  { truncate -s 8G "$WORK/disk.img" && mkfs.ext4 -q -F "$WORK/disk.img" && mount -o loop "$WORK/disk.img" "$WORK/disk"; } ||
    { echo "cannot make the ext4 disk"; exit 1; }
fi
mkdir -p "$WORK/disk/node" "$WORK/disk/logs" && ln -s disk/node "$WORK/node" && ln -s disk/logs "$WORK/logs"

pass() { PASSED=$((PASSED + 1)); echo "ok - $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL - $1"; [ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/    /'; }
lab() { nsenter --net="/run/netns/$LAB" "$@"; }
k() { lab kubectl --request-timeout=20s "$@"; }
eventually() {
  local name=$1 pattern=$2 tries=$3; shift 4
  local out
  for _ in $(seq 1 "$tries"); do
    out=$("$@" 2>&1)
    grep -qE -- "$pattern" <<<"$out" && { pass "$name"; return 0; }
    sleep 0.5
  done
  fail "$name (never matched /$pattern/)" "$out"; return 1
}

# Small log files, so that rotation is tested; a static pod directory. No disk-pressure threshold (as kind sets for
# its nodes): test hosts share disks whose free share says nothing about this node.
AGENT_ARGS=(--container-log-max-size 65536 --container-log-max-files 3 --pod-manifest-path "$WORK/manifests"
  --eviction-hard "nodefs.available<0%,nodefs.inodesFree<0%")
# The node agent, started with nsenter (not the lab function: that would fork a subshell and $! would not be the
# agent's PID). Extra arguments go to the agent.
start_agent() {
  nsenter --net="/run/netns/$LAB" "$BIN/skiff-agent" --node-name lab-node --node-ip 127.0.0.1 --port 0 \
    --kubeconfig "$WORK/node.kubeconfig" --root-dir "$WORK/node" --run-dir "$WORK/run" --log-dir "$WORK/logs" \
    --runtime "$BIN/skiff-runtime" --cgroup-root "$CGROOT" "${AGENT_ARGS[@]}" "$@" >>"$WORK/agent.log" 2>&1 &
  AGENT_PID=$!
}
# Stops the agent (SIGTERM: its containers keep running, as with the kubelet).
stop_agent() {
  [ -n "$AGENT_PID" ] || return 0
  kill "$AGENT_PID" 2>/dev/null; wait "$AGENT_PID" 2>/dev/null; AGENT_PID=""
}

# A busybox image, built here, with the directory skeleton every image has (the official busybox image's: /etc with
# passwd and group, mount points /proc /sys /dev, /tmp, /var, ...), so that the runtime need not create them in each
# container's writable layer.
(
  cd "$WORK" && umoci init --layout oci >/dev/null && umoci new --image oci:busybox >/dev/null &&
  umoci unpack --image oci:busybox bundle >/dev/null 2>&1 &&
  mkdir -p bundle/rootfs/bin bundle/rootfs/dev bundle/rootfs/etc bundle/rootfs/home bundle/rootfs/proc \
    bundle/rootfs/root bundle/rootfs/sys bundle/rootfs/tmp bundle/rootfs/usr/sbin bundle/rootfs/var/spool/mail \
    bundle/rootfs/var/www && chmod 1777 bundle/rootfs/tmp && chmod 700 bundle/rootfs/root &&
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' >bundle/rootfs/etc/passwd &&
  printf 'root:x:0:\nnobody:x:65534:\n' >bundle/rootfs/etc/group &&
  cp "$(command -v busybox)" bundle/rootfs/bin/busybox &&
  for a in sh echo sleep cat ls ip hostname id env wc head nc httpd wget test grep touch rm mkdir stty tty kill dd seq sort mount stat timeout; do ln -sf busybox "bundle/rootfs/bin/$a"; done &&
  umoci repack --image oci:busybox bundle >/dev/null && tar -C oci -cf busybox.tar . &&
  # The same image with a named user in its config (`USER nobody`), resolved through the image's /etc/passwd.
  cp -a oci oci-nobody && umoci config --image oci-nobody:busybox --config.user nobody >/dev/null &&
  tar -C oci-nobody -cf busybox-nobody.tar . && rm -rf oci-nobody
) || { fail "build the test image"; exit 1; }
"$BIN/skiff-images" --root "$WORK/node/images" import --name localhost/busybox:1 "$WORK/busybox.tar" >/dev/null &&
  "$BIN/skiff-images" --root "$WORK/node/images" import --name localhost/busybox:nobody "$WORK/busybox-nobody.tar" >/dev/null ||
  { fail "import the test image"; exit 1; }

ip netns add "$LAB" && ip -n "$LAB" link set lo up || { fail "create the lab namespace"; exit 1; }
# As on a fresh host without br_netfilter's setting: bridged pod traffic skips iptables until the agent turns it on.
[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] && ip netns exec "$LAB" sh -c 'echo 0 >/proc/sys/net/bridge/bridge-nf-call-iptables'
# nsenter (not the lab function: that would fork a subshell and $! would not be the server's PID) execs the binary.
# Certificates of two minutes: the serving, admin, API-server-to-agent and node certificates are all renewed, in
# place, several times during a run, under load.
CERT_VALIDITY=${E2E_CERT_VALIDITY:-120}
nsenter --net="/run/netns/$LAB" "$BIN/skiff-controlplane" --data-dir "$WORK/cp" --listen "127.0.0.1:$PORT" \
  --cert-validity-secs "$CERT_VALIDITY" >"$WORK/cp.log" 2>&1 &
CP_PID=$!
for _ in $(seq 1 100); do [ -s "$WORK/cp/kubeconfig" ] && lab curl -sf --cacert "$WORK/cp/pki/ca.crt" "https://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
# The node joins with a bootstrap token (as kubeadm join): a token Secret, a kubeconfig holding only the token; the
# agent gets its own certificate (system:node:lab-node) through a CertificateSigningRequest and writes
# node.kubeconfig, which the proxy then uses too: both act under the node authorizer.
TOKEN_ID=$(head -c 3 /dev/urandom | od -An -tx1 | tr -d ' \n'); TOKEN_SECRET=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
k -n kube-system create secret generic "bootstrap-token-$TOKEN_ID" --type bootstrap.kubernetes.io/token \
  --from-literal=token-id="$TOKEN_ID" --from-literal=token-secret="$TOKEN_SECRET" \
  --from-literal=usage-bootstrap-authentication=true --from-literal=expiration="$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)" >/dev/null ||
  { fail "create the bootstrap token"; exit 1; }
BK=$WORK/bootstrap.kubeconfig
kubectl config --kubeconfig="$BK" set-cluster skiff --server="https://127.0.0.1:$PORT" --certificate-authority="$WORK/cp/pki/ca.crt" --embed-certs=true >/dev/null &&
  kubectl config --kubeconfig="$BK" set-credentials bootstrap --token="$TOKEN_ID.$TOKEN_SECRET" >/dev/null &&
  kubectl config --kubeconfig="$BK" set-context skiff --cluster=skiff --user=bootstrap >/dev/null &&
  kubectl config --kubeconfig="$BK" use-context skiff >/dev/null || { fail "write the bootstrap kubeconfig"; exit 1; }
AGENT_ARGS+=(--bootstrap-kubeconfig "$BK")
# The admin's client certificate, for raw TLS calls.
kubectl config view --raw -o 'jsonpath={.users[0].user.client-certificate-data}' | base64 -d >"$WORK/admin.crt"
kubectl config view --raw -o 'jsonpath={.users[0].user.client-key-data}' | base64 -d >"$WORK/admin.key"
start_agent
eventually "the agent joins with the bootstrap token: its CSR is approved and issued" 'Approved,Issued' 30 -- k get csr --no-headers
eventually "and it writes its own credentials" 'system:node:lab-node' 10 -- kubectl --kubeconfig "$WORK/node.kubeconfig" config view -o 'jsonpath={.users[0].name}' 
eventually "the agent passes bridged pod traffic to iptables (bridge-nf-call-iptables)" '^1$' 40 -- lab cat /proc/sys/net/bridge/bridge-nf-call-iptables
# The service proxy, when built: iptables rules for Services in the lab namespace.
if [ -x "$BIN/skiff-netproxy" ]; then
  nsenter --net="/run/netns/$LAB" "$BIN/skiff-netproxy" --kubeconfig "$WORK/node.kubeconfig" --node-name lab-node \
    --node-ip 127.0.0.1 >"$WORK/netproxy.log" 2>&1 &
  PROXY_PID=$!
fi
eventually "node registers and is Ready" '^lab-node +Ready ' 60 -- k get nodes --no-headers
eventually "node has a lease" 'lab-node' 20 -- k -n kube-node-lease get leases --no-headers
