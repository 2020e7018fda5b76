/*
 * The library built without the bridge (MG_MQTT_ENABLE_BRIDGE 0), as for a
 * CivetWeb compiled without WebSocket support: BRIDGE_* options are refused
 * with a sentence that says why, and the client works against a real
 * broker. (make check-nobridge shows that such a build needs none of
 * CivetWeb's WebSocket functions.)
 */
#define MG_MQTT_ENABLE_BRIDGE 0
#include "civetweb_mqtt.c" /* the build's generated file (-I) */

#include "rec.h"

#include <stdlib.h>

TEST(bridge_options_are_refused_because_the_bridge_is_not_compiled_in)
{
	static const char *const keys[] = {"MQTT_BRIDGE_PATH", "mqtt_bridge_path",
	                                   "MQTT_BRIDGE_PUBLISH_ALLOW",
	                                   "MQTT_BRIDGE_AUTH_FILE"};
	for (size_t i = 0; i < sizeof(keys) / sizeof(*keys); i++) {
		struct mg_mqtt *c = mg_mqtt_create(NULL);
		char err[256] = "";
		const char *opts[] = {"MQTT_BROKER_URL", "tcp://127.0.0.1:1", keys[i],
		                      "/mqtt", NULL};
		ASSERT_EQ(mg_mqtt_start(c, NULL, opts, err, sizeof(err)),
		          MG_MQTT_ERR_CONFIG);
		ASSERT_CONTAINS(err, "not compiled in");
		ASSERT_CONTAINS(err, "MQTT_BRIDGE_");
		ASSERT_EQ(mg_mqtt_stop(c), 0);
	}
}

TEST(the_client_without_the_bridge_subscribes_receives_and_publishes)
{
	struct th_broker b;
	struct th_sub s;
	struct rec r;
	th_broker_sub_start(&b, NULL, &s, "nb/out", 1, "-q 1");
	struct mg_mqtt *c = mg_mqtt_create(NULL);
	rec_init(&r);
	rec_attach(c, &r);
	const char *opts[] = {"MQTT_BROKER_URL", b.url, "MQTT_SUBSCRIBE", "nb/in:1",
	                      NULL};
	rec_start(c, opts);
	ASSERT(WAIT_UNTIL(rec_subs_settled(c, 1), 5000));
	REC_PUB_ARRIVES(&b, &r, "nb/in", "hello", 5000);
	ASSERT_GT(mg_mqtt_publish(c, "nb/out", "back", 4, 1, 0), 0);
	ASSERT_EQ(th_sub_wait(&s, 10000), 0);
	int n;
	char *got = th_sub_messages(&s, &n);
	ASSERT_EQ(n, 1);
	ASSERT_CONTAINS(got, "nb/out back");
	free(got);
	char status[4096];
	ASSERT_GT(mg_mqtt_status(c, status, sizeof(status)), 0);
	ASSERT_NOT_CONTAINS(status, "\"bridge\"");
	rec_stop(c, &r);
}
