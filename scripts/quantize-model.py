#!/usr/bin/env python3
"""Faster variants of the default NanoDet model (issue 4), measured against the fp32 model.

Builds, in a work folder (default target/quantize/), variants of models/nanodet-g-416_coco.onnx:
  - static INT8 (onnxruntime.quantization.quantize_static), calibrated on real frames, in several
    configurations (QDQ / QOperator, per-channel or per-tensor, with or without the detection heads);
  - fp32 graph optimised offline (SessionOptions.optimized_model_filepath, ORT_ENABLE_EXTENDED);
  - fp16 (onnxruntime.transformers.float16, fp32 input/outputs kept) to check whether it helps on CPU;
and measures each one on held-out frames, in one run:
  (a) agreement with the fp32 model: per frame, detections (card pre-processing and GFL decoding from
      scripts/reference_detections.py, score >= 0.35, per-class NMS IoU 0.6) matched greedily to the fp32
      detections of the same class with IoU >= 0.5; precision/recall of the variant with fp32 as ground
      truth, for all classes and for persons alone; mean |score difference| and mean IoU of matched pairs;
  (b) latency: median per inference with 1 and 2 intra-op threads (ORT_ENABLE_ALL, as the Rust code),
      every variant and fp32 run in turn inside the same loop (order rotated each round), warm-up
      discarded; ratio = fp32 median / variant median.

Frames: decoded with GStreamer (as scripts/extract-test-frames: plain stretch to 416x416, RGB PNG)
from sample-streams/vtest.mp4 at 1 frame/s (80 frames, t = 0..79 s) and sample-streams/bikes.mp4 at
4 frames/s (40 frames). Frames from even seconds calibrate (60), frames from odd seconds evaluate (60).
--confirm re-measures already built variants on every frame of the odd seconds at the clips' native
rates (vtest 10/s, bikes 25/s: 520 frames), none of them seen in calibration.

Found on the way: tf2onnx put an explicit Pad with constant -inf before the MaxPool; quantised as is,
QDQ models find nothing (variant *-naive). It is folded into the MaxPool's pads first (exact rewrite).

usage: .venv/bin/python scripts/quantize-model.py [--work DIR] [--rounds N] [--json OUT]
           [--only V1,V2] [--confirm V1,V2] [--ship VARIANT]
  --ship VARIANT copies that variant to models/nanodet-g-416-coco-int8.onnx (the card,
  models/nanodet-g-416-coco-int8.toml, is written by hand from the numbers).
Runs behind BENCHMARKS.md (2026-11-28), shipped variant int8-qdq-perchannel-pct:
  .venv/bin/python scripts/quantize-model.py --rounds 60 --json benches/runs/2026-11-28-nanodet-int8.json
  .venv/bin/python scripts/quantize-model.py --rounds 100 \
      --confirm int8-qdq-perchannel-pct,int8-qdq-pertensor,int8-qdq-perchannel,int8-qop-perchannel \
      --json benches/runs/2026-11-28-nanodet-int8-confirm.json
  cp target/quantize/int8-qdq-perchannel-pct.onnx models/nanodet-g-416-coco-int8.onnx
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_detections as ref  # noqa: E402

ROOT = ref.ROOT
FP32 = os.path.join(ref.MODEL_DIR, ref.MODEL_FILE)
SHIP_NAME = "nanodet-g-416-coco-int8.onnx"
PERSON = 0
SCORE_T = 0.35
NMS_IOU = 0.6
MATCH_IOU = 0.5
LOW_T, HIGH_T = 0.30, 0.40  # boundary-tolerant check (diagnostic only, not the shipping criterion)

# (clip, frames per second sampled)
CLIPS = (("vtest.mp4", 1), ("bikes.mp4", 4))


def log(*a):
    print("[quantize]", *a, file=sys.stderr, flush=True)


def extract_frames(tmp, clips=CLIPS):
    """Returns a list of (clip, index, t_seconds, rgb uint8 [416,416,3])."""
    frames = []
    for clip, fps in clips:
        d = os.path.join(tmp, clip)
        os.makedirs(d, exist_ok=True)
        subprocess.run(
            ["gst-launch-1.0", "-q", "filesrc", f"location={os.path.join(ROOT, 'sample-streams', clip)}",
             "!", "qtdemux", "!", "h264parse", "!", "avdec_h264", "!", "videorate", "!",
             f"video/x-raw,framerate={fps}/1", "!", "videoconvert", "!", "videoscale", "add-borders=false",
             "!", "video/x-raw,format=RGB,width=416,height=416,pixel-aspect-ratio=1/1", "!", "pngenc",
             "!", "multifilesink", f"location={d}/%05d.png"],
            check=True, stdout=subprocess.DEVNULL)
        names = sorted(os.listdir(d))
        for i, n in enumerate(names):
            frames.append((clip, i, i / fps, ref.load_png(os.path.join(d, n))))
        log(f"{clip}: {len(names)} frames at {fps}/s")
    return frames


def split(frames):
    cal = [f for f in frames if int(f[2]) % 2 == 0]
    ev = [f for f in frames if int(f[2]) % 2 == 1]
    return cal, ev


class Reader(CalibrationDataReader):
    def __init__(self, frames):
        self.items = [ref.preprocess(f[3]) for f in frames]
        self.i = 0

    def get_next(self):
        if self.i >= len(self.items):
            return None
        x = self.items[self.i]
        self.i += 1
        return {ref.INPUT_NAME: x}

    def rewind(self):
        self.i = 0


def head_nodes(model_path):
    """Names of the nodes that form the detection heads: the last Conv of each stride (its output is
    split into class logits and box logits) and the Sigmoid on the class logits."""
    m = onnx.load(model_path)
    producers = {o: n for n in m.graph.node for o in n.output}
    names = []
    for n in m.graph.node:
        if n.op_type == "Split":
            p = producers.get(n.input[0])
            if p is not None and p.op_type == "Conv":
                names.append(p.name)
        if n.op_type == "Sigmoid":
            names.append(n.name)
    return names


def fold_inf_pad(src, dst):
    """tf2onnx put an explicit Pad with constant -inf before the MaxPool. Quantised, that tensor's range
    is infinite: with QDQ the scale becomes inf and the model finds nothing (variant *-naive); with
    QOperator the -inf is clamped to the zero point; histogram calibration (Percentile/Entropy) fails.
    MaxPool's own pads attribute pads with -inf, so Pad(-inf) + MaxPool == MaxPool(pads): exact rewrite."""
    m = onnx.load(src)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    folded = 0
    for n in list(m.graph.node):
        if n.op_type != "Pad" or len(n.input) < 3 or n.input[2] not in inits:
            continue
        if not np.all(np.isneginf(inits[n.input[2]])):
            continue
        users = [c for c in m.graph.node if n.output[0] in c.input]
        mode = [a.s for a in n.attribute if a.name == "mode"]
        pads = inits.get(n.input[1])
        if len(users) != 1 or users[0].op_type != "MaxPool" or mode not in ([], [b"constant"]) or pads is None:
            continue
        pads = [int(v) for v in pads]  # [n0, c0, h0, w0, n1, c1, h1, w1]
        if pads[0] or pads[1] or pads[4] or pads[5]:
            continue
        mp = users[0]
        old = [a for a in mp.attribute if a.name == "pads"]
        base = list(old[0].ints) if old else [0, 0, 0, 0]
        for a in old:
            mp.attribute.remove(a)
        mp.attribute.append(onnx.helper.make_attribute(
            "pads", [base[0] + pads[2], base[1] + pads[3], base[2] + pads[6], base[3] + pads[7]]))
        mp.input[0] = n.input[0]
        m.graph.node.remove(n)
        folded += 1
    onnx.checker.check_model(m)
    onnx.save(m, dst)
    return folded


