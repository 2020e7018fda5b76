/*
 * mg_mqtt_bridge_check_publish(): the bridge's publishing rules
 * (BRIDGE_AUTH_FILE, BRIDGE_PUBLISH_ALLOW) for request handlers of the
 * application, so that a route of its own that publishes what a browser
 * sends is no way around them. Without the bridge compiled in, every
 * request is refused. And mg_mqtt_read_body(), request bodies under a
 * whole-body deadline, for the bridge's routes and the application's
 * (both builds).
 */
#include "internal.h"

/* -- request bodies ---------------------------------------------------------- */

/* An address as CivetWeb writes a request's remote_addr, and its port. */
static int cwm_addr_str(const struct sockaddr_storage *a, char *host,
                        size_t len, int *port)
{
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *v4 = (const struct sockaddr_in *)a;
		*port = ntohs(v4->sin_port);
		return inet_ntop(AF_INET, &v4->sin_addr, host, (socklen_t)len) != NULL;
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)a;
		*port = ntohs(v6->sin6_port);
		return inet_ntop(AF_INET6, &v6->sin6_addr, host, (socklen_t)len) !=
		       NULL;
	}
	return 0;
}

/* Whether fd is the socket of the request ri: its peer is the request's
 * remote address and port and its own port is the server's. */
static int cwm_fd_is_conn(int fd, const struct mg_request_info *ri)
{
	char host[64];
	struct sockaddr_storage peer, self;
	socklen_t pl = sizeof(peer), sl = sizeof(self);
	int pport, sport;
	return getpeername(fd, (struct sockaddr *)&peer, &pl) == 0 &&
	       getsockname(fd, (struct sockaddr *)&self, &sl) == 0 &&
	       cwm_addr_str(&self, host, sizeof(host), &sport) &&
	       cwm_addr_str(&peer, host, sizeof(host), &pport) &&
	       pport == ri->remote_port && sport == ri->server_port &&
	       strcmp(host, ri->remote_addr) == 0;
}

/* The socket of a plain (not TLS) connection: CivetWeb does not give it,
 * so it is the one socket of the process that cwm_fd_is_conn() says is
 * the request's. A worker thread serves one connection at a time and a
 * keep-alive connection sends many requests: the socket found last by
 * this thread is tried first (two system calls instead of two per open
 * descriptor), and /proc/self/fd is read only when it is not the one.
 * -1 when none is found (no /proc, a Unix socket). */
static int cwm_conn_fd(const struct mg_connection *conn)
{
	static _Thread_local int last = -1;
	const struct mg_request_info *ri = mg_get_request_info(conn);
	if (last >= 0 && cwm_fd_is_conn(last, ri))
		return last;
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int found = -1;
	if (d == NULL)
		return -1;
	while (found < 0 && (e = readdir(d)) != NULL) {
		char *end;
		long fd = strtol(e->d_name, &end, 10);
		if (*end == '\0' && end != e->d_name && fd != dirfd(d) &&
		    cwm_fd_is_conn((int)fd, ri))
			found = (int)fd;
	}
	closedir(d);
	last = found;
	return found;
}

/* How many bytes the next mg_read() may ask for (want at most). It
 * returns once it has them all, waiting request_timeout_ms for each next
 * byte: so a plain socket (fd) is asked for what it holds (1 when it
 * holds nothing: CivetWeb may still have buffered some), and otherwise
 * (TLS, chunked) for as little as lets the deadline (left_ms away) hold,
 * if every byte came just before request_timeout_ms (timeout_ms) ran
 * out. */
static size_t cwm_body_chunk(int fd, size_t want, int64_t left_ms,
                             int timeout_ms)
{
	size_t k;
	if (fd >= 0) {
		int avail = 0;
		k = ioctl(fd, FIONREAD, &avail) == 0 && avail > 0 ? (size_t)avail : 1;
	} else {
		k = left_ms > timeout_ms ? (size_t)(left_ms / timeout_ms) : 1;
	}
	return k < want ? k : want;
}

