#!/usr/bin/env bash
# Benchmarks `beaker-dev publish` on a generated 256 MiB, 2000-file site
# against the targets of the archive issue, and `ipfs add -r --offline`
# (kubo, built by scripts/build-kubo.sh) on the same folder.
#
#   bench/publish.sh [RUNS]      (default 5 runs; medians are reported)
#
# Needs GNU time (/usr/bin/time, Debian package "time") for peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
work=${BENCH_DIR:-/tmp/beaker-dev-bench}
site=$work/site
mkdir -p "$work"
command -v /usr/bin/time >/dev/null || { echo "bench: install GNU time (apt-get install time)" >&2; exit 1; }

go build -o "$work/beaker-dev" ./cmd/beaker-dev
bd=$work/beaker-dev
if [ ! -f "$work/site.done" ]; then
  rm -rf "$site"
  go run ./bench/gensite -out "$site" -files 2000 -size $((256 << 20))
  touch -d '1 hour ago' "$work/site.done"
  find "$site" -exec touch -d '1 hour ago' {} +
fi
# Warm the page cache: the target is for a warm cache.
find "$site" -type f -exec cat {} + >/dev/null
bytes=$(find "$site" -type f -not -path '*/.dat/*' -printf '%s\n' | awk '{s+=$1} END {print s}')

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

# fresh_archive: a new, empty archive linked to the site folder.
fresh_archive() {
  rm -rf "$work/home" "$work/empty" "$site/.dat"
  mkdir -p "$work/empty"
  url=$(BEAKER_DEV_HOME=$work/home "$bd" init "$work/empty" --json | json url)
  mkdir -p "$site/.dat"
  printf '{"url":"%s"}\n' "$url" > "$site/.dat/archive.json"
}

echo "site: $(find "$site" -type f -not -path '*/.dat/*' | wc -l) files, $bytes bytes"
full=(); rss=()
for i in $(seq "$runs"); do
  fresh_archive
  /usr/bin/time -f '%e %M' -o "$work/time" env BEAKER_DEV_HOME="$work/home" "$bd" publish "$site" --json > "$work/out.json"
  read -r secs kb < "$work/time"
  full+=("$secs"); rss+=("$kb")
done
full_med=$(printf '%s\n' "${full[@]}" | median)
rss_max=$(printf '%s\n' "${rss[@]}" | sort -n | tail -1)
echo "full publish: median ${full_med}s over $runs runs ($(printf '%s ' "${full[@]}")) = $(python3 -c "print(round($bytes/$full_med/1e6))") MB/s; peak RSS $((rss_max / 1024)) MiB (target >= 300 MB/s, <= 200 MiB)"

# One-file edit: append to a mid-sized file, publish again.
one=()
target_file=$(find "$site" -type f -size +100k -size -400k -not -path '*/.dat/*' | sort | head -1)
for i in $(seq "$runs"); do
  printf 'edit %s\n' "$i" >> "$target_file"
  s=$(date +%s.%N)
  BEAKER_DEV_HOME=$work/home "$bd" publish "$site" --json > "$work/one.json"
  e=$(date +%s.%N)
  one+=("$(python3 -c "print(round($e-$s,4))")")
done
one_med=$(printf '%s\n' "${one[@]}" | median)
echo "one-file edit: median ${one_med}s ($(printf '%s ' "${one[@]}")), $(python3 -c "print(round($one_med/$full_med,3))") of the full import (target <= 0.25)"

# A 100-byte edit in the middle of the largest file.
big=$(find "$site" -type f -not -path '*/.dat/*' -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2-)
size=$(stat -c %s "$big")
head -c 100 /dev/urandom | dd of="$big" bs=1 seek=$((size / 2)) conv=notrunc status=none
new=$(BEAKER_DEV_HOME=$work/home "$bd" publish "$site" --json | json new_bytes)
echo "100-byte edit in the middle of a $size-byte file: $new new bytes stored (target <= 131072)"

# kubo, same folder, without our .dat link.
if ipfs=$(scripts/build-kubo.sh 2>/dev/null); then
  rm -rf "$site/.dat"
  for profile in test default; do
    k=()
    for i in $(seq 3); do
      export IPFS_PATH=$work/ipfs
      rm -rf "$IPFS_PATH"
      if [ "$profile" = test ]; then "$ipfs" init --profile=test -e >/dev/null; else "$ipfs" init -e >/dev/null; fi
      s=$(date +%s.%N)
      "$ipfs" add -r --offline -Q "$site" >/dev/null
      e=$(date +%s.%N)
      k+=("$(python3 -c "print(round($e-$s,3))")")
    done
    kmed=$(printf '%s\n' "${k[@]}" | median)
    echo "ipfs add -r --offline (kubo, $profile profile): median ${kmed}s ($(printf '%s ' "${k[@]}")); beaker-dev takes $(python3 -c "print(round($full_med/$kmed,3))") of it (target <= 0.333)"
  done
  rm -rf "$work/ipfs"
else
  echo "kubo could not be built: skipped the ipfs comparison" >&2
fi

echo "stages alone (one core):"
go test -run '^$' -bench 'RabinChunker|SHA256Chunks|WriteContent' -benchtime 2s ./hyperdrive | grep Benchmark
