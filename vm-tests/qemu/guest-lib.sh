# Sourced in the guest by guest-init.sh and by every command the harness runs there (on_host): the daemons, started
# as the netns harness starts them (same flags), with their PIDs in /run/skiff/*.pid and their logs in the VM's
# writable share (/skiff/out, the harness's $WORK/hN).
# /skiff/common/env (written by the harness) sets N, IP, NAME, CP_IP, CP_PORT, HOSTS and CP_ARGS.
# shellcheck source=/dev/null
. /skiff/common/env
BIN=/skiff/bin
OUT=/skiff/out
STATE=/var/lib/skiff
PIDS=/run/skiff
# This node's credentials (system:node:$NAME), issued by the control plane in VM 1.
KUBECONFIG=$STATE/kubeconfig
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# daemon NAME CMD...: start CMD in the background (its own session, stdin closed), PID in $PIDS/NAME.pid.
daemon() {
  local name=$1; shift
  setsid "$@" </dev/null >>"$OUT/$name.log" 2>&1 &
  echo $! >"$PIDS/$name.pid"
}
# stop NAME: SIGTERM to the PID of NAME and wait (up to 30 s) until it is gone.
stop() {
  local pid
  pid=$(cat "$PIDS/$1.pid" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null
  for _ in $(seq 1 300); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null
  rm -f "$PIDS/$1.pid"
}
start_cp() {
  mkdir -p "$STATE/cp"
  daemon cp "$BIN/skiff-controlplane" --data-dir "$STATE/cp" --listen "0.0.0.0:$CP_PORT" \
    --advertise "$CP_IP:$CP_PORT" "${CP_ARGS[@]}" --cloud-inventory /skiff/common/inventory.yaml
  for _ in $(seq 1 600); do
    [ -s "$STATE/cp/kubeconfig" ] && break
    sleep 0.1
  done
  [ -s "$STATE/cp/kubeconfig" ] || return 1
  # Node credentials for every VM (kept across control-plane restarts: the CA stays), the CA for the harness, then
  # the admin kubeconfig, which the harness waits for.
  cp "$STATE/cp/pki/ca.crt" "$OUT/ca.crt"
  for i in $(seq 1 "$HOSTS"); do
    [ -s "$OUT/node-host-$i.kubeconfig" ] && continue
    "$BIN/skiff-controlplane" kubeconfig --data-dir "$STATE/cp" --user "system:node:host-$i" --group system:nodes \
      --server "https://$CP_IP:$CP_PORT" --out "$OUT/node-host-$i.kubeconfig" || return 1
  done
  cp "$STATE/cp/kubeconfig" "$OUT/kubeconfig.tmp" && mv "$OUT/kubeconfig.tmp" "$OUT/kubeconfig"
}
stop_cp() { stop cp; }
start_agent() {
  daemon agent "$BIN/skiff-agent" --node-name "$NAME" --node-ip "$IP" --port 10250 --kubeconfig "$KUBECONFIG" \
    --root-dir "$STATE/root" --run-dir /run/skiff/agent --log-dir /var/log/pods --runtime "$BIN/skiff-runtime" \
    --cgroup-root skiff --eviction-hard "nodefs.available<0%,nodefs.inodesFree<0%"
}
stop_agent() { stop agent; }
start_proxy() { daemon netproxy "$BIN/skiff-netproxy" --kubeconfig "$KUBECONFIG" --node-name "$NAME" --node-ip "$IP"; }
stop_proxy() { stop netproxy; }
