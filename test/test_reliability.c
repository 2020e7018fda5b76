/*
 * What must hold when things go wrong: broker restarts, messages in flight
 * when the connection dies, outages, slow handlers, a full dispatch queue,
 * buffering limits, and stopping with work still queued. Also the client on
 * a real CivetWeb context (mg_mqtt_get, error_log_file).
 */
#include "rec.h"

#include <civetweb.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *persistent_broker =
    "listener {PORT} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n";

/* readdir() of this program, so that a test can make it fail as glibc's
 * does on 32-bit without large-file support (EOVERFLOW for a 64-bit inode
 * number). The library, linked into this program, calls this one; it
 * passes every call on to the C library's (the one the header names:
 * readdir64 where off_t is wider than long) unless readdir_fails is set. */
static atomic_int readdir_fails;

struct dirent *readdir(DIR *d)
{
	static struct dirent *(*real)(DIR *);
	if (atomic_load(&readdir_fails)) {
		errno = EOVERFLOW;
		return NULL;
	}
	if (real == NULL)
		*(void **)&real = dlsym(RTLD_NEXT, sizeof(off_t) > sizeof(long)
		                                       ? "readdir64"
		                                       : "readdir");
	return real(d);
}

TEST_T(broker_restart_reconnects_renews_subscriptions_and_delivers_outage_messages,
       60)
{
	struct th_broker b;
	struct th_sub s;
	struct rec r;
	th_broker_start(&b, persistent_broker);
	struct mg_mqtt *c =
	    rec_started(&r, OPTS("MQTT_BROKER_URL", b.url, "MQTT_RECONNECT_MIN",
	                         "1", "MQTT_RECONNECT_MAX", "2"));
	ASSERT_GT(mg_mqtt_subscribe(c, "before/#", 1), 0);
	ASSERT(WAIT_UNTIL(rec_subs_settled(c, 1), 5000));

	th_broker_kill9(&b);
	ASSERT(WAIT_UNTIL(!mg_mqtt_is_connected(c), 5000));
	ASSERT(WAIT_UNTIL(REC(&r, disconnects) == 1, 5000));
	/* During the outage: a new subscription and ten QoS 1 messages. */
	ASSERT_GT(mg_mqtt_subscribe(c, "during/#", 1), 0);
	int ids[10];
	rec_publish_seq(c, "outage/q1", "m", 10, 1, ids);
	ASSERT(!mg_mqtt_is_connected(c));

	/* The subscriber connects first so that nothing published after the
	 * restart can be missed. */
	th_broker_restart(&b);
	th_sub_start(&s, &b, "outage/#", 10, "-q 1");
	ASSERT(WAIT_UNTIL(mg_mqtt_is_connected(c), 10000));
	th_sub_expect_seq(&s, 10000, "outage/q1 m", 10);
	for (int i = 0; i < 10; i++)
		ASSERT(WAIT_UNTIL(rec_find_pub(&r, ids[i]) >= 0, 5000));

	/* Both subscriptions are live on the new broker. */
	ASSERT(WAIT_UNTIL(rec_subs_settled(c, 2), 5000));
	th_pub(&b, "before/x", "1", 1, 0, NULL);
	th_pub(&b, "during/y", "2", 1, 0, NULL);
	ASSERT(WAIT_UNTIL(rec_find(&r, "before/x", "1") >= 0, 5000));
	ASSERT(WAIT_UNTIL(rec_find(&r, "during/y", "2") >= 0, 5000));
	ASSERT_EQ(REC(&r, connects), 2);
	ASSERT(rec_status_has(c, "\"reconnects\":1"));
	mg_mqtt_stop(c);
	rec_free(&r);
}

