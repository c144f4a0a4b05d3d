/* coreio-vm: the listening sockets of the CoreIO service (TCP and UNIX) and accepting clients. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "event.h"
#include "record.h"
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

void port_log_refusal(struct vmmio_port *port, const char *fmt, ...)
{
	long long now = vmmio_now_ns() / 1000000;
	va_list ap;

	if (port->refuse_log_ms && now - port->refuse_log_ms < VMMIO_REFUSE_LOG_MS) {
		port->refuse_quiet++;
		return;
	}
	port->refuse_log_ms = now ? now : 1;
	fprintf(stderr, "coreio-vm: %s: ", port->display);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (port->refuse_quiet)
		fprintf(stderr, " (and %u more refusal(s) not logged in the last second)",
			port->refuse_quiet);
	fputc('\n', stderr);
	fflush(stderr);
	port->refuse_quiet = 0;
}

/*
 * Whether a UNIX peer with these credentials may connect to port: with
 * neither allow-uid= nor allow-gid=, the VM's own uid and root (which can
 * read the VM's memory anyway); else a uid of allow-uid= or a (primary,
 * effective) gid of allow-gid=.
 */
static bool peer_allowed(const struct vmmio_port *port, const struct ucred *cr)
{
	const struct range_config *rc = port->cfg;

	if (rc->nallow_uid == 0 && rc->nallow_gid == 0)
		return cr->uid == getuid() || cr->uid == 0;
	for (unsigned i = 0; i < rc->nallow_uid; i++)
		if (cr->uid == rc->allow_uid[i])
			return true;
	for (unsigned i = 0; i < rc->nallow_gid; i++)
		if (cr->gid == rc->allow_gid[i])
			return true;
	return false;
}

/*
 * Check a UNIX peer's credentials (VM lock held): fills key with "pid N".
 * Returns true when it may connect; otherwise logs (rate-limited) and
 * counts the refusal.
 */
static bool unix_peer_ok(struct vmmio_port *port, int cfd, char *key, size_t keylen)
{
	struct ucred cr;
	socklen_t cl = sizeof(cr);

	if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) < 0 || cl != sizeof(cr)) {
		port->v->lim.peers_refused++;
		port_log_refusal(port, "connection refused: cannot read the peer's credentials: %s",
				 strerror(errno));
		return false;
	}
	snprintf(key, keylen, "pid %ld", (long)cr.pid);
	if (peer_allowed(port, &cr))
		return true;
	port->v->lim.peers_refused++;
	port_log_refusal(port,
			 "connection from uid %u (gid %u, pid %ld) refused: not allowed by the "
			 "port's allow-uid=/allow-gid= (default: the VM's own uid %u and root)",
			 (unsigned)cr.uid, (unsigned)cr.gid, (long)cr.pid, (unsigned)getuid());
	return false;
}

/* A listening socket is ready: accept every waiting client (I/O thread). */
/* --record: connection c's interface and its connect event (VM lock held). */
static void record_accept(const struct vmmio_conn *c)
{
	const struct vmmio_port *port = c->port;
	const char *where = port->display;
	char rids[64];
	size_t off = 0;

	if (port->is_unix && strncmp(where, "unix:", 5) == 0)
		where += 5;
	rids[0] = '\0';
	for (unsigned r = 0; r < port->nranges && off < sizeof(rids) - 8; r++)
		off += (size_t)snprintf(rids + off, sizeof(rids) - off, "%s%u:%u", r ? "," : "", r,
					port->ranges[r]->g);
	record_conn(vm_record, c->id, port->is_unix ? "unix" : c->peer, where);
	record_event(vm_record, c->id, REC_EV_CONNECT, "connect peer=%s port=%s rids=%s",
		     port->is_unix ? "unix" : c->peer, where, rids);
}

static void port_accept(int fd, uint32_t events, void *opaque)
{
	struct vmmio_port *port = opaque;
	struct vmmio *v = port->v;

	(void)events;
	pthread_mutex_lock(&v->io->lock);
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		char peer[160], key[64];
		struct vmmio_conn *c;
		int cfd = accept4(fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (cfd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				fprintf(stderr, "coreio-vm: %s: accept: %s\n", port->display,
					strerror(errno));
			break;
		}
		if (port->nconns >= port->cfg->max_conns) {
			/* Accepted and closed at once: the backlog does not fill. */
			close(cfd);
			v->lim.over_cap++;
			port_log_refusal(port,
					 "connection refused: the port has its max-conns=%u "
					 "connections",
					 port->cfg->max_conns);
			continue;
		}
		if (port->is_unix && !unix_peer_ok(port, cfd, key, sizeof(key))) {
			/* Closed before any frame: the client sees the connection
			 * reset; nothing of the guest was touched. */
			close(cfd);
			continue;
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
			/* The address without the port: one client's connections. */
			{
				const char *colon = strrchr(peer, ':');
				size_t kl = colon ? (size_t)(colon - peer) : strlen(peer);

				if (kl >= sizeof(key))
					kl = sizeof(key) - 1;
				memcpy(key, peer, kl);
				key[kl] = '\0';
			}
		}
		c = conn_new(port, cfd, peer, key);
		if (c && vm_record)
			record_accept(c);
		/* tls=on: logged once the handshake is complete (vmmio_tls.c);
		 * a refused handshake is one rate-limited refusal line. */
		if (c && !port->tls)
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
	if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0 ||
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
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, SOMAXCONN) < 0) {
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

bool port_is_loopback(const struct vmmio_port *port)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (port->is_unix)
		return true;
	if (getsockname(port->listen_fd, (struct sockaddr *)&ss, &sl) < 0)
		return false;
	if (ss.ss_family == AF_INET)
		return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
	if (ss.ss_family == AF_INET6) {
		const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;

		if (IN6_IS_ADDR_LOOPBACK(a))
			return true;
		return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
	}
	return false;
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
