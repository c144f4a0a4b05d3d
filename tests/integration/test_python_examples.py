"""Python programs as child processes: the examples in examples/python, a program written for the original module, installation.

Each program runs with PYTHONPATH pointing at the build's module (and, in a
sanitizer build, the sanitizer runtime preloaded), against coreio-vm.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import BUILD_DIR, R0, SANITIZE, Proc, scaled
from test_python_module import child_env, module_built

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples", "python")

pytestmark = [pytest.mark.concurrency,
              pytest.mark.skipif(not module_built(),
                                 reason="the Python module coreio is not built in %s "
                                 "(python3-dev missing, or -Dpython=disabled)" % BUILD_DIR)]

ID, CTRL, PERIOD, STATUS, TICKS = 0x00, 0x04, 0x08, 0x0C, 0x10
SRC, DST, LEN, CMD, BUSY = 0x18, 0x20, 0x28, 0x2C, 0x30


def python_proc(env, name, argv, extra_env=None):
    """Start python3 ARGV with the build's module; ended (and checked) by env."""
    p = Proc(name, [sys.executable] + argv, env=child_env(extra_env))
    env.procs.append(p)
    return p


def wait_reg(vm, off, pred, timeout=5):
    deadline = time.monotonic() + scaled(timeout)
    while True:
        v = vm.value("readl %#x" % (R0 + off))
        if pred(v):
            return v
        assert time.monotonic() < deadline, "register %#x stuck at %#x" % (off, v)
        time.sleep(0.01)


def dma_command(vm, cmd, src, dst, n):
    """Run DMA command cmd (1 copy, 2 fill) with IRQ enable on: wait for the interrupt,
    return the STATUS bits 1..2 (2 done, 4 error), clear them and see the line drop."""
    vm.ok("writeq %#x %#x" % (R0 + SRC, src))
    vm.ok("writeq %#x %#x" % (R0 + DST, dst))
    vm.ok("writel %#x %d" % (R0 + LEN, n))
    vm.ok("writel %#x %d" % (R0 + CMD, cmd))
    assert vm.wait_irq(10) == ("raise", 5)
    status = wait_reg(vm, STATUS, lambda v: v & 6) & 6
    vm.ok("writel %#x %d" % (R0 + STATUS, status))
    assert vm.value("readl %#x" % (R0 + STATUS)) == 0  # as a guest would, before its EOI
    assert vm.wait_irq(5) == ("lower", 5)
    return status


@pytest.mark.parametrize("loop", ["thread", "asyncio"])
def test_timerdma_example(env, loop):
    """examples/python/timerdma.py behaves as coreio-timerdma (test_examples.py)."""
    vm = env.vm("%#x,size=0x1000,irq=5,port=0" % R0)
    p = python_proc(env, "timerdma.py", [os.path.join(EXAMPLES, "timerdma.py"), "--loop", loop,
                                         vm.target(0)])
    vm.wait_claim(0)
    vm.ok("irq_intercept_in ioapic")
    assert vm.value("readl %#x" % (R0 + ID)) == 0x434F5254
    assert vm.value("readb %#x" % (R0 + ID + 1)) == 0x52
    # Timer: STATUS fills without IRQ enable, the line rises with it, and drops when
    # the timer stops and STATUS is cleared.
    vm.ok("writel %#x 2000" % (R0 + PERIOD))
    vm.ok("writel %#x 1" % (R0 + CTRL))
    wait_reg(vm, STATUS, lambda v: v & 1)
    vm.no_irq(0.1)
    vm.ok("writel %#x 3" % (R0 + CTRL))
    assert vm.wait_irq(5) == ("raise", 5)
    vm.ok("writel %#x 2" % (R0 + CTRL))
    ticks = vm.value("readl %#x" % (R0 + TICKS))
    assert ticks >= 1
    vm.ok("writel %#x 1" % (R0 + STATUS))
    assert vm.value("readl %#x" % (R0 + STATUS)) == 0
    assert vm.wait_irq(5) == ("lower", 5)
    time.sleep(0.05)  # no tick while the timer is off
    assert vm.value("readl %#x" % (R0 + TICKS)) == ticks
    # DMA copy of 1000 bytes between odd addresses, then a 16 MiB copy, a fill, errors.
    vm.ok("writel %#x 2" % (R0 + CTRL))  # IRQ enable, timer off
    data = bytes((i * 11 + 3) & 0xFF for i in range(1000))
    vm.ok("write 0x10001 1000 0x%s" % data.hex())
    assert dma_command(vm, 1, 0x10001, 0x20003, 1000) == 2
    assert vm.value("readq %#x" % (R0 + SRC)) == 0x10001
    assert vm.value("readl %#x" % (R0 + BUSY)) == 0
    assert vm.ok("read 0x20002 1002") == "0x00" + data.hex() + "00"
    big = 16 << 20
    for k in range(0, big, 1 << 20):  # marks every MiB of the source
        vm.ok("write %#x 8 0x%016x" % (0x1000000 + k, k * 7 + 1))
    assert dma_command(vm, 1, 0x1000000, 0x2000000, big) == 2
    for k in range(0, big, 1 << 20):
        assert vm.ok("read %#x 8" % (0x2000000 + k)) == "0x%016x" % (k * 7 + 1)
    assert dma_command(vm, 2, 0x5C, 0x30001, 77) == 2  # fill
    assert vm.ok("read 0x30000 79") == "0x00" + "5c" * 77 + "00"
    assert dma_command(vm, 1, 0x90000000, 0x1000, 64) == 4  # outside RAM: error
    assert dma_command(vm, 1, 0x1000, 0x2000, big + 1) == 4  # too long
    # Reset: every register back to 0.
    vm.ok("writel %#x 0x1234" % (R0 + PERIOD))
    vm.ok("reset")
    wait_reg(vm, PERIOD, lambda v: v == 0)
    assert vm.value("readl %#x" % (R0 + STATUS)) == 0
    assert p.alive(), p.stderr_tail()
    # SIGTERM ends it with status 0.
    p.p.terminate()
    assert p.wait_exit(10) == 0, p.stderr_tail()


