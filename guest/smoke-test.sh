#!/usr/bin/env bash
# Boot every role of the Blackbox test guest under QEMU (TCG, -icount
# shift=auto) and check its markers. See --help.
set -euo pipefail

PROG=smoke-test.sh

usage() {
	cat <<'EOF'
Usage: smoke-test.sh [--help] [--keep] GUESTDIR [ROLE...]

Boots OUTDIR/vmlinuz + OUTDIR/initrd.img (as built by build-guest.sh) with
qemu-system-x86_64 -accel tcg -icount shift=auto and checks the markers of
each role (default: all of cpu disk-writer idle counter http spoofer error).
Expected checksums are recomputed on the host with the same busybox.
Prints wall-clock times (seconds since QEMU start) of the markers.

  --keep    keep the scratch directory (serial logs, disk image)

Environment: QEMU (default qemu-system-x86_64), QEMU_TIMEOUT (default 120 s).
EOF
}

die() {
	echo "$PROG: error: $*" >&2
	exit 1
}

KEEP=0
GUEST=
ROLES=()
while [[ $# -gt 0 ]]; do
	case "$1" in
	-h | --help)
		usage
		exit 0
		;;
	--keep) KEEP=1 ;;
	-*) die "unknown option '$1' (see --help)" ;;
	*)
		if [[ -z $GUEST ]]; then GUEST=$1; else ROLES+=("$1"); fi
		;;
	esac
	shift
done
[[ -n $GUEST ]] || {
	usage >&2
	die "missing GUESTDIR"
}
[[ -f $GUEST/vmlinuz && -f $GUEST/initrd.img ]] || die "no vmlinuz/initrd.img in $GUEST (run build-guest.sh first)"
[[ ${#ROLES[@]} -gt 0 ]] || ROLES=(cpu disk-writer idle counter http spoofer error)

QEMU=${QEMU:-qemu-system-x86_64}
QEMU_TIMEOUT=${QEMU_TIMEOUT:-120}
command -v "$QEMU" >/dev/null || die "$QEMU not found"
BUSYBOX=/bin/busybox
[[ -x $BUSYBOX ]] || die "$BUSYBOX (busybox-static) not found"
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
INIT=$SCRIPT_DIR/init.sh

SCRATCH=$(mktemp -d /tmp/bb-guest-smoke.XXXXXX)
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [[ $KEEP -eq 1 ]]; then echo "scratch kept in $SCRATCH"; else rm -rf "$SCRATCH"; fi
}
trap cleanup EXIT

FAILED=0
fail() {
	echo "FAIL: $*"
	FAILED=1
}
ok() { echo "ok:   $*"; }

# start_vm NAME APPEND [QEMU ARGS...]: boots in the background; serial output
# goes to $SCRATCH/NAME.log as "<seconds since start> <line>".
start_vm() {
	local name=$1 append=$2
	shift 2
	local log=$SCRATCH/$name.log
	: >"$log"
	local t0
	t0=$(date +%s%N)
	timeout "$QEMU_TIMEOUT" "$QEMU" -accel tcg -icount shift=auto -nodefaults -no-user-config \
		-machine pc -m 256 -display none -serial stdio \
		-kernel "$GUEST/vmlinuz" -initrd "$GUEST/initrd.img" \
		-append "console=ttyS0 quiet panic=-1 $append" "$@" </dev/null 2>"$SCRATCH/$name.err" \
		> >(stdbuf -oL tr -d '\r' | while IFS= read -r line; do
			now=$(date +%s%N)
			printf '%d.%03d %s\n' $(((now - t0) / 1000000000)) $((((now - t0) / 1000000) % 1000)) "$line"
		done >>"$log") &
	# $! is timeout(1), which passes SIGTERM on to QEMU
	PIDS+=($!)
	VM_PID=$!
}

# wait_marker NAME REGEX [SECONDS]: wait until the log has a matching line.
wait_marker() {
	local name=$1 re=$2 secs=${3:-$QEMU_TIMEOUT} i=0
	while ! grep -qE "^[0-9.]+ ($re)" "$SCRATCH/$name.log"; do
		sleep 0.2
		i=$((i + 1))
		if [[ $i -gt $((secs * 5)) ]]; then
			echo "--- $name.log:"
			cat "$SCRATCH/$name.log"
			return 1
		fi
	done
}

# marker NAME REGEX: the first matching line, without the timestamp
marker() { grep -E "^[0-9.]+ ($2)" "$SCRATCH/$1.log" | head -n1 | cut -d' ' -f2-; }
# when NAME REGEX: wall time of the first matching line
when() { grep -E "^[0-9.]+ ($2)" "$SCRATCH/$1.log" | head -n1 | cut -d' ' -f1; }

# wait for the background QEMU of the last start_vm to exit; its rc in VM_RC
wait_exit() {
	local i=0
	while kill -0 "$VM_PID" 2>/dev/null; do
		sleep 0.2
		i=$((i + 1))
		[[ $i -lt $((${1:-60} * 5)) ]] || return 1
	done
	return 0
}

# host-side expectations, computed with the same busybox and init.sh code
init_value() { sed -n "s/^$1=\([0-9]*\)$/\1/p" "$INIT"; }
expected_cpu() {
	local rounds=$1 lines
	lines=$(init_value CPU_LINES)
	"$BUSYBOX" sh -c '
		h=$(echo "blackbox-cpu" | md5sum | cut -d" " -f1); i=1
		while [ $i -le '"$rounds"' ]; do
			seed=$(( (0x$(echo "$h" | cut -c1-7) + i) % 2147483648 ))
			h=$(awk -v x="$seed" -v n='"$lines"' -v r="$i" "BEGIN { for (j = 0; j < n; j++) { x = (x * 69069 + 1) % 2147483648; printf \"%d %d %d\n\", r, j, x } }" | md5sum | cut -d" " -f1)
			i=$((i + 1))
		done; echo $h'
}
expected_disk() {
	local i
	for ((i = 1; i <= $1; i++)); do
		printf 'record %08d\n' "$i" | dd bs=512 count=1 iflag=fullblock conv=sync status=none
	done | md5sum | cut -d' ' -f1
}
expected_big() {
	"$BUSYBOX" sh -c "BIGSIZE=$1; $(sed -n '/^make_big()/,/^}/p' "$INIT"); make_big $SCRATCH/big.expected" &&
		md5sum <"$SCRATCH/big.expected" | cut -d' ' -f1
}

free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 20000))
		if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then
			echo "$p"
			return
		fi
	done
}

