/*
 * Command completion: a publish, subscribe or unsubscribe done or failed
 * (mqtt-io, or paho's receive thread for a QoS 1/2 acknowledgement); the
 * acknowledgement becomes an event.
 */
#include "internal.h"

/* [L] Given back by paho (the connection dropped): 1 when r goes to retry,
 * to be sent again after the reconnect. User commands (and SUBSCRIBEs
 * renewal skips, as their filters are counted) go again; renewal and birth
 * are made anew by every connect. Nothing is given up because connections
 * die: only a broker's refusal (a reason code, an announced maximum) fails
 * a message. A QoS 0 message paho had taken is not sent again (*result
 * set): it may have left in the dying socket, and QoS 0 is at most once. */
static int cwm_done_requeue(struct mg_mqtt *c, struct cwm_out *r, int *result)
{
	if (!cwm_cmd_goes_again(r))
		return 0;
	if (r->type == CMD_PUBLISH && r->qos == 0 && r->sent) {
		*result = MG_MQTT_ERR_CONNECTION_LOST;
		return 0;
	}
	r->sent = 0;
	cwm_retry_insert(c, r);
	return 1;
}

/* [L] A publish done: counters, its file, the on_publish event. retry: an
 * internal one paho gave back (not logged: the next connect makes it
 * anew). */
static struct cwm_event *cwm_done_publish(struct mg_mqtt *c,
                                          struct cwm_out *r, int result,
                                          int retry)
{
	struct cwm_event *ev = NULL;
	int ok = result == 0 || (result > 0 && result < 0x80);
	if (r->internal) {
		if (!ok && !retry)
			cwm_log_locked(c, MG_MQTT_LOG_WARNING,
			               "birth message to '%s' not sent: %s (%d)", r->topic,
			               result < 0 ? mg_mqtt_strerror(result) : "refused",
			               result);
		return NULL;
	}
	c->unfinished--;
	if (ok)
		c->published++;
	else
		c->publish_failed++;
	/* Unsent at stop: the file stays, for the next start. */
	if (result != MG_MQTT_ERR_STOPPED)
		cwm_persist_remove(c, r);
	if (c->on_publish != NULL && !r->restored &&
	    (ev = cwm_event_new(EV_PUBACK, 0)) != NULL) {
		ev->u.ack.id = r->id;
		ev->u.ack.result = result;
	}
	return ev;
}

/* [L] Filter i of a SUBSCRIBE is done: its table entry (freed when it
 * was forgotten meanwhile and this was the last command borrowing its
 * string, which r then copies for the log line). The entry, or NULL. */
static struct cwm_sub *cwm_done_sub_entry(struct mg_mqtt *c, struct cwm_out *r,
                                          int i)
{
	struct cwm_sub *s =
	    cwm_map_get(&c->subs, r->filters[i], strlen(r->filters[i]));
	if (s != NULL && (r->flags[i] & CMD_COUNTED) && s->pending > 0)
		s->pending--;
	if (s == NULL || !s->gone)
		return s;
	if (s->pending == 0) {
		if (r->flags[i] & CMD_BORROWED) {
			r->flags[i] &= (unsigned char)~CMD_BORROWED;
			char *copy = cwm_strdup(r->filters[i]);
			if (r->wire[i] == r->filters[i])
				r->wire[i] = copy;
			r->filters[i] = copy != NULL ? copy : (char *)"";
			if (copy == NULL)
				r->flags[i] |= CMD_BORROWED; /* never free "" */
		}
		cwm_map_del(&c->subs, s->filter, strlen(s->filter));
		cwm_sub_free(s);
	}
	return NULL;
}

/* [L] A SUBSCRIBE done: the granted QoS of each filter, and one
 * acknowledgement per caller with the code of its filter. */
static void cwm_done_subscribe(struct mg_mqtt *c, struct cwm_out *r,
                               int result, const int *codes, int ncodes)
{
	for (int i = 0; i < r->nfilters; i++) {
		struct cwm_sub *s = cwm_done_sub_entry(c, r, i);
		int has = result == 0 && i < ncodes;
		if (s != NULL && has)
			s->granted = codes[i];
		if (has && codes[i] >= 0x80)
			cwm_log_locked(c, MG_MQTT_LOG_WARNING,
			               "the broker refused the subscription to '%s' "
			               "(code 0x%02x)",
			               r->filters[i], (unsigned)codes[i]);
		struct cwm_event *e;
		if (r->ids[i] > 0 && c->on_subscribe != NULL &&
		    (e = cwm_event_new(EV_SUBACK, sizeof(int))) != NULL) {
			e->u.ack.id = r->ids[i];
			e->u.ack.result = has || result != 0 ? result : MG_MQTT_ERR_PAHO;
			e->u.ack.count = has ? 1 : 0;
			e->u.ack.codes = has ? (int *)(void *)e->data : NULL;
			if (has)
				memcpy(e->data, &codes[i], sizeof(int));
			cwm_push_event(c, e);
		}
	}
}

