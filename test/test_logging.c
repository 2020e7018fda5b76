/*
 * Logging, against real mosquitto brokers: LOG_LEVEL (debug lines for a
 * whole connect / subscribe / publish / receive / stop cycle, warning
 * suppressing info), paho's trace forwarded to debug clients without
 * secrets or payload bytes, CivetWeb's error_log_file written by
 * mqtt-dispatch and never on paho's threads with no line lost, and a TLS
 * host name mismatch reported as MG_MQTT_ERR_TLS with the host name.
 */
#include "rec.h"

#include <civetweb.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>

/* ---- a log handler that records level and thread of each line --------- */

#define LOGMAX 100000

struct logrec {
	pthread_mutex_t mu;
	int n;
	int level[LOGMAX];
	char *line[LOGMAX];
	char thread[LOGMAX][16];
};

static void lr_on_log(struct mg_mqtt *c, int level, const char *text,
                      void *ud)
{
	struct logrec *l = ud;
	(void)c;
	pthread_mutex_lock(&l->mu);
	if (l->n < LOGMAX) {
		l->level[l->n] = level;
		l->line[l->n] = strdup(text);
		pthread_getname_np(pthread_self(), l->thread[l->n], 16);
		l->n++;
	}
	pthread_mutex_unlock(&l->mu);
}

static struct logrec *lr_new(void)
{
	struct logrec *l = calloc(1, sizeof(*l));
	ASSERT(l != NULL);
	pthread_mutex_init(&l->mu, NULL);
	return l;
}

static void lr_free(struct logrec *l)
{
	for (int i = 0; i < l->n; i++)
		free(l->line[i]);
	free(l);
}

/* Lines that start with `start` (NULL: any) and contain `needle`. */
static int lr_count(struct logrec *l, const char *start, const char *needle)
{
	int k = 0;
	pthread_mutex_lock(&l->mu);
	for (int i = 0; i < l->n; i++)
		if ((start == NULL || strncmp(l->line[i], start, strlen(start)) == 0) &&
		    strstr(l->line[i], needle) != NULL)
			k++;
	pthread_mutex_unlock(&l->mu);
	return k;
}

/* Fails the test when some line contains needle. */
static void lr_never(struct logrec *l, const char *needle)
{
	pthread_mutex_lock(&l->mu);
	for (int i = 0; i < l->n; i++)
		if (strstr(l->line[i], needle) != NULL)
			th_fail(__FILE__, __LINE__, "a log line holds \"%s\": %s", needle,
			        l->line[i]);
	pthread_mutex_unlock(&l->mu);
}

static void lr_dump(struct logrec *l, const char *why)
{
	fprintf(stderr, "-- log lines (%s):\n", why);
	for (int i = 0; i < l->n; i++)
		fprintf(stderr, "  [%d %s] %s\n", l->level[i], l->thread[i],
		        l->line[i]);
}

#define LR_HAS(l, start, needle)                                               \
	do {                                                                       \
		if (!WAIT_UNTIL(lr_count((l), (start), (needle)) > 0, 5000)) {         \
			lr_dump((l), needle);                                              \
			th_fail(__FILE__, __LINE__, "no log line %s...%s", (start),        \
			        (needle));                                                 \
		}                                                                      \
	} while (0)

static struct mg_mqtt *client_lr(struct logrec *l, const char *prefix)
{
	struct mg_mqtt *c = mg_mqtt_create(prefix);
	ASSERT(c != NULL);
	ASSERT_EQ(mg_mqtt_on_log(c, lr_on_log, l), 0);
	return c;
}

/* A client of prefix with a new recorder (*l), started with opts. */
static struct mg_mqtt *lr_started(struct logrec **l, const char *prefix,
                                  const char **opts)
{
	*l = lr_new();
	struct mg_mqtt *c = client_lr(*l, prefix);
	rec_start_on(c, NULL, opts);
	return c;
}

