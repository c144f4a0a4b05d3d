#!/usr/bin/env python3
"""Generate the seed corpus of fuzz_vfu (tests/fuzz/corpus/vfu/): vfio-user messages as QEMU's
vfio-user-pci sends them, and malformed ones (docs/coreio-vm.md, "vfio-user").

The outputs are committed; run this again after changing it:
    python3 tests/fuzz/make_corpus_vfu.py
"""
import json
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_corpus import write_dir  # noqa: E402


def msg(cmd, payload=b"", msg_id=1, flags=0, size=None):
    return struct.pack("<HHIII", msg_id, cmd, 16 + len(payload) if size is None else size,
                       flags, 0) + payload


def files():
    caps = json.dumps({"capabilities": {"max_msg_fds": 16, "max_data_xfer_size": 1048576,
                                        "pgsizes": 4096, "max_dma_maps": 65535,
                                        "migration": {"pgsize": 4096}}}).encode() + b"\0"
    f = {
        "version_qemu": msg(1, struct.pack("<HH", 0, 1) + caps),
        "version_bare": msg(1, struct.pack("<HH", 0, 0)),
        "version_bad_json": msg(1, struct.pack("<HH", 0, 1) + b"{\"capabilities\": [1, {\0"),
        "version_no_nul": msg(1, struct.pack("<HH", 0, 1) + b"{}"),
        "version_escapes": msg(1, struct.pack("<HH", 0, 1)
                               + b"{\"a\\u0041\":[\"\\n\\\"\",-1.5e-3,true,null]}\0"),
        "dma_map": msg(2, struct.pack("<IIQQQ", 32, 3, 0, 0x100000, 0x100000)),
        "dma_map_wraps": msg(2, struct.pack("<IIQQQ", 32, 3, 0, 0xFFFFFFFFFFFFF000, 0x2000)),
        "dma_unmap": msg(3, struct.pack("<IIQQ", 24, 0, 0x100000, 0x100000)),
        "dma_unmap_all": msg(3, struct.pack("<IIQQ", 24, 2, 0, 0)),
        "get_info": msg(4, struct.pack("<IIII", 16, 0, 0, 0)),
        "region_info": msg(5, struct.pack("<IIIIQQ", 32, 0, 7, 0, 0, 0)),
        "irq_info": msg(7, struct.pack("<IIII", 16, 0, 2, 0)),
        "set_irqs_eventfd": msg(8, struct.pack("<IIIII", 20, 0x24, 2, 0, 8)),
        "set_irqs_bool": msg(8, struct.pack("<IIIII", 22, 0x0A, 2, 1, 2) + b"\1\0"),
        "set_irqs_bad_flags": msg(8, struct.pack("<IIIII", 20, 0x3F, 0, 0, 1)),
        "region_read_cfg": msg(9, struct.pack("<QII", 0, 7, 256)),
        "region_write_bar0": msg(10, struct.pack("<QII", 0x10, 0, 4) + b"\1\2\3\4"),
        "region_write_short": msg(10, struct.pack("<QII", 0x10, 0, 4000) + b"\1\2\3\4"),
        "reset": msg(13),
        "header_too_small": msg(4, size=8),
        "header_huge": msg(10, struct.pack("<QII", 0, 0, 8), size=0xFFFFFFFF),
        "empty": b"",
    }
    f["qemu_realize"] = b"".join(f[k] for k in ("version_qemu", "get_info", "region_info",
                                               "irq_info", "region_read_cfg", "dma_map",
                                               "set_irqs_eventfd", "reset"))
    return f


def main():
    print("corpus/vfu: %d files" % write_dir("vfu", files()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
