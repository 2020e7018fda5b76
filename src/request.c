/*
 * Requests: a publish with a reply topic (MQTT 5 response topic and
 * correlation data, or a JSON envelope on 3.1.1), and the wait for its reply
 * (mg_mqtt_request).
 */
#include "internal.h"

/* One caller of mg_mqtt_request(), on its own stack, linked into c->reqs
 * while it waits. */
struct cwm_req {
	struct cwm_req *next;
	pthread_cond_t cond;
	char corr[40];      /* correlation id: the last level of the reply topic,
	                       128 random bits as hex (not guessable by others
	                       on the broker, who could answer first) */
	int done;           /* 1: replied; -1: out of memory copying the reply;
	                       -2: its publish failed (err) */
	int pub_id;         /* its publish's id, once mg_mqtt_publish returned */
	int err;            /* done -2: the publish's result (cwm_req_failed) */
	void *payload;
	size_t len;
	char *content_type;
};

/* n random bytes from the kernel (getrandom, else /dev/urandom). Returns
 * 0 or MG_MQTT_ERR_IO. */
static int cwm_random(void *buf, size_t n)
{
	if (getrandom(buf, n, 0) == (ssize_t)n)
		return 0;
	FILE *f = fopen("/dev/urandom", "rb");
	size_t got = f != NULL ? fread(buf, 1, n, f) : 0;
	if (f != NULL)
		fclose(f);
	return got == n ? 0 : MG_MQTT_ERR_IO;
}

/* Start: the reply topics are "<client id>/reply/<id>", when the client id
 * can be the start of a topic name. */
static int cwm_req_setup(struct mg_mqtt *c)
{
	const char *id = c->client_id;
	if (strpbrk(id, "+#") != NULL || id[0] == '$')
		return 0; /* mg_mqtt_request() says MG_MQTT_ERR_TOPIC */
	size_t n = strlen(id);
	if ((c->reply_base = malloc(n + 8)) == NULL)
		return MG_MQTT_ERR_NOMEM;
	memcpy(c->reply_base, id, n);
	memcpy(c->reply_base + n, "/reply/", 8);
	c->reply_base_len = n + 7;
	if (getrandom(&c->req_nonce, sizeof(c->req_nonce), GRND_NONBLOCK) !=
	    (ssize_t)sizeof(c->req_nonce))
		c->req_nonce = (uint32_t)cwm_now_ms() ^ (uint32_t)getpid();
	return 0;
}

/* paho's receive thread, before anything else looks at a message: takes
 * a reply to a waiting request. Returns 1 when the message was a reply
 * (then it is consumed here, on time or late), 0 otherwise. */
static int cwm_req_arrived(struct mg_mqtt *c, const char *topic, size_t tl,
                           MQTTClient_message *m)
{
	size_t bl = c->reply_base_len;
	if (c->reply_base == NULL || tl <= bl ||
	    memcmp(topic, c->reply_base, bl) != 0 ||
	    memchr(topic + bl, '/', tl - bl) != NULL)
		return 0;
	const char *corr = topic + bl;
	size_t cl = tl - bl;
	pthread_mutex_lock(&c->req_lock);
	struct cwm_req *q = c->reqs;
	while (q != NULL &&
	       (q->done || strlen(q->corr) != cl || memcmp(q->corr, corr, cl) != 0))
		q = q->next;
	if (q == NULL) {
		atomic_fetch_add(&c->req_late, 1);
	} else {
		size_t n = m->payloadlen > 0 ? (size_t)m->payloadlen : 0;
		q->payload = malloc(n + 1);
		if (q->payload != NULL) {
			if (n > 0)
				memcpy(q->payload, m->payload, n);
			((char *)q->payload)[n] = '\0';
			q->len = n;
			if (m->properties.count > 0 &&
			    MQTTProperties_hasProperty(&m->properties,
			                               MQTTPROPERTY_CODE_CONTENT_TYPE)) {
				MQTTProperty *p = MQTTProperties_getProperty(
				    &m->properties, MQTTPROPERTY_CODE_CONTENT_TYPE);
				if (p != NULL && (q->content_type =
				                      malloc((size_t)p->value.data.len + 1))) {
					memcpy(q->content_type, p->value.data.data,
					       (size_t)p->value.data.len);
					q->content_type[p->value.data.len] = '\0';
				}
			}
		}
		q->done = q->payload != NULL ? 1 : -1;
		pthread_cond_signal(&q->cond);
	}
	pthread_mutex_unlock(&c->req_lock);
	return 1;
}

/* The publish id of a request failed (result: a negative code, or a
 * reason code >= 0x80): the request returns at once, with result, instead
 * of waiting for a reply that cannot come. Without c->lock. */
static void cwm_req_failed(struct mg_mqtt *c, int id, int result)
{
	pthread_mutex_lock(&c->req_lock);
	for (struct cwm_req *q = c->reqs; q != NULL; q = q->next)
		if (q->pub_id == id && q->done == 0) {
			q->done = -2;
			q->err = result < 0 ? result : MG_MQTT_ERR_REFUSED;
			pthread_cond_signal(&q->cond);
			break;
		}
	pthread_mutex_unlock(&c->req_lock);
}

