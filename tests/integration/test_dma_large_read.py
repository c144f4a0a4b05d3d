"""Large DMA reads over UNIX, received straight into the caller's buffer: random sizes and
offsets against coreio-vm, a faulting read among good ones, and a fake VM in Python that
sends its LREAD answers in many small segments, out of order and with pings between."""

import os
import random
import select
import socket
import struct
import threading
import time

import pytest

from conftest import R0, fnv64, seed_pattern
from rawclient import (OP_LREAD, OP_PING, ORIGIN_BIT, ERROR_BIT, MAGIC, CAP_LARGE_DMA,
                       make_w0, make_w1, pack_words)

pytestmark = pytest.mark.concurrency

BASE = 0x1000000  # guest-physical start of the pattern written first
AREA = 8 << 20


def pick_seed():
    s = os.environ.get("COREIO_TEST_SEED")
    seed = int(s, 0) if s else random.randrange(1 << 32)
    print("seed %d (COREIO_TEST_SEED=%d repeats it)" % (seed, seed))
    return seed


def parse(answer):
    kv = dict(x.split("=", 1) for x in answer.split())
    return int(kv["fnv"], 16)


def unix_vm(env):
    path = env.tmp_path / "dma.sock"
    vm = env.vm("%#x,size=0x10000,port=unix:%s" % (R0, path), mem="64M")
    c = env.client(vm.target(0))
    assert int(c.ok("caps")) & CAP_LARGE_DMA
    pat = seed_pattern(3, AREA)
    assert parse(c.ok("dma_write 0 0 %#x %d 3" % (BASE, AREA), timeout=60)) == fnv64(pat)
    return vm, c, pat


def test_random_large_reads_unix(env):
    vm, c, pat = unix_vm(env)
    rng = random.Random(pick_seed())
    for i in range(60):
        kind = rng.randrange(4)
        n = (rng.randrange(1, 200) if kind == 0 else rng.randrange(1, 40000) if kind == 1
             else rng.randrange(1, 4 << 20))
        off = rng.randrange(0, AREA - n + 1)
        nb = " nb" if i % 2 else ""
        got = parse(c.ok("dma_read 0 0 %#x %d%s" % (BASE + off, n, nb), timeout=60))
        assert got == fnv64(pat[off:off + n]), "read %d: %d bytes at +%#x%s" % (i, n, off, nb)
    # Blocking reads back to back, as the benchmark runs them.
    r = dict(x.split("=", 1) for x in c.ok("dma_bench 0 0 %#x %d 8 read" % (BASE, 1 << 20),
                                            timeout=60).split())
    assert int(r["fnv"], 16) == fnv64(pat[:1 << 20])
    assert vm.stats()["dma_faults"] == 0


def test_faulting_read_among_large_ones(env):
    vm, c, pat = unix_vm(env)
    # 1 MiB straddling the end of the 64 MiB of RAM: its last pieces fail.
    assert c.err("dma_read 0 0 %#x %d" % ((64 << 20) - (1 << 19), 1 << 20), timeout=30) == -14
    assert c.err("dma_read 0 0 %#x %d nb" % ((64 << 20) - 100000, 300000), timeout=30) == -14
    assert vm.stats()["dma_faults"] > 0
    # The connection goes on: the next large reads return the right bytes.
    for off, n in ((5, 1 << 20), (100003, 3 << 20)):
        assert parse(c.ok("dma_read 0 0 %#x %d" % (BASE + off, n), timeout=60)) == \
            fnv64(pat[off:off + n])


