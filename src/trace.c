/*
 * Tracing. LOG_LEVEL debug: one line per packet-level event of the
 * library's own (CONNECT, CONNACK with its properties, SUBSCRIBE and
 * SUBACK, UNSUBSCRIBE and UNSUBACK, PUBLISH out and its acknowledgement,
 * PUBLISH in, DISCONNECT), never a password or payload bytes; and paho's
 * trace, forwarded to every client that asked for debug.
 *
 * paho's trace is one per process (MQTTClient_setTraceLevel /
 * _setTraceCallback), its callback runs on whichever thread paho traces
 * on, holding paho's locks. So: the callback only queues (an EV_LOG for
 * each debug client, cwm_log_push_trace), under cwm_trace_lock, which is
 * taken before the registry lock (the clients are the process registry's,
 * client.c) and a client's c->lock and never while one is held, and never
 * held across a call into paho that takes a lock (setting the level and
 * the callback takes none). Lines that could carry a secret are dropped,
 * payload bytes cut off (cwm_trace_clean).
 *
 * The level is the cheapest paho has (MQTTCLIENT_TRACE_ERROR: paho then
 * skips the function entry/exit records it otherwise keeps for every
 * call) unless a client needs more: MQTTCLIENT_TRACE_PROTOCOL while a
 * debug client runs, or while a connect is in progress (the watch: did
 * paho send the CONNECT, which tells a broker that closed the connection
 * after it from one that could not be reached; and, for a TLS URI whose
 * host name is checked, that check). paho reports a host name mismatch only in its trace
 * ("X509_check_host for hostname H failed"), then fails the connect with
 * "TCP/TLS connect failure"; cwm_trace_tls_failed tells the connect
 * failure path. The line names the host only: it is given to every
 * client whose attempt is to a URI of that host name and in progress
 * (between cwm_trace_connect_begin and its CONNACK or failure), and taken
 * back when paho then sends that client's CONNECT (the address matched
 * the certificate's IP address entry instead). Two clients of one process
 * connecting at once to the same host name, with different certificates
 * behind it, can be told the other's result.
 * MQTT_C_CLIENT_TRACE_LEVEL in the environment (paho's own switch) keeps
 * the level the environment set: the library then never changes it.
 */
#include "internal.h"

static pthread_mutex_t cwm_trace_lock = PTHREAD_MUTEX_INITIALIZER;
/* Under cwm_trace_lock (the clients themselves are the registry's, those
 * with trace_joined set: cwm_registry_all). */
static int cwm_tr_debug;   /* of them at LOG_LEVEL debug */
static int cwm_tr_tls;     /* of them with trace_tls set */
static int cwm_tr_level;   /* the level set; 0: none yet */
static int cwm_tr_cb;      /* our callback is set */
static int cwm_tr_env = -1; /* MQTT_C_CLIENT_TRACE_LEVEL given: 1 */

static int cwm_debug_on(const struct mg_mqtt *c)
{
	return cwm_log_wants(c, MG_MQTT_LOG_DEBUG);
}

/* ---- paho's trace --------------------------------------------------- */

/* paho's line without its "YYYYMMDD HHMMSS.mmm " time stamp. */
static const char *cwm_trace_text(const char *m)
{
	const char *p = m;
	p += strspn(p, "0123456789");
	if (*p == ' ') {
		p++;
		p += strspn(p, "0123456789.");
		if (*p == ' ')
			return p + 1;
	}
	return m;
}

static int cwm_has_ci(const char *hay, const char *needle)
{
	return strcasestr(hay, needle) != NULL;
}

/* A line of paho's trace and what a walk over the clients found in it. */
struct cwm_tr_scan {
	const char *t;
	size_t n;   /* cwm_trace_watch: the host name's length */
	int hit;
};

/* [T] cwm_registry_all: the line holds the password or key passphrase of
 * a joined client. */
static void cwm_trace_secret_of(struct mg_mqtt *c, void *arg)
{
	struct cwm_tr_scan *scan = arg;
	const struct cwm_settings *s = &c->cfg;
	if (c->trace_joined &&
	    ((s->secret != NULL && s->secret[0] != '\0' &&
	      strstr(scan->t, s->secret) != NULL) ||
	     (s->tls_keyfile_password != NULL &&
	      s->tls_keyfile_password[0] != '\0' &&
	      strstr(scan->t, s->tls_keyfile_password) != NULL)))
		scan->hit = 1;
}

