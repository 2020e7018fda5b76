/*
 * Connections: the result of an attempt (made by mqtt-io through the
 * engine), a connection lost (paho's threads) or paused, the fail-over
 * walk over BROKER_URL, the back-off, and the in-flight window that adapts
 * when a broker keeps closing connections over what is in flight.
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

static void cwm_conn_lost_locked(struct mg_mqtt *c, const char *cause);

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
	c->connected_at = cwm_now_ms();
	c->progressed = 0;
	c->recvmax = recvmax;
	cwm_window_set(c);
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
	cwm_check_caps(c, k);
	if (c->lost_early) /* paho said so while the connect returned */
		cwm_conn_lost_locked(c, "connection lost right after CONNACK");
	if (c->io_waiting == CWM_IDLE_WAIT)
		pthread_cond_signal(&c->io_cond);
	pthread_mutex_unlock(&c->lock);
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

/* Wakes mqtt-io if it sleeps idle, then releases the client's lock. [L] */
static void cwm_connect_wake_unlock(struct mg_mqtt *c)
{
	if (c->io_waiting == CWM_IDLE_WAIT)
		pthread_cond_signal(&c->io_cond);
	pthread_mutex_unlock(&c->lock);
}

/* Logs a TLS host name mismatch, which paho says only in its trace
 * (trace.c), and marks the attempt as a TLS error. */
static void cwm_connect_note_tls(struct mg_mqtt *c)
{
	char host[256];

	if (!cwm_trace_tls_failed(c, host, sizeof(host)))
		return;
	cwm_log(c, MG_MQTT_LOG_ERROR,
	        "TLS: the broker's certificate does not match host name %s", host);
	pthread_mutex_lock(&c->lock);
	c->tls_error = 1; /* MG_MQTT_ERR_TLS, in cwm_connect_round_failed() */
	pthread_mutex_unlock(&c->lock);
}

/* Schedules the same broker again shortly when a "socket error" follows
 * a loss at once; returns 1 if it did (nothing else to do). [L]
 * Right after a loss, paho sometimes fails the next connect at once
 * with "socket error" (the dead connection's socket still in its
 * receive thread's hands, which can sleep up to a second): that says
 * nothing of this broker, which is tried again shortly, a few times,
 * instead of counting as refused. */
static int cwm_connect_retry_same(struct mg_mqtt *c, const char *text)
{
	if (text == NULL || strcmp(text, "socket error") != 0 || c->stopping ||
	    c->same_again >= 3 || cwm_now_ms() - c->lost_at >= CWM_SAME_AGAIN_MS)
		return 0;
	c->same_again++;
	c->state = CWM_DISCONNECTED;
	c->reconnect_at = cwm_now_ms() + 300;
	return 1;
}

/* Moves to the next broker of BROKER_URL when this round has one left;
 * returns 1 if it did. [L] */
static int cwm_connect_try_next(struct mg_mqtt *c, int reason,
                                const char *text)
{
	if (c->uri_try + 1 >= c->cfg.nuris || c->stopping)
		return 0;
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
	return 1;
}

/* Queues the EV_CONNECT event of a failed round for on_connect. [L] */
static void cwm_connect_fail_event(struct mg_mqtt *c, int error, int reason,
                                   int attempt, const char *brokers,
                                   const char *msg)
{
	if (c->on_connect == NULL)
		return;
	struct cwm_event *ev =
	    cwm_event_new(EV_CONNECT, strlen(brokers) + strlen(msg) + 2);
	if (ev == NULL)
		return;
	size_t u = 0;
	ev->u.conn.error = error;
	ev->u.conn.reason_code = reason;
	ev->u.conn.attempt = attempt;
	ev->u.conn.broker = cwm_event_str(ev, &u, brokers);
	ev->u.conn.message = cwm_event_str(ev, &u, msg);
	cwm_push_event(c, ev);
}

/* A whole round of BROKER_URL failed: back-off, the first result a
 * waiting start reads, the event and the warning. [L] */
