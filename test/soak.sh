#!/bin/sh
# Runs the chaos test (build/test/test_chaos) with a new random seed each
# time: SOAK_SEEDS seeds (default 10), or for SOAK_MINUTES minutes when
# that is set; CHAOS_SECONDS (default 20) a seed. Prints every failing seed
# with the command that reruns it, and ends with "N passed, N failed";
# exits 1 on any failure.
BUILD=${BUILD:-build}
seeds=${SOAK_SEEDS:-10}
seconds=${CHAOS_SECONDS:-20}
end=0
[ -n "${SOAK_MINUTES:-}" ] && end=$(($(date +%s) + SOAK_MINUTES * 60))
passed=0
failed=0
failures=""
mkdir -p "$BUILD/test"
while { [ "$end" -gt 0 ] && [ "$(date +%s)" -lt "$end" ]; } ||
      { [ "$end" -eq 0 ] && [ $((passed + failed)) -lt "$seeds" ]; }; do
	seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
	log="$BUILD/test/soak-$seed.log"
	if FAULT_SEED=$seed CHAOS_SECONDS=$seconds \
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
