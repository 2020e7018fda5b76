/*
 * Connecting, against real mosquitto brokers: credentials, TLS (CA, host
 * name, client certificates), WebSocket transport, protocol versions with
 * MQTT 5 properties and reason codes, QoS and retain both ways, last will
 * and birth messages, shared subscriptions, several prefixes at once, the
 * fail-over list, and CONNECT_ASYNC either way.
 */
#include "rec.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------- */

/* 1 when some log line starts with `start` and contains `needle`. */
static int rec_log_line(struct rec *r, const char *start, const char *needle)
{
	int found = 0;
	size_t sl = strlen(start);
	pthread_mutex_lock(&r->mu);
	for (const char *p = r->log; p != NULL && *p != '\0' && !found;) {
		const char *e = strchr(p, '\n');
		size_t n = e != NULL ? (size_t)(e - p) : strlen(p);
		if (n >= sl && strncmp(p, start, sl) == 0) {
			char line[1024];
			snprintf(line, sizeof(line), "%.*s", (int)n, p);
			found = strstr(line, needle) != NULL;
		}
		p += n + (e != NULL);
	}
	pthread_mutex_unlock(&r->mu);
	return found;
}

/* The on_publish result for id; fails the test if none comes. Entries are
 * written once, before the lock that rec_find_pub() takes is released. */
static int pub_result(struct rec *r, int id)
{
	ASSERT(WAIT_UNTIL(rec_find_pub(r, id) >= 0, 10000));
	return r->pub[rec_find_pub(r, id)].result;
}

/* The SUBACK of subscribe id: its first code; fails if none comes. */
static int sub_code(struct rec *r, int id)
{
	ASSERT(WAIT_UNTIL(rec_find_sub(r, id, NULL) >= 0, 10000));
	int i = rec_find_sub(r, id, NULL);
	ASSERT_EQ(r->sub[i].result, 0);
	ASSERT_EQ(r->sub[i].count, 1);
	return r->sub[i].codes[0];
}

/* Nothing of the secret anywhere a user could see it. Call after stop, so
 * that every log line has been dispatched. */
static void assert_secret_hidden(struct rec *r, const char *err,
                                 const char *secret)
{
	ASSERT_NOT_CONTAINS(r->log, secret);
	ASSERT_NOT_CONTAINS(err, secret);
}

/* Stops c (it must stop cleanly), checks assert_secret_hidden, frees r. */
static void stop_secret_hidden(struct mg_mqtt *c, struct rec *r,
                               const char *err, const char *secret)
{
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	assert_secret_hidden(r, err, secret);
	rec_free(r);
}

/* c (r attached) started with opts fails with a TLS or connection error
 * and never connects. */
static void tls_refused(struct mg_mqtt *c, struct rec *r, const char **opts)
{
	char err[1024];
	int rc = mg_mqtt_start(c, NULL, opts, err, sizeof(err));
	if (rc != MG_MQTT_ERR_TLS && rc != MG_MQTT_ERR_CONNECT)
		th_fail(__FILE__, __LINE__, "start: %d (%s), not a TLS error", rc,
		        err);
	ASSERT_EQ(REC(r, connects), 0);
}

/* A client in a forked child process, so that the test can end it the way
 * a crash would: SIGKILL sends no DISCONNECT, so the broker sends the will.
 * The parent forks before it starts any client of its own (no threads). */
struct child {
	pid_t pid;
	int fd;
};
static pid_t child_at_exit;

static void child_reap_at_exit(void)
{
	if (child_at_exit > 0) {
		kill(child_at_exit, SIGKILL);
		waitpid(child_at_exit, NULL, 0);
		child_at_exit = 0;
	}
}

static void child_quiet_log(struct mg_mqtt *c, int level, const char *text,
                            void *ud)
{
	(void)c;
	(void)level;
	(void)text;
	(void)ud;
}

static void child_kill(struct child *ch)
{
	if (ch->pid > 0) {
		kill(ch->pid, SIGKILL);
		waitpid(ch->pid, NULL, 0);
		close(ch->fd);
	}
	ch->pid = 0;
	child_at_exit = 0;
}

/* Forks, starts a client with opts (CONNECT_ASYNC false: connected when
 * start returns) in the child, and returns once the child reported it. */
static void child_client_start(struct child *ch, const char **opts)
{
	static int registered;
	char buf[700];
	int p[2];
	pid_t parent = getpid();

	if (!registered) {
		/* th_fail() exits: the child goes with the test. */
		atexit(child_reap_at_exit);
		registered = 1;
	}
	ASSERT_EQ(pipe(p), 0);
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	ASSERT(pid >= 0);
	if (pid == 0) {
		/* Never outlives the test, even when its alarm fires (_exit). */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		signal(SIGALRM, SIG_DFL);
		alarm(300);
		close(p[0]);
		char err[512] = "";
		struct mg_mqtt *c = mg_mqtt_create(NULL);
		int rc = MG_MQTT_ERR_NOMEM;
		if (c != NULL) {
			mg_mqtt_on_log(c, child_quiet_log, NULL);
			rc = mg_mqtt_start(c, NULL, opts, err, sizeof(err));
		}
		int n = snprintf(buf, sizeof(buf), "%d %s\n", rc, err);
		if (write(p[1], buf, (size_t)n) < 0)
			_exit(1);
		for (;;)
			pause();
	}
	close(p[1]);
	ch->pid = pid;
	ch->fd = p[0];
	child_at_exit = pid;

	size_t got = 0;
	int64_t until = th_now_ms() + 20000 * th_timeout_scale();
	while (got < sizeof(buf) - 1 &&
	       (got == 0 || memchr(buf, '\n', got) == NULL) &&
	       th_now_ms() < until) {
		struct pollfd pf = {ch->fd, POLLIN, 0};
		if (poll(&pf, 1, 50) > 0) {
			ssize_t n = read(ch->fd, buf + got, sizeof(buf) - 1 - got);
			if (n <= 0)
				break;
			got += (size_t)n;
		}
	}
	buf[got] = '\0';
	if (got == 0 || atoi(buf) != 0) {
		child_kill(ch);
		th_fail(__FILE__, __LINE__, "client in child did not start: '%s'",
		        buf);
	}
}

/* ---- 1. user name and password ------------------------------------------- */

TEST(username_and_password_connect_and_a_wrong_password_fails_start_as_refused)
{
	static const char good[] = "C0rrect-Horse-9", bad[] = "Wr0ng-Battery-4";
	struct th_broker b;
	struct rec r, r2;
	char err[1024] = "";
	th_broker_start_password(&b, "alice", good);

	struct mg_mqtt *c =
	    rec_started(&r, OPTS("MQTT_BROKER_URL", b.url, "MQTT_USERNAME", "alice",
	                         "MQTT_PASSWORD", good));
	ASSERT(mg_mqtt_is_connected(c));
	char *st = rec_status(c);
	ASSERT_CONTAINS(st, "\"password\":\"***\"");
	ASSERT_NOT_CONTAINS(st, good);
	free(st);
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	ASSERT_EQ(r.connects, 1);
	assert_secret_hidden(&r, "", good);
	rec_free(&r);

	/* Synchronous start: the refusal is start's result. */
	struct mg_mqtt *c2 = rec_client(&r2, NULL);
	const char *opts2[] = {"MQTT_BROKER_URL", b.url, "MQTT_USERNAME", "alice",
	                       "MQTT_PASSWORD", bad, NULL};
	ASSERT_EQ(mg_mqtt_start(c2, NULL, opts2, err, sizeof(err)),
	          MG_MQTT_ERR_REFUSED);
	ASSERT(!mg_mqtt_is_connected(c2));
	ASSERT(WAIT_UNTIL(REC(&r2, connect_fails) >= 1, 5000));
	ASSERT_EQ(REC(&r2, connects), 0);
	/* mosquitto answers a bad password with 5 "not authorized". */
	ASSERT_EQ(REC(&r2, last_reason), 5);
	ASSERT_EQ(REC(&r2, last_error), MG_MQTT_ERR_REFUSED);
	ASSERT(r2.last_conn_msg[0] != '\0');
	ASSERT_CONTAINS(err, b.url);
	stop_secret_hidden(c2, &r2, err, bad);
}

