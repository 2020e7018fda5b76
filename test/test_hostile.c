/*
 * Hostile input against the example server's own route and against
 * PERSISTENCE_DIR, end to end:
 *
 *  - POST /api/publish/<topic> of example/main.c publishes under the rules
 *    of the client's bridge (mg_mqtt_bridge_check_publish): without the
 *    bridge's digest credentials nothing reaches the broker, the publish
 *    allow list holds, a client without a bridge publishes nothing, a
 *    body a page on another site could send is refused, and a body cut
 *    short of its Content-Length is not published;
 *  - its 404 body is JSON whatever ?client= holds;
 *  - the shipped example/civetweb.conf: as many idle TCP connections as it
 *    has workers do not keep /mqtt/status from answering;
 *  - PERSISTENCE_DIR: client ids "." and ".." stay inside the directory,
 *    "a/b" and "a_b" do not share a store, only well-formed store file
 *    names are read or removed, and PERSISTENCE_FSYNC.
 */
#include "http.h"
#include "util.h"

#include <civetweb.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "civetweb_mqtt.h"

#define REALM "cwm-hostile"
#define USER "alice"
#define PASS "wonder-land-7"
#define OCTETS "-H 'Content-Type: application/octet-stream'"

/* curl (http.h) with extra arguments (may be NULL) and data (may be NULL);
 * returns the HTTP status; the body and the response headers (either may
 * be NULL) malloc()ed. */
static int curl_(int port, const char *method, const char *path,
                 const char *args, const char *data, char **body,
                 char **headers)
{
	struct th_resp r;
	int status = th_http_t(port, method, path, data, args, 120, &r);
	if (body != NULL) {
		*body = r.body;
		r.body = NULL;
	}
	if (headers != NULL) {
		*headers = r.head;
		r.head = NULL;
	}
	th_resp_free(&r);
	return status;
}

/* The example server logs "serving" once its clients are started and
 * its own routes are in place (the port accepts before that), and
 * "connected to" when the client is connected. */
static void xsrv_ready(const char *log, int connected)
{
	ASSERT(WAIT_UNTIL(th_count_lines(log, "serving") == 1, 15000));
	if (connected)
		ASSERT(WAIT_UNTIL(th_count_lines(log, "connected to") == 1, 15000));
}

/* An htdigest file for USER / PASS in REALM; its path into path. */
static void write_htdigest(char *path, size_t len)
{
	char ha1[33], line[256];
	mg_md5(ha1, USER, ":", REALM, ":", PASS, NULL);
	snprintf(line, sizeof(line), "%s:%s:%s\n", USER, REALM, ha1);
	th_write_file(th_path(path, len, "htdigest"), line);
}

/* A probe through the broker: once the subscriber has it, it has every
 * message the broker took before it. */
static void probe(const struct th_broker *b, struct th_sub *sub,
                  const char *topic)
{
	char line[256];
	th_pub(b, topic, "probe", 1, 0, NULL);
	snprintf(line, sizeof(line), "%s probe", topic);
	ASSERT(WAIT_UNTIL(th_count_lines(sub->out, line) == 1, 10000));
}

/* ======================================================================
 * The example's POST /api/publish/<topic>
 * ==================================================================== */

/* A broker, a subscriber to all of it, and the example server connected
 * to the broker. */
struct pubfix {
	struct th_broker b;
	struct th_sub sub;
	struct th_xsrv s;
};

/* The example's bridge on /mqtt, publishing to demo/# allowed. */
#define DEMO_BRIDGE "MQTT_BRIDGE_PATH /mqtt\nMQTT_BRIDGE_PUBLISH_ALLOW demo/#\n"

/* Starts them; the server's MQTT lines are MQTT_BROKER_URL, then mqtt;
 * civetweb as th_xsrv_start's. Returns once the server is serving and
 * connected. */
