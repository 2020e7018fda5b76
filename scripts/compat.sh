#!/bin/sh
# Builds the library, the example and test_client / test_bridge /
# test_example against other installs of CivetWeb and paho.mqtt.c (each a
# prefix with include/ and lib/, as `cmake --install` writes it), with
# -I, -L and -Wl,-rpath together, and runs them.
#
#   scripts/compat.sh CIVETWEB_PREFIX PAHO_PREFIX [NOWS_CIVETWEB_PREFIX]
#
# "-" for a prefix means the system's (Debian's) library. With a third
# prefix, a CivetWeb built without WebSocket support (its CMake default,
# CIVETWEB_ENABLE_WEBSOCKETS=OFF; same soname as CIVETWEB_PREFIX's, so an
# upstream build there too): the example, linked as above, is run on
# it with a bridge configured and must refuse to start, saying why.
# Output in build/compat-<n>/ ; ends with "N passed, N failed" (one per
# test program, plus the no-WebSocket check).
set -u
cd "$(dirname "$0")/.."
cw=$1 ph=$2 nows=${3:-}
inc() { [ "$1" = - ] || printf ' -I%s/include' "$1"; }
lib() { [ "$1" = - ] || printf ' -L%s/lib -Wl,-rpath,%s/lib' "$1" "$1"; }
B=build/compat-$(printf '%s %s' "$cw" "$ph" | cksum | cut -d' ' -f1)
mkdir -p "$B"
passed=0 failed=0
result() { # name status
	if [ "$2" -eq 0 ]; then echo "ok   $1"; passed=$((passed + 1))
	else echo "FAIL $1"; failed=$((failed + 1)); fi
}
echo "# CivetWeb: $cw  paho: $ph  build: $B"
make --no-print-directory BUILD="$B" EXAMPLE="$B/civetweb-mqtt" \
    CFLAGS="-O2 -g$(inc "$cw")$(inc "$ph")" \
    LIBS="$(lib "$cw")$(lib "$ph") -lpaho-mqtt3as -lcivetweb -lcjson -lpthread" \
    "$B/civetweb-mqtt" "$B/test/test_client" "$B/test/test_bridge" \
    "$B/test/test_example" > "$B/build.log" 2>&1
st=$?
w=$(grep -c 'warning:' "$B/build.log")
result "build (-Wall -Wextra -Werror; $w warnings)" $st
[ $st -eq 0 ] || { tail -n 20 "$B/build.log"; echo "$passed passed, $failed failed"; exit 1; }
for t in test_client test_bridge test_example; do
	EXAMPLE_BIN="$B/civetweb-mqtt" "$B/test/$t" > "$B/$t.log" 2>&1
	st=$?
	result "$t: $(tail -n 1 "$B/$t.log")" $st
done
if [ -n "$nows" ]; then
	d=$(mktemp -d /tmp/cwm-compat-XXXXXX)
	printf 'listening_ports 127.0.0.1:0\ndocument_root .\nMQTT_BROKER_URL mqtt://127.0.0.1:1\nMQTT_CONNECT_ASYNC true\nMQTT_BRIDGE_PATH /mqtt\n' \
	    > "$d/civetweb.conf"
	LD_LIBRARY_PATH="$nows/lib" timeout 30 "$B/civetweb-mqtt" "$d/civetweb.conf" \
	    > "$d/out.log" 2>&1
	st=$?
	grep -q 'built without WebSocket support' "$d/out.log"
	found=$?
	sed 's/^/    /' "$d/out.log" | head -n 3
	[ $st -ne 0 ] && [ $found -eq 0 ]
	result "without WebSocket support ($nows): start refused with the reason" $?
	rm -rf "$d"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
