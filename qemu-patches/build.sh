#!/usr/bin/env bash
# Builds Blackbox's patched qemu-system-x86_64: Debian 12's QEMU 7.2 source
# with the patch series in this directory (applied in the order of `series`).
#
#   qemu-patches/build.sh [BUILD_DIR]        (default: build)
#
# Steps, each skipped when already done:
#   1. adds a deb-src entry for the Debian archive the machine already uses
#      (/etc/apt/sources.list.d/blackbox-src.sources) if there is none;
#   2. installs the build dependencies from Debian's archive;
#   3. fetches the source with `apt-get source qemu` into BUILD/qemu/debian-src
#      and checks that it is QEMU 7.2.x (Debian applies the 7.2 stable releases);
#   4. copies it, applies the series, configures for x86_64-softmmu only and
#      builds just qemu-system-x86_64 into BUILD/qemu/<key>/, where <key> is a
#      hash of the series, the configure options and the Debian source version.
# The result is BUILD/qemu/qemu-system-x86_64 (a symlink). A second run with
# the same series finds BUILD/qemu/<key>/ complete and returns at once.
# It is the QEMU that `blackbox record`, `replay`, `verify` and the standby
# run by default; Debian's stock QEMU stays the benchmarks' baseline.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BUILD=$(mkdir -p "${1:-$ROOT/build}" && cd "${1:-$ROOT/build}" && pwd)
OUT=$BUILD/qemu
UPSTREAM_SERIES=7.2
DEPS=(dpkg-dev python3 python3-venv meson ninja-build pkg-config libglib2.0-dev libpixman-1-dev
      libfdt-dev flex bison libzstd-dev zlib1g-dev libseccomp-dev seabios ipxe-qemu qemu-system-data)

# Only what Blackbox's VMs use; firmware comes from Debian's packages.
CONFIGURE=(--target-list=x86_64-softmmu --without-default-features --enable-tcg --enable-fdt=system
           --enable-zstd --enable-seccomp --disable-docs --disable-werror
           --firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu)

log() { echo "qemu-patches: $*" >&2; }
die() { echo "qemu-patches: error: $*" >&2; exit 1; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "not root and no sudo: cannot install build dependencies"
  SUDO=(sudo)
fi

patches=()
while read -r p; do
  [ -z "$p" ] || [ "${p#\#}" != "$p" ] && continue
  [ -f "$HERE/$p" ] || die "series names $p, which is not in $HERE"
  patches+=("$HERE/$p")
done < "$HERE/series"

# ---- 1. deb-src ----
has_deb_src() { local out; out=$(apt-cache showsrc qemu 2>/dev/null) && grep -q '^Package: qemu$' <<<"$out"; }
if ! has_deb_src; then
  list=/etc/apt/sources.list.d/blackbox-src.sources
  if ! grep -rqs '^Types:.*deb-src\|^deb-src ' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding deb-src entries for the archive in use ($list)"
    tmp=$(mktemp)
    # deb822 files: the same stanzas with Types: deb-src.
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] && [ "$f" != "$list" ] || continue
      awk 'BEGIN{RS=""; ORS="\n\n"} /(^|\n)Types:[^\n]*deb([ \n]|$)/ && !/Enabled: *no/ {
             sub(/Types:[^\n]*/, "Types: deb-src"); print }' "$f" >> "$tmp"
    done
    # one-line format: the same lines as deb-src.
    if [ -f /etc/apt/sources.list ]; then
      sed -n 's/^deb \(.*\)$/deb-src \1/p' /etc/apt/sources.list |
        while read -r line; do printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: %s\n\n' \
          "$(echo "$line" | awk '{print $2}')" "$(echo "$line" | awk '{print $3}')" \
          "$(echo "$line" | cut -d' ' -f4-)"; done >> "$tmp"
    fi
    [ -s "$tmp" ] || die "found no Debian archive in /etc/apt to add a deb-src entry for"
    "${SUDO[@]}" install -m 644 "$tmp" "$list"
    rm -f "$tmp"
  fi
  log "apt-get update (deb-src)"
  "${SUDO[@]}" apt-get update -qq
  has_deb_src || die "apt-cache knows no source package 'qemu' even with deb-src entries"
