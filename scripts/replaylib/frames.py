"""CoreIO frames for coreio-replay: decoding into one line, masking the fields that differ run to run, comparing."""

import struct

UNIT = 64
MAX_FRAME = 256 * UNIT

OP_PING = 0x00
OP_READ = 0x01
OP_WRITE = 0x02
OP_READP = 0x03
OP_WRITEP = 0x04
OP_WRITEA = 0x05
OP_WRITEAP = 0x06
OP_LREAD = 0x21
OP_LWRITE = 0x25
OP_IRQ_UPDATE = 0x41
OP_SHM_MAP = 0x50
OP_RGN_CLAIM = 0xF0
OP_RESET = 0xFF

OP_NAMES = {
    OP_PING: "PING", OP_READ: "READ", OP_WRITE: "WRITE", OP_READP: "READP",
    OP_WRITEP: "WRITEP", OP_WRITEA: "WRITEA", OP_WRITEAP: "WRITEAP", OP_LREAD: "LREAD",
    OP_LWRITE: "LWRITE", OP_IRQ_UPDATE: "IRQ_UPDATE", OP_SHM_MAP: "SHM_MAP",
    OP_RGN_CLAIM: "RGN_CLAIM", OP_RESET: "RESET",
}

ERROR_BIT = 1 << 30
ORIGIN_BIT = 1 << 31
TAG_MASK = 0xFFFFFFFF << 32
MAGIC = 0x3178456F4965726F
CAP_LARGE_DMA = 1
CAP_CLAIM_ACK = 2
CAP_SHM = 4

# Recording kinds (the 16-byte record header of docs/record-replay.md).
KIND_TO_VM = 0
KIND_FROM_VM = 1
KIND_EVENT = 2


def frame_len(first_word):
    """Length in bytes of the frame whose w[0] is first_word: (E + 1) * 64."""
    return (((first_word >> 8) & 0xFF) + 1) * UNIT


def word(frame, i):
    """Word i of frame (0 when the frame is shorter)."""
    off = i * 8
    if off + 8 > len(frame):
        return 0
    return struct.unpack_from("<Q", frame, off)[0]


def set_word(frame, i, value):
    """A copy of frame (bytes) with word i replaced."""
    b = bytearray(frame)
    struct.pack_into("<Q", b, i * 8, value & 0xFFFFFFFFFFFFFFFF)
    return bytes(b)


def check_frame(body):
    """None if body is exactly one whole frame, else what is wrong with it."""
    if len(body) < UNIT:
        return "%d bytes, shorter than a 64-byte unit" % len(body)
    n = frame_len(word(body, 0))
    if n != len(body):
        return "%d bytes, but its header says E = %d (%d bytes)" % (
            len(body), (word(body, 0) >> 8) & 0xFF, n)
    return None


def tag(frame):
    return word(frame, 0) >> 32


def origin(frame):
    return bool(word(frame, 0) & ORIGIN_BIT)


def op(frame):
    return word(frame, 1) & 0xFF


def with_tag(frame, t):
    """A copy of frame with tag t in w[0] bits 32..63."""
    w0 = word(frame, 0)
    return set_word(frame, 0, (w0 & ~TAG_MASK) | ((t & 0xFFFFFFFF) << 32))


def is_hello(frame):
    """True for a hello (a PING carrying the extension magic in w[2])."""
    return op(frame) == OP_PING and word(frame, 2) == MAGIC


def _hexdata(b, limit=32):
    s = b[:limit].hex()
    if len(b) > limit:
        s += "...(%d bytes)" % len(b)
    return s


