/*
 * The bridge's HTTP side: responses, request bodies, the routes and the
 * handler that picks one.
 */
#include "internal.h"

#if MG_MQTT_ENABLE_BRIDGE

/* -- HTTP helpers ------------------------------------------------------------------- */

/* Sends a whole response: body (n bytes) as ctype, with one optional extra
 * header. Returns status. */
static int cwm_reply_body(struct mg_connection *conn, int status,
                          const void *body, size_t n, const char *ctype,
                          const char *extra_name, const char *extra_value)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	int head = strcmp(ri->request_method, "HEAD") == 0;
	char len[32];
	snprintf(len, sizeof(len), "%zu", n);
	if (mg_response_header_start(conn, status) != 0) {
		/* CivetWeb refuses its response API on a WebSocket upgrade request
		 * (a 401 or 503 before the handshake): write the response whole. */
		char extra[512] = "";
		if (extra_name != NULL)
			snprintf(extra, sizeof(extra), "%s: %s\r\n", extra_name,
			         extra_value);
		mg_printf(conn,
		          "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
		          "Content-Length: %s\r\nCache-Control: no-store\r\n"
		          "X-Content-Type-Options: nosniff\r\n%s"
		          "Connection: close\r\n\r\n",
		          status, mg_get_response_code_text(conn, status), ctype, len,
		          extra);
		if (!head)
			mg_write(conn, body, n);
		return status;
	}
	mg_response_header_add(conn, "Content-Type", ctype, -1);
	mg_response_header_add(conn, "Content-Length", len, -1);
	mg_response_header_add(conn, "Cache-Control", "no-store", -1);
	mg_response_header_add(conn, "X-Content-Type-Options", "nosniff", -1);
	if (extra_name != NULL)
		mg_response_header_add(conn, extra_name, extra_value, -1);
	mg_response_header_send(conn);
	if (!head)
		mg_write(conn, body, n);
	return status;
}

static int cwm_reply_text(struct mg_connection *conn, int status,
                          const char *json, const char *extra_name,
                          const char *extra_value)
{
	return cwm_reply_body(conn, status, json, strlen(json), "application/json",
	                      extra_name, extra_value);
}

static int cwm_reply_json(struct mg_connection *conn, int status, cJSON *o)
{
	char *text = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (text == NULL)
		return cwm_reply_text(conn, 500, "{\"error\":\"out of memory\"}", NULL,
		                      NULL);
	cwm_reply_text(conn, status, text, NULL, NULL);
	cJSON_free(text);
	return status;
}

static int cwm_reply_error(struct mg_connection *conn, int status,
                           const char *error)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "error", error);
	return cwm_reply_json(conn, status, o);
}

/* The HTTP status for an error code: the one place where the bridge's
 * codes become statuses. */
static int cwm_http_status(int err)
{
	switch (err) {
	case MG_MQTT_ERR_TOO_LARGE:
		return 413;
	case MG_MQTT_ERR_BUFFER_FULL:
	case MG_MQTT_ERR_QUEUE_FULL:
	case MG_MQTT_ERR_NOT_CONNECTED:
	case MG_MQTT_ERR_STOPPED:
	case MG_MQTT_ERR_NOT_STARTED:
		return 503;
	case MG_MQTT_ERR_NOMEM:
	case MG_MQTT_ERR_IO:
	case MG_MQTT_ERR_PAHO:
		return 500;
	case MG_MQTT_ERR_NOT_FOUND:
		return 404;
	case CWM_ERR_DENIED:
		return 403;
	case CWM_ERR_GONE:
		return 410;
	case MG_MQTT_ERR_TIMEOUT:
		return 408;
	case MG_MQTT_ERR_POISON:
		return 502; /* the broker would not take it */
	default:
		return 400;
	}
}

/* An error reply for code rc: its status, and err (or the code's text). */
static int cwm_reply_code(struct mg_connection *conn, int rc, const char *err)
{
	return cwm_reply_error(conn, cwm_http_status(rc),
	                       err != NULL ? err : mg_mqtt_strerror(rc));
}

