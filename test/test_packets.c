/*
 * Faults that hit single packets, with mqproxy (test/mqproxy.h) between the
 * client and a real mosquitto: a SUBSCRIBE or UNSUBSCRIBE swallowed with
 * its connection, lost QoS 2 handshake packets, a broker that drops every
 * connection after CONNACK, one that never answers, one that closes after
 * CONNECT, one that refuses MQTT 5, CONNACK properties that announce what
 * the broker lacks; and two clients in one process where one's dispatch
 * queue is full. Each test states the promise (civetweb_mqtt.h, README)
 * it checks. Every wait is bounded.
 */
#include "mqproxy.h"
#include "rec.h"
#include "ws.h"

#include <civetweb.h>
#include <cjson/cJSON.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>


/* ---- helpers ------------------------------------------------------------- */

static const char *flood_broker =
    "listener {PORT} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n";

/* Waits for the SUBACK of id to be reported as a success with granted QoS
 * qos; fails with what was reported instead. */
static void expect_granted(struct mg_mqtt *c, struct rec *r, int id, int qos,
                           int ms, int line)
{
	struct rec_ack a;
	if (!WAIT_UNTIL(rec_find_sub(r, id, &a) >= 0, ms)) {
		char *st = rec_status(c);
		th_fail(__FILE__, line,
		        "subscribe %d: no on_subscribe within %d ms (connects %d); "
		        "status %s",
		        id, ms, REC(r, connects), st);
	}
	if (a.result != 0 || a.count != 1 || a.codes[0] != qos)
		th_fail(__FILE__, line,
		        "subscribe %d: on_subscribe result %d count %d code %d, "
		        "wanted a grant of QoS %d",
		        id, a.result, a.count, a.count > 0 ? a.codes[0] : -1, qos);
}
#define EXPECT_GRANTED(c, r, id, qos, ms)                                      \
	expect_granted(c, r, id, qos, ms, __LINE__)

/* A connect handler that records every attempt, in order, then calls the
 * recorder's. */
struct attempts {
	pthread_mutex_t mu;
	struct rec *r;
	int n;
	char broker[64][96];
	int ok[64];
	int64_t at[64];
};

static void attempts_on_connect(struct mg_mqtt *c,
                                const struct mg_mqtt_connect_info *i, void *ud)
{
	struct attempts *a = ud;
	pthread_mutex_lock(&a->mu);
	if (a->n < 64) {
		snprintf(a->broker[a->n], sizeof(a->broker[0]), "%s", i->broker);
		a->ok[a->n] = i->connected;
		a->at[a->n] = th_now_ms();
		a->n++;
	}
	pthread_mutex_unlock(&a->mu);
	rec_on_connect(c, i, a->r);
}

static void attempts_attach(struct mg_mqtt *c, struct attempts *a,
                            struct rec *r)
{
	memset(a, 0, sizeof(*a));
	pthread_mutex_init(&a->mu, NULL);
	a->r = r;
	ASSERT_EQ(mg_mqtt_on_connect(c, attempts_on_connect, a), 0);
}

static void attempts_print(struct attempts *a, int64_t t0)
{
	pthread_mutex_lock(&a->mu);
	for (int i = 0; i < a->n; i++)
		fprintf(stderr, "    attempt %d: %s %s at %+lld ms\n", i + 1,
		        a->broker[i], a->ok[i] ? "connected" : "failed",
		        (long long)(a->at[i] - t0));
	pthread_mutex_unlock(&a->mu);
}

/* Log lines with their level, and the time each came relative to marks. */
struct loglines {
	pthread_mutex_t mu;
	int n;
	int level[4096];
	char *text[4096];
	atomic_int after_mark; /* lines that came after mark was set */
	atomic_int mark;
	char first_after[512];
};

static void loglines_on_log(struct mg_mqtt *c, int level, const char *text,
                            void *ud)
{
	struct loglines *l = ud;
	(void)c;
	pthread_mutex_lock(&l->mu);
	if (atomic_load(&l->mark)) {
		if (atomic_fetch_add(&l->after_mark, 1) == 0)
			snprintf(l->first_after, sizeof(l->first_after), "%s", text);
	}
	if (l->n < 4096) {
		l->level[l->n] = level;
		l->text[l->n] = strdup(text);
		l->n++;
	}
	pthread_mutex_unlock(&l->mu);
}

static void loglines_init(struct loglines *l)
{
	memset(l, 0, sizeof(*l));
	pthread_mutex_init(&l->mu, NULL);
}

/* A client (*c) with l collecting its log lines, started with opts:
 * mg_mqtt_start's result, its error text into err. The caller stops c and
 * frees l. */
static int start_logged(struct mg_mqtt **c, struct loglines *l,
                        const char **opts, char *err, size_t len)
{
	*c = mg_mqtt_create(NULL);
	loglines_init(l);
	ASSERT_EQ(mg_mqtt_on_log(*c, loglines_on_log, l), 0);
	return mg_mqtt_start(*c, NULL, opts, err, len);
}

static void loglines_free(struct loglines *l)
{
	for (int i = 0; i < l->n; i++)
		free(l->text[i]);
	pthread_mutex_destroy(&l->mu);
}

/* Lines at level <= max_level (ERROR 0 .. DEBUG 3) containing needle
 * (case-insensitive). */
static int loglines_count(struct loglines *l, int max_level,
                          const char *needle)
{
	int k = 0;
	pthread_mutex_lock(&l->mu);
	for (int i = 0; i < l->n; i++)
		k += l->level[i] <= max_level && strcasestr(l->text[i], needle);
	pthread_mutex_unlock(&l->mu);
	return k;
}

/* Lines at level <= max_level containing both a and b (case-insensitive). */
static int loglines_count2(struct loglines *l, int max_level, const char *a,
                           const char *b)
{
	int k = 0;
	pthread_mutex_lock(&l->mu);
	for (int i = 0; i < l->n; i++)
		k += l->level[i] <= max_level && strcasestr(l->text[i], a) &&
		     strcasestr(l->text[i], b);
	pthread_mutex_unlock(&l->mu);
	return k;
}

/* Lines at exactly level containing needle (case-insensitive). */
static int loglines_count_at(struct loglines *l, int level, const char *needle)
{
	int k = 0;
	pthread_mutex_lock(&l->mu);
	for (int i = 0; i < l->n; i++)
		k += l->level[i] == level && strcasestr(l->text[i], needle);
	pthread_mutex_unlock(&l->mu);
	return k;
}

static void loglines_print(struct loglines *l, int max)
{
	pthread_mutex_lock(&l->mu);
	for (int i = 0; i < l->n && i < max; i++)
		fprintf(stderr, "    log[%d] %s\n", l->level[i], l->text[i]);
	pthread_mutex_unlock(&l->mu);
}

/* How often each payload "<prefix><n>" appears in the subscriber's output
 * (lines "topic payload"); into counts[0..n). */
static void sub_payload_counts(const struct th_sub *s, const char *prefix,
                               int *counts, int n)
{
	int lines;
	char *all = th_sub_messages(s, &lines);
	size_t pl = strlen(prefix);
	memset(counts, 0, sizeof(int) * (size_t)n);
	for (char *save = NULL, *l = strtok_r(all, "\n", &save); l != NULL;
	     l = strtok_r(NULL, "\n", &save)) {
		char *sp = strchr(l, ' ');
		if (sp == NULL || strncmp(sp + 1, prefix, pl) != 0)
			continue;
		int k = atoi(sp + 1 + pl);
		if (k >= 0 && k < n)
			counts[k]++;
	}
	free(all);
}

/* A marker ("end" to end_topic at qos) after the messages "<prefix>0" ...
 * "<prefix><n-1>"; once the subscriber has it, each of them must have
 * reached it: exactly once, or at least once. */
