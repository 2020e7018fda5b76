/*
 * recv_cwm: civetweb-mqtt as the receiver: a topic handler does the
 * accounting (what the messageArrived callback does in recv_paho).
 *
 *   recv_cwm -p port[,port2] -t filter -q qos -n expected [-l] [-w idle_ms]
 *            [-I]
 * With two ports, two clients (prefixes MQTT and MQTT2) share the count.
 * -I: the handler is registered with mg_mqtt_on_topic_inline(): it runs on
 * paho's receive thread (no queue, no wake-up).
 * Prints "ready" once subscribed, then the JSON result line.
 */
#include "recv_common.h"

#include "civetweb_mqtt.h"

static struct recv_stats stats;

static void on_topic(struct mg_mqtt *c, const struct mg_mqtt_message *m,
                     void *ud)
{
	(void)c;
	(void)ud;
	recv_note(&stats, m->payload, m->payload_len);
}

static int settled(struct mg_mqtt *c)
{
	struct mg_mqtt_subscription *s = NULL;
	int n = mg_mqtt_subscriptions(c, &s), ok = n == 1 && s[0].granted >= 0;
	free(s);
	return ok;
}

int main(int argc, char **argv)
{
	int opt, latency = 0, qos = 0, nports = 0, ports[2], inline_handler = 0;
	long expected = 0, idle = 3000;
	const char *filter = "bench/#";
	char *portlist = NULL;
	while ((opt = getopt(argc, argv, "p:t:q:n:lw:I")) != -1) {
		switch (opt) {
		case 'I': inline_handler = 1; break;
		case 'p': portlist = optarg; break;
		case 't': filter = optarg; break;
		case 'q': qos = atoi(optarg); break;
		case 'n': expected = atol(optarg); break;
		case 'l': latency = 1; break;
		case 'w': idle = atol(optarg); break;
		default: return 2;
		}
	}
	for (char *save = NULL, *p = strtok_r(portlist, ",", &save);
	     p != NULL && nports < 2; p = strtok_r(NULL, ",", &save))
		ports[nports++] = atoi(p);
	recv_init(&stats, expected, latency);
	struct mg_mqtt *cl[2];
	char url[2][64], sub[2][128], q[8], err[512];
	snprintf(q, sizeof(q), "%d", qos);
	for (int i = 0; i < nports; i++) {
		snprintf(url[i], sizeof(url[i]), "tcp://127.0.0.1:%d", ports[i]);
		snprintf(sub[i], sizeof(sub[i]), "%s:%d", filter, qos);
		cl[i] = mg_mqtt_create(i == 0 ? "MQTT" : "MQTT2");
		if (inline_handler)
			mg_mqtt_on_topic_inline(cl[i], filter, on_topic, NULL);
		else
			mg_mqtt_on_topic(cl[i], filter, on_topic, NULL);
		/* Nothing may be dropped for want of room: the queue bound is not
		 * what is measured here. */
		const char *opts[] = {"MQTT_BROKER_URL", url[0], "MQTT_SUBSCRIBE", sub[0],
		                      "MQTT2_BROKER_URL", nports > 1 ? url[1] : url[0],
		                      "MQTT2_SUBSCRIBE", nports > 1 ? sub[1] : sub[0],
		                      "MQTT_QUEUE_SIZE", "1000000",
		                      "MQTT_QUEUE_BYTES", "1073741824",
		                      "MQTT2_QUEUE_SIZE", "1000000",
		                      "MQTT2_QUEUE_BYTES", "1073741824", NULL};
		if (mg_mqtt_start(cl[i], NULL, opts, err, sizeof(err)) != 0)
			return fprintf(stderr, "%s\n", err), 2;
	}
	for (int i = 0; i < nports; i++)
		while (!settled(cl[i]))
			usleep(1000);
	printf("ready\n");
	fflush(stdout);
	struct recv_usage u0 = recv_measure_begin();
	recv_wait(&stats, idle);
	struct recv_usage u1 = recv_measure_end();
	recv_report(&stats, u0, u1);
	char status[4096];
	for (int i = 0; i < nports; i++) {
		mg_mqtt_status(cl[i], status, sizeof(status));
		char *d = strstr(status, "\"dropped_queue_full\":");
		if (d != NULL && atol(d + 21) > 0)
			fprintf(stderr, "recv_cwm: %ld dropped (queue full)\n", atol(d + 21));
		mg_mqtt_stop(cl[i]);
	}
	return 0;
}
