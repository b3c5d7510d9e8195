#!/usr/bin/env bash
# Provisions one Vagrant machine (run by `vagrant up` as root): installs Skiff's binaries from the synced folder,
# runs them as systemd units. The control plane issues every machine's node credentials (system:node:NAME, a client
# certificate of the cluster CA) and hands the workers theirs over the private network; the admin kubeconfig stays on
# the control plane (vagrant ssh cp -c "kubectl get nodes").
# Usage: provision.sh controlplane|worker NODE_NAME NODE_IP CP_IP BIN_DIR NODE_NAMES(comma-separated)
set -euo pipefail
role=$1 name=$2 ip=$3 cp_ip=$4 bin=$5 nodes=${6:-$2}
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq iptables iproute2 conntrack libseccomp2 curl ca-certificates >/dev/null
install -m 0755 "$bin"/skiff-agent "$bin"/skiff-runtime "$bin"/skiff-netproxy /usr/local/bin/
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
  cat >/etc/systemd/system/skiff-controlplane.service <<U
[Unit]
Description=Skiff control plane
After=network-online.target
Wants=network-online.target
[Service]
ExecStart=/usr/local/bin/skiff-controlplane --data-dir /var/lib/skiff/controlplane --listen $cp_ip:6443
Restart=always
[Install]
WantedBy=multi-user.target
U
  systemctl daemon-reload
  systemctl enable --now skiff-controlplane
  for _ in $(seq 1 100); do [ -s /var/lib/skiff/controlplane/kubeconfig ] && break; sleep 0.2; done
  mkdir -p /etc/skiff/nodes
  for n in ${nodes//,/ }; do
    skiff-controlplane kubeconfig --data-dir /var/lib/skiff/controlplane --user "system:node:$n" --group system:nodes \
      --server "https://$cp_ip:6443" --out "/etc/skiff/nodes/$n.kubeconfig"
  done
  cp "/etc/skiff/nodes/$name.kubeconfig" "$kubeconfig"
  # kubectl as the admin, on the control plane only.
  for home in /root /home/vagrant; do
    mkdir -p "$home/.kube" && cp /var/lib/skiff/controlplane/kubeconfig "$home/.kube/config"
  done
  chown -R vagrant: /home/vagrant/.kube 2>/dev/null || true
  # The workers fetch their node credentials from here, over the private network only, until provisioning is done.
  # (No bootstrap-token join yet: see docs/security.md.)
  cat >/etc/systemd/system/skiff-node-credentials.service <<U
[Unit]
Description=Hand the Skiff workers their node credentials on the private network
[Service]
ExecStart=/usr/bin/python3 -m http.server 6480 --bind $cp_ip --directory /etc/skiff/nodes
Restart=always
[Install]
WantedBy=multi-user.target
U
  systemctl daemon-reload
  systemctl enable --now skiff-node-credentials
else
  for _ in $(seq 1 300); do curl -fsS -o "$kubeconfig" "http://$cp_ip:6480/$name.kubeconfig" && break; sleep 1; done
  [ -s "$kubeconfig" ] || { echo "could not fetch the node credentials from $cp_ip" >&2; exit 1; }
  chmod 0600 "$kubeconfig"
fi
cat >/etc/systemd/system/skiff-agent.service <<U
[Unit]
Description=Skiff node agent
After=network-online.target
Wants=network-online.target
[Service]
ExecStart=/usr/local/bin/skiff-agent --node-name $name --node-ip $ip --kubeconfig $kubeconfig --root-dir /var/lib/skiff --runtime /usr/local/bin/skiff-runtime
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
ExecStart=/usr/local/bin/skiff-netproxy --kubeconfig $kubeconfig --node-name $name --node-ip $ip --cluster-cidr 10.244.0.0/16
Restart=always
[Install]
WantedBy=multi-user.target
U
systemctl daemon-reload
systemctl enable --now skiff-agent skiff-netproxy
echo "$name ($role) is up: kubectl get nodes"