def test_timerdma_example_exits_when_the_vm_goes(env):
    vm = env.vm("%#x,size=0x1000,irq=5,port=0" % R0)
    p = python_proc(env, "timerdma.py", [os.path.join(EXAMPLES, "timerdma.py"), vm.target(0)])
    vm.wait_claim(0)
    vm.stop()
    env.procs.remove(vm)
    assert p.wait_exit(10) == 1
    p.wait_stderr(r"the connection ended \(-104\)")
    r = subprocess.run([sys.executable, os.path.join(EXAMPLES, "timerdma.py"), "127.0.0.1:1"],
                       env=child_env(), capture_output=True, text=True, timeout=scaled(30))
    assert r.returncode == 1 and "connect 127.0.0.1:1: error -111" in r.stderr
    r = subprocess.run([sys.executable, os.path.join(EXAMPLES, "timerdma.py"), "--help"],
                       env=child_env(), capture_output=True, text=True, timeout=scaled(30))
    assert r.returncode == 0 and "--loop" in r.stdout


def test_slider_example_without_gui(env):
    vm = env.vm("%#x,size=0x1000,irq=5,port=0" % R0)
    p = python_proc(env, "slider.py", [os.path.join(EXAMPLES, "slider.py"), "--no-gui",
                                       vm.target(0)])
    vm.wait_claim(0)
    vm.ok("irq_intercept_in ioapic")
    for i, value in enumerate((250, 1000, 0)):
        p.send(str(value))
        assert vm.wait_irq() == ("raise", 5)
        assert vm.value("readl %#x" % (R0 + 4)) == value
        assert vm.value("readl %#x" % (R0 + 8)) == i + 1
        vm.ok("writel %#x 0" % R0)
        assert vm.wait_irq() == ("lower", 5)
    p.p.stdin.close()
    assert p.wait_exit(10) == 0, p.stderr_tail()


# A program written for the original module, after the pattern of its Tk example
# (slider-mmio.py): the original interface only, keywords as it has them, and the
# loop thread spinning on mainloop(0). Standard input stands in for the slider.
REFERENCE_PROGRAM = r'''
import sys
import threading

import coreio

shutdown = False
value = 0


def io_read(funcp, addr, buf, flags):
    if (addr & 0xff) == 4:
        buf[:] = value.to_bytes(4, "little")
    return 0


def io_write(funcp, addr, buf, flags):
    if (addr & 0xff) == 0:
        coreio.irq_update(rid=0, iid=0, state=0)
    return 0


def loop():
    while not shutdown and coreio.mainloop(0) == 0:
        pass


coreio.connect(target=sys.argv[1])
coreio.register(rid=0, read=io_read, write=io_write, funcp=None)
thread = threading.Thread(target=loop)
thread.start()
for line in sys.stdin:
    value = int(line)
    coreio.irq_update(rid=0, iid=0, state=1)
    print("moved", value, flush=True)
shutdown = True
thread.join()
'''


