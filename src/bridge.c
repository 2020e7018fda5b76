/*
 * The bridge: set-up and tear-down on a CivetWeb context, entering it from
 * CivetWeb's threads, access rules, and delivery of messages to browsers
 * (mqtt-dispatch).
 */
#include "internal.h"

#if MG_MQTT_ENABLE_BRIDGE

/* -- access rules ----------------------------------------------------------------- */

/* 1 when every topic filter f can match is matched by allow filter a:
 * level by level, '#' in a covers the rest, '+' in a covers one level of
 * any kind but '#', and a wildcard never covers a leading '$' level. */
static int cwm_filter_covers(const char *a, const char *f)
{
	for (int depth = 0;; depth++) {
		size_t al = strcspn(a, "/"), fl = strcspn(f, "/");
		int adollar_guard = depth == 0 && f[0] == '$';
		if (al == 1 && a[0] == '#')
			return !adollar_guard;
		if (fl == 1 && f[0] == '#')
			return 0;
		if (al == 1 && a[0] == '+') {
			if (adollar_guard)
				return 0;
		} else if (fl == 1 && f[0] == '+') {
			return 0;
		} else if (al != fl || memcmp(a, f, al) != 0) {
			return 0;
		}
		if (a[al] == '\0' || f[fl] == '\0')
			/* "a/#" also covers "a" (its parent level). */
			return a[al] == '\0' && f[fl] == '\0'
			           ? 1
			           : (f[fl] == '\0' && strcmp(a + al, "/#") == 0);
		a += al + 1;
		f += fl + 1;
	}
}

/* 1 when topic is a reply topic of mg_mqtt_request(): "<client id>/reply/
 * <id>". Browsers may neither publish to nor subscribe to those, whatever
 * the allow lists say (a browser could answer another's request). */
static int cwm_reply_topic(const struct cwm_bridge *b, const char *topic)
{
	const struct mg_mqtt *c = b->c;
	return c->reply_base != NULL &&
	       strncmp(topic, c->reply_base, c->reply_base_len) == 0;
}

static int cwm_may_publish(const struct cwm_bridge *b, const char *topic)
{
	const struct cwm_settings *s = &b->c->cfg;
	if (cwm_reply_topic(b, topic))
		return 0;
	for (int i = 0; i < s->nbpub; i++)
		if (mg_mqtt_topic_matches(s->bpub[i], topic))
			return 1;
	return 0;
}

static int cwm_may_subscribe(const struct cwm_bridge *b, const char *filter)
{
	const struct cwm_settings *s = &b->c->cfg;
	if (cwm_share_len(filter, strlen(filter)) != 0)
		return 0; /* shared subscriptions are the server's business */
	/* A filter that names the reply topics (its first level is the client
	 * id itself, not a wildcard); "#" and "+/..." are let through: replies
	 * are taken before anything is delivered (cwm_req_arrived). */
	const struct mg_mqtt *c = b->c;
	if (c->reply_base != NULL && filter[0] != '+' && filter[0] != '#') {
		char sample[600];
		snprintf(sample, sizeof(sample), "%.*s0", (int)c->reply_base_len,
		         c->reply_base);
		if (cwm_reply_topic(b, filter) ||
		    cwm_match(filter, sample, strlen(sample)))
			return 0;
	}
	for (int i = 0; i < s->nbsub; i++)
		if (cwm_filter_covers(s->bsub[i], filter))
			return 1;
	return 0;
}

/* -- delivery (mqtt-dispatch) -------------------------------------------------- */

/* Retained messages go only to the browsers whose subscription brought
 * them. A broker sets the retain flag only on what it sends because a
 * subscription was just made (MQTT 3.1.1 3.3.1.3; MQTT 5 alike unless
 * Retain As Published, which the client never asks for), and the
 * client's subscription to a filter serves every browser holding it:
 * without this, a browser subscribing and unsubscribing a filter that
 * holds 1,000 retained messages pushed all of them again to every other
 * browser on demo/# (20 messages: 10 MB). So a retained message goes to a
 * browser only through a filter it subscribed within the last
 * BRIDGE_RETAINED_WINDOW ms, time for a broker to send the retained
 * messages after the subscribe; older filters take live messages only.
 * The same rule for MQTT 5 (subscription identifiers would name the MQTT
 * filter, which browsers share, not the browser). */
