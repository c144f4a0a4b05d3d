/* vfio-user wire format: bounds-checked decoders and encoders of the payloads (vfio_user.h). */
#include "vfio_user.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "wire_le.h"

int vfu_hdr_decode(const uint8_t *buf, struct vfu_hdr *h)
{
	h->id = (uint16_t)wire_ld(buf, 2);
	h->cmd = (uint16_t)wire_ld(buf + 2, 2);
	h->size = (uint32_t)wire_ld(buf + 4, 4);
	h->flags = (uint32_t)wire_ld(buf + 8, 4);
	h->error = (uint32_t)wire_ld(buf + 12, 4);
	return h->size < VFU_HDR_SIZE ? -EINVAL : 0;
}

void vfu_hdr_encode(uint8_t *buf, const struct vfu_hdr *h)
{
	wire_st(buf, h->id, 2);
	wire_st(buf + 2, h->cmd, 2);
	wire_st(buf + 4, h->size, 4);
	wire_st(buf + 8, h->flags, 4);
	wire_st(buf + 12, h->error, 4);
}

const char *vfu_cmd_name(unsigned cmd)
{
	static const char *const names[VFU_CMD_MAX] = {
	    "?",
	    "VERSION",
	    "DMA_MAP",
	    "DMA_UNMAP",
	    "DEVICE_GET_INFO",
	    "DEVICE_GET_REGION_INFO",
	    "DEVICE_GET_REGION_IO_FDS",
	    "DEVICE_GET_IRQ_INFO",
	    "DEVICE_SET_IRQS",
	    "REGION_READ",
	    "REGION_WRITE",
	    "DMA_READ",
	    "DMA_WRITE",
	    "DEVICE_RESET",
	    "DIRTY_PAGES",
	    "REGION_WRITE_MULTI",
	    "DEVICE_FEATURE",
	    "MIG_DATA_READ",
	    "MIG_DATA_WRITE",
	};

	return cmd < VFU_CMD_MAX ? names[cmd] : "?";
}

/* A small JSON reader: enough to validate a document and pick two numbers out of it. */
struct json {
	const char *s;
	size_t len, pos;
	unsigned depth;
	char *why;
	size_t whylen;
};

#define JSON_MAX_DEPTH 16

static void ws(struct json *j)
{
	while (j->pos < j->len && (j->s[j->pos] == ' ' || j->s[j->pos] == '\t' ||
				   j->s[j->pos] == '\n' || j->s[j->pos] == '\r'))
		j->pos++;
}

static int jfail(struct json *j, const char *what)
{
	return wire_bad(j->why, j->whylen, "VERSION JSON: %s at byte %zu", what, j->pos);
}

/* A string; when out is not NULL, its raw bytes (escapes kept) go there (NUL-terminated). */
static int jstring(struct json *j, char *out, size_t outlen)
{
	size_t n = 0;

	if (j->pos >= j->len || j->s[j->pos] != '"')
		return jfail(j, "expected a string");
	j->pos++;
	while (j->pos < j->len) {
		unsigned char c = (unsigned char)j->s[j->pos];

		if (c == '"') {
			j->pos++;
			if (out)
				out[n < outlen ? n : outlen - 1] = '\0';
			return 0;
		}
		if (c < 0x20)
			return jfail(j, "control character in a string");
		if (c == '\\') {
			if (j->pos + 1 >= j->len)
				break;
			c = (unsigned char)j->s[j->pos + 1];
			if (c == 'u') {
				if (j->pos + 6 > j->len)
					break;
				for (unsigned i = 2; i < 6; i++) {
					char h = j->s[j->pos + i];

					if (!((h >= '0' && h <= '9') || (h >= 'a' && h <= 'f') ||
					      (h >= 'A' && h <= 'F')))
						return jfail(j, "bad \\u escape");
				}
				j->pos += 6;
				continue;
			}
			if (!strchr("\"\\/bfnrt", c) || c == '\0')
				return jfail(j, "bad escape");
			j->pos += 2;
			continue;
		}
		if (out && n + 1 < outlen)
			out[n++] = (char)c;
		else if (out)
			n = outlen; /* too long: cannot match any name we look for */
		j->pos++;
	}
	return jfail(j, "unterminated string");
}

