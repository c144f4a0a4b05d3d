/* Unit tests for the vfio-user wire module (src/wire/vfio_user.c): header, VERSION JSON, payloads.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "vfio_user.h"
#include "wire_put.h"

static void test_header_roundtrip(void **state)
{
	struct vfu_hdr h = {0x1234, VFU_CMD_REGION_READ, 48, VFU_F_TYPE_REPLY | VFU_F_ERROR, 5}, o;
	uint8_t buf[VFU_HDR_SIZE];

	(void)state;
	vfu_hdr_encode(buf, &h);
	assert_int_equal(buf[0], 0x34);
	assert_int_equal(buf[2], VFU_CMD_REGION_READ);
	assert_int_equal(vfu_hdr_decode(buf, &o), 0);
	assert_memory_equal(&h, &o, sizeof(h));
	h.size = 15;
	vfu_hdr_encode(buf, &h);
	assert_int_equal(vfu_hdr_decode(buf, &o), -EINVAL);
	assert_string_equal(vfu_cmd_name(VFU_CMD_DEVICE_SET_IRQS), "DEVICE_SET_IRQS");
	assert_string_equal(vfu_cmd_name(0), "?");
	assert_string_equal(vfu_cmd_name(1000), "?");
}

static int version(const char *json, size_t jlen, struct vfu_version *v, char *why)
{
	uint8_t buf[8192] = {0, 0, 1, 0};

	memcpy(buf + 4, json, jlen);
	return vfu_version_decode(buf, 4 + jlen, v, why, 160);
}

static void test_version_json(void **state)
{
	static const char good[] = "{\"capabilities\":{\"max_msg_fds\":16,\"max_data_xfer_size\":"
				   "1048576,\"pgsizes\":4096,\"migration\":{\"pgsize\":4096},"
				   "\"x\":[1,-2.5e3,true,false,null,\"a\\\"\\u00e9\"]}}";
	static const char *const bad[] = {
	    "",
	    "[]",
	    "{",
	    "{\"capabilities\":1}",
	    "{\"capabilities\":{\"max_msg_fds\":-1}}",
	    "{\"capabilities\":{\"max_msg_fds\":1.5}}",
	    "{\"capabilities\":{\"max_msg_fds\":4294967296}}",
	    "{\"capabilities\":{\"max_data_xfer_size\":\"1\"}}",
	    "{\"a\":01}",
	    "{\"a\":tru}",
	    "{\"a\":\"\\x\"}",
	    "{\"a\":1,}",
	    "{\"a\":1} 2",
	    "{\"a\":[1 2]}",
	    "{\"a\":\"unterminated}",
	};
	struct vfu_version v;
	char why[160] = "", deep[200];
	uint8_t fixed[4] = {0, 0, 1, 0};

	(void)state;
	assert_int_equal(version(good, sizeof(good), &v, why), 0);
	assert_int_equal(v.major, 0);
	assert_int_equal(v.minor, 1);
	assert_true(v.has_json);
	assert_int_equal(v.max_msg_fds, 16);
	assert_int_equal(v.max_data_xfer_size, 1048576);
	/* Empty objects and arrays, nested. */
	{
		static const char empty[] = "{\"a\":[],\"b\":{},\"c\":[[],{}],\"capabilities\":{}}";

		assert_int_equal(version(empty, sizeof(empty), &v, why), 0);
		assert_true(v.has_json);
	}
	/* No JSON: defaults. */
	assert_int_equal(vfu_version_decode(fixed, 4, &v, why, sizeof(why)), 0);
	assert_false(v.has_json);
	assert_int_equal(v.max_msg_fds, 1);
	assert_int_equal(vfu_version_decode(fixed, 3, &v, why, sizeof(why)), -EINVAL);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why[0] = '\0';
		assert_int_equal(version(bad[i], strlen(bad[i]) + 1, &v, why), -EINVAL);
		assert_true(why[0] != '\0');
	}
	/* Not NUL-terminated, or a NUL inside. */
	assert_int_equal(version("{}", 2, &v, why), -EINVAL);
	assert_int_equal(version("{}\0{}", 5, &v, why), -EINVAL);
	/* Nesting is bounded. */
	memset(deep, '[', sizeof(deep));
	memcpy(deep, "{\"a\":", 5);
	deep[sizeof(deep) - 1] = '\0';
	assert_int_equal(version(deep, sizeof(deep), &v, why), -EINVAL);
	assert_non_null(strstr(why, "deep"));
}