TEST(wrong_password_with_connect_async_starts_and_reports_the_refusal)
{
	static const char bad[] = "N0t-The-Pass-1";
	struct th_broker b;
	struct rec r;
	th_broker_start_password(&b, "bob", "The-Real-One-2");
	struct mg_mqtt *c = rec_started(
	    &r, OPTS("MQTT_BROKER_URL", b.url, "MQTT_USERNAME", "bob",
	             "MQTT_PASSWORD", bad, "MQTT_CONNECT_ASYNC", "true"));
	ASSERT(WAIT_UNTIL(REC(&r, connect_fails) >= 1, 10000));
	ASSERT_EQ(REC(&r, connects), 0);
	ASSERT_EQ(REC(&r, last_reason), 5);
	ASSERT_EQ(REC(&r, last_error), MG_MQTT_ERR_REFUSED);
	ASSERT(!mg_mqtt_is_connected(c));
	char *st = rec_status(c);
	ASSERT_CONTAINS(st, "\"connected\":false");
	ASSERT_NOT_CONTAINS(st, bad);
	free(st);
	stop_secret_hidden(c, &r, "", bad);
}

TEST(mqtt5_wrong_password_is_refused_with_an_mqtt5_reason_code)
{
	static const char bad[] = "Bad-Pass-5";
	struct th_broker b;
	struct rec r;
	char err[1024];
	th_broker_start_password(&b, "carol", "Good-Pass-5");
	struct mg_mqtt *c = rec_client(&r, NULL);
	const char *opts[] = {"MQTT_BROKER_URL", b.url, "MQTT_USERNAME", "carol",
	                      "MQTT_PASSWORD", bad, "MQTT_PROTOCOL_VERSION", "5",
	                      NULL};
	int rc = mg_mqtt_start(c, NULL, opts, err, sizeof(err));
	ASSERT(WAIT_UNTIL(REC(&r, connect_fails) >= 1, 5000));
	/* MQTT 5: 0x86 bad user name or password, or 0x87 not authorized. */
	int reason = REC(&r, last_reason), error = REC(&r, last_error);
	if (rc != MG_MQTT_ERR_REFUSED || error != MG_MQTT_ERR_REFUSED ||
	    (reason != 0x86 && reason != 0x87))
		th_fail(__FILE__, __LINE__,
		        "want start and handler error %d with reason 0x86/0x87; got "
		        "start %d, handler error %d, reason %d, message '%s', err '%s'",
		        MG_MQTT_ERR_REFUSED, rc, error, reason, r.last_conn_msg, err);
	stop_secret_hidden(c, &r, err, bad);
}

TEST(password_file_supplies_the_password_without_its_trailing_newline)
{
	static const char pw[] = "Fr0m-A-File-7";
	struct th_broker b;
	struct rec r;
	char path[512], text[64];
	th_broker_start_password(&b, "dave", pw);
	th_path(path, sizeof(path), "mqtt-password");
	snprintf(text, sizeof(text), "%s\n", pw);
	th_write_file(path, text);
	struct mg_mqtt *c =
	    rec_started(&r, OPTS("MQTT_BROKER_URL", b.url, "MQTT_USERNAME", "dave",
	                         "MQTT_PASSWORD_FILE", path));
	ASSERT(mg_mqtt_is_connected(c));
	ASSERT(!rec_status_has(c, pw));
	stop_secret_hidden(c, &r, "", pw);
}

/* ---- 2. TLS -------------------------------------------------------------- */

TEST_T(tls_right_ca_connects_and_a_wrong_ca_fails_with_a_tls_log_line, 60)
{
	struct th_broker b;
	struct rec r, r2;
	char other[512];
	th_tls_broker_start(&b, "server", 0);
	th_path(other, sizeof(other), "other-ca.crt");

	struct mg_mqtt *c = rec_started(
	    &r, OPTS("MQTT_BROKER_URL", b.url, "MQTT_TLS_CA_CERTS", b.ca));
	ASSERT(mg_mqtt_is_connected(c));
	char *st = rec_status(c);
	ASSERT_CONTAINS(st, "\"tls\":true");
	free(st);
	/* Messages really flow over the TLS connection. */
	ASSERT_GT(mg_mqtt_subscribe(c, "tls/in", 1), 0);
	ASSERT(WAIT_UNTIL(rec_subs_settled(c, 1), 5000));
	ASSERT_GT(mg_mqtt_publish(c, "tls/in", "secure", 6, 1, 0), 0);
	ASSERT(WAIT_UNTIL(rec_find(&r, "tls/in", "secure") >= 0, 5000));
	rec_stop(c, &r);

	struct mg_mqtt *c2 = rec_client(&r2, NULL);
	tls_refused(c2, &r2,
	            OPTS("MQTT_BROKER_URL", b.url, "MQTT_TLS_CA_CERTS", other));
	ASSERT(WAIT_UNTIL(REC(&r2, connect_fails) >= 1, 5000));
	ASSERT(WAIT_UNTIL(rec_log_line(&r2, "TLS:", "certificate verify failed"),
	                  5000));
	rec_stop(c2, &r2);
}

TEST_T(tls_host_name_mismatch_is_refused_unless_tls_insecure, 60)
{
	struct th_broker b;
	struct rec r, r2;
	th_tls_broker_start(&b, "wrong-host", 0);

	/* Trusted CA, but the certificate names example.invalid only. */
	struct mg_mqtt *c = rec_client(&r, NULL);
	tls_refused(c, &r,
	            OPTS("MQTT_BROKER_URL", b.url, "MQTT_TLS_CA_CERTS", b.ca));
	rec_stop(c, &r);

	struct mg_mqtt *c2 = rec_client(&r2, NULL);
	const char *opts2[] = {"MQTT_BROKER_URL", b.url, "MQTT_TLS_CA_CERTS", b.ca,
	                       "MQTT_TLS_INSECURE", "true", NULL};
	rec_start(c2, opts2);
	ASSERT(mg_mqtt_is_connected(c2));
	ASSERT_EQ(mg_mqtt_stop(c2), 0);
	ASSERT_EQ(r2.connects, 1);
	rec_free(&r2);
}

