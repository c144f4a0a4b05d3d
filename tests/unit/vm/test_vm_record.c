/* Unit tests of the pcapng writer of coreio-vm --record (record.c): blocks, order, threads, errors.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <pthread.h>

#include "record.h"

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* The whole file at path; *len its size. */
static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	long n;

	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_true(n > 0);
	rewind(f);
	buf = malloc((size_t)n);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

static void tmp_path(char *buf, size_t len)
{
	snprintf(buf, len, "/tmp/test_vm_record_%ld.pcapng", (long)getpid());
}

/* Find option code in the options at p..end; returns its value or NULL. */
static const uint8_t *find_opt(const uint8_t *p, const uint8_t *end, unsigned code, unsigned *vlen)
{
	while (p + 4 <= end) {
		unsigned c = p[0] | p[1] << 8, l = p[2] | p[3] << 8;

		if (c == 0)
			break;
		if (c == code) {
			*vlen = l;
			return p + 4;
		}
		p += 4 + ((l + 3) & ~3u);
	}
	return NULL;
}

static void test_blocks_of_a_small_recording(void **state)
{
	char path[64];
	struct vm_record *r;
	struct record_stats st;
	uint8_t frame[64] = {0}, *buf, *p, *end;
	const uint8_t *v;
	unsigned vl, nblocks = 0, nepb = 0;
	size_t len;
	char err[256];

	(void)state;
	tmp_path(path, sizeof(path));
	assert_int_equal(record_open(&r, path, err, sizeof(err)), 0);
	record_conn(r, 1, "127.0.0.1:5000", "127.0.0.1:4300");
	frame[0] = 3;	  /* iface */
	frame[8] = 0x01;  /* READ */
	frame[16] = 0x40; /* addr */
	record_frame(r, 1, RECORD_TO_CLIENT, 0, frame, sizeof(frame));
	record_event(r, 1, REC_EV_CLAIM, "claim rid=%u range=%u", 0u, 2u);
	record_frame(r, 1, RECORD_FROM_CLIENT, RECORD_FLAG_FD, frame, sizeof(frame));
	assert_int_equal(record_close(r, &st), 0);
	assert_int_equal(st.records, 3);
	assert_int_equal(st.lost, 0);

	buf = slurp(path, &len);
	assert_int_equal(st.bytes, len);
	p = buf;
	end = buf + len;
	while (p < end) {
		uint32_t type = get32(p), blen = get32(p + 4);

		assert_true(blen >= 12 && blen % 4 == 0 && blen <= (size_t)(end - p));
		assert_int_equal(get32(p + blen - 4), blen);
		if (nblocks == 0) {
			assert_int_equal(type, 0x0A0D0D0A);
			assert_int_equal(get32(p + 8), 0x1A2B3C4D);
			v = find_opt(p + 24, p + blen - 4, 1, &vl);
			assert_non_null(v);
			assert_memory_equal(v, "coreio recording v1", vl);
			v = find_opt(p + 24, p + blen - 4, 4, &vl);
			assert_non_null(v);
			assert_memory_equal(v, "coreio-vm", vl);
		} else if (nblocks <= 2) {
			assert_int_equal(type, 1);
			assert_int_equal(p[8] | p[9] << 8, 147);
			v = find_opt(p + 16, p + blen - 4, 2, &vl);
			assert_non_null(v);
			if (nblocks == 2) {
				assert_memory_equal(v, "coreio conn 1", vl);
				v = find_opt(p + 16, p + blen - 4, 3, &vl);
				assert_non_null(v);
				assert_memory_equal(v, "127.0.0.1:5000 on 127.0.0.1:4300", vl);
			}
			v = find_opt(p + 16, p + blen - 4, 9, &vl);
			assert_non_null(v);
			assert_int_equal(vl, 1);
			assert_int_equal(v[0], 9);
		} else {
			const uint8_t *d = p + 28;
			uint32_t cap = get32(p + 20);

			assert_int_equal(type, 6);
			assert_int_equal(get32(p + 8), 1); /* conn 1's interface */
			assert_int_equal(get32(p + 24), cap);
			assert_int_equal(d[0], 0x43);
			assert_int_equal(d[1], 1);
			assert_int_equal(get32(d + 4), 1);
			assert_int_equal(get64(d + 8), nepb + 1);
			if (nepb == 0 || nepb == 2) {
				assert_int_equal(cap, 16 + 64);
				assert_int_equal(d[2], nepb == 0 ? 1 : 0);
				assert_int_equal(d[3], nepb == 0 ? 0 : 1);
				assert_memory_equal(d + 16, frame, 64);
			} else {
				const char *txt = "claim rid=0 range=2";

				assert_int_equal(d[2], 2);
				assert_int_equal(d[16] | d[17] << 8, REC_EV_CLAIM);
				assert_int_equal(get32(d + 20), strlen(txt));
				assert_int_equal(cap, 16 + 8 + strlen(txt));
				assert_memory_equal(d + 24, txt, strlen(txt));
			}
			nepb++;
		}
		nblocks++;
		p += blen;
	}
	assert_int_equal(nepb, 3);
	free(buf);
	unlink(path);
}

