/*
 * bws: many browser-like clients of the bridge on one epoll loop, speaking
 * raw WebSocket (RFC 6455, masked client frames) or Server-Sent Events.
 *
 *   bws -p http_port -n clients -k ws|sse|plainws [-t filter] [-e expected]
 *       [-w idle_ms]
 * ws / sse: subscribe every client to filter (default bench/#), print
 *   "ready" once all are subscribed, then count message deliveries until
 *   clients x expected arrived or nothing came for idle_ms, and print
 *   {"deliveries":..,"rate":..,"p50_us":..,"p99_us":..} (latency from the
 *   publisher's text stamp to arrival here).
 * mqtt: the baseline of the fan-out: the same number of plain MQTT
 *   subscribers straight from the broker (-p is then the broker's port).
 * plainws: open the connections to /plainws (the CivetWeb baseline) or, with
 *   -k ws and -e 0, to the bridge, print "ready", and hold them idle until
 *   SIGTERM.
 */
#include "mqttraw.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>

struct cl {
	int fd;
	int stage; /* 0 handshake, 1 subscribing, 2 live */
	char *buf;
	size_t have, cap;
};

static int cmp_u64_bws(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static volatile sig_atomic_t stop;
static void on_term(int s)
{
	(void)s;
	stop = 1;
}

static void ws_send_text(int fd, const char *text)
{
	size_t n = strlen(text), h = 0;
	unsigned char frame[512];
	unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
	frame[h++] = 0x81;
	frame[h++] = (unsigned char)(0x80 | n); /* n < 126 */
	memcpy(frame + h, mask, 4);
	h += 4;
	for (size_t i = 0; i < n; i++)
		frame[h + i] = (unsigned char)text[i] ^ mask[i & 3];
	raw_write_all(fd, frame, h + n);
}

static uint64_t *lat;
static long nlat, latcap, deliveries;
static uint64_t first_ns, last_ns;

/* One JSON text received: a delivery if it is a message. */
static int on_text(const char *t, size_t n)
{
	if (memmem(t, n, "\"op\":\"message\"", 14) == NULL)
		return memmem(t, n, "\"op\":\"ack\"", 10) != NULL ? 1 : 0;
	const char *p = memmem(t, n, "\"payload\":\"", 11);
	uint64_t now = raw_now_ns();
	if (p != NULL) {
		struct raw_stamp st = raw_stamp_read(p + 11, (size_t)(t + n - p - 11));
		if (nlat < latcap && st.sent_ns > 0)
			lat[nlat++] = now - st.sent_ns;
	}
	if (deliveries++ == 0)
		first_ns = now;
	last_ns = now;
	return 2;
}

static int mqtt_mode;

/* Parses what a client has buffered; returns how many acks it saw. */
static int parse(struct cl *c, int sse)
{
	int acks = 0;
	size_t pos = 0;
	for (;;) {
		size_t avail = c->have - pos;
		unsigned char *p = (unsigned char *)c->buf + pos;
		if (mqtt_mode) {
			size_t v = 0, mult = 1, i = 1;
			int complete = 0;
			for (; i < avail && i <= 4; i++) {
				v += (p[i] & 127) * mult;
				mult *= 128;
				if (!(p[i] & 128)) {
					complete = 1;
					i++;
					break;
				}
			}
			if (!complete || avail < i + v)
				break;
			if ((p[0] & 0xf0) == 0x90)
				acks++;
			else if ((p[0] & 0xf0) == 0x30) {
				size_t tl = (size_t)p[i] << 8 | p[i + 1];
				struct raw_stamp st =
				    raw_stamp_read(p + i + 2 + tl, v - 2 - tl);
				uint64_t now = raw_now_ns();
				if (nlat < latcap && st.sent_ns > 0)
					lat[nlat++] = now - st.sent_ns;
				if (deliveries++ == 0)
					first_ns = now;
				last_ns = now;
			}
			pos += i + v;
			continue;
		}
		if (sse) {
			unsigned char *end = memmem(p, avail, "\n\n", 2);
			if (end == NULL)
				break;
			if (avail > 6 && memcmp(p, "data: ", 6) == 0)
				acks += on_text((char *)p + 6, (size_t)(end - p - 6)) == 1;
			pos += (size_t)(end - p) + 2;
			continue;
		}
		if (avail < 2)
			break;
		size_t len = p[1] & 127, h = 2;
		if (len == 126) {
			if (avail < 4)
				break;
			len = (size_t)p[2] << 8 | p[3];
			h = 4;
		} else if (len == 127) {
			if (avail < 10)
				break;
			len = 0;
			for (int i = 0; i < 8; i++)
				len = len << 8 | p[2 + i];
			h = 10;
		}
		if (avail < h + len)
			break;
		if ((p[0] & 0xf) == 1 && on_text((char *)p + h, len) == 1)
			acks++;
		pos += h + len;
	}
	memmove(c->buf, c->buf + pos, c->have - pos);
	c->have -= pos;
	return acks;
}

int main(int argc, char **argv)
{
	int opt, port = 0, n = 0, sse = 0, plain = 0;
	long expected = 0, idle = 3000;
	const char *filter = "bench/#", *kind = "ws";
	char req[1024];
	while ((opt = getopt(argc, argv, "p:n:k:t:e:w:")) != -1) {
		switch (opt) {
		case 'p': port = atoi(optarg); break;
		case 'n': n = atoi(optarg); break;
		case 'k': kind = optarg; break;
		case 't': filter = optarg; break;
		case 'e': expected = atol(optarg); break;
		case 'w': idle = atol(optarg); break;
		default: return 2;
		}
	}
	sse = strcmp(kind, "sse") == 0;
	plain = strcmp(kind, "plainws") == 0;
	mqtt_mode = strcmp(kind, "mqtt") == 0;
	int hold = plain || expected == 0;
	signal(SIGTERM, on_term);
	signal(SIGPIPE, SIG_IGN);
	latcap = (long)n * (expected > 0 ? expected : 1);
	lat = calloc((size_t)latcap, sizeof(uint64_t));
	struct cl *cls = calloc((size_t)n, sizeof(*cls));
	int ready = 0;
	int ep = epoll_create1(0);
	char enc[256];
	size_t e = 0;
	for (const char *f = filter; *f && e + 4 < sizeof(enc); f++)
		e += (size_t)(*f == '#' ? snprintf(enc + e, 4, "%%23")
		                        : snprintf(enc + e, 2, "%c", *f));
	if (sse)
		snprintf(req, sizeof(req),
		         "GET /mqtt/events?topic=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
		         "Accept: text/event-stream\r\n\r\n",
		         enc);
	else
		snprintf(req, sizeof(req),
		         "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
		         "Connection: Upgrade\r\nSec-WebSocket-Key: "
		         "dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
		         plain ? "/plainws" : "/mqtt/ws");
	for (int i = 0; i < n; i++) {
		struct raw_conn rc;
		if (raw_connect(&rc, port) != 0)
			raw_die("connect");
		cls[i].fd = rc.fd;
		cls[i].cap = 1 << 16;
		cls[i].buf = malloc(cls[i].cap);
		if (mqtt_mode) {
			char id[32];
			snprintf(id, sizeof(id), "bws-%d-%d", (int)getpid(), i);
			raw_mqtt_connect(&rc, id, 1);
			raw_mqtt_subscribe(&rc, filter, 0);
			cls[i].stage = 2;
			ready++;
		} else {
			raw_write_all(rc.fd, req, strlen(req));
		}
		fcntl(rc.fd, F_SETFL, fcntl(rc.fd, F_GETFL) | O_NONBLOCK);
		struct epoll_event ev = {EPOLLIN, {.ptr = &cls[i]}};
		epoll_ctl(ep, EPOLL_CTL_ADD, rc.fd, &ev);
	}
	int announced = 0;
	char sub[256];
	snprintf(sub, sizeof(sub), "{\"op\":\"subscribe\",\"topic\":\"%s\",\"qos\":0}",
	         filter);
	uint64_t last_activity = raw_now_ns();
	while (!stop) {
		struct epoll_event evs[64];
		int k = epoll_wait(ep, evs, 64, 100);
		for (int j = 0; j < k; j++) {
			struct cl *c = evs[j].data.ptr;
			for (;;) {
				if (c->cap - c->have < 4096) {
					c->cap *= 2;
					c->buf = realloc(c->buf, c->cap);
				}
				ssize_t r = read(c->fd, c->buf + c->have, c->cap - c->have);
				if (r <= 0)
					break;
				c->have += (size_t)r;
			}
			if (c->stage == 0) {
				char *end = memmem(c->buf, c->have, "\r\n\r\n", 4);
				if (end == NULL)
					continue;
				if (memcmp(c->buf, "HTTP/1.1 101", 12) != 0 &&
				    memcmp(c->buf, "HTTP/1.1 200", 12) != 0) {
					fprintf(stderr, "bws: refused: %.40s\n", c->buf);
					return 2;
				}
				size_t hl = (size_t)(end - c->buf) + 4;
				memmove(c->buf, c->buf + hl, c->have - hl);
				c->have -= hl;
				if (sse || hold) {
					c->stage = 2;
					ready++;
				} else {
					c->stage = 1;
					ws_send_text(c->fd, sub);
				}
			}
			int acks = c->stage > 0 ? parse(c, sse) : 0;
			if (c->stage == 1 && acks > 0) {
				c->stage = 2;
				ready++;
			}
			last_activity = raw_now_ns();
		}
		if (!announced && ready == n) {
			announced = 1;
			printf("ready\n");
			fflush(stdout);
			last_activity = raw_now_ns();
		}
		if (announced && !hold &&
		    (deliveries >= (long)n * expected ||
		     raw_now_ns() - last_activity > (uint64_t)idle * 1000000u))
			break;
	}
	if (!hold) {
		double span = (double)(last_ns - first_ns) / 1e9;
		qsort(lat, (size_t)nlat, sizeof(uint64_t), cmp_u64_bws);
		printf("{\"deliveries\":%ld,\"rate\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f}\n",
		       deliveries, span > 0 ? (double)deliveries / span : 0.0,
		       nlat ? (double)lat[nlat / 2] / 1e3 : 0.0,
		       nlat ? (double)lat[nlat * 99 / 100] / 1e3 : 0.0);
	}
	for (int i = 0; i < n; i++)
		close(cls[i].fd);
	return 0;
}
