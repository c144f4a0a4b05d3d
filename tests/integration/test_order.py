"""Order at the device boundary: MMIO requests reach coreio-ordermodel one at a time, in order."""

import os
import random
import subprocess
import re
import time

import pytest

from conftest import build_path

try:
    from conftest import scaled  # waits stretched for slow sanitizer builds
except ImportError:
    def scaled(timeout):
        return timeout

ORDERMODEL = "tests/clients/coreio-ordermodel"

# Two ranges on one port, served by one connection: rid 0 with posted writes
# (IRQ lines 5 and 7), rid 1 with acked writes (IRQ lines 6 and 9).
R0 = 0xD0000000
R1 = 0xD0001000
BASES = (R0, R1)
PINS = ((5, 7), (6, 9))
THREAD_PIN = 7  # the background thread drives rid 0, iid 1

# coreio-ordermodel's registers (tests/clients/ordermodel.c).
ID, SCRATCH = 0x000, 0x008
DMA_SRC, DMA_DST, NB_SRC, NB_DST, DMA_IRQ = 0x300, 0x308, 0x310, 0x318, 0x320
STATE0, STATE1, DST_COUNT, DMA_ERRS = 0x400, 0x408, 0x410, 0x418
NBSUM0, NBSUM1, NB_DONE, NB_ERRS = 0x420, 0x428, 0x430, 0x438
IRQ = 0x500
SEQ, WCOUNT, HASH, GHASH, NEST, GWCOUNT = 0x600, 0x608, 0x610, 0x618, 0x620, 0x628
THREAD_CTL, THREAD_OPS, THREAD_ERRS, THREAD_IRQS = 0x700, 0x708, 0x710, 0x718
FAIL = 0xF00

M64 = (1 << 64) - 1

REG_NAMES = {v: k for k, v in dict(
    ID=ID, SCRATCH=SCRATCH, DMA_SRC=DMA_SRC, DMA_DST=DMA_DST, NB_SRC=NB_SRC, NB_DST=NB_DST,
    DMA_IRQ=DMA_IRQ, STATE0=STATE0, STATE1=STATE1, DST_COUNT=DST_COUNT, DMA_ERRS=DMA_ERRS,
    NBSUM0=NBSUM0, NBSUM1=NBSUM1, NB_DONE=NB_DONE, NB_ERRS=NB_ERRS, IRQ=IRQ, SEQ=SEQ,
    WCOUNT=WCOUNT, HASH=HASH, GHASH=GHASH, NEST=NEST, GWCOUNT=GWCOUNT, THREAD_CTL=THREAD_CTL,
    THREAD_OPS=THREAD_OPS, THREAD_ERRS=THREAD_ERRS, THREAD_IRQS=THREAD_IRQS).items()}


def describe(cmd):
    """A qtest command with the model register it touches named, for failure messages."""
    parts = cmd.split()
    if len(parts) >= 2 and parts[0][:4] in ("read", "writ") and parts[1].startswith("0x"):
        addr = int(parts[1], 16)
        for rid, base in enumerate((R0, R1)):
            if base <= addr < base + 0x1000:
                off = addr - base
                name = "FAIL" if off >= FAIL else REG_NAMES.get(off, "%#x" % off)
                return "%s (rid %d %s)" % (cmd, rid, name)
    return cmd


def mix(h, v, k):
    """The model's write hash step (HASH: k = offset; GHASH: k = rid << 16 | offset)."""
    return (((h ^ v) * 0x100000001B3) + k + 1) & M64


def le64(b):
    return int.from_bytes(b, "little")


# Transports: (port kind, shm, client options).
TRANSPORTS = {
    "tcp": ("tcp", False, ()),
    "tcp-nocaps": ("tcp", False, ("--no-caps",)),
    "unix": ("unix", False, ()),
    "unix-shm": ("unix", True, ()),
}


def order_vm(env, transport, mem="64M"):
    """coreio-vm with the two ranges on one port of the given transport."""
    kind, shm, _ = TRANSPORTS[transport]
    if kind == "tcp":
        port = "@a"
    else:
        port = "unix:%s" % (env.tmp_path / "order.sock")
    tail = ",shm=on" if shm else ""
    return env.vm("%#x,size=0x1000,irq=5:7,port=%s%s" % (R0, port, tail),
                  "%#x,size=0x1000,irq=6:9,port=%s,writes=acked%s" % (R1, port, tail),
                  mem=mem)