class SegmentVM:
    """A fake VM on a UNIX socket: answers the hello with LARGE_DMA and hands the test the
    DMA connection's LREAD requests; answers leave as the test says."""

    def __init__(self, path):
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(str(path))
        self.lsock.listen(4)
        self.target = "unix:%s" % path
        self.conns = []
        self.requests = []  # LREAD requests on the DMA connection: (tag, addr, len, raw)
        self.lock = threading.Lock()
        self.stop = False
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        bufs = {}
        try:
            deadline = time.monotonic() + 10
            while len(self.conns) < 2:
                if time.monotonic() > deadline:
                    raise AssertionError("the client did not open two connections")
                if select.select([self.lsock], [], [], 0.1)[0]:
                    s, _ = self.lsock.accept()
                    self.conns.append(s)
                    bufs[s] = b""
            while not self.stop:
                ready = select.select(self.conns, [], [], 0.05)[0]
                for s in ready:
                    chunk = s.recv(1 << 16)
                    if not chunk:
                        return
                    bufs[s] += chunk
                    while len(bufs[s]) >= 64:
                        w0 = struct.unpack_from("<Q", bufs[s])[0]
                        flen = (((w0 >> 8) & 0xFF) + 1) * 64
                        if len(bufs[s]) < flen:
                            break
                        f, bufs[s] = bufs[s][:flen], bufs[s][flen:]
                        self._frame(s, f)
        except Exception as e:  # reported by the test
            self.error = e

    def _frame(self, s, f):
        w0, w1, w2, w3 = struct.unpack_from("<4Q", f)
        op = w1 & 0xFF
        if op == OP_PING and w0 & ORIGIN_BIT and w2 == MAGIC:
            ans = bytearray(f[:64])
            ans[1] = 0
            ans[24:32] = struct.pack("<Q", 1)  # COREIO_HELLO_ANSWER
            ans[32:40] = struct.pack("<Q", CAP_LARGE_DMA)
            s.sendall(bytes(ans))
        elif op == OP_LREAD and s is self.conns[1]:
            with self.lock:
                self.requests.append((w0 >> 32, w2, w1 >> 32, f[:24]))

    def take(self, count, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if len(self.requests) >= count:
                    got, self.requests = self.requests[:count], self.requests[count:]
                    return got
            assert self.error is None, self.error
            assert time.monotonic() < deadline, "%d LREAD requests, want %d" % (
                len(self.requests), count)
            time.sleep(0.005)

    def close(self):
        self.stop = True
        self.thread.join(5)
        for s in self.conns:
            s.close()
        self.lsock.close()


def lread_answer(req, mem, error=False):
    tag, addr, n, raw = req
    w0, w1, w2 = struct.unpack("<3Q", raw)
    if error:
        return pack_words([make_w0(w0 & 0xFF, 0, True, True, tag), w1, w2])
    extra = (24 + n + 63) // 64 - 1
    hdr = struct.pack("<3Q", (w0 & ~(0xFF << 8) & ~ERROR_BIT) | (extra << 8), w1, w2)
    frame = hdr + mem[addr:addr + n]
    return frame + b"\0" * ((extra + 1) * 64 - len(frame))


def send_segments(sock, data, rng, most):
    """data in random segments of 1 .. most bytes, a short pause now and then."""
    i = 0
    while i < len(data):
        k = rng.randrange(1, most + 1)
        sock.sendall(data[i:i + k])
        i += k
        if rng.randrange(8) == 0:
            time.sleep(0.0005)


def test_read_answers_in_small_segments(env):
    seed = pick_seed()
    rng = random.Random(seed)
    vm = SegmentVM(env.tmp_path / "seg.sock")
    try:
        c = env.client(vm.target)
        assert int(c.ok("caps")) & CAP_LARGE_DMA
        mem = bytes(rng.randrange(256) for _ in range(1 << 16)) * 40  # 2.5 MiB
        ping = pack_words([make_w0(0, 0, False, False, 0x99), make_w1(OP_PING)])
        for i, (addr, n) in enumerate(((0, 1 << 20), (7, 100000), (12345, 16320 * 3 + 5),
                                       (3, 1 << 20), (99, 200000))):
            pieces = (n + 16319) // 16320
            c.send("dma_read 0 0 %#x %d nb" % (addr, n))
            reqs = vm.take(pieces)
            assert [r[2] for r in reqs] == [16320] * (pieces - 1) + [n - 16320 * (pieces - 1)]
            assert reqs[0][1] == addr
            bad = i == 3  # one piece of this read fails
            if i % 2:
                rng.shuffle(reqs)  # out of order
            stream = b""
            for k, r in enumerate(reqs):
                stream += lread_answer(r, mem, error=bad and k == pieces // 2)
                if rng.randrange(3) == 0:
                    stream += ping  # echoed by the library, between answers
            send_segments(vm.conns[1], stream, rng, 3000 if i < 2 else 700)
            a = c.answer(30, "dma_read answer")
            if bad:
                assert a.startswith("ERR -14"), a
            else:
                assert a.startswith("OK"), a
                assert parse(a[2:]) == fnv64(mem[addr:addr + n]), "read %d" % i
        assert vm.error is None, vm.error
    finally:
        vm.close()