fi

# ---- 2. build dependencies ----
missing=()
for p in "${DEPS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# ---- 3. Debian's source ----
SRC_VERSION=$(apt-cache showsrc qemu | awk '/^Version:/ && !v {v=$2} END {print v}')
[ -n "$SRC_VERSION" ] || die "cannot tell the version of Debian's qemu source package"
case "$SRC_VERSION" in
  *:7.2+dfsg-*) ;;
  *) die "Debian's qemu source is $SRC_VERSION; the series is for 7.2+dfsg (Debian 12)";;
esac
DEBSRC=$OUT/debian-src
stamp=$DEBSRC/.fetched-$SRC_VERSION
if [ ! -f "$stamp" ]; then
  log "fetching Debian's qemu $SRC_VERSION source (apt-get source)"
  rm -rf "$DEBSRC" && mkdir -p "$DEBSRC"
  (cd "$DEBSRC" && apt-get source -qq "qemu=$SRC_VERSION" >/dev/null 2>"$DEBSRC/apt-get-source.log") ||
    die "apt-get source qemu failed (see $DEBSRC/apt-get-source.log)"
  touch "$stamp"
fi
tree=$(find "$DEBSRC" -mindepth 1 -maxdepth 1 -type d -name 'qemu-*' | head -1)
[ -n "$tree" ] && [ -f "$tree/VERSION" ] || die "no unpacked source tree in $DEBSRC"
case "$(cat "$tree/VERSION")" in
  "$UPSTREAM_SERIES".*) ;;
  *) die "$tree is QEMU $(cat "$tree/VERSION"), the series is for $UPSTREAM_SERIES.x";;
esac

# ---- 4. patch, configure, build ----
key=$( { echo "$SRC_VERSION"; echo "${CONFIGURE[*]}"; for p in "${patches[@]}"; do cat "$p"; done; } |
       sha256sum | cut -c1-16)
work=$OUT/$key
# The binary is run from $work/bin, not from the build tree: next to its
# qemu-bundle directory QEMU would look for firmware inside the bundle
# instead of in the configured Debian paths.
install_binary() {
  install -D -m 755 "$work/build/qemu-system-x86_64" "$work/bin/qemu-system-x86_64"
  ln -sfn "$key/bin/qemu-system-x86_64" "$OUT/qemu-system-x86_64"
}
if [ -x "$work/build/qemu-system-x86_64" ] && [ -f "$work/.complete" ]; then
  install_binary
  log "up to date: $OUT/qemu-system-x86_64 (series $key)"
  exit 0
fi
# Older builds of other series keep only their binary (bin/, ~60 MB; the
# source and build trees are a few hundred MB): each recording names the
# QEMU that made it by path and SHA-256, and replays only with that binary.
find "$OUT" -mindepth 1 -maxdepth 1 -type d ! -name debian-src ! -name "$key" \
  -exec rm -rf {}/src {}/build \;
rm -rf "$work" && mkdir -p "$work"
log "copying the source to $work/src"
cp -a "$tree" "$work/src"
for p in "${patches[@]}"; do
  log "applying $(basename "$p")"
  patch -d "$work/src" -p1 --batch --forward --quiet < "$p" || die "$(basename "$p") does not apply"
done
mkdir -p "$work/build"
log "configuring (x86_64-softmmu only)"
(cd "$work/build" && ../src/configure "${CONFIGURE[@]}" >"$work/configure.log" 2>&1) ||
  die "configure failed (see $work/configure.log)"
log "building qemu-system-x86_64 (a few minutes)"
ninja -C "$work/build" qemu-system-x86_64 >"$work/build.log" 2>&1 ||
  die "build failed (see $work/build.log)"
touch "$work/.complete"
install_binary
log "built $OUT/qemu-system-x86_64 (series $key)"
