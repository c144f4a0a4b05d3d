"""coreio-vm --accel vfio-user driven by a Python vfio-user client (vfu_client.py) playing QEMU."""

import errno
import mmap
import os
import queue
import random
import select
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import VM_EXE, Proc, build_path, fnv64, seed_pattern
from vfu_client import (ACTION_MASK, ACTION_TRIGGER, ACTION_UNMASK, BAR0, BAR1, CONFIG,
                        DATA_BOOL, DATA_EVENTFD, DATA_NONE, DMA_READ, DMA_WRITE, GET_INFO, INTX,
                        MSI, MSIX, REGION_READ, REGION_WRITE, DEVICE_FEATURE, VfuClient, VfuError,
                        eventfd_wait)

PLAIN = "pci,size=4K,pci=1234:5678,class=0x058000,subsys=abcd:ef01,rev=7,port=0"
VIRTIO = "pci,size=16K,pci=1044,profile=virtio,port=0"
BASE = 0xFE000000
MSIX_CTRL_ENABLE = 0x8000
MSIX_CTRL_MASKALL = 0x4000


class VfuVM(Proc):
    """coreio-vm --accel vfio-user, one socket path per range under tmp; optional control socket."""

    def __init__(self, tmp, vmmio, control=False, extra=()):
        self.paths = [str(tmp / ("g%d.sock" % i)) for i in range(len(vmmio))]
        argv = [build_path(VM_EXE), "--accel", "vfio-user"]
        for p in self.paths:
            argv += ["--vfio-user-socket", p]
        for v in vmmio:
            argv += ["--vmmio", v]
        pass_fds = []
        self.ctl = None
        if control:
            self.ctl, ctl_vm = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            argv += ["--mpqemu-control", str(ctl_vm.fileno())]
            pass_fds.append(ctl_vm.fileno())
        argv += list(extra)
        self.name = "coreio-vm"
        self.argv = argv
        self.stderr_lines = []
        self.stdout_lines = []
        self.cond = threading.Condition()
        self.answers = queue.Queue()
        self.events = queue.Queue()
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, bufsize=1,
                                  pass_fds=pass_fds)
        if control:
            ctl_vm.close()
        self.t_err = threading.Thread(target=self._read_err, daemon=True)
        self.t_out = threading.Thread(target=self._read_out, daemon=True)
        self.t_err.start()
        self.t_out.start()
        self.listening = [m.group(1) for m in self.wait_stderr(r"listening on (\S+)",
                                                               count=len(vmmio))]
        self.wait_stderr(r"vfio-user device \d+: serving", count=len(vmmio))
        self.conns = []

    def target(self, g):
        return self.listening[g]

    def connect(self, g, handshake=True):
        c = VfuClient(self.paths[g])
        self.conns.append(c)
        if handshake:
            c.handshake()
        return c

    def ctl_expect(self, text, timeout=5):
        while True:
            assert select.select([self.ctl], [], [], timeout)[0], "no %r on the control socket" % text
            msg = self.ctl.recv(256).decode()
            if msg == text:
                return
            if msg.startswith(("claimed", "released")) and not text.startswith(msg.split()[0]):
                continue  # a claim report between the ones the test waits for
            assert msg == text, "control: got %r, expected %r" % (msg, text)

    def stop(self):
        for c in self.conns:
            c.close()
        super().stop()
        if self.ctl:
            self.ctl.close()


def start(env, *vmmio, control=False):
    vm = VfuVM(env.tmp_path, list(vmmio), control=control)
    env.procs.append(vm)
    return vm


def counters(vm, g):
    m = vm.wait_stderr(r"vfio-user device %d: (connections=.*)" % g)[0]
    return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


def claimed_client(env, vm, g=0, log=True):
    c = env.client(vm.target(g))
    c.ok("register 0")
    if log:
        c.ok("log on")
    vm.wait_stderr(r"claimed range %d" % g)
    return c


def caps_of(d):
    """Capability id -> offset, walking the configuration space's list."""
    caps = {}
    ptr = d.cfg_read(0x34, 1)
    while ptr:
        assert len(caps) < 16, "capability list loops"
        cid, nxt = d.cfg_read(ptr, 1), d.cfg_read(ptr + 1, 1)
        caps.setdefault(cid, ptr)
        ptr = nxt
    return caps


def test_negotiation_and_info(env):
    vm = start(env, PLAIN)
    d = vm.connect(0, handshake=False)
    major, minor, caps = d.version(0, 5)
    assert (major, minor) == (0, 1)
    c = caps["capabilities"]
    assert c["max_msg_fds"] >= 8 and c["max_data_xfer_size"] >= 4096 and c["pgsizes"] == 4096
    assert d.get_info() == (16, 3, 9, 5)  # RESET | PCI, 9 regions, 5 IRQ types
    r = d.region_info(BAR0)
    assert (r["size"], r["flags"], r["index"]) == (0x1000, 3, 0)
    r = d.region_info(BAR1)
    assert (r["size"], r["flags"]) == (4096, 3)
    r = d.region_info(CONFIG)
    assert (r["size"], r["flags"]) == (256, 3)
    for i in (2, 3, 4, 5, 6, 8):
        assert d.region_info(i)["size"] == 0
    with pytest.raises(VfuError) as e:
        d.region_info(9)
    assert e.value.errno == errno.EINVAL
    assert d.irq_info(INTX) == (0x7, 1)  # EVENTFD | MASKABLE | AUTOMASKED
    assert d.irq_info(MSI) == (0x1, 0)
    assert d.irq_info(MSIX) == (0x3, 8)  # EVENTFD | MASKABLE
    assert d.irq_info(4) == (0x1, 0)  # REQ
    assert d.irq_info(3) == (0x1, 1)  # ERR: an eventfd that is never signalled
    ev = os.eventfd(0)
    try:
        d.set_irqs(3, DATA_EVENTFD | ACTION_TRIGGER, 0, 1, fds=[ev])
        d.set_irqs(3, DATA_NONE | ACTION_TRIGGER, 0, 0)
    finally:
        os.close(ev)
    with pytest.raises(VfuError):
        d.irq_info(5)
    # Not supported: a clear error, and the connection goes on.
    with pytest.raises(VfuError) as e:
        d.request(DEVICE_FEATURE, struct.pack("<II", 8, 0))
    assert e.value.errno == errno.ENOTSUP
    # Minor 0 proposed: 0.0 answered.
    d2 = vm.connect(0, handshake=False)
    d.close()
    assert d2.version(0, 0)[:2] == (0, 0)


