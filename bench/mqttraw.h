/*
 * A minimal MQTT 3.1.1 client over a blocking TCP socket, for the load
 * generators of the benchmarks: they must cost far less CPU than what they
 * measure, so they speak the protocol directly instead of through a library.
 * Header-only; each tool includes it once.
 */
#ifndef CWM_BENCH_MQTTRAW_H
#define CWM_BENCH_MQTTRAW_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t raw_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void raw_die(const char *what)
{
	fprintf(stderr, "%s: %s\n", what, strerror(errno));
	exit(2);
}

/* A buffered reader over the socket. */
struct raw_conn {
	int fd;
	unsigned char in[1 << 16];
	size_t have, pos;
};

static inline int raw_connect(struct raw_conn *c, int port)
{
	struct sockaddr_in a;
	int one = 1;
	memset(c, 0, sizeof(*c));
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((c->fd = socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
	    connect(c->fd, (struct sockaddr *)&a, sizeof(a)) != 0)
		return -1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return 0;
}

static inline void raw_write_all(int fd, const void *buf, size_t n)
{
	const unsigned char *p = buf;
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			raw_die("write");
		p += w;
		n -= (size_t)w;
	}
}

/* Encodes the remaining length; returns its size. */
static inline size_t raw_varint(unsigned char *p, size_t v)
{
	size_t n = 0;
	do {
		unsigned char b = v % 128;
		v /= 128;
		p[n++] = (unsigned char)(b | (v > 0 ? 128 : 0));
	} while (v > 0);
	return n;
}

/* Set by a tool whose signal handlers must end a blocking read (handlers
 * installed without SA_RESTART): raw_read_packet then returns -2 on EINTR
 * instead of reading on. */
static int raw_interruptible;

/* Reads one packet: its first byte, and its body into *body (valid until the
 * next read). Returns -1 at EOF or on timeout (SO_RCVTIMEO), -2 when a
 * signal interrupted it and raw_interruptible is set. */
static inline int raw_read_packet(struct raw_conn *c, unsigned char *type,
                                  unsigned char **body, size_t *len)
{
	for (;;) {
		size_t avail = c->have - c->pos;
		if (avail >= 2) {
			unsigned char *p = c->in + c->pos;
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
			if (complete && avail >= i + v) {
				*type = p[0];
				*body = p + i;
				*len = v;
				c->pos += i + v;
				return 0;
			}
			if (complete && i + v > sizeof(c->in)) {
				fprintf(stderr, "packet too large\n");
				exit(2);
			}
		}
		/* Compact, then read more. */
		memmove(c->in, c->in + c->pos, c->have - c->pos);
		c->have -= c->pos;
		c->pos = 0;
		ssize_t r = read(c->fd, c->in + c->have, sizeof(c->in) - c->have);
		if (r < 0 && errno == EINTR) {
			if (raw_interruptible)
				return -2;
			continue;
		}
		if (r <= 0)
			return -1;
		c->have += (size_t)r;
	}
}

static inline void raw_mqtt_connect(struct raw_conn *c, const char *id,
                                    int clean)
{
	unsigned char pkt[256];
	size_t idl = strlen(id), n = 0;
	unsigned char var[] = {0, 4, 'M', 'Q', 'T', 'T', 4,
	                       (unsigned char)(clean ? 2 : 0), 0, 60};
	pkt[n++] = 0x10;
	n += raw_varint(pkt + n, sizeof(var) + 2 + idl);
	memcpy(pkt + n, var, sizeof(var));
	n += sizeof(var);
	pkt[n++] = (unsigned char)(idl >> 8);
	pkt[n++] = (unsigned char)idl;
	memcpy(pkt + n, id, idl);
	n += idl;
	raw_write_all(c->fd, pkt, n);
	unsigned char t, *b;
	size_t len;
	if (raw_read_packet(c, &t, &b, &len) != 0 || t != 0x20 || len < 2 ||
	    b[1] != 0) {
		fprintf(stderr, "CONNACK missing or refused\n");
		exit(2);
	}
}

static inline void raw_mqtt_subscribe(struct raw_conn *c, const char *filter,
                                      int qos)
{
	unsigned char pkt[512];
	size_t fl = strlen(filter), n = 0;
	pkt[n++] = 0x82;
	n += raw_varint(pkt + n, 2 + 2 + fl + 1);
	pkt[n++] = 0;
	pkt[n++] = 1;
	pkt[n++] = (unsigned char)(fl >> 8);
	pkt[n++] = (unsigned char)fl;
	memcpy(pkt + n, filter, fl);
	n += fl;
	pkt[n++] = (unsigned char)qos;
	raw_write_all(c->fd, pkt, n);
	unsigned char t, *b;
	size_t len;
	if (raw_read_packet(c, &t, &b, &len) != 0 || t != 0x90 || len < 3 ||
	    b[2] >= 0x80) {
		fprintf(stderr, "SUBACK missing or refused\n");
		exit(2);
	}
}

/* The payload layout every tool shares: sequence number, send time. In
 * text mode (for browsers, which get text payloads as JSON strings) the
 * payload is "T<seq>:<sent_ns>:" in decimal instead. A tag byte tells them
 * apart (raw_stamp_write). */
struct raw_stamp {
	uint64_t seq;
	uint64_t sent_ns; /* CLOCK_MONOTONIC of the publisher */
};

/* Binary: a 0x00 tag byte, then the struct. Text: 'T', then decimal. */
static inline size_t raw_stamp_write(unsigned char *p, size_t room, int text,
                                     struct raw_stamp st)
{
	if (text) {
		char buf[48];
		int n = snprintf(buf, sizeof(buf), "T%llu:%llu:",
		                 (unsigned long long)st.seq,
		                 (unsigned long long)st.sent_ns);
		size_t k = (size_t)n < room ? (size_t)n : room;
		memcpy(p, buf, k);
		return k;
	}
	if (room < 1 + sizeof(st))
		return 0;
	p[0] = 0;
	memcpy(p + 1, &st, sizeof(st));
	return 1 + sizeof(st);
}

static inline struct raw_stamp raw_stamp_read(const void *payload, size_t len)
{
	struct raw_stamp st = {0, 0};
	const unsigned char *p = payload;
	if (len > 1 && p[0] == 'T') {
		char buf[48];
		size_t n = len - 1 < sizeof(buf) - 1 ? len - 1 : sizeof(buf) - 1;
		memcpy(buf, p + 1, n);
		buf[n] = '\0';
		unsigned long long a = 0, b = 0;
		if (sscanf(buf, "%llu:%llu:", &a, &b) == 2) {
			st.seq = a;
			st.sent_ns = b;
		}
	} else if (len >= 1 + sizeof(st) && p[0] == 0) {
		memcpy(&st, p + 1, sizeof(st));
	}
	return st;
}

#endif
