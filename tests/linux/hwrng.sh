# hwrng: reads 64 KiB from /dev/hwrng (the virtio-rng device) and prints its sha256 and size.
TEST=hwrng
. /tests/lib.inc

cur=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)
echo "hwrng: rng_current=$cur"
case "$cur" in
virtio_rng*) pass "rng_current is $cur" ;;
*) fail "rng_current is '$cur', not virtio_rng" ;;
esac

if timeout 120 dd if=/dev/hwrng of=/tmp/rng bs=4096 count=16 iflag=fullblock 2>/tmp/dd.err; then
	bytes=$(wc -c </tmp/rng)
	sum=$(sha256sum </tmp/rng | cut -d' ' -f1)
	# 4096 random bytes take nearly all of the 256 values; a stuck source takes few.
	distinct=$(head -c 4096 /tmp/rng | od -An -v -tu1 | tr -s ' ' '\n' | grep . | sort -u | wc -l)
	echo "HWRNG bytes=$bytes sha256=$sum distinct=$distinct"
	[ "$bytes" = 65536 ] && pass "read $bytes bytes" || fail "read $bytes bytes, wanted 65536"
	[ "$distinct" -ge 200 ] && pass "$distinct distinct byte values in 4 KiB" ||
		fail "only $distinct distinct byte values in 4 KiB"
else
	fail "reading /dev/hwrng failed or timed out: $(cat /tmp/dd.err)"
fi
finish
