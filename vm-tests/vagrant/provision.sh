# Provisions one Vagrant machine (run by `vagrant up` as root): installs Skiff's binaries from the synced folder,
# runs them as systemd units. Every node, the control plane's own included, joins with the bootstrap token the
# Vagrantfile made (as kubeadm join): the agent makes its key, sends a CertificateSigningRequest, the control plane
# approves and signs it, and the agent renews it while it runs. Workers fetch only the cluster CA (public) from the
# control plane over the private network; the admin kubeconfig stays on the control plane
# (vagrant ssh cp -c "kubectl get nodes").
# Usage: provision.sh controlplane|worker NODE_NAME NODE_IP CP_IP BIN_DIR BOOTSTRAP_TOKEN(<6 hex>.<16 hex>)
#          [LB_POOL MACHINES [CP_ARGS]]
# LB_POOL (e.g. 192.168.57.200-192.168.57.209; empty: none) and MACHINES (name=ip,name=ip,...): the control plane's
# cloud inventory, so that Services of type LoadBalancer get addresses (as a cloud would give them). CP_ARGS: more
# flags for skiff-controlplane (letters, digits, spaces and . _ = - only).
set -euo pipefail
role=$1 name=$2 ip=$3 cp_ip=$4 bin=$5 token=$6 lb_pool=${7:-} machines=${8:-} cp_args=${9:-}
[[ "$cp_args" =~ ^[A-Za-z0-9\ ._=-]*$ ]] || { echo "bad control-plane flags: $cp_args" >&2; exit 1; }
[[ "$token" =~ ^([a-z0-9]{6})\.([a-z0-9]{16})$ ]] || { echo "bad bootstrap token (want <6>.<16> lower-case hex)" >&2; exit 1; }
token_id=${BASH_REMATCH[1]} token_secret=${BASH_REMATCH[2]}
export DEBIAN_FRONTEND=noninteractive
# Only what the box lacks (a box with all of it, as vm-tests/vagrant/box.sh builds, needs no network).
missing=()
for p in iptables iproute2 conntrack libseccomp2 curl ca-certificates python3; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
install -m 0755 "$bin"/skiff-agent "$bin"/skiff-monitor "$bin"/skiff-runtime "$bin"/skiff-netproxy /usr/local/bin/
[ -x "$bin/skiff-images" ] && install -m 0755 "$bin/skiff-images" /usr/local/bin/
if ! command -v kubectl >/dev/null; then
  ver=v1.32.0
  curl -fsSLo /usr/local/bin/kubectl "https://dl.k8s.io/release/$ver/bin/linux/amd64/kubectl"
  chmod 0755 /usr/local/bin/kubectl
fi
mkdir -p /etc/skiff /var/lib/skiff
kubeconfig=/etc/skiff/kubeconfig

