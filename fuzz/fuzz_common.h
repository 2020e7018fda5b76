/*
 * Helpers for the libFuzzer targets in fuzz/: a CHECK that aborts (so
 * libFuzzer saves the input), splitting an input into pieces, and
 * reference implementations written independently of civetweb_mqtt.c
 * (UTF-8 by Unicode's table 3-7, topic names, filters, matching by
 * levels) that the targets compare the library against.
 *
 * Included after ../civetweb_mqtt.c by each target.
 */
#ifndef CWM_FUZZ_COMMON_H
#define CWM_FUZZ_COMMON_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Each target uses some of the helpers. */
#define FZ_FN static __attribute__((unused))

#define CHECK(cond)                                                            \
	do {                                                                       \
		if (!(cond)) {                                                         \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,  \
			        #cond);                                                    \
			abort();                                                           \
		}                                                                      \
	} while (0)

/* CHECK with a message, for reporting the values involved. */
#define CHECKF(cond, ...)                                                      \
	do {                                                                       \
		if (!(cond)) {                                                         \
			fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__,   \
			        #cond);                                                    \
			fprintf(stderr, __VA_ARGS__);                                      \
			fputc('\n', stderr);                                               \
			abort();                                                           \
		}                                                                      \
	} while (0)

/* A violation of required behaviour that is a known, reported library
 * bug: counted and skipped, so that "make fuzz" finds new problems;
 * FUZZ_STRICT=1 in the environment makes it abort like CHECK. */
FZ_FN int fz_strict(void)
{
	static int strict = -1;
	if (strict < 0) {
		const char *e = getenv("FUZZ_STRICT");
		strict = e != NULL && e[0] == '1';
	}
	return strict;
}

#define KNOWN_BUG(cond, id, ...)                                               \
	do {                                                                       \
		if (!(cond) && fz_strict()) {                                          \
			fprintf(stderr, "%s:%d: known bug %s: ", __FILE__, __LINE__, id);  \
			fprintf(stderr, __VA_ARGS__);                                      \
			fputc('\n', stderr);                                               \
			abort();                                                           \
		}                                                                      \
	} while (0)

/* ---- a CivetWeb-sized stack ---------------------------------------------- */

/* The library's bridge code runs on CivetWeb's worker threads, whose stack
 * Debian's libcivetweb makes 102400 bytes (USE_STACK_SIZE), of which
 * CivetWeb itself has used about 23 kB when it calls a request handler:
 * both measured with pthread_getattr_np() inside a handler (102400 total,
 * 79196 left). Each input runs on a thread with what is left, rounded
 * down to pages (76 KiB), so that recursion too deep for a worker crashes
 * here too (cJSON on 999 nested arrays does; the bridge refuses beyond
 * BRIDGE_MAX_JSON_DEPTH before cJSON sees the text). FZ_STACK overrides
 * it. */
#ifndef FZ_STACK
#define FZ_STACK 77824
#endif

struct fz_call {
	int (*fn)(const uint8_t *, size_t);
	const uint8_t *data;
	size_t size;
	int rc;
};

static void *fz_thread(void *arg)
{
	struct fz_call *c = arg;
	c->rc = c->fn(c->data, c->size);
	return NULL;
}

/* Defines LLVMFuzzerTestOneInput as fn(data, size) on such a thread. */
#define FZ_ENTRY(fn)                                                           \
	int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)               \
	{                                                                          \
		struct fz_call c = {fn, data, size, 0};                                \
		pthread_attr_t a;                                                      \
		pthread_t t;                                                           \
		CHECK(pthread_attr_init(&a) == 0);                                     \
		CHECK(pthread_attr_setstacksize(&a, FZ_STACK) == 0);                   \
		CHECK(pthread_create(&t, &a, fz_thread, &c) == 0);                     \
		pthread_join(t, NULL);                                                 \
		pthread_attr_destroy(&a);                                              \
		return c.rc;                                                           \
	}

/* ---- pieces ------------------------------------------------------------ */

#define FZ_MAX_PIECES 24