/* -- the body watch ------------------------------------------------------------
 * One thread for the process cuts (shutdown(SHUT_RD)) the socket of a
 * body read still going at its deadline, so that a read can ask CivetWeb
 * for the whole body at once, as fast as it comes, and still end by its
 * deadline. The thread starts with the first watched read, sleeps while
 * nothing is watched and otherwise wakes at the earliest deadline; a read
 * that begins adds one lock round and, only when it is the earliest, a
 * signal. cwm_bw_lock is a leaf: nothing is locked under it. */
struct cwm_bwatch {
	struct cwm_bwatch *prev, *next;
	int fd;
	int64_t deadline; /* CLOCK_MONOTONIC ms */
	int cut;          /* the watch shut the socket's reading down */
};

static pthread_mutex_t cwm_bw_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cwm_bw_cond = PTHREAD_COND_INITIALIZER;
static struct cwm_bwatch cwm_bw_list = {&cwm_bw_list, &cwm_bw_list, -1, 0, 0};
static int64_t cwm_bw_wake;  /* the deadline the thread sleeps for; 0: none */
static int cwm_bw_started;   /* 1: running; -1: could not be started */

static void *cwm_bw_main(void *arg)
{
	(void)arg;
	pthread_setname_np(pthread_self(), "mqtt-body");
	pthread_mutex_lock(&cwm_bw_lock);
	for (;;) {
		int64_t now = cwm_now_ms(), next = 0;
		struct cwm_bwatch *w;
		for (w = cwm_bw_list.next; w != &cwm_bw_list; w = w->next) {
			if (w->cut)
				continue;
			if (w->deadline <= now) {
				w->cut = 1;
				shutdown(w->fd, SHUT_RD);
			} else if (next == 0 || w->deadline < next) {
				next = w->deadline;
			}
		}
		cwm_bw_wake = next;
		if (next == 0) {
			pthread_cond_wait(&cwm_bw_cond, &cwm_bw_lock);
		} else {
			struct timespec until = cwm_deadline_us((next - now) * 1000);
			pthread_cond_timedwait(&cwm_bw_cond, &cwm_bw_lock, &until);
		}
	}
	return NULL;
}

/* Watches w (its fd and deadline set) until cwm_bw_end(). Returns 0, not
 * watching, when the thread cannot be started. */
static int cwm_bw_begin(struct cwm_bwatch *w)
{
	pthread_mutex_lock(&cwm_bw_lock);
	if (cwm_bw_started == 0) {
		pthread_t t;
		pthread_attr_t at;
		pthread_attr_init(&at);
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
		cwm_bw_started =
		    pthread_create(&t, &at, cwm_bw_main, NULL) == 0 ? 1 : -1;
		pthread_attr_destroy(&at);
	}
	int ok = cwm_bw_started == 1;
	if (ok) {
		w->cut = 0;
		w->next = &cwm_bw_list;
		w->prev = cwm_bw_list.prev;
		w->prev->next = w;
		cwm_bw_list.prev = w;
		if (cwm_bw_wake == 0 || w->deadline < cwm_bw_wake)
			pthread_cond_signal(&cwm_bw_cond);
	}
	pthread_mutex_unlock(&cwm_bw_lock);
	return ok;
}

/* Ends the watch of w. Returns whether it cut the socket. */
static int cwm_bw_end(struct cwm_bwatch *w)
{
	pthread_mutex_lock(&cwm_bw_lock);
	w->prev->next = w->next;
	w->next->prev = w->prev;
	int cut = w->cut;
	pthread_mutex_unlock(&cwm_bw_lock);
	return cut;
}

/* -- reading -------------------------------------------------------------------- */

/* The deadline of a body of `due` bytes whose reading began at start. */
static int64_t cwm_body_deadline(int64_t start, int timeout, size_t due)
{
	return start + timeout + (int64_t)(due / CWM_BODY_RATE) * 1000 +
	       (int64_t)(due % CWM_BODY_RATE) * 1000 / CWM_BODY_RATE;
}

/* A body of known length cl (buf holds cl + 1) on a watched socket: asked
 * of CivetWeb whole. Returns 0 (*np < cl: it ended short), or _INVALID /
 * _TIMEOUT. */
