"""Shared-memory DMA (COREIO_CAP_SHM, --vmmio ...,port=unix:PATH,shm=on): memcpy DMA, fallbacks, refusals."""

import fcntl
import mmap
import os
import random
import re
import subprocess
import sys

import pytest

from conftest import R0, TIMERDMA, VM_EXE, build_path, fnv64, guest_vm, seed_pattern
from iommu_helpers import FADDR, FCTL, NOT_PRESENT, Iommu, PageTables
from mpqemu_driver import start_vm as start_mpqemu
from test_dma import parse_dma, peek_ram, poke_ram

# Shared-memory DMA (maps reference-counted across threads): also run under TSan.
pytestmark = pytest.mark.concurrency

CAP_SHM = 4
IOMMU_BASE = 0xFD000000


def sock(env, name="s.sock"):
    return "unix:%s" % (env.tmp_path / name)


def shm_vm(env, shm="on", extra=(), mem="64M"):
    return env.vm("%#x,size=0x10000,irq=5,port=%s,shm=%s" % (R0, sock(env), shm), mem=mem,
                  extra=extra)


def refused(*args):
    """Run coreio-vm with these arguments; return (status, stderr)."""
    p = subprocess.run([build_path(VM_EXE), "--accel", "qtest"] + list(args),
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=10)
    return p.returncode, p.stderr


def test_caps_show_shm(env):
    vm = shm_vm(env)
    c = env.client(vm.target(0))
    assert c.first == "OK connected caps=7"
    assert int(c.ok("caps")) & CAP_SHM
    # Both connections negotiated it and got the map.
    assert vm.stats()["shm_maps"] == 2
    vm.wait_stderr(r"shared memory: sent map generation 1 \(1 region\(s\)\)", count=2)


def test_not_offered_without_opt_in(env):
    vm = shm_vm(env, shm="off")
    c = env.client(vm.target(0))
    assert c.first == "OK connected caps=3"
    tcp = env.vm("%#x,size=0x10000,port=0" % R0)
    c2 = env.client(tcp.target(0))
    assert c2.first == "OK connected caps=3"
    assert vm.stats()["shm_maps"] == 0 and tcp.stats()["shm_maps"] == 0


@pytest.mark.parametrize("args,why", [
    (("--vmmio", "0xd0000000,size=4K,port=0,shm=on"), r"shm=on needs port=unix:PATH"),
    (("--vmmio", "0xd0000000,size=4K,port=4300,shm=on"), r"shm=on needs port=unix:PATH"),
    (("--vmmio", "0xd0000000,size=4K,port=@a,shm=on"), r"shm=on needs port=unix:PATH"),
    (("--vmmio", "0xd0000000,size=4K,port=unix:/tmp/x-shm.sock,shm=maybe"),
     r"shm='maybe' must be on or off"),
    (("--vmmio", "0xd0000000,size=4K,port=unix:/tmp/x-shm.sock,shm=on",
      "--vmmio", "0xd0001000,size=4K,port=unix:/tmp/x-shm.sock"), r"share a port but not their shm="),
    (("--iommu", "id=1,base=%#x" % IOMMU_BASE,
      "--vmmio", "0xd0000000,size=4K,port=unix:/tmp/x-shm.sock,iommu=1,shm=on"),
     r"shm=on and iommu=1 exclude each other"),
], ids=["tcp0", "tcp", "label", "bad-value", "disagree", "iommu-bound"])
def test_refused_command_lines(args, why):
    rc, err = refused(*args)
    assert rc == 2, err
    assert re.search(why, err), err


@pytest.fixture
def shm_client(env):
    vm = shm_vm(env)
    c = env.client(vm.target(0))
    assert int(c.ok("caps")) & CAP_SHM
    c.ok("register 0")
    vm.wait_claim(0)
    return vm, c


