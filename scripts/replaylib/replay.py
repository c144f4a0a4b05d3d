"""The replay engine of coreio-replay: plays one side of a coreio-vm recording to a live peer and reports the first divergence.

Two roles (docs/record-replay.md, "Replay"):

- AgainstModel: we are the VM. We listen where the recorded clients connected,
  send the recorded VM -> client frames and check that the live device model sends
  the recorded client -> VM frames.
- AsModel: we are the device model(s). We connect to a live coreio-vm, send the
  recorded client -> VM frames and check the VM's frames against the recording.

Both walk the records in seq order (the order coreio-vm processed and produced
them): a frame of our side is sent once every frame of the peer recorded before
it has arrived and matched; a frame of the peer is awaited (with a timeout) on its
connection and compared, after masking the fields the peer chooses freely
(frames.masked()).

Two freedoms of a live peer that the recorded order does not bind (a Linux
guest's models use both, depending on when a frame reaches them):
- Across connections: while the walk waits for the peer on one connection, the
  peer may already have sent its next frame on another (a model that started a
  kick's DMA before answering an MMIO read that came in meanwhile). Such a frame
  is matched ahead of its turn when it is the next record of its connection, and
  our answers to it (DMA and hello answers against a model, MMIO answers as the
  model) follow at once: they depend only on their request. run_ahead().
- Within a connection: a frame of the peer may come before frames recorded
  ahead of it, up to our next request on that connection (our answers are no
  barrier) and within WINDOW records: a model raising its interrupt before
  answering a register read that arrived meanwhile, or reading the available
  index before the completion of a posted write let it publish a used element.
  IRQ updates keep their order among themselves, and a model's DMA write does
  not pass a recorded DMA of the same bytes. reordered().

Against a model, three more (docs/record-replay.md, "A model's timing"), none of
which changes what the guest would see:
- A DMA read the recording lacks at that point is answered from GuestImage, the
  guest memory the recording has shown so far, when every byte is known.
  answer_extra().
- A recorded DMA read whose answer told nothing new (dma_effects()) may be left
  unmade. may_skip().
- Before a request of ours recorded after a pause of the model, we pause too
  (capped): work the model does without frames gets done. pause_before().
"""

import bisect
import collections
import os
import selectors
import signal
import socket
import subprocess
import sys
import time

from . import frames
from .recording import KIND_EVENT

EV_CONNECT = 1
EV_CLOSE = 2
EV_CLAIM = 3

# Close reasons (event text "close reason=...", coreio-vm's log text) that mean
# the client went away first; on any other reason ("closed at exit", a malformed
# frame, a timeout) the VM closed the connection.
PEER_CLOSE_REASONS = ("disconnected", "receive failed")

# How far ahead on one connection a frame of the peer may be matched out of its
# recorded order (Session.reordered()), in records of that connection. A virtio-blk
# model may publish a used element before or after a whole 1 MiB request's 64 DMA
# pieces (128 records) of the next chain.
WINDOW = 512

# A recorded DMA read of the model that told it nothing new (dma_effects()) is let go
# when the model has already sent frames recorded after it on that connection, or has
# sent nothing for this long while the walk waits for it (Session.may_skip()).
SKIP_QUIET = 0.2

# --against-model: before a request of ours that the recording has after a pause of
# the model of at least PAUSE_MIN seconds, the replay pauses too, for the recorded
# pause up to --pause (default PAUSE_CAP) seconds (Session.pause_before()).
PAUSE_MIN = 0.001
PAUSE_CAP = 0.02


class UsageError(Exception):
    """Bad options, or a recording this tool cannot replay (exit status 2)."""


class Divergence(Exception):
    """The live peer did not do what the recording says.

    index: position in the replayed records of the record that was expected (or
    len(records) for something after the end); what: one line; received: the live
    frame (bytes) when there was one; detail: where the frames differ."""

    def __init__(self, index, what, received=None, detail=None, conn=None):
        super().__init__(what)
        self.index = index
        self.what = what
        self.received = received
        self.detail = detail
        self.conn = conn


def parse_addr(text):
    """(family, sockaddr, display) of "host:port", "[v6]:port", "host" (port 4800) or "unix:/path"."""
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise UsageError("empty UNIX socket path in %r" % text)
        return socket.AF_UNIX, path, text
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise UsageError("bad address %r" % text)
        port = rest[1:] if rest.startswith(":") else "4800"
        fam = socket.AF_INET6
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = text, "4800"
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        p = int(port)
    except ValueError:
        raise UsageError("bad port in address %r" % text)
    if not 0 <= p <= 65535:
        raise UsageError("bad port in address %r" % text)
    return fam, (host or "127.0.0.1", p), text


def sock_display(sock):
    """The address a socket listens on, as a client target."""
    if sock.family == socket.AF_UNIX:
        return "unix:" + sock.getsockname()
    name = sock.getsockname()
    if sock.family == socket.AF_INET6:
        return "[%s]:%d" % (name[0], name[1])
    return "%s:%d" % (name[0], name[1])


