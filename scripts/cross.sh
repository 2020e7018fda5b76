#!/bin/sh
# make cross: the Raspberry Pi builds (docs/raspberry-pi.md), with Debian's
# cross toolchains and multiarch packages, on a Debian amd64 machine:
#
#   armv6   arm-linux-gnueabihf-gcc -march=armv6+fp -mfpu=vfp -marm
#           (Raspberry Pi OS 32-bit's default: Pi 1, Zero; its 64-bit
#           atomics are libatomic calls, which the Makefile's probe finds)
#   armv7   arm-linux-gnueabihf-gcc (Debian armhf: Pi 2 and later, 32-bit)
#   arm64   aarch64-linux-gnu-gcc   (Pi 3, 4, 5 with a 64-bit OS)
#
# Each builds the library (.a, .so) and the example with -Werror, then the
# tests test_config, test_topics, test_client and test_reliability's
# persistence tests, which run under qemu-user (qemu-arm, qemu-aarch64)
# against the host's mosquitto, each test binary bounded by
# CROSS_TEST_SECONDS (default 300). Installs what it needs with apt-get
# (dpkg --add-architecture armhf arm64 first). CROSS_ARCHS= picks some of
# "armv6 armv7 arm64". Ends with "N passed, N failed"; exit 1 on any
# failure.
set -u
cd "$(dirname "$0")/.."
ARCHS=${CROSS_ARCHS:-armv6 armv7 arm64}
LIMIT=${CROSS_TEST_SECONDS:-300}
passed=0
failed=0

# ---- packages ---------------------------------------------------------------
for a in armhf arm64; do
	if ! dpkg --print-foreign-architectures | grep -qx "$a"; then
		echo "cross: dpkg --add-architecture $a"
		dpkg --add-architecture "$a" || exit 1
		# deps.sh runs apt-get update before it installs anything.
	fi
done
pkgs="crossbuild-essential-armhf crossbuild-essential-arm64 qemu-user
      mosquitto mosquitto-clients curl make"
for a in armhf arm64; do
	pkgs="$pkgs libcivetweb-dev:$a libpaho-mqtt-dev:$a libcjson-dev:$a
	      libssl-dev:$a libatomic1:$a"
done
# shellcheck disable=SC2086
./scripts/deps.sh $pkgs || exit 1

ok() { echo "ok   $1"; passed=$((passed + 1)); }
fail() {
	echo "FAIL $1"
	[ -f "${2:-}" ] && tail -n 40 "$2" | sed 's/^/    /'
	failed=$((failed + 1))
}

# ---- one architecture ---------------------------------------------------------
# cross_arch NAME CC QEMU CFLAGS
cross_arch() {
	name=$1 cc=$2 qemu=$3 cflags=$4
	B=build/cross-$name
	mkdir -p "$B"
	log=$B/build.log
	# The library, the example and the test programs; LIB_A / LIB_SO /
	# EXAMPLE in $B so that nothing of the host build is touched.
	if nice make -j2 --no-print-directory BUILD="$B" CC="$cc" AR="${cc%gcc}ar" \
	    CFLAGS="$cflags" LIB_A="$B/libcivetweb_mqtt.a" \
	    LIB_SO="$B/libcivetweb_mqtt.so" EXAMPLE="$B/civetweb-mqtt" \
	    "$B/libcivetweb_mqtt.a" "$B/libcivetweb_mqtt.so" "$B/civetweb-mqtt" \
	    "$B/test/test_config" "$B/test/test_topics" "$B/test/test_client" \
	    "$B/test/test_reliability" > "$log" 2>&1; then
		ok "${name}_builds_the_library_and_links_the_example"
	else
		fail "${name}_builds_the_library_and_links_the_example" "$log"
		return
	fi
	if grep -q -- '-latomic' "$log"; then
		echo "     $name: 64-bit atomics need -latomic (the probe added it)"
	fi
	# The example runs: a bad option is refused with a line naming it.
	out=$B/example-check.log
	"$qemu" "$B/civetweb-mqtt" -listening_port 1 > "$out" 2>&1
	if [ $? -eq 1 ] && grep -q "unknown option 'listening_port'" "$out"; then
		ok "${name}_example_runs_and_names_a_misspelt_option"
	else
		fail "${name}_example_runs_and_names_a_misspelt_option" "$out"
	fi
	for t in test_config test_topics test_client "test_reliability persistence"; do
		bin=${t%% *}
		arg=""
		[ "$bin" != "$t" ] && arg=${t#* }
		tlog=$B/$bin.log
		# shellcheck disable=SC2086
		TEST_TIMEOUT_SCALE=5 timeout "$LIMIT" "$qemu" "$B/test/$bin" $arg \
		    > "$tlog" 2>&1
		st=$?
		summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$tlog" | tail -n 1)
		if [ $st -eq 0 ] && [ -n "$summary" ]; then
			ok "${name}_${bin}${arg:+_$arg} under $qemu ($summary)"
		else
			fail "${name}_${bin}${arg:+_$arg} under $qemu (exit $st${summary:+, $summary})" \
			    "$tlog"
		fi
	done
}

for a in $ARCHS; do
	case $a in
	armv6) cross_arch armv6 arm-linux-gnueabihf-gcc qemu-arm \
	           "-O2 -g -march=armv6+fp -mfpu=vfp -marm" ;;
	armv7) cross_arch armv7 arm-linux-gnueabihf-gcc qemu-arm "-O2 -g" ;;
	arm64) cross_arch arm64 aarch64-linux-gnu-gcc qemu-aarch64 "-O2 -g" ;;
	*) fail "unknown architecture $a (armv6, armv7, arm64)" ;;
	esac
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
