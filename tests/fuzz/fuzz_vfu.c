/* libFuzzer harness of the vfio-user wire decoders (src/wire/vfio_user.c): the input is a stream
 * of messages; each header is decoded and its payload goes through the typed decoder of its
 * command, with invariants on what they accept. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "vfio_user.h"

static void payload(unsigned cmd, const uint8_t *p, size_t len)
{
	char why[160];

	switch (cmd % VFU_CMD_MAX) {
	case VFU_CMD_VERSION: {
		struct vfu_version v;

		if (vfu_version_decode(p, len, &v, why, sizeof(why)) == 0) {
			FUZZ_CHECK(len >= VFU_VERSION_FIXED);
			FUZZ_CHECK(v.has_json == (len > VFU_VERSION_FIXED));
			FUZZ_CHECK(!v.has_json || p[len - 1] == 0);
		} else {
			FUZZ_CHECK(why[0] != '\0');
		}
		/* The JSON reader alone, on the raw bytes (no NUL needed). */
		vfu_json_caps((const char *)p, len, &v, why, sizeof(why));
		break;
	}
	case VFU_CMD_DMA_MAP: {
		struct vfu_dma_map m;

		if (vfu_dma_map_decode(p, len, &m, why, sizeof(why)) == 0) {
			FUZZ_CHECK(len == VFU_DMA_MAP_SIZE && m.size > 0);
			FUZZ_CHECK(m.addr + m.size > m.addr && m.offset + m.size > m.offset);
		}
		break;
	}
	case VFU_CMD_DMA_UNMAP: {
		struct vfu_dma_unmap u;

		if (vfu_dma_unmap_decode(p, len, &u, why, sizeof(why)) == 0)
			FUZZ_CHECK(len == VFU_DMA_UNMAP_SIZE && u.addr + u.size >= u.addr);
		break;
	}
	case VFU_CMD_DEVICE_GET_INFO:
	case VFU_CMD_DEVICE_GET_IRQ_INFO: {
		uint32_t w[4];

		if (vfu_words_decode(p, len, w, 4) == 0)
			FUZZ_CHECK(len == 16);
		break;
	}
	case VFU_CMD_DEVICE_GET_REGION_INFO: {
		struct vfu_region_info r;
		uint8_t back[VFU_REGION_INFO_SIZE];

		if (vfu_region_info_decode(p, len, &r) == 0) {
			vfu_region_info_encode(back, &r);
			FUZZ_CHECK(memcmp(back, p, sizeof(back)) == 0);
		}
		break;
	}
	case VFU_CMD_DEVICE_SET_IRQS: {
		struct vfu_set_irqs s;

		if (vfu_set_irqs_decode(p, len, &s, why, sizeof(why)) == 0) {
			FUZZ_CHECK(s.start <= UINT32_MAX - s.count);
			if (s.data)
				FUZZ_CHECK(s.data + s.count == p + len);
			else
				FUZZ_CHECK(len == VFU_SET_IRQS_SIZE);
		}
		break;
	}
	case VFU_CMD_REGION_READ:
	case VFU_CMD_REGION_WRITE: {
		struct vfu_region_rw r;
		bool wr = cmd % VFU_CMD_MAX == VFU_CMD_REGION_WRITE;

		if (vfu_region_rw_decode(p, len, wr, &r, why, sizeof(why)) == 0) {
			if (wr)
				FUZZ_CHECK(r.data + r.count == p + len);
			else
				FUZZ_CHECK(len == VFU_REGION_RW_SIZE && !r.data);
		}
		break;
	}
	default:
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	while (size >= VFU_HDR_SIZE) {
		struct vfu_hdr h;
		uint8_t back[VFU_HDR_SIZE];
		size_t len;

		if (vfu_hdr_decode(data, &h) < 0) {
			FUZZ_CHECK(h.size < VFU_HDR_SIZE);
			break;
		}
		vfu_hdr_encode(back, &h);
		FUZZ_CHECK(memcmp(back, data, VFU_HDR_SIZE) == 0);
		(void)vfu_cmd_name(h.cmd);
		len = h.size - VFU_HDR_SIZE;
		if (len > size - VFU_HDR_SIZE)
			len = size - VFU_HDR_SIZE; /* a message cut short: decode what is there */
		payload(h.cmd, data + VFU_HDR_SIZE, len);
		data += VFU_HDR_SIZE + len;
		size -= VFU_HDR_SIZE + len;
	}
	return 0;
}
