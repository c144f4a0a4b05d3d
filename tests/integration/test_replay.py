"""coreio-replay (scripts/coreio-replay): a recorded qtest session replayed against models and as the model, and broken recordings."""

import os
import re
import subprocess
import sys
import time

import pytest

from conftest import R0, SANITIZE, TESTCLIENT, TIMERDMA, build_path, client_env, scaled

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from replaylib import recording  # noqa: E402

REPLAY = os.path.join(ROOT, "scripts", "coreio-replay")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
PYDIR = os.path.join(os.environ.get("COREIO_BUILD_DIR", ""), "src", "python")

# coreio-timerdma's registers (examples/timerdma/README.md).
ID, CTRL, STATUS = 0x00, 0x04, 0x0C
SRC, DST, LEN, CMD = 0x18, 0x20, 0x28, 0x2C
DATA = bytes((i * 13 + 5) & 0xFF for i in range(100))
PAUSE = 0.3  # seconds between the last two accesses of the session


def session(vm, change_read=False):
    """The qtest session: the model's ID, a DMA copy with its interrupt, registers.
    Returns the answers of the commands that read something."""
    vm.wait_claim(0)
    out = [vm.qtest("readl %#x" % (R0 + (CTRL if change_read else ID)))]
    vm.ok("irq_intercept_in ioapic")
    vm.ok("write 0x10000 %d 0x%s" % (len(DATA), DATA.hex()))
    vm.ok("writeq %#x 0x10000" % (R0 + SRC))
    vm.ok("writeq %#x 0x20003" % (R0 + DST))
    vm.ok("writel %#x %d" % (R0 + LEN, len(DATA)))
    vm.ok("writel %#x 2" % (R0 + CTRL))  # IRQ enable
    vm.ok("writel %#x 1" % (R0 + CMD))  # copy
    assert vm.wait_irq(5) == ("raise", 5)
    out.append(vm.qtest("readl %#x" % (R0 + STATUS)))
    out.append(vm.qtest("read 0x20003 %d" % len(DATA)))
    vm.ok("writel %#x 2" % (R0 + STATUS))  # clear DMA done: the line goes down
    assert vm.wait_irq(5) == ("lower", 5)
    time.sleep(PAUSE)  # for --timing recorded to reproduce
    out.append(vm.qtest("readq %#x" % (R0 + SRC)))
    return out


def end_vm(env, vm):
    """End coreio-vm the clean way (EOF on the qtest stream), so its recording is complete."""
    vm.p.stdin.close()
    assert vm.wait_exit(10) == 0, vm.stderr_tail()
    env.procs.remove(vm)
    vm.stop()


def vm_args(path=None):
    return ["%#x,size=0x1000,irq=5,port=0" % R0], (["--record", str(path)] if path else [])


@pytest.fixture
def recorded(env, tmp_path):
    """A recording of session() with coreio-timerdma: (path, answers, records)."""
    path = tmp_path / "session.pcapng"
    vmmio, extra = vm_args(path)
    vm = env.vm(*vmmio, extra=extra)
    env.proc(TIMERDMA, vm.target(0))
    answers = session(vm)
    assert answers[0] == "OK 0x00000000434f5254"
    assert answers[2] == "OK 0x" + DATA.hex()
    end_vm(env, vm)
    _, records = recording.read(str(path))
    return path, answers, records


def replay(*args, timeout=60):
    """Run coreio-replay to its end; (status, stdout, stderr)."""
    r = subprocess.run([PYTHON, REPLAY] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=scaled(timeout),
                       env=client_env())
    return r.returncode, r.stdout, r.stderr


def first_seq(records, kind, pred):
    """seq of the first record of this kind whose frame satisfies pred(words)."""
    for r in records:
        if r.kind == kind and pred(r.words()):
            return r.seq
    raise AssertionError("no such record")


def test_replay_against_the_same_model(recorded):
    path, _, records = recorded
    rc, out, err = replay(path, "--against-model", "--", build_path(TIMERDMA), "{G0}")
    assert rc == 0, out + err
    assert "coreio-replay: OK, no divergence" in out, out
    nframes = sum(1 for r in records if r.kind != recording.KIND_EVENT)
    assert "%d records, %d frames" % (len(records), nframes) in out, out
    assert "coreio-replay: listening on 127.0.0.1:" in err


