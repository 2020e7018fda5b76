#!/bin/sh
# paho.mqtt.c built for speed (make test-paho-hp, docs/building.md): the
# version Debian ships as libpaho-mqtt-dev, from Debian's source package,
# built with CMake and -DPAHO_HIGH_PERFORMANCE=TRUE (no stack tracing, no
# heap tracking on every call), TLS on, shared libraries only, with
# Debian's compiler flags (dpkg-buildflags) so that HIGH_PERFORMANCE is the
# one difference from the system's paho. Installed into PREFIX: include/,
# lib/ (libpaho-mqtt3cs.so and the other three) and lib/cmake/ (paho's
# CMake package), for the Makefile's PAHO_PREFIX=PREFIX and CMake's
# CMAKE_PREFIX_PATH=PREFIX.
#
#   scripts/paho-hp.sh PREFIX
#
# The source: `apt-get source paho.mqtt.c=<the installed version>` through
# a deb-src list made from the system's apt sources, with its own lists
# and cache in PREFIX.work (the system's apt configuration and its paho
# are not touched); apt checks the files against the signed index and
# dpkg-source against the .dsc, then applies Debian's patches.
# PAHO_HP_SOURCE=DIR builds from a paho.mqtt.c tree of that upstream
# version instead (its version.* files are checked), for a machine whose
# mirror does not serve the source.
#
# Installs what it needs with apt-get (scripts/deps.sh). Idempotent:
# PREFIX/.paho-hp records what was built there; a second run with the same
# version does nothing. Exit status: 0 built or already there, 3 the source
# could not be had, 1 any other failure.
set -eu
cd "$(dirname "$0")/.."
[ $# -eq 1 ] || { echo "usage: $0 PREFIX" >&2; exit 1; }
case $1 in
/*) PREFIX=${1%/} ;;
*) PREFIX=$(pwd)/${1%/} ;;
esac
WORK=$PREFIX.work
STAMP=$PREFIX/.paho-hp
ARCH=$(dpkg --print-architecture)

./scripts/deps.sh cmake libssl-dev build-essential dpkg-dev \
    "libpaho-mqtt-dev:$ARCH"

# The version Debian ships: the installed package's source version
# (1.3.12-1 on Debian 12), upstream part without epoch and revision.
DEBVER=$(dpkg-query -W -f='${source:Version}' "libpaho-mqtt-dev:$ARCH")
UPVER=${DEBVER#*:}
UPVER=${UPVER%-*}
WANT="paho.mqtt.c $DEBVER PAHO_HIGH_PERFORMANCE=TRUE PAHO_WITH_SSL=TRUE"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] &&
    [ -f "$PREFIX/lib/libpaho-mqtt3cs.so" ] &&
    [ -f "$PREFIX/include/MQTTClient.h" ]; then
	echo "paho-hp: $PREFIX has $WANT; nothing to do"
	exit 0
fi
# PREFIX is emptied first only when this script made it (a stamp of
# another version or an unfinished build): never a directory of the
# system's or the user's.
if [ -d "$PREFIX" ] && [ -n "$(ls -A "$PREFIX")" ] && [ ! -f "$PREFIX/.paho-hp" ]; then
	echo "paho-hp: $PREFIX exists and is not a build of this script;" \
	    "give a new directory" >&2
	exit 1
fi
echo "paho-hp: building $WANT into $PREFIX"
rm -rf "$WORK" "$PREFIX"
mkdir -p "$WORK" "$PREFIX"
# Marked as this script's before anything is installed there.
echo "unfinished" > "$STAMP"

# ---- the source -----------------------------------------------------------------
if [ -n "${PAHO_HP_SOURCE:-}" ]; then
	SRC=$(cd "$PAHO_HP_SOURCE" && pwd)
	have=""
	for v in major minor patch; do
		have="$have${have:+.}$(tr -d ' \n' < "$SRC/version.$v" 2>/dev/null)" || true
	done
	if [ "$have" != "$UPVER" ]; then
		echo "paho-hp: PAHO_HP_SOURCE=$PAHO_HP_SOURCE is paho.mqtt.c" \
		    "'$have', not $UPVER (Debian's $DEBVER)" >&2
		exit 1
	fi
	echo "paho-hp: source: $SRC (PAHO_HP_SOURCE)"
else
	A=$WORK/apt
	mkdir -p "$A/sources" "$A/lists/partial" "$A/cache/archives/partial" \
	    "$WORK/src"
	# deb-src twins of the system's enabled sources (deb822 and one-line).
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		sed 's/^Types:.*/Types: deb-src/' "$f" > "$A/sources/$(basename "$f")"
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		sed -n 's/^[[:space:]]*deb\(-src\)\{0,1\}[[:space:]]/deb-src /p' "$f"
	done > "$A/sources/one-line.list"
	# deb-src only in the copy: apt reads this one file and part directory.
	: > "$A/sources.list"
	set -- -q -o "Dir::Etc::SourceList=$A/sources.list" \
	    -o "Dir::Etc::SourceParts=$A/sources" -o "Dir::State::Lists=$A/lists" \
	    -o "Dir::Cache=$A/cache" -o APT::Sandbox::User=root
	# A source without deb-src (a third-party repository) only warns.
	apt-get "$@" update > "$WORK/apt-update.log" 2>&1 ||
		sed 's/^/    /' "$WORK/apt-update.log"
	if ! (cd "$WORK/src" && apt-get "$@" source "paho.mqtt.c=$DEBVER") \
	    > "$WORK/apt-source.log" 2>&1; then
		sed 's/^/    /' "$WORK/apt-source.log" >&2
		echo "paho-hp: could not get Debian's source of paho.mqtt.c $DEBVER" \
		    "(apt-get source); PAHO_HP_SOURCE=DIR builds from a paho.mqtt.c" \
		    "$UPVER tree you have" >&2
		exit 3
	fi
	SRC=$WORK/src/paho.mqtt.c-$UPVER
	[ -f "$SRC/CMakeLists.txt" ] || { echo "paho-hp: no $SRC" >&2; exit 1; }
	echo "paho-hp: source: Debian's paho.mqtt.c $DEBVER (apt-get source)"
fi

# ---- build and install ---------------------------------------------------------------
# Debian's flags, as its package is built (-ffile-prefix-map names the
# source directory, hence from there).
CPPF=$(cd "$SRC" && dpkg-buildflags --get CPPFLAGS)
CF=$(cd "$SRC" && dpkg-buildflags --get CFLAGS)
LF=$(cd "$SRC" && dpkg-buildflags --get LDFLAGS)
if ! { cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=None \
        -DCMAKE_C_FLAGS="$CPPF $CF" -DCMAKE_SHARED_LINKER_FLAGS="$LF" \
        -DCMAKE_INSTALL_PREFIX="$PREFIX" -DCMAKE_INSTALL_LIBDIR=lib \
        -DPAHO_HIGH_PERFORMANCE=TRUE -DPAHO_WITH_SSL=TRUE \
        -DPAHO_BUILD_SHARED=TRUE -DPAHO_BUILD_STATIC=FALSE \
        -DPAHO_BUILD_SAMPLES=FALSE -DPAHO_ENABLE_TESTING=FALSE \
        -DPAHO_BUILD_DOCUMENTATION=FALSE -DPAHO_ENABLE_CPACK=FALSE &&
    cmake --build "$WORK/build" -j2 &&
    cmake --install "$WORK/build"; } > "$WORK/build.log" 2>&1; then
	tail -n 40 "$WORK/build.log" | sed 's/^/    /' >&2
	echo "paho-hp: the build failed (log: $WORK/build.log)" >&2
	exit 1
fi
# HIGH_PERFORMANCE leaves paho's stack tracing and heap tracking out of
# the build: the (unstripped) library has no StackTrace_entry or mymalloc,
# which a default build has.
if nm "$PREFIX/lib/libpaho-mqtt3cs.so" | grep -qE ' [Tt] (StackTrace_entry|mymalloc)$'; then
	echo "paho-hp: $PREFIX/lib/libpaho-mqtt3cs.so has paho's tracing" >&2
	exit 1
fi
echo "$WANT" > "$STAMP"
echo "paho-hp: installed into $PREFIX (make PAHO_PREFIX=$PREFIX)"
