/*
 * Connecting: paho's connect options, and the callbacks that report a
 * connection made, refused, failed or lost (paho's threads), with the
 * fail-over walk over BROKER_URL and the back-off.
 */
#include "internal.h"

/* Milliseconds until the next attempt: the back-off with +-20% jitter,
 * which then doubles up to RECONNECT_MAX. [L] */
static int64_t cwm_backoff_ms(struct mg_mqtt *c)
{
	int64_t ms = (int64_t)c->backoff_s * 1000;
	ms = ms * (80 + (int64_t)(rand_r(&c->seed) % 41)) / 100;
	c->backoff_s = c->backoff_s * 2 > c->cfg.reconnect_max
	                   ? c->cfg.reconnect_max
	                   : c->backoff_s * 2;
	return ms;
}

/* paho reports "host:port" (or ws://host:port/path) for the connected
 * server; return our own spelling of that URI. [L] */
static const char *cwm_known_uri(const struct mg_mqtt *c, const char *uri)
{
	if (uri == NULL)
		return c->cfg.uris[0];
	for (int i = 0; i < c->cfg.nuris; i++) {
		const char *u = c->cfg.uris[i], *hp = strstr(u, "://");
		if (strcmp(u, uri) == 0 || (hp != NULL && strcmp(hp + 3, uri) == 0))
			return u;
	}
	return uri;
}

static void cwm_connected(struct mg_mqtt *c, const char *uri, int session,
                          int recvmax, unsigned maxpacket)
{
	atomic_store(&c->max_packet, maxpacket);
	pthread_mutex_lock(&c->lock);
	const char *b = cwm_known_uri(c, uri);
	char *broker = cwm_strdup(b);
	if (broker != NULL) {
		free(c->broker);
		c->broker = broker;
	}
	c->state = CWM_CONNECTED;
	atomic_store(&c->connected, 1);
	c->send_blocked = 0;
	c->uri_try = 0; /* the next round starts with the first again */
	c->window = recvmax > 0 && recvmax < c->cfg.max_inflight
	                ? recvmax
	                : c->cfg.max_inflight;
	c->backoff_s = c->cfg.reconnect_min;
	if (c->connects > 0)
		c->reconnects++;
	c->connects++;
	c->renew_needed = 1;
	c->birth_needed = c->cfg.birth_topic != NULL;
	int attempt = c->attempt;
	c->attempt = 0;
	if (c->first_result == 0)
		c->first_result = 1;
	pthread_cond_broadcast(&c->state_cond);
	if (c->on_connect != NULL || c->bridge != NULL) {
		static const char msg[] = "connected";
		struct cwm_event *ev =
		    cwm_event_new(EV_CONNECT, strlen(c->broker) + sizeof(msg) + 1);
		if (ev != NULL) {
			size_t used = 0;
			ev->u.conn.connected = 1;
			ev->u.conn.session_present = session;
			ev->u.conn.attempt = attempt;
			ev->u.conn.broker = cwm_event_str(ev, &used, c->broker);
			ev->u.conn.message = cwm_event_str(ev, &used, msg);
			cwm_push_event(c, ev);
		}
	}
	cwm_log_locked(c, MG_MQTT_LOG_INFO, "connected to %s as '%s'%s",
	               c->broker, c->client_id,
	               session ? " (session resumed)" : "");
	if (c->io_waiting == CWM_IDLE_WAIT)
		pthread_cond_signal(&c->io_cond);
	pthread_mutex_unlock(&c->lock);
}

static void cwm_on_connect_ok(void *ctx, MQTTAsync_successData *d)
{
	cwm_connected(ctx, d->alt.connect.serverURI, d->alt.connect.sessionPresent,
	              0, 0);
}

