/*
 * civetweb-mqtt: an MQTT client (Eclipse paho.mqtt.c) attached to a CivetWeb
 * server context, configured from the same option list / civetweb.conf.
 *
 * This header is the manual. Read the "Contract" section once; every
 * function below refers to it.
 *
 * Contract
 * --------
 * Errors.  Every function that can fail returns a negative MG_MQTT_ERR_*
 * code; mg_mqtt_strerror() turns it into text. A failed call leaves the
 * client as it was. Start-up errors also fill a caller-supplied buffer with
 * a sentence naming the offending key and value (secrets are never echoed).
 *
 * Asynchrony.  subscribe / unsubscribe / publish return at once. A positive
 * return value is an id; it means "queued", not "sent". The matching
 * acknowledgement handler (on_publish, on_subscribe, on_unsubscribe) is
 * later called with the same id exactly once. A negative return means the
 * operation was not queued and no handler will run for it.
 *
 * Threads.  Each started client owns two threads: "mqtt-io" (the only one
 * that calls paho's client: connects, sends, reconnects, applies flow
 * control) and "mqtt-dispatch" (runs every handler, one at a time, in
 * arrival order). paho adds one receive thread for the whole process
 * ("MQTTClient_run"), which inline handlers run on. Calls marked "any thread" may
 * be made concurrently from CivetWeb worker threads, from handlers and from
 * your own threads. Handlers may call every "any thread" function,
 * including publish; they must not call mg_mqtt_stop().
 *
 * Life cycle.  mg_mqtt_create() -> mg_mqtt_on_*() -> mg_mqtt_start() ->
 * ... -> mg_mqtt_stop(). Handlers are registered before start, as with
 * Flask-MQTT's "register handlers before init_app". Stop the CivetWeb
 * context (mg_stop) before the clients attached to it, so that no request
 * handler still holds a client pointer when it is freed.
 * THE CLIENT MUST OUTLIVE THE SERVER'S WORKERS: mg_mqtt_stop() while a
 * request handler may still be running (a slow request at shutdown) frees
 * the client under it. In C++ that means the CivetServer is destroyed
 * first: declare the client (or civetweb_mqtt.hpp's mqtt::client) BEFORE
 * the CivetServer, so that it is destroyed after it (docs/cpp.md).
 *
 * C++.  The header compiles as C++ (extern "C"); civetweb_mqtt.c does not
 * (compile it as C). Handlers are called from C: a handler must not let an
 * exception escape (it would end the program in std::terminate); catch
 * inside it. civetweb_mqtt.hpp's wrapper does that at the boundary.
 */
#ifndef CIVETWEB_MQTT_H
#define CIVETWEB_MQTT_H

#include <stddef.h>
#include <stdint.h>

#define MG_MQTT_VERSION_MAJOR 0
#define MG_MQTT_VERSION_MINOR 1
#define MG_MQTT_VERSION_PATCH 0
#define MG_MQTT_VERSION "0.1.0"

/* Compile-time switches for building civetweb_mqtt.c (define them on the
 * compiler's command line; nothing in this header depends on them):
 *   MG_MQTT_ENABLE_BRIDGE  1 (default): the HTTP/WebSocket/SSE bridge is
 *                          built in. 0: left out, for a CivetWeb built
 *                          without WebSocket support; the library then
 *                          calls no mg_websocket_* function, and
 *                          mg_mqtt_start() refuses every BRIDGE_* option
 *                          with MG_MQTT_ERR_CONFIG and a sentence saying the
 *                          bridge was not compiled in.
 *   MG_MQTT_ENABLE_LINES   1: #line markers point compiler messages and
 *                          debuggers at the parts in src/ (the project's
 *                          own builds); 0 (default) otherwise. */

/* MG_MQTT_API marks the functions of the API.
 *   Windows: __declspec(dllimport) for users of the DLL (the default);
 *            __declspec(dllexport) while the DLL itself is built
 *            (civetweb_mqtt.c defines MG_MQTT_BUILDING); nothing when
 *            MG_MQTT_STATIC is defined -- define it for every file, the
 *            library's and yours, when the library is linked statically or
 *            civetweb_mqtt.c is compiled into your program (CMake's
 *            civetweb-mqtt::civetweb-mqtt-static sets it for you).
 *   ELF (gcc, clang): visibility("default"), so that a library built with
 *            -fvisibility=hidden exports the mg_mqtt_* functions only.
 *   Define MG_MQTT_API yourself to override all of this. */
#ifndef MG_MQTT_API
#if defined(_WIN32) || defined(__CYGWIN__)
#if defined(MG_MQTT_STATIC)
#define MG_MQTT_API
#elif defined(MG_MQTT_BUILDING)
#define MG_MQTT_API __declspec(dllexport)
#else
#define MG_MQTT_API __declspec(dllimport)
#endif
#elif defined(__GNUC__) && __GNUC__ >= 4
#define MG_MQTT_API __attribute__((visibility("default")))
#else
#define MG_MQTT_API
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

struct mg_context; /* CivetWeb's server context (civetweb.h) */
struct mg_mqtt;    /* one MQTT client; opaque */

/* ------------------------------------------------------------------------
 * Errors
 * ---------------------------------------------------------------------- */