TEST_T(qos1_messages_in_flight_when_the_broker_dies_are_sent_again, 60)
{
	struct th_broker b;
	struct rec r;
	th_broker_start(&b, persistent_broker);
	struct mg_mqtt *c = rec_started(
	    &r, OPTS("MQTT_BROKER_URL", b.url, "MQTT_RECONNECT_MIN", "1",
	             "MQTT_RECONNECT_MAX", "2", "MQTT_KEEPALIVE", "2"));
	/* A frozen broker takes the PUBLISHes into its socket but never
	 * acknowledges them: they are in flight when it dies. */
	kill(b.pid, SIGSTOP);
	int ids[5];
	rec_publish_seq(c, "inflight/q1", "f", 5, 1, ids);
	th_sleep_ms(300);
	ASSERT(rec_status_has(c, "\"in_flight\":5"));
	th_broker_kill9(&b);
	th_broker_restart(&b);
	struct th_sub s;
	th_sub_start(&s, &b, "inflight/#", 5, "-q 1");
	th_sub_expect_seq(&s, 20000, "inflight/q1 f", 5);
	/* One acknowledgement each, all successful. */
	ASSERT(WAIT_UNTIL(REC(&r, npub) == 5, 5000));
	for (int i = 0; i < 5; i++) {
		int k = rec_find_pub(&r, ids[i]);
		ASSERT_GE(k, 0);
		ASSERT_EQ(r.pub[k].result, 0);
	}
	mg_mqtt_stop(c);
	rec_free(&r);
}

TEST_T(a_handler_slower_than_the_keepalive_does_not_drop_the_connection, 40)
{
	struct th_broker b;
	struct rec r;
	th_broker_start(&b, NULL);
	struct mg_mqtt *c =
	    rec_started(&r, OPTS("MQTT_BROKER_URL", b.url, "MQTT_KEEPALIVE", "1",
	                         "MQTT_SUBSCRIBE", "slow/#"));
	ASSERT(WAIT_UNTIL(rec_subs_settled(c, 1), 5000));
	r.slow_ms = 4000; /* mosquitto drops a client silent for 1.5 x 1 s */
	th_pub(&b, "slow/a", "1", 0, 0, NULL);
	th_pub(&b, "slow/b", "2", 0, 0, NULL);
	ASSERT(WAIT_UNTIL(REC(&r, nmsgs) == 2, 15000));
	ASSERT(mg_mqtt_is_connected(c));
	ASSERT_EQ(REC(&r, disconnects), 0);
	ASSERT_EQ(REC(&r, connects), 1);
	ASSERT_EQ(th_count_lines(b.log, "exceeded timeout"), 0);
	mg_mqtt_stop(c);
	rec_free(&r);
}

TEST_T(a_full_dispatch_queue_drops_new_messages_counts_and_logs_them, 40)
{
	enum { FLOOD = 60, QSIZE = 5 };
	struct th_broker b;
	struct rec r;
	char qs[16];
	th_broker_start(&b, NULL);
	struct mg_mqtt *c = rec_client(&r, NULL);
	snprintf(qs, sizeof(qs), "%d", QSIZE);
	const char *opts[] = {"MQTT_BROKER_URL", b.url, "MQTT_QUEUE_SIZE", qs,
	                      "MQTT_SUBSCRIBE", "flood/#", NULL};
	rec_start(c, opts);
	ASSERT(WAIT_UNTIL(rec_subs_settled(c, 1), 5000));
	r.slow_ms = 100;
	char port[16], count[16];
	snprintf(port, sizeof(port), "%d", b.port);
	snprintf(count, sizeof(count), "%d", FLOOD);
	/* mosquitto_pub -l sends one message per stdin line, as fast as it can. */
	char lines[512], cmd[1024];
	th_path(lines, sizeof(lines), "lines.txt");
	FILE *f = fopen(lines, "w");
	for (int i = 0; i < FLOOD; i++)
		fprintf(f, "msg %d\n", i);
	fclose(f);
	snprintf(cmd, sizeof(cmd),
	         "mosquitto_pub -h 127.0.0.1 -p %s -t flood/x -q 1 -l < %s", port,
	         lines);
	const char *argv[] = {"sh", "-c", cmd, NULL};
	ASSERT_EQ(th_run(argv, NULL, 10000), 0);

	/* Every message was either handled or counted as dropped. */
	char buf[16384], *p;
	long long dropped = 0;
	ASSERT(WAIT_UNTIL((mg_mqtt_status(c, buf, sizeof(buf)),
	                   (p = strstr(buf, "\"dropped_queue_full\":")) != NULL &&
	                       (dropped = atoll(p + 21)) + REC(&r, nmsgs) == FLOOD),
	                  15000));
	ASSERT_GT(dropped, 0);
	ASSERT_LE(REC(&r, nmsgs), FLOOD - 1);
	ASSERT_CONTAINS(buf, "\"received\":");
	ASSERT(WAIT_UNTIL(rec_log_has(&r, "dispatch queue full"), 5000));
	/* The queue drains: new messages are handled again. */
	r.slow_ms = 0;
	ASSERT(WAIT_UNTIL(rec_status_has(c, "\"queue_depth\":0"), 10000));
	REC_PUB_ARRIVES(&b, &r, "flood/after", "ok", 5000);
	ASSERT(mg_mqtt_is_connected(c));
	mg_mqtt_stop(c);
	rec_free(&r);
}

