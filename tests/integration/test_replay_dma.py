"""coreio-replay's guest-memory image (scripts/replaylib/replay.py): synthetic recordings replayed against a scripted fake model, no VM, no build needed.

What a model's timing may change and the replay accepts (docs/record-replay.md,
"How the replay works"): a DMA read the recording lacks at that point, answered
from the memory the recording showed (every byte known); a recorded read whose
answer told the model nothing new that it does not make. What stays a
divergence: a read of memory the recording never showed, a write of other data,
a recorded read that told something new and was not made.
"""

import io
import os
import socket
import sys
import threading
import time
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from replaylib import frames, recording, replay  # noqa: E402
from replaylib.frames import KIND_FROM_VM, KIND_TO_VM  # noqa: E402
import rawclient as rc  # noqa: E402

PORT = "127.0.0.1:4300"
AVAIL, USED, NEVER = 0x1000, 0x2000, 0x3000
NOTIFY, ISR = 0xD0000010, 0xD0000020
TIMEOUT = 2.0  # seconds: every wait of the fake model and of the replay


def frame(words, data=b""):
    """A frame: the words, then data, zero-padded to whole 64-byte units (E set to match)."""
    body = bytearray(b"".join(w.to_bytes(8, "little") for w in words)) + data
    units = max(1, (len(body) + rc.UNIT - 1) // rc.UNIT)
    body += bytes(units * rc.UNIT - len(body))
    w0 = words[0] | ((units - 1) << 8)
    body[0:8] = w0.to_bytes(8, "little")
    return bytes(body)


def lread(tag, addr, n, data=None):
    """The model's DMA read request (data None) or the VM's answer carrying data."""
    return frame([rc.make_w0(origin=True, tag=tag), rc.make_w1(rc.OP_LREAD, mask=n), addr],
                 data or b"")


def lwrite(tag, addr, data=None, n=None):
    """The model's DMA write request (with data) or the VM's answer (data None, length n)."""
    n = len(data) if data is not None else n
    return frame([rc.make_w0(origin=True, tag=tag), rc.make_w1(rc.OP_LWRITE, mask=n), addr],
                 data or b"")


def irq(level):
    return frame([rc.make_w0(origin=True), rc.make_w1(rc.OP_IRQ_UPDATE), 0, level])


def mmio(op, tag, addr, size, data=b""):
    """A VM MMIO request (READ/WRITE) or the model's answer (op READ with data)."""
    mask = (1 << size) - 1 if op == rc.OP_WRITE else 0
    return frame([rc.make_w0(tag=tag), rc.make_w1(op, size=size, mask=mask), addr],
                 data.ljust(8, b"\0") if data else b"")


class Rec:
    """Builds a recording: records with increasing seq and time."""

    def __init__(self):
        self.records = []
        self.event(1, "connect peer=127.0.0.1:5 port=%s rids=0:0" % PORT)

    def add(self, kind, body, conn=1):
        n = len(self.records) + 1
        self.records.append(recording.Record(kind, conn, n, 0, 1000000 * n, conn, body))

    def event(self, etype, text, conn=1):
        n = len(self.records) + 1
        r = recording.Record(recording.KIND_EVENT, conn, n, 0, 1000000 * n, 0, b"")
        r.event_type, r.event_text = etype, text
        self.records.append(r)

    def vm(self, body):
        self.add(KIND_FROM_VM, body)

    def model(self, body):
        self.add(KIND_TO_VM, body)

    def read(self, tag, addr, data):
        self.model(lread(tag, addr, len(data)))
        self.vm(lread(tag, addr, len(data), data))

    def write(self, tag, addr, data):
        self.model(lwrite(tag, addr, data))
        self.vm(lwrite(tag, addr, n=len(data)))

    def end(self):
        self.event(2, "close reason=closed at exit")
        return {0: {"name": "coreio-vm"},
                1: {"name": "coreio conn 1", "description": "127.0.0.1:5 on " + PORT}}, \
            self.records


def base_recording(second_read=None):
    """A notify; the model reads the available index (1), writes a used element and,
    when second_read is given, reads the index again (answer second_read); raises its
    interrupt; the VM reads the ISR; the VM exits."""
    r = Rec()
    r.vm(mmio(rc.OP_WRITE, 1, NOTIFY, 2, b"\0\0"))
    r.read(0x10, AVAIL, b"\x01\0\0\0")
    r.write(0x11, USED, b"\x07\0\0\0\x01\0\0\0")
    if second_read is not None:
        r.read(0x12, AVAIL, second_read)
    r.model(irq(1))
    r.vm(mmio(rc.OP_READ, 2, ISR, 1))
    r.model(mmio(rc.OP_READ, 2, ISR, 1, b"\x01"))
    return r.end()


class FakeModel(threading.Thread):
    """A scripted model on the replay's UNIX socket. Steps: ("send", frame) or ("recv",
    op): the next frame must have that op; it is kept in self.got. Then it waits for
    the replay to close the connection. Failures are kept in self.error."""

    def __init__(self, path, steps):
        super().__init__(daemon=True)
        self.path = path
        self.steps = steps
        self.got = []
        self.error = None

    def run(self):
        deadline = time.monotonic() + TIMEOUT
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(TIMEOUT)
        try:
            while True:
                try:
                    s.connect(self.path)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
            buf = bytearray()
            for what, arg in self.steps + [("eof", None)]:
                if what == "send":
                    s.sendall(arg)
                    continue
                while len(buf) < 8 or len(buf) < frames.frame_len(
                        int.from_bytes(buf[:8], "little")):
                    chunk = s.recv(65536)
                    if not chunk:
                        if what == "eof":
                            return
                        raise AssertionError("the replay closed before step %r" % ((what, arg),))
                    buf += chunk
                n = frames.frame_len(int.from_bytes(buf[:8], "little"))
                f, buf = bytes(buf[:n]), buf[n:]
                if what == "eof":
                    raise AssertionError("unexpected frame %s" % frames.describe(f))
                assert frames.op(f) == arg, "step %r: got %s" % ((what, arg), frames.describe(f))
                self.got.append(f)
        except Exception as e:  # reported by the test
            self.error = e
        finally:
            s.close()


def run_replay(tmp_path, recorded, steps):
    """Replays recorded (interfaces, records) against the scripted model; returns
    (session, divergence or None, model, report text)."""
    interfaces, records = recorded
    path = str(tmp_path / "replay.sock")
    opts = types.SimpleNamespace(conn=None, timeout=TIMEOUT, settle=0.1, context=4,
                                 timing="fast", listen=["unix:" + path], pause=0.0,
                                 verbose=True, as_model=None)
    out, err = io.StringIO(), io.StringIO()
    s = replay.AgainstModel(interfaces, records, opts, out=out, err=err)
    model = FakeModel(path, steps)
    model.start()
    div = None
    try:
        s.run()
        s.report_ok()
    except replay.Divergence as d:
        div = d
        s.report_divergence(d)
    finally:
        s.close()
        model.join(TIMEOUT * 3)
    assert not model.is_alive()
    return s, div, model, out.getvalue()


def model_steps(extra=None, used=b"\x07\0\0\0\x01\0\0\0", second=False):
    """The model's side of base_recording(): extra, a list of steps inserted after its
    first read; second: it reads the index again after its write."""
    steps = [("recv", rc.OP_WRITE),
             ("send", lread(0x50, AVAIL, 4)), ("recv", rc.OP_LREAD)]
    steps += extra or []
    steps += [("send", lwrite(0x51, USED, used)), ("recv", rc.OP_LWRITE)]
    if second:
        steps += [("send", lread(0x52, AVAIL, 4)), ("recv", rc.OP_LREAD)]
    steps += [("send", irq(1)), ("recv", rc.OP_READ),
              ("send", mmio(rc.OP_READ, 2, ISR, 1, b"\x01"))]
    return steps


def test_same_model(tmp_path):
    s, div, model, out = run_replay(tmp_path, base_recording(), model_steps())
    assert div is None and model.error is None, out
    assert "0 DMA reads answered from the recorded memory, 0 recorded reads not made" in out


def test_extra_read_answered_from_the_image(tmp_path):
    """An avail-index read the recording lacks: answered with the recorded bytes, counted."""
    extra = [("send", lread(0x60, AVAIL + 2, 2)), ("recv", rc.OP_LREAD)]
    s, div, model, out = run_replay(tmp_path, base_recording(), model_steps(extra))
    assert div is None and model.error is None, out
    assert "1 DMA reads answered from the recorded memory, 0 recorded reads not made" in out
    assert "read answered from the recorded memory" in out and "addr %#x" % (AVAIL + 2) in out
    ans = model.got[2]
    assert frames.tag(ans) == 0x60 and frames.origin(ans)
    assert frames.dma_read_data(ans, 2) == b"\0\0"  # bytes 2-3 of the recorded 01000000


def test_extra_read_after_a_write_sees_it(tmp_path):
    """The image holds the model's own recorded writes too: a read of its used element."""
    steps = model_steps()[:-3] + [("send", lread(0x61, USED, 8)), ("recv", rc.OP_LREAD)] + \
        model_steps()[-3:]
    s, div, model, out = run_replay(tmp_path, base_recording(), steps)
    assert div is None and model.error is None, out
    got = [f for f in model.got if frames.op(f) == rc.OP_LREAD and frames.tag(f) == 0x61]
    assert got and frames.dma_read_data(got[0], 8) == b"\x07\0\0\0\x01\0\0\0"


def test_read_of_unseen_memory_diverges(tmp_path):
    """A read of memory no recorded DMA touched: a divergence at the model's next record."""
    extra = [("send", lread(0x60, NEVER, 4)), ("recv", rc.OP_LREAD)]
    s, div, model, out = run_replay(tmp_path, base_recording(), model_steps(extra))
    assert div is not None, out
    assert "DIVERGENCE at seq 5 " in out, out  # the recorded LWRITE
    assert "received: conn 1 client->vm LREAD" in out and "addr %#x" % NEVER in out, out
    assert not s.extra_reads


def test_partly_known_read_diverges(tmp_path):
    """A read reaching one byte past what the recording showed is not answered."""
    extra = [("send", lread(0x60, AVAIL + 2, 3)), ("recv", rc.OP_LREAD)]
    s, div, model, out = run_replay(tmp_path, base_recording(), model_steps(extra))
    assert div is not None and "DIVERGENCE at seq 5 " in out, out


def test_write_of_other_data_diverges(tmp_path):
    s, div, model, out = run_replay(tmp_path, base_recording(),
                                    model_steps(used=b"\x08\0\0\0\x01\0\0\0"))
    assert div is not None, out
    assert "DIVERGENCE at seq 5 " in out and "difference: w[3]" in out, out


def test_recorded_read_that_told_nothing_new_not_made(tmp_path):
    """The recording's second index read returned what the first did: a model that does
    not make it (it saw both notifications in one pass) replays without divergence."""
    s, div, model, out = run_replay(tmp_path, base_recording(second_read=b"\x01\0\0\0"),
                                    model_steps())
    assert div is None and model.error is None, out
    assert "0 DMA reads answered from the recorded memory, 1 recorded reads not made" in out
    assert "recorded read not made (its answer was known): seq 7 " in out, out


def test_recorded_read_made_is_matched(tmp_path):
    s, div, model, out = run_replay(tmp_path, base_recording(second_read=b"\x01\0\0\0"),
                                    model_steps(second=True))
    assert div is None and model.error is None, out
    assert "0 DMA reads answered from the recorded memory, 0 recorded reads not made" in out


def test_recorded_read_with_news_must_be_made(tmp_path):
    """The second read returned a new index: a model that does not make it diverges."""
    s, div, model, out = run_replay(tmp_path, base_recording(second_read=b"\x02\0\0\0"),
                                    model_steps())
    assert div is not None, out
    assert "DIVERGENCE at seq 7 " in out, out


def test_guest_image():
    img = replay.GuestImage()
    sp = (0, 0)
    assert img.read(sp, 0x1000, 1) is None
    img.write(sp, 0xFFE, b"abcd")  # across a page boundary
    assert img.read(sp, 0xFFE, 4) == b"abcd"
    assert img.read(sp, 0xFFF, 2) == b"bc"
    assert img.read(sp, 0xFFD, 2) is None and img.read(sp, 0x1001, 2) is None
    assert img.read((1, 0), 0xFFE, 4) is None  # another IOMMU space
    img.write(sp, (1 << 64) - 2, b"xyz")  # past the end of the address space: ignored
    assert img.read(sp, (1 << 64) - 2, 2) is None


def test_dma_effects_marks_redundant_reads():
    _, records = base_recording(second_read=b"\x01\0\0\0")
    effects, answer_of, redundant = replay.dma_effects(records)
    idx = {r.seq: k for k, r in enumerate(records)}
    assert redundant == {idx[7]}
    assert answer_of[idx[3]] == idx[4] and answer_of[idx[7]] == idx[8]
    assert effects[idx[6]] == ((0, 0), [(USED, b"\x07\0\0\0\x01\0\0\0")])
    _, records = base_recording(second_read=b"\x02\0\0\0")
    assert replay.dma_effects(records)[2] == set()


@pytest.mark.parametrize("mask,runs", [(0, [(0, b"abcd")]), (0b1011, [(0, b"ab"), (3, b"d")])])
def test_dma_write_bytes(mask, runs):
    f = frame([rc.make_w0(origin=True, tag=1), rc.make_w1(rc.OP_WRITEA, size=4, mask=mask),
               0x100], b"abcd")
    assert frames.dma_request(f) == (frames.DMA_WRITE, 0, 0, 0x100, 4)
    assert frames.dma_write_bytes(f) == runs
