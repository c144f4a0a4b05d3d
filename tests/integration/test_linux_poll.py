"""Polled block I/O in a Linux guest (io_uring IOPOLL on virtio_blk's poll queue) through the multi-queue CoreIO blk model, over vfio-user (skips, saying why, without it)."""

import array
import re
import sys

import linux_harness as lh
from test_linux import guest_image, machines, models, run_guest  # noqa: F401 (fixtures)

# virtio_blk makes min(num_queues, possible CPUs) queues, one of them polled:
# the guest has one vCPU, so it is told two CPUs are possible.
POLL_APPEND = "virtio_blk.poll_queues=1 possible_cpus=2"
MIB = 4
SEED, WSEED = 0x5eed1, 0x5eed2
MASK = (1 << 64) - 1


def pattern(seed, nbytes):
    """blkpoll's pattern (tests/linux/tools/blkpoll.c): the word at byte offset O is O ^ mix(seed)."""
    key = (seed * 0x9e3779b97f4a7c15 + 0x632be59bd9b4e019) & MASK
    words = array.array("Q", (o ^ key for o in range(0, nbytes, 8)))
    if sys.byteorder != "little":
        words.byteswap()
    return words.tobytes()


def test_polled_reads_and_writes_through_the_poll_queue(guest_image, models, machines, tmp_path):
    """The host writes a pattern; the guest reads it polled and writes a new one polled on queue 1."""
    size = MIB << 20
    disk = lh.make_disk(str(tmp_path / "disk.img"), 2 * MIB)
    with open(disk, "r+b") as f:
        f.write(pattern(SEED, size))
    m = machines(img=guest_image, test="blk-poll",
                 devices=[lh.Device("blk", disk, args=["--queues", "2", "--verbose"])],
                 extra_append="%s coreio.mib=%d coreio.seed=%d coreio.wseed=%d"
                 % (POLL_APPEND, MIB, SEED, WSEED))
    checks = run_guest(m, "blk-poll")
    assert len([c for c in checks if c.startswith("PASS: ")]) == 3, checks
    assert any("1/0/1 default/read/poll queues" in l for l in m.values("POLL: ")), m.tail()

    # The second queue carried the polled requests: 224 for the first blkpoll
    # run (64 KiB x 64, 32 + 64 + 64 of 4 KiB), 96 for the second (256 KiB
    # x 16 written and read, 32 + 16 + 16 of 4 KiB), all answered OK.
    served = {}
    for l in m.err_lines:
        r = re.search(r"coreio-virtio-blk: queue (\d+) request head \d+: status (\d+)", l)
        if r:
            q, status = int(r.group(1)), int(r.group(2))
            served[q] = served.get(q, 0) + 1
            assert q != 1 or status == 0, l
    assert served.get(1, 0) >= 224 + 96, served
    assert set(served) <= {0, 1}, served

    # The host's view: the guest's polled writes replaced the pattern; the rest is untouched.
    with open(disk, "rb") as f:
        data = f.read()
    assert data[:size] == pattern(WSEED, size)
    assert data[size:] == bytes(size)
