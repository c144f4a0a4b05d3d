/* libcoreio internal: parsing of connection targets ("host:port", "unix:/path", ...). */
#ifndef COREIO_LIB_TARGET_H
#define COREIO_LIB_TARGET_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/un.h>

/* Longest host name or address accepted in a target, without the brackets. */
#define COREIO__TARGET_HOST_MAX 255

enum coreio__target_kind {
	COREIO__TARGET_TCP = 0,
	COREIO__TARGET_UNIX = 1,
};

/* A parsed target. */
struct coreio__target {
	enum coreio__target_kind kind;
	bool tls;				/* TCP only: "tls:" or COREIO_TLS=on */
	char host[COREIO__TARGET_HOST_MAX + 1]; /* TCP: host name or address, no brackets */
	uint16_t port;				/* TCP: 1..65535 */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* UNIX: socket path */
};

/*
 * Parse a target string.
 *   s    "host:port", "[v6addr]:port", "[v6addr]", "host" (port 4800), a bare
 *        IPv6 address with two or more colons (port 4800), or "unix:/path";
 *        any TCP form after "tls:" (TLS 1.3 over that TCP connection).
 *   out  filled on success.
 * Returns 0, or -EINVAL for a NULL argument, an empty string or host, a
 * port that is empty, not decimal, 0 or above 65535, an unclosed '[' or
 * text after ']' other than ":port", a host longer than
 * COREIO__TARGET_HOST_MAX, or "unix:" with an empty path or one that does
 * not fit in sun_path, or "tls:" before a UNIX target.
 */
int coreio__target_parse(const char *s, struct coreio__target *out);

/*
 * Parse a target, reading the environment when it is NULL.
 *   target  the string given to coreio_connect(), or NULL for the value of
 *           COREIO_VM, else COREHDL_VM (empty values count as unset).
 *   out     filled on success.
 * COREIO_TLS=on (or 1, yes, true) makes a TCP target a TLS one, so that a
 * program that only passes "host:port" can use TLS.
 * Returns 0, or -EINVAL when target is NULL and neither variable is set,
 * or any error of coreio__target_parse().
 */
int coreio__target_get(const char *target, struct coreio__target *out);

#endif
