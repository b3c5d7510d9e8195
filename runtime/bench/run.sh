#!/bin/sh
# create+start+wait+delete of /bin/true from one busybox bundle: skiff-runtime vs runc vs crun
# vs the namespaced-process floor, side by side in one hyperfine run. Prints a Markdown table
# (median wall time, mean CPU time, ratio to skiff-runtime).
#
# Then the peak memory (max RSS from GNU time, /usr/bin/time) of each runtime process of one
# create, start and delete, median of 5.
#
# Needs root, busybox-static, runc, crun, hyperfine, time (apt-get install busybox-static runc
# crun hyperfine time). Usage: runtime/bench/run.sh [RUNS]   (default 50)
# SKIFF_RUNTIME=path uses that binary instead of building the release one.
#
# SKIFF_BENCH_LAYOUT picks the cgroup layout every runtime sees:
#   hybrid (default) this host as it is; crun, which refuses the hybrid layout, runs inside a
#                    per-command wrapper that hides cgroup2 (its numbers include that wrapper);
#   v1               the whole benchmark runs in one private mount namespace without the cgroup2
#                    mount: all runtimes on pure cgroup v1, no wrapper for anyone (the fair
#                    comparison on this host).
# (A pure-v2 layout made by mounting cgroup2 on /sys/fs/cgroup is not offered: crun 1.8.1 fails
# there on this host with "setrlimit (RLIM_MEMLOCK): Operation not permitted".)
set -eu

case "${SKIFF_BENCH_LAYOUT:-hybrid}" in
    hybrid) ;;
    v1)
        if [ -z "${SKIFF_BENCH_IN_MNTNS:-}" ]; then
            # Private mount namespace: the host's mounts are untouched.
            exec unshare -m --propagation private env SKIFF_BENCH_IN_MNTNS=1 sh -c '
                umount -l /sys/fs/cgroup/unified 2>/dev/null || true
                exec sh "$0" "$@"' "$0" "$@"
        fi ;;
    *) echo "SKIFF_BENCH_LAYOUT must be hybrid or v1" >&2; exit 2 ;;
esac

RUNS=${1:-50}
HERE=$(cd "$(dirname "$0")" && pwd)
WT=$(cd "$HERE/../.." && pwd)
if [ -z "${SKIFF_RUNTIME:-}" ]; then
    CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$WT/target} nice -n 10 cargo build --release -q \
        --manifest-path "$WT/Cargo.toml" -p skiff-runtime
    SKIFF_RUNTIME=${CARGO_TARGET_DIR:-$WT/target}/release/skiff-runtime
