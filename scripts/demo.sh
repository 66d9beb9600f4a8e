#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the demo: boots the built-in
# CPU test guest under QEMU record/replay, records it into the store while it
# runs, lists the recording, verifies a replay byte for byte, and exports the
# log; then labs of guests on Blackbox's switch (flows, pcapng, spoofing) and
# manifests (learned, then a misbehaving guest alerted and blocked).
# Recordings go to $BLACKBOX_DATA (default: build/demo-data).
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

step "7. a lab: an HTTP server and a client guest talking through Blackbox's switch (both recorded)"
"$BB" record "$ROOT/examples/lab-http.yaml"
CLIENT=$("$BB" ls --json | grep '"vm_name":"client"' | tail -1 | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')

step "8. the flows the switch saw for $CLIENT"
"$BB" flows "$CLIENT"

step "9. export $CLIENT's frames as pcapng and read them with tshark"
"$BB" export "$CLIENT" --pcapng "$BLACKBOX_DATA/$CLIENT.pcapng"
tshark -r "$BLACKBOX_DATA/$CLIENT.pcapng" -Y http 2>/dev/null

step "10. a guest that spoofs its MAC and IP: the switch drops and records it"
"$BB" record "$ROOT/examples/lab-spoof.yaml"
SPOOFER=$("$BB" ls --json | grep '"vm_name":"spoofer"' | tail -1 | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
"$BB" console "$SPOOFER" | grep BB-SPOOF
"$BB" export "$SPOOFER" --pcapng "$BLACKBOX_DATA/$SPOOFER.pcapng"
tshark -r "$BLACKBOX_DATA/$SPOOFER.pcapng" -Y frame.comment -T fields -e frame.interface_name \
  -e eth.src -e ip.src -e frame.comment 2>/dev/null | sort | uniq -c

step "11. verify $CLIENT: its network input replays from the rr log, byte for byte"
"$BB" verify "$CLIENT"

step "12. manifests: a normal web/client run, and the client's manifest learned from it"
"$BB" record "$ROOT/examples/lab-web.yaml"
"$BB" manifest learn client -o "$BLACKBOX_DATA/client-learned.yaml"
sed -n '/^network:/,/^rates:/p' "$BLACKBOX_DATA/client-learned.yaml"

step "13. a client that misbehaves under its enforced manifest (examples/manifests/): it tries port 2222"
SINCE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
"$BB" record "$ROOT/examples/lab-probe.yaml"
PROBER=$("$BB" ls --json | grep '"vm_name":"client"' | tail -1 | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
"$BB" console "$PROBER" | grep BB-PROBE

step "14. the alert, as a person reads it and as a SIEM gets it"
"$BB" alerts --since "$SINCE"
"$BB" alerts --since "$SINCE" --json

step "15. what that recording did that the manifest does not allow"
"$BB" manifest diff "$ROOT/examples/manifests/client.yaml" "$PROBER" || true
echo
echo "demo done. Try: $BB replay $ID   (BLACKBOX_DATA=$BLACKBOX_DATA)"
