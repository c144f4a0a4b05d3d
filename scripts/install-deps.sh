#!/usr/bin/env bash
# Installs the Debian packages coreio needs to build and test, only when missing.
set -euo pipefail

pkgs=(gcc libc6-dev meson ninja-build pkg-config libcmocka-dev python3 python3-dev python3-venv python3-pytest qemu-system-x86 busybox-static cpio kmod e2fsprogs)
[ $# -gt 0 ] && pkgs+=("$@")

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

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
"${sudo[@]}" apt-get update -q >/dev/null
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
