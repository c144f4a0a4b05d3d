"""DMA from coreio-testclient into guest RAM, blocking and not, base pieces and large pieces."""

import random

import pytest

from conftest import R0, TESTCLIENT, TESTCLIENT_STATIC, fnv64, seed_pattern

# Blocking and non-blocking DMA, DMA inside a callback: also run under TSan.
pytestmark = pytest.mark.concurrency

CHUNK = 4096


def poke_ram(vm, addr, data):
    for off in range(0, len(data), CHUNK):
        part = data[off:off + CHUNK]
        vm.ok("write %#x %d 0x%s" % (addr + off, len(part), part.hex()))


def peek_ram(vm, addr, n):
    out = b""
    for off in range(0, n, CHUNK):
        m = min(CHUNK, n - off)
        out += bytes.fromhex(vm.ok("read %#x %d" % (addr + off, m))[2:])
    return out


def parse_dma(answer):
    """'fnv=... data=...' -> (fnv int, data bytes or None)."""
    kv = dict(x.split("=", 1) for x in answer.split())
    return int(kv["fnv"], 16), bytes.fromhex(kv["data"]) if "data" in kv else None


def check_read(vm, c, addr, data, nb):
    poke_ram(vm, addr, data)
    fnv, got = parse_dma(c.ok("dma_read 0 0 %#x %d%s" % (addr, len(data), " nb" if nb else ""),
                              timeout=60))
    if got is not None:
        assert got == data
    assert fnv == fnv64(data), "dma_read of %d bytes at %#x" % (len(data), addr)


def check_write(vm, c, addr, n, seed, nb, verify=True):
    pat = seed_pattern(seed, n)
    fnv, _ = parse_dma(c.ok("dma_write 0 0 %#x %d %d%s" % (addr, n, seed, " nb" if nb else ""),
                            timeout=60))
    assert fnv == fnv64(pat)
    if verify:
        # The bytes around the transfer are untouched.
        got = peek_ram(vm, addr - 1, n + 2)
        assert got[1:-1] == pat, "dma_write of %d bytes at %#x" % (n, addr)
    return pat


@pytest.fixture(params=["caps", "nocaps"])
def dma_setup(request, env):
    vm = env.vm("%#x,size=0x10000,irq=5,port=0" % R0, mem="64M")
    opts = () if request.param == "caps" else ("--no-caps",)
    c = env.client(vm.target(0), *opts)
    c.ok("register 0")
    vm.wait_claim(0)
    return vm, c, request.param == "caps"


def test_caps_negotiated(dma_setup):
    vm, c, caps = dma_setup
    assert c.first == ("OK connected caps=3" if caps else "OK connected caps=0")
    assert c.ok("caps") == ("3" if caps else "0")


@pytest.mark.parametrize("nb", [False, True], ids=["blocking", "nonblocking"])
def test_dma_small_sizes(dma_setup, nb):
    vm, c, _ = dma_setup
    rnd = random.Random(1234)
    addr = 0x100003
    for n in (1, 31, 32, 33, 4095, 4097):
        data = bytes(rnd.getrandbits(8) for _ in range(n))
        # Make sure the RAM holds something else before the DMA write.
        vm.ok("memset %#x %d 0x77" % (addr - 1, n + 2))
        check_read(vm, c, addr, data, nb)
        pat = check_write(vm, c, addr + 0x3000 + (n & 7), n, n, nb)
        # A DMA read sees what the DMA write left.
        fnv, _ = parse_dma(c.ok("dma_read 0 0 %#x %d" % (addr + 0x3000 + (n & 7), n)))
        assert fnv == fnv64(pat)
        addr += 0x4000


def test_dma_medium(dma_setup):
    vm, c, _ = dma_setup
    n = 65536 + 3
    rnd = random.Random(99)
    data = bytes(rnd.getrandbits(8) for _ in range(n))
    check_read(vm, c, 0x200001, data, False)
    check_write(vm, c, 0x300005, n, 42, True)


def windows_match(vm, addr, pat, offsets):
    for off in offsets:
        m = min(64, len(pat) - off)
        assert peek_ram(vm, addr + off, m) == pat[off:off + m], "window at +%#x" % off


def test_dma_one_mib(dma_setup):
    vm, c, _ = dma_setup
    n = (1 << 20) + 5
    addr = 0x400007
    # Independent check of the read path: RAM filled by qtest, checksum computed here.
    vm.ok("memset %#x %d 0x3c" % (addr, n))
    patches = {0: b"\x01\x02\x03", 5000: b"hello", n - 4: b"tail"}
    for off, b in patches.items():
        vm.ok("write %#x %d 0x%s" % (addr + off, len(b), b.hex()))
    expect = bytearray(b"\x3c" * n)
    for off, b in patches.items():
        expect[off:off + len(b)] = b
    fnv, _ = parse_dma(c.ok("dma_read 0 0 %#x %d nb" % (addr, n), timeout=60))
    assert fnv == fnv64(bytes(expect))
    # Write path: the checksum of the pattern, and windows read back by qtest.
    pat = check_write(vm, c, addr, n, 7, False, verify=False)
    windows_match(vm, addr, pat, [0, 32, 4096 - 3, 16320 - 1, 500000, n - 64])
    assert peek_ram(vm, addr + n, 1) == b"\x00"
    assert peek_ram(vm, addr - 1, 1) == b"\x00"


