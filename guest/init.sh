#!/bin/sh
# Blackbox test guest: /init of the initramfs (runs as PID 1 under busybox ash).
#
# The behaviour is selected on the kernel command line (see guest/README.md):
#   bb.role=idle|cpu|disk-writer|disk-sync|counter|http-server|http-client|http-get|http-loop|prober|spoofer|panic|cx-flags|switch-root
#   bb.rounds=N bb.records=N bb.count=N bb.bigsize=MiB bb.ip=A.B.C.D/NN bb.peer=A.B.C.D
#   bb.path=/URL-PATH bb.port=N
#   bb.wait=N bb.poweroff=1 bb.debug=1
#
# Every marker is one line on the console (ttyS0) starting with "BB-".
# Everything this script prints must be deterministic for identical inputs
# (apart from BB-DEBUG lines, which are only printed with bb.debug=1), so that
# a recorded run and its replay produce the same console output.

# Kernel modules, loaded in exactly this order. guest/build-guest.sh reads this
# line to know which modules to put into the initramfs.
# Loaded only by bb.role=switch-root, in this order: what mounting an ext4
# root needs. guest/build-guest.sh reads this line too.
BB_ROOT_MODULES="crc16 mbcache jbd2 crc32c_generic ext4"
BB_MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net virtio_blk e1000 pvpanic pvpanic-pci"

# Work per cpu round (numbers generated and hashed) and the default number of
# rounds: ~4 s of guest time under plain TCG with -icount shift=auto.
CPU_LINES=3000
CPU_ROUNDS_DEFAULT=10

PATH=/bin:/sbin:/usr/bin:/usr/sbin
export PATH
umask 022

mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev
# The kernel opened /dev/console before /init ran; re-open it from devtmpfs in
# case the initramfs had no usable node (console=ttyS0 makes this the serial port).
if [ -c /dev/console ]; then
	exec </dev/console >/dev/console 2>&1
fi
mkdir -p /dev/pts /dev/shm
ln -sf /proc/self/fd /dev/fd 2>/dev/null

# ---------------------------------------------------------------------------
# Command line
ROLE=
ROUNDS=$CPU_ROUNDS_DEFAULT
RECORDS=200
COUNT=30
BIGSIZE=4
IP=
PEER=
URLPATH=/
PORT=2222
WAIT=120
POWEROFF=0
DEBUG=0
set -f # no globbing of command line words
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	bb.role=*) ROLE=${arg#bb.role=} ;;
	bb.rounds=*) ROUNDS=${arg#bb.rounds=} ;;
	bb.records=*) RECORDS=${arg#bb.records=} ;;
	bb.count=*) COUNT=${arg#bb.count=} ;;
	bb.bigsize=*) BIGSIZE=${arg#bb.bigsize=} ;;
	bb.ip=*) IP=${arg#bb.ip=} ;;
	bb.peer=*) PEER=${arg#bb.peer=} ;;
	bb.path=*) URLPATH=${arg#bb.path=} ;;
	bb.port=*) PORT=${arg#bb.port=} ;;
	bb.wait=*) WAIT=${arg#bb.wait=} ;;
	bb.poweroff=*) POWEROFF=${arg#bb.poweroff=} ;;
	bb.debug=*) DEBUG=${arg#bb.debug=} ;;
	esac
done
set +f

forever() {
	while :; do sleep 3600; done
}

power_off() {
	sync
	# -f: call reboot(RB_POWER_OFF) directly (ACPI S5 -> QEMU exits).
	busybox poweroff -f
	forever
}

# Fatal problem: always power off so that a waiting test fails fast.
fatal() {
	echo "BB-ERROR $*"
	power_off
}

# Role finished: print BB-DONE, power off if asked to, else stay idle.
done_() {
	echo "BB-DONE"
	[ "$POWEROFF" = 1 ] && power_off
	forever
}

debug() {
	[ "$DEBUG" = 1 ] || return 0
	read -r up _ </proc/uptime
	echo "BB-DEBUG uptime=$up $*"
}

is_uint() {
	case "$1" in
	'' | *[!0-9]*) return 1 ;;
	esac
	return 0
}

