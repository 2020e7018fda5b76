/*
 * GET <path>/ws: WebSocket clients; CivetWeb's handlers and the writer
 * threads that send queued messages.
 */
#include "internal.h"

#if MG_MQTT_ENABLE_BRIDGE

/* -- WebSocket writers ----------------------------------------------------------- */

/* Appends one unmasked WebSocket text frame to buf. Returns 0 or
 * MG_MQTT_ERR_NOMEM. */
static int cwm_ws_frame(struct cwm_wbuf *buf, const struct cwm_bmsg *m)
{
	unsigned char h[10];
	size_t hl;
	h[0] = 0x80 | MG_WEBSOCKET_OPCODE_TEXT;
	if (m->len < 126) {
		h[1] = (unsigned char)m->len;
		hl = 2;
	} else if (m->len <= 0xffff) {
		h[1] = 126;
		h[2] = (unsigned char)(m->len >> 8);
		h[3] = (unsigned char)m->len;
		hl = 4;
	} else {
		h[1] = 127;
		for (int i = 0; i < 8; i++)
			h[2 + i] = (unsigned char)((uint64_t)m->len >> (56 - 8 * i));
		hl = 10;
	}
	cwm_wput(buf, h, hl);
	cwm_wput(buf, m->text, m->len);
	return buf->oom ? MG_MQTT_ERR_NOMEM : 0;
}

/* A writer, without the bridge lock: the batch as frames in one write
 * (mg_websocket_write would make two system calls a frame; the connection
 * lock keeps CivetWeb's own frames, pongs, from landing in the middle),
 * then the close frame if asked. Puts the messages. Returns 0, or MG_MQTT_ERR_IO when
 * the write failed. */
static int cwm_ws_write(struct cwm_bclient *bc, struct cwm_bmsg **batch,
                        unsigned n, struct cwm_wbuf *out, int close_frame)
{
	int failed = 0;
	out->n = 0;
	out->oom = 0;
	for (unsigned i = 0; i < n; i++) {
		if (cwm_ws_frame(out, batch[i]) != 0)
			failed = 1;
		cwm_bmsg_put(batch[i]);
	}
	if (!failed && out->n > 0) {
		mg_lock_connection(bc->conn);
		failed = mg_write(bc->conn, out->p, out->n) != (int)out->n;
		mg_unlock_connection(bc->conn);
	}
	if (out->cap > (1u << 20)) { /* don't keep a huge buffer around */
		free(out->p);
		out->p = NULL;
		out->cap = 0;
	}
	if (close_frame && !failed) {
		/* 1008: policy violation (could not keep up). */
		static const char bye[] = "\x03\xf0too slow";
		mg_websocket_write(bc->conn, MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE, bye,
		                   sizeof(bye) - 1);
	}
	return failed ? MG_MQTT_ERR_IO : 0;
}

/* What the socket of bc takes now without making a writer wait: SIZE_MAX
 * when that is not known (TLS); else half its send buffer (Linux reports
 * twice what it takes in data) less what is queued in it. *empty: nothing
 * is queued (a frame larger than the room may go then). */
static size_t cwm_ws_room(const struct cwm_bclient *bc, int *empty)
{
	int sndbuf = 0, outq = 0;
	socklen_t l = sizeof(sndbuf);
	*empty = 1;
	if (bc->fd < 0 ||
	    getsockopt(bc->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &l) != 0 ||
	    ioctl(bc->fd, TIOCOUTQ, &outq) != 0)
		return SIZE_MAX;
	*empty = outq == 0;
	return outq >= sndbuf / 2 ? 0 : (size_t)(sndbuf / 2 - outq);
}

/* [B] The first client on the writers' list whose socket is not known to
 * be full (retry_at passed), taken off the list; NULL when none, with
 * *until the earliest retry_at (0: the list is empty). */
static struct cwm_bclient *cwm_ws_next(struct cwm_bridge *b, int64_t now,
                                       int64_t *until)
{
	struct cwm_bclient *prev = NULL;
	*until = 0;
	for (struct cwm_bclient *bc = b->ready; bc != NULL;
	     prev = bc, bc = bc->ready_next) {
		if (bc->retry_at <= now) {
			*(prev != NULL ? &prev->ready_next : &b->ready) = bc->ready_next;
			if (b->ready_tail == bc)
				b->ready_tail = prev;
			bc->listed = 0;
			return bc;
		}
		if (*until == 0 || bc->retry_at < *until)
			*until = bc->retry_at;
	}
	return NULL;
}

