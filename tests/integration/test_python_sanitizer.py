"""In a sanitizer build: test_python_module.py again, in a child pytest with the sanitizer runtime preloaded.

An ASan- or TSan-instrumented extension module cannot be imported into an
uninstrumented python3 unless the sanitizer's runtime is loaded first, so
test_python_module.py skips itself in the sanitizer passes of
scripts/test.sh, and this test runs it in a child python3 started with
LD_PRELOAD (and, for ASan, detect_leaks=0: python3 itself leaks at exit).
The child's failures and sanitizer reports fail this test.
"""

import os
import re
import subprocess
import sys

import pytest

from conftest import SANITIZE, SANITIZER, scaled
from test_python_module import module_built, needed_runtime, preload_env, runtime_loaded

pytestmark = pytest.mark.concurrency

HERE = os.path.dirname(os.path.abspath(__file__))


def test_module_tests_with_sanitizer_runtime():
    lib = needed_runtime()
    if not lib:
        pytest.skip("not a sanitizer build: test_python_module.py runs in this process")
    if not module_built():
        pytest.skip("the Python module coreio is not built (python3-dev missing?)")
    assert not runtime_loaded(lib), "already inside the child"
    argv = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
            os.path.join(HERE, "test_python_module.py")]
    if "thread" in SANITIZE:  # the TSan pass runs the concurrency tests only
        argv += ["-m", "concurrency"]
    env = dict(os.environ)
    env.update(preload_env())
    r = subprocess.run(argv, cwd=HERE, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=scaled(300))
    out = r.stdout
    print(out[-3000:])
    reports = [line for line in out.splitlines() if SANITIZER.search(line)]
    assert r.returncode == 0 and not reports, "child pytest (%s) failed, status %d:\n%s" % (
        " ".join("%s=%s" % kv for kv in preload_env().items()), r.returncode, out[-8000:])
    summary = out.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and "skipped" not in summary, summary
