/*
 * What a browser sends the bridge: the JSON publish body (POST
 * <path>/publish and the WebSocket "publish" op: cwm_bridge_publish_json),
 * the WebSocket ops (subscribe, unsubscribe, unsubscribe_all, publish),
 * base64 (cwm_base64 / cwm_unbase64) and the digest Authorization header
 * parser (cwm_digest_param).
 *
 * The bridge and its MQTT client are fakes built from the library's own
 * structures: a client made by mg_mqtt_create() with settings read by
 * cwm_settings_read() (allow lists, BRIDGE_CLIENT_QUEUE), marked started
 * but disconnected, so that publish and subscribe validate everything and
 * queue their commands; the fuzzer then completes those commands the way
 * mqtt-io does (cwm_done) and takes the browser's replies off its queue
 * the way a writer thread does. No thread, socket or broker is involved.
 *
 * cwm_ws_data() itself cannot be called: it needs a CivetWeb connection
 * (mg_get_user_connection_data). What it does with a frame once it found
 * the bridge, cwm_ws_op(), is called instead.
 *
 * Input: byte 0 = flags (allow lists, MQTT 5, when commands complete,
 * WebSocket or SSE client); the rest: JSON texts separated by 0xff bytes.
 * Every text goes to the HTTP publish route and to the WebSocket handler.
 * The whole input also goes through base64 and the digest parser.
 */
#include "../civetweb_mqtt.c"

#include "fuzz_common.h"

/* Allow lists (publish, subscribe) the flags pick from. */
static const char *const allow_sets[][2] = {
    {"demo/#", "demo/#"}, /* the README's */
    {"demo/+/set, $SYS/broker/+, a/b", "demo/+/state, demo/x/#, $SYS/#"},
    {"#", "#, +/+"},
    {"$share/g/x, a/{room}/b, {x}, +/+/c", "+/#, $x/#, a/+/b"},
};
#define NSETS (sizeof(allow_sets) / sizeof(allow_sets[0]))

static struct mg_mqtt *cl;
static struct cwm_settings sets[NSETS];
static struct cwm_anchor anchor;
static struct cwm_bridge br;

static void quiet_log(struct mg_mqtt *c, int level, const char *text, void *u)
{
	(void)c;
	(void)level;
	(void)text;
	(void)u;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	char err[256];
	for (size_t i = 0; i < NSETS; i++) {
		const char *opts[] = {"MQTT_BRIDGE_PATH", "/mqtt",
		                      "MQTT_BRIDGE_PUBLISH_ALLOW", allow_sets[i][0],
		                      "MQTT_BRIDGE_SUBSCRIBE_ALLOW", allow_sets[i][1],
		                      "MQTT_BRIDGE_CLIENT_QUEUE", "8",
		                      NULL};
		if (cwm_settings_read(&sets[i], "MQTT", opts, err, sizeof(err)) != 0) {
			fprintf(stderr, "allow set %zu: %s\n", i, err);
			abort();
		}
	}
	cl = mg_mqtt_create("MQTT");
	CHECK(cl != NULL);
	cl->on_log = quiet_log;
	pthread_mutex_init(&anchor.lock, NULL);
	pthread_cond_init(&anchor.idle, NULL);
	snprintf(anchor.prefix, sizeof(anchor.prefix), "MQTT");
	br.c = cl;
	br.a = &anchor;
	br.path = "/mqtt";
	br.plen = strlen(br.path);
	br.realm = (char *)"example.com";
	memcpy(br.secret, "0123456789abcdef", 16);
	pthread_mutex_init(&br.nonce_lock, NULL);
	br.max_clients = 8;
	br.read_timeout_ms = 30000;
	pthread_cond_init(&br.wcond, NULL);
	pthread_cond_init(&br.idle, NULL);
	atomic_store(&anchor.bridge, &br);
	return 0;
}

/* ---- the fake mqtt-io and writer ---------------------------------------- */

