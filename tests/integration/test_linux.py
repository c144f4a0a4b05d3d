"""Linux guests in QEMU whose virtio devices are CoreIO models (scripts/coreio-qemu): boot, hwrng, ext2 files, stress, a killed model, interrupts, DMA through messages.

The main path is vfio-user (QEMU 11.1 from build/qemu-root, coreio-vm --accel
vfio-user; interrupts reach the guest, no irqpoll); those tests skip, with
coreio-qemu's reason, where it cannot run. mpqemu (QEMU 7.2's proxy) keeps
two smoke tests: boot and hwrng, and the killed and restarted model.

Which QEMU each test needs (linux_harness.py): the vfio-user tests the root's
QEMU 11.1 (scripts/qemu-root.sh); the mpqemu ones the system
qemu-system-x86_64 (QEMU 7.2); test_guest_scripts_with_qemu_devices either
(the system one first). Each skips on its own, naming what is missing; only
with no QEMU at all does the guest_image fixture skip everything. To run as if
there were no system QEMU (without uninstalling it), give PATH a directory of
links to everything in /usr/bin and /usr/sbin but qemu-system-*:

    d=/tmp/no-system-qemu; mkdir -p $d
    for f in /usr/bin/* /usr/sbin/*; do case ${f##*/} in qemu-system-*) ;;
        *) [ -e $d/${f##*/} ] || ln -s $f $d/ ;; esac; done
    PATH=$d COREIO_BUILD_DIR=$PWD/build /usr/bin/python3 -m pytest -q \
        tests/integration/test_linux.py -k boot

(the mpqemu tests then skip, the vfio-user ones run on build/qemu-root).
"""

import hashlib
import re
import shutil
import subprocess
import time

import pytest

from conftest import BUILD_DIR, SANITIZER, build_path
import linux_harness as lh

VFIO_USER, MPQEMU = "vfio-user", "mpqemu"

# Generous under TCG: a boot takes 5-15 s there, block I/O completes at the tick rate.
BOOT_TIMEOUT = 120
TEST_TIMEOUT = 240

# What blk-write writes (tests/linux/lib.inc's FILES): name -> size; content
# is the line "coreio NAME" repeated.
FILES = {"small.txt": 3000, "a.bin": 1048576, "dir/b.bin": 4194304, "dir/sub/c.txt": 70000}


