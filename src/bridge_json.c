/*
 * JSON from browsers: parsing with its guards, base64 payloads, the messages
 * browsers receive (struct cwm_bmsg), and publishing what a browser sent.
 */
#include "internal.h"

#if MG_MQTT_ENABLE_BRIDGE

/* cJSON turns "\u0000" inside a string into a C string cut there: the
 * bridge refuses such JSON rather than act on a shortened field (binary
 * payloads travel as base64); a raw NUL byte likewise. */
static const char cwm_json_nul_err[] =
    "a JSON string holds \\u0000 (NUL), which no topic, text payload or "
    "property can carry; send binary payloads as base64";

/* 1 when the number token s (n bytes) means exactly what its double
 * means: at most 15 significant digits (DBL_DIG), or more that the double
 * spells the same; a finite value, and not 0 for non-zero digits. cJSON
 * keeps a double only, so 123456789012345678901234567890 would go on as
 * 1.2345678901234568e+29: such a number is refused (send it as a
 * string). */
static int cwm_json_number_exact(const char *s, size_t n)
{
	char tok[64], dig[48], got[80];
	size_t nd = 0, i = 0;
	if (n >= sizeof(tok))
		return 0;
	memcpy(tok, s, n);
	tok[n] = '\0';
	if (tok[i] == '-')
		i++;
	for (; tok[i] != '\0' && tok[i] != 'e' && tok[i] != 'E'; i++) {
		if (tok[i] == '.' || (nd == 0 && tok[i] == '0'))
			continue;
		if (nd + 1 >= sizeof(dig))
			return 0;
		dig[nd++] = tok[i];
	}
	while (nd > 0 && dig[nd - 1] == '0')
		nd--;
	dig[nd] = '\0';
	char *end;
	double d = strtod(tok, &end);
	if (*end != '\0' || !isfinite(d) || (nd > 0 && d == 0))
		return 0;
	if (nd <= 15)
		return 1;
	/* The double's own digits, as many as the text has. */
	snprintf(got, sizeof(got), "%.*e", (int)nd - 1, d < 0 ? -d : d);
	size_t k = 0;
	for (const char *p = got; *p != '\0' && *p != 'e'; p++)
		if (*p != '.')
			got[k++] = *p;
	got[k] = '\0';
	return k == nd && memcmp(got, dig, nd) == 0;
}

/* What cJSON is never given: text that is not UTF-8, a NUL (raw, or as
 * \u0000, which cJSON would cut a string at: a topic "a\u0000/x" read as
 * "a"), nesting deeper than depth (cJSON recurses once a level, on a
 * CivetWeb worker's small stack), and numbers a double cannot hold
 * exactly. One pass, before parsing. Returns NULL or why not. */
static const char *cwm_json_scan(const char *s, size_t n, int depth)
{
	int level = 0;
	if (memchr(s, '\0', n) != NULL)
		return cwm_json_nul_err;
	if (!cwm_utf8_text(s, n))
		return "the JSON text is not valid UTF-8";
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		if (ch == '"') {
			for (i++; i < n && s[i] != '"'; i++) {
				if (s[i] != '\\')
					continue;
				if (n - i >= 6 && memcmp(s + i + 1, "u0000", 5) == 0)
					return cwm_json_nul_err;
				i++; /* the escaped character */
			}
		} else if (ch == '[' || ch == '{') {
			if (++level > depth)
				return "the JSON text is nested too deeply "
				       "(BRIDGE_MAX_JSON_DEPTH)";
		} else if (ch == ']' || ch == '}') {
			level--;
		} else if (ch == '-' || (ch >= '0' && ch <= '9')) {
			size_t l = strspn(s + i, "0123456789+-.eE");
			if (i + l > n)
				l = n - i;
			if (!cwm_json_number_exact(s + i, l))
				return "a JSON number has more digits than a double "
				       "holds (send it as a string)";
			i += l - 1;
		}
	}
	return NULL;
}

