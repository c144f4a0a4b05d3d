# stress: two disks and the rng at once from parallel loops (run with 2 vCPUs); every block written is read back.
TEST=stress
. /tests/lib.inc

ROUNDS=${ROUNDS:-6}
CHUNK=32 # 64 KiB blocks per round: 2 MiB
cpus=$(nproc)
echo "stress: $cpus CPUs, disks: $(disks | tr '\n' ' ')"
[ "$cpus" -ge 2 ] && pass "$cpus CPUs online" || fail "$cpus CPUs online, wanted 2"
set -- $(disks)
[ $# -ge 2 ] || fail "$# virtio disks, wanted 2"

# Round r of disk d writes pattern d at block offset r * CHUNK, then reads it back.
disk_loop() {
	d=$1
	dd if=/dev/urandom of="/tmp/pat.$d" bs=65536 count=$CHUNK 2>/dev/null
	want=$(sha256sum <"/tmp/pat.$d" | cut -d' ' -f1)
	echo "STRESS disk=$d pattern=$want size=$((CHUNK * 65536)) rounds=$ROUNDS"
	bad=0
	r=0
	while [ $r -lt "$ROUNDS" ]; do
		dd if="/tmp/pat.$d" of="/dev/$d" bs=65536 seek=$((r * CHUNK)) oflag=direct conv=fsync,notrunc 2>/dev/null ||
			bad=$((bad + 1))
		got=$(dd if="/dev/$d" bs=65536 skip=$((r * CHUNK)) count=$CHUNK iflag=direct 2>/dev/null |
			sha256sum | cut -d' ' -f1)
		[ "$got" = "$want" ] || bad=$((bad + 1))
		r=$((r + 1))
	done
	echo "$bad" >"/tmp/res.$d"
}

rng_loop() {
	bad=0
	total=0
	r=0
	while [ $r -lt $((ROUNDS * 2)) ]; do
		n=$(dd if=/dev/hwrng bs=4096 count=4 iflag=fullblock 2>/dev/null | wc -c)
		total=$((total + n))
		[ "$n" = 16384 ] || bad=$((bad + 1))
		r=$((r + 1))
	done
	echo "STRESS rng bytes=$total"
	echo "$bad" >/tmp/res.rng
}

pids=""
for d in "$@"; do
	disk_loop "$d" &
	pids="$pids $!"
done
rng_loop &
pids="$pids $!"
# Every loop must end: a watchdog reports a hang instead of waiting forever.
(sleep 100 && echo "FAIL: stress: loops still running after 100 s (a lost request?)" && poweroff -f) &
dog=$!
for p in $pids; do
	wait "$p"
done
kill "$dog" 2>/dev/null
for d in "$@" rng; do
	bad=$(cat "/tmp/res.$d" 2>/dev/null || echo missing)
	[ "$bad" = 0 ] && pass "$d: every round intact" || fail "$d: $bad bad rounds"
done
finish