static void cwm_connect_round_failed(struct mg_mqtt *c, int error,
                                     int reason, const char *text)
{
	char brokers[512] = "", msg[300];
	size_t used = 0;

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
	cwm_connect_fail_event(c, error, reason, attempt, brokers, msg);
	if (!c->stopping && start_fails)
		cwm_log_locked(c, MG_MQTT_LOG_WARNING,
		               "connection attempt %d to %s failed: %s", attempt,
		               brokers, msg);
	else if (!c->stopping)
		cwm_log_locked(c, MG_MQTT_LOG_WARNING,
		               "connection attempt %d to %s failed: %s; next attempt "
		               "in %.1f s",
		               attempt, brokers, msg, (double)delay / 1000.0);
}

/* A connect attempt failed: the same broker again, the next one, or the
 * round's failure. */
static void cwm_connect_failed(struct mg_mqtt *c, int error, int reason,
                               const char *text)
{
	cwm_connect_note_tls(c);
	pthread_mutex_lock(&c->lock);
	if (!cwm_connect_retry_same(c, text) &&
	    !cwm_connect_try_next(c, reason, text))
		cwm_connect_round_failed(c, error, reason, text);
	cwm_connect_wake_unlock(c);
}

/* What a failed attempt without a refusal means, said plainly: the error
 * and the text. */
static int cwm_connect_why(struct mg_mqtt *c, const struct cwm_connack *a,
                           int sent, char *buf, size_t len)
{
	if (a->elapsed_ms + 250 >= (int64_t)c->cfg.connection_timeout * 1000) {
		snprintf(buf, len,
		         "no answer within CONNECTION_TIMEOUT (%d s): nothing "
		         "listening that speaks MQTT, or a network that drops the "
		         "packets",
		         c->cfg.connection_timeout);
		return MG_MQTT_ERR_TIMEOUT;
	}
	if (sent) {
		snprintf(buf, len,
		         "the broker closed the connection after CONNECT without "
		         "answering it%s",
		         cwm_v5_now(c)
		             ? " (a broker without MQTT 5 does that: set "
		               "PROTOCOL_VERSION 3.1.1, or PROTOCOL_FALLBACK true)"
		             : "");
		return MG_MQTT_ERR_CONNECT;
	}
	snprintf(buf, len,
	         "cannot open a connection (refused, unreachable, or the TLS "
	         "handshake failed: %s)",
	         cwm_eng_strerror(a->code));
	return MG_MQTT_ERR_CONNECT;
}

/* PROTOCOL_FALLBACK: an MQTT 5 CONNECT refused as such (closed without
 * CONNACK, or "unsupported protocol version") is tried again at once with
 * 3.1.1, on the same broker; 1 when it is. */
static int cwm_fall_back(struct mg_mqtt *c, int closed, int reason)
{
	if (!c->v5 || !c->cfg.protocol_fallback || atomic_load(&c->v311_now))
		return 0;
	if (reason != 0x84 && reason != 1 && !closed)
		return 0;
	atomic_store(&c->v311_now, 1);
	pthread_mutex_lock(&c->lock);
	cwm_log_locked(c, MG_MQTT_LOG_WARNING,
	               "%s refused MQTT 5 (%s): going on with MQTT 3.1.1 "
	               "(PROTOCOL_FALLBACK); MQTT 5 properties are not sent",
	               c->cfg.uris[c->uri_cur],
	               reason != 0 ? "unsupported protocol version"
	                           : "closed the connection after CONNECT");
	c->state = CWM_DISCONNECTED;
	c->reconnect_at = cwm_now_ms();
	pthread_mutex_unlock(&c->lock);
	return 1;
}

static void cwm_window_lost(struct mg_mqtt *c, int64_t now);

