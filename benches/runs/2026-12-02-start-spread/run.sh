#!/usr/bin/env bash
# The key area with every replay started at once (in phase) and with the starts spread over 5 s
# (out of phase, as real cameras are), on one binary, alternating.
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=benches/runs/2026-12-02-start-spread
bench=./target/release/gridwatch-bench
for tag in "$@"; do
  case $tag in spread-*) flags=(--start-spread-seconds 5) ;; *) flags=() ;; esac
  uptime > "$out/$tag.uptime"
  $bench run --key-area --no-limits --scaling 24,32,36,48 --scaling-step-seconds 60 \
    "${flags[@]}" --out "$out/$tag" > "$out/$tag.log" 2>&1
done
