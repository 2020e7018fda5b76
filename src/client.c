/*
 * The client's life cycle: create, handler registration, the registry of
 * started clients (mg_mqtt_get), start, stop.
 */
#include "internal.h"

int mg_mqtt_is_connected(const struct mg_mqtt *c)
{
	return c != NULL && atomic_load(&c->connected);
}

struct mg_mqtt *mg_mqtt_create(const char *prefix)
{
	struct mg_mqtt *c;
	pthread_condattr_t ca;

	if (prefix == NULL || prefix[0] == '\0')
		prefix = "MQTT";
	size_t n = strlen(prefix);
	if (n >= sizeof(c->prefix))
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (!(isalnum((unsigned char)prefix[i]) || prefix[i] == '_'))
			return NULL;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++)
		c->prefix[i] = (char)toupper((unsigned char)prefix[i]);
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->req_lock, NULL);
	pthread_mutex_init(&c->pstore_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_cond_init(&c->io_cond, &ca);
	pthread_cond_init(&c->ev_cond, &ca);
	pthread_cond_init(&c->state_cond, &ca);
	pthread_condattr_destroy(&ca);
	c->next_id = 1;
	return c;
}

const char *mg_mqtt_prefix(const struct mg_mqtt *c)
{
	return c != NULL ? c->prefix : NULL;
}

/* has_handler: the handler given is not NULL (a function pointer cannot be
 * passed as const void * in ISO C, so each setter tests its own). */
static int cwm_can_register(const struct mg_mqtt *c, int has_handler)
{
	if (c == NULL || !has_handler)
		return MG_MQTT_ERR_INVALID;
	if (atomic_load(&c->ops_ok) || c->dispatch_started)
		return MG_MQTT_ERR_STARTED;
	return 0;
}

/* Both topic handler kinds: h into tree, counted in *count. */
static int cwm_on_topic_into(struct mg_mqtt *c, struct cwm_tnode *tree,
                             unsigned *count, const char *filter,
                             mg_mqtt_message_handler h, void *user_data)
{
	int rc = cwm_can_register(c, h != NULL);
	if (rc != 0)
		return rc;
	if (filter == NULL)
		return MG_MQTT_ERR_INVALID;
	char *plain;
	struct mg_mqtt_params *params;
	if ((rc = cwm_filter_normalize(filter, &plain, &params)) != 0)
		return rc;
	struct cwm_handler *hd = calloc(1, sizeof(*hd));
	if (hd == NULL) {
		free(plain);
		free(params);
		return MG_MQTT_ERR_NOMEM;
	}
	hd->fn = h;
	hd->ud = user_data;
	hd->seq = ++*count;
	hd->params = params;
	if ((rc = cwm_tree_add(tree, plain, hd)) != 0)
		cwm_handler_free(hd);
	free(plain);
	return rc;
}

int mg_mqtt_on_topic(struct mg_mqtt *c, const char *filter,
                     mg_mqtt_message_handler h, void *user_data)
{
	return c == NULL ? MG_MQTT_ERR_INVALID
	                 : cwm_on_topic_into(c, &c->tree, &c->nhandlers, filter,
	                                     h, user_data);
}

int mg_mqtt_on_topic_inline(struct mg_mqtt *c, const char *filter,
                            mg_mqtt_message_handler h, void *user_data)
{
	return c == NULL ? MG_MQTT_ERR_INVALID
	                 : cwm_on_topic_into(c, &c->itree, &c->ninline, filter,
	                                     h, user_data);
}

#define CWM_SETTER(fn_name, type, field)                                       \
	int fn_name(struct mg_mqtt *c, type h, void *user_data)                    \
	{                                                                          \
		int rc = cwm_can_register(c, h != NULL);                               \
		if (rc == 0) {                                                         \
			c->field = h;                                                      \
			c->field##_ud = user_data;                                         \
		}                                                                      \
		return rc;                                                             \
	}
