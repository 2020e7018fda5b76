/* A CivetWeb program with an MQTT client: prints home/+/temperature
 * readings, and POST /lamp publishes "on" to home/lamp. */
#define _POSIX_C_SOURCE 200809L /* sleep() under -std=c11 */
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <civetweb.h>
#include "civetweb_mqtt.h"

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

/* CivetWeb's error messages (a port in use, a bad option) to stderr. */
static int on_civetweb_log(const struct mg_connection *conn, const char *msg)
{
	(void)conn;
	fprintf(stderr, "civetweb: %s\n", msg);
	return 1;
}

/* Runs on the client's dispatch thread, for every message matching the
 * filter; MQTT_SUBSCRIBE in civetweb.conf makes the broker send them. */
static void on_temperature(struct mg_mqtt *c, const struct mg_mqtt_message *m,
                           void *ud)
{
	(void)c;
	(void)ud;
	printf("%s: %.*s\n", m->topic, (int)m->payload_len, (const char *)m->payload);
	fflush(stdout);
}

/* Runs on a CivetWeb worker thread. */
static int lamp_handler(struct mg_connection *conn, void *ud)
{
	struct mg_mqtt *mqtt = mg_mqtt_get(mg_get_context(conn), NULL);
	(void)ud;
	/* Never blocks: buffered while the broker is away. */
	int id = mg_mqtt_publish(mqtt, "home/lamp", "on", 2, 1, 0);
	if (id < 0) {
		mg_send_http_error(conn, 503, "%s", mg_mqtt_strerror(id));
		return 503;
	}
	mg_send_http_ok(conn, "text/plain", 3);
	mg_write(conn, "ok\n", 3);
	return 200;
}

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "civetweb.conf";
	struct mg_mqtt_config cfg;
	char err[512];
	if (mg_mqtt_config_read(&cfg, path, NULL, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	/* A name nobody takes (a misspelt CivetWeb option) stops it, named. */
	if (mg_mqtt_config_check(&cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s: %s\n", path, err);
		mg_mqtt_config_free(&cfg);
		return 1;
	}

	struct mg_callbacks callbacks = {0};
	callbacks.log_message = on_civetweb_log;
	mg_init_library(0);
	struct mg_context *ctx = mg_start(&callbacks, NULL, cfg.civetweb);
	if (ctx == NULL) {
		fprintf(stderr, "cannot start the web server\n");
		mg_mqtt_config_free(&cfg);
		return 1;
	}

	struct mg_mqtt *mqtt = mg_mqtt_create("MQTT"); /* reads MQTT_* options */
	if (mqtt == NULL ||
	    mg_mqtt_on_topic(mqtt, "home/+/temperature", on_temperature, NULL) != 0 ||
	    mg_mqtt_start(mqtt, ctx, cfg.mqtt, err, sizeof(err)) != 0) {
		fprintf(stderr, "MQTT: %s\n", mqtt != NULL ? err : "out of memory");
		mg_stop(ctx);
		mg_mqtt_stop(mqtt); /* also frees a client that never started */
		mg_mqtt_config_free(&cfg);
		return 1;
	}
	mg_set_request_handler(ctx, "/lamp", lamp_handler, NULL);

	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	while (!stopping)
		sleep(1);

	mg_stop(ctx);       /* the web server first: no handler uses the client after */
	mg_mqtt_stop(mqtt); /* disconnects (no last will), joins, frees */
	mg_mqtt_config_free(&cfg);
	mg_exit_library();
	return 0;
}
