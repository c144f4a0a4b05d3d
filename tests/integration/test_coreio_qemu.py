"""scripts/coreio-qemu: Linux in QEMU sees a CoreIO client as a PCI device (busybox initramfs)."""

import glob
import importlib.machinery
import importlib.util
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest

from conftest import TESTCLIENT, VM_EXE, build_path
from linux_harness import descendants, pid_alive, wait_gone

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts",
                      "coreio-qemu")
QEMU = "qemu-system-x86_64"
BUSYBOX = "/bin/busybox"

# The guest: list the PCI devices, enable ours, write and read BAR 0 with devmem, power off.
INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for d in /sys/bus/pci/devices/*; do
  echo "PCI $(cat $d/vendor):$(cat $d/device) class $(cat $d/class)"
  if [ "$(cat $d/vendor):$(cat $d/device)" = "0x1234:0x5678" ]; then
    echo 1 > $d/enable
    base=$(head -1 $d/resource | cut -d' ' -f1)
    echo "BAR0 $base"
    devmem $(printf '0x%x' $((base + 0x20))) 32 0xcafef00d
    echo "READ $(devmem $(printf '0x%x' $((base + 0x20))) 32)"
  fi
done
echo "GUEST DONE"
poweroff -f
"""


def newc(entries):
    """A cpio 'newc' archive of (name, mode, data) entries."""
    out = b""
    for ino, (name, mode, data) in enumerate(entries + [("TRAILER!!!", 0, b"")], 1):
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join("%08X" % v for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0))
        out += hdr.encode() + nb
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return out


def guest_kernel():
    """The host's kernel, else the one of the Linux guest image (scripts/build-guest-image.sh)."""
    cands = sorted(glob.glob("/boot/vmlinuz-*"), reverse=True)
    if os.environ.get("COREIO_GUEST_DIR"):
        cands.append(os.path.join(os.environ["COREIO_GUEST_DIR"], "vmlinuz"))
    cands.append(os.path.join(os.path.dirname(SCRIPT), "..", "build", "guest-image", "vmlinuz"))
    for k in cands:
        if os.access(k, os.R_OK):
            return k
    return None


def run(args, timeout=30, env=None):
    return subprocess.run([sys.executable, SCRIPT] + args, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout,
                          env=None if env is None else dict(os.environ, **env))


def load_script():
    """scripts/coreio-qemu as a module (its main() runs only as a program)."""
    loader = importlib.machinery.SourceFileLoader("coreio_qemu_script", SCRIPT)
    spec = importlib.util.spec_from_loader("coreio_qemu_script", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def vfio_user_unavailable():
    """None when coreio-qemu can run the vfio-user transport here, else why not."""
    p = run(["--kernel", SCRIPT, "--initrd", SCRIPT, "--accel", "tcg", "--dry-run",
             "--transport", "vfio-user", "--coreio-vm", build_path(VM_EXE),
             "--vmmio", "pci,size=4K,port=0"])
    if p.returncode == 0:
        return None
    return p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "exit %d" % p.returncode


# Stand-ins for the transport choice: a QEMU that says its version and whether it
# has vfio-user-pci, and a coreio-vm whose --help offers --accel vfio-user.
FAKE_VERSIONED_QEMU = r"""#!/bin/sh
case "$*" in
--version) echo "QEMU emulator version @VERSION@ (fake)"; exit 0 ;;
*vfio-user-pci,help*)
  if [ @VFIO@ = 1 ]; then
    echo "vfio-user-pci options:"
    echo "  socket=<SocketAddress> - SocketAddress (UNIX sockets only)"
    exit 0
  fi
  echo "qemu-system-x86_64: -device vfio-user-pci,help: Device 'vfio-user-pci' not found" >&2
  exit 1 ;;
esac
exit 1
"""

FAKE_VFIO_USER_VM = """#!/bin/sh
echo "usage: coreio-vm [--accel kvm|qtest|mpqemu|vfio-user] [--vfio-user-socket PATH] [--verbose]"
"""


def fake_qemu(path, version, vfio):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(FAKE_VERSIONED_QEMU.replace("@VERSION@", version)
                    .replace("@VFIO@", "1" if vfio else "0"))
    path.chmod(0o755)
    return path


def choose(tmp_path, system=None, root=None, extra=(), vm=None):
    """A dry run of coreio-qemu with a fake system QEMU (on PATH) and a fake QEMU root.

    Each call gets a fresh directory below tmp_path: tmp_path/cN/bin and tmp_path/cN/qemu-root.
    """
    tmp_path = tmp_path / ("c%d" % len(list(tmp_path.glob("c*"))))
    tmp_path.mkdir()
    k = tmp_path / "k"
    k.write_bytes(b"x")
    if vm is None:
        vm = tmp_path / "fake-vm"
        vm.write_text(FAKE_VFIO_USER_VM)
        vm.chmod(0o755)
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    if system:
        fake_qemu(bindir / "qemu-system-x86_64", *system)
    qroot = tmp_path / "qemu-root"
    qroot.mkdir(exist_ok=True)
    if root:
        fake_qemu(qroot / "coreio-qemu-system", *root)
    env = {"PATH": "%s:%s" % (bindir, os.environ.get("PATH", "/usr/bin:/bin")),
           "COREIO_QEMU_ROOT": str(qroot)}
    return run(["--kernel", str(k), "--initrd", str(k), "--accel", "tcg", "--dry-run",
                "--coreio-vm", str(vm), "--vmmio", "pci,size=16K,pci=1042,profile=virtio,port=0",
                "--vmmio", "pci,size=4K,hotplug=off,port=0"] + list(extra), env=env)


def test_transport_auto_mpqemu_when_no_new_qemu(tmp_path):
    p = choose(tmp_path, system=("7.2.22", False))
    assert p.returncode == 0, p.stderr
    assert ("transport: mpqemu (system QEMU 7.2.22 has no vfio-user-pci; scripts/qemu-root.sh "
            "provides QEMU 11.1)") in p.stderr, p.stderr
    vm_line, qemu_line = p.stdout.splitlines()
    assert "--accel mpqemu" in vm_line and "x-pci-proxy-dev" in qemu_line
    assert "irqpoll nolapic_timer nohz=off" in qemu_line
    assert qemu_line.startswith("qemu-system-x86_64 ")
    # A QEMU 10.1 or later that lacks the device does not count either.
    p = choose(tmp_path, system=("7.2.22", False), root=("10.2.0", False))
    assert p.returncode == 0, p.stderr
    # The root's path is shown relative to the current directory when that is shorter.
    assert re.search(r"QEMU 10\.2\.0 \((\S*/)?c1/qemu-root\) does not list vfio-user-pci",
                     p.stderr), p.stderr


