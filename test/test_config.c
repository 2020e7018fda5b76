/*
 * Configuration without a broker: every <PREFIX>_<KEY> with its default,
 * good and bad values, the cross-key checks, BROKER_URL and SUBSCRIBE
 * parsing, the settings as JSON, civetweb.conf files and the option split,
 * and the parts of the life cycle that need no connection (create, handler
 * registration, a failed start).
 */
#include "civetweb_mqtt.c" /* the build's generated file (-I) */

#include "harness.h"
#include "util.h"

#include <stdlib.h>
#include <unistd.h>


/* Reads options for prefix MQTT. err is always a string afterwards. */
static int settings(struct cwm_settings *s, const char **opts, char *err,
                    size_t len)
{
	err[0] = '\0';
	return cwm_settings_read(s, "MQTT", opts, err, len);
}

/* Reads MQTT_<key> = value plus extra pairs, frees what was read. */
static int read_one(const char *key, const char *value,
                    const char *const *extra, char *err, size_t len)
{
	char name[64];
	const char *opts[16];
	size_t n = 0;
	struct cwm_settings s;
	snprintf(name, sizeof(name), "MQTT_%s", key);
	opts[n++] = name;
	opts[n++] = value;
	for (size_t i = 0; extra != NULL && extra[i] != NULL; i++)
		opts[n++] = extra[i];
	opts[n] = NULL;
	int rc = settings(&s, opts, err, len);
	cwm_settings_free(&s);
	return rc;
}

/* The value of name in a name, value, ..., NULL list (exact spelling). */
static const char *lookup(const char **list, const char *name)
{
	for (size_t i = 0; list != NULL && list[i] != NULL; i += 2)
		if (strcmp(list[i], name) == 0)
			return list[i + 1];
	return NULL;
}

static size_t npairs(const char **list)
{
	size_t n = 0;
	while (list != NULL && list[2 * n] != NULL)
		n++;
	return n;
}

/* ---- every key: defaults ----------------------------------------------- */

/* The keys this file tests; a key added to cwm_keys must be added here. */
static const char *const tested_keys[] = {
    "CLIENT_ID",        "BROKER_URL",           "BROKER_PORT",
    "USERNAME",         "PASSWORD",             "PASSWORD_FILE",
    "KEEPALIVE",        "CONNECTION_TIMEOUT",   "CLEAN_SESSION",
    "CONNECT_ASYNC",    "REFRESH_TIME",         "PROTOCOL_VERSION",
    "PROTOCOL_FALLBACK",
    "TRANSPORT",        "TLS_ENABLED",          "TLS_CA_CERTS",
    "TLS_CERTFILE",     "TLS_KEYFILE",          "TLS_KEYFILE_PASSWORD",
    "TLS_CERT_REQS",    "TLS_VERSION",          "TLS_CIPHERS",
    "TLS_INSECURE",     "LAST_WILL_TOPIC",      "LAST_WILL_MESSAGE",
    "LAST_WILL_QOS",    "LAST_WILL_RETAIN",     "BIRTH_TOPIC",
    "BIRTH_MESSAGE",    "BIRTH_QOS",            "BIRTH_RETAIN",
    "SHARED_GROUP",     "SUBSCRIBE",            "RECONNECT_MIN",
    "RECONNECT_MAX",    "MAX_INFLIGHT",         "MAX_BUFFERED",
    "PERSISTENCE_DIR",  "PERSISTENCE_FSYNC",    "QUEUE_SIZE",
    "QUEUE_BYTES",      "MAX_PACKET_SIZE",  "LOG_LEVEL",
    "BRIDGE_PATH",      "BRIDGE_PUBLISH_ALLOW", "BRIDGE_SUBSCRIBE_ALLOW",
    "BRIDGE_AUTH_FILE", "BRIDGE_MAX_BODY",      "BRIDGE_CLIENT_QUEUE",
    "BRIDGE_LAST_VALUES", "BRIDGE_REQUEST_TIMEOUT_MAX",
    "BRIDGE_MAX_JSON_DEPTH", "BRIDGE_NONCE_LIFETIME", "BRIDGE_ALLOWED_ORIGINS",
    "BRIDGE_LAST_VALUES_BYTES", "BRIDGE_MAX_CLIENTS", "BRIDGE_MAX_FILTERS",
    "MAX_TOPIC_LEVELS", "BRIDGE_CLIENT_QUEUE_BYTES", "BRIDGE_RETAINED_WINDOW",
    "BRIDGE_ALLOWED_HOSTS"};
#define NTESTED (sizeof(tested_keys) / sizeof(tested_keys[0]))

TEST(every_key_in_the_table_is_covered_by_these_tests)
{
	ASSERT_EQ(CWM_NKEYS, NTESTED);
	for (size_t i = 0; i < CWM_NKEYS; i++) {
		size_t j = 0;
		while (j < NTESTED && strcmp(tested_keys[j], cwm_keys[i].name) != 0)
			j++;
		if (j == NTESTED)
			th_fail(__FILE__, __LINE__, "key %s has no test",
			        cwm_keys[i].name);
	}
}

TEST(defaults_without_options_are_the_documented_ones)
{
	struct cwm_settings s;
	char err[512];
	ASSERT_EQ(settings(&s, NULL, err, sizeof(err)), 0);
	ASSERT_STREQ(err, "");
	ASSERT(s.client_id == NULL); /* generated at start */
	ASSERT_STREQ(s.broker_url, "localhost");
	ASSERT_EQ(s.broker_port, 0); /* the scheme's default */
	ASSERT(s.username == NULL);
	ASSERT(s.password == NULL);
	ASSERT(s.password_file == NULL);
	ASSERT_EQ(s.keepalive, 60);
	ASSERT_EQ(s.connection_timeout, 5);
	ASSERT_EQ(s.clean_session, 1);
	ASSERT_EQ(s.connect_async, 0);
	ASSERT(s.refresh_time == 1.0);
	ASSERT_EQ(s.protocol, 4);
	ASSERT_EQ(s.transport, 0);
	ASSERT_EQ(s.tls_enabled, 0);
	ASSERT(s.tls_ca_certs == NULL);
	ASSERT(s.tls_certfile == NULL);
	ASSERT(s.tls_keyfile == NULL);
	ASSERT(s.tls_keyfile_password == NULL);
	ASSERT_EQ(s.tls_cert_reqs, CWM_CERT_REQUIRED);
	ASSERT_EQ(s.tls_version, MQTT_SSL_VERSION_TLS_1_2);
	ASSERT(s.tls_ciphers == NULL);
	ASSERT_EQ(s.tls_insecure, 0);
	ASSERT(s.will_topic == NULL);
	ASSERT(s.will_message == NULL);
	ASSERT_EQ(s.will_qos, 0);
	ASSERT_EQ(s.will_retain, 0);
	ASSERT(s.birth_topic == NULL);
	ASSERT(s.birth_message == NULL);
	ASSERT_EQ(s.birth_qos, 0);
	ASSERT_EQ(s.birth_retain, 0);
	ASSERT(s.shared_group == NULL);
	ASSERT(s.subscribe == NULL);
	ASSERT_EQ(s.reconnect_min, 1);
	ASSERT_EQ(s.reconnect_max, 120);
	ASSERT_EQ(s.max_inflight, 20);
	ASSERT_EQ(s.max_buffered, 10000);
	ASSERT(s.persistence_dir == NULL);
	ASSERT_EQ(s.persistence_fsync, 0);
	ASSERT_EQ(s.queue_size, 10000);
	ASSERT_EQ(s.log_level, MG_MQTT_LOG_INFO);
	ASSERT(s.bridge_path == NULL); /* no bridge */
	ASSERT(s.bridge_publish_allow == NULL);
	ASSERT(s.bridge_subscribe_allow == NULL);
	ASSERT(s.bridge_auth_file == NULL);
	ASSERT_EQ(s.bridge_max_body, 65536);
	ASSERT_EQ(s.bridge_client_queue, 1000);
	ASSERT_EQ(s.bridge_last_values, 1000);
	ASSERT_EQ(s.bridge_request_timeout_max, 30);
	ASSERT_EQ(s.max_topic_levels, 200);
	ASSERT_EQ(s.bridge_client_queue_bytes, 16777216);
	ASSERT_EQ(s.bridge_retained_window, 10000);
	ASSERT(s.bridge_allowed_hosts == NULL);
	/* Derived. */
	ASSERT_EQ(s.nuris, 1);
	ASSERT_STREQ(s.uris[0], "tcp://localhost:1883");
	ASSERT_EQ(s.use_tls, 0);
	ASSERT(s.secret == NULL);
	ASSERT_EQ(s.nsubs, 0);
	ASSERT_EQ(s.nbpub, 0); /* deny by default */
	ASSERT_EQ(s.nbsub, 0);
	cwm_settings_free(&s);
}

/* ---- every key: good values -------------------------------------------- */

struct good {
	const char *key, *value;
	const char *extra[5]; /* companions the value needs */
	long i;               /* K_INT, K_BOOL, K_ENUM */
	const char *str;      /* string keys; NULL: unset */
	double num;           /* K_NUM */
};

