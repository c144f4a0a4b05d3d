"""The virtio device models (rng, blk, console) driven through coreio-vm --accel qtest by virtio_driver.py."""

import os
import socket
import struct
import subprocess
import time

import pytest

from conftest import build_path
from virtio_driver import (ACKNOWLEDGE, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, DRIVER,
                           DRIVER_OK, F_ACCESS_PLATFORM, F_EVENT_IDX, F_INDIRECT_DESC,
                           F_VERSION_1, FEATURES_OK, ISR_CONFIG, ISR_QUEUE, MMIO_MAGIC_VALUE,
                           NEEDS_RESET, VirtioDriver)

BASE = 0xD0000000
IRQ = 5
RNG = "devices/coreio-virtio-rng"
BLK = "devices/coreio-virtio-blk"
CONSOLE = "devices/coreio-virtio-console"

BLK_T_IN, BLK_T_OUT, BLK_T_FLUSH, BLK_T_GET_ID = 0, 1, 4, 8
BLK_S_OK, BLK_S_IOERR, BLK_S_UNSUPP = 0, 1, 2
BLK_F_SEG_MAX, BLK_F_RO, BLK_F_BLK_SIZE, BLK_F_FLUSH = 2, 5, 6, 9

TRANSPORTS = ["pci", "mmio"]


def start(env, kind, model, *args):
    """coreio-vm with one range for the transport, the model connected to it; returns (vm, driver, proc)."""
    size = 0x4000 if kind == "pci" else 0x1000
    vm = env.vm("%#x,size=%#x,irq=%d,port=0" % (BASE, size, IRQ))
    p = env.proc(model, "--transport", kind, *args, vm.target(0))
    vm.wait_claim(0)
    vm.ok("irq_intercept_in ioapic")
    return vm, VirtioDriver(vm, kind, BASE), p


def expect_irq(vm, action):
    assert vm.wait_irq() == (action, IRQ)


@pytest.mark.parametrize("model", [RNG, BLK, CONSOLE])
def test_help(model):
    out = subprocess.run([build_path(model), "--help"], capture_output=True, text=True,
                         timeout=10)
    assert out.returncode == 0
    assert "--transport" in out.stdout and "TARGET" in out.stdout
    bad = subprocess.run([build_path(model), "--transport", "isa", "x"], capture_output=True,
                         text=True, timeout=10)
    assert bad.returncode == 2 and "transport" in bad.stderr


@pytest.mark.parametrize("opt,offered", [(["--event-idx", "on"], True),
                                         (["--event-idx", "off"], False),
                                         (["--no-event-idx"], False)])
@pytest.mark.parametrize("model", [RNG, BLK, CONSOLE])
def test_event_idx_option(env, model, opt, offered, tmp_path):
    """--event-idx on|off|auto decides the VIRTIO_F_EVENT_IDX offer (auto: shared memory only); --help names it."""
    out = subprocess.run([build_path(model), "--help"], capture_output=True, text=True,
                         timeout=10)
    assert "--event-idx" in out.stdout and "--no-event-idx" in out.stdout
    args = []
    if model == BLK:
        img = tmp_path / "d.img"
        img.write_bytes(bytes(4096))
        args = ["--image", str(img)]
    vm, drv, _ = start(env, "pci", model, *opt, *args)
    feats = drv.t.device_features()
    assert bool(feats & (1 << F_EVENT_IDX)) == offered
    assert feats & (1 << F_VERSION_1)


