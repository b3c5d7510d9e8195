#!/usr/bin/env bash
# Multi-host end-to-end on QEMU virtual machines, as root: every host is a Debian guest (image built by image.sh,
# cached by recipe hash; direct kernel boot; booted with -snapshot so the image is never modified) with 1 vCPU and
# 1 GiB, its own skiff-agent and skiff-netproxy; host 1 also runs the control plane. The guests' NICs are taps on
# a bridge inside a lab namespace that has no route out of the machine; QEMU runs in that namespace, and so does
# kubectl ("outside the cluster's hosts"). The binaries (BIN_DIR) are shared read-only over 9p, and so is a common
# dir (the guest init, the test image, the inventory, the kubeconfig); each VM also has a writable share $WORK/hN
# (logs, and the command channel on_host uses). Nothing touches the root network namespace.
# Usage: run.sh BIN_DIR [SCENARIO...]   (same contract as ../netns/run.sh; HOSTS=N, KEEP_WORK=1,
#        SKIFF_VM_ACCEL=kvm|tcg to override the detection, SKIFF_VM_MEM (MiB, default 1024))
set -u
BIN=$(realpath "${1:?usage: run.sh BIN_DIR [SCENARIO...]}")
shift
HERE=$(dirname "$(realpath "$0")")
ONLY=("$@")
RUN_NAME="vm-tests (qemu)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"

skip() { echo "skipping $RUN_NAME: $1"; echo "$RUN_NAME: 0 passed, 0 failed"; exit 0; }
[ "$(id -u)" = 0 ] || skip "not running as root"
for tool in qemu-system-x86_64 debootstrap mkfs.ext4 ip nsenter umoci busybox kubectl curl; do
  command -v "$tool" >/dev/null || skip "$tool is missing"
done
for b in skiff-controlplane skiff-agent skiff-monitor skiff-runtime skiff-images skiff-netproxy; do
  [ -x "$BIN/$b" ] || skip "$BIN/$b is not built"
done

# KVM only where it is real: this machine's /dev/kvm is PVM (kvm_pvm), under which guests hang (see
# ../../../shared/docs/machine-facts.md); TCG otherwise.
ACCEL=${SKIFF_VM_ACCEL:-}
if [ -z "$ACCEL" ]; then
  ACCEL=tcg
  if [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then
    ACCEL=kvm
  fi
fi
case $ACCEL in
  kvm) QEMU_ACCEL=(-accel kvm -cpu host) ;;
  *) QEMU_ACCEL=(-accel tcg,thread=multi -cpu max) ;;
esac
MEM=${SKIFF_VM_MEM:-1024}

T_IMG=$(now)
IMG=$(bash "$HERE/image.sh") || { fail "build the guest image"; echo "$RUN_NAME: $PASSED passed, $FAILED failed"; exit 1; }
timing "guest image ready ($IMG)" "$T_IMG"

HOSTS=${HOSTS:-3}
WORK=$(mktemp -d /tmp/skiff-vm-qemu.XXXXXX)
ID=skq$$
LAB=$ID-lab
SUBNET=192.168.77
CP_PORT=6443
# As the netns harness: faults play out in seconds.
CP_ARGS=(--node-monitor-grace-period-secs 20 --default-toleration-seconds 5 --durability normal)
LB_POOL=192.168.78.200-192.168.78.209
declare -a QEMU_PID
export HOME=$WORK/home KUBECACHEDIR=$WORK/home/cache KUBECONFIG=$WORK/common/kubeconfig
mkdir -p "$HOME" "$WORK/common"

host_ip() { echo "$SUBNET.$((10 + $1))"; }
host_name() { echo "host-$1"; }
agent_run_dir() { echo /run/skiff/agent; }   # guest-lib.sh's start_agent
lab() { nsenter --net="/run/netns/$LAB" "$@"; }
k() { lab kubectl --request-timeout=20s "$@"; }

