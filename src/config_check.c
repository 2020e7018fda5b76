/*
 * What the options mean together, once each is read: BROKER_URL into paho
 * URIs, SUBSCRIBE, PASSWORD_FILE, file checks, BRIDGE_* and cross-key rules.
 */
#include "internal.h"

/* The scheme of one BROKER_URL entry: what paho calls it, TLS or not,
 * WebSocket or not; *host is set after "://". Without a scheme, TLS_ENABLED
 * and TRANSPORT decide. */
struct cwm_scheme {
	const char *in, *out;
	int tls, ws;
};

static int cwm_parse_scheme(const struct cwm_settings *s, const char *prefix,
                            const char *u, struct cwm_scheme *sc,
                            const char **host, char *err, size_t errlen)
{
	static const struct cwm_scheme schemes[] = {
	    {"mqtt", "tcp", 0, 0}, {"tcp", "tcp", 0, 0}, {"mqtts", "ssl", 1, 0},
	    {"ssl", "ssl", 1, 0},  {"ws", "ws", 0, 1},   {"wss", "wss", 1, 1}};
	const char *sep = strstr(u, "://");
	char q[72];
	size_t i, n = sep != NULL ? (size_t)(sep - u) : 0;

	if (sep == NULL) {
		int tls = s->tls_enabled, ws = s->transport == 1;
		*sc = (struct cwm_scheme){NULL, ws ? (tls ? "wss" : "ws")
		                                   : (tls ? "ssl" : "tcp"),
		                          tls, ws};
		*host = u;
		return 0;
	}
	for (i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++)
		if (strlen(schemes[i].in) == n && strncasecmp(u, schemes[i].in, n) == 0)
			break;
	if (i == sizeof(schemes) / sizeof(schemes[0]))
		cwm_fmt(err, errlen,
		        "%s_BROKER_URL: '%s' has an unknown scheme (use mqtt://, "
		        "mqtts://, ws://, wss://, tcp:// or ssl://)",
		        prefix, cwm_quote(u, q));
	else if (s->tls_enabled && !schemes[i].tls)
		cwm_fmt(err, errlen,
		        "%s_BROKER_URL: '%s' is not a TLS URL but %s_TLS_ENABLED is "
		        "true",
		        prefix, cwm_quote(u, q), prefix);
	else if (s->transport == 1 && !schemes[i].ws)
		cwm_fmt(err, errlen,
		        "%s_BROKER_URL: '%s' is not a WebSocket URL but %s_TRANSPORT "
		        "is websockets",
		        prefix, cwm_quote(u, q), prefix);
	else {
		*sc = schemes[i];
		*host = sep + 3;
		return 0;
	}
	return MG_MQTT_ERR_CONFIG;
}

/* host (a name, an IPv4 address, or [IPv6]), then :port, then a /path
 * (WebSocket only): *hend ends the host, *rest is the path. Returns 0 or
 * MG_MQTT_ERR_CONFIG when it is none of these. */
