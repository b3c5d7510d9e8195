# Sourced by the image builders (qemu/image.sh, vagrant/box.sh): where and what debootstrap fetches.
# The guests' cache, the suite, the Debian mirror apt is configured with (package registries are reachable;
# nothing else need be; SKIFF_VM_MIRROR overrides it) and the archive keyring.
CACHE=${SKIFF_VM_CACHE:-/var/cache/skiff-vm}
SUITE=bookworm
MIRROR=${SKIFF_VM_MIRROR:-$(
  { cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2}'
    grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}'; } | grep -m1 '/debian/\?$' || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
