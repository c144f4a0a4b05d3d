"""coreio-vm --accel mpqemu driven by a Python stand-in for QEMU's x-pci-proxy-dev."""

import mmap
import os
import re
import select
import signal
import socket
import struct
import subprocess
import threading

import pytest

from conftest import VM_EXE, build_path, fnv64, seed_pattern
from mpqemu_driver import (BAR, BAR_READ, CONF, DEVICE_RESET, PCI_CFGREAD, RET, SET_IRQFD,
                           SYNC_SYSMEM, Device, MpqemuVM, eventfd_wait, start_vm)

VIRTIO = "pci,size=16K,pci=1044,profile=virtio,port=0"
PLAIN = "pci,size=4K,pci=1234:5678,class=0x058000,subsys=abcd:ef01,rev=7,port=0"
BASE = 0xFE000000


def counters(vm, g):
    """The exit counters coreio-vm prints for device g (after it ended)."""
    m = vm.wait_stderr(r"mpqemu device %d: (cfg_reads=.*)" % g)[0]
    return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


def test_identity_and_header(env):
    vm = start_vm(env, PLAIN)
    d = vm.devs[0]
    assert d.cfg_read(0x00) == 0x56781234
    assert d.cfg_read(0x00, 2) == 0x1234
    assert d.cfg_read(0x02, 2) == 0x5678
    assert d.cfg_read(0x08) == 0x05800007  # class 0x058000, revision 7
    assert d.cfg_read(0x0E, 1) == 0  # header type 0
    assert d.cfg_read(0x2C) == 0xEF01ABCD
    assert d.cfg_read(0x3D, 1) == 1  # interrupt pin A
    assert d.cfg_read(0x06, 2) & 0x10 == 0  # no capability list without a profile
    d.cfg_write(0x3C, 11, 1)
    assert d.cfg_read(0x3C, 1) == 11
    d.cfg_write(0x00, 0xFFFFFFFF)  # identity is read-only
    assert d.cfg_read(0x00) == 0x56781234
    # Outside the 256 bytes: all ones, and the device stays up.
    assert d.cfg_read(0xFE, 4) == 0xFFFFFFFF
    assert d.cfg_read(0x00) == 0x56781234


def test_virtio_identity_and_caps(env):
    vm = start_vm(env, VIRTIO)
    d = vm.devs[0]
    assert d.cfg_read(0x00) == 0x10441AF4
    assert d.cfg_read(0x08) >> 8 == 0x00FF00 and d.cfg_read(0x08, 1) == 1
    assert d.cfg_read(0x2C, 2) == 0x1AF4
    assert d.cfg_read(0x06, 2) & 0x10
    caps = {}
    ptr = d.cfg_read(0x34, 1)
    while ptr:
        assert len(caps) < 8, "capability list loops"
        vndr, nxt, length, ctype = struct.pack("<I", d.cfg_read(ptr))
        assert vndr == 0x09
        bar = d.cfg_read(ptr + 4, 1)
        off, ln = d.cfg_read(ptr + 8), d.cfg_read(ptr + 12)
        extra = d.cfg_read(ptr + 16) if length >= 20 else None
        caps[ctype] = (bar, off, ln, length, extra)
        ptr = nxt
    # virtio 1.x cfg_type: common 1, notify 2, ISR 3, device 4, PCI cfg access 5.
    assert caps[1][:4] == (0, 0x0000, 0x38, 16)
    assert caps[2] == (0, 0x2000, 0x1000, 20, 4)
    assert caps[3][:4] == (0, 0x1000, 1, 16)
    assert caps[4][:4] == (0, 0x3000, 0x1000, 16)
    assert caps[5][3] == 20
    assert sorted(caps) == [1, 2, 3, 4, 5]


