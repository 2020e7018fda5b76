/*
 * The client against a real mosquitto: connect, subscribe, publish, QoS,
 * retain, handlers and their order, acknowledgements, unsubscribe_all,
 * status, and many threads publishing at once.
 */
#include "rec.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

TEST(anonymous_connect_calls_connect_handler_and_reports_connected)
{
	struct th_broker b;
	struct rec r;
	struct mg_mqtt *c = rec_with_broker(&r, &b);
	ASSERT(mg_mqtt_is_connected(c));
	ASSERT(WAIT_UNTIL(REC(&r, connects) == 1, 5000));
	ASSERT_EQ(REC(&r, connect_fails), 0);
	ASSERT_STREQ(r.last_broker, b.url);
	ASSERT_EQ(mg_mqtt_stop(c), 0);
	ASSERT_EQ(r.stopped_disconnects, 1);
	rec_free(&r);
}

TEST(publish_reaches_mosquitto_sub_at_each_qos_with_acks)
{
	struct th_broker b;
	struct th_sub s;
	struct rec r;
	th_broker_sub_start(&b, NULL, &s, "cwm/pub/#", 3, "-q 2");
	struct mg_mqtt *c = rec_connected(&r, &b);
	int id0 = mg_mqtt_publish(c, "cwm/pub/0", "zero", 4, 0, 0);
	int id1 = mg_mqtt_publish(c, "cwm/pub/1", "one", 3, 1, 0);
	int id2 = mg_mqtt_publish(c, "cwm/pub/2", "two", 3, 2, 0);
	ASSERT_GT(id0, 0);
	ASSERT_GT(id1, id0);
	ASSERT_GT(id2, id1);
	ASSERT_EQ(th_sub_wait(&s, 10000), 0);
	int n;
	char *got = th_sub_messages(&s, &n);
	ASSERT_EQ(n, 3);
	ASSERT_CONTAINS_ALL(got, "cwm/pub/0 zero", "cwm/pub/1 one",
	                    "cwm/pub/2 two");
	free(got);
	ASSERT(WAIT_UNTIL(REC(&r, npub) == 3, 5000));
	for (int id = id0; id <= id2; id++) {
		int i = rec_find_pub(&r, id);
		ASSERT_GE(i, 0);
		ASSERT_EQ(r.pub[i].result, 0);
	}
	mg_mqtt_stop(c);
	rec_free(&r);
}

TEST(subscribe_receives_mosquitto_pub_messages_with_qos_and_retain)
{
	struct th_broker b;
	struct rec r;
	struct mg_mqtt *c = rec_with_broker(&r, &b);
	th_pub(&b, "cwm/ret/a", "kept", 1, 1, NULL);
	int sid = mg_mqtt_subscribe(c, "cwm/ret/#", 2);
	ASSERT_GT(sid, 0);
	ASSERT(WAIT_UNTIL(REC(&r, nsub) == 1, 5000));
	ASSERT_EQ(r.sub[0].id, sid);
	ASSERT_EQ(r.sub[0].result, 0);
	ASSERT_EQ(r.sub[0].count, 1);
	ASSERT_EQ(r.sub[0].codes[0], 2);
	REC_EXPECT_MSG(&r, "cwm/ret/a", "kept", 1, 1, 5000);
	th_pub(&b, "cwm/ret/b", "live", 2, 0, NULL);
	REC_EXPECT_MSG(&r, "cwm/ret/b", "live", 2, 0, 5000);
	mg_mqtt_stop(c);
	rec_free(&r);
}