TEST_T(tls_client_certificate_required_by_the_broker_plain_and_encrypted_key,
       60)
{
	static const char pass[] = "s3cret-pass";
	struct th_broker b;
	struct rec r1, r2, r3;
	char crt[512], key[512], enc[512];
	th_tls_broker_start(&b, "server", 1);
	th_path(crt, sizeof(crt), "client.crt");
	th_path(key, sizeof(key), "client.key");
	th_path(enc, sizeof(enc), "client-enc.key");

	/* No client certificate: the broker ends the handshake. */
	struct mg_mqtt *c1 = rec_client(&r1, NULL);
	tls_refused(c1, &r1,
	            OPTS("MQTT_BROKER_URL", b.url, "MQTT_TLS_CA_CERTS", b.ca,
	                 "MQTT_CONNECTION_TIMEOUT", "3"));
	rec_stop(c1, &r1);

	struct mg_mqtt *c2 = rec_client(&r2, NULL);
	const char *o2[] = {"MQTT_BROKER_URL", b.url,   "MQTT_TLS_CA_CERTS", b.ca,
	                    "MQTT_TLS_CERTFILE", crt, "MQTT_TLS_KEYFILE",  key,
	                    NULL};
	rec_start(c2, o2);
	ASSERT(mg_mqtt_is_connected(c2));
	rec_stop(c2, &r2);

	struct mg_mqtt *c3 = rec_client(&r3, NULL);
	const char *o3[] = {"MQTT_BROKER_URL", b.url,
	                    "MQTT_TLS_CA_CERTS", b.ca,
	                    "MQTT_TLS_CERTFILE", crt,
	                    "MQTT_TLS_KEYFILE", enc,
	                    "MQTT_TLS_KEYFILE_PASSWORD", pass,
	                    NULL};
	rec_start(c3, o3);
	ASSERT(mg_mqtt_is_connected(c3));
	ASSERT(!rec_status_has(c3, pass));
	stop_secret_hidden(c3, &r3, "", pass);
}

TEST_T(tls_version_choices_and_tls_enabled_with_a_bare_host_connect, 60)
{
	struct th_broker b;
	struct rec r;
	char port[16];
	th_tls_broker_start(&b, "server", 0);
	snprintf(port, sizeof(port), "%d", b.port);

	static const char *const versions[] = {"tlsv1.2", "auto"};
	for (int i = 0; i < 2; i++) {
		struct mg_mqtt *c = rec_client(&r, NULL);
		const char *o[] = {"MQTT_BROKER_URL", b.url, "MQTT_TLS_CA_CERTS", b.ca,
		                   "MQTT_TLS_VERSION", versions[i], NULL};
		rec_start(c, o);
		ASSERT(mg_mqtt_is_connected(c));
		rec_stop(c, &r);
	}

	/* TLS from TLS_ENABLED: the bare host becomes ssl://host:port. */
	const char *o[] = {"MQTT_BROKER_URL",  "127.0.0.1", "MQTT_BROKER_PORT",
	                   port,               "MQTT_TLS_ENABLED", "true",
	                   "MQTT_TLS_CA_CERTS", b.ca,         NULL};
	struct mg_mqtt *c = rec_started(&r, o);
	ASSERT(mg_mqtt_is_connected(c));
	ASSERT(WAIT_UNTIL(REC(&r, connects) == 1, 5000));
	ASSERT_CONTAINS(r.last_broker, "ssl://127.0.0.1:");
	ASSERT_CONTAINS(r.last_broker, port);
	rec_stop(c, &r);
}

/* ---- 3. WebSocket transport ---------------------------------------------- */

static const char ws_conf[] = "listener {PORT} 127.0.0.1\n"
                              "allow_anonymous true\n"
                              "listener {PORT2} 127.0.0.1\n"
                              "protocol websockets\n";

/* Subscribe and publish over the client's transport; checked on the
 * broker's plain TCP listener with mosquitto_sub / mosquitto_pub. */
static void ws_roundtrip(struct th_broker *b, struct mg_mqtt *c, struct rec *r,
                         const char *tag)
{
	char in[64], out[64], line[128];
	struct th_sub s;
	snprintf(in, sizeof(in), "ws/%s/in", tag);
	snprintf(out, sizeof(out), "ws/%s/out", tag);
	th_sub_start(&s, b, out, 1, "-q 1");
	ASSERT_GT(mg_mqtt_subscribe(c, in, 1), 0);
	ASSERT(WAIT_UNTIL(rec_subs_settled(c, 1), 5000));
	REC_PUB_ARRIVES(b, r, in, "to-client", 5000);
	int id = mg_mqtt_publish(c, out, "from-client", 11, 1, 0);
	ASSERT_GT(id, 0);
	char *got = th_sub_done(&s, 10000, NULL);
	snprintf(line, sizeof(line), "%s from-client", out);
	ASSERT_CONTAINS(got, line);
	free(got);
	ASSERT_EQ(pub_result(r, id), 0);
}

TEST(websocket_transport_works_with_a_bare_host_and_port_and_with_a_ws_url)
{
	struct th_broker b;
	struct rec r, r2;
	char port2[16], url[96];
	th_broker_start(&b, ws_conf);
	snprintf(port2, sizeof(port2), "%d", b.port2);
	snprintf(url, sizeof(url), "ws://127.0.0.1:%d", b.port2);

	struct mg_mqtt *c =
	    rec_started(&r, OPTS("MQTT_TRANSPORT", "websockets", "MQTT_BROKER_URL",
	                         "127.0.0.1", "MQTT_BROKER_PORT", port2));
	ASSERT(WAIT_UNTIL(REC(&r, connects) == 1, 5000));
	ASSERT_CONTAINS(r.last_broker, "ws://127.0.0.1:");
	char *st = rec_status(c);
	ASSERT_CONTAINS(st, "\"transport\":\"websockets\"");
	free(st);
	ws_roundtrip(&b, c, &r, "host");
	rec_stop(c, &r);

	struct mg_mqtt *c2 = rec_client(&r2, NULL);
	const char *o2[] = {"MQTT_BROKER_URL", url, NULL};
	rec_start(c2, o2);
	ASSERT(WAIT_UNTIL(REC(&r2, connects) == 1, 5000));
	ASSERT_CONTAINS(r2.last_broker, url);
	ws_roundtrip(&b, c2, &r2, "url");
	rec_stop(c2, &r2);
}

/* ---- 4. protocol versions, MQTT 5 properties and reason codes ------------ */

/* Connects with `version`, checks the broker saw protocol `wire` (its log
 * says "as <id> (p1," for 3.1, p2 for 3.1.1, p5 for 5), then subscribes,
 * receives and publishes. */
static void protocol_roundtrip(const char *version, const char *client_id,
                               const char *wire, const char *status_name)
{
	struct th_broker b;
	struct th_sub s;
	struct rec r;
	char needle[128];
	th_broker_sub_start(&b, NULL, &s, "pv/out", 1, "-q 1");
	struct mg_mqtt *c =
	    rec_started(&r, OPTS("MQTT_BROKER_URL", b.url, "MQTT_PROTOCOL_VERSION",
	                         version, "MQTT_CLIENT_ID", client_id));
	snprintf(needle, sizeof(needle), "as %s (%s,", client_id, wire);
	ASSERT(WAIT_UNTIL(th_count_lines(b.log, needle) == 1, 5000));
	char *st = rec_status(c);
	snprintf(needle, sizeof(needle), "\"protocol\":\"%s\"", status_name);
	ASSERT_CONTAINS(st, needle);
	free(st);

	int sid = mg_mqtt_subscribe(c, "pv/in", 1);
	ASSERT_GT(sid, 0);
	ASSERT_EQ(sub_code(&r, sid), 1);
	REC_PUB_ARRIVES(&b, &r, "pv/in", "hello-in", 5000);
	ASSERT_EQ(r.msgs[rec_find(&r, "pv/in", "hello-in")].qos, 1);

	int id = mg_mqtt_publish(c, "pv/out", "hello-out", 9, 1, 0);
	ASSERT_GT(id, 0);
	char *got = th_sub_done(&s, 10000, NULL);
	ASSERT_CONTAINS(got, "pv/out hello-out");
	free(got);
	ASSERT_EQ(pub_result(&r, id), 0);
	rec_stop(c, &r);
}

TEST(protocol_3_1_connects_subscribes_receives_and_publishes)
{
	/* 3.1 allows client ids of at most 23 bytes. */
	protocol_roundtrip("3.1", "cwm-proto-31", "p1", "3.1");
}