static int on_pub_ok;
static void count_pub(struct mg_mqtt *c, int id, int result, void *ud)
{
	(void)c;
	(void)id;
	(void)ud;
	if (result == 0)
		__atomic_add_fetch(&on_pub_ok, 1, __ATOMIC_SEQ_CST);
}

static const char pw[] = "pw-S3cr3t-7781";
static const char payload[] = "payload-bytes-never-logged-5521";

/* A whole cycle at LOG_LEVEL debug; the log handler's lines in l. */
static void debug_cycle(struct logrec *l, const char *protocol)
{
	struct th_broker b;
	th_broker_start_password(&b, "logger", pw);
	struct mg_mqtt *c = client_lr(l, NULL);
	ASSERT_EQ(mg_mqtt_on_publish(c, count_pub, NULL), 0);
	const char *opts[] = {"MQTT_BROKER_URL", b.url, "MQTT_USERNAME", "logger",
	                      "MQTT_PASSWORD", pw, "MQTT_CLIENT_ID", "cwm-debug",
	                      "MQTT_PROTOCOL_VERSION", protocol,
	                      "MQTT_LOG_LEVEL", "debug", NULL};
	rec_start_on(c, NULL, opts);
	ASSERT_GT(mg_mqtt_subscribe(c, "log/#", 1), 0);
	ASSERT(WAIT_UNTIL(lr_count(l, "SUBACK id", "codes 0x01") > 0, 5000));
	ASSERT_GT(mg_mqtt_publish(c, "log/x", payload, sizeof(payload) - 1, 1, 0),
	          0);
	ASSERT(WAIT_UNTIL(__atomic_load_n(&on_pub_ok, __ATOMIC_SEQ_CST) == 1,
	                  5000));
	LR_HAS(l, "PUBLISH in: topic 'log/x', qos 1", "31 bytes");
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	th_broker_stop(&b);
}

/* ---- 1. LOG_LEVEL debug: the library's own lines ----------------------- */

static void check_cycle_lines(struct logrec *l, int v5)
{
	LR_HAS(l, "CONNECT to tcp://127.0.0.1:", v5 ? "MQTT 5, clean start true"
	                                            : "MQTT 3.1.1, clean session "
	                                              "true");
	LR_HAS(l, "CONNECT to", "keepalive 60 s, client id 'cwm-debug', user "
	                        "name set, password set");
	LR_HAS(l, "CONNACK: accepted, session present false",
	       v5 ? "; properties: " : "false");
	LR_HAS(l, "SUBSCRIBE: id", "1 filter(s): 'log/#' qos 1");
	LR_HAS(l, "SUBACK id", "codes 0x01");
	LR_HAS(l, "PUBLISH out: id", "topic 'log/x', qos 1, 31 bytes");
	LR_HAS(l, "PUBACK id", "acknowledged (code 0x00)");
	LR_HAS(l, "PUBLISH in: topic 'log/x', qos 1", "31 bytes");
	LR_HAS(l, "DISCONNECT to tcp://127.0.0.1:", "");
	/* paho's own trace, at the protocol level, came through too. */
	LR_HAS(l, "paho: ", "CONNECT");
	LR_HAS(l, "paho: ", "PUBLISH");
	/* Secrets and payload bytes never. */
	lr_never(l, pw);
	lr_never(l, payload);
	lr_never(l, "payload-bytes");
	/* Every handler call ran on mqtt-dispatch or the thread that started
	 * (start-up lines); the debug lines all carry level debug. */
	char me[16];
	pthread_getname_np(pthread_self(), me, sizeof(me));
	for (int i = 0; i < l->n; i++) {
		if (strcmp(l->thread[i], "mqtt-dispatch") != 0 &&
		    strcmp(l->thread[i], me) != 0)
			th_fail(__FILE__, __LINE__, "on_log on thread %s: %s",
			        l->thread[i], l->line[i]);
		if (strncmp(l->line[i], "paho: ", 6) == 0 ||
		    strncmp(l->line[i], "PUBLISH ", 8) == 0)
			ASSERT_EQ(l->level[i], MG_MQTT_LOG_DEBUG);
	}
}

