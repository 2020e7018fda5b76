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

/* The shared types and cross-part functions, by concern, in this order
 * (scripts/amalgamate.sh inlines them in the same order). */
#include "core.h"
#include "config.h"
#include "client.h"
#include "bridge.h"
