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
 * ("MQTTClient_run"), which inline handlers run on. Calls whose "Thread:"
 * line says "any thread" may be made concurrently from CivetWeb worker
 * threads, from handlers and from your own threads. Handlers may call every
 * "any thread" function, including publish; they must not call
 * mg_mqtt_stop().
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
 *
 * Each function's block has one form: a one-line summary; what the caller
 * must know; then "Returns:" (every value, each with when), "Thread:",
 * "Ownership:", "See also:" (related calls, and the docs/ page with the
 * longer story), and "Example:" where usage is not obvious. Handler types
 * and structs use the labels that apply to them, in the same order.
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

/* Text for an MG_MQTT_ERR_* code.
 *
 * Returns:   the code's text from MG_MQTT_ERRNO_MAP; "success" for 0;
 *            "unknown error" for any other value. Never NULL.
 * Thread:    any thread, at any time.
 * Ownership: the string is static: never free it.
 * See also:  MG_MQTT_ERRNO_MAP above.
 */
MG_MQTT_API const char *mg_mqtt_strerror(int err);

/* ------------------------------------------------------------------------
 * Messages and MQTT 5 properties
 * ---------------------------------------------------------------------- */

/* One MQTT 5 user property. Both strings NUL-terminated UTF-8. */
struct mg_mqtt_user_property {
	const char *name;
	const char *value;
};

/* MQTT 5 publish properties.
 *
 * Zero-initialise and fill what you need; every field's zero value means
 * "absent". With PROTOCOL_VERSION 3.1 / 3.1.1 a received message has all
 * fields absent, and publishing with any field set fails with
 * MG_MQTT_ERR_PROTOCOL.
 *
 * Ownership: mg_mqtt_publish_props() copies everything the struct points
 *            to; in a received message it is valid until the handler
 *            returns.
 * See also:  mg_mqtt_publish_props(), struct mg_mqtt_message.
 */
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

/* A received message, as handed to message handlers.
 *
 * Ownership: everything it points to is valid until the handler returns;
 *            copy what you keep.
 * See also:  mg_mqtt_message_handler, mg_mqtt_param().
 */
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
 * being called.
 *
 * With a handler on "home/{room}/temperature", a message on
 * "home/kitchen/temperature" gives "kitchen" for "room". The value is
 * written into buf with snprintf rules: NUL-terminated when len > 0,
 * truncated if short. Each handler sees the names of its own filter.
 *
 * Returns:   the value's length (without the NUL, also when truncated);
 *            MG_MQTT_ERR_NOT_FOUND: no level of that name in the filter,
 *            or the catch-all handler (mg_mqtt_on_message) is called;
 *            MG_MQTT_ERR_INVALID: msg or name NULL, or buf NULL with
 *            len > 0.
 * Thread:    within the message handler that received msg, only.
 * Ownership: nothing is kept; buf is the caller's.
 * See also:  mg_mqtt_on_topic(), docs/api.md#named-topic-levels.
 * Example:
 *     char room[64];
 *     if (mg_mqtt_param(msg, "room", room, sizeof(room)) >= 0)
 *         printf("%s\n", room);
 */
MG_MQTT_API int mg_mqtt_param(const struct mg_mqtt_message *msg,
                              const char *name, char *buf, size_t len);

/* ------------------------------------------------------------------------
 * Handlers. Except inline topic handlers (mg_mqtt_on_topic_inline) and log
 * lines made during mg_mqtt_start(), all run on the client's dispatch
 * thread ("mqtt-dispatch"), one at a time, in the order their events
 * arrived. A handler that blocks delays later handlers of the same client,
 * never the network: keep-alive and acknowledgements go on, and arriving
 * messages wait in the dispatch queue (QUEUE_SIZE, QUEUE_BYTES; when it is
 * full: mg_mqtt_on_topic, docs/api.md#the-dispatch-queue).
 * ---------------------------------------------------------------------- */

/* A message handler (mg_mqtt_on_topic, _on_topic_inline, _on_message).
 *
 * Called with one received message and the user_data given when it was
 * registered.
 *
 * Returns:   nothing.
 * Thread:    mqtt-dispatch; an inline handler on paho's receive thread
 *            (mg_mqtt_on_topic_inline). May call every "any thread"
 *            function; never mg_mqtt_stop().
 * Ownership: msg and everything it points to are valid until the handler
 *            returns; copy what you keep.
 * See also:  struct mg_mqtt_message, mg_mqtt_param().
 */
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
/* A connect handler: the outcome of one connection attempt.
 *
 * Returns:   nothing.
 * Thread:    mqtt-dispatch.
 * Ownership: info and its strings are valid until the handler returns.
 * See also:  mg_mqtt_on_connect().
 */
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
/* A disconnect handler: the end of an established connection.
 *
 * Returns:   nothing.
 * Thread:    mqtt-dispatch.
 * Ownership: info and its strings are valid until the handler returns.
 * See also:  mg_mqtt_on_disconnect().
 */
typedef void (*mg_mqtt_disconnect_handler)(
    struct mg_mqtt *c, const struct mg_mqtt_disconnect_info *info,
    void *user_data);

/* Acknowledgement of one publish: id as returned by mg_mqtt_publish().
 *
 * Called once for every id > 0 that mg_mqtt_publish*() returned. result:
 *   0: the broker acknowledged it (QoS 1: PUBACK, QoS 2: PUBCOMP) or, for
 *     QoS 0, it was written to the network;
 *   > 0: an MQTT 5 PUBACK / PUBREC reason code: 0x10 "no matching
 *     subscribers" is a success, >= 0x80 a refusal (0x95 packet too large;
 *     0x9A, "retain not supported": a retained message the broker
 *     announced it does not take, not sent);
 *   MG_MQTT_ERR_STOPPED: the client stopped before it could be sent;
 *   MG_MQTT_ERR_CONNECTION_LOST: a QoS 0 message lost with its connection
 *     (not sent again: at most once);
 *   MG_MQTT_ERR_TOO_LARGE: buffered before the limit in force was known,
 *     and over it when its turn came: not sent (mg_mqtt_publish);
 *   MG_MQTT_ERR_POISON: the broker kept closing the connection over it:
 *     not sent again (mg_mqtt_publish);
 *   MG_MQTT_ERR_PAHO: paho refused to send it (logged).
 *
 * Returns:   nothing.
 * Thread:    mqtt-dispatch.
 * Ownership: nothing to free.
 * See also:  mg_mqtt_on_publish(), mg_mqtt_publish(),
 *            docs/reliability.md#outgoing-messages.
 */
