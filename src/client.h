/*
 * The client: its constants, the commands for mqtt-io, the subscriptions,
 * the events for mqtt-dispatch, the result of a connect, struct mg_mqtt
 * itself, and the functions the client's parts call across. Included by
 * internal.h only, after core.h and config.h.
 */
#ifndef CWM_CLIENT_H
#define CWM_CLIENT_H


#define CWM_MAX_PACKET 268435455u /* MQTT's largest remaining length */
#define CWM_QOS0_WINDOW 1024      /* QoS 0 messages handed to paho at once */
#define CWM_BATCH 256             /* commands mqtt-io takes per lock */
#define CWM_RENEW_CHUNK 128       /* filters per renewing SUBSCRIBE */
#define CWM_SLOT_CHUNK 64   /* the first chunk of message slots; each next
                               one doubles the pool, up to QUEUE_SIZE */
#define CWM_SLOT_CHUNKS 40  /* enough doublings for QUEUE_SIZE's maximum */
#define CWM_SAME_AGAIN_MS 3000 /* see cwm_connect_failed */
#define CWM_STABLE_MS 10000 /* a connection that lasted this long resets
                               the back-off (see cwm_conn_lost_locked) */
#define CWM_SHORT_MS 3000    /* a connection lost this soon after CONNACK */
#define CWM_POISON_STRIKES 2 /* see cwm_window_lost (connection.c) */
#define CWM_POISON_MS 1000   /* ... a close this soon after the write */
#define CWM_ACK_TIMEOUT_MS 15000 /* see cwm_io_stalled (io.c) */
#define CWM_ID_BUCKETS 256   /* c->byid: QoS 1/2 messages by packet id */
#define CWM_COALESCE_US 100        /* see cwm_wait_for_work */
#define CWM_COALESCE_MAX_US 800
#define CWM_FAST_US 40              /* a stream faster than 25,000 items/s */

/* How a worker thread (mqtt-io, mqtt-dispatch) waits; producers signal
 * only an idle one. */
enum { CWM_RUNNING = 0, CWM_COALESCING = 1, CWM_IDLE_WAIT = 2 };

enum cwm_state { CWM_IDLE, CWM_DISCONNECTED, CWM_CONNECTING, CWM_CONNECTED };
enum cwm_cmd { CMD_PUBLISH, CMD_SUBSCRIBE, CMD_UNSUBSCRIBE };

/* A command for mqtt-io: one allocation with its strings and payload. */
struct cwm_out {
	struct cwm_out *next;         /* in outq or retry */
	struct cwm_out *iprev, *inext; /* in c->inpaho */
	int in_paho;
	struct mg_mqtt *c;            /* paho callback context */
	enum cwm_cmd type;
	int id;
	int qos, retain;
	int internal;                 /* renew or birth: no user handler */
	int restored;                 /* read back from PERSISTENCE_DIR */
	int noop;                     /* done at once, nothing sent */
	int appendable;               /* a SUBSCRIBE later calls may join */
	int sent;                     /* publish: paho took it */
	int64_t sent_at;              /* [L] ms, when mqtt-io handed it over */
	int msgid;                    /* [L] QoS 1/2 publish in paho: its packet
	                                 id (c->byid); 0: none */
	struct cwm_out *idnext;       /* [L] in its c->byid bucket */
	uint64_t pseq;                /* its file in PERSISTENCE_DIR; 0: none */
	char *topic;                  /* publish */
	void *payload;
	size_t len;
	struct mg_mqtt_props *props;  /* publish, MQTT 5; NULL: none */
	int nfilters, cap;            /* subscribe / unsubscribe */
	char **filters;               /* as the user wrote them */
	char **wire;                  /* as sent ($share/<group>/...) */
	int *qos_list;
	int *ids;                     /* SUBSCRIBE: the id to acknowledge a
	                                 filter under; 0: nobody's (renewal,
	                                 bridge) */
	unsigned char *flags;         /* CMD_COUNTED, CMD_BORROWED a filter */
};

/* cwm_out.flags: the filter is counted in its cwm_sub.pending; its string
 * is the subs map's copy of the key, not the command's own. */
enum { CMD_COUNTED = 1, CMD_BORROWED = 2 };

