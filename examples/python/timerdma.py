#!/usr/bin/env python3
"""timerdma.py: the coreio-timerdma peripheral (examples/timerdma) as a Python device model.

A register file, a periodic timer that raises an interrupt and a DMA engine
that copies or fills guest memory, with the register map of the C example
(examples/timerdma/README.md), so the same guest or qtest script drives
either, and bench/python_model.py compares the two.

    timerdma.py [--rid N] [--mid N] [--sid S] [--loop thread|asyncio] [--verbose] TARGET

--loop thread (the default) runs coreio's mainloop(-1) in the main thread and
the timer in a thread of its own, which raises the interrupt with
irq_update() while the loop runs. --loop asyncio runs everything in one
asyncio event loop: the context's fileno() with loop.add_reader() and
ctx.process(), the timer with loop.call_at(). Both exit when the VM goes away
(status 1) or on SIGTERM/SIGINT (status 0).
"""
import argparse
import asyncio
import signal
import struct
import sys
import threading
import time

import coreio

ID, CTRL, PERIOD_US, STATUS, TICKS = 0x00, 0x04, 0x08, 0x0C, 0x10
DMA_SRC, DMA_DST, DMA_LEN, DMA_CMD, DMA_BUSY = 0x18, 0x20, 0x28, 0x2C, 0x30
REGS_SIZE = 0x40
ID_VALUE = 0x434F5254
CTRL_TIMER_EN, CTRL_IRQ_EN = 1, 2
ST_TIMER, ST_DMA_DONE, ST_DMA_ERR = 1, 2, 4
CMD_COPY, CMD_FILL = 1, 2
DMA_MAX = 16 << 20


def touches(off, n, reg, rlen):
    """True if the access [off, off + n) touches the register [reg, reg + rlen)."""
    return off < reg + rlen and reg < off + n


