/*
 * GET <path>/events: Server-Sent Events, written by the CivetWeb worker
 * thread that serves the stream.
 */
#include "internal.h"

#if MG_MQTT_ENABLE_BRIDGE

#define CWM_SSE_HEARTBEAT_MS 1000 /* SSE comment line when idle; a failed
                                    write is how a handler learns that the
                                    browser left or the server stops */

/* The stream's filters (?topic=F&topic=G, at most 16) and ?qos=, each
 * allowed by BRIDGE_SUBSCRIBE_ALLOW. Returns 0, or the status of the
 * error reply it sent. */
static int cwm_sse_filters(struct cwm_bridge *b, struct mg_connection *conn,
                           const char *qs,
                           char filters[16][CWM_FILTER_LEN], int *n, int *qos)
{
	int status;
	for (*n = 0;; (*n)++) {
		char extra[8];
		int r = *n < 16 ? cwm_query_topic(qs, "topic", (size_t)*n, filters[*n],
		                                  CWM_FILTER_LEN)
		                : cwm_query_topic(qs, "topic", (size_t)*n, extra,
		                                  sizeof(extra));
		if (r == MG_MQTT_ERR_NOT_FOUND)
			break;
		if (*n == 16)
			return cwm_reply_error(conn, 400,
			                       "at most 16 topic filters a stream");
		if (r == MG_MQTT_ERR_TOO_LARGE)
			return cwm_reply_error(conn, 400, "a topic filter is too long");
		if (r < 0)
			return cwm_reply_error(conn, 400, "invalid topic filter");
	}
	if (*n == 0)
		return cwm_reply_error(conn, 400,
		                       "give at least one ?topic=<filter> (at most 16)");
	if ((status = cwm_query_qos(conn, qs, qos)) != 0)
		return status;
	for (int i = 0; i < *n; i++) {
		if (cwm_bridge_filter(filters[i]) != 0)
			return cwm_reply_error(conn, 400, "invalid topic filter");
		if (!cwm_may_subscribe(b, filters[i]))
			return cwm_reply_denied(b, conn,
			                        "subscribing to this filter is not allowed "
			                        "(BRIDGE_SUBSCRIBE_ALLOW)");
	}
	return 0;
}

/* Writes the client's queue to the stream until the browser leaves, the
 * client is dropped, or the bridge or the server stops. [B] held on entry
 * and exit, released around each write. */
static void cwm_sse_stream(struct cwm_bridge *b, struct cwm_bclient *bc,
                           struct mg_connection *conn, int alive)
{
	struct cwm_bmsg *batch[64];
	struct cwm_wbuf out = {NULL, 0, 0, 0};
	while (alive && !bc->dead && !b->stopping) {
		if (bc->qlen == 0) {
			struct timespec until = cwm_deadline(CWM_SSE_HEARTBEAT_MS);
			if (pthread_cond_timedwait(&bc->cond, &b->a->lock, &until) ==
			        ETIMEDOUT &&
			    bc->qlen == 0 && !bc->dead && !b->stopping) {
				pthread_mutex_unlock(&b->a->lock);
				alive = mg_write(conn, ":\n", 2) > 0;
				pthread_mutex_lock(&b->a->lock);
			}
			continue;
		}
		unsigned k = cwm_bclient_take(bc, batch, 64);
		for (unsigned i = 0; i < k; i++) {
			struct cwm_bmsg *m = batch[i];
			if (m->sse == NULL && (m->sse = malloc(m->len + 9)) != NULL)
				m->sse_len = (size_t)sprintf(m->sse, "data: %s\n\n", m->text);
		}
		pthread_mutex_unlock(&b->a->lock);
		out.n = 0; /* one write for the batch */
		out.oom = 0;
		for (unsigned i = 0; i < k; i++) {
			if (batch[i]->sse != NULL)
				cwm_wput(&out, batch[i]->sse, batch[i]->sse_len);
			cwm_bmsg_put(batch[i]);
		}
		if (out.oom || (out.n > 0 && mg_write(conn, out.p, out.n) <= 0))
			alive = 0;
		pthread_mutex_lock(&b->a->lock);
	}
	cwm_wreset(&out);
}

/* GET <path>/events?topic=F&topic=G[&qos=N]: Server-Sent Events. The
 * worker thread serving the request stays here, writing the client's
 * queue, until the browser leaves, the client is dropped, or the bridge or
 * the server stops. */
static int cwm_route_events(struct cwm_bridge *b, struct mg_connection *conn)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	const char *qs = ri->query_string != NULL ? ri->query_string : "";
	char filters[16][CWM_FILTER_LEN];
	const char *err = NULL;
	int n, qos = 0, rc = 0, status;

	if ((status = cwm_sse_filters(b, conn, qs, filters, &n, &qos)) != 0)
		return status;
	if (!cwm_stream_reserve(b))
		return cwm_reply_busy(conn);
	pthread_mutex_lock(&b->a->lock);
	struct cwm_bclient *bc = cwm_bclient_new(b, conn, BC_SSE);
	pthread_mutex_unlock(&b->a->lock);
	if (bc == NULL) {
		cwm_stream_release(b);
		return cwm_reply_error(conn, 500, "out of memory");
	}
	for (int i = 0; i < n && rc == 0; i++)
		rc = cwm_bridge_subscribe(b, bc, filters[i], qos, &err);
	if (rc == 0) {
		static const char hello[] = "retry: 2000\n: civetweb-mqtt\n\n";
		mg_response_header_start(conn, 200);
		mg_response_header_add(conn, "Content-Type", "text/event-stream", -1);
		mg_response_header_add(conn, "Cache-Control", "no-store", -1);
		mg_response_header_add(conn, "X-Accel-Buffering", "no", -1);
		mg_response_header_add(conn, "X-Content-Type-Options", "nosniff", -1);
		mg_response_header_send(conn);
		int alive = strcmp(ri->request_method, "HEAD") != 0 &&
		            mg_write(conn, hello, sizeof(hello) - 1) > 0;
		pthread_mutex_lock(&b->a->lock);
		cwm_sse_stream(b, bc, conn, alive);
	} else {
		pthread_mutex_lock(&b->a->lock);
	}
	cwm_bclient_remove(b, bc);
	pthread_mutex_unlock(&b->a->lock);
	cwm_bclient_free(bc);
	cwm_stream_release(b);
	return rc == 0 ? 200 : cwm_reply_code(conn, rc, err);
}

#endif /* MG_MQTT_ENABLE_BRIDGE */
