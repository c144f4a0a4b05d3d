"""Client lifetime: death while a request waits, claims and refusals, targets, reset, socket kinds."""

import socket
import time

import pytest

from conftest import R0, TESTCLIENT, build_path, client_env


def test_client_killed_while_read_pending(env):
    vm = env.vm("%#x,size=0x10000,irq=5:6,port=0" % R0)
    c = env.client(vm.target(0))
    c.ok("register 0")
    vm.wait_claim(0)
    vm.ok("irq_intercept_in ioapic")
    c.ok("irq 0 0 1")
    c.ok("irq 0 1 1")
    raised = {vm.wait_irq(), vm.wait_irq()}
    assert raised == {("raise", 5), ("raise", 6)}
    c.ok("stall 0 0x80")
    vm.send("readl %#x" % (R0 + 0x80))
    c.wait_event(r"^stall 0 ")
    time.sleep(0.2)
    assert vm.answers.empty(), "the read completed although the client never answered"
    t0 = time.monotonic()
    c.kill()
    # The waiting read completes as unclaimed.
    assert vm.answer(5, "answer to the pending read") == "OK 0x00000000aaaaaaaa"
    assert time.monotonic() - t0 < 5
    lowered = {vm.wait_irq(), vm.wait_irq()}
    assert lowered == {("lower", 5), ("lower", 6)}
    assert vm.info(0)["claimed"] == "0"
    assert vm.ok("readl %#x" % R0) == "0x00000000aaaaaaaa"
    # A new client claims the range and works.
    d = env.client(vm.target(0))
    d.ok("register 0")
    vm.wait_claim(0)
    d.ok("poke 0 0x80 78563412")
    assert vm.value("readl %#x" % (R0 + 0x80)) == 0x12345678
    d.ok("irq 0 0 1")
    assert vm.wait_irq() == ("raise", 5)


def test_client_exit_releases_claim(env):
    vm = env.vm("%#x,size=0x1000,port=0" % R0)
    c = env.client(vm.target(0))
    c.ok("register 0")
    vm.wait_claim(0)
    c.ok("quit")
    assert c.wait_exit(10) == 0
    deadline = time.monotonic() + 5
    while vm.info(0)["claimed"] != "0":
        assert time.monotonic() < deadline, "claim not released after the client exited"
        time.sleep(0.05)


def test_double_register_local(env):
    vm = env.vm("%#x,size=0x1000,port=0" % R0)
    c = env.client(vm.target(0))
    c.ok("register 0")
    assert c.err("register 0") == -16
    assert c.err("register 8") == -22


@pytest.mark.parametrize("opts", [(), ("--no-caps",)], ids=["caps", "nocaps"])
def test_second_client_refused(env, opts):
    vm = env.vm("%#x,size=0x1000,port=@p" % R0, "%#x,size=0x1000,port=@p" % (R0 + 0x1000))
    a = env.client(vm.target(0))
    a.ok("register 0")
    vm.wait_claim(0)
    b = env.client(vm.target(0), *opts)
    if opts:
        # Base format: no acknowledgement, the library cannot know.
        b.ok("register 0")
    else:
        assert b.err("register 0") == -16
    a.ok("poke 0 0 aa55")
    b.ok("poke 0 0 1111")
    assert vm.value("readw %#x" % R0) == 0x55AA
    assert vm.info(0)["claimed"] == "1"
    # The second client can still claim the free range on the same port.
    b.ok("register 1")
    vm.wait_claim(1)
    b.ok("poke 1 0x1000 2222")
    assert vm.value("readw %#x" % (R0 + 0x1000)) == 0x2222


def test_claim_of_missing_rid(env):
    vm = env.vm("%#x,size=0x1000,port=0" % R0)
    c = env.client(vm.target(0))
    assert c.err("register 3") == -2
    n = env.client(vm.target(0), "--no-caps")
    n.ok("register 3")  # unanswered in the base format; the VM logs and ignores it
    assert vm.info(0)["claimed"] == "0"