/* A remembered subscription. */
struct cwm_sub {
	struct cwm_sub *prev, *next; /* in subscription order */
	const char *filter;          /* the subs map's copy of its key */
	int qos, granted; /* qos: sent, the highest of its holders' */
	int bqos;         /* the highest the bridge's holders asked for */
	int pending; /* SUBSCRIBEs for it queued and not done: renewal skips it */
	int app;     /* subscribed through the API or SUBSCRIBE */
	int brefs;   /* holders besides the app: bridge clients, and sys */
	int sys;     /* 1: mg_mqtt_request's reply filter (counted in brefs) */
	int gone;    /* forgotten; kept while commands borrow its filter */
};

enum cwm_evtype {
	EV_MESSAGE,
	EV_CONNECT,
	EV_DISCONNECT,
	EV_PUBACK,
	EV_SUBACK,
	EV_UNSUBACK,
	EV_LOG
};

/* An event for mqtt-dispatch. Strings and codes live in data[]. */
struct cwm_event {
	struct cwm_event *next;
	enum cwm_evtype type;
	int pooled; /* a message slot of the client's pool (cwm_slot_take) */
	union {
		struct {
			MQTTClient_message *m;
			char *topic;
			size_t topic_len;
			int inline_hit; /* inline handlers ran: no catch-all */
			size_t bytes;   /* counted in c->ev_bytes */
		} msg;
		struct mg_mqtt_connect_info conn;
		struct mg_mqtt_disconnect_info disc;
		struct {
			int id, result, count;
			int *codes;
		} ack;
		struct {
			int level;
			int quiet; /* not to stderr (cwm_log_quiet) */
			int trace; /* a line of paho's trace (trace.c) */
			char *text;
		} log;
	} u;
	char data[];
};

/* What an MQTT 5 CONNACK announces (absent: the specification's default);
 * MQTT 3.1.1 announces nothing: all 1, no maxima. */
struct cwm_caps {
	int recvmax;
	unsigned maxpacket;
	int shared, wildcard, retain, alias_max;
};

/* The result of one connection attempt (cwm_eng_connect). */
struct cwm_connack {
	int ok;             /* 1: connected */
	int session;        /* the broker resumed a session */
	struct cwm_caps caps;
	int reason;         /* > 0: the broker refused (CONNACK code) */
	int code;           /* paho's return code */
	int dropped;        /* CONNACK came, then the connection closed while
	                       paho sent the session's unfinished messages */
	int64_t elapsed_ms; /* how long the attempt took */
};

struct cwm_req;
struct cwm_bridge;

struct mg_mqtt {
	/* From create to free: the name and the synchronization objects
	 * (stop resets everything after cfg, never these). */
	char prefix[64];
	pthread_mutex_t req_lock;  /* the requests below */
	pthread_mutex_t lock;      /* every field marked [L] */
	pthread_cond_t io_cond;    /* wakes mqtt-io */
	pthread_cond_t ev_cond;    /* wakes mqtt-dispatch */
	pthread_cond_t state_cond; /* start and stop wait on it */
	pthread_mutex_t pstore_lock; /* pstore (a leaf: engine.c) */

	/* Handlers: written before start, read-only afterwards. */
	struct cwm_tnode tree;
	unsigned nhandlers;
	struct cwm_tnode itree;   /* inline handlers (mg_mqtt_on_topic_inline) */
	unsigned ninline;
	mg_mqtt_message_handler on_message;
	void *on_message_ud;
	mg_mqtt_connect_handler on_connect;
	void *on_connect_ud;
	mg_mqtt_disconnect_handler on_disconnect;
	void *on_disconnect_ud;
	mg_mqtt_publish_handler on_publish;
	void *on_publish_ud;
	mg_mqtt_ack_handler on_subscribe;
	void *on_subscribe_ud;
	mg_mqtt_ack_handler on_unsubscribe;
	void *on_unsubscribe_ud;
	mg_mqtt_log_handler on_log;
	void *on_log_ud;

