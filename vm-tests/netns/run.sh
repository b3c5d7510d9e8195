#!/usr/bin/env bash
# Multi-host end-to-end on one machine, as root: every host is its own network namespace with its own state
# directories and cgroup root, its own skiff-agent (and pod bridge) and skiff-netproxy; host 1 also runs the control
# plane. The hosts are joined by a bridge inside a lab namespace that has no route out of the machine; kubectl runs
# in the lab namespace, which plays "outside the cluster's hosts". Nothing touches the root network namespace.
# Usage: run.sh BIN_DIR [SCENARIO...]   (BIN_DIR holds skiff-controlplane, skiff-agent, skiff-runtime, skiff-images,
#        skiff-netproxy; SCENARIO: a name like 10-service to run only some; HOSTS=N for another host count)
set -u
BIN=$(realpath "${1:?usage: run.sh BIN_DIR [SCENARIO...]}")
shift
HERE=$(dirname "$(realpath "$0")")
ONLY=("$@")
RUN_NAME="vm-tests (netns)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"

skip() { echo "skipping $RUN_NAME: $1"; echo "$RUN_NAME: 0 passed, 0 failed"; exit 0; }
[ "$(id -u)" = 0 ] || skip "not running as root"
for tool in ip nsenter umoci busybox kubectl curl; do command -v "$tool" >/dev/null || skip "$tool is missing"; done
for b in skiff-controlplane skiff-agent skiff-monitor skiff-runtime skiff-images skiff-netproxy; do
  [ -x "$BIN/$b" ] || skip "$BIN/$b is not built"
done

HOSTS=${HOSTS:-3}
WORK=$(mktemp -d /tmp/skiff-vm-netns.XXXXXX)
ID=skvm$$
LAB=$ID-lab
SUBNET=192.168.77
CP_PORT=6443
# Low, so that the fault scenario runs in seconds: a node is unreachable 20 s after its last lease renewal (the
# agent renews every 10 s), and its pods are evicted 5 s later.
CP_ARGS=(--node-monitor-grace-period-secs 20 --default-toleration-seconds 5 --durability normal)
# LoadBalancer addresses come from the control plane's bare-host inventory; the lab routes that range via host 1
# (as a router announcing them would), and each host's netproxy answers for them.
LB_POOL=192.168.78.200-192.168.78.209
CP_ARGS+=(--cloud-inventory "$WORK/inventory.yaml")
CP_PID=""
declare -a AGENT_PID PROXY_PID
export HOME=$WORK/home KUBECACHEDIR=$WORK/home/cache KUBECONFIG=$WORK/h1/cp/kubeconfig
mkdir -p "$HOME"

host_ns() { echo "$ID-h$1"; }
host_ip() { echo "$SUBNET.$((10 + $1))"; }
host_name() { echo "host-$1"; }
cgroot() { echo "$ID-h$1"; }
agent_run_dir() { echo "$WORK/h$1/run"; }
lab() { nsenter --net="/run/netns/$LAB" "$@"; }
on_host() { local n=$1; shift; nsenter --net="/run/netns/$(host_ns "$n")" "$@"; }
k() { lab kubectl --request-timeout=20s "$@"; }

