"""Fault injection in coreio-vm (docs/fault-injection.md): every rule kind as the guest sees it,
from qtest and from --fault-socket, with counts, logs and --record events."""

import os
import socket
import sys
import threading
import time

import pytest

from conftest import R0, R1, RESPONDER, guest_vm, scaled
from iommu_helpers import FADDR, FCTL, FINFO, FSTS, Iommu

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "scripts"))
from kvmcheck import kvm_unavailable  # noqa: E402
from replaylib import recording  # noqa: E402

IOMMU_BASE = 0xFD000000
INJECTED = 9  # FINFO reason of an injected IOMMU fault
EFAULT = -14


class FaultSock:
    """A --fault-socket client: one command line out, one answer line back (raw fd reads into
    our own line buffer, every wait bounded)."""

    def __init__(self, path, timeout=10):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(scaled(timeout))
        self.s.connect(path)
        self.buf = b""

    def line(self, timeout=10):
        deadline = time.monotonic() + scaled(timeout)
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("--fault-socket: no answer line within %ss" % timeout)
            self.s.settimeout(left)
            chunk = self.s.recv(4096)
            if not chunk:
                raise AssertionError("--fault-socket closed; pending %r" % self.buf)
            self.buf += chunk
        ln, self.buf = self.buf.split(b"\n", 1)
        return ln.decode("latin-1")  # answers may quote any byte a client sent

    def raw(self, data):
        self.s.sendall(data)

    def cmd(self, text, timeout=10):
        self.raw(text.encode() + b"\n")
        return self.line(timeout)

    def ok(self, text):
        a = self.cmd(text)
        assert a.startswith("OK"), "%r -> %r" % (text, a)
        return a[2:].strip()

    def close(self):
        self.s.close()


@pytest.fixture
def sockets():
    """FaultSock objects to close after the test."""
    made = []
    yield made
    for s in made:
        s.close()


def connect(sockets, path):
    deadline = time.monotonic() + scaled(5)
    while True:
        try:
            s = FaultSock(path)
            sockets.append(s)
            return s
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def kv(answer):
    return {k: v for k, v in (x.split("=", 1) for x in answer.split() if "=" in x)}


def served_vm(env, *extra, vmmio=None):
    vm = env.vm(*(vmmio or ("%#x,size=0x10000,irq=5:7,port=0" % R0,)), extra=list(extra))
    c = env.client(vm.target(0))
    c.ok("register 0")
    vm.wait_claim(0)
    return vm, c


def accesses(c):
    """The (kind, address) of the accesses the client saw since the last call."""
    return [(e.split()[0], int(e.split()[2], 16)) for e in c.take_events()]


def test_bus_error_read_at_offset_once(env):
    vm, c = served_vm(env)
    c.ok("log on")
    c.ok("poke 0 0x10 44332211")
    before = vm.stats()["bus_errors"]
    assert vm.ok("inject 0 bus-error dir=read offset=0x10 count=1") == "rule=1"
    c.take_events()
    # Other offsets and writes pass; the first read at 0x10 fails and never reaches the client.
    vm.ok("writel %#x 0x55667788" % (R0 + 0x14))
    assert vm.value("readl %#x" % (R0 + 0x20)) == 0
    assert vm.qtest("readl %#x" % (R0 + 0x10)) == "FAIL bus-error"
    assert accesses(c) == [("write", R0 + 0x14), ("read", R0 + 0x20)]
    # count=1: the next one goes through.
    assert vm.value("readl %#x" % (R0 + 0x10)) == 0x11223344
    assert accesses(c) == [("read", R0 + 0x10)]
    assert vm.stats()["bus_errors"] == before + 1
    lst = vm.ok("inject_list 0")
    assert lst.startswith("rules=1 | range=0 #1 bus-error dir=read offset=0x10-0x10 left=0 "
                          "hits=1"), lst
    st = kv(vm.ok("inject_stats"))
    assert st["bus-error"] == "1" and st["delay"] == "0"
    vm.wait_stderr(r"inject: range 0: rule #1 bus-error: addr=%#x size=4 dir=read" % (R0 + 0x10))


