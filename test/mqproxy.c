/*
 * mqproxy: see mqproxy.h. One accept thread; one thread per proxied
 * connection, which polls both sockets and cuts what it reads into MQTT
 * packets. Rules, counts and modes sit behind one mutex; an action runs
 * after it is released (a delay stalls only its own connection).
 */
#include "mqproxy.h"

#include "civetweb_mqtt.h"
#include "harness.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

enum { MQP_MAX_RULES = 64 };

struct mqp_rrule {
	struct mqp_rule r;
	char *topic;
	int id, matched, fired;
};

struct mqp_conn {
	struct mqp *p;
	pthread_t th;
	int cfd, sfd;
	atomic_int done;
	int level; /* from this connection's CONNECT */
	int hold;  /* MQP_BLACKHOLE acted */
	unsigned gen;
	unsigned char *buf[2];
	size_t len[2], cap[2];
};

struct mqp {
	pthread_mutex_t mu;
	pthread_t th;
	int lfd, port, raw;
	atomic_int dst_port, mode, stop, accepted, open, malformed, last_level;
	atomic_uint gen;
	char url[64];
	char first_bad[256]; /* the first malformed packet, described */
	mqp_packet_fn observe;
	void *observe_ud;
	struct mqp_rrule rules[MQP_MAX_RULES];
	int nrules, next_id;
	int cleared_fired[1024]; /* fired counts of removed rules, by id */
	int counts[2][16];
	struct mqp_conn **conns;
	int nconns, capconns;
};

const char *mqp_type_name(int type)
{
	static const char *const names[] = {
	    "RESERVED", "CONNECT",  "CONNACK", "PUBLISH",     "PUBACK",
	    "PUBREC",   "PUBREL",   "PUBCOMP", "SUBSCRIBE",   "SUBACK",
	    "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT",
	    "AUTH"};
	return type >= 0 && type < 16 ? names[type] : "?";
}

/* Decodes a remaining length at b (avail bytes). Returns the bytes it
 * takes, 0 when more bytes are needed, -1 when malformed. */
static int mqp_varint(const unsigned char *b, size_t avail, size_t *value)
{
	size_t v = 0;
	for (int i = 0; i < 4; i++) {
		if ((size_t)i >= avail)
			return 0;
		v |= (size_t)(b[i] & 0x7f) << (7 * i);
		if (!(b[i] & 0x80)) {
			*value = v;
			return i + 1;
		}
	}
	return -1;
}

static size_t mqp_put_varint(unsigned char *out, size_t v)
{
	size_t n = 0;
	do {
		unsigned char d = v % 128;
		v /= 128;
		out[n++] = d | (v > 0 ? 0x80 : 0);
	} while (v > 0);
	return n;
}

/* The filters or the topic of a packet, for matching; calls fn on each
 * (string, length). Returns -1 when the packet's strings overrun it. */
static int mqp_strings(const unsigned char *body, size_t n, int type,
                       int level, int (*fn)(const char *, size_t, void *),
                       void *ud)
{
	size_t o = 0, plen;
	if (type == MQP_PUBLISH) {
		if (n < 2)
			return -1;
		size_t tl = (size_t)body[0] << 8 | body[1];
		if (2 + tl > n)
			return -1;
		fn((const char *)body + 2, tl, ud);
		return 0;
	}
	if (type != MQP_SUBSCRIBE && type != MQP_UNSUBSCRIBE)
		return 0;
	o = 2; /* packet id */
	if (level == 5) {
		int k = mqp_varint(body + o, n > o ? n - o : 0, &plen);
		if (k <= 0)
			return -1;
		o += (size_t)k + plen;
	}
	while (o + 2 <= n) {
		size_t fl = (size_t)body[o] << 8 | body[o + 1];
		o += 2;
		if (o + fl > n)
			return -1;
		if (fn((const char *)body + o, fl, ud))
			return 0;
		o += fl + (type == MQP_SUBSCRIBE);
	}
	return 0;
}

struct mqp_match {
	const char *want;
	int type, hit;
};