def test_bar_sizing(env):
    vm = start_vm(env, VIRTIO, PLAIN)
    for d, size in ((vm.devs[0], 0x4000), (vm.devs[1], 0x1000)):
        assert d.cfg_read(0x10) == 0
        d.cfg_write(0x10, 0xFFFFFFFF)
        assert d.cfg_read(0x10) == (~(size - 1)) & 0xFFFFFFF0
        # BARs 1..5, the CardBus pointer and the ROM BAR are absent: they read 0.
        for off in (0x14, 0x18, 0x1C, 0x20, 0x24, 0x28, 0x30):
            d.cfg_write(off, 0xFFFFFFFF)
            assert d.cfg_read(off) == 0, hex(off)
        d.cfg_write(0x10, 0xFE012345)
        assert d.cfg_read(0x10) == 0xFE012345 & ~(size - 1) & 0xFFFFFFF0


def test_bar_access_reaches_client(env):
    vm = start_vm(env, PLAIN)
    d = vm.devs[0]
    c = env.client(vm.target(0))
    c.ok("register 0")
    c.ok("log on")
    vm.wait_stderr(r"claimed range 0")
    d.program_bar(BASE)
    assert d.bar_write(BASE + 0x10, 0x1122334455667788, 8) == 0
    c.wait_event(r"write 0 0x%x 8 8877665544332211" % (BASE + 0x10))
    assert d.bar_read(BASE + 0x10, 8) == 0x1122334455667788
    c.wait_event(r"read 0 0x%x 8" % (BASE + 0x10))
    assert d.bar_read(BASE + 0x12, 2) == 0x5566
    assert d.bar_read(BASE + 0x17, 1) == 0x11
    # The guest moves the BAR: the client sees the new guest-physical address.
    d.cfg_write(0x10, 0xD0000000)
    assert d.bar_read(0xD0000010, 4) == 0x55667788
    c.wait_event(r"read 0 0xd0000010 4")
    # The old place is no longer the device: all ones, counted.
    assert d.bar_read(BASE + 0x10, 4) == 0xFFFFFFFF
    # Past the end of BAR 0, and straddling its end: all ones, dropped, counted.
    assert d.bar_read(0xD0001000, 4) == 0xFFFFFFFF
    assert d.bar_read(0xD0000FFE, 4) == 0xFFFFFFFF
    d.bar_write(0xD0001000, 0xAB, 1)
    # A client error is a bus error: all ones.
    c.ok("fail 0 0x20")
    assert d.bar_read(0xD0000020, 4) == 0xFFFFFFFF
    assert d.bar_write(0xD0000020, 1, 4) == 0  # posted write: answered at once
    vm.stop()
    n = counters(vm, 0)
    assert n["outside_bar"] == 4 and n["bus_errors"] >= 1, n
    assert n["bar_reads"] == 8 and n["bar_writes"] == 3, n


def test_no_client_reads_aa(env):
    vm = start_vm(env, PLAIN)
    d = vm.devs[0]
    d.program_bar(BASE)
    assert d.bar_read(BASE, 4) == 0xAAAAAAAA
    assert d.bar_read(BASE + 8, 8) == 0xAAAAAAAAAAAAAAAA
    assert d.bar_write(BASE, 5, 4) == 0


def test_acked_write_error(env):
    vm = start_vm(env, PLAIN + ",writes=acked")
    d = vm.devs[0]
    c = env.client(vm.target(0))
    c.ok("register 0")
    vm.wait_stderr(r"claimed range 0")
    d.program_bar(BASE)
    assert d.bar_write(BASE + 4, 0x77, 1) == 0
    c.ok("fail 0 4")
    assert d.bar_write(BASE + 4, 0x77, 1) == 0xFFFFFFFFFFFFFFFF


