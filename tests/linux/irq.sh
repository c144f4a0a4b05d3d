# irq: interrupts of the virtio devices arrive (no irqpoll): prints /proc/cmdline, the virtio lines of /proc/interrupts before and after I/O (4 KiB O_DIRECT reads from the first disk, hwrng bytes), the time the reads took and the timer interrupts meanwhile.
TEST=irq
. /tests/lib.inc

n=$(karg n 200)
cmd=$(cat /proc/cmdline)
echo "IRQ cmdline $cmd"
case " $cmd " in
*" irqpoll "*) fail "irqpoll is on the kernel command line" ;;
*) pass "no irqpoll on the kernel command line" ;;
esac

# The sum of the per-CPU counts of the /proc/interrupts lines matching $1 (awk regex).
irq_sum() {
	awk -v re="$1" '$0 ~ re { for (i = 2; i <= NF; i++) { if ($i ~ /^[0-9]+$/) s += $i; else break } }
		END { print s + 0 }' /proc/interrupts
}

# Each device's interrupt mode: the PCI function's msi_irqs (msix or msi), else INTx.
for v in /sys/bus/virtio/devices/*; do
	[ -e "$v" ] || continue
	pdev=$(readlink -f "$v/..")
	modes=""
	for f in "$pdev"/msi_irqs/*; do
		[ -e "$f" ] && modes="$modes ${f##*/}:$(cat "$f")"
	done
	echo "IRQ mode ${v##*/} ${pdev##*/} irq=$(cat "$pdev/irq") ${modes:- intx}"
done
grep virtio /proc/interrupts | sed 's/^ */IRQ before /'
v0=$(irq_sum virtio)

d=$(disks | head -n1)
if [ -n "$d" ]; then
	# N synchronous 4 KiB reads, one at a time, and the local timer interrupts
	# (LOC) meanwhile: completions found only at timer ticks would need a tick each.
	l0=$(irq_sum '^ *LOC:')
	t0=$(now_us)
	if dd if="/dev/$d" of=/dev/null bs=4096 count="$n" iflag=direct 2>/tmp/dd.err; then
		t1=$(now_us)
		l1=$(irq_sum '^ *LOC:')
		echo "IRQ read4k n=$n us=$((t1 - t0)) ticks=$((l1 - l0))"
		pass "$n 4 KiB reads from /dev/$d"
	else
		fail "dd from /dev/$d: $(tail -n1 /tmp/dd.err)"
	fi
	if dd if="/dev/$d" of=/dev/null bs=1048576 count=4 iflag=direct 2>/tmp/dd.err; then
		pass "4 MiB sequential read from /dev/$d"
	else
		fail "sequential dd from /dev/$d: $(tail -n1 /tmp/dd.err)"
	fi
fi
case "$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)" in
virtio_rng*)
	if timeout 60 dd if=/dev/hwrng of=/tmp/rng bs=4096 count=4 iflag=fullblock 2>/tmp/dd.err; then
		echo "IRQ hwrng bytes=$(wc -c </tmp/rng)"
		pass "16 KiB from /dev/hwrng"
	else
		fail "reading /dev/hwrng failed or timed out: $(tail -n1 /tmp/dd.err)"
	fi
	;;
esac

grep virtio /proc/interrupts | sed 's/^ */IRQ after /'
v1=$(irq_sum virtio)
echo "IRQ virtio-count before=$v0 after=$v1"
if [ "$v1" -gt "$v0" ]; then
	pass "the virtio interrupt counts rose from $v0 to $v1"
else
	fail "the virtio interrupt counts did not rise ($v0, then $v1)"
fi
finish
