# civetweb-mqtt -- run "make help" for the targets.

# Shared with CMakeLists.txt: warnings, link flags, the test lists.
include project.mk

# The header's version (MG_MQTT_VERSION), as CMake reads it.
VERSION  := $(shell sed -n 's/^\#define MG_MQTT_VERSION "\([0-9.]*\)"/\1/p' civetweb_mqtt.h)
SOMAJOR  := $(firstword $(subst ., ,$(VERSION)))
PREFIX   ?= /usr/local
DESTDIR  ?=
LIBDIR   ?= $(PREFIX)/lib
INCDIR   ?= $(PREFIX)/include
PCDIR    ?= $(LIBDIR)/pkgconfig

CC       ?= cc
CXX      ?= c++
AR       ?= ar
CFLAGS   ?= -O2 -g
BUILD    ?= build
SAN      ?=

# Debian packages: to build, to test (brokers, certificates, HTTP, browser).
DEPS_BUILD := gcc g++ make pkg-config libc6-dev libcivetweb-dev \
              libpaho-mqtt-dev libcjson-dev
DEPS_TEST  := mosquitto mosquitto-clients openssl curl coreutils \
              chromium nodejs wrk rabbitmq-server nginx
DEPS_ALL   := $(DEPS_BUILD) $(DEPS_TEST)
# The browser test drives Debian's chromium with playwright-core from npm
# (pinned in package-lock.json; never a browser download).
NODE_STAMP := node_modules/playwright-core/package.json

WARN     := -std=c11 $(CWM_WARNINGS) -Werror
SANFLAGS := $(if $(SAN),-fsanitize=$(SAN) -fno-sanitize-recover=all -fno-omit-frame-pointer,)
# The project's own builds point compiler messages and debuggers at src/.
XCFLAGS  := $(WARN) $(CFLAGS) $(SANFLAGS) -fPIC -fvisibility=hidden -pthread \
            -DMG_MQTT_ENABLE_LINES=1

# Other builds of the dependencies: CIVETWEB_PREFIX=/opt/civetweb-1.16
# PAHO_PREFIX=/opt/paho (each with include/ and lib/; CIVETWEB_LIBDIR=,
# PAHO_LIBDIR= when the library is elsewhere, e.g. lib64). Each gives the
# include path, the library path and the rpath together, ahead of the
# system's directories and of CPPFLAGS/LDFLAGS, so that the header and the
# library always come from the same build.
comma           := ,
CIVETWEB_PREFIX ?=
PAHO_PREFIX     ?=
CIVETWEB_LIBDIR ?= $(if $(CIVETWEB_PREFIX),$(CIVETWEB_PREFIX)/lib)
PAHO_LIBDIR     ?= $(if $(PAHO_PREFIX),$(PAHO_PREFIX)/lib)
DEP_LIBDIRS     := $(strip $(CIVETWEB_LIBDIR) $(PAHO_LIBDIR))
DEP_CPPFLAGS    := $(addsuffix /include,$(addprefix -I,$(CIVETWEB_PREFIX) $(PAHO_PREFIX)))
DEP_LDFLAGS     := $(addprefix -L,$(DEP_LIBDIRS)) \
                   $(addprefix -Wl$(comma)-rpath$(comma),$(DEP_LIBDIRS))

# GNU conventions: CPPFLAGS (preprocessor), CFLAGS, LDFLAGS (before the
# objects), LDLIBS (after them) are the caller's and go on every compile
# and link below.
# Large files on 32-bit systems too (civetweb_mqtt.c defines it as well, for
# builds that only have the two files).
XCPPFLAGS := -I. -D_FILE_OFFSET_BITS=64 $(DEP_CPPFLAGS) $(CPPFLAGS)
XLDFLAGS  := $(DEP_LDFLAGS) $(LDFLAGS)
# The paho.mqtt.c library the client is built on (project.mk).
PAHO_LIB  := $(CWM_PAHO_LIB)
# -latomic where 64-bit atomics are calls into libatomic (32-bit ARM before
# ARMv7, e.g. Raspberry Pi OS's default -march=armv6+fp): a program with a
# 64-bit atomic_fetch_add that links only with it. Probed once per make
# run with the caller's compiler and flags.
ATOMIC_PROBE := \#include <stdatomic.h>\n_Atomic unsigned long long v;\nint main(int argc, char **argv) { (void)argv; atomic_store(&v, (unsigned long long)argc); return (int)atomic_fetch_add(&v, 1) + (int)atomic_exchange(&v, 2) + (int)atomic_load(&v); }\n
ATOMIC_TRY    = printf '$(ATOMIC_PROBE)' | $(CC) -std=c11 $(CFLAGS) $(LDFLAGS) -x c - -o /dev/null $(1) >/dev/null 2>&1
ifeq ($(origin LIBATOMIC),undefined)
LIBATOMIC := $(shell $(call ATOMIC_TRY) || { $(call ATOMIC_TRY,-latomic) && echo -latomic; })
endif
LIBS      := -l$(PAHO_LIB) $(CWM_LIBS) $(LIBATOMIC)
XLIBS     := $(LIBS) $(LDLIBS)

