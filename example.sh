#!/usr/bin/env bash
# Builds beaker-dev and runs its main job, `serve`, on the example site in
# examples/hello: a live-reload preview on http://localhost:8282/ (and the
# LAN, with a QR code), every save published as a new signed version and
# seeded to the swarm. The first run creates the site's key pair and archive
# (keys go to $BEAKER_DEV_HOME, default .example-home/, never into the site).
# No network is needed: when the public DHT routers cannot be reached that
# is a warning, and the preview works the same. Extra arguments go to serve
# (e.g. ./example.sh --port 9000 --no-lan). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")"
export BEAKER_DEV_HOME=${BEAKER_DEV_HOME:-$PWD/.example-home}
go build -o bin/beaker-dev ./cmd/beaker-dev
echo "Edit a file in examples/hello/ and watch the page reload."
exec bin/beaker-dev serve examples/hello "$@"
