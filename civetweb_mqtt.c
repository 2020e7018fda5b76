/*
 * civetweb_mqtt.c -- an MQTT client for CivetWeb servers. API: civetweb_mqtt.h.
 *
 * Design
 * ------
 * Threads.  paho.mqtt.c runs a send and a receive thread shared by every
 * paho client in the process; its callbacks (message arrived, operation
 * done, connection lost) run there and only take c->lock long enough to
 * queue work. Each started client adds two threads of its own:
 *   mqtt-io        the only thread that calls paho once the client runs:
 *                  connects and reconnects with back-off, renews
 *                  subscriptions and sends the birth message on each
 *                  connect, hands queued commands to paho inside the
 *                  in-flight window, flushes and disconnects at stop. Request
 *                  handlers therefore never wait on paho's global lock,
 *                  which paho holds across DNS look-ups and TLS set-up, and
 *                  paho never sees more than MAX_INFLIGHT QoS>0 messages at a
 *                  time (its own flow control stalls for a second per window).
 *   mqtt-dispatch  runs every user handler, one at a time, in arrival order.
 *
 * Queues (all guarded by c->lock).
 *   retry, outq    commands for mqtt-io, FIFO; retry holds QoS 1/2 messages
 *                  paho gave back when a connection dropped, sent first.
 *                  publish() refuses once MAX_INFLIGHT + MAX_BUFFERED
 *                  messages are unfinished.
 *   evq            events for mqtt-dispatch, FIFO. Messages count against
 *                  QUEUE_SIZE: when it is full, paho's thread waits up to
 *                  CWM_QUEUE_WAIT_MS for room, then drops the arriving
 *                  message and counts it; other events are never dropped.
 *
 * Locks.  One mutex per client, c->lock, guards every field marked [L] in
 * struct mg_mqtt. Nothing calls paho or a user handler while holding it
 * (paho holds its own lock when it calls us). cwm_registry_lock guards the
 * list of started clients; when both are held (the bridge's /metrics
 * route), the registry lock is taken first, never the other way round.
 *
 * Ownership.  A command (struct cwm_out) belongs to the queue it is in,
 * then to c->inpaho until paho reports it done, then it is freed by the
 * thread that saw it done. A received paho message belongs to its event
 * until mqtt-dispatch has run its handlers and frees it.
 *
 * Shutdown (mg_mqtt_stop).  Unregister; set c->stopping; mqtt-io flushes
 * (at most CONNECTION_TIMEOUT seconds, only while connected), disconnects,
 * destroys the paho handle (no paho callback runs after that), fails what
 * is left with MG_MQTT_ERR_STOPPED, queues the final disconnect event and
 * exits; mqtt-dispatch drains evq and exits; both are joined; all is freed.
 *
 * Contents
 *   1. Utilities   2. Errors      3. Topics        4. Configuration
 *   5. conf files  6. Handler tree  7. Client state  8. Logging
 *   9. Commands (mqtt-io)  10. paho callbacks  11. Dispatch
 *   12. Bridge (HTTP, WebSocket, SSE)  13. Requests  14. Life cycle
 *   15. Status
 */
#define _GNU_SOURCE
#include "civetweb_mqtt.h"

#if MG_MQTT_VERSION_MAJOR != 0 || MG_MQTT_VERSION_MINOR != 1 || \
    MG_MQTT_VERSION_PATCH != 0
#error "civetweb_mqtt.c and civetweb_mqtt.h are from different versions"
#endif

#include <MQTTAsync.h>
#include <civetweb.h>
#include <cjson/cJSON.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ========================================================================
 * 1. Utilities
 * ====================================================================== */

#define CWM_MAX_PACKET 268435455u /* MQTT's largest remaining length */
#define CWM_QOS0_WINDOW 1024      /* QoS 0 messages handed to paho at once */
#define CWM_BATCH 256             /* commands mqtt-io takes per lock */
#define CWM_RENEW_CHUNK 128       /* filters per renewing SUBSCRIBE */
#define CWM_MAX_LOSSES 3 /* a publish in flight at this many connection
                            losses in a row is given up: the broker
                            refuses it (too large for it, say) */
#define CWM_QUEUE_WAIT_MS 200     /* a full dispatch queue: how long paho's
                                     thread waits for room before dropping */
#define CWM_COALESCE_US 100        /* see cwm_wait_for_work */

/* How a worker thread (mqtt-io, mqtt-dispatch) waits; producers signal
 * only an idle one. */
enum { CWM_RUNNING = 0, CWM_COALESCING = 1, CWM_IDLE_WAIT = 2 };

static char *cwm_strndup(const char *s, size_t n)
{
	char *p = malloc(n + 1);
	if (p != NULL) {
		memcpy(p, s, n);
		p[n] = '\0';
	}
	return p;
}

static char *cwm_strdup(const char *s)
{
	return s == NULL ? NULL : cwm_strndup(s, strlen(s));
}

static int64_t cwm_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Absolute CLOCK_REALTIME deadline for pthread_cond_timedwait. */
static struct timespec cwm_deadline_us(int64_t us)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (time_t)(us / 1000000);
	ts.tv_nsec += (long)(us % 1000000) * 1000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

/* The same, ms_from_now milliseconds from now. */
static struct timespec cwm_deadline(int64_t ms_from_now)
{
	return cwm_deadline_us(ms_from_now * 1000);
}

static void cwm_fmt(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void cwm_fmt(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	if (buf == NULL || len == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

/* Copies at most max bytes of v into out (which holds max + 4), printable
 * ASCII only, for quoting a bad value in an error message without dumping
 * binary or huge input. */
static const char *cwm_quote_n(const char *v, char *out, size_t max)
{
	size_t i, n = 0;
	for (i = 0; v[i] != '\0' && n < max; i++)
		out[n++] = (v[i] >= 0x20 && v[i] < 0x7f) ? v[i] : '?';
	if (v[i] != '\0') {
		memcpy(out + n, "...", 3);
		n += 3;
	}
	out[n] = '\0';
	return out;
}

/* A value: 60 bytes at most, into a char[72]. */
static const char *cwm_quote(const char *v, char out[72])
{
	return cwm_quote_n(v, out, 60);
}

/* A file name: 300 bytes at most, into a char[320]. */
static const char *cwm_quote_path(const char *v, char out[320])
{
	return cwm_quote_n(v, out, 300);
}

static uint32_t cwm_hash(const char *s, size_t n)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 16777619u;
	}
	return h;
}

/* A string-keyed hash map with chaining; keys are copied. */
struct cwm_map_ent {
	struct cwm_map_ent *next;
	uint32_t hash;
	size_t klen;
	void *val;
	char key[];
};

struct cwm_map {
	struct cwm_map_ent **b;
	size_t nb; /* buckets, a power of two (0 before first insert) */
	size_t n;  /* entries */
};

static struct cwm_map_ent **cwm_map_slot(const struct cwm_map *m,
                                         const char *k, size_t klen,
                                         uint32_t h)
{
	struct cwm_map_ent **pp = &m->b[h & (m->nb - 1)];
	for (; *pp != NULL; pp = &(*pp)->next)
		if ((*pp)->hash == h && (*pp)->klen == klen &&
		    memcmp((*pp)->key, k, klen) == 0)
			break;
	return pp;
}

static void *cwm_map_get(const struct cwm_map *m, const char *k, size_t klen)
{
	if (m->n == 0)
		return NULL;
	struct cwm_map_ent *e = *cwm_map_slot(m, k, klen, cwm_hash(k, klen));
	return e == NULL ? NULL : e->val;
}

static int cwm_map_grow(struct cwm_map *m)
{
	size_t nb = m->nb == 0 ? 8 : m->nb * 2;
	struct cwm_map_ent **b = calloc(nb, sizeof(*b));
	if (b == NULL)
		return -1;
	for (size_t i = 0; i < m->nb; i++) {
		struct cwm_map_ent *e = m->b[i], *next;
		for (; e != NULL; e = next) {
			next = e->next;
			e->next = b[e->hash & (nb - 1)];
			b[e->hash & (nb - 1)] = e;
		}
	}
	free(m->b);
	m->b = b;
	m->nb = nb;
	return 0;
}

/* Inserts or replaces; returns 0 or -1 (out of memory, map unchanged).
 * *stored (if not NULL) receives the map's own copy of the key, which lives
 * as long as the entry. */
static int cwm_map_put_key(struct cwm_map *m, const char *k, size_t klen,
                           void *v, const char **stored)
{
	uint32_t h = cwm_hash(k, klen);
	if (m->nb == 0 || m->n >= m->nb) {
		if (cwm_map_grow(m) != 0)
			return -1;
	}
	struct cwm_map_ent **pp = cwm_map_slot(m, k, klen, h);
	if (*pp != NULL) {
		(*pp)->val = v;
		if (stored != NULL)
			*stored = (*pp)->key;
		return 0;
	}
	struct cwm_map_ent *e = malloc(sizeof(*e) + klen + 1);
	if (e == NULL)
		return -1;
	e->next = NULL;
	e->hash = h;
	e->klen = klen;
	e->val = v;
	memcpy(e->key, k, klen);
	e->key[klen] = '\0';
	*pp = e;
	m->n++;
	if (stored != NULL)
		*stored = e->key;
	return 0;
}

static int cwm_map_put(struct cwm_map *m, const char *k, size_t klen, void *v)
{
	return cwm_map_put_key(m, k, klen, v, NULL);
}

/* Removes k; returns its value or NULL. */
static void *cwm_map_del(struct cwm_map *m, const char *k, size_t klen)
{
	if (m->n == 0)
		return NULL;
	struct cwm_map_ent **pp = cwm_map_slot(m, k, klen, cwm_hash(k, klen));
	struct cwm_map_ent *e = *pp;
	if (e == NULL)
		return NULL;
	void *v = e->val;
	*pp = e->next;
	free(e);
	m->n--;
	return v;
}

static void cwm_map_free(struct cwm_map *m, void (*free_val)(void *))
{
	for (size_t i = 0; i < m->nb; i++) {
		struct cwm_map_ent *e = m->b[i], *next;
		for (; e != NULL; e = next) {
			next = e->next;
			if (free_val != NULL)
				free_val(e->val);
			free(e);
		}
	}
	free(m->b);
	memset(m, 0, sizeof(*m));
}

/* ========================================================================
 * 2. Errors
 * ====================================================================== */

const char *mg_mqtt_strerror(int err)
{
	switch (err) {
	case MG_MQTT_OK:
		return "success";
#define CWM_XX(name, value, text)                                              \
	case MG_MQTT_ERR_##name:                                                   \
		return text;
		MG_MQTT_ERRNO_MAP(CWM_XX)
#undef CWM_XX
	default:
		return "unknown error";
	}
}

/* ========================================================================
 * 3. Topics
 * ====================================================================== */

/* 1 when s[0..n) is well-formed UTF-8 without U+0000 and without the
 * control characters U+0001-U+001F / U+007F-U+009F, which MQTT 1.5.4
 * says a receiver may treat as malformed. */
static int cwm_utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + n;
	while (p < end) {
		unsigned c = *p++;
		uint32_t cp;
		int more;
		if (c < 0x80) {
			if (c < 0x20 || c == 0x7f)
				return 0;
			continue;
		} else if (c >= 0xc2 && c <= 0xdf) {
			cp = c & 0x1f;
			more = 1;
		} else if (c >= 0xe0 && c <= 0xef) {
			cp = c & 0x0f;
			more = 2;
		} else if (c >= 0xf0 && c <= 0xf4) {
			cp = c & 0x07;
			more = 3;
		} else {
			return 0;
		}
		if (end - p < more)
			return 0;
		for (int i = 0; i < more; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (p[i] & 0x3f);
		}
		p += more;
		if ((more == 2 && cp < 0x800) || (more == 3 && cp < 0x10000) ||
		    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ||
		    (cp >= 0x80 && cp <= 0x9f))
			return 0;
	}
	return 1;
}

static int cwm_topic_check(const char *t, size_t n)
{
	if (n == 0 || n > 65535 || !cwm_utf8_valid(t, n))
		return MG_MQTT_ERR_TOPIC;
	if (memchr(t, '+', n) != NULL || memchr(t, '#', n) != NULL)
		return MG_MQTT_ERR_TOPIC;
	return 0;
}

int mg_mqtt_topic_valid(const char *topic)
{
	if (topic == NULL)
		return MG_MQTT_ERR_INVALID;
	return cwm_topic_check(topic, strlen(topic));
}

/* Length of "$share/<group>/" at the start of f, 0 if f is not shared,
 * -1 if it starts like a shared filter but is malformed. */
static int cwm_share_len(const char *f, size_t n)
{
	static const char pfx[] = "$share/";
	const size_t pl = sizeof(pfx) - 1;
	if (n < pl || memcmp(f, pfx, pl) != 0)
		return 0;
	const char *g = f + pl, *slash = memchr(g, '/', n - pl);
	if (slash == NULL || slash == g)
		return -1;
	for (const char *p = g; p < slash; p++)
		if (*p == '+' || *p == '#')
			return -1;
	if ((size_t)(slash + 1 - f) >= n)
		return -1; /* "$share/g/" with no filter */
	return (int)(slash + 1 - f);
}

static int cwm_filter_check(const char *f, size_t n)
{
	if (n == 0 || n > 65535 || !cwm_utf8_valid(f, n))
		return MG_MQTT_ERR_FILTER;
	int sl = cwm_share_len(f, n);
	if (sl < 0)
		return MG_MQTT_ERR_FILTER;
	f += sl;
	n -= (size_t)sl;
	for (size_t i = 0; i < n; i++) {
		int level_start = (i == 0 || f[i - 1] == '/');
		int level_end = (i + 1 == n || f[i + 1] == '/');
		if (f[i] == '+' && !(level_start && level_end))
			return MG_MQTT_ERR_FILTER;
		if (f[i] == '#' && !(level_start && i + 1 == n))
			return MG_MQTT_ERR_FILTER;
	}
	return 0;
}

/* Named levels: "home/{room}/temperature". */
struct mg_mqtt_params {
	int n;
	struct {
		int level;        /* 0-based, in the filter without $share/<g>/ */
		const char *name; /* NUL-terminated, in the same block */
	} p[];
};

/* Copies filter into *out with every "{name}" level written '+', and
 * (when params is not NULL) the names and their levels into *params (NULL
 * when there are none; one free()able block). Returns 0, MG_MQTT_ERR_PARAM
 * (a '{' or '}' in a level that is not exactly "{name}", a name that is
 * empty or not letters, digits and '_', a name used twice),
 * MG_MQTT_ERR_FILTER (not a filter once written with '+'), _NOMEM. */
static int cwm_filter_normalize(const char *filter, char **out,
                                struct mg_mqtt_params **params)
{
	size_t n = strlen(filter), names_len = 0;
	int count = 0;
	char *plain = malloc(n + 1), *o = plain;
	*out = NULL;
	if (params != NULL)
		*params = NULL;
	if (plain == NULL)
		return MG_MQTT_ERR_NOMEM;
	int share = cwm_share_len(filter, n);
	const char *f = filter;
	if (share > 0) {
		memcpy(o, f, (size_t)share);
		o += share;
		f += share;
	}
	/* Pass 1: rewrite, count, check. */
	for (const char *lv = f;;) {
		size_t l = strcspn(lv, "/");
		int braces = memchr(lv, '{', l) != NULL || memchr(lv, '}', l) != NULL;
		if (braces) {
			int whole = l >= 3 && lv[0] == '{' && lv[l - 1] == '}';
			for (size_t i = 1; whole && i + 1 < l; i++)
				whole = isalnum((unsigned char)lv[i]) || lv[i] == '_';
			if (!whole) {
				free(plain);
				return MG_MQTT_ERR_PARAM;
			}
			/* The same name earlier? */
			for (const char *prev = f; prev < lv;) {
				size_t pl = strcspn(prev, "/");
				if (pl == l && memcmp(prev, lv, l) == 0) {
					free(plain);
					return MG_MQTT_ERR_PARAM;
				}
				prev += pl + 1;
			}
			*o++ = '+';
			count++;
			names_len += l - 1;
		} else {
			memcpy(o, lv, l);
			o += l;
		}
		if (lv[l] == '\0')
			break;
		*o++ = '/';
		lv += l + 1;
	}
	*o = '\0';
	if (cwm_filter_check(plain, strlen(plain)) != 0) {
		free(plain);
		return MG_MQTT_ERR_FILTER;
	}
	if (params != NULL && count > 0) {
		struct mg_mqtt_params *pp =
		    malloc(sizeof(*pp) + (size_t)count * sizeof(pp->p[0]) + names_len);
		if (pp == NULL) {
			free(plain);
			return MG_MQTT_ERR_NOMEM;
		}
		char *names = (char *)&pp->p[count];
		pp->n = 0;
		int level = 0;
		for (const char *lv = f;; level++) {
			size_t l = strcspn(lv, "/");
			if (l >= 3 && lv[0] == '{') {
				pp->p[pp->n].level = level;
				pp->p[pp->n++].name = memcpy(names, lv + 1, l - 2);
				names[l - 2] = '\0';
				names += l - 1;
			}
			if (lv[l] == '\0')
				break;
			lv += l + 1;
		}
		*params = pp;
	}
	*out = plain;
	return 0;
}

/* Replaces the malloc()ed filter *f by its normalized form ("{name}"
 * levels written '+'). Returns what cwm_filter_normalize returns; *f is
 * unchanged on error. */
static int cwm_filter_normalize_owned(char **f)
{
	char *plain;
	int rc = cwm_filter_normalize(*f, &plain, NULL);
	if (rc == 0) {
		free(*f);
		*f = plain;
	}
	return rc;
}

int mg_mqtt_filter_valid(const char *filter)
{
	char *plain;
	if (filter == NULL)
		return MG_MQTT_ERR_INVALID;
	if (strchr(filter, '{') == NULL && strchr(filter, '}') == NULL)
		return cwm_filter_check(filter, strlen(filter));
	int rc = cwm_filter_normalize(filter, &plain, NULL);
	free(plain);
	return rc;
}

int mg_mqtt_param(const struct mg_mqtt_message *msg, const char *name,
                  char *buf, size_t len)
{
	if (msg == NULL || name == NULL || (buf == NULL && len > 0))
		return MG_MQTT_ERR_INVALID;
	const struct mg_mqtt_params *pp = msg->params;
	for (int i = 0; pp != NULL && i < pp->n; i++) {
		if (strcmp(pp->p[i].name, name) != 0)
			continue;
		const char *t = msg->topic, *end = t + msg->topic_len;
		for (int level = 0; level < pp->p[i].level && t != NULL; level++) {
			t = memchr(t, '/', (size_t)(end - t));
			if (t != NULL)
				t++;
		}
		if (t == NULL)
			return MG_MQTT_ERR_NOT_FOUND;
		const char *e = memchr(t, '/', (size_t)(end - t));
		size_t l = e != NULL ? (size_t)(e - t) : (size_t)(end - t);
		if (len > 0) {
			size_t k = l < len - 1 ? l : len - 1;
			memcpy(buf, t, k);
			buf[k] = '\0';
		}
		return l > INT_MAX ? INT_MAX : (int)l;
	}
	return MG_MQTT_ERR_NOT_FOUND;
}

/* Matches a valid filter (without $share) against a topic of n bytes. */
static int cwm_match(const char *f, const char *t, size_t n)
{
	const char *tend = t + n;
	if (n > 0 && t[0] == '$' && (f[0] == '+' || f[0] == '#'))
		return 0;
	for (;;) {
		const char *fe = strchr(f, '/');
		size_t fl = fe != NULL ? (size_t)(fe - f) : strlen(f);
		if (fl == 1 && f[0] == '#')
			return 1;
		if (t == NULL)
			return 0;
		const char *te = memchr(t, '/', (size_t)(tend - t));
		size_t tl = te != NULL ? (size_t)(te - t) : (size_t)(tend - t);
		if (!(fl == 1 && f[0] == '+') && (fl != tl || memcmp(f, t, fl) != 0))
			return 0;
		if (fe == NULL)
			return te == NULL;
		f = fe + 1;
		t = te != NULL ? te + 1 : NULL;
	}
}

int mg_mqtt_topic_matches(const char *filter, const char *topic)
{
	char *plain = NULL;
	if (filter == NULL || topic == NULL)
		return 0;
	if ((strchr(filter, '{') != NULL || strchr(filter, '}') != NULL)) {
		if (cwm_filter_normalize(filter, &plain, NULL) != 0)
			return 0;
		filter = plain;
	}
	size_t fn = strlen(filter), tn = strlen(topic);
	int m = cwm_filter_check(filter, fn) == 0 &&
	        cwm_topic_check(topic, tn) == 0 &&
	        cwm_match(filter + cwm_share_len(filter, fn), topic, tn);
	free(plain);
	return m;
}

/* ========================================================================
 * 4. Configuration: the <PREFIX>_<KEY> options of one client
 * ====================================================================== */

enum cwm_ktype {
	K_STR,    /* any string; "" means unset */
	K_SECRET, /* a string never echoed */
	K_PATH,   /* a file or directory name */
	K_TOPIC,  /* a topic name */
	K_BOOL,
	K_INT,    /* integer in [min, max] */
	K_NUM,    /* non-negative decimal number */
	K_ENUM
};

struct cwm_enum {
	const char *name;
	int value;
};

static const struct cwm_enum cwm_protocols[] = {
    {"3.1.1", 4},   {"3.1", 3},       {"5", 5},       {"5.0", 5},
    {"mqttv311", 4}, {"mqttv31", 3}, {"mqttv5", 5}, {NULL, 0}};
static const struct cwm_enum cwm_transports[] = {
    {"tcp", 0}, {"websockets", 1}, {NULL, 0}};
static const struct cwm_enum cwm_tls_versions[] = {
    {"tlsv1.2", MQTT_SSL_VERSION_TLS_1_2},
    {"tlsv1.1", MQTT_SSL_VERSION_TLS_1_1},
    {"tlsv1", MQTT_SSL_VERSION_TLS_1_0},
    {"auto", MQTT_SSL_VERSION_DEFAULT},
    {"tlsv1.0", MQTT_SSL_VERSION_TLS_1_0},
    {NULL, 0}};
enum { CWM_CERT_NONE, CWM_CERT_OPTIONAL, CWM_CERT_REQUIRED };
static const struct cwm_enum cwm_cert_reqs[] = {
    {"required", CWM_CERT_REQUIRED},     {"optional", CWM_CERT_OPTIONAL},
    {"none", CWM_CERT_NONE},             {"cert_required", CWM_CERT_REQUIRED},
    {"cert_optional", CWM_CERT_OPTIONAL}, {"cert_none", CWM_CERT_NONE},
    {NULL, 0}};

/* Everything a client reads from its options. Strings are malloc()ed. */
struct cwm_settings {
	char *client_id;
	char *broker_url;
	int broker_port; /* 0: the scheme's default */
	char *username;
	char *password;
	char *password_file;
	int keepalive;
	int connection_timeout;
	int clean_session;
	int connect_async;
	double refresh_time;
	int protocol; /* 3 (3.1), 4 (3.1.1), 5 */
	int transport; /* 0 tcp, 1 websockets */
	int tls_enabled;
	char *tls_ca_certs;
	char *tls_certfile;
	char *tls_keyfile;
	char *tls_keyfile_password;
	int tls_cert_reqs;
	int tls_version;
	char *tls_ciphers;
	int tls_insecure;
	char *will_topic;
	char *will_message;
	int will_qos;
	int will_retain;
	char *birth_topic;
	char *birth_message;
	int birth_qos;
	int birth_retain;
	char *shared_group;
	char *subscribe;
	int reconnect_min;
	int reconnect_max;
	int max_inflight;
	int max_buffered;
	char *persistence_dir;
	int queue_size;
	char *bridge_path;
	char *bridge_publish_allow;
	char *bridge_subscribe_allow;
	char *bridge_auth_file;
	int bridge_max_body;
	int bridge_client_queue;
	int bridge_last_values;
	int bridge_request_timeout_max;

	/* Derived by cwm_settings_finish(). */
	char **uris;       /* paho server URIs, fail-over order */
	int nuris;
	int use_tls;       /* some URI is ssl:// or wss:// */
	char *secret;      /* PASSWORD, or the first line of PASSWORD_FILE */
	char **sub_filters; /* parsed SUBSCRIBE */
	int *sub_qos;
	int nsubs;
	char **bpub, **bsub; /* parsed BRIDGE_PUBLISH_ALLOW / _SUBSCRIBE_ALLOW */
	int nbpub, nbsub;
	uint64_t set;        /* bit i: cwm_keys[i] was given an option */
};

struct cwm_key {
	const char *name;
	enum cwm_ktype type;
	size_t off;
	long min, max;
	const char *def;            /* default, parsed like a value; NULL: unset */
	const struct cwm_enum *en;  /* K_ENUM values */
	const char *hint;           /* "is not <hint>" in error messages */
};

#define CWM_S(f) offsetof(struct cwm_settings, f)
static const char cwm_bool_hint[] = "true or false";

/* The table behind every key: name, type, field, range, default. The
 * README's configuration reference lists the same keys. */
static const struct cwm_key cwm_keys[] = {
    {"CLIENT_ID", K_STR, CWM_S(client_id), 0, 0, NULL, NULL, NULL},
    {"BROKER_URL", K_STR, CWM_S(broker_url), 0, 0, "localhost", NULL, NULL},
    {"BROKER_PORT", K_INT, CWM_S(broker_port), 1, 65535, NULL, NULL,
     "a port number (1-65535)"},
    {"USERNAME", K_STR, CWM_S(username), 0, 0, NULL, NULL, NULL},
    {"PASSWORD", K_SECRET, CWM_S(password), 0, 0, NULL, NULL, NULL},
    {"PASSWORD_FILE", K_PATH, CWM_S(password_file), 0, 0, NULL, NULL, NULL},
    {"KEEPALIVE", K_INT, CWM_S(keepalive), 0, 65535, "60", NULL,
     "a number of seconds (0-65535)"},
    {"CONNECTION_TIMEOUT", K_INT, CWM_S(connection_timeout), 1, 3600, "5",
     NULL, "a number of seconds (1-3600)"},
    {"CLEAN_SESSION", K_BOOL, CWM_S(clean_session), 0, 0, "true", NULL,
     cwm_bool_hint},
    {"CONNECT_ASYNC", K_BOOL, CWM_S(connect_async), 0, 0, "false", NULL,
     cwm_bool_hint},
    {"REFRESH_TIME", K_NUM, CWM_S(refresh_time), 0, 0, "1.0", NULL,
     "a number of seconds"},
    {"PROTOCOL_VERSION", K_ENUM, CWM_S(protocol), 0, 0, "3.1.1",
     cwm_protocols, "one of 3.1, 3.1.1, 5"},
    {"TRANSPORT", K_ENUM, CWM_S(transport), 0, 0, "tcp", cwm_transports,
     "one of tcp, websockets"},
    {"TLS_ENABLED", K_BOOL, CWM_S(tls_enabled), 0, 0, "false", NULL,
     cwm_bool_hint},
    {"TLS_CA_CERTS", K_PATH, CWM_S(tls_ca_certs), 0, 0, NULL, NULL, NULL},
    {"TLS_CERTFILE", K_PATH, CWM_S(tls_certfile), 0, 0, NULL, NULL, NULL},
    {"TLS_KEYFILE", K_PATH, CWM_S(tls_keyfile), 0, 0, NULL, NULL, NULL},
    {"TLS_KEYFILE_PASSWORD", K_SECRET, CWM_S(tls_keyfile_password), 0, 0,
     NULL, NULL, NULL},
    {"TLS_CERT_REQS", K_ENUM, CWM_S(tls_cert_reqs), 0, 0, "required",
     cwm_cert_reqs, "one of required, optional, none"},
    {"TLS_VERSION", K_ENUM, CWM_S(tls_version), 0, 0, "tlsv1.2",
     cwm_tls_versions, "one of tlsv1.2, tlsv1.1, tlsv1, auto"},
    {"TLS_CIPHERS", K_STR, CWM_S(tls_ciphers), 0, 0, NULL, NULL, NULL},
    {"TLS_INSECURE", K_BOOL, CWM_S(tls_insecure), 0, 0, "false", NULL,
     cwm_bool_hint},
    {"LAST_WILL_TOPIC", K_TOPIC, CWM_S(will_topic), 0, 0, NULL, NULL,
     "a topic name (no wildcards)"},
    {"LAST_WILL_MESSAGE", K_STR, CWM_S(will_message), 0, 0, NULL, NULL, NULL},
    {"LAST_WILL_QOS", K_INT, CWM_S(will_qos), 0, 2, "0", NULL,
     "a QoS (0, 1 or 2)"},
    {"LAST_WILL_RETAIN", K_BOOL, CWM_S(will_retain), 0, 0, "false", NULL,
     cwm_bool_hint},
    {"BIRTH_TOPIC", K_TOPIC, CWM_S(birth_topic), 0, 0, NULL, NULL,
     "a topic name (no wildcards)"},
    {"BIRTH_MESSAGE", K_STR, CWM_S(birth_message), 0, 0, NULL, NULL, NULL},
    {"BIRTH_QOS", K_INT, CWM_S(birth_qos), 0, 2, "0", NULL,
     "a QoS (0, 1 or 2)"},
    {"BIRTH_RETAIN", K_BOOL, CWM_S(birth_retain), 0, 0, "false", NULL,
     cwm_bool_hint},
    {"SHARED_GROUP", K_STR, CWM_S(shared_group), 0, 0, NULL, NULL, NULL},
    {"SUBSCRIBE", K_STR, CWM_S(subscribe), 0, 0, NULL, NULL, NULL},
    {"RECONNECT_MIN", K_INT, CWM_S(reconnect_min), 1, 3600, "1", NULL,
     "a number of seconds (1-3600)"},
    {"RECONNECT_MAX", K_INT, CWM_S(reconnect_max), 1, 86400, "120", NULL,
     "a number of seconds (1-86400)"},
    {"MAX_INFLIGHT", K_INT, CWM_S(max_inflight), 1, 65535, "20", NULL,
     "a number of messages (1-65535)"},
    {"MAX_BUFFERED", K_INT, CWM_S(max_buffered), 0, 10000000, "10000", NULL,
     "a number of messages (0-10000000)"},
    {"PERSISTENCE_DIR", K_PATH, CWM_S(persistence_dir), 0, 0, NULL, NULL,
     NULL},
    {"QUEUE_SIZE", K_INT, CWM_S(queue_size), 1, 10000000, "10000", NULL,
     "a number of messages (1-10000000)"},
    {"BRIDGE_PATH", K_PATH, CWM_S(bridge_path), 0, 0, NULL, NULL, NULL},
    {"BRIDGE_PUBLISH_ALLOW", K_STR, CWM_S(bridge_publish_allow), 0, 0, NULL,
     NULL, NULL},
    {"BRIDGE_SUBSCRIBE_ALLOW", K_STR, CWM_S(bridge_subscribe_allow), 0, 0,
     NULL, NULL, NULL},
    {"BRIDGE_AUTH_FILE", K_PATH, CWM_S(bridge_auth_file), 0, 0, NULL, NULL,
     NULL},
    {"BRIDGE_MAX_BODY", K_INT, CWM_S(bridge_max_body), 1, 268435455, "65536",
     NULL, "a number of bytes (1-268435455)"},
    {"BRIDGE_CLIENT_QUEUE", K_INT, CWM_S(bridge_client_queue), 1, 1000000,
     "1000", NULL, "a number of messages (1-1000000)"},
    {"BRIDGE_LAST_VALUES", K_INT, CWM_S(bridge_last_values), 0, 10000000,
     "1000", NULL, "a number of topics (0-10000000)"},
    {"BRIDGE_REQUEST_TIMEOUT_MAX", K_INT, CWM_S(bridge_request_timeout_max), 1,
     3600, "30", NULL, "a number of seconds (1-3600)"},
};
#define CWM_NKEYS (sizeof(cwm_keys) / sizeof(cwm_keys[0]))
_Static_assert(CWM_NKEYS <= 64, "cwm_settings.set has one bit a key");

static const struct cwm_key *cwm_key_find(const char *name, size_t n)
{
	for (size_t i = 0; i < CWM_NKEYS; i++)
		if (strlen(cwm_keys[i].name) == n &&
		    strncasecmp(cwm_keys[i].name, name, n) == 0)
			return &cwm_keys[i];
	return NULL;
}

static int cwm_is_secret(const struct cwm_key *k)
{
	return k->type == K_SECRET;
}

/* Copies v without leading and trailing blanks into a new string. */
static char *cwm_trimdup(const char *v)
{
	while (isspace((unsigned char)*v))
		v++;
	size_t n = strlen(v);
	while (n > 0 && isspace((unsigned char)v[n - 1]))
		n--;
	return cwm_strndup(v, n);
}

static int cwm_parse_bool(const char *v, int *out)
{
	static const char *yes[] = {"true", "yes", "on", "1"};
	static const char *no[] = {"false", "no", "off", "0"};
	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(v, yes[i]) == 0)
			return *out = 1, 0;
		if (strcasecmp(v, no[i]) == 0)
			return *out = 0, 0;
	}
	return -1;
}

static int cwm_parse_long(const char *v, long min, long max, long *out)
{
	char *end;
	if (*v == '\0' || !(isdigit((unsigned char)*v) || *v == '-'))
		return -1;
	errno = 0;
	long x = strtol(v, &end, 10);
	if (errno != 0 || *end != '\0' || x < min || x > max)
		return -1;
	*out = x;
	return 0;
}

/* Parses value v for key k into s. On error writes the sentence to err. */
static int cwm_set_key(struct cwm_settings *s, const char *prefix,
                       const struct cwm_key *k, const char *v, char *err,
                       size_t errlen)
{
	char *field = (char *)s + k->off, q[72];
	char *t = NULL;
	int rc = 0;

	if (k->type == K_STR || k->type == K_SECRET || k->type == K_PATH ||
	    k->type == K_TOPIC) {
		char **sp = (char **)(void *)field;
		char *copy = k->type == K_STR || k->type == K_SECRET
		                 ? cwm_strdup(v)
		                 : cwm_trimdup(v);
		if (copy == NULL)
			return MG_MQTT_ERR_NOMEM;
		if (copy[0] != '\0' && k->type == K_TOPIC &&
		    cwm_topic_check(copy, strlen(copy)) != 0) {
			cwm_fmt(err, errlen, "%s_%s: '%s' is not %s", prefix, k->name,
			        cwm_quote(copy, q), k->hint);
			free(copy);
			return MG_MQTT_ERR_CONFIG;
		}
		if (copy[0] != '\0' && !cwm_utf8_valid(copy, strlen(copy)) &&
		    k->type != K_PATH) {
			if (cwm_is_secret(k))
				cwm_fmt(err, errlen, "%s_%s: the value is not valid UTF-8",
				        prefix, k->name);
			else
				cwm_fmt(err, errlen, "%s_%s: '%s' is not valid UTF-8", prefix,
				        k->name, cwm_quote(copy, q));
			free(copy);
			return MG_MQTT_ERR_CONFIG;
		}
		free(*sp);
		*sp = NULL;
		if (copy[0] == '\0')
			free(copy);
		else
			*sp = copy;
		return 0;
	}

	if ((t = cwm_trimdup(v)) == NULL)
		return MG_MQTT_ERR_NOMEM;
	switch (k->type) {
	case K_BOOL:
		rc = cwm_parse_bool(t, (int *)(void *)field);
		break;
	case K_INT: {
		long x;
		rc = cwm_parse_long(t, k->min, k->max, &x);
		if (rc == 0)
			*(int *)(void *)field = (int)x;
		break;
	}
	case K_NUM: {
		char *end;
		errno = 0;
		double d = strtod(t, &end);
		rc = (t[0] == '\0' || *end != '\0' || errno != 0 || !(d >= 0) ||
		      d > 1e9 || strspn(t, "0123456789.") != strlen(t))
		         ? -1
		         : 0;
		if (rc == 0)
			*(double *)(void *)field = d;
		break;
	}
	case K_ENUM:
		rc = -1;
		for (const struct cwm_enum *e = k->en; e->name != NULL; e++)
			if (strcasecmp(e->name, t) == 0) {
				*(int *)(void *)field = e->value;
				rc = 0;
				break;
			}
		break;
	default:
		rc = -1;
		break;
	}
	if (rc != 0) {
		cwm_fmt(err, errlen, "%s_%s: '%s' is not %s", prefix, k->name,
		        cwm_quote(t, q), k->hint);
		rc = MG_MQTT_ERR_CONFIG;
	}
	free(t);
	return rc;
}

