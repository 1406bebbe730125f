#!/usr/bin/env bash
# The issue's six-camera saturation run (fast pace, with its limits: decode-only and the bare
# model) with gridwatch's defaults, as in ../2026-12-03-lag/six.sh, once per tag given, on one
# binary (see BINARY). Thinning is realtime-only, so it plays no part here: these runs repeat
# the pipeline-vs-bare-model measurement on this build.
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=benches/runs/2026-12-03-thin
for tag in "$@"; do
  uptime > "$out/$tag.uptime"
  ./target/release/gridwatch-bench run --streams sample-streams/vtest.mp4 sample-streams/bikes.mp4 \
    --analysis-fps 2 --cameras 6 --ground-truth none --out "$out/$tag" > "$out/$tag.log" 2>&1
done
