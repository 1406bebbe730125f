#!/usr/bin/env bash
# On one binary (see BINARY), in the order given:
# six-N: the issue's six-camera saturation run (vtest + bikes at 2 frames/s, fast pace) with
#   its limits, the bare model now measured before and after the decode-only run;
# thin-N / nothin-N: the key area (starts spread over 5 s) at 48 and 96 cameras, with
#   gridwatch's defaults / with --no-thinning, as in ../2026-12-03-thin/run.sh.
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=benches/runs/2026-12-03-ceiling
bench=./target/release/gridwatch-bench
for tag in "$@"; do
  uptime > "$out/$tag.uptime"
  case $tag in
    six-*) $bench run --streams sample-streams/vtest.mp4 sample-streams/bikes.mp4 \
             --analysis-fps 2 --cameras 6 --ground-truth none --out "$out/$tag" > "$out/$tag.log" 2>&1 ;;
    thin-*|nothin-*)
      flags=(); [[ $tag == nothin-* ]] && flags=(--no-thinning)
      $bench run --key-area --no-limits --start-spread-seconds 5 --scaling 48,96 \
        --scaling-step-seconds 60 "${flags[@]}" --out "$out/$tag" > "$out/$tag.log" 2>&1 ;;
    *) echo "unknown tag $tag" >&2; exit 2 ;;
  esac
done
