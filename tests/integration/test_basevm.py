"""libcoreio (through coreio-testclient) against a fake VM in Python that speaks only the base format."""

import queue
import socket
import struct
import threading

import pytest

from conftest import fnv64
from rawclient import (OP_IRQ_UPDATE, OP_PING, OP_READ, OP_READP, OP_RESET, OP_RGN_CLAIM,
                       OP_WRITE, OP_WRITEA, Frame, make_w0, make_w1, pack_words)


class BaseVM:
    """Accepts connections; echoes every PING unchanged except E (as a base VM does)."""

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.lsock.settimeout(10)
        self.target = "127.0.0.1:%d" % self.lsock.getsockname()[1]
        self.conns = []  # (socket, queue of frames, list of hello pings)
        self.conn_q = queue.Queue()
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            q = queue.Queue()
            c = {"sock": s, "frames": q, "pings": []}
            self.conns.append(c)
            self.conn_q.put(c)
            threading.Thread(target=self._reader, args=(c,), daemon=True).start()

    def _reader(self, c):
        buf = b""
        s = c["sock"]
        while True:
            try:
                chunk = s.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                c["frames"].put(None)
                return
            buf += chunk
            while len(buf) >= 8:
                w0 = struct.unpack_from("<Q", buf)[0]
                flen = (((w0 >> 8) & 0xFF) + 1) * 64
                if len(buf) < flen:
                    break
                f = Frame(buf[:flen])
                buf = buf[flen:]
                if f.op == OP_PING and f.origin:
                    c["pings"].append(f)
                    echo = bytearray(f.raw[:64])
                    echo[1] = 0
                    s.sendall(bytes(echo))
                    continue
                c["frames"].put(f)

    def conn(self, i, timeout=10):
        while len(self.conns) <= i:
            self.conn_q.get(timeout=timeout)
        return self.conns[i]

    def frame(self, i, timeout=10):
        f = self.conn(i)["frames"].get(timeout=timeout)
        assert f is not None, "connection %d closed" % i
        return f

    def send(self, i, data):
        self.conn(i)["sock"].sendall(data)

    def close(self):
        self.stop = True
        self.lsock.close()
        for c in self.conns:
            try:
                c["sock"].close()
            except OSError:
                pass


@pytest.fixture
def basevm():
    v = BaseVM()
    yield v
    v.close()


def test_library_against_base_vm(env, basevm):
    c = env.client(basevm.target)
    # Echoed hello: no capabilities, base format.
    assert c.first == "OK connected caps=0"
    assert c.ok("caps") == "0"
    assert len(basevm.conns) == 2
    c.ok("register 0")
    f = basevm.frame(0)
    assert (f.op, f.iface, f.origin) == (OP_RGN_CLAIM, 0, True)
    # MMIO read: answered with one unit, header echoed, data at w[3].
    c.ok("poke 0 0x10 11223344")
    basevm.send(0, pack_words([make_w0(0, tag=7), make_w1(OP_READ, size=4), 0xD0000010]))
    f = basevm.frame(0)
    assert (f.op, f.tag, f.origin, f.error, len(f.raw)) == (OP_READ, 7, False, False, 64)
    assert f.data(4) == bytes.fromhex("11223344")
    # Posted write: no answer; pair read without pair callbacks... with them here.
    basevm.send(0, pack_words([make_w0(0, tag=8), make_w1(OP_WRITE, size=2, mask=3), 0xD0000020,
                               0xBBAA]))
    basevm.send(0, pack_words([make_w0(0, tag=9), make_w1(OP_READP, size=2), 0xD0000020]))
    f = basevm.frame(0)
    assert (f.op, f.tag) == (OP_READP, 9)
    assert f.data(2) == b"\xaa\xbb" and f.data2() == b"\0\0"
    # Acked write to a failing offset: error bit.
    c.ok("fail 0 0x30")
    basevm.send(0, pack_words([make_w0(0, tag=10), make_w1(OP_WRITEA, size=4, mask=15),
                               0xD0000030, 1]))
    f = basevm.frame(0)
    assert (f.op, f.tag, f.error) == (OP_WRITEA, 10, True)
    # A request for an unregistered rid below 8 comes back with E cleared.
    basevm.send(0, pack_words([make_w0(3, extra=1, tag=11), make_w1(OP_READ, size=4), 0x1000]
                              + [0] * 13))
    f = basevm.frame(0)
    assert (f.op, f.tag, f.iface, f.extra) == (OP_READ, 11, 3, 0)
    # rid >= 8 is dropped: the next answer is the one for tag 13.
    basevm.send(0, pack_words([make_w0(9, tag=12), make_w1(OP_READ, size=4), 0x1000]))
    basevm.send(0, pack_words([make_w0(0, tag=13), make_w1(OP_READ, size=1), 0xD0000010]))
    f = basevm.frame(0)
    assert (f.tag, f.data(1)) == (13, b"\x11")
    # IRQ updates only on change.
    c.ok("irq 0 2 1")
    c.ok("irq 0 2 1")
    c.ok("irq 0 2 0")
    f1, f2 = basevm.frame(0), basevm.frame(0)
    assert (f1.op, f1.iface, f1.words[2], f1.words[3]) == (OP_IRQ_UPDATE, 0, 2, 1)
    assert (f2.op, f2.words[2], f2.words[3]) == (OP_IRQ_UPDATE, 2, 0)
    # RESET: the callback runs and the library forgets the levels it sent.
    c.ok("irq 0 1 1")
    assert basevm.frame(0).words[3] == 1
    basevm.send(0, pack_words([make_w0(0), make_w1(OP_RESET)]))
    c.wait_event(r"^reset$")
    c.ok("irq 0 1 1")
    f = basevm.frame(0)
    assert (f.op, f.words[2], f.words[3]) == (OP_IRQ_UPDATE, 1, 1)


