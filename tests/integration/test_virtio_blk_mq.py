"""coreio-virtio-blk with several request queues (--queues N) under coreio-vm --accel qtest: MQ, num_queues, every queue served."""

import os
import struct
import subprocess

import pytest

from conftest import build_path
from test_virtio import BLK, TRANSPORTS, make_image, start

BLK_F_MQ = 12
BLK_CFG_NUM_QUEUES = 34
BLK_T_IN, BLK_T_OUT = 0, 1
BLK_S_OK = 0


def request(drv, q, rtype, sector, out=None, in_len=0):
    """One request on queue q; returns (status, used length, data read)."""
    hdr = drv.buf(16, struct.pack("<IIQ", rtype, 0, sector))
    bufs = [(hdr, 16, False)]
    if out:
        bufs.append((drv.buf(len(out), out), len(out), False))
    din = drv.buf(in_len) if in_len else None
    if in_len:
        bufs.append((din, in_len, True))
    st = drv.buf(1, b"\xee")
    bufs.append((st, 1, True))
    vq = drv.queues[q]
    head = vq.add(bufs)
    drv.kick(q)
    [(uid, ulen)] = vq.wait_used()
    assert uid == head
    drv.t.take_isr()
    return drv.mem.read(st, 1)[0], ulen, drv.mem.read(din, in_len) if in_len else b""


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_blk_three_queues_each_served(env, kind, tmp_path):
    img, orig = make_image(tmp_path)
    vm, drv, p = start(env, kind, BLK, "--image", str(img), "--queues", "3")
    feats = drv.init(nqueues=3, qsize=16)
    assert feats & (1 << BLK_F_MQ)
    assert struct.unpack("<H", drv.t.config(BLK_CFG_NUM_QUEUES, 2))[0] == 3
    if kind == "pci":
        assert drv.t.num_queues() == 3
    assert drv.t.queue_max(3) == 0
    disk = bytearray(orig)
    for q in (2, 0, 1):
        st, ulen, data = request(drv, q, BLK_T_IN, 10 + q, in_len=1024)
        assert (st, ulen) == (BLK_S_OK, 1025), "queue %d" % q
        assert data == orig[(10 + q) * 512:(12 + q) * 512], "queue %d" % q
        new = os.urandom(512)
        assert request(drv, q, BLK_T_OUT, 40 + q, out=new)[:2] == (BLK_S_OK, 1), "queue %d" % q
        disk[(40 + q) * 512:(41 + q) * 512] = new
    assert img.read_bytes() == bytes(disk)
    # Requests on two queues before one kick each: both come back, data intact.
    vq0, vq1 = drv.queues[0], drv.queues[1]
    b0, b1 = drv.buf(512), drv.buf(512)
    s0, s1 = drv.buf(1, b"\xee"), drv.buf(1, b"\xee")
    h0 = vq0.add([(drv.buf(16, struct.pack("<IIQ", BLK_T_IN, 0, 40)), 16, False),
                  (b0, 512, True), (s0, 1, True)])
    h1 = vq1.add([(drv.buf(16, struct.pack("<IIQ", BLK_T_IN, 0, 41)), 16, False),
                  (b1, 512, True), (s1, 1, True)])
    drv.kick(1)
    drv.kick(0)
    assert vq0.wait_used() == [(h0, 513)] and vq1.wait_used() == [(h1, 513)]
    assert drv.mem.read(b0, 512) == bytes(disk[40 * 512:41 * 512])
    assert drv.mem.read(b1, 512) == bytes(disk[41 * 512:42 * 512])
    assert drv.mem.read(s0, 1) == drv.mem.read(s1, 1) == b"\x00"
    assert p.alive() and vm.alive()


def test_blk_one_queue_by_default(env, tmp_path):
    img, _ = make_image(tmp_path, sectors=16)
    vm, drv, p = start(env, "pci", BLK, "--image", str(img))
    feats = drv.init(nqueues=1, qsize=16)
    assert not feats & (1 << BLK_F_MQ)
    assert drv.t.num_queues() == 1 and drv.t.queue_max(1) == 0
    assert p.alive() and vm.alive()


@pytest.mark.parametrize("value", ["0", "9", "2x", ""])
def test_blk_bad_queue_count(value, tmp_path):
    img, _ = make_image(tmp_path, sectors=16)
    r = subprocess.run([build_path(BLK), "--queues", value, "--image", str(img), "127.0.0.1:1"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "--queues" in r.stderr