/* [T] 1 when the line may carry a secret: it names credentials (user
 * name, password, proxy authentication, an Authorization header), dumps
 * heap contents (paho's leak report at exit prints memory), or holds
 * the password or key passphrase of a started client. */
static int cwm_trace_secret(const char *t)
{
	static const char *const words[] = {"password", "passwd", "username",
	                                    "user name", "auth", "Content ",
	                                    "Heap "};
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (cwm_has_ci(t, words[i]))
			return 1;
	struct cwm_tr_scan scan = {t, 0, 0};
	cwm_registry_all(cwm_trace_secret_of, &scan);
	return scan.hit;
}

/* The line as forwarded: "paho: <text>", a PUBLISH without the payload
 * bytes paho prints after "payload len(N):". */
static void cwm_trace_clean(const char *t, char *out, size_t len)
{
	const char *pl = strstr(t, "payload len(");
	int n = (int)strcspn(t, "\r\n");
	if (pl != NULL) {
		const char *close = strchr(pl, ')');
		if (close != NULL && close - t + 1 < n)
			n = (int)(close - t + 1);
	}
	snprintf(out, len, "paho: %.*s", n, t);
}

/* Host name of a URI ("ssl://[::1]:8883/x" -> "::1"). */
static void cwm_uri_host(const char *uri, char *out, size_t len)
{
	const char *h = strstr(uri, "://");
	h = h != NULL ? h + 3 : uri;
	size_t n;
	if (*h == '[') {
		h++;
		n = strcspn(h, "]");
	} else {
		n = strcspn(h, ":/");
	}
	snprintf(out, len, "%.*s", (int)n, h);
}

/* [T] cwm_registry_all: the host name check failed for scan's host (n
 * bytes), which a joined client's watched connect may be to. */
static void cwm_trace_host_failed(struct mg_mqtt *c, void *arg)
{
	const struct cwm_tr_scan *scan = arg;
	if (c->trace_joined && c->trace_tls && c->trace_checkhost &&
	    strlen(c->trace_host) == scan->n &&
	    strncasecmp(c->trace_host, scan->t, scan->n) == 0)
		c->trace_host_bad = 1;
}

/* [T] cwm_registry_all: paho sent the CONNECT of client id scan->t (n
 * bytes): the handshake of a joined client's watched connect succeeded. */
static void cwm_trace_connect_seen(struct mg_mqtt *c, void *arg)
{
	const struct cwm_tr_scan *scan = arg;
	if (c->trace_joined && c->trace_tls &&
	    strlen(c->client_id) == scan->n &&
	    strncmp(c->client_id, scan->t, scan->n) == 0) {
		c->trace_host_bad = 0;
		c->trace_sent = 1;
	}
}

/* [T] cwm_registry_all: the cleaned line to a joined client at LOG_LEVEL
 * debug. */
static void cwm_trace_forward(struct mg_mqtt *c, void *arg)
{
	if (c->trace_joined && cwm_debug_on(c))
		cwm_log_push_trace(c, arg);
}

/* [T] The TLS watch: a host name check failed for the host in the line,
 * or paho sent a client's CONNECT (its handshake succeeded). */
static void cwm_trace_watch(const char *t)
{
	static const char pre[] = "X509_check_host for hostname ";
	if (strncmp(t, pre, sizeof(pre) - 1) == 0) {
		const char *h = t + sizeof(pre) - 1, *e = strstr(h, " failed");
		if (e == NULL)
			return;
		if (*h == '[')
			h++;
		size_t n = (size_t)(e - h);
		if (n > 0 && h[n - 1] == ']')
			n--;
		struct cwm_tr_scan scan = {h, n, 0};
		cwm_registry_all(cwm_trace_host_failed, &scan);
		return;
	}
	const char *p = strstr(t, " -> CONNECT ");
	const char *id = strchr(t, ' ');
	if (p == NULL || id == NULL || id >= p)
		return;
	id++;
	struct cwm_tr_scan scan = {id, (size_t)(p - id), 0};
	cwm_registry_all(cwm_trace_connect_seen, &scan);
}

/* paho's trace callback: paho's threads (or mqtt-io inside a paho call),
 * holding paho's locks. Queues only. */
static void cwm_trace_cb(enum MQTTCLIENT_TRACE_LEVELS level, char *message)
{
	if (level < MQTTCLIENT_TRACE_PROTOCOL || message == NULL)
		return;
	const char *t = cwm_trace_text(message);
	pthread_mutex_lock(&cwm_trace_lock);
	if (cwm_tr_tls > 0)
		cwm_trace_watch(t);
	if (cwm_tr_debug > 0 && !cwm_trace_secret(t)) {
		char line[600];
		cwm_trace_clean(t, line, sizeof(line));
		cwm_registry_all(cwm_trace_forward, line);
	}
	pthread_mutex_unlock(&cwm_trace_lock);
}

