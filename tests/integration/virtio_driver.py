"""A small virtio 1.x driver played through qtest commands: virtio-mmio v2 and virtio-pci BAR 0, split rings."""

import struct
import time

# Status bits, feature bits and descriptor flags (virtio 1.x, 2.1, 6, 2.7.5).
ACKNOWLEDGE = 1
DRIVER = 2
DRIVER_OK = 4
FEATURES_OK = 8
NEEDS_RESET = 64
FAILED = 128

F_INDIRECT_DESC = 28
F_EVENT_IDX = 29
F_VERSION_1 = 32
F_ACCESS_PLATFORM = 33

DESC_F_NEXT = 1
DESC_F_WRITE = 2
DESC_F_INDIRECT = 4

ISR_QUEUE = 1
ISR_CONFIG = 2

# BAR 0 layout of src/virtio/virtio-pci-layout.h.
PCI_BAR_SIZE = 0x4000
PCI_COMMON = 0x0000
PCI_ISR = 0x1000
PCI_NOTIFY = 0x2000
PCI_NOTIFY_MULT = 4
PCI_DEVICE = 0x3000

MMIO_SIZE = 0x1000
MMIO_MAGIC_VALUE = 0x74726976


class GuestMem:
    """Guest RAM through qtest: a bump allocator plus read/write helpers."""

    def __init__(self, vm, base=0x100000, limit=0x3000000):
        self.vm = vm
        self.next = base
        self.limit = limit

    def alloc(self, n, align=16):
        addr = (self.next + align - 1) & ~(align - 1)
        assert addr + n <= self.limit, "guest memory allocator exhausted"
        self.next = addr + n
        return addr

    def write(self, addr, data):
        data = bytes(data)
        for off in range(0, len(data), 4096):
            piece = data[off:off + 4096]
            self.vm.ok("write %#x %d 0x%s" % (addr + off, len(piece), piece.hex()))

    def read(self, addr, n):
        out = b""
        for off in range(0, n, 4096):
            k = min(4096, n - off)
            h = self.vm.ok("read %#x %d" % (addr + off, k))
            out += bytes.fromhex(h[2:])
        return out

    def fill(self, addr, n, byte):
        self.vm.ok("memset %#x %d %d" % (addr, n, byte))


class MmioTransport:
    """virtio-mmio version 2 registers at base."""

    name = "mmio"
    region_size = MMIO_SIZE

    def __init__(self, vm, base):
        self.vm = vm
        self.base = base

    def r32(self, off):
        return self.vm.value("readl %#x" % (self.base + off))

    def w32(self, off, v):
        self.vm.ok("writel %#x %#x" % (self.base + off, v))

    def magic(self):
        return self.r32(0x000), self.r32(0x004), self.r32(0x008)

    def device_features(self):
        self.w32(0x014, 0)
        lo = self.r32(0x010)
        self.w32(0x014, 1)
        hi = self.r32(0x010)
        return lo | (hi << 32)

    def set_driver_features(self, f):
        self.w32(0x024, 0)
        self.w32(0x020, f & 0xFFFFFFFF)
        self.w32(0x024, 1)
        self.w32(0x020, f >> 32)

    def status(self):
        return self.r32(0x070)

    def set_status(self, v):
        self.w32(0x070, v)

    def queue_max(self, q):
        self.w32(0x030, q)
        return self.r32(0x034)

    def setup_queue(self, q, size, desc, avail, used):
        self.w32(0x030, q)
        self.w32(0x038, size)
        for off, a in ((0x080, desc), (0x090, avail), (0x0A0, used)):
            self.w32(off, a & 0xFFFFFFFF)
            self.w32(off + 4, a >> 32)
        self.w32(0x044, 1)

    def queue_ready(self, q):
        self.w32(0x030, q)
        return self.r32(0x044)

    def notify(self, q):
        self.w32(0x050, q)

    def isr(self):
        """Read the interrupt status (no side effect); ack() clears it."""
        return self.r32(0x060)

    def ack(self, bits):
        self.w32(0x064, bits)

    def take_isr(self):
        """Read and acknowledge the interrupt status, as a driver's handler does."""
        v = self.isr()
        if v:
            self.ack(v)
        return v

    def config(self, off, n):
        return bytes.fromhex(self.vm.ok("read %#x %d" % (self.base + 0x100 + off, n))[2:])


