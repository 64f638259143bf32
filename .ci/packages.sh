#!/usr/bin/env bash
# The packages, with the real tools: deploy/packages/build.sh makes the .deb and .rpm from
# the debug binaries CI has built already (no release build), then on this machine
#
#   dpkg -i      the three .deb; --version, and each unit's ExecStartPre `validate` as the
#                unit's user, from the installed paths; commscanctl policy check; the system
#                user, modes of the state directories, conffiles, completions, man pages,
#                systemd-analyze verify of the installed units
#   dpkg -i      again with revision 2 (an upgrade): data, a locally edited conffile and the
#                admin's `systemctl enable` kept
#   dpkg -r      binaries gone; data directories and conffiles kept, byte for byte
#   dpkg --purge data directories, conffiles and enablement gone; the system user kept (as
#                documented)
#   rpm -qpl     each .rpm's paths against the expected list; owners and modes (rpm -qplv),
#                conffiles (rpm -qpc), scriptlets (rpm -qp --scripts)
#
# Needs root and Debian; installs rpm (rpmbuild) and dpkg-dev from Debian's packages when
# missing. Refuses to run where commscan is installed or has data (it would destroy them).
# Whatever happens, it leaves nothing installed: an EXIT trap purges the packages, deletes the
# state directories and the `commscan` user it created.
#
#   .ci/packages.sh     (binaries from ${CARGO_TARGET_DIR:-target}/debug; built there if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
t_start=$SECONDS

PKGS=(commscan-agent commscan-collector commscanctl)
DATA_DIRS=(/var/lib/commscan-agent /var/lib/commscan-collector)

step() { printf '== packages: %s\n' "$*"; }
fail() {
  printf '\nFAILED (.ci/packages.sh): %s\n\n' "$*" >&2
  exit 1
}
# expect_eq WHAT GOT WANT
expect_eq() { [ "$2" = "$3" ] || fail "$1: got '$2', want '$3'"; }

[ "$(id -u)" = 0 ] || fail "needs root (it installs packages with dpkg)"
command -v dpkg >/dev/null || fail "needs dpkg (Debian)"

missing=()
command -v rpmbuild >/dev/null || missing+=(rpm)
command -v dpkg-shlibdeps >/dev/null || missing+=(dpkg-dev)
if [ "${#missing[@]}" -gt 0 ]; then
  step "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# One run at a time on a machine: the packages and their paths are the machine's.
exec 9>/run/lock/commscan-packages-test.lock
flock -n 9 || {
  step "waiting for another .ci/packages.sh on this machine"
  flock 9
}

for p in "${PKGS[@]}"; do
  s="$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)"
  case "$s" in "" | un*) ;; *) fail "$p is on this machine (dpkg status '$s'): this test would purge it with its data; remove it first (dpkg --purge $p)" ;; esac
done
for d in "${DATA_DIRS[@]}" /etc/commscan; do
  [ ! -e "$d" ] || fail "$d exists: this test would delete it; move it away first"
done
user_existed=0
if getent passwd commscan >/dev/null; then user_existed=1; fi

tmp="$(mktemp -d /tmp/commscan-packages.XXXXXX)"
cleanup() {
  local rc=$?
  set +e
  local left=()
  for p in "${PKGS[@]}"; do
    case "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)" in "" | un*) ;; *) left+=("$p") ;; esac
  done
  if [ "${#left[@]}" -gt 0 ]; then
    echo "cleanup: dpkg --purge ${left[*]}"
    DEBIAN_FRONTEND=noninteractive dpkg --purge "${left[@]}" >/dev/null 2>&1 ||
      DEBIAN_FRONTEND=noninteractive dpkg --purge --force-all "${left[@]}" >/dev/null 2>&1
  fi
  # They did not exist before (checked above): whatever is there now is the test's.
  rm -rf "${DATA_DIRS[@]}" /etc/commscan
  if [ "$user_existed" = 0 ] && getent passwd commscan >/dev/null; then
    echo "cleanup: userdel commscan (created by the package during this test)"
    userdel commscan
    getent group commscan >/dev/null && groupdel commscan
  fi
  rm -rf "$tmp"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bin_dir="${CARGO_TARGET_DIR:-$repo/target}/debug"
