/*
 * A recorder for every handler of a client: integration tests register
 * rec_attach() and then wait for what they expect to arrive.
 */
#ifndef CWM_TEST_REC_H
#define CWM_TEST_REC_H

#include "civetweb_mqtt.h"
#include "util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define REC_MAX 20000

struct rec_msg {
	char topic[256];
	char *payload; /* NUL-terminated copy */
	size_t len;
	int qos, retain, dup;
	int handler; /* which handler saw it: 0 catch-all, else rec_on_topic's tag */
	char props[512]; /* "k=v;k=v" user properties, then |rt=|cd=|exp=|ct= */
};

struct rec_ack {
	int id, result, count;
	int codes[8];
};

struct rec {
	pthread_mutex_t mu;
	int connects, connect_fails, disconnects, stopped_disconnects;
	int last_error, last_reason, last_session;
	char last_conn_msg[512], last_disc_msg[256], last_broker[256];
	int last_disc_reason;
	struct rec_msg *msgs;
	int nmsgs;
	struct rec_ack *pub, sub[64], unsub[64];
	int npub, nsub, nunsub;
	char *log; /* every log line, '\n'-joined */
	size_t loglen;
	_Atomic int slow_ms; /* message handlers sleep this long; any thread sets it */
	int order_ok; /* 0 if a handler ran on a thread other than the first */
	pthread_t dispatch;
	int have_dispatch;
};

struct rec_tag {
	struct rec *r;
	int tag;
};

static inline void rec_thread_check(struct rec *r)
{
	pthread_t self = pthread_self();
	if (!r->have_dispatch) {
		r->dispatch = self;
		r->have_dispatch = 1;
	} else if (!pthread_equal(r->dispatch, self)) {
		r->order_ok = 0;
	}
}

static inline void rec_record_msg(struct rec *r, const struct mg_mqtt_message *m,
                                  int tag)
{
	if (r->slow_ms > 0)
		th_sleep_ms(r->slow_ms);
	pthread_mutex_lock(&r->mu);
	rec_thread_check(r);
	if (r->nmsgs < REC_MAX) {
		struct rec_msg *x = &r->msgs[r->nmsgs++];
		snprintf(x->topic, sizeof(x->topic), "%s", m->topic);
		x->payload = malloc(m->payload_len + 1);
		memcpy(x->payload, m->payload, m->payload_len);
		x->payload[m->payload_len] = '\0';
		x->len = m->payload_len;
		x->qos = m->qos;
		x->retain = m->retain;
		x->dup = m->dup;
		x->handler = tag;
		size_t o = 0;
		const struct mg_mqtt_props *p = m->props;
		for (size_t i = 0; i < p->user_count && o < sizeof(x->props); i++)
			o += (size_t)snprintf(x->props + o, sizeof(x->props) - o, "%s=%s;",
			                      p->user[i].name, p->user[i].value);
		if (o < sizeof(x->props))
			snprintf(x->props + o, sizeof(x->props) - o,
			         "|rt=%s|cd=%.*s|exp=%u|ct=%s|utf8=%d",
			         p->response_topic ? p->response_topic : "",
			         (int)p->correlation_len,
			         p->correlation_data ? (const char *)p->correlation_data
			                             : "",
			         (unsigned)p->message_expiry,
			         p->content_type ? p->content_type : "", p->payload_utf8);
	}
	pthread_mutex_unlock(&r->mu);
}

static inline void rec_on_message(struct mg_mqtt *c,
                                  const struct mg_mqtt_message *m, void *ud)
{
	(void)c;
	rec_record_msg(ud, m, 0);
}

static inline void rec_on_topic_cb(struct mg_mqtt *c,
                                   const struct mg_mqtt_message *m, void *ud)
{
	struct rec_tag *t = ud;
	(void)c;
	rec_record_msg(t->r, m, t->tag);
}

static inline void rec_on_connect(struct mg_mqtt *c,
                                  const struct mg_mqtt_connect_info *i, void *ud)
{
	struct rec *r = ud;
	(void)c;
	pthread_mutex_lock(&r->mu);
	rec_thread_check(r);
	if (i->connected)
		r->connects++;
	else
		r->connect_fails++;
	r->last_error = i->error;
	r->last_reason = i->reason_code;
	r->last_session = i->session_present;
	snprintf(r->last_conn_msg, sizeof(r->last_conn_msg), "%s", i->message);
	snprintf(r->last_broker, sizeof(r->last_broker), "%s", i->broker);
	pthread_mutex_unlock(&r->mu);
}