TEST(protocol_3_1_1_connects_subscribes_receives_and_publishes)
{
	protocol_roundtrip("3.1.1", "cwm-proto-311", "p2", "3.1.1");
}

TEST(protocol_5_connects_subscribes_receives_and_publishes)
{
	protocol_roundtrip("5", "cwm-proto-5", "p5", "5");
}

/* Every MQTT 5 publish property, set. */
static const struct mg_mqtt_user_property props_user[] = {{"k1", "v1"},
                                                          {"trace", "abc-123"}};
static struct mg_mqtt_props all_props(void)
{
	struct mg_mqtt_props p = {0};
	p.user = props_user;
	p.user_count = 2;
	p.message_expiry = 60;
	p.response_topic = "p5/reply";
	p.correlation_data = "corr-42";
	p.correlation_len = 7;
	p.content_type = "application/json";
	p.payload_utf8 = 1;
	return p;
}

TEST(mqtt5_publish_properties_reach_mosquitto_sub)
{
	struct th_broker b;
	struct th_sub s;
	struct rec r;
	th_broker_sub_start(&b, NULL, &s,
	                    "p5/#", 1, "-V mqttv5 -F %t|%p|%P|%C|%D|%E|%F|%R");
	struct mg_mqtt *c = rec_started(
	    &r, OPTS("MQTT_BROKER_URL", b.url, "MQTT_PROTOCOL_VERSION", "5"));
	struct mg_mqtt_props p = all_props();
	int id = mg_mqtt_publish_props(c, "p5/data", "{\"v\":1}", 7, 1, 0, &p);
	ASSERT_GT(id, 0);
	char *got = th_sub_done(&s, 10000, NULL);
	/* topic|payload|user props|content type|correlation|expiry|UTF-8|rt */
	ASSERT_CONTAINS(got, "p5/data|{\"v\":1}|k1:v1 trace:abc-123|"
	                     "application/json|corr-42|");
	ASSERT_CONTAINS(got, "|1|p5/reply");
	free(got);
	ASSERT_EQ(pub_result(&r, id), 0);
	rec_stop(c, &r);
}

TEST(mqtt5_publish_properties_reach_a_second_mqtt5_clients_handler)
{
	struct th_broker b;
	struct rec rs, rr;
	th_broker_start(&b, NULL);
	struct mg_mqtt *rx = rec_client(&rr, "RX");
	struct mg_mqtt *tx = rec_client(&rs, "TX");
	const char *o[] = {"RX_BROKER_URL", b.url, "RX_PROTOCOL_VERSION", "5",
	                   "TX_BROKER_URL", b.url, "TX_PROTOCOL_VERSION", "5",
	                   NULL};
	rec_start(rx, o);
	ASSERT_GT(mg_mqtt_subscribe(rx, "p5/#", 1), 0);
	ASSERT(WAIT_UNTIL(rec_subs_settled(rx, 1), 5000));
	rec_start(tx, o);

	struct mg_mqtt_props p = all_props();
	int id = mg_mqtt_publish_props(tx, "p5/data", "{\"v\":1}", 7, 1, 0, &p);
	ASSERT_GT(id, 0);
	ASSERT(WAIT_UNTIL(rec_find(&rr, "p5/data", "{\"v\":1}") >= 0, 5000));
	const char *got = rr.msgs[rec_find(&rr, "p5/data", NULL)].props;
	ASSERT_CONTAINS(got, "k1=v1;trace=abc-123;|rt=p5/reply|cd=corr-42|exp=");
	ASSERT_CONTAINS(got, "|ct=application/json|utf8=1");
	/* The broker forwards the remaining lifetime: 60 or just under. */
	unsigned exp = (unsigned)atoi(strstr(got, "|exp=") + 5);
	ASSERT(exp >= 55 && exp <= 60);
	ASSERT_EQ(pub_result(&rs, id), 0);
	ASSERT_EQ(mg_mqtt_stop(tx), 0);
	rec_stop(rx, &rs);
	rec_free(&rr);
}

TEST(mqtt311_publish_props_refuses_any_property_and_accepts_none)
{
	struct th_broker b;
	struct th_sub s;
	struct rec r;
	th_broker_sub_start(&b, NULL, &s, "p3/#", 2, NULL);
	struct mg_mqtt *c = rec_connected(&r, &b);

	static const struct mg_mqtt_user_property up[] = {{"k", "v"}};
	struct mg_mqtt_props one[6];
	memset(one, 0, sizeof(one));
	one[0].user = up;
	one[0].user_count = 1;
	one[1].message_expiry = 10;
	one[2].response_topic = "p3/reply";
	one[3].correlation_data = "x";
	one[3].correlation_len = 1;
	one[4].content_type = "text/plain";
	one[5].payload_utf8 = 1;
	for (int i = 0; i < 6; i++)
		ASSERT_EQ(mg_mqtt_publish_props(c, "p3/x", "no", 2, 1, 0, &one[i]),
		          MG_MQTT_ERR_PROTOCOL);

	struct mg_mqtt_props none = {0};
	int id1 = mg_mqtt_publish_props(c, "p3/null", "a", 1, 1, 0, NULL);
	int id2 = mg_mqtt_publish_props(c, "p3/zero", "b", 1, 1, 0, &none);
	ASSERT_GT(id1, 0);
	ASSERT_GT(id2, 0);
	ASSERT_EQ(th_sub_wait(&s, 10000), 0);
	int n;
	char *got = th_sub_messages(&s, &n);
	ASSERT_EQ(n, 2);
	ASSERT_CONTAINS(got, "p3/null a");
	ASSERT_CONTAINS(got, "p3/zero b");
	free(got);
	ASSERT_EQ(pub_result(&r, id1), 0);
	ASSERT_EQ(pub_result(&r, id2), 0);
	/* Refused calls queue nothing, so no acknowledgement follows. */
	ASSERT_EQ(REC(&r, npub), 2);
	rec_stop(c, &r);
}

/* mosquitto 2.0's acl_file never refuses a SUBSCRIBE (it filters on
 * delivery), so refusals come from the bundled dynamic-security plugin:
 * anonymous clients may subscribe to acl/open/# only, and may not publish
 * to acl/secret/#. */
static void acl_broker(struct th_broker *b)
{
	char js[512], conf[1024];
	th_path(js, sizeof(js), "dynsec.json");
	th_write_file(js,
	              "{\"defaultACLAccess\": {\"publishClientSend\": true,\n"
	              " \"publishClientReceive\": true, \"subscribe\": false,\n"
	              " \"unsubscribe\": true},\n"
	              " \"clients\": [],\n"
	              " \"groups\": [{\"groupname\": \"anon\",\n"
	              "   \"roles\": [{\"rolename\": \"open\"}]}],\n"
	              " \"anonymousGroup\": \"anon\",\n"
	              " \"roles\": [{\"rolename\": \"open\", \"acls\": [\n"
	              "   {\"acltype\": \"subscribePattern\", \"topic\": "
	              "\"acl/open/#\", \"allow\": true},\n"
	              "   {\"acltype\": \"publishClientSend\", \"topic\": "
	              "\"acl/secret/#\", \"allow\": false}]}]}\n");
	snprintf(conf, sizeof(conf),
	         "listener {PORT} 127.0.0.1\nallow_anonymous true\n"
	         "plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\n"
	         "plugin_opt_config_file %s\n",
	         js);
	th_broker_start(b, conf);
}

