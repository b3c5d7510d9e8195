#!/bin/bash
# PID 1 of a QEMU guest (exec'd by the image's /sbin/skiff-init once the read-only share "common" is mounted).
# A shell script rather than systemd: it boots in a few seconds under TCG, needs nothing in the image, and the
# harness controls every daemon itself. It mounts what the daemons need (pure cgroup v2), loads the kernel modules,
# sets the static address given on the kernel command line, mounts the binaries (read-only) and the VM's writable
# share (logs, command channel), imports the test image, starts the daemons like the netns harness, then runs the
# commands the harness drops into /skiff/out/cmd/ (on_host), reaping orphans as PID 1 must.
exec </dev/null >/dev/console 2>&1
echo "skiff guest init: $(cut -d' ' -f1 /proc/uptime)s since boot"
mount -o remount,rw /
mkdir -p /dev/pts /dev/shm /run /tmp /sys/fs/cgroup
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mount --make-rshared /
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
# No udev: the NIC's and the RNG's drivers are loaded by hand (the initramfs loaded the block device's).
for m in virtio_net virtio_rng overlay veth bridge br_netfilter nf_tables nft_compat nf_conntrack nf_nat xt_MASQUERADE xt_conntrack \
  xt_comment xt_mark xt_addrtype xt_nat xt_statistic ip_tables iptable_nat iptable_filter; do
  modprobe "$m" 2>/dev/null || echo "modprobe $m failed"
done
mkdir -p /skiff/bin /skiff/out /run/skiff
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=524288 bin /skiff/bin
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 out /skiff/out
# shellcheck source=guest-lib.sh
. /skiff/common/guest-lib.sh
hostname "$NAME"
ip link set lo up
ip addr add "$IP/24" dev eth0 && ip link set eth0 up
sysctl -qw net.ipv4.ip_forward=1
echo "$(cut -d' ' -f1 /proc/uptime)" >"$OUT/booted"
echo "skiff guest init: $NAME ($IP) network up at $(cut -d' ' -f1 /proc/uptime)s"

"$BIN/skiff-images" --root "$STATE/root/images" import --name localhost/busybox:1 /skiff/common/busybox.tar \
  >>"$OUT/init.log" 2>&1 || echo "import of the test image failed" >>"$OUT/init.log"
if [ "$N" = 1 ]; then
  start_cp || echo "control plane not up" >>"$OUT/init.log"
  cp "$OUT/node-$NAME.kubeconfig" "$KUBECONFIG"
else
  # The harness copies this node's credentials from VM 1 into the common share.
  until [ -s "/skiff/common/node-$NAME.kubeconfig" ]; do sleep 0.5; done
  cp "/skiff/common/node-$NAME.kubeconfig" "$KUBECONFIG"
fi
start_agent
start_proxy
echo "$(cut -d' ' -f1 /proc/uptime)" >"$OUT/started"
echo "skiff guest init: daemons started at $(cut -d' ' -f1 /proc/uptime)s"

# The command channel: the harness writes cmd/ID.sh (atomically), the result goes to cmd/ID.out and cmd/ID.rc.
# A sleep without a fork (read on a FIFO that never has data), so that polling costs next to nothing.
mkdir -p "$OUT/cmd"
mkfifo /run/skiff/tick && exec 9<>/run/skiff/tick
shopt -s nullglob
while :; do
  for f in "$OUT"/cmd/*.sh; do
    id=${f%.sh}
    mv "$f" "$id.run" || continue
    ( bash -c '. /skiff/common/guest-lib.sh; . "$1"' sh "$id.run" >"$id.out" 2>&1; echo $? >"$id.rc.tmp"; rm -f "$id.run"; mv "$id.rc.tmp" "$id.rc" ) &
  done
  read -r -t 0.2 -u 9 _
done
