"""The Wireshark dissector wireshark/coreio.lua under Debian's tshark: a live TCP capture of a
coreio-vm session and coreio-vm recordings decode frame by frame, nothing is flagged malformed,
and the decoded fields carry the values the test drove; broken frames are flagged."""

import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

import pytest

from conftest import R0, R1, fnv64, scaled, seed_pattern

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGIN = os.path.join(REPO, "wireshark", "coreio.lua")
TSHARK = shutil.which("tshark")

pytestmark = pytest.mark.skipif(
    TSHARK is None, reason="tshark is not installed (apt-get install tshark; "
    "scripts/install-deps.sh)")

R2 = 0xD0020000
MAGIC = 0x3178456F4965726F
BAD = "_ws.malformed || _ws.expert.severity >= error"

OP = {"PING": 0x00, "READ": 0x01, "WRITE": 0x02, "READP": 0x03, "WRITEP": 0x04,
      "WRITEA": 0x05, "WRITEAP": 0x06, "LREAD": 0x21, "LWRITE": 0x25, "IRQ_UPDATE": 0x41,
      "SHM_MAP": 0x50, "RGN_CLAIM": 0xF0, "RESET": 0xFF}


# --- tshark ---------------------------------------------------------------------------------

def tshark(*args, timeout=120):
    """Run tshark with the plugin; return stdout (fails the test on a non-zero exit)."""
    argv = [TSHARK, "-X", "lua_script:" + PLUGIN] + list(args)
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=scaled(timeout))
    err = r.stderr.decode(errors="replace")
    lua_err = [l for l in err.splitlines() if "Lua" in l or "lua" in l]
    assert r.returncode == 0 and not lua_err, "%r: exit %d\n%s" % (argv, r.returncode, err)
    return r.stdout.decode(errors="replace")


def bad_frames(path, *opts):
    """Numbers of the frames tshark flags as malformed or with an expert error."""
    out = tshark("-r", str(path), *opts, "-Y", BAD, "-T", "fields", "-e", "frame.number")
    return [int(x) for x in out.split()]


class Pdu(dict):
    """One decoded coreio (or coreiorec) tree: field name -> list of (show, value)."""

    def s(self, name):
        v = self.get(name)
        return v[0][0] if v else None

    def i(self, name):
        v = self.s(name)
        return None if v is None else int(v, 0)

    def b(self, name):
        v = self.get(name)
        return bytes.fromhex(v[0][1]) if v else b""

    def has(self, name):
        return name in self


def decode(path, *opts):
    """Packets of the capture as dicts: number, tcp (stream, len, srcport), coreio (list of
    Pdu in order), rec (Pdu or None), experts (list of strings)."""
    xml = tshark("-r", str(path), *opts, "-T", "pdml")
    packets = []
    for pk in ET.fromstring(xml).iter("packet"):
        p = {"coreio": [], "rec": None, "experts": [], "tcp": None}
        for proto in pk.findall("proto"):
            name = proto.get("name")
            if name == "geninfo":
                for fl in proto.iter("field"):
                    if fl.get("name") == "num":
                        p["number"] = int(fl.get("show"))
            elif name == "tcp":
                t = {}
                for fl in proto.iter("field"):
                    if fl.get("name") in ("tcp.stream", "tcp.len", "tcp.srcport"):
                        t.setdefault(fl.get("name"), int(fl.get("show")))
                p["tcp"] = t
            elif name in ("coreio", "coreiorec"):
                d = Pdu()
                for fl in proto.iter("field"):
                    d.setdefault(fl.get("name"), []).append((fl.get("show"), fl.get("value")))
                    if fl.get("name") == "_ws.expert.message":
                        p["experts"].append(fl.get("show"))
                if name == "coreio":
                    p["coreio"].append(d)
                else:
                    p["rec"] = d
        packets.append(p)
    return packets


def pdus(packets):
    """Every coreio Pdu of the packets, with its packet number and TCP stream."""
    out = []
    for p in packets:
        for d in p["coreio"]:
            d.frame = p["number"]
            d.stream = p["tcp"]["tcp.stream"] if p["tcp"] else None
            out.append(d)
    return out


# --- recordings (pcapng, the format docs/wireshark.md and docs/coreio-vm.md describe) --------

def _block(btype, body):
    body += bytes(-len(body) % 4)
    total = 12 + len(body)
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


def _opts(*pairs):
    out = b""
    for code, val in pairs:
        out += struct.pack("<HH", code, len(val)) + val + bytes(-len(val) % 4)
    return out + struct.pack("<HH", 0, 0)


def pcapng(records, conns):
    """A recording: records = [(kind, conn, flags, body)], conns = {conn: description}."""
    out = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
                 + _opts((4, b"coreio-vm"), (1, b"coreio recording v1")))
    iface = {0: 0}
    out += _block(1, struct.pack("<HHI", 147, 0, 0) + _opts((2, b"coreio-vm"), (9, b"\x09")))
    for n, (conn, desc) in enumerate(sorted(conns.items())):
        iface[conn] = n + 1
        out += _block(1, struct.pack("<HHI", 147, 0, 0)
                      + _opts((2, b"coreio conn %d" % conn), (3, desc.encode()), (9, b"\x09")))
    ts = 1700000000 * 10**9
    for seq, (kind, conn, flags, body) in enumerate(records, 1):
        data = struct.pack("<BBBBIQ", 0x43, 1, kind, flags, conn, seq) + body
        ts += 1000
        out += _block(6, struct.pack("<IIIII", iface.get(conn, 0), ts >> 32, ts & 0xFFFFFFFF,
                                     len(data), len(data)) + data + bytes(-len(data) % 4)
                      + _opts())
    return out