def test_bus_error_nth_every_and_clear(env):
    vm, c = served_vm(env)
    c.ok("log on")
    vm.ok("inject 0 bus-error nth=3 offset=0x100-0x1ff")
    c.take_events()
    results = [vm.qtest("readb %#x" % (R0 + 0x100 + i)) for i in range(5)]
    assert [r.startswith("OK") for r in results] == [True, True, False, True, True], results
    assert results[2] == "FAIL bus-error"
    assert (("read", R0 + 0x102)) not in accesses(c)
    # Every write, until cleared: posted writes fail too and never leave.
    vm.ok("inject 0 bus-error dir=write")
    for i in range(3):
        assert vm.qtest("writel %#x %d" % (R0 + 0x40, i)) == "FAIL bus-error"
    assert vm.value("readl %#x" % (R0 + 0x40)) == 0
    assert accesses(c) == [("read", R0 + 0x40)]
    assert kv(vm.ok("inject_stats 0"))["bus-error"] == "4"
    assert vm.ok("inject_clear 0") == "cleared=2"
    vm.ok("writel %#x 7" % (R0 + 0x40))
    assert vm.value("readl %#x" % (R0 + 0x40)) == 7
    assert vm.ok("inject_list") == "rules=0"


def test_delay_does_not_hold_up_others(env):
    path = str(env.tmp_path / "f.sock")
    vm = env.vm("%#x,size=0x10000,irq=5,port=0" % R0, "%#x,size=0x10000,irq=6,port=0" % R1,
                extra=["--fault-socket", "unix:" + path])
    a = env.client(vm.target(0))
    b = env.client(vm.target(1))
    a.ok("register 0")
    b.ok("register 0")
    vm.wait_claim(0)
    vm.wait_claim(1)
    vm.ok("irq_intercept_in ioapic")
    a.ok("poke 0 0x8 efbeadde")
    b.ok("poke 0 0x8 0df0ad0b")
    fs = FaultSock(path)
    try:
        delay = 600
        vm.ok("inject 0 delay=%d dir=read count=1" % delay)
        t0 = time.monotonic()
        vm.send("readl %#x" % (R0 + 8))
        # Meanwhile: the other client's IRQ reaches the guest, its DMA and the control socket
        # are served, well before the delayed read completes.
        b.ok("irq 0 0 1")
        assert vm.wait_irq(timeout=delay / 1000 * 0.8) == ("raise", 6)
        b.ok("dma_read 0 0 0x1000 8", timeout=delay / 1000 * 0.8)
        assert fs.cmd("inject_stats", timeout=delay / 1000 * 0.8).startswith("OK")
        assert time.monotonic() - t0 < delay / 1000, "the others were held up by the delay"
        ans = vm.answer(timeout=10)
        took = time.monotonic() - t0
        assert ans == "OK 0x00000000deadbeef"
        assert took >= delay / 1000, "the delayed read completed after %.3f s" % took
        # count=1: the next read is not delayed; range 1 never was.
        t1 = time.monotonic()
        assert vm.value("readl %#x" % (R0 + 8)) == 0xDEADBEEF
        assert vm.value("readl %#x" % (R1 + 8)) == 0x0BADF00D
        assert time.monotonic() - t1 < delay / 1000
    finally:
        fs.close()


def test_delay_posted_write(env):
    vm, c = served_vm(env)
    vm.ok("inject 0 delay=250 dir=write offset=0x20")
    t0 = time.monotonic()
    vm.ok("writel %#x 0x1234" % (R0 + 0x20))
    assert time.monotonic() - t0 >= 0.25
    assert vm.value("readl %#x" % (R0 + 0x20)) == 0x1234  # reads are not delayed
    t0 = time.monotonic()
    vm.ok("writel %#x 0x1" % (R0 + 0x24))  # another offset: not delayed
    assert time.monotonic() - t0 < 0.25
    assert kv(vm.ok("inject_stats"))["delay"] == "1"


