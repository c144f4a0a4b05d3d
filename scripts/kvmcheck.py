#!/usr/bin/env python3
"""Tells whether /dev/kvm can run coreio-vm guests: prints why not and exits 1, or exits 0.

Also imported by the demo, the benchmarks and the KVM tests (kvm_unavailable()).
"""
import fcntl
import os
import sys

KVM_GET_API_VERSION = 0xAE00  # _IO(KVMIO, 0x00)
KVM_CREATE_VM = 0xAE01  # _IO(KVMIO, 0x01)


def kvm_unavailable():
    """None if /dev/kvm can create a VM, else the reason why not."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return "cannot open /dev/kvm read-write: %s" % e
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION, 0)
        if version != 12:
            return "KVM_GET_API_VERSION returned %d, not 12" % version
        vmfd = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        os.close(vmfd)
    except OSError as e:
        return "KVM ioctl failed on /dev/kvm: %s" % e
    finally:
        os.close(fd)
    return None


if __name__ == "__main__":
    why = kvm_unavailable()
    print("KVM usable" if why is None else "KVM unavailable: " + why)
    sys.exit(0 if why is None else 1)
