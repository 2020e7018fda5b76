/*
 * bhand: the baselines of "publishing from a request handler": the same
 * CivetWeb server as bserver (bench/hsrv.h), its handlers publishing the
 * request body by hand, without civetweb-mqtt. Built three times:
 *
 *   bhand_raw   (-DBHAND_RAW)  the physical limit: one TCP socket to the
 *               broker (MQTT 3.1.1 CONNECT done at start), every handler
 *               encodes a PUBLISH header (a few bytes) and writes header and
 *               body with one writev under a mutex. QoS 1: packet ids
 *               1..65535 in turn, a reader thread on the same socket counts
 *               the PUBACKs. Nothing is kept for a resend.
 *               Two references for batched designs on the same socket:
 *               -B: each handler appends its packet to a buffer under the
 *               mutex and returns; a writer thread, woken only when it was
 *               idle, writes all that gathered with one write (one
 *               hand-off, as an engine with its own I/O thread).
 *               -C: each handler appends its packet; the one that finds
 *               nobody writing writes the buffer until it is empty, the
 *               others return at once (no hand-off; writes batch under
 *               contention).
 *   bhand_mosq  (-DBHAND_MOSQ) libmosquitto used by hand: one shared client,
 *               mosquitto_loop_start, mosquitto_publish from every handler,
 *               its default in-flight window (20 QoS 1 messages; the rest
 *               wait in its queue). Unlimited (-w 0) is no baseline: in
 *               a try on this project's machine its QoS 1 rate fell to
 *               about a fifth of the default's, at 5-6 times the CPU per
 *               request.
 *   bhand_paho  (-DBHAND_PAHO) a naive shared paho client: one MQTTAsync
 *               client, MQTTAsync_sendMessage from every handler, default
 *               options (maxInflight 65535).
 *
 *   bhand_* -p http_port -b broker_port [-t num_threads] [-w window]
 *           [-B|-C]
 *
 * -w sets the client's in-flight window (libmosquitto: 0 is unlimited;
 * paho: maxInflight), for experiments; the bench runs the defaults.
 *
 * POST /pub0/<topic> and /pub1/<topic> publish the body at QoS 0 / 1 and
 * answer {"id":N}; 503 when the publish call fails. GET /acks answers as
 * bserver's (bench/hsrv.h): a completion is a PUBACK at QoS 1, the packet
 * written at QoS 0 (raw: after writev; libmosquitto: on_publish; paho:
 * onSuccess). Prints "ready" once connected; stops on SIGTERM.
 */
#include "hsrv.h"

#include <civetweb.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#if defined(BHAND_MOSQ)
#include <mosquitto.h>
#define BHAND_NAME "bhand_mosq"
#elif defined(BHAND_PAHO)
#include <MQTTAsync.h>
#define BHAND_NAME "bhand_paho"
#else
#define BHAND_NAME "bhand_raw"
#endif

#define MAX_BODY 65536

static atomic_int connected;
static int window = -1; /* -w: the client's in-flight window, -1: default */

#if defined(BHAND_MOSQ)

static struct mosquitto *mq;

static void on_connect(struct mosquitto *m, void *ud, int rc)
{
	(void)m;
	(void)ud;
	atomic_store(&connected, rc == 0 ? 1 : -1);
}

static void on_publish(struct mosquitto *m, void *ud, int mid)
{
	(void)m;
	(void)ud;
	(void)mid;
	hsrv_acked();
}

static int pub_open(int port)
{
	char id[64];
	snprintf(id, sizeof(id), "bhand-mosq-%d", (int)getpid());
	mosquitto_lib_init();
	if ((mq = mosquitto_new(id, true, NULL)) == NULL)
		return -1;
	if (window >= 0)
		mosquitto_max_inflight_messages_set(mq, (unsigned)window);
	mosquitto_connect_callback_set(mq, on_connect);
	mosquitto_publish_callback_set(mq, on_publish);
	if (mosquitto_connect(mq, "127.0.0.1", port, 60) != MOSQ_ERR_SUCCESS ||
	    mosquitto_loop_start(mq) != MOSQ_ERR_SUCCESS)
		return -1;
	return 0;
}

static int pub(const char *topic, const void *p, size_t n, int qos)
{
	int mid = 0;
	int rc = mosquitto_publish(mq, &mid, topic, (int)n, p, qos, false);
	return rc == MOSQ_ERR_SUCCESS ? mid : -1;
}

static void pub_close(void)
{
	mosquitto_disconnect(mq);
	mosquitto_loop_stop(mq, false);
	mosquitto_destroy(mq);
	mosquitto_lib_cleanup();
}

#elif defined(BHAND_PAHO)

static MQTTAsync pc;

static int on_message(void *ctx, char *topic, int len, MQTTAsync_message *m)
{
	(void)ctx;
	(void)len;
	MQTTAsync_freeMessage(&m);
	MQTTAsync_free(topic);
	return 1;
}