#define THREADS	    4
#define PER_THREAD  30000
#define FRAME_BYTES 192

struct producer {
	struct vm_record *r;
	unsigned conn;
};

static void *produce(void *opaque)
{
	struct producer *pr = opaque;
	uint8_t frame[FRAME_BYTES];

	for (unsigned i = 0; i < PER_THREAD; i++) {
		memset(frame, 0, sizeof(frame));
		frame[1] = FRAME_BYTES / 64 - 1; /* E */
		memcpy(frame + 24, &i, sizeof(i));
		record_frame(pr->r, pr->conn, RECORD_FROM_CLIENT, 0, frame, sizeof(frame));
	}
	return NULL;
}

/* More than the buffer holds, from several threads: nothing lost, seq strictly increasing. */
static void test_threads_fill_the_buffer(void **state)
{
	char path[64], err[256];
	struct vm_record *r;
	struct record_stats st;
	struct producer pr[THREADS];
	pthread_t t[THREADS];
	uint8_t *buf, *p, *end;
	uint64_t last = 0, n = 0;
	unsigned next[THREADS + 1] = {0};
	size_t len;

	(void)state;
	tmp_path(path, sizeof(path));
	assert_int_equal(record_open(&r, path, err, sizeof(err)), 0);
	for (unsigned i = 0; i < THREADS; i++) {
		record_conn(r, i + 1, "unix", "/tmp/x.sock");
		pr[i] = (struct producer){r, i + 1};
		assert_int_equal(pthread_create(&t[i], NULL, produce, &pr[i]), 0);
	}
	for (unsigned i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(record_close(r, &st), 0);
	assert_int_equal(st.records, THREADS * PER_THREAD);
	assert_int_equal(st.lost, 0);
	assert_true(st.bytes > RECORD_BUF_SIZE);

	buf = slurp(path, &len);
	p = buf;
	end = buf + len;
	while (p < end) {
		uint32_t type = get32(p), blen = get32(p + 4);

		assert_true(blen >= 12 && blen <= (size_t)(end - p));
		if (type == 6) {
			const uint8_t *d = p + 28;
			uint32_t conn = get32(d + 4), iface = get32(p + 8);
			uint64_t seq = get64(d + 8);
			unsigned v;

			assert_true(seq > last);
			last = seq;
			assert_true(conn >= 1 && conn <= THREADS);
			assert_int_equal(iface, conn);
			memcpy(&v, d + 16 + 24, sizeof(v));
			/* Each thread's frames in its own order. */
			assert_int_equal(v, next[conn]);
			next[conn]++;
			n++;
		}
		p += blen;
	}
	assert_int_equal(n, THREADS * PER_THREAD);
	free(buf);
	unlink(path);
}

static void test_open_errors(void **state)
{
	struct vm_record *r = (struct vm_record *)1;
	char err[256];

	(void)state;
	assert_int_equal(record_open(&r, "/nonexistent-dir/x.pcapng", err, sizeof(err)), -ENOENT);
	assert_null(r);
	assert_non_null(strstr(err, "/nonexistent-dir/x.pcapng: cannot create the file"));
	if (access("/dev/full", W_OK) == 0) {
		assert_int_equal(record_open(&r, "/dev/full", err, sizeof(err)), -ENOSPC);
		assert_non_null(strstr(err, "cannot write"));
	}
	assert_int_equal(record_close(NULL, NULL), 0);
}

/* An event's text longer than RECORD_TEXT_MAX is cut, not overflowed. */
static void test_long_event_text_is_cut(void **state)
{
	char path[64], err[256], big[RECORD_TEXT_MAX * 2];
	struct vm_record *r;
	struct record_stats st;
	uint8_t *buf, *p;
	size_t len;

	(void)state;
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	tmp_path(path, sizeof(path));
	assert_int_equal(record_open(&r, path, err, sizeof(err)), 0);
	record_event(r, 0, REC_EV_NOTE, "note %s", big);
	assert_int_equal(record_close(r, &st), 0);
	buf = slurp(path, &len);
	p = buf + get32(buf + 4); /* past the SHB */
	p += get32(p + 4);	  /* past IDB 0 */
	assert_int_equal(get32(p), 6);
	assert_int_equal(get32(p + 28 + 20), RECORD_TEXT_MAX);
	assert_int_equal(get32(p + 8), 0);
	free(buf);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_blocks_of_a_small_recording),
	    cmocka_unit_test(test_threads_fill_the_buffer),
	    cmocka_unit_test(test_open_errors),
	    cmocka_unit_test(test_long_event_text_is_cut),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
