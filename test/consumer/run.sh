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