static void on_connected(void *ctx, MQTTAsync_successData *r)
{
	(void)ctx;
	(void)r;
	atomic_store(&connected, 1);
}

static void on_refused(void *ctx, MQTTAsync_failureData *r)
{
	(void)ctx;
	(void)r;
	atomic_store(&connected, -1);
}

static void on_sent(void *ctx, MQTTAsync_successData *r)
{
	(void)ctx;
	(void)r;
	hsrv_acked();
}

static void on_send_failed(void *ctx, MQTTAsync_failureData *r)
{
	(void)ctx;
	(void)r;
	hsrv_failed();
}

static int pub_open(int port)
{
	char url[64], id[64];
	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", port);
	snprintf(id, sizeof(id), "bhand-paho-%d", (int)getpid());
	MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
	if (MQTTAsync_create(&pc, url, id, MQTTCLIENT_PERSISTENCE_NONE, NULL) !=
	        MQTTASYNC_SUCCESS ||
	    MQTTAsync_setCallbacks(pc, NULL, NULL, on_message, NULL) !=
	        MQTTASYNC_SUCCESS)
		return -1;
	if (window > 0)
		co.maxInflight = window;
	co.keepAliveInterval = 60;
	co.cleansession = 1;
	co.onSuccess = on_connected;
	co.onFailure = on_refused;
	return MQTTAsync_connect(pc, &co) == MQTTASYNC_SUCCESS ? 0 : -1;
}

static int pub(const char *topic, const void *p, size_t n, int qos)
{
	MQTTAsync_message msg = MQTTAsync_message_initializer;
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	msg.payload = (void *)p;
	msg.payloadlen = (int)n;
	msg.qos = qos;
	ro.onSuccess = on_sent;
	ro.onFailure = on_send_failed;
	int rc = MQTTAsync_sendMessage(pc, topic, &msg, &ro);
	return rc == MQTTASYNC_SUCCESS ? ro.token : -1;
}

static void pub_close(void)
{
	MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
	d.timeout = 1000;
	MQTTAsync_disconnect(pc, &d);
	usleep(100 * 1000);
	MQTTAsync_destroy(&pc);
}

#else /* the physical limit */

static struct raw_conn *rc_;
static pthread_mutex_t wlock = PTHREAD_MUTEX_INITIALIZER;
static unsigned next_id;
static pthread_t reader;

/* How the handlers reach the socket: 0, each writes its own packet under
 * wlock; 'B', they append to out_q and a writer thread writes whatever
 * has gathered with one write, woken only when it was idle; 'C', they
 * append to out_q and the one that finds nobody writing writes out_q
 * until it is empty (the others return at once). */
static int batched;
static pthread_cond_t wcond = PTHREAD_COND_INITIALIZER;
static pthread_t writer;
static int writer_idle, writer_stop, writing;
struct out_buf {
	unsigned char *p;
	size_t len, cap;
	long qos0; /* QoS 0 packets in it: completed once written */
};
static struct out_buf out_q, out_w;

/* Counts the PUBACKs until the socket closes. */
static void *read_acks(void *arg)
{
	unsigned char t, *b;
	size_t len;
	(void)arg;
	while (raw_read_packet(rc_, &t, &b, &len) == 0)
		if ((t & 0xf0) == 0x40)
			hsrv_acked();
	return NULL;
}

/* Takes out_q (wlock held), writes it with wlock released, and returns
 * with wlock held again. */
static void write_out_q(void)
{
	struct out_buf t = out_w;
	out_w = out_q;
	out_q = t;
	out_q.len = 0;
	out_q.qos0 = 0;
	pthread_mutex_unlock(&wlock);
	raw_write_all(rc_->fd, out_w.p, out_w.len);
	if (out_w.qos0 > 0)
		hsrv_acked_n(out_w.qos0);
	pthread_mutex_lock(&wlock);
}

static void *write_batches(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&wlock);
	for (;;) {
		while (out_q.len == 0 && !writer_stop) {
			writer_idle = 1;
			pthread_cond_wait(&wcond, &wlock);
		}
		writer_idle = 0;
		if (out_q.len == 0)
			break;
		write_out_q();
	}
	pthread_mutex_unlock(&wlock);
	return NULL;
}

static int pub_open(int port)
{
	char id[64];
	snprintf(id, sizeof(id), "bhand-raw-%d", (int)getpid());
	if ((rc_ = malloc(sizeof(*rc_))) == NULL || raw_connect(rc_, port) != 0)
		return -1;
	raw_mqtt_connect(rc_, id, 1);
	atomic_store(&connected, 1);
	if (batched == 'B' &&
	    pthread_create(&writer, NULL, write_batches, NULL) != 0)
		return -1;
	return pthread_create(&reader, NULL, read_acks, NULL) == 0 ? 0 : -1;
}