static void each_arrived(struct mg_mqtt *c, struct th_sub *sub,
                         const char *end_topic, int qos, const char *prefix,
                         int n, int exactly_once)
{
	char line[128];
	int *counts = calloc((size_t)n, sizeof(int));
	ASSERT(counts != NULL);
	ASSERT_GT(mg_mqtt_publish(c, end_topic, "end", 3, qos, 0), 0);
	snprintf(line, sizeof(line), "%s end", end_topic);
	ASSERT(WAIT_UNTIL(th_count_lines(sub->out, line) == 1, 10000));
	sub_payload_counts(sub, prefix, counts, n);
	for (int i = 0; i < n; i++)
		if (counts[i] < 1 || (exactly_once && counts[i] != 1))
			th_fail(__FILE__, __LINE__, "%s%d reached the subscriber %d times",
			        prefix, i, counts[i]);
	free(counts);
}

/* A broker behind a new mqproxy with rule (or NULL) added. */
static struct mqp *proxied(struct th_broker *b, const struct mqp_rule *rule)
{
	th_broker_start(b, NULL);
	struct mqp *p = mqp_start(b->port);
	if (rule != NULL)
		mqp_add(p, rule);
	return p;
}

/* A broker behind a new mqproxy that does action (MQP_BLACKHOLE,
 * MQP_CUT_BEFORE...) to the CONNECT of protocol level (0: any). */
static struct mqp *connect_proxy(struct th_broker *b, int action, int level)
{
	return proxied(b, &(struct mqp_rule){.type = MQP_CONNECT,
	                                     .dir = MQP_C2S,
	                                     .level = level,
	                                     .action = action});
}

/* A broker with a subscriber, behind mqproxy, and a recorder for the
 * test's client. */
struct pfix {
	struct th_broker b;
	struct th_sub sub;
	struct rec r;
	struct mqp *p;
};

/* Starts the broker (conf as th_broker_start's) with a subscriber to topic
 * (extra: its mosquitto_sub arguments), and a new mqproxy in front of it. */
static void pfix_start(struct pfix *f, const char *conf, const char *topic,
                       const char *extra)
{
	th_broker_sub_start(&f->b, conf, &f->sub, topic, 0, extra);
	f->p = mqp_start(f->b.port);
}

/* n QoS 1 messages "<prefix>0" ... to topic whose PUBACKs the proxy drops:
 * in flight once the broker has them all; then the proxy's rules are
 * cleared. */
static void in_flight(struct mqp *p, struct mg_mqtt *c, const char *topic,
                      const char *prefix, int n)
{
	mqp_add(p, &(struct mqp_rule){
	               .type = MQP_PUBACK, .dir = MQP_S2C, .action = MQP_DROP});
	rec_publish_seq(c, topic, prefix, n, 1, NULL);
	ASSERT(WAIT_UNTIL(mqp_count(p, MQP_C2S, MQP_PUBLISH) >= n, 10000));
	mqp_clear(p);
}

/* Cuts the connection now, and then the next times connections at their
 * first PUBLISH (to topic; NULL: any) from the client, before the broker
 * has it: the rule's index. */
static int cut_resends(struct mqp *p, const char *topic, int times)
{
	int rule = mqp_add(p, &(struct mqp_rule){.type = MQP_PUBLISH,
	                                         .dir = MQP_C2S,
	                                         .topic = topic,
	                                         .times = times,
	                                         .action = MQP_CUT_BEFORE});
	mqp_cut_all(p);
	return rule;
}

/* Stops c (cleanly), the subscriber and the proxy; frees the recorder. */
static void pfix_stop(struct pfix *f, struct mg_mqtt *c)
{
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	th_sub_stop(&f->sub);
	mqp_stop(f->p);
	rec_free(&f->r);
}

/* ======================================================================
 * 1. One full dispatch queue must not stall another client's MQTT
 * ==================================================================== */

static void sh_flood(const struct th_broker *b, const char *topic, int n,
                     const char *prefix)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd),
	         "i=0; while [ $i -lt %d ]; do echo %s$i; i=$((i+1)); done | "
	         "mosquitto_pub -h 127.0.0.1 -p %d -t %s -q 1 -l",
	         n, prefix, b->port, topic);
	const char *argv[] = {"sh", "-c", cmd, NULL};
	th_spawn(argv, NULL);
}

/* The header: "A handler that blocks delays later handlers of the same
 * client, never the network: keep-alive and acknowledgements go on". paho
 * runs one receive thread for every client of the process: a client whose
 * queue is full must not hold it. A full queue pauses A's connection (flow
 * control); its persistent session keeps what arrives meanwhile. */
TEST_T(a_full_dispatch_queue_of_one_client_stalls_no_other_client, 150)
{
	enum { NA = 300, NB = 2000 };
	struct th_broker b;
	struct rec ra, rb;
	th_broker_start(&b, flood_broker);
	struct mg_mqtt *a = rec_client(&ra, "A");
	struct mg_mqtt *bc = rec_client(&rb, "B");
	atomic_store(&ra.slow_ms, 200);
	rec_start(a, OPTS("A_BROKER_URL", b.url, "A_QUEUE_SIZE", "1",
	                  "A_SUBSCRIBE", "fa/#:1", "A_CLEAN_SESSION", "false",
	                  "A_CLIENT_ID", "pk-full-a"));
	rec_start(bc, OPTS("B_BROKER_URL", b.url, "B_SUBSCRIBE", "fb/#:1"));
	ASSERT(WAIT_UNTIL(rec_subs_settled(a, 1) && rec_subs_settled(bc, 1),
	                  10000));

	/* A's handler takes 200 ms a message; its queue holds one. */
	sh_flood(&b, "fa/x", NA, "a");
	ASSERT(WAIT_UNTIL(REC(&ra, nmsgs) >= 2, 20000));

	int64_t t0 = th_now_ms();
	for (int i = 0; i < NB; i++) {
		char p[16];
		snprintf(p, sizeof(p), "b%d", i);
		int id;
		while ((id = mg_mqtt_publish(bc, "fb/x", p, strlen(p), 1, 0)) ==
		       MG_MQTT_ERR_BUFFER_FULL)
			th_sleep_ms(5);
		ASSERT_GT(id, 0);
	}
	int acked = WAIT_UNTIL(REC(&rb, npub) >= NB, 60000);
	int64_t took = th_now_ms() - t0;
	fprintf(stderr,
	        "    B: %d of %d QoS 1 publishes acknowledged in %lld ms while A "
	        "was stalled (%d of A's handled)\n",
	        REC(&rb, npub), NB, (long long)took, REC(&ra, nmsgs));
	ASSERT(acked);
	ASSERT(WAIT_UNTIL(REC(&rb, nmsgs) >= NB, 30000));
	pthread_mutex_lock(&rb.mu);
	for (int i = 0; i < rb.npub; i++)
		ASSERT_EQ(rb.pub[i].result, 0);
	pthread_mutex_unlock(&rb.mu);

	/* A speeds up: every one of its QoS 1 messages reaches its handler. */
	atomic_store(&ra.slow_ms, 0);
	int all = WAIT_UNTIL(REC(&ra, nmsgs) >= NA, 30000);
	int missing = 0;
	for (int i = 0; i < NA; i++) {
		char p[16];
		snprintf(p, sizeof(p), "a%d", i);
		missing += rec_find(&ra, "fa/x", p) < 0;
	}
	fprintf(stderr, "    A: %d handled, %d of %d missing\n", REC(&ra, nmsgs),
	        missing, NA);
	ASSERT(all);
	ASSERT_EQ(missing, 0);
	mg_mqtt_stop(a);
	mg_mqtt_stop(bc);
	rec_free(&ra);
	rec_free(&rb);
}

/* ======================================================================
 * 2. A SUBSCRIBE / UNSUBSCRIBE lost with its connection
 * ==================================================================== */