def test_version_refused(env):
    vm = start(env, PLAIN)
    cases = [(dict(major=1), errno.ENOTSUP, r"VERSION refused: version 1\.1"),
             (dict(raw_json=b"{\"capabilities\": {}}"), errno.EINVAL,
              r"VERSION refused: .*not one NUL-terminated"),
             (dict(raw_json=b"{\"capabilities\": [1,\0"), errno.EINVAL,
              r"VERSION refused: .*\"capabilities\" is not an object"),
             (dict(raw_json=b"{\"capabilities\": {\"max_msg_fds\": \"x\"}}\0"), errno.EINVAL,
              r"VERSION refused: VERSION JSON: \"max_msg_fds\" is not a number"),
             (dict(raw_json=b"not json\0"), errno.EINVAL, r"VERSION refused: .*not a JSON object"),
             (dict(raw_json=b"{\"a\":1} x\0"), errno.EINVAL, r"trailing characters")]
    for kw, err, log in cases:
        d = VfuClient(vm.paths[0])
        with pytest.raises(VfuError) as e:
            d.version(**kw)
        assert e.value.errno == err
        assert d.closed()
        d.close()
        vm.wait_stderr(log)
    # A command before VERSION: dropped.
    d = VfuClient(vm.paths[0])
    d.send(GET_INFO, struct.pack("<IIII", 16, 0, 0, 0))
    assert d.closed()
    d.close()
    vm.wait_stderr(r"malformed message: DEVICE_GET_INFO before VERSION")
    # VERSION without JSON is fine.
    d = vm.connect(0, handshake=False)
    assert d.version(caps=None)[:2] == (0, 1)
    assert d.get_info()[2] == 9


def test_config_space_identity_and_msix_cap(env):
    vm = start(env, PLAIN, VIRTIO)
    d = vm.connect(0)
    assert d.cfg_read(0x00) == 0x56781234
    assert d.cfg_read(0x08) == 0x05800007
    assert d.cfg_read(0x2C) == 0xEF01ABCD
    assert d.cfg_read(0x06, 2) & 0x10
    cfg = d.region_read(CONFIG, 0, 256)  # QEMU reads the whole space at once
    assert cfg[:4] == struct.pack("<I", 0x56781234)
    caps = caps_of(d)
    assert list(caps) == [0x11]
    m = caps[0x11]
    assert d.cfg_read(m + 2, 2) == 7  # 8 vectors, disabled, unmasked
    assert d.cfg_read(m + 4) == 0x000 | 1  # table: BAR 1 offset 0
    assert d.cfg_read(m + 8) == 0x800 | 1  # PBA: BAR 1 offset 0x800
    d.cfg_write(m + 2, 0xFFFF, 2)  # only enable and function mask are writable
    assert d.cfg_read(m + 2, 2) == 0xC007
    # BAR 1 sizes as 4 KiB.
    d.cfg_write(0x14, 0xFFFFFFFF)
    assert d.cfg_read(0x14) == 0xFFFFF000
    # The virtio device: its five virtio capabilities, then MSI-X.
    v = vm.connect(1)
    assert v.cfg_read(0) == 0x10441AF4
    vc = caps_of(v)
    assert set(vc) == {0x09, 0x11} and vc[0x09] == 0x40 and vc[0x11] == 0x98
    # Out of range: errors, the device stays.
    for region, off, n in ((CONFIG, 0xFE, 4), (CONFIG, 0, 0), (BAR0, 0x1000, 4), (BAR0, 0xFFC, 8),
                           (BAR1, 0x1000, 4), (2, 0, 4), (BAR0, 0, 3), (BAR0, 0, 5000),
                           (BAR0, (1 << 64) - 4, 8)):
        with pytest.raises(VfuError) as e:
            d.region_read(region, off, n)
        assert e.value.errno == errno.EINVAL, (region, off, n)
    assert d.cfg_read(0) == 0x56781234
    vm.wait_stderr(r"REGION_READ region 0 offset 0xffc count 8 refused")


def test_bar0_reaches_client(env):
    vm = start(env, PLAIN)
    d = vm.connect(0)
    c = claimed_client(env, vm)
    # BAR 0 unassigned: the client sees the offset.
    d.write(BAR0, 0x10, 0x1122334455667788, 8)
    c.wait_event(r"write 0 0x10 8 8877665544332211")
    d.cfg_write(0x10, BASE)
    d.cfg_write(0x04, 0x0006, 2)
    assert d.read(BAR0, 0x10, 8) == 0x1122334455667788
    c.wait_event(r"read 0 0x%x 8" % (BASE + 0x10))
    assert d.read(BAR0, 0x12, 2) == 0x5566
    c.wait_event(r"read 0 0x%x 2" % (BASE + 0x12))
    d.write(BAR0, 0x20, 0xAB, 1)
    c.wait_event(r"write 0 0x%x 1 ab" % (BASE + 0x20))
    assert d.read(BAR0, 0x20, 4) & 0xFF == 0xAB
    # In order: a burst of writes then a read.
    for i in range(8):
        d.write(BAR0, 0x100 + 4 * i, i, 4)
    assert d.read(BAR0, 0x100, 4) == 0
    evs = [e for e in c.take_events() if e.startswith(("write", "read"))]
    writes = [e for e in evs if e.startswith("write")]
    assert [int(e.split()[2], 16) - BASE for e in writes[-8:]] == [0x100 + 4 * i for i in range(8)]
    # A client error is an EIO reply.
    c.ok("fail 0 0x40")
    with pytest.raises(VfuError) as e:
        d.read(BAR0, 0x40, 4)
    assert e.value.errno == errno.EIO
    vm.stop()
    n = counters(vm, 0)
    assert n["bar_reads"] == 5 and n["bar_writes"] == 10 and n["errors"] == 1, n


