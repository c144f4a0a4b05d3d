#!/usr/bin/env python3
"""Benchmark: DMA MB/s through the IOMMU next to direct DMA (mid 0), same transfers, same run.

Starts `coreio-vm --accel qtest` with one IOMMU and `coreio-testclient` on a
UNIX socket (no KVM needed). A qtest script maps an IOVA window of 1 MiB
twice: with 4 KiB pages in a shuffled order (256 pages, eight times the
IOTLB) and with one 2 MiB page. Then, for each size and direction, the
client repeats the same transfer through each path and the wall time of the
client's blocking `dma_read` / `dma_write` commands gives MB/s (best of
--repeat rounds after one warm-up round, paths interleaved). One JSON line per measurement, then one
with the ratios to direct DMA:

  {"bench": "dma_iommu", "dir": "read", "size": 4096, "path": "direct", "mb_s": ..., "n": ...}
  {"bench": "dma_iommu", "dir": "read", "size": 4096, "path": "iommu-4k", ...}
  {"bench": "dma_iommu", "dir": "read", "size": 4096, "path": "iommu-2m", ...}
  {"bench": "dma_iommu", "dir": "read", "size": 4096, "ratios": {"iommu-4k/direct": ...}}

Usage: bench/dma_iommu.py [--build DIR] [--repeat R] [--bytes B]
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

IOMMU_BASE = 0xFD000000
RANGE = 0xD0000000
POOL = 0x100000  # page tables
DATA = 0x1000000  # the direct-DMA buffer, 1 MiB (2 MiB aligned)
DATA_4K = 0x2000000  # 4 MiB of pages the 4 KiB mapping picks from
IOVA_4K = 0x40000000
IOVA_2M = 0x40200000
SIZES = (4096, 65536, 1 << 20)
TIMEOUT = 60


class Line:
    """A child process spoken to one line at a time."""

    def __init__(self, argv):
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, bufsize=1)

    def cmd(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        return self.read()

    def read(self):
        ans = self.p.stdout.readline()
        if not ans:
            raise SystemExit("bench: %s ended (status %s)" % (self.p.args[0], self.p.poll()))
        return ans.strip()

    def ok(self, line):
        a = self.cmd(line)
        if not a.startswith("OK"):
            raise SystemExit("bench: %r -> %r" % (line, a))
        return a

    def stop(self):
        if self.p.poll() is None:
            self.p.stdin.close()
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def build_tables(vm):
    """Map IOVA_4K (256 shuffled 4 KiB pages) and IOVA_2M (one 2 MiB page at DATA) for sid 0."""
    nxt = [POOL]

    def table():
        a = nxt[0]
        nxt[0] += 4096
        vm.ok("memset %#x 4096 0" % a)
        return a

    pml4, pdpt, pd, pt = table(), table(), table(), table()
    vm.ok("writeq %#x %#x" % (pml4, pdpt | 3))
    vm.ok("writeq %#x %#x" % (pdpt + 8 * 1, pd | 3))  # 1..2 GiB
    vm.ok("writeq %#x %#x" % (pd + 8 * 0, pt | 3))  # IOVA_4K: 4 KiB pages
    vm.ok("writeq %#x %#x" % (pd + 8 * 1, DATA | 0x83))  # IOVA_2M: a 2 MiB page
    pages = [DATA_4K + 4096 * i for i in range(1024)]
    random.Random(1).shuffle(pages)
    for i in range(256):
        vm.ok("writeq %#x %#x" % (pt + 8 * i, pages[i] | 3))
    vm.ok("writeq %#x %#x" % (IOMMU_BASE + 0x108, pml4))
    vm.ok("writeq %#x 1" % (IOMMU_BASE + 0x100))


def measure(client, path, direction, size, n):
    mid, addr = {"direct": (0, DATA), "iommu-4k": (1, IOVA_4K), "iommu-2m": (1, IOVA_2M)}[path]
    line = ("dma_read %d 0 %#x %d" % (mid, addr, size) if direction == "read"
            else "dma_write %d 0 %#x %d 7" % (mid, addr, size))
    client.ok(line)  # warm up (IOTLB, allocations)
    t0 = time.perf_counter()
    for _ in range(n):
        client.ok(line)
    return size * n / (time.perf_counter() - t0) / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build", help="meson build directory (default: build)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds per measurement; the best is reported (default 3)")
    ap.add_argument("--bytes", type=int, default=16 << 20,
                    help="bytes per measurement round, at least 20 transfers (default 16 MiB)")
    args = ap.parse_args()

    vm_exe = os.path.join(args.build, "src/vm/coreio-vm")
    tc_exe = os.path.join(args.build, "tests/clients/coreio-testclient")
    sock = os.path.join(tempfile.mkdtemp(prefix="coreio-bench-"), "vm.sock")
    vm = Line([vm_exe, "--accel", "qtest", "--qtest", "stdio", "--mem", "64M",
               "--iommu", "id=1,base=%#x" % IOMMU_BASE,
               "--vmmio", "%#x,size=0x1000,port=unix:%s" % (RANGE, sock)])
    client = None
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            if time.monotonic() > deadline or vm.p.poll() is not None:
                raise SystemExit("bench: coreio-vm did not start listening")
            time.sleep(0.02)
        client = Line([tc_exe, "unix:" + sock])
        first = client.read()
        if not first.startswith("OK connected"):
            raise SystemExit("bench: client: %s" % first)
        client.ok("register 0")
        vm.ok("vmmio_wait 0 5000")
        build_tables(vm)
        paths = ("direct", "iommu-4k", "iommu-2m")
        for direction in ("read", "write"):
            for size in SIZES:
                n = max(20, args.bytes // size)
                best = {p: 0.0 for p in paths}
                for r in range(args.repeat + 1):
                    for p in paths:
                        mb_s = measure(client, p, direction, size, n)
                        if r > 0:  # round 0 only warms every path up
                            best[p] = max(best[p], mb_s)
                for p in paths:
                    print(json.dumps({"bench": "dma_iommu", "dir": direction, "size": size,
                                      "path": p, "mb_s": round(best[p], 1), "n": n}),
                          flush=True)
                print(json.dumps({"bench": "dma_iommu", "dir": direction, "size": size,
                                  "ratios": {"%s/direct" % p: round(best[p] / best["direct"], 3)
                                             for p in paths[1:]}}), flush=True)
        stats = vm.ok("stats")
        if "dma_faults=0" not in stats:
            raise SystemExit("bench: DMA faulted: %s" % stats)
    finally:
        for p in (client, vm):
            if p:
                p.stop()
        try:
            os.unlink(sock)
            os.rmdir(os.path.dirname(sock))
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
