#!/usr/bin/env bash
# Benchmarks a whole `beaker-dev clone` over loopback against the targets
# of the swarm issue: a generated 256 MiB, 2000-file site (bench/gensite)
# is published and seeded (`beaker-dev seed`), then cloned RUNS times, each
# into a fresh data dir, with --peer 127.0.0.1:PORT --no-dht --no-mdns.
# Each run's wall time and peak RSS (GNU time) are printed, then the medians.
#
#   bench/clone.sh [--transport tcp|utp] [RUNS]     (default tcp, 5 runs)
#
# Targets: tcp >= 150 MB/s, utp >= 50 MB/s; peak RSS <= 200 MiB.
# The site is kept in $BENCH_DIR (default /tmp/beaker-dev-bench-clone) for
# the next run; the seeder's and the clones' data dirs and output folders go
# to a temporary folder in $TMPDIR (default /tmp: TMPDIR=/dev/shm takes the
# disk out of the measure). Needs GNU time (/usr/bin/time, package "time").
# Each run starts with `sync` (no dirty pages left by the previous run)
# and, as root, like `hyperfine --prepare 'sync; echo 1 >
# /proc/sys/vm/drop_caches'`, then reads the seeder's store back into the
# page cache. Without the drop (NO_DROP_CACHES=1; NO_SYNC=1 skips both) this
# VM ran the clone at 110 MB/s instead of 190: perf put 35% of the clone's
# samples in the kernel filling new page-cache pages
# (copy_folio_from_iter_atomic) instead of 3% (on this VM most likely free
# memory handed back to the host and faulted in again page by page).
# Runs keep their clones until the end (about 512 MiB each), and a run
# right after deleting many files (another benchmark) is slower on ext4.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

transport=tcp
runs=5
while [ $# -gt 0 ]; do
  case $1 in
    --transport) transport=${2:?--transport needs tcp or utp}; shift 2 ;;
    --transport=*) transport=${1#*=}; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) runs=$1; shift ;;
  esac
done
case $transport in
  tcp) target=150 ;;
  utp) target=50 ;;
  *) echo "bench: --transport tcp or utp, not $transport" >&2; exit 2 ;;
esac
[ -x /usr/bin/time ] || { echo "bench: install GNU time (apt-get install time)" >&2; exit 1; }

work=${BENCH_DIR:-/tmp/beaker-dev-bench-clone}
site=$work/site
mkdir -p "$work"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/beaker-dev-clone.XXXXXX")
seeder=
cleanup() {
  if [ -n "$seeder" ]; then kill -INT "$seeder" 2>/dev/null || true; wait "$seeder" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

go build -o "$tmp/beaker-dev" ./cmd/beaker-dev
bd=$tmp/beaker-dev
if [ ! -f "$work/site.done" ]; then
  rm -rf "$site"
  go run ./bench/gensite -out "$site" -files 2000 -size $((256 << 20))
  touch "$work/site.done"
fi
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

# A fresh archive for the site (init publishes a folder that has files).
rm -rf "$site/.dat" "$tmp/seed-home"
url=$("$bd" init "$site" --data-dir "$tmp/seed-home" --json | json url)
bytes=$(find "$site" -type f -not -path '*/.dat/*' -printf '%s\n' | awk '{s+=$1} END {print s}')
files=$(find "$site" -type f -not -path '*/.dat/*' | wc -l)

# The seeder: loopback only, its address read from its "seeding" event.
mkfifo "$tmp/events"
"$bd" seed "$site" --data-dir "$tmp/seed-home" --listen 127.0.0.1:0 --no-dht --no-mdns --json > "$tmp/events" 2> "$tmp/seed.err" &
seeder=$!
exec 3< "$tmp/events"
addr=
while read -r -t 30 line <&3; do
  addr=$(printf '%s' "$line" | python3 -c "import json,sys; e=json.load(sys.stdin); print(e['swarm'] if e.get('event')=='seeding' else '')")
  [ -n "$addr" ] && break
done
[ -n "$addr" ] || { echo "bench: the seeder did not start:" >&2; cat "$tmp/seed.err" >&2; exit 1; }
# Keep draining its events so it never blocks on a full pipe.
cat <&3 > /dev/null &
exec 3<&-

echo "site: $files files, $bytes bytes, $url seeded on $addr; cloning over $transport, $runs runs"
speeds=(); rss=()
for i in $(seq "$runs"); do
  home=$tmp/clone-home-$i out=$tmp/clone-$i
  if [ -z "${NO_SYNC:-}" ]; then
    sync
    if [ -z "${NO_DROP_CACHES:-}" ] && [ -w /proc/sys/vm/drop_caches ]; then
      echo 1 > /proc/sys/vm/drop_caches
      find "$tmp/seed-home" "$site" -type f -exec cat {} + > /dev/null
    fi
  fi
  /usr/bin/time -f '%e %M' -o "$tmp/time" "$bd" clone "$url" "$out" --data-dir "$home" \
    --peer "$addr" --transport "$transport" --no-dht --no-mdns --listen 127.0.0.1:0 --json > "$tmp/clone.json"
  read -r secs kb < "$tmp/time"
  got=$(json bytes < "$tmp/clone.json")
  [ "$got" = "$bytes" ] || { echo "bench: run $i cloned $got bytes, want $bytes" >&2; exit 1; }
  if [ "$i" = 1 ]; then
    diff -r -q --exclude=.dat "$site" "$out" >/dev/null || { echo "bench: the clone differs from the site" >&2; exit 1; }
  fi
  mbs=$(python3 -c "print(round($bytes/$secs/1e6, 1))")
  printf 'run %d: %6.2fs  %6.1f MB/s  peak RSS %4d MiB\n' "$i" "$secs" "$mbs" $((kb / 1024))
  speeds+=("$mbs"); rss+=("$kb")
  # The clones stay until the end: ext4 skips inodes freed in the last
  # 30 s when it allocates new ones, which makes creating the next run's
  # 2000 files several times slower than on a file system in normal use.
done
speed_med=$(printf '%s\n' "${speeds[@]}" | median)
rss_med=$(( $(printf '%s\n' "${rss[@]}" | median) / 1024 ))
rss_max=$(( $(printf '%s\n' "${rss[@]}" | sort -n | tail -1) / 1024 ))
echo "clone over $transport: median $speed_med MB/s (target >= $target), median peak RSS $rss_med MiB, max $rss_max MiB (target <= 200)"
