/* libcoreio: parsing of connection targets and the COREIO_VM / COREHDL_VM fallback. */
#include "target.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "wire.h"

/* Parse a decimal TCP port of 1..65535 from exactly the n bytes at p. */
static int parse_port(const char *p, size_t n, uint16_t *port)
{
	unsigned long v = 0;

	if (n == 0 || n > 5)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -EINVAL;
		v = v * 10 + (unsigned long)(p[i] - '0');
	}
	if (v == 0 || v > 65535)
		return -EINVAL;
	*port = (uint16_t)v;
	return 0;
}

/* Copy the n bytes at p as the host name; empty or too long is -EINVAL. */
static int set_host(struct coreio__target *out, const char *p, size_t n)
{
	if (n == 0 || n > COREIO__TARGET_HOST_MAX || memchr(p, '\0', n))
		return -EINVAL;
	memcpy(out->host, p, n);
	out->host[n] = '\0';
	return 0;
}

int coreio__target_parse(const char *s, struct coreio__target *out)
{
	const char *colon;
	bool tls = false;
	size_t n;
	int rc;

	if (!s || !out)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	if (strncmp(s, "tls:", 4) == 0) {
		/* TLS over TCP: the rest is a TCP target (UNIX sockets need no TLS). */
		s += 4;
		if (strncmp(s, "unix:", 5) == 0 || strncmp(s, "tls:", 4) == 0)
			return -EINVAL;
		tls = true;
	}
	if (*s == '\0')
		return -EINVAL;
	if (tls) {
		rc = coreio__target_parse(s, out);
		out->tls = rc == 0;
		return rc;
	}

	if (strncmp(s, "unix:", 5) == 0) {
		const char *path = s + 5;

		n = strlen(path);
		if (n == 0 || n >= sizeof(out->path))
			return -EINVAL;
		out->kind = COREIO__TARGET_UNIX;
		memcpy(out->path, path, n + 1);
		return 0;
	}

	out->kind = COREIO__TARGET_TCP;
	out->port = COREIO_WIRE_DEFAULT_PORT;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (!close)
			return -EINVAL;
		if (set_host(out, s + 1, (size_t)(close - s - 1)) < 0)
			return -EINVAL;
		if (close[1] == '\0')
			return 0;
		if (close[1] != ':')
			return -EINVAL;
		return parse_port(close + 2, strlen(close + 2), &out->port);
	}

	colon = strchr(s, ':');
	if (!colon)
		return set_host(out, s, strlen(s));
	if (strchr(colon + 1, ':')) {
		/* Two or more colons without brackets: a bare IPv6 address. */
		return set_host(out, s, strlen(s));
	}
	if (set_host(out, s, (size_t)(colon - s)) < 0)
		return -EINVAL;
	return parse_port(colon + 1, strlen(colon + 1), &out->port);
}

/* A yes/no environment value: "1", "on", "yes" or "true" (any case) is yes. */
static bool env_on(const char *v)
{
	return v && (strcmp(v, "1") == 0 || strcasecmp(v, "on") == 0 || strcasecmp(v, "yes") == 0 ||
		     strcasecmp(v, "true") == 0);
}

int coreio__target_get(const char *target, struct coreio__target *out)
{
	int rc;

	if (!out)
		return -EINVAL;
	if (!target) {
		target = getenv("COREIO_VM");
		if (!target || !*target)
			target = getenv("COREHDL_VM");
		if (!target || !*target) {
			memset(out, 0, sizeof(*out));
			return -EINVAL;
		}
	}
	rc = coreio__target_parse(target, out);
	if (rc == 0 && out->kind == COREIO__TARGET_TCP && env_on(getenv("COREIO_TLS")))
		out->tls = true;
	return rc;
}
