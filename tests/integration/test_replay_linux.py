"""A Linux boot recorded through scripts/coreio-qemu --record, replayed against its models (coreio-replay --against-model) and decoded by tshark.

One TCG boot of the test guest (coreio.test=demo, coreio.batch=1: 32 bytes
from /dev/hwrng, mke2fs and a 1 MiB file on the disk, power off) with
coreio-virtio-rng --seed 42 and coreio-virtio-blk on a copy of a disk image,
recorded by coreio-vm. Then, with no VM, no guest and no QEMU:
- the same models (the same seed, a fresh copy of the original image): no
  divergence, exit 0, and the replayed disk ends byte for byte as the
  recorded one;
- another seed: divergence at the first entropy the rng model writes (found
  in the recording: the first LWRITE carrying seed 42's splitmix64 bytes);
- one byte changed in the image at a sector the guest reads: divergence at
  the DMA piece of the first read of that sector (found by decoding the
  virtio-blk requests in the recording);
- tshark with wireshark/coreio.lua decodes every record, nothing malformed.
"""

import os
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import BUILD_DIR, SANITIZER, build_path, scaled
import linux_harness as lh

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from replaylib import recording  # noqa: E402

REPLAY = os.path.join(ROOT, "scripts", "coreio-replay")
PLUGIN = os.path.join(ROOT, "wireshark", "coreio.lua")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

SEED = 42
OTHER_SEED = 43
SERIAL = "coreio-disk"  # the blk model's GET_ID string, fixed whatever the image's name
DISK_MIB = 8
MARK_SECTOR = 1  # filled with a pattern in the original image; the changed byte is here
MARK_BYTE = 0x2A  # offset of the changed byte in MARK_SECTOR
SECTOR = 512
TEST = "demo"
TEST_TIMEOUT = 240

OP_LREAD, OP_LWRITE = 0x21, 0x25
BLK_T_IN = 0


def splitmix64_stream(seed, n):
    """The first n bytes coreio-virtio-rng --seed serves (its --help: splitmix64, 8 LE bytes each)."""
    m = (1 << 64) - 1
    s, out = seed, bytearray()
    while len(out) < n:
        s = (s + 0x9E3779B97F4A7C15) & m
        z = s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
        out += (z ^ (z >> 31)).to_bytes(8, "little")
    return bytes(out[:n])


def original_image(path):
    """The disk before the boot: zeroes, except MARK_SECTOR, which holds a pattern."""
    lh.make_disk(path, DISK_MIB)
    pattern = (b"coreio sector %d " % MARK_SECTOR) * SECTOR
    with open(path, "r+b") as f:
        f.seek(MARK_SECTOR * SECTOR)
        f.write(pattern[:SECTOR])
    return path


def rng_argv(seed, target):
    return [build_path("devices/coreio-virtio-rng"), "--transport", "pci", "--seed", str(seed),
            target]


def blk_argv(image, target):
    return [build_path("devices/coreio-virtio-blk"), "--transport", "pci", "--serial", SERIAL,
            "--image", image, target]


@pytest.fixture(scope="module")
def guest_image():
    """The kernel and initramfs (as in test_linux.py), and a transport coreio-qemu can record.

    The recorded boot runs on vfio-user, so the root's QEMU 11.1 is all it
    needs (no system QEMU); vfio_user_missing names what is missing.
    """
    if not lh.coreio_qemu_available():
        pytest.skip("scripts/coreio-qemu is missing")
    why = lh.vfio_user_missing(BUILD_DIR)
    if why:
        pytest.skip(why)
    out = lh.image_dir(BUILD_DIR)
    ok, log = lh.build_image(out)
    if not ok:
        pytest.skip("cannot build the Linux guest image with scripts/build-guest-image.sh %s:\n%s"
                    % (out, log[-2000:]))
    return out


class Boot:
    """What the recorded boot left: the recording, its records, the images."""

    def __init__(self, workdir, path, original, disk, records, interfaces, console):
        self.workdir = workdir
        self.path = path
        self.original = original
        self.disk = disk
        self.records = records
        self.interfaces = interfaces
        self.console = console


