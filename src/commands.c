/*
 * Commands for mqtt-io (struct cwm_out): building them, the queues they wait
 * in, and the publish API.
 */
#include "internal.h"

/* [L] The next command id: positive, wrapping before INT_MAX. */
static int cwm_next_id(struct mg_mqtt *c)
{
	int id = c->next_id;
	c->next_id = id == INT_MAX ? 1 : id + 1;
	return id;
}

static void cwm_out_free(struct cwm_out *r)
{
	if (r == NULL)
		return;
	for (int i = 0; i < r->nfilters; i++) {
		if (r->wire[i] != r->filters[i])
			free(r->wire[i]);
		if (!(r->flags[i] & CMD_BORROWED))
			free(r->filters[i]);
	}
	CWM_FREE_ALL(r->filters, r->wire, r->qos_list, r->ids, r->flags, r->props,
	             r);
}

/* [L] Appends r to a FIFO. */
static void cwm_fifo_push(struct cwm_out **head, struct cwm_out **tail,
                          struct cwm_out *r)
{
	CWM_FIFO_PUSH(*head, *tail, r, next);
}

/* [L] Puts a command paho gave back into retry, keeping id order so that
 * messages go out again in the order they were published. */
static void cwm_retry_insert(struct mg_mqtt *c, struct cwm_out *r)
{
	struct cwm_out **pp = &c->retry, *prev = NULL;
	if (c->retry_tail != NULL && c->retry_tail->id < r->id) {
		cwm_fifo_push(&c->retry, &c->retry_tail, r);
		return;
	}
	while (*pp != NULL && (*pp)->id < r->id) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	r->next = *pp;
	*pp = r;
	if (r->next == NULL)
		c->retry_tail = r;
	(void)prev;
}

/* [L] r is handed to paho: it counts against the in-flight windows until
 * paho reports it done. */
static void cwm_inpaho_link(struct mg_mqtt *c, struct cwm_out *r)
{
	r->iprev = NULL;
	r->inext = c->inpaho;
	if (c->inpaho != NULL)
		c->inpaho->iprev = r;
	c->inpaho = r;
	r->in_paho = 1;
	if (r->type == CMD_PUBLISH && r->qos > 0)
		c->inflight++;
	else if (r->type == CMD_PUBLISH)
		c->inflight0++;
}

/* [L] r is back from paho (done, failed or given back). */
static void cwm_inpaho_unlink(struct mg_mqtt *c, struct cwm_out *r)
{
	if (!r->in_paho)
		return;
	CWM_DL_UNLINK_HEAD(c->inpaho, r, iprev, inext);
	r->in_paho = 0;
	if (r->type == CMD_PUBLISH && r->qos > 0)
		c->inflight--;
	else if (r->type == CMD_PUBLISH)
		c->inflight0--;
}

/* A command lost with its connection is sent again: a user's, or one
 * holding a filter counted in its subscription's pending (renewal skips
 * those, so nobody else would send it); renewal and birth are made anew by
 * every connect. */
static int cwm_cmd_goes_again(const struct cwm_out *r)
{
	int keep = !r->internal;
	for (int i = 0; i < r->nfilters && !keep; i++)
		keep = r->flags[i] & CMD_COUNTED;
	return keep;
}

/* An empty subscribe/unsubscribe command; filters join with cwm_cmd_add. */
static struct cwm_out *cwm_cmd_new(struct mg_mqtt *c, enum cwm_cmd type)
{
	struct cwm_out *r = calloc(1, sizeof(*r));
	if (r != NULL) {
		r->c = c;
		r->type = type;
	}
	return r;
}

/* Adds a filter to a subscribe/unsubscribe command. id: the caller's id
 * for its own acknowledgement (0: none); counted: cwm_sub.pending counts
 * it, and then filter is the subs map's key, which the command borrows
 * (cwm_sub_forget gives it a copy first). Returns 0, or MG_MQTT_ERR_NOMEM when out of
 * memory (r unchanged). */