test_cpu() {
	local rounds
	rounds=$(init_value CPU_ROUNDS_DEFAULT)
	start_vm cpu "bb.role=cpu bb.poweroff=1 bb.debug=1"
	wait_marker cpu 'BB-DONE' || {
		fail "cpu: no BB-DONE"
		return
	}
	wait_exit 30 || fail "cpu: QEMU did not exit after poweroff"
	local got exp
	got=$(marker cpu 'BB-CPU-RESULT' | cut -d' ' -f2)
	exp=$(expected_cpu "$rounds")
	[[ $got == "$exp" ]] && ok "cpu result $got (host agrees)" || fail "cpu result $got, host computed $exp"
	[[ $(grep -c 'BB-CPU-ROUND' "$SCRATCH/cpu.log") -eq $rounds ]] || fail "cpu: expected $rounds BB-CPU-ROUND lines"
	local ustart uend
	ustart=$(marker cpu 'BB-DEBUG uptime=[0-9.]+ cpu start' | sed 's/.*uptime=\([0-9.]*\).*/\1/')
	uend=$(marker cpu 'BB-DEBUG uptime=[0-9.]+ cpu end' | sed 's/.*uptime=\([0-9.]*\).*/\1/')
	echo "      boot: BB-BOOT at $(when cpu BB-BOOT)s wall, BB-READY at $(when cpu BB-READY)s wall" \
		"(guest uptime $(marker cpu 'BB-DEBUG uptime=[0-9.]+ init' | sed 's/.*uptime=\([0-9.]*\).*/\1/')s at /init)"
	echo "      cpu work: guest $(echo "$uend - $ustart" | bc)s," \
		"wall $(echo "$(when cpu 'BB-CPU-RESULT') - $(when cpu 'BB-READY')" | bc)s ($rounds rounds)"
}