TEST_T(debug_logs_each_packet_of_a_cycle_and_never_the_password_mqtt311, 60)
{
	struct logrec *l = lr_new();
	debug_cycle(l, "3.1.1");
	check_cycle_lines(l, 0);
	lr_free(l);
}

TEST_T(debug_logs_each_packet_of_a_cycle_and_connack_properties_mqtt5, 60)
{
	struct logrec *l = lr_new();
	debug_cycle(l, "5");
	check_cycle_lines(l, 1);
	/* mosquitto 2 announces some of its limits in CONNACK. */
	LR_HAS(l, "CONNACK: accepted", "=");
	lr_free(l);
}

/* ---- 2. LOG_LEVEL warning and info -------------------------------------- */

TEST_T(log_level_warning_makes_no_info_line_and_info_no_debug_line, 60)
{
	struct th_broker b;
	th_broker_start(&b, NULL);
	/* A TLS option with TLS off: a warning at start. */
	struct logrec *lw, *li;
	struct mg_mqtt *w =
	    lr_started(&lw, "W",
	               OPTS("W_BROKER_URL", b.url, "W_LOG_LEVEL", "warning",
	                    "W_TLS_INSECURE", "true"));
	struct mg_mqtt *i = lr_started(
	    &li, "I", OPTS("I_BROKER_URL", b.url, "I_TLS_INSECURE", "true"));
	ASSERT_GT(mg_mqtt_publish(w, "a/b", "x", 1, 1, 0), 0);
	ASSERT_GT(mg_mqtt_publish(i, "a/b", "x", 1, 1, 0), 0);
	th_sleep_ms(300);
	ASSERT_EQ(mg_mqtt_stop(w), 0);
	ASSERT_EQ(mg_mqtt_stop(i), 0);
	th_broker_stop(&b);

	/* info: the warning, "connected", "disconnected", nothing at debug. */
	ASSERT_EQ(lr_count(li, NULL, "TLS options are set but TLS is off"), 1);
	ASSERT_EQ(lr_count(li, "connected to", ""), 1);
	ASSERT_EQ(lr_count(li, "disconnected from", ""), 1);
	for (int k = 0; k < li->n; k++)
		ASSERT_LE(li->level[k], MG_MQTT_LOG_INFO);
	/* warning: only the warning. */
	ASSERT_EQ(lr_count(lw, NULL, "TLS options are set but TLS is off"), 1);
	ASSERT_EQ(lr_count(lw, "connected to", ""), 0);
	ASSERT_EQ(lr_count(lw, "disconnected from", ""), 0);
	for (int k = 0; k < lw->n; k++)
		ASSERT_LE(lw->level[k], MG_MQTT_LOG_WARNING);
	lr_free(lw);
	lr_free(li);
}

/* ---- 3. paho's trace: process-wide, and never a secret ----------------- */