class LiveConn:
    """One live socket: a receive buffer cut into whole frames, and sends with a timeout."""

    def __init__(self, sock, name):
        self.sock = sock
        self.sock.setblocking(False)
        self.name = name
        self.buf = bytearray()
        self.frames = collections.deque()
        self.eof = False
        self.error = None
        self.closed = False

    def fileno(self):
        return self.sock.fileno()

    def fill(self):
        """Read what the socket has (it is readable); cut whole frames."""
        try:
            chunk = self.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.eof, self.error = True, e.strerror
            return
        if not chunk:
            self.eof = True
            return
        self.buf += chunk
        while len(self.buf) >= 8:
            n = frames.frame_len(int.from_bytes(self.buf[:8], "little"))
            if len(self.buf) < n:
                break
            self.frames.append(bytes(self.buf[:n]))
            del self.buf[:n]

    def send(self, data, timeout):
        """Send all of data; False when the peer is gone or the socket stays full."""
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        try:
            sel.register(self.sock, selectors.EVENT_WRITE)
            while view:
                try:
                    n = self.sock.send(view)
                    view = view[n:]
                    continue
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as e:
                    self.error = e.strerror
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    self.error = "socket full for %gs" % timeout
                    return False
                sel.select(left)
        finally:
            sel.close()
        return True

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass


def conn_ports(interfaces, records):
    """Recorded connection number -> the port it came in on (text), from the
    interfaces' descriptions "PEER on PORT" or the connect events' port=."""
    ports = {}
    for info in interfaces.values():
        name = info.get("name", "")
        if name.startswith("coreio conn "):
            try:
                n = int(name.split()[2])
            except (IndexError, ValueError):
                continue
            desc = info.get("description", "")
            if " on " in desc:
                ports[n] = desc.rsplit(" on ", 1)[1]
    for r in records:
        if r.kind == KIND_EVENT and r.event_type == EV_CONNECT and r.conn not in ports:
            port = r.event_fields().get("port")
            if port:
                ports[r.conn] = port
    return ports


class GuestImage:
    """What the recording says guest memory holds, as far as a device model saw it: the
    data of the VM's answers to the model's DMA reads and of the model's DMA writes,
    applied in the order of the recording. Bytes no DMA touched are unknown. Keyed by
    (mid, sid): each IOMMU id and region is its own address space (mid 0 is
    guest-physical memory, shared by every model)."""

    PAGE = 4096

    def __init__(self):
        self.pages = {}  # (mid, sid, page number) -> [data bytearray, known bytearray]

    def _runs(self, addr, n):
        """(page key part, offset in page, start offset in the access, length) pieces."""
        off = 0
        while off < n:
            a = addr + off
            page, at = divmod(a, self.PAGE)
            m = min(self.PAGE - at, n - off)
            yield page, at, off, m
            off += m

    def write(self, space, addr, data):
        """Record that guest memory at addr (in space (mid, sid)) holds data."""
        if not data or addr + len(data) > 1 << 64:
            return
        for page, at, off, m in self._runs(addr, len(data)):
            ent = self.pages.get(space + (page,))
            if ent is None:
                ent = self.pages[space + (page,)] = [bytearray(self.PAGE),
                                                     bytearray(self.PAGE)]
            ent[0][at:at + m] = data[off:off + m]
            ent[1][at:at + m] = b"\x01" * m

    def read(self, space, addr, n):
        """The n bytes at addr when every one of them is known, else None."""
        if n <= 0 or addr + n > 1 << 64:
            return None
        out = bytearray()
        for page, at, off, m in self._runs(addr, n):
            ent = self.pages.get(space + (page,))
            if ent is None or 0 in ent[1][at:at + m]:
                return None
            out += ent[0][at:at + m]
        return bytes(out)


def dma_effects(records):
    """One pass over records (in seq order) of a recording replayed against a model:
    what each DMA answer of the VM does to the guest-memory image, and which recorded
    reads of the model told it nothing new.

    Returns (effects, answer_of, redundant): effects maps the index of the VM's answer
    to a DMA read or write of the model to (space, [(addr, data), ...]), the bytes it
    makes known (the data read, or the data the request wrote; none after an error);
    answer_of maps the index of a model's DMA request to the index of its answer;
    redundant is the set of indices of the model's read requests whose recorded answer
    was, byte for byte, what the image already held (every byte known): a read such as
    a virtio model's second look at an unchanged available index."""
    image = GuestImage()
    pending = {}  # (conn, tag, op) -> request index
    effects, answer_of, redundant = {}, {}, set()
    for k, r in enumerate(records):
        if r.kind == KIND_EVENT:
            continue
        req = frames.dma_request(r.body)
        if req is None:
            continue
        key = (r.conn, frames.tag(r.body), frames.op(r.body))
        if r.kind == frames.KIND_TO_VM:
            pending[key] = k
            continue
        q = pending.pop(key, None)
        if q is None:
            continue
        answer_of[q] = k
        d, mid, sid, addr, n = frames.dma_request(records[q].body)
        space = (mid, sid)
        if d == frames.DMA_READ:
            data = frames.dma_read_data(r.body, n)
            if data is None:
                continue
            if image.read(space, addr, n) == data:
                redundant.add(q)
            runs = [(addr, data)]
        elif frames.word(r.body, 0) & frames.ERROR_BIT:
            continue
        else:
            runs = [(addr + off, data) for off, data in frames.dma_write_bytes(records[q].body)]
        effects[k] = (space, runs)
        for a, data in runs:
            image.write(space, a, data)
    return effects, answer_of, redundant