/* mg_mqtt_read_body, or the error reply: 0 or the status it sent. */
static int cwm_body_or_reply(struct cwm_bridge *b, struct mg_connection *conn,
                             char **body, size_t *len)
{
	int rc = mg_mqtt_read_body(conn, (size_t)b->c->cfg.bridge_max_body, body,
	                           len);
	if (rc == 0)
		return 0;
	return cwm_reply_code(
	    conn, rc,
	    rc == MG_MQTT_ERR_TOO_LARGE ? "body larger than BRIDGE_MAX_BODY"
	    : rc == MG_MQTT_ERR_TIMEOUT
	        ? "the body came too slowly (request_timeout_ms, then 1 KiB a "
	          "second at least)"
	    : rc == MG_MQTT_ERR_INVALID
	        ? "the body ended before its Content-Length (or its chunks are "
	          "malformed)"
	        : "out of memory");
}

/* The media type of Content-Type (before any ';' parameter) is one of
 * the NULL-terminated list. */
static int cwm_media_is(const char *ct, const char *const *types)
{
	size_t n = strcspn(ct, ";");
	while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
		n--;
	for (; *types != NULL; types++)
		if (strlen(*types) == n && strncasecmp(ct, *types, n) == 0)
			return 1;
	return 0;
}

/* POST bodies: JSON routes take application/json only; raw routes any
 * type but the three a page on another site can make a browser send
 * without asking first (CORS "simple" requests). A missing type is
 * refused too. Returns 0, or the status of the 415 it sent. */
static int cwm_body_type(struct mg_connection *conn, int json)
{
	static const char *const js[] = {"application/json", NULL};
	static const char *const simple[] = {"text/plain",
	                                     "application/x-www-form-urlencoded",
	                                     "multipart/form-data", "", NULL};
	const char *ct = mg_get_header(conn, "Content-Type");
	if (ct == NULL || (json ? !cwm_media_is(ct, js) : cwm_media_is(ct, simple)))
		return cwm_reply_error(
		    conn, 415,
		    json ? "send the body as Content-Type: application/json"
		         : "give the body a Content-Type other than text/plain, "
		           "application/x-www-form-urlencoded or multipart/form-data "
		           "(e.g. application/octet-stream)");
	return 0;
}

/* Cross-site requests: 1 when there is no Origin (not a browser, or a
 * same-origin GET), when it is the request's own scheme://Host, or when
 * BRIDGE_ALLOWED_ORIGINS lists it (or holds "*"). */
static int cwm_origin_ok(const struct cwm_bridge *b,
                         const struct mg_connection *conn)
{
	const char *o = mg_get_header(conn, "Origin");
	const char *host = mg_get_header(conn, "Host");
	const char *list = b->c->cfg.bridge_allowed_origins;
	if (o == NULL)
		return 1;
	const char *scheme = mg_get_request_info(conn)->is_ssl ? "https://"
	                                                        : "http://";
	size_t sl = strlen(scheme), ol = strlen(o);
	if (host != NULL && ol > sl && strncasecmp(o, scheme, sl) == 0 &&
	    strcasecmp(o + sl, host) == 0)
		return 1;
	return cwm_list_has(list, o, ol);
}

/* 1 when the n bytes at p are name in the comma-separated list (blanks
 * around entries ignored, case-insensitive), or the list holds "*". */
static int cwm_list_has(const char *list, const char *name, size_t n)
{
	for (const char *p = list; p != NULL && *p != '\0';) {
		p += strspn(p, " \t,");
		size_t l = strcspn(p, ","), t = l;
		while (t > 0 && (p[t - 1] == ' ' || p[t - 1] == '\t'))
			t--;
		if ((t == 1 && p[0] == '*') ||
		    (t == n && t > 0 && strncasecmp(p, name, t) == 0))
			return 1;
		p += l;
	}
	return 0;
}

