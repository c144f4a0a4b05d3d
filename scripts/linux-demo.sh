#!/usr/bin/env bash
# Boots Linux in QEMU with its disk and entropy source served by two CoreIO
# device models (coreio-virtio-blk, coreio-virtio-rng) running as their own
# processes, shows the guest using them, and leaves you at the guest's shell.
# --batch: no shell; the guest powers off after the show and the script exits
# with status 0 when every step passed. Uses KVM on hardware KVM, else TCG.
# QEMU reaches the models over vfio-user when a QEMU >= 10.1 is there (the one
# scripts/qemu-root.sh builds), else over QEMU 7.2's mpqemu proxy; the first
# lines say which (--transport forces one). --verbose: coreio-vm's routine
# messages too.
# Usage: scripts/linux-demo.sh [--batch] [--transport auto|vfio-user|mpqemu] [--verbose] [--help]
set -euo pipefail
cd "$(dirname "$0")/.."
batch=0
transport=auto
verbose=()
while [ $# -gt 0 ]; do
	case "$1" in
	-h | --help)
		sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	--batch) batch=1 ;;
	--verbose) verbose=(--verbose) ;;
	--transport)
		[ $# -ge 2 ] || {
			echo "linux-demo: --transport needs auto, vfio-user or mpqemu" >&2
			exit 2
		}
		transport=$2
		shift
		;;
	--transport=*) transport=${1#--transport=} ;;
	*)
		echo "linux-demo: unknown option $1 (--batch, --transport T, --verbose, --help)" >&2
		exit 2
		;;
	esac
	shift
done
case "$transport" in
auto | vfio-user | mpqemu) ;;
*)
	echo "linux-demo: --transport $transport: must be auto, vfio-user or mpqemu" >&2
	exit 2
	;;
esac

scripts/install-deps.sh
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null
scripts/build-guest-image.sh build/guest-image
work=build/linux-demo
mkdir -p "$work"
rm -f "$work/disk.img" "$work/blk.sock"
truncate -s 64M "$work/disk.img"

# The disk model runs on this host: a UNIX socket with shared-memory DMA (its
# fast path), unless the socket path would be too long for sockaddr_un.
sock="$PWD/$work/blk.sock"
blk_port="port=unix:$sock,shm=on"
[ ${#sock} -le 100 ] || blk_port="port=0"
append="loglevel=4 coreio.test=demo"
[ $batch -eq 1 ] && append="$append coreio.batch=1"
echo "linux-demo: starting coreio-vm, the two device models and QEMU (the lines below say which transport, and KVM or TCG)" >&2
# shellcheck disable=SC2054 # the commas are coreio-vm's range syntax
qemu=(scripts/coreio-qemu --kernel build/guest-image/vmlinuz
	--initrd build/guest-image/initramfs.cpio.gz --append "$append" --mem 256M
	--transport "$transport" "${verbose[@]}"
	--vmmio "pci,size=16K,pci=1042,profile=virtio,$blk_port"
	--vmmio pci,size=16K,pci=1044,profile=virtio,port=0
	--run "exec build/devices/coreio-virtio-blk --transport pci --image $work/disk.img {G0} 1>&2"
	--run "exec build/devices/coreio-virtio-rng --transport pci {G1} 1>&2")
export COREIO_BUILD_DIR="$PWD/build"
if [ $batch -eq 0 ]; then
	exec "${qemu[@]}"
fi
log="$work/console.log"
set +e
"${qemu[@]}" --timeout 300 </dev/null | tee "$log"
status=${PIPESTATUS[0]}
set -e
if ! grep -q "^RESULT: PASS demo" "$log"; then
	echo "linux-demo: the guest did not pass (coreio-qemu status $status); console in $log" >&2
	exit 1
fi
echo "linux-demo: done: Linux used a disk and an entropy source served by CoreIO processes" >&2
exit "$status"
