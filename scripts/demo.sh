#!/usr/bin/env bash
# The main job: boots Linux in QEMU whose disk and entropy source are CoreIO
# device models running as their own processes, shows the guest using them,
# and leaves you at the guest's shell (exit powers it off). Without a terminal,
# or with --batch, it runs the show non-interactively and exits 0 on success.
# QEMU reaches the models over vfio-user when a QEMU >= 10.1 is there (the
# Debian trixie root scripts/qemu-root.sh builds; scripts/install-deps.sh runs
# it), else over QEMU 7.2's mpqemu proxy; the output says which.
#   --transport auto|vfio-user|mpqemu  force one;  --verbose  coreio-vm's
#            routine messages too (both for the Linux demo)
#   --guest  instead boot a freestanding test guest under coreio-vm (KVM) that
#            drives the example timer/DMA device model (qtest where no KVM)
#   --qtest  instead play the CPU with a test-accelerator script
# Usage: scripts/demo.sh [--batch] [--transport T] [--verbose] | --guest | --qtest | --help
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
	sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
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
esac

# The Linux demo: --batch, --transport T and --verbose go to scripts/linux-demo.sh.
batch=0
args=()
while [ $# -gt 0 ]; do
	case "$1" in
	--batch) batch=1 ;;
	--verbose | --transport=*) args+=("$1") ;;
	--transport)
		[ $# -ge 2 ] || {
			echo "demo: --transport needs auto, vfio-user or mpqemu" >&2
			exit 2
		}
		args+=("$1" "$2")
		shift
		;;
	*)
		echo "demo: unknown option '$1' (try --help)" >&2
		exit 2
		;;
	esac
	shift
done
if [ $batch -eq 0 ]; then
	if [ -t 0 ] && [ -t 1 ]; then
		exec scripts/linux-demo.sh "${args[@]}"
	fi
	echo "demo: no terminal, running non-interactively (--batch)" >&2
fi
exec scripts/linux-demo.sh --batch "${args[@]}"