/* [T] The level and the callback the clients need now. */
static void cwm_trace_apply(void)
{
	int need = cwm_tr_debug > 0 || cwm_tr_tls > 0;
	int level = need ? MQTTCLIENT_TRACE_PROTOCOL : MQTTCLIENT_TRACE_ERROR;
	if (cwm_tr_env < 0) {
		const char *e = getenv("MQTT_C_CLIENT_TRACE_LEVEL");
		cwm_tr_env = e != NULL && e[0] != '\0';
	}
	int set_level = !cwm_tr_env && level != cwm_tr_level;
	int set_cb = need != cwm_tr_cb;
	cwm_eng_trace(level, need ? cwm_trace_cb : NULL, set_cb, set_level);
	if (set_level)
		cwm_tr_level = level;
	cwm_tr_cb = need;
}

/* mqtt-io, before the client's first paho call that can trace. */
static void cwm_trace_join(struct mg_mqtt *c)
{
	pthread_mutex_lock(&cwm_trace_lock);
	c->trace_joined = 1; /* it is in the registry from start to stop */
	cwm_tr_debug += cwm_debug_on(c);
	cwm_trace_apply();
	pthread_mutex_unlock(&cwm_trace_lock);
}

/* [T] The TLS watch of c ends. */
static void cwm_trace_tls_end(struct mg_mqtt *c)
{
	if (!c->trace_tls)
		return;
	c->trace_tls = 0;
	cwm_tr_tls--;
	cwm_trace_apply();
}

/* mqtt-io, after the paho handle is destroyed: no more paho lines for c
 * (nor other clients' lines: on_disconnect is the last handler). */
static void cwm_trace_leave(struct mg_mqtt *c)
{
	pthread_mutex_lock(&cwm_trace_lock);
	if (c->trace_joined) {
		cwm_trace_tls_end(c);
		cwm_tr_debug -= cwm_debug_on(c);
		c->trace_joined = 0;
		cwm_trace_apply();
	}
	pthread_mutex_unlock(&cwm_trace_lock);
}

/* paho checks the host name only for a TLS URI it verifies. */
static int cwm_checks_host(const struct mg_mqtt *c, const char *uri)
{
	const struct cwm_settings *s = &c->cfg;
	return (strncmp(uri, "ssl://", 6) == 0 || strncmp(uri, "wss://", 6) == 0) &&
	       s->tls_cert_reqs != CWM_CERT_NONE && !s->tls_insecure;
}

static const char *cwm_yes(int v)
{
	return v ? "true" : "false";
}

/* mqtt-io, before it hands paho the connect to BROKER_URL entry idx: the
 * CONNECT line, and the TLS watch. */
static void cwm_trace_connect_begin(struct mg_mqtt *c, int idx)
{
	const struct cwm_settings *s = &c->cfg;
	const char *uri = s->uris[idx];
	if (cwm_debug_on(c)) {
		int v5 = cwm_v5_now(c);
		cwm_log(c, MG_MQTT_LOG_DEBUG,
		        "CONNECT to %s: MQTT %s, %s %s, keepalive %d s, client id "
		        "'%s'%s%s%s%s",
		        uri, v5 ? "5" : cwm_protocol_name(s->protocol),
		        v5 ? "clean start" : "clean session",
		        cwm_yes(s->clean_session), s->keepalive, c->client_id,
		        s->username != NULL ? ", user name set" : "",
		        s->secret != NULL ? ", password set" : "",
		        s->will_topic != NULL ? ", will to " : "",
		        s->will_topic != NULL ? s->will_topic : "");
	}
	pthread_mutex_lock(&cwm_trace_lock);
	if (c->trace_joined) {
		c->trace_host_bad = 0;
		c->trace_sent = 0;
		cwm_uri_host(uri, c->trace_host, sizeof(c->trace_host));
		c->trace_checkhost = cwm_checks_host(c, uri);
		if (!c->trace_tls) {
			c->trace_tls = 1;
			cwm_tr_tls++;
			cwm_trace_apply();
		}
	}
	pthread_mutex_unlock(&cwm_trace_lock);
}

/* The connect failed (cwm_connect_failed): 1 when paho's trace said the
 * broker's certificate does not match the host name of this attempt's
 * URI; why gets the host name. Ends the TLS watch. */