def test_no_client_reads_aa(env):
    vm = start(env, PLAIN)
    d = vm.connect(0)
    assert d.read(BAR0, 0, 4) == 0xAAAAAAAA
    d.write(BAR0, 0, 5, 4)


def test_virtio_cfg_window(env):
    vm = start(env, VIRTIO)
    d = vm.connect(0)
    c = claimed_client(env, vm)
    d.cfg_write(0x10, BASE)
    c.ok("poke 0 0x3004 efbeadde")
    cap = 0x84
    d.cfg_write(cap + 4, 0, 1)
    d.cfg_write(cap + 8, 0x3004)
    d.cfg_write(cap + 12, 4)
    assert d.cfg_read(cap + 16) == 0xDEADBEEF
    c.wait_event(r"read 0 0x%x 4" % (BASE + 0x3004))
    d.cfg_write(cap + 16, 0x01020304)
    c.wait_event(r"write 0 0x%x 4 04030201" % (BASE + 0x3004))


def test_intx(env):
    vm = start(env, PLAIN)
    d = vm.connect(0)
    c = claimed_client(env, vm, log=False)
    intx = os.eventfd(0, os.EFD_NONBLOCK)
    unmask = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        d.set_irqs(INTX, DATA_EVENTFD | ACTION_TRIGGER, 0, 1, fds=[intx])
        assert eventfd_wait(intx, 0.2) == 0
        c.ok("irq 0 0 1")
        assert eventfd_wait(intx) == 1
        assert d.cfg_read(0x06, 2) & 0x08  # interrupt status
        # Automasked: nothing more until the client unmasks (the guest's EOI).
        c.ok("irq 0 0 0")
        c.ok("irq 0 0 1")
        assert eventfd_wait(intx, 0.3) == 0
        d.set_irqs(INTX, DATA_NONE | ACTION_UNMASK, 0, 1)
        assert eventfd_wait(intx) == 1  # still high: again
        # Lowered, then unmasked: nothing.
        c.ok("irq 0 0 0")
        assert d.cfg_read(0x06, 2) & 0x08 == 0
        d.set_irqs(INTX, DATA_NONE | ACTION_UNMASK, 0, 1)
        assert eventfd_wait(intx, 0.3) == 0
        # Masked by the client: a rising line waits for the unmask.
        d.set_irqs(INTX, DATA_BOOL | ACTION_MASK, 0, 1, data=b"\x01")
        c.ok("irq 0 0 1")
        assert eventfd_wait(intx, 0.3) == 0
        # Unmask through an eventfd (KVM's resamplefd).
        d.set_irqs(INTX, DATA_EVENTFD | ACTION_UNMASK, 0, 1, fds=[unmask])
        os.write(unmask, struct.pack("<Q", 1))
        assert eventfd_wait(intx) == 1
        # INTx disabled in the command register: held until enabled.
        d.cfg_write(0x04, 0x0400, 2)
        os.write(unmask, struct.pack("<Q", 1))
        assert eventfd_wait(intx, 0.3) == 0
        d.cfg_write(0x04, 0x0000, 2)
        assert eventfd_wait(intx) == 1
        # A client-triggered signal.
        d.set_irqs(INTX, DATA_NONE | ACTION_TRIGGER, 0, 1)
        assert eventfd_wait(intx) == 1
        # Bad requests: errors.
        for args in ((INTX, DATA_NONE | ACTION_UNMASK, 0, 2), (INTX, DATA_NONE | ACTION_UNMASK, 1, 1),
                     (MSI, DATA_NONE | ACTION_TRIGGER, 0, 1), (INTX, 0x3 | ACTION_MASK, 0, 1),
                     (INTX, DATA_EVENTFD | ACTION_MASK, 0, 1)):
            with pytest.raises(VfuError):
                d.set_irqs(*args, fds=[unmask] if args[1] & DATA_EVENTFD else ())
        pipe_r, pipe_w = os.pipe()
        with pytest.raises(VfuError):
            d.set_irqs(INTX, DATA_EVENTFD | ACTION_TRIGGER, 0, 1, fds=[pipe_r])
        os.close(pipe_r)
        os.close(pipe_w)
        vm.wait_stderr(r"fd 0 is not an eventfd")
        # Disable the index: no more signals.
        d.set_irqs(INTX, DATA_NONE | ACTION_TRIGGER, 0, 0)
        d.set_irqs(INTX, DATA_NONE | ACTION_UNMASK, 0, 1)
        assert eventfd_wait(intx, 0.3) == 0
    finally:
        os.close(intx)
        os.close(unmask)


def pba(d):
    return d.read(BAR1, 0x800, 8)


