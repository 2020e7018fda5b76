# What both builds of civetweb-mqtt share, defined once: the Makefile
# includes this file, CMakeLists.txt reads it (lines "NAME := value", one
# a line; no other make syntax here). The version is the header's
# (MG_MQTT_VERSION in civetweb_mqtt.h): both builds read it from there.

# The warnings of the library, the example and the tests (each build adds
# -std=c11, and -Werror: the Makefile always, CMake with
# CIVETWEB_MQTT_WERROR).
CWM_WARNINGS := -Wall -Wextra -Wpedantic

# What the library links: paho.mqtt.c's library (CMake may find another
# build of it), then the rest, on the link line of the two files and in the
# .pc's Libs.private (both builds add -latomic where 64-bit atomics need
# it).
CWM_PAHO_LIB := paho-mqtt3cs
CWM_LIBS := -lcivetweb -lcjson -lpthread

# The tests (test/<name>.c). Unit tests #include "civetweb_mqtt.c" to reach
# internals; integration tests link the library, test/util.c and
# test/mqproxy.c and use the public API.
CWM_UNIT_TESTS := test_config test_topics test_nobridge test_docs
CWM_INTEG_TESTS := test_client test_connect test_reliability test_example test_bridge test_faults test_security test_load test_logging test_packets test_chaos test_hostile test_attacks test_engine
# The tests that need no bridge (the only ones a build with
# MG_MQTT_ENABLE_BRIDGE=0 builds).
CWM_NOBRIDGE_TESTS := test_nobridge test_client test_docs test_engine
# The ones ctest runs by default in make cmake-check (a few seconds each);
# ctest -L all runs every test CMake built.
CWM_QUICK_TESTS := test_config test_topics test_nobridge test_docs test_client test_engine test_example