TEST(publish_while_disconnected_obeys_max_buffered_and_max_inflight)
{
	struct rec r, r0;
	int dead = th_free_port();
	char url[64];
	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", dead);

	struct mg_mqtt *c = rec_started(
	    &r, OPTS("MQTT_BROKER_URL", url, "MQTT_CONNECT_ASYNC", "true",
	             "MQTT_MAX_BUFFERED", "3", "MQTT_MAX_INFLIGHT", "1"));
	for (int i = 0; i < 4; i++)
		ASSERT_GT(mg_mqtt_publish(c, "b/t", "x", 1, i % 3, 0), 0);
	ASSERT_EQ(mg_mqtt_publish(c, "b/t", "x", 1, 1, 0), MG_MQTT_ERR_BUFFER_FULL);
	ASSERT_EQ(mg_mqtt_publish(c, "b/t", "x", 1, 0, 0), MG_MQTT_ERR_BUFFER_FULL);
	ASSERT(rec_status_has(c, "\"queued\":4"));
	/* Stopping fails what was never sent, each exactly once, at once. */
	int64_t t0 = th_now_ms();
	mg_mqtt_stop(c);
	ASSERT_LT(th_now_ms() - t0, 3000);
	ASSERT_EQ(r.npub, 4);
	for (int i = 0; i < 4; i++)
		ASSERT_EQ(r.pub[i].result, MG_MQTT_ERR_STOPPED);
	ASSERT_CONTAINS(r.log, "stopped with 4 message(s) not sent");
	rec_free(&r);

	struct mg_mqtt *c0 = rec_client(&r0, NULL);
	const char *opts0[] = {"MQTT_BROKER_URL", url, "MQTT_CONNECT_ASYNC", "true",
	                       "MQTT_MAX_BUFFERED", "0", NULL};
	rec_start(c0, opts0);
	ASSERT_EQ(mg_mqtt_publish(c0, "b/t", "x", 1, 1, 0),
	          MG_MQTT_ERR_NOT_CONNECTED);
	mg_mqtt_stop(c0);
	ASSERT_EQ(r0.npub, 0);
	rec_free(&r0);
}

TEST_T(stop_flushes_messages_queued_while_connected, 60)
{
	enum { N = 2000 };
	struct th_broker b;
	struct th_sub s;
	struct rec r;
	th_broker_sub_start(&b, persistent_broker, &s, "flush/#", N, "-q 1");
	struct mg_mqtt *c = rec_connected(&r, &b);
	for (int i = 0; i < N; i++) {
		char p[16];
		snprintf(p, sizeof(p), "%d", i);
		ASSERT_GT(mg_mqtt_publish(c, "flush/x", p, strlen(p), 1, 0), 0);
	}
	mg_mqtt_stop(c);
	ASSERT_EQ(r.npub, N);
	for (int i = 0; i < N; i++)
		ASSERT_EQ(r.pub[i].result, 0);
	ASSERT_EQ(th_sub_wait(&s, 20000), 0);
	int n;
	free(th_sub_messages(&s, &n));
	ASSERT_EQ(n, N);
	rec_free(&r);
}

static _Atomic int stop_result = 1;
static void stop_from_handler(struct mg_mqtt *c, const struct mg_mqtt_message *m,
                              void *ud)
{
	(void)m;
	(void)ud;
	stop_result = mg_mqtt_stop(c);
}

/* Republishes every message on echo/in to echo/out from the handler. */
static void echo_handler(struct mg_mqtt *c, const struct mg_mqtt_message *m,
                         void *ud)
{
	(void)ud;
	mg_mqtt_publish(c, "echo/out", m->payload, m->payload_len, 1, 0);
}

