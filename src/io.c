/*
 * The mqtt-io thread: the only thread that calls paho once a client runs.
 * Hands commands to paho inside the in-flight window, renews subscriptions,
 * reconnects, flushes and disconnects at stop.
 */
#include "internal.h"

/* A message published before the broker announced its Maximum Packet
 * Size (buffered while disconnected, read back from PERSISTENCE_DIR) that
 * exceeds it: sent, it would make the broker close the connection, and
 * the message would be sent again after every reconnect, forever. It is
 * failed instead, logged and counted. */
static int cwm_publish_too_large(struct mg_mqtt *c, const struct cwm_out *r)
{
	unsigned maxp = atomic_load(&c->max_packet);
	size_t pbytes = 0, size;
	if (maxp == 0)
		return 0;
	(void)cwm_props_check(r->props, &pbytes);
	size = cwm_publish_size(c->v5, strlen(r->topic), pbytes, r->qos, r->len);
	if (size <= maxp)
		return 0;
	cwm_log(c, MG_MQTT_LOG_ERROR,
	        "message %d to '%s' (%zu bytes) is larger than the broker's "
	        "maximum packet size (%u bytes): not sent",
	        r->id, r->topic, size, maxp);
	return 1;
}

/* mqtt-io: hands one command to paho. Called without c->lock; r is already
 * in c->inpaho, because paho may report it done before returning. */
static void cwm_send(struct mg_mqtt *c, struct cwm_out *r)
{
	MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
	int rc;

	if (r->noop) {
		cwm_done(c, r, 0, 0, NULL, 0);
		return;
	}
	ro.context = r;
	if (cwm_v5_now(c)) { /* paho wants the callbacks of the connection's
	                        version (PROTOCOL_FALLBACK may have changed it) */
		ro.onSuccess5 = cwm_on_done_ok5;
		ro.onFailure5 = cwm_on_done_fail5;
	} else {
		ro.onSuccess = cwm_on_done_ok;
		ro.onFailure = cwm_on_done_fail;
	}
	if (r->type == CMD_PUBLISH && cwm_publish_too_large(c, r)) {
		cwm_done(c, r, MG_MQTT_ERR_TOO_LARGE, 0, NULL, 0);
		return;
	}
	if (r->type == CMD_PUBLISH && r->retain && atomic_load(&c->no_retain)) {
		cwm_done(c, r, 0x9A, 0, NULL, 0); /* "retain not supported" */
		return;
	}
	cwm_debug_send(c, r); /* trace.c: LOG_LEVEL debug */
	if (r->type == CMD_PUBLISH) {
		MQTTAsync_message m = MQTTAsync_message_initializer;
		m.payload = r->payload;
		m.payloadlen = (int)r->len;
		m.qos = r->qos;
		m.retained = r->retain;
		if (r->props != NULL)
			cwm_props_to_paho(r->props, &m.properties);
		r->sent = 1; /* before: paho may report it done before returning */
		rc = MQTTAsync_sendMessage(c->paho, r->topic, &m, &ro);
		MQTTProperties_free(&m.properties);
		if (rc != MQTTASYNC_SUCCESS)
			r->sent = 0;
	} else if (r->type == CMD_SUBSCRIBE) {
		rc = MQTTAsync_subscribeMany(c->paho, r->nfilters, r->wire, r->qos_list,
		                             &ro);
	} else {
		rc = MQTTAsync_unsubscribeMany(c->paho, r->nfilters, r->wire, &ro);
	}
	if (rc == MQTTASYNC_SUCCESS)
		return;
	if (rc == MQTTASYNC_DISCONNECTED || rc == MQTTASYNC_MAX_BUFFERED_MESSAGES ||
	    rc == MQTTASYNC_NO_MORE_MSGIDS || rc == MQTTASYNC_MAX_MESSAGES_INFLIGHT) {
		pthread_mutex_lock(&c->lock);
		c->send_blocked = 1; /* until the next connect, or a completion */
		pthread_mutex_unlock(&c->lock);
		cwm_done(c, r, MG_MQTT_ERR_CONNECTION_LOST, 1, NULL, 0);
	} else {
		cwm_log(c, MG_MQTT_LOG_ERROR, "paho refused a command: %s (%d)",
		        MQTTAsync_strerror(rc), rc);
		cwm_done(c, r, MG_MQTT_ERR_PAHO, 0, NULL, 0);
	}
}

