#!/usr/bin/env python3
"""Benchmark: a device model in Python (the coreio module) next to the same model in C, same VM, same run.

The model is the timer / IRQ / DMA peripheral: `coreio-timerdma` (C,
examples/timerdma) and `examples/python/timerdma.py` (its Python port, same
registers), the latter with each of its loops (`--loop thread`: mainloop(-1);
`--loop asyncio`: fileno() and process() in an asyncio event loop). Each
model has a `coreio-vm --accel qtest` of its own (one range, TCP), whose
qtest session plays the CPU:

  mmio   N 32-bit reads of the ID register per round, timed inside coreio-vm
         (`bench_read`): the MMIO round trip through the model's read callback
  dma    the model's copy command (DMA_CMD = 1) of --dma-size bytes: a
         non-blocking DMA read of the source into the model's buffer, then a
         non-blocking DMA write of it to the destination; timed from the
         command's write to the model's done interrupt (`IRQ raise`), so a
         qtest round trip (~0.1 ms) is included. MB/s = size / time (10^6
         bytes per second; the model moves twice that over the socket)

Rounds interleave the models; each figure is the median of --repeat rounds
after a warm-up round. coreio-vm and the models share one CPU by default
(--placement same): what a request costs in the model adds up directly,
while a wake-up across CPUs (30-70 us on the 2-core CI machines, varying
from round to round) would hide it; --placement cross pins them apart, as
bench/mmio_qtest.py does. Every ID read and every copy is
checked (a marker in each MiB of the destination), and a mismatch exits
non-zero. Output, one JSON line each:

  {"bench": "python_model", "path": "mmio", "model": "c", "ns_per_op": ..., "runs": [...]}
  {"bench": "python_model", "path": "mmio", "model": "python-thread", "ns_per_op": ...,
   "runs": [...], "ratio": {"python-thread/c": ...}}
  {"bench": "python_model", "path": "dma", "model": "c", "size": ..., "MBps": ..., "runs": [...]}
  ...

Nothing is asserted on the figures.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

BENCH = "python_model"
BASE = 0xD0000000
ID_VALUE = 0x434F5254
CTRL, STATUS, SRC, DST, LEN, CMD = 0x04, 0x0C, 0x18, 0x20, 0x28, 0x2C
SRC_ADDR, DST_ADDR = 0x1000000, 0x2000000
MODELS = ("c", "python-thread", "python-asyncio")


class Qtest:
    """coreio-vm's qtest session: answers, with `IRQ raise|lower N` lines kept apart."""

    def __init__(self, argv, err):
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=err, text=True, bufsize=1)
        self.lines = bl.LineBuffer(self.p.stdout.fileno())
        self.irqs = []
        self.last = None

    def line(self, timeout=30):
        try:
            s = self.lines.line(timeout)
        except EOFError:
            raise SystemExit("bench: FAILED: coreio-vm ended (status %s)" % self.p.poll())
        if s is None:
            raise SystemExit("bench: FAILED: coreio-vm gave no answer within %d s (waiting "
                             "after %r)" % (timeout, self.last))
        return s.strip()

    def ok(self, cmd, timeout=30):
        self.last = cmd
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        while True:
            a = self.line(timeout)
            if a.startswith("IRQ "):
                self.irqs.append(a)
                continue
            if not a.startswith("OK"):
                raise SystemExit("bench: FAILED: %r -> %r" % (cmd, a))
            return a[2:].strip()

    def wait_irq(self, want, timeout=30):
        deadline = time.monotonic() + timeout
        while want not in self.irqs:
            if time.monotonic() > deadline:
                raise SystemExit("bench: FAILED: no %r within %d s" % (want, timeout))
            a = self.line(timeout)
            if not a.startswith("IRQ "):
                raise SystemExit("bench: FAILED: unexpected %r" % a)
            self.irqs.append(a)
        self.irqs.remove(want)

    def stop(self):
        bl.stop_all([self.p])


