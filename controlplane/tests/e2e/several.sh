#!/usr/bin/env bash
# End-to-end: two API servers over one etcd (Debian's etcd-server), driven with the real kubectl: both serve the
# same objects and correct watches, Service addresses and ports are never given out twice, and when the process
# leading the controllers dies the other one takes over, while a node agent given both servers keeps its node
# alive through the survivor (both timed).
# Usage: several.sh PATH-TO-skiff-controlplane (skiff-agent and skiff-runtime beside it). Root: everything runs in
# a lab network namespace with only loopback; everything started is stopped, and the namespace removed, on exit.
set -u
BIN=$(realpath "${1:?usage: several.sh PATH-TO-skiff-controlplane}")
BIN_DIR=$(dirname "$BIN")
command -v etcd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null; }
WORK=$(mktemp -d /tmp/skiff-several.XXXXXX)
export HOME=$WORK/home KUBECACHEDIR=$WORK/home/cache
mkdir -p "$HOME"
PASSED=0; FAILED=0
PIDS=()
LAB=skiff-several-$$
CGROOT=skiff-several-$$
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/unified/ /sys/fs/cgroup/; do
    [ -d "$h$CGROOT" ] && find "$h$CGROOT" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  grep -F " $WORK/" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  ip netns del "$LAB" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
