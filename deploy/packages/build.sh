#!/usr/bin/env bash
# The .deb and .rpm packages of commscan-agent, commscan-collector and commscanctl, from
# binaries built already, with dpkg-deb and rpmbuild (Debian: `apt-get install rpm`) rather
# than cargo-deb and cargo-generate-rpm. deploy/README.md ("Packages") says what they install
# and what install, upgrade, remove and purge do.
#
#   deploy/packages/build.sh --release              cargo build --release --locked, then package
#   deploy/packages/build.sh --bin-dir target/debug package what is built (CI: the debug build)
#
#   --bin-dir DIR   where the three binaries are (default: $CARGO_TARGET_DIR or target, then
#                   /release with --release, /debug without)
#   --release       build them first: cargo build --release --locked -p commscan-agent
#                   -p commscan-collector -p commscan-ctl (what real packages ship)
#   --out DIR       where the packages go (default: the target directory's packages/)
#   --revision N    the Debian revision and the rpm release (default 1)
#   --format F      deb, rpm or all (default all)
#   --fast          gzip -1 instead of xz: throw-away packages of debug binaries (CI)
#
# How: each package's tree is staged from the binaries and deploy/ (units, agent.toml, and
# collector.toml once it exists), with completions and man pages that the binaries write
# themselves (`completions SHELL`, `man DIR`: runtime/src/docs.rs); then dpkg-deb builds
# each .deb with control fields, conffiles, md5sums and the maintainer scripts made from
# debian/*.in, and rpmbuild builds the three .rpm from one spec written here (scriptlets from
# rpm/*.in). The binaries must run on this machine. Prints the packages' paths, one a line.
set -euo pipefail
umask 022

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
die() {
  echo "deploy/packages/build.sh: $*" >&2
  exit 1
}

bin_dir="" release=0 out="" revision=1 format=all fast=0
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir="${2:?--bin-dir DIR}"; shift 2 ;;
    --release) release=1; shift ;;
    --out) out="${2:?--out DIR}"; shift 2 ;;
    --revision) revision="${2:?--revision N}"; shift 2 ;;
    --format) format="${2:?--format deb|rpm|all}"; shift 2 ;;
    --fast) fast=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (--help)" ;;
  esac
done
case "$format" in deb|rpm|all) ;; *) die "--format $format: want deb, rpm or all" ;; esac
[[ "$revision" =~ ^[0-9][0-9a-z.+~]*$ ]] || die "--revision $revision: want a number like 1"

target_dir="${CARGO_TARGET_DIR:-$repo/target}"
if [ "$release" = 1 ]; then
  (cd "$repo" && cargo build --release --locked -p commscan-agent -p commscan-collector -p commscan-ctl)
  bin_dir="${bin_dir:-$target_dir/release}"
fi
bin_dir="${bin_dir:-$target_dir/debug}"
out="${out:-$target_dir/packages}"

need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }
need dpkg-deb "it is dpkg's (Debian)"
if [ "$format" != rpm ]; then need dpkg-shlibdeps "apt-get install dpkg-dev"; fi
if [ "$format" != deb ]; then need rpmbuild "apt-get install rpm (or --format deb)"; fi

# --- the binaries: present, runnable here, one version, one architecture -----------------

# package binary unit data-dir system-user section
PACKAGES=(
  "commscan-agent commscan-agent commscan-agent.service /var/lib/commscan-agent root admin"
  "commscan-collector commscan-collector commscan-collector.service /var/lib/commscan-collector commscan admin"
  "commscanctl commscanctl - - - admin"
)

version="" machine=""
for spec in "${PACKAGES[@]}"; do
  read -r _ bin _ <<<"$spec"
  exe="$bin_dir/$bin"
  [ -x "$exe" ] || die "$exe: missing; build it (cargo build --locked -p ${bin/commscanctl/commscan-ctl}) or pass --bin-dir / --release"
  [ "$(head -c 4 "$exe" | od -An -c | tr -d ' ')" = '177ELF' ] || die "$exe: not an ELF binary"
  m="$(od -An -t u2 -j 18 -N 2 "$exe" | tr -d ' ')"
  [ -z "$machine" ] || [ "$m" = "$machine" ] || die "$exe: another architecture than the other binaries"
  machine="$m"
  v="$("$exe" --version 2>&1)" || die "$exe --version failed (a binary for another machine?): $v"
  v="${v#"$bin "}"
  [ -z "$version" ] || [ "$v" = "$version" ] || die "$exe is version $v, the others $version: build them together"
  version="$v"