static void pubfix_start(struct pubfix *f, const char *mqtt,
                         const char *civetweb)
{
	char text[2048];
	th_broker_sub_start(&f->b, NULL, &f->sub, "#", 0, "-q 1");
	snprintf(text, sizeof(text), "MQTT_BROKER_URL %s\n%s", f->b.url, mqtt);
	th_xsrv_start(&f->s, text, civetweb);
	xsrv_ready(f->s.log, 1);
}

/* A probe through the broker (see probe). */
static void pubfix_probe(struct pubfix *f, const char *topic)
{
	probe(&f->b, &f->sub, topic);
}

/* After a probe through the broker: 1 when a message containing needle
 * reached the subscriber. */
static int pubfix_published(struct pubfix *f, const char *probe_topic,
                            const char *needle)
{
	pubfix_probe(f, probe_topic);
	return th_sub_has(&f->sub, needle);
}

static void pubfix_stop(struct pubfix *f)
{
	th_sub_stop(&f->sub);
	th_kill(f->s.pid, SIGTERM);
}

TEST_T(example_publish_route_asks_for_the_bridge_password_and_allow_list, 60)
{
	struct pubfix f;
	char htd[512], mqtt[2048], *body, *hdrs;
	write_htdigest(htd, sizeof(htd));
	snprintf(mqtt, sizeof(mqtt),
	         "MQTT_BRIDGE_PATH /mqtt\n"
	         "MQTT_BRIDGE_AUTH_FILE %s\nMQTT_BRIDGE_PUBLISH_ALLOW sec/#\n"
	         "MQTT_BRIDGE_SUBSCRIBE_ALLOW sec/#\n",
	         htd);
	pubfix_start(&f, mqtt, "authentication_domain " REALM "\n");

	/* No credentials: the challenge, nothing published; inside or outside
	 * the allow list alike (no hint about the list before the password). */
	ASSERT_EQ(curl_(f.s.port, "POST", "/api/publish/secret/x", OCTETS, "x",
	                &body, &hdrs),
	          401);
	ASSERT_CONTAINS(hdrs, "WWW-Authenticate: Digest realm=\"" REALM "\"");
	free(body);
	free(hdrs);
	ASSERT_EQ(curl_(f.s.port, "POST", "/api/publish/sec/x", OCTETS, "x", &body,
	                NULL),
	          401);
	free(body);
	/* A wrong password, and curl -d without a type as in the finding. */
	ASSERT_EQ(curl_(f.s.port, "POST", "/api/publish/sec/x",
	                "--digest -u " USER ":wrong " OCTETS, "x", &body, NULL),
	          401);
	free(body);
	ASSERT_EQ(curl_(f.s.port, "POST", "/api/publish/secret/x", "-d x", NULL,
	                &body, NULL),
	          401);
	free(body);

	/* The password: the allow list still holds. */
	ASSERT_EQ(curl_(f.s.port, "POST", "/api/publish/secret/x",
	                "--digest -u " USER ":" PASS " " OCTETS, "x", &body, NULL),
	          403);
	ASSERT_CONTAINS(body, "BRIDGE_PUBLISH_ALLOW");
	free(body);
	ASSERT_EQ(curl_(f.s.port, "POST", "/api/publish/sec/ok",
	                "--digest -u " USER ":" PASS " " OCTETS, "fine", &body,
	                NULL),
	          200);
	ASSERT_CONTAINS(body, "{\"id\":");
	free(body);
	/* A body a page on another site could send: refused even with the
	 * password (a browser sends remembered credentials with it). */
	const char *simple[] = {"-H 'Content-Type: text/plain'",
	                        "-H 'Content-Type: application/x-www-form-urlencoded'",
	                        "-H 'Content-Type: multipart/form-data; boundary=x'",
	                        "-H 'Content-Type:'"};
	for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++) {
		char args[256];
		snprintf(args, sizeof(args), "--digest -u %s:%s %s", USER, PASS,
		         simple[i]);
		ASSERT_EQ(curl_(f.s.port, "POST", "/api/publish/sec/form", args, "f=1",
		                &body, NULL),
		          415);
		free(body);
	}

	pubfix_probe(&f, "sec/probe");
	ASSERT(th_sub_has(&f.sub, "sec/ok fine"));
	ASSERT(!th_sub_has(&f.sub, "secret"));
	ASSERT(!th_sub_has(&f.sub, "sec/x"));
	ASSERT(!th_sub_has(&f.sub, "sec/form"));
	pubfix_stop(&f);
}

