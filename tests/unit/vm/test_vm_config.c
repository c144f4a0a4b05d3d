/* Unit tests of the coreio-vm command-line parser (config_parse). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"

static struct vm_config cfg;
static char err[512];

/* Parse a NULL-terminated list of arguments after the program name. */
static int parse(const char *first, ...)
{
	char *argv[32];
	int argc = 0;
	va_list ap;

	argv[argc++] = (char *)"coreio-vm";
	va_start(ap, first);
	for (const char *a = first; a && argc < 31; a = va_arg(ap, const char *))
		argv[argc++] = (char *)a;
	va_end(ap);
	argv[argc] = NULL;
	err[0] = '\0';
	return config_parse(argc, argv, &cfg, err, sizeof(err));
}

/* The call failed and its message mentions needle. */
static void expect_error(int rc, const char *needle)
{
	assert_int_equal(rc, -1);
	if (!strstr(err, needle))
		fail_msg("error '%s' does not mention '%s'", err, needle);
}

static void test_defaults(void **state)
{
	(void)state;
	assert_int_equal(parse("--accel", "qtest", NULL), 0);
	assert_int_equal(cfg.mem, 64ull << 20);
	assert_string_equal(cfg.listen, "127.0.0.1");
	assert_string_equal(cfg.qtest_path, "");
	assert_int_equal(cfg.nranges, 0);
	assert_false(cfg.trace);
}

static void test_full(void **state)
{
	(void)state;
	assert_int_equal(parse("--accel", "qtest", "--mem", "128M", "--trace", "--qtest",
			       "unix:/tmp/q.sock", "--listen", "::1", "--vmmio",
			       "0xd0000000,size=0x1000,irq=5,port=4300", "--vmmio",
			       "0xd0001000,size=4K,irq=6:7,port=@dev,writes=acked", "--vmmio",
			       "0xe0000000,port=unix:/tmp/d.sock,size=1M", "--vmmio",
			       "0xe0100000,size=0x1000,port=0", NULL),
			 0);
	assert_int_equal(cfg.mem, 128ull << 20);
	assert_true(cfg.trace);
	assert_string_equal(cfg.qtest_path, "/tmp/q.sock");
	assert_int_equal(cfg.nranges, 4);
	assert_int_equal(cfg.ranges[0].kind, PORT_TCP);
	assert_int_equal(cfg.ranges[0].tcp_port, 4300);
	assert_int_equal(cfg.ranges[0].nirq, 1);
	assert_int_equal(cfg.ranges[1].kind, PORT_TCP_LABEL);
	assert_string_equal(cfg.ranges[1].name, "dev");
	assert_int_equal(cfg.ranges[1].nirq, 2);
	assert_int_equal(cfg.ranges[1].irqs[1], 7);
	assert_true(cfg.ranges[1].acked);
	assert_int_equal(cfg.ranges[2].kind, PORT_UNIX);
	assert_int_equal(cfg.ranges[2].size, 1 << 20);
	assert_int_equal(cfg.ranges[2].nirq, 0);
	assert_int_equal(cfg.ranges[3].kind, PORT_TCP_ANY);
	assert_false(config_same_port(&cfg.ranges[3], &cfg.ranges[0]));
	assert_true(config_same_port(&cfg.ranges[3], &cfg.ranges[3]));
}

static void test_help(void **state)
{
	(void)state;
	assert_int_equal(parse("--help", NULL), 0);
	assert_true(cfg.help);
}

