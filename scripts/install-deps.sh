#!/usr/bin/env bash
# Installs the Debian packages coreio needs to build and test, only when missing
# (more package names as arguments: those too). Without arguments it also makes
# sure of the Debian trixie root with QEMU 11.1 that coreio-qemu's vfio-user
# transport runs (scripts/qemu-root.sh: quick when the root is there, about a
# minute and ~500 MB of downloads when not; COREIO_NO_QEMU_ROOT=1 skips it).
# Where that root cannot be built (not root, no sudo; no network) it says so
# loudly and goes on: coreio-qemu then uses QEMU 7.2's mpqemu proxy.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

pkgs=(gcc libc6-dev meson ninja-build pkg-config libcmocka-dev libgnutls28-dev openssl tshark python3 python3-dev python3-venv python3-pytest qemu-system-x86 busybox-static cpio kmod e2fsprogs)
qemu_root=1
if [ $# -gt 0 ]; then
	pkgs+=("$@")
	qemu_root=0
fi
[ "${COREIO_NO_QEMU_ROOT:-}" = 1 ] && qemu_root=0

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "install-deps: installing ${missing[*]}" >&2
	if [ "$(id -u)" -eq 0 ]; then
		sudo=()
	elif command -v sudo >/dev/null 2>&1; then
		sudo=(sudo)
	else
		echo "install-deps: missing packages ${missing[*]}, and not root (no sudo) to install them" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	# tshark (the dissector's tests) would ask whether non-root users may capture: no.
	echo "wireshark-common wireshark-common/install-setuid boolean false" |
		"${sudo[@]}" debconf-set-selections 2>/dev/null || true
	"${sudo[@]}" apt-get update -q >/dev/null
	"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ $qemu_root -eq 1 ]; then
	status=0
	"$here/qemu-root.sh" --quiet || status=$?
	case $status in
	0) ;;
	77) echo "install-deps: WARNING: no QEMU 11.1 root (see above): coreio-qemu stays on QEMU 7.2's mpqemu proxy and the vfio-user tests skip" >&2 ;;
	*) echo "install-deps: WARNING: scripts/qemu-root.sh failed (exit status $status, see above): coreio-qemu stays on QEMU 7.2's mpqemu proxy and the vfio-user tests skip" >&2 ;;
	esac
fi
exit 0