TEST(handlers_may_publish_but_not_stop_their_own_client)
{
	struct th_broker b;
	struct th_sub s;
	th_broker_start(&b, NULL);
	struct mg_mqtt *c = mg_mqtt_create(NULL);
	ASSERT_EQ(mg_mqtt_on_topic(c, "echo/in", echo_handler, NULL), 0);
	ASSERT_EQ(mg_mqtt_on_topic(c, "stop/me", stop_from_handler, NULL), 0);
	const char *opts[] = {"MQTT_BROKER_URL", b.url, "MQTT_SUBSCRIBE",
	                      "echo/in, stop/me", NULL};
	rec_start(c, opts);
	ASSERT(WAIT_UNTIL(rec_subs_settled(c, 2), 5000));
	th_sub_start(&s, &b, "echo/out", 1, NULL);
	th_pub(&b, "echo/in", "ping", 1, 0, NULL);
	ASSERT_EQ(th_sub_wait(&s, 5000), 0);
	int n;
	char *got = th_sub_messages(&s, &n);
	ASSERT_STREQ(got, "echo/out ping");
	free(got);
	th_pub(&b, "stop/me", "now", 1, 0, NULL);
	ASSERT(WAIT_UNTIL(stop_result != 1, 5000));
	ASSERT_EQ(stop_result, MG_MQTT_ERR_IN_HANDLER);
	ASSERT(mg_mqtt_is_connected(c));
	ASSERT_EQ(mg_mqtt_stop(c), 0);
}

TEST(registering_after_start_and_operations_after_failed_start_are_refused)
{
	struct th_broker b;
	th_broker_start(&b, NULL);
	struct mg_mqtt *c = mg_mqtt_create(NULL);
	const char *bad[] = {"MQTT_BROKER_URL", b.url, "MQTT_KEEPALIVE", "soon",
	                     NULL};
	char err[512];
	ASSERT_EQ(mg_mqtt_start(c, NULL, bad, err, sizeof(err)), MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "MQTT_KEEPALIVE");
	ASSERT_CONTAINS(err, "'soon'");
	ASSERT_EQ(mg_mqtt_publish(c, "a", "b", 1, 0, 0), MG_MQTT_ERR_NOT_STARTED);
	/* Still a created client: handlers can be added, start retried. */
	ASSERT_EQ(mg_mqtt_on_message(c, echo_handler, NULL), 0);
	const char *good[] = {"MQTT_BROKER_URL", b.url, NULL};
	rec_start(c, good);
	ASSERT_EQ(mg_mqtt_start(c, NULL, good, NULL, 0), MG_MQTT_ERR_STARTED);
	ASSERT_EQ(mg_mqtt_on_message(c, echo_handler, NULL), MG_MQTT_ERR_STARTED);
	ASSERT_EQ(mg_mqtt_on_topic(c, "a", echo_handler, NULL), MG_MQTT_ERR_STARTED);
	ASSERT_EQ(mg_mqtt_publish(c, "a/+", "b", 1, 0, 0), MG_MQTT_ERR_TOPIC);
	ASSERT_EQ(mg_mqtt_publish(c, "a", "b", 1, 3, 0), MG_MQTT_ERR_QOS);
	ASSERT_EQ(mg_mqtt_publish(c, "a", NULL, 1, 0, 0), MG_MQTT_ERR_INVALID);
	ASSERT_GT(mg_mqtt_publish(c, "a", NULL, 0, 0, 0), 0);
	ASSERT_EQ(mg_mqtt_subscribe(c, "a/#/b", 0), MG_MQTT_ERR_FILTER);
	ASSERT_EQ(mg_mqtt_subscribe(c, "a", -1), MG_MQTT_ERR_QOS);
	mg_mqtt_stop(c);
}