TEST(every_matching_topic_handler_runs_in_order_and_catch_all_only_when_none)
{
	struct th_broker b;
	struct rec r;
	struct rec_tag t1, t2, t3;
	th_broker_start(&b, NULL);
	struct mg_mqtt *c = rec_client(&r, NULL);
	t1 = (struct rec_tag){&r, 1};
	t2 = (struct rec_tag){&r, 2};
	t3 = (struct rec_tag){&r, 3};
	ASSERT_EQ(mg_mqtt_on_topic(c, "home/+/temp", rec_on_topic_cb, &t1), 0);
	ASSERT_EQ(mg_mqtt_on_topic(c, "home/#", rec_on_topic_cb, &t2), 0);
	ASSERT_EQ(mg_mqtt_on_topic(c, "home/kitchen/temp", rec_on_topic_cb, &t3), 0);
	const char *opts[] = {"MQTT_BROKER_URL", b.url, "MQTT_SUBSCRIBE", "#", NULL};
	rec_start(c, opts);
	ASSERT(WAIT_UNTIL(mg_mqtt_is_connected(c), 5000));
	/* The SUBSCRIBE list is renewed on connect; wait for it to settle. */
	ASSERT(WAIT_UNTIL(rec_subs_settled(c, 1), 5000));
	th_pub(&b, "home/kitchen/temp", "21", 0, 0, NULL);
	th_pub(&b, "office/desk", "x", 0, 0, NULL);
	th_pub(&b, "home/garden", "y", 0, 0, NULL);
	ASSERT(WAIT_UNTIL(REC(&r, nmsgs) == 5, 5000));
	th_sleep_ms(200);
	ASSERT_EQ(REC(&r, nmsgs), 5);
	/* home/kitchen/temp: handlers 1, 2, 3 in registration order. */
	ASSERT_STREQ(r.msgs[0].topic, "home/kitchen/temp");
	ASSERT_EQ(r.msgs[0].handler, 1);
	ASSERT_EQ(r.msgs[1].handler, 2);
	ASSERT_EQ(r.msgs[2].handler, 3);
	/* office/desk: no topic handler, so the catch-all. */
	ASSERT_STREQ(r.msgs[3].topic, "office/desk");
	ASSERT_EQ(r.msgs[3].handler, 0);
	/* home/garden: only home/#; the catch-all does not run. */
	ASSERT_STREQ(r.msgs[4].topic, "home/garden");
	ASSERT_EQ(r.msgs[4].handler, 2);
	ASSERT(r.order_ok);
	mg_mqtt_stop(c);
	rec_free(&r);
}

/* An inline handler: records the topic, the payload and the name of the
 * thread it runs on. */
/* n read under mu: how many entries a handler has added so far. */
static int locked_count(pthread_mutex_t *mu, const int *n)
{
	pthread_mutex_lock(mu);
	int v = *n;
	pthread_mutex_unlock(mu);
	return v;
}

struct inl {
	pthread_mutex_t mu;
	char topic[8][64], thread[8][32], room[8][16];
	int n;
};

static void inl_cb(struct mg_mqtt *c, const struct mg_mqtt_message *m,
                   void *ud)
{
	struct inl *x = ud;
	(void)c;
	pthread_mutex_lock(&x->mu);
	if (x->n < 8) {
		snprintf(x->topic[x->n], sizeof(x->topic[0]), "%.*s",
		         (int)m->topic_len, m->topic);
		pthread_getname_np(pthread_self(), x->thread[x->n],
		                   sizeof(x->thread[0]));
		if (mg_mqtt_param(m, "room", x->room[x->n], sizeof(x->room[0])) < 0)
			x->room[x->n][0] = '\0';
		x->n++;
	}
	pthread_mutex_unlock(&x->mu);
}

/* Inline handlers run on paho's thread, not mqtt-dispatch, with named
 * levels; with no queued handler nothing is queued (queue_depth and
 * received stay 0, handled_inline counts); with a queued handler on the
 * same messages both run and the catch-all does not. */
