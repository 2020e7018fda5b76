/*
 * Small tools every part uses: strings, clocks, quoting for error messages,
 * a string-keyed hash map, a pointer vector, growable byte and text buffers,
 * and mg_mqtt_strerror().
 */
#include "internal.h"

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

/* Frees an array of n strings and the array. */
/* Frees each of the n pointers of v (NULL ones too, as free() does);
 * CWM_FREE_ALL(a, b, ...) is the call with a list. */
static void cwm_freev(void *const *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
}

static void cwm_strv_free(char **v, int n)
{
	if (v == NULL)
		return;
	for (int i = 0; i < n; i++)
		free(v[i]);
	free(v);
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
		return MG_MQTT_ERR_NOMEM;
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

/* Inserts or replaces; returns 0 or MG_MQTT_ERR_NOMEM (map unchanged).
 * *stored (if not NULL) receives the map's own copy of the key, which lives
 * as long as the entry. */
static int cwm_map_put_key(struct cwm_map *m, const char *k, size_t klen,
                           void *v, const char **stored)
{
	uint32_t h = cwm_hash(k, klen);
	if (m->nb == 0 || m->n >= m->nb) {
		if (cwm_map_grow(m) != 0)
			return MG_MQTT_ERR_NOMEM;
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
		return MG_MQTT_ERR_NOMEM;
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

static int cwm_vec_push(struct cwm_vec *v, void *p)
{
	if (v->n == v->cap) {
		size_t cap = v->cap == 0 ? 16 : v->cap * 2;
		void **nv = realloc(v->v, cap * sizeof(void *));
		if (nv == NULL)
			return MG_MQTT_ERR_NOMEM;
		v->v = nv;
		v->cap = cap;
	}
	v->v[v->n++] = p;
	return 0;
}

/* -- growable buffers ------------------------------------------------------ */

/* Grows b to hold cap bytes (no less than it has). Returns 0, or -1 out
 * of memory (now or before: b->oom). */
static int cwm_wgrow(struct cwm_wbuf *b, size_t cap)
{
	if (b->oom)
		return -1;
	if (cap <= b->cap)
		return 0;
	unsigned char *p = realloc(b->p, cap);
	if (p == NULL) {
		b->oom = 1;
		return -1;
	}
	b->p = p;
	b->cap = cap;
	return 0;
}

/* Makes room for n more bytes (doubling). Returns 0 or -1 (b->oom). */
static int cwm_wreserve(struct cwm_wbuf *b, size_t n)
{
	if (!b->oom && b->n + n <= b->cap)
		return 0;
	return cwm_wgrow(b, (b->cap + n) * 2);
}

/* Frees b's bytes and empties it (ready for use again). */
static void cwm_wreset(struct cwm_wbuf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

static void cwm_wput(struct cwm_wbuf *b, const void *data, size_t n)
{
	if (n == 0 || cwm_wreserve(b, n) != 0)
		return;
	memcpy(b->p + b->n, data, n);
	b->n += n;
}

#if MG_MQTT_ENABLE_BRIDGE
/* Appends formatted text (kept NUL-terminated past b->n). */
static void cwm_wprintf(struct cwm_wbuf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int k = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (k < 0) {
		b->oom = 1;
		return;
	}
	if (cwm_wreserve(b, (size_t)k + 1) != 0)
		return;
	va_start(ap, fmt);
	vsnprintf((char *)b->p + b->n, b->cap - b->n, fmt, ap);
	va_end(ap);
	b->n += (size_t)k;
}
#endif

static void cwm_wput32(struct cwm_wbuf *b, uint32_t v)
{
	cwm_wput(b, &v, sizeof(v));
}

static void cwm_wputs(struct cwm_wbuf *b, const void *s, size_t n)
{
	cwm_wput32(b, (uint32_t)n);
	cwm_wput(b, s, n);
}

