#!/bin/sh
# make test-consumer: a user's program (test/consumer/consumer.c) built
# against civetweb-mqtt the ways the README shows, each run against a real
# mosquitto on a free loopback port (it connects, subscribes, publishes and
# exits 0 once its own message came back):
#   1. CMake package: civetweb-mqtt built and installed with CMake into a
#      temporary prefix, which is then MOVED (the package must be
#      relocatable), find_package(civetweb-mqtt)
#   2. pkg-config from CMake (pkg_check_modules, --define-prefix)
#   3. add_subdirectory(<this repository>)
#   (1-3 also build consumer_cpp.cpp: C++17 on CivetServer with
#   civetweb_mqtt.hpp, linking civetweb-mqtt::civetweb-cpp)
#   4. the README's cc lines: pkg-config shared (with rpath) and static
# CMAKE_ARGS= adds arguments to every cmake configure (e.g. other
# dependency builds through -DCMAKE_PREFIX_PATH=...); CIVETWEB_SOURCE_DIR=
# adds a build next to a CivetWeb source tree (add_subdirectory of both).
# Ends with "N passed, N failed"; exit 1 on any failure.
set -eu
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
B=$ROOT/${BUILD:-build}/consumer
CMAKE_ARGS=${CMAKE_ARGS:-}
rm -rf "$B"
mkdir -p "$B"
passed=0
failed=0
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

# mosquitto on a free loopback port: tries random ports until one is taken
# by this broker (its log says it listens), up to 20 times.
chmod 755 "$B"
port=""
for i in $(seq 1 20); do
	p=$(( $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 30000 + 20000 ))
	printf 'listener %s 127.0.0.1\nallow_anonymous true\nlog_dest stderr\n' "$p" \
		> "$B/mosquitto.conf"
	chmod 644 "$B/mosquitto.conf"
	mosquitto -c "$B/mosquitto.conf" > "$B/mosquitto.log" 2>&1 &
	mpid=$!
	for j in $(seq 1 50); do
		grep -q "listen socket on port $p" "$B/mosquitto.log" 2>/dev/null && break
		kill -0 "$mpid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$mpid" 2>/dev/null && grep -q "listen socket on port $p" "$B/mosquitto.log"; then
		port=$p
		pids="$mpid"
		break
	fi
	kill "$mpid" 2>/dev/null || true
	wait "$mpid" 2>/dev/null || true
done
[ -n "$port" ] || { echo "test-consumer: mosquitto did not start:"; cat "$B/mosquitto.log"; exit 1; }
URL=tcp://127.0.0.1:$port
echo "test-consumer: mosquitto on $URL (pid $mpid)"

# run <name> <program>: the consumer must exit 0 within 60 s.
run() {
	if timeout 60 "$2" "$URL" > "$B/$1.log" 2>&1; then
		echo "PASS $1: $(tail -n 1 "$B/$1.log")"
		passed=$((passed + 1))
	else
		echo "FAIL $1:"; sed 's/^/  /' "$B/$1.log"
		failed=$((failed + 1))
	fi
}
# step <name> <command...>: a build step; a failure fails that way.
step() {
	n=$1; shift
	if ! "$@" >> "$B/$n.build.log" 2>&1; then
		echo "FAIL $n: build step failed: $*"; tail -n 30 "$B/$n.build.log" | sed 's/^/  /'
		failed=$((failed + 1))
		return 1
	fi
}

# The library, installed into a staging prefix that is then moved.
# shellcheck disable=SC2086
step install cmake -S "$ROOT" -B "$B/lib" -DCIVETWEB_MQTT_BUILD_TESTS=OFF \
	-DCIVETWEB_MQTT_BUILD_EXAMPLE=OFF -DCMAKE_INSTALL_PREFIX="$B/stage" $CMAKE_ARGS &&
step install cmake --build "$B/lib" -j2 &&
step install cmake --install "$B/lib" &&
step install mv "$B/stage" "$B/prefix" || exit 1
PREFIX=$B/prefix
LIBDIR=$(cd "$PREFIX" && ls -d lib*/pkgconfig | head -n 1 | xargs dirname)