/* Parses JSON from the network: cwm_json_scan first, then cJSON, and
 * nothing but white space may follow the value. NULL with *err set (or
 * NULL: plain malformed JSON) when it does not parse. */
static cJSON *cwm_json_parse(const char *s, size_t n, int depth,
                             const char **err)
{
	const char *end = NULL;
	if ((*err = cwm_json_scan(s, n, depth)) != NULL)
		return NULL;
	cJSON *j = cJSON_ParseWithLengthOpts(s, n, &end, 0);
	if (j == NULL)
		return NULL;
	while (end < s + n && (*end == ' ' || *end == '\t' || *end == '\r' ||
	                       *end == '\n'))
		end++;
	if (end != s + n) {
		cJSON_Delete(j);
		*err = "text follows the JSON value";
		return NULL;
	}
	return j;
}

/* Decodes standard base64 (padding optional); NULL if malformed. */
static unsigned char *cwm_unbase64(const char *s, size_t *len)
{
	size_t n = strlen(s), o = 0;
	unsigned char *out = malloc(n / 4 * 3 + 3);
	uint32_t acc = 0;
	int bits = 0;
	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		int v = ch >= 'A' && ch <= 'Z'   ? ch - 'A'
		        : ch >= 'a' && ch <= 'z' ? ch - 'a' + 26
		        : ch >= '0' && ch <= '9' ? ch - '0' + 52
		        : ch == '+'              ? 62
		        : ch == '/'              ? 63
		                                 : -1;
		if (ch == '=') {
			if (strspn(s + i, "=") != n - i) { /* padding only at the end */
				free(out);
				return NULL;
			}
			break;
		}
		if (v < 0) {
			free(out);
			return NULL;
		}
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	if (bits >= 6) { /* a lone trailing character */
		free(out);
		return NULL;
	}
	*len = o;
	return out;
}

static void cwm_bmsg_put(struct cwm_bmsg *m)
{
	if (m != NULL && atomic_fetch_sub(&m->refs, 1) == 1) {
		free(m->sse);
		free(m);
	}
}

/* A JSON object as an outgoing message (acks, errors, hello, and the
 * messages themselves). */
static struct cwm_bmsg *cwm_bmsg_json(cJSON *o)
{
	char *json = cJSON_PrintUnformatted(o);
	if (json == NULL)
		return NULL;
	size_t n = strlen(json);
	struct cwm_bmsg *bm = malloc(sizeof(*bm) + n + 1);
	if (bm != NULL) {
		atomic_init(&bm->refs, 1);
		bm->len = n;
		bm->sse = NULL;
		bm->sse_len = 0;
		memcpy(bm->text, json, n + 1);
	}
	cJSON_free(json);
	return bm;
}

/* The JSON a browser receives for a message. */
static struct cwm_bmsg *cwm_bmsg_make(const struct mg_mqtt_message *m)
{
	cJSON *o = cJSON_CreateObject();
	if (o == NULL)
		return NULL;
	cJSON_AddStringToObject(o, "op", "message");
	cJSON_AddStringToObject(o, "topic", m->topic);
	if (cwm_add_payload(o, m->payload, m->payload_len) != 0) {
		cJSON_Delete(o);
		return NULL;
	}
	cJSON_AddNumberToObject(o, "qos", m->qos);
	cJSON_AddBoolToObject(o, "retain", m->retain);
	const struct mg_mqtt_props *p = m->props;
	if (p->user_count > 0 || p->response_topic || p->correlation_data ||
	    p->content_type || p->message_expiry || p->payload_utf8) {
		cJSON *pr = cJSON_AddObjectToObject(o, "properties");
		if (p->user_count > 0) {
			cJSON *u = cJSON_AddObjectToObject(pr, "user");
			for (size_t i = 0; i < p->user_count; i++)
				cJSON_AddStringToObject(u, p->user[i].name, p->user[i].value);
		}
		if (p->response_topic)
			cJSON_AddStringToObject(pr, "response_topic", p->response_topic);
		if (p->correlation_data) {
			char *cd = cwm_base64(p->correlation_data, p->correlation_len);
			cJSON_AddStringToObject(pr, "correlation_data", cd ? cd : "");
			free(cd);
		}
		if (p->content_type)
			cJSON_AddStringToObject(pr, "content_type", p->content_type);
		if (p->message_expiry)
			cJSON_AddNumberToObject(pr, "message_expiry", p->message_expiry);
		if (p->payload_utf8)
			cJSON_AddBoolToObject(pr, "payload_utf8", 1);
	}
	struct cwm_bmsg *bm = cwm_bmsg_json(o);
	cJSON_Delete(o);
	return bm;
}