TEST(a_client_on_a_civetweb_context_is_found_by_prefix_and_logs_to_its_error_log)
{
	struct th_broker b;
	char logfile[512];
	th_broker_start(&b, NULL);
	struct mg_context *ctx =
	    th_civetweb_start("civetweb-error.log", logfile, sizeof(logfile));

	struct mg_mqtt *c = mg_mqtt_create("mqtt"), *c2 = mg_mqtt_create("MQTT"),
	               *other = mg_mqtt_create("BROKER2");
	const char *opts[] = {"MQTT_BROKER_URL", b.url, "BROKER2_BROKER_URL", b.url,
	                      NULL};
	char err[512];
	ASSERT_EQ(mg_mqtt_start(c, ctx, opts, err, sizeof(err)), 0);
	ASSERT(mg_mqtt_get(ctx, NULL) == c);
	ASSERT(mg_mqtt_get(ctx, "Mqtt") == c);
	ASSERT(mg_mqtt_get(ctx, "BROKER2") == NULL);
	ASSERT(mg_mqtt_get(NULL, NULL) == NULL);
	ASSERT_EQ(mg_mqtt_start(c2, ctx, opts, err, sizeof(err)), MG_MQTT_ERR_EXISTS);
	ASSERT_EQ(mg_mqtt_start(other, ctx, opts, err, sizeof(err)), 0);
	ASSERT(mg_mqtt_get(ctx, "broker2") == other);
	/* Without a log handler, lines go to CivetWeb's error_log_file. */
	ASSERT(WAIT_UNTIL(th_count_lines(logfile, "[MQTT] connected to") == 1,
	                  5000));
	ASSERT(WAIT_UNTIL(th_count_lines(logfile, "[BROKER2] connected to") == 1,
	                  5000));
	const char *bad[] = {"MQTT_BROKER_URL", b.url, "MQTT_QOS", "1", NULL};
	ASSERT_EQ(mg_mqtt_start(c2, NULL, bad, err, sizeof(err)), MG_MQTT_ERR_CONFIG);
	mg_mqtt_stop(c2);

	mg_stop(ctx);
	mg_mqtt_stop(c);
	mg_mqtt_stop(other);
	ASSERT_EQ(th_count_lines(logfile, "disconnected from"), 2);
}

TEST(start_up_errors_reach_civetweb_error_log_and_never_show_the_password)
{
	char logfile[512], err[512];
	struct mg_context *ctx =
	    th_civetweb_start("civetweb-error.log", logfile, sizeof(logfile));
	struct mg_mqtt *c = mg_mqtt_create(NULL);
	const char *opts[] = {"MQTT_USERNAME", "u", "MQTT_PASSWORD", "hunter2-secret",
	                      "MQTT_PASWORD", "hunter3-secret", NULL};
	ASSERT_EQ(mg_mqtt_start(c, ctx, opts, err, sizeof(err)), MG_MQTT_ERR_CONFIG);
	ASSERT_CONTAINS(err, "MQTT_PASWORD");
	ASSERT_NOT_CONTAINS(err, "hunter");
	char *log = th_read_file(logfile, NULL);
	ASSERT_CONTAINS(log, "MQTT_PASWORD");
	ASSERT_NOT_CONTAINS(log, "hunter");
	free(log);
	mg_mqtt_stop(c);
	mg_stop(ctx);
}

TEST_T(persistence_dir_sends_the_messages_of_a_killed_process_after_restart, 60)
{
	struct th_broker b;
	struct th_sub s;
	struct rec r;
	char dir[512], sub[600];
	th_broker_start(&b, NULL);
	th_path(dir, sizeof(dir), "persist");
	mkdir(dir, 0700);
	const char *opts[] = {"MQTT_BROKER_URL", b.url, "MQTT_CLIENT_ID", "cwm-persist",
	                      "MQTT_PERSISTENCE_DIR", dir, "MQTT_CONNECT_ASYNC", "true",
	                      "MQTT_RECONNECT_MIN", "1", "MQTT_RECONNECT_MAX", "2",
	                      NULL};
	/* The first server process: connected, then the broker freezes, five
	 * QoS 1 messages go out unacknowledged, and the process is killed. */
	int pipefd[2];
	ASSERT_EQ(pipe(pipefd), 0);
	kill(b.pid, SIGSTOP);
	pid_t child = fork();
	ASSERT(child >= 0);
	if (child == 0) {
		struct mg_mqtt *c = mg_mqtt_create(NULL);
		if (mg_mqtt_start(c, NULL, opts, NULL, 0) != 0)
			_exit(2);
		for (int i = 0; i < 5; i++) {
			char p[16];
			snprintf(p, sizeof(p), "kept%d", i);
			if (mg_mqtt_publish(c, "persist/q1", p, strlen(p), 1, 0) <= 0)
				_exit(3);
		}
		if (write(pipefd[1], "x", 1) != 1)
			_exit(4);
		pause();
		_exit(0);
	}
	char ch;
	ASSERT_EQ(read(pipefd[0], &ch, 1), 1);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	close(pipefd[0]);
	close(pipefd[1]);
	snprintf(sub, sizeof(sub), "%s/cwm-persist", dir);
	char *ls = NULL;
	{
		char cmd[1024], out[512];
		snprintf(cmd, sizeof(cmd), "ls '%s' | grep -c '\\.msg$'", sub);
		th_path(out, sizeof(out), "ls.out");
		const char *argv[] = {"sh", "-c", cmd, NULL};
		th_run(argv, out, 5000);
		ls = th_read_file(out, NULL);
	}
	ASSERT_EQ(atoi(ls), 5);
	free(ls);

	/* The broker crashes too: nothing of the session survives there. */
	th_broker_kill9(&b);
	th_broker_restart(&b);
	th_sub_start(&s, &b, "persist/#", 5, "-q 1");
	struct mg_mqtt *c = rec_started(&r, opts);
	th_sub_expect_seq(&s, 20000, "persist/q1 kept", 5);
	ASSERT(rec_log_has(&r, "5 stored message(s) queued again"));
	/* Acknowledged: the files are gone; the user saw no foreign acks. */
	ASSERT(WAIT_UNTIL(rec_status_has(c, "\"published\":5"), 5000));
	mg_mqtt_stop(c);
	ASSERT_EQ(r.npub, 0);
	struct dirent *e;
	DIR *d = opendir(sub);
	ASSERT(d != NULL);
	int left = 0;
	while ((e = readdir(d)) != NULL)
		left += strstr(e->d_name, ".msg") != NULL;
	closedir(d);
	ASSERT_EQ(left, 0);
	rec_free(&r);
}

