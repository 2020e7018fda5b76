#!/bin/sh
# Every C code block of README.md and of docs/*.md, compiled as printed.
#
#  - A block of README.md with "int main(" is a whole program: it must be the same text
#    as example/minimal/app.c (and the first ```conf block the same as
#    example/minimal/civetweb.conf); it is compiled with -std=c11 -Wall
#    -Wextra -Wpedantic -Werror, linked with the library, and run against a
#    real mosquitto on a free loopback port. It starts before the broker
#    (CONNECT_ASYNC true), must serve POST /lamp meanwhile, and must print
#    the retained reading it subscribed to once the broker is up; the
#    broker must get its "on". The end of its input must stop it with
#    status 0.
#  - Any other block is a fragment, compiled in a wrapper: what runs
#    through its last line that is "}" at column 0 at file scope and the
#    rest in the body of a function with `struct mg_mqtt *c` and `struct
#    mg_connection *conn` in scope, or else all of it in that body;
#    compiled with -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra
#    -Werror (unused parameters
#    and functions allowed: a fragment shows a part).
#
# Ends with "N passed, N failed" like the C tests. Needs the library's
# object ($BUILD/civetweb_mqtt.o, built by make), mosquitto, curl, node
# (for free ports). Every process it starts is stopped by its PID.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
CC=${CC:-cc}
# The Makefile passes its link line (make test-readme).
LIBS=${LIBS:--lpaho-mqtt3cs -lcivetweb -lcjson -lpthread}
SCALE=${TEST_TIMEOUT_SCALE:-1}
W=$(mktemp -d /tmp/cwm-readme-XXXXXX)
chmod 755 "$W"
passed=0
failed=0
pids=""

cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null; done
	for p in $pids; do wait "$p" 2>/dev/null; done
	[ "$failed" -eq 0 ] && rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ok() { echo "ok   $1"; passed=$((passed + 1)); }
fail() {
	echo "FAIL $1"
	shift
	for f in "$@"; do [ -f "$f" ] && sed 's/^/    /' "$f" | tail -n 30; done
	echo "    test files kept in $W"
	failed=$((failed + 1))
}

