/*
 * The event queue and the mqtt-dispatch thread: paho's message callback
 * queues, mqtt-dispatch runs every handler in arrival order.
 */
#include "internal.h"

static const struct mg_mqtt_props cwm_no_props; /* a message without any */

/* [L] Appends an event and wakes mqtt-dispatch. */
static void cwm_push_event(struct mg_mqtt *c, struct cwm_event *ev)
{
	CWM_FIFO_PUSH(c->evq, c->evq_tail, ev, next);
	c->ev_pushed++;
	if (c->dispatch_waiting == CWM_IDLE_WAIT)
		pthread_cond_signal(&c->ev_cond);
}

static struct cwm_event *cwm_event_new(enum cwm_evtype type, size_t extra)
{
	struct cwm_event *ev = calloc(1, sizeof(*ev) + extra);
	if (ev != NULL)
		ev->type = type;
	return ev;
}

/* Copies s into ev->data at *used; returns the copy. */
static char *cwm_event_str(struct cwm_event *ev, size_t *used, const char *s)
{
	size_t n = strlen(s);
	char *p = ev->data + *used;
	memcpy(p, s, n + 1);
	*used += n + 1;
	return p;
}

static int cwm_req_arrived(struct mg_mqtt *c, const char *topic, size_t tl,
                           MQTTClient_message *m);

/* [L] Logs the messages dropped for a full queue since the last such line,
 * at most once a second. */
static void cwm_log_drops(struct mg_mqtt *c)
{
	int64_t now = cwm_now_ms();
	if (c->drops_unlogged == 0 || now - c->last_drop_log < 1000)
		return;
	cwm_log_locked(c, MG_MQTT_LOG_WARNING,
	               "dispatch queue full (QUEUE_SIZE %d): dropped %llu QoS 0 "
	               "message(s), %llu in all",
	               c->cfg.queue_size, (unsigned long long)c->drops_unlogged,
	               (unsigned long long)c->dropped_queue_full);
	c->last_drop_log = now;
	c->drops_unlogged = 0;
}

/* [L] The same for QoS 1/2 messages kept beyond QUEUE_SIZE. */
static void cwm_log_overflow(struct mg_mqtt *c)
{
	int64_t now = cwm_now_ms();
	if (now - c->last_overflow_log < 1000)
		return;
	cwm_log_locked(c, MG_MQTT_LOG_WARNING,
	               "dispatch queue full (QUEUE_SIZE %d): %d message(s) wait "
	               "for the handlers; QoS 1/2 ones are kept (the broker has "
	               "their acknowledgement), %llu kept beyond the bound in all",
	               c->cfg.queue_size, c->ev_msgs,
	               (unsigned long long)c->queue_overflow);
	c->last_overflow_log = now;
}

/* [L] An event slot for a message: from the client's pool, which grows in
 * chunks up to QUEUE_SIZE slots and is kept until the stop (no allocation
 * per message once it has grown); beyond QUEUE_SIZE (over: a QoS 1/2
 * message kept while the queue is full), from the heap. NULL: out of
 * memory. */
static struct cwm_event *cwm_slot_take(struct mg_mqtt *c, int over)
{
	struct cwm_event *ev = c->slot_free;
	if (ev == NULL && !over && c->nslots < c->cfg.queue_size &&
	    c->nchunks < CWM_SLOT_CHUNKS) {
		int n = c->cfg.queue_size - c->nslots;
		int want = c->nslots < CWM_SLOT_CHUNK ? CWM_SLOT_CHUNK : c->nslots;
		n = n < want ? n : want; /* doubling: a few chunks in all */
		struct cwm_event *chunk = calloc((size_t)n, sizeof(*chunk));
		if (chunk != NULL) {
			c->chunks[c->nchunks++] = chunk;
			c->nslots += n;
			for (int i = n - 1; i >= 0; i--) {
				chunk[i].pooled = 1;
				chunk[i].next = c->slot_free;
				c->slot_free = &chunk[i];
			}
			ev = c->slot_free;
		}
	}
	if (ev != NULL) {
		c->slot_free = ev->next;
		return ev;
	}
	ev = malloc(sizeof(*ev));
	if (ev != NULL)
		ev->pooled = 0;
	return ev;
}

