#!/usr/bin/env bash
# The macOS type-check of the agent (commscan-agent, with commscan-runtime and commscan-ctl),
# with Debian's own Rust and clang, like .ci/windows.sh: no rustup target for macOS is
# installed here (and none can be fetched), so the standard library is built from
# `rust-web-src` with `-Zbuild-std`. There is no Apple SDK either: ring's C and assembly are
# compiled by Debian's clang for arm64-apple-macos with `-ffreestanding -nostdlibinc` and three
# stub headers (.ci/macos/include/). Nothing is linked or run (see ARCHITECTURE.md).
#
#   .ci/macos.sh install   apt-get the toolchain (root, Debian)
#   .ci/macos.sh check     clippy -D warnings of the three crates (libraries, binaries) for aarch64-apple-darwin
#   .ci/macos.sh all       the two in order
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-apple-darwin
export CARGO_TARGET_DIR="${COMMSCAN_MACOS_TARGET_DIR:-$PWD/target/macos}"
STEP_PREFIX=macos
# shellcheck source=.ci/debian-rust.sh
source .ci/debian-rust.sh
# ring's C and assembly for the target: Debian's clang (cc passes `--target=arm64-apple-macosx`
# and `-mmacosx-version-min`), freestanding, without the host's /usr/include, and with the stub
# headers standing in for the SDK's. rustc's own deployment target for this target is 11.0;
# set here so cc does not ask `xcrun` (absent) for one.
export MACOSX_DEPLOYMENT_TARGET=11.0
export CC_aarch64_apple_darwin=clang AR_aarch64_apple_darwin=llvm-ar
export CFLAGS_aarch64_apple_darwin="-ffreestanding -nostdlibinc -isystem $PWD/.ci/macos/include"
# `--locked` holds for both lock files, the workspace's and the standard library's own (see
# .ci/windows.sh).
ZFLAGS=(-Zbuild-std=std,panic_abort --target "$TARGET" --locked)

install() {
  install_debian_rust clang llvm
  clang --version | head -n 1
}

check() {
  step "cargo clippy ${CRATES[*]} --target $TARGET -Zbuild-std (Debian's Rust, type-check only)"
  # Libraries and binaries, not test targets (as for Windows). `cargo clippy` stops at
  # metadata: the crates are type-checked and linted, build scripts compile ring's C into
  # archives, and nothing is linked.
  timed /usr/bin/cargo clippy "${ZFLAGS[@]}" "${CRATES[@]}" -- -D warnings
}

case "${1:-all}" in
  install) install ;;
  check) check ;;
  all) install; check ;;
  *) echo "usage: $0 [install|check|all]" >&2; exit 2 ;;
esac