def serve_dma(basevm, ram, timeout=10):
    """Answer DMA pieces on connection 1 until the queue is quiet; returns the pieces seen."""
    seen = []
    while True:
        try:
            f = basevm.frame(1, timeout)
        except queue.Empty:
            return seen
        timeout = 0.3
        seen.append((f.op, f.addr, f.size))
        hdr = struct.pack("<Q", f.words[0]) + f.raw[8:24]
        if f.op == OP_READ:
            data = ram[f.addr:f.addr + f.size] if f.addr + f.size <= len(ram) else None
            if data is None:
                hdr = struct.pack("<Q", f.words[0] | (1 << 30)) + f.raw[8:24]
                data = b""
            basevm.send(1, (hdr + data).ljust(64, b"\0"))
        elif f.op == OP_WRITEA:
            ram[f.addr:f.addr + f.size] = f.data(f.size)
            basevm.send(1, hdr.ljust(64, b"\0"))


def test_library_dma_base_pieces(env, basevm):
    c = env.client(basevm.target)
    ram = bytearray(range(256)) * 16
    c.send("dma_read 0 0 0x105 70")
    pieces = serve_dma(basevm, ram)
    assert c.answer() == "OK fnv=%016x" % fnv64(bytes(ram[0x105:0x105 + 70]))
    # Pieces are cut at 32-byte boundaries.
    assert pieces == [(OP_READ, 0x105, 27), (OP_READ, 0x120, 32), (OP_READ, 0x140, 11)]
    c.send("dma_write 0 0 0x201 40 h:a5 nb")
    pieces = serve_dma(basevm, ram)
    assert c.answer().startswith("OK")
    assert sorted(pieces) == [(OP_WRITEA, 0x201, 31), (OP_WRITEA, 0x220, 9)]
    assert ram[0x200:0x22A] == b"\x00" + b"\xa5" * 40 + b"\x29"
    # A faulted piece fails the whole transfer with -EFAULT.
    c.send("dma_read 0 0 0xff0 40")
    serve_dma(basevm, ram)
    assert c.answer().split()[:2] == ["ERR", "-14"]


def test_library_survives_hostile_vm(env, basevm):
    c = env.client(basevm.target)
    c.ok("register 0")
    basevm.frame(0)
    # A request whose size does not fit, then an unknown opcode: the library must
    # not crash; it may drop the connection (-EPROTO).
    # The library may hang up after the first bad frame, so later sends may
    # meet a closed socket: that is allowed, not a failure of the test.
    for bad in (pack_words([make_w0(0, tag=1), make_w1(OP_READ, size=60), 0xD0000000]),
                pack_words([make_w0(0, tag=2), make_w1(0x99, size=4), 0xD0000000]),
                bytes(range(256)) * 8):
        try:
            basevm.send(0, bad)
        except (BrokenPipeError, ConnectionResetError):
            break
    c.ok("ping")
    assert c.alive()
    basevm.close()
    c.wait_event(r"^disconnected -\d+$")
    assert c.err("irq 0 0 1") < 0
    assert c.alive()
