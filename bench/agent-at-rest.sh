#!/usr/bin/env bash
# An enrolled `commscan-agent run` at rest, against a real `commscan-collector serve` on
# loopback: RSS, threads and CPU while idle, the CPU of one rescan, and the bytes its
# reporting connection moves (idle, and for one change). Prints the figures; sends nothing
# off this machine, changes nothing outside a temporary directory. Not run by CI.
#
# Usage: bench/agent-at-rest.sh [IDLE_SECONDS]        (default 600)
#   COMMSCAN_BIN=dir     where commscan-collector and commscan-agent are
#                        (default $CARGO_TARGET_DIR or target, /release/)
#   PORT=n               the collector's port on 127.0.0.1 (default 17443)
#   AGENT_TOML=text      extra lines for the agent's configuration file (e.g. keepalive_interval)
#   COLLECTOR_TOML=text  the collector's configuration file (default: empty, its defaults)
#   SAMPLE=s             seconds between /proc samples (default 10)
#
# What the agent scans: a tree under the temporary directory holding a copy of this machine's
# dpkg database, /etc/os-release and /usr/share/applications (`run --root`), so that a change
# can be made without touching the machine: the script "installs" a catalog product by
# appending a dpkg entry, which the agent's file watch turns into a rescan and one delta
# report. (With --root the agent reads no process table, so process samples cost nothing
# here.)
#
# How: the agent starts, scans, reports; once the first report is acknowledged the script
# waits SETTLE seconds (startup's blocking threads exit), then samples VmRSS and Threads from
# /proc/PID/status every SAMPLE seconds for IDLE_SECONDS; CPU is utime + stime from
# /proc/PID/stat (all threads, ended ones included; clock ticks, 10 ms) at both ends. The agent's reporting connection is read with
# `ss -ti` (bytes_sent, bytes_received: TCP payload, i.e. TLS records; segs_out/segs_in
# counted too) at both ends of the window; bytes per day = window bytes scaled to 86,400 s.
# Then the change: CPU and bytes from the append to the acknowledgement (+1 s).
set -euo pipefail
cd "$(dirname "$0")/.."

idle=${1:-600}
bin=${COMMSCAN_BIN:-${CARGO_TARGET_DIR:-target}/release}
port=${PORT:-17443}
sample=${SAMPLE:-10}
settle=${SETTLE:-30}
collector=$bin/commscan-collector
agent=$bin/commscan-agent
for b in "$collector" "$agent"; do
  [[ -x $b ]] || { echo "no $b: cargo build --release -p commscan-collector -p commscan-agent" >&2; exit 64; }
done

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

load() { cut -d' ' -f1-3 /proc/loadavg; }

# The tree the agent scans.
root=$tmp/root
mkdir -p "$root/var/lib/dpkg" "$root/etc" "$root/usr/share/applications"
cp /var/lib/dpkg/status "$root/var/lib/dpkg/status" 2>/dev/null || : >"$root/var/lib/dpkg/status"
cp /etc/os-release "$root/etc/os-release" 2>/dev/null || echo 'ID=debian' >"$root/etc/os-release"
cp -r /usr/share/applications/. "$root/usr/share/applications/" 2>/dev/null || true

# The collector.
cdata=$tmp/collector
token=$(COMMSCAN_CONFIG=/dev/null "$collector" init --data-dir "$cdata" --org acme \
  --trust-domain bench.local --server-name 127.0.0.1 | awk '/^ *cse_/ {print $1; exit}')
printf '%s\n' "${COLLECTOR_TOML:-}" >"$tmp/collector.toml"
COMMSCAN_CONFIG=$tmp/collector.toml COMMSCAN_LOG=warn "$collector" serve --data-dir "$cdata" \
  --listen "127.0.0.1:$port" --web-listen off --metrics-listen off 2>"$tmp/collector.log" &