def test_transport_auto_vfio_user_from_the_qemu_root(tmp_path):
    p = choose(tmp_path, system=("7.2.22", False), root=("11.1.3", True), extra=["--verbose"])
    assert p.returncode == 0, p.stderr
    qroot = tmp_path / "c0" / "qemu-root"
    assert "transport: vfio-user (QEMU 11.1.3 from %s)" % qroot in p.stderr, p.stderr
    vm_line, qemu_line = p.stdout.splitlines()
    assert "--accel vfio-user" in vm_line and "--mpqemu-fd" not in vm_line
    assert vm_line.endswith(" --verbose")
    socks = re.findall(r"--vfio-user-socket (\S+)", vm_line)
    assert len(socks) == 2 and socks[0] != socks[1]
    for sp in socks:
        # Short enough for sockaddr_un, in a private directory coreio-qemu removed at exit.
        assert sp.startswith("/tmp/coreio-qemu-") and len(sp.encode()) < 108, sp
        assert not os.path.exists(os.path.dirname(sp)), sp
    assert qemu_line.startswith(str(qroot / "coreio-qemu-system") + " ")
    devs = [json.loads(d) for d in re.findall(r"-device '(\{[^']*\})'", qemu_line)]
    assert devs == [
        {"driver": "vfio-user-pci", "id": "coreio0", "socket": {"type": "unix", "path": socks[0]},
         "bus": "coreio-rp0"},
        {"driver": "vfio-user-pci", "id": "coreio1", "socket": {"type": "unix", "path": socks[1]}}]
    assert "pcie-root-port,id=coreio-rp0" in qemu_line and "coreio-rp1" not in qemu_line
    assert "--mpqemu-control" in vm_line  # hot-plug events come on the same control socket
    # Real interrupts: no polling parameters, multi-threaded TCG, shared RAM for DMA.
    assert "irqpoll" not in qemu_line and "nolapic_timer" not in qemu_line
    assert "-accel tcg " in qemu_line and "thread=single" not in qemu_line
    assert "memory-backend-memfd,id=mem,size=512M,share=on" in qemu_line
    assert "x-pci-proxy-dev" not in qemu_line


