/* mpqemu wire format: the validating decoder and the encoders of QEMU's proxy messages
 * (mpqemu_msg.h). */
#include "mpqemu_msg.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "wire_le.h"

const char *mpqemu_cmd_name(uint32_t cmd)
{
	static const char *const names[MPQEMU_CMD_MAX] = {
	    "SYNC_SYSMEM", "RET",      "PCI_CFGWRITE", "PCI_CFGREAD",
	    "BAR_WRITE",   "BAR_READ", "SET_IRQFD",    "DEVICE_RESET",
	};

	return cmd < MPQEMU_CMD_MAX ? names[cmd] : "?";
}

bool mpqemu_cmd_answered(uint32_t cmd)
{
	switch (cmd) {
	case MPQEMU_CMD_PCI_CFGWRITE:
	case MPQEMU_CMD_PCI_CFGREAD:
	case MPQEMU_CMD_BAR_WRITE:
	case MPQEMU_CMD_BAR_READ:
	case MPQEMU_CMD_DEVICE_RESET:
		return true;
	default:
		return false;
	}
}

unsigned mpqemu_cmd_data_size(uint32_t cmd)
{
	switch (cmd) {
	case MPQEMU_CMD_SYNC_SYSMEM:
		return MPQEMU_SYSMEM_SIZE;
	case MPQEMU_CMD_RET:
		return MPQEMU_RET_SIZE;
	case MPQEMU_CMD_PCI_CFGWRITE:
	case MPQEMU_CMD_PCI_CFGREAD:
		return MPQEMU_CONF_SIZE;
	case MPQEMU_CMD_BAR_WRITE:
	case MPQEMU_CMD_BAR_READ:
		return MPQEMU_BAR_SIZE;
	default: /* SET_IRQFD, DEVICE_RESET, unknown */
		return 0;
	}
}

int mpqemu_hdr_decode(const uint8_t *buf, struct mpqemu_hdr *h, char *why, size_t whylen)
{
	h->cmd = (uint32_t)wire_ld(buf, 4);
	h->size = wire_ld(buf + 8, 8);
	if (h->cmd >= MPQEMU_CMD_MAX)
		return wire_bad(why, whylen, "unknown command %u", h->cmd);
	if (h->size > MPQEMU_DATA_MAX)
		return wire_bad(why, whylen, "%s with size %llu (at most %u)",
				mpqemu_cmd_name(h->cmd), (unsigned long long)h->size,
				MPQEMU_DATA_MAX);
	return 0;
}

void mpqemu_hdr_encode(uint8_t *buf, const struct mpqemu_hdr *h)
{
	wire_st(buf, h->cmd, 4);
	wire_st(buf + 4, 0, 4);
	wire_st(buf + 8, h->size, 8);
}

/* SYNC_SYSMEM's n regions: each valid on its own, then no two overlapping. */
static int sysmem_decode(const uint8_t *p, unsigned n, struct mpqemu_msg *m, char *why,
			 size_t whylen)
{
	m->sysmem.n = n;
	for (unsigned i = 0; i < n; i++) {
		struct mpqemu_sysmem_region *r = &m->sysmem.r[i];
		uint64_t gpa = wire_ld(p + 8 * i, 8), size = wire_ld(p + 64 + 8 * i, 8);
		uint64_t off = wire_ld(p + 128 + 8 * i, 8);

		/* offset is an off_t: its top bit set is a negative offset. */
		if (size == 0 || gpa > UINT64_MAX - size || off > (uint64_t)INT64_MAX ||
		    off > UINT64_MAX - size)
			return wire_bad(
			    why, whylen,
			    "SYNC_SYSMEM region %u: gpa 0x%llx size 0x%llx offset %lld is "
			    "not valid",
			    i, (unsigned long long)gpa, (unsigned long long)size,
			    off > (uint64_t)INT64_MAX ? -(long long)(UINT64_MAX - off) - 1
						      : (long long)off);
		for (unsigned j = 0; j < i; j++) {
			const struct mpqemu_sysmem_region *o = &m->sysmem.r[j];

			/* Both ends are exact: neither sum wraps (checked above). */
			if (gpa < o->gpa + o->size && o->gpa < gpa + size)
				return wire_bad(why, whylen,
						"SYNC_SYSMEM regions %u and %u overlap", j, i);
		}
		r->gpa = gpa;
		r->size = size;
		r->offset = off;
	}
	return 0;
}

