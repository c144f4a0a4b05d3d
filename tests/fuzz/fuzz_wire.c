/* libFuzzer harness of the wire decoder: coreio__wire_decode at both sides, then every typed
 * payload decoder of wire.h on what decodes, with invariants from docs/protocol.md. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "wire.h"

/* The bits of w[0] and w[1] that struct coreio_wire_hdr holds (the others are reserved). */
#define W0_FIELDS 0xffffffffc000ffffull /* iface, E, error, origin, tag */
#define W1_FIELDS 0xffffffffff3f00ffull /* op, size, sid, flags, mask */

enum payload { P_NONE, P_SINGLE, P_PAIR, P_LARGE, P_IRQ };

/* Whether side may accept an opcode with this origin at all (docs/protocol.md, "Opcodes"). */
static bool op_allowed(enum coreio_wire_side side, const struct coreio_wire_hdr *h)
{
	switch (h->op) {
	case COREIO_OP_PING:
	case COREIO_OP_READ:
	case COREIO_OP_WRITEA:
		return true;
	case COREIO_OP_WRITE:
	case COREIO_OP_READP:
	case COREIO_OP_WRITEP:
	case COREIO_OP_WRITEAP:
		return !h->origin; /* only the VM starts them */
	case COREIO_OP_LREAD:
	case COREIO_OP_LWRITE:
		return h->origin; /* only a client starts them */
	case COREIO_OP_IRQ_UPDATE:
		return side == COREIO_WIRE_AT_VM;
	case COREIO_OP_RGN_CLAIM:
		return side == COREIO_WIRE_AT_VM || h->origin;
	case COREIO_OP_RESET:
		return side == COREIO_WIRE_AT_CLIENT;
	case COREIO_OP_SHM_MAP:
		return side == COREIO_WIRE_AT_CLIENT && !h->origin && !h->error && h->extra == 0;
	default:
		return false;
	}
}

/* The data a frame accepted by side must carry inside itself. */
static enum payload payload_of(enum coreio_wire_side side, const struct coreio_wire_hdr *h)
{
	bool vm = side == COREIO_WIRE_AT_VM;

	switch (h->op) {
	case COREIO_OP_IRQ_UPDATE:
		return P_IRQ;
	case COREIO_OP_READ: /* an answer to a read carries the data, unless it failed */
		return (vm ? !h->origin : h->origin) && !h->error ? P_SINGLE : P_NONE;
	case COREIO_OP_WRITEA: /* the write itself carries it, its answer does not */
		return (vm ? h->origin : !h->origin) ? P_SINGLE : P_NONE;
	case COREIO_OP_WRITE:
		return vm ? P_NONE : P_SINGLE;
	case COREIO_OP_READP:
		return vm && h->error ? P_NONE : P_PAIR;
	case COREIO_OP_WRITEP:
	case COREIO_OP_WRITEAP:
		return vm ? P_NONE : P_PAIR;
	case COREIO_OP_LREAD:
		return !vm && !h->error ? P_LARGE : P_NONE;
	case COREIO_OP_LWRITE:
		return vm ? P_LARGE : P_NONE;
	default:
		return P_NONE;
	}
}

/* A range [p, p + n) lies inside the frame. */
static bool inside(const struct coreio_wire_msg *m, const uint8_t *p, size_t n)
{
	return p >= m->frame && p <= m->frame + m->frame_len &&
	       n <= (size_t)(m->frame + m->frame_len - p);
}

static void check_payload(enum coreio_wire_side side, const struct coreio_wire_msg *m)
{
	const struct coreio_wire_hdr *h = &m->h;

	switch (payload_of(side, h)) {
	case P_NONE:
		break;
	case P_IRQ:
		FUZZ_CHECK(m->data == m->frame + COREIO_WIRE_DATA_OFF && m->len == 8);
		FUZZ_CHECK(inside(m, m->data, m->len));
		break;
	case P_SINGLE:
		FUZZ_CHECK(h->size >= 1 && h->size <= COREIO_WIRE_MAX_SINGLE);
		FUZZ_CHECK(m->len == h->size && m->data == m->frame + COREIO_WIRE_DATA_OFF);
		FUZZ_CHECK(inside(m, m->data, m->len));
		break;
	case P_PAIR:
		FUZZ_CHECK(h->size >= 1 && h->size <= COREIO_WIRE_MAX_PAIR);
		FUZZ_CHECK(m->len == h->size && m->data == m->frame + COREIO_WIRE_DATA_OFF);
		FUZZ_CHECK(m->data2 == m->frame + coreio__wire_pair_off(h->size));
		FUZZ_CHECK(inside(m, m->data, m->len) && inside(m, m->data2, m->len));
		FUZZ_CHECK(m->data + m->len <= m->data2); /* the elements do not overlap */
		break;
	case P_LARGE:
		FUZZ_CHECK(h->mask >= 1 && h->mask <= COREIO_WIRE_LARGE_PIECE);
		FUZZ_CHECK(m->len == h->mask && m->data == m->frame + COREIO_WIRE_DATA_OFF);
		FUZZ_CHECK(inside(m, m->data, m->len));
		break;
	}
	/* Whatever the opcode, a pointer the decoder hands out points into the frame. */
	if (m->data)
		FUZZ_CHECK(inside(m, m->data, 0));
	if (m->data2)
		FUZZ_CHECK(inside(m, m->data2, m->len));
}