/* One table: name, value, text. mg_mqtt_strerror() is generated from it. */
#define MG_MQTT_ERRNO_MAP(XX)                                                  \
	XX(INVALID, -1, "invalid argument")                                        \
	XX(NOMEM, -2, "out of memory")                                             \
	XX(CONFIG, -3, "bad configuration")                                        \
	XX(TOPIC, -4, "invalid topic name")                                        \
	XX(FILTER, -5, "invalid topic filter")                                     \
	XX(QOS, -6, "QoS must be 0, 1 or 2")                                       \
	XX(TOO_LARGE, -7, "topic or payload too large")                            \
	XX(PROTOCOL, -8, "MQTT 5 properties need PROTOCOL_VERSION 5")              \
	XX(NOT_CONNECTED, -9, "not connected and buffering is off")                \
	XX(BUFFER_FULL, -10, "outgoing buffer full (MAX_INFLIGHT + MAX_BUFFERED)") \
	XX(QUEUE_FULL, -11, "dispatch queue full (QUEUE_SIZE)")                    \
	XX(STARTED, -12, "client already started")                                 \
	XX(NOT_STARTED, -13, "client not started")                                 \
	XX(STOPPED, -14, "client stopped before the operation completed")          \
	XX(EXISTS, -15, "a client with this prefix is already on this context")    \
	XX(IN_HANDLER, -16, "not allowed from a handler")                          \
	XX(CONNECT, -17, "could not connect to the broker")                        \
	XX(REFUSED, -18, "the broker refused the connection")                      \
	XX(TIMEOUT, -19, "timed out")                                              \
	XX(CONNECTION_LOST, -20, "connection to the broker lost")                  \
	XX(TLS, -21, "TLS error")                                                  \
	XX(THREAD, -22, "cannot create a thread")                                  \
	XX(IO, -23, "cannot read a file")                                          \
	XX(PAHO, -24, "MQTT library error")                                        \
	XX(NOT_FOUND, -25, "not found")                                            \
	XX(PARAM, -26, "bad {name} level (a whole level, a name used once)")      \
	XX(POISON, -27, "the broker closed the connection over this message "    \
	                "twice: not sent again")

enum mg_mqtt_error {
	MG_MQTT_OK = 0,
#define MG_MQTT_XX_(name, value, text) MG_MQTT_ERR_##name = value,
	MG_MQTT_ERRNO_MAP(MG_MQTT_XX_)
#undef MG_MQTT_XX_
};

/* Text for an MG_MQTT_ERR_* code (or "success" for 0). Never NULL; an
 * unknown code gives "unknown error". The string is static.
 * Any thread. */
MG_MQTT_API const char *mg_mqtt_strerror(int err);

/* ------------------------------------------------------------------------
 * Messages and MQTT 5 properties
 * ---------------------------------------------------------------------- */

/* One MQTT 5 user property. Both strings NUL-terminated UTF-8. */
struct mg_mqtt_user_property {
	const char *name;
	const char *value;
};

/* MQTT 5 publish properties. Zero-initialise and fill what you need; every
 * field's zero value means "absent". With PROTOCOL_VERSION 3.1 / 3.1.1 a
 * received message has all fields absent, and publishing with any field set
 * fails with MG_MQTT_ERR_PROTOCOL. */
struct mg_mqtt_props {
	const struct mg_mqtt_user_property *user; /* array; NULL: none */
	size_t user_count;                        /* entries in user */
	uint32_t message_expiry;   /* seconds; 0: message never expires */
	const char *response_topic; /* NULL: none; a topic name, no wildcards */
	const void *correlation_data; /* NULL: none; binary */
	size_t correlation_len;       /* bytes in correlation_data */
	const char *content_type;     /* NULL: none; e.g. "application/json" */
	int payload_utf8;             /* 1: payload format indicator "UTF-8" */
};

/* The {name} levels of the filter of the topic handler being called;
 * read them with mg_mqtt_param(). Opaque. */
struct mg_mqtt_params;

/* A received message, as handed to message handlers. Everything it points
 * to is valid until the handler returns; copy what you keep. */
struct mg_mqtt_message {
	const char *topic;        /* NUL-terminated topic name */
	size_t topic_len;         /* strlen(topic) */
	const void *payload;      /* payload bytes; NOT NUL-terminated */
	size_t payload_len;       /* bytes in payload; 0: empty payload */
	int qos;                  /* 0, 1 or 2 as delivered by the broker */
	int retain;               /* 1: a retained message (sent on subscribe) */
	int dup;                  /* 1: the broker may have sent it before */
	int packet_id;            /* MQTT packet id; 0 for QoS 0 */
	const struct mg_mqtt_props *props; /* never NULL; all absent if none */
	const struct mg_mqtt_params *params; /* named levels of the handler's
	                                        filter; NULL: none */
};

/* The value of the level named {name} in the filter of the topic handler
 * being called: with a handler on "home/{room}/temperature", a message on
 * "home/kitchen/temperature" gives "kitchen" for "room". Writes it into
 * buf (snprintf rules: NUL-terminated when len > 0, truncated if short).
 * Returns its length, MG_MQTT_ERR_NOT_FOUND (no such name, or the catch-all
 * handler), or MG_MQTT_ERR_INVALID. Within the handler only. */
MG_MQTT_API int mg_mqtt_param(const struct mg_mqtt_message *msg,
                              const char *name, char *buf, size_t len);

/* ------------------------------------------------------------------------
 * Handlers. All run on the client's dispatch thread ("mqtt-dispatch"), one
 * at a time, in the order their events arrived. A handler that blocks
 * delays later handlers of the same client, never the network: keep-alive
 * and acknowledgements go on, and arriving messages wait in the dispatch
 * queue (QUEUE_SIZE; see mg_mqtt_on_topic for what happens when it is full).
 * ---------------------------------------------------------------------- */

typedef void (*mg_mqtt_message_handler)(struct mg_mqtt *c,
                                        const struct mg_mqtt_message *msg,
                                        void *user_data);

