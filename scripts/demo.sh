#!/usr/bin/env bash
# The main job: boots Linux in QEMU whose disk and entropy source are CoreIO
# device models running as their own processes, shows the guest using them,
# and leaves you at the guest's shell (exit powers it off). Without a terminal,
# or with --batch, it runs the show non-interactively and exits 0 on success.
#   --guest  instead boot a freestanding test guest under coreio-vm (KVM) that
#            drives the example timer/DMA device model (qtest where no KVM)
#   --qtest  instead play the CPU with a test-accelerator script
# Usage: scripts/demo.sh [--batch | --guest | --qtest | --help]
set -euo pipefail
cd "$(dirname "$0")/.."

build() {
	scripts/install-deps.sh
	[ -f build/build.ninja ] || meson setup build >/dev/null
	ninja -C build >/dev/null
}

py=/usr/bin/python3
[ -x "$py" ] || py=python3
case "${1:-}" in
-h | --help)
	sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
	exit 0
	;;
--guest)
	build
	exec "$py" scripts/demo.py --build build
	;;
--qtest)
	build
	exec "$py" scripts/demo.py --build build --qtest
	;;
--batch)
	exec scripts/linux-demo.sh --batch
	;;
"")
	if [ -t 0 ] && [ -t 1 ]; then
		exec scripts/linux-demo.sh
	fi
	echo "demo: no terminal, running non-interactively (--batch)" >&2
	exec scripts/linux-demo.sh --batch
	;;
*)
	echo "demo: unknown option '$1' (try --help)" >&2
	exit 2
	;;
esac
