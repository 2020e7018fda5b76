/*
 * Connecting, against real mosquitto brokers: credentials, TLS (CA, host
 * name, client certificates), WebSocket transport, protocol versions and
 * MQTT 5 properties and reason codes, QoS and retain both ways, last will
 * and birth messages, shared subscriptions, several prefixes at once, the
 * fail-over list, and CONNECT_ASYNC either way.
 */
#include "rec.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------ */

static struct mg_mqtt *client_with(struct rec *r, const char *prefix)
{
	struct mg_mqtt *c = mg_mqtt_create(prefix);
	ASSERT(c != NULL);
	rec_init(r);
	rec_attach(c, r);
	return c;
}

/* The client's status JSON, malloc()ed. */
static char *status_of(struct mg_mqtt *c)
{
	int n = mg_mqtt_status(c, NULL, 0);
	ASSERT_GT(n, 0);
	char *buf = malloc((size_t)n + 1);
	ASSERT(buf != NULL);
	ASSERT_EQ(mg_mqtt_status(c, buf, (size_t)n + 1), n);
	return buf;
}

/* Messages recorded on topic with payload (NULL: any). */
static int rec_count(struct rec *r, const char *topic, const char *payload)
{
	int n = 0;
	pthread_mutex_lock(&r->mu);
	for (int i = 0; i < r->nmsgs; i++)
		n += strcmp(r->msgs[i].topic, topic) == 0 &&
		     (payload == NULL || strcmp(r->msgs[i].payload, payload) == 0);
	pthread_mutex_unlock(&r->mu);
	return n;
}

/* 1 when some log line starts with `start` and contains `needle`. */
static int rec_log_line(struct rec *r, const char *start, const char *needle)
{
	int found = 0;
	size_t sl = strlen(start);
	pthread_mutex_lock(&r->mu);
	for (const char *p = r->log; p != NULL && *p != '\0' && !found;) {
		const char *e = strchr(p, '\n');
		size_t n = e != NULL ? (size_t)(e - p) : strlen(p);
		if (n >= sl && strncmp(p, start, sl) == 0) {
			char line[1024];
			snprintf(line, sizeof(line), "%.*s", (int)n, p);
			found = strstr(line, needle) != NULL;
		}
		p += n + (e != NULL);
	}
	pthread_mutex_unlock(&r->mu);
	return found;
}

/* Index of the acknowledgement of subscribe id, or -1. */
static int rec_find_sub(struct rec *r, int id)
{
	int found = -1;
	pthread_mutex_lock(&r->mu);
	for (int i = 0; i < r->nsub && found < 0; i++)
		if (r->sub[i].id == id)
			found = i;
	pthread_mutex_unlock(&r->mu);
	return found;
}

/* Result of the publish acknowledgement for id; fails if none comes. */
static int pub_result(struct rec *r, int id)
{
	ASSERT(WAIT_UNTIL(rec_find_pub(r, id) >= 0, 10000));
	pthread_mutex_lock(&r->mu);
	int v = r->pub[rec_find_pub_locked_(r, id)].result;
	pthread_mutex_unlock(&r->mu);
	return v;
}