TEST_T(example_publish_route_publishes_nothing_for_a_client_without_bridge, 60)
{
	struct pubfix f;
	char *body;
	pubfix_start(&f, "", NULL);
	ASSERT_EQ(curl_(f.s.port, "POST", "/api/publish/any/thing", OCTETS, "x",
	                &body, NULL),
	          403);
	ASSERT_CONTAINS(body, "BRIDGE_PATH");
	free(body);
	ASSERT(!pubfix_published(&f, "probe/t", "any/thing"));
	pubfix_stop(&f);
}

/* ======================================================================
 * The shipped example/civetweb.conf
 * ==================================================================== */

/* The value of a CivetWeb option in example/civetweb.conf, or NULL. */
static char *conf_value(const char *text, const char *name)
{
	size_t nl = strlen(name);
	for (const char *p = text; *p != '\0';) {
		size_t l = strcspn(p, "\n");
		if (l > nl && strncmp(p, name, nl) == 0 && p[nl] == ' ') {
			char *v = strndup(p + nl + 1, l - nl - 1);
			ASSERT(v != NULL);
			return v;
		}
		p += l + (p[l] == '\n');
	}
	return NULL;
}

TEST_T(idle_connections_do_not_starve_the_shipped_example_configuration, 180)
{
	struct th_broker b;
	char listen[64], url[128], log[512], *body;
	char *conf = th_read_file("example/civetweb.conf", NULL);
	/* It bounds how long a connection may hold a worker without sending. */
	const char *needed[] = {"num_threads", "request_timeout_ms",
	                        "keep_alive_timeout_ms", "websocket_timeout_ms"};
	for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
		char *v = conf_value(conf, needed[i]);
		if (v == NULL)
			th_fail(__FILE__, __LINE__,
			        "example/civetweb.conf does not set %s", needed[i]);
		free(v);
	}
	char *nt = conf_value(conf, "num_threads");
	int workers = atoi(nt);
	free(nt);
	free(conf);
	ASSERT_GT(workers, 0);

	th_broker_start(&b, NULL);
	int port = th_free_port();
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(url, sizeof(url), "%s", b.url);
	th_path(log, sizeof(log), "shipped.log");
	const char *argv[] = {th_example_bin(), "example/civetweb.conf",
	                      "-listening_ports", listen, "-MQTT_BROKER_URL", url,
	                      NULL};
	pid_t pid = th_spawn(argv, log);
	ASSERT(th_wait_port(port, 15000));
	xsrv_ready(log, 1);

	/* As many sockets as there are workers, connected and silent: each
	 * takes a worker as it is accepted. */
	struct th_raw **idle = calloc((size_t)workers, sizeof(*idle));
	ASSERT(idle != NULL);
	for (int i = 0; i < workers; i++)
		idle[i] = th_raw_connect(port, 0);
	int64_t t0 = th_now_ms();
	ASSERT_EQ(curl_(port, "GET", "/mqtt/status", NULL, NULL, &body, NULL), 200);
	ASSERT_CONTAINS(body, "\"connected\":true");
	free(body);
	fprintf(stderr, "    /mqtt/status answered %lld ms after %d idle sockets\n",
	        (long long)(th_now_ms() - t0), workers);
	/* The server closed them: a worker is never held by silence for good. */
	for (int i = 0; i < workers; i++) {
		int n;
		while ((n = th_raw_fill(idle[i], 60000)) > 0)
			th_raw_consume(idle[i], idle[i]->len);
		ASSERT_EQ(n, 0);
		th_raw_close(idle[i]);
	}
	free(idle);
	th_kill(pid, SIGTERM);
}

