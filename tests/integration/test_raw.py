"""A raw-frame client speaking only the base format, as the reference client does."""

import time

from conftest import R0
from rawclient import (CAP_CLAIM_ACK, CAP_LARGE_DMA, MAGIC, OP_LREAD, OP_PING, OP_READ, OP_READP,
                       OP_RESET, OP_WRITE, OP_WRITEA, OP_WRITEAP, OP_WRITEP, RawClient,
                       make_w0, make_w1)

R1 = R0 + 0x1000


def raw_vm(env):
    return env.vm("%#x,size=0x1000,irq=5,port=@r" % R0,
                  "%#x,size=0x1000,irq=6,port=@r,writes=acked" % R1)


def test_raw_mmio(env):
    vm = raw_vm(env)
    r = RawClient(vm.target(0))
    try:
        r.claim(0)
        r.claim(1)
        vm.wait_claim(0)
        vm.wait_claim(1)
        # Single read.
        vm.send("readl %#x" % (R0 + 0x10))
        req = r.wait_request()
        assert (req.op, req.size, req.addr, req.iface, req.origin, req.extra) == (
            OP_READ, 4, R0 + 0x10, 0, False, 0)
        r.answer(req, b"\x78\x56\x34\x12")
        assert vm.answer() == "OK 0x0000000012345678"
        # 32-byte read in one request.
        data = bytes(range(32))
        vm.send("read %#x 32" % (R0 + 0x20))
        req = r.wait_request()
        assert (req.op, req.size, req.addr) == (OP_READ, 32, R0 + 0x20)
        r.answer(req, data)
        assert vm.answer() == "OK 0x" + data.hex()
        # Posted write: the guest is done at once; the frame carries data and byte enables.
        assert vm.qtest("writel %#x 0xdeadbeef" % (R0 + 0x30)) == "OK"
        req = r.wait_request()
        assert (req.op, req.size, req.addr) == (OP_WRITE, 4, R0 + 0x30)
        assert req.data() == b"\xef\xbe\xad\xde"
        assert req.mask in (0, 0xF)
        # Flags are carried.
        vm.ok("flags 4")
        vm.send("readb %#x" % R0)
        req = r.wait_request()
        assert req.flags == 4 and req.size == 1
        r.answer(req, b"\x42")
        assert vm.answer() == "OK 0x0000000000000042"
        vm.ok("flags 0")
        # Pair read and posted pair write.
        vm.send("readp %#x 8" % (R0 + 0x40))
        req = r.wait_request()
        assert (req.op, req.size, req.addr) == (OP_READP, 8, R0 + 0x40)
        r.answer(req, bytes(range(8)), second=bytes(range(8, 16)))
        assert vm.answer() == "OK 0x%s 0x%s" % (bytes(range(8)).hex(), bytes(range(8, 16)).hex())
        vm.ok("writep %#x 4 0x01020304 0x05060708" % (R0 + 0x50))
        req = r.wait_request()
        assert req.op == OP_WRITEP and req.size == 4
        assert req.data() == bytes.fromhex("01020304") and req.data2() == bytes.fromhex("05060708")
        # An error answer is a bus error.
        vm.send("readl %#x" % R0)
        req = r.wait_request()
        r.answer(req, error=True)
        assert vm.answer() == "FAIL bus-error"
        # Acknowledged writes on the acked range, good and failing.
        vm.send("writel %#x 0x11" % (R1 + 4))
        req = r.wait_request()
        assert (req.op, req.iface, req.addr, req.data(4)) == (OP_WRITEA, 1, R1 + 4,
                                                              b"\x11\0\0\0")
        r.answer(req)
        assert vm.answer() == "OK"
        vm.send("writel %#x 0x22" % (R1 + 8))
        r.answer(r.wait_request(), error=True)
        assert vm.answer() == "FAIL bus-error"
        vm.send("writep %#x 2 0x0102 0x0304" % (R1 + 0x10))
        req = r.wait_request()
        assert req.op == OP_WRITEAP and req.iface == 1
        r.answer(req)
        assert vm.answer() == "OK"
        # Reset reaches the raw client.
        vm.ok("reset")
        f = r.wait_for(lambda f: f.op == OP_RESET)
        assert not f.origin
    finally:
        r.close()
    # Closing the socket releases the claims.
    wait_unclaimed(vm, 0)
    assert vm.ok("readl %#x" % R0) == "0x00000000aaaaaaaa"