/* DNS rebinding: a page of evil.example whose name is made to resolve to
 * this server is same-origin with it for the browser, so the Origin check
 * passes (Origin and Host are both evil.example). The name the browser
 * asked for gives it away: 1 when Host is absent (not a browser), an IP
 * literal (a browser takes a name of digits and dots for one; a rebinding
 * needs a name), localhost, or in BRIDGE_ALLOWED_HOSTS. */
static int cwm_host_ok(const struct cwm_bridge *b,
                       const struct mg_connection *conn)
{
	const char *h = mg_get_header(conn, "Host");
	if (h == NULL || h[0] == '[')
		return 1; /* "[" starts an IPv6 literal */
	size_t n = strcspn(h, ":");
	if (n > 0 && strspn(h, "0123456789.") == n)
		return 1;
	if ((n == 9 || (n == 10 && h[9] == '.')) && strncasecmp(h, "localhost", 9) == 0)
		return 1;
	return cwm_list_has(b->c->cfg.bridge_allowed_hosts, h, n);
}

/* A "qos" in the query string into *qos (left as it was when absent).
 * Returns 0, or the status of the error reply it sent. */
static int cwm_query_qos(struct mg_connection *conn, const char *qs, int *qos)
{
	char v[16];
	if (mg_get_var(qs, strlen(qs), "qos", v, sizeof(v)) <= 0)
		return 0;
	if (strlen(v) != 1 || v[0] < '0' || v[0] > '2')
		return cwm_reply_error(conn, 400, "qos must be 0, 1 or 2");
	*qos = v[0] - '0';
	return 0;
}

/* -- routes ------------------------------------------------------------------------ */

/* The 403 of a refusal by an allow list, counted in b->rejected. */
static int cwm_reply_denied(struct cwm_bridge *b, struct mg_connection *conn,
                            const char *why)
{
	atomic_fetch_add(&b->rejected, 1);
	return cwm_reply_error(conn, 403, why);
}

/* A publish route's topic checks: MAX_TOPIC_LEVELS, then
 * BRIDGE_PUBLISH_ALLOW (a refusal is counted). Returns 0, or the status of
 * the error reply it sent. */
static int cwm_publish_refused(struct cwm_bridge *b, struct mg_connection *conn,
                               const char *topic)
{
	if (cwm_levels_check(b->c, topic, 0) != 0)
		return cwm_reply_error(conn, 400, CWM_LEVELS_ERR);
	if (!cwm_may_publish(b, topic))
		return cwm_reply_denied(b, conn,
		                        "publishing to this topic is not allowed "
		                        "(BRIDGE_PUBLISH_ALLOW)");
	return 0;
}

/* The raw publish and request routes: 403 unless BRIDGE_PUBLISH_ALLOW
 * lets browsers publish to topic, else the body into *body (the caller
 * frees it). Returns 0, or the status of the error reply it sent. */
static int cwm_publish_body(struct cwm_bridge *b, struct mg_connection *conn,
                            const char *topic, char **body, size_t *len)
{
	int status = cwm_publish_refused(b, conn, topic);
	if (status != 0)
		return status;
	status = cwm_body_type(conn, 0);
	return status != 0 ? status : cwm_body_or_reply(b, conn, body, len);
}

/* POST <path>/publish: a JSON body, {"topic":..,"payload":..,...}. */
static int cwm_route_publish(struct cwm_bridge *b, struct mg_connection *conn)
{
	char *body;
	size_t len;
	const char *err;
	int status = cwm_body_type(conn, 1);
	if (status != 0 || (status = cwm_body_or_reply(b, conn, &body, &len)) != 0)
		return status;
	cJSON *req = cwm_json_parse(body, len, b->c->cfg.bridge_max_json_depth,
	                            &err);
	free(body);
	if (!cJSON_IsObject(req)) {
		cJSON_Delete(req);
		return cwm_reply_error(conn, 400,
		                       err != NULL ? err
		                                   : "the body is not a JSON object");
	}
	int id = cwm_bridge_publish_json(b, req, &err);
	cJSON_Delete(req);
	if (id < 0)
		return cwm_reply_code(conn, id, err);
	cJSON *o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "id", id);
	return cwm_reply_json(conn, 200, o);
}