def frame(op, iface=0, tag=0, origin=False, error=False, size=0, sid=0, flags=0, mask=0,
          addr=0, data=b"", extra=None):
    """A CoreIO frame as src/wire/wire.c encodes it; data from w[3], padded to 64-byte units."""
    e = max(0, (24 + len(data) + 63) // 64 - 1) if extra is None else extra
    w0 = iface | e << 8 | int(error) << 30 | int(origin) << 31 | tag << 32
    w1 = op | size << 16 | sid << 24 | flags << 28 | mask << 32
    b = struct.pack("<QQQ", w0, w1, addr) + data
    return b + bytes(max(0, (e + 1) * 64 - len(b)))


def words(*w):
    return struct.pack("<%dQ" % len(w), *w)


def event(etype, text):
    t = text.encode()
    return struct.pack("<HHI", etype, 0, len(t)) + t


def check(d, **want):
    """Assert the Pdu's fields: name with '_' for '.', ints compared as numbers."""
    for k, v in want.items():
        name = k.replace("__", ".")
        if isinstance(v, bytes):
            got = d.b(name)
        elif isinstance(v, bool):
            got = d.s(name) in ("1", "True", "true") if d.has(name) else None
        elif isinstance(v, int):
            got = d.i(name)
        else:
            got = d.s(name)
        assert got == v, "frame %s: %s = %r, want %r; fields %r" % (
            getattr(d, "frame", "?"), name, got, v, sorted(d))


# --- a synthetic recording: every opcode either way, every event type -----------------------

def session_records():
    """(records, expectations): expectations[i] = dict of coreio fields of record i, or
    ('event', type, name, params) for events."""
    R, X = [], []
    pat = seed_pattern(9, 20000)

    def c2v(body, flags=0, conn=1, **want):
        R.append((0, conn, flags, body))
        X.append(dict(coreio__dir="client->vm", **want))

    def v2c(body, flags=0, conn=1, **want):
        R.append((1, conn, flags, body))
        X.append(dict(coreio__dir="vm->client", **want))

    def ev(etype, text, conn=0):
        R.append((2, conn, 0, event(etype, text)))
        X.append(("event", etype, text))

    ev(10, "start accel=qtest ranges=1")
    ev(10, "shm off: --record sees every DMA on the wire")
    ev(1, "connect peer=127.0.0.1:51234 port=127.0.0.1:4300 rids=0", conn=1)
    c2v(frame(0, origin=True, addr=MAGIC, data=words(0, 7, 1)), coreio__op="PING",
        coreio__what="hello offer", coreio__hello__kind=0, coreio__hello__caps=7,
        coreio__hello__version=1, coreio__role="request", coreio__origin=True)
    v2c(frame(0, origin=True, addr=MAGIC, data=words(1, 3, 1)), coreio__what="hello answer",
        coreio__hello__kind=1, coreio__hello__caps=3, coreio__hello__caps__shm=False,
        coreio__hello__caps__claim_ack=True, coreio__role="answer")
    c2v(frame(0xF0, iface=0, tag=1, origin=True), coreio__op="RGN_CLAIM", coreio__iface=0,
        coreio__tag=1, coreio__what="claim")
    ev(3, "claim rid=0 range=0 start=0xd0000000 size=0x10000", conn=1)
    v2c(frame(0xF0, iface=0, tag=1, origin=True), coreio__what="claim ack",
        coreio__error=False)
    c2v(frame(0xF0, iface=5, tag=2, origin=True), coreio__iface=5)
    v2c(frame(0xF0, iface=5, tag=2, origin=True, error=True, data=words(2)),
        coreio__error=True, coreio__claim__errno=2)
    for i, n in enumerate((1, 2, 4, 8, 16, 32)):
        val = bytes((0x11 * (i + 1) + k) & 0xFF for k in range(n))
        a = R0 + 0x100 + 0x40 * i
        v2c(frame(2, tag=10 + i, size=n, mask=(1 << n) - 1, addr=a, data=val),
            coreio__op="WRITE", coreio__size=n, coreio__addr=a, coreio__data=val,
            coreio__mask=(1 << n) - 1, coreio__what="MMIO posted write")
        v2c(frame(1, tag=20 + i, size=n, addr=a, flags=4), coreio__op="READ",
            coreio__size=n, coreio__addr=a, coreio__role="request", coreio__what="MMIO read",
            coreio__flags__priv=True, coreio__flags__secure=False)
        c2v(frame(1, tag=20 + i, size=n, addr=a, flags=4, data=val), coreio__op="READ",
            coreio__data=val, coreio__role="answer", coreio__tag=20 + i,
            coreio__what="MMIO read answer", coreio__response_to=len(R))
    a = R0 + 0x800
    v2c(frame(5, tag=30, size=4, mask=0xF, addr=a, data=b"\x01\x02\x03\x04"),
        coreio__op="WRITEA", coreio__data=b"\x01\x02\x03\x04", coreio__what="MMIO acked write")
    c2v(frame(5, tag=30, size=4, mask=0xF, addr=a), coreio__what="MMIO acked write answer",
        coreio__response_to=len(R))
    v2c(frame(4, tag=31, size=8, mask=0xFF, addr=a,
              data=bytes(range(8)) + bytes(8) + bytes(range(8, 16))),
        coreio__op="WRITEP", coreio__data=bytes(range(8)), coreio__data2=bytes(range(8, 16)))
    v2c(frame(6, tag=32, size=4, mask=0xF, addr=a, data=b"abcd" + bytes(4) + b"efgh"),
        coreio__op="WRITEAP", coreio__data=b"abcd", coreio__data2=b"efgh")
    c2v(frame(6, tag=32, size=4, addr=a), coreio__op="WRITEAP", coreio__role="answer")
    v2c(frame(3, tag=33, size=16, addr=a), coreio__op="READP", coreio__size=16)
    c2v(frame(3, tag=33, size=16, addr=a, data=bytes(range(16)) + bytes(8) + bytes(16)),
        coreio__op="READP", coreio__data=bytes(range(16)), coreio__data2=bytes(16))
    c2v(frame(0x41, iface=0, origin=True, addr=1, data=words(1)), coreio__op="IRQ_UPDATE",
        coreio__irq__iid=1, coreio__irq__level=1, coreio__what="IRQ update")
    c2v(frame(0x41, iface=0, origin=True, addr=1, data=words(0)), coreio__irq__level=0)
    # Base DMA pieces (READ / WRITEA), a large write and read (LWRITE / LREAD), on conn 2.
    c2v(frame(5, iface=0, tag=40, origin=True, size=29, mask=(1 << 29) - 1, addr=0x2003,
              data=pat[:29]), conn=2, coreio__op="WRITEA", coreio__what="DMA write",
        coreio__size=29, coreio__data=pat[:29], coreio__addr=0x2003)
    v2c(frame(5, iface=0, tag=40, origin=True, size=29, mask=(1 << 29) - 1, addr=0x2003),
        conn=2, coreio__what="DMA write answer")
    c2v(frame(1, iface=3, tag=41, sid=5, origin=True, size=32, addr=0x2020), conn=2,
        coreio__what="DMA read", coreio__iface=3, coreio__sid=5)
    v2c(frame(1, iface=3, tag=41, sid=5, origin=True, size=32, addr=0x2020, data=pat[:32]),
        conn=2, coreio__what="DMA read answer", coreio__data=pat[:32])
    v2c(frame(1, iface=3, tag=42, origin=True, error=True, size=32, addr=0x4000000), conn=2,
        coreio__error=True, coreio__what="DMA read answer")
    c2v(frame(0x25, tag=43, origin=True, mask=16320, addr=0x10000, data=pat[:16320]), conn=2,
        coreio__op="LWRITE", coreio__len=16320, coreio__extra=255, coreio__frame_len=16384,
        coreio__data=pat[:16320])
    c2v(frame(0x25, tag=44, origin=True, mask=3680, addr=0x13FC0, data=pat[16320:]), conn=2,
        coreio__len=3680, coreio__data=pat[16320:])
    v2c(frame(0x25, tag=43, origin=True, mask=16320, addr=0x10000), conn=2,
        coreio__what="large DMA write answer")
    c2v(frame(0x21, tag=45, origin=True, mask=100, addr=0x10000), conn=2, coreio__op="LREAD",
        coreio__len=100, coreio__what="large DMA read")
    v2c(frame(0x21, tag=45, origin=True, mask=100, addr=0x10000, data=pat[:100]), conn=2,
        coreio__data=pat[:100], coreio__what="large DMA read answer")
    v2c(frame(0x21, tag=46, origin=True, error=True, mask=16320, addr=0x10000), conn=2,
        coreio__error=True)
    v2c(frame(0x50, tag=1, addr=0, data=words(64 << 20, 0, 0, 1, 1)), flags=1, conn=3,
        coreio__op="SHM_MAP", coreio__shm__size=64 << 20, coreio__shm__count=1,
        coreio__shm__gen=1, coreio__shm__index=0)
    v2c(frame(0, tag=5), coreio__op="PING", coreio__what="ping", coreio__role="request")
    c2v(frame(0, tag=5), coreio__what="ping", coreio__role="answer")
    v2c(frame(0xFF), coreio__op="RESET", coreio__what="reset")
    ev(7, "reset range=0")
    ev(5, "bus-error range=0 addr=0xd0000010 size=4 dir=read reason=timeout")
    ev(6, "iommu-fault mid=1 sid=2 addr=0x5000 reason=unmapped")
    ev(8, "inject kind=timeout range=0 count=1")
    ev(9, "dma-refused conn=2 addr=0x9000000 len=64 reason=window")
    ev(4, "release rid=0 range=0", conn=1)
    ev(2, "close reason=eof", conn=1)
    return R, X


def test_synthetic_recording(tmp_path):
    R, X = session_records()
    path = tmp_path / "synthetic.pcapng"
    path.write_bytes(pcapng(R, {1: "127.0.0.1:51234 on 127.0.0.1:4300",
                                2: "127.0.0.1:51236 on 127.0.0.1:4300",
                                3: "unix on /tmp/x.sock"}))
    # The shared reader (scripts/replaylib) agrees with the file this test wrote.
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    try:
        from replaylib import recording
    except ImportError:
        recording = None
    if recording is not None:
        ifaces, recs = recording.read(str(path))
        assert [(r.kind, r.conn, r.flags, r.body, r.seq) for r in recs] == \
            [(k, c, fl, b, i) for i, (k, c, fl, b) in enumerate(R, 1)]
        assert ifaces[1]["name"] == "coreio conn 1"

    assert bad_frames(path) == []
    packets = decode(path)
    assert len(packets) == len(R)
    for i, (p, (kind, conn, flags, body), want) in enumerate(zip(packets, R, X)):
        rec = p["rec"]
        assert rec is not None, "record %d not decoded as coreiorec" % (i + 1)
        check(rec, coreiorec__magic=0x43, coreiorec__version=1, coreiorec__kind=kind,
              coreiorec__conn=conn, coreiorec__seq=i + 1, coreiorec__flags=flags)
        if kind == 2:
            _, etype, text = want
            check(rec, coreiorec__event__type=etype, coreiorec__event__text=text,
                  coreiorec__event__text_len=len(text), coreiorec__event__name=text.split()[0])
            params = [s for s, _ in rec.get("coreiorec.event.param", [])]
            assert params == ([] if etype == 10 else text.split()[1:])
            assert p["coreio"] == []
            continue
        assert len(p["coreio"]) == 1, "record %d: %r" % (i + 1, p)
        d = p["coreio"][0]
        d.frame = i + 1
        (w0,) = struct.unpack_from("<Q", body)
        check(d, coreio__frame_len=len(body), coreio__iface=w0 & 0xFF, coreio__tag=w0 >> 32)
        check(d, **want)
    # Display filters a user would type.
    out = tshark("-r", str(path), "-Y", 'coreio.op == "LWRITE" && coreio.role == "request"',
                 "-T", "fields", "-e", "coreio.len")
    assert out.split() == ["16320", "3680"]
    out = tshark("-r", str(path), "-Y", "coreiorec.event.type == 5", "-T", "fields",
                 "-e", "coreiorec.event.param")
    assert "reason=timeout" in out


def test_broken_frames_are_flagged(tmp_path):
    """Frames coreio__wire_decode() refuses, and broken records, carry an expert error; the
    good frames around them do not."""
    good = frame(0xF0, iface=0, tag=1, origin=True)
    broken = [
        (0, frame(2, origin=True, size=4, addr=R0, data=b"abcd")),     # WRITE with origin 1
        (1, frame(1, size=40, addr=R0)),                              # READ of 40 bytes
        (0, frame(0x25, origin=True, mask=200, addr=0)),              # LWRITE data beyond frame
        (0, frame(0x21, origin=True, mask=20000, addr=0)),            # LREAD too long
        (1, frame(0x33)),                                             # unknown opcode
        (0, frame(0x41, origin=True, extra=1)[:64]),                  # truncated: E = 1
        (1, frame(0x50, origin=True, data=words(4096, 0, 0, 1, 1))),  # SHM_MAP origin 1
        (0, frame(0x50, data=words(4096, 0, 0, 1, 1))),               # SHM_MAP from a client
        (1, frame(0x03, size=17, addr=R0)),                           # pair element of 17
    ]
    R = []
    for kind, body in broken:
        R.append((0, 1, 0, good))
        R.append((kind, 1, 0, body))
    R.append((2, 0, 0, event(10, "note") + b"xx"))                    # bytes after the text
    path = tmp_path / "broken.pcapng"
    path.write_bytes(pcapng(R, {1: "127.0.0.1:1 on 127.0.0.1:2"}))
    n = len(R)
    assert bad_frames(path) == list(range(2, n, 2)) + [n]
    # A record of an unknown version is flagged, not decoded.
    blob = bytearray(pcapng([(0, 1, 0, good)], {}))
    i = blob.index(b"\x43\x01\x00\x00")
    blob[i + 1] = 2
    path2 = tmp_path / "v2.pcapng"
    path2.write_bytes(bytes(blob))
    assert bad_frames(path2) == [1]


# --- TCP reassembly: frames cut at every awkward place ------------------------------------

def _ip_tcp(src, dst, sport, dport, seq, ack, flags, payload):
    """A raw IPv4 packet with a TCP segment (checksums are not checked by default)."""
    tcp = struct.pack(">HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4,
                      flags, 65535, 0, 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0,
                     bytes(src), bytes(dst))
    return ip + tcp


def test_tcp_reassembly(tmp_path):
    """Two byte streams of CoreIO frames, one each way, cut into TCP segments of random
    sizes (inside the first 8 bytes, one byte before a frame's end, many frames in one
    segment): every frame decodes once, in order, with the right direction and fields."""
    seed = int(os.environ.get("COREIO_TEST_SEED", "0"), 0) or random.randrange(1, 1 << 32)
    print("seed %d (COREIO_TEST_SEED=%d repeats it)" % (seed, seed))
    rng = random.Random(seed)
    pat = seed_pattern(3, 16320)
    c2v = [frame(0, origin=True, addr=MAGIC, data=words(0, 3, 1)),
           frame(0xF0, iface=0, tag=1, origin=True)]
    v2c = [frame(0, origin=True, addr=MAGIC, data=words(1, 3, 1)),
           frame(0xF0, iface=0, tag=1, origin=True)]
    for i in range(40):
        n = rng.choice((1, 2, 4, 8, 16, 32))
        a = R0 + 0x40 * i
        v2c.append(frame(1, tag=100 + i, size=n, addr=a))
        c2v.append(frame(1, tag=100 + i, size=n, addr=a, data=pat[i:i + n]))
        ln = rng.randrange(1, 16321)
        c2v.append(frame(0x25, tag=200 + i, origin=True, mask=ln, addr=0x10000 + i * 0x4000,
                         data=pat[:ln]))
        v2c.append(frame(0x25, tag=200 + i, origin=True, mask=ln, addr=0x10000 + i * 0x4000))
        ln = rng.randrange(1, 16321)
        c2v.append(frame(0x21, tag=300 + i, origin=True, mask=ln, addr=0x800000))
        v2c.append(frame(0x21, tag=300 + i, origin=True, mask=ln, addr=0x800000,
                         data=pat[:ln]))
    streams = {True: b"".join(v2c), False: b"".join(c2v)}
    vm_ip, cl_ip, vm_port, cl_port = (127, 0, 0, 1), (127, 0, 0, 2), 4300, 51000
    seq = {True: 1000, False: 5000}
    pkts = [_ip_tcp(cl_ip, vm_ip, cl_port, vm_port, seq[False] - 1, 0, 0x02, b""),
            _ip_tcp(vm_ip, cl_ip, vm_port, cl_port, seq[True] - 1, seq[False], 0x12, b""),
            _ip_tcp(cl_ip, vm_ip, cl_port, vm_port, seq[False], seq[True], 0x10, b"")]
    pos = {True: 0, False: 0}
    while pos[True] < len(streams[True]) or pos[False] < len(streams[False]):
        way = rng.random() < 0.5
        if pos[way] >= len(streams[way]):
            way = not way
        # Cut sizes: tiny, around a unit, around a large frame, big.
        n = rng.choice((1, 3, 7, 8, 9, 63, 64, 65, 127, 1000, 16383, 16384, 16385, 30000))
        chunk = streams[way][pos[way]:pos[way] + n]
        src, dst = (vm_ip, cl_ip) if way else (cl_ip, vm_ip)
        sp, dp = (vm_port, cl_port) if way else (cl_port, vm_port)
        pkts.append(_ip_tcp(src, dst, sp, dp, seq[way], seq[not way], 0x18, chunk))
        seq[way] += len(chunk)
        pos[way] += len(chunk)
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 101)  # LINKTYPE_RAW
    for k, pk in enumerate(pkts):
        out += struct.pack("<IIII", 1700000000, k, len(pk), len(pk)) + pk
    path = tmp_path / "segments.pcap"
    path.write_bytes(out)

    for opt in (["-o", "coreio.tcp_ports:%d" % vm_port], ["-d", "tcp.port==%d,coreio" % vm_port]):
        assert bad_frames(path, *opt) == []
        got = {True: [], False: []}
        for d in pdus(decode(path, *opt)):
            got[d.s("coreio.dir") == "vm->client"].append(d)
        for way, frames in ((True, v2c), (False, c2v)):
            assert len(got[way]) == len(frames), (way, len(got[way]), len(frames))
            for d, fr in zip(got[way], frames):
                w0, w1, w2 = struct.unpack_from("<QQQ", fr)
                check(d, coreio__frame_len=len(fr), coreio__tag=w0 >> 32,
                      coreio__opcode=w1 & 0xFF, coreio__addr=w2)
                if w1 & 0xFF in (0x21, 0x25) and d.has("coreio.data"):
                    assert d.b("coreio.data") == fr[24:24 + (w1 >> 32)]
                elif w1 & 0xFF == 0x01 and not way:
                    assert d.b("coreio.data") == fr[24:24 + ((w1 >> 16) & 0x3F)]