static void cwm_strv_free(char **v, int n)
{
	if (v == NULL)
		return;
	for (int i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void cwm_settings_free(struct cwm_settings *s)
{
	for (size_t i = 0; i < CWM_NKEYS; i++) {
		const struct cwm_key *k = &cwm_keys[i];
		if (k->type == K_STR || k->type == K_SECRET || k->type == K_PATH ||
		    k->type == K_TOPIC) {
			char **sp = (char **)(void *)((char *)s + k->off);
			free(*sp);
		}
	}
	cwm_strv_free(s->uris, s->nuris);
	cwm_strv_free(s->sub_filters, s->nsubs);
	free(s->sub_qos);
	cwm_strv_free(s->bpub, s->nbpub);
	cwm_strv_free(s->bsub, s->nbsub);
	if (s->secret != NULL && s->secret != s->password) {
		explicit_bzero(s->secret, strlen(s->secret));
		free(s->secret);
	}
	memset(s, 0, sizeof(*s));
}

/* Turns one BROKER_URL entry into a paho URI "scheme://host:port[/path]". */
static int cwm_parse_url(const struct cwm_settings *s, const char *prefix,
                         const char *u, char **out, char *err, size_t errlen)
{
	static const struct {
		const char *in, *out;
		int tls, ws;
	} schemes[] = {{"mqtt", "tcp", 0, 0}, {"tcp", "tcp", 0, 0},
	               {"mqtts", "ssl", 1, 0}, {"ssl", "ssl", 1, 0},
	               {"ws", "ws", 0, 1},     {"wss", "wss", 1, 1}};
	const char *scheme = NULL, *host = u, *sep = strstr(u, "://");
	int tls = s->tls_enabled, ws = s->transport == 1;
	char q[72];

	/* user:password@host: refused without quoting it, as it may hold a
	 * password. */
	const char *auth = sep != NULL ? sep + 3 : u;
	if (memchr(auth, '@', strcspn(auth, "/")) != NULL) {
		cwm_fmt(err, errlen,
		        "%s_BROKER_URL: user names and passwords in the URL are not "
		        "supported (the URL is not shown here); use %s_USERNAME and "
		        "%s_PASSWORD or %s_PASSWORD_FILE",
		        prefix, prefix, prefix, prefix);
		return MG_MQTT_ERR_CONFIG;
	}

	if (sep != NULL) {
		size_t i, n = (size_t)(sep - u);
		for (i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++)
			if (strlen(schemes[i].in) == n &&
			    strncasecmp(u, schemes[i].in, n) == 0)
				break;
		if (i == sizeof(schemes) / sizeof(schemes[0])) {
			cwm_fmt(err, errlen,
			        "%s_BROKER_URL: '%s' has an unknown scheme (use mqtt://, "
			        "mqtts://, ws://, wss://, tcp:// or ssl://)",
			        prefix, cwm_quote(u, q));
			return MG_MQTT_ERR_CONFIG;
		}
		if (s->tls_enabled && !schemes[i].tls) {
			cwm_fmt(err, errlen,
			        "%s_BROKER_URL: '%s' is not a TLS URL but %s_TLS_ENABLED "
			        "is true",
			        prefix, cwm_quote(u, q), prefix);
			return MG_MQTT_ERR_CONFIG;
		}
		if (s->transport == 1 && !schemes[i].ws) {
			cwm_fmt(err, errlen,
			        "%s_BROKER_URL: '%s' is not a WebSocket URL but "
			        "%s_TRANSPORT is websockets",
			        prefix, cwm_quote(u, q), prefix);
			return MG_MQTT_ERR_CONFIG;
		}
		scheme = schemes[i].out;
		tls = schemes[i].tls;
		ws = schemes[i].ws;
		host = sep + 3;
	} else {
		scheme = ws ? (tls ? "wss" : "ws") : (tls ? "ssl" : "tcp");
	}

	/* host: a name, an IPv4 address, or [IPv6]; then :port; then /path. */
	const char *h = host, *hend, *rest;
	if (*h == '[') {
		hend = strchr(h, ']');
		if (hend == NULL)
			goto bad;
		hend++;
	} else {
		hend = h + strcspn(h, ":/");
	}
	if (hend == h)
		goto bad;
	for (const char *p = h; p < hend; p++)
		if (!(isalnum((unsigned char)*p) || strchr("-._[]:", *p) != NULL))
			goto bad;
	rest = hend;
	long port = s->broker_port != 0 ? s->broker_port : (tls ? 8883 : 1883);
	if (*rest == ':') {
		char pbuf[8];
		size_t pn = strcspn(rest + 1, "/");
		if (pn == 0 || pn >= sizeof(pbuf))
			goto bad;
		memcpy(pbuf, rest + 1, pn);
		pbuf[pn] = '\0';
		if (cwm_parse_long(pbuf, 1, 65535, &port) != 0)
			goto bad;
		rest += 1 + pn;
	}
	if (*rest != '\0' && (*rest != '/' || !ws))
		goto bad;
	for (const char *p = rest; *p; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
			goto bad;

	size_t need = strlen(scheme) + 3 + (size_t)(hend - h) + 7 + strlen(rest);
	if ((*out = malloc(need + 1)) == NULL)
		return MG_MQTT_ERR_NOMEM;
	snprintf(*out, need + 1, "%s://%.*s:%ld%s", scheme, (int)(hend - h), h,
	         port, rest);
	return 0;
bad:
	cwm_fmt(err, errlen,
	        "%s_BROKER_URL: '%s' is not a host name or URL "
	        "(host, host:port or scheme://host[:port])",
	        prefix, cwm_quote(u, q));
	return MG_MQTT_ERR_CONFIG;
}

/* Splits a comma-separated list into trimmed, non-empty items. */
static int cwm_split_list(const char *v, char ***out, int *n)
{
	*out = NULL;
	*n = 0;
	const char *p = v;
	while (*p != '\0') {
		const char *e = strchr(p, ',');
		size_t len = e != NULL ? (size_t)(e - p) : strlen(p);
		char *item = cwm_strndup(p, len), *t;
		if (item == NULL)
			return MG_MQTT_ERR_NOMEM;
		t = cwm_trimdup(item);
		free(item);
		if (t == NULL)
			return MG_MQTT_ERR_NOMEM;
		if (t[0] == '\0') {
			free(t);
		} else {
			char **nv = realloc(*out, sizeof(char *) * (size_t)(*n + 1));
			if (nv == NULL) {
				free(t);
				return MG_MQTT_ERR_NOMEM;
			}
			*out = nv;
			(*out)[(*n)++] = t;
		}
		if (e == NULL)
			break;
		p = e + 1;
	}
	return 0;
}

/* A file we can open, and not a directory (those open fine on Linux). */
static int cwm_readable(const char *prefix, const char *key, const char *path,
                        char *err, size_t errlen)
{
	char q[320];
	struct stat st;
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		cwm_fmt(err, errlen, "%s_%s: cannot read '%s': %s", prefix, key,
		        cwm_quote_path(path, q), strerror(errno));
		return MG_MQTT_ERR_IO;
	}
	int dir = fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode);
	fclose(f);
	if (dir) {
		cwm_fmt(err, errlen, "%s_%s: '%s' is a directory, not a file", prefix,
		        key, cwm_quote_path(path, q));
		return MG_MQTT_ERR_IO;
	}
	return 0;
}

/* The first line of PASSWORD_FILE, at most 1023 bytes. */
static int cwm_read_secret(const char *prefix, const char *path, char **out,
                           char *err, size_t errlen)
{
	char buf[1025], q[320];
	int rc = cwm_readable(prefix, "PASSWORD_FILE", path, err, errlen);
	FILE *f = rc == 0 ? fopen(path, "rb") : NULL;
	if (rc != 0)
		return rc;
	if (f == NULL) {
		cwm_fmt(err, errlen, "%s_PASSWORD_FILE: cannot read '%s': %s", prefix,
		        cwm_quote_path(path, q), strerror(errno));
		return MG_MQTT_ERR_IO;
	}
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	size_t line = strcspn(buf, "\r\n");
	int toolong = line > 1023;
	buf[line] = '\0';
	if (toolong) {
		explicit_bzero(buf, sizeof(buf));
		cwm_fmt(err, errlen,
		        "%s_PASSWORD_FILE: the first line of '%s' is longer than 1023 "
		        "bytes",
		        prefix, cwm_quote_path(path, q));
		return MG_MQTT_ERR_CONFIG;
	}
	*out = cwm_strdup(buf);
	explicit_bzero(buf, sizeof(buf));
	return *out == NULL ? MG_MQTT_ERR_NOMEM : 0;
}

/* BRIDGE_*: a path, two allow lists of filters, an auth file. */
static int cwm_bridge_settings(struct cwm_settings *s, const char *prefix,
                               char *err, size_t errlen)
{
	char q[72];
	const char *p = s->bridge_path;
	int rc;

	if (p == NULL) {
		/* Any other BRIDGE_* key given without the path is a mistake. */
		for (size_t i = 0; i < CWM_NKEYS; i++)
			if ((s->set >> i & 1) && strncmp(cwm_keys[i].name, "BRIDGE_", 7) == 0 &&
			    cwm_keys[i].off != CWM_S(bridge_path)) {
				cwm_fmt(err, errlen, "%s_%s: needs %s_BRIDGE_PATH", prefix,
				        cwm_keys[i].name, prefix);
				return MG_MQTT_ERR_CONFIG;
			}
		return 0;
	}
	/* A plain absolute path: what CivetWeb would not rewrite. */
	size_t n = strlen(p);
	int ok = p[0] == '/' && n > 1 && p[n - 1] != '/' &&
	         strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	                   "0123456789-_~./") == n &&
	         strstr(p, "//") == NULL && strstr(p, "/.") == NULL && n < 200;
	if (!ok) {
		cwm_fmt(err, errlen,
		        "%s_BRIDGE_PATH: '%s' is not a URL path like /mqtt (letters, "
		        "digits, '-', '_', '~', '.', no trailing '/')",
		        prefix, cwm_quote(p, q));
		return MG_MQTT_ERR_CONFIG;
	}
	static const char *const keys[] = {"BRIDGE_PUBLISH_ALLOW",
	                                   "BRIDGE_SUBSCRIBE_ALLOW"};
	const char *vals[] = {s->bridge_publish_allow, s->bridge_subscribe_allow};
	char ***outs[] = {&s->bpub, &s->bsub};
	int *ns[] = {&s->nbpub, &s->nbsub};
	for (int k = 0; k < 2; k++) {
		if (vals[k] == NULL)
			continue; /* deny by default */
		if ((rc = cwm_split_list(vals[k], outs[k], ns[k])) != 0)
			return rc;
		for (int i = 0; i < *ns[k]; i++) {
			char **f = &(*outs[k])[i];
			if ((rc = cwm_filter_normalize_owned(f)) == MG_MQTT_ERR_NOMEM)
				return rc;
			if (rc != 0) {
				cwm_fmt(err, errlen,
				        "%s_%s: '%s' is not a topic filter (comma-separated "
				        "filters; a level may be \"{name}\")",
				        prefix, keys[k], cwm_quote(*f, q));
				return MG_MQTT_ERR_CONFIG;
			}
		}
	}
	if (s->bridge_auth_file != NULL &&
	    (rc = cwm_readable(prefix, "BRIDGE_AUTH_FILE", s->bridge_auth_file, err,
	                       errlen)) != 0)
		return rc;
	return 0;
}

/* Cross-key checks and derived values, after every key is read. */
static int cwm_settings_finish(struct cwm_settings *s, const char *prefix,
                               char *err, size_t errlen)
{
	char q[72];
	int rc;

	if (s->password != NULL && s->password_file != NULL) {
		cwm_fmt(err, errlen,
		        "%s_PASSWORD_FILE: cannot be used together with %s_PASSWORD",
		        prefix, prefix);
		return MG_MQTT_ERR_CONFIG;
	}
	if (s->password_file != NULL) {
		if ((rc = cwm_read_secret(prefix, s->password_file, &s->secret, err,
		                          errlen)) != 0)
			return rc;
	} else {
		s->secret = s->password;
	}
	if (s->secret != NULL && s->username == NULL) {
		cwm_fmt(err, errlen, "%s_PASSWORD: a password needs %s_USERNAME",
		        prefix, prefix);
		return MG_MQTT_ERR_CONFIG;
	}
	if (s->reconnect_min > s->reconnect_max) {
		cwm_fmt(err, errlen,
		        "%s_RECONNECT_MIN: '%d' is larger than %s_RECONNECT_MAX (%d)",
		        prefix, s->reconnect_min, prefix, s->reconnect_max);
		return MG_MQTT_ERR_CONFIG;
	}
	if (s->client_id != NULL && s->protocol == 3 && strlen(s->client_id) > 23) {
		cwm_fmt(err, errlen,
		        "%s_CLIENT_ID: '%s' is longer than the 23 bytes MQTT 3.1 "
		        "allows",
		        prefix, cwm_quote(s->client_id, q));
		return MG_MQTT_ERR_CONFIG;
	}
	if (s->will_message != NULL && s->will_topic == NULL) {
		cwm_fmt(err, errlen, "%s_LAST_WILL_MESSAGE: needs %s_LAST_WILL_TOPIC",
		        prefix, prefix);
		return MG_MQTT_ERR_CONFIG;
	}
	if (s->birth_message != NULL && s->birth_topic == NULL) {
		cwm_fmt(err, errlen, "%s_BIRTH_MESSAGE: needs %s_BIRTH_TOPIC", prefix,
		        prefix);
		return MG_MQTT_ERR_CONFIG;
	}
	if (s->shared_group != NULL &&
	    (strpbrk(s->shared_group, "/+#") != NULL ||
	     !cwm_utf8_valid(s->shared_group, strlen(s->shared_group)))) {
		cwm_fmt(err, errlen,
		        "%s_SHARED_GROUP: '%s' is not a group name (no '/', '+' or "
		        "'#')",
		        prefix, cwm_quote(s->shared_group, q));
		return MG_MQTT_ERR_CONFIG;
	}
	if (s->persistence_dir != NULL) {
		struct stat st;
		if (s->client_id == NULL) {
			cwm_fmt(err, errlen,
			        "%s_PERSISTENCE_DIR: needs a fixed %s_CLIENT_ID (stored "
			        "messages are found again by client id)",
			        prefix, prefix);
			return MG_MQTT_ERR_CONFIG;
		}
		if (stat(s->persistence_dir, &st) != 0 || !S_ISDIR(st.st_mode) ||
		    access(s->persistence_dir, W_OK | X_OK) != 0) {
			char qp[320];
			cwm_fmt(err, errlen,
			        "%s_PERSISTENCE_DIR: '%s' is not a writable directory",
			        prefix, cwm_quote_path(s->persistence_dir, qp));
			return MG_MQTT_ERR_IO;
		}
	}
	if (s->tls_keyfile != NULL && s->tls_certfile == NULL) {
		cwm_fmt(err, errlen, "%s_TLS_KEYFILE: needs %s_TLS_CERTFILE", prefix,
		        prefix);
		return MG_MQTT_ERR_CONFIG;
	}
	if (s->tls_ca_certs != NULL &&
	    (rc = cwm_readable(prefix, "TLS_CA_CERTS", s->tls_ca_certs, err,
	                       errlen)) != 0)
		return rc;
	if (s->tls_certfile != NULL &&
	    (rc = cwm_readable(prefix, "TLS_CERTFILE", s->tls_certfile, err,
	                       errlen)) != 0)
		return rc;
	if (s->tls_keyfile != NULL &&
	    (rc = cwm_readable(prefix, "TLS_KEYFILE", s->tls_keyfile, err,
	                       errlen)) != 0)
		return rc;

	/* BROKER_URL: a fail-over list. */
	char **items;
	int n;
	if (s->broker_url == NULL) {
		cwm_fmt(err, errlen, "%s_BROKER_URL: '' names no broker", prefix);
		return MG_MQTT_ERR_CONFIG;
	}
	if ((rc = cwm_split_list(s->broker_url, &items, &n)) != 0)
		return rc;
	if (n == 0) {
		cwm_fmt(err, errlen, "%s_BROKER_URL: '%s' names no broker", prefix,
		        cwm_quote(s->broker_url, q));
		cwm_strv_free(items, n);
		return MG_MQTT_ERR_CONFIG;
	}
	if ((s->uris = calloc((size_t)n, sizeof(char *))) == NULL) {
		cwm_strv_free(items, n);
		return MG_MQTT_ERR_NOMEM;
	}
	for (int i = 0; i < n; i++) {
		if ((rc = cwm_parse_url(s, prefix, items[i], &s->uris[i], err,
		                        errlen)) != 0) {
			cwm_strv_free(items, n);
			return rc;
		}
		s->nuris++;
		if (strncmp(s->uris[i], "ssl:", 4) == 0 ||
		    strncmp(s->uris[i], "wss:", 4) == 0)
			s->use_tls = 1;
	}
	cwm_strv_free(items, n);

	/* SUBSCRIBE: "filter[:qos], ..." */
	if (s->subscribe != NULL) {
		if ((rc = cwm_split_list(s->subscribe, &items, &n)) != 0)
			return rc;
		s->sub_filters = items;
		s->nsubs = n;
		if ((s->sub_qos = calloc((size_t)n + 1, sizeof(int))) == NULL)
			return MG_MQTT_ERR_NOMEM;
		for (int i = 0; i < n; i++) {
			/* A QoS is one digit after the last ':' ("time/12:30" is a
			 * filter); "a:3" is a QoS out of range, not a filter. */
			char *f = items[i], *colon = strrchr(f, ':'), *t = NULL;
			if (colon != NULL && (t = cwm_trimdup(colon + 1)) != NULL &&
			    strlen(t) == 1 && isdigit((unsigned char)t[0])) {
				long qv;
				int bad = cwm_parse_long(t, 0, 2, &qv) != 0;
				free(t);
				t = NULL;
				if (bad) {
					cwm_fmt(err, errlen,
					        "%s_SUBSCRIBE: '%s' asks for a QoS other than 0, 1 "
					        "or 2",
					        prefix, cwm_quote(f, q));
					return MG_MQTT_ERR_CONFIG;
				}
				s->sub_qos[i] = (int)qv;
				*colon = '\0';
				for (size_t l = strlen(f); l > 0 && isspace((unsigned char)f[l - 1]);)
					f[--l] = '\0';
			}
			free(t);
			if ((rc = cwm_filter_normalize_owned(&items[i])) ==
			    MG_MQTT_ERR_NOMEM)
				return rc;
			if (rc != 0) {
				cwm_fmt(err, errlen,
				        "%s_SUBSCRIBE: '%s' is not a topic filter "
				        "(filter[:qos], comma-separated; a level may be "
				        "\"{name}\")",
				        prefix, cwm_quote(f, q));
				return MG_MQTT_ERR_CONFIG;
			}
		}
	}
	return cwm_bridge_settings(s, prefix, err, errlen);
}

/* Reads every <prefix>_<KEY> of options into s. Names of other prefixes
 * that end in a known key ("<prefix>_X_BROKER_URL" belongs to the client
 * with prefix "<prefix>_X") are left alone. */
static int cwm_settings_read(struct cwm_settings *s, const char *prefix,
                             const char **options, char *err, size_t errlen)
{
	size_t plen = strlen(prefix);
	int rc;

	memset(s, 0, sizeof(*s));
	for (size_t i = 0; i < CWM_NKEYS; i++)
		if (cwm_keys[i].def != NULL &&
		    (rc = cwm_set_key(s, prefix, &cwm_keys[i], cwm_keys[i].def, err,
		                      errlen)) != 0)
			return rc;

	for (size_t i = 0; options != NULL && options[i] != NULL; i += 2) {
		const char *name = options[i], *value = options[i + 1];
		if (value == NULL) {
			cwm_fmt(err, errlen, "option '%s' has no value", name);
			return MG_MQTT_ERR_INVALID;
		}
		if (strncasecmp(name, prefix, plen) != 0 || name[plen] != '_')
			continue;
		const char *key = name + plen + 1;
		const struct cwm_key *k = cwm_key_find(key, strlen(key));
		if (k == NULL) {
			int other_prefix = 0;
			for (size_t j = 0; j < CWM_NKEYS && !other_prefix; j++) {
				size_t kl = strlen(key), jl = strlen(cwm_keys[j].name);
				other_prefix = kl > jl + 1 && key[kl - jl - 1] == '_' &&
				               strcasecmp(key + kl - jl, cwm_keys[j].name) == 0;
			}
			if (other_prefix)
				continue;
			char q[72], qv[72];
			/* A misspelt secret key must not echo the secret. */
			static const char *const secretish[] = {"PAS", "PW", "SECRET",
			                                        "TOKEN", "KEY", "CRED",
			                                        "AUTH"};
			int hide = 0;
			for (size_t j = 0; j < sizeof(secretish) / sizeof(*secretish); j++)
				hide |= strcasestr(key, secretish[j]) != NULL;
			cwm_fmt(err, errlen,
			        "%s: unknown option (value '%s'); see the README's "
			        "configuration reference",
			        cwm_quote(name, q), hide ? "***" : cwm_quote(value, qv));
			return MG_MQTT_ERR_CONFIG;
		}
		if ((rc = cwm_set_key(s, prefix, k, value, err, errlen)) != 0)
			return rc;
		s->set |= (uint64_t)1 << (k - cwm_keys);
	}
	return cwm_settings_finish(s, prefix, err, errlen);
}

/* The PROTOCOL_VERSION value as written in the configuration. */
static const char *cwm_protocol_name(int p)
{
	return p == 5 ? "5" : p == 3 ? "3.1" : "3.1.1";
}

/* Puts the settings as understood, secrets masked, into a JSON object. */
static void cwm_settings_json(const struct cwm_settings *s, cJSON *o)
{
	for (size_t i = 0; i < CWM_NKEYS; i++) {
		const struct cwm_key *k = &cwm_keys[i];
		const char *field = (const char *)s + k->off;
		char name[64];
		size_t j;
		for (j = 0; k->name[j] != '\0' && j + 1 < sizeof(name); j++)
			name[j] = (char)tolower((unsigned char)k->name[j]);
		name[j] = '\0';
		switch (k->type) {
		case K_SECRET: {
			const char *v = *(char *const *)(const void *)field;
			if (v != NULL)
				cJSON_AddStringToObject(o, name, "***");
			else
				cJSON_AddNullToObject(o, name);
			break;
		}
		case K_STR:
		case K_PATH:
		case K_TOPIC: {
			const char *v = *(char *const *)(const void *)field;
			if (v != NULL)
				cJSON_AddStringToObject(o, name, v);
			else
				cJSON_AddNullToObject(o, name);
			break;
		}
		case K_BOOL:
			cJSON_AddBoolToObject(o, name, *(const int *)(const void *)field);
			break;
		case K_INT:
			if (k->off == CWM_S(broker_port) && s->broker_port == 0)
				cJSON_AddNullToObject(o, name);
			else
				cJSON_AddNumberToObject(o, name,
				                        *(const int *)(const void *)field);
			break;
		case K_NUM:
			cJSON_AddNumberToObject(o, name,
			                        *(const double *)(const void *)field);
			break;
		case K_ENUM: {
			int v = *(const int *)(const void *)field;
			for (const struct cwm_enum *e = k->en; e->name != NULL; e++)
				if (e->value == v) {
					cJSON_AddStringToObject(o, name, e->name);
					break;
				}
			break;
		}
		}
	}
	if (s->password_file != NULL)
		cJSON_ReplaceItemInObject(o, "password", cJSON_CreateString("***"));
}

/* ========================================================================
 * 5. civetweb.conf files and the option split
 * ====================================================================== */

struct cwm_conf_store {
	char **kv;        /* name, value, ... (owned) */
	size_t n;         /* pairs in kv */
	char **prefixes;  /* owned, upper-case */
	size_t nprefixes;
	const char **lists; /* one block: options, civetweb, mqtt, other, prefixes */
};

static int cwm_conf_add(struct cwm_conf_store *st, const char *name,
                        size_t nl, const char *value, size_t vl)
{
	char *v = cwm_strndup(value, vl);
	if (v == NULL)
		return MG_MQTT_ERR_NOMEM;
	for (size_t i = 0; i < st->n; i++) {
		if (strlen(st->kv[2 * i]) == nl &&
		    strncasecmp(st->kv[2 * i], name, nl) == 0) {
			free(st->kv[2 * i + 1]);
			st->kv[2 * i + 1] = v;
			return 0;
		}
	}
	char *k = cwm_strndup(name, nl);
	char **kv = realloc(st->kv, sizeof(char *) * 2 * (st->n + 1));
	if (k == NULL || kv == NULL) {
		free(k);
		free(v);
		if (kv != NULL)
			st->kv = kv;
		return MG_MQTT_ERR_NOMEM;
	}
	st->kv = kv;
	kv[2 * st->n] = k;
	kv[2 * st->n + 1] = v;
	st->n++;
	return 0;
}

static void cwm_conf_store_free(struct cwm_conf_store *st)
{
	if (st == NULL)
		return;
	for (size_t i = 0; i < 2 * st->n; i++)
		free(st->kv[i]);
	free(st->kv);
	for (size_t i = 0; i < st->nprefixes; i++)
		free(st->prefixes[i]);
	free(st->prefixes);
	free(st->lists);
	free(st);
}