static const struct good goods[] = {
    {"CLIENT_ID", "dev-1", {NULL}, 0, "dev-1", 0},
    {"CLIENT_ID", "", {NULL}, 0, NULL, 0}, /* empty: generated */
    {"BROKER_URL", "broker.example", {NULL}, 0, "broker.example", 0},
    {"BROKER_PORT", "1884", {NULL}, 1884, NULL, 0},
    {"BROKER_PORT", " 8884\t", {NULL}, 8884, NULL, 0},
    {"BROKER_PORT", "65535", {NULL}, 65535, NULL, 0},
    {"USERNAME", "alice", {NULL}, 0, "alice", 0},
    {"PASSWORD", "pa ss", {"MQTT_USERNAME", "u", NULL}, 0, "pa ss", 0},
    {"KEEPALIVE", "0", {NULL}, 0, NULL, 0},
    {"KEEPALIVE", " 30 ", {NULL}, 30, NULL, 0},
    {"KEEPALIVE", "65535", {NULL}, 65535, NULL, 0},
    {"CONNECTION_TIMEOUT", "1", {NULL}, 1, NULL, 0},
    {"CONNECTION_TIMEOUT", "3600", {NULL}, 3600, NULL, 0},
    {"CLEAN_SESSION", "false", {NULL}, 0, NULL, 0},
    {"CLEAN_SESSION", "No", {NULL}, 0, NULL, 0},
    {"CLEAN_SESSION", "OFF", {NULL}, 0, NULL, 0},
    {"CLEAN_SESSION", "0", {NULL}, 0, NULL, 0},
    {"PROTOCOL_FALLBACK", "true", {NULL}, 1, NULL, 0},
    {"MAX_PACKET_SIZE", "1000", {NULL}, 1000, NULL, 0},
    {"CONNECT_ASYNC", "TRUE", {NULL}, 1, NULL, 0},
    {"CONNECT_ASYNC", "Yes", {NULL}, 1, NULL, 0},
    {"CONNECT_ASYNC", " on ", {NULL}, 1, NULL, 0},
    {"CONNECT_ASYNC", "1", {NULL}, 1, NULL, 0},
    {"REFRESH_TIME", "2.5", {NULL}, 0, NULL, 2.5},
    {"REFRESH_TIME", " 0 ", {NULL}, 0, NULL, 0},
    {"REFRESH_TIME", "3", {NULL}, 0, NULL, 3},
    {"PROTOCOL_VERSION", "3.1", {NULL}, 3, NULL, 0},
    {"PROTOCOL_VERSION", "3.1.1", {NULL}, 4, NULL, 0},
    {"PROTOCOL_VERSION", "5", {NULL}, 5, NULL, 0},
    {"PROTOCOL_VERSION", "5.0", {NULL}, 5, NULL, 0},
    {"PROTOCOL_VERSION", "MQTTv311", {NULL}, 4, NULL, 0},
    {"PROTOCOL_VERSION", " mqttv31 ", {NULL}, 3, NULL, 0},
    {"PROTOCOL_VERSION", "MQTTV5", {NULL}, 5, NULL, 0},
    {"TRANSPORT", "WebSockets", {NULL}, 1, NULL, 0},
    {"TRANSPORT", "TCP", {NULL}, 0, NULL, 0},
    {"TLS_ENABLED", "true", {NULL}, 1, NULL, 0},
    {"TLS_CA_CERTS", " /dev/null ", {NULL}, 0, "/dev/null", 0},
    {"TLS_CERTFILE", "/dev/null", {NULL}, 0, "/dev/null", 0},
    {"TLS_KEYFILE", "/dev/null", {"MQTT_TLS_CERTFILE", "/dev/null", NULL},
     0, "/dev/null", 0},
    {"TLS_KEYFILE_PASSWORD", "k3y pass", {NULL}, 0, "k3y pass", 0},
    {"TLS_CERT_REQS", "NONE", {NULL}, CWM_CERT_NONE, NULL, 0},
    {"TLS_CERT_REQS", "cert_optional", {NULL}, CWM_CERT_OPTIONAL, NULL, 0},
    {"TLS_CERT_REQS", "Required", {NULL}, CWM_CERT_REQUIRED, NULL, 0},
    {"TLS_VERSION", "TLSv1.1", {NULL}, MQTT_SSL_VERSION_TLS_1_1, NULL, 0},
    {"TLS_VERSION", "tlsv1", {NULL}, MQTT_SSL_VERSION_TLS_1_0, NULL, 0},
    {"TLS_VERSION", "tlsv1.0", {NULL}, MQTT_SSL_VERSION_TLS_1_0, NULL, 0},
    {"TLS_VERSION", "AUTO", {NULL}, MQTT_SSL_VERSION_DEFAULT, NULL, 0},
    {"TLS_CIPHERS", "HIGH:!aNULL", {NULL}, 0, "HIGH:!aNULL", 0},
    {"TLS_INSECURE", "yes", {NULL}, 1, NULL, 0},
    {"LAST_WILL_TOPIC", " dev/1/status ", {NULL}, 0, "dev/1/status", 0},
    {"LAST_WILL_TOPIC", "$SYS/x", {NULL}, 0, "$SYS/x", 0},
    {"LAST_WILL_MESSAGE", "gone for now",
     {"MQTT_LAST_WILL_TOPIC", "t", NULL}, 0, "gone for now", 0},
    {"LAST_WILL_QOS", "2", {NULL}, 2, NULL, 0},
    {"LAST_WILL_QOS", " 1 ", {NULL}, 1, NULL, 0},
    {"LAST_WILL_RETAIN", "True", {NULL}, 1, NULL, 0},
    {"BIRTH_TOPIC", "dev/1/status", {NULL}, 0, "dev/1/status", 0},
    {"BIRTH_MESSAGE", "online", {"MQTT_BIRTH_TOPIC", "t", NULL}, 0,
     "online", 0},
    {"BIRTH_QOS", "1", {NULL}, 1, NULL, 0},
    {"BIRTH_RETAIN", "on", {NULL}, 1, NULL, 0},
    {"SHARED_GROUP", "workers", {NULL}, 0, "workers", 0},
    {"SUBSCRIBE", "a/b:1", {NULL}, 0, "a/b:1", 0},
    {"RECONNECT_MIN", "5", {NULL}, 5, NULL, 0},
    {"RECONNECT_MIN", "120", {NULL}, 120, NULL, 0},
    {"RECONNECT_MIN", "3600", {"MQTT_RECONNECT_MAX", "3600", NULL}, 3600,
     NULL, 0},
    {"RECONNECT_MAX", "1", {NULL}, 1, NULL, 0},
    {"RECONNECT_MAX", "86400", {NULL}, 86400, NULL, 0},
    {"MAX_INFLIGHT", "1", {NULL}, 1, NULL, 0},
    {"MAX_INFLIGHT", "65535", {NULL}, 65535, NULL, 0},
    {"MAX_BUFFERED", "0", {NULL}, 0, NULL, 0},
    {"MAX_BUFFERED", "10000000", {NULL}, 10000000, NULL, 0},
    {"PERSISTENCE_DIR", " /tmp ", {"MQTT_CLIENT_ID", "p1", NULL}, 0, "/tmp",
     0},
    {"PERSISTENCE_FSYNC", "true", {NULL}, 1, NULL, 0},
    {"PERSISTENCE_FSYNC", "off", {NULL}, 0, NULL, 0},
    {"QUEUE_SIZE", "1", {NULL}, 1, NULL, 0},
    {"QUEUE_SIZE", "10000000", {NULL}, 10000000, NULL, 0},
    {"QUEUE_BYTES", "65536", {NULL}, 65536, NULL, 0},
    {"QUEUE_BYTES", "2147483647", {NULL}, 2147483647, NULL, 0},
    {"LOG_LEVEL", "error", {NULL}, MG_MQTT_LOG_ERROR, NULL, 0},
    {"LOG_LEVEL", "Warning", {NULL}, MG_MQTT_LOG_WARNING, NULL, 0},
    {"LOG_LEVEL", "warn", {NULL}, MG_MQTT_LOG_WARNING, NULL, 0},
    {"LOG_LEVEL", " info ", {NULL}, MG_MQTT_LOG_INFO, NULL, 0},
    {"LOG_LEVEL", "DEBUG", {NULL}, MG_MQTT_LOG_DEBUG, NULL, 0},
    {"BRIDGE_PATH", "/mqtt", {NULL}, 0, "/mqtt", 0},
    {"BRIDGE_PATH", "/api/v1.2/mq-tt_x~y", {NULL}, 0, "/api/v1.2/mq-tt_x~y",
     0},
    {"BRIDGE_PATH", "", {NULL}, 0, NULL, 0}, /* empty: no bridge */
    {"BRIDGE_PUBLISH_ALLOW", "demo/#", {"MQTT_BRIDGE_PATH", "/mqtt", NULL}, 0,
     "demo/#", 0},
    {"BRIDGE_PUBLISH_ALLOW", "a/#, b/+/c", {"MQTT_BRIDGE_PATH", "/m", NULL}, 0,
     "a/#, b/+/c", 0},
    {"BRIDGE_SUBSCRIBE_ALLOW", "#", {"MQTT_BRIDGE_PATH", "/mqtt", NULL}, 0,
     "#", 0},
    {"BRIDGE_SUBSCRIBE_ALLOW", "$SYS/broker/#, +/status",
     {"MQTT_BRIDGE_PATH", "/mqtt", NULL}, 0, "$SYS/broker/#, +/status", 0},
    {"BRIDGE_AUTH_FILE", " /dev/null ", {"MQTT_BRIDGE_PATH", "/mqtt", NULL}, 0,
     "/dev/null", 0},
    {"BRIDGE_MAX_BODY", "1", {"MQTT_BRIDGE_PATH", "/mqtt", NULL}, 1, NULL, 0},
    {"BRIDGE_MAX_BODY", " 268435455 ", {"MQTT_BRIDGE_PATH", "/mqtt", NULL},
     268435455, NULL, 0},
    {"BRIDGE_CLIENT_QUEUE", "1", {"MQTT_BRIDGE_PATH", "/mqtt", NULL}, 1, NULL,
     0},
    {"BRIDGE_CLIENT_QUEUE", "1000000", {"MQTT_BRIDGE_PATH", "/mqtt", NULL},
     1000000, NULL, 0},
    {"BRIDGE_LAST_VALUES", "0", {"MQTT_BRIDGE_PATH", "/mqtt", NULL}, 0, NULL,
     0},
    {"BRIDGE_LAST_VALUES", "10000000", {"MQTT_BRIDGE_PATH", "/mqtt", NULL},
     10000000, NULL, 0},
    {"BRIDGE_REQUEST_TIMEOUT_MAX", "1", {"MQTT_BRIDGE_PATH", "/mqtt", NULL}, 1,
     NULL, 0},
    {"BRIDGE_REQUEST_TIMEOUT_MAX", "3600", {"MQTT_BRIDGE_PATH", "/mqtt", NULL},
     3600, NULL, 0},
    {"BRIDGE_MAX_JSON_DEPTH", "1", {"MQTT_BRIDGE_PATH", "/mqtt", NULL}, 1, NULL,
     0},
    {"BRIDGE_MAX_JSON_DEPTH", "128", {"MQTT_BRIDGE_PATH", "/mqtt", NULL}, 128,
     NULL, 0},
    {"BRIDGE_NONCE_LIFETIME", "1", {"MQTT_BRIDGE_PATH", "/mqtt", NULL}, 1, NULL,
     0},
    {"BRIDGE_NONCE_LIFETIME", "86400", {"MQTT_BRIDGE_PATH", "/mqtt", NULL},
     86400, NULL, 0},
    {"BRIDGE_ALLOWED_ORIGINS", "https://a.example, *",
     {"MQTT_BRIDGE_PATH", "/mqtt", NULL}, 0, "https://a.example, *", 0},
    {"BRIDGE_LAST_VALUES_BYTES", "0", {"MQTT_BRIDGE_PATH", "/mqtt", NULL}, 0,
     NULL, 0},
    {"BRIDGE_LAST_VALUES_BYTES", "2147483647",
     {"MQTT_BRIDGE_PATH", "/mqtt", NULL}, 2147483647, NULL, 0},
    {"BRIDGE_MAX_CLIENTS", "0", {"MQTT_BRIDGE_PATH", "/mqtt", NULL}, 0, NULL,
     0},
    {"BRIDGE_MAX_CLIENTS", "1000000", {"MQTT_BRIDGE_PATH", "/mqtt", NULL},
     1000000, NULL, 0},
    {"BRIDGE_MAX_FILTERS", "1", {"MQTT_BRIDGE_PATH", "/mqtt", NULL}, 1, NULL,
     0},
    {"BRIDGE_MAX_FILTERS", "1000000", {"MQTT_BRIDGE_PATH", "/mqtt", NULL},
     1000000, NULL, 0},
    {"MAX_TOPIC_LEVELS", "1", {NULL}, 1, NULL, 0},
    {"MAX_TOPIC_LEVELS", "65535", {NULL}, 65535, NULL, 0},
    {"BRIDGE_CLIENT_QUEUE_BYTES", "1", {"MQTT_BRIDGE_PATH", "/mqtt", NULL}, 1,
     NULL, 0},
    {"BRIDGE_CLIENT_QUEUE_BYTES", "2147483647",
     {"MQTT_BRIDGE_PATH", "/mqtt", NULL}, 2147483647, NULL, 0},
    {"BRIDGE_RETAINED_WINDOW", "1", {"MQTT_BRIDGE_PATH", "/mqtt", NULL}, 1,
     NULL, 0},
    {"BRIDGE_RETAINED_WINDOW", "3600000", {"MQTT_BRIDGE_PATH", "/mqtt", NULL},
     3600000, NULL, 0},
    {"BRIDGE_ALLOWED_HOSTS", "app.example, *",
     {"MQTT_BRIDGE_PATH", "/mqtt", NULL}, 0, "app.example, *", 0},
};

TEST(every_key_accepts_its_good_values)
{
	for (size_t i = 0; i < sizeof(goods) / sizeof(goods[0]); i++) {
		const struct good *g = &goods[i];
		const struct cwm_key *k = cwm_key_find(g->key, strlen(g->key));
		char name[64], err[512];
		const char *opts[16];
		size_t n = 0;
		struct cwm_settings s;
		ASSERT(k != NULL);
		snprintf(name, sizeof(name), "MQTT_%s", g->key);
		opts[n++] = name;
		opts[n++] = g->value;
		for (size_t j = 0; g->extra[j] != NULL; j++)
			opts[n++] = g->extra[j];
		opts[n] = NULL;
		int rc = settings(&s, opts, err, sizeof(err));
		if (rc != 0)
			th_fail(__FILE__, __LINE__, "%s='%s': %d %s", name, g->value, rc,
			        err);
		const char *field = (const char *)&s + k->off;
		switch (k->type) {
		case K_STR:
		case K_SECRET:
		case K_PATH:
		case K_TOPIC: {
			const char *v = *(char *const *)(const void *)field;
			if (g->str == NULL ? v != NULL
			                   : (v == NULL || strcmp(v, g->str) != 0))
				th_fail(__FILE__, __LINE__, "%s='%s' gave '%s'", name,
				        g->value, v ? v : "(null)");
			break;
		}
		case K_NUM:
			if (*(const double *)(const void *)field != g->num)
				th_fail(__FILE__, __LINE__, "%s='%s' gave %g", name, g->value,
				        *(const double *)(const void *)field);
			break;
		default:
			if (*(const int *)(const void *)field != g->i)
				th_fail(__FILE__, __LINE__, "%s='%s' gave %d, not %ld", name,
				        g->value, *(const int *)(const void *)field, g->i);
			break;
		}
		cwm_settings_free(&s);
	}
}

/* ---- every key: bad values --------------------------------------------- */

struct bad {
	const char *key, *value;
	int rc;
	const char *quoted; /* in the error; NULL for a secret: never shown */
	const char *extra[5];
};