TEST(inline_handlers_run_on_paho_thread_and_queue_nothing_alone)
{
	struct th_broker b;
	struct rec r;
	struct inl x;
	memset(&x, 0, sizeof(x));
	pthread_mutex_init(&x.mu, NULL);
	th_broker_start(&b, NULL);
	struct mg_mqtt *c = rec_client(&r, NULL);
	ASSERT_EQ(mg_mqtt_on_topic_inline(c, "home/{room}/temp", inl_cb, &x), 0);
	ASSERT_EQ(mg_mqtt_on_topic_inline(c, NULL, inl_cb, &x),
	          MG_MQTT_ERR_INVALID);
	ASSERT_EQ(mg_mqtt_on_topic_inline(c, "a/#/b", inl_cb, &x),
	          MG_MQTT_ERR_FILTER);
	const char *opts[] = {"MQTT_BROKER_URL", b.url, "MQTT_SUBSCRIBE",
	                      "home/#", NULL};
	rec_start(c, opts);
	ASSERT(WAIT_UNTIL(rec_subs_settled(c, 1), 5000));
	ASSERT_EQ(mg_mqtt_on_topic_inline(c, "x", inl_cb, &x),
	          MG_MQTT_ERR_STARTED);
	th_pub(&b, "home/kitchen/temp", "21", 1, 0, NULL);
	th_pub(&b, "home/hall/temp", "19", 0, 0, NULL);
	ASSERT(WAIT_UNTIL(locked_count(&x.mu, &x.n) == 2, 5000));
	ASSERT_STREQ(x.topic[0], "home/kitchen/temp");
	ASSERT_STREQ(x.room[0], "kitchen");
	ASSERT_STREQ(x.room[1], "hall");
	ASSERT(strcmp(x.thread[0], "mqtt-dispatch") != 0);
	ASSERT_STREQ(x.thread[0], "MQTTClient_run"); /* paho's receive thread */
	/* home/garden matched no inline handler: the catch-all gets it. */
	th_pub(&b, "home/garden", "y", 0, 0, NULL);
	ASSERT(WAIT_UNTIL(REC(&r, nmsgs) == 1, 5000));
	ASSERT_STREQ(r.msgs[0].topic, "home/garden");
	char buf[4096];
	ASSERT_GT(mg_mqtt_status(c, buf, sizeof(buf)), 0);
	ASSERT_CONTAINS(buf, "\"handled_inline\":2");
	ASSERT_CONTAINS(buf, "\"received\":1");
	mg_mqtt_stop(c);
	rec_free(&r);

	/* With a queued handler too: both run, the catch-all does not. */
	struct rec r2;
	struct rec_tag t1;
	x.n = 0;
	c = rec_client(&r2, NULL);
	t1 = (struct rec_tag){&r2, 1};
	ASSERT_EQ(mg_mqtt_on_topic_inline(c, "home/+/temp", inl_cb, &x), 0);
	ASSERT_EQ(mg_mqtt_on_topic(c, "home/#", rec_on_topic_cb, &t1), 0);
	rec_start(c, opts);
	ASSERT(WAIT_UNTIL(rec_subs_settled(c, 1), 5000));
	th_pub(&b, "home/kitchen/temp", "21", 0, 0, NULL);
	ASSERT(WAIT_UNTIL(locked_count(&x.mu, &x.n) == 1 && REC(&r2, nmsgs) == 1,
	                  5000));
	th_sleep_ms(200);
	ASSERT_EQ(REC(&r2, nmsgs), 1);
	ASSERT_EQ(r2.msgs[0].handler, 1);
	mg_mqtt_stop(c);
	rec_free(&r2);
	pthread_mutex_destroy(&x.mu);
}

/* Records "<room>|<sensor>" as each named-level handler reads them. */
struct named {
	pthread_mutex_t mu;
	char got[8][128];
	int n;
};

static void named_cb(struct mg_mqtt *c, const struct mg_mqtt_message *m,
                     void *ud)
{
	struct named *x = ud;
	char room[32], sensor[32];
	int lr = mg_mqtt_param(m, "room", room, sizeof(room));
	int ls = mg_mqtt_param(m, "sensor", sensor, sizeof(sensor));
	(void)c;
	pthread_mutex_lock(&x->mu);
	if (x->n < 8)
		snprintf(x->got[x->n++], sizeof(x->got[0]), "%s=%d:%s|%d:%s", m->topic,
		         lr, lr >= 0 ? room : "-", ls, ls >= 0 ? sensor : "-");
	pthread_mutex_unlock(&x->mu);
}

