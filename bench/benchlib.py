"""Helpers shared by the benchmarks in bench/: child processes, KVM guest runs, baselines, output.

Not a benchmark itself. Every wait has a timeout and every process started
here is ended by the caller's `finally` (Line.stop(), run_guest()).
"""
import argparse
import json
import os
import re
import select
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "scripts"))
from kvmcheck import kvm_unavailable  # noqa: E402,F401  (re-exported)


def emit(obj):
    """Print one JSON line at once."""
    print(json.dumps(obj), flush=True)


def exe(build, rel):
    """The path of a built program, or exit with a message naming it."""
    p = os.path.join(build, rel)
    if not os.access(p, os.X_OK):
        raise SystemExit("bench: %s is not built (run ninja -C %s)" % (p, build))
    return p


def ratio(a, b, nd=3):
    return round(a / b, nd) if b else None


class LineBuffer:
    """Lines of a child's output, read from the raw fd into our own buffer.

    select() on a pipe plus a buffered readline() strands lines that arrived
    in one read (the select sees an empty pipe while the line waits in
    Python's buffer) and fakes a hang; this reads the fd itself.
    """

    def __init__(self, fd):
        self.fd = fd
        self.buf = b""

    def line(self, timeout):
        """The next line without its newline, None after timeout s; EOFError at the end."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        ln, self.buf = self.buf.split(b"\n", 1)
        return ln.decode(errors="replace")


class Line:
    """A child process spoken to one line at a time; every read has a timeout."""

    def __init__(self, argv, name=None, stderr=subprocess.DEVNULL, env=None):
        self.name = name or os.path.basename(argv[0])
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=stderr, text=True, bufsize=1, env=env)
        self.lines = LineBuffer(self.p.stdout.fileno())

    def send(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def read(self, timeout=120):
        try:
            ans = self.lines.line(timeout)
        except EOFError:
            raise SystemExit("bench: %s ended (status %s)" % (self.name, self.p.poll()))
        if ans is None:
            raise SystemExit("bench: %s gave no answer within %d s" % (self.name, timeout))
        return ans.strip()

    def answer(self, line, timeout=120):
        """Send a command and return its answer line, skipping EV lines."""
        self.send(line)
        while True:
            a = self.read(timeout)
            if not a.startswith("EV "):
                return a

    def ok(self, line, timeout=120):
        a = self.answer(line, timeout)
        if not a.startswith("OK"):
            raise SystemExit("bench: %s: %r -> %r" % (self.name, line, a))
        return a

    def stop(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.close()
            except OSError:
                pass
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def stop_all(procs):
    for p in procs:
        if p is None:
            continue
        if isinstance(p, Line):
            p.stop()
        elif p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def wait_listening(errfile, proc, count, timeout=10):
    """The targets of the first `count` 'listening on X' lines of coreio-vm's stderr file."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        errfile.seek(0)
        found = re.findall(r"^listening on (\S+)", errfile.read(), re.M)
        if len(found) >= count:
            return found
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    errfile.seek(0)
    raise SystemExit("bench: coreio-vm did not start listening\n%s" % errfile.read()[-2000:])