static void test_errors(void **state)
{
	(void)state;
	expect_error(parse(NULL), "--accel");
	expect_error(parse("--accel", "kvm", NULL), "kvm");
	expect_error(parse("--accel", "qtest", "--bogus", NULL), "--bogus");
	expect_error(parse("--accel", "qtest", "stray", NULL), "stray");
	expect_error(parse("--accel", "qtest", "--mem", NULL), "--mem");
	expect_error(parse("--accel", "qtest", "--mem", "512K", NULL), "512K");
	expect_error(parse("--accel", "qtest", "--mem", "65G", NULL), "65G");
	expect_error(parse("--accel", "qtest", "--mem", "1M1", NULL), "1M1");
	expect_error(parse("--accel", "qtest", "--mem", "99999999999999999999G", NULL), "--mem");
	expect_error(parse("--accel", "qtest", "--qtest", "tcp:1", NULL), "tcp:1");
	expect_error(parse("--accel", "qtest", "--vmmio", "0xd0000800,size=0x1000,port=1", NULL),
		     "aligned");
	expect_error(parse("--accel", "qtest", "--vmmio", "0xd0000000,size=0x800,port=1", NULL),
		     "0x800");
	expect_error(parse("--accel", "qtest", "--vmmio", "0xd0000000,size=0,port=1", NULL),
		     "size");
	expect_error(parse("--accel", "qtest", "--vmmio", "0xd0000000,port=1", NULL), "size=");
	expect_error(parse("--accel", "qtest", "--vmmio", "0xd0000000,size=4K", NULL), "port=");
	expect_error(parse("--accel", "qtest", "--vmmio", "zz,size=4K,port=1", NULL), "'zz'");
	expect_error(parse("--accel", "qtest", "--vmmio", "0xd0000000,size=4K,port=1,irq=24", NULL),
		     "'24'");
	expect_error(parse("--accel", "qtest", "--vmmio", "0xd0000000,size=4K,port=70000", NULL),
		     "70000");
	expect_error(parse("--accel", "qtest", "--vmmio", "0xd0000000,size=4K,port=1,foo=2", NULL),
		     "foo");
	expect_error(
	    parse("--accel", "qtest", "--vmmio", "0xd0000000,size=4K,port=1,writes=maybe", NULL),
	    "maybe");
	expect_error(parse("--accel", "qtest", "--vmmio", "0x1000,size=4K,port=1", NULL), "RAM");
	expect_error(
	    parse("--accel", "qtest", "--vmmio", "0xfffffffffffff000,size=4K,port=1", NULL), "top");
	expect_error(parse("--accel", "qtest", "--vmmio", "0xd0000000,size=8K,port=1", "--vmmio",
			   "0xd0001000,size=4K,port=2", NULL),
		     "overlap");
	expect_error(parse("--accel", "qtest", "--vmmio",
			   "0xd0000000,size=4K,port=1,irq=1:2:3:4:5:6:7:8:9", NULL),
		     "irq");
	expect_error(parse("--accel", "qtest", "--listen", "not an address!", NULL), "--listen");
}

static const char *const bad_polls[] = {"adaptive:0", "adaptivex", "busy:10001", "busyx:5", "spin"};