static int cwm_bridge_wants(const struct cwm_bridge *b,
                            const struct cwm_handler *h,
                            const struct mg_mqtt_message *m, int64_t now)
{
	return !m->retain || now - h->since <= b->c->cfg.bridge_retained_window;
}

static void cwm_bridge_deliver(struct cwm_bridge *b,
                               const struct mg_mqtt_message *m)
{
	struct cwm_bmsg *bm = NULL;
	cwm_lv_update(b, m);
	pthread_mutex_lock(&b->a->lock);
	if (b->clients == NULL || b->stopping) {
		pthread_mutex_unlock(&b->a->lock);
		return;
	}
	if (cwm_tree_match(&b->tree, m->topic, m->topic_len, &b->cur, &b->nxt,
	                   &b->hits) == 0 &&
	    b->hits.n > 0) {
		uint64_t seq = ++b->seq;
		/* Pushing may drop a browser that fell behind, which frees its
		 * handlers, also those further in hits (overlapping filters):
		 * take every hit's client first. Clients are only marked dead
		 * here, freed later. */
		int64_t now = cwm_now_ms();
		size_t k = 0;
		for (size_t i = 0; i < b->hits.n; i++)
			if (cwm_bridge_wants(b, b->hits.v[i], m, now))
				b->hits.v[k++] = ((struct cwm_handler *)b->hits.v[i])->ud;
		b->hits.n = k;
		for (size_t i = 0; i < b->hits.n; i++) {
			struct cwm_bclient *bc = b->hits.v[i];
			if (bc->stamp == seq || bc->dead)
				continue;
			bc->stamp = seq; /* overlapping filters: once per client */
			if (bm == NULL && (bm = cwm_bmsg_make(m)) == NULL)
				break;
			cwm_bclient_push(b, bc, bm);
			atomic_fetch_add(&b->delivered, 1);
		}
	}
	pthread_mutex_unlock(&b->a->lock);
	cwm_bmsg_put(bm);
}

/* mqtt-dispatch: tells every browser that the MQTT connection came or
 * went: {"op":"state","connected":..,"broker":..}. */
static void cwm_bridge_state(struct cwm_bridge *b, int connected,
                             const char *broker)
{
	pthread_mutex_lock(&b->a->lock);
	if (b->clients != NULL && !b->stopping) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "op", "state");
		cJSON_AddBoolToObject(o, "connected", connected);
		cJSON_AddStringToObject(o, "broker", broker != NULL ? broker : "");
		struct cwm_bmsg *m = cwm_bmsg_json(o);
		cJSON_Delete(o);
		for (struct cwm_bclient *bc = b->clients; m != NULL && bc != NULL;
		     bc = bc->next)
			cwm_bclient_push(b, bc, m);
		cwm_bmsg_put(m);
	}
	pthread_mutex_unlock(&b->a->lock);
}

/* -- acquiring the bridge from CivetWeb's threads -------------------------------- */

/* Entering and leaving the bridge costs two atomic operations, no lock:
 * every request to the bridge does it. The count is the anchor's (never
 * freed) and goes up before the bridge pointer is read, so the destroyer,
 * which clears the pointer and then waits for the count to drop to 0,
 * cannot free a bridge someone is in. */
static void cwm_anchor_leave(struct cwm_anchor *a)
{
	if (atomic_fetch_sub(&a->users, 1) == 1 && atomic_load(&a->draining)) {
		pthread_mutex_lock(&a->lock);
		pthread_cond_broadcast(&a->idle);
		pthread_mutex_unlock(&a->lock);
	}
}