static const struct bad bads[] = {
    {"BROKER_URL", "http://x", MG_MQTT_ERR_CONFIG, "'http://x'", {NULL}},
    {"BROKER_URL", "host:99999", MG_MQTT_ERR_CONFIG, "'host:99999'", {NULL}},
    {"BROKER_URL", "ho st", MG_MQTT_ERR_CONFIG, "'ho st'", {NULL}},
    {"BROKER_URL", ",", MG_MQTT_ERR_CONFIG, "','", {NULL}},
    {"BROKER_URL", " , ", MG_MQTT_ERR_CONFIG, "' , '", {NULL}},
    {"BROKER_PORT", "0", MG_MQTT_ERR_CONFIG, "'0'", {NULL}},
    {"BROKER_PORT", "65536", MG_MQTT_ERR_CONFIG, "'65536'", {NULL}},
    {"BROKER_PORT", "http", MG_MQTT_ERR_CONFIG, "'http'", {NULL}},
    {"BROKER_PORT", "", MG_MQTT_ERR_CONFIG, "''", {NULL}},
    {"BROKER_PORT", "1.5", MG_MQTT_ERR_CONFIG, "'1.5'", {NULL}},
    {"PASSWORD", "s3cr\xff" "et", MG_MQTT_ERR_CONFIG, NULL,
     {"MQTT_USERNAME", "u", NULL}},
    {"KEEPALIVE", "abc", MG_MQTT_ERR_CONFIG, "'abc'", {NULL}},
    {"KEEPALIVE", "-1", MG_MQTT_ERR_CONFIG, "'-1'", {NULL}},
    {"KEEPALIVE", "65536", MG_MQTT_ERR_CONFIG, "'65536'", {NULL}},
    {"KEEPALIVE", "1e3", MG_MQTT_ERR_CONFIG, "'1e3'", {NULL}},
    {"KEEPALIVE", "0x10", MG_MQTT_ERR_CONFIG, "'0x10'", {NULL}},
    {"KEEPALIVE", "3 0", MG_MQTT_ERR_CONFIG, "'3 0'", {NULL}},
    {"KEEPALIVE", "99999999999999999999", MG_MQTT_ERR_CONFIG,
     "'99999999999999999999'", {NULL}},
    {"KEEPALIVE", "  ", MG_MQTT_ERR_CONFIG, "''", {NULL}},
    {"CONNECTION_TIMEOUT", "0", MG_MQTT_ERR_CONFIG, "'0'", {NULL}},
    {"CONNECTION_TIMEOUT", "3601", MG_MQTT_ERR_CONFIG, "'3601'", {NULL}},
    {"CONNECTION_TIMEOUT", "5s", MG_MQTT_ERR_CONFIG, "'5s'", {NULL}},
    {"CLEAN_SESSION", "maybe", MG_MQTT_ERR_CONFIG, "'maybe'", {NULL}},
    {"PROTOCOL_FALLBACK", "maybe", MG_MQTT_ERR_CONFIG, "'maybe'", {NULL}},
    {"MAX_PACKET_SIZE", "-1", MG_MQTT_ERR_CONFIG, "'-1'", {NULL}},
    {"CLEAN_SESSION", "2", MG_MQTT_ERR_CONFIG, "'2'", {NULL}},
    {"CLEAN_SESSION", "", MG_MQTT_ERR_CONFIG, "''", {NULL}},
    {"CONNECT_ASYNC", "nope", MG_MQTT_ERR_CONFIG, "'nope'", {NULL}},
    {"REFRESH_TIME", "-1", MG_MQTT_ERR_CONFIG, "'-1'", {NULL}},
    {"REFRESH_TIME", "abc", MG_MQTT_ERR_CONFIG, "'abc'", {NULL}},
    {"REFRESH_TIME", "nan", MG_MQTT_ERR_CONFIG, "'nan'", {NULL}},
    {"REFRESH_TIME", "inf", MG_MQTT_ERR_CONFIG, "'inf'", {NULL}},
    {"REFRESH_TIME", "1e10", MG_MQTT_ERR_CONFIG, "'1e10'", {NULL}},
    {"REFRESH_TIME", "1,5", MG_MQTT_ERR_CONFIG, "'1,5'", {NULL}},
    {"REFRESH_TIME", "", MG_MQTT_ERR_CONFIG, "''", {NULL}},
    {"PROTOCOL_VERSION", "4", MG_MQTT_ERR_CONFIG, "'4'", {NULL}},
    {"PROTOCOL_VERSION", "3", MG_MQTT_ERR_CONFIG, "'3'", {NULL}},
    {"PROTOCOL_VERSION", "mqtt5", MG_MQTT_ERR_CONFIG, "'mqtt5'", {NULL}},
    {"TRANSPORT", "udp", MG_MQTT_ERR_CONFIG, "'udp'", {NULL}},
    {"LOG_LEVEL", "trace", MG_MQTT_ERR_CONFIG, "'trace'", {NULL}},
    {"LOG_LEVEL", "3", MG_MQTT_ERR_CONFIG, "'3'", {NULL}},
    {"TRANSPORT", "ws", MG_MQTT_ERR_CONFIG, "'ws'", {NULL}},
    {"TLS_ENABLED", "yesno", MG_MQTT_ERR_CONFIG, "'yesno'", {NULL}},
    {"TLS_CA_CERTS", "/nonexistent/ca.crt", MG_MQTT_ERR_IO,
     "'/nonexistent/ca.crt'", {NULL}},
    {"TLS_CERTFILE", "/nonexistent/c.crt", MG_MQTT_ERR_IO,
     "'/nonexistent/c.crt'", {NULL}},
    {"TLS_KEYFILE", "/nonexistent/c.key", MG_MQTT_ERR_IO,
     "'/nonexistent/c.key'", {"MQTT_TLS_CERTFILE", "/dev/null", NULL}},
    {"TLS_KEYFILE_PASSWORD", "k3y\xfe" "word", MG_MQTT_ERR_CONFIG, NULL,
     {NULL}},
    {"TLS_CERT_REQS", "always", MG_MQTT_ERR_CONFIG, "'always'", {NULL}},
    {"TLS_VERSION", "tlsv1.3", MG_MQTT_ERR_CONFIG, "'tlsv1.3'", {NULL}},
    {"TLS_VERSION", "sslv3", MG_MQTT_ERR_CONFIG, "'sslv3'", {NULL}},
    {"TLS_INSECURE", "sometimes", MG_MQTT_ERR_CONFIG, "'sometimes'", {NULL}},
    {"LAST_WILL_TOPIC", "a/+", MG_MQTT_ERR_CONFIG, "'a/+'", {NULL}},
    {"LAST_WILL_TOPIC", "a/#", MG_MQTT_ERR_CONFIG, "'a/#'", {NULL}},
    {"LAST_WILL_TOPIC", "a\x01", MG_MQTT_ERR_CONFIG, "'a?'", {NULL}},
    {"LAST_WILL_QOS", "3", MG_MQTT_ERR_CONFIG, "'3'", {NULL}},
    {"LAST_WILL_QOS", "-1", MG_MQTT_ERR_CONFIG, "'-1'", {NULL}},
    {"LAST_WILL_QOS", "one", MG_MQTT_ERR_CONFIG, "'one'", {NULL}},
    {"LAST_WILL_RETAIN", "perhaps", MG_MQTT_ERR_CONFIG, "'perhaps'", {NULL}},
    {"BIRTH_TOPIC", "+/x", MG_MQTT_ERR_CONFIG, "'+/x'", {NULL}},
    {"BIRTH_TOPIC", "x/#", MG_MQTT_ERR_CONFIG, "'x/#'", {NULL}},
    {"BIRTH_QOS", "3", MG_MQTT_ERR_CONFIG, "'3'", {NULL}},
    {"BIRTH_RETAIN", "2", MG_MQTT_ERR_CONFIG, "'2'", {NULL}},
    {"SHARED_GROUP", "a/b", MG_MQTT_ERR_CONFIG, "'a/b'", {NULL}},
    {"SHARED_GROUP", "g+", MG_MQTT_ERR_CONFIG, "'g+'", {NULL}},
    {"SHARED_GROUP", "g#", MG_MQTT_ERR_CONFIG, "'g#'", {NULL}},
    {"SUBSCRIBE", "a/#/b", MG_MQTT_ERR_CONFIG, "'a/#/b'", {NULL}},
    {"SUBSCRIBE", "ok/#, a+:1", MG_MQTT_ERR_CONFIG, "'a+'", {NULL}},
    {"RECONNECT_MIN", "0", MG_MQTT_ERR_CONFIG, "'0'", {NULL}},
    {"RECONNECT_MIN", "3601", MG_MQTT_ERR_CONFIG, "'3601'", {NULL}},
    {"RECONNECT_MIN", "x", MG_MQTT_ERR_CONFIG, "'x'", {NULL}},
    {"RECONNECT_MAX", "0", MG_MQTT_ERR_CONFIG, "'0'", {NULL}},
    {"RECONNECT_MAX", "86401", MG_MQTT_ERR_CONFIG, "'86401'", {NULL}},
    {"MAX_INFLIGHT", "0", MG_MQTT_ERR_CONFIG, "'0'", {NULL}},
    {"MAX_INFLIGHT", "65536", MG_MQTT_ERR_CONFIG, "'65536'", {NULL}},
    {"MAX_BUFFERED", "-1", MG_MQTT_ERR_CONFIG, "'-1'", {NULL}},
    {"MAX_BUFFERED", "10000001", MG_MQTT_ERR_CONFIG, "'10000001'", {NULL}},
    {"PERSISTENCE_DIR", "/nonexistent/dir", MG_MQTT_ERR_IO,
     "'/nonexistent/dir'", {"MQTT_CLIENT_ID", "p1", NULL}},
    {"PERSISTENCE_DIR", "/dev/null", MG_MQTT_ERR_IO, "'/dev/null'",
     {"MQTT_CLIENT_ID", "p1", NULL}},
    {"PERSISTENCE_FSYNC", "always", MG_MQTT_ERR_CONFIG, "'always'", {NULL}},
    {"QUEUE_SIZE", "0", MG_MQTT_ERR_CONFIG, "'0'", {NULL}},
    {"QUEUE_SIZE", "10000001", MG_MQTT_ERR_CONFIG, "'10000001'", {NULL}},
    {"QUEUE_SIZE", "many", MG_MQTT_ERR_CONFIG, "'many'", {NULL}},
    {"QUEUE_BYTES", "65535", MG_MQTT_ERR_CONFIG, "'65535'", {NULL}},
    {"QUEUE_BYTES", "2147483648", MG_MQTT_ERR_CONFIG, "'2147483648'", {NULL}},
    /* A path CivetWeb would not rewrite: leading '/', no trailing '/',
     * no dot segments, no '//', no blanks or escapes. */
    {"BRIDGE_PATH", "mqtt", MG_MQTT_ERR_CONFIG, "'mqtt'", {NULL}},
    {"BRIDGE_PATH", "/mqtt/", MG_MQTT_ERR_CONFIG, "'/mqtt/'", {NULL}},
    {"BRIDGE_PATH", "/", MG_MQTT_ERR_CONFIG, "'/'", {NULL}},
    {"BRIDGE_PATH", "/a/../mqtt", MG_MQTT_ERR_CONFIG, "'/a/../mqtt'", {NULL}},
    {"BRIDGE_PATH", "/a/./mqtt", MG_MQTT_ERR_CONFIG, "'/a/./mqtt'", {NULL}},
    {"BRIDGE_PATH", "/..", MG_MQTT_ERR_CONFIG, "'/..'", {NULL}},
    {"BRIDGE_PATH", "/a//mqtt", MG_MQTT_ERR_CONFIG, "'/a//mqtt'", {NULL}},
    {"BRIDGE_PATH", "//mqtt", MG_MQTT_ERR_CONFIG, "'//mqtt'", {NULL}},
    {"BRIDGE_PATH", "/my mqtt", MG_MQTT_ERR_CONFIG, "'/my mqtt'", {NULL}},
    {"BRIDGE_PATH", "/a\\b", MG_MQTT_ERR_CONFIG, "'/a\\b'", {NULL}},
    {"BRIDGE_PATH", "/a%2Fb", MG_MQTT_ERR_CONFIG, "'/a%2Fb'", {NULL}},
    {"BRIDGE_PATH", "/a?b", MG_MQTT_ERR_CONFIG, "'/a?b'", {NULL}},
    {"BRIDGE_PATH", "/mqtt#", MG_MQTT_ERR_CONFIG, "'/mqtt#'", {NULL}},
    {"BRIDGE_PATH", "http://h/mqtt", MG_MQTT_ERR_CONFIG, "'http://h/mqtt'",
     {NULL}},
    /* Every filter of an allow list must be a valid filter. */
    {"BRIDGE_PUBLISH_ALLOW", "a/#/b", MG_MQTT_ERR_CONFIG, "'a/#/b'",
     {"MQTT_BRIDGE_PATH", "/mqtt", NULL}},
    {"BRIDGE_PUBLISH_ALLOW", "ok/#, a+", MG_MQTT_ERR_CONFIG, "'a+'",
     {"MQTT_BRIDGE_PATH", "/mqtt", NULL}},
    {"BRIDGE_PUBLISH_ALLOW", "a/b#", MG_MQTT_ERR_CONFIG, "'a/b#'",
     {"MQTT_BRIDGE_PATH", "/mqtt", NULL}},
    {"BRIDGE_SUBSCRIBE_ALLOW", "#/x", MG_MQTT_ERR_CONFIG, "'#/x'",
     {"MQTT_BRIDGE_PATH", "/mqtt", NULL}},
    {"BRIDGE_SUBSCRIBE_ALLOW", "a/#, $share//x", MG_MQTT_ERR_CONFIG,
     "'$share//x'", {"MQTT_BRIDGE_PATH", "/mqtt", NULL}},
    {"BRIDGE_SUBSCRIBE_ALLOW", "x/+y", MG_MQTT_ERR_CONFIG, "'x/+y'",
     {"MQTT_BRIDGE_PATH", "/mqtt", NULL}},
    {"BRIDGE_AUTH_FILE", "/nonexistent/htdigest", MG_MQTT_ERR_IO,
     "'/nonexistent/htdigest'", {"MQTT_BRIDGE_PATH", "/mqtt", NULL}},
    {"BRIDGE_AUTH_FILE", "/tmp", MG_MQTT_ERR_IO, "'/tmp'",
     {"MQTT_BRIDGE_PATH", "/mqtt", NULL}},
    {"BRIDGE_MAX_BODY", "0", MG_MQTT_ERR_CONFIG, "'0'", {NULL}},
    {"BRIDGE_MAX_BODY", "268435456", MG_MQTT_ERR_CONFIG, "'268435456'",
     {NULL}},
    {"BRIDGE_MAX_BODY", "-1", MG_MQTT_ERR_CONFIG, "'-1'", {NULL}},
    {"BRIDGE_MAX_BODY", "64k", MG_MQTT_ERR_CONFIG, "'64k'", {NULL}},
    {"BRIDGE_CLIENT_QUEUE", "0", MG_MQTT_ERR_CONFIG, "'0'", {NULL}},
    {"BRIDGE_CLIENT_QUEUE", "1000001", MG_MQTT_ERR_CONFIG, "'1000001'",
     {NULL}},
    {"BRIDGE_CLIENT_QUEUE", "lots", MG_MQTT_ERR_CONFIG, "'lots'", {NULL}},
    {"BRIDGE_LAST_VALUES", "-1", MG_MQTT_ERR_CONFIG, "'-1'", {NULL}},
    {"BRIDGE_LAST_VALUES", "10000001", MG_MQTT_ERR_CONFIG, "'10000001'",
     {NULL}},
    {"BRIDGE_REQUEST_TIMEOUT_MAX", "0", MG_MQTT_ERR_CONFIG, "'0'", {NULL}},
    {"BRIDGE_REQUEST_TIMEOUT_MAX", "3601", MG_MQTT_ERR_CONFIG, "'3601'",
     {NULL}},
    {"BRIDGE_REQUEST_TIMEOUT_MAX", "2.5", MG_MQTT_ERR_CONFIG, "'2.5'", {NULL}},
    {"BRIDGE_MAX_JSON_DEPTH", "0", MG_MQTT_ERR_CONFIG, "'0'", {NULL}},
    {"BRIDGE_MAX_JSON_DEPTH", "129", MG_MQTT_ERR_CONFIG, "'129'", {NULL}},
    {"BRIDGE_NONCE_LIFETIME", "0", MG_MQTT_ERR_CONFIG, "'0'", {NULL}},
    {"BRIDGE_NONCE_LIFETIME", "86401", MG_MQTT_ERR_CONFIG, "'86401'", {NULL}},
    {"BRIDGE_LAST_VALUES_BYTES", "-1", MG_MQTT_ERR_CONFIG, "'-1'", {NULL}},
    {"BRIDGE_MAX_CLIENTS", "-1", MG_MQTT_ERR_CONFIG, "'-1'", {NULL}},
    {"BRIDGE_MAX_FILTERS", "0", MG_MQTT_ERR_CONFIG, "'0'", {NULL}},
    {"MAX_TOPIC_LEVELS", "0", MG_MQTT_ERR_CONFIG, "'0'", {NULL}},
    {"MAX_TOPIC_LEVELS", "65536", MG_MQTT_ERR_CONFIG, "'65536'", {NULL}},
    /* Topics and filters of the options themselves within it. */
    {"MAX_TOPIC_LEVELS", "2", MG_MQTT_ERR_CONFIG, "'a/b/c'",
     {"MQTT_SUBSCRIBE", "x, $share/g/a/b, a/b/c:1", NULL}},
    {"MAX_TOPIC_LEVELS", "2", MG_MQTT_ERR_CONFIG, "MQTT_LAST_WILL_TOPIC",
     {"MQTT_LAST_WILL_TOPIC", "w/x/y", NULL}},
    {"BRIDGE_CLIENT_QUEUE_BYTES", "0", MG_MQTT_ERR_CONFIG, "'0'", {NULL}},
    {"BRIDGE_RETAINED_WINDOW", "0", MG_MQTT_ERR_CONFIG, "'0'", {NULL}},
    {"BRIDGE_RETAINED_WINDOW", "3600001", MG_MQTT_ERR_CONFIG, "'3600001'",
     {NULL}},
    /* Named levels: as in handler filters, or refused. */
    {"BRIDGE_PUBLISH_ALLOW", "a/{x}/{x}", MG_MQTT_ERR_CONFIG, "'a/{x}/{x}'",
     {"MQTT_BRIDGE_PATH", "/mqtt", NULL}},
    {"BRIDGE_SUBSCRIBE_ALLOW", "a/b{x}", MG_MQTT_ERR_CONFIG, "'a/b{x}'",
     {"MQTT_BRIDGE_PATH", "/mqtt", NULL}},
    {"SUBSCRIBE", "home/{room}/{room}:1", MG_MQTT_ERR_CONFIG,
     "'home/{room}/{room}'", {NULL}},
};

