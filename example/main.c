/*
 * civetweb-mqtt: the stock civetweb server plus one MQTT client per prefix
 * found in the configuration.
 *
 *   civetweb-mqtt [config-file] [-option value ...]
 *
 * The config file has civetweb.conf's format (see example/civetweb.conf);
 * without one, ./civetweb.conf is read if it exists. Command-line options
 * override the file. Runs in the foreground, logs to stderr, stops cleanly
 * on SIGINT / SIGTERM, and exits 1 with the reason on a bad configuration.
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

static volatile sig_atomic_t stop_requested;
static const char *default_prefix = "MQTT";

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

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

/* The request body, at most MAX_BODY bytes, into *body (malloc()ed; the
 * caller frees it). Returns 0, or the status of the error reply sent. */
static int read_body(struct mg_connection *conn, char **body, size_t *len)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	int r;
	*body = NULL;
	*len = 0;
	if (ri->content_length > MAX_BODY) {
		reply(conn, 413, "{\"error\":\"body larger than %d bytes\"}", MAX_BODY);
		return 413;
	}
	char *buf = malloc(MAX_BODY + 1);
	size_t n = 0;
	if (buf == NULL) {
		reply(conn, 500, "{\"error\":\"out of memory\"}");
		return 500;
	}
	while (n <= MAX_BODY && (r = mg_read(conn, buf + n, MAX_BODY + 1 - n)) > 0)
		n += (size_t)r;
	if (n > MAX_BODY) {
		free(buf);
		reply(conn, 413, "{\"error\":\"body larger than %d bytes\"}", MAX_BODY);
		return 413;
	}
	/* A body cut short (the client went away, or timed out) is not the
	 * message: never publish part of one as if it were whole. */
	if (ri->content_length >= 0 && (long long)n != ri->content_length) {
		free(buf);
		reply(conn, 400,
		      "{\"error\":\"the body ended before its Content-Length\"}");
		return 400;
	}
	*body = buf;
	*len = n;
	return 0;
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

