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

/* [L] mqtt-io, after paho took QoS 1/2 message r under packet id msgid:
 * recorded for its acknowledgement, unless that came first (c->early), or
 * the connection was lost meanwhile on a clean session (paho dropped its
 * copy: r goes again from retry). */
static void cwm_sent_qos(struct mg_mqtt *c, struct cwm_out *r, int msgid,
                         unsigned losses)
{
	for (int i = 0; i < c->nearly; i++) {
		if (c->early[i].msgid != msgid)
			continue;
		int result = c->early[i].result;
		c->early[i] = c->early[--c->nearly];
		pthread_mutex_unlock(&c->lock);
		cwm_done(c, r, result, 0, NULL, 0);
		pthread_mutex_lock(&c->lock);
		return;
	}
	c->nearly = 0; /* any other is stale: its message went before */
	if (c->losses != losses && c->cfg.clean_session) {
		pthread_mutex_unlock(&c->lock);
		cwm_done(c, r, MG_MQTT_ERR_CONNECTION_LOST, 1, NULL, 0);
		pthread_mutex_lock(&c->lock);
		return;
	}
	cwm_byid_add(c, r, msgid);
}

/* mqtt-io: paho took nothing (not connected): r goes again after the next
 * connect, and nothing more is sent until then. */
static void cwm_send_later(struct mg_mqtt *c, struct cwm_out *r)
{
	pthread_mutex_lock(&c->lock);
	c->send_blocked = 1;
	pthread_mutex_unlock(&c->lock);
	cwm_done(c, r, MG_MQTT_ERR_CONNECTION_LOST, 1, NULL, 0);
}

/* mqtt-io: a PUBLISH to paho. Called without c->lock. */
static void cwm_send_publish(struct mg_mqtt *c, struct cwm_out *r)
{
	int msgid = 0;
	if (cwm_publish_too_large(c, r)) {
		cwm_done(c, r, MG_MQTT_ERR_TOO_LARGE, 0, NULL, 0);
		return;
	}
	if (r->retain && atomic_load(&c->no_retain)) {
		cwm_done(c, r, 0x9A, 0, NULL, 0); /* "retain not supported" */
		return;
	}
	cwm_debug_send(c, r); /* trace.c: LOG_LEVEL debug */
	pthread_mutex_lock(&c->lock);
	unsigned losses = c->losses;
	r->sent_at = cwm_now_ms(); /* the poison rule: cwm_window_lost */
	pthread_mutex_unlock(&c->lock);
	int rc = cwm_eng_publish(c, r, &msgid);
	if (rc == 0) {
		r->sent = 1;
		if (r->qos == 0) {
			cwm_done(c, r, 0, 0, NULL, 0);
			return;
		}
		pthread_mutex_lock(&c->lock);
		cwm_sent_qos(c, r, msgid, losses);
		pthread_mutex_unlock(&c->lock);
	} else if (rc == MG_MQTT_ERR_NOT_CONNECTED) {
		cwm_send_later(c, r);
	} else {
		cwm_done(c, r, rc, 0, NULL, 0);
	}
}

/* mqtt-io: a SUBSCRIBE or UNSUBSCRIBE, and its acknowledgement. */
static void cwm_send_filters(struct mg_mqtt *c, struct cwm_out *r)
{
	int buf[CWM_RENEW_CHUNK];
	int *codes = r->nfilters <= CWM_RENEW_CHUNK
	                 ? buf
	                 : malloc(sizeof(int) * (size_t)r->nfilters);
	if (codes == NULL) {
		cwm_done(c, r, MG_MQTT_ERR_NOMEM, 0, NULL, 0);
		return;
	}
	cwm_debug_send(c, r); /* trace.c: LOG_LEVEL debug */
	pthread_mutex_lock(&c->lock);
	c->filters_busy = 1; /* see cwm_window_lost */
	c->filters_sent_at = cwm_now_ms();
	pthread_mutex_unlock(&c->lock);
	int rc = cwm_eng_filters(c, r, r->type == CMD_SUBSCRIBE, codes);
	pthread_mutex_lock(&c->lock);
	c->filters_busy = 0;
	pthread_mutex_unlock(&c->lock);
	if (rc == 0) {
		pthread_mutex_lock(&c->lock);
		c->progressed = 1; /* the broker answered on this connection */
		c->progress_at = cwm_now_ms();
		pthread_mutex_unlock(&c->lock);
		cwm_done(c, r, 0, 0, codes, r->nfilters);
	} else if (rc == MG_MQTT_ERR_NOT_CONNECTED) {
		cwm_send_later(c, r);
	} else {
		cwm_done(c, r, rc, 0, NULL, 0);
	}
	if (codes != buf)
		free(codes);
}

