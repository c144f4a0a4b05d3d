"""TLS credentials for tests, made at test time with Debian's openssl (never committed).

make_x509_dir(path, ca_name) writes QEMU's layout: ca-cert.pem, server-cert.pem,
server-key.pem (for 127.0.0.1, ::1 and localhost), client-cert.pem and client-key.pem,
all signed by a fresh CA named ca_name. make_psk_file(path, identity) writes a
keys.psk line "identity:hexkey" with a fresh random key.
"""

import os
import secrets
import shutil
import subprocess


def have_openssl():
    """Whether the openssl command is there (tests that need it skip, naming it, when not)."""
    return shutil.which("openssl") is not None


def _run(args, cwd):
    r = subprocess.run(["openssl"] + args, cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args), r.stderr.decode()))


def _key(cwd, name):
    _run(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
          name], cwd)


def _signed(cwd, stem, cn, ext):
    _key(cwd, stem + "-key.pem")
    _run(["req", "-new", "-key", stem + "-key.pem", "-subj", "/CN=" + cn, "-out",
          stem + ".csr"], cwd)
    with open(os.path.join(cwd, stem + ".ext"), "w") as f:
        f.write(ext)
    _run(["x509", "-req", "-in", stem + ".csr", "-CA", "ca-cert.pem", "-CAkey", "ca-key.pem",
          "-CAcreateserial", "-days", "2", "-sha256", "-extfile", stem + ".ext", "-out",
          stem + "-cert.pem"], cwd)
    for junk in (stem + ".csr", stem + ".ext"):
        os.unlink(os.path.join(cwd, junk))


def make_x509_dir(path, ca_name="coreio test CA", server_names=("localhost",)):
    """A credentials directory in QEMU's layout, signed by a new CA; returns path."""
    os.makedirs(path, exist_ok=True)
    _key(path, "ca-key.pem")
    _run(["req", "-new", "-x509", "-key", "ca-key.pem", "-subj", "/CN=" + ca_name, "-days",
          "2", "-sha256", "-addext", "basicConstraints=critical,CA:TRUE", "-addext",
          "keyUsage=critical,keyCertSign,cRLSign", "-out", "ca-cert.pem"], path)
    san = ",".join(["IP:127.0.0.1", "IP:::1"] + ["DNS:" + n for n in server_names])
    _signed(path, "server", "coreio-vm",
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
            "extendedKeyUsage=serverAuth\nsubjectAltName=%s\n" % san)
    _signed(path, "client", "coreio-model",
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
            "extendedKeyUsage=clientAuth\n")
    return path


def make_psk_file(path, identity="model", key_bytes=32):
    """A keys.psk file with one fresh key for identity; returns path."""
    with open(path, "w") as f:
        f.write("%s:%s\n" % (identity, secrets.token_hex(key_bytes)))
    os.chmod(path, 0o600)
    return path
