/* coreio-vm: entry point: parse the command line, build the VM, run the event loop. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "config.h"
#include "event.h"
#include "ioreq.h"
#include "irq.h"
#include "mem.h"
#include "qtest.h"
#include "vmmio.h"

static struct vm_config cfg;
static struct mem mem;
static struct ioreq_ctx io;
static struct irq_chip irqchip;
static struct vmmio vmmio;
static struct qtest qtest;

static void on_signal(int fd, uint32_t events, void *opaque)
{
	struct signalfd_siginfo si;

	(void)events;
	(void)opaque;
	if (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		fprintf(stderr, "coreio-vm: %s, exiting\n", strsignal((int)si.ssi_signo));
	event_stop();
}

int main(int argc, char **argv)
{
	char err[512];
	sigset_t set;
	int sfd, rc, status = 0;

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
	rc = mem_init(&mem, cfg.mem);
	if (rc < 0) {
		fprintf(stderr, "coreio-vm: cannot create %llu bytes of guest RAM: %s\n",
			(unsigned long long)cfg.mem, strerror(-rc));
		return 1;
	}
	ioreq_init(&io, &mem);
	irq_init(&irqchip, NULL, NULL);
	if (vmmio_init(&vmmio, &cfg, &io, &mem, &irqchip) < 0 ||
	    qtest_init(&qtest, cfg.qtest_path, &io, &mem, &irqchip, &vmmio) < 0) {
		status = 1;
	} else if (event_run() < 0) {
		fprintf(stderr, "coreio-vm: event loop failed: %s\n", strerror(errno));
		status = 1;
	}
	qtest_exit(&qtest);
	vmmio_exit(&vmmio);
	event_exit();
	close(sfd);
	mem_exit(&mem);
	return status;
}