def session(path, threads, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = level
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


def build_variants(work, cal_frames, only=None):
    pre = os.path.join(work, "fp32-pre.onnx")
    quant_pre_process(FP32, pre, skip_symbolic_shape=True)
    heads = head_nodes(pre)
    log("head nodes kept in fp32 for the *-fp32heads variants:", heads)
    folded = os.path.join(work, "fp32-pre-folded.onnx")
    n = fold_inf_pad(pre, folded)
    log(f"folded {n} Pad(-inf) into MaxPool pads")
    out = {}

    def q(name, fmt, per_channel, exclude=(), method=CalibrationMethod.MinMax, extra=None, naive=False):
        path = os.path.join(work, f"{name}.onnx")
        if only and name not in only:
            return
        t0 = time.time()
        quantize_static(
            pre if naive else folded, path, Reader(cal_frames), quant_format=fmt,
            per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude), calibrate_method=method, extra_options=extra or {})
        log(f"{name}: built in {time.time() - t0:.0f} s")
        out[name] = {
            "path": path, "kind": "int8", "format": "QDQ" if fmt == QuantFormat.QDQ else "QOperator",
            "per_channel": per_channel, "calibration": str(method).split(".")[-1],
            "calibration_options": extra or {}, "nodes_excluded": list(exclude),
            "pad_folded_into_maxpool": not naive,
            "activations": "uint8 (asymmetric)", "weights": "int8 (symmetric)",
        }

    m = onnx.load(folded)
    first_conv = [n.name for n in m.graph.node if n.op_type == "Conv" and ref.INPUT_NAME in n.input
                  or n.op_type == "Conv" and any(i.startswith(ref.INPUT_NAME) for i in n.input)][:1]
    pct = {"CalibPercentile": 99.999}
    q("int8-qdq-perchannel-naive", QuantFormat.QDQ, True, naive=True)
    q("int8-qdq-perchannel", QuantFormat.QDQ, True)
    q("int8-qdq-pertensor", QuantFormat.QDQ, False)
    q("int8-qop-perchannel", QuantFormat.QOperator, True)
    q("int8-qdq-perchannel-fp32ends", QuantFormat.QDQ, True, exclude=first_conv + heads)
    q("int8-qdq-perchannel-pct", QuantFormat.QDQ, True, method=CalibrationMethod.Percentile, extra=pct)
    q("int8-qdq-pertensor-pct", QuantFormat.QDQ, False, method=CalibrationMethod.Percentile, extra=pct)
    # CalibrationMethod.Entropy was tried too: with onnxruntime 1.32 it gave files byte-identical to the
    # MinMax ones (not investigated), so it is not repeated here.
    mavg = {"CalibMovingAverage": True}  # per-frame min/max averaged instead of the global extremes
    q("int8-qdq-perchannel-movavg", QuantFormat.QDQ, True, extra=mavg)
    q("int8-qdq-pertensor-movavg", QuantFormat.QDQ, False, extra=mavg)

    if only:
        return out
    out["fp32-pad-folded"] = {"path": folded, "kind": "fp32, Pad(-inf) folded into MaxPool (input of the int8 variants)"}

    # fp32, optimised offline (EXTENDED: no hardware-specific layout changes baked in).
    opt = os.path.join(work, "fp32-opt-extended.onnx")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = opt
    ort.InferenceSession(FP32, sess_options=so, providers=["CPUExecutionProvider"])
    out["fp32-opt-extended"] = {"path": opt, "kind": "fp32 graph-optimised offline (ORT_ENABLE_EXTENDED)"}

    # fp16 weights/activations, fp32 input and outputs.
    from onnxruntime.transformers.float16 import convert_float_to_float16
    m16 = convert_float_to_float16(onnx.load(FP32), keep_io_types=True)
    p16 = os.path.join(work, "fp16.onnx")
    onnx.save(m16, p16)
    out["fp16"] = {"path": p16, "kind": "fp16 (keep_io_types)"}
    for v in out.values():
        v["size_bytes"] = os.path.getsize(v["path"])
    return out


