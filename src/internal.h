/*
 * civetweb-mqtt's internal header: what the parts under src/ share. The
 * shipped civetweb_mqtt.c is generated from this header and the parts
 * (scripts/amalgamate.sh; src/README.md lists them in order); edit here.
 *
 * Design
 * ------
 * Threads.  paho's synchronous client (MQTTClient) runs one receive
 * thread ("MQTTClient_run") for every paho client of the process; its
 * callbacks (message arrived, acknowledgement, connection lost) run there
 * or on a thread paho starts for the call, and only take c->lock long
 * enough to record or queue what happened: nothing waits there. Each
 * started client adds threads of its own:
 *   mqtt-io        (io.c) the only thread that calls paho (through the
 *                  engine, engine.c) once the client runs: connects and
 *                  reconnects with back-off (blocking up to
 *                  CONNECTION_TIMEOUT), renews subscriptions and sends the
 *                  birth message on each connect, writes queued commands
 *                  inside the in-flight window (a PUBLISH is written on
 *                  this thread; a SUBSCRIBE waits here for its SUBACK),
 *                  pauses the connection while the handlers are behind
 *                  (flow control), fails poison messages, flushes and
 *                  disconnects at stop. Request handlers never call paho.
 *   mqtt-dispatch  (dispatch.c) runs every user handler, one at a time, in
 *                  arrival order, and hands messages to the bridge.
 *   mqtt-bridge    (bridge_ws.c, with a bridge) CWM_WRITERS threads that
 *                  write queued messages to WebSocket clients, each only
 *                  as much as the client's socket takes without waiting (a
 *                  full one is tried again later), so that browsers that
 *                  never read hold no writer. SSE streams are written by
 *                  the CivetWeb worker thread serving them.
 *
 * Queues (guarded by c->lock unless said).
 *   retry, outq    commands for mqtt-io (struct cwm_out), FIFO; retry holds
 *                  what must go again first (QoS 1/2 messages of a clean
 *                  session after a lost connection, renewals, commands
 *                  not written). publish() refuses once MAX_INFLIGHT +
 *                  MAX_BUFFERED messages are unfinished.
 *   inpaho, byid   commands paho holds: a QoS 1/2 message stays there,
 *                  under its packet id in byid, until its acknowledgement
 *                  (cwm_pub_acked); paho sends it again by itself after a
 *                  reconnect of a persistent session.
 *   evq            events for mqtt-dispatch (struct cwm_event), FIFO; log
 *                  lines too (EV_LOG): mqtt-dispatch writes the log file.
 *                  Messages count against QUEUE_SIZE and QUEUE_BYTES: past
 *                  either an arriving QoS 0 message is dropped and counted,
 *                  a QoS 1/2 one is kept and the connection pauses
 *                  (cwm_flow_pause) until mqtt-dispatch brought the queue
 *                  under half of both. Other events are never dropped.
 *   bclient.q      per browser, under the bridge lock: a ring of rendered
 *                  messages bounded in count (BRIDGE_CLIENT_QUEUE) and bytes
 *                  (BRIDGE_CLIENT_QUEUE_BYTES); a browser that lets it fill
 *                  is dropped.
 *
 * Locks.  One mutex per client, c->lock, guards every field marked [L] in
 * struct mg_mqtt. Nothing calls paho or a user handler while holding it
 * (paho holds its own lock when it calls us). c->req_lock guards the
 * waiting requests. c->pstore_lock (engine.c) guards paho's session store
 * and is a leaf. Per bridge, the anchor's lock (the bridge lock, [B])
 * guards its clients, their queues and filters and the delivery tree; it
 * is taken before c->lock, never after. The bridge's lv_lock (last
 * values) and nonce_lock (digest nonces) are leaves: nothing else is
 * taken while one is held. The registry lock (client.c)
 * guards the list of started clients and is taken before any client's
 * lock. cwm_trace_lock (trace.c, process-wide) guards the clients paho's
 * trace is forwarded to; paho's trace callback takes it holding paho's
 * locks, so it is taken before a client's c->lock, never while one is
 * held; the only paho calls made holding it are the trace setters, which
 * take no lock. No lock is held across a call into paho or CivetWeb that
 * can block on the network.
 *
 * Ownership.  A command belongs to the queue it is in, then to c->inpaho
 * (and byid) until it is done, then it is freed by the thread that saw it
 * done. A received paho message belongs to its event until mqtt-dispatch
 * has run its handlers and frees it. A bridge message (struct cwm_bmsg) is
 * reference counted: one count per queue holding it. paho's session store
 * (persistent sessions) is the client's (c->pstore), so that a new paho
 * handle takes it back whole.
 *
 * Shutdown (mg_mqtt_stop).  Unregister; set c->stopping; mqtt-io flushes
 * (at most CONNECTION_TIMEOUT seconds, only while connected), disconnects,
 * destroys the paho handle (no paho callback runs after that), fails what
 * is left with MG_MQTT_ERR_STOPPED, queues the final disconnect event and
 * exits; mqtt-dispatch drains evq and exits; both are joined; the bridge is
 * detached from CivetWeb's handlers and its threads joined; all is freed.
 * A stop while mqtt-io waits in a connect or for a SUBACK waits for that
 * (CONNECTION_TIMEOUT, 5 s at least for the SUBACK).
 *
 * Errors.  Inside, every function that can fail returns 0 (or a positive
 * id) or a negative MG_MQTT_ERR_* code; CWM_ERR_* below extends that space
 * for the bridge only. HTTP statuses appear only at the bridge's edge,
 * where cwm_http_status() turns a code into one.
 *
 * Compile-time switches
 *   MG_MQTT_ENABLE_BRIDGE  1 (default): the HTTP/WebSocket/SSE bridge is
 *                          built in; 0: left out, for a CivetWeb built
 *                          without WebSocket support (BRIDGE_* options are
 *                          then refused).
 *   MG_MQTT_ENABLE_LINES   1: #line markers in civetweb_mqtt.c point
 *                          compiler messages and debuggers at src/; 0
 *                          (default) for builds that only have the two
 *                          files.
 */
