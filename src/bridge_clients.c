/*
 * Browser clients of the bridge (struct cwm_bclient): their bounded queues,
 * dropping a slow one, and their subscriptions.
 */
#include "internal.h"

#if MG_MQTT_ENABLE_BRIDGE

/* -- clients ------------------------------------------------------------------ */

/* [B] Frees what the client has queued. */
static void cwm_bclient_flush(struct cwm_bclient *bc)
{
	for (unsigned i = 0; i < bc->qlen; i++)
		cwm_bmsg_put(bc->q[(bc->qhead + i) % bc->qcap]);
	bc->qhead = bc->qlen = 0;
	bc->qbytes = 0;
}

/* [B] Puts a WebSocket client with work on the writers' list. */
static void cwm_bclient_list(struct cwm_bridge *b, struct cwm_bclient *bc)
{
	if (bc->kind != BC_WS || bc->busy || bc->listed)
		return;
	bc->listed = 1;
	CWM_FIFO_PUSH(b->ready, b->ready_tail, bc, ready_next);
	pthread_cond_signal(&b->wcond);
}

/* [B] Lets go of every filter of the client (unsubscribing the MQTT client
 * from those no one else holds). */
static void cwm_bclient_unsubscribe_all(struct cwm_bridge *b,
                                        struct cwm_bclient *bc)
{
	struct cwm_map *m = &bc->filters;
	for (size_t i = 0; i < m->nb; i++)
		for (struct cwm_map_ent *e = m->b[i]; e != NULL; e = e->next) {
			cwm_tree_remove(&b->tree, e->key, bc);
			cwm_sub_unref(b->c, e->key);
		}
	cwm_map_free(m, NULL);
}

/* [B] Drops a client that cannot keep up: nothing more is queued for it,
 * its subscriptions go, and the browser is told to go away. */
static void cwm_bclient_drop(struct cwm_bridge *b, struct cwm_bclient *bc,
                             const char *why)
{
	if (bc->dead)
		return;
	bc->dead = 1;
	cwm_bclient_flush(bc);
	cwm_bclient_unsubscribe_all(b, bc);
	atomic_fetch_add(&b->dropped_clients, 1);
	cwm_log(b->c, MG_MQTT_LOG_WARNING, "bridge: %s client %u dropped: %s",
	        bc->kind == BC_WS ? "WebSocket" : "SSE", bc->id, why);
	if (bc->kind == BC_WS) {
		bc->close_frame = 1;
		cwm_bclient_list(b, bc);
	} else {
		pthread_cond_signal(&bc->cond);
	}
}

/* [B] Queues m for the client; drops the client when its queue is full:
 * BRIDGE_CLIENT_QUEUE messages, or BRIDGE_CLIENT_QUEUE_BYTES (a message
 * larger than that alone still goes into an empty queue). */
static void cwm_bclient_push(struct cwm_bridge *b, struct cwm_bclient *bc,
                             struct cwm_bmsg *m)
{
	unsigned cap = (unsigned)b->c->cfg.bridge_client_queue;
	size_t max_bytes = (size_t)b->c->cfg.bridge_client_queue_bytes;
	if (bc->dead)
		return;
	if (bc->qlen >= cap) {
		cwm_bclient_drop(b, bc, "its queue is full (BRIDGE_CLIENT_QUEUE)");
		return;
	}
	if (bc->qlen > 0 && bc->qbytes + m->len > max_bytes) {
		cwm_bclient_drop(b, bc,
		                 "its queue is full (BRIDGE_CLIENT_QUEUE_BYTES)");
		return;
	}
	if (bc->qlen == bc->qcap) {
		unsigned ncap = bc->qcap == 0 ? 16 : bc->qcap * 2;
		if (ncap > cap)
			ncap = cap;
		struct cwm_bmsg **nq = malloc(ncap * sizeof(*nq));
		if (nq == NULL) {
			cwm_bclient_drop(b, bc, "out of memory");
			return;
		}
		for (unsigned i = 0; i < bc->qlen; i++)
			nq[i] = bc->q[(bc->qhead + i) % bc->qcap];
		free(bc->q);
		bc->q = nq;
		bc->qhead = 0;
		bc->qcap = ncap;
	}
	atomic_fetch_add(&m->refs, 1);
	bc->q[(bc->qhead + bc->qlen) % bc->qcap] = m;
	bc->qlen++;
	bc->qbytes += m->len;
	if (bc->kind == BC_SSE)
		pthread_cond_signal(&bc->cond);
	else
		cwm_bclient_list(b, bc);
}