/* Options for a client through the proxy; session: CLEAN_SESSION false
 * with a fixed client id. */
#define PROXY_OPTS(url, id, clean)                                             \
	OPTS("MQTT_BROKER_URL", url, "MQTT_CLIENT_ID", id, "MQTT_CLEAN_SESSION",   \
	     clean, "MQTT_RECONNECT_MIN", "1", "MQTT_RECONNECT_MAX", "1",          \
	     "MQTT_CONNECTION_TIMEOUT", "3")

/* A client with r attached and a persistent session (client id id,
 * CLEAN_SESSION false) against url. */
static struct mg_mqtt *persistent(struct rec *r, const char *url,
                                  const char *id)
{
	return rec_started(r, PROXY_OPTS(url, id, "false"));
}

/* Starts a client on a session the broker already holds: the first start
 * creates it, the second finds it (CONNACK session present). */
static struct mg_mqtt *resumed(struct rec *r, const char *url, const char *id)
{
	struct rec r0;
	rec_stop(persistent(&r0, url, id), &r0);
	struct mg_mqtt *c = persistent(r, url, id);
	ASSERT(WAIT_UNTIL(REC(r, connects) == 1, 5000));
	ASSERT_EQ(REC(r, last_session), 1);
	return c;
}

/* "the subscription is renewed on every reconnect": the SUBSCRIBE goes into
 * a connection that dies with it; after the reconnect the broker must hold
 * the subscription, on_subscribe report the grant (not only
 * MG_MQTT_ERR_STOPPED at stop), and messages arrive. */
static void lost_subscribe(const char *clean)
{
	struct th_broker b;
	struct rec r;
	th_broker_start(&b, NULL);
	struct mqp *p = mqp_start(b.port);
	struct mg_mqtt *c;
	if (strcmp(clean, "false") == 0) {
		c = resumed(&r, mqp_url(p), "pk-lost-sub");
	} else {
		c = rec_client(&r, NULL);
		rec_start(c, PROXY_OPTS(mqp_url(p), "pk-lost-sub", "true"));
	}
	int rule = mqp_add(p, &(struct mqp_rule){.type = MQP_SUBSCRIBE,
	                                         .dir = MQP_C2S,
	                                         .topic = "ls/a",
	                                         .nth = 1,
	                                         .action = MQP_CUT_BEFORE});
	int id = mg_mqtt_subscribe(c, "ls/a", 1);
	ASSERT_GT(id, 0);
	ASSERT(WAIT_UNTIL(mqp_fired(p, rule) == 1, 10000));
	ASSERT(WAIT_UNTIL(REC(&r, connects) >= 2, 15000));
	EXPECT_GRANTED(c, &r, id, 1, 15000);
	ASSERT(rec_subs_settled(c, 1));
	REC_PUB_ARRIVES(&b, &r, "ls/a", "after-reconnect", 10000);
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	mqp_stop(p);
	rec_free(&r);
}

TEST_T(a_subscribe_lost_with_its_connection_on_a_resumed_session_is_granted,
       60)
{
	lost_subscribe("false");
}

TEST_T(a_subscribe_lost_with_its_connection_on_a_clean_session_is_granted, 60)
{
	lost_subscribe("true");
}

/* "Forgets and unsubscribes filter ... on_unsubscribe follows". */
TEST_T(an_unsubscribe_lost_with_its_connection_on_a_resumed_session_is_done,
       60)
{
	struct th_broker b;
	struct rec r;
	struct rec_ack a;
	th_broker_start(&b, NULL);
	struct mqp *p = mqp_start(b.port);
	struct mg_mqtt *c = resumed(&r, mqp_url(p), "pk-lost-unsub");
	int s1 = mg_mqtt_subscribe(c, "lu/a", 1);
	int s2 = mg_mqtt_subscribe(c, "lu/marker", 1);
	EXPECT_GRANTED(c, &r, s1, 1, 10000);
	EXPECT_GRANTED(c, &r, s2, 1, 10000);
	int rule = mqp_add(p, &(struct mqp_rule){.type = MQP_UNSUBSCRIBE,
	                                         .dir = MQP_C2S,
	                                         .topic = "lu/a",
	                                         .nth = 1,
	                                         .action = MQP_CUT_BEFORE});
	int id = mg_mqtt_unsubscribe(c, "lu/a");
	ASSERT_GT(id, 0);
	ASSERT(WAIT_UNTIL(mqp_fired(p, rule) == 1, 10000));
	ASSERT(WAIT_UNTIL(REC(&r, connects) >= 2, 15000));
	if (!WAIT_UNTIL(rec_find_unsub(&r, id, &a) >= 0, 15000)) {
		char *st = rec_status(c);
		th_fail(__FILE__, __LINE__,
		        "no on_unsubscribe after the reconnect; status %s", st);
	}
	ASSERT_EQ(a.result, 0);
	/* The broker no longer sends lu/a: a message to it, then one to the
	 * marker (same publisher, in order): only the marker arrives. */
	th_pub(&b, "lu/a", "still-subscribed", 1, 0, NULL);
	REC_PUB_ARRIVES(&b, &r, "lu/marker", "m", 10000);
	ASSERT_EQ(rec_find(&r, "lu/a", "still-subscribed"), -1);
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	mqp_stop(p);
	rec_free(&r);
}

/* A subscription pending when the connection dies, and the client fails
 * over to a second broker that has no session: it must be made there. */
TEST_T(a_subscribe_lost_at_fail_over_is_granted_by_the_next_broker, 60)
{
	struct th_broker b1, b2;
	struct rec r;
	char urls[160];
	th_broker_start(&b1, NULL);
	th_broker_start(&b2, NULL);
	struct mqp *p = mqp_start(b1.port);
	snprintf(urls, sizeof(urls), "%s,%s", mqp_url(p), b2.url);
	struct mg_mqtt *c = resumed(&r, urls, "pk-failover-sub");
	pthread_mutex_lock(&r.mu);
	ASSERT_STREQ(r.last_broker, mqp_url(p));
	pthread_mutex_unlock(&r.mu);
	int rule = mqp_add(p, &(struct mqp_rule){.type = MQP_SUBSCRIBE,
	                                         .dir = MQP_C2S,
	                                         .topic = "lf/a",
	                                         .nth = 1,
	                                         .action = MQP_CUT_BEFORE});
	/* The first broker is gone for good after this. */
	mqp_add(p, &(struct mqp_rule){.type = MQP_CONNECT,
	                              .dir = MQP_C2S,
	                              .action = MQP_CUT_BEFORE});
	int id = mg_mqtt_subscribe(c, "lf/a", 1);
	ASSERT_GT(id, 0);
	ASSERT(WAIT_UNTIL(mqp_fired(p, rule) == 1, 10000));
	ASSERT(WAIT_UNTIL(REC(&r, connects) >= 2, 20000));
	pthread_mutex_lock(&r.mu);
	ASSERT_STREQ(r.last_broker, b2.url);
	ASSERT_EQ(r.last_session, 0);
	pthread_mutex_unlock(&r.mu);
	EXPECT_GRANTED(c, &r, id, 1, 15000);
	REC_PUB_ARRIVES(&b2, &r, "lf/a", "on-the-second", 10000);
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	mqp_stop(p);
	rec_free(&r);
}

/* ---- a browser's subscription, through the example server ------------- */

/* Frames holding both needles (ws.h's struct wsc). */
static int wsc_count2(struct wsc *w, const char *needle, const char *also)
{
	int k = 0;
	pthread_mutex_lock(&w->mu);
	for (int i = 0; i < w->n; i++)
		k += strstr(w->f[i], needle) != NULL && strstr(w->f[i], also) != NULL;
	pthread_mutex_unlock(&w->mu);
	return k;
}