static struct cwm_bridge *cwm_bridge_acquire(struct cwm_anchor *a)
{
	atomic_fetch_add(&a->users, 1);
	struct cwm_bridge *b = atomic_load(&a->bridge);
	if (b == NULL || atomic_load(&b->stopping)) {
		cwm_anchor_leave(a);
		return NULL;
	}
	return b;
}

static void cwm_bridge_release(struct cwm_bridge *b)
{
	cwm_anchor_leave(b->a);
}

/* The bridge's part of the status: "bridge" in o, its counters and
 * gauges (atomic: read without the bridge lock). */
static void cwm_bridge_status(struct cwm_bridge *b, cJSON *o, cJSON *counters,
                              cJSON *gauges)
{
	cJSON *bo = cJSON_CreateObject();
	int ws = atomic_load(&b->n_ws), sse = atomic_load(&b->n_sse);
	cJSON_AddStringToObject(bo, "path", b->path);
	cJSON_AddNumberToObject(bo, "websocket_clients", ws);
	cJSON_AddNumberToObject(bo, "sse_clients", sse);
	cJSON_AddNumberToObject(bo, "waiting_requests", atomic_load(&b->n_req));
	cJSON_AddNumberToObject(bo, "max_clients", b->max_clients);
	cJSON_AddBoolToObject(bo, "authentication",
	                      b->c->cfg.bridge_auth_file != NULL);
	cJSON_AddItemToObject(o, "bridge", bo);
	cJSON_AddNumberToObject(gauges, "bridge_clients", ws + sse);
	cwm_json_count(counters, "bridge_delivered", &b->delivered);
	cwm_json_count(counters, "bridge_dropped_clients", &b->dropped_clients);
	cwm_json_count(counters, "bridge_publishes", &b->publishes);
	cwm_json_count(counters, "bridge_rejected", &b->rejected);
	pthread_mutex_lock(&b->lv_lock);
	cJSON_AddNumberToObject(gauges, "bridge_last_values", (double)b->lv.n);
	pthread_mutex_unlock(&b->lv_lock);
}

/* BRIDGE_MAX_CLIENTS: one more stream (a WebSocket from its upgrade on,
 * an SSE stream or a waiting request) if there is room. 1: reserved. */
static int cwm_stream_reserve(struct cwm_bridge *b)
{
	if (atomic_fetch_add(&b->n_streams, 1) >= b->max_clients) {
		atomic_fetch_sub(&b->n_streams, 1);
		return 0;
	}
	return 1;
}

static void cwm_stream_release(struct cwm_bridge *b)
{
	atomic_fetch_sub(&b->n_streams, 1);
}

/* -- set-up and tear-down ------------------------------------------------------------ */

/* Anchors are never freed: CivetWeb's handlers may still point at one
 * after the bridge is gone (a later start on the context reuses it). */
static pthread_mutex_t cwm_anchors_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cwm_anchor *cwm_anchors; /* under cwm_anchors_lock */

static struct cwm_anchor *cwm_anchor_get(const struct mg_context *ctx,
                                         const char *prefix)
{
	struct cwm_anchor *a;
	pthread_mutex_lock(&cwm_anchors_lock);
	for (a = cwm_anchors; a != NULL; a = a->next)
		if (a->ctx == ctx && strcmp(a->prefix, prefix) == 0)
			break;
	if (a == NULL && (a = calloc(1, sizeof(*a))) != NULL) {
		a->ctx = ctx;
		snprintf(a->prefix, sizeof(a->prefix), "%s", prefix);
		pthread_mutex_init(&a->lock, NULL);
		pthread_cond_init(&a->idle, NULL);
		a->next = cwm_anchors;
		cwm_anchors = a;
	}
	pthread_mutex_unlock(&cwm_anchors_lock);
	return a;
}

/* 1 when CivetWeb's global_auth_file guards every request of ctx. */
static int cwm_civetweb_auth(const struct mg_context *ctx)
{
	const char *gaf = mg_get_option(ctx, "global_auth_file");
	return gaf != NULL && gaf[0] != '\0';
}

