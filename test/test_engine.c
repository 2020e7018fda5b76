/*
 * The MQTT engine (issue 18): what a user sees through the public API when
 * brokers die under QoS 1/2 streams, when connections die right after
 * CONNACK, when a handler is stuck under a flood, and when a 3.1.1 broker
 * closes a client over its QoS 2 window:
 *
 *   - no memory error (run under make asan: the suppression file holds
 *     nothing for paho), no crash, nothing lost, QoS 2 once;
 *   - a persistent session is never thrown away: what the broker queued
 *     for the client while it was away reaches the handlers;
 *   - resident memory stays bounded while a handler cannot keep up;
 *   - the QoS 2 window does not livelock against mosquitto's limit.
 *
 * Every broker is a real mosquitto on a free loopback port, stopped by PID.
 */
#include "mqproxy.h"
#include "rec.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>


/* Under a sanitizer resident memory means nothing (ASan keeps freed blocks
 * in quarantine, TSan shadows everything) and everything runs slower. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

/* A number field of the status JSON ("name":N), or -1 when it has none. */
static long status_number(struct mg_mqtt *c, const char *name)
{
	char buf[16384], key[64];
	if (mg_mqtt_status(c, buf, sizeof(buf)) <= 0)
		return -1;
	snprintf(key, sizeof(key), "\"%s\":", name);
	const char *p = strstr(buf, key);
	return p != NULL ? strtol(p + strlen(key), NULL, 10) : -1;
}

/* ======================================================================
 * 1. QoS 1/2 streams on a persistent session, the broker killed 16 times
 * ==================================================================== */

enum { NPUB = 4, SEQMAX = 30000, IDMAX = 1 << 20, KILLS = 16 };

struct stream {
	struct mg_mqtt *c;
	int qos;
	_Atomic int stop;
	int ids[NPUB][SEQMAX]; /* written by publisher t only */
	_Atomic int accepted[NPUB];
	_Atomic int refused;   /* an error other than BUFFER_FULL */
	_Atomic int acks, acks_ok;
	_Atomic unsigned char nack[IDMAX], bad[IDMAX];
	/* What the publisher's proxy saw go to the broker. */
	_Atomic unsigned char sent[NPUB][SEQMAX];
	int from[NPUB]; /* the first message accepted after the last kill */
};

struct stream_arg {
	struct stream *s;
	int t;
};

static void stream_ack(struct mg_mqtt *c, int id, int result, void *ud)
{
	struct stream *s = ud;
	(void)c;
	if (id > 0 && id < IDMAX) {
		atomic_fetch_add(&s->nack[id], 1);
		if (result != 0)
			atomic_store(&s->bad[id], 1);
	}
	atomic_fetch_add(&s->acks, 1);
	if (result == 0)
		atomic_fetch_add(&s->acks_ok, 1);
}

static void *stream_publisher(void *arg)
{
	struct stream_arg *a = arg;
	struct stream *s = a->s;
	int seq = 0;
	while (!atomic_load(&s->stop) && seq < SEQMAX) {
		char m[32];
		snprintf(m, sizeof(m), "t%d n%d", a->t, seq);
		int id = mg_mqtt_publish(s->c, "eng/s", m, strlen(m), s->qos, 0);
		if (id == MG_MQTT_ERR_BUFFER_FULL) {
			th_sleep_ms(5);
			continue;
		}
		if (id <= 0 || id >= IDMAX) {
			atomic_store(&s->refused, id);
			break;
		}
		s->ids[a->t][seq++] = id;
		atomic_store(&s->accepted[a->t], seq);
		th_sleep_ms(2);
	}
	return NULL;
}