/* [L] Takes the commands mqtt-io may hand to paho now, oldest first: retry
 * before outq, stopping at the first QoS message that does not fit the
 * window so that order is kept. Links them into c->inpaho. */
static struct cwm_out *cwm_take_batch(struct mg_mqtt *c)
{
	struct cwm_out *batch = NULL, *tail = NULL;
	int taken = 0;
	while (taken < CWM_BATCH && !c->send_blocked) {
		struct cwm_out **head = c->retry != NULL ? &c->retry : &c->outq;
		struct cwm_out **qt = c->retry != NULL ? &c->retry_tail : &c->outq_tail;
		struct cwm_out *r = *head;
		if (r == NULL)
			break;
		if (r->type == CMD_PUBLISH) {
			if (r->qos > 0 && c->inflight >= c->window)
				break;
			if (r->qos == 0 && c->inflight0 >= CWM_QOS0_WINDOW)
				break;
		}
		*head = r->next;
		if (*head == NULL)
			*qt = NULL;
		r->next = NULL;
		r->appendable = 0; /* on its way to paho: no more joiners */
		cwm_inpaho_link(c, r);
		if (tail != NULL)
			tail->next = r;
		else
			batch = r;
		tail = r;
		taken++;
	}
	return batch;
}

/* [L] After a connect: renewing SUBSCRIBEs for every settled subscription
 * (one with a user SUBSCRIBE still queued is sent by that command), then
 * the birth message, ahead of everything else. */
static void cwm_queue_renewal(struct mg_mqtt *c)
{
	struct cwm_out *first = NULL, *last = NULL;
	struct cwm_sub *s = c->sub_head;

	c->renew_needed = 0;
	while (s != NULL) {
		const char *fv[CWM_RENEW_CHUNK];
		int qv[CWM_RENEW_CHUNK], n = 0;
		for (; s != NULL && n < CWM_RENEW_CHUNK; s = s->next)
			if (s->pending == 0) {
				fv[n] = s->filter;
				qv[n++] = s->qos;
			}
		if (n == 0)
			break;
		struct cwm_out *r = cwm_cmd_filters(c, CMD_SUBSCRIBE, fv, qv, n);
		if (r == NULL) {
			cwm_log_locked(c, MG_MQTT_LOG_ERROR,
			               "out of memory renewing subscriptions");
			break;
		}
		r->internal = 1;
		r->id = cwm_next_id(c);
		if (last != NULL)
			last->next = r;
		else
			first = r;
		last = r;
	}
	if (c->birth_needed) {
		const char *t = c->cfg.birth_topic, *m = c->cfg.birth_message;
		size_t tl = strlen(t), ml = m != NULL ? strlen(m) : 0;
		struct cwm_out *r = calloc(1, sizeof(*r) + tl + 1 + ml + 1);
		c->birth_needed = 0;
		if (r != NULL) {
			r->c = c;
			r->type = CMD_PUBLISH;
			r->internal = 1;
			r->qos = c->cfg.birth_qos;
			r->retain = c->cfg.birth_retain;
			r->topic = memcpy((char *)(r + 1), t, tl + 1);
			r->payload = r->topic + tl + 1;
			r->len = ml;
			if (ml > 0)
				memcpy(r->payload, m, ml);
			r->id = cwm_next_id(c);
			if (last != NULL)
				last->next = r;
			else
				first = r;
			last = r;
		}
	}
	if (first != NULL) {
		last->next = c->retry;
		c->retry = first;
		if (c->retry_tail == NULL)
			c->retry_tail = last;
	}
}

/* [L] Fails every command still queued or in paho with MG_MQTT_ERR_STOPPED;
 * called by mqtt-io after the paho handle is destroyed. */