/* A browser's subscription is one of the client's: renewed on reconnect
 * like the others, also when its SUBSCRIBE died with the connection on a
 * resumed session. */
TEST_T(a_browser_subscribe_lost_with_its_connection_is_made_after_reconnect,
       90)
{
	struct th_broker b;
	struct th_xsrv s;
	struct wsc w;
	char mqtt[1024];
	th_broker_start(&b, NULL);
	struct mqp *p = mqp_start(b.port);
	snprintf(mqtt, sizeof(mqtt),
	         "MQTT_BROKER_URL %s\nMQTT_CLIENT_ID pk-browser\n"
	         "MQTT_CLEAN_SESSION false\nMQTT_RECONNECT_MIN 1\n"
	         "MQTT_RECONNECT_MAX 1\nMQTT_BRIDGE_PATH /mqtt\n"
	         "MQTT_BRIDGE_SUBSCRIBE_ALLOW lb/#\n",
	         mqp_url(p));
	/* First run makes the session; the second resumes it. */
	th_xsrv_start(&s, mqtt, NULL);
	ASSERT(WAIT_UNTIL(mqp_count(p, MQP_S2C, MQP_CONNACK) == 1, 10000));
	th_kill(s.pid, SIGTERM);
	th_xsrv_launch(&s);
	ASSERT(WAIT_UNTIL(mqp_count(p, MQP_S2C, MQP_CONNACK) == 2, 10000));
	/* The bridge's routes exist once the start is over ("serving"), not
	 * at the CONNACK: a WebSocket opened before would get a 404. */
	ASSERT(WAIT_UNTIL(th_count_lines(s.log, "serving") == 1, 15000));

	int rule = mqp_add(p, &(struct mqp_rule){.type = MQP_SUBSCRIBE,
	                                         .dir = MQP_C2S,
	                                         .topic = "lb/x",
	                                         .nth = 1,
	                                         .action = MQP_CUT_BEFORE});
	ASSERT_EQ(wsc_open(&w, s.port), 0);
	wsc_send(&w, "{\"op\":\"subscribe\",\"topic\":\"lb/x\",\"qos\":1,\"id\":1}");
	ASSERT(WAIT_UNTIL(mqp_fired(p, rule) == 1, 10000));
	ASSERT(WAIT_UNTIL(mqp_count(p, MQP_S2C, MQP_CONNACK) >= 3, 15000));
	/* Published until one arrives: the subscription is made again. */
	int got = 0;
	for (int i = 0; i < 10 && !got; i++) {
		th_pub(&b, "lb/x", "to-the-browser", 1, 0, NULL);
		got = WAIT_UNTIL(wsc_count(&w, "to-the-browser") > 0, 1000);
	}
	if (!got) {
		char *log = th_read_file(s.log, NULL);
		th_fail(__FILE__, __LINE__,
		        "the browser's subscription was not made after the "
		        "reconnect (SUBSCRIBE packets sent: %d); server log: %s",
		        mqp_count(p, MQP_C2S, MQP_SUBSCRIBE), log);
	}
	wsc_close(&w);
	th_kill(s.pid, SIGTERM);
	mqp_stop(p);
}

/* ======================================================================
 * 3. QoS 2: a lost PUBREC, PUBREL or PUBCOMP
 * ==================================================================== */

/* With a persistent session, QoS 2 is exactly once across a lost
 * connection: the handshake resumes. Each publish is acknowledged exactly
 * once and reaches the subscriber exactly once. */
static void qos2_loss(int type, int dir)
{
	enum { N = 20 };
	struct pfix f;
	pfix_start(&f, NULL, "q2/#", "-q 2");
	struct mg_mqtt *c = persistent(&f.r, mqp_url(f.p), "pk-qos2");
	int rule = mqp_add(f.p, &(struct mqp_rule){.type = type,
	                                         .dir = dir,
	                                         .nth = 5,
	                                         .action = MQP_CUT_BEFORE});
	int ids[N];
	rec_publish_seq(c, "q2/x", "m", N, 2, ids);
	ASSERT(WAIT_UNTIL(mqp_fired(f.p, rule) == 1, 10000));
	int all = WAIT_UNTIL(REC(&f.r, npub) >= N, 20000);
	th_sleep_ms(300); /* a second report would come now */
	pthread_mutex_lock(&f.r.mu);
	fprintf(stderr, "    %s lost: %d reports for %d publishes\n",
	        mqp_type_name(type), f.r.npub, N);
	for (int i = 0; i < N; i++) {
		int k = 0, res = 0;
		for (int j = 0; j < f.r.npub; j++)
			if (f.r.pub[j].id == ids[i]) {
				k++;
				res = f.r.pub[j].result;
			}
		if (k != 1 || res != 0)
			th_fail(__FILE__, __LINE__,
			        "publish m%d (id %d): %d reports, last result %d", i,
			        ids[i], k, res);
	}
	pthread_mutex_unlock(&f.r.mu);
	ASSERT(all);
	/* A marker after them, then every one exactly once. */
	each_arrived(c, &f.sub, "q2/end", 2, "m", N, 1);
	pfix_stop(&f, c);
}

TEST_T(qos2_exactly_once_when_a_pubrec_is_lost_with_the_connection, 60)
{
	qos2_loss(MQP_PUBREC, MQP_S2C);
}

TEST_T(qos2_exactly_once_when_a_pubrel_is_lost_with_the_connection, 60)
{
	qos2_loss(MQP_PUBREL, MQP_C2S);
}

TEST_T(qos2_exactly_once_when_a_pubcomp_is_lost_with_the_connection, 60)
{
	qos2_loss(MQP_PUBCOMP, MQP_S2C);
}

/* ======================================================================
 * 4. Never give up what no broker refused
 * ==================================================================== */

/* A broker that accepts the connection and drops it, again and again (a
 * cluster node whose session queue died), with several messages in flight
 * on a persistent session (paho sends them all again at each connect):
 * connections dying is no refusal, and no single message is to blame (one
 * alone in flight that the broker closes over twice is poison:
 * test_security). The window shrinks; accepted QoS 1 messages are not
 * reported failed; once the path heals every one reaches the broker. */
TEST_T(a_broker_that_keeps_dropping_the_connection_fails_no_accepted_message,
       90)
{
	enum { N = 10, CUTS = 6 };
	struct pfix f;
	pfix_start(&f, NULL, "gu/#", "-q 1");
	struct mg_mqtt *c = persistent(&f.r, mqp_url(f.p), "pk-giveup");
	in_flight(f.p, c, "gu/x", "g", N);
	/* Then every connection dies when the client sends them again, CUTS
	 * times: accepted, then dropped, without a word. */
	int rule = cut_resends(f.p, "gu/#", CUTS);
	/* Until the faults are spent, or the messages were given up. */
	WAIT_UNTIL(mqp_fired(f.p, rule) == CUTS || REC(&f.r, npub) >= N, 40000);
	fprintf(stderr, "    %d connections dropped, %d reports\n",
	        mqp_fired(f.p, rule), REC(&f.r, npub));
	ASSERT(WAIT_UNTIL(REC(&f.r, npub) >= N && mg_mqtt_is_connected(c), 20000));
	REC_ASSERT_PUBS_OK(&f.r);
	each_arrived(c, &f.sub, "gu/end", 1, "g", N, 0);
	pfix_stop(&f, c);
}

/* A persistent session whose connections the broker closes right after
 * CONNACK, over paho's resend of what it holds, 3 times in a row: the
 * in-flight window shrinks, paho's client and its session store are kept
 * (a new client would lose the broker's session or send a QoS 2 message
 * twice), and once the path heals the QoS 1 messages in flight are all
 * acknowledged and reach the broker; none is reported failed. */
