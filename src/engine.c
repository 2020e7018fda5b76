/*
 * The engine: the only part that calls paho's client API. It drives paho's
 * synchronous client (MQTTClient, libpaho-mqtt3cs) from the client's own
 * mqtt-io thread; src/README.md says why this client and not MQTTAsync.
 *
 * The contract the rest of the library relies on:
 *  - Every call here is made by mqtt-io (or by start and stop, before
 *    mqtt-io runs and after it ended), without c->lock held. A call can
 *    block for a network round trip at most: connect (CONNECTION_TIMEOUT),
 *    subscribe and unsubscribe (their acknowledgement, CONNECTION_TIMEOUT
 *    at most), publish (a socket write; paho sleeps 100 ms while the socket
 *    is full).
 *  - paho's one receive thread (MQTTClient_run, every client of the
 *    process) calls the cwm_eng_* callbacks below, holding paho's lock for
 *    acknowledgements: they only take c->lock to record what happened.
 *  - A QoS 1/2 message paho has taken stays in paho's session store, under
 *    its packet id, until the broker acknowledges it: paho sends it again
 *    (DUP, same id) on each reconnect of a persistent session, and the
 *    acknowledgement then reaches cwm_pub_acked() under that id. With a
 *    clean session paho's store is emptied at the next connect, and the
 *    library sends what it had from its own copies (io.c).
 *  - On a persistent session paho's store lives in memory owned by the
 *    client (c->pstore, paho's "user persistence"), not in paho's handle:
 *    a new handle (cwm_eng_renew) takes every message back under the same
 *    packet ids, so the broker's session and paho's agree and nothing is
 *    sent twice under a new id. Only a message the broker refuses by
 *    closing the connection (see cwm_poison in io.c) is taken out.
 */
#include "internal.h"

#include <dlfcn.h>

/* ---- paho's session store (persistent sessions) ---------------------- */

struct cwm_pval {
	size_t n;
	char b[];
};

/* The buffers paho is given by pget and pkeys (only while a handle is
 * created: it restores its store) are paho's to free. A paho built with
 * its heap tracking (Debian's: Heap_get_info is then exported) frees only
 * what its own allocator gave and leaks the rest, so after the creation
 * cwm_pst_given_free() frees them in that case; a paho without it has. */
static void cwm_pst_given(struct mg_mqtt *c, void *p)
{
	if (p != NULL)
		(void)cwm_vec_push(&c->pst_given, p); /* else: leaked, no harm */
}

static void cwm_pst_given_free(struct mg_mqtt *c)
{
	static int tracks = -1;
	if (tracks < 0)
		tracks = dlsym(RTLD_DEFAULT, "Heap_get_info") != NULL;
	pthread_mutex_lock(&c->pstore_lock);
	for (size_t i = 0; tracks && i < c->pst_given.n; i++)
		free(c->pst_given.v[i]);
	c->pst_given.n = 0;
	pthread_mutex_unlock(&c->pstore_lock);
}

static int cwm_pst_open(void **handle, const char *id, const char *uri,
                        void *ctx)
{
	(void)id;
	(void)uri;
	*handle = ctx;
	return 0;
}

static int cwm_pst_close(void *handle)
{
	(void)handle;
	return 0;
}

static int cwm_pst_put(void *handle, char *key, int nbuf, char *bufs[],
                       int lens[])
{
	struct mg_mqtt *c = handle;
	size_t n = 0;
	for (int i = 0; i < nbuf; i++)
		n += (size_t)lens[i];
	struct cwm_pval *v = malloc(sizeof(*v) + n);
	if (v == NULL)
		return MQTTCLIENT_PERSISTENCE_ERROR;
	v->n = 0;
	for (int i = 0; i < nbuf; i++) {
		memcpy(v->b + v->n, bufs[i], (size_t)lens[i]);
		v->n += (size_t)lens[i];
	}
	pthread_mutex_lock(&c->pstore_lock);
	size_t kl = strlen(key);
	free(cwm_map_del(&c->pstore, key, kl));
	int rc = cwm_map_put(&c->pstore, key, kl, v);
	pthread_mutex_unlock(&c->pstore_lock);
	if (rc != 0) {
		free(v);
		return MQTTCLIENT_PERSISTENCE_ERROR;
	}
	return 0;
}

