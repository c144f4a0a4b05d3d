#!/usr/bin/env python3
"""The main job's script: a VM with the example timer/DMA device model served over CoreIO.

With a usable /dev/kvm it boots the `dma` test guest under `coreio-vm --accel
kvm`; the guest drives the device model through its registers and checks every
byte it moved. Without KVM (or with --qtest) a scripted test-accelerator
session plays the CPU instead.
"""
import argparse
import os
import queue
import subprocess
import sys
import threading
import time

BUILD = "build"
BASE = 0xD0000000
LINE = 5
TIMEOUT = 10.0


_out_lock = threading.Lock()


def say(text):
    """Print one whole line; lines from several threads never mix."""
    with _out_lock:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def reader(stream, q, echo=None):
    for line in iter(stream.readline, ""):
        q.put(line.rstrip("\n"))
        if echo:
            say(echo + line.rstrip("\n"))
    q.put(None)


class Session:
    def __init__(self):
        vm = os.path.join(BUILD, "src/vm/coreio-vm")
        args = [vm, "--accel", "qtest", "--qtest", "stdio", "--mem", "64M",
                "--vmmio", f"{BASE:#x},size=0x1000,irq={LINE},port=0"]
        print("$ " + " ".join(args), flush=True)
        self.vm = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, bufsize=1)
        self.out, self.err = queue.Queue(), queue.Queue()
        threading.Thread(target=reader, args=(self.vm.stdout, self.out), daemon=True).start()
        threading.Thread(target=reader, args=(self.vm.stderr, self.err, "  [vm] "),
                         daemon=True).start()
        self.irqs = []
        self.dev = None

    def wait_listen(self):
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                line = self.err.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                raise SystemExit("demo: coreio-vm exited before listening")
            if line.startswith("listening on "):
                return line[len("listening on "):]
        raise SystemExit("demo: coreio-vm did not start listening in time")

    def cmd(self, line, quiet=False):
        if not quiet:
            print(f"  qtest> {line}", flush=True)
        self.vm.stdin.write(line + "\n")
        self.vm.stdin.flush()
        deadline = time.monotonic() + TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SystemExit(f"demo: no answer to '{line}'")
            try:
                ans = self.out.get(timeout=left)
            except queue.Empty:
                continue
            if ans is None:
                raise SystemExit("demo: coreio-vm exited")
            if ans.startswith("IRQ "):
                self.irqs.append(ans)
                print(f"  qtest< {ans}", flush=True)
                continue
            if not quiet:
                print(f"  qtest< {ans}", flush=True)
            if not ans.startswith("OK"):
                raise SystemExit(f"demo: '{line}' failed: {ans}")
            return ans[3:]

    def wait_irq(self, what):
        deadline = time.monotonic() + TIMEOUT
        while what not in self.irqs:
            if time.monotonic() > deadline:
                raise SystemExit(f"demo: no '{what}'")
            try:
                ans = self.out.get(timeout=0.1)
            except queue.Empty:
                continue
            if ans is None:
                raise SystemExit("demo: coreio-vm exited")
            print(f"  qtest< {ans}", flush=True)
            self.irqs.append(ans)
        self.irqs.remove(what)

    def close(self):
        for p in (self.dev, self.vm):
            if p and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def run_kvm():
    """Boot the dma test guest; returns its exit status."""
    vm_exe = os.path.join(BUILD, "src/vm/coreio-vm")
    guest = os.path.join(BUILD, "tests/guests/dma.elf")
    dev = os.path.join(BUILD, "examples/coreio-timerdma")
    args = [vm_exe, "--accel", "kvm", "--kernel", guest, "--mem", "64M",
            "--vmmio", f"{BASE:#x},size=0x1000,irq={LINE},port=0"]
    print("$ " + " ".join(args), flush=True)
    vm = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, bufsize=1)
    err = queue.Queue()
    threading.Thread(target=reader, args=(vm.stderr, err, "  [vm] "), daemon=True).start()
    model = None
    try:
        deadline = time.monotonic() + TIMEOUT
        addr = None
        while addr is None:
            try:
                line = err.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise SystemExit("demo: coreio-vm did not start listening in time")
            if line is None:
                raise SystemExit("demo: coreio-vm exited before listening")
            if line.startswith("listening on "):
                addr = line[len("listening on "):]
        print(f"$ {dev} {addr}", flush=True)
        model = subprocess.Popen([dev, addr])
        for line in iter(vm.stdout.readline, ""):
            say("  [guest] " + line.rstrip("\n"))
        status = vm.wait(timeout=120)
    finally:
        for p in (model, vm):
            if p and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    print(f"demo: guest exited with status {status}")
    print("demo: SUCCESS" if status == 0 else "demo: FAILED", flush=True)
    return 0 if status == 0 else 1


