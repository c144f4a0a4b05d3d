#!/usr/bin/env bash
# The main job: builds coreio, starts coreio-vm with one vMMIO range and the
# example timer/DMA device model as a CoreIO client, and drives it with a
# scripted test-accelerator (qtest) session playing the CPU.
# Usage: scripts/demo.sh [--help]
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
exec "$py" scripts/demo.py build
