#!/usr/bin/env bash
# The second pair in the other order, then per-camera decode cost in each mode, then the issue's
# side-by-side (2 cameras, --baseline) and the same clips as 6 cameras, before and now.
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=benches/runs/2026-12-02-gop-tails
bench=./target/release/gridwatch-bench
before=(--decoder-threads 0 --decode-gop-tails)
for tag in now-2 before-2; do
  case $tag in before-*) flags=("${before[@]}") ;; *) flags=() ;; esac
  uptime > "$out/$tag.uptime"
  $bench run --key-area --no-limits --scaling 24,32,36,48 --scaling-step-seconds 60 \
    "${flags[@]}" --out "$out/$tag" > "$out/$tag.log" 2>&1
done
uptime > "$out/decode.uptime"
$bench decode --clip target/bench-clips/vtest-1080p.mp4 --analysis-fps 1 --repeats 3 \
  > "$out/decode-1080p-1fps.json" 2> "$out/decode-1080p-1fps.log"
for tag in side-now side-before; do
  case $tag in *-before) flags=("${before[@]}") ;; *) flags=() ;; esac
  uptime > "$out/$tag.uptime"
  $bench run --streams sample-streams/vtest.mp4 sample-streams/bikes.mp4 --analysis-fps 2 \
    --baseline --ground-truth none "${flags[@]}" --out "$out/$tag" > "$out/$tag.log" 2>&1
done
for tag in six-now six-before; do
  case $tag in *-before) flags=("${before[@]}") ;; *) flags=() ;; esac
  uptime > "$out/$tag.uptime"
  $bench run --streams sample-streams/vtest.mp4 sample-streams/bikes.mp4 --analysis-fps 2 \
    --cameras 6 --ground-truth none "${flags[@]}" --out "$out/$tag" > "$out/$tag.log" 2>&1
done