/* mqtt-io: hands one command to paho. Called without c->lock; r is already
 * in c->inpaho (it counts against the windows). */
static void cwm_send(struct mg_mqtt *c, struct cwm_out *r)
{
	if (r->noop)
		cwm_done(c, r, 0, 0, NULL, 0);
	else if (r->type == CMD_PUBLISH)
		cwm_send_publish(c, r);
	else
		cwm_send_filters(c, r);
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
		CWM_FIFO_PUSH(first, last, r, next);
	}
	if (c->birth_needed) {
		const char *t = c->cfg.birth_topic, *m = c->cfg.birth_message;
		int rc;
		struct cwm_out *r = cwm_pub_new(c, t, strlen(t), m,
		                                m != NULL ? strlen(m) : 0,
		                                c->cfg.birth_qos, c->cfg.birth_retain,
		                                NULL, &rc);
		c->birth_needed = 0;
		if (r != NULL) {
			r->internal = 1;
			r->id = cwm_next_id(c);
			CWM_FIFO_PUSH(first, last, r, next);
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

/* mqtt-io, at stop: DISCONNECT (the broker drops the will), then the
 * handle goes. */
static void cwm_io_shutdown(struct mg_mqtt *c, int was_connected)
{
	if (was_connected) {
		cwm_debug_disconnect(c); /* trace.c: LOG_LEVEL debug */
		cwm_eng_disconnect(c, 0);
	}
	cwm_eng_destroy(c); /* no paho callback runs after this */
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

/* [L] mqtt-io, before a connect: the message the broker closed the
 * connection over, again and again (cwm_window_lost), is failed to its
 * caller and never sent again. On a clean session it waits in retry; on
 * a persistent one paho holds it in its store, which a new handle takes
 * back without it (released around paho's calls). */
static void cwm_io_poison(struct mg_mqtt *c)
{
	int id = c->poison, msgid = 0;
	struct cwm_out *r;
	c->poison = 0;
	for (r = c->inpaho; r != NULL && r->id != id; r = r->inext) {
	}
	if (r != NULL && r->msgid != 0) {
		msgid = r->msgid;
		cwm_byid_take(c, msgid);
		cwm_inpaho_unlink(c, r);
	} else {
		struct cwm_out *prev = NULL;
		for (r = c->retry; r != NULL && r->id != id; r = r->next)
			prev = r;
		if (r == NULL)
			return; /* done meanwhile */
		if (prev != NULL)
			prev->next = r->next;
		else
			c->retry = r->next;
		if (c->retry_tail == r)
			c->retry_tail = prev;
		r->next = NULL;
	}
	c->poisoned++;
	cwm_log_locked(c, MG_MQTT_LOG_ERROR,
	               "the broker closed the connection %d times in a row over "
	               "message %d to '%s' (%zu bytes, qos %d): it is failed and "
	               "not sent again",
	               CWM_POISON_STRIKES, r->id, r->topic, r->len, r->qos);
	pthread_mutex_unlock(&c->lock);
	if (msgid != 0) {
		char err[256];
		if (cwm_eng_renew(c, &msgid, 1, err, sizeof(err)) != 0)
			cwm_log(c, MG_MQTT_LOG_ERROR, "%s", err);
		pthread_mutex_lock(&c->lock);
		c->renewals++;
		pthread_mutex_unlock(&c->lock);
	}
	cwm_done(c, r, MG_MQTT_ERR_POISON, 0, NULL, 0);
	pthread_mutex_lock(&c->lock);
}

/* [L] Starts the next connection attempt and waits for its result
 * (released around paho's call). */
static void cwm_io_connect(struct mg_mqtt *c)
{
	struct cwm_connack a;
	if (c->poison != 0)
		cwm_io_poison(c);
	if (c->paho == NULL) {
		char err[256];
		pthread_mutex_unlock(&c->lock);
		int rc = cwm_eng_create(c, err, sizeof(err));
		pthread_mutex_lock(&c->lock);
		if (rc != 0) {
			cwm_log_locked(c, MG_MQTT_LOG_ERROR, "%s", err);
			c->reconnect_at = cwm_now_ms() + 1000; /* later */
			return;
		}
	}
	c->state = CWM_CONNECTING;
	c->lost_early = 0;
	if (c->uri_try == 0)
		c->attempt++; /* one attempt: a round over BROKER_URL */
	c->tls_error = 0;
	int idx = (c->uri_base + c->uri_try) % c->cfg.nuris;
	c->uri_cur = idx;
	pthread_mutex_unlock(&c->lock);
	cwm_trace_connect_begin(c, idx); /* trace.c: CONNECT line, watches */
	cwm_eng_connect(c, idx, &a);
	cwm_connect_result(c, &a);
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

/* [L] Flow control (cwm_flow_check): while the handlers are behind,
 * mqtt-io closes the connection (DISCONNECT: the broker keeps the will
 * and, on a persistent session, what arrives meanwhile) and does not
 * reconnect until they caught up. Released around paho's call. */
static void cwm_io_pause(struct mg_mqtt *c)
{
	c->state = CWM_DISCONNECTED;
	atomic_store(&c->connected, 0);
	cwm_conn_gone_locked(c, "paused: the handlers are behind (QUEUE_SIZE "
	                        "or QUEUE_BYTES reached)", 0);
	pthread_mutex_unlock(&c->lock);
	cwm_eng_disconnect(c, 0);
	pthread_mutex_lock(&c->lock);
}

/* [L] mqtt-io, connected: the ms until the oldest QoS 1/2 message in
 * flight has waited CWM_ACK_TIMEOUT_MS for its acknowledgement on this
 * connection (0: it has), or -1 when none is in flight. */
static int64_t cwm_ack_due(struct mg_mqtt *c, int64_t now)
{
	struct cwm_out *o = c->inflight > 0 ? cwm_oldest_in_flight(c) : NULL;
	if (o == NULL)
		return -1;
	int64_t since = o->sent_at > c->connected_at ? o->sent_at
	                                             : c->connected_at;
	int64_t left = since + CWM_ACK_TIMEOUT_MS - now;
	return left > 0 ? left : 0;
}

/* [L] A message waited CWM_ACK_TIMEOUT_MS for its acknowledgement on a
 * connection that is otherwise alive. MQTT sends a message again only
 * after a reconnect, and paho's client resends what it holds only at a
 * connect (and does not take up a resend a full socket interrupted), so
 * the connection is closed and made again at once: paho then sends what
 * it holds (a clean session: the library, from its copies). Released
 * around paho's call. */
static void cwm_io_stalled(struct mg_mqtt *c)
{
	struct cwm_out *o = cwm_oldest_in_flight(c);
	c->ack_timeouts++;
	cwm_log_locked(c, MG_MQTT_LOG_WARNING,
	               "no acknowledgement for message %d to '%s' in %d s: the "
	               "connection is made again, so that it is sent again",
	               o != NULL ? o->id : 0, o != NULL ? o->topic : "",
	               CWM_ACK_TIMEOUT_MS / 1000);
	c->state = CWM_DISCONNECTED;
	atomic_store(&c->connected, 0);
	cwm_conn_gone_locked(c, "no acknowledgement in time", 0);
	pthread_mutex_unlock(&c->lock);
	cwm_eng_disconnect(c, 0);
	pthread_mutex_lock(&c->lock);
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
		if (c->paused && c->state == CWM_CONNECTED) {
			cwm_io_pause(c);
			continue;
		}
		if (!c->stopping && !c->paused && c->state == CWM_DISCONNECTED &&
		    now >= c->reconnect_at) {
			cwm_io_connect(c);
			continue;
		}
		cwm_persist_drain(c);
		if (c->state == CWM_CONNECTED && cwm_io_send(c)) {
			cwm_worked(&pace, CWM_BATCH);
			continue;
		}
		if (c->stopping)
			wait_ms = c->stop_deadline - now;
		else if (c->state == CWM_DISCONNECTED && !c->paused)
			wait_ms = c->reconnect_at - now;
		else if (c->state == CWM_CONNECTED &&
		         (wait_ms = cwm_ack_due(c, now)) == 0) {
			cwm_io_stalled(c);
			continue;
		}
		cwm_wait_for_work(c, &c->io_cond, &c->io_waiting, &pace, wait_ms);
	}
	cwm_io_finish(c);
	pthread_mutex_unlock(&c->lock);
	return NULL;
}
