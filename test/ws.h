/*
 * WebSocket clients for the bridge's tests: CivetWeb's own client (struct
 * wsc: frames collected by its thread), and frames by hand over a raw TCP
 * connection (struct th_raw of util.h) for what a browser never sends.
 */
#ifndef CWM_TEST_WS_H
#define CWM_TEST_WS_H

#include "util.h"

#include <civetweb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

struct wsc {
	struct mg_connection *conn;
	pthread_mutex_t mu;
	char **f; /* text frames received, in order */
	int n, cap;
	int close_code; /* from a close frame; 0: none */
	atomic_int closed;
};

/* Opens ws://127.0.0.1:port/mqtt/ws; 0 when the upgrade succeeded. */
int wsc_open(struct wsc *w, int port);
/* Sends a text frame; fails the test when it cannot. */
void wsc_send(struct wsc *w, const char *text);
/* A close frame first (the server then closes at once), then closes and
 * frees what was received. */
void wsc_close(struct wsc *w);
/* Frames received so far; those containing needle. */
int wsc_nframes(struct wsc *w);
int wsc_count(struct wsc *w, const char *needle);

/* Reads a response head from r: returns the status (0: none within 10 s);
 * the head, NUL-terminated, into head when not NULL. */
int th_raw_head(struct th_raw *r, char *head, size_t cap);
/* GET /mqtt/ws with an upgrade by hand; extra: header lines, each ending
 * "\r\n" (may be NULL). Returns the status, the head as th_raw_head. */
int th_ws_upgrade(struct th_raw *r, int port, const char *extra, char *head,
                  size_t cap);
/* A raw connection to port (rcvbuf as th_raw_connect's) upgraded to
 * /mqtt/ws (101, or the test fails). Close it with th_raw_close. */
struct th_raw *th_ws_connect(int port, int rcvbuf);
/* The same, and the bridge's greeting ({"op":"hello",...}) read. */
struct th_raw *th_ws_open(int port);
/* A masked frame as a client sends it: fin, opcode, n bytes of p. */
void th_ws_send(struct th_raw *r, int fin, int op, const void *p, size_t n);
/* The next frame from the server: its opcode, the payload into *out
 * (malloc()ed, NUL-terminated, *n bytes); -1 on timeout (ms) or end. */
int th_ws_frame(struct th_raw *r, char **out, size_t *n, int ms);
/* The same, the payload (cut to cap - 1 bytes) into out. */
int th_ws_frame_buf(struct th_raw *r, char *out, size_t cap, int ms);

#endif