/* The publisher's PUBLISH packets, on its proxy's threads. */
static void stream_observe(void *ud, int dir, const unsigned char *pkt,
                           size_t len, size_t hlen, int level)
{
	struct stream *s = ud;
	const unsigned char *b = pkt + hlen;
	size_t n = len - hlen, tl = n >= 2 ? (size_t)b[0] << 8 | b[1] : 0;
	char text[32];
	int t, seq;
	(void)level;
	if (pkt[0] >> 4 != MQP_PUBLISH || dir != MQP_C2S ||
	    ((pkt[0] >> 1) & 3) == 0 || n < 2 || 2 + tl + 2 > n)
		return;
	size_t pl = n - 4 - tl;
	snprintf(text, sizeof(text), "%.*s", (int)(pl < 31 ? pl : 31),
	         (const char *)b + 4 + tl);
	if (sscanf(text, "t%d n%d", &t, &seq) == 2 && t >= 0 && t < NPUB &&
	    seq >= 0 && seq < SEQMAX)
		atomic_store(&s->sent[t][seq], 1);
}

/* Starts c on a persistent session (client id id) at url; extra: more
 * options (name, value, ..., NULL) or NULL. */
static void start_persistent(struct mg_mqtt *c, const char *url,
                             const char *id, const char **extra)
{
	const char *o[32] = {"MQTT_BROKER_URL", url, "MQTT_CLIENT_ID", id,
	                     "MQTT_CLEAN_SESSION", "false",
	                     "MQTT_RECONNECT_MAX", "2"};
	int n = 8;
	for (int i = 0; extra != NULL && extra[i] != NULL && n < 30; i++)
		o[n++] = extra[i];
	o[n] = NULL;
	rec_start(c, o);
}