@pytest.mark.parametrize("caps", [True, False], ids=["caps", "nocaps"])
def test_dma_16mib(env, caps):
    vm = env.vm("%#x,size=0x10000,port=0" % R0, mem="64M")
    c = env.client(vm.target(0), *(() if caps else ("--no-caps",)))
    n = 16 << 20
    addr = 0x1000009
    fnv_w, _ = parse_dma(c.ok("dma_write 0 0 %#x %d 3" % (addr, n), timeout=60))
    pat = seed_pattern(3, n)
    windows_match(vm, addr, pat, [0, 16320 - 5, 8 << 20, n - 64])
    assert peek_ram(vm, addr + n, 1) == b"\x00"
    assert peek_ram(vm, addr - 1, 1) == b"\x00"
    fnv_r, _ = parse_dma(c.ok("dma_read 0 0 %#x %d nb" % (addr, n), timeout=60))
    assert fnv_r == fnv_w


def test_dma_faults(dma_setup):
    vm, c, caps = dma_setup
    before = vm.stats()
    assert c.err("dma_read 0 0 0x80000000 64") == -14
    assert c.err("dma_read 0 0 0x80000000 64 nb") == -14
    assert c.err("dma_write 0 0 0x80000000 100 1") == -14
    # Straddling the end of RAM. With large pieces it is one piece, refused whole; base
    # pieces are cut at 32-byte boundaries, so the piece inside RAM may be written.
    vm.ok("memset 0x3fffff0 16 0x11")
    assert c.err("dma_write 0 0 0x3fffff0 32 5") == -14
    assert c.err("dma_read 0 0 0x3ffffff 2") == -14
    assert c.err("dma_read 0 0 0xfffffffffffffff0 16") == -14
    # No IOMMU yet: any other mid faults; out-of-range ids are refused locally.
    assert c.err("dma_read 1 0 0x1000 8") == -14
    assert c.err("dma_read 8 0 0x1000 8") == -22
    assert c.err("dma_read 0 16 0x1000 8") == -22
    after = vm.stats()
    assert after["dma_faults"] > before["dma_faults"]
    # The VM and the client go on.
    if caps:
        assert vm.ok("read 0x3fffff0 16") == "0x" + "11" * 16
    else:
        assert vm.ok("read 0x3fffff0 16") == "0x" + seed_pattern(5, 16).hex()
    check_read(vm, c, 0x5000, b"still fine", False)
    assert vm.stats()["dma_ok"] > after["dma_ok"]


def test_dma_in_mmio_callback(dma_setup):
    vm, c, _ = dma_setup
    data = bytes(range(0xA0, 0xB0))
    poke_ram(vm, 0x2000, data)
    c.ok("dma_in_cb 0 0x40 0 0 0x2000 16")
    assert vm.value("readq %#x" % (R0 + 0x40)) == int.from_bytes(data[:8], "little")
    c.wait_event(r"^dmacb 0 0 %016x$" % fnv64(data))
    # A large transfer from inside the callback too.
    big = bytes((i * 5) & 0xFF for i in range(70000))
    poke_ram(vm, 0x10001, big)
    c.ok("dma_in_cb 0 0x48 0 0 0x10001 70000")
    assert vm.value("readl %#x" % (R0 + 0x48)) == int.from_bytes(big[:4], "little")
    c.wait_event(r"^dmacb 0 0 %016x$" % fnv64(big))
    # A failing DMA inside the callback makes the read a bus error.
    c.ok("dma_in_cb 0 0x50 0 0 0x90000000 8")
    assert vm.qtest("readq %#x" % (R0 + 0x50)) == "FAIL bus-error"
    c.wait_event(r"^dmacb 0 -14 ")


def test_static_client_dma(env):
    vm = env.vm("%#x,size=0x10000,port=0" % R0)
    c = env.client(vm.target(0), exe=TESTCLIENT_STATIC)
    c.ok("register 0")
    vm.wait_claim(0)
    check_read(vm, c, 0x1003, bytes(range(100)), True)
    check_write(vm, c, 0x2005, 5000, 11, False)
    c.ok("poke 0 0x10 0102")
    assert vm.value("readw %#x" % (R0 + 0x10)) == 0x0201
    assert TESTCLIENT != TESTCLIENT_STATIC


def test_dma_many_large_reads_unix(env):
    """Many LREADs in flight over UNIX: the VM's answers (up to 4 MiB in flight from the
    client) exceed a corked batch and the output pause, and are built straight in its
    output queue; every byte comes back, in order, and nothing waits unsent."""
    path = env.tmp_path / "dma.sock"
    vm = env.vm("%#x,size=0x10000,port=unix:%s" % (R0, path), mem="64M")
    c = env.client(vm.target(0))
    n = 16 << 20
    addr = 0x1000003
    fnv_w, _ = parse_dma(c.ok("dma_write 0 0 %#x %d 5" % (addr, n), timeout=60))
    assert fnv_w == fnv64(seed_pattern(5, n))
    for _ in range(2):
        fnv_r, _ = parse_dma(c.ok("dma_read 0 0 %#x %d nb" % (addr, n), timeout=60))
        assert fnv_r == fnv_w
    r = dict(x.split("=", 1) for x in c.ok("dma_bench 0 0 %#x %d 4 read" % (addr, n),
                                            timeout=120).split())
    assert int(r["fnv"], 16) == fnv_w
    # Reads and writes interleaved on one connection keep their order.
    fnv_w2, _ = parse_dma(c.ok("dma_write 0 0 %#x %d 6" % (addr, 1 << 20), timeout=60))
    fnv_r2, _ = parse_dma(c.ok("dma_read 0 0 %#x %d nb" % (addr, 1 << 20), timeout=60))
    assert fnv_r2 == fnv_w2
