# blk-verify: mounts the first virtio disk and checks the files blk-write left there.
TEST=blk-verify
. /tests/lib.inc

d=$(disks | head -n1)
if [ -z "$d" ] || ! mount -t ext2 -o ro "/dev/$d" /mnt; then
	fail "cannot mount /dev/$d"
	finish
fi
(cd /mnt && sha256sum -c SHA256SUMS) >/tmp/check.log 2>&1 && pass "sha256sum -c SHA256SUMS" ||
	fail "sha256sum -c: $(grep -v ': OK' /tmp/check.log)"
# The deterministic files once more, against content made here and now.
for f in $FILES; do
	name=${f%%:*}
	want=$(gen "$name" "${f#*:}" | sha256sum | cut -d' ' -f1)
	got=$(sha256sum <"/mnt/$name" | cut -d' ' -f1)
	echo "SUM $got $name"
	[ "$want" = "$got" ] && pass "$name matches" || fail "$name: $got, wanted $want"
done
echo "SUM $(sha256sum </mnt/rand.bin | cut -d' ' -f1) rand.bin"
umount /mnt || fail "umount"
finish
