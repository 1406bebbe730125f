#!/usr/bin/env python3
"""Does batching frames help NanoDet-g on this CPU?

Measurement script (not part of the product). It

  1. makes an in-memory copy of the NanoDet-g ONNX model(s) with a dynamic batch dimension
     (graph input/outputs get dim_param "batch"; the tf2onnx Reshape shape constants that
     hard-code batch 1 are patched to 0 = "copy the input's dim 0"),
  2. verifies that running N different frames as one batch gives the same outputs as running each
     frame alone (max abs diff <= 1e-4), and that batch 1 of the copy equals the original model,
  3. times onnxruntime CPUExecutionProvider with intra_op 1 and 2 threads, inter_op 1, batch sizes
     1/2/4/8, interleaving all configurations in rounds so background load hits them alike,
  4. writes /tmp/batch-measure/result.json and prints a table.

Usage:  nice -n 5 .venv/bin/python scripts/batch-measure.py [--seconds 6] [--rounds 12] [--no-int8]
"""
import argparse
import datetime
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "fp32": ROOT / "models/nanodet-g-416_coco.onnx",
    "int8": ROOT / "models/nanodet-g-416-coco-int8.onnx",  # optional (--no-int8 to skip)
}
VIDEO = ROOT / "sample-streams/vtest.mp4"
OUT_DIR = Path("/tmp/batch-measure")
INPUT_NAME = "input_1:0"
# From models/nanodet-g-416-coco.toml [input]: NCHW, BGR, stretch resize to 416x416,
# (x - mean) / std per channel (BGR order).
SIZE = 416
MEAN = np.array([103.53, 116.28, 123.675], np.float32)
STD = np.array([57.375, 57.12, 58.395], np.float32)
BATCHES = [1, 2, 4, 8]
THREADS = [1, 2]
TOL = 1e-4
QUIET = 0.25  # a timing slice is "quiet" if other processes used < 0.25 cores during it


# ---------------------------------------------------------------------------------------------
# 1. Dynamic-batch copy of the model
# ---------------------------------------------------------------------------------------------
def make_dynamic_batch(path):
    """Return (serialized model bytes, list of patch notes)."""
    m = onnx.load(str(path))
    g = m.graph
    notes = []
    init_names = {i.name for i in g.initializer}
    # Graph input(s) (not initializers) and all outputs: dim 0 -> symbolic "batch".
    for vi in [i for i in g.input if i.name not in init_names] + list(g.output):
        d0 = vi.type.tensor_type.shape.dim[0]
        d0.ClearField("dim_value")
        d0.dim_param = "batch"
    # Stale intermediate shapes (the int8 model carries 99 value_info entries with batch 1):
    # drop them so onnxruntime re-infers.
    n_vi = len(g.value_info)
    del g.value_info[:]
    notes.append(f"cleared {n_vi} value_info entries")
    # Reshape nodes whose shape input is a constant with a leading 1 (tf2onnx writes [1, C, -1]):
    # set the batch entry to 0, which (allowzero=0, the default) copies the input's dim 0.
    inits = {i.name: i for i in g.initializer}
    consts = {n.output[0]: n for n in g.node if n.op_type == "Constant"}
    patched = set()
    for n in g.node:
        if n.op_type != "Reshape" or len(n.input) < 2:
            continue
        for a in n.attribute:
            if a.name == "allowzero" and a.i != 0:
                raise SystemExit(f"{n.name}: allowzero=1, cannot use 0 for the batch dim")
        s = n.input[1]
        if s in patched:
            continue
        if s in inits:
            arr = numpy_helper.to_array(inits[s]).copy()
            if arr.ndim == 1 and arr.size >= 2 and arr[0] == 1:
                arr[0] = 0
                inits[s].CopyFrom(numpy_helper.from_array(arr, s))
                patched.add(s)
                notes.append(f"Reshape shape {s}: [1,...] -> {arr.tolist()}")
        elif s in consts:
            t = consts[s].attribute[0].t
            arr = numpy_helper.to_array(t).copy()
            if arr.ndim == 1 and arr.size >= 2 and arr[0] == 1:
                arr[0] = 0
                t.CopyFrom(numpy_helper.from_array(arr, t.name))
                patched.add(s)
                notes.append(f"Reshape shape (Constant) {s}: [1,...] -> {arr.tolist()}")
        else:
            notes.append(f"WARNING: Reshape {n.name} has a computed shape input {s}; not patched")
    # Other batch-sensitive ops in this graph were inspected by hand: Pad pads are [0,0,1,1,0,0,1,1]
    # (batch untouched), Resize uses scales [1,1,s,s], Split/Concat on axis 1, Transpose perm
    # [0,2,1] -- all batch-agnostic.
    onnx.checker.check_model(m)
    m = onnx.shape_inference.infer_shapes(m)
    return m.SerializeToString(), notes