def start_model(env, vm, transport, *opts):
    """Start coreio-ordermodel for both ranges and wait for READY and the VM's claims."""
    # A ThreadSanitizer build would sleep 1 s at exit while the model's threads run.
    tsan = (os.environ.get("TSAN_OPTIONS", "") + ":atexit_sleep_ms=0").lstrip(":")
    p = env.proc(ORDERMODEL, "--target", vm.target(0), "--ranges", "2",
                 *(TRANSPORTS[transport][2] + opts), env={"TSAN_OPTIONS": tsan})
    deadline = time.monotonic() + scaled(15)
    with p.cond:
        while "READY" not in p.stdout_lines:
            left = deadline - time.monotonic()
            if left <= 0 or (p.p.poll() is not None and not p.t_out.is_alive()):
                raise AssertionError("coreio-ordermodel did not get READY (exit %s); stderr:\n%s"
                                     % (p.p.poll(), p.stderr_tail()))
            p.cond.wait(min(left, 0.2))
    vm.wait_claim(0)
    vm.wait_claim(1)
    return p


class Script:
    """Pipelined qtest commands: all sent at once, answers read in order, with the IRQ
    notification lines that the VM printed before each answer (the VM's stdout order)."""

    IRQ_LINE = re.compile(r"^IRQ (raise|lower) (\d+)$")

    def __init__(self, vm, tag=""):
        self.vm = vm
        self.tag = tag
        with vm.cond:
            self.cursor = len(vm.stdout_lines)
        self.carry = []

    def run(self, cmds, timeout=30):
        """Run cmds; return [(answer, [(action, pin), ...] printed before it)]."""
        if not cmds:
            return []
        with self.vm.cond:
            # Lines since the last run: answers to commands run without this object (vm.ok)
            # are skipped, IRQ lines are kept for the first answer.
            for line in self.vm.stdout_lines[self.cursor:]:
                m = self.IRQ_LINE.match(line)
                if m:
                    self.carry.append((m.group(1), int(m.group(2))))
            self.cursor = len(self.vm.stdout_lines)
        self.vm.send("\n".join(cmds))
        for c in cmds:
            self.vm.answer(timeout, "answer to %r %s" % (c, self.tag))
        out, irqs, self.carry = [], self.carry, []
        with self.vm.cond:
            lines = self.vm.stdout_lines
            i = self.cursor
            while len(out) < len(cmds):
                assert i < len(lines), "stdout lost an answer %s" % self.tag
                m = self.IRQ_LINE.match(lines[i])
                if m:
                    irqs.append((m.group(1), int(m.group(2))))
                else:
                    out.append((lines[i], irqs))
                    irqs = []
                i += 1
            self.cursor = i
        while not self.vm.irqs.empty():  # the notifications are checked here, in stream order
            self.vm.irqs.get_nowait()
        return out

    def values(self, cmds, timeout=30):
        """Run read commands that must all succeed; return their values."""
        res = self.run(cmds, timeout)
        vals = []
        for c, (a, _) in zip(cmds, res):
            assert a.startswith("OK "), "%r -> %r %s" % (c, a, self.tag)
            vals.append(int(a.split()[1], 16))
        return vals


def reg(rid, off):
    return BASES[rid] + off


def writeq(rid, off, v):
    return "writeq %#x %#x" % (reg(rid, off), v)


def readq(rid, off):
    return "readq %#x" % reg(rid, off)


def check_no_nesting(script, tag=""):
    nest, = script.values([readq(0, NEST)])
    assert nest == 0, "%d MMIO callbacks started while another had not returned %s" % (nest, tag)


TRIES = 300
ADDR = 0x100000

PARAMS = [(t, w) for t in TRANSPORTS for w in ("posted", "acked")]
IDS = ["%s-%s" % p for p in PARAMS]