def test_virtio_cfg_access_window(env):
    vm = start_vm(env, VIRTIO)
    d = vm.devs[0]
    c = env.client(vm.target(0))
    c.ok("register 0")
    c.ok("log on")
    vm.wait_stderr(r"claimed range 0")
    d.program_bar(BASE)
    c.ok("poke 0 0x3004 efbeadde")
    cap = 0x84  # the PCI cfg access capability (the fifth)
    assert struct.pack("<I", d.cfg_read(cap))[3] == 5
    d.cfg_write(cap + 4, 0, 1)  # bar 0
    d.cfg_write(cap + 8, 0x3004)  # offset
    d.cfg_write(cap + 12, 4)  # length
    assert d.cfg_read(cap + 16) == 0xDEADBEEF
    c.wait_event(r"read 0 0x%x 4" % (BASE + 0x3004))
    d.cfg_write(cap + 16, 0x01020304)
    c.wait_event(r"write 0 0x%x 4 04030201" % (BASE + 0x3004))


def make_memfd(size):
    fd = os.memfd_create("guest-ram")
    os.ftruncate(fd, size)
    return fd


def test_sync_sysmem_and_dma(env):
    vm = start_vm(env, PLAIN)
    d = vm.devs[0]
    c = env.client(vm.target(0))
    c.ok("register 0")
    ram = make_memfd(2 << 20)
    try:
        # Two regions of one file: gpa 0x100000 <- file offset 0 (1 MiB),
        # gpa 0x40000000 <- file offset 1 MiB (1 MiB).
        d.sync_sysmem([(0x100000, 1 << 20, 0), (0x40000000, 1 << 20, 1 << 20)], [ram, ram])
        m = mmap.mmap(ram, 2 << 20)
        pat = seed_pattern(9, 3000)
        # Once the map is in, DMA lands in the file at the right offsets.
        fnv = c.ok("dma_write 0 0 0x100010 3000 9")
        assert int(fnv.split("=")[1].split()[0], 16) == fnv64(pat)
        assert m[0x10:0x10 + 3000] == pat
        m[(1 << 20) + 0x200:(1 << 20) + 0x210] = bytes(range(16))
        got = c.ok("dma_read 0 0 0x40000200 16")
        assert "data=" + bytes(range(16)).hex() in got
        # Outside every region, and across a region's end: errors, nothing written.
        assert c.err("dma_write 0 0 0x300000 16 1") < 0
        assert c.err("dma_read 0 0 0x1ffff8 16") < 0
        assert c.err("dma_read 0 0 0x0 4") < 0
        # A new map replaces the old one.
        d.sync_sysmem([(0x0, 1 << 20, 1 << 20)], [ram])
        d.cfg_read(0)  # a round trip: the map is in
        assert c.err("dma_read 0 0 0x100010 4") < 0
        got = c.ok("dma_read 0 0 0x200 16")
        assert "data=" + bytes(range(16)).hex() in got
        m.close()
    finally:
        os.close(ram)


def test_sync_sysmem_rejects_bad_regions(env):
    vm = start_vm(env, PLAIN, PLAIN, PLAIN)
    ram = make_memfd(1 << 20)
    try:
        vm.devs[0].sync_sysmem([(0x100000, 2 << 20, 0)], [ram])  # past the file's end
        vm.devs[1].sync_sysmem([(0x0, 0x1000, 0), (0x800, 0x1000, 0)], [ram, ram])  # overlap
        vm.devs[2].sync_sysmem([(0x0, 0x1000, 0)], [0])  # stdin: not a memory file
        for dev in vm.devs:
            assert dev.closed(), "coreio-vm kept a device with a bad SYNC_SYSMEM"
        vm.wait_stderr(r"device 0: malformed message: SYNC_SYSMEM .*passes the file's end")
        vm.wait_stderr(r"device 1: malformed message: SYNC_SYSMEM regions 0 and 1 overlap")
        vm.wait_stderr(r"device 2: malformed message: SYNC_SYSMEM .*not a memory file")
    finally:
        os.close(ram)


