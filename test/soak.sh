#!/bin/sh
# Runs the chaos test (build/test/test_chaos) with a new random seed each
# time, for SOAK_MINUTES (default 10) minutes, CHAOS_SECONDS (default 20)
# a seed. Prints every failing seed with the command that reruns it, and
# ends with "N passed, N failed"; exits 1 on any failure.
BUILD=${BUILD:-build}
minutes=${SOAK_MINUTES:-10}
seconds=${CHAOS_SECONDS:-20}
end=$(($(date +%s) + minutes * 60))
passed=0
failed=0
failures=""
mkdir -p "$BUILD/test"
while [ "$(date +%s)" -lt "$end" ]; do
	seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
	log="$BUILD/test/soak-$seed.log"
	if CHAOS_STRICT=${CHAOS_STRICT:-1} FAULT_SEED=$seed CHAOS_SECONDS=$seconds \
	    "$BUILD/test/test_chaos" chaos_seed_1 >"$log" 2>&1; then
		passed=$((passed + 1))
		rm -f "$log"
		echo "ok   seed $seed"
	else
		failed=$((failed + 1))
		failures="$failures $seed"
		echo "FAIL seed $seed (log: $log)"
		grep -E 'chaos: FAILED|test_chaos.c:[0-9]+:' "$log" | cut -c1-400
	fi
done
for s in $failures; do
	echo "rerun: FAULT_SEED=$s CHAOS_SECONDS=$seconds $BUILD/test/test_chaos chaos_seed_1"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