# --- live TCP -------------------------------------------------------------------------------

class Capture:
    """tshark capturing the VM's port on lo, writing pcapng to a pipe that a thread reads.

    Readiness and completeness are checked with probes: a connection attempt to a port that
    is bound but not listening (the kernel answers with a reset) is in the capture filter;
    once its packets come out of the pipe, the capture is running, and everything sent
    before it has been captured."""

    def __init__(self, tmp_path, port):
        self.path = tmp_path / "live.pcapng"
        self.errpath = tmp_path / "capture.err"
        self.err = open(self.errpath, "wb")
        self.dummy = socket.socket()
        self.dummy.bind(("127.0.0.1", 0))
        self.probe_port = self.dummy.getsockname()[1]
        self.buf = bytearray()
        self.lock = threading.Lock()
        self.p = subprocess.Popen([TSHARK, "-i", "lo", "-f", "tcp port %d or tcp port %d"
                                   % (port, self.probe_port), "-w", "-"],
                                  stdout=subprocess.PIPE, stderr=self.err,
                                  stdin=subprocess.DEVNULL)
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()
        if not self.probe(timeout=20):
            self.stop()
            pytest.skip("cannot capture on lo with tshark: %s"
                        % self.errpath.read_text(errors="replace").strip()[-300:])

    def _read(self):
        while True:
            b = os.read(self.p.stdout.fileno(), 65536)
            if not b:
                return
            with self.lock:
                self.buf.extend(b)

    def packets(self):
        """Enhanced Packet Blocks received so far."""
        with self.lock:
            data = bytes(self.buf)
        n, off = 0, 0
        while off + 8 <= len(data):
            btype, blen = struct.unpack_from("<II", data, off)
            if blen < 12 or off + blen > len(data):
                break
            n += btype == 6
            off += blen
        return n

    def probe(self, timeout=10):
        """Send probes until one shows up in the capture; False on timeout."""
        before = self.packets()
        deadline = time.monotonic() + scaled(timeout)
        while time.monotonic() < deadline and self.p.poll() is None:
            s = socket.socket()
            s.settimeout(1)
            try:
                s.connect(("127.0.0.1", self.probe_port))
            except OSError:
                pass
            s.close()
            end = time.monotonic() + 0.2
            while time.monotonic() < end:
                if self.packets() > before:
                    return True
                time.sleep(0.02)
        return False

    def stop(self):
        """Stop tshark (after a final probe) and write the capture to self.path."""
        if self.p.poll() is None:
            self.probe()
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(scaled(10))
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
        self.t.join(10)
        self.p.stdout.close()
        self.err.close()
        self.dummy.close()
        with self.lock:
            self.path.write_bytes(bytes(self.buf))


