"""Reader of coreio-vm recordings (`coreio-vm --record FILE`): pcapng, format v1.

docs/record-replay.md describes the format. Standard library only. Use:

    interfaces, records = read(path)

interfaces: dict interface id -> {"name": str, "description": str}
records:    list of Record in file order (one per Enhanced Packet Block).

Anything malformed raises RecordingError with the byte offset and what is
wrong (truncated block, bad magic, bad length, unknown version, ...).
"""
import struct

__all__ = ["RecordingError", "Record", "read", "parse",
           "KIND_FROM_CLIENT", "KIND_TO_CLIENT", "KIND_EVENT", "EVENT_NAMES",
           "LINKTYPE_USER0", "RECORD_MAGIC", "RECORD_VERSION", "HEADER_LEN"]

LINKTYPE_USER0 = 147
RECORD_MAGIC = 0x43  # 'C'
RECORD_VERSION = 1
HEADER_LEN = 16

KIND_FROM_CLIENT = 0  # a CoreIO frame the client sent (client -> VM)
KIND_TO_CLIENT = 1    # a CoreIO frame the VM sent (VM -> client)
KIND_EVENT = 2        # an event of the VM

FLAG_FD = 1  # the frame carried a file descriptor (SHM_MAP)

EVENT_NAMES = {1: "connect", 2: "close", 3: "claim", 4: "release", 5: "bus-error",
               6: "iommu-fault", 7: "reset", 8: "inject", 9: "dma-refused", 10: "note"}

_SHB = 0x0A0D0D0A
_IDB = 0x00000001
_EPB = 0x00000006
_SPB = 0x00000003
_BOM = 0x1A2B3C4D


class RecordingError(Exception):
    """A recording that is not a valid coreio-vm pcapng file; the message names the offset."""

    def __init__(self, offset, what):
        super().__init__("recording: offset %d: %s" % (offset, what))
        self.offset = offset
        self.what = what


class Record:
    """One record (one EPB): a CoreIO frame either way, or a VM event."""

    __slots__ = ("kind", "conn", "seq", "flags", "ts_ns", "iface", "body",
                 "event_type", "event_text", "offset")

    def __init__(self, kind, conn, seq, flags, ts_ns, iface, body, offset=0):
        self.kind = kind
        self.conn = conn
        self.seq = seq
        self.flags = flags
        self.ts_ns = ts_ns
        self.iface = iface
        self.body = body
        self.event_type = None
        self.event_text = None
        self.offset = offset  # of its EPB in the file

    @property
    def event_name(self):
        """The event's name ("claim", ...) for kind 2, else None."""
        if self.kind != KIND_EVENT:
            return None
        return EVENT_NAMES.get(self.event_type, "event%d" % self.event_type)

    def event_fields(self):
        """The key=value pairs of an event's text as a dict (kind 2 only)."""
        out = {}
        for tok in (self.event_text or "").split(" ")[1:]:
            if "=" in tok:
                k, v = tok.split("=", 1)
                out[k] = v
        return out

    def words(self):
        """The frame's 64-bit little-endian words (kind 0/1)."""
        n = len(self.body) // 8
        return list(struct.unpack_from("<%dQ" % n, self.body, 0))

    def __repr__(self):
        if self.kind == KIND_EVENT:
            what = "event %d %r" % (self.event_type, self.event_text)
        else:
            what = "%s frame %d bytes" % ("c->vm" if self.kind == 0 else "vm->c", len(self.body))
        return "Record(seq=%d conn=%d %s)" % (self.seq, self.conn, what)


def _options(data, off, end, base):
    """Options from data[off:end] as a list of (code, value bytes)."""
    opts = []
    while off + 4 <= end:
        code, length = struct.unpack_from("<HH", data, off)
        if code == 0:
            break
        vend = off + 4 + length
        if vend > end:
            raise RecordingError(base + off, "option %d of length %d runs past its block"
                                 % (code, length))
        opts.append((code, bytes(data[off + 4:vend])))
        off = off + 4 + ((length + 3) & ~3)
    return opts


def _tsres_ns(val, offset):
    """(multiplier, divisor) turning ticks of if_tsresol val into ns."""
    if val & 0x80:
        e = val & 0x7F
        return (10 ** 9, 1 << e)
    if val > 18:
        raise RecordingError(offset, "if_tsresol %d out of range" % val)
    if val <= 9:
        return (10 ** (9 - val), 1)
    return (1, 10 ** (val - 9))


