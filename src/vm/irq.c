/* coreio-vm: guest IRQ lines 0..23, each the OR of its level sources. */
#include "irq.h"

#include <errno.h>
#include <string.h>

void irq_init(struct irq_chip *chip, irq_backend_fn backend, void *opaque)
{
	memset(chip, 0, sizeof(*chip));
	chip->backend = backend;
	chip->opaque = opaque;
}

void irq_set_backend(struct irq_chip *chip, irq_backend_fn backend, void *opaque)
{
	chip->backend = backend;
	chip->opaque = opaque;
}

void irq_source_init(struct irq_source *src, int line)
{
	src->line = (line >= 0 && line < IRQ_LINES) ? line : -1;
	src->level = false;
}

void irq_source_set(struct irq_chip *chip, struct irq_source *src, bool level)
{
	unsigned *count;

	if (src->line < 0 || src->level == level)
		return;
	src->level = level;
	count = &chip->asserted[src->line];
	if (level) {
		if ((*count)++ == 0 && chip->backend)
			chip->backend(src->line, true, chip->opaque);
	} else if (*count > 0) {
		if (--(*count) == 0 && chip->backend)
			chip->backend(src->line, false, chip->opaque);
	}
}

int irq_line_level(const struct irq_chip *chip, int line)
{
	if (line < 0 || line >= IRQ_LINES)
		return -EINVAL;
	return chip->asserted[line] > 0;
}
