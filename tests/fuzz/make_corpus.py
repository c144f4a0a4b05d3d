#!/usr/bin/env python3
"""Generate the seed corpora of the fuzz harnesses (tests/fuzz/corpus/<harness>/).

The outputs are committed; run this again after changing it:
    python3 tests/fuzz/make_corpus.py
Frames follow docs/protocol.md; the virtq layout is the one fuzz_virtq.c documents.
"""
import os
import shutil
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

UNIT = 64
MAX_UNITS = 256
MAX_MSG = UNIT * MAX_UNITS
LARGE_PIECE = MAX_MSG - UNIT
MAGIC = 0x3178456F4965726F

PING, READ, WRITE, READP, WRITEP, WRITEA, WRITEAP = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
LREAD, LWRITE, IRQ_UPDATE, SHM_MAP, RGN_CLAIM, RESET = 0x21, 0x25, 0x41, 0x50, 0xF0, 0xFF


def frame(op, iface=0, extra=0, error=False, origin=False, tag=0, size=0, sid=0, flags=0,
          mask=0, addr=0, words=(), data=b"", total=None):
    """One frame: header words, then words from w[3] on, or raw data from byte 24."""
    w0 = iface | (extra << 8) | (int(error) << 30) | (int(origin) << 31) | (tag << 32)
    w1 = op | ((size & 0x3F) << 16) | ((sid & 0xF) << 24) | ((flags & 0xF) << 28) | (mask << 32)
    body = struct.pack("<QQQ", w0, w1, addr)
    body += b"".join(struct.pack("<Q", w & 0xFFFFFFFFFFFFFFFF) for w in words) + data
    length = (extra + 1) * UNIT if total is None else total
    return (body + bytes(max(0, length - len(body))))[:length]


