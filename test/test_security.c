/*
 * Bad input and security, end to end against real mosquitto brokers:
 *
 *  - topics, filters and MQTT 5 properties that are not MQTT (NUL, invalid
 *    UTF-8, misplaced wildcards, over 65535 bytes) through the C API and
 *    through every bridge route (HTTP JSON and raw publish, WebSocket, SSE):
 *    each refused with its error, nothing of them reaches the broker, and
 *    the connection stays usable;
 *  - payloads over the broker's limit: MQTT 5's Maximum Packet Size (from
 *    the CONNACK) refuses them locally; message_size_limit shows as a
 *    PUBACK reason; with 3.1.1 the client must not loop on them;
 *  - secrets (MQTT password, password file, TLS key passphrase, the
 *    bridge's digest password) never appear in a log line, an error text,
 *    the status, the status and metrics routes, nor the example server's
 *    output, on the success paths and on the failure paths;
 *  - MQTT 5 and 3.1.1 session takeover, and a server DISCONNECT (from a
 *    scripted MQTT 5 peer, since Debian's mosquitto 2.0.11 sends none on
 *    takeover): the client reports it and comes back.
 *
 * Tests that document a library bug found here (they fail until it is
 * fixed): websocket_error_replies_are_utf8_even_when_the_topic_is_not,
 * mqtt311_a_message_over_max_packet_size_is_refused_by_the_configured_limit,
 * mqtt5_a_disconnect_0x95_after_a_large_publish_fails_it_not_resends_it,
 * credentials_in_the_broker_url_are_never_echoed_in_errors_or_logs.
 */
#include "http.h"
#include "rec.h"
#include "ws.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define REALM "cwm-sec"

/* ======================================================================
 * Helpers
 * ==================================================================== */

/* n copies of ch, NUL-terminated, malloc()ed. */
static char *repeat(size_t n, char ch)
{
	char *s = malloc(n + 1);
	ASSERT(s != NULL);
	memset(s, ch, n);
	s[n] = '\0';
	return s;
}

/* Publishes 2000 bytes ('x') to topic at qos; the id, > 0 (or the test
 * fails). */
static int publish_big(struct mg_mqtt *c, const char *topic, int qos)
{
	char *big = repeat(2000, 'x');
	int id = mg_mqtt_publish(c, topic, big, 2000, qos, 0);
	free(big);
	ASSERT_GT(id, 0);
	return id;
}

/* 1 when s[0..n) is well-formed UTF-8 (what a browser needs in a
 * WebSocket text frame). */
