#!/usr/bin/env python3
"""Prints the side-by-side table of the runs under this folder (report.json of each)."""
import json, os, sys
here = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
for tag in sorted(d for d in os.listdir(here) if os.path.isfile(os.path.join(here, d, "report.json"))):
    r = json.load(open(os.path.join(here, tag, "report.json")))
    g, k = r["gridwatch"], r.get("key_area") or {}
    print(f"## {tag}: max lag {g.get('max_decode_lag_ms')} ms, nice {g.get('pipeline_nice')}, load {r['machine']['load_average_at_start']}")
    if k:
        print(f"  key area: gridwatch {k['gridwatch_cpu_seconds_per_camera_hour']:.0f} CPU-s/cam-h, peer {k['peer_cpu_seconds_per_camera_hour']:.0f}, ratio {k['cpu_ratio']:.3f}; units not decoded {g.get('units_not_decoded')}")
        for s, p in k["decision_latency_by_scenario"].items():
            print(f"  {s}: p50 {p['p50_ms']:.0f} p95 {p['p95_ms']:.0f} p99 {p['p99_ms']:.0f} ms")
        for a in g.get("accuracy", []) or []:
            print("  acc", a)
    l = r.get("limits")
    if l:
        print(f"  six cameras: {g['analysed_fps']:.2f} analysed/s, {g['analysed_per_cpu_second']:.2f} per CPU-s; bare model {l['model_fps']:.2f} ({l['model_efficiency']*100:.1f} %); "
              f"decode {l.get('decode_cpu_ms_per_frame', 0):.1f} ms + model {l.get('model_cpu_ms_per_frame', 0):.1f} ms CPU per frame -> {l.get('decode_and_model_fps', 0):.2f} ({l.get('decode_and_model_efficiency', 0)*100:.1f} %); "
              f"bare model runs {l.get('model_fps_runs')}, ceiling {l.get('decoding_ceiling', 0)*100:.1f} %; pipeline CPU per frame {g['cpu_seconds']*1000/max(g['frames_analysed'],1):.1f} ms")
    sc = r.get("scaling") or {}
    for st in sc.get("steps", []):
        sd = st.get("steady") or {}
        cap = (sd.get("capture_latency") or {}).get("p99_ms", float("nan"))
        print(f"  step {st['cameras']:>3} cams: analysed/s {st['analysed_fps']:.2f} (after warm-up {sd.get('analysed_fps', float('nan')):.2f}), CPU share {st['cpu_share_of_machine']:.2f}, "
              f"after warm-up stale {sd.get('stale_drops')} superseded {sd.get('superseded_drops')} shed {sd.get('shed_units')} late units {sd.get('late_units')} "
              f"hand-over p50/p99 {sd['latency']['p50_ms']:.0f}/{sd['latency']['p99_ms']:.0f} ms, capture p99 {cap:.0f} ms, "
              f"RSS {st['peak_rss_mib']:.0f} MiB, held share {sd.get('held_share', float('nan')):.2f}, sustained {st['sustained']}")
