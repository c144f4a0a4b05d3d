#!/usr/bin/env python3
"""virtio-blk throughput in a Linux guest: the CoreIO model (coreio-qemu) against QEMU's own virtio-blk-pci, in one run.

Both boots use the same kernel, initramfs, disk image size, QEMU command line
(taken from `coreio-qemu --dry-run`) and accelerator; only the disk differs.
The guest (tests/linux/bench.sh) measures sequential write and read MB/s with
dd and O_DIRECT, 4 KiB reads at queue depth 1, and 4 KiB reads at random
offsets (one dd per read). Prints one JSON line per path and one of ratios.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
import linux_harness as lh  # noqa: E402

METRICS = ("seq_write_mbs", "seq_read_mbs", "read4k_qd1_iops", "randread4k_iops")


def emit(obj):
    print(json.dumps(obj), flush=True)


def parse_bench(console):
    out = {}
    for line in console.values("BENCH "):
        for kv in line.split():
            k, v = kv.split("=", 1)
            if k in METRICS:
                out[k] = float(v)
    missing = [k for k in METRICS if k not in out]
    if missing:
        raise RuntimeError("the guest printed no %s\n%s" % (", ".join(missing), console.tail()))
    return out


def run_guest(console, timeout):
    verdict, checks = console.result("bench", timeout)
    if verdict != "PASS":
        raise RuntimeError("the guest benchmark failed:\n%s\n%s" % ("\n".join(checks), console.tail()))
    console.wait_exit(60)
    return parse_bench(console)


def baseline_argv(img, accel, append, disk, mem):
    """coreio-qemu's own QEMU command line, with QEMU's virtio-blk-pci instead of the proxies."""
    r = subprocess.run([lh.COREIO_QEMU, "--dry-run", "--accel", accel, "--mem", mem,
                        "--kernel", os.path.join(img, "vmlinuz"),
                        "--initrd", os.path.join(img, "initramfs.cpio.gz"), "--append", append,
                        "--vmmio", "pci,size=16K,pci=1042,profile=virtio,port=0"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError("coreio-qemu --dry-run failed: %s" % r.stderr)
    qemu = shlex.split(r.stdout.strip().splitlines()[-1])
    argv, i = [], 0
    while i < len(qemu):
        if qemu[i] == "-device" and qemu[i + 1].startswith("x-pci-proxy-dev"):
            i += 2
            continue
        argv.append(qemu[i])
        i += 1
    return argv + ["-drive", "file=%s,if=none,id=d0,format=raw" % disk,
                   "-device", "virtio-blk-pci,drive=d0"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", required=True, help="the meson build directory")
    ap.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    ap.add_argument("--mib", type=int, default=64, help="MiB per sequential pass (default 64)")
    ap.add_argument("--n4k", type=int, default=1000, help="4 KiB reads at queue depth 1")
    ap.add_argument("--nrand", type=int, default=200, help="4 KiB reads at random offsets")
    ap.add_argument("--timeout", type=float, default=400, help="seconds per boot")
    a = ap.parse_args()
    build = os.path.abspath(a.build)

    if not lh.qemu_binary():
        emit({"bench": "virtio_blk", "skipped": "qemu-system-x86_64 is not installed"})
        return 0
    img = lh.image_dir(build)
    ok, log = lh.build_image(img)
    if not ok:
        emit({"bench": "virtio_blk", "skipped": "cannot build the guest image: " + log[-500:]})
        return 0
    append = "coreio.mib=%d coreio.n4k=%d coreio.nrand=%d" % (a.mib, a.n4k, a.nrand)
    mem = "256M"
    results = {}
    with tempfile.TemporaryDirectory(prefix="coreio-bench-") as work:
        disk = lh.make_disk(os.path.join(work, "disk.img"), a.mib + 16)
        m = lh.CoreioMachine(build, img, work, test="bench", devices=[lh.Device("blk", disk)],
                             extra_append=append, accel=a.accel, mem=mem,
                             timeout=a.timeout)
        try:
            accel = m.accel()
            results["coreio"] = run_guest(m, a.timeout)
        finally:
            m.stop()
        emit(dict(bench="virtio_blk", path="coreio", accel=accel, mib=a.mib, **results["coreio"]))

        # The baseline: coreio-qemu's command line with TCG's kernel parameters as it added them.
        full_append = " ".join(["loglevel=4", append, "coreio.test=bench"])
        q = lh.Console("qemu", baseline_argv(img, accel, full_append, disk, mem))
        try:
            results["qemu"] = run_guest(q, a.timeout)
        finally:
            q.stop()
        emit(dict(bench="virtio_blk", path="qemu-virtio-blk-pci", accel=accel, mib=a.mib,
                  **results["qemu"]))
    emit(dict(bench="virtio_blk", ratio="coreio/qemu", accel=accel,
              **{k: round(results["coreio"][k] / results["qemu"][k], 3) for k in METRICS}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
