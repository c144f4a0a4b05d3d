"""coreio-vm --record FILE: the pcapng recording of the device boundary (docs/record-replay.md)."""

import os
import shutil
import signal
import struct
import subprocess
import sys

import pytest

from conftest import R0, R1, SANITIZER, VM_EXE, build_path, scaled, seed_pattern

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "scripts"))
from replaylib import recording  # noqa: E402
from replaylib.recording import RecordingError  # noqa: E402

OP_READ, OP_WRITE, OP_WRITEA, OP_LREAD, OP_LWRITE = 0x01, 0x02, 0x05, 0x21, 0x25
OP_PING, OP_IRQ, OP_SHM_MAP, OP_CLAIM, OP_RESET = 0x00, 0x41, 0x50, 0xF0, 0xFF
DMA_BASE = 0x100000


class Frame:
    """The header fields of a recorded CoreIO frame."""

    def __init__(self, rec):
        w0, w1, w2 = struct.unpack_from("<QQQ", rec.body, 0)
        self.rec = rec
        self.iface = w0 & 0xFF
        self.error = bool(w0 >> 30 & 1)
        self.origin = bool(w0 >> 31 & 1)
        self.tag = w0 >> 32
        self.op = w1 & 0xFF
        self.size = w1 >> 16 & 0x3F
        self.mask = w1 >> 32
        self.addr = w2

    def data(self, n):
        return self.rec.body[24:24 + n]


def frames(records, kind=None, op=None):
    out = []
    for r in records:
        if r.kind == 2 or (kind is not None and r.kind != kind):
            continue
        f = Frame(r)
        if op is None or f.op == op:
            out.append(f)
    return out


def events(records, name=None):
    return [r for r in records if r.kind == 2 and (name is None or r.event_name == name)]


def answer_to(records, req, kind):
    """The frame of `kind` on req's connection, after req, with req's tag and op."""
    for r in records:
        if r.seq > req.rec.seq and r.kind == kind and r.conn == req.rec.conn:
            f = Frame(r)
            if f.tag == req.tag and f.op == req.op:
                return f
    raise AssertionError("no answer to tag %d op %#x" % (req.tag, req.op))


def stop_vm(env, vm, sig=signal.SIGTERM):
    """End coreio-vm with sig, wait for its exit; it must not crash or report a sanitizer error."""
    vm.p.send_signal(sig)
    rc = vm.wait_exit(10)
    vm.t_err.join(5)
    env.procs.remove(vm)  # its end is checked here, not as a death during the test
    vm.stop()
    assert rc in (0, 128 + sig), "coreio-vm exit %s; stderr:\n%s" % (rc, vm.stderr_tail())
    with vm.cond:
        assert not [ln for ln in vm.stderr_lines if SANITIZER.search(ln)], vm.stderr_tail(60)