static int mqp_match_one(const char *s, size_t n, void *ud)
{
	struct mqp_match *m = ud;
	char tmp[1024];
	if (n >= sizeof(tmp))
		return 0;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	if (m->type == MQP_PUBLISH)
		m->hit = mg_mqtt_topic_matches(m->want, tmp);
	else
		m->hit = strcmp(m->want, tmp) == 0;
	return m->hit;
}

static int mqp_rule_matches(const struct mqp_rrule *x, int dir, int type,
                            int flags, int level, const unsigned char *body,
                            size_t n)
{
	const struct mqp_rule *r = &x->r;
	int rdir = r->dir == 0 ? MQP_BOTH : r->dir;
	if (!(rdir & dir) || (r->type != 0 && r->type != type) ||
	    (r->level != 0 && r->level != level))
		return 0;
	if (r->qos_mask != 0 && (type != MQP_PUBLISH ||
	                         !(r->qos_mask & (1 << ((flags >> 1) & 3)))))
		return 0;
	if (x->topic == NULL)
		return 1;
	struct mqp_match m = {x->topic, type, 0};
	mqp_strings(body, n, type, level, mqp_match_one, &m);
	return m.hit;
}

/* The CONNECT's protocol level: after the protocol name. */
static int mqp_connect_level(const unsigned char *body, size_t n)
{
	if (n < 2)
		return 0;
	size_t nl = (size_t)body[0] << 8 | body[1];
	return 2 + nl < n ? body[2 + nl] : 0;
}

/* Counts a malformed packet and describes the first one. */
static void mqp_bad(struct mqp *p, int dir, const unsigned char *pkt,
                    size_t len, const char *why)
{
	if (atomic_fetch_add(&p->malformed, 1) != 0)
		return;
	pthread_mutex_lock(&p->mu);
	size_t o = (size_t)snprintf(p->first_bad, sizeof(p->first_bad),
	                            "%s %s (%zu bytes):",
	                            dir == MQP_C2S ? "client->broker"
	                                           : "broker->client",
	                            why, len);
	for (size_t i = 0; i < len && i < 48 && o + 4 < sizeof(p->first_bad); i++)
		o += (size_t)snprintf(p->first_bad + o, sizeof(p->first_bad) - o,
		                      " %02x", pkt[i]);
	pthread_mutex_unlock(&p->mu);
}

static void mqp_close_conn(struct mqp_conn *c)
{
	if (c->cfd >= 0)
		close(c->cfd);
	if (c->sfd >= 0)
		close(c->sfd);
	c->cfd = c->sfd = -1;
}

/* One whole packet read from direction dir (MQP_C2S: from the client).
 * Returns -1 when the connection is to be closed. */