def test_event_idx_bad_value():
    r = subprocess.run([build_path(RNG), "--event-idx", "maybe", "x"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 2 and "--event-idx 'maybe'" in r.stderr


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_identity_features_status(env, kind):
    vm, drv, _ = start(env, kind, RNG)
    t = drv.t
    if kind == "mmio":
        assert t.magic() == (MMIO_MAGIC_VALUE, 2, 4)
    else:
        assert t.num_queues() == 1
    offered = t.device_features()
    assert offered & (1 << F_VERSION_1)
    assert not offered & (1 << F_ACCESS_PLATFORM)
    # --event-idx auto: offered only with shared-memory DMA; this is TCP (test_event_idx_option).
    assert not offered & (1 << F_EVENT_IDX)
    assert t.queue_max(0) == 64
    assert t.queue_max(1) == 0  # no such queue

    # Without VERSION_1 the device refuses FEATURES_OK.
    st = drv.negotiate(want=0)
    assert st == ACKNOWLEDGE | DRIVER
    # A feature the device does not offer is refused too.
    st = drv.negotiate(extra=1 << F_ACCESS_PLATFORM)
    assert st == ACKNOWLEDGE | DRIVER
    # DRIVER_OK without FEATURES_OK does not stick.
    t.set_status(ACKNOWLEDGE | DRIVER | DRIVER_OK)
    assert not t.status() & DRIVER_OK
    st = drv.negotiate(want=1 << F_VERSION_1)
    assert st == ACKNOWLEDGE | DRIVER | FEATURES_OK
    # Writing 0 resets the device.
    t.set_status(0)
    assert t.status() == 0
    drv.init(qsize=8)
    t.set_status(0)
    assert t.status() == 0
    assert t.queue_ready(0) == 0
    vm.no_irq()


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_rng_bytes_and_interrupt(env, kind):
    vm, drv, p = start(env, kind, RNG)
    drv.init(qsize=8)
    vq = drv.queues[0]
    results = []
    for n in (64, 1000):
        b = drv.buf(n)
        head = vq.add([(b, n, True)])
        drv.kick(0)
        assert vq.wait_used() == [(head, n)]
        expect_irq(vm, "raise")
        assert vm.ok("irq_level %d" % IRQ) == "1"
        isr = drv.t.take_isr()
        assert isr == ISR_QUEUE
        expect_irq(vm, "lower")
        assert drv.t.take_isr() == 0
        data = drv.mem.read(b, n)
        assert len(set(data)) > 8, "not random: %s" % data[:32].hex()
        results.append(data)
    assert results[0] != results[1][:64]
    # A full ring in one kick: every buffer comes back, in order.
    bufs = [drv.buf(16) for _ in range(vq.size)]
    heads = [vq.add([(b, 16, True)]) for b in bufs]
    drv.kick(0)
    assert vq.wait_used(vq.size) == [(h, 16) for h in heads]
    assert p.alive() and vm.alive()


def make_image(tmp_path, sectors=128):
    path = tmp_path / "disk.img"
    data = bytes((i * 13 + 7) & 0xFF for i in range(sectors * 512))
    path.write_bytes(data)
    return path, data


class Blk:
    """Block requests: header, data, status byte."""

    def __init__(self, drv):
        self.drv = drv
        self.vq = drv.queues[0]

    def request(self, rtype, sector=0, out=None, in_len=0, indirect=False):
        """Send one request; return (status, used len, data read)."""
        drv = self.drv
        hdr = drv.buf(16, struct.pack("<IIQ", rtype, 0, sector))
        bufs = [(hdr, 16, False)]
        if out:
            bufs.append((drv.buf(len(out), out), len(out), False))
        din = None
        if in_len:
            din = drv.buf(in_len)
            bufs.append((din, in_len, True))
        st = drv.buf(1, b"\xee")
        bufs.append((st, 1, True))
        head = self.vq.add_indirect(bufs) if indirect else self.vq.add(bufs)
        drv.kick(0)
        [(uid, ulen)] = self.vq.wait_used()
        assert uid == head
        drv.t.take_isr()
        status = drv.mem.read(st, 1)[0]
        return status, ulen, drv.mem.read(din, in_len) if in_len else b""


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_blk_round_trip(env, kind, tmp_path):
    img, orig = make_image(tmp_path)
    vm, drv, p = start(env, kind, BLK, "--image", str(img))
    feats = drv.init(qsize=16)
    assert feats & (1 << BLK_F_FLUSH) and feats & (1 << BLK_F_BLK_SIZE)
    assert feats & (1 << BLK_F_SEG_MAX) and feats & (1 << F_INDIRECT_DESC)
    assert not feats & (1 << BLK_F_RO)
    cfg = drv.t.config(0, 24)
    assert struct.unpack_from("<Q", cfg, 0)[0] == 128
    assert struct.unpack_from("<I", cfg, 20)[0] == 512
    blk = Blk(drv)

    # Read sectors 2..3 and compare with the file.
    st, ulen, data = blk.request(BLK_T_IN, 2, in_len=1024)
    assert (st, ulen) == (BLK_S_OK, 1025)
    assert data == orig[1024:2048]

    # Write sectors 5..6, check the file on the host, read back.
    new = os.urandom(1024)
    st, ulen, _ = blk.request(BLK_T_OUT, 5, out=new)
    assert (st, ulen) == (BLK_S_OK, 1)
    disk = img.read_bytes()
    assert disk[5 * 512:7 * 512] == new
    assert disk[:5 * 512] == orig[:5 * 512] and disk[7 * 512:] == orig[7 * 512:]
    st, _, data = blk.request(BLK_T_IN, 5, in_len=1024)
    assert st == BLK_S_OK and data == new

    # The same through an indirect table.
    st, _, data = blk.request(BLK_T_IN, 5, in_len=1024, indirect=True)
    assert st == BLK_S_OK and data == new

    # Flush and GET_ID.
    assert blk.request(BLK_T_FLUSH)[:2] == (BLK_S_OK, 1)
    st, ulen, ident = blk.request(BLK_T_GET_ID, in_len=20)
    assert st == BLK_S_OK and ulen == 21
    assert ident == b"disk.img" + bytes(12)

    # Beyond the end: IOERR and nothing written.
    before = img.read_bytes()
    assert blk.request(BLK_T_OUT, 127, out=b"\x55" * 1024)[0] == BLK_S_IOERR
    assert blk.request(BLK_T_OUT, 1 << 60, out=b"\x55" * 512)[0] == BLK_S_IOERR
    assert blk.request(BLK_T_IN, 128, in_len=512)[0] == BLK_S_IOERR
    assert blk.request(BLK_T_IN, 0xFFFFFFFFFFFFFFFF, in_len=512)[0] == BLK_S_IOERR
    # A length that is not a multiple of the sector size.
    assert blk.request(BLK_T_OUT, 0, out=b"\x55" * 100)[0] == BLK_S_IOERR
    assert img.read_bytes() == before
    # The last sector itself is fine.
    assert blk.request(BLK_T_IN, 127, in_len=512)[0] == BLK_S_OK

    # An unknown request type.
    assert blk.request(99)[0] == BLK_S_UNSUPP
    assert p.alive() and vm.alive()


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_blk_readonly(env, kind, tmp_path):
    img, orig = make_image(tmp_path, sectors=16)
    vm, drv, _ = start(env, kind, BLK, "--image", str(img), "--readonly", "--serial", "s" * 25)
    feats = drv.init(qsize=8)
    assert feats & (1 << BLK_F_RO)
    blk = Blk(drv)
    assert blk.request(BLK_T_OUT, 0, out=b"\x11" * 512)[0] == BLK_S_IOERR
    assert img.read_bytes() == orig
    st, _, data = blk.request(BLK_T_IN, 1, in_len=512)
    assert st == BLK_S_OK and data == orig[512:1024]
    st, _, ident = blk.request(BLK_T_GET_ID, in_len=20)
    assert st == BLK_S_OK and ident == b"s" * 20


def blk_bad_data_addr(drv, vq):
    """A data buffer outside guest RAM: the request fails, the ring is fine."""
    hdr = drv.buf(16, struct.pack("<IIQ", BLK_T_IN, 0, 0))
    st = drv.buf(1, b"\xee")
    head = vq.add([(hdr, 16, False), (0xF0000000, 512, True), (st, 1, True)])
    drv.kick(0)
    assert vq.wait_used() == [(head, 1)]
    assert drv.mem.read(st, 1)[0] == BLK_S_IOERR
    drv.t.take_isr()
    return False


def head_out_of_range(drv, vq):
    vq.publish(vq.size + 3)
    return True


def next_out_of_range(drv, vq):
    b = drv.buf(16)
    vq.write_desc(0, b, 16, DESC_F_NEXT, 0)
    vq.write_desc(1, b, 16, DESC_F_WRITE | DESC_F_NEXT, 0x4000)
    vq.publish(0)
    return True


def loop(drv, vq):
    b = drv.buf(16)
    vq.write_desc(0, b, 16, DESC_F_WRITE | DESC_F_NEXT, 1)
    vq.write_desc(1, b, 16, DESC_F_WRITE | DESC_F_NEXT, 0)
    vq.publish(0)
    return True


def avail_jump(drv, vq):
    b = drv.buf(16)
    vq.write_desc(0, b, 16, DESC_F_WRITE, 0)
    vq.publish(0, count=vq.size + 1)
    return True


def writable_then_readable(drv, vq):
    b = drv.buf(16)
    vq.write_desc(0, b, 16, DESC_F_WRITE | DESC_F_NEXT, 1)
    vq.write_desc(1, b, 16, 0, 0)
    vq.publish(0)
    return True


def indirect_loop(drv, vq):
    b = drv.buf(16)
    table = drv.mem.alloc(32, 16)
    drv.mem.write(table, struct.pack("<QIHH", b, 16, DESC_F_WRITE | DESC_F_NEXT, 1) +
                  struct.pack("<QIHH", b, 16, DESC_F_WRITE | DESC_F_NEXT, 0))
    vq.write_desc(0, table, 32, DESC_F_INDIRECT, 0)
    vq.publish(0)
    return True


def indirect_bad_len(drv, vq):
    vq.write_desc(0, drv.buf(16), 24, DESC_F_INDIRECT, 0)
    vq.publish(0)
    return True


def huge_length(drv, vq):
    vq.write_desc(0, 0x1000, 0xFFFFFFFF, DESC_F_WRITE | DESC_F_NEXT, 1)
    vq.write_desc(1, 0x1000, 0xFFFFFFFF, DESC_F_WRITE, 0)
    vq.publish(0)
    return True


def addr_wraps(drv, vq):
    vq.write_desc(0, 0xFFFFFFFFFFFFFF00, 0x200, DESC_F_WRITE, 0)
    vq.publish(0)
    return True


BAD = [blk_bad_data_addr, head_out_of_range, next_out_of_range, loop, avail_jump,
       writable_then_readable, indirect_loop, indirect_bad_len, huge_length, addr_wraps]


@pytest.mark.parametrize("kind", TRANSPORTS)
@pytest.mark.parametrize("bad", BAD, ids=[f.__name__ for f in BAD])
def test_blk_malformed(env, kind, bad, tmp_path):
    img, orig = make_image(tmp_path, sectors=16)
    vm, drv, p = start(env, kind, BLK, "--image", str(img))
    drv.init(qsize=8)
    vq = drv.queues[0]
    if bad(drv, vq):
        drv.kick(0)
        st = drv.wait_status(NEEDS_RESET)
        assert st & DRIVER_OK
        # NEEDS_RESET comes with a configuration change interrupt.
        expect_irq(vm, "raise")
        assert drv.t.take_isr() & ISR_CONFIG
        expect_irq(vm, "lower")
        vq.no_used(0.1)
        # Further kicks are ignored until the reset.
        drv.kick(0)
        vq.no_used(0.2)
    assert p.alive() and vm.alive()
    vm.stats()
    # After a reset the device works again.
    drv.t.set_status(0)
    assert drv.t.status() == 0
    drv.init(qsize=8)
    blk = Blk(drv)
    st, _, data = blk.request(BLK_T_IN, 3, in_len=512)
    assert st == BLK_S_OK and data == orig[3 * 512:4 * 512]
    assert img.read_bytes() == orig


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_ring_outside_ram(env, kind):
    vm, drv, p = start(env, kind, RNG)
    st = drv.negotiate()
    assert st & FEATURES_OK
    drv.t.setup_queue(0, 8, 0xF0000000, 0xF0001000, 0xF0002000)
    drv.t.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK)
    drv.kick(0)
    drv.wait_status(NEEDS_RESET)
    expect_irq(vm, "raise")
    assert drv.t.take_isr() == ISR_CONFIG
    expect_irq(vm, "lower")
    # A queue with a misaligned ring is refused when enabled.
    drv.negotiate()
    drv.t.setup_queue(0, 8, 0x100008, 0x101000, 0x102000)
    assert drv.t.queue_ready(0) == 0
    assert drv.t.status() & NEEDS_RESET
    # So is a size that is not a power of two.
    drv.negotiate()
    drv.t.setup_queue(0, 6, 0x100000, 0x101000, 0x102000)
    assert drv.t.queue_ready(0) == 0
    assert p.alive() and vm.alive()
    assert vm.stats()["dma_faults"] >= 1


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_console_stdio(env, kind):
    vm, drv, p = start(env, kind, CONSOLE)
    drv.init(nqueues=2, qsize=8)
    rxq, txq = drv.queues[0], drv.queues[1]
    # Output: the transmit queue's bytes appear on the model's stdout.
    msg = b"hello from the guest over virtio\n"
    head = txq.add([(drv.buf(len(msg), msg), len(msg), False)])
    drv.kick(1)
    assert txq.wait_used() == [(head, 0)]
    p.wait_stdout(r"^hello from the guest over virtio$")
    expect_irq(vm, "raise")
    drv.t.take_isr()
    expect_irq(vm, "lower")
    # Input typed before a buffer exists waits; then lands in the guest's buffer.
    p.send("typed line")
    time.sleep(0.2)
    rx = drv.buf(64)
    head = rxq.add([(rx, 64, True)])
    drv.kick(0)
    [(uid, n)] = rxq.wait_used()
    assert uid == head and drv.mem.read(rx, n) == b"typed line\n"
    # With a buffer waiting, input goes straight in (split over small buffers).
    a, b = drv.buf(4), drv.buf(64)
    rxq.add([(a, 4, True)])
    rxq.add([(b, 64, True)])
    drv.kick(0)
    p.send("abcdefg")
    got = rxq.wait_used(2)
    assert [n for _, n in got] == [4, 4]
    assert drv.mem.read(a, 4) + drv.mem.read(b, 4) == b"abcdefg\n"
    assert p.alive() and vm.alive()


def test_console_socket(env, tmp_path):
    path = str(tmp_path / "con.sock")
    vm, drv, p = start(env, "mmio", CONSOLE, "--socket", path)
    p.wait_stderr(r"listening on unix:")
    drv.init(nqueues=2, qsize=8)
    rxq, txq = drv.queues[0], drv.queues[1]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(path)
        rx = drv.buf(32)
        head = rxq.add([(rx, 32, True)])
        drv.kick(0)
        s.sendall(b"ping")
        [(uid, n)] = rxq.wait_used()
        assert uid == head and drv.mem.read(rx, n) == b"ping"
        msg = b"pong!"
        txq.add([(drv.buf(5, msg), 5, False)])
        drv.kick(1)
        txq.wait_used()
        got = b""
        while len(got) < 5:
            chunk = s.recv(16)
            assert chunk
            got += chunk
        assert got == msg
    finally:
        s.close()
    assert p.alive() and vm.alive()


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_vm_reset_resets_device(env, kind):
    vm, drv, p = start(env, kind, RNG)
    drv.init(qsize=8)
    vm.ok("reset")
    deadline = time.monotonic() + 10
    while drv.t.status() != 0:
        assert time.monotonic() < deadline, "device status not 0 after a VM reset"
        time.sleep(0.05)
    drv.init(qsize=8)
    vq = drv.queues[0]
    b = drv.buf(32)
    head = vq.add([(b, 32, True)])
    drv.kick(0)
    assert vq.wait_used() == [(head, 32)]
    assert p.alive()