static inline void rec_on_disconnect(struct mg_mqtt *c,
                                     const struct mg_mqtt_disconnect_info *i,
                                     void *ud)
{
	struct rec *r = ud;
	(void)c;
	pthread_mutex_lock(&r->mu);
	rec_thread_check(r);
	r->disconnects++;
	r->stopped_disconnects += i->stopped;
	r->last_disc_reason = i->reason_code;
	snprintf(r->last_disc_msg, sizeof(r->last_disc_msg), "%s", i->message);
	pthread_mutex_unlock(&r->mu);
}

static inline void rec_on_publish(struct mg_mqtt *c, int id, int result,
                                  void *ud)
{
	struct rec *r = ud;
	(void)c;
	pthread_mutex_lock(&r->mu);
	rec_thread_check(r);
	if (r->npub < REC_MAX)
		r->pub[r->npub++] = (struct rec_ack){id, result, 0, {0}};
	pthread_mutex_unlock(&r->mu);
}

static inline void rec_ack(struct rec *r, struct rec_ack *v, int *n, int max,
                           int id, int result, const int *codes, int count)
{
	pthread_mutex_lock(&r->mu);
	rec_thread_check(r);
	if (*n < max) {
		struct rec_ack *a = &v[(*n)++];
		a->id = id;
		a->result = result;
		a->count = count;
		for (int i = 0; i < count && i < 8; i++)
			a->codes[i] = codes[i];
	}
	pthread_mutex_unlock(&r->mu);
}

static inline void rec_on_subscribe(struct mg_mqtt *c, int id, int result,
                                    const int *codes, int count, void *ud)
{
	struct rec *r = ud;
	(void)c;
	rec_ack(r, r->sub, &r->nsub, 64, id, result, codes, count);
}

static inline void rec_on_unsubscribe(struct mg_mqtt *c, int id, int result,
                                      const int *codes, int count, void *ud)
{
	struct rec *r = ud;
	(void)c;
	rec_ack(r, r->unsub, &r->nunsub, 64, id, result, codes, count);
}

static inline void rec_on_log(struct mg_mqtt *c, int level, const char *text,
                              void *ud)
{
	struct rec *r = ud;
	(void)c;
	(void)level;
	if (getenv("REC_LOG") != NULL)
		fprintf(stderr, "      [%lld] %s\n", (long long)th_now_ms() % 100000, text);
	pthread_mutex_lock(&r->mu);
	size_t n = strlen(text);
	char *p = realloc(r->log, r->loglen + n + 2);
	if (p != NULL) {
		r->log = p;
		memcpy(p + r->loglen, text, n);
		p[r->loglen + n] = '\n';
		p[r->loglen + n + 1] = '\0';
		r->loglen += n + 1;
	}
	pthread_mutex_unlock(&r->mu);
}

static inline void rec_init(struct rec *r)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->mu, NULL);
	r->msgs = calloc(REC_MAX, sizeof(*r->msgs));
	r->pub = calloc(REC_MAX, sizeof(*r->pub));
	r->order_ok = 1;
}

static inline void rec_free(struct rec *r)
{
	for (int i = 0; i < r->nmsgs; i++)
		free(r->msgs[i].payload);
	free(r->msgs);
	free(r->pub);
	free(r->log);
	pthread_mutex_destroy(&r->mu);
}

/* Registers every handler of c with r (the catch-all included). */
static inline void rec_attach(struct mg_mqtt *c, struct rec *r)
{
	ASSERT_EQ(mg_mqtt_on_message(c, rec_on_message, r), 0);
	ASSERT_EQ(mg_mqtt_on_connect(c, rec_on_connect, r), 0);
	ASSERT_EQ(mg_mqtt_on_disconnect(c, rec_on_disconnect, r), 0);
	ASSERT_EQ(mg_mqtt_on_publish(c, rec_on_publish, r), 0);
	ASSERT_EQ(mg_mqtt_on_subscribe(c, rec_on_subscribe, r), 0);
	ASSERT_EQ(mg_mqtt_on_unsubscribe(c, rec_on_unsubscribe, r), 0);
	ASSERT_EQ(mg_mqtt_on_log(c, rec_on_log, r), 0);
}

/* A client (prefix NULL: "MQTT") with every handler recorded in r;
 * register more handlers (they replace r's) before starting it. */
static inline struct mg_mqtt *rec_client(struct rec *r, const char *prefix)
{
	struct mg_mqtt *c = mg_mqtt_create(prefix);
	ASSERT(c != NULL);
	rec_init(r);
	rec_attach(c, r);
	return c;
}