def test_msix(env):
    vm = start(env, PLAIN)
    d = vm.connect(0)
    c = claimed_client(env, vm, log=False)
    m = caps_of(d)[0x11]
    fds = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(8)]
    intx = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        d.set_irqs(INTX, DATA_EVENTFD | ACTION_TRIGGER, 0, 1, fds=[intx])
        d.set_irqs(MSIX, DATA_EVENTFD | ACTION_TRIGGER, 0, 8, fds=fds)
        d.cfg_write(m + 2, MSIX_CTRL_ENABLE, 2)

        def pulse(k):
            c.ok("irq 0 %d 1" % k)
            c.ok("irq 0 %d 0" % k)

        for k in (3, 0, 7):
            pulse(k)
            assert eventfd_wait(fds[k]) == 1, "vector %d" % k
        assert eventfd_wait(intx, 0.2) == 0  # MSI-X on: line 0 is vector 0, not INTx
        # A level held high is one edge: one message.
        c.ok("irq 0 1 1")
        assert eventfd_wait(fds[1]) == 1
        assert eventfd_wait(fds[1], 0.2) == 0
        c.ok("irq 0 1 0")
        # Masked per vector (SET_IRQS MASK): pending bit, fires on unmask.
        d.set_irqs(MSIX, DATA_NONE | ACTION_MASK, 2, 1)
        pulse(2)
        assert eventfd_wait(fds[2], 0.3) == 0
        assert pba(d) == 1 << 2
        d.set_irqs(MSIX, DATA_NONE | ACTION_UNMASK, 2, 1)
        assert eventfd_wait(fds[2]) == 1
        assert pba(d) == 0
        # Masked in the table (vector control of entry 5).
        d.write(BAR1, 5 * 16 + 12, 1, 4)
        assert d.read(BAR1, 5 * 16 + 12, 4) == 1
        d.write(BAR1, 5 * 16, 0xFEE00000, 4)
        assert d.read(BAR1, 5 * 16, 4) == 0xFEE00000
        pulse(5)
        assert eventfd_wait(fds[5], 0.3) == 0
        assert pba(d) == 1 << 5
        d.write(BAR1, 5 * 16 + 12, 0, 4)
        assert eventfd_wait(fds[5]) == 1
        # Function mask: every vector held.
        d.cfg_write(m + 2, MSIX_CTRL_ENABLE | MSIX_CTRL_MASKALL, 2)
        pulse(4)
        pulse(6)
        assert eventfd_wait(fds[4], 0.3) == 0
        assert pba(d) == (1 << 4) | (1 << 6)
        d.cfg_write(m + 2, MSIX_CTRL_ENABLE, 2)
        assert eventfd_wait(fds[4]) == 1 and eventfd_wait(fds[6]) == 1
        # A vector without an eventfd stays pending until it gets one (QEMU assigns on unmask).
        d.set_irqs(MSIX, DATA_EVENTFD | ACTION_TRIGGER, 3, 1)  # no fd: de-assign vector 3
        pulse(3)
        assert pba(d) == 1 << 3
        d.set_irqs(MSIX, DATA_EVENTFD | ACTION_TRIGGER, 3, 1, fds=[fds[3]])
        assert eventfd_wait(fds[3]) == 1
        # DATA_BOOL mask of a subset.
        d.set_irqs(MSIX, DATA_BOOL | ACTION_MASK, 0, 2, data=b"\x00\x01")
        pulse(0)
        pulse(1)
        assert eventfd_wait(fds[0]) == 1 and eventfd_wait(fds[1], 0.3) == 0
        d.set_irqs(MSIX, DATA_NONE | ACTION_UNMASK, 0, 8)
        assert eventfd_wait(fds[1]) == 1
        # MSI-X off: line 0 is INTx again.
        d.cfg_write(m + 2, 0, 2)
        c.ok("irq 0 0 1")
        assert eventfd_wait(intx) == 1
        c.ok("irq 0 0 0")
        with pytest.raises(VfuError):
            d.set_irqs(MSIX, DATA_NONE | ACTION_MASK, 6, 3)
        # Reset clears masks and pending bits and disables MSI-X (the eventfds stay).
        d.cfg_write(m + 2, MSIX_CTRL_ENABLE | MSIX_CTRL_MASKALL, 2)
        pulse(2)
        assert pba(d) == 1 << 2
        d.reset()
        assert pba(d) == 0 and d.cfg_read(m + 2, 2) == 7
        vm.stop()
        n = counters(vm, 0)
        assert n["msix_signals"] == 11 and n["intx_signals"] == 1, n
    finally:
        for fd in fds + [intx]:
            os.close(fd)


