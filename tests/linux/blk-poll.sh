# blk-poll: polled reads (io_uring IOPOLL, /bin/blkpoll) of the pattern the host wrote, then polled writes of a new one for the host to check.
TEST=blk-poll
. /tests/lib.inc

d=$(disks | head -n1)
[ -n "$d" ] || {
	fail "no virtio disk"
	finish
}
poll_setup "$d"
if [ "$(cat "/sys/block/$d/queue/io_poll")" = 1 ]; then
	pass "$d has a poll queue"
else
	fail "$d has no poll queue"
fi
mib=$(karg mib 4)
seed=$(karg seed 1)
wseed=$(karg wseed 2)
# Every word checked; 64 KiB sequential requests, 64 + 64 4 KiB reads.
if blkpoll --check full --mib "$mib" --bs 65536 --n4k 64 --nrand 64 --seed "$seed" "/dev/$d"; then
	pass "polled reads of the host's seed $seed pattern matched"
else
	fail "polled reads of the host's pattern: blkpoll exited with status $?"
fi
# A new pattern written polled in 256 KiB requests, read back polled.
if blkpoll --write --check full --mib "$mib" --bs 262144 --n4k 16 --nrand 16 --seed "$wseed" "/dev/$d"; then
	pass "polled writes of the seed $wseed pattern read back"
else
	fail "polled writes: blkpoll exited with status $?"
fi
finish
