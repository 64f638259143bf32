#!/usr/bin/env bash
# The Windows build of the crates that run on Windows (commscan-agent, commscan-runtime,
# commscan-ctl), with Debian's own Rust and MinGW: no rustup target for Windows is installed
# here (and none can be fetched), so the standard library is built from `rust-web-src` with
# `-Zbuild-std`. The rustup toolchain stays the one for everything else (see ARCHITECTURE.md).
#
#   .ci/windows.sh install   apt-get the toolchain, Wine and wixl/msitools for the MSI (root, Debian)
#   .ci/windows.sh lint      clippy -D warnings of the three crates (libraries, binaries) for x86_64-pc-windows-gnu
#   .ci/windows.sh build     debug build of commscan-agent.exe (for the Wine tests)
#   .ci/windows.sh release   release build of commscan-agent.exe (to ship; not run by CI)
#   .ci/windows.sh all       the three in order (what .ci/run calls)
#
# Prints `COMMSCAN_WINDOWS_AGENT=<path>` on success of `build`; .ci/run exports it for the
# Wine tests (tests/tests/windows_wine.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-pc-windows-gnu
export CARGO_TARGET_DIR="${COMMSCAN_WINDOWS_TARGET_DIR:-$PWD/target/windows}"
STEP_PREFIX=windows
# shellcheck source=.ci/debian-rust.sh
source .ci/debian-rust.sh
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
# ring's C and assembly for the target.
export CC_x86_64_pc_windows_gnu=x86_64-w64-mingw32-gcc AR_x86_64_pc_windows_gnu=x86_64-w64-mingw32-ar
# `--locked` applies to the workspace's Cargo.lock. Under -Zbuild-std cargo resolves the
# standard library against its own lock file, /usr/lib/rustlib/src/rust/library/Cargo.lock
# from rust-web-src, which matches that std source exactly; `--locked` is checked against it
# too and passes, so it is kept.
ZFLAGS=(-Zbuild-std=std,panic_abort --target "$TARGET" --locked)

install() {
  install_debian_rust gcc-mingw-w64-x86-64 wine64 wixl msitools
}

lint() {
  step "cargo clippy ${CRATES[*]} --target $TARGET -Zbuild-std (Debian's Rust)"
  # Libraries and binaries, not test targets: those add the test dependencies and std's `test`
  # crate to a cold build, minutes CI's budget cannot spare (run with --all-targets by hand).
  timed /usr/bin/cargo clippy "${ZFLAGS[@]}" "${CRATES[@]}" -- -D warnings
}

build() {
  step "cargo build -p commscan-agent --target $TARGET (debug)"
  timed /usr/bin/cargo build "${ZFLAGS[@]}" -p commscan-agent --bin commscan-agent
  local exe="$CARGO_TARGET_DIR/$TARGET/debug/commscan-agent.exe"
  test -f "$exe"
  # The Wine tests build their own bcryptprimitives.dll shim into each test prefix
  # (tests/wine/bcryptprimitives.c); nothing here ships it.
  echo "COMMSCAN_WINDOWS_AGENT=$exe"
}

release() {
  step "cargo build --release -p commscan-agent --target $TARGET"
  timed /usr/bin/cargo build "${ZFLAGS[@]}" --release -p commscan-agent --bin commscan-agent
  echo "$CARGO_TARGET_DIR/$TARGET/release/commscan-agent.exe"
}

case "${1:-all}" in
  install) install ;;
  lint) lint ;;
  build) build ;;
  release) release ;;
  all) install; lint; build ;;
  *) echo "usage: $0 [install|lint|build|release|all]" >&2; exit 2 ;;
esac