def test_dma_map_memfd(env):
    vm = start(env, PLAIN)
    d = vm.connect(0)
    c = claimed_client(env, vm, log=False)
    ram = os.memfd_create("guest-ram")
    os.ftruncate(ram, 2 << 20)
    try:
        d.dma_map(0x100000, 1 << 20, 0, 3, ram)
        d.dma_map(0x40000000, 1 << 20, 1 << 20, 3, ram)
        m = mmap.mmap(ram, 2 << 20)
        pat = seed_pattern(9, 3000)
        fnv = c.ok("dma_write 0 0 0x100010 3000 9")
        assert int(fnv.split("=")[1].split()[0], 16) == fnv64(pat)
        assert m[0x10:0x10 + 3000] == pat
        m[(1 << 20) + 0x200:(1 << 20) + 0x210] = bytes(range(16))
        assert "data=" + bytes(range(16)).hex() in c.ok("dma_read 0 0 0x40000200 16")
        # Outside, across a window's end: errors.
        assert c.err("dma_write 0 0 0x300000 16 1") < 0
        assert c.err("dma_read 0 0 0x1ffff8 16") < 0
        # Overlap: EEXIST; unknown unmap: ENOENT; bad flags: EINVAL.
        with pytest.raises(VfuError) as e:
            d.dma_map(0x180000, 0x1000, 0, 3, ram)
        assert e.value.errno == errno.EEXIST
        with pytest.raises(VfuError) as e:
            d.dma_unmap(0x100000, 0x1000)
        assert e.value.errno == errno.ENOENT
        with pytest.raises(VfuError) as e:
            d.dma_map(0x80000000, 0x1000, 0, 0x10, ram)
        assert e.value.errno == errno.EINVAL
        with pytest.raises(VfuError) as e:
            d.dma_map(0x80000000, 4 << 20, 0, 3, ram)  # past the file's end
        assert e.value.errno == errno.EINVAL
        # Unmapped: DMA there fails.
        d.dma_unmap(0x100000, 1 << 20)
        assert c.err("dma_read 0 0 0x100010 4") < 0
        # A window without an fd: clients' DMA there goes through DMA_READ/DMA_WRITE messages
        # (test_dma_through_messages); here the peer answers them with EFAULT.
        d.dma_map(0x200000, 0x10000, 0, 3)
        vm.wait_stderr(r"DMA_MAP 0x200000\+0x10000 without an fd.*DMA_READ/DMA_WRITE messages")
        assert dma_served(c, d, "dma_read 0 0 0x200000 4").startswith("ERR")
        # Unmap everything.
        d.dma_unmap(0, 0, flags=2)
        assert c.err("dma_read 0 0 0x40000200 16") < 0
        # A new connection starts with no windows either.
        d.dma_map(0x100000, 1 << 20, 0, 3, ram)
        d.close()
        vm.wait_stderr(r"the client closed the socket; closing")
        assert c.err("dma_read 0 0 0x100010 4") < 0
        m.close()
    finally:
        os.close(ram)


def test_dma_map_fd_access_flags(env):
    """An fd window's DMA_MAP flags bind the client's DMA by pointer: a write into a read-only
    window and a read of a write-only one fail with EFAULT (logged, nothing reaches the file,
    no DMA_READ/DMA_WRITE message); the allowed direction works."""
    vm = start(env, PLAIN)
    d = vm.connect(0)
    c = claimed_client(env, vm, log=False)
    ram = os.memfd_create("guest-ram")
    os.ftruncate(ram, 0x20000)
    m = mmap.mmap(ram, 0x20000)
    try:
        m[0:0x20000] = b"\xa5" * 0x20000
        d.dma_map(0x100000, 0x10000, 0, 1, ram)  # readable only
        d.dma_map(0x200000, 0x10000, 0x10000, 2, ram)  # writeable only
        # Read-only: a write faults and the file keeps its bytes; a read works.
        assert c.err("dma_write 0 0 0x100010 16 1") == -errno.EFAULT
        assert c.err("dma_write 0 0 0x100000 3000 2") == -errno.EFAULT
        vm.wait_stderr(r"client DMA write 0x100010 len 0x10 refused: window 0x100000\+0x10000 is "
                       r"not writeable \(DMA_MAP flags 0x1\)")
        vm.wait_stderr(r"DMA \S+ mid 0 sid 0 addr 0x100010 len 16 faulted")
        assert m[0:0x10000] == b"\xa5" * 0x10000
        assert "data=" + "a5" * 16 in c.ok("dma_read 0 0 0x100020 16")
        # Write-only: a read faults; a write reaches the file.
        assert c.err("dma_read 0 0 0x200020 16") == -errno.EFAULT
        assert c.err("dma_read 0 0 0x200000 5000") == -errno.EFAULT
        vm.wait_stderr(r"DMA \S+ mid 0 sid 0 addr 0x200020 len 16 faulted")
        pat = seed_pattern(5, 3000)
        c.ok("dma_write 0 0 0x200100 3000 5")
        assert m[0x10100:0x10100 + 3000] == pat
        vm.stop()
        n = counters(vm, 0)
        assert n["dma_msgs"] == 0, n
    finally:
        m.close()
        os.close(ram)


def dma_served(c, d, line, timeout=15):
    """Run a test-client command while d answers the server's DMA_READ/DMA_WRITE; its answer."""
    c.send(line)
    box = []

    def done():
        if not box:
            try:
                box.append(c.answers.get_nowait())
            except queue.Empty:
                pass
        return bool(box)

    d.serve_until(done, timeout)
    return box[0]


def dma_ok(c, d, line):
    a = dma_served(c, d, line)
    assert a.startswith("OK"), "%r -> %r; stderr:\n%s" % (line, a, c.stderr_tail())
    return a


def fnv_of(answer):
    return int(answer.split("fnv=")[1].split()[0], 16)


MSG_BASE = 0x200000  # a window without an fd (QEMU's non-shared RAM)
MSG_SIZE = 0x40000


def msg_setup(env):
    vm = start(env, PLAIN)
    d = vm.connect(0)
    c = claimed_client(env, vm, log=False)
    seed = random.randrange(1 << 32)
    print("seed", seed)
    rnd = random.Random(seed)
    mem = bytearray(rnd.randbytes(MSG_SIZE))
    d.dma_map(MSG_BASE, MSG_SIZE, 0, 3)
    d.serve_dma(MSG_BASE, mem)
    vm.wait_stderr(r"without an fd: clients' DMA there goes through DMA_READ/DMA_WRITE")
    return vm, d, c, mem, rnd