static int mqp_packet(struct mqp_conn *c, int dir, const unsigned char *pkt,
                      size_t len, size_t hlen)
{
	struct mqp *p = c->p;
	int type = pkt[0] >> 4, action = 0, delay = 0;
	const unsigned char *body = pkt + hlen;
	size_t blen = len - hlen;
	unsigned char props[32];
	size_t props_len = 0;
	int to = dir == MQP_C2S ? c->sfd : c->cfd;

	if (type == 0) {
		mqp_bad(p, dir, pkt, len, "packet type 0");
		return -1;
	}
	if (type == MQP_CONNECT && dir == MQP_C2S) {
		c->level = mqp_connect_level(body, blen);
		atomic_store(&p->last_level, c->level);
	}
	if (p->observe != NULL)
		p->observe(p->observe_ud, dir, pkt, len, hlen, c->level);
	if (type == MQP_PUBLISH) {
		/* A topic that overruns its packet, or is not a valid topic name,
		 * is a corrupted stream. */
		char topic[1024];
		size_t tl = blen >= 2 ? ((size_t)body[0] << 8 | body[1]) : 0;
		if (blen < 2 || 2 + tl > blen || tl >= sizeof(topic)) {
			mqp_bad(p, dir, pkt, len, "PUBLISH topic overruns the packet");
		} else {
			memcpy(topic, body + 2, tl);
			topic[tl] = '\0';
			if (strlen(topic) != tl || mg_mqtt_topic_valid(topic) != 0)
				mqp_bad(p, dir, pkt, len, "PUBLISH topic is no topic name");
		}
	}
	pthread_mutex_lock(&p->mu);
	p->counts[dir - 1][type]++;
	for (int i = 0; i < p->nrules && action == 0; i++) {
		struct mqp_rrule *x = &p->rules[i];
		if (!mqp_rule_matches(x, dir, type, pkt[0] & 0x0f, c->level, body,
		                      blen))
			continue;
		x->matched++;
		if (x->r.nth != 0 && x->matched != x->r.nth)
			continue;
		if (x->r.times != 0 && x->fired >= x->r.times)
			continue;
		x->fired++;
		action = x->r.action;
		delay = x->r.delay_ms;
		props_len = x->r.props_len < sizeof(props) ? x->r.props_len : 0;
		memcpy(props, x->r.props, props_len);
	}
	pthread_mutex_unlock(&p->mu);

	switch (action) {
	case MQP_DROP:
		return 0;
	case MQP_CUT_BEFORE:
		return -1;
	case MQP_BLACKHOLE:
		c->hold = 1;
		return 0;
	case MQP_DELAY:
		th_sleep_ms(delay);
		break;
	case MQP_DUP:
		if (th_send_all(to, pkt, len) != 0)
			return -1;
		break;
	case MQP_ADD_PROPS:
		if (type == MQP_CONNACK && c->level == 5 && blen >= 2) {
			size_t plen = 0;
			int k = blen > 2 ? mqp_varint(body + 2, blen - 2, &plen) : 0;
			if (k <= 0) /* no properties field */
				plen = 0, k = 0;
			size_t nprops = plen + props_len;
			unsigned char out[1024], vi[4];
			size_t vn = mqp_put_varint(vi, nprops);
			size_t rem = 2 + vn + nprops;
			size_t o = 0;
			if (rem + 8 > sizeof(out) || 2 + (size_t)k + plen > blen)
				break;
			out[o++] = pkt[0];
			o += mqp_put_varint(out + o, rem);
			out[o++] = body[0];
			out[o++] = body[1];
			memcpy(out + o, vi, vn);
			o += vn;
			memcpy(out + o, body + 2 + k, plen);
			o += plen;
			memcpy(out + o, props, props_len);
			o += props_len;
			return th_send_all(to, out, o);
		}
		break;
	default:
		break;
	}
	if (th_send_all(to, pkt, len) != 0)
		return -1;
	return action == MQP_CUT_AFTER ? -1 : 0;
}

/* Data arrived from direction dir: whole packets go through mqp_packet. */
static int mqp_feed(struct mqp_conn *c, int dir, const unsigned char *data,
                    size_t n)
{
	int d = dir - 1;
	if (c->len[d] + n > c->cap[d]) {
		size_t cap = c->cap[d] ? c->cap[d] : 1 << 16;
		while (cap < c->len[d] + n)
			cap *= 2;
		unsigned char *b = realloc(c->buf[d], cap);
		if (b == NULL)
			return -1;
		c->buf[d] = b;
		c->cap[d] = cap;
	}
	memcpy(c->buf[d] + c->len[d], data, n);
	c->len[d] += n;
	size_t o = 0;
	while (c->len[d] - o >= 2) {
		size_t rem;
		int k = mqp_varint(c->buf[d] + o + 1, c->len[d] - o - 1, &rem);
		if (k < 0) {
			mqp_bad(c->p, dir, c->buf[d] + o, c->len[d] - o,
			        "remaining length over 4 bytes");
			return -1;
		}
		if (k == 0 || c->len[d] - o < 1 + (size_t)k + rem)
			break;
		size_t plen = 1 + (size_t)k + rem;
		if (c->hold)
			; /* swallowed */
		else if (mqp_packet(c, dir, c->buf[d] + o, plen, 1 + (size_t)k) != 0)
			return -1;
		o += plen;
	}
	memmove(c->buf[d], c->buf[d] + o, c->len[d] - o);
	c->len[d] -= o;
	return 0;
}

