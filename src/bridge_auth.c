/*
 * HTTP digest authentication (RFC 7616, MD5, qop=auth) over every bridge
 * route, checked before anything reaches MQTT.
 */
#include "internal.h"

#if MG_MQTT_ENABLE_BRIDGE

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

/* CivetWeb exports mg_check_digest_access_authentication(), but it
 * checks a nonce only for being recent enough for its own clock (no table
 * of nonces it handed out, so a captured header can be replayed for as
 * long as the nonce lives), never looks at nc, and compares only the
 * path of the digest's uri. The bridge keeps its own check, on
 * CivetWeb's mg_md5: nonces it handed out (signed: md5 of a secret, the
 * time and a sequence number), each answered one with the highest nc seen
 * (a bounded table, CWM_NONCES: an older answered nonce gives its place to
 * a newer one, and its browser is told stale=true), BRIDGE_NONCE_LIFETIME, and a uri that must be the
 * request's whole target (path and query string). For the same reason
 * the 401 is written here, not by mg_send_digest_access_authentication_
 * request(): its nonce would not be in the table. */

/* The MAC of nonce (t, seq): md5(secret:t:seq) as hex. */
static void cwm_nonce_mac(const struct cwm_bridge *b, long long t,
                          unsigned long long seq, char mac[33])
{
	char sec[33], ts[24], ss[24];
	for (int i = 0; i < 16; i++)
		snprintf(sec + 2 * i, 3, "%02x", b->secret[i]);
	snprintf(ts, sizeof(ts), "%llx", t);
	snprintf(ss, sizeof(ss), "%llx", seq);
	mg_md5(mac, sec, ":", ts, ":", ss, (const char *)NULL);
	explicit_bzero(sec, sizeof(sec));
}

/* nonce = <time hex>-<seq hex>-<md5(secret:time:seq)>. */
static void cwm_nonce_format(const struct cwm_bridge *b, long long t,
                             unsigned long long seq, char out[80])
{
	char mac[33];
	cwm_nonce_mac(b, t, seq, mac);
	snprintf(out, 80, "%llx-%llx-%s", t, seq, mac);
}

/* A new nonce. Nothing is kept of it: a nonce enters the table only once
 * a request answers it (cwm_nonce_use), so a flood of requests without
 * credentials, each handed a nonce, cannot push out a nonce a browser is
 * still answering (it did: ~6,400 challenges/s evicted the table in
 * ~160 ms, and a browser 200 ms away never logged in). */
static void cwm_nonce_new(struct cwm_bridge *b, char out[80])
{
	long long now = (long long)time(NULL);
	pthread_mutex_lock(&b->nonce_lock);
	uint64_t seq = ++b->nonce_seq;
	pthread_mutex_unlock(&b->nonce_lock);
	cwm_nonce_format(b, now, seq, out);
}

/* Splits a nonce into its time and sequence; 0 when it is one this bridge
 * made (its MAC holds), else MG_MQTT_ERR_INVALID. */
static int cwm_nonce_parse(const struct cwm_bridge *b, const char *nonce,
                           long long *t, unsigned long long *seq)
{
	char want[80], *end;
	if (strspn(nonce, "0123456789abcdef-") != strlen(nonce))
		return MG_MQTT_ERR_INVALID;
	*t = strtoll(nonce, &end, 16);
	if (*end != '-')
		return MG_MQTT_ERR_INVALID;
	*seq = strtoull(end + 1, &end, 16);
	if (*end != '-')
		return MG_MQTT_ERR_INVALID;
	cwm_nonce_format(b, *t, *seq, want);
	unsigned diff = strlen(want) != strlen(nonce);
	for (size_t i = 0; !diff && want[i] != '\0'; i++)
		diff |= (unsigned)(want[i] ^ nonce[i]);
	return diff ? MG_MQTT_ERR_INVALID : 0;
}

/* The nonce's use number nc against the table of answered nonces (slot
 * seq % CWM_NONCES, whose seq only grows): 1 accepted (and recorded), 0
 * replayed (nc not above the last one), -1 stale (too old, or its slot
 * went to a later answered nonce: it can never come back). A nonce whose
 * slot holds an earlier one is answered for the first time: it takes the
 * slot. Only requests with valid credentials get here, so only they can
 * evict. */
