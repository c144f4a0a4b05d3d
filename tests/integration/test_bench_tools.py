"""The pieces the benchmarks stand on: testclient dma_bench / irq_on_write and the bench guests."""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import R0, TESTCLIENT, build_path, fnv64, guest_vm, seed_pattern
from test_mmio import ev_parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from kvmcheck import kvm_unavailable  # noqa: E402

_kvm_reason = kvm_unavailable()
needs_kvm = pytest.mark.skipif(_kvm_reason is not None, reason="KVM unavailable: %s" % _kvm_reason)

DATA = 0x100000


def parse(answer):
    """'ns=... count=... fnv=...' (client.ok() drops the OK) as a dict of strings."""
    return dict(x.split("=", 1) for x in answer.split())


@pytest.mark.parametrize("opts", [(), ("--no-caps",)], ids=["caps", "nocaps"])
def test_dma_bench_write_then_read(env, opts):
    vm = env.vm("%#x,size=0x1000,port=0" % R0)
    c = env.client(vm.target(0), *opts)
    n = 5000
    w = parse(c.ok("dma_bench 0 0 %#x %d 3 write 9" % (DATA, n), timeout=60))
    assert int(w["count"]) == 3 and int(w["ns"]) > 0
    assert int(w["fnv"], 16) == fnv64(seed_pattern(9, n))
    assert vm.ok("read %#x 16" % DATA) == "0x" + seed_pattern(9, 16).hex()
    r = parse(c.ok("dma_bench 0 0 %#x %d 2 read" % (DATA, n), timeout=60))
    assert r["fnv"] == w["fnv"]


def test_dma_bench_errors(env):
    vm = env.vm("%#x,size=0x1000,port=0" % R0, mem="16M")
    c = env.client(vm.target(0))
    assert c.err("dma_bench 0 0 0x1000 0 1 read") == -22
    assert c.err("dma_bench 0 0 0x1000 16 1 sideways") == -22
    assert c.err("dma_bench 0 0 0x1000 16 0 read") == -22
    # Outside guest RAM: the transfer fails, reported as an error, not timed.
    assert c.err("dma_bench 0 0 %#x 4096 2 write 1" % (16 << 20)) == -14


def test_irq_on_write_pulses_the_line(env):
    vm = env.vm("%#x,size=0x1000,irq=5:6,port=0" % R0)
    vm.ok("irq_intercept_in ioapic")
    c = env.client(vm.target(0))
    c.ok("irq_on_write 0 0x10 1")
    c.ok("register 0")
    vm.wait_claim(0)
    vm.ok("writel %#x 7" % (R0 + 0x14))  # not the doorbell
    vm.no_irq()
    for _ in range(3):
        vm.ok("writel %#x 1" % (R0 + 0x10))
        assert vm.wait_irq() == ("raise", 6)
        assert vm.wait_irq() == ("lower", 6)
    assert c.err("irq_on_write 9 0x10 0") == -22


def test_testclient_busy_poll_serves_the_same(env):
    """--busy-poll changes how the test client waits, not what it answers."""
    vm = env.vm("%#x,size=0x1000,port=0" % R0)
    c = env.client(vm.target(0), "--busy-poll", "300")
    c.ok("register 0")
    vm.wait_claim(0)
    for i in range(50):
        vm.ok("writel %#x %#x" % (R0 + 4 * (i % 16), i * 0x01010101))
        assert vm.value("readl %#x" % (R0 + 4 * (i % 16))) == i * 0x01010101
    w = parse(c.ok("dma_bench 0 0 %#x 4096 2 write 5" % DATA, timeout=60))
    assert int(w["fnv"], 16) == fnv64(seed_pattern(5, 4096))