def run_qtest():
    s = Session()
    try:
        addr = s.wait_listen()
        dev = os.path.join(BUILD, "examples/coreio-timerdma")
        print(f"$ {dev} {addr}", flush=True)
        s.dev = subprocess.Popen([dev, addr])
        s.cmd("vmmio_wait 0 5000")
        ident = int(s.cmd(f"readl {BASE:#x}"), 16)
        print(f"device ID register: {ident:#x}")
        s.cmd("irq_intercept_in ioapic")

        print("-- DMA: copy 100 bytes inside guest RAM, done by the device model")
        data = bytes((i * 37 + 11) & 0xFF for i in range(100))
        src, dst = 0x1001, 0x20003
        s.cmd(f"write {src:#x} {len(data)} 0x{data.hex()}")
        s.cmd(f"writeq {BASE + 0x18:#x} {src:#x}")
        s.cmd(f"writeq {BASE + 0x20:#x} {dst:#x}")
        s.cmd(f"writel {BASE + 0x28:#x} {len(data)}")
        s.cmd(f"writel {BASE + 0x04:#x} 0x2")
        s.cmd(f"writel {BASE + 0x2c:#x} 0x1")
        s.wait_irq(f"IRQ raise {LINE}")
        status = int(s.cmd(f"readl {BASE + 0x0c:#x}"), 16)
        got = bytes.fromhex(s.cmd(f"read {dst:#x} {len(data)}")[2:])
        print(f"status {status:#x}; destination {'matches' if got == data else 'DIFFERS'}")
        s.cmd(f"writel {BASE + 0x0c:#x} 0x7")
        s.wait_irq(f"IRQ lower {LINE}")

        print("-- timer: 20 ms period with its interrupt enabled")
        s.cmd(f"writel {BASE + 0x08:#x} 20000")
        s.cmd(f"writel {BASE + 0x04:#x} 0x3")
        s.wait_irq(f"IRQ raise {LINE}")
        s.cmd(f"writel {BASE + 0x04:#x} 0x0")
        s.cmd(f"writel {BASE + 0x0c:#x} 0x7")
        ticks = int(s.cmd(f"readl {BASE + 0x10:#x}"), 16)
        print(f"timer ticked {ticks} time(s)")
        print(s.cmd("stats"))
        ok = got == data and status & 2 and ident == 0x434F5254 and ticks >= 1
        print("demo: SUCCESS" if ok else "demo: FAILED", flush=True)
        return 0 if ok else 1
    finally:
        s.close()


def main():
    global BUILD
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build", help="meson build directory (default: build)")
    ap.add_argument("--qtest", action="store_true",
                    help="play the CPU with a qtest script even where KVM works")
    args = ap.parse_args()
    BUILD = args.build
    if not args.qtest:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from kvmcheck import kvm_unavailable

        why = kvm_unavailable()
        if why is None:
            return run_kvm()
        print(f"demo: KVM unavailable ({why}); a qtest script plays the CPU instead",
              flush=True)
    return run_qtest()


if __name__ == "__main__":
    sys.exit(main())
