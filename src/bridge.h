/*
 * The bridge (MG_MQTT_ENABLE_BRIDGE): its types and the functions its
 * parts call across, or the do-nothing stand-ins the client calls without
 * it; and what bridge_guard.c gives both builds. Included by internal.h
 * only, last.
 */
#ifndef CWM_BRIDGE_H
#define CWM_BRIDGE_H


/* src/bridge_guard.c, in both builds: request bodies. */
#define CWM_BODY_RATE 1024 /* bytes a second a request body must keep up */
static int cwm_conn_fd(const struct mg_connection *conn);

#if MG_MQTT_ENABLE_BRIDGE
/* ------------------------------------------------------------------------
 * Bridge types
 * ---------------------------------------------------------------------- */

#define CWM_WRITERS 4 /* WebSocket writer threads per bridge */
#define CWM_WS_RETRY_MAX 1000 /* ms: a full socket is tried at most this rarely */
#define CWM_NONCES 1024 /* digest nonces tracked (nc replay table) */
#define CWM_FILTER_LEN 512 /* a browser's topic filter, with its NUL (SSE
                              and WebSocket alike) */
#define CWM_HOST_ERR                                                           \
	"this Host is not one the server answers for (localhost, an IP address "   \
	"or BRIDGE_ALLOWED_HOSTS)"
#define CWM_ORIGIN_ERR                                                         \
	"cross-site request: this Origin is not allowed (BRIDGE_ALLOWED_ORIGINS)"
#define CWM_LEVELS_ERR "more topic levels than MAX_TOPIC_LEVELS allows"

/* Bridge-only error codes, in the MG_MQTT_ERR_* space; cwm_http_status()
 * turns them into 403 and 410. */
enum { CWM_ERR_DENIED = -100, CWM_ERR_GONE = -101 };

/* One outgoing message as JSON, shared by every client it goes to. */
struct cwm_bmsg {
	atomic_int refs;
	size_t len;
	char *sse; /* "data: <json>\n\n", made under the bridge lock when needed */
	size_t sse_len;
	char text[];
};

enum cwm_bkind { BC_WS, BC_SSE };

struct cwm_bridge;

struct cwm_bclient {
	struct cwm_bridge *b;     /* NULL once the bridge is gone */
	struct mg_connection *conn;
	enum cwm_bkind kind;
	unsigned id;
	/* Under the bridge lock: */
	struct cwm_bmsg **q;      /* ring of queued messages */
	unsigned qhead, qlen, qcap;
	size_t qbytes;            /* bytes of the messages queued */
	int busy;                 /* a writer is writing to it */
	int listed;               /* in b->ready */
	int dead;                 /* dropped or closing: nothing more queued */
	int close_frame;          /* WS: a writer should send a close frame */
	int fd;                   /* WS over plain TCP: its socket, else -1 */
	int64_t retry_at;         /* WS: its socket was full; not before (ms) */
	int retry_gap;            /* WS: ms to the next try while it stays full */
	struct cwm_bclient *prev, *next, *ready_next;
	struct cwm_map filters;   /* its filters -> (intptr_t)qos + 1 */
	uint64_t stamp;           /* last message it was given (dedupe) */
	pthread_cond_t cond;      /* SSE: its handler waits here */
	/* WS: a fragmented message being put together (its handler's). */
	struct cwm_wbuf frag;
	int frag_op;              /* the first frame's opcode, 0: none */
};

struct cwm_anchor {
	struct cwm_anchor *next;
	const struct mg_context *ctx;
	char prefix[64];
	pthread_mutex_t lock;     /* the bridge lock */
	pthread_cond_t idle;      /* cwm_bridge_destroy waits for users */
	_Atomic(struct cwm_bridge *) bridge;
	atomic_int users;         /* CivetWeb threads inside the bridge */
	atomic_int draining;      /* a destroy waits for users to reach 0 */
};