class PciTransport:
    """virtio-pci modern: the BAR 0 regions at base (the range START in qtest mode)."""

    name = "pci"
    region_size = PCI_BAR_SIZE

    def __init__(self, vm, base):
        self.vm = vm
        self.base = base

    def rd(self, off, size):
        cmd = {1: "readb", 2: "readw", 4: "readl", 8: "readq"}[size]
        return self.vm.value("%s %#x" % (cmd, self.base + off))

    def wr(self, off, size, v):
        cmd = {1: "writeb", 2: "writew", 4: "writel", 8: "writeq"}[size]
        self.vm.ok("%s %#x %#x" % (cmd, self.base + off, v))

    def device_features(self):
        self.wr(0x00, 4, 0)
        lo = self.rd(0x04, 4)
        self.wr(0x00, 4, 1)
        hi = self.rd(0x04, 4)
        return lo | (hi << 32)

    def set_driver_features(self, f):
        self.wr(0x08, 4, 0)
        self.wr(0x0C, 4, f & 0xFFFFFFFF)
        self.wr(0x08, 4, 1)
        self.wr(0x0C, 4, f >> 32)

    def num_queues(self):
        return self.rd(0x12, 2)

    def status(self):
        return self.rd(0x14, 1)

    def set_status(self, v):
        self.wr(0x14, 1, v)

    def queue_max(self, q):
        self.wr(0x16, 2, q)
        return self.rd(0x18, 2)

    def setup_queue(self, q, size, desc, avail, used):
        self.wr(0x16, 2, q)
        self.wr(0x18, 2, size)
        # 64-bit fields as two 32-bit halves, as drivers may do.
        for off, a in ((0x20, desc), (0x28, avail), (0x30, used)):
            self.wr(off, 4, a & 0xFFFFFFFF)
            self.wr(off + 4, 4, a >> 32)
        self.wr(0x1C, 2, 1)

    def queue_ready(self, q):
        self.wr(0x16, 2, q)
        return self.rd(0x1C, 2)

    def notify(self, q):
        self.wr(0x16, 2, q)
        noff = self.rd(0x1E, 2)
        self.wr(PCI_NOTIFY + PCI_NOTIFY_MULT * noff, 2, q)

    def isr(self):
        """Read the ISR: reading clears it."""
        return self.rd(PCI_ISR, 1)

    def take_isr(self):
        return self.isr()

    def config(self, off, n):
        return bytes.fromhex(self.vm.ok("read %#x %d" % (self.base + PCI_DEVICE + off, n))[2:])


def transport(kind, vm, base):
    return {"pci": PciTransport, "mmio": MmioTransport}[kind](vm, base)


