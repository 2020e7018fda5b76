/*
 * bserver: the web server of the HTTP, fan-out and memory benchmarks.
 *
 *   bserver -p http_port [-b broker_port] [-m mode] [-t num_threads]
 *
 * mode ceiling: CivetWeb alone. POST /ceiling reads the body and answers 200;
 *               GET /plainws is a WebSocket that does nothing (the baseline
 *               for idle browsers).
 * mode mqtt:    the same plus a civetweb-mqtt client on the broker, with
 *               POST /pub0/<topic> and /pub1/<topic> publishing the body at
 *               QoS 0 / 1 from the request handler, GET /subscribe?n=N making
 *               N subscriptions, and the bridge at /mqtt (publish and
 *               subscribe allowed on bench/#). GET /acks answers
 *               {"accepted":..,"acks":..,"failed":..,"first_ns":..,
 *               "last_ack_ns":..}: publishes accepted by /pub0 and /pub1
 *               (mg_mqtt_publish returned an id), on_publish calls with
 *               result 0 (QoS 1: PUBACK; QoS 0: written; the bridge's
 *               publishes do not reach on_publish)
 *               and with a failure, CLOCK_MONOTONIC of the first accepted
 *               publish and of the last acknowledgement, and the client's
 *               in_flight and queued gauges (the bridge's publishes count
 *               there: the driver waits for both to be 0).
 * Both set enable_keep_alive yes and tcp_nodelay 1, as the example does.
 * Prints "ready" on stdout when serving; stops on SIGTERM.
 */

#include "civetweb_mqtt.h"
#include "hsrv.h"

#include <civetweb.h>

#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_long subacks; /* SUBACKs seen: /subscribe waits for them */

static void on_publish(struct mg_mqtt *c, int id, int result, void *ud)
{
	(void)c;
	(void)id;
	(void)ud;
	if (result == 0 || result == 0x10)
		hsrv_acked();
	else
		hsrv_failed();
}

static void on_subscribe(struct mg_mqtt *c, int id, int result,
                         const int *codes, int count, void *ud)
{
	(void)c;
	(void)id;
	(void)result;
	(void)codes;
	(void)count;
	(void)ud;
	atomic_fetch_add(&subacks, 1);
}

static int ceiling(struct mg_connection *conn, void *ud)
{
	char buf[65536];
	(void)ud;
	hsrv_read_body(conn, buf, sizeof(buf));
	return hsrv_ok(conn, "{\"id\":0}");
}

static int publish(struct mg_connection *conn, void *ud)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	int qos = (int)(intptr_t)ud;
	char buf[65536], reply[32];
	size_t n = hsrv_read_body(conn, buf, sizeof(buf));
	struct mg_mqtt *m = mg_mqtt_get(mg_get_context(conn), NULL);
	const char *topic = ri->local_uri + 6; /* after "/pubN/" */
	uint64_t t = raw_now_ns();
	int id = mg_mqtt_publish(m, topic, buf, n, qos, 0);
	if (id <= 0)
		return hsrv_fail(conn, 503, mg_mqtt_strerror(id));
	hsrv_accepted(t);
	snprintf(reply, sizeof(reply), "{\"id\":%d}", id);
	return hsrv_ok(conn, reply);
}

static int subscribe_many(struct mg_connection *conn, void *ud)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	char v[16], f[64];
	(void)ud;
	long n = 0;
	if (ri->query_string != NULL &&
	    mg_get_var(ri->query_string, strlen(ri->query_string), "n", v,
	               sizeof(v)) > 0)
		n = atol(v);
	struct mg_mqtt *m = mg_mqtt_get(mg_get_context(conn), NULL);
	long want = atomic_load(&subacks) + n;
	for (long i = 0; i < n; i++) {
		snprintf(f, sizeof(f), "bench/sub/%ld/+/x", i);
		if (mg_mqtt_subscribe(m, f, 0) <= 0)
			return hsrv_fail(conn, 500, "subscribe failed");
	}
	/* Answer once the broker acknowledged them all (the status route would
	 * do, but its JSON of n subscriptions would itself weigh on the RSS). */
	for (int i = 0; i < 6000 && atomic_load(&subacks) < want; i++) {
		struct timespec ts = {0, 10 * 1000000L};
		nanosleep(&ts, NULL);
	}
	if (atomic_load(&subacks) < want)
		return hsrv_fail(conn, 504, "not all subscriptions were acknowledged");
	return hsrv_ok(conn, "{\"ok\":true}");
}