def test_replay_recorded_timing(recorded):
    """--timing recorded takes about as long as the session did."""
    path, _, records = recorded
    frames = [r for r in records if r.kind != recording.KIND_EVENT]
    length = (frames[-1].ts_ns - frames[0].ts_ns) / 1e9
    assert length >= PAUSE
    rc, out, err = replay(path, "--against-model", "--timing", "recorded", "--",
                          build_path(TIMERDMA), "{G0}")
    assert rc == 0, out + err
    took = float(re.search(r"([0-9.]+)s replayed", out).group(1))
    assert took >= length * 0.9, out


def test_replay_against_a_changed_model_dma(recorded):
    """The same model told to do its DMA with another sid: the first DMA request diverges."""
    path, _, records = recorded
    want = first_seq(records, recording.KIND_FROM_CLIENT,
                     lambda w: w[1] & 0xFF in (0x01, 0x21) and w[0] & (1 << 31))
    rc, out, err = replay(path, "--against-model", "--context", "4", "--",
                          build_path(TIMERDMA), "--sid", "3", "{G0}")
    assert rc == 1, out + err
    assert "coreio-replay: DIVERGENCE at seq %d " % want in out, out
    assert "differs from the recording" in out
    assert "difference: w[1] (op/size/mask)" in out, out
    lines = out.splitlines()
    exp = [l for l in lines if l.startswith("  expected: seq %d " % want)]
    got = [l for l in lines if l.startswith("  received: ")]
    assert exp and got, out
    assert "LREAD" in exp[0] and "sid 0" in exp[0] and "sid 3" in got[0], out
    assert "context (the 4 records before)" in out, out