LIB_A    := libcivetweb_mqtt.a
LIB_SO   := libcivetweb_mqtt.so
EXAMPLE  := example/civetweb-mqtt

# Unit tests include civetweb_mqtt.c to reach internals; the others use the
# public API and link the library's object built with the same flags.
UNIT_TESTS  := $(CWM_UNIT_TESTS)
INTEG_TESTS := $(CWM_INTEG_TESTS)
# civetweb_mqtt.hpp on CivetServer, built with $(CXX) -std=c++17.
CXX_TESTS   := test_cpp
# A three-node RabbitMQ cluster (make test-cluster, and CI): not in make test.
CLUSTER_TESTS := test_cluster
TESTS       := $(UNIT_TESTS) $(INTEG_TESTS) $(CXX_TESTS)
TEST_BINS   := $(addprefix $(BUILD)/test/,$(TESTS))
# Run with node by test/run.sh, after the C programs.
BROWSER_TESTS := test/browser/dashboard.test.mjs test/browser/https.test.mjs
# Shell tests, run with sh by test/run.sh: every C block of README.md and
# docs/*.md compiled (the README's program run against a real broker).
README_TESTS  := test/test_readme.sh

.PHONY: all deps node-deps test check test-cluster asan tsan install uninstall run soak cross \
        check-generated check-nobridge strict test-consumer cmake-check \
        fuzz fuzz-quick fuzz-bins valgrind \
        clean help exports test-bins cxx-header test-readme test-https test-paho-hp

all: $(LIB_A) $(LIB_SO) $(EXAMPLE)

help:
	@echo "make            build $(LIB_A), $(LIB_SO) and $(EXAMPLE)"
	@echo "make deps       install missing Debian packages (apt-get) and"
	@echo "                node_modules (npm ci) for the browser test"
	@echo "make run        deps + build, start a local mosquitto (unless one"
	@echo "                answers) and the example server on :8080"
	@echo "make test       deps + build + every test (alias: make check)"
	@echo "make soak       the chaos test (test_chaos) with a new random seed"
	@echo "                each run, SOAK_SEEDS=10 seeds (or SOAK_MINUTES=N),"
	@echo "                CHAOS_SECONDS=20 a seed; prints failing seeds and"
	@echo "                how to rerun them"
	@echo "make test-cluster  a three-node RabbitMQ cluster: cross-node"
	@echo "                delivery, a node killed under load (a few minutes)"
	@echo "make test-readme  every C block of README.md and docs/ compiled,"
	@echo "                the README's program run against a real broker"
	@echo "make test-https the bridge behind nginx (example/nginx.conf) over"
	@echo "                https:// and wss://, the dashboard in chromium"
	@echo "make asan       the tests under AddressSanitizer + UBSan"
	@echo "make tsan       the tests under ThreadSanitizer"
	@echo "make install    PREFIX=/usr/local DESTDIR= : library, header, .pc"
	@echo "make exports    check that only mg_mqtt_* symbols are exported"
	@echo "make check-generated  civetweb_mqtt.c is what src/ generates"
	@echo "make check-nobridge   the build without the bridge needs no"
	@echo "                CivetWeb WebSocket symbols (make test runs it)"
	@echo "make strict     library, example and tests with -Wpedantic,"
	@echo "                under gcc and clang (build/strict-*)"
	@echo "make test-consumer  a small program built three ways with CMake"
	@echo "                (find_package, pkg-config, add_subdirectory), in C"
	@echo "                and in C++ on CivetServer, and example/cpp, each"
	@echo "                run against a real mosquitto"
	@echo "make cmake-check  the CMake build, its quick ctest tests, and a"
	@echo "                check that it compiles an edited part of src/"
	@echo "make cross      Raspberry Pi builds: armv6 hard-float, armv7, arm64"
	@echo "                with Debian's cross toolchains (apt-get), and the"
	@echo "                config, topics, client and persistence tests under"
	@echo "                qemu-user (CROSS_ARCHS=, CROSS_TEST_SECONDS=)"
	@echo "make test-paho-hp  Debian's paho.mqtt.c version built with"
	@echo "                PAHO_HIGH_PERFORMANCE (scripts/paho-hp.sh, into"
	@echo "                build/paho-hp once), the library and the config,"
	@echo "                client, engine, reliability, packets tests on it"
	@echo "CIVETWEB_PREFIX=, PAHO_PREFIX=  build against other builds of the"
	@echo "                dependencies; CPPFLAGS, CFLAGS, LDFLAGS, LDLIBS apply"
	@echo "make bench      benchmarks against their baselines (about 12 min);"
	@echo "                writes bench/RESULTS.md and bench/results.png;"
	@echo "                PAHO_PREFIX=/path: against the paho installed there"
	@echo "make bench-quick  the same, one round each, smaller (under 3 min)"
	@echo "make fuzz       libFuzzer targets (clang, ASan+UBSan) in build/fuzz,"
	@echo "                FUZZ_SECONDS=60 each on a copy of fuzz/corpus/;"
	@echo "                fails on any crash, failed check or leak"
	@echo "make fuzz-quick the same, 10 s each (what CI runs)"
	@echo "make valgrind   fault tests (stop in a flood, silent network, full"
	@echo "                queue) and the example server under valgrind;"
	@echo "                fails on any memory error or definite leak"
	@echo "make clean      remove build output"