def check_file(path):
    """Read it; the common invariants of every recording."""
    ifaces, recs = recording.read(path)
    assert ifaces[0]["name"] == "coreio-vm"
    seqs = [r.seq for r in recs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for r in recs:
        if r.conn:
            assert ifaces[r.iface]["name"] == "coreio conn %d" % r.conn, r
        else:
            assert r.iface == 0
    notes = events(recs, "note")
    assert notes and notes[0] is recs[0] and recs[0].event_text.startswith("start accel=")
    assert any(n.event_text.startswith("shm off") for n in notes)
    return ifaces, recs


def tshark_count(path):
    """Packets tshark lists in path, or skip when tshark is not installed."""
    exe = shutil.which("tshark")
    if not exe:
        return None
    p = subprocess.run([exe, "-r", path, "-T", "fields", "-e", "frame.number"],
                       capture_output=True, text=True, timeout=scaled(60),
                       env=dict(os.environ, HOME=os.environ.get("HOME", "/tmp")))
    assert p.returncode == 0, "tshark -r %s: %s" % (path, p.stderr)
    return len([ln for ln in p.stdout.splitlines() if ln.strip()])


def test_session_recorded(env, tmp_path):
    path = str(tmp_path / "rec.pcapng")
    vm = env.vm("%#x,size=0x10000,irq=5,port=@a" % R0,
                "%#x,size=0x10000,irq=6,port=@a,writes=acked" % R1,
                extra=("--record", path))
    vm.wait_stderr(r"--record: shared-memory DMA is not offered")
    c = env.client(vm.target(0))
    c.ok("register 0")
    c.ok("register 1")
    vm.wait_claim(0)
    vm.wait_claim(1)
    vm.ok("irq_intercept_in ioapic")
    # MMIO of several sizes, posted on range 0, acked on range 1.
    vm.ok("writeb %#x 0xa5" % (R0 + 0x10))
    vm.ok("writew %#x 0xbeef" % (R0 + 0x20))
    vm.ok("writel %#x 0xdeadbeef" % (R0 + 0x30))
    vm.ok("writeq %#x 0x0123456789abcdef" % (R0 + 0x40))
    assert vm.value("readl %#x" % (R0 + 0x30)) == 0xDEADBEEF
    assert vm.value("readq %#x" % (R0 + 0x40)) == 0x0123456789ABCDEF
    wide = bytes(range(32))
    vm.ok("write %#x 32 0x%s" % (R1 + 0x100, wide.hex()))
    assert vm.ok("read %#x 32" % (R1 + 0x100)) == "0x" + wide.hex()
    # IRQ raise and lower.
    c.ok("irq 0 0 1")
    assert vm.wait_irq() == ("raise", 5)
    c.ok("irq 0 0 0")
    assert vm.wait_irq() == ("lower", 5)
    # DMA: a 32-byte read, a 4 KiB read, a blocking and a non-blocking write.
    small = bytes((i * 3 + 1) & 0xFF for i in range(32))
    big = bytes((i * 7 + 5) & 0xFF for i in range(4096))
    vm.ok("write %#x 32 0x%s" % (DMA_BASE, small.hex()))
    for off in range(0, 4096, 1024):
        vm.ok("write %#x 1024 0x%s" % (DMA_BASE + 0x1000 + off, big[off:off + 1024].hex()))
    c.ok("dma_read 0 0 %#x 32" % DMA_BASE)
    c.ok("dma_read 0 0 %#x 4096" % (DMA_BASE + 0x1000))
    c.ok("dma_write 0 0 %#x 32 7" % (DMA_BASE + 0x3000))
    c.ok("dma_write 0 0 %#x 64 9 nb" % (DMA_BASE + 0x4000), timeout=20)
    # The non-blocking write has landed once the guest reads it back.
    assert vm.ok("read %#x 64" % (DMA_BASE + 0x4000)) == "0x" + seed_pattern(9, 64).hex()
    vm.ok("reset")
    c.ok("disconnect")
    vm.wait_stderr(r"client \d+ .*released range 1")
    stop_vm(env, vm)
    m = vm.wait_stderr(r"--record \S+: (\d+) records")[0]
    ifaces, recs = check_file(path)
    assert int(m.group(1)) == len(recs)

    # Interfaces: one per connection, described "PEER on PORT".
    conns = {r.conn for r in recs if r.conn}
    assert conns
    for n in conns:
        (iid,) = [i for i, d in ifaces.items() if d["name"] == "coreio conn %d" % n]
        assert " on 127.0.0.1:" in ifaces[iid]["description"]
    # Events in order: connect, claims, resets, release, close.
    names = [r.event_name for r in events(recs)]
    assert names.index("connect") < names.index("claim") < names.index("reset")
    assert names.index("reset") < names.index("close") < names.index("release")
    claims = [r.event_fields() for r in events(recs, "claim")]
    assert [(x["rid"], x["range"], x["start"]) for x in claims] == [
        ("0", "0", "%#x" % R0), ("1", "1", "%#x" % R1)]
    resets = [r.event_fields()["range"] for r in events(recs, "reset")]
    assert resets == ["0", "1"]
    # The claims' frames came from the client (kind 0).
    claim_frames = frames(recs, 0, OP_CLAIM)
    assert [f.iface for f in claim_frames] == [0, 1]
    # MMIO requests the VM sent, with address and data, in order.
    writes = [f for f in frames(recs, 1) if f.op in (OP_WRITE, OP_WRITEA) and not f.origin]
    got = [(f.addr, f.size, f.data(f.size)) for f in writes]
    assert got == [
        (R0 + 0x10, 1, b"\xa5"),
        (R0 + 0x20, 2, (0xBEEF).to_bytes(2, "little")),
        (R0 + 0x30, 4, (0xDEADBEEF).to_bytes(4, "little")),
        (R0 + 0x40, 8, (0x0123456789ABCDEF).to_bytes(8, "little")),
        (R1 + 0x100, 32, wide),
    ]
    assert [f.op for f in writes] == [OP_WRITE] * 4 + [OP_WRITEA]
    # The acked write's acknowledgement came back from the client.
    assert not answer_to(recs, writes[-1], 0).error
    reads = [f for f in frames(recs, 1, OP_READ) if not f.origin]
    assert [(f.addr, f.size) for f in reads] == [(R0 + 0x30, 4), (R0 + 0x40, 8), (R1 + 0x100, 32)]
    assert answer_to(recs, reads[0], 0).data(4) == (0xDEADBEEF).to_bytes(4, "little")
    assert answer_to(recs, reads[2], 0).data(32) == wide
    # The IRQ line changes, level 1 then 0.
    irqs = frames(recs, 0, OP_IRQ)
    assert [(f.iface, f.addr, struct.unpack_from("<Q", f.rec.body, 24)[0]) for f in irqs] == [
        (0, 0, 1), (0, 0, 0)]
    # DMA: requests from the client, answers from the VM with the data.
    dreads = [f for f in frames(recs, 0) if f.origin and f.op in (OP_READ, OP_LREAD)]
    first = [f for f in dreads if f.addr == DMA_BASE]
    assert len(first) == 1
    assert answer_to(recs, first[0], 1).data(32) == small
    data = b""
    for f in sorted((f for f in dreads if DMA_BASE + 0x1000 <= f.addr < DMA_BASE + 0x2000),
                    key=lambda f: f.addr):
        n = f.size if f.op == OP_READ else f.mask
        data += answer_to(recs, f, 1).data(n)
    assert data == big
    dwrites = [f for f in frames(recs, 0) if f.origin and f.op in (OP_WRITEA, OP_LWRITE)]
    w1 = [f for f in dwrites if f.addr == DMA_BASE + 0x3000]
    assert len(w1) == 1 and w1[0].data(32) == seed_pattern(7, 32)
    assert not answer_to(recs, w1[0], 1).error
    w2 = b"".join(f.data(f.size if f.op == OP_WRITEA else f.mask) for f in
                  sorted((f for f in dwrites if DMA_BASE + 0x4000 <= f.addr < DMA_BASE + 0x5000),
                         key=lambda f: f.addr))
    assert w2 == seed_pattern(9, 64)
    # RESET frames went to the client; no SHM_MAP (no shared memory while recording).
    assert frames(recs, 1, OP_RESET)
    assert not frames(recs, 1, OP_SHM_MAP)
    n = tshark_count(path)
    if n is not None:
        assert n == len(recs)


QTEST_SCRIPT = [
    "writel %#x 0x11223344" % (R0 + 0x8),
    "readl %#x" % (R0 + 0x8),
    "readw %#x" % (R0 + 0xA),
    "writeq %#x 0x8877665544332211" % (R1 + 0x10),
    "readq %#x" % (R1 + 0x10),
    "read %#x 16" % (R1 + 0x10),
    "readb %#x" % (R0 + 0x20000),  # outside every range
    "stats",
]


def run_script(env, extra):
    vm = env.vm("%#x,size=0x10000,irq=5,port=@a" % R0,
                "%#x,size=0x10000,irq=6,port=@a,writes=acked" % R1, extra=extra)
    c = env.client(vm.target(0))
    c.ok("register 0")
    c.ok("register 1")
    vm.wait_claim(0)
    vm.wait_claim(1)
    c.ok("poke 0 0x100 0102030405060708")
    answers = [vm.qtest(cmd) for cmd in QTEST_SCRIPT]
    c.ok("quit")
    stop_vm(env, vm)
    return answers


def test_same_answers_with_and_without(env, tmp_path):
    path = str(tmp_path / "r.pcapng")
    plain = run_script(env, ())
    rec = run_script(env, ("--record", path))
    assert plain == rec
    _, recs = check_file(path)
    assert frames(recs, 1, OP_READ)


def test_sigterm_leaves_valid_file(env, tmp_path):
    path = str(tmp_path / "t.pcapng")
    vm = env.vm("%#x,size=0x10000,irq=5,port=0" % R0, extra=("--record", path))
    c = env.client(vm.target(0))
    c.ok("register 0")
    vm.wait_claim(0)
    for i in range(200):
        vm.ok("writel %#x %#x" % (R0 + 4 * (i % 64), i))
    assert vm.value("readl %#x" % R0) == 192
    # Killed with the client still connected: the close comes from the exit.
    stop_vm(env, vm, signal.SIGTERM)
    _, recs = check_file(path)
    assert len(frames(recs, 1, OP_WRITE)) == 200
    closes = [r.event_fields() for r in events(recs, "close")]
    assert closes and closes[-1]["reason"].startswith("closed")


def test_error_events(env, tmp_path):
    path = str(tmp_path / "e.pcapng")
    vm = env.vm("%#x,size=0x1000,port=0,timeout=300,dma=none" % R0,
                "%#x,size=0x1000,port=0" % R1, extra=("--record", path))
    vm.ok("readl %#x" % R1)  # no client: unclaimed
    c = env.client(vm.target(0))
    c.ok("register 0")
    vm.wait_claim(0)
    c.ok("fail 0 0x40")
    assert vm.qtest("readl %#x" % (R0 + 0x40)) == "FAIL bus-error"
    assert c.err("dma_read 0 0 0x100000 32") < 0
    c.ok("stall 0 0x80")
    assert vm.qtest("readl %#x" % (R0 + 0x80), timeout=10) == "FAIL bus-error"
    vm.wait_stderr(r"within timeout=300 ms")
    stop_vm(env, vm)
    _, recs = check_file(path)
    errs = [r.event_fields() for r in events(recs, "bus-error")]
    assert [(e["range"], e["addr"], e["size"], e["dir"], e["reason"]) for e in errs] == [
        ("1", "%#x" % R1, "4", "read", "unclaimed"),
        ("0", "%#x" % (R0 + 0x40), "4", "read", "client-error"),
        ("0", "%#x" % (R0 + 0x80), "4", "read", "timeout")]
    (ref,) = events(recs, "dma-refused")
    f = ref.event_fields()
    assert (f["addr"], f["len"], f["reason"]) == ("0x100000", "32", "none")
    assert ref.conn == int(f["conn"]) and ref.conn > 0
    # The error answer is in the frames too: the client's answer with the error bit.
    (rd,) = [f for f in frames(recs, 1, OP_READ) if f.addr == R0 + 0x40]
    assert answer_to(recs, rd, 0).error


def test_unwritable_path_fails_at_start(tmp_path):
    bad = str(tmp_path / "no-such-dir" / "x.pcapng")
    p = subprocess.run([build_path(VM_EXE), "--accel", "qtest", "--qtest", "stdio",
                        "--vmmio", "%#x,size=0x1000,port=0" % R0, "--record", bad],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=scaled(20))
    assert p.returncode == 1
    assert "--record %s: cannot create the file: No such file or directory" % bad in p.stderr
    assert "listening on" not in p.stderr


def test_vfio_user_session_recorded(env, tmp_path):
    from test_vfio_user import BAR0, BASE, PLAIN, VfuVM, claimed_client
    path = str(tmp_path / "v.pcapng")
    vm = VfuVM(env.tmp_path, [PLAIN], extra=("--record", path))
    env.procs.append(vm)
    d = vm.connect(0)
    c = claimed_client(env, vm)
    d.cfg_write(0x10, BASE)
    d.cfg_write(0x04, 0x0006, 2)
    d.write(BAR0, 0x10, 0x1122334455667788, 8)
    assert d.read(BAR0, 0x10, 8) == 0x1122334455667788
    c.ok("quit")
    vm.wait_stderr(r"released range 0")
    stop_vm(env, vm)
    _, recs = check_file(path)
    assert recs[0].event_text.startswith("start accel=vfio-user")
    w = [f for f in frames(recs, 1, OP_WRITE) if f.addr == BASE + 0x10]
    assert len(w) == 1 and w[0].data(8) == (0x1122334455667788).to_bytes(8, "little")
    r = [f for f in frames(recs, 1, OP_READ) if f.addr == BASE + 0x10]
    assert len(r) == 1
    assert answer_to(recs, r[0], 0).data(8) == (0x1122334455667788).to_bytes(8, "little")


# --- the reader (scripts/replaylib/recording.py) on damaged files -----------------------

def _good_file(tmp_path):
    """A small valid recording built by hand: SHB, two IDBs, two EPBs."""
    def opt(code, val):
        return struct.pack("<HH", code, len(val)) + val + b"\0" * (-len(val) % 4)

    def block(btype, body):
        n = 12 + len(body)
        return struct.pack("<II", btype, n) + body + struct.pack("<I", n)

    shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) +
                opt(1, b"coreio recording v1") + opt(4, b"coreio-vm") + b"\0" * 4)

    def idb(name):
        return block(1, struct.pack("<HHI", 147, 0, 0) + opt(2, name) + opt(9, b"\x09") +
                     b"\0" * 4)

    def epb(iface, ts, data):
        return block(6, struct.pack("<IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(data),
                                    len(data)) + data + b"\0" * (-len(data) % 4))

    text = b"note hello=1"
    ev = struct.pack("<BBBBIQ", 0x43, 1, 2, 0, 0, 1) + struct.pack("<HHI", 10, 0, len(text)) + text
    fr = struct.pack("<BBBBIQ", 0x43, 1, 0, 0, 1, 2) + struct.pack("<QQQ", 1 << 31, 0, 0x1000) + \
        b"\0" * 40
    return shb + idb(b"coreio-vm") + idb(b"coreio conn 1") + epb(0, 5, ev) + epb(1, 6, fr)