static int cwm_body_watched(struct mg_connection *conn, struct cwm_bwatch *w,
                            char *buf, size_t cl, size_t *np)
{
	size_t n = 0;
	int rc = 0;
	while (n < cl) {
		int r = mg_read(conn, buf + n, cl - n);
		if (r < 0)
			rc = MG_MQTT_ERR_INVALID;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	if (cwm_bw_end(w) && n < cl)
		rc = MG_MQTT_ERR_TIMEOUT;
	*np = n;
	return rc;
}

/* The reading, into buf (cap bytes, grown up to max + 2). */
static int cwm_body_loop(struct mg_connection *conn, size_t max, char **bufp,
                         size_t *np)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	const char *rt = mg_get_option(mg_get_context(conn), "request_timeout_ms");
	int timeout = rt != NULL && atoi(rt) > 0 ? atoi(rt) : 30000;
	long long cl = ri->content_length;
	/* Chunked bodies carry their framing in the socket's bytes too. */
	int fd = cl < 0 ? -1 : cwm_conn_fd(conn);
	int64_t start = cwm_now_ms();
	struct cwm_wbuf in = {NULL, 0, 0, 0};
	int rc = cwm_wgrow(&in, cl >= 0 ? (size_t)cl + 1 : 4096) != 0
	             ? MG_MQTT_ERR_NOMEM
	             : 0;
	struct cwm_bwatch w = {NULL, NULL, fd, 0, 0};
	w.deadline = cwm_body_deadline(start, timeout, cl >= 0 ? (size_t)cl : 0);
	*bufp = (char *)in.p;
	if (rc == 0 && fd >= 0 && cwm_bw_begin(&w))
		return cwm_body_watched(conn, &w, *bufp, (size_t)cl, np);
	if (ri->is_ssl)
		fd = -1; /* FIONREAD would count bytes still encrypted */
	while (rc == 0 && (cl < 0 || in.n < (size_t)cl)) {
		if (in.n + 1 >= in.cap) {
			if (in.cap > max + 1) {
				rc = MG_MQTT_ERR_TOO_LARGE;
				break;
			}
			if (cwm_wgrow(&in, in.cap * 2 > max + 2 ? max + 2 : in.cap * 2)) {
				rc = MG_MQTT_ERR_NOMEM;
				break;
			}
		}
		/* bytes due by 1 s a KiB: of the length, or of what came */
		int64_t deadline = cwm_body_deadline(
		    start, timeout, cl >= 0 ? (size_t)cl : in.n);
		size_t want = in.cap - in.n - 1;
		if (cl >= 0 && want > (size_t)cl - in.n)
			want = (size_t)cl - in.n;
		int r = mg_read(conn, in.p + in.n,
		                cwm_body_chunk(fd, want, deadline - cwm_now_ms(),
		                               timeout));
		if (r < 0)
			rc = MG_MQTT_ERR_INVALID;
		if (r <= 0)
			break;
		in.n += (size_t)r;
		if (in.n > max)
			rc = MG_MQTT_ERR_TOO_LARGE;
		else if (cwm_now_ms() > deadline && (cl < 0 || in.n < (size_t)cl))
			rc = MG_MQTT_ERR_TIMEOUT;
	}
	*bufp = (char *)in.p;
	*np = in.n;
	return rc;
}

MG_MQTT_API int mg_mqtt_read_body(struct mg_connection *conn, size_t max,
                                  char **body, size_t *len)
{
	char *buf;
	size_t n;
	if (body != NULL)
		*body = NULL;
	if (len != NULL)
		*len = 0;
	if (conn == NULL || body == NULL || len == NULL)
		return MG_MQTT_ERR_INVALID;
	long long cl = mg_get_request_info(conn)->content_length;
	if (cl > 0 && (unsigned long long)cl > max)
		return MG_MQTT_ERR_TOO_LARGE;
	int rc = cwm_body_loop(conn, max, &buf, &n);
	if (rc == 0 && cl >= 0 && n != (size_t)cl)
		rc = MG_MQTT_ERR_INVALID; /* ended short: never taken for whole */
	if (rc != 0) {
		free(buf);
		return rc;
	}
	buf[n] = '\0';
	*body = buf;
	*len = n;
	return 0;
}