def fnv_data(answer):
    return dict(x.split("=", 1) for x in answer.split())


BIG = 300000  # bytes of the large DMA: 16320-byte pieces that straddle TCP segments


def session_vm(env, extra=()):
    """coreio-vm with three ranges on one TCP port: R0 posted, R1 acked, R2 for a base client."""
    return env.vm("%#x,size=0x10000,irq=5:6,port=@a" % R0,
                  "%#x,size=0x10000,irq=7,port=@a,writes=acked" % R1,
                  "%#x,size=0x10000,port=@a" % R2, mem="64M", extra=extra)


def drive_session(env, vm):
    """A client with capabilities: hello, claims, MMIO of every size both ways, IRQs, small
    and large DMA both ways; then a base client (--no-caps): claim, MMIO, 32-byte DMA pieces.
    Returns what was driven, for check_session()."""
    c = env.client(vm.target(0))
    caps = int(c.ok("caps"))
    c.ok("register 0")
    c.ok("register 1")
    vm.wait_claim(0)
    vm.wait_claim(1)
    writes, reads = [], []
    for i, n in enumerate((1, 2, 4, 8, 16, 32)):
        val = bytes((0x21 * (i + 1) + 3 * k) & 0xFF for k in range(n))
        for base in (R0, R1):
            a = base + 0x100 + 0x40 * i
            vm.ok("write %#x %d 0x%s" % (a, n, val.hex()))
            assert vm.ok("read %#x %d" % (a, n)) == "0x" + val.hex()
            writes.append((a, val))
            reads.append((a, val))
    vm.ok("irq_intercept_in ioapic")
    c.ok("irq 0 0 1")
    assert vm.wait_irq() == ("raise", 5)
    c.ok("irq 0 1 1")
    assert vm.wait_irq() == ("raise", 6)
    c.ok("irq 0 0 0")
    assert vm.wait_irq() == ("lower", 5)
    small = seed_pattern(5, 20)
    big = seed_pattern(11, BIG)
    c.ok("dma_write 0 0 0x100005 20 h:%s" % small.hex())
    assert fnv_data(c.ok("dma_read 0 0 0x100005 20"))["data"] == small.hex()
    c.ok("dma_write 0 0 0x200000 %d 11" % BIG, timeout=30)
    assert int(fnv_data(c.ok("dma_read 0 0 0x200000 %d" % BIG, timeout=30))["fnv"], 16) == \
        fnv64(big)
    # A base client: no hello, no claim ack, 32-byte DMA pieces.
    b = env.client(vm.target(2), "--no-caps")
    assert int(b.ok("caps")) == 0
    b.ok("register 2")
    vm.wait_claim(2)
    vm.ok("writel %#x 0x44332211" % (R2 + 8))
    assert vm.value("readl %#x" % (R2 + 8)) == 0x44332211
    base_pat = seed_pattern(7, 100)
    b.ok("dma_write 0 0 0x300003 100 7")
    assert int(fnv_data(b.ok("dma_read 0 0 0x300003 100"))["fnv"], 16) == fnv64(base_pat)
    c.ok("ping")
    b.ok("ping")
    return dict(caps=caps, writes=writes, reads=reads, small=small, big=big,
                base_pat=base_pat)


