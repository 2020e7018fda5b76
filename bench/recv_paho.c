/*
 * recv_paho: the baseline receiver, a bare paho MQTTAsync subscriber whose
 * messageArrived callback does the accounting (what civetweb-mqtt's topic
 * handler does in recv_cwm).
 *
 *   recv_paho -p port -t filter -q qos -n expected [-l] [-w idle_ms]
 * Prints "ready" once subscribed, then the JSON result line.
 */
#include "recv_common.h"

#include <MQTTAsync.h>

static struct recv_stats stats;
static atomic_int subscribed;

static int on_message(void *ctx, char *topic, int tlen, MQTTAsync_message *m)
{
	(void)ctx;
	(void)tlen;
	recv_note(&stats, m->payload, (size_t)m->payloadlen);
	MQTTAsync_freeMessage(&m);
	MQTTAsync_free(topic);
	return 1;
}

static void on_subscribed(void *ctx, MQTTAsync_successData *r)
{
	(void)ctx;
	(void)r;
	atomic_store(&subscribed, 1);
}

static const char *g_filter;
static int g_qos;

static void on_connected(void *ctx, MQTTAsync_successData *r)
{
	MQTTAsync c = ctx;
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	(void)r;
	ro.onSuccess = on_subscribed;
	ro.context = c;
	MQTTAsync_subscribe(c, g_filter, g_qos, &ro);
}

int main(int argc, char **argv)
{
	int port = 0, opt, latency = 0;
	long expected = 0, idle = 3000;
	char uri[64], id[64];
	g_filter = "bench/#";
	while ((opt = getopt(argc, argv, "p:t:q:n:lw:")) != -1) {
		switch (opt) {
		case 'p': port = atoi(optarg); break;
		case 't': g_filter = optarg; break;
		case 'q': g_qos = atoi(optarg); break;
		case 'n': expected = atol(optarg); break;
		case 'l': latency = 1; break;
		case 'w': idle = atol(optarg); break;
		default: return 2;
		}
	}
	recv_init(&stats, expected, latency);
	snprintf(uri, sizeof(uri), "tcp://127.0.0.1:%d", port);
	snprintf(id, sizeof(id), "recv-paho-%d", (int)getpid());
	MQTTAsync c;
	/* paho at its cheapest trace level, as civetweb-mqtt sets it: without
	 * this Debian's paho records every call in its trace buffer. */
	MQTTAsync_setTraceLevel(MQTTASYNC_TRACE_ERROR);
	MQTTAsync_create(&c, uri, id, MQTTCLIENT_PERSISTENCE_NONE, NULL);
	MQTTAsync_setCallbacks(c, c, NULL, on_message, NULL);
	MQTTAsync_connectOptions o = MQTTAsync_connectOptions_initializer;
	o.onSuccess = on_connected;
	o.context = c;
	o.MQTTVersion = MQTTVERSION_3_1_1;
	if (MQTTAsync_connect(c, &o) != MQTTASYNC_SUCCESS)
		return fprintf(stderr, "connect failed\n"), 2;
	while (!atomic_load(&subscribed))
		usleep(1000);
	printf("ready\n");
	fflush(stdout);
	struct recv_usage u0 = recv_measure_begin();
	recv_wait(&stats, idle);
	struct recv_usage u1 = recv_measure_end();
	recv_report(&stats, u0, u1);
	MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
	MQTTAsync_disconnect(c, &d);
	MQTTAsync_destroy(&c);
	return 0;
}
