/*
 * Hostile clients against the example server (example/civetweb-mqtt) and
 * its bridge, over real sockets: hand-made HTTP requests and WebSocket
 * frames, and MQTT peers (mosquitto_sub / mosquitto_pub) that answer
 * requests with what an attacker on the broker would send. Each test
 * asserts the refusal and that the server still answers afterwards.
 *
 *  - BRIDGE_AUTH_FILE must not switch off CivetWeb's own authorization
 *    (put_delete_auth_file, global_auth_file) for paths CivetWeb's prefix
 *    match hands to the bridge (/mqttx.html, /MQTT/x, /mqtt-data/...);
 *  - JSON nested 700 deep (HTTP, WebSocket, an MQTT reply to /request);
 *  - trailing text, invalid UTF-8, numbers a double cannot hold;
 *  - cross-site: foreign Origin, form and text/plain bodies;
 *  - /request replies: content type allow list, nosniff, 128-bit
 *    correlation ids; reply topics refused to browsers (publish and
 *    subscribe); a lying Content-Length; last values bounded in bytes;
 *  - bodies shorter than Content-Length; WebSocket messages over
 *    BRIDGE_MAX_BODY (whole and fragmented); BRIDGE_MAX_FILTERS;
 *    BRIDGE_MAX_CLIENTS;
 *  - digest replay: nc tracked per nonce, uri bound to the whole target.
 */
#include "util.h"
#include "ws.h"

#include <civetweb.h>
#include <stdlib.h>

#include "civetweb_mqtt.h"
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define REALM "attack-realm"
#define USER "alice"
#define PASS "pw-9c1e"

/* ---- raw HTTP ------------------------------------------------------------ */

struct hresp {
	int status;
	char head[8192];
	char *body;
	size_t len;
};

/* Reads one response (head, then Content-Length bytes) from r. Returns
 * its status, 0 when none came. */
static int read_resp(struct th_raw *r, struct hresp *h, int ms)
{
	char *end;
	int64_t until = th_now_ms() + (int64_t)ms * th_timeout_scale();
	memset(h, 0, sizeof(*h));
	while ((end = memmem(r->buf, r->len, "\r\n\r\n", 4)) == NULL)
		if (th_now_ms() > until || th_raw_fill(r, 500) == 0)
			return 0;
	size_t hl = (size_t)(end - r->buf) + 4;
	snprintf(h->head, sizeof(h->head), "%.*s", (int)hl, r->buf);
	sscanf(h->head, "HTTP/1.%*d %d", &h->status);
	th_raw_consume(r, hl);
	const char *cl = strcasestr(h->head, "\r\nContent-Length:");
	size_t n = cl != NULL ? (size_t)strtoull(cl + 17, NULL, 10) : 0;
	while (r->len < n && th_now_ms() <= until && th_raw_fill(r, 500) != 0) {
	}
	if (r->len < n)
		n = r->len;
	h->body = malloc(n + 1);
	ASSERT(h->body != NULL);
	memcpy(h->body, r->buf, n);
	h->body[n] = '\0';
	h->len = n;
	th_raw_consume(r, n);
	return h->status;
}

/* One request on a new connection: the status (0: no answer). */
static int raw_req(int port, const char *req, size_t n, struct hresp *h)
{
	struct th_raw *r = th_raw_connect(port, 0);
	th_raw_send(r, req, n);
	int status = read_resp(r, h, 20000);
	th_raw_close(r);
	return status;
}

/* method path with optional headers (each ending "\r\n") and body. */
static int http(int port, const char *method, const char *path,
                const char *headers, const char *body, struct hresp *h)
{
	size_t bl = body != NULL ? strlen(body) : 0, cap = bl + strlen(path) + 2048;
	char *req = malloc(cap);
	ASSERT(req != NULL);
	int n = snprintf(req, cap,
	                 "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s"
	                 "Content-Length: %zu\r\nConnection: close\r\n\r\n",
	                 method, path, port, headers != NULL ? headers : "", bl);
	if (bl > 0)
		memcpy(req + n, body, bl);
	int status = raw_req(port, req, (size_t)n + bl, h);
	free(req);
	return status;
}

static void hfree(struct hresp *h)
{
	free(h->body);
	h->body = NULL;
}

/* The server still answers: GET <path>/status gets a response (200, or
 * 401 on a server that needs credentials). */
static void still_answers(int port)
{
	struct hresp h;
	int s = http(port, "GET", "/mqtt/status", NULL, NULL, &h);
	hfree(&h);
	if (s != 200 && s != 401)
		th_fail(__FILE__, __LINE__, "the server does not answer /status (%d)",
		        s);
}

#define JSON_CT "Content-Type: application/json\r\n"
#define RAW_CT "Content-Type: application/octet-stream\r\n"

/* http() for its status alone. */
static int status_of(int port, const char *method, const char *path,
                     const char *headers, const char *body)
{
	struct hresp h;
	int status = http(port, method, path, headers, body, &h);
	hfree(&h);
	return status;
}

/* What follows key in text up to the next '"', into out (the test fails
 * when key is missing or the value does not fit). */
static void quoted_after(const char *text, const char *key, char *out,
                         size_t cap)
{
	const char *p = strstr(text, key);
	ASSERT(p != NULL);
	p += strlen(key);
	size_t l = strcspn(p, "\"");
	ASSERT(l < cap);
	memcpy(out, p, l);
	out[l] = '\0';
}

/* ---- a raw WebSocket client ------------------------------------------------ */

/* GET /mqtt/ws by hand with extra header lines; returns the status. */
static int ws_open(struct th_raw *r, int port, const char *extra)
{
	return th_ws_upgrade(r, port, extra, NULL, 0);
}

/* Sends a text message and returns the reply frame's text (hello and
 * messages skipped) in out. */
static int ws_call(struct th_raw *r, const char *json, char *out, size_t cap)
{
	th_ws_send(r, 1, 1, json, strlen(json));
	for (;;) {
		int op = th_ws_frame_buf(r, out, cap, 10000);
		if (op != 1 || (strstr(out, "\"op\":\"hello\"") == NULL &&
		                strstr(out, "\"op\":\"message\"") == NULL &&
		                strstr(out, "\"op\":\"state\"") == NULL))
			return op;
	}
}

/* n levels of "[" ... "]" around 1, malloc()ed. */
static char *nested(int n, const char *pre, const char *post)
{
	size_t pl = strlen(pre), ql = strlen(post);
	char *s = malloc(pl + ql + 2 * (size_t)n + 2);
	ASSERT(s != NULL);
	memcpy(s, pre, pl);
	memset(s + pl, '[', (size_t)n);
	s[pl + (size_t)n] = '1';
	memset(s + pl + (size_t)n + 1, ']', (size_t)n);
	memcpy(s + pl + 2 * (size_t)n + 1, post, ql + 1);
	return s;
}

/* ---- servers ----------------------------------------------------------------- */

/* The port accepts before the MQTT client is up and the bridge mounted:
 * waits for <path>/status to be the bridge's (200, or 401 with auth). */
static void wait_bridge(int port)
{
	struct hresp h;
	int s = 0;
	int64_t until = th_now_ms() + 20000 * th_timeout_scale();
	while (th_now_ms() < until) {
		s = http(port, "GET", "/mqtt/status", NULL, NULL, &h);
		hfree(&h);
		if (s == 200 || s == 401)
			return;
		usleep(50 * 1000);
	}
	th_fail(__FILE__, __LINE__, "the bridge did not come up (%d)", s);
}

/* A broker, and the example server connected to it (MQTT_BROKER_URL, then
 * the lines of mqtt; civetweb: more CivetWeb lines or NULL) with its
 * bridge up. */
static void start_bridge(struct th_broker *b, struct th_xsrv *x,
                         const char *mqtt, const char *civetweb)
{
	char text[4096];
	th_broker_start(b, NULL);
	snprintf(text, sizeof(text), "MQTT_BROKER_URL %s\n%s\n", b->url, mqtt);
	th_xsrv_start(x, text, civetweb);
	wait_bridge(x->port);
}

/* start_bridge with the bridge on /mqtt, demo/# allowed both ways, then
 * the lines of mqtt (or NULL). */
static void start(struct th_broker *b, struct th_xsrv *x, const char *mqtt,
                  const char *civetweb)
{
	char text[4096];
	snprintf(text, sizeof(text),
	         "MQTT_BRIDGE_PATH /mqtt\nMQTT_BRIDGE_PUBLISH_ALLOW demo/#\n"
	         "MQTT_BRIDGE_SUBSCRIBE_ALLOW demo/#\n%s",
	         mqtt != NULL ? mqtt : "");
	start_bridge(b, x, text, civetweb);
}

/* Stops the example server, then the broker. */
static void stop_all(struct th_broker *b, struct th_xsrv *x)
{
	th_kill(x->pid, SIGTERM);
	th_broker_stop(b);
}