/* Outcome of one connection attempt. */
struct mg_mqtt_connect_info {
	int connected;       /* 1: connected; 0: this attempt failed */
	int error;           /* 0, or MG_MQTT_ERR_CONNECT / _REFUSED / _TIMEOUT / _TLS */
	int reason_code;     /* CONNACK code: 0-5 (MQTT 3) or MQTT 5 reason code;
	                        -1 when no CONNACK arrived (network, TLS, timeout) */
	int session_present; /* 1: the broker resumed a stored session */
	int attempt;         /* 1 for the first attempt after start or a loss */
	const char *broker;  /* URI tried or connected to, e.g. "tcp://h:1883" */
	const char *message; /* human-readable detail; never NULL */
};
typedef void (*mg_mqtt_connect_handler)(struct mg_mqtt *c,
                                        const struct mg_mqtt_connect_info *info,
                                        void *user_data);

/* The end of a connection. */
struct mg_mqtt_disconnect_info {
	int stopped;         /* 1: mg_mqtt_stop() ended it (no last will sent) */
	int reason_code;     /* MQTT 5 DISCONNECT reason from the broker; 0 else */
	const char *broker;  /* URI that was connected */
	const char *message; /* human-readable cause; never NULL */
};
typedef void (*mg_mqtt_disconnect_handler)(
    struct mg_mqtt *c, const struct mg_mqtt_disconnect_info *info,
    void *user_data);

/* Acknowledgement of a publish: id as returned by mg_mqtt_publish().
 * result: 0 when the broker acknowledged it (QoS 1: PUBACK, QoS 2: PUBCOMP)
 * or, for QoS 0, when it was written to the network; an MQTT 5 PUBACK /
 * PUBREC reason code (> 0; 0x10 "no matching subscribers" is a success,
 * >= 0x80 a refusal); or a negative MG_MQTT_ERR_* (MG_MQTT_ERR_STOPPED when
 * the client stopped before the message could be sent, MG_MQTT_ERR_POISON
 * when the broker kept closing the connection over it: mg_mqtt_publish). */
typedef void (*mg_mqtt_publish_handler)(struct mg_mqtt *c, int id, int result,
                                        void *user_data);

/* Acknowledgement of a subscribe or unsubscribe: id as returned by the call.
 * codes[i] is the broker's answer for the i-th filter of the request:
 * SUBACK granted QoS 0-2 or a failure code >= 0x80; UNSUBACK MQTT 5 reason
 * code (0 with MQTT 3, which has none). count is the number of filters.
 * When the request could not be completed, count is 0, codes is NULL and
 * result is a negative MG_MQTT_ERR_*; otherwise result is 0. */
typedef void (*mg_mqtt_ack_handler)(struct mg_mqtt *c, int id, int result,
                                    const int *codes, int count,
                                    void *user_data);

enum mg_mqtt_log_level {
	MG_MQTT_LOG_ERROR = 0,
	MG_MQTT_LOG_WARNING = 1,
	MG_MQTT_LOG_INFO = 2,
	MG_MQTT_LOG_DEBUG = 3
};
/* text: one line, no trailing newline, never holds a password or payload
 * bytes. Lines of a level above the client's LOG_LEVEL option (error,
 * warning, info by default, debug) are not made at all. */
typedef void (*mg_mqtt_log_handler)(struct mg_mqtt *c, int level,
                                    const char *text, void *user_data);

/* ------------------------------------------------------------------------
 * Life cycle
 * ---------------------------------------------------------------------- */

/* Creates a client that reads the options named <prefix>_<KEY>. prefix NULL
 * or "" means "MQTT"; prefixes match without regard to case and must be
 * letters, digits and '_'.
 * Returns the client, or NULL when out of memory or the prefix is invalid.
 * Free it with mg_mqtt_stop(), started or not. Any thread. */
MG_MQTT_API struct mg_mqtt *mg_mqtt_create(const char *prefix);

/* Reads the client's options from `options` (name, value, name, value, ...,
 * NULL: the list mg_start() takes, or mg_mqtt_config.mqtt), starts its
 * threads and connects. Option names of other prefixes and CivetWeb's own
 * options are ignored; an unknown <PREFIX>_<KEY> or a bad value is an error.
 *
 * ctx may be NULL (no CivetWeb server: mg_mqtt_get() cannot find the
 * client). With ctx, log lines also go to CivetWeb's error_log_file. ctx
 * is const so that C++'s CivetServer::getContext() can be passed as it is;
 * the client still registers its bridge's handlers on it (CivetWeb's
 * mg_set_*_handler), so it must be a context the program started.
 *
 * With CONNECT_ASYNC false (the default) it waits for the first connection
 * attempt to every URL of BROKER_URL and fails if none succeeds; with
 * CONNECT_ASYNC true it returns at once and connects in the background.
 * Either way, after a successful start the client reconnects by itself.
 *
 * errbuf (may be NULL) receives one sentence on failure, such as
 * "MQTT_KEEPALIVE: 'abc' is not a number of seconds (0-65535)".
 * Returns 0, or MG_MQTT_ERR_CONFIG / _IO (bad option or unreadable file;
 * also BRIDGE_PATH on a CivetWeb built without WebSocket support, which
 * mg_check_feature(16) reports: the bridge needs it),
 * _EXISTS (same prefix already on ctx), _STARTED, _CONNECT / _REFUSED /
 * _TIMEOUT / _TLS (first connection failed; _TLS for a TLS error, an
 * untrusted certificate, or a certificate that does not name the host of
 * the URL, which the log says as "TLS: the broker's certificate does not
 * match host name <host>"), _THREAD, _NOMEM. On failure
 * the client is left created and not started: fix and retry, or stop it.
 * Call once per client, from any thread but not from its handlers. */
MG_MQTT_API int mg_mqtt_start(struct mg_mqtt *c, const struct mg_context *ctx,
                              const char **options, char *errbuf,
                              size_t errlen);