@pytest.mark.parametrize("transport,writes", PARAMS, ids=IDS)
def test_dma_read_in_write_then_read(env, transport, writes):
    """A write whose callback does a blocking DMA read, then at once a read of what it read."""
    vm = order_vm(env, transport)
    start_model(env, vm, transport)
    rid = 0 if writes == "posted" else 1
    s = Script(vm)
    rnd = random.Random(1)
    stale = []
    for i in range(TRIES):
        data = rnd.randbytes(16)
        res = s.run(["write %#x 16 0x%s" % (ADDR, data.hex()), writeq(rid, DMA_SRC, ADDR),
                     readq(rid, STATE0), readq(rid, STATE1)])
        assert [a for a, _ in res[:2]] == ["OK", "OK"], res
        got = [int(a.split()[1], 16) for a, _ in res[2:]]
        if got != [le64(data[:8]), le64(data[8:])]:
            stale.append(i)
    assert not stale, "%s/%s: %d of %d reads after a DMA_SRC write missed its data (tries %s)" % (
        transport, writes, len(stale), TRIES, stale[:10])
    check_no_nesting(s)


@pytest.mark.parametrize("transport,writes", PARAMS, ids=IDS)
def test_dma_write_in_write_then_read(env, transport, writes):
    """A write whose callback does a blocking DMA write, then a device read that counts it and a
    qtest read of the guest RAM it wrote."""
    vm = order_vm(env, transport)
    start_model(env, vm, transport)
    rid = 0 if writes == "posted" else 1
    vm.ok("memset %#x %d 0" % (ADDR, 16 * TRIES))
    s = Script(vm)
    rnd = random.Random(2)
    bad_count, bad_ram = [], []
    for i in range(TRIES):
        a, b = rnd.getrandbits(64), rnd.getrandbits(64)
        addr = ADDR + 16 * i
        cmds = [writeq(rid, STATE0, a), writeq(rid, STATE1, b), writeq(rid, DMA_DST, addr)]
        if writes == "acked":
            # The acked write's answer already says the DMA is done.
            cmds += ["read %#x 16" % addr, readq(rid, DST_COUNT)]
        else:
            # A posted write is ordered with the next read of the device only.
            cmds += [readq(rid, DST_COUNT), "read %#x 16" % addr]
        res = dict(zip(("s0", "s1", "dst", "x", "y"), [r for r, _ in s.run(cmds)]))
        ram, cnt = (res["x"], res["y"]) if writes == "acked" else (res["y"], res["x"])
        if cnt != "OK 0x%016x" % (i + 1):
            bad_count.append((i, cnt))
        if ram != "OK 0x" + (a.to_bytes(8, "little") + b.to_bytes(8, "little")).hex():
            bad_ram.append(i)
    assert not bad_count and not bad_ram, (
        "%s/%s: %d of %d DST_COUNT reads were stale (first %s), %d RAM reads missed the DMA "
        "write (first %s)" % (transport, writes, len(bad_count), TRIES, bad_count[:5],
                              len(bad_ram), bad_ram[:5]))
    check_no_nesting(s)


