/* Prints the readings of home/+/temperature; POST /lamp publishes "on". */
#include <stdio.h>
#include <civetweb.h>
#include "civetweb_mqtt.h"

/* Runs on the client's dispatch thread, one message after the other. */
static void on_reading(struct mg_mqtt *c, const struct mg_mqtt_message *m,
                       void *ud)
{
	(void)c, (void)ud;
	printf("%s: %.*s\n", m->topic, (int)m->payload_len, (const char *)m->payload);
	fflush(stdout);
}

/* Runs on a CivetWeb worker; publishing never blocks (buffered while the
 * broker is away). */
static int on_lamp(struct mg_connection *conn, void *mqtt)
{
	int id = mg_mqtt_publish(mqtt, "home/lamp", "on", 2, 1, 0);
	if (id < 0)
		return mg_send_http_error(conn, 503, "%s", mg_mqtt_strerror(id)), 503;
	return mg_send_http_ok(conn, "text/plain", 0), 200;
}

int main(void)
{
	struct mg_mqtt_config cfg;
	char err[256] = "";
	if (mg_mqtt_config_read(&cfg, "civetweb.conf", NULL, err, sizeof(err)) != 0 ||
	    mg_mqtt_config_check(&cfg, err, sizeof(err)) != 0) /* a misspelt name */
		return fprintf(stderr, "%s\n", err), 1;
	struct mg_context *ctx = mg_start(NULL, NULL, cfg.civetweb);
	struct mg_mqtt *mqtt = mg_mqtt_create("MQTT"); /* reads the MQTT_* options */
	if (ctx == NULL || mqtt == NULL ||
	    mg_mqtt_on_topic(mqtt, "home/+/temperature", on_reading, NULL) != 0 ||
	    mg_mqtt_start(mqtt, ctx, cfg.mqtt, err, sizeof(err)) != 0)
		return fprintf(stderr, "cannot start: %s\n", err), 1;
	mg_set_request_handler(ctx, "/lamp", on_lamp, mqtt);
	getchar();          /* Enter, or the end of the input, stops it */
	mg_stop(ctx);       /* first: then no handler uses the client */
	mg_mqtt_stop(mqtt); /* disconnects, joins, frees */
	mg_mqtt_config_free(&cfg);
	return 0;
}
