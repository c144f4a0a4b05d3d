#!/usr/bin/env bash
# Builds the libFuzzer harnesses of tests/fuzz with clang and runs each for SECONDS on its corpus.
#
#   scripts/fuzz.sh [SECONDS]     (default 30 seconds per harness)
#
# The build goes to build-fuzz (COREIO_FUZZ_BUILD_DIR overrides it). New inputs go to
# BUILD/fuzz-corpus/<harness>, never into the committed seeds of tests/fuzz/corpus; a crash is
# saved as BUILD/fuzz-artifacts/<harness>-crash-*. Exits 1 if any harness crashed.
set -euo pipefail

cd "$(dirname "$0")/.."
secs=${1:-30}
case "$secs" in
'' | *[!0-9]*)
	echo "usage: $0 [SECONDS]" >&2
	exit 2
	;;
esac
build=${COREIO_FUZZ_BUILD_DIR:-build-fuzz}
harnesses=(wire stream target virtq config qtest inject vfu mpqemu)

scripts/install-deps.sh clang libclang-rt-14-dev
if [ ! -f "$build/build.ninja" ]; then
	CC=clang meson setup "$build" -Dfuzz=true -Db_lundef=false
else
	meson configure "$build" -Dfuzz=true -Db_lundef=false # fails unless it was set up with clang
fi
ninja -C "$build" "${harnesses[@]/#/tests/fuzz/fuzz_}"

mkdir -p "$build/fuzz-artifacts"
summary=()
failed=0
for h in "${harnesses[@]}"; do
	exe="$build/tests/fuzz/fuzz_$h"
	work="$build/fuzz-corpus/$h"
	log="$build/fuzz-artifacts/$h.log"
	mkdir -p "$work"
	echo "fuzz: $h for ${secs}s (log $log)" >&2
	rc=0
	# The first directory receives new inputs; the seeds are only read.
	"$exe" "$work" "tests/fuzz/corpus/$h" -max_total_time="$secs" -timeout=10 \
		-print_final_stats=1 -artifact_prefix="$build/fuzz-artifacts/$h-" >"$log" 2>&1 || rc=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
	cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
	corp=$(find "$work" -type f | wc -l)
	if [ "$rc" -eq 0 ]; then
		result=ok
	else
		result="CRASH (exit $rc): $(grep -m1 -E 'ERROR: |invariant broken|runtime error' "$log" || true)"
		crash=$(grep -o "$build/fuzz-artifacts/$h-[a-z]*-[0-9a-f]*" "$log" | tail -1 || true)
		[ -n "$crash" ] && result="$result; input $crash"
		failed=1
	fi
	summary+=("fuzz_$h: ${secs}s, ${runs:-?} runs, ${eps:-?} exec/s, cov ${cov:-?}, corpus $corp (seeds not counted), $result")
done
printf '%s\n' "${summary[@]}"
exit "$failed"