static int cwm_conf_read_file(struct cwm_conf_store *st, const char *path,
                              char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	char *line = NULL, q[320];
	size_t cap = 0;
	ssize_t len;
	int lineno = 0, rc = 0;

	if (f == NULL) {
		cwm_fmt(err, errlen, "cannot read '%s': %s", cwm_quote_path(path, q),
		        strerror(errno));
		return MG_MQTT_ERR_IO;
	}
	while ((len = getline(&line, &cap, f)) >= 0) {
		char *p = line;
		lineno++;
		if (lineno == 1 && (size_t)len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
			p += 3; /* UTF-8 byte order mark */
		size_t n = strlen(p);
		while (n > 0 && isspace((unsigned char)p[n - 1]))
			p[--n] = '\0';
		while (isspace((unsigned char)*p))
			p++;
		if (*p == '\0' || *p == '#')
			continue;
		size_t nl = strcspn(p, " \t");
		const char *v = p + nl;
		while (isspace((unsigned char)*v))
			v++;
		if (*v == '\0') {
			char qn[72];
			p[nl] = '\0';
			cwm_fmt(err, errlen, "%s:%d: '%s' has no value",
			        cwm_quote_path(path, q), lineno, cwm_quote(p, qn));
			rc = MG_MQTT_ERR_CONFIG;
			break;
		}
		if ((rc = cwm_conf_add(st, p, nl, v, strlen(v))) != 0)
			break;
	}
	free(line);
	fclose(f);
	return rc;
}

/* CivetWeb's spelling of name, or NULL when CivetWeb does not know it. */
static const char *cwm_civetweb_option(const char *name)
{
	const struct mg_option *o = mg_get_valid_options();
	for (; o != NULL && o->name != NULL; o++)
		if (strcasecmp(o->name, name) == 0)
			return o->name;
	return NULL;
}

/* The prefix defined by name ("MQTT2_BROKER_URL" -> "MQTT2"), as a length,
 * using the longest key it ends with; 0 when it ends in no key. */
static size_t cwm_prefix_of(const char *name)
{
	size_t nl = strlen(name), best = 0, bestk = 0;
	for (size_t i = 0; i < CWM_NKEYS; i++) {
		size_t kl = strlen(cwm_keys[i].name);
		if (nl > kl + 1 && name[nl - kl - 1] == '_' && kl > bestk &&
		    strcasecmp(name + nl - kl, cwm_keys[i].name) == 0) {
			best = nl - kl - 1;
			bestk = kl;
		}
	}
	for (size_t i = 0; i < best; i++)
		if (!(isalnum((unsigned char)name[i]) || name[i] == '_'))
			return 0;
	return best;
}

static int cwm_conf_split(struct cwm_conf_store *st, struct mg_mqtt_config *cfg)
{
	/* Pass 1: find the prefixes. */
	for (size_t i = 0; i < st->n; i++) {
		const char *name = st->kv[2 * i];
		size_t pl;
		if (cwm_civetweb_option(name) != NULL || (pl = cwm_prefix_of(name)) == 0)
			continue;
		size_t j;
		for (j = 0; j < st->nprefixes; j++)
			if (strlen(st->prefixes[j]) == pl &&
			    strncasecmp(st->prefixes[j], name, pl) == 0)
				break;
		if (j < st->nprefixes)
			continue;
		char **np = realloc(st->prefixes, sizeof(char *) * (st->nprefixes + 1));
		if (np == NULL)
			return MG_MQTT_ERR_NOMEM;
		st->prefixes = np;
		if ((np[st->nprefixes] = cwm_strndup(name, pl)) == NULL)
			return MG_MQTT_ERR_NOMEM;
		for (char *p = np[st->nprefixes]; *p; p++)
			*p = (char)toupper((unsigned char)*p);
		st->nprefixes++;
	}

	/* Pass 2: one block holding the five lists. */
	size_t slots = 4 * (2 * st->n + 1) + st->nprefixes + 1;
	if ((st->lists = calloc(slots, sizeof(char *))) == NULL)
		return MG_MQTT_ERR_NOMEM;
	const char **all = st->lists, **cw = all + 2 * st->n + 1,
	           **mq = cw + 2 * st->n + 1, **ot = mq + 2 * st->n + 1,
	           **px = ot + 2 * st->n + 1;
	size_t na = 0, nc = 0, nm = 0, no = 0;
	for (size_t i = 0; i < st->n; i++) {
		const char *name = st->kv[2 * i], *value = st->kv[2 * i + 1];
		const char *cwname = cwm_civetweb_option(name);
		all[na++] = name;
		all[na++] = value;
		if (cwname != NULL) {
			cw[nc++] = cwname;
			cw[nc++] = value;
			continue;
		}
		size_t best = 0;
		for (size_t j = 0; j < st->nprefixes; j++) {
			size_t pl = strlen(st->prefixes[j]);
			if (pl > best && strncasecmp(name, st->prefixes[j], pl) == 0 &&
			    name[pl] == '_')
				best = pl;
		}
		if (best > 0) {
			mq[nm++] = name;
			mq[nm++] = value;
		} else {
			ot[no++] = name;
			ot[no++] = value;
		}
	}
	for (size_t j = 0; j < st->nprefixes; j++)
		px[j] = st->prefixes[j];
	cfg->options = all;
	cfg->civetweb = cw;
	cfg->mqtt = mq;
	cfg->other = ot;
	cfg->prefixes = px;
	return 0;
}

int mg_mqtt_config_read(struct mg_mqtt_config *cfg, const char *path,
                        const char **overrides, char *errbuf, size_t errlen)
{
	struct cwm_conf_store *st;
	int rc = 0;

	if (errbuf != NULL && errlen > 0)
		errbuf[0] = '\0';
	if (cfg == NULL)
		return MG_MQTT_ERR_INVALID;
	memset(cfg, 0, sizeof(*cfg));
	if ((st = calloc(1, sizeof(*st))) == NULL)
		return MG_MQTT_ERR_NOMEM;
	if (path != NULL)
		rc = cwm_conf_read_file(st, path, errbuf, errlen);
	for (size_t i = 0; rc == 0 && overrides != NULL && overrides[i] != NULL;
	     i += 2) {
		if (overrides[i + 1] == NULL) {
			char q[72];
			cwm_fmt(errbuf, errlen, "option '%s' has no value",
			        cwm_quote(overrides[i], q));
			rc = MG_MQTT_ERR_CONFIG;
			break;
		}
		rc = cwm_conf_add(st, overrides[i], strlen(overrides[i]),
		                  overrides[i + 1], strlen(overrides[i + 1]));
	}
	if (rc == 0)
		rc = cwm_conf_split(st, cfg);
	if (rc != 0) {
		if (rc == MG_MQTT_ERR_NOMEM)
			cwm_fmt(errbuf, errlen, "out of memory");
		cwm_conf_store_free(st);
		memset(cfg, 0, sizeof(*cfg));
		return rc;
	}
	cfg->priv_ = st;
	return 0;
}

void mg_mqtt_config_free(struct mg_mqtt_config *cfg)
{
	if (cfg == NULL)
		return;
	cwm_conf_store_free(cfg->priv_);
	memset(cfg, 0, sizeof(*cfg));
}

/* ========================================================================
 * 6. Handler tree: topic filters by level, so that matching a topic costs
 *    O(levels x matching branches), not O(handlers).
 * ====================================================================== */

struct cwm_handler {
	struct cwm_handler *next; /* next handler at the same node */
	mg_mqtt_message_handler fn;
	void *ud;
	unsigned seq;             /* registration order */
	struct mg_mqtt_params *params; /* its filter's {names}; NULL: none */
};

static void cwm_handler_free(struct cwm_handler *h)
{
	if (h != NULL) {
		free(h->params);
		free(h);
	}
}

struct cwm_tnode {
	struct cwm_map kids;      /* level -> struct cwm_tnode * */
	struct cwm_tnode *plus;   /* "+" child */
	struct cwm_tnode *hash;   /* "#" child */
	struct cwm_handler *handlers, *last;
};

struct cwm_vec {
	void **v;
	size_t n, cap;
};

static int cwm_vec_push(struct cwm_vec *v, void *p)
{
	if (v->n == v->cap) {
		size_t cap = v->cap == 0 ? 16 : v->cap * 2;
		void **nv = realloc(v->v, cap * sizeof(void *));
		if (nv == NULL)
			return -1;
		v->v = nv;
		v->cap = cap;
	}
	v->v[v->n++] = p;
	return 0;
}

static void cwm_tnode_free(void *p)
{
	struct cwm_tnode *t = p;
	if (t == NULL)
		return;
	cwm_map_free(&t->kids, cwm_tnode_free);
	cwm_tnode_free(t->plus);
	cwm_tnode_free(t->hash);
	for (struct cwm_handler *h = t->handlers, *next; h != NULL; h = next) {
		next = h->next;
		cwm_handler_free(h);
	}
	free(t);
}

/* Adds h under the valid filter f. Returns 0 or MG_MQTT_ERR_NOMEM (the tree
 * may keep empty nodes then, which match nothing). */
static int cwm_tree_add(struct cwm_tnode *root, const char *f,
                        struct cwm_handler *h)
{
	struct cwm_tnode *t = root;
	f += cwm_share_len(f, strlen(f));
	for (;;) {
		size_t l = strcspn(f, "/");
		struct cwm_tnode **slot = NULL, *kid;
		if (l == 1 && f[0] == '+')
			slot = &t->plus;
		else if (l == 1 && f[0] == '#')
			slot = &t->hash;
		kid = slot != NULL ? *slot : cwm_map_get(&t->kids, f, l);
		if (kid == NULL) {
			if ((kid = calloc(1, sizeof(*kid))) == NULL)
				return MG_MQTT_ERR_NOMEM;
			if (slot != NULL) {
				*slot = kid;
			} else if (cwm_map_put(&t->kids, f, l, kid) != 0) {
				free(kid);
				return MG_MQTT_ERR_NOMEM;
			}
		}
		t = kid;
		if (f[l] == '\0')
			break;
		f += l + 1;
	}
	if (t->last != NULL)
		t->last->next = h;
	else
		t->handlers = h;
	t->last = h;
	return 0;
}

static int cwm_tnode_empty(const struct cwm_tnode *t)
{
	return t->kids.n == 0 && t->plus == NULL && t->hash == NULL &&
	       t->handlers == NULL;
}

/* Removes the handler with user data ud under filter f (the rest of it,
 * NULL at its end) below node t, freeing nodes left empty. Returns 1 when
 * t itself is empty now. */
static int cwm_tree_remove_at(struct cwm_tnode *t, const char *f, void *ud)
{
	if (f == NULL) {
		struct cwm_handler **pp = &t->handlers, *prev = NULL;
		for (; *pp != NULL; prev = *pp, pp = &(*pp)->next)
			if ((*pp)->ud == ud) {
				struct cwm_handler *h = *pp;
				*pp = h->next;
				if (t->last == h)
					t->last = prev;
				cwm_handler_free(h);
				break;
			}
		return cwm_tnode_empty(t);
	}
	size_t l = strcspn(f, "/");
	const char *rest = f[l] != '\0' ? f + l + 1 : NULL;
	struct cwm_tnode **slot = NULL, *kid;
	if (l == 1 && f[0] == '+')
		slot = &t->plus;
	else if (l == 1 && f[0] == '#')
		slot = &t->hash;
	kid = slot != NULL ? *slot : cwm_map_get(&t->kids, f, l);
	if (kid != NULL && cwm_tree_remove_at(kid, rest, ud)) {
		if (slot != NULL)
			*slot = NULL;
		else
			cwm_map_del(&t->kids, f, l);
		cwm_tnode_free(kid);
	}
	return cwm_tnode_empty(t);
}

/* The bridge's subscriptions come and go: removal prunes the tree. */
static void cwm_tree_remove(struct cwm_tnode *root, const char *f, void *ud)
{
	cwm_tree_remove_at(root, f + cwm_share_len(f, strlen(f)), ud);
}

static int cwm_push_handlers(struct cwm_vec *out, const struct cwm_tnode *t)
{
	for (struct cwm_handler *h = t->handlers; h != NULL; h = h->next)
		if (cwm_vec_push(out, h) != 0)
			return -1;
	return 0;
}

/* Collects into out the handlers whose filter matches topic t (n bytes),
 * in registration order. cur and nxt are scratch vectors. */
static int cwm_tree_match(const struct cwm_tnode *root, const char *t, size_t n,
                          struct cwm_vec *cur, struct cwm_vec *nxt,
                          struct cwm_vec *out)
{
	const char *end = t + n;
	int dollar = n > 0 && t[0] == '$';
	out->n = cur->n = 0;
	if (cwm_vec_push(cur, (void *)root) != 0)
		return -1;
	for (int depth = 0; cur->n > 0; depth++) {
		const char *e = memchr(t, '/', (size_t)(end - t));
		size_t l = e != NULL ? (size_t)(e - t) : (size_t)(end - t);
		int wild = !(depth == 0 && dollar);
		nxt->n = 0;
		for (size_t i = 0; i < cur->n; i++) {
			const struct cwm_tnode *node = cur->v[i], *kid;
			if (node->hash != NULL && wild &&
			    cwm_push_handlers(out, node->hash) != 0)
				return -1;
			if ((kid = cwm_map_get(&node->kids, t, l)) != NULL &&
			    cwm_vec_push(nxt, (void *)kid) != 0)
				return -1;
			if (node->plus != NULL && wild &&
			    cwm_vec_push(nxt, node->plus) != 0)
				return -1;
		}
		struct cwm_vec tmp = *cur;
		*cur = *nxt;
		*nxt = tmp;
		if (e == NULL)
			break;
		t = e + 1;
	}
	for (size_t i = 0; i < cur->n; i++) {
		const struct cwm_tnode *node = cur->v[i];
		if (cwm_push_handlers(out, node) != 0 ||
		    (node->hash != NULL && cwm_push_handlers(out, node->hash) != 0))
			return -1;
	}
	/* Registration order; few matches, so insertion sort. */
	for (size_t i = 1; i < out->n; i++) {
		void *h = out->v[i];
		size_t j = i;
		for (; j > 0 && ((struct cwm_handler *)out->v[j - 1])->seq >
		                    ((struct cwm_handler *)h)->seq;
		     j--)
			out->v[j] = out->v[j - 1];
		out->v[j] = h;
	}
	return 0;
}

/* ========================================================================
 * 7. Client state
 * ====================================================================== */

enum cwm_state { CWM_IDLE, CWM_DISCONNECTED, CWM_CONNECTING, CWM_CONNECTED };
enum cwm_cmd { CMD_PUBLISH, CMD_SUBSCRIBE, CMD_UNSUBSCRIBE };

/* A command for mqtt-io: one allocation with its strings and payload. */
struct cwm_out {
	struct cwm_out *next;         /* in outq or retry */
	struct cwm_out *iprev, *inext; /* in c->inpaho */
	int in_paho;
	struct mg_mqtt *c;            /* paho callback context */
	enum cwm_cmd type;
	int id;
	int qos, retain;
	int internal;                 /* renew or birth: no user handler */
	int restored;                 /* read back from PERSISTENCE_DIR */
	int noop;                     /* done at once, nothing sent */
	int appendable;               /* a SUBSCRIBE later calls may join */
	int sent;                     /* publish: paho took it on this
	                                 connection */
	int losses;                   /* publish: connections lost while it
	                                 was in flight (see CWM_MAX_LOSSES) */
	uint64_t lost_on;             /* c->connects when last counted */
	uint64_t pseq;                /* its file in PERSISTENCE_DIR; 0: none */
	char *topic;                  /* publish */
	void *payload;
	size_t len;
	struct mg_mqtt_props *props;  /* publish, MQTT 5; NULL: none */
	int nfilters, cap;            /* subscribe / unsubscribe */
	char **filters;               /* as the user wrote them */
	char **wire;                  /* as sent ($share/<group>/...) */
	int *qos_list;
	int *ids;                     /* SUBSCRIBE: the id to acknowledge a
	                                 filter under; 0: nobody's (renewal,
	                                 bridge) */
	unsigned char *flags;         /* CMD_COUNTED, CMD_BORROWED a filter */
};

/* cwm_out.flags: the filter is counted in its cwm_sub.pending; its string
 * is the subs map's copy of the key, not the command's own. */
enum { CMD_COUNTED = 1, CMD_BORROWED = 2 };

/* A remembered subscription. */
struct cwm_sub {
	struct cwm_sub *prev, *next; /* in subscription order */
	const char *filter;          /* the subs map's copy of its key */
	int qos, granted;
	int pending; /* SUBSCRIBEs for it queued and not done: renewal skips it */
	int app;     /* subscribed through the API or SUBSCRIBE */
	int brefs;   /* holders besides the app: bridge clients, and sys */
	int sys;     /* 1: mg_mqtt_request's reply filter (counted in brefs) */
	int gone;    /* forgotten; kept while commands borrow its filter */
};

enum cwm_evtype {
	EV_MESSAGE,
	EV_CONNECT,
	EV_DISCONNECT,
	EV_PUBACK,
	EV_SUBACK,
	EV_UNSUBACK,
	EV_LOG
};

/* An event for mqtt-dispatch. Strings and codes live in data[]. */
struct cwm_event {
	struct cwm_event *next;
	enum cwm_evtype type;
	union {
		struct {
			MQTTAsync_message *m;
			char *topic;
			size_t topic_len;
		} msg;
		struct mg_mqtt_connect_info conn;
		struct mg_mqtt_disconnect_info disc;
		struct {
			int id, result, count;
			int *codes;
		} ack;
		struct {
			int level;
			char *text;
		} log;
	} u;
	char data[];
};

struct cwm_req;

struct mg_mqtt {
	char prefix[64];
	pthread_mutex_t req_lock; /* the requests below; from create to free */

	/* Handlers: written before start, read-only afterwards. */
	struct cwm_tnode tree;
	unsigned nhandlers;
	mg_mqtt_message_handler on_message;
	void *on_message_ud;
	mg_mqtt_connect_handler on_connect;
	void *on_connect_ud;
	mg_mqtt_disconnect_handler on_disconnect;
	void *on_disconnect_ud;
	mg_mqtt_publish_handler on_publish;
	void *on_publish_ud;
	mg_mqtt_ack_handler on_subscribe;
	void *on_subscribe_ud;
	mg_mqtt_ack_handler on_unsubscribe;
	void *on_unsubscribe_ud;
	mg_mqtt_log_handler on_log;
	void *on_log_ud;

	/* Set by start, read-only while the client runs. */
	struct cwm_settings cfg;
	char *client_id;
	struct mg_context *ctx;
	char *error_log_file;     /* CivetWeb's error_log_file, or NULL */
	char *pdir;               /* PERSISTENCE_DIR/<client id>, or NULL */
	struct cwm_bridge *bridge; /* BRIDGE_PATH set; lives from start to stop */
	atomic_uint_fast64_t pseq_next; /* next message file number */
	MQTTAsync paho;
	int v5;
	pthread_t io_thread, dispatch_thread;
	int io_started, dispatch_started;
	atomic_int ops_ok;        /* operations accepted (threads exist) */
	atomic_int connected;
	int uri_try;              /* [L] the BROKER_URL entry of this attempt */
	atomic_uint max_packet;   /* the broker's Maximum Packet Size (MQTT 5
	                             CONNACK); 0: not announced */
	atomic_int registered;    /* mg_mqtt_get() may return it */

	pthread_mutex_t lock;
	pthread_cond_t io_cond;    /* wakes mqtt-io */
	pthread_cond_t ev_cond;    /* wakes mqtt-dispatch */
	pthread_cond_t state_cond; /* start and stop wait on it */
	pthread_cond_t space_cond; /* paho's thread waits for room in evq */

	/* [L] State and queues. */
	int stopping, dispatch_exit, disc_done;
	enum cwm_state state;
	int attempt;              /* connect attempts since the last success */
	int64_t reconnect_at;     /* cwm_now_ms() of the next attempt */
	int64_t stop_deadline;
	int backoff_s;
	int first_result;         /* 0 pending; 1 connected; < 0 error */
	char first_msg[1024];
	int tls_error;            /* a TLS error was logged this attempt */
	int send_blocked;         /* paho said "disconnected": wait for connect */
	int renew_needed, birth_needed;
	int server_reason;        /* MQTT 5 DISCONNECT reason from the broker */
	char *broker;             /* URI of the current or last connection */
	int window;               /* QoS 1/2 messages paho may hold */
	int inflight, inflight0;  /* QoS 1/2 and QoS 0 messages in paho */
	int unfinished;           /* publishes accepted and not done */
	struct cwm_out *outq, *outq_tail, *retry, *retry_tail, *inpaho;
	struct cwm_event *evq, *evq_tail;
	int ev_msgs;              /* messages queued or being dispatched */
	int io_waiting, dispatch_waiting, space_waiting;
	struct cwm_map subs;      /* filter -> struct cwm_sub */
	struct cwm_sub *sub_head, *sub_tail;
	int next_id;
	unsigned seed;
	uint64_t published, publish_failed, received, dropped_queue_full;
	uint64_t reconnects, connects;
	uint64_t drops_unlogged;
	int64_t last_drop_log;

	/* mqtt-dispatch only: scratch for matching. */
	struct cwm_vec cur, nxt, hits;

	/* Requests (mg_mqtt_request). reply_base is set by start, before paho
	 * exists; the rest is under req_lock. */
	char *reply_base;         /* "<client id>/reply/"; NULL: not a topic */
	size_t reply_base_len;
	struct cwm_req *reqs;     /* waiting for their reply */
	uint64_t req_seq;
	uint32_t req_nonce;       /* tells this run's ids from an earlier one's */
	int req_stopping;
	int req_active;           /* callers inside mg_mqtt_request() */
	atomic_int reply_held;    /* the reply filter is subscribed */
	atomic_uint_fast64_t req_replied, req_timeouts, req_failed, req_late;
};

static const struct mg_mqtt_props cwm_no_props;
struct cwm_bridge;
static void cwm_bridge_deliver(struct cwm_bridge *b,
                               const struct mg_mqtt_message *m);
static void cwm_bridge_state(struct cwm_bridge *b, int connected,
                             const char *broker);

/* The started clients, for mg_mqtt_get(). */
struct cwm_reg {
	const struct mg_context *ctx;
	struct mg_mqtt *c;
};
static pthread_mutex_t cwm_registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cwm_reg *cwm_registry;
static size_t cwm_nregistry;

/* [L] The next command id: positive, wrapping before INT_MAX. */
static int cwm_next_id(struct mg_mqtt *c)
{
	int id = c->next_id;
	c->next_id = id == INT_MAX ? 1 : id + 1;
	return id;
}

/* [L] Appends an event and wakes mqtt-dispatch. */
static void cwm_push_event(struct mg_mqtt *c, struct cwm_event *ev)
{
	ev->next = NULL;
	if (c->evq_tail != NULL)
		c->evq_tail->next = ev;
	else
		c->evq = ev;
	c->evq_tail = ev;
	if (c->dispatch_waiting == CWM_IDLE_WAIT)
		pthread_cond_signal(&c->ev_cond);
}

static struct cwm_event *cwm_event_new(enum cwm_evtype type, size_t extra)
{
	struct cwm_event *ev = calloc(1, sizeof(*ev) + extra);
	if (ev != NULL)
		ev->type = type;
	return ev;
}

/* Copies s into ev->data at *used; returns the copy. */
static char *cwm_event_str(struct cwm_event *ev, size_t *used, const char *s)
{
	size_t n = strlen(s);
	char *p = ev->data + *used;
	memcpy(p, s, n + 1);
	*used += n + 1;
	return p;
}

/* ========================================================================
 * 8. Logging
 * ====================================================================== */

static const char *const cwm_level_names[] = {"error", "warning", "info",
                                              "debug"};
static pthread_mutex_t cwm_logfile_lock = PTHREAD_MUTEX_INITIALIZER;

static void cwm_log_sink(const struct mg_mqtt *c, FILE *to, int level,
                         const char *line)
{
	char ts[32];
	time_t now = time(NULL);
	struct tm tm;
	localtime_r(&now, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
	fprintf(to, "[%s] [%s] [%s] %s\n", ts, cwm_level_names[level & 3],
	        c->prefix, line);
}

/* Writes one line to the sinks. locked: the caller holds c->lock.
 * quiet_stderr: the caller reports the text itself (start-up errors). */
static void cwm_vlog(struct mg_mqtt *c, int locked, int quiet_stderr,
                     int level, const char *fmt, va_list ap)
{
	char line[768];
	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\r\n")] = '\0';

	if (c->error_log_file != NULL) {
		pthread_mutex_lock(&cwm_logfile_lock);
		FILE *f = fopen(c->error_log_file, "a");
		if (f != NULL) {
			cwm_log_sink(c, f, level, line);
			fclose(f);
		}
		pthread_mutex_unlock(&cwm_logfile_lock);
	}
	if (c->on_log == NULL) {
		if (c->error_log_file == NULL && !quiet_stderr)
			cwm_log_sink(c, stderr, level, line);
		return;
	}
	if (!c->dispatch_started) {
		c->on_log(c, level, line, c->on_log_ud); /* start-up: caller thread */
		return;
	}
	struct cwm_event *ev = cwm_event_new(EV_LOG, strlen(line) + 1);
	if (ev == NULL)
		return;
	size_t used = 0;
	ev->u.log.level = level;
	ev->u.log.text = cwm_event_str(ev, &used, line);
	if (!locked)
		pthread_mutex_lock(&c->lock);
	cwm_push_event(c, ev);
	if (!locked)
		pthread_mutex_unlock(&c->lock);
}

static void cwm_log(struct mg_mqtt *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void cwm_log(struct mg_mqtt *c, int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cwm_vlog(c, 0, 0, level, fmt, ap);
	va_end(ap);
}

/* A start-up error: to the log handler and CivetWeb's error log, not to
 * stderr, because mg_mqtt_start() hands the same sentence to its caller. */
static void cwm_log_quiet(struct mg_mqtt *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void cwm_log_quiet(struct mg_mqtt *c, int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cwm_vlog(c, 0, 1, level, fmt, ap);
	va_end(ap);
}

/* The same, for callers that hold c->lock. */
static void cwm_log_locked(struct mg_mqtt *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void cwm_log_locked(struct mg_mqtt *c, int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	cwm_vlog(c, 1, 0, level, fmt, ap);
	va_end(ap);
}

/* ========================================================================
 * 9. Commands and mqtt-io
 * ====================================================================== */

static void cwm_out_free(struct cwm_out *r)
{
	if (r == NULL)
		return;
	for (int i = 0; i < r->nfilters; i++) {
		if (r->wire[i] != r->filters[i])
			free(r->wire[i]);
		if (!(r->flags[i] & CMD_BORROWED))
			free(r->filters[i]);
	}
	free(r->filters);
	free(r->wire);
	free(r->qos_list);
	free(r->ids);
	free(r->flags);
	free(r->props);
	free(r);
}

/* [L] Appends r to a FIFO. */
static void cwm_fifo_push(struct cwm_out **head, struct cwm_out **tail,
                          struct cwm_out *r)
{
	r->next = NULL;
	if (*tail != NULL)
		(*tail)->next = r;
	else
		*head = r;
	*tail = r;
}

/* [L] Puts a command paho gave back into retry, keeping id order so that
 * messages go out again in the order they were published. */
static void cwm_retry_insert(struct mg_mqtt *c, struct cwm_out *r)
{
	struct cwm_out **pp = &c->retry, *prev = NULL;
	if (c->retry_tail != NULL && c->retry_tail->id < r->id) {
		cwm_fifo_push(&c->retry, &c->retry_tail, r);
		return;
	}
	while (*pp != NULL && (*pp)->id < r->id) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	r->next = *pp;
	*pp = r;
	if (r->next == NULL)
		c->retry_tail = r;
	(void)prev;
}

static void cwm_inpaho_link(struct mg_mqtt *c, struct cwm_out *r)
{
	r->iprev = NULL;
	r->inext = c->inpaho;
	if (c->inpaho != NULL)
		c->inpaho->iprev = r;
	c->inpaho = r;
	r->in_paho = 1;
}

static void cwm_inpaho_unlink(struct mg_mqtt *c, struct cwm_out *r)
{
	if (!r->in_paho)
		return;
	if (r->iprev != NULL)
		r->iprev->inext = r->inext;
	else
		c->inpaho = r->inext;
	if (r->inext != NULL)
		r->inext->iprev = r->iprev;
	r->in_paho = 0;
}

/* An empty subscribe/unsubscribe command; filters join with cwm_cmd_add. */
static struct cwm_out *cwm_cmd_new(struct mg_mqtt *c, enum cwm_cmd type)
{
	struct cwm_out *r = calloc(1, sizeof(*r));
	if (r != NULL) {
		r->c = c;
		r->type = type;
	}
	return r;
}

/* Adds a filter to a subscribe/unsubscribe command. id: the caller's id
 * for its own acknowledgement (0: none); counted: cwm_sub.pending counts
 * it, and then filter is the subs map's key, which the command borrows
 * (cwm_sub_forget gives it a copy first). Returns 0, or -1 when out of
 * memory (r unchanged). */
static int cwm_cmd_add(struct mg_mqtt *c, struct cwm_out *r, const char *filter,
                       int qos, int id, int counted)
{
	const char *g = c->cfg.shared_group;
	if (r->nfilters == r->cap) {
		int cap = r->cap == 0 ? 1 : r->cap * 2;
		if (r->appendable && cap > CWM_RENEW_CHUNK)
			cap = CWM_RENEW_CHUNK;
		char **f = realloc(r->filters, sizeof(char *) * (size_t)cap);
		if (f != NULL)
			r->filters = f;
		char **w = f != NULL ? realloc(r->wire, sizeof(char *) * (size_t)cap)
		                     : NULL;
		if (w != NULL)
			r->wire = w;
		int *q = w != NULL ? realloc(r->qos_list, sizeof(int) * (size_t)cap)
		                   : NULL;
		if (q != NULL)
			r->qos_list = q;
		int *i = q != NULL ? realloc(r->ids, sizeof(int) * (size_t)cap) : NULL;
		if (i != NULL)
			r->ids = i;
		unsigned char *k = i != NULL ? realloc(r->flags, (size_t)cap) : NULL;
		if (k == NULL)
			return -1;
		r->flags = k;
		r->cap = cap;
	}
	size_t fl = strlen(filter);
	char *copy = counted ? (char *)filter : cwm_strndup(filter, fl);
	char *wire = copy;
	if (copy != NULL && g != NULL && cwm_share_len(filter, fl) == 0) {
		size_t wl = strlen(g) + fl + 9;
		if ((wire = malloc(wl)) != NULL)
			snprintf(wire, wl, "$share/%s/%s", g, filter);
	}
	if (copy == NULL || wire == NULL) {
		if (!counted)
			free(copy);
		return -1;
	}
	int n = r->nfilters++;
	r->filters[n] = copy;
	r->wire[n] = wire;
	r->qos_list[n] = qos;
	r->ids[n] = id;
	r->flags[n] = counted ? CMD_COUNTED | CMD_BORROWED : 0;
	return 0;
}

static void cwm_out_free(struct cwm_out *r);

/* A subscribe/unsubscribe command for filters[0..n) (qos may be NULL),
 * acknowledged to nobody per filter. */
static struct cwm_out *cwm_cmd_filters(struct mg_mqtt *c, enum cwm_cmd type,
                                       const char *const *filters,
                                       const int *qos, int n)
{
	struct cwm_out *r = cwm_cmd_new(c, type);
	if (r != NULL && n > 1) {
		/* Room for n at once: renewal and unsubscribe_all send many. */
		r->filters = malloc(sizeof(char *) * (size_t)n);
		r->wire = malloc(sizeof(char *) * (size_t)n);
		r->qos_list = malloc(sizeof(int) * (size_t)n);
		r->ids = malloc(sizeof(int) * (size_t)n);
		r->flags = malloc((size_t)n);
		if (r->filters == NULL || r->wire == NULL || r->qos_list == NULL ||
		    r->ids == NULL || r->flags == NULL) {
			cwm_out_free(r);
			return NULL;
		}
		r->cap = n;
	}
	for (int i = 0; r != NULL && i < n; i++)
		if (cwm_cmd_add(c, r, filters[i], qos != NULL ? qos[i] : 0, 0, 0) != 0) {
			cwm_out_free(r);
			r = NULL;
		}
	return r;
}

/* Deep copy of MQTT 5 properties into one block; NULL for none. */
static int cwm_props_dup(const struct mg_mqtt_props *p,
                         struct mg_mqtt_props **out)
{
	*out = NULL;
	if (p == NULL ||
	    (p->user_count == 0 && p->message_expiry == 0 &&
	     p->response_topic == NULL && p->correlation_data == NULL &&
	     p->content_type == NULL && !p->payload_utf8))
		return 0;
	size_t size = sizeof(*p) + p->user_count * sizeof(*p->user) +
	              p->correlation_len;
	for (size_t i = 0; i < p->user_count; i++)
		size += strlen(p->user[i].name) + strlen(p->user[i].value) + 2;
	if (p->response_topic != NULL)
		size += strlen(p->response_topic) + 1;
	if (p->content_type != NULL)
		size += strlen(p->content_type) + 1;
	struct mg_mqtt_props *d = malloc(size);
	if (d == NULL)
		return MG_MQTT_ERR_NOMEM;
	*d = *p;
	struct mg_mqtt_user_property *u = (void *)(d + 1);
	char *s = (char *)(u + p->user_count);
	for (size_t i = 0; i < p->user_count; i++) {
		u[i].name = strcpy(s, p->user[i].name);
		s += strlen(s) + 1;
		u[i].value = strcpy(s, p->user[i].value);
		s += strlen(s) + 1;
	}
	d->user = p->user_count > 0 ? u : NULL;
	if (p->response_topic != NULL) {
		d->response_topic = strcpy(s, p->response_topic);
		s += strlen(s) + 1;
	}
	if (p->content_type != NULL) {
		d->content_type = strcpy(s, p->content_type);
		s += strlen(s) + 1;
	}
	if (p->correlation_data != NULL) {
		d->correlation_data = memcpy(s, p->correlation_data,
		                             p->correlation_len);
	}
	*out = d;
	return 0;
}

static int cwm_props_check(const struct mg_mqtt_props *p, size_t *bytes)
{
	*bytes = 0;
	if (p == NULL)
		return 0;
	if (p->user_count > 0 && p->user == NULL)
		return MG_MQTT_ERR_INVALID;
	if (p->correlation_len > 0 && p->correlation_data == NULL)
		return MG_MQTT_ERR_INVALID;
	if (p->correlation_len > 65535)
		return MG_MQTT_ERR_TOO_LARGE;
	for (size_t i = 0; i < p->user_count; i++) {
		const char *n = p->user[i].name, *v = p->user[i].value;
		if (n == NULL || v == NULL)
			return MG_MQTT_ERR_INVALID;
		size_t nl = strlen(n), vl = strlen(v);
		if (nl > 65535 || vl > 65535)
			return MG_MQTT_ERR_TOO_LARGE;
		if (!cwm_utf8_valid(n, nl) || !cwm_utf8_valid(v, vl))
			return MG_MQTT_ERR_INVALID;
		*bytes += nl + vl + 5;
	}
	if (p->response_topic != NULL) {
		if (mg_mqtt_topic_valid(p->response_topic) != 0)
			return MG_MQTT_ERR_TOPIC;
		*bytes += strlen(p->response_topic) + 3;
	}
	if (p->content_type != NULL) {
		size_t n = strlen(p->content_type);
		if (n > 65535)
			return MG_MQTT_ERR_TOO_LARGE;
		if (!cwm_utf8_valid(p->content_type, n))
			return MG_MQTT_ERR_INVALID;
		*bytes += n + 3;
	}
	*bytes += p->correlation_len + 3 + 5 + 2;
	return 0;
}

/* Builds paho properties from ours (paho copies string data). */
static void cwm_props_to_paho(const struct mg_mqtt_props *p, MQTTProperties *o)
{
	MQTTProperty pr;
	for (size_t i = 0; i < p->user_count; i++) {
		memset(&pr, 0, sizeof(pr));
		pr.identifier = MQTTPROPERTY_CODE_USER_PROPERTY;
		pr.value.data.data = (char *)p->user[i].name;
		pr.value.data.len = (int)strlen(p->user[i].name);
		pr.value.value.data = (char *)p->user[i].value;
		pr.value.value.len = (int)strlen(p->user[i].value);
		MQTTProperties_add(o, &pr);
	}
	if (p->message_expiry != 0) {
		memset(&pr, 0, sizeof(pr));
		pr.identifier = MQTTPROPERTY_CODE_MESSAGE_EXPIRY_INTERVAL;
		pr.value.integer4 = p->message_expiry;
		MQTTProperties_add(o, &pr);
	}
	if (p->response_topic != NULL) {
		memset(&pr, 0, sizeof(pr));
		pr.identifier = MQTTPROPERTY_CODE_RESPONSE_TOPIC;
		pr.value.data.data = (char *)p->response_topic;
		pr.value.data.len = (int)strlen(p->response_topic);
		MQTTProperties_add(o, &pr);
	}
	if (p->correlation_data != NULL) {
		memset(&pr, 0, sizeof(pr));
		pr.identifier = MQTTPROPERTY_CODE_CORRELATION_DATA;
		pr.value.data.data = (char *)p->correlation_data;
		pr.value.data.len = (int)p->correlation_len;
		MQTTProperties_add(o, &pr);
	}
	if (p->content_type != NULL) {
		memset(&pr, 0, sizeof(pr));
		pr.identifier = MQTTPROPERTY_CODE_CONTENT_TYPE;
		pr.value.data.data = (char *)p->content_type;
		pr.value.data.len = (int)strlen(p->content_type);
		MQTTProperties_add(o, &pr);
	}
	if (p->payload_utf8) {
		memset(&pr, 0, sizeof(pr));
		pr.identifier = MQTTPROPERTY_CODE_PAYLOAD_FORMAT_INDICATOR;
		pr.value.byte = 1;
		MQTTProperties_add(o, &pr);
	}
}

/* Our view of received paho properties, in one malloc()ed block returned
 * through *mem (NULL when there are none). */
static void cwm_props_from_paho(MQTTProperties *pp, struct mg_mqtt_props *p,
                                void **mem)
{
	size_t nuser = 0, size = 0;
	*mem = NULL;
	memset(p, 0, sizeof(*p));
	for (int i = 0; i < pp->count; i++) {
		const MQTTProperty *pr = &pp->array[i];
		switch (pr->identifier) {
		case MQTTPROPERTY_CODE_USER_PROPERTY:
			nuser++;
			size += (size_t)pr->value.data.len + (size_t)pr->value.value.len + 2;
			break;
		case MQTTPROPERTY_CODE_RESPONSE_TOPIC:
		case MQTTPROPERTY_CODE_CONTENT_TYPE:
		case MQTTPROPERTY_CODE_CORRELATION_DATA:
			size += (size_t)pr->value.data.len + 1;
			break;
		default:
			break;
		}
	}
	size += nuser * sizeof(struct mg_mqtt_user_property);
	char *block = size > 0 ? malloc(size) : NULL;
	if (size > 0 && block == NULL)
		return;
	struct mg_mqtt_user_property *u = (void *)block;
	char *s = block + nuser * sizeof(*u);
	size_t ui = 0;
	for (int i = 0; i < pp->count; i++) {
		const MQTTProperty *pr = &pp->array[i];
		const MQTTLenString *d = &pr->value.data;
		switch (pr->identifier) {
		case MQTTPROPERTY_CODE_USER_PROPERTY:
			u[ui].name = memcpy(s, d->data, (size_t)d->len);
			s[d->len] = '\0';
			s += d->len + 1;
			u[ui].value = memcpy(s, pr->value.value.data,
			                     (size_t)pr->value.value.len);
			s[pr->value.value.len] = '\0';
			s += pr->value.value.len + 1;
			ui++;
			break;
		case MQTTPROPERTY_CODE_RESPONSE_TOPIC:
		case MQTTPROPERTY_CODE_CONTENT_TYPE:
		case MQTTPROPERTY_CODE_CORRELATION_DATA:
			memcpy(s, d->data, (size_t)d->len);
			s[d->len] = '\0';
			if (pr->identifier == MQTTPROPERTY_CODE_RESPONSE_TOPIC)
				p->response_topic = s;
			else if (pr->identifier == MQTTPROPERTY_CODE_CONTENT_TYPE)
				p->content_type = s;
			else {
				p->correlation_data = s;
				p->correlation_len = (size_t)d->len;
			}
			s += d->len + 1;
			break;
		case MQTTPROPERTY_CODE_MESSAGE_EXPIRY_INTERVAL:
			p->message_expiry = pr->value.integer4;
			break;
		case MQTTPROPERTY_CODE_PAYLOAD_FORMAT_INDICATOR:
			p->payload_utf8 = pr->value.byte == 1;
			break;
		default:
			break;
		}
	}
	p->user = nuser > 0 ? u : NULL;
	p->user_count = nuser;
	*mem = block;
}

/* ---- PERSISTENCE_DIR ---------------------------------------------------
 * Each accepted QoS 1/2 message is written to <dir>/<client id>/<n>.msg
 * (written to a temporary name, then renamed, so a crash never leaves half
 * a file) before publish() returns, and removed once the broker has
 * acknowledged it. At start the files left over are queued again, oldest
 * first. paho's own persistence is not used: paho 1.3 drops restored
 * in-flight messages when the broker answers "no session", which is what a
 * crashed broker answers. There is no fsync: this survives the server
 * process dying, not a power cut. */

struct cwm_wbuf {
	unsigned char *p;
	size_t n, cap;
	int oom;
};

static void cwm_wput(struct cwm_wbuf *b, const void *data, size_t n)
{
	if (b->oom || n == 0)
		return;
	if (b->n + n > b->cap) {
		size_t cap = (b->cap + n) * 2;
		unsigned char *p = realloc(b->p, cap);
		if (p == NULL) {
			b->oom = 1;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->n, data, n);
	b->n += n;
}

static void cwm_wput32(struct cwm_wbuf *b, uint32_t v)
{
	cwm_wput(b, &v, sizeof(v));
}

static void cwm_wputs(struct cwm_wbuf *b, const void *s, size_t n)
{
	cwm_wput32(b, (uint32_t)n);
	cwm_wput(b, s, n);
}

static const char cwm_magic[4] = {'C', 'W', 'M', '1'};

/* Writes r to a new file; sets r->pseq. Any thread, without c->lock. */
static int cwm_persist_write(struct mg_mqtt *c, struct cwm_out *r)
{
	struct cwm_wbuf b = {NULL, 0, 0, 0};
	const struct mg_mqtt_props *p = r->props;
	char path[PATH_MAX], tmp[PATH_MAX];
	uint64_t seq = atomic_fetch_add(&c->pseq_next, 1);

	cwm_wput(&b, cwm_magic, sizeof(cwm_magic));
	cwm_wput32(&b, (uint32_t)r->qos);
	cwm_wput32(&b, (uint32_t)r->retain);
	cwm_wputs(&b, r->topic, strlen(r->topic));
	cwm_wputs(&b, r->payload, r->len);
	cwm_wput32(&b, p != NULL ? (uint32_t)p->user_count : 0);
	for (size_t i = 0; p != NULL && i < p->user_count; i++) {
		cwm_wputs(&b, p->user[i].name, strlen(p->user[i].name));
		cwm_wputs(&b, p->user[i].value, strlen(p->user[i].value));
	}
	cwm_wput32(&b, p != NULL ? p->message_expiry : 0);
	cwm_wput32(&b, p != NULL ? (uint32_t)p->payload_utf8 : 0);
	const char *rt = p != NULL && p->response_topic ? p->response_topic : "";
	const char *ct = p != NULL && p->content_type ? p->content_type : "";
	cwm_wputs(&b, rt, strlen(rt));
	cwm_wputs(&b, ct, strlen(ct));
	cwm_wputs(&b, p != NULL && p->correlation_data ? p->correlation_data : "",
	          p != NULL && p->correlation_data ? p->correlation_len : 0);
	if (b.oom) {
		free(b.p);
		return MG_MQTT_ERR_NOMEM;
	}
	snprintf(path, sizeof(path), "%s/%016llx.msg", c->pdir,
	         (unsigned long long)seq);
	snprintf(tmp, sizeof(tmp), "%s/%016llx.tmp", c->pdir,
	         (unsigned long long)seq);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	size_t done = 0;
	while (fd >= 0 && done < b.n) {
		ssize_t w = write(fd, b.p + done, b.n - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		done += (size_t)w;
	}
	int ok = fd >= 0 && done == b.n;
	if (fd >= 0 && close(fd) != 0)
		ok = 0;
	if (ok && rename(tmp, path) != 0)
		ok = 0;
	free(b.p);
	if (!ok) {
		int e = errno;
		unlink(tmp);
		cwm_log(c, MG_MQTT_LOG_ERROR, "PERSISTENCE_DIR: cannot write %s: %s",
		        path, strerror(e));
		return MG_MQTT_ERR_IO;
	}
	r->pseq = seq;
	return 0;
}

static void cwm_persist_remove(struct mg_mqtt *c, struct cwm_out *r)
{
	char path[PATH_MAX];
	if (r->pseq == 0 || c->pdir == NULL)
		return;
	snprintf(path, sizeof(path), "%s/%016llx.msg", c->pdir,
	         (unsigned long long)r->pseq);
	unlink(path);
	r->pseq = 0;
}

struct cwm_rbuf {
	const unsigned char *p, *end;
	int bad;
};

static uint32_t cwm_rget32(struct cwm_rbuf *b)
{
	uint32_t v = 0;
	if (b->bad || b->end - b->p < 4) {
		b->bad = 1;
		return 0;
	}
	memcpy(&v, b->p, 4);
	b->p += 4;
	return v;
}

/* A length-prefixed field: pointer into the buffer, length in *n. */
static const char *cwm_rgets(struct cwm_rbuf *b, size_t *n)
{
	*n = cwm_rget32(b);
	if (b->bad || (size_t)(b->end - b->p) < *n) {
		b->bad = 1;
		*n = 0;
		return "";
	}
	const char *s = (const char *)b->p;
	b->p += *n;
	return s;
}

/* One publish record from a message file, or NULL if it is not one. */
static struct cwm_out *cwm_persist_parse(struct mg_mqtt *c,
                                         const unsigned char *data, size_t n)
{
	struct cwm_rbuf b = {data, data + n, 0};
	size_t tl, pl, rtl, ctl, cdl;
	struct mg_mqtt_props props;
	struct mg_mqtt_user_property user[64];

	memset(&props, 0, sizeof(props));
	if (n < 4 || memcmp(data, cwm_magic, 4) != 0)
		return NULL;
	b.p += 4;
	int qos = (int)cwm_rget32(&b), retain = (int)cwm_rget32(&b);
	const char *topic = cwm_rgets(&b, &tl);
	const char *payload = cwm_rgets(&b, &pl);
	uint32_t nuser = cwm_rget32(&b);
	if (nuser > 64)
		return NULL;
	/* Names and values are copied out NUL-terminated below. */
	char *strs[128] = {NULL};
	for (uint32_t i = 0; i < nuser && !b.bad; i++) {
		size_t kl, vl;
		const char *k = cwm_rgets(&b, &kl), *v = cwm_rgets(&b, &vl);
		strs[2 * i] = cwm_strndup(k, kl);
		strs[2 * i + 1] = cwm_strndup(v, vl);
		user[i].name = strs[2 * i] != NULL ? strs[2 * i] : "";
		user[i].value = strs[2 * i + 1] != NULL ? strs[2 * i + 1] : "";
	}
	props.user = nuser > 0 ? user : NULL;
	props.user_count = nuser;
	props.message_expiry = cwm_rget32(&b);
	props.payload_utf8 = (int)cwm_rget32(&b);
	const char *rt = cwm_rgets(&b, &rtl), *ct = cwm_rgets(&b, &ctl);
	const char *cd = cwm_rgets(&b, &cdl);
	char *rts = cwm_strndup(rt, rtl), *cts = cwm_strndup(ct, ctl);
	char *tops = cwm_strndup(topic, tl);
	props.response_topic = rtl > 0 ? rts : NULL;
	props.content_type = ctl > 0 ? cts : NULL;
	props.correlation_data = cdl > 0 ? cd : NULL;
	props.correlation_len = cdl;

	struct cwm_out *r = NULL;
	if (!b.bad && qos >= 1 && qos <= 2 && tops != NULL &&
	    cwm_topic_check(tops, tl) == 0 && (r = calloc(1, sizeof(*r) + tl + 1 + pl)) != NULL) {
		r->c = c;
		r->type = CMD_PUBLISH;
		r->qos = qos;
		r->retain = retain != 0;
		r->restored = 1;
		r->topic = memcpy((char *)(r + 1), tops, tl + 1);
		r->payload = r->topic + tl + 1;
		r->len = pl;
		if (pl > 0)
			memcpy(r->payload, payload, pl);
		if (cwm_props_dup(&props, &r->props) != 0) {
			free(r);
			r = NULL;
		}
	}
	for (uint32_t i = 0; i < 2 * nuser; i++)
		free(strs[i]);
	free(rts);
	free(cts);
	free(tops);
	return r;
}

static int cwm_name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* At start, before the threads: makes <dir>/<client id> and queues every
 * message left there, oldest first. Unreadable files are renamed *.bad. */
static int cwm_persist_open(struct mg_mqtt *c, char *err, size_t errlen)
{
	char path[PATH_MAX], safe[256], q[320];
	size_t n = 0;

	for (const char *p = c->client_id; *p != '\0' && n + 1 < sizeof(safe); p++)
		safe[n++] = isalnum((unsigned char)*p) || strchr("-_.", *p) ? *p : '_';
	safe[n] = '\0';
	snprintf(path, sizeof(path), "%s/%s", c->cfg.persistence_dir, safe);
	if (mkdir(path, 0700) != 0 && errno != EEXIST) {
		cwm_fmt(err, errlen, "%s_PERSISTENCE_DIR: cannot create '%s': %s",
		        c->prefix, cwm_quote_path(path, q), strerror(errno));
		return MG_MQTT_ERR_IO;
	}
	if ((c->pdir = cwm_strdup(path)) == NULL)
		return MG_MQTT_ERR_NOMEM;

	DIR *d = opendir(path);
	if (d == NULL) {
		cwm_fmt(err, errlen, "%s_PERSISTENCE_DIR: cannot read '%s': %s",
		        c->prefix, cwm_quote_path(path, q), strerror(errno));
		return MG_MQTT_ERR_IO;
	}
	char **names = NULL;
	size_t count = 0, cap = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		size_t l = strlen(e->d_name);
		if (l == 20 && strcmp(e->d_name + 16, ".tmp") == 0) {
			char tmp[PATH_MAX];
			cwm_fmt(tmp, sizeof(tmp), "%s/%s", path, e->d_name);
			unlink(tmp); /* a write the last process did not finish */
			continue;
		}
		if (l != 20 || strcmp(e->d_name + 16, ".msg") != 0)
			continue;
		if (count == cap) {
			cap = cap * 2 + 16;
			char **nn = realloc(names, cap * sizeof(char *));
			if (nn == NULL)
				break;
			names = nn;
		}
		if ((names[count] = cwm_strdup(e->d_name)) != NULL)
			count++;
	}
	closedir(d);
	if (count > 0)
		qsort(names, count, sizeof(char *), cwm_name_cmp);

	uint64_t next = 1;
	int restored = 0;
	for (size_t i = 0; i < count; i++) {
		char file[PATH_MAX];
		size_t len;
		uint64_t seq = strtoull(names[i], NULL, 16);
		cwm_fmt(file, sizeof(file), "%s/%s", path, names[i]);
		FILE *f = fopen(file, "rb");
		unsigned char *data = NULL;
		struct cwm_out *r = NULL;
		if (f != NULL) {
			fseek(f, 0, SEEK_END);
			long sz = ftell(f);
			fseek(f, 0, SEEK_SET);
			if (sz > 0 && sz <= (long)CWM_MAX_PACKET + 65536 &&
			    (data = malloc((size_t)sz)) != NULL &&
			    (len = fread(data, 1, (size_t)sz, f)) == (size_t)sz)
				r = cwm_persist_parse(c, data, len);
			fclose(f);
		}
		free(data);
		if (seq >= next)
			next = seq + 1;
		if (r == NULL) {
			char bad[PATH_MAX + 8];
			snprintf(bad, sizeof(bad), "%s.bad", file);
			rename(file, bad);
			cwm_log(c, MG_MQTT_LOG_WARNING,
			        "PERSISTENCE_DIR: %s is not a stored message; renamed to "
			        "*.bad",
			        file);
			continue;
		}
		r->pseq = seq;
		r->id = cwm_next_id(c);
		c->unfinished++;
		cwm_fifo_push(&c->outq, &c->outq_tail, r);
		restored++;
	}
	for (size_t i = 0; i < count; i++)
		free(names[i]);
	free(names);
	atomic_store(&c->pseq_next, next);
	if (restored > 0)
		cwm_log(c, MG_MQTT_LOG_INFO,
		        "PERSISTENCE_DIR: %d stored message(s) queued again", restored);
	return 0;
}

/* Operations are refused before start and from the moment stop begins. */
static int cwm_ops_check(const struct mg_mqtt *c)
{
	if (c == NULL)
		return MG_MQTT_ERR_INVALID;
	if (!atomic_load(&c->ops_ok))
		return MG_MQTT_ERR_NOT_STARTED;
	return 0;
}

/* [L] Queues a command for mqtt-io and wakes it if it could send now. */
static void cwm_enqueue(struct mg_mqtt *c, struct cwm_out *r)
{
	cwm_fifo_push(&c->outq, &c->outq_tail, r);
	if (c->io_waiting == CWM_IDLE_WAIT && c->state == CWM_CONNECTED)
		pthread_cond_signal(&c->io_cond);
}

/* Bytes of the PUBLISH packet for a topic of tlen bytes, properties of
 * pbytes (MQTT 5) and a payload of len: what a broker compares with the
 * Maximum Packet Size it announced. */
static size_t cwm_varint_len(size_t n)
{
	return n < 128 ? 1 : n < 16384 ? 2 : n < 2097152 ? 3 : 4;
}

static size_t cwm_publish_size(int v5, size_t tlen, size_t pbytes, int qos,
                               size_t len)
{
	size_t rem = 2 + tlen + (qos > 0 ? 2 : 0) + len;
	if (v5)
		rem += cwm_varint_len(pbytes) + pbytes;
	return 1 + cwm_varint_len(rem) + rem;
}

int mg_mqtt_publish_props(struct mg_mqtt *c, const char *topic,
                          const void *payload, size_t len, int qos, int retain,
                          const struct mg_mqtt_props *props)
{
	size_t tlen, pbytes;
	int rc;

	if ((rc = cwm_ops_check(c)) != 0)
		return rc;
	if (topic == NULL || (payload == NULL && len > 0))
		return MG_MQTT_ERR_INVALID;
	if (qos < 0 || qos > 2)
		return MG_MQTT_ERR_QOS;
	tlen = strlen(topic);
	if (cwm_topic_check(topic, tlen) != 0)
		return tlen > 65535 ? MG_MQTT_ERR_TOO_LARGE : MG_MQTT_ERR_TOPIC;
	if ((rc = cwm_props_check(props, &pbytes)) != 0)
		return rc;
	if (len > CWM_MAX_PACKET || len + tlen + 4 + pbytes > CWM_MAX_PACKET)
		return MG_MQTT_ERR_TOO_LARGE;
	unsigned maxp = atomic_load(&c->max_packet);
	if (maxp > 0 && cwm_publish_size(c->v5, tlen, pbytes, qos, len) > maxp)
		return MG_MQTT_ERR_TOO_LARGE;

	struct cwm_out *r = malloc(sizeof(*r) + tlen + 1 + len);
	if (r == NULL)
		return MG_MQTT_ERR_NOMEM;
	memset(r, 0, sizeof(*r));
	if ((rc = cwm_props_dup(props, &r->props)) != 0) {
		free(r);
		return rc;
	}
	if (r->props != NULL && !c->v5) {
		cwm_out_free(r);
		return MG_MQTT_ERR_PROTOCOL;
	}
	r->c = c;
	r->type = CMD_PUBLISH;
	r->qos = qos;
	r->retain = retain != 0;
	r->topic = memcpy((char *)(r + 1), topic, tlen + 1);
	r->payload = r->topic + tlen + 1;
	r->len = len;
	if (len > 0)
		memcpy(r->payload, payload, len);
	if (c->pdir != NULL && qos > 0 && (rc = cwm_persist_write(c, r)) != 0) {
		cwm_out_free(r);
		return rc;
	}

	pthread_mutex_lock(&c->lock);
	if (c->stopping)
		rc = MG_MQTT_ERR_STOPPED;
	else if (c->state != CWM_CONNECTED && c->cfg.max_buffered == 0)
		rc = MG_MQTT_ERR_NOT_CONNECTED;
	else if (c->unfinished >= c->cfg.max_inflight + c->cfg.max_buffered)
		rc = MG_MQTT_ERR_BUFFER_FULL;
	if (rc == 0) {
		rc = r->id = cwm_next_id(c);
		c->unfinished++;
		cwm_enqueue(c, r);
	}
	pthread_mutex_unlock(&c->lock);
	if (rc < 0) {
		cwm_persist_remove(c, r);
		cwm_out_free(r);
	}
	return rc;
}

int mg_mqtt_publish(struct mg_mqtt *c, const char *topic, const void *payload,
                    size_t len, int qos, int retain)
{
	return mg_mqtt_publish_props(c, topic, payload, len, qos, retain, NULL);
}

/* [L] Queues filter for a SUBSCRIBE: it joins the unsent SUBSCRIBE at the
 * tail of outq when there is one with room (10,000 subscriptions made in a
 * loop then cost one request per 128, not one each, and order with
 * publishes and unsubscribes is kept). Returns 0 or MG_MQTT_ERR_NOMEM. */
static int cwm_queue_subscribe(struct mg_mqtt *c, const char *filter, int qos,
                               int id, int counted)
{
	struct cwm_out *t = c->outq_tail;
	if (t != NULL && t->type == CMD_SUBSCRIBE && t->appendable &&
	    t->nfilters < CWM_RENEW_CHUNK &&
	    cwm_cmd_add(c, t, filter, qos, id, counted) == 0) {
		if (c->io_waiting == CWM_IDLE_WAIT && c->state == CWM_CONNECTED)
			pthread_cond_signal(&c->io_cond);
		return 0;
	}
	struct cwm_out *r = cwm_cmd_new(c, CMD_SUBSCRIBE);
	if (r != NULL)
		r->appendable = 1;
	if (r == NULL || cwm_cmd_add(c, r, filter, qos, id, counted) != 0) {
		cwm_out_free(r);
		return MG_MQTT_ERR_NOMEM;
	}
	r->internal = id == 0;
	r->id = id != 0 ? id : cwm_next_id(c);
	cwm_enqueue(c, r);
	return 0;
}

/* [L] The table entry for filter, made if missing (*n is a spare the
 * caller allocated outside the lock; consumed when used). */
static struct cwm_sub *cwm_sub_get(struct mg_mqtt *c, const char *filter,
                                   struct cwm_sub **n, int *made)
{
	size_t fl = strlen(filter);
	struct cwm_sub *s = cwm_map_get(&c->subs, filter, fl);
	*made = 0;
	if (s != NULL && s->gone) {
		s->gone = 0; /* subscribed again before the old commands were done */
		s->granted = -1;
		s->prev = c->sub_tail;
		if (c->sub_tail != NULL)
			c->sub_tail->next = s;
		else
			c->sub_head = s;
		c->sub_tail = s;
		*made = 1;
		return s;
	}
	if (s != NULL || *n == NULL ||
	    cwm_map_put_key(&c->subs, filter, fl, *n, &(*n)->filter) != 0)
		return s;
	s = *n;
	*n = NULL;
	s->granted = -1;
	s->prev = c->sub_tail;
	if (c->sub_tail != NULL)
		c->sub_tail->next = s;
	else
		c->sub_head = s;
	c->sub_tail = s;
	*made = 1;
	return s;
}

static void cwm_sub_forget(struct mg_mqtt *c, struct cwm_sub *s);

int mg_mqtt_subscribe(struct mg_mqtt *c, const char *filter, int qos)
{
	int rc, made;
	char *plain;
	if ((rc = cwm_ops_check(c)) != 0)
		return rc;
	if (filter == NULL)
		return MG_MQTT_ERR_INVALID;
	if (qos < 0 || qos > 2)
		return MG_MQTT_ERR_QOS;
	if ((rc = cwm_filter_normalize(filter, &plain, NULL)) != 0)
		return rc;
	filter = plain;
	struct cwm_sub *n = calloc(1, sizeof(*n));

	pthread_mutex_lock(&c->lock);
	struct cwm_sub *s = c->stopping ? NULL : cwm_sub_get(c, filter, &n, &made);
	if (c->stopping) {
		rc = MG_MQTT_ERR_STOPPED;
	} else if (s == NULL) {
		rc = MG_MQTT_ERR_NOMEM;
	} else {
		int id = cwm_next_id(c);
		if ((rc = cwm_queue_subscribe(c, s->filter, qos, id, 1)) != 0) {
			if (made)
				cwm_sub_forget(c, s);
		} else {
			s->qos = qos;
			s->granted = -1;
			s->pending++;
			s->app = 1;
			rc = id;
		}
	}
	pthread_mutex_unlock(&c->lock);
	free(n);
	free(plain);
	return rc;
}

static void cwm_sub_free(struct cwm_sub *s)
{
	free(s);
}

/* [L] Forgets a subscription. While SUBSCRIBE commands still borrow its
 * filter (s->pending), the map entry that holds the string stays, marked
 * gone: off the list, invisible to the API, deleted by cwm_done when the
 * last of them is done (or revived by a new subscribe). */
static void cwm_sub_forget(struct mg_mqtt *c, struct cwm_sub *s)
{
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		c->sub_head = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	else
		c->sub_tail = s->prev;
	s->prev = s->next = NULL;
	s->app = 0;
	s->brefs = 0;
	s->sys = 0;
	if (s->pending > 0) {
		s->gone = 1;
		return;
	}
	cwm_map_del(&c->subs, s->filter, strlen(s->filter)); /* frees s->filter */
	cwm_sub_free(s);
}

int mg_mqtt_unsubscribe(struct mg_mqtt *c, const char *filter)
{
	int rc;
	if ((rc = cwm_ops_check(c)) != 0)
		return rc;
	if (filter == NULL)
		return MG_MQTT_ERR_INVALID;
	char *plain;
	if ((rc = cwm_filter_normalize(filter, &plain, NULL)) != 0)
		return rc;
	filter = plain;
	size_t fl = strlen(filter);
	struct cwm_out *r = cwm_cmd_filters(c, CMD_UNSUBSCRIBE, &filter, NULL, 1);
	if (r == NULL) {
		free(plain);
		return MG_MQTT_ERR_NOMEM;
	}
	pthread_mutex_lock(&c->lock);
	struct cwm_sub *s = cwm_map_get(&c->subs, filter, fl);
	if (c->stopping)
		rc = MG_MQTT_ERR_STOPPED;
	else if (s == NULL || !s->app)
		rc = MG_MQTT_ERR_NOT_FOUND;
	else {
		/* Browsers still hold it: the broker keeps it, the app lets go. */
		if (s->brefs > 0) {
			s->app = 0;
			r->noop = 1;
		} else {
			cwm_sub_forget(c, s);
		}
		rc = r->id = cwm_next_id(c);
		cwm_enqueue(c, r);
		r = NULL;
	}
	pthread_mutex_unlock(&c->lock);
	cwm_out_free(r);
	free(plain);
	return rc;
}

int mg_mqtt_unsubscribe_all(struct mg_mqtt *c)
{
	int rc;
	if ((rc = cwm_ops_check(c)) != 0)
		return rc;
	for (;;) {
		/* Size the command outside the lock, then check nothing changed. */
		pthread_mutex_lock(&c->lock);
		int count = (int)c->subs.n;
		pthread_mutex_unlock(&c->lock);
		if (count == 0)
			return 0;
		const char **real = calloc((size_t)count, sizeof(char *));
		const char **kept = calloc((size_t)count, sizeof(char *));
		if (real == NULL || kept == NULL) {
			free(real);
			free(kept);
			return MG_MQTT_ERR_NOMEM;
		}
		pthread_mutex_lock(&c->lock);
		if (c->stopping || (int)c->subs.n != count) {
			rc = c->stopping ? MG_MQTT_ERR_STOPPED : 1;
			pthread_mutex_unlock(&c->lock);
			free(real);
			free(kept);
			if (rc == 1)
				continue;
			return rc;
		}
		/* The app's subscriptions go; those browsers hold stay subscribed
		 * and are acknowledged without a packet when nothing else goes. */
		int nreal = 0, nkept = 0;
		for (struct cwm_sub *s = c->sub_head; s != NULL; s = s->next)
			if (s->app && s->brefs == 0)
				real[nreal++] = s->filter;
			else if (s->app)
				kept[nkept++] = s->filter;
		struct cwm_out *r = NULL;
		if (nreal > 0)
			r = cwm_cmd_filters(c, CMD_UNSUBSCRIBE, real, NULL, nreal);
		else if (nkept > 0)
			r = cwm_cmd_filters(c, CMD_UNSUBSCRIBE, kept, NULL, nkept);
		free((void *)real);
		free((void *)kept);
		if (nreal + nkept == 0) {
			pthread_mutex_unlock(&c->lock);
			return 0;
		}
		if (r == NULL) {
			pthread_mutex_unlock(&c->lock);
			return MG_MQTT_ERR_NOMEM;
		}
		r->noop = nreal == 0;
		for (struct cwm_sub *s = c->sub_head, *next; s != NULL; s = next) {
			next = s->next;
			if (s->app && s->brefs == 0)
				cwm_sub_forget(c, s);
			else
				s->app = 0;
		}
		rc = r->id = cwm_next_id(c);
		cwm_enqueue(c, r);
		pthread_mutex_unlock(&c->lock);
		return rc;
	}
}

/* The bridge's side of a subscription: the first holder subscribes, a
 * higher QoS re-subscribes, the last to leave unsubscribes (unless the app
 * holds it too). sys: the holder is mg_mqtt_request (never let go). Called
 * without c->lock (the bridge lock may be held). */
static void cwm_sub_ref(struct mg_mqtt *c, const char *filter, int qos,
                        int sys)
{
	struct cwm_sub *n = calloc(1, sizeof(*n));
	int made;

	pthread_mutex_lock(&c->lock);
	struct cwm_sub *s = cwm_sub_get(c, filter, &n, &made);
	if (s != NULL) {
		int send = made || qos > s->qos;
		if (qos > s->qos || made)
			s->qos = qos;
		s->brefs++;
		if (sys)
			s->sys = 1;
		if (send && !c->stopping &&
		    cwm_queue_subscribe(c, s->filter, s->qos, 0, 1) == 0)
			s->pending++;
	}
	pthread_mutex_unlock(&c->lock);
	free(n);
}

static void cwm_sub_unref(struct mg_mqtt *c, const char *filter)
{
	struct cwm_out *r = cwm_cmd_filters(c, CMD_UNSUBSCRIBE, &filter, NULL, 1);
	pthread_mutex_lock(&c->lock);
	struct cwm_sub *s = cwm_map_get(&c->subs, filter, strlen(filter));
	if (s != NULL && s->brefs > 0 && --s->brefs == 0 && !s->app) {
		cwm_sub_forget(c, s);
		if (r != NULL && !c->stopping) {
			r->internal = 1;
			r->id = cwm_next_id(c);
			cwm_enqueue(c, r);
			r = NULL;
		}
	}
	pthread_mutex_unlock(&c->lock);
	cwm_out_free(r);
}

int mg_mqtt_is_connected(const struct mg_mqtt *c)
{
	return c != NULL && atomic_load(&c->connected);
}

/* Forward declarations: section 10. */
static void cwm_on_done_ok(void *ctx, MQTTAsync_successData *r);
static void cwm_on_done_fail(void *ctx, MQTTAsync_failureData *r);
static void cwm_on_done_ok5(void *ctx, MQTTAsync_successData5 *r);
static void cwm_on_done_fail5(void *ctx, MQTTAsync_failureData5 *r);
static void cwm_done(struct mg_mqtt *c, struct cwm_out *r, int result,
                     int retry, const int *codes, int ncodes);
static void cwm_on_connect_ok(void *ctx, MQTTAsync_successData *r);
static void cwm_on_connect_fail(void *ctx, MQTTAsync_failureData *r);
static void cwm_on_connect_ok5(void *ctx, MQTTAsync_successData5 *r);
static void cwm_on_connect_fail5(void *ctx, MQTTAsync_failureData5 *r);
static void cwm_connect_failed(struct mg_mqtt *c, int error, int reason,
                               const char *text);
static int cwm_on_ssl_error(const char *str, size_t len, void *u);

/* A message published before the broker announced its Maximum Packet
 * Size (buffered while disconnected, read back from PERSISTENCE_DIR) that
 * exceeds it: sent, it would make the broker close the connection, and
 * the message would be sent again after every reconnect, forever. It is
 * failed instead, logged and counted. */
static int cwm_publish_too_large(struct mg_mqtt *c, const struct cwm_out *r)
{
	unsigned maxp = atomic_load(&c->max_packet);
	size_t pbytes = 0, size;
	if (maxp == 0)
		return 0;
	(void)cwm_props_check(r->props, &pbytes);
	size = cwm_publish_size(c->v5, strlen(r->topic), pbytes, r->qos, r->len);
	if (size <= maxp)
		return 0;
	cwm_log(c, MG_MQTT_LOG_ERROR,
	        "message %d to '%s' (%zu bytes) is larger than the broker's "
	        "maximum packet size (%u bytes): not sent",
	        r->id, r->topic, size, maxp);
	return 1;
}

/* mqtt-io: hands one command to paho. Called without c->lock; r is already
 * in c->inpaho, because paho may report it done before returning. */
static void cwm_send(struct mg_mqtt *c, struct cwm_out *r)
{
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	int rc;

	if (r->noop) {
		cwm_done(c, r, 0, 0, NULL, 0);
		return;
	}
	ro.context = r;
	if (c->v5) {
		ro.onSuccess5 = cwm_on_done_ok5;
		ro.onFailure5 = cwm_on_done_fail5;
	} else {
		ro.onSuccess = cwm_on_done_ok;
		ro.onFailure = cwm_on_done_fail;
	}
	if (r->type == CMD_PUBLISH && cwm_publish_too_large(c, r)) {
		cwm_done(c, r, MG_MQTT_ERR_TOO_LARGE, 0, NULL, 0);
		return;
	}
	if (r->type == CMD_PUBLISH) {
		MQTTAsync_message m = MQTTAsync_message_initializer;
		m.payload = r->payload;
		m.payloadlen = (int)r->len;
		m.qos = r->qos;
		m.retained = r->retain;
		if (r->props != NULL)
			cwm_props_to_paho(r->props, &m.properties);
		r->sent = 1; /* before: paho may report it done before returning */
		rc = MQTTAsync_sendMessage(c->paho, r->topic, &m, &ro);
		MQTTProperties_free(&m.properties);
		if (rc != MQTTASYNC_SUCCESS)
			r->sent = 0;
	} else if (r->type == CMD_SUBSCRIBE) {
		rc = MQTTAsync_subscribeMany(c->paho, r->nfilters, r->wire, r->qos_list,
		                             &ro);
	} else {
		rc = MQTTAsync_unsubscribeMany(c->paho, r->nfilters, r->wire, &ro);
	}
	if (rc == MQTTASYNC_SUCCESS)
		return;
	if (rc == MQTTASYNC_DISCONNECTED || rc == MQTTASYNC_MAX_BUFFERED_MESSAGES ||
	    rc == MQTTASYNC_NO_MORE_MSGIDS || rc == MQTTASYNC_MAX_MESSAGES_INFLIGHT) {
		pthread_mutex_lock(&c->lock);
		c->send_blocked = 1; /* until the next connect, or a completion */
		pthread_mutex_unlock(&c->lock);
		cwm_done(c, r, MG_MQTT_ERR_CONNECTION_LOST, 1, NULL, 0);
	} else {
		cwm_log(c, MG_MQTT_LOG_ERROR, "paho refused a command: %s (%d)",
		        MQTTAsync_strerror(rc), rc);
		cwm_done(c, r, MG_MQTT_ERR_PAHO, 0, NULL, 0);
	}
}

/* [L] Takes the commands mqtt-io may hand to paho now, oldest first: retry
 * before outq, stopping at the first QoS message that does not fit the
 * window so that order is kept. Links them into c->inpaho. */
static struct cwm_out *cwm_take_batch(struct mg_mqtt *c)
{
	struct cwm_out *batch = NULL, *tail = NULL;
	int taken = 0;
	while (taken < CWM_BATCH && !c->send_blocked) {
		struct cwm_out **head = c->retry != NULL ? &c->retry : &c->outq;
		struct cwm_out **qt = c->retry != NULL ? &c->retry_tail : &c->outq_tail;
		struct cwm_out *r = *head;
		if (r == NULL)
			break;
		if (r->type == CMD_PUBLISH) {
			if (r->qos > 0 && c->inflight >= c->window)
				break;
			if (r->qos == 0 && c->inflight0 >= CWM_QOS0_WINDOW)
				break;
			if (r->qos > 0)
				c->inflight++;
			else
				c->inflight0++;
		}
		*head = r->next;
		if (*head == NULL)
			*qt = NULL;
		r->next = NULL;
		r->appendable = 0; /* on its way to paho: no more joiners */
		cwm_inpaho_link(c, r);
		if (tail != NULL)
			tail->next = r;
		else
			batch = r;
		tail = r;
		taken++;
	}
	return batch;
}

/* [L] After a connect: renewing SUBSCRIBEs for every settled subscription
 * (one with a user SUBSCRIBE still queued is sent by that command), then
 * the birth message, ahead of everything else. */
static void cwm_queue_renewal(struct mg_mqtt *c)
{
	struct cwm_out *first = NULL, *last = NULL;
	struct cwm_sub *s = c->sub_head;

	c->renew_needed = 0;
	while (s != NULL) {
		const char *fv[CWM_RENEW_CHUNK];
		int qv[CWM_RENEW_CHUNK], n = 0;
		for (; s != NULL && n < CWM_RENEW_CHUNK; s = s->next)
			if (s->pending == 0) {
				fv[n] = s->filter;
				qv[n++] = s->qos;
			}
		if (n == 0)
			break;
		struct cwm_out *r = cwm_cmd_filters(c, CMD_SUBSCRIBE, fv, qv, n);
		if (r == NULL) {
			cwm_log_locked(c, MG_MQTT_LOG_ERROR,
			               "out of memory renewing subscriptions");
			break;
		}
		r->internal = 1;
		r->id = cwm_next_id(c);
		if (last != NULL)
			last->next = r;
		else
			first = r;
		last = r;
	}
	if (c->birth_needed) {
		const char *t = c->cfg.birth_topic, *m = c->cfg.birth_message;
		size_t tl = strlen(t), ml = m != NULL ? strlen(m) : 0;
		struct cwm_out *r = calloc(1, sizeof(*r) + tl + 1 + ml + 1);
		c->birth_needed = 0;
		if (r != NULL) {
			r->c = c;
			r->type = CMD_PUBLISH;
			r->internal = 1;
			r->qos = c->cfg.birth_qos;
			r->retain = c->cfg.birth_retain;
			r->topic = memcpy((char *)(r + 1), t, tl + 1);
			r->payload = r->topic + tl + 1;
			r->len = ml;
			if (ml > 0)
				memcpy(r->payload, m, ml);
			r->id = cwm_next_id(c);
			if (last != NULL)
				last->next = r;
			else
				first = r;
			last = r;
		}
	}
	if (first != NULL) {
		last->next = c->retry;
		c->retry = first;
		if (c->retry_tail == NULL)
			c->retry_tail = last;
	}
}

/* mqtt-io: starts one connection attempt, to BROKER_URL entry idx. The
 * fail-over list is walked here, one URI per paho connect, not by paho:
 * given several, paho also moves to the next one by itself after a lost
 * connection, behind the client's back (its success then reported to
 * nobody). */
static int cwm_paho_connect(struct mg_mqtt *c, int idx)
{
	const struct cwm_settings *s = &c->cfg;
	MQTTAsync_connectOptions o = MQTTAsync_connectOptions_initializer;
	MQTTAsync_willOptions will = MQTTAsync_willOptions_initializer;
	MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
	MQTTProperties props = MQTTProperties_initializer;
	MQTTProperty pr;
	int rc;

	o.keepAliveInterval = s->keepalive;
	o.connectTimeout = s->connection_timeout;
	o.maxInflight = 65535; /* flow control is ours: see cwm_take_batch */
	o.retryInterval = 0;
	o.automaticReconnect = 0; /* reconnects are ours: see cwm_io_main */
	o.context = c;
	o.serverURIcount = 1;
	o.serverURIs = &c->cfg.uris[idx];
	o.username = s->username;
	o.password = s->secret;
	o.MQTTVersion = s->protocol == 5   ? MQTTVERSION_5
	                : s->protocol == 3 ? MQTTVERSION_3_1
	                                   : MQTTVERSION_3_1_1;
	if (c->v5) {
		o.cleansession = 0;
		o.cleanstart = s->clean_session;
		o.onSuccess5 = cwm_on_connect_ok5;
		o.onFailure5 = cwm_on_connect_fail5;
		if (!s->clean_session) {
			/* MQTT 5 ends a session at disconnect unless told otherwise. */
			memset(&pr, 0, sizeof(pr));
			pr.identifier = MQTTPROPERTY_CODE_SESSION_EXPIRY_INTERVAL;
			pr.value.integer4 = 0xFFFFFFFFu;
			MQTTProperties_add(&props, &pr);
			o.connectProperties = &props;
		}
	} else {
		o.cleansession = s->clean_session;
		o.onSuccess = cwm_on_connect_ok;
		o.onFailure = cwm_on_connect_fail;
	}
	if (s->will_topic != NULL) {
		will.topicName = s->will_topic;
		will.message = NULL;
		will.payload.data = s->will_message != NULL ? s->will_message : "";
		will.payload.len = s->will_message != NULL ? (int)strlen(s->will_message)
		                                           : 0;
		will.qos = s->will_qos;
		will.retained = s->will_retain;
		o.will = &will;
	}
	if (c->cfg.use_tls) {
		ssl.trustStore = s->tls_ca_certs;
		ssl.keyStore = s->tls_certfile;
		ssl.privateKey = s->tls_keyfile;
		ssl.privateKeyPassword = s->tls_keyfile_password;
		ssl.enabledCipherSuites = s->tls_ciphers;
		ssl.enableServerCertAuth = s->tls_cert_reqs != CWM_CERT_NONE;
		ssl.verify = s->tls_cert_reqs != CWM_CERT_NONE && !s->tls_insecure;
		ssl.sslVersion = s->tls_version;
		ssl.ssl_error_cb = cwm_on_ssl_error;
		ssl.ssl_error_context = c;
		o.ssl = &ssl;
	}
	rc = MQTTAsync_connect(c->paho, &o);
	MQTTProperties_free(&props);
	return rc;
}

/* Milliseconds until the next attempt: the back-off with +-20% jitter,
 * which then doubles up to RECONNECT_MAX. [L] */
static int64_t cwm_backoff_ms(struct mg_mqtt *c)
{
	int64_t ms = (int64_t)c->backoff_s * 1000;
	ms = ms * (80 + (int64_t)(rand_r(&c->seed) % 41)) / 100;
	c->backoff_s = c->backoff_s * 2 > c->cfg.reconnect_max
	                   ? c->cfg.reconnect_max
	                   : c->backoff_s * 2;
	return ms;
}

/* [L] Fails every command still queued or in paho with MG_MQTT_ERR_STOPPED;
 * called by mqtt-io after the paho handle is destroyed. */
static void cwm_fail_all(struct mg_mqtt *c)
{
	int lost = 0;
	for (;;) {
		struct cwm_out *r = c->inpaho;
		if (r != NULL) {
			cwm_inpaho_unlink(c, r);
			if (r->type == CMD_PUBLISH) {
				if (r->qos > 0)
					c->inflight--;
				else
					c->inflight0--;
			}
		} else if ((r = c->retry) != NULL) {
			if ((c->retry = r->next) == NULL)
				c->retry_tail = NULL;
		} else if ((r = c->outq) != NULL) {
			if ((c->outq = r->next) == NULL)
				c->outq_tail = NULL;
		} else {
			break;
		}
		if (r->type == CMD_PUBLISH && !r->internal)
			lost++;
		pthread_mutex_unlock(&c->lock);
		cwm_done(c, r, MG_MQTT_ERR_STOPPED, 0, NULL, 0);
		pthread_mutex_lock(&c->lock);
	}
	if (lost > 0)
		cwm_log_locked(c, MG_MQTT_LOG_WARNING,
		               "stopped with %d message(s) not sent%s", lost,
		               c->pdir != NULL ? " (QoS 1/2 ones stay in "
		                                 "PERSISTENCE_DIR for the next start)"
		                               : "");
}

static void cwm_on_disc_ok(void *ctx, MQTTAsync_successData *r)
{
	struct mg_mqtt *c = ctx;
	(void)r;
	pthread_mutex_lock(&c->lock);
	c->disc_done = 1;
	pthread_cond_broadcast(&c->state_cond);
	pthread_mutex_unlock(&c->lock);
}

static void cwm_on_disc_fail(void *ctx, MQTTAsync_failureData *r)
{
	(void)r;
	cwm_on_disc_ok(ctx, NULL);
}

static void cwm_on_disc_ok5(void *ctx, MQTTAsync_successData5 *r)
{
	(void)r;
	cwm_on_disc_ok(ctx, NULL);
}

static void cwm_on_disc_fail5(void *ctx, MQTTAsync_failureData5 *r)
{
	(void)r;
	cwm_on_disc_ok(ctx, NULL);
}

/* mqtt-io, at stop: DISCONNECT (the broker drops the will), then destroy. */
static void cwm_io_shutdown(struct mg_mqtt *c, int was_connected)
{
	if (was_connected) {
		MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
		d.timeout = 1000;
		d.context = c;
		if (c->v5) {
			d.onSuccess5 = cwm_on_disc_ok5;
			d.onFailure5 = cwm_on_disc_fail5;
		} else {
			d.onSuccess = cwm_on_disc_ok;
			d.onFailure = cwm_on_disc_fail;
		}
		if (MQTTAsync_disconnect(c->paho, &d) == MQTTASYNC_SUCCESS) {
			struct timespec until = cwm_deadline(3000);
			pthread_mutex_lock(&c->lock);
			while (!c->disc_done &&
			       pthread_cond_timedwait(&c->state_cond, &c->lock, &until) !=
			           ETIMEDOUT) {
			}
			pthread_mutex_unlock(&c->lock);
		}
	}
	MQTTAsync_destroy(&c->paho); /* no paho callback runs after this */
	c->paho = NULL;
}

/* Worker threads call this after each batch of work: a stream is work
 * coming less than two coalescing windows apart. */
static void cwm_worked(int *busy, int64_t *last_us)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	int64_t now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
	*busy = now - *last_us < 2 * CWM_COALESCE_US;
	*last_us = now;
}

/* [L] Waits on cond until signalled, or until wait_ms (< 0: no limit).
 * Wake-up coalescing: in a stream of work (cwm_worked), a thread first
 * waits at most CWM_COALESCE_US, and producers do not signal it meanwhile,
 * so that one wake-up serves several messages instead of one each (a
 * context switch per message doubles the CPU a message costs). Otherwise
 * it is signalled at once: latency at ordinary rates is unchanged, and a
 * trickle of messages pays for no timer. */
static void cwm_wait_for_work(struct mg_mqtt *c, pthread_cond_t *cond,
                              int *waiting, int *busy, int64_t wait_ms)
{
	if (*busy && (wait_ms < 0 || wait_ms * 1000 > CWM_COALESCE_US)) {
		struct timespec until = cwm_deadline_us(CWM_COALESCE_US);
		*waiting = CWM_COALESCING;
		pthread_cond_timedwait(cond, &c->lock, &until);
	} else {
		*waiting = CWM_IDLE_WAIT;
		if (wait_ms < 0) {
			pthread_cond_wait(cond, &c->lock);
		} else {
			struct timespec until = cwm_deadline(wait_ms);
			pthread_cond_timedwait(cond, &c->lock, &until);
		}
	}
	*waiting = CWM_RUNNING;
	*busy = 0;
}

static void *cwm_io_main(void *arg)
{
	struct mg_mqtt *c = arg;
	pthread_setname_np(pthread_self(), "mqtt-io");
	int busy = 0;
	int64_t last_us = 0;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		int64_t now = cwm_now_ms(), wait_ms = -1;
		int idle = c->outq == NULL && c->retry == NULL && c->inflight == 0 &&
		           c->inflight0 == 0;
		if (c->stopping &&
		    (c->state != CWM_CONNECTED || idle || now >= c->stop_deadline))
			break;
		if (!c->stopping && c->state == CWM_DISCONNECTED &&
		    now >= c->reconnect_at) {
			c->state = CWM_CONNECTING;
			if (c->uri_try == 0)
				c->attempt++; /* one attempt: a round over BROKER_URL */
			c->tls_error = 0;
			int idx = c->uri_try;
			pthread_mutex_unlock(&c->lock);
			int rc = cwm_paho_connect(c, idx);
			if (rc != MQTTASYNC_SUCCESS)
				cwm_connect_failed(c, MG_MQTT_ERR_CONNECT, -1,
				                   MQTTAsync_strerror(rc));
			pthread_mutex_lock(&c->lock);
			continue;
		}
		if (c->state == CWM_CONNECTED) {
			if (c->renew_needed || c->birth_needed)
				cwm_queue_renewal(c);
			struct cwm_out *batch = cwm_take_batch(c);
			if (batch != NULL) {
				pthread_mutex_unlock(&c->lock);
				while (batch != NULL) {
					struct cwm_out *next = batch->next;
					batch->next = NULL;
					cwm_send(c, batch);
					batch = next;
				}
				pthread_mutex_lock(&c->lock);
				cwm_worked(&busy, &last_us);
				continue;
			}
		}
		if (c->stopping)
			wait_ms = c->stop_deadline - now;
		else if (c->state == CWM_DISCONNECTED)
			wait_ms = c->reconnect_at - now;
		cwm_wait_for_work(c, &c->io_cond, &c->io_waiting, &busy, wait_ms);
	}

	int was_connected = c->state == CWM_CONNECTED;
	char *broker = cwm_strdup(c->broker);
	c->state = CWM_IDLE;
	atomic_store(&c->connected, 0);
	pthread_mutex_unlock(&c->lock);

	cwm_io_shutdown(c, was_connected);

	pthread_mutex_lock(&c->lock);
	cwm_fail_all(c);
	if (was_connected) {
		const char *msg = "stopped";
		const char *b = broker != NULL ? broker : "";
		struct cwm_event *ev =
		    c->on_disconnect != NULL
		        ? cwm_event_new(EV_DISCONNECT, strlen(msg) + strlen(b) + 2)
		        : NULL;
		if (ev != NULL) {
			size_t used = 0;
			ev->u.disc.stopped = 1;
			ev->u.disc.broker = cwm_event_str(ev, &used, b);
			ev->u.disc.message = cwm_event_str(ev, &used, msg);
			cwm_push_event(c, ev);
		}
		cwm_log_locked(c, MG_MQTT_LOG_INFO, "disconnected from %s (stopped)",
		               b);
	}
	pthread_mutex_unlock(&c->lock);
	free(broker);
	return NULL;
}

/* ========================================================================
 * 10. paho callbacks (paho's threads; they take c->lock briefly)
 * ====================================================================== */

/* Reports command r done. result: 0, an MQTT 5 reason code, or a negative
 * MG_MQTT_ERR_*. retry: paho gave it back because the connection dropped;
 * user commands go to retry (sent again after reconnect), internal ones
 * (renewal, birth) are dropped because every connect makes them anew.
 * codes: SUBACK / UNSUBACK codes. Any thread, without c->lock. */
static void cwm_done(struct mg_mqtt *c, struct cwm_out *r, int result,
                     int retry, const int *codes, int ncodes)
{
	struct cwm_event *ev = NULL;
	int *zeros = NULL;

	if (r->type == CMD_UNSUBSCRIBE && codes == NULL && result == 0) {
		zeros = calloc((size_t)r->nfilters, sizeof(int));
		codes = zeros;
		ncodes = zeros != NULL ? r->nfilters : 0;
	}
	pthread_mutex_lock(&c->lock);
	if (r->in_paho) {
		cwm_inpaho_unlink(c, r);
		if (r->type == CMD_PUBLISH) {
			if (r->qos > 0)
				c->inflight--;
			else
				c->inflight0--;
		}
	}
	if (c->io_waiting == CWM_IDLE_WAIT)
		pthread_cond_signal(&c->io_cond);
	/* Given back by paho: user commands (and SUBSCRIBEs renewal skips, as
	 * their filters are counted) go again after the reconnect; renewal and
	 * birth are made anew by every connect. */
	int keep = !r->internal;
	for (int i = 0; i < r->nfilters && !keep; i++)
		keep = r->flags[i] & CMD_COUNTED;
	if (retry && keep && r->type == CMD_PUBLISH && r->sent) {
		/* A broker that closes the connection over a message (larger than
		 * its maximum packet size, with MQTT 3.1.1 or without announcing
		 * one) would get it again after every reconnect, and nothing
		 * after it: after CWM_MAX_LOSSES such connections it is given
		 * up. */
		r->sent = 0;
		if (r->lost_on != c->connects) {
			r->lost_on = c->connects;
			r->losses++;
		}
		if (r->losses >= CWM_MAX_LOSSES) {
			retry = 0;
			result = MG_MQTT_ERR_CONNECTION_LOST;
			cwm_log_locked(c, MG_MQTT_LOG_ERROR,
			               "message %d to '%s' (%zu bytes) was in flight "
			               "when the connection was lost %d times in a "
			               "row: given up (does the broker refuse it, "
			               "too large for it?)",
			               r->id, r->topic, r->len, r->losses);
		}
	}
	if (retry && keep) {
		cwm_retry_insert(c, r);
		pthread_mutex_unlock(&c->lock);
		free(zeros);
		return;
	}
	if (result >= 0)
		c->send_blocked = 0;

	if (r->type == CMD_PUBLISH) {
		int ok = result == 0 || (result > 0 && result < 0x80);
		if (!r->internal) {
			c->unfinished--;
			if (ok)
				c->published++;
			else
				c->publish_failed++;
			/* Unsent at stop: the file stays, for the next start. */
			if (result != MG_MQTT_ERR_STOPPED)
				cwm_persist_remove(c, r);
			if (c->on_publish != NULL && !r->restored &&
			    (ev = cwm_event_new(EV_PUBACK, 0)) != NULL) {
				ev->u.ack.id = r->id;
				ev->u.ack.result = result;
			}
		} else if (!ok && !retry) {
			cwm_log_locked(c, MG_MQTT_LOG_WARNING,
			               "birth message to '%s' not sent: %s (%d)", r->topic,
			               result < 0 ? mg_mqtt_strerror(result) : "refused",
			               result);
		}
	} else if (!retry && r->type == CMD_SUBSCRIBE) {
		/* One acknowledgement per caller, with the code of its filter. */
		for (int i = 0; i < r->nfilters; i++) {
			struct cwm_sub *s = cwm_map_get(&c->subs, r->filters[i],
			                                strlen(r->filters[i]));
			int has = result == 0 && i < ncodes;
			if (s != NULL && (r->flags[i] & CMD_COUNTED) && s->pending > 0)
				s->pending--;
			if (s != NULL && s->gone) {
				if (s->pending == 0) {
					if (r->flags[i] & CMD_BORROWED) {
						/* the string goes with the entry: keep a copy for
						 * the log line below */
						r->flags[i] &= (unsigned char)~CMD_BORROWED;
						char *copy = cwm_strdup(r->filters[i]);
						if (r->wire[i] == r->filters[i])
							r->wire[i] = copy;
						r->filters[i] = copy != NULL ? copy : (char *)"";
						if (copy == NULL)
							r->flags[i] |= CMD_BORROWED; /* never free "" */
					}
					cwm_map_del(&c->subs, s->filter, strlen(s->filter));
					cwm_sub_free(s);
				}
				s = NULL;
			}
			if (s != NULL && has)
				s->granted = codes[i];
			if (has && codes[i] >= 0x80)
				cwm_log_locked(c, MG_MQTT_LOG_WARNING,
				               "the broker refused the subscription to '%s' "
				               "(code 0x%02x)",
				               r->filters[i], (unsigned)codes[i]);
			struct cwm_event *e;
			if (r->ids[i] > 0 && c->on_subscribe != NULL &&
			    (e = cwm_event_new(EV_SUBACK, sizeof(int))) != NULL) {
				e->u.ack.id = r->ids[i];
				e->u.ack.result = has || result != 0 ? result : MG_MQTT_ERR_PAHO;
				e->u.ack.count = has ? 1 : 0;
				e->u.ack.codes = has ? (int *)(void *)e->data : NULL;
				if (has)
					memcpy(e->data, &codes[i], sizeof(int));
				cwm_push_event(c, e);
			}
		}
	} else if (!retry) {
		mg_mqtt_ack_handler h = c->on_unsubscribe;
		if (!r->internal && h != NULL &&
		    (ev = cwm_event_new(EV_UNSUBACK, sizeof(int) * (size_t)ncodes)) !=
		        NULL) {
			ev->u.ack.id = r->id;
			ev->u.ack.result = result;
			ev->u.ack.count = result == 0 ? ncodes : 0;
			ev->u.ack.codes = ev->u.ack.count > 0 ? (int *)(void *)ev->data
			                                      : NULL;
			if (ev->u.ack.count > 0)
				memcpy(ev->data, codes, sizeof(int) * (size_t)ncodes);
		}
	}
	if (ev != NULL)
		cwm_push_event(c, ev);
	pthread_mutex_unlock(&c->lock);
	free(zeros);
	cwm_out_free(r);
}

static void cwm_on_done_ok(void *ctx, MQTTAsync_successData *d)
{
	struct cwm_out *r = ctx;
	if (r->type == CMD_SUBSCRIBE) {
		if (r->nfilters == 1)
			cwm_done(r->c, r, 0, 0, &d->alt.qos, 1);
		else
			cwm_done(r->c, r, 0, 0, d->alt.qosList, r->nfilters);
	} else {
		cwm_done(r->c, r, 0, 0, NULL, 0);
	}
}

static void cwm_on_done_fail(void *ctx, MQTTAsync_failureData *d)
{
	struct cwm_out *r = ctx;
	if (r->type == CMD_SUBSCRIBE && d->code == 0x80) {
		/* MQTT 3.1.1 SUBACK failure for a one-filter request. */
		int code = 0x80;
		cwm_done(r->c, r, 0, 0, &code, 1);
		return;
	}
	/* MQTT 3 has no refusal for publish or unsubscribe: the connection
	 * went away (or the client is being destroyed). */
	cwm_done(r->c, r, MG_MQTT_ERR_CONNECTION_LOST, 1, NULL, 0);
}

static void cwm_on_done_ok5(void *ctx, MQTTAsync_successData5 *d)
{
	struct cwm_out *r = ctx;
	int buf[CWM_RENEW_CHUNK] = {0}, n = 0;
	if (r->type == CMD_PUBLISH) {
		cwm_done(r->c, r, (int)d->reasonCode, 0, NULL, 0);
		return;
	}
	int count = r->type == CMD_SUBSCRIBE ? d->alt.sub.reasonCodeCount
	                                     : d->alt.unsub.reasonCodeCount;
	enum MQTTReasonCodes *rc = r->type == CMD_SUBSCRIBE
	                               ? d->alt.sub.reasonCodes
	                               : d->alt.unsub.reasonCodes;
	int *codes = r->nfilters <= CWM_RENEW_CHUNK
	                 ? buf
	                 : calloc((size_t)r->nfilters, sizeof(int));
	if (codes == NULL) {
		cwm_done(r->c, r, MG_MQTT_ERR_NOMEM, 0, NULL, 0);
		return;
	}
	/* paho fills reasonCodes only for more than one filter; with one, the
	 * array pointer is left uninitialised and the code is in reasonCode. */
	for (n = 0; n < r->nfilters; n++)
		codes[n] = (count > 1 && rc != NULL && n < count) ? (int)rc[n]
		                                                   : (int)d->reasonCode;
	cwm_done(r->c, r, 0, 0, codes, n);
	if (codes != buf)
		free(codes);
}

static void cwm_on_done_fail5(void *ctx, MQTTAsync_failureData5 *d)
{
	struct cwm_out *r = ctx;
	if ((int)d->reasonCode >= 0x80) {
		if (r->type == CMD_PUBLISH) {
			cwm_done(r->c, r, (int)d->reasonCode, 0, NULL, 0);
		} else {
			int *codes = calloc((size_t)r->nfilters, sizeof(int));
			for (int i = 0; codes != NULL && i < r->nfilters; i++)
				codes[i] = (int)d->reasonCode;
			cwm_done(r->c, r, codes != NULL ? 0 : MG_MQTT_ERR_NOMEM, 0, codes,
			         codes != NULL ? r->nfilters : 0);
			free(codes);
		}
		return;
	}
	cwm_done(r->c, r, MG_MQTT_ERR_CONNECTION_LOST, 1, NULL, 0);
}

/* paho reports "host:port" (or ws://host:port/path) for the connected
 * server; return our own spelling of that URI. [L] */
static const char *cwm_known_uri(const struct mg_mqtt *c, const char *uri)
{
	if (uri == NULL)
		return c->cfg.uris[0];
	for (int i = 0; i < c->cfg.nuris; i++) {
		const char *u = c->cfg.uris[i], *hp = strstr(u, "://");
		if (strcmp(u, uri) == 0 || (hp != NULL && strcmp(hp + 3, uri) == 0))
			return u;
	}
	return uri;
}

static void cwm_connected(struct mg_mqtt *c, const char *uri, int session,
                          int recvmax, unsigned maxpacket)
{
	atomic_store(&c->max_packet, maxpacket);
	pthread_mutex_lock(&c->lock);
	const char *b = cwm_known_uri(c, uri);
	char *broker = cwm_strdup(b);
	if (broker != NULL) {
		free(c->broker);
		c->broker = broker;
	}
	c->state = CWM_CONNECTED;
	atomic_store(&c->connected, 1);
	c->send_blocked = 0;
	c->uri_try = 0; /* the next round starts with the first again */
	c->window = recvmax > 0 && recvmax < c->cfg.max_inflight
	                ? recvmax
	                : c->cfg.max_inflight;
	c->backoff_s = c->cfg.reconnect_min;
	if (c->connects > 0)
		c->reconnects++;
	c->connects++;
	c->renew_needed = 1;
	c->birth_needed = c->cfg.birth_topic != NULL;
	int attempt = c->attempt;
	c->attempt = 0;
	if (c->first_result == 0)
		c->first_result = 1;
	pthread_cond_broadcast(&c->state_cond);
	if (c->on_connect != NULL || c->bridge != NULL) {
		static const char msg[] = "connected";
		struct cwm_event *ev =
		    cwm_event_new(EV_CONNECT, strlen(c->broker) + sizeof(msg) + 1);
		if (ev != NULL) {
			size_t used = 0;
			ev->u.conn.connected = 1;
			ev->u.conn.session_present = session;
			ev->u.conn.attempt = attempt;
			ev->u.conn.broker = cwm_event_str(ev, &used, c->broker);
			ev->u.conn.message = cwm_event_str(ev, &used, msg);
			cwm_push_event(c, ev);
		}
	}
	cwm_log_locked(c, MG_MQTT_LOG_INFO, "connected to %s as '%s'%s",
	               c->broker, c->client_id,
	               session ? " (session resumed)" : "");
	if (c->io_waiting == CWM_IDLE_WAIT)
		pthread_cond_signal(&c->io_cond);
	pthread_mutex_unlock(&c->lock);
}

static void cwm_on_connect_ok(void *ctx, MQTTAsync_successData *d)
{
	cwm_connected(ctx, d->alt.connect.serverURI, d->alt.connect.sessionPresent,
	              0, 0);
}

static void cwm_on_connect_ok5(void *ctx, MQTTAsync_successData5 *d)
{
	int rm = 0;
	if (MQTTProperties_hasProperty(&d->properties,
	                               MQTTPROPERTY_CODE_RECEIVE_MAXIMUM))
		rm = MQTTProperties_getNumericValue(&d->properties,
		                                    MQTTPROPERTY_CODE_RECEIVE_MAXIMUM);
	unsigned mp = 0;
	if (MQTTProperties_hasProperty(&d->properties,
	                               MQTTPROPERTY_CODE_MAXIMUM_PACKET_SIZE))
		mp = (unsigned)MQTTProperties_getNumericValue(
		    &d->properties, MQTTPROPERTY_CODE_MAXIMUM_PACKET_SIZE);
	cwm_connected(ctx, d->alt.connect.serverURI, d->alt.connect.sessionPresent,
	              rm, mp);
}

static const char *cwm_connack_text(int rc)
{
	static const char *const t[] = {"accepted",
	                                "unacceptable protocol version",
	                                "identifier rejected",
	                                "server unavailable",
	                                "bad user name or password",
	                                "not authorized"};
	return rc >= 0 && rc <= 5 ? t[rc] : "refused";
}

static void cwm_connect_failed(struct mg_mqtt *c, int error, int reason,
                               const char *text)
{
	char brokers[512] = "", msg[300];
	size_t used = 0;

	pthread_mutex_lock(&c->lock);
	if (c->uri_try + 1 < c->cfg.nuris && !c->stopping) {
		/* More of BROKER_URL to try in this round: the next one now. */
		const char *tried = c->cfg.uris[c->uri_try];
		c->uri_try++;
		c->state = CWM_DISCONNECTED;
		c->reconnect_at = cwm_now_ms();
		cwm_log_locked(c, MG_MQTT_LOG_INFO,
		               "connection to %s failed: %s%s%s; trying %s", tried,
		               reason >= 0 ? "refused by the broker: " : "",
		               text != NULL ? text : "failed",
		               c->tls_error ? " (TLS error, see the log)" : "",
		               c->cfg.uris[c->uri_try]);
		if (c->io_waiting == CWM_IDLE_WAIT)
			pthread_cond_signal(&c->io_cond);
		pthread_mutex_unlock(&c->lock);
		return;
	}
	c->uri_try = 0;
	for (int i = 0; i < c->cfg.nuris && used < sizeof(brokers); i++)
		used += (size_t)snprintf(brokers + used, sizeof(brokers) - used,
		                         "%s%s", i > 0 ? ", " : "", c->cfg.uris[i]);
	if (error == MG_MQTT_ERR_CONNECT && c->tls_error)
		error = MG_MQTT_ERR_TLS;
	if (reason >= 0)
		snprintf(msg, sizeof(msg), "refused by the broker: %s (code %d)",
		         text, reason);
	else
		snprintf(msg, sizeof(msg), "%s%s", text != NULL ? text : "failed",
		         c->tls_error ? " (TLS error, see the log)" : "");
	c->state = CWM_DISCONNECTED;
	atomic_store(&c->connected, 0);
	int attempt = c->attempt;
	int64_t delay = cwm_backoff_ms(c);
	c->reconnect_at = cwm_now_ms() + delay;
	if (c->first_result == 0) {
		c->first_result = error;
		cwm_fmt(c->first_msg, sizeof(c->first_msg), "%s: cannot connect to %s: %s",
		        c->prefix, brokers, msg);
		pthread_cond_broadcast(&c->state_cond);
	}
	if (c->on_connect != NULL) {
		struct cwm_event *ev =
		    cwm_event_new(EV_CONNECT, strlen(brokers) + strlen(msg) + 2);
		if (ev != NULL) {
			size_t u = 0;
			ev->u.conn.error = error;
			ev->u.conn.reason_code = reason;
			ev->u.conn.attempt = attempt;
			ev->u.conn.broker = cwm_event_str(ev, &u, brokers);
			ev->u.conn.message = cwm_event_str(ev, &u, msg);
			cwm_push_event(c, ev);
		}
	}
	if (!c->stopping)
		cwm_log_locked(c, MG_MQTT_LOG_WARNING,
		               "connection attempt %d to %s failed: %s; next attempt "
		               "in %.1f s",
		               attempt, brokers, msg, (double)delay / 1000.0);
	if (c->io_waiting == CWM_IDLE_WAIT)
		pthread_cond_signal(&c->io_cond);
	pthread_mutex_unlock(&c->lock);
}

static void cwm_on_connect_fail(void *ctx, MQTTAsync_failureData *d)
{
	if (d != NULL && d->code > 0)
		cwm_connect_failed(ctx, MG_MQTT_ERR_REFUSED, d->code,
		                   cwm_connack_text(d->code));
	else
		cwm_connect_failed(ctx, MG_MQTT_ERR_CONNECT, -1,
		                   d != NULL && d->message != NULL
		                       ? d->message
		                       : MQTTAsync_strerror(d != NULL ? d->code : -1));
}

static void cwm_on_connect_fail5(void *ctx, MQTTAsync_failureData5 *d)
{
	/* paho puts a CONNACK refusal in reasonCode or, after trying every
	 * URL, in code. */
	int reason = d == NULL                      ? 0
	             : (int)d->reasonCode >= 0x80 ? (int)d->reasonCode
	             : d->code >= 0x80            ? d->code
	                                          : 0;
	if (reason != 0)
		cwm_connect_failed(ctx, MG_MQTT_ERR_REFUSED, reason,
		                   MQTTReasonCode_toString((enum MQTTReasonCodes)reason));
	else
		cwm_connect_failed(ctx, MG_MQTT_ERR_CONNECT, -1,
		                   d != NULL && d->message != NULL
		                       ? d->message
		                       : MQTTAsync_strerror(d != NULL ? d->code : -1));
}

/* The connection is gone: schedule the next attempt and tell the
 * handlers. Called with c->lock held; a no-op unless connected, so that
 * paho's two ways of saying it (connectionLost, and the disconnected
 * callback for an MQTT 5 DISCONNECT from the broker) count once. */
static void cwm_conn_lost_locked(struct mg_mqtt *c, const char *cause)
{
	if (c->state != CWM_CONNECTED)
		return;
	char why[128];
	if (c->server_reason != 0)
		snprintf(why, sizeof(why), "the broker disconnected: %s (code 0x%02x)",
		         MQTTReasonCode_toString(c->server_reason),
		         (unsigned)c->server_reason);
	else
		snprintf(why, sizeof(why), "%s",
		         cause != NULL ? cause : "connection lost");
	c->state = CWM_DISCONNECTED;
	atomic_store(&c->connected, 0);
	int64_t delay = cwm_backoff_ms(c);
	c->reconnect_at = cwm_now_ms() + delay;
	if (c->on_disconnect != NULL || c->bridge != NULL) {
		const char *b = c->broker != NULL ? c->broker : "";
		struct cwm_event *ev =
		    cwm_event_new(EV_DISCONNECT, strlen(b) + strlen(why) + 2);
		if (ev != NULL) {
			size_t u = 0;
			ev->u.disc.reason_code = c->server_reason;
			ev->u.disc.broker = cwm_event_str(ev, &u, b);
			ev->u.disc.message = cwm_event_str(ev, &u, why);
			cwm_push_event(c, ev);
		}
	}
	c->server_reason = 0;
	cwm_log_locked(c, MG_MQTT_LOG_WARNING,
	               "connection to %s lost: %s; reconnecting in %.1f s",
	               c->broker != NULL ? c->broker : "broker", why,
	               (double)delay / 1000.0);
	if (c->io_waiting == CWM_IDLE_WAIT)
		pthread_cond_signal(&c->io_cond);
}

static void cwm_on_lost(void *ctx, char *cause)
{
	struct mg_mqtt *c = ctx;
	pthread_mutex_lock(&c->lock);
	cwm_conn_lost_locked(c, cause);
	pthread_mutex_unlock(&c->lock);
}

/* An MQTT 5 DISCONNECT from the broker (session taken over, packet too
 * large, server shutting down, ...). paho marks the client disconnected
 * before it closes the socket and then does not always call
 * connectionLost, so this is the connection loss too. */
static void cwm_on_server_disconnect(void *ctx, MQTTProperties *props,
                                     enum MQTTReasonCodes reason)
{
	struct mg_mqtt *c = ctx;
	(void)props;
	pthread_mutex_lock(&c->lock);
	c->server_reason = (int)reason;
	cwm_conn_lost_locked(c, NULL);
	pthread_mutex_unlock(&c->lock);
}

static int cwm_req_arrived(struct mg_mqtt *c, const char *topic, size_t tl,
                           MQTTAsync_message *m);

static int cwm_on_message(void *ctx, char *topic, int topic_len,
                          MQTTAsync_message *m)
{
	struct mg_mqtt *c = ctx;
	size_t tl = topic_len > 0 ? (size_t)topic_len : strlen(topic);
	if (cwm_req_arrived(c, topic, tl, m)) {
		MQTTAsync_freeMessage(&m);
		MQTTAsync_free(topic);
		return 1;
	}
	struct cwm_event *ev = malloc(sizeof(*ev));
	int64_t now;

	pthread_mutex_lock(&c->lock);
	if (ev != NULL && c->ev_msgs >= c->cfg.queue_size && !c->stopping) {
		/* Give mqtt-dispatch a moment to make room: a burst, or the machine
		 * being busy, then costs nothing. Bounded, so that a handler that
		 * stays slow costs messages but never the connection (this is
		 * paho's receive thread, which also keeps the connection alive). */
		struct timespec until = cwm_deadline(CWM_QUEUE_WAIT_MS);
		c->space_waiting++;
		while (c->ev_msgs >= c->cfg.queue_size && !c->stopping &&
		       pthread_cond_timedwait(&c->space_cond, &c->lock, &until) !=
		           ETIMEDOUT) {
		}
		c->space_waiting--;
	}
	if (ev == NULL || c->ev_msgs >= c->cfg.queue_size) {
		c->dropped_queue_full++;
		c->drops_unlogged++;
		if ((now = cwm_now_ms()) - c->last_drop_log >= 1000) {
			cwm_log_locked(c, MG_MQTT_LOG_WARNING,
			               "dispatch queue full (QUEUE_SIZE %d): dropped %llu "
			               "message(s), %llu in all",
			               c->cfg.queue_size,
			               (unsigned long long)c->drops_unlogged,
			               (unsigned long long)c->dropped_queue_full);
			c->last_drop_log = now;
			c->drops_unlogged = 0;
		}
		pthread_mutex_unlock(&c->lock);
		free(ev);
		MQTTAsync_freeMessage(&m);
		MQTTAsync_free(topic);
		return 1;
	}
	c->ev_msgs++;
	c->received++;
	memset(ev, 0, sizeof(*ev));
	ev->type = EV_MESSAGE;
	ev->u.msg.m = m;
	ev->u.msg.topic = topic;
	ev->u.msg.topic_len = tl;
	cwm_push_event(c, ev);
	pthread_mutex_unlock(&c->lock);
	return 1;
}

static int cwm_on_ssl_error(const char *str, size_t len, void *u)
{
	struct mg_mqtt *c = u;
	while (len > 0 && (str[len - 1] == '\n' || str[len - 1] == '\r'))
		len--;
	cwm_log(c, MG_MQTT_LOG_ERROR, "TLS: %.*s", (int)len, str);
	pthread_mutex_lock(&c->lock);
	c->tls_error = 1;
	pthread_mutex_unlock(&c->lock);
	return 1;
}

/* ========================================================================
 * 11. Dispatch (mqtt-dispatch)
 * ====================================================================== */

/* Runs the handlers of one message: every matching topic handler in
 * registration order, else the catch-all; then the bridge's browsers. */
static void cwm_dispatch_handlers(struct mg_mqtt *c,
                                  const struct mg_mqtt_message *msg)
{
	if (cwm_tree_match(&c->tree, msg->topic, msg->topic_len, &c->cur, &c->nxt,
	                   &c->hits) != 0) {
		cwm_log(c, MG_MQTT_LOG_ERROR, "out of memory matching '%s'", msg->topic);
		c->hits.n = 0;
	}
	if (c->hits.n == 0) {
		if (c->on_message != NULL)
			c->on_message(c, msg, c->on_message_ud);
	} else {
		struct mg_mqtt_message m = *msg;
		for (size_t i = 0; i < c->hits.n; i++) {
			const struct cwm_handler *h = c->hits.v[i];
			m.params = h->params;
			h->fn(c, &m, h->ud);
		}
	}
	if (c->bridge != NULL)
		cwm_bridge_deliver(c->bridge, msg);
}

static void cwm_dispatch_message(struct mg_mqtt *c, struct cwm_event *ev)
{
	MQTTAsync_message *m = ev->u.msg.m;
	struct mg_mqtt_props props;
	struct mg_mqtt_message msg;
	void *mem = NULL;

	msg.topic = ev->u.msg.topic;
	msg.topic_len = ev->u.msg.topic_len;
	msg.payload = m->payload;
	msg.payload_len = m->payloadlen > 0 ? (size_t)m->payloadlen : 0;
	msg.qos = m->qos;
	msg.retain = m->retained;
	msg.dup = m->dup;
	msg.packet_id = m->qos > 0 ? m->msgid : 0;
	msg.props = &cwm_no_props;
	msg.params = NULL;
	if (m->properties.count > 0) {
		cwm_props_from_paho(&m->properties, &props, &mem);
		msg.props = &props;
	}
	cwm_dispatch_handlers(c, &msg);
	free(mem);
	MQTTAsync_freeMessage(&m);
	MQTTAsync_free(ev->u.msg.topic);
}

/* Runs the handler of one event and frees it. */
static void cwm_dispatch(struct mg_mqtt *c, struct cwm_event *ev)
{
	switch (ev->type) {
	case EV_MESSAGE:
		cwm_dispatch_message(c, ev);
		break;
	case EV_CONNECT:
		if (c->on_connect != NULL)
			c->on_connect(c, &ev->u.conn, c->on_connect_ud);
		if (c->bridge != NULL && ev->u.conn.connected)
			cwm_bridge_state(c->bridge, 1, ev->u.conn.broker);
		break;
	case EV_DISCONNECT:
		if (c->on_disconnect != NULL)
			c->on_disconnect(c, &ev->u.disc, c->on_disconnect_ud);
		if (c->bridge != NULL && !ev->u.disc.stopped)
			cwm_bridge_state(c->bridge, 0, ev->u.disc.broker);
		break;
	case EV_PUBACK:
		if (c->on_publish != NULL)
			c->on_publish(c, ev->u.ack.id, ev->u.ack.result, c->on_publish_ud);
		break;
	case EV_SUBACK:
	case EV_UNSUBACK: {
		mg_mqtt_ack_handler h =
		    ev->type == EV_SUBACK ? c->on_subscribe : c->on_unsubscribe;
		void *ud = ev->type == EV_SUBACK ? c->on_subscribe_ud
		                                 : c->on_unsubscribe_ud;
		if (h != NULL)
			h(c, ev->u.ack.id, ev->u.ack.result, ev->u.ack.codes,
			  ev->u.ack.count, ud);
		break;
	}
	case EV_LOG:
		if (c->on_log != NULL)
			c->on_log(c, ev->u.log.level, ev->u.log.text, c->on_log_ud);
		break;
	}
	free(ev);
}

/* Frees an event without running it (a client that never ran). */
static void cwm_event_discard(struct cwm_event *ev)
{
	if (ev->type == EV_MESSAGE) {
		MQTTAsync_freeMessage(&ev->u.msg.m);
		MQTTAsync_free(ev->u.msg.topic);
	}
	free(ev);
}

static void *cwm_dispatch_main(void *arg)
{
	struct mg_mqtt *c = arg;
	pthread_setname_np(pthread_self(), "mqtt-dispatch");

	int busy = 0;
	int64_t last_us = 0;
	pthread_mutex_lock(&c->lock);
	for (;;) {
		while (c->evq == NULL && !c->dispatch_exit)
			cwm_wait_for_work(c, &c->ev_cond, &c->dispatch_waiting, &busy, -1);
		if (c->evq == NULL)
			break;
		struct cwm_event *batch = c->evq;
		c->evq = c->evq_tail = NULL;
		pthread_mutex_unlock(&c->lock);

		/* Messages of the batch keep counting against QUEUE_SIZE until they
		 * are handled, so that the bound covers all of them. */
		int nmsg = 0;
		while (batch != NULL) {
			struct cwm_event *next = batch->next;
			nmsg += batch->type == EV_MESSAGE;
			cwm_dispatch(c, batch);
			batch = next;
		}

		pthread_mutex_lock(&c->lock);
		cwm_worked(&busy, &last_us);
		c->ev_msgs -= nmsg;
		if (nmsg > 0 && c->space_waiting > 0)
			pthread_cond_broadcast(&c->space_cond);
		if (c->drops_unlogged > 0 && cwm_now_ms() - c->last_drop_log >= 1000) {
			cwm_log_locked(c, MG_MQTT_LOG_WARNING,
			               "dispatch queue full (QUEUE_SIZE %d): dropped %llu "
			               "message(s), %llu in all",
			               c->cfg.queue_size,
			               (unsigned long long)c->drops_unlogged,
			               (unsigned long long)c->dropped_queue_full);
			c->last_drop_log = cwm_now_ms();
			c->drops_unlogged = 0;
		}
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/* ========================================================================
 * 12. Bridge: MQTT for browsers over HTTP, WebSocket and Server-Sent Events
 *
 * Mounted at BRIDGE_PATH on the client's CivetWeb context. Each browser
 * connection is a struct cwm_bclient; its filters are counted onto the one
 * MQTT client (cwm_sub_ref). mqtt-dispatch puts each matching message,
 * rendered to JSON once, into every matching client's bounded queue and
 * never writes to a socket itself: WebSocket clients are written by
 * CWM_WRITERS "mqtt-bridge" threads (mg_websocket_write, which takes
 * CivetWeb's connection lock), SSE clients by the CivetWeb worker thread
 * that serves them. A client whose queue overflows is dropped and counted.
 *
 * Lifetime. CivetWeb's handlers point at an anchor (one per context and
 * prefix, never freed), whose mutex is the bridge lock: it guards the
 * bridge pointer, the clients, their queues and filters, and the delivery
 * tree. A handler that runs after mg_mqtt_stop() finds no bridge and
 * answers 503 instead of touching freed memory. WebSocket clients belong to
 * their connection (freed by the close handler), SSE clients to their
 * handler. Lock order: anchor lock, then c->lock; never the reverse.
 * ====================================================================== */

#define CWM_WRITERS 4            /* WebSocket writer threads per bridge */
#define CWM_SSE_HEARTBEAT_MS 1000 /* SSE comment line when idle; a failed
                                    write is how a handler learns that the
                                    browser left or the server stops */

/* -- MD5 (RFC 1321), for HTTP digest authentication ---------------------- */

struct cwm_md5 {
	uint32_t h[4];
	uint64_t n;
	unsigned char buf[64];
};

static void cwm_md5_block(uint32_t h[4], const unsigned char *p)
{
	static const uint32_t k[64] = {
	    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a,
	    0xa8304613, 0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be,
	    0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340,
	    0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
	    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8,
	    0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c,
	    0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
	    0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
	    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92,
	    0xffeff47d, 0x85845dd1, 0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1,
	    0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391};
	static const unsigned char r[64] = {
	    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
	    5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20,
	    4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
	    6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21};
	uint32_t w[16], a = h[0], b = h[1], c = h[2], d = h[3];
	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
		       (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
	for (int i = 0; i < 64; i++) {
		uint32_t f;
		int g;
		if (i < 16) {
			f = (b & c) | (~b & d);
			g = i;
		} else if (i < 32) {
			f = (d & b) | (~d & c);
			g = (5 * i + 1) % 16;
		} else if (i < 48) {
			f = b ^ c ^ d;
			g = (3 * i + 5) % 16;
		} else {
			f = c ^ (b | ~d);
			g = (7 * i) % 16;
		}
		uint32_t t = d;
		d = c;
		c = b;
		uint32_t x = a + f + k[i] + w[g];
		b = b + ((x << r[i]) | (x >> (32 - r[i])));
		a = t;
	}
	h[0] += a;
	h[1] += b;
	h[2] += c;
	h[3] += d;
}

static void cwm_md5_init(struct cwm_md5 *m)
{
	m->h[0] = 0x67452301;
	m->h[1] = 0xefcdab89;
	m->h[2] = 0x98badcfe;
	m->h[3] = 0x10325476;
	m->n = 0;
}

static void cwm_md5_add(struct cwm_md5 *m, const void *data, size_t len)
{
	const unsigned char *p = data;
	while (len > 0) {
		size_t used = (size_t)(m->n % 64), take = 64 - used;
		if (take > len)
			take = len;
		memcpy(m->buf + used, p, take);
		m->n += take;
		p += take;
		len -= take;
		if (m->n % 64 == 0)
			cwm_md5_block(m->h, m->buf);
	}
}

/* Finishes into 33 bytes of lower-case hex. */
static void cwm_md5_hex(struct cwm_md5 *m, char out[33])
{
	uint64_t bits = m->n * 8;
	unsigned char pad = 0x80, len[8];
	cwm_md5_add(m, &pad, 1);
	pad = 0;
	while (m->n % 64 != 56)
		cwm_md5_add(m, &pad, 1);
	for (int i = 0; i < 8; i++)
		len[i] = (unsigned char)(bits >> (8 * i));
	cwm_md5_add(m, len, 8);
	for (int i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x",
		         (unsigned)(m->h[i / 4] >> (8 * (i % 4))) & 0xff);
}

/* MD5 of the strings joined with ':' (NULL ends the list), as hex. */
static void cwm_md5_join(char out[33], ...)
{
	struct cwm_md5 m;
	va_list ap;
	const char *s;
	int first = 1;
	cwm_md5_init(&m);
	va_start(ap, out);
	while ((s = va_arg(ap, const char *)) != NULL) {
		if (!first)
			cwm_md5_add(&m, ":", 1);
		cwm_md5_add(&m, s, strlen(s));
		first = 0;
	}
	va_end(ap);
	cwm_md5_hex(&m, out);
}

/* -- base64 ---------------------------------------------------------------- */

static char *cwm_base64(const void *data, size_t n)
{
	static const char t[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *p = data;
	char *out = malloc(4 * ((n + 2) / 3) + 1), *o = out;
	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		*o++ = t[v >> 18];
		*o++ = t[(v >> 12) & 63];
		*o++ = i + 1 < n ? t[(v >> 6) & 63] : '=';
		*o++ = i + 2 < n ? t[v & 63] : '=';
	}
	*o = '\0';
	return out;
}

/* cJSON turns "\u0000" inside a string into a C string cut there: a topic
 * "a\u0000/x" would be read as "a", a payload "ab\u0000cd" as "ab". The
 * bridge refuses such JSON rather than act on a shortened field (binary
 * payloads travel as base64); a raw NUL byte likewise. An escape is a
 * backslash preceded by an even number of backslashes. */
static const char cwm_json_nul_err[] =
    "a JSON string holds \\u0000 (NUL), which no topic, text payload or "
    "property can carry; send binary payloads as base64";

static cJSON *cwm_json_parse(const char *s, size_t n, const char **err)
{
	if (memchr(s, '\0', n) != NULL) { /* never valid JSON text either */
		*err = cwm_json_nul_err;
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '\\')
			continue;
		size_t j = i;
		while (j < n && s[j] == '\\')
			j++;
		if ((j - i) % 2 == 1 && n - j >= 5 && s[j] == 'u' &&
		    memcmp(s + j + 1, "0000", 4) == 0) {
			*err = cwm_json_nul_err;
			return NULL;
		}
		i = j - 1;
	}
	*err = NULL;
	return cJSON_ParseWithLength(s, n);
}

/* Decodes standard base64 (padding optional); NULL if malformed. */
static unsigned char *cwm_unbase64(const char *s, size_t *len)
{
	size_t n = strlen(s), o = 0;
	unsigned char *out = malloc(n / 4 * 3 + 3);
	uint32_t acc = 0;
	int bits = 0;
	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		int v = ch >= 'A' && ch <= 'Z'   ? ch - 'A'
		        : ch >= 'a' && ch <= 'z' ? ch - 'a' + 26
		        : ch >= '0' && ch <= '9' ? ch - '0' + 52
		        : ch == '+'              ? 62
		        : ch == '/'              ? 63
		                                 : -1;
		if (ch == '=') {
			if (strspn(s + i, "=") != n - i) { /* padding only at the end */
				free(out);
				return NULL;
			}
			break;
		}
		if (v < 0) {
			free(out);
			return NULL;
		}
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	if (bits >= 6) { /* a lone trailing character */
		free(out);
		return NULL;
	}
	*len = o;
	return out;
}

/* Valid UTF-8 without NUL (JSON can carry any other code point). */
static int cwm_utf8_text(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + n;
	while (p < end) {
		unsigned c = *p++;
		int more;
		uint32_t cp;
		if (c == 0)
			return 0;
		if (c < 0x80)
			continue;
		if (c >= 0xc2 && c <= 0xdf)
			more = 1, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			more = 2, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			more = 3, cp = c & 0x07;
		else
			return 0;
		if (end - p < more)
			return 0;
		for (int i = 0; i < more; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (p[i] & 0x3f);
		}
		p += more;
		if ((more == 2 && cp < 0x800) || (more == 3 && cp < 0x10000) ||
		    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
	}
	return 1;
}

/* -- structures ------------------------------------------------------------- */

/* One outgoing message as JSON, shared by every client it goes to. */
struct cwm_bmsg {
	atomic_int refs;
	size_t len;
	char *sse; /* "data: <json>\n\n", made under the bridge lock when needed */
	size_t sse_len;
	char text[];
};

enum cwm_bkind { BC_WS, BC_SSE };

struct cwm_bridge;

struct cwm_bclient {
	struct cwm_bridge *b;     /* NULL once the bridge is gone */
	struct mg_connection *conn;
	enum cwm_bkind kind;
	unsigned id;
	/* Under the bridge lock: */
	struct cwm_bmsg **q;      /* ring of queued messages */
	unsigned qhead, qlen, qcap;
	int busy;                 /* a writer is writing to it */
	int listed;               /* in b->ready */
	int dead;                 /* dropped or closing: nothing more queued */
	int close_frame;          /* WS: a writer should send a close frame */
	struct cwm_bclient *prev, *next, *ready_next;
	struct cwm_map filters;   /* its filters -> (intptr_t)qos + 1 */
	uint64_t stamp;           /* last message it was given (dedupe) */
	pthread_cond_t cond;      /* SSE: its handler waits here */
};

struct cwm_anchor {
	struct cwm_anchor *next;
	const struct mg_context *ctx;
	char prefix[64];
	pthread_mutex_t lock;     /* the bridge lock */
	pthread_cond_t idle;      /* cwm_bridge_destroy waits for users */
	_Atomic(struct cwm_bridge *) bridge;
	atomic_int users;         /* CivetWeb threads inside the bridge */
	atomic_int draining;      /* a destroy waits for users to reach 0 */
};

static struct cwm_anchor *cwm_anchors; /* under cwm_registry_lock */

struct cwm_bridge {
	struct mg_mqtt *c;
	struct cwm_anchor *a;
	const char *path;         /* c->cfg.bridge_path */
	size_t plen;
	char *realm;              /* CivetWeb's authentication_domain */
	unsigned char secret[16]; /* signs digest nonces */
	/* Under the bridge lock: */
	pthread_cond_t wcond;     /* writers wait for ready clients */
	pthread_cond_t idle;      /* a writer let go of a client */
	atomic_int stopping;      /* set under the bridge lock */
	struct cwm_tnode tree;    /* browser filters -> clients (handler ud) */
	struct cwm_bclient *clients, *ready, *ready_tail;
	uint64_t seq;
	unsigned next_id;
	struct cwm_vec cur, nxt, hits;
	pthread_t writers[CWM_WRITERS];
	int nwriters;
	/* Counters, read by the status without the lock. */
	atomic_int n_ws, n_sse;
	atomic_uint_fast64_t delivered, dropped_clients, publishes, rejected;
	/* Last values (BRIDGE_LAST_VALUES): written by mqtt-dispatch, read by
	 * requests, under lv_lock. */
	pthread_mutex_t lv_lock;
	struct cwm_map lv;              /* topic -> struct cwm_lv */
	struct cwm_lv *lv_old, *lv_new; /* least .. most recently updated */
};

/* The last message seen on one topic. */
struct cwm_lv {
	struct cwm_lv *older, *newer;
	const char *topic; /* the map's key */
	size_t topic_len;
	void *payload;
	size_t len;
	int qos, retain;
	int64_t at_ms;     /* when it arrived: ms since the epoch */
};

static void cwm_lv_unlink(struct cwm_bridge *b, struct cwm_lv *e)
{
	if (e->older != NULL)
		e->older->newer = e->newer;
	else
		b->lv_old = e->newer;
	if (e->newer != NULL)
		e->newer->older = e->older;
	else
		b->lv_new = e->older;
	e->older = e->newer = NULL;
}

/* mqtt-dispatch: remembers m as the last value of its topic; the least
 * recently updated topic goes when BRIDGE_LAST_VALUES are kept. */
static void cwm_lv_update(struct cwm_bridge *b, const struct mg_mqtt_message *m)
{
	const struct cwm_settings *cfg = &b->c->cfg;
	size_t max = (size_t)cfg->bridge_last_values;
	struct timespec ts;
	int readable = 0;
	/* Only what a browser may read (BRIDGE_SUBSCRIBE_ALLOW): the rest
	 * could never be asked for, and would push readable topics out. */
	for (int i = 0; i < cfg->nbsub && !readable; i++)
		readable = cwm_match(cfg->bsub[i] +
		                         cwm_share_len(cfg->bsub[i], strlen(cfg->bsub[i])),
		                     m->topic, m->topic_len);
	if (max == 0 || !readable)
		return;
	void *copy = malloc(m->payload_len > 0 ? m->payload_len : 1);
	if (copy == NULL)
		return;
	if (m->payload_len > 0)
		memcpy(copy, m->payload, m->payload_len);
	clock_gettime(CLOCK_REALTIME, &ts);
	pthread_mutex_lock(&b->lv_lock);
	struct cwm_lv *e = cwm_map_get(&b->lv, m->topic, m->topic_len);
	if (e != NULL) {
		cwm_lv_unlink(b, e);
		free(e->payload);
	} else {
		if (b->lv.n >= max && b->lv_old != NULL) {
			struct cwm_lv *o = b->lv_old;
			cwm_lv_unlink(b, o);
			cwm_map_del(&b->lv, o->topic, o->topic_len); /* frees o->topic */
			free(o->payload);
			free(o);
		}
		if ((e = calloc(1, sizeof(*e))) == NULL ||
		    cwm_map_put_key(&b->lv, m->topic, m->topic_len, e, &e->topic) !=
		        0) {
			pthread_mutex_unlock(&b->lv_lock);
			free(e);
			free(copy);
			return;
		}
		e->topic_len = m->topic_len;
	}
	e->payload = copy;
	e->len = m->payload_len;
	e->qos = m->qos;
	e->retain = m->retain;
	e->at_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	e->older = b->lv_new;
	if (b->lv_new != NULL)
		b->lv_new->newer = e;
	else
		b->lv_old = e;
	b->lv_new = e;
	pthread_mutex_unlock(&b->lv_lock);
}

static void cwm_lv_free(void *p)
{
	struct cwm_lv *e = p;
	free(e->payload);
	free(e);
}

static void cwm_bmsg_put(struct cwm_bmsg *m)
{
	if (m != NULL && atomic_fetch_sub(&m->refs, 1) == 1) {
		free(m->sse);
		free(m);
	}
}

/* Adds "payload": the text when it is UTF-8, else base64 and
 * "base64":true (how the bridge carries payloads everywhere). Returns 0 or
 * -1 (out of memory). */
static int cwm_add_payload(cJSON *o, const void *payload, size_t len)
{
	char *text;
	int utf8 = cwm_utf8_text(payload, len);
	if (utf8) {
		if ((text = malloc(len + 1)) == NULL)
			return -1;
		if (len > 0)
			memcpy(text, payload, len);
		text[len] = '\0';
	} else if ((text = cwm_base64(payload, len)) == NULL) {
		return -1;
	}
	cJSON *v = cJSON_AddStringToObject(o, "payload", text);
	free(text);
	if (v == NULL || (!utf8 && cJSON_AddBoolToObject(o, "base64", 1) == NULL))
		return -1;
	return 0;
}

/* The JSON a browser receives for a message. */
static struct cwm_bmsg *cwm_bmsg_make(const struct mg_mqtt_message *m)
{
	cJSON *o = cJSON_CreateObject();
	if (o == NULL)
		return NULL;
	cJSON_AddStringToObject(o, "op", "message");
	cJSON_AddStringToObject(o, "topic", m->topic);
	if (cwm_add_payload(o, m->payload, m->payload_len) != 0) {
		cJSON_Delete(o);
		return NULL;
	}
	cJSON_AddNumberToObject(o, "qos", m->qos);
	cJSON_AddBoolToObject(o, "retain", m->retain);
	const struct mg_mqtt_props *p = m->props;
	if (p->user_count > 0 || p->response_topic || p->correlation_data ||
	    p->content_type || p->message_expiry || p->payload_utf8) {
		cJSON *pr = cJSON_AddObjectToObject(o, "properties");
		if (p->user_count > 0) {
			cJSON *u = cJSON_AddObjectToObject(pr, "user");
			for (size_t i = 0; i < p->user_count; i++)
				cJSON_AddStringToObject(u, p->user[i].name, p->user[i].value);
		}
		if (p->response_topic)
			cJSON_AddStringToObject(pr, "response_topic", p->response_topic);
		if (p->correlation_data) {
			char *cd = cwm_base64(p->correlation_data, p->correlation_len);
			cJSON_AddStringToObject(pr, "correlation_data", cd ? cd : "");
			free(cd);
		}
		if (p->content_type)
			cJSON_AddStringToObject(pr, "content_type", p->content_type);
		if (p->message_expiry)
			cJSON_AddNumberToObject(pr, "message_expiry", p->message_expiry);
		if (p->payload_utf8)
			cJSON_AddBoolToObject(pr, "payload_utf8", 1);
	}
	char *json = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (json == NULL)
		return NULL;
	size_t n = strlen(json);
	struct cwm_bmsg *bm = malloc(sizeof(*bm) + n + 1);
	if (bm != NULL) {
		atomic_init(&bm->refs, 1);
		bm->len = n;
		bm->sse = NULL;
		bm->sse_len = 0;
		memcpy(bm->text, json, n + 1);
	}
	cJSON_free(json);
	return bm;
}

/* A JSON object as an outgoing message (acks, errors, hello). */
static struct cwm_bmsg *cwm_bmsg_json(cJSON *o)
{
	char *json = cJSON_PrintUnformatted(o);
	if (json == NULL)
		return NULL;
	size_t n = strlen(json);
	struct cwm_bmsg *bm = malloc(sizeof(*bm) + n + 1);
	if (bm != NULL) {
		atomic_init(&bm->refs, 1);
		bm->len = n;
		bm->sse = NULL;
		bm->sse_len = 0;
		memcpy(bm->text, json, n + 1);
	}
	cJSON_free(json);
	return bm;
}

/* -- clients ------------------------------------------------------------------ */

/* [B] Frees what the client has queued. */
static void cwm_bclient_flush(struct cwm_bclient *bc)
{
	for (unsigned i = 0; i < bc->qlen; i++)
		cwm_bmsg_put(bc->q[(bc->qhead + i) % bc->qcap]);
	bc->qhead = bc->qlen = 0;
}

/* [B] Puts a WebSocket client with work on the writers' list. */
static void cwm_bclient_list(struct cwm_bridge *b, struct cwm_bclient *bc)
{
	if (bc->kind != BC_WS || bc->busy || bc->listed)
		return;
	bc->listed = 1;
	bc->ready_next = NULL;
	if (b->ready_tail != NULL)
		b->ready_tail->ready_next = bc;
	else
		b->ready = bc;
	b->ready_tail = bc;
	pthread_cond_signal(&b->wcond);
}

/* [B] Lets go of every filter of the client (unsubscribing the MQTT client
 * from those no one else holds). */
static void cwm_bclient_unsubscribe_all(struct cwm_bridge *b,
                                        struct cwm_bclient *bc)
{
	struct cwm_map *m = &bc->filters;
	for (size_t i = 0; i < m->nb; i++)
		for (struct cwm_map_ent *e = m->b[i]; e != NULL; e = e->next) {
			cwm_tree_remove(&b->tree, e->key, bc);
			cwm_sub_unref(b->c, e->key);
		}
	cwm_map_free(m, NULL);
}

/* [B] Drops a client that cannot keep up: nothing more is queued for it,
 * its subscriptions go, and the browser is told to go away. */
static void cwm_bclient_drop(struct cwm_bridge *b, struct cwm_bclient *bc,
                             const char *why)
{
	if (bc->dead)
		return;
	bc->dead = 1;
	cwm_bclient_flush(bc);
	cwm_bclient_unsubscribe_all(b, bc);
	atomic_fetch_add(&b->dropped_clients, 1);
	cwm_log(b->c, MG_MQTT_LOG_WARNING, "bridge: %s client %u dropped: %s",
	        bc->kind == BC_WS ? "WebSocket" : "SSE", bc->id, why);
	if (bc->kind == BC_WS) {
		bc->close_frame = 1;
		cwm_bclient_list(b, bc);
	} else {
		pthread_cond_signal(&bc->cond);
	}
}

/* [B] Queues m for the client; drops the client when its queue is full. */
static void cwm_bclient_push(struct cwm_bridge *b, struct cwm_bclient *bc,
                             struct cwm_bmsg *m)
{
	unsigned cap = (unsigned)b->c->cfg.bridge_client_queue;
	if (bc->dead)
		return;
	if (bc->qlen >= cap) {
		cwm_bclient_drop(b, bc, "its queue is full (BRIDGE_CLIENT_QUEUE)");
		return;
	}
	if (bc->qlen == bc->qcap) {
		unsigned ncap = bc->qcap == 0 ? 16 : bc->qcap * 2;
		if (ncap > cap)
			ncap = cap;
		struct cwm_bmsg **nq = malloc(ncap * sizeof(*nq));
		if (nq == NULL) {
			cwm_bclient_drop(b, bc, "out of memory");
			return;
		}
		for (unsigned i = 0; i < bc->qlen; i++)
			nq[i] = bc->q[(bc->qhead + i) % bc->qcap];
		free(bc->q);
		bc->q = nq;
		bc->qhead = 0;
		bc->qcap = ncap;
	}
	atomic_fetch_add(&m->refs, 1);
	bc->q[(bc->qhead + bc->qlen) % bc->qcap] = m;
	bc->qlen++;
	if (bc->kind == BC_SSE)
		pthread_cond_signal(&bc->cond);
	else
		cwm_bclient_list(b, bc);
}

/* [B] Queues a JSON object (an ack or an error) for the client. */
static void cwm_bclient_send(struct cwm_bridge *b, struct cwm_bclient *bc,
                             cJSON *o)
{
	struct cwm_bmsg *m = cwm_bmsg_json(o);
	if (m != NULL) {
		cwm_bclient_push(b, bc, m);
		cwm_bmsg_put(m);
	}
}

static struct cwm_bclient *cwm_bclient_new(struct cwm_bridge *b,
                                           struct mg_connection *conn,
                                           enum cwm_bkind kind)
{
	struct cwm_bclient *bc = calloc(1, sizeof(*bc));
	if (bc == NULL)
		return NULL;
	bc->b = b;
	bc->conn = conn;
	bc->kind = kind;
	pthread_cond_init(&bc->cond, NULL);
	/* [B] held by the caller */
	bc->id = ++b->next_id;
	bc->next = b->clients;
	if (b->clients != NULL)
		b->clients->prev = bc;
	b->clients = bc;
	atomic_fetch_add(kind == BC_WS ? &b->n_ws : &b->n_sse, 1);
	return bc;
}

/* [B] Takes the client out of the bridge, waiting for a writer that is
 * writing to it; the caller frees it afterwards (cwm_bclient_free). */
static void cwm_bclient_remove(struct cwm_bridge *b, struct cwm_bclient *bc)
{
	bc->dead = 1;
	while (bc->busy)
		pthread_cond_wait(&b->idle, &b->a->lock);
	if (bc->listed) {
		struct cwm_bclient **pp = &b->ready, *prev = NULL;
		while (*pp != bc) {
			prev = *pp;
			pp = &(*pp)->ready_next;
		}
		*pp = bc->ready_next;
		if (b->ready_tail == bc)
			b->ready_tail = prev;
		bc->listed = 0;
	}
	cwm_bclient_flush(bc);
	cwm_bclient_unsubscribe_all(b, bc);
	if (bc->prev != NULL)
		bc->prev->next = bc->next;
	else
		b->clients = bc->next;
	if (bc->next != NULL)
		bc->next->prev = bc->prev;
	atomic_fetch_sub(bc->kind == BC_WS ? &b->n_ws : &b->n_sse, 1);
	bc->b = NULL;
}

static void cwm_bclient_free(struct cwm_bclient *bc)
{
	cwm_bclient_flush(bc);
	cwm_map_free(&bc->filters, NULL);
	free(bc->q);
	pthread_cond_destroy(&bc->cond);
	free(bc);
}

/* -- access rules ----------------------------------------------------------------- */

/* 1 when every topic filter f can match is matched by allow filter a:
 * level by level, '#' in a covers the rest, '+' in a covers one level of
 * any kind but '#', and a wildcard never covers a leading '$' level. */
static int cwm_filter_covers(const char *a, const char *f)
{
	for (int depth = 0;; depth++) {
		size_t al = strcspn(a, "/"), fl = strcspn(f, "/");
		int adollar_guard = depth == 0 && f[0] == '$';
		if (al == 1 && a[0] == '#')
			return !adollar_guard;
		if (fl == 1 && f[0] == '#')
			return 0;
		if (al == 1 && a[0] == '+') {
			if (adollar_guard)
				return 0;
		} else if (fl == 1 && f[0] == '+') {
			return 0;
		} else if (al != fl || memcmp(a, f, al) != 0) {
			return 0;
		}
		if (a[al] == '\0' || f[fl] == '\0')
			/* "a/#" also covers "a" (its parent level). */
			return a[al] == '\0' && f[fl] == '\0'
			           ? 1
			           : (f[fl] == '\0' && strcmp(a + al, "/#") == 0);
		a += al + 1;
		f += fl + 1;
	}
}

static int cwm_may_publish(const struct cwm_bridge *b, const char *topic)
{
	const struct cwm_settings *s = &b->c->cfg;
	for (int i = 0; i < s->nbpub; i++)
		if (mg_mqtt_topic_matches(s->bpub[i], topic))
			return 1;
	return 0;
}

static int cwm_may_subscribe(const struct cwm_bridge *b, const char *filter)
{
	const struct cwm_settings *s = &b->c->cfg;
	if (cwm_share_len(filter, strlen(filter)) != 0)
		return 0; /* shared subscriptions are the server's business */
	for (int i = 0; i < s->nbsub; i++)
		if (cwm_filter_covers(s->bsub[i], filter))
			return 1;
	return 0;
}

/* -- delivery (mqtt-dispatch) -------------------------------------------------- */

static void cwm_bridge_deliver(struct cwm_bridge *b,
                               const struct mg_mqtt_message *m)
{
	struct cwm_bmsg *bm = NULL;
	cwm_lv_update(b, m);
	pthread_mutex_lock(&b->a->lock);
	if (b->clients == NULL || b->stopping) {
		pthread_mutex_unlock(&b->a->lock);
		return;
	}
	if (cwm_tree_match(&b->tree, m->topic, m->topic_len, &b->cur, &b->nxt,
	                   &b->hits) == 0 &&
	    b->hits.n > 0) {
		uint64_t seq = ++b->seq;
		/* Pushing may drop a browser that fell behind, which frees its
		 * handlers, also those further in hits (overlapping filters):
		 * take every hit's client first. Clients are only marked dead
		 * here, freed later. */
		for (size_t i = 0; i < b->hits.n; i++)
			b->hits.v[i] = ((struct cwm_handler *)b->hits.v[i])->ud;
		for (size_t i = 0; i < b->hits.n; i++) {
			struct cwm_bclient *bc = b->hits.v[i];
			if (bc->stamp == seq || bc->dead)
				continue;
			bc->stamp = seq; /* overlapping filters: once per client */
			if (bm == NULL && (bm = cwm_bmsg_make(m)) == NULL)
				break;
			cwm_bclient_push(b, bc, bm);
			atomic_fetch_add(&b->delivered, 1);
		}
	}
	pthread_mutex_unlock(&b->a->lock);
	cwm_bmsg_put(bm);
}

/* mqtt-dispatch: tells every browser that the MQTT connection came or
 * went: {"op":"state","connected":..,"broker":..}. */
static void cwm_bridge_state(struct cwm_bridge *b, int connected,
                             const char *broker)
{
	pthread_mutex_lock(&b->a->lock);
	if (b->clients != NULL && !b->stopping) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "op", "state");
		cJSON_AddBoolToObject(o, "connected", connected);
		cJSON_AddStringToObject(o, "broker", broker != NULL ? broker : "");
		struct cwm_bmsg *m = cwm_bmsg_json(o);
		cJSON_Delete(o);
		for (struct cwm_bclient *bc = b->clients; m != NULL && bc != NULL;
		     bc = bc->next)
			cwm_bclient_push(b, bc, m);
		cwm_bmsg_put(m);
	}
	pthread_mutex_unlock(&b->a->lock);
}

/* -- WebSocket writers ----------------------------------------------------------- */

/* Appends one unmasked WebSocket text frame to buf. */
static int cwm_ws_frame(struct cwm_wbuf *buf, const struct cwm_bmsg *m)
{
	unsigned char h[10];
	size_t hl;
	h[0] = 0x80 | MG_WEBSOCKET_OPCODE_TEXT;
	if (m->len < 126) {
		h[1] = (unsigned char)m->len;
		hl = 2;
	} else if (m->len <= 0xffff) {
		h[1] = 126;
		h[2] = (unsigned char)(m->len >> 8);
		h[3] = (unsigned char)m->len;
		hl = 4;
	} else {
		h[1] = 127;
		for (int i = 0; i < 8; i++)
			h[2 + i] = (unsigned char)((uint64_t)m->len >> (56 - 8 * i));
		hl = 10;
	}
	cwm_wput(buf, h, hl);
	cwm_wput(buf, m->text, m->len);
	return buf->oom ? -1 : 0;
}

static void *cwm_bridge_writer(void *arg)
{
	struct cwm_bridge *b = arg;
	struct cwm_bmsg *batch[64];
	struct cwm_wbuf out = {NULL, 0, 0, 0};
	pthread_setname_np(pthread_self(), "mqtt-bridge");

	pthread_mutex_lock(&b->a->lock);
	for (;;) {
		while (b->ready == NULL && !b->stopping)
			pthread_cond_wait(&b->wcond, &b->a->lock);
		if (b->stopping)
			break;
		struct cwm_bclient *bc = b->ready;
		if ((b->ready = bc->ready_next) == NULL)
			b->ready_tail = NULL;
		bc->listed = 0;
		bc->busy = 1;
		unsigned n = 0;
		while (n < 64 && bc->qlen > 0) {
			batch[n++] = bc->q[bc->qhead];
			bc->qhead = (bc->qhead + 1) % bc->qcap;
			bc->qlen--;
		}
		int close_frame = bc->close_frame && bc->qlen == 0;
		if (close_frame)
			bc->close_frame = 0;
		pthread_mutex_unlock(&b->a->lock);

		/* The batch as frames in one write: mg_websocket_write would make
		 * two system calls a frame. The connection lock keeps CivetWeb's own
		 * frames (pongs) from landing in the middle. */
		int failed = 0;
		out.n = 0;
		out.oom = 0;
		for (unsigned i = 0; i < n; i++) {
			if (cwm_ws_frame(&out, batch[i]) != 0)
				failed = 1;
			cwm_bmsg_put(batch[i]);
		}
		if (!failed && out.n > 0) {
			mg_lock_connection(bc->conn);
			failed = mg_write(bc->conn, out.p, out.n) != (int)out.n;
			mg_unlock_connection(bc->conn);
		}
		if (out.cap > (1u << 20)) { /* don't keep a huge buffer around */
			free(out.p);
			out.p = NULL;
			out.cap = 0;
		}
		if (close_frame && !failed) {
			/* 1008: policy violation (could not keep up). */
			static const char bye[] = "\x03\xf0too slow";
			mg_websocket_write(bc->conn, MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE,
			                   bye, sizeof(bye) - 1);
		}

		pthread_mutex_lock(&b->a->lock);
		bc->busy = 0;
		if (failed)
			cwm_bclient_drop(b, bc, "a write failed");
		else if (bc->qlen > 0 || bc->close_frame)
			cwm_bclient_list(b, bc);
		pthread_cond_broadcast(&b->idle);
	}
	pthread_mutex_unlock(&b->a->lock);
	free(out.p);
	return NULL;
}

/* -- acquiring the bridge from CivetWeb's threads -------------------------------- */

/* Entering and leaving the bridge costs two atomic operations, no lock:
 * every request to the bridge does it. The count is the anchor's (never
 * freed) and goes up before the bridge pointer is read, so the destroyer,
 * which clears the pointer and then waits for the count to drop to 0,
 * cannot free a bridge someone is in. */
static void cwm_anchor_leave(struct cwm_anchor *a)
{
	if (atomic_fetch_sub(&a->users, 1) == 1 && atomic_load(&a->draining)) {
		pthread_mutex_lock(&a->lock);
		pthread_cond_broadcast(&a->idle);
		pthread_mutex_unlock(&a->lock);
	}
}

static struct cwm_bridge *cwm_bridge_acquire(struct cwm_anchor *a)
{
	atomic_fetch_add(&a->users, 1);
	struct cwm_bridge *b = atomic_load(&a->bridge);
	if (b == NULL || atomic_load(&b->stopping)) {
		cwm_anchor_leave(a);
		return NULL;
	}
	return b;
}

static void cwm_bridge_release(struct cwm_bridge *b)
{
	cwm_anchor_leave(b->a);
}

/* -- HTTP helpers ------------------------------------------------------------------- */

/* Sends a whole response: body (n bytes) as ctype, with one optional extra
 * header. Returns status. */
static int cwm_reply_body(struct mg_connection *conn, int status,
                          const void *body, size_t n, const char *ctype,
                          const char *extra_name, const char *extra_value)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	int head = strcmp(ri->request_method, "HEAD") == 0;
	char len[32];
	snprintf(len, sizeof(len), "%zu", n);
	if (mg_response_header_start(conn, status) != 0) {
		/* CivetWeb refuses its response API on a WebSocket upgrade request
		 * (a 401 or 503 before the handshake): write the response whole. */
		char extra[512] = "";
		if (extra_name != NULL)
			snprintf(extra, sizeof(extra), "%s: %s\r\n", extra_name,
			         extra_value);
		mg_printf(conn,
		          "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
		          "Content-Length: %s\r\nCache-Control: no-store\r\n%s"
		          "Connection: close\r\n\r\n",
		          status, mg_get_response_code_text(conn, status), ctype, len,
		          extra);
		if (!head)
			mg_write(conn, body, n);
		return status;
	}
	mg_response_header_add(conn, "Content-Type", ctype, -1);
	mg_response_header_add(conn, "Content-Length", len, -1);
	mg_response_header_add(conn, "Cache-Control", "no-store", -1);
	if (extra_name != NULL)
		mg_response_header_add(conn, extra_name, extra_value, -1);
	mg_response_header_send(conn);
	if (!head)
		mg_write(conn, body, n);
	return status;
}

static int cwm_reply_text(struct mg_connection *conn, int status,
                          const char *json, const char *extra_name,
                          const char *extra_value)
{
	return cwm_reply_body(conn, status, json, strlen(json), "application/json",
	                      extra_name, extra_value);
}

static int cwm_reply_json(struct mg_connection *conn, int status, cJSON *o)
{
	char *text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (text == NULL)
		return cwm_reply_text(conn, 500, "{\"error\":\"out of memory\"}", NULL,
		                      NULL);
	cwm_reply_text(conn, status, text, NULL, NULL);
	cJSON_free(text);
	return status;
}

static int cwm_reply_error(struct mg_connection *conn, int status,
                           const char *error)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "error", error);
	return cwm_reply_json(conn, status, o);
}

/* The HTTP status for a publish/subscribe error code. */
static int cwm_http_status(int err)
{
	switch (err) {
	case MG_MQTT_ERR_TOO_LARGE:
		return 413;
	case MG_MQTT_ERR_BUFFER_FULL:
	case MG_MQTT_ERR_QUEUE_FULL:
	case MG_MQTT_ERR_NOT_CONNECTED:
	case MG_MQTT_ERR_STOPPED:
	case MG_MQTT_ERR_NOT_STARTED:
		return 503;
	case MG_MQTT_ERR_NOMEM:
	case MG_MQTT_ERR_IO:
	case MG_MQTT_ERR_PAHO:
		return 500;
	default:
		return 400;
	}
}

/* Reads the request body, at most BRIDGE_MAX_BODY bytes. Returns 0, or
 * 413 (too large), 500. *body is malloc()ed and NUL-terminated. */
static int cwm_read_body(struct cwm_bridge *b, struct mg_connection *conn,
                         char **body, size_t *len)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	size_t max = (size_t)b->c->cfg.bridge_max_body, n = 0;
	*body = NULL;
	*len = 0;
	if (ri->content_length > (long long)max)
		return 413;
	size_t cap = ri->content_length >= 0 ? (size_t)ri->content_length + 1
	                                     : 4096;
	char *buf = malloc(cap);
	if (buf == NULL)
		return 500;
	for (;;) {
		if (n + 1 >= cap) {
			if (cap > max + 1) {
				free(buf);
				return 413;
			}
			cap = cap * 2 > max + 2 ? max + 2 : cap * 2;
			char *nb = realloc(buf, cap);
			if (nb == NULL) {
				free(buf);
				return 500;
			}
			buf = nb;
		}
		int r = mg_read(conn, buf + n, cap - n - 1);
		if (r <= 0)
			break;
		n += (size_t)r;
		if (n > max) {
			free(buf);
			return 413;
		}
	}
	buf[n] = '\0';
	*body = buf;
	*len = n;
	return 0;
}

/* -- publishing from JSON (HTTP and WebSocket) --------------------------------- */

/* Publishes what a browser sent: {"topic":..,"payload":..,"qos":..,
 * "retain":..,"base64":..,"properties":{..}}. Returns the message id, or
 * fills *status and *err. */
static int cwm_bridge_publish_json(struct cwm_bridge *b, const cJSON *req,
                                   int *status, const char **err)
{
	const cJSON *topic = cJSON_GetObjectItemCaseSensitive(req, "topic");
	const cJSON *payload = cJSON_GetObjectItemCaseSensitive(req, "payload");
	const cJSON *qos = cJSON_GetObjectItemCaseSensitive(req, "qos");
	const cJSON *retain = cJSON_GetObjectItemCaseSensitive(req, "retain");
	const cJSON *base64 = cJSON_GetObjectItemCaseSensitive(req, "base64");
	const cJSON *props = cJSON_GetObjectItemCaseSensitive(req, "properties");
	struct mg_mqtt_user_property user[32];
	struct mg_mqtt_props p;
	unsigned char *raw = NULL, *cd = NULL;
	char *printed = NULL;
	const void *data = "";
	size_t len = 0;
	int q = 0, r = 0, id;

	*status = 400;
	if (!cJSON_IsString(topic) || topic->valuestring[0] == '\0') {
		*err = "\"topic\" must be a non-empty string";
		return -1;
	}
	if (qos != NULL && (!cJSON_IsNumber(qos) || qos->valuedouble < 0 ||
	                    qos->valuedouble > 2 ||
	                    qos->valuedouble != (double)qos->valueint)) {
		*err = "\"qos\" must be 0, 1 or 2";
		return -1;
	}
	q = qos != NULL ? qos->valueint : 0;
	if (retain != NULL && !cJSON_IsBool(retain)) {
		*err = "\"retain\" must be true or false";
		return -1;
	}
	r = cJSON_IsTrue(retain);
	if (mg_mqtt_topic_valid(topic->valuestring) != 0) {
		*err = "invalid topic name";
		return -1;
	}
	if (!cwm_may_publish(b, topic->valuestring)) {
		*status = 403;
		*err = "publishing to this topic is not allowed "
		       "(BRIDGE_PUBLISH_ALLOW)";
		atomic_fetch_add(&b->rejected, 1);
		return -1;
	}
	if (cJSON_IsString(payload)) {
		if (cJSON_IsTrue(base64)) {
			if ((raw = cwm_unbase64(payload->valuestring, &len)) == NULL) {
				*err = "\"payload\" is not valid base64";
				return -1;
			}
			data = raw;
		} else {
			data = payload->valuestring;
			len = strlen(payload->valuestring);
		}
	} else if (payload != NULL && !cJSON_IsNull(payload)) {
		/* Any other JSON value goes as its JSON text. */
		if ((printed = cJSON_PrintUnformatted(payload)) == NULL) {
			*status = 500;
			*err = "out of memory";
			return -1;
		}
		data = printed;
		len = strlen(printed);
	}
	memset(&p, 0, sizeof(p));
	if (props != NULL) {
		const cJSON *u = cJSON_GetObjectItemCaseSensitive(props, "user");
		const cJSON *e;
		if (!cJSON_IsObject(props) || (u != NULL && !cJSON_IsObject(u))) {
			*err = "\"properties\" must be an object; \"user\" an object of "
			       "strings";
			goto fail;
		}
		cJSON_ArrayForEach(e, u)
		{
			if (!cJSON_IsString(e) || p.user_count == 32) {
				*err = "user properties must be strings (at most 32)";
				goto fail;
			}
			user[p.user_count].name = e->string;
			user[p.user_count++].value = e->valuestring;
		}
		p.user = p.user_count > 0 ? user : NULL;
		e = cJSON_GetObjectItemCaseSensitive(props, "message_expiry");
		if (cJSON_IsNumber(e) && e->valuedouble >= 1 &&
		    e->valuedouble <= 4294967295.0)
			p.message_expiry = (uint32_t)e->valuedouble;
		e = cJSON_GetObjectItemCaseSensitive(props, "content_type");
		if (cJSON_IsString(e))
			p.content_type = e->valuestring;
		e = cJSON_GetObjectItemCaseSensitive(props, "response_topic");
		if (cJSON_IsString(e))
			p.response_topic = e->valuestring;
		e = cJSON_GetObjectItemCaseSensitive(props, "correlation_data");
		if (cJSON_IsString(e)) {
			size_t cl;
			if ((cd = cwm_unbase64(e->valuestring, &cl)) == NULL) {
				*err = "\"correlation_data\" must be base64";
				goto fail;
			}
			p.correlation_data = cd;
			p.correlation_len = cl;
		}
	}
	id = mg_mqtt_publish_props(b->c, topic->valuestring, data, len, q, r, &p);
	free(raw);
	free(cd);
	cJSON_free(printed);
	if (id > 0) {
		atomic_fetch_add(&b->publishes, 1);
		return id;
	}
	*status = cwm_http_status(id);
	*err = id == MG_MQTT_ERR_PROTOCOL ? "properties need PROTOCOL_VERSION 5"
	                                  : mg_mqtt_strerror(id);
	return -1;
fail:
	free(raw);
	free(cd);
	cJSON_free(printed);
	return -1;
}

/* -- routes ------------------------------------------------------------------------ */

/* The raw publish and request routes: 403 unless BRIDGE_PUBLISH_ALLOW
 * lets browsers publish to topic, else the body into *body (the caller
 * frees it). Returns 0, or the status of the error reply it sent. */
static int cwm_publish_body(struct cwm_bridge *b, struct mg_connection *conn,
                            const char *topic, char **body, size_t *len)
{
	if (!cwm_may_publish(b, topic)) {
		atomic_fetch_add(&b->rejected, 1);
		return cwm_reply_error(conn, 403,
		                       "publishing to this topic is not allowed "
		                       "(BRIDGE_PUBLISH_ALLOW)");
	}
	int status = cwm_read_body(b, conn, body, len);
	if (status != 0)
		return cwm_reply_error(conn, status,
		                       status == 413 ? "body larger than BRIDGE_MAX_BODY"
		                                     : "out of memory");
	return 0;
}

static int cwm_route_publish(struct cwm_bridge *b, struct mg_connection *conn)
{
	char *body;
	size_t len;
	const char *err;
	int status = cwm_read_body(b, conn, &body, &len);
	if (status != 0)
		return cwm_reply_error(conn, status,
		                       status == 413 ? "body larger than BRIDGE_MAX_BODY"
		                                     : "out of memory");
	cJSON *req = cwm_json_parse(body, len, &err);
	free(body);
	if (!cJSON_IsObject(req)) {
		cJSON_Delete(req);
		return cwm_reply_error(conn, 400,
		                       err != NULL ? err
		                                   : "the body is not a JSON object");
	}
	int id = cwm_bridge_publish_json(b, req, &status, &err);
	cJSON_Delete(req);
	if (id < 0)
		return cwm_reply_error(conn, status, err);
	cJSON *o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "id", id);
	return cwm_reply_json(conn, 200, o);
}