# 1. find_package
# shellcheck disable=SC2086
# (the prefix through the environment: CMAKE_ARGS may set -DCMAKE_PREFIX_PATH)
step package env CMAKE_PREFIX_PATH="$PREFIX${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}" \
	cmake -S test/consumer -B "$B/package" -DCONSUMER_VIA=package $CMAKE_ARGS &&
step package cmake --build "$B/package" &&
run package "$B/package/consumer" &&
run package-cpp "$B/package/consumer_cpp"

# 1b. example/cpp (docs/cpp.md): a C++-only CMake project on the package,
# run with example/minimal/civetweb.conf on free ports: POST /lamp reaches
# the broker, a reading reaches the program, SIGTERM stops it with 0, and a
# misspelt CivetWeb option stops it with 1 and a line naming it.
cpp_app() {
	d=$B/cpp-app-run
	mkdir -p "$d" && chmod 755 "$d"
	for i in $(seq 1 20); do
		hp=$(( $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 30000 + 20000 ))
		sed -e "s/127\.0\.0\.1:8080/127.0.0.1:$hp/" \
		    -e "s|mqtt://127\.0\.0\.1:1883|$URL|" \
		    example/minimal/civetweb.conf > "$d/civetweb.conf"
		(cd "$d" && exec "$B/cpp-app/app") > "$d/app.out" 2> "$d/app.err" &
		app=$!
		pids="$pids $app"
		for j in $(seq 1 100); do
			curl -sf -X POST -o /dev/null "http://127.0.0.1:$hp/lamp" && break
			kill -0 "$app" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$app" 2>/dev/null && break
		wait "$app" 2>/dev/null
		grep -q "cannot start the web server" "$d/app.err" || return 1
	done
	timeout 30 mosquitto_sub -p "$port" -t home/lamp -C 1 > "$d/lamp.out" 2>&1 &
	sub=$!
	pids="$pids $sub"
	# POSTed until the subscriber, subscribed by then, has one.
	for j in $(seq 1 50); do
		curl -sf -X POST -o /dev/null "http://127.0.0.1:$hp/lamp" || return 1
		sleep 0.2
		kill -0 "$sub" 2>/dev/null || break
	done
	wait "$sub" && grep -qx on "$d/lamp.out" || return 1
	mosquitto_pub -p "$port" -t home/hall/temperature -m 19.5 -q 1 || return 1
	for j in $(seq 1 100); do
		grep -qx 'home/hall/temperature: 19.5' "$d/app.out" && break
		sleep 0.1
	done
	grep -qx 'home/hall/temperature: 19.5' "$d/app.out" || return 1
	kill -TERM "$app"
	wait "$app" || return 1
	sed -i 's/^listening_ports /listening_port /' "$d/civetweb.conf"
	(cd "$d" && exec timeout 20 "$B/cpp-app/app") > "$d/typo.out" 2> "$d/typo.err"
	[ $? -eq 1 ] && grep -q "unknown option 'listening_port'" "$d/typo.err"
}
# docs/cpp.md shows example/cpp as it is.
awk '/^```cpp/{n++; if (n == 1) { f = 1; next } } /^```/{f = 0} f' docs/cpp.md > "$B/doc-app.cpp"
awk '/^```cmake/{n++; if (n == 1) { f = 1; next } } /^```/{f = 0} f' docs/cpp.md > "$B/doc-app.cmake"
if cmp -s "$B/doc-app.cpp" example/cpp/app.cpp &&
   cmp -s "$B/doc-app.cmake" example/cpp/CMakeLists.txt; then
	echo "PASS docs-cpp: docs/cpp.md shows example/cpp/app.cpp and its CMakeLists.txt as they are"
	passed=$((passed + 1))
else
	echo "FAIL docs-cpp: docs/cpp.md's program or CMakeLists.txt differs from example/cpp"
	failed=$((failed + 1))
fi
step cpp-app env CMAKE_PREFIX_PATH="$PREFIX${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}" \
	cmake -S example/cpp -B "$B/cpp-app" $CMAKE_ARGS &&