def test_reader_good_and_damaged(tmp_path):
    data = _good_file(tmp_path)
    ifaces, recs = recording.parse(data)
    assert ifaces[1]["name"] == "coreio conn 1"
    assert [(r.kind, r.conn, r.seq, r.ts_ns) for r in recs] == [(2, 0, 1, 5), (0, 1, 2, 6)]
    assert recs[0].event_type == 10 and recs[0].event_text == "note hello=1"
    assert recs[1].words()[2] == 0x1000
    # Truncated: the last block lacks 10 bytes.
    with pytest.raises(RecordingError) as e:
        recording.parse(data[:-10])
    assert "truncated block" in str(e.value)
    assert e.value.offset == len(data) - (12 + 20 + 16 + 64)
    # Corrupted record magic in the second EPB.
    bad = bytearray(data)
    pos = len(data) - 4 - 80
    assert bad[pos] == 0x43
    bad[pos] = 0x44
    with pytest.raises(RecordingError) as e:
        recording.parse(bytes(bad))
    assert "bad magic" in str(e.value) and "offset %d" % pos in str(e.value)
    # Not pcapng at all.
    with pytest.raises(RecordingError) as e:
        recording.parse(b"\x00" * 64)
    assert e.value.offset == 0
    # A record of an unknown version.
    bad = bytearray(data)
    bad[pos + 1] = 2
    with pytest.raises(RecordingError) as e:
        recording.parse(bytes(bad))
    assert "unknown record version 2" in str(e.value)
    # A file on disk.
    p = tmp_path / "g.pcapng"
    p.write_bytes(data)
    assert len(recording.read(str(p))[1]) == 2