/* ======================================================================
 * PERSISTENCE_DIR
 * ==================================================================== */

struct logbuf {
	pthread_mutex_t lock;
	char text[16384];
	size_t n;
};

static void on_log(struct mg_mqtt *c, int level, const char *text, void *ud)
{
	struct logbuf *l = ud;
	(void)c;
	(void)level;
	pthread_mutex_lock(&l->lock);
	l->n += (size_t)snprintf(l->text + l->n, sizeof(l->text) - l->n, "%s\n",
	                         text);
	if (l->n >= sizeof(l->text))
		l->n = sizeof(l->text) - 1;
	pthread_mutex_unlock(&l->lock);
}

/* Starts a client with id and PERSISTENCE_DIR dir (a broker nobody
 * answers at: everything QoS 1 stays on disk), publishes n QoS 1 messages,
 * stops it. extra: one more option pair or NULL. The log into l. Returns
 * mg_mqtt_start()'s result (err gets its sentence). */
static int persist_run(const char *id, const char *dir, int n,
                       const char *extra_name, const char *extra_value,
                       struct logbuf *l, char *err, size_t errlen)
{
	static int dead;
	char url[64];
	if (dead == 0)
		dead = th_free_port();
	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", dead);
	const char *opts[] = {"MQTT_BROKER_URL", url, "MQTT_CLIENT_ID", id,
	                      "MQTT_PERSISTENCE_DIR", dir, "MQTT_CONNECT_ASYNC",
	                      "true", "MQTT_CONNECTION_TIMEOUT", "1",
	                      extra_name, extra_value, NULL};
	memset(l, 0, sizeof(*l));
	pthread_mutex_init(&l->lock, NULL);
	struct mg_mqtt *c = mg_mqtt_create(NULL);
	ASSERT(c != NULL);
	mg_mqtt_on_log(c, on_log, l);
	int rc = mg_mqtt_start(c, NULL, opts, err, errlen);
	for (int i = 0; rc == 0 && i < n; i++)
		ASSERT_GT(mg_mqtt_publish(c, "kept/t", "m", 1, 1, 0), 0);
	mg_mqtt_stop(c);
	return rc;
}

static int exists(const char *dir, const char *name)
{
	char p[1024];
	struct stat st;
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	return stat(p, &st) == 0;
}

/* Files in dir whose name ends with suffix. */
static int count_suffix(const char *dir, const char *suffix)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;
	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL) {
		size_t l = strlen(e->d_name), sl = strlen(suffix);
		n += l >= sl && strcmp(e->d_name + l - sl, suffix) == 0;
	}
	closedir(d);
	return n;
}

TEST_T(persistence_client_ids_dot_and_dotdot_stay_inside_the_directory, 60)
{
	char top[512], store[600], err[512];
	struct logbuf l;
	/* top/ holds what looks like store files; the store is top/store. */
	th_path(top, sizeof(top), "top");
	mkdir(top, 0700);
	snprintf(store, sizeof(store), "%s/store", top);
	mkdir(store, 0700);
	const char *decoys[] = {"0123456789abcdef.tmp", "0123456789abcdef.msg"};
	const char *dirs[] = {top, store};
	for (int d = 0; d < 2; d++)
		for (int i = 0; i < 2; i++) {
			char p[1024];
			snprintf(p, sizeof(p), "%s/%s", dirs[d], decoys[i]);
			th_write_file(p, "not ours\n");
		}
	ASSERT_EQ(persist_run("..", store, 1, NULL, NULL, &l, err, sizeof(err)), 0);
	ASSERT_EQ(persist_run(".", store, 1, NULL, NULL, &l, err, sizeof(err)), 0);
	/* Nothing of top/ nor of store/ itself was removed or renamed, and no
	 * message file landed there. */
	for (int d = 0; d < 2; d++) {
		for (int i = 0; i < 2; i++)
			if (!exists(dirs[d], decoys[i]))
				th_fail(__FILE__, __LINE__, "%s/%s was removed", dirs[d],
				        decoys[i]);
		ASSERT_EQ(count_suffix(dirs[d], ".bad"), 0);
		ASSERT_EQ(count_suffix(dirs[d], ".msg"), 1);
	}
	/* Each id has a directory of its own below store/, with its message. */
	char sub[1024];
	int dirs_below = 0;
	DIR *dd = opendir(store);
	struct dirent *e;
	ASSERT(dd != NULL);
	while ((e = readdir(dd)) != NULL) {
		struct stat st;
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", store, e->d_name);
		if (stat(sub, &st) == 0 && S_ISDIR(st.st_mode)) {
			dirs_below++;
			ASSERT_EQ(count_suffix(sub, ".msg"), 1);
		}
	}
	closedir(dd);
	ASSERT_EQ(dirs_below, 2);
}