static void *mqp_conn_main(void *arg)
{
	struct mqp_conn *c = arg;
	struct mqp *p = c->p;
	/* On the heap: a static _Thread_local buffer would be carved out of
	 * every thread's stack in the process (glibc puts static TLS there),
	 * and CivetWeb's workers have only about 100 kB. */
	enum { BUFSZ = 1 << 16 };
	unsigned char *buf = malloc(BUFSZ);
	while (buf != NULL && !atomic_load(&p->stop) && atomic_load(&p->gen) == c->gen) {
		struct pollfd f[2];
		int nf = 0;
		f[nf++] = (struct pollfd){c->cfd, POLLIN, 0};
		if (c->sfd >= 0)
			f[nf++] = (struct pollfd){c->sfd, POLLIN, 0};
		int r = poll(f, (nfds_t)nf, 20);
		if (r < 0 && errno != EINTR)
			break;
		if (r <= 0)
			continue;
		int bad = 0;
		for (int i = 0; i < nf && !bad; i++) {
			if (!(f[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t got = recv(f[i].fd, buf, BUFSZ, 0);
			if (got < 0 && errno == EINTR)
				continue;
			if (got <= 0) {
				bad = 1;
				break;
			}
			int dir = f[i].fd == c->cfd ? MQP_C2S : MQP_S2C;
			int hold = c->hold || atomic_load(&p->mode) == MQP_HOLD ||
			           c->sfd < 0;
			if (hold)
				continue; /* read and forget: nothing answers */
			if (p->raw) {
				int to = dir == MQP_C2S ? c->sfd : c->cfd;
				bad = th_send_all(to, buf, (size_t)got) != 0;
			} else {
				bad = mqp_feed(c, dir, buf, (size_t)got) != 0;
			}
		}
		if (bad)
			break;
	}
	mqp_close_conn(c);
	atomic_fetch_sub(&p->open, 1);
	atomic_store(&c->done, 1);
	free(buf);
	return NULL;
}

static void mqp_reap(struct mqp *p, int all)
{
	int m = 0;
	for (int i = 0; i < p->nconns; i++) {
		struct mqp_conn *c = p->conns[i];
		if (all || atomic_load(&c->done)) {
			pthread_join(c->th, NULL);
			free(c->buf[0]);
			free(c->buf[1]);
			free(c);
		} else {
			p->conns[m++] = c;
		}
	}
	p->nconns = m;
}

static void *mqp_accept_main(void *arg)
{
	struct mqp *p = arg;
	while (!atomic_load(&p->stop)) {
		struct pollfd f = {p->lfd, POLLIN, 0};
		mqp_reap(p, 0);
		if (poll(&f, 1, 20) <= 0)
			continue;
		int fd = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		atomic_fetch_add(&p->accepted, 1);
		int mode = atomic_load(&p->mode);
		if (mode == MQP_REFUSE) {
			close(fd);
			continue;
		}
		int up = -1;
		if (mode != MQP_HOLD) {
			up = th_tcp_connect(atomic_load(&p->dst_port));
			if (up < 0) { /* nothing behind: as a dead broker would */
				close(fd);
				continue;
			}
		}
		struct mqp_conn *c = calloc(1, sizeof(*c));
		if (c == NULL) {
			close(fd);
			if (up >= 0)
				close(up);
			continue;
		}
		c->p = p;
		c->cfd = fd;
		c->sfd = up;
		c->gen = atomic_load(&p->gen);
		if (p->nconns == p->capconns) {
			int cap = p->capconns ? p->capconns * 2 : 16;
			struct mqp_conn **v = realloc(p->conns, (size_t)cap * sizeof(*v));
			if (v == NULL) {
				mqp_close_conn(c);
				free(c);
				continue;
			}
			p->conns = v;
			p->capconns = cap;
		}
		atomic_fetch_add(&p->open, 1);
		if (pthread_create(&c->th, NULL, mqp_conn_main, c) != 0) {
			atomic_fetch_sub(&p->open, 1);
			mqp_close_conn(c);
			free(c);
			continue;
		}
		p->conns[p->nconns++] = c;
	}
	mqp_reap(p, 1);
	return NULL;
}

static struct mqp *mqp_start_(int dst_port, int raw)
{
	struct mqp *p = calloc(1, sizeof(*p));
	ASSERT(p != NULL);
	pthread_mutex_init(&p->mu, NULL);
	p->raw = raw;
	atomic_store(&p->dst_port, dst_port);
	p->lfd = th_listen(&p->port, 64);
	snprintf(p->url, sizeof(p->url), "tcp://127.0.0.1:%d", p->port);
	ASSERT_EQ(pthread_create(&p->th, NULL, mqp_accept_main, p), 0);
	return p;
}

struct mqp *mqp_start(int dst_port)
{
	return mqp_start_(dst_port, 0);
}

struct mqp *mqp_start_raw(int dst_port)
{
	return mqp_start_(dst_port, 1);
}

void mqp_stop(struct mqp *p)
{
	if (p == NULL)
		return;
	atomic_store(&p->stop, 1);
	pthread_join(p->th, NULL);
	close(p->lfd);
	for (int i = 0; i < p->nrules; i++)
		free(p->rules[i].topic);
	free(p->conns);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

int mqp_port(const struct mqp *p)
{
	return p->port;
}

const char *mqp_url(const struct mqp *p)
{
	return p->url;
}

int mqp_add(struct mqp *p, const struct mqp_rule *r)
{
	pthread_mutex_lock(&p->mu);
	ASSERT(p->nrules < MQP_MAX_RULES);
	struct mqp_rrule *x = &p->rules[p->nrules++];
	memset(x, 0, sizeof(*x));
	x->r = *r;
	x->topic = r->topic != NULL ? strdup(r->topic) : NULL;
	x->r.topic = NULL;
	x->id = p->next_id++;
	pthread_mutex_unlock(&p->mu);
	return x->id;
}

/* Removes every rule; what they did stays readable by id. */
void mqp_clear(struct mqp *p)
{
	pthread_mutex_lock(&p->mu);
	for (int i = 0; i < p->nrules; i++) {
		struct mqp_rrule *x = &p->rules[i];
		if (x->id < (int)(sizeof(p->cleared_fired) / sizeof(int)))
			p->cleared_fired[x->id] = x->fired;
		free(x->topic);
	}
	p->nrules = 0;
	pthread_mutex_unlock(&p->mu);
}

int mqp_fired(struct mqp *p, int id)
{
	int v = 0, found = 0;
	pthread_mutex_lock(&p->mu);
	for (int i = 0; i < p->nrules; i++)
		if (p->rules[i].id == id) {
			v = p->rules[i].fired;
			found = 1;
		}
	if (!found && id >= 0 && id < (int)(sizeof(p->cleared_fired) / sizeof(int)))
		v = p->cleared_fired[id];
	pthread_mutex_unlock(&p->mu);
	return v;
}

void mqp_observe(struct mqp *p, mqp_packet_fn fn, void *ud)
{
	p->observe = fn;
	p->observe_ud = ud;
}

void mqp_mode(struct mqp *p, int mode)
{
	atomic_store(&p->mode, mode);
}

void mqp_dst(struct mqp *p, int dst_port)
{
	atomic_store(&p->dst_port, dst_port);
}

int mqp_cut_all(struct mqp *p)
{
	int n = atomic_load(&p->open);
	atomic_fetch_add(&p->gen, 1);
	/* The connection threads notice within one poll period. */
	WAIT_UNTIL(atomic_load(&p->open) == 0, 2000);
	return n;
}

int mqp_count(struct mqp *p, int dir, int type)
{
	int v = 0;
	pthread_mutex_lock(&p->mu);
	for (int d = 0; d < 2; d++) {
		if (!((d + 1) & dir))
			continue;
		for (int t = 0; t < 16; t++)
			if (type == 0 || t == type)
				v += p->counts[d][t];
	}
	pthread_mutex_unlock(&p->mu);
	return v;
}

void mqp_reset_counts(struct mqp *p)
{
	pthread_mutex_lock(&p->mu);
	memset(p->counts, 0, sizeof(p->counts));
	pthread_mutex_unlock(&p->mu);
}

int mqp_accepted(struct mqp *p)
{
	return atomic_load(&p->accepted);
}

int mqp_open(struct mqp *p)
{
	return atomic_load(&p->open);
}

int mqp_last_level(struct mqp *p)
{
	return atomic_load(&p->last_level);
}

int mqp_malformed(struct mqp *p)
{
	return atomic_load(&p->malformed);
}

void mqp_malformed_text(struct mqp *p, char *buf, size_t len)
{
	pthread_mutex_lock(&p->mu);
	snprintf(buf, len, "%s", p->first_bad);
	pthread_mutex_unlock(&p->mu);
}
