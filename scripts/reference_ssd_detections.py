#!/usr/bin/env python3
"""Independent reference implementation of the MediaPipe SSD model card (numpy + onnxruntime).

Produces the expected detections the Rust `mediapipe_ssd` decoder is tested against
(tests/data/reference/<frame-stem>.ssd.json), written from models/PROVENANCE.md, not from the Rust
code:

Pre-processing (models/ssd-mobilenetv2-oidv4-300.toml): the PNG must already be 300x300 (frames in
tests/data/frames are stretched by GStreamer); RGB, x / 127.5 - 1, NHWC float32.
Anchors (MediaPipe SsdAnchorsCalculator): 6 layers, scale_i = 0.2 + 0.75 i / 5, strides 16..512,
feature map ceil(300 / stride); layer 0 has 3 anchors (ratio 1 scale 0.1, ratio 2 and 0.5 at
scale_0); later layers 5 ratios (1, 2, 0.5, 3, 1/3) at scale_i plus ratio 1 at
sqrt(scale_i * scale_i+1) (scale_6 = 1); w = scale sqrt(ratio), h = scale / sqrt(ratio); centres
((x + 0.5) / fm, (y + 0.5) / fm), cells row-major, anchors of a cell consecutive. 1917 in all.
Decoding: cy = ty/10 ah + acy, cx = tx/10 aw + acx, h = exp(th/5) ah, w = exp(tw/5) aw; score =
sigmoid of the best non-background logit (class 0 = background skipped); box clipped to [0, 1] and
given in pixels of the 300x300 input. Candidates with score >= threshold, greedy per-class NMS.
Each detection also carries the object kind the card's [kinds] table gives its label.

usage: reference_ssd_detections.py [--threshold 0.3] [--nms 0.5] [--out-dir DIR] PNG...
       (default: tests/data/frames/{vtest-300-a,bikes-300}.png -> tests/data/reference)
"""
import argparse
import json
import math
import os
import sys
import tomllib

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_detections import load_png, nms  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_DIR = os.path.join(ROOT, "models")
CARD = os.path.join(MODEL_DIR, "ssd-mobilenetv2-oidv4-300.toml")
MODEL_FILE = "ssd_mobilenetv2_oidv4_300.onnx"
MODEL_ID = "ssd-mobilenetv2-oidv4-300"
INPUT_NAME = "normalized_input_image_tensor"
BOXES = "raw_outputs/box_encodings"
SCORES = "raw_outputs/class_predictions"
SIZE = 300
STRIDES = (16, 32, 64, 128, 256, 512)
MIN_SCALE, MAX_SCALE = 0.2, 0.95
RATIOS = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)
DEFAULT_FRAMES = ("vtest-300-a.png", "bikes-300.png")


def scales():
    n = len(STRIDES)
    return [MIN_SCALE + (MAX_SCALE - MIN_SCALE) * i / (n - 1) for i in range(n)] + [1.0]


def anchors():
    """[1917, 4] as (cy, cx, h, w)."""
    s = scales()
    out = []
    for i, stride in enumerate(STRIDES):
        if i == 0:
            shapes = [(1.0, 0.1), (2.0, s[0]), (0.5, s[0])]
        else:
            shapes = [(r, s[i]) for r in RATIOS] + [(1.0, math.sqrt(s[i] * s[i + 1]))]
        wh = np.array([(sc * math.sqrt(r), sc / math.sqrt(r)) for r, sc in shapes])  # [A, 2] w, h
        fm = math.ceil(SIZE / stride)
        ys, xs = np.meshgrid(np.arange(fm), np.arange(fm), indexing="ij")
        centres = np.stack([(ys.ravel() + 0.5) / fm, (xs.ravel() + 0.5) / fm], axis=1)  # [C, 2]
        a = np.zeros((centres.shape[0], len(shapes), 4))
        a[:, :, 0:2] = centres[:, None, :]
        a[:, :, 2] = wh[None, :, 1]
        a[:, :, 3] = wh[None, :, 0]
        out.append(a.reshape(-1, 4))
    return np.concatenate(out)


def load_labels():
    with open(os.path.join(MODEL_DIR, "oidv4_labels.txt"), encoding="utf-8") as f:
        return [line.strip() for line in f.read().splitlines()]


def load_kinds():
    with open(CARD, "rb") as f:
        return tomllib.load(f).get("kinds", {})


def make_session():
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(
        os.path.join(MODEL_DIR, MODEL_FILE), sess_options=so, providers=["CPUExecutionProvider"]
    )


def preprocess(rgb):
    if rgb.shape != (SIZE, SIZE, 3):
        raise ValueError(f"expected a {SIZE}x{SIZE} RGB image, got {rgb.shape}")
    return (rgb.astype(np.float32) / 127.5 - 1.0)[None, ...].astype(np.float32)


def decode(enc, logits, anc, threshold):
    enc = enc.astype(np.float64)
    logits = logits.astype(np.float64)
    probs = 1.0 / (1.0 + np.exp(-logits[:, 1:]))
    cls = probs.argmax(axis=1) + 1
    best = probs.max(axis=1)
    keep = np.nonzero(best >= threshold)[0]
    e, a = enc[keep], anc[keep]
    cy = e[:, 0] / 10.0 * a[:, 2] + a[:, 0]
    cx = e[:, 1] / 10.0 * a[:, 3] + a[:, 1]
    h = np.exp(e[:, 2] / 5.0) * a[:, 2]
    w = np.exp(e[:, 3] / 5.0) * a[:, 3]
    boxes = np.clip(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1), 0.0, 1.0)
    return boxes * SIZE, best[keep], cls[keep]


def detect(session, rgb, threshold, nms_iou, labels, kinds, anc):
    enc, logits = session.run([BOXES, SCORES], {INPUT_NAME: preprocess(rgb)})
    assert anc.shape[0] == enc.shape[1] == 1917, (anc.shape, enc.shape)
    boxes, scores, classes = decode(enc[0], logits[0], anc, threshold)
    dets = []
    for i in nms(boxes, scores, classes, nms_iou):
        c = int(classes[i])
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        dets.append({
            "class_id": c,
            "label": labels[c],
            "kind": kinds.get(labels[c], "other"),
            "score": round(float(scores[i]), 6),
            "x1": round(x1, 3), "y1": round(y1, 3), "x2": round(x2, 3), "y2": round(y2, 3),
        })
    return dets


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threshold", type=float, default=0.3)
    ap.add_argument("--nms", type=float, default=0.5)
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "tests", "data", "reference"))
    ap.add_argument("frames", nargs="*")
    a = ap.parse_args(argv)
    frames = a.frames or [os.path.join(ROOT, "tests", "data", "frames", f) for f in DEFAULT_FRAMES]
    os.makedirs(a.out_dir, exist_ok=True)
    session, labels, kinds, anc = make_session(), load_labels(), load_kinds(), anchors()
    for path in frames:
        dets = detect(session, load_png(path), a.threshold, a.nms, labels, kinds, anc)
        stem = os.path.splitext(os.path.basename(path))[0]
        rel = os.path.relpath(os.path.abspath(path), ROOT)
        doc = {
            "model": MODEL_ID,
            "frame": rel,
            "score_threshold": a.threshold,
            "nms_iou": a.nms,
            "detections": dets,
        }
        out = os.path.join(a.out_dir, f"{stem}.ssd.json")
        with open(out, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        counts = {}
        for d in dets:
            counts[d["label"]] = counts.get(d["label"], 0) + 1
        print(f"{rel}: {len(dets)} detections {counts} -> {os.path.relpath(out, ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
