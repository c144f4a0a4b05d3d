"""scripts/coreio-qemu: Linux in QEMU sees a CoreIO client as a PCI device (busybox initramfs)."""

import glob
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
    for k in sorted(glob.glob("/boot/vmlinuz-*"), reverse=True):
        if os.access(k, os.R_OK):
            return k
    return None


def run(args, timeout=30):
    return subprocess.run([sys.executable, SCRIPT] + args, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def test_help_explains_everything():
    p = run(["--help"])
    assert p.returncode == 0
    for word in ("--kernel", "--initrd", "--vmmio", "--accel", "--run", "{G0}", "kvm_pvm",
                 "irqpoll nolapic_timer nohz=off", "x-pci-proxy-dev", "--console", "--timeout",
                 "memory-backend-memfd", "hotplug=on|off", "device_del", "SIGTERM",
                 "thread=single"):
        assert word in p.stdout, word


def test_dry_run(tmp_path):
    k = tmp_path / "k"
    k.write_bytes(b"x")
    p = run(["--kernel", str(k), "--initrd", str(k), "--accel", "tcg", "--dry-run",
             "--coreio-vm", build_path(VM_EXE), "--vmmio", "pci,size=4K,port=0",
             "--vmmio", "pci,size=16K,pci=1044,profile=virtio,port=0"])
    assert p.returncode == 0, p.stderr
    vm_line, qemu_line = p.stdout.splitlines()
    assert len(re.findall(r"--mpqemu-fd \d+", vm_line)) == 2
    assert "--accel mpqemu" in vm_line
    assert len(re.findall(r"x-pci-proxy-dev,id=coreio\d,fd=\d+", qemu_line)) == 2
    assert "share=on" in qemu_line and "irqpoll nolapic_timer nohz=off" in qemu_line
    assert "accelerator: tcg" in p.stderr
    # TCG with one thread: the proxy drops QEMU's lock while it waits (docs/qemu-proxy.md).
    assert "-accel tcg,thread=single" in qemu_line and "accel=" not in qemu_line
    # Hot-pluggable by default: each device behind its own root port, coreio-vm told so.
    assert len(re.findall(r"x-pci-proxy-dev,id=coreio\d,fd=\d+,bus=coreio-rp\d", qemu_line)) == 2
    assert len(re.findall(r"pcie-root-port,id=coreio-rp\d", qemu_line)) == 2
    assert vm_line.count("hotplug=on") == 2 and "--mpqemu-control" in vm_line
    assert "-chardev" not in qemu_line  # the QMP monitor exists only while coreio-qemu runs
    off = run(["--kernel", str(k), "--initrd", str(k), "--accel", "tcg", "--dry-run",
               "--coreio-vm", build_path(VM_EXE), "--vmmio", "pci,size=4K,hotplug=off,port=0"])
    assert off.returncode == 0, off.stderr
    vm_line, qemu_line = off.stdout.splitlines()
    assert "pcie-root-port" not in qemu_line and re.search(r"x-pci-proxy-dev,id=coreio0,fd=\d+( |$)",
                                                            qemu_line)
    assert "--mpqemu-control" not in vm_line and "hotplug=off" in vm_line
    bad = run(["--kernel", str(k), "--initrd", str(k), "--vmmio", "pci,size=4K,hotplug=1,port=0"])
    assert bad.returncode == 2 and "hotplug= must be given once, on or off" in bad.stderr
    bad = run(["--kernel", str(k), "--initrd", str(k), "--vmmio", "0xd0000000,size=4K,port=0"])
    assert bad.returncode == 2 and "START must be 'pci'" in bad.stderr


def test_linux_sees_the_device(tmp_path):
    kernel = guest_kernel()
    if not shutil.which(QEMU):
        pytest.skip("%s is not installed (apt-get install qemu-system-x86)" % QEMU)
    if not kernel:
        pytest.skip("no readable /boot/vmlinuz-* (apt-get install linux-image-amd64)")
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
                          "--accel", "tcg", "--qemu", str(fake), "--coreio-vm", build_path(VM_EXE),
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