def describe(frame, kind=None):
    """One line describing a CoreIO frame, for reports; kind (KIND_TO_VM or
    KIND_FROM_VM, when known) decides whether an LREAD/LWRITE shows its data."""
    if len(frame) < UNIT:
        return "short frame of %d bytes: %s" % (len(frame), frame.hex())
    w0, w1, addr = word(frame, 0), word(frame, 1), word(frame, 2)
    o = w1 & 0xFF
    name = OP_NAMES.get(o, "op%#x" % o)
    iface = w0 & 0xFF
    extra = (w0 >> 8) & 0xFF
    t = w0 >> 32
    org = "client-origin" if w0 & ORIGIN_BIT else "vm-origin"
    err = " ERROR" if w0 & ERROR_BIT else ""
    size = (w1 >> 16) & 0x3F
    sid = (w1 >> 24) & 0xF
    flags = (w1 >> 28) & 0xF
    mask = w1 >> 32
    head = "%s iface %d tag %#x %s%s E %d" % (name, iface, t, org, err, extra)
    if o == OP_PING and addr == MAGIC:
        kind = {0: "offer", 1: "answer"}.get(word(frame, 3), "kind %d" % word(frame, 3))
        return "%s hello %s caps %#x version %d" % (head, kind, word(frame, 4), word(frame, 5))
    if o == OP_IRQ_UPDATE:
        return "%s iid %d level %d" % (head, addr, word(frame, 3))
    if o == OP_RGN_CLAIM:
        return head + (" errno %d" % word(frame, 3) if w0 & ERROR_BIT else "")
    if o == OP_SHM_MAP:
        return "%s gpa %#x size %#x offset %#x index %d gen %d count %d" % (
            head, addr, word(frame, 3), word(frame, 4), word(frame, 5), word(frame, 6),
            word(frame, 7))
    if o in (OP_LREAD, OP_LWRITE):
        s = "%s sid %d flags %d len %d addr %#x" % (head, sid, flags, mask, addr)
        carries = (o == OP_LREAD) == (kind == KIND_FROM_VM) if kind is not None else (
            len(frame) > UNIT or o == OP_LWRITE)
        if carries:
            s += " data " + _hexdata(frame[24:24 + mask] if mask else frame[24:])
        return s
    if o in (OP_READ, OP_WRITE, OP_WRITEA, OP_READP, OP_WRITEP, OP_WRITEAP):
        s = "%s size %d sid %d flags %d mask %#x addr %#x" % (head, size, sid, flags, mask, addr)
        n = min(size, 32) or 8
        data = frame[24:24 + n]
        if o in (OP_READP, OP_WRITEP, OP_WRITEAP):
            off = (4 + size // 8) * 8
            data2 = frame[off:off + min(size, 16)]
            return s + " data %s %s" % (_hexdata(data), _hexdata(data2))
        return s + " data " + _hexdata(data)
    return "%s addr %#x w3 %#x" % (head, addr, word(frame, 3))


def first_difference(expected, received):
    """Where two frames differ, as text ("w[3]: expected 0x.. got 0x..."), or None."""
    if len(expected) != len(received):
        return "length: expected %d bytes, got %d" % (len(expected), len(received))
    for i in range(len(expected) // 8):
        a, b = word(expected, i), word(received, i)
        if a != b:
            names = {0: "w[0] (header)", 1: "w[1] (op/size/mask)", 2: "w[2] (address)"}
            return "%s: expected %#018x got %#018x" % (names.get(i, "w[%d]" % i), a, b)
    return None


def masked(frame, client_side):
    """frame with the fields that legitimately differ between runs zeroed.

    client_side: the frame was sent by the client (model). Masked there: the tag of
    frames the client starts (origin 1: claims, IRQ updates, DMA, hello, pings), which
    the client chooses, and the SHM capability bit of a hello offer (offered only on
    UNIX targets, never granted while recording). Sent by the VM: the tag of frames the
    VM starts (origin 0: MMIO requests, RESET), which the VM chooses, and the SHM bit
    of a hello answer."""
    w0 = word(frame, 0)
    out = frame
    if client_side == bool(w0 & ORIGIN_BIT):
        out = set_word(out, 0, w0 & ~TAG_MASK)
    if is_hello(frame):
        out = set_word(out, 4, word(frame, 4) & ~CAP_SHM)
    return out


def compare(expected, received, client_side):
    """None if received matches the recorded frame expected (after masking), else the difference."""
    if len(expected) != len(received):
        return first_difference(expected, received)
    return first_difference(masked(expected, client_side), masked(received, client_side))


# --- DMA of a device model, for the guest-memory image of replay.GuestImage ------------
DMA_READ = "read"
DMA_WRITE = "write"


def dma_request(frame):
    """(direction, mid, sid, addr, length) of a client's DMA request (origin 1: READ,
    LREAD, WRITEA, LWRITE), else None. direction is DMA_READ or DMA_WRITE; mid is the
    IOMMU id (w[0] bits 0..7, 0 = guest-physical), sid the IOMMU region id."""
    if len(frame) < UNIT or not origin(frame):
        return None
    w1 = word(frame, 1)
    o = w1 & 0xFF
    if o in (OP_LREAD, OP_LWRITE):
        n = w1 >> 32
    elif o in (OP_READ, OP_WRITEA):
        n = (w1 >> 16) & 0x3F
    else:
        return None
    d = DMA_READ if o in (OP_LREAD, OP_READ) else DMA_WRITE
    return d, word(frame, 0) & 0xFF, (w1 >> 24) & 0xF, word(frame, 2), n


def dma_write_bytes(frame):
    """The bytes a client's DMA write request (LWRITE, WRITEA) puts into guest memory, as
    (offset from its address, data) runs: all its data for LWRITE, the bytes its
    byte-enable mask enables for WRITEA (a mask of 0 enables all)."""
    req = dma_request(frame)
    if req is None or req[0] != DMA_WRITE:
        return []
    n = req[4]
    data = frame[24:24 + n]
    if op(frame) == OP_LWRITE:
        return [(0, data)]
    mask = word(frame, 1) >> 32
    if mask == 0:
        return [(0, data)]
    runs, start = [], None
    for b in range(len(data) + 1):
        on = b < len(data) and mask >> b & 1
        if on and start is None:
            start = b
        elif not on and start is not None:
            runs.append((start, data[start:b]))
            start = None
    return runs


def dma_read_data(answer, length):
    """The data of the VM's answer to a DMA read (READ or LREAD of length bytes), or
    None when the answer carries the error bit or is too short."""
    if word(answer, 0) & ERROR_BIT or 24 + length > len(answer):
        return None
    return bytes(answer[24:24 + length])


def dma_read_answer(request, data):
    """The VM's answer to the DMA read request (READ or LREAD, as the client sent it, with
    its tag) carrying data: the same header with E covering the data, then the data
    from w[3], zero-padded to whole units."""
    n = 24 + len(data)
    units = (n + UNIT - 1) // UNIT
    w0 = word(request, 0) & ~ERROR_BIT & ~(0xFF << 8)
    w0 |= (units - 1) << 8
    b = bytearray(units * UNIT)
    b[:24] = request[:24]
    struct.pack_into("<Q", b, 0, w0 & 0xFFFFFFFFFFFFFFFF)
    b[24:n] = data
    return bytes(b)