/* Completes every queued command as if the broker had acknowledged it. */
static void complete_commands(void)
{
	for (;;) {
		pthread_mutex_lock(&cl->lock);
		struct cwm_out *r = cl->outq;
		if (r != NULL && (cl->outq = r->next) == NULL)
			cl->outq_tail = NULL;
		pthread_mutex_unlock(&cl->lock);
		if (r == NULL)
			break;
		r->next = NULL;
		cwm_done(cl, r, 0, 0, NULL, 0);
	}
	CHECK(cl->evq == NULL); /* no handlers: no events */
}

/* What the browser got since the last call. */
struct replies {
	char last[16]; /* op of the last ack / error ("" when none) */
	int messages;  /* {"op":"message"} */
};

/* A delivered message: valid JSON text in UTF-8 (a WebSocket text frame),
 * with the topic and payload that were delivered. */
static void check_message(const cJSON *o, const char *text, size_t len,
                          const char *topic, const void *payload, size_t plen)
{
	CHECKF(fz_utf8(text, len, FZ_UTF8_TEXT), "message not UTF-8: %s", text);
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "topic");
	const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "payload");
	const cJSON *b64 = cJSON_GetObjectItemCaseSensitive(o, "base64");
	CHECK(cJSON_IsString(t) && strcmp(t->valuestring, topic) == 0);
	CHECK(cJSON_IsString(p));
	if (cJSON_IsTrue(b64)) {
		size_t n;
		unsigned char *d = cwm_unbase64(p->valuestring, &n);
		CHECK(d != NULL && n == plen && memcmp(d, payload, n) == 0);
		free(d);
	} else {
		CHECK(strlen(p->valuestring) == plen &&
		      memcmp(p->valuestring, payload, plen) == 0);
	}
}

/* Takes the browser's replies off its queue like a writer thread; every
 * one must be a JSON object with an "op"; messages must be topic (with
 * payload) when topic is not NULL. */
static void take_replies(struct cwm_bclient *bc, struct replies *rp,
                         const char *topic, const void *payload, size_t plen)
{
	rp->last[0] = '\0';
	rp->messages = 0;
	pthread_mutex_lock(&anchor.lock);
	while (bc->qlen > 0) {
		struct cwm_bmsg *m = bc->q[bc->qhead];
		bc->qhead = (bc->qhead + 1) % bc->qcap;
		bc->qlen--;
		CHECK(strlen(m->text) == m->len);
		cJSON *o = cJSON_ParseWithLength(m->text, m->len);
		const cJSON *op = cJSON_GetObjectItemCaseSensitive(o, "op");
		CHECKF(cJSON_IsObject(o) && cJSON_IsString(op), "reply '%s'", m->text);
		if (strcmp(op->valuestring, "message") == 0) {
			CHECK(topic != NULL);
			check_message(o, m->text, m->len, topic, payload, plen);
			rp->messages++;
		} else {
			snprintf(rp->last, sizeof(rp->last), "%s", op->valuestring);
		}
		if (strcmp(op->valuestring, "error") == 0) {
			const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "status");
			const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
			CHECK(cJSON_IsNumber(st) && st->valueint >= 400 &&
			      st->valueint < 600);
			CHECK(cJSON_IsString(e) && e->valuestring[0] != '\0');
		}
		cJSON_Delete(o);
		cwm_bmsg_put(m);
	}
	/* The writers' list: taken. */
	br.ready = br.ready_tail = NULL;
	bc->listed = 0;
	bc->close_frame = 0;
	pthread_mutex_unlock(&anchor.lock);
}

/* Delivers copies of a message on topic (as mqtt-dispatch does) and checks
 * the browser gets each one exactly when one of its filters matches, until
 * its queue (BRIDGE_CLIENT_QUEUE 8) overflows and it is dropped. */