/* C11, never C++: g++ (or a .c in a CMake project whose LANGUAGES lack
 * C, which then leaves the file out) cannot build it. The missing include
 * after the #error stops the compiler there, before hundreds of errors. */
#ifdef __cplusplus
#error "civetweb_mqtt.c is C: compile it with a C compiler (gcc -c civetweb_mqtt.c; CMake: project(app LANGUAGES C CXX)), see docs/cpp.md"
#include "civetweb_mqtt.c must be compiled as C, not C++"
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
/* Large-file interfaces on 32-bit systems too: without them glibc's
 * readdir() fails (EOVERFLOW) on file systems with 64-bit inode numbers,
 * and PERSISTENCE_DIR could not be read. No public type depends on it. */
#ifndef _FILE_OFFSET_BITS
#define _FILE_OFFSET_BITS 64
#endif
/* This file builds the library: dllexport on Windows (see MG_MQTT_API). */
#ifndef MG_MQTT_BUILDING
#define MG_MQTT_BUILDING 1
#endif
#include "civetweb_mqtt.h"

#if MG_MQTT_VERSION_MAJOR != 0 || MG_MQTT_VERSION_MINOR != 1 || \
    MG_MQTT_VERSION_PATCH != 0
#error "civetweb_mqtt.c and civetweb_mqtt.h are from different versions"
#endif

#ifndef MG_MQTT_ENABLE_BRIDGE
#define MG_MQTT_ENABLE_BRIDGE 1
#endif

#include <MQTTClient.h>
#include <MQTTClientPersistence.h>
#include <civetweb.h>
#include <cjson/cJSON.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------
 * Constants and shared types
 * ---------------------------------------------------------------------- */

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
#define CWM_JSON_DEPTH_LIMIT 128 /* BRIDGE_MAX_JSON_DEPTH at most: cJSON
                                   recurses once a level, and a CivetWeb
                                   worker has a 100 kB stack */
#define CWM_COALESCE_US 100        /* see cwm_wait_for_work */
#define CWM_COALESCE_MAX_US 800
#define CWM_FAST_US 40              /* a stream faster than 25,000 items/s */

/* How a worker thread (mqtt-io, mqtt-dispatch) waits; producers signal
 * only an idle one. */
enum { CWM_RUNNING = 0, CWM_COALESCING = 1, CWM_IDLE_WAIT = 2 };

/* A string-keyed hash map with chaining; keys are copied. */
struct cwm_map_ent {
	struct cwm_map_ent *next;
	uint32_t hash;
	size_t klen;
	void *val;
	char key[];
};

struct cwm_map {
	struct cwm_map_ent **b;
	size_t nb; /* buckets, a power of two (0 before first insert) */
	size_t n;  /* entries */
};

/* Named levels: "home/{room}/temperature". */
struct mg_mqtt_params {
	int n;
	struct {
		int level;        /* 0-based, in the filter without $share/<g>/ */
		const char *name; /* NUL-terminated, in the same block */
	} p[];
};