/* The input cut at every 0xff byte (never part of UTF-8, JSON or a
 * civetweb.conf line anyone writes) into NUL-terminated copies; len[i]
 * keeps embedded NULs. Returns the number of pieces. */
struct fz_pieces {
	int n;
	char *s[FZ_MAX_PIECES];
	size_t len[FZ_MAX_PIECES];
};

FZ_FN int fz_split(const uint8_t *data, size_t size, struct fz_pieces *p)
{
	size_t start = 0;
	p->n = 0;
	for (size_t i = 0; i <= size && p->n < FZ_MAX_PIECES; i++) {
		if (i == size || data[i] == 0xff) {
			size_t n = i - start;
			char *s = malloc(n + 1);
			if (s == NULL)
				abort();
			memcpy(s, data + start, n);
			s[n] = '\0';
			p->s[p->n] = s;
			p->len[p->n++] = n;
			start = i + 1;
		}
	}
	return p->n;
}

FZ_FN void fz_pieces_free(struct fz_pieces *p)
{
	for (int i = 0; i < p->n; i++)
		free(p->s[i]);
	p->n = 0;
}

/* ---- reference UTF-8 (Unicode 15, table 3-7) --------------------------- */

enum { FZ_UTF8_TEXT = 0, FZ_UTF8_MQTT = 1 };

/* 1 when s[0..n) is well-formed UTF-8 (no overlongs, surrogates or code
 * points above U+10FFFF) without U+0000; with FZ_UTF8_MQTT also without
 * the control characters U+0001-U+001F, U+007F-U+009F. */
FZ_FN int fz_utf8(const char *s, size_t n, int mode)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;
	while (i < n) {
		unsigned b0 = p[i];
		unsigned lo = 0x80, hi = 0xbf;
		int more;
		uint32_t cp;
		if (b0 <= 0x7f) {
			more = 0;
			cp = b0;
		} else if (b0 >= 0xc2 && b0 <= 0xdf) {
			more = 1;
			cp = b0 & 0x1f;
		} else if (b0 == 0xe0) {
			more = 2, lo = 0xa0;
			cp = b0 & 0x0f;
		} else if ((b0 >= 0xe1 && b0 <= 0xec) || b0 == 0xee || b0 == 0xef) {
			more = 2;
			cp = b0 & 0x0f;
		} else if (b0 == 0xed) {
			more = 2, hi = 0x9f;
			cp = b0 & 0x0f;
		} else if (b0 == 0xf0) {
			more = 3, lo = 0x90;
			cp = b0 & 0x07;
		} else if (b0 >= 0xf1 && b0 <= 0xf3) {
			more = 3;
			cp = b0 & 0x07;
		} else if (b0 == 0xf4) {
			more = 3, hi = 0x8f;
			cp = b0 & 0x07;
		} else {
			return 0;
		}
		if (n - i - 1 < (size_t)more)
			return 0;
		for (int k = 1; k <= more; k++) {
			unsigned b = p[i + (size_t)k];
			unsigned l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xbf;
			if (b < l || b > h)
				return 0;
			cp = cp << 6 | (b & 0x3f);
		}
		i += 1 + (size_t)more;
		if (cp == 0)
			return 0;
		if (mode == FZ_UTF8_MQTT &&
		    (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f)))
			return 0;
	}
	return 1;
}

/* ---- reference topics and filters (MQTT 5, 4.7 and 4.8.2) ------------- */

/* A topic name: 1-65535 bytes of MQTT UTF-8, no '+' or '#'. */
FZ_FN int fz_topic_ok(const char *t, size_t n)
{
	if (n < 1 || n > 65535 || !fz_utf8(t, n, FZ_UTF8_MQTT))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (t[i] == '+' || t[i] == '#')
			return 0;
	return 1;
}

/* Bytes of "$share/<group>/" at the start of f (a valid share prefix
 * followed by at least one byte), 0 when f does not start with "$share/",
 * -1 when it does but the prefix is malformed. */