static void cwm_on_connect_ok5(void *ctx, MQTTAsync_successData5 *d)
{
	int rm = 0;
	if (MQTTProperties_hasProperty(&d->properties,
	                               MQTTPROPERTY_CODE_RECEIVE_MAXIMUM))
		rm = MQTTProperties_getNumericValue(&d->properties,
		                                    MQTTPROPERTY_CODE_RECEIVE_MAXIMUM);
	unsigned mp = 0;
	if (MQTTProperties_hasProperty(&d->properties,
	                               MQTTPROPERTY_CODE_MAXIMUM_PACKET_SIZE))
		mp = (unsigned)MQTTProperties_getNumericValue(
		    &d->properties, MQTTPROPERTY_CODE_MAXIMUM_PACKET_SIZE);
	cwm_connected(ctx, d->alt.connect.serverURI, d->alt.connect.sessionPresent,
	              rm, mp);
}

static const char *cwm_connack_text(int rc)
{
	static const char *const t[] = {"accepted",
	                                "unacceptable protocol version",
	                                "identifier rejected",
	                                "server unavailable",
	                                "bad user name or password",
	                                "not authorized"};
	return rc >= 0 && rc <= 5 ? t[rc] : "refused";
}

static void cwm_connect_failed(struct mg_mqtt *c, int error, int reason,
                               const char *text)
{
	char brokers[512] = "", msg[300];
	size_t used = 0;

	pthread_mutex_lock(&c->lock);
	if (c->uri_try + 1 < c->cfg.nuris && !c->stopping) {
		/* More of BROKER_URL to try in this round: the next one now. */
		const char *tried = c->cfg.uris[c->uri_try];
		c->uri_try++;
		c->state = CWM_DISCONNECTED;
		c->reconnect_at = cwm_now_ms();
		cwm_log_locked(c, MG_MQTT_LOG_INFO,
		               "connection to %s failed: %s%s%s; trying %s", tried,
		               reason >= 0 ? "refused by the broker: " : "",
		               text != NULL ? text : "failed",
		               c->tls_error ? " (TLS error, see the log)" : "",
		               c->cfg.uris[c->uri_try]);
		if (c->io_waiting == CWM_IDLE_WAIT)
			pthread_cond_signal(&c->io_cond);
		pthread_mutex_unlock(&c->lock);
		return;
	}
	c->uri_try = 0;
	for (int i = 0; i < c->cfg.nuris && used < sizeof(brokers); i++)
		used += (size_t)snprintf(brokers + used, sizeof(brokers) - used,
		                         "%s%s", i > 0 ? ", " : "", c->cfg.uris[i]);
	if (error == MG_MQTT_ERR_CONNECT && c->tls_error)
		error = MG_MQTT_ERR_TLS;
	if (reason >= 0)
		snprintf(msg, sizeof(msg), "refused by the broker: %s (code %d)",
		         text, reason);
	else
		snprintf(msg, sizeof(msg), "%s%s", text != NULL ? text : "failed",
		         c->tls_error ? " (TLS error, see the log)" : "");
	c->state = CWM_DISCONNECTED;
	atomic_store(&c->connected, 0);
	int attempt = c->attempt;
	int64_t delay = cwm_backoff_ms(c);
	c->reconnect_at = cwm_now_ms() + delay;
	/* A failed first attempt fails a start that waits for it
	 * (CONNECT_ASYNC false): no attempt follows then. */
	int start_fails = c->first_result == 0 && !c->cfg.connect_async;
	if (c->first_result == 0) {
		c->first_result = error;
		cwm_fmt(c->first_msg, sizeof(c->first_msg), "%s: cannot connect to %s: %s",
		        c->prefix, brokers, msg);
		pthread_cond_broadcast(&c->state_cond);
	}
	if (c->on_connect != NULL) {
		struct cwm_event *ev =
		    cwm_event_new(EV_CONNECT, strlen(brokers) + strlen(msg) + 2);
		if (ev != NULL) {
			size_t u = 0;
			ev->u.conn.error = error;
			ev->u.conn.reason_code = reason;
			ev->u.conn.attempt = attempt;
			ev->u.conn.broker = cwm_event_str(ev, &u, brokers);
			ev->u.conn.message = cwm_event_str(ev, &u, msg);
			cwm_push_event(c, ev);
		}
	}
	if (!c->stopping && start_fails)
		cwm_log_locked(c, MG_MQTT_LOG_WARNING,
		               "connection attempt %d to %s failed: %s", attempt,
		               brokers, msg);
	else if (!c->stopping)
		cwm_log_locked(c, MG_MQTT_LOG_WARNING,
		               "connection attempt %d to %s failed: %s; next attempt "
		               "in %.1f s",
		               attempt, brokers, msg, (double)delay / 1000.0);
	if (c->io_waiting == CWM_IDLE_WAIT)
		pthread_cond_signal(&c->io_cond);
	pthread_mutex_unlock(&c->lock);
}

