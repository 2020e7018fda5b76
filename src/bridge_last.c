/*
 * Last values (BRIDGE_LAST_VALUES): the last message seen on each readable
 * topic, and the routes that serve them.
 */
#include "internal.h"

#if MG_MQTT_ENABLE_BRIDGE

static void cwm_lv_unlink(struct cwm_bridge *b, struct cwm_lv *e)
{
	CWM_DL_UNLINK(b->lv_old, b->lv_new, e, older, newer);
	e->older = e->newer = NULL;
}

/* [lv_lock] What entry e counts against BRIDGE_LAST_VALUES_BYTES. */
static size_t cwm_lv_size(const struct cwm_lv *e)
{
	return e->len + e->topic_len + sizeof(*e);
}

/* [lv_lock] Forgets the least recently updated topic. */
static void cwm_lv_evict(struct cwm_bridge *b, struct cwm_lv *o)
{
	cwm_lv_unlink(b, o);
	b->lv_bytes -= cwm_lv_size(o);
	cwm_map_del(&b->lv, o->topic, o->topic_len); /* frees o->topic */
	free(o->payload);
	free(o);
}

/* mqtt-dispatch: remembers m as the last value of its topic; the least
 * recently updated topics go when BRIDGE_LAST_VALUES are kept or they
 * would hold more than BRIDGE_LAST_VALUES_BYTES. A message larger than
 * that alone is not kept (and its topic's older value is forgotten). */
static void cwm_lv_update(struct cwm_bridge *b, const struct mg_mqtt_message *m)
{
	const struct cwm_settings *cfg = &b->c->cfg;
	size_t max = (size_t)cfg->bridge_last_values;
	struct timespec ts;
	int readable = 0;
	/* Only what a browser may read (BRIDGE_SUBSCRIBE_ALLOW): the rest
	 * could never be asked for, and would push readable topics out. */
	for (int i = 0; i < cfg->nbsub && !readable; i++)
		readable = cwm_match(cfg->bsub[i] +
		                         cwm_share_len(cfg->bsub[i], strlen(cfg->bsub[i])),
		                     m->topic, m->topic_len);
	size_t max_bytes = (size_t)cfg->bridge_last_values_bytes;
	if (max == 0 || !readable)
		return;
	if (m->payload_len + m->topic_len + sizeof(struct cwm_lv) > max_bytes) {
		pthread_mutex_lock(&b->lv_lock);
		struct cwm_lv *e = cwm_map_get(&b->lv, m->topic, m->topic_len);
		if (e != NULL)
			cwm_lv_evict(b, e);
		pthread_mutex_unlock(&b->lv_lock);
		return;
	}
	void *copy = malloc(m->payload_len > 0 ? m->payload_len : 1);
	if (copy == NULL)
		return;
	if (m->payload_len > 0)
		memcpy(copy, m->payload, m->payload_len);
	clock_gettime(CLOCK_REALTIME, &ts);
	pthread_mutex_lock(&b->lv_lock);
	struct cwm_lv *e = cwm_map_get(&b->lv, m->topic, m->topic_len);
	if (e != NULL) {
		cwm_lv_unlink(b, e);
		b->lv_bytes -= cwm_lv_size(e);
		free(e->payload);
		e->len = 0;
	} else {
		if (b->lv.n >= max && b->lv_old != NULL)
			cwm_lv_evict(b, b->lv_old);
		if ((e = calloc(1, sizeof(*e))) == NULL ||
		    cwm_map_put_key(&b->lv, m->topic, m->topic_len, e, &e->topic) !=
		        0) {
			pthread_mutex_unlock(&b->lv_lock);
			free(e);
			free(copy);
			return;
		}
		e->topic_len = m->topic_len;
	}
	/* Room for it: the oldest go (e itself is out of the list now). */
	while (b->lv_old != NULL &&
	       b->lv_bytes + m->payload_len + m->topic_len + sizeof(*e) >
	           max_bytes)
		cwm_lv_evict(b, b->lv_old);
	e->payload = copy;
	e->len = m->payload_len;
	b->lv_bytes += cwm_lv_size(e);
	e->qos = m->qos;
	e->retain = m->retain;
	e->at_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	CWM_DL_APPEND(b->lv_old, b->lv_new, e, older, newer);
	pthread_mutex_unlock(&b->lv_lock);
}

