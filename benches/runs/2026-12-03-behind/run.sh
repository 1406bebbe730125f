#!/usr/bin/env bash
# The key area (starts spread over 5 s) at 48 and 96 cameras with gridwatch's defaults, as in
# ../2026-12-03-thin/run.sh, in the order given: now-N on ./target/release/gridwatch-bench
# (the pool also holds cameras while their decoders fall behind real time), before-N on the
# binary of the commit before it, copied aside to $BEFORE (see BINARY).
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=benches/runs/2026-12-03-behind
for tag in "$@"; do
  case $tag in
    now-*) bench=./target/release/gridwatch-bench ;;
    before-*) bench=${BEFORE:?set BEFORE to the older binary} ;;
    *) echo "unknown tag $tag" >&2; exit 2 ;;
  esac
  uptime > "$out/$tag.uptime"
  $bench run --key-area --no-limits --start-spread-seconds 5 --scaling 48,96 \
    --scaling-step-seconds 60 --out "$out/$tag" > "$out/$tag.log" 2>&1
done