def extra_for(nbytes):
    return max(0, (24 + nbytes + UNIT - 1) // UNIT - 1)


def pattern(n, seed=1):
    return bytes((seed + 7 * i) & 0xFF for i in range(n))


def wire_frames():
    """Named frames of every opcode, each direction, and malformed ones."""
    f = {}
    # Hello: offer, answer, old-style plain ping, VM-originated ping.
    f["ping_plain"] = frame(PING, origin=True, tag=5, addr=0x1234)
    f["ping_vm"] = frame(PING, tag=9)
    f["hello_offer"] = frame(PING, origin=True, addr=MAGIC, words=(0, 7, 1))
    f["hello_answer"] = frame(PING, origin=True, addr=MAGIC, words=(1, 3, 1))
    f["hello_extra_units"] = frame(PING, origin=True, extra=2, addr=MAGIC, words=(0, 7, 1))
    # MMIO requests from the VM, and the client's answers.
    for size in (1, 2, 4, 8, 16, 32):
        f["read_req_%d" % size] = frame(READ, iface=1, tag=size, size=size, flags=4,
                                        addr=0xD0000000 + size)
        f["read_ans_%d" % size] = frame(READ, iface=1, tag=size, size=size,
                                        addr=0xD0000000, data=pattern(size))
        f["write_%d" % size] = frame(WRITE, size=size, mask=(1 << size) - 1 if size < 32
                                     else 0xFFFFFFFF, addr=0xD0000010, data=pattern(size))
        f["writea_%d" % size] = frame(WRITEA, size=size, mask=0, addr=0xD0000020,
                                      data=pattern(size, 3))
    f["write_partial_mask"] = frame(WRITE, size=8, mask=0b01101100, addr=0xD0000000,
                                    data=pattern(8))
    f["read_ans_error"] = frame(READ, error=True, size=4, addr=0xD0000000)
    f["writea_ans"] = frame(WRITEA, size=4, addr=0xD0000000)
    for size in (1, 4, 8, 15, 16):
        f["readp_%d" % size] = frame(READP, size=size, addr=0xD0000000, words=(0, 0x40))
        f["writep_%d" % size] = frame(WRITEP, size=size, addr=0xD0000000,
                                      data=pattern(48))
        f["writeap_%d" % size] = frame(WRITEAP, size=size, addr=0xD0000000,
                                       data=pattern(48, 9))
    f["readp_error"] = frame(READP, error=True, size=16, addr=0xD0000000)
    # Client-initiated DMA, and the VM's answers.
    f["dma_read_req"] = frame(READ, origin=True, tag=0x100, size=32, addr=0x1000)
    f["dma_read_ans"] = frame(READ, origin=True, tag=0x100, size=32, addr=0x1000,
                              data=pattern(32))
    f["dma_read_ans_error"] = frame(READ, origin=True, error=True, size=32, addr=0x1000)
    f["dma_write"] = frame(WRITEA, origin=True, size=32, addr=0x2000, data=pattern(32))
    f["dma_write_ans"] = frame(WRITEA, origin=True, size=32, addr=0x2000)
    f["dma_write_mid_sid"] = frame(WRITEA, origin=True, iface=3, sid=5, size=8,
                                   addr=0x2000, data=pattern(8))
    for n in (1, 100, 4096, LARGE_PIECE):
        f["lread_req_%d" % n] = frame(LREAD, origin=True, mask=n, addr=0x10000)
        f["lread_ans_%d" % n] = frame(LREAD, origin=True, mask=n, extra=extra_for(n),
                                      addr=0x10000, data=pattern(n))
        f["lwrite_%d" % n] = frame(LWRITE, origin=True, mask=n, extra=extra_for(n),
                                   addr=0x20000, data=pattern(n, 5))
    f["lwrite_ans"] = frame(LWRITE, origin=True, mask=LARGE_PIECE, addr=0x20000)
    f["lread_ans_error"] = frame(LREAD, origin=True, error=True, mask=4096, addr=0x10000)
    # IRQs, claims, reset.
    f["irq_up"] = frame(IRQ_UPDATE, iface=2, origin=True, addr=1, words=(1,))
    f["irq_down"] = frame(IRQ_UPDATE, iface=2, origin=True, addr=1, words=(0,))
    f["irq_big_iid"] = frame(IRQ_UPDATE, origin=True, addr=0x100000000, words=(5,))
    f["claim"] = frame(RGN_CLAIM, iface=1, origin=True, tag=77)
    f["claim_ack"] = frame(RGN_CLAIM, iface=1, origin=True, tag=77)
    f["claim_nack_ebusy"] = frame(RGN_CLAIM, iface=1, origin=True, error=True, tag=77,
                                  words=(16,))
    f["claim_nack_bad_errno"] = frame(RGN_CLAIM, origin=True, error=True, words=(99999,))
    f["reset"] = frame(RESET)
    # SHM_MAP: a region, an empty map, and broken fields.
    f["shm_map"] = frame(SHM_MAP, tag=2, addr=0x0, words=(0x4000000, 0, 0, 2, 1))
    f["shm_map_second"] = frame(SHM_MAP, tag=2, addr=0x100000000,
                                words=(0x1000000, 0x4000000, 1, 2, 2))
    f["shm_map_empty"] = frame(SHM_MAP, tag=3, words=(0, 0, 0, 3, 0))
    f["shm_map_index_high"] = frame(SHM_MAP, words=(0x1000, 0, 2, 1, 2))
    f["shm_map_wraps"] = frame(SHM_MAP, addr=0xFFFFFFFFFFFFF000, words=(0x2000, 0, 0, 1, 1))
    f["shm_map_count_high"] = frame(SHM_MAP, words=(0x1000, 0, 0, 1, 17))
    f["shm_map_extra"] = frame(SHM_MAP, extra=1, words=(0x1000, 0, 0, 1, 1))
    # Malformed: sizes out of range, unknown opcodes, wrong origins.
    f["read_size0"] = frame(READ, size=0)
    f["read_size33"] = frame(READ, size=33)
    f["readp_size17"] = frame(READP, size=17)
    f["lwrite_len0"] = frame(LWRITE, origin=True, mask=0)
    f["lwrite_too_long"] = frame(LWRITE, origin=True, mask=LARGE_PIECE + 1, extra=255)
    f["lwrite_short_frame"] = frame(LWRITE, origin=True, mask=4096, extra=10)
    f["unknown_op"] = frame(0x77)
    f["write_from_client"] = frame(WRITE, origin=True, size=4)
    f["max_size_ping"] = frame(PING, extra=255, origin=True)
    return f


def write_dir(name, files):
    d = os.path.join(CORPUS, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for fname, data in sorted(files.items()):
        with open(os.path.join(d, fname), "wb") as fh:
            fh.write(data)
    return len(files)


def corpus_wire():
    files = dict(wire_frames())
    files["truncated_header"] = bytes(5)
    files["truncated_unit"] = frame(READ, size=4)[:40]
    files["truncated_extra"] = frame(LWRITE, origin=True, mask=200, extra=3,
                                     data=pattern(200))[:150]
    files["trailing_bytes"] = frame(READ, size=4) + b"\x01\x02\x03"
    files["two_frames"] = frame(PING, origin=True) + frame(RESET)
    files["empty"] = b""
    return files


def corpus_stream():
    fr = wire_frames()
    seeds = {
        "small_frames": (0x0000000000000002, ["ping_plain", "read_req_4", "write_8", "irq_up",
                                              "claim", "reset", "readp_16"]),
        "small_frames_fds": (0x0000000000000003, ["shm_map", "shm_map_second", "ping_plain",
                                                  "shm_map_empty"]),
        "large_frames": (0x1234567890ABCDEE, ["lwrite_4096", "lread_ans_100", "dma_write",
                                              "lwrite_%d" % LARGE_PIECE]),
    }
    files = {}
    for name, (seed, names) in seeds.items():
        files[name] = struct.pack("<Q", seed) + b"".join(fr[n] for n in names)
    # More than the 128 KiB reassembly buffer of max-size frames: the buffer must compact.
    big = fr["lwrite_%d" % LARGE_PIECE]
    files["max_frames_overflow_buffer"] = struct.pack("<Q", 0xA5A5A5A5A5A5A5A4) + big * 10
    files["max_frames_fds"] = struct.pack("<Q", 0x5A5A5A5A5A5A5A5B) + big * 3 + fr["reset"]
    # A stream that ends inside a frame, and one with junk lengths.
    files["ends_mid_frame"] = struct.pack("<Q", 0x42) + fr["ping_plain"] + fr["lwrite_4096"][:999]
    files["ends_mid_header"] = struct.pack("<Q", 0x43) + fr["reset"] + b"\x00\x03\x00"
    files["junk"] = struct.pack("<Q", 0x99) + pattern(3000, 77)
    files["seed_only"] = struct.pack("<Q", 7)
    return files


def corpus_target():
    sun_path = 108
    strings = {
        "ipv4_port": "127.0.0.1:4300",
        "host_port": "localhost:4800",
        "host_only": "vmhost",
        "ipv6_port": "[::1]:4300",
        "ipv6_brackets": "[fe80::1%eth0]",
        "ipv6_bare": "fe80::1",
        "unix": "unix:/tmp/coreio.sock",
        "unix_relative": "unix:sock",
        "unix_empty": "unix:",
        "unix_longest": "unix:/" + "p" * (sun_path - 2),
        "unix_too_long": "unix:/" + "p" * (sun_path - 1),
        "port_empty": "host:",
        "port_zero": "host:0",
        "port_max": "host:65535",
        "port_too_big": "host:65536",
        "port_leading_zeros": "host:00080",
        "port_not_decimal": "host:0x50",
        "port_six_digits": "host:123456",
        "bracket_unclosed": "[::1",
        "bracket_junk": "[::1]x",
        "bracket_empty": "[]:80",
        "host_longest": "h" * 255 + ":1",
        "host_too_long": "h" * 256,
        "colon_only": ":",
        "empty": "",
        "embedded_nul": "host\0:80",
        "host_named_unix": "unix",
        "host_named_unix_port": "[unix]:80",
        "tls-v4": "tls:127.0.0.1:4300",
        "tls-v6": "tls:[::1]",
    }
    return {k: v.encode() for k, v in strings.items()}


# fuzz_virtq.c input: header, register accesses, guest memory.
F_PCI, F_INDIRECT, F_VERBOSE, F_POST, F_TWO_QUEUES = 0x01, 0x02, 0x04, 0x08, 0x10
C_READ, C_WRITE, C_POST, C_ON_ERROR = 0x01, 0x02, 0x04, 0x08
NEXT, WRITE_F, INDIRECT = 1, 2, 4


def desc(addr, length, flags=0, nxt=0):
    return struct.pack("<QIHH", addr, length, flags, nxt)


def virtq(flags=0, qsize=8, d=0x1000, a=0x1100, u=0x1200, hi=0, pops=16,
          ops=C_READ | C_WRITE, regs=(), mem=None):
    hdr = bytes([flags]) + struct.pack("<HHHH", qsize, d, a, u)
    hdr += bytes([hi, pops, ops, len(regs)])
    body = b"".join(struct.pack("<HBB", off, length - 1, wr) + struct.pack("<Q", val)
                    for off, length, wr, val in regs)
    # The harness zero-fills guest memory past the input: trailing zeros need no bytes.
    return hdr + body + bytes(mem or b"").rstrip(b"\0")


def guest(qsize, descs, heads, d=0x1000, a=0x1100, tables=(), size=0x3000):
    """Guest memory with descriptors at d, the avail ring at a with heads published."""
    m = bytearray(size)
    for i, ds in descs.items():
        m[d + 16 * i:d + 16 * i + 16] = ds
    struct.pack_into("<HH", m, a, 0, len(heads) & 0xFFFF)
    for k, h in enumerate(heads):
        struct.pack_into("<H", m, a + 4 + 2 * (k % qsize), h)
    for addr, blob in tables:
        m[addr:addr + len(blob)] = blob
    return bytes(m)


def corpus_virtq():
    chain = {0: desc(0x2000, 16, NEXT, 1), 1: desc(0x2100, 64, WRITE_F | NEXT, 2),
             2: desc(0x2200, 1, WRITE_F)}
    simple = guest(8, chain, [0])
    ind_table = desc(0x2000, 16, NEXT, 1) + desc(0x2100, 32, WRITE_F)
    indirect = guest(8, {0: desc(0x2800, len(ind_table), INDIRECT)}, [0],
                     tables=[(0x2800, ind_table)])
    many = guest(8, {i: desc(0x2000 + 0x40 * i, 32, WRITE_F) for i in range(8)},
                 list(range(8)))
    linux = guest(16, {0: desc(0x2000, 8, NEXT, 1), 1: desc(0x2010, 8, WRITE_F)}, [0],
                  d=0x1000, a=0x1000 + 16 * 16)
    files = {
        "mmio_simple": virtq(mem=simple),
        "pci_simple": virtq(flags=F_PCI, mem=simple),
        "mmio_posted": virtq(flags=F_POST | F_VERBOSE, ops=C_READ | C_POST | C_ON_ERROR | 0x30,
                             mem=simple),
        "pci_posted_two_queues": virtq(flags=F_PCI | F_POST | F_TWO_QUEUES, ops=C_POST,
                                       mem=simple),
        "indirect": virtq(flags=F_INDIRECT, mem=indirect),
        "indirect_not_negotiated": virtq(mem=indirect),
        "full_ring": virtq(mem=many),
        "full_ring_one_pop": virtq(pops=1, mem=many),
        "linux_layout": virtq(qsize=16, a=0x1000 + 16 * 16, u=0x1400, mem=linux),
        "loop": virtq(mem=guest(8, {0: desc(0x2000, 4, NEXT, 1), 1: desc(0x2000, 4, NEXT, 0)},
                                [0])),
        "head_out_of_range": virtq(mem=guest(8, chain, [9])),
        "avail_jump": virtq(mem=guest(8, chain, [0] * 9)),
        "read_after_write": virtq(mem=guest(8, {0: desc(0x2000, 4, WRITE_F | NEXT, 1),
                                               1: desc(0x2000, 4)}, [0])),
        "buffer_outside_memory": virtq(mem=guest(8, {0: desc(0xFFFFFFF0, 64, WRITE_F)}, [0])),
        "address_wraps": virtq(mem=guest(8, {0: desc(0xFFFFFFFFFFFFFFF0, 64)}, [0])),
        "ring_outside_memory": virtq(hi=0x01, mem=simple),
        "bad_queue_size": virtq(qsize=6, mem=simple),
        "queue_too_big": virtq(qsize=512, mem=simple),
        "misaligned_ring": virtq(d=0x1004, mem=simple),
        "registers_mmio": virtq(mem=simple, regs=[
            (0x070, 4, 0, 0), (0x050, 4, 1, 0), (0x064, 4, 1, 1), (0x030, 4, 1, 1),
            (0x044, 4, 0, 0), (0x100, 4, 1, 0x11223344), (0x104, 32, 1, 0xFFFFFFFFFFFFFFFF),
            (0x070, 4, 1, 0), (0x0FC, 1, 0, 0)]),
        "registers_pci": virtq(flags=F_PCI, mem=simple, regs=[
            (0x1000, 1, 0, 0), (0x2000, 2, 1, 0), (0x0016, 2, 1, 1), (0x001C, 2, 0, 0),
            (0x3004, 8, 1, 0x0102030405060708), (0x0014, 1, 1, 0), (0x0000, 32, 0, 0),
            (0x3FFF, 4, 1, 5)]),
        "reset_mid_run": virtq(flags=F_POST, ops=C_POST, mem=many, regs=[
            (0x070, 4, 1, 0), (0x070, 4, 1, 3)]),
        "adjacent_buffers": virtq(mem=guest(8, {0: desc(0x2000, 16, WRITE_F | NEXT, 1),
                                               1: desc(0x2010, 16, WRITE_F | NEXT, 2),
                                               2: desc(0x2020, 16, WRITE_F)}, [0])),
        # 1024 descriptors (read in windows) and more than 256 chains published at once.
        "large_queue": virtq(qsize=1024, d=0x4000, a=0x8000, u=0x9000, pops=255,
                             mem=guest(1024, {i: desc(0x2000 + 4 * (i % 64), 4, WRITE_F)
                                              for i in range(0, 1024, 3)},
                                       [(3 * k) % 1024 for k in range(300)],
                                       d=0x4000, a=0x8000, size=0xB000)),
        "empty": b"",
    }
    return files


def main():
    counts = {
        "wire": write_dir("wire", corpus_wire()),
        "stream": write_dir("stream", corpus_stream()),
        "target": write_dir("target", corpus_target()),
        "virtq": write_dir("virtq", corpus_virtq()),
    }
    # The QEMU-side parsers' seeds come from their own modules, written the same way.
    import make_corpus_mpqemu
    import make_corpus_vfu
    counts["mpqemu"] = write_dir("mpqemu", make_corpus_mpqemu.files())
    counts["vfu"] = write_dir("vfu", make_corpus_vfu.files())
    for k, v in counts.items():
        print("corpus/%s: %d files" % (k, v))
    return 0


if __name__ == "__main__":
    sys.exit(main())
