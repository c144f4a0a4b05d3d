"""Fixtures of the integration suite: coreio-vm under the qtest accelerator, test clients and examples."""

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time

import pytest

BUILD_DIR = os.environ.get("COREIO_BUILD_DIR")


def pytest_configure(config):
    if not BUILD_DIR:
        raise pytest.UsageError("set COREIO_BUILD_DIR to the meson build directory")
    config.addinivalue_line(
        "markers", "concurrency: exercises threads (KVM vCPUs beside the I/O thread, DMA and "
        "IRQs from other threads, blocking DMA, shared memory); scripts/test.sh runs these "
        "under ThreadSanitizer (pytest -m concurrency)")


# Files marked concurrency as a whole here, for files that do not carry the marker themselves.
CONCURRENCY_FILES = {"test_order.py", "test_torture.py",
                     # the recorder's writer thread, fault-injection delays beside vCPUs,
                     # and TLS sessions sending and receiving from two threads
                     "test_record.py", "test_inject.py", "test_tls.py"}


def pytest_collection_modifyitems(config, items):
    """Mark concurrency: the tests of CONCURRENCY_FILES, and every test that boots a KVM
    guest through guest_vm() (vCPU threads beside coreio-vm's I/O thread)."""
    for item in items:
        fn = getattr(item, "function", None)
        if (os.path.basename(str(item.fspath)) in CONCURRENCY_FILES
                or (fn is not None and "guest_vm" in fn.__code__.co_names)):
            item.add_marker(pytest.mark.concurrency)


def build_sanitize():
    """The build's b_sanitize option ("none", "address,undefined", "thread", ...)."""
    try:
        with open(os.path.join(BUILD_DIR or "", "meson-info", "intro-buildoptions.json")) as f:
            opts = json.load(f)
    except (OSError, ValueError):
        return "none"
    return next((str(o["value"]) for o in opts if o["name"] == "b_sanitize"), "none")


# ThreadSanitizer slows the programs 5-15 times: the waits of the helpers below (upper bounds
# for something to happen) are multiplied by TIMEOUT_SCALE, 4 in a TSan build, else 1;
# COREIO_TIMEOUT_SCALE overrides it. Tests with their own deadlines can use scaled().
SANITIZE = build_sanitize()
TIMEOUT_SCALE = float(os.environ.get("COREIO_TIMEOUT_SCALE")
                      or (4 if "thread" in SANITIZE else 1))


def scaled(timeout):
    """A timeout (seconds) stretched for slow sanitizer builds."""
    return timeout * TIMEOUT_SCALE


def build_path(rel):
    """Path of a program in the build directory; fails loudly when it was not built."""
    p = os.path.join(BUILD_DIR, rel)
    if not os.access(p, os.X_OK):
        pytest.fail("%s is not built (COREIO_BUILD_DIR=%s)" % (rel, BUILD_DIR))
    return p


VM_EXE = "src/vm/coreio-vm"
TESTCLIENT = "tests/clients/coreio-testclient"
TESTCLIENT_STATIC = "tests/clients/coreio-testclient-static"
RESPONDER = "examples/coreio-responder"
TIMERDMA = "examples/coreio-timerdma"