/* mqtt-io: the result of an attempt (cwm_eng_connect). */
static void cwm_connect_result(struct mg_mqtt *c, const struct cwm_connack *a)
{
	char why[256];
	if (a->ok) {
		pthread_mutex_lock(&c->lock);
		const char *uri = c->cfg.uris[c->uri_cur];
		pthread_mutex_unlock(&c->lock);
		cwm_connected(c, uri, a->session, &a->caps);
		return;
	}
	if (a->dropped) {
		/* A short loss: what paho sent again was refused (the window and
		 * the poison rule apply as to any such loss). */
		pthread_mutex_lock(&c->lock);
		c->progressed = 0;
		c->connected_at = cwm_now_ms();
		cwm_window_lost(c, c->connected_at);
		pthread_mutex_unlock(&c->lock);
		cwm_connect_failed(c, MG_MQTT_ERR_CONNECT, -1,
		                   "the broker closed the connection right after "
		                   "accepting it, while the session's unfinished "
		                   "messages were sent again");
		return;
	}
	int sent = cwm_trace_connect_sent(c);
	if (cwm_fall_back(c, sent && a->reason == 0 && a->elapsed_ms + 250 <
	                             (int64_t)c->cfg.connection_timeout * 1000,
	                  a->reason)) {
		cwm_trace_watch_end(c);
		return;
	}
	if (a->reason > 0 && a->reason <= 5)
		cwm_connect_failed(c, MG_MQTT_ERR_REFUSED, a->reason,
		                   cwm_connack_text(a->reason));
	else if (a->reason >= 0x80)
		cwm_connect_failed(
		    c, MG_MQTT_ERR_REFUSED, a->reason,
		    MQTTReasonCode_toString((enum MQTTReasonCodes)a->reason));
	else
		cwm_connect_failed(c, cwm_connect_why(c, a, sent, why, sizeof(why)),
		                   -1, why);
}

/* [L] The smallest of MAX_INFLIGHT, the broker's Receive Maximum and the
 * adaptive window. */
static void cwm_window_set(struct mg_mqtt *c)
{
	int w = c->cfg.max_inflight;
	if (c->recvmax > 0 && c->recvmax < w)
		w = c->recvmax;
	if (c->awin > 0 && c->awin < w)
		w = c->awin;
	c->window = w;
}

/* [L] The oldest QoS 1/2 message handed to paho (lowest id; also one
 * mqtt-io is writing, whose packet id it has not recorded yet), or NULL. */
static struct cwm_out *cwm_oldest_in_flight(struct mg_mqtt *c)
{
	struct cwm_out *o = NULL;
	for (struct cwm_out *r = c->inpaho; r != NULL; r = r->inext)
		if (r->type == CMD_PUBLISH && r->qos > 0 && r->sent_at != 0 &&
		    (o == NULL || r->id < o->id))
			o = r;
	return o;
}

/* [L] A connection lost with QoS 1/2 messages in flight. A short one (the
 * broker closed it within CWM_SHORT_MS of its CONNACK) says the broker
 * refuses what it is sent: with more than one message in flight and
 * nothing acknowledged on the connection the window halves (down to 1; it
 * grows back by one per window of acknowledgements, up to one less than
 * the number that failed); with exactly one, written within CWM_POISON_MS
 * of the close, nothing acknowledged after it, and not yet taken by the
 * broker, that message is the suspect, and after CWM_POISON_STRIKES such
 * losses in a row it is failed as poison (cwm_io_poison) instead of sent
 * again for ever. A message from the broker counts as an acknowledgement
 * too. */
static void cwm_window_lost(struct mg_mqtt *c, int64_t now)
{
	int n = c->inflight;
	if (now - c->connected_at >= CWM_SHORT_MS || n == 0) {
		c->strikes = 0;
		return;
	}
	if (n > 1) {
		if (c->window == 1 || c->progressed)
			return; /* no suspect among several: connections dying is
			           no refusal (it waits until they heal) */
		int w = (n < c->window ? n : c->window) / 2;
		c->awin = w > 1 ? w : 1;
		c->awin_cap = n - 1;
		c->awin_acks = 0;
		cwm_window_set(c);
		if (!c->awin_logged)
			cwm_log_locked(c, MG_MQTT_LOG_WARNING,
			               "the broker closed the connection right after "
			               "accepting it with %d QoS 1/2 message(s) in "
			               "flight and none acknowledged: the in-flight "
			               "window is now %d",
			               n, c->window);
		c->awin_logged = 1;
		return;
	}
	/* The suspect was written on this connection (paho sends what it
	 * holds again right after CONNACK), nothing was acknowledged after it,
	 * and the close came right after: a broker that refuses a packet
	 * closes as it reads it. */
	struct cwm_out *o = cwm_oldest_in_flight(c);
	int64_t wrote = o == NULL                  ? 0
	                : o->sent_at > c->connected_at ? o->sent_at
	                                               : c->connected_at;
	/* The broker reads in order and closes at the first packet it
	 * refuses: a SUBSCRIBE written before the message is the suspect
	 * instead (cwm_sub_struck). */
	if (o == NULL || now - wrote > CWM_POISON_MS || c->progress_at >= wrote ||
	    (c->filters_busy && c->filters_sent_at < wrote) ||
	    (o->msgid != 0 && cwm_eng_released(c, o->msgid))) {
		c->strikes = 0; /* a QoS 2 message the broker took is none */
		return;
	}
	c->strikes = o->id == c->suspect ? c->strikes + 1 : 1;
	c->suspect = o->id;
	if (c->strikes >= CWM_POISON_STRIKES) {
		c->poison = o->id;
		c->strikes = 0;
		c->suspect = 0;
	}
}

