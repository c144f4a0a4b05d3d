/* coreio-responder: the "outside" half of the rpi-test example, a 256-byte memory behind range 0.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coreio.h"

#define RESPONDER_SIZE 256u

static uint8_t responder_mem[RESPONDER_SIZE];

/* Copy the part of [off, off + len) that lies inside the array; the rest reads 0. */
static int responder_read(void *priv, uint64_t addr, size_t len, void *buf, unsigned flags)
{
	uint64_t off = addr & 0xfff;
	uint8_t *out = buf;

	(void)priv;
	for (size_t i = 0; i < len; i++) {
		uint64_t o = off + i;

		out[i] = o < RESPONDER_SIZE ? responder_mem[o] : 0;
	}
	printf("read  %08" PRIx64 " %d %x\n", addr, (int)len, flags);
	fflush(stdout);
	return 0;
}

/* Store the part of [off, off + len) that lies inside the array; the rest is ignored. */
static int responder_write(void *priv, uint64_t addr, size_t len, void *buf, unsigned flags)
{
	uint64_t off = addr & 0xfff;
	const uint8_t *in = buf;
	unsigned long long v = 0;

	(void)priv;
	for (size_t i = 0; i < len; i++) {
		uint64_t o = off + i;

		if (o < RESPONDER_SIZE)
			responder_mem[o] = in[i];
		if (i < 8)
			v |= (unsigned long long)in[i] << (8 * i);
	}
	printf("write %08" PRIx64 " %d %016llx %x\n", addr, (int)len, v, flags);
	fflush(stdout);
	return 0;
}

static void responder_usage(FILE *f)
{
	fprintf(f, "usage: coreio-responder TARGET\n"
		   "  TARGET  host:port, [v6addr]:port, host or unix:/path of the VM\n"
		   "Serves a 256-byte memory as range 0 and prints every access.\n");
}

int main(int argc, char **argv)
{
	coreio_func_t funcs;
	int rc;

	if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		responder_usage(stdout);
		return 0;
	}
	if (argc != 2) {
		responder_usage(stderr);
		return 2;
	}
	rc = coreio_connect(argv[1]);
	if (rc) {
		fprintf(stderr, "coreio-responder: connect %s: %s\n", argv[1], strerror(-rc));
		return 1;
	}
	memset(&funcs, 0, sizeof(funcs));
	funcs.read = responder_read;
	funcs.write = responder_write;
	rc = coreio_register(0, &funcs, NULL);
	if (rc) {
		fprintf(stderr, "coreio-responder: register: %s\n", strerror(-rc));
		return 1;
	}
	for (;;) {
		rc = coreio_mainloop(1000000);
		if (rc) {
			fprintf(stderr, "coreio-responder: %s\n", strerror(-rc));
			return 1;
		}
	}
}