test_disk() {
	truncate -s 16M "$SCRATCH/disk.raw"
	start_vm disk "bb.role=disk-writer bb.poweroff=1" -drive file="$SCRATCH/disk.raw",format=raw,if=virtio
	wait_marker disk 'BB-DONE|BB-ERROR' || {
		fail "disk-writer: no BB-DONE"
		return
	}
	wait_exit 30 || fail "disk-writer: QEMU did not exit after poweroff"
	local got exp img
	got=$(marker disk 'BB-DISK-RESULT' | cut -d' ' -f2)
	exp=$(expected_disk 200)
	img=$(head -c $((200 * 512)) "$SCRATCH/disk.raw" | md5sum | cut -d' ' -f1)
	[[ $(grep -c 'BB-DISK-RECORD' "$SCRATCH/disk.log") -eq 4 ]] || fail "disk-writer: expected 4 BB-DISK-RECORD lines"
	if [[ $got == "$exp" && $img == "$exp" ]]; then
		ok "disk-writer result $got (host formula and disk image agree)"
	else
		fail "disk-writer result '$got', host formula $exp, disk image $img"
	fi
	echo "      disk: BB-READY $(when disk BB-READY)s, BB-DISK-RESULT $(when disk BB-DISK-RESULT)s wall"
}

test_idle() {
	start_vm idle "bb.role=idle"
	wait_marker idle 'BB-READY' || {
		fail "idle: no BB-READY"
		return
	}
	local n
	n=$(wc -l <"$SCRATCH/idle.log")
	sleep 5
	[[ $(wc -l <"$SCRATCH/idle.log") -eq $n ]] && ok "idle: BB-READY at $(when idle BB-READY)s wall, silent afterwards" ||
		fail "idle: output after BB-READY"
	kill "$VM_PID" 2>/dev/null || true
}

test_counter() {
	local port
	port=$(free_port)
	start_vm counter "bb.role=counter" -netdev user,id=n0,hostfwd=tcp:127.0.0.1:"$port"-:80 \
		-device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:01
	wait_marker counter 'BB-COUNTER 3' || {
		fail "counter: no BB-COUNTER 3"
		return
	}
	local body
	body=$(curl -s --noproxy '*' -m 10 "http://127.0.0.1:$port/counter" 2>/dev/null ||
		"$BUSYBOX" wget -q -O - "http://127.0.0.1:$port/counter" 2>/dev/null || true)
	if [[ $body =~ ^[0-9]+$ && $body -ge 3 ]]; then
		ok "counter: BB-COUNTER lines, http /counter = $body"
	else
		fail "counter: http /counter returned '$body'"
	fi
	local c3 c1
	c1=$(when counter 'BB-COUNTER 1')
	c3=$(when counter 'BB-COUNTER 3')
	echo "      counter: BB-READY $(when counter BB-READY)s, ticks 1..3 took $(echo "$c3 - $c1" | bc)s wall"
	kill "$VM_PID" 2>/dev/null || true
}

