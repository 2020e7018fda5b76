/*
 * A C++17 CivetServer program that uses civetweb_mqtt.hpp as a user would,
 * built by test/consumer/run.sh with CMake (find_package with the
 * civetweb-mqtt::civetweb-cpp target, pkg-config, add_subdirectory).
 * Usage: consumer_cpp <broker URL>
 * One option list for the web server and the client, split; the client
 * declared before the server; CivetServer on a free loopback port; exits 0
 * when a message it published came back through its topic handler (1 on
 * any failure, or after 30 s).
 */
#include <CivetServer.h>
#include <civetweb_mqtt.hpp>

#include <atomic>
#include <chrono>
#include <iostream>
#include <string>
#include <thread>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 2) {
		std::cerr << "usage: consumer_cpp <broker URL>\n";
		return 1;
	}
	const std::string topic = "consumer-cpp/" + std::to_string(getpid());
	civetweb_mqtt::options opts;
	if (!civetweb_mqtt::split_options({"listening_ports", "127.0.0.1:0",
	                                   "MQTT_BROKER_URL", argv[1],
	                                   "MQTT_SUBSCRIBE", topic + ":1"},
	                                  opts)) {
		std::cerr << "consumer_cpp: " << opts.error << "\n";
		return 1;
	}
	std::atomic<bool> back{false};
	civetweb_mqtt::client mqtt; /* first: destroyed after the server */
	mqtt.on_topic(topic, [&](const civetweb_mqtt::message &m) {
		back = m.payload == "hello from C++";
	});
	mg_init_library(0);
	CivetServer server(opts.civetweb);
	std::string err;
	if (mqtt.start(server, opts.mqtt, &err) != 0) {
		std::cerr << "consumer_cpp: " << err << "\n";
		return 1;
	}
	for (int i = 0; i < 60 && !back; i++) {
		if (mqtt.publish(topic, "hello from C++", 1) <= 0)
			return 1;
		std::this_thread::sleep_for(std::chrono::milliseconds(500));
	}
	std::cout << (back ? "consumer_cpp: own message came back\n"
	                   : "consumer_cpp: no message\n");
	return back ? 0 : 1;
}