typedef void (*mg_mqtt_publish_handler)(struct mg_mqtt *c, int id, int result,
                                        void *user_data);

/* Acknowledgement of a subscribe or unsubscribe: id as returned by the call.
 *
 * codes[i] is the broker's answer for the i-th filter of the request:
 * SUBACK granted QoS 0-2 or a failure code >= 0x80; UNSUBACK MQTT 5 reason
 * code (0 with MQTT 3, which has none). count is the number of filters.
 * result is 0 then. When the request could not be completed, count is 0,
 * codes is NULL and result is a negative MG_MQTT_ERR_*: _STOPPED (the
 * client stopped first), _PAHO (paho refused it; logged), _NOMEM.
 *
 * Returns:   nothing.
 * Thread:    mqtt-dispatch.
 * Ownership: codes is valid until the handler returns.
 * See also:  mg_mqtt_on_subscribe(), mg_mqtt_on_unsubscribe().
 */
typedef void (*mg_mqtt_ack_handler)(struct mg_mqtt *c, int id, int result,
                                    const int *codes, int count,
                                    void *user_data);

enum mg_mqtt_log_level {
	MG_MQTT_LOG_ERROR = 0,
	MG_MQTT_LOG_WARNING = 1,
	MG_MQTT_LOG_INFO = 2,
	MG_MQTT_LOG_DEBUG = 3
};
/* A log handler: one log line of the client.
 *
 * text is one line, no trailing newline, and never holds a password or
 * payload bytes. Lines of a level above the client's LOG_LEVEL option
 * (error, warning, info by default, debug) are not made at all.
 *
 * Returns:   nothing.
 * Thread:    the thread that calls mg_mqtt_start() while it runs, then
 *            mqtt-dispatch (mg_mqtt_on_log).
 * Ownership: text is valid until the handler returns.
 * See also:  mg_mqtt_on_log(), docs/logging.md#log-lines.
 */
typedef void (*mg_mqtt_log_handler)(struct mg_mqtt *c, int level,
                                    const char *text, void *user_data);

/* ------------------------------------------------------------------------
 * Life cycle
 * ---------------------------------------------------------------------- */

/* Creates a client that reads the options named <prefix>_<KEY>.
 *
 * prefix NULL or "" means "MQTT"; prefixes match without regard to case
 * and must be letters, digits and '_'. The client does nothing until
 * mg_mqtt_start().
 *
 * Returns:   the client; NULL when out of memory or the prefix is invalid.
 * Thread:    any thread.
 * Ownership: prefix is copied (upper-case). The caller owns the client:
 *            free it with mg_mqtt_stop(), started or not.
 * See also:  mg_mqtt_start(), mg_mqtt_prefix(),
 *            docs/api.md#writing-a-program.
 */
MG_MQTT_API struct mg_mqtt *mg_mqtt_create(const char *prefix);

/* Reads the client's options, starts its threads and connects.
 *
 * options: name, value, name, value, ..., NULL (the list mg_start() takes,
 * or mg_mqtt_config.mqtt). Option names of other prefixes and CivetWeb's
 * own options are ignored; an unknown <PREFIX>_<KEY> or a bad value is an
 * error.
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
 * On failure the client is left created and not started: fix and retry,
 * or stop it. errbuf (may be NULL) then receives one sentence, such as
 * "MQTT_KEEPALIVE: 'abc' is not a number of seconds (0-65535)".
 *
 * Returns:   0: started;
 *            MG_MQTT_ERR_CONFIG / _IO: a bad option or an unreadable file;
 *              also BRIDGE_PATH on a CivetWeb built without WebSocket
 *              support, which mg_check_feature(16) reports: the bridge
 *              needs it;
 *            MG_MQTT_ERR_EXISTS: a client of the same prefix is on ctx;
 *            MG_MQTT_ERR_STARTED: already started;
 *            MG_MQTT_ERR_CONNECT / _REFUSED / _TIMEOUT / _TLS: the first
 *              connection failed; _TLS for a TLS error, an untrusted
 *              certificate, or a certificate that does not name the host
 *              of the URL (the log says "TLS: the broker's certificate
 *              does not match host name <host>");
 *            MG_MQTT_ERR_INVALID: c NULL, or an option name without a
 *              value (the list ends early);
 *            MG_MQTT_ERR_PAHO: paho cannot create its client;
 *            MG_MQTT_ERR_THREAD, MG_MQTT_ERR_NOMEM.
 * Thread:    any thread but not c's handlers; once per client, after the
 *            handlers are registered.
 * Ownership: options and errbuf are not kept (every value is copied). ctx
 *            stays the caller's; the client keeps the pointer (mg_mqtt_get,
 *            the bridge's routes): mg_stop() it before mg_mqtt_stop().
 * See also:  mg_mqtt_stop(), mg_mqtt_config_read(),
 *            docs/configuration.md#every-option.
 */
MG_MQTT_API int mg_mqtt_start(struct mg_mqtt *c, const struct mg_context *ctx,
                              const char **options, char *errbuf,
                              size_t errlen);

/* Stops and frees the client.
 *
 * Waits up to CONNECTION_TIMEOUT seconds for queued messages to be sent
 * while connected, then sends DISCONNECT (the broker drops the last will),
 * joins both threads after the dispatch thread has run the handlers of
 * every event already queued (the disconnect handler last), and frees
 * everything. Messages not sent by then are reported to on_publish with
 * MG_MQTT_ERR_STOPPED. c may be NULL or a client that was never started.
 * Threads waiting in mg_mqtt_request() are woken (MG_MQTT_ERR_STOPPED),
 * and stop waits until they have returned.
 *
 * Returns:   0 (also for c NULL); MG_MQTT_ERR_IN_HANDLER: called from one
 *            of c's handlers on mqtt-dispatch (nothing is done).
 * Thread:    not thread-safe with respect to c: call it once, when no
 *            other thread uses c any more (stop the CivetWeb context first);
 *            never from c's handlers, queued or inline.
 * Ownership: frees c: after return c is invalid.
 * See also:  mg_mqtt_start(), docs/api.md#stopping-on-a-signal.
 */
MG_MQTT_API int mg_mqtt_stop(struct mg_mqtt *c);

