/* coreio-vm: the table of in-VMM devices and their creation in order. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "hw.h"

const struct hw_device *const hw_devices[] = {
    &hw_uart8250, &hw_debugexit, &hw_testdev, &hw_iommu, NULL,
};

int hw_init_all(struct hw_set *set, const struct hw_ctx *hw)
{
	memset(set, 0, sizeof(*set));
	for (unsigned i = 0; hw_devices[i] && i < HW_MAX_DEVICES; i++) {
		const struct hw_device *d = hw_devices[i];
		void *state = NULL;
		int rc;

		if (hw->qtest && !d->qtest)
			continue;
		rc = d->init(hw, &state);
		if (rc < 0) {
			fprintf(stderr, "coreio-vm: device %s: cannot create it: %s\n", d->name,
				strerror(-rc));
			hw_exit_all(set);
			return rc;
		}
		set->dev[set->n] = d;
		set->state[set->n] = state;
		set->n++;
	}
	return 0;
}

void hw_exit_all(struct hw_set *set)
{
	while (set->n > 0) {
		set->n--;
		set->dev[set->n]->exit(set->state[set->n]);
		set->state[set->n] = NULL;
	}
}

void *hw_state(const struct hw_set *set, const struct hw_device *dev)
{
	for (unsigned i = 0; i < set->n; i++)
		if (set->dev[i] == dev)
			return set->state[i];
	return NULL;
}