/*
 * A number. *isint tells whether it is a non-negative integer that fits
 * in 63 bits (then *val holds it).
 */
static int jnumber(struct json *j, bool *isint, uint64_t *val)
{
	size_t start = j->pos;
	bool neg = false, frac = false, big = false;
	uint64_t v = 0;

	if (j->pos < j->len && j->s[j->pos] == '-') {
		neg = true;
		j->pos++;
	}
	if (j->pos >= j->len || j->s[j->pos] < '0' || j->s[j->pos] > '9')
		return jfail(j, "bad number");
	if (j->s[j->pos] == '0' && j->pos + 1 < j->len && j->s[j->pos + 1] >= '0' &&
	    j->s[j->pos + 1] <= '9')
		return jfail(j, "leading zero");
	while (j->pos < j->len && j->s[j->pos] >= '0' && j->s[j->pos] <= '9') {
		unsigned d = (unsigned)(j->s[j->pos] - '0');

		if (v > (UINT64_MAX >> 1) / 10 || v * 10 + d > (UINT64_MAX >> 1))
			big = true;
		else
			v = v * 10 + d;
		j->pos++;
	}
	if (j->pos < j->len && j->s[j->pos] == '.') {
		frac = true;
		j->pos++;
		if (j->pos >= j->len || j->s[j->pos] < '0' || j->s[j->pos] > '9')
			return jfail(j, "bad fraction");
		while (j->pos < j->len && j->s[j->pos] >= '0' && j->s[j->pos] <= '9')
			j->pos++;
	}
	if (j->pos < j->len && (j->s[j->pos] == 'e' || j->s[j->pos] == 'E')) {
		frac = true;
		j->pos++;
		if (j->pos < j->len && (j->s[j->pos] == '+' || j->s[j->pos] == '-'))
			j->pos++;
		if (j->pos >= j->len || j->s[j->pos] < '0' || j->s[j->pos] > '9')
			return jfail(j, "bad exponent");
		while (j->pos < j->len && j->s[j->pos] >= '0' && j->s[j->pos] <= '9')
			j->pos++;
	}
	(void)start;
	*isint = !neg && !frac && !big;
	*val = v;
	return 0;
}

static int jvalue(struct json *j, struct vfu_version *caps, int level);

static bool jword(struct json *j, const char *w)
{
	size_t n = strlen(w);

	if (j->len - j->pos >= n && memcmp(j->s + j->pos, w, n) == 0) {
		j->pos += n;
		return true;
	}
	return false;
}

/*
 * An object. level 0 is the document, 1 its "capabilities" member: the
 * members coreio-vm reads are checked there.
 */
/*
 * Enter the object or array at j->pos (its opener) that ends with close.
 * Returns 1 when it is empty (and was left), 0 when a member follows, or
 * a negative errno.
 */
static int jopen(struct json *j, char close)
{
	if (++j->depth > JSON_MAX_DEPTH)
		return jfail(j, "nested too deep");
	j->pos++;
	ws(j);
	if (j->pos < j->len && j->s[j->pos] == close) {
		j->pos++;
		j->depth--;
		return 1;
	}
	return 0;
}

/*
 * After a member of the object or array that ends with close: 1 for ','
 * (another member follows), 0 for close (it was left), or a negative errno.
 */