/* [L] Gives slots back (a batch, linked by next), or frees heap ones. */
static void cwm_slots_put(struct mg_mqtt *c, struct cwm_event *list)
{
	while (list != NULL) {
		struct cwm_event *next = list->next;
		if (list->pooled) {
			list->next = c->slot_free;
			c->slot_free = list;
		} else {
			free(list);
		}
		list = next;
	}
}

/* The message as handlers see it (props: converted into *props, *mem to
 * free after). */
static void cwm_message_view(MQTTClient_message *m, const char *topic,
                             size_t tl, struct mg_mqtt_message *msg,
                             struct mg_mqtt_props *props, void **mem)
{
	msg->topic = topic;
	msg->topic_len = tl;
	msg->payload = m->payload;
	msg->payload_len = m->payloadlen > 0 ? (size_t)m->payloadlen : 0;
	msg->qos = m->qos;
	msg->retain = m->retained;
	msg->dup = m->dup;
	msg->packet_id = m->qos > 0 ? m->msgid : 0;
	msg->props = &cwm_no_props;
	msg->params = NULL;
	*mem = NULL;
	if (m->properties.count > 0) {
		cwm_props_from_paho(&m->properties, props, mem);
		msg->props = props;
	}
}

/* paho's receive thread: runs the inline handlers matching the message
 * (*hit: some did). Returns 1 when the message is done with them: no
 * queued handler, catch-all or bridge could want it. */
static int cwm_inline_run(struct mg_mqtt *c, const char *topic, size_t tl,
                          MQTTClient_message *m, int *hit)
{
	if (cwm_tree_match(&c->itree, topic, tl, &c->icur, &c->inxt,
	                   &c->ihits) != 0 ||
	    c->ihits.n == 0)
		return 0;
	struct mg_mqtt_props props;
	struct mg_mqtt_message msg;
	void *mem;
	cwm_message_view(m, topic, tl, &msg, &props, &mem);
	for (size_t i = 0; i < c->ihits.n; i++) {
		const struct cwm_handler *h = c->ihits.v[i];
		msg.params = h->params;
		h->fn(c, &msg, h->ud);
	}
	free(mem);
	*hit = 1;
	atomic_fetch_add(&c->inline_handled, 1);
	return c->nhandlers == 0 && c->bridge == NULL;
}

/* [L] Flow control: the messages waiting for the handlers passed
 * QUEUE_SIZE or QUEUE_BYTES. QoS 0 ones are dropped from then on (at most
 * once is what they promised); nothing acknowledged is: at a QoS 1/2 one
 * (kept beyond the bound) mqtt-io pauses the connection (cwm_io_pause)
 * until mqtt-dispatch brought the queue under half of both bounds
 * (cwm_flow_check), so that the broker keeps the rest (a persistent
 * session keeps what is published meanwhile; a clean one does not). */
static int cwm_queue_full(const struct mg_mqtt *c)
{
	return c->ev_msgs >= c->cfg.queue_size ||
	       c->ev_bytes >= (size_t)c->cfg.queue_bytes;
}

static void cwm_flow_pause(struct mg_mqtt *c)
{
	if (c->paused || c->stopping)
		return;
	c->paused = 1;
	c->pauses++;
	c->paused_at = cwm_now_ms();
	if (c->io_waiting != CWM_RUNNING)
		pthread_cond_signal(&c->io_cond);
}

/* [L] mqtt-dispatch, after a batch: the pause ends when the handlers have
 * caught up. */
static void cwm_flow_check(struct mg_mqtt *c)
{
	if (!c->paused || c->ev_msgs > c->cfg.queue_size / 2 ||
	    c->ev_bytes > (size_t)c->cfg.queue_bytes / 2)
		return;
	c->paused = 0;
	c->paused_ms += cwm_now_ms() - c->paused_at;
	c->reconnect_at = cwm_now_ms();
	if (c->io_waiting != CWM_RUNNING)
		pthread_cond_signal(&c->io_cond);
}