# on_host N CMD...: run CMD in guest N (as root, with guest-lib.sh's functions) through the command channel: a
# script dropped into the VM's writable share, which the guest's init runs; prints its output, returns its status.
on_host() {
  local n=$1; shift
  # Unique also across the subshells ($(...), background jobs) that call on_host.
  local id="$WORK/h$n/cmd/c$BASHPID-$RANDOM-$(date +%s%N)" rc
  mkdir -p "$WORK/h$n/cmd"
  printf '%q ' "$@" >"$id.tmp" && echo >>"$id.tmp" && mv "$id.tmp" "$id.sh"
  for _ in $(seq 1 1200); do [ -s "$id.rc" ] && break; sleep 0.1; done
  [ -s "$id.rc" ] || { echo "on_host $n: no answer in 120 s: $*" >&2; return 124; }
  cat "$id.out"; rc=$(cat "$id.rc"); rm -f "$id.out" "$id.rc"
  return "$rc"
}
start_cp() {
  on_host 1 start_cp || return 1
  for _ in $(seq 1 300); do lab curl -sf --cacert "$WORK/h1/ca.crt" "https://$(host_ip 1):$CP_PORT/readyz" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}
stop_cp() { on_host 1 stop_cp; }
start_agent() { on_host "$1" start_agent; }
stop_agent() { on_host "$1" stop_agent; }
start_proxy() { on_host "$1" start_proxy; }
stop_proxy() { on_host "$1" stop_proxy; }
# A host's network cable: its tap's port on the lab bridge.
cut_link() { ip -n "$LAB" link set "tap$1" down; }
heal_link() { ip -n "$LAB" link set "tap$1" up; }

