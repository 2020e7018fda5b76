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
 * Locks.  Every mutex of src/, ranked: a thread holding one may take only
 * a lock of a higher rank, and only along an edge listed here ("then"),
 * whose calls are named; a leaf takes nothing while held. paho holds its
 * own locks when it calls us (its callbacks, its trace, its persistence).
 * c->lock is never held across a call into paho (engine.c's contract), and
 * no lock across a call into paho or CivetWeb that can block on the
 * network.
 *
 *  rank  mutex (where)              guards
 *  ----  -------------------------  ---------------------------------------
 *   1    cwm_trace_lock             paho's trace level and callback, the
 *        (trace.c, process)         counts of clients it serves (cwm_tr_*),
 *                                   each client's trace_* fields. Taken by
 *                                   paho's trace callback holding paho's
 *                                   locks; the only paho calls under it are
 *                                   the trace setters (no lock).
 *        then cwm_registry_lock:    cwm_trace_cb() and cwm_trace_watch()
 *                                   -> cwm_registry_all().
 *        then c->lock:              cwm_trace_cb() -> cwm_trace_forward()
 *                                   -> cwm_log_push_trace().
 *   2    cwm_registry_lock          the process registry of started
 *        (client.c, process)        clients (cwm_registry), c->registered.
 *        then c->lock, b->lv_lock:  cwm_registry_each() -> cwm_snap_take()
 *                                   (bridge_metrics.c, GET <path>/metrics);
 *                                   cwm_registry_all() -> cwm_trace_forward()
 *                                   -> cwm_log_push_trace() (c->lock).
 *   3    the bridge lock [B]        per bridge: its clients, their queues
 *        (cwm_anchor.lock)          and filters, the delivery tree, the
 *                                   writers' ready list (struct cwm_bridge,
 *                                   "Under the bridge lock").
 *        then c->lock:              cwm_bridge_subscribe() -> cwm_sub_ref(),
 *                                   cwm_bclient_unsubscribe_all() (from
 *                                   _drop, _remove) -> cwm_sub_unref().
 *        then cwm_logfile_lock:     cwm_bclient_drop() -> cwm_log().
 *   4    c->lock [L]                per client: every field marked [L] in
 *        (struct mg_mqtt)           struct mg_mqtt (queues, state, subs,
 *                                   counters), the events queue.
 *        then c->pstore_lock:       cwm_window_lost() -> cwm_eng_released().
 *        then cwm_logfile_lock:     cwm_log_locked() when the line is
 *                                   written on this thread (mqtt-dispatch
 *                                   not running: start-up, after a stop).
 *   5    c->req_lock (leaf)         per client: the waiting requests
 *                                   (c->reqs and each struct cwm_req),
 *                                   req_seq, req_stopping, req_active.
 *   5    c->pstore_lock (leaf)      per client: paho's session store
 *        (engine.c)                 (c->pstore); taken by paho's
 *                                   persistence callbacks too.
 *   5    b->lv_lock (leaf)          per bridge: the last values (lv,
 *                                   lv_old, lv_new, lv_bytes).
 *   5    b->nonce_lock (leaf)       per bridge: the digest nonces answered
 *                                   (bridge_auth.c).
 *   5    cwm_anchors_lock (leaf)    the anchors, one per context and prefix
 *        (bridge.c, process)        (never freed).
 *   5    cwm_logfile_lock (leaf)    appends to error_log_file (open, write,
 *        (log.c, process)           close), one line at a time.
 *   5    cwm_bw_lock (leaf)         the request bodies watched, the watch
 *        (bridge_guard.c, process)  thread's wake-up and start; that thread
 *                                   shutdown()s a late body's socket under
 *                                   it (no lock).
 *
 * No other edge exists: c->lock is never held when the bridge lock, the
 * trace lock or the registry lock is taken; two clients' locks, or two
 * bridges' locks, are never held together.
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

/* The shared types and cross-part functions, by concern, in this order
 * (scripts/amalgamate.sh inlines them in the same order). */
#include "core.h"
#include "config.h"
#include "client.h"
#include "bridge.h"