# NB: never use "wget -T": busybox-static 1.35 (bookworm) wget segfaults with it.
md5_of() { # md5 of stdin, hex only
	md5sum | cut -d' ' -f1
}

echo "BB-BOOT role=$ROLE"
debug "init started"

for v in ROUNDS RECORDS COUNT BIGSIZE WAIT PORT; do
	eval "val=\$$v"
	is_uint "$val" || fatal "bad parameter bb.$(echo "$v" | tr 'A-Z' 'a-z')=$val (need an unsigned integer)"
done

# ---------------------------------------------------------------------------
# Kernel modules
KVER=$(uname -r)
for m in $BB_MODULES; do
	insmod "/lib/modules/$KVER/$m.ko" || echo "BB-WARN insmod $m failed"
done
debug "modules loaded"

# Guest uptime in centiseconds -> $CS (no fork). Timeouts are measured with
# it rather than by counting sleeps: under "-icount shift=auto" (QEMU 7.2)
# guest timers often fire up to ~1 s late, so "usleep 100000" can take 1 s.
uptime_cs() {
	read -r CS _ </proc/uptime
	CS=${CS%.*}${CS#*.}
	while [ "${CS#0}" != "$CS" ]; do CS=${CS#0}; done # not octal
	[ -n "$CS" ] || CS=0
}

# wait_for TEST ARG SECONDS: poll until "test TEST ARG" holds, at most SECONDS.
wait_for() {
	uptime_cs
	end=$((CS + $3 * 100))
	while ! test "$1" "$2"; do
		uptime_cs
		[ "$CS" -gt "$end" ] && return 1
		usleep 50000
	done
	return 0
}

# get_until_answered URL FILE: GET URL into FILE (2 s timeout each, 1 s
# apart) until it answers; fails when bb.wait seconds have gone by.
get_until_answered() {
	uptime_cs
	end=$((CS + WAIT * 100))
	until timeout 2 wget -q -O "$2" "$1" 2>/dev/null; do
		uptime_cs
		[ "$CS" -gt "$end" ] && return 1
		sleep 1
	done
	return 0
}

# has_virtio ID: is there a virtio device of type ID (0x0001 net, 0x0002 block)?
has_virtio() {
	cat /sys/bus/virtio/devices/*/device 2>/dev/null | grep -qx "$1"
}

# net_setup DEFAULT_IP: configure eth0 with bb.ip (or DEFAULT_IP).
net_setup() {
	[ -n "$IP" ] || IP=$1
	case "$IP" in
	*/*) ;;
	*) IP=$IP/24 ;;
	esac
	ip link set lo up
	# virtio-net or e1000: either way the card is eth0
	wait_for -d /sys/class/net/eth0 10 || return 1
	ip link set eth0 up || return 1
	ip addr add "$IP" dev eth0 || return 1
	debug "eth0 up with $IP"
	return 0
}

# ---------------------------------------------------------------------------
# Roles

role_idle() {
	echo "BB-READY"
	forever
}

# Deterministic CPU work: each round generates CPU_LINES numbers with an LCG in
# awk (seeded from the previous round's hash) and hashes them with md5sum.
role_cpu() {
	echo "BB-READY"
	debug "cpu start"
	h=$(echo "blackbox-cpu" | md5_of)
	i=1
	while [ "$i" -le "$ROUNDS" ]; do
		seed=$(( (0x$(echo "$h" | cut -c1-7) + i) % 2147483648 ))
		h=$(awk -v x="$seed" -v n="$CPU_LINES" -v r="$i" 'BEGIN {
			for (j = 0; j < n; j++) {
				x = (x * 69069 + 1) % 2147483648
				printf "%d %d %d\n", r, j, x
			}
		}' | md5_of)
		echo "BB-CPU-ROUND $i $h"
		i=$((i + 1))
	done
	debug "cpu end"
	echo "BB-CPU-RESULT $h"
	done_
}

