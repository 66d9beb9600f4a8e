#!/bin/bash
# Builds the systemd guest of `blackbox bench io --part boot`: a Debian 12
# root file system (debootstrap, minbase) with systemd and nginx-light, as a
# raw ext4 image. The bench boots it with the test guest's kernel and
# initramfs (bb.role=switch-root mounts /dev/vda and hands over to systemd),
# on a virtio disk, and times the boot to "nginx started".
#
#   bench/build-debian-guest.sh OUTDIR
#
# Writes OUTDIR/debian.raw (1 GiB, sparse) and OUTDIR/STAMP. Packages come
# from the Debian archive apt is configured with; nothing else is fetched.
# Needs root (debootstrap). Idempotent: a complete OUTDIR with the same
# STAMP is left alone.
#
# In the guest, bb-ready.service (After= and Requires= nginx.service) prints
# BB-SYSTEMD-READY on ttyS0 and powers the machine off.
set -euo pipefail

die() { echo "build-debian-guest: $*" >&2; exit 1; }
log() { echo "build-debian-guest: $*" >&2; }

[ $# -eq 1 ] || die "usage: $0 OUTDIR"
OUT=$1
SUITE=bookworm
PACKAGES=systemd-sysv,nginx-light
[ "$(id -u)" = 0 ] || die "needs root (debootstrap)"

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
stamp=$( { cat "$0"; echo "$SUITE $PACKAGES"; } | sha256sum | cut -c1-16)
if [ -f "$OUT/STAMP" ] && [ "$(cat "$OUT/STAMP")" = "$stamp" ] && [ -f "$OUT/debian.raw" ]; then
  log "cached: $OUT/debian.raw"
  exit 0
fi

for tool in debootstrap mkfs.ext4; do
  command -v "$tool" >/dev/null || {
    log "installing $tool"
    apt-get install -y -q debootstrap e2fsprogs >/dev/null
  }
done

# The mirror apt uses (deb822 or one-line sources).
mirror=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' |
         grep -v security | head -1 || true)
if [ -z "$mirror" ]; then
  mirror=$(grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' |
           grep -v security | head -1 || true)
fi
[ -n "$mirror" ] || die "no Debian mirror found in apt's sources"

root=$(mktemp -d "$OUT/root.XXXXXX")
trap 'rm -rf "$root"' EXIT
log "debootstrap $SUITE ($PACKAGES) from $mirror (a few minutes)"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$mirror" \
  >"$OUT/debootstrap.log" 2>&1 || die "debootstrap failed (see $OUT/debootstrap.log)"

echo "/dev/vda / ext4 defaults 0 1" >"$root/etc/fstab"
echo "bb-debian" >"$root/etc/hostname"
cat >"$root/etc/systemd/system/bb-ready.service" <<'EOF'
[Unit]
Description=Blackbox bench: nginx is up, report and power off
After=nginx.service
Requires=nginx.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo BB-SYSTEMD-READY >/dev/ttyS0'
ExecStartPost=/bin/systemctl --no-block poweroff

[Install]
WantedBy=multi-user.target
EOF
mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/bb-ready.service \
  "$root/etc/systemd/system/multi-user.target.wants/bb-ready.service"
# No login prompt on the console the bench reads.
ln -sf /dev/null "$root/etc/systemd/system/serial-getty@ttyS0.service"
rm -rf "$root/var/cache/apt/archives/"*.deb

rm -f "$OUT/debian.raw.tmp"
mkfs.ext4 -q -F -L bb-debian -d "$root" "$OUT/debian.raw.tmp" 1G
mv "$OUT/debian.raw.tmp" "$OUT/debian.raw"
echo "$stamp" >"$OUT/STAMP"
log "built $OUT/debian.raw ($(du -h "$OUT/debian.raw" | cut -f1) used)"
