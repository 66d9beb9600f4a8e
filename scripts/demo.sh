#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the demo: boots the built-in
# CPU test guest under QEMU record/replay, records it into the store while it
# runs, lists the recording, verifies a replay byte for byte, and exports the
# log. Recordings go to $BLACKBOX_DATA (default: build/demo-data).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BLACKBOX_BUILD_DIR:-$ROOT/build}
bash "$ROOT/scripts/setup.sh"
export BLACKBOX_GUEST_DIR="$BUILD/guest"
export BLACKBOX_DATA=${BLACKBOX_DATA:-$BUILD/demo-data}
BB="$BUILD/cli/blackbox"
step() { printf '\n=== %s\n' "$*"; }

step "1. record the CPU test guest (its console follows; it powers off when done)"
"$BB" record --console --snapshot-every 3s "$ROOT/examples/cpu.yaml"
ID=$("$BB" ls --json | tail -1 | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')

step "2. record the idle guest for 15 s (stopped by Blackbox, like Ctrl-C)"
"$BB" record --for 15s "$ROOT/examples/idle.yaml"

step "3. list recordings"
"$BB" ls

step "4. show $ID"
"$BB" show "$ID"

step "5. verify $ID: chunk chain + headless replay, console compared byte for byte"
"$BB" verify "$ID"

step "6. export $ID's rr log for QEMU"
"$BB" export "$ID" --rr "$BLACKBOX_DATA/$ID.rr"
ls -l "$BLACKBOX_DATA/$ID.rr"
echo
echo "demo done. Try: $BB replay $ID   (BLACKBOX_DATA=$BLACKBOX_DATA)"