CWM_SETTER(mg_mqtt_on_message, mg_mqtt_message_handler, on_message)
CWM_SETTER(mg_mqtt_on_connect, mg_mqtt_connect_handler, on_connect)
CWM_SETTER(mg_mqtt_on_disconnect, mg_mqtt_disconnect_handler, on_disconnect)
CWM_SETTER(mg_mqtt_on_publish, mg_mqtt_publish_handler, on_publish)
CWM_SETTER(mg_mqtt_on_subscribe, mg_mqtt_ack_handler, on_subscribe)
CWM_SETTER(mg_mqtt_on_unsubscribe, mg_mqtt_ack_handler, on_unsubscribe)
CWM_SETTER(mg_mqtt_on_log, mg_mqtt_log_handler, on_log)
#undef CWM_SETTER

/* The process registry of started clients: one entry a client from its
 * start until its threads are joined at stop. listed: from start until
 * the stop begins; only those count for a prefix already started on a
 * server, mg_mqtt_get() and the bridge's metrics (cwm_registry_each).
 * paho's trace (trace.c) walks every entry (cwm_registry_all). */
struct cwm_reg {
	const struct mg_context *ctx;
	struct mg_mqtt *c;
	int listed;
};
static pthread_mutex_t cwm_registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cwm_reg *cwm_registry; /* under cwm_registry_lock */
static size_t cwm_nregistry;

/* Start: adds c, unless a listed client has its prefix on its server
 * (MG_MQTT_ERR_EXISTS). */
static int cwm_registry_add(struct mg_mqtt *c)
{
	int rc = 0;
	pthread_mutex_lock(&cwm_registry_lock);
	for (size_t i = 0; i < cwm_nregistry && c->ctx != NULL; i++)
		if (cwm_registry[i].listed && cwm_registry[i].ctx == c->ctx &&
		    strcmp(cwm_registry[i].c->prefix, c->prefix) == 0)
			rc = MG_MQTT_ERR_EXISTS;
	if (rc == 0) {
		struct cwm_reg *r =
		    realloc(cwm_registry, sizeof(*r) * (cwm_nregistry + 1));
		if (r == NULL) {
			rc = MG_MQTT_ERR_NOMEM;
		} else {
			cwm_registry = r;
			r[cwm_nregistry].ctx = c->ctx;
			r[cwm_nregistry].c = c;
			r[cwm_nregistry].listed = 1;
			cwm_nregistry++;
		}
	}
	pthread_mutex_unlock(&cwm_registry_lock);
	return rc;
}

/* Stop, first: c is no longer listed (mg_mqtt_get() cannot return it). */
static void cwm_registry_unlist(struct mg_mqtt *c)
{
	pthread_mutex_lock(&cwm_registry_lock);
	for (size_t i = 0; i < cwm_nregistry; i++)
		if (cwm_registry[i].c == c)
			cwm_registry[i].listed = 0;
	atomic_store(&c->registered, 0);
	pthread_mutex_unlock(&cwm_registry_lock);
}

/* Stop, once c's threads are joined: c leaves the registry. */
static void cwm_registry_remove(struct mg_mqtt *c)
{
	pthread_mutex_lock(&cwm_registry_lock);
	for (size_t i = 0; i < cwm_nregistry; i++)
		if (cwm_registry[i].c == c) {
			cwm_registry[i] = cwm_registry[--cwm_nregistry];
			break;
		}
	if (cwm_nregistry == 0) {
		free(cwm_registry);
		cwm_registry = NULL;
	}
	pthread_mutex_unlock(&cwm_registry_lock);
}

static void cwm_registry_each(const struct mg_context *ctx,
                              void (*fn)(struct mg_mqtt *c, void *arg),
                              void *arg)
{
	pthread_mutex_lock(&cwm_registry_lock);
	for (size_t i = 0; i < cwm_nregistry; i++)
		if (cwm_registry[i].listed && cwm_registry[i].ctx == ctx &&
		    atomic_load(&cwm_registry[i].c->registered))
			fn(cwm_registry[i].c, arg);
	pthread_mutex_unlock(&cwm_registry_lock);
}