/* The started client of `prefix` (NULL: "MQTT") attached to ctx.
 *
 * Returns:   the client; NULL when none is started on ctx under that
 *            prefix (or ctx is NULL).
 * Thread:    any thread.
 * Ownership: the pointer stays valid until mg_mqtt_stop(); nothing is
 *            kept.
 * See also:  mg_mqtt_start().
 * Example:   the usual call from a request handler:
 *     struct mg_mqtt *m = mg_mqtt_get(mg_get_context(conn), NULL);
 */
MG_MQTT_API struct mg_mqtt *mg_mqtt_get(const struct mg_context *ctx,
                                        const char *prefix);

/* The client's prefix, upper-case, as given to mg_mqtt_create().
 *
 * Returns:   the prefix; NULL for c NULL.
 * Thread:    any thread.
 * Ownership: the string belongs to c: valid as long as c.
 * See also:  mg_mqtt_create().
 */
MG_MQTT_API const char *mg_mqtt_prefix(const struct mg_mqtt *c);

/* ------------------------------------------------------------------------
 * Registering handlers: before mg_mqtt_start() only, from one thread.
 * Each returns 0, MG_MQTT_ERR_INVALID (NULL handler or client),
 * MG_MQTT_ERR_STARTED (after start), or as noted. Registering a second
 * connect/disconnect/publish/subscribe/unsubscribe/log/message handler
 * replaces the first. user_data is handed to the handler as it is and
 * never freed.
 * ---------------------------------------------------------------------- */

/* Calls h for every message whose topic matches `filter`.
 *
 * '+' matches one level, '#' the rest; "$share/<group>/<filter>" is
 * matched as <filter>. A level may be named, "{room}": it matches like '+'
 * and the handler reads it with mg_mqtt_param(). Several handlers may match
 * one message: each is called, in registration order. Registering only
 * routes messages; subscribe with mg_mqtt_subscribe() or the SUBSCRIBE
 * option. Matching cost does not grow with the number of handlers (a topic
 * tree, not a list).
 *
 * When the handlers fall behind: messages waiting for mqtt-dispatch are
 * bounded by QUEUE_SIZE (count) and QUEUE_BYTES (topic + payload + about
 * 100 bytes each). A QoS 0 message that arrives while either bound is
 * reached is dropped, counted ("dropped_queue_full" in the status) and
 * reported by a warning through the log (at most one per second). A QoS 1
 * or 2 message is never dropped: it is kept, and the client pauses: it
 * disconnects from the broker (on_disconnect, message "paused: the
 * handlers are behind ..."; no last will is sent) and connects again when
 * the handlers have brought the queue under half of both bounds. On a
 * persistent session (CLEAN_SESSION false) the broker keeps what arrives
 * meanwhile; on a clean session what is published to the client's
 * subscriptions while it is paused is not delivered to it. Connection and
 * acknowledgement events are never dropped.
 *
 * Returns:   0: registered;
 *            MG_MQTT_ERR_INVALID: c, filter or h NULL;
 *            MG_MQTT_ERR_STARTED: after mg_mqtt_start();
 *            MG_MQTT_ERR_FILTER: an invalid filter;
 *            MG_MQTT_ERR_PARAM: a named level that is not a whole level
 *              ("a{b}/c"), a name that is empty or not letters, digits
 *              and '_', or a name used twice;
 *            MG_MQTT_ERR_NOMEM.
 * Thread:    before mg_mqtt_start(), from one thread. h runs on
 *            mqtt-dispatch.
 * Ownership: filter is copied; user_data is handed to h, never freed.
 * See also:  mg_mqtt_on_topic_inline(), mg_mqtt_on_message(),
 *            mg_mqtt_subscribe(), docs/api.md#the-dispatch-queue (the
 *            queue, the pause, and why).
 * Example:
 *     mg_mqtt_on_topic(c, "home/{room}/temperature", on_temp, NULL);
 *     mg_mqtt_start(c, ctx, options, err, sizeof(err));
 *     mg_mqtt_subscribe(c, "home/{room}/temperature", 1);
 */
MG_MQTT_API int mg_mqtt_on_topic(struct mg_mqtt *c, const char *filter,
                                 mg_mqtt_message_handler h, void *user_data);

/* As mg_mqtt_on_topic(), but h runs inline: on paho's receive thread, as
 * the message arrives, before anything is queued.
 *
 * h MUST NOT BLOCK: paho has one receive thread for every client of the
 * process and calls h holding its process-wide lock, so while h runs no
 * client of the process receives, acknowledges or keeps alive. h may call
 * mg_mqtt_publish*() (it only queues) and read the message; it must not
 * call mg_mqtt_request(), mg_mqtt_stop() or anything that waits. A message
 * that inline handlers matched also goes to the queued topic handlers when
 * there are any (the catch-all is then not called for it), and to the
 * bridge's browsers.
 *
 * Returns:   as mg_mqtt_on_topic().
 * Thread:    register before mg_mqtt_start(), from one thread. h runs on
 *            paho's receive thread ("MQTTClient_run").
 * Ownership: filter is copied; user_data is handed to h, never freed. The
 *            message and its strings are valid only during the call.
 * See also:  mg_mqtt_on_topic(), docs/api.md#inline-handlers (what running
 *            inline saves: the cost model).
 */
MG_MQTT_API int mg_mqtt_on_topic_inline(struct mg_mqtt *c, const char *filter,
                                        mg_mqtt_message_handler h,
                                        void *user_data);

/* Registers the catch-all: h is called for a message no topic handler
 * (queued or inline) matched (Flask-MQTT's on_message rule).
 *
 * Returns:   0; MG_MQTT_ERR_INVALID (c or h NULL); _STARTED (after start).
 * Thread:    before mg_mqtt_start(), from one thread; h on mqtt-dispatch.
 * Ownership: user_data is handed to h, never freed.
 * See also:  mg_mqtt_on_topic().
 */
MG_MQTT_API int mg_mqtt_on_message(struct mg_mqtt *c, mg_mqtt_message_handler h,
                                   void *user_data);

/* Registers h, called after every connection attempt, successful or not,
 * including reconnects.
 *
 * Subscriptions are being renewed when it runs.
 *
 * Returns:   0; MG_MQTT_ERR_INVALID (c or h NULL); _STARTED (after start).
 * Thread:    before mg_mqtt_start(), from one thread; h on mqtt-dispatch.
 * Ownership: user_data is handed to h, never freed.
 * See also:  struct mg_mqtt_connect_info, mg_mqtt_on_disconnect().
 */