def gen(name, size):
    line = ("coreio %s\n" % name).encode()
    return (line * (size // len(line) + 1))[:size]


@pytest.fixture(scope="session")
def guest_image():
    """The kernel and initramfs (built once per session, cached across sessions).

    Skips only when there is no QEMU at all; each test then checks the one it
    needs (need_transport, need_baseline_qemu).
    """
    why = lh.no_qemu_reason()
    if why:
        pytest.skip(why)
    if not lh.coreio_qemu_available():
        pytest.skip("scripts/coreio-qemu is missing")
    out = lh.image_dir(BUILD_DIR)
    ok, log = lh.build_image(out)
    if not ok:
        pytest.skip("cannot build the Linux guest image with scripts/build-guest-image.sh %s:\n%s"
                    % (out, log[-2000:]))
    return out


@pytest.fixture
def machines(tmp_path):
    """Starts machines for a test and ends every one of them afterwards."""
    started = []

    def start(kind="coreio", transport=VFIO_USER, **kw):
        if kind == "coreio":
            need_transport(transport)
            m = lh.CoreioMachine(BUILD_DIR, kw.pop("img"), str(tmp_path), transport=transport,
                                 **kw)
            m.asked_transport = transport
        else:
            need_baseline_qemu()
            m = lh.Console("qemu", lh.qemu_argv(kw.pop("img"), **kw))
        started.append(m)
        return m

    yield start
    left = []
    for m in started:
        m.stop()
        left += getattr(m, "left_behind", [])
    assert not left, "processes coreio-qemu left behind: %s" % left


@pytest.fixture
def models():
    """The device models exist in the build directory (fails loudly when they were not built)."""
    for k in ("blk", "rng"):
        build_path("devices/coreio-virtio-" + k)


def need_transport(transport):
    """Skips the test when coreio-qemu cannot run the transport here, saying why.

    vfio-user: coreio-qemu's own reason (no QEMU >= 10.1, i.e. no build/qemu-root,
    or a coreio-vm without --accel vfio-user); mpqemu: no system QEMU 7.2.
    """
    if transport == VFIO_USER:
        why = lh.vfio_user_missing(BUILD_DIR)
    elif transport == MPQEMU:
        why = lh.mpqemu_missing()
    else:
        why = None
    if why:
        pytest.skip(why)


def need_baseline_qemu():
    """Skips the test when there is no QEMU for a boot with QEMU's own devices."""
    if not lh.baseline_qemu():
        pytest.skip(lh.no_qemu_reason())


def check_transport(m):
    """coreio-qemu runs the transport the test asked for (no silent fallback)."""
    got = m.transport()
    assert got == m.asked_transport, "coreio-qemu runs %s, not %s\n%s" % (
        got, m.asked_transport, m.tail())
    return got


def run_guest(m, test):
    """Waits for the guest test's verdict and for the guest to power off; returns its checks."""
    if isinstance(m, lh.CoreioMachine):
        check_transport(m)
    verdict, checks = m.result(test, TEST_TIMEOUT)
    assert verdict == "PASS", "guest test %s failed:\n%s\n%s" % (test, "\n".join(checks), m.tail())
    assert checks, "guest test %s made no checks" % test
    pids = m.processes() if isinstance(m, lh.CoreioMachine) else []
    m.wait_exit(60)
    # Once the guest powered off, coreio-qemu ended everything it started.
    left = lh.wait_gone(pids, 10)
    assert not left, "processes left behind after %s: %s" % (test, left)
    bad = [l for l in m.err_lines if SANITIZER.search(l)]
    assert not bad, "sanitizer reports:\n%s" % "\n".join(bad)
    return checks


def sums(m):
    """The guest's 'SUM sha256 name' lines as a dict."""
    out = {}
    for v in m.values("SUM "):
        h, name = v.split(" ", 1)
        out[name] = h
    return out


@pytest.mark.parametrize("transport", [VFIO_USER, MPQEMU])
def test_boot_and_hwrng(guest_image, models, machines, record_property, transport):
    """Linux boots to /init (boot time printed and recorded) and reads 64 KiB from the CoreIO rng."""
    m = machines(img=guest_image, test="hwrng", devices=[lh.Device("rng")], transport=transport)
    accel = m.accel()
    assert check_transport(m) == transport
    t = m.boot_time(BOOT_TIMEOUT)
    record_property("boot_time_s", t)
    record_property("accel", accel)
    print("boot time under %s: %.2f s" % (accel, t))
    assert 0 < t < BOOT_TIMEOUT
    m.wait_line(r"coreio-init: virtio0 device 0x0004 vendor 0x1af4 driver virtio_rng", 60)
    run_guest(m, "hwrng")
    (line,) = m.values("HWRNG ")
    f = dict(kv.split("=") for kv in line.split())
    assert f["bytes"] == "65536"
    assert f["sha256"] not in (hashlib.sha256(bytes(65536)).hexdigest(),
                               hashlib.sha256(b"\xaa" * 65536).hexdigest())
    # The device the guest read was ours: coreio-vm forwarded its accesses.
    m.wait_err(r"claimed range 0", 5)


def debugfs_cat(image, name):
    r = subprocess.run(["debugfs", "-R", "cat /" + name, image], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return r.stdout


@pytest.mark.parametrize("transport", ["tcp", "shm"])
def test_blk_files_survive_reboot(guest_image, models, machines, tmp_path, transport):
    """mke2fs + files + sync + poweroff; a second boot verifies them; the host checks the image.

    shm: the model on a UNIX socket with shared-memory DMA, as scripts/demo.sh runs it.
    """
    disk = lh.make_disk(str(tmp_path / "disk.img"), 64)
    port = "unix:%s,shm=on" % (tmp_path / "blk.sock") if transport == "shm" else "0"
    m = machines(img=guest_image, test="blk-write", devices=[lh.Device("blk", disk, port=port)])
    run_guest(m, "blk-write")
    written = sums(m)
    for name, size in FILES.items():
        assert written.get(name) == hashlib.sha256(gen(name, size)).hexdigest(), name
    assert "rand.bin" in written

    # The host's view: a clean file system holding the same bytes.
    if shutil.which("e2fsck"):
        r = subprocess.run(["e2fsck", "-fn", disk], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        assert r.returncode == 0, r.stdout.decode(errors="replace")
    if shutil.which("debugfs"):
        for name, h in written.items():
            assert hashlib.sha256(debugfs_cat(disk, name)).hexdigest() == h, name

    m2 = machines(img=guest_image, test="blk-verify",
                  devices=[lh.Device("blk", disk, port=port)])
    run_guest(m2, "blk-verify")
    assert sums(m2) == written


def test_stress_smp2_two_disks_and_rng(guest_image, models, machines, tmp_path):
    """Two vCPUs, two disks and the rng busy at once: every block written reads back, on the host too."""
    disks = [lh.make_disk(str(tmp_path / ("s%d.img" % i)), 32) for i in range(2)]
    m = machines(img=guest_image, test="stress", smp=2,
                 devices=[lh.Device("rng")] + [lh.Device("blk", d) for d in disks])
    run_guest(m, "stress")
    lines = m.values("STRESS disk=")
    assert len(lines) == 2, lines
    for line in lines:
        name, rest = line.split(" ", 1)
        f = dict(kv.split("=") for kv in rest.split())
        size, rounds = int(f["size"]), int(f["rounds"])
        # Which image is which guest disk: the one whose first round matches.
        found = 0
        for d in disks:
            with open(d, "rb") as img:
                regions = [hashlib.sha256(img.read(size)).hexdigest() for _ in range(rounds)]
            if regions[0] == f["pattern"]:
                assert regions == [f["pattern"]] * rounds, "%s: a round differs on the host" % name
                found += 1
        assert found == 1, "%s: its pattern is on %d host images" % (name, found)


# coreio-vm's lines for a range's death and its next instance, per transport (src/vm/mpqemu.c, src/vm/vfu.c).
DEAD_LINE = {MPQEMU: r"mpqemu device 0: its client went away: instance 1 is dead",
             VFIO_USER: r"vfio-user device 0: its client went away: instance 1 is dead"}
SERVING_LINE = {MPQEMU: r"mpqemu device 0: serving instance 2 ",
                VFIO_USER: r"vfio-user device 0: serving instance 2 "}


# QEMU 11.1.3 aborts when it finalizes an unplugged vfio-user-pci that has an MSI-X capability
# (hw/vfio-user/pci.c vfio_user_msix_teardown() runs after QOM unparented the BAR regions:
# system/memory.c:2617 memory_region_del_subregion assertion). So a hotplug=on range offers INTx
# only by default (msix=on overrides; docs/qemu-vfio-user.md), and this test, whose disk is
# hotplug=on as coreio-qemu's default, unplugs and re-plugs it without that abort.


@pytest.mark.parametrize("transport", [VFIO_USER, MPQEMU])
def test_blk_model_killed_then_restarted(guest_image, models, machines, tmp_path, record_property,
                                         transport):
    """Killing the blk model while the guest idles unplugs the disk: I/O errors, not a hang; a new model plugs a fresh disk that works."""
    disk = lh.make_disk(str(tmp_path / "io.img"), 16)
    m = machines(img=guest_image, test="io-error", devices=[lh.Device("blk", disk)],
                 transport=transport)
    check_transport(m)
    m.wait_line(r"^IOERR READY kill", BOOT_TIMEOUT)
    n = len(m.err_lines)
    m.kill_model(0)
    m.wait_err(r"released range 0", 20, start=n)
    m.send("go")
    # coreio-vm declares the device dead, coreio-qemu unplugs it, the guest lets go.
    m.wait_err(DEAD_LINE[transport], 10, start=n)
    _, unplugged = m.wait_err(r"^coreio-qemu: G0: unplugged coreio0 \(([0-9.]+) s", 30, start=n)
    _, r = m.wait_line(r"^IOERR after-kill (\w+)", 60)
    assert r.group(1) == "error", "a read with the model gone: %s\n%s" % (r.group(1), m.tail())
    (gone,) = m.values("IOERR gone ")
    record_property("unplug_s", float(unplugged.group(1)))
    record_property("disk_gone_s", float(gone))
    m.wait_line(r"^IOERR READY restart", 60)
    n = len(m.err_lines)
    m.restart_model(0)
    m.wait_err(r"claimed range 0", 20, start=n)
    m.wait_err(r"^coreio-qemu: G0: plugged coreio0-2 ", 30, start=n)
    m.wait_err(SERVING_LINE[transport], 10, start=n)
    m.send("go")
    checks = run_guest(m, "io-error")
    (back,) = m.values("IOERR back ")
    record_property("disk_back_s", float(back.split()[0]))
    print("\n".join(checks))
    # The host's view: a clean file system with the files written before the kill
    # and the one written through the new device.
    if shutil.which("e2fsck"):
        r = subprocess.run(["e2fsck", "-fn", disk], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        assert r.returncode == 0, r.stdout.decode(errors="replace")
    if shutil.which("debugfs"):
        for name, size in (("one.txt", 262144), ("two.txt", 262144), ("three.txt", 131072)):
            assert debugfs_cat(disk, name) == gen(name, size), name


def interrupt_lines(m, when):
    """The guest's 'IRQ before|after' lines (its /proc/interrupts virtio lines): {name: (count, line)}."""
    out = {}
    for v in m.values("IRQ %s " % when):
        f = v.split()
        counts = []
        for x in f[1:]:
            if not x.isdigit():
                break
            counts.append(int(x))
        out[f[-1]] = (sum(counts), v)
    return out


IRQ_READS = 200


@pytest.mark.parametrize("mode", ["msix", "intx"])
def test_interrupts_arrive_without_irqpoll(guest_image, models, machines, tmp_path, mode,
                                           record_property):
    """vfio-user under TCG: the blk and rng interrupts reach the guest (MSI-X, or INTx with pci=nomsi), no irqpoll, I/O completes between timer ticks.

    The guest (tests/linux/irq.sh) prints /proc/cmdline, each device's
    interrupt mode (its PCI function's msi_irqs), the virtio lines of
    /proc/interrupts before and after IRQ_READS synchronous 4 KiB reads, a
    4 MiB read and 16 KiB of hwrng, and the local timer interrupts (LOC)
    during the reads: with completions found only at timer ticks (mpqemu's
    irqpoll) every read would need a tick of its own.
    """
    disk = lh.make_disk(str(tmp_path / "irq.img"), 16)
    # MSI-X needs hotplug=off (hotplug=on ranges offer INTx only: see above).
    port = "0,hotplug=off" if mode == "msix" else "0"
    m = machines(img=guest_image, test="irq",
                 devices=[lh.Device("blk", disk, port=port), lh.Device("rng", port=port)],
                 extra_append="coreio.n=%d%s" % (IRQ_READS, " pci=nomsi" if mode == "intx" else ""))
    run_guest(m, "irq")
    (cmdline,) = m.values("IRQ cmdline ")
    assert "irqpoll" not in cmdline.split(), cmdline
    drivers = {}
    for v in m.values("coreio-init: virtio"):
        r = re.match(r"(\d+) device \S+ vendor \S+ driver (\S+)", v)
        if r:
            drivers[r.group(2)] = "virtio" + r.group(1)
    assert set(drivers) >= {"virtio_blk", "virtio_rng"}, drivers
    modes = {v.split()[0]: v for v in m.values("IRQ mode ")}
    for dev in drivers.values():
        line = modes.get(dev, "")
        if mode == "msix":
            assert ":msix" in line and ":msi " not in line + " ", "%s: %s" % (dev, line)
        else:
            assert line.endswith(" intx"), "%s: %s" % (dev, line)
    before, after = interrupt_lines(m, "before"), interrupt_lines(m, "after")
    rose = {k: after[k][0] - before.get(k, (0, ""))[0] for k in after}
    print("interrupt counts that rose: %s" % rose)
    for drv, dev in drivers.items():
        mine = [k for k in after if k == dev or k.startswith(dev + "-")]
        assert mine, "no /proc/interrupts line of %s (%s)\n%s" % (dev, drv, m.tail())
        for k in mine:
            line = after[k][1]
            if mode == "msix":
                assert "PCI-MSI" in line and "IO-APIC" not in line, line
            else:
                assert "IO-APIC" in line and "MSI" not in line, line
        got = sum(rose[k] for k in mine)
        # One completion interrupt per synchronous read at least (plus the 4 MiB read's).
        want = IRQ_READS if drv == "virtio_blk" else 1
        assert got >= want, "%s (%s): %d interrupts during the I/O, wanted >= %d\n%s" % (
            dev, drv, got, want, "\n".join(after[k][1] for k in mine))
    (reads,) = m.values("IRQ read4k ")
    f = dict(kv.split("=") for kv in reads.split())
    n, us, ticks = int(f["n"]), int(f["us"]), int(f["ticks"])
    record_property("read4k_ms", round(us / 1000.0 / n, 3))
    record_property("timer_ticks_per_read", round(ticks / n, 3))
    print("%s: %d reads in %d us (%.3f ms each; a 250 Hz tick is 4 ms), %d timer interrupts"
          % (mode, n, us, us / 1000.0 / n, ticks))
    # Fewer timer interrupts than reads: completions did not wait for ticks.
    assert ticks < n, "%d timer interrupts during %d reads: completions wait for ticks?" % (ticks, n)
    # coreio-vm's own count of what it signalled (its statistics when it ends).
    _, st = m.wait_err(r"vfio-user device 0: connections=.* intx_signals=(\d+) msix_signals=(\d+)",
                       10)
    intx, msix = int(st.group(1)), int(st.group(2))
    if mode == "msix":
        assert msix >= IRQ_READS, st.group(0)
    else:
        assert intx >= IRQ_READS and msix == 0, st.group(0)


def test_dma_through_messages(guest_image, models, machines, tmp_path):
    """Guest RAM that QEMU cannot share (plain memory-backend-ram, no fd): DMA_MAP comes without fds and the model's DMA must go through DMA_READ/DMA_WRITE messages.

    The blk-write guest test, then e2fsck and the files on the host. QEMU's
    -machine memory-backend= given again after coreio-qemu's overrides its
    shared memfd (which stays unused).
    """
    disk = lh.make_disk(str(tmp_path / "msg.img"), 64)
    m = machines(img=guest_image, test="blk-write", devices=[lh.Device("blk", disk)],
                 qemu_args=["-object", "memory-backend-ram,id=coreio-noshare,size=256M",
                            "-machine", "memory-backend=coreio-noshare"])
    check_transport(m)
    # coreio-vm says it sends DMA_READ/DMA_WRITE for this window (docs/coreio-vm.md, "DMA").
    # QEMU waits for a BAR read's answer holding its big lock and answers DMA_READ/DMA_WRITE
    # only under that lock: the model must keep answering reads while its DMA waits
    # (COREIO_DMA_SERVE in the virtio library), or this deadlocks and the writes are lost.
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:
        with m.cond:
            nofd = [l for l in m.err_lines
                    if re.search(r"DMA_MAP 0x0\+\S+ without an fd.*DMA_READ/DMA_WRITE", l)]
        if nofd:
            break
        assert time.monotonic() < deadline and m.p.poll() is None, (
            "QEMU shared guest RAM without an fd, but coreio-vm never said so\n" + m.tail())
        time.sleep(0.2)
    run_guest(m, "blk-write")
    written = sums(m)
    for name, size in FILES.items():
        assert written.get(name) == hashlib.sha256(gen(name, size)).hexdigest(), name
    # coreio-vm's counters at exit: the data went through messages, and none failed.
    stats = [l for l in m.err_lines if "dma_msgs=" in l]
    print("\n".join(stats))
    msgs = sum(int(x) for l in stats for x in re.findall(r"dma_msgs=(\d+)", l))
    failed = sum(int(x) for l in stats for x in re.findall(r"dma_failed=(\d+)", l))
    assert msgs >= 1000 and failed == 0, "\n".join(stats)
    if shutil.which("e2fsck"):
        r = subprocess.run(["e2fsck", "-fn", disk], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        assert r.returncode == 0, r.stdout.decode(errors="replace")


def test_guest_scripts_with_qemu_devices(guest_image, machines, tmp_path):
    """The guest's stress script passes with QEMU's own virtio devices (tells CoreIO faults from script faults)."""
    disks = [lh.make_disk(str(tmp_path / ("q%d.img" % i)), 32) for i in range(2)]
    m = machines("qemu", img=guest_image, test="stress", disks=disks, rng=True, smp=2)
    run_guest(m, "stress")
    assert re.search(r"vda", " ".join(m.values("STRESS disk=")))
