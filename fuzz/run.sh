#!/bin/sh
# Runs each libFuzzer target named as an argument (built in build/fuzz) for
# FUZZ_SECONDS on a scratch copy of its seed corpus, so that fuzz/corpus/
# only grows when someone copies a find back on purpose. A crash, a failed
# check, a leak or a timeout fails the target; its input is kept in
# build/fuzz/artifacts/ (cleared for the target when its run starts) and
# printed. Ends with "N passed, N failed" (one per target); exits 1 on any
# failure, 0 otherwise.
#
#   FUZZ_SECONDS=60 ./fuzz/run.sh fuzz_conf fuzz_topics fuzz_bridge_json
#   build/fuzz/fuzz_conf build/fuzz/artifacts/fuzz_conf-crash-...   # replay
#   FUZZ_STRICT=1: known, reported library bugs abort too (fuzz_common.h)
S=${FUZZ_SECONDS:-60}
OUT=build/fuzz
passed=0
failed=0
mkdir -p "$OUT/work" "$OUT/artifacts"
for t in "$@"; do
	work="$OUT/work/$t"
	log="$OUT/$t.log"
	rm -rf "$work" "$OUT/artifacts/$t-"*
	mkdir -p "$work"
	cp fuzz/corpus/"$t"/* "$work"/
	case "$t" in
	fuzz_topics) max_len=2048 ;;
	*) max_len=4096 ;;
	esac
	dict=""
	[ -f "fuzz/$t.dict" ] && dict="-dict=fuzz/$t.dict"
	echo "== $t: ${S} s on $(ls "$work" | wc -l) seeds"
	# shellcheck disable=SC2086
	"$OUT/$t" -max_total_time="$S" -timeout=10 -rss_limit_mb=2048 \
	    -max_len="$max_len" $dict -print_final_stats=1 \
	    -artifact_prefix="$OUT/artifacts/$t-" "$work" </dev/null >"$log" 2>&1
	rc=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
	cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
	if [ "$rc" -eq 0 ] && [ -n "$runs" ]; then
		echo "$t: ok, ${runs} runs (${rate}/s), ${cov}, corpus $(ls "$work" | wc -l)"
		passed=$((passed + 1))
	else
		echo "$t: FAILED (exit $rc); log $log" >&2
		grep -E 'check failed|known bug|ERROR: |SUMMARY|Test unit written|==[0-9]+==' "$log" | head -n 20 >&2
		for a in "$OUT/artifacts/$t-"*; do
			[ -f "$a" ] || continue
			echo "input $a:" >&2
			od -c "$a" | head -n 20 >&2
		done
		failed=$((failed + 1))
	fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