/* CivetWeb decodes the request URI in place and keeps no undecoded copy,
 * so "%00" would silently cut the topic short. It shows as a NUL inside the
 * URI's original span (which ends where the query string or " HTTP/"
 * began): decoding adds one NUL as the new end, each "%00" one more. */
static int cwm_uri_has_nul(const struct mg_request_info *ri)
{
	const char *u = ri->request_uri, *v = ri->http_version, *end;
	if (u == NULL || v == NULL || v - u < 6 || strncmp(v - 5, "HTTP/", 5) != 0)
		return 0; /* not the layout we know: the ACL still holds */
	end = ri->query_string != NULL && ri->query_string > u && ri->query_string < v
	          ? ri->query_string - 1
	          : v - 6;
	int nuls = 0;
	for (const char *p = u; p < end; p++)
		nuls += *p == '\0';
	return nuls > 1;
}

/* POST <path>/publish/<topic>?qos=&retain=: the raw body is the payload. */
/* The occurrence-th value of name in a query string, for topics and
 * filters: %XX decoded, but '+' kept as '+' (the wildcard, not a form's
 * space; a space is %20). Returns its length, -1 (absent), -2 (longer than
 * len - 1) or -3 (a %00 in it). */
static int cwm_query_topic(const char *qs, const char *name, size_t occurrence,
                           char *dst, size_t len)
{
	size_t nl = strlen(name);
	dst[0] = '\0';
	for (const char *p = qs; *p != '\0';) {
		size_t l = strcspn(p, "&");
		if (l > nl && p[nl] == '=' && strncmp(p, name, nl) == 0 &&
		    occurrence-- == 0) {
			int n = mg_url_decode(p + nl + 1, (int)(l - nl - 1), dst, (int)len,
			                      0);
			if (n < 0)
				return -2;
			return strlen(dst) != (size_t)n ? -3 : n;
		}
		p += l + (p[l] == '&');
	}
	return -1;
}

