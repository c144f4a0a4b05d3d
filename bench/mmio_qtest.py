#!/usr/bin/env python3
"""Benchmark: MMIO read round trip without KVM, qtest readl through a CoreIO client vs a RAM read + raw ping-pong.

Starts `coreio-vm --accel qtest` (no KVM needed: the qtest session plays
the vCPU) with two ranges on a TCP port and two on a UNIX socket, each
served by its own `coreio-timerdma` (the client mmio_latency uses; its ID
register answers at once), and times N 32-bit reads per round with coreio-vm's
`bench_read ADDR 4 N` qtest command (timed inside coreio-vm, so the
script's pipe is not measured; each read starts from coreio-vm's event
loop once the one before completed, as the next `readl` would):

  ram          a guest RAM address: the read never leaves the VM (the
               baseline's VM half: the qtest vCPU's own cost per access)
  coreio-tcp   the ID register of a range served over TCP loopback, with
               coreio-vm's default wait for the answer (poll=adaptive,
               where the qtest session waits as a vCPU does)
  coreio-unix  the same over a UNIX socket
  coreio-tcp-block, coreio-unix-block
               the same with poll=block (coreio-vm sleeps until the answer)

and, in the same run, the raw 64-byte socket ping-pong between two
processes with the same placement (coreio-baselines pingpong tcp|unix
--cpus A,B). Rounds interleave all paths and baselines; each figure is the
median of --repeat rounds (after a warm-up round). --placement cross (the
default) pins coreio-vm to one CPU and the clients to another, and the
ping-pong's two processes likewise; same: all on one CPU; free: no pinning.
Every value read is checked (the last of each run: the ID register, or the
pattern written to RAM first), and so is the count: a mismatch exits
non-zero. Output, one JSON line each:

  {"bench": "mmio_qtest", "path": "ram", "ns_per_op": ..., "n": ..., "runs": [...]}
  {"bench": "mmio_qtest", "baseline": "pingpong-tcp", "ns_per_op": ..., "runs": [...]}
  {"bench": "mmio_qtest", "path": "coreio-tcp", "ns_per_op": ..., "n": ..., "poll": "default",
   "runs": [...], "ratio": {"coreio-tcp/(ram+pingpong-tcp)": ...}}
  {"bench": "mmio_qtest", "placement": "cross", "ratios": {...}, "targets": {...}, "met": {...}}

Target: coreio <= 1.1 x (ram + ping-pong) for TCP and UNIX (the default
rows; the -block rows' ratios are printed next to them). Nothing is
asserted on the figures.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

BENCH = "mmio_qtest"
RANGE = 0xD0000000  # range G at RANGE + G * 0x1000
RAM_ADDR = 0x100000
RAM_VALUE = 0x5A17C0DE
TD_ID_VALUE = 0x434F5254  # coreio-timerdma's ID register at offset 0
TARGET = 1.1


def bench_read(vm, name, addr, n, expect):
    """ns per read of one `bench_read addr 4 n`, checking count and value."""
    a = vm.answer("bench_read %#x 4 %d" % (addr, n), timeout=max(120, n // 100))
    m = re.match(r"OK ns=(\d+) count=(\d+) value=0x([0-9a-f]+)$", a)
    if not m:
        raise SystemExit("bench: FAILED: %s: bench_read -> %r" % (name, a))
    if int(m.group(2)) != n or int(m.group(3), 16) != expect:
        raise SystemExit("bench: FAILED: %s: %d reads, last value %#x; want %d reads of %#x"
                         % (name, int(m.group(2)), int(m.group(3), 16), n, expect))
    return int(m.group(1)) / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build", help="meson build directory (default: build)")
    ap.add_argument("--n", type=int, default=5000, help="reads per round and path (default 5000)")
    ap.add_argument("--repeat", type=int, default=5,
                    help="rounds; each figure is the median (default 5)")
    ap.add_argument("--placement", choices=("cross", "same", "free"), default="cross",
                    help="cross (default): coreio-vm on one CPU, the clients on another, and "
                         "the ping-pong's two processes likewise; same: all on one CPU; free: "
                         "no pinning")
    args = ap.parse_args()
    if args.n < 1 or args.repeat < 1:
        ap.error("--n and --repeat must be positive")

    cpus = sorted(os.sched_getaffinity(0))
    if args.placement == "cross" and len(cpus) < 2:
        args.placement = "same"
    pin = {"cross": (cpus[0], cpus[-1]), "same": (cpus[0], cpus[0]),
           "free": (None, None)}[args.placement]
    pp_cpus = [] if pin[0] is None else ["--cpus", "%d,%d" % pin]

    tmp = tempfile.mkdtemp(prefix="coreio-bench-")
    sock = os.path.join(tmp, "vm.sock")
    # (path, port, poll): range G is ranges[G]
    ranges = [("coreio-tcp", "0", ""), ("coreio-unix", "unix:" + sock, ""),
              ("coreio-tcp-block", "0", ",poll=block"),
              ("coreio-unix-block", "unix:%s-block" % sock, ",poll=block")]
    argv = [bl.exe(args.build, "src/vm/coreio-vm"), "--accel", "qtest", "--qtest", "stdio",
            "--mem", "64M"]
    for g, (_, port, poll) in enumerate(ranges):
        argv += ["--vmmio", "%#x,size=0x1000,port=%s%s" % (RANGE + g * 0x1000, port, poll)]
    client = bl.exe(args.build, "examples/coreio-timerdma")
    err = tempfile.TemporaryFile(mode="w+")
    vm = bl.Line(argv, name="coreio-vm", stderr=err)
    if pin[0] is not None:  # with qtest, coreio-vm is one thread
        os.sched_setaffinity(vm.p.pid, {pin[0]})
    clients = []
    try:
        targets = bl.wait_listening(err, vm.p, len(ranges))
        for g in range(len(ranges)):
            info = dict(kv.split("=", 1) for kv in vm.ok("vmmio_info %d" % g)[3:].split())
            target = next(t for t in targets if t == info["port"] or
                          t.endswith(":" + info["port"]))
            clients.append(subprocess.Popen(
                [client, "--rid", info["rid"], target],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                preexec_fn=bl.pinned(pin[1])))
        for g in range(len(ranges)):
            vm.ok("vmmio_wait %d 10000" % g)
        vm.ok("writel %#x %#x" % (RAM_ADDR, RAM_VALUE))
        paths = [("ram", RAM_ADDR, RAM_VALUE)] + [
            (name, RANGE + g * 0x1000, TD_ID_VALUE) for g, (name, _, _) in enumerate(ranges)]
        runs = {name: [] for name, _, _ in paths}
        pp = {"pingpong-tcp": [], "pingpong-unix": []}
        for rnd in range(args.repeat + 1):
            for name, addr, expect in paths:
                ns = bench_read(vm, name, addr, args.n if rnd else max(1, args.n // 10), expect)
                if rnd:  # round 0 only warms every path up
                    runs[name].append(round(ns))
            if rnd:
                for tr in ("tcp", "unix"):
                    pp["pingpong-" + tr].append(round(bl.baseline(
                        args.build, "pingpong", tr, "--n", args.n, *pp_cpus)["ns_per_op"]))
        if any(c.poll() is not None for c in clients):
            raise SystemExit("bench: FAILED: a coreio-timerdma client ended during the run")
    finally:
        bl.stop_all(clients + [vm])
        err.close()
        for f in (sock, sock + "-block"):
            try:
                os.unlink(f)
            except OSError:
                pass
        try:
            os.rmdir(tmp)
        except OSError:
            pass

    med = {k: round(statistics.median(v)) for k, v in list(runs.items()) + list(pp.items())}
    bl.emit({"bench": BENCH, "path": "ram", "ns_per_op": med["ram"], "n": args.n,
             "runs": runs["ram"]})
    for name, r in pp.items():
        bl.emit({"bench": BENCH, "baseline": name, "ns_per_op": med[name], "runs": r})
    ratios = {}
    for name, _, poll in ranges:
        tr = name.split("-")[1]
        key = "%s/(ram+pingpong-%s)" % (name, tr)
        ratios[key] = bl.ratio(med[name], med["ram"] + med["pingpong-" + tr])
        bl.emit({"bench": BENCH, "path": name, "ns_per_op": med[name], "n": args.n,
                 "poll": poll.split("=")[1] if poll else "default", "runs": runs[name],
                 "ratio": {key: ratios[key]}})
    targets = [k for k in ratios if "-block" not in k]
    bl.emit({"bench": BENCH, "placement": args.placement, "ratios": ratios,
             "targets": {k: "<= %s" % TARGET for k in targets},
             "met": {k: ratios[k] is not None and ratios[k] <= TARGET for k in targets}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