def pinned(cpu):
    """A Popen preexec_fn that pins the child to CPU cpu (None: no pinning)."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def run_guest(build, guest, append, vmmio=(), start_clients=None, timeout=180, extra=(),
              vm_stderr=None, cpu=None):
    """Run a test guest under coreio-vm --accel kvm and return its COM1 lines.

    vm_stderr: a list that gets coreio-vm's standard error as one string.
    cpu: pin coreio-vm (all its threads) to this CPU.

    vmmio: --vmmio values; start_clients(targets) starts the clients once every
    port listens (targets: the 'listening on' values in order) and returns the
    processes (Popen or Line) to end afterwards. Exits with a message unless
    the guest ends with status 0.
    """
    argv = [exe(build, "src/vm/coreio-vm"), "--accel", "kvm", "--mem", "64M",
            "--kernel", exe(build, "tests/guests/%s.elf" % guest), "--append", append]
    argv += list(extra)
    ports = set()
    for v in vmmio:
        argv += ["--vmmio", v]
        ports.add(re.search(r"port=([^,]+)", v).group(1))
    nports = len([p for p in ports if p != "0"]) + sum(1 for v in vmmio if "port=0" in v)
    with tempfile.TemporaryFile(mode="w+") as err:
        vm = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True,
                              stdin=subprocess.DEVNULL, preexec_fn=pinned(cpu))
        clients = []
        try:
            if start_clients:
                clients = start_clients(wait_listening(err, vm, nports)) or []
            try:
                out, _ = vm.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                vm.kill()
                out, _ = vm.communicate()
                raise SystemExit("bench: guest %s did not finish within %d s\n%s"
                                 % (guest, timeout, out[-2000:]))
        finally:
            stop_all(clients + [vm])
        err.seek(0)
        errtext = err.read()
        if vm.returncode != 0:
            raise SystemExit("bench: guest %s failed (status %s)\n%s\n%s"
                             % (guest, vm.returncode, out[-2000:], errtext[-2000:]))
        if vm_stderr is not None:
            vm_stderr.append(errtext)
        return out.splitlines()


def wait_stats(errtext):
    """(waits, answered before sleeping) from coreio-vm's exit summary of its vCPU waits."""
    m = re.search(r"(\d+) vCPU waits for its client, (\d+) answered before the vCPU slept",
                  errtext)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def bench_line(lines, what):
    """The fields of the guest's 'BENCH what k=v ...' line as integers."""
    for line in lines:
        m = re.match(r"BENCH %s ((?:\w+=\d+ ?)+)$" % re.escape(what), line.strip())
        if m:
            return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    raise SystemExit("bench: no 'BENCH %s' line in the guest output\n%s"
                     % (what, "\n".join(lines[-20:])))


def baseline(build, *args):
    """Run coreio-baselines once and return its JSON result."""
    p = subprocess.run([exe(build, "bench/coreio-baselines")] + [str(a) for a in args],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    if p.returncode != 0:
        raise SystemExit("bench: coreio-baselines %s failed (status %d): %s"
                         % (" ".join(map(str, args)), p.returncode, p.stderr.strip()))
    return json.loads(p.stdout.strip().splitlines()[-1])


def vm_help(build):
    return subprocess.run([exe(build, "src/vm/coreio-vm"), "--help"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=30).stdout


def parse_size(text):
    """'4096', '0x1000', '4K', '64k', '1M', '16M' or '1G' as bytes; ValueError otherwise."""
    m = re.fullmatch(r"\s*(0x[0-9a-fA-F]+|\d+)\s*([kKmMgG]?)\s*", text)
    if not m:
        raise ValueError("bad size %r (a number, optionally with K, M or G)" % text)
    return int(m.group(1), 0) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]


def shm_cap_bit():
    """The COREIO_CAP_SHM bit from include/coreio.h, or None."""
    try:
        with open(os.path.join(SRC, "include", "coreio.h")) as f:
            m = re.search(r"#define\s+COREIO_CAP_SHM\w*\s+\(?(0x[0-9a-fA-F]+|\d+)u?", f.read())
    except OSError:
        return None
    return int(m.group(1), 0) if m else None


def guest_bench_parser(doc, n_default, n_what):
    """The options every KVM guest benchmark has: --build, --n, --repeat."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--build", default="build", help="meson build directory (default: build)")
    ap.add_argument("--n", type=int, default=n_default,
                    help="%s per guest run (default %d)" % (n_what, n_default))
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per path; the best is reported (default 3)")
    return ap


def kvm_guest_setup(bench):
    """None (after printing the skipped line) where KVM is unusable; else a fresh UNIX socket path."""
    why = kvm_unavailable()
    if why:
        emit({"bench": bench, "skipped": why})
        return None
    return os.path.join(tempfile.mkdtemp(prefix="coreio-bench-"), "vm.sock")