@pytest.fixture(scope="module")
def boot(guest_image, tmp_path_factory):
    """One recorded boot (coreio-qemu --record) with the seeded rng and the blk model."""
    return record_boot(guest_image, str(tmp_path_factory.mktemp("replay-linux")))


def record_boot(guest_image, work):
    """Boots the guest under coreio-qemu --record in directory work; returns a Boot."""
    os.makedirs(work, exist_ok=True)
    original = original_image(os.path.join(work, "original.img"))
    disk = os.path.join(work, "disk.img")
    shutil.copyfile(original, disk)
    path = os.path.join(work, "boot.pcapng")
    argv = [lh.COREIO_QEMU, "--kernel", os.path.join(guest_image, "vmlinuz"),
            "--initrd", os.path.join(guest_image, "initramfs.cpio.gz"),
            "--append", "loglevel=4 coreio.test=%s coreio.batch=1" % TEST,
            "--accel", "auto", "--mem", "256M", "--timeout", str(TEST_TIMEOUT),
            "--coreio-vm", build_path("src/vm/coreio-vm"), "--transport", "vfio-user",
            "--record", path,
            "--vmmio", "pci,size=16K,pci=1044,profile=virtio,port=0",
            "--run", "exec %s 1>&2" % " ".join(rng_argv(SEED, "{G0}")),
            "--vmmio", "pci,size=16K,pci=1042,profile=virtio,port=0",
            "--run", "exec %s 1>&2" % " ".join(blk_argv(disk, "{G1}"))]
    m = lh.Console("coreio-qemu", argv, env=dict(os.environ, COREIO_BUILD_DIR=BUILD_DIR))
    try:
        verdict, checks = m.result(TEST, scaled(TEST_TIMEOUT))
        assert verdict == "PASS", "guest test %s failed:\n%s\n%s" % (TEST, "\n".join(checks),
                                                                     m.tail())
        assert m.wait_exit(scaled(60)) == 0, m.tail()
        m.wait_err(r"coreio-vm: --record %s: \d+ records" % path, 10)
        bad = [l for l in m.err_lines if SANITIZER.search(l)]
        assert not bad, "sanitizer reports:\n%s" % "\n".join(bad)
        console = list(m.lines)
    finally:
        m.stop()
    interfaces, records = recording.read(path)
    print("recorded %s: %d records" % (path, len(records)))
    return Boot(work, path, original, disk, records, interfaces, console)


def conns_of_range(b, g):
    """The recorded connections (control, DMA) of the model of range g, by their connect events."""
    conns = [r.conn for r in b.records
             if r.kind == recording.KIND_EVENT and r.event_name == "connect"
             and any(x.split(":")[1] == str(g) for x in r.event_fields()["rids"].split(","))]
    assert len(conns) == 2, "range %d: connections %r" % (g, conns)
    return conns


def lwrite_data(r):
    """The data of a client->vm LWRITE record."""
    w = r.words()
    return r.body[24:24 + (w[1] >> 32)]


def is_op(r, kind, op, conn):
    return r.kind == kind and r.conn == conn and (r.words()[1] & 0xFF) == op


def first_entropy_seq(b):
    """seq of the rng model's first entropy write: an LWRITE carrying seed SEED's first bytes."""
    dma = conns_of_range(b, 0)[1]
    for r in b.records:
        if is_op(r, recording.KIND_FROM_CLIENT, OP_LWRITE, dma):
            data = lwrite_data(r)
            if len(data) >= 16 and data == splitmix64_stream(SEED, len(data)):
                return r.seq
    raise AssertionError("no LWRITE with the seed-%d stream in the recording" % SEED)