/* The example still answers; then it and the broker stop. */
static void answers_then_stop(struct th_broker *b, struct th_xsrv *x)
{
	still_answers(x->port);
	stop_all(b, x);
}

/* Frames are read up to the first that is no text frame: it must be a
 * close; its code. */
static int close_code(struct th_raw *r)
{
	char out[4096];
	int op;
	while ((op = th_ws_frame_buf(r, out, sizeof(out), 10000)) == 1)
		;
	ASSERT_EQ(op, 8);
	return (unsigned char)out[0] << 8 | (unsigned char)out[1];
}

/* ======================================================================
 * 1. BRIDGE_AUTH_FILE and CivetWeb's own authorization
 * ==================================================================== */

static void write_htdigest(const char *path)
{
	char ha1[33], line[128];
	mg_md5(ha1, USER, ":", REALM, ":", PASS, NULL);
	snprintf(line, sizeof(line), "%s:%s:%s\n", USER, REALM, ha1);
	th_write_file(path, line);
}

TEST_T(auth_file_leaves_civetweb_authorization_on_for_paths_not_the_bridges,
       60)
{
	struct th_broker b;
	struct th_xsrv x;
	char htd[512], www[512], f[600], mqtt[1024], cw[2048];
	th_path(htd, sizeof(htd), "users.htdigest");
	write_htdigest(htd);
	th_path(www, sizeof(www), "www");
	mkdir(www, 0755);
	snprintf(f, sizeof(f), "%s/mqtt-notes.txt", www);
	th_write_file(f, "private notes\n");
	snprintf(mqtt, sizeof(mqtt), "MQTT_BRIDGE_AUTH_FILE %s", htd);
	/* The document root protected by its .htpasswd (CivetWeb's per
	 * directory file), PUT and DELETE by put_delete_auth_file. */
	snprintf(f, sizeof(f), "%s/.htpasswd", www);
	write_htdigest(f);
	snprintf(f, sizeof(f), "%s/mqtt-notes.txt", www);
	snprintf(cw, sizeof(cw),
	         "document_root %s\nauthentication_domain %s\n"
	         "put_delete_auth_file %s\n",
	         www, REALM, htd);
	start(&b, &x, mqtt, cw);
	static const char *const paths[] = {"/evil.html", "/mqttx.html",
	                                    "/MQTT/x", "/Mqtt", "/mqtt-data/a.txt",
	                                    "/mqtt.html"};
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		struct hresp h;
		int s = http(x.port, "PUT", paths[i], NULL, "<script>x</script>", &h);
		hfree(&h);
		if (s != 401 && s != 405)
			th_fail(__FILE__, __LINE__, "PUT %s without credentials: %d",
			        paths[i], s);
	}
	struct hresp h;
	int s = http(x.port, "DELETE", "/mqtt-notes.txt", NULL, NULL, &h);
	hfree(&h);
	ASSERT(s == 401 || s == 405);
	ASSERT(access(f, F_OK) == 0);
	ASSERT_EQ(http(x.port, "GET", "/mqtt-notes.txt", NULL, NULL, &h), 401);
	ASSERT(strstr(h.body, "private") == NULL);
	hfree(&h);
	/* The bridge itself still asks for its credentials. */
	ASSERT_EQ(http(x.port, "GET", "/mqtt/status", NULL, NULL, &h), 401);
	ASSERT(strcasestr(h.head, "WWW-Authenticate: Digest") != NULL);
	hfree(&h);
	for (size_t i = 1; i < sizeof(paths) / sizeof(paths[0]); i++) {
		char p[600];
		snprintf(p, sizeof(p), "%s%s", www, paths[i]);
		ASSERT(access(p, F_OK) != 0);
	}
	answers_then_stop(&b, &x);
}

/* ======================================================================
 * 2/3. Deep JSON
 * ==================================================================== */

TEST_T(json_nested_700_deep_is_refused_over_http_and_websocket, 60)
{
	struct th_broker b;
	struct th_xsrv x;
	struct hresp h;
	char out[4096];
	start(&b, &x, NULL, NULL);
	char *deep = nested(700, "", "");
	ASSERT_EQ(status_of(x.port, "POST", "/mqtt/publish", JSON_CT, deep), 400);
	still_answers(x.port);
	char *deep2 = nested(700, "{\"topic\":\"demo/a\",\"payload\":", "}");
	ASSERT_EQ(status_of(x.port, "POST", "/mqtt/publish", JSON_CT, deep2), 400);
	/* 33 levels: over the default BRIDGE_MAX_JSON_DEPTH (32). */
	char *d33 = nested(32, "{\"topic\":\"demo/a\",\"payload\":", "}");
	ASSERT_EQ(http(x.port, "POST", "/mqtt/publish", JSON_CT, d33, &h), 400);
	ASSERT(strstr(h.body, "BRIDGE_MAX_JSON_DEPTH") != NULL);
	hfree(&h);
	char *d31 = nested(30, "{\"topic\":\"demo/a\",\"payload\":", "}");
	ASSERT_EQ(status_of(x.port, "POST", "/mqtt/publish", JSON_CT, d31), 200);
	still_answers(x.port);

	struct th_raw *r = th_ws_connect(x.port, 0);
	ASSERT_EQ(ws_call(r, deep, out, sizeof(out)), 1);
	ASSERT(strstr(out, "\"op\":\"error\"") != NULL);
	ASSERT(strstr(out, "\"status\":400") != NULL);
	char *wdeep = nested(700, "{\"op\":\"publish\",\"topic\":\"demo/a\","
	                          "\"payload\":", "}");
	ASSERT_EQ(ws_call(r, wdeep, out, sizeof(out)), 1);
	ASSERT(strstr(out, "\"status\":400") != NULL);
	/* The connection is still usable. */
	ASSERT_EQ(ws_call(r, "{\"op\":\"subscribe\",\"topic\":\"demo/x\"}", out,
	                  sizeof(out)),
	          1);
	ASSERT(strstr(out, "\"op\":\"ack\"") != NULL);
	th_raw_close(r);
	still_answers(x.port);
	free(deep);
	free(deep2);
	free(d33);
	free(d31);
	free(wdeep);
	stop_all(&b, &x);
}

/* The request's envelope (3.1.1) from mosquitto_sub: its reply_to. */
static void reply_to_of(const struct th_sub *s, char *out, size_t cap)
{
	int n;
	char *m = th_sub_messages(s, &n);
	quoted_after(m, "\"reply_to\":\"", out, cap);
	free(m);
}

/* Sends POST /mqtt/request/demo/req on r (not waiting), answers it from
 * the broker with payload (extra: more mosquitto_pub arguments), returns
 * the response's status. */
static int request_answered(const struct th_broker *b, int port,
                            const char *payload, const char *extra,
                            struct hresp *h)
{
	struct th_sub s;
	char req[512], reply_to[256];
	th_sub_start(&s, b, "demo/req", 1, NULL);
	struct th_raw *r = th_raw_connect(port, 0);
	snprintf(req, sizeof(req),
	         "POST /mqtt/request/demo/req?timeout=20 HTTP/1.1\r\n"
	         "Host: 127.0.0.1:%d\r\n" RAW_CT
	         "Content-Length: 2\r\nConnection: close\r\n\r\nhi",
	         port);
	th_raw_send(r, req, strlen(req));
	ASSERT_EQ(th_sub_wait(&s, 20000), 0);
	reply_to_of(&s, reply_to, sizeof(reply_to));
	th_pub(b, reply_to, payload, 1, 0, extra);
	int status = read_resp(r, h, 30000);
	th_raw_close(r);
	return status;
}

TEST_T(an_mqtt_reply_nested_700_deep_to_a_request_is_a_502, 60)
{
	struct th_broker b;
	struct th_xsrv x;
	struct hresp h;
	start(&b, &x, NULL, NULL);
	char *deep = nested(700, "", "");
	ASSERT_EQ(request_answered(&b, x.port, deep, NULL, &h), 502);
	hfree(&h);
	still_answers(x.port);
	ASSERT_EQ(request_answered(&b, x.port, "[[1]]", NULL, &h), 200);
	ASSERT(strcasestr(h.head, "Content-Type: application/json") != NULL);
	ASSERT(strcasestr(h.head, "X-Content-Type-Options: nosniff") != NULL);
	hfree(&h);
	free(deep);
	stop_all(&b, &x);
}

/* ======================================================================
 * 7. Replies to requests, reply topics, nosniff
 * ==================================================================== */