def test_dma_through_messages(env):
    """A window without an fd: the client's DMA reads and writes reach the peer's memory through
    DMA_READ/DMA_WRITE of at most 4096 bytes, blocking and non-blocking, 1 byte to 64 KiB+."""
    vm, d, c, mem, rnd = msg_setup(env)
    sizes = [1, 3, 31, 32, 33, 100, 4095, 4096, 4097, 8192 + 5, 16320, 16321, 65536 + 123]
    for i, n in enumerate(sizes):
        nb = " nb" if i % 2 else ""
        off = rnd.randrange(0, MSG_SIZE - n)
        seed = rnd.randrange(256)
        a = dma_ok(c, d, "dma_write 0 0 0x%x %d %d%s" % (MSG_BASE + off, n, seed, nb))
        assert bytes(mem[off:off + n]) == seed_pattern(seed, n), (n, nb)
        assert fnv_of(a) == fnv64(seed_pattern(seed, n))
        off = rnd.randrange(0, MSG_SIZE - n)
        mem[off:off + n] = rnd.randbytes(n)
        a = dma_ok(c, d, "dma_read 0 0 0x%x %d%s" % (MSG_BASE + off, n, nb))
        assert fnv_of(a) == fnv64(bytes(mem[off:off + n])), (n, nb)
        if n <= 64:
            assert "data=" + bytes(mem[off:off + n]).hex() in a
    # Every message within max_data_xfer_size, and a 64 KiB transfer needs several.
    assert all(0 < e[2] <= 4096 and e[3] == 0 for e in d.dma_log), d.dma_log[:5]
    assert sum(1 for e in d.dma_log if e[0] == DMA_READ) >= 2 * len(sizes)
    assert sum(1 for e in d.dma_log if e[0] == DMA_WRITE) >= 2 * len(sizes)
    # The data a write left is what a read returns (the server keeps nothing).
    dma_ok(c, d, "dma_write 0 0 0x%x 5000 77" % (MSG_BASE + 0x1234))
    a = dma_ok(c, d, "dma_read 0 0 0x%x 5000" % (MSG_BASE + 0x1234))
    assert fnv_of(a) == fnv64(seed_pattern(77, 5000))
    # Not in a window, across a window's end, a write into a read-only window: no message.
    before = len(d.dma_log)
    assert dma_served(c, d, "dma_read 0 0 0x%x 16" % (MSG_BASE + MSG_SIZE - 8)).startswith("ERR")
    assert dma_served(c, d, "dma_write 0 0 0x100000 16 1").startswith("ERR")
    d.dma_map(0x800000, 0x1000, 0, 1)  # readable only
    d.serve_dma(0x800000, bytearray(b"\x5a" * 0x1000))
    assert dma_served(c, d, "dma_write 0 0 0x800000 16 1").startswith("ERR")
    assert len(d.dma_log) == before
    a = dma_ok(c, d, "dma_read 0 0 0x800010 16")
    assert "data=" + "5a" * 16 in a
    vm.stop()
    n = counters(vm, 0)
    assert n["dma_msgs"] == len(d.dma_log) and n["dma_failed"] == 0, n


