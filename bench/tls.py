#!/usr/bin/env python3
"""Benchmark: TLS 1.3 against plain TCP, same VM, same run: DMA MB/s and the MMIO round trip.

Starts `coreio-vm --accel qtest` with two ranges on two TCP ports, one plain
and one with `tls=on` (X.509 credentials made for the run with openssl, as
the tests make theirs; `--psk` uses a pre-shared key instead), then:

  DMA   one coreio-testclient per port doing blocking `dma_bench` transfers
        of each --sizes size (default 64 KiB and 1 MiB) both ways, timed
        inside the client; the best of --repeat rounds after a warm-up,
        the two ports interleaved; every read must return what the write
        sent (FNV-1a), else the run fails.
  MMIO  one coreio-timerdma per port answering qtest `bench_read` (4-byte
        reads timed inside coreio-vm); the median of --repeat rounds.

Output, one JSON line each:

  {"bench": "tls", "what": "dma", "dir": "read", "size": 1048576, "path": "tcp"|"tls", "mb_s": ...}
  {"bench": "tls", "what": "dma", "dir": "read", "size": 1048576, "ratio_tls_tcp": ...,
   "target": ">= 0.6" (1 MiB), "met": ...}
  {"bench": "tls", "what": "mmio", "path": "tcp"|"tls", "ns_per_op": ..., "runs": [...]}
  {"bench": "tls", "what": "mmio", "ratio_tls_tcp": ...}

The issue's target: TLS DMA at 1 MiB >= 0.6 of plain TCP. Nothing is
asserted on the figures.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import benchlib as bl  # noqa: E402
import tlsutil  # noqa: E402

BENCH = "tls"
DATA = 0x1000000
RANGE = 0xD0000000
TD_ID_VALUE = 0x434F5254  # coreio-timerdma's ID register at offset 0
MB = 1 << 20


def dma(client, direction, size, n, seed=0):
    cmd = "dma_bench 0 0 %#x %d %d %s" % (DATA, size, n, direction)
    if direction == "write":
        cmd += " %d" % seed
    a = client.answer(cmd, timeout=600)
    m = re.match(r"OK ns=(\d+) count=(\d+) fnv=([0-9a-f]+)", a)
    if not m:
        raise SystemExit("bench: FAILED: %r -> %r" % (cmd, a))
    return size * n / max(int(m.group(1)), 1) * 1e3, m.group(3)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build", help="meson build directory (default: build)")
    ap.add_argument("--sizes", default="64K,1M", help="DMA sizes (default 64K,1M; K/M suffixes)")
    ap.add_argument("--bytes", type=bl.parse_size, default=64 * MB,
                    help="bytes per measurement and path (default 64M)")
    ap.add_argument("--n", type=int, default=3000, help="MMIO reads per round (default 3000)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")
    ap.add_argument("--psk", action="store_true", help="a pre-shared key instead of X.509")
    args = ap.parse_args()
    try:
        sizes = [bl.parse_size(s) for s in args.sizes.split(",")]
    except ValueError as e:
        ap.error("--sizes: %s" % e)
    if not tlsutil.have_openssl():
        bl.emit({"bench": BENCH, "skipped": "needs the openssl command"})
        return 0

    tmp = tempfile.mkdtemp(prefix="coreio-bench-tls-")
    if args.psk:
        creds = ["--tls-psk", tlsutil.make_psk_file(os.path.join(tmp, "keys.psk"))]
        cenv = {"COREIO_TLS_PSK": creds[1]}
    else:
        d = tlsutil.make_x509_dir(os.path.join(tmp, "pki"))
        creds = ["--tls-creds", d]
        cenv = {"COREIO_TLS_CREDS": d}
    env = dict(os.environ, **cenv)
    argv = [bl.exe(args.build, "src/vm/coreio-vm"), "--accel", "qtest", "--qtest", "stdio",
            "--mem", "64M"] + creds
    # Ranges 0 (plain) and 1 (TLS) for the DMA clients, 2 and 3 for the MMIO models.
    for g, tls in enumerate((False, True, False, True)):
        argv += ["--vmmio", "%#x,size=0x1000,port=0%s" % (RANGE + g * 0x1000,
                                                          ",tls=on" if tls else "")]
    err = tempfile.TemporaryFile(mode="w+")
    vm = bl.Line(argv, name="coreio-vm", stderr=err)
    procs = [vm]
    try:
        targets = bl.wait_listening(err, vm.p, 4)

        def target(g):
            info = dict(kv.split("=", 1) for kv in vm.ok("vmmio_info %d" % g)[3:].split())
            t = next(t for t in targets if t == info["port"] or t.endswith(":" + info["port"]))
            return ("tls:" if g % 2 else "") + t

        clients = {}
        for g, name in ((0, "tcp"), (1, "tls")):
            c = bl.Line([bl.exe(args.build, "tests/clients/coreio-testclient"), target(g)],
                        name="coreio-testclient (%s)" % name, env=env)
            procs.append(c)
            first = c.read(30)
            if not first.startswith("OK connected caps=3"):
                raise SystemExit("bench: %s client: %s" % (name, first))
            clients[name] = c
        for g, name in ((2, "tcp"), (3, "tls")):
            p = subprocess.Popen([bl.exe(args.build, "examples/coreio-timerdma"), "--rid", "0",
                                  target(g)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=env)
            procs.append(p)
            vm.ok("vmmio_wait %d 10000" % g)

        for size in sizes:
            n = max(1, min(args.bytes // size, 4096))
            best = {(p, d): 0.0 for p in clients for d in ("write", "read")}
            for rnd in range(args.repeat + 1):
                for i, (name, c) in enumerate(clients.items()):
                    seed = (rnd * 16 + i * 3 + 1) & 0xFF
                    w, fw = dma(c, "write", size, n, seed)
                    r, fr = dma(c, "read", size, n)
                    if fr != fw:
                        raise SystemExit("bench: FAILED: %s: a %d-byte read returned fnv %s, "
                                         "the write sent %s" % (name, size, fr, fw))
                    if rnd:
                        best[(name, "write")] = max(best[(name, "write")], w)
                        best[(name, "read")] = max(best[(name, "read")], r)
            for d in ("write", "read"):
                for name in clients:
                    bl.emit({"bench": BENCH, "what": "dma", "dir": d, "size": size,
                             "path": name, "mb_s": round(best[(name, d)], 1), "n": n})
                line = {"bench": BENCH, "what": "dma", "dir": d, "size": size,
                        "ratio_tls_tcp": bl.ratio(best[("tls", d)], best[("tcp", d)])}
                if size >= MB:
                    line["target"] = ">= 0.6"
                    line["met"] = line["ratio_tls_tcp"] >= 0.6
                bl.emit(line)

        runs = {"tcp": [], "tls": []}
        for rnd in range(args.repeat + 1):
            for g, name in ((2, "tcp"), (3, "tls")):
                cnt = args.n if rnd else max(1, args.n // 10)
                a = vm.answer("bench_read %#x 4 %d" % (RANGE + g * 0x1000, cnt),
                              timeout=max(120, cnt // 100))
                m = re.match(r"OK ns=(\d+) count=(\d+) value=0x([0-9a-f]+)", a)
                if not m or int(m.group(2)) != cnt or int(m.group(3), 16) != TD_ID_VALUE:
                    raise SystemExit("bench: FAILED: %s: bench_read -> %r" % (name, a))
                if rnd:
                    runs[name].append(round(int(m.group(1)) / cnt))
        med = {k: statistics.median(v) for k, v in runs.items()}
        for name in runs:
            bl.emit({"bench": BENCH, "what": "mmio", "path": name, "ns_per_op": med[name],
                     "runs": runs[name]})
        bl.emit({"bench": BENCH, "what": "mmio", "ratio_tls_tcp": bl.ratio(med["tls"],
                                                                           med["tcp"])})
    finally:
        bl.stop_all(procs)
        err.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    t0 = time.monotonic()
    rc = main()
    print("# tls: %.0f s" % (time.monotonic() - t0), file=sys.stderr)
    sys.exit(rc)