	/* Set by start, read-only while the client runs. */
	struct cwm_settings cfg;
	char *client_id;
	struct mg_context *ctx;
	char *error_log_file;     /* CivetWeb's error_log_file, or NULL */
	char *pdir;               /* PERSISTENCE_DIR/<client id>, or NULL */
	struct cwm_bridge *bridge; /* BRIDGE_PATH set; lives from start to stop */
	atomic_uint_fast64_t pseq_next; /* next message file number */
	MQTTClient paho;          /* engine.c: mqtt-io's, see its contract */
	int paho_ver;             /* engine.c: MQTT version of the handle's last
	                             connect (paho: connect5 on v5 handles) */
	MQTTClient_persistence pst; /* engine.c: paho's store callbacks */
	struct cwm_map pstore;    /* paho's session store (persistent sessions),
	                             under pstore_lock: key -> struct cwm_pval */
	struct cwm_vec pst_given; /* engine.c: buffers handed to paho, under
	                             pstore_lock */
	int v5;
	pthread_t io_thread, dispatch_thread;
	int io_started, dispatch_started;
	atomic_int ops_ok;        /* operations accepted (threads exist) */
	atomic_int connected;
	int uri_base;             /* [L] the BROKER_URL entry a round starts at */
	int uri_try;              /* [L] entries tried in this round before */
	int uri_cur;              /* [L] the entry of this attempt/connection */
	int64_t connected_at;     /* [L] ms, of the current connection */
	int64_t lost_at;          /* [L] ms, of the last connection loss */
	int same_again;           /* [L] see cwm_connect_failed */
	int progressed;           /* [L] the broker acknowledged something on
	                             this connection: it is no short loss */
	int64_t progress_at;      /* [L] ms, the last such acknowledgement (or
	                             message): a suspect written after it */
	int filters_busy;         /* [L] mqtt-io waits for a SUBACK/UNSUBACK */
	int64_t filters_sent_at;  /* [L] ... since then (ms) */
	unsigned losses;          /* [L] connections lost, ever */
	int lost_early;           /* [L] paho reported the loss while mqtt-io
	                             still waited in the connect */
	int suspect;              /* [L] the id of the message oldest in flight
	                             at the last short losses (cwm_window_lost) */
	int strikes;              /* [L] short losses in a row with it oldest */
	int poison;               /* [L] id of a message to fail as poison
	                             (mqtt-io, before the next connect); 0 */
	int recvmax;              /* [L] the broker's Receive Maximum; 0: none */
	int quick_moves;          /* [L] losses answered by trying the next
	                             broker at once, since the back-off */
	atomic_int no_retain;     /* the broker said Retain Available 0 */
	atomic_int v311_now;      /* PROTOCOL_FALLBACK happened: connects use
	                             3.1.1 on the MQTT 5 handle */
	atomic_uint max_packet;   /* the packet limit in force: the smallest of
	                             MAX_PACKET_SIZE, the broker's Maximum
	                             Packet Size (MQTT 5 CONNACK) and what a
	                             DISCONNECT 0x95 taught; 0: none */
	unsigned learned_max;     /* [L] from DISCONNECT 0x95; 0: none */
	atomic_int registered;    /* mg_mqtt_get() may return it */