class TimerDma:
    """The device. Callbacks run on the loop's thread, the timer may run on another:
    self.lock (re-entrant) guards the registers. on_timer_change() is called with the
    lock held whenever the next expiry may have moved."""

    def __init__(self, ctx, rid=0, mid=0, sid=0, verbose=False):
        self.ctx, self.rid, self.mid, self.sid, self.verbose = ctx, rid, mid, sid, verbose
        self.lock = threading.RLock()
        self.on_timer_change = lambda: None
        self.busy = False  # a DMA command runs
        self.buf = bytearray()  # the device's DMA buffer, grown to the largest command
        self.clear()

    def clear(self):
        self.ctrl = self.period_us = self.status = self.ticks = 0
        self.dma_src = self.dma_dst = self.dma_len = 0
        self.next_us = 0

    def log(self, fmt, *args):
        if self.verbose:
            print("timerdma.py: " + fmt % args, file=sys.stderr, flush=True)

    # --- timer and interrupt (lock held) ---

    def timer_running(self):
        return bool(self.ctrl & CTRL_TIMER_EN) and self.period_us > 0

    def next_expiry_us(self):
        """time.monotonic() microseconds of the next expiry, or None."""
        return self.next_us if self.timer_running() else None

    def timer_poll(self, now_us):
        """Count an expiry that is due; missed ones are not made up."""
        if self.timer_running() and now_us >= self.next_us:
            self.ticks = (self.ticks + 1) & 0xFFFFFFFF
            self.status |= ST_TIMER
            self.next_us += self.period_us
            if self.next_us <= now_us:
                self.next_us = now_us + self.period_us
        self.irq_sync()

    def irq_sync(self):
        level = 1 if (self.status & 7) and (self.ctrl & CTRL_IRQ_EN) else 0
        rc = self.ctx.irq_update(rid=self.rid, iid=0, state=level)
        if rc:
            self.log("irq_update: %d", rc)

    # --- registers ---

    def image(self):
        img = bytearray(REGS_SIZE)
        for off, v in ((ID, ID_VALUE), (CTRL, self.ctrl), (PERIOD_US, self.period_us),
                       (STATUS, self.status), (TICKS, self.ticks), (DMA_LEN, self.dma_len),
                       (DMA_BUSY, int(self.busy))):
            struct.pack_into("<I", img, off, v)
        struct.pack_into("<QQ", img, DMA_SRC, self.dma_src, self.dma_dst)
        return img

    def read(self, funcp, addr, buf, flags):
        off = addr & 0xFFF
        with self.lock:
            self.timer_poll(now_us())
            img = self.image()
        part = img[off:off + len(buf)]
        buf[:len(part)] = part  # beyond the registers: 0
        self.log("read  %#x len %d value %s", addr, len(buf), bytes(buf).hex())
        return 0

    def write(self, funcp, addr, buf, flags):
        off, n = addr & 0xFFF, len(buf)
        self.log("write %#x len %d value %s", addr, n, bytes(buf).hex())
        with self.lock:
            now = now_us()
            self.timer_poll(now)
            merged, raw = self.image(), bytearray(REGS_SIZE)
            inside = max(0, min(n, REGS_SIZE - off))
            merged[off:off + inside] = buf[:inside]
            raw[off:off + inside] = buf[:inside]
            word = lambda img, reg: struct.unpack_from("<I", img, reg)[0]  # noqa: E731
            old_ctrl = self.ctrl
            if touches(off, n, CTRL, 4):
                self.ctrl = word(merged, CTRL) & 3
            if touches(off, n, PERIOD_US, 4):
                self.period_us = word(merged, PERIOD_US)
                self.next_us = now + self.period_us
            if not old_ctrl & CTRL_TIMER_EN and self.ctrl & CTRL_TIMER_EN:
                self.next_us = now + self.period_us
            if touches(off, n, STATUS, 4):
                self.status &= ~word(raw, STATUS)
            if touches(off, n, DMA_SRC, 8):
                self.dma_src = struct.unpack_from("<Q", merged, DMA_SRC)[0]
            if touches(off, n, DMA_DST, 8):
                self.dma_dst = struct.unpack_from("<Q", merged, DMA_DST)[0]
            if touches(off, n, DMA_LEN, 4):
                self.dma_len = word(merged, DMA_LEN)
            if touches(off, n, DMA_CMD, 4):
                cmd = word(raw, DMA_CMD)
                if cmd and not self.busy:  # a command while one runs is ignored
                    self.dma_start(cmd)
            self.on_timer_change()
            # The line changes before this write's callback returns, so before the
            # answer to the guest's next access (a cleared STATUS reads back low).
            self.irq_sync()
        return 0

    def reset(self):
        """The VM was reset: registers back to 0; a DMA in flight is no longer reported."""
        self.log("VM reset")
        with self.lock:
            self.clear()
            self.busy = False
            self.on_timer_change()

    # --- DMA: non-blocking transfers started from the write callback ---

    def dma_start(self, cmd):
        src, dst, n = self.dma_src, self.dma_dst, self.dma_len
        if n > DMA_MAX or cmd not in (CMD_COPY, CMD_FILL):
            return self.dma_finish(-22, cmd, n)
        if n == 0:
            return self.dma_finish(0, cmd, n)
        self.busy = True
        if len(self.buf) < n:
            self.buf = bytearray(n)
        # A slice of the device buffer, without a copy: the DMA fills it in place.
        buf = memoryview(self.buf)[:n]
        if cmd == CMD_FILL:
            buf[:] = bytes([src & 0xFF]) * n
            return self.dma_write(dst, buf, cmd)
        rc = self.ctx.dma_read(mid=self.mid, sid=self.sid, addr=src, buf=buf, flags=0,
                               cpl=self.read_done, cplp=(buf, dst, cmd))
        if rc:
            self.dma_finish(rc, cmd, n)

    def read_done(self, cplp, err):
        buf, dst, cmd = cplp
        with self.lock:
            if not self.busy:
                return  # reset meanwhile
            if err:
                self.dma_finish(err, cmd, len(buf))
            else:
                self.dma_write(dst, buf, cmd)

    def dma_write(self, dst, data, cmd):
        rc = self.ctx.dma_write(mid=self.mid, sid=self.sid, addr=dst, buf=data, flags=0,
                                cpl=self.write_done, cplp=(cmd, len(data)))
        if rc:
            self.dma_finish(rc, cmd, len(data))

    def write_done(self, cplp, err):
        with self.lock:
            if self.busy:
                self.dma_finish(err, *cplp)

    def dma_finish(self, err, cmd, n):
        self.busy = False
        self.status |= ST_DMA_ERR if err else ST_DMA_DONE
        self.log("dma cmd %d len %d: %s", cmd, n, err or "done")
        self.irq_sync()


