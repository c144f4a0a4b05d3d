"""coreio-virtio-blk over shared memory (port=unix:PATH,shm=on): file data goes straight between the image and guest memory (pread/pwrite on the shared map), checked with COREIO_VIRTIO_STATS=1's "file I/O" line."""

import os
import re
import signal
import struct

import pytest

from test_virtio import (BASE, BLK, BLK_S_IOERR, BLK_S_OK, BLK_T_IN, BLK_T_OUT, IRQ, Blk,
                         make_image)
from virtio_driver import VirtioDriver

# Shared-memory DMA (maps reference-counted across threads): also run under TSan.
pytestmark = pytest.mark.concurrency

STATS = re.compile(r"file I/O: (\d+) direct transfers \((\d+) bytes, no copy\), (\d+) bytes "
                   r"through a buffer")


def start_blk(env, kind, img, shm):
    """coreio-vm with one range on a UNIX socket (shm on or off) and the blk model with stats."""
    size = 0x4000 if kind == "pci" else 0x1000
    port = "unix:%s" % (env.tmp_path / "blk.sock")
    vm = env.vm("%#x,size=%#x,irq=%d,port=%s,shm=%s" % (BASE, size, IRQ, port,
                                                         "on" if shm else "off"))
    p = env.proc(BLK, "--transport", kind, "--image", str(img), vm.target(0),
                 env={"COREIO_VIRTIO_STATS": "1"})
    vm.wait_claim(0)
    vm.ok("irq_intercept_in ioapic")
    return vm, VirtioDriver(vm, kind, BASE), p


def file_stats(p):
    """End the model with SIGTERM; return its (direct transfers, direct bytes, buffered bytes)."""
    p.p.send_signal(signal.SIGTERM)
    p.wait_exit(10)
    (m,) = p.wait_stderr(STATS.pattern, timeout=5)
    return tuple(int(g) for g in m.groups())


def scattered_read(drv, vq, sector, pieces):
    """An IN request whose data buffers are apart in guest memory; returns (status, ulen, data)."""
    hdr = drv.buf(16, struct.pack("<IIQ", BLK_T_IN, 0, sector))
    bufs = [(hdr, 16, False)]
    addrs = []
    for n in pieces:
        drv.buf(64)  # a gap: no two data buffers adjacent
        a = drv.buf(n)
        addrs.append((a, n))
        bufs.append((a, n, True))
    st = drv.buf(1, b"\xee")
    bufs.append((st, 1, True))
    head = vq.add(bufs)
    drv.kick(0)
    [(uid, ulen)] = vq.wait_used()
    assert uid == head
    drv.t.take_isr()
    data = b"".join(drv.mem.read(a, n) for a, n in addrs)
    return drv.mem.read(st, 1)[0], ulen, data


def scattered_write(drv, vq, sector, chunks):
    """An OUT request whose data buffers are apart in guest memory; returns the status."""
    hdr = drv.buf(16, struct.pack("<IIQ", BLK_T_OUT, 0, sector))
    bufs = [(hdr, 16, False)]
    for c in chunks:
        drv.buf(64)
        bufs.append((drv.buf(len(c), c), len(c), False))
    st = drv.buf(1, b"\xee")
    bufs.append((st, 1, True))
    head = vq.add(bufs)
    drv.kick(0)
    [(uid, _)] = vq.wait_used()
    assert uid == head
    drv.t.take_isr()
    return drv.mem.read(st, 1)[0]


@pytest.mark.parametrize("kind", ["pci", "mmio"])
@pytest.mark.parametrize("shm", [True, False], ids=["shm", "socket"])
def test_blk_file_io_direct_with_shm(env, kind, shm, tmp_path):
    img, orig = make_image(tmp_path, sectors=256)
    vm, drv, p = start_blk(env, kind, img, shm)
    # --event-idx auto: offered with shared-memory DMA only (the test driver does not take it).
    assert bool(drv.t.device_features() & (1 << 29)) == shm
    drv.init(qsize=16)
    blk = Blk(drv)
    vq = drv.queues[0]
    disk = bytearray(orig)

    st, ulen, data = blk.request(BLK_T_IN, 3, in_len=8192)
    assert (st, ulen) == (BLK_S_OK, 8193)
    assert data == orig[3 * 512:3 * 512 + 8192]
    new = os.urandom(4096)
    assert blk.request(BLK_T_OUT, 20, out=new)[:2] == (BLK_S_OK, 1)
    disk[20 * 512:28 * 512] = new
    assert img.read_bytes() == bytes(disk)

    # Scattered buffers: each run is its own pread/pwrite.
    st, ulen, data = scattered_read(drv, vq, 40, [512, 1536, 2048])
    assert (st, ulen) == (BLK_S_OK, 4097)
    assert data == bytes(disk[40 * 512:48 * 512])
    chunks = [os.urandom(1024), os.urandom(512), os.urandom(2560)]
    assert scattered_write(drv, vq, 60, chunks) == BLK_S_OK
    disk[60 * 512:68 * 512] = b"".join(chunks)
    assert img.read_bytes() == bytes(disk)
    st, _, data = blk.request(BLK_T_IN, 60, in_len=4096)
    assert st == BLK_S_OK and data == bytes(disk[60 * 512:68 * 512])

    # A data buffer outside guest RAM: not in the map, the socket refuses it: IOERR.
    hdr = drv.buf(16, struct.pack("<IIQ", BLK_T_IN, 0, 0))
    stb = drv.buf(1, b"\xee")
    head = vq.add([(hdr, 16, False), (0xF0000000, 512, True), (stb, 1, True)])
    drv.kick(0)
    assert vq.wait_used() == [(head, 1)]
    assert drv.mem.read(stb, 1)[0] == BLK_S_IOERR
    drv.t.take_isr()
    # The device still works after it.
    st, _, data = blk.request(BLK_T_IN, 0, in_len=512)
    assert st == BLK_S_OK and data == bytes(disk[:512])
    assert img.read_bytes() == bytes(disk)
    assert vm.alive()

    direct, direct_bytes, buffered = file_stats(p)
    # Data moved: reads 8192 + 4096 + 4096 + 512, writes 4096 + 4096.
    if shm:
        assert direct >= 8, (direct, direct_bytes, buffered)
        assert direct_bytes == 8192 + 4096 + 4096 + 512 + 4096 + 4096
        # Only the buffer outside RAM took the buffer path (its read failed in the guest).
        assert buffered <= 512
    else:
        assert (direct, direct_bytes) == (0, 0)
        # Every read through the buffer; the writes' data came along with their headers
        # (one DMA), which the model writes out itself.
        assert buffered >= 8192 + 4096 + 4096 + 512
