#!/usr/bin/env bash
# Installs what Blackbox needs from Debian's archive (only what is missing),
# configures and builds it, builds the patched QEMU (qemu-patches/build.sh)
# and the cached test guest. Idempotent: a
# second run installs nothing and rebuilds only what changed.
#
# Usage: scripts/setup.sh [--no-guest]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BLACKBOX_BUILD_DIR:-$ROOT/build}
PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  librocksdb-dev libzstd-dev zstd libboost-dev libssl-dev
  libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libspdlog-dev
  libgtest-dev libgmock-dev
  qemu-system-x86 qemu-utils seabios ipxe-qemu
  busybox-static cpio gdb tshark
  libsystemd-dev systemd  # the daemon: sd_notify; its unit file is checked with systemd-analyze
  clang libclang-rt-14-dev  # fuzz/: libFuzzer and the sanitizer runtimes (not pulled in without recommends)
)

log() { echo "setup: $*" >&2; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { log "not root and no sudo: install ${PACKAGES[*]} by hand"; exit 2; }
  SUDO=(sudo)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The guest builder downloads Debian's kernel package: it needs package lists.
if [ ${#missing[@]} -gt 0 ] || ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
  log "apt-get update"
  "${SUDO[@]}" apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
log "building in $BUILD"
# A failed build fails this script: a target that no longer compiles must not
# leave its old binary, and its old tests, looking current.
set +e
cmake --build "$BUILD" -- -j"$(nproc)" 2>&1 | grep --line-buffered -vE '^\[[0-9]+/[0-9]+\] (Building|Linking)'
build_status=${PIPESTATUS[0]}
set -e
[ "$build_status" -eq 0 ] || { log "build failed (cmake --build exited $build_status)"; exit 1; }

# Blackbox's patched QEMU (qemu-patches/): cached by the hash of the series,
# so this is instant after the first build (a few minutes).
bash "$ROOT/qemu-patches/build.sh" "$BUILD"

if [ "${1:-}" != "--no-guest" ]; then
  bash "$ROOT/guest/build-guest.sh" "$BUILD/guest"
fi
log "ready: $BUILD/cli/blackbox"