static void deliver(struct cwm_bclient *bc, const char *topic,
                    const void *payload, size_t plen, int copies,
                    const struct fz_pieces *pc)
{
	struct mg_mqtt_props props;
	struct mg_mqtt_user_property up[2];
	struct mg_mqtt_message m;
	struct replies rp;
	memset(&props, 0, sizeof(props));
	memset(&m, 0, sizeof(m));
	if (cl->v5 && pc->n >= 2 && fz_utf8(pc->s[0], strlen(pc->s[0]), FZ_UTF8_MQTT) &&
	    fz_utf8(pc->s[1], strlen(pc->s[1]), FZ_UTF8_MQTT)) {
		up[0].name = pc->s[0];
		up[0].value = pc->s[1];
		up[1].name = "k";
		up[1].value = "";
		props.user = up;
		props.user_count = 2;
		props.correlation_data = payload;
		props.correlation_len = plen;
		props.content_type = "text/plain";
		props.response_topic = topic;
		props.message_expiry = 60;
		props.payload_utf8 = 1;
	}
	m.topic = topic;
	m.topic_len = strlen(topic);
	m.payload = payload;
	m.payload_len = plen;
	m.qos = copies % 3;
	m.props = &props;

	pthread_mutex_lock(&anchor.lock);
	int dead0 = bc->dead, want = 0;
	for (size_t i = 0; i < bc->filters.nb && !want; i++)
		for (struct cwm_map_ent *e = bc->filters.b[i]; e != NULL && !want;
		     e = e->next)
			want = fz_match(e->key, strlen(e->key), topic, m.topic_len) == 1;
	pthread_mutex_unlock(&anchor.lock);
	for (int k = 0; k < copies; k++)
		cwm_bridge_deliver(&br, &m);
	take_replies(bc, &rp, topic, payload, plen);
	if (dead0 || !want)
		CHECKF(rp.messages == 0, "'%s' delivered %d times, not wanted", topic,
		       rp.messages);
	else if (copies <= 8)
		CHECKF(rp.messages == copies, "'%s' delivered %d of %d", topic,
		       rp.messages, copies);
	else
		CHECK(bc->dead && rp.messages == 0); /* dropped, queue flushed */
}

/* ---- embedded NULs -------------------------------------------------------- */

/* The JSON text with every NUL a string would hold (a raw 0x00 byte or
 * \u0000 inside a string) made U+0001: parsed, it has the same shape as the
 * original, and a string the original cut short at a NUL is longer here. */
static char *without_nuls(const char *s, size_t n)
{
	char *o = malloc(n + 1);
	int in = 0;
	memcpy(o, s, n);
	o[n] = '\0';
	for (size_t i = 0; i < n; i++) {
		if (!in) {
			in = o[i] == '"';
			continue;
		}
		if (o[i] == '\0')
			o[i] = '\x01';
		else if (o[i] == '"')
			in = 0;
		else if (o[i] == '\\' && i + 1 < n) {
			if (o[i + 1] == 'u' && i + 5 < n && memcmp(o + i + 2, "0000", 4) == 0)
				o[i + 5] = '1';
			i++;
		}
	}
	return o;
}

/* Items of a whose string or key (in b, the same tree without NULs) was
 * cut at a NUL: 1 when one of them is in the set want[] or below one. */
static int nul_in(const cJSON *a, const cJSON *b, const cJSON *const *want,
                  int nwant, int below)
{
	for (int i = 0; i < nwant && !below; i++)
		below = a == want[i];
	if (below) {
		if (a->string != NULL && b->string != NULL &&
		    strlen(a->string) != strlen(b->string))
			return 1;
		if (cJSON_IsString(a) && cJSON_IsString(b) &&
		    strlen(a->valuestring) != strlen(b->valuestring))
			return 1;
	}
	const cJSON *x = a->child, *y = b->child;
	for (; x != NULL && y != NULL; x = x->next, y = y->next)
		if (nul_in(x, y, want, nwant, below))
			return 1;
	return 0;
}

/* 1 when one of the fields the publish uses held a NUL in the JSON text. */
static int publish_nul(const cJSON *req, const cJSON *req2)
{
	const cJSON *want[8];
	int n = 0;
	const cJSON *props = cJSON_GetObjectItemCaseSensitive(req, "properties");
	want[n++] = cJSON_GetObjectItemCaseSensitive(req, "topic");
	want[n++] = cJSON_GetObjectItemCaseSensitive(req, "payload");
	want[n++] = cJSON_GetObjectItemCaseSensitive(props, "user");
	want[n++] = cJSON_GetObjectItemCaseSensitive(props, "content_type");
	want[n++] = cJSON_GetObjectItemCaseSensitive(props, "response_topic");
	want[n++] = cJSON_GetObjectItemCaseSensitive(props, "correlation_data");
	return req2 != NULL && nul_in(req, req2, want, n, 0);
}