def check_session(all_pdus, s):
    """The decoded frames of drive_session() carry what it drove. Each Pdu has .frame and
    .stream (TCP stream, or recorded connection)."""
    caps, writes, reads = s["caps"], s["writes"], s["reads"]
    small, big, base_pat = s["small"], s["big"], s["base_pat"]
    by_stream = {}
    for d in all_pdus:
        by_stream.setdefault(d.stream, []).append(d)
    # The capable client's two connections open with a hello; the VM answers each.
    hellos = [d for d in all_pdus if d.s("coreio.what") == "hello offer"]
    answers = [d for d in all_pdus if d.s("coreio.what") == "hello answer"]
    assert len(hellos) == 2 and len(answers) == 2
    for d in hellos:
        check(d, coreio__dir="client->vm", coreio__addr=MAGIC, coreio__hello__version=1)
        assert d.i("coreio.hello.caps") & 3 == 3
        assert by_stream[d.stream][0] is d
    assert [d.i("coreio.hello.caps") for d in answers] == [caps, caps]
    claims = [(d.i("coreio.iface"), d.s("coreio.dir"), d.stream) for d in all_pdus
              if d.s("coreio.op") == "RGN_CLAIM"]
    cs = hellos[0].stream
    assert (0, "client->vm", cs) in claims and (0, "vm->client", cs) in claims
    assert (1, "client->vm", cs) in claims and (1, "vm->client", cs) in claims
    base_claim = [x for x in claims if x[0] == 2]
    assert len(base_claim) == 1 and base_claim[0][1] == "client->vm"
    bstream = base_claim[0][2]
    assert not any(d.s("coreio.op") == "PING" for d in by_stream[bstream])

    # MMIO: the requests and answers carry the addresses, sizes and bytes the test drove.
    vm_req = [d for d in all_pdus if d.s("coreio.dir") == "vm->client" and d.stream == cs
              and d.s("coreio.op") in ("WRITE", "WRITEA", "READ")]
    for a, val in writes:
        op = "WRITE" if a < R1 else "WRITEA"
        m = [d for d in vm_req if d.s("coreio.op") == op and d.i("coreio.addr") == a]
        assert len(m) == 1, (a, op)
        check(m[0], coreio__size=len(val), coreio__data=val,
              coreio__mask=(1 << len(val)) - 1 if len(val) < 32 else 0xFFFFFFFF)
    for a, val in reads:
        m = [d for d in vm_req if d.s("coreio.op") == "READ" and d.i("coreio.addr") == a]
        assert len(m) == 1, a
        check(m[0], coreio__size=len(val), coreio__role="request")
        ans = [d for d in all_pdus if d.s("coreio.dir") == "client->vm"
               and d.s("coreio.op") == "READ" and d.i("coreio.tag") == m[0].i("coreio.tag")
               and d.i("coreio.addr") == a]
        assert len(ans) == 1
        check(ans[0], coreio__data=val, coreio__role="answer", coreio__response_to=m[0].frame)
    acks = [d for d in all_pdus if d.s("coreio.what") == "MMIO acked write answer"]
    assert len(acks) == 6 and all(d.has("coreio.response_to") for d in acks)
    # IRQ updates, in order.
    irqs = [(d.i("coreio.iface"), d.i("coreio.irq.iid"), d.i("coreio.irq.level"))
            for d in all_pdus if d.s("coreio.op") == "IRQ_UPDATE"]
    assert irqs == [(0, 0, 1), (0, 1, 1), (0, 0, 0)]

    # Large DMA: the pieces cover the transfers, and their data is the bytes written / read.
    def collect(op, dirn, lo, hi, stream_set):
        got = {}
        for d in all_pdus:
            if d.s("coreio.op") == op and d.s("coreio.dir") == dirn and d.stream in stream_set \
                    and lo <= d.i("coreio.addr") < hi:
                got[d.i("coreio.addr")] = d
        return got

    cap_streams = {d.stream for d in hellos}
    w = collect("LWRITE", "client->vm", 0x100000, 0x300000, cap_streams)
    assert b"".join(w[a].b("coreio.data") for a in sorted(w)) == small + big
    assert all(w[a].i("coreio.len") == len(w[a].b("coreio.data")) for a in w)
    r = collect("LREAD", "vm->client", 0x100000, 0x300000, cap_streams)
    assert b"".join(r[a].b("coreio.data") for a in sorted(r)) == small + big
    rq = collect("LREAD", "client->vm", 0x100000, 0x300000, cap_streams)
    assert sorted(rq) == sorted(r) and all(d.has("coreio.response_to") for d in r.values())
    assert max(d.i("coreio.len") for d in w.values()) == 16320
    # Base DMA: 32-byte-aligned pieces of WRITEA and READ with their masks.
    bw = collect("WRITEA", "client->vm", 0x300000, 0x300100, {bstream, bstream + 1})
    assert sorted(bw) == [0x300003, 0x300020, 0x300040, 0x300060]
    assert [bw[a].i("coreio.size") for a in sorted(bw)] == [29, 32, 32, 7]
    assert b"".join(bw[a].b("coreio.data") for a in sorted(bw)) == base_pat
    assert [bw[a].i("coreio.mask") for a in sorted(bw)] == [(1 << 29) - 1, 0xFFFFFFFF,
                                                            0xFFFFFFFF, 0x7F]
    br = collect("READ", "vm->client", 0x300000, 0x300100, {bstream, bstream + 1})
    assert b"".join(br[a].b("coreio.data") for a in sorted(br)) == base_pat


