/*
 * bdispatch: nanoseconds per message in the dispatch path (topic tree match
 * plus handler calls, as mqtt-dispatch runs them) with 1, 100 and 10,000
 * registered topic handlers of mixed kinds. Includes the library's .c to
 * call its dispatch function directly, without a broker.
 *
 *   bdispatch [messages]      prints one JSON line per handler count
 */
#include "../civetweb_mqtt.c"

static volatile unsigned long hits;

static void on_msg(struct mg_mqtt *c, const struct mg_mqtt_message *m, void *ud)
{
	(void)c;
	(void)m;
	(void)ud;
	hits++;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Handler i of n: exact, '+' and '#' filters in turn, on a site/device
 * tree like a gateway's; handler 0 is the one the traffic is for. */
static void filter_for(int i, char *buf, size_t len)
{
	if (i == 0)
		snprintf(buf, len, "plant/+/line/+/temperature");
	else if (i % 3 == 0)
		snprintf(buf, len, "site/%d/device/%d/temperature", i, i * 7);
	else if (i % 3 == 1)
		snprintf(buf, len, "site/%d/+/status", i);
	else
		snprintf(buf, len, "site/%d/alarms/#", i);
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 2000000;
	static const int counts[] = {1, 100, 10000};
	char topics[64][64];
	for (int t = 0; t < 64; t++)
		snprintf(topics[t], sizeof(topics[t]), "plant/%d/line/%d/temperature",
		         t % 8, t);
	for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++) {
		struct mg_mqtt *c = mg_mqtt_create(NULL);
		char f[128];
		for (int i = 0; i < counts[k]; i++) {
			filter_for(i, f, sizeof(f));
			if (mg_mqtt_on_topic(c, f, on_msg, NULL) != 0)
				return fprintf(stderr, "bad filter %s\n", f), 2;
		}
		struct mg_mqtt_message msg;
		memset(&msg, 0, sizeof(msg));
		msg.payload = "21.5";
		msg.payload_len = 4;
		msg.props = &cwm_no_props;
		/* Warm up, then time. */
		for (long i = 0; i < 100000; i++) {
			msg.topic = topics[i & 63];
			msg.topic_len = strlen(msg.topic);
			cwm_dispatch_handlers(c, &msg, 0);
		}
		hits = 0;
		uint64_t t0 = now_ns();
		for (long i = 0; i < n; i++) {
			msg.topic = topics[i & 63];
			msg.topic_len = strlen(msg.topic);
			cwm_dispatch_handlers(c, &msg, 0);
		}
		uint64_t t1 = now_ns();
		if (hits != (unsigned long)n)
			return fprintf(stderr, "expected %ld calls, got %lu\n", n, hits), 2;
		printf("{\"handlers\":%d,\"ns_per_msg\":%.1f}\n", counts[k],
		       (double)(t1 - t0) / (double)n);
		mg_mqtt_stop(c);
	}
	return 0;
}
