/* libFuzzer harness of the mpqemu message decoder (src/wire/mpqemu_msg.c): the input is a stream
 * of messages from QEMU's proxy, each preceded by one byte of fds, decoded as coreio-vm's
 * --accel mpqemu does; an independent reference check says what must be accepted. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "mpqemu_msg.h"

/*
 * Input: repeated [fds][16-byte header][data], fds being the fds received
 * with the message: bits 0-3 their count (above MPQEMU_MAX_FDS: a caller
 * that kept too many), bit 4 "more were dropped" (fds_lost). The data is
 * the header's size bytes, or what is left of the input when that is less
 * (a message cut short, which must be refused).
 */

/* What mpqemu_msg_decode() must accept, written out again from docs/qemu-proxy.md. */
static bool reference_ok(uint32_t cmd, uint64_t size, size_t len, const uint8_t *d, unsigned nfds,
			 bool lost)
{
	static const int64_t sizes[MPQEMU_CMD_MAX] = {192, -1, 12, 12, 24, 24, 0, 0};
	static const int fds[MPQEMU_CMD_MAX] = {-1, 0, 0, 0, 0, 0, 2, 0}; /* -1: 0..8 */

	if (cmd >= MPQEMU_CMD_MAX || size > 192 || size != len || sizes[cmd] < 0 ||
	    size != (uint64_t)sizes[cmd] || lost || nfds > 8)
		return false;
	if (fds[cmd] >= 0 && nfds != (unsigned)fds[cmd])
		return false;
	if (cmd != MPQEMU_CMD_SYNC_SYSMEM)
		return true;
	for (unsigned i = 0; i < nfds; i++) {
		uint64_t gpa = fuzz_le(d + 8 * i, 8), sz = fuzz_le(d + 64 + 8 * i, 8);
		uint64_t off = fuzz_le(d + 128 + 8 * i, 8);

		/* Nothing may reach 2^64 (a sum that wraps ends below where it started). */
		if (sz == 0 || gpa + sz < gpa || (off >> 63) != 0 || off + sz < off)
			return false;
		for (unsigned j = 0; j < i; j++) {
			uint64_t g2 = fuzz_le(d + 8 * j, 8), s2 = fuzz_le(d + 64 + 8 * j, 8);

			if (!(gpa + sz <= g2 || g2 + s2 <= gpa))
				return false;
		}
	}
	return true;
}

