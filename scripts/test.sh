#!/usr/bin/env bash
# Runs every coreio test: installs what is missing, builds, runs cmocka unit
# tests and the pytest integration suite, then the same again under ASan+UBSan,
# the unit tests plus the concurrency-marked integration tests under
# ThreadSanitizer, and a short run of every libFuzzer harness.
# Usage: scripts/test.sh [--quick]   (--quick skips the sanitizer passes)
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1

scripts/install-deps.sh

# Debian's pytest lives in the system python; prefer it over any other python3.
py=/usr/bin/python3
[ -x "$py" ] || py=python3

# One Linux guest image (built from Debian packages on first use) for both passes.
export COREIO_GUEST_DIR=${COREIO_GUEST_DIR:-$PWD/build/guest-image}

# run_suite DIR MARKER MESON-ARGS...: build DIR, run the unit tests and the
# integration tests (only those marked MARKER unless it is empty); the tests run
# under the command prefix in the array run (empty but for the TSan pass).
run=()
run_suite() {
	local dir=$1 marker=$2
	shift 2
	echo "=== build ($dir)"
	if [ ! -f "$dir/build.ninja" ]; then
		meson setup "$dir" "$@" >/dev/null
	fi
	ninja -C "$dir"
	echo "=== unit tests ($dir)"
	"${run[@]}" meson test -C "$dir" --suite unit --print-errorlogs
	echo "=== integration tests ($dir${marker:+, -m $marker})"
	COREIO_BUILD_DIR="$PWD/$dir" "${run[@]}" "$py" -m pytest -q -rs -p no:cacheprovider \
		${marker:+-m "$marker"} tests/integration
}

# The TSan pass needs ASLR out of its way. gcc 12's libtsan keeps its shadow
# memory at fixed addresses and dies with "FATAL: ThreadSanitizer: unexpected
# memory mapping" when a kernel with more mmap entropy than it was made for
# (vm.mmap_rnd_bits above 28: 32 on some distribution kernels) puts the program
# or a library there; newer libtsan re-executes itself without ASLR, this one
# does not. So the pass runs under `setarch -R` (ASLR off for its processes
# and their children only). Where that is refused (personality() denied by a
# seccomp filter, as under Docker's default profile), root lowers
# vm.mmap_rnd_bits to 28 for the pass; it is restored afterwards.
rnd_bits_file=/proc/sys/vm/mmap_rnd_bits
rnd_bits_saved=
tsan_aslr_off() {
	local bits
	if setarch "$(uname -m)" -R true 2>/dev/null; then
		run=(setarch "$(uname -m)" -R)
		return
	fi
	bits=$(cat "$rnd_bits_file" 2>/dev/null || echo 28)
	[ "$bits" -le 28 ] && return
	if [ "$(id -u)" -eq 0 ] && echo 28 2>/dev/null >"$rnd_bits_file"; then
		rnd_bits_saved=$bits
		trap tsan_aslr_restore EXIT
		echo "test.sh: setarch -R refused; vm.mmap_rnd_bits lowered from $bits to 28 for the TSan pass" >&2
	else
		echo "test.sh: warning: setarch -R refused and vm.mmap_rnd_bits=$bits cannot be lowered" \
			"(not root): TSan may fail with 'unexpected memory mapping'" >&2
	fi
}
tsan_aslr_restore() {
	if [ -n "$rnd_bits_saved" ]; then
		echo "$rnd_bits_saved" >"$rnd_bits_file" || true
		rnd_bits_saved=
	fi
}

if [ $quick -eq 0 ]; then
	# Any sanitizer report aborts the process; the integration suite also
	# fails a test whose processes printed one.
	export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
	export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
	run_suite build-asan "" -Db_sanitize=address,undefined -Db_lundef=false --werror
	unset ASAN_OPTIONS UBSAN_OPTIONS

	# ThreadSanitizer: the unit tests and the integration tests marked
	# concurrency (tests/integration/README.md); a data race or lock-order
	# report ends the process (halt_on_error) and fails the test.
	tsan_start=$SECONDS
	export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
	tsan_aslr_off
	run_suite build-tsan concurrency -Db_sanitize=thread -Db_lundef=false --werror
	tsan_aslr_restore
	run=()
	unset TSAN_OPTIONS
	echo "=== TSan pass: $((SECONDS - tsan_start)) s"

	# A short libFuzzer run of every harness (clang, ASan+UBSan); long runs:
	# scripts/fuzz.sh SECONDS (docs/fuzzing.md).
	echo "=== fuzz smoke run (${COREIO_FUZZ_SECONDS:-10} s per harness)"
	scripts/fuzz.sh "${COREIO_FUZZ_SECONDS:-10}"
fi
run_suite build "" --werror