def wait_unclaimed(vm, g, timeout=5):
    deadline = time.monotonic() + timeout
    while vm.info(g)["claimed"] != "0":
        assert time.monotonic() < deadline, "range %d still claimed" % g
        time.sleep(0.05)


def test_raw_irq_and_dma(env):
    vm = raw_vm(env)
    r = RawClient(vm.target(0))
    try:
        r.claim(0)
        vm.wait_claim(0)
        vm.ok("irq_intercept_in ioapic")
        r.irq(0, 0, 1)
        assert vm.wait_irq() == ("raise", 5)
        r.irq(0, 0, 0)
        assert vm.wait_irq() == ("lower", 5)
        # DMA read of one 32-byte piece.
        data = bytes(range(100, 132))
        vm.ok("write 0x1000 32 0x%s" % data.hex())
        f = r.dma_read_piece(0x1000, 32)
        assert (f.op, f.error, f.origin, f.iface) == (OP_READ, False, True, 0)
        assert f.data(32) == data
        # A smaller unaligned piece.
        f = r.dma_read_piece(0x1005, 7)
        assert not f.error and f.data(7) == data[5:12]
        # DMA write pieces.
        f = r.dma_write_piece(0x2003, b"coreio-raw-dma-test-32-bytes!!!!")
        assert (f.op, f.error, f.origin) == (OP_WRITEA, False, True)
        assert vm.ok("read 0x2002 34") == "0x00" + b"coreio-raw-dma-test-32-bytes!!!!".hex() + "00"
        # A piece outside RAM is refused; the connection stays.
        f = r.dma_read_piece(0x90000000, 8)
        assert f.error and f.origin
        f = r.dma_write_piece(0x3fffffc, b"12345678")
        assert f.error
        assert vm.ok("read 0x3fffff8 8") == "0x" + "00" * 8
        f = r.dma_read_piece(0x1000, 4)
        assert not f.error and f.data(4) == data[:4]
    finally:
        r.close()


def test_raw_ping_and_hello(env):
    vm = raw_vm(env)
    r = RawClient(vm.target(0))
    try:
        # A plain PING (two units) is echoed with E cleared.
        f = r.ping(words=[0x1111, 0x2222, 0x3333, 0x4444, 0x5555], extra=1, tag=0xABC)
        assert f.extra == 0 and len(f.raw) == 64 and f.origin and f.tag == 0xABC
        assert f.words[2:7] == [0x1111, 0x2222, 0x3333, 0x4444, 0x5555]
        # Hello: answered with the capabilities both sides have.
        for offer in (CAP_LARGE_DMA | CAP_CLAIM_ACK, CAP_LARGE_DMA, CAP_CLAIM_ACK, 0, 0xFF):
            f = r.hello(offer)
            assert f.op == OP_PING and f.origin and not f.error
            assert f.words[2] == MAGIC and f.words[3] == 1, f
            assert f.words[4] == offer & 3, (offer, f.words[4])
        # With LARGE_DMA: one LREAD of 1000 bytes.
        r.hello(CAP_LARGE_DMA | CAP_CLAIM_ACK)
        data = bytes((i * 3) & 0xFF for i in range(1000))
        vm.ok("write 0x4001 1000 0x%s" % data.hex())
        t = r.tag()
        r.send_words([make_w0(0, origin=True, tag=t), make_w1(OP_LREAD, mask=1000), 0x4001])
        f = r.wait_for(lambda f: f.tag == t)
        assert f.op == OP_LREAD and not f.error
        assert len(f.raw) >= 24 + 1000 and f.data(1000) == data
        # With CLAIM_ACK: claims are answered.
        t = r.tag()
        r.send_words([make_w0(0, origin=True, tag=t), make_w1(0xF0)])
        f = r.wait_for(lambda f: f.tag == t and f.op == 0xF0)
        assert not f.error
        t = r.tag()
        r.send_words([make_w0(5, origin=True, tag=t), make_w1(0xF0)])
        f = r.wait_for(lambda f: f.tag == t and f.op == 0xF0)
        assert f.error and f.words[3] == 2  # ENOENT
        r2 = RawClient(vm.target(0))
        try:
            r2.hello(CAP_CLAIM_ACK)
            t = r2.tag()
            r2.send_words([make_w0(0, origin=True, tag=t), make_w1(0xF0)])
            f = r2.wait_for(lambda f: f.tag == t and f.op == 0xF0)
            assert f.error and f.words[3] == 16  # EBUSY
        finally:
            r2.close()
    finally:
        r.close()
