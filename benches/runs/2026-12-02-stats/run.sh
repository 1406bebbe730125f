#!/usr/bin/env bash
# The statistics over a million stored cases (BENCHMARKS.md, "Statistics over a million cases").
set -euo pipefail
db=${1:-/tmp/h1m/outbox.sqlite}
[ -f "$db" ] || target/release/gridwatch-bench history --cases 1000000 --days 365 --out "$db"
for args in "--period day" "--period week" "--from 2026-11-03 --to 2026-12-02" "--from 2026-09-04 --to 2026-12-02" "--from 2025-11-01 --to 2026-12-02"; do
  for format in json xlsx; do
    /usr/bin/time -f "$args $format: %e s wall, %M KB peak RSS" \
      target/release/gridwatch report --outbox "$db" $args --format $format --out /tmp/stats-report.$format
  done
done