def dets_arrays(sess, rgb):
    """Detections at score >= LOW_T. Filtering them to >= SCORE_T afterwards gives exactly the
    detections at SCORE_T (greedy NMS: a box is only suppressed by a higher-scoring one)."""
    d = ref.detect(sess, rgb, LOW_T, NMS_IOU, LABELS)
    if not d:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64)
    return (np.array([[x["x1"], x["y1"], x["x2"], x["y2"]] for x in d]),
            np.array([x["score"] for x in d]), np.array([x["class_id"] for x in d]))


def match(gt, pr, only_class=None):
    """Greedy matching (variant detections by score descending) to unmatched fp32 detections of the
    same class with the highest IoU >= MATCH_IOU. Returns (tp, n_pred, n_gt, [|ds|], [iou])."""
    gb, gs, gc = gt
    pb, ps, pc = pr
    if only_class is not None:
        gk, pk = gc == only_class, pc == only_class
        gb, gs, gc, pb, ps, pc = gb[gk], gs[gk], gc[gk], pb[pk], ps[pk], pc[pk]
    used = np.zeros(len(gb), dtype=bool)
    tp, dsc, ious = 0, [], []
    for i in np.argsort(-ps, kind="stable"):
        cand = np.nonzero((gc == pc[i]) & ~used)[0]
        if cand.size == 0:
            continue
        io = ref.iou(pb[i], gb[cand])
        j = int(np.argmax(io))
        if io[j] >= MATCH_IOU:
            used[cand[j]] = True
            tp += 1
            dsc.append(abs(float(ps[i]) - float(gs[cand[j]])))
            ious.append(float(io[j]))
    return tp, len(pb), len(gb), dsc, ious


