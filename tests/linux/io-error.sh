# io-error: the host kills the disk's model while the guest is idle; the disk must leave the guest and I/O to it fail (not hang), and a disk must come back and work once a new model claims the device.
TEST=io-error
. /tests/lib.inc

d=$(disks | head -n1)
[ -n "$d" ] || {
	fail "no virtio disk"
	finish
}

# Runs CMD (a shell command) in the background and waits up to WAIT seconds;
# prints done (status 0), error (another status; /tmp/err.N holds the last
# message) or hang. I/O stuck in the driver cannot be killed, so it is left
# behind.
# usage: try N WAIT CMD
try() {
	rm -f "/tmp/rc.$1" "/tmp/err.$1"
	(
		eval "$3" 2>"/tmp/err.$1"
		echo $? >"/tmp/rc.$1"
	) &
	i=0
	while [ ! -s "/tmp/rc.$1" ] && [ $i -lt $(($2 * 10)) ]; do
		usleep 100000
		i=$((i + 1))
	done
	if [ ! -s "/tmp/rc.$1" ]; then
		echo hang
	elif [ "$(cat "/tmp/rc.$1")" != 0 ]; then
		echo error
	else
		echo done
	fi
}

# The last line of the messages of try N.
msg() {
	tail -n1 "/tmp/err.$1"
}

# Is file F under /mnt the deterministic content "coreio NAME" (lib.inc's gen)?
# usage: check N NAME SIZE -> ok, garbage, error or hang
check() {
	r=$(try "$1" 20 "cat /mnt/$2 >/tmp/out.$1")
	if [ "$r" = done ]; then
		if [ "$(sha256sum <"/tmp/out.$1" | cut -d' ' -f1)" = "$(gen "$2" "$3" | sha256sum | cut -d' ' -f1)" ]; then
			r=ok
		else
			r=garbage
		fi
	fi
	echo "$r"
}

# Waits up to $2 seconds until the test $1 holds; prints the seconds it took, or never.
wait_until() {
	t0=$(now_cs)
	while ! eval "$1"; do
		if [ $(($(now_cs) - t0)) -gt $(($2 * 100)) ]; then
			echo never
			return 1
		fi
		usleep 100000
	done
	t=$(($(now_cs) - t0))
	printf '%d.%02d\n' $((t / 100)) $((t % 100))
}

# Files of known content, then the file system mounted read-only: nothing is
# dirty when the device goes, and nothing is cached but what was read.
mke2fs -F -q "/dev/$d" >/tmp/mkfs.log 2>&1 || fail "mke2fs /dev/$d: $(tail -n2 /tmp/mkfs.log)"
mount -t ext2 "/dev/$d" /mnt || fail "mount /dev/$d"
for f in one.txt two.txt; do
	gen "$f" 262144 >"/mnt/$f" || fail "write $f"
done
sync
umount /mnt || fail "umount /mnt"
mount -t ext2 -o ro "/dev/$d" /mnt || fail "mount -o ro /dev/$d"
r=$(check 1 one.txt 262144)
[ "$r" = ok ] && pass "read before the kill: $r" || fail "read before the kill: $r"

# The host answers each READY line on the console once it has done its part.
echo "IOERR READY kill"
read -r -t 180 line || fail "no go-ahead from the host after kill"
# coreio-qemu unplugs the device within a fraction of a second (ACPI
# hot-plug). No I/O may reach the dead device before it is gone: Linux 6.1's
# virtio_blk has no timeout, and del_gendisk() would wait for it forever.
t=$(wait_until '[ ! -e "/sys/block/$d" ]' 20)
echo "IOERR gone $t"
if [ "$t" = never ]; then
	echo "IOERR after-kill hang"
	fail "/dev/$d still present 20 s after the model was killed"
else
	pass "/dev/$d left the guest ${t} s after the go-ahead"
	# Reading the file system of the removed disk: I/O errors (EIO), not a hang.
	r=$(check 2 two.txt 262144)
	echo "IOERR after-kill $r"
	[ "$r" = error ] && pass "read of a file on the removed disk fails: $(msg 2)" ||
		fail "read of a file on the removed disk: $r, wanted error"
	r=$(try 3 20 "dd if=/dev/$d of=/dev/null bs=4096 count=1 iflag=direct")
	[ "$r" = error ] && pass "opening /dev/$d fails: $(msg 3)" ||
		fail "opening /dev/$d after the kill: $r, wanted error"
fi
r=$(try 4 20 "umount /mnt")
[ "$r" = done ] && pass "umount of the removed disk's file system" || fail "umount after the kill: $r $(msg 4)"

echo "IOERR READY restart"
read -r -t 180 line || fail "no go-ahead from the host after restart"
t=$(wait_until '[ -n "$(disks)" ]' 30)
d=$(disks | head -n1)
echo "IOERR back $t $d"
if [ "$t" = never ]; then
	fail "no virtio disk 30 s after the model was restarted"
	finish
fi
pass "a disk (/dev/$d) is probed again ${t} s after the go-ahead"
mount -t ext2 "/dev/$d" /mnt || fail "mount /dev/$d after the restart"
r=$(check 5 two.txt 262144)
echo "IOERR after-restart $r"
[ "$r" = ok ] && pass "read of known data after the restart: $r" || fail "read after the restart: $r"
# Writes work again too, and read back after a remount.
gen three.txt 131072 >/mnt/three.txt && sync && umount /mnt && mount -t ext2 -o ro "/dev/$d" /mnt &&
	[ "$(check 6 three.txt 131072)" = ok ] && pass "write, remount and read back after the restart" ||
	fail "write, remount and read back after the restart"
umount /mnt || fail "final umount"
finish