/* The header round-trips through the encoder, and the unit helpers keep what they should. */
static void check_encoders(const struct coreio_wire_msg *m)
{
	const uint8_t *f = m->frame;
	uint8_t u[COREIO_WIRE_UNIT];
	char line[256];
	int n;

	FUZZ_CHECK(coreio__wire_encode(u, &m->h) == m->frame_len);
	FUZZ_CHECK(coreio__wire_get64(u) == (coreio__wire_get64(f) & W0_FIELDS));
	FUZZ_CHECK(coreio__wire_get64(u + 8) == (coreio__wire_get64(f + 8) & W1_FIELDS));
	FUZZ_CHECK(coreio__wire_get64(u + 16) == coreio__wire_get64(f + 16));

	FUZZ_CHECK(coreio__wire_echo(u, f) == COREIO_WIRE_UNIT);
	FUZZ_CHECK(coreio__wire_get64(u) == (coreio__wire_get64(f) & ~COREIO_WIRE_W0_EXTRA));
	FUZZ_CHECK(memcmp(u + 8, f + 8, COREIO_WIRE_UNIT - 8) == 0);
	FUZZ_CHECK(coreio__wire_frame_len(coreio__wire_get64(u)) == COREIO_WIRE_UNIT);

	FUZZ_CHECK(coreio__wire_answer_init(u, f) == COREIO_WIRE_UNIT);
	FUZZ_CHECK(coreio__wire_get64(u) ==
		   (coreio__wire_get64(f) & ~(COREIO_WIRE_W0_EXTRA | COREIO_WIRE_W0_ERROR)));
	FUZZ_CHECK(memcmp(u + 8, f + 8, 16) == 0);
	for (unsigned i = COREIO_WIRE_DATA_OFF; i < COREIO_WIRE_UNIT; i++)
		FUZZ_CHECK(u[i] == 0);
	coreio__wire_set_error(u, true);
	FUZZ_CHECK(coreio__wire_get64(u) & COREIO_WIRE_W0_ERROR);

	n = coreio__wire_format(line, sizeof(line), f);
	FUZZ_CHECK(n > 0 && (size_t)n < sizeof(line) && strlen(line) == (size_t)n);
	FUZZ_CHECK(strncmp(line, coreio__wire_op_name(m->h.op),
			   strlen(coreio__wire_op_name(m->h.op))) == 0);
}

static void check_hello(const struct coreio_wire_msg *m)
{
	struct coreio_wire_hello hl;
	struct coreio_wire_msg a;
	uint8_t u[COREIO_WIRE_UNIT];
	int rc = coreio__wire_hello_decode(m, &hl);

	FUZZ_CHECK((rc == 0) == (m->h.op == COREIO_OP_PING && m->h.addr == COREIO_WIRE_MAGIC));
	FUZZ_CHECK(rc == 0 || rc == -ENOENT);
	if (rc)
		return;
	FUZZ_CHECK(hl.kind == coreio__wire_get64(m->frame + 24));
	FUZZ_CHECK(hl.caps == coreio__wire_get64(m->frame + 32));
	FUZZ_CHECK(hl.version == coreio__wire_get64(m->frame + 40));
	/* The VM's answer to it is a frame a client accepts, and reads back as an answer. */
	memcpy(u, m->frame, sizeof(u));
	coreio__wire_hello_answer(u, hl.caps & COREIO_CAP_ALL);
	FUZZ_CHECK(coreio__wire_decode(u, sizeof(u), COREIO_WIRE_AT_CLIENT, &a) == 0);
	FUZZ_CHECK(coreio__wire_hello_decode(&a, &hl) == 0);
	FUZZ_CHECK(hl.kind == COREIO_HELLO_ANSWER && hl.version == COREIO_WIRE_VERSION);
}