/* Stops and frees the client. Waits up to CONNECTION_TIMEOUT seconds for
 * queued messages to be sent while connected, then sends DISCONNECT (the
 * broker drops the last will), joins both threads after the dispatch thread
 * has run the handlers of every event already queued (the disconnect
 * handler last), and frees everything. Messages not sent by then are
 * reported to on_publish with MG_MQTT_ERR_STOPPED. c may be NULL or a
 * client that was never started. After return, c is invalid.
 * Returns 0, or MG_MQTT_ERR_IN_HANDLER (called from one of c's handlers;
 * nothing is done). Not thread-safe with respect to c: call it once, when
 * no other thread uses c any more. The one exception: threads waiting in
 * mg_mqtt_request() are woken (MG_MQTT_ERR_STOPPED), and stop waits until
 * they have returned. */
MG_MQTT_API int mg_mqtt_stop(struct mg_mqtt *c);

/* The started client of `prefix` (NULL: "MQTT") attached to ctx, or NULL.
 * The usual call from a request handler:
 *     struct mg_mqtt *m = mg_mqtt_get(mg_get_context(conn), NULL);
 * The pointer stays valid until mg_mqtt_stop(). Any thread. */
MG_MQTT_API struct mg_mqtt *mg_mqtt_get(const struct mg_context *ctx,
                                        const char *prefix);

/* The client's prefix, upper-case, as given to mg_mqtt_create(). Valid as
 * long as c. Any thread. */
MG_MQTT_API const char *mg_mqtt_prefix(const struct mg_mqtt *c);

/* ------------------------------------------------------------------------
 * Registering handlers: before mg_mqtt_start() only, from one thread.
 * Each returns 0, MG_MQTT_ERR_INVALID (NULL handler or client),
 * MG_MQTT_ERR_STARTED (after start), or as noted. Registering a second
 * connect/disconnect/publish/subscribe/unsubscribe/log/message handler
 * replaces the first.
 * ---------------------------------------------------------------------- */

/* Calls h for every message whose topic matches `filter` ('+' one level,
 * '#' the rest; "$share/<group>/<filter>" is matched as <filter>). A level
 * may be named, "{room}": it matches like '+' and the handler reads it
 * with mg_mqtt_param(). Several
 * handlers may match one message: each is called, in registration order.
 * Registering only routes messages; subscribe with mg_mqtt_subscribe() or
 * the SUBSCRIBE option. Matching cost does not grow with the number of
 * handlers (a topic tree, not a list).
 * Queue policy: nothing waits on paho's network thread (it serves every
 * client of the process). Messages waiting for the dispatch thread are
 * bounded by QUEUE_SIZE (count) and QUEUE_BYTES (topic + payload + about
 * 100 bytes each). A QoS 0 message that arrives while either bound is
 * reached is dropped, counted ("dropped_queue_full" in the status) and
 * reported by a warning through the log (at most one per second). A QoS 1
 * or 2 message is never dropped (paho has acknowledged it to the broker on
 * arrival): it is kept, and the client pauses: mqtt-io disconnects from
 * the broker (on_disconnect, message "paused: the handlers are behind
 * ..."; the broker keeps no will) and connects again when the handlers
 * have brought the queue under half of both bounds. On a persistent
 * session (CLEAN_SESSION false) the broker keeps what arrives meanwhile,
 * within its own limits; on a clean session what is published to the
 * client's subscriptions while it is paused is not delivered to it. The
 * status counts "flow_pauses" and "paused_ms" and shows "paused" and
 * "queue_bytes". Memory so stays near the bounds plus what was on the
 * wire when the pause began. Connection and acknowledgement events are
 * never dropped.
 * Returns also MG_MQTT_ERR_FILTER for an invalid filter, and
 * MG_MQTT_ERR_PARAM for a named level that is not a whole level
 * ("a{b}/c"), an empty or non-alphanumeric name, or a name used twice. */
MG_MQTT_API int mg_mqtt_on_topic(struct mg_mqtt *c, const char *filter,
                                 mg_mqtt_message_handler h, void *user_data);

/* As mg_mqtt_on_topic(), but h runs inline: on paho's network thread, as
 * the message arrives, before anything is queued. h MUST NOT BLOCK: paho
 * has one receive thread for every client of the process and calls h
 * holding its process-wide lock, so while h runs no client of the process
 * receives, acknowledges or keeps alive. h may call mg_mqtt_publish*() (it
 * only queues) and read the message; it must not call mg_mqtt_request(),
 * mg_mqtt_stop() or anything that waits. The message and its strings are
 * valid only during the call.
 * Cost model. Queued (mg_mqtt_on_topic): per message one event slot from
 * a pool (grown up to QUEUE_SIZE, no allocation once grown) and, when
 * mqtt-dispatch sleeps, one wake-up; the handler then runs on
 * mqtt-dispatch, whose latency it may add to freely. Inline: no slot, no
 * queue, no wake-up, no second thread; a message that only inline handlers
 * want (no queued topic handler registered, no bridge) is freed on paho's
 * thread right after them. A message that inline handlers matched also
 * goes to the queued handlers when there are any (then the catch-all is
 * not called for it), and to the bridge's browsers.
 * Register before mg_mqtt_start(); returns as mg_mqtt_on_topic(). */
MG_MQTT_API int mg_mqtt_on_topic_inline(struct mg_mqtt *c, const char *filter,
                                        mg_mqtt_message_handler h,
                                        void *user_data);

/* The catch-all: called for a message no topic handler matched (Flask-MQTT's
 * on_message rule). */
MG_MQTT_API int mg_mqtt_on_message(struct mg_mqtt *c, mg_mqtt_message_handler h,
                                   void *user_data);

/* Called after every connection attempt, successful or not, including
 * reconnects. Subscriptions are being renewed when it runs. */
MG_MQTT_API int mg_mqtt_on_connect(struct mg_mqtt *c, mg_mqtt_connect_handler h,
                                   void *user_data);

/* Called when an established connection ends: lost, closed by the broker,
 * or stopped by mg_mqtt_stop() (then info->stopped is 1, and it is the last
 * handler to run). */