static int cwm_nonce_use(struct cwm_bridge *b, long long t,
                         unsigned long long seq, unsigned long long nc)
{
	long long now = (long long)time(NULL);
	int rc;
	pthread_mutex_lock(&b->nonce_lock);
	struct cwm_nonce *n = &b->nonces[seq % CWM_NONCES];
	if (now - t > b->c->cfg.bridge_nonce_lifetime || now < t || seq == 0 ||
	    seq > b->nonce_seq || n->seq > seq)
		rc = -1;
	else if (n->seq == seq && nc <= n->nc)
		rc = 0;
	else {
		n->seq = seq;
		n->issued = t;
		n->nc = nc;
		rc = 1;
	}
	pthread_mutex_unlock(&b->nonce_lock);
	return rc;
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

/* 1 when the digest's uri is the request's whole target: its path, as
 * CivetWeb decoded it, and its query string byte for byte. */
static int cwm_digest_uri_ok(const struct mg_request_info *ri, char *uri)
{
	char path[2048];
	char *q = strchr(uri, '?');
	if (q != NULL)
		*q++ = '\0';
	int n = mg_url_decode(uri, (int)strlen(uri), path, (int)sizeof(path), 0);
	if (q != NULL)
		q[-1] = '?';
	if (n < 0 || ri->request_uri == NULL || strcmp(ri->request_uri, path) != 0)
		return 0;
	if (ri->query_string == NULL)
		return q == NULL;
	return q != NULL && strcmp(q, ri->query_string) == 0;
}

/* 1: authenticated; 0: not (stale set when only the nonce was too old). */
static int cwm_digest_check(struct cwm_bridge *b, struct mg_connection *conn,
                            int *stale)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	const char *h = mg_get_header(conn, "Authorization");
	char user[256], realm[256], nonce[80], uri[2048], response[64], qop[16],
	    nc[16], cnonce[256], ha1[33] = "", ha2[33], expect[33], *end;
	long long t;
	unsigned long long seq;
	*stale = 0;
	if (h == NULL || strncasecmp(h, "Digest ", 7) != 0)
		return 0;
	h += 7;
	/* qop=auth is required: without it there is no nc to replay-check. */
	if (cwm_digest_param(h, "username", user, sizeof(user)) ||
	    cwm_digest_param(h, "realm", realm, sizeof(realm)) ||
	    cwm_digest_param(h, "nonce", nonce, sizeof(nonce)) ||
	    cwm_digest_param(h, "uri", uri, sizeof(uri)) ||
	    cwm_digest_param(h, "response", response, sizeof(response)) ||
	    cwm_digest_param(h, "qop", qop, sizeof(qop)) ||
	    strcmp(qop, "auth") != 0 ||
	    cwm_digest_param(h, "nc", nc, sizeof(nc)) ||
	    cwm_digest_param(h, "cnonce", cnonce, sizeof(cnonce)))
		return 0;
	unsigned long long ncv = strtoull(nc, &end, 16);
	if (nc[0] == '\0' || *end != '\0' || strlen(nc) > 8 ||
	    strcmp(realm, b->realm) != 0 || !cwm_digest_uri_ok(ri, uri) ||
	    cwm_nonce_parse(b, nonce, &t, &seq) != 0 ||
	    cwm_digest_ha1(b, user, realm, ha1) != 0)
		return 0;
	mg_md5(ha2, ri->request_method, ":", uri, (const char *)NULL);
	mg_md5(expect, ha1, ":", nonce, ":", nc, ":", cnonce, ":", qop, ":", ha2,
	       (const char *)NULL);
	explicit_bzero(ha1, sizeof(ha1));
	unsigned diff = strlen(response) != 32;
	for (int i = 0; i < 32 && response[i] != '\0'; i++)
		diff |= (unsigned)(tolower((unsigned char)response[i]) ^ expect[i]);
	if (diff != 0)
		return 0;
	int use = cwm_nonce_use(b, t, seq, ncv);
	*stale = use < 0;
	return use > 0;
}

/* With BRIDGE_AUTH_FILE, every route of the bridge (its own paths only:
 * what CivetWeb's prefix match hands us beyond them is CivetWeb's, with
 * its own authorization) calls this first. 1: go on; 0: the 401 (or 503)
 * was sent. CivetWeb's auth handler is not used: it would replace
 * CivetWeb's own checks (put_delete_auth_file, global_auth_file,
 * .htpasswd) for every path that prefix match gives it. */
static int cwm_bridge_authorized(struct cwm_bridge *b,
                                 struct mg_connection *conn)
{
	int stale;
	if (b->c->cfg.bridge_auth_file == NULL || cwm_digest_check(b, conn, &stale))
		return 1;
	char nonce[80], hdr[320];
	cwm_nonce_new(b, nonce);
	snprintf(hdr, sizeof(hdr),
	         "Digest realm=\"%s\", qop=\"auth\", nonce=\"%s\", "
	         "algorithm=MD5%s",
	         b->realm, nonce, stale ? ", stale=true" : "");
	cwm_reply_text(conn, 401, "{\"error\":\"authentication required\"}",
	               "WWW-Authenticate", hdr);
	return 0;
}

#endif /* MG_MQTT_ENABLE_BRIDGE */
