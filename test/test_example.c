/*
 * example/civetweb-mqtt end to end: a real broker, the server binary, curl
 * as the HTTP client, mosquitto_sub / mosquitto_pub as MQTT peers.
 * EXAMPLE_BIN overrides the binary (sanitizer builds).
 */
#include "http.h"
#include "util.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>

/* Writes a config (extra lines appended) and starts the server on a free
 * port; returns once HTTP answers. */
static void server_start(struct th_xsrv *s, const struct th_broker *b,
                         const char *extra)
{
	char text[4096], www[512], index[600];
	static int n;
	char name[64];
	s->port = th_free_port();
	th_path(www, sizeof(www), "www");
	mkdir(www, 0755);
	snprintf(index, sizeof(index), "%s/index.html", www);
	th_write_file(index, "<h1>hello from the document root</h1>\n");
	snprintf(text, sizeof(text),
	         "# test configuration\n"
	         "listening_ports 127.0.0.1:%d\n"
	         "document_root www\n"
	         "enable_keep_alive yes\n"
	         "tcp_nodelay 1\n"
	         "\n"
	         "MQTT_BROKER_URL %s\n"
	         "MQTT_SUBSCRIBE demo/#:1\n"
	         "MQTT_BRIDGE_PATH /mqtt\n"
	         "MQTT_BRIDGE_PUBLISH_ALLOW demo/#\n"
	         "%s",
	         s->port, b != NULL ? b->url : "tcp://127.0.0.1:1",
	         extra != NULL ? extra : "");
	snprintf(name, sizeof(name), "civetweb-%d.conf", ++n);
	th_path(s->conf, sizeof(s->conf), name);
	th_write_file(s->conf, text);
	th_xsrv_launch(s);
}

/* curl (http.h); returns the HTTP status, body into *body (malloc()ed). */
static int http(const char *method, int port, const char *path,
                const char *data, char **body)
{
	struct th_resp r;
	int status = th_http(port, method, path, data, NULL, &r);
	if (body != NULL) {
		*body = r.body;
		r.body = NULL;
	}
	th_resp_free(&r);
	return status;
}

TEST_T(post_to_the_publish_handler_reaches_mosquitto_sub, 40)
{
	struct th_broker b;
	struct th_sub sub;
	struct th_xsrv s;
	char *body;
	th_broker_sub_start(&b, NULL, &sub, "demo/lamp", 1, "-q 1");
	server_start(&s, &b, NULL);
	ASSERT(WAIT_UNTIL(th_count_lines(s.log, "connected to") == 1, 10000));
	/* The port accepts before the example's own route is in place. */
	ASSERT(WAIT_UNTIL(th_count_lines(s.log, "serving") == 1, 10000));
	ASSERT_EQ(http("POST", s.port, "/api/publish/demo/lamp", "on", &body), 200);
	ASSERT_CONTAINS(body, "{\"id\":");
	free(body);
	th_sub_expect(&sub, 10000, "demo/lamp on");
	/* Wrong method, bad topic, unknown client: their own statuses. */
	ASSERT_EQ(http("GET", s.port, "/api/publish/demo/lamp", NULL, &body), 405);
	free(body);
	ASSERT_EQ(http("POST", s.port, "/api/publish/demo/%2B", "x", &body), 400);
	ASSERT_CONTAINS(body, "invalid topic");
	free(body);
	ASSERT_EQ(http("POST", s.port, "/api/publish/demo/x?client=NOPE", "x",
	               &body),
	          404);
	free(body);
	/* The route publishes under the bridge's allow list (demo/#). */
	ASSERT_EQ(http("POST", s.port, "/api/publish/other/x", "x", &body), 403);
	ASSERT_CONTAINS(body, "BRIDGE_PUBLISH_ALLOW");
	free(body);
	/* The document root is served like the stock civetweb binary does. */
	ASSERT_EQ(http("GET", s.port, "/", NULL, &body), 200);
	ASSERT_CONTAINS(body, "hello from the document root");
	free(body);
	th_kill(s.pid, SIGTERM);
}

TEST_T(a_mosquitto_pub_message_reaches_the_server_log, 40)
{
	struct th_broker b;
	struct th_xsrv s;
	th_broker_start(&b, NULL);
	server_start(&s, &b, NULL);
	ASSERT(WAIT_UNTIL(th_count_lines(s.log, "connected to") == 1, 10000));
	/* Wait until the SUBSCRIBE from the configuration is in place. */
	ASSERT(WAIT_UNTIL(th_count_lines(b.log, "demo/#") >= 1, 10000));
	th_pub(&b, "demo/hello", "hi there", 1, 0, NULL);
	ASSERT(WAIT_UNTIL(th_count_lines(s.log, "message on 'demo/hello'") == 1,
	                  10000));
	ASSERT_EQ(th_count_lines(s.log, "hi there"), 1);
	th_kill(s.pid, SIGTERM);
}

