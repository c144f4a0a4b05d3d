"""scripts/coreio-qemu: Linux in QEMU sees a CoreIO client as a PCI device (busybox initramfs)."""

import glob
import os
import re
import shutil
import stat
import subprocess
import sys

import pytest

from conftest import TESTCLIENT, VM_EXE, build_path

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
                 "memory-backend-memfd"):
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