MG_MQTT_API int mg_mqtt_on_connect(struct mg_mqtt *c, mg_mqtt_connect_handler h,
                                   void *user_data);

/* Registers h, called when an established connection ends: lost, closed by
 * the broker, paused (mg_mqtt_on_topic), or stopped by mg_mqtt_stop().
 *
 * After mg_mqtt_stop(), info->stopped is 1 and it is the last handler to
 * run.
 *
 * Returns:   0; MG_MQTT_ERR_INVALID (c or h NULL); _STARTED (after start).
 * Thread:    before mg_mqtt_start(), from one thread; h on mqtt-dispatch.
 * Ownership: user_data is handed to h, never freed.
 * See also:  struct mg_mqtt_disconnect_info, mg_mqtt_on_connect().
 */
MG_MQTT_API int mg_mqtt_on_disconnect(struct mg_mqtt *c,
                                      mg_mqtt_disconnect_handler h,
                                      void *user_data);

/* Registers h, called once for every publish id with its outcome.
 *
 * Returns:   0; MG_MQTT_ERR_INVALID (c or h NULL); _STARTED (after start).
 * Thread:    before mg_mqtt_start(), from one thread; h on mqtt-dispatch.
 * Ownership: user_data is handed to h, never freed.
 * See also:  mg_mqtt_publish_handler (every result), mg_mqtt_publish().
 */
MG_MQTT_API int mg_mqtt_on_publish(struct mg_mqtt *c, mg_mqtt_publish_handler h,
                                   void *user_data);
/* Registers h, called once for every subscribe id with the broker's
 * answer.
 *
 * Returns:   0; MG_MQTT_ERR_INVALID (c or h NULL); _STARTED (after start).
 * Thread:    before mg_mqtt_start(), from one thread; h on mqtt-dispatch.
 * Ownership: user_data is handed to h, never freed.
 * See also:  mg_mqtt_ack_handler, mg_mqtt_subscribe().
 */
MG_MQTT_API int mg_mqtt_on_subscribe(struct mg_mqtt *c, mg_mqtt_ack_handler h,
                                     void *user_data);
/* Registers h, called once for every unsubscribe id (mg_mqtt_unsubscribe,
 * _unsubscribe_all) with the broker's answer.
 *
 * Returns:   0; MG_MQTT_ERR_INVALID (c or h NULL); _STARTED (after start).
 * Thread:    before mg_mqtt_start(), from one thread; h on mqtt-dispatch.
 * Ownership: user_data is handed to h, never freed.
 * See also:  mg_mqtt_ack_handler, mg_mqtt_unsubscribe().
 */
MG_MQTT_API int mg_mqtt_on_unsubscribe(struct mg_mqtt *c, mg_mqtt_ack_handler h,
                                       void *user_data);

/* Registers h, which receives every log line of the client.
 *
 * Lines also go to CivetWeb's error_log_file if the context has one, and
 * to stderr when there is neither a handler nor a file. Lines logged while
 * mg_mqtt_start() runs are delivered on the calling thread before start
 * returns; the rest on the dispatch thread. Once the client's dispatch
 * thread runs, the file and stderr are written by it too, in the order the
 * lines were logged: never on paho's network threads (which serve every
 * client of the process) nor on the thread that published.
 *
 * LOG_LEVEL debug adds, at MG_MQTT_LOG_DEBUG, one line per packet-level
 * event (CONNECT, CONNACK, SUBSCRIBE / SUBACK, UNSUBSCRIBE / UNSUBACK,
 * PUBLISH out and its PUBACK / PUBCOMP / "sent", PUBLISH in, DISCONNECT:
 * their formats in docs/logging.md#debug-lines), and paho.mqtt.c's own
 * trace at its protocol level as lines starting "paho: ". paho's trace is
 * one for the whole process: every debug client of the process sees the
 * paho lines of every paho client in it, its own and others'. A paho line
 * that names a user name, a password or proxy authentication, or holds the
 * password or key passphrase of a running client, is dropped, and payload
 * bytes paho prints are cut off. At most 10000 paho lines wait per client;
 * beyond that they are dropped and counted in a warning. The library owns
 * paho's trace callback and sets paho's trace level, unless
 * MQTT_C_CLIENT_TRACE_LEVEL is set in the environment (paho's own switch).
 *
 * Returns:   0; MG_MQTT_ERR_INVALID: c or h NULL; MG_MQTT_ERR_STARTED:
 *            after mg_mqtt_start().
 * Thread:    before mg_mqtt_start(), from one thread. h runs on the thread
 *            of mg_mqtt_start() while it runs, then on mqtt-dispatch.
 * Ownership: user_data is handed to h, never freed.
 * See also:  mg_mqtt_log_handler, docs/logging.md#log-lines,
 *            docs/logging.md#pahos-trace (the trace level and its cost).
 */
MG_MQTT_API int mg_mqtt_on_log(struct mg_mqtt *c, mg_mqtt_log_handler h,
                               void *user_data);

/* ------------------------------------------------------------------------
 * Operations: any thread, after a successful mg_mqtt_start() (else
 * MG_MQTT_ERR_NOT_STARTED), until mg_mqtt_stop() begins (then
 * MG_MQTT_ERR_STOPPED). None of them waits on the network, except
 * mg_mqtt_request(), which waits for its reply.
 * ---------------------------------------------------------------------- */

/* Subscribes to `filter` at `qos` and remembers it.
 *
 * The subscription is renewed on every reconnect, also when made while
 * disconnected (it is then sent on the next connect). Subscribing again to
 * the same filter updates its QoS; when the bridge's browsers hold the same
 * filter, the broker gets the highest QoS any of them or the application
 * asked for (a lower one from the application never lowers theirs). With
 * SHARED_GROUP set, the broker sees $share/<group>/<filter>. Named levels
 * ("home/{room}/temperature") are subscribed, listed and unsubscribed as
 * '+'.
 *
 * Returns:   an id > 0: queued; on_subscribe follows once the broker
 *              answers (while disconnected, after the next connect);
 *            MG_MQTT_ERR_FILTER: an invalid filter, or more levels than
 *              MAX_TOPIC_LEVELS (its $share/<group>/ not counted);
 *            MG_MQTT_ERR_PARAM: a bad named level (mg_mqtt_on_topic);
 *            MG_MQTT_ERR_QOS: qos not 0, 1 or 2;
 *            MG_MQTT_ERR_INVALID: c or filter NULL;
 *            MG_MQTT_ERR_NOT_STARTED / _STOPPED: see Operations above;
 *            MG_MQTT_ERR_NOMEM.
 * Thread:    any thread, handlers included.
 * Ownership: filter is copied; nothing else is kept.
 * See also:  mg_mqtt_unsubscribe(), mg_mqtt_subscriptions(),
 *            mg_mqtt_on_subscribe().
 */
