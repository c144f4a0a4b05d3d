"""Raw-frame CoreIO client: speaks the base wire format (docs/protocol.md) directly, as the reference client would."""

import os
import select
import socket
import struct
import sys
import time

# The wire constants are those of coreio-replay's frame module (one list for both).
_SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts")
if _SCRIPTS not in sys.path:
    sys.path.insert(0, _SCRIPTS)
from replaylib.frames import (  # noqa: E402,F401  (re-exported for the tests)
    CAP_CLAIM_ACK, CAP_LARGE_DMA, ERROR_BIT, MAGIC, OP_IRQ_UPDATE, OP_LREAD, OP_LWRITE, OP_PING,
    OP_READ, OP_READP, OP_RESET, OP_RGN_CLAIM, OP_WRITE, OP_WRITEA, OP_WRITEAP, OP_WRITEP,
    ORIGIN_BIT, UNIT)


def make_w0(iface=0, extra=0, error=False, origin=False, tag=0):
    """Build header word w[0]."""
    return ((iface & 0xFF) | ((extra & 0xFF) << 8) | (ERROR_BIT if error else 0)
            | (ORIGIN_BIT if origin else 0) | ((tag & 0xFFFFFFFF) << 32))


def make_w1(op, size=0, sid=0, flags=0, mask=0):
    """Build operation word w[1]."""
    return ((op & 0xFF) | ((size & 0x3F) << 16) | ((sid & 0xF) << 24) | ((flags & 0xF) << 28)
            | ((mask & 0xFFFFFFFF) << 32))


def pack_words(words):
    """Pack 64-bit words into whole 64-byte units (zero padded)."""
    words = list(words)
    while len(words) % 8:
        words.append(0)
    return b"".join(struct.pack("<8Q", *words[i:i + 8]) for i in range(0, len(words), 8))