FZ_FN long fz_share(const char *f, size_t n)
{
	if (n < 7 || memcmp(f, "$share/", 7) != 0)
		return 0;
	size_t g = 7;
	while (g < n && f[g] != '/') {
		if (f[g] == '+' || f[g] == '#')
			return -1;
		g++;
	}
	if (g == 7 || g >= n || g + 1 >= n)
		return -1;
	return (long)(g + 1);
}

/* Levels of s[0..n) as (start, length) pairs; returns the count. */
#define FZ_MAX_LEVELS 512
struct fz_levels {
	size_t n;
	const char *p[FZ_MAX_LEVELS];
	size_t l[FZ_MAX_LEVELS];
};

FZ_FN int fz_levels(const char *s, size_t n, struct fz_levels *lv)
{
	size_t start = 0;
	lv->n = 0;
	for (size_t i = 0; i <= n; i++)
		if (i == n || s[i] == '/') {
			if (lv->n == FZ_MAX_LEVELS)
				return -1;
			lv->p[lv->n] = s + start;
			lv->l[lv->n++] = i - start;
			start = i + 1;
		}
	return 0;
}

FZ_FN int fz_is(const char *p, size_t l, const char *w)
{
	return l == strlen(w) && memcmp(p, w, l) == 0;
}

/* A filter without its share prefix: '+' and '#' only as whole levels,
 * '#' only last. -1: too many levels to judge here. */
FZ_FN int fz_plain_filter_ok(const char *f, size_t n)
{
	struct fz_levels lv;
	if (fz_levels(f, n, &lv) != 0)
		return -1;
	for (size_t i = 0; i < lv.n; i++)
		for (size_t k = 0; k < lv.l[i]; k++) {
			char ch = lv.p[i][k];
			if (ch == '+' && lv.l[i] != 1)
				return 0;
			if (ch == '#' && (lv.l[i] != 1 || i + 1 != lv.n))
				return 0;
		}
	return 1;
}

/* A topic filter as MQTT defines it (braces are ordinary characters).
 * -1 when it cannot judge (more than FZ_MAX_LEVELS levels). */
FZ_FN int fz_filter_ok(const char *f, size_t n)
{
	if (n < 1 || n > 65535 || !fz_utf8(f, n, FZ_UTF8_MQTT))
		return 0;
	long sh = fz_share(f, n);
	if (sh < 0)
		return 0;
	return fz_plain_filter_ok(f + sh, n - (size_t)sh);
}

/* Matches valid plain filter f against valid topic t, level by level. */
FZ_FN int fz_match(const char *f, size_t fn, const char *t, size_t tn)
{
	struct fz_levels fl, tl;
	if (fz_levels(f, fn, &fl) != 0 || fz_levels(t, tn, &tl) != 0)
		return -1;
	if (tn > 0 && t[0] == '$' &&
	    (fz_is(fl.p[0], fl.l[0], "+") || fz_is(fl.p[0], fl.l[0], "#")))
		return 0;
	for (size_t i = 0; i < fl.n; i++) {
		if (fz_is(fl.p[i], fl.l[i], "#"))
			return 1;
		if (i >= tl.n)
			return 0;
		if (fz_is(fl.p[i], fl.l[i], "+"))
			continue;
		if (fl.l[i] != tl.l[i] || memcmp(fl.p[i], tl.p[i], fl.l[i]) != 0)
			return 0;
	}
	return fl.n == tl.n;
}

/* 1 when the library knows named levels ("{room}"), which it reports by
 * having a text for MG_MQTT_ERR_PARAM (-26). */
FZ_FN int fz_have_params(void)
{
	static int have = -1;
	if (have < 0)
		have = strcmp(mg_mqtt_strerror(-26), "unknown error") != 0;
	return have;
}

/* With named levels: f with every "{name}" level written '+' into out
 * (size n + 1). Returns 1, or 0 when a brace is misplaced, a name is empty
 * or not [A-Za-z0-9_], or a name is used twice (MG_MQTT_ERR_PARAM). Only
 * the part after a well-formed share prefix is rewritten. */
