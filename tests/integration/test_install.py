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
