"""The IOMMU (--iommu, docs/iommu.md) under qtest: translation, faults, IOTLB, bound ranges, sids."""

import random
import subprocess

import pytest

from conftest import R0, VM_EXE, build_path, fnv64, seed_pattern
from iommu_helpers import (BAD_ADDRESS, CAP, CTX_DISABLED, DIRECT_REFUSED, EFAULT, EINVAL, FCTL,
                           FSTS, ID, NOT_PRESENT, READ_ONLY, TARGET_NOT_RAM, TLB_HITS, TLB_MISSES,
                           TLB_USED, WRONG_ID, Iommu, PageTables, peek, poke)

IOMMU_BASE = 0xFD000000
IOMMU_IRQ = 9
POOL = 0x100000  # page tables
DATA = 0x800000  # buffers the IOMMU maps
IOVA = 0x40000000  # where the device sees them


def iommu_vm(env, *vmmio, extra=()):
    if not vmmio:
        vmmio = ("%#x,size=0x10000,irq=5,port=0" % R0,)
    vm = env.vm(*vmmio, extra=["--iommu", "id=1,base=%#x,irq=%d" % (IOMMU_BASE, IOMMU_IRQ)]
                + list(extra))
    vm.ok("irq_intercept_in ioapic")
    return vm


def client(env, vm, g=0, *opts):
    c = env.client(vm.target(g), *opts)
    c.ok("register 0")
    vm.wait_claim(g)
    return c


def parse_dma(answer):
    kv = dict(x.split("=", 1) for x in answer.split())
    return int(kv["fnv"], 16), bytes.fromhex(kv["data"]) if "data" in kv else None


def dma_read(c, mid, sid, iova, n):
    return parse_dma(c.ok("dma_read %d %d %#x %d" % (mid, sid, iova, n), timeout=30))


def scattered_pages(n, seed):
    """n distinct 4 KiB pages of the DATA area in a shuffled (non-contiguous) order."""
    pages = [DATA + 4096 * i for i in range(4 * n)]
    random.Random(seed).shuffle(pages)
    return pages[:n]


@pytest.fixture
def setup(env):
    vm = iommu_vm(env)
    c = client(env, vm)
    mmu = Iommu(vm, IOMMU_BASE)
    pt = PageTables(vm, POOL)
    mmu.wr(FCTL, 1)
    return vm, c, mmu, pt


def test_registers(env):
    vm = iommu_vm(env)
    mmu = Iommu(vm, IOMMU_BASE)
    assert mmu.rd(ID) == 0x1_554D4F49
    assert vm.value("readl %#x" % IOMMU_BASE) == 0x554D4F49
    cap = mmu.rd(CAP)
    assert cap & 0xFF == 16 and cap >> 8 & 3 == 3
    assert cap >> 16 & 0xFF == 32 and cap >> 24 & 0xFF == 1 and cap >> 32 & 0xFF == IOMMU_IRQ
    # Read-only registers ignore writes; reserved offsets read 0.
    mmu.wr(ID, 0)
    assert mmu.rd(ID) == 0x1_554D4F49
    mmu.wr(0x800, 0x1234)
    assert mmu.rd(0x800) == 0
    # Context root keeps bits 12..51 only; 32-bit halves work.
    mmu.wr(0x108, 0xFFF0_0000_1234_5FFF)
    assert mmu.rd(0x108) == 0x0000_0000_1234_5000
    vm.ok("writel %#x 0x7" % (IOMMU_BASE + 0x10C))
    assert mmu.rd(0x108) == 0x0000_0007_1234_5000
    assert mmu.rd(FSTS) == 0 and vm.ok("irq_level %d" % IOMMU_IRQ) == "0"


