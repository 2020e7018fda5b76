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

/* [L] At a connect: a SUBSCRIBE or UNSUBSCRIBE still in paho was sent on
 * an earlier connection and may have been lost with it. paho fails such
 * commands when the session ends, but on a resumed session it keeps
 * waiting for their acknowledgement and never sends them again: they
 * would never be done, and renewal skips a subscription whose command is
 * pending. Each goes to retry as a new command, sent again on this
 * connection when cwm_cmd_goes_again says so (renewals are made anew);
 * the old one is emptied and kept (c->orphans) for paho's answer, if one
 * ever comes, or for the stop. */
static void cwm_orphan_acks(struct mg_mqtt *c)
{
	struct cwm_out *r, *next;
	for (r = c->inpaho; r != NULL; r = next) {
		next = r->inext;
		if (r->type == CMD_PUBLISH)
			continue;
		struct cwm_out *copy = malloc(sizeof(*copy));
		if (copy == NULL)
			continue; /* out of memory: it waits for paho as before */
		cwm_inpaho_unlink(c, r);
		*copy = *r;
		copy->next = copy->iprev = copy->inext = NULL;
		if (cwm_cmd_goes_again(copy))
			cwm_retry_insert(c, copy);
		else
			cwm_out_free(copy);
		struct cwm_out keep = {.c = c, .type = r->type, .orphan = 1};
		*r = keep;
		r->next = c->orphans;
		c->orphans = r;
	}
}

/* What an MQTT 5 CONNACK announces (absent: the specification's default);
 * MQTT 3.1.1 announces nothing: all 1, no maxima. */
struct cwm_caps {
	int recvmax;
	unsigned maxpacket;
	int shared, wildcard, retain, alias_max;
};

/* [L] Says loudly what this client needs and the broker said it does not
 * have. A broker without shared subscriptions would take
 * "$share/<group>/..." as a plain topic and deliver nothing; without
 * wildcards it refuses those subscriptions. Retained publishes are failed
 * by mqtt-io with 0x9A ("retain not supported") rather than sent: the
 * broker would close the connection over them. */
static void cwm_check_caps(struct mg_mqtt *c, const struct cwm_caps *k)
{
	int shared = 0, wild = 0;
	for (struct cwm_sub *s = c->sub_head; s != NULL; s = s->next) {
		shared += c->cfg.shared_group != NULL ||
		          strncmp(s->filter, "$share/", 7) == 0;
		wild += strpbrk(s->filter, "+#") != NULL;
	}
	if (!k->shared && shared > 0)
		cwm_log_locked(c, MG_MQTT_LOG_ERROR,
		               "%s has no shared subscriptions (CONNACK: Shared "
		               "Subscription Available 0): %d shared subscription(s) "
		               "(SHARED_GROUP or $share/) will be refused or deliver "
		               "nothing",
		               c->broker, shared);
	if (!k->wildcard && wild > 0)
		cwm_log_locked(c, MG_MQTT_LOG_ERROR,
		               "%s has no wildcard subscriptions (CONNACK: Wildcard "
		               "Subscription Available 0): %d subscription(s) with "
		               "'+' or '#' will be refused",
		               c->broker, wild);
	if (!k->retain)
		cwm_log_locked(c, MG_MQTT_LOG_WARNING,
		               "%s does not keep retained messages (CONNACK: Retain "
		               "Available 0): retained publishes fail with reason "
		               "0x9A",
		               c->broker);
	atomic_store(&c->no_retain, !k->retain);
}

static void cwm_connected(struct mg_mqtt *c, const char *uri, int session,
                          const struct cwm_caps *k)
{
	int recvmax = k->recvmax;
	pthread_mutex_lock(&c->lock);
	unsigned lim = k->maxpacket, v[2] = {(unsigned)c->cfg.max_packet_size,
	                                     c->learned_max};
	for (int i = 0; i < 2; i++)
		if (v[i] > 0 && (lim == 0 || v[i] < lim))
			lim = v[i];
	atomic_store(&c->max_packet, lim);
	cwm_connecting_set(c, 0);
	const char *b = cwm_known_uri(c, uri);
	char *broker = cwm_strdup(b);
	if (broker != NULL) {
		free(c->broker);
		c->broker = broker;
	}
	c->state = CWM_CONNECTED;
	atomic_store(&c->connected, 1);
	c->send_blocked = 0;
	c->uri_try = 0;
	c->uri_base = c->uri_cur;
	c->clean_once = 0;
	c->connected_at = cwm_now_ms();
	c->conn_gen++;
	c->progressed = 0;
	c->window = recvmax > 0 && recvmax < c->cfg.max_inflight
	                ? recvmax
	                : c->cfg.max_inflight;
	if (c->connects > 0)
		c->reconnects++;
	c->connects++;
	c->renew_needed = 1;
	c->birth_needed = c->cfg.birth_topic != NULL;
	cwm_orphan_acks(c);
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
	cwm_check_caps(c, k);
	if (c->io_waiting == CWM_IDLE_WAIT)
		pthread_cond_signal(&c->io_cond);
	pthread_mutex_unlock(&c->lock);
}

