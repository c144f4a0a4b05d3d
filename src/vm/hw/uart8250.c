/* coreio-vm: an 8250/16450 UART on COM1: transmit to stdout, receive from stdin, IRQ 4. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "bootinfo.h"
#include "event.h"
#include "hw.h"

#define UART_RX_SIZE 4096
#define UART_TX_SIZE 256

/* Registers (offsets from COM1) and bits. */
#define REG_RBR_THR 0 /* DLL when LCR.DLAB */
#define REG_IER	    1 /* DLM when LCR.DLAB */
#define REG_IIR_FCR 2
#define REG_LCR	    3
#define REG_MCR	    4
#define REG_LSR	    5
#define REG_MSR	    6
#define REG_SCR	    7

#define IER_RDI	 0x01 /* received data available */
#define IER_THRI 0x02 /* transmitter holding register empty */
#define IIR_NONE 0x01
#define IIR_THRI 0x02
#define IIR_RDI	 0x04
#define LCR_DLAB 0x80
#define LSR_DR	 0x01
#define LSR_OE	 0x02
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define MSR_IDLE 0xb0 /* DCD, DSR, CTS asserted */

struct uart {
	const struct hw_ctx *hw;
	struct irq_source irq;
	uint8_t ier, lcr, mcr, scr, dll, dlm;
	bool overrun;
	bool thr_pending; /* THR-empty interrupt waiting to be seen in IIR */
	bool in_paused;	  /* input fd paused because the receive buffer is full */
	bool in_watched;
	uint8_t rx[UART_RX_SIZE];
	unsigned rx_head, rx_len;
	uint8_t tx[UART_TX_SIZE];
	unsigned tx_len;
};

static uint8_t iir(const struct uart *u)
{
	if ((u->ier & IER_RDI) && u->rx_len)
		return IIR_RDI;
	if ((u->ier & IER_THRI) && u->thr_pending)
		return IIR_THRI;
	return IIR_NONE;
}

static void update_irq(struct uart *u)
{
	irq_source_set(u->hw->irq, &u->irq, iir(u) != IIR_NONE);
}