TEST(mqtt5_reason_codes_from_the_broker_reach_subscribe_and_publish_handlers)
{
	struct th_broker b;
	struct rec r;
	acl_broker(&b);
	struct mg_mqtt *c = rec_started(
	    &r, OPTS("MQTT_BROKER_URL", b.url, "MQTT_PROTOCOL_VERSION", "5"));

	int denied = mg_mqtt_subscribe(c, "acl/secret/x", 1);
	int allowed = mg_mqtt_subscribe(c, "acl/open/x", 1);
	ASSERT_EQ(sub_code(&r, denied), 0x87); /* not authorized */
	ASSERT_EQ(sub_code(&r, allowed), 1);
	ASSERT(WAIT_UNTIL(rec_log_has(&r, "acl/secret/x"), 5000));

	/* No subscriber: 0 or 0x10 "no matching subscribers", both success. */
	int lonely = mg_mqtt_publish(c, "acl/open/nobody", "x", 1, 1, 0);
	ASSERT_GT(lonely, 0);
	int res = pub_result(&r, lonely);
	ASSERT(res == 0 || res == 0x10);

	/* A denied publish: PUBACK 0x87, a refusal. */
	int refused = mg_mqtt_publish(c, "acl/secret/x", "z", 1, 1, 0);
	ASSERT_GT(refused, 0);
	ASSERT_EQ(pub_result(&r, refused), 0x87);

	/* A subscriber: plain success, and the message arrives. */
	int ok = mg_mqtt_publish(c, "acl/open/x", "y", 1, 1, 0);
	ASSERT_EQ(pub_result(&r, ok), 0);
	ASSERT(WAIT_UNTIL(rec_find(&r, "acl/open/x", "y") >= 0, 5000));
	rec_stop(c, &r);
}

TEST(mqtt311_refused_subscription_reports_suback_code_0x80)
{
	struct th_broker b;
	struct rec r;
	acl_broker(&b);
	struct mg_mqtt *c = rec_connected(&r, &b);
	int denied = mg_mqtt_subscribe(c, "acl/secret/x", 2);
	int allowed = mg_mqtt_subscribe(c, "acl/open/x", 2);
	ASSERT_EQ(sub_code(&r, denied), 0x80);
	ASSERT_EQ(sub_code(&r, allowed), 2);
	rec_stop(c, &r);
}

/* ---- 5. QoS and retain, both directions ---------------------------------- */

TEST(client_publishes_at_each_qos_and_retained_messages_reach_later_subscribers)
{
	struct th_broker b;
	struct th_sub live, later, after;
	struct rec r;
	int n;
	th_broker_sub_start(&b, NULL, &live,
	                    "qr/live/#", 3, "-q 2 -F %q|%r|%t|%p");
	struct mg_mqtt *c = rec_connected(&r, &b);

	int ids[6];
	char topic[32], payload[32];
	for (int q = 0; q < 3; q++) {
		snprintf(topic, sizeof(topic), "qr/live/%d", q);
		snprintf(payload, sizeof(payload), "m%d", q);
		ids[q] = mg_mqtt_publish(c, topic, payload, strlen(payload), q, 0);
		snprintf(topic, sizeof(topic), "qr/kept/%d", q);
		snprintf(payload, sizeof(payload), "state-%d", q);
		ids[3 + q] = mg_mqtt_publish(c, topic, payload, strlen(payload), q, 1);
	}
	for (int i = 0; i < 6; i++)
		ASSERT_EQ(pub_result(&r, ids[i]), 0);

	char *got = th_sub_done(&live, 10000, &n);
	ASSERT_EQ(n, 3);
	ASSERT_CONTAINS_ALL(got, "0|0|qr/live/0|m0", "1|0|qr/live/1|m1",
	                    "2|0|qr/live/2|m2");
	free(got);

	/* Acknowledged, so stored: a new subscriber gets them flagged retained. */
	th_sub_start(&later, &b, "qr/kept/#", 3, "-q 2 -F %q|%r|%t|%p");
	got = th_sub_done(&later, 10000, &n);
	ASSERT_EQ(n, 3);
	ASSERT_CONTAINS_ALL(got, "0|1|qr/kept/0|state-0",
	                    "1|1|qr/kept/1|state-1", "2|1|qr/kept/2|state-2");
	free(got);

	/* An empty retained message clears the topic (NULL payload, len 0). */
	ASSERT_EQ(pub_result(&r, mg_mqtt_publish(c, "qr/kept/0", NULL, 0, 1, 1)),
	          0);
	th_sub_start(&after, &b, "qr/kept/#", 0, "-F %r|%t|%p");
	th_pub(&b, "qr/kept/probe", "p", 1, 0, NULL);
	ASSERT(WAIT_UNTIL(th_count_lines(after.out, "|qr/kept/probe|p") == 1,
	                  5000));
	th_sub_stop(&after);
	got = th_sub_messages(&after, &n);
	ASSERT_EQ(n, 3);
	ASSERT_NOT_CONTAINS(got, "qr/kept/0");
	free(got);
	rec_stop(c, &r);
}

TEST(client_receives_each_qos_and_retained_messages_with_their_flags)
{
	struct th_broker b;
	struct rec r;
	th_broker_start(&b, NULL);
	th_pub(&b, "qb/kept/1", "old-1", 1, 1, NULL);
	th_pub(&b, "qb/kept/2", "old-2", 2, 1, NULL);
	struct mg_mqtt *c = rec_connected(&r, &b);
	ASSERT_EQ(sub_code(&r, mg_mqtt_subscribe(c, "qb/#", 2)), 2);
	ASSERT(WAIT_UNTIL(REC(&r, nmsgs) == 2, 5000));
	for (int q = 1; q <= 2; q++) {
		char t[32], p[32];
		snprintf(t, sizeof(t), "qb/kept/%d", q);
		snprintf(p, sizeof(p), "old-%d", q);
		REC_EXPECT_MSG(&r, t, p, q, 1, 0);
	}
	for (int q = 0; q <= 2; q++) {
		char t[32];
		snprintf(t, sizeof(t), "qb/live/%d", q);
		th_pub(&b, t, "now", q, 0, NULL);
		REC_EXPECT_MSG(&r, t, "now", q, 0, 5000);
	}
	/* A QoS 1 subscription gets a QoS 2 message at QoS 1. */
	ASSERT_EQ(sub_code(&r, mg_mqtt_subscribe(c, "qd/#", 1)), 1);
	th_pub(&b, "qd/x", "down", 2, 0, NULL);
	REC_EXPECT_MSG(&r, "qd/x", "down", 1, 0, 5000);
	rec_stop(c, &r);
}

/* ---- 6. last will -------------------------------------------------------- */

TEST(last_will_is_published_when_the_client_process_is_killed)
{
	struct th_broker b;
	struct th_sub s, later;
	struct child ch;
	int n;
	th_broker_sub_start(&b, NULL, &s, "lw/dev1", 1, "-q 1 -F %q|%r|%t|%p");
	const char *o[] = {"MQTT_BROKER_URL",       b.url,
	                   "MQTT_CLIENT_ID",        "lw-dev1",
	                   "MQTT_LAST_WILL_TOPIC",  "lw/dev1",
	                   "MQTT_LAST_WILL_MESSAGE", "gone",
	                   "MQTT_LAST_WILL_QOS",    "1",
	                   "MQTT_LAST_WILL_RETAIN", "false",
	                   NULL};
	child_client_start(&ch, o);
	ASSERT(WAIT_UNTIL(th_count_lines(b.log, "as lw-dev1 (") == 1, 5000));
	/* A crash: no DISCONNECT, the socket just closes. */
	child_kill(&ch);
	char *got = th_sub_done(&s, 10000, &n);
	ASSERT_EQ(n, 1);
	ASSERT_STREQ(got, "1|0|lw/dev1|gone");
	free(got);

	/* RETAIN false: a later subscriber gets only the probe. */
	th_sub_start(&later, &b, "lw/#", 0, NULL);
	th_pub(&b, "lw/probe", "p", 1, 0, NULL);
	ASSERT(WAIT_UNTIL(th_count_lines(later.out, "lw/probe p") == 1, 5000));
	th_sub_stop(&later);
	got = th_sub_messages(&later, &n);
	ASSERT_EQ(n, 1);
	free(got);
}