static void stream_through_kills(int qos)
{
	struct th_broker b;
	struct th_sub sub;
	struct rec rp;
	char id[32], qarg[8];
	struct stream *s = calloc(1, sizeof(*s));
	ASSERT(s != NULL);
	s->qos = qos;
	th_persistent_broker_start(&b, NULL);
	struct mqp *p = mqp_start(b.port);
	mqp_observe(p, stream_observe, s);

	/* The publisher: one client, four threads. */
	snprintf(id, sizeof(id), "eng-pub-q%d", qos);
	s->c = rec_client(&rp, NULL);
	ASSERT_EQ(mg_mqtt_on_publish(s->c, stream_ack, s), 0);
	start_persistent(s->c, mqp_url(p), id, NULL);
	pthread_t th[NPUB];
	struct stream_arg args[NPUB];
	for (int t = 0; t < NPUB; t++) {
		args[t] = (struct stream_arg){s, t};
		ASSERT_EQ(pthread_create(&th[t], NULL, stream_publisher, &args[t]), 0);
	}
	/* Killed while the stream flows; restarted on the same port; each
	 * time the stream must flow again before the next kill. */
	for (int k = 0; k < KILLS; k++) {
		int base = atomic_load(&s->acks_ok);
		if (!WAIT_UNTIL(atomic_load(&s->acks_ok) >= base + 300, 30000))
			th_fail(__FILE__, __LINE__,
			        "QoS %d: the stream stopped after kill %d: %d "
			        "acknowledged, %d acks in all",
			        qos, k, atomic_load(&s->acks_ok), atomic_load(&s->acks));
		th_broker_kill9(&b);
		th_broker_restart(&b);
		fprintf(stderr, "    QoS %d: kill %d at %d acknowledged\n", qos, k + 1,
		        atomic_load(&s->acks_ok));
	}
	/* A subscriber of its own after the last kill (see below). */
	snprintf(qarg, sizeof(qarg), "-q %d", qos);
	th_sub_start(&sub, &b, "eng/s", 0, qarg);
	for (int t = 0; t < NPUB; t++)
		s->from[t] = atomic_load(&s->accepted[t]);
	int base = atomic_load(&s->acks_ok);
	ASSERT(WAIT_UNTIL(atomic_load(&s->acks_ok) >= base + 300, 30000));
	atomic_store(&s->stop, 1);
	for (int t = 0; t < NPUB; t++)
		pthread_join(th[t], NULL);
	ASSERT_EQ(atomic_load(&s->refused), 0);
	int total = 0;
	for (int t = 0; t < NPUB; t++)
		total += atomic_load(&s->accepted[t]);

	/* Nothing lost: every accepted publish acknowledged, once, as a
	 * success, after it went to the broker. */
	if (!WAIT_UNTIL(atomic_load(&s->acks) >= total, 60000))
		th_fail(__FILE__, __LINE__,
		        "QoS %d: %d of %d accepted publishes acknowledged", qos,
		        atomic_load(&s->acks), total);
	for (int t = 0; t < NPUB; t++)
		for (int q = 0; q < atomic_load(&s->accepted[t]); q++) {
			int i = s->ids[t][q];
			if (atomic_load(&s->nack[i]) != 1 || atomic_load(&s->bad[i]) ||
			    !atomic_load(&s->sent[t][q]))
				th_fail(__FILE__, __LINE__,
				        "QoS %d: publish 't%d n%d' (id %d): %d acks, %s, %s",
				        qos, t, q, i, atomic_load(&s->nack[i]),
				        atomic_load(&s->bad[i]) ? "a failure" : "success",
				        atomic_load(&s->sent[t][q])
				            ? "sent to the broker"
				            : "never sent to the broker");
		}
	/* Delivered: what was published after the last kill reaches a
	 * subscriber that came after it (QoS 2: once). Not what came before:
	 * mosquitto killed with SIGKILL loses what it took in since its last
	 * save (a QoS 2 message whose PUBREL it had not yet seen, a delivery
	 * queued for a subscriber that was away), and a restart from an older
	 * save can deliver a message again: the broker's losses and
	 * duplicates, not the client's. */
	int checked = 0, missing = 0, twice = 0;
	unsigned char(*got)[SEQMAX] = calloc(NPUB, sizeof(*got));
	ASSERT(got != NULL);
	for (int t = 0; t < NPUB; t++)
		checked += atomic_load(&s->accepted[t]) - s->from[t];
	ASSERT_GT(checked, 0);
	WAIT_UNTIL(({
		           int n = 0;
		           char *text = th_sub_messages(&sub, &n), *save = NULL;
		           memset(got, 0, NPUB * sizeof(*got));
		           for (char *l = strtok_r(text, "\n", &save); l != NULL;
		                l = strtok_r(NULL, "\n", &save)) {
			           int t, q;
			           if (sscanf(l, "eng/s t%d n%d", &t, &q) == 2 && t >= 0 &&
			               t < NPUB && q >= 0 && q < SEQMAX && got[t][q] < 255)
				           got[t][q]++;
		           }
		           free(text);
		           missing = twice = 0;
		           for (int t = 0; t < NPUB; t++)
			           for (int q = s->from[t]; q < atomic_load(&s->accepted[t]);
			                q++) {
				           missing += got[t][q] == 0;
				           twice += got[t][q] > 1;
			           }
		           missing == 0;
	           }),
	           30000);
	for (int t = 0; t < NPUB; t++)
		for (int q = s->from[t]; q < atomic_load(&s->accepted[t]); q++)
			if (got[t][q] == 0 || (qos == 2 && got[t][q] > 1))
				th_fail(__FILE__, __LINE__,
				        "QoS %d: 't%d n%d', published after the last kill, "
				        "delivered %d times (%d of %d never, %d more than "
				        "once)",
				        qos, t, q, got[t][q], missing, checked, twice);
	free(got);
	th_sub_stop(&sub);
	fprintf(stderr,
	        "    QoS %d: %d messages (%d after the last kill), %d broker "
	        "kills, %d reconnects\n",
	        qos, total, checked, KILLS, REC(&rp, connects) - 1);
	ASSERT_EQ(mg_mqtt_stop(s->c), 0);
	mqp_stop(p);
	rec_free(&rp);
	free(s);
}

TEST_T(qos1_stream_survives_broker_kills_on_a_persistent_session, 90)
{
	stream_through_kills(1);
}

TEST_T(qos2_stream_survives_broker_kills_on_a_persistent_session, 90)
{
	stream_through_kills(2);
}

