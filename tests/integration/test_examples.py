"""The example device models: coreio-responder (rpi-test) and coreio-timerdma."""

import re
import subprocess
import time

from conftest import R0, RESPONDER, TIMERDMA, build_path, client_env

ID, CTRL, PERIOD, STATUS, TICKS = 0x00, 0x04, 0x08, 0x0C, 0x10
SRC, DST, LEN, CMD, BUSY = 0x18, 0x20, 0x28, 0x2C, 0x30


def test_responder(env):
    vm = env.vm("%#x,size=0x1000,port=0" % R0)
    p = env.proc(RESPONDER, vm.target(0))
    vm.wait_claim(0)
    vm.ok("writel %#x 0x12345678" % (R0 + 0x10))
    assert vm.value("readl %#x" % (R0 + 0x10)) == 0x12345678
    i, _ = p.wait_stdout(r"^write d0000010 4 0000000012345678 0$")
    p.wait_stdout(r"^read  d0000010 4 0$", start=i + 1)
    vm.ok("flags 4")
    vm.ok("writeq %#x 0x1122334455667788" % (R0 + 0xF8))
    assert vm.value("readq %#x" % (R0 + 0xF8)) == 0x1122334455667788
    p.wait_stdout(r"^write d00000f8 8 1122334455667788 4$")
    p.wait_stdout(r"^read  d00000f8 8 4$")
    # Straddling the end of the 256-byte array: the part outside reads 0, is not stored.
    vm.ok("writel %#x 0xaabbccdd" % (R0 + 0xFE))
    assert vm.value("readl %#x" % (R0 + 0xFE)) == 0xCCDD
    assert vm.value("readl %#x" % (R0 + 0x800)) == 0
    vm.ok("writel %#x 0x99" % (R0 + 0x800))
    assert vm.value("readl %#x" % (R0 + 0x800)) == 0
    # 32-byte access.
    data = bytes(range(32))
    vm.ok("write %#x 32 0x%s" % (R0 + 0x20, data.hex()))
    assert vm.ok("read %#x 32" % (R0 + 0x20)) == "0x" + data.hex()
    p.wait_stdout(r"^write d0000020 32 0706050403020100 4$")
    assert p.alive()


def test_responder_usage():
    exe = build_path(RESPONDER)
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=10, env=client_env())
    assert r.returncode == 0 and "usage" in r.stdout
    r = subprocess.run([exe], capture_output=True, text=True, timeout=10, env=client_env())
    assert r.returncode == 2 and "usage" in r.stderr
    r = subprocess.run([exe, "127.0.0.1:notaport"], capture_output=True, text=True, timeout=10,
                       env=client_env())
    assert r.returncode == 1 and "connect" in r.stderr


def wait_reg(vm, off, pred, timeout=5):
    deadline = time.monotonic() + timeout
    while True:
        v = vm.value("readl %#x" % (R0 + off))
        if pred(v):
            return v
        assert time.monotonic() < deadline, "register %#x stuck at %#x" % (off, v)
        time.sleep(0.01)


def test_timerdma_timer_irq(env):
    vm = env.vm("%#x,size=0x1000,irq=5,port=0" % R0)
    p = env.proc(TIMERDMA, "--verbose", vm.target(0))
    vm.wait_claim(0)
    vm.ok("irq_intercept_in ioapic")
    assert vm.value("readl %#x" % (R0 + ID)) == 0x434F5254
    assert vm.value("readl %#x" % (R0 + TICKS)) == 0
    vm.ok("writel %#x 2000" % (R0 + PERIOD))
    assert vm.value("readl %#x" % (R0 + PERIOD)) == 2000
    # Timer without IRQ enable: STATUS fills, the line stays low.
    vm.ok("writel %#x 1" % (R0 + CTRL))
    wait_reg(vm, STATUS, lambda v: v & 1)
    vm.no_irq(0.1)
    # IRQ enable: the line rises.
    vm.ok("writel %#x 3" % (R0 + CTRL))
    assert vm.wait_irq(5) == ("raise", 5)
    # Stop the timer, keep IRQ enable, clear STATUS (write 1): the line drops.
    vm.ok("writel %#x 2" % (R0 + CTRL))
    ticks = vm.value("readl %#x" % (R0 + TICKS))
    assert ticks >= 1
    vm.ok("writel %#x 1" % (R0 + STATUS))
    assert vm.wait_irq(5) == ("lower", 5)
    assert vm.value("readl %#x" % (R0 + STATUS)) == 0
    time.sleep(0.05)
    assert vm.value("readl %#x" % (R0 + TICKS)) == ticks
    # Ticks keep counting at most once a period while enabled.
    t0 = time.monotonic()
    vm.ok("writel %#x 1" % (R0 + CTRL))
    time.sleep(0.2)
    vm.ok("writel %#x 0" % (R0 + CTRL))
    elapsed = time.monotonic() - t0
    n = vm.value("readl %#x" % (R0 + TICKS)) - ticks
    assert 1 <= n <= elapsed / 0.002 + 1, (n, elapsed)
    assert p.alive(), p.stderr_tail()


