/*
 * bstart: the time to connect k clients in one process, with bare paho
 * MQTTAsync (built with -DBSTART_PAHO: bstart_paho) or with civetweb-mqtt
 * (bstart_cwm).
 *
 *   bstart_paho -p port -k clients -m seq|together|late|traffic|unsub
 *   bstart_cwm  -p port -k clients -m seq|threads
 *
 * seq:      one client after the other, each connected before the next.
 * together: (paho) every MQTTAsync_connect issued at once, then wait.
 * late:     (paho) the first client connected, then the others' connects
 *           issued at once.
 * traffic:  (paho) like seq, but the first client is subscribed to a topic
 *           of its own and publishes to it every 10 ms while the others
 *           connect, so its socket has something to read.
 * unsub:    (paho) like traffic, but the first client sends an UNSUBSCRIBE
 *           of a filter it never subscribed every 10 ms (the broker's
 *           UNSUBACK is what its socket reads; no subscription needed).
 * threads:  (civetweb-mqtt) every mg_mqtt_start from its own thread at once.
 * Prints {"clients":k,"mode":"..","total_s":..,"each_s":[..]}: the time from
 * before the first create to each client connected (MQTT CONNACK seen).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAXK 16

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int port, k = 1;
static const char *mode = "seq";
static double t0, done_at[MAXK];
static atomic_int connected[MAXK];

#ifdef BSTART_PAHO
#include <MQTTAsync.h>

static void wait_for(int i)
{
	for (int n = 0; !atomic_load(&connected[i]); n++) {
		if (n > 30000) { /* 30 s */
			fprintf(stderr, "bstart: client %d did not connect\n", i);
			exit(2);
		}
		usleep(1000);
	}
}

static MQTTAsync cl[MAXK];
static char tick_topic[64];
static atomic_int ticking, subscribed;

static void on_connected(void *ctx, MQTTAsync_successData *r)
{
	int i = (int)(intptr_t)ctx;
	(void)r;
	done_at[i] = now_s();
	atomic_store(&connected[i], 1);
}

static void on_subscribed(void *ctx, MQTTAsync_successData *r)
{
	(void)ctx;
	(void)r;
	atomic_store(&subscribed, 1);
}

static int on_message(void *ctx, char *topic, int tlen, MQTTAsync_message *m)
{
	(void)ctx;
	(void)tlen;
	MQTTAsync_freeMessage(&m);
	MQTTAsync_free(topic);
	return 1;
}

static void create(int i)
{
	char uri[64], id[64];
	snprintf(uri, sizeof(uri), "tcp://127.0.0.1:%d", port);
	snprintf(id, sizeof(id), "bstart-%d-%d", (int)getpid(), i);
	MQTTAsync_create(&cl[i], uri, id, MQTTCLIENT_PERSISTENCE_NONE, NULL);
	MQTTAsync_setCallbacks(cl[i], NULL, NULL, on_message, NULL);
}

static void connect_one(int i)
{
	MQTTAsync_connectOptions o = MQTTAsync_connectOptions_initializer;
	o.onSuccess = on_connected;
	o.context = (void *)(intptr_t)i;
	o.MQTTVersion = MQTTVERSION_3_1_1;
	if (MQTTAsync_connect(cl[i], &o) != MQTTASYNC_SUCCESS) {
		fprintf(stderr, "bstart: connect %d refused\n", i);
		exit(2);
	}
}

static void *ticker(void *arg)
{
	int unsub = arg != NULL;
	char b = 'x';
	while (atomic_load(&ticking)) {
		if (unsub)
			MQTTAsync_unsubscribe(cl[0], tick_topic, NULL);
		else
			MQTTAsync_send(cl[0], tick_topic, 1, &b, 0, 0, NULL);
		usleep(10000);
	}
	return NULL;
}