static int cwm_pst_get(void *handle, char *key, char **buf, int *len)
{
	struct mg_mqtt *c = handle;
	int rc = MQTTCLIENT_PERSISTENCE_ERROR;
	pthread_mutex_lock(&c->pstore_lock);
	struct cwm_pval *v = cwm_map_get(&c->pstore, key, strlen(key));
	if (v != NULL && (*buf = malloc(v->n > 0 ? v->n : 1)) != NULL) {
		memcpy(*buf, v->b, v->n);
		*len = (int)v->n;
		rc = 0;
		cwm_pst_given(c, *buf);
	}
	pthread_mutex_unlock(&c->pstore_lock);
	return rc;
}

static int cwm_pst_remove(void *handle, char *key)
{
	struct mg_mqtt *c = handle;
	pthread_mutex_lock(&c->pstore_lock);
	free(cwm_map_del(&c->pstore, key, strlen(key)));
	pthread_mutex_unlock(&c->pstore_lock);
	return 0;
}

static int cwm_pst_keys(void *handle, char ***keys, int *nkeys)
{
	struct mg_mqtt *c = handle;
	int rc = 0, n = 0;
	pthread_mutex_lock(&c->pstore_lock);
	char **k = malloc(sizeof(char *) * (c->pstore.n + 1));
	for (size_t i = 0; k != NULL && i < c->pstore.nb; i++)
		for (struct cwm_map_ent *e = c->pstore.b[i]; e != NULL; e = e->next)
			if ((k[n] = cwm_strndup(e->key, e->klen)) != NULL)
				cwm_pst_given(c, k[n++]);
	if (n > 0)
		cwm_pst_given(c, k);
	pthread_mutex_unlock(&c->pstore_lock);
	if (k == NULL)
		rc = MQTTCLIENT_PERSISTENCE_ERROR;
	*keys = n > 0 ? k : NULL;
	*nkeys = n;
	if (n == 0)
		free(k);
	return rc;
}

static int cwm_pst_clear(void *handle)
{
	struct mg_mqtt *c = handle;
	pthread_mutex_lock(&c->pstore_lock);
	cwm_map_free(&c->pstore, free);
	pthread_mutex_unlock(&c->pstore_lock);
	return 0;
}

static int cwm_pst_contains(void *handle, char *key)
{
	struct mg_mqtt *c = handle;
	pthread_mutex_lock(&c->pstore_lock);
	int has = cwm_map_get(&c->pstore, key, strlen(key)) != NULL;
	pthread_mutex_unlock(&c->pstore_lock);
	return has ? 0 : -1;
}

/* Takes the message under packet id msgid out of the store (it will not be
 * restored by the next handle). */
static void cwm_pst_forget(struct mg_mqtt *c, int msgid)
{
	static const char *const stems[] = {"s-", "s5-", "sc-", "sc5-"};
	char key[24];
	pthread_mutex_lock(&c->pstore_lock);
	for (size_t i = 0; i < sizeof(stems) / sizeof(stems[0]); i++) {
		snprintf(key, sizeof(key), "%s%d", stems[i], msgid);
		free(cwm_map_del(&c->pstore, key, strlen(key)));
	}
	pthread_mutex_unlock(&c->pstore_lock);
}

/* 1 when paho holds the QoS 2 message under msgid as received by the
 * broker (PUBREC came; PUBREL sent, PUBCOMP awaited): the broker accepted
 * it. Persistent sessions only (a clean one has no store). */
static int cwm_eng_released(struct mg_mqtt *c, int msgid)
{
	char k1[24], k2[24];
	snprintf(k1, sizeof(k1), "sc-%d", msgid);
	snprintf(k2, sizeof(k2), "sc5-%d", msgid);
	pthread_mutex_lock(&c->pstore_lock);
	int has = cwm_map_get(&c->pstore, k1, strlen(k1)) != NULL ||
	          cwm_map_get(&c->pstore, k2, strlen(k2)) != NULL;
	pthread_mutex_unlock(&c->pstore_lock);
	return has;
}