def fnv64(data):
    """FNV-1a 64-bit of data, as the test client computes it."""
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def seed_pattern(seed, n):
    """The test client's dma_write pattern: byte i = (seed + i * 7) & 0xff."""
    period = bytes((seed + i * 7) & 0xFF for i in range(256))
    return (period * (n // 256 + 1))[:n]


# Reports of AddressSanitizer / UndefinedBehaviorSanitizer / ThreadSanitizer builds fail the
# test. TSan reports data races and lock-order inversions as "WARNING: ThreadSanitizer: ...";
# any other "ThreadSanitizer:" line (a FATAL error, "reported N warnings") counts too.
SANITIZER = re.compile(r"ERROR: (Address|Leak|Thread)Sanitizer|ThreadSanitizer:|runtime error: ")


class Proc:
    """A child process whose stdout/stderr lines are collected by threads."""

    def __init__(self, name, argv, env=None, stdin=True):
        self.name = name
        self.argv = argv
        self.stderr_lines = []
        self.stdout_lines = []
        self.cond = threading.Condition()
        self.answers = queue.Queue()
        self.events = queue.Queue()
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                  text=True, bufsize=1)
        self.t_err = threading.Thread(target=self._read_err, daemon=True)
        self.t_out = threading.Thread(target=self._read_out, daemon=True)
        self.t_err.start()
        self.t_out.start()

    def _read_err(self):
        for line in self.p.stderr:
            with self.cond:
                self.stderr_lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def _read_out(self):
        for line in self.p.stdout:
            line = line.rstrip("\n")
            with self.cond:
                self.stdout_lines.append(line)
                self.cond.notify_all()
            self.route(line)

    def route(self, line):
        """Sort a stdout line into answers or events (subclasses refine)."""
        self.answers.put(line)

    def wait_stderr(self, regex, timeout=10, count=1):
        """Wait until count stderr lines match regex; return the matches."""
        rx = re.compile(regex)
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [m for m in map(rx.search, self.stderr_lines) if m]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.p.poll() is not None and not self.t_err.is_alive()):
                    raise AssertionError("%s: no stderr line matching %r within %ss; stderr:\n%s"
                                         % (self.name, regex, timeout, self.stderr_tail()))
                self.cond.wait(min(left, 0.2))

    def wait_stdout(self, regex, timeout=10, start=0):
        """Wait for a stdout line (index >= start) matching regex; return (index, match)."""
        rx = re.compile(regex)
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(start, len(self.stdout_lines)):
                    m = rx.search(self.stdout_lines[i])
                    if m:
                        return i, m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%s: no stdout line matching %r within %ss; stdout:\n%s"
                                         % (self.name, regex, timeout,
                                            "\n".join(self.stdout_lines[-20:])))
                self.cond.wait(min(left, 0.2))

    def stderr_tail(self, n=30):
        with self.cond:
            return "\n".join(self.stderr_lines[-n:])

    def send(self, line):
        try:
            self.p.stdin.write(line + "\n")
            self.p.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise AssertionError("%s: cannot send %r: %s (exit %s); stderr:\n%s"
                                 % (self.name, line, e, self.p.poll(), self.stderr_tail()))

    def answer(self, timeout=10, what="answer"):
        timeout = scaled(timeout)
        try:
            return self.answers.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("%s: no %s within %ss (exit %s); stderr:\n%s"
                                 % (self.name, what, timeout, self.p.poll(), self.stderr_tail()))

    def alive(self):
        return self.p.poll() is None

    def wait_exit(self, timeout=10):
        timeout = scaled(timeout)
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s did not exit within %ss" % (self.name, timeout))

    def kill(self, sig=signal.SIGKILL):
        if self.alive():
            self.p.send_signal(sig)
        self.p.wait(10)

    def stop(self):
        """End the process: close stdin, terminate, kill after 5 s."""
        if self.p.poll() is None:
            try:
                if self.p.stdin:
                    self.p.stdin.close()
            except OSError:
                pass
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        for t in (self.t_err, self.t_out):
            t.join(5)
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            try:
                if f:
                    f.close()
            except OSError:
                pass


class VM(Proc):
    """coreio-vm --accel qtest --qtest stdio; qtest() sends a command and returns its answer."""

    def __init__(self, argv, n_listen):
        super().__init__("coreio-vm", argv)
        self.irqs = queue.Queue()
        lines = self.wait_stderr(r"listening on (\S+)", timeout=10, count=n_listen)
        self.listening = [m.group(1) for m in lines]

    def route(self, line):
        if line.startswith("IRQ "):
            self.irqs.put(line)
        else:
            self.answers.put(line)

    def qtest(self, cmd, timeout=10):
        self.send(cmd)
        return self.answer(timeout, "answer to %r" % cmd)

    def ok(self, cmd, timeout=10):
        """Run a command that must succeed; return the text after OK."""
        a = self.qtest(cmd, timeout)
        assert a.startswith("OK"), "%r -> %r" % (cmd, a)
        return a[2:].strip()

    def value(self, cmd, timeout=10):
        """Run a read command and return its value as an int."""
        return int(self.ok(cmd, timeout), 16)

    def wait_irq(self, timeout=5):
        """Next interrupt notification as (action, line), e.g. ('raise', 5)."""
        timeout = scaled(timeout)
        try:
            line = self.irqs.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no IRQ notification within %ss" % timeout)
        parts = line.split()
        return parts[1], int(parts[2])

    def no_irq(self, timeout=0.3):
        """Assert that no interrupt notification arrives within timeout."""
        try:
            line = self.irqs.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError("unexpected %r" % line)

    def info(self, g):
        """vmmio_info G as a dict of strings."""
        return dict(kv.split("=", 1) for kv in self.ok("vmmio_info %d" % g).split())

    def stats(self):
        return {k: int(v) for k, v in (kv.split("=", 1) for kv in self.ok("stats").split())}

    def wait_claim(self, g, ms=5000):
        self.ok("vmmio_wait %d %d" % (g, ms), timeout=ms / 1000 + 5)

    def target(self, g):
        """The address a client must connect to for range G."""
        port = self.info(g)["port"]
        for t in self.listening:
            if t == port or t.endswith(":" + port) or port.endswith(t):
                return t
        if port.startswith("unix:"):
            return port
        raise AssertionError("cannot map port %r of range %d to %r" % (port, g, self.listening))


