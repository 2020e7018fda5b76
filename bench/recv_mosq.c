/*
 * recv_mosq: a second baseline receiver, libmosquitto with its loop thread
 * (mosquitto_loop_start); the on_message callback does the accounting (what
 * messageArrived does in recv_paho and the topic handler in recv_cwm).
 *
 *   recv_mosq -p port -t filter -q qos -n expected [-l] [-w idle_ms]
 * Prints "ready" once subscribed, then the JSON result line.
 */
#include "recv_common.h"

#include <mosquitto.h>

static struct recv_stats stats;
static atomic_int subscribed;
static const char *g_filter;
static int g_qos;

static void on_message(struct mosquitto *m, void *ud,
                       const struct mosquitto_message *msg)
{
	(void)m;
	(void)ud;
	recv_note(&stats, msg->payload, (size_t)msg->payloadlen);
}

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int n,
                         const int *granted)
{
	(void)m;
	(void)ud;
	(void)mid;
	if (n == 1 && granted[0] <= 2)
		atomic_store(&subscribed, 1);
}

static void on_connect(struct mosquitto *m, void *ud, int rc)
{
	(void)ud;
	if (rc == 0)
		mosquitto_subscribe(m, NULL, g_filter, g_qos);
}

int main(int argc, char **argv)
{
	int port = 0, opt, latency = 0;
	long expected = 0, idle = 3000;
	char id[64];
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
	mosquitto_lib_init();
	snprintf(id, sizeof(id), "recv-mosq-%d", (int)getpid());
	struct mosquitto *m = mosquitto_new(id, true, NULL);
	if (m == NULL)
		return fprintf(stderr, "mosquitto_new failed\n"), 2;
	mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
	mosquitto_connect_callback_set(m, on_connect);
	mosquitto_subscribe_callback_set(m, on_subscribe);
	mosquitto_message_callback_set(m, on_message);
	if (mosquitto_connect(m, "127.0.0.1", port, 60) != MOSQ_ERR_SUCCESS ||
	    mosquitto_loop_start(m) != MOSQ_ERR_SUCCESS)
		return fprintf(stderr, "connect failed\n"), 2;
	while (!atomic_load(&subscribed))
		usleep(1000);
	printf("ready\n");
	fflush(stdout);
	struct recv_usage u0 = recv_measure_begin();
	recv_wait(&stats, idle);
	struct recv_usage u1 = recv_measure_end();
	recv_report(&stats, u0, u1);
	mosquitto_disconnect(m);
	mosquitto_loop_stop(m, false);
	mosquitto_destroy(m);
	mosquitto_lib_cleanup();
	return 0;
}