static void cwm_registry_all(void (*fn)(struct mg_mqtt *c, void *arg),
                             void *arg)
{
	pthread_mutex_lock(&cwm_registry_lock);
	for (size_t i = 0; i < cwm_nregistry; i++)
		fn(cwm_registry[i].c, arg);
	pthread_mutex_unlock(&cwm_registry_lock);
}

struct cwm_get {
	const char *prefix;
	struct mg_mqtt *found;
};

static void cwm_get_one(struct mg_mqtt *c, void *arg)
{
	struct cwm_get *g = arg;
	if (strcasecmp(c->prefix, g->prefix) == 0)
		g->found = c;
}

struct mg_mqtt *mg_mqtt_get(const struct mg_context *ctx, const char *prefix)
{
	struct cwm_get g = {prefix != NULL && prefix[0] != '\0' ? prefix : "MQTT",
	                    NULL};
	if (ctx != NULL)
		cwm_registry_each(ctx, cwm_get_one, &g);
	return g.found;
}

static char *cwm_make_client_id(void)
{
	unsigned char b[4];
	char id[32];
	if (getrandom(b, sizeof(b), GRND_NONBLOCK) != (ssize_t)sizeof(b)) {
		unsigned v = (unsigned)time(NULL) ^ ((unsigned)getpid() << 16) ^
		             (unsigned)(uintptr_t)&b;
		memcpy(b, &v, sizeof(b));
	}
	snprintf(id, sizeof(id), "civetweb-mqtt-%02x%02x%02x%02x", b[0], b[1],
	         b[2], b[3]);
	return cwm_strdup(id);
}

/* Stops the threads and frees what start set up; the client is then as
 * mg_mqtt_create() left it, with its handlers. */
static void cwm_shutdown(struct mg_mqtt *c)
{
	cwm_registry_unlist(c);
	pthread_mutex_lock(&c->lock);
	c->stopping = 1;
	c->stop_deadline = cwm_now_ms() + (int64_t)c->cfg.connection_timeout * 1000;
	pthread_cond_signal(&c->io_cond);
	pthread_mutex_unlock(&c->lock);
	cwm_req_stop(c, 0);

	if (c->io_started) {
		pthread_join(c->io_thread, NULL);
	} else if (c->paho != NULL) {
		cwm_eng_destroy(c);
		pthread_mutex_lock(&c->lock);
		cwm_fail_all(c);
		pthread_mutex_unlock(&c->lock);
	}
	cwm_registry_remove(c); /* mqtt-io left paho's trace (trace.c) */
	pthread_mutex_lock(&c->lock);
	c->dispatch_exit = 1;
	pthread_cond_signal(&c->ev_cond);
	pthread_mutex_unlock(&c->lock);
	if (c->dispatch_started)
		pthread_join(c->dispatch_thread, NULL);
	cwm_bridge_destroy(c);
	cwm_req_stop(c, 1); /* woken at the start; wait until they are out */
	while (c->evq != NULL) {
		struct cwm_event *ev = c->evq;
		c->evq = ev->next;
		cwm_event_discard(ev);
	}

	atomic_store(&c->ops_ok, 0);
	atomic_store(&c->connected, 0);
	while (c->sub_head != NULL)
		cwm_sub_forget(c, c->sub_head);
	cwm_map_free(&c->subs, free); /* and any entry still marked gone */
	cwm_map_free(&c->pstore, free); /* paho's session store */
	free(c->pst_given.v);
	cwm_settings_free(&c->cfg);
	CWM_FREE_ALL(c->client_id, c->reply_base, c->broker, c->error_log_file,
	             c->pdir, c->unlinks);
	c->unlinks = NULL;
	c->nunlinks = c->capunlinks = 0;
	free(c->cur.v);
	free(c->nxt.v);
	free(c->hits.v);
	free(c->icur.v);
	free(c->inxt.v);
	free(c->ihits.v);
	for (int i = 0; i < c->nchunks; i++)
		free(c->chunks[i]);

	/* Back to the state mg_mqtt_create() left, handlers and locks kept. */
	size_t keep = offsetof(struct mg_mqtt, cfg);
	memset((char *)c + keep, 0, sizeof(*c) - keep);
	c->next_id = 1;
}

