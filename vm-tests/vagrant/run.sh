#!/usr/bin/env bash
# A real `vagrant up` of the repo's Vagrantfile with the libvirt provider, on a machine that must not reach out:
#   - libvirtd of its own, in a lab network namespace with no route out and a private mount namespace (its own
#     /etc/libvirt, /run/libvirt, /var/lib/libvirt, ... in a temporary directory), so neither its networks,
#     bridges and iptables rules nor its state touch the host's; it refuses to run beside a running libvirtd;
#   - the box from vm-tests/vagrant/box.sh (Debian 12, provisioning needs no download), added to a private
#     VAGRANT_HOME; QEMU's TCG unless SKIFF_LIBVIRT_DRIVER=kvm;
#   - `vagrant up`, then `vagrant ssh cp -c "kubectl get nodes"` until three nodes are Ready; then the scenarios
#     the other backends run (vm-tests/scenarios, through vm-tests/lib.sh's backend contract: kubectl from the lab
#     with cp's admin kubeconfig, commands on the machines over ssh, agents and proxies as systemd units, links cut
#     with `virsh domif-setlink`), with a busybox image built here and imported on the machines; then
#     `vagrant destroy -f`. Everything it made is removed, on failure too.
# As root. Usage: vm-tests/vagrant/run.sh [BIN_DIR [SCENARIO...]]   (BIN_DIR default target/release, relative to
# the repo; scenarios as ../netns/run.sh takes them, default all)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
DRIVER=${SKIFF_LIBVIRT_DRIVER:-qemu}
# The cloud inventory's LoadBalancer pool (the Vagrantfile passes it to provisioning), beside the private network.
export SKIFF_LB_POOL=${SKIFF_LB_POOL:-192.168.57.200-192.168.57.209}
# As the other backends run the control plane: a lost node's pods are evicted after 5 s, not 300.
export SKIFF_CP_ARGS=${SKIFF_CP_ARGS:---node-monitor-grace-period-secs 20 --default-toleration-seconds 5}