/* Invariants of an accepted message; its encoding gives back the bytes that matter. */
static void check_accepted(const struct mpqemu_msg *m, const uint8_t *hdr, const uint8_t *d,
			   size_t len, unsigned nfds)
{
	uint8_t enc[MPQEMU_MSG_MAX];
	struct mpqemu_msg again;
	char why[200];
	size_t n;

	FUZZ_CHECK(m->cmd < MPQEMU_CMD_MAX && m->cmd != MPQEMU_CMD_RET);
	FUZZ_CHECK(m->cmd == fuzz_le(hdr, 4));
	FUZZ_CHECK(len == mpqemu_cmd_data_size(m->cmd) && m->nfds == nfds);
	switch (m->cmd) {
	case MPQEMU_CMD_SYNC_SYSMEM:
		FUZZ_CHECK(m->sysmem.n == nfds && nfds <= MPQEMU_MAX_FDS);
		for (unsigned i = 0; i < m->sysmem.n; i++) {
			const struct mpqemu_sysmem_region *r = &m->sysmem.r[i];

			FUZZ_CHECK(r->size > 0 && r->gpa <= UINT64_MAX - r->size);
			FUZZ_CHECK(r->offset <= (uint64_t)INT64_MAX &&
				   r->offset <= UINT64_MAX - r->size);
			for (unsigned j = 0; j < i; j++)
				FUZZ_CHECK(r->gpa + r->size <= m->sysmem.r[j].gpa ||
					   m->sysmem.r[j].gpa + m->sysmem.r[j].size <= r->gpa);
		}
		break;
	case MPQEMU_CMD_SET_IRQFD:
		FUZZ_CHECK(nfds == 2);
		break;
	default:
		FUZZ_CHECK(nfds == 0);
		break;
	}
	n = mpqemu_msg_encode(enc, sizeof(enc), m);
	FUZZ_CHECK(n == MPQEMU_HDR_SIZE + len);
	FUZZ_CHECK(memcmp(enc, hdr, 4) == 0 && memcmp(enc + 8, hdr + 8, 8) == 0);
	switch (m->cmd) {
	case MPQEMU_CMD_SYNC_SYSMEM:
		for (unsigned i = 0; i < m->sysmem.n; i++)
			for (unsigned k = 0; k < 3; k++)
				FUZZ_CHECK(memcmp(enc + MPQEMU_HDR_SIZE + 64 * k + 8 * i,
						  d + 64 * k + 8 * i, 8) == 0);
		break;
	case MPQEMU_CMD_PCI_CFGWRITE:
	case MPQEMU_CMD_PCI_CFGREAD:
		FUZZ_CHECK(memcmp(enc + MPQEMU_HDR_SIZE, d, MPQEMU_CONF_SIZE) == 0);
		break;
	case MPQEMU_CMD_BAR_WRITE:
	case MPQEMU_CMD_BAR_READ:
		FUZZ_CHECK(memcmp(enc + MPQEMU_HDR_SIZE, d, 20) == 0);
		FUZZ_CHECK(enc[MPQEMU_HDR_SIZE + 20] == (d[20] != 0));
		break;
	default:
		break;
	}
	/* The encoding decodes to the same message. */
	FUZZ_CHECK(mpqemu_msg_decode(enc, enc + MPQEMU_HDR_SIZE, len, nfds, false, &again, why,
				     sizeof(why)) == 0);
	FUZZ_CHECK(again.cmd == m->cmd && again.nfds == m->nfds);
	if (m->cmd == MPQEMU_CMD_SYNC_SYSMEM)
		FUZZ_CHECK(
		    again.sysmem.n == m->sysmem.n &&
		    memcmp(again.sysmem.r, m->sysmem.r, m->sysmem.n * sizeof(m->sysmem.r[0])) == 0);
	else if (m->cmd == MPQEMU_CMD_BAR_READ || m->cmd == MPQEMU_CMD_BAR_WRITE)
		FUZZ_CHECK(again.bar.addr == m->bar.addr && again.bar.val == m->bar.val &&
			   again.bar.size == m->bar.size && again.bar.memory == m->bar.memory);
	else if (m->cmd == MPQEMU_CMD_PCI_CFGREAD || m->cmd == MPQEMU_CMD_PCI_CFGWRITE)
		FUZZ_CHECK(again.conf.addr == m->conf.addr && again.conf.val == m->conf.val &&
			   again.conf.len == m->conf.len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	while (size >= 1 + MPQEMU_HDR_SIZE) {
		unsigned nfds = data[0] & 0x0f;
		bool lost = (data[0] & 0x10) != 0;
		const uint8_t *hdr = data + 1;
		struct mpqemu_hdr h;
		struct mpqemu_msg m;
		char why[200];
		uint8_t *copy, ret[MPQEMU_HDR_SIZE + MPQEMU_RET_SIZE];
		uint64_t val;
		size_t len;
		bool ok;

		data += 1 + MPQEMU_HDR_SIZE;
		size -= 1 + MPQEMU_HDR_SIZE;
		why[0] = '\0';
		if (mpqemu_hdr_decode(hdr, &h, why, sizeof(why)) < 0) {
			/* coreio-vm closes the socket before reading any data. */
			FUZZ_CHECK(h.cmd >= MPQEMU_CMD_MAX || h.size > MPQEMU_DATA_MAX);
			FUZZ_CHECK(why[0] != '\0');
			FUZZ_CHECK(mpqemu_msg_decode(hdr, data, 0, nfds, lost, &m, why,
						     sizeof(why)) == -EINVAL);
			break;
		}
		FUZZ_CHECK(h.cmd < MPQEMU_CMD_MAX && h.size <= MPQEMU_DATA_MAX);
		FUZZ_CHECK(strcmp(mpqemu_cmd_name(h.cmd), "?") != 0);
		len = h.size <= size ? (size_t)h.size : size;
		/* An exactly-sized copy: ASan sees a read past the data. */
		copy = malloc(len ? len : 1);
		if (!copy)
			return 0;
		memcpy(copy, data, len);
		why[0] = '\0';
		ok = mpqemu_msg_decode(hdr, copy, len, nfds, lost, &m, why, sizeof(why)) == 0;
		FUZZ_CHECK(ok == reference_ok(h.cmd, h.size, len, copy, nfds, lost));
		if (ok) {
			FUZZ_CHECK(why[0] == '\0');
			FUZZ_CHECK(mpqemu_cmd_answered(m.cmd) == (m.cmd != MPQEMU_CMD_SYNC_SYSMEM &&
								  m.cmd != MPQEMU_CMD_SET_IRQFD));
			check_accepted(&m, hdr, copy, len, nfds);
			/* What coreio-vm answers: a whole RET message. */
			val = len >= 8 ? fuzz_le(copy, 8) : len;
			FUZZ_CHECK(mpqemu_ret_encode(ret, val) == sizeof(ret));
			FUZZ_CHECK(fuzz_le(ret, 8) == MPQEMU_CMD_RET &&
				   fuzz_le(ret + 8, 8) == MPQEMU_RET_SIZE);
			FUZZ_CHECK(fuzz_le(ret + 16, 8) == val);
		} else {
			FUZZ_CHECK(why[0] != '\0' && memchr(why, '\0', sizeof(why)));
		}
		free(copy);
		data += len;
		size -= len;
	}
	return 0;
}