class Session:
    """What both roles share: the records, the live connections, waiting, the report."""

    role = "?"
    ours = None  # the record kind we send

    def __init__(self, interfaces, records, opts, out=sys.stdout, err=sys.stderr):
        self.interfaces = interfaces
        self.all_records = records
        if opts.conn:
            keep = set(opts.conn)
            records = [r for r in records if r.conn in keep or (r.conn == 0 and r.kind ==
                                                                 KIND_EVENT)]
        self.records = sorted(records, key=lambda r: r.seq)
        self.by_conn = collections.defaultdict(list)  # conn -> its record indices, in order
        for k, r in enumerate(self.records):
            self.by_conn[r.conn].append(k)
        self.done = set()  # record indices handled ahead of the walk (run_ahead, reordered)
        self.opts = opts
        self.out = out
        self.err = err
        self.live = {}  # recorded conn -> LiveConn
        self.ended = set()  # recorded conns whose recorded close we passed
        self.pending_close = {}  # recorded conn -> (record index, deadline): the peer must close
        self.tags = collections.defaultdict(dict)  # recorded conn -> {recorded tag: live tag}
        self.t0_rec = self.records[0].ts_ns if self.records else 0
        self.t0_live = None
        self.start = time.monotonic()
        self.sent = 0
        self.matched = 0
        self.walk_end = None
        self.last_arrival = time.monotonic()  # when the last live frame arrived
        # Guest memory as the recording shows it (against a model only: its DMA).
        self.image = GuestImage()
        if self.ours == frames.KIND_FROM_VM:
            self.effects, self.answer_of, self.redundant = dma_effects(self.records)
        else:
            self.effects, self.answer_of, self.redundant = {}, {}, set()
        self.extra_reads = []  # (walk index, conn, frame): reads answered from self.image
        self.skipped_reads = []  # indices of recorded reads the model did not make
        self.ports = conn_ports(interfaces, self.all_records)
        port_order = []
        for r in self.records:
            p = self.ports.get(r.conn)
            if r.conn and p is not None and p not in port_order:
                port_order.append(p)
        self.port_order = port_order
        for r in self.records:
            if r.kind != KIND_EVENT:
                bad = frames.check_frame(r.body)
                if bad:
                    raise UsageError("record seq %d (offset %d): not one CoreIO frame: %s"
                                     % (r.seq, getattr(r, "offset", 0), bad))
                if r.flags & 1 and r.kind == self.ours:
                    raise UsageError("record seq %d carried a file descriptor (SHM_MAP): "
                                     "shared-memory DMA cannot be replayed (record with "
                                     "coreio-vm --record, which turns it off)" % r.seq)

    # --- time ---------------------------------------------------------------------
    def rel(self, r):
        """Seconds from the first replayed record to record r, in the recording."""
        return (r.ts_ns - self.t0_rec) / 1e9

    def pace(self, r):
        """--timing recorded: wait until r's moment, counted from the first frame we sent."""
        if self.opts.timing != "recorded":
            return
        now = time.monotonic()
        if self.t0_live is None:
            self.t0_live = now - self.rel(r)
            return
        delay = self.t0_live + self.rel(r) - now
        if delay > 0:
            self.wait_io(delay)

    # --- waiting ------------------------------------------------------------------
    def wait_io(self, timeout):
        """Read whatever arrives on any live connection for up to timeout seconds
        (returns early when something arrived)."""
        conns = [c for c in self.live.values() if not c.closed and not c.eof]
        if not conns:
            time.sleep(max(0.0, min(timeout, 0.05)))
            return
        sel = selectors.DefaultSelector()
        try:
            for c in conns:
                sel.register(c.sock, selectors.EVENT_READ, c)
            for key, _ in sel.select(max(0.0, timeout)):
                key.data.fill()
                self.last_arrival = time.monotonic()
        finally:
            sel.close()

    def next_frame(self, i, r):
        """The next live frame on record r's connection (r is a peer frame, index i)."""
        c = self.conn_for(i, r)
        start = time.monotonic()
        deadline = start + self.opts.timeout
        while not c.frames:
            if c.eof:
                raise Divergence(i, "%s closed connection %d%s where the recording has "
                                 "another frame from it" % (self.peer_name(), r.conn,
                                                            " (%s)" % c.error if c.error else ""),
                                 conn=r.conn)
            if self.run_ahead(i, r.conn):
                continue
            if self.may_skip(i, r, start):
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                self.stuck_elsewhere(i, r.conn)
                raise Divergence(i, "no frame from %s on connection %d within %gs (--timeout)"
                                 % (self.peer_name(), r.conn, self.opts.timeout), conn=r.conn)
            self.check_alive(i)
            self.check_ended()
            self.wait_io(min(left, 0.2))
        return c.frames.popleft()

    # --- the peer's freedoms (see the module's docstring) ------------------------------
    def next_open(self, conn, after):
        """Index of the first record of conn after index after not yet handled, or None."""
        idx = self.by_conn.get(conn, [])
        for k in idx[bisect.bisect_right(idx, after):]:
            if k not in self.done:
                return k
        return None

    def is_answer(self, r):
        """True for a frame of ours that answers a request of the peer (origin: the peer)."""
        return frames.origin(r.body) == (self.ours == frames.KIND_FROM_VM)

    def run_ahead(self, i, waiting):
        """While the walk waits at record i for connection waiting: match frames the
        peer already sent on other connections (each the next record of its
        connection, or one reordered() allows), and send our answers that follow
        them. True when it did something."""
        did = False
        progress = True
        while progress:
            progress = False
            for conn, c in self.live.items():
                if conn == waiting or conn in self.ended or c.closed:
                    continue
                while True:
                    j = self.next_open(conn, i)
                    rj = self.records[j] if j is not None else None
                    if rj is not None and rj.kind == self.ours and self.is_answer(rj):
                        self.send_ours(j, rj)
                        self.done.add(j)
                    elif rj is None or rj.kind in (KIND_EVENT, self.ours) or not c.frames:
                        # Nothing the head frame could match before that barrier (an
                        # event, a request of ours, the end): a read the image answers
                        # would otherwise hold the model until the walk gets there.
                        if not c.frames or not self.answer_extra(
                                i if j is None else j, conn, c.frames[0]):
                            break
                        c.frames.popleft()
                    elif not frames.compare(rj.body, c.frames[0],
                                            client_side=(rj.kind == frames.KIND_TO_VM)):
                        self.take(j, c.frames.popleft())
                    else:
                        k = self.reordered(j, rj, c.frames[0])
                        if k is not None:
                            self.take(k, c.frames.popleft())
                        elif self.answer_extra(j, conn, c.frames[0]):
                            c.frames.popleft()
                        else:
                            break
                    did = progress = True
        return did

    def take(self, k, got):
        """Record k (a peer frame) matched got ahead of the walk: done; our answer to it
        (the next frame of ours on its connection with its tag) goes out at once."""
        rk = self.records[k]
        self.learn(rk, got)
        self.matched += 1
        self.done.add(k)
        m = k
        for _ in range(WINDOW):
            m = self.next_open(rk.conn, m)
            if m is None:
                return
            rm = self.records[m]
            if rm.kind == self.ours and self.is_answer(rm) and \
                    frames.tag(rm.body) == frames.tag(rk.body) and \
                    frames.op(rm.body) == frames.op(rk.body):
                self.send_ours(m, rm)
                self.done.add(m)
                return
            if rm.kind == KIND_EVENT or (rm.kind == self.ours and not self.is_answer(rm)):
                return

    def stuck_elsewhere(self, i, waiting):
        """The peer sent nothing on connection waiting: when a frame it sent on another
        connection differs from that connection's next record, that is the divergence
        (the peer may be waiting for us there)."""
        for conn, c in self.live.items():
            if conn == waiting or not c.frames or conn in self.ended:
                continue
            j = self.next_open(conn, i)
            if j is None or self.records[j].kind in (KIND_EVENT, self.ours):
                continue
            self.diverge(j, self.records[j], c.frames[0])

    def diverge(self, i, r, got):
        """Raise the divergence of got, a frame of the peer that matches no record
        reordered() allows: at the record it stands for (the first open one in that
        window with its operation, length and address; the one the peer sent early),
        else at record i."""
        at, rat = i, r
        k = i - 1
        for _ in range(WINDOW):
            k = self.next_open(r.conn, k)
            if k is None:
                break
            rk = self.records[k]
            if rk.kind == KIND_EVENT or (rk.kind == self.ours and not self.is_answer(rk)):
                break
            if rk.kind != self.ours and frames.word(rk.body, 1) == frames.word(got, 1) and \
                    frames.word(rk.body, 2) == frames.word(got, 2):
                at, rat = k, rk
                break
        diff = frames.compare(rat.body, got, client_side=(rat.kind == frames.KIND_TO_VM))
        raise Divergence(at, "the frame from %s differs from the recording" % self.peer_name(),
                         received=got, detail=diff, conn=r.conn)

    def reordered(self, i, r, got):
        """The later open record of r's connection that got matches, when the peer may
        have sent it before record i: within WINDOW records, before our next frame on
        that connection that is not an answer (a request of ours, or an event: the
        peer's frames after it may depend on it). IRQ updates keep their order among
        themselves, and a model's DMA write is not matched ahead of a recorded DMA of
        the model (read or write) that touches any of its bytes. Else None."""
        def is_irq(body):
            return frames.op(body) == frames.OP_IRQ_UPDATE

        def overlaps(a, b):
            return a is not None and b is not None and a[1:3] == b[1:3] and \
                a[3] < b[3] + b[4] and b[3] < a[3] + a[4]

        client_side = r.kind == frames.KIND_TO_VM
        irq = is_irq(got)
        dma = frames.dma_request(got) if self.ours == frames.KIND_FROM_VM else None
        if dma is not None and dma[0] != frames.DMA_WRITE:
            dma = None
        k = i
        for _ in range(WINDOW):
            k = self.next_open(r.conn, k)
            if k is None:
                return None
            rk = self.records[k]
            if rk.kind == KIND_EVENT or (rk.kind == self.ours and not self.is_answer(rk)):
                return None
            if rk.kind == self.ours:
                continue  # an answer of ours to an earlier request: no barrier
            if not frames.compare(rk.body, got, client_side):
                return k
            if irq and is_irq(rk.body):
                return None  # an earlier IRQ update is still due
            if dma is not None and overlaps(dma, frames.dma_request(rk.body)):
                return None  # a DMA write passes no earlier DMA of the same bytes
        return None

    # --- timing-dependent DMA of a model (docs/record-replay.md, "How the replay works") -----
    def answer_extra(self, i, conn, got):
        """got, a frame of the model on conn that matches no record the order allows: when
        it is a DMA read and the guest-memory image knows every byte it asks for, answer
        it from the image (the model re-read memory it, or the recording, had seen: a
        second look at an available index) and return True. Else False (a divergence)."""
        if self.ours != frames.KIND_FROM_VM:
            return False
        req = frames.dma_request(got)
        if req is None or req[0] != frames.DMA_READ:
            return False
        _, mid, sid, addr, n = req
        data = self.image.read((mid, sid), addr, n)
        if data is None:
            return False
        c = self.live[conn]
        if not c.send(frames.dma_read_answer(got, data), self.opts.timeout):
            raise Divergence(i, "%s closed connection %d (%s) before it got the answer to "
                             "its read" % (self.peer_name(), conn, c.error), received=got,
                             conn=conn)
        self.extra_reads.append((i, conn, got))
        return True

    def may_skip(self, i, r, start):
        """True when record i (r), a DMA read of the model whose recorded answer held
        nothing the image did not already know (dma_effects()), may be taken as not
        made: the model sent a frame recorded after it on that connection (it went on
        without it), or has been silent for SKIP_QUIET seconds since the walk began
        waiting for it (it waits for us). Made later, it is answered from the image,
        with the same bytes."""
        if i not in self.redundant or self.answer_of.get(i) in self.done:
            return False
        idx = self.by_conn.get(r.conn, [])
        for k in idx[bisect.bisect_right(idx, i):bisect.bisect_right(idx, i) + WINDOW]:
            if k in self.done and self.records[k].kind != self.ours:
                return True
        return time.monotonic() - max(self.last_arrival, start) >= SKIP_QUIET

    def pause_before(self, i, r):
        """--against-model, a request of ours (not an answer) recorded after a pause of
        at least PAUSE_MIN: pause too, for that long up to --pause seconds, reading what
        arrives. A model finishes work that sends no frame (completions of posted
        writes, a reset waiting for them) in such pauses; a replay without them asks
        it, say, for the device status while that work is still pending."""
        if self.ours != frames.KIND_FROM_VM or i == 0 or self.is_answer(r) or \
                self.opts.timing == "recorded":
            return
        cap = getattr(self.opts, "pause", PAUSE_CAP)
        gap = (r.ts_ns - self.records[i - 1].ts_ns) / 1e9
        if cap <= 0 or gap < PAUSE_MIN:
            return
        end = time.monotonic() + min(gap, cap)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            self.wait_io(left)

    def check_alive(self, i):
        """Subclasses: raise Divergence when the peer process is gone."""

    def peer_name(self):
        return "the peer"

    # --- the walk -----------------------------------------------------------------
    def run(self):
        """Replay every record; raises Divergence at the first one."""
        self.setup()
        for i, r in enumerate(self.records):
            if i in self.done:
                continue
            if r.kind == KIND_EVENT:
                self.on_event(i, r)
            elif r.kind == self.ours:
                self.send_ours(i, r)
            else:
                self.expect_peer(i, r)
        self.walk_end = time.monotonic()
        self.settle()

    def send_ours(self, i, r):
        c = self.conn_for(i, r)
        if r.conn in self.ended or c.closed:
            return
        self.pace(r)
        self.pause_before(i, r)
        data = self.rewrite(r)
        if not c.send(data, self.opts.timeout):
            if c.error and ("full" in c.error):
                raise Divergence(i, "%s does not read connection %d: %s"
                                 % (self.peer_name(), r.conn, c.error), conn=r.conn)
            raise Divergence(i, "%s closed connection %d (%s) before it got this frame"
                             % (self.peer_name(), r.conn, c.error), conn=r.conn)
        self.sent += 1
        eff = self.effects.get(i)
        if eff is not None:
            for addr, data in eff[1]:
                self.image.write(eff[0], addr, data)

    def expect_peer(self, i, r):
        while True:
            got = self.next_frame(i, r)
            if got is None:  # a read that told the model nothing new, not made: may_skip()
                self.done.add(self.answer_of[i])
                self.skipped_reads.append(i)
                return
            diff = frames.compare(r.body, got, client_side=(r.kind == frames.KIND_TO_VM))
            if not diff:
                break
            k = self.reordered(i, r, got)
            if k is not None:
                self.take(k, got)
            elif not self.answer_extra(i, r.conn, got):
                self.diverge(i, r, got)
        self.learn(r, got)
        self.matched += 1

    def on_event(self, i, r):
        if r.event_type == EV_CONNECT and r.conn:
            self.conn_for(i, r)
        elif r.event_type == EV_CLOSE and r.conn and r.conn in self.live:
            self.on_close(i, r)

    def on_close(self, i, r):
        """The recorded connection closed here: whoever closed it first in the
        recording closes it now; the other side must end it too. That is checked
        without blocking the walk (later records may be on other connections):
        from here on, a frame on it is an extra frame, and its end must come
        within --timeout (checked by check_ended() and at the end)."""
        c = self.live[r.conn]
        text = r.event_text or ""
        reason = text.split("reason=", 1)[1] if "reason=" in text else text
        peer_closed = reason.startswith(PEER_CLOSE_REASONS)
        self.ended.add(r.conn)
        self.check_ended()
        while c.frames and self.closes_first(peer_closed) and \
                self.answer_extra(i, r.conn, c.frames[0]):
            c.frames.popleft()
        if c.frames:
            raise Divergence(i, "extra frame from %s on connection %d where the recording has "
                             "it closed" % (self.peer_name(), r.conn), received=c.frames[0],
                             conn=r.conn)
        if self.closes_first(peer_closed):
            c.close()
        else:
            self.pending_close[r.conn] = (i, time.monotonic() + self.opts.timeout)

    def check_ended(self):
        """Connections the peer must close (pending_close): a frame on one is extra,
        its end completes it, a deadline passed is a divergence."""
        for conn, (i, deadline) in list(self.pending_close.items()):
            c = self.live[conn]
            if c.frames:
                raise Divergence(i, "extra frame from %s on connection %d where the recording "
                                 "has it closed" % (self.peer_name(), conn),
                                 received=c.frames[0], conn=conn)
            if c.eof:
                c.close()
                del self.pending_close[conn]
            elif time.monotonic() > deadline:
                raise Divergence(i, "%s did not close connection %d within %gs, as it did in "
                                 "the recording" % (self.peer_name(), conn, self.opts.timeout),
                                 conn=conn)

    def settle(self):
        """After the last record: for --settle seconds (and until every connection the
        peer must close is closed), any frame from the peer is extra."""
        n = len(self.records)
        deadline = time.monotonic() + self.opts.settle
        while True:
            self.check_ended()
            for conn, c in self.live.items():
                if c.frames:
                    raise Divergence(n, "extra frame from %s on connection %d after the end of "
                                     "the recording" % (self.peer_name(), conn),
                                     received=c.frames[0], conn=conn)
            left = deadline - time.monotonic()
            if left <= 0 and not self.pending_close:
                return
            self.wait_io(min(max(left, 0.01), 0.2))

    # --- the report ---------------------------------------------------------------
    def record_line(self, r):
        return record_line(r, self.t0_rec)

    def report_divergence(self, d):
        w = self.out.write
        if d.index < len(self.records):
            r = self.records[d.index]
            w("coreio-replay: DIVERGENCE at seq %d (record %d of %d, conn %d, +%.6fs in the "
              "recording, +%.6fs into the replay): %s\n" % (
                  r.seq, d.index + 1, len(self.records), r.conn, self.rel(r),
                  time.monotonic() - self.start, d.what))
            w("  expected: %s\n" % self.record_line(r))
        else:
            w("coreio-replay: DIVERGENCE after the last record (+%.6fs into the replay): %s\n"
              % (time.monotonic() - self.start, d.what))
            w("  expected: nothing more\n")
        if d.received is not None:
            kind = frames.KIND_TO_VM if self.ours == frames.KIND_FROM_VM else frames.KIND_FROM_VM
            direction = "client->vm" if kind == frames.KIND_TO_VM else "vm->client"
            w("  received: conn %s %s %s\n" % (d.conn, direction,
                                                frames.describe(d.received, kind)))
        if d.detail:
            w("  difference: %s\n" % d.detail)
        lo = max(0, d.index - self.opts.context)
        if lo < d.index:
            w("  context (the %d records before):\n" % (d.index - lo))
            for r in self.records[lo:d.index]:
                w("    %s\n" % self.record_line(r))
        kind = frames.KIND_TO_VM if self.ours == frames.KIND_FROM_VM else frames.KIND_FROM_VM
        direction = "client->vm" if kind == frames.KIND_TO_VM else "vm->client"
        pending = [(conn, f) for conn, c in sorted(self.live.items()) for f in list(c.frames)[:4]]
        if pending:
            w("  also received, not matched yet:\n")
            for conn, f in pending:
                w("    conn %d %s %s\n" % (conn, direction, frames.describe(f, kind)))
        self.report_dma(w)
        self.out.flush()

    def report_dma(self, w):
        """--verbose: the model's DMA reads answered from the image, and the recorded ones
        it did not make."""
        if not getattr(self.opts, "verbose", False):
            return
        for i, conn, got in self.extra_reads:
            at = self.records[i] if i < len(self.records) else None
            w("  read answered from the recorded memory (at seq %s): conn %d client->vm %s\n"
              % (at.seq if at else "end", conn, frames.describe(got, frames.KIND_TO_VM)))
        for i in self.skipped_reads:
            w("  recorded read not made (its answer was known): %s\n"
              % self.record_line(self.records[i]))

    def report_ok(self):
        nframes = sum(1 for r in self.records if r.kind != KIND_EVENT)
        rec_s = self.rel(self.records[-1]) if self.records else 0.0
        dma = ""
        if self.ours == frames.KIND_FROM_VM:
            dma = ", %d DMA reads answered from the recorded memory, %d recorded reads not " \
                  "made" % (len(self.extra_reads), len(self.skipped_reads))
        self.out.write("coreio-replay: OK, no divergence (%s): %d records, %d frames (%d sent, "
                       "%d matched), %d connections, %.3fs replayed (recorded %.3fs)%s\n" % (
                           self.role, len(self.records), nframes, self.sent, self.matched,
                           len(self.live), (self.walk_end or time.monotonic()) - self.start,
                           rec_s, dma))
        self.report_dma(self.out.write)
        self.out.flush()

    def close(self):
        for c in self.live.values():
            c.close()