/* paho's receive thread: nothing here waits. A full queue drops a QoS 0
 * message at once; a QoS 1 or 2 one (paho has acknowledged it to the
 * broker already) is kept, and the connection pauses (cwm_flow_pause). */
static int cwm_on_message(void *ctx, char *topic, int topic_len,
                          MQTTClient_message *m)
{
	struct mg_mqtt *c = ctx;
	size_t tl = topic_len > 0 ? (size_t)topic_len : strlen(topic);
	cwm_debug_received(c, topic, tl, m); /* trace.c: LOG_LEVEL debug */
	if (cwm_req_arrived(c, topic, tl, m)) {
		cwm_eng_free_message(m, topic);
		return 1;
	}
	int hit = 0;
	if (c->ninline > 0 && cwm_inline_run(c, topic, tl, m, &hit)) {
		cwm_eng_free_message(m, topic);
		return 1;
	}

	size_t bytes = sizeof(struct cwm_event) + tl +
	               (m->payloadlen > 0 ? (size_t)m->payloadlen : 0);
	pthread_mutex_lock(&c->lock);
	c->progressed = 1; /* the connection carries traffic (cwm_window_lost) */
	c->progress_at = cwm_now_ms();
	int full = cwm_queue_full(c);
	struct cwm_event *ev = NULL;
	if (!full || m->qos > 0)
		ev = cwm_slot_take(c, full);
	if (ev == NULL) {
		c->dropped_queue_full++;
		c->drops_unlogged++;
		cwm_log_drops(c);
		pthread_mutex_unlock(&c->lock);
		cwm_eng_free_message(m, topic);
		return 1;
	}
	if (full) {
		c->queue_overflow++;
		cwm_log_overflow(c);
	}
	c->ev_msgs++;
	c->ev_bytes += bytes;
	c->received++;
	if (m->qos > 0 && cwm_queue_full(c))
		cwm_flow_pause(c);
	ev->type = EV_MESSAGE;
	ev->u.msg.m = m;
	ev->u.msg.topic = topic;
	ev->u.msg.topic_len = tl;
	ev->u.msg.inline_hit = hit;
	ev->u.msg.bytes = bytes;
	cwm_push_event(c, ev);
	pthread_mutex_unlock(&c->lock);
	return 1;
}

/* Runs the handlers of one message: every matching topic handler in
 * registration order, else the catch-all; then the bridge's browsers. */
static void cwm_dispatch_handlers(struct mg_mqtt *c,
                                  const struct mg_mqtt_message *msg,
                                  int inline_hit)
{
	if (cwm_tree_match(&c->tree, msg->topic, msg->topic_len, &c->cur, &c->nxt,
	                   &c->hits) != 0) {
		cwm_log(c, MG_MQTT_LOG_ERROR, "out of memory matching '%s'", msg->topic);
		c->hits.n = 0;
	}
	if (c->hits.n == 0) {
		if (c->on_message != NULL && !inline_hit)
			c->on_message(c, msg, c->on_message_ud);
	} else {
		struct mg_mqtt_message m = *msg;
		for (size_t i = 0; i < c->hits.n; i++) {
			const struct cwm_handler *h = c->hits.v[i];
			m.params = h->params;
			h->fn(c, &m, h->ud);
		}
	}
	if (c->bridge != NULL)
		cwm_bridge_deliver(c->bridge, msg);
}

static void cwm_dispatch_message(struct mg_mqtt *c, struct cwm_event *ev)
{
	MQTTClient_message *m = ev->u.msg.m;
	struct mg_mqtt_props props;
	struct mg_mqtt_message msg;
	void *mem;

	cwm_message_view(m, ev->u.msg.topic, ev->u.msg.topic_len, &msg, &props,
	                 &mem);
	cwm_dispatch_handlers(c, &msg, ev->u.msg.inline_hit);
	free(mem);
	cwm_eng_free_message(m, ev->u.msg.topic);
}

/* Runs the handler of one event; frees it unless it is a message slot
 * (those go back to the pool in batches, by the caller). */