# Waits for the virtio disk $1 and checks that it holds $RECORDS records.
disk_for_records() {
	has_virtio 0x0002 || fatal "no virtio disk (add -drive file=disk.raw,format=raw,if=virtio)"
	wait_for -b "$1" 10 || fatal "no $1 (add -drive file=disk.raw,format=raw,if=virtio)"
	size=$(blockdev --getsize64 "$1") || fatal "cannot size $1"
	[ "$size" -ge $((RECORDS * 512)) ] || fatal "$1 too small: $size bytes for $RECORDS records"
}

# Record i (1..N) is "record %08d\n" padded with NUL bytes to 512 bytes, at
# byte offset (i-1)*512 of /dev/vda.
role_disk_writer() {
	dev=/dev/vda
	disk_for_records "$dev"
	echo "BB-READY"
	debug "disk start"
	# Records are staged in RAM and written with one dd: under record/replay
	# every small synchronous request waits for a replay checkpoint, so 200
	# single-sector writes would take minutes.
	i=1
	while [ "$i" -le "$RECORDS" ]; do
		printf 'record %08d\n' "$i" |
			dd of=/tmp/records bs=512 count=1 seek=$((i - 1)) iflag=fullblock conv=sync,notrunc 2>/dev/null ||
			fatal "staging of record $i failed"
		[ $((i % 50)) -eq 0 ] && echo "BB-DISK-RECORD $i"
		i=$((i + 1))
	done
	dd if=/tmp/records of="$dev" bs=65536 conv=fsync,notrunc 2>/dev/null || fatal "write of the records failed"
	rm -f /tmp/records
	sync
	blockdev --flushbufs "$dev"
	echo 3 >/proc/sys/vm/drop_caches
	sum=$(dd if="$dev" bs=512 count="$RECORDS" 2>/dev/null | md5_of) || fatal "read back failed"
	debug "disk end"
	echo "BB-DISK-RESULT $sum"
	done_
}

# Panics the kernel (sysrq 'c'): with a pvpanic device QEMU reports it over
# QMP (GUEST_PANICKED). What follows is the kernel's panic= parameter.
# Small synchronous writes: bb.records single-sector writes to /dev/vda, one
# at a time, each O_DIRECT and fsync'd before the next starts (a database's
# commit pattern). The host times BB-SYNC-START .. BB-SYNC-DONE.
role_disk_sync() {
	dev=/dev/vda
	disk_for_records "$dev"
	echo "BB-READY"
	echo "BB-SYNC-START"
	i=1
	while [ "$i" -le "$RECORDS" ]; do
		printf 'record %08d\n' "$i" |
			dd of="$dev" bs=512 count=1 seek=$((i - 1)) iflag=fullblock oflag=direct conv=sync,notrunc,fsync 2>/dev/null ||
			fatal "write of record $i failed"
		i=$((i + 1))
	done
	echo "BB-SYNC-DONE $RECORDS"
	echo 3 >/proc/sys/vm/drop_caches
	sum=$(dd if="$dev" bs=512 count="$RECORDS" 2>/dev/null | md5_of) || fatal "read back failed"
	echo "BB-DISK-RESULT $sum"
	done_
}

# Hands the machine to the system on the first virtio disk: mounts it and
# runs its /sbin/init (systemd), as an initramfs does. The boot benchmark's
# Debian guest (bench/build-debian-guest.sh).
role_switch_root() {
	for m in $BB_ROOT_MODULES; do
		insmod "/lib/modules/$KVER/$m.ko" || fatal "insmod $m failed"
	done
	wait_for -b /dev/vda 10 || fatal "no /dev/vda"
	mkdir -p /newroot
	mount -t ext4 -o ro /dev/vda /newroot || fatal "cannot mount /dev/vda"
	# (an absolute symlink into the new root: only its presence can be checked)
	[ -L /newroot/sbin/init ] || [ -e /newroot/sbin/init ] || fatal "no /sbin/init on /dev/vda"
	echo "BB-SWITCH-ROOT"
	mount -o move /dev /newroot/dev
	umount /proc /sys
	exec switch_root /newroot /sbin/init
}

