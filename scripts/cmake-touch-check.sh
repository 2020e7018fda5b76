#!/bin/sh
# A CMake build compiles the parts under src/, not a stale
# civetweb_mqtt.c: in a copy of the work tree (the tree itself is not
# touched), a CMake build is made, then a part under src/ is edited (an
# #error appended), and the rebuild of the library and of a unit test must
# fail on that line of src/ (the #line markers point there); with the edit
# undone, the rebuild must pass again. make cmake-check runs it.
#
#   scripts/cmake-touch-check.sh [BUILD_DIR]   (default build/cmake-touch)
#
# CMAKE_ARGS in the environment adds configure arguments.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
dir=${1:-build/cmake-touch}
case "$dir" in /*) ;; *) dir="$top/$dir" ;; esac
src="$dir/tree"
bld="$dir/build"
part=src/util.c
probe="cmake_touch_check_probe_$$"

rm -rf "$src"
mkdir -p "$src" "$bld"
# The tracked files and the new ones not ignored, as they are now.
git ls-files -z --cached --others --exclude-standard |
	(cd "$top" && xargs -0 cp --parents -t "$src" 2>/dev/null || true)
[ -f "$src/$part" ] || { echo "cmake-touch-check: no $part" >&2; exit 1; }

# shellcheck disable=SC2086
cmake -S "$src" -B "$bld" -DCIVETWEB_MQTT_BUILD_EXAMPLE=OFF \
	${CMAKE_ARGS:-} > "$dir/configure.log" 2>&1 ||
	{ cat "$dir/configure.log"; echo "cmake-touch-check: configure failed" >&2; exit 1; }
targets="civetweb-mqtt-static test_topics"
# Builds each target; fails when one failed.
build() {
	rc=0
	for t in $targets; do
		cmake --build "$bld" -j2 --target "$t" >> "$dir/build.log" 2>&1 || rc=1
	done
	return $rc
}

: > "$dir/build.log"
build || { tail -n 30 "$dir/build.log"; echo "cmake-touch-check: the first build failed" >&2; exit 1; }

cp "$src/$part" "$dir/part.orig"
printf '#error %s\n' "$probe" >> "$src/$part"
: > "$dir/build.log"
if build; then
	echo "cmake-touch-check: FAIL: $part was edited (an #error) and the CMake" \
	     "build still passed: it compiles a stale civetweb_mqtt.c" >&2
	exit 1
fi
if ! grep -q "$part:[0-9]*:.*$probe" "$dir/build.log"; then
	tail -n 30 "$dir/build.log"
	echo "cmake-touch-check: FAIL: the build failed, but not at the edit" \
	     "in $part" >&2
	exit 1
fi
n=$(grep -c "$part:[0-9]*:.*$probe" "$dir/build.log")
cp "$dir/part.orig" "$src/$part"
: > "$dir/build.log"
build || { tail -n 30 "$dir/build.log"; echo "cmake-touch-check: FAIL: the build with the edit undone failed" >&2; exit 1; }
echo "cmake-touch-check: an edit of $part reached the CMake build ($n" \
     "compile error(s) at it: the library and a unit test), and its undoing too"