@pytest.mark.parametrize("nb", [False, True], ids=["blocking", "nonblocking"])
def test_dma_small_sizes(shm_client, nb):
    vm, c = shm_client
    rnd = random.Random(77)
    before = vm.stats()["dma_ok"]
    addr = 0x100003
    for n in (1, 2, 7, 31, 32, 33, 4095, 4097, 65543):
        data = bytes(rnd.getrandbits(8) for _ in range(n))
        poke_ram(vm, addr, data)
        fnv, got = parse_dma(c.ok("dma_read 0 0 %#x %d%s" % (addr, n, " nb" if nb else "")))
        assert fnv == fnv64(data)
        if got is not None:
            assert got == data
        waddr = addr + 0x20000 + (n & 7)
        vm.ok("memset %#x %d 0x77" % (waddr - 1, n + 2))
        pat = seed_pattern(n & 0xFF, n)
        fnv, _ = parse_dma(c.ok("dma_write 0 0 %#x %d %d%s" % (waddr, n, n & 0xFF,
                                                                " nb" if nb else "")))
        assert fnv == fnv64(pat)
        got = peek_ram(vm, waddr - 1, n + 2)
        assert got == b"\x77" + pat + b"\x77", "dma_write of %d bytes at %#x" % (n, waddr)
        addr += 0x40000
    # Every byte went by memcpy: the VM served no DMA piece.
    assert vm.stats()["dma_ok"] == before