done
case "$machine" in
  62) deb_arch=amd64 rpm_arch=x86_64 ;;
  183) deb_arch=arm64 rpm_arch=aarch64 ;;
  *) die "ELF machine $machine: not amd64 or arm64" ;;
esac
[[ "$version" =~ ^[0-9][0-9A-Za-z.+~-]*$ ]] || die "version '$version' from --version: not a version"
# A pre-release (0.2.0-rc.1) sorts before its release in both formats with a tilde.
pkg_version="${version//-/\~}"
deb_version="$pkg_version-$revision"

# Man pages' dates and the packages' timestamps: the commit's, so a rebuild is the same.
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}"
export SOURCE_DATE_EPOCH

MAINTAINER="${COMMSCAN_PACKAGE_MAINTAINER:-commscan developers <dev@commscan.invalid>}"
HOMEPAGE="https://github.com/commscan/commscan"

# Summary (first line) and description of each package, for both formats.
describe() {
  case "$1" in
    commscan-agent)
      cat <<'EOF'
commscan agent: inventories communication software on this device
The agent reads this device's package databases, application folders and
process table, matches them against a catalog of communication products
(messengers, video conferencing, collaboration suites) and reports what it
finds to a commscan collector over mutual TLS. It never sends the rest of the
software inventory, command lines, user names or file contents.
.
Enrol once with `commscan-agent enroll`, then `systemctl enable --now
commscan-agent`; installing the package starts nothing.
EOF
      ;;
    commscan-collector)
      cat <<'EOF'
commscan collector: enrols devices and judges their communication software
The collector enrols devices over mutual TLS, stores their findings (in an
embedded store under /var/lib/commscan-collector, or in PostgreSQL), judges
them against each organisation's policy, and answers officers, auditors and
ministry analysts over gRPC and a web console.
.
Create the deployment with `commscan-collector init` as user commscan, then
`systemctl enable --now commscan-collector`; installing the package starts
nothing.
EOF
      ;;
    commscanctl)
      cat <<'EOF'
commscan command line for officers, auditors and analysts
commscanctl queries a commscan collector: devices and their verdicts,
organisation and fleet summaries, unclassified software, enrolment tokens,
people and the audit log. It checks and tests policies offline, and applies
policies, catalogs and registers to the collector.
EOF
      ;;
  esac
}

# --- staging ----------------------------------------------------------------------------

work="$out/.work"
rm -rf "$work"
# debian/<package>/ and debian/control: where dpkg-shlibdeps expects them.
mkdir -p "$out" "$work/debian"
printf 'Source: commscan\n' >"$work/debian/control"

stage() { # package binary unit
  local pkg="$1" bin="$2" unit="$3" root="$work/debian/$1"
  install -D -m 0755 "$bin_dir/$bin" "$root/usr/bin/$bin"
  local exe="$root/usr/bin/$bin"
  install -d "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
    "$root/usr/share/fish/vendor_completions.d" "$root/usr/share/man/man1" "$root/usr/share/doc/$pkg"
  "$exe" completions bash >"$root/usr/share/bash-completion/completions/$bin"
  "$exe" completions zsh >"$root/usr/share/zsh/vendor-completions/_$bin"
  "$exe" completions fish >"$root/usr/share/fish/vendor_completions.d/$bin.fish"
  "$exe" man "$root/usr/share/man/man1" >/dev/null
  gzip -9n "$root/usr/share/man/man1/"*.1
  install -m 0644 "$here/copyright" "$root/usr/share/doc/$pkg/copyright"
  if [ "$unit" != - ]; then
    install -D -m 0644 "$repo/deploy/systemd/$unit" "$root/usr/lib/systemd/system/$unit"
  fi
  case "$pkg" in
    commscan-agent)
      install -D -m 0644 "$repo/deploy/agent.toml" "$root/etc/commscan/agent.toml"
      ;;
    commscan-collector)
      # The collector's configuration file arrives in a parallel change; ship it once it exists.
      if [ -f "$repo/deploy/collector.toml" ]; then
        install -D -m 0644 "$repo/deploy/collector.toml" "$root/etc/commscan/collector.toml"
      fi
      install -D -m 0644 "$here/commscan-collector.sysusers" "$root/usr/lib/sysusers.d/commscan-collector.conf"
      ;;
  esac
}

# Conffiles that only root and the service's group may read (0640 root:USER): the collector's
# configuration will hold settings such as webhook secrets. The agent's holds none (0644).
private_conffiles() { # package
  if [ "$1" = commscan-collector ] && [ -f "$work/debian/$1/etc/commscan/collector.toml" ]; then
    echo /etc/commscan/collector.toml
  fi
}

