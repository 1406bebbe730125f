#!/usr/bin/env bash
# The key area, starts spread over 5 s, with needed keyframes shed under overload (--shed;
# ded4ad7, which these runs used, shed by default and took --no-shed instead) and without, on
# one binary, in the order given; then the issue's six-camera saturation run with
# its limits (decode only, bare model, decoding + bare model). SCALING: the steps (32,36,48,64).
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=benches/runs/2026-12-03-shed
bench=./target/release/gridwatch-bench
for tag in "$@"; do
  case $tag in
    noshed-*) flags=() ;;
    six-*)
      uptime > "$out/$tag.uptime"
      $bench run --streams sample-streams/vtest.mp4 sample-streams/bikes.mp4 --analysis-fps 2 \
        --cameras 6 --ground-truth none --out "$out/$tag" > "$out/$tag.log" 2>&1
      continue ;;
    *) flags=(--shed) ;;
  esac
  uptime > "$out/$tag.uptime"
  $bench run --key-area --no-limits --start-spread-seconds 5 --scaling "${SCALING:-32,36,48,64}" \
    --scaling-step-seconds 60 "${flags[@]}" --out "$out/$tag" > "$out/$tag.log" 2>&1
done