def test_transport_choice_order_and_overrides(tmp_path):
    # A system QEMU new enough wins over the root.
    p = choose(tmp_path, system=("11.0.0", True), root=("11.1.3", True))
    assert p.returncode == 0 and "transport: vfio-user (system QEMU 11.0.0)" in p.stderr, p.stderr
    assert p.stdout.splitlines()[1].startswith(str(tmp_path / "c0" / "bin" / "qemu-system-x86_64"))
    # --transport mpqemu: the system QEMU on the proxy, whatever else is there.
    p = choose(tmp_path, system=("11.0.0", True), root=("11.1.3", True),
               extra=["--transport", "mpqemu"])
    assert p.returncode == 0 and "transport: mpqemu (--transport mpqemu)" in p.stderr, p.stderr
    assert "--accel mpqemu" in p.stdout
    # --qemu names the QEMU; an old one means mpqemu.
    old = fake_qemu(tmp_path / "old" / "qemu", "9.2.0", False)
    p = choose(tmp_path, system=("11.0.0", True), extra=["--qemu", str(old)])
    assert p.returncode == 0 and "transport: mpqemu (QEMU 9.2.0 (%s) has no vfio-user-pci)" % old \
        in p.stderr, p.stderr
    # --transport vfio-user without a QEMU for it: a clear error, status 125.
    p = choose(tmp_path, system=("7.2.22", False), extra=["--transport", "vfio-user"])
    assert p.returncode == 125, p.stderr
    assert "--transport vfio-user: no QEMU >= 10.1 with vfio-user-pci (system QEMU 7.2.22" \
        in p.stderr, p.stderr
    # A coreio-vm without --accel vfio-user keeps auto on mpqemu, and says so.
    nov = tmp_path / "old-vm"
    nov.write_text("#!/bin/sh\necho 'usage: coreio-vm --accel kvm|qtest|mpqemu'\n")
    nov.chmod(0o755)
    p = choose(tmp_path, system=("11.0.0", True), vm=nov, extra=["--verbose"])
    assert p.returncode == 0 and "transport: mpqemu (%s has no --accel vfio-user)" % nov \
        in p.stderr, p.stderr
    assert "has no --verbose" in p.stderr and "--verbose" not in p.stdout


def fake_tree(tmp_path, kvm=None, modules=(), holders=(), flags=""):
    """A fake / for hardware_kvm(): dev/kvm ('file', 'dir' or None), sys/module, proc/cpuinfo."""
    r = tmp_path / "root"
    (r / "dev").mkdir(parents=True)
    (r / "proc").mkdir()
    (r / "proc" / "cpuinfo").write_text("processor\t: 0\nflags\t\t: fpu sse2 %s\n" % flags)
    for m in modules:
        (r / "sys" / "module" / m / "parameters").mkdir(parents=True)
    for h in holders:
        (r / "sys" / "module" / "kvm" / "holders").mkdir(parents=True, exist_ok=True)
        (r / "sys" / "module" / "kvm" / "holders" / h).mkdir()
    if kvm == "file":
        (r / "dev" / "kvm").write_bytes(b"")
    elif kvm == "dir":
        (r / "dev" / "kvm").mkdir()
    return str(r) + "/"


