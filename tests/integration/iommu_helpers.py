"""Helpers of the IOMMU tests: the register block of docs/iommu.md and page tables built over qtest."""

ID = 0x000
CAP = 0x008
FCTL = 0x010
FSTS = 0x018
FADDR = 0x020
FINFO = 0x028
FCOUNT = 0x030
INV_ADDR = 0x038
INV_CMD = 0x040
TLB_HITS = 0x048
TLB_MISSES = 0x050
TLB_USED = 0x058
CTX = 0x100

INV_ALL, INV_SID, INV_PAGE = 1, 2, 3
P, W, PS = 1, 2, 0x80
ADDR_MASK = 0x000FFFFFFFFFF000

# Fault reasons (FINFO bits 16..23).
NOT_PRESENT, READ_ONLY, CTX_DISABLED, BAD_ADDRESS = 1, 2, 3, 4
TABLE_NOT_RAM, TARGET_NOT_RAM, DIRECT_REFUSED, WRONG_ID = 5, 6, 7, 8

EFAULT = -14
EINVAL = -22


class Iommu:
    """One IOMMU's registers, read and written by qtest like a guest driver."""

    def __init__(self, vm, base):
        self.vm = vm
        self.base = base

    def rd(self, off):
        return self.vm.value("readq %#x" % (self.base + off))

    def wr(self, off, val):
        self.vm.ok("writeq %#x %#x" % (self.base + off, val))

    def context(self, sid, root, enable=True):
        self.wr(CTX + 16 * sid + 8, root)
        self.wr(CTX + 16 * sid, 1 if enable else 0)

    def fault(self):
        """(FSTS, FADDR, sid, write, reason, level, FCOUNT)."""
        fi = self.rd(FINFO)
        return (self.rd(FSTS), self.rd(FADDR), fi & 0xF, bool(fi >> 8 & 1), fi >> 16 & 0xFF,
                fi >> 24 & 7, self.rd(FCOUNT))

    def clear(self):
        self.wr(FSTS, 3)

    def inv_all(self):
        self.wr(INV_CMD, INV_ALL)

    def inv_sid(self, sid):
        self.wr(INV_CMD, INV_SID | sid << 8)

    def inv_page(self, sid, iova):
        self.wr(INV_ADDR, iova)
        self.wr(INV_CMD, INV_PAGE | sid << 8)


class PageTables:
    """x86-64 four-level IOMMU page tables in guest RAM, written with qtest commands.

    Tables are taken from a pool of zeroed 4 KiB pages starting at pool.
    """

    def __init__(self, vm, pool, pool_end=None):
        self.vm = vm
        self.next = pool
        self.end = pool_end if pool_end is not None else pool + (1 << 20)
        self.tables = {}  # (level, iova prefix) -> table address
        self.root = self._alloc()

    def _alloc(self):
        assert self.next + 4096 <= self.end, "page-table pool exhausted"
        a = self.next
        self.next += 4096
        self.vm.ok("memset %#x 4096 0" % a)
        return a

    def _table(self, level, iova):
        """The table of `level` (4 = PML4 .. 1 = PT) covering iova, created as needed."""
        if level == 4:
            return self.root
        key = (level, iova >> (12 + 9 * level))
        if key not in self.tables:
            parent = self._table(level + 1, iova)
            t = self._alloc()
            idx = (iova >> (12 + 9 * level)) & 511
            self.vm.ok("writeq %#x %#x" % (parent + 8 * idx, t | P | W))
            self.tables[key] = t
        return self.tables[key]

    def entry_addr(self, iova, level=1):
        """Guest-physical address of the entry of `level` that maps iova."""
        t = self._table(level, iova)
        return t + 8 * ((iova >> (12 + 9 * (level - 1))) & 511)

    def map(self, iova, pa, writable=True, size=4096):
        """Map one page of size 4 KiB, 2 MiB or 1 GiB."""
        level = {4096: 1, 2 << 20: 2, 1 << 30: 3}[size]
        assert iova % size == 0 and pa % size == 0
        val = pa | P | (W if writable else 0) | (PS if level > 1 else 0)
        self.vm.ok("writeq %#x %#x" % (self.entry_addr(iova, level), val))

    def map_range(self, iova, pages, writable=True):
        """Map consecutive IOVA pages onto the guest-physical pages in the list `pages`."""
        for i, pa in enumerate(pages):
            self.map(iova + 4096 * i, pa, writable)

    def set_pte(self, iova, value):
        self.vm.ok("writeq %#x %#x" % (self.entry_addr(iova, 1), value))


def poke(vm, addr, data):
    for off in range(0, len(data), 4096):
        part = data[off:off + 4096]
        vm.ok("write %#x %d 0x%s" % (addr + off, len(part), part.hex()))


def peek(vm, addr, n):
    out = b""
    for off in range(0, n, 4096):
        m = min(4096, n - off)
        out += bytes.fromhex(vm.ok("read %#x %d" % (addr + off, m))[2:])
    return out