TEST_T(a_reply_content_type_comes_from_an_allow_list_never_html, 60)
{
	struct th_broker b;
	struct th_xsrv x;
	struct hresp h;
	start_bridge(&b, &x,
	             "MQTT_PROTOCOL_VERSION 5\n"
	             "MQTT_BRIDGE_PATH /mqtt\nMQTT_BRIDGE_PUBLISH_ALLOW #\n"
	             "MQTT_BRIDGE_SUBSCRIBE_ALLOW demo/#\n",
	             NULL);
	/* MQTT 5: the request carries its reply topic as a property; the
	 * responder below reads it from mosquitto_sub's JSON output. */
	struct th_sub s;
	th_sub_start(&s, &b, "demo/req", 1, "-V 5 -F %j");
	struct th_raw *r = th_raw_connect(x.port, 0);
	char req[512];
	snprintf(req, sizeof(req),
	         "POST /mqtt/request/demo/req?timeout=20 HTTP/1.1\r\n"
	         "Host: 127.0.0.1:%d\r\n" RAW_CT
	         "Content-Length: 2\r\nConnection: close\r\n\r\nhi",
	         x.port);
	th_raw_send(r, req, strlen(req));
	ASSERT_EQ(th_sub_wait(&s, 20000), 0);
	int n;
	char *m = th_sub_messages(&s, &n);
	const char *p = strstr(m, "\"response-topic\":\"");
	ASSERT(p != NULL);
	p += 18;
	char topic[256], cd[256] = "";
	size_t l = strcspn(p, "\"");
	ASSERT(l < sizeof(topic));
	memcpy(topic, p, l);
	topic[l] = '\0';
	/* The correlation id: 128 random bits in hex, the last level. */
	const char *corr = strrchr(topic, '/') + 1;
	ASSERT_EQ(strlen(corr), 32);
	ASSERT_EQ(strspn(corr, "0123456789abcdef"), 32);
	/* A browser may not answer it, whatever BRIDGE_PUBLISH_ALLOW says. */
	char path[512];
	snprintf(path, sizeof(path), "/mqtt/publish/%s", topic);
	ASSERT_EQ(status_of(x.port, "POST", path, RAW_CT, "forged"), 403);
	snprintf(cd, sizeof(cd), "-V 5 -D publish content-type text/html");
	th_pub(&b, topic, "<script>alert(1)</script>", 1, 0, cd);
	ASSERT_EQ(read_resp(r, &h, 30000), 200);
	th_raw_close(r);
	ASSERT(strcasestr(h.head, "Content-Type: application/octet-stream") !=
	       NULL);
	ASSERT(strcasestr(h.head, "text/html") == NULL);
	ASSERT(strcasestr(h.head, "X-Content-Type-Options: nosniff") != NULL);
	hfree(&h);
	free(m);
	answers_then_stop(&b, &x);
}

TEST_T(browsers_cannot_subscribe_or_publish_to_reply_topics, 60)
{
	struct th_broker b;
	struct th_xsrv x;
	char out[4096];
	start_bridge(&b, &x,
	             "MQTT_CLIENT_ID attack-srv\n"
	             "MQTT_BRIDGE_PATH /mqtt\nMQTT_BRIDGE_PUBLISH_ALLOW #\n"
	             "MQTT_BRIDGE_SUBSCRIBE_ALLOW #\n",
	             NULL);
	struct th_raw *r = th_ws_connect(x.port, 0);
	static const char *const refused[] = {"attack-srv/reply/+",
	                                      "attack-srv/reply/#", "attack-srv/#",
	                                      "attack-srv/+/+"};
	for (size_t i = 0; i < 4; i++) {
		char msg[128];
		snprintf(msg, sizeof(msg), "{\"op\":\"subscribe\",\"topic\":\"%s\"}",
		         refused[i]);
		ASSERT_EQ(ws_call(r, msg, out, sizeof(out)), 1);
		if (strstr(out, "\"status\":403") == NULL)
			th_fail(__FILE__, __LINE__, "subscribe %s: %s", refused[i], out);
	}
	ASSERT_EQ(ws_call(r,
	                  "{\"op\":\"publish\",\"topic\":\"attack-srv/reply/"
	                  "0123456789abcdef0123456789abcdef\",\"payload\":\"x\"}",
	                  out, sizeof(out)),
	          1);
	ASSERT(strstr(out, "\"status\":403") != NULL);
	/* Other topics of the allow list still work. */
	ASSERT_EQ(ws_call(r, "{\"op\":\"subscribe\",\"topic\":\"attack-srv/x\"}",
	                  out, sizeof(out)),
	          1);
	ASSERT(strstr(out, "\"op\":\"ack\"") != NULL);
	th_raw_close(r);
	ASSERT_EQ(status_of(x.port, "POST", "/mqtt/publish/attack-srv/reply/abc",
	                    RAW_CT, "forged"),
	          403);
	answers_then_stop(&b, &x);
}

TEST_T(every_bridge_reply_says_nosniff, 60)
{
	struct th_broker b;
	struct th_xsrv x;
	struct hresp h;
	start(&b, &x, NULL, NULL);
	static const char *const routes[] = {"/mqtt/status", "/mqtt/nothing",
	                                     "/mqtt/last?filter=demo/%23",
	                                     "/mqtt/metrics", "/mqtt/publish"};
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		ASSERT(http(x.port, "GET", routes[i], NULL, NULL, &h) > 0);
		if (strcasestr(h.head, "X-Content-Type-Options: nosniff") == NULL)
			th_fail(__FILE__, __LINE__, "GET %s: no nosniff: %s", routes[i],
			        h.head);
		hfree(&h);
	}
	stop_all(&b, &x);
}

/* ======================================================================
 * 6. Cross-site requests
 * ==================================================================== */

TEST_T(cross_site_websockets_and_simple_posts_are_refused, 60)
{
	struct th_broker b;
	struct th_xsrv x;
	struct hresp h;
	char hdr[256];
	start(&b, &x, "MQTT_BRIDGE_ALLOWED_ORIGINS http://good.example", NULL);
	struct th_raw *r = th_raw_connect(x.port, 0);
	ASSERT_EQ(ws_open(r, x.port, "Origin: http://evil.example\r\n"), 403);
	th_raw_close(r);
	r = th_raw_connect(x.port, 0);
	ASSERT_EQ(ws_open(r, x.port, "Origin: http://good.example\r\n"), 101);
	th_raw_close(r);
	r = th_raw_connect(x.port, 0);
	snprintf(hdr, sizeof(hdr), "Origin: http://127.0.0.1:%d\r\n", x.port);
	ASSERT_EQ(ws_open(r, x.port, hdr), 101);
	th_raw_close(r);
	ASSERT_EQ(status_of(x.port, "POST", "/mqtt/publish",
	                    "Origin: http://evil.example\r\n" JSON_CT,
	                    "{\"topic\":\"demo/a\",\"payload\":\"x\"}"),
	          403);
	/* The three bodies a page on any site can send without asking. */
	static const char *const simple[] = {
	    "Content-Type: text/plain\r\n",
	    "Content-Type: application/x-www-form-urlencoded\r\n",
	    "Content-Type: multipart/form-data; boundary=x\r\n", ""};
	for (size_t i = 0; i < 4; i++) {
		ASSERT_EQ(http(x.port, "POST", "/mqtt/publish/demo/a", simple[i], "on",
		               &h),
		          415);
		hfree(&h);
		ASSERT_EQ(status_of(x.port, "POST", "/mqtt/publish", simple[i],
		                    "{\"topic\":\"demo/a\",\"payload\":\"x\"}"),
		          415);
	}
	ASSERT_EQ(status_of(x.port, "POST", "/mqtt/publish/demo/a", RAW_CT, "on"),
	          200);
	answers_then_stop(&b, &x);
}

/* ======================================================================
 * 10/11. Bodies and JSON that are not what they claim
 * ==================================================================== */

TEST_T(short_bodies_trailing_text_bad_utf8_and_big_numbers_are_refused, 90)
{
	struct th_broker b;
	struct th_xsrv x;
	struct hresp h;
	start(&b, &x, NULL, "request_timeout_ms 2000\n");
	/* Content-Length 100, 5 bytes, then the client stops sending. */
	struct th_raw *r = th_raw_connect(x.port, 0);
	char req[512];
	snprintf(req, sizeof(req),
	         "POST /mqtt/publish/demo/short HTTP/1.1\r\nHost: 127.0.0.1\r\n" RAW_CT
	         "Content-Length: 100\r\n\r\nhello");
	th_raw_send(r, req, strlen(req));
	shutdown(r->fd, SHUT_WR);
	int s = read_resp(r, &h, 30000);
	th_raw_close(r);
	hfree(&h);
	if (s == 200)
		th_fail(__FILE__, __LINE__, "a short body was published as complete");
	/* A chunk that announces 2^64-1 bytes. */
	r = th_raw_connect(x.port, 0);
	snprintf(req, sizeof(req),
	         "POST /mqtt/publish/demo/chunk HTTP/1.1\r\nHost: 127.0.0.1\r\n" RAW_CT
	         "Transfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc");
	th_raw_send(r, req, strlen(req));
	shutdown(r->fd, SHUT_WR);
	s = read_resp(r, &h, 30000);
	th_raw_close(r);
	hfree(&h);
	if (s == 200)
		th_fail(__FILE__, __LINE__, "a broken chunk was published");
	still_answers(x.port);

	static const char *const bad[] = {
	    "{\"topic\":\"demo/a\",\"payload\":\"x\"} trailing",
	    "{\"topic\":\"demo/a\",\"payload\":\"x\"}{}",
	    "{\"topic\":\"demo/a\",\"payload\":\"\xff\xfe\"}",
	    "{\"topic\":\"demo/a\",\"payload\":\"\xc0\xaf\"}",
	    "{\"topic\":\"demo/a\",\"payload\":123456789012345678901234567890}",
	    "{\"topic\":\"demo/a\",\"payload\":9007199254740993}",
	    "{\"topic\":\"demo/a\",\"payload\":1e400}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		s = http(x.port, "POST", "/mqtt/publish", JSON_CT, bad[i], &h);
		hfree(&h);
		if (s != 400)
			th_fail(__FILE__, __LINE__, "%s: %d, not 400", bad[i], s);
	}
	/* What a double holds exactly goes through. */
	ASSERT_EQ(http(x.port, "POST", "/mqtt/publish", JSON_CT,
	               "{\"topic\":\"demo/a\",\"payload\":[1.5,-0.25,1e21,"
	               "9007199254740992]}\n",
	               &h),
	          200);
	hfree(&h);
	answers_then_stop(&b, &x);
}

