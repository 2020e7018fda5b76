/*
 * Topic names and filters: UTF-8 and MQTT validity, $share/<group>/, named
 * "{name}" levels, and matching a topic against a filter.
 */
#include "internal.h"

/* 1 when cp is a Unicode non-character: U+FDD0-U+FDEF, and the last two
 * code points of every plane (U+xFFFE, U+xFFFF). */
static int cwm_noncharacter(uint32_t cp)
{
	return (cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) == 0xfffe;
}

/* 1 when s[0..n) is well-formed UTF-8 (no overlong forms, surrogates or
 * code points past U+10FFFF) without U+0000; mqtt: also without the
 * control characters U+0001-U+001F / U+007F-U+009F and the non-characters,
 * over which MQTT (3.1.1 1.5.3, 5.0 1.5.4) lets a receiver close the
 * connection (mosquitto does: a client that sent one would be dropped on
 * every resend). */
static int cwm_utf8_scan(const char *s, size_t n, int mqtt)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + n;
	while (p < end) {
		unsigned c = *p++;
		uint32_t cp;
		int more;
		if (c < 0x80) {
			if (c == 0 || (mqtt && (c < 0x20 || c == 0x7f)))
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
		    (mqtt && ((cp >= 0x80 && cp <= 0x9f) || cwm_noncharacter(cp))))
			return 0;
	}
	return 1;
}

/* What MQTT allows in topics and other strings. */
static int cwm_utf8_valid(const char *s, size_t n)
{
	return cwm_utf8_scan(s, n, 1);
}

/* What JSON text can carry: any code point but U+0000. */
static int cwm_utf8_text(const char *s, size_t n)
{
	return cwm_utf8_scan(s, n, 0);
}

/* The number of levels of s[0..n) (its '/' plus one). */
static size_t cwm_levels(const char *s, size_t n)
{
	size_t k = 1;
	for (const char *p = s, *end = s + n;
	     (p = memchr(p, '/', (size_t)(end - p))) != NULL; p++)
		k++;
	return k;
}

/* MAX_TOPIC_LEVELS of client c for the topic or filter f (its $share/
 * <group>/ not counted): 0, or MG_MQTT_ERR_TOPIC / _FILTER (filter set)
 * when it has more levels. Brokers drop the client over such a packet
 * (mosquitto at more than 200), and would again on every resend. */
static int cwm_levels_check(const struct mg_mqtt *c, const char *f, int filter)
{
	size_t n = strlen(f);
	int sl = filter ? cwm_share_len(f, n) : 0;
	if (sl > 0) {
		f += sl;
		n -= (size_t)sl;
	}
	if (cwm_levels(f, n) <= (size_t)c->cfg.max_topic_levels)
		return 0;
	return filter ? MG_MQTT_ERR_FILTER : MG_MQTT_ERR_TOPIC;
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
 * MG_MQTT_ERR_FILTER if it starts like a shared filter but is malformed. */
static int cwm_share_len(const char *f, size_t n)
{
	static const char pfx[] = "$share/";
	const size_t pl = sizeof(pfx) - 1;
	if (n < pl || memcmp(f, pfx, pl) != 0)
		return 0;
	const char *g = f + pl, *slash = memchr(g, '/', n - pl);
	if (slash == NULL || slash == g)
		return MG_MQTT_ERR_FILTER;
	for (const char *p = g; p < slash; p++)
		if (*p == '+' || *p == '#')
			return MG_MQTT_ERR_FILTER;
	if ((size_t)(slash + 1 - f) >= n)
		return MG_MQTT_ERR_FILTER; /* "$share/g/" with no filter */
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

/* Copies filter into *out with every "{name}" level written '+', and
 * (when params is not NULL) the names and their levels into *params (NULL
 * when there are none; one free()able block). Returns 0, MG_MQTT_ERR_PARAM
 * (a '{' or '}' in a level that is not exactly "{name}", a name that is
 * empty or not letters, digits and '_', a name used twice),
 * MG_MQTT_ERR_FILTER (not a filter once written with '+'), _NOMEM. */
/* Pass 1 of cwm_filter_normalize: copies the filter f (after $share/<g>/)
 * to o with every "{name}" level written '+', counting the names and
 * their bytes. Returns 0 or MG_MQTT_ERR_PARAM. */
static int cwm_params_rewrite(const char *f, char *o, int *count,
                              size_t *names_len)
{
	for (const char *lv = f;;) {
		size_t l = strcspn(lv, "/");
		if (memchr(lv, '{', l) != NULL || memchr(lv, '}', l) != NULL) {
			int whole = l >= 3 && lv[0] == '{' && lv[l - 1] == '}';
			for (size_t i = 1; whole && i + 1 < l; i++)
				whole = isalnum((unsigned char)lv[i]) || lv[i] == '_';
			if (!whole)
				return MG_MQTT_ERR_PARAM;
			for (const char *prev = f; prev < lv;) { /* the name earlier? */
				size_t pl = strcspn(prev, "/");
				if (pl == l && memcmp(prev, lv, l) == 0)
					return MG_MQTT_ERR_PARAM;
				prev += pl + 1;
			}
			*o++ = '+';
			(*count)++;
			*names_len += l - 1;
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
	return 0;
}

/* Pass 2: the names of f's count "{name}" levels and their levels, in one
 * block; NULL when out of memory. */
static struct mg_mqtt_params *cwm_params_collect(const char *f, int count,
                                                 size_t names_len)
{
	struct mg_mqtt_params *pp =
	    malloc(sizeof(*pp) + (size_t)count * sizeof(pp->p[0]) + names_len);
	if (pp == NULL)
		return NULL;
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
	return pp;
}

static int cwm_filter_normalize(const char *filter, char **out,
                                struct mg_mqtt_params **params)
{
	size_t n = strlen(filter), names_len = 0;
	int count = 0, rc, share = cwm_share_len(filter, n);
	char *plain = malloc(n + 1);
	const char *f = filter + (share > 0 ? share : 0);
	*out = NULL;
	if (params != NULL)
		*params = NULL;
	if (plain == NULL)
		return MG_MQTT_ERR_NOMEM;
	memcpy(plain, filter, (size_t)(f - filter));
	if ((rc = cwm_params_rewrite(f, plain + (f - filter), &count,
	                             &names_len)) == 0 &&
	    cwm_filter_check(plain, strlen(plain)) != 0)
		rc = MG_MQTT_ERR_FILTER;
	if (rc == 0 && params != NULL && count > 0 &&
	    (*params = cwm_params_collect(f, count, names_len)) == NULL)
		rc = MG_MQTT_ERR_NOMEM;
	if (rc != 0) {
		free(plain);
		return rc;
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