/* Stop: every waiting request returns MG_MQTT_ERR_STOPPED. wait: also
 * until every caller has left mg_mqtt_request() (after c->stopping is
 * set, so that none still waits for its subscription). */
static void cwm_req_stop(struct mg_mqtt *c, int wait)
{
	pthread_mutex_lock(&c->req_lock);
	c->req_stopping = 1;
	for (struct cwm_req *q = c->reqs; q != NULL; q = q->next)
		pthread_cond_signal(&q->cond);
	while (wait && c->req_active > 0) {
		pthread_mutex_unlock(&c->req_lock);
		usleep(1000);
		pthread_mutex_lock(&c->req_lock);
	}
	pthread_mutex_unlock(&c->req_lock);
}

/* Holds the reply filter and waits until the broker has granted it (on the
 * first request, and after a reconnect until it is renewed). Returns 0,
 * MG_MQTT_ERR_TIMEOUT, _STOPPED, _REFUSED. */
static int cwm_req_ready(struct mg_mqtt *c, int64_t deadline)
{
	char filter[sizeof(c->prefix) + 512];
	size_t n = c->reply_base_len;
	char *f = n + 2 <= sizeof(filter) ? filter : malloc(n + 2);
	int rc = 0;
	if (f == NULL)
		return MG_MQTT_ERR_NOMEM;
	memcpy(f, c->reply_base, n);
	f[n] = '+';
	f[n + 1] = '\0';
	if (!atomic_exchange(&c->reply_held, 1))
		cwm_sub_ref(c, f, 1, 1);
	for (int64_t sleep_us = 200;; sleep_us = sleep_us < 20000 ? sleep_us * 2 : sleep_us) {
		pthread_mutex_lock(&c->lock);
		const struct cwm_sub *s = cwm_map_get(&c->subs, f, n + 1);
		int granted = s != NULL ? s->granted : -1, stopping = c->stopping;
		int ok = granted >= 0 && granted < 0x80 && c->state == CWM_CONNECTED;
		pthread_mutex_unlock(&c->lock);
		if (ok)
			break;
		if (stopping) {
			rc = MG_MQTT_ERR_STOPPED;
			break;
		}
		if (granted >= 0x80) {
			cwm_log(c, MG_MQTT_LOG_ERROR,
			        "the broker refused the reply subscription '%s' (code "
			        "0x%02x): requests cannot get replies",
			        f, (unsigned)granted);
			rc = MG_MQTT_ERR_REFUSED;
			break;
		}
		int64_t left = deadline - cwm_now_ms();
		if (left <= 0) {
			rc = MG_MQTT_ERR_TIMEOUT;
			break;
		}
		/* Only until the first SUBACK (and again after a reconnect). */
		usleep((useconds_t)(sleep_us < left * 1000 ? sleep_us : left * 1000));
	}
	if (f != filter)
		free(f);
	return rc;
}

/* The 3.1.1 request: {"reply_to":..,"correlation_id":..,"payload":..}. */
static char *cwm_req_envelope(const char *reply_to, const char *corr,
                              const void *payload, size_t len)
{
	cJSON *o = cJSON_CreateObject();
	char *out = NULL;
	if (o == NULL)
		return NULL;
	if (cJSON_AddStringToObject(o, "reply_to", reply_to) != NULL &&
	    cJSON_AddStringToObject(o, "correlation_id", corr) != NULL &&
	    cwm_add_payload(o, payload, len) == 0)
		out = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	return out;
}

/* Gives q a random correlation id and links it into c->reqs. Returns 0,
 * MG_MQTT_ERR_STOPPED or MG_MQTT_ERR_IO. */
static int cwm_req_enlist(struct mg_mqtt *c, struct cwm_req *q)
{
	unsigned char rnd[16];
	int rc = 0;

	pthread_mutex_lock(&c->req_lock);
	if (c->req_stopping)
		rc = MG_MQTT_ERR_STOPPED;
	else if (cwm_random(rnd, sizeof(rnd)) != 0)
		rc = MG_MQTT_ERR_IO;
	if (rc == 0) {
		for (size_t i = 0; i < sizeof(rnd); i++)
			snprintf(q->corr + 2 * i, 3, "%02x", rnd[i]);
		++c->req_seq;
		q->next = c->reqs;
		c->reqs = q;
	}
	pthread_mutex_unlock(&c->req_lock);
	return rc;
}

/* Publishes the request with its reply topic and correlation id (MQTT 5
 * properties, or the 3.1.1 envelope). Returns what the publish returned. */