TEST_T(persistence_client_ids_a_slash_b_and_a_underscore_b_do_not_collide, 60)
{
	char store[512], err[512];
	struct logbuf l;
	th_path(store, sizeof(store), "store");
	mkdir(store, 0700);
	ASSERT_EQ(persist_run("a/b", store, 2, NULL, NULL, &l, err, sizeof(err)),
	          0);
	/* a_b starts with an empty store of its own: nothing of a/b's. */
	ASSERT_EQ(persist_run("a_b", store, 0, NULL, NULL, &l, err, sizeof(err)),
	          0);
	ASSERT_NOT_CONTAINS(l.text, "queued again");
	/* a/b finds its two again. */
	ASSERT_EQ(persist_run("a/b", store, 0, NULL, NULL, &l, err, sizeof(err)),
	          0);
	ASSERT_CONTAINS(l.text, "2 stored message(s) queued again");
}

TEST_T(persistence_reads_and_removes_only_well_formed_store_names, 60)
{
	char store[512], dir[600], err[512], from[800], to[800];
	struct logbuf l;
	th_path(store, sizeof(store), "store");
	mkdir(store, 0700);
	ASSERT_EQ(persist_run("strict", store, 1, NULL, NULL, &l, err, sizeof(err)),
	          0);
	snprintf(dir, sizeof(dir), "%s/strict", store);
	ASSERT_EQ(count_suffix(dir, ".msg"), 1);
	/* The real message under names that are not store names: parsed by
	 * strtoull they were numbers (-1 wrapped the next number to 0). */
	snprintf(from, sizeof(from), "%s/0000000000000001.msg", dir);
	char *data;
	size_t len;
	data = th_read_file(from, &len);
	ASSERT_GT(len, 0);
	const char *odd[] = {"-000000000000001.msg", " 00000000000000f.msg",
	                     "000000000000000G.msg", "0000000000000000.msg",
	                     "+00000000000000a.tmp", "00000000000000AB.msg"};
	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
		snprintf(to, sizeof(to), "%s/%s", dir, odd[i]);
		FILE *f = fopen(to, "wb");
		ASSERT(f != NULL);
		ASSERT_EQ(fwrite(data, 1, len, f), len);
		fclose(f);
	}
	free(data);
	ASSERT_EQ(unlink(from), 0);
	ASSERT_EQ(persist_run("strict", store, 0, NULL, NULL, &l, err, sizeof(err)),
	          0);
	ASSERT_NOT_CONTAINS(l.text, "queued again");
	ASSERT_NOT_CONTAINS(l.text, "renamed");
	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++)
		if (!exists(dir, odd[i]))
			th_fail(__FILE__, __LINE__, "'%s' was removed or renamed", odd[i]);
	ASSERT_EQ(count_suffix(dir, ".bad"), 0);
}

