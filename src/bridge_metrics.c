/*
 * GET <path>/metrics: every client started on the server, in the
 * Prometheus text format (version 0.0.4), one `client` label a prefix.
 * The families are a table; each row reads one field of a snapshot.
 */
#include "internal.h"

#if MG_MQTT_ENABLE_BRIDGE

/* One client's numbers, taken under its locks. */
struct cwm_snap {
	char prefix[64];
	char client_id[256];
	const char *protocol; /* a static string */
	int bridge;
	uint64_t connected, published, publish_failed, received,
	    dropped_queue_full, connects, reconnects, in_flight, buffered,
	    queue_depth, subscriptions, replied, timeouts, failed, late, ws, sse,
	    delivered, dropped_clients, publishes, rejected, last_values;
};

/* The snapshots of every client of one server. */
struct cwm_snaps {
	struct cwm_snap *v;
	size_t n;
	int oom;
};

/* cwm_registry_each: one client, under the registry lock. */
static void cwm_snap_take(struct mg_mqtt *c, void *arg)
{
	struct cwm_snaps *all = arg;
	struct cwm_snap *nv = realloc(all->v, (all->n + 1) * sizeof(*nv)), *s;
	if (nv == NULL) {
		all->oom = 1;
		return;
	}
	all->v = nv;
	s = &nv[all->n++];
	memset(s, 0, sizeof(*s));
	snprintf(s->prefix, sizeof(s->prefix), "%s", c->prefix);
	s->protocol = cwm_protocol_name(c->cfg.protocol);
	pthread_mutex_lock(&c->lock);
	snprintf(s->client_id, sizeof(s->client_id), "%s",
	         c->client_id != NULL ? c->client_id : "");
	s->connected = c->state == CWM_CONNECTED;
	s->published = c->published;
	s->publish_failed = c->publish_failed;
	s->received = c->received;
	s->dropped_queue_full = c->dropped_queue_full;
	s->connects = c->connects;
	s->reconnects = c->reconnects;
	s->in_flight = (uint64_t)(c->inflight + c->inflight0);
	s->buffered = (uint64_t)cwm_buffered_locked(c);
	s->queue_depth = (uint64_t)c->ev_msgs;
	for (struct cwm_sub *sub = c->sub_head; sub != NULL; sub = sub->next)
		s->subscriptions++;
	pthread_mutex_unlock(&c->lock);
	s->replied = atomic_load(&c->req_replied);
	s->timeouts = atomic_load(&c->req_timeouts);
	s->failed = atomic_load(&c->req_failed);
	s->late = atomic_load(&c->req_late);
	struct cwm_bridge *b = c->bridge;
	if (b != NULL) {
		s->bridge = 1;
		s->ws = (uint64_t)atomic_load(&b->n_ws);
		s->sse = (uint64_t)atomic_load(&b->n_sse);
		s->delivered = atomic_load(&b->delivered);
		s->dropped_clients = atomic_load(&b->dropped_clients);
		s->publishes = atomic_load(&b->publishes);
		s->rejected = atomic_load(&b->rejected);
		pthread_mutex_lock(&b->lv_lock);
		s->last_values = b->lv.n;
		pthread_mutex_unlock(&b->lv_lock);
	}
}

#define CWM_F(field) offsetof(struct cwm_snap, field)

/* A family: its rows are one per client (label NULL) or, with a label, one
 * per client and label value. bridge: only clients that have a bridge. */
