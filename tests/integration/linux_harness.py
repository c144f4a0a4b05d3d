"""Boots the Linux test guest (scripts/build-guest-image.sh) under QEMU, directly or through scripts/coreio-qemu, and reads its console."""

import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_IMAGE = os.path.join(REPO, "scripts", "build-guest-image.sh")
COREIO_QEMU = os.path.join(REPO, "scripts", "coreio-qemu")

# The kernel command line of every boot. panic=-1 with QEMU's -no-reboot ends
# QEMU if /init dies; loglevel=4 keeps the kernel's I/O errors on the console.
BASE_APPEND = "console=ttyS0 loglevel=4 panic=-1"

BOOT_TIME = re.compile(r"coreio-init: boot time ([0-9.]+) s")
RESULT = re.compile(r"^RESULT: (PASS|FAIL) (\S+)")


# Which QEMU a Linux test can use. Two kinds:
# - the system qemu-system-x86_64 (Debian 12: QEMU 7.2), looked up on PATH: the
#   only QEMU coreio-qemu's mpqemu transport runs on (x-pci-proxy-dev), and the
#   first choice for the baseline boots with QEMU's own devices (qemu_argv);
# - ROOT/coreio-qemu-system, ROOT being $COREIO_QEMU_ROOT or build/qemu-root
#   (QEMU 11.1 in the Debian trixie root scripts/qemu-root.sh makes): what
#   coreio-qemu runs vfio-user on, and the baseline's QEMU without a system one.
# Both are looked up afresh each time, the system one on PATH: to run the tests
# as if there were no system QEMU, run them with a PATH of links to everything
# but qemu-system-* (tests/integration/test_linux.py's docstring says how).

SYSTEM_QEMU_PACKAGE = "Debian package qemu-system-x86"


def qemu_binary():
    """Path of the system qemu-system-x86_64 (on PATH), or None."""
    return shutil.which("qemu-system-x86_64")


def qemu_root_dir():
    """The QEMU 11.1 root coreio-qemu looks in: $COREIO_QEMU_ROOT, else build/qemu-root."""
    return os.environ.get("COREIO_QEMU_ROOT") or os.path.join(REPO, "build", "qemu-root")


def root_qemu():
    """Path of ROOT/coreio-qemu-system (scripts/qemu-root.sh's wrapper), or None when absent."""
    w = os.path.join(qemu_root_dir(), "coreio-qemu-system")
    return w if os.access(w, os.X_OK) else None


def baseline_qemu():
    """The QEMU for boots with QEMU's own devices: the system one, else the root's; or None."""
    return qemu_binary() or root_qemu()


def no_qemu_reason():
    """Why no Linux test can run for want of any QEMU, or None when there is one."""
    if baseline_qemu():
        return None
    return ("no QEMU at all: no system qemu-system-x86_64 on PATH (%s; QEMU 7.2, for the "
            "mpqemu transport) and no %s (scripts/qemu-root.sh makes it: QEMU 11.1, for "
            "vfio-user)" % (SYSTEM_QEMU_PACKAGE, os.path.join(qemu_root_dir(),
                                                                "coreio-qemu-system")))


_MPQEMU_MISSING = {}