class Virtqueue:
    """A split virtqueue in guest RAM, filled by this driver."""

    def __init__(self, mem, index, size):
        self.mem = mem
        self.index = index
        self.size = size
        self.desc = mem.alloc(16 * size, 16)
        self.avail = mem.alloc(6 + 2 * size, 2)
        self.used = mem.alloc(6 + 8 * size, 4)
        mem.fill(self.desc, 16 * size, 0)
        mem.fill(self.avail, 6 + 2 * size, 0)
        mem.fill(self.used, 6 + 8 * size, 0)
        self.next_desc = 0
        self.avail_idx = 0
        self.last_used = 0

    def write_desc(self, i, addr, length, flags, nxt):
        self.mem.write(self.desc + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))

    def publish(self, head, count=1):
        """Put head in the available ring and move avail->idx by count (count > 1 lies)."""
        slot = self.avail_idx % self.size
        self.mem.write(self.avail + 4 + 2 * slot, struct.pack("<H", head))
        self.avail_idx = (self.avail_idx + count) & 0xFFFF
        self.mem.write(self.avail + 2, struct.pack("<H", self.avail_idx))

    def add(self, bufs):
        """Chain bufs [(addr, len, writable), ...] in fresh descriptors and publish it; return head."""
        n = len(bufs)
        assert n <= self.size
        ids = [(self.next_desc + k) % self.size for k in range(n)]
        self.next_desc = (self.next_desc + n) % self.size
        for k, (addr, length, writable) in enumerate(bufs):
            flags = (DESC_F_WRITE if writable else 0) | (DESC_F_NEXT if k + 1 < n else 0)
            self.write_desc(ids[k], addr, length, flags, ids[k + 1] if k + 1 < n else 0)
        self.publish(ids[0])
        return ids[0]

    def add_indirect(self, bufs):
        """Publish one descriptor pointing to an indirect table of bufs; return head."""
        table = self.mem.alloc(16 * len(bufs), 16)
        raw = b""
        for k, (addr, length, writable) in enumerate(bufs):
            flags = (DESC_F_WRITE if writable else 0) | (DESC_F_NEXT if k + 1 < len(bufs) else 0)
            raw += struct.pack("<QIHH", addr, length, flags, k + 1 if k + 1 < len(bufs) else 0)
        self.mem.write(table, raw)
        head = self.next_desc
        self.next_desc = (self.next_desc + 1) % self.size
        self.write_desc(head, table, len(raw), DESC_F_INDIRECT, 0)
        self.publish(head)
        return head

    def used_idx(self):
        return struct.unpack("<H", self.mem.read(self.used + 2, 2))[0]

    def wait_used(self, count=1, timeout=10):
        """Wait for count new used elements; return [(id, len), ...]."""
        deadline = time.monotonic() + timeout
        while True:
            idx = self.used_idx()
            if (idx - self.last_used) & 0xFFFF >= count:
                break
            if time.monotonic() > deadline:
                raise AssertionError("queue %d: used idx %d, wanted %d more after %d within %ss"
                                     % (self.index, idx, count, self.last_used, timeout))
            time.sleep(0.01)
        out = []
        for _ in range(count):
            slot = self.last_used % self.size
            out.append(struct.unpack("<II", self.mem.read(self.used + 4 + 8 * slot, 8)))
            self.last_used = (self.last_used + 1) & 0xFFFF
        return out

    def no_used(self, settle=0.3):
        """Assert that nothing new arrives in the used ring within settle seconds."""
        time.sleep(settle)
        idx = self.used_idx()
        assert idx == self.last_used, "queue %d: unexpected used idx %d" % (self.index, idx)


class VirtioDriver:
    """The driver side of one device: initialisation, queues, notifications."""

    def __init__(self, vm, kind, base, mem=None):
        self.vm = vm
        self.t = transport(kind, vm, base)
        self.mem = mem or GuestMem(vm)
        self.queues = {}
        self.features = 0

    def negotiate(self, want=None, extra=0):
        """Reset, ACKNOWLEDGE, DRIVER, features (offered & want, | extra), FEATURES_OK; return status."""
        t = self.t
        t.set_status(0)
        assert t.status() == 0
        t.set_status(ACKNOWLEDGE)
        t.set_status(ACKNOWLEDGE | DRIVER)
        offered = t.device_features()
        # EVENT_IDX is offered by the models but not implemented by this driver (it never
        # writes used_event): take it only when asked for.
        feats = offered & ~(1 << F_EVENT_IDX) if want is None else offered & want
        feats |= extra
        self.features = feats
        t.set_driver_features(feats)
        t.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK)
        return t.status()

    def init(self, nqueues=1, qsize=16, want=None):
        """Bring the device up with nqueues queues of qsize entries; return the offered features."""
        st = self.negotiate(want)
        assert st & FEATURES_OK, "device refused features %#x (status %#x)" % (self.features, st)
        self.queues = {}
        for q in range(nqueues):
            assert self.t.queue_max(q) >= qsize
            vq = Virtqueue(self.mem, q, qsize)
            self.t.setup_queue(q, qsize, vq.desc, vq.avail, vq.used)
            assert self.t.queue_ready(q) == 1
            self.queues[q] = vq
        self.t.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK)
        st = self.t.status()
        assert st == ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK, "status %#x" % st
        return self.features

    def kick(self, q):
        self.t.notify(q)

    def buf(self, n, fill=None):
        """A guest buffer of n bytes (optionally filled with bytes fill); returns its address."""
        a = self.mem.alloc(max(n, 1), 16)
        if fill is not None:
            self.mem.write(a, fill)
        else:
            self.mem.fill(a, n, 0)
        return a

    def wait_status(self, bits, timeout=10):
        """Wait until the device status has all of bits; return it."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.t.status()
            if st & bits == bits:
                return st
            if time.monotonic() > deadline:
                raise AssertionError("status %#x never got bits %#x" % (st, bits))
            time.sleep(0.02)