MG_MQTT_API int mg_mqtt_subscribe(struct mg_mqtt *c, const char *filter,
                                  int qos);

/* Forgets and unsubscribes `filter` (as given to subscribe).
 *
 * When the bridge's browsers still hold the filter, the broker keeps it
 * and only the application's hold ends; on_unsubscribe still follows.
 *
 * Returns:   an id > 0: queued; on_unsubscribe follows;
 *            MG_MQTT_ERR_NOT_FOUND: the application is not subscribed to
 *              it;
 *            MG_MQTT_ERR_FILTER / _PARAM: an invalid filter (as for
 *              mg_mqtt_subscribe());
 *            MG_MQTT_ERR_INVALID: c or filter NULL;
 *            MG_MQTT_ERR_NOT_STARTED / _STOPPED: see Operations above;
 *            MG_MQTT_ERR_NOMEM.
 * Thread:    any thread, handlers included.
 * Ownership: nothing is kept.
 * See also:  mg_mqtt_subscribe(), mg_mqtt_unsubscribe_all().
 */
MG_MQTT_API int mg_mqtt_unsubscribe(struct mg_mqtt *c, const char *filter);

/* Forgets every subscription and unsubscribes them in one request.
 *
 * Returns:   an id > 0: queued; on_unsubscribe follows;
 *            0: there was nothing to unsubscribe (no handler runs);
 *            MG_MQTT_ERR_INVALID: c NULL;
 *            MG_MQTT_ERR_NOT_STARTED / _STOPPED: see Operations above;
 *            MG_MQTT_ERR_NOMEM.
 * Thread:    any thread, handlers included.
 * Ownership: nothing is kept.
 * See also:  mg_mqtt_unsubscribe().
 */
MG_MQTT_API int mg_mqtt_unsubscribe_all(struct mg_mqtt *c);

/* Queues a message for `topic` (a topic name: no wildcards) and returns.
 *
 * Messages published by one thread are sent in the order published. While
 * disconnected the message is kept and sent after reconnect, up to
 * MAX_BUFFERED messages; QoS 1/2 messages that were in flight when the
 * connection dropped are sent again (at least once). A QoS 0 message lost
 * with its connection is not sent again (at most once): on_publish gets
 * MG_MQTT_ERR_CONNECTION_LOST. A QoS 1/2 message unacknowledged for 15 s
 * on a connection that stays up makes the client connect again, so that
 * it is sent again ("ack_timeouts" in the status).
 *
 * Size: the packet must fit the limit in force, the smallest of the
 * MAX_PACKET_SIZE option, the Maximum Packet Size an MQTT 5 broker
 * announced, and what a DISCONNECT 0x95 ("packet too large") taught. A
 * message buffered before the limit was known and over it when its turn
 * comes is not sent: on_publish gets MG_MQTT_ERR_TOO_LARGE ("publish_failed"
 * in the status). With MQTT 3.1.1 a broker cannot announce its limit: set
 * MAX_PACKET_SIZE.
 *
 * A message is never given up because connections die, with one
 * exception, a poison message: one the broker closed the connection over
 * twice in a row, right after it was written alone in flight. It is
 * failed: on_publish gets MG_MQTT_ERR_POISON, it is logged once and never
 * sent again ("poisoned" in the status), and the connection goes on. Each
 * such close first halves the in-flight window ("inflight_window").
 *
 * Returns:   an id > 0: queued; on_publish follows with this id;
 *            MG_MQTT_ERR_TOPIC: not a valid topic name
 *              (mg_mqtt_topic_valid), or more levels than
 *              MAX_TOPIC_LEVELS;
 *            MG_MQTT_ERR_QOS: qos not 0, 1 or 2;
 *            MG_MQTT_ERR_TOO_LARGE: a topic over 65,535 bytes, a packet
 *              over MQTT's 256 MiB, or a packet over the limit in force
 *              (Size, above);
 *            MG_MQTT_ERR_INVALID: c or topic NULL, or payload NULL with
 *              len > 0;
 *            MG_MQTT_ERR_BUFFER_FULL: MAX_INFLIGHT + MAX_BUFFERED messages
 *              are unfinished (queued, buffered, or awaiting
 *              acknowledgement);
 *            MG_MQTT_ERR_NOT_CONNECTED: disconnected and MAX_BUFFERED is 0;
 *            MG_MQTT_ERR_IO: PERSISTENCE_DIR is set and a QoS 1/2 message
 *              cannot be written there (logged);
 *            MG_MQTT_ERR_NOT_STARTED / _STOPPED: see Operations above;
 *            MG_MQTT_ERR_NOMEM.
 * Thread:    any thread, handlers included (inline ones too).
 * Ownership: topic and payload (len bytes; payload may be NULL when len is
 *            0) are copied; the caller keeps ownership.
 * See also:  mg_mqtt_publish_props(), mg_mqtt_publish_handler,
 *            docs/api.md#what-a-publish-does,
 *            docs/reliability.md#outgoing-messages,
 *            docs/reliability.md#message-size-and-poison-messages (the
 *            exact size and poison rules, and what brokers do).
 */
MG_MQTT_API int mg_mqtt_publish(struct mg_mqtt *c, const char *topic,
                                const void *payload, size_t len, int qos,
                                int retain);

/* mg_mqtt_publish() with MQTT 5 properties (props may be NULL).
 *
 * Returns:   what mg_mqtt_publish() returns, and also
 *            MG_MQTT_ERR_PROTOCOL: a property is set and the client does
 *              not speak MQTT 5;
 *            MG_MQTT_ERR_TOPIC: a bad response_topic;
 *            MG_MQTT_ERR_TOO_LARGE: a property string or the correlation
 *              data over 65,535 bytes;
 *            MG_MQTT_ERR_INVALID: a user property with a NULL or non-UTF-8
 *              name or value, user_count > 0 with user NULL,
 *              correlation_len > 0 with correlation_data NULL, or a
 *              non-UTF-8 content_type.
 * Thread:    any thread, handlers included (inline ones too).
 * Ownership: everything props points to is copied, as topic and payload.
 * See also:  struct mg_mqtt_props, mg_mqtt_publish().
 */
