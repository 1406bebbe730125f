#!/usr/bin/env bash
# The issue's six-camera saturation run (fast pace, with its limits) as run.sh's six-N, with
# the decoding threads at the process's priority (--pipeline-nice 0; tag six-nice0-N) or at
# the default niceness (tag six-N), in the order given, on one binary (see BINARY).
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=benches/runs/2026-12-03-lag
for tag in "$@"; do
  case $tag in six-nice0-*) flags=(--pipeline-nice 0) ;; *) flags=() ;; esac
  uptime > "$out/$tag.uptime"
  ./target/release/gridwatch-bench run --streams sample-streams/vtest.mp4 sample-streams/bikes.mp4 \
    --analysis-fps 2 --cameras 6 --ground-truth none "${flags[@]}" --out "$out/$tag" > "$out/$tag.log" 2>&1
done