TEST_T(persistence_fsync_option_is_read_and_the_store_works_with_it, 60)
{
	char store[512], dir[600], err[512];
	struct logbuf l;
	th_path(store, sizeof(store), "store");
	mkdir(store, 0700);
	ASSERT_EQ(persist_run("synced", store, 3, "MQTT_PERSISTENCE_FSYNC", "true",
	                      &l, err, sizeof(err)),
	          0);
	snprintf(dir, sizeof(dir), "%s/synced", store);
	ASSERT_EQ(count_suffix(dir, ".msg"), 3);
	ASSERT_EQ(count_suffix(dir, ".tmp"), 0);
	ASSERT_EQ(persist_run("synced", store, 0, "MQTT_PERSISTENCE_FSYNC", "false",
	                      &l, err, sizeof(err)),
	          0);
	ASSERT_CONTAINS(l.text, "3 stored message(s) queued again");
	ASSERT_EQ(persist_run("synced", store, 0, "MQTT_PERSISTENCE_FSYNC", "maybe",
	                      &l, err, sizeof(err)),
	          MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "MQTT_PERSISTENCE_FSYNC");
}

TEST_T(example_publish_route_refuses_a_body_shorter_than_its_length, 60)
{
	struct pubfix f;
	pubfix_start(&f, DEMO_BRIDGE, NULL);
	/* Ten bytes announced, three sent, then the client's half closes. */
	struct th_raw *r = th_raw_connect(f.s.port, 0);
	static const char req[] = "POST /api/publish/demo/short HTTP/1.1\r\n"
	                          "Host: 127.0.0.1\r\n"
	                          "Content-Type: application/octet-stream\r\n"
	                          "Content-Length: 10\r\n\r\nabc";
	th_raw_send(r, req, strlen(req));
	shutdown(r->fd, SHUT_WR);
	int n;
	while ((n = th_raw_fill(r, 30000)) > 0)
		;
	r->buf[r->len < sizeof(r->buf) ? r->len : sizeof(r->buf) - 1] = '\0';
	ASSERT_CONTAINS(r->buf, "HTTP/1.1 400");
	th_raw_close(r);
	ASSERT(!pubfix_published(&f, "demo/probe", "demo/short"));
	pubfix_stop(&f);
}

TEST_T(example_publish_route_refuses_a_cross_site_origin, 60)
{
	struct pubfix f;
	char *body, args[256];
	pubfix_start(&f, DEMO_BRIDGE, NULL);
	ASSERT_EQ(curl_(f.s.port, "POST", "/api/publish/demo/evil",
	                OCTETS " -H 'Origin: http://evil.example'", "x", &body,
	                NULL),
	          403);
	ASSERT_CONTAINS(body, "BRIDGE_ALLOWED_ORIGINS");
	free(body);
	/* The server's own origin is fine. */
	snprintf(args, sizeof(args), "%s -H 'Origin: http://127.0.0.1:%d'", OCTETS,
	         f.s.port);
	ASSERT_EQ(curl_(f.s.port, "POST", "/api/publish/demo/own", args, "y", &body,
	                NULL),
	          200);
	free(body);
	pubfix_probe(&f, "demo/probe");
	ASSERT(th_sub_has(&f.sub, "demo/own y"));
	ASSERT(!th_sub_has(&f.sub, "demo/evil"));
	pubfix_stop(&f);
}

TEST_T(example_404_body_is_json_whatever_the_client_parameter_holds, 40)
{
	struct th_xsrv s;
	char *body;
	th_xsrv_start(&s, "MQTT_BROKER_URL tcp://127.0.0.1:1\n"
	                  "MQTT_CONNECT_ASYNC true\n",
	              NULL);
	xsrv_ready(s.log, 0);
	ASSERT_EQ(curl_(s.port, "POST",
	                "/api/publish/demo/x?client=a%22%2C%22injected%22%3A%22%5C%0A",
	                OCTETS, "x", &body, NULL),
	          404);
	cJSON *j = cJSON_Parse(body);
	ASSERT(cJSON_IsObject(j));
	ASSERT(cJSON_GetObjectItem(j, "injected") == NULL);
	cJSON *e = cJSON_GetObjectItem(j, "error");
	ASSERT(cJSON_IsString(e));
	ASSERT_CONTAINS(e->valuestring, "a\",\"injected\":\"\\\n");
	cJSON_Delete(j);
	free(body);
	th_kill(s.pid, SIGTERM);
}