/* [B] Takes up to max messages off the client's queue, oldest first; the
 * caller puts each (cwm_bmsg_put) once written. Returns how many. */
static unsigned cwm_bclient_take(struct cwm_bclient *bc, struct cwm_bmsg **out,
                                 unsigned max)
{
	unsigned n = 0;
	while (n < max && bc->qlen > 0) {
		out[n] = bc->q[bc->qhead];
		bc->qbytes -= out[n++]->len;
		bc->qhead = (bc->qhead + 1) % bc->qcap;
		bc->qlen--;
	}
	return n;
}

/* [B] Like cwm_bclient_take, but only as many messages as their frames
 * (a header of 10 bytes at most) fit in room bytes; the first one also
 * when it alone is larger and first is set. */
static unsigned cwm_bclient_take_room(struct cwm_bclient *bc,
                                      struct cwm_bmsg **out, unsigned max,
                                      size_t room, int first)
{
	unsigned n = 0;
	size_t used = 0;
	while (n < max && bc->qlen > 0) {
		size_t fl = bc->q[bc->qhead]->len + 10;
		if (used + fl > room && !(n == 0 && first))
			break;
		used += fl;
		n += cwm_bclient_take(bc, out + n, 1);
	}
	return n;
}

/* [B] Queues a JSON object (an ack or an error) for the client. */
static void cwm_bclient_send(struct cwm_bridge *b, struct cwm_bclient *bc,
                             cJSON *o)
{
	struct cwm_bmsg *m = cwm_bmsg_json(o);
	if (m != NULL) {
		cwm_bclient_push(b, bc, m);
		cwm_bmsg_put(m);
	}
}

static struct cwm_bclient *cwm_bclient_new(struct cwm_bridge *b,
                                           struct mg_connection *conn,
                                           enum cwm_bkind kind)
{
	struct cwm_bclient *bc = calloc(1, sizeof(*bc));
	if (bc == NULL)
		return NULL;
	bc->b = b;
	bc->conn = conn;
	bc->kind = kind;
	bc->fd = -1;
	pthread_cond_init(&bc->cond, NULL);
	/* [B] held by the caller */
	bc->id = ++b->next_id;
	bc->next = b->clients;
	if (b->clients != NULL)
		b->clients->prev = bc;
	b->clients = bc;
	/* Its place in n_streams was reserved before: at the upgrade
	 * (cwm_ws_connect) or the request (cwm_route_events). */
	atomic_fetch_add(kind == BC_WS ? &b->n_ws : &b->n_sse, 1);
	return bc;
}

/* [B] Takes the client out of the bridge, waiting for a writer that is
 * writing to it; the caller frees it afterwards (cwm_bclient_free). */
static void cwm_bclient_remove(struct cwm_bridge *b, struct cwm_bclient *bc)
{
	bc->dead = 1;
	while (bc->busy)
		pthread_cond_wait(&b->idle, &b->a->lock);
	if (bc->listed) {
		struct cwm_bclient **pp = &b->ready, *prev = NULL;
		while (*pp != bc) {
			prev = *pp;
			pp = &(*pp)->ready_next;
		}
		*pp = bc->ready_next;
		if (b->ready_tail == bc)
			b->ready_tail = prev;
		bc->listed = 0;
	}
	cwm_bclient_flush(bc);
	cwm_bclient_unsubscribe_all(b, bc);
	CWM_DL_UNLINK_HEAD(b->clients, bc, prev, next);
	atomic_fetch_sub(bc->kind == BC_WS ? &b->n_ws : &b->n_sse, 1);
	if (bc->kind == BC_WS)
		atomic_fetch_sub(&b->n_streams, 1);
	bc->b = NULL;
}

static void cwm_bclient_free(struct cwm_bclient *bc)
{
	cwm_bclient_flush(bc);
	cwm_map_free(&bc->filters, NULL);
	free(bc->q);
	cwm_wreset(&bc->frag);
	pthread_cond_destroy(&bc->cond);
	free(bc);
}

