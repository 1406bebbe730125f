#!/usr/bin/env bash
# The key area (starts spread over 5 s) at SCALING cameras (default 48,64,96), on one binary, in
# the order given: now-N with gridwatch's defaults (late GOPs shed, streaming threads at nice
# 10); before-N with --max-decode-lag-ms 0 --pipeline-nice 0 (what gridwatch did until then);
# lag-N with late shedding only (--pipeline-nice 0); nice-N with the niceness only
# (--max-decode-lag-ms 0). six-N: the issue's six-camera saturation run with its limits.
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=benches/runs/2026-12-03-lag
bench=./target/release/gridwatch-bench
for tag in "$@"; do  # see BINARY for the build
  case $tag in
    now-*) flags=() ;;
    before-*) flags=(--max-decode-lag-ms 0 --pipeline-nice 0) ;;
    lag-*) flags=(--pipeline-nice 0) ;;
    nice-*) flags=(--max-decode-lag-ms 0) ;;
    six-*)
      uptime > "$out/$tag.uptime"
      $bench run --streams sample-streams/vtest.mp4 sample-streams/bikes.mp4 --analysis-fps 2 \
        --cameras 6 --ground-truth none --out "$out/$tag" > "$out/$tag.log" 2>&1
      continue ;;
    *) echo "unknown tag $tag" >&2; exit 2 ;;
  esac
  uptime > "$out/$tag.uptime"
  $bench run --key-area --no-limits --start-spread-seconds 5 --scaling "${SCALING:-48,64,96}" \
    --scaling-step-seconds 60 "${flags[@]}" --out "$out/$tag" > "$out/$tag.log" 2>&1
done