static void check_shm_map(const struct coreio_wire_msg *m)
{
	struct coreio_wire_shm_map s, s2;
	struct coreio_wire_msg m2;
	uint8_t u[COREIO_WIRE_UNIT];
	int rc = coreio__wire_shm_map_decode(m, &s);
	bool sane;

	if (m->h.op != COREIO_OP_SHM_MAP) {
		FUZZ_CHECK(rc == -EPROTO);
		return;
	}
	FUZZ_CHECK(rc == 0 || rc == -EPROTO);
	s.gpa = m->h.addr;
	s.size = coreio__wire_get64(m->frame + 24);
	s.offset = coreio__wire_get64(m->frame + 32);
	s.index = coreio__wire_get64(m->frame + 40);
	s.count = coreio__wire_get64(m->frame + 56);
	sane = s.count <= COREIO_WIRE_SHM_MAX_REGIONS &&
	       (s.count == 0 || (s.index < s.count && s.size > 0 && s.gpa <= UINT64_MAX - s.size &&
				 s.offset <= UINT64_MAX - s.size));
	FUZZ_CHECK((rc == 0) == sane);
	if (rc)
		return;
	rc = coreio__wire_shm_map_decode(m, &s);
	FUZZ_CHECK(rc == 0);
	/* Encoding the decoded fields gives a frame that decodes to the same fields. */
	FUZZ_CHECK(coreio__wire_shm_map_encode(u, &s) == COREIO_WIRE_UNIT);
	FUZZ_CHECK(coreio__wire_decode(u, sizeof(u), COREIO_WIRE_AT_CLIENT, &m2) == 0);
	FUZZ_CHECK(coreio__wire_shm_map_decode(&m2, &s2) == 0);
	FUZZ_CHECK(memcmp(&s, &s2, sizeof(s)) == 0);
	FUZZ_CHECK(m2.h.tag == (uint32_t)s.gen);
}

static void check_irq(const struct coreio_wire_msg *m)
{
	uint64_t iid = 0, iid2 = 0;
	bool level = false, level2 = false;
	struct coreio_wire_msg m2;
	uint8_t u[COREIO_WIRE_UNIT];
	int rc = coreio__wire_irq_decode(m, &iid, &level);

	if (m->h.op != COREIO_OP_IRQ_UPDATE) {
		FUZZ_CHECK(rc == -EPROTO);
		return;
	}
	FUZZ_CHECK(rc == 0);
	FUZZ_CHECK(iid == m->h.addr);
	FUZZ_CHECK(level == (coreio__wire_get64(m->frame + COREIO_WIRE_DATA_OFF) != 0));
	if (iid > 0xffffffffu)
		return;
	FUZZ_CHECK(coreio__wire_irq_encode(u, m->h.iface, (unsigned)iid, level) ==
		   COREIO_WIRE_UNIT);
	FUZZ_CHECK(coreio__wire_decode(u, sizeof(u), COREIO_WIRE_AT_VM, &m2) == 0);
	FUZZ_CHECK(coreio__wire_irq_decode(&m2, &iid2, &level2) == 0);
	FUZZ_CHECK(iid2 == iid && level2 == level && m2.h.iface == m->h.iface && m2.h.origin);
}

static void check_claim(enum coreio_wire_side side, const struct coreio_wire_msg *m)
{
	struct coreio_wire_msg m2;
	uint8_t u[COREIO_WIRE_UNIT];
	int r;

	if (m->h.op != COREIO_OP_RGN_CLAIM)
		return;
	if (side == COREIO_WIRE_AT_VM) {
		/* What a client claims, the VM answers: the answer reads back as that result. */
		int err = m->h.error ? -(int)(m->h.tag % 4095) - 1 : 0;

		coreio__wire_claim_ack_encode(u, m->h.iface, m->h.tag, err);
		FUZZ_CHECK(coreio__wire_decode(u, sizeof(u), COREIO_WIRE_AT_CLIENT, &m2) == 0);
		FUZZ_CHECK(coreio__wire_claim_ack_result(&m2) == err);
		FUZZ_CHECK(m2.h.tag == m->h.tag && m2.h.iface == m->h.iface);
		return;
	}
	r = coreio__wire_claim_ack_result(m);
	if (!m->h.error)
		FUZZ_CHECK(r == 0);
	else
		FUZZ_CHECK(r >= -4095 && r <= -1);
}

