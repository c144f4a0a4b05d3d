# io-error: the host kills the disk's model while the guest is idle; reads must fail (not hang), and work again once a new model claims the device.
TEST=io-error
. /tests/lib.inc

d=$(disks | head -n1)
[ -n "$d" ] || {
	fail "no virtio disk"
	finish
}

# Reads block SKIP of the disk with O_DIRECT in the background and waits up to
# WAIT seconds; prints ok, error, garbage or hang. A read stuck in the driver
# cannot be killed, so it is left behind and waited for later.
attempt() {
	n=$1
	rm -f "/tmp/rc.$n"
	(
		dd if="/dev/$d" of="/tmp/out.$n" bs=4096 skip="$1" count=1 iflag=direct 2>"/tmp/err.$n"
		echo $? >"/tmp/rc.$n"
	) &
	i=0
	while [ ! -s "/tmp/rc.$n" ] && [ $i -lt $(($2 * 10)) ]; do
		usleep 100000
		i=$((i + 1))
	done
	if [ ! -s "/tmp/rc.$n" ]; then
		echo hang
	elif [ "$(cat "/tmp/rc.$n")" != 0 ]; then
		echo error
	elif [ "$(sha256sum <"/tmp/out.$n" | cut -d' ' -f1)" = "$(gen "block $1" 4096 | sha256sum | cut -d' ' -f1)" ]; then
		echo ok
	else
		echo garbage
	fi
}

# Known content in blocks 0..15 first.
i=0
while [ $i -lt 16 ]; do
	gen "block $i" 4096
	i=$((i + 1))
done | dd of="/dev/$d" bs=4096 oflag=direct conv=fsync 2>/dev/null || fail "writing the pattern"
r=$(attempt 1 20)
[ "$r" = ok ] && pass "read before the kill: $r" || fail "read before the kill: $r"

# The host answers each READY line on the console once it has done its part.
echo "IOERR READY kill"
read -r -t 180 line || fail "no go-ahead from the host after kill"
r=$(attempt 2 20)
echo "IOERR after-kill $r"
case "$r" in
error) pass "read with the model gone fails: $(tail -n1 /tmp/err.2)" ;;
*) fail "read with the model gone: $r, wanted error" ;;
esac

echo "IOERR READY restart"
read -r -t 180 line || fail "no go-ahead from the host after restart"
r=$(attempt 3 30)
echo "IOERR after-restart $r"
[ "$r" = ok ] && pass "read after the restart: $r" || fail "read after the restart: $r"
# Writes work again too, and read back.
gen "block 9" 4096 | dd of="/dev/$d" bs=4096 seek=9 oflag=direct conv=fsync,notrunc 2>/dev/null &&
	[ "$(attempt 9 30)" = ok ] && pass "write and read back after the restart" ||
	fail "write and read back after the restart"
finish
