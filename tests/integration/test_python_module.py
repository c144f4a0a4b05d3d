"""The Python module coreio (src/python), imported into the test process, against coreio-vm.

Covers the original module's interface (every function and keyword, callback
signatures and return values) and its defects fixed: funcp reaches the
callbacks, errors reach completions as negative ints, cpl=None blocks,
exceptions in callbacks become bus errors and the loop goes on, the GIL is
released (mainloop(-1) in one thread, IRQ updates and DMA from others), the
buffer of a non-blocking DMA lives until its completion, reconnecting works;
and the extensions: coreio.Context, fileno()/process(), buffers of any kind.

In a sanitizer build the module needs the sanitizer's runtime loaded first, so
this file runs in a child pytest with it preloaded (test_python_sanitizer.py)
and is skipped here.
"""

import errno
import gc
import inspect
import json
import os
import pydoc
import random
import select
import selectors
import signal
import sys
import threading
import time
import weakref
import zlib

import subprocess

import pytest

from conftest import BUILD_DIR, R0, R1, SANITIZE, client_env, scaled

PYDIR = os.path.join(BUILD_DIR, "src", "python")
SANITIZER_RUNTIME = {"address": "libasan.so", "thread": "libtsan.so"}


def needed_runtime():
    """The sanitizer runtime the build's module needs preloaded into python3, or None."""
    return next((lib for key, lib in SANITIZER_RUNTIME.items() if key in SANITIZE), None)


def runtime_loaded(lib):
    with open("/proc/self/maps") as f:
        return (lib.split(".")[0] + ".") in f.read()


def runtime_path(lib):
    """Where the build's C compiler has the sanitizer runtime lib."""
    with open(os.path.join(BUILD_DIR, "meson-info", "intro-targets.json")) as f:
        cc = next(src["compiler"] for t in json.load(f) for src in t["target_sources"]
                  if src.get("language") == "c")
    path = subprocess.run(cc + ["-print-file-name=" + lib], capture_output=True, text=True,
                          timeout=30, check=True).stdout.strip()
    if not os.path.isabs(path):
        pytest.fail("the compiler %s does not know where %s is" % (cc, lib))
    return path


