/*
 * The <PREFIX>_<KEY> options of one client: the table of keys, parsing one
 * value, reading a whole option list, and the settings as JSON (secrets
 * masked).
 */
#include "internal.h"

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
static const struct cwm_enum cwm_cert_reqs[] = {
    {"required", CWM_CERT_REQUIRED},     {"optional", CWM_CERT_OPTIONAL},
    {"none", CWM_CERT_NONE},             {"cert_required", CWM_CERT_REQUIRED},
    {"cert_optional", CWM_CERT_OPTIONAL}, {"cert_none", CWM_CERT_NONE},
    {NULL, 0}};
static const struct cwm_enum cwm_log_levels[] = {
    {"error", MG_MQTT_LOG_ERROR},     {"warning", MG_MQTT_LOG_WARNING},
    {"info", MG_MQTT_LOG_INFO},       {"debug", MG_MQTT_LOG_DEBUG},
    {"warn", MG_MQTT_LOG_WARNING},    {NULL, 0}};
static const char cwm_bool_hint[] = "true or false";

/* The four options of a message the client publishes by itself (the last
 * will, the birth message): <name>_TOPIC, _MESSAGE, _QOS and _RETAIN, into
 * the settings' <f>_topic, _message, _qos and _retain. */
#define CWM_MESSAGE_KEYS(name, f)                                              \
	{name "_TOPIC", K_TOPIC, CWM_S(f##_topic), 0, 0, NULL, NULL,               \
	 "a topic name (no wildcards)"},                                           \
	{name "_MESSAGE", K_STR, CWM_S(f##_message), 0, 0, NULL, NULL, NULL},      \
	{name "_QOS", K_INT, CWM_S(f##_qos), 0, 2, "0", NULL,                      \
	 "a QoS (0, 1 or 2)"},                                                     \
	{name "_RETAIN", K_BOOL, CWM_S(f##_retain), 0, 0, "false", NULL,           \
	 cwm_bool_hint}

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
    {"PROTOCOL_FALLBACK", K_BOOL, CWM_S(protocol_fallback), 0, 0, "false",
     NULL, cwm_bool_hint},
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
    /* LAST_WILL_TOPIC, _MESSAGE, _QOS, _RETAIN */
    CWM_MESSAGE_KEYS("LAST_WILL", will),
    /* BIRTH_TOPIC, _MESSAGE, _QOS, _RETAIN */
    CWM_MESSAGE_KEYS("BIRTH", birth),
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
    {"PERSISTENCE_FSYNC", K_BOOL, CWM_S(persistence_fsync), 0, 0, "false",
     NULL, cwm_bool_hint},
    {"QUEUE_SIZE", K_INT, CWM_S(queue_size), 1, 10000000, "10000", NULL,
     "a number of messages (1-10000000)"},
    {"QUEUE_BYTES", K_INT, CWM_S(queue_bytes), 65536, 2147483647, "8388608",
     NULL, "a number of bytes (65536-2147483647)"},
    {"MAX_PACKET_SIZE", K_INT, CWM_S(max_packet_size), 0, 268435455, "0",
     NULL, "a number of bytes (0: none; up to 268435455)"},
    {"MAX_TOPIC_LEVELS", K_INT, CWM_S(max_topic_levels), 1, 65535, "200", NULL,
     "a number of topic levels (1-65535)"},
    {"LOG_LEVEL", K_ENUM, CWM_S(log_level), 0, 0, "info", cwm_log_levels,
     "one of error, warning, info, debug"},
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
    {"BRIDGE_CLIENT_QUEUE_BYTES", K_INT, CWM_S(bridge_client_queue_bytes), 1,
     2147483647, "16777216", NULL, "a number of bytes (1-2147483647)"},
    {"BRIDGE_RETAINED_WINDOW", K_INT, CWM_S(bridge_retained_window), 1,
     3600000, "10000", NULL, "a number of milliseconds (1-3600000)"},
    {"BRIDGE_LAST_VALUES", K_INT, CWM_S(bridge_last_values), 0, 10000000,
     "1000", NULL, "a number of topics (0-10000000)"},
    {"BRIDGE_REQUEST_TIMEOUT_MAX", K_INT, CWM_S(bridge_request_timeout_max), 1,
     3600, "30", NULL, "a number of seconds (1-3600)"},
    {"BRIDGE_MAX_JSON_DEPTH", K_INT, CWM_S(bridge_max_json_depth), 1,
     CWM_JSON_DEPTH_LIMIT, "32", NULL, "a nesting depth (1-128)"},
    {"BRIDGE_NONCE_LIFETIME", K_INT, CWM_S(bridge_nonce_lifetime), 1, 86400,
     "300", NULL, "a number of seconds (1-86400)"},
    {"BRIDGE_ALLOWED_ORIGINS", K_STR, CWM_S(bridge_allowed_origins), 0, 0,
     NULL, NULL, NULL},
    {"BRIDGE_ALLOWED_HOSTS", K_STR, CWM_S(bridge_allowed_hosts), 0, 0, NULL,
     NULL, NULL},
    {"BRIDGE_LAST_VALUES_BYTES", K_INT, CWM_S(bridge_last_values_bytes), 0,
     2147483647, "16777216", NULL, "a number of bytes (0-2147483647)"},
    {"BRIDGE_MAX_CLIENTS", K_INT, CWM_S(bridge_max_clients), 0, 1000000, "0",
     NULL, "a number of streams (0: half of CivetWeb's num_threads)"},
    {"BRIDGE_MAX_FILTERS", K_INT, CWM_S(bridge_max_filters), 1, 1000000, "100",
     NULL, "a number of filters (1-1000000)"},
};
#undef CWM_MESSAGE_KEYS
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
	return MG_MQTT_ERR_INVALID;
}

static int cwm_parse_long(const char *v, long min, long max, long *out)
{
	char *end;
	if (*v == '\0' || !(isdigit((unsigned char)*v) || *v == '-'))
		return MG_MQTT_ERR_INVALID;
	errno = 0;
	long x = strtol(v, &end, 10);
	if (errno != 0 || *end != '\0' || x < min || x > max)
		return MG_MQTT_ERR_INVALID;
	*out = x;
	return 0;
}

/* 1 when k's value is a string (the field is a char *). */
static int cwm_key_is_string(const struct cwm_key *k)
{
	return k->type == K_STR || k->type == K_SECRET || k->type == K_PATH ||
	       k->type == K_TOPIC;
}

/* A string value: copied ("" means unset), trimmed unless it is free text,
 * a topic where one is asked for, UTF-8 unless it is a file name. */
static int cwm_set_string(struct cwm_settings *s, const char *prefix,
                          const struct cwm_key *k, const char *v, char *err,
                          size_t errlen)
{
	char **sp = (char **)(void *)((char *)s + k->off), q[72];
	char *copy = k->type == K_STR || k->type == K_SECRET ? cwm_strdup(v)
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
			cwm_fmt(err, errlen, "%s_%s: the value is not valid UTF-8", prefix,
			        k->name);
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

/* A trimmed value t of a key that is not a string into field; 0 or
 * MG_MQTT_ERR_CONFIG. */
static int cwm_set_value(const struct cwm_key *k, const char *t, char *field)
{
	long x;
	char *end;
	switch (k->type) {
	case K_BOOL:
		return cwm_parse_bool(t, (int *)(void *)field) == 0
		           ? 0
		           : MG_MQTT_ERR_CONFIG;
	case K_INT:
		if (cwm_parse_long(t, k->min, k->max, &x) != 0)
			return MG_MQTT_ERR_CONFIG;
		*(int *)(void *)field = (int)x;
		return 0;
	case K_NUM: {
		errno = 0;
		double d = strtod(t, &end);
		if (t[0] == '\0' || *end != '\0' || errno != 0 || !(d >= 0) ||
		    d > 1e9 || strspn(t, "0123456789.") != strlen(t))
			return MG_MQTT_ERR_CONFIG;
		*(double *)(void *)field = d;
		return 0;
	}
	case K_ENUM:
		for (const struct cwm_enum *e = k->en; e->name != NULL; e++)
			if (strcasecmp(e->name, t) == 0) {
				*(int *)(void *)field = e->value;
				return 0;
			}
		return MG_MQTT_ERR_CONFIG;
	default:
		return MG_MQTT_ERR_CONFIG;
	}
}

/* Parses value v for key k into s. On error writes the sentence to err. */
static int cwm_set_key(struct cwm_settings *s, const char *prefix,
                       const struct cwm_key *k, const char *v, char *err,
                       size_t errlen)
{
	char q[72], *t;
	int rc;
	if (cwm_key_is_string(k))
		return cwm_set_string(s, prefix, k, v, err, errlen);
	if ((t = cwm_trimdup(v)) == NULL)
		return MG_MQTT_ERR_NOMEM;
	if ((rc = cwm_set_value(k, t, (char *)s + k->off)) != 0)
		cwm_fmt(err, errlen, "%s_%s: '%s' is not %s", prefix, k->name,
		        cwm_quote(t, q), k->hint);
	free(t);
	return rc;
}


static void cwm_settings_free(struct cwm_settings *s)
{
	for (size_t i = 0; i < CWM_NKEYS; i++) {
		const struct cwm_key *k = &cwm_keys[i];
		if (cwm_key_is_string(k)) {
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

/* The length of the longest key name ends in, after a '_' with something
 * before it ("MQTT2_BROKER_URL" -> 10); 0 when it ends in no key. */
static size_t cwm_key_suffix_len(const char *name)
{
	size_t nl = strlen(name), best = 0;
	for (size_t i = 0; i < CWM_NKEYS; i++) {
		size_t kl = strlen(cwm_keys[i].name);
		if (nl > kl + 1 && name[nl - kl - 1] == '_' && kl > best &&
		    strcasecmp(name + nl - kl, cwm_keys[i].name) == 0)
			best = kl;
	}
	return best;
}

/* The error for a name under the prefix that is no key; a misspelt secret
 * key must not echo the secret. */
static int cwm_unknown_option(const char *name, const char *key,
                              const char *value, char *err, size_t errlen)
{
	static const char *const secretish[] = {"PAS",  "PW",   "SECRET", "TOKEN",
	                                        "KEY",  "CRED", "AUTH"};
	char q[72], qv[72];
	int hide = 0;
	for (size_t j = 0; j < sizeof(secretish) / sizeof(*secretish); j++)
		hide |= strcasestr(key, secretish[j]) != NULL;
	cwm_fmt(err, errlen,
	        "%s: unknown option (value '%s'); see the README's configuration "
	        "reference",
	        cwm_quote(name, q), hide ? "***" : cwm_quote(value, qv));
	return MG_MQTT_ERR_CONFIG;
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
		if (k == NULL && cwm_key_suffix_len(key) > 0)
			continue; /* another prefix's */
		if (k == NULL)
			return cwm_unknown_option(name, key, value, err, errlen);
		if (!MG_MQTT_ENABLE_BRIDGE && strncmp(k->name, "BRIDGE_", 7) == 0) {
			cwm_fmt(err, errlen,
			        "%s_%s: the bridge was not compiled in (this build has "
			        "MG_MQTT_ENABLE_BRIDGE=0)",
			        prefix, k->name);
			return MG_MQTT_ERR_CONFIG;
		}
		if ((rc = cwm_set_key(s, prefix, k, value, err, errlen)) != 0)
			return rc;
		s->set |= (uint64_t)1 << (k - cwm_keys);
	}
	return cwm_settings_finish(s, prefix, err, errlen);
}

/* The first BRIDGE_* key other than BRIDGE_PATH that was given an
 * option, or NULL. */
static const char *cwm_bridge_key_given(const struct cwm_settings *s)
{
	for (size_t i = 0; i < CWM_NKEYS; i++)
		if ((s->set >> i & 1) && strncmp(cwm_keys[i].name, "BRIDGE_", 7) == 0 &&
		    cwm_keys[i].off != CWM_S(bridge_path))
			return cwm_keys[i].name;
	return NULL;
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
		const char *str = cwm_key_is_string(k)
		                      ? *(char *const *)(const void *)field
		                      : NULL;
		int iv = cwm_key_is_string(k) || k->type == K_NUM
		             ? 0
		             : *(const int *)(const void *)field;
		char name[64];
		size_t j;
		for (j = 0; k->name[j] != '\0' && j + 1 < sizeof(name); j++)
			name[j] = (char)tolower((unsigned char)k->name[j]);
		name[j] = '\0';
		if (k->type == K_SECRET)
			cwm_json_str_or_null(o, name, str != NULL ? "***" : NULL);
		else if (cwm_key_is_string(k))
			cwm_json_str_or_null(o, name, str);
		else if (k->type == K_BOOL)
			cJSON_AddBoolToObject(o, name, iv);
		else if (k->type == K_INT && k->off == CWM_S(broker_port) && iv == 0)
			cJSON_AddNullToObject(o, name); /* the scheme's default */
		else if (k->type == K_INT)
			cJSON_AddNumberToObject(o, name, iv);
		else if (k->type == K_NUM)
			cJSON_AddNumberToObject(o, name,
			                        *(const double *)(const void *)field);
		for (const struct cwm_enum *e = k->en;
		     k->type == K_ENUM && e->name != NULL; e++)
			if (e->value == iv) {
				cJSON_AddStringToObject(o, name, e->name);
				break;
			}
	}
	if (s->password_file != NULL)
		cJSON_ReplaceItemInObject(o, "password", cJSON_CreateString("***"));
}