TEST_T(a_lying_content_length_gets_408_after_the_request_timeout, 90)
{
	struct th_broker b;
	struct th_xsrv x;
	struct hresp h;
	start(&b, &x, NULL, "request_timeout_ms 1000\n");
	/* Content-Length 100, 5 bytes, and the connection kept open: the body
	 * never completes. */
	struct th_raw *r = th_raw_connect(x.port, 0);
	const char *req = "POST /mqtt/publish/demo/slow HTTP/1.1\r\nHost: 127.0.0.1\r\n" RAW_CT
	                  "Content-Length: 100\r\n\r\nhello";
	th_raw_send(r, req, strlen(req));
	/* 408 when the clock ran out during a read, 400 when the read after
	 * found nothing more: either way not published as complete. */
	int s = read_resp(r, &h, 30000);
	hfree(&h);
	if (s != 408 && s != 400)
		th_fail(__FILE__, __LINE__, "a body that never completes got %d", s);
	th_raw_close(r);
	answers_then_stop(&b, &x);
}

/* ======================================================================
 * 8/12. WebSocket bounds
 * ==================================================================== */

TEST_T(websocket_messages_over_max_body_close_with_1009, 60)
{
	struct th_broker b;
	struct th_xsrv x;
	char out[4096];
	start(&b, &x, "MQTT_BRIDGE_MAX_BODY 1000", NULL);
	/* One frame. */
	struct th_raw *r = th_ws_connect(x.port, 0);
	char big[3000];
	int n = snprintf(big, sizeof(big),
	                 "{\"op\":\"publish\",\"topic\":\"demo/a\",\"payload\":\"");
	memset(big + n, 'x', 2000);
	snprintf(big + n + 2000, sizeof(big) - (size_t)n - 2000, "\"}");
	th_ws_send(r, 1, 1, big, strlen(big));
	int op;
	ASSERT_EQ(close_code(r), 1009);
	th_raw_close(r);
	/* Fragments of 400 bytes each. */
	r = th_ws_connect(x.port, 0);
	th_ws_send(r, 0, 1, big, 400);
	th_ws_send(r, 0, 0, big + 400, 400);
	th_ws_send(r, 0, 0, big + 800, 400);
	ASSERT_EQ(close_code(r), 1009);
	th_raw_close(r);
	/* A fragmented message within the bound is put together. */
	r = th_ws_connect(x.port, 0);
	const char *sub = "{\"op\":\"subscribe\",\"topic\":\"demo/frag\"}";
	th_ws_send(r, 0, 1, sub, 10);
	th_ws_send(r, 1, 0, sub + 10, strlen(sub) - 10);
	for (;;) {
		op = th_ws_frame_buf(r, out, sizeof(out), 10000);
		ASSERT_EQ(op, 1);
		if (strstr(out, "\"op\":\"ack\"") != NULL ||
		    strstr(out, "\"op\":\"error\"") != NULL)
			break;
	}
	ASSERT(strstr(out, "\"op\":\"ack\"") != NULL);
	th_raw_close(r);
	answers_then_stop(&b, &x);
}

TEST_T(last_values_are_bounded_in_bytes_the_oldest_going_first, 60)
{
	struct th_broker b;
	struct th_xsrv x;
	struct hresp h;
	start(&b, &x,
	      "MQTT_SUBSCRIBE demo/#\nMQTT_BRIDGE_LAST_VALUES_BYTES 5000", NULL);
	char big[2001], topic[64];
	memset(big, 'v', 2000);
	big[2000] = '\0';
	for (int i = 1; i <= 3; i++) {
		snprintf(topic, sizeof(topic), "demo/lv/%d", i);
		th_pub(&b, topic, big, 1, 0, NULL);
		/* In order: each is cached before the next is sent. */
		char path[96];
		snprintf(path, sizeof(path), "/mqtt/last/%s", topic);
		int s = 0;
		int64_t until = th_now_ms() + 10000 * th_timeout_scale();
		while (th_now_ms() < until &&
		       (s = http(x.port, "GET", path, NULL, NULL, &h)) != 200) {
			hfree(&h);
			usleep(50 * 1000);
		}
		hfree(&h);
		ASSERT_EQ(s, 200);
	}
	/* 3 x 2000 bytes do not fit in 5000: the first went. */
	ASSERT_EQ(status_of(x.port, "GET", "/mqtt/last/demo/lv/1", NULL, NULL),
	          404);
	ASSERT_EQ(status_of(x.port, "GET", "/mqtt/last/demo/lv/2", NULL, NULL),
	          200);
	/* One message larger than the bound is not kept, and its topic's
	 * older value is forgotten. */
	char *huge = malloc(6001);
	ASSERT(huge != NULL);
	memset(huge, 'h', 6000);
	huge[6000] = '\0';
	th_pub(&b, "demo/lv/2", huge, 1, 0, NULL);
	free(huge);
	th_pub(&b, "demo/lv/4", "marker", 1, 0, NULL);
	int s = 0;
	int64_t until = th_now_ms() + 10000 * th_timeout_scale();
	while (th_now_ms() < until &&
	       (s = http(x.port, "GET", "/mqtt/last/demo/lv/4", NULL, NULL, &h)) !=
	           200) {
		hfree(&h);
		usleep(50 * 1000);
	}
	hfree(&h);
	ASSERT_EQ(s, 200);
	ASSERT_EQ(status_of(x.port, "GET", "/mqtt/last/demo/lv/2", NULL, NULL),
	          404);
	answers_then_stop(&b, &x);
}

TEST_T(a_browser_gets_at_most_max_filters, 60)
{
	struct th_broker b;
	struct th_xsrv x;
	char out[4096], msg[128];
	start(&b, &x, "MQTT_BRIDGE_MAX_FILTERS 5", NULL);
	struct th_raw *r = th_ws_connect(x.port, 0);
	for (int i = 0; i < 6; i++) {
		snprintf(msg, sizeof(msg), "{\"op\":\"subscribe\",\"topic\":\"demo/%d\"}",
		         i);
		ASSERT_EQ(ws_call(r, msg, out, sizeof(out)), 1);
		if (i < 5)
			ASSERT(strstr(out, "\"op\":\"ack\"") != NULL);
		else
			ASSERT(strstr(out, "BRIDGE_MAX_FILTERS") != NULL);
	}
	th_raw_close(r);
	answers_then_stop(&b, &x);
}

/* ======================================================================
 * 9. BRIDGE_MAX_CLIENTS
 * ==================================================================== */

