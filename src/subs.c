/*
 * The subscription table (struct cwm_sub), remembered for renewal, shared
 * between the application and the bridge's browsers, and the
 * subscribe/unsubscribe API.
 */
#include "internal.h"

/* [L] Queues filter for a SUBSCRIBE: it joins the unsent SUBSCRIBE at the
 * tail of outq when there is one with room (10,000 subscriptions made in a
 * loop then cost one request per 128, not one each, and order with
 * publishes and unsubscribes is kept). Returns 0 or MG_MQTT_ERR_NOMEM. */
static int cwm_queue_subscribe(struct mg_mqtt *c, const char *filter, int qos,
                               int id, int counted)
{
	struct cwm_out *t = c->outq_tail;
	if (t != NULL && t->type == CMD_SUBSCRIBE && t->appendable &&
	    t->nfilters < CWM_RENEW_CHUNK &&
	    cwm_cmd_add(c, t, filter, qos, id, counted) == 0) {
		if (c->io_waiting == CWM_IDLE_WAIT && c->state == CWM_CONNECTED)
			pthread_cond_signal(&c->io_cond);
		return 0;
	}
	struct cwm_out *r = cwm_cmd_new(c, CMD_SUBSCRIBE);
	if (r != NULL)
		r->appendable = 1;
	if (r == NULL || cwm_cmd_add(c, r, filter, qos, id, counted) != 0) {
		cwm_out_free(r);
		return MG_MQTT_ERR_NOMEM;
	}
	r->internal = id == 0;
	r->id = id != 0 ? id : cwm_next_id(c);
	cwm_enqueue(c, r);
	return 0;
}

/* [L] Appends s to the subscription list (subscription order). */
static void cwm_sub_link(struct mg_mqtt *c, struct cwm_sub *s)
{
	CWM_DL_APPEND(c->sub_head, c->sub_tail, s, prev, next);
}

/* At start, before the threads: the SUBSCRIBE option's filters, renewed
 * by the first connect like every other subscription. */
static int cwm_subs_from_config(struct mg_mqtt *c)
{
	const struct cwm_settings *cfg = &c->cfg;
	for (int i = 0; i < cfg->nsubs; i++) {
		struct cwm_sub *sub = calloc(1, sizeof(*sub));
		const char *f = cfg->sub_filters[i];
		if (sub == NULL ||
		    cwm_map_put_key(&c->subs, f, strlen(f), sub, &sub->filter) != 0) {
			free(sub);
			return MG_MQTT_ERR_NOMEM;
		}
		sub->qos = cfg->sub_qos[i];
		sub->granted = -1;
		sub->app = 1;
		cwm_sub_link(c, sub);
	}
	return 0;
}

/* [L] The table entry for filter, made if missing (*n is a spare the
 * caller allocated outside the lock; consumed when used). */
static struct cwm_sub *cwm_sub_get(struct mg_mqtt *c, const char *filter,
                                   struct cwm_sub **n, int *made)
{
	size_t fl = strlen(filter);
	struct cwm_sub *s = cwm_map_get(&c->subs, filter, fl);
	*made = 0;
	if (s != NULL && s->gone) {
		s->gone = 0; /* subscribed again before the old commands were done */
	} else if (s == NULL && *n != NULL &&
	           cwm_map_put_key(&c->subs, filter, fl, *n, &(*n)->filter) == 0) {
		s = *n;
		*n = NULL;
	} else {
		return s;
	}
	s->granted = -1;
	cwm_sub_link(c, s);
	*made = 1;
	return s;
}

/* A filter of the API, normalized (a malloc()ed copy in *plain) and
 * checked against MAX_TOPIC_LEVELS. Returns 0 or a negative code. */
static int cwm_filter_plain(struct mg_mqtt *c, const char *filter,
                            char **plain)
{
	int rc = cwm_filter_normalize(filter, plain, NULL);
	if (rc == 0 && (rc = cwm_levels_check(c, *plain, 1)) != 0) {
		free(*plain);
		*plain = NULL;
	}
	return rc;
}