MG_MQTT_API int mg_mqtt_publish_props(struct mg_mqtt *c, const char *topic,
                                      const void *payload, size_t len, int qos,
                                      int retain,
                                      const struct mg_mqtt_props *props);

/* Whether the client is connected to a broker.
 *
 * Returns:   1 when connected; 0 otherwise (also for c NULL or a client
 *            not started).
 * Thread:    any thread.
 * Ownership: nothing is kept.
 * See also:  mg_mqtt_on_connect(), mg_mqtt_status().
 */
MG_MQTT_API int mg_mqtt_is_connected(const struct mg_mqtt *c);

/* The answer to mg_mqtt_request().
 *
 * Ownership: the caller's after a successful mg_mqtt_request(): release it
 *            with mg_mqtt_reply_free().
 */
struct mg_mqtt_reply {
	void *payload;      /* malloc()ed; payload_len bytes and a NUL after them */
	size_t payload_len; /* bytes in payload */
	char *content_type; /* MQTT 5 content type of the reply; NULL: none */
};

/* Request/response over MQTT: publishes payload to `topic` with a reply
 * topic and waits, up to timeout_ms, for the one message published to it.
 *
 * The reply topic is "<client id>/reply/<correlation id>"; the correlation
 * id is 128 random bits from the kernel, as 32 hex digits (others on the
 * broker cannot guess it and answer first). With MQTT 5 the request
 * carries the response topic and correlation data properties (the
 * correlation data is the correlation id), and its payload is `payload`
 * unchanged. With 3.1.1 (no properties) the payload is a JSON envelope:
 * {"reply_to":"<reply topic>","correlation_id":"<id>",
 * "payload":"<payload as text>"}, or "payload":"<base64>","base64":true
 * when the payload is not UTF-8 text. Either way the responder publishes
 * its answer, as is, to the reply topic.
 *
 * The first call subscribes to "<client id>/reply/+" (QoS 1; kept until
 * stop, renewed on reconnect) and waits for the broker to grant it, within
 * the same timeout. Replies are taken off the network by paho's thread, not
 * queued behind handlers; one that comes after its request timed out is
 * dropped and counted (late_replies in the status and the metrics). Many
 * threads may wait at once.
 *
 * Returns:   0: *reply is filled;
 *            MG_MQTT_ERR_TIMEOUT: no reply in time;
 *            MG_MQTT_ERR_STOPPED: stop began;
 *            MG_MQTT_ERR_REFUSED: the broker refused the reply
 *              subscription, or the request with a reason code;
 *            MG_MQTT_ERR_POISON: the broker kept closing the connection
 *              over the request (mg_mqtt_publish); returned as soon as
 *              that is known, not at the timeout;
 *            MG_MQTT_ERR_TOPIC: a bad topic, or a client id with '+', '#'
 *              or a leading '$' that cannot be a reply topic;
 *            MG_MQTT_ERR_INVALID: timeout_ms <= 0, reply NULL;
 *            MG_MQTT_ERR_IO: no random bytes for the correlation id;
 *            or what mg_mqtt_publish() returns, or a negative result its
 *              on_publish would get (mg_mqtt_publish_handler).
 *            On every error *reply is all NULL/0.
 * Thread:    any thread (a CivetWeb worker, your own); it blocks the
 *            caller, so from a handler it holds up later handlers; never
 *            from an inline handler.
 * Ownership: topic and payload are copied. On success the caller owns
 *            *reply: release it with mg_mqtt_reply_free().
 * See also:  mg_mqtt_reply_free(),
 *            docs/bridge.md#requestresponse-an-http-call-answered-over-mqtt.
 * Example:
 *     struct mg_mqtt_reply r;
 *     if (mg_mqtt_request(c, "svc/time", "now", 3, 1, 2000, &r) == 0) {
 *         printf("%.*s\n", (int)r.payload_len, (char *)r.payload);
 *         mg_mqtt_reply_free(&r);
 *     }
 */
MG_MQTT_API int mg_mqtt_request(struct mg_mqtt *c, const char *topic,
                                const void *payload, size_t len, int qos,
                                int timeout_ms, struct mg_mqtt_reply *reply);

/* Frees what mg_mqtt_request() put into *reply and zeroes it.
 *
 * Returns:   nothing. reply NULL is a no-op.
 * Thread:    any thread.
 * Ownership: frees reply->payload and reply->content_type, not reply.
 * See also:  mg_mqtt_request().
 */
MG_MQTT_API void mg_mqtt_reply_free(struct mg_mqtt_reply *reply);

/* One remembered subscription.
 *
 * mg_mqtt_subscriptions() and mg_mqtt_status() also work before start and
 * after a failed start (no subscriptions then; "running": false).
 */
struct mg_mqtt_subscription {
	const char *filter; /* as given to subscribe (without $share/<group>/) */
	int qos;            /* requested QoS (the highest asked for) */
	int granted;        /* QoS granted at the last SUBACK; -1: not yet */
	int app;            /* 1: subscribed through the API or SUBSCRIBE */
	int browsers;       /* bridge clients holding it (0 without the bridge) */
	int internal;       /* 1: held by the library (mg_mqtt_request's reply
	                       filter) */
};

/* The current subscriptions, in the order they were made.
 *
 * Returns:   the number of entries (0: none, *list NULL);
 *            MG_MQTT_ERR_INVALID: c or list NULL;
 *            MG_MQTT_ERR_NOMEM.
 * Thread:    any thread; also before start and after a failed start.
 * Ownership: *list receives one malloc()ed block (the array and its
 *            strings): the caller releases it with free().
 * See also:  mg_mqtt_subscribe(), mg_mqtt_status().
 */
MG_MQTT_API int mg_mqtt_subscriptions(struct mg_mqtt *c,
                                      struct mg_mqtt_subscription **list);

