/* coreio-vm: thin wrappers of the KVM ioctls (/dev/kvm, the VM fd and vCPU fds). */
#include "kvm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define KVM_TSS_ADDR 0xfffbd000ul /* three pages KVM needs on some hosts, below 4 GiB */

/* ioctl() that retries on EINTR; returns the result or -errno. */
static int xioctl(int fd, unsigned long req, unsigned long arg)
{
	int rc;

	do {
		rc = ioctl(fd, req, arg);
	} while (rc < 0 && errno == EINTR);
	return rc < 0 ? -errno : rc;
}

static int get_cpuid(struct kvm_vm *k)
{
	for (unsigned n = 64; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
		int rc;

		if (!c)
			return -ENOMEM;
		c->nent = n;
		rc = xioctl(k->sys_fd, KVM_GET_SUPPORTED_CPUID, (unsigned long)c);
		if (rc == 0) {
			k->cpuid = c;
			return 0;
		}
		free(c);
		if (rc != -E2BIG)
			return rc;
	}
	return -E2BIG;
}

int kvm_vm_open(struct kvm_vm *k, char *err, size_t errlen)
{
	int rc;

	memset(k, 0, sizeof(*k));
	k->vm_fd = -1;
	k->sys_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (k->sys_fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot open /dev/kvm: %s", strerror(errno));
		return rc;
	}
	rc = xioctl(k->sys_fd, KVM_GET_API_VERSION, 0);
	if (rc < 0) {
		snprintf(err, errlen,
			 "/dev/kvm: KVM_GET_API_VERSION failed: %s (not a KVM device?)",
			 strerror(-rc));
		kvm_vm_close(k);
		return -ENOSYS;
	}
	if (rc != KVM_API_VERSION) {
		snprintf(err, errlen, "/dev/kvm: API version %d, expected %d", rc, KVM_API_VERSION);
		kvm_vm_close(k);
		return -ENOSYS;
	}
	rc = xioctl(k->sys_fd, KVM_CREATE_VM, 0);
	if (rc < 0) {
		snprintf(err, errlen, "/dev/kvm: KVM_CREATE_VM failed: %s", strerror(-rc));
		kvm_vm_close(k);
		return rc;
	}
	k->vm_fd = rc;
	rc = xioctl(k->sys_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (rc < (int)sizeof(struct kvm_run)) {
		snprintf(err, errlen, "/dev/kvm: KVM_GET_VCPU_MMAP_SIZE failed");
		kvm_vm_close(k);
		return rc < 0 ? rc : -EINVAL;
	}
	k->run_size = (size_t)rc;
	rc = xioctl(k->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SYNC_REGS);
	k->sync_regs = rc > 0 ? ((uint64_t)rc & KVM_SYNC_X86_SREGS) : 0;
	rc = xioctl(k->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_COALESCED_MMIO);
	k->coalesced_page = rc > 0 ? (unsigned)rc : 0;
	rc = get_cpuid(k);
	if (rc < 0) {
		snprintf(err, errlen, "/dev/kvm: KVM_GET_SUPPORTED_CPUID failed: %s",
			 strerror(-rc));
		kvm_vm_close(k);
		return rc;
	}
	return 0;
}

void kvm_vm_close(struct kvm_vm *k)
{
	if (k->vm_fd >= 0)
		close(k->vm_fd);
	if (k->sys_fd >= 0)
		close(k->sys_fd);
	free(k->cpuid);
	k->cpuid = NULL;
	k->vm_fd = k->sys_fd = -1;
}

int kvm_vm_setup(struct kvm_vm *k, const struct mem *m, char *err, size_t errlen)
{
	struct kvm_userspace_memory_region r = {
	    .slot = 0,
	    .guest_phys_addr = 0,
	    .memory_size = m->size,
	    .userspace_addr = (uint64_t)(uintptr_t)m->base,
	};
	struct kvm_pit_config pit = {.flags = 0};
	int rc;

	rc = xioctl(k->vm_fd, KVM_SET_USER_MEMORY_REGION, (unsigned long)&r);
	if (rc < 0) {
		snprintf(err, errlen, "KVM_SET_USER_MEMORY_REGION (%llu bytes): %s",
			 (unsigned long long)m->size, strerror(-rc));
		return rc;
	}
	/* Only needed by some hosts (Intel without unrestricted guests); ignore failure. */
	(void)xioctl(k->vm_fd, KVM_SET_TSS_ADDR, KVM_TSS_ADDR);
	rc = xioctl(k->vm_fd, KVM_CREATE_IRQCHIP, 0);
	if (rc < 0) {
		snprintf(err, errlen, "KVM_CREATE_IRQCHIP: %s", strerror(-rc));
		return rc;
	}
	rc = xioctl(k->vm_fd, KVM_CREATE_PIT2, (unsigned long)&pit);
	if (rc < 0) {
		snprintf(err, errlen, "KVM_CREATE_PIT2: %s", strerror(-rc));
		return rc;
	}
	return 0;
}

void kvm_cpuid_set_apic_id(struct kvm_cpuid2 *c, unsigned id)
{
	for (unsigned i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];

		if (e->function == 1)
			e->ebx = (e->ebx & 0x00ffffffu) | ((uint32_t)id << 24);
		else if (e->function == 0xb || e->function == 0x1f)
			e->edx = id;
	}
}

