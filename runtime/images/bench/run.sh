#!/usr/bin/env bash
# Pull + unpack of a ~100 MB multi-layer image from a local registry (127.0.0.1 only):
# skiff-images pull  vs  skopeo copy docker://… oci:DIR + umoci unpack. Prints a Markdown table.
#
#   bash runtime/images/bench/run.sh [RUNS]        (as root; needs docker-registry, skopeo, umoci)
#
# Each run starts from an empty store / directory; the page cache is warm for the registry's files
# for both tools alike. Reports the median of RUNS (default 3) runs, alternating the tools.
set -euo pipefail
RUNS=${1:-3}
LAYERS=${LAYERS:-4}
LAYER_MB=${LAYER_MB:-25}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
BIN=${SKIFF_IMAGES_BIN:-$repo/target/release/skiff-images}
for tool in docker-registry skopeo umoci sha256sum gzip; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install docker-registry skopeo umoci)" >&2; exit 1; }
done
if [ ! -x "$BIN" ]; then
  (cd "$repo" && cargo build --release -p skiff-images >&2)
fi

work=$(mktemp -d /tmp/skiff-images-bench.XXXXXX)
reg_pid=""
cleanup() {
  if [ -n "$reg_pid" ]; then kill "$reg_pid" 2>/dev/null || true; wait "$reg_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# --- build the image as an OCI layout: LAYERS layers of random files, gzip-compressed
layout=$work/layout
mkdir -p "$layout/blobs/sha256"
layers_json=""; diffs_json=""; total=0
for i in $(seq 1 "$LAYERS"); do
  d=$work/l$i; mkdir -p "$d/data/layer$i"
  for f in $(seq 1 8); do
    head -c $((LAYER_MB * 1024 * 1024 / 8)) /dev/urandom > "$d/data/layer$i/file$f"
  done
  mkdir -p "$d/etc"; echo "layer $i" > "$d/etc/layer$i"
  tar --numeric-owner --owner=0 --group=0 -C "$d" -cf "$work/l$i.tar" .
  diff=$(sha256sum < "$work/l$i.tar" | cut -d' ' -f1)
  gzip -1 -c "$work/l$i.tar" > "$work/l$i.tar.gz"
  dig=$(sha256sum < "$work/l$i.tar.gz" | cut -d' ' -f1)
  size=$(stat -c %s "$work/l$i.tar.gz"); total=$((total + size))
  mv "$work/l$i.tar.gz" "$layout/blobs/sha256/$dig"
  rm -rf "$d" "$work/l$i.tar"
  layers_json+="${layers_json:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$dig\",\"size\":$size}"
  diffs_json+="${diffs_json:+,}\"sha256:$diff\""
done
config="{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Cmd\":[\"/bin/sh\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$diffs_json]}}"
printf '%s' "$config" > "$work/config"
cdig=$(sha256sum < "$work/config" | cut -d' ' -f1); csize=$(stat -c %s "$work/config"); mv "$work/config" "$layout/blobs/sha256/$cdig"
manifest="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$cdig\",\"size\":$csize},\"layers\":[$layers_json]}"
printf '%s' "$manifest" > "$work/manifest"
mdig=$(sha256sum < "$work/manifest" | cut -d' ' -f1); msize=$(stat -c %s "$work/manifest"); mv "$work/manifest" "$layout/blobs/sha256/$mdig"
echo '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"
echo "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$mdig\",\"size\":$msize,\"annotations\":{\"org.opencontainers.image.ref.name\":\"v1\"}}]}" > "$layout/index.json"

# --- a registry on 127.0.0.1:<free port>
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
YML
docker-registry serve "$work/registry.yml" 2>"$work/registry.log" &
reg_pid=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
skopeo copy --quiet --insecure-policy --dest-tls-verify=false "oci:$layout:v1" "docker://127.0.0.1:$port/bench/app:v1"
rm -rf "$layout"
ref=127.0.0.1:$port/bench/app:v1

now() { date +%s.%N; }
ours=(); theirs=()
for run in $(seq 1 "$RUNS"); do
  rm -rf "$work/store"; sync
  t0=$(now); "$BIN" --root "$work/store" pull "$ref" >/dev/null; t1=$(now)
  ours+=("$(echo "$t1 - $t0" | bc)")
  rm -rf "$work/store" "$work/oci" "$work/bundle"; sync
  t0=$(now)
  skopeo copy --quiet --insecure-policy --src-tls-verify=false "docker://$ref" "oci:$work/oci:v1"
  umoci unpack --image "$work/oci:v1" "$work/bundle" >/dev/null
  t1=$(now)
  theirs+=("$(echo "$t1 - $t0" | bc)")
  rm -rf "$work/oci" "$work/bundle"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m_ours=$(median "${ours[@]}"); m_theirs=$(median "${theirs[@]}")
mb=$(echo "scale=1; $total / 1048576" | bc)
echo
echo "Pull + unpack of a $mb MB image ($LAYERS gzip layers of random data) from 127.0.0.1, median of $RUNS runs"
echo
echo "| tool | seconds | MB/s (compressed) | runs |"
echo "|---|---|---|---|"
printf '| skiff-images pull | %.2f | %.0f | %s |\n' "$m_ours" "$(echo "$mb / $m_ours" | bc -l)" "${ours[*]}"
printf '| skopeo copy + umoci unpack | %.2f | %.0f | %s |\n' "$m_theirs" "$(echo "$mb / $m_theirs" | bc -l)" "${theirs[*]}"
printf '\nratio skiff/(skopeo+umoci): %.2f\n' "$(echo "$m_ours / $m_theirs" | bc -l)"
