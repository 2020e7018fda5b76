/*
 * civetweb_mqtt.hpp on a real CivetServer and a real mosquitto: the option
 * split, std::function handlers with string_view topics and payloads,
 * publishing from a CivetHandler, a handler that throws, and the
 * documented destruction order with a request in flight at shutdown.
 * Built with g++ -std=c++17 (make test, make asan).
 */
#include "civetweb_mqtt.hpp"

#include <CivetServer.h>

#include <atomic>
#include <csignal>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

extern "C" {
#include "util.h"
}

namespace {

/* "listening_ports" and a free port, the documents of no directory. */
std::vector<std::string> web_options(int port)
{
	return {"listening_ports", "127.0.0.1:" + std::to_string(port),
	        "num_threads", "4"};
}

struct seen {
	std::mutex mu;
	std::vector<std::string> lines;
	void add(std::string s)
	{
		std::lock_guard<std::mutex> g(mu);
		lines.push_back(std::move(s));
	}
	bool has(const std::string &s)
	{
		std::lock_guard<std::mutex> g(mu);
		for (const std::string &l : lines)
			if (l == s)
				return true;
		return false;
	}
};

/* POST /publish/<topic>: the body, published at QoS 1. */
class publish_handler : public CivetHandler {
public:
	explicit publish_handler(civetweb_mqtt::client &c) : mqtt_(c) {}
	bool handlePost(CivetServer *, struct mg_connection *conn) override
	{
		const mg_request_info *ri = mg_get_request_info(conn);
		std::string body = CivetServer::getPostData(conn);
		int id = mqtt_.publish(ri->local_uri + 9, body, 1);
		mg_send_http_ok(conn, "text/plain", 0);
		return id > 0;
	}

private:
	civetweb_mqtt::client &mqtt_;
};

/* curl -X POST; returns its exit status. */
int post(int port, const char *path, const char *body)
{
	char url[256];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
	const char *argv[] = {"curl", "-sf", "-X", "POST", "--data-binary", body,
	                      url, nullptr};
	return th_run(argv, nullptr, 20000);
}

} // namespace

TEST(split_options_separates_civetserver_and_mqtt_options_and_names_a_typo)
{
	civetweb_mqtt::options o;
	ASSERT(civetweb_mqtt::split_options(
	    {"listening_ports", "127.0.0.1:0", "MQTT_BROKER_URL",
	     "mqtt://127.0.0.1:1", "num_threads", "2"},
	    o));
	ASSERT_EQ(o.civetweb.size(), 4);
	ASSERT_STREQ(o.civetweb[0].c_str(), "listening_ports");
	ASSERT_STREQ(o.civetweb[2].c_str(), "num_threads");
	ASSERT_EQ(o.mqtt.size(), 2);
	ASSERT_STREQ(o.mqtt[0].c_str(), "MQTT_BROKER_URL");
	ASSERT_EQ(o.prefixes.size(), 1);
	ASSERT_STREQ(o.error.c_str(), "");

	ASSERT(!civetweb_mqtt::split_options(
	    {"listening_port", "8080", "MQTT_BROKER_URL", "mqtt://127.0.0.1:1"}, o));
	ASSERT_CONTAINS(o.error.c_str(), "'listening_port'");
	ASSERT_CONTAINS(o.error.c_str(), "did you mean 'listening_ports'");
	ASSERT(!civetweb_mqtt::split_options({"num_threads"}, o));
	ASSERT_CONTAINS(o.error.c_str(), "'num_threads' has no value");
}