@pytest.mark.parametrize("n", [(1 << 20) + 5, 16 << 20], ids=["1MiB", "16MiB"])
def test_dma_large(shm_client, n):
    vm, c = shm_client
    addr = 0x1000009
    vm.ok("memset %#x %d 0x3c" % (addr, n))
    patches = {0: b"\x01\x02\x03", 5000: b"hello", n // 2 + 1: b"middle", n - 4: b"tail"}
    for off, b in patches.items():
        vm.ok("write %#x %d 0x%s" % (addr + off, len(b), b.hex()))
    expect = bytearray(b"\x3c" * n)
    for off, b in patches.items():
        expect[off:off + len(b)] = b
    fnv, _ = parse_dma(c.ok("dma_read 0 0 %#x %d" % (addr, n), timeout=60))
    assert fnv == fnv64(bytes(expect))
    vm.ok("memset %#x 1 0xee" % (addr - 1))
    vm.ok("memset %#x 1 0xee" % (addr + n))
    fnv_w, _ = parse_dma(c.ok("dma_write 0 0 %#x %d 11 nb" % (addr, n), timeout=60))
    pat = seed_pattern(11, n)
    assert fnv_w == fnv64(pat)
    for off in (0, 4093, 16320, n // 2, n - 64):
        m = min(64, n - off)
        assert peek_ram(vm, addr + off, m) == pat[off:off + m], "window at +%#x" % off
    assert peek_ram(vm, addr - 1, 1) == b"\xee" and peek_ram(vm, addr + n, 1) == b"\xee"
    fnv_r, _ = parse_dma(c.ok("dma_read 0 0 %#x %d nb" % (addr, n), timeout=60))
    assert fnv_r == fnv_w
    assert vm.stats()["dma_ok"] == 0


def test_outside_ram_still_faults(shm_client):
    vm, c = shm_client
    before = vm.stats()
    assert c.err("dma_read 0 0 0x80000000 64") == -14
    assert c.err("dma_read 0 0 0x80000000 64 nb") == -14
    assert c.err("dma_write 0 0 0x80000000 100 1") == -14
    # Crossing the end of RAM: not inside the map, so the socket carries it and the VM
    # refuses it (one large piece), nothing written.
    vm.ok("memset 0x3fffff0 16 0x11")
    assert c.err("dma_write 0 0 0x3fffff0 32 5") == -14
    assert vm.ok("read 0x3fffff0 16") == "0x" + "11" * 16
    assert c.err("dma_read 0 0 0xfffffffffffffff0 16") == -14
    after = vm.stats()
    assert after["dma_faults"] >= before["dma_faults"] + 5
    # The same client still copies inside RAM.
    poke_ram(vm, 0x5000, b"still fine")
    assert parse_dma(c.ok("dma_read 0 0 0x5000 10"))[1] == b"still fine"
    assert vm.stats()["dma_ok"] == after["dma_ok"]


def test_iommu_still_translates_mid1(env):
    vm = shm_vm(env, extra=["--iommu", "id=1,base=%#x,irq=9" % IOMMU_BASE])
    vm.ok("irq_intercept_in ioapic")
    c = env.client(vm.target(0))
    assert int(c.ok("caps")) & CAP_SHM
    mmu = Iommu(vm, IOMMU_BASE)
    pt = PageTables(vm, 0x100000)
    mmu.wr(FCTL, 1)
    iova, pa = 0x40000000, 0x800000
    pt.map(iova, pa)
    mmu.context(0, pt.root)
    before = vm.stats()
    # mid 1 lands where the IOMMU says, not at guest-physical IOVA (which is outside RAM
    # anyway) nor at the IOVA's offset in RAM.
    pat = seed_pattern(5, 100)
    fnv, _ = parse_dma(c.ok("dma_write 1 0 %#x 100 5" % (iova + 0x10)))
    assert fnv == fnv64(pat)
    assert peek_ram(vm, pa + 0x10, 100) == pat
    assert vm.stats()["dma_ok"] > before["dma_ok"]
    # An unmapped page faults through the IOMMU with its address recorded.
    assert c.err("dma_read 1 0 %#x 8" % (iova + 0x1000)) == -14
    assert vm.wait_irq() == ("raise", 9)
    assert mmu.rd(FADDR) == iova + 0x1000
    assert mmu.fault()[4] == NOT_PRESENT
    # mid 0 on the same client still goes through shared memory.
    n = vm.stats()["dma_ok"]
    assert parse_dma(c.ok("dma_read 0 0 %#x 16" % (pa + 0x10)))[1] == pat[:16]
    assert vm.stats()["dma_ok"] == n


def test_no_caps_client_unaffected(env):
    vm = shm_vm(env)
    c = env.client(vm.target(0), "--no-caps")
    assert c.first == "OK connected caps=0"
    c.ok("register 0")
    vm.wait_claim(0)
    data = bytes(range(200))
    poke_ram(vm, 0x7003, data)
    fnv, got = parse_dma(c.ok("dma_read 0 0 0x7003 200"))
    assert fnv == fnv64(data)
    pat = seed_pattern(3, 1000)
    parse_dma(c.ok("dma_write 0 0 0x9001 1000 3 nb"))
    assert peek_ram(vm, 0x9001, 1000) == pat
    st = vm.stats()
    assert st["dma_ok"] > 0 and st["shm_maps"] == 0
    # MMIO still works for it.
    c.ok("poke 0 0x10 78563412")
    assert vm.value("readl %#x" % (R0 + 0x10)) == 0x12345678


def test_vm_keeps_no_fds_of_gone_clients(env):
    """Many SHM clients coming and going leave coreio-vm's fd table as it was."""
    vm = shm_vm(env)
    fds = "/proc/%d/fd" % vm.p.pid

    def gone(n):
        """Wait until the VM has closed both connections of the n-th client (1, 2, ...)."""
        # Each connection logs "disconnected" just before closing its fds, and the
        # two need not go in one batch: wait for both lines, then a qtest round trip
        # (the single I/O thread has finished their close() before it answers).
        vm.wait_stderr(r"client (%d|%d) .*: disconnected" % (2 * n - 1, 2 * n), count=2)
        vm.ok("stats")

    c = env.client(vm.target(0))
    c.ok("dma_read 0 0 0x1000 16")
    c.stop()
    gone(1)
    base = len(os.listdir(fds))
    for i in range(20):
        c = env.client(vm.target(0))
        c.ok("dma_write 0 0 0x2000 4096 1")
        c.stop()
        gone(2 + i)
    assert len(os.listdir(fds)) == base
    assert vm.stats()["shm_maps"] == 2 + 40


# --- mpqemu mode: the map follows SYNC_SYSMEM ---


def sealed_memfd(size, seal=True):
    fd = os.memfd_create("guest-ram", os.MFD_ALLOW_SEALING if seal else 0)
    os.ftruncate(fd, size)
    if seal:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    return fd


def test_mpqemu_map_follows_sync_sysmem(env):
    vm = start_mpqemu(env, "pci,size=4K,port=%s,shm=on" % sock(env), extra=["--verbose"])
    d = vm.devs[0]
    c = env.client(vm.target(0))
    assert int(c.ok("caps")) & CAP_SHM
    # Before any SYNC_SYSMEM the map is empty: DMA goes to the socket and fails.
    assert c.err("dma_read 0 0 0x1000 4") == -14
    a, b = sealed_memfd(2 << 20), sealed_memfd(1 << 20)
    ma = mb = None
    try:
        d.sync_sysmem([(0x100000, 1 << 20, 0), (0x40000000, 1 << 20, 1 << 20)], [a, a])
        d.cfg_read(0)  # a round trip: the VM has sent the new map
        c.ok("ping")  # and the client has read it
        ma = mmap.mmap(a, 2 << 20)
        pat = seed_pattern(9, 3000)
        c.ok("dma_write 0 0 0x100010 3000 9")
        assert ma[0x10:0x10 + 3000] == pat
        ma[(1 << 20) + 0x200:(1 << 20) + 0x210] = bytes(range(16))
        assert parse_dma(c.ok("dma_read 0 0 0x40000200 16"))[1] == bytes(range(16))
        # Across the two regions (not contiguous in guest-physical space): refused.
        assert c.err("dma_read 0 0 0x1ffff8 16") == -14
        # A new generation in another file replaces the map: DMA follows it.
        d.sync_sysmem([(0x100000, 1 << 20, 0)], [b])
        d.cfg_read(0)
        c.ok("ping")
        mb = mmap.mmap(b, 1 << 20)
        c.ok("dma_write 0 0 0x100010 16 1")
        assert mb[0x10:0x20] == seed_pattern(1, 16)
        assert ma[0x10:0x20] == pat[:16]
        assert c.err("dma_read 0 0 0x40000200 16") == -14
        vm.wait_stderr(r"shared memory: sent map generation 2 \(1 region\(s\)\)", count=2)
        # An unsealed file is refused by the client (logged once): DMA through the socket.
        u = sealed_memfd(1 << 20, seal=False)
        try:
            d.sync_sysmem([(0x0, 1 << 20, 0)], [u])
            d.cfg_read(0)
            c.ok("ping")
            c.ok("dma_write 0 0 0x3000 64 2")
            mu = mmap.mmap(u, 1 << 20)
            assert mu[0x3000:0x3040] == seed_pattern(2, 64)
            mu.close()
            c.wait_stderr(r"shared-memory DMA off: .*not sealed against shrinking")
        finally:
            os.close(u)
    finally:
        for m in (ma, mb):
            if m:
                m.close()
        os.close(a)
        os.close(b)


# --- KVM: the DMA guest against coreio-timerdma over shared memory ---


def test_kvm_dma_guest_over_shm(env):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                    "scripts"))
    from kvmcheck import kvm_unavailable
    why = kvm_unavailable()
    if why:
        pytest.skip("KVM unavailable: %s" % why)
    s = sock(env, "td.sock")
    vm = guest_vm(env, "dma", "%#x,size=0x1000,irq=5,port=%s,shm=on" % (R0, s))
    env.proc(TIMERDMA, s)
    out = vm.expect_success(60)
    copies = [l for l in out if l.startswith("dma: copy len=") and l.endswith(" ok")]
    assert len(copies) >= 8, out
    assert any("error bit ok" in l for l in out)
    vm.wait_stderr(r"shared memory: sent map generation 1", count=2)
