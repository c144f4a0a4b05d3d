"""Hostile frames from a raw client: the VM survives, keeps serving others, drops the bad client."""

import random
import time

import pytest

from conftest import R0
from rawclient import (CAP_CLAIM_ACK, OP_IRQ_UPDATE, OP_LWRITE, OP_READ, OP_RGN_CLAIM, OP_WRITE,
                       OP_WRITEA, OP_WRITEP, Closed, RawClient, make_w0, make_w1, pack_words)


@pytest.fixture
def hostile(env):
    vm = env.vm("%#x,size=0x1000,irq=5,port=@m" % R0, "%#x,size=0x1000,irq=6,port=@m" % (R0 + 0x1000))
    good = env.client(vm.target(0))
    good.ok("register 0")
    vm.wait_claim(0)
    vm.ok("irq_intercept_in ioapic")
    return vm, good


def good_still_works(vm, good, n=[0]):
    n[0] += 1
    v = (0x1234 + n[0] * 0x111) & 0xFFFF
    good.ok("poke 0 0x20 %s" % v.to_bytes(2, "little").hex())
    assert vm.value("readw %#x" % (R0 + 0x20)) == v
    vm.ok("write 0x100 2 0x%04x" % v)
    assert good.ok("dma_read 0 0 0x100 2").endswith(" data=%04x" % v)
    assert vm.alive()


def frame(*words):
    return pack_words(words)


# Frames that fail validation: the VM must close the connection.
CLOSING = {
    "read-answer-size-0": frame(make_w0(0, tag=5), make_w1(OP_READ, size=0), R0),
    "dma-read-size-40": frame(make_w0(0, origin=True, tag=1), make_w1(OP_READ, size=40), 0x1000),
    "dma-write-size-63": frame(make_w0(0, origin=True, tag=1), make_w1(OP_WRITEA, size=63), 0x1000),
    "lwrite-beyond-frame": frame(make_w0(0, origin=True, tag=1), make_w1(OP_LWRITE, mask=1000),
                                 0x1000),
    "unknown-opcode": frame(make_w0(0, origin=True, tag=1), make_w1(0x77), 0),
    "write-from-client": frame(make_w0(0, origin=True, tag=1), make_w1(OP_WRITE, size=4), 0x1000),
    "writep-origin-1": frame(make_w0(0, origin=True, tag=1), make_w1(OP_WRITEP, size=4), 0x1000),
}


@pytest.mark.parametrize("name", sorted(CLOSING))
def test_invalid_frame_closes_connection(hostile, name):
    vm, good = hostile
    before = vm.stats()["malformed"]
    r = RawClient(vm.target(0))
    try:
        r.claim(1)
        vm.wait_claim(1)
        r.irq(1, 0, 1)
        assert vm.wait_irq() == ("raise", 6)
        r.send(CLOSING[name])
        assert r.closed_by_peer(5), "the VM kept the connection after %s" % name
    finally:
        r.close()
    # Treated like a client that died: its IRQ source drops and its claim goes.
    assert vm.wait_irq() == ("lower", 6)
    assert vm.info(1)["claimed"] == "0"
    assert vm.stats()["malformed"] == before + 1
    good_still_works(vm, good)


def test_ignored_frames_keep_connection(hostile):
    vm, good = hostile
    r = RawClient(vm.target(0))
    try:
        faults = vm.stats()["dma_faults"]
        # DMA at the very top of the address space: refused, connection kept.
        f = r.dma_read_piece(0xFFFFFFFFFFFFFFFF, 8)
        assert f.error and f.origin
        f = r.dma_read_piece(0xFFFFFFFFFFFFFFF8, 32)
        assert f.error
        f = r.dma_write_piece(0xFFFFFFFFFFFFFFF0, b"x" * 32)
        assert f.error
        assert vm.stats()["dma_faults"] >= faults + 3
        # Claim of a rid that does not exist, and of a range another client holds.
        r.claim(200)
        r.claim(0)
        # IRQ index and rid that do not exist.
        r.irq(0, 99, 1)
        r.send_words([make_w0(7, origin=True), make_w1(OP_IRQ_UPDATE), 0, 1])
        # Answers whose tags match nothing.
        r.send(frame(make_w0(0, tag=0xDEAD), make_w1(OP_READ, size=4), R0, 0x1234))
        r.send(frame(make_w0(0, tag=0xBEEF), make_w1(OP_WRITEA, size=4), R0))
        # The connection is still served, in order.
        f = r.ping(tag=0x99)
        assert f.tag == 0x99
        vm.no_irq(0.3)
        assert vm.ok("irq_level 5") == "0"
        # The good client kept its range.
        good_still_works(vm, good)
        # Claim acknowledgements say why.
        r.hello(CAP_CLAIM_ACK)
        for rid, err in ((200, 2), (0, 16)):
            t = r.tag()
            r.send_words([make_w0(rid, origin=True, tag=t), make_w1(OP_RGN_CLAIM)])
            f = r.wait_for(lambda f: f.tag == t)
            assert f.error and f.words[3] == err, (rid, f)
    finally:
        r.close()
    good_still_works(vm, good)


def test_truncated_frame_then_close(hostile):
    vm, good = hostile
    r = RawClient(vm.target(0))
    r.claim(1)
    vm.wait_claim(1)
    # A header announcing 5 extra units, then only part of the frame, then close.
    r.send(frame(make_w0(0, extra=5, origin=True), make_w1(OP_LWRITE, mask=300), 0x1000)[:40])
    time.sleep(0.1)
    r.close()
    deadline = time.monotonic() + 5
    while vm.info(1)["claimed"] != "0":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    good_still_works(vm, good)


def test_random_bytes(hostile):
    vm, good = hostile
    rnd = random.Random(4711)
    for i in range(5):
        r = RawClient(vm.target(0))
        try:
            blob = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 20000)))
            try:
                r.send(blob)
            except OSError:
                pass  # the VM may have closed already
            try:
                r.closed_by_peer(0.3)
            except (Closed, OSError):
                pass
        finally:
            r.close()
        good_still_works(vm, good)
    assert vm.info(0)["claimed"] == "1"


def test_many_connections_and_quick_closes(hostile):
    vm, good = hostile
    for i in range(30):
        r = RawClient(vm.target(0))
        if i % 3 == 0:
            r.claim(1)
        if i % 3 == 1:
            r.send(b"\0" * 10)
        r.close()
    good_still_works(vm, good)
    r = RawClient(vm.target(0))
    try:
        r.claim(1)
        vm.wait_claim(1)
    finally:
        r.close()