	/* [L] State and queues. */
	int stopping, dispatch_exit, disc_done;
	enum cwm_state state;
	int attempt;              /* connect attempts since the last success */
	int64_t reconnect_at;     /* cwm_now_ms() of the next attempt */
	int64_t stop_deadline;
	int backoff_s;
	int first_result;         /* 0 pending; 1 connected; < 0 error */
	char first_msg[1024];
	int tls_error;            /* a TLS error was logged this attempt */
	int send_blocked;         /* paho said "disconnected": wait for connect */
	int renew_needed, birth_needed;
	int server_reason;        /* MQTT 5 DISCONNECT reason from the broker */
	char *broker;             /* URI of the current or last connection */
	int window;               /* QoS 1/2 messages paho may hold: the
	                             smallest of MAX_INFLIGHT, the broker's
	                             Receive Maximum and awin */
	int awin;                 /* the adaptive window (cwm_window_lost) */
	int awin_cap;             /* it grows back up to this */
	int awin_acks;            /* acknowledgements since it last grew */
	int awin_logged;          /* its shrinking was logged */
	uint64_t poisoned;        /* messages failed as poison */
	struct cwm_out *byid[CWM_ID_BUCKETS]; /* QoS 1/2 in paho, by packet id */
	struct { int msgid, result; } early[16]; /* acknowledgements that came
	                             before mqtt-io recorded the packet id */
	int nearly;
	int inflight, inflight0;  /* QoS 1/2 and QoS 0 messages in paho */
	int unfinished;           /* publishes accepted and not done */
	struct cwm_out *outq, *outq_tail, *retry, *retry_tail, *inpaho;
	struct cwm_event *evq, *evq_tail;
	int ev_msgs;              /* messages queued or being dispatched */
	size_t ev_bytes;          /* their bytes (topic, payload, slot) */
	int paused;               /* flow control: the queue passed QUEUE_SIZE
	                             or QUEUE_BYTES; mqtt-io disconnects until
	                             the handlers catch up (cwm_flow_*) */
	uint64_t pauses;          /* times paused */
	int64_t paused_at, paused_ms;
	struct cwm_event *slot_free;  /* the message slot pool */
	struct cwm_event *chunks[CWM_SLOT_CHUNKS];
	int nslots, nchunks;
	uint64_t ev_pushed, ev_done; /* events queued and run, ever */
	int flush_waiting;        /* cwm_dispatch_flush waits on state_cond */
	int io_waiting, dispatch_waiting;
	struct cwm_map subs;      /* filter -> struct cwm_sub */
	struct cwm_sub *sub_head, *sub_tail;
	int next_id;
	unsigned seed;
	uint64_t published, publish_failed, received, dropped_queue_full;
	uint64_t renewals;        /* new paho handles (poison only) */
	uint64_t ack_timeouts;    /* connections closed by cwm_io_stalled */
	uint64_t reconnects, connects;
	uint64_t drops_unlogged, queue_overflow;
	uint64_t *unlinks;        /* PERSISTENCE_DIR files for mqtt-io to remove */
	size_t nunlinks, capunlinks;
	int64_t last_drop_log, last_overflow_log;

	/* mqtt-dispatch only: scratch for matching. */
	struct cwm_vec cur, nxt, hits;
	/* paho's receive thread only: the same for inline handlers. */
	struct cwm_vec icur, inxt, ihits;
	atomic_ullong inline_handled;

	/* Requests (mg_mqtt_request). reply_base is set by start, before paho
	 * exists; the rest is under req_lock. */
	char *reply_base;         /* "<client id>/reply/"; NULL: not a topic */
	size_t reply_base_len;
	struct cwm_req *reqs;     /* waiting for their reply */
	uint64_t req_seq;
	uint32_t req_nonce;       /* tells this run's ids from an earlier one's */
	int req_stopping;
	int req_active;           /* callers inside mg_mqtt_request() */
	atomic_int reply_held;    /* the reply filter is subscribed */
	atomic_uint_fast64_t req_replied, req_timeouts, req_failed, req_late;

	/* trace.c: paho's trace, under its process-wide cwm_trace_lock
	 * (taken before c->lock, never while c->lock is held). */
	int trace_joined;         /* in the list of clients paho's trace sees */
	int trace_tls;            /* a connect is watched (in progress) */
	int trace_checkhost;      /* ... to a TLS URI whose host is verified */
	int trace_sent;           /* ... and paho's trace showed its CONNECT */
	int trace_host_bad;       /* paho's trace: its host name check failed */
	char trace_host[256];     /* host name of the URI being tried */
	atomic_int trace_queued;  /* paho lines queued for mqtt-dispatch */
	atomic_uint_fast64_t trace_dropped; /* paho lines dropped: too many */
};

/* The connection speaks MQTT 5 now: PROTOCOL_VERSION 5 and no
 * PROTOCOL_FALLBACK to 3.1.1 happened. */
static inline int cwm_v5_now(const struct mg_mqtt *c)
{
	return c->v5 && !atomic_load(&c->v311_now);
}

/* ------------------------------------------------------------------------
 * Functions of the client parts, by part
 * ---------------------------------------------------------------------- */

/* src/trace.c: LOG_LEVEL debug lines of the library's own packets, paho's
 * trace (process-wide) forwarded to debug clients, and what paho says
 * only in its trace (a TLS host name mismatch). Every function here is
 * called without c->lock. */