def test_dma_messages_errors(env):
    """An error reply fails the client's DMA and the next one works; no reply within 5 s fails
    it (a late reply is ignored); REGION_READs are answered while a DMA waits; the connection
    closing fails a waiting DMA at once."""
    vm, d, c, mem, rnd = msg_setup(env)
    d.cfg_write(0x10, BASE)
    d.cfg_write(0x04, 0x0006, 2)
    # The peer answers EFAULT for what its memory does not hold (as QEMU for unassigned RAM).
    d.dma_mem[:] = [(MSG_BASE, mem[:0x10000])]
    mem = d.dma_mem[0][1]
    a = dma_served(c, d, "dma_read 0 0 0x%x 8192" % (MSG_BASE + 0xF000))
    assert a.startswith("ERR"), a
    vm.wait_stderr(r"DMA_READ 0x210000 count 4096 for a client: error reply 14")
    assert 14 in [e[3] for e in d.dma_log]
    a = dma_ok(c, d, "dma_read 0 0 0x%x 100" % (MSG_BASE + 0x100))
    assert fnv_of(a) == fnv64(bytes(mem[0x100:0x100 + 100]))

    # MMIO goes on while a DMA waits for its replies (held by the peer); non-blocking, so that
    # the test client serves its MMIO meanwhile.
    d.dma_hold = True
    c.send("dma_read 0 0 0x%x 6000 nb" % (MSG_BASE + 0x2000))
    d.serve_until(lambda: len(d.dma_held) == 2, 10)
    d.write(BAR0, 0x20, 0x11223344, 4)
    assert d.read(BAR0, 0x20, 4) == 0x11223344
    assert d.cfg_read(0) == 0x56781234
    assert c.answers.empty(), c.answers.get()
    assert d.release_held() == 2
    d.dma_hold = False
    box = []
    d.serve_until(lambda: box or (not c.answers.empty() and box.append(c.answers.get())), 10)
    assert box[0].startswith("OK") and fnv_of(box[0]) == fnv64(bytes(mem[0x2000:0x2000 + 6000]))

    # No reply: the DMA fails after 5 s; the late reply is ignored; the next DMA works.
    d.dma_hold = True
    t0 = time.monotonic()
    a = dma_served(c, d, "dma_write 0 0 0x%x 64 3" % MSG_BASE, timeout=20)
    took = time.monotonic() - t0
    assert a.startswith("ERR") and 4 < took < 12, (a, took)
    vm.wait_stderr(r"DMA_WRITE 0x200000 count 64 for a client: no reply within 5000 ms")
    d.dma_hold = False
    assert d.release_held() == 1
    vm.wait_stderr(r"DMA_WRITE reply id \d+ matches no message in flight: ignored")
    a = dma_ok(c, d, "dma_read 0 0 0x%x 32" % (MSG_BASE + 0x40))
    assert "data=" + bytes(mem[0x40:0x60]).hex() in a

    # The connection closes while a DMA waits: it fails at once, and a new connection serves.
    d.dma_hold = True
    c.send("dma_read 0 0 0x%x 20000" % MSG_BASE)
    d.serve_until(lambda: len(d.dma_held) >= 1, 10)
    t0 = time.monotonic()
    d.close()
    a = c.answer(5, "DMA answer after the close")
    assert a.startswith("ERR") and time.monotonic() - t0 < 3, a
    vm.wait_stderr(r"client DMA piece\(s\) waited for DMA_READ/DMA_WRITE replies: they fail")
    d2 = vm.connect(0)
    d2.dma_map(MSG_BASE, MSG_SIZE, 0, 3)
    mem2 = bytearray(rnd.randbytes(MSG_SIZE))
    d2.serve_dma(MSG_BASE, mem2)
    a = dma_ok(c, d2, "dma_read 0 0 0x%x 20000 nb" % MSG_BASE)
    assert fnv_of(a) == fnv64(bytes(mem2[:20000]))
    vm.stop()
    n = counters(vm, 0)
    assert n["dma_failed"] == 3, n


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def test_hostile_peers(env):
    vm = start(env, PLAIN, PLAIN)
    good = vm.connect(1)
    assert good.cfg_read(0) == 0x56781234
    evr, evw = os.pipe()
    ev = os.eventfd(0)
    hdr = struct.Struct("<HHIII")
    cases = [
        (hdr.pack(1, 4, 8, 0, 0), r"message size 8 is below the header's 16"),
        (hdr.pack(1, 10, 1 << 30, 0, 0), r"REGION_WRITE of 1073741824 bytes"),
        (hdr.pack(1, 99, 16, 0, 0), r"unknown command 99"),
        (hdr.pack(1, 10, 16 + 16 + 4, 0, 0) + struct.pack("<QII", 0, 0, 5000) + b"abcd",
         r"REGION_WRITE count 5000 with 4 data bytes"),
        (hdr.pack(1, 4, 32, 0, 0) + struct.pack("<IIII", 16, 0, 0, 0),
         r"DEVICE_GET_INFO with 2 fd"),  # sent with fds
        (hdr.pack(1, 4, 32, 1, 0) + struct.pack("<IIII", 16, 0, 0, 0), r"not a command"),
        (hdr.pack(1, 4, 16, 0x20, 5), r"DEVICE_GET_INFO with flags 0x20 \(neither a command"),
        (hdr.pack(1, 11, 16 + 16, 1, 0) + bytes(16), r"DMA_READ reply with fds"),  # sent with fds
        (hdr.pack(1, 9, 16 + 20, 0, 0) + bytes(20), r"REGION_READ with a payload of 20 bytes"),
        (hdr.pack(1, 13, 16 + 4, 0, 0) + bytes(4), r"DEVICE_RESET with a payload of 4 bytes"),
        (hdr.pack(1, 8, 16 + 20, 0, 0) + struct.pack("<IIIII", 20, 0x24, 2, 0, 8),
         r"SET_IRQS with more than 8 fd"),  # 9 fds
    ]
    fds_before = fd_count(vm.p.pid)
    try:
        for i, (msg, why) in enumerate(cases):
            d = vm.connect(0)
            fds = [evr, evw] if "2 fd" in why else ([ev] * 9 if "more than 8" in why else [])
            fds = [ev] if "reply with fds" in why else fds
            d.send_raw(msg, fds)
            assert d.closed(), "case %d: not dropped" % i
            d.close()
            vm.wait_stderr(r"device 0: malformed message: .*" + why)
            assert good.cfg_read(0) == 0x56781234
        # A DMA reply that matches no DMA of ours (none is in flight) is ignored, logged once.
        d = vm.connect(0)
        d.send_raw(hdr.pack(7, 12, 16, 1, 0) + hdr.pack(8, 11, 16 + 16 + 4, 1, 0) +
                   struct.pack("<QI", 0x1000, 4) + bytes(8))
        assert d.cfg_read(0) == 0x56781234
        vm.wait_stderr(r"device 0: DMA_WRITE reply id 7 matches no message in flight: ignored")
        d.close()
        # A peer that stops mid-message: the device waits, the others are served; its close
        # is logged.
        d = vm.connect(0)
        d.send_raw(hdr.pack(1, 9, 32, 0, 0) + b"\1\2")
        assert good.read(BAR0, 0, 4) == 0xAAAAAAAA
        assert not d.closed(0.3)
        d.close()
        vm.wait_stderr(r"device 0: the client closed the socket inside a message")
        # Huge and wrapping counts or offsets in well-formed messages: error replies.
        d = vm.connect(0)
        for region, off, n in ((BAR0, 0xFFFFFFFFFFFFFFFF, 1), (CONFIG, 0x100, 1),
                               (BAR0, 0, 0xFFFFFFFF), (0xFFFFFFFF, 0, 4)):
            with pytest.raises(VfuError):
                d.region_read(region, off, n)
        with pytest.raises(VfuError):
            d.region_write(BAR0, 0xFFF, b"12345678")
        with pytest.raises(VfuError):
            d.set_irqs(MSIX, DATA_NONE | ACTION_MASK, 0xFFFFFFFF, 1)
        with pytest.raises(VfuError):
            d.dma_map(0xFFFFFFFFFFFFF000, 0x2000)
        assert d.cfg_read(0) == 0x56781234
        # The server still accepts connections, and closed every fd it got.
        d.close()
        d = vm.connect(0)
        assert d.get_info()[2] == 9
        assert vm.alive()
        assert fd_count(vm.p.pid) <= fds_before + 1
    finally:
        os.close(evr)
        os.close(evw)
        os.close(ev)