@pytest.mark.parametrize("target,errs", [
    ("", (-22,)),
    (":", (-22,)),
    ("127.0.0.1:notaport", (-22,)),
    ("127.0.0.1:99999", (-22,)),
    ("[::1", (-22,)),
    ("unix:", (-22,)),
    ("no-such-host.invalid:4800", (-113,)),
])
def test_bad_targets(env, target, errs):
    c = env.client(target, expect_ok=False)
    assert c.first.startswith("ERR "), c.first
    assert int(c.first.split()[1]) in errs, c.first
    assert c.wait_exit(10) == 1


def test_connection_refused(env, tmp_path):
    c = env.client("unix:%s" % (tmp_path / "nobody.sock"), expect_ok=False)
    assert c.first.split()[:2] in (["ERR", "-2"], ["ERR", "-111"]), c.first
    assert c.wait_exit(10) == 1
    # A TCP port nobody listens on (bound, not listening).
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    try:
        c = env.client("127.0.0.1:%d" % port, expect_ok=False)
        assert c.first.split()[:2] == ["ERR", "-111"], c.first
        assert c.wait_exit(10) == 1
    finally:
        s.close()


def test_target_from_environment(env):
    vm = env.vm("%#x,size=0x1000,port=0" % R0)
    c = env.client(None, env={"COREIO_VM": vm.target(0)})
    c.ok("register 0")
    vm.wait_claim(0)
    c.ok("poke 0 8 ab")
    assert vm.value("readb %#x" % (R0 + 8)) == 0xAB
    d = env.client(None, env={"COREHDL_VM": vm.target(0)})
    assert d.err("register 0") == -16
    e = env.client(None, expect_ok=False)
    assert e.first.split()[:2] == ["ERR", "-22"], e.first


def test_reset(env):
    vm = env.vm("%#x,size=0x1000,irq=5,port=0" % R0, "%#x,size=0x1000,irq=6,port=0" % (R0 + 0x1000))
    a = env.client(vm.target(0))
    b = env.client(vm.target(1))
    a.ok("register 0")
    b.ok("register 0")
    vm.wait_claim(0)
    vm.wait_claim(1)
    vm.ok("irq_intercept_in ioapic")
    a.ok("irq 0 0 1")
    assert vm.wait_irq() == ("raise", 5)
    vm.ok("reset")
    a.wait_event(r"^reset$")
    b.wait_event(r"^reset$")
    assert vm.wait_irq() == ("lower", 5)
    assert vm.ok("irq_level 5") == "0"
    # The library forgot the level it sent, so raising again makes an edge.
    a.ok("irq 0 0 1")
    assert vm.wait_irq() == ("raise", 5)
    # Claims survive a reset.
    assert vm.info(0)["claimed"] == "1"
    a.ok("poke 0 0 5a")
    assert vm.value("readb %#x" % R0) == 0x5A


def test_unix_socket_port(env, tmp_path):
    path = str(tmp_path / "vm.sock")
    vm = env.vm("%#x,size=0x1000,irq=5,port=unix:%s" % (R0, path),
                "%#x,size=0x1000,port=unix:%s" % (R0 + 0x1000, path))
    assert vm.listening == ["unix:" + path]
    c = env.client("unix:" + path)
    c.ok("register 0")
    c.ok("register 1")
    vm.wait_claim(0)
    vm.wait_claim(1)
    c.ok("poke 1 0x1004 0badf00d")
    assert vm.value("readl %#x" % (R0 + 0x1004)) == 0x0DF0AD0B
    vm.ok("write 0x3000 4 0x01020304")
    assert c.ok("dma_read 0 0 0x3000 4") .endswith("data=01020304")
    vm.ok("irq_intercept_in ioapic")
    c.ok("irq 0 0 1")
    assert vm.wait_irq() == ("raise", 5)


def ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="IPv6 loopback [::1] is not available here")
def test_ipv6_listen(env):
    vm = env.vm("%#x,size=0x1000,port=0" % R0, listen="::1")
    assert vm.listening[0].startswith("[::1]:"), vm.listening
    c = env.client(vm.listening[0])
    c.ok("register 0")
    vm.wait_claim(0)
    c.ok("poke 0 0 77")
    assert vm.value("readb %#x" % R0) == 0x77


def test_testclient_help():
    import subprocess

    r = subprocess.run([build_path(TESTCLIENT), "--help"], capture_output=True, text=True,
                       timeout=10, env=client_env())
    assert r.returncode == 0 and "usage" in r.stdout