/* ---- publishing ------------------------------------------------------------ */

/* Publish outcome: refused with a status and a sentence and nothing
 * queued, or queued with exactly the topic and payload the JSON named. */
static void check_publish(const cJSON *req, int had_nul, int id,
                          const char *err, struct cwm_out *tail0,
                          int unfinished0, const struct cwm_settings *s)
{
	int status = id <= 0 ? cwm_http_status(id) : 200;
	const cJSON *topic = cJSON_GetObjectItemCaseSensitive(req, "topic");
	const cJSON *payload = cJSON_GetObjectItemCaseSensitive(req, "payload");
	const cJSON *b64 = cJSON_GetObjectItemCaseSensitive(req, "base64");
	if (id <= 0) {
		CHECKF(status == 400 || status == 403 || status == 413 ||
		           status == 500 || status == 503,
		       "status %d", status);
		CHECK(err != NULL && err[0] != '\0');
		CHECK(cl->outq_tail == tail0 && cl->unfinished == unfinished0);
		return;
	}
	struct cwm_out *r = cl->outq_tail;
	CHECK(r != NULL && r != tail0 && r->type == CMD_PUBLISH && r->id == id);
	CHECK(cl->unfinished == unfinished0 + 1);
	CHECK(cJSON_IsString(topic));
	CHECK(strcmp(r->topic, topic->valuestring) == 0);
	CHECK(fz_topic_ok(r->topic, strlen(r->topic)));
	CHECK(r->qos >= 0 && r->qos <= 2);
	/* The allow list, by the reference matcher. */
	int allowed = 0;
	for (int i = 0; i < s->nbpub && !allowed; i++)
		allowed = ref_topic_matches(s->bpub[i], r->topic);
	CHECKF(allowed, "published to '%s', which no allow filter matches",
	       r->topic);
	if (cJSON_IsString(payload) && !cJSON_IsTrue(b64)) {
		CHECK(r->len == strlen(payload->valuestring));
		CHECK(memcmp(r->payload, payload->valuestring, r->len) == 0);
	}
	if (!cl->v5)
		CHECK(r->props == NULL);
	if (r->props != NULL) {
		const struct mg_mqtt_props *p = r->props;
		for (size_t i = 0; i < p->user_count; i++)
			CHECK(fz_utf8(p->user[i].name, strlen(p->user[i].name),
			              FZ_UTF8_MQTT) &&
			      fz_utf8(p->user[i].value, strlen(p->user[i].value),
			              FZ_UTF8_MQTT));
		if (p->response_topic != NULL)
			CHECK(fz_topic_ok(p->response_topic, strlen(p->response_topic)));
	}
	/* Required: a field cut short at a NUL is refused, not sent cut. */
	CHECKF(!had_nul, "published with a NUL-truncated field (topic '%s')",
	       r->topic);
	/* Required: base64 with anything but '=' after the padding is
	 * malformed, not decoded up to the '='. */
	if (cJSON_IsString(payload) && cJSON_IsTrue(b64)) {
		const char *eq = strchr(payload->valuestring, '=');
		CHECKF(eq == NULL || strspn(eq, "=") == strlen(eq),
		       "base64 after the padding: payload '%s' accepted",
		       payload->valuestring);
	}
}

/* ---- the browser's subscriptions ---------------------------------------- */

/* Every filter the browser holds is valid, allowed, counted once in the
 * client's table, and the delivery tree gives the browser exactly the
 * topics its filters match, all of them inside the allow list. */