/* -- publishing from JSON (HTTP and WebSocket) --------------------------------- */

/* What a browser's publish carries besides the topic; the buffers are
 * freed by cwm_jpub_free. */
struct cwm_jpub {
	const void *data; /* the payload */
	size_t len;
	int qos, retain;
	struct mg_mqtt_props p;
	struct mg_mqtt_user_property user[32];
	unsigned char *raw, *cd; /* decoded base64: payload, correlation data */
	char *printed;           /* a payload that was not a string, as text */
};

static void cwm_jpub_free(struct cwm_jpub *j)
{
	free(j->raw);
	free(j->cd);
	cJSON_free(j->printed);
}

/* "qos" and "retain". */
static int cwm_jpub_flags(const cJSON *req, struct cwm_jpub *j,
                          const char **err)
{
	const cJSON *qos = cJSON_GetObjectItemCaseSensitive(req, "qos");
	const cJSON *retain = cJSON_GetObjectItemCaseSensitive(req, "retain");
	if (qos != NULL && (!cJSON_IsNumber(qos) || qos->valuedouble < 0 ||
	                    qos->valuedouble > 2 ||
	                    qos->valuedouble != (double)qos->valueint))
		return *err = "\"qos\" must be 0, 1 or 2", MG_MQTT_ERR_QOS;
	j->qos = qos != NULL ? qos->valueint : 0;
	if (retain != NULL && !cJSON_IsBool(retain))
		return *err = "\"retain\" must be true or false", MG_MQTT_ERR_INVALID;
	j->retain = cJSON_IsTrue(retain);
	return 0;
}

/* The payload: a string, base64 when "base64" is true, or any other JSON
 * value as its text. */
static int cwm_jpub_data(const cJSON *req, struct cwm_jpub *j, const char **err)
{
	const cJSON *payload = cJSON_GetObjectItemCaseSensitive(req, "payload");
	const cJSON *base64 = cJSON_GetObjectItemCaseSensitive(req, "base64");
	j->data = "";
	if (cJSON_IsString(payload) && cJSON_IsTrue(base64)) {
		if ((j->raw = cwm_unbase64(payload->valuestring, &j->len)) == NULL)
			return *err = "\"payload\" is not valid base64",
			       MG_MQTT_ERR_INVALID;
		j->data = j->raw;
	} else if (cJSON_IsString(payload)) {
		j->data = payload->valuestring;
		j->len = strlen(payload->valuestring);
	} else if (payload != NULL && !cJSON_IsNull(payload)) {
		if ((j->printed = cJSON_PrintUnformatted(payload)) == NULL)
			return *err = "out of memory", MG_MQTT_ERR_NOMEM;
		j->data = j->printed;
		j->len = strlen(j->printed);
	}
	return 0;
}

/* "properties": {"user":{..}, "message_expiry", "content_type",
 * "response_topic", "correlation_data" (base64)}. */