def preload_env():
    """What a python3 that imports the build's module needs in its environment: the
    sanitizer runtime preloaded (sanitizer builds), without leak checking (python3
    itself leaks at exit)."""
    lib = needed_runtime()
    if not lib:
        return {}
    env = {"LD_PRELOAD": runtime_path(lib)}
    if "address" in SANITIZE:
        env["ASAN_OPTIONS"] = (os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0").lstrip(":")
    return env


def child_env(extra=None):
    """The environment of a child python3 running with the build's module."""
    env = client_env(extra)
    env.update(preload_env())
    env["PYTHONPATH"] = PYDIR
    return env


def module_built():
    return os.path.isdir(PYDIR) and any(f.startswith("coreio.") and f.endswith(".so")
                                        for f in os.listdir(PYDIR))


def skip_reason():
    if not module_built():
        return ("the Python module coreio is not built in %s (python3-dev missing, or "
                "-Dpython=disabled)" % BUILD_DIR)
    lib = needed_runtime()
    if lib and not runtime_loaded(lib):
        return ("sanitizer build (%s): the module needs %s preloaded; "
                "test_python_sanitizer.py runs this file again with it" % (SANITIZE, lib))
    return None


pytestmark = [pytest.mark.concurrency,
              pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")]


@pytest.fixture(scope="module")
def coreio():
    sys.path.insert(0, PYDIR)
    try:
        import coreio as mod
    finally:
        sys.path.remove(PYDIR)
    assert mod.__file__.startswith(PYDIR), mod.__file__
    return mod


@pytest.fixture
def ctx(coreio):
    c = coreio.Context()
    yield c
    c.close()


@pytest.fixture
def mod(coreio):
    """The module-level (original) interface; the default context is disconnected afterwards."""
    yield coreio
    coreio.disconnect()
    coreio.default_context().set_reset_callback(None)


class Loop:
    """mainloop(-1) of a Context (or of the module) in a thread of its own."""

    def __init__(self, obj):
        self.obj, self.rc, self.exc = obj, None, None
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        try:
            self.rc = self.obj.mainloop(usec=-1)
        except BaseException as e:  # noqa: B902 - the test looks at it
            self.exc = e

    def join(self, timeout=10):
        self.t.join(scaled(timeout))
        assert not self.t.is_alive(), "mainloop(-1) did not return"
        return self.rc

    def alive(self):
        return self.t.is_alive()


class Mem:
    """A 64 KiB memory device recording every callback."""

    def __init__(self):
        self.mem = bytearray(0x10000)
        self.calls = []

    def read(self, funcp, addr, buf, flags):
        self.calls.append(("read", funcp, addr, len(buf), flags, type(buf)))
        off = addr & 0xFFFF
        buf[:] = self.mem[off:off + len(buf)]
        return 0

    def write(self, funcp, addr, buf, flags):
        self.calls.append(("write", funcp, addr, bytes(buf), flags, type(buf)))
        off = addr & 0xFFFF
        self.mem[off:off + len(buf)] = buf
        return 0

    def readp(self, funcp, addr, buf1, buf2, flags):
        self.calls.append(("readp", funcp, addr, len(buf1), len(buf2), flags))
        off, n = addr & 0xFFFF, len(buf1)
        buf1[:] = self.mem[off:off + n]
        buf2[:] = self.mem[off + n:off + 2 * n]
        return 0

    def writep(self, funcp, addr, buf1, buf2, flags):
        self.calls.append(("writep", funcp, addr, bytes(buf1), bytes(buf2), flags))
        off, n = addr & 0xFFFF, len(buf1)
        self.mem[off:off + n] = buf1
        self.mem[off + n:off + 2 * n] = buf2
        return 0


def vm2(env, **kw):
    """Two 64 KiB ranges on one port: rid 0 posted (IRQ lines 5 and 7), rid 1 acked (6)."""
    return env.vm("%#x,size=0x10000,irq=5:7,port=@a" % R0,
                  "%#x,size=0x10000,irq=6,port=@a,writes=acked" % R1, **kw)


def wait_for(pred, what, timeout=5):
    deadline = time.monotonic() + scaled(timeout)
    while not pred():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.005)


def pattern(n, seed):
    return random.Random(seed).randbytes(n)


class Completion:
    """A DMA completion callback that records (cplp, err) and can be waited for."""

    def __init__(self):
        self.results = []
        self.ev = threading.Event()
        self.thread = None

    def __call__(self, cplp, err):
        self.thread = threading.get_ident()
        self.results.append((cplp, err))
        self.ev.set()

    def wait(self, timeout=10):
        assert self.ev.wait(scaled(timeout)), "no DMA completion"
        self.ev.clear()
        return self.results[-1]


# --- the original interface ---

ORIGINAL = {
    "connect": ["target"],
    "disconnect": [],
    "register": ["rid", "read", "write", "readp", "writep", "funcp"],
    "mainloop": ["usec"],
    "irq_update": ["rid", "iid", "state"],
    "dma_read": ["mid", "sid", "addr", "buf", "flags", "cpl", "cplp"],
    "dma_write": ["mid", "sid", "addr", "buf", "flags", "cpl", "cplp"],
    "preparefds": ["readfds", "writefds"],
    "processfds": ["readable", "writable"],
}


def test_interface_and_help(coreio):
    assert (coreio.FLAGS_IFETCH, coreio.FLAGS_PRIV, coreio.FLAGS_SECURE) == (2, 4, 8)
    text = pydoc.render_doc(coreio, renderer=pydoc.plaintext)
    for name, params in ORIGINAL.items():
        fn, method = getattr(coreio, name), getattr(coreio.Context, name)
        assert list(inspect.signature(fn).parameters) == params, name
        assert list(inspect.signature(method).parameters) == ["self"] + params, name
        assert len(fn.__doc__) > 80 and len(method.__doc__) > 80, name
        assert name + "(" in text
    assert "Device models for CoreIO VMs" in text and "class Context" in text
    for name in ("fileno", "process", "caps", "set_reset_callback", "close"):
        assert getattr(coreio.Context, name).__doc__ and name + "(" in text, name


def test_connect_results(mod, env):
    vm = env.vm("%#x,size=0x1000,port=0" % R0)
    port = vm.target(0).rsplit(":", 1)[1]
    assert mod.connect(target="127.0.0.1:1") == -errno.ECONNREFUSED
    assert mod.connect(target="no-such-host.invalid:%s" % port) == -errno.ENOENT
    assert mod.connect(target="127.0.0.1:notaport") == -errno.EINVAL
    with pytest.raises(TypeError):
        mod.connect(target=4300)
    assert mod.connect(target=vm.target(0)) == 0
    assert mod.connect(vm.target(0)) == -errno.EISCONN
    assert mod.default_context().connected
    assert mod.default_context().caps() & mod.CAP_CLAIM_ACK
    assert mod.disconnect() is None
    assert not mod.default_context().connected
    assert mod.disconnect() is None  # twice is fine
    # None reads COREIO_VM.
    os.environ["COREIO_VM"] = vm.target(0)
    try:
        assert mod.connect(None) == 0
    finally:
        del os.environ["COREIO_VM"]


def test_register_results(mod, env):
    vm = vm2(env)
    m = Mem()
    assert mod.register(rid=0, read=m.read, write=m.write) == -errno.ENOTCONN
    assert mod.connect(target=vm.target(0)) == 0
    assert mod.register(rid=8, read=m.read, write=m.write) == -errno.EINVAL
    assert mod.register(rid=-1, read=m.read, write=m.write) == -errno.EINVAL
    assert mod.register(rid=0, read=None, write=m.write) == -errno.EINVAL
    with pytest.raises(TypeError):
        mod.register(rid=0, read=m.read, write=42)
    with pytest.raises(TypeError):
        mod.register(rid="0", read=m.read, write=m.write)
    assert mod.register(rid=0, read=m.read, write=m.write, readp=None, writep=None,
                        funcp=None) == 0
    assert mod.register(rid=0, read=m.read, write=m.write) == -errno.EBUSY
    assert mod.register(rid=5, read=m.read, write=m.write) == -errno.ENOENT  # no range 5
    assert mod.register(1, m.read, m.write, m.readp, m.writep, "positional") == 0
    vm.wait_claim(0)
    vm.wait_claim(1)


def test_callbacks_every_size_and_pair(ctx, env):
    vm = vm2(env)
    d0, d1 = Mem(), Mem()
    fp0 = object()
    assert ctx.connect(target=vm.target(0)) == 0
    assert ctx.register(rid=0, read=d0.read, write=d0.write, readp=d0.readp, writep=d0.writep,
                        funcp=fp0) == 0
    assert ctx.register(rid=1, read=d1.read, write=d1.write, funcp="one") == 0  # no pair cbs
    loop = Loop(ctx)
    vm.wait_claim(0)
    vm.wait_claim(1)
    for base, dev, fp in ((R0, d0, fp0), (R1, d1, "one")):
        for size, sfx in ((1, "b"), (2, "w"), (4, "l"), (8, "q")):
            addr = base + 0x100 + 3 * size
            value = int.from_bytes(pattern(size, size), "little")
            vm.ok("write%s %#x %#x" % (sfx, addr, value))
            assert vm.value("read%s %#x" % (sfx, addr)) == value
            assert dev.calls[-2:] == [
                ("write", fp, addr, value.to_bytes(size, "little"), 0, bytearray),
                ("read", fp, addr, size, 0, bytearray)]
        for size in (3, 16, 31, 32):
            addr, data = base + 0x200 + size, pattern(size, 100 + size)
            vm.ok("write %#x %d 0x%s" % (addr, size, data.hex()))
            assert vm.ok("read %#x %d" % (addr, size)) == "0x" + data.hex()
            assert dev.calls[-1][:4] == ("read", fp, addr, size)
    # Pairs: rid 0 has readp/writep; rid 1 gets read/write twice at the same address.
    for size in (1, 2, 4, 8, 16):
        a, b = pattern(size, 7), pattern(size, 8)
        vm.ok("writep %#x %d 0x%s 0x%s" % (R0 + 0x400, size, a.hex(), b.hex()))
        assert vm.ok("readp %#x %d" % (R0 + 0x400, size)) == "0x%s 0x%s" % (a.hex(), b.hex())
        assert d0.calls[-2:] == [("writep", fp0, R0 + 0x400, a, b, 0),
                                 ("readp", fp0, R0 + 0x400, size, size, 0)]
        vm.ok("writep %#x %d 0x%s 0x%s" % (R1 + 0x400, size, a.hex(), b.hex()))
        assert d1.calls[-2:] == [("write", "one", R1 + 0x400, a, 0, bytearray),
                                 ("write", "one", R1 + 0x400, b, 0, bytearray)]
        assert vm.ok("readp %#x %d" % (R1 + 0x400, size)) == "0x%s 0x%s" % (b.hex(), b.hex())
        assert [c[0] for c in d1.calls[-2:]] == ["read", "read"]
    # Flags reach the callbacks; a sparse byte mask is one write per run of bytes.
    # (Writes to rid 0 are posted: a read after them orders them before the check.)
    vm.ok("flags 6")
    vm.ok("writel %#x 0x11223344" % (R0 + 0x500))
    vm.ok("flags 0")
    vm.ok("writem %#x 8 0x0102030405060708 0x%x" % (R0 + 0x600, 0b11000110))
    vm.ok("readb %#x" % R0)
    assert d0.calls[-4:-1] == [
        ("write", fp0, R0 + 0x500, bytes.fromhex("44332211"), 6, bytearray),
        ("write", fp0, R0 + 0x601, bytes.fromhex("0203"), 0, bytearray),
        ("write", fp0, R0 + 0x606, bytes.fromhex("0708"), 0, bytearray)]
    assert loop.alive()
    ctx.disconnect()
    assert loop.join() == -errno.ENOTCONN


def test_callback_results_and_exceptions(ctx, env, capfd):
    vm = vm2(env)
    seen = []

    def read(funcp, addr, buf, flags):
        off = addr & 0xFF
        seen.append(off)
        buf[:] = b"\x5a" * len(buf)
        if off == 0x10:
            return 1
        if off == 0x18:
            return None  # success
        if off == 0x20:
            raise ValueError("model bug at %#x" % addr)
        if off == 0x28:
            return "not an int"
        if off == 0x30:
            buf.extend(b"longer")  # copied back up to the access size
        if off == 0x38:
            buf.clear()  # shorter: the rest reads 0
        return 0

    def write(funcp, addr, buf, flags):
        if addr & 0xFF == 0x40:
            raise RuntimeError("write failed")
        return 7 if addr & 0xFF == 0x48 else 0

    assert ctx.connect(vm.target(0)) == 0
    assert ctx.register(1, read, write) == 0
    loop = Loop(ctx)
    vm.wait_claim(1)
    assert vm.qtest("readl %#x" % (R1 + 0x10)) == "FAIL bus-error"
    assert vm.value("readl %#x" % (R1 + 0x18)) == 0x5A5A5A5A
    assert vm.qtest("readl %#x" % (R1 + 0x20)) == "FAIL bus-error"
    assert vm.qtest("readl %#x" % (R1 + 0x28)) == "FAIL bus-error"
    assert vm.value("readl %#x" % (R1 + 0x30)) == 0x5A5A5A5A
    assert vm.value("readl %#x" % (R1 + 0x38)) == 0
    assert vm.qtest("writel %#x 1" % (R1 + 0x40)) == "FAIL bus-error"
    assert vm.qtest("writel %#x 1" % (R1 + 0x48)) == "FAIL bus-error"
    assert vm.qtest("writel %#x 1" % (R1 + 0x50)) == "OK"
    assert loop.alive()  # the loop went on through all of it
    assert vm.stats()["bus_errors"] == 5
    err = capfd.readouterr().err
    assert "coreio: exception in the read callback of range 1 at 0xd0010020" in err
    assert "ValueError: model bug at 0xd0010020" in err and "Traceback" in err
    assert "TypeError: the read callback must return an int or None, not str" in err
    assert "RuntimeError: write failed" in err
    ctx.disconnect()
    assert loop.join() == -errno.ENOTCONN


def test_keyboard_interrupt_in_callback_ends_the_loop(ctx, env):
    vm = vm2(env)

    def read(funcp, addr, buf, flags):
        if addr & 0xFF == 0x10:
            raise KeyboardInterrupt
        return 0

    assert ctx.connect(vm.target(0)) == 0
    assert ctx.register(1, read, lambda *a: 0) == 0
    loop = Loop(ctx)
    vm.wait_claim(1)
    assert vm.qtest("readl %#x" % (R1 + 0x10)) == "FAIL bus-error"
    loop.join()
    assert isinstance(loop.exc, KeyboardInterrupt)
    # The context still works: the next loop serves the next access.
    loop = Loop(ctx)
    assert vm.value("readl %#x" % (R1 + 0x8)) == 0
    ctx.disconnect()
    assert loop.join() == -errno.ENOTCONN and loop.exc is None


def test_signal_interrupts_mainloop_in_main_thread(ctx, env):
    vm = vm2(env)

    class Stop(Exception):
        pass

    def handler(signum, frame):
        raise Stop()

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        assert ctx.connect(vm.target(0)) == 0
        t = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1))
        t.start()
        t0 = time.monotonic()
        with pytest.raises(Stop):
            ctx.mainloop(-1)
        assert time.monotonic() - t0 < scaled(5)
        t.join()
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_mainloop_timing_and_results(mod, env):
    assert mod.mainloop(usec=0) == -errno.ENOTCONN
    vm = vm2(env)
    assert mod.connect(vm.target(0)) == 0
    t0 = time.monotonic()
    assert mod.mainloop(0) == 0
    assert mod.mainloop(usec=30000) == 0
    assert time.monotonic() - t0 >= 0.03
    # The VM goes away: the loop says so, and the module connects to a new VM.
    vm.stop()
    env.procs.remove(vm)
    assert mod.mainloop(-1) == -errno.ECONNRESET
    assert mod.mainloop(0) == -errno.ENOTCONN
    vm_b = vm2(env)
    m = Mem()
    assert mod.connect(vm_b.target(0)) == 0
    assert mod.register(rid=0, read=m.read, write=m.write, funcp="b") == 0
    loop = Loop(mod)
    vm_b.wait_claim(0)
    vm_b.ok("writel %#x 0x1234" % R0)
    assert vm_b.value("readl %#x" % R0) == 0x1234
    mod.disconnect()
    assert loop.join() == -errno.ENOTCONN