struct cwm_bridge {
	struct mg_mqtt *c;
	struct cwm_anchor *a;
	const char *path;         /* c->cfg.bridge_path */
	size_t plen;
	char *realm;              /* CivetWeb's authentication_domain */
	unsigned char secret[16]; /* signs digest nonces */
	/* Digest nonces answered (bridge_auth.c), under nonce_lock: slot
	 * seq % CWM_NONCES holds the last nc seen for nonce seq. */
	pthread_mutex_t nonce_lock;
	struct cwm_nonce {
		uint64_t seq;
		int64_t issued;  /* s since the epoch */
		uint64_t nc;     /* highest nc accepted (0: none yet) */
	} nonces[CWM_NONCES];
	uint64_t nonce_seq;
	int max_clients;          /* BRIDGE_MAX_CLIENTS, or num_threads / 2 */
	atomic_int n_req;         /* POST <path>/request calls waiting */
	atomic_int n_streams;     /* WebSocket + SSE + n_req, against max_clients */
	size_t lv_bytes;          /* under lv_lock: bytes the last values hold */
	int read_timeout_ms;      /* CivetWeb's request_timeout_ms */
	/* Under the bridge lock: */
	pthread_cond_t wcond;     /* writers wait for ready clients */
	pthread_cond_t idle;      /* a writer let go of a client */
	atomic_int stopping;      /* set under the bridge lock */
	struct cwm_tnode tree;    /* browser filters -> clients (handler ud) */
	struct cwm_bclient *clients, *ready, *ready_tail;
	uint64_t seq;
	unsigned next_id;
	struct cwm_vec cur, nxt, hits;
	pthread_t writers[CWM_WRITERS];
	int nwriters;
	/* Counters, read by the status without the lock. */
	atomic_int n_ws, n_sse;
	atomic_uint_fast64_t delivered, dropped_clients, publishes, rejected;
	/* Last values (BRIDGE_LAST_VALUES): written by mqtt-dispatch, read by
	 * requests, under lv_lock. */
	pthread_mutex_t lv_lock;
	struct cwm_map lv;              /* topic -> struct cwm_lv */
	struct cwm_lv *lv_old, *lv_new; /* least .. most recently updated */
};

/* What one WebSocket op did (cwm_ws_op). */
struct cwm_ws_result {
	enum { CWM_WS_OTHER, CWM_WS_SUBSCRIBE, CWM_WS_UNSUBSCRIBE,
	       CWM_WS_PUBLISH } kind;
	int rc;          /* 0, or a negative code (the reply was an error) */
	int mid;         /* publish: the message id */
	const char *err; /* rc != 0: the error text of the reply */
};

/* The last message seen on one topic. */
struct cwm_lv {
	struct cwm_lv *older, *newer;
	const char *topic; /* the map's key */
	size_t topic_len;
	void *payload;
	size_t len;
	int qos, retain;
	int64_t at_ms;     /* when it arrived: ms since the epoch */
};

#endif /* MG_MQTT_ENABLE_BRIDGE */

#if MG_MQTT_ENABLE_BRIDGE
/* src/bridge.c */
static int cwm_may_publish(const struct cwm_bridge *b, const char *topic);
static int cwm_may_subscribe(const struct cwm_bridge *b, const char *filter);
static void cwm_bridge_deliver(struct cwm_bridge *b,
                               const struct mg_mqtt_message *m);
static void cwm_bridge_state(struct cwm_bridge *b, int connected,
                             const char *broker);
static void cwm_anchor_leave(struct cwm_anchor *a);
static struct cwm_bridge *cwm_bridge_acquire(struct cwm_anchor *a);
static void cwm_bridge_release(struct cwm_bridge *b);
static int cwm_stream_reserve(struct cwm_bridge *b);
static void cwm_stream_release(struct cwm_bridge *b);
static int cwm_bridge_create(struct mg_mqtt *c, char *err, size_t errlen);
static int cwm_bridge_open(struct mg_mqtt *c, char *err, size_t errlen);
static void cwm_bridge_destroy(struct mg_mqtt *c);
static void cwm_bridge_status(struct cwm_bridge *b, cJSON *o, cJSON *counters,
                              cJSON *gauges);

/* src/bridge_clients.c */
static void cwm_bclient_list(struct cwm_bridge *b, struct cwm_bclient *bc);
static void cwm_bclient_unsubscribe_all(struct cwm_bridge *b,
                                        struct cwm_bclient *bc);
static void cwm_bclient_drop(struct cwm_bridge *b, struct cwm_bclient *bc,
                             const char *why);
static void cwm_bclient_push(struct cwm_bridge *b, struct cwm_bclient *bc,
                             struct cwm_bmsg *m);
static unsigned cwm_bclient_take_room(struct cwm_bclient *bc,
                                      struct cwm_bmsg **out, unsigned max,
                                      size_t room, int first);
static unsigned cwm_bclient_take(struct cwm_bclient *bc, struct cwm_bmsg **out,
                                 unsigned max);
static void cwm_bclient_send(struct cwm_bridge *b, struct cwm_bclient *bc,
                             cJSON *o);
static struct cwm_bclient *cwm_bclient_new(struct cwm_bridge *b,
                                           struct mg_connection *conn,
                                           enum cwm_bkind kind);
static void cwm_bclient_remove(struct cwm_bridge *b, struct cwm_bclient *bc);
static void cwm_bclient_free(struct cwm_bclient *bc);
static int cwm_bridge_filter(char *filter);
static int cwm_bridge_subscribe(struct cwm_bridge *b, struct cwm_bclient *bc,
                                char *filter, int qos, const char **err);
static int cwm_bridge_unsubscribe(struct cwm_bridge *b, struct cwm_bclient *bc,
                                  char *filter, const char **err);