if [ ! -x "$bin_dir/commscan-agent" ] || [ ! -x "$bin_dir/commscan-collector" ] || [ ! -x "$bin_dir/commscanctl" ]; then
  step "cargo build (debug) -p commscan-agent -p commscan-collector -p commscan-ctl: not built yet"
  cargo build --locked -p commscan-agent -p commscan-collector -p commscan-ctl
fi
version="$("$bin_dir/commscanctl" --version)"
version="${version#commscanctl }"

step "build .deb and .rpm (revision 1) from $bin_dir"
t0=$SECONDS
deploy/packages/build.sh --bin-dir "$bin_dir" --fast --revision 1 --out "$tmp/r1" >"$tmp/r1.list"
step "build .deb (revision 2, for the upgrade)"
deploy/packages/build.sh --bin-dir "$bin_dir" --fast --revision 2 --format deb --out "$tmp/r2" >"$tmp/r2.list"
printf '   (%ss)\n' "$((SECONDS - t0))"
for f in "$tmp"/r1/*.deb "$tmp"/r1/*.rpm "$tmp"/r2/*.deb; do
  printf '   %12d  %s\n' "$(stat -c %s "$f")" "${f#"$tmp"/}"
done
deb() { echo "$tmp/$1/${2}_${version}-${1#r}_$(dpkg --print-architecture).deb"; }
for p in "${PKGS[@]}"; do
  [ -f "$(deb r1 "$p")" ] || fail "build.sh made no $(deb r1 "$p"): $(cat "$tmp/r1.list")"
done

# --- install ------------------------------------------------------------------------------

step "dpkg -i (revision 1)"
DEBIAN_FRONTEND=noninteractive dpkg -i "$(deb r1 commscan-agent)" "$(deb r1 commscan-collector)" \
  "$(deb r1 commscanctl)" </dev/null >"$tmp/dpkg.log" 2>&1 || {
  cat "$tmp/dpkg.log" >&2
  fail "dpkg -i failed"
}
for p in "${PKGS[@]}"; do
  expect_eq "dpkg status of $p" "$(dpkg-query -W -f='${db:Status-Abbrev}${Version}' "$p")" "ii ${version}-1"
done

step "--version from /usr/bin"
for b in commscan-agent commscan-collector commscanctl; do
  [ "$(command -v "$b")" = "/usr/bin/$b" ] || fail "$b resolves to '$(command -v "$b")', not /usr/bin/$b"
  expect_eq "/usr/bin/$b --version" "$("/usr/bin/$b" --version)" "$b $version"
done

# The unit's ExecStartPre, run as systemd would: the unit's User= and Environment=.
unit_file() { echo "/usr/lib/systemd/system/$1.service"; }
unit_key() { sed -n "s/^$2=//p" "$(unit_file "$1")"; }
run_exec_start_pre() { # unit
  local pre user env=()
  pre="$(unit_key "$1" ExecStartPre)"
  [ -n "$pre" ] || fail "$(unit_file "$1") has no ExecStartPre"
  case "$pre" in *" validate"*) ;; *) fail "$1's ExecStartPre is not validate: $pre" ;; esac
  user="$(unit_key "$1" User)"
  while read -r e; do [ -z "$e" ] || env+=("$e"); done < <(unit_key "$1" Environment)
  # shellcheck disable=SC2086 # the unit's command line, split as systemd splits it (no quotes in ours)
  env "${env[@]}" runuser -u "${user:-root}" -- $pre
}

step "ExecStartPre validate of the installed units"
out="$(run_exec_start_pre commscan-agent 2>&1)" || fail "agent ExecStartPre failed with the shipped /etc/commscan/agent.toml: $out"
echo "   agent: $out"
set +e
out="$(run_exec_start_pre commscan-collector 2>&1)"
rc=$?
set -e
expect_eq "collector ExecStartPre before init (exit code)" "$rc" 64
case "$out" in *"commscan-collector init"*) ;; *) fail "collector validate before init does not say to run init: $out" ;; esac
echo "   collector before init (exit 64): $out"
runuser -u commscan -- /usr/bin/commscan-collector init --data-dir /var/lib/commscan-collector \
  --org acme --server-name collector.packages.test >"$tmp/init.log" 2>&1 || {
  cat "$tmp/init.log" >&2
  fail "commscan-collector init as user commscan failed"
}
out="$(run_exec_start_pre commscan-collector 2>&1)" || fail "collector ExecStartPre after init failed: $out"
echo "   collector after init: $out"

step "commscanctl policy check (offline)"
/usr/bin/commscanctl policy check policies/ministry-letter.toml

step "system user, modes, conffiles"
IFS=: read -r _ _ uid _ _ home shell < <(getent passwd commscan) || fail "no user commscan after dpkg -i"
[ "$uid" -lt 1000 ] || fail "user commscan has uid $uid: not a system user"
expect_eq "commscan's home" "$home" /var/lib/commscan-collector
expect_eq "commscan's shell" "$shell" /usr/sbin/nologin
mode() { stat -c '%a %U:%G' "$1"; }
expect_eq "mode of /var/lib/commscan-agent" "$(mode /var/lib/commscan-agent)" "700 root:root"
expect_eq "mode of /var/lib/commscan-collector" "$(mode /var/lib/commscan-collector)" "700 commscan:commscan"
expect_eq "mode of /etc/commscan/agent.toml" "$(mode /etc/commscan/agent.toml)" "644 root:root"
for b in commscan-agent commscan-collector commscanctl; do
  expect_eq "mode of /usr/bin/$b" "$(mode "/usr/bin/$b")" "755 root:root"
done
for u in commscan-agent commscan-collector; do
  expect_eq "mode of $(unit_file "$u")" "$(mode "$(unit_file "$u")")" "644 root:root"
  cmp -s "$(unit_file "$u")" "deploy/systemd/$u.service" || fail "$(unit_file "$u") differs from deploy/systemd/$u.service"
done
dpkg-query -W -f='${Conffiles}\n' commscan-agent | grep -q '^ /etc/commscan/agent.toml ' ||
  fail "/etc/commscan/agent.toml is not a conffile of commscan-agent"
if [ -f deploy/collector.toml ]; then
  dpkg-query -W -f='${Conffiles}\n' commscan-collector | grep -q '^ /etc/commscan/collector.toml ' ||
    fail "/etc/commscan/collector.toml is not a conffile of commscan-collector"
  expect_eq "mode of /etc/commscan/collector.toml" "$(mode /etc/commscan/collector.toml)" "640 root:commscan"
fi

step "completions and man pages"
for b in commscan-agent commscan-collector commscanctl; do
  for f in "/usr/share/bash-completion/completions/$b" "/usr/share/zsh/vendor-completions/_$b" \
    "/usr/share/fish/vendor_completions.d/$b.fish" "/usr/share/man/man1/$b.1.gz"; do
    [ -s "$f" ] || fail "$f missing or empty after dpkg -i"
  done
  # Completing the first word offers the binary's commands (validate, init, tokens).
  want="$(case "$b" in commscan-agent) echo validate ;; commscan-collector) echo init ;; *) echo tokens ;; esac)"
  # shellcheck disable=SC2016 # for the inner bash
  got="$(bash -c 'source "$1"; fn="$(complete -p "$2" | sed -n "s/.* -F \([^ ]*\) .*/\1/p")"
    COMP_WORDS=("$2" "${3:0:3}"); COMP_CWORD=1; "$fn" "$2" "${3:0:3}" "$2"; printf "%s\n" "${COMPREPLY[@]}"' _ \
    "/usr/share/bash-completion/completions/$b" "$b" "$want")"
  printf '%s\n' "$got" | grep -qx "$want" || fail "bash completion of '$b ${want:0:3}' offers '$got', not $want"
  if command -v zsh >/dev/null; then zsh -n "/usr/share/zsh/vendor-completions/_$b" || fail "_$b: zsh syntax"; fi
  if command -v fish >/dev/null; then fish --no-execute "/usr/share/fish/vendor_completions.d/$b.fish" || fail "$b.fish: fish syntax"; fi
