# Sourced by .ci/windows.sh and .ci/macos.sh: Debian's own Rust (rustc-web, cargo-web,
# rust-web-src, rust-web-clippy) for targets rustup cannot add here, with the standard library
# built from source by -Zbuild-std. Before sourcing, set STEP_PREFIX (for log lines).
#
# Debian's rustc/cargo live in /usr/bin (dpkg -L rustc-web cargo-web); rustup's proxies in
# ~/.cargo/bin come first on PATH, so name every tool of the distribution's toolchain
# explicitly and put /usr/bin first so `cargo clippy` finds Debian's cargo-clippy.
export PATH="/usr/bin:$PATH"
export CARGO=/usr/bin/cargo RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
unset RUSTUP_TOOLCHAIN
# -Zbuild-std is unstable; the distribution's stable rustc accepts it with this.
export RUSTC_BOOTSTRAP=1
export CARGO_INCREMENTAL=0
# The crates that run on these platforms.
CRATES=(-p commscan-agent -p commscan-runtime -p commscan-ctl)

step() { printf '== %s: %s\n' "$STEP_PREFIX" "$*"; }
timed() { local t0=$SECONDS; "$@"; printf '   (%ss)\n' "$((SECONDS - t0))"; }

# apt-get installs those of the packages named that are missing (root, Debian), then prints
# the toolchain's versions.
install_debian_rust() {
  local pkgs=(rustc-web cargo-web rust-web-src rust-web-clippy "$@")
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