def test_intx_eventfd(env):
    vm = start_vm(env, PLAIN)
    d = vm.devs[0]
    c = env.client(vm.target(0))
    c.ok("register 0")
    vm.wait_stderr(r"claimed range 0")
    intr = os.eventfd(0, os.EFD_NONBLOCK)
    resample = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        d.set_irqfd(intr, resample)
        d.cfg_read(0)  # a round trip: SET_IRQFD is in
        assert eventfd_wait(intr, 0.2) == 0
        c.ok("irq 0 0 1")
        assert eventfd_wait(intr) == 1
        assert d.cfg_read(0x06, 2) & 0x08  # status: interrupt pending
        # The guest acknowledged while the line is still high: it fires again.
        os.write(resample, struct.pack("<Q", 1))
        assert eventfd_wait(intr) == 1
        # INTx disabled in the command register: no signal until enabled again.
        d.cfg_write(0x04, 0x0400, 2)
        os.write(resample, struct.pack("<Q", 1))
        assert eventfd_wait(intr, 0.3) == 0
        d.cfg_write(0x04, 0x0000, 2)
        assert eventfd_wait(intr) == 1
        c.ok("irq 0 0 0")
        assert d.cfg_read(0x06, 2) & 0x08 == 0
        os.write(resample, struct.pack("<Q", 1))
        assert eventfd_wait(intr, 0.3) == 0
    finally:
        os.close(intr)
        os.close(resample)


def test_device_reset(env):
    vm = start_vm(env, PLAIN)
    d = vm.devs[0]
    c = env.client(vm.target(0))
    c.ok("register 0")
    vm.wait_stderr(r"claimed range 0")
    d.program_bar(BASE)
    d.cfg_write(0x3C, 10, 1)
    assert d.reset() == 0
    c.wait_event(r"^reset")
    assert d.cfg_read(0x10) == 0
    assert d.cfg_read(0x04, 2) == 0
    assert d.cfg_read(0x3C, 1) == 0
    assert d.cfg_read(0x00) == 0x56781234


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def test_malformed_messages(env):
    n = 7
    vm = start_vm(env, *([PLAIN] * n))
    good = vm.devs[0]
    good.program_bar(BASE)
    fds_before = fd_count(vm.p.pid)
    evr, evw = os.pipe()
    try:
        bad = vm.devs[1:]
        bad[0].send(99)  # unknown command
        bad[1].send(PCI_CFGREAD, CONF.pack(0, 0, 4) + b"\0" * 4)  # wrong size for the command
        bad[2].send(BAR_READ, BAR.pack(BASE, 0, 4, 1), fds=[evr, evw])  # fds it must not carry
        bad[3].send(SYNC_SYSMEM, b"", size=4096)  # size larger than the data union
        bad[4].send(RET, struct.pack("<Q", 0))  # only the remote answers RET
        bad[5].send(SET_IRQFD, b"", fds=[evr])  # SET_IRQFD with one fd
        for i, dev in enumerate(bad):
            assert dev.closed(), "device %d was not closed" % (i + 1)
        for why in ("unknown command 99", "PCI_CFGREAD with 16 data bytes",
                    "BAR_READ with 2 fd", "SYNC_SYSMEM with size 4096", "command 1 \\(RET\\)",
                    "SET_IRQFD with 1 fd"):
            vm.wait_stderr(r"malformed message: " + why)
        # coreio-vm is alive, serves the good device, and closed the fds it got.
        assert vm.alive()
        assert good.bar_read(BASE, 4) == 0xAAAAAAAA
        assert fd_count(vm.p.pid) <= fds_before - len(bad)
    finally:
        os.close(evr)
        os.close(evw)


def test_request_while_one_is_outstanding(env):
    vm = start_vm(env, PLAIN, PLAIN)
    d = vm.devs[1]
    c = env.client(vm.target(1))
    c.ok("register 0")
    c.ok("stall 0 0x40")
    vm.wait_stderr(r"claimed range 1")
    d.program_bar(BASE)
    d.send(BAR_READ, BAR.pack(BASE + 0x40, 0, 4, 1))
    c.wait_event(r"^stall")
    d.send(DEVICE_RESET)  # the proxy never does this: one request at a time
    assert d.closed()
    vm.wait_stderr(r"malformed message: DEVICE_RESET while a request is still unanswered")
    assert vm.devs[0].cfg_read(0) == 0x56781234