def test_live_tcp_session(env, tmp_path):
    vm = session_vm(env)
    port = int(vm.listening[0].rsplit(":", 1)[1])
    cap = Capture(tmp_path, port)
    try:
        driven = drive_session(env, vm)
    finally:
        cap.stop()

    opt = ["-o", "coreio.tcp_ports:%d" % port]
    assert bad_frames(cap.path, *opt) == []
    packets = decode(cap.path, *opt)
    # Every TCP payload byte is in exactly one decoded CoreIO frame, each way.
    sent = {True: 0, False: 0}
    for p in packets:
        t = p["tcp"]
        if t and t.get("tcp.len"):
            sent[t["tcp.srcport"] == port] += t["tcp.len"]
    all_pdus = pdus(packets)
    decoded = {True: 0, False: 0}
    for d in all_pdus:
        decoded[d.s("coreio.dir") == "vm->client"] += d.i("coreio.frame_len")
    assert decoded == sent and sent[True] > 0 and sent[False] > 0
    check_session(all_pdus, driven)
    # "Decode As" on the port gives the same decoding as the preference.
    fields = ["-T", "fields", "-e", "frame.number", "-e", "coreio.dir", "-e", "coreio.op",
              "-e", "coreio.addr"]
    assert tshark("-r", str(cap.path), "-d", "tcp.port==%d,coreio" % port, *fields) == \
        tshark("-r", str(cap.path), *opt, *fields)
    # With two passes, each large DMA read request points to its answer.
    out = tshark("-r", str(cap.path), *opt, "-2", "-Y",
                 'coreio.op == "LREAD" && coreio.role == "request" && !coreio.response_in')
    assert out.strip() == ""