/* A refusal from a guard: {"error":...} as JSON. Returns status. */
static int cwm_guard_refuse(struct mg_connection *conn, int status,
                            const char *error);

#if MG_MQTT_ENABLE_BRIDGE

static int cwm_guard_refuse(struct mg_connection *conn, int status,
                            const char *error)
{
	return cwm_reply_error(conn, status, error);
}

/* The anchor of c's bridge, or NULL (c never had one on its context).
 * Unlike cwm_anchor_get, never makes one. */
static struct cwm_anchor *cwm_guard_anchor(const struct mg_mqtt *c)
{
	struct cwm_anchor *a;
	if (c->ctx == NULL)
		return NULL;
	pthread_mutex_lock(&cwm_anchors_lock);
	for (a = cwm_anchors; a != NULL; a = a->next)
		if (a->ctx == c->ctx && strcmp(a->prefix, c->prefix) == 0)
			break;
	pthread_mutex_unlock(&cwm_anchors_lock);
	return a;
}

/* The checks in the order the bridge's POST <path>/publish/<topic> makes
 * them: the Host, the Origin, credentials, the topic, the allow list. */
static int cwm_guard_publish(struct cwm_bridge *b, struct mg_connection *conn,
                             const char *topic)
{
	if (!cwm_host_ok(b, conn))
		return cwm_reply_error(conn, 403, CWM_HOST_ERR);
	if (!cwm_origin_ok(b, conn))
		return cwm_reply_error(conn, 403, CWM_ORIGIN_ERR);
	if (!cwm_bridge_authorized(b, conn))
		return 401;
	if (topic[0] == '\0' || mg_mqtt_topic_valid(topic) != 0)
		return cwm_reply_error(conn, 400, "invalid topic name");
	return cwm_publish_refused(b, conn, topic);
}

MG_MQTT_API int mg_mqtt_bridge_check_publish(struct mg_mqtt *c,
                                             struct mg_connection *conn,
                                             const char *topic)
{
	if (conn == NULL)
		return MG_MQTT_ERR_INVALID;
	if (c == NULL || topic == NULL)
		return cwm_guard_refuse(conn, 400, "no client or no topic");
	if (c->cfg.bridge_path == NULL)
		return cwm_guard_refuse(conn, 403,
		                        "this client has no bridge (BRIDGE_PATH): "
		                        "browsers may not publish");
	struct cwm_anchor *a = cwm_guard_anchor(c);
	struct cwm_bridge *b = a != NULL ? cwm_bridge_acquire(a) : NULL;
	if (b == NULL)
		return cwm_guard_refuse(conn, 503,
		                        "the MQTT client of this bridge is stopped");
	int status = cwm_guard_publish(b, conn, topic);
	cwm_bridge_release(b);
	return status;
}

#else /* !MG_MQTT_ENABLE_BRIDGE */

static int cwm_guard_refuse(struct mg_connection *conn, int status,
                            const char *error)
{
	char body[256], len[32];
	int n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", error);
	snprintf(len, sizeof(len), "%d", n);
	mg_response_header_start(conn, status);
	mg_response_header_add(conn, "Content-Type", "application/json", -1);
	mg_response_header_add(conn, "Content-Length", len, -1);
	mg_response_header_add(conn, "Cache-Control", "no-store", -1);
	mg_response_header_add(conn, "X-Content-Type-Options", "nosniff", -1);
	mg_response_header_send(conn);
	mg_write(conn, body, (size_t)n);
	return status;
}

MG_MQTT_API int mg_mqtt_bridge_check_publish(struct mg_mqtt *c,
                                             struct mg_connection *conn,
                                             const char *topic)
{
	(void)c;
	(void)topic;
	if (conn == NULL)
		return MG_MQTT_ERR_INVALID;
	return cwm_guard_refuse(conn, 403,
	                        "the bridge is not compiled in "
	                        "(MG_MQTT_ENABLE_BRIDGE=0): browsers may not "
	                        "publish");
}

#endif /* MG_MQTT_ENABLE_BRIDGE */
