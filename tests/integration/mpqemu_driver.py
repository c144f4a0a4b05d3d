"""Plays QEMU's x-pci-proxy-dev: speaks the mpqemu messages to coreio-vm --accel mpqemu."""

import os
import queue
import select
import socket
import struct
import subprocess
import threading
import time

from conftest import VM_EXE, Proc, build_path

# QEMU 7.2's MPQemuCmd (include/hw/remote/mpqemu-link.h).
SYNC_SYSMEM, RET, PCI_CFGWRITE, PCI_CFGREAD, BAR_WRITE, BAR_READ, SET_IRQFD, DEVICE_RESET = range(8)

HDR = struct.Struct("<iIQ")  # int cmd, 4 bytes of padding, size_t size (x86-64)
DATA_MAX = 192  # sizeof the data union: SyncSysmemMsg
CONF = struct.Struct("<IIi")  # PciConfDataMsg: uint32 addr, uint32 val, int len
BAR = struct.Struct("<QQIB3x")  # BarAccessMsg: hwaddr addr, uint64 val, unsigned size, bool memory
MAX_FDS = 8


def pack_sysmem(regions):
    """SyncSysmemMsg for [(gpa, size, offset), ...] (at most 8)."""
    gpas = [r[0] for r in regions] + [0] * (MAX_FDS - len(regions))
    sizes = [r[1] for r in regions] + [0] * (MAX_FDS - len(regions))
    offs = [r[2] for r in regions] + [0] * (MAX_FDS - len(regions))
    return struct.pack("<8Q8Q8q", *gpas, *sizes, *offs)


class Device:
    """The proxy's end of one device socket: each request waits for its RET, as QEMU does."""

    def __init__(self, sock):
        self.s = sock

    def send(self, cmd, data=b"", fds=(), size=None):
        """Send one message; size overrides the header's size field (for malformed ones)."""
        msg = HDR.pack(cmd, 0, len(data) if size is None else size) + data
        if fds:
            socket.send_fds(self.s, [msg], list(fds))
        else:
            self.s.sendall(msg)

    def _recv_exact(self, n, timeout):
        buf = b""
        deadline = time.monotonic() + timeout
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.s], [], [], left)[0]:
                raise AssertionError("no answer from coreio-vm within %ss" % timeout)
            part = self.s.recv(n - len(buf))
            if not part:
                raise EOFError("coreio-vm closed the device socket")
            buf += part
        return buf

    def recv_ret(self, timeout=10):
        """The next message, which must be RET with a u64; returns the u64."""
        cmd, _, size = HDR.unpack(self._recv_exact(HDR.size, timeout))
        assert cmd == RET, "expected RET, got command %d" % cmd
        assert size == 8, "RET with %d data bytes" % size
        return struct.unpack("<Q", self._recv_exact(8, timeout))[0]

    def request(self, cmd, data=b"", timeout=10):
        self.send(cmd, data)
        return self.recv_ret(timeout)

    def cfg_read(self, addr, length=4):
        return self.request(PCI_CFGREAD, CONF.pack(addr, 0, length)) & 0xFFFFFFFF

    def cfg_write(self, addr, val, length=4):
        return self.request(PCI_CFGWRITE, CONF.pack(addr, val & 0xFFFFFFFF, length))

    def bar_read(self, addr, size=4, timeout=10):
        return self.request(BAR_READ, BAR.pack(addr, 0, size, 1), timeout)

    def bar_write(self, addr, val, size=4, timeout=10):
        return self.request(BAR_WRITE, BAR.pack(addr, val, size, 1), timeout)

    def sync_sysmem(self, regions, fds):
        """Share guest memory: regions [(gpa, size, offset)], one fd each. No answer."""
        self.send(SYNC_SYSMEM, pack_sysmem(regions), fds)

    def set_irqfd(self, intr, resample):
        self.send(SET_IRQFD, b"", [intr, resample])

    def reset(self):
        return self.request(DEVICE_RESET)

    def closed(self, timeout=5):
        """True once coreio-vm has closed its end (EOF)."""
        if not select.select([self.s], [], [], timeout)[0]:
            return False
        try:
            return self.s.recv(1) == b""
        except ConnectionResetError:
            return True

    def program_bar(self, base, command=0x0006):
        """Place BAR 0 at base and enable memory decoding and bus mastering."""
        self.cfg_write(0x10, base)
        self.cfg_write(0x04, command, 2)


def eventfd_wait(fd, timeout=5):
    """Read an eventfd within timeout; returns its count, or 0 when nothing came."""
    if not select.select([fd], [], [], timeout)[0]:
        return 0
    return struct.unpack("<Q", os.read(fd, 8))[0]


class MpqemuVM(Proc):
    """coreio-vm --accel mpqemu with one socketpair per --vmmio pci range; devs[g] is its proxy."""

    def __init__(self, vmmio, extra=(), n_listen=None, pass_socks=()):
        """pass_socks: more (OPTION, socket) pairs handed to coreio-vm as OPTION FD."""
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in vmmio]
        remote = [b for _, b in pairs] + [sk for _, sk in pass_socks]
        argv = [build_path(VM_EXE), "--accel", "mpqemu"]
        for _, b in pairs:
            argv += ["--mpqemu-fd", str(b.fileno())]
        for opt, sk in pass_socks:
            argv += [opt, str(sk.fileno())]
        for v in vmmio:
            argv += ["--vmmio", v]
        argv += list(extra)
        # Proc's constructor, with the remote ends passed to the child.
        self.name = "coreio-vm"
        self.argv = argv
        self.stderr_lines = []
        self.stdout_lines = []
        self.cond = threading.Condition()
        self.answers = queue.Queue()
        self.events = queue.Queue()
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, bufsize=1,
                                  pass_fds=[r.fileno() for r in remote])
        for r in remote:
            r.close()
        self.t_err = threading.Thread(target=self._read_err, daemon=True)
        self.t_out = threading.Thread(target=self._read_out, daemon=True)
        self.t_err.start()
        self.t_out.start()
        self.devs = [Device(a) for a, _ in pairs]
        n = len(vmmio) if n_listen is None else n_listen
        self.listening = [m.group(1) for m in self.wait_stderr(r"listening on (\S+)", count=n)]

    def target(self, g):
        """The address a client connects to for range g (each range on its own port=0)."""
        return self.listening[g]

    def stop(self):
        for d in self.devs:
            try:
                d.s.close()
            except OSError:
                pass
        super().stop()


def start_vm(env, *vmmio, extra=(), n_listen=None):
    """Start coreio-vm --accel mpqemu in env (ended with it); returns the MpqemuVM."""
    vm = MpqemuVM(list(vmmio), extra=extra, n_listen=n_listen)
    env.procs.append(vm)
    return vm