pids+=($!)
for _ in $(seq 300); do
  (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

# The agent.
adata=$tmp/agent
"$agent" enroll --collector "https://127.0.0.1:$port" --token "$token" --ca "$cdata/pki/ca.crt" \
  --data-dir "$adata" >/dev/null
printf 'data_dir = "%s"\n%s\n' "$adata" "${AGENT_TOML:-}" >"$tmp/agent.toml"
COMMSCAN_LOG=info NO_COLOR=1 "$agent" run --config "$tmp/agent.toml" --root "$root" \
  2>"$tmp/agent.log" &
apid=$!
pids+=("$apid")
acks() { grep -c 'report acknowledged' "$tmp/agent.log" 2>/dev/null || true; }
for _ in $(seq 600); do [[ $(acks) -ge 1 ]] && break; sleep 0.1; done
[[ $(acks) -ge 1 ]] || { echo "no acknowledgement; agent log:" >&2; cat "$tmp/agent.log" >&2; exit 1; }
sleep "$settle"

# utime + stime of the whole process (threads that ended included), in nanoseconds.
tck=$(getconf CLK_TCK)
cpu_ns() { awk -v t="$tck" '{sub(/^.*\) /, ""); printf "%.0f\n", ($12 + $13) * 1e9 / t}' "/proc/$apid/stat"; }
status() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$apid/status"; }
# Sums over the agent's connections to the collector: bytes_sent bytes_received segs_out segs_in
wire() {
  ss -tinpH state established "( dport = :$port )" | awk -v pid="pid=$apid," '
    /users:/ { mine = index($0, pid) > 0; next }
    mine && !/users:/ {
      for (i = 1; i <= NF; i++) {
        split($i, kv, ":")
        if (kv[1] == "bytes_sent") s += kv[2]
        if (kv[1] == "bytes_received") r += kv[2]
        if (kv[1] == "segs_out") so += kv[2]
        if (kv[1] == "segs_in") si += kv[2]
      }
    }
    END { printf "%d %d %d %d\n", s, r, so, si }'
}

echo "agent at rest: $("$agent" --version); idle window ${idle}s, samples every ${sample}s"
echo "threads after settling: $(for t in /proc/$apid/task/*; do cat "$t/comm"; done | sort | uniq -c | awk '{printf "%s%s×%s", sep, $2, $1; sep=", "}')"
load0=$(load)
read -r s0 r0 so0 si0 <<<"$(wire)"
c0=$(cpu_ns)
rss_min=999999999 rss_max=0 thr_min=999 thr_max=0
t_end=$((SECONDS + idle))
while ((SECONDS < t_end)); do
  rss=$(status VmRSS) thr=$(status Threads)
  ((rss < rss_min)) && rss_min=$rss
  ((rss > rss_max)) && rss_max=$rss
  ((thr < thr_min)) && thr_min=$thr
  ((thr > thr_max)) && thr_max=$thr
  sleep "$sample"
done
c1=$(cpu_ns)
read -r s1 r1 so1 si1 <<<"$(wire)"
load1=$(load)
awk -v c0="$c0" -v c1="$c1" -v w="$idle" -v rmin="$rss_min" -v rmax="$rss_max" \
  -v tmin="$thr_min" -v tmax="$thr_max" -v l0="$load0" -v l1="$load1" 'BEGIN {
  printf "idle RSS          %.1f–%.1f MiB\n", rmin / 1024, rmax / 1024
  printf "idle threads      %d–%d\n", tmin, tmax
  printf "idle CPU          %.1f ms in %d s = %.4f%% of a core\n", (c1 - c0) / 1e6, w, (c1 - c0) / 1e7 / w
  printf "load average      %s at start, %s at end\n", l0, l1
}'
awk -v s="$((s1 - s0))" -v r="$((r1 - r0))" -v so="$((so1 - so0))" -v si="$((si1 - si0))" -v w="$idle" 'BEGIN {
  d = 86400 / w
  printf "idle wire         agent→collector %d B in %d segments, collector→agent %d B in %d segments (%d s)\n", s, so, r, si, w
  printf "idle wire per day %.0f B payload both ways (%.1f KB); with 52 B of IPv4+TCP headers per segment %.1f KB\n", (s + r) * d, (s + r) * d / 1000, ((s + r) + 52 * (so + si)) * d / 1000
}'

# One change: a catalog product appears in the dpkg database; the watch rescans and reports.
n=$(acks)
read -r s0 r0 so0 si0 <<<"$(wire)"
c0=$(cpu_ns)
printf '\nPackage: zoom\nStatus: install ok installed\nArchitecture: amd64\nVersion: 6.0.0\nDescription: bench\n fixture package\n' >>"$root/var/lib/dpkg/status"
for _ in $(seq 600); do [[ $(acks) -gt $n ]] && break; sleep 0.1; done
[[ $(acks) -gt $n ]] || { echo "the change was not reported; agent log:" >&2; tail "$tmp/agent.log" >&2; exit 1; }
sleep 1
c1=$(cpu_ns)
read -r s1 r1 so1 si1 <<<"$(wire)"
echo "rescan + report   CPU $(awk -v a="$c0" -v b="$c1" 'BEGIN {printf "%.1f ms", (b - a) / 1e6}'), wire agent→collector $((s1 - s0)) B / $((so1 - so0)) segments, collector→agent $((r1 - r0)) B / $((si1 - si0)) segments (load $(load))"
sleep "$settle"
echo "after the rescan  RSS $(awk '{printf "%.1f MiB", $1 / 1024}' <<<"$(status VmRSS)"), threads $(status Threads) (${settle}s later)"