@pytest.mark.parametrize("case,expect", [
    (dict(modules=("kvm", "kvm_pvm")),
     "no /dev/kvm at all (kvm_pvm present in /sys/module but bound to nothing)"),
    (dict(), "no /dev/kvm at all"),
    (dict(kvm="dir", modules=("kvm", "kvm_pvm")),
     "/dev/kvm is there but cannot be opened: Is a directory (errno EISDIR)"),
    (dict(kvm="file", modules=("kvm", "kvm_pvm")),
     "/dev/kvm is kvm_pvm (a software PVM hypervisor QEMU cannot use), not hardware KVM"),
    (dict(kvm="file", modules=("kvm", "kvm_intel", "kvm_pvm"), flags="hypervisor"),
     "/dev/kvm is kvm_pvm (a software PVM hypervisor QEMU cannot use), not hardware KVM"),
    (dict(kvm="file", modules=("kvm",)),
     "/dev/kvm opens, but neither kvm_intel (with vmx) nor kvm_amd (with svm) is behind it"),
    # Hardware KVM is believed only after its ioctls work (a plain file refuses them).
    (dict(kvm="file", modules=("kvm", "kvm_intel", "kvm_pvm"), flags="vmx"),
     "/dev/kvm (kvm_intel) refuses KVM ioctls: Inappropriate ioctl for device"),
    (dict(kvm="file", modules=("kvm", "kvm_amd", "kvm_pvm"), holders=("kvm_amd",)),
     "/dev/kvm (kvm_amd) refuses KVM ioctls: Inappropriate ioctl for device"),
    (dict(kvm="file", modules=("kvm", "kvm_intel", "kvm_pvm"), holders=("kvm_pvm",), flags="vmx"),
     "/dev/kvm is kvm_pvm (a software PVM hypervisor QEMU cannot use), not hardware KVM"),
])
def test_hardware_kvm_says_what_is_there(tmp_path, case, expect):
    hw, why = load_script().hardware_kvm(fake_tree(tmp_path, **case))
    assert not hw
    assert why == expect


def test_accelerator_line_on_this_host(tmp_path):
    """The reason coreio-qemu prints matches this machine's /dev/kvm."""
    mod = load_script()
    hw, why = mod.hardware_kvm()
    if not os.path.lexists("/dev/kvm"):
        assert not hw and why.startswith("no /dev/kvm at all"), why
    elif not os.access("/dev/kvm", os.R_OK | os.W_OK):
        assert not hw and "cannot be opened" in why, why
    elif hw:
        assert why.startswith("/dev/kvm is hardware KVM ("), why
    k = tmp_path / "k"
    k.write_bytes(b"x")
    p = run(["--kernel", str(k), "--initrd", str(k), "--dry-run", "--transport", "mpqemu",
             "--coreio-vm", build_path(VM_EXE), "--vmmio", "pci,size=4K,port=0"])
    assert p.returncode == 0, p.stderr
    assert "accelerator: %s (%s)" % ("kvm" if hw else "tcg", why) in p.stderr, p.stderr


def test_help_explains_everything():
    p = run(["--help"])
    assert p.returncode == 0
    for word in ("--kernel", "--initrd", "--vmmio", "--accel", "--run", "{G0}", "kvm_pvm",
                 "irqpoll nolapic_timer nohz=off", "x-pci-proxy-dev", "--console", "--timeout",
                 "memory-backend-memfd", "hotplug=on|off", "device_del", "SIGTERM",
                 "thread=single", "--transport", "vfio-user-pci", "mpqemu", "10.1",
                 "scripts/qemu-root.sh", "COREIO_QEMU_ROOT", "--verbose", "MSI-X"):
        assert word in p.stdout, word