/* Stops c (mg_mqtt_stop must return 0), then frees r. */
static inline void rec_stop(struct mg_mqtt *c, struct rec *r)
{
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	rec_free(r);
}

/* Fails the test when an acknowledgement r recorded is not a success. */
#define REC_ASSERT_PUBS_OK(r) rec_assert_pubs_ok((r), __FILE__, __LINE__)
static inline void rec_assert_pubs_ok(struct rec *r, const char *file, int line)
{
	pthread_mutex_lock(&r->mu);
	for (int i = 0; i < r->npub; i++)
		if (r->pub[i].result != 0)
			th_fail(file, line, "publish %d reported %d (%s)", r->pub[i].id,
			        r->pub[i].result, mg_mqtt_strerror(r->pub[i].result));
	pthread_mutex_unlock(&r->mu);
}

/* Locked reads for WAIT_UNTIL. */
static inline int rec_get(struct rec *r, const int *field)
{
	pthread_mutex_lock(&r->mu);
	int v = *field;
	pthread_mutex_unlock(&r->mu);
	return v;
}
#define REC(r, field) rec_get((r), &(r)->field)

static inline int rec_log_has(struct rec *r, const char *needle)
{
	pthread_mutex_lock(&r->mu);
	int v = r->log != NULL && strstr(r->log, needle) != NULL;
	pthread_mutex_unlock(&r->mu);
	return v;
}

/* Index of the first message on topic with payload (NULL: any), or -1. */
static inline int rec_find(struct rec *r, const char *topic, const char *payload)
{
	int found = -1;
	pthread_mutex_lock(&r->mu);
	for (int i = 0; i < r->nmsgs && found < 0; i++)
		if (strcmp(r->msgs[i].topic, topic) == 0 &&
		    (payload == NULL || strcmp(r->msgs[i].payload, payload) == 0))
			found = i;
	pthread_mutex_unlock(&r->mu);
	return found;
}

/* The acknowledgement of id among the n of v (r->pub, r->sub or r->unsub
 * with its count): its index, or -1; a copy into *out when found and out
 * is not NULL. */
static inline int rec_find_ack(struct rec *r, const struct rec_ack *v,
                               const int *n, int id, struct rec_ack *out)
{
	int found = -1;
	pthread_mutex_lock(&r->mu);
	for (int i = 0; i < *n && found < 0; i++)
		if (v[i].id == id) {
			found = i;
			if (out != NULL)
				*out = v[i];
		}
	pthread_mutex_unlock(&r->mu);
	return found;
}

/* mosquitto_pub sends payload to topic (QoS 1) through broker b, and the
 * recorder r has it within ms (the test fails at the caller's line). */
#define REC_PUB_ARRIVES(b, r, topic, payload, ms)                              \
	do {                                                                       \
		th_pub((b), (topic), (payload), 1, 0, NULL);                           \
		ASSERT(WAIT_UNTIL(rec_find((r), (topic), (payload)) >= 0, (ms)));      \
	} while (0)

/* r has the message within ms, received with that QoS and retain flag. */
#define REC_EXPECT_MSG(r, topic, payload, qos_, retain_, ms)                   \
	do {                                                                       \
		ASSERT(WAIT_UNTIL(rec_find((r), (topic), (payload)) >= 0, (ms)));      \
		int i_ = rec_find((r), (topic), (payload));                            \
		ASSERT_EQ((r)->msgs[i_].qos, (qos_));                                  \
		ASSERT_EQ((r)->msgs[i_].retain, (retain_));                            \
	} while (0)

/* Index of the publish ack for id, or -1. */
static inline int rec_find_pub(struct rec *r, int id)
{
	return rec_find_ack(r, r->pub, &r->npub, id, NULL);
}

/* Index of the SUBACK of subscribe id, or -1; a copy into *out (or NULL). */
static inline int rec_find_sub(struct rec *r, int id, struct rec_ack *out)
{
	return rec_find_ack(r, r->sub, &r->nsub, id, out);
}

/* Index of the UNSUBACK of unsubscribe id, or -1; a copy into *out. */
static inline int rec_find_unsub(struct rec *r, int id, struct rec_ack *out)
{
	return rec_find_ack(r, r->unsub, &r->nunsub, id, out);
}