enum cwm_ktype {
	K_STR,    /* any string; "" means unset */
	K_SECRET, /* a string never echoed */
	K_PATH,   /* a file or directory name */
	K_TOPIC,  /* a topic name */
	K_BOOL,
	K_INT,    /* integer in [min, max] */
	K_NUM,    /* non-negative decimal number */
	K_ENUM
};

struct cwm_enum {
	const char *name;
	int value;
};
enum { CWM_CERT_NONE, CWM_CERT_OPTIONAL, CWM_CERT_REQUIRED };

/* Everything a client reads from its options. Strings are malloc()ed. */
struct cwm_settings {
	char *client_id;
	char *broker_url;
	int broker_port; /* 0: the scheme's default */
	char *username;
	char *password;
	char *password_file;
	int keepalive;
	int connection_timeout;
	int clean_session;
	int protocol_fallback; /* 5 refused: go on with 3.1.1 */
	int connect_async;
	double refresh_time;
	int protocol; /* 3 (3.1), 4 (3.1.1), 5 */
	int transport; /* 0 tcp, 1 websockets */
	int tls_enabled;
	char *tls_ca_certs;
	char *tls_certfile;
	char *tls_keyfile;
	char *tls_keyfile_password;
	int tls_cert_reqs;
	int tls_version;
	char *tls_ciphers;
	int tls_insecure;
	char *will_topic;
	char *will_message;
	int will_qos;
	int will_retain;
	char *birth_topic;
	char *birth_message;
	int birth_qos;
	int birth_retain;
	char *shared_group;
	char *subscribe;
	int reconnect_min;
	int reconnect_max;
	int max_inflight;
	int max_buffered;
	char *persistence_dir;
	int persistence_fsync;
	int queue_size;
	int queue_bytes; /* bytes of messages waiting for handlers, at most */
	int max_packet_size; /* the broker's packet limit, as the user knows it */
	int max_topic_levels; /* levels a topic or filter may have */
	int log_level;     /* MG_MQTT_LOG_*: lines above it are not made */
	char *bridge_path;
	char *bridge_publish_allow;
	char *bridge_subscribe_allow;
	char *bridge_auth_file;
	int bridge_max_body;
	int bridge_client_queue;
	int bridge_client_queue_bytes;
	int bridge_retained_window; /* ms */
	int bridge_last_values;
	int bridge_request_timeout_max;
	int bridge_max_json_depth;
	int bridge_nonce_lifetime;
	char *bridge_allowed_origins;
	char *bridge_allowed_hosts;
	int bridge_last_values_bytes;
	int bridge_max_clients;
	int bridge_max_filters;

	/* Derived by cwm_settings_finish(). */
	char **uris;       /* paho server URIs, fail-over order */
	int nuris;
	int use_tls;       /* some URI is ssl:// or wss:// */
	char *secret;      /* PASSWORD, or the first line of PASSWORD_FILE */
	char **sub_filters; /* parsed SUBSCRIBE */
	int *sub_qos;
	int nsubs;
	char **bpub, **bsub; /* parsed BRIDGE_PUBLISH_ALLOW / _SUBSCRIBE_ALLOW */
	int nbpub, nbsub;
	uint64_t set;        /* bit i: cwm_keys[i] was given an option */
};

struct cwm_key {
	const char *name;
	enum cwm_ktype type;
	size_t off;
	long min, max;
	const char *def;            /* default, parsed like a value; NULL: unset */
	const struct cwm_enum *en;  /* K_ENUM values */
	const char *hint;           /* "is not <hint>" in error messages */
};

#define CWM_S(f) offsetof(struct cwm_settings, f)

struct cwm_handler {
	struct cwm_handler *next; /* next handler at the same node */
	mg_mqtt_message_handler fn;
	void *ud;
	unsigned seq;             /* registration order */
	struct mg_mqtt_params *params; /* its filter's {names}; NULL: none */
	int64_t since;            /* bridge: when the browser subscribed (ms) */
};

struct cwm_tnode {
	struct cwm_map kids;      /* level -> struct cwm_tnode * */
	struct cwm_tnode *plus;   /* "+" child */
	struct cwm_tnode *hash;   /* "#" child */
	struct cwm_handler *handlers, *last;
	struct cwm_tnode *up;     /* the parent (NULL for a tree's root) */
	struct cwm_tnode *fnext;  /* the free list of cwm_tnode_free */
};

struct cwm_vec {
	void **v;
	size_t n, cap;
};

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


/* A growable byte buffer; on allocation failure it stops growing and
 * remembers it (oom). */
