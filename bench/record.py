#!/usr/bin/env python3
"""Benchmark: the cost of coreio-vm --record, MMIO round trip and DMA MB/s with and without it.

Starts two `coreio-vm --accel qtest` instances side by side, identical but
for `--record FILE` on the second. Each has range 0 on a UNIX socket,
served by `coreio-timerdma` (its ID register answers at once), and range 1
on a TCP port, to which a `coreio-testclient` connects for DMA. Rounds
interleave the two VMs (same run, same machine state):

  mmio        N 32-bit reads of the ID register with `bench_read ADDR 4 N`
              (timed inside coreio-vm), ns per read
  dma-SIZE    `dma_bench` writes then reads of SIZE bytes into guest RAM
              (timed inside the client), MB/s; with --record every byte
              crosses the socket and goes into the file (shared-memory DMA
              is off in both VMs, so only the recording differs)

Each figure is the median of --repeat rounds after a warm-up round. Values
are checked (the ID register, the DMA fnv of the write against the read):
a mismatch exits non-zero. The recording is read back with
scripts/replaylib/recording.py at the end (its record count must be what
coreio-vm reported). Output, one JSON line each:

  {"bench": "record", "path": "mmio", "plain_ns": ..., "record_ns": ..., "ratio": ...}
  {"bench": "record", "path": "dma-65536-write", "plain_mbps": ..., "record_mbps": ...,
   "ratio": ...}
  {"bench": "record", "file_bytes": ..., "records": ...}

ratio = record / plain (ns: above 1 is slower; MB/s: below 1 is slower).
Nothing is asserted on the figures.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import benchlib as bl  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(HERE), "scripts"))
from replaylib import recording  # noqa: E402

BENCH = "record"
RANGE = 0xD0000000
TD_ID_VALUE = 0x434F5254  # coreio-timerdma's ID register at offset 0
DATA = 0x200000
MB = 1 << 20


class Instance:
    """One coreio-vm with its two clients."""

    def __init__(self, build, tmp, name, record):
        self.name = name
        self.record = record
        sock = os.path.join(tmp, name + ".sock")
        argv = [bl.exe(build, "src/vm/coreio-vm"), "--accel", "qtest", "--qtest", "stdio",
                "--mem", "64M", "--vmmio", "%#x,size=0x1000,port=unix:%s" % (RANGE, sock),
                "--vmmio", "%#x,size=0x1000,port=0" % (RANGE + 0x1000)]
        if record:
            argv += ["--record", record]
        self.err = tempfile.TemporaryFile(mode="w+")
        self.vm = bl.Line(argv, name="coreio-vm (%s)" % name, stderr=self.err)
        self.td = None
        self.tc = None
        targets = bl.wait_listening(self.err, self.vm.p, 2)
        unix = next(t for t in targets if t.startswith("unix:"))
        tcp = next(t for t in targets if not t.startswith("unix:"))
        self.td = subprocess.Popen([bl.exe(build, "examples/coreio-timerdma"), "--rid", "0",
                                    unix], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.vm.ok("vmmio_wait 0 10000")
        self.tc = bl.Line([bl.exe(build, "tests/clients/coreio-testclient"), tcp],
                          name="coreio-testclient (%s)" % name, stderr=subprocess.DEVNULL)
        first = self.tc.read(30)
        if not first.startswith("OK connected"):
            raise SystemExit("bench: %s: %s" % (name, first))

    def mmio(self, n):
        a = self.vm.answer("bench_read %#x 4 %d" % (RANGE, n), timeout=max(120, n // 100))
        m = re.match(r"OK ns=(\d+) count=(\d+) value=0x([0-9a-f]+)$", a)
        if not m or int(m.group(2)) != n or int(m.group(3), 16) != TD_ID_VALUE:
            raise SystemExit("bench: FAILED: %s: bench_read -> %r" % (self.name, a))
        return int(m.group(1)) / n

    def dma(self, direction, size, n, seed=5):
        cmd = "dma_bench 0 0 %#x %d %d %s" % (DATA, size, n, direction)
        if direction == "write":
            cmd += " %d" % seed
        a = self.tc.answer(cmd, timeout=600)
        m = re.match(r"OK ns=(\d+) count=(\d+) fnv=([0-9a-f]+)", a)
        if not m:
            raise SystemExit("bench: FAILED: %s: %r -> %r" % (self.name, cmd, a))
        return size * n / max(int(m.group(1)), 1) * 1e3, m.group(3)

    def stop(self):
        """End it; returns coreio-vm's stderr."""
        bl.stop_all([self.tc, self.td, self.vm])
        self.err.seek(0)
        text = self.err.read()
        self.err.close()
        return text


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build", help="meson build directory (default: build)")
    ap.add_argument("--n", type=int, default=5000, help="MMIO reads per round (default 5000)")
    ap.add_argument("--bytes", type=bl.parse_size, default=8 * MB,
                    help="DMA bytes per direction, size and round (default 8M)")
    ap.add_argument("--sizes", default="4K,64K", help="DMA transfer sizes (default 4K,64K)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds; each figure is the median (default 3)")
    args = ap.parse_args()
    sizes = [bl.parse_size(s) for s in args.sizes.split(",")]
    if args.n < 1 or args.repeat < 1 or any(s < 64 or s > 16 * MB for s in sizes):
        ap.error("--n and --repeat must be positive, sizes 64 .. 16M")

    tmp = tempfile.mkdtemp(prefix="coreio-bench-record-")
    rec_path = os.path.join(tmp, "bench.pcapng")
    insts = []
    runs = {}
    try:
        insts = [Instance(args.build, tmp, "plain", None),
                 Instance(args.build, tmp, "record", rec_path)]
        for rnd in range(args.repeat + 1):
            for inst in insts:
                ns = inst.mmio(args.n if rnd else max(1, args.n // 10))
                if rnd:
                    runs.setdefault(("mmio", inst.name), []).append(ns)
            for size in sizes:
                n = max(1, args.bytes // size) if rnd else 1
                for inst in insts:
                    w, fnv_w = inst.dma("write", size, n)
                    r, fnv_r = inst.dma("read", size, n)
                    if fnv_w != fnv_r:
                        raise SystemExit("bench: FAILED: %s: DMA read fnv %s, write %s"
                                         % (inst.name, fnv_r, fnv_w))
                    if rnd:
                        runs.setdefault(("dma-%d-write" % size, inst.name), []).append(w)
                        runs.setdefault(("dma-%d-read" % size, inst.name), []).append(r)
        texts = [inst.stop() for inst in insts]
        insts = []
        m = re.search(r"--record \S+: (\d+) records, (\d+) bytes", texts[1])
        if not m:
            raise SystemExit("bench: FAILED: no recording summary\n%s" % texts[1][-2000:])
        _, recs = recording.read(rec_path)
        if len(recs) != int(m.group(1)):
            raise SystemExit("bench: FAILED: the file holds %d records, coreio-vm wrote %s"
                             % (len(recs), m.group(1)))
        file_bytes = os.path.getsize(rec_path)
    finally:
        for inst in insts:
            inst.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in runs.items()}
    bl.emit({"bench": BENCH, "path": "mmio", "n": args.n,
             "plain_ns": round(med[("mmio", "plain")]),
             "record_ns": round(med[("mmio", "record")]),
             "ratio": bl.ratio(med[("mmio", "record")], med[("mmio", "plain")])})
    for size in sizes:
        for d in ("write", "read"):
            key = "dma-%d-%s" % (size, d)
            bl.emit({"bench": BENCH, "path": key, "bytes": args.bytes,
                     "plain_mbps": round(med[(key, "plain")], 1),
                     "record_mbps": round(med[(key, "record")], 1),
                     "ratio": bl.ratio(med[(key, "record")], med[(key, "plain")])})
    bl.emit({"bench": BENCH, "file_bytes": file_bytes, "records": len(recs)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
