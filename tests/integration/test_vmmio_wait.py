"""The vCPU that waits for a client reads the answer itself; its spin (poll=) and busy-polling on both sides (kvm).

The many-vCPU case runs in test_kvm.py::test_smp, once per poll mode.
"""

import os
import re
import subprocess
import sys

import pytest

from conftest import TIMERDMA, build_path, guest_vm

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from kvmcheck import kvm_unavailable  # noqa: E402

R0 = 0xD0000000
GUEST_TIMEOUT = 60


def kvm_or_skip():
    why = kvm_unavailable()
    if why:
        pytest.skip("KVM unavailable: %s" % why)


def sock(env, name):
    return "unix:%s" % (env.tmp_path / name)


def dma_results(env, poll, client_busy):
    s = sock(env, "td.sock")
    vm = guest_vm(env, "dma", "%#x,size=0x1000,irq=5,port=%s%s" % (R0, s, poll))
    env.proc(TIMERDMA, *(["--busy-poll", str(client_busy)] if client_busy else []), s)
    out = vm.expect_success(GUEST_TIMEOUT)
    return [l for l in out if re.match(r"dma: ", l)]


def test_dma_same_with_and_without_busy_poll(env):
    """DMA and IRQs on the connection a vCPU reads: identical results, busy-poll on or off."""
    kvm_or_skip()
    plain = dma_results(env, "", 0)
    busy = dma_results(env, ",poll=busy:100", 100)
    assert "dma: copy len=4096 with interrupt ok" in plain
    assert any("error bit ok" in l for l in plain)
    assert busy == plain


TD_ID = 0x434F5254  # coreio-timerdma's ID register


def wait_summary(env, poll, n=300):
    """(waits, answered before the vCPU slept, poll text) of n guest reads served by timerdma."""
    s = sock(env, "td-%s.sock" % poll.replace(":", "-").replace("=", "-").strip(","))
    vm = guest_vm(env, "bench_mmio", "%#x,size=0x1000,port=%s%s" % (R0, s, poll),
                  append="addr=%#x n=%d expect=%#x" % (R0, n, TD_ID))
    env.proc(TIMERDMA, s)
    vm.expect_success(GUEST_TIMEOUT)  # waits for the exit, status 0
    m = vm.wait_stderr(r"range 0 at 0xd0000000: (\d+) vCPU waits for its client, (\d+) "
                       r"answered before the vCPU slept \(poll=([^)]*)\)")[0]
    return int(m.group(1)), int(m.group(2)), m.group(3)


def test_wait_summary_by_poll_mode(env):
    """The exit summary counts the vCPU's waits and the answers that came before it slept.

    poll=block may find answers without sleeping too (the client can run on the
    vCPU's core before the vCPU reaches its receive), so only the spinning modes
    are held to a share.
    """
    kvm_or_skip()
    n = 300
    waits, spun, text = wait_summary(env, "", n)
    assert text.startswith("adaptive:200, last spin ")
    assert n <= waits <= n + 10  # the guest's claim check reads the range too
    waits, spun, text = wait_summary(env, ",poll=block", n)
    assert text == "block" and n <= waits <= n + 10 and spun <= waits
    # A bound far above any answer time here: almost every answer comes while spinning.
    for poll in (",poll=busy:10000", ",poll=adaptive:10000"):
        waits, spun, text = wait_summary(env, poll, n)
        assert n <= waits <= n + 10 and spun >= waits * 9 // 10, (poll, waits, spun, text)


@pytest.mark.parametrize("bad", ["poll=spin", "poll=busy:0", "poll=busy:99999", "poll=busy:x",
                                 "poll=adaptive:0", "poll=adaptive:x"])
def test_bad_poll_option_refused(bad):
    r = subprocess.run([build_path("src/vm/coreio-vm"), "--accel", "qtest",
                        "--vmmio", "0xd0000000,size=0x1000,port=0,%s" % bad],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
    assert r.returncode == 2, r
    assert "poll=" in r.stderr
