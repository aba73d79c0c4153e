#!/usr/bin/env bash
# Builds beaker-dev and runs its main job on the example site in
# examples/hello: the first run creates the site's key pair and archive
# (keys go to $BEAKER_DEV_HOME, default .example-home/, never into the site),
# every run publishes what changed and shows the history. No network needed.
set -euo pipefail
cd "$(dirname "$0")"
export BEAKER_DEV_HOME=${BEAKER_DEV_HOME:-$PWD/.example-home}
go build -o bin/beaker-dev ./cmd/beaker-dev
site=examples/hello
if [ ! -f "$site/.dat/archive.json" ]; then
  bin/beaker-dev init "$site"
fi
bin/beaker-dev publish "$site"
bin/beaker-dev info "$site"
bin/beaker-dev log "$site" | head -n 20