# ---------------------------------------------------------------------------------------------
# 2. Real frames
# ---------------------------------------------------------------------------------------------
def load_frames(n=8, step=10):
    """Frames 0, 10, 20, ... of vtest.mp4, pre-processed to [n, 3, 416, 416] float32."""
    cap = cv2.VideoCapture(str(VIDEO))
    out, idx = [], 0
    while len(out) < n:
        ok, bgr = cap.read()  # cv2 decodes to BGR, which is what the model wants
        if not ok:
            raise SystemExit(f"video ended after {idx} frames, got {len(out)}")
        if idx % step == 0:
            x = cv2.resize(bgr, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR).astype(np.float32)
            x = (x - MEAN) / STD
            out.append(np.ascontiguousarray(x.transpose(2, 0, 1)))  # HWC -> CHW
        idx += 1
    cap.release()
    return np.stack(out).astype(np.float32)


def session(model, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------------
# Verification: batch-N of the dynamic model == batch-1 of each frame (and == original model)
# ---------------------------------------------------------------------------------------------
def verify(name, dyn_bytes, orig_path, frames):
    s_dyn = session(dyn_bytes, 1)
    s_orig = session(str(orig_path), 1)
    singles = [s_dyn.run(None, {INPUT_NAME: frames[i:i + 1]}) for i in range(len(frames))]
    orig = [s_orig.run(None, {INPUT_NAME: frames[i:i + 1]}) for i in range(len(frames))]
    d_orig = max(float(np.abs(a - b).max()) for s, o in zip(singles, orig) for a, b in zip(s, o))
    d_batch = {}
    for bs in BATCHES[1:]:
        outs = s_dyn.run(None, {INPUT_NAME: frames[:bs]})
        assert all(o.shape[0] == bs for o in outs), [o.shape for o in outs]
        d_batch[bs] = max(float(np.abs(outs[k][i] - singles[i][k][0]).max())
                          for i in range(bs) for k in range(len(outs)))
    # sanity: frames differ, so a batch that repeated frame 0 would fail the check above
    d_frames = float(np.abs(singles[0][0] - singles[-1][0]).max())
    ok = d_orig <= TOL and all(v <= TOL for v in d_batch.values())
    print(f"[verify {name}] dyn batch1 vs original: max|diff| {d_orig:.3g}; "
          + ", ".join(f"batch{b} vs batch1: {v:.3g}" for b, v in d_batch.items())
          + f"; frame0 vs frame7 scores differ by up to {d_frames:.3g} -> {'OK' if ok else 'FAIL'}")
    return {"max_abs_diff_batch1_vs_original": d_orig,
            "max_abs_diff_batchN_vs_batch1": {str(k): v for k, v in d_batch.items()},
            "max_abs_diff_between_frames_0_and_7_scores": d_frames,
            "tolerance": TOL, "ok": ok}


# ---------------------------------------------------------------------------------------------
# 3. Timing
# ---------------------------------------------------------------------------------------------
def cpu_info():
    name, flags = "?", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name") and name == "?":
            name = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    return {"model_name": name, "logical_cpus": os.cpu_count(),
            "flags": {f: f in flags for f in ["avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni"]}}


def busy_cpu_s():
    """Machine-wide busy CPU seconds (all processes) from /proc/stat, and steal seconds."""
    f = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")  # user nice system idle iowait irq softirq steal ...
    return (f[0] + f[1] + f[2] + f[5] + f[6]) / hz, f[7] / hz


def run_slice(sess, x, seconds):
    """Run sess on x repeatedly for ~seconds; return per-run wall times and process CPU seconds."""
    times = []
    c0, t_end = time.process_time(), time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        sess.run(None, {INPUT_NAME: x})
        t1 = time.perf_counter()
        times.append(t1 - t0)
        if t1 >= t_end:
            break
    return times, time.process_time() - c0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=6.0, help="timed seconds per configuration")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--no-int8", action="store_true")
    args = ap.parse_args()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    frames = load_frames()
    print(f"frames: {frames.shape} from {VIDEO.name} (every 10th frame, 0..70)")

    result = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_info(), "python": platform.python_version(),
        "onnxruntime": ort.__version__, "onnx": onnx.__version__, "numpy": np.__version__,
        "settings": {"batches": BATCHES, "intra_op_threads": THREADS, "inter_op_threads": 1,
                     "seconds_per_config": args.seconds, "rounds": args.rounds,
                     "warmup_runs": 3, "nice": os.nice(0)},
        "models": {}, "loadavg_per_round": [], "results": [],
    }

    models = {}
    for name, path in MODELS.items():
        if name == "int8" and (args.no_int8 or not path.exists()):
            continue
        dyn, notes = make_dynamic_batch(path)
        print(f"[{name}] {path.name}: " + "; ".join(notes))
        v = verify(name, dyn, path, frames)
        result["models"][name] = {"file": str(path), "patches": notes, "verify": v}
        if not v["ok"]:
            print(f"[{name}] dynamic-batch model NOT equal to batch 1 -- not timing it")
            continue
        models[name] = dyn

    # One session per (model, threads), shared by all batch sizes; warm each shape 3 times.
    configs = []
    for name, dyn in models.items():
        for th in THREADS:
            s = session(dyn, th)
            for bs in BATCHES:
                for _ in range(3):
                    s.run(None, {INPUT_NAME: frames[:bs]})
                configs.append({"model": name, "threads": th, "batch": bs, "sess": s,
                                "times": [], "cpu": 0.0, "round_medians_ms": [],
                                "other_cores": [], "steal_cores": [], "slices": []})

    # Interleaved rounds: every configuration gets seconds/rounds per round, in a fresh shuffled
    # (seeded) order each round, so bursts of background load do not favour any configuration.
    rng = random.Random(1)
    per_slice = args.seconds / args.rounds
    for r in range(args.rounds):
        result["loadavg_per_round"].append(os.getloadavg())
        order = configs[:]
        rng.shuffle(order)
        for c in order:
            b0, st0, w0 = *busy_cpu_s(), time.perf_counter()
            t, cpu = run_slice(c["sess"], frames[:c["batch"]], per_slice)
            b1, st1, w1 = *busy_cpu_s(), time.perf_counter()
            # CPU used by OTHER processes during this slice, in cores (noise indicator)
            c["other_cores"].append(max(0.0, (b1 - b0) - cpu) / (w1 - w0))
            c["steal_cores"].append((st1 - st0) / (w1 - w0))
            c["times"] += t
            c["cpu"] += cpu
            c["round_medians_ms"].append(1e3 * statistics.median(t))
            c["slices"].append(t)
        print(f"round {r + 1}/{args.rounds} done, loadavg {os.getloadavg()}")
    result["loadavg_end"] = os.getloadavg()

    # Summaries
    base = {}
    for c in configs:
        n = len(c["times"])
        ms_batch = 1e3 * statistics.median(c["times"])
        ms_frame = ms_batch / c["batch"]
        # "quiet" = slices during which other processes used < QUIET cores on average
        quiet = [x for t, o in zip(c["slices"], c["other_cores"]) if o < QUIET for x in t]
        q_ms_frame = 1e3 * statistics.median(quiet) / c["batch"] if quiet else None
        row = {"model": c["model"], "threads": c["threads"], "batch": c["batch"], "runs": n,
               "median_ms_per_batch": ms_batch, "ms_per_frame": ms_frame,
               "frames_per_s": 1e3 / ms_frame,
               "cpu_s_per_frame": c["cpu"] / (n * c["batch"]),
               "p10_ms_per_batch": 1e3 * float(np.percentile(c["times"], 10)),
               "p90_ms_per_batch": 1e3 * float(np.percentile(c["times"], 90)),
               "round_medians_ms_per_batch": c["round_medians_ms"],
               "other_processes_cores_per_round": c["other_cores"],
               "steal_cores_per_round": c["steal_cores"],
               "quiet_runs": len(quiet), "quiet_ms_per_frame": q_ms_frame}
        key = (c["model"], c["threads"])
        if c["batch"] == 1:
            base[key] = (ms_frame, q_ms_frame)
        row["ms_per_frame_ratio_to_batch1"] = ms_frame / base[key][0]
        row["quiet_ratio_to_batch1"] = (q_ms_frame / base[key][1]
                                        if q_ms_frame and base[key][1] else None)
        result["results"].append(row)
    result["total_wall_s"] = time.time() - t_start

    (OUT_DIR / "result.json").write_text(json.dumps(result, indent=2))

    cpu = result["cpu"]
    print(f"\nCPU: {cpu['model_name']} x{cpu['logical_cpus']}  flags: "
          + " ".join(f"{k}={'y' if v else 'n'}" for k, v in cpu["flags"].items())
          + f"  onnxruntime {ort.__version__}  {result['date']}")
    hdr = (f"{'model':5} {'thr':>3} {'batch':>5} {'runs':>5} {'ms/batch':>9} {'ms/frame':>9} "
           f"{'fps':>7} {'CPUs/frame':>10} {'ratio':>6}  {'p10-p90 ms/batch':>17}  "
           f"{'quiet: runs':>11} {'ms/frame':>8} {'ratio':>6}  other procs' cores per slice")
    print(hdr)
    print("-" * len(hdr))
    for r in result["results"]:
        print(f"{r['model']:5} {r['threads']:>3} {r['batch']:>5} {r['runs']:>5} "
              f"{r['median_ms_per_batch']:>9.1f} {r['ms_per_frame']:>9.2f} {r['frames_per_s']:>7.1f} "
              f"{r['cpu_s_per_frame']:>10.4f} {r['ms_per_frame_ratio_to_batch1']:>6.3f}  "
              f"{r['p10_ms_per_batch']:>8.1f}-{r['p90_ms_per_batch']:<8.1f}  "
              f"{r['quiet_runs']:>11} "
              + (f"{r['quiet_ms_per_frame']:>8.2f} " if r['quiet_ms_per_frame'] else f"{'-':>8} ")
              + (f"{r['quiet_ratio_to_batch1']:>6.3f}  " if r['quiet_ratio_to_batch1'] else f"{'-':>6}  ")
              + " ".join(f"{o:.1f}" for o in r["other_processes_cores_per_round"]))
    print(f"loadavg per round: {result['loadavg_per_round']}, end {result['loadavg_end']}; "
          f"total {result['total_wall_s']:.0f} s; wrote {OUT_DIR / 'result.json'}")


if __name__ == "__main__":
    main()