/* CivetWeb decodes the request URI in place and keeps no undecoded copy,
 * so "%00" would silently cut the topic short. It shows as a NUL inside the
 * URI's original span (which ends where the query string or " HTTP/"
 * began): decoding adds one NUL as the new end, each "%00" one more. */
static int cwm_uri_has_nul(const struct mg_request_info *ri)
{
	const char *u = ri->request_uri, *v = ri->http_version, *end;
	if (u == NULL || v == NULL || v - u < 6 || strncmp(v - 5, "HTTP/", 5) != 0)
		return 0; /* not the layout we know: the ACL still holds */
	end = ri->query_string != NULL && ri->query_string > u && ri->query_string < v
	          ? ri->query_string - 1
	          : v - 6;
	int nuls = 0;
	for (const char *p = u; p < end; p++)
		nuls += *p == '\0';
	return nuls > 1;
}

/* The occurrence-th value of name in a query string, for topics and
 * filters: %XX decoded, but '+' kept as '+' (the wildcard, not a form's
 * space; a space is %20). Returns its length, MG_MQTT_ERR_NOT_FOUND
 * (absent), MG_MQTT_ERR_TOO_LARGE (longer than len - 1) or
 * MG_MQTT_ERR_FILTER (a %00 in it). */
static int cwm_query_topic(const char *qs, const char *name, size_t occurrence,
                           char *dst, size_t len)
{
	size_t nl = strlen(name);
	dst[0] = '\0';
	for (const char *p = qs; *p != '\0';) {
		size_t l = strcspn(p, "&");
		if (l > nl && p[nl] == '=' && strncmp(p, name, nl) == 0 &&
		    occurrence-- == 0) {
			int n = mg_url_decode(p + nl + 1, (int)(l - nl - 1), dst, (int)len,
			                      0);
			if (n < 0)
				return MG_MQTT_ERR_TOO_LARGE;
			return strlen(dst) != (size_t)n ? MG_MQTT_ERR_FILTER : n;
		}
		p += l + (p[l] == '&');
	}
	return MG_MQTT_ERR_NOT_FOUND;
}

/* Whether a topic from the decoded path may not be what the client wrote.
 * CivetWeb decodes the path in place before anything sees it (so
 * local_uri_raw is decoded too), and 1.16 and later decode '+' as a space
 * as well: a space may have been a '+', a '+' or '#' an escape, and with
 * decode_url no an escape stays undecoded. Such topics are refused on
 * every version; a '%' not followed by two hex digits means itself. */
static int cwm_path_topic_ambiguous(const char *topic)
{
	for (const unsigned char *p = (const unsigned char *)topic; *p != '\0'; p++)
		if (*p <= ' ' || *p == 0x7f || *p == '+' || *p == '#' ||
		    (*p == '%' && isxdigit(p[1]) && isxdigit(p[2])))
			return 1;
	return 0;
}

/* A topic taken from the decoded path must be what CivetWeb routed on: dot
 * segments, '//' and '\\' are rewritten by it, and a NUL would cut the
 * topic short; nor may it hold what CivetWeb may have decoded
 * (cwm_path_topic_ambiguous). Returns 0, or the status of the error
 * response sent. */
static int cwm_path_topic(struct mg_connection *conn, const char *topic,
                          const char *instead)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	char msg[384];
	if (ri->local_uri_raw == NULL ||
	    strcmp(ri->local_uri_raw, ri->local_uri) != 0 || cwm_uri_has_nul(ri)) {
		snprintf(msg, sizeof(msg),
		         "the topic in the path is not canonical (dot segments, '//', "
		         "'\\\\' or NUL)%s",
		         instead);
		return cwm_reply_error(conn, 400, msg);
	}
	if (cwm_path_topic_ambiguous(topic)) {
		snprintf(msg, sizeof(msg),
		         "the topic in the path has a space, control character, '+', "
		         "'#' or %%-escape, which the web server may have decoded "
		         "(CivetWeb 1.16 reads '+' as a space)%s",
		         instead);
		return cwm_reply_error(conn, 400, msg);
	}
	if (topic[0] == '\0' || mg_mqtt_topic_valid(topic) != 0)
		return cwm_reply_error(conn, 400, "invalid topic name");
	return 0;
}

