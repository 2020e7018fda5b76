/*
 * bcount: the independent arrival counter of the benchmarks. Subscribes over
 * a raw MQTT 3.1.1 connection and counts PUBLISH packets (acknowledging QoS 1
 * ones) until it has `expected`, nothing came for `idle` ms, or SIGTERM.
 *
 *   bcount -p port -t filter -n expected [-q qos] [-w idle_ms] [-i id]
 * Prints "ready" on stdout once subscribed, "progress N" (the count so far)
 * at each SIGUSR1, and at the end one line:
 *   "count N duplicates D lost L"   (by sequence number in the payload)
 * A driver that knows how many messages to wait for asks with SIGUSR1 until
 * the count stops growing, then ends it with SIGTERM: no idle time-out
 * mistakes a publisher that stalls for a while for a loss.
 */
#include "mqttraw.h"

#include <signal.h>
#include <sys/time.h>

static volatile sig_atomic_t want_progress, want_stop;

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		want_progress = 1;
	else
		want_stop = 1;
}

int main(int argc, char **argv)
{
	int port = 0, qos = 0, opt;
	long expected = 0, idle = 3000;
	const char *filter = "bench/#", *id = "bcount";
	while ((opt = getopt(argc, argv, "p:t:n:q:w:i:")) != -1) {
		switch (opt) {
		case 'p': port = atoi(optarg); break;
		case 't': filter = optarg; break;
		case 'n': expected = atol(optarg); break;
		case 'q': qos = atoi(optarg); break;
		case 'w': idle = atol(optarg); break;
		case 'i': id = optarg; break;
		default:
			fprintf(stderr, "usage: bcount -p port -t filter -n expected "
			                "[-q qos] [-w idle_ms] [-i id]\n");
			return 2;
		}
	}
	if (port <= 0 || expected <= 0)
		return fprintf(stderr, "bcount: bad arguments\n"), 2;
	struct raw_conn *c = malloc(sizeof(*c));
	if (c == NULL || raw_connect(c, port) != 0)
		raw_die("connect");
	raw_mqtt_connect(c, id, 1);
	raw_mqtt_subscribe(c, filter, qos);
	struct timeval tv = {idle / 1000, (idle % 1000) * 1000};
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	/* No SA_RESTART: a signal ends the blocking read (raw_interruptible). */
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	raw_interruptible = 1;
	printf("ready\n");
	fflush(stdout);

	unsigned char *seen = calloc((size_t)expected, 1);
	long count = 0, dups = 0, distinct = 0;
	unsigned char acks[4096];
	size_t nacks = 0;
	while (count < expected && !want_stop) {
		unsigned char t, *b;
		size_t len;
		if (want_progress) {
			want_progress = 0;
			printf("progress %ld\n", count);
			fflush(stdout);
		}
		int r = raw_read_packet(c, &t, &b, &len);
		if (r == -2)
			continue;
		if (r != 0)
			break;
		if ((t & 0xf0) != 0x30)
			continue;
		int q = (t >> 1) & 3;
		size_t tl = (size_t)b[0] << 8 | b[1], off = 2 + tl;
		if (q > 0) {
			acks[nacks++] = 0x40;
			acks[nacks++] = 2;
			acks[nacks++] = b[off];
			acks[nacks++] = b[off + 1];
			off += 2;
			if (nacks + 4 > sizeof(acks) || c->have == c->pos) {
				raw_write_all(c->fd, acks, nacks);
				nacks = 0;
			}
		}
		struct raw_stamp st = raw_stamp_read(b + off, len - off);
		if (st.seq < (uint64_t)expected) {
			if (seen[st.seq])
				dups++;
			else
				distinct++;
			seen[st.seq] = 1;
		}
		count++;
	}
	if (nacks > 0)
		raw_write_all(c->fd, acks, nacks);
	printf("count %ld duplicates %ld lost %ld\n", count, dups,
	       expected - distinct);
	fflush(stdout);
	close(c->fd);
	free(seen);
	free(c);
	return 0;
}