/* ======================================================================
 * 2. Short connections do not cost the session
 * ==================================================================== */

/* Connections the broker (here the proxy) closes right after CONNACK,
 * with nothing acknowledged on them, several in a row: whatever the
 * engine does about them, it resumes the same session, and what the
 * broker queued for the client while it was away reaches the handlers. */
TEST_T(a_persistent_session_keeps_what_the_broker_queued_after_short_losses,
       90)
{
	enum { N = 20, CUTS = 4 };
	struct th_broker b;
	struct rec r;
	th_broker_start(&b, "listener {PORT} 127.0.0.1\nallow_anonymous true\n"
	                    "max_queued_messages 0\n");
	struct mqp *p = mqp_start(b.port);
	struct mg_mqtt *c = rec_client(&r, NULL);
	start_persistent(c, mqp_url(p), "eng-short", NULL);
	ASSERT_GT(mg_mqtt_subscribe(c, "sl/#", 1), 0);
	ASSERT(WAIT_UNTIL(rec_subs_settled(c, 1), 10000));

	/* Away: the broker queues N messages for the session. */
	mqp_mode(p, MQP_REFUSE);
	mqp_cut_all(p);
	ASSERT(WAIT_UNTIL(!mg_mqtt_is_connected(c), 10000));
	for (int i = 0; i < N; i++) {
		char m[16];
		snprintf(m, sizeof(m), "m%d", i);
		th_pub(&b, "sl/x", m, 1, 0, NULL);
	}
	/* Back, but each of the next CUTS connections is cut right after its
	 * CONNACK: before the broker's queued PUBLISH packets get through. */
	int rule = mqp_add(p, &(struct mqp_rule){.type = MQP_CONNACK,
	                                         .dir = MQP_S2C,
	                                         .times = CUTS,
	                                         .action = MQP_CUT_AFTER});
	mqp_mode(p, MQP_FORWARD);
	if (!WAIT_UNTIL(mqp_fired(p, rule) == CUTS, 60000))
		th_fail(__FILE__, __LINE__, "%d of %d connections cut",
		        mqp_fired(p, rule), CUTS);
	ASSERT(WAIT_UNTIL(mg_mqtt_is_connected(c), 20000));
	int got = 0;
	WAIT_UNTIL(({
		           got = 0;
		           for (int i = 0; i < N; i++) {
			           char m[16];
			           snprintf(m, sizeof(m), "m%d", i);
			           got += rec_find(&r, "sl/x", m) >= 0;
		           }
		           got == N;
	           }),
	           20000);
	if (got != N)
		th_fail(__FILE__, __LINE__,
		        "%d of %d messages the broker queued for the session reached "
		        "the handler (last connect: session present %d); log:\n%s",
		        got, N, REC(&r, last_session), r.log != NULL ? r.log : "");
	/* Every connection resumed the session. */
	ASSERT_EQ(REC(&r, last_session), 1);
	/* Still subscribed: a new message arrives too. */
	REC_PUB_ARRIVES(&b, &r, "sl/x", "after", 10000);
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	mqp_stop(p);
	rec_free(&r);
}

/* The same short connections while a QoS 2 message is half done: the
 * broker has released it (PUBREL received, its PUBCOMP lost). Resuming the
 * session, the client sends PUBREL again and the message is delivered
 * once; a new session would send the message again as a new one, and the
 * broker would deliver it twice. */