int mg_mqtt_subscribe(struct mg_mqtt *c, const char *filter, int qos)
{
	int rc, made;
	char *plain;
	if ((rc = cwm_ops_check(c)) != 0)
		return rc;
	if (filter == NULL)
		return MG_MQTT_ERR_INVALID;
	if (qos < 0 || qos > 2)
		return MG_MQTT_ERR_QOS;
	if ((rc = cwm_filter_plain(c, filter, &plain)) != 0)
		return rc;
	filter = plain;
	struct cwm_sub *n = calloc(1, sizeof(*n));

	pthread_mutex_lock(&c->lock);
	struct cwm_sub *s = c->stopping ? NULL : cwm_sub_get(c, filter, &n, &made);
	if (c->stopping) {
		rc = MG_MQTT_ERR_STOPPED;
	} else if (s == NULL) {
		rc = MG_MQTT_ERR_NOMEM;
	} else {
		int id = cwm_next_id(c);
		/* The broker gets the highest QoS of the holders: the app's latest
		 * and the browsers'. */
		int eff = s->brefs > 0 && s->bqos > qos ? s->bqos : qos;
		if ((rc = cwm_queue_subscribe(c, s->filter, eff, id, 1)) != 0) {
			if (made)
				cwm_sub_forget(c, s);
		} else {
			s->qos = eff;
			s->granted = -1;
			s->pending++;
			s->app = 1;
			rc = id;
		}
	}
	pthread_mutex_unlock(&c->lock);
	free(n);
	free(plain);
	return rc;
}

static void cwm_sub_free(struct cwm_sub *s)
{
	free(s);
}

/* [L] Forgets a subscription. While SUBSCRIBE commands still borrow its
 * filter (s->pending), the map entry that holds the string stays, marked
 * gone: off the list, invisible to the API, deleted by cwm_done when the
 * last of them is done (or revived by a new subscribe). */
static void cwm_sub_forget(struct mg_mqtt *c, struct cwm_sub *s)
{
	CWM_DL_UNLINK(c->sub_head, c->sub_tail, s, prev, next);
	s->prev = s->next = NULL;
	s->app = 0;
	s->brefs = 0;
	s->sys = 0;
	if (s->pending > 0) {
		s->gone = 1;
		return;
	}
	cwm_map_del(&c->subs, s->filter, strlen(s->filter)); /* frees s->filter */
	cwm_sub_free(s);
}

int mg_mqtt_unsubscribe(struct mg_mqtt *c, const char *filter)
{
	int rc;
	if ((rc = cwm_ops_check(c)) != 0)
		return rc;
	if (filter == NULL)
		return MG_MQTT_ERR_INVALID;
	char *plain;
	if ((rc = cwm_filter_plain(c, filter, &plain)) != 0)
		return rc;
	filter = plain;
	size_t fl = strlen(filter);
	struct cwm_out *r = cwm_cmd_filters(c, CMD_UNSUBSCRIBE, &filter, NULL, 1);
	if (r == NULL) {
		free(plain);
		return MG_MQTT_ERR_NOMEM;
	}
	pthread_mutex_lock(&c->lock);
	struct cwm_sub *s = cwm_map_get(&c->subs, filter, fl);
	if (c->stopping)
		rc = MG_MQTT_ERR_STOPPED;
	else if (s == NULL || !s->app)
		rc = MG_MQTT_ERR_NOT_FOUND;
	else {
		/* Browsers still hold it: the broker keeps it, the app lets go. */
		if (s->brefs > 0) {
			s->app = 0;
			r->noop = 1;
		} else {
			cwm_sub_forget(c, s);
		}
		rc = r->id = cwm_next_id(c);
		cwm_enqueue(c, r);
		r = NULL;
	}
	pthread_mutex_unlock(&c->lock);
	cwm_out_free(r);
	free(plain);
	return rc;
}