TEST(named_levels_subscribe_as_plus_and_handlers_read_them_by_name)
{
	struct th_broker b;
	struct rec r;
	struct named a = {PTHREAD_MUTEX_INITIALIZER, {{0}}, 0};
	struct named h = {PTHREAD_MUTEX_INITIALIZER, {{0}}, 0};
	th_broker_start(&b, NULL);
	struct mg_mqtt *c = rec_client(&r, NULL);
	ASSERT_EQ(mg_mqtt_on_topic(c, "home/{room}/{sensor}", named_cb, &a), 0);
	ASSERT_EQ(mg_mqtt_on_topic(c, "home/{room}/#", named_cb, &h), 0);
	/* The SUBSCRIBE option takes named levels too. */
	const char *opts[] = {"MQTT_BROKER_URL", b.url, "MQTT_SUBSCRIBE",
	                      "home/{room}/{sensor}:1", NULL};
	rec_start(c, opts);
	ASSERT(WAIT_UNTIL(rec_subs_settled(c, 1), 5000));
	ASSERT_GT(mg_mqtt_subscribe(c, "office/{desk}/lamp", 1), 0);
	ASSERT(WAIT_UNTIL(rec_subs_settled(c, 2), 5000));
	char t[128];
	ASSERT_STREQ(rec_subs_text(c, t, sizeof(t)), "home/+/+:1 office/+/lamp:1");

	th_pub(&b, "home/kitchen/temperature", "21", 1, 0, NULL);
	th_pub(&b, "home/hall/door", "open", 1, 0, NULL);
	th_pub(&b, "office/d7/lamp", "on", 1, 0, NULL);
	ASSERT(WAIT_UNTIL(locked_count(&a.mu, &a.n) == 2 &&
	                      locked_count(&h.mu, &h.n) == 2 && REC(&r, nmsgs) == 1,
	                  5000));
	ASSERT_STREQ(a.got[0], "home/kitchen/temperature=7:kitchen|11:temperature");
	ASSERT_STREQ(a.got[1], "home/hall/door=4:hall|4:door");
	/* Each handler sees the names of its own filter only. */
	ASSERT_STREQ(h.got[0], "home/kitchen/temperature=7:kitchen|-25:-");
	ASSERT_STREQ(h.got[1], "home/hall/door=4:hall|-25:-");
	/* office/d7/lamp has no topic handler: the catch-all got it. */
	ASSERT_EQ(rec_find(&r, "office/d7/lamp", "on"), 0);

	/* Unsubscribing by the named filter finds the '+' one. */
	ASSERT_GT(mg_mqtt_unsubscribe(c, "office/{desk}/lamp"), 0);
	ASSERT_EQ(mg_mqtt_unsubscribe(c, "office/{x}/lamp"), MG_MQTT_ERR_NOT_FOUND);
	ASSERT_EQ(mg_mqtt_unsubscribe(c, "office/{x}/{x}"), MG_MQTT_ERR_PARAM);
	ASSERT_EQ(mg_mqtt_subscribe(c, "a/{x}y", 0), MG_MQTT_ERR_PARAM);
	ASSERT(WAIT_UNTIL(REC(&r, nunsub) == 1, 5000));
	struct mg_mqtt_subscription *v = NULL;
	ASSERT_EQ(mg_mqtt_subscriptions(c, &v), 1);
	free(v);
	mg_mqtt_stop(c);
	rec_free(&r);
}

TEST(unsubscribe_and_unsubscribe_all_stop_delivery_and_are_acknowledged)
{
	struct th_broker b;
	struct rec r;
	struct mg_mqtt *c = rec_with_broker(&r, &b);
	ASSERT_GT(mg_mqtt_subscribe(c, "u/a", 0), 0);
	ASSERT_GT(mg_mqtt_subscribe(c, "u/b", 1), 0);
	ASSERT_GT(mg_mqtt_subscribe(c, "u/c", 2), 0);
	ASSERT(WAIT_UNTIL(REC(&r, nsub) == 3, 5000));
	ASSERT_EQ(mg_mqtt_unsubscribe(c, "u/zzz"), MG_MQTT_ERR_NOT_FOUND);
	int uid = mg_mqtt_unsubscribe(c, "u/a");
	ASSERT_GT(uid, 0);
	ASSERT(WAIT_UNTIL(REC(&r, nunsub) == 1, 5000));
	ASSERT_EQ(r.unsub[0].id, uid);
	ASSERT_EQ(r.unsub[0].count, 1);

	char t[64];
	ASSERT_STREQ(rec_subs_text(c, t, sizeof(t)), "u/b:1 u/c:2");
	struct mg_mqtt_subscription *subs;

	int aid = mg_mqtt_unsubscribe_all(c);
	ASSERT_GT(aid, 0);
	ASSERT(WAIT_UNTIL(REC(&r, nunsub) == 2, 5000));
	ASSERT_EQ(r.unsub[1].id, aid);
	ASSERT_EQ(r.unsub[1].count, 2);
	ASSERT_EQ(mg_mqtt_subscriptions(c, &subs), 0);
	ASSERT(subs == NULL);
	ASSERT_EQ(mg_mqtt_unsubscribe_all(c), 0);

	th_pub(&b, "u/a", "1", 1, 0, NULL);
	th_pub(&b, "u/b", "2", 1, 0, NULL);
	th_pub(&b, "u/c", "3", 1, 0, NULL);
	/* A probe on a live subscription proves the others had time. */
	ASSERT_GT(mg_mqtt_subscribe(c, "u/probe", 1), 0);
	ASSERT(WAIT_UNTIL(REC(&r, nsub) == 4, 5000));
	REC_PUB_ARRIVES(&b, &r, "u/probe", "p", 5000);
	ASSERT_EQ(REC(&r, nmsgs), 1);
	mg_mqtt_stop(c);
	rec_free(&r);
}

struct flood {
	struct mg_mqtt *c;
	int thread, count, errors;
};