def test_dry_run(tmp_path):
    k = tmp_path / "k"
    k.write_bytes(b"x")
    p = run(["--kernel", str(k), "--initrd", str(k), "--accel", "tcg", "--dry-run",
             "--transport", "mpqemu",
             "--coreio-vm", build_path(VM_EXE), "--vmmio", "pci,size=4K,port=0",
             "--vmmio", "pci,size=16K,pci=1044,profile=virtio,port=0"])
    assert p.returncode == 0, p.stderr
    vm_line, qemu_line = p.stdout.splitlines()
    assert len(re.findall(r"--mpqemu-fd \d+", vm_line)) == 2
    assert "--accel mpqemu" in vm_line
    assert len(re.findall(r"x-pci-proxy-dev,id=coreio\d,fd=\d+", qemu_line)) == 2
    assert "share=on" in qemu_line and "irqpoll nolapic_timer nohz=off" in qemu_line
    assert "accelerator: tcg" in p.stderr
    assert "transport: mpqemu (--transport mpqemu)" in p.stderr
    # TCG with one thread: the proxy drops QEMU's lock while it waits (docs/qemu-proxy.md).
    assert "-accel tcg,thread=single" in qemu_line and "accel=" not in qemu_line
    # Hot-pluggable by default: each device behind its own root port, coreio-vm told so.
    assert len(re.findall(r"x-pci-proxy-dev,id=coreio\d,fd=\d+,bus=coreio-rp\d", qemu_line)) == 2
    assert len(re.findall(r"pcie-root-port,id=coreio-rp\d", qemu_line)) == 2
    assert vm_line.count("hotplug=on") == 2 and "--mpqemu-control" in vm_line
    assert "-chardev" not in qemu_line  # the QMP monitor exists only while coreio-qemu runs
    off = run(["--kernel", str(k), "--initrd", str(k), "--accel", "tcg", "--dry-run",
               "--transport", "mpqemu", "--coreio-vm", build_path(VM_EXE), "--vmmio", "pci,size=4K,hotplug=off,port=0"])
    assert off.returncode == 0, off.stderr
    vm_line, qemu_line = off.stdout.splitlines()
    assert "pcie-root-port" not in qemu_line and re.search(r"x-pci-proxy-dev,id=coreio0,fd=\d+( |$)",
                                                            qemu_line)
    assert "--mpqemu-control" not in vm_line and "hotplug=off" in vm_line
    bad = run(["--kernel", str(k), "--initrd", str(k), "--vmmio", "pci,size=4K,hotplug=1,port=0"])
    assert bad.returncode == 2 and "hotplug= must be given once, on or off" in bad.stderr
    bad = run(["--kernel", str(k), "--initrd", str(k), "--vmmio", "0xd0000000,size=4K,port=0"])
    assert bad.returncode == 2 and "START must be 'pci'" in bad.stderr