/* A topic taken from the decoded path must be what CivetWeb routed on: dot
 * segments, '//' and '\\' are rewritten by it, and a NUL would cut the
 * topic short. Returns 0, or the status of the error response sent. */
static int cwm_path_topic(struct mg_connection *conn, const char *topic,
                          const char *instead)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	char msg[256];
	if (ri->local_uri_raw == NULL ||
	    strcmp(ri->local_uri_raw, ri->local_uri) != 0 || cwm_uri_has_nul(ri)) {
		snprintf(msg, sizeof(msg),
		         "the topic in the path is not canonical (dot segments, '//', "
		         "'\\\\' or NUL)%s",
		         instead);
		return cwm_reply_error(conn, 400, msg);
	}
	if (topic[0] == '\0' || mg_mqtt_topic_valid(topic) != 0)
		return cwm_reply_error(conn, 400, "invalid topic name");
	return 0;
}

static int cwm_route_publish_raw(struct cwm_bridge *b, struct mg_connection *conn,
                                 const char *topic)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	char v[16];
	int qos = 0, retain = 0;

	int status;
	if ((status = cwm_path_topic(conn, topic,
	                             "; publish it with POST <path>/publish and a "
	                             "JSON body")) != 0)
		return status;
	const char *qs = ri->query_string != NULL ? ri->query_string : "";
	if (mg_get_var(qs, strlen(qs), "qos", v, sizeof(v)) > 0) {
		if (strlen(v) != 1 || v[0] < '0' || v[0] > '2')
			return cwm_reply_error(conn, 400, "qos must be 0, 1 or 2");
		qos = v[0] - '0';
	}
	if (mg_get_var(qs, strlen(qs), "retain", v, sizeof(v)) > 0) {
		if (cwm_parse_bool(v, &retain) != 0)
			return cwm_reply_error(conn, 400, "retain must be true or false");
	}
	char *body;
	size_t len;
	if ((status = cwm_publish_body(b, conn, topic, &body, &len)) != 0)
		return status;
	int id = mg_mqtt_publish(b->c, topic, body, len, qos, retain);
	free(body);
	if (id < 0)
		return cwm_reply_error(conn, cwm_http_status(id), mg_mqtt_strerror(id));
	atomic_fetch_add(&b->publishes, 1);
	char json[48];
	snprintf(json, sizeof(json), "{\"id\":%d}", id);
	return cwm_reply_text(conn, 200, json, NULL, NULL);
}