TEST_T(paho_trace_reaches_debug_clients_only_and_drops_lines_with_a_password,
       60)
{
	struct th_broker b;
	th_broker_start(&b, NULL);
	/* I's password is a string paho prints in every line about D (D's
	 * client id): the lines naming D must not reach D's log handler. */
	const char *opts[] = {"D_BROKER_URL", b.url, "D_LOG_LEVEL", "debug",
	                      "D_CLIENT_ID", "cwm-trace-Hx42",
	                      "I_BROKER_URL", b.url, "I_CLIENT_ID", "cwm-info",
	                      "I_USERNAME", "anyone", "I_PASSWORD", "trace-Hx42",
	                      NULL};
	struct logrec *ld, *li;
	struct mg_mqtt *i = lr_started(&li, "I", opts);
	struct mg_mqtt *d = lr_started(&ld, "D", opts);
	ASSERT_GT(mg_mqtt_publish(d, "t/d", "x", 1, 1, 0), 0);
	ASSERT_GT(mg_mqtt_publish(i, "t/i", "y", 1, 1, 0), 0);
	/* D sees paho's lines of the other client too (the trace is the
	 * process's), I (info) sees none. */
	LR_HAS(ld, "paho: ", "cwm-info");
	/* D first: a stopped client's password is no longer known. */
	ASSERT_EQ(mg_mqtt_stop(d), 0);
	ASSERT_EQ(mg_mqtt_stop(i), 0);
	th_broker_stop(&b);
	ASSERT_EQ(lr_count(li, "paho: ", ""), 0);
	ASSERT_EQ(lr_count(li, NULL, "PUBLISH"), 0);
	pthread_mutex_lock(&ld->mu);
	for (int k = 0; k < ld->n; k++)
		if (strncmp(ld->line[k], "paho: ", 6) == 0 &&
		    strstr(ld->line[k], "trace-Hx42") != NULL)
			th_fail(__FILE__, __LINE__, "paho line with a password: %s",
			        ld->line[k]);
	pthread_mutex_unlock(&ld->mu);
	lr_free(ld);
	lr_free(li);
}

TEST_T(paho_trace_never_forwards_http_proxy_credentials, 60)
{
	/* paho reads http_proxy itself and traces "Setting http proxy auth
	 * to <base64 of user:password>". Nothing listens on the proxy port:
	 * the connect fails, after paho has traced its proxy settings. */
	char proxy[128];
	int port = th_free_port();
	snprintf(proxy, sizeof(proxy), "http://puser:proxy-secret-81@127.0.0.1:%d",
	         port);
	setenv("http_proxy", proxy, 1);
	struct logrec *l = lr_new();
	struct mg_mqtt *c = client_lr(l, NULL);
	char url[64];
	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", th_free_port());
	const char *opts[] = {"MQTT_BROKER_URL", url, "MQTT_LOG_LEVEL", "debug",
	                      "MQTT_CONNECT_ASYNC", "true", NULL};
	rec_start_on(c, NULL, opts);
	LR_HAS(l, "paho: ", "Setting http proxy to 127.0.0.1");
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	unsetenv("http_proxy");
	lr_never(l, "proxy-secret-81");
	lr_never(l, "cHVzZXI6cHJveHktc2VjcmV0LTgx"); /* base64 of puser:... */
	lr_never(l, "proxy auth");
	lr_free(l);
}

/* ---- 4. error_log_file: written by mqtt-dispatch, no line lost --------- */

/* Every fopen() of the log file, with the thread that made it. The
 * library object is linked into this program, so this fopen is the one it
 * calls. */
static char watched[512];
static pthread_mutex_t opens_mu = PTHREAD_MUTEX_INITIALIZER;
static int nopens;
static char open_thread[64][16];
static int open_threads;

FILE *fopen(const char *restrict path, const char *restrict mode)
{
	static FILE *(*real)(const char *, const char *);
	if (real == NULL)
		/* POSIX's way to take a function from dlsym(): through an object
		 * pointer's bytes, which ISO C does not forbid. */
		*(void **)&real = dlsym(RTLD_NEXT, "fopen");
	if (watched[0] != '\0' && strcmp(path, watched) == 0) {
		char name[16] = "";
		pthread_getname_np(pthread_self(), name, sizeof(name));
		pthread_mutex_lock(&opens_mu);
		nopens++;
		int seen = 0;
		for (int i = 0; i < open_threads; i++)
			seen |= strcmp(open_thread[i], name) == 0;
		if (!seen && open_threads < 64)
			snprintf(open_thread[open_threads++], 16, "%s", name);
		pthread_mutex_unlock(&opens_mu);
	}
	return real(path, mode);
}

