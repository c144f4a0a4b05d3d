/* coreio-vm: entry point: parse the command line, build the VM, run the event loop. */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "config.h"
#include "event.h"
#include "hw/hw.h"
#include "ioreq.h"
#include "irq.h"
#include "mem.h"
#include "mpqemu.h"
#include "qtest.h"
#include "record.h"
#include "vcpu.h"
#include "vfu.h"
#include "vmmio.h"

static struct vm_config cfg;
static struct mem mem;
static struct ioreq_ctx io;
static struct irq_chip irqchip;
static struct vmmio vmmio;
static struct qtest qtest;
static struct kvm_accel kvm;
static struct mpqemu mpq;
static struct vfu vfu;
static struct hw_set hw;
static struct hw_ctx hw_ctx;
static atomic_int last_signal;

static void on_signal(int fd, uint32_t events, void *opaque)
{
	struct signalfd_siginfo si;

	(void)events;
	(void)opaque;
	if (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		fprintf(stderr, "coreio-vm: %s, exiting\n", strsignal((int)si.ssi_signo));
		atomic_store(&last_signal, (int)si.ssi_signo);
	}
	event_stop();
}

/* --record: open the file and write the start note. Returns 0 or -1 after printing why. */
static int record_start(void)
{
	char err[600], ranges[CONFIG_MAX_RANGES * 48];
	size_t off = 0;

	if (record_open(&vm_record, cfg.record, err, sizeof(err)) < 0) {
		fprintf(stderr, "coreio-vm: %s\n", err);
		return -1;
	}
	ranges[0] = '\0';
	for (unsigned i = 0; i < cfg.nranges && off < sizeof(ranges) - 48; i++)
		off += (size_t)snprintf(ranges + off, sizeof(ranges) - off, "%s%u:0x%llx+0x%llx",
					i ? "," : "", i, (unsigned long long)cfg.ranges[i].start,
					(unsigned long long)cfg.ranges[i].size);
	record_event(vm_record, 0, REC_EV_NOTE, "start accel=%s ranges=%s", cfg.accel, ranges);
	return 0;
}

/* --record: write what is left and close the file; its summary on stderr. */
static void record_stop(void)
{
	struct record_stats st;
	int err;

	if (!vm_record)
		return;
	err = record_close(vm_record, &st);
	vm_record = NULL;
	if (err < 0)
		fprintf(stderr,
			"coreio-vm: --record %s: write failed: %s; %llu record(s) lost, the file "
			"is incomplete\n",
			cfg.record, strerror(-err), (unsigned long long)st.lost);
	else
		fprintf(stderr, "coreio-vm: --record %s: %llu records, %llu bytes\n", cfg.record,
			(unsigned long long)st.records, (unsigned long long)st.bytes);
}

static void request_exit(int status, void *opaque)
{
	kvm_accel_request_exit(opaque, status);
}

/* The qtest accelerator: a script plays the CPU on the I/O thread. */
static int run_qtest(void)
{
	int status = 0;

	/* The devices a script can program (the IOMMUs), no console. */
	hw_ctx.io = &io;
	hw_ctx.irq = &irqchip;
	hw_ctx.in_fd = -1;
	hw_ctx.out_fd = -1;
	hw_ctx.cfg = &cfg;
	hw_ctx.qtest = true;
	if (hw_init_all(&hw, &hw_ctx) < 0 || vmmio_init(&vmmio, &cfg, &io, &mem, &irqchip) < 0) {
		status = 1;
	} else {
		vmmio.iommu = hw_iommu_set(hw_state(&hw, &hw_iommu));
		if (qtest_init(&qtest, cfg.qtest_path, &io, &mem, &irqchip, &vmmio) < 0) {
			status = 1;
		} else if (event_run() < 0) {
			fprintf(stderr, "coreio-vm: event loop failed: %s\n", strerror(errno));
			status = 1;
		}
	}
	qtest_exit(&qtest);
	vmmio_exit(&vmmio);
	hw_exit_all(&hw);
	return status;
}

/*
 * The QEMU-hosted modes: QEMU runs the guest; each range is a PCI device,
 * the remote side of an x-pci-proxy-dev (mpqemu) or a vfio-user device on
 * its own UNIX socket (vfu), served on the I/O thread alone (as with qtest).
 */