/* [L] An acknowledgement: the window grows back by one per window of
 * them, up to awin_cap. */
static void cwm_window_acked(struct mg_mqtt *c)
{
	c->progressed = 1;
	c->progress_at = cwm_now_ms();
	c->strikes = 0;
	if (c->awin == 0 || c->awin >= c->awin_cap)
		return;
	if (++c->awin_acks >= c->awin) {
		c->awin++;
		c->awin_acks = 0;
		cwm_window_set(c);
	}
}

/* [L] On a clean session paho's copies of QoS 1/2 messages in flight go
 * with the connection: the library sends its own again after the next
 * connect (retry, in id order). */
static void cwm_requeue_in_flight(struct mg_mqtt *c)
{
	struct cwm_out *r, *next;
	for (r = c->inpaho; r != NULL; r = next) {
		next = r->inext;
		if (r->msgid == 0)
			continue;
		cwm_byid_take(c, r->msgid);
		cwm_inpaho_unlink(c, r);
		r->sent = 0;
		cwm_retry_insert(c, r);
	}
}

/* [L] The connection is gone: lost (by the network or the broker), or
 * paused by flow control (lost 0). Schedules the next attempt and tells
 * the handlers; the caller set the state. */
static void cwm_conn_gone_locked(struct mg_mqtt *c, const char *why, int lost)
{
	int64_t now = cwm_now_ms(), delay = 0;
	c->lost_at = now;
	c->same_again = 0;
	c->losses++;
	if (lost)
		cwm_window_lost(c, now);
	if (c->cfg.clean_session)
		cwm_requeue_in_flight(c);
	if (now - c->connected_at >= CWM_STABLE_MS) {
		c->backoff_s = c->cfg.reconnect_min;
		c->quick_moves = 0;
	}
	if (lost) {
		/* The next round starts with the next broker, at once: the one
		 * just lost is the least likely to answer. A connection the broker
		 * dropped soon after accepting it counts as a move too; after as
		 * many moves as there are other brokers the back-off applies, and
		 * only a connection that lasted resets it, so that brokers that
		 * all do that are not hammered. */
		c->uri_base = (c->uri_cur + 1) % c->cfg.nuris;
		c->uri_try = 0;
		if (c->quick_moves < c->cfg.nuris - 1) {
			c->quick_moves++;
		} else {
			c->quick_moves = 0;
			delay = cwm_backoff_ms(c);
		}
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
	if (lost)
		cwm_log_locked(c, MG_MQTT_LOG_WARNING,
		               "connection to %s lost: %s; reconnecting in %.1f s",
		               c->broker != NULL ? c->broker : "broker", why,
		               (double)delay / 1000.0);
	else
		cwm_log_locked(c, MG_MQTT_LOG_WARNING,
		               "connection to %s %s; %d message(s) of %zu bytes "
		               "wait",
		               c->broker != NULL ? c->broker : "broker", why,
		               c->ev_msgs, c->ev_bytes);
	if (c->io_waiting == CWM_IDLE_WAIT)
		pthread_cond_signal(&c->io_cond);
}

/* The connection is lost. Called with c->lock held; a no-op unless
 * connected, so that paho's two ways of saying it (connectionLost, and the
 * disconnected callback for an MQTT 5 DISCONNECT from the broker) count
 * once. */
static void cwm_conn_lost_locked(struct mg_mqtt *c, const char *cause)
{
	if (c->state == CWM_CONNECTING)
		c->lost_early = 1; /* before mqtt-io saw the CONNACK: cwm_connected */
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
	cwm_conn_gone_locked(c, why, 1);
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
 * large, server shutting down, ...): paho's thread. */
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