def mmio(vm, addr, n):
    a = vm.ok("bench_read %#x 4 %d" % (addr, n), timeout=max(30, n // 50))
    m = re.match(r"ns=(\d+) count=(\d+) value=0x([0-9a-f]+)$", a)
    if not m or int(m.group(2)) != n or int(m.group(3), 16) != ID_VALUE:
        raise SystemExit("bench: FAILED: bench_read %#x -> %r" % (addr, a))
    return int(m.group(1)) / n


def dma_copy(vm, addr, line, size, rnd):
    """Seconds for one copy command of size bytes, checked."""
    marks = range(0, size, 1 << 20)
    for k in marks:
        vm.ok("write %#x 8 0x%016x" % (SRC_ADDR + k, (rnd << 32) + k + 1))
    vm.ok("writeq %#x %#x" % (addr + SRC, SRC_ADDR))
    vm.ok("writeq %#x %#x" % (addr + DST, DST_ADDR))
    vm.ok("writel %#x %d" % (addr + LEN, size))
    t0 = time.perf_counter()
    vm.ok("writel %#x 1" % (addr + CMD))
    vm.wait_irq("IRQ raise %d" % line)
    dt = time.perf_counter() - t0
    status = int(vm.ok("readl %#x" % (addr + STATUS)), 16)
    if status & 6 != 2:
        raise SystemExit("bench: FAILED: copy of %d bytes: STATUS %#x" % (size, status))
    for k in marks:
        got = vm.ok("read %#x 8" % (DST_ADDR + k))
        if got != "0x%016x" % ((rnd << 32) + k + 1):
            raise SystemExit("bench: FAILED: copy of %d bytes: %r at +%#x" % (size, got, k))
    # Clear STATUS and read it back, as a guest would: the read makes coreio-vm take the
    # model's frames up to its answer, the IRQ update of the write among them.
    vm.ok("writel %#x 2" % (addr + STATUS))
    vm.ok("readl %#x" % (addr + STATUS))
    vm.wait_irq("IRQ lower %d" % line)
    return dt


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build", help="meson build directory (default: build)")
    ap.add_argument("--python", default=sys.executable,
                    help="the python3 the build's module is for (default: this one)")
    ap.add_argument("--n", type=int, default=5000, help="MMIO reads per round (default 5000)")
    ap.add_argument("--dma-size", default="16M", help="bytes per copy (default 16M)")
    ap.add_argument("--repeat", type=int, default=5, help="rounds (default 5)")
    ap.add_argument("--placement", choices=("cross", "same", "free"), default="same",
                    help="same (default): all on one CPU; cross: coreio-vm on one CPU, the "
                         "models on another; free: no pinning")
    args = ap.parse_args()
    size = bl.parse_size(args.dma_size)
    if args.n < 1 or args.repeat < 1 or not 0 < size <= 16 << 20:
        ap.error("--n and --repeat must be positive, --dma-size 1..16M")
    pymod = os.path.join(args.build, "src", "python")
    if not (os.path.isdir(pymod) and any(f.startswith("coreio.") and f.endswith(".so")
                                         for f in os.listdir(pymod))):
        bl.emit({"bench": BENCH, "skipped": "the Python module is not built in %s" % pymod})
        return 0
    cpus = sorted(os.sched_getaffinity(0))
    if args.placement == "cross" and len(cpus) < 2:
        args.placement = "same"
    pin = {"cross": (cpus[0], cpus[-1]), "same": (cpus[0], cpus[0]),
           "free": (None, None)}[args.placement]

    script = os.path.join(os.path.dirname(bl.HERE), "examples", "python", "timerdma.py")
    # Sharing a CPU, the VM must not spin for an answer (the model needs that CPU).
    poll = ",poll=block" if args.placement == "same" else ""
    env = dict(os.environ, PYTHONPATH=pymod)
    vms, models, errs = [], [], []
    try:
        for name in MODELS:  # one VM per model: none waits behind another's traffic
            err = tempfile.TemporaryFile(mode="w+")
            errs.append(err)
            vm = Qtest([bl.exe(args.build, "src/vm/coreio-vm"), "--accel", "qtest", "--qtest",
                        "stdio", "--mem", "64M", "--vmmio",
                        "%#x,size=0x1000,irq=5,port=0%s" % (BASE, poll)], err)
            vms.append(vm)
            if pin[0] is not None:  # with qtest, coreio-vm is one thread
                os.sched_setaffinity(vm.p.pid, {pin[0]})
            target = bl.wait_listening(err, vm.p, 1)[0]
            if name == "c":
                cmd = [bl.exe(args.build, "examples/coreio-timerdma"), target]
            else:
                cmd = [args.python, script, "--loop", name.split("-")[1], target]
            models.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                           preexec_fn=bl.pinned(pin[1])))
            vm.ok("irq_intercept_in ioapic")
            vm.ok("vmmio_wait 0 10000")
            vm.ok("writel %#x 2" % (BASE + CTRL))  # IRQ enable
        ns = {m: [] for m in MODELS}
        secs = {m: [] for m in MODELS}
        for rnd in range(args.repeat + 1):
            for vm, m in zip(vms, MODELS):
                v = mmio(vm, BASE, args.n if rnd else max(1, args.n // 10))
                t = dma_copy(vm, BASE, 5, size, rnd)
                if rnd:  # round 0 only warms every path up
                    ns[m].append(round(v))
                    secs[m].append(t)
        if any(p.poll() is not None for p in models):
            raise SystemExit("bench: FAILED: a model ended during the run")
    finally:
        bl.stop_all(models)
        for vm in vms:
            vm.stop()
        for err in errs:
            err.close()

    med_ns = {m: statistics.median(v) for m, v in ns.items()}
    med_mbps = {m: size / statistics.median(v) / 1e6 for m, v in secs.items()}
    for m in MODELS:
        row = {"bench": BENCH, "path": "mmio", "model": m, "ns_per_op": round(med_ns[m]),
               "n": args.n, "runs": ns[m]}
        if m != "c":
            row["ratio"] = {"%s/c" % m: bl.ratio(med_ns[m], med_ns["c"], 2)}
        bl.emit(row)
    for m in MODELS:
        row = {"bench": BENCH, "path": "dma", "model": m, "size": size,
               "MBps": round(med_mbps[m], 1),
               "runs": [round(size / t / 1e6, 1) for t in secs[m]]}
        if m != "c":
            row["ratio"] = {"%s/c" % m: bl.ratio(med_mbps[m], med_mbps["c"], 2)}
        bl.emit(row)
    bl.emit({"bench": BENCH, "placement": args.placement})
    return 0


if __name__ == "__main__":
    sys.exit(main())
