"""MMIO through coreio-vm's qtest accelerator to coreio-testclient: sizes, pairs, masks, ordering, errors."""

from conftest import R0, R1


def ev_parse(ev):
    """'read 0 0xd0000000 4 11223344 0' -> (kind, rid, addr, len, data, flags)."""
    kind, rid, addr, ln, data, flags = ev.split()
    return kind, int(rid), int(addr, 16), int(ln), data, int(flags)


def test_access_sizes_round_trip(served):
    vm, c = served
    cases = [("b", 1, 0xA5), ("w", 2, 0xBEEF), ("l", 4, 0xDEADBEEF), ("q", 8, 0x0123456789ABCDEF)]
    for i, (sfx, size, val) in enumerate(cases):
        addr = R0 + 0x100 + 0x10 * i
        vm.ok("write%s %#x %#x" % (sfx, addr, val))
        assert vm.value("read%s %#x" % (sfx, addr)) == val
        # The bytes landed in the client's memory, little-endian, and nothing else.
        mem = c.ok("peek 0 %d %d" % (0x100 + 0x10 * i, size + 1))
        assert mem == val.to_bytes(size, "little").hex() + "00"
    # Unaligned accesses are forwarded with their real address.
    vm.ok("writel %#x 0x11223344" % (R0 + 0x203))
    assert c.ok("peek 0 0x203 4") == "44332211"
    assert vm.value("readw %#x" % (R0 + 0x204)) == 0x2233


def test_read_answer_width(served):
    vm, c = served
    c.ok("poke 0 0x40 f1f2f3f4f5f6f7f8")
    assert vm.ok("readb %#x" % (R0 + 0x40)) == "0x00000000000000f1"
    assert vm.ok("readw %#x" % (R0 + 0x40)) == "0x000000000000f2f1"
    assert vm.ok("readl %#x" % (R0 + 0x40)) == "0x00000000f4f3f2f1"
    assert vm.ok("readq %#x" % (R0 + 0x40)) == "0xf8f7f6f5f4f3f2f1"


def test_wide_read_write(served):
    vm, c = served
    c.ok("log on")
    for n in (16, 32):
        data = bytes((i * 13 + n) & 0xFF for i in range(n))
        addr = R0 + 0x400 + n
        c.take_events()
        vm.ok("write %#x %d 0x%s" % (addr, n, data.hex()))
        assert vm.ok("read %#x %d" % (addr, n)) == "0x" + data.hex()
        assert c.ok("peek 0 %d %d" % (0x400 + n, n)) == data.hex()
        evs = [ev_parse(e) for e in c.take_events()]
        # One request each way, not split into smaller accesses.
        assert evs == [("write", 0, addr, n, data.hex(), 0), ("read", 0, addr, n, data.hex(), 0)]


def test_flags_reach_callbacks(served):
    vm, c = served
    c.ok("log on")
    vm.ok("flags 4")
    vm.ok("readl %#x" % R0)
    vm.ok("flags 10")
    vm.ok("writeb %#x 1" % R0)
    vm.ok("flags 0")
    vm.ok("readb %#x" % R0)  # the posted write has reached the client once this is answered
    evs = [ev_parse(e) for e in c.take_events()]
    assert [(e[0], e[5]) for e in evs] == [("read", 4), ("write", 10), ("read", 0)]


def test_pair_with_pair_callbacks(served):
    vm, c = served
    c.ok("log on")
    for size in (4, 8, 16):
        a = bytes(range(0x10, 0x10 + size))
        b = bytes(range(0x80, 0x80 + size))
        addr = R0 + 0x800 + 0x40 * size
        c.take_events()
        vm.ok("writep %#x %d 0x%s 0x%s" % (addr, size, a.hex(), b.hex()))
        assert vm.ok("readp %#x %d" % (addr, size)) == "0x%s 0x%s" % (a.hex(), b.hex())
        # The test client's pair callbacks store the elements consecutively.
        assert c.ok("peek 0 %d %d" % (addr - R0, 2 * size)) == (a + b).hex()
        evs = [ev_parse(e) for e in c.take_events()]
        assert evs == [("writep", 0, addr, size, (a + b).hex(), 0),
                       ("readp", 0, addr, size, (a + b).hex(), 0)]