TEST_T(sigterm_and_sigint_stop_the_server_cleanly_without_the_will, 40)
{
	struct th_broker b;
	struct th_sub sub;
	struct th_xsrv s;
	th_broker_sub_start(&b, NULL, &sub, "demo/status", 0, "-q 1");
	const char *will = "MQTT_LAST_WILL_TOPIC demo/status\n"
	                   "MQTT_LAST_WILL_MESSAGE offline\n"
	                   "MQTT_BIRTH_TOPIC demo/status\n"
	                   "MQTT_BIRTH_MESSAGE online\n";
	for (int round = 0; round < 2; round++) {
		server_start(&s, &b, will);
		ASSERT(WAIT_UNTIL(th_count_lines(sub.out, "demo/status online") ==
		                      round + 1,
		                  10000));
		kill(s.pid, round == 0 ? SIGTERM : SIGINT);
		ASSERT_EQ(th_wait_exit(s.pid, 15000), 0);
		ASSERT_EQ(th_count_lines(s.log, "stopped"), 2); /* "(stopped)", "stopped" */
	}
	/* A probe proves the subscriber saw everything the broker sent. */
	th_pub(&b, "demo/status", "probe", 1, 0, NULL);
	ASSERT(WAIT_UNTIL(th_count_lines(sub.out, "demo/status probe") == 1, 5000));
	ASSERT_EQ(th_count_lines(sub.out, "offline"), 0);
	th_sub_stop(&sub);
}

TEST_T(sigkill_makes_the_broker_send_the_will, 40)
{
	struct th_broker b;
	struct th_sub sub;
	struct th_xsrv s;
	th_broker_sub_start(&b, NULL, &sub, "demo/status", 2, "-q 1");
	server_start(&s, &b,
	             "MQTT_LAST_WILL_TOPIC demo/status\n"
	             "MQTT_LAST_WILL_MESSAGE offline\n"
	             "MQTT_BIRTH_TOPIC demo/status\n"
	             "MQTT_BIRTH_MESSAGE online\n");
	ASSERT(WAIT_UNTIL(th_count_lines(sub.out, "demo/status online") == 1,
	                  10000));
	th_kill(s.pid, SIGKILL);
	ASSERT_EQ(th_sub_wait(&sub, 10000), 0);
	ASSERT_EQ(th_count_lines(sub.out, "demo/status offline"), 1);
}

TEST_T(a_bad_configuration_exits_1_naming_the_key_and_value, 40)
{
	struct th_xsrv s;
	char conf[512], log[512];
	const char *cases[][2] = {
	    {"MQTT_KEEPALIVE soon\n", "MQTT_KEEPALIVE: 'soon' is not"},
	    {"MQTT_BROKR_URL x\n", "MQTT_BROKR_URL: unknown option"},
	    {"no_such_option 1\n", "unknown option 'no_such_option'"},
	    {"MQTT_PROTOCOL_VERSION 6\n", "MQTT_PROTOCOL_VERSION: '6' is not"},
	    {"listening_ports\n", "has no value"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[1024], name[64];
		snprintf(text, sizeof(text), "MQTT_BROKER_URL tcp://127.0.0.1:1\n%s",
		         cases[i][0]);
		snprintf(name, sizeof(name), "bad-%zu.conf", i);
		th_path(conf, sizeof(conf), name);
		th_write_file(conf, text);
		snprintf(name, sizeof(name), "bad-%zu.log", i);
		th_path(log, sizeof(log), name);
		const char *argv[] = {th_example_bin(), conf, NULL};
		ASSERT_EQ(th_run(argv, log, 15000), 1);
		char *out = th_read_file(log, NULL);
		ASSERT_CONTAINS(out, cases[i][1]);
		free(out);
	}
	/* Nothing listening and CONNECT_ASYNC false: start fails, exit 1. */
	int dead = th_free_port();
	char extra[128];
	snprintf(extra, sizeof(extra),
	         "MQTT_CONNECT_ASYNC false\nMQTT_CONNECTION_TIMEOUT 1\n");
	struct th_broker fake = {0};
	snprintf(fake.url, sizeof(fake.url), "tcp://127.0.0.1:%d", dead);
	s.port = 0;
	server_start(&s, &fake, extra);
	ASSERT_EQ(th_wait_exit(s.pid, 15000), 1);
	ASSERT_EQ(th_count_lines(s.log, "cannot connect to"), 1);
}

TEST_T(command_line_options_override_the_file, 40)
{
	struct th_broker b;
	struct th_xsrv s;
	char log[512], port[32];
	th_broker_start(&b, NULL);
	server_start(&s, &b, NULL);
	th_kill(s.pid, SIGTERM);
	int p2 = th_free_port();
	snprintf(port, sizeof(port), "127.0.0.1:%d", p2);
	th_path(log, sizeof(log), "override.log");
	const char *argv[] = {th_example_bin(), s.conf, "-listening_ports", port,
	                      "-MQTT_CLIENT_ID", "from-command-line", NULL};
	pid_t pid = th_spawn(argv, log);
	ASSERT(th_wait_port(p2, 10000));
	ASSERT(WAIT_UNTIL(th_count_lines(log, "as 'from-command-line'") == 1,
	                  10000));
	ASSERT(WAIT_UNTIL(th_count_lines(log, "serving") == 1, 10000));
	char *body;
	ASSERT_EQ(http("POST", p2, "/api/publish/demo/x", "1", &body), 200);
	free(body);
	th_kill(pid, SIGTERM);
}