static void test_kvm(void **state)
{
	(void)state;
	/* Without --accel, kvm is chosen (main checks /dev/kvm). */
	assert_int_equal(parse("--kernel", "g.elf", NULL), 0);
	assert_string_equal(cfg.accel, "kvm");
	assert_true(cfg.accel_default);
	assert_int_equal(cfg.smp, 1);
	assert_string_equal(cfg.kernel, "g.elf");
	assert_int_equal(parse("--accel", "kvm", "--kernel", "g.elf", "--smp", "4", "--append",
			       "a b c", "--mem", "3G", "--vmmio", "0xd0000000,size=4K,irq=5,port=0",
			       NULL),
			 0);
	assert_false(cfg.accel_default);
	assert_int_equal(cfg.smp, 4);
	assert_string_equal(cfg.append, "a b c");
	assert_int_equal(cfg.mem, 3ull << 30);
	expect_error(parse(NULL), "--kernel");
	expect_error(parse("--accel", "kvm", NULL), "--kernel");
	expect_error(parse("--accel", "bogus", NULL), "bogus");
	expect_error(parse("--accel", "qtest", "--kernel", "g.elf", NULL), "--kernel");
	expect_error(parse("--accel", "qtest", "--smp", "2", NULL), "--smp");
	expect_error(parse("--accel", "qtest", "--append", "x", NULL), "--append");
	expect_error(parse("--kernel", "g.elf", "--qtest", "stdio", NULL), "--qtest");
	expect_error(parse("--kernel", "g.elf", "--smp", "0", NULL), "--smp");
	expect_error(parse("--kernel", "g.elf", "--smp", "33", NULL), "--smp");
	expect_error(parse("--kernel", "g.elf", "--mem", "4G", NULL), "3G");
	expect_error(parse("--kernel", "g.elf", "--vmmio", "0xfe000000,size=4K,port=0", NULL),
		     "test device");
	expect_error(parse("--kernel", "g.elf", "--vmmio", "0xfec00000,size=4K,port=0", NULL),
		     "IOAPIC");
	expect_error(parse("--kernel", "g.elf", "--vmmio", "0xfd000000,size=32M,port=0", NULL),
		     "test device");
	expect_error(parse("--kernel", "g.elf", "--vmmio", "0xfee80000,size=4K,port=0", NULL),
		     "LAPIC");
	expect_error(parse("--kernel", "g.elf", "--vmmio", "0x100000,size=4K,port=0", NULL), "RAM");
	/* coalesce=on: kvm ranges with posted writes only. */
	assert_int_equal(parse("--kernel", "g.elf", "--vmmio",
			       "0xd0000000,size=4K,port=0,coalesce=on", "--vmmio",
			       "0xd0001000,size=4K,port=0", NULL),
			 0);
	assert_true(cfg.ranges[0].coalesce);
	assert_false(cfg.ranges[1].coalesce);
	assert_int_equal(
	    parse("--kernel", "g.elf", "--vmmio", "0xd0000000,size=4K,port=0,coalesce=off", NULL),
	    0);
	assert_false(cfg.ranges[0].coalesce);
	expect_error(
	    parse("--kernel", "g.elf", "--vmmio", "0xd0000000,size=4K,port=0,coalesce=yes", NULL),
	    "coalesce='yes'");
	expect_error(parse("--kernel", "g.elf", "--vmmio",
			   "0xd0000000,size=4K,port=0,coalesce=on,writes=acked", NULL),
		     "writes=acked");
	expect_error(parse("--kernel", "g.elf", "--vmmio",
			   "0xd0000000,size=4K,port=0,coalesce=on,coalesce=off", NULL),
		     "repeated key 'coalesce'");
	expect_error(
	    parse("--accel", "qtest", "--vmmio", "0xd0000000,size=4K,port=0,coalesce=on", NULL),
	    "coalesce=on needs --accel kvm");
	/* poll=: adaptive (200 us) by default; busy, block; bad values named. */
	assert_int_equal(parse("--kernel", "g.elf", "--vmmio", "0xd0000000,size=4K,port=0",
			       "--vmmio", "0xd0001000,size=4K,port=0,poll=block", "--vmmio",
			       "0xd0002000,size=4K,port=0,poll=busy", "--vmmio",
			       "0xd0003000,size=4K,port=0,poll=busy:300", "--vmmio",
			       "0xd0004000,size=4K,port=0,poll=adaptive:50", "--vmmio",
			       "0xd0005000,size=4K,port=0,poll=adaptive", NULL),
			 0);
	assert_true(cfg.ranges[0].poll_adaptive);
	assert_int_equal(cfg.ranges[0].busy_us, CONFIG_ADAPTIVE_US_DEFAULT);
	assert_false(cfg.ranges[1].poll_adaptive);
	assert_int_equal(cfg.ranges[1].busy_us, 0);
	assert_false(cfg.ranges[2].poll_adaptive);
	assert_int_equal(cfg.ranges[2].busy_us, CONFIG_BUSY_US_DEFAULT);
	assert_false(cfg.ranges[3].poll_adaptive);
	assert_int_equal(cfg.ranges[3].busy_us, 300);
	assert_true(cfg.ranges[4].poll_adaptive);
	assert_int_equal(cfg.ranges[4].busy_us, 50);
	assert_true(cfg.ranges[5].poll_adaptive);
	assert_int_equal(cfg.ranges[5].busy_us, CONFIG_ADAPTIVE_US_DEFAULT);
	for (size_t i = 0; i < sizeof(bad_polls) / sizeof(bad_polls[0]); i++) {
		char arg[96], want[48];

		snprintf(arg, sizeof(arg), "0xd0000000,size=4K,port=0,poll=%s", bad_polls[i]);
		snprintf(want, sizeof(want), "poll='%s'", bad_polls[i]);
		expect_error(parse("--kernel", "g.elf", "--vmmio", arg, NULL), want);
	}
	/* qtest may still use the fixed-device addresses (it has no such devices). */
	assert_int_equal(parse("--accel", "qtest", "--vmmio", "0xfe000000,size=4K,port=0", NULL),
			 0);
}