/* 1 when message file number seq of PERSISTENCE_DIR dir holds payload. */
static int stored_has(const char *dir, const char *id, unsigned seq,
                      const char *payload)
{
	char path[700];
	size_t n;
	snprintf(path, sizeof(path), "%s/%s/%016x.msg", dir, id, seq);
	char *data = th_read_file(path, &n);
	int has = memmem(data, n, payload, strlen(payload)) != NULL;
	free(data);
	return has;
}

TEST_T(persistence_dir_a_failing_readdir_stops_the_start_and_keeps_the_files, 40)
{
	struct rec r;
	char dir[512], url[64], err[512];
	th_path(dir, sizeof(dir), "persist");
	mkdir(dir, 0700);
	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", th_free_port());
	const char *opts[] = {"MQTT_BROKER_URL", url, "MQTT_CLIENT_ID", "cwm-rd",
	                      "MQTT_PERSISTENCE_DIR", dir, "MQTT_CONNECT_ASYNC", "true",
	                      NULL};
	/* A process that stored one message and died (no broker answers). */
	pid_t child = fork();
	ASSERT(child >= 0);
	if (child == 0) {
		struct mg_mqtt *c = mg_mqtt_create(NULL);
		if (mg_mqtt_start(c, NULL, opts, NULL, 0) != 0 ||
		    mg_mqtt_publish(c, "rd/q1", "old0", 4, 1, 0) <= 0)
			_exit(2);
		_exit(0); /* no stop: the file stays, as after a crash */
	}
	int st;
	ASSERT_EQ(waitpid(child, &st, 0), child);
	ASSERT_EQ(WEXITSTATUS(st), 0);
	ASSERT(stored_has(dir, "cwm-rd", 1, "old0"));

	/* The directory cannot be listed: no start, the error named and
	 * logged, and nothing numbered from 1 again over the old file. */
	struct mg_mqtt *c = rec_client(&r, NULL);
	atomic_store(&readdir_fails, 1);
	int rc = mg_mqtt_start(c, NULL, opts, err, sizeof(err));
	int pub = rc == 0 ? mg_mqtt_publish(c, "rd/q1", "new0", 4, 1, 0) : 0;
	atomic_store(&readdir_fails, 0);
	ASSERT_EQ(rc, MG_MQTT_ERR_IO);
	ASSERT_EQ(pub, 0);
	ASSERT_CONTAINS(err, "MQTT_PERSISTENCE_DIR");
	ASSERT_CONTAINS(err, strerror(EOVERFLOW));
	ASSERT(rec_log_has(&r, strerror(EOVERFLOW)));
	mg_mqtt_stop(c);
	rec_free(&r);
	ASSERT(stored_has(dir, "cwm-rd", 1, "old0"));

	/* Listed again: the old message is queued, the new one numbered 2. */
	c = rec_client(&r, NULL);
	rec_start(c, opts);
	ASSERT(rec_log_has(&r, "1 stored message(s) queued again"));
	ASSERT_GT(mg_mqtt_publish(c, "rd/q1", "new0", 4, 1, 0), 0);
	ASSERT(stored_has(dir, "cwm-rd", 2, "new0"));
	ASSERT(stored_has(dir, "cwm-rd", 1, "old0"));
	mg_mqtt_stop(c);
	rec_free(&r);
}

