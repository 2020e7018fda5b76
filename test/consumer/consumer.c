/*
 * A CivetWeb program that uses civetweb-mqtt as a user would, built three
 * ways by test/consumer/run.sh (find_package, pkg-config, add_subdirectory).
 * Usage: consumer <broker URL>
 * Starts CivetWeb on a free loopback port (127.0.0.1:0), connects, subscribes in the connect
 * handler, publishes once the subscription is acknowledged, and exits 0
 * when its own message came back (1 on any failure, or after 30 s).
 */
#define _POSIX_C_SOURCE 200809L
#include <civetweb.h>
#include <civetweb_mqtt.h>

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int received;
static char topic[64];

static void on_connect(struct mg_mqtt *c,
                       const struct mg_mqtt_connect_info *info, void *ud)
{
	(void)ud;
	if (info->connected && mg_mqtt_subscribe(c, topic, 1) < 0)
		fprintf(stderr, "consumer: subscribe failed\n");
}

static void on_subscribe(struct mg_mqtt *c, int id, int rc, const int *codes,
                         int count, void *ud)
{
	(void)id;
	(void)ud;
	if (rc < 0 || count != 1 || codes[0] >= 0x80 || mg_mqtt_publish(c, topic, "hello", 5, 1, 0) < 0)
		fprintf(stderr, "consumer: subscribe or publish failed (%d)\n", rc);
}

static void on_message(struct mg_mqtt *c, const struct mg_mqtt_message *m,
                       void *ud)
{
	(void)c;
	(void)ud;
	if (m->payload_len == 5 && memcmp(m->payload, "hello", 5) == 0)
		atomic_store(&received, 1);
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return fprintf(stderr, "usage: consumer <broker URL>\n"), 1;
	snprintf(topic, sizeof(topic), "consumer/%ld/echo", (long)getpid());

	const char *web[] = {"listening_ports", "127.0.0.1:0", NULL};
	mg_init_library(0);
	struct mg_context *ctx = mg_start(NULL, NULL, web);
	if (ctx == NULL)
		return fprintf(stderr, "consumer: mg_start failed\n"), 1;

	struct mg_mqtt *mqtt = mg_mqtt_create("MQTT");
	mg_mqtt_on_connect(mqtt, on_connect, NULL);
	mg_mqtt_on_subscribe(mqtt, on_subscribe, NULL);
	mg_mqtt_on_topic(mqtt, topic, on_message, NULL);
	const char *opts[] = {"MQTT_BROKER_URL", argv[1], NULL};
	char err[256];
	if (mg_mqtt_start(mqtt, ctx, opts, err, sizeof(err)) != 0) {
		fprintf(stderr, "consumer: %s\n", err);
		mg_stop(ctx);
		mg_mqtt_stop(mqtt);
		return 1;
	}
	int ok = mg_mqtt_get(ctx, NULL) == mqtt;
	for (int i = 0; i < 3000 && !atomic_load(&received); i++)
		nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
	ok = ok && atomic_load(&received);

	mg_stop(ctx);
	mg_mqtt_stop(mqtt);
	mg_exit_library();
	printf("consumer (MG_MQTT_VERSION %s): %s\n", MG_MQTT_VERSION,
	       ok ? "received its own message" : "FAILED");
	return ok ? 0 : 1;
}
