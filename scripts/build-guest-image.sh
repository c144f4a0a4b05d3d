#!/usr/bin/env bash
# Builds the Linux test guest: OUTDIR/vmlinuz and OUTDIR/initramfs.cpio.gz from
# Debian's linux-image-amd64 and busybox-static packages (downloaded into
# OUTDIR/cache and unpacked there; nothing is installed), with the virtio and
# ext4 modules, the scripts of tests/linux/ and its tools/*.c built static
# into /bin. Rebuilds only when the package versions, this script or
# tests/linux/ change.
# Usage: scripts/build-guest-image.sh [--force] OUTDIR
set -euo pipefail

say() { echo "build-guest-image: $*" >&2; }
die() {
	say "error: $*"
	exit 1
}

force=0
if [ "${1:-}" = "--force" ]; then
	force=1
	shift
fi
case "${1:-}" in
-h | --help | "")
	sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
	[ -n "${1:-}" ] && exit 0
	exit 2
	;;
esac

src=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
cache="$out/cache"
mkdir -p "$cache"

# Modules the guest loads, in this order after their dependencies. Names as in
# modules.dep (file name without .ko). crc32c_generic serves ext4's and jbd2's
# "crc32c" checksums, which the kernel would otherwise request from user space.
modules=(virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
	virtio_blk virtio-rng virtio_console crc32c_generic crc16 mbcache jbd2 ext4)