/* POST <path>/publish/<topic>?qos=&retain=: the raw body is the payload. */
static int cwm_route_publish_raw(struct cwm_bridge *b, struct mg_connection *conn,
                                 const char *topic)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	const char *qs = ri->query_string != NULL ? ri->query_string : "";
	char v[16], *body, json[48], instead[160];
	size_t len;
	int qos = 0, retain = 0, status;

	snprintf(instead, sizeof(instead),
	         "; publish it with POST %.64s/publish and a JSON body "
	         "{\"topic\":...,\"payload\":...}",
	         b->path);
	if ((status = cwm_path_topic(conn, topic, instead)) != 0 ||
	    (status = cwm_query_qos(conn, qs, &qos)) != 0)
		return status;
	if (mg_get_var(qs, strlen(qs), "retain", v, sizeof(v)) > 0 &&
	    cwm_parse_bool(v, &retain) != 0)
		return cwm_reply_error(conn, 400, "retain must be true or false");
	if ((status = cwm_publish_body(b, conn, topic, &body, &len)) != 0)
		return status;
	int id = mg_mqtt_publish(b->c, topic, body, len, qos, retain);
	free(body);
	if (id < 0)
		return cwm_reply_code(conn, id, NULL);
	atomic_fetch_add(&b->publishes, 1);
	snprintf(json, sizeof(json), "{\"id\":%d}", id);
	return cwm_reply_text(conn, 200, json, NULL, NULL);
}

static int cwm_route_status(struct cwm_bridge *b, struct mg_connection *conn)
{
	cJSON *o = cwm_status_object(b->c);
	if (o == NULL)
		return cwm_reply_error(conn, 500, "out of memory");
	return cwm_reply_json(conn, 200, o);
}

/* The reply to a request as the response. Its MQTT 5 content type only
 * from an allow list (a reply is anyone's on the broker: text/html from
 * it would run as a page of this server); any other is sent as
 * application/octet-stream. Without one, the type is guessed from the
 * payload, with JSON checked by cwm_json_scan first: a reply nested
 * deeper than BRIDGE_MAX_JSON_DEPTH is a 502. */
static int cwm_reply_mqtt(struct cwm_bridge *b, struct mg_connection *conn,
                          const struct mg_mqtt_reply *r)
{
	static const char *const json[] = {"application/json", NULL};
	static const char *const plain[] = {"text/plain", NULL};
	static const char *const bin[] = {"application/octet-stream", NULL};
	const char *ct = r->content_type, *ctype;
	if (ct != NULL && ct[0] != '\0') {
		ctype = cwm_media_is(ct, json)    ? "application/json"
		        : cwm_media_is(ct, plain) ? "text/plain; charset=utf-8"
		        : cwm_media_is(ct, bin)   ? "application/octet-stream"
		                                  : "application/octet-stream";
	} else {
		cJSON *j = NULL;
		const char *err = NULL;
		int text = cwm_utf8_text(r->payload, r->payload_len);
		if (text &&
		    (j = cwm_json_parse(r->payload, r->payload_len,
		                        b->c->cfg.bridge_max_json_depth, &err)) ==
		        NULL &&
		    err != NULL && strstr(err, "BRIDGE_MAX_JSON_DEPTH") != NULL)
			return cwm_reply_error(conn, 502,
			                       "the reply is JSON nested deeper than "
			                       "BRIDGE_MAX_JSON_DEPTH");
		ctype = cJSON_IsObject(j) || cJSON_IsArray(j) ? "application/json"
		        : text ? "text/plain; charset=utf-8"
		               : "application/octet-stream";
		cJSON_Delete(j);
	}
	return cwm_reply_body(conn, 200, r->payload, r->payload_len, ctype, NULL,
	                      NULL);
}