/* src/bridge_json.c */
static cJSON *cwm_json_parse(const char *s, size_t n, int depth,
                             const char **err);
static const char *cwm_json_scan(const char *s, size_t n, int depth);
static void cwm_bmsg_put(struct cwm_bmsg *m);
static struct cwm_bmsg *cwm_bmsg_make(const struct mg_mqtt_message *m);
static struct cwm_bmsg *cwm_bmsg_json(cJSON *o);
static int cwm_bridge_publish_json(struct cwm_bridge *b, const cJSON *req,
                                   const char **err);

/* src/bridge_http.c */
static int cwm_reply_body(struct mg_connection *conn, int status,
                          const void *body, size_t n, const char *ctype,
                          const char *extra_name, const char *extra_value);
static int cwm_reply_text(struct mg_connection *conn, int status,
                          const char *json, const char *extra_name,
                          const char *extra_value);
static int cwm_reply_json(struct mg_connection *conn, int status, cJSON *o);
static int cwm_reply_error(struct mg_connection *conn, int status,
                           const char *error);
static int cwm_http_status(int err);
static int cwm_reply_code(struct mg_connection *conn, int rc, const char *err);
static int cwm_query_qos(struct mg_connection *conn, const char *qs, int *qos);
static int cwm_query_topic(const char *qs, const char *name, size_t occurrence,
                           char *dst, size_t len);
static int cwm_path_topic(struct mg_connection *conn, const char *topic,
                          const char *instead);
static int cwm_bridge_owns(const struct cwm_bridge *b, const char *uri);
static int cwm_list_has(const char *list, const char *name, size_t n);
static int cwm_host_ok(const struct cwm_bridge *b,
                       const struct mg_connection *conn);
static int cwm_origin_ok(const struct cwm_bridge *b,
                         const struct mg_connection *conn);
static int cwm_reply_busy(struct mg_connection *conn);
static int cwm_reply_denied(struct cwm_bridge *b, struct mg_connection *conn,
                            const char *why);
static int cwm_publish_refused(struct cwm_bridge *b, struct mg_connection *conn,
                               const char *topic);
static int cwm_bridge_http(struct mg_connection *conn, void *cbdata);

/* src/bridge_last.c */
static void cwm_lv_update(struct cwm_bridge *b, const struct mg_mqtt_message *m);
static void cwm_lv_free(void *p);
static int cwm_route_last(struct cwm_bridge *b, struct mg_connection *conn,
                          const char *topic);
static int cwm_route_last_list(struct cwm_bridge *b, struct mg_connection *conn);

/* src/bridge_metrics.c */
static int cwm_route_metrics(struct cwm_bridge *b, struct mg_connection *conn);

/* src/bridge_sse.c */
static int cwm_route_events(struct cwm_bridge *b, struct mg_connection *conn);

/* src/bridge_ws.c */
static void *cwm_bridge_writer(void *arg);
static int cwm_ws_connect(const struct mg_connection *conn, void *cbdata);
static void cwm_ws_ready(struct mg_connection *conn, void *cbdata);
static int cwm_ws_data(struct mg_connection *conn, int bits, char *data,
                       size_t len, void *cbdata);
static void cwm_ws_close(const struct mg_connection *conn, void *cbdata);
static void cwm_ws_op(struct cwm_bridge *b, struct cwm_bclient *bc,
                      const cJSON *req, int text, const char *jerr,
                      struct cwm_ws_result *res);

/* src/bridge_auth.c */
static int cwm_bridge_authorized(struct cwm_bridge *b,
                                 struct mg_connection *conn);
#else
/* Without the bridge, the calls the client makes into it do nothing (no
 * bridge is ever created: BRIDGE_* options are refused). */
static inline void cwm_bridge_deliver(struct cwm_bridge *b,
                                      const struct mg_mqtt_message *m)
{
	(void)b;
	(void)m;
}
static inline void cwm_bridge_state(struct cwm_bridge *b, int connected,
                                    const char *broker)
{
	(void)b;
	(void)connected;
	(void)broker;
}
static inline int cwm_bridge_create(struct mg_mqtt *c, char *err,
                                    size_t errlen)
{
	(void)c;
	(void)err;
	(void)errlen;
	return MG_MQTT_ERR_CONFIG;
}
static inline int cwm_bridge_open(struct mg_mqtt *c, char *err, size_t errlen)
{
	(void)c;
	(void)err;
	(void)errlen;
	return 0;
}
static inline void cwm_bridge_destroy(struct mg_mqtt *c)
{
	(void)c;
}
static inline void cwm_bridge_status(struct cwm_bridge *b, cJSON *o,
                                     cJSON *counters, cJSON *gauges)
{
	(void)b;
	(void)o;
	(void)counters;
	(void)gauges;
}
#endif /* MG_MQTT_ENABLE_BRIDGE */

#endif /* CWM_BRIDGE_H */