void uart8250_flush(void *state)
{
	struct uart *u = state;
	unsigned off = 0;

	while (u->hw->out_fd >= 0 && off < u->tx_len) {
		ssize_t n = write(u->hw->out_fd, u->tx + off, u->tx_len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break; /* the console is gone: drop the output */
		off += (unsigned)n;
	}
	u->tx_len = 0;
}

static void transmit(struct uart *u, uint8_t c)
{
	u->tx[u->tx_len++] = c;
	if (c == '\n' || u->tx_len == UART_TX_SIZE)
		uart8250_flush(u);
	u->thr_pending = true; /* sent at once: THR is empty again */
}

unsigned uart8250_rx(void *state, const uint8_t *buf, unsigned n)
{
	struct uart *u = state;
	unsigned queued = 0;

	for (unsigned i = 0; i < n; i++) {
		if (u->rx_len == UART_RX_SIZE) {
			u->overrun = true;
			continue;
		}
		u->rx[(u->rx_head + u->rx_len) % UART_RX_SIZE] = buf[i];
		u->rx_len++;
		queued++;
	}
	update_irq(u);
	return queued;
}

static uint8_t read_reg(struct uart *u, unsigned reg)
{
	uint8_t v;

	switch (reg) {
	case REG_RBR_THR:
		if (u->lcr & LCR_DLAB)
			return u->dll;
		v = 0;
		if (u->rx_len) {
			v = u->rx[u->rx_head];
			u->rx_head = (u->rx_head + 1) % UART_RX_SIZE;
			u->rx_len--;
			if (u->in_paused && u->rx_len < UART_RX_SIZE / 2 &&
			    event_mod(u->hw->in_fd, EPOLLIN) == 0)
				u->in_paused = false;
		}
		update_irq(u);
		return v;
	case REG_IER:
		return (u->lcr & LCR_DLAB) ? u->dlm : u->ier;
	case REG_IIR_FCR:
		v = iir(u);
		if (v == IIR_THRI) {
			u->thr_pending = false; /* reading IIR acknowledges THR empty */
			update_irq(u);
		}
		return v;
	case REG_LCR:
		return u->lcr;
	case REG_MCR:
		return u->mcr;
	case REG_LSR:
		v = LSR_THRE | LSR_TEMT | (u->rx_len ? LSR_DR : 0) | (u->overrun ? LSR_OE : 0);
		u->overrun = false;
		return v;
	case REG_MSR:
		return MSR_IDLE;
	default:
		return u->scr;
	}
}

static void write_reg(struct uart *u, unsigned reg, uint8_t v)
{
	switch (reg) {
	case REG_RBR_THR:
		if (u->lcr & LCR_DLAB)
			u->dll = v;
		else
			transmit(u, v);
		break;
	case REG_IER:
		if (u->lcr & LCR_DLAB) {
			u->dlm = v;
			break;
		}
		/* Enabling the THR-empty interrupt reports the (always) empty THR. */
		if ((v & IER_THRI) && !(u->ier & IER_THRI))
			u->thr_pending = true;
		u->ier = v & 0x0f;
		break;
	case REG_IIR_FCR:
		break; /* no FIFO: FCR is ignored and IIR shows none */
	case REG_LCR:
		u->lcr = v;
		break;
	case REG_MCR:
		u->mcr = v & 0x1f;
		break;
	case REG_SCR:
		u->scr = v;
		break;
	default:
		break; /* LSR and MSR are read-only */
	}
	update_irq(u);
}

static int uart_io(struct io_request *req, void *opaque)
{
	struct uart *u = opaque;
	struct pio_request *p = &req->reqs.pio;
	unsigned base = p->address - COREIO_COM1_PORT;

	if (p->direction == REQUEST_READ) {
		uint32_t v = 0;

		for (unsigned i = 0; i < p->size; i++)
			v |= (uint32_t)read_reg(u, base + i) << (8 * i);
		p->value = v;
	} else {
		for (unsigned i = 0; i < p->size; i++)
			write_reg(u, base + i, (uint8_t)(p->value >> (8 * i)));
	}
	return 0;
}

/* Console input, on the I/O thread. */
static void uart_input(int fd, uint32_t events, void *opaque)
{
	struct uart *u = opaque;
	uint8_t buf[512];
	ssize_t n;

	(void)events;
	pthread_mutex_lock(&u->hw->io->lock);
	if (u->rx_len == UART_RX_SIZE) {
		if (event_mod(fd, 0) == 0)
			u->in_paused = true;
		pthread_mutex_unlock(&u->hw->io->lock);
		return;
	}
	n = read(fd, buf,
		 UART_RX_SIZE - u->rx_len < sizeof(buf) ? UART_RX_SIZE - u->rx_len : sizeof(buf));
	if (n > 0) {
		uart8250_rx(u, buf, (unsigned)n);
	} else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
		event_del(fd); /* end of input: the guest simply receives nothing more */
		u->in_watched = false;
	}
	pthread_mutex_unlock(&u->hw->io->lock);
}

static int uart_init(const struct hw_ctx *hw, void **state)
{
	struct uart *u = calloc(1, sizeof(*u));
	int rc;

	if (!u)
		return -ENOMEM;
	u->hw = hw;
	irq_source_init(&u->irq, COREIO_COM1_IRQ);
	rc = register_io_emulation_handler(hw->io, COREIO_COM1_PORT, COREIO_COM1_PORT + 8, uart_io,
					   u);
	if (rc < 0) {
		free(u);
		return rc;
	}
	/* A regular file or /dev/null cannot be watched: the guest gets no input then. */
	if (hw->in_fd >= 0 && event_add(hw->in_fd, EPOLLIN, uart_input, u) == 0)
		u->in_watched = true;
	*state = u;
	return 0;
}

static void uart_exit(void *state)
{
	struct uart *u = state;

	uart8250_flush(u);
	if (u->in_watched)
		event_del(u->hw->in_fd);
	free(u);
}

const struct hw_device hw_uart8250 = {
    .name = "uart8250",
    .init = uart_init,
    .exit = uart_exit,
};
