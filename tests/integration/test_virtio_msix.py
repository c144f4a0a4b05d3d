"""MSI-X vectors of the virtio-pci transport through coreio-vm --accel qtest: vector v is a pulse
(raise then lower) of the range's IRQ line v; without a vector the ISR and line 0 as before."""

import pytest

from virtio_driver import ISR_QUEUE, VirtioDriver

BASE = 0xD0000000
LINES = (5, 6, 7)  # the range's IRQ lines 0, 1, 2 as IOAPIC pins
RNG = "devices/coreio-virtio-rng"
BLK = "devices/coreio-virtio-blk"
MSIX_CONFIG, Q_SELECT, Q_MSIX = 0x10, 0x16, 0x1A
NO_VECTOR = 0xFFFF


def start(env, model, *args):
    vm = env.vm("%#x,size=0x4000,irq=%s,port=0" % (BASE, ":".join(str(x) for x in LINES)))
    p = env.proc(model, "--transport", "pci", *args, vm.target(0))
    vm.wait_claim(0)
    vm.ok("irq_intercept_in ioapic")
    return vm, VirtioDriver(vm, "pci", BASE), p


def set_queue_vector(t, q, v):
    t.wr(Q_SELECT, 2, q)
    t.wr(Q_MSIX, 2, v)
    return t.rd(Q_MSIX, 2)


def rng_request(drv, n=32):
    vq = drv.queues[0]
    b = drv.buf(n)
    head = vq.add([(b, n, True)])
    drv.kick(0)
    assert vq.wait_used() == [(head, n)]


def test_vector_registers(env):
    vm, drv, p = start(env, RNG)
    t = drv.t
    # rng: one queue, so 2 vectors (config + queue 0).
    assert t.rd(MSIX_CONFIG, 2) == NO_VECTOR
    t.wr(MSIX_CONFIG, 2, 1)
    assert t.rd(MSIX_CONFIG, 2) == 1
    t.wr(MSIX_CONFIG, 2, 2)
    assert t.rd(MSIX_CONFIG, 2) == NO_VECTOR
    assert set_queue_vector(t, 0, 0) == 0
    assert set_queue_vector(t, 0, 7) == NO_VECTOR
    assert set_queue_vector(t, 1, 1) == NO_VECTOR  # no queue 1
    assert set_queue_vector(t, 0, 1) == 1
    t.set_status(0)  # reset: no vectors
    assert t.rd(MSIX_CONFIG, 2) == NO_VECTOR
    assert set_queue_vector(t, 0, NO_VECTOR) == NO_VECTOR
    vm.no_irq()


def test_queue_vector_pulses_its_line(env):
    vm, drv, p = start(env, RNG)
    drv.init(qsize=8)
    t = drv.t
    t.wr(MSIX_CONFIG, 2, 0)
    assert set_queue_vector(t, 0, 1) == 1
    for _ in range(2):
        rng_request(drv)
        assert vm.wait_irq() == ("raise", LINES[1])
        assert vm.wait_irq() == ("lower", LINES[1])
        assert t.take_isr() == 0
        vm.no_irq()
    # No vector while the configuration interrupt has one (a driver using
    # MSI-X, as for a poll queue): no interrupt at all, and the ISR stays 0.
    assert set_queue_vector(t, 0, NO_VECTOR) == NO_VECTOR
    rng_request(drv)
    vm.no_irq()
    assert t.take_isr() == 0
    # Without MSI-X (no configuration vector either): the ISR and line 0's level.
    t.wr(MSIX_CONFIG, 2, NO_VECTOR)
    rng_request(drv)
    assert vm.wait_irq() == ("raise", LINES[0])
    assert vm.ok("irq_level %d" % LINES[0]) == "1"
    assert t.take_isr() == ISR_QUEUE
    assert vm.wait_irq() == ("lower", LINES[0])
    vm.no_irq()


@pytest.mark.parametrize("queues", [1, 2])
def test_blk_vectors_per_queue(env, tmp_path, queues):
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(64 * 1024))
    vm, drv, p = start(env, BLK, "--image", str(img), "--queues", str(queues))
    drv.init(nqueues=queues, qsize=8)
    t = drv.t
    for q in range(queues):
        assert set_queue_vector(t, q, q + 1) == q + 1
    # queues + 1 vectors are offered: one more is refused.
    t.wr(MSIX_CONFIG, 2, queues + 1)
    assert t.rd(MSIX_CONFIG, 2) == NO_VECTOR
    for q in range(queues):
        vq = drv.queues[q]
        hdr = drv.buf(16, bytes([8, 0, 0, 0]) + bytes(12))  # GET_ID
        ident = drv.buf(20)
        st = drv.buf(1, b"\xff")
        head = vq.add([(hdr, 16, False), (ident, 20, True), (st, 1, True)])
        drv.kick(q)
        assert vq.wait_used() == [(head, 21)]
        assert vm.wait_irq() == ("raise", LINES[q + 1])
        assert vm.wait_irq() == ("lower", LINES[q + 1])
    assert t.take_isr() == 0
    vm.no_irq()