/* Before the client's threads start: the bridge, not yet reachable. */
static int cwm_bridge_create(struct mg_mqtt *c, char *err, size_t errlen)
{
	if (c->ctx == NULL) {
		cwm_fmt(err, errlen,
		        "%s_BRIDGE_PATH: the bridge needs a CivetWeb context (ctx is "
		        "NULL)",
		        c->prefix);
		return MG_MQTT_ERR_CONFIG;
	}
	/* 16: WebSocket support, which <path>/ws needs. A CivetWeb built
	 * without it (its CMake default, CIVETWEB_ENABLE_WEBSOCKETS OFF) can
	 * still be the one loaded at run time: say so instead of starting a
	 * bridge whose WebSocket route cannot work. */
	if (mg_check_feature(16) == 0) {
		cwm_fmt(err, errlen,
		        "%s_BRIDGE_PATH: this CivetWeb was built without WebSocket "
		        "support (mg_check_feature(16) is 0), which the bridge needs: "
		        "use a CivetWeb built with WebSockets (USE_WEBSOCKET, CMake "
		        "CIVETWEB_ENABLE_WEBSOCKETS=ON), or leave %s_BRIDGE_PATH "
		        "unset",
		        c->prefix, c->prefix);
		return MG_MQTT_ERR_CONFIG;
	}
	/* CivetWeb checks global_auth_file on every request before the
	 * bridge sees it, with nonces of its own: no Authorization header can
	 * answer both it and BRIDGE_AUTH_FILE, so every request would be
	 * refused. global_auth_file alone guards the bridge's routes too. */
	if (c->cfg.bridge_auth_file != NULL && cwm_civetweb_auth(c->ctx)) {
		cwm_fmt(err, errlen,
		        "%s_BRIDGE_AUTH_FILE cannot be used with CivetWeb's "
		        "global_auth_file (a browser cannot answer both digest "
		        "challenges: every request would be refused); leave "
		        "%s_BRIDGE_AUTH_FILE unset, global_auth_file guards the bridge "
		        "too",
		        c->prefix, c->prefix);
		return MG_MQTT_ERR_CONFIG;
	}
	struct cwm_bridge *b = calloc(1, sizeof(*b));
	struct cwm_anchor *a = cwm_anchor_get(c->ctx, c->prefix);
	const char *realm = mg_get_option(c->ctx, "authentication_domain");
	if (b == NULL || a == NULL ||
	    (b->realm = cwm_strdup(realm != NULL ? realm : "")) == NULL) {
		free(b);
		return MG_MQTT_ERR_NOMEM;
	}
	b->c = c;
	b->a = a;
	b->path = c->cfg.bridge_path;
	b->plen = strlen(b->path);
	const char *nt = mg_get_option(c->ctx, "num_threads");
	const char *rt = mg_get_option(c->ctx, "request_timeout_ms");
	b->max_clients = c->cfg.bridge_max_clients > 0
	                     ? c->cfg.bridge_max_clients
	                     : (nt != NULL && atoi(nt) > 0 ? atoi(nt) : 50) / 2;
	if (b->max_clients < 1)
		b->max_clients = 1;
	b->read_timeout_ms = rt != NULL && atoi(rt) > 0 ? atoi(rt) : 30000;
	pthread_mutex_init(&b->nonce_lock, NULL);
	if (getrandom(b->secret, sizeof(b->secret), 0) != (ssize_t)sizeof(b->secret))
		for (size_t i = 0; i < sizeof(b->secret); i++)
			b->secret[i] = (unsigned char)(rand_r(&c->seed) >> 3);
	pthread_cond_init(&b->wcond, NULL);
	pthread_cond_init(&b->idle, NULL);
	pthread_mutex_init(&b->lv_lock, NULL);
	c->bridge = b;
	return 0;
}