cleanup() {
  local pid h m
  for pid in "${AGENT_PID[@]}" "${PROXY_PID[@]}" $CP_PID; do [ -n "$pid" ] && kill "$pid" 2>/dev/null; done
  for pid in "${AGENT_PID[@]}" "${PROXY_PID[@]}" $CP_PID; do [ -n "$pid" ] && wait "$pid" 2>/dev/null; done
  # Container monitors run in their own sessions by design: ours name this run's private work dir. By PID.
  for pid in $(ps -eo pid=,args= | grep -F "$WORK/" | grep -v grep | awk '{print $1}'); do
    [ "$pid" != "$$" ] && kill -9 "$pid" 2>/dev/null
  done
  # Containers still in our cgroups (only this run's processes are there), then the cgroups themselves.
  for n in $(seq 1 "$HOSTS"); do
    for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/unified/ /sys/fs/cgroup/; do
      [ -d "$h$(cgroot "$n")" ] || continue
      find "$h$(cgroot "$n")" -name cgroup.procs -exec cat {} + 2>/dev/null | while read -r pid; do kill -9 "$pid" 2>/dev/null; done
    done
  done
  sleep 0.3
  grep -F " $WORK/" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  for n in $(seq 1 "$HOSTS"); do
    for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/unified/ /sys/fs/cgroup/; do
      [ -d "$h$(cgroot "$n")" ] && find "$h$(cgroot "$n")" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    ip netns del "$(host_ns "$n")" 2>/dev/null
  done
  ip netns del "$LAB" 2>/dev/null
  # Nothing of the run may remain: namespaces (and with them every interface, route and iptables rule the hosts
  # had), mounts, cgroups, processes.
  local left=""
  ip netns list | grep -q "^$ID-" && left="$left namespaces"
  grep -qF " $WORK/" /proc/mounts && left="$left mounts"
  for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/unified/; do ls -d "$h$ID"-* >/dev/null 2>&1 && { left="$left cgroups"; break; }; done
  ps -eo pid=,args= | grep -F "$WORK/" | grep -v grep | awk '{print $1}' | grep -vqx "$$" && left="$left processes"
  if [ -n "$left" ]; then echo "FAIL - teardown left:$left"; trap - EXIT; exit 1; fi
  echo "ok - teardown left no namespace, mount, cgroup or process"
  [ -n "${KEEP_WORK:-}" ] && echo "work dir kept: $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

# The lab: a bridge with an address for kubectl and the "outside" client, and no other interface: no route out.
ip netns add "$LAB" && ip -n "$LAB" link set lo up && ip -n "$LAB" link add lab0 type bridge &&
  ip -n "$LAB" addr add "$SUBNET.1/24" dev lab0 && ip -n "$LAB" link set lab0 up || { fail "create the lab"; exit 1; }
# Each host: a namespace and a veth into the lab bridge (created inside the lab: the root namespace never sees it).
for n in $(seq 1 "$HOSTS"); do
  ns=$(host_ns "$n")
  ip netns add "$ns" && ip -n "$ns" link set lo up &&
    ip -n "$LAB" link add "vh$n" type veth peer name eth0 netns "$ns" &&
    ip -n "$LAB" link set "vh$n" master lab0 up &&
    ip -n "$ns" addr add "$(host_ip "$n")/24" dev eth0 && ip -n "$ns" link set eth0 up ||
    { fail "create host $n"; exit 1; }
  mkdir -p "$WORK/h$n"
done
# Links between separate namespaces may drop packets until DAD settles; wait for reachability.
for n in $(seq 1 "$HOSTS"); do
  for _ in $(seq 1 40); do lab ping -c1 -W1 "$(host_ip "$n")" >/dev/null 2>&1 && break; sleep 0.25; done
done

ip -n "$LAB" route add 192.168.78.0/24 via "$(host_ip 1)" || { fail "route the LoadBalancer range in the lab"; exit 1; }
{
  echo "machines:"
  for n in $(seq 1 "$HOSTS"); do
    echo "  - {name: $(host_name "$n"), addresses: [{type: InternalIP, address: $(host_ip "$n")}]}"
  done
  echo "loadBalancerPool: [$LB_POOL]"
} >"$WORK/inventory.yaml"

# The busybox test image, built once and imported into every host's store.
(
  cd "$WORK" && umoci init --layout oci >/dev/null && umoci new --image oci:busybox >/dev/null &&
  umoci unpack --image oci:busybox bundle >/dev/null 2>&1 && mkdir -p bundle/rootfs/bin &&
  cp "$(command -v busybox)" bundle/rootfs/bin/busybox &&
  for a in sh echo sleep cat ls ip hostname id env wc head nc httpd wget test grep touch rm mkdir kill seq ping timeout true; do ln -sf busybox "bundle/rootfs/bin/$a"; done &&
  umoci repack --image oci:busybox bundle >/dev/null && tar -C oci -cf busybox.tar .
) || { fail "build the test image"; exit 1; }
for n in $(seq 1 "$HOSTS"); do
  "$BIN/skiff-images" --root "$WORK/h$n/root/images" import --name localhost/busybox:1 "$WORK/busybox.tar" >/dev/null ||
    { fail "import the test image on host $n"; exit 1; }
done

# The control plane listens on every address of host 1 (only host 1's: its own namespace), because its in-process
# controllers and scheduler call it on 127.0.0.1; the kubeconfig names host 1's lab address, reachable from every
# host. Daemons are started with nsenter directly (not a shell function), so that $! is the daemon's PID.
start_cp() {
  nsenter --net="/run/netns/$(host_ns 1)" "$BIN/skiff-controlplane" --data-dir "$WORK/h1/cp" \
    --listen "0.0.0.0:$CP_PORT" --advertise "$(host_ip 1):$CP_PORT" "${CP_ARGS[@]}" >>"$WORK/h1/cp.log" 2>&1 &
  CP_PID=$!
  for _ in $(seq 1 150); do
    [ -s "$KUBECONFIG" ] && lab curl -sf --cacert "$WORK/h1/cp/pki/ca.crt" "https://$(host_ip 1):$CP_PORT/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}
stop_cp() { [ -n "$CP_PID" ] && { kill "$CP_PID" 2>/dev/null; wait "$CP_PID" 2>/dev/null; CP_PID=""; }; return 0; }
start_agent() {
  local n=$1
  nsenter --net="/run/netns/$(host_ns "$n")" "$BIN/skiff-agent" --node-name "$(host_name "$n")" \
    --node-ip "$(host_ip "$n")" --port 10250 --kubeconfig "$WORK/h$n/node.kubeconfig" --root-dir "$WORK/h$n/root" \
    --run-dir "$WORK/h$n/run" --log-dir "$WORK/h$n/logs" --runtime "$BIN/skiff-runtime" \
    --cgroup-root "$(cgroot "$n")" --eviction-hard "nodefs.available<0%,nodefs.inodesFree<0%" \
    >>"$WORK/h$n/agent.log" 2>&1 &
  AGENT_PID[n]=$!
}
stop_agent() { local n=$1; [ -n "${AGENT_PID[n]:-}" ] && { kill "${AGENT_PID[n]}" 2>/dev/null; wait "${AGENT_PID[n]}" 2>/dev/null; AGENT_PID[n]=""; }; return 0; }
start_proxy() {
  local n=$1
  nsenter --net="/run/netns/$(host_ns "$n")" "$BIN/skiff-netproxy" --kubeconfig "$WORK/h$n/node.kubeconfig" \
    --node-name "$(host_name "$n")" --node-ip "$(host_ip "$n")" >>"$WORK/h$n/netproxy.log" 2>&1 &
  PROXY_PID[n]=$!
}
stop_proxy() { local n=$1; [ -n "${PROXY_PID[n]:-}" ] && { kill "${PROXY_PID[n]}" 2>/dev/null; wait "${PROXY_PID[n]}" 2>/dev/null; PROXY_PID[n]=""; }; return 0; }
# A host's network cable: its port on the lab bridge.
cut_link() { ip -n "$LAB" link set "vh$1" down; }
heal_link() { ip -n "$LAB" link set "vh$1" up; }
# The host's containers: processes in its cgroups (for "kill the whole host").
host_container_pids() { find /sys/fs/cgroup/pids/"$(cgroot "$1")" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u; }

T0=$(now)
start_cp || { fail "control plane up" "$(tail -20 "$WORK/h1/cp.log")"; exit 1; }
# Each host's agent and proxy act as that node (system:node:<name>), under the node authorizer.
for n in $(seq 1 "$HOSTS"); do
  "$BIN/skiff-controlplane" kubeconfig --data-dir "$WORK/h1/cp" --user "system:node:$(host_name "$n")" --group system:nodes \
    --server "https://$(host_ip 1):$CP_PORT" --out "$WORK/h$n/node.kubeconfig" || { fail "node credentials for host $n"; exit 1; }
done
for n in $(seq 1 "$HOSTS"); do start_agent "$n"; start_proxy "$n"; done
echo "== $HOSTS hosts in $WORK, control plane at https://$(host_ip 1):$CP_PORT"

run_scenarios