def test_irq_from_callbacks_and_threads(mod, env):
    vm = vm2(env)

    def write(funcp, addr, buf, flags):
        return mod.irq_update(rid=0, iid=0, state=buf[0] & 1)

    assert mod.irq_update(0, 0, 1) == -errno.ENOTCONN
    assert mod.connect(vm.target(0)) == 0
    vm.ok("irq_intercept_in ioapic")
    assert mod.register(rid=0, read=lambda *a: 0, write=write) == 0
    loop = Loop(mod)
    vm.wait_claim(0)
    vm.ok("writeb %#x 1" % R0)
    assert vm.wait_irq() == ("raise", 5)
    vm.ok("writeb %#x 0" % R0)
    assert vm.wait_irq() == ("lower", 5)
    # From this thread while mainloop(-1) runs in the other.
    assert mod.irq_update(rid=1, iid=0, state=1) == 0
    assert vm.wait_irq() == ("raise", 6)
    assert mod.irq_update(rid=1, iid=0, state=0) == 0
    assert vm.wait_irq() == ("lower", 6)
    assert mod.irq_update(rid=8, iid=0, state=1) == -errno.EINVAL
    assert mod.irq_update(rid=0, iid=8, state=1) == -errno.EINVAL
    # Four threads flip line 7 (rid 0, iid 1) while the guest keeps line 5 busy.
    errs = []

    def flipper():
        for i in range(200):
            rc = mod.irq_update(0, 1, i & 1)
            if rc:
                errs.append(rc)
        if mod.irq_update(0, 1, 0):
            errs.append("final")

    threads = [threading.Thread(target=flipper) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(50):
        vm.ok("writeb %#x %d" % (R0, i & 1))
    for t in threads:
        t.join(scaled(10))
    assert not errs and not any(t.is_alive() for t in threads)
    vm.ok("writeb %#x 0" % R0)
    vm.ok("readb %#x" % R0)  # the posted write's IRQ update comes before this answer
    assert vm.ok("irq_level 5") == "0" and vm.ok("irq_level 7") == "0"
    mod.disconnect()
    assert loop.join() == -errno.ENOTCONN


DMA_SIZES = [1, 2, 3, 31, 32, 33, 4095, 65536 + 7, 1 << 20, 16 << 20]


def check_ram(vm, addr, data):
    """The guest RAM at addr holds data: its first and last bytes through qtest."""
    k = min(len(data), 48)
    assert vm.ok("read %#x %d" % (addr, k)) == "0x" + data[:k].hex()
    assert vm.ok("read %#x %d" % (addr + len(data) - k, k)) == "0x" + data[-k:].hex()


def test_dma_blocking_sizes(mod, env):
    vm = vm2(env)
    assert mod.connect(vm.target(0)) == 0
    for n in DMA_SIZES:
        addr, data = 0x1000000 + (n % 61), pattern(n, n)
        assert mod.dma_write(mid=0, sid=0, addr=addr, buf=data, flags=0) == 0
        check_ram(vm, addr, data)
        back = bytearray(n)
        assert mod.dma_read(mid=0, sid=0, addr=addr, buf=back, flags=0, cpl=None,
                            cplp=None) == 0
        assert back == data, n
    # What qtest wrote, read by DMA.
    vm.ok("write 0x3000 4 0xdeadbeef")
    b = bytearray(4)
    assert mod.dma_read(0, 0, 0x3000, b, mod.FLAGS_PRIV) == 0 and b == bytes.fromhex("deadbeef")


def test_dma_nonblocking_sizes(ctx, env):
    vm = vm2(env)
    assert ctx.connect(vm.target(0)) == 0
    loop = Loop(ctx)
    done = Completion()
    for n in DMA_SIZES:
        addr, data = 0x1000000 + (n % 29), pattern(n, n + 1)
        assert ctx.dma_write(0, 0, addr, memoryview(data), 0, done, ("w", n)) == 0
        assert done.wait() == (("w", n), 0)
        assert done.thread == loop.t.ident  # completions run on the loop's thread
        check_ram(vm, addr, data)
        back = bytearray(n)
        assert ctx.dma_read(mid=0, sid=0, addr=addr, buf=back, flags=0, cpl=done,
                            cplp=back) == 0
        cplp, err = done.wait()
        assert cplp is back and err == 0 and back == data, n
    ctx.disconnect()
    assert loop.join() == -errno.ENOTCONN


def test_dma_errors_and_buffers(ctx, env):
    vm = vm2(env)
    b = bytearray(16)
    assert ctx.dma_read(0, 0, 0x1000, b) == -errno.ENOTCONN
    assert ctx.connect(vm.target(0)) == 0
    outside = 0x90000000  # neither RAM nor a range
    assert ctx.dma_read(0, 0, outside, b, 0) == -errno.EFAULT
    assert ctx.dma_write(0, 0, outside, b"x" * 100, 0) == -errno.EFAULT
    assert ctx.dma_read(0, 0, 0x1000, bytearray()) == -errno.EINVAL  # empty: as the original
    assert ctx.dma_read(8, 0, 0x1000, b) == -errno.EINVAL
    assert ctx.dma_read(-1, 0, 0x1000, b) == -errno.EINVAL
    assert ctx.dma_read(0, 16, 0x1000, b) == -errno.EINVAL
    with pytest.raises((TypeError, BufferError)):
        ctx.dma_read(0, 0, 0x1000, b"read-only")
    with pytest.raises(TypeError):
        ctx.dma_write(0, 0, 0x1000, 12345)
    with pytest.raises(TypeError):
        ctx.dma_write(0, 0, 0x1000, b"x", 0, "not callable")
    with pytest.raises(OverflowError):
        ctx.dma_write(0, 0, -1, b"x")
    with pytest.raises(BufferError):
        ctx.dma_read(0, 0, 0x1000, memoryview(bytearray(64))[::2])  # not contiguous
    # Non-blocking errors arrive as negative ints (the original passed large unsigned ones).
    done = Completion()
    loop = Loop(ctx)
    assert ctx.dma_read(0, 0, outside, b, 0, done, "nb") == 0
    assert done.wait() == ("nb", -errno.EFAULT)
    # Any buffer, no copy: a memoryview slice is filled in place, and so is an array.
    data = pattern(64, 3)
    assert ctx.dma_write(0, 0, 0x5000, data) == 0
    big = bytearray(b"\xee" * 100)
    assert ctx.dma_read(0, 0, 0x5000, memoryview(big)[10:20]) == 0
    assert big == b"\xee" * 10 + data[:10] + b"\xee" * 80
    import array
    words = array.array("I", [0] * 4)
    assert ctx.dma_read(0, 0, 0x5000, words) == 0 and words.tobytes() == data[:16]
    assert ctx.dma_write(0, 0, 0x6000, array.array("H", [0x1234, 0x5678])) == 0
    assert vm.ok("read 0x6000 4") == "0x34127856"
    ctx.disconnect()
    assert loop.join() == -errno.ENOTCONN


def test_nonblocking_buffer_lives_until_completion(ctx, env):
    vm = vm2(env)
    assert ctx.connect(vm.target(0)) == 0

    class Buf(bytearray):  # a bytearray that can be watched with a weak reference
        pass

    done = Completion()
    buf = Buf(1 << 20)
    ref = weakref.ref(buf)
    assert ctx.dma_read(0, 0, 0x100000, buf, 0, done, None) == 0
    with pytest.raises(BufferError):
        buf.extend(b"x")  # exported to the DMA in flight: it cannot move
    del buf
    gc.collect()
    assert ref() is not None  # kept by the DMA, though the caller dropped it
    sel = selectors.DefaultSelector()
    sel.register(ctx.fileno(), selectors.EVENT_READ)
    deadline = time.monotonic() + scaled(10)
    while not done.results and time.monotonic() < deadline:
        sel.select(0.5)
        assert ctx.process() == 0
    sel.close()
    assert done.results == [(None, 0)]
    gc.collect()
    assert ref() is None  # released once the completion ran
    # A DMA still in flight when the connection closes completes with -ECONNRESET.
    pend = Completion()
    assert ctx.dma_write(0, 0, 0x200000, bytes(1 << 20), 0, pend, "late") == 0
    ctx.disconnect()
    assert pend.results == [("late", -errno.ECONNRESET)]


def test_dma_inside_callbacks(ctx, env):
    """Blocking and non-blocking DMA of 1 byte to 16 MiB from MMIO callbacks."""
    vm = vm2(env)
    src = 0x1000000
    results = {}
    nb = Completion()

    def write(funcp, addr, buf, flags):
        n = int.from_bytes(buf, "little")
        off = addr & 0xFF
        if off == 0x00:  # blocking read of n bytes at src; crc kept for the read of 0x08
            b = bytearray(n)
            rc = ctx.dma_read(0, 0, src, b)
            results["crc"] = zlib.crc32(b) if rc == 0 else rc
        elif off == 0x10:  # blocking write of n bytes of the pattern to src + 32 MiB
            results["wrc"] = ctx.dma_write(0, 0, src + (16 << 20), pattern(n, n))
        elif off == 0x20:  # non-blocking read, completion from the loop
            b = bytearray(n)
            return ctx.dma_read(0, 0, src, b, 0, nb, b)
        return 0

    def read(funcp, addr, buf, flags):
        buf[:] = (results.get("crc", 0) & 0xFFFFFFFF).to_bytes(4, "little")[:len(buf)]
        return 0

    assert ctx.connect(vm.target(0)) == 0
    assert ctx.register(1, read, write) == 0  # rid 1: acked writes, the callback's rc counts
    loop = Loop(ctx)
    vm.wait_claim(1)
    data = pattern(16 << 20, 99)
    assert ctx.dma_write(0, 0, src, data) == 0  # from this thread while the loop runs
    for n in DMA_SIZES:
        vm.ok("writel %#x %d" % (R1 + 0x00, n))
        assert vm.value("readl %#x" % (R1 + 0x08)) == zlib.crc32(data[:n]), n
        vm.ok("writel %#x %d" % (R1 + 0x10, n))
        assert results["wrc"] == 0
        check_ram(vm, src + (16 << 20), pattern(n, n))
        vm.ok("writel %#x %d" % (R1 + 0x20, n))
        cplp, err = nb.wait()
        assert err == 0 and cplp == data[:n], n
    ctx.disconnect()
    assert loop.join() == -errno.ENOTCONN


def test_dma_and_irq_from_threads_while_mainloop_runs(mod, env):
    vm = vm2(env)
    m = Mem()
    assert mod.connect(vm.target(0)) == 0
    assert mod.register(rid=0, read=m.read, write=m.write, funcp=m) == 0
    loop = Loop(mod)
    vm.wait_claim(0)
    failures = []

    def worker(k):
        base = 0x1000000 + k * 0x600000
        done = Completion()
        for i, n in enumerate([1, 5, 100, 4096, 70000, 1 << 20, 5 << 20]):
            data = pattern(n, k * 100 + i)
            if mod.dma_write(0, 0, base, data, 0) != 0:
                failures.append((k, n, "write"))
            back = bytearray(n)
            if mod.dma_read(0, 0, base, back, 0, done, i) != 0 or done.wait() != (i, 0):
                failures.append((k, n, "nb read"))
            if back != data:
                failures.append((k, n, "data"))
            mod.irq_update(0, 1, i & 1)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for i in range(100):  # the guest keeps the loop busy meanwhile
        vm.ok("writel %#x %d" % (R0 + 4 * (i % 16), i))
        assert vm.value("readl %#x" % (R0 + 4 * (i % 16))) == i
    for t in threads:
        t.join(scaled(60))
    assert not any(t.is_alive() for t in threads)
    assert not failures, failures
    mod.disconnect()
    assert loop.join() == -errno.ENOTCONN


def test_disconnect_and_reconnect(mod, env):
    vm = vm2(env)
    old, new = Mem(), Mem()
    assert mod.connect(target=vm.target(0)) == 0
    assert mod.register(rid=0, read=old.read, write=old.write, funcp="old") == 0
    loop = Loop(mod)
    vm.wait_claim(0)
    assert vm.value("readl %#x" % R0) == 0 and old.calls
    # disconnect() from this thread ends mainloop(-1) in the other.
    mod.disconnect()
    assert loop.join() == -errno.ENOTCONN
    wait_for(lambda: vm.info(0)["claimed"] == "0", "the VM to see the client gone")
    assert mod.connect(target=vm.target(0)) == 0
    # The same rid again, with other callbacks: they are the ones called.
    assert mod.register(rid=0, read=new.read, write=new.write, funcp="new") == 0
    n_old = len(old.calls)
    loop = Loop(mod)
    vm.wait_claim(0)
    vm.ok("writel %#x 0xabcd" % R0)
    assert vm.value("readl %#x" % R0) == 0xABCD
    assert len(old.calls) == n_old and [c[1] for c in new.calls] == ["new", "new"]
    mod.disconnect()
    assert loop.join() == -errno.ENOTCONN


def test_disconnect_from_a_callback(ctx, env):
    vm = vm2(env)

    def write(funcp, addr, buf, flags):
        ctx.disconnect()
        return 0

    assert ctx.connect(vm.target(0)) == 0
    assert ctx.register(0, lambda *a: 0, write) == 0
    loop = Loop(ctx)
    vm.wait_claim(0)
    vm.ok("writel %#x 1" % R0)
    assert loop.join() == -errno.ENOTCONN
    assert not ctx.connected


def test_loop_calls_from_callbacks_refused(ctx, env):
    vm = vm2(env)
    target = vm.target(0)
    errors = []

    def read(funcp, addr, buf, flags):
        for call in (lambda: ctx.mainloop(0), ctx.process, ctx.processfds, ctx.close,
                     lambda: ctx.connect(target)):
            try:
                call()
            except RuntimeError as e:
                errors.append(str(e))
        return 0

    assert ctx.connect(target) == 0
    assert ctx.register(0, read, lambda *a: 0) == 0
    loop = Loop(ctx)
    vm.wait_claim(0)
    assert vm.value("readl %#x" % R0) == 0
    assert len(errors) == 5 and all("from a callback" in e for e in errors), errors
    # Another thread's loop call while mainloop(-1) runs here.
    with pytest.raises(RuntimeError, match="another thread"):
        ctx.mainloop(0)
    # connect() while connected and in use: the running loop is left alone.
    assert ctx.connect(vm.target(0)) == -errno.EISCONN
    assert loop.alive()
    ctx.disconnect()
    assert loop.join() == -errno.ENOTCONN


def test_two_contexts_and_the_default_one(coreio, mod, env):
    vm_a = env.vm("%#x,size=0x1000,irq=5,port=0" % R0)
    vm_b = env.vm("%#x,size=0x1000,irq=5,port=0" % R0, "%#x,size=0x1000,port=0" % R1)
    a, b = coreio.Context(), coreio.Context()
    try:
        ma, mb, md = Mem(), Mem(), Mem()
        assert a.connect(vm_a.target(0)) == 0
        assert b.connect(vm_b.target(0)) == 0
        assert mod.connect(vm_b.target(1)) == 0
        assert a.register(0, ma.read, ma.write, funcp="a") == 0
        assert b.register(0, mb.read, mb.write, funcp="b") == 0
        assert mod.register(0, md.read, md.write, funcp="d") == 0
        loops = [Loop(a), Loop(b), Loop(mod)]
        vm_a.wait_claim(0)
        vm_b.wait_claim(0)
        vm_b.wait_claim(1)
        vm_a.ok("writel %#x 0xa" % R0)
        vm_b.ok("writel %#x 0xb" % R0)
        vm_b.ok("writel %#x 0xd" % R1)
        assert vm_a.value("readl %#x" % R0) == 0xA
        assert vm_b.value("readl %#x" % R0) == 0xB
        assert vm_b.value("readl %#x" % R1) == 0xD
        assert {c[1] for c in ma.calls} == {"a"} and {c[1] for c in mb.calls} == {"b"}
        assert a.dma_write(0, 0, 0x1000, b"A" * 8) == 0
        assert b.dma_write(0, 0, 0x1000, b"B" * 8) == 0
        assert vm_a.ok("read 0x1000 8") == "0x" + "41" * 8
        assert vm_b.ok("read 0x1000 8") == "0x" + "42" * 8
        vm_a.ok("irq_intercept_in ioapic")
        assert a.irq_update(0, 0, 1) == 0
        assert vm_a.wait_irq() == ("raise", 5)
        assert a.fileno() != b.fileno() != mod.default_context().fileno()
        a.close()
        assert loops[0].join() == -errno.ENOTCONN
        assert a.closed
        with pytest.raises(ValueError):
            a.connect(vm_a.target(0))
        assert vm_b.value("readl %#x" % R0) == 0xB  # b is unaffected
        b.disconnect()
        mod.disconnect()
        assert loops[1].join() == -errno.ENOTCONN and loops[2].join() == -errno.ENOTCONN
    finally:
        a.close()
        b.close()


def test_select_loop_with_preparefds_processfds(mod, env):
    vm = vm2(env)
    m = Mem()
    assert mod.preparefds()[0] == -errno.ENOTCONN
    assert mod.connect(vm.target(0)) == 0
    assert mod.register(0, m.read, m.write, funcp=None) == 0
    r_pipe, w_pipe = os.pipe()
    try:
        nfds, rl, wl = mod.preparefds(readfds=[r_pipe], writefds=[])
        assert isinstance(rl, list) and isinstance(wl, list) and r_pipe in rl
        assert len(rl) >= 3 and nfds == max(rl + wl) + 1
        assert mod.processfds(readable=[], writable=[]) == 0
        assert mod.processfds() == 0  # None: every connection, without waiting
        errs = []

        def select_loop():
            # The original module's usage: preparefds, select, processfds.
            while True:
                nfds, r, w = mod.preparefds(readfds=[r_pipe], writefds=[])
                if nfds < 0:
                    errs.append(nfds)
                    return
                r, w, _ = select.select(r, w, [], 1.0)
                if r_pipe in r:
                    return
                rc = mod.processfds(readable=r, writable=w)
                if rc:
                    errs.append(rc)
                    return

        t = threading.Thread(target=select_loop, daemon=True)
        t.start()
        vm.wait_claim(0)
        vm.ok("writel %#x 0x55" % (R0 + 8))
        assert vm.value("readl %#x" % (R0 + 8)) == 0x55
        done = Completion()
        assert mod.dma_write(0, 0, 0x1000, b"sel", 0, done, 1) == 0
        assert done.wait() == (1, 0)
        os.write(w_pipe, b"x")
        t.join(scaled(10))
        assert not t.is_alive() and not errs
    finally:
        os.close(r_pipe)
        os.close(w_pipe)


def test_fileno_with_selectors_and_reset_callback(ctx, env):
    vm = vm2(env)
    fd = ctx.fileno()
    assert ctx.process() == -errno.ENOTCONN
    assert ctx.connect(vm.target(0)) == 0
    resets = []
    reset_seen = threading.Event()

    def on_reset():
        resets.append(threading.get_ident())
        reset_seen.set()

    ctx.set_reset_callback(on_reset)
    m = Mem()
    assert ctx.register(0, m.read, m.write) == 0
    stop = threading.Event()
    rcs = []

    def serve():
        with selectors.DefaultSelector() as sel:
            sel.register(ctx, selectors.EVENT_READ)  # an object with fileno()
            while not stop.is_set():
                if sel.select(0.2):
                    rc = ctx.process()
                    if rc:
                        rcs.append(rc)
                        return

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    vm.wait_claim(0)
    vm.ok("writel %#x 7" % R0)
    assert vm.value("readl %#x" % R0) == 7
    vm.ok("irq_intercept_in ioapic")
    assert ctx.irq_update(0, 0, 1) == 0
    assert vm.wait_irq() == ("raise", 5)
    vm.ok("reset")
    assert vm.wait_irq() == ("lower", 5)
    assert reset_seen.wait(scaled(5)) and resets == [t.ident]  # on the serving thread
    assert ctx.irq_update(0, 0, 1) == 0  # levels were forgotten: sent again
    assert vm.wait_irq() == ("raise", 5)
    stop.set()
    t.join(scaled(10))
    assert not rcs
    # fileno() stays the same across a reconnect.
    ctx.disconnect()
    assert ctx.connect(vm.target(0)) == 0 and ctx.fileno() == fd


def test_context_lifetime(coreio, env):
    vm = vm2(env)
    with coreio.Context() as c:
        assert c.connect(vm.target(0)) == 0
        assert "connected" in repr(c)
    assert c.closed and "closed" in repr(c)
    for call in (c.fileno, c.process, lambda: c.mainloop(0), lambda: c.irq_update(0, 0, 1)):
        with pytest.raises(ValueError):
            call()
    # A Context whose callbacks refer to it is collected, and its connection closed.
    c = coreio.Context()
    assert c.connect(vm.target(0)) == 0

    class Model:
        def __init__(self, ctx):
            self.ctx = ctx

        def read(self, funcp, addr, buf, flags):
            return 0

        write = read

    model = Model(c)
    assert c.register(0, model.read, model.write, funcp=model) == 0
    vm.wait_claim(0)
    ref = weakref.ref(c)
    del c, model
    gc.collect()
    assert ref() is None
    wait_for(lambda: vm.info(0)["claimed"] == "0", "the VM to see the collected context go")
