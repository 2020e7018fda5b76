/*
 * bidle_mosq: the libmosquitto reference of the idle measurement: a client
 * connected with keep-alive 60 s, subscribed to demo/# at QoS 1 (as the
 * example's MQTT_SUBSCRIBE), its network thread from mosquitto_loop_start,
 * the main thread in sigwait. No traffic.
 *
 *   bidle_mosq -p broker_port
 *
 * Prints "ready" once the subscription is acknowledged; stops on SIGTERM.
 */
#include <mosquitto.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void on_connect(struct mosquitto *m, void *ud, int rc)
{
	(void)ud;
	if (rc != 0 || mosquitto_subscribe(m, NULL, "demo/#", 1) != MOSQ_ERR_SUCCESS) {
		fprintf(stderr, "bidle_mosq: connect refused or subscribe failed\n");
		exit(2);
	}
}

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int n,
                         const int *granted)
{
	(void)m;
	(void)ud;
	(void)mid;
	(void)n;
	(void)granted;
	printf("ready\n");
	fflush(stdout);
}

int main(int argc, char **argv)
{
	int opt, port = 0, sig;
	char id[64];
	sigset_t set;
	while ((opt = getopt(argc, argv, "p:")) != -1) {
		if (opt != 'p')
			return fprintf(stderr, "usage: bidle_mosq -p broker_port\n"), 2;
		port = atoi(optarg);
	}
	/* Blocked before any thread starts: every thread inherits the mask,
	 * and only sigwait takes the signal. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	snprintf(id, sizeof(id), "bidle-mosq-%d", (int)getpid());
	mosquitto_lib_init();
	struct mosquitto *m = mosquitto_new(id, true, NULL);
	if (m == NULL)
		return 2;
	mosquitto_connect_callback_set(m, on_connect);
	mosquitto_subscribe_callback_set(m, on_subscribe);
	if (mosquitto_connect(m, "127.0.0.1", port, 60) != MOSQ_ERR_SUCCESS ||
	    mosquitto_loop_start(m) != MOSQ_ERR_SUCCESS)
		return fprintf(stderr, "bidle_mosq: cannot connect\n"), 2;
	sigwait(&set, &sig);
	mosquitto_disconnect(m);
	mosquitto_loop_stop(m, false);
	mosquitto_destroy(m);
	mosquitto_lib_cleanup();
	return 0;
}