/* Appends n bytes to out_q (under wlock), growing it by doubling. */
static int out_append(const void *p, size_t n)
{
	if (out_q.len + n > out_q.cap) {
		size_t cap = out_q.cap ? out_q.cap : 65536;
		while (cap < out_q.len + n)
			cap *= 2;
		unsigned char *q = realloc(out_q.p, cap);
		if (q == NULL)
			return -1;
		out_q.p = q;
		out_q.cap = cap;
	}
	memcpy(out_q.p + out_q.len, p, n);
	out_q.len += n;
	return 0;
}

static int pub(const char *topic, const void *p, size_t n, int qos)
{
	unsigned char h[8 + 2 + 256 + 2];
	size_t tl = strlen(topic), hl = 1;
	if (tl > 256)
		return -1;
	h[0] = (unsigned char)(0x30 | qos << 1);
	hl += raw_varint(h + hl, 2 + tl + (qos > 0 ? 2 : 0) + n);
	h[hl++] = (unsigned char)(tl >> 8);
	h[hl++] = (unsigned char)tl;
	memcpy(h + hl, topic, tl);
	hl += tl;
	size_t hlen = hl + (qos > 0 ? 2 : 0);
	int id = 0;
	pthread_mutex_lock(&wlock);
	if (qos > 0) {
		next_id = next_id % 65535 + 1;
		id = (int)next_id;
		h[hl] = (unsigned char)(id >> 8);
		h[hl + 1] = (unsigned char)id;
	}
	if (batched) {
		int rc = out_append(h, hlen) == 0 && out_append(p, n) == 0 ? id : -1;
		out_q.qos0 += rc >= 0 && qos == 0;
		if (batched == 'B' && writer_idle) {
			writer_idle = 0;
			pthread_cond_signal(&wcond);
		} else if (batched == 'C' && !writing) {
			writing = 1;
			while (out_q.len > 0)
				write_out_q();
			writing = 0;
		}
		pthread_mutex_unlock(&wlock);
		return rc;
	}
	struct iovec iov[2] = {{h, hlen}, {(void *)p, n}};
	ssize_t w = writev(rc_->fd, iov, 2);
	pthread_mutex_unlock(&wlock);
	if (w != (ssize_t)(hlen + n)) /* blocking socket: all or an error */
		return -1;
	if (qos == 0)
		hsrv_acked();
	return id;
}

static void pub_close(void)
{
	if (batched == 'B') {
		pthread_mutex_lock(&wlock);
		writer_stop = 1;
		pthread_cond_signal(&wcond);
		pthread_mutex_unlock(&wlock);
		pthread_join(writer, NULL);
	}
	free(out_q.p);
	free(out_w.p);
	shutdown(rc_->fd, SHUT_RDWR);
	pthread_join(reader, NULL);
	close(rc_->fd);
	free(rc_);
}

#endif

static int publish(struct mg_connection *conn, void *ud)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	char buf[MAX_BODY], reply[32];
	size_t n = hsrv_read_body(conn, buf, sizeof(buf));
	uint64_t t = raw_now_ns();
	int id = pub(ri->local_uri + 6 /* after "/pubN/" */, buf, n,
	             (int)(intptr_t)ud);
	if (id < 0)
		return hsrv_fail(conn, 503, "publish failed");
	hsrv_accepted(t);
	snprintf(reply, sizeof(reply), "{\"id\":%d}", id);
	return hsrv_ok(conn, reply);
}

static int acks(struct mg_connection *conn, void *ud)
{
	(void)ud;
	return hsrv_acks_reply(conn, 0, 0);
}

int main(int argc, char **argv)
{
	int opt, http = 0, broker = 0;
	const char *threads = "64";
	while ((opt = getopt(argc, argv, "p:b:t:w:BC")) != -1) {
		switch (opt) {
		case 'p': http = atoi(optarg); break;
		case 'b': broker = atoi(optarg); break;
		case 't': threads = optarg; break;
		case 'w': window = atoi(optarg); break;
#if !defined(BHAND_MOSQ) && !defined(BHAND_PAHO)
		case 'B': batched = 'B'; break;
		case 'C': batched = 'C'; break;
#endif
		default:
			fprintf(stderr, "usage: " BHAND_NAME
			                " -p http_port -b broker_port [-t threads] "
			                "[-w window] [-B|-C]\n");
			return 2;
		}
	}
	if (pub_open(broker) != 0)
		return fprintf(stderr, BHAND_NAME ": cannot connect\n"), 2;
	for (int i = 0; i < 10000 && atomic_load(&connected) == 0; i++)
		usleep(1000);
	if (atomic_load(&connected) != 1)
		return fprintf(stderr, BHAND_NAME ": not connected\n"), 2;
	struct mg_context *ctx = hsrv_start(http, threads);
	if (ctx == NULL)
		return fprintf(stderr, BHAND_NAME ": cannot start CivetWeb\n"), 2;
	mg_set_request_handler(ctx, "/pub0/", publish, (void *)(intptr_t)0);
	mg_set_request_handler(ctx, "/pub1/", publish, (void *)(intptr_t)1);
	mg_set_request_handler(ctx, "/acks", acks, NULL);
	hsrv_serve();
	mg_stop(ctx);
	pub_close();
	return 0;
}
