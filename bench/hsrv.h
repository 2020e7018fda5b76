/*
 * What the web servers of the HTTP benchmarks share (bserver: the library
 * and CivetWeb alone; bhand: the physical limit, libmosquitto and paho used
 * by hand): CivetWeb started with the same options, the body read and the
 * answer written the same way, and the same publish accounting behind
 * GET /acks, so that the rows differ only in how a handler publishes.
 * Header-only; each server includes it once.
 */
#ifndef CWM_BENCH_HSRV_H
#define CWM_BENCH_HSRV_H

#include "mqttraw.h"

#include <civetweb.h>

#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Publishes accepted by a handler (the publish call succeeded and 200 is
 * being answered), completions (QoS 1: PUBACK; QoS 0: written to the
 * socket) and failures; CLOCK_MONOTONIC of the first accepted publish and
 * of the last completion. */
static atomic_long hsrv_accepted_n, hsrv_acks_n, hsrv_failed_n;
static _Atomic uint64_t hsrv_first_ns, hsrv_last_ack_ns;
static volatile sig_atomic_t hsrv_stop;

static inline void hsrv_accepted(uint64_t started_ns)
{
	uint64_t zero = 0;
	atomic_compare_exchange_strong(&hsrv_first_ns, &zero, started_ns);
	atomic_fetch_add(&hsrv_accepted_n, 1);
}

static inline void hsrv_acked_n(long n)
{
	atomic_store(&hsrv_last_ack_ns, raw_now_ns());
	atomic_fetch_add(&hsrv_acks_n, n);
}

static inline void hsrv_acked(void)
{
	hsrv_acked_n(1);
}

static inline void hsrv_failed(void)
{
	atomic_fetch_add(&hsrv_failed_n, 1);
}

static inline int hsrv_ok(struct mg_connection *conn, const char *body)
{
	char len[32];
	snprintf(len, sizeof(len), "%zu", strlen(body));
	mg_response_header_start(conn, 200);
	mg_response_header_add(conn, "Content-Type", "application/json", -1);
	mg_response_header_add(conn, "Content-Length", len, -1);
	mg_response_header_send(conn);
	mg_write(conn, body, strlen(body));
	return 200;
}

static inline int hsrv_fail(struct mg_connection *conn, int status,
                            const char *why)
{
	mg_send_http_error(conn, status, "%s", why);
	return status;
}

/* The request body, up to cap bytes. */
static inline size_t hsrv_read_body(struct mg_connection *conn, char *buf,
                                    size_t cap)
{
	size_t n = 0;
	int r;
	while (n < cap && (r = mg_read(conn, buf + n, cap - n)) > 0)
		n += (size_t)r;
	return n;
}

/* The answer of GET /acks: the accounting above and the publisher's
 * in_flight and queued gauges (-1 when it has none). */
static inline int hsrv_acks_reply(struct mg_connection *conn, long in_flight,
                                  long queued)
{
	char body[384];
	snprintf(body, sizeof(body),
	         "{\"accepted\":%ld,\"acks\":%ld,\"failed\":%ld,"
	         "\"first_ns\":%llu,\"last_ack_ns\":%llu,"
	         "\"in_flight\":%ld,\"queued\":%ld}",
	         atomic_load(&hsrv_accepted_n), atomic_load(&hsrv_acks_n),
	         atomic_load(&hsrv_failed_n),
	         (unsigned long long)atomic_load(&hsrv_first_ns),
	         (unsigned long long)atomic_load(&hsrv_last_ack_ns), in_flight,
	         queued);
	return hsrv_ok(conn, body);
}

/* CivetWeb on 127.0.0.1:port with num_threads threads, keep-alive and
 * TCP_NODELAY on (as the example), or NULL. */
static inline struct mg_context *hsrv_start(int port, const char *threads)
{
	char ports[32];
	snprintf(ports, sizeof(ports), "127.0.0.1:%d", port);
	const char *cw[] = {"listening_ports", ports, "num_threads", threads,
	                    "enable_keep_alive", "yes", "tcp_nodelay", "1",
	                    "request_timeout_ms", "10000", NULL};
	mg_init_library(0);
	return mg_start(NULL, NULL, cw);
}

static void hsrv_on_signal(int sig)
{
	(void)sig;
	hsrv_stop = 1;
}

/* Prints "ready" and returns at SIGTERM or SIGINT. */
static inline void hsrv_serve(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = hsrv_on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	printf("ready\n");
	fflush(stdout);
	while (!hsrv_stop) {
		struct timespec ts = {0, 50 * 1000000L};
		nanosleep(&ts, NULL);
	}
}

#endif
