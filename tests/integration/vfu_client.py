"""A small vfio-user client (QEMU's side of docs/interop/vfio-user.rst) for the tests of
coreio-vm --accel vfio-user: VERSION, DEVICE_GET_INFO, GET_REGION_INFO, GET_IRQ_INFO, SET_IRQS
with eventfds, REGION_READ/WRITE, DMA_MAP (memfd or no fd), DMA_UNMAP, DEVICE_RESET; it answers the server's
DMA_READ/DMA_WRITE from memory it was given (serve_dma), in QEMU 11.1's layout."""

import json
import os
import select
import socket
import struct
import time

HDR = struct.Struct("<HHIII")  # id, command, size, flags, error

VERSION, DMA_MAP, DMA_UNMAP, GET_INFO, GET_REGION_INFO, GET_REGION_IO_FDS = 1, 2, 3, 4, 5, 6
GET_IRQ_INFO, SET_IRQS, REGION_READ, REGION_WRITE, DMA_READ, DMA_WRITE = 7, 8, 9, 10, 11, 12
DEVICE_RESET, REGION_WRITE_MULTI, DEVICE_FEATURE = 13, 15, 16

F_REPLY, F_NO_REPLY, F_ERROR = 0x1, 0x10, 0x20

BAR0, BAR1, ROM, CONFIG, VGA = 0, 1, 6, 7, 8
INTX, MSI, MSIX, ERR, REQ = 0, 1, 2, 3, 4

DATA_NONE, DATA_BOOL, DATA_EVENTFD = 0x1, 0x2, 0x4
ACTION_MASK, ACTION_UNMASK, ACTION_TRIGGER = 0x8, 0x10, 0x20

QEMU_CAPS = {"capabilities": {"max_msg_fds": 16, "max_data_xfer_size": 1048576,
                              "pgsizes": 4096, "max_dma_maps": 65535,
                              "migration": {"pgsize": 4096, "max_bitmap_size": 1048576}}}


# DMA_READ/DMA_WRITE as QEMU 11.1.3 sends and reads them (seen on the wire): address (8), count
# (8), data from payload offset 16, no padding (16 + count bytes of payload). QEMU refuses a count
# above the max_data_xfer_size the server announced (E2BIG).
DMA_RW = struct.Struct("<QQ")
DMA_RW_SIZE = 16


class VfuError(Exception):
    """An error reply: errno in .errno."""

    def __init__(self, cmd, err):
        super().__init__("command %d failed: %s" % (cmd, os.strerror(err) if err else "error"))
        self.errno = err


