/* A CivetServer program with an MQTT client (civetweb_mqtt.hpp): prints
 * home/+/temperature readings; POST /lamp publishes "on" to home/lamp.
 * Reads civetweb.conf (or the file given): CivetWeb's options and the
 * client's MQTT_* options in one file, as example/minimal/app.c does. */
#include <CivetServer.h>
#include <civetweb_mqtt.hpp>

#include <csignal>
#include <iostream>
#include <pthread.h>

/* Runs on a CivetWeb worker thread. */
class lamp_handler : public CivetHandler {
public:
	explicit lamp_handler(civetweb_mqtt::client &mqtt) : mqtt_(mqtt) {}
	bool handlePost(CivetServer *, struct mg_connection *conn) override
	{
		int id = mqtt_.publish("home/lamp", "on", 1); /* never blocks */
		if (id < 0) {
			mg_send_http_error(conn, 503, "%s", mg_mqtt_strerror(id));
			return true;
		}
		mg_send_http_ok(conn, "text/plain", 3);
		mg_write(conn, "ok\n", 3);
		return true;
	}

private:
	civetweb_mqtt::client &mqtt_;
};

int main(int argc, char **argv)
{
	/* SIGINT and SIGTERM wait for sigwait() below, also during start-up. */
	sigset_t stop;
	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &stop, nullptr);

	/* One file for both; a name nobody takes (a typo) stops it, named. */
	civetweb_mqtt::options opts;
	if (!civetweb_mqtt::split_options({}, opts,
	                                  argc > 1 ? argv[1] : "civetweb.conf")) {
		std::cerr << opts.error << "\n";
		return 1;
	}

	/* Declared in this order, destroyed in the reverse one: the server
	 * (joining its workers) before the handler and the client they use. */
	civetweb_mqtt::client mqtt("MQTT");
	mqtt.on_topic("home/+/temperature", [](const civetweb_mqtt::message &m) {
		std::cout << m.topic << ": " << m.payload << std::endl;
	});
	lamp_handler lamp(mqtt);
	mg_init_library(0);
	try {
		CivetServer server(opts.civetweb);
		std::string err;
		if (mqtt.start(server, opts.mqtt, &err) != 0) {
			std::cerr << "MQTT: " << err << "\n";
			return 1;
		}
		server.addHandler("/lamp", lamp);
		int sig;
		sigwait(&stop, &sig);
	} catch (const CivetException &e) {
		std::cerr << "cannot start the web server: " << e.what() << "\n";
		return 1;
	}
	mg_exit_library();
	return 0;
}