@pytest.mark.skipif(not os.path.isdir(PYDIR), reason="the Python module is not built")
def test_replay_against_a_changed_model_register(recorded):
    """examples/python/timerdma.py with another ID value: the answer to the ID read diverges."""
    path, _, records = recorded
    if not any(f.startswith("coreio.") and f.endswith(".so") for f in os.listdir(PYDIR)):
        pytest.skip("the Python module is not built")
    if SANITIZE not in ("none", ""):
        pytest.skip("sanitizer build (%s): the module needs its runtime preloaded into python; "
                    "the plain pass runs this test" % SANITIZE)
    want = first_seq(records, recording.KIND_FROM_CLIENT,
                     lambda w: w[1] & 0xFF == 0x01 and not w[0] & (1 << 31) and w[2] == R0 + ID)
    prog = ("import sys; sys.path.insert(0, %r); sys.argv = ['timerdma.py', sys.argv[1]]; "
            "import timerdma; timerdma.ID_VALUE = 0x434F5255; timerdma.main()"
            % os.path.join(ROOT, "examples", "python"))
    env = dict(client_env(), PYTHONPATH=PYDIR)
    r = subprocess.run([PYTHON, REPLAY, str(path), "--against-model", "--", PYTHON, "-c", prog,
                        "{G0}"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=scaled(60), env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "coreio-replay: DIVERGENCE at seq %d " % want in r.stdout, r.stdout + r.stderr
    assert "difference: w[3]: expected 0x00000000434f5254 got 0x00000000434f5255" in r.stdout


def test_replay_model_closes_early(recorded):
    """A model that says hello and goes away: the first frame it owes is missing."""
    path, _, records = recorded
    want = first_seq(records, recording.KIND_FROM_CLIENT, lambda w: w[1] & 0xFF == 0xF0)
    rc, out, err = replay(path, "--against-model", "--timeout", "5", "--",
                          build_path(TESTCLIENT), "{G0}")
    assert rc == 1, out + err
    assert "coreio-replay: DIVERGENCE at seq %d " % want in out, out
    assert "closed connection" in out, out


def test_replay_model_never_connects(recorded):
    path, _, _ = recorded
    rc, out, err = replay(path, "--against-model", "--timeout", "1", "--", "sleep", "30")
    assert rc == 1, out + err
    assert "did not connect" in out, out


def start_replay_as_model(tmp_path, path, target, name):
    """coreio-replay --as-model in the background, its output in files."""
    o = open(tmp_path / (name + ".out"), "w+")
    e = open(tmp_path / (name + ".err"), "w+")
    p = subprocess.Popen([PYTHON, REPLAY, str(path), "--as-model", target, "--timeout", "10"],
                         stdin=subprocess.DEVNULL, stdout=o, stderr=e, env=client_env())
    return p, o, e


def finish(p, o, e, timeout=30):
    try:
        rc = p.wait(scaled(timeout))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    o.seek(0)
    e.seek(0)
    out, err = o.read(), e.read()
    o.close()
    e.close()
    return rc, out, err


def test_replay_as_model(env, tmp_path, recorded):
    """coreio-replay stands in for the model: the same qtest session gets the same answers."""
    path, answers, _ = recorded
    vmmio, _ = vm_args()
    vm = env.vm(*vmmio)
    p, o, e = start_replay_as_model(tmp_path, path, vm.target(0), "as-model")
    try:
        again = session(vm)
        end_vm(env, vm)
    finally:
        rc, out, err = finish(p, o, e)
    assert again == answers
    assert rc == 0, out + err
    assert "coreio-replay: OK, no divergence (as the model)" in out, out


def test_replay_as_model_divergence(env, tmp_path, recorded):
    """A guest that reads another register than the recorded one: found at that request."""
    path, _, records = recorded
    want = first_seq(records, recording.KIND_TO_CLIENT,
                     lambda w: w[1] & 0xFF == 0x01 and not w[0] & (1 << 31))
    vmmio, _ = vm_args()
    vm = env.vm(*vmmio)
    p, o, e = start_replay_as_model(tmp_path, path, vm.target(0), "as-model-div")
    try:
        vm.wait_claim(0)
        vm.qtest("readl %#x" % (R0 + CTRL), timeout=20)
    finally:
        rc, out, err = finish(p, o, e)
    assert rc == 1, out + err
    assert "coreio-replay: DIVERGENCE at seq %d " % want in out, out
    assert "difference: w[2] (address): expected %#018x got %#018x" % (R0, R0 + CTRL) in out, out


def test_replay_truncated_recording(recorded, tmp_path):
    path, _, _ = recorded
    data = path.read_bytes()
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(data[:len(data) - 10])
    rc, out, err = replay(cut, "--against-model")
    assert rc == 2, out + err
    assert "truncated" in err and "offset" in err, err
    assert out == ""


def test_replay_corrupted_recording(recorded, tmp_path):
    """A record whose header magic is broken: exit 2, naming the offset."""
    path, _, records = recorded
    data = bytearray(path.read_bytes())
    r = records[len(records) // 2]
    # EPB: type, length, interface, ts high, ts low, captured, original; then the record.
    at = r.offset + 28
    assert data[at] == 0x43
    data[at] = 0x44
    bad = tmp_path / "bad.pcapng"
    bad.write_bytes(bytes(data))
    rc, out, err = replay(bad, "--as-model", "127.0.0.1:1")
    assert rc == 2, out + err
    assert "offset %d" % at in err and "magic" in err, err


def test_replay_usage(tmp_path):
    rc, out, err = replay(tmp_path / "missing.pcapng", "--against-model")
    assert rc == 2 and "missing.pcapng" in err, err
    rc, out, err = replay(tmp_path / "missing.pcapng")
    assert rc == 2 and "usage" in err, err
    rc, out, err = replay("--help")
    assert rc == 0 and "--against-model" in out and "--as-model" in out


def test_replay_as_model_extra_frame(env, tmp_path, recorded):
    """One access more than the recorded session: the VM's extra request is reported."""
    path, answers, records = recorded
    vmmio, _ = vm_args()
    vm = env.vm(*vmmio)
    p, o, e = start_replay_as_model(tmp_path, path, vm.target(0), "as-model-extra")
    try:
        assert session(vm) == answers
        vm.qtest("readl %#x" % (R0 + STATUS), timeout=20)
        end_vm(env, vm)
    finally:
        rc, out, err = finish(p, o, e)
    assert rc == 1, out + err
    # The request came on the control connection (the first), after its recorded close.
    ctl = min(r.conn for r in records if r.conn)
    close = [r.seq for r in records
             if r.kind == recording.KIND_EVENT and r.event_type == 2 and r.conn == ctl]
    assert "coreio-replay: DIVERGENCE at seq %d " % close[0] in out, out
    assert "extra frame from the VM" in out and "received: conn" in out, out
    assert "READ iface 0" in out and "addr %#x" % (R0 + STATUS) in out, out