def test_pair_without_pair_callbacks(env, vm2):
    vm = vm2
    c = env.client(vm.target(0))
    c.ok("register 0 nopair")
    vm.wait_claim(0)
    c.ok("log on")
    addr = R0 + 0x900
    vm.ok("writep %#x 4 0x11223344 0x55667788" % addr)
    # The library calls write twice with the same address: the second element wins.
    assert vm.ok("readp %#x 4" % addr) == "0x55667788 0x55667788"
    assert c.ok("peek 0 0x900 8") == "5566778800000000"
    evs = [ev_parse(e) for e in c.take_events()]
    assert evs == [("write", 0, addr, 4, "11223344", 0), ("write", 0, addr, 4, "55667788", 0),
                   ("read", 0, addr, 4, "55667788", 0), ("read", 0, addr, 4, "55667788", 0)]
    c.ok("poke 0 0x900 0102030405060708")
    assert vm.ok("readp %#x 4" % addr) == "0x01020304 0x01020304"
    evs = [ev_parse(e) for e in c.take_events()]
    assert evs == [("read", 0, addr, 4, "01020304", 0), ("read", 0, addr, 4, "01020304", 0)]


def test_byte_masked_write(served):
    vm, c = served
    c.ok("log on")
    c.ok("poke 0 0xa00 eeeeeeeeeeeeeeee")
    addr = R0 + 0xA00
    c.take_events()
    # Mask 0xb3: bytes 0,1 / 4,5 / 7 enabled -> three runs.
    vm.ok("writem %#x 8 0x0102030405060708 0xb3" % addr)
    assert vm.value("readq %#x" % addr) == 0x08EE0605EEEE0201
    assert c.ok("peek 0 0xa00 8") == "0102eeee0506ee08"
    evs = [ev_parse(e) for e in c.take_events()]
    assert evs == [("write", 0, addr, 2, "0102", 0), ("write", 0, addr + 4, 2, "0506", 0),
                   ("write", 0, addr + 7, 1, "08", 0), ("read", 0, addr, 8, "0102eeee0506ee08", 0)]
    # A full mask is one callback.
    vm.ok("writem %#x 8 0x1112131415161718 0xff" % addr)
    vm.ok("readb %#x" % addr)
    evs = [ev_parse(e) for e in c.take_events()]
    assert evs == [("write", 0, addr, 8, "1112131415161718", 0), ("read", 0, addr, 1, "11", 0)]


def test_posted_write_then_read(served):
    vm, c = served
    vm.ok("writel %#x 0xcafef00d" % (R0 + 0x1000))
    assert vm.value("readl %#x" % (R0 + 0x1000)) == 0xCAFEF00D
    # Many posted writes, then one read: it sees all of them, and they arrived in order.
    c.ok("log on")
    for i in range(200):
        vm.send("writeb %#x %#x" % (R0 + 0x2000 + i, (i * 3) & 0xFF))
    for i in range(200):
        assert vm.answer().startswith("OK")
    got = vm.ok("read %#x 32" % (R0 + 0x2000 + 168))
    assert got == "0x" + bytes((i * 3) & 0xFF for i in range(168, 200)).hex()
    assert c.ok("peek 0 0x2000 200") == bytes((i * 3) & 0xFF for i in range(200)).hex()
    writes = [ev_parse(e) for e in c.take_events() if e.startswith("write")]
    assert [w[2] for w in writes] == [R0 + 0x2000 + i for i in range(200)]


def test_failing_callbacks(served):
    vm, c = served
    before = vm.stats()
    c.ok("fail 0 0x20")
    c.ok("fail 1 0x10")
    # A read whose callback returns 1 is a bus error.
    assert vm.qtest("readl %#x" % (R0 + 0x20)) == "FAIL bus-error"
    assert vm.qtest("readb %#x" % (R0 + 0x23)) == "OK 0x" + "0" * 16  # does not touch 0x20
    # Acked range: a failing write is a bus error.
    assert vm.qtest("writel %#x 1" % (R1 + 0x10)) == "FAIL bus-error"
    # Posted range: the failing write is dropped, the guest sees OK.
    assert vm.qtest("writel %#x 0x12345678" % (R0 + 0x20)) == "OK"
    vm.ok("readb %#x" % (R0 + 0x30))  # the posted write has been served once this is answered
    assert c.ok("peek 0 0x20 4") == "00000000"
    # Acked range, good offset: written and acknowledged.
    assert vm.qtest("writel %#x 0x55aa55aa" % (R1 + 0x40)) == "OK"
    assert c.ok("peek 1 0x40 4") == "aa55aa55"
    after = vm.stats()
    assert after["bus_errors"] >= before["bus_errors"] + 2
    c.ok("nofail 0")
    assert vm.qtest("readl %#x" % (R0 + 0x20)) == "OK 0x" + "0" * 16