pass() { PASSED=$((PASSED + 1)); echo "ok - $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL - $1"; [ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/    /'; }
expect() {
  local name=$1 want=$2 pattern=$3; shift 4
  local out code
  out=$("$@" 2>&1); code=$?
  if [ "$code" -ne "$want" ]; then fail "$name (exit $code, want $want)" "$out"; return; fi
  if [ -n "$pattern" ] && ! grep -qE -- "$pattern" <<<"$out"; then fail "$name (output lacks /$pattern/)" "$out"; return; fi
  pass "$name"
}
eventually() { # NAME PATTERN TRIES(0.2 s) -- CMD
  local name=$1 pattern=$2 tries=$3; shift 4
  local out
  for _ in $(seq 1 "$tries"); do
    out=$("$@" 2>&1) && grep -qE -- "$pattern" <<<"$out" && { pass "$name"; return 0; }
    sleep 0.2
  done
  fail "$name (never matched /$pattern/)" "$out"; return 1
}

ip netns add "$LAB" && ip -n "$LAB" link set lo up || { fail "create the lab namespace"; exit 1; }
lab() { nsenter --net="/run/netns/$LAB" "$@"; }
CPORT=$((24000 + RANDOM % 1000)); PPORT=$((CPORT + 1000))
# nsenter execs the program: $! is the daemon's PID.
# etcd as kubeadm runs it: TLS with client-certificate authentication (its own CA, made here with openssl).
E=$WORK/etcd-pki; mkdir -p "$E"
ossl_cert() { # NAME SUBJECT EXTENSIONS
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$2" -keyout "$E/$1.key" -out "$E/$1.csr" 2>/dev/null &&
    openssl x509 -req -in "$E/$1.csr" -CA "$E/ca.crt" -CAkey "$E/ca.key" -CAcreateserial -days 2 -out "$E/$1.crt" \
      -extfile <(printf '%s\n' "$3") 2>/dev/null
}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=etcd-ca" -keyout "$E/ca.key" -out "$E/ca.crt" 2>/dev/null &&
  ossl_cert server "/CN=etcd" "subjectAltName=IP:127.0.0.1
extendedKeyUsage=serverAuth" &&
  ossl_cert client "/CN=kube-apiserver-etcd-client" "extendedKeyUsage=clientAuth" || { fail "make etcd's certificates"; exit 1; }
nsenter --net="/run/netns/$LAB" etcd --name e2e --data-dir "$WORK/etcd" \
  --listen-client-urls "https://127.0.0.1:$CPORT" --advertise-client-urls "https://127.0.0.1:$CPORT" \
  --cert-file "$E/server.crt" --key-file "$E/server.key" --trusted-ca-file "$E/ca.crt" --client-cert-auth \
  --listen-peer-urls "http://127.0.0.1:$PPORT" --initial-advertise-peer-urls "http://127.0.0.1:$PPORT" \
  --initial-cluster "e2e=http://127.0.0.1:$PPORT" --log-level error >"$WORK/etcd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do lab curl -sf --cacert "$E/ca.crt" --cert "$E/client.crt" --key "$E/client.key" "https://127.0.0.1:$CPORT/health" >/dev/null 2>&1 && break; sleep 0.1; done
ETCD_ARGS=(--etcd-servers "https://127.0.0.1:$CPORT" --etcd-cafile "$E/ca.crt" --etcd-certfile "$E/client.crt" --etcd-keyfile "$E/client.key")
OUT=$(lab "$BIN" --data-dir "$WORK/refused" --listen 127.0.0.1:0 --etcd-servers "https://127.0.0.1:$CPORT" --etcd-cafile "$E/ca.crt" 2>&1) &&
  fail "an API server without an etcd client certificate started" || pass "without an etcd client certificate the API server refuses to start"

PORT_A=$((26000 + RANDOM % 1000)); PORT_B=$((PORT_A + 1000))
# start NAME PORT: an API server with controllers and scheduler over the shared etcd. B gets A's CA first (one
# cluster, one CA: the admin kubeconfig of either works on both).
declare -A PID
start() {
  mkdir -p "$WORK/$1"
  [ "$1" = b ] && cp -a "$WORK/a/pki" "$WORK/b/"
  nsenter --net="/run/netns/$LAB" "$BIN" --data-dir "$WORK/$1" --listen "127.0.0.1:$2" "${ETCD_ARGS[@]}" >>"$WORK/$1.log" 2>&1 &
  PID[$1]=$!; PIDS+=($!)
  for _ in $(seq 1 150); do
    [ -s "$WORK/$1/kubeconfig" ] && lab curl -sf --cacert "$WORK/$1/pki/ca.crt" "https://127.0.0.1:$2/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  fail "API server $1 did not start" "$(tail -20 "$WORK/$1.log")"; exit 1
}
start a "$PORT_A"
start b "$PORT_B"
ka() { lab kubectl --kubeconfig "$WORK/a/kubeconfig" --request-timeout=20s "$@"; }
kb() { lab kubectl --kubeconfig "$WORK/b/kubeconfig" --request-timeout=20s "$@"; }

expect "both serve"                       0 'kube-system' -- kb get ns
expect "a write through A"                0 'created'     -- ka create configmap one --from-literal=k=v
expect "is read through B"                0 'one'         -- kb get configmap one -o name
# Service account tokens: one signing key per cluster (B has A's pki), so a token from A works on B, and the
# default account of a namespace made through A is there through B.
SA_TOKEN=$(ka create token default --duration 15m 2>&1)
expect "a token issued by A authenticates at B" 0 'system:serviceaccount:default:default' -- lab kubectl --request-timeout=20s --kubeconfig /dev/null --server "https://127.0.0.1:$PORT_B" --certificate-authority "$WORK/b/pki/ca.crt" --token "$SA_TOKEN" auth whoami
# A watch through B sees writes through A, in order.
nsenter --net="/run/netns/$LAB" kubectl --kubeconfig "$WORK/b/kubeconfig" get configmaps --watch-only \
  -o 'jsonpath={.metadata.name}{"\n"}' >"$WORK/watch-b" 2>&1 &
WATCH=$!; PIDS+=($WATCH)
sleep 1
for i in 1 2 3; do ka create configmap "w$i" >/dev/null; done
eventually "B's watch streams A's writes in order" '^w1 w2 w3$' 50 -- bash -c "tr '\n' ' ' <'$WORK/watch-b' | sed 's/ \$//'"
kill "$WATCH" 2>/dev/null

# Services created at the same time through both servers: no address or port twice.
CREATES=()
for i in $(seq 1 20); do
  ka create service nodeport "sa$i" --tcp=80:80 >/dev/null 2>&1 & CREATES+=($!)
  kb create service nodeport "sb$i" --tcp=80:80 >/dev/null 2>&1 & CREATES+=($!)
done
for p in "${CREATES[@]}"; do wait "$p"; done
expect "40 Services created through both"  0 '^40$' -- bash -c "nsenter --net=/run/netns/$LAB kubectl --kubeconfig '$WORK/a/kubeconfig' get svc -o name | grep -c 'service/s[ab]'"
expect "nothing else holds an address but default/kubernetes" 0 '^41 kubernetes$' -- bash -c "nsenter --net=/run/netns/$LAB kubectl --kubeconfig '$WORK/a/kubeconfig' get svc -A --no-headers | awk '{n++} \$2 !~ /^s[ab][0-9]+\$/ {o=o \$2} END {print n, o}'"
expect "the kubernetes Service holds the range's first address" 0 '^10\.96\.0\.1 443$' -- ka get svc kubernetes -o 'jsonpath={.spec.clusterIP} {.spec.ports[0].port}'
ka get svc -o 'jsonpath={range .items[*]}{.spec.clusterIP}{"\n"}{end}' | grep -v '^$' | sort >"$WORK/ips"
ka get svc -o 'jsonpath={range .items[*]}{.spec.ports[0].nodePort}{"\n"}{end}' | grep -v '^$' | sort >"$WORK/ports"
expect "every ClusterIP is unique"         0 '^$' -- uniq -d "$WORK/ips"
expect "every NodePort is unique"          0 '^$' -- uniq -d "$WORK/ports"
expect "and there are 41 of them (with kubernetes's)" 0 '^41$' -- wc -l <"$WORK/ips"
IP=$(ka get svc sa1 -o 'jsonpath={.spec.clusterIP}')
expect "an address taken through A is refused through B" 1 'already allocated' -- kb create service clusterip dup --clusterip="$IP" --tcp=80:80
expect "delete through B"                  0 'deleted' -- kb delete svc sa1
eventually "then it can be taken through A" 'created' 50 -- ka create service clusterip reuse --clusterip="$IP" --tcp=80:80

# The controllers run in one process only; kill it and the other takes over.
holder() { kb -n kube-system get lease kube-controller-manager -o 'jsonpath={.spec.holderIdentity}' 2>/dev/null; }
eventually "one process leads the controllers" '.+' 100 -- holder
ka create deployment before --image=busybox >/dev/null
eventually "the leader's controllers work" '^before-' 100 -- bash -c "nsenter --net=/run/netns/$LAB kubectl --kubeconfig '$WORK/b/kubeconfig' get rs -o name | sed 's|.*/||'"
OLD=$(holder)
# Which process holds it: the identity (host name and a random id) is in the leader's log.
if grep -qF "${OLD#*_}" "$WORK/a.log"; then LEADER=a; SURVIVOR=b; SURVIVOR_PORT=$PORT_B
else LEADER=b; SURVIVOR=a; SURVIVOR_PORT=$PORT_A; fi
# A node agent with both servers, the leader's first: it registers and heartbeats through the leader now.
"$BIN" kubeconfig --data-dir "$WORK/a" --user system:node:n1 --group system:nodes --server "https://127.0.0.1:$PORT_A" \
  --out "$WORK/node.kubeconfig" || fail "node credentials"
LEADER_PORT=$([ "$LEADER" = a ] && echo "$PORT_A" || echo "$PORT_B")
nsenter --net="/run/netns/$LAB" "$BIN_DIR/skiff-agent" --node-name n1 --node-ip 127.0.0.1 --port 0 \
  --kubeconfig "$WORK/node.kubeconfig" --api-servers "127.0.0.1:$LEADER_PORT,127.0.0.1:$SURVIVOR_PORT" \
  --root-dir "$WORK/node" --run-dir "$WORK/run" --log-dir "$WORK/logs" --runtime "$BIN_DIR/skiff-runtime" \
  --cgroup-root "$CGROOT" --eviction-hard "nodefs.available<0%,nodefs.inodesFree<0%" >>"$WORK/agent.log" 2>&1 &
PIDS+=($!)
eventually "the agent registers its node through the forwarder" '^n1 +Ready' 150 -- ka get nodes --no-headers
kill -9 "${PID[$LEADER]}"
T0=$(date +%s.%N)
ks() { lab kubectl --kubeconfig "$WORK/$SURVIVOR/kubeconfig" --request-timeout=20s "$@"; }
for _ in $(seq 1 150); do
  h=$(ks -n kube-system get lease kube-controller-manager -o 'jsonpath={.spec.holderIdentity}' 2>/dev/null)
  [ -n "$h" ] && [ "$h" != "$OLD" ] && break
  sleep 0.2
done
T1=$(date +%s.%N)
TAKEOVER=$(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.1f", b - a }')
[ -n "$h" ] && [ "$h" != "$OLD" ] && pass "the standby takes the controllers over in ${TAKEOVER}s (goal ≤ 15 s)" || fail "no takeover in 30 s"
awk -v t="$TAKEOVER" 'BEGIN { exit !(t <= 15) }' && pass "takeover within 15 s" || fail "takeover took ${TAKEOVER}s"
ks create deployment after --image=busybox >/dev/null
eventually "the new leader's controllers work" '^after-' 100 -- bash -c "nsenter --net=/run/netns/$LAB kubectl --kubeconfig '$WORK/$SURVIVOR/kubeconfig' get rs -o name | sed 's|.*/||' | grep after"
expect "the survivor still serves everything" 0 '^40$' -- bash -c "nsenter --net=/run/netns/$LAB kubectl --kubeconfig '$WORK/$SURVIVOR/kubeconfig' get svc -o name | grep -c 'service/s[ab]\|service/reuse'"
# The agent's Lease renewals (every 10 s) continue through the survivor.
renew() { ks -n kube-node-lease get lease n1 -o 'jsonpath={.spec.renewTime}' 2>/dev/null; }
FAILOVER=""
for _ in $(seq 1 150); do
  r=$(renew)
  if [ -n "$r" ] && [ "$(date -d "$r" +%s.%N)" \> "$T0" ]; then FAILOVER=$(awk -v a="$T0" -v b="$(date -d "$r" +%s.%N)" 'BEGIN { printf "%.1f", b - a }'); break; fi
  sleep 0.2
done
[ -n "$FAILOVER" ] && pass "the agent renews its Lease through the other server ${FAILOVER}s after the first died" ||
  fail "the agent did not fail over in 30 s" "$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/agent.log" | grep -E 'WARN|ERROR|Error|panicked' | tail -20)"
expect "its node stays Ready"                0 '^n1 +Ready' -- ks get nodes --no-headers
grep -q "API server failover" "$WORK/agent.log" && pass "the agent logs the failover" || fail "no failover in the agent's log"
echo "timing: controller takeover after the leader's death ${TAKEOVER}s; agent Lease renewed through the other API server ${FAILOVER:-?}s after (heartbeat every 10 s)"

echo "several API servers e2e: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
