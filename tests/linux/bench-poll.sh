# bench-poll: polled O_DIRECT reads and writes (io_uring IOPOLL, /bin/blkpoll) on the first virtio disk; prints BENCH lines.
TEST=bench-poll
. /tests/lib.inc

d=$(disks | head -n1)
[ -n "$d" ] || {
	fail "no virtio disk"
	finish
}
poll_setup "$d"
mib=$(karg mib 64)
n4k=$(karg n4k 1000)
nrand=$(karg nrand 200)
pbs=$(karg pbs 524288)
# A fresh seed: data left by an earlier run cannot pass the checks.
seed=$(((RANDOM << 15) | RANDOM))
# Ordinary pages: about one segment per 4 KiB.
blkpoll --write --mib "$mib" --bs "$pbs" --n4k "$n4k" --nrand "$nrand" --seed "$seed" "/dev/$d"
rc=$?
case $rc in
0) pass "polled writes and reads of the seed $seed pattern matched" ;;
3) fail "polled I/O is unavailable" ;;
*) fail "blkpoll exited with status $rc" ;;
esac
# The sequential read again, 1 MiB requests from a huge page: one segment each.
if blkpoll --huge --mib "$mib" --bs 1048576 --n4k 0 --nrand 0 --seed "$seed" "/dev/$d"; then
	pass "polled 1 MiB reads into a huge page matched"
else
	fail "blkpoll --huge exited with status $?"
fi
finish