static void cwm_fail_all(struct mg_mqtt *c)
{
	int lost = 0;
	for (;;) {
		struct cwm_out *r = c->inpaho;
		if (r != NULL) {
			cwm_inpaho_unlink(c, r);
		} else if ((r = c->retry) != NULL) {
			if ((c->retry = r->next) == NULL)
				c->retry_tail = NULL;
		} else if ((r = c->outq) != NULL) {
			if ((c->outq = r->next) == NULL)
				c->outq_tail = NULL;
		} else {
			break;
		}
		if (r->type == CMD_PUBLISH && !r->internal)
			lost++;
		pthread_mutex_unlock(&c->lock);
		cwm_done(c, r, MG_MQTT_ERR_STOPPED, 0, NULL, 0);
		pthread_mutex_lock(&c->lock);
	}
	if (lost > 0)
		cwm_log_locked(c, MG_MQTT_LOG_WARNING,
		               "stopped with %d message(s) not sent%s", lost,
		               c->pdir != NULL ? " (QoS 1/2 ones stay in "
		                                 "PERSISTENCE_DIR for the next start)"
		                               : "");
}

static void cwm_on_disc_ok(void *ctx, MQTTAsync_successData *r)
{
	struct mg_mqtt *c = ctx;
	(void)r;
	pthread_mutex_lock(&c->lock);
	c->disc_done = 1;
	pthread_cond_broadcast(&c->state_cond);
	pthread_mutex_unlock(&c->lock);
}

static void cwm_on_disc_fail(void *ctx, MQTTAsync_failureData *r)
{
	(void)r;
	cwm_on_disc_ok(ctx, NULL);
}

static void cwm_on_disc_ok5(void *ctx, MQTTAsync_successData5 *r)
{
	(void)r;
	cwm_on_disc_ok(ctx, NULL);
}

static void cwm_on_disc_fail5(void *ctx, MQTTAsync_failureData5 *r)
{
	(void)r;
	cwm_on_disc_ok(ctx, NULL);
}

/* mqtt-io, at stop: DISCONNECT (the broker drops the will), then destroy. */
static void cwm_io_shutdown(struct mg_mqtt *c, int was_connected)
{
	if (was_connected) {
		MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
		d.timeout = 1000;
		d.context = c;
		if (cwm_v5_now(c)) {
			d.onSuccess5 = cwm_on_disc_ok5;
			d.onFailure5 = cwm_on_disc_fail5;
		} else {
			d.onSuccess = cwm_on_disc_ok;
			d.onFailure = cwm_on_disc_fail;
		}
		cwm_debug_disconnect(c); /* trace.c: LOG_LEVEL debug */
		if (MQTTAsync_disconnect(c->paho, &d) == MQTTASYNC_SUCCESS) {
			struct timespec until = cwm_deadline(3000);
			pthread_mutex_lock(&c->lock);
			while (!c->disc_done &&
			       pthread_cond_timedwait(&c->state_cond, &c->lock, &until) !=
			           ETIMEDOUT) {
			}
			pthread_mutex_unlock(&c->lock);
		}
	}
	if (c->paho != NULL)
		MQTTAsync_destroy(&c->paho); /* no paho callback runs after this */
	c->paho = NULL;
	pthread_mutex_lock(&c->lock);
	while (c->orphans != NULL) {
		struct cwm_out *r = c->orphans;
		c->orphans = r->next;
		free(r);
	}
	pthread_mutex_unlock(&c->lock);
	cwm_trace_leave(c); /* trace.c: no paho trace lines after this */
}

/* Worker threads call this after each batch of n items: a stream is work
 * coming less than two coalescing windows apart. In a fast stream (more
 * than one item per CWM_FAST_US on average since the last batch) the
 * window doubles while batches stay small (a wake-up per few messages is
 * what costs), up to CWM_COALESCE_MAX_US, and halves when they are large.
 * At ordinary rates it stays at CWM_COALESCE_US: there a wake-up per
 * message costs little, and latency matters more. */
static void cwm_worked(struct cwm_pace *p, int n)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	int64_t now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
	if (p->window_us == 0)
		p->window_us = CWM_COALESCE_US;
	int64_t gap = now - p->last_us;
	p->busy = gap < 2 * p->window_us;
	p->last_us = now;
	if (!p->busy)
		p->window_us = CWM_COALESCE_US;
	else if (n < 16 && gap < (int64_t)n * CWM_FAST_US &&
	         p->window_us < CWM_COALESCE_MAX_US)
		p->window_us *= 2;
	else if (n > 64 && p->window_us > CWM_COALESCE_US)
		p->window_us /= 2;
}