def vm_has_record():
    """True if the coreio-vm of the build knows --record."""
    exe = os.path.join(os.environ.get("COREIO_BUILD_DIR", ""), "src/vm/coreio-vm")
    try:
        r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=10)
    except OSError:
        return False
    return "--record" in r.stdout + r.stderr


def test_recorded_session(env, tmp_path):
    if not vm_has_record():
        pytest.skip("coreio-vm has no --record in this build")
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    from replaylib import recording

    path = tmp_path / "session.pcapng"
    vm = session_vm(env, extra=("--record", str(path)))
    driven = drive_session(env, vm)
    # End coreio-vm so that the recording is complete.
    vm.p.send_signal(signal.SIGTERM)
    vm.wait_exit(10)
    env.procs.remove(vm)
    vm.stop()
    assert vm.p.returncode in (0, 128 + signal.SIGTERM, -signal.SIGTERM), vm.stderr_tail()

    ifaces, recs = recording.read(str(path))
    assert bad_frames(path) == []
    packets = decode(path)
    assert len(packets) == len(recs)
    all_pdus = []
    for p, r in zip(packets, recs):
        rec = p["rec"]
        assert rec is not None, "record %d not decoded" % p["number"]
        check(rec, coreiorec__kind=r.kind, coreiorec__conn=r.conn, coreiorec__seq=r.seq,
              coreiorec__flags=r.flags)
        if r.kind == 2:
            check(rec, coreiorec__event__type=r.event_type, coreiorec__event__text=r.event_text)
            assert p["coreio"] == []
            continue
        assert len(p["coreio"]) == 1
        d = p["coreio"][0]
        d.frame, d.stream = p["number"], r.conn
        w = r.words()
        check(d, coreio__dir="vm->client" if r.kind == 1 else "client->vm",
              coreio__frame_len=len(r.body), coreio__iface=w[0] & 0xFF, coreio__tag=w[0] >> 32,
              coreio__opcode=w[1] & 0xFF, coreio__addr=w[2])
        all_pdus.append(d)
    check_session(all_pdus, driven)


