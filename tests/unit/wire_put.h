/* Unit tests of the wire modules: little-endian stores to write messages by hand (not with the
 * encoders under test). */
#ifndef COREIO_TEST_WIRE_PUT_H
#define COREIO_TEST_WIRE_PUT_H

#include <stdint.h>

/* Store v as 4 little-endian bytes at p. */
static inline void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Store v as 8 little-endian bytes at p. */
static inline void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

#endif