done
for page in commscan-agent-validate commscan-collector-serve commscanctl-tokens-create; do
  f="/usr/share/man/man1/$page.1.gz"
  [ -s "$f" ] || fail "$f missing"
  if command -v man >/dev/null; then
    expect_eq "man -w $page" "$(man -w "$page")" "$f"
    warnings="$(zcat "$f" | groff -man -Tutf8 -ww -z 2>&1)"
    [ -z "$warnings" ] || fail "$f: groff warnings: $warnings"
  fi
done
pages=(/usr/share/man/man1/commscan*)
echo "   man pages: ${#pages[@]}"

if ! command -v systemd-analyze >/dev/null; then
  echo "SKIPPED: systemd-analyze verify (not on this machine)"
else
  step "systemd-analyze verify (the installed units)"
  for u in commscan-agent commscan-collector; do
    out="$(systemd-analyze verify "$(unit_file "$u")" 2>&1)" || fail "systemd-analyze verify $u: $out"
    # Lines about other units of this machine are not ours.
    ours="$(printf '%s\n' "$out" | grep -i commscan || true)"
    [ -z "$ours" ] || fail "systemd-analyze verify $u: $ours"
  done
fi

have_systemctl=0
if command -v systemctl >/dev/null; then have_systemctl=1; fi
if [ "$have_systemctl" = 1 ]; then
  step "units installed disabled; an admin's enablement survives the upgrade"
  for u in commscan-agent commscan-collector; do
    expect_eq "systemctl is-enabled $u after dpkg -i" "$(systemctl is-enabled "$u.service" 2>&1 || true)" disabled
  done
  systemctl enable commscan-agent.service 2>/dev/null
