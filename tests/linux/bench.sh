# bench: sequential write/read MB/s (dd, O_DIRECT) and 4 KiB read IOPS on the first virtio disk; prints BENCH lines.
TEST=bench
. /tests/lib.inc

d=$(disks | head -n1)
[ -n "$d" ] || {
	fail "no virtio disk"
	finish
}
mib=$(karg mib 64)
n4k=$(karg n4k 1000)
nrand=$(karg nrand 200)
sectors=$(cat "/sys/block/$d/size")
blocks=$((sectors / 8))

# Runs a command and prints the microseconds it took (at least 1).
timed() {
	t0=$(now_us)
	"$@" >/dev/null 2>/tmp/bench.err || fail "$*: $(tail -n1 /tmp/bench.err)"
	t1=$(now_us)
	t=$((t1 - t0))
	[ $t -gt 0 ] || t=1
	echo $t
}

# Rates with two decimals from integer arithmetic.
rate() { # AMOUNT MICROSECONDS -> AMOUNT per second
	awk -v a="$1" -v t="$2" 'BEGIN { printf "%.2f", a * 1000000 / t }'
}

[ $((mib * 2048)) -le "$sectors" ] || fail "disk too small for $mib MiB"
t=$(timed dd if=/dev/zero of="/dev/$d" bs=1048576 count="$mib" oflag=direct conv=fsync)
echo "BENCH seq_write_mbs=$(rate "$mib" "$t") mib=$mib us=$t"
t=$(timed dd if="/dev/$d" of=/dev/null bs=1048576 count="$mib" iflag=direct)
echo "BENCH seq_read_mbs=$(rate "$mib" "$t") mib=$mib us=$t"
# One process, one 4 KiB request at a time (queue depth 1).
t=$(timed dd if="/dev/$d" of=/dev/null bs=4096 count="$n4k" iflag=direct)
echo "BENCH read4k_qd1_iops=$(rate "$n4k" "$t") n=$n4k us=$t"
# Random offsets: one dd per read, so the figure includes starting dd.
randloop() {
	i=0
	while [ $i -lt "$nrand" ]; do
		dd if="/dev/$d" of=/dev/null bs=4096 count=1 skip=$(((RANDOM * 32768 + RANDOM) % blocks)) \
			iflag=direct 2>/dev/null || return 1
		i=$((i + 1))
	done
}
t=$(timed randloop)
echo "BENCH randread4k_iops=$(rate "$nrand" "$t") n=$nrand us=$t"
finish
