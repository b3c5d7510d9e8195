#!/usr/bin/env bash
# Builds (once) the guest image for the QEMU backend and prints the directory that holds it:
#   root.img (ext4, the Debian root filesystem), vmlinuz and initrd.img (for direct kernel boot).
# The image is cached under $SKIFF_VM_CACHE (default /var/cache/skiff-vm)/<sha256 of the recipe>: the suite, the
# mirror, the package list and the stub init below. Anything else (the guest's real init, the binaries, the test
# image) is shared in at boot over 9p, so changing it does not rebuild the image. As root; needs debootstrap and
# mkfs.ext4 (e2fsprogs >= 1.43 for -d).
set -euo pipefail
# CACHE, SUITE, MIRROR, KEYRING.
# shellcheck source=../debian.sh
source "$(dirname "$0")/../debian.sh"
# linux-image-amd64 brings initramfs-tools, whose initramfs ("MODULES=most") mounts a virtio root.
PACKAGES=linux-image-amd64,iproute2,iptables,kmod,conntrack,procps,util-linux,ca-certificates,libseccomp2
SIZE=${SKIFF_VM_IMAGE_SIZE:-3G}
# PID 1 of the guest: the minimum to reach the harness's read-only share, then the harness's guest init from it.
STUB='#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev 2>/dev/null
modprobe 9pnet_virtio; modprobe 9p
mkdir -p /skiff/common && mount -t 9p -o trans=virtio,version=9p2000.L,ro common /skiff/common
[ -x /skiff/common/guest-init.sh ] && exec /skiff/common/guest-init.sh
echo "skiff-init: no /skiff/common/guest-init.sh"; exec /bin/sh'
RECIPE="suite=$SUITE
mirror=$MIRROR
packages=$PACKAGES
size=$SIZE
variant=minbase
stub=$STUB"
HASH=$(printf '%s' "$RECIPE" | sha256sum | cut -c1-16)
OUT=$CACHE/$HASH
if [ -s "$OUT/root.img" ] && [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initrd.img" ]; then echo "$OUT"; exit 0; fi

mkdir -p "$CACHE"
# One build at a time (a second run waits, then finds the image built).
exec 8>"$CACHE/.lock"; flock 8
if [ -s "$OUT/root.img" ] && [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initrd.img" ]; then echo "$OUT"; exit 0; fi
TMP=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'umount -R "$TMP/rootfs" 2>/dev/null || true; rm -rf "$TMP"' EXIT
T0=$(date +%s)
echo "building the guest image $OUT (debootstrap $SUITE from $MIRROR)" >&2
debootstrap --variant=minbase --include="$PACKAGES" --keyring="$KEYRING" "$SUITE" "$TMP/rootfs" "$MIRROR" \
  >"$TMP/debootstrap.log" 2>&1 || { tail -30 "$TMP/debootstrap.log" >&2; exit 1; }
R=$TMP/rootfs
printf '%s\n' "$STUB" >"$R/sbin/skiff-init" && chmod 0755 "$R/sbin/skiff-init"
: >"$R/etc/fstab"
echo skiff-vm >"$R/etc/hostname"
printf '%s\n' "$RECIPE" >"$R/etc/skiff-vm-recipe"
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/* "$R"/usr/share/doc/* "$R"/usr/share/man/*
cp "$(ls "$R"/boot/vmlinuz-* | sort -V | tail -1)" "$TMP/vmlinuz"
cp "$(ls "$R"/boot/initrd.img-* | sort -V | tail -1)" "$TMP/initrd.img"
truncate -s "$SIZE" "$TMP/root.img"
mkfs.ext4 -q -F -L skiff-root -d "$R" "$TMP/root.img"
mkdir -p "$OUT"
mv "$TMP/vmlinuz" "$TMP/initrd.img" "$OUT/" && mv "$TMP/root.img" "$OUT/root.img"
printf '%s\n' "$RECIPE" >"$OUT/recipe"
echo "guest image built in $(( $(date +%s) - T0 )) s" >&2
echo "$OUT"