else
  echo "SKIPPED: enablement checks (no systemctl on this machine)"
fi

# Data as a deployment has it: the collector's deployment from init, and an agent identity
# (a stand-in file: enrolling needs a collector serving).
echo "stand-in for the device identity" >/var/lib/commscan-agent/identity.test
chmod 0600 /var/lib/commscan-agent/identity.test
snapshot() { (cd / && find "${DATA_DIRS[@]#/}" -printf '%p %m %u %s\n' | sort && find "${DATA_DIRS[@]#/}" -type f -exec sha256sum {} + | sort); }
snapshot >"$tmp/data.before"
echo "   data: $(grep -c . "$tmp/data.before") entries under ${DATA_DIRS[*]}"
echo "# edited by .ci/packages.sh" >>/etc/commscan/agent.toml
conffile_sum="$(sha256sum /etc/commscan/agent.toml)"

# --- upgrade ------------------------------------------------------------------------------

step "dpkg -i (revision 2: upgrade)"
DEBIAN_FRONTEND=noninteractive dpkg -i "$(deb r2 commscan-agent)" "$(deb r2 commscan-collector)" \
  "$(deb r2 commscanctl)" </dev/null >"$tmp/dpkg.log" 2>&1 || {
  cat "$tmp/dpkg.log" >&2
  fail "dpkg -i (upgrade) failed"
}
for p in "${PKGS[@]}"; do
  expect_eq "dpkg status of $p after upgrade" "$(dpkg-query -W -f='${db:Status-Abbrev}${Version}' "$p")" "ii ${version}-2"