/* [L] Waits on cond until signalled, or until wait_ms (< 0: no limit).
 * Wake-up coalescing: in a stream of work (cwm_worked), a thread first
 * waits at most its window, and producers do not signal it meanwhile,
 * so that one wake-up serves several messages instead of one each (a
 * context switch per message doubles the CPU a message costs). Otherwise
 * it is signalled at once: latency at ordinary rates is unchanged, and a
 * trickle of messages pays for no timer. */
static void cwm_wait_for_work(struct mg_mqtt *c, pthread_cond_t *cond,
                              int *waiting, struct cwm_pace *p,
                              int64_t wait_ms)
{
	if (p->busy && (wait_ms < 0 || wait_ms * 1000 > p->window_us)) {
		struct timespec until = cwm_deadline_us(p->window_us);
		*waiting = CWM_COALESCING;
		pthread_cond_timedwait(cond, &c->lock, &until);
	} else {
		*waiting = CWM_IDLE_WAIT;
		if (wait_ms < 0) {
			pthread_cond_wait(cond, &c->lock);
		} else {
			struct timespec until = cwm_deadline(wait_ms);
			pthread_cond_timedwait(cond, &c->lock, &until);
		}
	}
	*waiting = CWM_RUNNING;
	p->busy = 0;
}

/* [L] mqtt-io, released around paho's calls: a new paho handle for c
 * (cwm_conn_lost_locked says when). Destroying the old one hands back
 * what it held, to retry as paho's give-back would (its failure callbacks,
 * or here for what it kept quiet about); the new one starts without
 * paho's session store, so a message it corrupted there is gone. Its first
 * connect starts a clean session: the broker's session still holds the
 * old packet ids of unfinished QoS 2 messages, and the new handle numbers
 * from 1 again (mosquitto then drops the old message and refuses the new,
 * both lost). What the broker held for the client unreleased is sent
 * again by the library; what it queued for the client meanwhile is gone
 * with the session (README, known limitations). */
static void cwm_paho_renew(struct mg_mqtt *c)
{
	char err[256];
	c->renew_paho = 0;
	c->clean_once = 1;
	cwm_log_locked(c, MG_MQTT_LOG_WARNING,
	               "the broker closed %d connections in a row right after "
	               "accepting them: paho's client is made anew, with a clean "
	               "session (unfinished messages are sent again from the "
	               "library's copies)",
	               CWM_SHORT_LOSSES);
	pthread_mutex_unlock(&c->lock);
	MQTTAsync_destroy(&c->paho);
	c->paho = NULL;
	for (;;) {
		pthread_mutex_lock(&c->lock);
		struct cwm_out *r = c->inpaho, *o;
		while ((o = c->orphans) != NULL) {
			c->orphans = o->next;
			free(o);
		}
		pthread_mutex_unlock(&c->lock);
		if (r == NULL)
			break;
		cwm_done(c, r, MG_MQTT_ERR_CONNECTION_LOST, 1, NULL, 0);
	}
	int rc = cwm_start_paho(c, err, sizeof(err));
	pthread_mutex_lock(&c->lock);
	if (rc != 0) {
		cwm_log_locked(c, MG_MQTT_LOG_ERROR, "%s", err);
		c->renew_paho = 1; /* again before the next attempt */
	}
}

/* [L] Starts the next connection attempt (released around paho's call). */
static void cwm_io_connect(struct mg_mqtt *c)
{
	if (c->renew_paho)
		cwm_paho_renew(c);
	if (c->paho == NULL) {
		c->reconnect_at = cwm_now_ms() + 1000; /* create failed: later */
		return;
	}
	c->state = CWM_CONNECTING;
	if (c->uri_try == 0)
		c->attempt++; /* one attempt: a round over BROKER_URL */
	c->tls_error = 0;
	int idx = (c->uri_base + c->uri_try) % c->cfg.nuris;
	c->uri_cur = idx;
	cwm_connecting_set(c, 1);
	pthread_mutex_unlock(&c->lock);
	cwm_wake_others(c);
	cwm_trace_connect_begin(c, idx); /* trace.c: CONNECT line, TLS watch */
	int rc = cwm_paho_connect(c, idx);
	if (rc != MQTTASYNC_SUCCESS)
		cwm_connect_failed(c, MG_MQTT_ERR_CONNECT, -1, MQTTAsync_strerror(rc));
	pthread_mutex_lock(&c->lock);
}