TEST_T(error_log_file_is_written_by_mqtt_dispatch_not_pahos_threads_no_loss,
       60)
{
	struct th_broker b;
	char me[16];
	th_broker_start(&b, NULL);
	struct mg_context *ctx =
	    th_civetweb_start("civetweb-error.log", watched, sizeof(watched));
	pthread_getname_np(pthread_self(), me, sizeof(me));

	/* Debug: lines made on paho's threads (CONNACK, "connected", every
	 * PUBLISH in and acknowledgement) and paho's own trace. */
	struct logrec *l = lr_new();
	struct mg_mqtt *c = client_lr(l, NULL);
	const char *opts[] = {"MQTT_BROKER_URL", b.url, "MQTT_LOG_LEVEL", "debug",
	                      "MQTT_SUBSCRIBE", "f/#:1", NULL};
	rec_start_on(c, ctx, opts);
	for (int k = 0; k < 200; k++)
		ASSERT_GT(mg_mqtt_publish(c, "f/x", "m", 1, k % 3, 0), 0);
	ASSERT(WAIT_UNTIL(lr_count(l, "PUBLISH in: topic 'f/x'", "") == 200,
	                  10000));
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	mg_stop(ctx);
	th_broker_stop(&b);

	pthread_mutex_lock(&opens_mu);
	int opened = nopens;
	pthread_mutex_unlock(&opens_mu);
	watched[0] = '\0';
	/* Opened on mqtt-dispatch (or this thread, at start-up), never on
	 * paho's thread (MQTTClient_run) nor mqtt-io. */
	char names[1100] = "";
	int bad = 0;
	for (int k = 0; k < open_threads; k++) {
		bad |= strcmp(open_thread[k], "mqtt-dispatch") != 0 &&
		       strcmp(open_thread[k], me) != 0;
		strcat(names, " ");
		strcat(names, open_thread[k]);
	}
	if (bad)
		th_fail(__FILE__, __LINE__, "the log file was opened on:%s", names);
	/* No line lost: the file has every line the handler saw, in order. */
	char path[512];
	th_path(path, sizeof(path), "civetweb-error.log");
	char *file = th_read_file(path, NULL);
	int lines = 0;
	const char *p = file;
	for (int k = 0; k < l->n; k++) {
		const char *at = strstr(p, l->line[k]);
		if (at == NULL)
			th_fail(__FILE__, __LINE__, "line %d of %d not in the file (in "
			        "order): %s", k, l->n, l->line[k]);
		p = at + strlen(l->line[k]);
	}
	for (const char *q = file; *q != '\0'; q++)
		lines += *q == '\n';
	ASSERT_EQ(lines, l->n);
	ASSERT_GT(lines, 600);
	ASSERT_EQ(opened, lines); /* one open a line */
	free(file);
	lr_free(l);
}

/* ---- 5. TLS: a certificate for another host name ------------------------ */

static void tls_start(const char *url, const char *host, int expect_rc,
                      const char *level)
{
	struct logrec *l = lr_new();
	char ca[512], err[1024], want[160];
	th_path(ca, sizeof(ca), "ca.crt");
	struct mg_mqtt *c = client_lr(l, NULL);
	const char *opts[] = {"MQTT_BROKER_URL", url, "MQTT_TLS_CA_CERTS", ca,
	                      "MQTT_LOG_LEVEL", level, NULL};
	int rc = mg_mqtt_start(c, NULL, opts, err, sizeof(err));
	snprintf(want, sizeof(want),
	         "TLS: the broker's certificate does not match host name %s", host);
	if (rc != expect_rc) {
		lr_dump(l, "start");
		th_fail(__FILE__, __LINE__, "%s: rc %d (%s), not %d", url, rc, err,
		        expect_rc);
	}
	if (expect_rc == MG_MQTT_ERR_TLS) {
		ASSERT_EQ(lr_count(l, want, ""), 1);
		ASSERT_CONTAINS(err, "TLS error");
	} else {
		ASSERT_EQ(lr_count(l, "TLS: ", ""), 0);
	}
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	lr_free(l);
}