TEST_T(a_session_dropped_after_every_connack_keeps_paho_and_the_session, 90)
{
	enum { N = 10 };
	struct pfix f;
	pfix_start(&f, NULL, "nh/#", "-q 1");
	struct mg_mqtt *c = resumed(&f.r, mqp_url(f.p), "pk-new-handle");
	in_flight(f.p, c, "nh/x", "h", N);
	/* Cut at the first PUBLISH of each new connection: paho's resend of
	 * what it kept, right after CONNACK, as a broker that closes over a
	 * corrupt resend does. Nothing is acknowledged on those connections. */
	int rule = cut_resends(f.p, NULL, 3);
	ASSERT(WAIT_UNTIL(mqp_fired(f.p, rule) == 3, 30000));
	if (!WAIT_UNTIL(rec_log_has(&f.r, "in-flight window is now"), 20000))
		th_fail(__FILE__, __LINE__, "the window did not shrink; log:\n%s",
		        f.r.log != NULL ? f.r.log : "");
	ASSERT(WAIT_UNTIL(REC(&f.r, npub) >= N && mg_mqtt_is_connected(c), 20000));
	char st[16384];
	ASSERT(mg_mqtt_status(c, st, sizeof(st)) > 0);
	ASSERT_CONTAINS(st, "\"paho_renewals\":0");
	REC_ASSERT_PUBS_OK(&f.r);
	each_arrived(c, &f.sub, "nh/end", 1, "h", N, 0);
	pfix_stop(&f, c);
}

/* Connections that are cut soon after CONNACK but do carry traffic are no
 * sign of paho's corrupt resend: the library keeps paho's client and its
 * session store. A QoS 2 message the broker has released (its PUBREL
 * received; the PUBCOMP lost) stays with paho, which sends the PUBREL
 * again; a new paho client would send the message again under a new
 * packet id, and the broker would deliver it twice. */
TEST_T(connections_cut_after_traffic_keep_paho_and_qos2_once, 90)
{
	struct pfix f;
	pfix_start(&f, NULL, "ct/#", "-q 2");
	struct mg_mqtt *c = resumed(&f.r, mqp_url(f.p), "pk-cut-traffic");
	/* The broker releases the message; its PUBCOMP never arrives. */
	mqp_add(f.p, &(struct mqp_rule){
	               .type = MQP_PUBCOMP, .dir = MQP_S2C, .action = MQP_DROP});
	ASSERT_GT(mg_mqtt_publish(c, "ct/once", "once", 4, 2, 0), 0);
	ASSERT(WAIT_UNTIL(th_count_lines(f.sub.out, "ct/once once") == 1, 10000));
	ASSERT(WAIT_UNTIL(mqp_count(f.p, MQP_C2S, MQP_PUBREL) >= 1, 10000));
	/* Then 4 connections in a row, each cut right after the PUBACK of a
	 * QoS 1 message sent on it. */
	for (int i = 0; i < 4; i++) {
		int conns = REC(&f.r, connects);
		int rule = mqp_add(f.p, &(struct mqp_rule){.type = MQP_PUBACK,
		                                         .dir = MQP_S2C,
		                                         .times = 1,
		                                         .action = MQP_CUT_AFTER});
		if (i == 0)
			mqp_cut_all(f.p);
		ASSERT(WAIT_UNTIL(REC(&f.r, connects) > conns, 20000));
		ASSERT_GT(mg_mqtt_publish(c, "ct/tick", "tick", 4, 1, 0), 0);
		ASSERT(WAIT_UNTIL(mqp_fired(f.p, rule) == 1, 20000));
	}
	mqp_clear(f.p);
	ASSERT(WAIT_UNTIL(REC(&f.r, npub) >= 5 && mg_mqtt_is_connected(c), 20000));
	ASSERT_GT(mg_mqtt_publish(c, "ct/end", "end", 3, 1, 0), 0);
	ASSERT(WAIT_UNTIL(th_count_lines(f.sub.out, "ct/end end") == 1, 10000));
	ASSERT(WAIT_UNTIL(REC(&f.r, npub) >= 6, 20000));
	if (rec_log_has(&f.r, "made anew"))
		th_fail(__FILE__, __LINE__,
		        "paho's client was made anew though every connection "
		        "carried traffic");
	ASSERT_EQ(th_count_lines(f.sub.out, "ct/once once"), 1);
	pfix_stop(&f, c);
}

/* ======================================================================
 * 5. Fail-over order
 * ==================================================================== */

/* README: "a comma-separated list is a fail-over list, tried in order on
 * every (re)connect, the next entry at once when one fails". After the
 * first broker dies the client goes to the second: it does not wait for the
 * back-off and does not try the dead one first. */
TEST_T(after_the_first_broker_dies_the_next_is_tried_first_and_at_once, 60)
{
	struct th_broker a, b;
	struct rec r;
	struct attempts at;
	char urls[160];
	th_two_brokers_start(&a, &b, urls, sizeof(urls));
	struct mg_mqtt *c = rec_client(&r, NULL);
	attempts_attach(c, &at, &r);
	rec_start(c, OPTS("MQTT_BROKER_URL", urls, "MQTT_RECONNECT_MIN", "10",
	                  "MQTT_RECONNECT_MAX", "20", "MQTT_CONNECTION_TIMEOUT",
	                  "2"));
	ASSERT(WAIT_UNTIL(REC(&r, connects) == 1, 5000));
	int64_t t0 = th_now_ms();
	th_broker_kill9(&a);
	int ok = WAIT_UNTIL(REC(&r, connects) == 2, 40000);
	int64_t took = th_now_ms() - t0;
	attempts_print(&at, t0);
	ASSERT(ok);
	pthread_mutex_lock(&at.mu);
	ASSERT_GE(at.n, 2);
	/* The first attempt after the loss. */
	ASSERT_STREQ(at.broker[1], b.url);
	pthread_mutex_unlock(&at.mu);
	fprintf(stderr, "    connected to the second broker %lld ms after the "
	                "kill (RECONNECT_MIN 10 s)\n",
	        (long long)took);
	/* Well under the back-off it would have waited. */
	ASSERT_LT(took, 10000LL * th_timeout_scale());
	char want[128];
	snprintf(want, sizeof(want), "connected to %s", b.url);
	ASSERT(rec_log_has(&r, want));
	rec_stop(c, &r);
}

/* A node that accepts the connection and then drops it is as good as
 * dead: the client moves on to the next one and stays there. */
TEST_T(a_node_that_accepts_then_drops_is_passed_over_for_the_next, 60)
{
	struct th_broker a, m, b;
	struct rec r;
	struct attempts at;
	char urls[256];
	th_broker_start(&a, NULL);
	th_broker_start(&m, NULL);
	th_broker_start(&b, NULL);
	struct mqp *p = mqp_start(m.port);
	mqp_add(p, &(struct mqp_rule){
	               .type = MQP_CONNACK, .dir = MQP_S2C, .action = MQP_CUT_AFTER});
	snprintf(urls, sizeof(urls), "%s,%s,%s", a.url, mqp_url(p), b.url);
	struct mg_mqtt *c = rec_client(&r, NULL);
	attempts_attach(c, &at, &r);
	rec_start(c, OPTS("MQTT_BROKER_URL", urls, "MQTT_RECONNECT_MIN", "1",
	                  "MQTT_RECONNECT_MAX", "2", "MQTT_CONNECTION_TIMEOUT",
	                  "2", "MQTT_SUBSCRIBE", "an/#:1"));
	ASSERT(WAIT_UNTIL(REC(&r, connects) == 1, 5000));
	int64_t t0 = th_now_ms();
	th_broker_kill9(&a);
	int ok = WAIT_UNTIL(mg_mqtt_is_connected(c) && ({
		                    pthread_mutex_lock(&r.mu);
		                    int s_ = strcmp(r.last_broker, b.url) == 0;
		                    pthread_mutex_unlock(&r.mu);
		                    s_;
	                    }),
	                    25000);
	attempts_print(&at, t0);
	fprintf(stderr, "    the dropping node accepted %d connections\n",
	        mqp_accepted(p));
	ASSERT(ok);
	/* And it works there. */
	ASSERT(WAIT_UNTIL(rec_subs_settled(c, 1), 10000));
	REC_PUB_ARRIVES(&b, &r, "an/x", "on-the-third", 10000);
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	mqp_stop(p);
	rec_free(&r);
}