static void check_subscriptions(struct cwm_bclient *bc,
                                const struct cwm_settings *s)
{
	const char *subst[] = {"x", "", "$x", "state", "set", "b", "$SYS"};
	struct cwm_vec cur = {0}, nxt = {0}, out = {0};
	size_t live = 0;
	pthread_mutex_lock(&anchor.lock);
	pthread_mutex_lock(&cl->lock);
	for (struct cwm_sub *sub = cl->sub_head; sub != NULL; sub = sub->next)
		live++;
	CHECKF(live == (bc->dead ? 0 : bc->filters.n),
	       "%zu subscriptions for %zu browser filters", live, bc->filters.n);
	pthread_mutex_unlock(&cl->lock);
	for (size_t i = 0; i < bc->filters.nb; i++)
		for (struct cwm_map_ent *e = bc->filters.b[i]; e != NULL;
		     e = e->next) {
			const char *f = e->key;
			struct cwm_sub *sub = cwm_map_get(&cl->subs, f, strlen(f));
			CHECKF(sub != NULL && !sub->gone && sub->brefs == 1,
			       "filter '%s' not counted once", f);
			CHECK(mg_mqtt_filter_valid(f) == 0 && cwm_share_len(f, strlen(f)) == 0);
			CHECK(cwm_may_subscribe(&br, f));
			char *d[8];
			int nd = fz_derive_topics(f, subst, 7, d, 8);
			for (int k = 0; k < nd; k++) {
				const char *t = d[k];
				size_t tn = strlen(t);
				if (fz_match(f, strlen(f), t, tn) == 1) {
					int allowed = 0;
					for (int j = 0; j < s->nbsub && !allowed; j++)
						allowed = fz_match(s->bsub[j], strlen(s->bsub[j]), t,
						                   tn) == 1;
					CHECKF(allowed,
					       "browser filter '%s' gets '%s', which no allow "
					       "filter matches",
					       f, t);
				}
				/* Delivery: the tree and the browser's filters agree. */
				int want = 0;
				for (size_t i2 = 0; i2 < bc->filters.nb && !want; i2++)
					for (struct cwm_map_ent *e2 = bc->filters.b[i2];
					     e2 != NULL && !want; e2 = e2->next)
						want = fz_match(e2->key, strlen(e2->key), t, tn) == 1;
				CHECK(cwm_tree_match(&br.tree, t, tn, &cur, &nxt, &out) == 0);
				for (size_t h = 0; h < out.n; h++)
					CHECK(((struct cwm_handler *)out.v[h])->ud == bc);
				CHECKF((out.n > 0) == want, "tree gives '%s' %zu handlers, "
				       "the browser's filters %d", t, out.n, want);
				free(d[k]);
			}
		}
	pthread_mutex_unlock(&anchor.lock);
	free(cur.v);
	free(nxt.v);
	free(out.v);
}

/* ---- base64 and digest ------------------------------------------------- */

static void fuzz_base64(const uint8_t *data, size_t size)
{
	char *enc = cwm_base64(data, size);
	size_t n = 0;
	CHECK(enc != NULL && strlen(enc) == 4 * ((size + 2) / 3));
	unsigned char *dec = cwm_unbase64(enc, &n);
	CHECK(dec != NULL && n == size && memcmp(dec, data, size) == 0);
	free(dec);
	/* Unpadded, as browsers' btoa users sometimes send it. */
	size_t el = strlen(enc);
	while (el > 0 && enc[el - 1] == '=')
		enc[--el] = '\0';
	dec = cwm_unbase64(enc, &n);
	CHECK(dec != NULL && n == size && memcmp(dec, data, size) == 0);
	free(dec);
	free(enc);

	/* The input as base64 text: decoded, its re-encoding decodes the same;
	 * only '=' may follow the first '='. */
	char *s = cwm_strndup((const char *)data, size);
	dec = cwm_unbase64(s, &n);
	if (dec != NULL) {
		char *again = cwm_base64(dec, n);
		size_t n2;
		unsigned char *dec2 = cwm_unbase64(again, &n2);
		CHECK(dec2 != NULL && n2 == n && memcmp(dec2, dec, n) == 0);
		const char *eq = strchr(s, '=');
		CHECKF(eq == NULL || strspn(eq, "=") == strlen(eq),
		       "'%s' decoded, text after '='", s);
		free(dec2);
		free(again);
		free(dec);
	}
	free(s);
}

/* The sizes cwm_digest_check gives cwm_digest_param. */
static const struct {
	const char *name;
	size_t size;
} dparams[] = {{"username", 256}, {"realm", 256}, {"nonce", 64},
               {"uri", 2048},     {"response", 64}, {"qop", 16},
               {"nc", 16},        {"cnonce", 256}};
#define NDPARAMS (sizeof(dparams) / sizeof(dparams[0]))