def test_exits_when_every_socket_closes(env):
    vm = start_vm(env, PLAIN, VIRTIO)
    for d in vm.devs:
        d.s.close()
    assert vm.wait_exit(10) == 0
    vm.wait_stderr(r"every mpqemu device socket is closed")


def test_sigterm(env):
    vm = start_vm(env, PLAIN)
    vm.p.send_signal(signal.SIGTERM)
    assert vm.wait_exit(10) == 128 + signal.SIGTERM


@pytest.mark.parametrize("args,msg", [
    (["--vmmio", PLAIN], r"0 --mpqemu-fd for 1 --vmmio"),
    (["--vmmio", "pci,size=16K,profile=virtio,port=0", "--mpqemu-fd", "0"], r"needs pci="),
    (["--vmmio", "pci,size=12K,port=0", "--mpqemu-fd", "0"], r"power of two"),
    (["--vmmio", "pci,size=4K,port=0,irq=5", "--mpqemu-fd", "0"], r"irq= is not used"),
    (["--vmmio", "pci,size=4K,port=0,profile=virtio,pci=1044", "--mpqemu-fd", "0"],
     r"needs size=16K"),
    (["--vmmio", "0xd0000000,size=4K,port=0", "--mpqemu-fd", "0"], r"START must be 'pci'"),
    (["--vmmio", "pci,size=4K,pci=xyz,port=0", "--mpqemu-fd", "0"], r"pci='xyz'"),
    (["--vmmio", "pci,size=4K,port=0", "--mpqemu-fd", "0", "--mem", "64M"], r"--mem does not"),
    (["--vmmio", "pci,size=4K,port=0", "--mpqemu-fd", "0", "--mpqemu-fd", "0"], r"given twice"),
])
def test_command_line_errors(args, msg):
    assert_command_line_error(args, msg)


def assert_command_line_error(args, msg):
    """coreio-vm --accel mpqemu ARGS exits 2 with a message matching msg."""
    p = subprocess.run([build_path(VM_EXE), "--accel", "mpqemu"] + args, capture_output=True,
                       text=True, timeout=10)
    assert p.returncode == 2, p.stderr
    assert re.search(msg, p.stderr), p.stderr


