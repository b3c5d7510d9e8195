#!/usr/bin/env bash
# Builds (once) a Debian 12 Vagrant box for the libvirt provider and prints its path: a bootable disk (MBR,
# extlinux, systemd, ifupdown with DHCP on eth0, OpenSSH, sudo, a `vagrant` user with Vagrant's well-known insecure
# key, which `vagrant up` replaces), with everything vm-tests/vagrant/provision.sh needs already installed,
# kubectl included. It stands in for `debian/bookworm64` where Vagrant Cloud cannot be reached: the guests of
# vm-tests/vagrant/run.sh have no network but their own, so provisioning must not need to download anything.
# Cached under $SKIFF_VM_CACHE (default /var/cache/skiff-vm)/box-<sha256 of the recipe>. As root; needs
# debootstrap, extlinux (and syslinux-common), qemu-img and sfdisk (fdisk).
set -euo pipefail
# CACHE, SUITE, MIRROR, KEYRING.
# shellcheck source=../debian.sh
source "$(dirname "$0")/../debian.sh"
# What a Vagrant box of Debian has (systemd and dbus, for hostnamectl; ifupdown, ssh, sudo, rsync for the synced folder) and what
# provision.sh installs (iptables, iproute2, conntrack, libseccomp2, curl, ca-certificates, python3).
PACKAGES=systemd-sysv,dbus,linux-image-amd64,openssh-server,sudo,ifupdown,isc-dhcp-client,rsync,netbase,procps,kmod,util-linux,iptables,iproute2,conntrack,libseccomp2,curl,ca-certificates,python3
SIZE=${SKIFF_BOX_SIZE:-8G}
KUBECTL=${SKIFF_KUBECTL:-$(command -v kubectl || true)}
[ -x "$KUBECTL" ] || { echo "box.sh: kubectl not found (set SKIFF_KUBECTL)" >&2; exit 1; }
INSECURE_KEY=$(find /usr/share/rubygems-integration /usr/share/vagrant /opt/vagrant -path '*keys/vagrant.pub' 2>/dev/null | head -1 || true)
[ -s "$INSECURE_KEY" ] || { echo "box.sh: Vagrant's insecure public key (keys/vagrant.pub) not found" >&2; exit 1; }
RECIPE="suite=$SUITE
mirror=$MIRROR
packages=$PACKAGES
size=$SIZE
kubectl=$(sha256sum "$KUBECTL" | cut -c1-64)
key=$(sha256sum "$INSECURE_KEY" | cut -c1-64)
script=$(sha256sum "$0" | cut -c1-64)"
HASH=$(printf '%s' "$RECIPE" | sha256sum | cut -c1-16)
OUT=$CACHE/box-$HASH
if [ -s "$OUT/skiff-bookworm64.box" ]; then echo "$OUT/skiff-bookworm64.box"; exit 0; fi