/* ---- paho's callbacks (its receive thread) ---------------------------- */

static int cwm_eng_arrived(void *ctx, char *topic, int tl, MQTTClient_message *m)
{
	return cwm_on_message(ctx, topic, tl, m);
}

/* MQTT 3.1/3.1.1: a QoS 1/2 message acknowledged (PUBACK, PUBCOMP). */
static void cwm_eng_delivered(void *ctx, MQTTClient_deliveryToken id)
{
	struct mg_mqtt *c = ctx;
	if (!cwm_v5_now(c))
		cwm_pub_acked(c, id, 0);
}

/* MQTT 5: the same with the broker's reason code (and a PUBREC >= 0x80,
 * which ends the message's flow). */
static void cwm_eng_published(void *ctx, int id, int type,
                              MQTTProperties *props, enum MQTTReasonCodes rc)
{
	(void)type;
	(void)props;
	cwm_pub_acked(ctx, id, (int)rc);
}

static void cwm_eng_lost(void *ctx, char *cause)
{
	cwm_on_lost(ctx, cause);
}

static void cwm_eng_server_disconnect(void *ctx, MQTTProperties *props,
                                      enum MQTTReasonCodes reason)
{
	cwm_on_server_disconnect(ctx, props, reason);
}

/* ---- the handle -------------------------------------------------------- */

/* A paho handle for c (start, and cwm_eng_renew). A persistent session
 * keeps paho's store in c->pstore; a clean one keeps none. */
static int cwm_eng_create(struct mg_mqtt *c, char *err, size_t errlen)
{
	const struct cwm_settings *s = &c->cfg;
	MQTTClient_createOptions co = MQTTClient_createOptions_initializer;
	int v = c->v5 && !atomic_load(&c->v311_now) ? MQTTVERSION_5
	        : s->protocol == 3                   ? MQTTVERSION_3_1
	                                             : MQTTVERSION_3_1_1;
	co.MQTTVersion = v;
	c->pst.context = c;
	c->pst.popen = cwm_pst_open;
	c->pst.pclose = cwm_pst_close;
	c->pst.pput = cwm_pst_put;
	c->pst.pget = cwm_pst_get;
	c->pst.premove = cwm_pst_remove;
	c->pst.pkeys = cwm_pst_keys;
	c->pst.pclear = cwm_pst_clear;
	c->pst.pcontainskey = cwm_pst_contains;
	int rc = MQTTClient_createWithOptions(
	    &c->paho, s->uris[0], c->client_id,
	    s->clean_session ? MQTTCLIENT_PERSISTENCE_NONE
	                     : MQTTCLIENT_PERSISTENCE_USER,
	    s->clean_session ? NULL : &c->pst, &co);
	cwm_pst_given_free(c);
	if (rc != MQTTCLIENT_SUCCESS) {
		cwm_fmt(err, errlen, "%s: cannot create the MQTT client: %s",
		        c->prefix, MQTTClient_strerror(rc));
		c->paho = NULL;
		return MG_MQTT_ERR_PAHO;
	}
	c->paho_ver = v;
	MQTTClient_setCallbacks(c->paho, c, cwm_eng_lost, cwm_eng_arrived,
	                        cwm_eng_delivered);
	if (v == MQTTVERSION_5) {
		MQTTClient_setPublished(c->paho, c, cwm_eng_published);
		MQTTClient_setDisconnected(c->paho, c, cwm_eng_server_disconnect);
	}
	/* A SUBSCRIBE or UNSUBSCRIBE waits this long for its acknowledgement
	 * (paho takes 5 s at least); paho closes the connection when it does
	 * not come. A connection lost meanwhile is noticed only then: paho
	 * does not wake the wait. */
	unsigned long ms = (unsigned long)s->connection_timeout * 1000;
	MQTTClient_setCommandTimeout(c->paho, ms > 5000 ? ms : 5000);
	return 0;
}

/* No paho callback for c runs after this returns. */
static void cwm_eng_destroy(struct mg_mqtt *c)
{
	if (c->paho != NULL)
		MQTTClient_destroy(&c->paho);
	c->paho = NULL;
}