/* An MMIO answer's read data, at the sizes a request may have had (and some it may not). */
static void check_answer_read(enum coreio_wire_side side, const struct coreio_wire_msg *m)
{
	uint8_t d1[COREIO_WIRE_MAX_SINGLE + 8], d2[COREIO_WIRE_MAX_SINGLE + 8];

	if (side != COREIO_WIRE_AT_VM || m->h.origin)
		return;
	for (unsigned size = 0; size <= COREIO_WIRE_MAX_SINGLE + 1; size += 3) {
		for (int pair = 0; pair < 2; pair++) {
			unsigned max = pair ? COREIO_WIRE_MAX_PAIR : COREIO_WIRE_MAX_SINGLE;
			int rc = coreio__wire_answer_read(m, size, pair, d1, pair ? d2 : NULL);

			FUZZ_CHECK((rc == 0) == (size >= 1 && size <= max));
			if (rc)
				continue;
			FUZZ_CHECK(memcmp(d1, m->frame + COREIO_WIRE_DATA_OFF, size) == 0);
			if (pair)
				FUZZ_CHECK(
				    memcmp(d2, m->frame + coreio__wire_pair_off(size), size) == 0);
		}
	}
}

/* Decode the frame at both sides; check what each accepts. */
static void decode_both(const uint8_t *frame, size_t len, bool well_framed)
{
	for (int s = 0; s < 2; s++) {
		enum coreio_wire_side side = s ? COREIO_WIRE_AT_CLIENT : COREIO_WIRE_AT_VM;
		struct coreio_wire_msg m;
		int rc = coreio__wire_decode(frame, len, side, &m);

		FUZZ_CHECK(rc == 0 || rc == -EPROTO);
		if (!well_framed) {
			FUZZ_CHECK(rc == -EPROTO);
			continue;
		}
		if (rc)
			continue;
		FUZZ_CHECK(m.frame == frame && m.frame_len == len);
		FUZZ_CHECK(len % COREIO_WIRE_UNIT == 0 && len >= COREIO_WIRE_UNIT &&
			   len <= COREIO_WIRE_MAX_MSG);
		FUZZ_CHECK(len == ((size_t)m.h.extra + 1) * COREIO_WIRE_UNIT);
		FUZZ_CHECK(m.h.size <= 0x3f && m.h.sid <= 0xf && m.h.flags <= 0xf);
		FUZZ_CHECK(op_allowed(side, &m.h));
		check_payload(side, &m);
		check_encoders(&m);
		check_hello(&m);
		check_shm_map(&m);
		check_irq(&m);
		check_claim(side, &m);
		check_answer_read(side, &m);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct coreio_wire_msg m;
	uint8_t *copy;
	size_t flen;

	FUZZ_CHECK(coreio__wire_decode(NULL, size, COREIO_WIRE_AT_VM, &m) == -EINVAL);
	FUZZ_CHECK(coreio__wire_peek_len(data, size < 8 ? size : 7) == 0);
	if (size < 8) {
		/* Too short to say its length: never a frame. */
		copy = malloc(size ? size : 1);
		FUZZ_CHECK(copy != NULL);
		memcpy(copy, data, size);
		decode_both(copy, size, false);
		free(copy);
		return 0;
	}
	/* Traces are made of frames nobody validated: only the first unit may be read. */
	if (size >= COREIO_WIRE_UNIT) {
		char line[256];
		int n;

		copy = malloc(COREIO_WIRE_UNIT);
		FUZZ_CHECK(copy != NULL);
		memcpy(copy, data, COREIO_WIRE_UNIT);
		n = coreio__wire_format(line, sizeof(line), copy);
		FUZZ_CHECK(n > 0 && (size_t)n < sizeof(line));
		free(copy);
	}
	/* The encoder's unit count for a payload size is the smallest that holds it. */
	{
		size_t want = (size_t)(fuzz_le(data, 4) % (COREIO_WIRE_MAX_DATA + 1));
		size_t units = (size_t)coreio__wire_extra_for(want) + 1;

		FUZZ_CHECK(units * COREIO_WIRE_UNIT >= COREIO_WIRE_DATA_OFF + want);
		FUZZ_CHECK(units == 1 ||
			   (units - 1) * COREIO_WIRE_UNIT < COREIO_WIRE_DATA_OFF + want);
	}
	flen = coreio__wire_frame_len(coreio__wire_get64(data));
	FUZZ_CHECK(coreio__wire_peek_len(data, size) == flen);
	FUZZ_CHECK(flen >= COREIO_WIRE_UNIT && flen <= COREIO_WIRE_MAX_MSG &&
		   flen % COREIO_WIRE_UNIT == 0);

	/* The whole input as one buffer of exactly its size: a frame only when the lengths agree.
	 */
	copy = malloc(size);
	FUZZ_CHECK(copy != NULL);
	memcpy(copy, data, size);
	decode_both(copy, size, size == flen);
	free(copy);

	/* The frame the header announces, alone in a buffer of exactly its length. */
	if (size > flen) {
		copy = malloc(flen);
		FUZZ_CHECK(copy != NULL);
		memcpy(copy, data, flen);
		decode_both(copy, flen, true);
		free(copy);
	}
	return 0;
}
