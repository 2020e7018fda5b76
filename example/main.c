/*
 * civetweb-mqtt: the stock civetweb server plus one MQTT client per prefix
 * found in the configuration.
 *
 *   civetweb-mqtt [config-file] [-option value ...]
 *
 * The config file has civetweb.conf's format (see example/civetweb.conf);
 * without one, ./civetweb.conf is read if it exists. Command-line options
 * override the file. Runs in the foreground, logs to stderr, stops cleanly
 * on SIGINT / SIGTERM (at any moment, start-up included), and exits 1 with
 * the reason on a bad configuration.
 *
 * It shows "publish from a request handler":
 *   curl -H 'Content-Type: application/octet-stream' -d 'on' \
 *        http://127.0.0.1:8080/api/publish/demo/lamp
 * publishes "on" to demo/lamp at QoS 1 and answers {"id":N}. The route
 * publishes under the rules of the client's bridge (BRIDGE_AUTH_FILE,
 * BRIDGE_PUBLISH_ALLOW; see mg_mqtt_bridge_check_publish()): without a
 * bridge it refuses everything (403).
 */
#define _GNU_SOURCE
#include "civetweb_mqtt.h"

#include <civetweb.h>

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define PUBLISH_URI "/api/publish/"
#define MAX_BODY (1024 * 1024)

static const char *default_prefix = "MQTT";

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
	char ts[32];
	time_t now = time(NULL);
	struct tm tm;
	va_list ap;
	localtime_r(&now, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
	flockfile(stderr);
	fprintf(stderr, "[%s] ", ts);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	funlockfile(stderr);
}

/* CivetWeb's own log lines go to stderr too. */
static int on_civetweb_log(const struct mg_connection *conn, const char *msg)
{
	(void)conn;
	logf_("[civetweb] %s", msg);
	return 1;
}

static void on_mqtt_log(struct mg_mqtt *c, int level, const char *text,
                        void *ud)
{
	static const char *const names[] = {"error", "warning", "info", "debug"};
	(void)ud;
	logf_("[%s] [%s] %s", mg_mqtt_prefix(c), names[level & 3], text);
}

/* Logs every received message that no topic handler took. */
static void on_mqtt_message(struct mg_mqtt *c, const struct mg_mqtt_message *m,
                            void *ud)
{
	char shown[256];
	size_t n = 0;
	(void)ud;
	for (size_t i = 0; i < m->payload_len && n + 5 < sizeof(shown); i++) {
		unsigned char ch = ((const unsigned char *)m->payload)[i];
		n += (size_t)(ch >= 0x20 && ch < 0x7f
		                  ? snprintf(shown + n, sizeof(shown) - n, "%c", ch)
		                  : snprintf(shown + n, sizeof(shown) - n, "\\x%02x", ch));
	}
	shown[n] = '\0';
	logf_("[%s] message on '%s' (qos %d%s, %zu bytes): %s%s", mg_mqtt_prefix(c),
	      m->topic, m->qos, m->retain ? ", retained" : "", m->payload_len, shown,
	      n < m->payload_len ? "..." : "");
}

/* text as the inside of a JSON string (quotes, backslashes and control
 * characters escaped) into out; cut short to fit. Returns out. */
static const char *json_escape(const char *text, char *out, size_t len)
{
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)text;
	     *p != '\0' && n + 7 < len; p++) {
		if (*p == '"' || *p == '\\') {
			out[n++] = '\\';
			out[n++] = (char)*p;
		} else if (*p < 0x20 || *p == 0x7f) {
			n += (size_t)snprintf(out + n, len - n, "\\u%04x", *p);
		} else {
			out[n++] = (char)*p;
		}
	}
	out[n] = '\0';
	return out;
}

/* The media type of the request's Content-Type, before any ';'. */
static int media_is(const char *ct, const char *type)
{
	size_t n = strcspn(ct, ";");
	while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
		n--;
	return strlen(type) == n && strncasecmp(ct, type, n) == 0;
}

/* A page on any site can make a browser POST these three types (and none)
 * without asking first: taking them would let it publish as the visitor. */
static int cross_site_type(const char *ct)
{
	return ct == NULL || ct[0] == '\0' || media_is(ct, "text/plain") ||
	       media_is(ct, "application/x-www-form-urlencoded") ||
	       media_is(ct, "multipart/form-data");
}

