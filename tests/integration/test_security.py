"""Access control of coreio-vm (docs/security.md): allow-uid=/allow-gid=, dma= windows, non-loopback warning."""

import os
import re
import subprocess

import pytest

from conftest import R0, VM_EXE, build_path, scaled
from rawclient import RawClient

OTHER_UID = os.getuid() + 4242  # a uid that is not ours (the test needs no root)


def unix_target(env, name="sec.sock"):
    return "unix:%s" % (env.tmp_path / name)


def refused(*args):
    """Run coreio-vm with a command line it must refuse; return (status, stderr)."""
    p = subprocess.run([build_path(VM_EXE), "--accel", "qtest", "--qtest", "stdio"] + list(args),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=scaled(10))
    return p.returncode, p.stderr


def exit_stderr(env, vm):
    """End vm (SIGTERM) and return all its stderr, the exit counters included."""
    env.procs.remove(vm)
    vm.stop()
    with vm.cond:
        return "\n".join(vm.stderr_lines)


# ---- allow-uid= / allow-gid= ----------------------------------------------------------


def test_uid_default_allows_own_uid(env):
    t = unix_target(env)
    vm = env.vm("%#x,size=0x1000,port=%s" % (R0, t))
    c = env.client(t)
    c.ok("register 0")
    vm.wait_claim(0)
    vm.send("writel %#x 0x1" % R0)
    assert vm.answer() == "OK"


def test_uid_refused(env):
    t = unix_target(env)
    vm = env.vm("%#x,size=0x1000,port=%s,allow-uid=%d" % (R0, t, OTHER_UID))
    before = vm.stats()
    # A real client: the VM closes before the hello, connect fails.
    c = env.client(t, expect_ok=False)
    assert c.first.startswith("ERR "), c.first
    c.wait_exit()
    vm.wait_stderr(r"unix:%s: connection from uid %d \(gid \d+, pid \d+\) refused"
                   % (re.escape(t[5:]), os.getuid()))
    # A raw socket: closed without a single frame.
    r = RawClient(t)
    try:
        assert r.closed_by_peer(timeout=5)
    finally:
        r.close()
    # Nothing of the guest was touched: the range is unclaimed, the VM runs.
    assert vm.info(0)["claimed"] == "0"
    assert vm.ok("stats") and vm.stats() == before
    assert vm.value("readl %#x" % R0) == 0xAAAAAAAA
    err = exit_stderr(env, vm)
    # The client library opens two connections, the raw client one.
    m = re.search(r"limits: .*peers_refused=(\d+)", err)
    assert m and int(m.group(1)) >= 2, err


def test_uid_allowed_by_list_and_gid(env):
    t1, t2 = unix_target(env, "a.sock"), unix_target(env, "b.sock")
    vm = env.vm("%#x,size=0x1000,port=%s,allow-uid=%d:%d" % (R0, t1, OTHER_UID, os.getuid()),
                "%#x,size=0x1000,port=%s,allow-uid=%d,allow-gid=%d"
                % (R0 + 0x1000, t2, OTHER_UID, os.getegid()))
    c1 = env.client(t1)
    c1.ok("register 0")
    c2 = env.client(t2)
    c2.ok("register 0")
    vm.wait_claim(0)
    vm.wait_claim(1)


@pytest.mark.parametrize("args,why", [
    (("--vmmio", "0xd0000000,size=4K,port=0,allow-uid=1000"), r"allow-uid= and allow-gid= need port=unix"),
    (("--vmmio", "0xd0000000,size=4K,port=unix:/tmp/x-sec.sock,allow-uid=abc"), r"bad allow-uid 'abc'"),
    (("--vmmio", "0xd0000000,size=4K,port=unix:/tmp/x-sec.sock,allow-uid=1",
      "--vmmio", "0xd0001000,size=4K,port=unix:/tmp/x-sec.sock"), r"share a port but not their allow-uid="),
    (("--vmmio", "0xd0000000,size=4K,port=unix:/tmp/x-sec.sock,shm=on,dma=none"),
     r"shm=on passes all of guest RAM"),
    (("--vmmio", "0xd0000000,size=4K,port=unix:/tmp/x-sec.sock,shm=on,dma=0x1000+4K"),
     r"shm=on passes all of guest RAM"),
    (("--vmmio", "0xd0000000,size=4K,port=0,dma=0x1000"), r"dma='0x1000' must be ram, none"),
    (("--vmmio", "0xd0000000,size=4K,port=0,dma=0x1000+0"), r"bad DMA window"),
    (("--vmmio", "0xd0000000,size=4K,port=0,dma=0xfffffffffffff000+8K"), r"bad DMA window"),
    (("--vmmio", "0xd0000000,size=4K,port=0,max-conns=0"), r"bad max-conns"),
    (("--vmmio", "0xd0000000,size=4K,port=0,timeout=x"), r"bad timeout"),
    (("--peer-timeout", "-1", "--vmmio", "0xd0000000,size=4K,port=0"), r"--peer-timeout"),
], ids=["uid-tcp", "uid-bad", "uid-disagree", "shm-dma-none", "shm-dma-win", "dma-bad",
        "dma-empty", "dma-wrap", "max-conns-0", "timeout-bad", "peer-timeout-bad"])
def test_refused_command_lines(args, why):
    rc, err = refused(*args)
    assert rc == 2, err
    assert re.search(why, err), err