FZ_FN int fz_params_plain(const char *f, size_t n, char *out)
{
	long sh = fz_share(f, n);
	size_t start = sh > 0 ? (size_t)sh : 0, o = start;
	struct fz_levels lv;
	memcpy(out, f, start);
	if (fz_levels(f + start, n - start, &lv) != 0)
		return 0;
	for (size_t i = 0; i < lv.n; i++) {
		const char *p = lv.p[i];
		size_t l = lv.l[i];
		int braces = memchr(p, '{', l) != NULL || memchr(p, '}', l) != NULL;
		if (i > 0)
			out[o++] = '/';
		if (!braces) {
			memcpy(out + o, p, l);
			o += l;
			continue;
		}
		if (l < 3 || p[0] != '{' || p[l - 1] != '}')
			return 0;
		for (size_t k = 1; k + 1 < l; k++) {
			char ch = p[k];
			if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			      (ch >= '0' && ch <= '9') || ch == '_'))
				return 0;
		}
		for (size_t j = 0; j < i; j++)
			if (lv.l[j] == l && memcmp(lv.p[j], p, l) == 0)
				return 0;
		out[o++] = '+';
	}
	out[o] = '\0';
	return 1;
}

/* What mg_mqtt_filter_valid() should say about the C string f. */
FZ_FN int ref_filter_valid(const char *f)
{
	size_t n = strlen(f);
	if (fz_have_params() && (strchr(f, '{') != NULL || strchr(f, '}') != NULL)) {
		char *plain = malloc(n + 1);
		int ok = fz_params_plain(f, n, plain) &&
		         fz_filter_ok(plain, strlen(plain)) == 1;
		free(plain);
		return ok;
	}
	return fz_filter_ok(f, n) == 1;
}

/* What mg_mqtt_topic_matches(f, t) should say. */
FZ_FN int ref_topic_matches(const char *f, const char *t)
{
	size_t n = strlen(f), tn = strlen(t);
	char *plain = malloc(n + 1);
	int m = 0;
	memcpy(plain, f, n + 1);
	if (fz_have_params() && (strchr(f, '{') != NULL || strchr(f, '}') != NULL) &&
	    !fz_params_plain(f, n, plain))
		goto out;
	n = strlen(plain);
	if (fz_filter_ok(plain, n) != 1 || !fz_topic_ok(t, tn))
		goto out;
	long sh = fz_share(plain, n);
	m = fz_match(plain + sh, n - (size_t)sh, t, tn) == 1;
out:
	free(plain);
	return m;
}

/* ---- topics a filter matches ------------------------------------------- */

/* Topics made from filter f (without share prefix) by replacing '+' and
 * '#' with the levels in subst, picked by variant. */
FZ_FN int fz_derive_topics(const char *f, const char *const *subst, int nsubst,
                         char **out, int max)
{
	int n = 0;
	size_t fn = strlen(f), longest = 0;
	for (int k = 0; k < nsubst; k++)
		if (strlen(subst[k]) > longest)
			longest = strlen(subst[k]);
	for (int v = 0; v < 8 && n < max; v++) {
		/* Each level becomes at most one substitution. */
		char *t = malloc((fn + 1) * (longest + 2) + 1), *o = t;
		int k = v;
		const char *p = f;
		CHECK(t != NULL);
		for (;;) {
			size_t l = strcspn(p, "/");
			if (l == 1 && (p[0] == '+' || p[0] == '#')) {
				const char *s = subst[(size_t)k++ % (size_t)nsubst];
				if (p[0] == '#' && v % 3 == 0 && o > t) {
					o--; /* '#' as its parent level: "a/#" -> "a" */
				} else {
					memcpy(o, s, strlen(s));
					o += strlen(s);
				}
			} else {
				memcpy(o, p, l);
				o += l;
			}
			if (p[l] == '\0')
				break;
			*o++ = '/';
			p += l + 1;
		}
		*o = '\0';
		if (fz_topic_ok(t, strlen(t)))
			out[n++] = t;
		else
			free(t);
	}
	return n;
}

#endif