/* [L] An UNSUBSCRIBE done: the on_unsubscribe event (codes NULL: all 0). */
static struct cwm_event *cwm_done_unsubscribe(struct mg_mqtt *c,
                                              const struct cwm_out *r,
                                              int result, const int *codes,
                                              int ncodes)
{
	struct cwm_event *ev;
	if (r->internal || c->on_unsubscribe == NULL)
		return NULL;
	if (result == 0 && codes == NULL)
		ncodes = r->nfilters;
	ev = cwm_event_new(EV_UNSUBACK, sizeof(int) * (size_t)ncodes);
	if (ev == NULL)
		return NULL;
	ev->u.ack.id = r->id;
	ev->u.ack.result = result;
	ev->u.ack.count = result == 0 ? ncodes : 0;
	ev->u.ack.codes = ev->u.ack.count > 0 ? (int *)(void *)ev->data : NULL;
	if (ev->u.ack.count > 0 && codes != NULL)
		memcpy(ev->data, codes, sizeof(int) * (size_t)ncodes);
	return ev; /* event_new zeroed data: all codes 0 without codes */
}

/* Reports command r done. result: 0, an MQTT 5 reason code, or a negative
 * MG_MQTT_ERR_*. retry: paho gave it back because the connection dropped
 * (see cwm_done_requeue). codes: SUBACK / UNSUBACK codes. Any thread,
 * without c->lock; frees r unless it goes to retry. */
static void cwm_done(struct mg_mqtt *c, struct cwm_out *r, int result,
                     int retry, const int *codes, int ncodes)
{
	struct cwm_event *ev = NULL;

	cwm_debug_done(c, r, result, retry, codes, ncodes); /* trace.c */
	pthread_mutex_lock(&c->lock);
	if (r->in_paho)
		cwm_inpaho_unlink(c, r);
	/* mqtt-io needs to hear of a completion only when it frees room
	 * something queued waits for, or when the stop waits for the last. */
	if (c->io_waiting == CWM_IDLE_WAIT &&
	    (c->outq != NULL || c->retry != NULL || c->stopping))
		pthread_cond_signal(&c->io_cond);
	if (retry && cwm_done_requeue(c, r, &result)) {
		pthread_mutex_unlock(&c->lock);
		return;
	}
	if (result >= 0)
		c->send_blocked = 0;
	if (r->type == CMD_PUBLISH)
		ev = cwm_done_publish(c, r, result, retry && r->internal);
	else if (retry)
		ev = NULL; /* internal (renewal): the next connect makes it anew */
	else if (r->type == CMD_SUBSCRIBE)
		cwm_done_subscribe(c, r, result, codes, ncodes);
	else
		ev = cwm_done_unsubscribe(c, r, result, codes, ncodes);
	if (ev != NULL)
		cwm_push_event(c, ev);
	pthread_mutex_unlock(&c->lock);
	if (r->type == CMD_PUBLISH && !r->internal &&
	    (result >= 0x80 || (result < 0 && result != MG_MQTT_ERR_STOPPED)))
		cwm_req_failed(c, r->id, result); /* a request waiting for it */
	cwm_out_free(r);
}

/* [L] QoS 1/2 messages in paho, by packet id. */
static void cwm_byid_add(struct mg_mqtt *c, struct cwm_out *r, int msgid)
{
	struct cwm_out **b = &c->byid[(unsigned)msgid % CWM_ID_BUCKETS];
	r->msgid = msgid;
	r->idnext = *b;
	*b = r;
}

static struct cwm_out *cwm_byid_take(struct mg_mqtt *c, int msgid)
{
	struct cwm_out **pp = &c->byid[(unsigned)msgid % CWM_ID_BUCKETS];
	for (; *pp != NULL; pp = &(*pp)->idnext)
		if ((*pp)->msgid == msgid) {
			struct cwm_out *r = *pp;
			*pp = r->idnext;
			r->idnext = NULL;
			r->msgid = 0;
			return r;
		}
	return NULL;
}

/* paho's receive thread, holding paho's lock: the broker acknowledged the
 * QoS 1/2 message under packet id msgid (result: 0, or an MQTT 5 reason
 * code). One mqtt-io has not recorded yet waits in c->early. */
static void cwm_pub_acked(struct mg_mqtt *c, int msgid, int result)
{
	pthread_mutex_lock(&c->lock);
	struct cwm_out *r = cwm_byid_take(c, msgid);
	if (r == NULL) {
		int n = c->nearly < (int)(sizeof(c->early) / sizeof(c->early[0]))
		            ? c->nearly++
		            : 0;
		c->early[n].msgid = msgid;
		c->early[n].result = result;
	} else {
		cwm_window_acked(c);
	}
	pthread_mutex_unlock(&c->lock);
	if (r != NULL)
		cwm_done(c, r, result, 0, NULL, 0);
}
