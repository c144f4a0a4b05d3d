#!/usr/bin/env python3
"""virtio-blk throughput in a Linux guest: the CoreIO model (coreio-qemu) against QEMU's own virtio-blk-pci, in one run.

Every boot uses the same kernel, initramfs, disk image size, QEMU binary and
command line (taken from `coreio-qemu --dry-run`) and accelerator; only the
disk differs.

Transport (--transport, default auto): vfio-user when coreio-qemu can run it
(QEMU 11.1 from build/qemu-root, coreio-vm --accel vfio-user), else mpqemu.
The baseline, QEMU's in-process virtio-blk-pci, runs in the same QEMU binary
as the CoreIO rows (the root's QEMU 11.1 on vfio-user, the system QEMU 7.2 on
mpqemu).

On vfio-user the device's interrupts reach the guest under TCG: each set of
rows is run with MSI-X (what Linux's virtio-pci picks) and with INTx (the
guest booted with pci=nomsi; --no-intx skips it), and the baseline likewise,
so every CoreIO row has a QEMU row of the same interrupt mode. Rows are named
PATH-msix / PATH-intx. On mpqemu the proxied device's interrupts never
arrive under TCG and completions are found at the 250 Hz tick (irqpoll,
docs/qemu-proxy.md); rows are named PATH as before.

Interrupt-driven rows (tests/linux/bench.sh, one request queue):
sequential write and read MB/s with dd and O_DIRECT, 4 KiB reads at queue
depth 1, and 4 KiB reads at random offsets (one dd per read).

Polled rows (tests/linux/bench-poll.sh, /bin/blkpoll): the guest boots with
virtio_blk.poll_queues=1 and two possible CPUs, the disk has two queues
(coreio-virtio-blk --queues 2; QEMU's virtio-blk-pci num-queues=2), and
io_uring with IORING_SETUP_IOPOLL on O_DIRECT finds completions by polling
the poll queue, so no interrupt and no tick is involved. Metrics, one
request at a time: sequential write and read MB/s (512 KiB requests from
ordinary pages, about 128 segments each), 4 KiB reads from offset 0, 4 KiB
reads at random offsets, and the sequential read again in 1 MiB requests
from a transparent huge page (one segment each: pseq_read_huge_mbs). Each
request is timed with clock_gettime and every read checked against the
pattern written first.

Paths: coreio (the model over TCP loopback, as coreio-qemu's default),
coreio-shm (the model on a UNIX socket with shared-memory DMA, port=unix:...,
shm=on) and qemu-virtio-blk-pci. Prints one JSON line per path, interrupt
mode and benchmark mode (each with its transport), then one line of ratios
per CoreIO path and interrupt mode against QEMU's row of the same mode.
"""

import argparse
import json
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
import linux_harness as lh  # noqa: E402

METRICS = ("seq_write_mbs", "seq_read_mbs", "read4k_qd1_iops", "randread4k_iops")
PMETRICS = ("pseq_write_mbs", "pseq_read_mbs", "pread4k_qd1_iops", "prandread4k_iops",
            "pseq_read_huge_mbs")

# The polled set-up, the same for every path: virtio_blk makes min(num_queues,
# possible CPUs) queues, and the guest has one vCPU.
POLL_APPEND = "virtio_blk.poll_queues=1 possible_cpus=2"
POLL_QUEUES = 2


def emit(obj):
    print(json.dumps(obj), flush=True)


def parse_bench(console, metrics):
    out = {}
    for line in console.values("BENCH "):
        for kv in line.split():
            k, v = kv.split("=", 1)
            if k in metrics:
                out[k] = float(v)
    missing = [k for k in metrics if k not in out]
    if missing:
        raise RuntimeError("the guest printed no %s\n%s" % (", ".join(missing), console.tail()))
    return out


def run_guest(console, test, metrics, timeout):
    verdict, checks = console.result(test, timeout)
    if verdict != "PASS":
        raise RuntimeError("the guest benchmark failed:\n%s\n%s" % ("\n".join(checks), console.tail()))
    console.wait_exit(60)
    return parse_bench(console, metrics)