static void cwm_on_connect_ok(void *ctx, MQTTAsync_successData *d)
{
	struct cwm_caps k = {0, 0, 1, 1, 1, 0};
	cwm_debug_connack(ctx, d->alt.connect.sessionPresent, NULL); /* trace.c */
	cwm_connected(ctx, d->alt.connect.serverURI, d->alt.connect.sessionPresent,
	              &k);
}

static int cwm_prop_num(MQTTProperties *p, enum MQTTPropertyCodes id, int dflt)
{
	return MQTTProperties_hasProperty(p, id)
	           ? MQTTProperties_getNumericValue(p, id)
	           : dflt;
}

static void cwm_on_connect_ok5(void *ctx, MQTTAsync_successData5 *d)
{
	MQTTProperties *p = &d->properties;
	struct cwm_caps k;
	cwm_debug_connack(ctx, d->alt.connect.sessionPresent, p); /* trace.c */
	k.recvmax = cwm_prop_num(p, MQTTPROPERTY_CODE_RECEIVE_MAXIMUM, 0);
	k.maxpacket =
	    (unsigned)cwm_prop_num(p, MQTTPROPERTY_CODE_MAXIMUM_PACKET_SIZE, 0);
	k.shared =
	    cwm_prop_num(p, MQTTPROPERTY_CODE_SHARED_SUBSCRIPTION_AVAILABLE, 1);
	k.wildcard =
	    cwm_prop_num(p, MQTTPROPERTY_CODE_WILDCARD_SUBSCRIPTION_AVAILABLE, 1);
	k.retain = cwm_prop_num(p, MQTTPROPERTY_CODE_RETAIN_AVAILABLE, 1);
	k.alias_max = cwm_prop_num(p, MQTTPROPERTY_CODE_TOPIC_ALIAS_MAXIMUM, 0);
	cwm_connected(ctx, d->alt.connect.serverURI, d->alt.connect.sessionPresent,
	              &k);
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
	char brokers[512] = "", msg[300], host[256];
	size_t used = 0;

	/* trace.c: a host name mismatch, which paho says only in its trace. */
	if (cwm_trace_tls_failed(c, host, sizeof(host))) {
		cwm_log(c, MG_MQTT_LOG_ERROR,
		        "TLS: the broker's certificate does not match host name %s",
		        host);
		pthread_mutex_lock(&c->lock);
		c->tls_error = 1; /* MG_MQTT_ERR_TLS, below */
		pthread_mutex_unlock(&c->lock);
	}
	pthread_mutex_lock(&c->lock);
	cwm_connecting_set(c, 0);
	/* Right after a loss, paho sometimes fails the next connect at once
	 * with "socket error" (the dead connection's socket still in its
	 * receive thread's hands, which can sleep up to a second): that says
	 * nothing of this broker, which is tried again shortly, a few times,
	 * instead of counting as refused. */
	if (text != NULL && strcmp(text, "socket error") == 0 && !c->stopping &&
	    c->same_again < 3 && cwm_now_ms() - c->lost_at < CWM_SAME_AGAIN_MS) {
		c->same_again++;
		c->state = CWM_DISCONNECTED;
		c->reconnect_at = cwm_now_ms() + 300;
		if (c->io_waiting == CWM_IDLE_WAIT)
			pthread_cond_signal(&c->io_cond);
		pthread_mutex_unlock(&c->lock);
		return;
	}
	if (c->uri_try + 1 < c->cfg.nuris && !c->stopping) {
		/* More of BROKER_URL to try in this round: the next one now. */
		const char *tried = c->cfg.uris[c->uri_cur];
		c->uri_try++;
		c->state = CWM_DISCONNECTED;
		c->reconnect_at = cwm_now_ms();
		cwm_log_locked(c, MG_MQTT_LOG_INFO,
		               "connection to %s failed: %s%s%s; trying %s", tried,
		               reason >= 0 ? "refused by the broker: " : "",
		               text != NULL ? text : "failed",
		               c->tls_error ? " (TLS error, see the log)" : "",
		               c->cfg.uris[(c->uri_base + c->uri_try) % c->cfg.nuris]);
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

/* [L] A connection lost soon after its CONNACK with nothing acknowledged
 * on it (short), or one that lasted: after CWM_SHORT_LOSSES short ones in
 * a row on a persistent session, mqtt-io makes paho's client anew (see
 * cwm_conn_lost_locked). */
static void cwm_count_short_loss(struct mg_mqtt *c, int short_one)
{
	c->short_losses = short_one ? c->short_losses + 1 : 0;
	if (c->short_losses >= CWM_SHORT_LOSSES && !c->cfg.clean_session) {
		c->short_losses = 0;
		c->renew_paho = 1;
	}
}

/* What paho's words for a failed connect mean, said plainly: the error
 * and the text. paho says "TCP connect timeout" for any attempt not done
 * within CONNECTION_TIMEOUT (TCP, TLS or CONNACK), and "TCP connect
 * completion failure" when the socket closed after CONNECT was sent. */
static int cwm_connect_why(struct mg_mqtt *c, int code, const char *paho,
                           char *buf, size_t len)
{
	const char *m = paho != NULL ? paho : MQTTAsync_strerror(code);
	if (strcmp(m, "TCP connect timeout") == 0) {
		snprintf(buf, len,
		         "no answer within CONNECTION_TIMEOUT (%d s): nothing "
		         "listening that speaks MQTT, or a network that drops the "
		         "packets",
		         c->cfg.connection_timeout);
		return MG_MQTT_ERR_TIMEOUT;
	}
	if (strcmp(m, "MQTTProtocol_closeSession") == 0) {
		/* CONNACK came, then the connection closed while paho resent the
		 * session's unfinished messages: a short loss (see
		 * cwm_count_short_loss). */
		snprintf(buf, len,
		         "the broker closed the connection right after accepting it, "
		         "while the session's unfinished messages were sent again");
		pthread_mutex_lock(&c->lock);
		cwm_count_short_loss(c, 1);
		pthread_mutex_unlock(&c->lock);
		return MG_MQTT_ERR_CONNECT;
	}
	if (strcmp(m, "TCP connect completion failure") == 0) {
		snprintf(buf, len,
		         "the broker closed the connection after CONNECT without "
		         "answering it%s",
		         cwm_v5_now(c)
		             ? " (a broker without MQTT 5 does that: set "
		               "PROTOCOL_VERSION 3.1.1, or PROTOCOL_FALLBACK true)"
		             : "");
		return MG_MQTT_ERR_CONNECT;
	}
	snprintf(buf, len, "%s", m);
	return MG_MQTT_ERR_CONNECT;
}

/* PROTOCOL_FALLBACK: an MQTT 5 CONNECT refused as such (closed without
 * CONNACK, or "unsupported protocol version") is tried again at once with
 * 3.1.1, on the same broker; 1 when it is. */
static int cwm_fall_back(struct mg_mqtt *c, const char *paho, int reason)
{
	if (!c->v5 || !c->cfg.protocol_fallback || atomic_load(&c->v311_now))
		return 0;
	if (reason != 0x84 && reason != 1 &&
	    (paho == NULL || strcmp(paho, "TCP connect completion failure") != 0))
		return 0;
	atomic_store(&c->v311_now, 1);
	pthread_mutex_lock(&c->lock);
	cwm_connecting_set(c, 0);
	cwm_log_locked(c, MG_MQTT_LOG_WARNING,
	               "%s refused MQTT 5 (%s): going on with MQTT 3.1.1 "
	               "(PROTOCOL_FALLBACK); MQTT 5 properties are not sent",
	               c->cfg.uris[c->uri_cur],
	               reason != 0 ? "unsupported protocol version"
	                           : "closed the connection after CONNECT");
	c->state = CWM_DISCONNECTED;
	c->reconnect_at = cwm_now_ms();
	if (c->io_waiting == CWM_IDLE_WAIT)
		pthread_cond_signal(&c->io_cond);
	pthread_mutex_unlock(&c->lock);
	return 1;
}

static void cwm_on_connect_fail(void *ctx, MQTTAsync_failureData *d)
{
	char why[256];
	if (d != NULL && d->code > 0) {
		cwm_connect_failed(ctx, MG_MQTT_ERR_REFUSED, d->code,
		                   cwm_connack_text(d->code));
		return;
	}
	int e = cwm_connect_why(ctx, d != NULL ? d->code : -1,
	                        d != NULL ? d->message : NULL, why, sizeof(why));
	cwm_connect_failed(ctx, e, -1, why);
}

static void cwm_on_connect_fail5(void *ctx, MQTTAsync_failureData5 *d)
{
	/* paho puts a CONNACK refusal in reasonCode or, after trying every
	 * URL, in code. */
	int reason = d == NULL                      ? 0
	             : (int)d->reasonCode >= 0x80 ? (int)d->reasonCode
	             : d->code >= 0x80            ? d->code
	             : d->code > 0 && d->code <= 5 ? d->code /* 3.1.1 CONNACK */
	                                          : 0;
	char why[256];
	if (cwm_fall_back(ctx, d != NULL ? d->message : NULL, reason))
		return;
	if (reason > 0 && reason <= 5) {
		cwm_connect_failed(ctx, MG_MQTT_ERR_REFUSED, reason,
		                   cwm_connack_text(reason));
		return;
	}
	if (reason != 0) {
		cwm_connect_failed(ctx, MG_MQTT_ERR_REFUSED, reason,
		                   MQTTReasonCode_toString((enum MQTTReasonCodes)reason));
		return;
	}
	int e = cwm_connect_why(ctx, d != NULL ? d->code : -1,
	                        d != NULL ? d->message : NULL, why, sizeof(why));
	cwm_connect_failed(ctx, e, -1, why);
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
	/* The next round starts with the next broker, at once: the one just
	 * lost is the least likely to answer. A connection the broker dropped
	 * soon after accepting it (a node that cannot serve the session)
	 * counts as a move too; after as many moves as there are other
	 * brokers the back-off applies, and only a connection that lasted
	 * resets it, so that brokers that all do that are not hammered. */
	int64_t now = cwm_now_ms(), delay;
	c->lost_at = now;
	c->same_again = 0;
	/* paho can corrupt a message it keeps for a persistent session (see
	 * the README's known limitations) and then resend it after every
	 * CONNACK, and the broker closes each connection over it: after a few
	 * such losses in a row mqtt-io starts paho's handle afresh, and what
	 * paho held goes again from the library's own copies. Such a
	 * connection completes nothing handed to paho on it: paho writes its
	 * resends at CONNACK, ahead of everything new, and the broker closes
	 * when it reads the corrupt one. A connection that did complete
	 * something was cut for another reason, and a new handle would only
	 * do harm: a QoS 2 message the broker had received (PUBREC) or
	 * released (PUBREL) would go again under a new packet id, and arrive
	 * twice. */
	cwm_count_short_loss(c, now - c->connected_at < CWM_SHORT_MS &&
	                            !c->progressed);
	if (now - c->connected_at >= CWM_STABLE_MS) {
		c->backoff_s = c->cfg.reconnect_min;
		c->quick_moves = 0;
	}
	c->uri_base = (c->uri_cur + 1) % c->cfg.nuris;
	c->uri_try = 0;
	if (c->quick_moves < c->cfg.nuris - 1) {
		c->quick_moves++;
		delay = 0;
	} else {
		c->quick_moves = 0;
		delay = cwm_backoff_ms(c);
	}
	c->reconnect_at = now + delay;
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

/* [L] DISCONNECT 0x95 (packet too large) from a broker that announced no
 * limit: the broker refused the largest packet in flight. The limit in
 * force becomes one byte under it, so that the message fails (not sent
 * again: cwm_publish_too_large) and smaller ones still go. */
static void cwm_learn_max_packet(struct mg_mqtt *c)
{
	size_t big = 0;
	for (const struct cwm_out *r = c->inpaho; r != NULL; r = r->inext) {
		size_t pbytes = 0;
		if (r->type != CMD_PUBLISH)
			continue;
		(void)cwm_props_check(r->props, &pbytes);
		size_t n = cwm_publish_size(c->v5, strlen(r->topic), pbytes, r->qos,
		                            r->len);
		big = n > big ? n : big;
	}
	if (big < 2)
		return;
	unsigned lim = (unsigned)(big - 1), now = atomic_load(&c->max_packet);
	if (now != 0 && now <= lim)
		return;
	c->learned_max = lim;
	atomic_store(&c->max_packet, lim);
	cwm_log_locked(c, MG_MQTT_LOG_WARNING,
	               "the broker refused a packet of %zu bytes as too large "
	               "(DISCONNECT 0x95) without announcing a limit: messages "
	               "of %zu bytes or more are refused from now on",
	               big, big);
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
	if (reason == MQTTREASONCODE_PACKET_TOO_LARGE)
		cwm_learn_max_packet(c);
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
	int v5 = cwm_v5_now(c);
	o.MQTTVersion = v5                 ? MQTTVERSION_5
	                : s->protocol == 3 ? MQTTVERSION_3_1
	                                   : MQTTVERSION_3_1_1;
	if (v5) {
		o.cleansession = 0;
		o.cleanstart = s->clean_session || c->clean_once;
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
		o.cleansession = s->clean_session || c->clean_once;
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