def test_meson_install_puts_the_plugin_where_wireshark_finds_it(tmp_path):
    """meson install ships wireshark/coreio.lua into LIBDIR/wireshark/plugins; copied to the
    personal plugin folder (docs/wireshark.md), tshark loads it with no -X option."""
    build = os.environ["COREIO_BUILD_DIR"]
    dest = tmp_path / "dest"
    r = subprocess.run(["meson", "install", "-C", build, "--no-rebuild", "--destdir", str(dest),
                        "--quiet"], capture_output=True, text=True, timeout=scaled(300))
    assert r.returncode == 0, r.stdout + r.stderr
    found = [os.path.join(d, f) for d, _, fs in os.walk(dest) for f in fs if f == "coreio.lua"]
    assert len(found) == 1 and found[0].endswith(os.path.join("wireshark", "plugins",
                                                                "coreio.lua")), found
    with open(found[0], "rb") as a, open(PLUGIN, "rb") as b:
        assert a.read() == b.read()
    home = tmp_path / "home"
    plugdir = home / ".local" / "lib" / "wireshark" / "plugins"
    plugdir.mkdir(parents=True)
    shutil.copy(found[0], plugdir / "coreio.lua")
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    r = subprocess.run([TSHARK, "-G", "protocols"], capture_output=True, text=True, env=env,
                       timeout=scaled(60))
    names = [ln.split("\t")[2] for ln in r.stdout.splitlines() if ln.count("\t") >= 2]
    assert "coreio" in names and "coreiorec" in names