struct cwm_wbuf {
	unsigned char *p;
	size_t n, cap;
	int oom;
};



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
	char *frag;
	size_t frag_len;
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

/* ------------------------------------------------------------------------
 * Functions one part defines and others call, by part
 * ---------------------------------------------------------------------- */

/* src/util.c */
static char *cwm_strndup(const char *s, size_t n);
static char *cwm_strdup(const char *s);
static void cwm_strv_free(char **v, int n);
static int64_t cwm_now_ms(void);
static struct timespec cwm_deadline_us(int64_t us);
static struct timespec cwm_deadline(int64_t ms_from_now);
static void cwm_fmt(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const char *cwm_quote(const char *v, char out[72]);
static const char *cwm_quote_path(const char *v, char out[320]);
static void *cwm_map_get(const struct cwm_map *m, const char *k, size_t klen);
static int cwm_map_put_key(struct cwm_map *m, const char *k, size_t klen,
                           void *v, const char **stored);
static int cwm_map_put(struct cwm_map *m, const char *k, size_t klen, void *v);
static void *cwm_map_del(struct cwm_map *m, const char *k, size_t klen);
static void cwm_map_free(struct cwm_map *m, void (*free_val)(void *));
static int cwm_vec_push(struct cwm_vec *v, void *p);
static void cwm_wput(struct cwm_wbuf *b, const void *data, size_t n);
static void cwm_wput32(struct cwm_wbuf *b, uint32_t v);
static void cwm_wputs(struct cwm_wbuf *b, const void *s, size_t n);

/* src/topics.c */
static int cwm_utf8_valid(const char *s, size_t n);
static int cwm_topic_check(const char *t, size_t n);
static int cwm_share_len(const char *f, size_t n);
static size_t cwm_levels(const char *s, size_t n);
static int cwm_levels_check(const struct mg_mqtt *c, const char *f,
                            int filter);
static int cwm_filter_normalize(const char *filter, char **out,
                                struct mg_mqtt_params **params);
static int cwm_filter_normalize_owned(char **f);
static int cwm_match(const char *f, const char *t, size_t n);
static int cwm_utf8_text(const char *s, size_t n);

/* src/config.c */
static char *cwm_trimdup(const char *v);
static int cwm_parse_bool(const char *v, int *out);
static int cwm_parse_long(const char *v, long min, long max, long *out);
static void cwm_settings_free(struct cwm_settings *s);
static int cwm_settings_read(struct cwm_settings *s, const char *prefix,
                             const char **options, char *err, size_t errlen);
static const char *cwm_protocol_name(int p);
static const char *cwm_bridge_key_given(const struct cwm_settings *s);
static size_t cwm_key_suffix_len(const char *name);
static void cwm_settings_json(const struct cwm_settings *s, cJSON *o);

/* src/config_check.c */
static int cwm_settings_finish(struct cwm_settings *s, const char *prefix,
                               char *err, size_t errlen);

/* src/tree.c */
static void cwm_handler_free(struct cwm_handler *h);
static void cwm_tree_clear(struct cwm_tnode *root);
static int cwm_tree_add(struct cwm_tnode *root, const char *f,
                        struct cwm_handler *h);
#if MG_MQTT_ENABLE_BRIDGE
static void cwm_tree_remove(struct cwm_tnode *root, const char *f, void *ud);
#endif
static int cwm_tree_match(const struct cwm_tnode *root, const char *t, size_t n,
                          struct cwm_vec *cur, struct cwm_vec *nxt,
                          struct cwm_vec *out);

/* src/log.c */
static void cwm_log(struct mg_mqtt *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void cwm_log_quiet(struct mg_mqtt *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void cwm_log_locked(struct mg_mqtt *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int cwm_log_wants(const struct mg_mqtt *c, int level);
static void cwm_log_event(struct mg_mqtt *c, const struct cwm_event *ev);
static void cwm_log_push_trace(struct mg_mqtt *c, const char *line);

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

/* src/json.c */
static char *cwm_base64(const void *data, size_t n);
static int cwm_add_payload(cJSON *o, const void *payload, size_t len);
static void cwm_json_str_or_null(cJSON *o, const char *name, const char *v);

/* src/client.c */
/* Calls fn for every started client of ctx, holding the registry lock:
 * each stays alive during its call; fn may take the client's locks. */
static void cwm_registry_each(const struct mg_context *ctx,
                              void (*fn)(struct mg_mqtt *c, void *arg),
                              void *arg);

/* src/status.c */
static cJSON *cwm_status_object(struct mg_mqtt *c);

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