static int cwm_parse_hostport(const char *h, int ws, long *port,
                              const char **hend, const char **rest)
{
	const char *e = *h == '[' ? strchr(h, ']') : h + strcspn(h, ":/"), *r;
	if (e == NULL)
		return MG_MQTT_ERR_CONFIG;
	if (*h == '[')
		e++;
	if (e == h)
		return MG_MQTT_ERR_CONFIG;
	for (const char *p = h; p < e; p++)
		if (!(isalnum((unsigned char)*p) || strchr("-._[]:", *p) != NULL))
			return MG_MQTT_ERR_CONFIG;
	r = e;
	if (*r == ':') {
		char pbuf[8];
		size_t pn = strcspn(r + 1, "/");
		if (pn == 0 || pn >= sizeof(pbuf))
			return MG_MQTT_ERR_CONFIG;
		memcpy(pbuf, r + 1, pn);
		pbuf[pn] = '\0';
		if (cwm_parse_long(pbuf, 1, 65535, port) != 0)
			return MG_MQTT_ERR_CONFIG;
		r += 1 + pn;
	}
	if (*r != '\0' && (*r != '/' || !ws))
		return MG_MQTT_ERR_CONFIG;
	for (const char *p = r; *p; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
			return MG_MQTT_ERR_CONFIG;
	*hend = e;
	*rest = r;
	return 0;
}

/* Turns one BROKER_URL entry into a paho URI "scheme://host:port[/path]". */
static int cwm_parse_url(const struct cwm_settings *s, const char *prefix,
                         const char *u, char **out, char *err, size_t errlen)
{
	struct cwm_scheme sc;
	const char *h, *hend, *rest, *sep = strstr(u, "://");
	char q[72];
	int rc;

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
	if ((rc = cwm_parse_scheme(s, prefix, u, &sc, &h, err, errlen)) != 0)
		return rc;
	long port = s->broker_port != 0 ? s->broker_port : (sc.tls ? 8883 : 1883);
	if (cwm_parse_hostport(h, sc.ws, &port, &hend, &rest) != 0) {
		cwm_fmt(err, errlen,
		        "%s_BROKER_URL: '%s' is not a host name or URL "
		        "(host, host:port or scheme://host[:port])",
		        prefix, cwm_quote(u, q));
		return MG_MQTT_ERR_CONFIG;
	}
	size_t need = strlen(sc.out) + 3 + (size_t)(hend - h) + 7 + strlen(rest);
	if ((*out = malloc(need + 1)) == NULL)
		return MG_MQTT_ERR_NOMEM;
	snprintf(*out, need + 1, "%s://%.*s:%ld%s", sc.out, (int)(hend - h), h,
	         port, rest);
	return 0;
}

/* Splits a comma-separated list into trimmed, non-empty items. Out of
 * memory, frees what it made: *out NULL, *n 0. */
static int cwm_split_list(const char *v, char ***out, int *n)
{
	*out = NULL;
	*n = 0;
	const char *p = v;
	while (*p != '\0') {
		const char *e = strchr(p, ',');
		size_t len = e != NULL ? (size_t)(e - p) : strlen(p);
		char *item = cwm_strndup(p, len), *t = NULL, **nv = NULL;
		if (item != NULL)
			t = cwm_trimdup(item);
		free(item);
		if (t != NULL && t[0] == '\0') {
			free(t);
		} else if (t == NULL || (nv = realloc(*out, sizeof(char *) *
		                                                (size_t)(*n + 1))) ==
		                            NULL) {
			free(t);
			while (*n > 0)
				free((*out)[--*n]);
			free(*out);
			*out = NULL;
			return MG_MQTT_ERR_NOMEM;
		} else {
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

/* "<prefix>_<key>: needs <prefix>_<needed>" */
static int cwm_needs(char *err, size_t errlen, const char *prefix,
                     const char *key, const char *needed)
{
	cwm_fmt(err, errlen, "%s_%s: needs %s_%s", prefix, key, prefix, needed);
	return MG_MQTT_ERR_CONFIG;
}

/* A comma-separated list of topic filters into *out ("{name}" levels
 * written '+'). */
static int cwm_filter_list(const char *v, char ***out, int *n,
                           const char *prefix, const char *key, char *err,
                           size_t errlen)
{
	char q[72];
	int rc = cwm_split_list(v, out, n);
	for (int i = 0; rc == 0 && i < *n; i++) {
		char **f = &(*out)[i];
		if ((rc = cwm_filter_normalize_owned(f)) != 0 &&
		    rc != MG_MQTT_ERR_NOMEM) {
			cwm_fmt(err, errlen,
			        "%s_%s: '%s' is not a topic filter (comma-separated "
			        "filters; a level may be \"{name}\")",
			        prefix, key, cwm_quote(*f, q));
			rc = MG_MQTT_ERR_CONFIG;
		}
	}
	return rc;
}

/* BRIDGE_*: a path, two allow lists of filters, an auth file. */
static int cwm_bridge_settings(struct cwm_settings *s, const char *prefix,
                               char *err, size_t errlen)
{
	char q[72];
	const char *p = s->bridge_path, *other = cwm_bridge_key_given(s);
	int rc;

	if (p == NULL) /* any other BRIDGE_* key without the path is a mistake */
		return other != NULL ? cwm_needs(err, errlen, prefix, other,
		                                 "BRIDGE_PATH")
		                     : 0;
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
	/* An allow list not given denies everything. */
	if (s->bridge_publish_allow != NULL &&
	    (rc = cwm_filter_list(s->bridge_publish_allow, &s->bpub, &s->nbpub,
	                          prefix, "BRIDGE_PUBLISH_ALLOW", err, errlen)) != 0)
		return rc;
	if (s->bridge_subscribe_allow != NULL &&
	    (rc = cwm_filter_list(s->bridge_subscribe_allow, &s->bsub, &s->nbsub,
	                          prefix, "BRIDGE_SUBSCRIBE_ALLOW", err,
	                          errlen)) != 0)
		return rc;
	if (s->bridge_auth_file != NULL)
		return cwm_readable(prefix, "BRIDGE_AUTH_FILE", s->bridge_auth_file,
		                    err, errlen);
	return 0;
}

/* PASSWORD or PASSWORD_FILE into s->secret; a password needs a user. */
static int cwm_check_credentials(struct cwm_settings *s, const char *prefix,
                                 char *err, size_t errlen)
{
	int rc;
	if (s->password != NULL && s->password_file != NULL) {
		cwm_fmt(err, errlen,
		        "%s_PASSWORD_FILE: cannot be used together with %s_PASSWORD",
		        prefix, prefix);
		return MG_MQTT_ERR_CONFIG;
	}
	if (s->password_file == NULL)
		s->secret = s->password;
	else if ((rc = cwm_read_secret(prefix, s->password_file, &s->secret, err,
	                               errlen)) != 0)
		return rc;
	if (s->secret != NULL && s->username == NULL) {
		cwm_fmt(err, errlen, "%s_PASSWORD: a password needs %s_USERNAME",
		        prefix, prefix);
		return MG_MQTT_ERR_CONFIG;
	}
	return 0;
}

/* Values that only make sense with others, or within limits of others. */
static int cwm_check_cross_keys(const struct cwm_settings *s,
                                const char *prefix, char *err, size_t errlen)
{
	char q[72];
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
	if (s->will_message != NULL && s->will_topic == NULL)
		return cwm_needs(err, errlen, prefix, "LAST_WILL_MESSAGE",
		                 "LAST_WILL_TOPIC");
	if (s->birth_message != NULL && s->birth_topic == NULL)
		return cwm_needs(err, errlen, prefix, "BIRTH_MESSAGE", "BIRTH_TOPIC");
	if (s->tls_keyfile != NULL && s->tls_certfile == NULL)
		return cwm_needs(err, errlen, prefix, "TLS_KEYFILE", "TLS_CERTFILE");
	if (s->shared_group != NULL &&
	    (strpbrk(s->shared_group, "/+#") != NULL ||
	     !cwm_utf8_valid(s->shared_group, strlen(s->shared_group)))) {
		cwm_fmt(err, errlen,
		        "%s_SHARED_GROUP: '%s' is not a group name (no '/', '+' or "
		        "'#')",
		        prefix, cwm_quote(s->shared_group, q));
		return MG_MQTT_ERR_CONFIG;
	}
	if (s->persistence_dir != NULL && s->client_id == NULL) {
		cwm_fmt(err, errlen,
		        "%s_PERSISTENCE_DIR: needs a fixed %s_CLIENT_ID (stored "
		        "messages are found again by client id)",
		        prefix, prefix);
		return MG_MQTT_ERR_CONFIG;
	}
	return 0;
}

/* The files and directories the options name exist and can be used. */
static int cwm_check_files(const struct cwm_settings *s, const char *prefix,
                           char *err, size_t errlen)
{
	struct stat st;
	char qp[320];
	int rc = 0;
	if (s->persistence_dir != NULL &&
	    (stat(s->persistence_dir, &st) != 0 || !S_ISDIR(st.st_mode) ||
	     access(s->persistence_dir, W_OK | X_OK) != 0)) {
		cwm_fmt(err, errlen,
		        "%s_PERSISTENCE_DIR: '%s' is not a writable directory", prefix,
		        cwm_quote_path(s->persistence_dir, qp));
		return MG_MQTT_ERR_IO;
	}
	if (s->tls_ca_certs != NULL)
		rc = cwm_readable(prefix, "TLS_CA_CERTS", s->tls_ca_certs, err, errlen);
	if (rc == 0 && s->tls_certfile != NULL)
		rc = cwm_readable(prefix, "TLS_CERTFILE", s->tls_certfile, err, errlen);
	if (rc == 0 && s->tls_keyfile != NULL)
		rc = cwm_readable(prefix, "TLS_KEYFILE", s->tls_keyfile, err, errlen);
	return rc;
}

/* BROKER_URL, a fail-over list, into s->uris. */
static int cwm_parse_brokers(struct cwm_settings *s, const char *prefix,
                             char *err, size_t errlen)
{
	char q[72], **items;
	int n, rc;
	if (s->broker_url == NULL) {
		cwm_fmt(err, errlen, "%s_BROKER_URL: '' names no broker", prefix);
		return MG_MQTT_ERR_CONFIG;
	}
	if ((rc = cwm_split_list(s->broker_url, &items, &n)) != 0)
		return rc;
	if (n == 0) {
		cwm_fmt(err, errlen, "%s_BROKER_URL: '%s' names no broker", prefix,
		        cwm_quote(s->broker_url, q));
		rc = MG_MQTT_ERR_CONFIG;
	} else if ((s->uris = calloc((size_t)n, sizeof(char *))) == NULL) {
		rc = MG_MQTT_ERR_NOMEM;
	}
	for (int i = 0; rc == 0 && i < n; i++) {
		if ((rc = cwm_parse_url(s, prefix, items[i], &s->uris[i], err,
		                        errlen)) != 0)
			break;
		s->nuris++;
		if (strncmp(s->uris[i], "ssl:", 4) == 0 ||
		    strncmp(s->uris[i], "wss:", 4) == 0)
			s->use_tls = 1;
	}
	cwm_strv_free(items, n);
	return rc;
}

/* One SUBSCRIBE item, "filter[:qos]", in place: the QoS into *qos, the
 * filter normalized. A QoS is one digit after the last ':' ("time/12:30"
 * is a filter); "a:3" is a QoS out of range, not a filter. */
static int cwm_parse_sub_item(char **item, int *qos, const char *prefix,
                              char *err, size_t errlen)
{
	char q[72], *f = *item, *colon = strrchr(f, ':'), *t = NULL;
	int rc;
	if (colon != NULL && (t = cwm_trimdup(colon + 1)) != NULL &&
	    strlen(t) == 1 && isdigit((unsigned char)t[0])) {
		long qv;
		if (cwm_parse_long(t, 0, 2, &qv) != 0) {
			free(t);
			cwm_fmt(err, errlen,
			        "%s_SUBSCRIBE: '%s' asks for a QoS other than 0, 1 or 2",
			        prefix, cwm_quote(f, q));
			return MG_MQTT_ERR_CONFIG;
		}
		*qos = (int)qv;
		*colon = '\0';
		for (size_t l = strlen(f); l > 0 && isspace((unsigned char)f[l - 1]);)
			f[--l] = '\0';
	}
	free(t);
	if ((rc = cwm_filter_normalize_owned(item)) != 0 &&
	    rc != MG_MQTT_ERR_NOMEM) {
		cwm_fmt(err, errlen,
		        "%s_SUBSCRIBE: '%s' is not a topic filter (filter[:qos], "
		        "comma-separated; a level may be \"{name}\")",
		        prefix, cwm_quote(*item, q));
		rc = MG_MQTT_ERR_CONFIG;
	}
	return rc;
}

/* SUBSCRIBE: "filter[:qos], ..." into s->sub_filters and s->sub_qos. */
static int cwm_parse_subscribe(struct cwm_settings *s, const char *prefix,
                               char *err, size_t errlen)
{
	int rc;
	if (s->subscribe == NULL)
		return 0;
	if ((rc = cwm_split_list(s->subscribe, &s->sub_filters, &s->nsubs)) != 0)
		return rc;
	if ((s->sub_qos = calloc((size_t)s->nsubs + 1, sizeof(int))) == NULL)
		return MG_MQTT_ERR_NOMEM;
	for (int i = 0; rc == 0 && i < s->nsubs; i++)
		rc = cwm_parse_sub_item(&s->sub_filters[i], &s->sub_qos[i], prefix, err,
		                        errlen);
	return rc;
}

/* MAX_TOPIC_LEVELS against the topics and filters the options name
 * themselves: one over it would be sent on every connect and the broker
 * would close the connection every time. */
static int cwm_check_levels(const struct cwm_settings *s, const char *prefix,
                            char *err, size_t errlen)
{
	const char *key = NULL, *t = NULL;
	char q[72];
	for (int i = 0; i < s->nsubs && key == NULL; i++) {
		const char *f = s->sub_filters[i];
		size_t n = strlen(f), sl = (size_t)cwm_share_len(f, n);
		if (cwm_levels(f + sl, n - sl) > (size_t)s->max_topic_levels)
			key = "SUBSCRIBE", t = f;
	}
	const char *topics[][2] = {{"LAST_WILL_TOPIC", s->will_topic},
	                           {"BIRTH_TOPIC", s->birth_topic}};
	for (size_t i = 0; i < 2 && key == NULL; i++)
		if (topics[i][1] != NULL &&
		    cwm_levels(topics[i][1], strlen(topics[i][1])) >
		        (size_t)s->max_topic_levels)
			key = topics[i][0], t = topics[i][1];
	if (key == NULL)
		return 0;
	cwm_fmt(err, errlen,
	        "%s_%s: '%s' has more levels than %s_MAX_TOPIC_LEVELS (%d)",
	        prefix, key, cwm_quote(t, q), prefix, s->max_topic_levels);
	return MG_MQTT_ERR_CONFIG;
}

/* Cross-key checks and derived values, after every key is read. */
static int cwm_settings_finish(struct cwm_settings *s, const char *prefix,
                               char *err, size_t errlen)
{
	int rc;
	if ((rc = cwm_check_credentials(s, prefix, err, errlen)) != 0 ||
	    (rc = cwm_check_cross_keys(s, prefix, err, errlen)) != 0 ||
	    (rc = cwm_check_files(s, prefix, err, errlen)) != 0 ||
	    (rc = cwm_parse_brokers(s, prefix, err, errlen)) != 0 ||
	    (rc = cwm_parse_subscribe(s, prefix, err, errlen)) != 0 ||
	    (rc = cwm_check_levels(s, prefix, err, errlen)) != 0)
		return rc;
	return cwm_bridge_settings(s, prefix, err, errlen);
}