if [ "${1:-}" != --inside ]; then
  BIN_DIR=${1:-target/release}
  [ $# -gt 0 ] && shift
  [ "$(id -u)" = 0 ] || { echo "run.sh: needs root"; exit 1; }
  # What it needs, from the distribution; no recommends: libvirt-daemon-system would bring a libvirtd service and
  # its default network to the host.
  missing=()
  for p in vagrant vagrant-libvirt libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients dnsmasq-base \
    qemu-system-x86 qemu-utils extlinux syslinux-common debootstrap fdisk rsync openssh-client iproute2 umoci \
    busybox-static; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
      { echo "run.sh: cannot install ${missing[*]}"; exit 1; }
  fi
  vagrant plugin list 2>/dev/null | grep -q vagrant-libvirt || { echo "run.sh: the vagrant-libvirt plugin is missing"; exit 1; }
  if [ -S /run/libvirt/libvirt-sock ] && virsh -c qemu:///system version >/dev/null 2>&1; then
    echo "run.sh: a libvirtd is running on this host; this script runs its own and will not run beside it"; exit 1
  fi
  for b in skiff-controlplane skiff-agent skiff-monitor skiff-runtime skiff-netproxy; do
    [ -x "$REPO/$BIN_DIR/$b" ] || { echo "run.sh: $REPO/$BIN_DIR/$b is missing: cargo build --release"; exit 1; }
  done
  BOX=$(bash "$HERE/box.sh") || { echo "run.sh: the box could not be built"; exit 1; }
  WORK=$(mktemp -d /tmp/skiff-vagrant.XXXXXX)
  # The scenarios' image: busybox, built here (the guests reach no registry), imported on every node after `up`.
  ( cd "$WORK" && umoci init --layout oci >/dev/null && umoci new --image oci:busybox >/dev/null &&
    umoci unpack --image oci:busybox bundle >/dev/null 2>&1 && mkdir -p bundle/rootfs/bin &&
    cp "$(command -v busybox)" bundle/rootfs/bin/busybox &&
    for a in sh echo sleep cat ls ip hostname id env wc head nc httpd wget test grep touch rm mkdir kill seq ping timeout true; do ln -sf busybox "bundle/rootfs/bin/$a"; done &&
    umoci repack --image oci:busybox bundle >/dev/null && tar -C oci -cf busybox.tar . && rm -rf oci bundle ) ||
    { echo "run.sh: cannot build the busybox image"; rm -rf "$WORK"; exit 1; }
  LAB=skiff-vagrant-$$
  cleanup() {
    # Whatever is still running in the lab namespace was started by this run (libvirtd, dnsmasq, QEMU).
    local p
    for p in $(ip netns pids "$LAB" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$LAB" 2>/dev/null
    rm -rf "$WORK"
    # The mount points this run made for libvirt's directories, when the host had none (only if left empty).
    for d in $(cat "$WORK.made" 2>/dev/null); do rmdir "$d" 2>/dev/null; done
    rm -f "$WORK.made"
  }
  trap cleanup EXIT
  ip netns add "$LAB" && ip -n "$LAB" link set lo up || exit 1
  # The directories libvirt keeps state in get a mount point of their own on the host, when missing.
  for d in /etc/libvirt /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt; do
    [ -d "$d" ] || { mkdir -p "$d" && echo "$d" >>"$WORK.made"; }
  done
  export LAB   # the scenarios name the lab namespace
  ip netns exec "$LAB" unshare --mount --propagation private bash "$0" --inside "$BIN_DIR" "$BOX" "$WORK" "$@"
  rc=$?
  # After `vagrant destroy` and libvirtd's exit nothing may still run in the lab (QEMU, dnsmasq, libvirtd).
  procs=$(ip netns pids "$LAB" 2>/dev/null | wc -l)
  cleanup; trap - EXIT
  if [ "$procs" = 0 ] && ! ip netns list | grep -q "^$LAB\b" && [ ! -e "$WORK" ]; then
    echo "ok - teardown left no namespace, VM, libvirtd, dnsmasq or file"
  else
    echo "FAIL - teardown left $procs processes in the lab (killed now), or the lab namespace or $WORK"; rc=1
  fi
  exit $rc
fi

# --- inside the lab network namespace and a private mount namespace
BIN_DIR=$2 BOX=$3 WORK=$4
shift 4
SCENARIOS=("$@")
SUBNET=${SKIFF_SUBNET:-192.168.56}
LAB=${LAB:?}
PASSED=0; FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "ok - $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL - $1"; [ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/    /'; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
T0=$(now)
for d in etc/libvirt run/libvirt var/lib/libvirt var/log/libvirt var/cache/libvirt; do
  mkdir -p "$WORK/$d" && mount --bind "$WORK/$d" "/$d" || { echo "cannot bind $WORK/$d on /$d"; exit 1; }
done
# libvirt resolves its QEMU user (libvirt-qemu) at start even when told to run QEMU as root; that user is made by
# libvirt-daemon-system, not installed here: in this mount namespace only, /etc/passwd and /etc/group have it.
if ! getent passwd libvirt-qemu >/dev/null; then
  cp /etc/passwd "$WORK/passwd" && cp /etc/group "$WORK/group"
  getent group libvirt-qemu >/dev/null || echo 'libvirt-qemu:x:64055:' >>"$WORK/group"
  echo 'libvirt-qemu:x:64055:64055:Libvirt Qemu,,,:/var/lib/libvirt:/usr/sbin/nologin' >>"$WORK/passwd"
  mount --bind "$WORK/passwd" /etc/passwd && mount --bind "$WORK/group" /etc/group || exit 1
fi
# No virtlogd (console output to files), no cgroups of libvirt's own (the host may be a v1+v2 hybrid without
# systemd-machined), no SELinux/AppArmor labelling; QEMU runs as root.
cat >/etc/libvirt/qemu.conf <<'EOF'
stdio_handler = "file"
cgroup_controllers = [ ]
security_driver = "none"
user = "root"
group = "root"
EOF
printf 'unix_sock_group = "root"\nunix_sock_rw_perms = "0700"\n' >/etc/libvirt/libvirtd.conf
sysctl -qw net.ipv4.ip_forward=1
libvirtd -f /etc/libvirt/libvirtd.conf >"$WORK/libvirtd.log" 2>&1 &
LIBVIRTD=$!
export LIBVIRT_DEFAULT_URI=qemu:///system
for _ in $(seq 1 100); do virsh version >/dev/null 2>&1 && break; sleep 0.2; done
virsh version >/dev/null 2>&1 || { echo "libvirtd did not start:"; tail -20 "$WORK/libvirtd.log"; exit 1; }
mkdir -p /var/lib/libvirt/images
virsh -q pool-define-as default dir --target /var/lib/libvirt/images >/dev/null && virsh -q pool-start default >/dev/null ||
  { echo "cannot make the storage pool"; exit 1; }

export VAGRANT_HOME=$WORK/vagrant-home VAGRANT_CWD=$REPO VAGRANT_DOTFILE_PATH=$WORK/dot
export VAGRANT_DEFAULT_PROVIDER=libvirt VAGRANT_CHECKPOINT_DISABLE=1
export SKIFF_BOX=skiff/bookworm64-offline SKIFF_LIBVIRT_DRIVER=$DRIVER SKIFF_BIN_DIR=$BIN_DIR
[ "$DRIVER" = qemu ] && export SKIFF_BOOT_TIMEOUT=${SKIFF_BOOT_TIMEOUT:-1200}
teardown() {
  echo "== vagrant destroy"
  local D0; D0=$(now)
  timeout 600 vagrant destroy -f >"$WORK/destroy.log" 2>&1 || { echo "vagrant destroy failed:"; tail -20 "$WORK/destroy.log"; }
  echo "time - vagrant destroy: $(elapsed "$D0")s"
  local n
  for n in $(virsh list --all --name 2>/dev/null); do virsh -q destroy "$n" >/dev/null 2>&1; virsh -q undefine "$n" --remove-all-storage >/dev/null 2>&1; done
  for n in $(virsh net-list --all --name 2>/dev/null); do virsh -q net-destroy "$n" >/dev/null 2>&1; done
  kill "$LIBVIRTD" 2>/dev/null; wait "$LIBVIRTD" 2>/dev/null
}
trap teardown EXIT

vagrant box add -f --name "$SKIFF_BOX" "$BOX" >"$WORK/box-add.log" 2>&1 || { fail "vagrant box add" "$(tail -20 "$WORK/box-add.log")"; exit 1; }
echo "== vagrant up (libvirt, driver $DRIVER)"
U0=$(now)
if timeout 3600 vagrant up --provider=libvirt >"$WORK/up.log" 2>&1; then
  pass "vagrant up ($(elapsed "$U0") s)"
else
  fail "vagrant up" "$(tail -40 "$WORK/up.log")"
fi
echo "time - vagrant up: $(elapsed "$U0")s"
grep -E '^==> [a-z0-9]+: [A-Z].*(is up|Running provisioner)|is up:' "$WORK/up.log" | sed 's/^/    /'

if [ "$FAILED" = 0 ]; then
  R0=$(now); out=
  for _ in $(seq 1 120); do
    out=$(timeout 60 vagrant ssh cp -c "kubectl get nodes" 2>&1)
    [ "$(grep -cE ' Ready ' <<<"$out")" = 3 ] && break
    sleep 5
  done
  if [ "$(grep -cE ' Ready ' <<<"$out")" = 3 ]; then
    pass "vagrant ssh cp -c \"kubectl get nodes\": three nodes Ready ($(elapsed "$R0") s after up)"
    printf '%s\n' "$out" | sed 's/^/    /'
  else
    fail "three nodes Ready" "$out"
  fi
fi
[ "$FAILED" = 0 ] || { echo "vagrant: $PASSED passed, $FAILED failed"; exit 1; }

# --- the shared scenarios (vm-tests/scenarios) on the Vagrant machines: the backend contract of vm-tests/lib.sh.
V_PASSED=$PASSED
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
PASSED=$V_PASSED
RUN_NAME="vm-tests (vagrant)"
HOSTS=3
NAMES=(cp worker1 worker2)
host_name() { echo "${NAMES[$(($1 - 1))]}"; }
host_ip() { echo "$SUBNET.$((9 + $1))"; }
agent_run_dir() { echo /run/skiff; }   # the agent's default --run-dir (provision.sh's unit)
vagrant ssh-config >"$WORK/ssh-config" 2>/dev/null || { fail "vagrant ssh-config"; exit 1; }
# on_host N CMD...: CMD as root on host N, over ssh with Vagrant's settings (much faster than `vagrant ssh`).
on_host() {
  local n=$1; shift
  ssh -F "$WORK/ssh-config" -o LogLevel=ERROR "$(host_name "$n")" "sudo $(printf '%q ' "$@")"
}
# Already in the lab namespace: "outside the hosts" is here.
lab() { "$@"; }
export HOME=$WORK/home KUBECACHEDIR=$WORK/home/cache KUBECONFIG=$WORK/kubeconfig
mkdir -p "$HOME"
k() { kubectl --request-timeout=20s "$@"; }
stop_cp() { on_host 1 systemctl stop skiff-controlplane; }
start_cp() { on_host 1 systemctl start skiff-controlplane; }
stop_agent() { on_host "$1" systemctl stop skiff-agent; }
start_agent() { on_host "$1" systemctl start skiff-agent; }
stop_proxy() { on_host "$1" systemctl stop skiff-netproxy; }
start_proxy() { on_host "$1" systemctl start skiff-netproxy; }
# cut_link N / heal_link N: the link of host N's private-network interface (the cluster's network) goes down/up;
# the management network (ssh) stays.
private_if() {
  local dom
  dom=$(virsh list --name | grep -E "_$(host_name "$1")\$" | head -1)
  [ -n "$dom" ] || return 1
  echo "$dom $(virsh domiflist "$dom" | awk 'NR > 2 && $1 != "" && $3 != "vagrant-libvirt" {print $1; exit}')"
}
cut_link() { local d; d=$(private_if "$1") && virsh -q domif-setlink $d down >/dev/null; }
heal_link() { local d; d=$(private_if "$1") && virsh -q domif-setlink $d up >/dev/null; }
# On failure, run_scenarios shows $WORK/hN/{agent,netproxy}.log and $WORK/h1/cp.log: the units' journals.
save_logs() {
  local n
  for n in 1 2 3; do
    mkdir -p "$WORK/h$n"
    on_host "$n" journalctl -u skiff-agent --no-pager -n 200 >"$WORK/h$n/agent.log" 2>&1
    on_host "$n" journalctl -u skiff-netproxy --no-pager -n 200 >"$WORK/h$n/netproxy.log" 2>&1
  done
  on_host 1 journalctl -u skiff-controlplane --no-pager -n 200 >"$WORK/h1/cp.log" 2>&1
}
save_logs
on_host 1 cat /var/lib/skiff/controlplane/kubeconfig >"$KUBECONFIG" && k get nodes >/dev/null ||
  { fail "the admin kubeconfig from cp, used from outside the machines" "$(k get nodes 2>&1)"; exit 1; }
# LoadBalancer addresses: from the pool the Vagrantfile gave the cloud inventory, routed here through cp.
lb_first=${SKIFF_LB_POOL%%[-,]*}
ip route add "${lb_first%.*}.0/24" via "$(host_ip 1)" || { fail "route the LoadBalancer range in the lab"; exit 1; }
# The scenarios' image, on every node.
for n in 1 2 3; do
  scp -F "$WORK/ssh-config" -o LogLevel=ERROR -q "$WORK/busybox.tar" "$(host_name "$n"):/tmp/busybox.tar" &&
    on_host "$n" skiff-images --root /var/lib/skiff/images import --name localhost/busybox:1 /tmp/busybox.tar >/dev/null ||
    { fail "import the test image on $(host_name "$n")"; exit 1; }
done
ONLY=("${SCENARIOS[@]}")
run_scenarios
rc=$?
[ "$rc" = 0 ] || save_logs
exit "$rc"