free_port() {
	node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# wait_for SECONDS COMMAND...: until COMMAND succeeds (every 0.1 s)
wait_for() {
	n=$(($1 * SCALE * 10))
	shift
	while [ "$n" -gt 0 ]; do
		"$@" && return 0
		sleep 0.1
		n=$((n - 1))
	done
	return 1
}

# ---- extract the blocks ---------------------------------------------------
# $W/block-<page>-NNN.<info> for each fenced block of README.md and of each
# page of docs/, in order (<page> is README or the page's name).
for md in README.md docs/*.md; do
	page=$(basename "$md" .md)
	awk -v dir="$W" -v page="$page" '
		/^```/ {
			if (!inb) { inb = 1; n++; info = substr($0, 4); if (info == "") info = "txt";
			            f = sprintf("%s/block-%s-%03d.%s", dir, page, n, info); printf "" > f; next }
			inb = 0; close(f); next
		}
		inb { print >> f }
	' "$md"
done

nc=$(ls "$W"/block-*.c 2>/dev/null | wc -l)
if [ "$nc" -lt 2 ]; then
	fail "docs_have_c_blocks (found $nc)"
fi

# ---- the whole program --------------------------------------------------------
prog=""
for f in "$W"/block-README-*.c; do
	grep -q 'int main(' "$f" && { prog=$f; break; }
done
conf=$(ls "$W"/block-README-*.conf 2>/dev/null | head -n 1)

t=the_readme_program_is_example_minimal_app_c
if [ -n "$prog" ] && cmp -s "$prog" example/minimal/app.c; then ok $t
else fail $t; fi
t=the_readme_civetweb_conf_is_example_minimal_civetweb_conf
if [ -n "$conf" ] && cmp -s "$conf" example/minimal/civetweb.conf; then ok $t
else fail $t; fi

t=the_readme_program_compiles_with_c11_wall_wextra_wpedantic_werror
if [ -n "$prog" ] && cp "$prog" "$W/app.c" &&
   $CC -std=c11 -Wall -Wextra -Wpedantic -Werror -I. -c "$W/app.c" \
       -o "$W/app.o" 2>"$W/cc-app.log" &&
   $CC -pthread -o "$W/app" "$W/app.o" "$BUILD/civetweb_mqtt.o" $LIBS \
       2>>"$W/cc-app.log"; then
	ok $t
else
	fail $t "$W/cc-app.log"
fi

t=the_readme_program_comes_up_before_the_broker_and_gets_its_message
run_program() {
	bport=$(free_port) && hport=$(free_port) || return 1
	mkdir -p "$W/run" && chmod 755 "$W/run"
	# The configuration as printed, on the ports picked here.
	sed -e "s/127\.0\.0\.1:8080/127.0.0.1:$hport/" \
	    -e "s|mqtt://127\.0\.0\.1:1883|mqtt://127.0.0.1:$bport|" \
	    "$conf" > "$W/run/civetweb.conf"
	grep -q ":$hport\$" "$W/run/civetweb.conf" &&
	    grep -q ":$bport\$" "$W/run/civetweb.conf" || return 1
	# Its input: a pipe that a sleep holds open; stopping the sleep ends
	# the input, which stops the program.
	rm -f "$W/stdin" && mkfifo "$W/stdin" || return 1
	(cd "$W/run" && exec ../app) < "$W/stdin" > "$W/app.out" \
	    2> "$W/app.err" &
	app=$!
	pids="$pids $app"
	sleep 100000 > "$W/stdin" &
	holder=$!
	pids="$pids $holder"
	# Up while the broker is down: the publish is buffered.
	wait_for 20 curl -sf -X POST -o /dev/null \
	    "http://127.0.0.1:$hport/lamp" || return 1
	printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$bport" \
	    > "$W/mosquitto.conf"
	chmod 644 "$W/mosquitto.conf"
	mosquitto -c "$W/mosquitto.conf" > "$W/mosquitto.log" 2>&1 &
	mq=$!
	pids="$pids $mq"
	wait_for 20 mosquitto_pub -p "$bport" -t home/kitchen/temperature \
	    -m 21.5 -r -q 1 2>/dev/null || return 1
	# The buffered "on" and one published now, with the broker up.
	mosquitto_sub -p "$bport" -t home/lamp -C 1 -W $((30 * SCALE)) \
	    > "$W/lamp.out" 2>&1 &
	sub=$!
	pids="$pids $sub"
	sleep 0.5
	curl -sf -X POST -o /dev/null "http://127.0.0.1:$hport/lamp" || return 1
	wait "$sub" || return 1
	grep -qx on "$W/lamp.out" || return 1
	wait_for 30 grep -qx 'home/kitchen/temperature: 21.5' "$W/app.out" ||
	    return 1
	kill "$holder"
	wait "$app"
	st=$?
	[ "$st" -eq 0 ] || { echo "exit status $st" >> "$W/app.err"; return 1; }
	return 0
}
if [ -x "$W/app" ] && [ -n "$conf" ] && run_program; then
	ok $t
else
	fail $t "$W/app.out" "$W/app.err" "$W/mosquitto.log"
fi

t=the_readme_program_stops_on_a_misspelt_civetweb_option_and_names_it
misspelt_option() {
	dead=$(free_port) && mkdir -p "$W/typo" &&
	    sed -e 's/^listening_ports /listening_port /' \
	        -e "s|mqtt://127\.0\.0\.1:1883|mqtt://127.0.0.1:$dead|" \
	        "$conf" > "$W/typo/civetweb.conf" &&
	    grep -q '^listening_port ' "$W/typo/civetweb.conf" || return 1
	# Bounded: a program that ignored the name would serve on.
	(cd "$W/typo" && exec timeout $((20 * SCALE)) ../app) > "$W/typo.out" \
	    2> "$W/typo.err"
	st=$?
	[ "$st" -eq 1 ] || { echo "exit status $st" >> "$W/typo.err"; return 1; }
	grep -q "unknown option 'listening_port'.*did you mean 'listening_ports'" \
	    "$W/typo.err"
}
if [ -x "$W/app" ] && [ -n "$conf" ] && misspelt_option; then
	ok $t
else
	fail $t "$W/typo.err"
fi

# ---- fragments ------------------------------------------------------------
# wrap FRAGMENT SPLIT OUT: lines 1..SPLIT at file scope, the rest in a body.
wrap() {
	b=$(basename "$1" .c)
	{
		printf '#include <stdio.h>\n#include <string.h>\n#include <stdlib.h>\n'
		printf '#include <civetweb.h>\n#include "civetweb_mqtt.h"\n'
		printf '#line 1 "%s"\n' "$b"
		head -n "$2" "$1"
		printf 'void snippet_(struct mg_mqtt *c, struct mg_connection *conn);\n'
		printf 'void snippet_(struct mg_mqtt *c, struct mg_connection *conn)\n{\n'
		printf '(void)c;\n(void)conn;\n'
		printf '#line %d "%s"\n' $(($2 + 1)) "$b"
		tail -n +$(($2 + 1)) "$1"
		printf '}\n'
	} > "$3"
}
fcc() {
	$CC -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror \
	    -Wno-unused-parameter \
	    -Wno-unused-function -I. -c "$1" -o "$1.o" 2>"$1.log"
}
for f in "$W"/block-*.c; do
	[ "$f" = "$prog" ] && continue
	b=$(basename "$f" .c)
	# Definitions first, statements after (the last "}" at column 0), or
	# statements only.
	last=$(grep -n '^}' "$f" | tail -n 1 | cut -d: -f1)
	wrap "$f" "${last:-0}" "$W/$b-defs.c"
	wrap "$f" 0 "$W/$b-body.c"
	t="fragment_${b#block-}_compiles ($(head -n 1 "$f" | cut -c1-50))"
	if fcc "$W/$b-defs.c" || fcc "$W/$b-body.c"; then
		ok "$t"
	else
		fail "$t" "$W/$b-defs.c.log" "$W/$b-body.c.log"
	fi
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