MG_MQTT_API int mg_mqtt_on_disconnect(struct mg_mqtt *c,
                                      mg_mqtt_disconnect_handler h,
                                      void *user_data);

MG_MQTT_API int mg_mqtt_on_publish(struct mg_mqtt *c, mg_mqtt_publish_handler h,
                                   void *user_data);
MG_MQTT_API int mg_mqtt_on_subscribe(struct mg_mqtt *c, mg_mqtt_ack_handler h,
                                     void *user_data);
MG_MQTT_API int mg_mqtt_on_unsubscribe(struct mg_mqtt *c, mg_mqtt_ack_handler h,
                                       void *user_data);

/* Receives every log line of the client. Lines logged while mg_mqtt_start()
 * runs are delivered on the calling thread before start returns; the rest on
 * the dispatch thread. Lines also go to CivetWeb's error_log_file if the
 * context has one, and to stderr when there is neither a handler nor a
 * file. Once the client's dispatch thread runs, the file and stderr are
 * written by it too, in the order the lines were logged: never on paho's
 * network threads (which serve every client of the process) nor on the
 * thread that published.
 *
 * LOG_LEVEL debug adds one line per packet-level event, at
 * MG_MQTT_LOG_DEBUG: "CONNECT to <uri>: MQTT <version>, clean session|start
 * <flag>, keepalive <s>, client id '<id>'[, user name set][, password set]",
 * "CONNACK: accepted, session present <flag>[; properties: <MQTT 5
 * properties>]", "SUBSCRIBE: id N, k filter(s): '<filter>' qos Q, ...",
 * "SUBACK id N: codes 0x..", "UNSUBSCRIBE ..." / "UNSUBACK ...",
 * "PUBLISH out: id N, topic '<t>', qos Q, B bytes", its "PUBACK id N" /
 * "PUBCOMP id N" / "PUBLISH id N: sent" (QoS 0), "PUBLISH in: topic '<t>',
 * qos Q, B bytes", "DISCONNECT to <uri>". It also forwards paho.mqtt.c's
 * own trace at its protocol level, as lines starting "paho: ". paho's
 * trace is one for the whole process (MQTTClient_setTraceLevel and
 * MQTTClient_setTraceCallback are process-wide): every debug client of the
 * process sees the paho lines of every paho client in it, its own and
 * others'. paho lines are queued by paho's thread and written by the
 * dispatch thread; a line that names a user name, a password or proxy
 * authentication, or holds the password or key passphrase of a running
 * client, is dropped, and payload bytes paho prints are cut off. At most
 * 10000 paho lines wait per client; beyond that they are dropped and
 * counted in a warning.
 *
 * paho's trace level.  The library owns paho's trace callback. It sets
 * paho's trace level to MQTTCLIENT_TRACE_ERROR when a client starts
 * (paho's default, TRACE_MINIMUM, records every function entry and exit
 * and costs paho nearly twice the instructions per message), raises it to
 * MQTTCLIENT_TRACE_PROTOCOL while a debug client runs or while a connect
 * is in progress (paho reports a TLS host name mismatch, and whether the
 * CONNECT went out, only in its trace), and lowers it again after. With
 * MQTT_C_CLIENT_TRACE_LEVEL set in the environment (paho's own switch) the
 * level is left as the environment set it. */
MG_MQTT_API int mg_mqtt_on_log(struct mg_mqtt *c, mg_mqtt_log_handler h,
                               void *user_data);

/* ------------------------------------------------------------------------
 * Operations: any thread, after a successful mg_mqtt_start() (else
 * MG_MQTT_ERR_NOT_STARTED), until mg_mqtt_stop() begins (then
 * MG_MQTT_ERR_STOPPED). None of them waits on the network, except
 * mg_mqtt_request(), which waits for its reply.
 * ---------------------------------------------------------------------- */

/* Subscribes to `filter` at `qos` and remembers it: the subscription is
 * renewed on every reconnect, also when made while disconnected (it is then
 * sent on the next connect). Subscribing again to the same filter updates
 * its QoS; when the bridge's browsers hold the same filter, the broker gets
 * the highest QoS any of them or the application asked for (a lower one
 * from the application never lowers theirs). With SHARED_GROUP set, the broker sees $share/<group>/<filter>.
 * Returns an id > 0 (on_subscribe follows once the broker answers; while
 * disconnected the answer comes after the next connect), or
 * MG_MQTT_ERR_FILTER (also for more levels than MAX_TOPIC_LEVELS, its
 * $share/<group>/ not counted), _PARAM, _QOS, _INVALID, _NOMEM. Named levels
 * ("home/{room}/temperature") are subscribed, listed and unsubscribed as
 * '+'. */
MG_MQTT_API int mg_mqtt_subscribe(struct mg_mqtt *c, const char *filter,
                                  int qos);

/* Forgets and unsubscribes `filter` (as given to subscribe). Returns an id
 * > 0 (on_unsubscribe follows), or MG_MQTT_ERR_NOT_FOUND (not subscribed),
 * _FILTER, _INVALID, _NOMEM. */
MG_MQTT_API int mg_mqtt_unsubscribe(struct mg_mqtt *c, const char *filter);

/* Forgets every subscription and unsubscribes them in one request.
 * Returns an id > 0, 0 when there was nothing to unsubscribe, or
 * MG_MQTT_ERR_NOMEM. */
MG_MQTT_API int mg_mqtt_unsubscribe_all(struct mg_mqtt *c);