static void test_eight_per_port(void **state)
{
	char args[10][64];
	char *argv[32];
	int argc = 0;

	(void)state;
	argv[argc++] = (char *)"coreio-vm";
	argv[argc++] = (char *)"--accel";
	argv[argc++] = (char *)"qtest";
	for (int i = 0; i < 9; i++) {
		snprintf(args[i], sizeof(args[i]), "0x%x,size=4K,port=@x",
			 0xd0000000u + 0x1000u * (unsigned)i);
		argv[argc++] = (char *)"--vmmio";
		argv[argc++] = args[i];
	}
	argv[argc] = NULL;
	expect_error(config_parse(argc, argv, &cfg, err, sizeof(err)), "more than 8");
	/* Eight are fine. */
	argc -= 2;
	argv[argc] = NULL;
	assert_int_equal(config_parse(argc, argv, &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg.nranges, 8);
}

static void test_numbers(void **state)
{
	uint64_t v;

	(void)state;
	assert_int_equal(config_parse_u64("0x10", &v), 0);
	assert_int_equal(v, 16);
	assert_int_equal(config_parse_u64("010", &v), 0);
	assert_int_equal(v, 10); /* decimal, not octal */
	assert_int_equal(config_parse_u64("0xffffffffffffffff", &v), 0);
	assert_int_equal(config_parse_u64("0x10000000000000000", &v), -1);
	assert_int_equal(config_parse_u64("-1", &v), -1);
	assert_int_equal(config_parse_u64("", &v), -1);
	assert_int_equal(config_parse_u64("0x", &v), -1);
	assert_int_equal(config_parse_u64("12abc", &v), -1);
}

/* allow-uid=, allow-gid=, dma=, max-conns=, timeout=, --verbose, --peer-timeout (docs/security.md).
 */
static void test_limits(void **state)
{
	const struct range_config *r;

	(void)state;
	assert_int_equal(parse("--accel", "qtest", "--vmmio", "0xd0000000,size=4K,port=0", NULL),
			 0);
	r = &cfg.ranges[0];
	assert_int_equal(r->dma, DMA_RAM);
	assert_int_equal(r->max_conns, CONFIG_MAX_CONNS_DEFAULT);
	assert_int_equal(r->timeout_ms, 0);
	assert_int_equal(r->nallow_uid + r->nallow_gid, 0);
	assert_int_equal(cfg.peer_timeout_ms, CONFIG_PEER_TIMEOUT_DEFAULT);
	assert_false(cfg.verbose);
	assert_true(config_dma_allowed(r, UINT64_MAX, 1));

	assert_int_equal(parse("--accel", "qtest", "--verbose", "--peer-timeout", "250", "--vmmio",
			       "0xd0000000,size=4K,port=unix:/tmp/l.sock,allow-uid=0:1000,"
			       "allow-gid=0x64,dma=0x100000+64K:0x300000+1,max-conns=3,timeout=500",
			       "--vmmio",
			       "0xd0001000,size=4K,port=unix:/tmp/l.sock,allow-uid=0:1000,"
			       "allow-gid=100,dma=0x100000+0x10000:0x300000+1,max-conns=3",
			       NULL),
			 0);
	r = &cfg.ranges[0];
	assert_true(cfg.verbose);
	assert_int_equal(cfg.peer_timeout_ms, 250);
	assert_int_equal(r->nallow_uid, 2);
	assert_int_equal(r->allow_uid[1], 1000);
	assert_int_equal(r->nallow_gid, 1);
	assert_int_equal(r->allow_gid[0], 100);
	assert_int_equal(r->dma, DMA_WINDOWS);
	assert_int_equal(r->ndma_win, 2);
	assert_int_equal(r->dma_win[0].size, 0x10000);
	assert_int_equal(r->max_conns, 3);
	assert_int_equal(r->timeout_ms, 500);
	assert_int_equal(cfg.ranges[1].timeout_ms, 0); /* per range */
	/* Inside, at the edges, straddling, outside. */
	assert_true(config_dma_allowed(r, 0x100000, 0x10000));
	assert_true(config_dma_allowed(r, 0x10ffff, 1));
	assert_true(config_dma_allowed(r, 0x300000, 1));
	assert_false(config_dma_allowed(r, 0x300000, 2));
	assert_false(config_dma_allowed(r, 0xfffff, 2));
	assert_false(config_dma_allowed(r, 0x10fff0, 0x20));
	assert_false(config_dma_allowed(r, 0x200000, 4));
	assert_false(config_dma_allowed(r, 0x100000, 0));
	assert_false(config_dma_allowed(r, UINT64_MAX, 2)); /* wraps */

	assert_int_equal(parse("--accel", "qtest", "--vmmio",
			       "0xd0000000,size=4K,port=0,dma=0xfffffffffffff000+4K", NULL),
			 0);
	assert_true(config_dma_allowed(&cfg.ranges[0], UINT64_MAX, 1));
	assert_false(config_dma_allowed(&cfg.ranges[0], UINT64_MAX, 2));

	assert_int_equal(
	    parse("--accel", "qtest", "--vmmio", "0xd0000000,size=4K,port=0,dma=none", NULL), 0);
	assert_int_equal(cfg.ranges[0].dma, DMA_NONE);
	assert_false(config_dma_allowed(&cfg.ranges[0], 0, 1));

	expect_error(
	    parse("--accel", "qtest", "--vmmio", "0xd0000000,size=4K,port=0,allow-uid=1", NULL),
	    "need port=unix");
	expect_error(parse("--accel", "qtest", "--vmmio",
			   "0xd0000000,size=4K,port=unix:/tmp/l.sock,allow-gid=", NULL),
		     "empty allow-gid=");
	expect_error(parse("--accel", "qtest", "--vmmio",
			   "0xd0000000,size=4K,port=unix:/tmp/l.sock,allow-uid=4294967295", NULL),
		     "bad allow-uid");
	expect_error(parse("--accel", "qtest", "--vmmio",
			   "0xd0000000,size=4K,port=unix:/tmp/l.sock,allow-uid=1:2:3:4:5:6:7:8:9",
			   NULL),
		     "more than 8");
	expect_error(
	    parse("--accel", "qtest", "--vmmio", "0xd0000000,size=4K,port=0,dma=1+0", NULL),
	    "bad DMA window");
	expect_error(parse("--accel", "qtest", "--vmmio",
			   "0xd0000000,size=4K,port=0,dma=0xfffffffffffff001+4K", NULL),
		     "bad DMA window");
	expect_error(
	    parse("--accel", "qtest", "--vmmio", "0xd0000000,size=4K,port=0,dma=ram:1", NULL),
	    "must be ram, none");
	expect_error(parse("--accel", "qtest", "--vmmio",
			   "0xd0000000,size=4K,port=0,dma=1+1:2+1:3+1:4+1:5+1:6+1:7+1:8+1:9+1",
			   NULL),
		     "more than 8 DMA windows");
	expect_error(parse("--accel", "qtest", "--vmmio",
			   "0xd0000000,size=4K,port=unix:/tmp/l.sock,shm=on,dma=none", NULL),
		     "would bypass dma=none");
	expect_error(parse("--accel", "qtest", "--vmmio", "0xd0000000,size=4K,port=@a,dma=none",
			   "--vmmio", "0xd0001000,size=4K,port=@a", NULL),
		     "share a port but not their allow-uid=/allow-gid=/dma=/max-conns=/tls=");
	expect_error(
	    parse("--accel", "qtest", "--vmmio", "0xd0000000,size=4K,port=0,max-conns=4097", NULL),
	    "bad max-conns");
	expect_error(
	    parse("--accel", "qtest", "--vmmio", "0xd0000000,size=4K,port=0,timeout=3600001", NULL),
	    "bad timeout");
	expect_error(parse("--accel", "qtest", "--peer-timeout", "x", NULL), "--peer-timeout");
}

/* tls=on, --tls-creds and --tls-psk: per TCP port, exactly one kind of credentials. */
static void test_tls(void **state)
{
	(void)state;
	assert_int_equal(parse("--accel", "qtest", "--vmmio", "0xd0000000,size=4K,port=0", NULL),
			 0);
	assert_false(cfg.ranges[0].tls);
	assert_string_equal(cfg.tls_creds, "");
	assert_string_equal(cfg.tls_psk, "");

	assert_int_equal(parse("--accel", "qtest", "--tls-creds", "/etc/pki/coreio", "--vmmio",
			       "0xd0000000,size=4K,port=@t,tls=on", "--vmmio",
			       "0xd0001000,size=4K,port=@t,tls=on", "--vmmio",
			       "0xd0002000,size=4K,port=0,tls=off", NULL),
			 0);
	assert_true(cfg.ranges[0].tls);
	assert_true(cfg.ranges[1].tls);
	assert_false(cfg.ranges[2].tls);
	assert_string_equal(cfg.tls_creds, "/etc/pki/coreio");

	assert_int_equal(parse("--accel", "qtest", "--tls-psk", "/etc/keys.psk", "--vmmio",
			       "0xd0000000,size=4K,port=4300,tls=on", NULL),
			 0);
	assert_string_equal(cfg.tls_psk, "/etc/keys.psk");
	assert_string_equal(cfg.tls_creds, "");

	expect_error(parse("--accel", "qtest", "--tls-creds", "/d", "--vmmio",
			   "0xd0000000,size=4K,port=unix:/tmp/t.sock,tls=on", NULL),
		     "tls=on needs a TCP port");
	expect_error(
	    parse("--accel", "qtest", "--vmmio", "0xd0000000,size=4K,port=0,tls=yes", NULL),
	    "tls='yes' must be on or off");
	expect_error(
	    parse("--accel", "qtest", "--vmmio", "0xd0000000,size=4K,port=0,tls=on,tls=on", NULL),
	    "repeated key 'tls'");
	expect_error(parse("--accel", "qtest", "--vmmio", "0xd0000000,size=4K,port=0,tls=on", NULL),
		     "tls=on needs credentials");
	expect_error(parse("--accel", "qtest", "--tls-creds", "/d", "--tls-psk", "/k", "--vmmio",
			   "0xd0000000,size=4K,port=0,tls=on", NULL),
		     "exclude each other");
	expect_error(parse("--accel", "qtest", "--tls-psk", "/k", "--vmmio",
			   "0xd0000000,size=4K,port=0", NULL),
		     "--tls-psk is given but no --vmmio port has tls=on");
	expect_error(parse("--accel", "qtest", "--tls-creds", "/d", "--tls-creds", "/e", "--vmmio",
			   "0xd0000000,size=4K,port=0,tls=on", NULL),
		     "--tls-creds given twice");
	expect_error(parse("--accel", "qtest", "--tls-creds", "", "--vmmio",
			   "0xd0000000,size=4K,port=0,tls=on", NULL),
		     "--tls-creds: expected a path");
	expect_error(parse("--accel", "qtest", "--tls-creds", "/d", "--vmmio",
			   "0xd0000000,size=4K,port=@t,tls=on", "--vmmio",
			   "0xd0001000,size=4K,port=@t", NULL),
		     "share a port but not their allow-uid=/allow-gid=/dma=/max-conns=/tls=");
}

/* vfio-user: eight lines per device, and MSI-X unless hotplug=on (or msix= says otherwise). */
static void test_vfio_user(void **state)
{
	(void)state;
	assert_int_equal(parse("--accel", "vfio-user", "--vmmio", "pci,size=16K,port=0", "--vmmio",
			       "pci,size=4K,port=0,hotplug=on", "--vmmio",
			       "pci,size=4K,port=0,hotplug=on,msix=on", "--vfio-user-socket",
			       "/tmp/a", "--vfio-user-socket", "/tmp/b", "--vfio-user-socket",
			       "/tmp/c", "--mpqemu-control", "9", NULL),
			 0);
	assert_int_equal(cfg.nvfu_sockets, 3);
	assert_string_equal(cfg.vfu_sockets[1], "/tmp/b");
	assert_true(cfg.ranges[0].msix);
	assert_false(cfg.ranges[1].msix);
	assert_true(cfg.ranges[2].msix);
	assert_int_equal(cfg.ranges[1].nirq, CONFIG_VFU_IRQS);
	assert_int_equal(cfg.ranges[1].irqs[0], 8);
	assert_int_equal(cfg.ranges[2].irqs[7], 23);
	expect_error(parse("--accel", "vfio-user", "--vmmio", "pci,size=16K,port=0,msix=maybe",
			   "--vfio-user-socket", "/tmp/a", NULL),
		     "msix='maybe'");
	expect_error(parse("--accel", "vfio-user", "--vmmio", "pci,size=16K,port=0", NULL),
		     "0 --vfio-user-socket for 1");
	expect_error(parse("--accel", "mpqemu", "--vmmio", "pci,size=16K,port=0,msix=on",
			   "--mpqemu-fd", "5", NULL),
		     "msix=on needs --accel vfio-user");
	expect_error(parse("--accel", "qtest", "--vfio-user-socket", "/tmp/a", NULL),
		     "--vfio-user-socket needs --accel vfio-user");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_full),
	    cmocka_unit_test(test_help),
	    cmocka_unit_test(test_errors),
	    cmocka_unit_test(test_eight_per_port),
	    cmocka_unit_test(test_numbers),
	    cmocka_unit_test(test_kvm),
	    cmocka_unit_test(test_limits),
	    cmocka_unit_test(test_tls),
	    cmocka_unit_test(test_vfio_user),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