class AgainstModel(Session):
    """We play the VM; a live device model connects to us."""

    role = "against the model"
    ours = frames.KIND_FROM_VM

    def __init__(self, interfaces, records, opts, command=None, **kw):
        super().__init__(interfaces, records, opts, **kw)
        self.command = command or []
        self.listeners = {}  # recorded port -> socket
        self.unix_paths = []
        self.proc = None

    def peer_name(self):
        return "the model"

    def setup(self):
        if not self.port_order:
            raise UsageError("the recording has no client connection to replay")
        listen = list(self.opts.listen or [])
        if len(listen) > len(self.port_order):
            raise UsageError("%d --listen addresses for %d recorded ports"
                             % (len(listen), len(self.port_order)))
        subst = {}
        for k, port in enumerate(self.port_order):
            addr = listen[k] if k < len(listen) else "127.0.0.1:0"
            fam, sa, _ = parse_addr(addr)
            s = socket.socket(fam, socket.SOCK_STREAM)
            try:
                if fam == socket.AF_UNIX:
                    if os.path.exists(sa):
                        os.unlink(sa)
                    self.unix_paths.append(sa)
                else:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(sa)
                s.listen(64)
            except OSError as e:
                s.close()
                raise UsageError("cannot listen on %s: %s" % (addr, e.strerror))
            self.listeners[port] = s
            shown = sock_display(s)
            subst["P%d" % k] = shown
            self.err.write("coreio-replay: listening on %s (recorded %s)\n" % (shown, port))
        # {G<n>}: the address of range n, from the claims of the recording.
        for r in self.all_records:
            if r.kind == KIND_EVENT and r.event_type == EV_CLAIM:
                g = r.event_fields().get("range")
                port = self.ports.get(r.conn)
                if g is not None and port in self.listeners:
                    subst.setdefault("G" + g, sock_display(self.listeners[port]))
        if len(self.port_order) == 1:
            subst.setdefault("G0", subst["P0"])
        self.err.flush()
        if self.command:
            argv = []
            for a in self.command:
                for k, v in subst.items():
                    a = a.replace("{%s}" % k, v)
                argv.append(a)
            env = dict(os.environ)
            for k, v in subst.items():
                env["COREIO_" + k] = v
            try:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                             stdout=self.err.fileno(), env=env,
                                             start_new_session=True)
            except OSError as e:
                raise UsageError("cannot start %s: %s" % (argv[0], e.strerror))

    def check_alive(self, i):
        if self.proc is not None and self.proc.poll() is not None and all(
                c.eof or c.closed for c in self.live.values()):
            raise Divergence(i, "the model exited with status %s" % self.proc.returncode)

    def conn_for(self, i, r):
        c = self.live.get(r.conn)
        if c is not None:
            return c
        port = self.ports.get(r.conn)
        ls = self.listeners.get(port)
        if ls is None:
            raise UsageError("record seq %d: connection %d has no recorded port" % (r.seq,
                                                                                     r.conn))
        sel = selectors.DefaultSelector()
        sel.register(ls, selectors.EVENT_READ)
        deadline = time.monotonic() + self.opts.timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Divergence(i, "the model did not connect (connection %d, port %s) "
                                     "within %gs" % (r.conn, port, self.opts.timeout),
                                     conn=r.conn)
                if self.proc is not None and self.proc.poll() is not None:
                    raise Divergence(i, "the model exited with status %s before connecting "
                                     "(connection %d)" % (self.proc.returncode, r.conn),
                                     conn=r.conn)
                if sel.select(min(left, 0.2)):
                    s, _ = ls.accept()
                    break
        finally:
            sel.close()
        if s.family != socket.AF_UNIX:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = LiveConn(s, "conn %d" % r.conn)
        self.live[r.conn] = c
        return c

    def closes_first(self, peer_closed):
        return not peer_closed

    def rewrite(self, r):
        """A recorded VM frame as we send it: answers to the client's own frames
        (origin 1) carry the tag the live client chose for the matching frame."""
        body = r.body
        if frames.origin(body):
            t = self.tags[r.conn].get(frames.tag(body))
            if t is not None:
                body = frames.with_tag(body, t)
        return body

    def learn(self, r, got):
        if frames.origin(r.body):
            self.tags[r.conn][frames.tag(r.body)] = frames.tag(got)

    def close(self):
        super().close()
        for s in self.listeners.values():
            s.close()
        for p in self.unix_paths:
            try:
                os.unlink(p)
            except OSError:
                pass
        if self.proc is not None:
            stop_process(self.proc)