static cJSON *cwm_status_object(struct mg_mqtt *c);

static int cwm_route_status(struct cwm_bridge *b, struct mg_connection *conn)
{
	cJSON *o = cwm_status_object(b->c);
	if (o == NULL)
		return cwm_reply_error(conn, 500, "out of memory");
	return cwm_reply_json(conn, 200, o);
}

/* Rewrites a browser's filter in place with its "{name}" levels written
 * '+' (never longer). Returns 0 or -1 when it is not a valid filter. */
static int cwm_bridge_filter(char *filter)
{
	char *plain;
	if (cwm_filter_normalize(filter, &plain, NULL) != 0)
		return -1;
	memcpy(filter, plain, strlen(plain) + 1);
	free(plain);
	return 0;
}


/* A content type from the network, fit for a response header. */
static int cwm_header_safe(const char *v)
{
	if (v == NULL || v[0] == '\0' || strlen(v) > 200)
		return 0;
	for (const unsigned char *p = (const unsigned char *)v; *p != '\0'; p++)
		if (*p < 0x20 || *p >= 0x7f)
			return 0;
	return 1;
}

/* POST <path>/request/<topic>[?timeout=<s>&qos=<n>]: the body goes out as
 * an mg_mqtt_request(); the reply comes back as the response. */
static int cwm_route_request(struct cwm_bridge *b, struct mg_connection *conn,
                             const char *topic)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	const char *qs = ri->query_string != NULL ? ri->query_string : "";
	int64_t max_ms = (int64_t)b->c->cfg.bridge_request_timeout_max * 1000;
	int64_t ms = max_ms < 5000 ? max_ms : 5000;
	int qos = 1, status;
	char v[32], msg[128];

	if ((status = cwm_path_topic(conn, topic, "")) != 0)
		return status;
	if (mg_get_var(qs, strlen(qs), "qos", v, sizeof(v)) > 0) {
		if (strlen(v) != 1 || v[0] < '0' || v[0] > '2')
			return cwm_reply_error(conn, 400, "qos must be 0, 1 or 2");
		qos = v[0] - '0';
	}
	if (mg_get_var(qs, strlen(qs), "timeout", v, sizeof(v)) > 0) {
		char *end;
		errno = 0;
		double t = strtod(v, &end);
		if (end == v || *end != '\0' || errno != 0 || !(t > 0) || t > 1e9)
			return cwm_reply_error(conn, 400,
			                       "timeout must be a number of seconds > 0");
		ms = (int64_t)(t * 1000 + 0.999);
		if (ms > max_ms)
			ms = max_ms; /* BRIDGE_REQUEST_TIMEOUT_MAX bounds it */
	}
	char *body;
	size_t len;
	if ((status = cwm_publish_body(b, conn, topic, &body, &len)) != 0)
		return status;
	struct mg_mqtt_reply r;
	int rc = mg_mqtt_request(b->c, topic, body, len, qos, (int)ms, &r);
	free(body);
	if (rc == 0) {
		const char *ctype = r.content_type;
		if (!cwm_header_safe(ctype)) {
			cJSON *j = NULL;
			int text = cwm_utf8_text(r.payload, r.payload_len);
			if (text)
				j = cJSON_ParseWithLength(r.payload, r.payload_len);
			ctype = cJSON_IsObject(j) || cJSON_IsArray(j) ? "application/json"
			        : text ? "text/plain; charset=utf-8"
			               : "application/octet-stream";
			cJSON_Delete(j);
		}
		status = cwm_reply_body(conn, 200, r.payload, r.payload_len, ctype,
		                        NULL, NULL);
		mg_mqtt_reply_free(&r);
		return status;
	}
	switch (rc) {
	case MG_MQTT_ERR_TIMEOUT:
		snprintf(msg, sizeof(msg), "no reply within %.3f s", (double)ms / 1000);
		return cwm_reply_error(conn, 504, msg);
	case MG_MQTT_ERR_REFUSED:
		return cwm_reply_error(conn, 502,
		                       "the broker refused the reply subscription");
	case MG_MQTT_ERR_TOPIC:
		return cwm_reply_error(conn, 500,
		                       "the client id cannot start a reply topic");
	default:
		return cwm_reply_error(conn, cwm_http_status(rc), mg_mqtt_strerror(rc));
	}
}

/* One last value as JSON. */
static cJSON *cwm_lv_json(const struct cwm_lv *e)
{
	cJSON *o = cJSON_CreateObject();
	char when[40];
	time_t sec = (time_t)(e->at_ms / 1000);
	struct tm tm;
	gmtime_r(&sec, &tm);
	size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(when + n, sizeof(when) - n, ".%03dZ", (int)(e->at_ms % 1000));
	if (o == NULL || cJSON_AddStringToObject(o, "topic", e->topic) == NULL ||
	    cwm_add_payload(o, e->payload, e->len) != 0 ||
	    cJSON_AddNumberToObject(o, "qos", e->qos) == NULL ||
	    cJSON_AddBoolToObject(o, "retain", e->retain) == NULL ||
	    cJSON_AddStringToObject(o, "received", when) == NULL ||
	    cJSON_AddNumberToObject(o, "received_ms", (double)e->at_ms) == NULL) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

/* GET <path>/last/<topic>: the last message seen on topic. */
static int cwm_route_last(struct cwm_bridge *b, struct mg_connection *conn,
                          const char *topic)
{
	int status;
	if ((status = cwm_path_topic(conn, topic,
	                             "; list it with GET <path>/last?filter=")) != 0)
		return status;
	if (!cwm_may_subscribe(b, topic)) {
		atomic_fetch_add(&b->rejected, 1);
		return cwm_reply_error(conn, 403,
		                       "reading this topic is not allowed "
		                       "(BRIDGE_SUBSCRIBE_ALLOW)");
	}
	if (b->c->cfg.bridge_last_values == 0)
		return cwm_reply_error(conn, 404,
		                       "last values are off (BRIDGE_LAST_VALUES 0)");
	pthread_mutex_lock(&b->lv_lock);
	const struct cwm_lv *e = cwm_map_get(&b->lv, topic, strlen(topic));
	cJSON *o = e != NULL ? cwm_lv_json(e) : NULL;
	pthread_mutex_unlock(&b->lv_lock);
	if (e == NULL)
		return cwm_reply_error(conn, 404, "no message seen on this topic");
	if (o == NULL)
		return cwm_reply_error(conn, 500, "out of memory");
	return cwm_reply_json(conn, 200, o);
}

/* GET <path>/last?filter=F: every last value on a topic F matches, the
 * most recently updated first. */
static int cwm_route_last_list(struct cwm_bridge *b, struct mg_connection *conn)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	const char *qs = ri->query_string != NULL ? ri->query_string : "";
	char filter[1024];
	int r = cwm_query_topic(qs, "filter", 0, filter, sizeof(filter));
	if (r == -2)
		return cwm_reply_error(conn, 400, "the topic filter is too long");
	if (r == -1)
		return cwm_reply_error(conn, 400, "give ?filter=<topic filter>");
	if (r < 0)
		return cwm_reply_error(conn, 400, "invalid topic filter");
	if (b->c->cfg.bridge_last_values == 0)
		return cwm_reply_error(conn, 404,
		                       "last values are off (BRIDGE_LAST_VALUES 0)");
	if (cwm_bridge_filter(filter) != 0 || cwm_share_len(filter, strlen(filter)))
		return cwm_reply_error(conn, 400, "invalid topic filter");
	if (!cwm_may_subscribe(b, filter)) {
		atomic_fetch_add(&b->rejected, 1);
		return cwm_reply_error(conn, 403,
		                       "reading this filter is not allowed "
		                       "(BRIDGE_SUBSCRIBE_ALLOW)");
	}
	cJSON *o = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(o, "values");
	int oom = a == NULL;
	pthread_mutex_lock(&b->lv_lock);
	for (const struct cwm_lv *e = b->lv_new; e != NULL && !oom; e = e->older) {
		if (!cwm_match(filter, e->topic, e->topic_len))
			continue;
		cJSON *j = cwm_lv_json(e);
		if (j == NULL || !cJSON_AddItemToArray(a, j)) {
			cJSON_Delete(j);
			oom = 1;
		}
	}
	pthread_mutex_unlock(&b->lv_lock);
	if (oom) {
		cJSON_Delete(o);
		return cwm_reply_error(conn, 500, "out of memory");
	}
	return cwm_reply_json(conn, 200, o);
}