int mpqemu_msg_decode(const uint8_t *hdr, const uint8_t *data, size_t len, unsigned nfds,
		      bool fds_lost, struct mpqemu_msg *m, char *why, size_t whylen)
{
	struct mpqemu_hdr h;
	const char *name;
	unsigned want_fds = 0, want_size;
	bool fds_any = false;

	memset(m, 0, sizeof(*m));
	if (why && whylen)
		why[0] = '\0';
	if (mpqemu_hdr_decode(hdr, &h, why, whylen) < 0)
		return -EINVAL;
	m->cmd = h.cmd;
	m->nfds = nfds;
	name = mpqemu_cmd_name(h.cmd);
	if (h.size != len)
		return wire_bad(why, whylen, "%s with %zu of its %llu data bytes", name, len,
				(unsigned long long)h.size);
	switch (h.cmd) {
	case MPQEMU_CMD_SYNC_SYSMEM:
		fds_any = true;
		break;
	case MPQEMU_CMD_SET_IRQFD:
		want_fds = 2;
		break;
	case MPQEMU_CMD_RET:
		return wire_bad(why, whylen, "command %u (%s) is not one the proxy sends", h.cmd,
				name);
	default:
		break;
	}
	want_size = mpqemu_cmd_data_size(h.cmd);
	if (h.size != want_size)
		return wire_bad(why, whylen, "%s with %llu data bytes (expected %u)", name,
				(unsigned long long)h.size, want_size);
	if (fds_lost || nfds > MPQEMU_MAX_FDS || (!fds_any && nfds != want_fds))
		return wire_bad(why, whylen, "%s with %s%u fd(s) (expected %s%u)", name,
				fds_lost || nfds > MPQEMU_MAX_FDS ? "more than " : "", nfds,
				fds_any ? "at most " : "", fds_any ? MPQEMU_MAX_FDS : want_fds);
	switch (h.cmd) {
	case MPQEMU_CMD_SYNC_SYSMEM:
		return sysmem_decode(data, nfds, m, why, whylen);
	case MPQEMU_CMD_PCI_CFGWRITE:
	case MPQEMU_CMD_PCI_CFGREAD:
		m->conf.addr = (uint32_t)wire_ld(data, 4);
		m->conf.val = (uint32_t)wire_ld(data + 4, 4);
		m->conf.len = (int32_t)(uint32_t)wire_ld(data + 8, 4);
		break;
	case MPQEMU_CMD_BAR_WRITE:
	case MPQEMU_CMD_BAR_READ:
		m->bar.addr = wire_ld(data, 8);
		m->bar.val = wire_ld(data + 8, 8);
		m->bar.size = (uint32_t)wire_ld(data + 16, 4);
		m->bar.memory = data[20] != 0;
		break;
	default: /* SET_IRQFD, DEVICE_RESET: no data */
		break;
	}
	return 0;
}

size_t mpqemu_msg_encode(uint8_t *buf, size_t room, const struct mpqemu_msg *m)
{
	struct mpqemu_hdr h = {m->cmd, 0};
	uint8_t *p = buf + MPQEMU_HDR_SIZE;

	if (m->cmd >= MPQEMU_CMD_MAX)
		return 0;
	h.size = mpqemu_cmd_data_size(m->cmd);
	if (room < MPQEMU_HDR_SIZE + h.size)
		return 0;
	if (m->cmd == MPQEMU_CMD_SYNC_SYSMEM && m->sysmem.n > MPQEMU_MAX_FDS)
		return 0;
	mpqemu_hdr_encode(buf, &h);
	memset(p, 0, (size_t)h.size);
	switch (m->cmd) {
	case MPQEMU_CMD_SYNC_SYSMEM:
		for (unsigned i = 0; i < m->sysmem.n; i++) {
			wire_st(p + 8 * i, m->sysmem.r[i].gpa, 8);
			wire_st(p + 64 + 8 * i, m->sysmem.r[i].size, 8);
			wire_st(p + 128 + 8 * i, m->sysmem.r[i].offset, 8);
		}
		break;
	case MPQEMU_CMD_RET:
		wire_st(p, m->ret, 8);
		break;
	case MPQEMU_CMD_PCI_CFGWRITE:
	case MPQEMU_CMD_PCI_CFGREAD:
		wire_st(p, m->conf.addr, 4);
		wire_st(p + 4, m->conf.val, 4);
		wire_st(p + 8, (uint32_t)m->conf.len, 4);
		break;
	case MPQEMU_CMD_BAR_WRITE:
	case MPQEMU_CMD_BAR_READ:
		wire_st(p, m->bar.addr, 8);
		wire_st(p + 8, m->bar.val, 8);
		wire_st(p + 16, m->bar.size, 4);
		p[20] = m->bar.memory ? 1 : 0;
		break;
	default:
		break;
	}
	return MPQEMU_HDR_SIZE + (size_t)h.size;
}

size_t mpqemu_ret_encode(uint8_t *buf, uint64_t val)
{
	struct mpqemu_msg m = {.cmd = MPQEMU_CMD_RET, .ret = val};

	return mpqemu_msg_encode(buf, MPQEMU_HDR_SIZE + MPQEMU_RET_SIZE, &m);
}
