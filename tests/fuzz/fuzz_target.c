/* libFuzzer harness of libcoreio's target parser (coreio__target_get / _parse): what it accepts
 * is well-formed, agrees with the environment path, and survives printing and parsing again. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "target.h"
#include "wire.h"

#define ENV_NAME "COREIO_VM="
#define ENV_MAX	 4096u

/* A parsed target is well-formed, and matches the string it came from. */
static void check_target(const char *s, const struct coreio__target *t)
{
	size_t hn = strnlen(t->host, sizeof(t->host));
	size_t pn = strnlen(t->path, sizeof(t->path));

	FUZZ_CHECK(hn < sizeof(t->host) && pn < sizeof(t->path));
	if (t->tls) {
		/* "tls:" and a TCP target. */
		FUZZ_CHECK(t->kind == COREIO__TARGET_TCP && strncmp(s, "tls:", 4) == 0);
		s += 4;
		FUZZ_CHECK(strncmp(s, "tls:", 4) != 0);
	}
	if (t->kind == COREIO__TARGET_UNIX) {
		FUZZ_CHECK(strncmp(s, "unix:", 5) == 0);
		FUZZ_CHECK(pn >= 1 && strcmp(t->path, s + 5) == 0);
		FUZZ_CHECK(hn == 0 && t->port == 0);
		return;
	}
	FUZZ_CHECK(t->kind == COREIO__TARGET_TCP);
	FUZZ_CHECK(strncmp(s, "unix:", 5) != 0);
	FUZZ_CHECK(hn >= 1 && hn <= COREIO__TARGET_HOST_MAX && pn == 0);
	FUZZ_CHECK(t->port >= 1);
	if (s[0] == '[') {
		/* The host is what the brackets hold. */
		FUZZ_CHECK(strncmp(s + 1, t->host, hn) == 0 && s[1 + hn] == ']');
	} else if (!strchr(s, ':')) {
		FUZZ_CHECK(strcmp(s, t->host) == 0 && t->port == COREIO_WIRE_DEFAULT_PORT);
	} else {
		FUZZ_CHECK(strncmp(s, t->host, hn) == 0);
	}
}

/*
 * Print t back as a target string when its form allows it; false when it does not. A host
 * named "unix" or "tls" takes the bracketed form: "unix:PORT" is a UNIX socket path and
 * "tls:PORT" TLS to the host PORT.
 */
static bool unparse(const struct coreio__target *t, char *buf, size_t len)
{
	const char *tls = t->tls ? "tls:" : "";
	int n;

	if (t->kind == COREIO__TARGET_UNIX)
		n = snprintf(buf, len, "unix:%s", t->path);
	else if (!strchr(t->host, ':') && t->host[0] != '[' && strcmp(t->host, "unix") != 0 &&
		 strcmp(t->host, "tls") != 0)
		n = snprintf(buf, len, "%s%s:%u", tls, t->host, (unsigned)t->port);
	else if (!strchr(t->host, ']'))
		n = snprintf(buf, len, "%s[%s]:%u", tls, t->host, (unsigned)t->port);
	else
		return false; /* a bare IPv6-like host with ']' in it has no bracketed form */
	FUZZ_CHECK(n > 0 && (size_t)n < len);
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char env[sizeof(ENV_NAME) + ENV_MAX];
	static bool env_ready;
	struct coreio__target a, b, c;
	char again[sizeof(a.host) + sizeof(a.path) + 16];
	char *s = malloc(size + 1);
	int ra, rb, rc;

	FUZZ_CHECK(s != NULL);
	if (!env_ready) {
		unsetenv("COREHDL_VM");
		unsetenv("COREIO_TLS");
		env_ready = true;
	}
	if (size)
		memcpy(s, data, size);
	s[size] = '\0';

	FUZZ_CHECK(coreio__target_parse(NULL, &a) == -EINVAL);
	FUZZ_CHECK(coreio__target_get(s, NULL) == -EINVAL);
	ra = coreio__target_parse(s, &a);
	rb = coreio__target_get(s, &b);
	FUZZ_CHECK(ra == 0 || ra == -EINVAL);
	FUZZ_CHECK(rb == ra);
	if (ra == 0) {
		FUZZ_CHECK(memcmp(&a, &b, sizeof(a)) == 0);
		check_target(s, &a);
		if (unparse(&a, again, sizeof(again))) {
			FUZZ_CHECK(coreio__target_parse(again, &c) == 0);
			FUZZ_CHECK(memcmp(&a, &c, sizeof(a)) == 0);
		}
	}

	/* The same string from the environment (putenv keeps our buffer: nothing piles up). */
	if (strlen(s) < ENV_MAX) {
		snprintf(env, sizeof(env), ENV_NAME "%s", s);
		FUZZ_CHECK(putenv(env) == 0);
		rc = coreio__target_get(NULL, &c);
		if (s[0] == '\0') {
			FUZZ_CHECK(rc ==
				   -EINVAL); /* empty counts as unset, and COREHDL_VM is unset */
		} else {
			FUZZ_CHECK(rc == ra);
			if (rc == 0)
				FUZZ_CHECK(memcmp(&a, &c, sizeof(a)) == 0);
		}
	}
	free(s);
	return 0;
}