/* After a successful start: writers, then CivetWeb's handlers. */
static int cwm_bridge_open(struct mg_mqtt *c, char *err, size_t errlen)
{
	struct cwm_bridge *b = c->bridge;
	char uri[256];
	for (; b->nwriters < CWM_WRITERS; b->nwriters++)
		if (pthread_create(&b->writers[b->nwriters], NULL, cwm_bridge_writer,
		                   b) != 0) {
			cwm_fmt(err, errlen, "%s: cannot create a bridge thread", c->prefix);
			return MG_MQTT_ERR_THREAD;
		}
	pthread_mutex_lock(&b->a->lock);
	atomic_store(&b->a->bridge, b);
	pthread_mutex_unlock(&b->a->lock);
	snprintf(uri, sizeof(uri), "%s/ws", b->path);
	/* No auth handler: the routes check BRIDGE_AUTH_FILE themselves
	 * (cwm_bridge_authorized). NULL removes one an older version may
	 * have left on this context. */
	mg_set_auth_handler(c->ctx, b->path, NULL, b->a);
	mg_set_websocket_handler(c->ctx, uri, cwm_ws_connect, cwm_ws_ready,
	                         cwm_ws_data, cwm_ws_close, b->a);
	mg_set_request_handler(c->ctx, b->path, cwm_bridge_http, b->a);
	cwm_log(c, MG_MQTT_LOG_INFO,
	        "bridge at %s (publish: %d filter(s), subscribe: %d filter(s), "
	        "%s)",
	        b->path, c->cfg.nbpub, c->cfg.nbsub,
	        c->cfg.bridge_auth_file != NULL ? "digest authentication"
	        : cwm_civetweb_auth(c->ctx)     ? "CivetWeb's global_auth_file"
	                                        : "no authentication");
	return 0;
}

/* After mqtt-dispatch has stopped. CivetWeb may still hold WebSocket
 * connections of this bridge: they are detached, and their close handler
 * frees them. SSE handlers are woken and waited for. */
static void cwm_bridge_destroy(struct mg_mqtt *c)
{
	struct cwm_bridge *b = c->bridge;
	if (b == NULL)
		return;
	pthread_mutex_lock(&b->a->lock);
	if (atomic_load(&b->a->bridge) == b)
		atomic_store(&b->a->bridge, NULL);
	atomic_store(&b->stopping, 1);
	pthread_cond_broadcast(&b->wcond);
	for (struct cwm_bclient *bc = b->clients; bc != NULL; bc = bc->next)
		pthread_cond_signal(&bc->cond);
	pthread_mutex_unlock(&b->a->lock);
	for (int i = 0; i < b->nwriters; i++)
		pthread_join(b->writers[i], NULL);

	atomic_store(&b->a->draining, 1);
	pthread_mutex_lock(&b->a->lock);
	while (atomic_load(&b->a->users) > 0) {
		/* SSE handlers were woken above; plain requests are brief. */
		struct timespec until = cwm_deadline(100);
		for (struct cwm_bclient *bc = b->clients; bc != NULL; bc = bc->next)
			pthread_cond_signal(&bc->cond);
		pthread_cond_timedwait(&b->a->idle, &b->a->lock, &until);
	}
	atomic_store(&b->a->draining, 0);
	while (b->clients != NULL) {
		struct cwm_bclient *bc = b->clients;
		bc->busy = 0; /* writers are gone */
		cwm_bclient_remove(b, bc);
	}
	pthread_mutex_unlock(&b->a->lock);

	cwm_tree_clear(&b->tree);
	free(b->cur.v);
	free(b->nxt.v);
	free(b->hits.v);
	free(b->realm);
	cwm_map_free(&b->lv, cwm_lv_free);
	pthread_mutex_destroy(&b->lv_lock);
	pthread_mutex_destroy(&b->nonce_lock);
	pthread_cond_destroy(&b->wcond);
	pthread_cond_destroy(&b->idle);
	free(b);
	c->bridge = NULL;
}

#endif /* MG_MQTT_ENABLE_BRIDGE */