static int cwm_trace_tls_failed(struct mg_mqtt *c, char *why, size_t len)
{
	int bad = 0;
	pthread_mutex_lock(&cwm_trace_lock);
	if (c->trace_tls && c->trace_checkhost && c->trace_host_bad) {
		bad = 1;
		snprintf(why, len, "%s", c->trace_host);
	}
	c->trace_host_bad = 0;
	cwm_trace_tls_end(c);
	pthread_mutex_unlock(&cwm_trace_lock);
	return bad;
}

/* mqtt-io, after a failed attempt: 1 when paho's trace showed this
 * client's CONNECT sent (the connection was open; the broker closed it or
 * never answered). */
static int cwm_trace_connect_sent(struct mg_mqtt *c)
{
	pthread_mutex_lock(&cwm_trace_lock);
	int sent = c->trace_tls && c->trace_sent;
	pthread_mutex_unlock(&cwm_trace_lock);
	return sent;
}

/* The connect watch of c ends (its attempt is over). */
static void cwm_trace_watch_end(struct mg_mqtt *c)
{
	pthread_mutex_lock(&cwm_trace_lock);
	c->trace_host_bad = 0;
	cwm_trace_tls_end(c);
	pthread_mutex_unlock(&cwm_trace_lock);
}

/* ---- the library's own packets, at LOG_LEVEL debug ------------------- */

/* Appends one MQTT 5 property as "name=value" (binary data: its length;
 * it may be authentication data). */
static size_t cwm_prop_text(const MQTTProperty *p, char *out, size_t len)
{
	const char *name = MQTTPropertyName(p->identifier);
	char nb[16];
	if (name == NULL) {
		snprintf(nb, sizeof(nb), "0x%02x", (unsigned)p->identifier);
		name = nb;
	}
	switch (MQTTProperty_getType(p->identifier)) {
	case MQTTPROPERTY_TYPE_BYTE:
		return (size_t)snprintf(out, len, "%s=%u", name, p->value.byte);
	case MQTTPROPERTY_TYPE_TWO_BYTE_INTEGER:
		return (size_t)snprintf(out, len, "%s=%u", name, p->value.integer2);
	case MQTTPROPERTY_TYPE_FOUR_BYTE_INTEGER:
	case MQTTPROPERTY_TYPE_VARIABLE_BYTE_INTEGER:
		return (size_t)snprintf(out, len, "%s=%u", name, p->value.integer4);
	case MQTTPROPERTY_TYPE_UTF_8_ENCODED_STRING:
		return (size_t)snprintf(out, len, "%s='%.*s'", name,
		                        p->value.data.len > 80 ? 80 : p->value.data.len,
		                        p->value.data.data);
	case MQTTPROPERTY_TYPE_UTF_8_STRING_PAIR:
		return (size_t)snprintf(out, len, "%s '%.*s'='%.*s'", name,
		                        p->value.data.len > 40 ? 40 : p->value.data.len,
		                        p->value.data.data,
		                        p->value.value.len > 40 ? 40 : p->value.value.len,
		                        p->value.value.data);
	default:
		return (size_t)snprintf(out, len, "%s=(%d bytes)", name,
		                        p->value.data.len);
	}
}

/* paho's thread: a CONNACK that accepted the connection (props: MQTT 5's,
 * NULL with 3.1.1). Ends the TLS watch. */
static void cwm_debug_connack(struct mg_mqtt *c, int session,
                              MQTTProperties *props)
{
	pthread_mutex_lock(&cwm_trace_lock);
	c->trace_host_bad = 0;
	cwm_trace_tls_end(c);
	pthread_mutex_unlock(&cwm_trace_lock);
	if (!cwm_debug_on(c))
		return;
	char pl[512] = "";
	size_t used = 0;
	for (int i = 0; props != NULL && i < props->count && used < sizeof(pl);
	     i++) {
		used += (size_t)snprintf(pl + used, sizeof(pl) - used, "%s",
		                         i > 0 ? ", " : "");
		if (used < sizeof(pl))
			used += cwm_prop_text(&props->array[i], pl + used,
			                      sizeof(pl) - used);
	}
	cwm_log(c, MG_MQTT_LOG_DEBUG, "CONNACK: accepted, session present %s%s%s%s",
	        cwm_yes(session), props != NULL ? "; properties: " : "",
	        props != NULL && props->count == 0 ? "none" : "", pl);
}