TEST_T(a_released_qos2_message_arrives_once_after_short_losses, 90)
{
	enum { CUTS = 4 };
	struct th_broker b;
	struct th_sub sub;
	struct rec r;
	th_broker_sub_start(&b, NULL, &sub, "q2/#", 0, "-q 2");
	struct mqp *p = mqp_start(b.port);
	struct mg_mqtt *c = rec_client(&r, NULL);
	start_persistent(c, mqp_url(p), "eng-q2-short", NULL);
	mqp_add(p, &(struct mqp_rule){
	               .type = MQP_PUBCOMP, .dir = MQP_S2C, .action = MQP_DROP});
	ASSERT_GT(mg_mqtt_publish(c, "q2/once", "once", 4, 2, 0), 0);
	ASSERT(WAIT_UNTIL(th_count_lines(sub.out, "q2/once once") == 1, 10000));
	ASSERT(WAIT_UNTIL(mqp_count(p, MQP_C2S, MQP_PUBREL) >= 1, 10000));
	mqp_clear(p);
	int rule = mqp_add(p, &(struct mqp_rule){.type = MQP_CONNACK,
	                                         .dir = MQP_S2C,
	                                         .times = CUTS,
	                                         .action = MQP_CUT_AFTER});
	mqp_cut_all(p);
	if (!WAIT_UNTIL(mqp_fired(p, rule) == CUTS, 60000))
		th_fail(__FILE__, __LINE__, "%d of %d connections cut",
		        mqp_fired(p, rule), CUTS);
	ASSERT(WAIT_UNTIL(REC(&r, npub) >= 1 && mg_mqtt_is_connected(c), 20000));
	REC_ASSERT_PUBS_OK(&r);
	ASSERT_GT(mg_mqtt_publish(c, "q2/end", "end", 3, 2, 0), 0);
	ASSERT(WAIT_UNTIL(th_count_lines(sub.out, "q2/end end") == 1, 10000));
	if (th_count_lines(sub.out, "q2/once once") != 1)
		th_fail(__FILE__, __LINE__,
		        "the released QoS 2 message arrived %d times; log:\n%s",
		        th_count_lines(sub.out, "q2/once once"),
		        r.log != NULL ? r.log : "");
	ASSERT_EQ(REC(&r, last_session), 1);
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	th_sub_stop(&sub);
	mqp_stop(p);
	rec_free(&r);
}

/* ======================================================================
 * 3. A stuck handler under a flood: memory stays bounded
 * ==================================================================== */

enum { FLOOD_LEN = 1024 };
#define FLOOD_N (SANITIZED ? 20000 : 200000)

struct flood {
	struct mg_mqtt *pub;
	_Atomic int release, handled, distinct, acked, ack_bad, stop;
	_Atomic long peak_kb;
	_Atomic unsigned char *got;
};

/* VmRSS of this process in kB. */
static long rss_kb(void)
{
	char *text = th_read_file("/proc/self/status", NULL);
	const char *p = strstr(text, "VmRSS:");
	long kb = p != NULL ? strtol(p + 6, NULL, 10) : -1;
	free(text);
	return kb;
}

static void *flood_sampler(void *arg)
{
	struct flood *f = arg;
	while (!atomic_load(&f->stop)) {
		long kb = rss_kb();
		if (kb > atomic_load(&f->peak_kb))
			atomic_store(&f->peak_kb, kb);
		th_sleep_ms(50);
	}
	return NULL;
}

static void flood_handler(struct mg_mqtt *c, const struct mg_mqtt_message *m,
                          void *ud)
{
	struct flood *f = ud;
	int seq;
	(void)c;
	while (!atomic_load(&f->release))
		th_sleep_ms(5);
	if (m->payload_len == FLOOD_LEN &&
	    sscanf((const char *)m->payload, "%8d", &seq) == 1 && seq >= 0 &&
	    seq < FLOOD_N && atomic_exchange(&f->got[seq], 1) == 0)
		atomic_fetch_add(&f->distinct, 1);
	atomic_fetch_add(&f->handled, 1);
}

static void flood_ack(struct mg_mqtt *c, int id, int result, void *ud)
{
	struct flood *f = ud;
	(void)c;
	(void)id;
	if (result != 0)
		atomic_fetch_add(&f->ack_bad, 1);
	atomic_fetch_add(&f->acked, 1);
}

