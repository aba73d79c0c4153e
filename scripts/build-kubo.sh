#!/usr/bin/env bash
# Builds the kubo (go-ipfs) daemon the IPFS tests and benchmarks talk to,
# from the Go module proxy, and prints the binary's path.
#
# `go install github.com/ipfs/kubo/cmd/ipfs@v0.42.0` is refused because kubo's
# go.mod carries exclude directives, so this builds it inside a throwaway
# module that copies kubo's go.mod (see docs/TESTING.md). v0.43 needs a
# replaced go-libp2p fork the proxy does not serve, so v0.42.0 is pinned.
set -euo pipefail
version=${KUBO_VERSION:-v0.42.0}
cache=${BEAKER_DEV_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/beaker-dev-tools}
bin="$cache/kubo-$version/ipfs"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
gomod=$(go mod download -json "github.com/ipfs/kubo@$version" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
sed 's#^module .*#module kubobuild#' "$gomod" > go.mod
go mod edit -require="github.com/ipfs/kubo@$version"
cat > tools.go <<'GO'
//go:build tools

package kubobuild

import _ "github.com/ipfs/kubo/cmd/ipfs"
GO
go mod tidy >&2
mkdir -p "$(dirname "$bin")"
go build -o "$bin.tmp" github.com/ipfs/kubo/cmd/ipfs >&2
mv "$bin.tmp" "$bin"
echo "$bin"