int main(int argc, char **argv)
{
	const char *path = NULL;
	const char **overrides = calloc((size_t)argc + 1, sizeof(char *));
	struct mg_mqtt_config cfg;
	struct mg_mqtt *clients[32];
	char err[1024], docroot[PATH_MAX + 16];
	int nclients = 0, n = 0, i = 1;

	if (overrides == NULL)
		return 1;
	if (argc > 1 && argv[1][0] != '-')
		path = argv[i++];
	else if (access("civetweb.conf", R_OK) == 0)
		path = "civetweb.conf";
	for (; i < argc; i += 2) {
		if (argv[i][0] != '-' || argv[i][1] == '\0' || i + 1 >= argc) {
			usage();
			return 1;
		}
		overrides[n++] = argv[i] + 1;
		overrides[n++] = argv[i + 1];
	}
	if (mg_mqtt_config_read(&cfg, path, overrides, err, sizeof(err)) != 0) {
		fprintf(stderr, "civetweb-mqtt: %s\n", err);
		return 1;
	}
	if (cfg.other[0] != NULL) {
		fprintf(stderr,
		        "civetweb-mqtt: unknown option '%s' (neither a CivetWeb option "
		        "nor <PREFIX>_<KEY>; see the README)\n",
		        cfg.other[0]);
		mg_mqtt_config_free(&cfg);
		return 1;
	}

	/* CivetWeb's options, with the stock binary's default document root. A
	 * relative document_root read from the file is taken relative to the
	 * file, so that the server can be started from any directory. */
	size_t ncw = 0;
	while (cfg.civetweb[ncw] != NULL)
		ncw++;
	const char **cw = calloc(ncw + 3, sizeof(char *));
	if (cw == NULL)
		return 1;
	int have_root = 0;
	for (size_t k = 0; k < ncw; k += 2) {
		cw[k] = cfg.civetweb[k];
		cw[k + 1] = cfg.civetweb[k + 1];
		if (strcmp(cw[k], "document_root") == 0) {
			have_root = 1;
			if (path != NULL && cw[k + 1][0] != '/') {
				char *copy = strdup(path);
				snprintf(docroot, sizeof(docroot), "%s/%s", dirname(copy),
				         cw[k + 1]);
				free(copy);
				cw[k + 1] = docroot;
			}
		}
	}
	if (!have_root) {
		cw[ncw++] = "document_root";
		cw[ncw++] = ".";
	}

	struct mg_callbacks callbacks;
	memset(&callbacks, 0, sizeof(callbacks));
	callbacks.log_message = on_civetweb_log;
	struct mg_init_data init = {&callbacks, NULL, cw};
	/* CivetWeb 1.16 made the error code a member (plus code_sub). */
#if CIVETWEB_VERSION_MAJOR > 1 || \
    (CIVETWEB_VERSION_MAJOR == 1 && CIVETWEB_VERSION_MINOR >= 16)
	struct mg_error_data error = {0, 0, err, sizeof(err)};
#else
	unsigned code = 0;
	struct mg_error_data error = {&code, err, sizeof(err)};
#endif
	err[0] = '\0';
	mg_init_library(0);
	struct mg_context *ctx = mg_start2(&init, &error);
	if (ctx == NULL) {
		fprintf(stderr, "civetweb-mqtt: cannot start the web server: %s\n",
		        err[0] != '\0' ? err : "unknown error");
		mg_mqtt_config_free(&cfg);
		free(cw);
		free(overrides);
		return 1;
	}

	int status = 0;
	for (size_t k = 0; cfg.prefixes[k] != NULL; k++) {
		struct mg_mqtt *c = mg_mqtt_create(cfg.prefixes[k]);
		if (c == NULL || nclients == (int)(sizeof(clients) / sizeof(clients[0]))) {
			fprintf(stderr, "civetweb-mqtt: cannot create client '%s'\n",
			        cfg.prefixes[k]);
			mg_mqtt_stop(c);
			status = 1;
			break;
		}
		mg_mqtt_on_log(c, on_mqtt_log, NULL);
		mg_mqtt_on_message(c, on_mqtt_message, NULL);
		if (mg_mqtt_start(c, ctx, cfg.mqtt, err, sizeof(err)) != 0) {
			/* on_mqtt_log has printed err already. */
			fprintf(stderr, "civetweb-mqtt: client %s did not start; exiting\n",
			        cfg.prefixes[k]);
			mg_mqtt_stop(c);
			status = 1;
			break;
		}
		clients[nclients++] = c;
	}
	if (nclients > 0 && mg_mqtt_get(ctx, default_prefix) == NULL)
		default_prefix = mg_mqtt_prefix(clients[0]);

	if (status == 0) {
		struct mg_server_port ports[8];
		int np = mg_get_server_ports(ctx, 8, ports);
		mg_set_request_handler(ctx, PUBLISH_URI, publish_handler, NULL);
		for (int k = 0; k < np; k++)
			logf_("civetweb-mqtt %s: serving %s on %s://127.0.0.1:%d/",
			      MG_MQTT_VERSION, mg_get_option(ctx, "document_root"),
			      ports[k].is_ssl ? "https" : "http", ports[k].port);
		if (nclients == 0)
			logf_("no MQTT client configured (no <PREFIX>_BROKER_URL or other "
			      "<PREFIX>_<KEY> option)");

		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_signal;
		sigaction(SIGINT, &sa, NULL);
		sigaction(SIGTERM, &sa, NULL);
		while (!stop_requested) {
			struct timespec ts = {0, 100 * 1000000L};
			nanosleep(&ts, NULL);
		}
		logf_("stopping");
	}

	/* The web server first: no request handler uses a client after this. */
	mg_stop(ctx);
	for (int k = 0; k < nclients; k++)
		mg_mqtt_stop(clients[k]);
	mg_mqtt_config_free(&cfg);
	free(cw);
	free(overrides);
	if (status == 0)
		logf_("stopped");
	return status;
}