/* A new handle for c, without the messages under the packet ids given
 * (drop[0..ndrop)): everything else in paho's store comes back under its
 * own id. 0, or an error (err filled). */
static int cwm_eng_renew(struct mg_mqtt *c, const int *drop, int ndrop,
                         char *err, size_t errlen)
{
	cwm_eng_destroy(c);
	for (int i = 0; i < ndrop; i++)
		cwm_pst_forget(c, drop[i]);
	return cwm_eng_create(c, err, errlen);
}

/* ---- connecting -------------------------------------------------------- */

static int cwm_on_ssl_error(const char *str, size_t len, void *u)
{
	struct mg_mqtt *c = u;
	while (len > 0 && (str[len - 1] == '\n' || str[len - 1] == '\r'))
		len--;
	cwm_log(c, MG_MQTT_LOG_ERROR, "TLS: %.*s", (int)len, str);
	pthread_mutex_lock(&c->lock);
	c->tls_error = 1;
	pthread_mutex_unlock(&c->lock);
	return 1;
}

static int cwm_prop_num(MQTTProperties *p, enum MQTTPropertyCodes id, int dflt)
{
	return MQTTProperties_hasProperty(p, id)
	           ? MQTTProperties_getNumericValue(p, id)
	           : dflt;
}

/* What an MQTT 5 CONNACK announced. */
static void cwm_eng_caps(MQTTProperties *p, struct cwm_caps *k)
{
	k->recvmax = cwm_prop_num(p, MQTTPROPERTY_CODE_RECEIVE_MAXIMUM, 0);
	k->maxpacket =
	    (unsigned)cwm_prop_num(p, MQTTPROPERTY_CODE_MAXIMUM_PACKET_SIZE, 0);
	k->shared =
	    cwm_prop_num(p, MQTTPROPERTY_CODE_SHARED_SUBSCRIPTION_AVAILABLE, 1);
	k->wildcard =
	    cwm_prop_num(p, MQTTPROPERTY_CODE_WILDCARD_SUBSCRIPTION_AVAILABLE, 1);
	k->retain = cwm_prop_num(p, MQTTPROPERTY_CODE_RETAIN_AVAILABLE, 1);
	k->alias_max = cwm_prop_num(p, MQTTPROPERTY_CODE_TOPIC_ALIAS_MAXIMUM, 0);
}

/* Fills paho's will options from WILL_*. */
static void cwm_eng_will(const struct cwm_settings *s,
                         MQTTClient_willOptions *will)
{
	will->topicName = s->will_topic;
	will->message = NULL;
	will->payload.data = s->will_message != NULL ? s->will_message : "";
	will->payload.len = s->will_message != NULL ? (int)strlen(s->will_message)
	                                            : 0;
	will->qos = s->will_qos;
	will->retained = s->will_retain;
}

/* Fills paho's TLS options from TLS_*. */
static void cwm_eng_ssl(struct mg_mqtt *c, MQTTClient_SSLOptions *ssl)
{
	const struct cwm_settings *s = &c->cfg;

	ssl->trustStore = s->tls_ca_certs;
	ssl->keyStore = s->tls_certfile;
	ssl->privateKey = s->tls_keyfile;
	ssl->privateKeyPassword = s->tls_keyfile_password;
	ssl->enabledCipherSuites = s->tls_ciphers;
	ssl->enableServerCertAuth = s->tls_cert_reqs != CWM_CERT_NONE;
	ssl->verify = s->tls_cert_reqs != CWM_CERT_NONE && !s->tls_insecure;
	ssl->sslVersion = s->tls_version;
	ssl->ssl_error_cb = cwm_on_ssl_error;
	ssl->ssl_error_context = c;
}

/* mqtt-io: one connection attempt to BROKER_URL entry idx; blocks until
 * CONNACK, a failure or CONNECTION_TIMEOUT. The fail-over list is walked
 * by the library (connection.c), one URI per attempt. Fills *a. */
