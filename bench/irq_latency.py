#!/usr/bin/env python3
"""Benchmark: IRQ round trip (guest doorbell write -> client raises the line -> guest ISR) vs in-VMM.

Runs the bench_irq test guest (tests/guests/) under `coreio-vm --accel kvm`
with range 0 on an edge-triggered IOAPIC pin, served by coreio-testclient
with `irq_on_write 0 0x10 0`: each guest write to the doorbell (offset
0x10, a posted write) makes the client raise and lower IRQ line 0. The CPL
3 loop reads the TSC, writes the doorbell and waits; the ISR (CPL 0)
records the TSC at its entry. Average over N; every interrupt is counted
exactly (a missing, doubled or unasked-for one fails the guest).

The baseline comes from the same guest run: N in-VMM round trips (write the
test device's scratch register, read it back, checked), so the cost of the
IRQ path is visible next to one plain KVM exit there and back; and the raw
64-byte socket ping-pong (coreio-baselines pingpong), since the IRQ path is
one message to the client and one back.

  {"bench": "irq_latency", "path": "coreio-tcp", "ns_per_op": ..., "min_ns": ..., "n": ..., "runs": [...]}
  {"bench": "irq_latency", "path": "in-vmm-rt", ...}
  {"bench": "irq_latency", "baseline": "pingpong-tcp", "ns_per_op": ...}
  {"bench": "irq_latency", "ratios": {"tcp/in-vmm-rt": ..., "tcp/(in-vmm-rt+pingpong-tcp)": ...}}

Where KVM is unusable it prints {"bench": "irq_latency", "skipped": REASON}
and exits 0.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

BENCH = "irq_latency"
RANGE = 0xD0000000
DOORBELL = 0x10
PIN = 5


def guest_run(build, n, vmmio):
    """One bench_irq run; returns the guest's 'irq' and 'invmm_rt' BENCH fields."""
    client = bl.exe(build, "tests/clients/coreio-testclient")

    def start(targets):
        c = bl.Line([client, targets[0]], name="coreio-testclient")
        try:
            first = c.read(30)
            if not first.startswith("OK connected"):
                raise SystemExit("bench: coreio-testclient: %s" % first)
            # Armed before the claim: the guest rings the doorbell as soon as the range answers.
            c.ok("irq_on_write 0 %#x 0" % DOORBELL)
            c.ok("register 0")
        except BaseException:
            c.stop()
            raise
        return [c]

    out = bl.run_guest(build, "bench_irq", "n=%d doorbell=%#x" % (n, DOORBELL), vmmio=[vmmio],
                       start_clients=start)
    return bl.bench_line(out, "irq"), bl.bench_line(out, "invmm_rt")


def main():
    ap = bl.guest_bench_parser(__doc__, 2000, "interrupts")
    args = ap.parse_args()

    sock = bl.kvm_guest_setup(BENCH)
    if sock is None:
        return 0
    paths = [("coreio-tcp", "%#x,size=0x1000,irq=%d,port=0" % (RANGE, PIN)),
             ("coreio-unix", "%#x,size=0x1000,irq=%d,port=unix:%s" % (RANGE, PIN, sock))]
    res = {}
    invmm = []
    try:
        for name, vmmio in paths:
            runs = [guest_run(args.build, args.n, vmmio) for _ in range(args.repeat)]
            best = min((r[0] for r in runs), key=lambda r: r["ns_per_op"])
            res[name] = best["ns_per_op"]
            invmm += [r[1] for r in runs]
            bl.emit({"bench": BENCH, "path": name, "ns_per_op": best["ns_per_op"],
                     "min_ns": best["min_ns"], "n": args.n,
                     "runs": [r[0]["ns_per_op"] for r in runs]})
    finally:
        try:
            os.rmdir(os.path.dirname(sock))
        except OSError:
            pass
    best = min(invmm, key=lambda r: r["ns_per_op"])
    res["in-vmm-rt"] = best["ns_per_op"]
    bl.emit({"bench": BENCH, "path": "in-vmm-rt", "ns_per_op": best["ns_per_op"],
             "min_ns": best["min_ns"], "n": args.n, "runs": [r["ns_per_op"] for r in invmm]})
    for tr in ("tcp", "unix"):
        runs = [bl.baseline(args.build, "pingpong", tr, "--n", 5000)["ns_per_op"]
                for _ in range(args.repeat)]
        res["pingpong-" + tr] = min(runs)
        bl.emit({"bench": BENCH, "baseline": "pingpong-" + tr, "ns_per_op": round(min(runs)),
                 "runs": [round(r) for r in runs]})
    base = res["in-vmm-rt"]
    bl.emit({"bench": BENCH, "ratios": {
        "tcp/in-vmm-rt": bl.ratio(res["coreio-tcp"], base, 2),
        "unix/in-vmm-rt": bl.ratio(res["coreio-unix"], base, 2),
        "tcp/(in-vmm-rt+pingpong-tcp)": bl.ratio(res["coreio-tcp"], base + res["pingpong-tcp"]),
        "unix/(in-vmm-rt+pingpong-unix)": bl.ratio(res["coreio-unix"],
                                                   base + res["pingpong-unix"])}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