/* [B] Waits for a client to write to (NULL: the bridge stops). */
static struct cwm_bclient *cwm_ws_wait(struct cwm_bridge *b)
{
	for (;;) {
		int64_t now = cwm_now_ms(), until = 0;
		struct cwm_bclient *bc = b->stopping ? NULL : cwm_ws_next(b, now, &until);
		if (bc != NULL || b->stopping)
			return bc;
		if (until == 0) {
			pthread_cond_wait(&b->wcond, &b->a->lock);
		} else {
			struct timespec ts = cwm_deadline(until - now);
			pthread_cond_timedwait(&b->wcond, &b->a->lock, &ts);
		}
	}
}

/* [B] The messages of bc that its socket takes now into batch; 0 with
 * bc put back on the list for later when the socket is full (a browser
 * that does not read holds no writer: it is tried again, ever more
 * rarely, until its queue overflows and it is dropped). */
static unsigned cwm_ws_batch(struct cwm_bclient *bc, struct cwm_bmsg **batch,
                             int *close_frame)
{
	int empty;
	size_t room = cwm_ws_room(bc, &empty);
	unsigned n = cwm_bclient_take_room(bc, batch, 64, room, empty);
	*close_frame = bc->close_frame && bc->qlen == 0 && room >= 16;
	if (n == 0 && !*close_frame) {
		bc->retry_gap = bc->retry_gap == 0 ? 5
		                : bc->retry_gap * 2 > CWM_WS_RETRY_MAX
		                    ? CWM_WS_RETRY_MAX
		                    : bc->retry_gap * 2;
		bc->retry_at = cwm_now_ms() + bc->retry_gap;
		return 0;
	}
	bc->retry_at = 0;
	bc->retry_gap = 0;
	if (*close_frame)
		bc->close_frame = 0;
	return n;
}

/* An mqtt-bridge thread: takes ready clients off the list and writes
 * their queues, as much as each socket takes without waiting. */
static void *cwm_bridge_writer(void *arg)
{
	struct cwm_bridge *b = arg;
	struct cwm_bmsg *batch[64];
	struct cwm_wbuf out = {NULL, 0, 0, 0};
	pthread_setname_np(pthread_self(), "mqtt-bridge");

	pthread_mutex_lock(&b->a->lock);
	struct cwm_bclient *bc;
	while ((bc = cwm_ws_wait(b)) != NULL) {
		int close_frame;
		unsigned n = cwm_ws_batch(bc, batch, &close_frame);
		if (n == 0 && !close_frame) {
			if (bc->qlen > 0 || bc->close_frame)
				cwm_bclient_list(b, bc); /* its socket is full: later */
			continue;
		}
		bc->busy = 1;
		pthread_mutex_unlock(&b->a->lock);
		int failed = cwm_ws_write(bc, batch, n, &out, close_frame) != 0;
		pthread_mutex_lock(&b->a->lock);
		bc->busy = 0;
		if (failed)
			cwm_bclient_drop(b, bc, "a write failed");
		else if (bc->qlen > 0 || bc->close_frame)
			cwm_bclient_list(b, bc);
		pthread_cond_broadcast(&b->idle);
	}
	pthread_mutex_unlock(&b->a->lock);
	cwm_wreset(&out);
	return NULL;
}

/* -- WebSocket handlers (CivetWeb's worker thread of the connection) -------- */

/* A WebSocket's user data between the upgrade and the ready handler: its
 * place in BRIDGE_MAX_CLIENTS is reserved (cwm_ws_connect), not yet a
 * client (cwm_ws_ready makes it one, or gives the place back). */
static char cwm_ws_reserved;