cleanup() {
  local pid n
  for pid in "${QEMU_PID[@]}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null; done
  for pid in "${QEMU_PID[@]}"; do
    [ -n "$pid" ] || continue
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  done
  for n in $(seq 1 "$HOSTS"); do ip -n "$LAB" link del "tap$n" 2>/dev/null; done
  ip netns del "$LAB" 2>/dev/null
  local left=""
  ip netns list | grep -q "^$ID-" && left="$left namespaces"
  for pid in "${QEMU_PID[@]}"; do [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && left="$left qemu($pid)"; done
  ps -eo pid=,args= | grep -F "$WORK/" | grep -v grep | awk '{print $1}' | grep -vqx "$$" && left="$left processes"
  if [ -n "$left" ]; then echo "FAIL - teardown left:$left"; trap - EXIT; exit 1; fi
  echo "ok - teardown left no namespace, tap, VM or process"
  [ -n "${KEEP_WORK:-}" ] && echo "work dir kept: $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The lab: a bridge with an address for kubectl and the "outside" client, one tap per VM, and no route out.
ip netns add "$LAB" && ip -n "$LAB" link set lo up && ip -n "$LAB" link add lab0 type bridge &&
  ip -n "$LAB" addr add "$SUBNET.1/24" dev lab0 && ip -n "$LAB" link set lab0 up || { fail "create the lab"; exit 1; }
for n in $(seq 1 "$HOSTS"); do
  ip -n "$LAB" tuntap add dev "tap$n" mode tap && ip -n "$LAB" link set "tap$n" master lab0 up ||
    { fail "create tap $n"; exit 1; }
  mkdir -p "$WORK/h$n/cmd"
done
ip -n "$LAB" route add 192.168.78.0/24 via "$(host_ip 1)" || { fail "route the LoadBalancer range in the lab"; exit 1; }

# The common share: guest init and its functions, settings, the inventory, the test image (the kubeconfig later).
cp "$HERE/guest-init.sh" "$HERE/guest-lib.sh" "$WORK/common/"
{
  echo 'N=$(sed -n "s/.*skiff\.n=\([0-9]*\).*/\1/p" /proc/cmdline)'
  echo 'IP=$(sed -n "s/.*skiff\.ip=\([0-9.]*\).*/\1/p" /proc/cmdline)'
  echo 'NAME=host-$N'
  echo "CP_IP=$(host_ip 1) CP_PORT=$CP_PORT HOSTS=$HOSTS"
  echo "CP_ARGS=(${CP_ARGS[*]})"
} >"$WORK/common/env"
{
  echo "machines:"
  for n in $(seq 1 "$HOSTS"); do
    echo "  - {name: $(host_name "$n"), addresses: [{type: InternalIP, address: $(host_ip "$n")}]}"
  done
  echo "loadBalancerPool: [$LB_POOL]"
} >"$WORK/common/inventory.yaml"
(
  cd "$WORK" && umoci init --layout oci >/dev/null && umoci new --image oci:busybox >/dev/null &&
  umoci unpack --image oci:busybox bundle >/dev/null 2>&1 && mkdir -p bundle/rootfs/bin &&
  cp "$(command -v busybox)" bundle/rootfs/bin/busybox &&
  for a in sh echo sleep cat ls ip hostname id env wc head nc httpd wget test grep touch rm mkdir kill seq ping timeout true; do ln -sf busybox "bundle/rootfs/bin/$a"; done &&
  umoci repack --image oci:busybox bundle >/dev/null && tar -C oci -cf common/busybox.tar . && rm -rf oci bundle
) || { fail "build the test image"; exit 1; }

start_vm() {
  local n=$1
  TMPDIR=$WORK nsenter --net="/run/netns/$LAB" qemu-system-x86_64 -name "$(host_name "$n")" -M q35 \
    "${QEMU_ACCEL[@]}" -smp 1 -m "$MEM" -nodefaults -display none -no-reboot \
    -serial "file:$WORK/h$n/console.log" -monitor none \
    -kernel "$IMG/vmlinuz" -initrd "$IMG/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet panic=1 init=/sbin/skiff-init skiff.n=$n skiff.ip=$(host_ip "$n")" \
    -drive "file=$IMG/root.img,format=raw,if=virtio,snapshot=on" \
    -netdev "tap,id=net0,ifname=tap$n,script=no,downscript=no" \
    -device "virtio-net-pci,netdev=net0,mac=52:54:00:77:00:$(printf %02x "$n")" \
    -virtfs "local,path=$BIN,mount_tag=bin,security_model=none,readonly=on" \
    -virtfs "local,path=$WORK/common,mount_tag=common,security_model=none,readonly=on" \
    -virtfs "local,path=$WORK/h$n,mount_tag=out,security_model=none" \
    -device virtio-rng-pci \
    >"$WORK/h$n/qemu.log" 2>&1 &
  QEMU_PID[n]=$!
}

T0=$(now)
echo "== booting $HOSTS VMs ($ACCEL, 1 vCPU, $MEM MiB each) in $WORK"
for n in $(seq 1 "$HOSTS"); do start_vm "$n"; done
# Host 1 first: its kubeconfig goes into the common share for the others.
for _ in $(seq 1 3000); do
  [ -s "$WORK/h1/kubeconfig" ] && break
  for n in $(seq 1 "$HOSTS"); do kill -0 "${QEMU_PID[n]}" 2>/dev/null || { fail "VM $n exited" "$(tail -20 "$WORK/h$n/console.log" "$WORK/h$n/qemu.log")"; exit 1; }; done
  sleep 0.2
done
[ -s "$WORK/h1/kubeconfig" ] || { fail "control plane up in VM 1 (600 s)" "$(tail -30 "$WORK/h1/console.log"; tail -20 "$WORK/h1/cp.log" 2>/dev/null)"; exit 1; }
# The node credentials VM 1 issued (before the admin kubeconfig) go to the others through the common share.
for n in $(seq 2 "$HOSTS"); do
  cp "$WORK/h1/node-$(host_name "$n").kubeconfig" "$WORK/common/node-$(host_name "$n").kubeconfig.tmp" &&
    mv "$WORK/common/node-$(host_name "$n").kubeconfig.tmp" "$WORK/common/node-$(host_name "$n").kubeconfig"
done
cp "$WORK/h1/kubeconfig" "$WORK/common/kubeconfig.tmp" && mv "$WORK/common/kubeconfig.tmp" "$WORK/common/kubeconfig"
timing "VM 1 booted (guest init)" "$T0"   # approximate: see the per-VM times below
for _ in $(seq 1 600); do lab curl -sf --cacert "$WORK/h1/ca.crt" "https://$(host_ip 1):$CP_PORT/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
lab curl -sf --cacert "$WORK/h1/ca.crt" "https://$(host_ip 1):$CP_PORT/readyz" >/dev/null 2>&1 && pass "control plane in VM 1 answers /readyz from the lab" ||
  { fail "control plane /readyz from the lab" "$(tail -20 "$WORK/h1/cp.log")"; exit 1; }
timing "control plane up" "$T0"
for _ in $(seq 1 3000); do
  all=1; for n in $(seq 1 "$HOSTS"); do [ -s "$WORK/h$n/started" ] || all=0; done
  [ "$all" = 1 ] && break; sleep 0.2
done
for n in $(seq 1 "$HOSTS"); do
  echo "   host $n: network up $(cat "$WORK/h$n/booted" 2>/dev/null)s, daemons started $(cat "$WORK/h$n/started" 2>/dev/null)s after its kernel started"
done
timing "daemons started on all $HOSTS VMs" "$T0"
echo "== $HOSTS VMs in $WORK, control plane at https://$(host_ip 1):$CP_PORT"

run_scenarios