TEST_T(streams_beyond_max_clients_get_503_and_status_still_answers, 60)
{
	struct th_broker b;
	struct th_xsrv x;
	struct hresp h;
	start(&b, &x, "MQTT_BRIDGE_MAX_CLIENTS 3", "num_threads 8\n");
	struct th_raw *ws[3];
	for (int i = 0; i < 2; i++) {
		ws[i] = th_raw_connect(x.port, 0);
		ASSERT_EQ(ws_open(ws[i], x.port, NULL), 101);
	}
	struct th_raw *sse = th_raw_connect(x.port, 0);
	char req[256];
	snprintf(req, sizeof(req),
	         "GET /mqtt/events?topic=demo/%%23 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
	th_raw_send(sse, req, strlen(req));
	char *end;
	int64_t until = th_now_ms() + 10000 * th_timeout_scale();
	while ((end = memmem(sse->buf, sse->len, "\r\n\r\n", 4)) == NULL &&
	       th_now_ms() < until)
		th_raw_fill(sse, 500);
	ASSERT(strncmp(sse->buf, "HTTP/1.1 200", 12) == 0);
	ws[2] = th_raw_connect(x.port, 0);
	ASSERT_EQ(ws_open(ws[2], x.port, NULL), 503);
	ASSERT_EQ(http(x.port, "GET", "/mqtt/events?topic=demo/x", NULL, NULL, &h),
	          503);
	ASSERT(strcasestr(h.head, "Retry-After:") != NULL);
	hfree(&h);
	ASSERT_EQ(status_of(x.port, "POST", "/mqtt/request/demo/q", RAW_CT, "x"),
	          503);
	still_answers(x.port);
	th_raw_close(sse);
	for (int i = 0; i < 3; i++)
		th_raw_close(ws[i]);
	stop_all(&b, &x);
}

/* ======================================================================
 * 5. Digest replay
 * ==================================================================== */

/* An Authorization header for method uri with nonce and nc. */
static void digest(char *out, size_t cap, const char *method, const char *uri,
                   const char *nonce, const char *nc)
{
	char ha1[33], ha2[33], resp[33];
	const char *cnonce = "0a4f113b";
	mg_md5(ha1, USER, ":", REALM, ":", PASS, NULL);
	mg_md5(ha2, method, ":", uri, NULL);
	mg_md5(resp, ha1, ":", nonce, ":", nc, ":", cnonce, ":auth:", ha2, NULL);
	snprintf(out, cap,
	         "Authorization: Digest username=\"" USER "\", realm=\"" REALM
	         "\", nonce=\"%s\", uri=\"%s\", qop=auth, nc=%s, "
	         "cnonce=\"%s\", response=\"%s\"\r\n",
	         nonce, uri, nc, cnonce, resp);
}

/* The nonce of a 401's WWW-Authenticate. */
static void nonce_of(const struct hresp *h, char *out, size_t cap)
{
	quoted_after(h->head, "nonce=\"", out, cap);
}

/* Starts them with the bridge behind digest authentication (USER / PASS in
 * REALM; more: further MQTT lines); a request without credentials gets 401
 * and a nonce, into nonce. */
static void start_digest(struct th_broker *b, struct th_xsrv *x,
                         const char *more, char *nonce, size_t cap)
{
	char htd[512], mqtt[1024], cw[256];
	struct hresp h;
	th_path(htd, sizeof(htd), "users.htdigest");
	write_htdigest(htd);
	snprintf(mqtt, sizeof(mqtt), "MQTT_BRIDGE_AUTH_FILE %s\n%s", htd, more);
	snprintf(cw, sizeof(cw), "authentication_domain %s\n", REALM);
	start(b, x, mqtt, cw);
	ASSERT_EQ(http(x->port, "GET", "/mqtt/status", NULL, NULL, &h), 401);
	nonce_of(&h, nonce, cap);
	hfree(&h);
}

TEST_T(a_captured_digest_header_cannot_be_replayed, 60)
{
	struct th_broker b;
	struct th_xsrv x;
	char nonce[128], auth[1024], hdr[1200];
	start_digest(&b, &x, "", nonce, sizeof(nonce));
	const char *uri = "/mqtt/publish/demo/a?qos=1";
	digest(auth, sizeof(auth), "POST", uri, nonce, "00000001");
	snprintf(hdr, sizeof(hdr), "%s" RAW_CT, auth);
	ASSERT_EQ(status_of(x.port, "POST", uri, hdr, "one"), 200);
	/* The same header again: refused. */
	ASSERT_EQ(status_of(x.port, "POST", uri, hdr, "two"), 401);
	/* Another query string under the same digest: refused. */
	digest(auth, sizeof(auth), "POST", uri, nonce, "00000002");
	snprintf(hdr, sizeof(hdr), "%s" RAW_CT, auth);
	ASSERT_EQ(status_of(x.port, "POST",
	                    "/mqtt/publish/demo/a?qos=0&retain=true", hdr, "three"),
	          401);
	/* The next nc on the right target: accepted. */
	digest(auth, sizeof(auth), "POST", uri, nonce, "00000003");
	snprintf(hdr, sizeof(hdr), "%s" RAW_CT, auth);
	ASSERT_EQ(status_of(x.port, "POST", uri, hdr, "four"), 200);
	/* A nonce the server never made. */
	digest(auth, sizeof(auth), "GET", "/mqtt/status", "5f00-1-0123", "00000001");
	ASSERT_EQ(status_of(x.port, "GET", "/mqtt/status", auth, NULL), 401);
	answers_then_stop(&b, &x);
}

TEST_T(an_expired_nonce_gets_401_with_stale_true, 60)
{
	struct th_broker b;
	struct th_xsrv x;
	struct hresp h;
	char nonce[128], auth[1024];
	start_digest(&b, &x, "MQTT_BRIDGE_NONCE_LIFETIME 1", nonce, sizeof(nonce));
	sleep(3); /* the lifetime is 1 s: this nonce is out of it */
	digest(auth, sizeof(auth), "GET", "/mqtt/status", nonce, "00000001");
	ASSERT_EQ(http(x.port, "GET", "/mqtt/status", auth, NULL, &h), 401);
	ASSERT(strstr(h.head, "stale=true") != NULL);
	hfree(&h);
	stop_all(&b, &x);
}

/* ======================================================================
 * Second round (issue 22)
 * ==================================================================== */

/* "demo/" and levels - 2 levels of "+", then "#": levels levels in all,
 * malloc()ed. */
static char *deep_filter(int levels)
{
	char *f = malloc(5 + 2 * (size_t)levels + 1);
	ASSERT(f != NULL);
	size_t n = (size_t)sprintf(f, "demo/");
	for (int i = 0; i < levels - 2; i++)
		n += (size_t)sprintf(f + n, "+/");
	sprintf(f + n, "#");
	return f;
}

/* {"op":<op>,"topic":<topic>}: the reply frame's text in out. */
static int ws_filter_call(struct th_raw *r, const char *op, const char *topic,
                          char *out, size_t cap)
{
	size_t n = strlen(topic) + 64;
	char *json = malloc(n);
	ASSERT(json != NULL);
	snprintf(json, n, "{\"op\":\"%s\",\"topic\":\"%s\"}", op, topic);
	int rop = ws_call(r, json, out, cap);
	free(json);
	return rop;
}

TEST_T(a_2000_level_websocket_filter_is_refused_and_leaving_does_not_crash,
       60)
{
	struct th_broker b;
	struct th_xsrv x;
	char out[4096];
	start(&b, &x, NULL, NULL);
	/* The finding: 2,000 levels (4 kB) inside demo/#, acknowledged,
	 * then the socket closed: SIGSEGV in the tree's recursive removal. */
	char *f = deep_filter(2000);
	ASSERT_GT(strlen(f), 4000);
	struct th_raw *r = th_ws_connect(x.port, 0);
	ASSERT_EQ(ws_filter_call(r, "subscribe", f, out, sizeof(out)), 1);
	th_raw_close(r);
	free(f);
	still_answers(x.port); /* first: the crash, if any, came */
	ASSERT_CONTAINS(out, "\"op\":\"error\"");
	ASSERT_CONTAINS(out, "too long");
	/* The most a browser may hold: 200 levels (MAX_TOPIC_LEVELS), within
	 * 511 bytes; subscribed, unsubscribed, subscribed and left. */
	f = deep_filter(200);
	r = th_ws_connect(x.port, 0);
	ASSERT_EQ(ws_filter_call(r, "subscribe", f, out, sizeof(out)), 1);
	ASSERT_CONTAINS(out, "\"op\":\"ack\"");
	ASSERT_EQ(ws_filter_call(r, "unsubscribe", f, out, sizeof(out)), 1);
	ASSERT_CONTAINS(out, "\"op\":\"ack\"");
	ASSERT_EQ(ws_filter_call(r, "subscribe", f, out, sizeof(out)), 1);
	ASSERT_CONTAINS(out, "\"op\":\"ack\"");
	th_raw_close(r);
	free(f);
	/* 201 levels: more than MAX_TOPIC_LEVELS. */
	f = deep_filter(201);
	r = th_ws_connect(x.port, 0);
	ASSERT_EQ(ws_filter_call(r, "subscribe", f, out, sizeof(out)), 1);
	ASSERT_CONTAINS(out, "MAX_TOPIC_LEVELS");
	th_raw_close(r);
	free(f);
	still_answers(x.port);
	ASSERT_EQ(kill(x.pid, 0), 0);
	stop_all(&b, &x);
}

/* A topic of levels levels ("demo/l/l/..."), malloc()ed. */
static char *deep_topic(int levels)
{
	char *t = malloc(5 + 2 * (size_t)levels + 1);
	ASSERT(t != NULL);
	size_t n = (size_t)sprintf(t, "demo");
	for (int i = 1; i < levels; i++)
		n += (size_t)sprintf(t + n, "/l");
	return t;
}

/* The bridge's MQTT client delivers: a QoS 1 publish through the bridge
 * reaches an independent subscriber. */
static void bridge_delivers(int port, struct th_sub *sub, const char *topic)
{
	char path[256], line[300];
	snprintf(path, sizeof(path), "/mqtt/publish/%s?qos=1", topic);
	ASSERT_EQ(status_of(port, "POST", path, RAW_CT, "alive"), 200);
	snprintf(line, sizeof(line), "%s alive", topic);
	ASSERT(WAIT_UNTIL(th_count_lines(sub->out, line) == 1, 10000));
}

TEST_T(noncharacters_and_251_levels_get_400_and_the_client_stays_connected,
       90)
{
	struct th_broker b;
	struct th_xsrv x;
	struct th_sub sub;
	struct hresp h;
	char out[4096], path[1024], body[1024];
	start(&b, &x, NULL, NULL);
	th_sub_start(&sub, &b, "demo/#", 0, "-q 1");
	bridge_delivers(x.port, &sub, "demo/before");

	/* The finding's curl: a U+FFFF in an SSE filter. mosquitto drops a
	 * client over it, on every resend after each reconnect. */
	ASSERT_EQ(status_of(x.port, "GET", "/mqtt/events?topic=demo/%EF%BF%BF",
	                    NULL, NULL),
	          400);
	/* The other non-characters, over SSE, WebSocket and publish. */
	static const char *const nonchars[] = {"%EF%BF%BE", "%EF%B7%90",
	                                       "%EF%B7%AF", "%F0%9F%BF%BF",
	                                       "%F4%8F%BF%BE"};
	for (size_t i = 0; i < sizeof(nonchars) / sizeof(nonchars[0]); i++) {
		snprintf(path, sizeof(path), "/mqtt/events?topic=demo/%s", nonchars[i]);
		ASSERT_EQ(status_of(x.port, "GET", path, NULL, NULL), 400);
	}
	struct th_raw *r = th_ws_connect(x.port, 0);
	ASSERT_EQ(ws_filter_call(r, "subscribe", "demo/\xef\xbf\xbe", out,
	                         sizeof(out)),
	          1);
	ASSERT_CONTAINS(out, "\"op\":\"error\"");
	ASSERT_EQ(ws_call(r,
	                  "{\"op\":\"publish\",\"topic\":\"demo/\xef\xb7\x90\","
	                  "\"payload\":\"x\",\"qos\":1}",
	                  out, sizeof(out)),
	          1);
	ASSERT_CONTAINS(out, "\"op\":\"error\"");
	th_raw_close(r);
	ASSERT_EQ(status_of(x.port, "POST", "/mqtt/publish/demo/%EF%BF%BF?qos=1",
	                    RAW_CT, "x"),
	          400);

	/* The finding's 251-level topic at QoS 1, as JSON and raw; and a
	 * filter of 201 levels over SSE. */
	char *t = deep_topic(251);
	snprintf(body, sizeof(body),
	         "{\"topic\":\"%s\",\"payload\":\"x\",\"qos\":1}", t);
	ASSERT_EQ(http(x.port, "POST", "/mqtt/publish", JSON_CT, body, &h), 400);
	ASSERT_CONTAINS(h.body, "MAX_TOPIC_LEVELS");
	hfree(&h);
	snprintf(path, sizeof(path), "/mqtt/publish/%s?qos=1", t);
	ASSERT_EQ(status_of(x.port, "POST", path, RAW_CT, "x"), 400);
	snprintf(path, sizeof(path), "/mqtt/request/%s?timeout=1", t);
	ASSERT_EQ(status_of(x.port, "POST", path, RAW_CT, "x"), 400);
	free(t);
	t = deep_filter(201);
	snprintf(path, sizeof(path), "/mqtt/events?topic=%s", t);
	for (char *p = strchr(path, '#'); p != NULL; p = NULL) {
		memmove(p + 3, p + 1, strlen(p + 1) + 1);
		memcpy(p, "%23", 3);
	}
	ASSERT_EQ(status_of(x.port, "GET", path, NULL, NULL), 400);
	free(t);

	/* The MQTT client was never dropped: it delivers at once, and
	 * the status says connected. */
	bridge_delivers(x.port, &sub, "demo/after");
	ASSERT_EQ(http(x.port, "GET", "/mqtt/status", NULL, NULL, &h), 200);
	ASSERT_CONTAINS(h.body, "\"connected\":true");
	hfree(&h);
	ASSERT_EQ(th_count_lines(x.log, "connected to"), 1);
	th_sub_stop(&sub);
	stop_all(&b, &x);
}

TEST_T(the_c_api_refuses_noncharacters_and_topics_over_max_topic_levels, 60)
{
	struct th_broker b;
	char err[256];
	th_broker_start(&b, NULL);
	struct mg_mqtt *c = mg_mqtt_create(NULL);
	ASSERT(c != NULL);
	const char *opts[] = {"MQTT_BROKER_URL", b.url, "MQTT_MAX_TOPIC_LEVELS",
	                      "4", NULL};
	ASSERT_EQ(mg_mqtt_start(c, NULL, opts, err, sizeof(err)), 0);
	ASSERT(WAIT_UNTIL(mg_mqtt_is_connected(c), 10000));
	ASSERT_EQ(mg_mqtt_publish(c, "a/\xef\xbf\xbf", "x", 1, 1, 0),
	          MG_MQTT_ERR_TOPIC);
	ASSERT_EQ(mg_mqtt_subscribe(c, "a/\xef\xb7\x90/#", 1), MG_MQTT_ERR_FILTER);
	ASSERT_EQ(mg_mqtt_publish(c, "a/b/c/d/e", "x", 1, 1, 0), MG_MQTT_ERR_TOPIC);
	ASSERT_EQ(mg_mqtt_subscribe(c, "a/+/c/d/#", 1), MG_MQTT_ERR_FILTER);
	ASSERT_EQ(mg_mqtt_unsubscribe(c, "a/+/c/d/#"), MG_MQTT_ERR_FILTER);
	struct mg_mqtt_reply rep;
	ASSERT_EQ(mg_mqtt_request(c, "a/b/c/d/e", "x", 1, 1, 100, &rep),
	          MG_MQTT_ERR_TOPIC);
	/* Four levels are fine, and the client is still connected. */
	ASSERT_GT(mg_mqtt_publish(c, "a/b/c/d", "x", 1, 1, 0), 0);
	ASSERT_GT(mg_mqtt_subscribe(c, "$share/g/a/+/c/#", 1), 0);
	ASSERT(mg_mqtt_is_connected(c));
	mg_mqtt_stop(c);
	th_broker_stop(&b);
}

/* The status says no WebSocket is open. */
static int no_websockets(int port)
{
	struct hresp h;
	int none = http(port, "GET", "/mqtt/status", NULL, NULL, &h) == 200 &&
	           strstr(h.body, "\"websocket_clients\":0") != NULL;
	hfree(&h);
	return none;
}

TEST_T(simultaneous_upgrades_never_pass_max_clients, 90)
{
	enum { LIMIT = 8, TRIES = 16, ROUNDS = 10 };
	struct th_broker b;
	struct th_xsrv x;
	char req[512];
	start(&b, &x, "MQTT_BRIDGE_MAX_CLIENTS 8", "num_threads 40\n");
	/* All sixteen requests sent before any answer is read: their upgrades
	 * run side by side on sixteen workers. */
	for (int round = 0; round < ROUNDS; round++) {
		struct th_raw *r[TRIES];
		int in = 0;
		snprintf(req, sizeof(req),
		         "GET /mqtt/ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
		         "Upgrade: websocket\r\nConnection: Upgrade\r\n"
		         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
		         "Sec-WebSocket-Version: 13\r\n\r\n",
		         x.port);
		for (int i = 0; i < TRIES; i++)
			r[i] = th_raw_connect(x.port, 0);
		for (int i = 0; i < TRIES; i++)
			th_raw_send(r[i], req, strlen(req));
		for (int i = 0; i < TRIES; i++) {
			while (memmem(r[i]->buf, r[i]->len, "\r\n\r\n", 4) == NULL)
				ASSERT_GT(th_raw_fill(r[i], 10000), 0);
			in += strncmp(r[i]->buf, "HTTP/1.1 101", 12) == 0;
		}
		if (in > LIMIT)
			th_fail(__FILE__, __LINE__, "round %d: %d of %d upgrades in", round,
			        in, TRIES);
		ASSERT_EQ(in, LIMIT);
		for (int i = 0; i < TRIES; i++)
			th_raw_close(r[i]);
		/* Their places come back once they are gone. */
		ASSERT(WAIT_UNTIL(no_websockets(x.port), 10000));
	}
	answers_then_stop(&b, &x);
}

TEST_T(a_flood_of_challenges_does_not_evict_a_nonce_being_answered, 90)
{
	struct th_broker b;
	struct th_xsrv x;
	char nonce[128], auth[1024];
	start_digest(&b, &x, "", nonce, sizeof(nonce));
	/* While the browser computes its answer, an attacker without
	 * credentials asks for more challenges than the server tracks nonces
	 * (1,024). */
	for (int i = 0; i < 1100; i++) {
		ASSERT_EQ(status_of(x.port, "GET", "/mqtt/status", NULL, NULL), 401);
	}
	digest(auth, sizeof(auth), "GET", "/mqtt/status", nonce, "00000001");
	ASSERT_EQ(status_of(x.port, "GET", "/mqtt/status", auth, NULL), 200);
	/* Still no replay. */
	ASSERT_EQ(status_of(x.port, "GET", "/mqtt/status", auth, NULL), 401);
	digest(auth, sizeof(auth), "GET", "/mqtt/status", nonce, "00000002");
	ASSERT_EQ(status_of(x.port, "GET", "/mqtt/status", auth, NULL), 200);
	stop_all(&b, &x);
}

TEST_T(dns_rebinding_hosts_are_refused_on_every_route_and_the_websocket, 60)
{
	struct th_broker b;
	struct th_xsrv x;
	struct th_sub sub;
	struct hresp h;
	char req[1024], hdr[256];
	start(&b, &x, "MQTT_BRIDGE_ALLOWED_HOSTS app.example, other.example",
	      NULL);
	th_sub_start(&sub, &b, "demo/#", 0, "-q 1");
	/* The finding: evil.example resolves to this server; the page's
	 * Origin matches its Host, so the Origin check passes. */
	snprintf(hdr, sizeof(hdr), "Origin: http://evil.example:%d\r\n", x.port);
	const char *paths[] = {"/mqtt/status", "/mqtt/events?topic=demo/x",
	                       "/mqtt/last", "/mqtt/metrics"};
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		snprintf(req, sizeof(req),
		         "GET %s HTTP/1.1\r\nHost: evil.example:%d\r\n%s"
		         "Connection: close\r\n\r\n",
		         paths[i], x.port, hdr);
		ASSERT_EQ(raw_req(x.port, req, strlen(req), &h), 403);
		ASSERT_CONTAINS(h.body, "BRIDGE_ALLOWED_HOSTS");
		hfree(&h);
	}
	snprintf(req, sizeof(req),
	         "POST /mqtt/publish/demo/rebound HTTP/1.1\r\n"
	         "Host: evil.example:%d\r\n%s" RAW_CT
	         "Content-Length: 1\r\nConnection: close\r\n\r\nx",
	         x.port, hdr);
	ASSERT_EQ(raw_req(x.port, req, strlen(req), &h), 403);
	hfree(&h);
	snprintf(req, sizeof(req),
	         "GET /mqtt/ws HTTP/1.1\r\nHost: evil.example:%d\r\n%s"
	         "Upgrade: websocket\r\nConnection: Upgrade\r\n"
	         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	         "Sec-WebSocket-Version: 13\r\n\r\n",
	         x.port, hdr);
	ASSERT_EQ(raw_req(x.port, req, strlen(req), &h), 403);
	hfree(&h);
	/* Accepted: localhost, IP literals, and the listed names. */
	const char *good[] = {"localhost", "LOCALHOST:1", "127.0.0.1", "[::1]:8",
	                      "app.example", "Other.Example:443"};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		snprintf(req, sizeof(req),
		         "GET /mqtt/status HTTP/1.1\r\nHost: %s\r\n"
		         "Connection: close\r\n\r\n",
		         good[i]);
		if (raw_req(x.port, req, strlen(req), &h) != 200)
			th_fail(__FILE__, __LINE__, "Host %s refused: %s", good[i], h.body);
		hfree(&h);
	}
	snprintf(req, sizeof(req),
	         "POST /mqtt/publish/demo/listed HTTP/1.1\r\nHost: app.example\r\n"
	         "Origin: http://app.example\r\n" RAW_CT
	         "Content-Length: 1\r\nConnection: close\r\n\r\nx");
	ASSERT_EQ(raw_req(x.port, req, strlen(req), &h), 200);
	hfree(&h);
	/* The example's own route, under mg_mqtt_bridge_check_publish(). */
	snprintf(req, sizeof(req),
	         "POST /api/publish/demo/rebound2 HTTP/1.1\r\n"
	         "Host: evil.example:%d\r\n%s" RAW_CT
	         "Content-Length: 1\r\nConnection: close\r\n\r\nx",
	         x.port, hdr);
	ASSERT_EQ(raw_req(x.port, req, strlen(req), &h), 403);
	hfree(&h);
	bridge_delivers(x.port, &sub, "demo/probe");
	ASSERT(th_sub_has(&sub, "demo/listed x"));
	ASSERT(!th_sub_has(&sub, "rebound"));
	th_sub_stop(&sub);
	stop_all(&b, &x);
}

