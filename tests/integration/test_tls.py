"""TLS end to end: libcoreio clients (tls:HOST:PORT, the environment) against coreio-vm tls=on ports."""

import os
import random

import pytest

from conftest import R0, fnv64, seed_pattern
from tlsutil import have_openssl, make_psk_file, make_x509_dir

pytestmark = pytest.mark.skipif(not have_openssl(), reason="needs the openssl command")

RANGE = "%#x,size=0x10000,irq=5,port=0,tls=on" % R0
PLAIN = "%#x,size=0x10000,irq=5,port=0" % R0
DATA = 0x100000  # guest RAM the DMA tests use


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """(good, other): two credentials directories signed by different CAs."""
    base = tmp_path_factory.mktemp("pki")
    return (make_x509_dir(str(base / "good"), "coreio test CA"),
            make_x509_dir(str(base / "other"), "another CA"))


def tls_target(vm):
    return "tls:" + vm.target(0)


def serve_and_check(vm, c):
    """The client claims rid 0 and serves MMIO, an IRQ and DMA of every size class over TLS."""
    c.ok("register 0")
    vm.wait_claim(0)
    vm.ok("irq_intercept_in ioapic")
    vm.ok("writel %#x 0xdeadbeef" % (R0 + 0x40))
    assert vm.value("readl %#x" % (R0 + 0x40)) == 0xDEADBEEF
    assert c.ok("peek 0 0x40 4") == "efbeadde"
    assert vm.ok("irq_level 5") == "0"
    c.ok("irq 0 0 1")
    assert vm.wait_irq() == ("raise", 5)
    c.ok("irq 0 0 0")
    assert vm.wait_irq() == ("lower", 5)
    rnd = random.Random(7)
    for n in (1, 64, 4096, 16320, 65536, 1 << 20):
        seed = rnd.randrange(256)
        addr = DATA + rnd.randrange(4096)
        got = c.ok("dma_write 0 0 %#x %d %d" % (addr, n, seed), timeout=60)
        assert int(dict(x.split("=", 1) for x in got.split())["fnv"], 16) == \
            fnv64(seed_pattern(seed, n))
        got = c.ok("dma_read 0 0 %#x %d" % (addr, n), timeout=60)
        assert int(dict(x.split("=", 1) for x in got.split())["fnv"], 16) == \
            fnv64(seed_pattern(seed, n)), "a %d-byte DMA read over TLS" % n
    # Non-blocking DMA too, with a read of what was written.
    got = c.ok("dma_write 0 0 %#x %d %d nb" % (DATA, 300000, 9), timeout=60)
    got = c.ok("dma_read 0 0 %#x %d nb" % (DATA, 300000), timeout=60)
    assert int(dict(x.split("=", 1) for x in got.split())["fnv"], 16) == \
        fnv64(seed_pattern(9, 300000))


def test_certificates_mmio_irq_dma(env, pki):
    vm = env.vm(RANGE, extra=["--tls-creds", pki[0]])
    c = env.client(tls_target(vm), env={"COREIO_TLS_CREDS": pki[0]})
    # Large DMA and claim-ack are negotiated over TLS; shared memory never is (TCP).
    assert c.first == "OK connected caps=3", c.first
    serve_and_check(vm, c)
    vm.wait_stderr(r"over TLS 1\.3")


def test_psk(env, tmp_path):
    psk = make_psk_file(str(tmp_path / "keys.psk"), identity="blk-model")
    vm = env.vm(RANGE, extra=["--tls-psk", psk, "--verbose"])
    c = env.client(tls_target(vm), env={"COREIO_TLS_PSK": psk})
    serve_and_check(vm, c)
    vm.wait_stderr(r"psk identity blk-model")