TEST(every_key_rejects_bad_values_naming_key_and_value)
{
	for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
		const struct bad *b = &bads[i];
		char name[64], err[512];
		snprintf(name, sizeof(name), "MQTT_%s", b->key);
		int rc = read_one(b->key, b->value, b->extra, err, sizeof(err));
		if (rc != b->rc)
			th_fail(__FILE__, __LINE__, "%s='%s': rc %d, not %d (%s)", name,
			        b->value, rc, b->rc, err);
		ASSERT_CONTAINS(err, name);
		if (b->quoted != NULL) {
			ASSERT_CONTAINS(err, b->quoted);
		} else {
			/* A secret: not even its first bytes. */
			char head[4];
			memcpy(head, b->value, 3);
			head[3] = '\0';
			ASSERT_NOT_CONTAINS(err, head);
		}
	}
}

/* Bad UTF-8 in a string key (not a secret): named and quoted like any
 * other bad value. */
static const struct bad bad_utf8[] = {
    {"CLIENT_ID", "id\xff", MG_MQTT_ERR_CONFIG, "'id?'", {NULL}},
    {"BROKER_URL", "h\xed\xa0\x80", MG_MQTT_ERR_CONFIG, "'h??" "?'", {NULL}},
    {"USERNAME", "al\xc0\xaf" "ce", MG_MQTT_ERR_CONFIG, "'al??ce'", {NULL}},
    {"TLS_CIPHERS", "AES\xff", MG_MQTT_ERR_CONFIG, "'AES?'", {NULL}},
    {"LAST_WILL_MESSAGE", "bye\xff", MG_MQTT_ERR_CONFIG, "'bye?'",
     {"MQTT_LAST_WILL_TOPIC", "t", NULL}},
    {"BIRTH_MESSAGE", "hi\xff", MG_MQTT_ERR_CONFIG, "'hi?'",
     {"MQTT_BIRTH_TOPIC", "t", NULL}},
    {"SHARED_GROUP", "g\x80", MG_MQTT_ERR_CONFIG, "'g?'", {NULL}},
    {"SUBSCRIBE", "a/\xff", MG_MQTT_ERR_CONFIG, "'a/?'", {NULL}},
};

TEST(invalid_utf8_in_a_string_key_is_refused_naming_key_and_quoted_value)
{
	for (size_t i = 0; i < sizeof(bad_utf8) / sizeof(bad_utf8[0]); i++) {
		const struct bad *b = &bad_utf8[i];
		char name[64], err[512];
		snprintf(name, sizeof(name), "MQTT_%s", b->key);
		ASSERT_EQ(read_one(b->key, b->value, b->extra, err, sizeof(err)),
		          b->rc);
		ASSERT_CONTAINS(err, name);
		ASSERT_CONTAINS(err, b->quoted);
	}
}