done
if [ "$have_systemctl" = 1 ]; then
  expect_eq "systemctl is-enabled commscan-agent after the upgrade" "$(systemctl is-enabled commscan-agent.service 2>&1 || true)" enabled
fi
snapshot >"$tmp/data.upgraded"
diff -u "$tmp/data.before" "$tmp/data.upgraded" || fail "the upgrade changed the data directories (diff above)"
expect_eq "the edited conffile after upgrade" "$(sha256sum /etc/commscan/agent.toml)" "$conffile_sum"
out="$(run_exec_start_pre commscan-collector 2>&1)" || fail "collector ExecStartPre after upgrade failed: $out"
snapshot >"$tmp/data.before"

# --- remove -------------------------------------------------------------------------------

step "dpkg -r: binaries go, data and conffiles stay"
DEBIAN_FRONTEND=noninteractive dpkg -r "${PKGS[@]}" </dev/null >"$tmp/dpkg.log" 2>&1 || {
  cat "$tmp/dpkg.log" >&2
  fail "dpkg -r failed"
}
expect_eq "dpkg status of commscan-agent after remove" "$(dpkg-query -W -f='${db:Status-Abbrev}' commscan-agent)" "rc "
expect_eq "dpkg status of commscan-collector after remove" "$(dpkg-query -W -f='${db:Status-Abbrev}' commscan-collector)" "rc "
for f in /usr/bin/commscan-agent /usr/bin/commscan-collector /usr/bin/commscanctl \
  "$(unit_file commscan-agent)" "$(unit_file commscan-collector)" /usr/share/man/man1/commscanctl.1.gz; do
  [ ! -e "$f" ] || fail "$f is still there after dpkg -r"
done
snapshot >"$tmp/data.removed"
diff -u "$tmp/data.before" "$tmp/data.removed" || fail "dpkg -r changed the data directories (diff above)"
expect_eq "the edited conffile after remove" "$(sha256sum /etc/commscan/agent.toml)" "$conffile_sum"
echo "   kept: ${DATA_DIRS[*]} ($(grep -c . "$tmp/data.removed") entries), /etc/commscan/agent.toml"

# --- purge --------------------------------------------------------------------------------

step "dpkg --purge: data and conffiles go, the user stays"
DEBIAN_FRONTEND=noninteractive dpkg --purge commscan-agent commscan-collector </dev/null >"$tmp/dpkg.log" 2>&1 || {
  cat "$tmp/dpkg.log" >&2
  fail "dpkg --purge failed"
}
for p in "${PKGS[@]}"; do
  s="$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)"
  case "$s" in "" | un*) ;; *) fail "$p still known to dpkg after purge: '$s'" ;; esac
done
for d in "${DATA_DIRS[@]}" /etc/commscan; do
  [ ! -e "$d" ] || fail "$d is still there after dpkg --purge"
done
getent passwd commscan >/dev/null || fail "dpkg --purge removed the commscan user (deploy/README.md says it stays)"
if [ -n "$(dpkg-statoverride --list '/etc/commscan/*' || true)" ]; then
  fail "dpkg --purge left a statoverride: $(dpkg-statoverride --list '/etc/commscan/*')"