def test_unclaimed_range(env, vm2):
    vm = vm2
    assert vm.info(0)["claimed"] == "0"
    assert vm.qtest("vmmio_wait 0 100") == "FAIL timeout"
    assert vm.ok("readl %#x" % R0) == "0x00000000aaaaaaaa"
    assert vm.ok("readq %#x" % (R1 + 8)) == "0xaaaaaaaaaaaaaaaa"
    assert vm.ok("read %#x 16" % (R0 + 0x10)) == "0x" + "aa" * 16
    assert vm.ok("writel %#x 0x12345678" % R0) == ""
    assert vm.qtest("writel %#x 0x12345678" % R1) == "OK"  # acked, but nobody to ask
    c = env.client(vm.target(0))
    c.ok("register 0")
    vm.wait_claim(0)
    assert vm.info(0)["claimed"] == "1"
    assert vm.info(1)["claimed"] == "0"
    # The write before the claim went nowhere.
    assert c.ok("peek 0 0 4") == "00000000"
    assert vm.ok("readl %#x" % R0) == "0x" + "0" * 16


def test_unhandled_and_straddle(served):
    vm, c = served
    c.ok("log on")
    before = vm.stats()
    assert vm.ok("readl 0xe0000000") == "0x00000000ffffffff"
    assert vm.ok("readq 0xe0000008") == "0xffffffffffffffff"
    assert vm.qtest("writel 0xe0000000 5") == "OK"
    mid = vm.stats()
    assert mid["unhandled_reads"] == before["unhandled_reads"] + 2
    assert mid["unhandled_writes"] == before["unhandled_writes"] + 1
    # Straddling the two ranges: never half done, and the client sees nothing.
    assert vm.qtest("readq %#x" % (R1 - 4)) == "FAIL bus-error straddle"
    assert vm.qtest("writel %#x 1" % (R1 - 2)) == "FAIL bus-error straddle"
    after = vm.stats()
    assert after["straddles"] == mid["straddles"] + 2
    assert c.take_events() == []


def test_ram_access(env, vm2):
    vm = vm2
    vm.ok("write 0x1000 8 0x0102030405060708")
    assert vm.ok("readq 0x1000") == "0x0807060504030201"
    vm.ok("memset 0x2000 16 0x5c")
    assert vm.ok("read 0x1fff 18") == "0x00" + "5c" * 16 + "00"


def test_two_ranges_one_port_and_two_ports(env):
    vm = env.vm("0xd0000000,size=0x1000,port=@a", "0xd0001000,size=0x1000,port=@a",
                "0xd0002000,size=0x1000,port=0", "0xd0003000,size=0x1000,port=0")
    infos = [vm.info(g) for g in range(4)]
    assert [i["rid"] for i in infos] == ["0", "1", "0", "0"]
    assert [int(i["start"], 16) for i in infos] == [0xD0000000 + g * 0x1000 for g in range(4)]
    assert all(int(i["size"], 16) == 0x1000 for i in infos)
    assert infos[0]["port"] == infos[1]["port"]
    assert len({infos[0]["port"], infos[2]["port"], infos[3]["port"]}) == 3
    assert len(vm.listening) == 3
    # One connection claims both ranges of the shared port.
    a = env.client(vm.target(0))
    a.ok("register 0")
    a.ok("register 1")
    b = env.client(vm.target(2))
    b.ok("register 0")
    d = env.client(vm.target(3))
    d.ok("register 0")
    for g in range(4):
        vm.wait_claim(g)
    vm.ok("writel 0xd0000010 0x10")
    vm.ok("writel 0xd0001010 0x11")
    vm.ok("writel 0xd0002010 0x12")
    vm.ok("writel 0xd0003010 0x13")
    for g, v in enumerate((0x10, 0x11, 0x12, 0x13)):
        assert vm.value("readl %#x" % (0xD0000010 + g * 0x1000)) == v
    # Each write reached the right client and rid (the client memory is per rid).
    # (The test client's memory offset is the address & 0xffff.)
    assert a.ok("peek 0 0x10 1") == "10"
    assert a.ok("peek 1 0x1010 1") == "11"
    assert b.ok("peek 0 0x2010 1") == "12"
    assert d.ok("peek 0 0x3010 1") == "13"
    assert a.ok("peek 0 0x1010 1") == "00"
    assert b.ok("peek 1 0x2010 1") == "00"
    assert all(vm.info(g)["claimed"] == "1" for g in range(4))


def test_vm_rejects_bad_command_line(env):
    import subprocess

    from conftest import VM_EXE, build_path

    exe = build_path(VM_EXE)
    bad = [
        ["--vmmio", "0xd0000800,size=0x1000,port=0"],  # not 4 KiB aligned
        ["--vmmio", "0xd0000000,size=0x1000,port=0", "--vmmio", "0xd0000000,size=0x1000,port=0"],
        ["--vmmio", "0xd0000000,size=0x1000,irq=99,port=0"],
        ["--vmmio", "0x1000,size=0x1000,port=0"],  # overlaps RAM
        ["--bogus-option"],
    ]
    for args in bad:
        r = subprocess.run([exe, "--accel", "qtest", "--qtest", "stdio"] + args,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert r.stderr.strip(), args
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "--vmmio" in r.stdout + r.stderr