def baseline_argv(img, accel, append, disk, mem, queues=1, transport="auto"):
    """coreio-qemu's own QEMU command line (same QEMU binary), with QEMU's virtio-blk-pci instead of the range's device."""
    _, argv = lh.dry_run_qemu(accel, append, mem, img, transport)
    dev = "virtio-blk-pci,drive=d0" + (",num-queues=%d" % queues if queues > 1 else "")
    return argv + ["-drive", "file=%s,if=none,id=d0,format=raw" % disk, "-device", dev]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", required=True, help="the meson build directory")
    ap.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    ap.add_argument("--transport", default="auto", choices=("auto", "vfio-user", "mpqemu"),
                    help="coreio-qemu's transport for the CoreIO rows (default auto: vfio-user "
                    "when coreio-qemu can run it)")
    ap.add_argument("--mib", type=int, default=64, help="MiB per sequential pass (default 64)")
    ap.add_argument("--n4k", type=int, default=1000, help="4 KiB reads at queue depth 1")
    ap.add_argument("--nrand", type=int, default=200, help="4 KiB reads at random offsets")
    ap.add_argument("--pbs", type=int, default=512 << 10,
                    help="bytes per polled sequential request (default 512 KiB)")
    ap.add_argument("--no-irq", action="store_true", help="skip the interrupt-driven rows")
    ap.add_argument("--no-polled", action="store_true", help="skip the polled rows")
    ap.add_argument("--no-shm", action="store_true", help="skip the coreio-shm path")
    ap.add_argument("--no-intx", action="store_true",
                    help="vfio-user: skip the INTx rows (guest booted with pci=nomsi)")
    ap.add_argument("--model-arg", action="append", default=[], metavar="ARG",
                    help="one more argument for every CoreIO blk model (repeatable), e.g. "
                         "--model-arg=--no-event-idx")
    ap.add_argument("--timeout", type=float, default=400, help="seconds per boot")
    a = ap.parse_args()
    build = os.path.abspath(a.build)

    why = lh.no_qemu_reason()
    if why:
        emit({"bench": "virtio_blk", "skipped": why})
        return 0
    transport = a.transport
    if transport != "mpqemu":
        why = lh.vfio_user_missing(build)
        if why and transport == "vfio-user":
            emit({"bench": "virtio_blk", "skipped": why})
            return 0
        transport = "mpqemu" if why else "vfio-user"
    if transport == "mpqemu":
        why = lh.mpqemu_missing()
        if why:
            emit({"bench": "virtio_blk", "skipped": why})
            return 0
    img = lh.image_dir(build)
    ok, log = lh.build_image(img)
    if not ok:
        emit({"bench": "virtio_blk", "skipped": "cannot build the guest image: " + log[-500:]})
        return 0
    common = "coreio.mib=%d coreio.n4k=%d coreio.nrand=%d" % (a.mib, a.n4k, a.nrand)
    mem = "256M"
    modes = []
    if not a.no_irq:
        modes.append(("irq", "bench", common, 1, METRICS, ""))
    if not a.no_polled:
        modes.append(("polled", "bench-poll", "%s %s coreio.pbs=%d" % (common, POLL_APPEND, a.pbs),
                      POLL_QUEUES, PMETRICS, "-polled"))
    # Interrupt modes: vfio-user offers MSI-X (Linux's choice) and INTx (pci=nomsi);
    # mpqemu has neither under TCG (irqpoll at the tick), one row per path as before.
    if transport == "vfio-user":
        irqs = [("msix", "", "-msix")] + ([] if a.no_intx else [("intx", "pci=nomsi", "-intx")])
    else:
        irqs = [(None, "", "")]
    coreio_paths = ["coreio"] + ([] if a.no_shm else ["coreio-shm"])
    results = {}
    accel = a.accel
    with tempfile.TemporaryDirectory(prefix="coreio-bench-") as work:
        disk = lh.make_disk(os.path.join(work, "disk.img"), a.mib + 16)
        for mode, test, append, queues, metrics, suffix in modes:
            for irq, irq_append, irq_suffix in irqs:
                mode_append = " ".join(x for x in (append, irq_append) if x)
                extra = {"transport": transport}
                if irq:
                    extra["irq"] = irq
                for path in coreio_paths:
                    port = "0"
                    if path == "coreio-shm":
                        sock = os.path.join(work, "blk-%s.sock" % mode)
                        port = "unix:%s,shm=on" % sock
                    if irq == "msix":
                        # hotplug=on ranges offer INTx only (QEMU 11.1.3 aborts unplugging
                        # a vfio-user device with MSI-X): the MSI-X rows use hotplug=off.
                        port += ",hotplug=off"
                    args = ["--queues", str(queues)] if queues > 1 else []
                    args += a.model_arg
                    m = lh.CoreioMachine(build, img, work, test=test,
                                         devices=[lh.Device("blk", disk, args=args, port=port)],
                                         extra_append=mode_append, accel=a.accel, mem=mem,
                                         timeout=a.timeout, transport=transport)
                    try:
                        accel = m.accel()
                        got = m.transport()
                        if got != transport:
                            raise RuntimeError("coreio-qemu ran %s, not %s\n%s"
                                               % (got, transport, m.tail()))
                        r = run_guest(m, test, metrics, a.timeout)
                    finally:
                        m.stop()
                    results.setdefault(path + irq_suffix, {}).update(r)
                    emit(dict(bench="virtio_blk", path=path + irq_suffix + suffix, mode=mode,
                              accel=accel, mib=a.mib, queues=queues, **extra, **r))

                # The baseline: coreio-qemu's QEMU and command line (TCG's kernel parameters
                # as it added them), QEMU's own virtio-blk-pci in place of the range's device.
                full_append = " ".join(["loglevel=4", mode_append, "coreio.test=" + test])
                q = lh.Console("qemu", baseline_argv(img, accel, full_append, disk, mem, queues,
                                                     transport))
                try:
                    r = run_guest(q, test, metrics, a.timeout)
                finally:
                    q.stop()
                results.setdefault("qemu" + irq_suffix, {}).update(r)
                emit(dict(bench="virtio_blk", path="qemu-virtio-blk-pci" + irq_suffix + suffix,
                          mode=mode, accel=accel, mib=a.mib, queues=queues,
                          qemu="same as the CoreIO rows (%s)" % transport, **extra, **r))
    for _, _, irq_suffix in irqs:
        base = results.get("qemu" + irq_suffix, {})
        for path in coreio_paths:
            mine = results.get(path + irq_suffix, {})
            emit(dict(bench="virtio_blk", ratio="%s%s/qemu%s" % (path, irq_suffix, irq_suffix),
                      transport=transport, accel=accel,
                      **{k: round(mine[k] / base[k], 3)
                         for k in METRICS + PMETRICS if k in mine and base.get(k)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