/* "timeout" in seconds into *ms, at most max_ms. Returns 0, or the status
 * of the error reply it sent. */
static int cwm_query_timeout(struct mg_connection *conn, const char *qs,
                             int64_t max_ms, int64_t *ms)
{
	char v[32], *end;
	if (mg_get_var(qs, strlen(qs), "timeout", v, sizeof(v)) <= 0)
		return 0;
	errno = 0;
	double t = strtod(v, &end);
	if (end == v || *end != '\0' || errno != 0 || !(t > 0) || t > 1e9)
		return cwm_reply_error(conn, 400,
		                       "timeout must be a number of seconds > 0");
	*ms = (int64_t)(t * 1000 + 0.999);
	if (*ms > max_ms)
		*ms = max_ms; /* BRIDGE_REQUEST_TIMEOUT_MAX bounds it */
	return 0;
}

/* POST <path>/request/<topic>[?timeout=<s>&qos=<n>]: the body goes out as
 * an mg_mqtt_request(); the reply comes back as the response. */
static int cwm_route_request(struct cwm_bridge *b, struct mg_connection *conn,
                             const char *topic)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	const char *qs = ri->query_string != NULL ? ri->query_string : "";
	int64_t max_ms = (int64_t)b->c->cfg.bridge_request_timeout_max * 1000;
	int64_t ms = max_ms < 5000 ? max_ms : 5000;
	int qos = 1, status;
	char msg[128], *body;
	size_t len;
	struct mg_mqtt_reply r;

	if ((status = cwm_path_topic(conn, topic, "")) != 0 ||
	    (status = cwm_query_qos(conn, qs, &qos)) != 0 ||
	    (status = cwm_query_timeout(conn, qs, max_ms, &ms)) != 0 ||
	    (status = cwm_publish_body(b, conn, topic, &body, &len)) != 0)
		return status;
	if (!cwm_stream_reserve(b)) {
		free(body);
		return cwm_reply_busy(conn);
	}
	atomic_fetch_add(&b->n_req, 1);
	int rc = mg_mqtt_request(b->c, topic, body, len, qos, (int)ms, &r);
	atomic_fetch_sub(&b->n_req, 1);
	cwm_stream_release(b);
	free(body);
	switch (rc) {
	case 0:
		status = cwm_reply_mqtt(b, conn, &r);
		mg_mqtt_reply_free(&r);
		return status;
	case MG_MQTT_ERR_TIMEOUT:
		snprintf(msg, sizeof(msg), "no reply within %.3f s", (double)ms / 1000);
		return cwm_reply_error(conn, 504, msg);
	case MG_MQTT_ERR_REFUSED:
		return cwm_reply_error(conn, 502,
		                       "the broker refused the reply subscription "
		                       "or the request");
	case MG_MQTT_ERR_POISON:
		return cwm_reply_error(conn, 502, mg_mqtt_strerror(rc));
	case MG_MQTT_ERR_TOPIC:
		return cwm_reply_error(conn, 500,
		                       "the client id cannot start a reply topic");
	default:
		return cwm_reply_code(conn, rc, NULL);
	}
}

/* 1 when uri is the bridge path or below it. CivetWeb's last matching step
 * is a case-insensitive prefix match without a '/' boundary, so it also
 * hands us "/MQTT/x" and "/mqttx": those are not ours. */
static int cwm_bridge_owns(const struct cwm_bridge *b, const char *uri)
{
	return strncmp(uri, b->path, b->plen) == 0 &&
	       (uri[b->plen] == '\0' || uri[b->plen] == '/');
}

/* 503 with Retry-After: BRIDGE_MAX_CLIENTS streams are open. */
static int cwm_reply_busy(struct mg_connection *conn)
{
	return cwm_reply_text(conn, 503,
	                      "{\"error\":\"too many streams and waiting requests "
	                      "(BRIDGE_MAX_CLIENTS)\"}",
	                      "Retry-After", "5");
}