# EFLAGS after cmpxchg16b/cmpxchg8b (qemu-patches 0008): prints
# BB-CX-FLAGS-OK or BB-CX-FLAGS-BAD ..., then powers off.
role_cx_flags() {
	echo "BB-READY"
	/bin/bb-cx-flags
	power_off
}

role_panic() {
	echo "BB-READY"
	echo "BB-PANIC-NOW"
	echo c >/proc/sysrq-trigger
	echo "BB-ERROR still running after the panic"
	forever
}

# Serves the counter at http://GUEST/counter (file rewritten every second).
role_counter() {
	mkdir -p /www
	echo 0 >/www/counter
	if net_setup 10.0.2.15/24; then
		httpd -p 80 -h /www || fatal "httpd failed to start"
	else
		echo "BB-WARN no network, /counter not served"
	fi
	echo "BB-READY"
	# Tick n is due n-1 guest seconds after the first one; pacing against the
	# uptime keeps the average at one per second even when timers fire late.
	uptime_cs
	t0=$CS
	n=1
	while :; do
		echo "$n" >/www/counter.tmp
		mv -f /www/counter.tmp /www/counter
		echo "BB-COUNTER $n"
		debug "counter $n"
		uptime_cs
		left=$((t0 + n * 100 - CS))
		[ "$left" -gt 0 ] && usleep $((left * 10000))
		n=$((n + 1))
	done
}

# big.bin: BIGSIZE MiB made of 64 KiB blocks; block b is "blk %011d\n"
# followed by the first 65520 bytes of a fixed LCG-generated text unit.
make_big() {
	awk 'BEGIN {
		x = 12345
		while (len < 65536) {
			x = (x * 69069 + 1) % 2147483648
			s = sprintf("%d\n", x)
			printf "%s", s
			len += length(s)
		}
	}' | head -c 65520 >/tmp/unit
	b=0
	blocks=$((BIGSIZE * 16))
	while [ "$b" -lt "$blocks" ]; do
		printf 'blk %011d\n' "$b"
		cat /tmp/unit
		b=$((b + 1))
	done >"$1"
	rm -f /tmp/unit
}

role_http_server() {
	net_setup 10.0.0.1/24 || fatal "network setup failed (no virtio-net NIC?)"
	mkdir -p /www
	printf 'blackbox http-server\n' >/www/index.html
	make_big /www/big.bin
	big=$(md5_of </www/big.bin)
	httpd -p 80 -h /www || fatal "httpd failed to start"
	uptime_cs
	end=$((CS + 1000))
	until timeout 2 wget -q -O /dev/null http://127.0.0.1/ 2>/dev/null; do
		uptime_cs
		[ "$CS" -gt "$end" ] && fatal "httpd not answering on port 80"
		usleep 100000
	done
	echo "BB-HTTP-BIG $big"
	echo "BB-READY"
	forever
}

role_http_client() {
	net_setup 10.0.0.2/24 || fatal "network setup failed (no virtio-net NIC?)"
	[ -n "$PEER" ] || PEER=10.0.0.1
	echo "BB-READY"
	if ! get_until_answered "http://$PEER/" /tmp/index.html; then
		echo "BB-HTTP-FAIL peer $PEER not answering after ${WAIT}s"
		done_
	fi
	debug "peer answered"
	if [ ! -s /tmp/index.html ]; then
		echo "BB-HTTP-FAIL empty index page"
		done_
	fi
	# The host times the transfer from this line's arrival on the console.
	echo "BB-HTTP-START"
	if ! timeout $((30 + 10 * BIGSIZE)) wget -q -O /tmp/big.bin "http://$PEER/big.bin" 2>/dev/null; then
		echo "BB-HTTP-FAIL download of big.bin failed"
		done_
	fi
	debug "big.bin fetched"
	echo "BB-HTTP-OK $(md5_of </tmp/big.bin)"
	rm -f /tmp/big.bin
	done_
}

