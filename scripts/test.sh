#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs every test: unit tests and
# end-to-end tests with real QEMU guests. Prints ctest's summary; exits
# non-zero if any test fails.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BLACKBOX_BUILD_DIR:-$ROOT/build}
bash "$ROOT/scripts/setup.sh"
cd "$BUILD"
# Unit tests first (fast, parallel), then the end-to-end tests, which boot
# guests under TCG and run one at a time on a small machine.
ctest -LE e2e --output-on-failure -j"$(nproc)"
ctest -L e2e --output-on-failure
