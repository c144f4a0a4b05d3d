#!/usr/bin/env bash
# Runs every coreio test: installs what is missing, builds, runs cmocka unit
# tests and the pytest integration suite, then the same again under ASan+UBSan.
# Usage: scripts/test.sh [--quick]   (--quick skips the sanitizer pass)
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

run_suite() {
	local dir=$1
	shift
	echo "=== build ($dir)"
	if [ ! -f "$dir/build.ninja" ]; then
		meson setup "$dir" "$@" >/dev/null
	fi
	ninja -C "$dir"
	echo "=== unit tests ($dir)"
	meson test -C "$dir" --suite unit --print-errorlogs
	echo "=== integration tests ($dir)"
	COREIO_BUILD_DIR="$PWD/$dir" "$py" -m pytest -q -rs -p no:cacheprovider tests/integration
}

if [ $quick -eq 0 ]; then
	# Any sanitizer report aborts the process; the integration suite also
	# fails a test whose processes printed one.
	export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
	export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
	run_suite build-asan -Db_sanitize=address,undefined -Db_lundef=false --werror
	unset ASAN_OPTIONS UBSAN_OPTIONS
fi
run_suite build --werror
