"""libcoreio as a user gets it: exported symbols, meson install, pkg-config, a seed-API program."""

import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import BUILD_DIR as BUILD, R0

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def header_functions():
    text = open(os.path.join(ROOT, "include", "coreio.h")).read()
    return set(re.findall(r"COREIO_EXPORT\s+[\w\s\*]+?\b(coreio_\w+)\s*\(", text))


def sanitize_flags():
    """The -fsanitize flags of the build: a program using its library needs the same."""
    opts = json.loads(subprocess.run(["meson", "introspect", "--buildoptions", BUILD],
                                     capture_output=True, text=True, timeout=60,
                                     check=True).stdout)
    value = next((o["value"] for o in opts if o["name"] == "b_sanitize"), "none")
    return [] if value in ("none", "") else ["-fsanitize=" + value]


def test_only_public_symbols_exported():
    nm = shutil.which("nm")
    assert nm, "nm (binutils) is needed to list exported symbols"
    so = os.path.join(BUILD, "src", "lib", "libcoreio.so")
    out = subprocess.run([nm, "-D", "--defined-only", so], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    exported = {line.split()[-1] for line in out.splitlines()
                if len(line.split()) == 3 and line.split()[1] in "TDBR"}
    declared = header_functions()
    assert len(declared) >= 20
    # Exactly the functions the header declares: nothing internal leaks out,
    # and every public function is really there.
    assert exported == declared


def test_install_and_pkg_config_build(tmp_path, env):
    dest = tmp_path / "dest"
    subprocess.run(["meson", "install", "-C", BUILD, "--destdir", str(dest), "--quiet"],
                   check=True, timeout=120, capture_output=True)
    pcs = [os.path.join(d, f) for d, _, fs in os.walk(dest) for f in fs if f == "coreio.pc"]
    assert len(pcs) == 1, pcs
    headers = [os.path.join(d, f) for d, _, fs in os.walk(dest) for f in fs if f == "coreio.h"]
    assert len(headers) == 1
    assert any(f.startswith("libcoreio.so") for _, _, fs in os.walk(dest) for f in fs)
    assert any(f == "libcoreio.a" for _, _, fs in os.walk(dest) for f in fs)

    penv = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pcs[0]), PKG_CONFIG_SYSROOT_DIR=str(dest))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "coreio"],
                           env=penv, capture_output=True, text=True, timeout=30, check=True)
    exe = tmp_path / "responder"
    src = os.path.join(ROOT, "examples", "rpi-test", "responder.c")
    # The responder uses the seed API only, so this is a program written for
    # the reference library, built against the installed header and library.
    subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-o", str(exe), src]
                   + sanitize_flags() + flags.stdout.split(), check=True, timeout=120, capture_output=True)
    libdir = [a[2:] for a in flags.stdout.split() if a.startswith("-L")]
    assert libdir

    vm = env.vm("%#x,size=0x1000,port=0" % R0)
    p = env.proc(str(exe), vm.target(0), env={"LD_LIBRARY_PATH": libdir[0]})
    vm.wait_claim(0)
    vm.ok("writew %#x 0xbeef" % (R0 + 0x40))
    assert vm.value("readw %#x" % (R0 + 0x40)) == 0xBEEF
    p.wait_stdout(r"^write d0000040 2 000000000000beef 0$")


# scripts/qemu-root.sh: the Debian trixie root with QEMU 11.1 for coreio-qemu's vfio-user.
QEMU_ROOT_SH = os.path.join(ROOT, "scripts", "qemu-root.sh")
DEFAULT_QEMU_ROOT = os.environ.get("COREIO_QEMU_ROOT") or os.path.join(ROOT, "build", "qemu-root")


def qemu_root(*args, timeout=60, **kw):
    return subprocess.run([QEMU_ROOT_SH] + list(args), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout, **kw)


def test_qemu_root_help_and_usage():
    p = qemu_root("--help")
    assert p.returncode == 0
    for word in ("debootstrap", "trixie-backports", "coreio-qemu-system", "ROOT.tmp", "77",
                 "--verbose", "--quiet", "COREIO_QEMU_ROOT", "10.1"):
        assert word in p.stdout, word
    p = qemu_root("--bogus")
    assert p.returncode == 2 and "unknown option '--bogus'" in p.stderr
    p = qemu_root("a", "b")
    assert p.returncode == 2 and "one ROOT only (got 'a' and 'b')" in p.stderr


def test_qemu_root_never_replaces_what_is_not_a_debian_root(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    p = qemu_root(str(tmp_path))
    assert p.returncode == 1
    assert "%s exists and is not a Debian root" % tmp_path in p.stderr, p.stderr
    assert (tmp_path / "mine.txt").read_text() == "precious"
    assert not os.path.exists(str(tmp_path) + ".tmp")


def test_qemu_root_skips_loudly_without_privileges(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to run the script as another user")
    if shutil.which("sudo"):
        pytest.skip("sudo is installed: the script would use it")
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is missing")
    target = tmp_path / "root"
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        QEMU_ROOT_SH, str(target)], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=60)
    assert p.returncode == 77, p.stderr
    assert "SKIPPED: cannot build the QEMU 10.1+ root in %s" % target in p.stderr, p.stderr
    assert "is not root and has no sudo" in p.stderr
    assert not target.exists() and not os.path.exists(str(target) + ".tmp")


def test_qemu_root_recognises_a_complete_root():
    """A built root is reported at once, never rebuilt; its wrapper runs QEMU >= 10.1."""
    wrapper = os.path.join(DEFAULT_QEMU_ROOT, "coreio-qemu-system")
    if not os.path.isfile(os.path.join(DEFAULT_QEMU_ROOT, "usr", "bin", "qemu-system-x86_64")):
        pytest.skip("no QEMU root at %s (scripts/qemu-root.sh builds it; scripts/install-deps.sh "
                    "runs that)" % DEFAULT_QEMU_ROOT)
    stamp = os.stat(os.path.join(DEFAULT_QEMU_ROOT, "etc", "debian_version")).st_mtime_ns
    p = qemu_root(DEFAULT_QEMU_ROOT, timeout=20)
    assert p.returncode == 0, p.stderr
    assert re.search(r"^qemu-root: QEMU (\d+)\.(\d+)\.\d+ ready in %s \(run it as %s\)$"
                     % (re.escape(DEFAULT_QEMU_ROOT), re.escape(wrapper)), p.stderr, re.M), p.stderr
    assert "building" not in p.stderr and p.stdout == ""
    assert os.stat(os.path.join(DEFAULT_QEMU_ROOT, "etc", "debian_version")).st_mtime_ns == stamp
    p = qemu_root("--quiet", DEFAULT_QEMU_ROOT, timeout=20)
    assert p.returncode == 0 and p.stderr == "" and p.stdout == ""
    v = subprocess.run([wrapper, "--version"], capture_output=True, text=True, timeout=20,
                       stdin=subprocess.DEVNULL)
    m = re.search(r"QEMU emulator version (\d+)\.(\d+)", v.stdout)
    assert v.returncode == 0 and m and (int(m.group(1)), int(m.group(2))) >= (10, 1), v
    # The root's own modules, not the host's QEMU 7.2 ones; the device coreio-qemu needs.
    d = subprocess.run([wrapper, "-nodefaults", "-machine", "none", "-device",
                        "vfio-user-pci,help"], capture_output=True, text=True, timeout=20,
                       stdin=subprocess.DEVNULL)
    assert d.returncode == 0 and "socket=" in d.stdout, d.stderr
    assert "Only modules from the same build" not in d.stderr, d.stderr