@pytest.mark.parametrize("transport", ["mpqemu", "vfio-user"])
def test_linux_sees_the_device(tmp_path, transport):
    kernel = guest_kernel()
    if not shutil.which(QEMU):
        pytest.skip("%s is not installed (apt-get install qemu-system-x86)" % QEMU)
    if transport == "vfio-user":
        why = vfio_user_unavailable()
        if why:
            pytest.skip("vfio-user transport unavailable: %s" % why)
    if not kernel:
        pytest.skip("no readable /boot/vmlinuz-* and no guest image (apt-get install "
                    "linux-image-amd64, or scripts/build-guest-image.sh build/guest-image)")
    if not os.access(BUSYBOX, os.X_OK):
        pytest.skip("%s is missing (apt-get install busybox-static)" % BUSYBOX)
    with open(BUSYBOX, "rb") as f:
        bb = f.read()
    initrd = tmp_path / "initrd.cpio"
    initrd.write_bytes(newc([
        ("bin", stat.S_IFDIR | 0o755, b""), ("proc", stat.S_IFDIR | 0o755, b""),
        ("sys", stat.S_IFDIR | 0o755, b""), ("dev", stat.S_IFDIR | 0o755, b""),
        ("bin/busybox", stat.S_IFREG | 0o755, bb), ("init", stat.S_IFREG | 0o755, INIT.encode()),
    ]))
    log = tmp_path / "client.log"
    client = "(echo 'register 0'; echo 'log on'; sleep 600) | %s {G0} > %s" % (
        build_path(TESTCLIENT), log)
    p = run(["--kernel", kernel, "--initrd", str(initrd), "--append", "quiet",
             "--coreio-vm", build_path(VM_EXE), "--timeout", "150", "--mem", "256M",
             "--transport", transport,
             "--vmmio", "pci,size=4K,pci=1234:5678,class=0x058000,port=0", "--run", client],
            timeout=200)
    assert p.returncode == 0, "exit %d; stderr:\n%s\nconsole:\n%s" % (p.returncode, p.stderr,
                                                                      p.stdout[-3000:])
    assert "PCI 0x1234:0x5678 class 0x058000" in p.stdout, p.stdout[-3000:]
    m = re.search(r"BAR0 0x([0-9a-f]+)", p.stdout)
    assert m, p.stdout[-3000:]
    base = int(m.group(1), 16)
    assert "READ 0xCAFEF00D" in p.stdout, p.stdout[-3000:]
    # The client saw the guest's accesses with the BAR's guest-physical address.
    events = log.read_text()
    assert "EV write 0 %#x 4 0df0feca" % (base + 0x20) in events, events
    assert "EV read 0 %#x 4 0df0feca" % (base + 0x20) in events, events
    assert "transport: %s" % transport in p.stderr
    if transport == "mpqemu":
        assert "mpqemu device 0: memory decoding on, BAR 0 at %#x" % base in p.stderr


# A stand-in for QEMU: answers QMP on coreio-qemu's socketpair, starts a grandchild in its
# process group, records its pids, then sleeps.
FAKE_QEMU = r"""#!/usr/bin/python3
import json, os, re, socket, subprocess, sys, time
out = os.environ["FAKE_QEMU_PIDS"]
kid = subprocess.Popen(["sleep", "600"])
with open(out + ".tmp", "w") as f:
    f.write("%d %d\n" % (os.getpid(), kid.pid))
os.rename(out + ".tmp", out)
fd = None
for a in sys.argv:
    m = re.match(r"socket,id=coreio-qmp,fd=(\d+)$", a)
    if m:
        fd = int(m.group(1))
if fd is None:
    time.sleep(600)
    sys.exit(0)
s = socket.socket(fileno=fd)
s.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\r\n')
for line in s.makefile("rb"):
    msg = json.loads(line)
    s.sendall(json.dumps({"return": {}, "id": msg.get("id")}).encode() + b"\r\n")
time.sleep(600)
"""