# GET http://PEER/PATH until it answers (2 s timeout each, 1 s apart) and
# print the body's first line.
role_http_get() {
	net_setup 10.0.0.2/24 || fatal "network setup failed (no virtio-net NIC?)"
	[ -n "$PEER" ] || PEER=10.0.0.1
	echo "BB-READY"
	if ! get_until_answered "http://$PEER$URLPATH" /tmp/got; then
		echo "BB-HTTP-FAIL peer $PEER not answering after ${WAIT}s"
		done_
	fi
	echo "BB-HTTP-GOT $(head -n 1 /tmp/got)"
	done_
}

# GETs / from the peer until it answers, then tries a TCP connection to
# bb.port on the peer (a port its manifest does not allow), then GETs /
# again: what a VM that starts misbehaving looks like from the switch.
# Latency probe: bb.count small HTTP exchanges with the peer, one after the
# other (each a new TCP connection: connect, GET /, close), then bb.count
# pings, one at a time. The host measures them on the switch (frame times);
# the guest only reports counts.
role_http_loop() {
	net_setup 10.0.0.2/24 || fatal "network setup failed (no NIC?)"
	[ -n "$PEER" ] || PEER=10.0.0.1
	echo "BB-READY"
	if ! get_until_answered "http://$PEER/" /tmp/got; then
		echo "BB-LOOP-FAIL peer $PEER not answering after ${WAIT}s"
		done_
	fi
	echo "BB-LOOP-START"
	ok=0
	i=0
	while [ "$i" -lt "$COUNT" ]; do
		i=$((i + 1))
		timeout 10 wget -q -O /tmp/got "http://$PEER/" 2>/dev/null && ok=$((ok + 1))
	done
	echo "BB-LOOP-GETS $ok/$COUNT"
	ping_n "$COUNT" "$PEER"
	echo "BB-LOOP-PINGS $REPLIES/$SENT"
	done_
}

role_prober() {
	net_setup 10.0.0.2/24 || fatal "network setup failed (no NIC?)"
	[ -n "$PEER" ] || PEER=10.0.0.1
	echo "BB-READY"
	if ! get_until_answered "http://$PEER/" /tmp/got; then
		echo "BB-PROBE-HTTP-FAIL peer $PEER not answering after ${WAIT}s"
		done_
	fi
	echo "BB-PROBE-HTTP-OK"
	# The peer's kernel answers a closed port with RST ("refused" at once);
	# a SYN dropped on the way gets nothing until the timeout.
	out=$(timeout 5 nc "$PEER" "$PORT" </dev/null 2>&1)
	rc=$?
	case "$out" in
	*refused*) echo "BB-PROBE-PORT-REFUSED $PORT" ;;
	*)
		if [ "$rc" = 0 ]; then
			echo "BB-PROBE-PORT-OPEN $PORT"
		else
			echo "BB-PROBE-PORT-NO-ANSWER $PORT"
		fi
		;;
	esac
	if timeout 5 wget -q -O /tmp/got2 "http://$PEER/" 2>/dev/null; then
		echo "BB-PROBE-HTTP2-OK"
	else
		echo "BB-PROBE-HTTP2-FAIL"
	fi
	done_
}

# Identities the spoofer role forges (see guest/README.md).
SPOOF_IP=10.0.0.66
SPOOF_MAC=52:54:00:66:66:66
SPOOF_COUNT=3