static void *flood_publisher(void *arg)
{
	struct flood *f = arg;
	static char payload[FLOOD_LEN];
	memset(payload, 'x', sizeof(payload));
	for (int seq = 0; seq < FLOOD_N;) {
		char head[16];
		snprintf(head, sizeof(head), "%08d", seq);
		memcpy(payload, head, 8);
		int id = mg_mqtt_publish(f->pub, "fl/x", payload, FLOOD_LEN, 1, 0);
		if (id == MG_MQTT_ERR_BUFFER_FULL) {
			th_sleep_ms(1);
			continue;
		}
		if (id <= 0)
			break;
		seq++;
	}
	return NULL;
}

/* A topic handler stuck while 200,000 QoS 1 messages of 1 kB arrive for a
 * persistent session (QUEUE_SIZE 1000, other options at their defaults):
 * the process's resident memory stays within 64 MiB of its idle size (the
 * broker keeps what the client does not take), and every message is
 * handled once the handler runs again. Under a sanitizer (make asan, make
 * tsan) 20,000 messages and no memory bound: resident memory means
 * nothing there. */
TEST_T(a_stuck_handler_under_a_flood_keeps_memory_bounded, 240)
{
	struct rec rs, rp;
	struct flood *f = calloc(1, sizeof(*f));
	ASSERT(f != NULL);
	f->got = calloc(FLOOD_N, 1);
	ASSERT(f->got != NULL);
	int port;
	char url[64];
	th_quiet_broker_start(&port, "max_queued_messages 0\n");
	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", port);

	struct mg_mqtt *sub = rec_client(&rs, NULL);
	ASSERT_EQ(mg_mqtt_on_topic(sub, "fl/#", flood_handler, f), 0);
	start_persistent(sub, url, "eng-flood-sub",
	                 OPTS("MQTT_QUEUE_SIZE", "1000"));
	ASSERT_GT(mg_mqtt_subscribe(sub, "fl/#", 1), 0);
	ASSERT(WAIT_UNTIL(rec_subs_settled(sub, 1), 10000));

	f->pub = rec_client(&rp, NULL);
	ASSERT_EQ(mg_mqtt_on_publish(f->pub, flood_ack, f), 0);
	rec_start(f->pub, OPTS("MQTT_BROKER_URL", url, "MQTT_CLIENT_ID",
	                       "eng-flood-pub", "MQTT_MAX_INFLIGHT", "100",
	                       "MQTT_MAX_BUFFERED", "1000"));
	long idle = rss_kb();
	atomic_store(&f->peak_kb, idle);
	pthread_t sampler, publisher;
	ASSERT_EQ(pthread_create(&sampler, NULL, flood_sampler, f), 0);
	ASSERT_EQ(pthread_create(&publisher, NULL, flood_publisher, f), 0);
	/* The handler stays stuck until the broker has acknowledged every
	 * message of the flood. */
	if (!WAIT_UNTIL(atomic_load(&f->acked) >= FLOOD_N, 180000))
		th_fail(__FILE__, __LINE__, "%d of %d published messages acknowledged",
		        atomic_load(&f->acked), FLOOD_N);
	pthread_join(publisher, NULL);
	long stuck_peak = atomic_load(&f->peak_kb);
	atomic_store(&f->release, 1);
	if (!WAIT_UNTIL(atomic_load(&f->distinct) >= FLOOD_N, 180000))
		th_fail(__FILE__, __LINE__, "%d of %d messages handled (%d calls)",
		        atomic_load(&f->distinct), FLOOD_N, atomic_load(&f->handled));
	atomic_store(&f->stop, 1);
	pthread_join(sampler, NULL);
	long peak = atomic_load(&f->peak_kb);
	fprintf(stderr,
	        "    flood: %d messages; resident memory idle %ld kB, peak %ld kB "
	        "(%ld kB while the handler was stuck), +%ld MiB\n",
	        FLOOD_N, idle, peak, stuck_peak, (peak - idle) / 1024);
	ASSERT_EQ(atomic_load(&f->ack_bad), 0);
	if (!SANITIZED && peak - idle >= 64 * 1024)
		th_fail(__FILE__, __LINE__,
		        "resident memory grew by %ld MiB (idle %ld kB, peak %ld kB): "
		        "over the 64 MiB bound",
		        (peak - idle) / 1024, idle, peak);
	ASSERT_EQ(mg_mqtt_stop(f->pub), 0);
	rec_stop(sub, &rs);
	rec_free(&rp);
	free((void *)f->got);
	free(f);
}

