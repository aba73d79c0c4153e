#!/usr/bin/env bash
# Installs what the tests need and runs them all: vet, the unit and
# end-to-end tests (with the race detector on the fast ones), then every
# fuzz target for a short while.
#
#   ./test.sh              everything
#   FUZZTIME=30s ./test.sh longer fuzzing
#
# With CI=true a missing component fails the tests instead of skipping them.
set -euo pipefail
cd "$(dirname "$0")"
fuzztime=${FUZZTIME:-4s}

# What the tests drive for real, installed when missing: Debian's headless
# Chromium (browser tests), Avahi with a private D-Bus and the npm
# multicast-dns package (mDNS interop), GNU time (benchmarks), Node and npm
# (the DHT and DNS discovery interop peers), iproute2 and util-linux
# (network namespaces).
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v avahi-daemon >/dev/null || missing+=(avahi-daemon)
command -v avahi-resolve >/dev/null || missing+=(avahi-utils)
command -v dbus-daemon >/dev/null || missing+=(dbus-daemon)
[ -x /usr/bin/time ] || missing+=(time)
command -v dnsmasq >/dev/null || [ -x /usr/sbin/dnsmasq ] || missing+=(dnsmasq-base)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v ip >/dev/null || missing+=(iproute2)
command -v unshare >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
if ! NODE_PATH=$(npm root -g 2>/dev/null) node -e 'require("multicast-dns")' 2>/dev/null; then
  echo "== installing multicast-dns (npm)"
  npm install -g --silent multicast-dns@7.2.5 >/dev/null
fi
# The npm peers of the interop tests (dns-discovery 6, bittorrent-dht 11),
# pinned by their lockfiles.
for d in hyperdrive/discovery/testdata/dns-discovery hyperdrive/discovery/testdata/bittorrent-dht; do
  [ -d "$d/node_modules" ] || { echo "== npm ci in $d"; (cd "$d" && npm ci --silent --no-audit --no-fund >/dev/null); }
done

echo "== go vet"
go vet ./...
test -z "$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt would change:"; gofmt -l .; exit 1; }

# These lower the kernel's inotify limits for a moment, which would upset
# watchers in packages tested at the same time: they run alone, last.
kernel='TestWatchLimitFallsBackToPolling|TestWatchOverflowGivesFull'

echo "== tests (race detector, short mode)"
go test -race -short -count=1 -skip "$kernel" ./...

echo "== tests (full)"
go test -count=1 -skip "$kernel" ./...
go test -count=1 -run "$kernel" ./publish/

echo "== fuzz targets, $fuzztime each"
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    echo "-- $pkg $target"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" > /tmp/fuzz.$$.log 2>&1 || { cat /tmp/fuzz.$$.log; exit 1; }
  done
done
rm -f /tmp/fuzz.$$.log
echo "== all tests passed"