/* Sends the request head, then its body a byte every gap_ms, until a
 * response comes or max bytes went. Returns the bytes sent before the
 * response (max when none came before the end); its status into *status. */
static int trickle(int port, const char *head, int gap_ms, int max,
                   int *status)
{
	struct hresp h;
	struct th_raw *r = th_raw_connect(port, 0);
	int sent = 0;
	th_raw_send(r, head, strlen(head));
	*status = 0;
	for (; sent < max; sent++) {
		if (th_raw_fill(r, gap_ms) > 0)
			break; /* answered */
		th_raw_send(r, "x", 1);
	}
	*status = read_resp(r, &h, 60000);
	hfree(&h);
	th_raw_close(r);
	return sent;
}

TEST_T(a_body_sent_a_byte_at_a_time_is_cut_off_at_its_deadline, 240)
{
	struct th_broker b;
	struct th_xsrv x;
	struct th_sub sub;
	char head[512];
	int status;
	/* request_timeout_ms 1000; a byte every 300 ms keeps each read of
	 * CivetWeb alive. 1,000 bytes at 1 KiB/s at least are due within
	 * about 2 s; 100 bytes take 30 s to trickle. */
	start(&b, &x, NULL, "request_timeout_ms 1000\n");
	th_sub_start(&sub, &b, "demo/#", 0, "-q 1");
	const char *paths[] = {"/mqtt/publish/demo/slow", "/api/publish/demo/slow2",
	                       "/mqtt/request/demo/slow3"};
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		snprintf(head, sizeof(head),
		         "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" RAW_CT
		         "Content-Length: 1000\r\n\r\n",
		         paths[i]);
		int sent = trickle(x.port, head, 300, 100, &status);
		fprintf(stderr, "    %s: answered %d after %d bytes\n", paths[i],
		        status, sent);
		if (sent >= 100)
			th_fail(__FILE__, __LINE__,
			        "%s: no answer while the body trickled (%d)", paths[i],
			        status);
		ASSERT(status == 408 || status == 400);
	}
	/* The JSON route too. */
	snprintf(head, sizeof(head),
	         "POST /mqtt/publish HTTP/1.1\r\nHost: 127.0.0.1\r\n" JSON_CT
	         "Content-Length: 1000\r\n\r\n");
	ASSERT_LT(trickle(x.port, head, 300, 100, &status), 100);
	ASSERT(status == 408 || status == 400);
	/* A whole body still goes through, and nothing half-sent was. */
	bridge_delivers(x.port, &sub, "demo/whole");
	ASSERT(!th_sub_has(&sub, "slow"));
	th_sub_stop(&sub);
	answers_then_stop(&b, &x);
}