static void reply(struct mg_connection *conn, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void reply(struct mg_connection *conn, int status, const char *fmt, ...)
{
	char body[512], len[32];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(body, sizeof(body), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(body))
		n = (int)strlen(body);
	snprintf(len, sizeof(len), "%d", n);
	mg_response_header_start(conn, status);
	mg_response_header_add(conn, "Content-Type", "application/json", -1);
	mg_response_header_add(conn, "Content-Length", len, -1);
	mg_response_header_add(conn, "Cache-Control", "no-store", -1);
	mg_response_header_add(conn, "X-Content-Type-Options", "nosniff", -1);
	mg_response_header_send(conn);
	mg_write(conn, body, (size_t)n);
}

/* The request body, at most MAX_BODY bytes, by the whole-body deadline of
 * mg_mqtt_read_body() (a client sending a byte at a time does not hold the
 * worker). Returns 0, or the status of the error reply it sent: a body cut
 * short (the client went away, or timed out) is not the message: never
 * publish part of one as if it were whole. */
static int read_body(struct mg_connection *conn, char **body, size_t *len)
{
	int rc = mg_mqtt_read_body(conn, MAX_BODY, body, len);
	switch (rc) {
	case 0:
		return 0;
	case MG_MQTT_ERR_TOO_LARGE:
		reply(conn, 413, "{\"error\":\"body larger than %d bytes\"}", MAX_BODY);
		return 413;
	case MG_MQTT_ERR_TIMEOUT:
		reply(conn, 408, "{\"error\":\"the body came too slowly\"}");
		return 408;
	case MG_MQTT_ERR_INVALID:
		reply(conn, 400,
		      "{\"error\":\"the body ended before its Content-Length\"}");
		return 400;
	default:
		reply(conn, 500, "{\"error\":\"out of memory\"}");
		return 500;
	}
}

/* POST /api/publish/<topic>: the body, published at QoS 1 to <topic> by the
 * client of prefix ?client=<PREFIX> (default: MQTT, or the only one),
 * under the rules of that client's bridge: its BRIDGE_AUTH_FILE and
 * BRIDGE_PUBLISH_ALLOW (no bridge: nothing may be published), and never a
 * body a page on another site could have sent (415). */
static int publish_handler(struct mg_connection *conn, void *ud)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	char prefix[64] = "", shown[64 * 6 + 1];
	int status;
	(void)ud;

	if (strcmp(ri->request_method, "POST") != 0) {
		reply(conn, 405, "{\"error\":\"use POST\"}");
		return 405;
	}
	const char *topic = ri->local_uri + strlen(PUBLISH_URI);
	if (ri->query_string == NULL ||
	    mg_get_var(ri->query_string, strlen(ri->query_string), "client", prefix,
	               sizeof(prefix)) <= 0)
		snprintf(prefix, sizeof(prefix), "%s", default_prefix);
	struct mg_mqtt *m = mg_mqtt_get(mg_get_context(conn), prefix);
	if (m == NULL) {
		reply(conn, 404, "{\"error\":\"no MQTT client with prefix %s\"}",
		      json_escape(prefix, shown, sizeof(shown)));
		return 404;
	}
	/* Credentials, the topic and the allow list: answered when refused. */
	if ((status = mg_mqtt_bridge_check_publish(m, conn, topic)) != 0)
		return status;
	if (cross_site_type(mg_get_header(conn, "Content-Type"))) {
		reply(conn, 415,
		      "{\"error\":\"give the body a Content-Type other than "
		      "text/plain, application/x-www-form-urlencoded or "
		      "multipart/form-data (e.g. application/octet-stream)\"}");
		return 415;
	}
	char *body;
	size_t len;
	if ((status = read_body(conn, &body, &len)) != 0)
		return status;
	int id = mg_mqtt_publish(m, topic, body, len, 1, 0);
	free(body);
	if (id > 0) {
		reply(conn, 200, "{\"id\":%d}", id);
		return 200;
	}
	status = id == MG_MQTT_ERR_TOPIC || id == MG_MQTT_ERR_INVALID ? 400
	         : id == MG_MQTT_ERR_TOO_LARGE                        ? 413
	         : id == MG_MQTT_ERR_BUFFER_FULL ||
	                 id == MG_MQTT_ERR_NOT_CONNECTED ||
	                 id == MG_MQTT_ERR_STOPPED
	             ? 503
	             : 500;
	reply(conn, status, "{\"error\":\"%s\",\"code\":%d}", mg_mqtt_strerror(id),
	      id);
	return status;
}