# ping_n COUNT DST [SRC]: COUNT single pings (each waits up to 1 s for its
# reply), optionally from source address SRC. Sets SENT (echo requests that
# ping reports as transmitted) and REPLIES (echo replies received). One ping
# per process: a ping that dies on a send error cannot lose the others' counts.
ping_n() {
	SENT=0
	REPLIES=0
	k=0
	while [ "$k" -lt "$1" ]; do
		if [ -n "$3" ]; then
			out=$(ping -c 1 -W 1 -I "$3" "$2" 2>&1)
		else
			out=$(ping -c 1 -W 1 "$2" 2>&1)
		fi
		tx=$(echo "$out" | sed -n 's/^\([0-9]*\) packets transmitted, \([0-9]*\) packets received.*/\1 \2/p')
		if [ -n "$tx" ]; then
			SENT=$((SENT + ${tx% *}))
			REPLIES=$((REPLIES + ${tx#* }))
		fi
		debug "ping $2${3:+ from $3}: ${tx:-no summary}"
		k=$((k + 1))
	done
}

# Sends from identities this NIC does not own, for the switch's anti-spoofing:
# (a) pings from the forged source address SPOOF_IP, (b) pings after changing
# eth0's MAC to SPOOF_MAC. It only prints counts; whether replies are expected
# depends on what sits between the guest and its peer.
role_spoofer() {
	net_setup 10.0.0.3/24 || fatal "network setup failed (no virtio-net NIC?)"
	[ -n "$PEER" ] || PEER=10.0.0.1
	echo "BB-READY"
	uptime_cs
	end=$((CS + WAIT * 100))
	peer=OK
	until ping -c 1 -W 1 "$PEER" >/dev/null 2>&1; do
		uptime_cs
		if [ "$CS" -gt "$end" ]; then
			peer=FAIL
			break
		fi
		usleep 200000 # in case ping fails at once (e.g. no route)
	done
	echo "BB-SPOOF-PEER-$peer"
	# the peer's MAC, for a static ARP entry in (b)
	peer_mac=$(awk -v p="$PEER" '$1 == p && $3 == "0x2" { print $4 }' /proc/net/arp)

	# (a) forged source IP: a /32 on eth0, so that ping can bind to it and
	# replies to it (and ARP requests for it) are accepted
	ip addr add "$SPOOF_IP/32" dev eth0 || fatal "cannot add $SPOOF_IP to eth0"
	ping_n "$SPOOF_COUNT" "$PEER" "$SPOOF_IP"
	echo "BB-SPOOF-IP-SENT $SENT"
	echo "BB-SPOOF-IP-REPLIES $REPLIES"
	ip addr del "$SPOOF_IP/32" dev eth0

	# (b) forged MAC, real IP. The link went down, so the ARP cache is empty:
	# a static entry for the peer makes the echo requests go on the wire even
	# if the ARP requests from the forged MAC are dropped, and a gratuitous
	# ARP (also from the forged MAC) tells the peer where to send replies.
	ip link set dev eth0 down &&
		ip link set dev eth0 address "$SPOOF_MAC" &&
		ip link set dev eth0 up || fatal "cannot set eth0's MAC to $SPOOF_MAC"
	debug "eth0 now $(cat /sys/class/net/eth0/address), peer $PEER is at ${peer_mac:-?}"
	[ -n "$peer_mac" ] && arp -i eth0 -s "$PEER" "$peer_mac"
	arping -U -q -c 1 -w 1 -I eth0 -s "${IP%/*}" "${IP%/*}" >/dev/null
	ping_n "$SPOOF_COUNT" "$PEER"
	echo "BB-SPOOF-MAC-SENT $SENT"
	echo "BB-SPOOF-MAC-REPLIES $REPLIES"
	done_
}

case "$ROLE" in
idle) role_idle ;;
cpu) role_cpu ;;
disk-writer) role_disk_writer ;;
disk-sync) role_disk_sync ;;
counter) role_counter ;;
http-server) role_http_server ;;
http-client) role_http_client ;;
http-get) role_http_get ;;
http-loop) role_http_loop ;;
prober) role_prober ;;
spoofer) role_spoofer ;;
panic) role_panic ;;
cx-flags) role_cx_flags ;;
switch-root) role_switch_root ;;
'')
	echo "BB-ERROR missing bb.role"
	power_off
	;;
*)
	echo "BB-ERROR unknown role $ROLE"
	power_off
	;;
esac
forever