/* Writes the client's status as one JSON object into buf.
 *
 * snprintf rules: always NUL-terminated when len > 0, truncated if short.
 * Fields: prefix, client_id, running, connected, broker, brokers, protocol,
 * transport, tls, subscriptions, counters {published, publish_failed,
 * received, dropped_queue_full, kept_beyond_queue (QoS 1/2 messages that
 * arrived over the bounds, see mg_mqtt_on_topic), handled_inline (messages
 * inline handlers ran for; "received" counts the queued ones), reconnects,
 * connects, flow_pauses, paused_ms, poisoned, paho_renewals (new paho
 * clients: one per poison message on a persistent session), ack_timeouts,
 * requests_replied, requests_timed_out, requests_failed, late_replies},
 * gauges {in_flight, queued, queue_depth, queue_bytes, inflight_window,
 * paused}, with a bridge also "bridge" {path, websocket_clients,
 * sse_clients, authentication}, the bridge_* counters and the
 * bridge_clients and bridge_last_values gauges; and config: every option
 * as the client understood it, passwords and key passphrases as "***".
 * Never contains a secret.
 *
 * Returns:   the length of the whole JSON text (excluding the NUL), like
 *            snprintf: a result >= len means it was truncated;
 *            MG_MQTT_ERR_INVALID: c NULL;
 *            MG_MQTT_ERR_NOMEM.
 * Thread:    any thread; also before start and after a failed start.
 * Ownership: nothing is kept; buf is the caller's.
 * See also:  mg_mqtt_subscriptions(),
 *            docs/logging.md#status-and-the-configuration-as-understood.
 */
MG_MQTT_API int mg_mqtt_status(struct mg_mqtt *c, char *buf, size_t len);

/* ------------------------------------------------------------------------
 * Topics. Pure functions; any thread.
 * ---------------------------------------------------------------------- */

/* Checks that topic is a valid topic name to publish to.
 *
 * Valid: 1 to 65535 bytes of UTF-8 without NUL, '+' or '#', control
 * characters (U+0001-U+001F, U+007F-U+009F) or Unicode non-characters
 * (U+FDD0-U+FDEF, U+xFFFE, U+xFFFF). A client also refuses topics of more
 * than its MAX_TOPIC_LEVELS levels (mg_mqtt_publish()).
 *
 * Returns:   0: valid; MG_MQTT_ERR_TOPIC: not valid; MG_MQTT_ERR_INVALID:
 *            topic NULL.
 * Thread:    any thread, at any time.
 * Ownership: nothing is kept.
 * See also:  mg_mqtt_filter_valid(),
 *            docs/reliability.md#message-size-and-poison-messages (what
 *            brokers do with such topics).
 */
MG_MQTT_API int mg_mqtt_topic_valid(const char *topic);

/* Checks that filter is a valid topic filter.
 *
 * Its text as for mg_mqtt_topic_valid(), '+' only as a whole level, '#'
 * only as the whole last level, "$share/<group>/<filter>" with a non-empty
 * group without wildcards; named levels "{name}" count as '+'.
 *
 * Returns:   0: valid; MG_MQTT_ERR_FILTER: not valid; MG_MQTT_ERR_PARAM: a
 *            bad named level (mg_mqtt_on_topic); MG_MQTT_ERR_INVALID:
 *            filter NULL; MG_MQTT_ERR_NOMEM (a filter with named levels is
 *            copied to be checked).
 * Thread:    any thread, at any time.
 * Ownership: nothing is kept.
 * See also:  mg_mqtt_topic_matches(), docs/api.md#named-topic-levels.
 */
MG_MQTT_API int mg_mqtt_filter_valid(const char *filter);

/* Whether topic matches filter.
 *
 * Leading wildcards do not match topics starting with '$' (MQTT 4.7.2);
 * "$share/<group>/f" matches like f; "{name}" like '+'.
 *
 * Returns:   1: it matches; 0: it does not, or either is invalid or NULL.
 * Thread:    any thread, at any time.
 * Ownership: nothing is kept.
 * See also:  mg_mqtt_filter_valid().
 */
MG_MQTT_API int mg_mqtt_topic_matches(const char *filter, const char *topic);

/* ------------------------------------------------------------------------
 * The bridge's rules in your own request handlers
 * ---------------------------------------------------------------------- */

struct mg_connection; /* CivetWeb's connection (civetweb.h) */

/* May the request on conn publish to topic under the rules of c's bridge?
 *
 * For a request handler of your own that publishes what a browser sends
 * (as example/main.c's POST /api/publish/<topic> does). The same checks, in
 * the same order, as the bridge's own POST <BRIDGE_PATH>/publish/<topic>:
 *   0. a Host header must name localhost, an IP address or one of
 *      BRIDGE_ALLOWED_HOSTS, else 403 (no Host: allowed);
 *   1. an Origin header must be the server's own (scheme://Host) or one
 *      of BRIDGE_ALLOWED_ORIGINS, else 403 (no Origin: allowed);
 *   2. BRIDGE_AUTH_FILE set: the request must carry valid HTTP digest
 *      credentials for it (realm: CivetWeb's authentication_domain; the
 *      digest's uri must be this request's whole target; a nonce's nc must
 *      grow; BRIDGE_NONCE_LIFETIME), else 401 with the digest challenge
 *      (WWW-Authenticate) the browser answers;
 *   3. topic must be a valid topic name (mg_mqtt_topic_valid()) of at
 *      most MAX_TOPIC_LEVELS levels, else 400;
 *   4. BRIDGE_PUBLISH_ALLOW must match topic (and topic must not be a
 *      reply topic of mg_mqtt_request()), else 403 (counted in the
 *      bridge_rejected counter).
 * A client without a bridge (no BRIDGE_PATH, or a library built with
 * MG_MQTT_ENABLE_BRIDGE=0) has no rules that let a browser publish: 403.
 * A client that is stopping: 503. It reads no request body, and it does
 * not check the body's Content-Type: a handler that takes bodies from
 * browsers refuses the types a page on another site can send without
 * asking (text/plain, application/x-www-form-urlencoded,
 * multipart/form-data) itself, as example/main.c does.
 *
 * Returns:   0: the request may go on; nothing was sent, and the handler
 *              reads the body (mg_mqtt_read_body()) and publishes
 *              (mg_mqtt_publish());
 *            an HTTP status (400, 401, 403, 503): the whole refusal (a
 *              JSON body {"error":"..."}) was sent; the handler returns
 *              that status to CivetWeb and does nothing else. c NULL or
 *              topic NULL: 400 is sent;
 *            MG_MQTT_ERR_INVALID: conn NULL (nothing sent).
 * Thread:    CivetWeb request handlers of c's context (ctx given to
 *            mg_mqtt_start()), any worker thread, between mg_mqtt_start()
 *            and mg_mqtt_stop().
 * Ownership: nothing is kept.
 * See also:  mg_mqtt_read_body(), docs/security.md, docs/bridge.md#routes.
 * Example:
 *     int st = mg_mqtt_bridge_check_publish(m, conn, topic);
 *     if (st != 0)
 *         return st; // refused: the answer is sent
 */