def mpqemu_missing():
    """Why coreio-qemu --transport mpqemu cannot run here, or None when it can.

    mpqemu runs the system qemu-system-x86_64 (QEMU 7.2's multi-process proxy
    device x-pci-proxy-dev); the root's QEMU is not used for it. Cached per
    QEMU path.
    """
    qemu = qemu_binary()
    if not qemu:
        return ("the mpqemu transport needs the system qemu-system-x86_64 (QEMU 7.2's "
                "x-pci-proxy-dev, %s): none on PATH" % SYSTEM_QEMU_PACKAGE)
    if qemu not in _MPQEMU_MISSING:
        why = None
        try:
            r = subprocess.run([qemu, "-machine", "none", "-device", "x-pci-proxy-dev,help"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=30)
            if r.returncode != 0 or "fd=" not in r.stdout:
                why = ("the mpqemu transport needs x-pci-proxy-dev, which the system QEMU %s "
                       "does not offer (status %d): %s"
                       % (qemu, r.returncode, " ".join(r.stdout.split())[-300:]))
        except (OSError, subprocess.TimeoutExpired) as e:
            why = "the system QEMU %s does not run: %s" % (qemu, e)
        _MPQEMU_MISSING[qemu] = why
    return _MPQEMU_MISSING[qemu]


def image_dir(build_dir):
    """Where the guest image is built: $COREIO_GUEST_DIR, else BUILD/guest-image."""
    return os.environ.get("COREIO_GUEST_DIR") or os.path.join(build_dir, "guest-image")


def build_image(outdir, timeout=900):
    """Runs scripts/build-guest-image.sh OUTDIR; returns (ok, log)."""
    try:
        r = subprocess.run([BUILD_IMAGE, outdir], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, "build-guest-image.sh took more than %d s" % timeout
    except OSError as e:
        return False, str(e)
    ok = r.returncode == 0 and all(
        os.path.isfile(os.path.join(outdir, f)) for f in ("vmlinuz", "initramfs.cpio.gz"))
    return ok, r.stdout


def make_disk(path, mib):
    """Creates a sparse raw disk image of MIB MiB (zeroes)."""
    with open(path, "wb") as f:
        f.truncate(mib << 20)
    return path


class Console:
    """A process whose stdout is the guest's serial console; lines are collected by a thread.

    Output is read as bytes and decoded leniently, so whatever the guest
    prints cannot stop the reader. stderr goes to a second thread.
    """

    def __init__(self, name, argv, env=None):
        self.name = name
        self.argv = argv
        self.lines = []
        self.err_lines = []
        self.cond = threading.Condition()
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=env, start_new_session=True)
        self.t_out = threading.Thread(target=self._reader, args=(self.p.stdout, self.lines),
                                      daemon=True)
        self.t_err = threading.Thread(target=self._reader, args=(self.p.stderr, self.err_lines),
                                      daemon=True)
        self.t_out.start()
        self.t_err.start()

    def _reader(self, stream, into):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n").replace("\r", "")
            with self.cond:
                into.append(line)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def tail(self, n=40):
        with self.cond:
            out = "\n".join(self.lines[-n:])
            err = "\n".join(self.err_lines[-n:])
        return "--- console of %s (last lines):\n%s\n--- stderr:\n%s" % (self.name, out, err)

    def wait_line(self, regex, timeout, start=0):
        """Waits for a console line (index >= start) matching regex; returns (index, match)."""
        rx = re.compile(regex)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(start, len(self.lines)):
                    m = rx.search(self.lines[i])
                    if m:
                        return i, m
                left = deadline - time.monotonic()
                if left <= 0 or (self.p.poll() is not None and not self.t_out.is_alive()):
                    raise AssertionError("%s: no console line matching %r within %ss (exit %s)\n%s"
                                         % (self.name, regex, timeout, self.p.poll(), self.tail()))
                self.cond.wait(min(left, 0.2))

    def wait_err(self, regex, timeout, start=0):
        """Waits for a stderr line (index >= start) matching regex; returns (index, match)."""
        rx = re.compile(regex)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(start, len(self.err_lines)):
                    m = rx.search(self.err_lines[i])
                    if m:
                        return i, m
                left = deadline - time.monotonic()
                if left <= 0 or (self.p.poll() is not None and not self.t_err.is_alive()):
                    raise AssertionError("%s: no stderr line matching %r within %ss (exit %s)\n%s"
                                         % (self.name, regex, timeout, self.p.poll(), self.tail()))
                self.cond.wait(min(left, 0.2))

    def send(self, line):
        """Types a line on the guest console."""
        self.p.stdin.write(line.encode() + b"\n")
        self.p.stdin.flush()

    def wait_exit(self, timeout):
        """Waits for the process to end (the guest powered off); returns its status."""
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s did not exit within %ss\n%s" % (self.name, timeout, self.tail()))
        self.t_out.join(5)
        self.t_err.join(5)
        return rc

    def stop(self):
        """Ends the process and everything it started (its process group)."""
        if self.p.poll() is None:
            for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.p.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.p.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        else:
            # The leader is gone; anything left in its group goes too.
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for t in (self.t_out, self.t_err):
            t.join(5)
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            try:
                f.close()
            except OSError:
                pass

    # Results of the guest scripts.

    def boot_time(self, timeout):
        """Waits for /init's boot time line; returns the seconds."""
        _, m = self.wait_line(BOOT_TIME.pattern, timeout)
        return float(m.group(1))

    def result(self, test, timeout):
        """Waits for the test's RESULT line; returns the list of its PASS/FAIL lines and the verdict."""
        i, m = self.wait_line(r"^RESULT: (PASS|FAIL) %s$" % re.escape(test), timeout)
        with self.cond:
            checks = [l for l in self.lines[:i] if l.startswith(("PASS: ", "FAIL: "))]
        return m.group(1), checks

    def values(self, prefix):
        """The console lines starting with prefix, without it."""
        with self.cond:
            return [l[len(prefix):] for l in self.lines if l.startswith(prefix)]


def append_line(test=None, extra=""):
    """The kernel command line for a guest test (or the shell when test is None)."""
    parts = [BASE_APPEND]
    if test:
        parts.append("coreio.test=" + test)
    if extra:
        parts.append(extra)
    return " ".join(parts)


def qemu_argv(img, test=None, disks=(), rng=False, smp=1, mem=256, extra_append="",
              accel="tcg"):
    """QEMU with its own in-process virtio devices (the baseline), console on stdio.

    The system QEMU, else the root's (baseline_qemu()).
    """
    argv = [baseline_qemu() or "qemu-system-x86_64", "-M", "pc", "-accel", accel, "-smp", str(smp),
            "-m", str(mem), "-nodefaults", "-no-reboot", "-display", "none", "-serial", "stdio",
            "-kernel", os.path.join(img, "vmlinuz"),
            "-initrd", os.path.join(img, "initramfs.cpio.gz"),
            "-append", append_line(test, extra_append)]
    if rng:
        argv += ["-device", "virtio-rng-pci"]
    for i, d in enumerate(disks):
        argv += ["-drive", "file=%s,if=none,id=d%d,format=raw" % (d, i),
                 "-device", "virtio-blk-pci,drive=d%d" % i]
    return argv


def coreio_qemu_available():
    """Whether scripts/coreio-qemu exists (issue 4's orchestrator)."""
    return os.access(COREIO_QEMU, os.X_OK)


_VFIO_USER_MISSING = {}


def vfio_user_missing(build_dir):
    """Why coreio-qemu cannot run vfio-user here (its own words), or None when it can.

    Asks coreio-qemu itself (--transport vfio-user --dry-run): it looks for a
    QEMU >= 10.1 listing vfio-user-pci (the system one, else
    build/qemu-root's, which scripts/qemu-root.sh makes) and for a coreio-vm
    with --accel vfio-user. Cached per build directory.
    """
    if build_dir in _VFIO_USER_MISSING:
        return _VFIO_USER_MISSING[build_dir]
    vm = os.path.join(build_dir, "src/vm/coreio-vm")
    try:
        r = subprocess.run([COREIO_QEMU, "--transport", "vfio-user", "--dry-run", "--coreio-vm", vm,
                            "--kernel", COREIO_QEMU, "--initrd", COREIO_QEMU, "--accel", "tcg",
                            "--vmmio", "pci,size=16K,pci=1044,profile=virtio,port=0"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60)
        why = None
        if r.returncode != 0 or "vfio-user-pci" not in r.stdout:
            why = ("coreio-qemu --transport vfio-user cannot run here (status %d): %s "
                   "(scripts/qemu-root.sh makes %s with QEMU 11.1)"
                   % (r.returncode, " ".join(r.stderr.split())[-400:], qemu_root_dir()))
    except (OSError, subprocess.TimeoutExpired) as e:
        why = "coreio-qemu --transport vfio-user --dry-run failed: %s" % e
    _VFIO_USER_MISSING[build_dir] = why
    return why


def dry_run_qemu(accel, append, mem, img, transport="auto"):
    """coreio-qemu's QEMU command line (--dry-run) for one blk range, without the range's device.

    Returns (transport, argv): the baseline of the benchmark runs QEMU's own
    devices in the same QEMU, machine, accelerator and kernel parameters.
    """
    r = subprocess.run([COREIO_QEMU, "--dry-run", "--accel", accel, "--mem", mem,
                        "--transport", transport,
                        "--kernel", os.path.join(img, "vmlinuz"),
                        "--initrd", os.path.join(img, "initramfs.cpio.gz"), "--append", append,
                        "--vmmio", "pci,size=16K,pci=1042,profile=virtio,port=0"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("coreio-qemu --dry-run failed: %s" % r.stderr)
    m = re.search(r"^coreio-qemu: transport: (\S+)", r.stderr, re.M)
    qemu = shlex.split(r.stdout.strip().splitlines()[-1])
    argv, i = [], 0
    while i < len(qemu):
        if qemu[i] == "-device" and ("x-pci-proxy-dev" in qemu[i + 1]
                                     or "vfio-user-pci" in qemu[i + 1]):
            i += 2
            continue
        argv.append(qemu[i])
        i += 1
    return (m.group(1) if m else transport), argv


def descendants(pid):
    """The pids of every live descendant of pid (from /proc/PID/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir("/proc/%d/task" % p)
        except OSError:
            continue
        for t in tasks:
            try:
                with open("/proc/%d/task/%s/children" % (p, t)) as f:
                    kids = [int(x) for x in f.read().split()]
            except (OSError, ValueError):
                continue
            out += kids
            todo += kids
    return out


def pid_alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_gone(pids, timeout=10):
    """Waits up to timeout seconds for every pid to end; returns those still alive."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if pid_alive(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


def kill_pid(pid, sig=signal.SIGKILL):
    """Sends sig to pid if it still exists."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


MODEL_PCI_ID = {"blk": "1042", "rng": "1044", "console": "1043"}


class Device:
    """One CoreIO virtio device of a machine: its model program and arguments.

    args are more model options (e.g. ["--queues", "2"]); port is the range's
    port= value ("0": a free TCP port; "unix:PATH,shm=on" for shared memory).
    """

    def __init__(self, kind, image=None, args=(), port="0"):
        self.kind = kind
        self.image = image
        self.args = list(args)
        self.port = port


class CoreioMachine(Console):
    """Linux under scripts/coreio-qemu, each device a CoreIO model process.

    The models start through coreio-qemu's --run (before QEMU), each writing
    its pid to WORKDIR/devN.pid so a test can kill one; restart_model()
    starts a replacement owned by this object. stop() ends everything and
    records in left_behind what coreio-qemu itself failed to end.
    """

    def __init__(self, build_dir, img, workdir, test=None, devices=(), smp=1, mem="256M",
                 extra_append="", accel="auto", timeout=600, transport="auto", qemu_args=()):
        self.build_dir = build_dir
        self.workdir = workdir
        self.devices = list(devices)
        self.extra_models = []
        self.left_behind = []
        argv = [COREIO_QEMU, "--kernel", os.path.join(img, "vmlinuz"),
                "--initrd", os.path.join(img, "initramfs.cpio.gz"),
                "--append", " ".join(x for x in ("loglevel=4", extra_append,
                                                 "coreio.test=" + test if test else "") if x),
                "--accel", accel, "--smp", str(smp), "--mem", mem, "--timeout", str(timeout),
                "--coreio-vm", os.path.join(build_dir, "src/vm/coreio-vm"),
                "--transport", transport]
        argv += ["--qemu-arg=" + x for x in qemu_args]
        for g, d in enumerate(self.devices):
            argv += ["--vmmio", "pci,size=16K,pci=%s,profile=virtio,port=%s"
                     % (MODEL_PCI_ID[d.kind], d.port)]
            argv += ["--run", "echo $$ > %s; exec %s 1>&2" % (
                self.pid_file(g), " ".join(self.model_argv(g, "{G%d}" % g)))]
        env = dict(os.environ, COREIO_BUILD_DIR=build_dir)
        super().__init__("coreio-qemu", argv, env=env)

    def pid_file(self, g):
        return os.path.join(self.workdir, "dev%d.pid" % g)

    def model_argv(self, g, target):
        d = self.devices[g]
        argv = [os.path.join(self.build_dir, "devices", "coreio-virtio-" + d.kind),
                "--transport", "pci"]
        if d.image:
            argv += ["--image", d.image]
        return argv + d.args + [target]

    def accel(self, timeout=30):
        """The accelerator coreio-qemu chose (kvm or tcg)."""
        return self.wait_err(r"^coreio-qemu: accelerator: (\w+)", timeout)[1].group(1)

    def transport(self, timeout=30):
        """The transport coreio-qemu chose (vfio-user or mpqemu); the last one it named."""
        self.wait_err(r"^coreio-qemu: accelerator: ", timeout)
        with self.cond:
            said = [l for l in self.err_lines if l.startswith("coreio-qemu: transport: ")]
        return said[-1].split()[2]

    def target(self, g, timeout=30):
        """Where the model of range g connects (coreio-qemu's 'G0 pci ... -> ADDR' line)."""
        return self.wait_err(r"^coreio-qemu: G%d pci \S+ -> (\S+)" % g, timeout)[1].group(1)

    def model_pid(self, g, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(self.pid_file(g)) as f:
                    return int(f.read().strip())
            except (OSError, ValueError):
                time.sleep(0.1)
        raise AssertionError("no pid file of device %d\n%s" % (g, self.tail()))

    def kill_model(self, g, sig=signal.SIGKILL):
        """Kills the model of range g (the one started by --run)."""
        kill_pid(self.model_pid(g), sig)

    def restart_model(self, g):
        """Starts a new model process for range g; returns its Popen."""
        log = open(os.path.join(self.workdir, "dev%d-restart.log" % g), "wb")
        p = subprocess.Popen(self.model_argv(g, self.target(g)), stdin=subprocess.DEVNULL,
                             stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.extra_models.append(p)
        return p

    def processes(self):
        """The pids below coreio-qemu now: coreio-vm, QEMU, the models and what they started."""
        return descendants(self.p.pid) if self.p.poll() is None else []

    def stop(self):
        """Ends coreio-qemu (SIGTERM: it ends QEMU, coreio-vm and the models), then anything left."""
        kids = self.processes()
        if self.p.poll() is None:
            kill_pid(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                pass
        # Only if coreio-qemu could not end them itself: its children, by pid.
        self.left_behind = wait_gone(kids, 5)
        for pid in self.left_behind:
            kill_pid(pid)
        for p in self.extra_models:
            if p.poll() is None:
                p.kill()
            p.wait(10)
        super().stop()