/* 1 when c has n subscriptions, each acknowledged by the broker. */
static inline int rec_subs_settled(struct mg_mqtt *c, int n)
{
	struct mg_mqtt_subscription *subs = NULL;
	int k = mg_mqtt_subscriptions(c, &subs), ok = k == n;
	for (int i = 0; ok && i < k; i++)
		ok = subs[i].granted >= 0;
	free(subs);
	return ok;
}

/* c's subscriptions as "filter:qos" separated by spaces, into buf. */
static inline const char *rec_subs_text(struct mg_mqtt *c, char *buf,
                                        size_t len)
{
	struct mg_mqtt_subscription *subs = NULL;
	int n = mg_mqtt_subscriptions(c, &subs);
	size_t o = 0;
	buf[0] = '\0';
	for (int i = 0; i < n && o < len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%s%s:%d", i > 0 ? " " : "",
		                      subs[i].filter, subs[i].qos);
	free(subs);
	return buf;
}

/* Starts c on ctx (may be NULL) with options; fails the test with the
 * error text otherwise. */
static inline void rec_start_on(struct mg_mqtt *c, struct mg_context *ctx,
                                const char **opts)
{
	char err[1024];
	int rc = mg_mqtt_start(c, ctx, opts, err, sizeof(err));
	if (rc != 0)
		th_fail(__FILE__, __LINE__, "mg_mqtt_start: %d %s", rc, err);
}

static inline void rec_start(struct mg_mqtt *c, const char **opts)
{
	rec_start_on(c, NULL, opts);
}

/* The client's status JSON, malloc()ed. */
static inline char *rec_status(struct mg_mqtt *c)
{
	int n = mg_mqtt_status(c, NULL, 0);
	ASSERT_GT(n, 0);
	char *buf = malloc((size_t)n + 1);
	ASSERT(buf != NULL);
	ASSERT_EQ(mg_mqtt_status(c, buf, (size_t)n + 1), n);
	return buf;
}

/* 1 when the client's status JSON contains needle. */
static inline int rec_status_has(struct mg_mqtt *c, const char *needle)
{
	char *s = rec_status(c);
	int found = strstr(s, needle) != NULL;
	free(s);
	return found;
}

/* Publishes n messages to topic, "<prefix>0" ... "<prefix><n-1>", at qos;
 * their ids (each > 0, or the test fails) into ids unless it is NULL. */
static inline void rec_publish_seq(struct mg_mqtt *c, const char *topic,
                                   const char *prefix, int n, int qos, int *ids)
{
	for (int i = 0; i < n; i++) {
		char p[64];
		snprintf(p, sizeof(p), "%s%d", prefix, i);
		int id = mg_mqtt_publish(c, topic, p, strlen(p), qos, 0);
		ASSERT_GT(id, 0);
		if (ids != NULL)
			ids[i] = id;
	}
}

/* A client of prefix MQTT with r attached, started with opts. */
static inline struct mg_mqtt *rec_started(struct rec *r, const char **opts)
{
	struct mg_mqtt *c = rec_client(r, NULL);
	rec_start(c, opts);
	return c;
}

/* A client started before its broker: b gets conf and its ports but
 * nothing listens yet (th_broker_later: th_broker_restart starts it). The
 * client, of prefix MQTT with r attached, starts against it with
 * MQTT_CONNECT_ASYNC true, reconnect delays of 1 s, and the options of
 * more (NULL-ended, or NULL). */
static inline struct mg_mqtt *rec_started_early(struct rec *r,
                                                struct th_broker *b,
                                                const char *conf,
                                                const char **more)
{
	const char *opts[64] = {"MQTT_BROKER_URL",    b->url, "MQTT_CONNECT_ASYNC",
	                        "true",               "MQTT_RECONNECT_MIN", "1",
	                        "MQTT_RECONNECT_MAX", "1"};
	int n = 8;
	th_broker_later(b, conf);
	for (int i = 0; more != NULL && more[i] != NULL && n < 62; i++)
		opts[n++] = more[i];
	return rec_started(r, opts);
}

/* A client of prefix MQTT with r attached, started against broker b
 * (MQTT_BROKER_URL its URL, nothing else set). */
static inline struct mg_mqtt *rec_connected(struct rec *r,
                                            const struct th_broker *b)
{
	return rec_started(r, OPTS("MQTT_BROKER_URL", b->url));
}

/* A new anonymous broker (th_broker_start) and a client connected to it
 * as rec_connected. */
static inline struct mg_mqtt *rec_with_broker(struct rec *r,
                                              struct th_broker *b)
{
	th_broker_start(b, NULL);
	return rec_connected(r, b);
}

#endif
