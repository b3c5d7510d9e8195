#!/usr/bin/env bash
# End-to-end, as root: the control plane and the node agent in a lab network namespace (no route out), a busybox
# image built here and imported into the agent's store, then every case in cases/*.sh (in name order) against that
# one cluster: pods through the real path (API → scheduler → agent → sandbox → skiff-runtime).
# Usage: run.sh BIN_DIR [CASE...]   (BIN_DIR holds skiff-controlplane, skiff-agent, skiff-runtime, skiff-images;
#        CASE: a name like 10-first-pod to run only some cases)
# Each case file is sourced: it uses k (kubectl in the lab), lab, pass, fail, eventually, $WORK, $BIN, $LAB and
# must leave no pod behind.
set -u
BIN=$(realpath "${1:?usage: run.sh BIN_DIR [CASE...]}")
shift
HERE=$(dirname "$(realpath "$0")")
ONLY=("$@")
# shellcheck source=lib.sh
source "$HERE/lib.sh"
for case_file in "$HERE"/cases/*.sh; do
  name=$(basename "$case_file" .sh)
  if [ ${#ONLY[@]} -gt 0 ] && ! printf '%s\n' "${ONLY[@]}" | grep -qx "$name"; then continue; fi
  echo "== case $name"
  # shellcheck source=/dev/null
  source "$case_file"
done

# Whatever the cases did, nothing of their pods may remain on the host.
eventually "no pod left in the API" '^No resources found' 60 -- k get pods -A
left=$(ls "$WORK/run/netns" 2>/dev/null | wc -l)
[ "$left" = 0 ] && pass "no network namespace left" || fail "network namespaces left: $left"
links=$(ip -n "$LAB" -o link | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -vE '^(lo|skiff0)$' | wc -l)
[ "$links" = 0 ] && pass "no veth left" || fail "links left: $links" "$(ip -n "$LAB" -o link)"
# Rootfs mount points are in the run dir's sandboxes, volume mounts under both (WORK/node is a symlink to disk/node).
mounts=$(grep -cE " $WORK/(disk/node|run/sandboxes)/" /proc/mounts)
[ "$mounts" = 0 ] && pass "no rootfs or volume mount left" || fail "mounts left: $mounts" "$(grep -E " $WORK/(disk/node|run/sandboxes)/" /proc/mounts)"
dirs=$(find "$WORK/run/pods" "$WORK/run/sandboxes" "$WORK/disk/node/pods" "$WORK/disk/logs" -mindepth 1 -maxdepth 1 2>/dev/null)
[ -z "$dirs" ] && pass "no pod directory (state, sandbox, layers, logs) left" || fail "pod directories left" "$dirs"
# The QoS level (<root>/besteffort, ...) stays, as the kubelet's kubepods/besteffort; pod and container cgroups go.
cgs=$(for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/unified/; do [ -d "$h$CGROOT" ] && find "$h$CGROOT" -mindepth 2 -type d; done | wc -l)
[ "$cgs" = 0 ] && pass "no pod cgroup left" || fail "cgroups left: $cgs"
monitors=$(ps -eo args= | grep -F "$WORK" | grep -cE '(skiff-monitor| monitor) ')
[ "$monitors" = 0 ] && pass "no monitor process left" || fail "monitors left: $monitors"

# Certificates renewed while everything ran (when the run outlived 90 % of a certificate's life).
if [ "$SECONDS" -gt $((CERT_VALIDITY * 9 / 10 + 30)) ]; then
  renewed=$(grep -c 'node certificate renewed' "$WORK/agent.log")
  most=$((SECONDS / (CERT_VALIDITY * 7 / 10) + 1))
  [ "$renewed" -ge 1 ] && pass "the agent renewed its node certificate $renewed time(s) while running" || fail "no node certificate renewal in the agent's log"
  [ "$renewed" -le "$most" ] && pass "and not more often than due (at most $most in ${SECONDS}s)" || fail "the node certificate was renewed $renewed times in ${SECONDS}s (at most $most expected)"
  byself=$(k get csr -o 'jsonpath={range .items[*]}{.spec.username}{"\n"}{end}' | grep -c '^system:node:lab-node$')
  [ "$byself" -ge 1 ] && pass "with its own credentials ($byself CSR(s) by system:node:lab-node)" || fail "no CSR by the node itself"
  grep -q 'certificate renewed' "$WORK/cp.log" && pass "the API server renewed its certificates in place" || fail "no certificate renewal in the control plane's log"
fi
if [ "$FAILED" -gt 0 ]; then
  echo "--- agent log (tail)"; tail -30 "$WORK/agent.log"
fi
echo "agent e2e: $PASSED passed, $FAILED failed (${SECONDS}s)"
[ "$FAILED" -eq 0 ]