static void cwm_dispatch(struct mg_mqtt *c, struct cwm_event *ev)
{
	switch (ev->type) {
	case EV_MESSAGE:
		cwm_dispatch_message(c, ev);
		break;
	case EV_CONNECT:
		if (c->on_connect != NULL)
			c->on_connect(c, &ev->u.conn, c->on_connect_ud);
		if (c->bridge != NULL && ev->u.conn.connected)
			cwm_bridge_state(c->bridge, 1, ev->u.conn.broker);
		break;
	case EV_DISCONNECT:
		if (c->on_disconnect != NULL)
			c->on_disconnect(c, &ev->u.disc, c->on_disconnect_ud);
		if (c->bridge != NULL && !ev->u.disc.stopped)
			cwm_bridge_state(c->bridge, 0, ev->u.disc.broker);
		break;
	case EV_PUBACK:
		if (c->on_publish != NULL)
			c->on_publish(c, ev->u.ack.id, ev->u.ack.result, c->on_publish_ud);
		break;
	case EV_SUBACK:
	case EV_UNSUBACK: {
		mg_mqtt_ack_handler h =
		    ev->type == EV_SUBACK ? c->on_subscribe : c->on_unsubscribe;
		void *ud = ev->type == EV_SUBACK ? c->on_subscribe_ud
		                                 : c->on_unsubscribe_ud;
		if (h != NULL)
			h(c, ev->u.ack.id, ev->u.ack.result, ev->u.ack.codes,
			  ev->u.ack.count, ud);
		break;
	}
	case EV_LOG:
		cwm_log_event(c, ev); /* log.c: file, handler or stderr */
		break;
	}
	if (ev->type != EV_MESSAGE)
		free(ev);
}

/* Waits until mqtt-dispatch has run every event queued before the call
 * (not from mqtt-dispatch itself). */
static void cwm_dispatch_flush(struct mg_mqtt *c)
{
	pthread_mutex_lock(&c->lock);
	uint64_t upto = c->ev_pushed;
	c->flush_waiting++;
	while (c->ev_done < upto && c->dispatch_started && !c->dispatch_exit)
		pthread_cond_wait(&c->state_cond, &c->lock);
	c->flush_waiting--;
	pthread_mutex_unlock(&c->lock);
}

/* Frees an event without running it (a client that never ran). */
static void cwm_event_discard(struct cwm_event *ev)
{
	if (ev->type == EV_MESSAGE) {
		cwm_eng_free_message(ev->u.msg.m, ev->u.msg.topic);
	}
	if (!ev->pooled)
		free(ev);
}

static void *cwm_dispatch_main(void *arg)
{
	struct mg_mqtt *c = arg;
	pthread_setname_np(pthread_self(), "mqtt-dispatch");

	struct cwm_pace pace = {0, 0, 0};
	pthread_mutex_lock(&c->lock);
	for (;;) {
		while (c->evq == NULL && !c->dispatch_exit)
			cwm_wait_for_work(c, &c->ev_cond, &c->dispatch_waiting, &pace, -1);
		if (c->evq == NULL)
			break;
		struct cwm_event *batch = c->evq;
		c->evq = c->evq_tail = NULL;
		pthread_mutex_unlock(&c->lock);

		/* Messages of the batch keep counting against QUEUE_SIZE until they
		 * are handled, so that the bound covers all of them. */
		int nmsg = 0;
		size_t nbytes = 0;
		uint64_t nev = 0;
		struct cwm_event *used = NULL;
		while (batch != NULL) {
			struct cwm_event *next = batch->next;
			int is_msg = batch->type == EV_MESSAGE;
			if (is_msg)
				nbytes += batch->u.msg.bytes;
			cwm_dispatch(c, batch);
			if (is_msg) {
				batch->next = used; /* message slots: back in one go */
				used = batch;
				nmsg++;
			}
			batch = next;
			nev++;
		}

		pthread_mutex_lock(&c->lock);
		cwm_slots_put(c, used);
		cwm_worked(&pace, (int)nev);
		c->ev_msgs -= nmsg;
		c->ev_bytes -= nbytes;
		c->ev_done += nev;
		cwm_flow_check(c);
		if (c->flush_waiting)
			pthread_cond_broadcast(&c->state_cond);
		cwm_log_drops(c);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}
