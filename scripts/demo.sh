#!/usr/bin/env bash
# The main job: builds coreio, boots a test guest under coreio-vm (KVM) with
# the example timer/DMA device model served over CoreIO; the guest moves data
# through the device by DMA and checks it. Without KVM, or with --qtest, a
# scripted test-accelerator session plays the CPU instead.
# Usage: scripts/demo.sh [--qtest] [--help]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
	sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
	exit 0
fi
scripts/install-deps.sh
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null
py=/usr/bin/python3
[ -x "$py" ] || py=python3
exec "$py" scripts/demo.py --build build "$@"