def test_irq_drop(env):
    vm, c = served_vm(env)
    vm.ok("irq_intercept_in ioapic")
    vm.ok("inject 0 irq-drop line=0 count=2")
    for _ in range(2):
        c.ok("irq 0 0 1")
        vm.no_irq(0.3)
        assert vm.ok("irq_level 5") == "0"
        c.ok("irq 0 0 0")  # the client's lower changes nothing either
        vm.no_irq(0.1)
    # Line 1 is not concerned; the third raise of line 0 works.
    c.ok("irq 0 1 1")
    assert vm.wait_irq() == ("raise", 7)
    c.ok("irq 0 0 1")
    assert vm.wait_irq() == ("raise", 5)
    assert vm.ok("irq_level 5") == "1"
    c.ok("irq 0 0 0")
    assert vm.wait_irq() == ("lower", 5)
    assert kv(vm.ok("inject_stats"))["irq-drop"] == "2"
    vm.wait_stderr(r"rule #1 irq-drop: line=0 guest_line=5 raise dropped", count=2)


def test_irq_repeat(env):
    vm, c = served_vm(env)
    vm.ok("irq_intercept_in ioapic")
    vm.ok("inject 0 irq-repeat line=1")
    c.ok("irq 0 1 1")
    assert [vm.wait_irq() for _ in range(3)] == [("raise", 7), ("lower", 7), ("raise", 7)]
    assert vm.ok("irq_level 7") == "1"
    c.ok("irq 0 1 0")
    assert vm.wait_irq() == ("lower", 7)
    c.ok("irq 0 1 1")  # count 1 by default: a single edge now
    assert vm.wait_irq() == ("raise", 7)
    vm.no_irq(0.3)
    assert kv(vm.ok("inject_stats"))["irq-repeat"] == "1"


def test_dma_fail(env):
    vm, c = served_vm(env)
    vm.ok("memset 0x5000 32 0x77")
    vm.ok("inject 0 dma-fail dir=write count=1")
    before = vm.stats()["dma_faults"]
    # Reads are not concerned.
    c.ok("dma_read 0 0 0x5000 16")
    assert c.err("dma_write 0 0 0x5000 16 3") == EFAULT
    assert vm.ok("read 0x5000 32") == "0x" + "77" * 32  # guest RAM untouched
    assert vm.stats()["dma_faults"] == before + 1
    c.ok("dma_write 0 0 0x5000 16 3")
    assert vm.ok("read 0x5000 1") != "0x77"
    # An address window.
    vm.ok("inject 0 dma-fail addr=0x6000-0x6fff count=all")
    c.ok("dma_read 0 0 0x5000 8")
    assert c.err("dma_read 0 0 0x6010 8") == EFAULT
    assert c.err("dma_write 0 0 0x6ff0 8 1") == EFAULT
    assert kv(vm.ok("inject_stats"))["dma-fail"] == "3"
    vm.wait_stderr(r"rule #1 dma-fail: mid=0 sid=0 addr=0x5000 len=16 dir=write")


def test_iommu_fault(env):
    vm, c = served_vm(env, "--iommu", "id=1,base=%#x,irq=9" % IOMMU_BASE)
    vm.ok("irq_intercept_in ioapic")
    mmu = Iommu(vm, IOMMU_BASE)
    mmu.wr(FCTL, 1)
    vm.ok("inject 0 iommu-fault count=1")
    # mid 0 is not concerned.
    c.ok("dma_read 0 0 0x1000 8")
    assert c.err("dma_read 1 2 0x40000000 8") == EFAULT
    assert vm.wait_irq() == ("raise", 9)
    assert mmu.rd(FSTS) & 1
    assert mmu.rd(FADDR) == 0x40000000
    fi = mmu.rd(FINFO)
    assert (fi & 0xF, fi >> 8 & 1, fi >> 16 & 0xFF) == (2, 0, INJECTED)
    mmu.wr(FSTS, 3)
    assert vm.wait_irq() == ("lower", 9)
    assert kv(vm.ok("inject_stats"))["iommu-fault"] == "1"