/* ======================================================================
 * 4. The QoS 2 window against a broker that closes over it
 * ==================================================================== */

/* mosquitto 2.0 (max_queued_messages 0, its other limits at their
 * defaults) closes an MQTT 3.1.1 client that has more than 20 QoS 2
 * messages in flight. A client with MAX_INFLIGHT 100 is closed, reconnects
 * and sends its window again: the window must shrink until the broker
 * takes it, so that every message is acknowledged. When the status shows
 * the window in force ("inflight_window"), it must have been below
 * MAX_INFLIGHT at some point. */
static long g_window_min = -1;

static int all_acked_watching_window(struct mg_mqtt *c, struct rec *r, int n)
{
	long w = status_number(c, "inflight_window");
	if (w >= 0 && (g_window_min < 0 || w < g_window_min))
		g_window_min = w;
	return REC(r, npub) >= n;
}

TEST_T(qos2_window_shrinks_when_the_broker_keeps_closing, 120)
{
	enum { N = 2000 };
	struct rec r;
	int port;
	char url[64];
	th_quiet_broker_start(&port, "max_queued_messages 0\n");
	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", port);
	struct mg_mqtt *c = rec_started(
	    &r, OPTS("MQTT_BROKER_URL", url, "MQTT_CLIENT_ID", "eng-window",
	             "MQTT_PROTOCOL_VERSION", "3.1.1", "MQTT_MAX_INFLIGHT", "100",
	             "MQTT_RECONNECT_MAX", "2"));
	for (int i = 0; i < N; i++) {
		char m[16];
		snprintf(m, sizeof(m), "w%d", i);
		ASSERT_GT(mg_mqtt_publish(c, "win/x", m, strlen(m), 2, 0), 0);
	}
	if (!WAIT_UNTIL(all_acked_watching_window(c, &r, N), 60000))
		th_fail(__FILE__, __LINE__,
		        "%d of %d QoS 2 publishes acknowledged; %d connects, %d "
		        "disconnects",
		        REC(&r, npub), N, REC(&r, connects), REC(&r, disconnects));
	REC_ASSERT_PUBS_OK(&r);
	fprintf(stderr, "    window: %d acknowledged, %d disconnects, smallest "
	                "inflight_window %ld (-1: not in the status)\n",
	        N, REC(&r, disconnects), g_window_min);
	if (g_window_min >= 0 && REC(&r, disconnects) > 0)
		ASSERT_LT(g_window_min, 100);
	rec_stop(c, &r);
}

/* ======================================================================
 * 5. Poison on a persistent session: out of paho's store, session kept
 * ==================================================================== */

/* mosquitto with max_packet_size closes a 3.1.1 connection over a larger
 * packet, without a word; on a persistent session paho keeps the message
 * in its store and sends it again at every connect. After two such closes
 * with it alone in flight it is failed with MG_MQTT_ERR_POISON, taken out
 * of paho's store (a new paho client takes the rest of the store back
 * under the same packet ids), and the session goes on: a message the
 * broker queued for the client meanwhile still arrives, and later
 * publishes are delivered. */
