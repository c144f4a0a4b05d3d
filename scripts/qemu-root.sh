#!/usr/bin/env bash
# Makes sure ROOT (default $COREIO_QEMU_ROOT, else build/qemu-root) holds a
# Debian trixie root with QEMU >= 10.1 from trixie-backports (QEMU 11.1, whose
# vfio-user-pci device reaches coreio-vm --accel vfio-user; Debian 12's own
# QEMU 7.2 has none), and
# the wrapper ROOT/coreio-qemu-system that runs that QEMU on this host through
# the root's own loader and libraries:
#     ROOT/coreio-qemu-system -machine q35 ...     (same arguments as QEMU)
# When ROOT already has a working QEMU >= 10.1 it only says so (and writes the
# wrapper and its module link when missing or out of date: an existing root is
# brought up to date in well under a second, no download), then checks that
# the wrapper lists every device (-device help). Else it builds the root:
# debootstrap --variant=minbase trixie from deb.debian.org, trixie-backports in
# apt's sources, apt-get install qemu-system-x86 -t trixie-backports in a
# chroot, the wrapper and the same check; about a minute and
# ~500 MB of downloads, needs root (or sudo). It builds in ROOT.tmp and renames
# it to ROOT only once QEMU runs, so an interrupted run never leaves a root that
# looks complete; step output goes to ROOT.log (shown with --verbose).
# --quiet: no "ready" line when the root was already there.
# Exit status: 0 ready; 1 a step failed (the message names it); 2 bad usage;
# 77 skipped: not root and no sudo (nothing was changed).
# Usage: scripts/qemu-root.sh [--verbose | --quiet] [--help] [ROOT]
set -euo pipefail
prog=qemu-root
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
mirror=http://deb.debian.org/debian
suite=trixie
want_major=10
want_minor=1
wrapper_name=coreio-qemu-system

verbose=0
quiet=0
root=
while [ $# -gt 0 ]; do
	case "$1" in
	-h | --help)
		sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	-v | --verbose) verbose=1 ;;
	-q | --quiet) quiet=1 ;;
	-*)
		echo "$prog: unknown option '$1' (--verbose, --quiet, --help)" >&2
		exit 2
		;;
	*)
		if [ -n "$root" ]; then
			echo "$prog: one ROOT only (got '$root' and '$1')" >&2
			exit 2
		fi
		root=$1
		;;
	esac
	shift
