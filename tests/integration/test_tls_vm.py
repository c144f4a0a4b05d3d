"""TLS 1.3 on coreio-vm's TCP ports (tls=on, --tls-creds, --tls-psk; docs/security.md), with Python ssl clients."""

import os
import re
import select
import socket
import ssl
import struct
import subprocess
import time

import pytest

from conftest import R0, VM_EXE, build_path, scaled, seed_pattern
from rawclient import (CAP_CLAIM_ACK, CAP_LARGE_DMA, OP_LREAD, OP_LWRITE, UNIT, Closed, RawClient,
                       make_w0, make_w1, pack_words)
from tlsutil import have_openssl, make_psk_file, make_x509_dir

pytestmark = pytest.mark.skipif(not have_openssl(), reason="needs the openssl command")

RANGE = "%#x,size=0x10000,irq=5,port=0,tls=on" % R0
LARGE = 16320  # COREIO_WIRE_LARGE_PIECE: a frame of 16 KiB, more than one TLS record


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """(good, other): two credentials directories signed by different CAs."""
    base = tmp_path_factory.mktemp("pki")
    return (make_x509_dir(str(base / "good"), "coreio test CA"),
            make_x509_dir(str(base / "other"), "another CA"))


def client_ctx(trust_dir, cert_dir=None):
    """A TLS 1.3 client context trusting trust_dir's CA, with cert_dir's client certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(os.path.join(trust_dir, "ca-cert.pem"))
    if cert_dir:
        ctx.load_cert_chain(os.path.join(cert_dir, "client-cert.pem"),
                            os.path.join(cert_dir, "client-key.pem"))
    return ctx


class TlsClient(RawClient):
    """RawClient over a Python ssl socket: the handshake happens in the constructor."""

    def __init__(self, target, ctx, timeout=10):
        host, _, port = target.rpartition(":")
        host = host.strip("[]")
        raw = socket.create_connection((host, int(port)), timeout=scaled(timeout))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=host)
        except BaseException:
            raw.close()
            raise
        self.buf = b""
        self.queue = []
        self.next_tag = 1
        self.error = None

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no frame from the VM in time")
        # Decrypted bytes the ssl object holds never make the socket readable.
        if self.sock.pending() == 0:
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                raise TimeoutError("no frame from the VM in time")
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError) as e:
            self.error = e
            chunk = b""
        if not chunk:
            raise Closed("connection closed by the VM (%s)" % self.error)
        self.buf += chunk

    def send(self, data):
        self.sock.sendall(data)


def tls_vm(env, creds, *more, extra=()):
    """A qtest VM with one tls=on range (rid 0 of its port) and --verbose."""
    return env.vm(RANGE, *more, extra=["--tls-creds", creds, "--verbose"] + list(extra))


def serve_one_read(vm, c, off=0x10, value=b"\x78\x56\x34\x12"):
    """qtest reads the range; c answers over TLS; returns the qtest answer."""
    vm.send("readl %#x" % (R0 + off))
    req = c.wait_request()
    assert req.addr == R0 + off, req
    c.answer(req, value)
    return vm.answer()


def good_client(vm, pki, rid_g=0):
    """A TLS client with the right certificate that claimed range rid_g and serves reads."""
    c = TlsClient(vm.target(rid_g), client_ctx(pki[0], pki[0]))
    hello = c.hello(CAP_LARGE_DMA | CAP_CLAIM_ACK)
    assert not hello.error, hello
    c.claim(0)
    vm.wait_claim(rid_g)
    return c


def refused_handshake(target, ctx):
    """Connect and say hello; return the exception that ended it (the VM refused us)."""
    try:
        c = TlsClient(target, ctx, timeout=5)
    except (ssl.SSLError, OSError) as e:
        return e
    try:
        c.hello(CAP_CLAIM_ACK)
    except (Closed, ssl.SSLError, OSError) as e:
        return e
    finally:
        c.close()
    raise AssertionError("the VM answered a client it should have refused")


def test_tls_hello_claim_mmio_and_large_dma(env, pki):
    vm = tls_vm(env, pki[0])
    c = good_client(vm, pki)
    vm.wait_stderr(r"connected on \S+ over TLS 1\.3: certificate CN=coreio-model")
    assert serve_one_read(vm, c) == "OK 0x0000000012345678"
    # Large DMA both ways: frames of 16 KiB span two TLS records each way.
    for i in range(4):
        addr = 0x100000 + i * 0x4000
        data = seed_pattern(i + 1, LARGE)
        nunits = (24 + LARGE + UNIT - 1) // UNIT
        hdr = pack_words([make_w0(0, extra=nunits - 1, origin=True, tag=100 + i),
                          make_w1(OP_LWRITE, mask=LARGE), addr])
        frame = bytearray(nunits * UNIT)
        frame[:24] = hdr[:24]
        frame[24:24 + LARGE] = data
        c.send(bytes(frame))
        ans = c.wait_for(lambda f, t=100 + i: f.origin and f.tag == t)
        assert not ans.error, ans
        for off in range(0, LARGE, 4080):
            n = min(4080, LARGE - off)
            assert vm.ok("read %#x %d" % (addr + off, n)) == "0x" + data[off:off + n].hex()
    for i in range(4):
        addr = 0x100000 + i * 0x4000
        t = 200 + i
        c.send_words([make_w0(0, origin=True, tag=t), make_w1(OP_LREAD, mask=LARGE), addr])
        ans = c.wait_for(lambda f, t=t: f.origin and f.tag == t)
        assert not ans.error, ans
        assert ans.raw[24:24 + LARGE] == seed_pattern(i + 1, LARGE)
    # And MMIO still works after the bulk traffic.
    assert serve_one_read(vm, c, 0x20, b"\x01\x00\x00\x00") == "OK 0x0000000000000001"
    c.close()


def test_no_client_certificate_is_refused(env, pki):
    vm = tls_vm(env, pki[0])
    refused_handshake(vm.target(0), client_ctx(pki[0]))
    vm.wait_stderr(r"127\.0\.0\.1:\d+: 127\.0\.0\.1:\d+: TLS refused: the peer sent no "
                   r"certificate our CA signed")
    assert vm.info(0)["claimed"] == "0"
    good_client(vm, pki).close()


def test_client_certificate_of_another_ca_is_refused(env, pki):
    vm = tls_vm(env, pki[0])
    refused_handshake(vm.target(0), client_ctx(pki[0], pki[1]))
    vm.wait_stderr(r"TLS refused: the peer's certificate is refused")
    assert vm.info(0)["claimed"] == "0"


def test_client_that_trusts_another_ca_refuses_the_vm(env, pki):
    vm = tls_vm(env, pki[0])
    e = refused_handshake(vm.target(0), client_ctx(pki[1], pki[0]))
    assert isinstance(e, ssl.SSLCertVerificationError), repr(e)
    # OpenSSL sends its alert before it switched to the handshake keys:
    # GnuTLS then sees a record it cannot decrypt instead of the alert.
    vm.wait_stderr(r"TLS refused: (the peer refused the connection \(TLS alert: |TLS "
                   r"credentials do not match, or the peer refused ours: Decryption has failed)")
    good_client(vm, pki).close()


def test_plain_client_on_tls_port(env, pki):
    vm = tls_vm(env, pki[0])
    r = RawClient(vm.target(0))
    try:
        r.send_words([make_w0(0, origin=True, tag=1), make_w1(0), 0x3178456F4965726F, 0, 3, 1])
        assert r.closed_by_peer(scaled(5))
    finally:
        r.close()
    vm.wait_stderr(r"TLS refused: the peer does not speak TLS 1\.3 \(a plain CoreIO peer\?\)")
    assert vm.info(0)["claimed"] == "0"
    good_client(vm, pki).close()


def test_tls_client_on_plain_port(env, pki):
    vm = env.vm("%#x,size=0x10000,irq=5,port=0" % R0)
    with pytest.raises((ssl.SSLError, OSError)):
        TlsClient(vm.target(0), client_ctx(pki[0], pki[0]), timeout=5).close()
    vm.wait_stderr(r"a TLS client on plain port 127\.0\.0\.1:\d+ \(use tls=on")
    assert not any("malformed frame" in l for l in vm.stderr_lines)
    r = RawClient(vm.target(0))  # the port still serves plain clients
    try:
        r.claim(0)
        vm.wait_claim(0)
    finally:
        r.close()


@pytest.mark.parametrize("garbage", [b"\x00" * 64, os.urandom(300),
                                     b"\x16\x03\x01\x00\x05" + b"\xff" * 5,
                                     b"\x16\x03\x03\x40\x00" + b"\x01" * 32])
def test_garbage_during_handshake(env, pki, garbage):
    vm = tls_vm(env, pki[0], extra=["--peer-timeout", "1000"])
    good = good_client(vm, pki)
    host, _, port = vm.target(0).rpartition(":")
    s = socket.create_connection((host, int(port)), timeout=scaled(5))
    try:
        s.sendall(garbage)
        s.settimeout(scaled(5))
        try:
            while s.recv(4096):
                pass  # the VM's alert, then EOF
        except (ConnectionResetError, socket.timeout):
            pass
    finally:
        s.close()
    vm.wait_stderr(r"TLS refused: ")
    assert serve_one_read(vm, good) == "OK 0x0000000012345678"
    good.close()


def test_garbage_after_handshake(env, pki):
    vm = tls_vm(env, pki[0], "%#x,size=0x1000,port=0,tls=on" % (R0 + 0x10000))
    good = good_client(vm, pki)
    # A malformed frame over TLS: dropped as on a plain port.
    bad = TlsClient(vm.target(1), client_ctx(pki[0], pki[0]))
    bad.hello(CAP_CLAIM_ACK)
    bad.send_words([make_w0(0, origin=True, tag=1), make_w1(0x77), 0])
    assert bad.closed_by_peer(scaled(5))
    bad.close()
    vm.wait_stderr(r"malformed frame: .*closing")
    # Bytes that are no TLS record, on the socket under an established session.
    bad = TlsClient(vm.target(1), client_ctx(pki[0], pki[0]))
    bad.hello(CAP_CLAIM_ACK)
    raw = socket.socket(fileno=os.dup(bad.sock.fileno()))
    try:
        raw.sendall(b"\x17\x03\x03\x00\x20" + os.urandom(32))
        assert bad.closed_by_peer(scaled(5))
    finally:
        raw.close()
        bad.close()
    vm.wait_stderr(r"TLS receive failed: .*closing")
    assert serve_one_read(vm, good) == "OK 0x0000000012345678"
    good.close()


def test_stalled_handshake_is_dropped(env, pki):
    vm = tls_vm(env, pki[0], extra=["--peer-timeout", "300"])
    host, _, port = vm.target(0).rpartition(":")
    silent = socket.create_connection((host, int(port)), timeout=scaled(5))
    half = socket.create_connection((host, int(port)), timeout=scaled(5))
    try:
        half.sendall(b"\x16\x03\x01\x01\x00\x01")  # a ClientHello that never ends
        for s in (silent, half):
            s.settimeout(scaled(5))
            try:
                assert s.recv(4096) == b""
            except ConnectionResetError:
                pass
    finally:
        silent.close()
        half.close()
    vm.wait_stderr(r"TLS refused: the handshake did not complete within 300 ms", count=1)
    good_client(vm, pki).close()


def test_refusal_lines_are_rate_limited_and_counted(env, pki):
    vm = tls_vm(env, pki[0])
    for _ in range(5):
        refused_handshake(vm.target(0), client_ctx(pki[0]))
    time.sleep(1.1)
    refused_handshake(vm.target(0), client_ctx(pki[0]))
    vm.wait_stderr(r"TLS refused: .*\(and \d+ more refusal\(s\) not logged")
    env.procs.remove(vm)
    vm.stop()
    err = "\n".join(vm.stderr_lines)
    m = re.search(r"limits: .*tls_refused=(\d+)", err)
    assert m and int(m.group(1)) == 6, err


def test_psk_port_loads_and_refuses_a_certificate_client(env, pki, tmp_path):
    psk = make_psk_file(str(tmp_path / "keys.psk"))
    vm = env.vm(RANGE, extra=["--tls-psk", psk])
    refused_handshake(vm.target(0), client_ctx(pki[0], pki[0]))
    vm.wait_stderr(r"TLS refused: ")
    assert vm.info(0)["claimed"] == "0"


def run_refused(*args):
    """Run coreio-vm with a set-up it must refuse; return (status, stderr)."""
    p = subprocess.run([build_path(VM_EXE), "--accel", "qtest", "--qtest", "stdio"] + list(args),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=scaled(10))
    assert "listening on" not in p.stderr, p.stderr
    return p.returncode, p.stderr


def test_bad_tls_configs(pki, tmp_path):
    st, err = run_refused("--vmmio", "%#x,size=0x1000,port=unix:%s,tls=on" % (R0, tmp_path / "s"),
                          "--tls-creds", pki[0])
    assert st == 2 and "tls=on needs a TCP port" in err, err
    st, err = run_refused("--vmmio", RANGE)
    assert st == 2 and "tls=on needs credentials: --tls-creds DIR" in err, err
    st, err = run_refused("--vmmio", RANGE.replace(",tls=on", ""), "--tls-creds", pki[0])
    assert st == 2 and "--tls-creds is given but no --vmmio port has tls=on" in err, err
    psk = make_psk_file(str(tmp_path / "k.psk"))
    st, err = run_refused("--vmmio", RANGE, "--tls-creds", pki[0], "--tls-psk", psk)
    assert st == 2 and "exclude each other" in err, err
    st, err = run_refused("--vmmio", "%#x,size=0x1000,port=@p,tls=on" % R0,
                          "--vmmio", "%#x,size=0x1000,port=@p" % (R0 + 0x1000),
                          "--tls-creds", pki[0])
    assert st == 2 and "share a port but not their" in err and "tls=" in err, err


def test_creds_dir_without_server_key(pki, tmp_path):
    d = tmp_path / "nokey"
    d.mkdir()
    for f in ("ca-cert.pem", "server-cert.pem"):
        (d / f).write_bytes(open(os.path.join(pki[0], f), "rb").read())
    st, err = run_refused("--vmmio", RANGE, "--tls-creds", str(d))
    assert st != 0 and "--tls-creds: " in err and str(d / "server-key.pem") in err, err


def test_psk_file_with_a_bad_line(tmp_path):
    psk = tmp_path / "bad.psk"
    psk.write_text("# keys\nmodel:%s\nnot a key line\n" % ("ab" * 32))
    st, err = run_refused("--vmmio", RANGE, "--tls-psk", str(psk))
    assert st != 0 and "--tls-psk: %s:3: expected IDENTITY:HEXKEY" % psk in err, err


def test_tls_port_off_loopback_does_not_warn(env, pki):
    vm = env.vm(RANGE, "%#x,size=0x1000,port=0" % (R0 + 0x10000), listen="0.0.0.0",
                extra=["--tls-creds", pki[0]])
    vm.wait_stderr(r"warning: port \S+ listens on the non-loopback address")
    vm.ok("stats")  # vmmio_init() printed everything before qtest answers
    time.sleep(0.2)
    with vm.cond:
        warned = [l for l in vm.stderr_lines if "non-loopback" in l]
    assert len(warned) == 1 and vm.info(1)["port"] in warned[0], warned