static void test_version_encode(void **state)
{
	uint8_t buf[512];
	size_t n = vfu_version_encode(buf, sizeof(buf), 0, 1, 8, 4096, 64);
	struct vfu_version v;
	char why[160];

	(void)state;
	assert_true(n > 4);
	assert_int_equal(buf[n - 1], 0);
	assert_int_equal(vfu_version_decode(buf, n, &v, why, sizeof(why)), 0);
	assert_int_equal(v.max_msg_fds, 8);
	assert_int_equal(v.max_data_xfer_size, 4096);
	assert_int_equal(vfu_version_encode(buf, 20, 0, 1, 8, 4096, 64), 0);
}

static void test_dma_payloads(void **state)
{
	uint8_t p[VFU_DMA_MAP_SIZE] = {0};
	struct vfu_dma_map m;
	struct vfu_dma_unmap u;
	char why[160];

	(void)state;
	put32(p, 32);
	put32(p + 4, 3);
	put64(p + 8, 0x1000);
	put64(p + 16, 0x100000);
	put64(p + 24, 0x2000);
	assert_int_equal(vfu_dma_map_decode(p, sizeof(p), &m, why, sizeof(why)), 0);
	assert_int_equal(m.offset, 0x1000);
	assert_int_equal(m.addr, 0x100000);
	assert_int_equal(m.size, 0x2000);
	assert_int_equal(vfu_dma_map_decode(p, sizeof(p) - 1, &m, why, sizeof(why)), -EINVAL);
	put32(p + 4, 4);
	assert_int_equal(vfu_dma_map_decode(p, sizeof(p), &m, why, sizeof(why)), -EINVAL);
	put32(p + 4, 1);
	put64(p + 16, UINT64_MAX - 0x1000);
	assert_int_equal(vfu_dma_map_decode(p, sizeof(p), &m, why, sizeof(why)), -EINVAL);
	put64(p + 16, 0);
	put64(p + 8, UINT64_MAX);
	assert_int_equal(vfu_dma_map_decode(p, sizeof(p), &m, why, sizeof(why)), -EINVAL);
	put64(p + 8, 0);
	put64(p + 24, 0);
	assert_int_equal(vfu_dma_map_decode(p, sizeof(p), &m, why, sizeof(why)), -EINVAL);
	put32(p, 8); /* argsz too small */
	put64(p + 24, 0x1000);
	assert_int_equal(vfu_dma_map_decode(p, sizeof(p), &m, why, sizeof(why)), -EINVAL);

	memset(p, 0, sizeof(p));
	put32(p, 24);
	put64(p + 8, 0x1000);
	put64(p + 16, 0x1000);
	assert_int_equal(vfu_dma_unmap_decode(p, 24, &u, why, sizeof(why)), 0);
	assert_int_equal(u.addr, 0x1000);
	put32(p + 4, VFU_DMA_UNMAP_FLAG_ALL);
	assert_int_equal(vfu_dma_unmap_decode(p, 24, &u, why, sizeof(why)), -EINVAL);
	put64(p + 8, 0);
	put64(p + 16, 0);
	assert_int_equal(vfu_dma_unmap_decode(p, 24, &u, why, sizeof(why)), 0);
	put32(p + 4, 1);
	assert_int_equal(vfu_dma_unmap_decode(p, 24, &u, why, sizeof(why)), -EINVAL);
	assert_int_equal(vfu_dma_unmap_decode(p, 32, &u, why, sizeof(why)), -EINVAL);
}