static int cwm_req_publish(struct mg_mqtt *c, const char *topic,
                           const void *payload, size_t len, int qos,
                           const char *corr)
{
	size_t bl = c->reply_base_len, cl = strlen(corr);
	char *reply_to = malloc(bl + cl + 1), *env = NULL;
	int rc;

	if (reply_to == NULL)
		return MG_MQTT_ERR_NOMEM;
	memcpy(reply_to, c->reply_base, bl);
	memcpy(reply_to + bl, corr, cl + 1);
	if (cwm_v5_now(c)) {
		struct mg_mqtt_props p;
		memset(&p, 0, sizeof(p));
		p.response_topic = reply_to;
		p.correlation_data = corr;
		p.correlation_len = cl;
		rc = mg_mqtt_publish_props(c, topic, payload, len, qos, 0, &p);
	} else if ((env = cwm_req_envelope(reply_to, corr, payload, len)) ==
	           NULL) {
		rc = MG_MQTT_ERR_NOMEM;
	} else {
		rc = mg_mqtt_publish(c, topic, env, strlen(env), qos, 0);
	}
	free(reply_to);
	cJSON_free(env);
	return rc;
}

/* Waits for the reply to q (rc: its publish's result) until the deadline,
 * then unlinks q. Returns 0 (replied) or a negative code. */
static int cwm_req_wait(struct mg_mqtt *c, struct cwm_req *q, int rc,
                        int64_t deadline)
{
	pthread_mutex_lock(&c->req_lock);
	if (rc > 0)
		q->pub_id = rc;
	if (rc > 0 && q->done == 0) {
		struct timespec until = cwm_deadline(deadline - cwm_now_ms());
		while (q->done == 0 && !c->req_stopping &&
		       pthread_cond_timedwait(&q->cond, &c->req_lock, &until) !=
		           ETIMEDOUT) {
		}
		rc = q->done == 1    ? 0
		     : q->done == -2 ? q->err
		     : q->done < 0   ? MG_MQTT_ERR_NOMEM
		     : c->req_stopping ? MG_MQTT_ERR_STOPPED
		                       : MG_MQTT_ERR_TIMEOUT;
	}
	for (struct cwm_req **pp = &c->reqs; *pp != NULL; pp = &(*pp)->next)
		if (*pp == q) {
			*pp = q->next;
			break;
		}
	pthread_mutex_unlock(&c->req_lock);
	return rc;
}

/* mg_mqtt_request() once the arguments are checked and the caller
 * counted in c->req_active. */
static int cwm_request(struct mg_mqtt *c, const char *topic,
                       const void *payload, size_t len, int qos,
                       int timeout_ms, struct mg_mqtt_reply *reply)
{
	int64_t deadline = cwm_now_ms() + timeout_ms;
	int rc = cwm_req_ready(c, deadline);
	if (rc != 0)
		return rc;

	struct cwm_req q;
	memset(&q, 0, sizeof(q));
	pthread_cond_init(&q.cond, NULL);
	if ((rc = cwm_req_enlist(c, &q)) != 0) {
		pthread_cond_destroy(&q.cond);
		return rc;
	}
	rc = cwm_req_publish(c, topic, payload, len, qos, q.corr);
	rc = cwm_req_wait(c, &q, rc, deadline);
	pthread_cond_destroy(&q.cond);

	if (rc == 0) {
		reply->payload = q.payload;
		reply->payload_len = q.len;
		reply->content_type = q.content_type;
		return 0;
	}
	free(q.payload);
	free(q.content_type);
	return rc;
}

int mg_mqtt_request(struct mg_mqtt *c, const char *topic, const void *payload,
                    size_t len, int qos, int timeout_ms,
                    struct mg_mqtt_reply *reply)
{
	int rc;
	if (reply != NULL)
		memset(reply, 0, sizeof(*reply));
	if ((rc = cwm_ops_check(c)) != 0)
		return rc;
	if (topic == NULL || reply == NULL || timeout_ms <= 0 ||
	    (payload == NULL && len > 0))
		return MG_MQTT_ERR_INVALID;
	if (qos < 0 || qos > 2)
		return MG_MQTT_ERR_QOS;
	if (mg_mqtt_topic_valid(topic) != 0 || c->reply_base == NULL ||
	    cwm_levels_check(c, topic, 0) != 0)
		return MG_MQTT_ERR_TOPIC;
	pthread_mutex_lock(&c->req_lock);
	c->req_active++;
	pthread_mutex_unlock(&c->req_lock);
	rc = cwm_request(c, topic, payload, len, qos, timeout_ms, reply);
	atomic_fetch_add(rc == 0                      ? &c->req_replied
	                 : rc == MG_MQTT_ERR_TIMEOUT ? &c->req_timeouts
	                                              : &c->req_failed,
	                 1);
	/* The last touch of c: stop may free it once req_active is 0. */
	pthread_mutex_lock(&c->req_lock);
	c->req_active--;
	pthread_mutex_unlock(&c->req_lock);
	return rc;
}

void mg_mqtt_reply_free(struct mg_mqtt_reply *reply)
{
	if (reply == NULL)
		return;
	free(reply->payload);
	free(reply->content_type);
	memset(reply, 0, sizeof(*reply));
}