@pytest.mark.parametrize("opts", [(), ("--no-caps",)], ids=["large", "base"])
def test_mapped_both_directions(env, opts):
    vm = iommu_vm(env)
    c = client(env, vm, 0, *opts)
    mmu = Iommu(vm, IOMMU_BASE)
    pt = PageTables(vm, POOL)
    pages = scattered_pages(20, 1)
    pt.map_range(IOVA, pages)
    mmu.context(0, pt.root)
    n = 4096 * 18 + 777
    start = IOVA + 4096 - 123  # crosses 18 page boundaries, first and last partial
    # Device writes: every byte lands on the physical page its IOVA page maps to.
    pat = seed_pattern(5, n)
    fnv, _ = parse_dma(c.ok("dma_write 1 0 %#x %d 5" % (start, n), timeout=30))
    assert fnv == fnv64(pat)
    off = 0
    cur = start
    while off < n:
        page = (cur - IOVA) // 4096
        inpage = cur % 4096
        m = min(4096 - inpage, n - off)
        assert peek(vm, pages[page] + inpage, m) == pat[off:off + m], "IOVA page %d" % page
        off += m
        cur += m
    # The byte before the transfer on the first physical page is untouched.
    assert peek(vm, pages[0] + 4096 - 124, 1) == b"\x00"
    # Device reads: fresh data written by the "CPU" into the scattered pages.
    rnd = random.Random(7)
    data = bytes(rnd.getrandbits(8) for _ in range(4096 * 20))
    for i, pa in enumerate(pages):
        poke(vm, pa, data[4096 * i:4096 * (i + 1)])
    for s, ln in ((IOVA + 5, 40), (IOVA + 4096 - 7, 30), (IOVA + 3, 4096 * 17 + 9)):
        fnv, got = dma_read(c, 1, 0, s, ln)
        want = data[s - IOVA:s - IOVA + ln]
        assert fnv == fnv64(want)
        if got is not None:
            assert got == want
    assert mmu.rd(FSTS) == 0
    assert vm.stats()["dma_faults"] == 0


def test_large_pages(setup):
    vm, c, mmu, pt = setup
    # A 2 MiB page at IOVA 0x60000000 -> 0x1000000, and a 1 GiB page at 2 GiB -> 0.
    pt.map(0x60000000, 0x1000000, size=2 << 20)
    pt.map(0x80000000, 0, size=1 << 30)
    mmu.context(3, pt.root)
    data = bytes(range(256)) * 32
    poke(vm, 0x1000000 + 0x1FE000, data)  # the last 8 KiB of the big page
    fnv, _ = dma_read(c, 1, 3, 0x60000000 + 0x1FE000, len(data))
    assert fnv == fnv64(data)
    fnv, _ = dma_read(c, 1, 3, 0x80000000 + 0x1000000 + 0x1FE000, len(data))
    assert fnv == fnv64(data)
    c.ok("dma_write 1 3 %#x 16 h:99" % (0x60000000 + 0x1FFFF0))
    assert peek(vm, 0x11FFFF0, 16) == b"\x99" * 16
    # One byte past the 2 MiB page is unmapped.
    assert c.err("dma_read 1 3 %#x 2" % (0x60000000 + 0x1FFFFF)) == EFAULT
    fsts, faddr, sid, write, reason, level, _ = mmu.fault()
    assert (fsts, faddr, sid, write, reason, level) == (1, 0x60200000, 3, False, NOT_PRESENT, 2)