def start_with_fake_qemu(tmp_path, run_cmd):
    """coreio-qemu with the fake QEMU and one --run command; returns (proc, every pid below it)."""
    k = tmp_path / "k"
    k.write_bytes(b"x")
    fake = tmp_path / "fake-qemu"
    fake.write_text(FAKE_QEMU)
    fake.chmod(0o755)
    pids = tmp_path / "qemu.pids"
    env = dict(os.environ, FAKE_QEMU_PIDS=str(pids))
    p = subprocess.Popen([sys.executable, SCRIPT, "--kernel", str(k), "--initrd", str(k),
                          "--accel", "tcg", "--qemu", str(fake), "--transport", "mpqemu",
                          "--coreio-vm", build_path(VM_EXE),
                          "--vmmio", "pci,size=4K,port=0", "--run", run_cmd],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 20
        while not pids.exists():
            assert p.poll() is None and time.monotonic() < deadline, \
                "the fake QEMU did not start: %s" % (
                    p.stderr.read() if p.poll() is not None else "timeout")
            time.sleep(0.1)
        qemu_pid, grandchild = map(int, pids.read_text().split())
        time.sleep(0.5)  # QMP negotiated, the --run command running
        below = set(descendants(p.pid)) | {grandchild}
        assert qemu_pid in below and len(below) >= 4, below
    except BaseException:
        p.terminate()  # coreio-qemu ends what it started
        p.wait(20)
        raise
    return p, sorted(below)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_ends_every_child(tmp_path, sig):
    """SIGTERM, SIGHUP or SIGINT: coreio-qemu ends QEMU, coreio-vm and the --run commands, with whatever they started."""
    p, below = start_with_fake_qemu(tmp_path, "sleep 600 & exec sleep 601")
    try:
        p.send_signal(sig)
        assert p.wait(20) == 128 + sig
        err = p.stderr.read()
        assert "%s; ending QEMU, coreio-vm and the device models" % sig.name in err, err
        left = wait_gone(below)
        assert not left, "left behind: %s" % left
    finally:
        for pid in below:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        if p.poll() is None:
            p.kill()
            p.wait()


def test_sigkill_takes_the_children_along(tmp_path):
    """Even SIGKILL of coreio-qemu ends its children (PR_SET_PDEATHSIG): QEMU, coreio-vm, the --run command."""
    p, below = start_with_fake_qemu(tmp_path, "exec sleep 602")
    kids = [pid for pid in below if pid in descendants(p.pid) and
            os.getpgid(pid) == pid]  # the children: each leads its own session
    try:
        assert len(kids) == 3, kids
        p.kill()
        p.wait(10)
        left = wait_gone(kids)
        assert not left, "left behind: %s" % left
    finally:
        for pid in below:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_auto_falls_back_to_mpqemu_when_vfio_user_does_not_start(tmp_path):
    """auto: a coreio-vm whose vfio-user server ends at once leaves coreio-qemu on mpqemu."""
    k = tmp_path / "k"
    k.write_bytes(b"x")
    vm = tmp_path / "vm"
    vm.write_text("#!/bin/sh\n"
                  "case \"$*\" in *'--accel vfio-user'*) echo 'listening on 127.0.0.1:1' >&2;"
                  " exit 3;; --help) echo '--accel mpqemu|vfio-user';; esac\n"
                  "exec %s \"$@\"\n" % build_path(VM_EXE))
    vm.chmod(0o755)
    # A QEMU that claims 11.1 with vfio-user-pci, and otherwise is the fake QEMU above.
    fake = tmp_path / "fake-qemu"
    fake.write_text(FAKE_QEMU.replace(
        "import json, os, re, socket, subprocess, sys, time\n",
        "import json, os, re, socket, subprocess, sys, time\n"
        "if sys.argv[1:] == ['--version']:\n"
        "    print('QEMU emulator version 11.1.3 (fake)'); sys.exit(0)\n"
        "if 'vfio-user-pci,help' in sys.argv:\n"
        "    print('  socket=<SocketAddress>'); sys.exit(0)\n"))
    fake.chmod(0o755)
    pids = tmp_path / "qemu.pids"
    p = subprocess.Popen([sys.executable, SCRIPT, "--kernel", str(k), "--initrd", str(k),
                          "--accel", "tcg", "--qemu", str(fake), "--coreio-vm", str(vm),
                          "--vmmio", "pci,size=4K,port=0"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, FAKE_QEMU_PIDS=str(pids)))
    try:
        deadline = time.monotonic() + 20
        while not pids.exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pids.exists(), "QEMU did not start on mpqemu"
        time.sleep(0.5)
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 128 + signal.SIGTERM
        err = p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert "transport: vfio-user (QEMU 11.1.3 from %s)" % fake in err, err
    assert "coreio-vm --accel vfio-user did not start: it exited with status 3" in err, err
    assert "transport: mpqemu after all" in err, err
    assert "mpqemu device 0: serving" in err, err
    qemu_pid, grandchild = map(int, pids.read_text().split())
    assert not wait_gone([qemu_pid, grandchild])