static int run_qemu(bool vfu_mode)
{
	int status = 0;

	if (vmmio_init(&vmmio, &cfg, &io, &mem, &irqchip) < 0 ||
	    (vfu_mode ? vfu_init(&vfu, &cfg, &vmmio, &irqchip)
		      : mpqemu_init(&mpq, &cfg, &vmmio, &irqchip)) < 0) {
		status = 1;
	} else if (event_run() < 0) {
		fprintf(stderr, "coreio-vm: event loop failed: %s\n", strerror(errno));
		status = 1;
	}
	if (atomic_load(&last_signal))
		status = 128 + atomic_load(&last_signal);
	/* Closing the clients first completes requests in flight into the still-open sockets. */
	if (vfu_mode)
		vfu_stop(&vfu);
	else
		mpqemu_stop(&mpq);
	vmmio_exit(&vmmio);
	if (vfu_mode)
		vfu_exit(&vfu);
	else
		mpqemu_exit(&mpq);
	return status;
}

/*
 * The KVM accelerator: vCPU threads run the guest; this thread is the I/O
 * thread (clients, console input, signals) until something ends the VM.
 */
static int run_kvm(void)
{
	int status = VCPU_EXIT_CRASH;
	bool ok;

	hw_ctx.io = &io;
	hw_ctx.irq = &irqchip;
	hw_ctx.in_fd = 0;
	hw_ctx.out_fd = 1;
	hw_ctx.request_exit = request_exit;
	hw_ctx.exit_opaque = &kvm;
	hw_ctx.cfg = &cfg;
	ok = kvm_accel_init(&kvm, &cfg, &mem, &io, &irqchip) == 0 &&
	     hw_init_all(&hw, &hw_ctx) == 0 && vmmio_init(&vmmio, &cfg, &io, &mem, &irqchip) == 0;
	if (ok) {
		vmmio.iommu = hw_iommu_set(hw_state(&hw, &hw_iommu));
		kvm_accel_set_batch(&kvm, vmmio_batch, &vmmio);
	}
	if (ok && kvm_accel_start(&kvm) == 0) {
		if (event_run() < 0) {
			fprintf(stderr, "coreio-vm: event loop failed: %s\n", strerror(errno));
			kvm_accel_request_exit(&kvm, VCPU_EXIT_CRASH);
		}
		if (atomic_load(&last_signal))
			kvm_accel_request_exit(&kvm, 128 + atomic_load(&last_signal));
		status = kvm_accel_status(&kvm);
		if (status < 0)
			status = VCPU_EXIT_CRASH;
	}
	/* Stop the vCPUs; closing the clients completes any request a vCPU waits for. */
	kvm_accel_stop(&kvm);
	vmmio_exit(&vmmio);
	kvm_accel_exit(&kvm);
	hw_exit_all(&hw);
	return status;
}

int main(int argc, char **argv)
{
	char err[512];
	sigset_t set;
	int sfd, rc, status;

	if (config_parse(argc, argv, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "coreio-vm: %s\n", err);
		return 2;
	}
	if (cfg.help) {
		config_usage(stdout, "coreio-vm");
		return 0;
	}
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigprocmask(SIG_BLOCK, &set, NULL);
	sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	rc = event_init();
	if (sfd < 0 || rc < 0 || event_add(sfd, EPOLLIN, on_signal, NULL) < 0) {
		fprintf(stderr, "coreio-vm: cannot set up the event loop: %s\n", strerror(errno));
		return 1;
	}
	/* With mpqemu and vfio-user QEMU owns guest RAM (mpqemu.c and vfu_dma.c map what it
	 * shares). */
	rc = strcmp(cfg.accel, "mpqemu") == 0 || strcmp(cfg.accel, "vfio-user") == 0
		 ? 0
		 : mem_init(&mem, cfg.mem);
	if (rc < 0) {
		fprintf(stderr, "coreio-vm: cannot create %llu bytes of guest RAM: %s\n",
			(unsigned long long)cfg.mem, strerror(-rc));
		return 1;
	}
	ioreq_init(&io, &mem);
	irq_init(&irqchip, NULL, NULL);
	/* Before any port listens: an unwritable file ends the start-up. */
	if (cfg.record[0] && record_start() < 0) {
		ioreq_exit(&io);
		mem_exit(&mem);
		return 1;
	}
	if (strcmp(cfg.accel, "kvm") == 0)
		status = run_kvm();
	else if (strcmp(cfg.accel, "mpqemu") == 0)
		status = run_qemu(false);
	else if (strcmp(cfg.accel, "vfio-user") == 0)
		status = run_qemu(true);
	else
		status = run_qtest();
	event_exit();
	record_stop();
	close(sfd);
	ioreq_exit(&io);
	mem_exit(&mem);
	return status;
}