def test_unmapped_and_read_only_fault(setup):
    vm, c, mmu, pt = setup
    pages = scattered_pages(3, 2)
    pt.map(IOVA, pages[0])
    pt.map(IOVA + 0x2000, pages[2], writable=False)  # IOVA + 0x1000 stays unmapped
    mmu.context(5, pt.root)
    # A read crossing into the unmapped page fails at the client and is latched.
    assert c.err("dma_read 1 5 %#x 100" % (IOVA + 4096 - 50)) == EFAULT
    assert vm.wait_irq() == ("raise", IOMMU_IRQ)
    fsts, faddr, sid, write, reason, level, count = mmu.fault()
    assert (fsts, faddr, sid, write, reason, level, count) == (1, IOVA + 0x1000, 5, False,
                                                                NOT_PRESENT, 1, 1)
    # A second fault while one is latched sets OVERFLOW and keeps the first.
    assert c.err("dma_read 1 5 %#x 8" % (IOVA + 0x5000)) == EFAULT
    fsts, faddr, sid, write, reason, _, count = mmu.fault()
    assert (fsts, faddr, reason, count) == (3, IOVA + 0x1000, NOT_PRESENT, 2)
    vm.no_irq()
    # Write 1 to clear: the interrupt drops.
    mmu.clear()
    assert vm.wait_irq() == ("lower", IOMMU_IRQ)
    assert mmu.rd(FSTS) == 0
    # Reading the read-only page works; writing it faults and leaves memory alone.
    poke(vm, pages[2], b"\x11" * 64)
    _, got = dma_read(c, 1, 5, IOVA + 0x2000, 64)
    assert got == b"\x11" * 64
    assert c.err("dma_write 1 5 %#x 64 9" % (IOVA + 0x2000 + 8)) == EFAULT
    assert vm.wait_irq() == ("raise", IOMMU_IRQ)
    fsts, faddr, sid, write, reason, level, _ = mmu.fault()
    assert (fsts, faddr, sid, write, reason) == (1, IOVA + 0x2008, 5, True, READ_ONLY)
    assert peek(vm, pages[2], 64) == b"\x11" * 64
    # A write that starts on the writable page and runs into the read-only one is refused
    # as a whole piece (the writable part of that piece is not written either).
    mmu.clear()
    assert vm.wait_irq() == ("lower", IOMMU_IRQ)
    poke(vm, pages[0] + 4000, b"\x22" * 96)
    mmu.wr(FCTL, 0)  # interrupt disabled: recorded, not raised
    assert c.err("dma_write 1 5 %#x 200 3" % (IOVA + 0x1000 - 16)) == EFAULT
    vm.no_irq()
    assert peek(vm, pages[0] + 4000, 96) == b"\x22" * 96
    assert mmu.fault()[0] == 1 and mmu.fault()[1] == IOVA + 0x1000
    assert vm.ok("irq_level %d" % IOMMU_IRQ) == "0"
    mmu.wr(FCTL, 1)  # enabling it with a fault latched raises it
    assert vm.wait_irq() == ("raise", IOMMU_IRQ)
    mmu.clear()
    assert vm.wait_irq() == ("lower", IOMMU_IRQ)
    assert vm.stats()["dma_faults"] >= 4


def test_context_and_id_errors(setup):
    vm, c, mmu, pt = setup
    pt.map(IOVA, DATA)
    # The context of sid 4 is not enabled.
    mmu.context(4, pt.root, enable=False)
    assert c.err("dma_read 1 4 %#x 8" % IOVA) == EFAULT
    assert vm.wait_irq() == ("raise", IOMMU_IRQ)
    assert mmu.fault()[2:5] == (4, False, CTX_DISABLED)
    mmu.clear()
    assert vm.wait_irq() == ("lower", IOMMU_IRQ)
    mmu.context(4, pt.root)
    assert dma_read(c, 1, 4, IOVA, 8)[1] == b"\x00" * 8
    # IOVA beyond 48 bits.
    assert c.err("dma_read 1 4 %#x 8" % (1 << 48)) == EFAULT
    assert mmu.fault()[1:5] == (1 << 48, 4, False, BAD_ADDRESS)
    mmu.clear()
    # A page mapped outside RAM (64 MiB here).
    pt.map(IOVA + 0x1000, 0x7000000)
    assert c.err("dma_write 1 4 %#x 8 1" % (IOVA + 0x1000)) == EFAULT
    assert mmu.fault()[1:5] == (IOVA + 0x1000, 4, True, TARGET_NOT_RAM)
    mmu.clear()
    assert vm.wait_irq() == ("raise", IOMMU_IRQ)
    assert vm.wait_irq() == ("lower", IOMMU_IRQ)
    # An IOMMU id that does not exist in this VM: -EFAULT, counted, nothing latched.
    before = vm.stats()["dma_faults"]
    assert c.err("dma_read 2 0 %#x 8" % IOVA) == EFAULT
    assert vm.stats()["dma_faults"] == before + 1
    assert mmu.rd(FSTS) == 0
    # Ids the wire cannot carry are refused by the library.
    assert c.err("dma_read 8 0 %#x 8" % IOVA) == EINVAL
    assert c.err("dma_read 1 16 %#x 8" % IOVA) == EINVAL