/* The filters of a SUBSCRIBE / UNSUBSCRIBE as sent: 'f' qos N, ... */
static void cwm_filters_text(const struct cwm_out *r, int qos, char *out,
                             size_t len)
{
	size_t used = 0;
	out[0] = '\0';
	for (int i = 0; i < r->nfilters && used < len; i++) {
		if (qos)
			used += (size_t)snprintf(out + used, len - used, "%s'%s' qos %d",
			                         i > 0 ? ", " : "", r->wire[i],
			                         r->qos_list[i]);
		else
			used += (size_t)snprintf(out + used, len - used, "%s'%s'",
			                         i > 0 ? ", " : "", r->wire[i]);
	}
}

/* mqtt-io, before it hands paho command r. */
static void cwm_debug_send(struct mg_mqtt *c, const struct cwm_out *r)
{
	if (!cwm_debug_on(c) || r->noop)
		return;
	if (r->type == CMD_PUBLISH) {
		cwm_log(c, MG_MQTT_LOG_DEBUG,
		        "PUBLISH out: id %d, topic '%s', qos %d%s, %zu bytes%s", r->id,
		        r->topic, r->qos, r->retain ? ", retained" : "", r->len,
		        r->internal ? " (birth)" : "");
		return;
	}
	char f[512];
	cwm_filters_text(r, r->type == CMD_SUBSCRIBE, f, sizeof(f));
	cwm_log(c, MG_MQTT_LOG_DEBUG, "%s: id %d, %d filter(s): %s%s",
	        r->type == CMD_SUBSCRIBE ? "SUBSCRIBE" : "UNSUBSCRIBE", r->id,
	        r->nfilters, f, r->internal ? " (renewal)" : "");
}

/* A command done (cwm_done, any thread): its acknowledgement. */
static void cwm_debug_done(struct mg_mqtt *c, const struct cwm_out *r,
                           int result, int retry, const int *codes,
                           int ncodes)
{
	if (!cwm_debug_on(c) || r->noop)
		return;
	const char *what = r->type == CMD_PUBLISH     ? "PUBLISH"
	                   : r->type == CMD_SUBSCRIBE ? "SUBACK"
	                                              : "UNSUBACK";
	if (retry) {
		cwm_log(c, MG_MQTT_LOG_DEBUG,
		        "%s id %d: given back by paho (connection lost): %s", what,
		        r->id, mg_mqtt_strerror(result));
		return;
	}
	if (result < 0) {
		cwm_log(c, MG_MQTT_LOG_DEBUG, "%s id %d: failed: %s", what, r->id,
		        mg_mqtt_strerror(result));
		return;
	}
	if (r->type == CMD_PUBLISH) {
		cwm_log(c, MG_MQTT_LOG_DEBUG, "%s id %d: %s%s (code 0x%02x)",
		        r->qos == 0 ? "PUBLISH" : r->qos == 1 ? "PUBACK" : "PUBCOMP",
		        r->id, r->qos == 0 ? "sent" : "acknowledged",
		        result >= 0x80 ? ", refused" : "", (unsigned)result);
		return;
	}
	char cs[256] = "";
	size_t used = 0;
	for (int i = 0; codes != NULL && i < ncodes && used < sizeof(cs); i++)
		used += (size_t)snprintf(cs + used, sizeof(cs) - used, "%s0x%02x",
		                         i > 0 ? " " : "", (unsigned)codes[i]);
	cwm_log(c, MG_MQTT_LOG_DEBUG, "%s id %d: codes %s", what, r->id,
	        used > 0 ? cs : "(none)");
}

/* paho's receive thread: a message arrived. */
static void cwm_debug_received(struct mg_mqtt *c, const char *topic,
                               size_t tl, const MQTTClient_message *m)
{
	if (!cwm_debug_on(c))
		return;
	cwm_log(c, MG_MQTT_LOG_DEBUG,
	        "PUBLISH in: topic '%.*s', qos %d%s%s, %d bytes%s", (int)tl, topic,
	        m->qos, m->retained ? ", retained" : "", m->dup ? ", dup" : "",
	        m->payloadlen, m->properties.count > 0 ? ", with properties" : "");
}

/* mqtt-io at stop, before DISCONNECT. */
static void cwm_debug_disconnect(struct mg_mqtt *c)
{
	if (!cwm_debug_on(c))
		return;
	pthread_mutex_lock(&c->lock);
	char *b = cwm_strdup(c->broker != NULL ? c->broker : "the broker");
	pthread_mutex_unlock(&c->lock);
	cwm_log(c, MG_MQTT_LOG_DEBUG, "DISCONNECT to %s", b != NULL ? b : "");
	free(b);
}