if [ "$role" = controlplane ]; then
  install -m 0755 "$bin/skiff-controlplane" /usr/local/bin/
  cloud=
  if [ -n "$lb_pool" ]; then
    [[ "$lb_pool" =~ ^[0-9.]+(-[0-9.]+)?(,[0-9.]+(-[0-9.]+)?)*$ ]] || { echo "bad LoadBalancer pool: $lb_pool" >&2; exit 1; }
    {
      echo "machines:"
      for m in ${machines//,/ }; do
        echo "  - {name: ${m%%=*}, addresses: [{type: InternalIP, address: ${m#*=}}]}"
      done
      echo "loadBalancerPool: [$lb_pool]"
    } >/etc/skiff/inventory.yaml
    cloud=" --cloud-inventory /etc/skiff/inventory.yaml"
  fi
  cat >/etc/systemd/system/skiff-controlplane.service <<U
[Unit]
Description=Skiff control plane
After=network-online.target
Wants=network-online.target
[Service]
ExecStart=/usr/local/bin/skiff-controlplane --data-dir /var/lib/skiff/controlplane --listen $cp_ip:6443$cloud${cp_args:+ $cp_args}
Restart=always
[Install]
WantedBy=multi-user.target
U
  systemctl daemon-reload
  systemctl enable --now skiff-controlplane
  for _ in $(seq 1 100); do [ -s /var/lib/skiff/controlplane/kubeconfig ] && break; sleep 0.2; done
  # kubectl as the admin, on the control plane only.
  for home in /root /home/vagrant; do
    mkdir -p "$home/.kube" && cp /var/lib/skiff/controlplane/kubeconfig "$home/.kube/config"
  done
  chown -R vagrant: /home/vagrant/.kube 2>/dev/null || true
  # The bootstrap token, valid for a day from this provisioning (apply: a later provisioning extends it).
  kubectl --kubeconfig /var/lib/skiff/controlplane/kubeconfig -n kube-system create secret generic "bootstrap-token-$token_id" \
    --type bootstrap.kubernetes.io/token --from-literal=token-id="$token_id" --from-literal=token-secret="$token_secret" \
    --from-literal=usage-bootstrap-authentication=true --from-literal=expiration="$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%SZ)" \
    --dry-run=client -o yaml | kubectl --kubeconfig /var/lib/skiff/controlplane/kubeconfig apply -f - >/dev/null
  # The cluster CA (public) for the workers, on the private network only.
  mkdir -p /etc/skiff/public && cp /var/lib/skiff/controlplane/pki/ca.crt /etc/skiff/public/ca.crt
  cat >/etc/systemd/system/skiff-cluster-ca.service <<U
[Unit]
Description=Serve the Skiff cluster CA certificate to joining nodes on the private network
[Service]
ExecStart=/usr/bin/python3 -m http.server 6480 --bind $cp_ip --directory /etc/skiff/public
Restart=always
[Install]
WantedBy=multi-user.target
U
  systemctl daemon-reload
  systemctl enable --now skiff-cluster-ca
  cp /etc/skiff/public/ca.crt /etc/skiff/ca.crt
else
  for _ in $(seq 1 300); do curl -fsS -o /etc/skiff/ca.crt "http://$cp_ip:6480/ca.crt" && break; sleep 1; done
  grep -q 'BEGIN CERTIFICATE' /etc/skiff/ca.crt 2>/dev/null || { echo "could not fetch the cluster CA from $cp_ip" >&2; exit 1; }
fi
# The bootstrap kubeconfig: the token and the CA, nothing else. The agent writes $kubeconfig with its own certificate.
bk=/etc/skiff/bootstrap.kubeconfig
kubectl config --kubeconfig="$bk" set-cluster skiff --server="https://$cp_ip:6443" --certificate-authority=/etc/skiff/ca.crt --embed-certs=true >/dev/null
kubectl config --kubeconfig="$bk" set-credentials bootstrap --token="$token" >/dev/null
kubectl config --kubeconfig="$bk" set-context skiff --cluster=skiff --user=bootstrap >/dev/null
kubectl config --kubeconfig="$bk" use-context skiff >/dev/null
chmod 0600 "$bk"
cat >/etc/systemd/system/skiff-agent.service <<U
[Unit]
Description=Skiff node agent
After=network-online.target
Wants=network-online.target
[Service]
ExecStart=/usr/local/bin/skiff-agent --node-name $name --node-ip $ip --bootstrap-kubeconfig $bk --kubeconfig $kubeconfig --root-dir /var/lib/skiff --runtime /usr/local/bin/skiff-runtime
# SIGTERM only to the agent: its containers keep running across restarts.
KillMode=process
Restart=always
Delegate=yes
[Install]
WantedBy=multi-user.target
U
cat >/etc/systemd/system/skiff-netproxy.service <<U
[Unit]
Description=Skiff service proxy (Services and pod routes)
After=network-online.target
Wants=network-online.target
[Service]
# The node's credentials are the agent's to obtain (TLS bootstrap): wait for them.
ExecStartPre=/usr/bin/timeout 600 /bin/sh -c 'until [ -s $kubeconfig ]; do sleep 1; done'
TimeoutStartSec=700
ExecStart=/usr/local/bin/skiff-netproxy --kubeconfig $kubeconfig --node-name $name --node-ip $ip --cluster-cidr 10.244.0.0/16
Restart=always
[Install]
WantedBy=multi-user.target
U
systemctl daemon-reload
systemctl enable --now skiff-agent skiff-netproxy
echo "$name ($role) is up: kubectl get nodes"
