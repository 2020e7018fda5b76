/*
 * Test utilities: temporary directories, child processes tracked by PID,
 * free loopback ports, mosquitto brokers started per test, and the
 * mosquitto_sub / mosquitto_pub command-line clients as independent peers.
 * Every helper fails the running test (th_fail) when it cannot do its job.
 */
#ifndef CWM_TEST_UTIL_H
#define CWM_TEST_UTIL_H

#include "harness.h"

#include <stddef.h>
#include <sys/types.h>

/* A NULL-ended list of options in place: OPTS("MQTT_BROKER_URL", url). */
#define OPTS(...) ((const char *[]){__VA_ARGS__, NULL})

/* The running test's own directory (created on first use, mode 0755 so
 * that a broker that dropped root can read it). Removed after a pass. */
const char *th_dir(void);
/* th_dir()/name into buf. */
const char *th_path(char *buf, size_t len, const char *name);

/* Processes. out: file for stdout and stderr (NULL: /dev/null). The PID
 * is tracked: the harness kills it when the test ends. */
pid_t th_spawn(const char *const argv[], const char *out);
/* Waits for exit up to ms; returns the exit status (0-255), 128+signal,
 * or -1 on timeout (the process keeps running). */
int th_wait_exit(pid_t pid, int ms);
/* Sends sig, waits for the exit (SIGKILL after 5 s), untracks. */
void th_kill(pid_t pid, int sig);
/* Runs argv to completion (up to ms); returns its exit status. */
int th_run(const char *const argv[], const char *out, int ms);

int th_free_port(void);
/* A listening socket on 127.0.0.1, on a port the kernel picks (no race
 * with another listener); its port into *port. Fails the test otherwise. */
int th_listen(int *port, int backlog);
/* A TCP connection to 127.0.0.1:port (TCP_NODELAY); -1 when refused. */
int th_tcp_connect(int port);
/* Sends all n bytes (MSG_NOSIGNAL); 0, or -1 when the peer is gone. */
int th_send_all(int fd, const void *p, size_t n);
/* 1 when a TCP connect to 127.0.0.1:port succeeds within ms. */
int th_wait_port(int port, int ms);

/* malloc()ed contents ("" for a missing file) and its length. */
char *th_read_file(const char *path, size_t *len);
void th_write_file(const char *path, const char *text);
/* Lines of the file that contain needle. */
int th_count_lines(const char *path, const char *needle);

/* A mosquitto broker on loopback. conf may use {PORT} {PORT2} {PORT3}
 * (free ports picked now) and {DIR} (the test directory); NULL gives an
 * anonymous TCP listener on {PORT}. Ready when every port accepts. */
struct th_broker {
	pid_t pid;
	int port, port2, port3;
	char conf[512], log[512];
	char url[64]; /* tcp://127.0.0.1:{PORT} (mqtts:// for a TLS broker) */
	char ca[512]; /* a TLS broker's CA file (th_tls_broker_start) */
	int n;        /* instance number, for file names */
};
void th_broker_start(struct th_broker *b, const char *conf);
/* A broker that knows one user (mosquitto_passwd) and refuses anonymous
 * clients. */
void th_broker_start_password(struct th_broker *b, const char *user,
                              const char *password);
/* Two anonymous brokers; urls gets "a,b" (their URLs as a fail-over list
 * for MQTT_BROKER_URL). */
void th_two_brokers_start(struct th_broker *a, struct th_broker *b,
                          char *urls, size_t len);
/* A broker's configuration and ports with nothing listening on them yet
 * (th_broker_restart starts it): for a client that starts first. */
void th_broker_later(struct th_broker *b, const char *conf);
void th_broker_stop(struct th_broker *b);     /* SIGTERM, wait */
void th_broker_kill9(struct th_broker *b);    /* SIGKILL, wait */
void th_broker_restart(struct th_broker *b);  /* same conf and ports */

/* A broker that keeps its state on disk ({DIR}/bdata/, saved every second
 * and on SIGTERM), with no bound on queued messages, and that sends every
 * message on at once (max_inflight_messages 0): a message it acknowledged
 * has been written to its subscribers' sockets, so that killing it loses
 * nothing a subscriber could not have had. extra: more configuration
 * lines, or NULL. */
void th_persistent_broker_start(struct th_broker *b, const char *extra);
/* Returns once that broker has written its database again (what it holds
 * now, the sessions and subscriptions included, survives a SIGKILL). */
void th_broker_wait_saved(void);
/* A broker without th_broker_start's "log_type all" (which would log every
 * message of a load test) on a free port (*port): started and tracked by
 * PID the same way. extra: more configuration lines, or NULL. */
pid_t th_quiet_broker_start(int *port, const char *extra);

/* mosquitto_sub -v as an independent subscriber. Returns once the broker
 * acknowledged the subscription. count: exit after that many messages
 * (0: run until stopped). extra: more arguments, space-separated, or NULL. */
struct th_sub {
	pid_t pid;
	char out[512];
};
void th_sub_start(struct th_sub *s, const struct th_broker *b,
                  const char *topic, int count, const char *extra);
