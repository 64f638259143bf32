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
# Debian's rustc/cargo live in /usr/bin (dpkg -L rustc-web cargo-web); rustup's proxies in
# ~/.cargo/bin come first on PATH, so name every tool of the distribution's toolchain
# explicitly and put /usr/bin first so `cargo clippy` finds Debian's cargo-clippy.
export PATH="/usr/bin:$PATH"
export CARGO=/usr/bin/cargo RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
unset RUSTUP_TOOLCHAIN
# -Zbuild-std is unstable; the distribution's stable rustc accepts it with this.
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
# ring's C and assembly for the target.
export CC_x86_64_pc_windows_gnu=x86_64-w64-mingw32-gcc AR_x86_64_pc_windows_gnu=x86_64-w64-mingw32-ar
export CARGO_INCREMENTAL=0
CRATES=(-p commscan-agent -p commscan-runtime -p commscan-ctl)
# `--locked` applies to the workspace's Cargo.lock. Under -Zbuild-std cargo resolves the
# standard library against its own lock file, /usr/lib/rustlib/src/rust/library/Cargo.lock
# from rust-web-src, which matches that std source exactly; `--locked` is checked against it
# too and passes, so it is kept.
ZFLAGS=(-Zbuild-std=std,panic_abort --target "$TARGET" --locked)

step() { printf '== windows: %s\n' "$*"; }
timed() { local t0=$SECONDS; "$@"; printf '   (%ss)\n' "$((SECONDS - t0))"; }

install() {
  local pkgs=(rustc-web cargo-web rust-web-src rust-web-clippy gcc-mingw-w64-x86-64 wine64 wixl msitools)
  local missing=()
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  /usr/bin/cargo --version
  /usr/bin/rustc --version
  /usr/bin/cargo clippy --version
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