/* Publishes a live message on topic mark (again every second until it
 * comes: the bridge's subscription may not be in place at the broker yet)
 * and reads the frames of r until it comes; returns how many messages
 * with "retain":true came before it. */
static int retained_before_mark(int port, struct th_raw *r, const char *mark)
{
	char out[1024], want[128], path[128];
	int n = 0;
	snprintf(want, sizeof(want), "\"topic\":\"%s\"", mark);
	snprintf(path, sizeof(path), "/mqtt/publish/%s", mark);
	for (int tries = 0; tries < 20; tries++) {
		ASSERT_EQ(status_of(port, "POST", path, RAW_CT, "m"), 200);
		int op;
		while ((op = th_ws_frame_buf(r, out, sizeof(out), 1000)) == 1) {
			if (strstr(out, want) != NULL)
				return n;
			n += strstr(out, "\"retain\":true") != NULL;
		}
		ASSERT_EQ(op, -1); /* nothing more for now: publish again */
	}
	th_fail(__FILE__, __LINE__, "%s never came", mark);
}

TEST_T(browsers_that_never_read_hold_no_writer_from_a_reading_one, 180)
{
	enum { SILENT = 4, MSGS = 300, SIZE = 60000 };
	struct th_broker b;
	struct th_xsrv x;
	struct hresp h;
	char out[512], path[128];
	/* Each write that cannot go on waits request_timeout_ms (60 s here)
	 * before it fails: four such writes held all four writers. */
	start(&b, &x, "MQTT_BRIDGE_CLIENT_QUEUE 50",
	      "request_timeout_ms 60000\n");
	struct th_raw *silent[SILENT], *reader = th_raw_connect(x.port, 0);
	for (int i = 0; i < SILENT; i++) {
		silent[i] = th_raw_connect(x.port, 2048);
		ASSERT_EQ(ws_open(silent[i], x.port, NULL), 101);
		ASSERT_EQ(ws_filter_call(silent[i], "subscribe", "demo/#", out,
		                         sizeof(out)),
		          1);
		ASSERT_CONTAINS(out, "\"op\":\"ack\"");
	}
	ASSERT_EQ(ws_open(reader, x.port, NULL), 101);
	ASSERT_EQ(ws_filter_call(reader, "subscribe", "demo/#", out, sizeof(out)),
	          1);
	ASSERT_CONTAINS(out, "\"op\":\"ack\"");
	/* The client's subscription is in place at the broker. */
	ASSERT_EQ(retained_before_mark(x.port, reader, "demo/ready"), 0);
	char *body = malloc(SIZE + 1);
	ASSERT(body != NULL);
	memset(body, 'x', SIZE);
	body[SIZE] = '\0';
	/* 18 MB to each: far more than the silent sockets hold. The reading
	 * browser gets every message as it goes. */
	for (int i = 0; i < MSGS; i++) {
		snprintf(path, sizeof(path), "/mqtt/publish/demo/m%d", i);
		ASSERT_EQ(status_of(x.port, "POST", path, RAW_CT, body), 200);
		char want[64];
		snprintf(want, sizeof(want), "\"demo/m%d\"", i);
		for (;;) {
			int op = th_ws_frame_buf(reader, out, sizeof(out), 10000);
			if (op != 1)
				th_fail(__FILE__, __LINE__,
				        "message %d did not come to the reading browser (%d)",
				        i, op);
			if (strstr(out, want) != NULL)
				break;
		}
	}
	free(body);
	/* The silent ones were dropped (their queues overflowed), the reader
	 * was not. */
	ASSERT_EQ(http(x.port, "GET", "/mqtt/status", NULL, NULL, &h), 200);
	ASSERT_CONTAINS(h.body, "\"websocket_clients\":");
	hfree(&h);
	ASSERT_GE(th_count_lines(x.log, "dropped: its queue is full"), SILENT);
	for (int i = 0; i < SILENT; i++)
		th_raw_close(silent[i]);
	th_raw_close(reader);
	answers_then_stop(&b, &x);
}