static void cwm_trace_join(struct mg_mqtt *c);
static void cwm_trace_leave(struct mg_mqtt *c);
static void cwm_trace_connect_begin(struct mg_mqtt *c, int idx);
static int cwm_trace_tls_failed(struct mg_mqtt *c, char *why, size_t len);
static void cwm_trace_watch_end(struct mg_mqtt *c);
static void cwm_debug_connack(struct mg_mqtt *c, int session,
                              MQTTProperties *props);
static void cwm_debug_send(struct mg_mqtt *c, const struct cwm_out *r);
static void cwm_debug_done(struct mg_mqtt *c, const struct cwm_out *r,
                           int result, int retry, const int *codes,
                           int ncodes);
static void cwm_debug_received(struct mg_mqtt *c, const char *topic,
                               size_t tl, const MQTTClient_message *m);
static int cwm_trace_connect_sent(struct mg_mqtt *c);
static void cwm_debug_disconnect(struct mg_mqtt *c);

/* src/props.c */
static int cwm_props_dup(const struct mg_mqtt_props *p,
                         struct mg_mqtt_props **out);
static int cwm_props_check(const struct mg_mqtt_props *p, size_t *bytes);
static void cwm_prop_add_int4(MQTTProperties *o, enum MQTTPropertyCodes id,
                              unsigned v);
static void cwm_props_to_paho(const struct mg_mqtt_props *p, MQTTProperties *o);
static void cwm_props_from_paho(MQTTProperties *pp, struct mg_mqtt_props *p,
                                void **mem);

/* src/commands.c */
static int cwm_next_id(struct mg_mqtt *c);
static void cwm_out_free(struct cwm_out *r);
static void cwm_fifo_push(struct cwm_out **head, struct cwm_out **tail,
                          struct cwm_out *r);
static void cwm_retry_insert(struct mg_mqtt *c, struct cwm_out *r);
static void cwm_inpaho_link(struct mg_mqtt *c, struct cwm_out *r);
static void cwm_inpaho_unlink(struct mg_mqtt *c, struct cwm_out *r);
static struct cwm_out *cwm_pub_new(struct mg_mqtt *c, const char *topic,
                                   size_t tlen, const void *payload,
                                   size_t len, int qos, int retain,
                                   const struct mg_mqtt_props *props, int *rc);
static struct cwm_out *cwm_cmd_new(struct mg_mqtt *c, enum cwm_cmd type);
static int cwm_cmd_add(struct mg_mqtt *c, struct cwm_out *r, const char *filter,
                       int qos, int id, int counted);
static struct cwm_out *cwm_cmd_filters(struct mg_mqtt *c, enum cwm_cmd type,
                                       const char *const *filters,
                                       const int *qos, int n);
static int cwm_buffered_locked(const struct mg_mqtt *c);
static int cwm_ops_check(const struct mg_mqtt *c);
static void cwm_enqueue(struct mg_mqtt *c, struct cwm_out *r);
static size_t cwm_publish_size(int v5, size_t tlen, size_t pbytes, int qos,
                               size_t len);

/* src/subs.c */
static int cwm_subs_from_config(struct mg_mqtt *c);
static void cwm_sub_free(struct cwm_sub *s);
static void cwm_sub_forget(struct mg_mqtt *c, struct cwm_sub *s);
static void cwm_sub_ref(struct mg_mqtt *c, const char *filter, int qos,
                        int sys);
#if MG_MQTT_ENABLE_BRIDGE
static void cwm_sub_unref(struct mg_mqtt *c, const char *filter);
#endif

/* src/persist.c */
static int cwm_persist_write(struct mg_mqtt *c, struct cwm_out *r);
static void cwm_persist_remove(struct mg_mqtt *c, struct cwm_out *r);
static int cwm_persist_open(struct mg_mqtt *c, char *err, size_t errlen);