static const struct cwm_family {
	const char *name, *type, *help, *label;
	int bridge;
	struct {
		const char *value;
		size_t off;
	} rows[3];
} cwm_families[] = {
    {"connected", "gauge", "1 when connected to the broker.", NULL, 0,
     {{NULL, CWM_F(connected)}}},
    {"connects_total", "counter", "Successful connections to the broker.",
     NULL, 0, {{NULL, CWM_F(connects)}}},
    {"reconnects_total", "counter", "Connections made again after a lost one.",
     NULL, 0, {{NULL, CWM_F(reconnects)}}},
    {"messages_published_total", "counter",
     "Messages published and done (QoS 0 sent, QoS 1/2 acknowledged).", NULL,
     0, {{NULL, CWM_F(published)}}},
    {"messages_received_total", "counter",
     "Messages received from the broker and queued for the handlers.", NULL,
     0, {{NULL, CWM_F(received)}}},
    {"messages_dropped_total", "counter",
     "Messages lost, by reason: queue_full (QUEUE_SIZE), publish_failed "
     "(failed or refused after it was accepted), late_reply (a reply after "
     "its request timed out).", "reason", 0,
     {{"queue_full", CWM_F(dropped_queue_full)},
      {"publish_failed", CWM_F(publish_failed)},
      {"late_reply", CWM_F(late)}}},
    {"messages_in_flight", "gauge",
     "Messages handed to the network and not yet acknowledged.", NULL, 0,
     {{NULL, CWM_F(in_flight)}}},
    {"messages_buffered", "gauge",
     "Messages waiting to be sent (MAX_BUFFERED bounds them).", NULL, 0,
     {{NULL, CWM_F(buffered)}}},
    {"dispatch_queue_messages", "gauge",
     "Received messages waiting for the handlers (QUEUE_SIZE bounds them).",
     NULL, 0, {{NULL, CWM_F(queue_depth)}}},
    {"subscriptions", "gauge", "Topic filters subscribed (renewed on "
                               "reconnect).",
     NULL, 0, {{NULL, CWM_F(subscriptions)}}},
    {"requests_total", "counter",
     "Requests (mg_mqtt_request, POST <path>/request/...) by outcome: "
     "replied, timeout, failed.", "outcome", 0,
     {{"replied", CWM_F(replied)},
      {"timeout", CWM_F(timeouts)},
      {"failed", CWM_F(failed)}}},
    {"bridge_clients", "gauge", "Browsers connected to the bridge, by "
                                "transport.",
     "transport", 1, {{"websocket", CWM_F(ws)}, {"sse", CWM_F(sse)}}},
    {"bridge_messages_delivered_total", "counter",
     "Messages queued for browsers (one per browser).", NULL, 1,
     {{NULL, CWM_F(delivered)}}},
    {"bridge_clients_dropped_total", "counter",
     "Browsers dropped for falling BRIDGE_CLIENT_QUEUE messages behind.", NULL,
     1, {{NULL, CWM_F(dropped_clients)}}},
    {"bridge_publishes_total", "counter",
     "Messages published by browsers and HTTP clients.", NULL, 1,
     {{NULL, CWM_F(publishes)}}},
    {"bridge_rejected_total", "counter",
     "Requests refused by BRIDGE_PUBLISH_ALLOW or BRIDGE_SUBSCRIBE_ALLOW.",
     NULL, 1, {{NULL, CWM_F(rejected)}}},
    {"bridge_last_values", "gauge",
     "Topics whose last message is kept (BRIDGE_LAST_VALUES bounds them).",
     NULL, 1, {{NULL, CWM_F(last_values)}}},
};

/* A label value in the exposition format: \\, \" and \n escaped. */
static void cwm_wlabel(struct cwm_wbuf *o, const char *v)
{
	for (; *v != '\0'; v++) {
		if (*v == '\\' || *v == '"')
			cwm_wprintf(o, "\\%c", *v);
		else if (*v == '\n')
			cwm_wprintf(o, "\\n");
		else
			cwm_wprintf(o, "%c", *v);
	}
}

static void cwm_family_head(struct cwm_wbuf *o, const char *name,
                            const char *type, const char *help)
{
	cwm_wprintf(o, "# HELP civetweb_mqtt_%s %s\n# TYPE civetweb_mqtt_%s %s\n",
	            name, help, name, type);
}

static void cwm_metrics_render(struct cwm_wbuf *o, const struct cwm_snaps *s)
{
	cwm_family_head(o, "info", "gauge",
	                "Client identity: 1 for each client, its id and protocol "
	                "as labels.");
	for (size_t i = 0; i < s->n; i++) {
		cwm_wprintf(o, "civetweb_mqtt_info{client=\"%s\",client_id=\"",
		            s->v[i].prefix);
		cwm_wlabel(o, s->v[i].client_id);
		cwm_wprintf(o, "\",protocol=\"%s\"} 1\n", s->v[i].protocol);
	}
	for (size_t f = 0; f < sizeof(cwm_families) / sizeof(*cwm_families); f++) {
		const struct cwm_family *fam = &cwm_families[f];
		cwm_family_head(o, fam->name, fam->type, fam->help);
		for (size_t i = 0; i < s->n; i++) {
			if (fam->bridge && !s->v[i].bridge)
				continue;
			for (int r = 0; r < 3 && (r == 0 || fam->rows[r].value); r++) {
				uint64_t val;
				memcpy(&val, (const char *)&s->v[i] + fam->rows[r].off,
				       sizeof(val));
				cwm_wprintf(o, "civetweb_mqtt_%s{client=\"%s\"", fam->name,
				            s->v[i].prefix);
				if (fam->label != NULL)
					cwm_wprintf(o, ",%s=\"%s\"", fam->label,
					            fam->rows[r].value);
				cwm_wprintf(o, "} %llu\n", (unsigned long long)val);
			}
		}
	}
}

static int cwm_route_metrics(struct cwm_bridge *b, struct mg_connection *conn)
{
	struct cwm_wbuf o = {NULL, 0, 0, 0};
	struct cwm_snaps s = {NULL, 0, 0};

	cwm_registry_each(b->c->ctx, cwm_snap_take, &s);
	if (!s.oom)
		cwm_metrics_render(&o, &s);
	free(s.v);
	if (s.oom || o.oom) {
		free(o.p);
		return cwm_reply_error(conn, 500, "out of memory");
	}
	int status = cwm_reply_body(conn, 200, o.p, o.n,
	                            "text/plain; version=0.0.4; charset=utf-8",
	                            NULL, NULL);
	free(o.p);
	return status;
}

#endif /* MG_MQTT_ENABLE_BRIDGE */
