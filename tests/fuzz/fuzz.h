/* Shared by the fuzz harnesses: the libFuzzer entry point and an invariant check that aborts. */
#ifndef COREIO_FUZZ_H
#define COREIO_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/*
 * Run one input through the harness (libFuzzer's entry point; standalone.c
 * calls it for every file of a corpus).
 *   data, size  the input; only data[0..size) may be read.
 * Returns 0. A broken invariant aborts the program (FUZZ_CHECK).
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Report a broken invariant and abort: libFuzzer records the input as a crash. */
static inline void fuzz_fail(const char *what, const char *file, int line)
{
	fprintf(stderr, "%s:%d: invariant broken: %s\n", file, line, what);
	abort();
}

/* Check an invariant; the harnesses are test programs, so a violation aborts. */
#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond))                                                                       \
			fuzz_fail(#cond, __FILE__, __LINE__);                                      \
	} while (0)

/* Little-endian load of n (<= 8) bytes at p. */
static inline uint64_t fuzz_le(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

#endif