fi
for w in /etc/systemd/system/*.wants/commscan-*; do
  if [ -e "$w" ] || [ -L "$w" ]; then fail "$w is still there after dpkg --purge"; fi
done

# --- rpm ----------------------------------------------------------------------------------

arch="$(rpm --eval '%{_arch}')"
rpm_of() { echo "$tmp/r1/$1-${version//-/\~}-1.$arch.rpm"; }
step "rpm -qpl"
expected_paths() {
  local b="$1" p="$1"
  case "$p" in
    commscan-agent) printf '%s\n' /etc/commscan /etc/commscan/agent.toml /usr/lib/systemd/system/commscan-agent.service /var/lib/commscan-agent ;;
    commscan-collector)
      printf '%s\n' /usr/lib/systemd/system/commscan-collector.service /usr/lib/sysusers.d/commscan-collector.conf /var/lib/commscan-collector
      if [ -f deploy/collector.toml ]; then printf '%s\n' /etc/commscan /etc/commscan/collector.toml; fi
      ;;
  esac
  printf '%s\n' "/usr/bin/$b" /usr/share/bash-completion /usr/share/bash-completion/completions \
    "/usr/share/bash-completion/completions/$b" "/usr/share/doc/$p" "/usr/share/doc/$p/copyright" \
    /usr/share/fish /usr/share/fish/vendor_completions.d "/usr/share/fish/vendor_completions.d/$b.fish" \
    /usr/share/zsh /usr/share/zsh/site-functions "/usr/share/zsh/site-functions/_$b"
  # One man page per command and subcommand, as the binary writes them.
  "$bin_dir/$b" man "$tmp/man-$b" | sed 's|.*/|/usr/share/man/man1/|; s|$|.gz|'
}
for p in "${PKGS[@]}"; do
  f="$(rpm_of "$p")"
  [ -f "$f" ] || fail "build.sh made no $f: $(cat "$tmp/r1.list")"
  rpm -qpl "$f" | sort >"$tmp/$p.rpm-paths"
  expected_paths "$p" | sort >"$tmp/$p.expected-paths"
  diff -u "$tmp/$p.expected-paths" "$tmp/$p.rpm-paths" || fail "$p.rpm: paths differ from the expected ones (diff above: - expected, + in the rpm)"
  echo "   $(basename "$f"): $(grep -c . "$tmp/$p.rpm-paths") paths, as expected"
done
lsv() { rpm -qplv "$(rpm_of "$1")" | awk -v p="$2" '$NF == p {print $1, $3 ":" $4}'; }
expect_eq "rpm: /var/lib/commscan-collector" "$(lsv commscan-collector /var/lib/commscan-collector)" "drwx------ commscan:commscan"
expect_eq "rpm: /var/lib/commscan-agent" "$(lsv commscan-agent /var/lib/commscan-agent)" "drwx------ root:root"
expect_eq "rpm: /usr/bin/commscanctl" "$(lsv commscanctl /usr/bin/commscanctl)" "-rwxr-xr-x root:root"
expect_eq "rpm: conffiles of commscan-agent" "$(rpm -qpc "$(rpm_of commscan-agent)")" /etc/commscan/agent.toml
if [ -f deploy/collector.toml ]; then
  expect_eq "rpm: /etc/commscan/collector.toml" "$(lsv commscan-collector /etc/commscan/collector.toml)" "-rw-r----- root:commscan"
  expect_eq "rpm: conffiles of commscan-collector" "$(rpm -qpc "$(rpm_of commscan-collector)")" /etc/commscan/collector.toml
fi
scripts="$(rpm -qp --scripts "$(rpm_of commscan-collector)")"
for want in "preinstall scriptlet" "useradd -r -g commscan -d /var/lib/commscan-collector" \
  "preuninstall scriptlet" "disable --now commscan-collector.service" "try-restart commscan-collector.service"; do
  case "$scripts" in *"$want"*) ;; *) fail "commscan-collector.rpm scriptlets lack '$want': $scripts" ;; esac
done
case "$scripts" in *"rm -"*) fail "commscan-collector.rpm scriptlets delete files; erase must keep data: $scripts" ;; esac
[ -z "$(rpm -qp --scripts "$(rpm_of commscanctl)")" ] || fail "commscanctl.rpm has scriptlets; it needs none"
echo "   requires of commscan-collector: $(rpm -qpR "$(rpm_of commscan-collector)" | grep -E '^(libc\.so\.6\(GLIBC_2\.3[0-9]|/usr/sbin)' | sort -V | tail -3 | tr '\n' ' ')"

step "ok ($((SECONDS - t_start))s); cleaning up"