def test_invalidation(setup):
    vm, c, mmu, pt = setup
    a, b = DATA, DATA + 0x10000
    poke(vm, a, b"A" * 32)
    poke(vm, b, b"B" * 32)
    pt.map(IOVA, a)
    pt.map(IOVA + 0x1000, a + 0x1000)
    mmu.context(0, pt.root)
    assert dma_read(c, 1, 0, IOVA, 32)[1] == b"A" * 32
    misses = mmu.rd(TLB_MISSES)
    assert mmu.rd(TLB_USED) == 1
    # Retarget the PTE: the IOTLB still holds the old translation.
    pt.map(IOVA, b)
    hits = mmu.rd(TLB_HITS)
    assert dma_read(c, 1, 0, IOVA, 32)[1] == b"A" * 32
    assert mmu.rd(TLB_HITS) == hits + 1 and mmu.rd(TLB_MISSES) == misses
    # Invalidating another page or another sid changes nothing...
    mmu.inv_page(0, IOVA + 0x1000)
    mmu.inv_sid(1)
    assert dma_read(c, 1, 0, IOVA, 32)[1] == b"A" * 32
    # ...invalidating that page does.
    mmu.inv_page(0, IOVA + 0x123)
    assert dma_read(c, 1, 0, IOVA, 32)[1] == b"B" * 32
    # Unmap it: still reachable until invalidated by sid, then it faults.
    pt.set_pte(IOVA, 0)
    assert dma_read(c, 1, 0, IOVA, 32)[1] == b"B" * 32
    mmu.inv_sid(0)
    assert mmu.rd(TLB_USED) == 0
    assert c.err("dma_read 1 0 %#x 32" % IOVA) == EFAULT
    assert mmu.fault()[1:5] == (IOVA, 0, False, NOT_PRESENT)
    mmu.clear()
    # Global invalidation empties the IOTLB; a context write drops that sid's entries.
    pt.map(IOVA, a)
    assert dma_read(c, 1, 0, IOVA, 8)[1] == b"A" * 8
    assert mmu.rd(TLB_USED) == 1
    mmu.inv_all()
    assert mmu.rd(TLB_USED) == 0
    assert dma_read(c, 1, 0, IOVA, 8)[1] == b"A" * 8
    mmu.context(0, pt.root)
    assert mmu.rd(TLB_USED) == 0
    # Permissions are cached too: a page made writable needs an invalidation.
    pt.map(IOVA, a, writable=False)
    mmu.inv_all()
    assert dma_read(c, 1, 0, IOVA, 8)[1] == b"A" * 8
    pt.map(IOVA, a, writable=True)
    assert c.err("dma_write 1 0 %#x 8 1" % IOVA) == EFAULT
    assert mmu.fault()[4] == READ_ONLY
    mmu.clear()
    mmu.inv_page(0, IOVA)
    c.ok("dma_write 1 0 %#x 8 1" % IOVA)
    assert peek(vm, a, 8) == seed_pattern(1, 8)


def test_sids_isolated(setup):
    vm, c, mmu, pt = setup
    pt1 = PageTables(vm, POOL + 0x100000)
    a, b, only1 = DATA, DATA + 0x4000, DATA + 0x8000
    poke(vm, a, b"a" * 16)
    poke(vm, b, b"b" * 16)
    pt.map(IOVA, a)
    pt1.map(IOVA, b)
    pt1.map(IOVA + 0x1000, only1)
    mmu.context(0, pt.root)
    mmu.context(1, pt1.root)
    # The same IOVA reaches a different page through each sid (and each sid's IOTLB entry).
    assert dma_read(c, 1, 0, IOVA, 16)[1] == b"a" * 16
    assert dma_read(c, 1, 1, IOVA, 16)[1] == b"b" * 16
    assert dma_read(c, 1, 0, IOVA, 16)[1] == b"a" * 16
    c.ok("dma_write 1 1 %#x 16 h:42" % IOVA)
    assert peek(vm, b, 16) == b"\x42" * 16 and peek(vm, a, 16) == b"a" * 16
    # What sid 1 mapped is out of sid 0's reach, in both directions.
    assert c.err("dma_read 1 0 %#x 8" % (IOVA + 0x1000)) == EFAULT
    assert vm.wait_irq() == ("raise", IOMMU_IRQ)
    assert mmu.fault()[1:5] == (IOVA + 0x1000, 0, False, NOT_PRESENT)
    mmu.clear()
    assert vm.wait_irq() == ("lower", IOMMU_IRQ)
    assert c.err("dma_write 1 0 %#x 8 h:ee" % (IOVA + 0x1000)) == EFAULT
    assert peek(vm, only1, 8) == b"\x00" * 8
    assert mmu.fault()[1:5] == (IOVA + 0x1000, 0, True, NOT_PRESENT)
    mmu.clear()
    # Invalidating sid 0 leaves sid 1's translations alone.
    used = mmu.rd(TLB_USED)
    mmu.inv_sid(0)
    assert mmu.rd(TLB_USED) == used - 1


