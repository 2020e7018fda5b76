/*
 * HTTP digest authentication (RFC 7616, MD5, qop=auth) over every bridge
 * route, checked before anything reaches MQTT.
 */
#include "internal.h"

#if MG_MQTT_ENABLE_BRIDGE

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

/* -- digest authentication (RFC 7616, MD5, qop=auth) ---------------------------- */

/* The value of parameter name in a Digest header, unquoted, into out.
 * The header is read as the list of name=value pairs it is, so a name
 * inside another parameter's quoted value is never taken for a parameter.
 * MG_MQTT_ERR_INVALID: not there, malformed, or longer than out. */
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
			return MG_MQTT_ERR_INVALID;
		const char *key = p;
		while (*p != '\0' && *p != '=' && *p != ' ' && *p != '\t' &&
		       *p != ',')
			p++;
		size_t kl = (size_t)(p - key);
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p != '=')
			return MG_MQTT_ERR_INVALID;
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
					return MG_MQTT_ERR_INVALID;
				if (match)
					out[n++] = *p;
			}
			if (*p != '"')
				return MG_MQTT_ERR_INVALID;
			p++;
		} else {
			for (; *p != '\0' && *p != ',' && *p != ' ' && *p != '\t'; p++) {
				if (match && n + 1 >= len)
					return MG_MQTT_ERR_INVALID;
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

/* HA1 of user in realm from BRIDGE_AUTH_FILE (lines
 * "user:realm:md5(user:realm:password)", as htdigest writes them) into
 * ha1. Returns 0, MG_MQTT_ERR_NOT_FOUND or _IO. */
static int cwm_digest_ha1(struct cwm_bridge *b, const char *user,
                          const char *realm, char ha1[33])
{
	FILE *f = fopen(b->c->cfg.bridge_auth_file, "r");
	char line[1024];
	int rc = MG_MQTT_ERR_NOT_FOUND;
	if (f == NULL) {
		cwm_log(b->c, MG_MQTT_LOG_ERROR,
		        "bridge: cannot read BRIDGE_AUTH_FILE: %s", strerror(errno));
		return MG_MQTT_ERR_IO;
	}
	while (rc != 0 && fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, "\r\n")] = '\0';
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (c2 == NULL)
			continue;
		*c1 = *c2 = '\0';
		if (strcmp(line, user) == 0 && strcmp(c1 + 1, realm) == 0 &&
		    strlen(c2 + 1) == 32) {
			memcpy(ha1, c2 + 1, 33);
			rc = 0;
		}
	}
	fclose(f);
	explicit_bzero(line, sizeof(line));
	return rc;
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
	if (cwm_digest_ha1(b, user, realm, ha1) != 0)
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

#endif /* MG_MQTT_ENABLE_BRIDGE */