/* ======================================================================
 * 6. Errors that say what happened
 * ==================================================================== */

/* The certificate is signed by the trusted CA but names another host:
 * MG_MQTT_ERR_TLS ("first connection failed" with the TLS code), and a
 * log line that says TLS and host name. */
TEST_T(a_tls_host_name_mismatch_fails_start_with_err_tls_and_says_so, 60)
{
	struct th_broker b;
	struct loglines l;
	char err[1024];
	th_tls_broker_start(&b, "wrong-host", 0);
	struct mg_mqtt *c;
	int rc = start_logged(&c, &l,
	                      OPTS("MQTT_BROKER_URL", b.url, "MQTT_TLS_CA_CERTS",
	                           b.ca, "MQTT_CONNECTION_TIMEOUT", "3"),
	                      err, sizeof(err));
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	fprintf(stderr, "    start: %d (%s): %s\n", rc, mg_mqtt_strerror(rc), err);
	loglines_print(&l, 20);
	ASSERT_EQ(rc, MG_MQTT_ERR_TLS);
	ASSERT_GT(loglines_count2(&l, MG_MQTT_LOG_WARNING, "TLS", "host"), 0);
	loglines_free(&l);
}

/* The TLS connection through a plain byte pipe works; once the pipe goes
 * silent, a start times out: MG_MQTT_ERR_TIMEOUT, not _CONNECT. */
TEST_T(a_tls_broker_that_goes_silent_fails_start_with_err_timeout, 60)
{
	struct th_broker b;
	struct rec r;
	char url[96], err[1024];
	th_tls_broker_start(&b, "server", 0);
	struct mqp *p = mqp_start_raw(b.port);
	snprintf(url, sizeof(url), "mqtts://127.0.0.1:%d", mqp_port(p));
	struct mg_mqtt *c = rec_started(
	    &r, OPTS("MQTT_BROKER_URL", url, "MQTT_TLS_CA_CERTS", b.ca));
	ASSERT(mg_mqtt_is_connected(c));
	rec_stop(c, &r);

	mqp_mode(p, MQP_HOLD);
	c = rec_client(&r, NULL);
	int rc = mg_mqtt_start(c, NULL,
	                       OPTS("MQTT_BROKER_URL", url, "MQTT_TLS_CA_CERTS",
	                            b.ca, "MQTT_CONNECTION_TIMEOUT", "2"),
	                       err, sizeof(err));
	fprintf(stderr, "    start: %d (%s): %s\n", rc, mg_mqtt_strerror(rc), err);
	ASSERT_EQ(rc, MG_MQTT_ERR_TIMEOUT);
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	ASSERT_EQ(r.last_error, MG_MQTT_ERR_TIMEOUT);
	rec_free(&r);
	mqp_stop(p);
}

/* A broker that accepts TCP and never answers the CONNECT: the header
 * lists _TIMEOUT among the first connection's errors; that is this case. */
TEST_T(a_broker_that_never_answers_fails_start_with_err_timeout, 30)
{
	struct th_broker b;
	struct rec r;
	char err[1024];
	struct mqp *p = connect_proxy(&b, MQP_BLACKHOLE, 0);
	struct mg_mqtt *c = rec_client(&r, NULL);
	int rc = mg_mqtt_start(c, NULL,
	                       OPTS("MQTT_BROKER_URL", mqp_url(p),
	                            "MQTT_CONNECTION_TIMEOUT", "2"),
	                       err, sizeof(err));
	fprintf(stderr, "    start: %d (%s): %s\n", rc, mg_mqtt_strerror(rc), err);
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	ASSERT_EQ(mqp_count(p, MQP_C2S, MQP_CONNECT), 1);
	ASSERT_EQ(rc, MG_MQTT_ERR_TIMEOUT);
	ASSERT_EQ(r.last_error, MG_MQTT_ERR_TIMEOUT);
	ASSERT_EQ(r.last_reason, -1);
	mqp_stop(p);
	rec_free(&r);
}

/* A broker that reads the CONNECT and closes the socket (RabbitMQ 3.10
 * asked for MQTT 5): the log says the broker closed the connection after
 * CONNECT, not "TCP connect completion failure". */
TEST_T(a_broker_that_closes_after_connect_is_logged_as_such, 30)
{
	struct th_broker b;
	struct loglines l;
	char err[1024];
	struct mqp *p = connect_proxy(&b, MQP_CUT_BEFORE, 0);
	struct mg_mqtt *c;
	int rc = start_logged(
	    &c, &l,
	    OPTS("MQTT_BROKER_URL", mqp_url(p), "MQTT_CONNECTION_TIMEOUT", "3"),
	    err, sizeof(err));
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	fprintf(stderr, "    start: %d (%s): %s\n", rc, mg_mqtt_strerror(rc), err);
	loglines_print(&l, 10);
	ASSERT_NE(rc, 0);
	ASSERT_GE(mqp_count(p, MQP_C2S, MQP_CONNECT), 1);
	ASSERT_EQ(loglines_count(&l, 3, "TCP connect completion failure"), 0);
	/* Worded as the library likes; it names the close and the CONNECT. */
	ASSERT_GT(loglines_count2(&l, MG_MQTT_LOG_WARNING, "closed", "CONNECT"),
	          0);
	loglines_free(&l);
	mqp_stop(p);
}

/* PROTOCOL_FALLBACK true: a broker that closes the connection on an MQTT 5
 * CONNECT and takes 3.1.1 gets 3.1.1, and the log says so. Default off:
 * the start fails, and no 3.1.1 CONNECT is sent. */
TEST_T(protocol_fallback_from_5_to_3_1_1_only_when_asked, 40)
{
	struct th_broker b;
	struct loglines l;
	char err[1024];
	struct mqp *p = connect_proxy(&b, MQP_CUT_BEFORE, 5);
	/* Off by default. */
	struct mg_mqtt *c = mg_mqtt_create(NULL);
	int rc = mg_mqtt_start(c, NULL,
	                       OPTS("MQTT_BROKER_URL", mqp_url(p),
	                            "MQTT_PROTOCOL_VERSION", "5",
	                            "MQTT_CONNECTION_TIMEOUT", "3"),
	                       err, sizeof(err));
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	ASSERT_NE(rc, 0);
	ASSERT_EQ(mqp_last_level(p), 5);

	c = mg_mqtt_create(NULL);
	loglines_init(&l);
	ASSERT_EQ(mg_mqtt_on_log(c, loglines_on_log, &l), 0);
	rc = mg_mqtt_start(c, NULL,
	                   OPTS("MQTT_BROKER_URL", mqp_url(p),
	                        "MQTT_PROTOCOL_VERSION", "5",
	                        "MQTT_PROTOCOL_FALLBACK", "true",
	                        "MQTT_CONNECTION_TIMEOUT", "3"),
	                   err, sizeof(err));
	fprintf(stderr, "    start with PROTOCOL_FALLBACK true: %d %s\n", rc, err);
	ASSERT_EQ(rc, 0);
	ASSERT(mg_mqtt_is_connected(c));
	ASSERT_EQ(mqp_last_level(p), 4);
	char *st = rec_status(c);
	ASSERT_CONTAINS(st, "\"protocol\":\"3.1.1\"");
	free(st);
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	loglines_print(&l, 10);
	/* A line that says it fell back from 5 to 3.1.1. */
	ASSERT_GT(loglines_count2(&l, MG_MQTT_LOG_INFO, "3.1.1", "fall") +
	              loglines_count2(&l, MG_MQTT_LOG_INFO, "3.1.1", "MQTT 5") +
	              loglines_count2(&l, MG_MQTT_LOG_INFO, "3.1.1", "version 5"),
	          0);
	loglines_free(&l);
	mqp_stop(p);
}