static void run(void)
{
	pthread_t tk;
	if (strcmp(mode, "together") == 0) {
		for (int i = 0; i < k; i++)
			create(i);
		for (int i = 0; i < k; i++)
			connect_one(i);
		for (int i = 0; i < k; i++)
			wait_for(i);
		return;
	}
	if (strcmp(mode, "late") == 0) {
		create(0);
		connect_one(0);
		wait_for(0);
		for (int i = 1; i < k; i++)
			create(i);
		for (int i = 1; i < k; i++)
			connect_one(i);
		for (int i = 1; i < k; i++)
			wait_for(i);
		return;
	}
	int unsub = strcmp(mode, "unsub") == 0;
	int traffic = unsub || strcmp(mode, "traffic") == 0;
	for (int i = 0; i < k; i++) {
		create(i);
		connect_one(i);
		wait_for(i);
		if (i == 0 && traffic) {
			snprintf(tick_topic, sizeof(tick_topic), "bstart/%d/tick",
			         (int)getpid());
			if (!unsub) {
				MQTTAsync_responseOptions ro =
				    MQTTAsync_responseOptions_initializer;
				ro.onSuccess = on_subscribed;
				MQTTAsync_subscribe(cl[0], tick_topic, 0, &ro);
				while (!atomic_load(&subscribed))
					usleep(1000);
			}
			atomic_store(&ticking, 1);
			pthread_create(&tk, NULL, ticker, unsub ? (void *)1 : NULL);
		}
	}
	if (traffic) {
		atomic_store(&ticking, 0);
		pthread_join(tk, NULL);
	}
}

static void finish(void)
{
	for (int i = 0; i < k; i++) {
		MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
		d.timeout = 100;
		MQTTAsync_disconnect(cl[i], &d);
	}
	usleep(200000);
	for (int i = 0; i < k; i++)
		MQTTAsync_destroy(&cl[i]);
}

#else
#include "civetweb_mqtt.h"

static struct mg_mqtt *cl[MAXK];

static void start_one(int i)
{
	char prefix[16], key[32], url[64], err[256];
	snprintf(prefix, sizeof(prefix), i == 0 ? "MQTT" : "MQTT%d", i + 1);
	snprintf(key, sizeof(key), "%s_BROKER_URL", prefix);
	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", port);
	const char *opts[] = {key, url, NULL};
	cl[i] = mg_mqtt_create(prefix);
	if (cl[i] == NULL || mg_mqtt_start(cl[i], NULL, opts, err, sizeof(err)) != 0) {
		fprintf(stderr, "bstart: %s: %s\n", prefix, err);
		exit(2);
	}
	/* mg_mqtt_start returns once the first connection is made. */
	done_at[i] = now_s();
	atomic_store(&connected[i], 1);
}

static void *start_thread(void *arg)
{
	start_one((int)(intptr_t)arg);
	return NULL;
}

static void run(void)
{
	if (strcmp(mode, "threads") == 0) {
		pthread_t th[MAXK];
		for (int i = 0; i < k; i++)
			pthread_create(&th[i], NULL, start_thread, (void *)(intptr_t)i);
		for (int i = 0; i < k; i++)
			pthread_join(th[i], NULL);
		return;
	}
	for (int i = 0; i < k; i++)
		start_one(i);
}

static void finish(void)
{
	for (int i = 0; i < k; i++)
		mg_mqtt_stop(cl[i]);
}
#endif

int main(int argc, char **argv)
{
	int opt;
	while ((opt = getopt(argc, argv, "p:k:m:")) != -1) {
		switch (opt) {
		case 'p': port = atoi(optarg); break;
		case 'k': k = atoi(optarg); break;
		case 'm': mode = optarg; break;
		default: return 2;
		}
	}
	if (k < 1 || k > MAXK)
		return fprintf(stderr, "bstart: 1 <= k <= %d\n", MAXK), 2;
	t0 = now_s();
	run();
	double total = 0;
	printf("{\"clients\":%d,\"mode\":\"%s\",\"each_s\":[", k, mode);
	for (int i = 0; i < k; i++) {
		printf("%s%.4f", i ? "," : "", done_at[i] - t0);
		if (done_at[i] - t0 > total)
			total = done_at[i] - t0;
	}
	printf("],\"total_s\":%.4f}\n", total);
	fflush(stdout);
	finish();
	return 0;
}
