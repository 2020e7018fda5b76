/*
 * Status: the subscription list and the status snapshot as JSON.
 */
#include "internal.h"

int mg_mqtt_subscriptions(struct mg_mqtt *c, struct mg_mqtt_subscription **list)
{
	if (c == NULL || list == NULL)
		return MG_MQTT_ERR_INVALID;
	*list = NULL;
	pthread_mutex_lock(&c->lock);
	size_t n = 0, size = 0;
	for (struct cwm_sub *s = c->sub_head; s != NULL; s = s->next) {
		n++;
		size += strlen(s->filter) + 1;
	}
	if (n == 0) {
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	struct mg_mqtt_subscription *v = malloc(n * sizeof(*v) + size);
	if (v == NULL) {
		pthread_mutex_unlock(&c->lock);
		return MG_MQTT_ERR_NOMEM;
	}
	char *p = (char *)(v + n);
	size_t i = 0;
	for (struct cwm_sub *s = c->sub_head; s != NULL; s = s->next, i++) {
		size_t l = strlen(s->filter) + 1;
		v[i].filter = memcpy(p, s->filter, l);
		p += l;
		v[i].qos = s->qos;
		v[i].granted = s->granted;
		v[i].app = s->app;
		v[i].browsers = s->brefs - s->sys;
		v[i].internal = s->sys;
	}
	pthread_mutex_unlock(&c->lock);
	*list = v;
	return (int)n;
}

/* [L] The remembered subscriptions as an array. */
static cJSON *cwm_status_subs(const struct mg_mqtt *c)
{
	cJSON *subs = cJSON_CreateArray();
	for (struct cwm_sub *s = c->sub_head; subs != NULL && s != NULL;
	     s = s->next) {
		cJSON *e = cJSON_CreateObject();
		cJSON_AddStringToObject(e, "filter", s->filter);
		cJSON_AddNumberToObject(e, "qos", s->qos);
		if (s->granted >= 0)
			cJSON_AddNumberToObject(e, "granted", s->granted);
		else
			cJSON_AddNullToObject(e, "granted");
		cJSON_AddBoolToObject(e, "app", s->app);
		cJSON_AddNumberToObject(e, "browsers", s->brefs - s->sys);
		if (s->sys)
			cJSON_AddBoolToObject(e, "internal", 1);
		cJSON_AddItemToArray(subs, e);
	}
	return subs;
}

/* [L] Who the client is and where it connects. */
static void cwm_status_identity(const struct mg_mqtt *c, cJSON *o, int running)
{
	cwm_json_str_or_null(o, "client_id", c->client_id);
	cJSON_AddBoolToObject(o, "running", running);
	cJSON_AddBoolToObject(o, "connected", c->state == CWM_CONNECTED);
	cwm_json_str_or_null(o, "broker", c->broker);
	cJSON *brokers = cJSON_AddArrayToObject(o, "brokers");
	for (int i = 0; brokers != NULL && i < c->cfg.nuris; i++)
		cJSON_AddItemToArray(brokers, cJSON_CreateString(c->cfg.uris[i]));
	/* The one in use: 3.1.1 after PROTOCOL_FALLBACK. */
	int proto = c->v5 && !cwm_v5_now(c) ? 4 : c->cfg.protocol;
	cJSON_AddStringToObject(o, "protocol", cwm_protocol_name(proto));
	cJSON_AddStringToObject(o, "transport",
	                        c->cfg.transport == 1 ? "websockets" : "tcp");
	cJSON_AddBoolToObject(o, "tls", c->cfg.use_tls);
}

/* [L] Counters and gauges the client keeps under its lock. */
static void cwm_status_counts(const struct mg_mqtt *c, cJSON *counters,
                              cJSON *gauges)
{
	cJSON_AddNumberToObject(counters, "published", (double)c->published);
	cJSON_AddNumberToObject(counters, "publish_failed",
	                        (double)c->publish_failed);
	cJSON_AddNumberToObject(counters, "received", (double)c->received);
	cJSON_AddNumberToObject(counters, "dropped_queue_full",
	                        (double)c->dropped_queue_full);
	cJSON_AddNumberToObject(counters, "kept_beyond_queue",
	                        (double)c->queue_overflow);
	cJSON_AddNumberToObject(counters, "handled_inline",
	                        (double)atomic_load(&c->inline_handled));
	cJSON_AddNumberToObject(counters, "reconnects", (double)c->reconnects);
	cJSON_AddNumberToObject(counters, "connects", (double)c->connects);
	cJSON_AddNumberToObject(gauges, "in_flight", c->inflight + c->inflight0);
	cJSON_AddNumberToObject(gauges, "queued", cwm_buffered_locked(c));
	cJSON_AddNumberToObject(gauges, "queue_depth", c->ev_msgs);
	cJSON_AddNumberToObject(gauges, "queue_bytes", (double)c->ev_bytes);
	cJSON_AddNumberToObject(gauges, "inflight_window", c->window);
	cJSON_AddBoolToObject(gauges, "paused", c->paused);
	cJSON_AddNumberToObject(counters, "flow_pauses", (double)c->pauses);
	cJSON_AddNumberToObject(counters, "paused_ms",
	                        (double)(c->paused_ms +
	                                 (c->paused ? cwm_now_ms() - c->paused_at
	                                            : 0)));
	cJSON_AddNumberToObject(counters, "poisoned", (double)c->poisoned);
	cJSON_AddNumberToObject(counters, "paho_renewals", (double)c->renewals);
	cJSON_AddNumberToObject(counters, "ack_timeouts", (double)c->ack_timeouts);
}

/* The status as a cJSON object (also served by the bridge); NULL when out
 * of memory. */
static cJSON *cwm_status_object(struct mg_mqtt *c)
{
	cJSON *o = cJSON_CreateObject(), *counters = cJSON_CreateObject(),
	      *gauges = cJSON_CreateObject(), *config = cJSON_CreateObject();
	int running = atomic_load(&c->ops_ok);

	if (o == NULL || counters == NULL || gauges == NULL || config == NULL) {
		cJSON_Delete(o);
		cJSON_Delete(counters);
		cJSON_Delete(gauges);
		cJSON_Delete(config);
		return NULL;
	}
	cJSON_AddStringToObject(o, "prefix", c->prefix);
	pthread_mutex_lock(&c->lock);
	cwm_status_identity(c, o, running);
	cJSON_AddItemToObject(o, "subscriptions", cwm_status_subs(c));
	cwm_status_counts(c, counters, gauges);
	pthread_mutex_unlock(&c->lock);
	cwm_json_count(counters, "requests_replied", &c->req_replied);
	cwm_json_count(counters, "requests_timed_out", &c->req_timeouts);
	cwm_json_count(counters, "requests_failed", &c->req_failed);
	cwm_json_count(counters, "late_replies", &c->req_late);
	/* The bridge lives from start to stop. */
	if (running && c->bridge != NULL)
		cwm_bridge_status(c->bridge, o, counters, gauges);
	cJSON_AddItemToObject(o, "counters", counters);
	cJSON_AddItemToObject(o, "gauges", gauges);
	if (running)
		cwm_settings_json(&c->cfg, config); /* read-only while running */
	cJSON_AddItemToObject(o, "config", config);
	return o;
}

int mg_mqtt_status(struct mg_mqtt *c, char *buf, size_t len)
{
	if (c == NULL)
		return MG_MQTT_ERR_INVALID;
	cJSON *o = cwm_status_object(c);
	char *text = o != NULL ? cJSON_PrintUnformatted(o) : NULL;
	cJSON_Delete(o);
	if (text == NULL)
		return MG_MQTT_ERR_NOMEM;
	size_t n = strlen(text);
	if (buf != NULL && len > 0) {
		size_t k = n < len - 1 ? n : len - 1;
		memcpy(buf, text, k);
		buf[k] = '\0';
	}
	cJSON_free(text);
	return n > INT_MAX ? INT_MAX : (int)n;
}