@pytest.mark.parametrize("bad", ["-1", "10001", "x", ""])
def test_testclient_busy_poll_bad_values(env, bad):
    p = subprocess.run([build_path(TESTCLIENT), "--busy-poll", bad, "unix:/nonexistent"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    assert p.returncode == 2 and "bad --busy-poll" in p.stderr, p.stderr


@needs_kvm
@pytest.mark.parametrize("opts", ["writes=posted", "writes=acked", "coalesce=on"])
def test_bench_write_guest(env, opts):
    s = "unix:%s" % (env.tmp_path / "w.sock")
    vm = guest_vm(env, "bench_write", "%#x,size=0x1000,port=%s,%s" % (R0, s, opts),
                  append="addr=%#x n=200" % (R0 + 0x20))
    c = env.client(s)
    c.ok("register 0")
    out = vm.expect_success(60)
    assert any(re.match(r"BENCH mmio_write ns_per_op=\d+ n=200 flush_ns=\d+$", l) for l in out)
    assert c.ok("peek 0 0x20 4") == "c8000000"


@needs_kvm
def test_bench_write_guest_detects_lost_writes(env):
    """A client that drops writes (bus error on the offset) makes the read-back check fail."""
    s = "unix:%s" % (env.tmp_path / "w.sock")
    vm = guest_vm(env, "bench_write", "%#x,size=0x1000,port=%s" % (R0, s),
                  append="addr=%#x n=50" % (R0 + 0x20))
    c = env.client(s)
    c.ok("poke 0 0x20 01000000")
    c.ok("fail 0 0x21")
    c.ok("register 0")
    rc, out = vm.finish(60)
    assert rc == 1 and out[-1].startswith("FAILURE: read back"), out


@needs_kvm
def test_coalesced_writes_arrive_complete_and_in_order(env):
    """coalesce=on: every write of the guest's burst reaches the client once, in order, before the read-back."""
    n = 1500  # more than KVM's ring holds (about 170 entries of a 4 KiB page)
    s = "unix:%s" % (env.tmp_path / "w.sock")
    vm = guest_vm(env, "bench_write", "%#x,size=0x1000,port=%s,coalesce=on" % (R0, s),
                  append="addr=%#x n=%d" % (R0 + 0x20, n))
    c = env.client(s)
    c.ok("log on")
    c.ok("register 0")
    vm.expect_success(120)
    evs = [ev_parse(e) for e in c.take_events() if e.split()[0] in ("read", "write")]
    writes = [e for e in evs if e[0] == "write"]
    # The warm-up write of 0, then 1..n, each once and in order.
    assert [e[4] for e in writes] == [i.to_bytes(4, "little").hex() for i in range(n + 1)]
    assert all(e[2] == R0 + 0x20 and e[3] == 4 for e in writes)
    # The read-back comes after the last write.
    reads = [i for i, e in enumerate(evs) if e[0] == "read"]
    assert reads and reads[-1] > evs.index(writes[-1])


@needs_kvm
def test_coalesced_doorbell_without_exit_is_delivered(env):
    """The bench_irq guest rings a coalesce=on doorbell, then spins at CPL 3 without an
    exit: only coreio-vm's drain timer can deliver the write; a stuck doorbell fails it."""
    s = "unix:%s" % (env.tmp_path / "i.sock")
    vm = guest_vm(env, "bench_irq", "%#x,size=0x1000,irq=5,port=%s,coalesce=on" % (R0, s),
                  append="n=20 doorbell=0x10")
    c = env.client(s)
    c.ok("irq_on_write 0 0x10 0")
    c.ok("register 0")
    out = vm.expect_success(60)
    assert any(re.match(r"BENCH irq ns_per_op=\d+ min_ns=\d+ n=20$", l) for l in out), out


@needs_kvm
def test_bench_irq_guest(env):
    s = "unix:%s" % (env.tmp_path / "i.sock")
    vm = guest_vm(env, "bench_irq", "%#x,size=0x1000,irq=5,port=%s" % (R0, s),
                  append="n=100 doorbell=0x10")
    c = env.client(s)
    c.ok("irq_on_write 0 0x10 0")
    c.ok("register 0")
    out = vm.expect_success(60)
    assert any(re.match(r"BENCH irq ns_per_op=\d+ min_ns=\d+ n=100$", l) for l in out), out
    assert any(re.match(r"BENCH invmm_rt ns_per_op=\d+ min_ns=\d+ n=100$", l) for l in out), out


@needs_kvm
def test_bench_irq_guest_fails_without_interrupts(env):
    """No irq_on_write armed: the guest reports the missing interrupt and fails."""
    s = "unix:%s" % (env.tmp_path / "i.sock")
    vm = guest_vm(env, "bench_irq", "%#x,size=0x1000,irq=5,port=%s" % (R0, s), append="n=3")
    c = env.client(s)
    c.ok("register 0")
    rc, out = vm.finish(60)
    assert rc == 1 and "did not arrive within 5 s" in out[-1], out


@needs_kvm
def test_bench_mmio_expect(env):
    vm = guest_vm(env, "bench_mmio", append="n=100 expect=0x54534554")
    out = vm.expect_success(60)
    assert any(l.startswith("BENCH mmio_read ns_per_op=") for l in out)
    vm = guest_vm(env, "bench_mmio", append="n=100 expect=0x1")
    rc, out = vm.finish(60)
    assert rc == 1 and out[-1] == "FAILURE: 100 of 100 reads did not return 0x1", out


BASELINES = "bench/coreio-baselines"


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_baselines_pieces(transport):
    """The reference-style 32-byte pieces baseline moves whole transfers and says how much."""
    p = subprocess.run([build_path(BASELINES), "pieces", transport, "--size", "5000",
                        "--total", "20000"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["what"] == "pieces" and r["transport"] == transport
    assert r["size"] == 5000 and r["bytes"] == 20000 and r["mb_per_s"] > 0


def test_baselines_pingpong_pinned():
    """--cpus pins both ends; the line says where they ran."""
    cpu = min(os.sched_getaffinity(0))
    p = subprocess.run([build_path(BASELINES), "pingpong", "unix", "--n", "200", "--cpus",
                        "%d,%d" % (cpu, cpu)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["what"] == "pingpong" and r["n"] == 200 and r["cpus"] == [cpu, cpu]
    assert r["ns_per_op"] > 0


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_baselines_stream_best_of_sizes(transport):
    """stream --sizes: one stream per write size, the line gives the fastest and all of them."""
    p = subprocess.run([build_path(BASELINES), "stream", transport, "--sizes", "4096,65536,262144",
                        "--total", str(1 << 20)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["what"] == "stream" and r["transport"] == transport
    assert sorted(r["by_size"]) == ["262144", "4096", "65536"]
    assert r["mb_per_s"] == max(r["by_size"].values()) > 0
    assert r["by_size"][str(r["size"])] == r["mb_per_s"] and r["bytes"] % r["size"] == 0


@pytest.mark.parametrize("argv", [["pieces", "udp"], ["pieces", "tcp", "--size", "0"],
                                  ["stream", "tcp", "--sizes", "4096,0"],
                                  ["stream", "tcp", "--sizes", "4096,x"],
                                  ["pingpong", "tcp", "--cpus", "1"],
                                  ["pingpong", "tcp", "--cpus", "-1,0"],
                                  ["pieces", "tcp", "--size", "8", "--total", "4"], ["bogus"]])
def test_baselines_bad_arguments(argv):
    p = subprocess.run([build_path(BASELINES)] + argv, capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "coreio-baselines" in p.stderr, p.stderr


BENCH_READ = re.compile(r"ns=(\d+) count=(\d+) value=0x([0-9a-f]{16})$")


def test_bench_read_through_a_client(served):
    """qtest bench_read (bench/mmio_qtest.py): COUNT reads reach the client, each one logged."""
    vm, c = served
    c.ok("poke 0 0x40 78563412")
    c.ok("log on")
    m = BENCH_READ.match(vm.ok("bench_read %#x 4 37" % (R0 + 0x40), timeout=30))
    assert m, m
    assert int(m.group(1)) > 0 and int(m.group(2)) == 37 and int(m.group(3), 16) == 0x12345678
    reads = [ev_parse(e) for e in c.take_events() if e.startswith("read ")]
    assert reads == [("read", 0, R0 + 0x40, 4, "78563412", 0)] * 37
    # The session goes on: the next command is read and answered.
    assert vm.value("readl %#x" % (R0 + 0x40)) == 0x12345678


def test_bench_read_ram_unhandled_and_errors(served):
    vm, c = served
    vm.ok("writeq 0x1000 0x1122334455667788")
    m = BENCH_READ.match(vm.ok("bench_read 0x1000 8 1000"))
    assert m and int(m.group(2)) == 1000 and int(m.group(3), 16) == 0x1122334455667788
    assert BENCH_READ.match(vm.ok("bench_read 0x1002 2 3")).group(3) == "%016x" % 0x5566
    # Nobody answers 0xf0000000: every read counts as unhandled, so all COUNT were done.
    before = vm.stats()["unhandled_reads"]
    m = BENCH_READ.match(vm.ok("bench_read 0xf0000000 4 250"))
    assert int(m.group(3), 16) == 0xFFFFFFFF
    assert vm.stats()["unhandled_reads"] - before == 250
    # The client fails the third byte: the first read already ends the run.
    c.ok("fail 0 0x82")
    assert vm.qtest("bench_read %#x 4 10" % (R0 + 0x80)) == "FAIL bus-error after 0 of 10 reads"
    assert vm.qtest("bench_read %#x 4 1" % (R0 + 0xFFFE)) == \
        "FAIL bus-error straddle after 0 of 1 reads"
    for bad in ("bench_read 0x1000 3 1", "bench_read 0x1000 4 0", "bench_read x 4 1"):
        assert vm.qtest(bad).startswith("FAIL bad argument"), bad
    assert vm.qtest("bench_read 0x1000 4").startswith("FAIL missing argument")
