#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the demo through the
# appliance daemon (`blackbox daemon`, started here in the background as
# systemd would run it): boots the built-in CPU test guest under QEMU
# record/replay, follows its console while the daemon records it into the
# store, lists the recording, verifies a replay byte for byte, and exports the
# log; then labs of guests on the daemon's switch (flows, pcapng, spoofing)
# and manifests (learned, then a misbehaving guest alerted and blocked).
# Recordings go to $BLACKBOX_DATA (default: build/demo-data).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BLACKBOX_BUILD_DIR:-$ROOT/build}
bash "$ROOT/scripts/setup.sh"
export BLACKBOX_GUEST_DIR="$BUILD/guest"
export BLACKBOX_DATA=${BLACKBOX_DATA:-$BUILD/demo-data}
BB="$BUILD/cli/blackbox"
step() { printf '\n=== %s\n' "$*"; }
# `vm start`, its output kept; then the recording id it printed for a VM
# ("web: recording web-2026...").
vm_start() { "$BB" vm start "$@" | tee "$BLACKBOX_DATA/vm-start.out"; }
recording_of() { sed -n "s/^$1: recording \([^ ]*\).*/\1/p" "$BLACKBOX_DATA/vm-start.out"; }

step "0. start the appliance daemon (it owns $BLACKBOX_DATA; log: $BLACKBOX_DATA/daemon.log)"
mkdir -p "$BLACKBOX_DATA"
if "$BB" vm list >/dev/null 2>&1; then
  echo "a daemon already serves $BLACKBOX_DATA: using it"
else
  "$BB" daemon >"$BLACKBOX_DATA/daemon.log" 2>&1 &
  DAEMON=$!
  trap 'kill -TERM $DAEMON 2>/dev/null && wait $DAEMON || true' EXIT
  for _ in $(seq 1 150); do
    "$BB" vm list >/dev/null 2>&1 && break
    kill -0 $DAEMON 2>/dev/null || { cat "$BLACKBOX_DATA/daemon.log"; exit 1; }
    sleep 0.2
  done
fi
"$BB" vm list

step "1. the CPU test guest under the daemon; its console followed until it powers off"
vm_start "$ROOT/examples/cpu.yaml"
ID=$(recording_of cpu-demo)
"$BB" vm console cpu-demo --follow
"$BB" vm wait cpu-demo

step "2. the idle guest beside it, stopped by the operator after 15 s"
"$BB" vm start "$ROOT/examples/idle.yaml"
sleep 15
"$BB" vm list
"$BB" vm stop idle

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
vm_start "$ROOT/examples/lab-http.yaml"
CLIENT=$(recording_of client)
"$BB" vm wait client
"$BB" vm wait web --timeout 2m  # the lab stops at its first exit: the daemon stops the server

step "8. the flows the switch saw for $CLIENT"
"$BB" flows "$CLIENT"

step "9. export $CLIENT's frames as pcapng and read them with tshark"
"$BB" export "$CLIENT" --pcapng "$BLACKBOX_DATA/$CLIENT.pcapng"
tshark -r "$BLACKBOX_DATA/$CLIENT.pcapng" -Y http 2>/dev/null

step "10. a guest that spoofs its MAC and IP: the switch drops and records it"
vm_start "$ROOT/examples/lab-spoof.yaml"
SPOOFER=$(recording_of spoofer)
"$BB" vm wait spoofer
"$BB" vm wait web --timeout 2m
"$BB" console "$SPOOFER" | grep BB-SPOOF
"$BB" export "$SPOOFER" --pcapng "$BLACKBOX_DATA/$SPOOFER.pcapng"
tshark -r "$BLACKBOX_DATA/$SPOOFER.pcapng" -Y frame.comment -T fields -e frame.interface_name \
  -e eth.src -e ip.src -e frame.comment 2>/dev/null | sort | uniq -c

step "11. verify $CLIENT: its network input replays from the rr log, byte for byte"
"$BB" verify "$CLIENT"

step "12. manifests: a normal web/client run, and the client's manifest learned from it"
"$BB" vm start "$ROOT/examples/lab-web.yaml"
"$BB" vm wait client
"$BB" vm wait web --timeout 2m
"$BB" manifest learn client -o "$BLACKBOX_DATA/client-learned.yaml"
sed -n '/^network:/,/^rates:/p' "$BLACKBOX_DATA/client-learned.yaml"

step "13. a client that misbehaves under its enforced manifest (examples/manifests/): it tries port 2222"
SINCE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
vm_start "$ROOT/examples/lab-probe.yaml"
PROBER=$(recording_of client)
"$BB" vm wait client
"$BB" vm wait web --timeout 2m
"$BB" console "$PROBER" | grep BB-PROBE

step "14. the alert, as a person reads it and as a SIEM gets it"
"$BB" alerts --since "$SINCE"
"$BB" alerts --since "$SINCE" --json

step "15. what that recording did that the manifest does not allow"
"$BB" manifest diff "$ROOT/examples/manifests/client.yaml" "$PROBER" || true

step "16. what the daemon did (its log; under systemd: journalctl -u blackbox)"
cat "$BLACKBOX_DATA/daemon.log" 2>/dev/null || true
echo
echo "demo done. Try: $BB replay $ID   (BLACKBOX_DATA=$BLACKBOX_DATA)"