def first_read_of(b, sector, offset):
    """(seq, byte) of the blk model's DMA piece that first carried byte offset of sector to the guest.

    Decodes the recording: a 16-byte LREAD answer of the blk model's DMA
    connection holding a virtio-blk IN header (type 0, sector S) is followed
    by the model's data LWRITEs (the request's bytes in order) and its 1-byte
    status LWRITE.
    """
    dma = conns_of_range(b, 1)[1]
    recs = [r for r in b.records if r.conn == dma and r.kind != recording.KIND_EVENT]
    for i, r in enumerate(recs):
        w = r.words()
        if not (r.kind == recording.KIND_TO_CLIENT and (w[1] & 0xFF) == OP_LREAD
                and (w[1] >> 32) == 16 and len(r.body) >= 40):
            continue
        hdr = r.body[24:40]
        if int.from_bytes(hdr[0:4], "little") != BLK_T_IN:
            continue
        start = int.from_bytes(hdr[8:16], "little")
        pieces, done = [], 0
        for x in recs[i + 1:]:
            if x.kind != recording.KIND_FROM_CLIENT:
                continue
            if (x.words()[1] & 0xFF) != OP_LWRITE:
                break
            data = lwrite_data(x)
            if len(data) == 1:  # the status byte: the end of the request
                break
            pieces.append((x.seq, done, data))
            done += len(data)
        if not pieces or done % SECTOR:
            continue  # not a data read (a descriptor that looked like a header)
        want = (sector - start) * SECTOR + offset
        if start <= sector and want < done:
            for seq, at, data in pieces:
                if at <= want < at + len(data):
                    return seq, data[want - at]
    raise AssertionError("the recording has no read of sector %d" % sector)


def run_replay(b, model_cmd, timeout=120):
    """coreio-replay --against-model with one shell command starting both models; (rc, out, err)."""
    argv = [PYTHON, REPLAY, b.path, "--against-model", "--context", "3", "--verbose", "--",
            "sh", "-c", model_cmd]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=scaled(timeout))
    except subprocess.TimeoutExpired:
        # SIGTERM: coreio-replay ends the models it started; then whatever is left.
        os.killpg(p.pid, signal.SIGTERM)
        try:
            out, err = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
        raise AssertionError("coreio-replay took more than %ss:\n%s\n%s" % (timeout, out, err))
    bad = [l for l in err.splitlines() if SANITIZER.search(l)]
    assert not bad, "sanitizer reports:\n%s" % "\n".join(bad)
    return p.returncode, out, err


# How many times a replay that diverges elsewhere than the test expects is run (on
# the same recording, or on a new one for the replay without divergence); each
# failed attempt prints its report. The replay absorbs most of the models' timing
# (docs/record-replay.md, "How the replay works": reads answered from the recorded
# memory, recorded reads not made, pauses), but not all of it yet ("Limits": an
# interrupt the blk model raises once more, or not, around a reset).
ATTEMPTS = 3


def replay_until(b, make_cmd, ok):
    """Runs make_cmd(attempt)'s models under coreio-replay until ok(rc, out) or ATTEMPTS runs;
    returns the last (rc, out, err). Each attempt that was not ok is printed."""
    for attempt in range(1, ATTEMPTS + 1):
        rc, out, err = run_replay(b, make_cmd(attempt))
        if ok(rc, out):
            break
        print("attempt %d of %d: exit %d:\n%s" % (attempt, ATTEMPTS, rc, out))
    return rc, out, err


def models(seed, image):
    return "%s & exec %s" % (" ".join(rng_argv(seed, "{G0}")), " ".join(blk_argv(image, "{G1}")))


def fresh_copy(b, name, change=None):
    """A copy of the original image, with byte (offset, value) changed when change is given."""
    path = os.path.join(b.workdir, name)
    shutil.copyfile(b.original, path)
    if change:
        with open(path, "r+b") as f:
            f.seek(change[0])
            f.write(bytes([change[1]]))
    return path


def test_recording_has_both_devices(boot):
    """The recording holds the whole boot: both models' connections, entropy, disk reads and writes."""
    assert "PASS: demo: hwrng" in boot.console and "PASS: demo: disk" in boot.console
    frames = [r for r in boot.records if r.kind != recording.KIND_EVENT]
    assert len(frames) > 500
    for g in (0, 1):
        ctl, dma = conns_of_range(boot, g)
        assert any(is_op(r, recording.KIND_FROM_CLIENT, OP_LWRITE, dma) for r in boot.records)
    # The guest wrote the disk (mke2fs, the demo's files): the image changed.
    with open(boot.original, "rb") as a, open(boot.disk, "rb") as d:
        assert a.read() != d.read()
    closes = [r.event_text.split("reason=", 1)[-1] for r in boot.records
              if r.kind == recording.KIND_EVENT and r.event_name == "close"]
    # coreio-qemu --record ends coreio-vm before the models: the VM closes every connection.
    assert closes == ["closed at exit"] * 4, closes