static int cwm_cmd_add(struct mg_mqtt *c, struct cwm_out *r, const char *filter,
                       int qos, int id, int counted)
{
	const char *g = c->cfg.shared_group;
	if (r->nfilters == r->cap) {
		int cap = r->cap == 0 ? 1 : r->cap * 2;
		if (r->appendable && cap > CWM_RENEW_CHUNK)
			cap = CWM_RENEW_CHUNK;
		char **f = realloc(r->filters, sizeof(char *) * (size_t)cap);
		if (f != NULL)
			r->filters = f;
		char **w = f != NULL ? realloc(r->wire, sizeof(char *) * (size_t)cap)
		                     : NULL;
		if (w != NULL)
			r->wire = w;
		int *q = w != NULL ? realloc(r->qos_list, sizeof(int) * (size_t)cap)
		                   : NULL;
		if (q != NULL)
			r->qos_list = q;
		int *i = q != NULL ? realloc(r->ids, sizeof(int) * (size_t)cap) : NULL;
		if (i != NULL)
			r->ids = i;
		unsigned char *k = i != NULL ? realloc(r->flags, (size_t)cap) : NULL;
		if (k == NULL)
			return MG_MQTT_ERR_NOMEM;
		r->flags = k;
		r->cap = cap;
	}
	size_t fl = strlen(filter);
	char *copy = counted ? (char *)filter : cwm_strndup(filter, fl);
	char *wire = copy;
	if (copy != NULL && g != NULL && cwm_share_len(filter, fl) == 0) {
		size_t wl = strlen(g) + fl + 9;
		if ((wire = malloc(wl)) != NULL)
			snprintf(wire, wl, "$share/%s/%s", g, filter);
	}
	if (copy == NULL || wire == NULL) {
		if (!counted)
			free(copy);
		return MG_MQTT_ERR_NOMEM;
	}
	int n = r->nfilters++;
	r->filters[n] = copy;
	r->wire[n] = wire;
	r->qos_list[n] = qos;
	r->ids[n] = id;
	r->flags[n] = counted ? CMD_COUNTED | CMD_BORROWED : 0;
	return 0;
}

static void cwm_out_free(struct cwm_out *r);

/* A subscribe/unsubscribe command for filters[0..n) (qos may be NULL),
 * acknowledged to nobody per filter. */
static struct cwm_out *cwm_cmd_filters(struct mg_mqtt *c, enum cwm_cmd type,
                                       const char *const *filters,
                                       const int *qos, int n)
{
	struct cwm_out *r = cwm_cmd_new(c, type);
	if (r != NULL && n > 1) {
		/* Room for n at once: renewal and unsubscribe_all send many. */
		r->filters = malloc(sizeof(char *) * (size_t)n);
		r->wire = malloc(sizeof(char *) * (size_t)n);
		r->qos_list = malloc(sizeof(int) * (size_t)n);
		r->ids = malloc(sizeof(int) * (size_t)n);
		r->flags = malloc((size_t)n);
		if (r->filters == NULL || r->wire == NULL || r->qos_list == NULL ||
		    r->ids == NULL || r->flags == NULL) {
			cwm_out_free(r);
			return NULL;
		}
		r->cap = n;
	}
	for (int i = 0; r != NULL && i < n; i++)
		if (cwm_cmd_add(c, r, filters[i], qos != NULL ? qos[i] : 0, 0, 0) != 0) {
			cwm_out_free(r);
			r = NULL;
		}
	return r;
}

/* [L] Publishes accepted and not yet handed to paho (renewal and birth
 * are not counted). */
static int cwm_buffered_locked(const struct mg_mqtt *c)
{
	int n = 0;
	for (const struct cwm_out *r = c->retry; r != NULL; r = r->next)
		n += r->type == CMD_PUBLISH && !r->internal;
	for (const struct cwm_out *r = c->outq; r != NULL; r = r->next)
		n += r->type == CMD_PUBLISH;
	return n;
}

/* Operations are refused before start and from the moment stop begins. */
static int cwm_ops_check(const struct mg_mqtt *c)
{
	if (c == NULL)
		return MG_MQTT_ERR_INVALID;
	if (!atomic_load(&c->ops_ok))
		return MG_MQTT_ERR_NOT_STARTED;
	return 0;
}

/* [L] Queues a command for mqtt-io and wakes it if it could send now. */
static void cwm_enqueue(struct mg_mqtt *c, struct cwm_out *r)
{
	cwm_fifo_push(&c->outq, &c->outq_tail, r);
	if (c->io_waiting == CWM_IDLE_WAIT && c->state == CWM_CONNECTED)
		pthread_cond_signal(&c->io_cond);
}

/* Bytes of the PUBLISH packet for a topic of tlen bytes, properties of
 * pbytes (MQTT 5) and a payload of len: what a broker compares with the
 * Maximum Packet Size it announced. */
static size_t cwm_varint_len(size_t n)
{
	return n < 128 ? 1 : n < 16384 ? 2 : n < 2097152 ? 3 : 4;
}

