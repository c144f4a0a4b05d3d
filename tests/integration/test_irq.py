"""IRQ lines driven by CoreIO clients, watched with qtest irq_intercept_in."""


def test_irq_raise_lower(env):
    vm = env.vm("0xd0000000,size=0x1000,irq=5:7,port=0")
    c = env.client(vm.target(0))
    c.ok("register 0")
    vm.wait_claim(0)
    vm.ok("irq_intercept_in ioapic")
    assert vm.ok("irq_level 5") == "0"
    c.ok("irq 0 0 1")
    assert vm.wait_irq() == ("raise", 5)
    assert vm.ok("irq_level 5") == "1"
    # The same level again makes no second edge.
    c.ok("irq 0 0 1")
    vm.no_irq(0.3)
    # iid 1 drives the second line of the range's list.
    c.ok("irq 0 1 1")
    assert vm.wait_irq() == ("raise", 7)
    c.ok("irq 0 0 0")
    assert vm.wait_irq() == ("lower", 5)
    assert vm.ok("irq_level 5") == "0"
    assert vm.ok("irq_level 7") == "1"
    c.ok("irq 0 1 0")
    assert vm.wait_irq() == ("lower", 7)
    vm.no_irq(0.2)


def test_irq_bad_index_local(env):
    vm = env.vm("0xd0000000,size=0x1000,irq=5,port=0")
    c = env.client(vm.target(0))
    assert c.err("irq 0 8 1") == -22
    assert c.err("irq 8 0 1") == -22


def test_irq_undefined_index_ignored_by_vm(env):
    # iid 3 is valid for the library but the range lists one line: the VM ignores it.
    vm = env.vm("0xd0000000,size=0x1000,irq=5,port=0")
    c = env.client(vm.target(0))
    c.ok("register 0")
    vm.wait_claim(0)
    vm.ok("irq_intercept_in ioapic")
    c.ok("irq 0 3 1")
    c.ok("irq 1 0 1")  # no range rid 1 on this port
    vm.no_irq(0.3)
    assert vm.ok("irq_level 5") == "0"
    c.ok("irq 0 0 1")
    assert vm.wait_irq() == ("raise", 5)


def test_two_sources_one_line(env):
    vm = env.vm("0xd0000000,size=0x1000,irq=9,port=0", "0xd0001000,size=0x1000,irq=9,port=0")
    a = env.client(vm.target(0))
    b = env.client(vm.target(1))
    a.ok("register 0")
    b.ok("register 0")
    vm.wait_claim(0)
    vm.wait_claim(1)
    vm.ok("irq_intercept_in ioapic")
    a.ok("irq 0 0 1")
    assert vm.wait_irq() == ("raise", 9)
    b.ok("irq 0 0 1")
    vm.no_irq(0.3)
    a.ok("irq 0 0 0")
    vm.no_irq(0.3)
    assert vm.ok("irq_level 9") == "1"
    b.ok("irq 0 0 0")
    assert vm.wait_irq() == ("lower", 9)
    assert vm.ok("irq_level 9") == "0"


def test_two_sources_one_client(env):
    # One connection, two ranges on the same line: still ORed per source.
    vm = env.vm("0xd0000000,size=0x1000,irq=4,port=@x", "0xd0001000,size=0x1000,irq=4,port=@x")
    c = env.client(vm.target(0))
    c.ok("register 0")
    c.ok("register 1")
    vm.wait_claim(0)
    vm.wait_claim(1)
    vm.ok("irq_intercept_in ioapic")
    c.ok("irq 0 0 1")
    c.ok("irq 1 0 1")
    assert vm.wait_irq() == ("raise", 4)
    c.ok("irq 0 0 0")
    vm.no_irq(0.3)
    c.ok("irq 1 0 0")
    assert vm.wait_irq() == ("lower", 4)