def test_bad_commands_qtest(env):
    vm, _ = served_vm(env)
    cases = {
        "inject": "FAIL missing argument",
        "inject 0": "FAIL missing argument",
        "inject 5 bus-error": "FAIL bad argument '5'",
        "inject x bus-error": "FAIL bad argument 'x'",
        "inject 0 explode": "FAIL unknown rule kind 'explode'",
        "inject 0 bus-error dir=sideways": "FAIL bad argument 'dir=sideways'",
        "inject 0 bus-error line=0": "FAIL bad argument 'line=0'",
        "inject 0 irq-drop line=2": "FAIL bad argument 'line=2'",
        "inject 0 delay=0": "FAIL bad argument 'delay=0'",
        "inject 0 bus-error count=0": "FAIL bad argument 'count=0'",
        "inject 0 bus-error offset=0x20-0x10": "FAIL bad argument 'offset=0x20-0x10'",
        "inject 0 bus-error nth=1 nth=2": "FAIL bad argument 'nth=2'",
        "inject_clear 0 1": "FAIL bad argument '1'",
        "inject_list 99": "FAIL bad argument '99'",
    }
    for cmd, want in cases.items():
        a = vm.qtest(cmd)
        assert a.startswith(want), "%r -> %r" % (cmd, a)
    assert vm.ok("inject_list") == "rules=0"
    # Still serving.
    assert vm.ok("inject 0 bus-error") == "rule=1"


def test_too_many_rules(env):
    vm, _ = served_vm(env)
    for i in range(16):
        vm.ok("inject 0 irq-drop")
    assert vm.qtest("inject 0 irq-drop").startswith("FAIL too many rules on range 0")
    assert vm.ok("inject_clear") == "cleared=16"
    vm.ok("inject 0 irq-drop")


def test_fault_socket(env, sockets):
    path = str(env.tmp_path / "fault.sock")
    vm, c = served_vm(env, "--fault-socket", "unix:" + path)
    vm.wait_stderr(r"fault-injection socket ready at unix:" + path)
    vm.ok("irq_intercept_in ioapic")
    s1 = connect(sockets, path)
    s2 = connect(sockets, path)
    assert s1.ok("inject 0 bus-error dir=read offset=0x10 count=1") == "rule=1"
    assert s2.ok("inject 0 irq-repeat line=0") == "rule=2"
    assert vm.qtest("readl %#x" % (R0 + 0x10)) == "FAIL bus-error"
    vm.value("readl %#x" % (R0 + 0x10))
    c.ok("irq 0 0 1")
    assert [vm.wait_irq() for _ in range(3)] == [("raise", 5), ("lower", 5), ("raise", 5)]
    lst = s2.ok("inject_list")
    assert "#1 bus-error" in lst and "#2 irq-repeat line=0 left=0 hits=1" in lst, lst
    st = kv(s1.ok("inject_stats 0"))
    assert (st["bus-error"], st["irq-repeat"]) == ("1", "1")
    # The same rules as qtest's: its list agrees.
    assert vm.ok("inject_list") == lst
    # Errors name the bad word; the connection stays.
    assert s1.cmd("frob 1") == "FAIL unknown command 'frob'"
    assert s1.cmd("inject 7 bus-error").startswith("FAIL bad argument '7'")
    assert s1.cmd("inject 0 bus-error dir=up").startswith("FAIL bad argument 'dir=up'")
    assert s1.cmd("readl 0xd0000000") == "FAIL unknown command 'readl'"
    s1.raw(b"\n  \n")  # empty lines get no answer
    s1.raw(b"x" * 3000 + b"\n")
    assert s1.line() == "FAIL line too long"
    s1.raw(b"inject_list\x00 0\n")
    assert s1.line().startswith("FAIL bad input")
    s1.raw(bytes(range(1, 256)).replace(b"\n", b"") + b"\n")
    assert s1.line().startswith("FAIL")
    # Several commands in one write, and a line split across writes.
    s1.raw(b"inject_stats\ninject_cl")
    assert s1.line().startswith("OK bus-error=1")
    s1.raw(b"ear\n")
    assert s1.line() == "OK cleared=2"
    assert s2.ok("inject_list") == "rules=0"
    s2.close()
    assert vm.ok("inject_list") == "rules=0"
    # A client that leaves does not disturb the others; new ones are served.
    s3 = connect(sockets, path)
    assert s3.ok("inject_stats").startswith("bus-error=1")
    assert vm.alive()