TEST(last_will_is_not_published_after_a_clean_stop)
{
	struct th_broker b;
	struct th_sub s;
	struct rec r;
	int n;
	th_broker_sub_start(&b, NULL, &s, "lw2/will", 0, "-q 1 -t lw2/probe");
	struct mg_mqtt *c = rec_started(
	    &r, OPTS("MQTT_BROKER_URL", b.url, "MQTT_LAST_WILL_TOPIC", "lw2/will",
	             "MQTT_LAST_WILL_MESSAGE", "gone", "MQTT_LAST_WILL_QOS", "1"));
	ASSERT(mg_mqtt_is_connected(c));
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	ASSERT_EQ(r.stopped_disconnects, 1);
	/* The probe comes after the disconnect: once it is here, a will would
	 * have been too. */
	th_pub(&b, "lw2/probe", "after-stop", 1, 0, NULL);
	ASSERT(WAIT_UNTIL(th_count_lines(s.out, "lw2/probe after-stop") == 1,
	                  5000));
	th_sub_stop(&s);
	char *got = th_sub_messages(&s, &n);
	ASSERT_EQ(n, 1);
	ASSERT_NOT_CONTAINS(got, "lw2/will");
	free(got);
	rec_free(&r);
}

/* ---- 7. birth message ---------------------------------------------------- */

TEST_T(birth_message_is_published_on_connect_and_again_after_a_broker_restart,
       60)
{
	struct th_broker b;
	struct th_sub first, again, retained;
	struct rec r;
	th_broker_sub_start(&b, NULL, &first,
	                    "bt/dev/status", 1, "-q 1 -F %q|%t|%p");
	struct mg_mqtt *c = rec_started(
	    &r, OPTS("MQTT_BROKER_URL", b.url, "MQTT_BIRTH_TOPIC", "bt/dev/status",
	             "MQTT_BIRTH_MESSAGE", "online", "MQTT_BIRTH_QOS", "1",
	             "MQTT_BIRTH_RETAIN", "true", "MQTT_RECONNECT_MIN", "1",
	             "MQTT_RECONNECT_MAX", "2"));
	th_sub_expect(&first, 10000, "1|bt/dev/status|online");
	/* The birth is the client's own: no on_publish for it. */
	ASSERT_EQ(REC(&r, npub), 0);

	/* Without persistence the restarted broker has forgotten the retained
	 * birth: seeing it again proves it was sent again. */
	th_broker_restart(&b);
	ASSERT(WAIT_UNTIL(REC(&r, connects) == 2, 15000));
	th_sub_start(&again, &b, "bt/dev/status", 1, "-q 1");
	th_sub_expect(&again, 10000, "bt/dev/status online");
	/* And retained again. */
	th_sub_start(&retained, &b, "bt/dev/status", 1, "-q 1 -F %r|%p");
	th_sub_expect(&retained, 10000, "1|online");
	rec_stop(c, &r);
}

TEST(presence_topic_reads_online_while_up_and_offline_after_a_crash)
{
	struct th_broker b;
	struct th_sub up, now, live, down;
	struct child ch;
	th_broker_start(&b, NULL);
	const char *o[] = {"MQTT_BROKER_URL",        b.url,
	                   "MQTT_CLIENT_ID",         "presence-1",
	                   "MQTT_LAST_WILL_TOPIC",   "pr/dev/status",
	                   "MQTT_LAST_WILL_MESSAGE", "offline",
	                   "MQTT_LAST_WILL_QOS",     "1",
	                   "MQTT_LAST_WILL_RETAIN",  "true",
	                   "MQTT_BIRTH_TOPIC",       "pr/dev/status",
	                   "MQTT_BIRTH_MESSAGE",     "online",
	                   "MQTT_BIRTH_QOS",         "1",
	                   "MQTT_BIRTH_RETAIN",      "true",
	                   NULL};
	child_client_start(&ch, o);
	/* The birth follows the connect: it arrives live or retained. */
	th_sub_start(&up, &b, "pr/dev/status", 1, "-q 1 -F %p");
	th_sub_expect(&up, 10000, "online");
	th_sub_start(&now, &b, "pr/dev/status", 1, "-q 1 -F %r|%p");
	th_sub_expect(&now, 10000, "1|online");

	th_sub_start(&live, &b, "pr/dev/status", 0, "-q 1 -F %r|%p");
	child_kill(&ch);
	ASSERT(WAIT_UNTIL(th_count_lines(live.out, "0|offline") == 1, 10000));
	th_sub_stop(&live);
	th_sub_start(&down, &b, "pr/dev/status", 1, "-q 1 -F %r|%p");
	th_sub_expect(&down, 10000, "1|offline");
}

/* ---- 8. shared subscriptions --------------------------------------------- */

TEST(shared_group_sends_share_filters_and_members_split_the_messages)
{
	enum { N = 50 };
	struct th_broker b;
	struct rec r1, r2, rp;
	th_broker_start(&b, NULL);
	struct mg_mqtt *w1 = rec_client(&r1, "W1");
	struct mg_mqtt *w2 = rec_client(&r2, "W2");
	struct mg_mqtt *pub = rec_client(&rp, "PUB");
	struct rec_tag t1 = {&r1, 7}, t2 = {&r2, 7};
	ASSERT_EQ(mg_mqtt_on_topic(w1, "jobs/+", rec_on_topic_cb, &t1), 0);
	ASSERT_EQ(mg_mqtt_on_topic(w2, "jobs/+", rec_on_topic_cb, &t2), 0);
	const char *o[] = {"W1_BROKER_URL", b.url, "W1_SHARED_GROUP", "g1",
	                   "W2_BROKER_URL", b.url, "W2_SHARED_GROUP", "g1",
	                   "PUB_BROKER_URL", b.url, NULL};
	rec_start(w1, o);
	rec_start(w2, o);
	rec_start(pub, o);
	ASSERT_EQ(sub_code(&r1, mg_mqtt_subscribe(w1, "jobs/#", 1)), 1);
	ASSERT_EQ(sub_code(&r2, mg_mqtt_subscribe(w2, "jobs/#", 1)), 1);
	/* On the wire: $share/g1/jobs/# (mosquitto logs each filter). */
	ASSERT(WAIT_UNTIL(th_count_lines(b.log, "$share/g1/jobs/# (QoS 1)") == 2,
	                  5000));
	ASSERT_EQ(th_count_lines(b.log, "\tjobs/# (QoS"), 0);
	/* The client still lists the plain filter. */
	struct mg_mqtt_subscription *subs;
	ASSERT_EQ(mg_mqtt_subscriptions(w1, &subs), 1);
	ASSERT_STREQ(subs[0].filter, "jobs/#");
	ASSERT_EQ(subs[0].granted, 1);
	free(subs);

	for (int i = 0; i < N; i++) {
		char p[16];
		int len = snprintf(p, sizeof(p), "%d", i);
		ASSERT_GT(mg_mqtt_publish(pub, "jobs/a", p, (size_t)len, 1, 0), 0);
	}
	ASSERT(WAIT_UNTIL(REC(&r1, nmsgs) + REC(&r2, nmsgs) == N, 10000));
	ASSERT(WAIT_UNTIL(REC(&rp, npub) == N, 5000));
	/* Late duplicates would show up now. */
	th_sleep_ms(300);
	ASSERT_EQ(REC(&r1, nmsgs) + REC(&r2, nmsgs), N);
	ASSERT_GT(REC(&r1, nmsgs), 0);
	ASSERT_GT(REC(&r2, nmsgs), 0);
	int seen[N] = {0};
	struct rec *rs[2] = {&r1, &r2};
	for (int k = 0; k < 2; k++)
		for (int i = 0; i < rs[k]->nmsgs; i++) {
			struct rec_msg *m = &rs[k]->msgs[i];
			ASSERT_STREQ(m->topic, "jobs/a");
			ASSERT_EQ(m->handler, 7); /* the topic handler, not catch-all */
			int v = atoi(m->payload);
			ASSERT(v >= 0 && v < N);
			seen[v]++;
		}
	for (int i = 0; i < N; i++)
		ASSERT_EQ(seen[i], 1);
	ASSERT_EQ(mg_mqtt_stop(pub), 0);
	ASSERT_EQ(mg_mqtt_stop(w2), 0);
	rec_stop(w1, &rp);
	rec_free(&r2);
	rec_free(&r1);
}