# nodesource's nodejs ships npm; Debian's nodejs needs the npm package, which
# conflicts with nodesource's: installed only when there is no npm command.
deps:
	@./scripts/deps.sh $(DEPS_ALL)
	@command -v npm >/dev/null 2>&1 || ./scripts/deps.sh npm
	@$(MAKE) --no-print-directory node-deps

node-deps: $(NODE_STAMP)

# npm ci when playwright-core is missing or the lock file is newer. npm
# gives unpacked files old times: touch the stamp so make sees it is fresh.
$(NODE_STAMP): package-lock.json
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
	@touch $@

# ---- library ------------------------------------------------------------
# civetweb_mqtt.c is generated from the parts in src/ (and committed, for
# users who drop the two files into their build): edit src/, run make.
SRC_PARTS := $(wildcard src/*.c src/*.h)

civetweb_mqtt.c: scripts/amalgamate.sh $(SRC_PARTS)
	./scripts/amalgamate.sh > $@.tmp && mv $@.tmp $@

# Fails when the committed civetweb_mqtt.c is not what src/ generates.
check-generated:
	@./scripts/amalgamate.sh --check civetweb_mqtt.c

# The client without the bridge (MG_MQTT_ENABLE_BRIDGE=0) needs nothing of
# CivetWeb's WebSocket support: no mg_websocket_* / mg_set_websocket_*.
$(BUILD)/civetweb_mqtt_nobridge.o: civetweb_mqtt.c civetweb_mqtt.h
	@mkdir -p $(BUILD)
	$(CC) $(XCPPFLAGS) $(XCFLAGS) -DMG_MQTT_ENABLE_BRIDGE=0 -c $< -o $@

check-nobridge: $(BUILD)/civetweb_mqtt_nobridge.o
	@ws=$$(nm -u $< | grep -i websocket || true); \
	if [ -n "$$ws" ]; then echo "no-bridge build needs: $$ws"; exit 1; fi; \
	echo "no-bridge build: no WebSocket symbols of CivetWeb needed"

$(BUILD)/civetweb_mqtt.o: civetweb_mqtt.c civetweb_mqtt.h
	@mkdir -p $(BUILD)
	$(CC) $(XCPPFLAGS) $(XCFLAGS) -c $< -o $@

$(LIB_A): $(BUILD)/civetweb_mqtt.o
	rm -f $@
	$(AR) rcs $@ $<

$(LIB_SO): $(BUILD)/civetweb_mqtt.o
	$(CC) $(XCFLAGS) $(XLDFLAGS) -shared -Wl,-soname,$(notdir $(LIB_SO)).$(SOMAJOR) -o $@ $< \
	    $(XLIBS)

$(EXAMPLE): example/main.c $(BUILD)/civetweb_mqtt.o civetweb_mqtt.h
	$(CC) $(XCPPFLAGS) $(XCFLAGS) $(XLDFLAGS) -o $@ example/main.c \
	    $(BUILD)/civetweb_mqtt.o $(XLIBS)

exports: $(LIB_SO)
	@bad=$$(nm -D --defined-only $(LIB_SO) | awk '$$2 ~ /[TDBR]/ {print $$3}' \
	        | grep -v '^mg_mqtt_' || true); \
	if [ -n "$$bad" ]; then echo "stray exports: $$bad"; exit 1; fi; \
	echo "exports: only mg_mqtt_* ($$(nm -D --defined-only $(LIB_SO) | grep -c ' T mg_mqtt_') functions)"

# ---- tests --------------------------------------------------------------
TEST_COMMON := test/harness.h test/util.h $(BUILD)/test/util.o
# Shared by the integration tests: curl requests and the bridge's answers,
# WebSocket clients.
TEST_HTTP   := $(BUILD)/test/http.o $(BUILD)/test/ws.o
# The MQTT-aware fault proxy, linked into the integration tests.
MQPROXY     := $(BUILD)/test/mqproxy.o

$(BUILD)/test/util.o: test/util.c test/util.h test/harness.h
	@mkdir -p $(BUILD)/test
	$(CC) $(XCPPFLAGS) -D_GNU_SOURCE -Itest $(XCFLAGS) -c $< -o $@

$(TEST_HTTP): $(BUILD)/test/%.o: test/%.c test/%.h test/harness.h test/util.h
	@mkdir -p $(BUILD)/test
	$(CC) $(XCPPFLAGS) -D_GNU_SOURCE -Itest $(XCFLAGS) -c $< -o $@

$(MQPROXY): test/mqproxy.c test/mqproxy.h test/harness.h test/util.h \
    civetweb_mqtt.h
	@mkdir -p $(BUILD)/test
	$(CC) $(XCPPFLAGS) -D_GNU_SOURCE -Itest $(XCFLAGS) -c $< -o $@

$(addprefix $(BUILD)/test/,$(UNIT_TESTS)): $(BUILD)/test/%: test/%.c \
    civetweb_mqtt.c civetweb_mqtt.h $(TEST_COMMON)
	$(CC) $(XCPPFLAGS) -Itest $(XCFLAGS) $(XLDFLAGS) -o $@ $< \
	    $(BUILD)/test/util.o $(XLIBS)

$(addprefix $(BUILD)/test/,$(INTEG_TESTS) $(CLUSTER_TESTS)): $(BUILD)/test/%: test/%.c \
    $(BUILD)/civetweb_mqtt.o $(TEST_COMMON) $(MQPROXY) $(TEST_HTTP)
	$(CC) $(XCPPFLAGS) -D_GNU_SOURCE -Itest $(XCFLAGS) $(XLDFLAGS) -o $@ $< \
	    $(BUILD)/test/util.o $(TEST_HTTP) $(MQPROXY) $(BUILD)/civetweb_mqtt.o $(XLIBS)

# The C++ wrapper's tests: the harness and util.o are C, the test C++17
# against CivetServer (libcivetweb-cpp).
CXXWARN := -std=c++17 -Wall -Wextra -Werror
$(BUILD)/test/test_cpp: test/test_cpp.cpp civetweb_mqtt.hpp \
    $(BUILD)/civetweb_mqtt.o $(TEST_COMMON)
	$(CXX) $(XCPPFLAGS) -D_GNU_SOURCE -Itest $(CXXWARN) $(CFLAGS) $(SANFLAGS) \
	    -pthread $(XLDFLAGS) -o $@ $< $(BUILD)/test/util.o \
	    $(BUILD)/civetweb_mqtt.o -lcivetweb-cpp $(XLIBS)

# C++ users include the header too: compile it once as C++.
cxx-header:
	@echo '#include "civetweb_mqtt.h"' | $(CXX) -x c++ -std=c++11 -Wall \
	    -Wextra -Wpedantic -Werror $(XCPPFLAGS) -fsyntax-only -
	@echo '#include "civetweb_mqtt.hpp"' | $(CXX) -x c++ -std=c++17 -Wall \
	    -Wextra -Wpedantic -Werror $(XCPPFLAGS) -fsyntax-only -

test-bins: $(TEST_BINS) $(EXAMPLE) cxx-header check-nobridge

test check: deps
	@$(MAKE) --no-print-directory all test-bins
	@BUILD=$(BUILD) CC=$(CC) LIBS="$(XLIBS)" ./test/run.sh $(TESTS) $(README_TESTS) \
	    $(BROWSER_TESTS)

# The bridge behind Debian's nginx (example/nginx.conf) over https:// and
# wss://, and the dashboard in chromium over https.
test-https: deps
	@$(MAKE) --no-print-directory $(EXAMPLE)
	@BUILD=$(BUILD) ./test/run.sh test/browser/https.test.mjs

# The README's C blocks as printed: the program built and run, fragments
# compiled (test/test_readme.sh).
test-readme: deps
	@$(MAKE) --no-print-directory $(BUILD)/civetweb_mqtt.o
	@BUILD=$(BUILD) CC=$(CC) LIBS="$(XLIBS)" ./test/run.sh $(README_TESTS)

# Many seeds of the chaos test (test/soak.sh): SOAK_SEEDS of them, or as
# many as SOAK_MINUTES allows when that is given.
SOAK_SEEDS    ?= 10
SOAK_MINUTES  ?=
CHAOS_SECONDS ?= 20
soak: deps
	@$(MAKE) --no-print-directory $(BUILD)/test/test_chaos
	@BUILD=$(BUILD) SOAK_SEEDS=$(SOAK_SEEDS) SOAK_MINUTES=$(SOAK_MINUTES) \
	    CHAOS_SECONDS=$(CHAOS_SECONDS) ./test/soak.sh

# Three RabbitMQ 3.10 nodes clustered on loopback, two example servers,
# a node killed under a stream of POSTs (a few minutes).
test-cluster: deps
	@$(MAKE) --no-print-directory all $(BUILD)/test/test_cluster
	@BUILD=$(BUILD) ./test/run.sh $(CLUSTER_TESTS)

# Sanitizer builds live in their own directories, example included.
asan: deps
	@$(MAKE) --no-print-directory BUILD=build/asan SAN=address,undefined \
	    EXAMPLE=build/asan/civetweb-mqtt test-bins
	@BUILD=build/asan EXAMPLE_BIN=build/asan/civetweb-mqtt \
	    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:suppressions=$(CURDIR)/test/asan.supp \
	    TEST_TIMEOUT_SCALE=3 \
	    ./test/run.sh $(TESTS) $(BROWSER_TESTS)

tsan: deps
	@$(MAKE) --no-print-directory BUILD=build/tsan SAN=thread \
	    EXAMPLE=build/tsan/civetweb-mqtt test-bins
	@BUILD=build/tsan EXAMPLE_BIN=build/tsan/civetweb-mqtt \
	    TSAN_OPTIONS="suppressions=$(CURDIR)/test/tsan.supp halt_on_error=1 second_deadlock_stack=1" \
	    TEST_TIMEOUT_SCALE=5 ./test/run.sh $(TESTS) $(BROWSER_TESTS)

# ---- paho built for speed ------------------------------------------------
# scripts/paho-hp.sh builds the paho.mqtt.c version Debian ships with
# PAHO_HIGH_PERFORMANCE into build/paho-hp (once; PAHO_HP_SOURCE=DIR where
# apt-get source cannot get it). The shared library and these tests are
# built against it in build/test-paho-hp with the example server that
# test_packets starts (PAHO_PREFIX: include path, library path and rpath),
# each checked with ldd to load that paho, then run.
PAHO_HP_PREFIX := build/paho-hp
PAHO_HP_BUILD  := build/test-paho-hp
PAHO_HP_TESTS  := test_config test_client test_engine test_reliability test_packets
PAHO_HP_EXAMPLE := $(PAHO_HP_BUILD)/civetweb-mqtt
PAHO_HP_BINS   := $(PAHO_HP_BUILD)/$(LIB_SO) $(PAHO_HP_EXAMPLE) \
                  $(addprefix $(PAHO_HP_BUILD)/test/,$(PAHO_HP_TESTS))

test-paho-hp:
	@./scripts/deps.sh $(DEPS_BUILD) mosquitto mosquitto-clients openssl curl
	@./scripts/paho-hp.sh $(PAHO_HP_PREFIX)
	@$(MAKE) --no-print-directory BUILD=$(PAHO_HP_BUILD) \
	    PAHO_PREFIX=$(CURDIR)/$(PAHO_HP_PREFIX) \
	    LIB_SO=$(PAHO_HP_BUILD)/$(LIB_SO) EXAMPLE=$(PAHO_HP_EXAMPLE) \
	    $(PAHO_HP_BINS)
	@for b in $(PAHO_HP_BINS); do \
	    l=$$(ldd $$b | awk '$$1 ~ /^libpaho-mqtt3cs[.]/ { print $$3 }'); \
	    case $$l in \
	    $(CURDIR)/$(PAHO_HP_PREFIX)/lib/*) ;; \
	    *) echo "$$b loads paho from '$$l', not $(PAHO_HP_PREFIX)/lib"; exit 1 ;; \
	    esac; \
	done; echo "ldd: $(words $(PAHO_HP_BINS)) binaries load $(PAHO_HP_PREFIX)/lib/libpaho-mqtt3cs.so.1"
	@BUILD=$(PAHO_HP_BUILD) EXAMPLE_BIN=$(PAHO_HP_EXAMPLE) \
	    ./test/run.sh $(PAHO_HP_TESTS)

# ---- strict builds, CMake -----------------------------------------------
# The library, the example and the tests with -Wpedantic under gcc and clang
# (each in build/strict-<cc>; nothing is run).
STRICT_CCS  := gcc clang
STRICT_WARN := -std=c11 $(CWM_WARNINGS) -Werror

strict:
	@./scripts/deps.sh $(DEPS_BUILD) clang
	@for cc in $(STRICT_CCS); do \
	    echo "== strict: $$cc $(STRICT_WARN)"; \
	    $(MAKE) --no-print-directory CC=$$cc BUILD=build/strict-$$cc \
	        WARN="$(STRICT_WARN)" LIB_A=build/strict-$$cc/$(LIB_A) \
	        LIB_SO=build/strict-$$cc/$(LIB_SO) \
	        EXAMPLE=build/strict-$$cc/civetweb-mqtt \
	        build/strict-$$cc/$(LIB_A) build/strict-$$cc/$(LIB_SO) test-bins \
	        || exit 1; \
	done; echo "strict: clean under $(STRICT_CCS)"

# CMake, the second supported build (see CMakeLists.txt). CMAKE_ARGS= adds
# configure arguments (-DCMAKE_PREFIX_PATH=..., -DCIVETWEB_MQTT_BRIDGE=OFF).
DEPS_CMAKE := cmake libssl-dev
CMAKE_ARGS ?=

# Configures and builds everything with CMake in build/cmake (the library
# from src/, the example, every test of project.mk), runs the quick tests
# (CWM_QUICK_TESTS, ctest -L quick; ctest -L all runs them all), then
# checks that an edit of a part under src/ reaches the CMake build
# (scripts/cmake-touch-check.sh, in a copy of the tree).
cmake-check:
	@./scripts/deps.sh $(DEPS_BUILD) $(DEPS_CMAKE) mosquitto mosquitto-clients curl
	cmake -S . -B build/cmake -DCIVETWEB_MQTT_WERROR=ON $(CMAKE_ARGS)
	cmake --build build/cmake -j2
	cd build/cmake && ctest --output-on-failure -L quick
	@CMAKE_ARGS="$(CMAKE_ARGS)" ./scripts/cmake-touch-check.sh build/cmake-touch

# A user's program built against the library with CMake (installed package
# via find_package, pkg-config, add_subdirectory) and with the cc
# lines of docs/building.md, each run against a real mosquitto: test/consumer/run.sh.
test-consumer:
	@./scripts/deps.sh $(DEPS_BUILD) $(DEPS_CMAKE) mosquitto mosquitto-clients curl
	@CMAKE_ARGS="$(CMAKE_ARGS)" BUILD=$(BUILD) ./test/consumer/run.sh

# The Raspberry Pi builds and their tests under qemu-user: scripts/cross.sh
# (docs/raspberry-pi.md). Build output in build/cross-<arch>.
cross:
	@./scripts/cross.sh

# ---- benchmarks -----------------------------------------------------------
# Built without sanitizers, with the library's own object compiled for the
# bench. PAHO_PREFIX=/path runs the whole bench against a paho.mqtt.c
# installed there (include/, lib/; found at run time through the rpath):
# the bare-paho baseline and civetweb-mqtt both link it, in their own
# build directory. Without it, Debian's libpaho-mqtt-dev.
# civetweb: the stock binary (the idle and memory references); linux-perf:
# futex calls per request (perf stat on the syscalls:sys_enter_futex
# tracepoint).
DEPS_BENCH   := wrk gnuplot-nox python3 libmosquitto-dev valgrind civetweb \
                linux-perf
PAHO_PREFIX  ?=
BENCH_DIR    := build/bench$(if $(PAHO_PREFIX),-paho$(subst /,_,$(abspath $(PAHO_PREFIX))))
BENCH_PAHO_I := $(if $(PAHO_PREFIX),-I$(abspath $(PAHO_PREFIX))/include)
BENCH_RPATH  := -Wl,-rpath,$(abspath $(PAHO_PREFIX))/lib
BENCH_PAHO_L := $(if $(PAHO_PREFIX),-L$(abspath $(PAHO_PREFIX))/lib $(BENCH_RPATH))
BENCH_TOOLS  := bpub bcount bws
BENCH_BASE   := recv_paho recv_mosq bstart_paho
BENCH_HAND   := bhand_raw bhand_mosq bhand_paho bidle_mosq
BENCH_LIBBIN := recv_cwm bserver bstart_cwm civetweb-mqtt
BENCH_BINS   := $(addprefix $(BENCH_DIR)/,$(BENCH_TOOLS) $(BENCH_BASE) \
                $(BENCH_HAND) $(BENCH_LIBBIN) bdispatch)
BENCH_CFLAGS := -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -pthread \
                -DMG_MQTT_ENABLE_LINES=1 $(BENCH_PAHO_I)
BENCH_LIBS   := $(BENCH_PAHO_L) $(LIBS)

$(addprefix $(BENCH_DIR)/,$(BENCH_TOOLS)): $(BENCH_DIR)/%: bench/%.c \
    bench/mqttraw.h
	@mkdir -p $(BENCH_DIR)
	$(CC) $(BENCH_CFLAGS) -o $@ $<

$(BENCH_DIR)/recv_paho: bench/recv_paho.c bench/recv_common.h bench/mqttraw.h
	@mkdir -p $(BENCH_DIR)
	$(CC) $(BENCH_CFLAGS) -o $@ $< $(BENCH_PAHO_L) -lpaho-mqtt3as

$(BENCH_DIR)/recv_mosq: bench/recv_mosq.c bench/recv_common.h bench/mqttraw.h
	@mkdir -p $(BENCH_DIR)
	$(CC) $(BENCH_CFLAGS) -o $@ $< -lmosquitto

$(BENCH_DIR)/bstart_paho: bench/bstart.c
	@mkdir -p $(BENCH_DIR)
	$(CC) $(BENCH_CFLAGS) -DBSTART_PAHO -o $@ $< $(BENCH_PAHO_L) -lpaho-mqtt3as

$(BENCH_DIR)/bstart_cwm: bench/bstart.c $(BENCH_DIR)/civetweb_mqtt.o
	@mkdir -p $(BENCH_DIR)
	$(CC) $(BENCH_CFLAGS) -I. -o $@ $< $(BENCH_DIR)/civetweb_mqtt.o $(BENCH_LIBS)

# The baselines of publishing from a request handler (bench/bhand.c): the
# physical limit (one raw socket), libmosquitto and paho used by hand.
BHAND_DEPS := bench/bhand.c bench/hsrv.h bench/mqttraw.h

$(BENCH_DIR)/bhand_raw: $(BHAND_DEPS)
	@mkdir -p $(BENCH_DIR)
	$(CC) $(BENCH_CFLAGS) -DBHAND_RAW -o $@ $< -lcivetweb

$(BENCH_DIR)/bhand_mosq: $(BHAND_DEPS)
	@mkdir -p $(BENCH_DIR)
	$(CC) $(BENCH_CFLAGS) -DBHAND_MOSQ -o $@ $< -lcivetweb -lmosquitto

$(BENCH_DIR)/bhand_paho: $(BHAND_DEPS)
	@mkdir -p $(BENCH_DIR)
	$(CC) $(BENCH_CFLAGS) -DBHAND_PAHO -o $@ $< $(BENCH_PAHO_L) \
	    -lpaho-mqtt3as -lcivetweb

$(BENCH_DIR)/bidle_mosq: bench/bidle_mosq.c
	@mkdir -p $(BENCH_DIR)
	$(CC) $(BENCH_CFLAGS) -o $@ $< -lmosquitto

# The example server of the idle and memory rows, linked like the rest of
# the bench (the same paho).
$(BENCH_DIR)/civetweb-mqtt: example/main.c $(BENCH_DIR)/civetweb_mqtt.o \
    civetweb_mqtt.h
	@mkdir -p $(BENCH_DIR)
	$(CC) $(filter-out -D_GNU_SOURCE,$(BENCH_CFLAGS)) -I. -o $@ $< \
	    $(BENCH_DIR)/civetweb_mqtt.o $(BENCH_LIBS)

$(BENCH_DIR)/civetweb_mqtt.o: civetweb_mqtt.c civetweb_mqtt.h
	@mkdir -p $(BENCH_DIR)
	$(CC) $(WARN) $(CFLAGS) $(BENCH_PAHO_I) -fvisibility=hidden -pthread \
	    -DMG_MQTT_ENABLE_LINES=1 -c $< -o $@

$(addprefix $(BENCH_DIR)/,recv_cwm bserver): $(BENCH_DIR)/%: bench/%.c \
    $(BENCH_DIR)/civetweb_mqtt.o bench/recv_common.h bench/mqttraw.h \
    bench/hsrv.h
	@mkdir -p $(BENCH_DIR)
	$(CC) $(BENCH_CFLAGS) -I. -o $@ $< $(BENCH_DIR)/civetweb_mqtt.o $(BENCH_LIBS)

$(BENCH_DIR)/bdispatch: bench/bdispatch.c civetweb_mqtt.c civetweb_mqtt.h
	@mkdir -p $(BENCH_DIR)
	$(CC) $(filter-out -D_GNU_SOURCE,$(BENCH_CFLAGS)) -I. -o $@ $< $(BENCH_LIBS)

bench-bins: $(BENCH_BINS)

# BENCH_ARGS=--only=inbound,startup runs just those scenarios (of inbound,
# latency, http, dispatch, fanout, memory, two, startup, idle; no
# RESULTS.md).
BENCH_ARGS ?=
BENCH_RUN := BENCH_BIN=$(BENCH_DIR) \
             PAHO_PREFIX=$(if $(PAHO_PREFIX),$(abspath $(PAHO_PREFIX))) \
             python3 bench/run.py

bench: deps
	@./scripts/deps.sh $(DEPS_BENCH)
	@$(MAKE) --no-print-directory bench-bins
	@$(BENCH_RUN) $(BENCH_ARGS)

bench-quick: deps
	@./scripts/deps.sh $(DEPS_BENCH)
	@$(MAKE) --no-print-directory bench-bins
	@$(BENCH_RUN) --quick $(BENCH_ARGS)

# ---- fuzzing --------------------------------------------------------------
# libFuzzer targets that include civetweb_mqtt.c (fuzz/*.c), built with
# clang under ASan + UBSan. fuzz/run.sh runs each for FUZZ_SECONDS on a
# scratch copy of its seed corpus (build/fuzz/work/); finds go to
# build/fuzz/artifacts/.
DEPS_FUZZ    := clang-14 libclang-rt-14-dev
FUZZ_CC      ?= clang-14
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := fuzz_conf fuzz_topics fuzz_bridge_json
FUZZ_BINS    := $(addprefix build/fuzz/,$(FUZZ_TARGETS))
FUZZ_CFLAGS  := -std=c11 -Wall -Wextra -Werror -g -O1 -DMG_MQTT_ENABLE_LINES=1 \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
                -fno-omit-frame-pointer

$(FUZZ_BINS): build/fuzz/%: fuzz/%.c fuzz/fuzz_common.h civetweb_mqtt.c \
    civetweb_mqtt.h
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(XCPPFLAGS) $(FUZZ_CFLAGS) $(XLDFLAGS) -o $@ $< $(XLIBS)

fuzz-bins: $(FUZZ_BINS)

fuzz:
	@./scripts/deps.sh $(DEPS_BUILD) $(DEPS_FUZZ)
	@$(MAKE) --no-print-directory fuzz-bins
	@FUZZ_SECONDS=$(FUZZ_SECONDS) ./fuzz/run.sh $(FUZZ_TARGETS)

fuzz-quick:
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=10

# ---- valgrind -------------------------------------------------------------
# In-process tests of test_faults (each a substring of test names) under
# memcheck. Valgrind follows the harness's fork of each test, so a memory
# error or a definite/indirect leak makes that test exit 1 (FAIL);
# --trace-children puts the example server the SIGTERM test starts under
# it too, but not the system's programs (mosquitto, curl, sh, rm).
DEPS_VALGRIND  := valgrind mosquitto mosquitto-clients curl
VALGRIND_TESTS := stopping_the_library sigterm_stops silent dispatch_queue
VALGRIND_CMD   := valgrind -q --leak-check=full \
                  --errors-for-leak-kinds=definite,indirect --error-exitcode=1 \
                  --trace-children=yes --trace-children-skip='/usr/*,/bin/*,/sbin/*'

valgrind:
	@./scripts/deps.sh $(DEPS_BUILD) $(DEPS_VALGRIND)
	@$(MAKE) --no-print-directory $(EXAMPLE) $(BUILD)/test/test_faults
	@fail=0; for t in $(VALGRIND_TESTS); do \
	    EXAMPLE_BIN=$(EXAMPLE) TEST_TIMEOUT_SCALE=5 \
	        $(VALGRIND_CMD) $(BUILD)/test/test_faults $$t || fail=1; \
	done; [ $$fail -eq 0 ] && echo "valgrind: clean" || \
	    { echo "valgrind: FAILED" >&2; exit 1; }

# ---- install ------------------------------------------------------------
# libdir and includedir relative to ${prefix} when they are under PREFIX,
# so that pkg-config --define-prefix can relocate an installed tree. No
# .pc exists for paho.mqtt.c, nor for CivetWeb in Debian: their -l flags
# (and the -L of CIVETWEB_PREFIX/PAHO_PREFIX) go to Libs.private.
PC_LIBDIR := $(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))
PC_INCDIR := $(patsubst $(PREFIX)/%,$${prefix}/%,$(INCDIR))
# cJSON too: no public header includes it, so Requires.private would only
# put its -I into every consumer's --cflags.
PC_LIBS_PRIVATE := $(strip $(addprefix -L,$(DEP_LIBDIRS)) -l$(PAHO_LIB) $(CWM_LIBS) $(LIBATOMIC))

# Written on every call (phony): PREFIX may differ from the last one.
.PHONY: civetweb-mqtt.pc
civetweb-mqtt.pc: civetweb-mqtt.pc.in Makefile project.mk
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(PC_LIBDIR)|' \
	    -e 's|@INCDIR@|$(PC_INCDIR)|' -e 's|@VERSION@|$(VERSION)|' \
	    -e 's|@LIBS_PRIVATE@|$(PC_LIBS_PRIVATE)|' $< > $@

install: $(LIB_A) $(LIB_SO) civetweb-mqtt.pc
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCDIR) $(DESTDIR)$(PCDIR)
	install -m 644 $(LIB_A) $(DESTDIR)$(LIBDIR)/
	install -m 755 $(LIB_SO) $(DESTDIR)$(LIBDIR)/$(LIB_SO).$(VERSION)
	ln -sf $(LIB_SO).$(VERSION) $(DESTDIR)$(LIBDIR)/$(LIB_SO).$(SOMAJOR)
	ln -sf $(LIB_SO).$(SOMAJOR) $(DESTDIR)$(LIBDIR)/$(LIB_SO)
	install -m 644 civetweb_mqtt.h civetweb_mqtt.hpp $(DESTDIR)$(INCDIR)/
	install -m 644 civetweb-mqtt.pc $(DESTDIR)$(PCDIR)/
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then ldconfig 2>/dev/null || true; fi

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/$(LIB_A) $(DESTDIR)$(LIBDIR)/$(LIB_SO)* \
	    $(DESTDIR)$(INCDIR)/civetweb_mqtt.h $(DESTDIR)$(INCDIR)/civetweb_mqtt.hpp \
	    $(DESTDIR)$(PCDIR)/civetweb-mqtt.pc

# ---- run ----------------------------------------------------------------
run: deps
	@$(MAKE) --no-print-directory all
	@./example/run.sh example/civetweb.conf

clean:
	rm -rf build $(LIB_A) $(LIB_SO) $(EXAMPLE) civetweb-mqtt.pc