def test_bound_range(env):
    r1 = R0 + 0x10000
    vm = iommu_vm(env, "%#x,size=0x10000,irq=5,port=0,iommu=1,sid=2" % R0,
                  "%#x,size=0x10000,irq=6,port=0" % r1)
    bound = client(env, vm, 0)
    free = client(env, vm, 1)
    mmu = Iommu(vm, IOMMU_BASE)
    mmu.wr(FCTL, 1)
    pt = PageTables(vm, POOL)
    poke(vm, DATA, b"secret!!" * 4)
    # Direct DMA from the bound range's client is refused and recorded, both directions.
    assert bound.err("dma_read 0 0 %#x 32" % DATA) == EFAULT
    assert vm.wait_irq() == ("raise", IOMMU_IRQ)
    assert mmu.fault()[1:5] == (DATA, 0, False, DIRECT_REFUSED)
    mmu.clear()
    assert vm.wait_irq() == ("lower", IOMMU_IRQ)
    assert bound.err("dma_write 0 0 %#x 32 h:00" % DATA) == EFAULT
    assert peek(vm, DATA, 32) == b"secret!!" * 4
    assert mmu.fault()[1:5] == (DATA, 0, True, DIRECT_REFUSED)
    mmu.clear()
    assert vm.wait_irq() == ("raise", IOMMU_IRQ)
    assert vm.wait_irq() == ("lower", IOMMU_IRQ)
    # Through IOMMU 1 with sid 2 it reaches exactly what the guest mapped for it.
    pt.map(IOVA, DATA + 0x1000)
    mmu.context(2, pt.root)
    mmu.context(3, pt.root)
    bound.ok("dma_write 1 2 %#x 16 h:5a" % IOVA)
    assert peek(vm, DATA + 0x1000, 16) == b"\x5a" * 16
    # Another sid, even one with a valid context, is refused.
    assert bound.err("dma_read 1 3 %#x 16" % IOVA) == EFAULT
    assert mmu.fault()[2:5] == (3, False, WRONG_ID)
    mmu.clear()
    # The unbound range's client still reaches guest memory directly.
    assert parse_dma(free.ok("dma_read 0 0 %#x 32" % DATA))[1] == b"secret!!" * 4


@pytest.mark.parametrize("args,msg", [
    (["--iommu", "id=1,base=0x1000"], "overlaps RAM"),
    (["--iommu", "id=0,base=0xfd000000"], "bad id"),
    (["--iommu", "id=1,base=0xfd000800"], "bad base"),
    (["--iommu", "id=1"], "required"),
    (["--iommu", "id=1,base=0xfd000000", "--iommu", "id=1,base=0xfd001000"], "twice"),
    (["--iommu", "id=1,base=0xfd000000,irq=24"], "bad irq"),
    (["--iommu", "id=1,base=0xd0000000", "--vmmio", "0xd0000000,size=4K,port=0"], "overlaps"),
    (["--vmmio", "0xd0000000,size=4K,port=0,iommu=2"], "no --iommu id=2"),
    (["--vmmio", "0xd0000000,size=4K,port=0,sid=1"], "sid= needs iommu="),
    (["--iommu", "id=1,base=0xfd000000", "--vmmio", "0xd0000000,size=4K,port=@a,iommu=1",
      "--vmmio", "0xd0001000,size=4K,port=@a"], "share a port"),
])
def test_command_line_errors(args, msg):
    p = subprocess.run([build_path(VM_EXE), "--accel", "qtest"] + args, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 2, p.stderr
    assert msg in p.stderr
