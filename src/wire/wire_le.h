/* coreio wire: little-endian load/store and decoder error helpers shared by the wire format files
 * and coreio-vm's recording (not installed). */
#ifndef COREIO_WIRE_LE_H
#define COREIO_WIRE_LE_H

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Load n (<= 8) little-endian bytes at p. */
static inline uint64_t wire_ld(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	for (unsigned i = n; i-- > 0;)
		v = v << 8 | p[i];
	return v;
}

/* Store the n (<= 8) low bytes of v little-endian at p. */
static inline void wire_st(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Store v as 2, 4 or 8 little-endian bytes at p. */
static inline void wire_put16(uint8_t *p, uint16_t v)
{
	wire_st(p, v, 2);
}

static inline void wire_put32(uint8_t *p, uint32_t v)
{
	wire_st(p, v, 4);
}

static inline void wire_put64(uint8_t *p, uint64_t v)
{
	wire_st(p, v, 8);
}

/* Format why a message is refused into why (if given) and return -EINVAL. */
static inline int wire_bad(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static inline int wire_bad(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (why && whylen) {
		va_start(ap, fmt);
		vsnprintf(why, whylen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

#endif