TEST_T(a_civetserver_program_receives_publishes_and_survives_a_throwing_handler,
       60)
{
	struct th_broker b;
	struct th_sub sub;
	seen got;
	std::atomic<int> thrown_seen{0};
	th_broker_start(&b, nullptr);
	th_sub_start(&sub, &b, "cpp/out/#", 1, "-q 1");

	/* The client first: destroyed after the server (docs/cpp.md). */
	civetweb_mqtt::client mqtt("MQTT");
	ASSERT(mqtt.valid());
	ASSERT_EQ(mqtt.on_topic("cpp/{room}/t",
	                        [&](const civetweb_mqtt::message &m) {
		                        if (m.payload == "boom")
			                        throw std::runtime_error("boom handler");
		                        got.add(m.param("room") + "=" +
		                                std::string(m.payload));
	                        }),
	          0);
	ASSERT_EQ(mqtt.on_topic("not/a/+filter+", [](const civetweb_mqtt::message &) {}),
	          MG_MQTT_ERR_FILTER);
	mqtt.on_exception([&](std::string_view what) {
		if (what == "boom handler")
			thrown_seen++;
	});

	int port = th_free_port();
	std::vector<std::string> all = web_options(port);
	all.insert(all.end(), {"MQTT_BROKER_URL", b.url, "MQTT_SUBSCRIBE", "cpp/#:1"});
	civetweb_mqtt::options o;
	ASSERT(civetweb_mqtt::split_options(all, o));
	CivetServer server(o.civetweb);
	std::string err;
	int rc = mqtt.start(server, o.mqtt, &err);
	if (rc != 0)
		th_fail(__FILE__, __LINE__, "start: %s", err.c_str());
	ASSERT(mqtt.connected());
	publish_handler ph(mqtt);
	server.addHandler("/publish/", ph);

	/* A throwing handler: caught at the boundary, reported, and the
	 * next message is delivered as usual. */
	th_pub(&b, "cpp/kitchen/t", "boom", 1, 0, nullptr);
	ASSERT(WAIT_UNTIL(thrown_seen.load() == 1, 10000));
	ASSERT_EQ(mqtt.exceptions_caught(), 1);
	th_pub(&b, "cpp/kitchen/t", "21.5", 1, 0, nullptr);
	ASSERT(WAIT_UNTIL(got.has("kitchen=21.5"), 10000));

	ASSERT_EQ(post(port, "/publish/cpp/out/lamp", "on"), 0);
	ASSERT_EQ(th_sub_wait(&sub, 10000), 0);
	char *msgs = th_sub_messages(&sub, nullptr);
	ASSERT_STREQ(msgs, "cpp/out/lamp on");
	free(msgs);
	server.removeHandler("/publish/");
}

/* GET /slow: waits until released, then publishes; late_published gets
 * 1 (queued) or 2 (refused). */
static std::atomic<int> late_published{0};

class slow_handler : public CivetHandler {
public:
	explicit slow_handler(civetweb_mqtt::client &c) : c_(c) {}
	bool handleGet(CivetServer *, struct mg_connection *conn) override
	{
		entered = 1;
		while (released.load() == 0)
			th_sleep_ms(5);
		th_sleep_ms(50); /* well into the server's shutdown */
		late_published = c_.publish("cpp/late", "still here", 1) > 0 ? 1 : 2;
		mg_send_http_ok(conn, "text/plain", 0);
		return true;
	}
	std::atomic<int> entered{0}, released{0};

private:
	civetweb_mqtt::client &c_;
};

/* A request still publishing when the program ends: with the client
 * declared before the server, the server's destructor waits for it and the
 * client is freed after (ASan reports a use after free otherwise). */
TEST_T(a_request_in_flight_at_shutdown_publishes_before_the_client_goes, 60)
{
	struct th_broker b;
	th_broker_start(&b, nullptr);
	pid_t curl = 0;
	{
		/* Declared in this order, destroyed in the reverse one. */
		civetweb_mqtt::client mqtt;
		slow_handler handler(mqtt);
		int port = th_free_port();
		CivetServer server(web_options(port));
		ASSERT_EQ(mqtt.start(server, {"MQTT_BROKER_URL", b.url}), 0);
		server.addHandler("/slow", handler);
		char url[128];
		snprintf(url, sizeof(url), "http://127.0.0.1:%d/slow", port);
		const char *argv[] = {"curl", "-s", url, nullptr};
		curl = th_spawn(argv, nullptr);
		ASSERT(WAIT_UNTIL(handler.entered.load() == 1, 10000));
		handler.released = 1;
		/* The scope ends while the request runs: the server's destructor
		 * joins its workers, then the handler and the client go. */
	}
	ASSERT_EQ(late_published.load(), 1);
	th_kill(curl, SIGTERM);
}
