"""Linux guests in QEMU whose virtio devices are CoreIO models (scripts/coreio-qemu): boot, hwrng, ext2 files, stress, a killed model."""

import hashlib
import re
import shutil
import subprocess

import pytest

from conftest import BUILD_DIR, SANITIZER, build_path
import linux_harness as lh

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
    """The kernel and initramfs (built once per session, cached across sessions)."""
    if not lh.qemu_binary():
        pytest.skip("qemu-system-x86_64 is not installed (Debian package qemu-system-x86)")
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

    def start(kind="coreio", **kw):
        if kind == "coreio":
            m = lh.CoreioMachine(BUILD_DIR, kw.pop("img"), str(tmp_path), **kw)
        else:
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


def run_guest(m, test):
    """Waits for the guest test's verdict and for the guest to power off; returns its checks."""
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


def test_boot_and_hwrng(guest_image, models, machines, record_property):
    """Linux boots to /init (boot time printed and recorded) and reads 64 KiB from the CoreIO rng."""
    m = machines(img=guest_image, test="hwrng", devices=[lh.Device("rng")])
    accel = m.accel()
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


def test_blk_model_killed_then_restarted(guest_image, models, machines, tmp_path, record_property):
    """Killing the blk model while the guest idles unplugs the disk: I/O errors, not a hang; a new model plugs a fresh disk that works."""
    disk = lh.make_disk(str(tmp_path / "io.img"), 16)
    m = machines(img=guest_image, test="io-error", devices=[lh.Device("blk", disk)])
    m.wait_line(r"^IOERR READY kill", BOOT_TIMEOUT)
    n = len(m.err_lines)
    m.kill_model(0)
    m.wait_err(r"released range 0", 20, start=n)
    m.send("go")
    # coreio-vm declares the device dead, coreio-qemu unplugs it, the guest lets go.
    m.wait_err(r"mpqemu device 0: its client went away: instance 1 is dead", 10, start=n)
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
    m.wait_err(r"mpqemu device 0: serving instance 2 ", 5, start=n)
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


def test_guest_scripts_with_qemu_devices(guest_image, machines, tmp_path):
    """The guest's stress script passes with QEMU's own virtio devices (tells CoreIO faults from script faults)."""
    disks = [lh.make_disk(str(tmp_path / ("q%d.img" % i)), 32) for i in range(2)]
    m = machines("qemu", img=guest_image, test="stress", disks=disks, rng=True, smp=2)
    run_guest(m, "stress")
    assert re.search(r"vda", " ".join(m.values("STRESS disk=")))