done
root=${root:-${COREIO_QEMU_ROOT:-$repo/build/qemu-root}}
root=${root%/}
case "$root" in
/*) ;;
*) root=$PWD/$root ;;
esac
[ "$(basename "$root")" != / ] || {
	echo "$prog: ROOT must not be /" >&2
	exit 2
}
tmp=$root.tmp
log=$root.log

say() { echo "$prog: $*" >&2; }
fail() {
	say "error: $*"
	exit 1
}

# qemu_version DIR: prints "MAJOR MINOR PATCH" of DIR's QEMU run through DIR's loader, or fails.
qemu_version() {
	local dir=$1 out
	[ -x "$dir/usr/bin/qemu-system-x86_64" ] && [ -e "$dir/lib64/ld-linux-x86-64.so.2" ] || return 1
	out=$(QEMU_MODULE_DIR="$dir/usr/lib/x86_64-linux-gnu/qemu" timeout 20 \
		"$dir/lib64/ld-linux-x86-64.so.2" \
		--library-path "$dir/usr/lib/x86_64-linux-gnu:$dir/lib/x86_64-linux-gnu" \
		"$dir/usr/bin/qemu-system-x86_64" --version 2>/dev/null) || return 1
	[[ "$out" =~ version\ ([0-9]+)\.([0-9]+)(\.([0-9]+))? ]] || return 1
	echo "${BASH_REMATCH[1]} ${BASH_REMATCH[2]} ${BASH_REMATCH[4]:-0}"
}

# good_version "MAJOR MINOR PATCH": true when >= the version we need.
good_version() {
	local major minor
	read -r major minor _ <<<"$1"
	[ "$major" -gt $want_major ] || { [ "$major" -eq $want_major ] && [ "$minor" -ge $want_minor ]; }
}

# The wrapper: QEMU from the root, on the host. QEMU_MODULE_DIR makes it load
# the root's modules first; -L finds the root's firmware (some of
# /usr/share/qemu links into /usr/share/seabios). The root's directory is found
# from the wrapper's own path, so the root can be renamed or moved.
#
# QEMU_MODULE_DIR alone is not enough: for a module missing there (the minbase
# root has no qemu-system-modules-opengl/-spice/-gui, which would pull in ~40
# packages, LLVM and Mesa among them) QEMU goes on to its built-in module
# directory, /usr/lib/x86_64-linux-gnu/qemu, which on the host holds QEMU 7.2's
# modules: "Only modules from the same build can be loaded", and QEMU 11.1 then
# aborts (util/module.c: Assertion `QTAILQ_EMPTY(&dso_init_list)'), e.g. on
# -device help, which loads every device module: hw-display-virtio-gpu-pci-gl.so
# (the one that aborts) and ui-opengl.so, which the -gl modules depend on.
# So the root also gets the link $bundle_link -> ../../.. (the root itself): QEMU
# looks for "qemu-bundle" next to its executable (/proc/self/exe, here the
# root's loader in usr/lib/x86_64-linux-gnu) and, when it is there, prefixes
# every built-in path with it (util/cutils.c get_relocated_path), so the module
# directory (and data directory) it falls back to are the root's own and a
# module the root lacks is simply not there.
bundle_link=usr/lib/x86_64-linux-gnu/qemu-bundle
bundle_target=../../..
wrapper_text() {
	cat <<'EOF'
#!/bin/sh
# Written by scripts/qemu-root.sh: QEMU from this Debian trixie root, run on the
# host through the root's own loader and libraries. Arguments as for QEMU.
# The root's usr/lib/x86_64-linux-gnu/qemu-bundle link (-> the root) keeps QEMU
# away from the host's modules in /usr/lib/x86_64-linux-gnu/qemu.
r=$(cd "$(dirname "$0")" && pwd)
QEMU_MODULE_DIR=$r/usr/lib/x86_64-linux-gnu/qemu
export QEMU_MODULE_DIR
exec "$r/lib64/ld-linux-x86-64.so.2" \
	--library-path "$r/usr/lib/x86_64-linux-gnu:$r/lib/x86_64-linux-gnu" \
	"$r/usr/bin/qemu-system-x86_64" -L "$r/usr/share/qemu" -L "$r/usr/share/seabios" "$@"
EOF
}

sudo=()
need_privileges() {
	if [ "$(id -u)" -eq 0 ]; then
		sudo=()
	elif command -v sudo >/dev/null 2>&1; then
		sudo=(sudo)
	else
		say "SKIPPED: cannot $1: it needs root, and this user (uid $(id -u)) is not root and has no sudo."
		say "SKIPPED: without it coreio-qemu uses QEMU 7.2's mpqemu proxy and the vfio-user tests skip; run scripts/qemu-root.sh as root to get QEMU 11.1"
		exit 77
	fi
}

# as_owner DIR COMMAND...: runs COMMAND directly when DIR is writable, else through sudo.
as_owner() {
	local dir=$1
	shift
	if [ -w "$dir" ]; then
		"$@"
	else
		need_privileges "write in $dir"
		"${sudo[@]}" "$@"
	fi
}

# write_wrapper DIR: (re)writes DIR's wrapper and its qemu-bundle link when
# missing or different. The wrapper is written next to it and renamed, so a
# QEMU started meanwhile never runs a half-written one.
write_wrapper() {
	local w=$1/$wrapper_name l=$1/$bundle_link
	if ! [ -L "$l" ] || [ "$(readlink "$l")" != "$bundle_target" ]; then
		if [ -e "$l" ] && ! [ -L "$l" ]; then
			fail "$l exists and is not a symbolic link; remove it"
		fi
		as_owner "$(dirname "$l")" ln -sfn "$bundle_target" "$l" || fail "cannot create $l"
		say "linked $l -> $bundle_target (QEMU's built-in paths now stay in the root)"
	fi
	if [ -x "$w" ] && [ "$(cat "$w")" = "$(wrapper_text)" ]; then
		return 0
	fi
	if [ -w "$1" ]; then
		wrapper_text >"$w.tmp" && chmod 755 "$w.tmp" && mv -f "$w.tmp" "$w"
	else
		need_privileges "write $w"
		wrapper_text | "${sudo[@]}" tee "$w.tmp" >/dev/null && "${sudo[@]}" chmod 755 "$w.tmp" &&
			"${sudo[@]}" mv -f "$w.tmp" "$w"
	fi || fail "cannot write $w"
}

# check_wrapper DIR: the wrapper lists every device (-device help loads every
# device module QEMU knows of), vfio-user-pci among them, without loading a
# module of another QEMU build.
check_wrapper() {
	local w=$1/$wrapper_name out status=0
	out=$(timeout 30 "$w" -machine none -nodefaults -display none -device help 2>&1) || status=$?
	if [ $status -ne 0 ] || ! grep -q '"vfio-user-pci"' <<<"$out" ||
		grep -q 'failed to initialize module' <<<"$out"; then
		say "error: '$w -device help' failed (exit status $status), loaded a foreign module or does not list vfio-user-pci:"
		grep -vE '^(name |$)|devices:$' <<<"$out" | tail -n 8 | sed 's/^/    /' >&2
		exit 1
	fi
}

# The quick path: a complete root.
if v=$(qemu_version "$root") && good_version "$v"; then
	write_wrapper "$root"
	check_wrapper "$root"
	read -r major minor patch <<<"$v"
	[ $quiet -eq 1 ] || say "QEMU $major.$minor.$patch ready in $root (run it as $root/$wrapper_name)"
	exit 0
fi

# Something at ROOT that is not a working root: only ever replace a Debian root
# (an earlier build, or one whose QEMU is too old), never anything else.
if [ -e "$root" ]; then
	if [ -d "$root" ] && { [ -z "$(ls -A "$root")" ] || [ -f "$root/etc/debian_version" ]; }; then
		if v=$(qemu_version "$root"); then
			say "$root has QEMU ${v// /.}, older than $want_major.$want_minor: rebuilding it"
		else
			say "$root holds no working QEMU: rebuilding it"
		fi
	else
		fail "$root exists and is not a Debian root; remove it or name another ROOT"
	fi
fi

need_privileges "build the QEMU $want_major.$want_minor+ root in $root (debootstrap and chroot)"
export DEBIAN_FRONTEND=noninteractive

# run STEP-DESCRIPTION COMMAND...: runs a step, its output to the log (and the
# terminal with --verbose); on failure names the step and shows the log's end.
run() {
	local what=$1 status=0
	shift
	echo "=== $what: $*" >>"$log"
	if [ $verbose -eq 1 ]; then
		"$@" 2>&1 | tee -a "$log" || status=${PIPESTATUS[0]}
	else
		"$@" >>"$log" 2>&1 || status=$?
	fi
	if [ "$status" -ne 0 ]; then
		say "error: $what failed (exit status $status); the end of $log:"
		tail -n 15 "$log" | sed 's/^/    /' >&2
		exit 1
	fi
}

# remove_tree DIR: unmounts what an interrupted debootstrap or chroot left
# mounted below DIR (proc, sys, ...), then removes DIR.
remove_tree() {
	local dir=$1 m
	[ -e "$dir" ] || return 0
	while read -r m; do
		"${sudo[@]}" umount -l "$m" 2>/dev/null || true
	done < <(awk -v d="$dir" 'index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r)
	"${sudo[@]}" rm -rf --one-file-system "$dir"
}

mkdir -p "$(dirname "$root")" 2>/dev/null || "${sudo[@]}" mkdir -p "$(dirname "$root")" ||
	fail "cannot create $(dirname "$root")"
: >"$log" 2>/dev/null || log=$(mktemp "/tmp/$prog.XXXXXX.log")
say "building a Debian $suite root with QEMU from $suite-backports in $root"
say "(about a minute, ~500 MB from $mirror; step output in $log)"
if ! command -v debootstrap >/dev/null 2>&1 && ! [ -x /usr/sbin/debootstrap ]; then
	say "installing debootstrap (apt-get)"
	run "apt-get update" "${sudo[@]}" apt-get update -q
	run "apt-get install debootstrap" "${sudo[@]}" apt-get install -y -q --no-install-recommends debootstrap
fi
debootstrap=$(command -v debootstrap || echo /usr/sbin/debootstrap)

remove_tree "$tmp"
say "debootstrap --variant=minbase $suite $tmp"
run "debootstrap" "${sudo[@]}" "$debootstrap" --variant=minbase "$suite" "$tmp" "$mirror"
echo "deb $mirror $suite-backports main" |
	"${sudo[@]}" tee "$tmp/etc/apt/sources.list.d/$suite-backports.list" >/dev/null ||
	fail "cannot write $tmp/etc/apt/sources.list.d/$suite-backports.list"
say "apt-get update in the root"
run "apt-get update (in $tmp)" "${sudo[@]}" chroot "$tmp" apt-get update -q
say "apt-get install qemu-system-x86 from $suite-backports in the root"
run "apt-get install qemu-system-x86 (in $tmp)" "${sudo[@]}" chroot "$tmp" \
	env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	-t "$suite-backports" qemu-system-x86
run "apt-get clean (in $tmp)" "${sudo[@]}" chroot "$tmp" apt-get clean

v=$(qemu_version "$tmp") || fail "the QEMU installed in $tmp does not run on this host (try it: $tmp/usr/bin/qemu-system-x86_64 through $tmp/lib64/ld-linux-x86-64.so.2)"
good_version "$v" || fail "$suite-backports gave QEMU ${v// /.}, older than $want_major.$want_minor"
write_wrapper "$tmp"
check_wrapper "$tmp"
remove_tree "$root"
"${sudo[@]}" mv "$tmp" "$root" || fail "cannot rename $tmp to $root"
read -r major minor patch <<<"$v"
say "QEMU $major.$minor.$patch ready in $root (run it as $root/$wrapper_name)"