static void cwm_lv_free(void *p)
{
	struct cwm_lv *e = p;
	free(e->payload);
	free(e);
}

/* One last value as JSON. */
static cJSON *cwm_lv_json(const struct cwm_lv *e)
{
	cJSON *o = cJSON_CreateObject();
	char when[40];
	time_t sec = (time_t)(e->at_ms / 1000);
	struct tm tm;
	gmtime_r(&sec, &tm);
	size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(when + n, sizeof(when) - n, ".%03dZ", (int)(e->at_ms % 1000));
	if (o == NULL || cJSON_AddStringToObject(o, "topic", e->topic) == NULL ||
	    cwm_add_payload(o, e->payload, e->len) != 0 ||
	    cJSON_AddNumberToObject(o, "qos", e->qos) == NULL ||
	    cJSON_AddBoolToObject(o, "retain", e->retain) == NULL ||
	    cJSON_AddStringToObject(o, "received", when) == NULL ||
	    cJSON_AddNumberToObject(o, "received_ms", (double)e->at_ms) == NULL) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

/* GET <path>/last/<topic>: the last message seen on topic. */
static int cwm_route_last(struct cwm_bridge *b, struct mg_connection *conn,
                          const char *topic)
{
	int status;
	if ((status = cwm_path_topic(conn, topic,
	                             "; list it with GET <path>/last?filter=")) != 0)
		return status;
	if (!cwm_may_subscribe(b, topic))
		return cwm_reply_denied(b, conn,
		                        "reading this topic is not allowed "
		                        "(BRIDGE_SUBSCRIBE_ALLOW)");
	if (b->c->cfg.bridge_last_values == 0)
		return cwm_reply_error(conn, 404,
		                       "last values are off (BRIDGE_LAST_VALUES 0)");
	pthread_mutex_lock(&b->lv_lock);
	const struct cwm_lv *e = cwm_map_get(&b->lv, topic, strlen(topic));
	cJSON *o = e != NULL ? cwm_lv_json(e) : NULL;
	pthread_mutex_unlock(&b->lv_lock);
	if (e == NULL)
		return cwm_reply_error(conn, 404, "no message seen on this topic");
	if (o == NULL)
		return cwm_reply_error(conn, 500, "out of memory");
	return cwm_reply_json(conn, 200, o);
}

/* GET <path>/last?filter=F: every last value on a topic F matches, the
 * most recently updated first. */
static int cwm_route_last_list(struct cwm_bridge *b, struct mg_connection *conn)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	const char *qs = ri->query_string != NULL ? ri->query_string : "";
	char filter[1024];
	int r = cwm_query_topic(qs, "filter", 0, filter, sizeof(filter));
	if (r == MG_MQTT_ERR_TOO_LARGE)
		return cwm_reply_error(conn, 400, "the topic filter is too long");
	if (r == MG_MQTT_ERR_NOT_FOUND)
		return cwm_reply_error(conn, 400, "give ?filter=<topic filter>");
	if (r < 0)
		return cwm_reply_error(conn, 400, "invalid topic filter");
	if (b->c->cfg.bridge_last_values == 0)
		return cwm_reply_error(conn, 404,
		                       "last values are off (BRIDGE_LAST_VALUES 0)");
	if (cwm_bridge_filter(filter) != 0 || cwm_share_len(filter, strlen(filter)))
		return cwm_reply_error(conn, 400, "invalid topic filter");
	if (!cwm_may_subscribe(b, filter))
		return cwm_reply_denied(b, conn,
		                        "reading this filter is not allowed "
		                        "(BRIDGE_SUBSCRIBE_ALLOW)");
	cJSON *o = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(o, "values");
	int oom = a == NULL;
	pthread_mutex_lock(&b->lv_lock);
	for (const struct cwm_lv *e = b->lv_new; e != NULL && !oom; e = e->older) {
		if (!cwm_match(filter, e->topic, e->topic_len))
			continue;
		cJSON *j = cwm_lv_json(e);
		if (j == NULL || !cJSON_AddItemToArray(a, j)) {
			cJSON_Delete(j);
			oom = 1;
		}
	}
	pthread_mutex_unlock(&b->lv_lock);
	if (oom) {
		cJSON_Delete(o);
		return cwm_reply_error(conn, 500, "out of memory");
	}
	return cwm_reply_json(conn, 200, o);
}

#endif /* MG_MQTT_ENABLE_BRIDGE */
