#!/usr/bin/env python3
"""slider.py: a slider device model with a Tk window, as the original CoreIO distribution's example.

    slider.py [--rid N] [--no-gui] TARGET

One MMIO range (rid 0 by default), registers at addr & 0xfff:

    0x0  write: acknowledge (lowers IRQ 0 of the range)
    0x4  read: the slider position, 0..1000 (32 bits)
    0x8  read: how many times the slider moved (32 bits)

Moving the slider raises IRQ 0 of the range; the guest reads the value and
writes 0x0 to lower it. The device is served by mainloop(-1) in a thread while
Tk runs in the main thread and calls irq_update() from there (coreio releases
the GIL while it waits, so both run). Closing the window (or Escape, Ctrl-Q)
disconnects, which ends the loop thread. --no-gui replaces the window by lines on standard
input, each a new slider position (end of input quits), for machines
without a display.
"""
import argparse
import struct
import sys
import threading

import coreio


class Slider:
    def __init__(self, rid):
        self.rid = rid
        self.value = 0
        self.moves = 0
        self.lock = threading.Lock()

    def read(self, funcp, addr, buf, flags):
        with self.lock:
            regs = struct.pack("<III", 0, self.value, self.moves)
        off = addr & 0xFFF
        part = regs[off:off + len(buf)]
        buf[:len(part)] = part
        return 0

    def write(self, funcp, addr, buf, flags):
        if addr & 0xFFF == 0:
            coreio.irq_update(rid=self.rid, iid=0, state=0)
        return 0

    def move(self, value):
        """A new position, from the GUI (or stdin) thread: tell the guest."""
        with self.lock:
            self.value = int(value)
            self.moves += 1
        return coreio.irq_update(rid=self.rid, iid=0, state=1)


def run_gui(dev, target):
    import tkinter as tk

    root = tk.Tk()
    root.title("CoreIO slider (%s, rid %d)" % (target, dev.rid))
    status = tk.StringVar(value="serving")
    scale = tk.Scale(root, from_=0, to=1000, orient=tk.HORIZONTAL, length=400,
                     label="value read at offset 0x4", command=dev.move)
    scale.pack(padx=10, pady=10)
    tk.Label(root, textvariable=status).pack(pady=(0, 10))

    def loop_ended(rc):
        status.set("the VM connection ended (%d)" % rc)

    def serve():
        rc = coreio.mainloop(-1)
        if rc != -107:  # not our own disconnect
            root.after(0, loop_ended, rc)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    root.protocol("WM_DELETE_WINDOW", root.destroy)
    for key in ("<Escape>", "<Control-q>"):
        root.bind(key, lambda event: root.destroy())
    root.mainloop()
    coreio.disconnect()  # mainloop(-1) in the thread returns -107
    t.join()


def run_stdin(dev):
    t = threading.Thread(target=coreio.mainloop, kwargs={"usec": -1}, daemon=True)
    t.start()
    for line in sys.stdin:
        if line.strip():
            dev.move(int(line))
            print("moved %s" % line.strip(), flush=True)
    coreio.disconnect()
    t.join()


def main():
    ap = argparse.ArgumentParser(description="A slider device model (Tk).")
    ap.add_argument("target", help="host:port or unix:/path of the VM")
    ap.add_argument("--rid", type=int, default=0, choices=range(8), metavar="N",
                    help="range id to serve (default 0)")
    ap.add_argument("--no-gui", action="store_true",
                    help="read slider positions from standard input instead of a window")
    args = ap.parse_args()
    dev = Slider(args.rid)
    if coreio.connect(target=args.target) != 0:
        sys.exit("slider.py: cannot connect to %s" % args.target)
    if coreio.register(rid=args.rid, read=dev.read, write=dev.write, funcp=None) != 0:
        sys.exit("slider.py: cannot register range %d" % args.rid)
    if args.no_gui:
        run_stdin(dev)
    else:
        run_gui(dev, args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