int kvm_vcpu_create(struct kvm_vm *k, unsigned id, struct kvm_vcpu_fd *v, char *err, size_t errlen)
{
	size_t csize = sizeof(*k->cpuid) + k->cpuid->nent * sizeof(k->cpuid->entries[0]);
	struct kvm_cpuid2 *c;
	void *p;
	int rc;

	v->fd = -1;
	v->run = NULL;
	rc = xioctl(k->vm_fd, KVM_CREATE_VCPU, id);
	if (rc < 0) {
		snprintf(err, errlen, "KVM_CREATE_VCPU %u: %s", id, strerror(-rc));
		return rc;
	}
	v->fd = rc;
	p = mmap(NULL, k->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
	if (p == MAP_FAILED) {
		rc = -errno;
		snprintf(err, errlen, "mmap of vCPU %u: %s", id, strerror(errno));
		kvm_vcpu_destroy(k, v);
		return rc;
	}
	v->run = p;
	c = malloc(csize);
	if (!c) {
		kvm_vcpu_destroy(k, v);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	memcpy(c, k->cpuid, csize);
	kvm_cpuid_set_apic_id(c, id);
	rc = xioctl(v->fd, KVM_SET_CPUID2, (unsigned long)c);
	free(c);
	if (rc < 0) {
		snprintf(err, errlen, "KVM_SET_CPUID2 on vCPU %u: %s", id, strerror(-rc));
		kvm_vcpu_destroy(k, v);
		return rc;
	}
	return 0;
}

void kvm_vcpu_destroy(struct kvm_vm *k, struct kvm_vcpu_fd *v)
{
	if (v->run)
		munmap(v->run, k->run_size);
	if (v->fd >= 0)
		close(v->fd);
	v->run = NULL;
	v->fd = -1;
}

uint64_t kvm_vcpu_tsc_khz(const struct kvm_vcpu_fd *v)
{
	int rc = xioctl(v->fd, KVM_GET_TSC_KHZ, 0);

	return rc > 0 ? (uint64_t)rc : 0;
}

int kvm_irq_line(const struct kvm_vm *k, unsigned line, bool level)
{
	struct kvm_irq_level l = {.irq = line, .level = level ? 1 : 0};

	return xioctl(k->vm_fd, KVM_IRQ_LINE, (unsigned long)&l);
}

int kvm_coalesced_zone(const struct kvm_vm *k, uint64_t addr, uint64_t size)
{
	struct kvm_coalesced_mmio_zone z = {.addr = addr, .size = (uint32_t)size};
	int rc;

	if (!k->coalesced_page)
		return -ENOTSUP;
	if (size == 0 || size > UINT32_MAX)
		return -EINVAL;
	rc = xioctl(k->vm_fd, KVM_REGISTER_COALESCED_MMIO, (unsigned long)&z);
	return rc < 0 ? rc : 0;
}