/* The upgrade: only <path>/ws itself; with BRIDGE_AUTH_FILE
 * authenticated; from no Origin, the server's own or an allowed one (a
 * WebSocket is not held by the same-origin policy: any page could open
 * one with the visitor's credentials); and while BRIDGE_MAX_CLIENTS has
 * room, which is reserved here: counted only once ready, 16 upgrades at
 * once against a limit of 8 let up to 13 in. 0: go on; 1: refused (with
 * a response unless not ours). */
static int cwm_ws_connect(const struct mg_connection *cconn, void *cbdata)
{
	/* CivetWeb hands the connection as const; refusing means writing the
	 * response on it. */
	struct mg_connection *conn = (struct mg_connection *)(uintptr_t)cconn;
	const char *uri = mg_get_request_info(conn)->local_uri;
	struct cwm_bridge *b = cwm_bridge_acquire(cbdata);
	int refuse = 1;
	if (b == NULL)
		return 1; /* refuse the upgrade */
	if (!cwm_bridge_owns(b, uri) || strcmp(uri + b->plen, "/ws") != 0)
		refuse = 1;
	else if (!cwm_host_ok(b, conn))
		cwm_reply_error(conn, 403, CWM_HOST_ERR);
	else if (!cwm_origin_ok(b, conn))
		cwm_reply_error(conn, 403,
		                "cross-site WebSocket: this Origin is not allowed "
		                "(BRIDGE_ALLOWED_ORIGINS)");
	else if (!cwm_bridge_authorized(b, conn))
		refuse = 1;
	else if (!cwm_stream_reserve(b))
		cwm_reply_busy(conn);
	else {
		refuse = 0;
		mg_set_user_connection_data(cconn, &cwm_ws_reserved);
	}
	cwm_bridge_release(b);
	return refuse;
}

static void cwm_ws_ready(struct mg_connection *conn, void *cbdata)
{
	struct cwm_bridge *b = cwm_bridge_acquire(cbdata);
	mg_set_user_connection_data(conn, NULL);
	if (b == NULL)
		return; /* stopping: its reservation goes with the bridge */
	int fd = mg_get_request_info(conn)->is_ssl ? -1 : cwm_conn_fd(conn);
	pthread_mutex_lock(&b->a->lock);
	struct cwm_bclient *bc = cwm_bclient_new(b, conn, BC_WS);
	if (bc == NULL)
		cwm_stream_release(b);
	if (bc != NULL) {
		bc->fd = fd;
		mg_set_user_connection_data(conn, bc);
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "op", "hello");
		cJSON_AddBoolToObject(o, "connected", mg_mqtt_is_connected(b->c));
		cJSON_AddStringToObject(o, "prefix", b->c->prefix);
		cwm_bclient_send(b, bc, o);
		cJSON_Delete(o);
	}
	pthread_mutex_unlock(&b->a->lock);
	cwm_bridge_release(b);
}

/* Replies to one op: {"op":"ack"|"error","of":op,"id":<echo>,...}; rc:
 * 0, or the code whose HTTP status goes into "status". */
static void cwm_ws_reply(struct cwm_bridge *b, struct cwm_bclient *bc,
                         const char *op, const cJSON *id, int rc,
                         const char *err, const char *topic, int message_id)
{
	/* Echoes only what is valid UTF-8: a text frame that is not makes a
	 * conforming WebSocket client close the connection (RFC 6455). */
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "op", rc == 0 ? "ack" : "error");
	cJSON_AddStringToObject(o, "of",
	                        cwm_utf8_valid(op, strlen(op)) ? op : "");
	if (id != NULL) {
		char *t = cJSON_PrintUnformatted(id);
		if (t != NULL && cwm_utf8_valid(t, strlen(t)))
			cJSON_AddItemToObject(o, "id", cJSON_Duplicate(id, 1));
		cJSON_free(t);
	}
	if (topic != NULL && cwm_utf8_valid(topic, strlen(topic)))
		cJSON_AddStringToObject(o, "topic", topic);
	if (rc != 0) {
		cJSON_AddNumberToObject(o, "status", cwm_http_status(rc));
		cJSON_AddStringToObject(o, "error",
		                        err != NULL ? err : mg_mqtt_strerror(rc));
	}
	if (message_id > 0)
		cJSON_AddNumberToObject(o, "message_id", message_id);
	pthread_mutex_lock(&b->a->lock);
	cwm_bclient_send(b, bc, o);
	pthread_mutex_unlock(&b->a->lock);
	cJSON_Delete(o);
}