TEST_T(tls_host_name_mismatch_fails_start_with_err_tls_naming_the_host, 90)
{
	struct th_broker bad, good;
	char url[96];
	th_tls_broker_start(&bad, "wrong-host", 0);
	th_tls_broker_start(&good, "server", 0);
	/* The certificate names example.invalid only. */
	snprintf(url, sizeof(url), "mqtts://127.0.0.1:%d", bad.port);
	tls_start(url, "127.0.0.1", MG_MQTT_ERR_TLS, "info");
	tls_start(url, "127.0.0.1", MG_MQTT_ERR_TLS, "debug");
	snprintf(url, sizeof(url), "mqtts://localhost:%d", bad.port);
	tls_start(url, "localhost", MG_MQTT_ERR_TLS, "error");
	/* The right certificate: for 127.0.0.1 paho's host name check fails
	 * and its IP address check passes; for localhost the name matches. */
	snprintf(url, sizeof(url), "mqtts://127.0.0.1:%d", good.port);
	tls_start(url, "127.0.0.1", 0, "info");
	snprintf(url, sizeof(url), "mqtts://localhost:%d", good.port);
	tls_start(url, "localhost", 0, "info");
	/* And a wrong one once more after those. */
	snprintf(url, sizeof(url), "mqtts://127.0.0.1:%d", bad.port);
	tls_start(url, "127.0.0.1", MG_MQTT_ERR_TLS, "info");
	th_broker_stop(&bad);
	th_broker_stop(&good);
}

/* ---- 6. a log handler that blocks: paho's lines are bounded ------------ */

static atomic_int hold_log; /* 1: the handler waits */
static atomic_int held;

static void blocking_log(struct mg_mqtt *c, int level, const char *text,
                         void *ud)
{
	(void)c;
	(void)level;
	lr_on_log(c, level, text, ud);
	while (atomic_load(&hold_log)) {
		atomic_store(&held, 1);
		th_sleep_ms(5);
	}
}

/* The status counter "published" (QoS 0 sent, QoS 1/2 acknowledged). */
static long published_of(struct mg_mqtt *c)
{
	char buf[16384];
	if (mg_mqtt_status(c, buf, sizeof(buf)) <= 0)
		return -1;
	const char *p = strstr(buf, "\"published\":");
	return p != NULL ? atol(p + 12) : -1;
}

TEST_T(paho_lines_waiting_for_a_blocked_log_handler_are_bounded_and_counted,
       90)
{
	struct th_broker b;
	th_broker_start(&b, NULL);
	struct logrec *l = lr_new();
	struct mg_mqtt *c = mg_mqtt_create(NULL);
	ASSERT_EQ(mg_mqtt_on_log(c, blocking_log, l), 0);
	const char *opts[] = {"MQTT_BROKER_URL", b.url, "MQTT_LOG_LEVEL", "debug",
	                      NULL};
	rec_start_on(c, NULL, opts);
	atomic_store(&hold_log, 1);
	ASSERT_GT(mg_mqtt_publish(c, "hold/x", "x", 1, 0, 0), 0);
	ASSERT(WAIT_UNTIL(atomic_load(&held), 5000));
	/* Each QoS 0 publish makes one paho line (-> PUBLISH) at least. */
	for (int k = 0; k < 12000; k++)
		while (mg_mqtt_publish(c, "hold/x", "x", 1, 0, 0) < 0)
			th_sleep_ms(1);
	/* Held until paho has sent them all (the status counts them on paho's
	 * thread): each traced its "-> PUBLISH" line meanwhile. */
	ASSERT(WAIT_UNTIL(published_of(c) >= 12001, 30000));
	atomic_store(&hold_log, 0);
	LR_HAS(l, "paho: ", "trace line(s) dropped: more than 10000 waited");
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	th_broker_stop(&b);
	/* Still every one of our own lines (they are never dropped). */
	ASSERT_EQ(lr_count(l, "PUBLISH out: id", ""), 12001);
	lr_free(l);
}