MG_MQTT_API int mg_mqtt_bridge_check_publish(struct mg_mqtt *c,
                                             struct mg_connection *conn,
                                             const char *topic);

/* Reads the request body of conn in a CivetWeb request handler, at most
 * max bytes, by a whole-body deadline.
 *
 * The deadline is CivetWeb's request_timeout_ms plus one second a KiB
 * (1,024 bytes a second at least, of the Content-Length or, when chunked,
 * of what came), so that a client sending a byte at a time cannot hold the
 * worker thread for long (one mg_read() waits as long as each byte comes
 * within request_timeout_ms of the last). The first call starts one thread
 * for the process ("mqtt-body", asleep while no read is under way) that
 * enforces the deadline.
 *
 * Returns:   0: *body holds the body, NUL-terminated, and *len its length
 *              (the NUL not counted);
 *            MG_MQTT_ERR_TOO_LARGE: more than max bytes (answer 413);
 *            MG_MQTT_ERR_TIMEOUT: slower than the deadline (408);
 *            MG_MQTT_ERR_INVALID: the body ended before its
 *              Content-Length, its chunks are broken, or an argument is
 *              NULL (400);
 *            MG_MQTT_ERR_NOMEM (500).
 *            On error *body is NULL and *len 0. Nothing is sent: the caller
 *            answers.
 * Thread:    any CivetWeb worker thread, for the request it handles; the
 *            bridge reads its bodies with it, and example/main.c its own
 *            route's.
 * Ownership: *body is malloc()ed: the caller frees it.
 * See also:  mg_mqtt_bridge_check_publish(),
 *            docs/security.md#what-the-bridge-protects-and-how (slow
 *            clients, and how the deadline is held).
 */
MG_MQTT_API int mg_mqtt_read_body(struct mg_connection *conn, size_t max,
                                  char **body, size_t *len);

/* ------------------------------------------------------------------------
 * Configuration: civetweb.conf and the option split
 * ---------------------------------------------------------------------- */

/* Result of mg_mqtt_config_read(). Every list is name, value, ..., NULL.
 *
 * Ownership: all strings live until mg_mqtt_config_free().
 */
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

/* Reads `path` in civetweb.conf format, adds `overrides`, and splits the
 * options between CivetWeb and the clients.
 *
 * path NULL: no file. The format: one option a line, name and value split
 * at the first run of blanks, the value running to the end of the line (it
 * may hold blanks and '#'; trailing blanks are cut); blank lines and lines
 * whose first non-blank is '#' are skipped. Then `overrides` (name, value,
 * ..., NULL; may be NULL), e.g. the command line, are added. Then the
 * split: a name CivetWeb knows (mg_get_valid_options(), any case) goes to
 * civetweb; a name ending in _<KEY> for a civetweb-mqtt KEY defines the
 * prefix before it; every name starting with a found prefix and '_' goes
 * to mqtt (an unknown key there is reported by mg_mqtt_start()); the rest
 * to other.
 *
 * Returns:   0: *cfg is filled;
 *            MG_MQTT_ERR_IO: cannot read path;
 *            MG_MQTT_ERR_CONFIG: a line or override without a value
 *              ("civetweb.conf:7: 'listening_ports' has no value");
 *            MG_MQTT_ERR_INVALID: cfg NULL;
 *            MG_MQTT_ERR_NOMEM.
 *            errbuf (may be NULL) receives the sentence. On failure *cfg
 *            holds nothing to free.
 * Thread:    any thread.
 * Ownership: path, overrides and errbuf are not kept (copied); what *cfg
 *            holds is released with mg_mqtt_config_free().
 * See also:  mg_mqtt_config_check(),
 *            docs/configuration.md#the-configuration-file.
 * Example:
 *     struct mg_mqtt_config cfg;
 *     char err[256];
 *     if (mg_mqtt_config_read(&cfg, "civetweb.conf", NULL, err,
 *                             sizeof(err)) != 0 ||
 *         mg_mqtt_config_check(&cfg, err, sizeof(err)) != 0)
 *         fprintf(stderr, "%s\n", err); // then mg_start() with cfg.civetweb
 */
MG_MQTT_API int mg_mqtt_config_read(struct mg_mqtt_config *cfg,
                                    const char *path, const char **overrides,
                                    char *errbuf, size_t errlen);

/* The strict check after mg_mqtt_config_read(): every name was taken.
 *
 * Call it before mg_start() unless the program reads names of its own from
 * cfg->other: without it a misspelt CivetWeb option is silently left out.
 * The same split serves a C++ program: its whole option list
 * (CivetServer's) as `overrides`, cfg->civetweb to CivetServer, cfg->mqtt
 * to mg_mqtt_start() (CivetWeb itself refuses an MQTT_* option without
 * naming it).
 *
 * Returns:   0: cfg->other is empty;
 *            MG_MQTT_ERR_CONFIG: errbuf (may be NULL) names the first name
 *              neither CivetWeb (mg_get_valid_options()) nor a prefix
 *              takes, and the CivetWeb option it is closest to, if any:
 *              "unknown option 'listening_port': neither a CivetWeb option
 *              nor <PREFIX>_<KEY>; did you mean 'listening_ports'?";
 *            MG_MQTT_ERR_INVALID: cfg NULL or not read.
 * Thread:    any thread.
 * Ownership: nothing is kept.
 * See also:  mg_mqtt_config_read(), docs/configuration.md#wrong-options,
 *            docs/cpp.md#start-up-one-option-list-split.
 */
MG_MQTT_API int mg_mqtt_config_check(const struct mg_mqtt_config *cfg,
                                     char *errbuf, size_t errlen);

/* Frees what mg_mqtt_config_read() allocated and zeroes *cfg.
 *
 * Returns:   nothing. cfg may be zeroed or NULL.
 * Thread:    any thread.
 * Ownership: frees every string of *cfg, not cfg itself.
 * See also:  mg_mqtt_config_read().
 */
MG_MQTT_API void mg_mqtt_config_free(struct mg_mqtt_config *cfg);

#ifdef __cplusplus
}
#endif

#endif /* CIVETWEB_MQTT_H */
