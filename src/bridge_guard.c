/*
 * mg_mqtt_bridge_check_publish(): the bridge's publishing rules
 * (BRIDGE_AUTH_FILE, BRIDGE_PUBLISH_ALLOW) for request handlers of the
 * application, so that a route of its own that publishes what a browser
 * sends is no way around them. Without the bridge compiled in, every
 * request is refused.
 */
#include "internal.h"

/* A refusal from a guard: {"error":...} as JSON. Returns status. */
static int cwm_guard_refuse(struct mg_connection *conn, int status,
                            const char *error);

#if MG_MQTT_ENABLE_BRIDGE

static int cwm_guard_refuse(struct mg_connection *conn, int status,
                            const char *error)
{
	return cwm_reply_error(conn, status, error);
}

/* The anchor of c's bridge, or NULL (c never had one on its context).
 * Unlike cwm_anchor_get, never makes one. */
static struct cwm_anchor *cwm_guard_anchor(const struct mg_mqtt *c)
{
	struct cwm_anchor *a;
	if (c->ctx == NULL)
		return NULL;
	pthread_mutex_lock(&cwm_anchors_lock);
	for (a = cwm_anchors; a != NULL; a = a->next)
		if (a->ctx == c->ctx && strcmp(a->prefix, c->prefix) == 0)
			break;
	pthread_mutex_unlock(&cwm_anchors_lock);
	return a;
}

/* The checks in the order the bridge's POST <path>/publish/<topic> makes
 * them: the Host, the Origin, credentials, the topic, the allow list. */
static int cwm_guard_publish(struct cwm_bridge *b, struct mg_connection *conn,
                             const char *topic)
{
	if (!cwm_host_ok(b, conn))
		return cwm_reply_error(conn, 403, CWM_HOST_ERR);
	if (!cwm_origin_ok(b, conn))
		return cwm_reply_error(conn, 403,
		                       "cross-site request: this Origin is not "
		                       "allowed (BRIDGE_ALLOWED_ORIGINS)");
	if (!cwm_bridge_authorized(b, conn))
		return 401;
	if (topic[0] == '\0' || mg_mqtt_topic_valid(topic) != 0)
		return cwm_reply_error(conn, 400, "invalid topic name");
	if (cwm_levels_check(b->c, topic, 0) != 0)
		return cwm_reply_error(conn, 400, CWM_LEVELS_ERR);
	if (!cwm_may_publish(b, topic)) {
		atomic_fetch_add(&b->rejected, 1);
		return cwm_reply_error(conn, 403,
		                       "publishing to this topic is not allowed "
		                       "(BRIDGE_PUBLISH_ALLOW)");
	}
	return 0;
}

MG_MQTT_API int mg_mqtt_bridge_check_publish(struct mg_mqtt *c,
                                             struct mg_connection *conn,
                                             const char *topic)
{
	if (conn == NULL)
		return MG_MQTT_ERR_INVALID;
	if (c == NULL || topic == NULL)
		return cwm_guard_refuse(conn, 400, "no client or no topic");
	if (c->cfg.bridge_path == NULL)
		return cwm_guard_refuse(conn, 403,
		                        "this client has no bridge (BRIDGE_PATH): "
		                        "browsers may not publish");
	struct cwm_anchor *a = cwm_guard_anchor(c);
	struct cwm_bridge *b = a != NULL ? cwm_bridge_acquire(a) : NULL;
	if (b == NULL)
		return cwm_guard_refuse(conn, 503,
		                        "the MQTT client of this bridge is stopped");
	int status = cwm_guard_publish(b, conn, topic);
	cwm_bridge_release(b);
	return status;
}

#else /* !MG_MQTT_ENABLE_BRIDGE */

static int cwm_guard_refuse(struct mg_connection *conn, int status,
                            const char *error)
{
	char body[256], len[32];
	int n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", error);
	snprintf(len, sizeof(len), "%d", n);
	mg_response_header_start(conn, status);
	mg_response_header_add(conn, "Content-Type", "application/json", -1);
	mg_response_header_add(conn, "Content-Length", len, -1);
	mg_response_header_add(conn, "Cache-Control", "no-store", -1);
	mg_response_header_add(conn, "X-Content-Type-Options", "nosniff", -1);
	mg_response_header_send(conn);
	mg_write(conn, body, (size_t)n);
	return status;
}

MG_MQTT_API int mg_mqtt_bridge_check_publish(struct mg_mqtt *c,
                                             struct mg_connection *conn,
                                             const char *topic)
{
	(void)c;
	(void)topic;
	if (conn == NULL)
		return MG_MQTT_ERR_INVALID;
	return cwm_guard_refuse(conn, 403,
	                        "the bridge is not compiled in "
	                        "(MG_MQTT_ENABLE_BRIDGE=0): browsers may not "
	                        "publish");
}

#endif /* MG_MQTT_ENABLE_BRIDGE */