class AsModel(Session):
    """We play the device model(s); we connect to a live coreio-vm."""

    role = "as the model"
    ours = frames.KIND_TO_VM

    def peer_name(self):
        return "the VM"

    def setup(self):
        if not self.port_order:
            raise UsageError("the recording has no client connection to replay")
        targets = list(self.opts.as_model)
        if len(targets) == 1:
            targets = targets * len(self.port_order)
        if len(targets) != len(self.port_order):
            raise UsageError("%d --as-model targets for %d recorded ports (%s): give one, or "
                             "one per port in that order" % (
                                 len(self.opts.as_model), len(self.port_order),
                                 ", ".join(self.port_order)))
        self.targets = {p: parse_addr(t) for p, t in zip(self.port_order, targets)}

    def conn_for(self, i, r):
        c = self.live.get(r.conn)
        if c is not None:
            return c
        port = self.ports.get(r.conn)
        if port not in self.targets:
            raise UsageError("record seq %d: connection %d has no recorded port" % (r.seq,
                                                                                     r.conn))
        fam, sa, shown = self.targets[port]
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(self.opts.timeout)
        try:
            s.connect(sa)
        except OSError as e:
            s.close()
            raise Divergence(i, "cannot connect to the VM at %s (connection %d): %s"
                             % (shown, r.conn, e.strerror or e), conn=r.conn)
        if fam != socket.AF_UNIX:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c = LiveConn(s, "conn %d" % r.conn)
        self.live[r.conn] = c
        return c

    def closes_first(self, peer_closed):
        return peer_closed

    def rewrite(self, r):
        """A recorded client frame as we send it: answers to the VM's requests
        (origin 0) carry the live VM's tag; a hello offers no SHM (the fds of
        shared-memory DMA are not in the recording)."""
        body = r.body
        if not frames.origin(body):
            t = self.tags[r.conn].get(frames.tag(body))
            if t is not None:
                body = frames.with_tag(body, t)
        elif frames.is_hello(body):
            body = frames.set_word(body, 4, frames.word(body, 4) & ~frames.CAP_SHM)
        return body

    def learn(self, r, got):
        if not frames.origin(r.body):
            self.tags[r.conn][frames.tag(r.body)] = frames.tag(got)


def record_line(r, t0_ns):
    """One line describing record r (times relative to t0_ns)."""
    direction = {0: "client->vm", 1: "vm->client", 2: "event"}[r.kind]
    what = r.event_text if r.kind == KIND_EVENT else frames.describe(r.body, r.kind)
    return "seq %d +%.6fs conn %d %s %s" % (r.seq, (r.ts_ns - t0_ns) / 1e9, r.conn, direction,
                                            what)


def stop_process(p, grace=5.0):
    """End a child we started (its own session): SIGTERM to its group, SIGKILL after grace."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except OSError:
            pass
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            p.wait(grace)
    return p.returncode


__all__ = ["AgainstModel", "AsModel", "Divergence", "UsageError", "parse_addr", "record_line",
           "stop_process"]
