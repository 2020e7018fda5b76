/*
 * WebSocket clients for the tests: see ws.h.
 */
#include "ws.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* CivetWeb's client thread. */
static int wsc_on_data(struct mg_connection *conn, int bits, char *data,
                       size_t len, void *ud)
{
	struct wsc *w = ud;
	int op = bits & 0xf;
	(void)conn;
	if (op == MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE) {
		pthread_mutex_lock(&w->mu);
		w->close_code =
		    len >= 2 ? ((unsigned char)data[0] << 8 | (unsigned char)data[1])
		             : 1005;
		pthread_mutex_unlock(&w->mu);
		return 0;
	}
	if (op != MG_WEBSOCKET_OPCODE_TEXT)
		return 1;
	pthread_mutex_lock(&w->mu);
	if (w->n == w->cap) {
		w->cap = w->cap ? w->cap * 2 : 64;
		w->f = realloc(w->f, (size_t)w->cap * sizeof(*w->f));
	}
	w->f[w->n++] = strndup(data, len);
	pthread_mutex_unlock(&w->mu);
	return 1;
}

static void wsc_on_close(const struct mg_connection *conn, void *ud)
{
	struct wsc *w = ud;
	(void)conn;
	atomic_store(&w->closed, 1);
}

int wsc_open(struct wsc *w, int port)
{
	char err[256];
	memset(w, 0, sizeof(*w));
	pthread_mutex_init(&w->mu, NULL);
	w->conn = mg_connect_websocket_client("127.0.0.1", port, 0, err,
	                                      sizeof(err), "/mqtt/ws", NULL,
	                                      wsc_on_data, wsc_on_close, w);
	return w->conn != NULL ? 0 : -1;
}

void wsc_send(struct wsc *w, const char *text)
{
	ASSERT_GT(mg_websocket_client_write(w->conn, MG_WEBSOCKET_OPCODE_TEXT, text,
	                                    strlen(text)),
	          0);
}

void wsc_close(struct wsc *w)
{
	if (w->conn != NULL) {
		if (!atomic_load(&w->closed))
			mg_websocket_client_write(
			    w->conn, MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE, "\x03\xe8", 2);
		mg_close_connection(w->conn);
		w->conn = NULL;
	}
	for (int i = 0; i < w->n; i++)
		free(w->f[i]);
	free(w->f);
	w->f = NULL;
	w->n = w->cap = 0;
	pthread_mutex_destroy(&w->mu);
}

int wsc_nframes(struct wsc *w)
{
	pthread_mutex_lock(&w->mu);
	int n = w->n;
	pthread_mutex_unlock(&w->mu);
	return n;
}

int wsc_count(struct wsc *w, const char *needle)
{
	int k = 0;
	pthread_mutex_lock(&w->mu);
	for (int i = 0; i < w->n; i++)
		k += strstr(w->f[i], needle) != NULL;
	pthread_mutex_unlock(&w->mu);
	return k;
}

int th_raw_head(struct th_raw *r, char *head, size_t cap)
{
	char *end;
	int64_t until = th_now_ms() + 10000 * th_timeout_scale();
	while ((end = memmem(r->buf, r->len, "\r\n\r\n", 4)) == NULL)
		if (th_now_ms() > until || th_raw_fill(r, 500) <= 0)
			return 0;
	size_t n = (size_t)(end - r->buf) + 4;
	if (head != NULL)
		snprintf(head, cap, "%.*s", (int)n, r->buf);
	int status = 0;
	sscanf(r->buf, "HTTP/1.%*d %d", &status);
	th_raw_consume(r, n);
	return status;
}

int th_ws_upgrade(struct th_raw *r, int port, const char *extra, char *head,
                  size_t cap)
{
	char req[2048];
	snprintf(req, sizeof(req),
	         "GET /mqtt/ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
	         "Upgrade: websocket\r\nConnection: Upgrade\r\n"
	         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	         "Sec-WebSocket-Version: 13\r\n%s\r\n",
	         port, extra != NULL ? extra : "");
	th_raw_send(r, req, strlen(req));
	return th_raw_head(r, head, cap);
}

void th_ws_send(struct th_raw *r, int fin, int op, const void *p, size_t n)
{
	const unsigned char *b = p;
	unsigned char h[14], mask[4] = {0x12, 0x34, 0x56, 0x78};
	size_t hl = 0;
	h[hl++] = (unsigned char)((fin ? 0x80 : 0) | op);
	if (n < 126) {
		h[hl++] = (unsigned char)(0x80 | n);
	} else if (n < 65536) {
		h[hl++] = 0x80 | 126;
		h[hl++] = (unsigned char)(n >> 8);
		h[hl++] = (unsigned char)n;
	} else {
		h[hl++] = 0x80 | 127;
		for (int i = 7; i >= 0; i--)
			h[hl++] = (unsigned char)((uint64_t)n >> (8 * i));
	}
	char *f = malloc(hl + 4 + n);
	ASSERT(f != NULL);
	memcpy(f, h, hl);
	memcpy(f + hl, mask, 4);
	for (size_t i = 0; i < n; i++)
		f[hl + 4 + i] = (char)(b[i] ^ mask[i % 4]);
	th_raw_send(r, f, hl + 4 + n);
	free(f);
}

int th_ws_frame(struct th_raw *r, char **out, size_t *n_out, int ms)
{
	int64_t until = th_now_ms() + (int64_t)ms * th_timeout_scale();
	for (;;) {
		if (r->len >= 2) {
			const unsigned char *p = (const unsigned char *)r->buf;
			size_t hl = 2, n = p[1] & 0x7f;
			int ok = 1;
			if (n == 126) {
				ok = r->len >= 4;
				n = ok ? (size_t)p[2] << 8 | p[3] : 0;
				hl = 4;
			} else if (n == 127) {
				ok = r->len >= 10;
				n = 0;
				for (int i = 0; ok && i < 8; i++)
					n = n << 8 | p[2 + i];
				hl = 10;
			}
			if (ok && r->len >= hl + n) {
				int op = p[0] & 0xf;
				*out = malloc(n + 1);
				ASSERT(*out != NULL);
				memcpy(*out, r->buf + hl, n);
				(*out)[n] = '\0';
				*n_out = n;
				th_raw_consume(r, hl + n);
				return op;
			}
		}
		if (th_now_ms() > until)
			return -1;
		/* 0: closed; -1 with a full buffer: a frame larger than it. A
		 * poll that times out (-1) polls again until `until`. */
		int k = th_raw_fill(r, 200);
		if (k == 0 || (k < 0 && r->len == sizeof(r->buf)))
			return -1;
	}
}

int th_ws_frame_buf(struct th_raw *r, char *out, size_t cap, int ms)
{
	char *p;
	size_t n;
	int op = th_ws_frame(r, &p, &n, ms);
	if (op < 0)
		return op;
	size_t k = n < cap - 1 ? n : cap - 1;
	memcpy(out, p, k);
	out[k] = '\0';
	free(p);
	return op;
}

struct th_raw *th_ws_connect(int port, int rcvbuf)
{
	struct th_raw *ws = th_raw_connect(port, rcvbuf);
	ASSERT_EQ(th_ws_upgrade(ws, port, NULL, NULL, 0), 101);
	return ws;
}

struct th_raw *th_ws_open(int port)
{
	struct th_raw *ws = th_ws_connect(port, 0);
	char *f;
	size_t fl;
	ASSERT_EQ(th_ws_frame(ws, &f, &fl, 10000), 1);
	ASSERT_CONTAINS(f, "\"op\":\"hello\"");
	free(f);
	return ws;
}