def parse(data):
    """As read(), from the file's bytes."""
    data = memoryview(bytes(data))
    n = len(data)
    interfaces = {}
    tsres = {}
    records = []
    off = 0
    seen_shb = False
    last_seq = None
    if n == 0:
        raise RecordingError(0, "empty file")
    while off < n:
        if n - off < 12:
            raise RecordingError(off, "truncated block header (%d bytes left)" % (n - off))
        btype, blen = struct.unpack_from("<II", data, off)
        if not seen_shb and btype != _SHB:
            raise RecordingError(off, "bad magic 0x%08x: not a pcapng file" % btype)
        if btype == _SHB:
            (bom,) = struct.unpack_from("<I", data, off + 8)
            if bom != _BOM:
                if bom == 0x4D3C2B1A:
                    raise RecordingError(off + 8, "big-endian pcapng section (coreio "
                                         "recordings are little-endian)")
                raise RecordingError(off + 8, "bad byte-order magic 0x%08x" % bom)
        if blen < 12 or blen % 4:
            raise RecordingError(off + 4, "bad block length %d" % blen)
        if blen > n - off:
            raise RecordingError(off, "truncated block: type 0x%x says %d bytes, %d left"
                                 % (btype, blen, n - off))
        (trail,) = struct.unpack_from("<I", data, off + blen - 4)
        if trail != blen:
            raise RecordingError(off + blen - 4, "bad length: trailing %d != leading %d"
                                 % (trail, blen))
        body = off + 8
        bend = off + blen - 4
        if btype == _SHB:
            if blen < 28:
                raise RecordingError(off + 4, "bad length %d for a section header" % blen)
            major, minor = struct.unpack_from("<HH", data, body + 4)
            if major != 1:
                raise RecordingError(body + 4, "unknown pcapng version %d.%d" % (major, minor))
            if seen_shb:
                # A new section: interface numbering restarts (we never write one).
                interfaces.clear()
                tsres.clear()
            seen_shb = True
            opts = _options(data, body + 16, bend, 0)
            comments = [v.decode("utf-8", "replace") for c, v in opts if c == 1]
            for c in comments:
                if c.startswith("coreio recording v"):
                    try:
                        ver = int(c[len("coreio recording v"):].split()[0])
                    except (ValueError, IndexError):
                        raise RecordingError(off, "bad version comment %r" % c)
                    if ver != RECORD_VERSION:
                        raise RecordingError(off, "unknown recording version %d" % ver)
        elif btype == _IDB:
            if blen < 20:
                raise RecordingError(off + 4, "bad length %d for an interface block" % blen)
            (linktype,) = struct.unpack_from("<H", data, body)
            if linktype != LINKTYPE_USER0:
                raise RecordingError(body, "interface linktype %d, not USER0 (147)" % linktype)
            opts = _options(data, body + 8, bend, 0)
            iid = len(interfaces)
            info = {"name": "", "description": ""}
            tsres[iid] = (1000, 1)  # default: microseconds
            for code, val in opts:
                if code == 2:
                    info["name"] = val.decode("utf-8", "replace")
                elif code == 3:
                    info["description"] = val.decode("utf-8", "replace")
                elif code == 9 and len(val) >= 1:
                    tsres[iid] = _tsres_ns(val[0], off)
            interfaces[iid] = info
        elif btype == _EPB:
            if blen < 32:
                raise RecordingError(off + 4, "bad length %d for a packet block" % blen)
            iface, tsh, tsl, caplen, origlen = struct.unpack_from("<IIIII", data, body)
            if iface not in interfaces:
                raise RecordingError(body, "packet on undeclared interface %d" % iface)
            pdata = body + 20
            if caplen > bend - pdata:
                raise RecordingError(body + 12, "bad length: captured length %d runs past "
                                     "its block" % caplen)
            if origlen != caplen:
                raise RecordingError(body + 16, "bad length: original length %d != captured "
                                     "%d" % (origlen, caplen))
            mul, div = tsres[iface]
            ts_ns = ((tsh << 32) | tsl) * mul // div
            records.append(_record(data, pdata, caplen, iface, ts_ns, off, last_seq))
            last_seq = records[-1].seq
        # Other blocks (statistics, name resolution, ...) are skipped.
        off += blen
    return interfaces, records


def _record(data, p, caplen, iface, ts_ns, block_off, last_seq):
    if caplen < HEADER_LEN:
        raise RecordingError(p, "bad length: record of %d bytes, shorter than its header"
                             % caplen)
    magic, version, kind, flags, conn, seq = struct.unpack_from("<BBBBIQ", data, p)
    if magic != RECORD_MAGIC:
        raise RecordingError(p, "bad magic 0x%02x in record header" % magic)
    if version != RECORD_VERSION:
        raise RecordingError(p + 1, "unknown record version %d" % version)
    if kind > KIND_EVENT:
        raise RecordingError(p + 2, "unknown record kind %d" % kind)
    if last_seq is not None and seq <= last_seq:
        raise RecordingError(p + 8, "seq %d not above the previous %d" % (seq, last_seq))
    body = bytes(data[p + HEADER_LEN:p + caplen])
    rec = Record(kind, conn, seq, flags, ts_ns, iface, body, block_off)
    bp = p + HEADER_LEN
    if kind == KIND_EVENT:
        if len(body) < 8:
            raise RecordingError(bp, "bad length: event body of %d bytes" % len(body))
        etype, _res, tlen = struct.unpack_from("<HHI", body, 0)
        if tlen != len(body) - 8:
            raise RecordingError(bp + 4, "bad length: event text %d, body has %d"
                                 % (tlen, len(body) - 8))
        rec.event_type = etype
        try:
            rec.event_text = body[8:].decode("utf-8")
        except UnicodeDecodeError:
            raise RecordingError(bp + 8, "event text is not UTF-8")
    else:
        if len(body) < 64 or len(body) % 64:
            raise RecordingError(bp, "bad length: frame of %d bytes (64-byte units)"
                                 % len(body))
        (w0,) = struct.unpack_from("<Q", body, 0)
        want = (((w0 >> 8) & 0xFF) + 1) * 64
        if want != len(body):
            raise RecordingError(bp, "bad length: frame of %d bytes, its header says %d"
                                 % (len(body), want))
    return rec


def read(path):
    """(interfaces, records) of the recording at path; RecordingError when malformed."""
    with open(path, "rb") as f:
        data = f.read()
    return parse(data)