static void cwm_eng_connect(struct mg_mqtt *c, int idx, struct cwm_connack *a)
{
	const struct cwm_settings *s = &c->cfg;
	int v5 = cwm_v5_now(c);
	MQTTClient_connectOptions o = MQTTClient_connectOptions_initializer;
	MQTTClient_connectOptions o5 = MQTTClient_connectOptions_initializer5;
	MQTTClient_willOptions will = MQTTClient_willOptions_initializer;
	MQTTClient_SSLOptions ssl = MQTTClient_SSLOptions_initializer;
	MQTTProperties props = MQTTProperties_initializer;

	if (v5)
		o = o5;
	memset(a, 0, sizeof(*a));
	a->caps = (struct cwm_caps){0, 0, 1, 1, 1, 0};
	o.keepAliveInterval = s->keepalive;
	o.connectTimeout = s->connection_timeout;
	o.reliable = 0;
	o.maxInflightMessages = 65535; /* flow control is the library's */
	o.retryInterval = 0;           /* paho resends at reconnect only */
	o.serverURIcount = 1;
	o.serverURIs = &c->cfg.uris[idx];
	o.username = s->username;
	o.password = s->secret;
	o.MQTTVersion = v5                 ? MQTTVERSION_5
	                : s->protocol == 3 ? MQTTVERSION_3_1
	                                   : MQTTVERSION_3_1_1;
	if (v5) {
		o.cleansession = 0;
		o.cleanstart = s->clean_session;
		if (!s->clean_session) {
			/* MQTT 5 ends a session at disconnect unless told otherwise. */
			cwm_prop_add_int4(&props, MQTTPROPERTY_CODE_SESSION_EXPIRY_INTERVAL,
			                  0xFFFFFFFFu);
		}
	} else {
		o.cleansession = s->clean_session;
	}
	if (s->will_topic != NULL) {
		cwm_eng_will(s, &will);
		o.will = &will;
	}
	if (c->cfg.use_tls) {
		cwm_eng_ssl(c, &ssl);
		o.ssl = &ssl;
	}
	int64_t t0 = cwm_now_ms();
	MQTTResponse resp = MQTTResponse_initializer;
	if (c->paho_ver >= MQTTVERSION_5) /* paho: connect5 on a v5 handle */
		resp = MQTTClient_connect5(c->paho, &o, &props, NULL);
	else
		resp.reasonCode = (enum MQTTReasonCodes)MQTTClient_connect(c->paho, &o);
	c->paho_ver = o.MQTTVersion;
	MQTTProperties_free(&props);
	a->elapsed_ms = cwm_now_ms() - t0;
	a->code = (int)resp.reasonCode;
	if (a->code == MQTTCLIENT_SUCCESS) {
		a->ok = 1;
		a->session = o.returned.sessionPresent;
		if (resp.properties != NULL)
			cwm_eng_caps(resp.properties, &a->caps);
		cwm_debug_connack(c, a->session, resp.properties); /* trace.c */
	} else if (a->code > 0) {
		a->reason = a->code; /* CONNACK refused it */
	} else if (a->code == MQTTCLIENT_DISCONNECTED) {
		a->dropped = 1; /* paho: connected, then lost at its resend */
	}
	MQTTResponse_free(resp);
}

/* ---- commands ---------------------------------------------------------- */

/* mqtt-io: writes a PUBLISH. 0 (*msgid: its packet id for QoS 1/2),
 * MG_MQTT_ERR_NOT_CONNECTED (paho is not connected: nothing was taken),
 * or another error (nothing was taken). A QoS 1/2 message whose write
 * failed is taken all the same (paho keeps it for the next connect). */
static int cwm_eng_publish(struct mg_mqtt *c, const struct cwm_out *r,
                           int *msgid)
{
	MQTTProperties props = MQTTProperties_initializer;
	MQTTClient_deliveryToken tok = 0;
	if (r->props != NULL)
		cwm_props_to_paho(r->props, &props);
	MQTTResponse resp = MQTTClient_publish5(
	    c->paho, r->topic, (int)r->len, r->payload, r->qos, r->retain,
	    r->props != NULL ? &props : NULL, &tok);
	MQTTProperties_free(&props);
	*msgid = tok;
	int rc = (int)resp.reasonCode;
	if (rc == MQTTCLIENT_SUCCESS)
		return 0;
	if (rc == MQTTCLIENT_DISCONNECTED || rc == MQTTCLIENT_FAILURE)
		return MG_MQTT_ERR_NOT_CONNECTED;
	cwm_log(c, MG_MQTT_LOG_ERROR, "paho refused a publish: %s (%d)",
	        MQTTClient_strerror(rc), rc);
	return MG_MQTT_ERR_PAHO;
}