TEST_T(a_poison_message_on_a_persistent_session_is_failed_and_the_session_kept,
       90)
{
	struct th_broker b;
	struct th_sub sub;
	struct rec r;
	th_broker_sub_start(&b, "listener {PORT} 127.0.0.1\nallow_anonymous true\n"
	                    "max_packet_size 1000\n", &sub,
	                    "pz/#", 0, "-q 1");
	struct mg_mqtt *c = rec_client(&r, NULL);
	const char *extra[] = {"MQTT_RECONNECT_MIN", "1", "MQTT_SUBSCRIBE",
	                       "pz/in:1", NULL};
	start_persistent(c, b.url, "eng-poison", extra);
	ASSERT(WAIT_UNTIL(rec_subs_settled(c, 1), 10000));
	char big[2000];
	memset(big, 'x', sizeof(big));
	int id = mg_mqtt_publish(c, "pz/big", big, sizeof(big), 1, 0);
	ASSERT_GT(id, 0);
	/* While the client is refused, the broker queues a message for it. */
	ASSERT(WAIT_UNTIL(REC(&r, disconnects) >= 1, 10000));
	th_pub(&b, "pz/in", "queued", 1, 0, NULL);
	ASSERT(WAIT_UNTIL(rec_find_pub(&r, id) >= 0, 30000));
	int k = rec_find_pub(&r, id); /* entries are written once */
	pthread_mutex_lock(&r.mu);
	int result = r.pub[k].result;
	pthread_mutex_unlock(&r.mu);
	ASSERT_EQ(result, MG_MQTT_ERR_POISON);
	ASSERT(WAIT_UNTIL(mg_mqtt_is_connected(c), 10000));
	ASSERT(WAIT_UNTIL(rec_find(&r, "pz/in", "queued") >= 0, 10000));
	int id2 = mg_mqtt_publish(c, "pz/after", "ok", 2, 1, 0);
	ASSERT_GT(id2, 0);
	ASSERT(WAIT_UNTIL(th_count_lines(sub.out, "pz/after ok") == 1, 10000));
	ASSERT_EQ(th_count_lines(sub.out, "pz/big"), 0);
	ASSERT_EQ(status_number(c, "paho_renewals"), 1);
	ASSERT_EQ(status_number(c, "poisoned"), 1);
	ASSERT(rec_log_has(&r, "not sent again"));
	ASSERT_EQ(REC(&r, last_session), 1);
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	th_sub_stop(&sub);
	rec_free(&r);
}


/* ======================================================================
 * 6. A lost acknowledgement on a connection that stays alive
 * ==================================================================== */

/* MQTT sends a message again only after a reconnect, and paho resends what
 * it holds only at a connect: a PUBACK lost on a connection that stays up
 * (a proxy, a broker bug) would keep the message in flight for ever, and
 * with a small window block every later one. After CWM_ACK_TIMEOUT_MS
 * (15 s) the client makes the connection again; the message is then
 * acknowledged, and so are the ones behind it. */
TEST_T(a_lost_puback_on_a_live_connection_is_recovered_by_a_reconnect, 90)
{
	struct th_broker b;
	struct rec r;
	th_broker_start(&b, NULL);
	struct mqp *p = mqp_start(b.port);
	struct mg_mqtt *c = rec_client(&r, NULL);
	const char *extra[] = {"MQTT_MAX_INFLIGHT", "1", NULL};
	start_persistent(c, mqp_url(p), "eng-ack-timeout", extra);
	int rule = mqp_add(p, &(struct mqp_rule){.type = MQP_PUBACK,
	                                         .dir = MQP_S2C,
	                                         .times = 1,
	                                         .action = MQP_DROP});
	int ids[5];
	for (int i = 0; i < 5; i++)
		ASSERT_GT(ids[i] = mg_mqtt_publish(c, "at/x", "x", 1, 1, 0), 0);
	ASSERT(WAIT_UNTIL(mqp_fired(p, rule) == 1, 10000));
	for (int i = 0; i < 5; i++)
		ASSERT(WAIT_UNTIL(rec_find_pub(&r, ids[i]) >= 0, 45000));
	REC_ASSERT_PUBS_OK(&r);
	ASSERT_EQ(status_number(c, "ack_timeouts"), 1);
	ASSERT(rec_log_has(&r, "no acknowledgement for message"));
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	mqp_stop(p);
	rec_free(&r);
}