TEST_T(a_browser_queue_is_bounded_in_bytes, 90)
{
	enum { SIZE = 600000, MSGS = 20 };
	struct th_broker b;
	struct th_xsrv x;
	struct hresp h;
	char out[512];
	start(&b, &x,
	      "MQTT_BRIDGE_CLIENT_QUEUE_BYTES 1048576\n"
	      "MQTT_BRIDGE_MAX_BODY 1048576",
	      NULL);
	struct th_raw *silent = th_ws_connect(x.port, 2048);
	ASSERT_EQ(ws_filter_call(silent, "subscribe", "demo/#", out, sizeof(out)),
	          1);
	ASSERT_CONTAINS(out, "\"op\":\"ack\"");
	ASSERT_EQ(retained_before_mark(x.port, silent, "demo/ready"), 0);
	char *body = malloc(SIZE + 1);
	ASSERT(body != NULL);
	memset(body, 'y', SIZE);
	body[SIZE] = '\0';
	/* 12 MB, 20 messages: within BRIDGE_CLIENT_QUEUE (1,000 messages), far
	 * over 1 MiB once the socket is full. */
	for (int i = 0; i < MSGS; i++) {
		ASSERT_EQ(http(x.port, "POST", "/mqtt/publish/demo/big", RAW_CT, body,
		               &h),
		          200);
		hfree(&h);
	}
	free(body);
	ASSERT(WAIT_UNTIL(th_count_lines(x.log, "BRIDGE_CLIENT_QUEUE_BYTES") == 1,
	                  10000));
	th_raw_close(silent);
	answers_then_stop(&b, &x);
}

TEST_T(retained_replays_go_only_to_the_browser_whose_subscribe_brought_them,
       120)
{
	enum { RETAINED = 100, ROUNDS = 20 };
	struct th_broker b;
	struct th_xsrv x;
	char out[1024], path[128];
	start(&b, &x,
	      "MQTT_BRIDGE_RETAINED_WINDOW 1000\nMQTT_BRIDGE_CLIENT_QUEUE 5000",
	      NULL);
	for (int i = 0; i < RETAINED; i++) {
		snprintf(path, sizeof(path), "/mqtt/publish/demo/r/%d?retain=true&qos=1",
		         i);
		ASSERT_EQ(status_of(x.port, "POST", path, RAW_CT, "kept"), 200);
	}
	/* The watcher's own subscribe brings it the retained messages. */
	struct th_raw *watcher = th_ws_connect(x.port, 0);
	th_ws_send(watcher, 1, 1, "{\"op\":\"subscribe\",\"topic\":\"demo/#\"}", 35);
	ASSERT_EQ(retained_before_mark(x.port, watcher, "demo/mark1"), RETAINED);
	/* Once its subscription is older than BRIDGE_RETAINED_WINDOW, another
	 * browser subscribing and unsubscribing the retained filter gets the
	 * replays itself, the watcher none of them. */
	th_sleep_ms(1500);
	struct th_raw *churn = th_ws_connect(x.port, 0);
	for (int i = 0; i < ROUNDS; i++) {
		ASSERT_EQ(ws_filter_call(churn, "subscribe", "demo/r/#", out,
		                         sizeof(out)),
		          1);
		ASSERT_CONTAINS(out, "\"op\":\"ack\"");
		for (int got = 0; got < RETAINED;) {
			ASSERT_EQ(th_ws_frame_buf(churn, out, sizeof(out), 10000), 1);
			got += strstr(out, "\"retain\":true") != NULL;
		}
		ASSERT_EQ(ws_filter_call(churn, "unsubscribe", "demo/r/#", out,
		                         sizeof(out)),
		          1);
		ASSERT_CONTAINS(out, "\"op\":\"ack\"");
	}
	ASSERT_EQ(retained_before_mark(x.port, watcher, "demo/mark2"), 0);
	th_raw_close(churn);
	th_raw_close(watcher);
	answers_then_stop(&b, &x);
}

TEST_T(bridge_auth_file_with_civetweb_global_auth_file_is_refused_at_start,
       60)
{
	char htd[512], port[16], err[512];
	th_path(htd, sizeof(htd), "users.htdigest");
	write_htdigest(htd);
	snprintf(port, sizeof(port), "127.0.0.1:%d", th_free_port());
	const char *cw[] = {"listening_ports", port, "global_auth_file", htd,
	                    "authentication_domain", REALM, NULL};
	struct mg_context *ctx = mg_start(NULL, NULL, cw);
	ASSERT(ctx != NULL);
	struct mg_mqtt *c = mg_mqtt_create(NULL);
	ASSERT(c != NULL);
	/* Both: no request could ever answer both challenges. */
	const char *both[] = {"MQTT_BROKER_URL", "tcp://127.0.0.1:1",
	                      "MQTT_CONNECT_ASYNC", "true", "MQTT_BRIDGE_PATH",
	                      "/mqtt", "MQTT_BRIDGE_AUTH_FILE", htd, NULL};
	ASSERT_EQ(mg_mqtt_start(c, ctx, both, err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "global_auth_file");
	mg_mqtt_stop(c);
	/* global_auth_file alone guards the bridge: 401 without credentials,
	 * 200 with them. */
	c = mg_mqtt_create(NULL);
	const char *alone[] = {"MQTT_BROKER_URL", "tcp://127.0.0.1:1",
	                       "MQTT_CONNECT_ASYNC", "true", "MQTT_BRIDGE_PATH",
	                       "/mqtt", NULL};
	ASSERT_EQ(mg_mqtt_start(c, ctx, alone, err, sizeof(err)), 0);
	int p = atoi(strchr(port, ':') + 1);
	ASSERT_EQ(status_of(p, "GET", "/mqtt/status", NULL, NULL), 401);
	char cmd[1024], out[512];
	th_path(out, sizeof(out), "status.out");
	snprintf(cmd, sizeof(cmd),
	         "curl -s -o /dev/null -w '%%{http_code}' --digest -u %s:%s "
	         "'http://%s/mqtt/status' > '%s'",
	         USER, PASS, port, out);
	const char *argv[] = {"sh", "-c", cmd, NULL};
	ASSERT_EQ(th_run(argv, NULL, 30000), 0);
	char *code = th_read_file(out, NULL);
	ASSERT_STREQ(code, "200");
	free(code);
	mg_mqtt_stop(c);
	mg_stop(ctx);
}