class Client(Proc):
    """A test client (coreio-testclient): cmd() sends a command and returns its answer line."""

    def __init__(self, name, argv, env=None):
        self.event_list = []
        super().__init__(name, argv, env=env)
        self.first = self.answer(10, "connect result")

    def route(self, line):
        if line.startswith("EV "):
            with self.cond:
                self.event_list.append(line[3:])
            self.events.put(line[3:])
        else:
            self.answers.put(line)

    def cmd(self, line, timeout=10):
        self.send(line)
        return self.answer(timeout, "answer to %r" % line)

    def ok(self, line, timeout=10):
        a = self.cmd(line, timeout)
        assert a.startswith("OK"), "%s: %r -> %r; stderr:\n%s" % (self.name, line, a,
                                                                   self.stderr_tail())
        return a[2:].strip()

    def err(self, line, timeout=10):
        """Run a command that must fail; return its errno (negative)."""
        a = self.cmd(line, timeout)
        assert a.startswith("ERR "), "%r -> %r" % (line, a)
        return int(a.split()[1])

    def wait_event(self, regex, timeout=10):
        """Wait for an event line matching regex (events seen earlier count too); return match."""
        rx = re.compile(regex)
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i, ev in enumerate(self.event_list):
                    m = rx.search(ev)
                    if m:
                        del self.event_list[i]
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%s: no event matching %r within %ss; events: %r"
                                         % (self.name, regex, timeout, self.event_list[-20:]))
                self.cond.wait(min(left, 0.2))

    def take_events(self, settle=0.0):
        """All event lines received so far (after an optional wait); clears them."""
        if settle:
            time.sleep(settle)
        self.ok("ping")  # every event before the answer has been routed
        with self.cond:
            evs, self.event_list = self.event_list, []
        while not self.events.empty():
            self.events.get_nowait()
        return evs


def client_env(extra=None):
    env = dict(os.environ)
    env.pop("COREIO_VM", None)
    env.pop("COREHDL_VM", None)
    if extra:
        env.update(extra)
    return env