static int utf8_ok(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s, *e = p + n;
	while (p < e) {
		unsigned c = *p++;
		int more;
		uint32_t cp;
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
		if (e - p < more)
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

/* The on_publish result for id; fails the test if none comes. */
static int pub_result(struct rec *r, int id, int ms)
{
	if (!WAIT_UNTIL(rec_find_pub(r, id) >= 0, ms))
		th_fail(__FILE__, __LINE__, "no on_publish for message %d", id);
	/* Entries are written once, under the lock rec_find_pub() took. */
	int i = rec_find_pub(r, id);
	pthread_mutex_lock(&r->mu);
	int v = r->pub[i].result;
	pthread_mutex_unlock(&r->mu);
	return v;
}

/* A negative MG_MQTT_ERR_* with its own text. */
#define ASSERT_ERR(rc, want)                                                   \
	do {                                                                       \
		int rc_ = (rc);                                                        \
		if (rc_ != (want))                                                     \
			th_fail(__FILE__, __LINE__, "%s: %d (%s), not %s", #rc, rc_,       \
			        mg_mqtt_strerror(rc_), #want);                             \
		ASSERT_NE(strcmp(mg_mqtt_strerror(rc_), "unknown error"), 0);          \
	} while (0)

/* ---- a CivetWeb context with the client of prefix MQTT attached -------- */

struct srv {
	struct mg_context *ctx;
	struct mg_mqtt *c;
	struct rec r;
	int port;
	char errlog[512]; /* CivetWeb's error_log_file */
};

/* cw_extra / mqtt: more name, value pairs (NULL-terminated, may be NULL).
 * Returns mg_mqtt_start()'s result; err receives its sentence. */
static int srv_try(struct srv *s, const char *const *mqtt,
                   const char *const *cw_extra, char *err, size_t errlen)
{
	char port[32];
	const char *cw[32];
	int n = 0;
	static int k;
	char name[64];
	memset(s, 0, sizeof(*s));
	s->port = th_free_port();
	snprintf(port, sizeof(port), "127.0.0.1:%d", s->port);
	snprintf(name, sizeof(name), "civetweb-error-%d.log", ++k);
	th_path(s->errlog, sizeof(s->errlog), name);
	cw[n++] = "listening_ports";
	cw[n++] = port;
	cw[n++] = "num_threads";
	cw[n++] = "16";
	cw[n++] = "authentication_domain";
	cw[n++] = REALM;
	cw[n++] = "error_log_file";
	cw[n++] = s->errlog;
	for (size_t i = 0; cw_extra != NULL && cw_extra[i] != NULL && n < 30; i++)
		cw[n++] = cw_extra[i];
	cw[n] = NULL;
	s->ctx = mg_start(NULL, NULL, cw);
	ASSERT(s->ctx != NULL);
	s->c = rec_client(&s->r, NULL);
	return mg_mqtt_start(s->c, s->ctx, (const char **)mqtt, err, errlen);
}

static void srv_start(struct srv *s, const char *const *mqtt)
{
	char err[1024];
	int rc = srv_try(s, mqtt, NULL, err, sizeof(err));
	if (rc != 0)
		th_fail(__FILE__, __LINE__, "mg_mqtt_start: %d %s", rc, err);
}

/* The web server first, then the client (the documented order). With a
 * label, the client's log (complete once stop returned) goes to the
 * corpus of section 4. */
struct corpus;
static void corpus_add(struct corpus *k, const char *label, const char *text);
static void srv_stop_to(struct srv *s, struct corpus *k, const char *label)
{
	mg_stop(s->ctx);
	ASSERT_EQ(mg_mqtt_stop(s->c), 0);
	if (k != NULL)
		corpus_add(k, label, s->r.log);
	rec_free(&s->r);
}
#define srv_stop(s) srv_stop_to(s, NULL, NULL)

/* ---- HTTP with curl ------------------------------------------------------ */

/* The options of a bridge on /mqtt that lets browsers publish to pub/#. */
#define PUB_BRIDGE(url)                                                        \
	"MQTT_BROKER_URL", url, "MQTT_BRIDGE_PATH", "/mqtt",                       \
	    "MQTT_BRIDGE_PUBLISH_ALLOW", "pub/#"

#define EXPECT_HTTP_ERROR(port, method, path, data, status)                    \
	th_expect_http_error(port, method, path, data, NULL, status, 0, __FILE__,  \
	                     __LINE__)

#define EXPECT_PUBLISHED(port, path, data, extra)                              \
	th_expect_published(port, path, data, extra, __FILE__, __LINE__)

/* ---- a raw WebSocket client (any bytes in a text frame) ----------------- */

/* A masked text frame of n bytes, as a browser would send it (a browser
 * never sends invalid UTF-8; a script over a raw socket may). */
static void raw_ws_send(struct th_raw *r, const char *text, size_t n)
{
	th_ws_send(r, 1, MG_WEBSOCKET_OPCODE_TEXT, text, n);
}


/* Sends json (n bytes) and returns the reply to it: the next text frame,
 * which must be valid UTF-8 and valid JSON. */
static cJSON *ws_call_(struct th_raw *r, const char *json, size_t n, int strict,
                       int line)
{
	char *f;
	size_t fl;
	int op;
	raw_ws_send(r, json, n);
	/* Messages of the client's subscriptions may come first: kept aside. */
	while ((op = th_ws_frame(r, &f, &fl, 10000)) == 1 &&
	       strstr(f, "\"op\":\"message\"") != NULL) {
		size_t o = strlen(r->seen);
		snprintf(r->seen + o, sizeof(r->seen) - o, "%s\n", f);
		free(f);
	}
	if (op != 1)
		th_fail(__FILE__, line, "no text frame answers %.200s (op %d)", json,
		        op);
	if (strict && !utf8_ok(f, fl))
		th_fail(__FILE__, line,
		        "the reply to %.200s is not UTF-8: a browser would close "
		        "the WebSocket: %.300s",
		        json, f);
	cJSON *o = cJSON_Parse(f);
	if (o == NULL)
		th_fail(__FILE__, line, "the reply is not JSON: %.300s", f);
	free(f);
	return o;
}
#define ws_call(r, json, n, line) ws_call_(r, json, n, 1, line)

/* Topics and filters in the tests below that are not UTF-8 (the replies
 * echo them; see websocket_error_replies_are_utf8_even_when_the_topic_is_not). */
static int has_bad_utf8(const char *json, size_t n)
{
	return !utf8_ok(json, n);
}

static double jnum(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static int str_is(const cJSON *o, const char *key, const char *want)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsString(v) && strcmp(v->valuestring, want) == 0;
}

/* The reply is {"op":"error","status":status (or alt),"error":"..."}. */
static int ws_strict = 1; /* 0: tolerate a non-UTF-8 echo of a non-UTF-8 op */

static void ws_expect_error(struct th_raw *r, const char *json, size_t n,
                            int status, int alt, int line)
{
	cJSON *o = ws_call_(r, json, n, ws_strict || !has_bad_utf8(json, n), line);
	const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
	int st = (int)jnum(o, "status");
	if (!str_is(o, "op", "error") || (st != status && st != alt) ||
	    !cJSON_IsString(e) || e->valuestring[0] == '\0') {
		char *t = cJSON_PrintUnformatted(o);
		th_fail(__FILE__, line, "%.200s: not a %d error: %.300s", json, status,
		        t);
	}
	cJSON_Delete(o);
}
#define WS_ERROR(r, json, status)                                              \
	ws_expect_error(r, json, strlen(json), status, 0, __LINE__)

static int ws_expect_ack(struct th_raw *r, const char *json, int line)
{
	cJSON *o = ws_call(r, json, strlen(json), line);
	if (!str_is(o, "op", "ack")) {
		char *t = cJSON_PrintUnformatted(o);
		th_fail(__FILE__, line, "%s: not acknowledged: %s", json, t);
	}
	int mid = (int)jnum(o, "message_id");
	cJSON_Delete(o);
	return mid;
}
#define WS_ACK(r, json) ws_expect_ack(r, json, __LINE__)

static int nsubs(struct mg_mqtt *c)
{
	struct mg_mqtt_subscription *v = NULL;
	int n = mg_mqtt_subscriptions(c, &v);
	free(v);
	return n;
}

/* ======================================================================
 * 1. Bad topics, filters and properties through the C API
 * ==================================================================== */

static void noop_handler(struct mg_mqtt *c, const struct mg_mqtt_message *m,
                         void *ud)
{
	(void)c;
	(void)m;
	(void)ud;
}

/* Topic names that are not MQTT topic names, with the error each gets. */
struct bad_topic {
	const char *topic;
	int err;
};

TEST_T(c_api_refuses_bad_topics_filters_and_properties_and_sends_nothing, 60)
{
	struct th_broker b;
	struct th_sub sub;
	struct rec r;
	struct mg_mqtt_reply rep;
	char *longt = repeat(65536, 't'); /* one byte over MQTT's limit */
	char *longf = repeat(65536, 'f');
	th_broker_sub_start(&b, NULL, &sub, "#", 0, "-V mqttv5");
	struct mg_mqtt *c = rec_client(&r, NULL);

	/* Handlers: a bad filter is refused before start. */
	static const char *const bad_filters[] = {
	    "bad/#/x",     "bad/a#",       "bad/+x",         "bad/x+",
	    "bad/\xff",    "bad/\xc0\xaf", "bad/\xed\xa0\x80", "bad/\xf4\x90\x80\x80",
	    "bad/\x01",    "",             "$share//x",      "$share/g+/x",
	    "$share/g/",
	};
	const size_t nbf = sizeof(bad_filters) / sizeof(bad_filters[0]);
	for (size_t i = 0; i < nbf; i++)
		ASSERT_ERR(mg_mqtt_on_topic(c, bad_filters[i], noop_handler, NULL),
		           MG_MQTT_ERR_FILTER);
	ASSERT_ERR(mg_mqtt_on_topic(c, longf, noop_handler, NULL),
	           MG_MQTT_ERR_FILTER);
	ASSERT_ERR(mg_mqtt_on_topic(c, NULL, noop_handler, NULL),
	           MG_MQTT_ERR_INVALID);
	rec_start(c, OPTS("MQTT_BROKER_URL", b.url, "MQTT_PROTOCOL_VERSION", "5",
	                  "MQTT_CLIENT_ID", "sec-api"));

	/* Publish: wildcards anywhere, invalid UTF-8 (a stray byte, an overlong
	 * form, a surrogate, beyond U+10FFFF), a control character, empty,
	 * 65536 bytes. */
	const struct bad_topic bad[] = {
	    {"bad/+", MG_MQTT_ERR_TOPIC},
	    {"bad/#", MG_MQTT_ERR_TOPIC},
	    {"+", MG_MQTT_ERR_TOPIC},
	    {"#", MG_MQTT_ERR_TOPIC},
	    {"bad/a+b", MG_MQTT_ERR_TOPIC},
	    {"bad/a#b", MG_MQTT_ERR_TOPIC},
	    {"bad/\xff", MG_MQTT_ERR_TOPIC},
	    {"bad/\xc0\xaf", MG_MQTT_ERR_TOPIC},
	    {"bad/\xe0\x80\xaf", MG_MQTT_ERR_TOPIC},
	    {"bad/\xed\xa0\x80", MG_MQTT_ERR_TOPIC},
	    {"bad/\xf4\x90\x80\x80", MG_MQTT_ERR_TOPIC},
	    {"bad/\xc3", MG_MQTT_ERR_TOPIC},
	    {"bad/\x01", MG_MQTT_ERR_TOPIC},
	    {"bad/\x7f", MG_MQTT_ERR_TOPIC},
	    {"", MG_MQTT_ERR_TOPIC},
	    {longt, MG_MQTT_ERR_TOO_LARGE},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		for (int qos = 0; qos <= 2; qos++)
			ASSERT_ERR(mg_mqtt_publish(c, bad[i].topic, "bad", 3, qos, 0),
			           bad[i].err);
	ASSERT_ERR(mg_mqtt_publish(c, NULL, "bad", 3, 1, 0), MG_MQTT_ERR_INVALID);
	ASSERT_ERR(mg_mqtt_publish(c, "bad/nullpayload", NULL, 3, 1, 0),
	           MG_MQTT_ERR_INVALID);
	ASSERT_ERR(mg_mqtt_publish(c, "bad/qos", "bad", 3, 3, 0), MG_MQTT_ERR_QOS);
	ASSERT_ERR(mg_mqtt_publish(c, "bad/qos", "bad", 3, -1, 0),
	           MG_MQTT_ERR_QOS);

	/* MQTT 5 properties: strings must be UTF-8, the response topic a
	 * topic name. */
	struct mg_mqtt_user_property badname = {"k\xff", "v"};
	struct mg_mqtt_user_property badvalue = {"k", "v\xc3"};
	struct mg_mqtt_props p;
	memset(&p, 0, sizeof(p));
	p.user = &badname;
	p.user_count = 1;
	ASSERT_ERR(mg_mqtt_publish_props(c, "bad/props", "bad", 3, 1, 0, &p),
	           MG_MQTT_ERR_INVALID);
	p.user = &badvalue;
	ASSERT_ERR(mg_mqtt_publish_props(c, "bad/props", "bad", 3, 1, 0, &p),
	           MG_MQTT_ERR_INVALID);
	memset(&p, 0, sizeof(p));
	p.content_type = "text/\xff";
	ASSERT_ERR(mg_mqtt_publish_props(c, "bad/props", "bad", 3, 1, 0, &p),
	           MG_MQTT_ERR_INVALID);
	static const char *const bad_rt[] = {"r/+", "r/#", "r/\xff", ""};
	for (size_t i = 0; i < sizeof(bad_rt) / sizeof(bad_rt[0]); i++) {
		memset(&p, 0, sizeof(p));
		p.response_topic = bad_rt[i];
		ASSERT_ERR(mg_mqtt_publish_props(c, "bad/props", "bad", 3, 1, 0, &p),
		           MG_MQTT_ERR_TOPIC);
	}
	memset(&p, 0, sizeof(p));
	p.response_topic = longt;
	ASSERT(mg_mqtt_publish_props(c, "bad/props", "bad", 3, 1, 0, &p) < 0);

	/* Request: the same topic rules, *reply left empty. */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (bad[i].err != MG_MQTT_ERR_TOPIC)
			continue;
		memset(&rep, 0x55, sizeof(rep));
		ASSERT_ERR(mg_mqtt_request(c, bad[i].topic, "bad", 3, 1, 2000, &rep),
		           MG_MQTT_ERR_TOPIC);
		ASSERT(rep.payload == NULL && rep.payload_len == 0 &&
		       rep.content_type == NULL);
	}

	/* Subscribe and unsubscribe: the same filters, and QoS out of range. */
	for (size_t i = 0; i < nbf; i++) {
		ASSERT_ERR(mg_mqtt_subscribe(c, bad_filters[i], 1), MG_MQTT_ERR_FILTER);
		ASSERT_ERR(mg_mqtt_unsubscribe(c, bad_filters[i]), MG_MQTT_ERR_FILTER);
	}
	ASSERT_ERR(mg_mqtt_subscribe(c, longf, 0), MG_MQTT_ERR_FILTER);
	ASSERT_ERR(mg_mqtt_unsubscribe(c, longf), MG_MQTT_ERR_FILTER);
	ASSERT_ERR(mg_mqtt_subscribe(c, NULL, 0), MG_MQTT_ERR_INVALID);
	ASSERT_ERR(mg_mqtt_unsubscribe(c, NULL), MG_MQTT_ERR_INVALID);
	ASSERT_ERR(mg_mqtt_subscribe(c, "bad/qos", 3), MG_MQTT_ERR_QOS);
	ASSERT_ERR(mg_mqtt_subscribe(c, "bad/qos", -1), MG_MQTT_ERR_QOS);
	ASSERT_ERR(mg_mqtt_unsubscribe(c, "bad/never"), MG_MQTT_ERR_NOT_FOUND);
	ASSERT_EQ(nsubs(c), 0);

	/* The connection is still fine: a good publish and a good subscribe
	 * work, and they are all the broker ever saw. */
	int good = mg_mqtt_publish(c, "good/after", "ok", 2, 1, 0);
	ASSERT_GT(good, 0);
	ASSERT_EQ(pub_result(&r, good, 10000), 0);
	ASSERT(WAIT_UNTIL(th_count_lines(sub.out, "good/after ok") == 1, 10000));
	int sid = mg_mqtt_subscribe(c, "good/#", 1);
	ASSERT_GT(sid, 0);
	ASSERT(WAIT_UNTIL(rec_subs_settled(c, 1), 10000));
	REC_PUB_ARRIVES(&b, &r, "good/back", "yes", 10000);
	char *got;
	ASSERT_EQ(th_sub_lines(&sub, &got), 2);
	ASSERT_NOT_CONTAINS(got, "bad");
	free(got);
	ASSERT_EQ(th_count_lines(b.log, "Received SUBSCRIBE from sec-api"), 1);
	ASSERT_EQ(th_count_lines(b.log, "UNSUBSCRIBE"), 0);
	ASSERT_EQ(th_count_lines(b.log, "bad/"), 0);
	ASSERT_EQ(REC(&r, npub), 1); /* no acknowledgement for a refused call */
	ASSERT_EQ(REC(&r, connects), 1);
	ASSERT_EQ(REC(&r, disconnects), 0);
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	th_sub_stop(&sub);
	rec_free(&r);
	free(longt);
	free(longf);
}

/* ======================================================================
 * 2. Bad topics and filters through the bridge
 * ==================================================================== */

/* JSON publish bodies whose topic is not a topic name: a NUL (as the JSON
 * escape), invalid UTF-8 (raw bytes, and an escaped lone surrogate), a
 * control character, wildcards inside a level. */
static const char *const bad_json_topics[] = {
    "{\"topic\":\"pub/x\\u0000y\",\"payload\":\"nul\"}",
    "{\"topic\":\"pub/\\u0000\",\"payload\":\"nul\"}",
    "{\"topic\":\"pub/x\xff\",\"payload\":\"ff\"}",
    "{\"topic\":\"pub/x\xc0\xaf\",\"payload\":\"overlong\"}",
    "{\"topic\":\"pub/x\xed\xa0\x80\",\"payload\":\"surrogate\"}",
    "{\"topic\":\"pub/x\\ud800\",\"payload\":\"lone\"}",
    "{\"topic\":\"pub/x\\u0001\",\"payload\":\"ctl\"}",
    "{\"topic\":\"pub/a+b\",\"payload\":\"plus\"}",
    "{\"topic\":\"pub/a#b\",\"payload\":\"hash\"}",
};
#define N_BAD_JSON (sizeof(bad_json_topics) / sizeof(bad_json_topics[0]))

/* A broker, a subscriber to all of it, and a server whose bridge lets
 * browsers publish to pub/# (bodies up to 200000 bytes), and subscribe to
 * subscribe_allow (NULL: no subscribing). */
struct bridged {
	struct th_broker b;
	struct th_sub sub;
	struct srv s;
};

static void bridged_start(struct bridged *f, const char *subscribe_allow)
{
	th_broker_sub_start(&f->b, NULL, &f->sub, "#", 0, NULL);
	if (subscribe_allow != NULL)
		srv_start(&f->s, OPTS(PUB_BRIDGE(f->b.url), "MQTT_BRIDGE_MAX_BODY",
		                      "200000", "MQTT_BRIDGE_SUBSCRIBE_ALLOW",
		                      subscribe_allow));
	else
		srv_start(&f->s,
		          OPTS(PUB_BRIDGE(f->b.url), "MQTT_BRIDGE_MAX_BODY", "200000"));
}

/* Checks that the client kept its connection throughout; stops them. */
static void bridged_stop(struct bridged *f)
{
	ASSERT_EQ(REC(&f->s.r, disconnects), 0);
	th_sub_stop(&f->sub);
	srv_stop(&f->s);
}

TEST_T(http_json_and_raw_publish_refuse_nul_bad_utf8_wildcards_and_long_topics,
       60)
{
	struct bridged f;
	bridged_start(&f, NULL);

	for (size_t i = 0; i < N_BAD_JSON; i++)
		EXPECT_HTTP_ERROR(f.s.port, "POST", "/mqtt/publish", bad_json_topics[i],
		                  400);

	/* The raw route: percent-encoded invalid UTF-8, a control character,
	 * wildcards written as they are. */
	static const char *const paths[] = {
	    "/mqtt/publish/pub/x%FF",         "/mqtt/publish/pub/x%C0%AF",
	    "/mqtt/publish/pub/x%ED%A0%80",   "/mqtt/publish/pub/x%F4%90%80%80",
	    "/mqtt/publish/pub/x%01",         "/mqtt/publish/pub/+",
	    "/mqtt/publish/pub/a+b",          "/mqtt/publish/pub/a%2Bb",
	    "/mqtt/publish/pub/x%00",         "/mqtt/publish/pub/%00/x",
	};
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		EXPECT_HTTP_ERROR(f.s.port, "POST", paths[i], "raw", 400);

	/* Over 65535 bytes: the JSON route answers 400 or 413 with a JSON
	 * error; the raw route's request line is over CivetWeb's own limit
	 * (max_request_size), which CivetWeb refuses before the bridge sees
	 * it. Neither publishes. */
	char *longt = repeat(65537, 'L');
	memcpy(longt, "pub/", 4);
	size_t bl = strlen(longt) + 64;
	char *body = malloc(bl);
	ASSERT(body != NULL);
	snprintf(body, bl, "{\"topic\":\"%s\",\"payload\":\"long\"}", longt);
	th_expect_http_error(f.s.port, "POST", "/mqtt/publish", body, NULL, 400,
	                     413, __FILE__, __LINE__);
	char *path = malloc(bl);
	ASSERT(path != NULL);
	snprintf(path, bl, "/mqtt/publish/%s", longt);
	struct th_resp r;
	th_http(f.s.port, "POST", path, "long", NULL, &r);
	ASSERT_GE(r.status, 400);
	ASSERT_LT(r.status, 500);
	th_resp_free(&r);
	free(path);
	free(body);
	free(longt);

	/* Still usable; only the probe reached the broker. */
	EXPECT_PUBLISHED(f.s.port, "/mqtt/publish/pub/probe", "p", NULL);
	EXPECT_PUBLISHED(f.s.port, "/mqtt/publish",
	                 "{\"topic\":\"pub/probe2\",\"payload\":\"q\"}", NULL);
	ASSERT(WAIT_UNTIL(th_count_lines(f.sub.out, "pub/probe2 q") == 1, 10000));
	char *got;
	ASSERT_EQ(th_sub_lines(&f.sub, &got), 2);
	ASSERT_CONTAINS(got, "pub/probe p");
	free(got);
	bridged_stop(&f);
}

/* A JSON string with \u0000 in a payload: cJSON's C string ends there. The
 * payload must be sent whole or refused, never cut short. */
TEST_T(a_nul_escape_in_a_json_payload_is_not_cut_short, 60)
{
	struct th_broker b;
	struct th_sub sub;
	struct srv s;
	th_broker_sub_start(&b, NULL, &sub, "#", 0, NULL);
	srv_start(&s, OPTS(PUB_BRIDGE(b.url)));
	struct th_resp r;
	th_http(s.port, "POST", "/mqtt/publish",
	     "{\"topic\":\"pub/nulpay\",\"payload\":\"head\\u0000tail\"}", NULL,
	     &r);
	EXPECT_PUBLISHED(s.port, "/mqtt/publish/pub/probe", "p", NULL);
	ASSERT(WAIT_UNTIL(th_count_lines(sub.out, "pub/probe p") == 1, 10000));
	/* mosquitto_sub prints the payload up to the NUL: a payload that came
	 * whole shows as "head" too, so look at the bytes the broker got. */
	char *got;
	th_sub_lines(&sub, &got);
	if (r.status == 200) {
		ASSERT_CONTAINS(got, "pub/nulpay");
		ASSERT_EQ(th_count_lines(b.log, "'pub/nulpay', ... (9 bytes)"), 1);
	} else {
		ASSERT_EQ(r.status, 400);
		ASSERT_NOT_CONTAINS(got, "pub/nulpay");
	}
	free(got);
	th_resp_free(&r);
	th_sub_stop(&sub);
	srv_stop(&s);
}

TEST_T(websocket_and_sse_refuse_nul_bad_utf8_and_bad_filters_and_stay_usable,
       60)
{
	struct bridged f;
	bridged_start(&f, "pub/#");
	struct th_raw *ws = th_ws_open(f.s.port);
	/* The echo of a topic that is not UTF-8 has its own test. */
	ws_strict = 0;

	/* Publish ops with the bad topics of the HTTP test: each an error whose
	 * frame is still UTF-8 JSON (the topic is echoed). */
	char op[512];
	for (size_t i = 0; i < N_BAD_JSON; i++) {
		snprintf(op, sizeof(op), "{\"op\":\"publish\",\"id\":%zu,%s", i,
		         bad_json_topics[i] + 1);
		ws_expect_error(ws, op, strlen(op), 400, 400, __LINE__);
	}
	/* Over 65535 bytes. */
	char *longt = repeat(65537, 'L');
	memcpy(longt, "pub/", 4);
	size_t bl = strlen(longt) + 128;
	char *big = malloc(bl);
	ASSERT(big != NULL);
	snprintf(big, bl, "{\"op\":\"publish\",\"topic\":\"%s\",\"payload\":\"x\"}",
	         longt);
	ws_expect_error(ws, big, strlen(big), 400, 413, __LINE__);
	snprintf(big, bl, "{\"op\":\"subscribe\",\"topic\":\"%s\"}", longt);
	ws_expect_error(ws, big, strlen(big), 400, 413, __LINE__);
	free(big);
	free(longt);

	/* Subscribe and unsubscribe ops with filters that are not filters. */
	static const char *const bad_subs[] = {
	    "{\"op\":\"subscribe\",\"topic\":\"pub/\\u0000\"}",
	    "{\"op\":\"subscribe\",\"topic\":\"pub/x\\u0000/#\"}",
	    "{\"op\":\"subscribe\",\"topic\":\"pub/\xff\"}",
	    "{\"op\":\"subscribe\",\"topic\":\"pub/\xc0\xaf\"}",
	    "{\"op\":\"subscribe\",\"topic\":\"pub/\\ud800\"}",
	    "{\"op\":\"subscribe\",\"topic\":\"pub/#/x\"}",
	    "{\"op\":\"subscribe\",\"topic\":\"pub/a+\"}",
	    "{\"op\":\"unsubscribe\",\"topic\":\"pub/\\u0000\"}",
	    "{\"op\":\"unsubscribe\",\"topic\":\"pub/\xff\"}",
	    "{\"op\":\"unsubscribe\",\"topic\":\"pub/#/x\"}",
	};
	for (size_t i = 0; i < sizeof(bad_subs) / sizeof(bad_subs[0]); i++)
		WS_ERROR(ws, bad_subs[i], 400);
	/* A JSON text that is not UTF-8 outside any topic, too. */
	static const char junk[] = "{\"op\":\"publish\",\"topic\":\"pub/j\","
	                           "\"payload\":\"\xff\xfe\"}";
	cJSON *o = ws_call_(ws, junk, sizeof(junk) - 1, 0, __LINE__);
	cJSON_Delete(o);
	ASSERT_EQ(nsubs(f.s.c), 0);

	/* SSE: percent-encoded NUL, invalid UTF-8, bad wildcards. */
	static const char *const bad_sse[] = {
	    "/mqtt/events?topic=pub/%00",      "/mqtt/events?topic=pub/x%00/%23",
	    "/mqtt/events?topic=pub/%FF",      "/mqtt/events?topic=pub/%C0%AF",
	    "/mqtt/events?topic=pub/%ED%A0%80", "/mqtt/events?topic=pub/%23/x",
	    "/mqtt/events?topic=pub/a%2B",     "/mqtt/events?topic=pub/%01",
	    "/mqtt/events?topic=pub/ok&topic=pub/%FF",
	};
	for (size_t i = 0; i < sizeof(bad_sse) / sizeof(bad_sse[0]); i++)
		EXPECT_HTTP_ERROR(f.s.port, "GET", bad_sse[i], NULL, 400);
	ASSERT_EQ(nsubs(f.s.c), 0);

	/* The WebSocket still works both ways; the broker saw only this. */
	WS_ACK(ws, "{\"op\":\"subscribe\",\"topic\":\"pub/#\",\"id\":100}");
	ASSERT(WAIT_UNTIL(rec_subs_settled(f.s.c, 1), 10000));
	ASSERT_GT(WS_ACK(ws, "{\"op\":\"publish\",\"topic\":\"pub/good\","
	                     "\"payload\":\"fine\",\"qos\":1,\"id\":101}"),
	          0);
	int64_t until = th_now_ms() + 10000 * th_timeout_scale();
	int seen = strstr(ws->seen, "\"pub/good\"") != NULL &&
	           strstr(ws->seen, "\"fine\"") != NULL;
	while (!seen && th_now_ms() < until) {
		char *f;
		size_t fl;
		if (th_ws_frame(ws, &f, &fl, 1000) == 1) {
			seen = strstr(f, "\"pub/good\"") != NULL &&
			       strstr(f, "\"fine\"") != NULL;
			free(f);
		}
	}
	ASSERT(seen);
	ASSERT(WAIT_UNTIL(th_count_lines(f.sub.out, "pub/good fine") == 1, 10000));
	char *got;
	int n = th_sub_lines(&f.sub, &got);
	/* The junk-payload publish may have gone out (as bytes): nothing else. */
	ASSERT_LE(n, 2);
	ASSERT_NOT_CONTAINS(got, "nul");
	ASSERT_NOT_CONTAINS(got, "pub/x");
	ASSERT_NOT_CONTAINS(got, "pub/a");
	free(got);
	th_raw_close(ws);
	bridged_stop(&f);
}

/* The reply to an op echoes its "topic". When that topic is not UTF-8 the
 * reply must still be: a text frame that is not UTF-8 makes a browser fail
 * the whole WebSocket (RFC 6455 8.1), and every other subscription of the
 * page with it. */
TEST_T(websocket_error_replies_are_utf8_even_when_the_topic_is_not, 30)
{
	struct th_broker b;
	struct srv s;
	th_broker_start(&b, NULL);
	srv_start(&s, OPTS(PUB_BRIDGE(b.url),
	                   "MQTT_BRIDGE_SUBSCRIBE_ALLOW", "pub/#"));
	struct th_raw *ws = th_ws_open(s.port);
	ws_strict = 1;
	WS_ERROR(ws, "{\"op\":\"publish\",\"topic\":\"pub/\xff\",\"payload\":\"x\"}",
	         400);
	WS_ERROR(ws, "{\"op\":\"subscribe\",\"topic\":\"pub/\xc0\xaf\"}", 400);
	WS_ERROR(ws, "{\"op\":\"unsubscribe\",\"topic\":\"pub/\xed\xa0\x80\"}",
	         400);
	/* Still open and usable. */
	WS_ACK(ws, "{\"op\":\"subscribe\",\"topic\":\"pub/ok\"}");
	th_raw_close(ws);
	srv_stop(&s);
}

/* ======================================================================
 * 3. Payloads over the broker's limit
 * ==================================================================== */

#define MPS_BROKER                                                             \
	"listener {PORT} 127.0.0.1\nallow_anonymous true\nmax_packet_size 1000\n"
#define MSL_BROKER                                                             \
	"listener {PORT} 127.0.0.1\nallow_anonymous true\n"                        \
	"message_size_limit 1000\n"

/* MQTT 5: mosquitto announces max_packet_size in its CONNACK (Maximum
 * Packet Size); the client refuses what would not fit, locally, with
 * MG_MQTT_ERR_TOO_LARGE, and the bridge answers 413. Nothing is sent, the
 * connection stays up. */
TEST_T(mqtt5_maximum_packet_size_refuses_larger_publishes_locally, 60)
{
	struct th_broker b;
	struct th_sub sub;
	struct srv s;
	th_broker_sub_start(&b, MPS_BROKER, &sub, "#", 0, "-V mqttv5");
	srv_start(&s, OPTS("MQTT_BROKER_URL", b.url, "MQTT_PROTOCOL_VERSION", "5",
	                   "MQTT_BRIDGE_PATH", "/mqtt",
	                   "MQTT_BRIDGE_PUBLISH_ALLOW", "big/#"));
	char *big = repeat(2000, 'x');
	char *fits = repeat(900, 'y');
	for (int qos = 0; qos <= 2; qos++)
		ASSERT_ERR(mg_mqtt_publish(s.c, "big/c", big, 2000, qos, 0),
		           MG_MQTT_ERR_TOO_LARGE);
	/* A long topic with a short payload counts the same. */
	char *tl = repeat(1500, 'T');
	memcpy(tl, "big/", 4);
	ASSERT_ERR(mg_mqtt_publish(s.c, tl, "x", 1, 1, 0), MG_MQTT_ERR_TOO_LARGE);
	free(tl);
	/* Properties count too. */
	struct mg_mqtt_user_property up = {"k", fits};
	struct mg_mqtt_props p;
	memset(&p, 0, sizeof(p));
	p.user = &up;
	p.user_count = 1;
	ASSERT_ERR(mg_mqtt_publish_props(s.c, "big/p", fits, 900, 1, 0, &p),
	           MG_MQTT_ERR_TOO_LARGE);

	/* Over HTTP and WebSocket: 413 and the library's text. */
	struct th_resp r;
	th_http(s.port, "POST", "/mqtt/publish/big/raw", big, NULL, &r);
	ASSERT_EQ(r.status, 413);
	ASSERT(r.json != NULL);
	ASSERT(str_is(r.json, "error", mg_mqtt_strerror(MG_MQTT_ERR_TOO_LARGE)));
	th_resp_free(&r);
	size_t jl = 2100;
	char *json = malloc(jl);
	ASSERT(json != NULL);
	snprintf(json, jl, "{\"topic\":\"big/json\",\"payload\":\"%s\",\"qos\":1}",
	         big);
	th_http(s.port, "POST", "/mqtt/publish", json, NULL, &r);
	ASSERT_EQ(r.status, 413);
	ASSERT(str_is(r.json, "error", mg_mqtt_strerror(MG_MQTT_ERR_TOO_LARGE)));
	th_resp_free(&r);
	struct th_raw *ws = th_ws_open(s.port);
	snprintf(json, jl,
	         "{\"op\":\"publish\",\"topic\":\"big/ws\",\"payload\":\"%s\"}", big);
	ws_expect_error(ws, json, strlen(json), 413, 413, __LINE__);
	free(json);
	th_raw_close(ws);

	/* What fits goes; the connection never dropped. */
	int id = mg_mqtt_publish(s.c, "big/fits", fits, 900, 1, 0);
	ASSERT_GT(id, 0);
	ASSERT_EQ(pub_result(&s.r, id, 10000), 0);
	EXPECT_PUBLISHED(s.port, "/mqtt/publish/big/after", "ok", NULL);
	ASSERT(WAIT_UNTIL(th_count_lines(sub.out, "big/after ok") == 1, 10000));
	ASSERT_EQ(th_sub_lines(&sub, NULL), 2);
	ASSERT_EQ(th_count_lines(b.log, "oversize"), 0);
	ASSERT_EQ(REC(&s.r, connects), 1);
	ASSERT_EQ(REC(&s.r, disconnects), 0);
	free(big);
	free(fits);
	th_sub_stop(&sub);
	srv_stop(&s);
}

/* A message published while disconnected, before any CONNACK told the
 * limit, that turns out larger than it: failed with MG_MQTT_ERR_TOO_LARGE
 * and logged at connect, never sent (which would make the broker close the
 * connection, and the message go again after every reconnect). */
TEST_T(mqtt5_a_buffered_message_over_the_announced_limit_fails_once, 60)
{
	struct th_broker b;
	struct rec r;
	struct mg_mqtt *c = rec_started_early(&r, &b, MPS_BROKER,
	                                      OPTS("MQTT_PROTOCOL_VERSION", "5"));
	char *big = repeat(2000, 'x');
	int id_big = mg_mqtt_publish(c, "big/buffered", big, 2000, 1, 0);
	int id_small = mg_mqtt_publish(c, "big/small", "small", 5, 1, 0);
	ASSERT_GT(id_big, 0);
	ASSERT_GT(id_small, 0);
	th_broker_restart(&b);
	struct th_sub sub;
	th_sub_start(&sub, &b, "#", 0, "-V mqttv5");
	ASSERT_EQ(pub_result(&r, id_big, 20000), MG_MQTT_ERR_TOO_LARGE);
	ASSERT_EQ(pub_result(&r, id_small, 20000), 0);
	ASSERT(rec_log_has(&r, "maximum packet size"));
	int id3 = mg_mqtt_publish(c, "big/later", "later", 5, 1, 0);
	ASSERT_EQ(pub_result(&r, id3, 10000), 0);
	ASSERT(WAIT_UNTIL(th_count_lines(sub.out, "big/later later") == 1, 10000));
	ASSERT_EQ(th_count_lines(sub.out, "big/buffered"), 0);
	ASSERT_EQ(th_count_lines(b.log, "oversize"), 0);
	ASSERT_EQ(REC(&r, disconnects), 0);
	ASSERT(mg_mqtt_is_connected(c));
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	th_sub_stop(&sub);
	rec_free(&r);
	free(big);
}

/* message_size_limit is not announced: the broker drops the message. With
 * MQTT 5 it says so in the PUBACK / PUBREC (0x95 packet too large), which
 * on_publish reports; QoS 0 has no acknowledgement, and 3.1.1's PUBACK no
 * reason: there the drop is invisible to any client (the broker's
 * choice), and the result is 0 as documented. The connection stays up. */
static void msl_case(const char *proto, int qos, int want)
{
	struct th_broker b;
	struct th_sub sub;
	struct rec r;
	th_broker_sub_start(&b, MSL_BROKER, &sub, "#", 0, "-V mqttv5");
	struct mg_mqtt *c = rec_started(
	    &r, OPTS("MQTT_BROKER_URL", b.url, "MQTT_PROTOCOL_VERSION", proto));
	int id = publish_big(c, "big/msl", qos);
	int id2 = mg_mqtt_publish(c, "big/after", "ok", 2, qos, 0);
	ASSERT_GT(id2, 0);
	int res = pub_result(&r, id, 10000);
	if (res != want)
		th_fail(__FILE__, __LINE__, "MQTT %s QoS %d: on_publish result %d, not %d",
		        proto, qos, res, want);
	ASSERT_EQ(pub_result(&r, id2, 10000), 0);
	ASSERT(WAIT_UNTIL(th_count_lines(sub.out, "big/after ok") == 1, 10000));
	ASSERT_EQ(th_sub_lines(&sub, NULL), 1);
	ASSERT_EQ(REC(&r, disconnects), 0);
	ASSERT(mg_mqtt_is_connected(c));
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	th_sub_stop(&sub);
	th_broker_stop(&b);
	rec_free(&r);
}

TEST_T(message_size_limit_drops_show_as_reason_0x95_with_mqtt5_qos1_and_2, 90)
{
	msl_case("5", 1, 0x95);
	msl_case("5", 2, 0x95);
	msl_case("5", 0, 0);
	msl_case("3.1.1", 1, 0);
	msl_case("3.1.1", 0, 0);
}

/* MQTT 3.1.1 has no way to learn the broker's packet limit: mosquitto
 * closes the connection when a packet is over max_packet_size, without a
 * word. The user who knows the limit says it with MAX_PACKET_SIZE: then
 * the message is refused at once, locally, with MG_MQTT_ERR_TOO_LARGE,
 * nothing reaches the broker, and what follows is delivered. Without it,
 * the message is poison: the broker closes the connection over it each
 * time it is sent; after two such closes in a row, with it the only
 * message in flight, it is failed with MG_MQTT_ERR_POISON and never sent
 * again, and the connection is usable at once (before: sent after every
 * reconnect until the stop). */
TEST_T(mqtt311_a_message_over_max_packet_size_is_refused_by_the_configured_limit,
       90)
{
	struct th_broker b;
	struct th_sub sub;
	struct rec r;
	th_broker_sub_start(&b, MPS_BROKER, &sub, "#", 0, "-V mqttv5");
	struct mg_mqtt *c =
	    rec_started(&r, OPTS("MQTT_BROKER_URL", b.url, "MQTT_PROTOCOL_VERSION",
	                         "3.1.1", "MQTT_MAX_PACKET_SIZE", "1000"));
	char *big = repeat(2000, 'x');
	ASSERT_EQ(mg_mqtt_publish(c, "big/mps", big, 2000, 1, 0),
	          MG_MQTT_ERR_TOO_LARGE);
	int id2 = mg_mqtt_publish(c, "big/after", "ok", 2, 1, 0);
	ASSERT_GT(id2, 0);
	ASSERT_EQ(pub_result(&r, id2, 15000), 0);
	ASSERT(WAIT_UNTIL(th_count_lines(sub.out, "big/after ok") >= 1, 10000));
	ASSERT_EQ(REC(&r, disconnects), 0);
	ASSERT_EQ(th_count_lines(b.log, "oversize"), 0);
	rec_stop(c, &r);

	/* Without the option: not given up while the broker closes. */
	c = rec_client(&r, NULL);
	rec_start(c, OPTS("MQTT_BROKER_URL", b.url, "MQTT_PROTOCOL_VERSION",
	                  "3.1.1", "MQTT_RECONNECT_MIN", "1", "MQTT_RECONNECT_MAX",
	                  "1"));
	int id = mg_mqtt_publish(c, "big/mps", big, 2000, 1, 0);
	ASSERT_GT(id, 0);
	ASSERT_EQ(pub_result(&r, id, 30000), MG_MQTT_ERR_POISON);
	ASSERT_EQ(REC(&r, disconnects), 2);
	ASSERT(WAIT_UNTIL(mg_mqtt_is_connected(c), 10000));
	int id3 = mg_mqtt_publish(c, "big/after2", "ok", 2, 1, 0);
	ASSERT_GT(id3, 0);
	ASSERT_EQ(pub_result(&r, id3, 15000), 0);
	ASSERT(WAIT_UNTIL(th_count_lines(sub.out, "big/after2 ok") >= 1, 10000));
	ASSERT_EQ(REC(&r, disconnects), 2);
	ASSERT(rec_log_has(&r, "not sent again"));
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	th_sub_stop(&sub);
	th_broker_stop(&b);
	rec_free(&r);
	free(big);
}

/* QoS 0 over max_packet_size with 3.1.1: the broker closes the connection
 * once (the message is not kept, so not resent); the client reconnects and
 * the connection is usable again. */
TEST_T(mqtt311_qos0_over_max_packet_size_costs_one_reconnect, 60)
{
	struct th_broker b;
	struct th_sub sub;
	struct rec r;
	th_broker_sub_start(&b, MPS_BROKER, &sub, "#", 0, "-V mqttv5");
	struct mg_mqtt *c = rec_started(
	    &r, OPTS("MQTT_BROKER_URL", b.url, "MQTT_PROTOCOL_VERSION", "3.1.1",
	             "MQTT_RECONNECT_MIN", "1", "MQTT_RECONNECT_MAX", "1"));
	publish_big(c, "big/mps0", 0);
	ASSERT(WAIT_UNTIL(REC(&r, disconnects) == 1, 10000));
	ASSERT(WAIT_UNTIL(REC(&r, connects) == 2, 15000));
	int id2 = mg_mqtt_publish(c, "big/after", "ok", 2, 1, 0);
	ASSERT_EQ(pub_result(&r, id2, 15000), 0);
	ASSERT(WAIT_UNTIL(th_count_lines(sub.out, "big/after ok") == 1, 10000));
	ASSERT_EQ(th_count_lines(sub.out, "big/mps0"), 0);
	ASSERT_EQ(REC(&r, disconnects), 1);
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	ASSERT_EQ(th_count_lines(b.log, "oversize"), 1);
	th_sub_stop(&sub);
	rec_free(&r);
}

/* ======================================================================
 * 4. Secrets
 * ==================================================================== */

#define PW_BROKER "Pw-BrokerSecret-7c1f9e"
#define PW_WRONG "Pw-WrongSecret-3e8a55"
#define PW_FILE "Pw-FileSecret-a19d02"
#define PW_LONG "Pw-LongSecret-0b7d31"
#define PW_URL "Pw-UrlSecret-44c1f0"
#define PP_KEY "Pp-KeySecret-91b3e4"
#define PP_WRONG "Pp-WrongKey-6f20aa"
#define PW_HTTP "Http-Secret-5d2a77"
#define HTTP_USER "web-user"

static const char *const secrets[] = {
    PW_BROKER, PW_WRONG, PW_FILE, PW_LONG, PW_URL, PP_KEY, PP_WRONG, PW_HTTP,
    /* the distinctive parts alone, should a secret be cut or quoted */
    "BrokerSecret", "WrongSecret", "FileSecret", "LongSecret", "UrlSecret",
    "KeySecret", "WrongKey", "Http-Secret",
};

/* Everything a user or an attacker could read, labelled. */
struct corpus {
	char *text;
	size_t len;
	char ha1[40]; /* the digest file's hash: a secret too */
};

static void corpus_add(struct corpus *k, const char *label, const char *text)
{
	size_t n = strlen(label) + (text != NULL ? strlen(text) : 0) + 8;
	char *p = realloc(k->text, k->len + n + 1);
	ASSERT(p != NULL);
	k->text = p;
	k->len += (size_t)snprintf(p + k->len, n + 1, "[[%s]]\n%s\n", label,
	                           text != NULL ? text : "");
}

static void corpus_add_file(struct corpus *k, const char *label,
                            const char *path)
{
	char *t = th_read_file(path, NULL);
	corpus_add(k, label, t);
	free(t);
}

/* Fails naming the secret and the piece that shows it. */
static void corpus_check(const struct corpus *k)
{
	char path[512];
	/* Kept with the test's files when it fails. */
	th_write_file(th_path(path, sizeof(path), "corpus.txt"), k->text);
	for (size_t i = 0; i <= sizeof(secrets) / sizeof(secrets[0]); i++) {
		const char *s = i < sizeof(secrets) / sizeof(secrets[0]) ? secrets[i]
		                                                         : k->ha1;
		const char *hit = s[0] != '\0' ? strstr(k->text, s) : NULL;
		if (hit != NULL) {
			const char *label = hit;
			while (label > k->text && strncmp(label, "[[", 2) != 0)
				label--;
			th_fail(__FILE__, __LINE__, "secret '%s' shows in %.80s ... %.200s",
			        s, label, hit > k->text + 60 ? hit - 60 : k->text);
		}
	}
}

/* A broker that knows two users and refuses anyone else, on a plain
 * listener ({PORT}) and a TLS listener that wants a client certificate
 * ({PORT2}); the client key encrypted with PP_KEY; the digest file. */
struct secret_env {
	struct th_broker b;
	char tls_url[96], ca[512], crt[512], key[512], pwfile[512], longfile[512],
	    htd[512];
};

static void secret_env_start(struct secret_env *e, struct corpus *k)
{
	char passwd[512], plain[512];
	memset(k, 0, sizeof(*k));
	th_make_certs();
	th_path(passwd, sizeof(passwd), "passwd");
	const char *mk1[] = {"mosquitto_passwd", "-b", "-c", passwd, "sec-user",
	                     PW_BROKER, NULL};
	ASSERT_EQ(th_run(mk1, NULL, 10000), 0);
	const char *mk2[] = {"mosquitto_passwd", "-b", passwd, "file-user", PW_FILE,
	                     NULL};
	ASSERT_EQ(th_run(mk2, NULL, 10000), 0);
	th_chmod_world(passwd);
	th_path(e->ca, sizeof(e->ca), "ca.crt");
	th_path(e->crt, sizeof(e->crt), "client.crt");
	th_path(plain, sizeof(plain), "client.key");
	th_path(e->key, sizeof(e->key), "client-sec.key");
	const char *enc[] = {"openssl", "pkey",     "-in",   plain,
	                     "-aes256", "-passout", "pass:" PP_KEY,
	                     "-out",    e->key,     NULL};
	ASSERT_EQ(th_run(enc, NULL, 10000), 0);
	th_path(e->pwfile, sizeof(e->pwfile), "mqtt-password");
	th_write_file(e->pwfile, PW_FILE "\nsecond line\n");
	th_path(e->longfile, sizeof(e->longfile), "long-password");
	char *lng = repeat(1100, 'z');
	memcpy(lng, PW_LONG, strlen(PW_LONG));
	th_write_file(e->longfile, lng);
	free(lng);
	/* user:realm:md5(user:realm:password), as htdigest writes it. */
	char line[256];
	mg_md5(k->ha1, HTTP_USER, ":", REALM, ":", PW_HTTP, NULL);
	snprintf(line, sizeof(line), "%s:%s:%s\n", HTTP_USER, REALM, k->ha1);
	th_write_file(th_path(e->htd, sizeof(e->htd), "htdigest"), line);
	char conf[2048];
	snprintf(conf, sizeof(conf),
	         "per_listener_settings false\nallow_anonymous false\n"
	         "password_file %s\n"
	         "listener {PORT} 127.0.0.1\n"
	         "listener {PORT2} 127.0.0.1\ncafile {DIR}/ca.crt\n"
	         "certfile {DIR}/server.crt\nkeyfile {DIR}/server.key\n"
	         "require_certificate true\n",
	         passwd);
	th_broker_start(&e->b, conf);
	snprintf(e->tls_url, sizeof(e->tls_url), "mqtts://127.0.0.1:%d",
	         e->b.port2);
}

/* One client that must fail to start: its error text, the text of its
 * code, its log and status go to the corpus. */
static int start_fails(struct corpus *k, const char *label, const char **opts)
{
	struct rec r;
	char err[1024] = "", lbl[256];
	struct mg_mqtt *c = rec_client(&r, NULL);
	int rc = mg_mqtt_start(c, NULL, opts, err, sizeof(err));
	if (rc >= 0)
		th_fail(__FILE__, __LINE__, "%s: start succeeded", label);
	char *st = rec_status(c);
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	snprintf(lbl, sizeof(lbl), "%s: errbuf", label);
	corpus_add(k, lbl, err);
	snprintf(lbl, sizeof(lbl), "%s: strerror", label);
	corpus_add(k, lbl, mg_mqtt_strerror(rc));
	snprintf(lbl, sizeof(lbl), "%s: log", label);
	corpus_add(k, lbl, r.log);
	snprintf(lbl, sizeof(lbl), "%s: connect message", label);
	corpus_add(k, lbl, r.last_conn_msg);
	snprintf(lbl, sizeof(lbl), "%s: status", label);
	corpus_add(k, lbl, st);
	free(st);
	rec_free(&r);
	return rc;
}

static void http_to_corpus(struct corpus *k, int port, const char *method,
                           const char *path, const char *data,
                           const char *extra, int want)
{
	struct th_resp r;
	char lbl[512];
	th_http(port, method, path, data, extra, &r);
	if (r.status != want)
		th_fail(__FILE__, __LINE__, "%s %s: status %d, not %d: %s", method,
		        path, r.status, want, r.body);
	/* The label without the query string (it may hold a secret). */
	int pl = (int)strcspn(path, "?");
	snprintf(lbl, sizeof(lbl), "%s %.*s (%d) head", method, pl, path, r.status);
	corpus_add(k, lbl, r.head);
	snprintf(lbl, sizeof(lbl), "%s %.*s (%d) body", method, pl, path, r.status);
	corpus_add(k, lbl, r.body);
	th_resp_free(&r);
}

#define DIGEST_OK "--digest -u " HTTP_USER ":" PW_HTTP
#define DIGEST_BAD "--digest -u " HTTP_USER ":" PW_WRONG

TEST_T(secrets_never_show_in_logs_errors_status_or_metrics_of_a_client, 120)
{
	struct secret_env e;
	struct corpus k;
	struct srv s;
	secret_env_start(&e, &k);

	/* Success: password, TLS key passphrase, bridge with digest auth. */
	srv_start(&s, OPTS("MQTT_BROKER_URL", e.tls_url, "MQTT_USERNAME",
	                   "sec-user", "MQTT_PASSWORD", PW_BROKER,
	                   "MQTT_TLS_CA_CERTS", e.ca, "MQTT_TLS_CERTFILE", e.crt,
	                   "MQTT_TLS_KEYFILE", e.key, "MQTT_TLS_KEYFILE_PASSWORD",
	                   PP_KEY, "MQTT_CLIENT_ID", "sec-client",
	                   "MQTT_RECONNECT_MIN", "1", "MQTT_RECONNECT_MAX", "1",
	                   "MQTT_BRIDGE_PATH", "/mqtt", "MQTT_BRIDGE_AUTH_FILE",
	                   e.htd, "MQTT_BRIDGE_PUBLISH_ALLOW", "sec/#",
	                   "MQTT_BRIDGE_SUBSCRIBE_ALLOW", "sec/#"));
	ASSERT(mg_mqtt_is_connected(s.c));
	http_to_corpus(&k, s.port, "POST", "/mqtt/publish/sec/x", "1", DIGEST_OK,
	               200);
	http_to_corpus(&k, s.port, "GET", "/mqtt/status", NULL, DIGEST_OK, 200);
	http_to_corpus(&k, s.port, "GET", "/mqtt/metrics", NULL, DIGEST_OK, 200);
	http_to_corpus(&k, s.port, "GET", "/mqtt/status", NULL, NULL, 401);
	http_to_corpus(&k, s.port, "GET", "/mqtt/metrics", NULL, DIGEST_BAD, 401);
	http_to_corpus(&k, s.port, "POST", "/mqtt/publish/sec/x", "1", DIGEST_BAD,
	               401);
	http_to_corpus(&k, s.port, "GET",
	               "/mqtt/status?password=" PW_WRONG, NULL, NULL, 401);
	/* A broker restart: the reconnect logs, with the same credentials. */
	th_broker_restart(&e.b);
	ASSERT(WAIT_UNTIL(REC(&s.r, connects) == 2, 20000));
	char *st = rec_status(s.c);
	ASSERT_CONTAINS(st, "\"password\":\"***\"");
	ASSERT_CONTAINS(st, "\"tls_keyfile_password\":\"***\"");
	corpus_add(&k, "status (TLS client)", st);
	free(st);
	corpus_add(&k, "last disconnect message", s.r.last_disc_msg);
	srv_stop_to(&s, &k, "log (TLS client)");
	corpus_add_file(&k, "civetweb error_log_file (TLS client)", s.errlog);

	/* Success: the password from PASSWORD_FILE, no log handler: lines go
	 * to CivetWeb's error_log_file. */
	{
		char err[1024];
		struct mg_mqtt *c = mg_mqtt_create(NULL);
		char port[32], elog[512];
		th_path(elog, sizeof(elog), "error-file-client.log");
		snprintf(port, sizeof(port), "127.0.0.1:%d", th_free_port());
		const char *cw[] = {"listening_ports", port, "error_log_file", elog,
		                    "authentication_domain", REALM, NULL};
		struct mg_context *ctx = mg_start(NULL, NULL, cw);
		ASSERT(ctx != NULL);
		int rc = mg_mqtt_start(c, ctx,
		                       OPTS("MQTT_BROKER_URL", e.b.url, "MQTT_USERNAME",
		                            "file-user", "MQTT_PASSWORD_FILE",
		                            e.pwfile),
		                       err, sizeof(err));
		if (rc != 0)
			th_fail(__FILE__, __LINE__, "PASSWORD_FILE: %d %s", rc, err);
		ASSERT(mg_mqtt_is_connected(c));
		st = rec_status(c);
		ASSERT_CONTAINS(st, "\"password\":\"***\"");
		corpus_add(&k, "status (PASSWORD_FILE)", st);
		free(st);
		mg_stop(ctx);
		ASSERT_EQ(mg_mqtt_stop(c), 0);
		ASSERT(th_count_lines(elog, "connected to") >= 1);
		corpus_add_file(&k, "error_log_file (PASSWORD_FILE)", elog);
	}

	/* Failure: wrong password, at start and in the background. */
	ASSERT_EQ(start_fails(&k, "wrong password",
	                      OPTS("MQTT_BROKER_URL", e.b.url, "MQTT_USERNAME",
	                           "sec-user", "MQTT_PASSWORD", PW_WRONG)),
	          MG_MQTT_ERR_REFUSED);
	ASSERT_EQ(start_fails(&k, "wrong password v5",
	                      OPTS("MQTT_BROKER_URL", e.b.url, "MQTT_USERNAME",
	                           "sec-user", "MQTT_PASSWORD", PW_WRONG,
	                           "MQTT_PROTOCOL_VERSION", "5")),
	          MG_MQTT_ERR_REFUSED);
	{
		struct rec r;
		struct mg_mqtt *c = mg_mqtt_create(NULL);
		rec_init(&r);
		rec_attach(c, &r);
		rec_start(c, OPTS("MQTT_BROKER_URL", e.b.url, "MQTT_USERNAME",
		                  "sec-user", "MQTT_PASSWORD", PW_WRONG,
		                  "MQTT_CONNECT_ASYNC", "true", "MQTT_RECONNECT_MIN",
		                  "1", "MQTT_RECONNECT_MAX", "1"));
		ASSERT(WAIT_UNTIL(REC(&r, connect_fails) >= 2, 20000));
		ASSERT_EQ(REC(&r, last_error), MG_MQTT_ERR_REFUSED);
		st = rec_status(c);
		corpus_add(&k, "status (refused in the background)", st);
		free(st);
		corpus_add(&k, "connect message (refused)", r.last_conn_msg);
		ASSERT_EQ(mg_mqtt_stop(c), 0);
		corpus_add(&k, "log (refused in the background)", r.log);
		rec_free(&r);
	}
	/* Failure: the wrong key passphrase, and the right one with a key file
	 * that is not a key. */
	int rc = start_fails(&k, "wrong passphrase",
	                     OPTS("MQTT_BROKER_URL", e.tls_url, "MQTT_TLS_CA_CERTS",
	                          e.ca, "MQTT_TLS_CERTFILE", e.crt,
	                          "MQTT_TLS_KEYFILE", e.key,
	                          "MQTT_TLS_KEYFILE_PASSWORD", PP_WRONG,
	                          "MQTT_USERNAME", "sec-user", "MQTT_PASSWORD",
	                          PW_BROKER, "MQTT_CONNECTION_TIMEOUT", "3"));
	ASSERT(rc == MG_MQTT_ERR_TLS || rc == MG_MQTT_ERR_CONNECT);
	rc = start_fails(&k, "key file not a key",
	                 OPTS("MQTT_BROKER_URL", e.tls_url, "MQTT_TLS_CA_CERTS", e.ca,
	                      "MQTT_TLS_CERTFILE", e.crt, "MQTT_TLS_KEYFILE",
	                      e.pwfile, "MQTT_TLS_KEYFILE_PASSWORD", PP_KEY,
	                      "MQTT_CONNECTION_TIMEOUT", "3"));
	ASSERT(rc == MG_MQTT_ERR_TLS || rc == MG_MQTT_ERR_CONNECT);

	/* Configuration errors next to secrets. */
	ASSERT_EQ(start_fails(&k, "bad keepalive",
	                      OPTS("MQTT_BROKER_URL", e.b.url, "MQTT_USERNAME",
	                           "sec-user", "MQTT_PASSWORD", PW_BROKER,
	                           "MQTT_TLS_KEYFILE_PASSWORD", PP_KEY,
	                           "MQTT_KEEPALIVE", "soon")),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_EQ(start_fails(&k, "password and file",
	                      OPTS("MQTT_BROKER_URL", e.b.url, "MQTT_USERNAME",
	                           "sec-user", "MQTT_PASSWORD", PW_BROKER,
	                           "MQTT_PASSWORD_FILE", e.pwfile)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_EQ(start_fails(&k, "password file, no user",
	                      OPTS("MQTT_BROKER_URL", e.b.url, "MQTT_PASSWORD_FILE",
	                           e.pwfile)),
	          MG_MQTT_ERR_CONFIG);
	rc = start_fails(&k, "password file too long",
	                 OPTS("MQTT_BROKER_URL", e.b.url, "MQTT_USERNAME",
	                      "sec-user", "MQTT_PASSWORD_FILE", e.longfile));
	ASSERT(rc == MG_MQTT_ERR_CONFIG || rc == MG_MQTT_ERR_IO);
	ASSERT_EQ(start_fails(&k, "misspelt password key",
	                      OPTS("MQTT_BROKER_URL", e.b.url, "MQTT_USERNAME",
	                           "sec-user", "MQTT_PASWORD", PW_BROKER)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_EQ(start_fails(&k, "misspelt passphrase key",
	                      OPTS("MQTT_BROKER_URL", e.b.url,
	                           "MQTT_TLS_KEYFILE_PASWORD", PP_KEY)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_EQ(start_fails(&k, "passphrase, key file unreadable",
	                      OPTS("MQTT_BROKER_URL", e.tls_url,
	                           "MQTT_TLS_CERTFILE", e.crt, "MQTT_TLS_KEYFILE",
	                           "/nonexistent/client.key",
	                           "MQTT_TLS_KEYFILE_PASSWORD", PP_KEY)) < 0,
	          1);
	ASSERT_EQ(start_fails(&k, "auth file missing",
	                      OPTS("MQTT_BROKER_URL", e.b.url, "MQTT_USERNAME",
	                           "sec-user", "MQTT_PASSWORD", PW_BROKER,
	                           "MQTT_BRIDGE_PATH", "/mqtt",
	                           "MQTT_BRIDGE_AUTH_FILE", "/nonexistent/htd")) < 0,
	          1);
	/* None of it shows a secret. */
	corpus_check(&k);
	free(k.text);
}

/* The example server: its stderr (library and CivetWeb log lines), the
 * status and metrics routes and its exit messages, on success and on each
 * failure. */

struct example {
	pid_t pid;
	int port;
	char log[512], conf[512], elog[512];
};

static void example_spawn(struct example *x, const char *extra,
                          const char *const *args)
{
	static int n;
	char text[4096], name[64];
	const char *argv[16];
	int a = 0;
	x->port = th_free_port();
	snprintf(name, sizeof(name), "example-error-%d.log", ++n);
	th_path(x->elog, sizeof(x->elog), name);
	snprintf(text, sizeof(text),
	         "listening_ports 127.0.0.1:%d\n"
	         "document_root .\n"
	         "authentication_domain " REALM "\n"
	         "error_log_file %s\n"
	         "%s",
	         x->port, x->elog, extra);
	snprintf(name, sizeof(name), "example-%d.conf", n);
	th_path(x->conf, sizeof(x->conf), name);
	th_write_file(x->conf, text);
	snprintf(name, sizeof(name), "example-%d.log", n);
	th_path(x->log, sizeof(x->log), name);
	argv[a++] = th_example_bin();
	argv[a++] = x->conf;
	for (size_t i = 0; args != NULL && args[i] != NULL && a < 15; i++)
		argv[a++] = args[i];
	argv[a] = NULL;
	x->pid = th_spawn(argv, x->log);
}

static void example_to_corpus(struct corpus *k, struct example *x,
                              const char *label)
{
	char lbl[256];
	snprintf(lbl, sizeof(lbl), "%s: stderr", label);
	corpus_add_file(k, lbl, x->log);
	snprintf(lbl, sizeof(lbl), "%s: error_log_file", label);
	corpus_add_file(k, lbl, x->elog);
	/* (The config file holds the secrets by design: not added.) */
}

/* SIGTERM: the example exits 0; then its output into the corpus. */
static void example_stop_to_corpus(struct corpus *k, struct example *x,
                                   const char *label)
{
	kill(x->pid, SIGTERM);
	ASSERT_EQ(th_wait_exit(x->pid, 15000), 0);
	example_to_corpus(k, x, label);
}

/* The bridge's status and metrics, with the right credentials. */
static void routes_to_corpus(struct corpus *k, int port)
{
	http_to_corpus(k, port, "GET", "/mqtt/status", NULL, DIGEST_OK, 200);
	http_to_corpus(k, port, "GET", "/mqtt/metrics", NULL, DIGEST_OK, 200);
}

TEST_T(secrets_never_show_in_the_example_servers_output_or_routes, 120)
{
	struct secret_env e;
	struct corpus k;
	struct example x;
	char common[2048], conf[4096];
	secret_env_start(&e, &k);
	snprintf(common, sizeof(common),
	         "MQTT_BRIDGE_PATH /mqtt\n"
	         "MQTT_BRIDGE_AUTH_FILE %s\n"
	         "MQTT_BRIDGE_PUBLISH_ALLOW sec/#\n"
	         "MQTT_BRIDGE_SUBSCRIBE_ALLOW sec/#\n"
	         "MQTT_RECONNECT_MIN 1\nMQTT_RECONNECT_MAX 1\n",
	         e.htd);

	/* Success: TLS with the key passphrase and a password. */
	snprintf(conf, sizeof(conf),
	         "%sMQTT_BROKER_URL %s\nMQTT_USERNAME sec-user\n"
	         "MQTT_PASSWORD " PW_BROKER "\n"
	         "MQTT_TLS_CA_CERTS %s\nMQTT_TLS_CERTFILE %s\n"
	         "MQTT_TLS_KEYFILE %s\nMQTT_TLS_KEYFILE_PASSWORD " PP_KEY "\n",
	         common, e.tls_url, e.ca, e.crt, e.key);
	example_spawn(&x, conf, NULL);
	ASSERT(th_wait_port(x.port, 10000));
	ASSERT(WAIT_UNTIL(th_count_lines(x.log, "connected to") == 1, 10000));
	routes_to_corpus(&k, x.port);
	http_to_corpus(&k, x.port, "GET", "/mqtt/status", NULL, DIGEST_BAD, 401);
	http_to_corpus(&k, x.port, "POST", "/mqtt/publish/sec/a", "1", NULL, 401);
	/* The example's own route asks for the bridge's password too. */
	http_to_corpus(&k, x.port, "POST", "/api/publish/sec/b", "2",
	               "-H 'Content-Type: application/octet-stream'", 401);
	http_to_corpus(&k, x.port, "POST", "/api/publish/sec/b", "2",
	               DIGEST_OK " -H 'Content-Type: application/octet-stream'",
	               200);
	th_broker_restart(&e.b);
	ASSERT(WAIT_UNTIL(th_count_lines(x.log, "connected to") == 2, 20000));
	example_stop_to_corpus(&k, &x, "example, TLS and password");

	/* Success: PASSWORD_FILE, the password on the command line for the
	 * other prefix. */
	snprintf(conf, sizeof(conf),
	         "%sMQTT_BROKER_URL %s\nMQTT_USERNAME file-user\n"
	         "MQTT_PASSWORD_FILE %s\n"
	         "MQTT2_BROKER_URL %s\nMQTT2_USERNAME sec-user\n",
	         common, e.b.url, e.pwfile, e.b.url);
	example_spawn(&x, conf, OPTS("-MQTT2_PASSWORD", PW_BROKER));
	ASSERT(th_wait_port(x.port, 10000));
	ASSERT(WAIT_UNTIL(th_count_lines(x.log, "connected to") == 2, 10000));
	routes_to_corpus(&k, x.port);
	example_stop_to_corpus(&k, &x, "example, password file");

	/* Failure: the wrong password at start (exits 1), and in the
	 * background (keeps serving, status shows the refusal). */
	snprintf(conf, sizeof(conf),
	         "%sMQTT_BROKER_URL %s\nMQTT_USERNAME sec-user\n"
	         "MQTT_PASSWORD " PW_WRONG "\nMQTT_CONNECT_ASYNC false\n",
	         common, e.b.url);
	example_spawn(&x, conf, NULL);
	ASSERT_EQ(th_wait_exit(x.pid, 15000), 1);
	example_to_corpus(&k, &x, "example, wrong password");
	snprintf(conf, sizeof(conf),
	         "%sMQTT_BROKER_URL %s\nMQTT_USERNAME sec-user\n"
	         "MQTT_PASSWORD " PW_WRONG "\nMQTT_CONNECT_ASYNC true\n"
	         "MQTT_PROTOCOL_VERSION 5\n",
	         common, e.b.url);
	example_spawn(&x, conf, NULL);
	ASSERT(th_wait_port(x.port, 10000));
	ASSERT(WAIT_UNTIL(th_count_lines(x.log, "refused") >= 2, 20000));
	routes_to_corpus(&k, x.port);
	example_stop_to_corpus(&k, &x, "example, refused in the background");

	/* Failure: the wrong key passphrase. */
	snprintf(conf, sizeof(conf),
	         "%sMQTT_BROKER_URL %s\nMQTT_USERNAME sec-user\n"
	         "MQTT_PASSWORD " PW_BROKER "\n"
	         "MQTT_TLS_CA_CERTS %s\nMQTT_TLS_CERTFILE %s\n"
	         "MQTT_TLS_KEYFILE %s\nMQTT_TLS_KEYFILE_PASSWORD " PP_WRONG "\n"
	         "MQTT_CONNECT_ASYNC false\nMQTT_CONNECTION_TIMEOUT 3\n",
	         common, e.tls_url, e.ca, e.crt, e.key);
	example_spawn(&x, conf, NULL);
	ASSERT_EQ(th_wait_exit(x.pid, 20000), 1);
	example_to_corpus(&k, &x, "example, wrong passphrase");

	/* Failure: configuration errors next to secrets, in the file and on
	 * the command line. */
	const char *bad_confs[] = {
	    "MQTT_PASSWORD " PW_BROKER "\nMQTT_USERNAME u\nMQTT_KEEPALIVE soon\n",
	    "MQTT_PASWORD " PW_BROKER "\n",
	    "MQTT_PASSWORD " PW_BROKER "\n",
	    "MQTT_USERNAME u\nMQTT_PASSWORD_FILE LONGFILE\n",
	    "MQTT_TLS_KEYFILE_PASSWORD " PP_KEY "\nMQTT_TLS_VERSION tls9\n",
	    "mqtt_password_typo " PW_BROKER "\n",
	};
	for (size_t i = 0; i < sizeof(bad_confs) / sizeof(bad_confs[0]); i++) {
		char lbl[64];
		const char *lf = strstr(bad_confs[i], "LONGFILE");
		if (lf != NULL)
			snprintf(conf, sizeof(conf), "MQTT_BROKER_URL %s\n%.*s%s\n",
			         e.b.url, (int)(lf - bad_confs[i]), bad_confs[i],
			         e.longfile);
		else
			snprintf(conf, sizeof(conf), "MQTT_BROKER_URL %s\n%s", e.b.url,
			         bad_confs[i]);
		example_spawn(&x, conf, NULL);
		ASSERT_EQ(th_wait_exit(x.pid, 15000), 1);
		snprintf(lbl, sizeof(lbl), "example, bad config %zu", i);
		example_to_corpus(&k, &x, lbl);
	}
	snprintf(conf, sizeof(conf), "MQTT_BROKER_URL %s\n", e.b.url);
	example_spawn(&x, conf, OPTS("-MQTT_PASSWROD", PW_BROKER));
	ASSERT_EQ(th_wait_exit(x.pid, 15000), 1);
	example_to_corpus(&k, &x, "example, misspelt key on the command line");
	example_spawn(&x, conf, OPTS("-MQTT_USERNAME", "u", "-MQTT_PASSWORD"));
	ASSERT_EQ(th_wait_exit(x.pid, 15000), 1);
	example_to_corpus(&k, &x, "example, missing value on the command line");

	corpus_check(&k);
	free(k.text);
}

/* "mqtt://user:password@host" is how many tools take credentials. The
 * library does not support credentials in BROKER_URL (USERNAME / PASSWORD
 * are the keys): refused as a bad URL, fine, but the refusal must not
 * quote the password back into the error text, the log, or the example
 * server's output. */
TEST_T(credentials_in_the_broker_url_are_never_echoed_in_errors_or_logs, 60)
{
	struct corpus k;
	struct example x;
	char url[256], url2[256], conf[512];
	memset(&k, 0, sizeof(k));
	/* Refused before any connection; a free port all the same. */
	int port = th_free_port();
	snprintf(url, sizeof(url), "mqtt://sec-user:" PW_URL "@127.0.0.1:%d", port);
	snprintf(url2, sizeof(url2), "tcp://127.0.0.1:%d, ws://u:" PW_URL "@h:80/mqtt",
	         port);
	int rc = start_fails(&k, "credentials in the URL",
	                     OPTS("MQTT_BROKER_URL", url));
	ASSERT_EQ(rc, MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(k.text, "MQTT_BROKER_URL"); /* the key is named */
	rc = start_fails(&k, "credentials in a fail-over URL",
	                 OPTS("MQTT_BROKER_URL", url2));
	ASSERT_EQ(rc, MG_MQTT_ERR_CONFIG);
	/* Other sentences that quote the URL: a scheme against TLS_ENABLED or
	 * TRANSPORT. */
	rc = start_fails(&k, "credentials in the URL, TLS_ENABLED",
	                 OPTS("MQTT_BROKER_URL", url, "MQTT_TLS_ENABLED", "true"));
	ASSERT_EQ(rc, MG_MQTT_ERR_CONFIG);
	rc = start_fails(&k, "credentials in the URL, websockets",
	                 OPTS("MQTT_BROKER_URL", url, "MQTT_TRANSPORT",
	                      "websockets"));
	ASSERT_EQ(rc, MG_MQTT_ERR_CONFIG);
	snprintf(conf, sizeof(conf), "MQTT_BROKER_URL %s\n", url);
	example_spawn(&x, conf, NULL);
	ASSERT_EQ(th_wait_exit(x.pid, 15000), 1);
	example_to_corpus(&k, &x, "example, credentials in the URL");
	ASSERT_CONTAINS(k.text, "MQTT_BROKER_URL");
	corpus_check(&k);
	free(k.text);
}

/* ======================================================================
 * 5. Session takeover: another client connects with the same client id
 * ==================================================================== */

static void takeover(const char *proto, int want_reason)
{
	struct th_broker b;
	struct th_sub sub;
	struct rec r;
	char port[16];
	th_broker_sub_start(&b, NULL, &sub, "after/#", 0, NULL);
	struct mg_mqtt *c = rec_started(
	    &r, OPTS("MQTT_BROKER_URL", b.url, "MQTT_PROTOCOL_VERSION", proto,
	             "MQTT_CLIENT_ID", "dup-id", "MQTT_RECONNECT_MIN", "1",
	             "MQTT_RECONNECT_MAX", "2", "MQTT_SUBSCRIBE", "back/#:1"));
	ASSERT(WAIT_UNTIL(rec_subs_settled(c, 1), 10000));
	/* The intruder: same id, publishes once and leaves. */
	snprintf(port, sizeof(port), "%d", b.port);
	const char *argv[] = {"mosquitto_pub", "-h", "127.0.0.1", "-p", port,
	                      "-i", "dup-id", "-V", "mqttv5", "-t", "intruder/x",
	                      "-m", "y", NULL};
	th_run(argv, NULL, 10000);
	ASSERT(WAIT_UNTIL(th_count_lines(b.log, "already connected") >= 1, 10000));

	/* Reported: the disconnect handler with the reason... */
	ASSERT(WAIT_UNTIL(REC(&r, disconnects) >= 1, 10000));
	pthread_mutex_lock(&r.mu);
	int reason = r.last_disc_reason, stopped = r.stopped_disconnects;
	char msg[256];
	snprintf(msg, sizeof(msg), "%s", r.last_disc_msg);
	pthread_mutex_unlock(&r.mu);
	ASSERT_EQ(stopped, 0);
	/* mosquitto 2.0.11 closes the old connection without a DISCONNECT
	 * (checked on the wire): "connection lost". A broker that sends
	 * DISCONNECT 0x8E gets it reported; see the scripted peer below. */
	if (reason != 0) {
		ASSERT_EQ(reason, want_reason);
		ASSERT_CONTAINS(msg, "0x8e");
	}
	ASSERT(msg[0] != '\0');
	ASSERT(WAIT_UNTIL(rec_log_has(&r, "lost"), 10000));

	/* ...then back by itself, subscriptions renewed, publish arrives. */
	ASSERT(WAIT_UNTIL(REC(&r, connects) >= 2, 20000));
	ASSERT(WAIT_UNTIL(mg_mqtt_is_connected(c), 10000));
	int id = mg_mqtt_publish(c, "after/x", "z", 1, 1, 0);
	ASSERT_GT(id, 0);
	ASSERT_EQ(pub_result(&r, id, 10000), 0);
	ASSERT(WAIT_UNTIL(th_count_lines(sub.out, "after/x z") == 1, 10000));
	ASSERT(WAIT_UNTIL(rec_subs_settled(c, 1), 10000));
	REC_PUB_ARRIVES(&b, &r, "back/y", "w", 10000);
	ASSERT(mg_mqtt_is_connected(c));
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	th_sub_stop(&sub);
	rec_free(&r);
}

TEST_T(mqtt5_session_takeover_by_mosquitto_is_reported_and_the_client_returns,
       60)
{
	takeover("5", 0x8e);
}

TEST_T(mqtt311_session_takeover_is_reported_and_the_client_returns, 60)
{
	takeover("3.1.1", 0);
}

/* ---- a scripted MQTT 5 peer: what mosquitto 2.0.11 does not send -------- */

/* A one-thread MQTT 5 "broker" on a free loopback port. Connection 1 gets
 * CONNACK, SUBACK, then the script's DISCONNECT (first_reason) as soon as
 * its trigger arrives: the SUBSCRIBE (trigger_publish 0) or a PUBLISH
 * larger than 1000 bytes (trigger_publish 1). Later connections are served
 * like a broker would: SUBACK, PUBACK, PUBREC/PUBCOMP, PINGRESP; with
 * trigger_publish, a PUBLISH over 1000 bytes gets the same DISCONNECT on
 * every connection (as a broker with an unannounced limit would). */
struct peer {
	int lfd, port;
	char url[64]; /* tcp://127.0.0.1:port */
	pthread_t th;
	int first_reason, trigger_publish;
	atomic_int stop, conns, subscribes_after, disconnects_sent;
	pthread_mutex_t mu;
	char topics[4096]; /* topics published on connections 2+, '\n'-joined */
};

/* Reads exactly n bytes; -1 on close or stop. */
static int peer_read(struct peer *p, int fd, unsigned char *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		struct pollfd pf = {fd, POLLIN, 0};
		if (atomic_load(&p->stop))
			return -1;
		if (poll(&pf, 1, 50) <= 0)
			continue;
		ssize_t k = recv(fd, buf + got, n - got, 0);
		if (k <= 0)
			return -1;
		got += (size_t)k;
	}
	return 0;
}

/* One packet: its first byte and body (at most cap bytes kept). */
static int peer_packet(struct peer *p, int fd, unsigned char *type,
                       unsigned char *body, size_t cap, size_t *len)
{
	unsigned char c;
	size_t rem = 0, mul = 1;
	if (peer_read(p, fd, type, 1) != 0)
		return -1;
	do {
		if (peer_read(p, fd, &c, 1) != 0)
			return -1;
		rem += (c & 0x7f) * mul;
		mul *= 128;
	} while (c & 0x80);
	*len = rem;
	for (size_t done = 0; done < rem;) {
		unsigned char skip[4096];
		size_t n = rem - done;
		unsigned char *dst = done < cap ? body + done : skip;
		size_t room = done < cap ? cap - done : sizeof(skip);
		if (n > room)
			n = room;
		if (peer_read(p, fd, dst, n) != 0)
			return -1;
		done += n;
	}
	return 0;
}

static void peer_send(int fd, const void *data, size_t n)
{
	(void)!send(fd, data, n, MSG_NOSIGNAL);
}

/* A variable byte integer at b; its value, and its size in *used. */
static size_t peer_varint(const unsigned char *b, size_t *used)
{
	size_t v = 0, mul = 1, i = 0;
	do {
		v += (b[i] & 0x7f) * mul;
		mul *= 128;
	} while (b[i++] & 0x80 && i < 4);
	*used = i;
	return v;
}

static void peer_disconnect(struct peer *p, int fd)
{
	unsigned char d[4] = {0xe0, 0x02, (unsigned char)p->first_reason, 0x00};
	peer_send(fd, d, sizeof(d));
	atomic_fetch_add(&p->disconnects_sent, 1);
	th_sleep_ms(50);
	shutdown(fd, SHUT_RDWR);
}

static void peer_serve(struct peer *p, int fd, int conn)
{
	static unsigned char body[1 << 16];
	unsigned char type;
	size_t len;
	if (peer_packet(p, fd, &type, body, sizeof(body), &len) != 0 ||
	    (type >> 4) != 1)
		return;
	/* CONNACK: no session, success, no properties. */
	static const unsigned char connack[] = {0x20, 0x03, 0x00, 0x00, 0x00};
	peer_send(fd, connack, sizeof(connack));
	while (!atomic_load(&p->stop) &&
	       peer_packet(p, fd, &type, body, sizeof(body), &len) == 0) {
		unsigned t = type >> 4;
		if (t == 8) { /* SUBSCRIBE */
			size_t u, pl = peer_varint(body + 2, &u), i = 2 + u + pl, n = 0;
			unsigned char ack[64] = {0x90, 0, body[0], body[1], 0x00};
			while (i + 2 <= len && n < 32) {
				size_t fl = (size_t)body[i] << 8 | body[i + 1];
				unsigned q = body[i + 2 + fl] & 3;
				ack[5 + n++] = (unsigned char)(q > 1 ? 1 : q);
				i += 2 + fl + 1;
			}
			ack[1] = (unsigned char)(3 + n);
			peer_send(fd, ack, 5 + n);
			if (conn > 1)
				atomic_fetch_add(&p->subscribes_after, 1);
			if (conn == 1 && !p->trigger_publish) {
				peer_disconnect(p, fd);
				return;
			}
		} else if (t == 3) { /* PUBLISH */
			unsigned q = (type >> 1) & 3;
			size_t tl = (size_t)body[0] << 8 | body[1];
			if (p->trigger_publish && len > 1000) {
				peer_disconnect(p, fd);
				return;
			}
			if (conn > 1) {
				pthread_mutex_lock(&p->mu);
				size_t o = strlen(p->topics);
				if (o + tl + 2 < sizeof(p->topics)) {
					memcpy(p->topics + o, body + 2, tl);
					p->topics[o + tl] = '\n';
					p->topics[o + tl + 1] = '\0';
				}
				pthread_mutex_unlock(&p->mu);
			}
			unsigned char ack[4] = {q == 2 ? 0x50 : 0x40, 0x02, body[2 + tl],
			                        body[3 + tl]};
			if (q > 0)
				peer_send(fd, ack, sizeof(ack));
		} else if (t == 6) { /* PUBREL */
			unsigned char comp[4] = {0x70, 0x02, body[0], body[1]};
			peer_send(fd, comp, sizeof(comp));
		} else if (t == 10) { /* UNSUBSCRIBE */
			unsigned char ack[5] = {0xb0, 0x03, body[0], body[1], 0x00};
			peer_send(fd, ack, sizeof(ack)); /* (one filter: enough here) */
		} else if (t == 12) { /* PINGREQ */
			static const unsigned char pong[] = {0xd0, 0x00};
			peer_send(fd, pong, sizeof(pong));
		} else if (t == 14) { /* DISCONNECT */
			return;
		}
	}
}

static void *peer_main(void *arg)
{
	struct peer *p = arg;
	while (!atomic_load(&p->stop)) {
		struct pollfd pf = {p->lfd, POLLIN, 0};
		if (poll(&pf, 1, 50) <= 0)
			continue;
		int fd = accept(p->lfd, NULL, NULL);
		if (fd < 0)
			continue;
		int conn = atomic_fetch_add(&p->conns, 1) + 1;
		peer_serve(p, fd, conn);
		close(fd);
	}
	return NULL;
}

static void peer_start(struct peer *p, int first_reason, int trigger_publish)
{
	memset(p, 0, sizeof(*p));
	p->first_reason = first_reason;
	p->trigger_publish = trigger_publish;
	pthread_mutex_init(&p->mu, NULL);
	p->lfd = th_listen(&p->port, 8);
	snprintf(p->url, sizeof(p->url), "tcp://127.0.0.1:%d", p->port);
	ASSERT_EQ(pthread_create(&p->th, NULL, peer_main, p), 0);
}

static void peer_stop(struct peer *p)
{
	atomic_store(&p->stop, 1);
	pthread_join(p->th, NULL);
	close(p->lfd);
	pthread_mutex_destroy(&p->mu);
}

static int peer_saw(struct peer *p, const char *topic)
{
	char line[256];
	snprintf(line, sizeof(line), "%s\n", topic);
	pthread_mutex_lock(&p->mu);
	int v = strstr(p->topics, line) != NULL;
	pthread_mutex_unlock(&p->mu);
	return v;
}

/* The server's DISCONNECT "session taken over" (0x8E), as brokers newer
 * than Debian's mosquitto send it: the disconnect handler gets the reason
 * code and a message naming it, the client reconnects by itself, renews
 * its subscriptions, and what it publishes next arrives. */
TEST_T(mqtt5_a_server_disconnect_0x8e_is_reported_and_the_client_returns, 60)
{
	struct peer p;
	struct rec r;
	peer_start(&p, 0x8e, 0);
	struct mg_mqtt *c = rec_started(
	    &r, OPTS("MQTT_BROKER_URL", p.url, "MQTT_PROTOCOL_VERSION", "5",
	             "MQTT_CLIENT_ID", "dup-id", "MQTT_SUBSCRIBE", "back/#:1",
	             "MQTT_RECONNECT_MIN", "1", "MQTT_RECONNECT_MAX", "2"));
	ASSERT(WAIT_UNTIL(atomic_load(&p.disconnects_sent) == 1, 10000));
	ASSERT(WAIT_UNTIL(REC(&r, disconnects) >= 1, 10000));
	pthread_mutex_lock(&r.mu);
	int reason = r.last_disc_reason;
	char msg[256];
	snprintf(msg, sizeof(msg), "%s", r.last_disc_msg);
	pthread_mutex_unlock(&r.mu);
	ASSERT_EQ(reason, 0x8e);
	ASSERT_CONTAINS(msg, "0x8e");
	ASSERT(WAIT_UNTIL(REC(&r, connects) >= 2, 20000));
	ASSERT(WAIT_UNTIL(atomic_load(&p.subscribes_after) >= 1, 10000));
	int id = mg_mqtt_publish(c, "after/x", "z", 1, 1, 0);
	ASSERT_GT(id, 0);
	ASSERT_EQ(pub_result(&r, id, 10000), 0);
	ASSERT(peer_saw(&p, "after/x"));
	ASSERT(mg_mqtt_is_connected(c));
	ASSERT_EQ(REC(&r, disconnects), 1);
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	peer_stop(&p);
	rec_free(&r);
}

/* An MQTT 5 broker that does not announce its limit and answers a PUBLISH
 * over it with DISCONNECT 0x95 (packet too large): the broker said which
 * message it was. Expected: that message is failed (on_publish with a
 * negative code), not sent again on every reconnect, and the client goes
 * on with the next one. */
TEST_T(mqtt5_a_disconnect_0x95_after_a_large_publish_fails_it_not_resends_it,
       60)
{
	struct peer p;
	struct rec r;
	peer_start(&p, 0x95, 1);
	struct mg_mqtt *c = rec_started(
	    &r, OPTS("MQTT_BROKER_URL", p.url, "MQTT_PROTOCOL_VERSION", "5",
	             "MQTT_RECONNECT_MIN", "1", "MQTT_RECONNECT_MAX", "1"));
	int id = publish_big(c, "big/x", 1);
	ASSERT(WAIT_UNTIL(REC(&r, disconnects) >= 1, 10000));
	ASSERT_EQ(REC(&r, last_disc_reason), 0x95);
	if (!WAIT_UNTIL(rec_find_pub(&r, id) >= 0, 30000))
		th_fail(__FILE__, __LINE__,
		        "message %d neither failed nor sent: the peer closed the "
		        "connection %d times after receiving it",
		        id, atomic_load(&p.disconnects_sent));
	int res = pub_result(&r, id, 1);
	ASSERT_LT(res, 0);
	int id2 = mg_mqtt_publish(c, "big/after", "ok", 2, 1, 0);
	ASSERT_EQ(pub_result(&r, id2, 15000), 0);
	ASSERT(peer_saw(&p, "big/after"));
	ASSERT(mg_mqtt_is_connected(c));
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	peer_stop(&p);
	rec_free(&r);
}
