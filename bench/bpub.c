/*
 * bpub: publishes N messages as fast as possible (or at a fixed rate) over a
 * raw MQTT 3.1.1 connection. Each payload starts with a struct raw_stamp.
 *
 *   bpub -p port -t topic -n count [-s size] [-q 0|1] [-r msgs_per_s]
 *        [-w window] [-i client_id] [-a]
 * -a: the stamp as text ("T<seq>:<ns>:"), for browsers.
 * Prints "sent N in T s (R msg/s)" on stderr; exit 0 when all were sent (and,
 * at QoS 1, acknowledged by the broker).
 */
#include "mqttraw.h"

#include <fcntl.h>
#include <poll.h>

static int ascii;
static void publish_one(unsigned char *buf, size_t *n, const char *topic,
                        size_t tl, int qos, uint16_t pid, uint64_t seq,
                        size_t size)
{
	struct raw_stamp st = {seq, raw_now_ns()};
	size_t rl = 2 + tl + (qos > 0 ? 2 : 0) + size;
	buf[(*n)++] = (unsigned char)(0x30 | (qos << 1));
	*n += raw_varint(buf + *n, rl);
	buf[(*n)++] = (unsigned char)(tl >> 8);
	buf[(*n)++] = (unsigned char)tl;
	memcpy(buf + *n, topic, tl);
	*n += tl;
	if (qos > 0) {
		buf[(*n)++] = (unsigned char)(pid >> 8);
		buf[(*n)++] = (unsigned char)pid;
	}
	memset(buf + *n, 'x', size);
	raw_stamp_write(buf + *n, size, ascii, st);
	*n += size;
}

int main(int argc, char **argv)
{
	int port = 0, qos = 0, opt;
	long count = 0, size = 64, window = 1000;
	double rate = 0;
	const char *topic = "bench/t", *id = "bpub";
	while ((opt = getopt(argc, argv, "p:t:n:s:q:r:w:i:a")) != -1) {
		switch (opt) {
		case 'a': ascii = 1; break;
		case 'p': port = atoi(optarg); break;
		case 't': topic = optarg; break;
		case 'n': count = atol(optarg); break;
		case 's': size = atol(optarg); break;
		case 'q': qos = atoi(optarg); break;
		case 'r': rate = atof(optarg); break;
		case 'w': window = atol(optarg); break;
		case 'i': id = optarg; break;
		default:
			fprintf(stderr, "usage: bpub -p port -t topic -n count [-s size] "
			                "[-q 0|1] [-r rate] [-w window] [-i id]\n");
			return 2;
		}
	}
	if (port <= 0 || count <= 0 || size < 1 + (long)sizeof(struct raw_stamp) ||
	    qos < 0 || qos > 1)
		return fprintf(stderr, "bpub: bad arguments\n"), 2;

	struct raw_conn *c = malloc(sizeof(*c));
	if (c == NULL || raw_connect(c, port) != 0)
		raw_die("connect");
	raw_mqtt_connect(c, id, 1);

	size_t tl = strlen(topic), cap = 1 << 16, n = 0;
	unsigned char *buf = malloc(cap + 16 + tl + (size_t)size);
	long acked = 0, sent = 0;
	uint64_t t0 = raw_now_ns();
	if (qos > 0)
		fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
	while (sent < count || acked < (qos > 0 ? count : 0)) {
		/* Fill a buffer: as many as the window, the rate and the buffer allow. */
		while (sent < count && n + 16 + tl + (size_t)size < cap &&
		       (qos == 0 || sent - acked < window)) {
			if (rate > 0) {
				uint64_t due = t0 + (uint64_t)((double)sent / rate * 1e9);
				if (raw_now_ns() < due) {
					if (n > 0)
						break;
					struct timespec ts = {0, 20000};
					nanosleep(&ts, NULL);
					continue;
				}
			}
			publish_one(buf, &n, topic, tl, qos, (uint16_t)(sent % 65535 + 1),
			            (uint64_t)sent, (size_t)size);
			sent++;
			if (rate > 0)
				break; /* one at a time when paced */
		}
		if (n > 0) {
			size_t off = 0;
			while (off < n) {
				ssize_t w = write(c->fd, buf + off, n - off);
				if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
					struct pollfd pfd = {c->fd, POLLOUT | POLLIN, 0};
					poll(&pfd, 1, 100);
					if (qos > 0 && (pfd.revents & POLLIN))
						goto read_acks;
					continue;
				}
				if (w <= 0)
					raw_die("write");
				off += (size_t)w;
			}
			n = 0;
		}
	read_acks:
		if (qos > 0) {
			/* Drain PUBACKs; block briefly only when the window is full. */
			int must_wait = sent - acked >= window || sent == count;
			struct pollfd pfd = {c->fd, POLLIN, 0};
			if (poll(&pfd, 1, must_wait ? 1000 : 0) > 0) {
				ssize_t r = read(c->fd, c->in + c->have, sizeof(c->in) - c->have);
				if (r == 0)
					raw_die("broker closed");
				if (r > 0) {
					c->have += (size_t)r;
					while (c->have - c->pos >= 4 && c->in[c->pos] == 0x40) {
						c->pos += 4;
						acked++;
					}
					memmove(c->in, c->in + c->pos, c->have - c->pos);
					c->have -= c->pos;
					c->pos = 0;
				}
			}
		}
	}
	double secs = (double)(raw_now_ns() - t0) / 1e9;
	unsigned char disc[2] = {0xe0, 0};
	fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) & ~O_NONBLOCK);
	raw_write_all(c->fd, disc, 2);
	close(c->fd);
	fprintf(stderr, "sent %ld in %.3f s (%.0f msg/s)\n", sent, secs,
	        (double)sent / secs);
	free(buf);
	free(c);
	return 0;
}