fi
for tool in runc crun hyperfine unshare busybox python3 /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/skiff-bench.XXXXXX)
CGROUP_PARENT=skiff-bench-$$
cleanup() {
    for rt in skiff runc crun; do
        # Only the bench's own container id, in the bench's own state dirs.
        case $rt in
            skiff) "$SKIFF_RUNTIME" --root "$WORK/state-skiff" delete --force bench 2>/dev/null || true ;;
            runc) runc --root "$WORK/state-runc" delete --force bench 2>/dev/null || true ;;
            crun) crun --root "$WORK/state-crun" delete --force bench 2>/dev/null || true ;;
        esac
    done
    for d in /sys/fs/cgroup/*/"$CGROUP_PARENT" /sys/fs/cgroup/"$CGROUP_PARENT"; do
        # In the v1 layout crun still follows the "0::" line of /proc/self/cgroup into the
        # now plain tmpfs directory /sys/fs/cgroup/unified and leaves a regular cgroup.procs
        # file there; remove that (only on tmpfs, never in a cgroup file system).
        if [ "$(stat -f -c %T "$d" 2>/dev/null)" = tmpfs ]; then rm -f "$d"/*/cgroup.procs; fi
        [ -d "$d" ] && rmdir "$d"/* "$d" 2>/dev/null || true
    done
    # In the hybrid layout crun's wrapper does the same in its own mount namespace, where the
    # tmpfs directory under the unified mount point is visible: clean it up from one like it.
    if grep -q " /sys/fs/cgroup/unified " /proc/self/mountinfo; then
        unshare -m --propagation private sh -c 'umount -l /sys/fs/cgroup/unified 2>/dev/null
            d=/sys/fs/cgroup/unified/$0
            if [ "$(stat -f -c %T "$d" 2>/dev/null)" = tmpfs ]; then
                rm -f "$d"/*/cgroup.procs; rmdir "$d"/* "$d" 2>/dev/null
            fi; true' "$CGROUP_PARENT" || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

B=$WORK/bundle
mkdir -p "$B/rootfs/bin" "$B/rootfs/proc" "$B/rootfs/dev" "$B/rootfs/sys" "$B/rootfs/tmp"
cp "$(command -v busybox)" "$B/rootfs/bin/busybox"
for a in sh true; do ln -s busybox "$B/rootfs/bin/$a"; done
(cd "$B" && runc spec)
python3 - "$B/config.json" "/$CGROUP_PARENT/bench" <<'PY'
import json, sys
path, cgroups = sys.argv[1], sys.argv[2]
c = json.load(open(path))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true"]
c["linux"]["cgroupsPath"] = cgroups
json.dump(c, open(path, "w"), indent=1)
PY

# crun refuses the hybrid cgroup layout; hide cgroup2 in a private mount namespace
# (see docs/machine-facts.md).
CRUN="unshare -m --propagation private sh -c 'umount -l /sys/fs/cgroup/unified 2>/dev/null; exec crun \"\$@\"' sh"
if ! grep -q ' /sys/fs/cgroup/unified ' /proc/self/mountinfo; then CRUN=crun; fi

hyperfine -N --warmup 3 --runs "$RUNS" --export-json "$WORK/result.json" \
    -n skiff-runtime "$SKIFF_RUNTIME --root $WORK/state-skiff run --bundle $B bench" \
    -n runc "runc --root $WORK/state-runc run --bundle $B bench" \
    -n crun "$CRUN --root $WORK/state-crun run --bundle $B bench" \
    -n floor "unshare --pid --fork --mount --uts --ipc --net /bin/true" >&2

python3 - "$WORK/result.json" "$RUNS" "${SKIFF_BENCH_LAYOUT:-hybrid}" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
base = next(r for r in results if r["command"] == "skiff-runtime")["median"]
print(f"create+start+wait+delete of /bin/true, {sys.argv[2]} runs each, cgroup layout {sys.argv[3]}\n")
print("| runtime | median ms | min ms | CPU ms (user+sys, mean) | ratio to skiff-runtime |")
print("|---|---|---|---|---|")
for r in results:
    cpu = (r["user"] + r["system"]) * 1000
    print(f"| {r['command']} | {r['median']*1000:.1f} | {r['min']*1000:.1f} | {cpu:.1f} | "
          f"{r['median']/base:.2f} |")
PY

# Peak memory: max RSS in KiB of the runtime process for each of create, start and delete
# (for crun, of the crun process inside the wrapper: GNU time runs inside it).
CRUN_TIMED="unshare -m --propagation private sh -c 'umount -l /sys/fs/cgroup/unified 2>/dev/null; exec /usr/bin/time -f %M -a -o \"\$0\" crun \"\$@\"'"
if ! grep -q ' /sys/fs/cgroup/unified ' /proc/self/mountinfo; then CRUN_TIMED="sh -c 'exec /usr/bin/time -f %M -a -o \"\$0\" crun \"\$@\"'"; fi
rss() { # runtime op -> appends max RSS KiB to $WORK/rss-runtime-op
    rt=$1; op=$2; shift 2; out=$WORK/rss-$rt-$op
    case $rt in
        skiff-runtime) /usr/bin/time -f %M -a -o "$out" "$SKIFF_RUNTIME" --root "$WORK/state-skiff" "$op" "$@" ;;
        runc) /usr/bin/time -f %M -a -o "$out" runc --root "$WORK/state-runc" "$op" "$@" ;;
        crun) eval "$CRUN_TIMED" '"$out"' --root "$WORK/state-crun" '"$op"' '"$@"' ;;
    esac
}
for i in 1 2 3 4 5; do
    for rt in skiff-runtime runc crun; do
        rss $rt create --bundle "$B" bench >/dev/null
        rss $rt start bench >/dev/null
        sleep 0.05
        rss $rt delete bench >/dev/null
    done
done
python3 - "$WORK" <<'PY'
import statistics, sys
work = sys.argv[1]
print("\npeak memory (max RSS, MiB, median of 5) per runtime process\n")
print("| runtime | create | start | delete |")
print("|---|---|---|---|")
for rt in ["skiff-runtime", "runc", "crun"]:
    cells = []
    for op in ["create", "start", "delete"]:
        vals = [int(l) for l in open(f"{work}/rss-{rt}-{op}") if l.strip().isdigit()]
        cells.append(f"{statistics.median(vals) / 1024:.1f}")
    print(f"| {rt} | " + " | ".join(cells) + " |")
PY