/* Rewrites a browser's filter in place with its "{name}" levels written
 * '+' (never longer). Returns 0 or what cwm_filter_normalize returns. */
static int cwm_bridge_filter(char *filter)
{
	char *plain;
	int rc = cwm_filter_normalize(filter, &plain, NULL);
	if (rc == 0) {
		memcpy(filter, plain, strlen(plain) + 1);
		free(plain);
	}
	return rc;
}

/* Subscribes client bc to filter for a browser. Returns 0 or a negative
 * code (MG_MQTT_ERR_FILTER, CWM_ERR_DENIED, CWM_ERR_GONE: the client was
 * dropped, _NOMEM) with *err. Takes the bridge lock. */
static int cwm_bridge_subscribe(struct cwm_bridge *b, struct cwm_bclient *bc,
                                char *filter, int qos, const char **err)
{
	if (cwm_bridge_filter(filter) != 0) {
		*err = "invalid topic filter";
		return MG_MQTT_ERR_FILTER;
	}
	if (cwm_levels_check(b->c, filter, 1) != 0) {
		*err = CWM_LEVELS_ERR;
		return MG_MQTT_ERR_FILTER;
	}
	if (!cwm_may_subscribe(b, filter)) {
		atomic_fetch_add(&b->rejected, 1);
		*err = "subscribing to this filter is not allowed "
		       "(BRIDGE_SUBSCRIBE_ALLOW)";
		return CWM_ERR_DENIED;
	}
	size_t fl = strlen(filter);
	int rc = 0;
	pthread_mutex_lock(&b->a->lock);
	if (bc->dead) {
		*err = "the client was dropped";
		rc = CWM_ERR_GONE;
	} else {
		intptr_t old = (intptr_t)cwm_map_get(&bc->filters, filter, fl);
		struct cwm_handler *h = NULL;
		if (old == 0 &&
		    bc->filters.n >= (size_t)b->c->cfg.bridge_max_filters) {
			*err = "too many filters for one client (BRIDGE_MAX_FILTERS)";
			rc = MG_MQTT_ERR_INVALID;
		} else if (old == 0 && (h = calloc(1, sizeof(*h))) == NULL) {
			*err = "out of memory";
			rc = MG_MQTT_ERR_NOMEM;
		} else if (cwm_map_put(&bc->filters, filter, fl,
		                       (void *)(intptr_t)(qos + 1)) != 0) {
			free(h);
			*err = "out of memory";
			rc = MG_MQTT_ERR_NOMEM;
		} else {
			if (h != NULL) {
				h->ud = bc;
				h->since = cwm_now_ms();
				if (cwm_tree_add(&b->tree, filter, h) != 0)
					free(h); /* matches nothing; unsubscribe is harmless */
			}
			/* One count per client and filter; a higher QoS re-subscribes. */
			if (old == 0)
				cwm_sub_ref(b->c, filter, qos, 0);
			else if (qos + 1 > old) {
				cwm_sub_ref(b->c, filter, qos, 0);
				cwm_sub_unref(b->c, filter);
			}
		}
	}
	pthread_mutex_unlock(&b->a->lock);
	return rc;
}

/* Lets go of one filter of a browser. Returns 0, MG_MQTT_ERR_FILTER or
 * MG_MQTT_ERR_NOT_FOUND (not subscribed) with *err. Takes the bridge
 * lock. */
static int cwm_bridge_unsubscribe(struct cwm_bridge *b, struct cwm_bclient *bc,
                                  char *filter, const char **err)
{
	int rc = 0;
	if (cwm_bridge_filter(filter) != 0) {
		*err = "invalid topic filter";
		return MG_MQTT_ERR_FILTER;
	}
	pthread_mutex_lock(&b->a->lock);
	if (cwm_map_del(&bc->filters, filter, strlen(filter)) == NULL) {
		*err = "not subscribed to this filter";
		rc = MG_MQTT_ERR_NOT_FOUND;
	} else {
		cwm_tree_remove(&b->tree, filter, bc);
		cwm_sub_unref(b->c, filter);
	}
	pthread_mutex_unlock(&b->a->lock);
	return rc;
}

#endif /* MG_MQTT_ENABLE_BRIDGE */