/* Start, step 1: the options read, the client id, the registry entry. */
static int cwm_start_settings(struct mg_mqtt *c, const char **options,
                              char *err, size_t errlen)
{
	int rc;
	if (c->ctx != NULL) {
		const char *lf = mg_get_option(c->ctx, "error_log_file");
		if (lf != NULL && lf[0] != '\0' &&
		    (c->error_log_file = cwm_strdup(lf)) == NULL)
			return MG_MQTT_ERR_NOMEM;
	}
	if ((rc = cwm_settings_read(&c->cfg, c->prefix, options, err, errlen)) !=
	    0) {
		if (rc == MG_MQTT_ERR_NOMEM && err[0] == '\0')
			cwm_fmt(err, errlen, "%s: out of memory", c->prefix);
		return rc;
	}
	const struct cwm_settings *s = &c->cfg;
	c->v5 = s->protocol == 5;
	c->client_id = s->client_id != NULL ? cwm_strdup(s->client_id)
	                                    : cwm_make_client_id();
	if (c->client_id == NULL || cwm_req_setup(c) != 0)
		return MG_MQTT_ERR_NOMEM;
	if ((rc = cwm_registry_add(c)) != 0) {
		cwm_fmt(err, errlen,
		        "%s: a client with this prefix is already started on this "
		        "server",
		        c->prefix);
		return rc;
	}
	if (!s->use_tls && (s->tls_ca_certs != NULL || s->tls_certfile != NULL ||
	                    s->tls_insecure))
		cwm_log(c, MG_MQTT_LOG_WARNING,
		        "TLS options are set but TLS is off (set %s_TLS_ENABLED or use "
		        "an mqtts:// URL)",
		        c->prefix);
	if (s->client_id == NULL && !s->clean_session)
		cwm_log(c, MG_MQTT_LOG_WARNING,
		        "%s_CLEAN_SESSION is false without %s_CLIENT_ID: the "
		        "generated id is new at every start, so the session can "
		        "never be resumed; set %s_CLIENT_ID",
		        c->prefix, c->prefix, c->prefix);
	if (s->bridge_path != NULL && s->shared_group != NULL)
		cwm_log(c, MG_MQTT_LOG_WARNING,
		        "%s_SHARED_GROUP also shares the subscriptions the bridge "
		        "makes for browsers: a browser sees only the messages the "
		        "broker gives this server; to share only some filters, "
		        "write them as $share/<group>/<filter> in %s_SUBSCRIBE",
		        c->prefix, c->prefix);
	return 0;
}

/* Start, step 3: mqtt-dispatch and mqtt-io. */
static int cwm_start_threads(struct mg_mqtt *c)
{
	c->state = CWM_DISCONNECTED;
	c->backoff_s = c->cfg.reconnect_min;
	c->window = c->cfg.max_inflight;
	c->awin = c->awin_cap = c->cfg.max_inflight;
	atomic_store(&c->max_packet, (unsigned)c->cfg.max_packet_size);
	c->seed = (unsigned)cwm_now_ms() ^ (unsigned)(uintptr_t)c;
	atomic_store(&c->ops_ok, 1);
	c->dispatch_started = 1;
	if (pthread_create(&c->dispatch_thread, NULL, cwm_dispatch_main, c) != 0) {
		c->dispatch_started = 0;
		return MG_MQTT_ERR_THREAD;
	}
	c->io_started = 1;
	if (pthread_create(&c->io_thread, NULL, cwm_io_main, c) != 0) {
		c->io_started = 0;
		return MG_MQTT_ERR_THREAD;
	}
	return 0;
}