# The maintainer script or scriptlet `$1`, for the package described by the other arguments.
script() { # template package unit data-dir system-user
  local gecos="commscan ${2#commscan-}" private
  private="$(private_conffiles "$2")"
  sed -e "s|@PACKAGE@|$2|g" -e "s|@UNIT@|$3|g" -e "s|@DATA_DIR@|$4|g" \
    -e "s|@SYSTEM_USER@|$5|g" -e "s|@USER_GECOS@|$gecos|g" -e "s|@PRIVATE_CONFFILES@|$private|g" "$1"
}

for spec in "${PACKAGES[@]}"; do
  read -r pkg bin unit _ <<<"$spec"
  stage "$pkg" "$bin" "$unit"
done

built=()

# --- .deb -------------------------------------------------------------------------------

build_deb() { # package binary unit data-dir system-user section
  local pkg="$1" bin="$2" unit="$3" data="$4" user="$5" section="$6"
  local root="$work/debian/$pkg" ctl="$work/debian/$pkg/DEBIAN"
  install -d -m 0755 "$ctl"
  if [ -d "$root/etc" ]; then
    (cd "$root" && find etc -type f | sort | sed 's|^|/|') >"$ctl/conffiles"
  fi
  # Conffiles are checksummed by dpkg itself, not listed here (as dh_md5sums does).
  (cd "$root" && find usr -type f -print0 | sort -z | xargs -0 md5sum) >"$ctl/md5sums"
  local depends
  depends="$(cd "$work" && dpkg-shlibdeps -O -e"$root/usr/bin/$bin" | sed -n 's/^shlibs:Depends=//p')"
  [ -n "$depends" ] || die "$pkg: dpkg-shlibdeps found no dependencies"
  if [ "$user" != root ]; then depends="$depends, adduser"; fi
  local size
  size="$(du -s -k --apparent-size --exclude=DEBIAN "$root" | cut -f1)"
  {
    echo "Package: $pkg"
    echo "Source: commscan"
    echo "Version: $deb_version"
    echo "Architecture: $deb_arch"
    echo "Maintainer: $MAINTAINER"
    echo "Installed-Size: $size"
    echo "Depends: $depends"
    if [ "$pkg" = commscan-collector ]; then echo "Recommends: commscanctl"; fi
    echo "Section: $section"
    echo "Priority: optional"
    echo "Homepage: $HOMEPAGE"
    describe "$pkg" | sed -e '1s/^/Description: /' -e '2,$s/^/ /'
  } >"$ctl/control"
  if [ "$unit" != - ]; then
    local s
    for s in postinst prerm postrm; do
      script "$here/debian/$s.in" "$pkg" "$unit" "$data" "$user" >"$ctl/$s"
      chmod 0755 "$ctl/$s"
      sh -n "$ctl/$s" || die "$pkg: $s does not parse"
    done
  fi
  local deb="$out/${pkg}_${deb_version}_${deb_arch}.deb" z=(-Zxz)
  if [ "$fast" = 1 ]; then z=(-Zgzip -z1); fi
  dpkg-deb --root-owner-group "${z[@]}" --build "$root" "$deb" >/dev/null
  built+=("$deb")
}

if [ "$format" != rpm ]; then
  for spec in "${PACKAGES[@]}"; do
    # shellcheck disable=SC2086 # the fields are words
    build_deb $spec
  done
fi

# --- .rpm -------------------------------------------------------------------------------

# Directories every system has, or that belong to systemd: never owned by these packages.
system_dir() {
  case "$1" in
    /etc|/usr|/usr/bin|/usr/lib|/usr/lib/systemd|/usr/lib/systemd/system|/usr/lib/sysusers.d) return 0 ;;
    /var|/var/lib) return 0 ;;
    /usr/share|/usr/share/man|/usr/share/man/man1|/usr/share/doc) return 0 ;;
    *) return 1 ;;
  esac
}

