#!/bin/sh
# Runs the tests named as arguments and ends with one line "N passed, N
# failed" summing them all; exits 1 on any failure. A name ending in .mjs is
# a path run with node (the browser test), one ending in .sh a path run
# with sh; any other name is a C test program in $BUILD/test.
BUILD=${BUILD:-build}
passed=0
failed=0
mkdir -p "$BUILD/test"
for t in "$@"; do
	echo "== $t"
	case "$t" in
	*.mjs)
		log="$BUILD/test/$(basename "$t").log"
		node "$t" 2>&1 | tee "$log"
		;;
	*.sh)
		log="$BUILD/test/$(basename "$t").log"
		sh "$t" 2>&1 | tee "$log"
		;;
	*)
		log="$BUILD/test/$t.log"
		"$BUILD/test/$t" 2>&1 | tee "$log"
		;;
	esac
	out=$(tail -n 1 "$log")
	p=$(echo "$out" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p')
	f=$(echo "$out" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p')
	if [ -z "$p" ]; then
		echo "$t: no summary line (crashed?)" >&2
		failed=$((failed + 1))
		continue
	fi
	passed=$((passed + p))
	failed=$((failed + f))
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