def test_replay_against_the_same_models(boot, guest_image, tmp_path):
    """The same seed and a fresh copy of the original image: no divergence; the same disk results."""
    for attempt in range(1, ATTEMPTS + 1):
        if attempt > 1:
            boot = record_boot(guest_image, str(tmp_path / ("boot%d" % attempt)))
        image = fresh_copy(boot, "replay-same.img")
        rc, out, err = run_replay(boot, models(SEED, image))
        if rc == 0:
            break
        print("recording %d of %d: exit %d:\n%s" % (attempt, ATTEMPTS, rc, out))
    assert rc == 0, out + err
    assert "coreio-replay: OK, no divergence (against the model): %d records" % len(
        boot.records) in out, out
    assert "4 connections" in out, out
    with open(boot.disk, "rb") as a, open(image, "rb") as d:
        assert a.read() == d.read(), "the replayed disk differs from the recorded boot's"


def test_replay_against_another_seed(boot):
    """Another --seed: the divergence is the first entropy the rng model writes."""
    want = first_entropy_seq(boot)
    rc, out, err = replay_until(
        boot, lambda a: models(OTHER_SEED, fresh_copy(boot, "replay-seed-%d.img" % a)),
        lambda rc, out: rc == 1 and "DIVERGENCE at seq %d (" % want in out)
    assert rc == 1, out + err
    assert "coreio-replay: DIVERGENCE at seq %d (" % want in out, (want, out)
    assert "the frame from the model differs from the recording" in out, out
    dma = conns_of_range(boot, 0)[1]
    assert "conn %d, " % dma in out, out
    got = splitmix64_stream(OTHER_SEED, 8).hex()
    assert "received: conn %d client->vm LWRITE" % dma in out and got in out, out


def test_replay_against_a_changed_sector(boot):
    """One byte changed at a sector the guest reads: the divergence is that read's data."""
    offset = MARK_SECTOR * SECTOR + MARK_BYTE
    want, byte = first_read_of(boot, MARK_SECTOR, MARK_BYTE)
    with open(boot.original, "rb") as f:
        f.seek(offset)
        assert f.read(1)[0] == byte, "decoding the recording found another byte"
    rc, out, err = replay_until(
        boot, lambda a: models(SEED, fresh_copy(boot, "replay-changed-%d.img" % a,
                                                (offset, byte ^ 0xFF))),
        lambda rc, out: rc == 1 and "DIVERGENCE at seq %d (" % want in out)
    assert rc == 1, out + err
    assert "coreio-replay: DIVERGENCE at seq %d (" % want in out, (want, out)
    assert "the frame from the model differs from the recording" in out, out
    assert "conn %d, " % conns_of_range(boot, 1)[1] in out, out


def test_tshark_decodes_the_boot(boot):
    """tshark with the CoreIO plugin: every record decoded, every frame a coreio PDU, none malformed."""
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed (apt-get install tshark; scripts/install-deps.sh)")
    base = [tshark, "-X", "lua_script:" + PLUGIN, "-r", boot.path]

    def run(*args):
        r = subprocess.run(base + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=scaled(120))
        lua = [l for l in r.stderr.splitlines() if "lua" in l.lower()]
        assert r.returncode == 0 and not lua, "tshark: exit %d\n%s" % (r.returncode, r.stderr)
        return r.stdout

    bad = run("-Y", "_ws.malformed || _ws.expert.severity >= error", "-T", "fields",
              "-e", "frame.number").split()
    assert bad == [], "malformed or erroneous packets: %s" % bad[:20]
    rows = [l.split("\t") for l in run("-T", "fields", "-E", "separator=/t", "-e", "coreiorec.seq",
                                       "-e", "coreiorec.kind", "-e", "coreiorec.conn",
                                       "-e", "coreio.frame_len").splitlines()]
    assert len(rows) == len(boot.records)
    for row, r in zip(rows, boot.records):
        assert row[:3] == [str(r.seq), str(r.kind), str(r.conn)], (row, r)
        if r.kind != recording.KIND_EVENT:
            assert row[3] == str(len(r.body)), (row, r)