def test_unmodified_program_with_coreio_tls_on(env, pki):
    """A program that passes a plain HOST:PORT uses TLS when COREIO_TLS=on is set."""
    vm = env.vm(RANGE, extra=["--tls-creds", pki[0]])
    c = env.client(vm.target(0), env={"COREIO_TLS": "on", "COREIO_TLS_CREDS": pki[0]})
    c.ok("register 0")
    vm.wait_claim(0)
    vm.ok("writeb %#x 0x5a" % R0)
    assert vm.value("readb %#x" % R0) == 0x5A


class Refused:
    """A client whose connect failed: its first line, and a wait for its stderr."""

    def __init__(self, c):
        self.c = c
        self.first = c.first

    def says(self, regex):
        """Wait (bounded) until the client's stderr has a line matching regex."""
        return self.c.wait_stderr(regex)


def refused(env, target, cenv):
    """A client whose connect must fail (the line is read before the process ends, and its
    stderr through its own reader: wait for lines, never read a tail that may be short)."""
    c = env.client(target, env=cenv, expect_ok=False)
    assert c.first.startswith("ERR "), c.first
    c.wait_exit(10)
    return Refused(c)


def test_client_certificate_from_another_ca(env, pki):
    # The client trusts the VM (the good CA) but presents a certificate of another CA.
    mixed = os.path.join(os.path.dirname(pki[0]), "mixed")
    os.makedirs(mixed, exist_ok=True)
    for name, src in (("ca-cert.pem", pki[0]), ("client-cert.pem", pki[1]),
                      ("client-key.pem", pki[1])):
        with open(os.path.join(src, name), "rb") as f, open(os.path.join(mixed, name), "wb") as g:
            g.write(f.read())
    vm = env.vm(RANGE, extra=["--tls-creds", pki[0]])
    r = refused(env, tls_target(vm), {"COREIO_TLS_CREDS": mixed})
    r.says(r"TLS.*refused")
    vm.wait_stderr(r"TLS refused: .*certificate")
    # Nothing of the guest was touched: the range is still free for a good client.
    c = env.client(tls_target(vm), env={"COREIO_TLS_CREDS": pki[0]})
    c.ok("register 0")
    vm.wait_claim(0)


def test_vm_certificate_from_another_ca(env, pki):
    vm = env.vm(RANGE, extra=["--tls-creds", pki[0]])
    r = refused(env, tls_target(vm), {"COREIO_TLS_CREDS": pki[1]})
    first = r.first
    assert first.startswith("ERR -111"), first  # ECONNREFUSED
    r.says(r"certificate is refused")


def test_wrong_psk(env, tmp_path):
    good = make_psk_file(str(tmp_path / "good.psk"))
    bad = make_psk_file(str(tmp_path / "bad.psk"))  # the same identity, another key
    vm = env.vm(RANGE, extra=["--tls-psk", good])
    r = refused(env, tls_target(vm), {"COREIO_TLS_PSK": bad})
    r.says(r"TLS")
    vm.wait_stderr(r"TLS refused")


def test_tls_client_on_a_plain_port(env, pki):
    vm = env.vm(PLAIN)
    r = refused(env, tls_target(vm), {"COREIO_TLS_CREDS": pki[0]})
    r.says(r"plain one")
    vm.wait_stderr(r"a TLS client on plain port")


def test_plain_client_on_a_tls_port(env, pki):
    vm = env.vm(RANGE, extra=["--tls-creds", pki[0], "--peer-timeout", "2000"])
    r = refused(env, vm.target(0), {})
    r.says(r"tls:")
    vm.wait_stderr(r"does not speak TLS")


def test_missing_credentials(env, pki, tmp_path):
    vm = env.vm(RANGE, extra=["--tls-creds", pki[0]])
    r = refused(env, tls_target(vm), {})
    first = r.first
    assert first.startswith("ERR -22"), first
    r.says(r"COREIO_TLS_CREDS")
    r = refused(env, tls_target(vm), {"COREIO_TLS_CREDS": str(tmp_path / "nowhere")})
    r.says(r"nowhere/ca-cert\.pem")