/* A number of the client's status JSON ("key":N), or -1. */
static long status_number(const char *status, const char *key)
{
	char pat[64];
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	const char *p = strstr(status, pat);
	return p != NULL ? atol(p + strlen(pat)) : -1;
}

static int ack_count(struct mg_connection *conn, void *ud)
{
	char status[8192];
	(void)ud;
	struct mg_mqtt *m = mg_mqtt_get(mg_get_context(conn), NULL);
	mg_mqtt_status(m, status, sizeof(status));
	return hsrv_acks_reply(conn, status_number(status, "in_flight"),
	                       status_number(status, "queued"));
}

static int ws_connect(const struct mg_connection *c, void *ud)
{
	(void)c;
	(void)ud;
	return 0;
}

static int ws_data(struct mg_connection *c, int bits, char *d, size_t n,
                   void *ud)
{
	(void)c;
	(void)bits;
	(void)d;
	(void)n;
	(void)ud;
	return (bits & 0xf) != MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE;
}

int main(int argc, char **argv)
{
	int opt, http = 0, broker = 0;
	const char *mode = "ceiling", *threads = "64";
	char url[64], err[512];
	while ((opt = getopt(argc, argv, "p:b:m:t:")) != -1) {
		switch (opt) {
		case 'p': http = atoi(optarg); break;
		case 'b': broker = atoi(optarg); break;
		case 'm': mode = optarg; break;
		case 't': threads = optarg; break;
		default: return 2;
		}
	}
	int with_mqtt = strcmp(mode, "mqtt") == 0;
	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", broker);
	struct mg_context *ctx = hsrv_start(http, threads);
	if (ctx == NULL)
		return fprintf(stderr, "bserver: cannot start CivetWeb\n"), 2;
	mg_set_request_handler(ctx, "/ceiling", ceiling, NULL);
	mg_set_websocket_handler(ctx, "/plainws", ws_connect, NULL, ws_data, NULL,
	                         NULL);
	struct mg_mqtt *m = NULL;
	if (with_mqtt) {
		const char *opts[] = {"MQTT_BROKER_URL", url, "MQTT_BRIDGE_PATH", "/mqtt",
		                      "MQTT_BRIDGE_PUBLISH_ALLOW", "bench/#",
		                      "MQTT_BRIDGE_SUBSCRIBE_ALLOW", "bench/#",
		                      "MQTT_BRIDGE_CLIENT_QUEUE", "100000",
		                      /* fan-out and idle rows hold 100 and 1,000
		                       * WebSockets: the guard against starving
		                       * workers is not what is measured */
		                      "MQTT_BRIDGE_MAX_CLIENTS", "100000",
		                      "MQTT_MAX_BUFFERED", "1000000",
		                      /* BSERVER_MAX_INFLIGHT: another window than
		                       * the default's (experiments) */
		                      getenv("BSERVER_MAX_INFLIGHT") ? "MQTT_MAX_INFLIGHT"
		                                                      : NULL,
		                      getenv("BSERVER_MAX_INFLIGHT"), NULL};
		m = mg_mqtt_create(NULL);
		mg_mqtt_on_subscribe(m, on_subscribe, NULL);
		mg_mqtt_on_publish(m, on_publish, NULL);
		if (mg_mqtt_start(m, ctx, opts, err, sizeof(err)) != 0)
			return fprintf(stderr, "bserver: %s\n", err), 2;
		mg_set_request_handler(ctx, "/pub0/", publish, (void *)(intptr_t)0);
		mg_set_request_handler(ctx, "/pub1/", publish, (void *)(intptr_t)1);
		mg_set_request_handler(ctx, "/subscribe", subscribe_many, NULL);
		mg_set_request_handler(ctx, "/acks", ack_count, NULL);
	}
	hsrv_serve();
	mg_stop(ctx);
	mg_mqtt_stop(m);
	return 0;
}