TEST_T(subscriptions_made_and_undone_while_disconnected_end_as_the_last_call_says,
       40)
{
	struct th_broker b;
	struct rec r;
	struct mg_mqtt *c = rec_started_early(&r, &b, NULL, NULL);
	int ids[7];
	ids[0] = mg_mqtt_subscribe(c, "s/a", 1);
	ids[1] = mg_mqtt_subscribe(c, "s/b", 0);
	ids[2] = mg_mqtt_unsubscribe(c, "s/a");
	ids[3] = mg_mqtt_subscribe(c, "s/a", 1); /* again, before any was sent */
	ids[4] = mg_mqtt_subscribe(c, "s/c", 1);
	ids[5] = mg_mqtt_unsubscribe(c, "s/c");
	ids[6] = mg_mqtt_subscribe(c, "s/b", 2); /* a higher QoS */
	for (int i = 0; i < 7; i++)
		ASSERT_GT(ids[i], 0);
	ASSERT_EQ(mg_mqtt_unsubscribe(c, "s/c"), MG_MQTT_ERR_NOT_FOUND);

	th_broker_restart(&b);
	ASSERT(WAIT_UNTIL(REC(&r, nsub) == 5 && REC(&r, nunsub) == 2, 10000));
	/* Each call acknowledged once, under its own id. */
	int sub_ids[] = {ids[0], ids[1], ids[3], ids[4], ids[6]};
	for (int i = 0; i < 5; i++) {
		int seen = 0;
		for (int k = 0; k < r.nsub; k++)
			if (r.sub[k].id == sub_ids[i]) {
				seen++;
				ASSERT_EQ(r.sub[k].result, 0);
				ASSERT_EQ(r.sub[k].count, 1);
			}
		ASSERT_EQ(seen, 1);
	}
	ASSERT(r.unsub[0].id == ids[2] || r.unsub[1].id == ids[2]);
	ASSERT(r.unsub[0].id == ids[5] || r.unsub[1].id == ids[5]);

	char t[64];
	ASSERT_STREQ(rec_subs_text(c, t, sizeof(t)), "s/b:2 s/a:1");
	ASSERT(WAIT_UNTIL(rec_subs_settled(c, 2), 5000));
	/* The broker agrees: a and b arrive, c does not (the probe on b comes
	 * last, so c had its chance). */
	th_pub(&b, "s/c", "no", 1, 0, NULL);
	th_pub(&b, "s/a", "yes", 1, 0, NULL);
	REC_PUB_ARRIVES(&b, &r, "s/b", "probe", 5000);
	ASSERT_GE(rec_find(&r, "s/a", "yes"), 0);
	ASSERT_EQ(rec_find(&r, "s/c", NULL), -1);
	mg_mqtt_stop(c);
	rec_free(&r);
}

TEST_T(ten_thousand_subscriptions_are_each_acknowledged_once, 60)
{
	enum { N = 10000 };
	struct th_broker b;
	struct rec r;
	struct mg_mqtt *c = rec_with_broker(&r, &b);
	char f[64];
	int first = 0, last = 0;
	for (int i = 0; i < N; i++) {
		snprintf(f, sizeof(f), "many/%d/+", i);
		int id = mg_mqtt_subscribe(c, f, i % 3);
		ASSERT_GT(id, 0);
		if (i == 0)
			first = id;
		last = id;
	}
	ASSERT_EQ(last - first, N - 1);
	ASSERT(WAIT_UNTIL(rec_subs_settled(c, N), 30000));
	/* r.sub keeps 64; the status counts them all through granted QoS. */
	struct mg_mqtt_subscription *subs;
	ASSERT_EQ(mg_mqtt_subscriptions(c, &subs), N);
	for (int i = 0; i < N; i++)
		ASSERT_EQ(subs[i].granted, i % 3);
	free(subs);
	REC_PUB_ARRIVES(&b, &r, "many/9999/x", "end", 5000);
	mg_mqtt_stop(c);
	rec_free(&r);
}