def test_pci_range_needs_mpqemu():
    p = subprocess.run([build_path(VM_EXE), "--accel", "qtest", "--vmmio", "pci,size=4K,port=0"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "needs --accel mpqemu" in p.stderr, p.stderr


def test_fd_not_a_socket():
    p = subprocess.run([build_path(VM_EXE), "--accel", "mpqemu", "--vmmio", PLAIN,
                        "--mpqemu-fd", "0"], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=10)
    assert p.returncode == 1 and "is not an open stream socket" in p.stderr, p.stderr


# Hot-plug (--mpqemu-control, hotplug=on): docs/qemu-proxy.md, "Hot-plug".
PLAIN_HP = PLAIN + ",hotplug=on"


class HotplugVM(MpqemuVM):
    """MpqemuVM with --mpqemu-control: ctl is the orchestrator's end (SOCK_SEQPACKET)."""

    def __init__(self, vmmio, extra=()):
        self.ctl, ctl_vm = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        super().__init__(vmmio, extra=extra, pass_socks=[("--mpqemu-control", ctl_vm)])
        self.seen = []

    def ctl_expect(self, text, timeout=5):
        """Read control messages until one equals text (the others are kept in seen)."""
        while True:
            if not select.select([self.ctl], [], [], timeout)[0]:
                raise AssertionError("no control message %r within %ss; got %r; stderr:\n%s"
                                     % (text, timeout, self.seen, self.stderr_tail()))
            msg = self.ctl.recv(256).decode()
            assert msg, "coreio-vm closed the control socket"
            self.seen.append(msg)
            if msg == text:
                return

    def send_device(self, g, fds=None, msg=None):
        """Send "device G" with a new socketpair end (or fds); returns the proxy's Device."""
        qend = None
        if fds is None:
            qend, vend = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            fds = [vend.fileno()]
        data = (msg if msg is not None else "device %d" % g).encode()
        if fds:
            socket.send_fds(self.ctl, [data], fds)
        else:
            self.ctl.send(data)
        if qend is not None:
            vend.close()
            return Device(qend)
        return None

    def stop(self):
        self.ctl.close()
        super().stop()


def start_hotplug_vm(env, *vmmio):
    vm = HotplugVM(list(vmmio))
    env.procs.append(vm)
    return vm


def test_hotplug_dead_instance_then_fresh_device(env):
    vm = start_hotplug_vm(env, PLAIN_HP)
    d = vm.devs[0]
    c = env.client(vm.target(0))
    c.ok("register 0")
    vm.ctl_expect("claimed 0")
    d.program_bar(BASE)
    d.cfg_write(0x3C, 11, 1)
    assert d.bar_write(BASE + 0x20, 0x12345678) == 0
    assert d.bar_read(BASE + 0x20) == 0x12345678
    # The model dies: the instance is dead, the orchestrator is told.
    c.kill()
    vm.ctl_expect("released 0")
    vm.ctl_expect("dead 0")
    vm.wait_stderr(r"mpqemu device 0: its client went away: instance 1 is dead")
    # A dead instance reads 0 (not 0xAA: a virtio driver's reset loop must end) and drops writes.
    assert d.bar_read(BASE + 0x20) == 0
    assert d.bar_read(BASE + 0x1000, 1) == 0
    assert d.bar_write(BASE + 0x20, 1) == 0
    assert d.reset() == 0
    assert d.cfg_read(0x00) == 0x56781234  # configuration space still answers
    # Nobody holds the range: a new socket is refused (and closed).
    nd = vm.send_device(0)
    vm.ctl_expect("refused 0 no client holds the range")
    assert nd.closed()
    # A new model claims; the dead instance still never reaches it.
    c2 = env.client(vm.target(0))
    c2.ok("register 0")
    c2.ok("log on")
    vm.ctl_expect("claimed 0")
    d.program_bar(BASE)
    assert d.bar_read(BASE + 0x20) == 0
    assert d.reset() == 0
    assert c2.take_events() == []
    # The orchestrator plugs a fresh device: coreio-vm serves it, the old socket closes.
    nd = vm.send_device(0)
    vm.ctl_expect("serving 0")
    vm.wait_stderr(r"mpqemu device 0: serving instance 2 on fd \d+ \(hot-plugged\)")
    assert d.closed()
    assert nd.cfg_read(0x00) == 0x56781234
    assert nd.cfg_read(0x10) == 0 and nd.cfg_read(0x3C, 1) == 0  # a device fresh from reset
    assert nd.reset() == 0
    c2.wait_event(r"^reset")
    nd.program_bar(0xD0000000)
    assert nd.bar_write(0xD0000040, 0xCAFE, 4) == 0
    c2.wait_event(r"write 0 0xd0000040 4 feca0000")
    assert nd.bar_read(0xD0000040) == 0xCAFE
    assert vm.alive()
    vm.stop()
    n = counters(vm, 0)
    assert n["instances"] == 2 and n["dead_accesses"] >= 4, n


def test_hotplug_read_in_flight_when_model_dies(env):
    vm = start_hotplug_vm(env, PLAIN_HP)
    d = vm.devs[0]
    c = env.client(vm.target(0))
    c.ok("register 0")
    c.ok("stall 0 0x40")
    vm.ctl_expect("claimed 0")
    d.program_bar(BASE)
    d.send(BAR_READ, BAR.pack(BASE + 0x40, 0, 4, 1))
    c.wait_event(r"^stall")
    c.kill()
    # The waiting read completes with 0, the dead instance's value, not 0xAA.
    assert d.recv_ret() == 0
    vm.ctl_expect("dead 0")


def test_hotplug_refusals(env):
    vm = start_hotplug_vm(env, PLAIN_HP, PLAIN)
    c = env.client(vm.target(0))
    c.ok("register 0")
    vm.ctl_expect("claimed 0")
    before = fd_count(vm.p.pid)
    vm.send_device(0)
    vm.ctl_expect("refused 0 its device is alive")
    vm.send_device(1)
    vm.ctl_expect("refused 1 not hotplug=on")
    vm.send_device(7)
    vm.ctl_expect("refused 7 no such device")
    vm.send_device(0, fds=[])
    vm.ctl_expect("refused 0 needs exactly one fd")
    r, w = os.pipe()
    try:
        vm.send_device(0, fds=[r, w])
        vm.ctl_expect("refused 0 needs exactly one fd")
        c.kill()
        vm.ctl_expect("dead 0")
        c2 = env.client(vm.target(0))
        c2.ok("register 0")
        vm.ctl_expect("claimed 0")
        vm.send_device(0, fds=[r])
        vm.ctl_expect("refused 0 the fd is not a stream socket")
    finally:
        os.close(r)
        os.close(w)
    for bad in ("device", "device 1x", "device -1", "device 99999", "hello"):
        vm.send_device(0, fds=[], msg=bad)
        vm.ctl_expect("refused ? unknown message")
    vm.devs[0].cfg_read(0)  # a round trip: everything above is done
    assert fd_count(vm.p.pid) <= before + 4  # the refused fds were closed (+ the new client)
    assert vm.devs[1].cfg_read(0) == 0x56781234


def test_control_socket_decides_when_coreio_vm_ends(env):
    vm = start_hotplug_vm(env, PLAIN_HP, VIRTIO)
    for d in vm.devs:
        d.s.close()
    vm.wait_stderr(r"mpqemu device 1: the proxy closed the socket")
    assert vm.alive(), "with --mpqemu-control, closed device sockets do not end coreio-vm"
    vm.ctl.close()
    assert vm.wait_exit(10) == 0
    vm.wait_stderr(r"the control socket closed \(the orchestrator ended\); exiting")


@pytest.mark.parametrize("args,msg", [
    (["--vmmio", PLAIN_HP, "--mpqemu-fd", "0"], r"hotplug=on needs --mpqemu-control"),
    (["--vmmio", PLAIN + ",hotplug=yes", "--mpqemu-fd", "0"], r"hotplug='yes' must be on or off"),
    (["--vmmio", PLAIN, "--mpqemu-fd", "0", "--mpqemu-control", "0"], r"is also a --mpqemu-fd"),
    (["--vmmio", PLAIN, "--mpqemu-fd", "0", "--mpqemu-control", "x"], r"not a file descriptor"),
])
def test_hotplug_command_line_errors(args, msg):
    assert_command_line_error(args, msg)


def test_hotplug_needs_mpqemu_and_a_seqpacket_socket():
    p = subprocess.run([build_path(VM_EXE), "--accel", "qtest", "--mpqemu-control", "0"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "--mpqemu-control needs --accel mpqemu" in p.stderr, p.stderr
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        p = subprocess.run([build_path(VM_EXE), "--accel", "mpqemu", "--vmmio", PLAIN_HP,
                            "--mpqemu-fd", str(b.fileno()), "--mpqemu-control", "0"],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10,
                           pass_fds=[b.fileno()])
    finally:
        a.close()
        b.close()
    assert p.returncode == 1 and "is not an open SOCK_SEQPACKET socket" in p.stderr, p.stderr
