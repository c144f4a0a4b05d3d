/* coreio-vm: the listening sockets of the CoreIO service (TCP and UNIX) and accepting clients. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "event.h"
#include "vmmio_internal.h"

/* "ADDR:PORT" or "[V6]:PORT" of a socket address. */
static void format_addr(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(a->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%u", host, ntohs(a->sin6_port));
	} else {
		snprintf(buf, len, "unix");
	}
}

/* A listening socket is ready: accept every waiting client (I/O thread). */
static void port_accept(int fd, uint32_t events, void *opaque)
{
	struct vmmio_port *port = opaque;
	struct vmmio *v = port->v;

	(void)events;
	pthread_mutex_lock(&v->io->lock);
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		char peer[160];
		struct vmmio_conn *c;
		int cfd = accept4(fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (cfd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				fprintf(stderr, "coreio-vm: %s: accept: %s\n", port->display,
					strerror(errno));
			break;
		}
		if (port->is_unix) {
			/* A UNIX stream's only buffer is its sender's: the default
			 * (about 208 KiB) makes a large DMA read sleep every 200 KiB. */
			int b = VMMIO_UNIX_SNDBUF;

			setsockopt(cfd, SOL_SOCKET, SO_SNDBUF, &b, sizeof(b));
			snprintf(peer, sizeof(peer), "%s", port->display);
		} else {
			int one = 1;

			setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			format_addr(&ss, peer, sizeof(peer));
		}
		c = conn_new(port, cfd, peer);
		if (c)
			conn_log(c, "connected on %s", port->display);
	}
	pthread_mutex_unlock(&v->io->lock);
}

static int open_tcp(struct vmmio_port *port, const char *listen_addr)
{
	const struct range_config *rc = port->cfg;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res = NULL;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[256], portstr[16];
	size_t n = strlen(listen_addr);
	int fd, one = 1, rc_gai;

	if (n >= 2 && listen_addr[0] == '[' && listen_addr[n - 1] == ']' && n < sizeof(host)) {
		memcpy(host, listen_addr + 1, n - 2);
		host[n - 2] = '\0';
	} else {
		snprintf(host, sizeof(host), "%s", listen_addr);
	}
	snprintf(portstr, sizeof(portstr), "%u", rc->kind == PORT_TCP ? rc->tcp_port : 0);
	rc_gai = getaddrinfo(host, portstr, &hints, &res);
	if (rc_gai != 0 || !res) {
		fprintf(stderr, "coreio-vm: --listen '%s': %s\n", listen_addr,
			gai_strerror(rc_gai));
		return -EINVAL;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		int err = -errno;

		freeaddrinfo(res);
		return err;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 16) < 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
		int err = -errno;

		fprintf(stderr, "coreio-vm: cannot listen on %s port %s: %s\n", listen_addr,
			portstr, strerror(errno));
		freeaddrinfo(res);
		close(fd);
		return err;
	}
	freeaddrinfo(res);
	format_addr(&ss, port->display, sizeof(port->display));
	port->listen_fd = fd;
	return 0;
}

static int open_unix(struct vmmio_port *port)
{
	const char *path = port->cfg->name;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	int fd;

	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			fprintf(stderr, "coreio-vm: unix:%s exists and is not a socket\n", path);
			return -EEXIST;
		}
		unlink(path);
	}
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0) {
		int err = -errno;

		fprintf(stderr, "coreio-vm: cannot listen on unix:%s: %s\n", path, strerror(errno));
		close(fd);
		return err;
	}
	port->is_unix = true;
	snprintf(port->display, sizeof(port->display), "unix:%s", path);
	port->listen_fd = fd;
	return 0;
}

int port_open(struct vmmio_port *port, const char *listen_addr)
{
	int err = port->cfg->kind == PORT_UNIX ? open_unix(port) : open_tcp(port, listen_addr);

	if (err < 0)
		return err;
	return event_add(port->listen_fd, EPOLLIN, port_accept, port);
}

void port_close(struct vmmio_port *port)
{
	if (port->listen_fd < 0)
		return;
	event_del(port->listen_fd);
	close(port->listen_fd);
	port->listen_fd = -1;
	if (port->is_unix)
		unlink(port->cfg->name);
}