/* ======================================================================
 * 7. What an MQTT 5 broker announces in CONNACK
 * ==================================================================== */

/* A broker whose CONNACK announces the availability property id as 0
 * (not available); a client asking for that with MQTT 5 and more options
 * (key, value, ...): its start fails with an error naming word, or it
 * warns with a line naming it. */
static void unavailable_is_not_silent(unsigned char id, const char *word,
                                      const char *k1, const char *v1,
                                      const char *k2, const char *v2)
{
	struct th_broker b;
	struct loglines l;
	char err[1024] = "";
	struct mqp *p = proxied(&b, &(struct mqp_rule){.type = MQP_CONNACK,
	                                               .dir = MQP_S2C,
	                                               .action = MQP_ADD_PROPS,
	                                               .props = {id, 0x00},
	                                               .props_len = 2});
	struct mg_mqtt *c;
	int rc = start_logged(&c, &l,
	                      OPTS("MQTT_BROKER_URL", mqp_url(p),
	                           "MQTT_PROTOCOL_VERSION", "5", k1, v1, k2, v2),
	                      err, sizeof(err));
	if (rc == 0)
		th_sleep_ms(500); /* a warning from the connect handler */
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	fprintf(stderr, "    start: %d %s\n", rc, err);
	loglines_print(&l, 10);
	int said = (rc != 0 && strcasestr(err, word) != NULL) ||
	           loglines_count(&l, MG_MQTT_LOG_WARNING, word) > 0;
	ASSERT(said);
	loglines_free(&l);
	mqp_stop(p);
}

/* Shared Subscription Available 0 (RabbitMQ takes $share/... as a plain
 * topic; 0 of 2,000 delivered, nothing logged): SHARED_GROUP is refused
 * with an error naming it, or warned about loudly. */
TEST_T(shared_group_on_a_broker_without_shared_subscriptions_is_not_silent, 30)
{
	unavailable_is_not_silent(0x2a, "shared", "MQTT_SHARED_GROUP", "web",
	                          "MQTT_SUBSCRIBE", "jobs/#:1");
}

/* Wildcard Subscription Available 0: a wildcard subscription is refused by
 * such a broker; the client says why. */
TEST_T(a_wildcard_subscription_on_a_broker_without_them_is_not_silent, 30)
{
	unavailable_is_not_silent(0x28, "wildcard", "MQTT_SUBSCRIBE", "wc/+/x:1",
	                          NULL, NULL);
}

/* ======================================================================
 * 8. Contract slips
 * ==================================================================== */

/* The header: "Lines logged while mg_mqtt_start() runs are delivered on
 * the calling thread before start returns". Nothing else happens after
 * start here, so any later line is a slip. */
TEST_T(no_log_line_of_start_arrives_after_start_returns, 60)
{
	struct th_broker b;
	int late = 0;
	char first[512] = "";
	th_broker_start(&b, NULL);
	for (int i = 0; i < 20; i++) {
		struct loglines l;
		loglines_init(&l);
		struct mg_mqtt *c = mg_mqtt_create(NULL);
		ASSERT_EQ(mg_mqtt_on_log(c, loglines_on_log, &l), 0);
		rec_start(c, OPTS("MQTT_BROKER_URL", b.url));
		atomic_store(&l.mark, 1);
		th_sleep_ms(100);
		pthread_mutex_lock(&l.mu);
		int n = atomic_load(&l.after_mark);
		if (n > 0 && first[0] == '\0')
			snprintf(first, sizeof(first), "%s", l.first_after);
		pthread_mutex_unlock(&l.mu);
		late += n > 0;
		atomic_store(&l.mark, 0);
		ASSERT_EQ(mg_mqtt_stop(c), 0);
		loglines_free(&l);
	}
	fprintf(stderr, "    %d of 20 starts had a line after return; first: %s\n",
	        late, first);
	ASSERT_EQ(late, 0);
}

/* The header: on_disconnect at stop "is the last handler to run". */
struct last_handler {
	struct loglines l;
	atomic_int disconnected;
};

static void lh_on_disconnect(struct mg_mqtt *c,
                             const struct mg_mqtt_disconnect_info *i, void *ud)
{
	struct last_handler *h = ud;
	(void)c;
	if (i->stopped) {
		atomic_store(&h->disconnected, 1);
		atomic_store(&h->l.mark, 1);
	}
}

TEST_T(no_log_line_arrives_after_on_disconnect_at_stop, 60)
{
	struct th_broker b;
	int late = 0;
	char first[512] = "";
	th_broker_start(&b, NULL);
	struct mqp *p = mqp_start(b.port);
	for (int i = 0; i < 6; i++) {
		struct last_handler h;
		memset(&h, 0, sizeof(h));
		loglines_init(&h.l);
		struct mg_mqtt *c = mg_mqtt_create(NULL);
		ASSERT_EQ(mg_mqtt_on_log(c, loglines_on_log, &h.l), 0);
		ASSERT_EQ(mg_mqtt_on_disconnect(c, lh_on_disconnect, &h), 0);
		rec_start(c, OPTS("MQTT_BROKER_URL", mqp_url(p),
		                  "MQTT_CONNECTION_TIMEOUT", "1"));
		/* Every other run stops with messages that cannot be sent. */
		if (i % 2 == 1) {
			mqp_mode(p, MQP_HOLD);
			for (int k = 0; k < 5; k++)
				ASSERT_GT(mg_mqtt_publish(c, "lh/x", "m", 1, 1, 0), 0);
		}
		ASSERT_EQ(mg_mqtt_stop(c), 0);
		mqp_mode(p, MQP_FORWARD);
		mqp_cut_all(p);
		ASSERT(atomic_load(&h.disconnected));
		int n = atomic_load(&h.l.after_mark);
		if (n > 0 && first[0] == '\0')
			snprintf(first, sizeof(first), "%s", h.l.first_after);
		late += n > 0;
		loglines_free(&h.l);
	}
	fprintf(stderr, "    %d of 6 stops logged after on_disconnect; first: %s\n",
	        late, first);
	ASSERT_EQ(late, 0);
	mqp_stop(p);
}

/* QoS 0 is at most once: a message paho hands back when the connection
 * dies is not sent again. Cuts during a QoS 0 flood; every payload counted
 * at a subscriber on the broker itself. */
TEST_T(qos0_messages_are_never_delivered_twice_across_cuts, 60)
{
	enum { N = 12000 };
	struct pfix f;
	static int counts[N];
	pfix_start(&f, flood_broker, "q0/#", NULL);
	struct mg_mqtt *c = rec_started(&f.r, OPTS("MQTT_BROKER_URL", mqp_url(f.p),
	                                         "MQTT_RECONNECT_MIN", "1",
	                                         "MQTT_RECONNECT_MAX", "1"));
	int cuts = 0;
	for (int i = 0; i < N; i++) {
		char m[16];
		snprintf(m, sizeof(m), "s%d", i);
		while (mg_mqtt_publish(c, "q0/x", m, strlen(m), 0, 0) ==
		       MG_MQTT_ERR_BUFFER_FULL)
			th_sleep_ms(2);
		/* Cuts at once, and cuts right after a PUBLISH went through
		 * (paho is in the middle of its queue then). */
		if (i % 4000 == 1000 && mg_mqtt_is_connected(c)) {
			mqp_cut_all(f.p);
			cuts++;
		}
		if (i % 4000 == 3000)
			mqp_add(f.p, &(struct mqp_rule){.type = MQP_PUBLISH,
			                              .dir = MQP_C2S,
			                              .topic = "q0/#",
			                              .nth = 50,
			                              .times = 1,
			                              .action = MQP_CUT_AFTER});
	}
	ASSERT(WAIT_UNTIL(mg_mqtt_is_connected(c), 10000));
	ASSERT_GT(mg_mqtt_publish(c, "q0/end", "end", 3, 1, 0), 0);
	ASSERT(WAIT_UNTIL(th_count_lines(f.sub.out, "q0/end end") == 1, 20000));
	sub_payload_counts(&f.sub, "s", counts, N);
	int dups = 0, got = 0, first = -1;
	for (int i = 0; i < N; i++) {
		got += counts[i] > 0;
		if (counts[i] > 1 && dups++ == 0)
			first = i;
	}
	fprintf(stderr, "    %d cuts; %d of %d QoS 0 messages arrived, %d twice "
	                "or more (first s%d)\n",
	        cuts, got, N, dups, first);
	ASSERT_GT(cuts, 0);
	ASSERT_EQ(dups, 0);
	pfix_stop(&f, c);
}

