"""PEP 517 build backend of the coreio Python module: the project's Meson build, a wheel holding only the module.

pip runs it from pyproject.toml (`pip install .` at the top of the
repository). It configures the whole Meson project in a temporary
directory for the Python that runs pip (a native file names it), builds
only the extension module target of src/python/meson.build (with
libcoreio linked in statically) and packs the module and its stub,
coreio.pyi, into a wheel. It needs meson, ninja, a C compiler and the
Python headers (Debian: meson ninja-build gcc python3-dev), and nothing
from the network: the build requires no Python package, so it works with
and without pip's build isolation.

Why not meson-python: its 0.12 (Debian 12) puts every file the project
installs (coreio-vm, the examples, libcoreio.so and .a, headers,
pkg-config file) into the wheel and then needs patchelf to rewrite their
RPATHs; it cannot restrict a wheel to one install tag.
"""

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile

NAME = "coreio"
SUMMARY = "Device models for CoreIO VMs in Python (libcoreio bindings)"


def _root():
    """The source tree: pip runs the hooks in the directory holding pyproject.toml."""
    return os.path.abspath(os.getcwd())


def _version(root):
    """The version from the project() call of the top-level meson.build."""
    with open(os.path.join(root, "meson.build")) as f:
        m = re.search(r"project\([^)]*?version\s*:\s*'([^']+)'", f.read(), re.S)
    if not m:
        raise RuntimeError("coreio build backend: no version in meson.build")
    return m.group(1)


def _tool_env():
    """The environment for meson and ninja: without what pip's build isolation sets for
    Python, which would hide Debian's meson package from the meson program."""
    env = dict(os.environ)
    for k in ("PYTHONPATH", "PYTHONNOUSERSITE", "PYTHONHOME", "PYTHONSAFEPATH"):
        env.pop(k, None)
    return env


def _run(argv, cwd=None):
    print("coreio build backend: " + " ".join(argv), file=sys.stderr, flush=True)
    subprocess.run(argv, cwd=cwd, env=_tool_env(), check=True, stdout=sys.stderr)


def _build_module(root, build):
    """Configure the project in build for this Python and build the module; its path."""
    native = os.path.join(build, "python-native.ini")
    with open(native, "w") as f:
        f.write("[binaries]\npython = %r\n" % sys.executable)
    _run(["meson", "setup", build, root, "--native-file", native, "--buildtype=release",
          "-Dtests=false", "-Dpython=enabled"])
    out = subprocess.run(["meson", "introspect", "--targets", build], env=_tool_env(),
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    mods = [t for t in json.loads(out)
            if t["type"] == "shared module"
            and os.path.dirname(t["defined_in"]) == os.path.join(root, "src", "python")]
    if len(mods) != 1:
        raise RuntimeError("coreio build backend: no single extension module target in "
                           "src/python/meson.build (found %r)" % [t["name"] for t in mods])
    path = mods[0]["filename"][0]
    _run(["ninja", "-C", build, os.path.relpath(path, build)])
    return path


def _tag():
    """The wheel tag of this interpreter, e.g. cp311-cp311-linux_x86_64."""
    impl = "cp" if sys.implementation.name == "cpython" else sys.implementation.name[:2]
    ver = "%s%d%d" % (impl, sys.version_info[0], sys.version_info[1])
    plat = re.sub(r"[-.]", "_", sysconfig.get_platform())
    return "%s-%s%s-%s" % (ver, ver, getattr(sys, "abiflags", ""), plat)


def _record_line(arcname, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "%s,sha256=%s,%d" % (arcname, digest, len(data))


def _metadata(version):
    return ("Metadata-Version: 2.1\nName: %s\nVersion: %s\nSummary: %s\n"
            "License: Apache-2.0\nRequires-Python: >=3.10\n" % (NAME, version, SUMMARY))


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    distinfo = "%s-%s.dist-info" % (NAME, _version(_root()))
    os.makedirs(os.path.join(metadata_directory, distinfo), exist_ok=True)
    with open(os.path.join(metadata_directory, distinfo, "METADATA"), "w") as f:
        f.write(_metadata(_version(_root())))
    return distinfo


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    root = _root()
    version = _version(root)
    tag = _tag()
    build = tempfile.mkdtemp(prefix="coreio-wheel-")
    try:
        module = _build_module(root, build)
        with open(module, "rb") as f:
            so = f.read()
        with open(os.path.join(root, "src", "python", "coreio.pyi"), "rb") as f:
            stub = f.read()
    finally:
        shutil.rmtree(build, ignore_errors=True)
    distinfo = "%s-%s.dist-info" % (NAME, version)
    files = [
        (os.path.basename(module), so),
        ("coreio.pyi", stub),
        (distinfo + "/METADATA", _metadata(version).encode()),
        (distinfo + "/WHEEL", ("Wheel-Version: 1.0\nGenerator: coreio build_backend\n"
                               "Root-Is-Purelib: false\nTag: %s\n" % tag).encode()),
    ]
    record = [_record_line(n, d) for n, d in files] + [distinfo + "/RECORD,,"]
    files.append((distinfo + "/RECORD", ("\n".join(record) + "\n").encode()))
    name = "%s-%s-%s.whl" % (NAME, version, tag)
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as z:
        for n, d in files:
            info = zipfile.ZipInfo(n, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if n.endswith(".so") else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, d)
    return name