static void test_set_irqs(void **state)
{
	uint8_t p[VFU_SET_IRQS_SIZE + 4] = {0};
	struct vfu_set_irqs s;
	char why[160];

	(void)state;
	put32(p + 4, VFU_IRQ_SET_DATA_EVENTFD | VFU_IRQ_SET_ACTION_TRIGGER);
	put32(p + 8, 2);
	put32(p + 12, 1);
	put32(p + 16, 3);
	assert_int_equal(vfu_set_irqs_decode(p, VFU_SET_IRQS_SIZE, &s, why, sizeof(why)), 0);
	assert_int_equal(s.index, 2);
	assert_int_equal(s.start, 1);
	assert_int_equal(s.count, 3);
	assert_null(s.data);
	/* Data after the fixed part only with DATA_BOOL, exactly count bytes. */
	assert_int_equal(vfu_set_irqs_decode(p, sizeof(p), &s, why, sizeof(why)), -EINVAL);
	put32(p + 4, VFU_IRQ_SET_DATA_BOOL | VFU_IRQ_SET_ACTION_MASK);
	assert_int_equal(vfu_set_irqs_decode(p, sizeof(p), &s, why, sizeof(why)), -EINVAL);
	put32(p + 16, 4);
	assert_int_equal(vfu_set_irqs_decode(p, sizeof(p), &s, why, sizeof(why)), 0);
	assert_ptr_equal(s.data, p + VFU_SET_IRQS_SIZE);
	/* Two DATA flags, two ACTION flags, none, unknown bits. */
	static const uint32_t bad_flags[] = {0x03 | 0x20, 0x01 | 0x18, 0x01, 0x20,
					     0x01 | 0x20 | 0x40};
	for (size_t i = 0; i < sizeof(bad_flags) / sizeof(bad_flags[0]); i++) {
		put32(p + 4, bad_flags[i]);
		assert_int_equal(vfu_set_irqs_decode(p, VFU_SET_IRQS_SIZE, &s, why, sizeof(why)),
				 -EINVAL);
	}
	/* start + count overflows. */
	put32(p + 4, VFU_IRQ_SET_DATA_NONE | VFU_IRQ_SET_ACTION_MASK);
	put32(p + 12, UINT32_MAX);
	put32(p + 16, 2);
	assert_int_equal(vfu_set_irqs_decode(p, VFU_SET_IRQS_SIZE, &s, why, sizeof(why)), -EINVAL);
	assert_int_equal(vfu_set_irqs_decode(p, 19, &s, why, sizeof(why)), -EINVAL);
}

static void test_region_rw_and_info(void **state)
{
	uint8_t p[VFU_REGION_RW_SIZE + 8] = {0};
	struct vfu_region_rw r;
	struct vfu_region_info ri = {32, 3, 7, 0, 256, 0}, ro;
	uint8_t info[VFU_REGION_INFO_SIZE];
	uint32_t w[4] = {16, 3, 9, 5}, wo[4];
	uint8_t wb[16];
	char why[160];

	(void)state;
	put64(p, 0x10);
	put32(p + 8, 0);
	put32(p + 12, 8);
	assert_int_equal(vfu_region_rw_decode(p, VFU_REGION_RW_SIZE, false, &r, why, sizeof(why)),
			 0);
	assert_int_equal(r.count, 8);
	assert_int_equal(vfu_region_rw_decode(p, sizeof(p), false, &r, why, sizeof(why)), -EINVAL);
	assert_int_equal(vfu_region_rw_decode(p, sizeof(p), true, &r, why, sizeof(why)), 0);
	assert_ptr_equal(r.data, p + VFU_REGION_RW_SIZE);
	put32(p + 12, 0xffffffff); /* a count beyond the message */
	assert_int_equal(vfu_region_rw_decode(p, sizeof(p), true, &r, why, sizeof(why)), -EINVAL);
	assert_int_equal(vfu_region_rw_decode(p, 15, true, &r, why, sizeof(why)), -EINVAL);
	vfu_region_rw_encode(p, 1, 2, 3);
	assert_int_equal(vfu_region_rw_decode(p, VFU_REGION_RW_SIZE, false, &r, why, sizeof(why)),
			 0);
	assert_int_equal(r.offset, 1);
	assert_int_equal(r.region, 2);

	vfu_region_info_encode(info, &ri);
	assert_int_equal(vfu_region_info_decode(info, sizeof(info), &ro), 0);
	assert_memory_equal(&ri, &ro, sizeof(ri));
	assert_int_equal(vfu_region_info_decode(info, 31, &ro), -EINVAL);
	vfu_words_encode(wb, w, 4);
	assert_int_equal(vfu_words_decode(wb, 16, wo, 4), 0);
	assert_memory_equal(w, wo, sizeof(w));
	assert_int_equal(vfu_words_decode(wb, 12, wo, 4), -EINVAL);
}