static int cwm_jpub_props(const cJSON *props, struct cwm_jpub *j,
                          const char **err)
{
	struct mg_mqtt_props *p = &j->p;
	const cJSON *u = cJSON_GetObjectItemCaseSensitive(props, "user"), *e;
	if (!cJSON_IsObject(props) || (u != NULL && !cJSON_IsObject(u)))
		return *err = "\"properties\" must be an object; \"user\" an object "
		              "of strings",
		       MG_MQTT_ERR_INVALID;
	cJSON_ArrayForEach(e, u)
	{
		if (!cJSON_IsString(e) || p->user_count == 32)
			return *err = "user properties must be strings (at most 32)",
			       MG_MQTT_ERR_INVALID;
		j->user[p->user_count].name = e->string;
		j->user[p->user_count++].value = e->valuestring;
	}
	p->user = p->user_count > 0 ? j->user : NULL;
	e = cJSON_GetObjectItemCaseSensitive(props, "message_expiry");
	if (cJSON_IsNumber(e) && e->valuedouble >= 1 &&
	    e->valuedouble <= 4294967295.0)
		p->message_expiry = (uint32_t)e->valuedouble;
	e = cJSON_GetObjectItemCaseSensitive(props, "content_type");
	if (cJSON_IsString(e))
		p->content_type = e->valuestring;
	e = cJSON_GetObjectItemCaseSensitive(props, "response_topic");
	if (cJSON_IsString(e))
		p->response_topic = e->valuestring;
	e = cJSON_GetObjectItemCaseSensitive(props, "correlation_data");
	if (cJSON_IsString(e)) {
		if ((j->cd = cwm_unbase64(e->valuestring, &p->correlation_len)) ==
		    NULL)
			return *err = "\"correlation_data\" must be base64",
			       MG_MQTT_ERR_INVALID;
		p->correlation_data = j->cd;
	}
	return 0;
}

/* Publishes what a browser sent: {"topic":..,"payload":..,"qos":..,
 * "retain":..,"base64":..,"properties":{..}}. Returns the message id, or
 * a negative code (CWM_ERR_DENIED: not in BRIDGE_PUBLISH_ALLOW) with *err
 * saying what is wrong. */
static int cwm_bridge_publish_json(struct cwm_bridge *b, const cJSON *req,
                                   const char **err)
{
	const cJSON *topic = cJSON_GetObjectItemCaseSensitive(req, "topic");
	const cJSON *props = cJSON_GetObjectItemCaseSensitive(req, "properties");
	struct cwm_jpub j;
	int rc;

	memset(&j, 0, sizeof(j));
	if (!cJSON_IsString(topic) || topic->valuestring[0] == '\0')
		return *err = "\"topic\" must be a non-empty string",
		       MG_MQTT_ERR_INVALID;
	if ((rc = cwm_jpub_flags(req, &j, err)) == 0 &&
	    mg_mqtt_topic_valid(topic->valuestring) != 0) {
		*err = "invalid topic name";
		rc = MG_MQTT_ERR_TOPIC;
	} else if (rc == 0 && cwm_levels_check(b->c, topic->valuestring, 0)) {
		*err = CWM_LEVELS_ERR;
		rc = MG_MQTT_ERR_TOPIC;
	} else if (rc == 0 && !cwm_may_publish(b, topic->valuestring)) {
		*err = "publishing to this topic is not allowed "
		       "(BRIDGE_PUBLISH_ALLOW)";
		atomic_fetch_add(&b->rejected, 1);
		rc = CWM_ERR_DENIED;
	} else if (rc == 0 && (rc = cwm_jpub_data(req, &j, err)) == 0 &&
	           props != NULL) {
		rc = cwm_jpub_props(props, &j, err);
	}
	if (rc == 0) {
		rc = mg_mqtt_publish_props(b->c, topic->valuestring, j.data, j.len,
		                           j.qos, j.retain, &j.p);
		if (rc > 0)
			atomic_fetch_add(&b->publishes, 1);
		else
			*err = rc == MG_MQTT_ERR_PROTOCOL
			           ? "properties need PROTOCOL_VERSION 5"
			           : mg_mqtt_strerror(rc);
	}
	cwm_jpub_free(&j);
	return rc;
}

#endif /* MG_MQTT_ENABLE_BRIDGE */
