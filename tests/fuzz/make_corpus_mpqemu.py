#!/usr/bin/env python3
"""Generate the seed corpus of fuzz_mpqemu (tests/fuzz/corpus/mpqemu/): QEMU 7.2 proxy messages
(x-pci-proxy-dev) as coreio-vm --accel mpqemu receives them, and malformed ones
(docs/qemu-proxy.md, "The mpqemu messages").

Each message is preceded by one byte of the fds that came with it (fuzz_mpqemu.c): bits 0-3
their count, bit 4 "more were dropped".

The outputs are committed; run this again after changing it:
    python3 tests/fuzz/make_corpus_mpqemu.py
"""
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_corpus import write_dir  # noqa: E402

SYNC_SYSMEM, RET, PCI_CFGWRITE, PCI_CFGREAD, BAR_WRITE, BAR_READ, SET_IRQFD, DEVICE_RESET = range(8)
LOST = 0x10


def msg(cmd, data=b"", fds=0, size=None, pad=0):
    return bytes([fds]) + struct.pack("<IIQ", cmd, pad, len(data) if size is None else size) + data


def sysmem(regions, nfds=None, fill=0):
    """regions: (gpa, size, offset) tuples; the unused slots hold fill bytes."""
    gpas = [r[0] for r in regions] + [fill] * (8 - len(regions))
    sizes = [r[1] for r in regions] + [fill] * (8 - len(regions))
    offs = [r[2] for r in regions] + [fill] * (8 - len(regions))
    data = struct.pack("<8Q8Q8Q", *gpas, *sizes, *offs)
    return msg(SYNC_SYSMEM, data, len(regions) if nfds is None else nfds)


def conf(cmd, addr, val, length):
    return msg(cmd, struct.pack("<IIi", addr, val, length))


def bar(cmd, addr, val, size, memory=1):
    return msg(cmd, struct.pack("<QQIB3x", addr, val, size, memory))


def files():
    m512 = 512 << 20
    f = {
        "sysmem_q35": sysmem([(0, m512, 0)]),
        "sysmem_none": sysmem([]),
        "sysmem_eight": sysmem([(i << 30, 1 << 30, i << 12) for i in range(8)]),
        "sysmem_split": sysmem([(0, 0xa0000, 0), (0xc0000, m512 - 0xc0000, 0xc0000)]),
        "sysmem_garbage_slots": sysmem([(0x100000, 0x1000, 0)], fill=0xFFFFFFFFFFFFFFFF),
        "sysmem_zero_size": sysmem([(0, 0, 0)]),
        "sysmem_wraps": sysmem([(0xFFFFFFFFFFFFF000, 0x1000, 0)]),
        "sysmem_top": sysmem([(0xFFFFFFFFFFFFE000, 0x1000, 0x7FFFFFFFFFFFF000)]),
        "sysmem_negative_offset": sysmem([(0, 0x1000, 0x8000000000000000)]),
        "sysmem_offset_wraps": sysmem([(0, 0x8000000000000001, 0x7FFFFFFFFFFFFFFF)]),
        "sysmem_overlap": sysmem([(0x10000, 0x10000, 0), (0x1FFFF, 0x10, 0)]),
        "sysmem_contains": sysmem([(0x10000, 0x1000, 0), (0x30000, 0x1000, 0),
                                   (0, 0x100000, 0)]),
        "sysmem_nine_fds": sysmem([(0, 0x1000, 0)], nfds=9),
        "sysmem_fds_lost": sysmem([(0, 0x1000, 0)], nfds=8 | LOST),
        "sysmem_short": msg(SYNC_SYSMEM, bytes(100), 1),
        "cfgread_vendor": conf(PCI_CFGREAD, 0, 0, 4),
        "cfgread_byte": conf(PCI_CFGREAD, 0x3d, 0, 1),
        "cfgwrite_bar0": conf(PCI_CFGWRITE, 0x10, 0xFFFFFFFF, 4),
        "cfgwrite_command": conf(PCI_CFGWRITE, 0x04, 0x0406, 2),
        "cfg_bad_len": conf(PCI_CFGWRITE, 0x04, 0, -1),
        "cfg_with_fd": msg(PCI_CFGREAD, struct.pack("<IIi", 0, 0, 4), 1),
        "cfg_long": msg(PCI_CFGREAD, bytes(16)),
        "bar_read": bar(BAR_READ, 0xFEBF0000, 0, 4),
        "bar_write": bar(BAR_WRITE, 0xFEBF2004, 0x0102030405060708, 8),
        "bar_io": bar(BAR_READ, 0xC000, 0, 2, memory=0),
        "bar_odd_memory": bar(BAR_WRITE, 0xFEBF0000, 1, 1, memory=0x80),
        "bar_size3": bar(BAR_WRITE, 0xFEBF0000, 1, 3),
        "bar_two_fds": msg(BAR_READ, struct.pack("<QQIB3x", 0, 0, 4, 1), 2),
        "set_irqfd": msg(SET_IRQFD, fds=2),
        "set_irqfd_one_fd": msg(SET_IRQFD, fds=1),
        "set_irqfd_lost": msg(SET_IRQFD, fds=2 | LOST),
        "reset": msg(DEVICE_RESET),
        "reset_with_data": msg(DEVICE_RESET, bytes(8)),
        "ret": msg(RET, struct.pack("<Q", 0)),
        "unknown_cmd": msg(99),
        "negative_cmd": msg(0xFFFFFFFF),
        "size_too_big": msg(SYNC_SYSMEM, size=4096),
        "size_huge": msg(BAR_READ, size=0xFFFFFFFFFFFFFFFF),
        "padding_set": msg(DEVICE_RESET, pad=0xFFFFFFFF),
        "cut_short": msg(BAR_READ, struct.pack("<QQ", 0, 0), size=24),
        "header_short": msg(DEVICE_RESET)[:10],
        "empty": b"",
    }
    # What the proxy sends from realize to a driver's first accesses.
    f["qemu_realize"] = b"".join(f[k] for k in (
        "set_irqfd", "reset", "sysmem_q35", "cfgread_vendor", "cfgwrite_bar0", "cfgread_vendor",
        "cfgwrite_command", "sysmem_q35", "bar_read", "bar_write", "reset"))
    return f


def main():
    print("corpus/mpqemu: %d files" % write_dir("mpqemu", files()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