/* src/io.c */
static struct cwm_out *cwm_take_batch(struct mg_mqtt *c);
static void cwm_fail_all(struct mg_mqtt *c);
/* A worker thread's wake-up pacing (cwm_worked, cwm_wait_for_work). */
struct cwm_pace {
	int busy;
	int64_t last_us;
	int window_us;
};
static void cwm_worked(struct cwm_pace *p, int n);
static void cwm_wait_for_work(struct mg_mqtt *c, pthread_cond_t *cond,
                              int *waiting, struct cwm_pace *p,
                              int64_t wait_ms);
static void *cwm_io_main(void *arg);

/* src/engine.c: the only part that calls paho's client API (its
 * contract is at the top of engine.c). */
static int cwm_eng_create(struct mg_mqtt *c, char *err, size_t errlen);
static void cwm_eng_destroy(struct mg_mqtt *c);
static int cwm_eng_released(struct mg_mqtt *c, int msgid);
static int cwm_eng_renew(struct mg_mqtt *c, const int *drop, int ndrop,
                         char *err, size_t errlen);
static void cwm_eng_connect(struct mg_mqtt *c, int idx, struct cwm_connack *a);
static int cwm_eng_publish(struct mg_mqtt *c, const struct cwm_out *r,
                           int *msgid);
static int cwm_eng_filters(struct mg_mqtt *c, const struct cwm_out *r, int sub,
                           int *codes);
static void cwm_eng_disconnect(struct mg_mqtt *c, int timeout_ms);
static void cwm_eng_free_message(MQTTClient_message *m, char *topic);
static void cwm_eng_trace(int level, MQTTClient_traceCallback *cb, int set_cb,
                          int set_level);
static const char *cwm_eng_strerror(int rc);

/* src/connection.c */
static void cwm_connect_result(struct mg_mqtt *c, const struct cwm_connack *a);
static void cwm_connect_failed(struct mg_mqtt *c, int error, int reason,
                               const char *text);
static void cwm_on_lost(void *ctx, char *cause);
static void cwm_conn_gone_locked(struct mg_mqtt *c, const char *why, int lost);
static void cwm_window_set(struct mg_mqtt *c);
static void cwm_window_acked(struct mg_mqtt *c);
static struct cwm_out *cwm_oldest_in_flight(struct mg_mqtt *c);
static void cwm_on_server_disconnect(void *ctx, MQTTProperties *props,
                                     enum MQTTReasonCodes reason);

/* src/done.c */
static void cwm_done(struct mg_mqtt *c, struct cwm_out *r, int result,
                     int retry, const int *codes, int ncodes);
static void cwm_pub_acked(struct mg_mqtt *c, int msgid, int result);
static void cwm_byid_add(struct mg_mqtt *c, struct cwm_out *r, int msgid);
static struct cwm_out *cwm_byid_take(struct mg_mqtt *c, int msgid);

/* src/dispatch.c */
static void cwm_push_event(struct mg_mqtt *c, struct cwm_event *ev);
static struct cwm_event *cwm_event_new(enum cwm_evtype type, size_t extra);
static char *cwm_event_str(struct cwm_event *ev, size_t *used, const char *s);
static int cwm_on_message(void *ctx, char *topic, int topic_len,
                          MQTTClient_message *m);
static void cwm_flow_check(struct mg_mqtt *c);
static void cwm_event_discard(struct cwm_event *ev);
static void *cwm_dispatch_main(void *arg);

/* src/request.c */
static int cwm_req_setup(struct mg_mqtt *c);
static int cwm_req_arrived(struct mg_mqtt *c, const char *topic, size_t tl,
                           MQTTClient_message *m);
static void cwm_req_stop(struct mg_mqtt *c, int wait);
static void cwm_req_failed(struct mg_mqtt *c, int id, int result);

/* src/client.c: the process registry of started clients. */
/* Calls fn for every started client of ctx, holding the registry lock:
 * each stays alive during its call; fn may take the client's locks. */
static void cwm_registry_each(const struct mg_context *ctx,
                              void (*fn)(struct mg_mqtt *c, void *arg),
                              void *arg);
/* Calls fn for every client of the registry (from its start until its
 * threads are joined, a stopping one too), holding the registry lock. */
static void cwm_registry_all(void (*fn)(struct mg_mqtt *c, void *arg),
                             void *arg);

/* src/status.c */
static cJSON *cwm_status_object(struct mg_mqtt *c);

#endif /* CWM_CLIENT_H */
