"""Randomized torture of order at the device boundary: coreio-ordermodel against a Python model.

A seeded generator issues pipelined qtest commands to coreio-ordermodel's two
ranges (rid 0 posted, rid 1 acked, one connection): register writes and reads,
blocking and non-blocking DMA in callbacks, IRQ updates in callbacks, faults,
while the model's background thread does its own DMA and flips an IRQ line.
A Python model of the device computes every answer and every IRQ edge of the
callback-driven lines, and where each edge must show up in the VM's output.

COREIO_TORTURE_SEED fixes the seed (default: a fresh one, printed);
COREIO_TORTURE_OPS sets the operations per variant (default 20000).
"""

import os
import random
import time

import pytest

from test_order import (DMA_DST, DMA_ERRS, DMA_IRQ, DMA_SRC, DST_COUNT, FAIL, GHASH, GWCOUNT,
                        HASH, ID, IRQ, NB_DONE, NB_DST, NB_ERRS, NB_SRC, NBSUM0, NBSUM1, NEST,
                        PINS, SCRATCH, SEQ, STATE0, STATE1, THREAD_CTL, THREAD_ERRS, THREAD_IRQS,
                        THREAD_OPS, THREAD_PIN, TRANSPORTS, WCOUNT, M64, Script, le64, mix,
                        describe, order_vm, readq, reg, scaled, start_model, writeq)

SEED = int(os.environ.get("COREIO_TORTURE_SEED") or random.SystemRandom().getrandbits(32))
OPS = int(os.environ.get("COREIO_TORTURE_OPS") or 20000)

# Guest RAM the generator owns (the model's thread uses 0x3f00000.. on its own).
SRC, DST, NBSRC, NBDST = 0x100000, 0x200000, 0x300000, 0x400000
SRC_SLOTS, DST_SLOTS, NBSRC_SLOTS, NBDST_SLOTS = 256, 256, 64, 4096
FAULTS = (0x7FFF0000, 0x3FFFFF8)  # outside RAM; across its end
NB_MAX = 24  # non-blocking transfers between two checkpoints (the model has 64 slots)
CB_LINES = ((0, 0), (1, 0), (1, 1))  # (rid, iid) lines that callbacks drive
WAIT_S = scaled(10)  # bound of every polling loop

PLAIN = (SCRATCH, SEQ, STATE0, STATE1)


def hx(v):
    return "OK 0x%016x" % v


class Cmd:
    __slots__ = ("text", "expect", "sync", "edges", "op", "special")

    def __init__(self, text, expect, sync, edges, op, special=None):
        self.text, self.expect, self.sync, self.edges = text, expect, sync, edges
        self.op, self.special = op, special