/* Queues a message for `topic` (a topic name: no wildcards) and returns.
 * The payload (len bytes; payload may be NULL when len is 0) and topic are
 * copied; the caller keeps ownership. Messages published by one thread are
 * sent in the order published.
 * While disconnected the message is kept and sent after reconnect, up to
 * MAX_BUFFERED messages; QoS 1/2 messages that were in flight when the
 * connection dropped are sent again (at least once). Publish fails with
 * MG_MQTT_ERR_BUFFER_FULL once MAX_INFLIGHT + MAX_BUFFERED messages are
 * unfinished (queued, buffered, or awaiting acknowledgement), and with
 * MG_MQTT_ERR_NOT_CONNECTED while disconnected when MAX_BUFFERED is 0.
 * MG_MQTT_ERR_TOO_LARGE: a topic over 65,535 bytes, a packet over MQTT's
 * 256 MiB, or a packet over the limit in force: the smallest of the
 * MAX_PACKET_SIZE option, the Maximum Packet Size an MQTT 5 broker
 * announced when it accepted the connection, and what a DISCONNECT 0x95
 * ("packet too large") from a broker that announced none taught (one byte
 * under the largest packet then in flight). A message buffered before
 * that and found too large when its turn comes is not sent (the broker
 * would close the connection over it): on_publish gets
 * MG_MQTT_ERR_TOO_LARGE and it counts in publish_failed. With MQTT 3.1.1
 * a broker cannot say; mosquitto's message_size_limit then drops the
 * message and still acknowledges it (with MQTT 5 on_publish gets reason
 * code 0x95), and its max_packet_size closes the connection without a
 * word: set MAX_PACKET_SIZE. A message is never given up because
 * connections die, with one exception: a poison message. When the broker
 * closes the connection right after accepting it (within 3 s, nothing
 * acknowledged on it) with QoS 1/2 messages in flight, the in-flight
 * window halves (down to 1; it grows back by one per window of
 * acknowledgements; "inflight_window" in the status); when it does so
 * twice in a row within 1 s of writing a message that was then the only
 * one in flight (and not yet received by the broker), that message is
 * failed: on_publish gets MG_MQTT_ERR_POISON, it is logged once and never
 * sent again ("poisoned" in the status), and the connection goes on. A
 * QoS 0 message lost with its connection is not sent again (at most
 * once): on_publish gets MG_MQTT_ERR_CONNECTION_LOST. A QoS 1/2 message
 * unacknowledged for 15 s on a connection that stays up makes the client
 * connect again, so that it is sent again ("ack_timeouts" in the status).
 * Returns an id > 0 (on_publish follows), or MG_MQTT_ERR_TOPIC (also for
 * more levels than MAX_TOPIC_LEVELS: brokers close the connection over
 * them, mosquitto beyond 200), _QOS, _TOO_LARGE, _INVALID, _NOMEM,
 * _BUFFER_FULL, _NOT_CONNECTED. */
MG_MQTT_API int mg_mqtt_publish(struct mg_mqtt *c, const char *topic,
                                const void *payload, size_t len, int qos,
                                int retain);

/* mg_mqtt_publish() with MQTT 5 properties (props may be NULL). Everything
 * props points to is copied. Also returns MG_MQTT_ERR_PROTOCOL when a
 * property is set and the client does not speak MQTT 5, and
 * MG_MQTT_ERR_TOPIC for a bad response_topic. */
MG_MQTT_API int mg_mqtt_publish_props(struct mg_mqtt *c, const char *topic,
                                      const void *payload, size_t len, int qos,
                                      int retain,
                                      const struct mg_mqtt_props *props);

/* 1 when connected to a broker, 0 otherwise (also for NULL or a client not
 * started). Any thread. */
MG_MQTT_API int mg_mqtt_is_connected(const struct mg_mqtt *c);

/* The answer to mg_mqtt_request(). */
struct mg_mqtt_reply {
	void *payload;      /* malloc()ed; payload_len bytes and a NUL after them */
	size_t payload_len; /* bytes in payload */
	char *content_type; /* MQTT 5 content type of the reply; NULL: none */
};

/* Request/response over MQTT. Publishes payload to `topic` with a reply
 * topic "<client id>/reply/<correlation id>" and waits, up to timeout_ms,
 * for the one message published to that reply topic. The correlation id
 * is 128 random bits from the kernel, as 32 hex digits (others on the
 * broker cannot guess it and answer first).
 * With MQTT 5 the request carries the response topic and correlation data
 * properties (the correlation data is the correlation id), and its payload
 * is `payload` unchanged. With 3.1.1 (no properties) the payload is a JSON
 * envelope: {"reply_to":"<reply topic>","correlation_id":"<id>",
 * "payload":"<payload as text>"}, or "payload":"<base64>","base64":true
 * when the payload is not UTF-8 text. Either way the responder publishes
 * its answer, as is, to the reply topic.
 * The first call subscribes to "<client id>/reply/+" (QoS 1; kept until
 * stop, renewed on reconnect) and waits for the broker to grant it, within
 * the same timeout. Replies are taken off the network by paho's thread, not
 * queued behind handlers; one that comes after its request timed out is
 * dropped and counted (late_replies in the status and the metrics).
 * Blocks the calling thread (a CivetWeb worker, any thread; from a handler
 * it holds up later handlers). Many threads may wait at once.
 * On success fills *reply (release it with mg_mqtt_reply_free()) and
 * returns 0. Returns MG_MQTT_ERR_TIMEOUT (no reply in time), _STOPPED
 * (stop began), _REFUSED (the broker refused the reply subscription, or
 * the request with a reason code), _POISON (the broker kept closing the
 * connection over the request: see mg_mqtt_publish; returned as soon as
 * that is known, not at the timeout), _TOPIC (a bad topic, or a client id with '+', '#' or a leading '$' that
 * cannot be a reply topic), _INVALID (timeout_ms <= 0, reply NULL), _IO
 * (no random bytes for the correlation id), or what mg_mqtt_publish()
 * returns; *reply is then all NULL/0. */
MG_MQTT_API int mg_mqtt_request(struct mg_mqtt *c, const char *topic,
                                const void *payload, size_t len, int qos,
                                int timeout_ms, struct mg_mqtt_reply *reply);