/* Nesting of arrays and objects in a parsed value (1 for [] or {}). */
static int json_depth(const cJSON *j)
{
	int d = 0;
	const cJSON *e;
	if (!cJSON_IsArray(j) && !cJSON_IsObject(j))
		return 0;
	cJSON_ArrayForEach(e, j)
	{
		int k = json_depth(e);
		if (k > d)
			d = k;
	}
	return d + 1;
}

static void fuzz_digest(const char *h, const struct fz_pieces *pc)
{
	/* Any header: values fit their buffers (heap, exact size: ASan sees
	 * one byte too many). */
	for (size_t i = 0; i < NDPARAMS; i++) {
		char *out = malloc(dparams[i].size);
		if (cwm_digest_param(h, dparams[i].name, out, dparams[i].size) == 0)
			CHECK(strlen(out) < dparams[i].size);
		free(out);
		char one[1];
		if (cwm_digest_param(h, dparams[i].name, one, 1) == 0)
			CHECK(one[0] == '\0');
	}
	/* What cwm_digest_check does with the nonce. */
	char nonce[80], want[80];
	long long t;
	unsigned long long seq;
	if (cwm_digest_param(h, "nonce", nonce, sizeof(nonce)) == 0 &&
	    cwm_nonce_parse(&br, nonce, &t, &seq) == 0) {
		cwm_nonce_format(&br, t, seq, want);
		CHECK(strcmp(want, nonce) == 0);
	}

	/* A header built from pieces as quoted strings parses back to them. */
	if (pc->n < 2)
		return;
	char *hdr = malloc(16 * 1024), *o = hdr;
	size_t cap = 16 * 1024;
	const char *vals[NDPARAMS];
	for (size_t i = 0; i < NDPARAMS; i++) {
		vals[i] = pc->s[i % (size_t)pc->n];
		if (strlen(vals[i]) > 1000)
			vals[i] = "x";
		o += snprintf(o, cap - (size_t)(o - hdr), "%s%s=\"", i ? ", " : "",
		              dparams[i].name);
		for (const char *v = vals[i]; *v; v++) {
			if (*v == '"' || *v == '\\')
				*o++ = '\\';
			*o++ = *v;
		}
		*o++ = '"';
	}
	*o = '\0';
	for (size_t i = 0; i < NDPARAMS; i++) {
		char *out = malloc(dparams[i].size);
		int rc = cwm_digest_param(hdr, dparams[i].name, out, dparams[i].size);
		if (strlen(vals[i]) < dparams[i].size)
			CHECKF(rc == 0 && strcmp(out, vals[i]) == 0,
			       "%s=\"%s\" read back as '%s' (rc %d) from %s",
			       dparams[i].name, vals[i], rc == 0 ? out : "", rc, hdr);
		free(out);
	}
	free(hdr);
}

/* ---- one input ----------------------------------------------------------- */