/* Start, step 4 (unless CONNECT_ASYNC): waits for the first attempt over
 * the whole BROKER_URL list to connect or fail. */
static int cwm_start_wait(struct mg_mqtt *c, char *err, size_t errlen)
{
	const struct cwm_settings *s = &c->cfg;
	int64_t budget = (int64_t)s->connection_timeout * 1000 * s->nuris + 5000;
	struct timespec until = cwm_deadline(budget);
	pthread_mutex_lock(&c->lock);
	while (c->first_result == 0 &&
	       pthread_cond_timedwait(&c->state_cond, &c->lock, &until) !=
	           ETIMEDOUT) {
	}
	int rc = c->first_result;
	if (rc < 0)
		cwm_fmt(err, errlen, "%s", c->first_msg);
	pthread_mutex_unlock(&c->lock);
	if (rc == 0) {
		cwm_fmt(err, errlen, "%s: no answer from %s within %lld s", c->prefix,
		        s->uris[0], (long long)budget / 1000);
		return MG_MQTT_ERR_TIMEOUT;
	}
	return rc < 0 ? rc : 0;
}

int mg_mqtt_start(struct mg_mqtt *c, const struct mg_context *ctx,
                  const char **options, char *errbuf, size_t errlen)
{
	char err[1024] = "";
	int rc;

	if (errbuf != NULL && errlen > 0)
		errbuf[0] = '\0';
	if (c == NULL)
		return MG_MQTT_ERR_INVALID;
	if (atomic_load(&c->ops_ok) || c->dispatch_started)
		return MG_MQTT_ERR_STARTED;
	c->ctx = (struct mg_context *)ctx; /* see the header */
	if ((rc = cwm_start_settings(c, options, err, sizeof(err))) == 0 &&
	    (rc = cwm_subs_from_config(c)) == 0 &&
	    (c->cfg.persistence_dir == NULL ||
	     (rc = cwm_persist_open(c, err, sizeof(err))) == 0) &&
	    (rc = cwm_eng_create(c, err, sizeof(err))) == 0 &&
	    (c->cfg.bridge_path == NULL ||
	     (rc = cwm_bridge_create(c, err, sizeof(err))) == 0) &&
	    (rc = cwm_start_threads(c)) == 0 &&
	    (c->cfg.connect_async || (rc = cwm_start_wait(c, err, sizeof(err))) == 0) &&
	    (c->bridge == NULL || (rc = cwm_bridge_open(c, err, sizeof(err))) == 0)) {
		atomic_store(&c->registered, 1);
		/* The header's promise: what the start logged (and on_connect for
		 * a connection it made) has reached the handlers when it returns. */
		cwm_dispatch_flush(c);
		return 0;
	}
	if (err[0] == '\0')
		cwm_fmt(err, sizeof(err), "%s: %s", c->prefix, mg_mqtt_strerror(rc));
	cwm_log_quiet(c, MG_MQTT_LOG_ERROR, "%s", err);
	cwm_fmt(errbuf, errlen, "%s", err);
	cwm_shutdown(c);
	return rc;
}

int mg_mqtt_stop(struct mg_mqtt *c)
{
	if (c == NULL)
		return 0;
	if (c->dispatch_started &&
	    pthread_equal(pthread_self(), c->dispatch_thread))
		return MG_MQTT_ERR_IN_HANDLER;
	cwm_shutdown(c);
	cwm_tree_clear(&c->tree);
	cwm_tree_clear(&c->itree);
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->req_lock);
	pthread_mutex_destroy(&c->pstore_lock);
	pthread_cond_destroy(&c->io_cond);
	pthread_cond_destroy(&c->ev_cond);
	pthread_cond_destroy(&c->state_cond);
	free(c);
	return 0;
}