def data_words(data, nwords=4):
    """Little-endian 64-bit words holding data, padded to nwords words."""
    data = bytes(data).ljust(nwords * 8, b"\0")
    return list(struct.unpack("<%dQ" % (len(data) // 8), data[: (len(data) // 8) * 8]))


class Frame:
    """A received message: its raw bytes and decoded header fields."""

    def __init__(self, raw):
        self.raw = raw
        self.words = [struct.unpack_from("<Q", raw, i)[0] for i in range(0, len(raw), 8)]
        w0, w1 = self.words[0], self.words[1]
        self.iface = w0 & 0xFF
        self.extra = (w0 >> 8) & 0xFF
        self.error = bool(w0 & ERROR_BIT)
        self.origin = bool(w0 & ORIGIN_BIT)
        self.tag = w0 >> 32
        self.op = w1 & 0xFF
        self.size = (w1 >> 16) & 0x3F
        self.sid = (w1 >> 24) & 0xF
        self.flags = (w1 >> 28) & 0xF
        self.mask = w1 >> 32
        self.addr = self.words[2]

    def data(self, n=None, off=24):
        """n bytes of payload starting at byte offset off (w[3] by default)."""
        if n is None:
            n = self.size
        return self.raw[off:off + n]

    def data2(self):
        """Second element of a pair access: it starts at word 4 + size / 8."""
        off = (4 + self.size // 8) * 8
        return self.raw[off:off + self.size]

    def __repr__(self):
        return ("Frame(op=%#x iface=%d E=%d err=%d origin=%d tag=%#x size=%d mask=%#x addr=%#x)"
                % (self.op, self.iface, self.extra, self.error, self.origin, self.tag, self.size,
                   self.mask, self.addr))


class Closed(Exception):
    """The VM closed the connection."""


class RawClient:
    """One connection to the VM speaking frames by hand."""

    def __init__(self, target, timeout=10):
        if target.startswith("unix:"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(target[5:])
        else:
            host, _, port = target.rpartition(":")
            host = host.strip("[]")
            self.sock = socket.create_connection((host, int(port)), timeout=timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.queue = []  # frames received while waiting for something else
        self.next_tag = 1

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    def send_words(self, words):
        self.send(pack_words(words))

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no frame from the VM in time")
        r, _, _ = select.select([self.sock], [], [], left)
        if not r:
            raise TimeoutError("no frame from the VM in time")
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise Closed("connection closed by the VM")
        self.buf += chunk

    def recv_frame(self, timeout=10):
        """Next frame (queued ones first); raises TimeoutError or Closed."""
        if self.queue:
            return self.queue.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 8:
                w0 = struct.unpack_from("<Q", self.buf, 0)[0]
                flen = (((w0 >> 8) & 0xFF) + 1) * UNIT
                if len(self.buf) >= flen:
                    raw, self.buf = self.buf[:flen], self.buf[flen:]
                    return Frame(raw)
            self._fill(deadline)

    def wait_for(self, pred, timeout=10):
        """First frame matching pred; others are queued for later recv_frame calls."""
        for i, f in enumerate(self.queue):
            if pred(f):
                return self.queue.pop(i)
        deadline = time.monotonic() + timeout
        skipped = []
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no matching frame in time")
                saved, self.queue = self.queue, []
                f = self.recv_frame(left)
                self.queue = saved
                if pred(f):
                    return f
                skipped.append(f)
        finally:
            self.queue.extend(skipped)

    def closed_by_peer(self, timeout=5):
        """True if the VM closes the connection within timeout (frames are skipped)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.recv_frame(max(0.01, deadline - time.monotonic()))
        except Closed:
            return True
        except TimeoutError:
            return False

    def tag(self):
        t = self.next_tag
        self.next_tag += 1
        return t

    # Messages a client starts.
    def claim(self, rid):
        self.send_words([make_w0(rid, origin=True), make_w1(OP_RGN_CLAIM)])

    def irq(self, rid, iid, level):
        self.send_words([make_w0(rid, origin=True), make_w1(OP_IRQ_UPDATE), iid, level])

    def ping(self, words=(0, 0, 0, 0, 0), extra=0, tag=0x77):
        """Send a PING (origin 1) and return its answer."""
        t = tag
        ws = [make_w0(0, extra=extra, origin=True, tag=t), make_w1(OP_PING)] + list(words)
        ws += [0] * (8 * (extra + 1) - len(ws))
        self.send_words(ws)
        return self.wait_for(lambda f: f.op == OP_PING and f.tag == t)

    def hello(self, caps):
        """Offer capabilities; return the VM's answer frame."""
        t = self.tag()
        self.send_words([make_w0(0, origin=True, tag=t), make_w1(OP_PING), MAGIC, 0, caps, 1])
        return self.wait_for(lambda f: f.op == OP_PING and f.tag == t)

    def dma_read_piece(self, addr, size, mid=0, sid=0, timeout=10):
        """One base DMA read piece (<= 32 bytes); returns the answer frame."""
        t = self.tag()
        self.send_words([make_w0(mid, origin=True, tag=t), make_w1(OP_READ, size=size, sid=sid),
                         addr])
        return self.wait_for(lambda f: f.origin and f.tag == t, timeout)

    def dma_write_piece(self, addr, data, mid=0, sid=0, timeout=10):
        """One base DMA write piece (<= 32 bytes); returns the answer frame."""
        t = self.tag()
        mask = (1 << len(data)) - 1
        self.send_words([make_w0(mid, origin=True, tag=t),
                         make_w1(OP_WRITEA, size=len(data), sid=sid, mask=mask), addr]
                        + data_words(data))
        return self.wait_for(lambda f: f.origin and f.tag == t, timeout)

    # Answers to the VM's MMIO requests (exactly one unit, like the reference client).
    def wait_request(self, timeout=10):
        """Next MMIO request from the VM (origin 0)."""
        return self.wait_for(lambda f: not f.origin and f.op != OP_PING, timeout)

    def answer(self, req, data=b"", error=False, second=None):
        """Answer req with one unit: the request header echoed, data at w[3]."""
        w = req.words[:8]
        raw = bytearray(pack_words(w[:3]))
        raw[0:8] = struct.pack("<Q", req.words[0] | (ERROR_BIT if error else 0))
        raw[24:24 + len(data)] = data
        if second is not None:
            off = (4 + req.size // 8) * 8
            raw[off:off + len(second)] = second
        self.send(bytes(raw))