# %files of a package: its staged tree (zsh's completions where Fedora and RHEL keep them),
# /etc as %config(noreplace), and its state directory with owner and mode.
rpm_files() { # package binary unit data-dir system-user section
  local pkg="$1" data="$4" user="$5" root="$work/rpm/$1"
  echo "%files -n $pkg"
  echo "%defattr(-,root,root,-)"
  (cd "$root" && find . -mindepth 1 -type d | sort | sed 's|^\.||') | while read -r d; do
    system_dir "$d" || [ "$d" = "$data" ] || echo "%dir $d"
  done
  (cd "$root" && find . -type f | sort | sed 's|^\.||') | while read -r f; do
    case "$f" in
      /etc/*)
        if private_conffiles "$pkg" | grep -qx "$f"; then
          echo "%config(noreplace) %attr(0640,root,$user) $f"
        else
          echo "%config(noreplace) $f"
        fi
        ;;
      *) echo "$f" ;;
    esac
  done
  [ "$data" = - ] || echo "%dir %attr(0700,$user,$user) $data"
}

rpm_scriptlets() { # package binary unit data-dir system-user section
  local pkg="$1" unit="$3" data="$4" user="$5" s
  [ "$unit" != - ] || return 0
  for s in pre post preun postun; do
    [ "$s" != pre ] || [ "$user" != root ] || continue
    echo "%$s -n $pkg"
    script "$here/rpm/$s.in" "$pkg" "$unit" "$data" "$user"
    echo
  done
}

build_rpms() {
  local spec_file="$work/rpm/commscan.spec" spec pkg data payload=w2.xzdio
  if [ "$fast" = 1 ]; then payload=w1.gzdio; fi
  mkdir -p "$work/rpm/buildroot" "$work/rpm/top"
  for spec in "${PACKAGES[@]}"; do
    read -r pkg _ <<<"$spec"
    # Hard links: the same bytes as the .deb's tree, without another copy of the binaries.
    cp -al "$work/debian/$pkg" "$work/rpm/$pkg"
    rm -rf "$work/rpm/$pkg/DEBIAN"
    read -r _ _ _ data _ <<<"$spec"
    # Shipped (with owner and mode) rather than made by a scriptlet: `rpm -V` checks it.
    if [ "$data" != - ]; then install -d "$work/rpm/$pkg$data"; fi
    if [ -d "$work/rpm/$pkg/usr/share/zsh/vendor-completions" ]; then
      mv "$work/rpm/$pkg/usr/share/zsh/vendor-completions" "$work/rpm/$pkg/usr/share/zsh/site-functions"
    fi
  done
  {
    cat <<EOF
# Written by deploy/packages/build.sh; the files come from its staged trees.
%define debug_package %{nil}
%define _build_id_links none
# Binaries keep their line tables (backtraces name file:line); man pages are gzipped already.
%global __os_install_post %{nil}
%define _binary_payload $payload
%define use_source_date_epoch_as_buildtime 1
%define clamp_mtime_to_source_date_epoch 1

Name: commscan
Version: $pkg_version
Release: $revision
Summary: Communication software inventory and compliance
License: Apache-2.0
URL: $HOMEPAGE
Packager: $MAINTAINER

%description
commscan: an agent, a collector and a command line (built as three packages).

EOF
    for spec in "${PACKAGES[@]}"; do
      read -r pkg _ <<<"$spec"
      echo "%package -n $pkg"
      echo "Summary: $(describe "$pkg" | head -1)"
      if [ "$pkg" = commscan-collector ]; then
        echo "Recommends: commscanctl"
        echo "Requires(pre): /usr/sbin/useradd, /usr/sbin/groupadd, /usr/bin/getent"
      fi
      echo
      echo "%description -n $pkg"
      describe "$pkg" | tail -n +2 | sed 's/^\.$//'
      echo
    done
    echo "%install"
    for spec in "${PACKAGES[@]}"; do
      read -r pkg _ <<<"$spec"
      echo "cp -al '$work/rpm/$pkg/.' %{buildroot}/"
    done
    echo
    for spec in "${PACKAGES[@]}"; do
      # shellcheck disable=SC2086 # the fields are words
      rpm_files $spec
      echo
      # shellcheck disable=SC2086
      rpm_scriptlets $spec
    done
  } >"$spec_file"
  rpmbuild -bb --quiet --target "$rpm_arch" \
    --define "_topdir $work/rpm/top" --define "_rpmdir $work/rpm/out" \
    --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
    --buildroot "$work/rpm/buildroot" "$spec_file" >"$work/rpm/rpmbuild.log" 2>&1 || {
    cat "$work/rpm/rpmbuild.log" >&2
    die "rpmbuild failed (spec: $spec_file)"
  }
  for spec in "${PACKAGES[@]}"; do
    read -r pkg _ <<<"$spec"
    local rpm="$pkg-$pkg_version-$revision.$rpm_arch.rpm"
    [ -f "$work/rpm/out/$rpm" ] || die "rpmbuild wrote no $rpm (log: $work/rpm/rpmbuild.log)"
    mv "$work/rpm/out/$rpm" "$out/$rpm"
    built+=("$out/$rpm")
  done
}

if [ "$format" != deb ]; then
  build_rpms
fi

rm -rf "$work"
printf '%s\n' "${built[@]}"
