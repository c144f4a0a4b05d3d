# demo: shows the guest using its CoreIO devices (rng, disk), then leaves a shell (coreio.batch=1: powers off).
TEST=demo
. /tests/lib.inc

echo
echo "=== Linux $(uname -r) is running; its virtio devices are CoreIO device models outside QEMU"
for p in /sys/bus/pci/devices/*; do
	[ "$(cat "$p/vendor")" = 0x1af4 ] || continue
	drv=none
	[ -e "$p/driver" ] && drv=$(basename "$(readlink "$p/driver")")
	echo "  PCI ${p##*/}: 1af4:$(cut -c3- "$p/device") driver $drv, BAR 0 at $(head -n1 "$p/resource" | cut -d' ' -f1)"
done
echo
echo "=== 32 bytes from /dev/hwrng ($(cat /sys/class/misc/hw_random/rng_current), served by coreio-virtio-rng):"
if timeout 30 dd if=/dev/hwrng bs=32 count=1 2>/dev/null | hexdump -C; then
	pass "hwrng"
else
	fail "hwrng"
fi
d=$(disks | head -n1)
echo
echo "=== an ext2 file system on /dev/$d (served by coreio-virtio-blk):"
if [ -n "$d" ] && mke2fs -F -L demo "/dev/$d" >/dev/null 2>&1 && mount -t ext2 "/dev/$d" /mnt; then
	echo "hello from a Linux guest, written through CoreIO" >/mnt/hello.txt
	gen demo 1048576 >/mnt/demo.bin
	sync
	(cd /mnt && ls -l hello.txt demo.bin && sha256sum hello.txt demo.bin)
	df -k /mnt | tail -n1
	pass "disk"
else
	fail "disk"
fi
echo
if [ "$(karg batch 0)" = 1 ]; then
	umount /mnt 2>/dev/null
	finish
fi
echo "=== /mnt is the CoreIO disk. Try: cat /mnt/hello.txt; head -c 64 /dev/hwrng | hexdump -C; dmesg | grep virtio"
echo "=== 'exit' (or poweroff -f) ends the VM, the device models and QEMU."
setsid cttyhack sh -l
sync
umount /mnt 2>/dev/null
finish