@pytest.mark.parametrize("via", ["irq", "dma_irq"])
@pytest.mark.parametrize("transport,writes", PARAMS, ids=IDS)
def test_irq_in_write_callback(env, transport, writes, via):
    """An IRQ update inside a write callback (alone, or after a blocking DMA) is seen by the VM
    before the answer to the next access (posted) or to the write itself (acked)."""
    vm = order_vm(env, transport)
    vm.ok("irq_intercept_in ioapic")
    start_model(env, vm, transport)
    rid = 0 if writes == "posted" else 1
    pin = PINS[rid][0]
    s = Script(vm)
    rnd = random.Random(3)
    late, wrong = [], []
    for i in range(TRIES):
        level = (i + 1) & 1
        if via == "irq":
            cmds = [writeq(rid, IRQ, level)]
        else:
            data = bytearray(rnd.randbytes(16))
            data[0] = (data[0] & ~1) | level
            cmds = ["write %#x 16 0x%s" % (ADDR, bytes(data).hex()), writeq(rid, DMA_IRQ, ADDR)]
        cmds += [readq(rid, SEQ), "irq_level %d" % pin]
        res = s.run(cmds)
        want = ("raise" if level else "lower", pin)
        # Where the edge must be: before the acked write's answer, or before the read's.
        deadline = len(cmds) - 3 if writes == "acked" else len(cmds) - 2
        seen = [k for k, (_, irqs) in enumerate(res) if want in irqs]
        if not seen or seen[0] > deadline:
            late.append((i, seen))
        if res[-1][0] != "OK %d" % level or [a for a, _ in res[:-2]] != ["OK"] * (len(cmds) - 2):
            wrong.append((i, [a for a, _ in res]))
    assert not late and not wrong, (
        "%s/%s/%s: %d of %d IRQ edges came after the answer they must precede (first %s); "
        "%d wrong answers (first %s)" % (transport, writes, via, len(late), TRIES, late[:5],
                                         len(wrong), wrong[:3]))
    check_no_nesting(s)


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_two_ranges_interleaved(env, transport):
    """Requests of two ranges on one connection, posted and acked, interleaved with blocking DMA
    in callbacks: each read sees every earlier write of either range, in order (GHASH)."""
    vm = order_vm(env, transport)
    start_model(env, vm, transport)
    s = Script(vm)
    rnd = random.Random(4)
    ghash = 0
    hashes = [0, 0]
    state = [[0, 0], [0, 0]]
    seqs = [0, 0]
    mismatches = []
    for i in range(TRIES):
        cmds, expect = [], []
        for _ in range(rnd.randint(3, 6)):
            rid = rnd.randrange(2)
            op = rnd.choice(("src", "src", "seq", "read", "ghash"))
            if op == "src":
                addr = ADDR + 0x1000 * rid + 16 * rnd.randrange(64)
                data = rnd.randbytes(16)
                cmds += ["write %#x 16 0x%s" % (addr, data.hex()), writeq(rid, DMA_SRC, addr)]
                expect += ["OK", "OK"]
                state[rid] = [le64(data[:8]), le64(data[8:])]
                hashes[rid] = mix(hashes[rid], addr, DMA_SRC)
                ghash = mix(ghash, addr, rid << 16 | DMA_SRC)
            elif op == "seq":
                v = rnd.getrandbits(64)
                cmds.append(writeq(rid, SEQ, v))
                expect.append("OK")
                seqs[rid] = v
                hashes[rid] = mix(hashes[rid], v, SEQ)
                ghash = mix(ghash, v, rid << 16 | SEQ)
            elif op == "read":
                off = rnd.choice((STATE0, STATE1, SEQ, HASH))
                cmds.append(readq(rid, off))
                v = {STATE0: state[rid][0], STATE1: state[rid][1], SEQ: seqs[rid],
                     HASH: hashes[rid]}[off]
                expect.append("OK 0x%016x" % v)
            else:
                cmds.append(readq(rid, GHASH))
                expect.append("OK 0x%016x" % ghash)
        got = [a for a, _ in s.run(cmds)]
        if got != expect:
            k = next(j for j in range(len(got)) if got[j] != expect[j])
            mismatches.append((i, cmds[k], got[k], expect[k]))
    assert not mismatches, "%s: %d of %d rounds answered out of order (first %s)" % (
        transport, len(mismatches), TRIES, mismatches[:3])
    check_no_nesting(s)


def test_model_usage(env):
    """The model's command line: --help, a bad option, an unreachable target."""
    exe = build_path(ORDERMODEL)
    p = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0 and "--target" in p.stdout
    p = subprocess.run([exe, "--bogus"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 1 and "unknown argument '--bogus'" in p.stderr
    p = subprocess.run([exe, "--ranges", "3"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 1 and "--ranges: bad or missing value '3'" in p.stderr
    p = subprocess.run([exe, "--target", "unix:%s" % (env.tmp_path / "nobody.sock")],
                       capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    assert p.returncode == 1 and "connect unix:" in p.stderr, p.stderr


@pytest.mark.parametrize("how", ["eof", "sigterm"])
def test_model_exits(env, how):
    """The model exits with status 0 when its stdin closes or on SIGTERM, even with its thread
    running."""
    vm = order_vm(env, "unix")
    p = start_model(env, vm, "unix", "--thread")
    if how == "eof":
        p.p.stdin.close()
    else:
        p.p.terminate()
    assert p.wait_exit() == 0, p.stderr_tail()
