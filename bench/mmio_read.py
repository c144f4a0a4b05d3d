#!/usr/bin/env python3
"""Benchmark: ns per guest MMIO read, in-VMM handler vs a CoreIO client over TCP and UNIX.

Runs the bench_mmio test guest under `coreio-vm --accel kvm` three times in
one run and prints one JSON line per path, then one with the ratios:

  {"bench": "mmio_read", "path": "in-vmm", "ns_per_op": ..., "n": ...}
  {"bench": "mmio_read", "path": "coreio-tcp", ...}
  {"bench": "mmio_read", "path": "coreio-unix", ...}
  {"bench": "mmio_read", "ratios": {"tcp/in-vmm": ..., "unix/in-vmm": ...}}

Where KVM is unusable it prints one line {"bench": "mmio_read", "skipped": REASON}
and exits 0. Usage: bench/mmio_read.py [--build DIR] [--n N] [--repeat R]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from kvmcheck import kvm_unavailable  # noqa: E402

TESTDEV = 0xFE000000
RANGE = 0xD0000000
TIMEOUT = 120


def run_guest(build, vmmio, addr, n, client=None):
    """Run bench_mmio once; returns ns per read as the guest measured it."""
    vm_exe = os.path.join(build, "src/vm/coreio-vm")
    guest = os.path.join(build, "tests/guests/bench_mmio.elf")
    argv = [vm_exe, "--accel", "kvm", "--kernel", guest, "--mem", "64M",
            "--append", "addr=%#x n=%d" % (addr, n)]
    if vmmio:
        argv += ["--vmmio", vmmio]
    with tempfile.TemporaryFile(mode="w+") as err:
        vm = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True,
                              stdin=subprocess.DEVNULL)
        dev = None
        try:
            if client:
                target = wait_listen(err, vm)
                dev = subprocess.Popen([client, target], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            out, _ = vm.communicate(timeout=TIMEOUT)
        finally:
            for p in (dev, vm):
                if p and p.poll() is None:
                    p.kill()
                    p.wait()
        err.seek(0)
        m = re.search(r"^BENCH mmio_read ns_per_op=(\d+) n=(\d+)", out, re.M)
        if vm.returncode != 0 or not m:
            raise SystemExit("bench: guest run failed (status %s)\n%s\n%s"
                             % (vm.returncode, out[-2000:], err.read()[-2000:]))
        return int(m.group(1))


def wait_listen(err, vm):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        err.seek(0)
        m = re.search(r"^listening on (\S+)", err.read(), re.M)
        if m:
            return m.group(1)
        if vm.poll() is not None:
            break
        time.sleep(0.02)
    raise SystemExit("bench: coreio-vm did not start listening")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build", help="meson build directory (default: build)")
    ap.add_argument("--n", type=int, default=20000, help="reads per guest run (default 20000)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per path; the best is reported (default 3)")
    args = ap.parse_args()

    why = kvm_unavailable()
    if why:
        print(json.dumps({"bench": "mmio_read", "skipped": why}))
        return 0
    client = os.path.join(args.build, "examples/coreio-timerdma")
    sock = os.path.join(tempfile.mkdtemp(prefix="coreio-bench-"), "vm.sock")
    paths = [
        ("in-vmm", None, TESTDEV, None),
        ("coreio-tcp", "%#x,size=0x1000,port=0" % RANGE, RANGE, client),
        ("coreio-unix", "%#x,size=0x1000,port=unix:%s" % (RANGE, sock), RANGE, client),
    ]
    results = {}
    for name, vmmio, addr, cl in paths:
        runs = [run_guest(args.build, vmmio, addr, args.n, cl) for _ in range(args.repeat)]
        results[name] = min(runs)
        print(json.dumps({"bench": "mmio_read", "path": name, "ns_per_op": results[name],
                          "n": args.n, "runs": runs}), flush=True)
    base = results["in-vmm"]
    print(json.dumps({"bench": "mmio_read", "ratios": {
        "tcp/in-vmm": round(results["coreio-tcp"] / base, 2),
        "unix/in-vmm": round(results["coreio-unix"] / base, 2)}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
