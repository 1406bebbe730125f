#!/usr/bin/env bash
# Side by side on one binary: the key-area workload with decoding as before this change
# (decoder frame threads, every frame of each GOP) and as now (1 thread, GOP tails skipped),
# then the same again in the other order. Usage: run.sh OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=${1:-benches/runs/2026-12-02-gop-tails}
bench=./target/release/gridwatch-bench
for tag in before-1 now-1; do
  case $tag in
    before-*) flags=(--decoder-threads 0 --decode-gop-tails) ;;
    now-*) flags=() ;;
  esac
  uptime > "$out/$tag.uptime"
  $bench run --key-area --no-limits --scaling 24,32,36,48 --scaling-step-seconds 60 \
    "${flags[@]}" --out "$out/$tag" > "$out/$tag.log" 2>&1
done
