#!/usr/bin/env python3
"""Interleaved A/B of commands on a noisy host: ab.py ROUNDS NAME=CMD ...

Runs the commands in turn, round after round (2 warm-up rounds), so a change of background
load hits every command alike (hyperfine runs all rounds of one command, then the next). Prints
per command the median and minimum wall time and the CPU time (user+sys of the command and the
descendants it reaped, as hyperfine counts it). Give each runtime its own bundle, cgroupsPath
and --root. For the v1 layout run it inside `unshare -m` after `umount -l /sys/fs/cgroup/unified`.
Example (root): runtime/bench/ab.py 100 "a=./old --root /tmp/sa run --bundle /tmp/ba x" \
    "b=./new --root /tmp/sb run --bundle /tmp/bb x"
"""
import os, sys, time, shlex, statistics, subprocess
rounds = int(sys.argv[1])
variants = [a.split('=', 1) for a in sys.argv[2:]]
res = {n: ([], []) for n, _ in variants}
for r in range(rounds + 2):
    for n, cmd in variants:
        argv = shlex.split(cmd.replace('{i}', str(r)))
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            fd = os.open('/dev/null', os.O_WRONLY); os.dup2(fd, 1)
            try: os.execvp(argv[0], argv)
            finally: os._exit(127)
        _, status, ru = os.wait4(pid, 0)
        t1 = time.perf_counter()
        if os.waitstatus_to_exitcode(status) != 0: print(n, 'failed', status, file=sys.stderr)
        if r >= 2:
            res[n][0].append((t1 - t0) * 1000); res[n][1].append((ru.ru_utime + ru.ru_stime) * 1000)
base = None
for n, _ in variants:
    w, c = res[n]
    mw, mc = statistics.median(w), statistics.mean(c)
    if base is None: base = mw
    print(f"{n:14s} wall med {mw:6.2f} min {min(w):6.2f}  cpu mean {mc:6.2f} med {statistics.median(c):6.2f} min {min(c):6.2f}  ratio {mw/base:.2f}")