def test_killed_model_hotplug(env):
    vm = start(env, PLAIN + ",hotplug=on", control=True)
    d = vm.connect(0)
    c = claimed_client(env, vm)
    vm.ctl_expect("claimed 0")
    intx = os.eventfd(0, os.EFD_NONBLOCK)
    try:
        d.set_irqs(INTX, DATA_EVENTFD | ACTION_TRIGGER, 0, 1, fds=[intx])
        d.cfg_write(0x10, BASE)
        c.ok("stall 0 0x40")
        msg_id = d.send(REGION_READ, struct.pack("<QII", 0x40, BAR0, 4))
        c.wait_event(r"^stall")
        c.kill()
        # The read in flight completes (with 0), never hangs.
        rid, cmd, flags, err, data = d.recv(timeout=10)
        assert (rid, cmd) == (msg_id, REGION_READ) and not flags & 0x20 and err == 0
        assert data[16:] == b"\0" * 4
        vm.ctl_expect("released 0")
        vm.ctl_expect("dead 0")
        vm.wait_stderr(r"instance 1 is dead")
        # The dead instance: BAR 0 reads 0 (so a guest driver's reset loop ends and the
        # unplug completes) and drops writes; configuration space still answers.
        assert d.read(BAR0, 0, 4) == 0
        d.write(BAR0, 0, 1, 4)
        assert d.cfg_read(0) == 0x56781234
        # A new model claims the range; the orchestrator unplugs the old device (QEMU closes
        # its connection) and plugs a new one on the same path.
        c2 = claimed_client(env, vm)
        vm.ctl_expect("claimed 0")
        d.close()
        d2 = vm.connect(0)
        vm.wait_stderr(r"serving instance 2 \(hot-plugged\)")
        assert d2.cfg_read(0x10) == 0  # a fresh device
        d2.write(BAR0, 0x8, 0x55, 1)
        c2.wait_event(r"write 0 0x8 1 55")
        vm.stop()
        n = counters(vm, 0)
        assert n["instances"] == 2 and n["dead_accesses"] == 3 and n["connections"] == 2, n
    finally:
        os.close(intx)


def test_killed_model_no_hotplug(env):
    vm = start(env, PLAIN)
    d = vm.connect(0)
    c = claimed_client(env, vm)
    c.ok("stall 0 0x40")
    msg_id = d.send(REGION_READ, struct.pack("<QII", 0x40, BAR0, 4))
    c.wait_event(r"^stall")
    c.kill()
    rid, cmd, flags, err, data = d.recv(timeout=10)
    # hotplug=off: the range is unclaimed, as in every mode: 0xAA bytes.
    assert (rid, flags & 0x20) == (msg_id, 0) and data[16:] == b"\xaa" * 4
    assert d.read(BAR0, 0, 4) == 0xAAAAAAAA


def test_client_answers_dma_like_qemu():
    """vfu_client.py answers a server's DMA_READ/DMA_WRITE as QEMU 11.1.3 does (seen on the
    wire): address and an 8-byte count, data at payload offset 16, no padding, E2BIG above
    max_data_xfer_size, EFAULT outside memory."""
    import vfu_client as vc

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    client = vc.VfuClient.__new__(vc.VfuClient)
    client.path, client.timeout, client.next_id, client.buf, client.s = "pair", 5, 1, b"", a
    client.dma_mem, client.dma_log, client.dma_max = [], [], 4096
    client.dma_hold, client.dma_held = False, []
    server = vc.VfuClient.__new__(vc.VfuClient)
    server.path, server.timeout, server.next_id, server.buf, server.s = "pair", 5, 1, b"", b
    try:
        mem = bytearray(os.urandom(8192))
        client.serve_dma(0x10000, mem)
        data = os.urandom(3000)
        # DMA_WRITE: address, count (8 bytes), data at 16.
        server.send(vc.DMA_WRITE, struct.pack("<QQ", 0x10100, len(data)) + data, msg_id=7)
        mid, cmd, flags, err, payload = client.recv()
        client.answer_dma(mid, cmd, flags, payload)
        rid, rcmd, rflags, rerr, rdata = server.recv()
        assert (rid, rcmd, rflags, rerr, rdata) == (7, vc.DMA_WRITE, vc.F_REPLY, 0, b"")
        assert bytes(mem[0x100:0x100 + len(data)]) == data
        # DMA_READ of what was written, back with the data at payload offset 16.
        server.send(vc.DMA_READ, struct.pack("<QQ", 0x10100, len(data)), msg_id=8)
        client.answer_dma(*[x for i, x in enumerate(client.recv()) if i != 3])
        rid, rcmd, rflags, rerr, rdata = server.recv()
        assert (rid, rcmd, rflags, rerr) == (8, vc.DMA_READ, vc.F_REPLY, 0)
        assert len(rdata) == 16 + len(data) and rdata[16:16 + len(data)] == data
        assert struct.unpack("<QQ", rdata[:16]) == (0x10100, len(data))
        # Above max_data_xfer_size, and outside the memory.
        for cmd, payload, want in ((vc.DMA_READ, struct.pack("<QQ", 0x10000, 4097), errno.E2BIG),
                                   (vc.DMA_READ, struct.pack("<QQ", 0x11f00, 512), errno.EFAULT),
                                   (vc.DMA_WRITE, struct.pack("<QQ", 0x10000, 64) + bytes(8),
                                    errno.E2BIG)):
            server.send(cmd, payload, msg_id=9)
            client.answer_dma(*[x for i, x in enumerate(client.recv()) if i != 3])
            rid, rcmd, rflags, rerr, rdata = server.recv()
            assert (rid, rflags, rerr, rdata) == (9, vc.F_REPLY | vc.F_ERROR, want, b""), rerr
        assert [e[3] for e in client.dma_log] == [0, 0, errno.E2BIG, errno.EFAULT, errno.E2BIG]
    finally:
        a.close()
        b.close()