/* ---- 9. three prefixes, three brokers ------------------------------------ */

TEST(three_prefixes_in_one_option_list_use_their_own_brokers)
{
	struct th_broker b[3];
	struct th_sub s[3];
	struct rec r[3];
	struct mg_mqtt *c[3];
	static const char *const prefixes[3] = {"MQTT", "MQTT2", "MQTT3"};
	for (int i = 0; i < 3; i++) {
		th_broker_start(&b[i], NULL);
		th_sub_start(&s[i], &b[i], "multi/#", 0, NULL);
	}
	const char *o[] = {"MQTT_BROKER_URL",  b[0].url, "MQTT_CLIENT_ID",  "one",
	                   "MQTT2_BROKER_URL", b[1].url, "MQTT2_CLIENT_ID", "two",
	                   "MQTT3_BROKER_URL", b[2].url, "MQTT3_CLIENT_ID", "three",
	                   NULL};
	for (int i = 0; i < 3; i++) {
		c[i] = rec_client(&r[i], prefixes[i]);
		rec_start(c[i], o);
		ASSERT_EQ(sub_code(&r[i], mg_mqtt_subscribe(c[i], "multi/#", 1)), 1);
	}
	for (int i = 0; i < 3; i++) {
		ASSERT_STREQ(r[i].last_broker, b[i].url);
		char t[32], p[32];
		snprintf(t, sizeof(t), "multi/c%d", i);
		snprintf(p, sizeof(p), "from-%d", i);
		ASSERT_GT(mg_mqtt_publish(c[i], t, p, strlen(p), 1, 0), 0);
		snprintf(t, sizeof(t), "multi/b%d", i);
		snprintf(p, sizeof(p), "to-%d", i);
		th_pub(&b[i], t, p, 1, 0, NULL);
	}
	for (int i = 0; i < 3; i++) {
		char t[32], p[32], line[64];
		snprintf(t, sizeof(t), "multi/c%d", i);
		snprintf(p, sizeof(p), "from-%d", i);
		ASSERT(WAIT_UNTIL(rec_find(&r[i], t, p) >= 0, 5000));
		snprintf(line, sizeof(line), "%s %s", t, p);
		ASSERT(WAIT_UNTIL(th_count_lines(s[i].out, line) == 1, 5000));
		snprintf(t, sizeof(t), "multi/b%d", i);
		snprintf(p, sizeof(p), "to-%d", i);
		ASSERT(WAIT_UNTIL(rec_find(&r[i], t, p) >= 0, 5000));
		snprintf(line, sizeof(line), "%s %s", t, p);
		ASSERT(WAIT_UNTIL(th_count_lines(s[i].out, line) == 1, 5000));
	}
	/* Anything crossing over would have arrived alongside by now. */
	th_sleep_ms(200);
	for (int i = 0; i < 3; i++) {
		int n;
		char *got;
		ASSERT_EQ(REC(&r[i], nmsgs), 2);
		th_sub_stop(&s[i]);
		got = th_sub_messages(&s[i], &n);
		ASSERT_EQ(n, 2);
		free(got);
		char *st = rec_status(c[i]);
		ASSERT_CONTAINS(st, b[i].url);
		free(st);
	}
	for (int i = 0; i < 3; i++) {
		char needle[32];
		snprintf(needle, sizeof(needle), "as %s (",
		         i == 0 ? "one" : i == 1 ? "two" : "three");
		ASSERT_EQ(th_count_lines(b[i].log, needle), 1);
		ASSERT_EQ(mg_mqtt_stop(c[i]), 0);
		rec_free(&r[i]);
	}
}

/* ---- 10. fail-over list -------------------------------------------------- */

TEST(fail_over_list_skips_a_dead_broker_and_connects_to_the_live_one)
{
	struct th_broker b;
	struct th_sub s;
	struct rec r;
	char list[256];
	th_broker_start(&b, NULL);
	int dead = th_free_port();
	/* The live one spelt mqtt://: the client reports its tcp:// form. */
	snprintf(list, sizeof(list), "tcp://127.0.0.1:%d, mqtt://127.0.0.1:%d",
	         dead, b.port);
	th_sub_start(&s, &b, "fo/x", 1, NULL);
	struct mg_mqtt *c = rec_started(&r, OPTS("MQTT_BROKER_URL", list));
	ASSERT(mg_mqtt_is_connected(c));
	ASSERT(WAIT_UNTIL(REC(&r, connects) == 1, 5000));
	ASSERT_STREQ(r.last_broker, b.url);
	char *st = rec_status(c);
	char needle[128];
	snprintf(needle, sizeof(needle), "\"broker\":\"%s\"", b.url);
	ASSERT_CONTAINS(st, needle);
	snprintf(needle, sizeof(needle),
	         "\"brokers\":[\"tcp://127.0.0.1:%d\",\"%s\"]", dead, b.url);
	ASSERT_CONTAINS(st, needle);
	free(st);
	ASSERT_GT(mg_mqtt_publish(c, "fo/x", "via-live", 8, 1, 0), 0);
	th_sub_expect(&s, 10000, "fo/x via-live");
	rec_stop(c, &r);
}

/* ---- 11. CONNECT_ASYNC true ---------------------------------------------- */