/* 405 with the Allow header: method is "GET" (GET and HEAD) or "POST". */
static int cwm_reply_405(struct mg_connection *conn, const char *method)
{
	return cwm_reply_text(conn, 405,
	                      strcmp(method, "GET") == 0 ? "{\"error\":\"use GET\"}"
	                                                 : "{\"error\":\"use POST\"}",
	                      "Allow", method);
}
/* The routes under BRIDGE_PATH, tried in this order: a path matched whole,
 * or a prefix whose rest is the route's argument (fn_rest). */
static const struct cwm_route {
	const char *path;
	int prefix; /* 1: path is a prefix of the route */
	int post;   /* 1: POST; 0: GET (and HEAD) */
	int (*fn)(struct cwm_bridge *b, struct mg_connection *conn);
	int (*fn_rest)(struct cwm_bridge *b, struct mg_connection *conn,
	               const char *rest);
} cwm_routes[] = {
    {"/publish", 0, 1, cwm_route_publish, NULL},
    {"/publish/", 1, 1, NULL, cwm_route_publish_raw},
    {"/status", 0, 0, cwm_route_status, NULL},
    {"/events", 0, 0, cwm_route_events, NULL},
    {"/request/", 1, 1, NULL, cwm_route_request},
    {"/last", 0, 0, cwm_route_last_list, NULL},
    {"/last/", 1, 0, NULL, cwm_route_last},
    {"/metrics", 0, 0, cwm_route_metrics, NULL},
};

/* Runs the route of a request that passed the Host, Origin and credential
 * checks: 405 for another method, 426 for /ws without an upgrade, 404 for
 * no route. Returns the status. */
static int cwm_route_run(struct cwm_bridge *b, struct mg_connection *conn,
                         const char *route, int get, int post)
{
	for (size_t i = 0; i < sizeof(cwm_routes) / sizeof(cwm_routes[0]); i++) {
		const struct cwm_route *r = &cwm_routes[i];
		size_t n = strlen(r->path);
		if (r->prefix ? strncmp(route, r->path, n) != 0
		              : strcmp(route, r->path) != 0)
			continue;
		if (!(r->post ? post : get))
			return cwm_reply_405(conn, r->post ? "POST" : "GET");
		return r->fn != NULL ? r->fn(b, conn) : r->fn_rest(b, conn, route + n);
	}
	if (strcmp(route, "/ws") == 0)
		return cwm_reply_text(conn, 426,
		                      "{\"error\":\"a WebSocket upgrade is required\"}",
		                      "Upgrade", "websocket");
	return cwm_reply_error(conn, 404, "no such route");
}

/* Every plain HTTP request under BRIDGE_PATH. */
static int cwm_bridge_http(struct mg_connection *conn, void *cbdata)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	struct cwm_bridge *b = cwm_bridge_acquire(cbdata);
	int status;
	if (b == NULL)
		return cwm_reply_error(conn, 503,
		                       "the MQTT client of this bridge is stopped");
	if (!cwm_bridge_owns(b, ri->local_uri)) {
		cwm_bridge_release(b);
		return 0; /* not ours: CivetWeb serves it as it would without us */
	}
	const char *route = ri->local_uri + b->plen, *m = ri->request_method;
	int get = strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0;
	int post = strcmp(m, "POST") == 0;
	if (!cwm_host_ok(b, conn))
		status = cwm_reply_error(conn, 403, CWM_HOST_ERR);
	else if (post && !cwm_origin_ok(b, conn))
		status = cwm_reply_error(conn, 403, CWM_ORIGIN_ERR);
	else if (!cwm_bridge_authorized(b, conn))
		status = 401;
	else
		status = cwm_route_run(b, conn, route, get, post);
	cwm_bridge_release(b);
	return status;
}

#endif /* MG_MQTT_ENABLE_BRIDGE */
