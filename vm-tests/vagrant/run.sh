#!/usr/bin/env bash
# A real `vagrant up` of the repo's Vagrantfile with the libvirt provider, on a machine that must not reach out:
#   - libvirtd of its own, in a lab network namespace with no route out and a private mount namespace (its own
#     /etc/libvirt, /run/libvirt, /var/lib/libvirt, ... in a temporary directory), so neither its networks,
#     bridges and iptables rules nor its state touch the host's; it refuses to run beside a running libvirtd;
#   - the box from vm-tests/vagrant/box.sh (Debian 12, provisioning needs no download), added to a private
#     VAGRANT_HOME; QEMU's TCG unless SKIFF_LIBVIRT_DRIVER=kvm;
#   - `vagrant up`, then `vagrant ssh cp -c "kubectl get nodes"` until three nodes are Ready; a DaemonSet of
#     busybox httpd (image built here, imported on the nodes) and a Service: pod to pod across hosts through
#     `kubectl exec`, `kubectl logs`, the ClusterIP; then `vagrant destroy -f`; everything it made is removed, on
#     failure too.
# As root. Usage: vm-tests/vagrant/run.sh [BIN_DIR]   (default target/release; relative to the repo)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BIN_DIR=${1:-target/release}
DRIVER=${SKIFF_LIBVIRT_DRIVER:-qemu}

if [ "${1:-}" != --inside ]; then
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
  # The pods' image: busybox, built here (the guests reach no registry), imported on every node after `up`.
  ( cd "$WORK" && umoci init --layout oci >/dev/null && umoci new --image oci:busybox >/dev/null &&
    umoci unpack --image oci:busybox bundle >/dev/null 2>&1 && mkdir -p bundle/rootfs/bin &&
    cp "$(command -v busybox)" bundle/rootfs/bin/busybox &&
    for a in sh echo sleep cat hostname mkdir httpd wget timeout; do ln -sf busybox "bundle/rootfs/bin/$a"; done &&
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
  ip netns exec "$LAB" unshare --mount --propagation private bash "$0" --inside "$BIN_DIR" "$BOX" "$WORK"
  rc=$?
  exit $rc
fi

# --- inside the lab network namespace and a private mount namespace
BIN_DIR=$2 BOX=$3 WORK=$4
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
on() { local m=$1; shift; timeout 180 vagrant ssh "$m" -c "$*" 2>&1; }
if [ "$FAILED" = 0 ]; then
  echo "== a pod on every node (a DaemonSet), pod to pod across hosts, a Service, kubectl exec and logs"
  P0=$(now)
  for m in cp worker1 worker2; do
    vagrant upload "$WORK/busybox.tar" /tmp/busybox.tar "$m" >/dev/null 2>&1 &&
      on "$m" "sudo skiff-images --root /var/lib/skiff/images import --name localhost/busybox:1 /tmp/busybox.tar" >/dev/null ||
      fail "import the busybox image on $m"
  done
  cat >"$WORK/hello.yaml" <<'EOF'
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: hello}
spec:
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      containers:
      - name: web
        image: localhost/busybox:1
        imagePullPolicy: Never
        command: [sh, -c, 'mkdir -p /www && hostname >/www/index.html && echo "serving on $(hostname)" && exec httpd -f -p 8080 -h /www']
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: hello}
spec:
  selector: {app: hello}
  ports: [{port: 80, targetPort: 8080}]
EOF
  vagrant upload "$WORK/hello.yaml" /tmp/hello.yaml cp >/dev/null 2>&1 && on cp "kubectl apply -f /tmp/hello.yaml" >/dev/null ||
    fail "apply the DaemonSet and Service"
  out=
  for _ in $(seq 1 60); do
    out=$(on cp "kubectl get pods -l app=hello -o wide --no-headers")
    [ "$(grep -cE ' 1/1 +Running ' <<<"$out")" = 3 ] && break
    sleep 5
  done
  if [ "$(grep -cE ' 1/1 +Running ' <<<"$out")" = 3 ] && [ "$(awk '{print $7}' <<<"$out" | sort -u | wc -l)" = 3 ]; then
    pass "a pod Running and ready on each of the three nodes ($(elapsed "$P0") s)"
    printf '%s\n' "$out" | sed 's/^/    /'
  else
    fail "a pod Running and ready on each node" "$out"
  fi
  mapfile -t pods < <(grep -E ' 1/1 +Running ' <<<"$out" | awk '{print $1}')
  mapfile -t ips < <(grep -E ' 1/1 +Running ' <<<"$out" | awk '{print $6}')
  if [ ${#pods[@]} = 3 ]; then
    for i in 0 1 2; do
      j=$(( (i + 1) % 3 ))
      got=$(on cp "kubectl exec ${pods[$i]} -- timeout 5 wget -qO- http://${ips[$j]}:8080/" | tr -d '\r')
      if grep -qx "${pods[$j]}" <<<"$got"; then pass "kubectl exec ${pods[$i]}: pod ${pods[$j]} (${ips[$j]}) answers across hosts"
      else fail "pod ${pods[$i]} to pod ${pods[$j]} (${ips[$j]})" "$got"; fi
      got=$(on cp "kubectl logs ${pods[$i]}" | tr -d '\r')
      if grep -qx "serving on ${pods[$i]}" <<<"$got"; then pass "kubectl logs ${pods[$i]}"; else fail "kubectl logs ${pods[$i]}" "$got"; fi
    done
    cip=$(on cp "kubectl get svc hello -o jsonpath={.spec.clusterIP}" | tr -d '\r')
    got=$(on cp "for n in 1 2 3 4 5 6 7 8 9; do kubectl exec ${pods[0]} -- timeout 5 wget -qO- http://$cip/; done" | tr -d '\r' | sort -u)
    if [ "$(grep -cxE 'hello-[a-z0-9]+' <<<"$got")" -ge 2 ]; then
      pass "the Service's ClusterIP $cip answers from pods on more than one host: $(tr '\n' ' ' <<<"$got")"
    else
      fail "the Service's ClusterIP $cip" "$got"
    fi
  fi
fi
echo "time - whole run: $(elapsed "$T0")s"
echo "vagrant: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
