#!/usr/bin/env bash
# Build (and cache) the Blackbox Linux test guest from Debian 12 packages only.
# See --help and guest/README.md.
set -euo pipefail

PROG=build-guest.sh

usage() {
	cat <<'EOF'
Usage: build-guest.sh [--help] OUTDIR

Builds the Blackbox test guest from Debian packages (nothing is downloaded
from anywhere but the configured Debian apt archive):

  OUTDIR/vmlinuz     kernel from the package linux-image-amd64 depends on
                     (fetched with 'apt-get download', never installed)
  OUTDIR/initrd.img  gzip'd newc cpio: busybox-static, virtio modules,
                     guest/init.sh as /init, guest/cx-flags.c compiled
                     (static, no libc) as /bin/bb-cx-flags
  OUTDIR/STAMP       cache key (hash of this script, init.sh, cx-flags.c,
                     the C compiler's version, the kernel package version
                     and the busybox-static version)
  OUTDIR/INFO        human-readable build details (kernel version, hashes)

If OUTDIR/STAMP matches the current key the script prints "guest: cached"
and exits 0 without doing anything. Identical inputs give a byte-identical
initrd.img.

Environment:
  BB_GUEST_CACHE     where downloaded .deb files are kept
                     (default: OUTDIR/.cache)

Needs apt-get/apt-cache/dpkg-deb, cpio, gzip and busybox-static; missing
host packages (busybox-static, cpio) are installed with apt-get (root only).
'apt-get update' is run once if the package lists are missing.
EOF
}

die() {
	echo "$PROG: error: $*" >&2
	exit 1
}

log() {
	echo "$PROG: $*" >&2
}

# ---------------------------------------------------------------------------
# Arguments
OUT=
while [[ $# -gt 0 ]]; do
	case "$1" in
	-h | --help)
		usage
		exit 0
		;;
	--)
		shift
		break
		;;
	-*) die "unknown option '$1' (see --help)" ;;
	*)
		[[ -z $OUT ]] || die "only one OUTDIR may be given (see --help)"
		OUT=$1
		;;
	esac
	shift
