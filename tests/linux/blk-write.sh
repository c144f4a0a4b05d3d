# blk-write: makes an ext2 file system on the first virtio disk, writes files of known content, syncs, unmounts.
TEST=blk-write
. /tests/lib.inc

d=$(disks | head -n1)
if [ -z "$d" ]; then
	fail "no virtio disk"
	finish
fi
echo "blk-write: disk /dev/$d"
if mke2fs -F -L coreio "/dev/$d" >/tmp/mkfs.log 2>&1; then
	pass "mke2fs /dev/$d"
else
	fail "mke2fs /dev/$d: $(tail -n3 /tmp/mkfs.log)"
	finish
fi
mount -t ext2 "/dev/$d" /mnt || {
	fail "mount /dev/$d"
	finish
}
mkdir -p /mnt/dir/sub
for f in $FILES; do
	gen "${f%%:*}" "${f#*:}" >"/mnt/${f%%:*}" || fail "write ${f%%:*}"
done
dd if=/dev/urandom of=/mnt/rand.bin bs=65536 count=32 2>/dev/null || fail "write rand.bin"
(cd /mnt && sha256sum small.txt a.bin dir/b.bin dir/sub/c.txt rand.bin >SHA256SUMS)
while read -r sum name; do
	echo "SUM $sum $name"
done </mnt/SHA256SUMS
sync
if umount /mnt; then
	pass "files written, synced and unmounted"
else
	fail "umount /mnt"
fi
finish
