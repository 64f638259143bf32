#!/usr/bin/env bash
# Software inventory of THIS machine, side by side: `commscan-agent scan` (release build) and
# FusionInventory's standalone `fusioninventory-inventory`, restricted to software (and, in
# the second pair of rows, running processes). Prints wall time, CPU (user+sys) and max RSS.
#
# Needs `apt-get install fusioninventory-agent time` (Debian/Ubuntu) and a release build:
# `cargo build --release -p commscan-agent`. Installs nothing, sends nothing (FusionInventory
# writes its XML to stdout, which goes to a temp file). Not run by CI.
#
# Usage: bench/compare-fusioninventory.sh [RUNS]      (default 7; one untimed warm-up first)
#   COMMSCAN_AGENT=path   the agent binary (default $CARGO_TARGET_DIR or target, /release/)
#
# How: each timed run is the bare command under bash's `time` (wall, user, sys to the
# millisecond, children included: FusionInventory runs dpkg-query). Max RSS comes from
# separate runs under `/usr/bin/time -v` ("Maximum resident set size": the largest single
# process of the tree, not a sum). Medians and minimums over RUNS.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-7}
agent=${COMMSCAN_AGENT:-${CARGO_TARGET_DIR:-target}/release/commscan-agent}
fi_bin=$(command -v fusioninventory-inventory || true)
[[ -x $agent ]] || { echo "no agent at $agent: cargo build --release -p commscan-agent" >&2; exit 64; }
[[ -n $fi_bin ]] || { echo "no fusioninventory-inventory: apt-get install fusioninventory-agent" >&2; exit 64; }
[[ -x /usr/bin/time ]] || { echo "no /usr/bin/time: apt-get install time" >&2; exit 64; }

# FusionInventory has no "only" switch: every category but software (and process) is turned
# off. Modules without a category (hostname, arch, OS release, uptime...) still run.
fi_off=antivirus,battery,batteries,bios,controller,cpu,drive,environment,firewall,hardware
fi_off+=,input,licenseinfo,local_group,local_user,lvm,memory,modem,monitor,network,os,port
fi_off+=,printer,psu,remote_mgmt,slot,sound,storage,usb,user,video,virtualmachine

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
minimum() { sort -n | head -1; }

# measure LABEL MODE ITEMS_FN -- COMMAND...: prints one row.
measure() {
  local label=$1 mode=$2 items_fn=$3
  shift 4
  "$@" >"$tmp/out" 2>/dev/null # warm-up: page cache, and the output the item count is read from
  local items
  items=$($items_fn "$tmp/out")
  : >"$tmp/times"
  : >"$tmp/rss"
  local TIMEFORMAT='%3R %3U %3S'
  for ((i = 0; i < runs; i++)); do
    { time "$@" >/dev/null 2>&1; } 2>>"$tmp/times"
    /usr/bin/time -v -o "$tmp/v" "$@" >/dev/null 2>&1
    awk -F': ' '/Maximum resident set size/ {print $2}' "$tmp/v" >>"$tmp/rss"
  done
  local wall cpu
  wall=$(awk '{print $1 * 1000}' "$tmp/times")
  cpu=$(awk '{print ($2 + $3) * 1000}' "$tmp/times")
  printf '%-26s %-18s %9.0f %9.0f %8.0f %8.0f %8.1f  %s\n' "$label" "$mode" \
    "$(median <<<"$wall")" "$(minimum <<<"$wall")" "$(median <<<"$cpu")" "$(minimum <<<"$cpu")" \
    "$(median <"$tmp/rss" | awk '{print $1 / 1024}')" "$items"
}

commscan_items() { grep -o '"items_seen": *[0-9]*' "$1" | grep -o '[0-9]*$'; }
fi_items() {
  printf '%s packages, %s processes' "$(grep -c '<SOFTWARES>' "$1" || true)" \
    "$(grep -c '<PROCESSES>' "$1" || true)"
}

echo "compare: $runs runs each; $($agent --version); $($fi_bin --version | head -1)"
printf '%-26s %-18s %9s %9s %8s %8s %8s  %s\n' tool inventory "wall med" "wall min" \
  "cpu med" "cpu min" "RSS MiB" items
printf '%-26s %-18s %9s %9s %8s %8s\n' "" "" ms ms ms ms
measure "commscan-agent scan" "software" commscan_items -- \
  "$agent" scan --no-processes --output json
measure "fusioninventory-inventory" "software" fi_items -- \
  "$fi_bin" --no-category="$fi_off,process"
measure "commscan-agent scan" "software+process" commscan_items -- \
  "$agent" scan --output json
measure "fusioninventory-inventory" "software+process" fi_items -- \
  "$fi_bin" --no-category="$fi_off"