/* -- metrics ------------------------------------------------------------------ */

/* A growing text buffer; on allocation failure it stops growing and
 * remembers it. */
struct cwm_sbuf {
	char *p;
	size_t n, cap;
	int oom;
};

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void cwm_sbuf_printf(struct cwm_sbuf *s, const char *fmt, ...)
{
	va_list ap;
	for (int pass = 0; pass < 2 && !s->oom; pass++) {
		va_start(ap, fmt);
		int k = vsnprintf(s->p != NULL ? s->p + s->n : NULL,
		                  s->p != NULL ? s->cap - s->n : 0, fmt, ap);
		va_end(ap);
		if (k < 0) {
			s->oom = 1;
			return;
		}
		if (s->p != NULL && (size_t)k < s->cap - s->n) {
			s->n += (size_t)k;
			return;
		}
		size_t cap = s->cap > 0 ? s->cap : 4096;
		while (cap < s->n + (size_t)k + 1)
			cap *= 2;
		char *np = realloc(s->p, cap);
		if (np == NULL) {
			s->oom = 1;
			return;
		}
		s->p = np;
		s->cap = cap;
	}
}

/* One client's numbers, taken under its locks. */
struct cwm_snap {
	const char *prefix; /* the client's, alive while the registry is held */
	char client_id[256];
	const char *protocol;
	int connected, bridge;
	uint64_t published, publish_failed, received, dropped_queue_full;
	uint64_t connects, reconnects;
	int in_flight, buffered, queue_depth, subscriptions;
	uint64_t replied, timeouts, failed, late;
	int ws, sse;
	uint64_t delivered, dropped_clients, publishes, rejected;
	size_t last_values;
};

static void cwm_snap_take(struct mg_mqtt *c, struct cwm_snap *s)
{
	memset(s, 0, sizeof(*s));
	s->prefix = c->prefix;
	s->protocol = cwm_protocol_name(c->cfg.protocol);
	pthread_mutex_lock(&c->lock);
	snprintf(s->client_id, sizeof(s->client_id), "%s",
	         c->client_id != NULL ? c->client_id : "");
	s->connected = c->state == CWM_CONNECTED;
	s->published = c->published;
	s->publish_failed = c->publish_failed;
	s->received = c->received;
	s->dropped_queue_full = c->dropped_queue_full;
	s->connects = c->connects;
	s->reconnects = c->reconnects;
	s->in_flight = c->inflight + c->inflight0;
	for (struct cwm_out *r = c->retry; r != NULL; r = r->next)
		s->buffered += r->type == CMD_PUBLISH && !r->internal;
	for (struct cwm_out *r = c->outq; r != NULL; r = r->next)
		s->buffered += r->type == CMD_PUBLISH;
	s->queue_depth = c->ev_msgs;
	for (struct cwm_sub *sub = c->sub_head; sub != NULL; sub = sub->next)
		s->subscriptions++;
	pthread_mutex_unlock(&c->lock);
	s->replied = atomic_load(&c->req_replied);
	s->timeouts = atomic_load(&c->req_timeouts);
	s->failed = atomic_load(&c->req_failed);
	s->late = atomic_load(&c->req_late);
	struct cwm_bridge *b = c->bridge;
	if (b != NULL) {
		s->bridge = 1;
		s->ws = atomic_load(&b->n_ws);
		s->sse = atomic_load(&b->n_sse);
		s->delivered = atomic_load(&b->delivered);
		s->dropped_clients = atomic_load(&b->dropped_clients);
		s->publishes = atomic_load(&b->publishes);
		s->rejected = atomic_load(&b->rejected);
		pthread_mutex_lock(&b->lv_lock);
		s->last_values = b->lv.n;
		pthread_mutex_unlock(&b->lv_lock);
	}
}

/* A label value in the exposition format: \\, \" and \n escaped. */
static void cwm_sbuf_label(struct cwm_sbuf *o, const char *v)
{
	for (; *v != '\0'; v++) {
		if (*v == '\\' || *v == '"')
			cwm_sbuf_printf(o, "\\%c", *v);
		else if (*v == '\n')
			cwm_sbuf_printf(o, "\\n");
		else
			cwm_sbuf_printf(o, "%c", *v);
	}
}

#define CWM_FAMILY(o, name, type, help)                                        \
	cwm_sbuf_printf(o, "# HELP civetweb_mqtt_%s %s\n# TYPE civetweb_mqtt_%s %s\n", \
	                name, help, name, type)

/* GET <path>/metrics: every client started on this server, in the
 * Prometheus text format (version 0.0.4), one `client` label a prefix. */
static int cwm_route_metrics(struct cwm_bridge *b, struct mg_connection *conn)
{
	struct cwm_sbuf o = {NULL, 0, 0, 0};
	struct cwm_snap *v = NULL;
	size_t n = 0;

	/* Lock order: the registry, then a client's lock (never the reverse):
	 * a registered client and its bridge stay alive while it is held. */
	pthread_mutex_lock(&cwm_registry_lock);
	if ((v = calloc(cwm_nregistry + 1, sizeof(*v))) != NULL)
		for (size_t i = 0; i < cwm_nregistry; i++)
			if (cwm_registry[i].ctx == b->c->ctx &&
			    atomic_load(&cwm_registry[i].c->registered))
				cwm_snap_take(cwm_registry[i].c, &v[n++]);

	if (v != NULL) {
		CWM_FAMILY(&o, "info", "gauge",
		           "Client identity: 1 for each client, its id and protocol "
		           "as labels.");
		for (size_t i = 0; i < n; i++) {
			cwm_sbuf_printf(&o, "civetweb_mqtt_info{client=\"%s\",client_id=\"",
			                v[i].prefix);
			cwm_sbuf_label(&o, v[i].client_id);
			cwm_sbuf_printf(&o, "\",protocol=\"%s\"} 1\n", v[i].protocol);
		}
#define CWM_GAUGE_ROWS(field)                                                  \
	for (size_t i = 0; i < n; i++)                                             \
		cwm_sbuf_printf(&o, "%s{client=\"%s\"} %lld\n", row, v[i].prefix,      \
		                (long long)v[i].field)
#define CWM_ONE(name, type, help, field)                                       \
	do {                                                                       \
		const char *row = "civetweb_mqtt_" name;                               \
		CWM_FAMILY(&o, name, type, help);                                      \
		CWM_GAUGE_ROWS(field);                                                 \
	} while (0)
		CWM_ONE("connected", "gauge", "1 when connected to the broker.",
		        connected);
		CWM_ONE("connects_total", "counter",
		        "Successful connections to the broker.", connects);
		CWM_ONE("reconnects_total", "counter",
		        "Connections made again after a lost one.", reconnects);
		CWM_ONE("messages_published_total", "counter",
		        "Messages published and done (QoS 0 sent, QoS 1/2 "
		        "acknowledged).",
		        published);
		CWM_ONE("messages_received_total", "counter",
		        "Messages received from the broker and queued for the "
		        "handlers.",
		        received);
		CWM_FAMILY(&o, "messages_dropped_total", "counter",
		           "Messages lost, by reason: queue_full (QUEUE_SIZE), "
		           "publish_failed (failed or refused after it was "
		           "accepted), late_reply (a reply after its request timed "
		           "out).");
		for (size_t i = 0; i < n; i++)
			cwm_sbuf_printf(
			    &o,
			    "civetweb_mqtt_messages_dropped_total{client=\"%s\",reason="
			    "\"queue_full\"} %llu\n"
			    "civetweb_mqtt_messages_dropped_total{client=\"%s\",reason="
			    "\"publish_failed\"} %llu\n"
			    "civetweb_mqtt_messages_dropped_total{client=\"%s\",reason="
			    "\"late_reply\"} %llu\n",
			    v[i].prefix, (unsigned long long)v[i].dropped_queue_full,
			    v[i].prefix, (unsigned long long)v[i].publish_failed,
			    v[i].prefix, (unsigned long long)v[i].late);
		CWM_ONE("messages_in_flight", "gauge",
		        "Messages handed to the network and not yet acknowledged.",
		        in_flight);
		CWM_ONE("messages_buffered", "gauge",
		        "Messages waiting to be sent (MAX_BUFFERED bounds them).",
		        buffered);
		CWM_ONE("dispatch_queue_messages", "gauge",
		        "Received messages waiting for the handlers (QUEUE_SIZE "
		        "bounds them).",
		        queue_depth);
		CWM_ONE("subscriptions", "gauge",
		        "Topic filters subscribed (renewed on reconnect).",
		        subscriptions);
		CWM_FAMILY(&o, "requests_total", "counter",
		           "Requests (mg_mqtt_request, POST <path>/request/...) by "
		           "outcome: replied, timeout, failed.");
		for (size_t i = 0; i < n; i++)
			cwm_sbuf_printf(
			    &o,
			    "civetweb_mqtt_requests_total{client=\"%s\",outcome="
			    "\"replied\"} %llu\n"
			    "civetweb_mqtt_requests_total{client=\"%s\",outcome="
			    "\"timeout\"} %llu\n"
			    "civetweb_mqtt_requests_total{client=\"%s\",outcome="
			    "\"failed\"} %llu\n",
			    v[i].prefix, (unsigned long long)v[i].replied, v[i].prefix,
			    (unsigned long long)v[i].timeouts, v[i].prefix,
			    (unsigned long long)v[i].failed);
		/* The bridge's families: clients that have one. */
		CWM_FAMILY(&o, "bridge_clients", "gauge",
		           "Browsers connected to the bridge, by transport.");
		for (size_t i = 0; i < n; i++)
			if (v[i].bridge)
				cwm_sbuf_printf(
				    &o,
				    "civetweb_mqtt_bridge_clients{client=\"%s\",transport="
				    "\"websocket\"} %d\n"
				    "civetweb_mqtt_bridge_clients{client=\"%s\",transport="
				    "\"sse\"} %d\n",
				    v[i].prefix, v[i].ws, v[i].prefix, v[i].sse);
#define CWM_BRIDGE_ONE(name, type, help, field)                                \
	do {                                                                       \
		CWM_FAMILY(&o, name, type, help);                                      \
		for (size_t i = 0; i < n; i++)                                         \
			if (v[i].bridge)                                                   \
				cwm_sbuf_printf(&o, "civetweb_mqtt_" name "{client=\"%s\"} "   \
				                    "%llu\n",                                  \
				                v[i].prefix,                                   \
				                (unsigned long long)v[i].field);               \
	} while (0)
		CWM_BRIDGE_ONE("bridge_messages_delivered_total", "counter",
		               "Messages queued for browsers (one per browser).",
		               delivered);
		CWM_BRIDGE_ONE("bridge_clients_dropped_total", "counter",
		               "Browsers dropped for falling BRIDGE_CLIENT_QUEUE "
		               "messages behind.",
		               dropped_clients);
		CWM_BRIDGE_ONE("bridge_publishes_total", "counter",
		               "Messages published by browsers and HTTP clients.",
		               publishes);
		CWM_BRIDGE_ONE("bridge_rejected_total", "counter",
		               "Requests refused by BRIDGE_PUBLISH_ALLOW or "
		               "BRIDGE_SUBSCRIBE_ALLOW.",
		               rejected);
		CWM_BRIDGE_ONE("bridge_last_values", "gauge",
		               "Topics whose last message is kept (BRIDGE_LAST_VALUES "
		               "bounds them).",
		               last_values);
#undef CWM_BRIDGE_ONE
#undef CWM_ONE
#undef CWM_GAUGE_ROWS
	}
	pthread_mutex_unlock(&cwm_registry_lock);
	free(v);
	if (v == NULL || o.oom) {
		free(o.p);
		return cwm_reply_error(conn, 500, "out of memory");
	}
	int status = cwm_reply_body(conn, 200, o.p, o.n,
	                            "text/plain; version=0.0.4; charset=utf-8",
	                            NULL, NULL);
	free(o.p);
	return status;
}

/* Subscribes client bc to filter for a browser. Returns 0 or an HTTP
 * status with *err. Takes the bridge lock. */
static int cwm_bridge_subscribe(struct cwm_bridge *b, struct cwm_bclient *bc,
                                char *filter, int qos, const char **err)
{
	if (cwm_bridge_filter(filter) != 0) {
		*err = "invalid topic filter";
		return 400;
	}
	if (!cwm_may_subscribe(b, filter)) {
		atomic_fetch_add(&b->rejected, 1);
		*err = "subscribing to this filter is not allowed "
		       "(BRIDGE_SUBSCRIBE_ALLOW)";
		return 403;
	}
	size_t fl = strlen(filter);
	int rc = 0;
	pthread_mutex_lock(&b->a->lock);
	if (bc->dead) {
		*err = "the client was dropped";
		rc = 410;
	} else {
		intptr_t old = (intptr_t)cwm_map_get(&bc->filters, filter, fl);
		struct cwm_handler *h = old == 0 ? calloc(1, sizeof(*h)) : NULL;
		if (old == 0 && h == NULL) {
			*err = "out of memory";
			rc = 500;
		} else if (cwm_map_put(&bc->filters, filter, fl,
		                       (void *)(intptr_t)(qos + 1)) != 0) {
			free(h);
			*err = "out of memory";
			rc = 500;
		} else {
			if (h != NULL) {
				h->ud = bc;
				if (cwm_tree_add(&b->tree, filter, h) != 0)
					free(h); /* matches nothing; unsubscribe is harmless */
			}
			/* One count per client and filter; a higher QoS re-subscribes. */
			if (old == 0)
				cwm_sub_ref(b->c, filter, qos, 0);
			else if (qos + 1 > old) {
				cwm_sub_ref(b->c, filter, qos, 0);
				cwm_sub_unref(b->c, filter);
			}
		}
	}
	pthread_mutex_unlock(&b->a->lock);
	return rc;
}

static int cwm_bridge_unsubscribe(struct cwm_bridge *b, struct cwm_bclient *bc,
                                  char *filter, const char **err)
{
	int rc = 0;
	if (cwm_bridge_filter(filter) != 0) {
		*err = "invalid topic filter";
		return 400;
	}
	pthread_mutex_lock(&b->a->lock);
	if (cwm_map_del(&bc->filters, filter, strlen(filter)) == NULL) {
		*err = "not subscribed to this filter";
		rc = 404;
	} else {
		cwm_tree_remove(&b->tree, filter, bc);
		cwm_sub_unref(b->c, filter);
	}
	pthread_mutex_unlock(&b->a->lock);
	return rc;
}

/* GET <path>/events?topic=F&topic=G[&qos=N]: Server-Sent Events. The
 * worker thread serving the request stays here, writing the client's
 * queue, until the browser leaves, the client is dropped, or the bridge or
 * the server stops. */
static int cwm_route_events(struct cwm_bridge *b, struct mg_connection *conn)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	const char *qs = ri->query_string != NULL ? ri->query_string : "";
	char filters[16][512], v[16];
	const char *err = NULL;
	int n = 0, qos = 0, status = 0;

	for (;; n++) {
		char extra[8];
		int r = n < 16 ? cwm_query_topic(qs, "topic", (size_t)n, filters[n],
		                                 sizeof(filters[n]))
		               : cwm_query_topic(qs, "topic", (size_t)n, extra,
		                                 sizeof(extra));
		if (r == -1)
			break;
		if (n == 16)
			return cwm_reply_error(conn, 400,
			                       "at most 16 topic filters a stream");
		if (r == -2)
			return cwm_reply_error(conn, 400, "a topic filter is too long");
		if (r < 0)
			return cwm_reply_error(conn, 400, "invalid topic filter");
	}
	if (n == 0)
		return cwm_reply_error(conn, 400,
		                       "give at least one ?topic=<filter> (at most 16)");
	if (mg_get_var(qs, strlen(qs), "qos", v, sizeof(v)) > 0) {
		if (strlen(v) != 1 || v[0] < '0' || v[0] > '2')
			return cwm_reply_error(conn, 400, "qos must be 0, 1 or 2");
		qos = v[0] - '0';
	}
	for (int i = 0; i < n; i++) {
		if (cwm_bridge_filter(filters[i]) != 0)
			return cwm_reply_error(conn, 400, "invalid topic filter");
		if (!cwm_may_subscribe(b, filters[i])) {
			atomic_fetch_add(&b->rejected, 1);
			return cwm_reply_error(conn, 403,
			                       "subscribing to this filter is not allowed "
			                       "(BRIDGE_SUBSCRIBE_ALLOW)");
		}
	}

	pthread_mutex_lock(&b->a->lock);
	struct cwm_bclient *bc = cwm_bclient_new(b, conn, BC_SSE);
	pthread_mutex_unlock(&b->a->lock);
	if (bc == NULL)
		return cwm_reply_error(conn, 500, "out of memory");
	for (int i = 0; i < n && status == 0; i++)
		status = cwm_bridge_subscribe(b, bc, filters[i], qos, &err);

	if (status == 0) {
		mg_response_header_start(conn, 200);
		mg_response_header_add(conn, "Content-Type", "text/event-stream", -1);
		mg_response_header_add(conn, "Cache-Control", "no-store", -1);
		mg_response_header_add(conn, "X-Accel-Buffering", "no", -1);
		mg_response_header_send(conn);
		static const char hello[] = "retry: 2000\n: civetweb-mqtt\n\n";
		int alive = strcmp(ri->request_method, "HEAD") != 0 &&
		            mg_write(conn, hello, sizeof(hello) - 1) > 0;
		struct cwm_bmsg *batch[64];
		struct cwm_wbuf out = {NULL, 0, 0, 0};

		pthread_mutex_lock(&b->a->lock);
		while (alive && !bc->dead && !b->stopping) {
			if (bc->qlen == 0) {
				struct timespec until = cwm_deadline(CWM_SSE_HEARTBEAT_MS);
				if (pthread_cond_timedwait(&bc->cond, &b->a->lock, &until) ==
				        ETIMEDOUT &&
				    bc->qlen == 0 && !bc->dead && !b->stopping) {
					pthread_mutex_unlock(&b->a->lock);
					alive = mg_write(conn, ":\n", 2) > 0;
					pthread_mutex_lock(&b->a->lock);
				}
				continue;
			}
			unsigned k = 0;
			while (k < 64 && bc->qlen > 0) {
				struct cwm_bmsg *m = bc->q[bc->qhead];
				bc->qhead = (bc->qhead + 1) % bc->qcap;
				bc->qlen--;
				if (m->sse == NULL && (m->sse = malloc(m->len + 9)) != NULL)
					m->sse_len = (size_t)sprintf(m->sse, "data: %s\n\n", m->text);
				batch[k++] = m;
			}
			pthread_mutex_unlock(&b->a->lock);
			/* One write for the batch. */
			out.n = 0;
			out.oom = 0;
			for (unsigned i = 0; i < k; i++) {
				if (batch[i]->sse != NULL)
					cwm_wput(&out, batch[i]->sse, batch[i]->sse_len);
				cwm_bmsg_put(batch[i]);
			}
			if (out.oom || (out.n > 0 && mg_write(conn, out.p, out.n) <= 0))
				alive = 0;
			pthread_mutex_lock(&b->a->lock);
		}
		cwm_bclient_remove(b, bc);
		pthread_mutex_unlock(&b->a->lock);
		cwm_bclient_free(bc);
		free(out.p);
		return 200;
	}
	pthread_mutex_lock(&b->a->lock);
	cwm_bclient_remove(b, bc);
	pthread_mutex_unlock(&b->a->lock);
	cwm_bclient_free(bc);
	return cwm_reply_error(conn, status, err);
}

/* 1 when uri is the bridge path or below it. CivetWeb's last matching step
 * is a case-insensitive prefix match without a '/' boundary, so it also
 * hands us "/MQTT/x" and "/mqttx": those are not ours. */
static int cwm_bridge_owns(const struct cwm_bridge *b, const char *uri)
{
	return strncmp(uri, b->path, b->plen) == 0 &&
	       (uri[b->plen] == '\0' || uri[b->plen] == '/');
}

/* -- digest authentication (RFC 7616, MD5, qop=auth) ---------------------------- */

/* The value of parameter name in a Digest header, unquoted, into out.
 * The header is read as the list of name=value pairs it is, so a name
 * inside another parameter's quoted value is never taken for a parameter.
 * -1: not there, malformed, or longer than out. */
static int cwm_digest_param(const char *h, const char *name, char *out,
                            size_t len)
{
	size_t nl = strlen(name);
	const char *p = h;
	while (*p == ' ' || *p == '\t')
		p++;
	if (strncasecmp(p, "Digest", 6) == 0 && (p[6] == ' ' || p[6] == '\t'))
		p += 6;
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '\0')
			return -1;
		const char *key = p;
		while (*p != '\0' && *p != '=' && *p != ' ' && *p != '\t' &&
		       *p != ',')
			p++;
		size_t kl = (size_t)(p - key);
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p != '=')
			return -1;
		p++;
		while (*p == ' ' || *p == '\t')
			p++;
		int match = kl == nl && strncasecmp(key, name, nl) == 0;
		size_t n = 0;
		if (*p == '"') {
			for (p++; *p != '\0' && *p != '"'; p++) {
				if (*p == '\\' && p[1] != '\0')
					p++;
				if (match && n + 1 >= len)
					return -1;
				if (match)
					out[n++] = *p;
			}
			if (*p != '"')
				return -1;
			p++;
		} else {
			for (; *p != '\0' && *p != ',' && *p != ' ' && *p != '\t'; p++) {
				if (match && n + 1 >= len)
					return -1;
				if (match)
					out[n++] = *p;
			}
		}
		if (match) {
			out[n] = '\0';
			return 0;
		}
	}
}

/* nonce = <time hex>-<md5(secret:time)> */
static void cwm_digest_nonce(const struct cwm_bridge *b, long long t,
                             char out[64])
{
	char ts[24], sec[33], mac[33];
	snprintf(ts, sizeof(ts), "%llx", t);
	for (int i = 0; i < 16; i++)
		snprintf(sec + 2 * i, 3, "%02x", b->secret[i]);
	cwm_md5_join(mac, sec, ts, (const char *)NULL);
	snprintf(out, 64, "%s-%s", ts, mac);
}

/* 1: authenticated; 0: not (stale set when only the nonce was too old). */
static int cwm_digest_check(struct cwm_bridge *b, struct mg_connection *conn,
                            int *stale)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	const char *h = mg_get_header(conn, "Authorization");
	char user[256], realm[256], nonce[64], uri[2048], response[64], qop[16],
	    nc[16], cnonce[256], want[64], ha1[33] = "", ha2[33], expect[33];
	*stale = 0;
	if (h == NULL || strncasecmp(h, "Digest ", 7) != 0)
		return 0;
	h += 7;
	if (cwm_digest_param(h, "username", user, sizeof(user)) ||
	    cwm_digest_param(h, "realm", realm, sizeof(realm)) ||
	    cwm_digest_param(h, "nonce", nonce, sizeof(nonce)) ||
	    cwm_digest_param(h, "uri", uri, sizeof(uri)) ||
	    cwm_digest_param(h, "response", response, sizeof(response)))
		return 0;
	int has_qop = cwm_digest_param(h, "qop", qop, sizeof(qop)) == 0;
	if (has_qop && (strcmp(qop, "auth") != 0 ||
	                cwm_digest_param(h, "nc", nc, sizeof(nc)) ||
	                cwm_digest_param(h, "cnonce", cnonce, sizeof(cnonce))))
		return 0;
	if (strcmp(realm, b->realm) != 0)
		return 0;
	/* The digest covers the URI the browser asked for, not another one.
	 * CivetWeb hands us the path decoded; the header has it as sent. */
	char path[2048];
	uri[strcspn(uri, "?")] = '\0';
	if (mg_url_decode(uri, (int)strlen(uri), path, (int)sizeof(path), 0) < 0 ||
	    ri->request_uri == NULL || strcmp(ri->request_uri, path) != 0)
		return 0;
	cwm_digest_param(h, "uri", uri, sizeof(uri)); /* the whole, for HA2 */
	/* Our own nonce, not older than an hour. */
	char *dash = strchr(nonce, '-');
	if (dash == NULL)
		return 0;
	long long t = strtoll(nonce, NULL, 16);
	cwm_digest_nonce(b, t, want);
	if (strcmp(want, nonce) != 0)
		return 0;
	/* Look the user up: lines "user:realm:md5(user:realm:password)". */
	FILE *f = fopen(b->c->cfg.bridge_auth_file, "r");
	char line[1024];
	if (f == NULL) {
		cwm_log(b->c, MG_MQTT_LOG_ERROR, "bridge: cannot read BRIDGE_AUTH_FILE: %s",
		        strerror(errno));
		return 0;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, "\r\n")] = '\0';
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (c2 == NULL)
			continue;
		*c1 = *c2 = '\0';
		if (strcmp(line, user) == 0 && strcmp(c1 + 1, realm) == 0 &&
		    strlen(c2 + 1) == 32) {
			memcpy(ha1, c2 + 1, 33);
			break;
		}
	}
	fclose(f);
	explicit_bzero(line, sizeof(line));
	if (ha1[0] == '\0')
		return 0;
	cwm_md5_join(ha2, ri->request_method, uri, (const char *)NULL);
	if (has_qop)
		cwm_md5_join(expect, ha1, nonce, nc, cnonce, qop, ha2,
		             (const char *)NULL);
	else
		cwm_md5_join(expect, ha1, nonce, ha2, (const char *)NULL);
	explicit_bzero(ha1, sizeof(ha1));
	unsigned diff = strlen(response) != 32;
	for (int i = 0; i < 32 && response[i] != '\0'; i++)
		diff |= (unsigned)(tolower((unsigned char)response[i]) ^ expect[i]);
	if (diff != 0)
		return 0;
	if ((long long)time(NULL) - t > 3600) {
		*stale = 1;
		return 0;
	}
	return 1;
}

static int cwm_bridge_auth(struct mg_connection *conn, void *cbdata)
{
	struct cwm_bridge *b = cwm_bridge_acquire(cbdata);
	int stale, ok;
	if (b == NULL) {
		cwm_reply_error(conn, 503, "the MQTT client of this bridge is stopped");
		return 0;
	}
	if (b->c->cfg.bridge_auth_file == NULL ||
	    !cwm_bridge_owns(b, mg_get_request_info(conn)->local_uri)) {
		cwm_bridge_release(b);
		return 1;
	}
	ok = cwm_digest_check(b, conn, &stale);
	if (!ok) {
		char nonce[64], hdr[256];
		cwm_digest_nonce(b, (long long)time(NULL), nonce);
		snprintf(hdr, sizeof(hdr),
		         "Digest realm=\"%s\", qop=\"auth\", nonce=\"%s\", "
		         "algorithm=MD5%s",
		         b->realm, nonce, stale ? ", stale=true" : "");
		cwm_reply_text(conn, 401, "{\"error\":\"authentication required\"}",
		               "WWW-Authenticate", hdr);
	}
	cwm_bridge_release(b);
	return ok;
}


/* 405 with the Allow header: method is "GET" (GET and HEAD) or "POST". */
static int cwm_reply_405(struct mg_connection *conn, const char *method)
{
	return cwm_reply_text(conn, 405,
	                      strcmp(method, "GET") == 0 ? "{\"error\":\"use GET\"}"
	                                                 : "{\"error\":\"use POST\"}",
	                      "Allow", method);
}
/* Every plain HTTP request under BRIDGE_PATH. */
static int cwm_bridge_http(struct mg_connection *conn, void *cbdata)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	struct cwm_bridge *b = cwm_bridge_acquire(cbdata);
	int status;
	if (b == NULL)
		return cwm_reply_error(conn, 503,
		                       "the MQTT client of this bridge is stopped");
	if (!cwm_bridge_owns(b, ri->local_uri)) {
		cwm_bridge_release(b);
		return 0; /* not ours: CivetWeb serves it as it would without us */
	}
	const char *route = ri->local_uri + b->plen, *m = ri->request_method;
	int get = strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0;
	int post = strcmp(m, "POST") == 0;
	if (strcmp(route, "/publish") == 0)
		status = post ? cwm_route_publish(b, conn)
		              : cwm_reply_405(conn, "POST");
	else if (strncmp(route, "/publish/", 9) == 0)
		status = post ? cwm_route_publish_raw(b, conn, route + 9)
		              : cwm_reply_405(conn, "POST");
	else if (strcmp(route, "/status") == 0)
		status = get ? cwm_route_status(b, conn)
		             : cwm_reply_405(conn, "GET");
	else if (strcmp(route, "/events") == 0)
		status = get ? cwm_route_events(b, conn)
		             : cwm_reply_405(conn, "GET");
	else if (strncmp(route, "/request/", 9) == 0)
		status = post ? cwm_route_request(b, conn, route + 9)
		              : cwm_reply_405(conn, "POST");
	else if (strcmp(route, "/last") == 0)
		status = get ? cwm_route_last_list(b, conn)
		             : cwm_reply_405(conn, "GET");
	else if (strncmp(route, "/last/", 6) == 0)
		status = get ? cwm_route_last(b, conn, route + 6)
		             : cwm_reply_405(conn, "GET");
	else if (strcmp(route, "/metrics") == 0)
		status = get ? cwm_route_metrics(b, conn)
		             : cwm_reply_405(conn, "GET");
	else if (strcmp(route, "/ws") == 0)
		status = cwm_reply_text(conn, 426,
		                        "{\"error\":\"a WebSocket upgrade is required\"}",
		                        "Upgrade", "websocket");
	else
		status = cwm_reply_error(conn, 404, "no such route");
	cwm_bridge_release(b);
	return status;
}

/* -- WebSocket handlers (CivetWeb's worker thread of the connection) -------- */

static int cwm_ws_connect(const struct mg_connection *conn, void *cbdata)
{
	const char *uri = mg_get_request_info(conn)->local_uri;
	struct cwm_bridge *b = cwm_bridge_acquire(cbdata);
	if (b == NULL)
		return 1; /* refuse the upgrade */
	int ours = cwm_bridge_owns(b, uri) && strcmp(uri + b->plen, "/ws") == 0;
	cwm_bridge_release(b);
	return ours ? 0 : 1;
}

static void cwm_ws_ready(struct mg_connection *conn, void *cbdata)
{
	struct cwm_bridge *b = cwm_bridge_acquire(cbdata);
	if (b == NULL)
		return;
	pthread_mutex_lock(&b->a->lock);
	struct cwm_bclient *bc = cwm_bclient_new(b, conn, BC_WS);
	if (bc != NULL) {
		mg_set_user_connection_data(conn, bc);
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "op", "hello");
		cJSON_AddBoolToObject(o, "connected", mg_mqtt_is_connected(b->c));
		cJSON_AddStringToObject(o, "prefix", b->c->prefix);
		cwm_bclient_send(b, bc, o);
		cJSON_Delete(o);
	}
	pthread_mutex_unlock(&b->a->lock);
	cwm_bridge_release(b);
}

/* Replies to one op: {"op":"ack"|"error","of":op,"id":<echo>,...}. */
static void cwm_ws_reply(struct cwm_bridge *b, struct cwm_bclient *bc,
                         const char *op, const cJSON *id, int status,
                         const char *err, const char *topic, int message_id)
{
	/* Echoes only what is valid UTF-8: a text frame that is not makes a
	 * conforming WebSocket client close the connection (RFC 6455). */
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "op", status == 0 ? "ack" : "error");
	cJSON_AddStringToObject(o, "of",
	                        cwm_utf8_valid(op, strlen(op)) ? op : "");
	if (id != NULL) {
		char *t = cJSON_PrintUnformatted(id);
		if (t != NULL && cwm_utf8_valid(t, strlen(t)))
			cJSON_AddItemToObject(o, "id", cJSON_Duplicate(id, 1));
		cJSON_free(t);
	}
	if (topic != NULL && cwm_utf8_valid(topic, strlen(topic)))
		cJSON_AddStringToObject(o, "topic", topic);
	if (status != 0) {
		cJSON_AddNumberToObject(o, "status", status);
		cJSON_AddStringToObject(o, "error", err);
	}
	if (message_id > 0)
		cJSON_AddNumberToObject(o, "message_id", message_id);
	pthread_mutex_lock(&b->a->lock);
	cwm_bclient_send(b, bc, o);
	pthread_mutex_unlock(&b->a->lock);
	cJSON_Delete(o);
}

static int cwm_ws_data(struct mg_connection *conn, int bits, char *data,
                       size_t len, void *cbdata)
{
	struct cwm_bclient *bc = mg_get_user_connection_data(conn);
	struct cwm_anchor *a = cbdata;
	int opcode = bits & 0xf;
	if (opcode == MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE)
		return 0;
	if (opcode == MG_WEBSOCKET_OPCODE_PING || opcode == MG_WEBSOCKET_OPCODE_PONG)
		return 1;
	if (bc == NULL)
		return 0;
	atomic_fetch_add(&a->users, 1);
	pthread_mutex_lock(&a->lock);
	struct cwm_bridge *b = bc->b;
	if (b == NULL || atomic_load(&b->stopping) || bc->dead)
		b = NULL;
	pthread_mutex_unlock(&a->lock);
	if (b == NULL) {
		cwm_anchor_leave(a);
		return 0;
	}

	const char *err = NULL;
	int status = 0;
	cJSON *req = opcode == MG_WEBSOCKET_OPCODE_TEXT
	                 ? cwm_json_parse(data, len, &err)
	                 : NULL;
	const cJSON *op = cJSON_GetObjectItemCaseSensitive(req, "op");
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(req, "id");
	const cJSON *topic = cJSON_GetObjectItemCaseSensitive(req, "topic");
	const cJSON *qos = cJSON_GetObjectItemCaseSensitive(req, "qos");
	const char *name = cJSON_IsString(op) ? op->valuestring : "";

	if (!cJSON_IsObject(req) || !cJSON_IsString(op)) {
		cwm_ws_reply(b, bc, name, id, 400,
		             err != NULL ? err
		             : opcode == MG_WEBSOCKET_OPCODE_TEXT
		                 ? "malformed JSON or missing \"op\""
		                 : "send JSON text frames",
		             NULL, 0);
		err = NULL;
	} else if (strcmp(name, "subscribe") == 0) {
		int q = 0;
		if (!cJSON_IsString(topic))
			status = 400, err = "\"topic\" must be a string";
		else if (qos != NULL && (!cJSON_IsNumber(qos) || qos->valueint < 0 ||
		                         qos->valueint > 2 ||
		                         qos->valuedouble != (double)qos->valueint))
			status = 400, err = "\"qos\" must be 0, 1 or 2";
		else {
			q = qos != NULL ? qos->valueint : 0;
			status = cwm_bridge_subscribe(b, bc, topic->valuestring, q, &err);
		}
		cwm_ws_reply(b, bc, name, id, status, err,
		             cJSON_IsString(topic) ? topic->valuestring : NULL, 0);
	} else if (strcmp(name, "unsubscribe") == 0) {
		if (!cJSON_IsString(topic))
			status = 400, err = "\"topic\" must be a string";
		else
			status = cwm_bridge_unsubscribe(b, bc, topic->valuestring, &err);
		cwm_ws_reply(b, bc, name, id, status, err,
		             cJSON_IsString(topic) ? topic->valuestring : NULL, 0);
	} else if (strcmp(name, "unsubscribe_all") == 0) {
		pthread_mutex_lock(&a->lock);
		cwm_bclient_unsubscribe_all(b, bc);
		pthread_mutex_unlock(&a->lock);
		cwm_ws_reply(b, bc, name, id, 0, NULL, NULL, 0);
	} else if (strcmp(name, "publish") == 0) {
		int mid = cwm_bridge_publish_json(b, req, &status, &err);
		cwm_ws_reply(b, bc, name, id, mid > 0 ? 0 : status, err,
		             cJSON_IsString(topic) ? topic->valuestring : NULL, mid);
	} else {
		cwm_ws_reply(b, bc, name, id, 400,
		             "unknown op (subscribe, unsubscribe, unsubscribe_all, "
		             "publish)",
		             NULL, 0);
	}
	cJSON_Delete(req);
	cwm_bridge_release(b);
	return 1;
}

static void cwm_ws_close(const struct mg_connection *conn, void *cbdata)
{
	struct cwm_bclient *bc = mg_get_user_connection_data(conn);
	struct cwm_anchor *a = cbdata;
	if (bc == NULL)
		return;
	pthread_mutex_lock(&a->lock);
	if (bc->b != NULL)
		cwm_bclient_remove(bc->b, bc);
	pthread_mutex_unlock(&a->lock);
	cwm_bclient_free(bc);
}

/* -- set-up and tear-down ------------------------------------------------------------ */

static struct cwm_anchor *cwm_anchor_get(const struct mg_context *ctx,
                                         const char *prefix)
{
	struct cwm_anchor *a;
	pthread_mutex_lock(&cwm_registry_lock);
	for (a = cwm_anchors; a != NULL; a = a->next)
		if (a->ctx == ctx && strcmp(a->prefix, prefix) == 0)
			break;
	if (a == NULL && (a = calloc(1, sizeof(*a))) != NULL) {
		a->ctx = ctx;
		snprintf(a->prefix, sizeof(a->prefix), "%s", prefix);
		pthread_mutex_init(&a->lock, NULL);
		pthread_cond_init(&a->idle, NULL);
		a->next = cwm_anchors;
		cwm_anchors = a;
	}
	pthread_mutex_unlock(&cwm_registry_lock);
	return a;
}

/* Before the client's threads start: the bridge, not yet reachable. */
static int cwm_bridge_create(struct mg_mqtt *c, char *err, size_t errlen)
{
	if (c->ctx == NULL) {
		cwm_fmt(err, errlen,
		        "%s_BRIDGE_PATH: the bridge needs a CivetWeb context (ctx is "
		        "NULL)",
		        c->prefix);
		return MG_MQTT_ERR_CONFIG;
	}
	struct cwm_bridge *b = calloc(1, sizeof(*b));
	struct cwm_anchor *a = cwm_anchor_get(c->ctx, c->prefix);
	const char *realm = mg_get_option(c->ctx, "authentication_domain");
	if (b == NULL || a == NULL ||
	    (b->realm = cwm_strdup(realm != NULL ? realm : "")) == NULL) {
		free(b);
		return MG_MQTT_ERR_NOMEM;
	}
	b->c = c;
	b->a = a;
	b->path = c->cfg.bridge_path;
	b->plen = strlen(b->path);
	if (getrandom(b->secret, sizeof(b->secret), 0) != (ssize_t)sizeof(b->secret))
		for (size_t i = 0; i < sizeof(b->secret); i++)
			b->secret[i] = (unsigned char)(rand_r(&c->seed) >> 3);
	pthread_cond_init(&b->wcond, NULL);
	pthread_cond_init(&b->idle, NULL);
	pthread_mutex_init(&b->lv_lock, NULL);
	c->bridge = b;
	return 0;
}