/* mqtt-io: a SUBSCRIBE (sub) or UNSUBSCRIBE, and the wait for its
 * acknowledgement. 0 with codes[0..r->nfilters) set (UNSUBACK: 0 each
 * with MQTT 3), MG_MQTT_ERR_NOT_CONNECTED (not sent, or the connection
 * went before the answer: paho then closed it), or another error. */
static int cwm_eng_filters(struct mg_mqtt *c, const struct cwm_out *r, int sub,
                           int *codes)
{
	int n = r->nfilters;
	MQTTResponse resp;
	if (sub) {
		/* paho writes the granted QoS into the array it is given. */
		int *q = malloc(sizeof(int) * (size_t)n);
		if (q == NULL)
			return MG_MQTT_ERR_NOMEM;
		memcpy(q, r->qos_list, sizeof(int) * (size_t)n);
		resp = MQTTClient_subscribeMany5(c->paho, n, r->wire, q, NULL, NULL);
		for (int i = 0; i < n; i++)
			codes[i] = q[i];
		free(q);
	} else {
		resp = MQTTClient_unsubscribeMany5(c->paho, n, r->wire, NULL);
		for (int i = 0; i < n; i++)
			codes[i] = 0;
	}
	int rc = (int)resp.reasonCode;
	if (rc >= 0 && cwm_v5_now(c)) {
		/* MQTT 5: one code per filter; paho gives the first in reasonCode
		 * and, for more than one filter, all in reasonCodes. */
		for (int i = 0; i < n; i++)
			codes[i] = resp.reasonCodeCount > 1 && resp.reasonCodes != NULL &&
			                   i < resp.reasonCodeCount
			               ? (int)resp.reasonCodes[i]
			               : rc;
		rc = 0;
	}
	MQTTResponse_free(resp);
	if (rc >= 0)
		return 0;
	if (rc == MQTTCLIENT_DISCONNECTED || rc == MQTTCLIENT_FAILURE ||
	    rc == -1)
		return MG_MQTT_ERR_NOT_CONNECTED;
	cwm_log(c, MG_MQTT_LOG_ERROR, "paho refused a %s: %s (%d)",
	        sub ? "subscribe" : "unsubscribe", MQTTClient_strerror(rc), rc);
	return MG_MQTT_ERR_PAHO;
}

/* mqtt-io: DISCONNECT (the broker drops the will); waits for in-flight
 * flows at most timeout_ms. */
static void cwm_eng_disconnect(struct mg_mqtt *c, int timeout_ms)
{
	if (c->paho == NULL)
		return;
	if (c->paho_ver >= MQTTVERSION_5)
		MQTTClient_disconnect5(c->paho, timeout_ms, MQTTREASONCODE_SUCCESS,
		                       NULL);
	else
		MQTTClient_disconnect(c->paho, timeout_ms);
}

/* ---- messages and trace ------------------------------------------------ */

/* Frees a message paho handed to cwm_on_message, and its topic. */
static void cwm_eng_free_message(MQTTClient_message *m, char *topic)
{
	MQTTClient_freeMessage(&m);
	MQTTClient_free(topic);
}

/* paho's process-wide trace: its level and callback (NULL: none). */
static void cwm_eng_trace(int level, MQTTClient_traceCallback *cb, int set_cb,
                          int set_level)
{
	if (set_level)
		MQTTClient_setTraceLevel((enum MQTTCLIENT_TRACE_LEVELS)level);
	if (set_cb)
		MQTTClient_setTraceCallback(cb);
}

static const char *cwm_eng_strerror(int rc)
{
	return MQTTClient_strerror(rc);
}