static void cwm_on_connect_fail(void *ctx, MQTTAsync_failureData *d)
{
	if (d != NULL && d->code > 0)
		cwm_connect_failed(ctx, MG_MQTT_ERR_REFUSED, d->code,
		                   cwm_connack_text(d->code));
	else
		cwm_connect_failed(ctx, MG_MQTT_ERR_CONNECT, -1,
		                   d != NULL && d->message != NULL
		                       ? d->message
		                       : MQTTAsync_strerror(d != NULL ? d->code : -1));
}

static void cwm_on_connect_fail5(void *ctx, MQTTAsync_failureData5 *d)
{
	/* paho puts a CONNACK refusal in reasonCode or, after trying every
	 * URL, in code. */
	int reason = d == NULL                      ? 0
	             : (int)d->reasonCode >= 0x80 ? (int)d->reasonCode
	             : d->code >= 0x80            ? d->code
	                                          : 0;
	if (reason != 0)
		cwm_connect_failed(ctx, MG_MQTT_ERR_REFUSED, reason,
		                   MQTTReasonCode_toString((enum MQTTReasonCodes)reason));
	else
		cwm_connect_failed(ctx, MG_MQTT_ERR_CONNECT, -1,
		                   d != NULL && d->message != NULL
		                       ? d->message
		                       : MQTTAsync_strerror(d != NULL ? d->code : -1));
}

/* The connection is gone: schedule the next attempt and tell the
 * handlers. Called with c->lock held; a no-op unless connected, so that
 * paho's two ways of saying it (connectionLost, and the disconnected
 * callback for an MQTT 5 DISCONNECT from the broker) count once. */
static void cwm_conn_lost_locked(struct mg_mqtt *c, const char *cause)
{
	if (c->state != CWM_CONNECTED)
		return;
	char why[128];
	if (c->server_reason != 0)
		snprintf(why, sizeof(why), "the broker disconnected: %s (code 0x%02x)",
		         MQTTReasonCode_toString(c->server_reason),
		         (unsigned)c->server_reason);
	else
		snprintf(why, sizeof(why), "%s",
		         cause != NULL ? cause : "connection lost");
	c->state = CWM_DISCONNECTED;
	atomic_store(&c->connected, 0);
	int64_t delay = cwm_backoff_ms(c);
	c->reconnect_at = cwm_now_ms() + delay;
	if (c->on_disconnect != NULL || c->bridge != NULL) {
		const char *b = c->broker != NULL ? c->broker : "";
		struct cwm_event *ev =
		    cwm_event_new(EV_DISCONNECT, strlen(b) + strlen(why) + 2);
		if (ev != NULL) {
			size_t u = 0;
			ev->u.disc.reason_code = c->server_reason;
			ev->u.disc.broker = cwm_event_str(ev, &u, b);
			ev->u.disc.message = cwm_event_str(ev, &u, why);
			cwm_push_event(c, ev);
		}
	}
	c->server_reason = 0;
	cwm_log_locked(c, MG_MQTT_LOG_WARNING,
	               "connection to %s lost: %s; reconnecting in %.1f s",
	               c->broker != NULL ? c->broker : "broker", why,
	               (double)delay / 1000.0);
	if (c->io_waiting == CWM_IDLE_WAIT)
		pthread_cond_signal(&c->io_cond);
}

static void cwm_on_lost(void *ctx, char *cause)
{
	struct mg_mqtt *c = ctx;
	pthread_mutex_lock(&c->lock);
	cwm_conn_lost_locked(c, cause);
	pthread_mutex_unlock(&c->lock);
}