def above(d, t):
    k = d[1] >= t
    return d[0][k], d[1][k], d[2][k]


def agreement(variants, ev_frames):
    s32 = session(FP32, 1)
    gts_low = [dets_arrays(s32, f[3]) for f in ev_frames]
    gts = [above(g, SCORE_T) for g in gts_low]
    res = {"fp32_detections": int(sum(len(g[1]) for g in gts)),
           "fp32_person_detections": int(sum(int((g[2] == PERSON).sum()) for g in gts)),
           "variants": {}}
    x0 = ref.preprocess(ev_frames[0][3])
    names = list(ref.SCORE_OUTPUTS + ref.BOX_OUTPUTS)
    o32 = s32.run(names, {ref.INPUT_NAME: x0})
    for name, v in variants.items():
        s = session(v["path"], 1)
        r = {}
        preds_low = [dets_arrays(s, f[3]) for f in ev_frames]
        preds = [above(p, SCORE_T) for p in preds_low]
        for key, cls in (("all", None), ("person", PERSON)):
            tp = npred = ngt = 0
            dsc, ious = [], []
            for g, p in zip(gts, preds):
                a, b, c, d, e = match(g, p, cls)
                tp += a; npred += b; ngt += c; dsc += d; ious += e
            r[key] = {
                "tp": tp, "variant_detections": npred, "fp32_detections": ngt,
                "precision": tp / npred if npred else 1.0, "recall": tp / ngt if ngt else 1.0,
                "mean_abs_score_diff": float(np.mean(dsc)) if dsc else None,
                "max_abs_score_diff": float(np.max(dsc)) if dsc else None,
                "mean_iou_matched": float(np.mean(ious)) if ious else None,
            }
        per_class = {}
        for c in sorted({int(c) for g in gts for c in g[2]} | {int(c) for p in preds for c in p[2]}):
            m = [match(g, p, c) for g, p in zip(gts, preds)]
            per_class[LABELS[c]] = {"tp": sum(x[0] for x in m), "variant": sum(x[1] for x in m),
                                    "fp32": sum(x[2] for x in m)}
        r["per_class"] = per_class
        # Tolerant: recall of fp32 detections >= 0.40 among variant detections >= 0.30, precision of
        # variant detections >= 0.40 against fp32 detections >= 0.30 (disagreements only near 0.35
        # disappear here).
        for key, cls in (("all", None), ("person", PERSON)):
            rc = [match(above(g, HIGH_T), p, cls) for g, p in zip(gts_low, preds_low)]
            pc = [match(g, above(p, HIGH_T), cls) for g, p in zip(gts_low, preds_low)]
            r[key]["tolerant_recall_fp32_0.40_vs_variant_0.30"] = sum(x[0] for x in rc) / max(1, sum(x[2] for x in rc))
            r[key]["tolerant_precision_variant_0.40_vs_fp32_0.30"] = sum(x[0] for x in pc) / max(1, sum(x[1] for x in pc))
        ov = s.run(names, {ref.INPUT_NAME: x0})
        r["raw_output_max_abs_diff_first_frame"] = {
            n: float(np.max(np.abs(a.astype(np.float64) - b))) for n, a, b in zip(names, ov, o32)}
        res["variants"][name] = r
        log(f"{name}: all P={r['all']['precision']:.3f} R={r['all']['recall']:.3f}  "
            f"person P={r['person']['precision']:.3f} R={r['person']['recall']:.3f}  "
            f"|ds|={r['all']['mean_abs_score_diff'] or float('nan'):.4f}  tolerant person "
            f"P={r['person']['tolerant_precision_variant_0.40_vs_fp32_0.30']:.3f} "
            f"R={r['person']['tolerant_recall_fp32_0.40_vs_variant_0.30']:.3f}")
    return res