/* "subscribe" / "unsubscribe": {"op":..,"topic":F[,"qos":N]}. */
static int cwm_ws_filter_op(struct cwm_bridge *b, struct cwm_bclient *bc,
                            const cJSON *req, int subscribe, const char **err)
{
	const cJSON *topic = cJSON_GetObjectItemCaseSensitive(req, "topic");
	const cJSON *qos = cJSON_GetObjectItemCaseSensitive(req, "qos");
	if (!cJSON_IsString(topic))
		return *err = "\"topic\" must be a string", MG_MQTT_ERR_INVALID;
	if (strlen(topic->valuestring) >= CWM_FILTER_LEN) /* as for SSE */
		return *err = "a topic filter is too long (at most 511 bytes)",
		       MG_MQTT_ERR_FILTER;
	if (!subscribe)
		return cwm_bridge_unsubscribe(b, bc, topic->valuestring, err);
	if (qos != NULL &&
	    (!cJSON_IsNumber(qos) || qos->valueint < 0 || qos->valueint > 2 ||
	     qos->valuedouble != (double)qos->valueint))
		return *err = "\"qos\" must be 0, 1 or 2", MG_MQTT_ERR_QOS;
	return cwm_bridge_subscribe(b, bc, topic->valuestring,
	                            qos != NULL ? qos->valueint : 0, err);
}

/* Runs one op a browser sent (req: the parsed text frame, NULL when it
 * did not parse or was not text; jerr: why it did not parse) and queues
 * the reply. What it did goes into *res. */
static void cwm_ws_op(struct cwm_bridge *b, struct cwm_bclient *bc,
                      const cJSON *req, int text, const char *jerr,
                      struct cwm_ws_result *res)
{
	const cJSON *op = cJSON_GetObjectItemCaseSensitive(req, "op");
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(req, "id");
	const cJSON *topic = cJSON_GetObjectItemCaseSensitive(req, "topic");
	const char *name = cJSON_IsString(op) ? op->valuestring : "";
	const char *tname = cJSON_IsString(topic) ? topic->valuestring : NULL;

	memset(res, 0, sizeof(*res));
	res->rc = MG_MQTT_ERR_INVALID;
	if (!cJSON_IsObject(req) || !cJSON_IsString(op)) {
		res->err = jerr != NULL ? jerr
		           : text       ? "malformed JSON or missing \"op\""
		                        : "send JSON text frames";
		tname = NULL;
	} else if (strcmp(name, "subscribe") == 0 ||
	           strcmp(name, "unsubscribe") == 0) {
		res->kind = name[0] == 's' ? CWM_WS_SUBSCRIBE : CWM_WS_UNSUBSCRIBE;
		res->rc = cwm_ws_filter_op(b, bc, req, name[0] == 's', &res->err);
	} else if (strcmp(name, "unsubscribe_all") == 0) {
		pthread_mutex_lock(&b->a->lock);
		cwm_bclient_unsubscribe_all(b, bc);
		pthread_mutex_unlock(&b->a->lock);
		res->rc = 0;
		tname = NULL;
	} else if (strcmp(name, "publish") == 0) {
		res->kind = CWM_WS_PUBLISH;
		int mid = cwm_bridge_publish_json(b, req, &res->err);
		res->rc = mid > 0 ? 0 : mid;
		res->mid = mid > 0 ? mid : 0;
	} else {
		res->err = "unknown op (subscribe, unsubscribe, unsubscribe_all, "
		           "publish)";
		tname = NULL;
	}
	cwm_ws_reply(b, bc, name, id, res->rc, res->err, tname, res->mid);
}

/* Closes the WebSocket with 1009 (message too big): more than
 * BRIDGE_MAX_BODY in one message, whole or in fragments. */
static int cwm_ws_too_big(struct mg_connection *conn, struct cwm_bclient *bc)
{
	static const char bye[] = "\x03\xf1larger than BRIDGE_MAX_BODY";
	cwm_wreset(&bc->frag);
	bc->frag_op = 0;
	mg_websocket_write(conn, MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE, bye,
	                   sizeof(bye) - 1);
	return 0;
}