/* An MQTT 5 DISCONNECT from the broker (session taken over, packet too
 * large, server shutting down, ...). paho marks the client disconnected
 * before it closes the socket and then does not always call
 * connectionLost, so this is the connection loss too. */
static void cwm_on_server_disconnect(void *ctx, MQTTProperties *props,
                                     enum MQTTReasonCodes reason)
{
	struct mg_mqtt *c = ctx;
	(void)props;
	pthread_mutex_lock(&c->lock);
	c->server_reason = (int)reason;
	cwm_conn_lost_locked(c, NULL);
	pthread_mutex_unlock(&c->lock);
}

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

/* mqtt-io: starts one connection attempt, to BROKER_URL entry idx. The
 * fail-over list is walked here, one URI per paho connect, not by paho:
 * given several, paho also moves to the next one by itself after a lost
 * connection, behind the client's back (its success then reported to
 * nobody). */
static int cwm_paho_connect(struct mg_mqtt *c, int idx)
{
	const struct cwm_settings *s = &c->cfg;
	MQTTAsync_connectOptions o = MQTTAsync_connectOptions_initializer;
	MQTTAsync_willOptions will = MQTTAsync_willOptions_initializer;
	MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
	MQTTProperties props = MQTTProperties_initializer;
	MQTTProperty pr;
	int rc;

	o.keepAliveInterval = s->keepalive;
	o.connectTimeout = s->connection_timeout;
	o.maxInflight = 65535; /* flow control is ours: see cwm_take_batch */
	o.retryInterval = 0;
	o.automaticReconnect = 0; /* reconnects are ours: see cwm_io_main */
	o.context = c;
	o.serverURIcount = 1;
	o.serverURIs = &c->cfg.uris[idx];
	o.username = s->username;
	o.password = s->secret;
	o.MQTTVersion = s->protocol == 5   ? MQTTVERSION_5
	                : s->protocol == 3 ? MQTTVERSION_3_1
	                                   : MQTTVERSION_3_1_1;
	if (c->v5) {
		o.cleansession = 0;
		o.cleanstart = s->clean_session;
		o.onSuccess5 = cwm_on_connect_ok5;
		o.onFailure5 = cwm_on_connect_fail5;
		if (!s->clean_session) {
			/* MQTT 5 ends a session at disconnect unless told otherwise. */
			memset(&pr, 0, sizeof(pr));
			pr.identifier = MQTTPROPERTY_CODE_SESSION_EXPIRY_INTERVAL;
			pr.value.integer4 = 0xFFFFFFFFu;
			MQTTProperties_add(&props, &pr);
			o.connectProperties = &props;
		}
	} else {
		o.cleansession = s->clean_session;
		o.onSuccess = cwm_on_connect_ok;
		o.onFailure = cwm_on_connect_fail;
	}
	if (s->will_topic != NULL) {
		will.topicName = s->will_topic;
		will.message = NULL;
		will.payload.data = s->will_message != NULL ? s->will_message : "";
		will.payload.len = s->will_message != NULL ? (int)strlen(s->will_message)
		                                           : 0;
		will.qos = s->will_qos;
		will.retained = s->will_retain;
		o.will = &will;
	}
	if (c->cfg.use_tls) {
		ssl.trustStore = s->tls_ca_certs;
		ssl.keyStore = s->tls_certfile;
		ssl.privateKey = s->tls_keyfile;
		ssl.privateKeyPassword = s->tls_keyfile_password;
		ssl.enabledCipherSuites = s->tls_ciphers;
		ssl.enableServerCertAuth = s->tls_cert_reqs != CWM_CERT_NONE;
		ssl.verify = s->tls_cert_reqs != CWM_CERT_NONE && !s->tls_insecure;
		ssl.sslVersion = s->tls_version;
		ssl.ssl_error_cb = cwm_on_ssl_error;
		ssl.ssl_error_context = c;
		o.ssl = &ssl;
	}
	rc = MQTTAsync_connect(c->paho, &o);
	MQTTProperties_free(&props);
	return rc;
}
