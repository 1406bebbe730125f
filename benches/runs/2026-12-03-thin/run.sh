#!/usr/bin/env bash
# The key area (starts spread over 5 s) at SCALING cameras (default 48,96), on one binary, in the
# order given: thin-N with gridwatch's defaults (cameras held to the interval the workers can
# serve under overload); nothin-N with --no-thinning (what gridwatch did until then).
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=benches/runs/2026-12-03-thin
bench=./target/release/gridwatch-bench
for tag in "$@"; do  # see BINARY for the build
  case $tag in
    thin-*) flags=() ;;
    nothin-*) flags=(--no-thinning) ;;
    *) echo "unknown tag $tag" >&2; exit 2 ;;
  esac
  uptime > "$out/$tag.uptime"
  $bench run --key-area --no-limits --start-spread-seconds 5 --scaling "${SCALING:-48,96}" \
    --scaling-step-seconds 60 "${flags[@]}" --out "$out/$tag" > "$out/$tag.log" 2>&1
done