TEST(error_sentence_is_the_one_the_manual_shows)
{
	char err[512];
	ASSERT_EQ(read_one("KEEPALIVE", "abc", NULL, err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_STREQ(err, "MQTT_KEEPALIVE: 'abc' is not a number of seconds "
	                  "(0-65535)");
}

TEST(empty_broker_url_is_an_error_naming_the_key)
{
	char err[512];
	/* "" unsets a string key; BROKER_URL then names no broker at all. */
	int rc = read_one("BROKER_URL", "", NULL, err, sizeof(err));
	ASSERT_EQ(rc, MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "MQTT_BROKER_URL");
}

TEST(a_long_bad_value_is_quoted_shortened_and_printable)
{
	char err[512], v[300];
	memset(v, 'x', sizeof(v) - 1);
	v[sizeof(v) - 1] = '\0';
	v[3] = '\n';
	ASSERT_EQ(read_one("TRANSPORT", v, NULL, err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "'xxx?xxxx");
	ASSERT_CONTAINS(err, "...'");
	ASSERT_LT(strlen(err), 200);
	ASSERT(strchr(err, '\n') == NULL);
}

/* ---- secrets ----------------------------------------------------------- */

TEST(secrets_never_appear_in_error_text)
{
	char err[512];
	/* Bad UTF-8 in a secret: the key is named, the value is not. */
	ASSERT_EQ(read_one("PASSWORD", "Hunter2\x80", OPTS("MQTT_USERNAME", "u"),
	                   err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "MQTT_PASSWORD");
	ASSERT_NOT_CONTAINS(err, "Hunter2");
	ASSERT_EQ(read_one("TLS_KEYFILE_PASSWORD", "Hunter2\x80", NULL, err,
	                   sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "MQTT_TLS_KEYFILE_PASSWORD");
	ASSERT_NOT_CONTAINS(err, "Hunter2");
	/* Cross-key errors about a password. */
	ASSERT_EQ(read_one("PASSWORD", "Hunter2", NULL, err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "MQTT_USERNAME");
	ASSERT_NOT_CONTAINS(err, "Hunter2");
	ASSERT_EQ(read_one("PASSWORD", "Hunter2",
	                   OPTS("MQTT_USERNAME", "u", "MQTT_PASSWORD_FILE",
	                        "/dev/null"),
	                   err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_NOT_CONTAINS(err, "Hunter2");
	/* A misspelt password key, any case. */
	const char *keys[] = {"MQTT_PASSWD", "MQTT_PASS", "mqtt_Passwort",
	                      "MQTT_KEY_PASSPHRASE", NULL};
	for (size_t i = 0; keys[i] != NULL; i++) {
		struct cwm_settings s;
		ASSERT_EQ(settings(&s, OPTS(keys[i], "Hunter2"), err, sizeof(err)),
		          MG_MQTT_ERR_CONFIG);
		ASSERT_CONTAINS(err, keys[i]);
		ASSERT_CONTAINS(err, "unknown");
		ASSERT_NOT_CONTAINS(err, "Hunter2");
		cwm_settings_free(&s);
	}
}

/* ---- names: case, prefixes, unknown keys ------------------------------- */

TEST(key_names_and_prefix_match_without_regard_to_case)
{
	const char *names[] = {"MQTT_KEEPALIVE", "mqtt_keepalive",
	                       "Mqtt_KeepAlive", "MQTT_keepALIVE", NULL};
	char err[512];
	for (size_t i = 0; names[i] != NULL; i++) {
		struct cwm_settings s;
		ASSERT_EQ(settings(&s, OPTS(names[i], "30"), err, sizeof(err)), 0);
		ASSERT_EQ(s.keepalive, 30);
		cwm_settings_free(&s);
	}
	/* The client's prefix may be given in any case too. */
	struct cwm_settings s;
	err[0] = '\0';
	ASSERT_EQ(cwm_settings_read(&s, "Mqtt2", OPTS("MQTT2_KEEPALIVE", "7"), err,
	                            sizeof(err)),
	          0);
	ASSERT_EQ(s.keepalive, 7);
	cwm_settings_free(&s);
}

TEST(a_later_value_for_the_same_key_wins)
{
	struct cwm_settings s;
	char err[512];
	ASSERT_EQ(settings(&s,
	                   OPTS("MQTT_KEEPALIVE", "10", "mqtt_keepalive", "20"),
	                   err, sizeof(err)),
	          0);
	ASSERT_EQ(s.keepalive, 20);
	cwm_settings_free(&s);
	/* An empty value unsets a string key. */
	ASSERT_EQ(settings(&s, OPTS("MQTT_USERNAME", "a", "MQTT_USERNAME", ""),
	                   err, sizeof(err)),
	          0);
	ASSERT(s.username == NULL);
	cwm_settings_free(&s);
}

TEST(unknown_key_under_the_prefix_is_an_error_naming_it)
{
	struct cwm_settings s;
	char err[512];
	ASSERT_EQ(settings(&s, OPTS("MQTT_KEEPALIVES", "30"), err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS_ALL(err, "MQTT_KEEPALIVES", "unknown", "'30'");
	cwm_settings_free(&s);
	ASSERT_EQ(settings(&s, OPTS("mqtt_brokerurl", "h"), err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "mqtt_brokerurl");
	cwm_settings_free(&s);
	ASSERT_EQ(settings(&s, OPTS("MQTT_", "x"), err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	cwm_settings_free(&s);
}

TEST(options_of_other_prefixes_and_civetweb_are_ignored)
{
	struct cwm_settings s;
	char err[512];
	ASSERT_EQ(settings(&s,
	                   OPTS("MQTT2_KEEPALIVE", "abc", "listening_ports", "8080",
	                        "document_root", ".", "MQTTX", "1", "MQTT",
	                        "bare", "MQTT_X_BROKER_URL", "ho st",
	                        "mqtt_x_keepalive", "nonsense", "OTHER_FOO", "1"),
	                   err, sizeof(err)),
	          0);
	ASSERT_STREQ(err, "");
	ASSERT_EQ(s.keepalive, 60);
	ASSERT_STREQ(s.broker_url, "localhost");
	cwm_settings_free(&s);
	/* And the client MQTT_X reads its own from the same list. */
	err[0] = '\0';
	ASSERT_EQ(cwm_settings_read(&s, "MQTT_X",
	                            OPTS("MQTT_X_BROKER_URL", "bx",
	                                 "MQTT_KEEPALIVE", "abc"),
	                            err, sizeof(err)),
	          0);
	ASSERT_STREQ(s.uris[0], "tcp://bx:1883");
	cwm_settings_free(&s);
}

/* ---- cross-key checks -------------------------------------------------- */

TEST(password_and_password_file_together_are_refused)
{
	char err[512];
	ASSERT_EQ(read_one("PASSWORD", "pw",
	                   OPTS("MQTT_USERNAME", "u", "MQTT_PASSWORD_FILE",
	                        "/dev/null"),
	                   err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "MQTT_PASSWORD_FILE");
	ASSERT_CONTAINS(err, "MQTT_PASSWORD");
}

TEST(a_password_needs_a_username)
{
	char err[512], pf[512];
	ASSERT_EQ(read_one("PASSWORD", "pw", NULL, err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "MQTT_PASSWORD");
	ASSERT_CONTAINS(err, "MQTT_USERNAME");
	th_write_file(th_path(pf, sizeof(pf), "pw"), "filepw\n");
	ASSERT_EQ(read_one("PASSWORD_FILE", pf, NULL, err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "MQTT_USERNAME");
	ASSERT_NOT_CONTAINS(err, "filepw");
	/* A username alone is fine. */
	ASSERT_EQ(read_one("USERNAME", "u", NULL, err, sizeof(err)), 0);
}

TEST(reconnect_min_above_reconnect_max_is_refused)
{
	char err[512];
	ASSERT_EQ(read_one("RECONNECT_MIN", "10", OPTS("MQTT_RECONNECT_MAX", "5"),
	                   err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS_ALL(err, "MQTT_RECONNECT_MIN", "'10'",
	                    "MQTT_RECONNECT_MAX");
	/* Against the default maximum (120). */
	ASSERT_EQ(read_one("RECONNECT_MIN", "121", NULL, err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_EQ(read_one("RECONNECT_MIN", "5", OPTS("MQTT_RECONNECT_MAX", "5"),
	                   err, sizeof(err)),
	          0);
}

TEST(client_id_over_23_bytes_is_refused_only_with_mqtt_3_1)
{
	char err[512];
	const char *id24 = "abcdefghijklmnopqrstuvwx", *id23 = "abcdefghijklmnopqrstuvw";
	ASSERT_EQ(read_one("CLIENT_ID", id24, OPTS("MQTT_PROTOCOL_VERSION", "3.1"),
	                   err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "MQTT_CLIENT_ID");
	ASSERT_CONTAINS(err, "'abcdefghijklmnopqrstuvwx'");
	ASSERT_EQ(read_one("CLIENT_ID", id23, OPTS("MQTT_PROTOCOL_VERSION", "3.1"),
	                   err, sizeof(err)),
	          0);
	ASSERT_EQ(read_one("CLIENT_ID", id24, NULL, err, sizeof(err)), 0);
	ASSERT_EQ(read_one("CLIENT_ID", id24, OPTS("MQTT_PROTOCOL_VERSION", "5"),
	                   err, sizeof(err)),
	          0);
}

TEST(will_and_birth_messages_need_their_topics)
{
	char err[512];
	ASSERT_EQ(read_one("LAST_WILL_MESSAGE", "bye", NULL, err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "MQTT_LAST_WILL_MESSAGE");
	ASSERT_CONTAINS(err, "MQTT_LAST_WILL_TOPIC");
	ASSERT_EQ(read_one("BIRTH_MESSAGE", "hi", NULL, err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "MQTT_BIRTH_MESSAGE");
	ASSERT_CONTAINS(err, "MQTT_BIRTH_TOPIC");
	/* A topic without a message is an empty message: allowed. */
	ASSERT_EQ(read_one("LAST_WILL_TOPIC", "t", NULL, err, sizeof(err)), 0);
	ASSERT_EQ(read_one("BIRTH_TOPIC", "t", NULL, err, sizeof(err)), 0);
}

TEST(shared_group_with_a_slash_or_wildcard_is_refused)
{
	char err[512];
	const char *badg[] = {"a/b", "/", "g+", "#", NULL};
	for (size_t i = 0; badg[i] != NULL; i++) {
		ASSERT_EQ(read_one("SHARED_GROUP", badg[i], NULL, err, sizeof(err)),
		          MG_MQTT_ERR_CONFIG);
		ASSERT_CONTAINS(err, "MQTT_SHARED_GROUP");
	}
	ASSERT_EQ(read_one("SHARED_GROUP", "g-1.x", NULL, err, sizeof(err)), 0);
}

TEST(persistence_dir_needs_a_client_id_and_an_existing_directory)
{
	char err[512], missing[512], file[512];
	ASSERT_EQ(read_one("PERSISTENCE_DIR", th_dir(), NULL, err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "MQTT_PERSISTENCE_DIR");
	ASSERT_CONTAINS(err, "MQTT_CLIENT_ID");
	th_path(missing, sizeof(missing), "nope");
	ASSERT_EQ(read_one("PERSISTENCE_DIR", missing, OPTS("MQTT_CLIENT_ID", "c"),
	                   err, sizeof(err)),
	          MG_MQTT_ERR_IO);
	ASSERT_CONTAINS(err, "MQTT_PERSISTENCE_DIR");
	th_write_file(th_path(file, sizeof(file), "f"), "x");
	ASSERT_EQ(read_one("PERSISTENCE_DIR", file, OPTS("MQTT_CLIENT_ID", "c"),
	                   err, sizeof(err)),
	          MG_MQTT_ERR_IO);
	ASSERT_CONTAINS(err, "MQTT_PERSISTENCE_DIR");
	ASSERT_EQ(read_one("PERSISTENCE_DIR", th_dir(), OPTS("MQTT_CLIENT_ID", "c"),
	                   err, sizeof(err)),
	          0);
}

TEST(bridge_keys_without_bridge_path_are_an_error_naming_both_keys)
{
	char err[512], htd[512];
	th_write_file(th_path(htd, sizeof(htd), "htdigest"),
	              "u:r:0123456789abcdef0123456789abcdef\n");
	const char *keys[][2] = {{"BRIDGE_PUBLISH_ALLOW", "a/#"},
	                         {"BRIDGE_SUBSCRIBE_ALLOW", "a/#"},
	                         {"BRIDGE_AUTH_FILE", htd}};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		char name[64];
		snprintf(name, sizeof(name), "MQTT_%s", keys[i][0]);
		ASSERT_EQ(read_one(keys[i][0], keys[i][1], NULL, err, sizeof(err)),
		          MG_MQTT_ERR_CONFIG);
		ASSERT_CONTAINS(err, name);
		ASSERT_CONTAINS(err, "MQTT_BRIDGE_PATH");
		/* With the path, the same value is fine. */
		ASSERT_EQ(read_one(keys[i][0], keys[i][1],
		                   OPTS("MQTT_BRIDGE_PATH", "/mqtt"), err, sizeof(err)),
		          0);
	}
	/* Under another prefix, that prefix is named. */
	struct cwm_settings s;
	err[0] = '\0';
	ASSERT_EQ(cwm_settings_read(&s, "MQTT2",
	                            OPTS("MQTT2_BRIDGE_SUBSCRIBE_ALLOW", "#"), err,
	                            sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "MQTT2_BRIDGE_SUBSCRIBE_ALLOW");
	ASSERT_CONTAINS(err, "MQTT2_BRIDGE_PATH");
	cwm_settings_free(&s);
}

/* The same rule for the bridge's numbers: a limit set for a bridge that is not
 * there is a forgotten BRIDGE_PATH, not something to ignore silently. */
TEST(bridge_limits_without_bridge_path_are_an_error)
{
	char err[512];
	const char *keys[][2] = {{"BRIDGE_MAX_BODY", "1024"},
	                         {"BRIDGE_CLIENT_QUEUE", "50"},
	                         {"BRIDGE_LAST_VALUES", "10"},
	                         {"BRIDGE_REQUEST_TIMEOUT_MAX", "5"}};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		char name[64];
		snprintf(name, sizeof(name), "MQTT_%s", keys[i][0]);
		int rc = read_one(keys[i][0], keys[i][1], NULL, err, sizeof(err));
		if (rc != MG_MQTT_ERR_CONFIG)
			th_fail(__FILE__, __LINE__, "%s %s without MQTT_BRIDGE_PATH: rc %d "
			        "'%s'", name, keys[i][1], rc, err);
		ASSERT_CONTAINS(err, name);
		ASSERT_CONTAINS(err, "MQTT_BRIDGE_PATH");
	}
}

TEST(bridge_allow_lists_are_split_into_trimmed_filters)
{
	struct cwm_settings s;
	char err[512];
	ASSERT_EQ(settings(&s,
	                   OPTS("MQTT_BRIDGE_PATH", "/mqtt",
	                        "MQTT_BRIDGE_PUBLISH_ALLOW", " a/# ,b/+/c,  d ",
	                        "MQTT_BRIDGE_SUBSCRIBE_ALLOW", "$SYS/broker/#"),
	                   err, sizeof(err)),
	          0);
	ASSERT_EQ(s.nbpub, 3);
	ASSERT_STREQ(s.bpub[0], "a/#");
	ASSERT_STREQ(s.bpub[1], "b/+/c");
	ASSERT_STREQ(s.bpub[2], "d");
	ASSERT_EQ(s.nbsub, 1);
	ASSERT_STREQ(s.bsub[0], "$SYS/broker/#");
	cwm_settings_free(&s);
	/* A {name} level is a '+' (the SUBSCRIBE list says the same). */
	ASSERT_EQ(settings(&s,
	                   OPTS("MQTT_BRIDGE_PATH", "/mqtt",
	                        "MQTT_BRIDGE_PUBLISH_ALLOW", "home/{room}/set",
	                        "MQTT_BRIDGE_SUBSCRIBE_ALLOW", "{site}/#",
	                        "MQTT_SUBSCRIBE", "home/{room}/{sensor}:2"),
	                   err, sizeof(err)),
	          0);
	ASSERT_STREQ(s.bpub[0], "home/+/set");
	ASSERT_STREQ(s.bsub[0], "+/#");
	ASSERT_STREQ(s.sub_filters[0], "home/+/+");
	ASSERT_EQ(s.sub_qos[0], 2);
	cwm_settings_free(&s);
	/* A path alone: a bridge that allows nothing. */
	ASSERT_EQ(settings(&s, OPTS("MQTT_BRIDGE_PATH", "/mqtt"), err, sizeof(err)),
	          0);
	ASSERT_EQ(s.nbpub, 0);
	ASSERT_EQ(s.nbsub, 0);
	cwm_settings_free(&s);
	/* Empty entries are skipped, as in the other lists. */
	ASSERT_EQ(settings(&s,
	                   OPTS("MQTT_BRIDGE_PATH", "/mqtt",
	                        "MQTT_BRIDGE_PUBLISH_ALLOW", "a/#,,b, ,"),
	                   err, sizeof(err)),
	          0);
	ASSERT_EQ(s.nbpub, 2);
	ASSERT_STREQ(s.bpub[1], "b");
	cwm_settings_free(&s);
}

TEST(bridge_path_needs_a_civetweb_context)
{
	struct mg_mqtt *c = mg_mqtt_create(NULL);
	char err[512];
	ASSERT(c != NULL);
	ASSERT_EQ(mg_mqtt_start(c, NULL,
	                        OPTS("MQTT_BROKER_URL", "tcp://127.0.0.1:1",
	                             "MQTT_CONNECT_ASYNC", "true",
	                             "MQTT_BRIDGE_PATH", "/mqtt"),
	                        err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "MQTT_BRIDGE_PATH");
	mg_mqtt_stop(c);
}

TEST(tls_keyfile_needs_a_certfile_and_tls_files_must_be_readable)
{
	char err[512], ca[512], crt[512], key[512], missing[512];
	th_write_file(th_path(ca, sizeof(ca), "ca.crt"), "ca");
	th_write_file(th_path(crt, sizeof(crt), "c.crt"), "crt");
	th_write_file(th_path(key, sizeof(key), "c.key"), "key");
	th_path(missing, sizeof(missing), "missing.pem");
	ASSERT_EQ(read_one("TLS_KEYFILE", key, NULL, err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "MQTT_TLS_KEYFILE");
	ASSERT_CONTAINS(err, "MQTT_TLS_CERTFILE");
	const char *keys[] = {"TLS_CA_CERTS", "TLS_CERTFILE", "TLS_KEYFILE"};
	for (size_t i = 0; i < 3; i++) {
		/* Files are checked even with TLS off: the warning comes later. */
		ASSERT_EQ(read_one(keys[i], missing,
		                   OPTS("MQTT_TLS_CERTFILE", i == 2 ? crt : missing),
		                   err, sizeof(err)),
		          MG_MQTT_ERR_IO);
		char want[64];
		snprintf(want, sizeof(want), "MQTT_%s: cannot read", keys[i]);
		ASSERT_CONTAINS(err, want);
	}
	struct cwm_settings s;
	ASSERT_EQ(settings(&s,
	                   OPTS("MQTT_TLS_CA_CERTS", ca, "MQTT_TLS_CERTFILE", crt,
	                        "MQTT_TLS_KEYFILE", key, "MQTT_TLS_ENABLED", "1"),
	                   err, sizeof(err)),
	          0);
	ASSERT_STREQ(s.tls_keyfile, key);
	ASSERT_EQ(s.use_tls, 1);
	cwm_settings_free(&s);
}

TEST(password_file_gives_its_first_line_as_the_secret)
{
	struct {
		const char *text, *want;
	} cases[] = {{"hunter2\nsecond line\n", "hunter2"},
	             {"pw with blanks\r\n", "pw with blanks"},
	             {"no-newline", "no-newline"},
	             {"\nafter-empty-line", ""}};
	char err[512], pf[512], opt[520];
	th_path(pf, sizeof(pf), "pw");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct cwm_settings s;
		th_write_file(pf, cases[i].text);
		/* Blanks around a path are not part of it. */
		snprintf(opt, sizeof(opt), "  %s ", pf);
		ASSERT_EQ(settings(&s,
		                   OPTS("MQTT_USERNAME", "u", "MQTT_PASSWORD_FILE", opt),
		                   err, sizeof(err)),
		          0);
		ASSERT_STREQ(s.password_file, pf);
		ASSERT(s.password == NULL);
		ASSERT_STREQ(s.secret, cases[i].want);
		cwm_settings_free(&s);
	}
}

TEST(password_file_missing_is_an_io_error_and_too_long_a_config_error)
{
	char err[512], pf[512], big[1100];
	th_path(pf, sizeof(pf), "absent");
	ASSERT_EQ(read_one("PASSWORD_FILE", pf, OPTS("MQTT_USERNAME", "u"), err,
	                   sizeof(err)),
	          MG_MQTT_ERR_IO);
	ASSERT_CONTAINS(err, "MQTT_PASSWORD_FILE");
	ASSERT_CONTAINS(err, "cannot read");
	memset(big, 'p', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	th_write_file(th_path(pf, sizeof(pf), "big"), big);
	ASSERT_EQ(read_one("PASSWORD_FILE", pf, OPTS("MQTT_USERNAME", "u"), err,
	                   sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "MQTT_PASSWORD_FILE");
	ASSERT_NOT_CONTAINS(err, "pppppppp");
}

/* ---- BROKER_URL -------------------------------------------------------- */

struct url_case {
	const char *opts[9];
	const char *uris[4];
	int use_tls;
};

static const struct url_case urls[] = {
    {{"MQTT_BROKER_URL", "broker", NULL}, {"tcp://broker:1883"}, 0},
    {{"MQTT_BROKER_URL", "10.0.0.1", NULL}, {"tcp://10.0.0.1:1883"}, 0},
    {{"MQTT_BROKER_URL", "broker", "MQTT_TLS_ENABLED", "true", NULL},
     {"ssl://broker:8883"}, 1},
    {{"MQTT_BROKER_URL", "broker", "MQTT_BROKER_PORT", "1884", NULL},
     {"tcp://broker:1884"}, 0},
    {{"MQTT_BROKER_URL", "broker", "MQTT_BROKER_PORT", "8884",
      "MQTT_TLS_ENABLED", "yes", NULL},
     {"ssl://broker:8884"}, 1},
    /* BROKER_PORT only fills in a missing port. */
    {{"MQTT_BROKER_URL", "broker:1885", "MQTT_BROKER_PORT", "1884", NULL},
     {"tcp://broker:1885"}, 0},
    {{"MQTT_BROKER_URL", "mqtt://h", NULL}, {"tcp://h:1883"}, 0},
    {{"MQTT_BROKER_URL", "MQTT://H:18", NULL}, {"tcp://H:18"}, 0},
    {{"MQTT_BROKER_URL", "mqtts://h", NULL}, {"ssl://h:8883"}, 1},
    {{"MQTT_BROKER_URL", "tcp://h:1", NULL}, {"tcp://h:1"}, 0},
    {{"MQTT_BROKER_URL", "ssl://h", NULL}, {"ssl://h:8883"}, 1},
    {{"MQTT_BROKER_URL", "ssl://h", "MQTT_BROKER_PORT", "9999", NULL},
     {"ssl://h:9999"}, 1},
    {{"MQTT_BROKER_URL", "ws://h:9001/mqtt", NULL}, {"ws://h:9001/mqtt"}, 0},
    {{"MQTT_BROKER_URL", "ws://h", NULL}, {"ws://h:1883"}, 0},
    {{"MQTT_BROKER_URL", "wss://h/a/b", NULL}, {"wss://h:8883/a/b"}, 1},
    {{"MQTT_BROKER_URL", "[::1]:1883", NULL}, {"tcp://[::1]:1883"}, 0},
    {{"MQTT_BROKER_URL", "[::1]", NULL}, {"tcp://[::1]:1883"}, 0},
    {{"MQTT_BROKER_URL", "mqtts://[fe80::1]:8884", NULL},
     {"ssl://[fe80::1]:8884"}, 1},
    {{"MQTT_BROKER_URL", " a , mqtts://b:8884 ,, ws://c/x ", NULL},
     {"tcp://a:1883", "ssl://b:8884", "ws://c:1883/x"}, 1},
    {{"MQTT_BROKER_URL", "a,b", NULL}, {"tcp://a:1883", "tcp://b:1883"}, 0},
    {{"MQTT_BROKER_URL", "h", "MQTT_TRANSPORT", "websockets", NULL},
     {"ws://h:1883"}, 0},
    {{"MQTT_BROKER_URL", "h/mqtt", "MQTT_TRANSPORT", "websockets", NULL},
     {"ws://h:1883/mqtt"}, 0},
    {{"MQTT_BROKER_URL", "h:8080", "MQTT_TRANSPORT", "WebSockets",
      "MQTT_TLS_ENABLED", "1", NULL},
     {"wss://h:8080"}, 1},
    {{"MQTT_BROKER_URL", "wss://h", "MQTT_TRANSPORT", "websockets",
      "MQTT_TLS_ENABLED", "1", NULL},
     {"wss://h:8883"}, 1},
};

TEST(broker_url_becomes_paho_uris)
{
	for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
		const struct url_case *u = &urls[i];
		struct cwm_settings s;
		char err[512];
		int rc = settings(&s, (const char **)u->opts, err, sizeof(err));
		if (rc != 0)
			th_fail(__FILE__, __LINE__, "'%s': %s", u->opts[1], err);
		int n = 0;
		while (n < 4 && u->uris[n] != NULL)
			n++;
		if (s.nuris != n)
			th_fail(__FILE__, __LINE__, "'%s': %d URIs, not %d", u->opts[1],
			        s.nuris, n);
		for (int j = 0; j < n; j++)
			ASSERT_STREQ(s.uris[j], u->uris[j]);
		if (s.use_tls != u->use_tls)
			th_fail(__FILE__, __LINE__, "'%s': use_tls %d", u->opts[1],
			        s.use_tls);
		cwm_settings_free(&s);
	}
}

TEST(broker_url_conflicting_with_tls_or_transport_is_refused)
{
	char err[512];
	ASSERT_EQ(read_one("BROKER_URL", "mqtt://h", OPTS("MQTT_TLS_ENABLED", "true"),
	                   err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS_ALL(err, "MQTT_BROKER_URL", "'mqtt://h'",
	                    "MQTT_TLS_ENABLED");
	/* One bad entry spoils the list. */
	ASSERT_EQ(read_one("BROKER_URL", "mqtts://a, tcp://b",
	                   OPTS("MQTT_TLS_ENABLED", "true"), err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "'tcp://b'");
	ASSERT_EQ(read_one("BROKER_URL", "tcp://h",
	                   OPTS("MQTT_TRANSPORT", "websockets"), err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS_ALL(err, "MQTT_BROKER_URL", "'tcp://h'",
	                    "MQTT_TRANSPORT");
	ASSERT_EQ(read_one("BROKER_URL", "ws://h",
	                   OPTS("MQTT_TRANSPORT", "websockets", "MQTT_TLS_ENABLED",
	                        "on"),
	                   err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "MQTT_TLS_ENABLED");
}

/* BROKER_URL values that are no broker address. */
static const char *const junk_urls[] = {
    "http://x",     "host:99999", "ho st",    ",",
    "mqtt://",      "host:",      "host:abc", ":1883",
    "tcp://h/path", "h/path",     "[::1",     "h:1883:1",
    "h\xc3\xb6",    "host:0",     "host:-1",  "ws://h/a b",
    "a,,ftp://b",   NULL};

TEST(junk_broker_urls_are_refused_naming_the_key)
{
	char err[512];
	for (size_t i = 0; junk_urls[i] != NULL; i++) {
		int rc = read_one("BROKER_URL", junk_urls[i], NULL, err, sizeof(err));
		if (rc != MG_MQTT_ERR_CONFIG)
			th_fail(__FILE__, __LINE__, "'%s' gave %d", junk_urls[i], rc);
		ASSERT_CONTAINS(err, "MQTT_BROKER_URL");
	}
}

/* ---- SUBSCRIBE --------------------------------------------------------- */

TEST(subscribe_list_is_split_into_filters_and_qos)
{
	struct cwm_settings s;
	char err[512];
	ASSERT_EQ(settings(&s, OPTS("MQTT_SUBSCRIBE", "a/b:1, c/#:2 , d"), err,
	                   sizeof(err)),
	          0);
	ASSERT_EQ(s.nsubs, 3);
	ASSERT_STREQ(s.sub_filters[0], "a/b");
	ASSERT_STREQ(s.sub_filters[1], "c/#");
	ASSERT_STREQ(s.sub_filters[2], "d");
	ASSERT_EQ(s.sub_qos[0], 1);
	ASSERT_EQ(s.sub_qos[1], 2);
	ASSERT_EQ(s.sub_qos[2], 0);
	cwm_settings_free(&s);

	/* ':' that is not a QoS suffix belongs to the filter. */
	ASSERT_EQ(settings(&s,
	                   OPTS("MQTT_SUBSCRIBE",
	                        "a:b/c, time/12:30, x:1:2, y :0, $share/g/z/#:1,+"),
	                   err, sizeof(err)),
	          0);
	ASSERT_EQ(s.nsubs, 6);
	ASSERT_STREQ(s.sub_filters[0], "a:b/c");
	ASSERT_EQ(s.sub_qos[0], 0);
	ASSERT_STREQ(s.sub_filters[1], "time/12:30");
	ASSERT_EQ(s.sub_qos[1], 0);
	ASSERT_STREQ(s.sub_filters[2], "x:1");
	ASSERT_EQ(s.sub_qos[2], 2);
	ASSERT_STREQ(s.sub_filters[3], "y");
	ASSERT_EQ(s.sub_qos[3], 0);
	ASSERT_STREQ(s.sub_filters[4], "$share/g/z/#");
	ASSERT_EQ(s.sub_qos[4], 1);
	ASSERT_STREQ(s.sub_filters[5], "+");
	cwm_settings_free(&s);

	/* Only blanks and commas: no subscriptions. */
	ASSERT_EQ(settings(&s, OPTS("MQTT_SUBSCRIBE", " , "), err, sizeof(err)), 0);
	ASSERT_EQ(s.nsubs, 0);
	cwm_settings_free(&s);
}

TEST(subscribe_with_a_bad_filter_is_refused)
{
	const char *badf[] = {"a/#/b", "a+", "ok, #x:1", ":1", "$share/g:1",
	                      "a\x01", NULL};
	char err[512];
	for (size_t i = 0; badf[i] != NULL; i++) {
		int rc = read_one("SUBSCRIBE", badf[i], NULL, err, sizeof(err));
		if (rc != MG_MQTT_ERR_CONFIG)
			th_fail(__FILE__, __LINE__, "'%s' gave %d", badf[i], rc);
		ASSERT_CONTAINS(err, "MQTT_SUBSCRIBE");
	}
	ASSERT_EQ(read_one("SUBSCRIBE", "a/#/b:2", NULL, err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "'a/#/b'");
	/* One digit after the last ':' is a QoS; 3 is out of range. */
	ASSERT_EQ(read_one("SUBSCRIBE", "ok, a/b:3", NULL, err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "'a/b:3'");
	ASSERT_CONTAINS(err, "QoS");
}

/* ---- the settings as JSON ---------------------------------------------- */

/* The JSON text of s; free() it. */
static char *settings_json(const struct cwm_settings *s)
{
	cJSON *o = cJSON_CreateObject();
	ASSERT(o != NULL);
	cwm_settings_json(s, o);
	char *text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	ASSERT(text != NULL);
	return text;
}

TEST(settings_json_has_every_key_and_masks_secrets)
{
	struct cwm_settings s;
	char err[512];
	ASSERT_EQ(settings(&s,
	                   OPTS("MQTT_USERNAME", "alice", "MQTT_PASSWORD",
	                        "Tr0ub4dor&3", "MQTT_TLS_KEYFILE_PASSWORD",
	                        "K3yPa55", "MQTT_KEEPALIVE", "42",
	                        "MQTT_PROTOCOL_VERSION", "5", "MQTT_BROKER_PORT",
	                        "1884", "MQTT_REFRESH_TIME", "2.5",
	                        "MQTT_TLS_VERSION", "tlsv1.0", "MQTT_SUBSCRIBE",
	                        "a/#:1"),
	                   err, sizeof(err)),
	          0);
	char *text = settings_json(&s);
	cJSON *o = cJSON_Parse(text);
	ASSERT(o != NULL);
	for (size_t i = 0; i < CWM_NKEYS; i++) {
		char name[64];
		size_t j;
		for (j = 0; cwm_keys[i].name[j] != '\0'; j++)
			name[j] = (char)tolower((unsigned char)cwm_keys[i].name[j]);
		name[j] = '\0';
		if (cJSON_GetObjectItemCaseSensitive(o, name) == NULL)
			th_fail(__FILE__, __LINE__, "no \"%s\" in %s", name, text);
	}
	ASSERT_EQ(cJSON_GetArraySize(o), (int)CWM_NKEYS);
	ASSERT_STREQ(cJSON_GetObjectItem(o, "password")->valuestring, "***");
	ASSERT_STREQ(cJSON_GetObjectItem(o, "tls_keyfile_password")->valuestring,
	             "***");
	ASSERT_STREQ(cJSON_GetObjectItem(o, "username")->valuestring, "alice");
	ASSERT_EQ(cJSON_GetObjectItem(o, "keepalive")->valueint, 42);
	ASSERT_EQ(cJSON_GetObjectItem(o, "broker_port")->valueint, 1884);
	ASSERT(cJSON_GetObjectItem(o, "refresh_time")->valuedouble == 2.5);
	ASSERT_STREQ(cJSON_GetObjectItem(o, "protocol_version")->valuestring, "5");
	ASSERT_STREQ(cJSON_GetObjectItem(o, "tls_version")->valuestring, "tlsv1");
	ASSERT_STREQ(cJSON_GetObjectItem(o, "subscribe")->valuestring, "a/#:1");
	ASSERT_NOT_CONTAINS(text, "Tr0ub4dor");
	ASSERT_NOT_CONTAINS(text, "K3yPa55");
	cJSON_Delete(o);
	free(text);
	cwm_settings_free(&s);
}

TEST(settings_json_shows_defaults_and_unset_values_as_null)
{
	struct cwm_settings s;
	char err[512];
	ASSERT_EQ(settings(&s, NULL, err, sizeof(err)), 0);
	char *text = settings_json(&s);
	ASSERT_CONTAINS_ALL(text, "\"client_id\":null",
	                    "\"broker_url\":\"localhost\"",
	                    "\"broker_port\":null", "\"password\":null",
	                    "\"tls_keyfile_password\":null", "\"keepalive\":60",
	                    "\"connection_timeout\":5",
	                    "\"clean_session\":true", "\"connect_async\":false",
	                    "\"refresh_time\":1",
	                    "\"protocol_version\":\"3.1.1\"",
	                    "\"transport\":\"tcp\"",
	                    "\"tls_cert_reqs\":\"required\"",
	                    "\"tls_version\":\"tlsv1.2\"",
	                    "\"max_inflight\":20", "\"queue_size\":10000");
	free(text);
	cwm_settings_free(&s);
}

TEST(settings_json_masks_a_password_read_from_a_file)
{
	struct cwm_settings s;
	char err[512], pf[512];
	th_write_file(th_path(pf, sizeof(pf), "pw"), "FileSecret99\n");
	ASSERT_EQ(settings(&s,
	                   OPTS("MQTT_USERNAME", "u", "MQTT_PASSWORD_FILE", pf),
	                   err, sizeof(err)),
	          0);
	ASSERT_STREQ(s.secret, "FileSecret99");
	char *text = settings_json(&s);
	ASSERT_CONTAINS(text, "\"password\":\"***\"");
	ASSERT_CONTAINS(text, "\"password_file\":");
	ASSERT_NOT_CONTAINS(text, "FileSecret99");
	free(text);
	cwm_settings_free(&s);
}

/* ---- civetweb.conf files ----------------------------------------------- */

TEST(conf_file_comments_blanks_and_values_with_hash_and_spaces)
{
	struct mg_mqtt_config cfg;
	char path[512], err[512];
	th_write_file(th_path(path, sizeof(path), "civetweb.conf"),
	              "# a comment\n"
	              "   # an indented comment\n"
	              "\n"
	              "   \t\n"
	              "listening_ports 8080\n"
	              "   MQTT_BROKER_URL   mqtt://broker.local:1883   \n"
	              "MQTT_SUBSCRIBE a/#,b/+\n"
	              "MQTT_LAST_WILL_MESSAGE going  away # for good\t \n"
	              "document_root\t/var/www\n"
	              "MQTT_CLIENT_ID\t \tid-1\n");
	ASSERT_EQ(mg_mqtt_config_read(&cfg, path, NULL, err, sizeof(err)), 0);
	ASSERT_STREQ(err, "");
	ASSERT_EQ(npairs(cfg.options), 6);
	ASSERT_STREQ(cfg.options[0], "listening_ports");
	ASSERT_STREQ(lookup(cfg.options, "listening_ports"), "8080");
	ASSERT_STREQ(lookup(cfg.options, "MQTT_BROKER_URL"),
	             "mqtt://broker.local:1883");
	ASSERT_STREQ(lookup(cfg.options, "MQTT_SUBSCRIBE"), "a/#,b/+");
	ASSERT_STREQ(lookup(cfg.options, "MQTT_LAST_WILL_MESSAGE"),
	             "going  away # for good");
	ASSERT_STREQ(lookup(cfg.options, "document_root"), "/var/www");
	ASSERT_STREQ(lookup(cfg.options, "MQTT_CLIENT_ID"), "id-1");
	ASSERT_EQ(npairs(cfg.civetweb), 2);
	ASSERT_EQ(npairs(cfg.mqtt), 4);
	ASSERT_EQ(npairs(cfg.other), 0);
	ASSERT_STREQ(cfg.prefixes[0], "MQTT");
	ASSERT(cfg.prefixes[1] == NULL);
	mg_mqtt_config_free(&cfg);
	ASSERT(cfg.options == NULL);
}

TEST(conf_file_with_crlf_and_a_byte_order_mark)
{
	struct mg_mqtt_config cfg;
	char path[512], err[512];
	th_write_file(th_path(path, sizeof(path), "c.conf"),
	              "\xef\xbb\xbfMQTT_CLIENT_ID abc\r\n"
	              "# comment\r\n"
	              "\r\n"
	              "MQTT_KEEPALIVE 30\r\n"
	              "listening_ports 8080\r\n");
	ASSERT_EQ(mg_mqtt_config_read(&cfg, path, NULL, err, sizeof(err)), 0);
	ASSERT_EQ(npairs(cfg.options), 3);
	ASSERT_STREQ(cfg.options[0], "MQTT_CLIENT_ID");
	ASSERT_STREQ(cfg.options[1], "abc");
	ASSERT_STREQ(lookup(cfg.options, "MQTT_KEEPALIVE"), "30");
	ASSERT_STREQ(lookup(cfg.civetweb, "listening_ports"), "8080");
	ASSERT_STREQ(cfg.prefixes[0], "MQTT");
	mg_mqtt_config_free(&cfg);

	/* A BOM before a comment on the first line. */
	th_write_file(path, "\xef\xbb\xbf# c\nMQTT_KEEPALIVE 5\n");
	ASSERT_EQ(mg_mqtt_config_read(&cfg, path, NULL, err, sizeof(err)), 0);
	ASSERT_EQ(npairs(cfg.options), 1);
	mg_mqtt_config_free(&cfg);
}

TEST(config_check_names_an_option_nobody_takes_and_the_one_it_is_close_to)
{
	struct mg_mqtt_config cfg;
	char err[512];
	/* A C++ program's CivetServer list through the split: all taken. */
	const char *all[] = {"listening_ports", "127.0.0.1:0", "Num_Threads", "4",
	                     "MQTT_BROKER_URL", "mqtt://127.0.0.1:1", NULL};
	ASSERT_EQ(mg_mqtt_config_read(&cfg, NULL, all, err, sizeof(err)), 0);
	ASSERT_EQ(mg_mqtt_config_check(&cfg, err, sizeof(err)), 0);
	ASSERT_STREQ(err, "");
	ASSERT_STREQ(lookup(cfg.civetweb, "num_threads"), "4");
	ASSERT_STREQ(lookup(cfg.mqtt, "MQTT_BROKER_URL"), "mqtt://127.0.0.1:1");
	mg_mqtt_config_free(&cfg);

	/* One letter short of a CivetWeb option: named, with the option. */
	const char *typo[] = {"listening_port", "8080", "MQTT_KEEPALIVE", "5", NULL};
	ASSERT_EQ(mg_mqtt_config_read(&cfg, NULL, typo, err, sizeof(err)), 0);
	ASSERT_EQ(mg_mqtt_config_check(&cfg, err, sizeof(err)), MG_MQTT_ERR_CONFIG);
	ASSERT_STREQ(err, "unknown option 'listening_port': neither a CivetWeb "
	                  "option nor <PREFIX>_<KEY>; did you mean "
	                  "'listening_ports'?");
	mg_mqtt_config_free(&cfg);

	/* Far from every option: named, no guess. */
	const char *far[] = {"colour_scheme", "dark", NULL};
	ASSERT_EQ(mg_mqtt_config_read(&cfg, NULL, far, err, sizeof(err)), 0);
	ASSERT_EQ(mg_mqtt_config_check(&cfg, err, sizeof(err)), MG_MQTT_ERR_CONFIG);
	ASSERT_STREQ(err, "unknown option 'colour_scheme': neither a CivetWeb "
	                  "option nor <PREFIX>_<KEY>");
	mg_mqtt_config_free(&cfg);

	memset(&cfg, 0, sizeof(cfg));
	ASSERT_EQ(mg_mqtt_config_check(&cfg, err, sizeof(err)), MG_MQTT_ERR_INVALID);
	ASSERT_EQ(mg_mqtt_config_check(NULL, NULL, 0), MG_MQTT_ERR_INVALID);
}

TEST(conf_line_without_a_value_is_an_error_with_its_line)
{
	struct mg_mqtt_config cfg;
	char path[512], err[512];
	th_write_file(th_path(path, sizeof(path), "c.conf"),
	              "# listening_ports=8080 is a name without a value\n"
	              "MQTT_KEEPALIVE 30\n"
	              "listening_ports=8080\n"
	              "document_root .\n");
	memset(&cfg, 0xa5, sizeof(cfg));
	ASSERT_EQ(mg_mqtt_config_read(&cfg, path, NULL, err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, ":3: 'listening_ports=8080' has no value");
	/* On failure nothing is left to free. */
	ASSERT(cfg.options == NULL && cfg.priv_ == NULL && cfg.prefixes == NULL);
	mg_mqtt_config_free(&cfg);

	th_write_file(path, "MQTT_KEEPALIVE 30\n  MQTT_CLIENT_ID   \t \n");
	ASSERT_EQ(mg_mqtt_config_read(&cfg, path, NULL, err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, ":2: 'MQTT_CLIENT_ID' has no value");
}

/* The manual's sentence starts with the path as given: "civetweb.conf:7:". */
TEST(conf_line_error_names_the_whole_path)
{
	struct mg_mqtt_config cfg;
	char path[512], err[1024], want[600];
	th_write_file(th_path(path, sizeof(path), "civetweb.conf"),
	              "MQTT_KEEPALIVE 30\nlistening_ports\n");
	ASSERT_EQ(mg_mqtt_config_read(&cfg, path, NULL, err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	snprintf(want, sizeof(want), "%s:2: 'listening_ports' has no value", path);
	ASSERT_STREQ(err, want);
}

TEST(conf_missing_file_is_an_io_error)
{
	struct mg_mqtt_config cfg;
	char path[512], err[1024];
	th_path(path, sizeof(path), "absent.conf");
	ASSERT_EQ(mg_mqtt_config_read(&cfg, path, NULL, err, sizeof(err)),
	          MG_MQTT_ERR_IO);
	ASSERT_CONTAINS(err, "cannot read");
	ASSERT(cfg.priv_ == NULL);
	/* A relative name too, and errbuf may be NULL. */
	ASSERT_EQ(mg_mqtt_config_read(&cfg, "no-such-dir/civetweb.conf", NULL,
	                              NULL, 0),
	          MG_MQTT_ERR_IO);
	ASSERT_EQ(mg_mqtt_config_read(&cfg, "no-such-dir/civetweb.conf", NULL, err,
	                              sizeof(err)),
	          MG_MQTT_ERR_IO);
	ASSERT_CONTAINS(err, "'no-such-dir/civetweb.conf'");
	ASSERT_EQ(mg_mqtt_config_read(NULL, NULL, NULL, err, sizeof(err)),
	          MG_MQTT_ERR_INVALID);
}

TEST(conf_missing_file_error_names_the_whole_path)
{
	struct mg_mqtt_config cfg;
	char path[512], err[1024];
	th_path(path, sizeof(path), "absent.conf");
	ASSERT_EQ(mg_mqtt_config_read(&cfg, path, NULL, err, sizeof(err)),
	          MG_MQTT_ERR_IO);
	ASSERT_CONTAINS(err, path);
}

TEST(overrides_replace_file_values_last_wins_any_case)
{
	struct mg_mqtt_config cfg;
	char path[512], err[512];
	th_write_file(th_path(path, sizeof(path), "c.conf"),
	              "MQTT_KEEPALIVE 30\n"
	              "listening_ports 8080\n"
	              "MQTT_KEEPALIVE 40\n");
	ASSERT_EQ(mg_mqtt_config_read(&cfg, path,
	                              OPTS("mqtt_keepalive", "50", "LISTENING_PORTS",
	                                   "9090", "MQTT_CLIENT_ID", "x",
	                                   "Mqtt_KeepAlive", "60"),
	                              err, sizeof(err)),
	          0);
	/* One entry per name, at its first place, with the last value. */
	ASSERT_EQ(npairs(cfg.options), 3);
	ASSERT_STREQ(cfg.options[0], "MQTT_KEEPALIVE");
	ASSERT_STREQ(cfg.options[1], "60");
	ASSERT_STREQ(cfg.options[3], "9090");
	ASSERT_STREQ(cfg.options[4], "MQTT_CLIENT_ID");
	ASSERT_STREQ(lookup(cfg.civetweb, "listening_ports"), "9090");
	mg_mqtt_config_free(&cfg);

	/* No file at all: only the overrides. */
	ASSERT_EQ(mg_mqtt_config_read(&cfg, NULL, OPTS("MQTT_KEEPALIVE", "5"), err,
	                              sizeof(err)),
	          0);
	ASSERT_EQ(npairs(cfg.options), 1);
	ASSERT_EQ(npairs(cfg.mqtt), 1);
	mg_mqtt_config_free(&cfg);

	/* An override without a value. */
	const char *odd[] = {"MQTT_KEEPALIVE", NULL};
	ASSERT_EQ(mg_mqtt_config_read(&cfg, NULL, odd, err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "MQTT_KEEPALIVE");
	ASSERT(cfg.priv_ == NULL);
}

TEST(split_gives_civetweb_its_options_spelled_its_way)
{
	struct mg_mqtt_config cfg;
	char err[512];
	ASSERT_EQ(mg_mqtt_config_read(&cfg, NULL,
	                              OPTS("LISTENING_PORTS", "8080",
	                                   "Document_Root", "/www", "num_threads",
	                                   "4", "MQTT_BROKER_URL", "h"),
	                              err, sizeof(err)),
	          0);
	ASSERT_EQ(npairs(cfg.civetweb), 3);
	ASSERT_STREQ(cfg.civetweb[0], "listening_ports");
	ASSERT_STREQ(cfg.civetweb[1], "8080");
	ASSERT_STREQ(cfg.civetweb[2], "document_root");
	ASSERT_STREQ(cfg.civetweb[4], "num_threads");
	/* options keeps the spelling read. */
	ASSERT_STREQ(cfg.options[0], "LISTENING_PORTS");
	ASSERT_EQ(npairs(cfg.mqtt), 1);
	ASSERT_STREQ(cfg.mqtt[0], "MQTT_BROKER_URL");
	ASSERT(cfg.civetweb[6] == NULL && cfg.mqtt[2] == NULL &&
	       cfg.other[0] == NULL);
	mg_mqtt_config_free(&cfg);
}

TEST(split_finds_prefixes_in_first_seen_order)
{
	struct mg_mqtt_config cfg;
	char err[512];
	ASSERT_EQ(mg_mqtt_config_read(&cfg, NULL,
	                              OPTS("MQTT_BROKER_URL", "a", "my_setting", "x",
	                                   "MQTT2_BROKER_URL", "b",
	                                   "mybroker_keepalive", "5", "MQTT_FOO",
	                                   "1", "mqtt2_client_id", "c", "MQTTX_FOO",
	                                   "2", "listening_ports", "80",
	                                   "MQTT3_FOO", "3"),
	                              err, sizeof(err)),
	          0);
	ASSERT_STREQ(cfg.prefixes[0], "MQTT");
	ASSERT_STREQ(cfg.prefixes[1], "MQTT2");
	ASSERT_STREQ(cfg.prefixes[2], "MYBROKER");
	ASSERT(cfg.prefixes[3] == NULL);
	/* An unknown key under a found prefix is the client's to report. */
	ASSERT_STREQ(lookup(cfg.mqtt, "MQTT_FOO"), "1");
	ASSERT_STREQ(lookup(cfg.mqtt, "mybroker_keepalive"), "5");
	ASSERT_STREQ(lookup(cfg.mqtt, "mqtt2_client_id"), "c");
	ASSERT_EQ(npairs(cfg.mqtt), 5);
	/* No known key defines MQTTX or MQTT3. */
	ASSERT_STREQ(lookup(cfg.other, "my_setting"), "x");
	ASSERT_STREQ(lookup(cfg.other, "MQTTX_FOO"), "2");
	ASSERT_STREQ(lookup(cfg.other, "MQTT3_FOO"), "3");
	ASSERT_EQ(npairs(cfg.other), 3);
	ASSERT_EQ(npairs(cfg.civetweb), 1);
	ASSERT_EQ(npairs(cfg.options), 9);
	mg_mqtt_config_free(&cfg);
}

TEST(split_uses_the_longest_key_to_find_a_prefix)
{
	struct mg_mqtt_config cfg;
	char err[512];
	/* Also ends in _PASSWORD, but TLS_KEYFILE_PASSWORD is longer. */
	ASSERT_EQ(mg_mqtt_config_read(&cfg, NULL,
	                              OPTS("MQTT_TLS_KEYFILE_PASSWORD", "k",
	                                   "mqtt_last_will_topic", "t"),
	                              err, sizeof(err)),
	          0);
	ASSERT_STREQ(cfg.prefixes[0], "MQTT");
	ASSERT(cfg.prefixes[1] == NULL);
	ASSERT_EQ(npairs(cfg.mqtt), 2);
	mg_mqtt_config_free(&cfg);

	/* MQTT_X_BROKER_URL defines MQTT_X, and belongs to it. */
	ASSERT_EQ(mg_mqtt_config_read(&cfg, NULL, OPTS("MQTT_X_BROKER_URL", "h"),
	                              err, sizeof(err)),
	          0);
	ASSERT_STREQ(cfg.prefixes[0], "MQTT_X");
	ASSERT(cfg.prefixes[1] == NULL);
	ASSERT_EQ(npairs(cfg.mqtt), 1);
	mg_mqtt_config_free(&cfg);

	/* A name that is only a key, or has a bad prefix, defines nothing. */
	ASSERT_EQ(mg_mqtt_config_read(&cfg, NULL,
	                              OPTS("KEEPALIVE", "1", "_KEEPALIVE", "2",
	                                   "a-b_KEEPALIVE", "3"),
	                              err, sizeof(err)),
	          0);
	ASSERT(cfg.prefixes[0] == NULL);
	ASSERT_EQ(npairs(cfg.other), 3);
	mg_mqtt_config_free(&cfg);
}

TEST(config_free_is_safe_on_zeroed_and_null)
{
	struct mg_mqtt_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	mg_mqtt_config_free(&cfg);
	mg_mqtt_config_free(&cfg);
	mg_mqtt_config_free(NULL);
	/* An empty read gives empty lists, not NULL ones. */
	char err[64];
	ASSERT_EQ(mg_mqtt_config_read(&cfg, NULL, NULL, err, sizeof(err)), 0);
	ASSERT(cfg.options != NULL && cfg.options[0] == NULL);
	ASSERT(cfg.civetweb != NULL && cfg.civetweb[0] == NULL);
	ASSERT(cfg.mqtt != NULL && cfg.mqtt[0] == NULL);
	ASSERT(cfg.other != NULL && cfg.other[0] == NULL);
	ASSERT(cfg.prefixes != NULL && cfg.prefixes[0] == NULL);
	mg_mqtt_config_free(&cfg);
}

/* ---- the client: create, handlers, a failed start ---------------------- */

struct logrec {
	int n, level;
	char text[1024];
	pthread_t thread;
};

static void log_cb(struct mg_mqtt *c, int level, const char *text, void *ud)
{
	struct logrec *l = ud;
	(void)c;
	l->n++;
	l->level = level;
	l->thread = pthread_self();
	snprintf(l->text, sizeof(l->text), "%s", text);
}

static void msg_cb(struct mg_mqtt *c, const struct mg_mqtt_message *m,
                   void *ud)
{
	(void)c;
	(void)m;
	(void)ud;
}

TEST(failed_start_reports_to_errbuf_and_log_and_leaves_client_startable)
{
	struct logrec l = {0};
	char err[512];
	struct mg_mqtt *c = mg_mqtt_create(NULL);
	ASSERT(c != NULL);
	ASSERT_EQ(mg_mqtt_on_log(c, log_cb, &l), 0);
	ASSERT_EQ(mg_mqtt_on_topic(c, "a/#", msg_cb, NULL), 0);
	ASSERT_EQ(mg_mqtt_start(c, NULL, OPTS("MQTT_KEEPALIVE", "abc"), err,
	                        sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_STREQ(err,
	             "MQTT_KEEPALIVE: 'abc' is not a number of seconds (0-65535)");
	/* The log handler ran before start returned, on this thread. */
	ASSERT_EQ(l.n, 1);
	ASSERT_EQ(l.level, MG_MQTT_LOG_ERROR);
	ASSERT_STREQ(l.text, err);
	ASSERT(pthread_equal(l.thread, pthread_self()));
	ASSERT_EQ(mg_mqtt_is_connected(c), 0);
	ASSERT_EQ(mg_mqtt_publish(c, "t", "x", 1, 0, 0), MG_MQTT_ERR_NOT_STARTED);

	/* Still created, not started: handlers may be added, start retried. */
	ASSERT_EQ(mg_mqtt_on_topic(c, "b/+", msg_cb, NULL), 0);
	ASSERT_EQ(mg_mqtt_start(c, NULL,
	                        OPTS("listening_ports", "8080", "MQTT_BOGUS", "1"),
	                        err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "MQTT_BOGUS");
	ASSERT_EQ(l.n, 2);
	ASSERT_STREQ(l.text, err);
	ASSERT_EQ(mg_mqtt_start(c, NULL, OPTS("MQTT_BROKER_URL", "http://x"), NULL,
	                        0),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_EQ(l.n, 3);
	ASSERT_CONTAINS(l.text, "MQTT_BROKER_URL");
	ASSERT_EQ(mg_mqtt_start(c, NULL,
	                        OPTS("MQTT_PERSISTENCE_DIR", "/nonexistent",
	                             "MQTT_CLIENT_ID", "x"),
	                        err, sizeof(err)),
	          MG_MQTT_ERR_IO);
	ASSERT_EQ(mg_mqtt_stop(c), 0);
}

TEST(failed_start_never_logs_a_password)
{
	struct logrec l = {0};
	char err[512];
	struct mg_mqtt *c = mg_mqtt_create("Sec");
	ASSERT(c != NULL);
	ASSERT_EQ(mg_mqtt_on_log(c, log_cb, &l), 0);
	ASSERT_EQ(mg_mqtt_start(c, NULL, OPTS("SEC_PASSWORD", "Tr0ub4dor&3"), err,
	                        sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "SEC_USERNAME");
	ASSERT_NOT_CONTAINS(err, "Tr0ub4dor");
	ASSERT_NOT_CONTAINS(l.text, "Tr0ub4dor");
	ASSERT_EQ(mg_mqtt_start(c, NULL, OPTS("sec_passwrd", "Tr0ub4dor&3"), err,
	                        sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "sec_passwrd");
	ASSERT_NOT_CONTAINS(err, "Tr0ub4dor");
	ASSERT_NOT_CONTAINS(l.text, "Tr0ub4dor");
	ASSERT_EQ(l.n, 2);
	ASSERT_EQ(mg_mqtt_stop(c), 0);
}

TEST(start_reports_an_unknown_key_from_the_split)
{
	struct mg_mqtt_config cfg;
	char path[512], err[512];
	th_write_file(th_path(path, sizeof(path), "c.conf"),
	              "listening_ports 8080\n"
	              "MQTT_BROKER_URL localhost\n"
	              "MQTT_KEEPALIVES 30\n");
	ASSERT_EQ(mg_mqtt_config_read(&cfg, path, NULL, err, sizeof(err)), 0);
	struct mg_mqtt *c = mg_mqtt_create(cfg.prefixes[0]);
	ASSERT(c != NULL);
	ASSERT_EQ(mg_mqtt_start(c, NULL, cfg.mqtt, err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "MQTT_KEEPALIVES");
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	mg_mqtt_config_free(&cfg);
}

TEST(create_defaults_and_upper_cases_the_prefix)
{
	struct {
		const char *in, *want;
	} ok[] = {{NULL, "MQTT"},
	          {"", "MQTT"},
	          {"mqtt2", "MQTT2"},
	          {"My_Broker9", "MY_BROKER9"},
	          {"_", "_"}};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct mg_mqtt *c = mg_mqtt_create(ok[i].in);
		ASSERT(c != NULL);
		ASSERT_STREQ(mg_mqtt_prefix(c), ok[i].want);
		ASSERT_EQ(mg_mqtt_stop(c), 0);
	}
	ASSERT(mg_mqtt_prefix(NULL) == NULL);
}

TEST(create_refuses_bad_or_too_long_prefixes)
{
	const char *badp[] = {"a-b", "a b", "a/b", "mqtt.x", "\xc3\xa9", "a\tb",
	                      NULL};
	for (size_t i = 0; badp[i] != NULL; i++)
		ASSERT(mg_mqtt_create(badp[i]) == NULL);
	char p[80];
	memset(p, 'P', sizeof(p));
	p[63] = '\0';
	struct mg_mqtt *c = mg_mqtt_create(p);
	ASSERT(c != NULL); /* 63 letters fit */
	ASSERT_EQ(strlen(mg_mqtt_prefix(c)), 63);
	mg_mqtt_stop(c);
	p[63] = 'P';
	p[64] = '\0';
	ASSERT(mg_mqtt_create(p) == NULL);
	p[79] = '\0';
	ASSERT(mg_mqtt_create(p) == NULL);
}

static void conn_cb(struct mg_mqtt *c, const struct mg_mqtt_connect_info *i,
                    void *ud)
{
	(void)c;
	(void)i;
	(void)ud;
}

TEST(handler_registration_checks_its_arguments)
{
	struct mg_mqtt *c = mg_mqtt_create(NULL);
	ASSERT(c != NULL);
	ASSERT_EQ(mg_mqtt_on_topic(c, "a/b", NULL, NULL), MG_MQTT_ERR_INVALID);
	ASSERT_EQ(mg_mqtt_on_topic(c, NULL, msg_cb, NULL), MG_MQTT_ERR_INVALID);
	ASSERT_EQ(mg_mqtt_on_topic(NULL, "a", msg_cb, NULL), MG_MQTT_ERR_INVALID);
	const char *badf[] = {"a/#/b", "a+", "", "$share/g", "$share//a", "#a",
	                      NULL};
	for (size_t i = 0; badf[i] != NULL; i++)
		ASSERT_EQ(mg_mqtt_on_topic(c, badf[i], msg_cb, NULL),
		          MG_MQTT_ERR_FILTER);
	ASSERT_EQ(mg_mqtt_on_topic(c, "a/+/b", msg_cb, NULL), 0);
	ASSERT_EQ(mg_mqtt_on_topic(c, "$share/g/a/#", msg_cb, NULL), 0);
	ASSERT_EQ(mg_mqtt_on_topic(c, "#", msg_cb, NULL), 0);
	ASSERT_EQ(mg_mqtt_on_message(c, NULL, NULL), MG_MQTT_ERR_INVALID);
	ASSERT_EQ(mg_mqtt_on_connect(c, NULL, NULL), MG_MQTT_ERR_INVALID);
	ASSERT_EQ(mg_mqtt_on_disconnect(c, NULL, NULL), MG_MQTT_ERR_INVALID);
	ASSERT_EQ(mg_mqtt_on_publish(c, NULL, NULL), MG_MQTT_ERR_INVALID);
	ASSERT_EQ(mg_mqtt_on_subscribe(c, NULL, NULL), MG_MQTT_ERR_INVALID);
	ASSERT_EQ(mg_mqtt_on_unsubscribe(c, NULL, NULL), MG_MQTT_ERR_INVALID);
	ASSERT_EQ(mg_mqtt_on_log(c, NULL, NULL), MG_MQTT_ERR_INVALID);
	ASSERT_EQ(mg_mqtt_on_message(c, msg_cb, NULL), 0);
	ASSERT_EQ(mg_mqtt_on_message(c, msg_cb, NULL), 0); /* replaces */
	ASSERT_EQ(mg_mqtt_on_connect(c, conn_cb, NULL), 0);
	ASSERT_EQ(mg_mqtt_on_connect(NULL, conn_cb, NULL), MG_MQTT_ERR_INVALID);
	ASSERT_EQ(mg_mqtt_stop(c), 0);
}

TEST(operations_before_start_return_not_started)
{
	struct mg_mqtt *c = mg_mqtt_create("nostart");
	struct mg_mqtt_props props = {0};
	ASSERT(c != NULL);
	ASSERT_EQ(mg_mqtt_subscribe(c, "a/#", 1), MG_MQTT_ERR_NOT_STARTED);
	ASSERT_EQ(mg_mqtt_unsubscribe(c, "a/#"), MG_MQTT_ERR_NOT_STARTED);
	ASSERT_EQ(mg_mqtt_unsubscribe_all(c), MG_MQTT_ERR_NOT_STARTED);
	ASSERT_EQ(mg_mqtt_publish(c, "a", "x", 1, 0, 0), MG_MQTT_ERR_NOT_STARTED);
	ASSERT_EQ(mg_mqtt_publish_props(c, "a", "x", 1, 1, 0, &props),
	          MG_MQTT_ERR_NOT_STARTED);
	ASSERT_EQ(mg_mqtt_is_connected(c), 0);
	ASSERT_EQ(mg_mqtt_is_connected(NULL), 0);
	ASSERT_EQ(mg_mqtt_subscribe(NULL, "a", 0), MG_MQTT_ERR_INVALID);
	ASSERT_EQ(mg_mqtt_publish(NULL, "a", "x", 1, 0, 0), MG_MQTT_ERR_INVALID);
	ASSERT_EQ(mg_mqtt_start(NULL, NULL, NULL, NULL, 0), MG_MQTT_ERR_INVALID);
	ASSERT(mg_mqtt_get(NULL, NULL) == NULL);
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	ASSERT_EQ(mg_mqtt_stop(NULL), 0);
}