done
if [[ $# -gt 0 ]]; then
	[[ -z $OUT && $# -eq 1 ]] || die "only one OUTDIR may be given (see --help)"
	OUT=$1
fi
[[ -n $OUT ]] || {
	usage >&2
	die "missing OUTDIR"
}

export LC_ALL=C
umask 022

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF=$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")
INIT_SRC=$SCRIPT_DIR/init.sh
CX_SRC=$SCRIPT_DIR/cx-flags.c
[[ -f $INIT_SRC ]] || die "init script not found: $INIT_SRC"

IS_ROOT=0
[[ $(id -u) -eq 0 ]] && IS_ROOT=1

for tool in apt-get apt-cache dpkg dpkg-deb dpkg-query tar gzip sha256sum flock find sort; do
	command -v "$tool" >/dev/null 2>&1 || die "required tool '$tool' not found (this must run on Debian 12)"
done

# ---------------------------------------------------------------------------
# Host packages and apt metadata

APT_UPDATED=0
apt_update_once() {
	[[ $APT_UPDATED -eq 0 ]] || return 0
	[[ $IS_ROOT -eq 1 ]] || die "apt package lists are missing or stale; run 'apt-get update' as root"
	log "running apt-get update"
	apt-get update -qq >&2 || die "apt-get update failed"
	APT_UPDATED=1
}

ensure_host_pkg() { # PACKAGE
	dpkg -s "$1" >/dev/null 2>&1 && return 0
	[[ $IS_ROOT -eq 1 ]] || die "host package '$1' is missing; install it: apt-get install -y $1"
	log "installing host package $1"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" >&2; then
		apt_update_once
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" >&2 ||
			die "apt-get install $1 failed"
	fi
}

ensure_host_pkg busybox-static
ensure_host_pkg cpio
CC=${CC:-cc}
command -v "$CC" >/dev/null 2>&1 || die "no C compiler '$CC' (build-essential) for guest/cx-flags.c"
CC_VER=$("$CC" --version | head -n1)

# busybox binary shipped by busybox-static (/bin/busybox on bookworm)
BUSYBOX=$(dpkg -L busybox-static | grep -E '/bin/busybox$' | head -n1) || true
[[ -n $BUSYBOX && -x $BUSYBOX ]] || die "busybox binary of busybox-static not found"
BUSYBOX_VER=$(dpkg-query -W -f='${Version}' busybox-static)

# The concrete kernel package linux-image-amd64 depends on and its version,
# e.g. "linux-image-6.1.0-56-amd64 6.1.192-2", from the meta package's
# "Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)". One apt-cache call only:
# this image disables apt's pkgcache.bin, so each call costs about a second.
kernel_dep() {
	apt-cache show --no-all-versions linux-image-amd64 2>/dev/null | awk '
		/^Depends:/ {
			sub(/^Depends:[ \t]*/, "")
			n = split($0, alts, /[,|]/)
			for (i = 1; i <= n; i++) {
				if (match(alts[i], /linux-image-[0-9][^ (]*/)) {
					pkg = substr(alts[i], RSTART, RLENGTH)
					ver = ""
					if (match(alts[i], /\(= *[^ )]+/)) {
						ver = substr(alts[i], RSTART, RLENGTH)
						sub(/^\(= */, "", ver)
					}
					print pkg, ver
					exit
				}
			}
		}'
}
KDEP=$(kernel_dep) || true
if [[ -z $KDEP ]]; then
	apt_update_once
	KDEP=$(kernel_dep) || true
fi
[[ -n $KDEP ]] || die "cannot find the kernel package linux-image-amd64 depends on (apt-cache show linux-image-amd64)"
read -r KPKG KPKG_VER <<<"$KDEP"

pkg_fields() { # Version SHA256 Architecture of the candidate (or $KPKG_VER) of $KPKG
	apt-cache show --no-all-versions "$KPKG${KPKG_VER:+=$KPKG_VER}" 2>/dev/null |
		awk '$1 == "Version:" { v = $2 } $1 == "SHA256:" { s = $2 } $1 == "Architecture:" { a = $2 }
			/^$/ { exit } END { print v, s, a }'
}
if [[ -z $KPKG_VER ]]; then
	read -r KPKG_VER _ <<<"$(pkg_fields)"
	[[ -n $KPKG_VER ]] || die "apt-cache show $KPKG gave no Version"
fi

# ---------------------------------------------------------------------------
# Cache key and cache check

KEY=$({
	echo "blackbox-guest-key v1"
	sha256sum <"$SELF"
	sha256sum <"$INIT_SRC"
	sha256sum <"$CX_SRC"
	echo "cc $CC_VER"
	echo "kernel $KPKG $KPKG_VER"
	echo "busybox-static $BUSYBOX_VER"
} | sha256sum | cut -d' ' -f1)

is_cached() {
	[[ -f $OUT/STAMP && -f $OUT/vmlinuz && -f $OUT/initrd.img ]] &&
		[[ $(head -n1 "$OUT/STAMP") == "$KEY" ]]
}

if is_cached; then
	echo "guest: cached"
	exit 0
fi

mkdir -p "$OUT" || die "cannot create OUTDIR $OUT"
OUT=$(cd "$OUT" && pwd)

# Serialise concurrent builds into the same OUTDIR.
exec 9>"$OUT/.lock"
flock 9 || die "cannot lock $OUT/.lock"
if is_cached; then
	echo "guest: cached"
	exit 0
fi
rm -f "$OUT/STAMP"

CACHE=${BB_GUEST_CACHE:-$OUT/.cache}
mkdir -p "$CACHE" || die "cannot create cache folder $CACHE"
CACHE=$(cd "$CACHE" && pwd)

WORK=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

log "kernel package $KPKG $KPKG_VER, busybox-static $BUSYBOX_VER"
read -r _ KPKG_SHA KPKG_ARCH <<<"$(pkg_fields)"
[[ -n $KPKG_SHA && -n $KPKG_ARCH ]] || die "apt-cache show $KPKG=$KPKG_VER gave no SHA256/Architecture"

# ---------------------------------------------------------------------------
# Kernel package: apt-get download into the cache (never installed)

DEB=$CACHE/${KPKG}_${KPKG_VER//:/%3a}_${KPKG_ARCH}.deb

deb_ok() {
	[[ -f $DEB ]] && [[ $(sha256sum <"$DEB" | cut -d' ' -f1) == "$KPKG_SHA" ]]
}

if ! deb_ok; then
	rm -f "$DEB"
	apt_opts=(-q)
	# as root apt would try to drop privileges to _apt, who cannot write here
	[[ $IS_ROOT -eq 1 ]] && apt_opts+=(-o APT::Sandbox::User=root)
	log "apt-get download $KPKG=$KPKG_VER"
	if ! (cd "$CACHE" && apt-get download "${apt_opts[@]}" "$KPKG=$KPKG_VER" >&2); then
		# offline fallback: apt's own (already verified) archive cache
		if [[ -f /var/cache/apt/archives/$(basename "$DEB") ]]; then
			log "download failed, using /var/cache/apt/archives/$(basename "$DEB")"
			cp /var/cache/apt/archives/"$(basename "$DEB")" "$DEB"
		else
			die "apt-get download $KPKG=$KPKG_VER failed (network or apt sources?)"
		fi
	fi
	[[ -f $DEB ]] || die "apt-get download did not produce $DEB"
	deb_ok || die "$DEB does not match the SHA256 from the apt index"
fi
# drop stale kernel packages from the cache
find "$CACHE" -maxdepth 1 -name 'linux-image-*.deb' ! -name "$(basename "$DEB")" -delete

# Modules to include: the BB_MODULES="..." line of init.sh (load order).
MODULES=$(sed -n 's/^BB_MODULES="\(.*\)"$/\1/p' "$INIT_SRC")
[[ -n $MODULES ]] || die "no BB_MODULES=\"...\" line in $INIT_SRC"
# and those of the switch-root role (its BB_ROOT_MODULES="..." line)
MODULES="$MODULES $(sed -n 's/^BB_ROOT_MODULES="\(.*\)"$/\1/p' "$INIT_SRC")"

log "extracting kernel and modules"
KX=$WORK/kpkg
mkdir -p "$KX"
patterns=('./boot/vmlinuz-*')
for m in $MODULES; do
	patterns+=("*/modules/*/kernel/*/$m.ko" "*/modules/*/kernel/*/$m.ko.*")
done
# Selective 'dpkg-deb -x': only the few files needed (tar complains about
# patterns that match nothing, e.g. the compressed variant; checked below).
dpkg-deb --fsys-tarfile "$DEB" | tar -x -C "$KX" --wildcards "${patterns[@]}" 2>/dev/null || true

vmlinuz=$(find "$KX/boot" -maxdepth 1 -name 'vmlinuz-*' 2>/dev/null | sort | head -n1)
[[ -n $vmlinuz ]] || die "no boot/vmlinuz-* in $DEB"
KVER=${vmlinuz##*/vmlinuz-}
MODDIR=
for d in "$KX/lib/modules/$KVER" "$KX/usr/lib/modules/$KVER"; do
	[[ -d $d ]] && MODDIR=$d
done
[[ -n $MODDIR ]] || die "no lib/modules/$KVER in $DEB"

# ---------------------------------------------------------------------------
# Initramfs tree

ROOT=$WORK/root
mkdir -p "$ROOT"
for d in bin sbin usr/bin usr/sbin etc proc sys dev tmp run root www lib/modules/"$KVER"; do
	mkdir -p "$ROOT/$d"
done
chmod 1777 "$ROOT/tmp"
chmod 0700 "$ROOT/root"

install -m 0755 "$BUSYBOX" "$ROOT/bin/busybox"
install -m 0755 "$INIT_SRC" "$ROOT/init"
# bb.role=cx-flags runs it: EFLAGS after cmpxchg16b/8b (qemu-patches 0008)
"$CC" -O2 -static -nostdlib -ffreestanding -fno-pie -no-pie -fno-stack-protector \
	-Wl,--build-id=none -o "$ROOT/bin/bb-cx-flags" "$CX_SRC" ||
	die "cannot compile $CX_SRC"
chmod 0755 "$ROOT/bin/bb-cx-flags"

# busybox applet symlinks (equivalent of 'busybox --install -s')
"$BUSYBOX" --list-full | sort | while read -r applet; do
	[[ -n $applet && $applet != bin/busybox ]] || continue
	mkdir -p "$ROOT/$(dirname "$applet")"
	[[ -e $ROOT/$applet || -L $ROOT/$applet ]] || ln -s /bin/busybox "$ROOT/$applet"
done
[[ -L $ROOT/bin/sh ]] || die "busybox has no sh applet"

printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\n' >"$ROOT/etc/group"
printf '127.0.0.1\tlocalhost\n' >"$ROOT/etc/hosts"
printf 'blackbox-guest\n' >"$ROOT/etc/hostname"
chmod 0644 "$ROOT"/etc/*

# modules, decompressed at build time, flat in /lib/modules/<kver>/<name>.ko
for m in $MODULES; do
	src=$(find "$MODDIR/kernel" \( -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" \) | sort | head -n1)
	[[ -n $src ]] || die "module $m not found in $DEB"
	dst=$ROOT/lib/modules/$KVER/$m.ko
	case "$src" in
	*.ko) cp "$src" "$dst" ;;
	*.xz) xz -dc "$src" >"$dst" || die "cannot decompress $src (xz missing?)" ;;
	*.zst) zstd -qdc "$src" >"$dst" || die "cannot decompress $src (zstd missing?)" ;;
	*.gz) gzip -dc "$src" >"$dst" || die "cannot decompress $src" ;;
	esac
	[[ $(head -c4 "$dst" | od -An -tx1 | tr -d ' \n') == 7f454c46 ]] || die "$dst is not an ELF module"
	chmod 0644 "$dst"
done

# fixed timestamps for a reproducible archive
find "$ROOT" -exec touch -h -d @0 {} +

log "creating initrd.img"
(cd "$ROOT" && find . -mindepth 1 -printf '%P\n' | sort |
	cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -n -9 >"$WORK/initrd.img" ||
	die "creating the initramfs failed"
cp "$vmlinuz" "$WORK/vmlinuz"

# ---------------------------------------------------------------------------
# Publish: outputs first, STAMP last

chmod 0644 "$WORK/vmlinuz" "$WORK/initrd.img"
mv -f "$WORK/vmlinuz" "$OUT/vmlinuz"
mv -f "$WORK/initrd.img" "$OUT/initrd.img"
{
	echo "kernel_package=$KPKG"
	echo "kernel_package_version=$KPKG_VER"
	echo "kernel_release=$KVER"
	echo "busybox_static_version=$BUSYBOX_VER"
	echo "modules=$MODULES"
	echo "vmlinuz_sha256=$(sha256sum <"$OUT/vmlinuz" | cut -d' ' -f1)"
	echo "initrd_sha256=$(sha256sum <"$OUT/initrd.img" | cut -d' ' -f1)"
	echo "key=$KEY"
} >"$OUT/INFO"
echo "$KEY" >"$OUT/STAMP.tmp"
mv -f "$OUT/STAMP.tmp" "$OUT/STAMP"
log "guest built in $OUT (kernel $KVER)"
echo "guest: built"