def test_fault_socket_many_clients_and_garbage(env, sockets):
    path = str(env.tmp_path / "fault.sock")
    vm, _ = served_vm(env, "--fault-socket", "unix:" + path)
    socks = [connect(sockets, path) for _ in range(8)]
    extra = connect(sockets, path)
    assert extra.line() == "FAIL too many connections"
    errors = []

    def hammer(s, seed):
        import random
        rnd = random.Random(seed)
        try:
            for _ in range(50):
                junk = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 80)))
                junk = junk.replace(b"\n", b" ")
                s.raw(junk + b"\n")
                if junk.strip(b" \t\r"):
                    a = s.line()
                    if not (a.startswith("OK") or a.startswith("FAIL")):
                        errors.append(a)
        except Exception as e:  # reported below
            errors.append(repr(e))

    seed = int(time.time())
    print("fault-socket garbage seed", seed)
    ts = [threading.Thread(target=hammer, args=(s, seed + i)) for i, s in enumerate(socks)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(scaled(30))
    assert not errors, errors
    assert vm.alive()
    assert vm.ok("inject_stats").startswith("bus-error=")


def test_fault_socket_bad_path(env, tmp_path):
    f = tmp_path / "plain"
    f.write_text("x")
    import subprocess
    from conftest import VM_EXE, build_path
    p = subprocess.run([build_path(VM_EXE), "--accel", "qtest", "--vmmio",
                        "%#x,size=0x1000,port=0" % R0, "--fault-socket", "unix:" + str(f)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=scaled(10))
    assert p.returncode != 0
    assert "exists and is not a socket" in p.stderr
    p = subprocess.run([build_path(VM_EXE), "--accel", "qtest", "--fault-socket", "tcp:1"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=scaled(10))
    assert p.returncode == 2 and "--fault-socket 'tcp:1'" in p.stderr


def test_record_inject_events(env, tmp_path):
    path = str(tmp_path / "i.pcapng")
    vm, c = served_vm(env, "--record", path)
    vm.ok("inject 0 bus-error dir=read count=1")
    vm.ok("inject 0 dma-fail")
    assert vm.qtest("readl %#x" % (R0 + 0x30)) == "FAIL bus-error"
    assert c.err("dma_read 0 0 0x2000 8") == EFAULT
    vm.p.stdin.close()  # the script ends: coreio-vm exits and closes the file
    assert vm.wait_exit() == 0
    env.procs.remove(vm)  # its end is checked here, not as a death during the test
    vm.stop()
    _, recs = recording.read(path)
    inj = [r for r in recs if r.kind == 2 and r.event_type == 8]
    got = [(r.event_fields()["kind"], r.event_fields()["range"]) for r in inj]
    assert got == [("bus-error", "0"), ("dma-fail", "0")], inj
    f = inj[0].event_fields()
    assert (f["addr"], f["size"], f["dir"], f["rule"]) == ("%#x" % (R0 + 0x30), "4", "read", "1")
    assert inj[1].conn > 0


def test_kvm_vcpu_delay(env, sockets):
    """With --accel kvm a vCPU's access waits for its delay (a timer; the vCPU sleeps) and the
    guest still sees its device work; the rule comes from --fault-socket."""
    reason = kvm_unavailable()
    if reason:
        pytest.skip("KVM unavailable: %s" % reason)
    path = str(env.tmp_path / "fault.sock")
    vm = guest_vm(env, "rpi_inside", "%#x,size=0x1000,irq=5,port=0" % R0, append="expect=echo",
                  extra=("--fault-socket", "unix:" + path))
    vm.wait_stderr(r"fault-injection socket ready")
    s = connect(sockets, path)
    # The guest polls with reads until a client claims the range: writes come after.
    assert s.ok("inject 0 delay=150 dir=write count=3") == "rule=1"
    t0 = time.monotonic()
    env.proc(RESPONDER, vm.listening[0])
    vm.expect_success(60)
    assert time.monotonic() - t0 >= 0.45
    # The guest ended coreio-vm: its log tells.
    vm.wait_stderr(r"inject: range 0: rule #1 delay: addr=0xd00000\w+ size=\d dir=write "
                   r"delay_ms=150", count=3)
