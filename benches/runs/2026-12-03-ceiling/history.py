#!/usr/bin/env python3
"""Every six-camera saturation run on record (2026-12-02 onwards), from each run's log line
`gridwatch: ...` and `limits: ...`: the pipeline against the bare model, against decoding + the
bare model, and the ceiling decoding leaves (model CPU / (decode + model) CPU per frame)."""
import glob, os, re
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
print("| run | pipeline analysed/s | bare model | pipeline / bare | ceiling | pipeline / (decode + model) | pipeline CPU per frame | decode + model CPU per frame | bare model cores busy |")
print("|---|---|---|---|---|---|---|---|---|")
for f in sorted(glob.glob(os.path.join(root, "2026-12-0[23]-*", "six*.log"))):
    t = open(f).read()
    g = re.search(r"gridwatch: 6 cameras, (\d+) frames analysed, ([\d.]+)/s.*CPU ([\d.]+) s", t)
    l = re.search(r"bare model ([\d.]+) fps.*decoding \+ bare model ([\d.]+) fps \(([\d.]+) \+ ([\d.]+) ms", t)
    if not (g and l):
        continue
    n, p, cpu = int(g[1]), float(g[2]), float(g[3])
    bare, cap, dms, mms = map(float, l.groups())
    run = os.path.relpath(f, root)[:-4]
    print(f"| {run} | {p:.2f} | {bare:.2f} | {p/bare*100:.1f} % | {mms/(dms+mms)*100:.1f} % | {p/cap*100:.1f} % "
          f"| {cpu*1000/n:.1f} ms | {dms:.1f} + {mms:.1f} ms | {bare*mms/1000:.2f} |")