test_http() {
	local port spid
	port=$(free_port)
	start_vm server "bb.role=http-server bb.ip=10.0.0.1/24" \
		-netdev socket,id=n0,listen=127.0.0.1:"$port" -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:01
	spid=$VM_PID
	sleep 1
	start_vm client "bb.role=http-client bb.ip=10.0.0.2/24 bb.peer=10.0.0.1 bb.poweroff=1" \
		-netdev socket,id=n0,connect=127.0.0.1:"$port" -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:02
	wait_marker client 'BB-DONE' || {
		fail "http-client: no BB-DONE"
		kill "$spid" 2>/dev/null || true
		return
	}
	wait_exit 30 || fail "http-client: QEMU did not exit after poweroff"
	kill "$spid" 2>/dev/null || true
	local srv cli exp
	srv=$(marker server 'BB-HTTP-BIG' | cut -d' ' -f2)
	cli=$(marker client 'BB-HTTP-OK' | cut -d' ' -f2)
	exp=$(expected_big 4)
	if [[ -n $cli && $cli == "$srv" && $cli == "$exp" ]]; then
		ok "http: client got big.bin $cli (server and host agree)"
	else
		fail "http: client '$cli' ($(marker client 'BB-HTTP-FAIL')), server '$srv', host $exp"
	fi
	local markers
	markers=$(grep -oE 'BB-HTTP-(START|OK|FAIL)' "$SCRATCH/client.log" | tr '\n' ' ')
	[[ $markers == "BB-HTTP-START BB-HTTP-OK " ]] || fail "http-client: markers '$markers', expected BB-HTTP-START then BB-HTTP-OK"
	echo "      http: server BB-READY $(when server BB-READY)s, client BB-HTTP-START $(when client BB-HTTP-START)s," \
		"BB-HTTP-OK $(when client BB-HTTP-OK)s wall (each since its own QEMU start)"
}

# spoofer next to an http-server on a direct link: nothing filters the forged
# frames, so the server answers all of them.
test_spoofer() {
	local port spid
	port=$(free_port)
	start_vm spserver "bb.role=http-server bb.ip=10.0.0.1/24" \
		-netdev socket,id=n0,listen=127.0.0.1:"$port" -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:01
	spid=$VM_PID
	sleep 1
	start_vm spoofer "bb.role=spoofer bb.ip=10.0.0.3/24 bb.peer=10.0.0.1 bb.poweroff=1" \
		-netdev socket,id=n0,connect=127.0.0.1:"$port" -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:03
	wait_marker spoofer 'BB-DONE|BB-ERROR' || {
		fail "spoofer: no BB-DONE"
		kill "$spid" 2>/dev/null || true
		return
	}
	wait_exit 30 || fail "spoofer: QEMU did not exit after poweroff"
	kill "$spid" 2>/dev/null || true
	local got exp
	got=$(grep -oE 'BB-(SPOOF-[A-Z-]+( [0-9]+)?|DONE|ERROR.*)' "$SCRATCH/spoofer.log" | tr '\n' ',')
	exp="BB-SPOOF-PEER-OK,BB-SPOOF-IP-SENT 3,BB-SPOOF-IP-REPLIES 3,BB-SPOOF-MAC-SENT 3,BB-SPOOF-MAC-REPLIES 3,BB-DONE,"
	[[ $got == "$exp" ]] && ok "spoofer: forged IP and MAC pings sent and answered on a direct link" ||
		fail "spoofer: markers '$got', expected '$exp'"
	echo "      spoofer: BB-READY $(when spoofer BB-READY)s, BB-SPOOF-PEER-OK $(when spoofer BB-SPOOF-PEER-OK)s," \
		"BB-DONE $(when spoofer BB-DONE)s wall"
}

test_error() {
	start_vm error "bb.role=no-such-role"
	wait_marker error 'BB-ERROR' 60 || {
		fail "unknown role: no BB-ERROR"
		return
	}
	if wait_exit 30; then
		ok "unknown role: '$(marker error BB-ERROR)', QEMU powered off"
	else
		fail "unknown role: QEMU still running after BB-ERROR"
	fi
}

for r in "${ROLES[@]}"; do
	case "$r" in
	cpu) test_cpu ;;
	disk-writer | disk) test_disk ;;
	idle) test_idle ;;
	counter) test_counter ;;
	http | http-server | http-client) test_http ;;
	spoofer) test_spoofer ;;
	error) test_error ;;
	*) die "unknown test '$r'" ;;
	esac
done

if [[ $FAILED -ne 0 ]]; then
	echo "smoke test FAILED (logs: use --keep)"
	exit 1
fi
echo "smoke test passed"