/* After a successful start: writers, then CivetWeb's handlers. */
static int cwm_bridge_open(struct mg_mqtt *c, char *err, size_t errlen)
{
	struct cwm_bridge *b = c->bridge;
	char uri[256];
	for (; b->nwriters < CWM_WRITERS; b->nwriters++)
		if (pthread_create(&b->writers[b->nwriters], NULL, cwm_bridge_writer,
		                   b) != 0) {
			cwm_fmt(err, errlen, "%s: cannot create a bridge thread", c->prefix);
			return MG_MQTT_ERR_THREAD;
		}
	pthread_mutex_lock(&b->a->lock);
	atomic_store(&b->a->bridge, b);
	pthread_mutex_unlock(&b->a->lock);
	snprintf(uri, sizeof(uri), "%s/ws", b->path);
	/* Without an auth file no handler at all (NULL also removes the one an
	 * earlier start on this context may have left). */
	mg_set_auth_handler(c->ctx, b->path,
	                    c->cfg.bridge_auth_file != NULL ? cwm_bridge_auth : NULL,
	                    b->a);
	mg_set_websocket_handler(c->ctx, uri, cwm_ws_connect, cwm_ws_ready,
	                         cwm_ws_data, cwm_ws_close, b->a);
	mg_set_request_handler(c->ctx, b->path, cwm_bridge_http, b->a);
	cwm_log(c, MG_MQTT_LOG_INFO,
	        "bridge at %s (publish: %d filter(s), subscribe: %d filter(s), "
	        "%s)",
	        b->path, c->cfg.nbpub, c->cfg.nbsub,
	        c->cfg.bridge_auth_file != NULL ? "digest authentication"
	                                        : "no authentication");
	return 0;
}

/* After mqtt-dispatch has stopped. CivetWeb may still hold WebSocket
 * connections of this bridge: they are detached, and their close handler
 * frees them. SSE handlers are woken and waited for. */
static void cwm_bridge_destroy(struct mg_mqtt *c)
{
	struct cwm_bridge *b = c->bridge;
	if (b == NULL)
		return;
	pthread_mutex_lock(&b->a->lock);
	if (atomic_load(&b->a->bridge) == b)
		atomic_store(&b->a->bridge, NULL);
	atomic_store(&b->stopping, 1);
	pthread_cond_broadcast(&b->wcond);
	for (struct cwm_bclient *bc = b->clients; bc != NULL; bc = bc->next)
		pthread_cond_signal(&bc->cond);
	pthread_mutex_unlock(&b->a->lock);
	for (int i = 0; i < b->nwriters; i++)
		pthread_join(b->writers[i], NULL);

	atomic_store(&b->a->draining, 1);
	pthread_mutex_lock(&b->a->lock);
	while (atomic_load(&b->a->users) > 0) {
		/* SSE handlers were woken above; plain requests are brief. */
		struct timespec until = cwm_deadline(100);
		for (struct cwm_bclient *bc = b->clients; bc != NULL; bc = bc->next)
			pthread_cond_signal(&bc->cond);
		pthread_cond_timedwait(&b->a->idle, &b->a->lock, &until);
	}
	atomic_store(&b->a->draining, 0);
	while (b->clients != NULL) {
		struct cwm_bclient *bc = b->clients;
		bc->busy = 0; /* writers are gone */
		cwm_bclient_remove(b, bc);
	}
	pthread_mutex_unlock(&b->a->lock);

	cwm_map_free(&b->tree.kids, cwm_tnode_free);
	cwm_tnode_free(b->tree.plus);
	cwm_tnode_free(b->tree.hash);
	for (struct cwm_handler *h = b->tree.handlers, *next; h != NULL; h = next) {
		next = h->next;
		cwm_handler_free(h);
	}
	free(b->cur.v);
	free(b->nxt.v);
	free(b->hits.v);
	free(b->realm);
	cwm_map_free(&b->lv, cwm_lv_free);
	pthread_mutex_destroy(&b->lv_lock);
	pthread_cond_destroy(&b->wcond);
	pthread_cond_destroy(&b->idle);
	free(b);
	c->bridge = NULL;
}

/* ========================================================================
 * 13. Requests: a publish with a reply topic, and the wait for its reply
 * ====================================================================== */

/* One caller of mg_mqtt_request(), on its own stack, linked into c->reqs
 * while it waits. */
struct cwm_req {
	struct cwm_req *next;
	pthread_cond_t cond;
	char corr[32];      /* correlation id: the last level of the reply topic */
	int done;           /* 1: replied; -1: out of memory copying the reply */
	void *payload;
	size_t len;
	char *content_type;
};

/* Start: the reply topics are "<client id>/reply/<id>", when the client id
 * can be the start of a topic name. */
static int cwm_req_setup(struct mg_mqtt *c)
{
	const char *id = c->client_id;
	if (strpbrk(id, "+#") != NULL || id[0] == '$')
		return 0; /* mg_mqtt_request() says MG_MQTT_ERR_TOPIC */
	size_t n = strlen(id);
	if ((c->reply_base = malloc(n + 8)) == NULL)
		return MG_MQTT_ERR_NOMEM;
	memcpy(c->reply_base, id, n);
	memcpy(c->reply_base + n, "/reply/", 8);
	c->reply_base_len = n + 7;
	if (getrandom(&c->req_nonce, sizeof(c->req_nonce), GRND_NONBLOCK) !=
	    (ssize_t)sizeof(c->req_nonce))
		c->req_nonce = (uint32_t)cwm_now_ms() ^ (uint32_t)getpid();
	return 0;
}

/* paho's receive thread, before anything else looks at a message: takes
 * a reply to a waiting request. Returns 1 when the message was a reply
 * (then it is consumed here, on time or late), 0 otherwise. */
static int cwm_req_arrived(struct mg_mqtt *c, const char *topic, size_t tl,
                           MQTTAsync_message *m)
{
	size_t bl = c->reply_base_len;
	if (c->reply_base == NULL || tl <= bl ||
	    memcmp(topic, c->reply_base, bl) != 0 ||
	    memchr(topic + bl, '/', tl - bl) != NULL)
		return 0;
	const char *corr = topic + bl;
	size_t cl = tl - bl;
	pthread_mutex_lock(&c->req_lock);
	struct cwm_req *q = c->reqs;
	while (q != NULL &&
	       (q->done || strlen(q->corr) != cl || memcmp(q->corr, corr, cl) != 0))
		q = q->next;
	if (q == NULL) {
		atomic_fetch_add(&c->req_late, 1);
	} else {
		size_t n = m->payloadlen > 0 ? (size_t)m->payloadlen : 0;
		q->payload = malloc(n + 1);
		if (q->payload != NULL) {
			if (n > 0)
				memcpy(q->payload, m->payload, n);
			((char *)q->payload)[n] = '\0';
			q->len = n;
			if (m->properties.count > 0 &&
			    MQTTProperties_hasProperty(&m->properties,
			                               MQTTPROPERTY_CODE_CONTENT_TYPE)) {
				MQTTProperty *p = MQTTProperties_getProperty(
				    &m->properties, MQTTPROPERTY_CODE_CONTENT_TYPE);
				if (p != NULL && (q->content_type =
				                      malloc((size_t)p->value.data.len + 1))) {
					memcpy(q->content_type, p->value.data.data,
					       (size_t)p->value.data.len);
					q->content_type[p->value.data.len] = '\0';
				}
			}
		}
		q->done = q->payload != NULL ? 1 : -1;
		pthread_cond_signal(&q->cond);
	}
	pthread_mutex_unlock(&c->req_lock);
	return 1;
}

/* Stop: every waiting request returns MG_MQTT_ERR_STOPPED. wait: also
 * until every caller has left mg_mqtt_request() (after c->stopping is
 * set, so that none still waits for its subscription). */
static void cwm_req_stop(struct mg_mqtt *c, int wait)
{
	pthread_mutex_lock(&c->req_lock);
	c->req_stopping = 1;
	for (struct cwm_req *q = c->reqs; q != NULL; q = q->next)
		pthread_cond_signal(&q->cond);
	while (wait && c->req_active > 0) {
		pthread_mutex_unlock(&c->req_lock);
		usleep(1000);
		pthread_mutex_lock(&c->req_lock);
	}
	pthread_mutex_unlock(&c->req_lock);
}

/* Holds the reply filter and waits until the broker has granted it (on the
 * first request, and after a reconnect until it is renewed). Returns 0,
 * MG_MQTT_ERR_TIMEOUT, _STOPPED, _REFUSED. */
static int cwm_req_ready(struct mg_mqtt *c, int64_t deadline)
{
	char filter[sizeof(c->prefix) + 512];
	size_t n = c->reply_base_len;
	char *f = n + 2 <= sizeof(filter) ? filter : malloc(n + 2);
	int rc = 0;
	if (f == NULL)
		return MG_MQTT_ERR_NOMEM;
	memcpy(f, c->reply_base, n);
	f[n] = '+';
	f[n + 1] = '\0';
	if (!atomic_exchange(&c->reply_held, 1))
		cwm_sub_ref(c, f, 1, 1);
	for (int64_t sleep_us = 200;; sleep_us = sleep_us < 20000 ? sleep_us * 2 : sleep_us) {
		pthread_mutex_lock(&c->lock);
		const struct cwm_sub *s = cwm_map_get(&c->subs, f, n + 1);
		int granted = s != NULL ? s->granted : -1, stopping = c->stopping;
		int ok = granted >= 0 && granted < 0x80 && c->state == CWM_CONNECTED;
		pthread_mutex_unlock(&c->lock);
		if (ok)
			break;
		if (stopping) {
			rc = MG_MQTT_ERR_STOPPED;
			break;
		}
		if (granted >= 0x80) {
			cwm_log(c, MG_MQTT_LOG_ERROR,
			        "the broker refused the reply subscription '%s' (code "
			        "0x%02x): requests cannot get replies",
			        f, (unsigned)granted);
			rc = MG_MQTT_ERR_REFUSED;
			break;
		}
		int64_t left = deadline - cwm_now_ms();
		if (left <= 0) {
			rc = MG_MQTT_ERR_TIMEOUT;
			break;
		}
		/* Only until the first SUBACK (and again after a reconnect). */
		usleep((useconds_t)(sleep_us < left * 1000 ? sleep_us : left * 1000));
	}
	if (f != filter)
		free(f);
	return rc;
}

/* The 3.1.1 request: {"reply_to":..,"correlation_id":..,"payload":..}. */
static char *cwm_req_envelope(const char *reply_to, const char *corr,
                              const void *payload, size_t len)
{
	cJSON *o = cJSON_CreateObject();
	char *out = NULL;
	if (o == NULL)
		return NULL;
	if (cJSON_AddStringToObject(o, "reply_to", reply_to) != NULL &&
	    cJSON_AddStringToObject(o, "correlation_id", corr) != NULL &&
	    cwm_add_payload(o, payload, len) == 0)
		out = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return out;
}

/* mg_mqtt_request() once the arguments are checked and the caller
 * counted in c->req_active. */
static int cwm_request(struct mg_mqtt *c, const char *topic,
                       const void *payload, size_t len, int qos,
                       int timeout_ms, struct mg_mqtt_reply *reply)
{
	int64_t deadline = cwm_now_ms() + timeout_ms;
	int rc = cwm_req_ready(c, deadline);
	if (rc != 0)
		return rc;

	struct cwm_req q;
	memset(&q, 0, sizeof(q));
	pthread_cond_init(&q.cond, NULL);
	pthread_mutex_lock(&c->req_lock);
	if (c->req_stopping) {
		pthread_mutex_unlock(&c->req_lock);
		pthread_cond_destroy(&q.cond);
		return MG_MQTT_ERR_STOPPED;
	}
	snprintf(q.corr, sizeof(q.corr), "%08x%llx", (unsigned)c->req_nonce,
	         (unsigned long long)++c->req_seq);
	q.next = c->reqs;
	c->reqs = &q;
	pthread_mutex_unlock(&c->req_lock);

	size_t bl = c->reply_base_len, cl = strlen(q.corr);
	char *reply_to = malloc(bl + cl + 1), *env = NULL;
	if (reply_to == NULL) {
		rc = MG_MQTT_ERR_NOMEM;
	} else {
		memcpy(reply_to, c->reply_base, bl);
		memcpy(reply_to + bl, q.corr, cl + 1);
		if (c->v5) {
			struct mg_mqtt_props p;
			memset(&p, 0, sizeof(p));
			p.response_topic = reply_to;
			p.correlation_data = q.corr;
			p.correlation_len = cl;
			rc = mg_mqtt_publish_props(c, topic, payload, len, qos, 0, &p);
		} else if ((env = cwm_req_envelope(reply_to, q.corr, payload, len)) ==
		           NULL) {
			rc = MG_MQTT_ERR_NOMEM;
		} else {
			rc = mg_mqtt_publish(c, topic, env, strlen(env), qos, 0);
		}
	}
	free(reply_to);
	cJSON_free(env);

	pthread_mutex_lock(&c->req_lock);
	if (rc > 0) {
		struct timespec until = cwm_deadline(deadline - cwm_now_ms());
		while (q.done == 0 && !c->req_stopping &&
		       pthread_cond_timedwait(&q.cond, &c->req_lock, &until) !=
		           ETIMEDOUT) {
		}
		rc = q.done == 1    ? 0
		     : q.done < 0   ? MG_MQTT_ERR_NOMEM
		     : c->req_stopping ? MG_MQTT_ERR_STOPPED
		                       : MG_MQTT_ERR_TIMEOUT;
	}
	for (struct cwm_req **pp = &c->reqs; *pp != NULL; pp = &(*pp)->next)
		if (*pp == &q) {
			*pp = q.next;
			break;
		}
	pthread_mutex_unlock(&c->req_lock);
	pthread_cond_destroy(&q.cond);

	if (rc == 0) {
		reply->payload = q.payload;
		reply->payload_len = q.len;
		reply->content_type = q.content_type;
		return 0;
	}
	free(q.payload);
	free(q.content_type);
	return rc;
}

int mg_mqtt_request(struct mg_mqtt *c, const char *topic, const void *payload,
                    size_t len, int qos, int timeout_ms,
                    struct mg_mqtt_reply *reply)
{
	int rc;
	if (reply != NULL)
		memset(reply, 0, sizeof(*reply));
	if ((rc = cwm_ops_check(c)) != 0)
		return rc;
	if (topic == NULL || reply == NULL || timeout_ms <= 0 ||
	    (payload == NULL && len > 0))
		return MG_MQTT_ERR_INVALID;
	if (qos < 0 || qos > 2)
		return MG_MQTT_ERR_QOS;
	if (mg_mqtt_topic_valid(topic) != 0 || c->reply_base == NULL)
		return MG_MQTT_ERR_TOPIC;
	pthread_mutex_lock(&c->req_lock);
	c->req_active++;
	pthread_mutex_unlock(&c->req_lock);
	rc = cwm_request(c, topic, payload, len, qos, timeout_ms, reply);
	atomic_fetch_add(rc == 0                      ? &c->req_replied
	                 : rc == MG_MQTT_ERR_TIMEOUT ? &c->req_timeouts
	                                              : &c->req_failed,
	                 1);
	/* The last touch of c: stop may free it once req_active is 0. */
	pthread_mutex_lock(&c->req_lock);
	c->req_active--;
	pthread_mutex_unlock(&c->req_lock);
	return rc;
}

void mg_mqtt_reply_free(struct mg_mqtt_reply *reply)
{
	if (reply == NULL)
		return;
	free(reply->payload);
	free(reply->content_type);
	memset(reply, 0, sizeof(*reply));
}

/* ========================================================================
 * 14. Life cycle
 * ====================================================================== */

struct mg_mqtt *mg_mqtt_create(const char *prefix)
{
	struct mg_mqtt *c;
	pthread_condattr_t ca;

	if (prefix == NULL || prefix[0] == '\0')
		prefix = "MQTT";
	size_t n = strlen(prefix);
	if (n >= sizeof(c->prefix))
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (!(isalnum((unsigned char)prefix[i]) || prefix[i] == '_'))
			return NULL;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++)
		c->prefix[i] = (char)toupper((unsigned char)prefix[i]);
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->req_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_cond_init(&c->io_cond, &ca);
	pthread_cond_init(&c->ev_cond, &ca);
	pthread_cond_init(&c->state_cond, &ca);
	pthread_cond_init(&c->space_cond, &ca);
	pthread_condattr_destroy(&ca);
	c->next_id = 1;
	return c;
}

const char *mg_mqtt_prefix(const struct mg_mqtt *c)
{
	return c != NULL ? c->prefix : NULL;
}

static int cwm_can_register(const struct mg_mqtt *c, const void *h)
{
	if (c == NULL || h == NULL)
		return MG_MQTT_ERR_INVALID;
	if (atomic_load(&c->ops_ok) || c->dispatch_started)
		return MG_MQTT_ERR_STARTED;
	return 0;
}

int mg_mqtt_on_topic(struct mg_mqtt *c, const char *filter,
                     mg_mqtt_message_handler h, void *user_data)
{
	int rc = cwm_can_register(c, (const void *)h);
	if (rc != 0)
		return rc;
	if (filter == NULL)
		return MG_MQTT_ERR_INVALID;
	char *plain;
	struct mg_mqtt_params *params;
	if ((rc = cwm_filter_normalize(filter, &plain, &params)) != 0)
		return rc;
	struct cwm_handler *hd = calloc(1, sizeof(*hd));
	if (hd == NULL) {
		free(plain);
		free(params);
		return MG_MQTT_ERR_NOMEM;
	}
	hd->fn = h;
	hd->ud = user_data;
	hd->seq = ++c->nhandlers;
	hd->params = params;
	if ((rc = cwm_tree_add(&c->tree, plain, hd)) != 0)
		cwm_handler_free(hd);
	free(plain);
	return rc;
}

#define CWM_SETTER(fn_name, type, field)                                       \
	int fn_name(struct mg_mqtt *c, type h, void *user_data)                    \
	{                                                                          \
		int rc = cwm_can_register(c, (const void *)h);                         \
		if (rc == 0) {                                                         \
			c->field = h;                                                      \
			c->field##_ud = user_data;                                         \
		}                                                                      \
		return rc;                                                             \
	}
CWM_SETTER(mg_mqtt_on_message, mg_mqtt_message_handler, on_message)
CWM_SETTER(mg_mqtt_on_connect, mg_mqtt_connect_handler, on_connect)
CWM_SETTER(mg_mqtt_on_disconnect, mg_mqtt_disconnect_handler, on_disconnect)
CWM_SETTER(mg_mqtt_on_publish, mg_mqtt_publish_handler, on_publish)
CWM_SETTER(mg_mqtt_on_subscribe, mg_mqtt_ack_handler, on_subscribe)
CWM_SETTER(mg_mqtt_on_unsubscribe, mg_mqtt_ack_handler, on_unsubscribe)
CWM_SETTER(mg_mqtt_on_log, mg_mqtt_log_handler, on_log)
#undef CWM_SETTER

static int cwm_registry_add(struct mg_mqtt *c)
{
	int rc = 0;
	if (c->ctx == NULL)
		return 0;
	pthread_mutex_lock(&cwm_registry_lock);
	for (size_t i = 0; i < cwm_nregistry; i++)
		if (cwm_registry[i].ctx == c->ctx &&
		    strcmp(cwm_registry[i].c->prefix, c->prefix) == 0)
			rc = MG_MQTT_ERR_EXISTS;
	if (rc == 0) {
		struct cwm_reg *r =
		    realloc(cwm_registry, sizeof(*r) * (cwm_nregistry + 1));
		if (r == NULL) {
			rc = MG_MQTT_ERR_NOMEM;
		} else {
			cwm_registry = r;
			r[cwm_nregistry].ctx = c->ctx;
			r[cwm_nregistry].c = c;
			cwm_nregistry++;
		}
	}
	pthread_mutex_unlock(&cwm_registry_lock);
	return rc;
}

static void cwm_registry_remove(struct mg_mqtt *c)
{
	pthread_mutex_lock(&cwm_registry_lock);
	for (size_t i = 0; i < cwm_nregistry; i++)
		if (cwm_registry[i].c == c) {
			cwm_registry[i] = cwm_registry[--cwm_nregistry];
			break;
		}
	if (cwm_nregistry == 0) {
		free(cwm_registry);
		cwm_registry = NULL;
	}
	atomic_store(&c->registered, 0);
	pthread_mutex_unlock(&cwm_registry_lock);
}

struct mg_mqtt *mg_mqtt_get(const struct mg_context *ctx, const char *prefix)
{
	struct mg_mqtt *found = NULL;
	if (ctx == NULL)
		return NULL;
	if (prefix == NULL || prefix[0] == '\0')
		prefix = "MQTT";
	pthread_mutex_lock(&cwm_registry_lock);
	for (size_t i = 0; i < cwm_nregistry; i++)
		if (cwm_registry[i].ctx == ctx &&
		    strcasecmp(cwm_registry[i].c->prefix, prefix) == 0 &&
		    atomic_load(&cwm_registry[i].c->registered))
			found = cwm_registry[i].c;
	pthread_mutex_unlock(&cwm_registry_lock);
	return found;
}

static char *cwm_make_client_id(void)
{
	unsigned char b[4];
	char id[32];
	if (getrandom(b, sizeof(b), GRND_NONBLOCK) != (ssize_t)sizeof(b)) {
		unsigned v = (unsigned)time(NULL) ^ ((unsigned)getpid() << 16) ^
		             (unsigned)(uintptr_t)&b;
		memcpy(b, &v, sizeof(b));
	}
	snprintf(id, sizeof(id), "civetweb-mqtt-%02x%02x%02x%02x", b[0], b[1],
	         b[2], b[3]);
	return cwm_strdup(id);
}

/* Stops the threads and frees what start set up; the client is then as
 * mg_mqtt_create() left it, with its handlers. */
static void cwm_shutdown(struct mg_mqtt *c)
{
	cwm_registry_remove(c);
	pthread_mutex_lock(&c->lock);
	c->stopping = 1;
	c->stop_deadline = cwm_now_ms() + (int64_t)c->cfg.connection_timeout * 1000;
	pthread_cond_signal(&c->io_cond);
	pthread_cond_broadcast(&c->space_cond);
	pthread_mutex_unlock(&c->lock);
	cwm_req_stop(c, 0);

	if (c->io_started) {
		pthread_join(c->io_thread, NULL);
	} else if (c->paho != NULL) {
		MQTTAsync_destroy(&c->paho);
		c->paho = NULL;
		pthread_mutex_lock(&c->lock);
		cwm_fail_all(c);
		pthread_mutex_unlock(&c->lock);
	}
	pthread_mutex_lock(&c->lock);
	c->dispatch_exit = 1;
	pthread_cond_signal(&c->ev_cond);
	pthread_mutex_unlock(&c->lock);
	if (c->dispatch_started)
		pthread_join(c->dispatch_thread, NULL);
	cwm_bridge_destroy(c);
	cwm_req_stop(c, 1); /* woken at the start; wait until they are out */
	while (c->evq != NULL) {
		struct cwm_event *ev = c->evq;
		c->evq = ev->next;
		cwm_event_discard(ev);
	}

	atomic_store(&c->ops_ok, 0);
	atomic_store(&c->connected, 0);
	while (c->sub_head != NULL)
		cwm_sub_forget(c, c->sub_head);
	cwm_map_free(&c->subs, free); /* and any entry still marked gone */
	cwm_settings_free(&c->cfg);
	free(c->client_id);
	free(c->reply_base);
	free(c->broker);
	free(c->error_log_file);
	free(c->pdir);
	free(c->cur.v);
	free(c->nxt.v);
	free(c->hits.v);

	/* Back to the state mg_mqtt_create() left, handlers kept. */
	size_t keep = offsetof(struct mg_mqtt, cfg);
	pthread_mutex_t lock = c->lock;
	pthread_cond_t a = c->io_cond, b = c->ev_cond, d = c->state_cond,
	               e = c->space_cond;
	memset((char *)c + keep, 0, sizeof(*c) - keep);
	c->lock = lock;
	c->io_cond = a;
	c->ev_cond = b;
	c->state_cond = d;
	c->space_cond = e;
	c->next_id = 1;
}

int mg_mqtt_start(struct mg_mqtt *c, struct mg_context *ctx,
                  const char **options, char *errbuf, size_t errlen)
{
	char err[1024] = "";
	int rc;

	if (errbuf != NULL && errlen > 0)
		errbuf[0] = '\0';
	if (c == NULL)
		return MG_MQTT_ERR_INVALID;
	if (atomic_load(&c->ops_ok) || c->dispatch_started)
		return MG_MQTT_ERR_STARTED;

	c->ctx = ctx;
	if (ctx != NULL) {
		const char *lf = mg_get_option(ctx, "error_log_file");
		if (lf != NULL && lf[0] != '\0' &&
		    (c->error_log_file = cwm_strdup(lf)) == NULL)
			return MG_MQTT_ERR_NOMEM;
	}
	rc = cwm_settings_read(&c->cfg, c->prefix, options, err, sizeof(err));
	if (rc == MG_MQTT_ERR_NOMEM && err[0] == '\0')
		snprintf(err, sizeof(err), "%s: out of memory", c->prefix);
	if (rc != 0)
		goto fail;

	const struct cwm_settings *s = &c->cfg;
	c->v5 = s->protocol == 5;
	c->client_id = s->client_id != NULL ? cwm_strdup(s->client_id)
	                                    : cwm_make_client_id();
	if (c->client_id == NULL || (rc = cwm_req_setup(c)) != 0) {
		rc = MG_MQTT_ERR_NOMEM;
		goto fail;
	}
	if ((rc = cwm_registry_add(c)) != 0) {
		snprintf(err, sizeof(err),
		         "%s: a client with this prefix is already started on this "
		         "server",
		         c->prefix);
		goto fail;
	}
	if (!s->use_tls && (s->tls_ca_certs != NULL || s->tls_certfile != NULL ||
	                    s->tls_insecure))
		cwm_log(c, MG_MQTT_LOG_WARNING,
		        "TLS options are set but TLS is off (set %s_TLS_ENABLED or use "
		        "an mqtts:// URL)",
		        c->prefix);
	if (s->client_id == NULL && !s->clean_session)
		cwm_log(c, MG_MQTT_LOG_WARNING,
		        "CLEAN_SESSION is false with a generated client id: the "
		        "session cannot be resumed after a restart");

	for (int i = 0; i < s->nsubs; i++) {
		struct cwm_sub *sub = calloc(1, sizeof(*sub));
		const char *f = s->sub_filters[i];
		if (sub == NULL ||
		    cwm_map_put_key(&c->subs, f, strlen(f), sub, &sub->filter) != 0) {
			cwm_sub_free(sub);
			rc = MG_MQTT_ERR_NOMEM;
			goto fail;
		}
		sub->qos = s->sub_qos[i];
		sub->granted = -1;
		sub->app = 1;
		sub->prev = c->sub_tail;
		if (c->sub_tail != NULL)
			c->sub_tail->next = sub;
		else
			c->sub_head = sub;
		c->sub_tail = sub;
	}

	if (s->persistence_dir != NULL && (rc = cwm_persist_open(c, err, sizeof(err))) != 0)
		goto fail;

	MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
	co.MQTTVersion = c->v5 ? MQTTVERSION_5
	                 : s->protocol == 3 ? MQTTVERSION_3_1
	                                    : MQTTVERSION_3_1_1;
	co.sendWhileDisconnected = 0; /* buffering while disconnected is ours */
	co.maxBufferedMessages = 1 << 30;
	co.persistQoS0 = 0;
	co.restoreMessages = 0;
	rc = MQTTAsync_createWithOptions(&c->paho, s->uris[0], c->client_id,
	                                 MQTTCLIENT_PERSISTENCE_NONE, NULL, &co);
	if (rc != MQTTASYNC_SUCCESS) {
		snprintf(err, sizeof(err), "%s: cannot create the MQTT client: %s",
		         c->prefix, MQTTAsync_strerror(rc));
		c->paho = NULL;
		rc = MG_MQTT_ERR_PAHO;
		goto fail;
	}
	MQTTAsync_setCallbacks(c->paho, c, cwm_on_lost, cwm_on_message, NULL);
	if (c->v5)
		MQTTAsync_setDisconnected(c->paho, c, cwm_on_server_disconnect);

	if (s->bridge_path != NULL && (rc = cwm_bridge_create(c, err, sizeof(err))) != 0)
		goto fail;
	if (s->bridge_path != NULL && s->shared_group != NULL)
		cwm_log(c, MG_MQTT_LOG_WARNING,
		        "%s_SHARED_GROUP also shares the subscriptions the bridge "
		        "makes for browsers: a browser sees only the messages the "
		        "broker gives this server; to share only some filters, "
		        "write them as $share/<group>/<filter> in %s_SUBSCRIBE",
		        c->prefix, c->prefix);

	c->state = CWM_DISCONNECTED;
	c->backoff_s = s->reconnect_min;
	c->window = s->max_inflight;
	c->seed = (unsigned)cwm_now_ms() ^ (unsigned)(uintptr_t)c;
	atomic_store(&c->ops_ok, 1);
	c->dispatch_started = 1;
	if (pthread_create(&c->dispatch_thread, NULL, cwm_dispatch_main, c) != 0) {
		c->dispatch_started = 0;
		rc = MG_MQTT_ERR_THREAD;
		goto fail;
	}
	c->io_started = 1;
	if (pthread_create(&c->io_thread, NULL, cwm_io_main, c) != 0) {
		c->io_started = 0;
		rc = MG_MQTT_ERR_THREAD;
		goto fail;
	}

	if (!s->connect_async) {
		int64_t budget =
		    (int64_t)s->connection_timeout * 1000 * s->nuris + 5000;
		struct timespec until = cwm_deadline(budget);
		pthread_mutex_lock(&c->lock);
		while (c->first_result == 0 &&
		       pthread_cond_timedwait(&c->state_cond, &c->lock, &until) !=
		           ETIMEDOUT) {
		}
		rc = c->first_result;
		if (rc < 0)
			cwm_fmt(err, sizeof(err), "%s", c->first_msg);
		pthread_mutex_unlock(&c->lock);
		if (rc == 0) {
			rc = MG_MQTT_ERR_TIMEOUT;
			snprintf(err, sizeof(err), "%s: no answer from %s within %lld s",
			         c->prefix, s->uris[0], (long long)budget / 1000);
		}
		if (rc < 0)
			goto fail;
	}
	if (c->bridge != NULL && (rc = cwm_bridge_open(c, err, sizeof(err))) != 0)
		goto fail;
	atomic_store(&c->registered, 1);
	return 0;

fail:
	if (err[0] == '\0')
		snprintf(err, sizeof(err), "%s: %s", c->prefix, mg_mqtt_strerror(rc));
	cwm_log_quiet(c, MG_MQTT_LOG_ERROR, "%s", err);
	cwm_fmt(errbuf, errlen, "%s", err);
	cwm_shutdown(c);
	return rc;
}

int mg_mqtt_stop(struct mg_mqtt *c)
{
	if (c == NULL)
		return 0;
	if (c->dispatch_started &&
	    pthread_equal(pthread_self(), c->dispatch_thread))
		return MG_MQTT_ERR_IN_HANDLER;
	cwm_shutdown(c);
	cwm_map_free(&c->tree.kids, cwm_tnode_free);
	cwm_tnode_free(c->tree.plus);
	cwm_tnode_free(c->tree.hash);
	for (struct cwm_handler *h = c->tree.handlers, *next; h != NULL; h = next) {
		next = h->next;
		cwm_handler_free(h);
	}
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->req_lock);
	pthread_cond_destroy(&c->io_cond);
	pthread_cond_destroy(&c->ev_cond);
	pthread_cond_destroy(&c->state_cond);
	pthread_cond_destroy(&c->space_cond);
	free(c);
	return 0;
}

/* ========================================================================
 * 15. Status
 * ====================================================================== */

int mg_mqtt_subscriptions(struct mg_mqtt *c, struct mg_mqtt_subscription **list)
{
	if (c == NULL || list == NULL)
		return MG_MQTT_ERR_INVALID;
	*list = NULL;
	pthread_mutex_lock(&c->lock);
	size_t n = 0, size = 0;
	for (struct cwm_sub *s = c->sub_head; s != NULL; s = s->next) {
		n++;
		size += strlen(s->filter) + 1;
	}
	if (n == 0) {
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	struct mg_mqtt_subscription *v = malloc(n * sizeof(*v) + size);
	if (v == NULL) {
		pthread_mutex_unlock(&c->lock);
		return MG_MQTT_ERR_NOMEM;
	}
	char *p = (char *)(v + n);
	size_t i = 0;
	for (struct cwm_sub *s = c->sub_head; s != NULL; s = s->next, i++) {
		size_t l = strlen(s->filter) + 1;
		v[i].filter = memcpy(p, s->filter, l);
		p += l;
		v[i].qos = s->qos;
		v[i].granted = s->granted;
		v[i].app = s->app;
		v[i].browsers = s->brefs - s->sys;
		v[i].internal = s->sys;
	}
	pthread_mutex_unlock(&c->lock);
	*list = v;
	return (int)n;
}

/* The status as a cJSON object (also served by the bridge). */
static cJSON *cwm_status_object(struct mg_mqtt *c)
{
	cJSON *o = cJSON_CreateObject(), *subs = cJSON_CreateArray(),
	      *counters = cJSON_CreateObject(), *gauges = cJSON_CreateObject(),
	      *brokers = cJSON_CreateArray(), *config = cJSON_CreateObject();
	int running = atomic_load(&c->ops_ok);

	if (o == NULL || subs == NULL || counters == NULL || gauges == NULL ||
	    brokers == NULL || config == NULL) {
		cJSON_Delete(o);
		cJSON_Delete(subs);
		cJSON_Delete(counters);
		cJSON_Delete(gauges);
		cJSON_Delete(brokers);
		cJSON_Delete(config);
		return NULL;
	}
	cJSON_AddStringToObject(o, "prefix", c->prefix);
	pthread_mutex_lock(&c->lock);
	if (c->client_id != NULL)
		cJSON_AddStringToObject(o, "client_id", c->client_id);
	else
		cJSON_AddNullToObject(o, "client_id");
	cJSON_AddBoolToObject(o, "running", running);
	cJSON_AddBoolToObject(o, "connected", c->state == CWM_CONNECTED);
	if (c->broker != NULL)
		cJSON_AddStringToObject(o, "broker", c->broker);
	else
		cJSON_AddNullToObject(o, "broker");
	for (int i = 0; i < c->cfg.nuris; i++)
		cJSON_AddItemToArray(brokers, cJSON_CreateString(c->cfg.uris[i]));
	cJSON_AddItemToObject(o, "brokers", brokers);
	cJSON_AddStringToObject(o, "protocol", cwm_protocol_name(c->cfg.protocol));
	cJSON_AddStringToObject(o, "transport",
	                        c->cfg.transport == 1 ? "websockets" : "tcp");
	cJSON_AddBoolToObject(o, "tls", c->cfg.use_tls);
	for (struct cwm_sub *s = c->sub_head; s != NULL; s = s->next) {
		cJSON *e = cJSON_CreateObject();
		cJSON_AddStringToObject(e, "filter", s->filter);
		cJSON_AddNumberToObject(e, "qos", s->qos);
		if (s->granted >= 0)
			cJSON_AddNumberToObject(e, "granted", s->granted);
		else
			cJSON_AddNullToObject(e, "granted");
		cJSON_AddBoolToObject(e, "app", s->app);
		cJSON_AddNumberToObject(e, "browsers", s->brefs - s->sys);
		if (s->sys)
			cJSON_AddBoolToObject(e, "internal", 1);
		cJSON_AddItemToArray(subs, e);
	}
	cJSON_AddItemToObject(o, "subscriptions", subs);
	cJSON_AddNumberToObject(counters, "published", (double)c->published);
	cJSON_AddNumberToObject(counters, "publish_failed",
	                        (double)c->publish_failed);
	cJSON_AddNumberToObject(counters, "received", (double)c->received);
	cJSON_AddNumberToObject(counters, "dropped_queue_full",
	                        (double)c->dropped_queue_full);
	cJSON_AddNumberToObject(counters, "reconnects", (double)c->reconnects);
	cJSON_AddNumberToObject(counters, "connects", (double)c->connects);
	int queued = 0;
	for (struct cwm_out *r = c->retry; r != NULL; r = r->next)
		queued += r->type == CMD_PUBLISH && !r->internal;
	for (struct cwm_out *r = c->outq; r != NULL; r = r->next)
		queued += r->type == CMD_PUBLISH;
	cJSON_AddNumberToObject(gauges, "in_flight", c->inflight + c->inflight0);
	cJSON_AddNumberToObject(gauges, "queued", queued);
	cJSON_AddNumberToObject(gauges, "queue_depth", c->ev_msgs);
	pthread_mutex_unlock(&c->lock);
	cJSON_AddNumberToObject(counters, "requests_replied",
	                        (double)atomic_load(&c->req_replied));
	cJSON_AddNumberToObject(counters, "requests_timed_out",
	                        (double)atomic_load(&c->req_timeouts));
	cJSON_AddNumberToObject(counters, "requests_failed",
	                        (double)atomic_load(&c->req_failed));
	cJSON_AddNumberToObject(counters, "late_replies",
	                        (double)atomic_load(&c->req_late));
	/* The bridge lives from start to stop; its counters are atomic. */
	struct cwm_bridge *b = running ? c->bridge : NULL;
	if (b != NULL) {
		cJSON *bo = cJSON_CreateObject();
		int ws = atomic_load(&b->n_ws), sse = atomic_load(&b->n_sse);
		cJSON_AddStringToObject(bo, "path", b->path);
		cJSON_AddNumberToObject(bo, "websocket_clients", ws);
		cJSON_AddNumberToObject(bo, "sse_clients", sse);
		cJSON_AddBoolToObject(bo, "authentication",
		                      c->cfg.bridge_auth_file != NULL);
		cJSON_AddItemToObject(o, "bridge", bo);
		cJSON_AddNumberToObject(gauges, "bridge_clients", ws + sse);
		cJSON_AddNumberToObject(counters, "bridge_delivered",
		                        (double)atomic_load(&b->delivered));
		cJSON_AddNumberToObject(counters, "bridge_dropped_clients",
		                        (double)atomic_load(&b->dropped_clients));
		cJSON_AddNumberToObject(counters, "bridge_publishes",
		                        (double)atomic_load(&b->publishes));
		cJSON_AddNumberToObject(counters, "bridge_rejected",
		                        (double)atomic_load(&b->rejected));
		pthread_mutex_lock(&b->lv_lock);
		cJSON_AddNumberToObject(gauges, "bridge_last_values", (double)b->lv.n);
		pthread_mutex_unlock(&b->lv_lock);
	}
	cJSON_AddItemToObject(o, "counters", counters);
	cJSON_AddItemToObject(o, "gauges", gauges);
	if (running)
		cwm_settings_json(&c->cfg, config); /* read-only while running */
	cJSON_AddItemToObject(o, "config", config);
	return o;
}

int mg_mqtt_status(struct mg_mqtt *c, char *buf, size_t len)
{
	if (c == NULL)
		return MG_MQTT_ERR_INVALID;
	cJSON *o = cwm_status_object(c);
	char *text = o != NULL ? cJSON_PrintUnformatted(o) : NULL;
	cJSON_Delete(o);
	if (text == NULL)
		return MG_MQTT_ERR_NOMEM;
	size_t n = strlen(text);
	if (buf != NULL && len > 0) {
		size_t k = n < len - 1 ? n : len - 1;
		memcpy(buf, text, k);
		buf[k] = '\0';
	}
	cJSON_free(text);
	return n > INT_MAX ? INT_MAX : (int)n;
}