def now_us():
    return time.monotonic_ns() // 1000


def run_thread(ctx, dev):
    """mainloop(-1) here; the timer in a thread that raises the IRQ itself."""
    cond = threading.Condition(dev.lock)
    stop = False

    def timer():
        with cond:
            while not stop:
                nxt = dev.next_expiry_us()
                cond.wait(None if nxt is None else max(0, nxt - now_us()) / 1e6)
                if not stop:
                    dev.timer_poll(now_us())

    dev.on_timer_change = cond.notify
    t = threading.Thread(target=timer, name="timer", daemon=True)
    t.start()
    try:
        rc = ctx.mainloop(-1)
    finally:
        with cond:
            stop = True
            cond.notify()
        t.join()
    return rc


async def run_asyncio(ctx, dev):
    """One thread: the connection's fd in the event loop, the timer as loop.call_at()."""
    loop = asyncio.get_running_loop()
    ended = loop.create_future()
    handle = None

    def serve():
        rc = ctx.process()  # MMIO callbacks and DMA completions run here
        if rc < 0 and not ended.done():
            ended.set_result(rc)

    def fire():
        with dev.lock:
            dev.timer_poll(now_us())
            reschedule()

    def reschedule():
        nonlocal handle
        if handle:
            handle.cancel()
            handle = None
        nxt = dev.next_expiry_us()
        if nxt is not None:
            handle = loop.call_at(loop.time() + max(0, nxt - now_us()) / 1e6, fire)

    dev.on_timer_change = reschedule
    loop.add_reader(ctx.fileno(), serve)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: ended.done() or ended.set_result(0))
    serve()  # anything queued before the loop started
    try:
        return await ended
    finally:
        loop.remove_reader(ctx.fileno())
        if handle:
            handle.cancel()


def main():
    ap = argparse.ArgumentParser(description="A timer / IRQ / DMA peripheral (the register "
                                 "map of examples/timerdma/README.md) served over CoreIO.")
    ap.add_argument("target", help="host:port, [v6addr]:port, host or unix:/path of the VM")
    ap.add_argument("--rid", type=int, default=0, choices=range(8), metavar="N",
                    help="range id to serve (default 0)")
    ap.add_argument("--mid", type=int, default=0, choices=range(8), metavar="N",
                    help="DMA through IOMMU N (default 0: guest-physical addresses)")
    ap.add_argument("--sid", type=int, default=0, choices=range(16), metavar="S",
                    help="IOMMU region id of the DMA (default 0)")
    ap.add_argument("--loop", choices=("thread", "asyncio"), default="thread",
                    help="thread: mainloop(-1) and a timer thread (default); asyncio: one "
                         "event loop with fileno()/process()")
    ap.add_argument("--verbose", action="store_true", help="log accesses and DMA on stderr")
    args = ap.parse_args()

    ctx = coreio.Context()
    dev = TimerDma(ctx, args.rid, args.mid, args.sid, args.verbose)
    rc = ctx.connect(target=args.target)
    if rc:
        print("timerdma.py: connect %s: error %d" % (args.target, rc), file=sys.stderr)
        return 1
    ctx.set_reset_callback(dev.reset)
    rc = ctx.register(rid=args.rid, read=dev.read, write=dev.write, funcp=dev)
    if rc:
        print("timerdma.py: register rid %d: error %d" % (args.rid, rc), file=sys.stderr)
        return 1
    dev.log("serving rid %d on %s (%s loop)", args.rid, args.target, args.loop)
    if args.loop == "asyncio":
        rc = asyncio.run(run_asyncio(ctx, dev))
    else:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            rc = run_thread(ctx, dev)
        except KeyboardInterrupt:
            rc = 0
    ctx.close()
    if rc:
        print("timerdma.py: the connection ended (%d)" % rc, file=sys.stderr)
    return 1 if rc else 0


if __name__ == "__main__":
    sys.exit(main())