/* Frees what mg_mqtt_request() put into *reply and zeroes it; NULL is a
 * no-op. */
MG_MQTT_API void mg_mqtt_reply_free(struct mg_mqtt_reply *reply);

/* One remembered subscription. mg_mqtt_subscriptions() and
 * mg_mqtt_status() also work before start and after a failed start (no
 * subscriptions then; "running": false). */
struct mg_mqtt_subscription {
	const char *filter; /* as given to subscribe (without $share/<group>/) */
	int qos;            /* requested QoS (the highest asked for) */
	int granted;        /* QoS granted at the last SUBACK; -1: not yet */
	int app;            /* 1: subscribed through the API or SUBSCRIBE */
	int browsers;       /* bridge clients holding it (0 without the bridge) */
	int internal;       /* 1: held by the library (mg_mqtt_request's reply
	                       filter) */
};

/* The current subscriptions, in the order they were made. *list receives
 * one malloc()ed block (the array and its strings): release it with free().
 * *list is NULL when there are none.
 * Returns the number of entries, or MG_MQTT_ERR_INVALID / _NOMEM. */
MG_MQTT_API int mg_mqtt_subscriptions(struct mg_mqtt *c,
                                      struct mg_mqtt_subscription **list);

/* Writes the client's status as one JSON object into buf (snprintf rules:
 * always NUL-terminated when len > 0, truncated if short). Fields: prefix,
 * client_id, connected, broker, brokers, protocol, transport, tls,
 * subscriptions, counters {published, publish_failed, received,
 * dropped_queue_full, kept_beyond_queue (QoS 1/2 messages that arrived
 * over the bounds, see mg_mqtt_on_topic), handled_inline (messages inline
 * handlers ran for; "received" counts the queued ones), reconnects,
 * connects, flow_pauses, paused_ms, poisoned, paho_renewals (new paho
 * clients: one per poison message on a persistent session), ack_timeouts,
 * requests_replied, requests_timed_out, requests_failed, late_replies},
 * gauges {in_flight, queued, queue_depth, queue_bytes, inflight_window,
 * paused}, with a bridge also "bridge" {path,
 * websocket_clients, sse_clients, authentication}, the bridge_* counters
 * and the bridge_clients and bridge_last_values gauges; and config: every
 * option as the client understood it, passwords and key passphrases as
 * "***". Never contains a secret.
 * Returns the length of the whole JSON text (excluding the NUL), like
 * snprintf, or MG_MQTT_ERR_INVALID / _NOMEM. Any thread. */
MG_MQTT_API int mg_mqtt_status(struct mg_mqtt *c, char *buf, size_t len);

/* ------------------------------------------------------------------------
 * Topics. Pure functions; any thread.
 * ---------------------------------------------------------------------- */

/* 0 when topic is a valid topic name to publish to: 1 to 65535 bytes of
 * UTF-8 without NUL, '+' or '#', control characters (U+0001-U+001F,
 * U+007F-U+009F) or Unicode non-characters (U+FDD0-U+FDEF, U+xFFFE,
 * U+xFFFF: brokers close the connection over them). Else MG_MQTT_ERR_TOPIC
 * (or _INVALID for NULL). A client also refuses topics of more than its
 * MAX_TOPIC_LEVELS levels (mg_mqtt_publish()). */
MG_MQTT_API int mg_mqtt_topic_valid(const char *topic);

/* 0 when filter is a valid topic filter (its text as for
 * mg_mqtt_topic_valid()): '+' only as a whole level, '#'
 * only as the whole last level, "$share/<group>/<filter>" with a non-empty
 * group without wildcards; named levels "{name}" count as '+'. Else
 * MG_MQTT_ERR_FILTER, MG_MQTT_ERR_PARAM (a bad named level) or _INVALID. */
MG_MQTT_API int mg_mqtt_filter_valid(const char *filter);

/* 1 when topic matches filter, 0 when not or when either is invalid.
 * Leading wildcards do not match topics starting with '$' (MQTT 4.7.2);
 * "$share/<group>/f" matches like f; "{name}" like '+'. */
MG_MQTT_API int mg_mqtt_topic_matches(const char *filter, const char *topic);

/* ------------------------------------------------------------------------
 * The bridge's rules in your own request handlers
 * ---------------------------------------------------------------------- */

struct mg_connection; /* CivetWeb's connection (civetweb.h) */

/* For a request handler of your own that publishes what a browser sends
 * (as example/main.c's POST /api/publish/<topic> does): may the request on
 * conn publish to topic under the rules of c's bridge? The same checks, in
 * the same order, as the bridge's own POST <BRIDGE_PATH>/publish/<topic>:
 *   1. an Origin header must be the server's own (scheme://Host) or one
 *      of BRIDGE_ALLOWED_ORIGINS, else 403 (no Origin: allowed);
 *   2. BRIDGE_AUTH_FILE set: the request must carry valid HTTP digest
 *      credentials for it (realm: CivetWeb's authentication_domain; the
 *      digest's uri must be this request's whole target; a nonce's nc must
 *      grow; BRIDGE_NONCE_LIFETIME), else 401 with the digest challenge
 *      (WWW-Authenticate) the browser answers;
 *   3. topic must be a valid topic name (mg_mqtt_topic_valid()), else 400;
 *   4. BRIDGE_PUBLISH_ALLOW must match topic (and topic must not be a
 *      reply topic of mg_mqtt_request()), else 403 (counted in the
 *      bridge_rejected counter).
 * A client without a bridge (no BRIDGE_PATH, or a library built with
 * MG_MQTT_ENABLE_BRIDGE=0) has no rules that let a browser publish: 403.
 * A client that is stopping: 503.
 * Returns 0 when the request may go on; nothing was sent then and the
 * handler reads the body and publishes (mg_mqtt_publish()). Otherwise it
 * has sent the whole refusal (a JSON body {"error":"..."}) and returns its
 * HTTP status: the handler returns that to CivetWeb and does nothing else.
 * It reads no request body. c NULL, conn NULL or topic NULL: 400 is sent
 * when conn is not NULL, and MG_MQTT_ERR_INVALID is returned when it is.
 * From CivetWeb request handlers of c's context (ctx given to
 * mg_mqtt_start()), any worker thread, between mg_mqtt_start() and
 * mg_mqtt_stop(). It does not check the body's Content-Type: a handler
 * that takes bodies from browsers refuses the types a page on another
 * site can send without asking (text/plain, application/x-www-form-
 * urlencoded, multipart/form-data) itself, as example/main.c does. */