# ---- dma= -------------------------------------------------------------------------------

WIN = 0x100000
WIN_SIZE = 0x10000


def dma_vm(env, policy):
    vm = env.vm("%#x,size=0x10000,irq=5,port=0,dma=%s" % (R0, policy))
    c = env.client(vm.target(0))
    c.ok("register 0")
    vm.wait_claim(0)
    return vm, c


def test_dma_windows(env):
    vm, c = dma_vm(env, "%#x+64K:0x300000+0x1000" % WIN)
    vm.ok("write %#x 4 0x01020304" % WIN)
    # Inside: both windows, reads and writes, up to the last byte.
    c.ok("dma_read 0 0 %#x 4" % WIN)
    c.ok("dma_read 0 0 %#x 16" % (WIN + WIN_SIZE - 16))
    c.ok("dma_write 0 0 0x300000 4096 3")
    faults = vm.stats()["dma_faults"]
    # Outside, and straddling either edge of a window: -EFAULT, nothing written.
    vm.ok("memset 0x200000 64 0x55")
    assert c.err("dma_write 0 0 0x200000 16 1") == -14
    assert vm.ok("read 0x200000 16") == "0x" + "55" * 16
    assert c.err("dma_read 0 0 %#x 32" % (WIN + WIN_SIZE - 16)) == -14
    assert c.err("dma_read 0 0 %#x 32" % (WIN - 16)) == -14
    assert c.err("dma_write 0 0 0x300ff0 32 1") == -14
    # A large transfer that runs past the window fails as a whole.
    assert c.err("dma_read 0 0 %#x %d" % (WIN, WIN_SIZE + 1)) == -14
    assert vm.stats()["dma_faults"] > faults
    vm.wait_stderr(r"DMA \S+ mid 0 sid 0 addr 0x200000 len 16 refused: outside the dma= policy")
    # Logged once per client (rate-limited), counted every time.
    assert len(vm.wait_stderr(r"refused: outside the dma= policy")) == 1
    # The guest keeps running and the client keeps its claim.
    assert vm.info(0)["claimed"] == "1"
    c.ok("dma_read 0 0 %#x 4" % WIN)
    err = exit_stderr(env, vm)
    m = re.search(r"limits: dma_refused=(\d+)", err)
    assert m and int(m.group(1)) >= 5, err


def test_dma_windows_compose_with_the_iommu(env):
    """mid > 0: the IOMMU translates, then the window is checked on the address it gave."""
    from iommu_helpers import FCTL, Iommu, PageTables
    base, pool, iova = 0xFD000000, 0x800000, 0x40000000
    inside, outside = WIN + 0x2000, 0x600000  # physical pages the IOMMU maps
    vm = env.vm("%#x,size=0x10000,irq=5,port=0,dma=%#x+64K" % (R0, WIN),
                extra=["--iommu", "id=1,base=%#x,irq=9" % base])
    vm.ok("irq_intercept_in ioapic")
    c = env.client(vm.target(0))
    c.ok("register 0")
    vm.wait_claim(0)
    mmu, pt = Iommu(vm, base), PageTables(vm, pool)
    mmu.wr(FCTL, 1)
    pt.map_range(iova, [inside, outside])
    mmu.context(0, pt.root)
    # IOVA page 0 maps inside the window: both allow.
    c.ok("dma_write 1 0 %#x 64 7" % iova)
    assert vm.ok("read %#x 4" % inside) != "0x00000000"
    # IOVA page 1 maps outside it: the IOMMU allows, the window refuses.
    vm.ok("memset %#x 64 0x55" % outside)
    assert c.err("dma_write 1 0 %#x 64 7" % (iova + 0x1000)) == -14
    assert vm.ok("read %#x 4" % outside) == "0x55555555"
    # An IOVA the IOMMU does not map fails at the IOMMU, window or not.
    assert c.err("dma_read 1 0 %#x 4" % (iova + 0x5000)) == -14
    assert vm.info(0)["claimed"] == "1"


def test_dma_none(env):
    vm, c = dma_vm(env, "none")
    assert c.err("dma_read 0 0 0x100000 4") == -14
    assert c.err("dma_write 0 0 0x100000 4 1") == -14
    assert vm.stats()["dma_faults"] == 2
    err = exit_stderr(env, vm)
    assert re.search(r"limits: dma_refused=2\b", err), err


def test_dma_ram_default(env):
    vm, c = dma_vm(env, "ram")
    c.ok("dma_read 0 0 0x200000 64")
    assert vm.stats()["dma_faults"] == 0


# ---- plain TCP on a non-loopback address -----------------------------------------------

WARN = r"warning: port \S+ listens on the non-loopback address"


def test_listen_any_warns(env):
    vm = env.vm("%#x,size=0x1000,port=0" % R0, listen="0.0.0.0")
    vm.wait_stderr(WARN + r" 0\.0\.0\.0 in plain TCP")


def test_listen_loopback_quiet(env):
    vm = env.vm("%#x,size=0x1000,port=0" % R0, "%#x,size=0x1000,port=unix:%s"
                % (R0 + 0x1000, env.tmp_path / "q.sock"), listen="127.0.0.1")
    vm.ok("stats")
    err = exit_stderr(env, vm)
    assert not re.search(WARN, err), err