static int fuzz_one(const uint8_t *data, size_t size)
{
	struct fz_pieces pc;
	struct replies rp;
	if (size < 1 || size > 65536)
		return 0;
	unsigned flags = data[0];
	const struct cwm_settings *s = &sets[flags % NSETS];
	int drain_each = flags >> 3 & 1;
	enum cwm_bkind kind = flags >> 4 & 1 ? BC_SSE : BC_WS;

	fuzz_base64(data + 1, size - 1);
	fz_split(data + 1, size - 1, &pc);
	char *whole = cwm_strndup((const char *)data + 1, size - 1);
	fuzz_digest(whole, &pc);
	free(whole);

	cl->cfg = *s; /* shares the strings: never freed here */
	cl->v5 = flags >> 2 & 1;
	cl->state = CWM_DISCONNECTED;
	atomic_store(&cl->ops_ok, 1);

	pthread_mutex_lock(&anchor.lock);
	struct cwm_bclient *bc = cwm_bclient_new(&br, NULL, kind);
	pthread_mutex_unlock(&anchor.lock);
	CHECK(bc != NULL);

	for (int i = 0; i < pc.n && i < 16; i++) {
		/* As the bridge parses (cwm_route_publish, cwm_ws_data): JSON
		 * holding a NUL, raw or \u0000, is refused there. */
		const char *jerr = NULL;
		int depth = cl->cfg.bridge_max_json_depth;
		cJSON *req = cwm_json_parse(pc.s[i], pc.len[i], depth, &jerr);
		/* Never given to cJSON unchecked: on this stack, 700 levels would
		 * crash (as they did a worker). What parsed is within the bound. */
		CHECK(req != NULL || jerr != NULL ||
		      cJSON_ParseWithLength(pc.s[i], pc.len[i]) == NULL);
		CHECK(req == NULL || json_depth(req) <= depth);
		char *clean = req != NULL ? without_nuls(pc.s[i], pc.len[i]) : NULL;
		cJSON *req2 = clean != NULL ? cJSON_ParseWithLength(clean, pc.len[i])
		                            : NULL;
		free(clean);
		/* Before any call: the bridge may rewrite strings in place. */
		const cJSON *tw[1] = {cJSON_GetObjectItemCaseSensitive(req, "topic")};
		int pub_nul = cJSON_IsObject(req) && req2 != NULL && publish_nul(req, req2);
		int sub_nul = cJSON_IsObject(req) && req2 != NULL && nul_in(req, req2, tw, 1, 0);

		/* POST <path>/publish: cwm_route_publish after the body is read. */
		if (cJSON_IsObject(req)) {
			int unfinished0 = cl->unfinished;
			const char *err = NULL;
			struct cwm_out *tail0 = cl->outq_tail;
			int id = cwm_bridge_publish_json(&br, req, &err);
			check_publish(req, pub_nul, id, err, tail0, unfinished0, s);
		}

		/* The same text (or, for flag bit 5, a binary frame) over the
		 * WebSocket. */
		int text = !(flags >> 5 & 1) || i > 0;
		struct cwm_ws_result res = {0};
		struct cwm_out *tail0 = cl->outq_tail;
		int unfinished0 = cl->unfinished;
		if (!bc->dead) /* cwm_ws_data ends a dropped client's connection */
			cwm_ws_op(&br, bc, text ? req : NULL, text, NULL, &res);
		if (res.kind == CWM_WS_PUBLISH)
			check_publish(req, pub_nul, res.rc == 0 ? res.mid : res.rc,
			              res.err, tail0, unfinished0, s);
		take_replies(bc, &rp, NULL, NULL, 0);
		CHECKF(bc->dead || strcmp(rp.last, res.rc == 0 ? "ack" : "error") == 0,
		       "code %d, reply '%s'", res.rc, rp.last);
		if (res.kind == CWM_WS_SUBSCRIBE && res.rc == 0)
			CHECKF(!sub_nul, "subscribed to NUL-truncated filter '%s'",
			       tw[0]->valuestring);
		if (drain_each)
			complete_commands();
		check_subscriptions(bc, s);

		/* A message from the broker on this piece as a topic (or one
		 * its subscriptions would match). */
		const char *dsub[] = {"x", "state"};
		char *d[1] = {NULL};
		const char *topic = pc.s[i];
		if (!fz_topic_ok(topic, strlen(topic))) {
			const cJSON *tf = cJSON_GetObjectItemCaseSensitive(req2, "topic");
			if (cJSON_IsString(tf) &&
			    fz_derive_topics(tf->valuestring, dsub, 2, d, 1) == 1)
				topic = d[0];
			else
				topic = NULL;
		}
		if (topic != NULL)
			deliver(bc, topic, pc.s[i], pc.len[i], 1 + 4 * (int)(flags >> 6),
			        &pc);
		free(d[0]);
		cJSON_Delete(req);
		cJSON_Delete(req2);
	}

	/* The browser leaves: nothing may remain subscribed. */
	pthread_mutex_lock(&anchor.lock);
	cwm_bclient_remove(&br, bc);
	pthread_mutex_unlock(&anchor.lock);
	cwm_bclient_free(bc);
	complete_commands();
	CHECK(cl->subs.n == 0 && cl->sub_head == NULL && cl->sub_tail == NULL);
	CHECK(cwm_tnode_empty(&br.tree));
	CHECK(cl->unfinished == 0 && cl->outq == NULL);
	CHECK(br.clients == NULL);
	fz_pieces_free(&pc);
	return 0;
}

FZ_ENTRY(fuzz_one)
