/* libFuzzer harness of coreio-vm's command line (config_parse): an argv built from the input, and
 * the invariants of what it accepts. */
#include <stdbool.h>
#include <string.h>

#include "config.h"
#include "fuzz.h"

#define MAX_ARGS 64
#define MAX_IN	 8192u

/* Reference of config_dma_allowed(), in 128-bit arithmetic. */
static bool dma_allowed_ref(const struct range_config *r, uint64_t gpa, uint64_t len)
{
	unsigned __int128 end = (unsigned __int128)gpa + len;

	if (r->dma == DMA_RAM)
		return true;
	if (r->dma == DMA_NONE || len == 0 || end > ((unsigned __int128)1 << 64))
		return false;
	for (unsigned i = 0; i < r->ndma_win; i++) {
		unsigned __int128 ws = r->dma_win[i].start, we = ws + r->dma_win[i].size;

		if (gpa >= ws && end <= we)
			return true;
	}
	return false;
}

/* What config_parse() accepted holds together. */
static void check_config(const struct vm_config *cfg, const uint8_t *data, size_t size)
{
	FUZZ_CHECK(cfg->nranges <= CONFIG_MAX_RANGES);
	FUZZ_CHECK(cfg->niommus <= CONFIG_MAX_IOMMUS);
	FUZZ_CHECK(cfg->peer_timeout_ms <= CONFIG_TIMEOUT_MAX);
	FUZZ_CHECK(memchr(cfg->listen, 0, sizeof(cfg->listen)) != NULL);
	for (unsigned i = 0; i < cfg->nranges; i++) {
		const struct range_config *r = &cfg->ranges[i];

		FUZZ_CHECK(r->size > 0);
		FUZZ_CHECK(r->pci || r->size - 1 <= UINT64_MAX - r->start);
		FUZZ_CHECK(r->nirq <= CONFIG_MAX_IRQS);
		FUZZ_CHECK(r->nallow_uid <= CONFIG_MAX_ALLOW && r->nallow_gid <= CONFIG_MAX_ALLOW);
		FUZZ_CHECK(r->kind == PORT_UNIX || (r->nallow_uid == 0 && r->nallow_gid == 0));
		FUZZ_CHECK(r->ndma_win <= CONFIG_MAX_DMA_WINDOWS);
		FUZZ_CHECK((r->dma == DMA_WINDOWS) == (r->ndma_win > 0));
		FUZZ_CHECK(!r->shm || r->dma == DMA_RAM);
		FUZZ_CHECK(r->max_conns >= 1 && r->max_conns <= CONFIG_MAX_CONNS_MAX);
		FUZZ_CHECK(r->timeout_ms <= CONFIG_TIMEOUT_MAX);
		for (unsigned w = 0; w < r->ndma_win; w++) {
			const struct dma_window *dw = &r->dma_win[w];

			FUZZ_CHECK(dw->size > 0 && dw->size - 1 <= UINT64_MAX - dw->start);
			/* The window's own bytes are allowed, its edges end it. */
			FUZZ_CHECK(config_dma_allowed(r, dw->start, dw->size));
			FUZZ_CHECK(config_dma_allowed(r, dw->start + (dw->size - 1), 1));
		}
		/* Pieces made of the input's bytes agree with the reference. */
		for (size_t off = 0; off + 16 <= size && off < 256; off += 16) {
			uint64_t gpa = fuzz_le(data + off, 8), len = fuzz_le(data + off + 8, 8);

			if (r->ndma_win && (data[off] & 1))
				gpa = r->dma_win[data[off + 1] % r->ndma_win].start +
				      (gpa & 0xffff) - 0x8000;
			if (data[off + 2] & 1)
				len &= 0x1ffff;
			FUZZ_CHECK(config_dma_allowed(r, gpa, len) == dma_allowed_ref(r, gpa, len));
		}
		for (unsigned j = i + 1; j < cfg->nranges; j++) {
			const struct range_config *b = &cfg->ranges[j];

			if (!config_same_port(r, b))
				continue;
			FUZZ_CHECK(r->dma == b->dma && r->max_conns == b->max_conns);
			FUZZ_CHECK(r->shm == b->shm && r->iommu == b->iommu);
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char buf[MAX_IN + 1];
	static struct vm_config cfg;
	char *argv[MAX_ARGS + 2];
	char err[512];
	int argc = 0;
	size_t n = size < MAX_IN ? size : MAX_IN;

	memcpy(buf, data, n);
	buf[n] = '\0';
	argv[argc++] = "coreio-vm";
	/* One argument per line. --listen (any abbreviation) is left out: it
	 * resolves names (getaddrinfo), which a fuzzer must not do. */
	for (char *save = NULL, *tok = strtok_r(buf, "\n", &save); tok && argc <= MAX_ARGS;
	     tok = strtok_r(NULL, "\n", &save)) {
		if (strncmp(tok, "--l", 3) == 0)
			continue;
		argv[argc++] = tok;
	}
	argv[argc] = NULL;
	err[0] = '\0';
	if (config_parse(argc, argv, &cfg, err, sizeof(err)) == 0) {
		if (!cfg.help)
			check_config(&cfg, data, size);
	} else {
		/* A refusal always says why. */
		FUZZ_CHECK(err[0] != '\0' && memchr(err, 0, sizeof(err)) != NULL);
	}
	return 0;
}
