/* coreio-vm: IRQ lines (0..23 the guest's pins; more for QEMU-hosted devices), each the OR of its
 * level sources. */
#ifndef COREIO_VM_IRQ_H
#define COREIO_VM_IRQ_H

#include <stdbool.h>

#define IRQ_LINES 128 /* 0..23: the guest's (irq=); above: QEMU-hosted devices' vectors */

/* Called when the level of line changes (the backend: qtest, later KVM). */
typedef void (*irq_backend_fn)(int line, bool level, void *opaque);

struct irq_chip {
	unsigned asserted[IRQ_LINES]; /* sources at level 1 on each line */
	irq_backend_fn backend;
	void *opaque;
};

/* One input of a line; the owner embeds it (e.g. per connection, rid, iid). */
struct irq_source {
	int line; /* 0..IRQ_LINES-1, or -1 for none */
	bool level;
};

/*
 * Initialise every line to 0 with an optional backend (may be NULL).
 */
void irq_init(struct irq_chip *chip, irq_backend_fn backend, void *opaque);

/* Change the backend of chip (NULL for none). */
void irq_set_backend(struct irq_chip *chip, irq_backend_fn backend, void *opaque);

/*
 * Make src an input of line (-1: of no line) at level 0.
 */
void irq_source_init(struct irq_source *src, int line);

/*
 * Set the level of src. Repeating a level changes nothing; the backend is
 * called only when the OR of the line's sources changes.
 */
void irq_source_set(struct irq_chip *chip, struct irq_source *src, bool level);

/*
 * Current level of line. Returns 0 or 1, or -EINVAL for a bad line.
 */
int irq_line_level(const struct irq_chip *chip, int line);

#endif