TEST_T(connect_async_starts_without_a_broker_and_flushes_when_one_appears, 60)
{
	struct th_broker b;
	struct th_sub s;
	struct rec r;
	th_broker_later(&b, NULL);
	struct mg_mqtt *c = rec_client(&r, NULL);
	const char *o[] = {"MQTT_BROKER_URL",         b.url,
	                   "MQTT_CONNECT_ASYNC",      "true",
	                   "MQTT_CONNECTION_TIMEOUT", "5",
	                   "MQTT_RECONNECT_MIN",      "1",
	                   "MQTT_RECONNECT_MAX",      "2",
	                   NULL};
	int64_t t0 = th_now_ms();
	rec_start(c, o);
	ASSERT_LT(th_now_ms() - t0, 1000 * th_timeout_scale());
	ASSERT(!mg_mqtt_is_connected(c));
	/* Made while disconnected: kept, and sent on connect. */
	int sid = mg_mqtt_subscribe(c, "late/#", 1);
	ASSERT_GT(sid, 0);
	int kept = mg_mqtt_publish(c, "late/kept", "buffered", 8, 1, 1);
	ASSERT_GT(kept, 0);
	ASSERT(WAIT_UNTIL(REC(&r, connect_fails) >= 1, 5000));
	ASSERT_EQ(REC(&r, connects), 0);
	ASSERT_EQ(REC(&r, npub), 0);

	th_broker_restart(&b);
	ASSERT(WAIT_UNTIL(mg_mqtt_is_connected(c), 15000));
	ASSERT(WAIT_UNTIL(REC(&r, connects) == 1, 5000));
	ASSERT_EQ(pub_result(&r, kept), 0);
	ASSERT_EQ(sub_code(&r, sid), 1);
	/* Retained, so a subscriber that comes after the flush still sees it. */
	th_sub_start(&s, &b, "late/kept", 1, "-F %r|%t|%p");
	th_sub_expect(&s, 10000, "1|late/kept|buffered");
	/* The subscription is live: the client got its own message, and a new
	 * one from outside. */
	ASSERT(WAIT_UNTIL(rec_find(&r, "late/kept", "buffered") >= 0, 5000));
	REC_PUB_ARRIVES(&b, &r, "late/news", "fresh", 5000);
	rec_stop(c, &r);
}

/* ---- 12. CONNECT_ASYNC false, no broker ---------------------------------- */

TEST(connect_sync_to_a_closed_port_fails_with_connect_error_naming_the_url)
{
	struct rec r;
	char url[64], err[1024];
	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", th_free_port());
	struct mg_mqtt *c = rec_client(&r, NULL);
	const char *o[] = {"MQTT_BROKER_URL", url, "MQTT_CONNECTION_TIMEOUT", "3",
	                   NULL};
	int64_t t0 = th_now_ms();
	ASSERT_EQ(mg_mqtt_start(c, NULL, o, err, sizeof(err)),
	          MG_MQTT_ERR_CONNECT);
	ASSERT_LE(th_now_ms() - t0, 4000 * th_timeout_scale());
	ASSERT_CONTAINS(err, url);
	ASSERT(!mg_mqtt_is_connected(c));
	ASSERT(WAIT_UNTIL(REC(&r, connect_fails) == 1, 5000));
	ASSERT_EQ(REC(&r, last_error), MG_MQTT_ERR_CONNECT);
	ASSERT_EQ(REC(&r, last_reason), -1); /* no CONNACK */
	/* Not started: operations say so. */
	ASSERT_EQ(mg_mqtt_publish(c, "x", "y", 1, 0, 0), MG_MQTT_ERR_NOT_STARTED);
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	ASSERT_CONTAINS(r.log, url);
	/* The start failed: no attempt follows, and the log promises none. */
	ASSERT(!rec_log_has(&r, "next attempt"));
	rec_free(&r);
}

TEST_T(connect_sync_to_a_silent_listener_times_out_and_the_client_can_retry,
       60)
{
	struct th_broker b;
	struct rec r;
	char url[64], err[1024];
	/* Accepts TCP connections (the kernel's backlog) but never answers. */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a;
	socklen_t alen = sizeof(a);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ASSERT_EQ(listen(fd, 16), 0);
	ASSERT_EQ(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", ntohs(a.sin_port));

	struct mg_mqtt *c = rec_client(&r, NULL);
	const char *o[] = {"MQTT_BROKER_URL", url, "MQTT_CONNECTION_TIMEOUT", "2",
	                   NULL};
	int64_t t0 = th_now_ms();
	int rc = mg_mqtt_start(c, NULL, o, err, sizeof(err));
	int64_t took = th_now_ms() - t0;
	ASSERT(rc == MG_MQTT_ERR_CONNECT || rc == MG_MQTT_ERR_TIMEOUT);
	ASSERT_GE(took, 1500);
	ASSERT_LE(took, 6000 * th_timeout_scale());
	ASSERT_CONTAINS(err, url);
	ASSERT(!mg_mqtt_is_connected(c));
	close(fd);

	/* "Fix and retry": the same client starts against a live broker. */
	th_broker_start(&b, NULL);
	const char *o2[] = {"MQTT_BROKER_URL", b.url, NULL};
	rec_start(c, o2);
	ASSERT(mg_mqtt_is_connected(c));
	ASSERT(WAIT_UNTIL(REC(&r, connects) == 1, 5000));
	ASSERT_STREQ(r.last_broker, b.url);
	rec_stop(c, &r);
}

/* A broker with max_packet_size announces it in its MQTT 5 CONNACK. A
 * publish larger than that is refused at once while connected; one
 * buffered before the broker was known is failed when its turn comes
 * (sent, it would make the broker close the connection, and come back
 * after every reconnect). Nothing of it reaches the broker, and the
 * messages around it do. */
TEST_T(messages_over_the_brokers_maximum_packet_size_are_refused_not_resent,
       60)
{
	struct th_broker b;
	struct th_sub s;
	struct rec r;
	char big[2000];
	memset(big, 'x', sizeof(big));
	th_broker_start(&b, "listener {PORT} 127.0.0.1\nallow_anonymous true\n"
	                    "max_packet_size 1000\n");
	th_broker_stop(&b);
	struct mg_mqtt *c = rec_started(
	    &r, OPTS("MQTT_BROKER_URL", b.url, "MQTT_PROTOCOL_VERSION", "5",
	             "MQTT_CONNECT_ASYNC", "true", "MQTT_RECONNECT_MIN", "1",
	             "MQTT_RECONNECT_MAX", "2"));
	int before = mg_mqtt_publish(c, "mps/a", "before", 6, 1, 0);
	int early = mg_mqtt_publish(c, "mps/big", big, sizeof(big), 1, 0);
	int after = mg_mqtt_publish(c, "mps/b", "after", 5, 1, 0);
	ASSERT_GT(before, 0);
	ASSERT_GT(early, 0);
	ASSERT_GT(after, 0);
	th_broker_restart(&b);
	th_sub_start(&s, &b, "mps/#", 0, "-V mqttv5");
	ASSERT(WAIT_UNTIL(REC(&r, connects) == 1, 15000));
	ASSERT(WAIT_UNTIL(rec_find_pub(&r, after) >= 0, 10000));
	ASSERT_EQ(pub_result(&r, before), 0);
	ASSERT_EQ(pub_result(&r, early), MG_MQTT_ERR_TOO_LARGE);
	ASSERT_EQ(pub_result(&r, after), 0);
	ASSERT(rec_log_has(&r, "larger than the broker's maximum packet size "
	                       "(1000 bytes): not sent"));

	/* Connected and known: refused by the call itself. */
	ASSERT_EQ(mg_mqtt_publish(c, "mps/big", big, sizeof(big), 1, 0),
	          MG_MQTT_ERR_TOO_LARGE);
	ASSERT_EQ(mg_mqtt_publish(c, "mps/big", big, 900, 0, 0) > 0, 1);
	ASSERT(WAIT_UNTIL(th_count_lines(s.out, "mps/big xxx") == 1, 10000));
	th_sleep_ms(300);
	ASSERT_EQ(REC(&r, disconnects), 0);
	ASSERT_EQ(REC(&r, connects), 1);
	int n;
	char *got = th_sub_messages(&s, &n);
	ASSERT_EQ(n, 3); /* before, after, and the 900-byte one */
	ASSERT_CONTAINS(got, "mps/a before");
	ASSERT_CONTAINS(got, "mps/b after");
	free(got);
	char st[4096];
	mg_mqtt_status(c, st, sizeof(st));
	ASSERT_CONTAINS(st, "\"publish_failed\":1");
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	th_sub_stop(&s);
	th_broker_stop(&b);
	rec_free(&r);
}