static void usage(void)
{
	fprintf(stderr, "usage: civetweb-mqtt [config-file] [-option value ...]\n");
}

/* What main() starts and stop_server() stops. */
struct server {
	struct mg_mqtt_config cfg;
	const char **overrides; /* the command line's -option value pairs */
	const char **cw;        /* CivetWeb's options, document_root added */
	char docroot[PATH_MAX + 16];
	struct mg_context *ctx;
	struct mg_mqtt *clients[32];
	int nclients;
};

/* SIGINT and SIGTERM blocked before any thread exists: every thread
 * CivetWeb and the clients start inherits the mask, and the signals wait,
 * pending, until main() takes them with sigwait(). A stop asked for during
 * start-up is therefore never the default action (killed, the broker
 * sending the last will): it is taken once start-up returns. */
static int block_stop_signals(sigset_t *stop)
{
	sigemptyset(stop);
	sigaddset(stop, SIGINT);
	sigaddset(stop, SIGTERM);
	return pthread_sigmask(SIG_BLOCK, stop, NULL);
}

/* 1 when SIGINT or SIGTERM is pending (sent during start-up). */
static int stop_pending(const sigset_t *stop)
{
	sigset_t pending;
	if (sigpending(&pending) != 0)
		return 0;
	return (sigismember(stop, SIGINT) && sigismember(&pending, SIGINT) == 1) ||
	       (sigismember(stop, SIGTERM) && sigismember(&pending, SIGTERM) == 1);
}

/* Sleeps until SIGINT or SIGTERM: no timer, no periodic wake-up. */
static void wait_for_stop(const sigset_t *stop)
{
	int sig = 0;
	while (sigwait(stop, &sig) != 0)
		;
	logf_("stopping (%s)", sig == SIGINT ? "SIGINT" : "SIGTERM");
}

/* [config-file] [-option value ...] into path and srv->overrides. */
static int read_args(struct server *srv, int argc, char **argv,
                     const char **path)
{
	int n = 0, i = 1;
	*path = NULL;
	if ((srv->overrides = calloc((size_t)argc + 1, sizeof(char *))) == NULL)
		return 1;
	if (argc > 1 && argv[1][0] != '-')
		*path = argv[i++];
	else if (access("civetweb.conf", R_OK) == 0)
		*path = "civetweb.conf";
	for (; i < argc; i += 2) {
		if (argv[i][0] != '-' || argv[i][1] == '\0' || i + 1 >= argc) {
			usage();
			return 1;
		}
		srv->overrides[n++] = argv[i] + 1;
		srv->overrides[n++] = argv[i + 1];
	}
	return 0;
}

/* CivetWeb's options, with the stock binary's default document root. A
 * relative document_root read from the file is taken relative to the file,
 * so that the server can be started from any directory. */
static int civetweb_options(struct server *srv, const char *path)
{
	size_t ncw = 0;
	int have_root = 0;
	while (srv->cfg.civetweb[ncw] != NULL)
		ncw++;
	if ((srv->cw = calloc(ncw + 3, sizeof(char *))) == NULL)
		return 1;
	for (size_t k = 0; k < ncw; k += 2) {
		srv->cw[k] = srv->cfg.civetweb[k];
		srv->cw[k + 1] = srv->cfg.civetweb[k + 1];
		if (strcmp(srv->cw[k], "document_root") != 0)
			continue;
		have_root = 1;
		if (path != NULL && srv->cw[k + 1][0] != '/') {
			char *copy = strdup(path);
			if (copy == NULL)
				return 1;
			snprintf(srv->docroot, sizeof(srv->docroot), "%s/%s",
			         dirname(copy), srv->cw[k + 1]);
			free(copy);
			srv->cw[k + 1] = srv->docroot;
		}
	}
	if (!have_root) {
		srv->cw[ncw++] = "document_root";
		srv->cw[ncw++] = ".";
	}
	return 0;
}

/* The file and the command line, split and checked: every name must be
 * CivetWeb's or a client's (a misspelt one stops here, named). */
static int load_config(struct server *srv, int argc, char **argv)
{
	const char *path;
	char err[1024];
	if (read_args(srv, argc, argv, &path) != 0)
		return 1;
	if (mg_mqtt_config_read(&srv->cfg, path, srv->overrides, err,
	                        sizeof(err)) != 0 ||
	    mg_mqtt_config_check(&srv->cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "civetweb-mqtt: %s (see the README)\n", err);
		return 1;
	}
	return civetweb_options(srv, path);
}