/* A broker (th_broker_start with conf) and a mosquitto_sub on it
 * (th_sub_start with topic, count and extra). */
void th_broker_sub_start(struct th_broker *b, const char *conf,
                         struct th_sub *s, const char *topic, int count,
                         const char *extra);
/* Waits up to ms for it to exit (count reached); returns its status. */
int th_sub_wait(struct th_sub *s, int ms);
void th_sub_stop(struct th_sub *s);
/* The messages a mosquitto_sub printed: their count; their text into
 * *text (malloc()ed) when text is not NULL. */
int th_sub_lines(const struct th_sub *s, char **text);
/* The received messages as "topic payload" lines, malloc()ed, '\n'-joined;
 * *n gets the number of lines. */
char *th_sub_messages(const struct th_sub *s, int *n);
/* Waits up to ms for s to exit (its count reached; the test fails
 * otherwise); returns th_sub_messages(s, n). */
char *th_sub_done(struct th_sub *s, int ms, int *n);
/* Waits up to ms for s to exit (its count reached); fails unless its
 * messages (th_sub_messages) are exactly want. */
void th_sub_expect(struct th_sub *s, int ms, const char *want);
/* Waits up to ms for s to exit (its count reached); fails unless it got
 * exactly n messages, "<prefix>0" ... "<prefix><n-1>" among them (prefix:
 * "topic payload-start"). */
void th_sub_expect_seq(struct th_sub *s, int ms, const char *prefix, int n);
/* 1 when one of those messages contains needle. */
int th_sub_has(const struct th_sub *s, const char *needle);

/* mosquitto_pub; fails the test if it does not succeed. extra as above. */
void th_pub(const struct th_broker *b, const char *topic, const char *msg,
            int qos, int retain, const char *extra);

/* Makes a CA, a server certificate for 127.0.0.1/localhost signed by it, a
 * client certificate, and a second CA nobody trusts, in th_dir():
 * ca.crt, server.crt, server.key, client.crt, client.key, client-enc.key
 * (passphrase "s3cret-pass"), other-ca.crt, wrong-host.crt/.key (signed by
 * ca.crt for "example.invalid" only). Called again in the same test, it
 * keeps what it made. */
void th_make_certs(void);

/* A TLS broker (on {PORT}, anonymous clients allowed) with th_make_certs()'s
 * CA and the named server certificate (cert.crt, cert.key), the
 * certificates made first if the test has none yet; require_cert: clients
 * must show a certificate signed by that CA. Its url is
 * mqtts://127.0.0.1:{PORT}, its ca the CA file clients trust. */
void th_tls_broker_start(struct th_broker *b, const char *cert,
                         int require_cert);

/* A child process writes its own files in the test directory; a broker
 * that dropped root must be able to write its persistence there. */
void th_chmod_world(const char *path);

/* CivetWeb with no handler on a free 127.0.0.1 port, its error_log_file
 * th_dir()/name (the path into log). Fails the test when it does not
 * start; stop it with mg_stop. */
struct mg_context;
struct mg_context *th_civetweb_start(const char *name, char *log, size_t len);

/* ---- the example server (example/civetweb-mqtt) --------------------------- */

/* $EXAMPLE_BIN, or example/civetweb-mqtt (run from the repository). */
const char *th_example_bin(void);

struct th_xsrv {
	pid_t pid;
	int port;
	char log[512], conf[512];
};

/* Writes a configuration (mqtt: MQTT_* lines; civetweb: more CivetWeb lines
 * or NULL) with a free 127.0.0.1 port, keep-alive and tcp_nodelay, and
 * starts the example server on it; returns once it accepts connections. */
void th_xsrv_start(struct th_xsrv *s, const char *mqtt, const char *civetweb);
/* th_xsrv_start with MQTT_BROKER_URL tcp://127.0.0.1:broker_port before
 * the mqtt lines. */
void th_xsrv_start_broker(struct th_xsrv *s, int broker_port, const char *mqtt,
                          const char *civetweb);
/* Starts it (again) with the same configuration, a new log file. */
void th_xsrv_launch(struct th_xsrv *s);

/* ---- raw TCP clients to 127.0.0.1: hand-made requests and frames --------- */

struct th_raw {
	int fd;
	size_t len;        /* bytes in buf not yet consumed */
	char buf[1 << 18];
	char seen[4096];   /* free for the test: text it collects while reading */
};

/* Connects to 127.0.0.1:port (fails the test otherwise). rcvbuf > 0: that
 * receive buffer, set before connect so that the window stays small (a
 * client that never reads). Free with th_raw_close. */
struct th_raw *th_raw_connect(int port, int rcvbuf);
void th_raw_close(struct th_raw *r); /* NULL is fine */
/* Sends all n bytes (fails the test otherwise). */
void th_raw_send(struct th_raw *r, const void *data, size_t n);
/* Reads what arrives within ms (scaled) into buf: bytes read, 0 at the end
 * of the stream, -1 on timeout or a full buffer. */
int th_raw_fill(struct th_raw *r, int ms);
/* Drops the first n bytes of buf. */
void th_raw_consume(struct th_raw *r, size_t n);

#endif