static void *flood_main(void *arg)
{
	struct flood *f = arg;
	char topic[64], payload[64];
	snprintf(topic, sizeof(topic), "flood/%d", f->thread);
	for (int i = 0; i < f->count; i++) {
		int n = snprintf(payload, sizeof(payload), "%d-%d", f->thread, i);
		if (mg_mqtt_publish(f->c, topic, payload, (size_t)n, 1, 0) <= 0)
			f->errors++;
	}
	return NULL;
}

TEST_T(thirty_two_threads_publishing_qos1_lose_nothing, 90)
{
	enum { THREADS = 32, EACH = 250 };
	struct th_broker b;
	struct th_sub s;
	struct rec r;
	th_broker_sub_start(&b, "listener {PORT} 127.0.0.1\nallow_anonymous true\n"
	                    "max_queued_messages 0\n", &s,
	                    "flood/#", THREADS * EACH, "-q 1");
	struct mg_mqtt *c = rec_connected(&r, &b);
	pthread_t t[THREADS];
	struct flood f[THREADS];
	for (int i = 0; i < THREADS; i++) {
		f[i] = (struct flood){c, i, EACH, 0};
		ASSERT_EQ(pthread_create(&t[i], NULL, flood_main, &f[i]), 0);
	}
	for (int i = 0; i < THREADS; i++) {
		pthread_join(t[i], NULL);
		ASSERT_EQ(f[i].errors, 0);
	}
	ASSERT_EQ(th_sub_wait(&s, 60000), 0);
	int n;
	char *got = th_sub_messages(&s, &n);
	ASSERT_EQ(n, THREADS * EACH);
	/* Every (thread, i) exactly once, and per thread in order. */
	int next[THREADS] = {0};
	char *save = NULL;
	for (char *line = strtok_r(got, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		int th, i;
		ASSERT_EQ(sscanf(strchr(line, ' ') + 1, "%d-%d", &th, &i), 2);
		ASSERT_EQ(i, next[th]);
		next[th]++;
	}
	free(got);
	ASSERT(WAIT_UNTIL(REC(&r, npub) == THREADS * EACH, 10000));
	mg_mqtt_stop(c);
	rec_free(&r);
}

TEST(status_json_reports_state_counters_and_masks_the_password)
{
	struct th_broker b;
	struct rec r;
	char conf[1024], pw[512], buf[8192];
	th_path(pw, sizeof(pw), "passwd");
	snprintf(conf, sizeof(conf),
	         "listener {PORT} 127.0.0.1\nallow_anonymous false\n"
	         "password_file %s\n",
	         pw);
	const char *mk[] = {"mosquitto_passwd", "-b", "-c", pw, "alice",
	                    "Tr0ub4dor&3", NULL};
	ASSERT_EQ(th_run(mk, NULL, 10000), 0);
	th_broker_start(&b, conf);
	struct mg_mqtt *c = rec_client(&r, "Status");
	const char *opts[] = {"STATUS_BROKER_URL", b.url, "status_username",
	                      "alice", "Status_Password", "Tr0ub4dor&3",
	                      "STATUS_CLIENT_ID", "status-test", NULL};
	rec_start(c, opts);
	ASSERT_GT(mg_mqtt_subscribe(c, "s/#", 1), 0);
	ASSERT_GT(mg_mqtt_publish(c, "s/x", "1", 1, 1, 0), 0);
	ASSERT(WAIT_UNTIL(REC(&r, npub) == 1 && REC(&r, nmsgs) == 1, 5000));
	int n = mg_mqtt_status(c, buf, sizeof(buf));
	ASSERT_GT(n, 0);
	ASSERT_LT(n, (int)sizeof(buf));
	ASSERT_CONTAINS_ALL(buf, "\"prefix\":\"STATUS\"",
	                    "\"client_id\":\"status-test\"",
	                    "\"connected\":true", "\"protocol\":\"3.1.1\"",
	                    "\"filter\":\"s/#\"", "\"published\":1",
	                    "\"received\":1", "\"password\":\"***\"",
	                    "\"username\":\"alice\"");
	ASSERT_NOT_CONTAINS(buf, "Tr0ub4dor");
	/* snprintf rules: truncated but NUL-terminated, same return value. */
	char small[16];
	ASSERT_EQ(mg_mqtt_status(c, small, sizeof(small)), n);
	ASSERT_EQ(strlen(small), sizeof(small) - 1);
	ASSERT_NOT_CONTAINS(r.log, "Tr0ub4dor");
	mg_mqtt_stop(c);
	rec_free(&r);
}