class VfuClient:
    """One connection to a vfio-user device socket. Every wait has a timeout."""

    def __init__(self, path, timeout=10, connect_timeout=10):
        self.path = path
        self.timeout = timeout
        self.next_id = 1
        self.buf = b""
        deadline = time.monotonic() + connect_timeout
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.s = s
        self.dma_mem = []  # (base, bytearray) the server's DMA_READ/DMA_WRITE go to
        self.dma_log = []  # (cmd, addr, count, error) of every DMA request answered
        self.dma_max = 4096  # the server's max_data_xfer_size
        self.dma_hold = False  # True: queue DMA requests in dma_held instead of answering
        self.dma_held = []

    def serve_dma(self, base, mem):
        """Answer the server's DMA_READ/DMA_WRITE to [base, base + len(mem)) from mem (a bytearray)."""
        self.dma_mem.append((base, mem))

    def answer_dma(self, msg_id, cmd, flags, payload):
        """Answer one DMA_READ or DMA_WRITE request as QEMU 11.1 does (errors: EINVAL, E2BIG, EFAULT)."""
        err, out = 0, b""
        if len(payload) < DMA_RW_SIZE:
            err = 22
        else:
            addr, count = DMA_RW.unpack(payload[:DMA_RW_SIZE])
            if cmd == DMA_READ and count > self.dma_max:
                err = 7
            elif cmd == DMA_WRITE and count > len(payload) - DMA_RW_SIZE:
                err = 7
            else:
                for base, mem in self.dma_mem:
                    if base <= addr and addr + count <= base + len(mem):
                        o = addr - base
                        if cmd == DMA_READ:
                            out = DMA_RW.pack(addr, count) + bytes(mem[o:o + count])
                        else:
                            mem[o:o + count] = payload[DMA_RW_SIZE:DMA_RW_SIZE + count]
                        break
                else:
                    err = 14
            self.dma_log.append((cmd, addr, count, err))
        if flags & F_NO_REPLY and not err:
            return
        if err:
            self.send_raw(HDR.pack(msg_id, cmd, HDR.size, F_REPLY | F_ERROR, err))
        else:
            self.send_raw(HDR.pack(msg_id, cmd, HDR.size + len(out), F_REPLY, 0) + out)

    def serve_once(self, timeout):
        """Wait up to timeout for one message and take it: the server's DMA_READ/DMA_WRITE is
        answered (or held, with dma_hold). Returns (id, cmd, flags, error, payload) or None."""
        try:
            msg = self.recv(timeout)
        except TimeoutError:
            return None
        rid, rcmd, flags, err, data = msg
        if flags & 0xF == 0 and rcmd in (DMA_READ, DMA_WRITE):
            if self.dma_hold:
                self.dma_held.append((rid, rcmd, flags, data))
            else:
                self.answer_dma(rid, rcmd, flags, data)
        return msg

    def release_held(self):
        """Answer the DMA requests held so far, in order."""
        held, self.dma_held = self.dma_held, []
        for rid, rcmd, flags, data in held:
            self.answer_dma(rid, rcmd, flags, data)
        return len(held)

    def serve_until(self, done, timeout=10):
        """Answer the server's DMA requests until done() is true; raises TimeoutError after
        timeout seconds."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("serve_until: not done within %ss" % timeout)
            self.serve_once(min(left, 0.05))

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass

    def fileno(self):
        return self.s.fileno()

    def send_raw(self, data, fds=()):
        if fds:
            socket.send_fds(self.s, [data], list(fds))
        else:
            self.s.sendall(data)

    def send(self, cmd, payload=b"", fds=(), flags=0, msg_id=None, size=None):
        """Send one command; returns its message id."""
        if msg_id is None:
            msg_id = self.next_id
            self.next_id = (self.next_id + 1) & 0xFFFF
        total = HDR.size + len(payload) if size is None else size
        self.send_raw(HDR.pack(msg_id, cmd, total, flags, 0) + payload, fds)
        return msg_id

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from %s" % self.path)
            r, _, _ = select.select([self.s], [], [], left)
            if not r:
                continue
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed %s" % self.path)
            self.buf += chunk

    def recv(self, timeout=None):
        """The next message: (id, cmd, flags, error, payload)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._fill(HDR.size, deadline)
        msg_id, cmd, size, flags, err = HDR.unpack(self.buf[:HDR.size])
        assert size >= HDR.size, "server sent a message of size %d" % size
        self._fill(size, deadline)
        payload = self.buf[HDR.size:size]
        self.buf = self.buf[size:]
        return msg_id, cmd, flags, err, payload

    def request(self, cmd, payload=b"", fds=(), timeout=None):
        """Send a command and wait for its reply; returns the reply payload or raises VfuError."""
        msg_id = self.send(cmd, payload, fds)
        while True:
            rid, rcmd, flags, err, data = self.recv(timeout)
            if flags & 0xF == 0 and rcmd in (DMA_READ, DMA_WRITE):
                # The server's DMA while it serves our command: answered (or held) meanwhile.
                if self.dma_hold:
                    self.dma_held.append((rid, rcmd, flags, data))
                else:
                    self.answer_dma(rid, rcmd, flags, data)
                continue
            break
        assert flags & 0xF == F_REPLY, "expected a reply, got flags 0x%x" % flags
        assert rid == msg_id and rcmd == cmd, "reply %d/%d to %d/%d" % (rid, rcmd, msg_id, cmd)
        if flags & F_ERROR:
            assert data == b"", "an error reply carries no payload"
            raise VfuError(cmd, err)
        return data

    def closed(self, timeout=5):
        """True when the server closes the connection within timeout (pending data is skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.s], [], [], max(0, deadline - time.monotonic()))
            if not r:
                continue
            try:
                if not self.s.recv(65536):
                    return True
            except ConnectionResetError:
                return True
        return False

    # The messages.

    def version(self, major=0, minor=1, caps=QEMU_CAPS, raw_json=None):
        """VERSION: returns (major, minor, capabilities dict)."""
        payload = struct.pack("<HH", major, minor)
        if raw_json is not None:
            payload += raw_json
        elif caps is not None:
            payload += json.dumps(caps).encode() + b"\0"
        data = self.request(VERSION, payload)
        ma, mi = struct.unpack_from("<HH", data)
        text = data[4:]
        assert text.endswith(b"\0"), "reply JSON not NUL-terminated"
        return ma, mi, json.loads(text[:-1].decode())

    def get_info(self):
        """DEVICE_GET_INFO: (argsz, flags, num_regions, num_irqs)."""
        return struct.unpack("<IIII", self.request(GET_INFO, struct.pack("<IIII", 16, 0, 0, 0)))

    def region_info(self, index):
        """GET_REGION_INFO: dict of argsz, flags, index, cap_offset, size, offset."""
        data = self.request(GET_REGION_INFO, struct.pack("<IIIIQQ", 32, 0, index, 0, 0, 0))
        names = ("argsz", "flags", "index", "cap_offset", "size", "offset")
        return dict(zip(names, struct.unpack("<IIIIQQ", data[:32])))

    def irq_info(self, index):
        """GET_IRQ_INFO: (flags, count)."""
        _, flags, idx, count = struct.unpack(
            "<IIII", self.request(GET_IRQ_INFO, struct.pack("<IIII", 16, 0, index, 0)))
        assert idx == index
        return flags, count

    def set_irqs(self, index, flags, start=0, count=0, fds=(), data=b""):
        payload = struct.pack("<IIIII", 20 + len(data), flags, index, start, count) + data
        self.request(SET_IRQS, payload, fds)

    def region_read(self, region, offset, count):
        data = self.request(REGION_READ, struct.pack("<QII", offset, region, count))
        off, reg, n = struct.unpack_from("<QII", data)
        assert (off, reg, n) == (offset, region, count) and len(data) == 16 + count
        return data[16:]

    def region_write(self, region, offset, data):
        reply = self.request(REGION_WRITE, struct.pack("<QII", offset, region, len(data)) + data)
        assert struct.unpack("<QII", reply) == (offset, region, len(data))

    def read(self, region, offset, size):
        return int.from_bytes(self.region_read(region, offset, size), "little")

    def write(self, region, offset, value, size):
        self.region_write(region, offset, value.to_bytes(size, "little"))

    def cfg_read(self, addr, size=4):
        return self.read(CONFIG, addr, size)

    def cfg_write(self, addr, value, size=4):
        self.write(CONFIG, addr, value, size)

    def dma_map(self, addr, size, offset=0, flags=3, fd=None):
        payload = struct.pack("<IIQQQ", 32, flags, offset, addr, size)
        self.request(DMA_MAP, payload, [fd] if fd is not None else ())

    def dma_unmap(self, addr, size, flags=0):
        payload = struct.pack("<IIQQ", 24, flags, addr, size)
        assert self.request(DMA_UNMAP, payload) == payload

    def reset(self):
        self.request(DEVICE_RESET)

    def handshake(self):
        """VERSION as QEMU sends it."""
        return self.version()


def eventfd_wait(fd, timeout=5):
    """Read an eventfd within timeout; returns its count, or 0 when nothing came."""
    if not select.select([fd], [], [], timeout)[0]:
        return 0
    return struct.unpack("<Q", os.read(fd, 8))[0]
