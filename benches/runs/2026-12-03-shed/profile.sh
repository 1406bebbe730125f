#!/usr/bin/env bash
# Where the CPU goes in the issue's six-camera saturation run (vtest + bikes ×3 at 2 frames/s,
# fast pace, no limit runs): perf samples by thread name and by library, kept as text.
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=benches/runs/2026-12-03-shed
data=$(mktemp -d)
perf record -e cpu-clock -F 499 -g -o "$data/perf.data" -- ./target/release/gridwatch-bench run \
  --streams sample-streams/vtest.mp4 sample-streams/bikes.mp4 --analysis-fps 2 --cameras 6 \
  --ground-truth none --no-limits --out "$data/report" > "$out/profile.log" 2>&1
perf report -i "$data/perf.data" --no-children --sort comm --stdio > "$out/profile-by-thread.txt" 2>/dev/null
perf report -i "$data/perf.data" --no-children --sort comm,dso --stdio -g none --percent-limit 0.3 \
  > "$out/profile-by-thread-and-library.txt" 2>/dev/null
cp "$data/report/report.json" "$out/profile-report.json"
rm -rf "$data"