static int start_web_server(struct server *srv)
{
	char err[1024] = "";
	struct mg_callbacks callbacks;
	memset(&callbacks, 0, sizeof(callbacks));
	callbacks.log_message = on_civetweb_log;
	struct mg_init_data init = {&callbacks, NULL, srv->cw};
	/* CivetWeb 1.16 made the error code a member (plus code_sub). */
#if CIVETWEB_VERSION_MAJOR > 1 || \
    (CIVETWEB_VERSION_MAJOR == 1 && CIVETWEB_VERSION_MINOR >= 16)
	struct mg_error_data error = {0, 0, err, sizeof(err)};
#else
	unsigned code = 0;
	struct mg_error_data error = {&code, err, sizeof(err)};
#endif
	mg_init_library(0);
	if ((srv->ctx = mg_start2(&init, &error)) == NULL) {
		fprintf(stderr, "civetweb-mqtt: cannot start the web server: %s\n",
		        err[0] != '\0' ? err : "unknown error");
		return 1;
	}
	return 0;
}

/* One client per prefix found in the configuration. */
static int start_clients(struct server *srv)
{
	const size_t max = sizeof(srv->clients) / sizeof(srv->clients[0]);
	char err[1024];
	for (size_t k = 0; srv->cfg.prefixes[k] != NULL; k++) {
		const char *prefix = srv->cfg.prefixes[k];
		struct mg_mqtt *c = mg_mqtt_create(prefix);
		if (c == NULL || (size_t)srv->nclients == max) {
			fprintf(stderr, "civetweb-mqtt: cannot create client '%s'\n",
			        prefix);
			mg_mqtt_stop(c);
			return 1;
		}
		mg_mqtt_on_log(c, on_mqtt_log, NULL);
		mg_mqtt_on_message(c, on_mqtt_message, NULL);
		if (mg_mqtt_start(c, srv->ctx, srv->cfg.mqtt, err, sizeof(err)) != 0) {
			/* on_mqtt_log has printed err already. */
			fprintf(stderr, "civetweb-mqtt: client %s did not start; exiting\n",
			        prefix);
			mg_mqtt_stop(c);
			return 1;
		}
		srv->clients[srv->nclients++] = c;
	}
	if (srv->nclients > 0 && mg_mqtt_get(srv->ctx, default_prefix) == NULL)
		default_prefix = mg_mqtt_prefix(srv->clients[0]);
	return 0;
}

/* The routes, and where the server listens. */
static void serve(struct server *srv)
{
	struct mg_server_port ports[8];
	int np = mg_get_server_ports(srv->ctx, 8, ports);
	mg_set_request_handler(srv->ctx, PUBLISH_URI, publish_handler, NULL);
	for (int k = 0; k < np; k++)
		logf_("civetweb-mqtt %s: serving %s on %s://127.0.0.1:%d/",
		      MG_MQTT_VERSION, mg_get_option(srv->ctx, "document_root"),
		      ports[k].is_ssl ? "https" : "http", ports[k].port);
	if (srv->nclients == 0)
		logf_("no MQTT client configured (no <PREFIX>_BROKER_URL or other "
		      "<PREFIX>_<KEY> option)");
}

/* The web server first: no request handler uses a client after it. */
static void stop_server(struct server *srv)
{
	if (srv->ctx != NULL)
		mg_stop(srv->ctx);
	for (int k = 0; k < srv->nclients; k++)
		mg_mqtt_stop(srv->clients[k]);
	mg_mqtt_config_free(&srv->cfg);
	free(srv->cw);
	free(srv->overrides);
}

int main(int argc, char **argv)
{
	static struct server srv;
	sigset_t stop;
	int status;

	if (block_stop_signals(&stop) != 0)
		return 1;
	status = load_config(&srv, argc, argv);
	if (status == 0)
		status = start_web_server(&srv);
	if (status == 0)
		status = start_clients(&srv);
	if (status != 0 && srv.ctx != NULL && stop_pending(&stop)) {
		/* The start-up failed, or gave up, while a stop was asked for:
		 * the stop is what happened. */
		logf_("stopping (signal during start-up)");
		status = 0;
	} else if (status == 0) {
		serve(&srv);
		wait_for_stop(&stop);
	}
	stop_server(&srv);
	if (status == 0)
		logf_("stopped");
	return status;
}