/* CivetWeb hands each frame of a fragmented message on its own: they are
 * put together here (bc->frag), up to BRIDGE_MAX_BODY. Returns 1 when a
 * whole message is in *msg / *n (bc->frag when it came in fragments), 0
 * while it is incomplete, -1 when it is too big. */
static int cwm_ws_message(struct cwm_bridge *b, struct cwm_bclient *bc,
                          int bits, char *data, size_t len, char **msg,
                          size_t *n, int *op)
{
	size_t max = (size_t)b->c->cfg.bridge_max_body;
	int fin = bits & 0x80, opcode = bits & 0xf;
	*msg = data;
	*n = len;
	*op = opcode;
	if (opcode != MG_WEBSOCKET_OPCODE_CONTINUATION && fin && bc->frag_op == 0)
		return len > max ? -1 : 1;
	if (opcode != MG_WEBSOCKET_OPCODE_CONTINUATION) {
		cwm_wreset(&bc->frag); /* a new message ends one left unfinished */
		bc->frag_op = opcode;
	} else if (bc->frag_op == 0) {
		*op = -1; /* a continuation of nothing */
		return fin ? 1 : 0;
	}
	if (bc->frag.n + len > max || cwm_wreserve(&bc->frag, len + 1) != 0)
		return -1;
	cwm_wput(&bc->frag, data, len);
	if (!fin)
		return 0;
	*msg = (char *)bc->frag.p;
	*n = bc->frag.n;
	*op = bc->frag_op;
	bc->frag_op = 0;
	return 1;
}

static int cwm_ws_data(struct mg_connection *conn, int bits, char *data,
                       size_t len, void *cbdata)
{
	struct cwm_bclient *bc = mg_get_user_connection_data(conn);
	struct cwm_anchor *a = cbdata;
	int opcode = bits & 0xf;
	if (opcode == MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE)
		return 0;
	if (opcode == MG_WEBSOCKET_OPCODE_PING || opcode == MG_WEBSOCKET_OPCODE_PONG)
		return 1;
	if (bc == NULL)
		return 0;
	atomic_fetch_add(&a->users, 1);
	pthread_mutex_lock(&a->lock);
	struct cwm_bridge *b = bc->b;
	if (b == NULL || atomic_load(&b->stopping) || bc->dead)
		b = NULL;
	pthread_mutex_unlock(&a->lock);
	if (b == NULL) {
		cwm_anchor_leave(a);
		return 0;
	}
	char *msg;
	size_t n;
	int op, whole = cwm_ws_message(b, bc, bits, data, len, &msg, &n, &op);
	if (whole < 0) {
		cwm_bridge_release(b);
		return cwm_ws_too_big(conn, bc);
	}
	if (whole > 0) {
		const char *jerr = NULL;
		int text = op == MG_WEBSOCKET_OPCODE_TEXT;
		cJSON *req = text ? cwm_json_parse(msg, n,
		                                   b->c->cfg.bridge_max_json_depth,
		                                   &jerr)
		                  : NULL;
		struct cwm_ws_result res;
		cwm_ws_op(b, bc, req, text, jerr, &res);
		cJSON_Delete(req);
		if (msg == (char *)bc->frag.p)
			cwm_wreset(&bc->frag);
	}
	cwm_bridge_release(b);
	return 1;
}

static void cwm_ws_close(const struct mg_connection *conn, void *cbdata)
{
	struct cwm_bclient *bc = mg_get_user_connection_data(conn);
	struct cwm_anchor *a = cbdata;
	if ((void *)bc == &cwm_ws_reserved) { /* never ready */
		struct cwm_bridge *b = cwm_bridge_acquire(a);
		if (b != NULL) {
			cwm_stream_release(b);
			cwm_bridge_release(b);
		}
		return;
	}
	if (bc == NULL)
		return;
	pthread_mutex_lock(&a->lock);
	if (bc->b != NULL)
		cwm_bclient_remove(bc->b, bc);
	pthread_mutex_unlock(&a->lock);
	cwm_bclient_free(bc);
}

#endif /* MG_MQTT_ENABLE_BRIDGE */