def test_reference_program_runs_unchanged(env, tmp_path):
    prog = tmp_path / "slider_headless.py"
    prog.write_text(REFERENCE_PROGRAM)
    vm = env.vm("%#x,size=0x1000,irq=5,port=0" % R0)
    p = python_proc(env, "slider_headless.py", [str(prog), vm.target(0)])
    vm.wait_claim(0)
    vm.ok("irq_intercept_in ioapic")
    for value in (42, 7, 0xFFFF):
        p.send(str(value))
        p.wait_stdout(r"^moved %d$" % value)
        assert vm.wait_irq() == ("raise", 5)
        assert vm.value("readl %#x" % (R0 + 4)) == value
        vm.ok("writel %#x 1" % R0)  # the guest acknowledges: the write callback lowers it
        assert vm.wait_irq() == ("lower", 5)
    p.p.stdin.close()
    assert p.wait_exit(10) == 0, p.stderr_tail()


def test_meson_install_puts_the_module_on_pythons_path(tmp_path):
    """`meson install` (default prefix /usr/local) puts the module where the Python it was
    built for looks, and the module needs no libcoreio.so."""
    dest = tmp_path / "dest"
    subprocess.run(["meson", "install", "-C", BUILD_DIR, "--destdir", str(dest), "--quiet",
                    "--tags", "python-runtime"], check=True, timeout=scaled(120),
                   capture_output=True)
    found = [os.path.join(d, f) for d, _, fs in os.walk(dest) for f in fs
             if f.startswith("coreio.") and f.endswith((".so", ".pyi"))]
    assert len(found) == 2, found
    where = os.path.dirname(found[0])
    installed_dir = "/" + os.path.relpath(where, dest)
    with open(os.path.join(BUILD_DIR, "meson-info", "intro-buildoptions.json")) as f:
        prefix = next(o["value"] for o in json.load(f) if o["name"] == "prefix")
    code = "import site, sys; print(repr(site.getsitepackages()))"
    site_dirs = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=30, check=True).stdout
    if prefix == "/usr/local" and sys.executable.startswith("/usr/bin/"):
        assert repr(installed_dir) in site_dirs, (installed_dir, site_dirs)
    so = next(f for f in found if f.endswith(".so"))
    ldd = subprocess.run(["ldd", so], capture_output=True, text=True, timeout=30).stdout
    assert "libcoreio" not in ldd, ldd
    r = subprocess.run([sys.executable, "-c", "import coreio; print(coreio.__file__)"],
                       env=dict(child_env(), PYTHONPATH=where), capture_output=True, text=True,
                       timeout=scaled(30))
    assert r.returncode == 0 and r.stdout.strip() == so, r.stderr


def test_pip_install_in_a_fresh_venv(tmp_path):
    """The README's way: a venv (Debian's python3 refuses pip in the system environment),
    pip install of the repository, nothing from the network."""
    if SANITIZE not in ("none", ""):
        pytest.skip("the pip build makes a plain module whatever the build: the plain pass "
                    "(scripts/test.sh) runs this test")
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable,
                    "-m", "venv", "--system-site-packages", str(venv)], check=True,
                   timeout=120, capture_output=True)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-index", ROOT],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    r = subprocess.run([str(venv / "bin" / "python"), "-c",
                        "import coreio, os; print(coreio.__file__); "
                        "print(os.path.exists(os.path.join(os.path.dirname(coreio.__file__), "
                        "'coreio.pyi'))); print(coreio.Context().connect('127.0.0.1:1'))"],
                       capture_output=True, text=True, timeout=60, cwd=str(tmp_path),
                       env=dict(os.environ, PYTHONPATH=""))
    assert r.returncode == 0, r.stderr
    path, stub, rc = r.stdout.split()
    assert path.startswith(str(venv)) and stub == "True" and rc == "-111", r.stdout
    for leftover in ("build", "dist"):  # the build happened outside the source tree
        assert not os.path.isdir(os.path.join(ROOT, "src", "python", leftover))
    shutil.rmtree(venv)