def test_timerdma_dma(env):
    vm = env.vm("%#x,size=0x1000,irq=5,port=0" % R0)
    p = env.proc(TIMERDMA, "--rid", "0", vm.target(0))
    vm.wait_claim(0)
    vm.ok("irq_intercept_in ioapic")
    data = bytes((i * 11 + 3) & 0xFF for i in range(1000))
    vm.ok("write 0x10001 1000 0x%s" % data.hex())
    vm.ok("writeq %#x 0x10001" % (R0 + SRC))
    vm.ok("writeq %#x 0x20003" % (R0 + DST))
    vm.ok("writel %#x 1000" % (R0 + LEN))
    assert vm.value("readq %#x" % (R0 + SRC)) == 0x10001
    vm.ok("writel %#x 2" % (R0 + CTRL))  # IRQ enable
    vm.ok("writel %#x 1" % (R0 + CMD))
    assert vm.wait_irq(5) == ("raise", 5)
    assert wait_reg(vm, STATUS, lambda v: v & 6) == 2
    assert vm.value("readl %#x" % (R0 + BUSY)) == 0
    assert vm.ok("read 0x20002 1002") == "0x00" + data.hex() + "00"
    vm.ok("writel %#x 2" % (R0 + STATUS))
    assert vm.wait_irq(5) == ("lower", 5)
    # Fill.
    vm.ok("writeq %#x 0x5c" % (R0 + SRC))
    vm.ok("writeq %#x 0x30001" % (R0 + DST))
    vm.ok("writel %#x 77" % (R0 + LEN))
    vm.ok("writel %#x 2" % (R0 + CMD))
    assert vm.wait_irq(5) == ("raise", 5)
    assert wait_reg(vm, STATUS, lambda v: v & 6) == 2
    assert vm.ok("read 0x30000 79") == "0x00" + "5c" * 77 + "00"
    vm.ok("writel %#x 6" % (R0 + STATUS))
    assert vm.wait_irq(5) == ("lower", 5)
    # Errors: source outside RAM, and a length above 16 MiB.
    vm.ok("writel %#x 0" % (R0 + CTRL))
    vm.ok("writeq %#x 0x90000000" % (R0 + SRC))
    vm.ok("writel %#x 64" % (R0 + LEN))
    vm.ok("writel %#x 1" % (R0 + CMD))
    assert wait_reg(vm, STATUS, lambda v: v & 6) == 4
    vm.ok("writel %#x 4" % (R0 + STATUS))
    vm.ok("writeq %#x 0x1000" % (R0 + SRC))
    vm.ok("writel %#x %d" % (R0 + LEN, (16 << 20) + 1))
    vm.ok("writel %#x 1" % (R0 + CMD))
    assert wait_reg(vm, STATUS, lambda v: v & 6) == 4
    assert vm.ok("irq_level 5") == "0"  # IRQ enable is off
    vm.no_irq(0.1)
    assert p.alive(), p.stderr_tail()


def test_timerdma_usage():
    exe = build_path(TIMERDMA)
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=10, env=client_env())
    assert r.returncode == 0 and re.search(r"--rid", r.stdout)
    r = subprocess.run([exe, "--rid", "9", "x:1"], capture_output=True, text=True, timeout=10,
                       env=client_env())
    assert r.returncode == 2