MG_MQTT_API int mg_mqtt_bridge_check_publish(struct mg_mqtt *c,
                                             struct mg_connection *conn,
                                             const char *topic);

/* Reads the request body of conn in a CivetWeb request handler: at most
 * max bytes, all of it by a whole-body deadline of CivetWeb's
 * request_timeout_ms plus one second a KiB (1,024 bytes a second at
 * least, of the Content-Length or, when chunked, of what came), so that a
 * client sending a byte at a time cannot hold the worker thread for long
 * (one mg_read() waits as long as each byte comes within
 * request_timeout_ms of the last). A body of known length is asked of
 * CivetWeb whole while a thread of the process ("mqtt-body", started by
 * the first call; asleep while no read is under way) shuts the socket's
 * reading down at the deadline; a chunked body, or one where that thread
 * cannot start, is read in pieces so small that the deadline holds within
 * request_timeout_ms.
 * Returns 0 with *body malloc()ed (the caller frees it) and NUL-
 * terminated, its length in *len (the NUL not counted); or
 * MG_MQTT_ERR_TOO_LARGE (more than max: answer 413), _TIMEOUT (slower than
 * the deadline: 408), _INVALID (the body ended before its Content-Length,
 * its chunks are broken, or an argument is NULL: 400), _NOMEM (500).
 * *body is NULL then. Nothing is sent: the caller answers. Any worker
 * thread, for the request it handles; the bridge reads its bodies with it,
 * and example/main.c its own route's. */
MG_MQTT_API int mg_mqtt_read_body(struct mg_connection *conn, size_t max,
                                  char **body, size_t *len);

/* ------------------------------------------------------------------------
 * Configuration: civetweb.conf and the option split
 * ---------------------------------------------------------------------- */

/* Result of mg_mqtt_config_read(). Every list is name, value, ..., NULL;
 * all strings live until mg_mqtt_config_free(). */
struct mg_mqtt_config {
	const char **options;  /* everything read: the file, then `overrides`;
	                          a name given twice keeps its last value */
	const char **civetweb; /* CivetWeb's own options, spelled as CivetWeb
	                          spells them: pass to mg_start() */
	const char **mqtt;     /* every <PREFIX>_<KEY>: pass to mg_mqtt_start() */
	const char **other;    /* names that are neither */
	const char **prefixes; /* NULL-terminated list of the prefixes found, in
	                          first-seen order, upper-case: one client each */
	void *priv_;           /* storage; do not touch */
};

/* Reads `path` (NULL: no file) in civetweb.conf format: one option a line,
 * name and value split at the first run of blanks, the value running to
 * the end of the line (it may hold blanks and '#'; trailing blanks are cut);
 * blank lines and lines whose first non-blank is '#' are skipped. Then adds
 * `overrides` (name, value, ..., NULL; may be NULL), e.g. the command line.
 * Then splits: a name CivetWeb knows (mg_get_valid_options(), any case) goes
 * to civetweb; a name ending in _<KEY> for a civetweb-mqtt KEY defines the
 * prefix before it; every name starting with a found prefix and '_' goes
 * to mqtt (an unknown key there is reported by mg_mqtt_start()); the rest
 * to other.
 * Returns 0, or MG_MQTT_ERR_IO (cannot read path), MG_MQTT_ERR_CONFIG (a
 * line without a value: "civetweb.conf:7: 'listening_ports' has no value"),
 * MG_MQTT_ERR_NOMEM; errbuf (may be NULL) receives the sentence. On
 * failure *cfg holds nothing to free. Any thread. */
MG_MQTT_API int mg_mqtt_config_read(struct mg_mqtt_config *cfg,
                                    const char *path, const char **overrides,
                                    char *errbuf, size_t errlen);

/* The strict check after mg_mqtt_config_read(): 0 when every name was
 * taken (cfg->other is empty), else MG_MQTT_ERR_CONFIG with a sentence that
 * names the first name neither CivetWeb (mg_get_valid_options()) nor a
 * prefix takes, and the CivetWeb option it is closest to, if any:
 * "unknown option 'listening_port': neither a CivetWeb option nor
 * <PREFIX>_<KEY>; did you mean 'listening_ports'?". Call it before
 * mg_start() unless the program reads names of its own from cfg->other:
 * without it a misspelt CivetWeb option is silently left out. The same
 * split serves a C++ program: its whole option list (CivetServer's) as
 * `overrides`, cfg->civetweb to CivetServer, cfg->mqtt to mg_mqtt_start()
 * (CivetWeb itself refuses an MQTT_* option without naming it).
 * MG_MQTT_ERR_INVALID for cfg NULL or not read. Any thread. */
MG_MQTT_API int mg_mqtt_config_check(const struct mg_mqtt_config *cfg,
                                     char *errbuf, size_t errlen);

/* Frees what mg_mqtt_config_read() allocated; cfg may be zeroed or NULL. */
MG_MQTT_API void mg_mqtt_config_free(struct mg_mqtt_config *cfg);

#ifdef __cplusplus
}
#endif

#endif /* CIVETWEB_MQTT_H */