class Torture:
    def __init__(self, vm, variant):
        self.vm = vm
        self.variant = variant
        self.rnd = random.Random("%d/%s" % (SEED, variant))
        self.script = Script(vm, "[seed %d, %s]" % (SEED, variant))
        self.batch = []
        self.history = []
        self.op = 0
        self.ncmds = 0
        # The device as the model must see it.
        self.regs = [{ID: 0x4F52444D00000000 | rid, SCRATCH: 0, SEQ: 0, STATE0: 0, STATE1: 0,
                      WCOUNT: 0, HASH: 0, DST_COUNT: 0, DMA_ERRS: 0} for rid in (0, 1)]
        self.ghash = self.gwcount = 0
        self.nbsum = [[0, 0], [0, 0]]
        self.nb_done = [0, 0]
        self.nb_out = 0
        self.nbdst_next = 0
        self.nbdst_pending = []
        self.level = {line: 0 for line in CB_LINES}
        self.src_ram = [bytes(16)] * SRC_SLOTS
        self.dst_ram = [bytes(16)] * DST_SLOTS
        self.nbsrc_ram = []
        # Effects of posted writes not yet ordered with qtest's own RAM/IRQ accesses.
        self.unsettled = set()
        # IRQ edges: expected per pin, (action, index of the command causing it).
        self.want_edges = {PINS[r][i]: [] for r, i in CB_LINES}
        self.thread_edges = 0
        self.thread_running = False
        self.counts = {}
        self.model = None
        self.cur_op = 0  # the operation whose command is being checked

    # -- failure reports ----------------------------------------------------

    def fail(self, what):
        hist = "\n".join("  #%d op %d: %s" % h for h in self.history[-12:])
        raise AssertionError("[seed %d, %s, op %d] %s\nlast commands:\n%s\nmodel stderr:\n%s"
                             % (SEED, self.variant, self.cur_op, what, hist,
                                self.model.stderr_tail() if self.model else ""))

    # -- command stream -----------------------------------------------------

    def add(self, text, expect, sync=False, edges=(), special=None):
        self.batch.append(Cmd(text, expect, sync, list(edges), self.op, special))
        if sync:
            self.unsettled.clear()

    def flush(self):
        """Run the batch; check every answer and the position of every IRQ edge."""
        batch, self.batch = self.batch, []
        if not batch:
            return []
        res = self.script.run([c.text for c in batch])
        values = []
        for c, (ans, irqs) in zip(batch, res):
            k = self.ncmds
            self.ncmds += 1
            self.cur_op = c.op
            self.history.append((k, c.op, "%s -> %s" % (describe(c.text), ans)))
            del self.history[:-50]
            for e in c.edges:
                self.want_edges[e[1]].append((e[0], k))
            for action, pin in irqs:
                self.observe(action, pin, k)
            if c.special == "thread_irqs":
                self.check_thread_irqs(ans)
            elif c.expect is not None and ans != c.expect:
                self.fail("%s answered %r, expected %r" % (describe(c.text), ans, c.expect))
            if c.sync:
                late = [(pin, w) for pin, ws in self.want_edges.items() for w in ws if w[1] <= k]
                if late:
                    self.fail("IRQ edges %r (pin, (action, causing command #)) not seen "
                              "before the answer to %s (#%d)" % (late, describe(c.text), k))
            values.append(ans)
        return values

    def observe(self, action, pin, k):
        if pin == THREAD_PIN:
            want = "lower" if self.thread_edges & 1 else "raise"
            if action != want:
                self.fail("thread line %d: %s after %d edges (lost or doubled edge)"
                          % (pin, action, self.thread_edges))
            self.thread_edges += 1
            return
        ws = self.want_edges.get(pin)
        if not ws:
            self.fail("unexpected 'IRQ %s %d' before answer #%d (the model expects no edge: "
                      "callbacks out of order?)" % (action, pin, k))
        if ws[0][0] != action or ws[0][1] > k:
            self.fail("'IRQ %s %d' before answer #%d, expected %r (action, causing command #)"
                      % (action, pin, k, ws[0]))
        ws.pop(0)

    def check_thread_irqs(self, ans):
        if not ans.startswith("OK 0x"):
            self.fail("THREAD_IRQS read answered %r" % ans)
        c = int(ans[3:], 16)
        # Each of the thread's updates left the process before it was counted: the VM saw at
        # least c; one or two more may have been sent between the count and the answer.
        if not c <= self.thread_edges <= c + 2:
            self.fail("the thread counts %d IRQ updates but the VM printed %d edges before the "
                      "answer (lost or late IRQ frame)" % (c, self.thread_edges))

    # -- model helpers ------------------------------------------------------

    def recorded(self, rid, off, v):
        r = self.regs[rid]
        r[WCOUNT] += 1
        r[HASH] = mix(r[HASH], v, off)
        self.gwcount += 1
        self.ghash = mix(self.ghash, v, rid << 16 | off)

    def value(self, rid, off):
        if off == GHASH:
            return self.ghash
        if off == GWCOUNT:
            return self.gwcount
        return self.regs[rid][off]

    def posted(self, rid, *keys):
        if rid == 0:
            self.unsettled.update(keys)

    def set_level(self, rid, iid, level):
        if self.level[(rid, iid)] == level:
            return []
        self.level[(rid, iid)] = level
        return [("raise" if level else "lower", PINS[rid][iid])]

    def settle(self, *keys):
        """Order qtest's next RAM/IRQ access after the callbacks of earlier posted writes."""
        if self.unsettled.intersection(keys):
            self.op_read()

    # -- operations ---------------------------------------------------------

    def op_read(self):
        rid = self.rnd.randrange(2)
        off = self.rnd.choice(PLAIN + (ID, WCOUNT, HASH, GHASH, GWCOUNT, DST_COUNT, DMA_ERRS))
        self.add(readq(rid, off), hx(self.value(rid, off)), sync=True)

    def op_write(self, rid):
        off = self.rnd.choice(PLAIN)
        v = self.rnd.getrandbits(64)
        self.regs[rid][off] = v
        self.recorded(rid, off, v)
        self.add(writeq(rid, off, v), "OK", sync=rid == 1)

    def src_slot(self):
        slot = self.rnd.randrange(SRC_SLOTS)
        if self.rnd.random() < 0.6:
            data = self.rnd.randbytes(16)
            self.settle(("src", slot))
            self.add("write %#x 16 0x%s" % (SRC + 16 * slot, data.hex()), "OK")
            self.src_ram[slot] = data
        return slot

    def op_src(self, rid, irq=False):
        slot = self.src_slot()
        data = self.src_ram[slot]
        r = self.regs[rid]
        r[STATE0], r[STATE1] = le64(data[:8]), le64(data[8:])
        off = DMA_IRQ if irq else DMA_SRC
        edges = self.set_level(rid, 0, r[STATE0] & 1) if irq else []
        self.recorded(rid, off, SRC + 16 * slot)
        self.posted(rid, ("src", slot), ("pin", PINS[rid][0]))
        self.add(writeq(rid, off, SRC + 16 * slot), "OK", sync=rid == 1, edges=edges)

    def state_bytes(self, rid):
        r = self.regs[rid]
        return r[STATE0].to_bytes(8, "little") + r[STATE1].to_bytes(8, "little")

    def op_dst(self, rid):
        slot = self.rnd.randrange(DST_SLOTS)  # DMA writes to one slot stay in order
        self.dst_ram[slot] = self.state_bytes(rid)
        self.regs[rid][DST_COUNT] += 1
        self.recorded(rid, DMA_DST, DST + 16 * slot)
        self.posted(rid, ("dst", slot))
        self.add(writeq(rid, DMA_DST, DST + 16 * slot), "OK", sync=rid == 1)

    def op_ramchk(self):
        slot = self.rnd.randrange(DST_SLOTS)
        self.settle(("dst", slot))
        self.add("read %#x 16" % (DST + 16 * slot), "OK 0x" + self.dst_ram[slot].hex())

    def op_irq(self, rid):
        iid = 0 if rid == 0 else self.rnd.randrange(2)
        level = self.rnd.randrange(2)
        v = iid << 8 | level | self.rnd.getrandbits(8) << 16  # high bits are ignored
        edges = self.set_level(rid, iid, level)
        self.recorded(rid, IRQ, v)
        self.posted(rid, ("pin", PINS[rid][iid]))
        self.add(writeq(rid, IRQ, v), "OK", sync=rid == 1, edges=edges)

    def op_irq_level(self):
        rid, iid = self.rnd.choice(CB_LINES)
        pin = PINS[rid][iid]
        self.settle(("pin", pin))
        self.add("irq_level %d" % pin, "OK %d" % self.level[(rid, iid)])

    def op_fault(self, rid):
        off = self.rnd.choice((DMA_SRC, DMA_DST, DMA_IRQ))
        self.regs[rid][DMA_ERRS] += 1  # a failed DMA: bus error, nothing recorded
        self.add(writeq(rid, off, self.rnd.choice(FAULTS)),
                 "FAIL bus-error" if rid == 1 else "OK", sync=rid == 1)

    def op_bad_access(self, rid):
        k = self.rnd.randrange(4)
        if k == 0:
            self.add(readq(rid, FAIL + 8 * self.rnd.randrange(32)), "FAIL bus-error", sync=True)
        elif k == 1:
            self.add("readl %#x" % reg(rid, SEQ), "FAIL bus-error", sync=True)
        else:
            self.add(writeq(rid, FAIL + 8 * self.rnd.randrange(32), self.rnd.getrandbits(64)),
                     "FAIL bus-error" if rid == 1 else "OK", sync=rid == 1)

    def op_nb(self, rid):
        if self.nb_out >= NB_MAX:
            self.checkpoint()
        self.nb_out += 1
        self.nb_done[rid] += 1
        if self.rnd.randrange(2):
            slot = self.rnd.randrange(NBSRC_SLOTS)
            data = self.nbsrc_ram[slot]
            self.nbsum[rid][0] = (self.nbsum[rid][0] + le64(data[:8])) & M64
            self.nbsum[rid][1] = (self.nbsum[rid][1] + le64(data[8:])) & M64
            off, addr = NB_SRC, NBSRC + 16 * slot
        else:
            off, addr = NB_DST, NBDST + 16 * (self.nbdst_next % NBDST_SLOTS)
            self.nbdst_next += 1
            self.nbdst_pending.append((addr, self.state_bytes(rid)))
        self.recorded(rid, off, addr)
        self.add(writeq(rid, off, addr), "OK", sync=rid == 1)

    def op_thread_irqs(self):
        self.add(readq(self.rnd.randrange(2), THREAD_IRQS), None, sync=True,
                 special="thread_irqs")

    def op_thread_ctl(self, on):
        rid = self.rnd.randrange(2)
        self.recorded(rid, THREAD_CTL, on)
        self.thread_running = bool(on)
        self.add(writeq(rid, THREAD_CTL, on), "OK", sync=rid == 1)

    def poll(self, cmds, done, what):
        """Read cmds (device reads) until done(values); bounded by WAIT_S."""
        deadline = time.monotonic() + WAIT_S
        self.flush()
        while True:
            for c in cmds:
                self.add(c, None, sync=True)
            vals = self.flush()
            if all(v.startswith("OK 0x") for v in vals) and done([int(v[3:], 16) for v in vals]):
                return
            if time.monotonic() > deadline:
                self.fail("%s: still %r after %ss" % (what, vals, WAIT_S))

    def checkpoint(self):
        """Wait for the non-blocking transfers; check their sums, RAM and the thread's counts."""
        self.poll([readq(0, NB_DONE), readq(1, NB_DONE)], lambda v: v == self.nb_done,
                  "NB_DONE (expected %r)" % self.nb_done)
        for rid in (0, 1):
            self.add(readq(rid, NB_ERRS), hx(0), sync=True)
            self.add(readq(rid, NBSUM0), hx(self.nbsum[rid][0]), sync=True)
            self.add(readq(rid, NBSUM1), hx(self.nbsum[rid][1]), sync=True)
        for addr, data in self.nbdst_pending:
            self.add("read %#x 16" % addr, "OK 0x" + data.hex())
        self.nbdst_pending = []
        self.nb_out = 0
        self.add(readq(0, THREAD_ERRS), hx(0), sync=True)
        self.add(readq(1, NEST), hx(0), sync=True)
        self.op_thread_irqs()
        self.flush()

    KINDS = (("read", 14), ("write0", 10), ("write1", 8), ("src", 12), ("dst", 8),
             ("ramchk", 5), ("irq", 8), ("dmairq", 6), ("irqlvl", 4), ("fault", 2),
             ("bad", 2), ("nb", 8), ("thread_irqs", 2), ("thread_ctl", 1))

    def one_op(self):
        kinds, weights = zip(*self.KINDS)
        kind = self.rnd.choices(kinds, weights)[0]
        rid = self.rnd.randrange(2)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind == "read":
            self.op_read()
        elif kind == "write0":
            self.op_write(0)
        elif kind == "write1":
            self.op_write(1)
        elif kind == "src":
            self.op_src(rid)
        elif kind == "dst":
            self.op_dst(rid)
        elif kind == "ramchk":
            self.op_ramchk()
        elif kind == "irq":
            self.op_irq(rid)
        elif kind == "dmairq":
            self.op_src(rid, irq=True)
        elif kind == "irqlvl":
            self.op_irq_level()
        elif kind == "fault":
            self.op_fault(rid)
        elif kind == "bad":
            self.op_bad_access(rid)
        elif kind == "nb":
            self.op_nb(rid)
        elif kind == "thread_irqs":
            self.op_thread_irqs()
        else:
            # Mostly running: stop now and then, and start again on the next one.
            self.op_thread_ctl(0 if self.thread_running and self.rnd.random() < 0.5 else 1)

    def setup(self):
        """Guest RAM the generator owns: known contents, then the model."""
        src = self.rnd.randbytes(16 * SRC_SLOTS)
        self.src_ram = [src[16 * i:16 * i + 16] for i in range(SRC_SLOTS)]
        nbsrc = self.rnd.randbytes(16 * NBSRC_SLOTS)
        self.nbsrc_ram = [nbsrc[16 * i:16 * i + 16] for i in range(NBSRC_SLOTS)]
        self.add("write %#x %d 0x%s" % (SRC, len(src), src.hex()), "OK")
        self.add("write %#x %d 0x%s" % (NBSRC, len(nbsrc), nbsrc.hex()), "OK")
        self.add("memset %#x %d 0" % (DST, 16 * DST_SLOTS), "OK")
        self.add("memset %#x %d 0" % (NBDST, 16 * NBDST_SLOTS), "OK")
        self.add("irq_intercept_in ioapic", "OK")
        self.flush()

    def run(self, ops):
        self.op_thread_ctl(1)
        self.flush()
        while self.op < ops:
            for _ in range(self.rnd.randint(1, 64)):
                self.one_op()
                self.op += 1
            self.flush()
            if self.rnd.random() < 0.05:
                self.checkpoint()
        # The end: stop the thread, wait until it is idle, then every count is exact.
        self.op_thread_ctl(0)
        self.poll([readq(0, THREAD_CTL)], lambda v: v == [0], "THREAD_CTL (thread still busy)")
        self.checkpoint()
        vals = self.flush_values([readq(0, THREAD_IRQS), readq(0, THREAD_OPS)])
        if vals[0] != self.thread_edges:
            self.fail("the thread sent %d IRQ updates, the VM printed %d edges"
                      % (vals[0], self.thread_edges))
        for rid in (0, 1):
            for off in (WCOUNT, HASH, DST_COUNT, DMA_ERRS) + PLAIN:
                self.add(readq(rid, off), hx(self.value(rid, off)), sync=True)
        self.add(readq(0, GHASH), hx(self.ghash), sync=True)
        self.add(readq(0, GWCOUNT), hx(self.gwcount), sync=True)
        for rid, iid in CB_LINES:
            self.add("irq_level %d" % PINS[rid][iid], "OK %d" % self.level[(rid, iid)])
        self.flush()
        return vals[1]

    def flush_values(self, cmds):
        self.flush()
        for c in cmds:
            self.add(c, None, sync=True)
        vals = self.flush()
        if not all(v.startswith("OK 0x") for v in vals):
            self.fail("%r answered %r" % (cmds, vals))
        return [int(v[3:], 16) for v in vals]


@pytest.mark.parametrize("variant", list(TRANSPORTS))
def test_torture(env, variant):
    print("torture seed %d (COREIO_TORTURE_SEED), %d ops (COREIO_TORTURE_OPS), %s"
          % (SEED, OPS, variant))
    vm = order_vm(env, variant)
    t = Torture(vm, variant)
    t.setup()
    t.model = start_model(env, vm, variant, "--thread-pause", "100")
    t0 = time.monotonic()
    thread_ops = t.run(OPS)
    print("%s: %d ops, %d qtest commands, %d thread DMA transfers, %d thread IRQ edges in "
          "%.1fs; %s" % (variant, t.op, t.ncmds, thread_ops, t.thread_edges,
                         time.monotonic() - t0, sorted(t.counts.items())))
    assert thread_ops > 0, "[seed %d, %s] the thread did no DMA" % (SEED, variant)