# Host tools: apt-get/dpkg-deb (always on Debian), cpio, gzip, depmod (kmod),
# gcc with a static libc (libc6-dev) for the guest programs of tests/linux/tools/.
need=()
command -v cpio >/dev/null 2>&1 || need+=(cpio)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || need+=(libc6-dev)
command -v depmod >/dev/null 2>&1 || [ -x /usr/sbin/depmod ] || [ -x /sbin/depmod ] || need+=(kmod)
if [ ${#need[@]} -gt 0 ]; then
	say "installing host tools: ${need[*]}"
	"$src/scripts/install-deps.sh" "${need[@]}"
fi
depmod=$(command -v depmod || echo /usr/sbin/depmod)
[ -x "$depmod" ] || depmod=/sbin/depmod

# The candidate version of a package, or nothing.
candidate() {
	apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { if ($2 != "(none)") print $2 }'
}

# The kernel package the linux-image-amd64 meta-package points at.
kernel_pkg() {
	apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}

kpkg=$(kernel_pkg)
if [ -z "$kpkg" ] || [ -z "$(candidate busybox-static)" ]; then
	say "package lists lack linux-image-amd64 or busybox-static: running apt-get update"
	if [ "$(id -u)" -eq 0 ]; then
		apt-get update -q >/dev/null || true
	elif command -v sudo >/dev/null 2>&1; then
		sudo apt-get update -q >/dev/null || true
	fi
	kpkg=$(kernel_pkg)
fi
[ -n "$kpkg" ] || die "cannot resolve linux-image-amd64 with apt-cache (no Debian package lists?)"
kver_pkg=$(candidate "$kpkg")
bver=$(candidate busybox-static)
[ -n "$kver_pkg" ] || die "no candidate version of $kpkg"
[ -n "$bver" ] || die "no candidate version of busybox-static"

# The stamp: package versions, module list, and the hash of every input file.
inputs_hash=$( (
	cat "$0"
	find "$src/tests/linux" -type f | LC_ALL=C sort | while read -r f; do
		echo "== ${f#"$src"/}"
		cat "$f"
	done
) | sha256sum | cut -d' ' -f1)
stamp_text="kernel=$kpkg=$kver_pkg
busybox=busybox-static=$bver
modules=${modules[*]}
inputs=$inputs_hash"
if [ $force -eq 0 ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initramfs.cpio.gz" ] &&
	[ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp_text" ]; then
	say "up to date: $out ($kpkg $kver_pkg, busybox-static $bver)"
	exit 0
fi

# Downloads PKG=VER into the cache (once) and unpacks it into cache/NAME; the
# .deb file name encodes ':' of the epoch as %3a.
fetch() {
	local pkg=$1 ver=$2 dir=$3 deb
	deb="$cache/${pkg}_${ver//:/%3a}_amd64.deb"
	if [ ! -f "$deb" ]; then
		say "downloading $pkg $ver"
		# -o APT::Sandbox::User=root: the download directory is ours, not _apt's.
		(cd "$cache" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$ver" >/dev/null) ||
			die "apt-get download $pkg=$ver failed"
		[ -f "$deb" ] || die "apt-get download did not produce $deb"
	fi
	if [ ! -f "$cache/$dir.unpacked" ] || [ "$(cat "$cache/$dir.unpacked")" != "$deb" ]; then
		say "unpacking $(basename "$deb")"
		rm -rf "${cache:?}/$dir"
		dpkg-deb -x "$deb" "$cache/$dir"
		echo "$deb" >"$cache/$dir.unpacked"
	fi
}
fetch "$kpkg" "$kver_pkg" kernel
fetch busybox-static "$bver" busybox

kroot="$cache/kernel"
kver=$(ls "$kroot/lib/modules" | head -n1)
[ -n "$kver" ] && [ -f "$kroot/boot/vmlinuz-$kver" ] || die "no kernel in $kpkg"
bb="$cache/busybox/bin/busybox"
[ -x "$bb" ] || die "no busybox in busybox-static"

# The package ships no modules.dep (its postinst runs depmod): make one in the
# unpacked tree, never in /lib/modules.
mdir="$kroot/lib/modules/$kver"
if [ ! -f "$mdir/modules.dep" ]; then
	say "depmod for $kver"
	"$depmod" -b "$kroot" "$kver"
fi

# Load order: each module after its dependencies (depth first over modules.dep).
declare -A seen=()
order=()
add_module() {
	local name=$1 line path dep
	[ -n "${seen[$name]:-}" ] && return 0
	seen[$name]=1
	line=$(awk -v n="$name" -F: '{ p = $1; sub(".*/", "", p); sub("\\.ko(\\.[a-z]+)?$", "", p);
		m = p; gsub("-", "_", m); q = n; gsub("-", "_", q); if (m == q) { print; exit } }' "$mdir/modules.dep")
	if [ -z "$line" ]; then
		if grep -Eq "/${name//-/[-_]}\.ko" "$mdir/modules.builtin"; then
			say "module $name is built in"
			return 0
		fi
		die "module $name is neither in modules.dep nor built in"
	fi
	path=${line%%:*}
	for dep in ${line#*:}; do
		dep=${dep##*/}
		add_module "${dep%%.ko*}"
	done
	order+=("$path")
}
for m in "${modules[@]}"; do
	add_module "$m"
done

say "assembling the initramfs (kernel $kver, ${#order[@]} modules)"
stage="$out/stage"
rm -rf "$stage"
mkdir -p "$stage"/{bin,sbin,dev,proc,sys,tmp,mnt,etc,lib/modules,tests,usr/bin,usr/sbin}
cp "$bb" "$stage/bin/busybox"
for applet in $("$bb" --list-full); do
	[ -e "$stage/$applet" ] || ln -s /bin/busybox "$stage/$applet"
done
: >"$stage/etc/modules.load"
for path in "${order[@]}"; do
	f="$mdir/$path"
	case "$f" in
	*.ko.xz) xz -dc "$f" >"$stage/lib/modules/$(basename "${f%.xz}")" ;;
	*.ko.zst) zstd -qdc "$f" >"$stage/lib/modules/$(basename "${f%.zst}")" ;;
	*.ko) cp "$f" "$stage/lib/modules/" ;;
	*) die "unknown module file $f" ;;
	esac
	b=$(basename "$path")
	echo "${b%%.ko*}.ko" >>"$stage/etc/modules.load"
done
cp "$src/tests/linux/init" "$stage/init"
chmod 755 "$stage/init"
for f in "$src"/tests/linux/*; do
	case "$(basename "$f")" in init | *.md) continue ;; esac
	[ -f "$f" ] || continue
	cp "$f" "$stage/tests/"
done
# The guest programs: one static binary per tests/linux/tools/NAME.c, as /bin/NAME.
for f in "$src"/tests/linux/tools/*.c; do
	[ -e "$f" ] || continue
	b=$(basename "$f" .c)
	rm -f "$stage/bin/$b"
	gcc -static -O2 -Wall -Wextra -std=gnu11 -o "$stage/bin/$b" "$f" || die "cannot build $f"
	strip "$stage/bin/$b" 2>/dev/null || true
done
echo "$kver" >"$stage/etc/kernel-version"
# The kernel opens /dev/console for init before any file system is mounted.
# mknod needs root; without it /init re-opens the console from devtmpfs.
if [ "$(id -u)" -eq 0 ]; then
	mknod -m 600 "$stage/dev/console" c 5 1
	mknod -m 666 "$stage/dev/null" c 1 3
fi

(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) |
	gzip -6 >"$out/initramfs.cpio.gz.tmp"
mv "$out/initramfs.cpio.gz.tmp" "$out/initramfs.cpio.gz"
cp "$kroot/boot/vmlinuz-$kver" "$out/vmlinuz"
# The unpacked kernel is some 450 MB; the .deb files stay for the next build.
rm -rf "$stage" "$cache/kernel" "$cache/kernel.unpacked"
echo "$stamp_text" >"$out/stamp"
say "built $out/vmlinuz and $out/initramfs.cpio.gz ($(du -k "$out/initramfs.cpio.gz" | cut -f1) KiB)"