step cpp-app cmake --build "$B/cpp-app" &&
if cpp_app; then
	echo "PASS cpp-app: example/cpp: POST /lamp published, a reading printed, SIGTERM 0, a typo named"
	passed=$((passed + 1))
else
	echo "FAIL cpp-app:"
	tail -n 20 "$B/cpp-app-run/app.err" "$B/cpp-app-run/typo.err" 2>/dev/null | sed 's/^/  /'
	failed=$((failed + 1))
fi

# 2. pkg-config from CMake, relocated with --define-prefix
# shellcheck disable=SC2086
step pkgconfig env PKG_CONFIG_PATH="$PREFIX/$LIBDIR/pkgconfig" cmake -S test/consumer \
	-B "$B/pkgconfig" -DCONSUMER_VIA=pkgconfig -DPKG_CONFIG_ARGN=--define-prefix $CMAKE_ARGS &&
step pkgconfig cmake --build "$B/pkgconfig" &&
run pkgconfig "$B/pkgconfig/consumer" &&
run pkgconfig-cpp "$B/pkgconfig/consumer_cpp"

# 3. add_subdirectory
# shellcheck disable=SC2086
step subdir cmake -S test/consumer -B "$B/subdir" -DCONSUMER_VIA=subdir \
	-DCIVETWEB_MQTT_SOURCE_DIR="$ROOT" $CMAKE_ARGS &&
step subdir cmake --build "$B/subdir" -j2 &&
run subdir "$B/subdir/consumer" &&
run subdir-cpp "$B/subdir/consumer_cpp"

# 3b. add_subdirectory of a CivetWeb source tree, then of this repository
# (only with CIVETWEB_SOURCE_DIR=<a CivetWeb checkout>)
if [ -n "${CIVETWEB_SOURCE_DIR:-}" ]; then
	# shellcheck disable=SC2086
	step subdir-civetweb cmake -S test/consumer -B "$B/subdir-civetweb" -DCONSUMER_VIA=subdir \
		-DCIVETWEB_MQTT_SOURCE_DIR="$ROOT" -DCIVETWEB_SOURCE_DIR="$CIVETWEB_SOURCE_DIR" \
		$CMAKE_ARGS &&
	step subdir-civetweb cmake --build "$B/subdir-civetweb" -j2 &&
	run subdir-civetweb "$B/subdir-civetweb/consumer"
fi

# 4. the README's command lines (after: make install PREFIX=...), shared
# with an rpath for the non-system prefix, and static; against the
# system's dependencies only (not with CMAKE_ARGS).
if [ -n "$CMAKE_ARGS" ]; then
	echo "test-consumer: CMAKE_ARGS given: the cc lines (system dependencies) are skipped"
	echo "$passed passed, $failed failed"
	[ "$failed" -eq 0 ]
	exit
fi
PC="pkg-config --define-prefix"
export PKG_CONFIG_PATH="$PREFIX/$LIBDIR/pkgconfig"
cc=${CC:-cc}
# shellcheck disable=SC2046
step cc-shared $cc -std=c11 -o "$B/cc-shared" test/consumer/consumer.c \
	$($PC --cflags --libs civetweb-mqtt) -lcivetweb \
	-Wl,-rpath,"$($PC --variable=libdir civetweb-mqtt)" &&
run cc-shared "$B/cc-shared"
# shellcheck disable=SC2046
step cc-static $cc -std=c11 -o "$B/cc-static" test/consumer/consumer.c \
	$($PC --cflags civetweb-mqtt) "$($PC --variable=libdir civetweb-mqtt)/libcivetweb_mqtt.a" \
	-Wl,--as-needed $($PC --static --libs civetweb-mqtt) -lcivetweb &&
if readelf -d "$B/cc-static" | grep -q 'libcivetweb_mqtt'; then
	echo "FAIL cc-static: linked libcivetweb_mqtt.so"; failed=$((failed + 1))
else
	run cc-static "$B/cc-static"
fi

kill "$mpid" 2>/dev/null || true
wait "$mpid" 2>/dev/null || true
pids=""
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