/*
 * DMA_READ/DMA_WRITE in QEMU 11.1.3's layout, as seen on the wire: address
 * (8), count (8), data at payload offset 16, no padding.
 */
static void test_dma_rw(void **state)
{
	uint8_t p[VFU_DMA_RW_SIZE + 64], data[64], big[VFU_DMA_RW_SIZE + 8];
	/* A reply QEMU 11.1.3 sent (strace): address 0xffde002, count 2, data 01 00. */
	static const uint8_t qemu_reply[] = {0x02, 0xe0, 0xfd, 0x0f, 0, 0, 0, 0,    0x02,
					     0,	   0,	 0,    0,    0, 0, 0, 0x01, 0x00};
	struct vfu_dma_rw r;
	char why[128];
	size_t n;

	(void)state;
	assert_int_equal(VFU_DMA_RW_DATA, 16);
	assert_int_equal(
	    vfu_dma_rw_decode(qemu_reply + 2, sizeof(qemu_reply) - 2, false, &r, why, sizeof(why)),
	    -EINVAL); /* (a payload must start with the address) */
	assert_int_equal(vfu_dma_rw_decode(qemu_reply, 18, false, &r, why, sizeof(why)), 0);
	assert_int_equal(r.addr, 0xffde002);
	assert_int_equal(r.count, 2);
	assert_int_equal(r.data[0], 0x01);
	assert_int_equal(r.data[1], 0x00);
	for (unsigned i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7 + 1);
	vfu_dma_read_encode(p, 0x123456789abcull, 4096);
	assert_int_equal(p[0], 0xbc);
	assert_int_equal(p[5], 0x12);
	assert_int_equal(p[8], 0x00);
	assert_int_equal(p[9], 0x10);
	for (int i = 10; i < 16; i++)
		assert_int_equal(p[i], 0);

	memset(p, 0xee, sizeof(p));
	n = vfu_dma_write_encode(p, 0x1000, data, 64);
	assert_int_equal(n, VFU_DMA_RW_SIZE + 64);
	for (int i = 9; i < 16; i++) /* the count's upper bytes */
		assert_int_equal(p[i], 0);
	assert_memory_equal(p + VFU_DMA_RW_DATA, data, 64);
	assert_int_equal(vfu_dma_rw_decode(p, n, true, &r, why, sizeof(why)), 0);
	assert_int_equal(r.addr, 0x1000);
	assert_int_equal(r.count, 64);
	assert_memory_equal(r.data, data, 64);
	/* Data short of the count, a header cut short, too much after the data. */
	assert_int_equal(vfu_dma_rw_decode(p, VFU_DMA_RW_DATA + 63, true, &r, why, sizeof(why)),
			 -EINVAL);
	assert_non_null(strstr(why, "count 64"));
	assert_int_equal(vfu_dma_rw_decode(p, 11, false, &r, why, sizeof(why)), -EINVAL);
	assert_int_equal(vfu_dma_rw_decode(p, n + 1, true, &r, why, sizeof(why)), -EINVAL);
	/* A count near 2^32 does not wrap the check; one of 2^32 or more is refused. */
	memset(big, 0, sizeof(big));
	put32(big + 8, 0xfffffffcu);
	assert_int_equal(vfu_dma_rw_decode(big, sizeof(big), false, &r, why, sizeof(why)), -EINVAL);
	put32(big + 8, 8);
	put32(big + 12, 1);
	assert_int_equal(vfu_dma_rw_decode(big, sizeof(big), false, &r, why, sizeof(why)), -EINVAL);
	/* Zero bytes: valid, no data. */
	n = vfu_dma_write_encode(p, 0, NULL, 0);
	assert_int_equal(n, VFU_DMA_RW_SIZE);
	assert_int_equal(vfu_dma_rw_decode(p, n, true, &r, why, sizeof(why)), 0);
	assert_int_equal(r.count, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_header_roundtrip), cmocka_unit_test(test_version_json),
	    cmocka_unit_test(test_version_encode),   cmocka_unit_test(test_dma_payloads),
	    cmocka_unit_test(test_set_irqs),	     cmocka_unit_test(test_region_rw_and_info),
	    cmocka_unit_test(test_dma_rw),
	};

	return cmocka_run_group_tests_name("wire_vfu", tests, NULL, NULL);
}
