"""The vCPU that waits for a client reads the answer itself; busy-polling on both sides (kvm).

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


@pytest.mark.parametrize("bad", ["poll=spin", "poll=busy:0", "poll=busy:99999", "poll=busy:x"])
def test_bad_poll_option_refused(bad):
    r = subprocess.run([build_path("src/vm/coreio-vm"), "--accel", "qtest",
                        "--vmmio", "0xd0000000,size=0x1000,port=0,%s" % bad],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
    assert r.returncode == 2, r
    assert "poll=" in r.stderr