static int jnext(struct json *j, char close)
{
	ws(j);
	if (j->pos < j->len && j->s[j->pos] == ',') {
		j->pos++;
		return 1;
	}
	if (j->pos < j->len && j->s[j->pos] == close) {
		j->pos++;
		j->depth--;
		return 0;
	}
	return jfail(j, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
}

static int jobject(struct json *j, struct vfu_version *caps, int level)
{
	int rc = jopen(j, '}'); /* at '{' */

	if (rc)
		return rc < 0 ? rc : 0;
	for (;;) {
		char name[32];

		ws(j);
		rc = jstring(j, name, sizeof(name));
		if (rc)
			return rc;
		ws(j);
		if (j->pos >= j->len || j->s[j->pos] != ':')
			return jfail(j, "expected ':'");
		j->pos++;
		ws(j);
		if (level == 0 && strcmp(name, "capabilities") == 0) {
			if (j->pos >= j->len || j->s[j->pos] != '{')
				return jfail(j, "\"capabilities\" is not an object");
			rc = jobject(j, caps, 1);
		} else if (level == 1 && (strcmp(name, "max_msg_fds") == 0 ||
					  strcmp(name, "max_data_xfer_size") == 0)) {
			bool isint = false;
			uint64_t v = 0;
			bool fds = name[4] == 'm';

			if (j->pos >= j->len ||
			    !(j->s[j->pos] == '-' || (j->s[j->pos] >= '0' && j->s[j->pos] <= '9')))
				return jfail(j, fds ? "\"max_msg_fds\" is not a number"
						    : "\"max_data_xfer_size\" is not a number");
			rc = jnumber(j, &isint, &v);
			if (rc)
				return rc;
			if (!isint || (fds && v > UINT32_MAX))
				return jfail(j, fds ? "\"max_msg_fds\" is not a valid count"
						    : "\"max_data_xfer_size\" is not a valid size");
			if (fds)
				caps->max_msg_fds = (uint32_t)v;
			else
				caps->max_data_xfer_size = v;
		} else {
			rc = jvalue(j, caps, 2);
		}
		if (rc)
			return rc;
		rc = jnext(j, '}');
		if (rc <= 0)
			return rc;
	}
}

static int jvalue(struct json *j, struct vfu_version *caps, int level)
{
	ws(j);
	if (j->pos >= j->len)
		return jfail(j, "unexpected end");
	switch (j->s[j->pos]) {
	case '{':
		return jobject(j, caps, level);
	case '[': {
		int rc = jopen(j, ']');

		if (rc)
			return rc < 0 ? rc : 0;
		for (;;) {
			rc = jvalue(j, caps, 2);
			if (rc)
				return rc;
			rc = jnext(j, ']');
			if (rc <= 0)
				return rc;
		}
	}
	case '"':
		return jstring(j, NULL, 0);
	case 't':
		return jword(j, "true") ? 0 : jfail(j, "bad literal");
	case 'f':
		return jword(j, "false") ? 0 : jfail(j, "bad literal");
	case 'n':
		return jword(j, "null") ? 0 : jfail(j, "bad literal");
	default: {
		bool isint;
		uint64_t v;

		return jnumber(j, &isint, &v);
	}
	}
}

int vfu_json_caps(const char *s, size_t len, struct vfu_version *v, char *why, size_t whylen)
{
	struct json j = {s, len, 0, 0, why, whylen};
	int rc;

	ws(&j);
	if (j.pos >= j.len || s[j.pos] != '{')
		return jfail(&j, "not a JSON object");
	rc = jobject(&j, v, 0);
	if (rc)
		return rc;
	ws(&j);
	if (j.pos != j.len)
		return jfail(&j, "trailing characters");
	return 0;
}

int vfu_version_decode(const uint8_t *p, size_t len, struct vfu_version *v, char *why,
		       size_t whylen)
{
	const char *json;
	size_t jlen;

	memset(v, 0, sizeof(*v));
	v->max_msg_fds = 1;
	v->max_data_xfer_size = 1u << 20;
	if (len < VFU_VERSION_FIXED)
		return wire_bad(why, whylen, "VERSION payload of %zu bytes (at least %u)", len,
				VFU_VERSION_FIXED);
	v->major = (uint16_t)wire_ld(p, 2);
	v->minor = (uint16_t)wire_ld(p + 2, 2);
	if (len == VFU_VERSION_FIXED)
		return 0;
	json = (const char *)p + VFU_VERSION_FIXED;
	jlen = len - VFU_VERSION_FIXED;
	if (jlen > VFU_JSON_MAX)
		return wire_bad(why, whylen, "VERSION JSON of %zu bytes (at most %u)", jlen,
				VFU_JSON_MAX);
	if (json[jlen - 1] != '\0' || memchr(json, '\0', jlen - 1))
		return wire_bad(why, whylen, "VERSION JSON is not one NUL-terminated string");
	v->has_json = true;
	return vfu_json_caps(json, jlen - 1, v, why, whylen);
}

size_t vfu_version_encode(uint8_t *p, size_t room, uint16_t major, uint16_t minor,
			  uint32_t max_msg_fds, uint32_t max_data_xfer_size, uint32_t max_dma_maps)
{
	char json[256];
	int n = snprintf(json, sizeof(json),
			 "{\"capabilities\":{\"max_msg_fds\":%u,\"max_data_xfer_size\":%u,"
			 "\"pgsizes\":4096,\"max_dma_maps\":%u}}",
			 max_msg_fds, max_data_xfer_size, max_dma_maps);

	if (n < 0 || (size_t)n >= sizeof(json) || room < VFU_VERSION_FIXED + (size_t)n + 1)
		return 0;
	wire_st(p, major, 2);
	wire_st(p + 2, minor, 2);
	memcpy(p + VFU_VERSION_FIXED, json, (size_t)n + 1);
	return VFU_VERSION_FIXED + (size_t)n + 1;
}

int vfu_dma_map_decode(const uint8_t *p, size_t len, struct vfu_dma_map *m, char *why,
		       size_t whylen)
{
	if (len != VFU_DMA_MAP_SIZE)
		return wire_bad(why, whylen, "DMA_MAP payload of %zu bytes (expected %u)", len,
				VFU_DMA_MAP_SIZE);
	m->argsz = (uint32_t)wire_ld(p, 4);
	m->flags = (uint32_t)wire_ld(p + 4, 4);
	m->offset = wire_ld(p + 8, 8);
	m->addr = wire_ld(p + 16, 8);
	m->size = wire_ld(p + 24, 8);
	if (m->argsz < VFU_DMA_MAP_SIZE)
		return wire_bad(why, whylen, "DMA_MAP argsz %u (at least %u)", m->argsz,
				VFU_DMA_MAP_SIZE);
	if (m->flags & ~(VFU_DMA_READABLE | VFU_DMA_WRITEABLE))
		return wire_bad(why, whylen, "DMA_MAP flags 0x%x", m->flags);
	if (m->size == 0 || m->addr + m->size < m->addr || m->offset + m->size < m->offset)
		return wire_bad(why, whylen, "DMA_MAP address 0x%llx size 0x%llx offset 0x%llx",
				(unsigned long long)m->addr, (unsigned long long)m->size,
				(unsigned long long)m->offset);
	return 0;
}

int vfu_dma_unmap_decode(const uint8_t *p, size_t len, struct vfu_dma_unmap *u, char *why,
			 size_t whylen)
{
	if (len != VFU_DMA_UNMAP_SIZE)
		return wire_bad(why, whylen, "DMA_UNMAP payload of %zu bytes (expected %u)", len,
				VFU_DMA_UNMAP_SIZE);
	u->argsz = (uint32_t)wire_ld(p, 4);
	u->flags = (uint32_t)wire_ld(p + 4, 4);
	u->addr = wire_ld(p + 8, 8);
	u->size = wire_ld(p + 16, 8);
	if (u->argsz < VFU_DMA_UNMAP_SIZE)
		return wire_bad(why, whylen, "DMA_UNMAP argsz %u (at least %u)", u->argsz,
				VFU_DMA_UNMAP_SIZE);
	if (u->flags & ~VFU_DMA_UNMAP_FLAG_ALL)
		return wire_bad(why, whylen, "DMA_UNMAP flags 0x%x", u->flags);
	if ((u->flags & VFU_DMA_UNMAP_FLAG_ALL) && (u->addr || u->size))
		return wire_bad(why, whylen, "DMA_UNMAP of everything with an address or size");
	if (u->addr + u->size < u->addr)
		return wire_bad(why, whylen, "DMA_UNMAP address 0x%llx size 0x%llx wraps",
				(unsigned long long)u->addr, (unsigned long long)u->size);
	return 0;
}

int vfu_words_decode(const uint8_t *p, size_t len, uint32_t *w, unsigned n)
{
	if (len != (size_t)n * 4)
		return -EINVAL;
	for (unsigned i = 0; i < n; i++)
		w[i] = (uint32_t)wire_ld(p + 4 * i, 4);
	return 0;
}

void vfu_words_encode(uint8_t *p, const uint32_t *w, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		wire_st(p + 4 * i, w[i], 4);
}

int vfu_region_info_decode(const uint8_t *p, size_t len, struct vfu_region_info *r)
{
	if (len != VFU_REGION_INFO_SIZE)
		return -EINVAL;
	r->argsz = (uint32_t)wire_ld(p, 4);
	r->flags = (uint32_t)wire_ld(p + 4, 4);
	r->index = (uint32_t)wire_ld(p + 8, 4);
	r->cap_offset = (uint32_t)wire_ld(p + 12, 4);
	r->size = wire_ld(p + 16, 8);
	r->offset = wire_ld(p + 24, 8);
	return 0;
}

void vfu_region_info_encode(uint8_t *p, const struct vfu_region_info *r)
{
	wire_st(p, r->argsz, 4);
	wire_st(p + 4, r->flags, 4);
	wire_st(p + 8, r->index, 4);
	wire_st(p + 12, r->cap_offset, 4);
	wire_st(p + 16, r->size, 8);
	wire_st(p + 24, r->offset, 8);
}

int vfu_set_irqs_decode(const uint8_t *p, size_t len, struct vfu_set_irqs *s, char *why,
			size_t whylen)
{
	uint32_t data, action;

	if (len < VFU_SET_IRQS_SIZE)
		return wire_bad(why, whylen, "SET_IRQS payload of %zu bytes (at least %u)", len,
				VFU_SET_IRQS_SIZE);
	s->argsz = (uint32_t)wire_ld(p, 4);
	s->flags = (uint32_t)wire_ld(p + 4, 4);
	s->index = (uint32_t)wire_ld(p + 8, 4);
	s->start = (uint32_t)wire_ld(p + 12, 4);
	s->count = (uint32_t)wire_ld(p + 16, 4);
	s->data = NULL;
	data = s->flags & VFU_IRQ_SET_DATA_MASK;
	action = s->flags & VFU_IRQ_SET_ACTION_ALL;
	if (s->flags & ~(VFU_IRQ_SET_DATA_MASK | VFU_IRQ_SET_ACTION_ALL))
		return wire_bad(why, whylen, "SET_IRQS flags 0x%x", s->flags);
	if (data != VFU_IRQ_SET_DATA_NONE && data != VFU_IRQ_SET_DATA_BOOL &&
	    data != VFU_IRQ_SET_DATA_EVENTFD)
		return wire_bad(why, whylen, "SET_IRQS flags 0x%x: not exactly one DATA flag",
				s->flags);
	if (action != VFU_IRQ_SET_ACTION_MASK && action != VFU_IRQ_SET_ACTION_UNMASK &&
	    action != VFU_IRQ_SET_ACTION_TRIGGER)
		return wire_bad(why, whylen, "SET_IRQS flags 0x%x: not exactly one ACTION flag",
				s->flags);
	if (s->count > 65536 || s->start > UINT32_MAX - s->count)
		return wire_bad(why, whylen, "SET_IRQS start %u count %u", s->start, s->count);
	if (data == VFU_IRQ_SET_DATA_BOOL) {
		if (len - VFU_SET_IRQS_SIZE != s->count)
			return wire_bad(why, whylen,
					"SET_IRQS DATA_BOOL with %zu data bytes for count %u",
					len - VFU_SET_IRQS_SIZE, s->count);
		s->data = p + VFU_SET_IRQS_SIZE;
	} else if (len != VFU_SET_IRQS_SIZE) {
		return wire_bad(why, whylen, "SET_IRQS payload of %zu bytes (expected %u)", len,
				VFU_SET_IRQS_SIZE);
	}
	return 0;
}

int vfu_region_rw_decode(const uint8_t *p, size_t len, bool write, struct vfu_region_rw *r,
			 char *why, size_t whylen)
{
	const char *name = write ? "REGION_WRITE" : "REGION_READ";

	if (len < VFU_REGION_RW_SIZE)
		return wire_bad(why, whylen, "%s payload of %zu bytes (at least %u)", name, len,
				VFU_REGION_RW_SIZE);
	r->offset = wire_ld(p, 8);
	r->region = (uint32_t)wire_ld(p + 8, 4);
	r->count = (uint32_t)wire_ld(p + 12, 4);
	r->data = NULL;
	if (!write) {
		if (len != VFU_REGION_RW_SIZE)
			return wire_bad(why, whylen,
					"REGION_READ payload of %zu bytes (expected %u)", len,
					VFU_REGION_RW_SIZE);
		return 0;
	}
	if (len - VFU_REGION_RW_SIZE != r->count)
		return wire_bad(why, whylen, "REGION_WRITE count %u with %zu data bytes", r->count,
				len - VFU_REGION_RW_SIZE);
	r->data = p + VFU_REGION_RW_SIZE;
	return 0;
}

void vfu_region_rw_encode(uint8_t *p, uint64_t offset, uint32_t region, uint32_t count)
{
	wire_st(p, offset, 8);
	wire_st(p + 8, region, 4);
	wire_st(p + 12, count, 4);
}

void vfu_dma_read_encode(uint8_t *p, uint64_t addr, uint32_t count)
{
	wire_st(p, addr, 8);
	wire_st(p + 8, count, 8);
}

size_t vfu_dma_write_encode(uint8_t *p, uint64_t addr, const uint8_t *data, uint32_t count)
{
	wire_st(p, addr, 8);
	wire_st(p + 8, count, 8);
	if (count)
		memcpy(p + VFU_DMA_RW_DATA, data, count);
	return (size_t)VFU_DMA_RW_SIZE + count;
}

int vfu_dma_rw_decode(const uint8_t *p, size_t len, bool write, struct vfu_dma_rw *r, char *why,
		      size_t whylen)
{
	const char *name = write ? "DMA_WRITE" : "DMA_READ reply";

	if (len < VFU_DMA_RW_DATA)
		return wire_bad(why, whylen, "%s payload of %zu bytes (at least %u)", name, len,
				VFU_DMA_RW_DATA);
	r->addr = wire_ld(p, 8);
	if (wire_ld(p + 8, 8) > UINT32_MAX)
		return wire_bad(why, whylen, "%s count 0x%llx", name,
				(unsigned long long)wire_ld(p + 8, 8));
	r->count = (uint32_t)wire_ld(p + 8, 4);
	r->data = p + VFU_DMA_RW_DATA;
	if (len - VFU_DMA_RW_DATA < r->count)
		return wire_bad(why, whylen, "%s count %u with %zu data bytes", name, r->count,
				len - VFU_DMA_RW_DATA);
	if (len - VFU_DMA_RW_DATA - r->count > VFU_DMA_RW_SIZE - VFU_DMA_RW_DATA)
		return wire_bad(why, whylen, "%s of %zu bytes for count %u (at most %u more)", name,
				len, r->count, VFU_DMA_RW_SIZE);
	return 0;
}