def latency(variants, ev_frames, threads, rounds, warmup=5):
    paths = {"fp32": FP32}
    paths.update({k: v["path"] for k, v in variants.items()})
    sess = {k: session(p, threads) for k, p in paths.items()}
    xs = [ref.preprocess(f[3]) for f in ev_frames]
    names = list(ref.SCORE_OUTPUTS + ref.BOX_OUTPUTS)
    keys = list(paths)
    times = {k: [] for k in keys}
    for r in range(warmup + rounds):
        x = xs[r % len(xs)]
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for k in order:
            t0 = time.perf_counter()
            sess[k].run(names, {ref.INPUT_NAME: x})
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[k].append(dt * 1000.0)
    med32 = float(np.median(times["fp32"]))
    out = {}
    for k in keys:
        t = np.array(times[k])
        out[k] = {"median_ms": float(np.median(t)), "p10_ms": float(np.percentile(t, 10)),
                  "p90_ms": float(np.percentile(t, 90)), "n": int(t.size),
                  "speedup_vs_fp32": med32 / float(np.median(t))}
        log(f"threads={threads} {k}: median {out[k]['median_ms']:.2f} ms  x{out[k]['speedup_vs_fp32']:.2f}")
    return out


LABELS = ref.load_labels()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "quantize"))
    ap.add_argument("--rounds", type=int, default=60, help="timed rounds per thread setting")
    ap.add_argument("--json", default=None, help="write the raw results here")
    ap.add_argument("--ship", default=None, help="copy this variant to models/" + SHIP_NAME)
    ap.add_argument("--confirm", default=None, metavar="V1,V2",
                    help="build nothing: re-measure these already built variants (WORK/V.onnx) on every "
                         "frame of the odd seconds at the clips' native rates (vtest 10/s, bikes 25/s)")
    ap.add_argument("--only", default=None, metavar="V1,V2", help="build and measure only these variants")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    clips = tuple((c, {"vtest.mp4": 10, "bikes.mp4": 25}[c]) for c, _ in CLIPS) if a.confirm else CLIPS
    with tempfile.TemporaryDirectory() as tmp:
        frames = extract_frames(tmp, clips)
    cal, ev = split(frames)
    if a.confirm:
        cal = []
        variants = {v: {"path": os.path.join(a.work, v + ".onnx")} for v in a.confirm.split(",")}
    else:
        variants = build_variants(a.work, cal, a.only.split(",") if a.only else None)
    log(f"calibration frames: {len(cal)}, evaluation frames: {len(ev)}")
    res = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "scripts/quantize-model.py"] + sys.argv[1:]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "loadavg_start": os.getloadavg()},
        "onnxruntime": ort.__version__, "onnx": onnx.__version__, "numpy": np.__version__,
        "fp32_model": os.path.relpath(FP32, ROOT),
        "frames": {"calibration": len(cal), "evaluation": len(ev),
                   "sampling_per_s": dict(clips),
                   "rule": "even seconds calibrate, odd seconds evaluate"
                           + (" (confirmation: every frame of the odd seconds; calibration from the main run)"
                              if a.confirm else ""),
                   "evaluation_by_clip": {c: sum(1 for f in ev if f[0] == c) for c, _ in clips}},
        "measure": {"score_threshold": SCORE_T, "nms_iou": NMS_IOU, "match_iou": MATCH_IOU,
                    "matching": "per frame, same class, greedy by variant score, fp32 = ground truth"},
        "variants": {k: {kk: (os.path.relpath(vv, ROOT) if kk == "path" else vv) for kk, vv in v.items()}
                     for k, v in variants.items()},
    }
    res["agreement"] = agreement(variants, ev)
    res["latency"] = {}
    for threads in (1, 2):
        res["latency"][f"threads_{threads}"] = latency(variants, ev, threads, a.rounds)
    res["machine"]["loadavg_end"] = os.getloadavg()
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=1)
            f.write("\n")
        log("results ->", a.json)
    if a.ship:
        dst = os.path.join(ref.MODEL_DIR, SHIP_NAME)
        shutil.copyfile(variants[a.ship]["path"], dst)
        log(f"shipped {a.ship} -> {os.path.relpath(dst, ROOT)}")


if __name__ == "__main__":
    main()