/* [L] Hands paho what fits now (released around paho's calls). Returns 1
 * when it sent something. */
static int cwm_io_send(struct mg_mqtt *c)
{
	if (c->renew_needed || c->birth_needed)
		cwm_queue_renewal(c);
	struct cwm_out *batch = cwm_take_batch(c);
	if (batch == NULL)
		return 0;
	pthread_mutex_unlock(&c->lock);
	while (batch != NULL) {
		struct cwm_out *next = batch->next;
		batch->next = NULL;
		cwm_send(c, batch);
		batch = next;
	}
	pthread_mutex_lock(&c->lock);
	return 1;
}

/* [L] At stop, after the loop: disconnect, fail what is left, and the
 * final disconnect event. */
static void cwm_io_finish(struct mg_mqtt *c)
{
	int was_connected = c->state == CWM_CONNECTED;
	cwm_connecting_set(c, 0);
	char *broker = cwm_strdup(c->broker);
	const char *msg = "stopped", *b = broker != NULL ? broker : "";
	c->state = CWM_IDLE;
	atomic_store(&c->connected, 0);
	pthread_mutex_unlock(&c->lock);
	cwm_io_shutdown(c, was_connected);
	pthread_mutex_lock(&c->lock);
	cwm_fail_all(c);
	cwm_persist_drain(c);
	if (was_connected) {
		/* The line first: on_disconnect is the last handler of a stop. */
		cwm_log_locked(c, MG_MQTT_LOG_INFO, "disconnected from %s (stopped)",
		               b);
		struct cwm_event *ev =
		    c->on_disconnect != NULL
		        ? cwm_event_new(EV_DISCONNECT, strlen(msg) + strlen(b) + 2)
		        : NULL;
		if (ev != NULL) {
			size_t used = 0;
			ev->u.disc.stopped = 1;
			ev->u.disc.broker = cwm_event_str(ev, &used, b);
			ev->u.disc.message = cwm_event_str(ev, &used, msg);
			cwm_push_event(c, ev);
		}
	}
	free(broker);
}

static void *cwm_io_main(void *arg)
{
	struct mg_mqtt *c = arg;
	pthread_setname_np(pthread_self(), "mqtt-io");
	cwm_trace_join(c); /* trace.c: paho's trace, LOG_LEVEL debug */
	struct cwm_pace pace = {0, 0, 0};

	pthread_mutex_lock(&c->lock);
	for (;;) {
		int64_t now = cwm_now_ms(), wait_ms = -1;
		int idle = c->outq == NULL && c->retry == NULL && c->inflight == 0 &&
		           c->inflight0 == 0;
		if (c->stopping &&
		    (c->state != CWM_CONNECTED || idle || now >= c->stop_deadline))
			break;
		if (!c->stopping && c->state == CWM_DISCONNECTED &&
		    now >= c->reconnect_at) {
			cwm_io_connect(c);
			continue;
		}
		cwm_persist_drain(c);
		if (c->state == CWM_CONNECTED && cwm_io_send(c)) {
			cwm_worked(&pace, CWM_BATCH);
			continue;
		}
		int64_t wake_ms = cwm_wake_traffic(c, now);
		if (wake_ms == 0)
			continue; /* a wake-up to send */
		if (c->stopping)
			wait_ms = c->stop_deadline - now;
		else if (c->state == CWM_DISCONNECTED)
			wait_ms = c->reconnect_at - now;
		else
			wait_ms = wake_ms;
		cwm_wait_for_work(c, &c->io_cond, &c->io_waiting, &pace, wait_ms);
	}
	cwm_io_finish(c);
	pthread_mutex_unlock(&c->lock);
	return NULL;
}