mkdir -p "$CACHE"
exec 8>"$CACHE/.lock"; flock 8
if [ -s "$OUT/skiff-bookworm64.box" ]; then echo "$OUT/skiff-bookworm64.box"; exit 0; fi
TMP=$(mktemp -d "$CACHE/box-build.XXXXXX")
LOOP=
cleanup() {
  umount -R "$TMP/mnt" 2>/dev/null || true
  umount -R "$TMP/rootfs" 2>/dev/null || true
  [ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null
  [ -n "${MADE_NODE:-}" ] && rm -f "$MADE_NODE"
  rm -rf "$TMP"
}
trap cleanup EXIT
T0=$(date +%s)
echo "building the Vagrant box $OUT (debootstrap $SUITE from $MIRROR)" >&2
R=$TMP/rootfs
debootstrap --variant=minbase --include="$PACKAGES" --keyring="$KEYRING" "$SUITE" "$R" "$MIRROR" \
  >"$TMP/debootstrap.log" 2>&1 || { tail -30 "$TMP/debootstrap.log" >&2; exit 1; }

echo skiff-box >"$R/etc/hostname"
printf 'LABEL=root / ext4 defaults 0 1\n' >"$R/etc/fstab"
printf 'auto lo\niface lo inet loopback\n\nallow-hotplug eth0\niface eth0 inet dhcp\n' >"$R/etc/network/interfaces"
chroot "$R" useradd -m -s /bin/bash vagrant
install -d -m 0700 -o "$(chroot "$R" id -u vagrant)" -g "$(chroot "$R" id -g vagrant)" "$R/home/vagrant/.ssh"
install -m 0600 -o "$(chroot "$R" id -u vagrant)" -g "$(chroot "$R" id -g vagrant)" "$INSECURE_KEY" "$R/home/vagrant/.ssh/authorized_keys"
printf 'vagrant ALL=(ALL) NOPASSWD: ALL\nDefaults:vagrant !requiretty\n' >"$R/etc/sudoers.d/vagrant"
chmod 0440 "$R/etc/sudoers.d/vagrant"
install -m 0755 "$KUBECTL" "$R/usr/local/bin/kubectl"
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/* "$R"/usr/share/doc/* "$R"/usr/share/man/*
KVER=$(basename "$(ls "$R"/boot/vmlinuz-* | sort -V | tail -1)" | sed 's/^vmlinuz-//')

# One bootable partition; extlinux (syslinux) loads the kernel. No 64bit feature: syslinux cannot read it.
truncate -s "$SIZE" "$TMP/disk.raw"
echo 'start=2048, type=83, bootable' | sfdisk -q "$TMP/disk.raw"
LOOP=$(losetup --find --show --partscan "$TMP/disk.raw")
P1SYS=/sys/block/${LOOP#/dev/}/${LOOP#/dev/}p1/dev
for _ in $(seq 1 20); do [ -e "$P1SYS" ] && break; sleep 0.1; done
# The partition scan does not always add the partition (seen in a Firecracker guest): ask again.
[ -e "$P1SYS" ] || partx -a "$LOOP" 2>/dev/null || true
# Without udev (containers, minimal hosts) nobody makes the partition's device node.
MADE_NODE=
if [ ! -b "${LOOP}p1" ]; then
  IFS=: read -r major minor <"$P1SYS" || { echo "box.sh: no partition on $LOOP" >&2; exit 1; }
  mknod "${LOOP}p1" b "$major" "$minor" && MADE_NODE=${LOOP}p1
fi
mkfs.ext4 -q -F -L root -O ^64bit -d "$R" "${LOOP}p1"
mkdir -p "$TMP/mnt" && mount "${LOOP}p1" "$TMP/mnt"
mkdir -p "$TMP/mnt/boot/extlinux"
cat >"$TMP/mnt/boot/extlinux/extlinux.conf" <<EOF
DEFAULT debian
TIMEOUT 1
LABEL debian
  LINUX /boot/vmlinuz-$KVER
  INITRD /boot/initrd.img-$KVER
  APPEND root=LABEL=root ro net.ifnames=0 biosdevname=0 console=tty0 console=ttyS0,115200
EOF
extlinux --install "$TMP/mnt/boot/extlinux" >/dev/null 2>&1
umount "$TMP/mnt"
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$LOOP" bs=440 count=1 conv=notrunc status=none
losetup -d "$LOOP"; LOOP=
[ -n "$MADE_NODE" ] && rm -f "$MADE_NODE"; MADE_NODE=

mkdir -p "$TMP/box"
qemu-img convert -O qcow2 "$TMP/disk.raw" "$TMP/box/box.img"
printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %s}\n' "${SIZE%G}" >"$TMP/box/metadata.json"
tar -C "$TMP/box" -cf "$TMP/skiff-bookworm64.box" metadata.json box.img
mkdir -p "$OUT"
printf '%s\n' "$RECIPE" >"$OUT/recipe"
mv "$TMP/skiff-bookworm64.box" "$OUT/"
echo "Vagrant box built in $(( $(date +%s) - T0 )) s" >&2
echo "$OUT/skiff-bookworm64.box"
