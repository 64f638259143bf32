#!/usr/bin/env bash
# Builds the agent's MSI from deploy/windows/commscan-agent.wxs with msitools' wixl
# (Debian: apt-get install wixl).
#
#   deploy/windows/build-msi.sh AGENT_EXE VERSION OUT.msi
#
# AGENT_EXE is a built commscan-agent.exe (.ci/windows.sh build; a release build for
# shipping); VERSION is x.y.z (Windows Installer compares the first three fields for
# upgrades). The Wine tests (tests/tests/windows_service.rs) run this script.
set -euo pipefail
if [ "$#" -ne 3 ]; then
  echo "usage: $0 AGENT_EXE VERSION OUT.msi" >&2
  exit 64
fi
exe="$1" version="$2" out="$3"
here="$(cd "$(dirname "$0")" && pwd)"
[ -f "$exe" ] || { echo "$0: $exe: no such file" >&2; exit 64; }
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "$0: version $version: want x.y.z" >&2; exit 64; }
command -v wixl >/dev/null || { echo "$0: wixl not found (apt-get install wixl)" >&2; exit 69; }
# The example configuration: deploy/agent.toml with the Windows paths (CRLF for Notepad).
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
sed -e '1s|^# /etc/commscan/agent.toml:|# C:\\ProgramData\\commscan\\agent.toml:|' \
    -e "s|^data_dir = .*|data_dir = 'C:\\ProgramData\\commscan\\agent'|" \
    -e 's/$/\r/' "$here/../agent.toml" > "$tmp/agent.toml.example"
# wixl resolves Source= relative to the working directory only: stage both files there.
ln -s "$(realpath "$exe")" "$tmp/commscan-agent.exe"
cp "$here/commscan-agent.wxs" "$tmp/"
out="$(realpath -m "$out")"
(cd "$tmp" && wixl --arch x64 -D Version="$version" -D AgentExe=commscan-agent.exe \
  -D ExampleConfig=agent.toml.example -o "$out" commscan-agent.wxs)
# The old version is removed before the new one installs (see the .wxs): wixl schedules it
# after InstallServices and has no MajorUpgrade/@Schedule.
msibuild "$out" -q "UPDATE InstallExecuteSequence SET Sequence = 1501 WHERE Action = 'RemoveExistingProducts'"
echo "$out"