class Env:
    """Starts processes for one test and ends them all afterwards."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.procs = []

    def vm(self, *vmmio, mem="64M", listen=None, extra=(), n_listen=None):
        argv = [build_path(VM_EXE), "--accel", "qtest", "--qtest", "stdio", "--mem", mem]
        if listen:
            argv += ["--listen", listen]
        for v in vmmio:
            argv += ["--vmmio", v]
        argv += list(extra)
        if n_listen is None:
            ports = set()
            n_listen = 0
            for v in vmmio:
                port = re.search(r"port=([^,]+)", v).group(1)
                if port == "0":
                    n_listen += 1
                elif port not in ports:
                    ports.add(port)
                    n_listen += 1
        vm = VM(argv, n_listen)
        self.procs.append(vm)
        return vm

    def client(self, target, *opts, exe=TESTCLIENT, env=None, expect_ok=True):
        argv = [build_path(exe)] + list(opts) + ([target] if target is not None else [])
        c = Client(os.path.basename(exe), argv, env=client_env(env))
        self.procs.append(c)
        if expect_ok:
            assert c.first.startswith("OK connected"), "connect %r: %r; stderr:\n%s" % (
                target, c.first, c.stderr_tail())
        return c

    def proc(self, rel, *args, env=None):
        p = Proc(os.path.basename(rel), [build_path(rel)] + list(args), env=client_env(env))
        self.procs.append(p)
        return p

    def close(self):
        """End every process (clients first); report a VM that died or crashed."""
        problems = []
        for p in self.procs:
            if isinstance(p, VM) and p.p.poll() is not None:
                problems.append("coreio-vm exited during the test with status %s; stderr:\n%s"
                                % (p.p.returncode, p.stderr_tail()))
        for p in reversed(self.procs):
            p.stop()
            if p.p.returncode in (-signal.SIGSEGV, -signal.SIGABRT, -signal.SIGBUS,
                                  -signal.SIGILL, -signal.SIGFPE):
                problems.append("%s crashed (signal %d); stderr:\n%s"
                                % (p.name, -p.p.returncode, p.stderr_tail()))
            with p.cond:
                bad = [l for l in p.stderr_lines if SANITIZER.search(l)]
            if bad:
                problems.append("%s: sanitizer report:\n%s" % (p.name, p.stderr_tail(60)))
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    yield e
    e.close()


# A standard machine: two 64 KiB ranges on one port (rid 0 posted, rid 1 acked),
# IRQ lines 5 and 6, and a test client that serves both.
R0 = 0xD0000000
R1 = 0xD0010000


@pytest.fixture
def vm2(env):
    return env.vm("%#x,size=0x10000,irq=5,port=@a" % R0,
                  "%#x,size=0x10000,irq=6,port=@a,writes=acked" % R1)


@pytest.fixture
def served(env, vm2):
    """(vm, client) with the client serving ranges 0 and 1 with pair callbacks."""
    c = env.client(vm2.target(0))
    c.ok("register 0")
    c.ok("register 1")
    vm2.wait_claim(0)
    vm2.wait_claim(1)
    return vm2, c


# --- coreio-vm --accel kvm running a freestanding guest (tests/guests, test_kvm.py) ---

GUESTS_DIR = "tests/guests"


def guest_path(name):
    """Path of a test guest ELF (tests/guests/NAME.elf) in the build directory."""
    p = os.path.join(BUILD_DIR, GUESTS_DIR, name + ".elf")
    if not os.path.isfile(p):
        pytest.fail("%s/%s.elf is not built (COREIO_BUILD_DIR=%s)" % (GUESTS_DIR, name, BUILD_DIR))
    return p


def count_listen(vmmio):
    """How many 'listening on' lines coreio-vm prints for these --vmmio arguments."""
    ports = set()
    n = 0
    for v in vmmio:
        port = re.search(r"port=([^,]+)", v).group(1)
        if port == "0":
            n += 1
        elif port not in ports:
            ports.add(port)
            n += 1
    return n


class GuestVM(Proc):
    """coreio-vm --accel kvm running a test guest; stdout is the guest's COM1 output."""

    def __init__(self, argv, n_listen):
        super().__init__("coreio-vm", argv)
        lines = self.wait_stderr(r"listening on (\S+)", timeout=10, count=n_listen) \
            if n_listen else []
        self.listening = [m.group(1) for m in lines]

    def output(self):
        """The COM1 lines printed so far."""
        with self.cond:
            return list(self.stdout_lines)

    def finish(self, timeout=60):
        """Wait for the VM to exit; return (status, COM1 lines). Fails on a timeout."""
        timeout = scaled(timeout)
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("coreio-vm (guest %s) did not exit within %ss; COM1:\n%s\n"
                                 "stderr:\n%s" % (self.argv[self.argv.index("--kernel") + 1],
                                                  timeout, "\n".join(self.output()[-30:]),
                                                  self.stderr_tail()))
        self.t_out.join(10)
        self.t_err.join(10)
        return rc, self.output()

    def expect_success(self, timeout=60):
        """Wait for the exit; assert status 0 and a last line SUCCESS; return the COM1 lines."""
        rc, out = self.finish(timeout)
        if rc != 0 or not out or out[-1] != "SUCCESS":
            raise AssertionError("guest failed: exit status %s; COM1:\n%s\nstderr:\n%s"
                                 % (rc, "\n".join(out[-40:]), self.stderr_tail()))
        return out


def guest_vm(env, guest, *vmmio, smp=1, append=None, mem="64M", extra=()):
    """Start coreio-vm --accel kvm --kernel GUEST.elf with these --vmmio ranges (ended by env)."""
    argv = [build_path(VM_EXE), "--accel", "kvm", "--kernel", guest_path(guest), "--mem", mem,
            "--smp", str(smp)]
    if append is not None:
        argv += ["--append", append]
    for v in vmmio:
        argv += ["--vmmio", v]
    argv += list(extra)
    vm = GuestVM(argv, count_listen(vmmio))
    env.procs.append(vm)
    return vm
