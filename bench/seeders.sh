#!/usr/bin/env bash
# Benchmarks parallel download from several seeders (the swarm issue's
# target: three seeders give >= 2.5x the speed of one). Runs as root, in
# network namespaces: three seeder hosts and one downloader on a bridge
# that lives in a namespace of its own (nothing of the machine's own
# network is touched), each seeder's egress shaped to 20 Mbit/s with
#   tc qdisc add dev eth0 root tbf rate 20mbit burst 32kbit latency 400ms
# A generated site (SIZE_MIB, default 64 MiB: about 27 s from one seeder) is
# published and seeded on s1 and cloned to s2 and s3 (before shaping), which
# seed it too; then the downloader clones it with --peer to s1 alone and
# with --peer to all three, RUNS times each (default 1; medians reported).
#
#   sudo bench/seeders.sh [RUNS]          SIZE_MIB=32 bench/seeders.sh
#
# The namespaces (bds<pid>-*) and processes are removed on exit. The site is
# kept in $BENCH_DIR (default /tmp/beaker-dev-bench-seeders) for the next run.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
runs=${1:-1}
size_mib=${SIZE_MIB:-64}
rate=${RATE:-20mbit}
[ "$(id -u)" = 0 ] || { echo "bench: network namespaces need root (sudo $0)" >&2; exit 1; }
command -v ip >/dev/null && command -v tc >/dev/null || { echo "bench: needs ip and tc (apt-get install iproute2)" >&2; exit 1; }

work=${BENCH_DIR:-/tmp/beaker-dev-bench-seeders}
site=$work/site-$size_mib
mkdir -p "$work"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/beaker-dev-seeders.XXXXXX")
pfx=bds$$
hosts=(s1 s2 s3 d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for h in "${hosts[@]}" br; do ip netns del "$pfx-$h" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

go build -o "$tmp/beaker-dev" ./cmd/beaker-dev
bd=$tmp/beaker-dev
if [ ! -f "$site.done" ]; then
  rm -rf "$site"
  go run ./bench/gensite -out "$site" -files 200 -size $((size_mib << 20))
  touch "$site.done"
fi

json() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ipof() { case $1 in s1) echo 10.78.250.1 ;; s2) echo 10.78.250.2 ;; s3) echo 10.78.250.3 ;; d) echo 10.78.250.4 ;; esac; }
on() { local h=$1; shift; ip netns exec "$pfx-$h" "$@"; }

# The LAN: a bridge in namespace br, one veth pair per host.
ip netns add "$pfx-br"
ip -n "$pfx-br" link set lo up
ip -n "$pfx-br" link add br0 type bridge stp_state 0
ip -n "$pfx-br" link set br0 up
for h in "${hosts[@]}"; do
  ip netns add "$pfx-$h"
  ip -n "$pfx-$h" link set lo up
  ip -n "$pfx-br" link add "v$h" type veth peer name eth0 netns "$pfx-$h"
  ip -n "$pfx-br" link set "v$h" master br0 up
  ip -n "$pfx-$h" addr add "$(ipof "$h")/24" dev eth0
  ip -n "$pfx-$h" link set eth0 up
done

# seed HOST DIR|URL: start a seeder on HOST and wait until it seeds.
seed() {
  local h=$1 target=$2 log=$tmp/$1.seed
  # ip netns exec execs the binary: $! is the seeder itself.
  ip netns exec "$pfx-$h" "$bd" seed "$target" --data-dir "$tmp/$h" --listen 0.0.0.0:3282 --no-dht --no-mdns --json > "$log" 2> "$log.err" &
  pids+=($!)
  for _ in $(seq 300); do
    grep -q '"event":"seeding"' "$log" && return 0
    sleep 0.1
  done
  echo "bench: the seeder on $h did not start:" >&2; cat "$log.err" >&2; exit 1
}

rm -rf "$site/.dat"
url=$(on s1 "$bd" init "$site" --data-dir "$tmp/s1" --json | json url)
bytes=$(find "$site" -type f -not -path '*/.dat/*' -printf '%s\n' | awk '{s+=$1} END {print s}')
seed s1 "$site"
for h in s2 s3; do
  on "$h" "$bd" clone "$url" "$tmp/$h-site" --data-dir "$tmp/$h" --peer "$(ipof s1):3282" --transport tcp --no-dht --no-mdns --json > /dev/null
  seed "$h" "$tmp/$h-site"
done
for h in s1 s2 s3; do
  on "$h" tc qdisc add dev eth0 root tbf rate "$rate" burst 32kbit latency 400ms
done
echo "site: $(find "$site" -type f -not -path '*/.dat/*' | wc -l) files, $bytes bytes; 3 seeders, egress $rate each"

# clone_time N: clone from the first N seeders into a fresh data dir; prints seconds.
clone_time() {
  local n=$1 peers=() out=$tmp/d-clone h
  for h in s1 s2 s3; do
    if [ ${#peers[@]} -lt $((2 * n)) ]; then peers+=(--peer "$(ipof "$h"):3282"); fi
  done
  rm -rf "$tmp/d" "$out"
  local s e
  s=$(date +%s.%N)
  on d "$bd" clone "$url" "$out" --data-dir "$tmp/d" "${peers[@]}" --transport tcp --no-dht --no-mdns --timeout 5m --json > "$tmp/clone.json" ||
    { echo "bench: the clone from $n seeder(s) failed" >&2; exit 1; }
  e=$(date +%s.%N)
  local got peers_used
  got=$(json bytes < "$tmp/clone.json")
  peers_used=$(json peers < "$tmp/clone.json")
  [ "$got" = "$bytes" ] || { echo "bench: cloned $got bytes, want $bytes" >&2; exit 1; }
  [ "$peers_used" = "$n" ] || echo "bench: warning: the clone used $peers_used peers, not $n" >&2
  python3 -c "print(round($e-$s, 2))"
}

one=(); three=()
for i in $(seq "$runs"); do
  t1=$(clone_time 1)
  t3=$(clone_time 3)
  printf 'run %d: one seeder %6.2fs (%5.2f MB/s), three seeders %6.2fs (%5.2f MB/s), speed-up %.2fx\n' "$i" \
    "$t1" "$(python3 -c "print($bytes/$t1/1e6)")" "$t3" "$(python3 -c "print($bytes/$t3/1e6)")" "$(python3 -c "print($t1/$t3)")"
  one+=("$t1"); three+=("$t3")
done
m1=$(printf '%s\n' "${one[@]}" | median)
m3=$(printf '%s\n' "${three[@]}" | median)
echo "median: one seeder ${m1}s, three seeders ${m3}s: speed-up $(python3 -c "print(round($m1/$m3, 2))")x (target >= 2.5x)"
