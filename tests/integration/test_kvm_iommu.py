"""The iommu test guest under --accel kvm: its IOMMU driver maps buffers for coreio-timerdma."""

import os
import sys

import pytest

from conftest import TIMERDMA, guest_vm

# A vCPU thread programs the IOMMU while the I/O thread translates DMA: also run under TSan.
pytestmark = pytest.mark.concurrency

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from kvmcheck import kvm_unavailable  # noqa: E402

_reason = kvm_unavailable()
if _reason:
    pytest.skip("KVM unavailable: %s" % _reason, allow_module_level=True)

R0 = 0xD0000000
IOMMU = "id=1,base=0xfd000000,irq=9"
GUEST_TIMEOUT = 90


def test_iommu_guest_driver(env):
    """Mapped copies across pages, read-only and unmapped faults with the interrupt, IOTLB."""
    vm = guest_vm(env, "iommu", "%#x,size=0x1000,irq=5,port=0,iommu=1,sid=2" % R0,
                  append="iommu=0xfd000000 irq=9 sid=2", extra=["--iommu", IOMMU])
    env.proc(TIMERDMA, "--mid", "1", "--sid", "2", vm.listening[0])
    out = vm.expect_success(GUEST_TIMEOUT)
    assert "iommu: fault 1 addr=0x40020010 sid=2 write=1 reason=2 ok" in out
    assert "iommu: fault 2 addr=0x40030008 sid=2 write=0 reason=1 ok" in out
    assert "iommu: invalidation ok" in out


def test_iommu_guest_direct_refused(env):
    """A model doing direct DMA on a range bound to the IOMMU reaches nothing."""
    vm = guest_vm(env, "iommu", "%#x,size=0x1000,irq=5,port=0,iommu=1,sid=2" % R0,
                  append="iommu=0xfd000000 irq=9 sid=0 expect=refused", extra=["--iommu", IOMMU])
    env.proc(TIMERDMA, vm.listening[0])
    out = vm.expect_success(GUEST_TIMEOUT)
    assert any("reason=7 ok" in l for l in out)