int mg_mqtt_unsubscribe_all(struct mg_mqtt *c)
{
	int rc;
	if ((rc = cwm_ops_check(c)) != 0)
		return rc;
	for (;;) {
		/* Size the command outside the lock, then check nothing changed. */
		pthread_mutex_lock(&c->lock);
		int count = (int)c->subs.n;
		pthread_mutex_unlock(&c->lock);
		if (count == 0)
			return 0;
		const char **real = calloc((size_t)count, sizeof(char *));
		const char **kept = calloc((size_t)count, sizeof(char *));
		if (real == NULL || kept == NULL) {
			free(real);
			free(kept);
			return MG_MQTT_ERR_NOMEM;
		}
		pthread_mutex_lock(&c->lock);
		if (c->stopping || (int)c->subs.n != count) {
			rc = c->stopping ? MG_MQTT_ERR_STOPPED : 1;
			pthread_mutex_unlock(&c->lock);
			free(real);
			free(kept);
			if (rc == 1)
				continue;
			return rc;
		}
		/* The app's subscriptions go; those browsers hold stay subscribed
		 * and are acknowledged without a packet when nothing else goes. */
		int nreal = 0, nkept = 0;
		for (struct cwm_sub *s = c->sub_head; s != NULL; s = s->next)
			if (s->app && s->brefs == 0)
				real[nreal++] = s->filter;
			else if (s->app)
				kept[nkept++] = s->filter;
		struct cwm_out *r = NULL;
		if (nreal > 0)
			r = cwm_cmd_filters(c, CMD_UNSUBSCRIBE, real, NULL, nreal);
		else if (nkept > 0)
			r = cwm_cmd_filters(c, CMD_UNSUBSCRIBE, kept, NULL, nkept);
		free((void *)real);
		free((void *)kept);
		if (nreal + nkept == 0) {
			pthread_mutex_unlock(&c->lock);
			return 0;
		}
		if (r == NULL) {
			pthread_mutex_unlock(&c->lock);
			return MG_MQTT_ERR_NOMEM;
		}
		r->noop = nreal == 0;
		for (struct cwm_sub *s = c->sub_head, *next; s != NULL; s = next) {
			next = s->next;
			if (s->app && s->brefs == 0)
				cwm_sub_forget(c, s);
			else
				s->app = 0;
		}
		rc = r->id = cwm_next_id(c);
		cwm_enqueue(c, r);
		pthread_mutex_unlock(&c->lock);
		return rc;
	}
}

/* The bridge's side of a subscription: the first holder subscribes, a
 * higher QoS re-subscribes, the last to leave unsubscribes (unless the app
 * holds it too). sys: the holder is mg_mqtt_request (never let go). Called
 * without c->lock (the bridge lock may be held). */
static void cwm_sub_ref(struct mg_mqtt *c, const char *filter, int qos,
                        int sys)
{
	struct cwm_sub *n = calloc(1, sizeof(*n));
	int made;

	pthread_mutex_lock(&c->lock);
	struct cwm_sub *s = cwm_sub_get(c, filter, &n, &made);
	if (s != NULL) {
		int send = made || qos > s->qos;
		if (qos > s->qos || made)
			s->qos = qos;
		if (qos > s->bqos)
			s->bqos = qos;
		s->brefs++;
		if (sys)
			s->sys = 1;
		if (send && !c->stopping &&
		    cwm_queue_subscribe(c, s->filter, s->qos, 0, 1) == 0)
			s->pending++;
	}
	pthread_mutex_unlock(&c->lock);
	free(n);
}

#if MG_MQTT_ENABLE_BRIDGE
static void cwm_sub_unref(struct mg_mqtt *c, const char *filter)
{
	struct cwm_out *r = cwm_cmd_filters(c, CMD_UNSUBSCRIBE, &filter, NULL, 1);
	pthread_mutex_lock(&c->lock);
	struct cwm_sub *s = cwm_map_get(&c->subs, filter, strlen(filter));
	if (s != NULL && s->brefs > 0 && --s->brefs == 0 && !s->app) {
		cwm_sub_forget(c, s);
		if (r != NULL && !c->stopping) {
			r->internal = 1;
			r->id = cwm_next_id(c);
			cwm_enqueue(c, r);
			r = NULL;
		}
	}
	pthread_mutex_unlock(&c->lock);
	cwm_out_free(r);
}
#endif