/* The header: a subscription's qos is "requested QoS (the highest asked
 * for)". A browser on QoS 1 and the application on QoS 0 for the same
 * filter: the broker subscription stays at 1, so the browser still gets
 * QoS 1, and the list says 1. */
TEST_T(an_application_subscribing_lower_than_a_browser_keeps_the_higher_qos,
       60)
{
	struct th_broker b;
	struct rec r;
	struct wsc w;
	char port[32], err[1024];
	th_broker_start(&b, NULL);
	int hp = th_free_port();
	snprintf(port, sizeof(port), "127.0.0.1:%d", hp);
	struct mg_context *ctx =
	    mg_start(NULL, NULL, OPTS("listening_ports", port, "num_threads", "8"));
	ASSERT(ctx != NULL);
	struct mg_mqtt *c = rec_client(&r, NULL);
	int rc = mg_mqtt_start(c, ctx,
	                       OPTS("MQTT_BROKER_URL", b.url, "MQTT_BRIDGE_PATH",
	                            "/mqtt", "MQTT_BRIDGE_SUBSCRIBE_ALLOW", "ql/#"),
	                       err, sizeof(err));
	if (rc != 0)
		th_fail(__FILE__, __LINE__, "start: %s", err);
	ASSERT_EQ(wsc_open(&w, hp), 0);
	wsc_send(&w, "{\"op\":\"subscribe\",\"topic\":\"ql/#\",\"qos\":1,\"id\":1}");
	ASSERT(WAIT_UNTIL(wsc_count(&w, "\"op\":\"ack\"") >= 1, 10000));
	ASSERT(WAIT_UNTIL(rec_subs_settled(c, 1), 10000));
	int id = mg_mqtt_subscribe(c, "ql/#", 0);
	ASSERT_GT(id, 0);
	struct rec_ack a;
	ASSERT(WAIT_UNTIL(rec_find_sub(&r, id, &a) >= 0, 10000));
	ASSERT(WAIT_UNTIL(rec_subs_settled(c, 1), 10000));
	struct mg_mqtt_subscription *subs = NULL;
	ASSERT_EQ(mg_mqtt_subscriptions(c, &subs), 1);
	int qos = subs[0].qos, granted = subs[0].granted;
	free(subs);
	REC_PUB_ARRIVES(&b, &r, "ql/x", "hello", 10000);
	/* The message's frame, not the greeting ({"op":"hello",...}). */
	ASSERT(WAIT_UNTIL(wsc_count(&w, "\"topic\":\"ql/x\"") >= 1, 10000));
	int app_qos = r.msgs[rec_find(&r, "ql/x", "hello")].qos;
	int browser_qos1 = wsc_count2(&w, "\"topic\":\"ql/x\"", "\"qos\":1,");
	fprintf(stderr, "    list qos %d granted %d; delivered at QoS %d\n", qos,
	        granted, app_qos);
	ASSERT_EQ(qos, 1);
	ASSERT_EQ(granted, 1);
	ASSERT_EQ(app_qos, 1);
	ASSERT_GE(browser_qos1, 1);
	wsc_close(&w);
	mg_stop(ctx);
	rec_stop(c, &r);
}

/* CLEAN_SESSION false without CLIENT_ID: a new random id every start can
 * never resume the session. Refused (MG_MQTT_ERR_CONFIG naming the keys)
 * or warned about. */
TEST(clean_session_false_without_client_id_is_refused_or_warned)
{
	struct th_broker b;
	struct loglines l;
	char err[1024] = "";
	th_broker_start(&b, NULL);
	struct mg_mqtt *c;
	int rc = start_logged(
	    &c, &l, OPTS("MQTT_BROKER_URL", b.url, "MQTT_CLEAN_SESSION", "false"),
	    err, sizeof(err));
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	fprintf(stderr, "    start: %d %s\n", rc, err);
	if (rc != 0) {
		ASSERT_EQ(rc, MG_MQTT_ERR_CONFIG);
		ASSERT_CONTAINS(err, "CLIENT_ID");
	} else {
		ASSERT_GT(loglines_count(&l, MG_MQTT_LOG_WARNING, "CLIENT_ID"), 0);
	}
	loglines_free(&l);
}

/* LOG_LEVEL debug: a whole connect / subscribe / publish / receive / stop
 * cycle is told through the log handler at DEBUG (Flask-MQTT's on_log gets
 * every packet), and no line holds the password. */
TEST(log_level_debug_tells_the_whole_cycle_and_never_the_password)
{
	static const char pw[] = "pw-Zq81x";
	struct th_broker b;
	struct loglines l;
	char err[1024];
	th_broker_start_password(&b, "gw", pw);
	struct rec r;
	struct mg_mqtt *c = rec_client(&r, NULL);
	loglines_init(&l);
	ASSERT_EQ(mg_mqtt_on_log(c, loglines_on_log, &l), 0);
	int rc = mg_mqtt_start(c, NULL,
	                       OPTS("MQTT_BROKER_URL", b.url, "MQTT_USERNAME", "gw",
	                            "MQTT_PASSWORD", pw, "MQTT_LOG_LEVEL", "debug"),
	                       err, sizeof(err));
	if (rc != 0)
		th_fail(__FILE__, __LINE__, "start: %d %s", rc, err);
	int id = mg_mqtt_subscribe(c, "dbg/#", 1);
	EXPECT_GRANTED(c, &r, id, 1, 10000);
	ASSERT_GT(mg_mqtt_publish(c, "dbg/x", "hello", 5, 1, 0), 0);
	ASSERT(WAIT_UNTIL(rec_find(&r, "dbg/x", "hello") >= 0, 10000));
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	int debug = 0;
	pthread_mutex_lock(&l.mu);
	for (int i = 0; i < l.n; i++) {
		debug += l.level[i] == MG_MQTT_LOG_DEBUG;
		ASSERT_NOT_CONTAINS(l.text[i], pw);
	}
	fprintf(stderr, "    %d lines, %d at DEBUG\n", l.n, debug);
	pthread_mutex_unlock(&l.mu);
	ASSERT_NOT_CONTAINS(err, pw);
	ASSERT_GT(loglines_count_at(&l, MG_MQTT_LOG_DEBUG, "CONNECT"), 0);
	ASSERT_GT(loglines_count_at(&l, MG_MQTT_LOG_DEBUG, "SUBSCRIBE"), 0);
	ASSERT_GT(loglines_count_at(&l, MG_MQTT_LOG_DEBUG, "PUBLISH"), 0);
	ASSERT_GT(loglines_count_at(&l, MG_MQTT_LOG_DEBUG, "DISCONNECT"), 0);
	ASSERT_GT(debug, 5);
	loglines_free(&l);
	rec_free(&r);
}