static size_t cwm_publish_size(int v5, size_t tlen, size_t pbytes, int qos,
                               size_t len)
{
	size_t rem = 2 + tlen + (qos > 0 ? 2 : 0) + len;
	if (v5)
		rem += cwm_varint_len(pbytes) + pbytes;
	return 1 + cwm_varint_len(rem) + rem;
}

/* The one constructor of a publish command: one allocation holding the
 * topic (tlen bytes, NUL added) and the payload, copied; props copied too
 * (NULL: none). Returns it, or NULL with *rc MG_MQTT_ERR_NOMEM or the
 * error of copying props. */
static struct cwm_out *cwm_pub_new(struct mg_mqtt *c, const char *topic,
                                   size_t tlen, const void *payload,
                                   size_t len, int qos, int retain,
                                   const struct mg_mqtt_props *props, int *rc)
{
	/* Only the header is zeroed: the payload is written once, by memcpy. */
	struct cwm_out *r = malloc(sizeof(*r) + tlen + 1 + len);
	*rc = MG_MQTT_ERR_NOMEM;
	if (r == NULL)
		return NULL;
	memset(r, 0, sizeof(*r));
	if ((*rc = cwm_props_dup(props, &r->props)) != 0) {
		free(r);
		return NULL;
	}
	r->c = c;
	r->type = CMD_PUBLISH;
	r->qos = qos;
	r->retain = retain != 0;
	r->topic = memcpy((char *)(r + 1), topic, tlen);
	r->topic[tlen] = '\0';
	r->payload = r->topic + tlen + 1;
	r->len = len;
	if (len > 0)
		memcpy(r->payload, payload, len);
	return r;
}

int mg_mqtt_publish_props(struct mg_mqtt *c, const char *topic,
                          const void *payload, size_t len, int qos, int retain,
                          const struct mg_mqtt_props *props)
{
	size_t tlen, pbytes;
	int rc;

	if ((rc = cwm_ops_check(c)) != 0)
		return rc;
	if (topic == NULL || (payload == NULL && len > 0))
		return MG_MQTT_ERR_INVALID;
	if (qos < 0 || qos > 2)
		return MG_MQTT_ERR_QOS;
	tlen = strlen(topic);
	if (cwm_topic_check(topic, tlen) != 0)
		return tlen > 65535 ? MG_MQTT_ERR_TOO_LARGE : MG_MQTT_ERR_TOPIC;
	if (cwm_levels_check(c, topic, 0) != 0)
		return MG_MQTT_ERR_TOPIC; /* MAX_TOPIC_LEVELS */
	if ((rc = cwm_props_check(props, &pbytes)) != 0)
		return rc;
	if (len > CWM_MAX_PACKET || len + tlen + 4 + pbytes > CWM_MAX_PACKET)
		return MG_MQTT_ERR_TOO_LARGE;
	unsigned maxp = atomic_load(&c->max_packet);
	if (maxp > 0 && cwm_publish_size(c->v5, tlen, pbytes, qos, len) > maxp)
		return MG_MQTT_ERR_TOO_LARGE;

	struct cwm_out *r =
	    cwm_pub_new(c, topic, tlen, payload, len, qos, retain, props, &rc);
	if (r == NULL)
		return rc;
	if (r->props != NULL && !cwm_v5_now(c)) {
		cwm_out_free(r);
		return MG_MQTT_ERR_PROTOCOL;
	}
	if (c->pdir != NULL && qos > 0 && (rc = cwm_persist_write(c, r)) != 0) {
		cwm_out_free(r);
		return rc;
	}

	pthread_mutex_lock(&c->lock);
	if (c->stopping)
		rc = MG_MQTT_ERR_STOPPED;
	else if (c->state != CWM_CONNECTED && c->cfg.max_buffered == 0)
		rc = MG_MQTT_ERR_NOT_CONNECTED;
	else if (c->unfinished >= c->cfg.max_inflight + c->cfg.max_buffered)
		rc = MG_MQTT_ERR_BUFFER_FULL;
	if (rc == 0) {
		rc = r->id = cwm_next_id(c);
		c->unfinished++;
		cwm_enqueue(c, r);
	} else {
		cwm_persist_remove(c, r);
	}
	pthread_mutex_unlock(&c->lock);
	if (rc < 0)
		cwm_out_free(r);
	return rc;
}

int mg_mqtt_publish(struct mg_mqtt *c, const char *topic, const void *payload,
                    size_t len, int qos, int retain)
{
	return mg_mqtt_publish_props(c, topic, payload, len, qos, retain, NULL);
}
