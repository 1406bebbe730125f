#!/usr/bin/env python3
"""Independent reference implementation of the NanoDet model card (numpy + onnxruntime).

Used to produce the expected detections that the Rust NanoDet decoder is tested against
(tests/data/reference/<frame-stem>.nanodet.json), and imported by scripts/crowd_ground_truth.py.

Pre-processing (models/nanodet-g-416-coco.toml): the PNG must already be 416x416 (frames in
tests/data/frames are stretched to 416x416 by GStreamer, so no resize happens here); RGB -> BGR,
(x - mean) / std per channel, NCHW float32.
Decoding (GFL): per stride s in 8, 16, 32, cells row-major over (416/s)^2; score = max over the 80
class scores (sigmoid already applied in the graph), only that class is kept; box side distances =
sum_k softmax(logits)_k * k * s for k in 0..10, sides (left, top, right, bottom); cell centre
((col+0.5)s, (row+0.5)s); box = centre -/+ distances, clipped to [0, 416]. Candidates with
score >= threshold, greedy per-class NMS (IoU > nms_iou suppressed), sorted by score descending.
Each detection also carries the object kind the card's [kinds] table gives its label ("other"
when the table does not name it).

usage: reference_detections.py [--threshold 0.35] [--nms 0.6] [--out-dir DIR] PNG...
       (default: the three frames in tests/data/frames -> tests/data/reference)
"""
import argparse
import json
import os
import sys
import tomllib

import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_DIR = os.path.join(ROOT, "models")
MODEL_FILE = "nanodet-g-416_coco.onnx"
MODEL_ID = "nanodet-g-416-coco"
INPUT_NAME = "input_1:0"
SIZE = 416
MEAN_BGR = np.array([103.53, 116.28, 123.675], dtype=np.float32)
STD_BGR = np.array([57.375, 57.12, 58.395], dtype=np.float32)
STRIDES = (8, 16, 32)
REG_MAX = 10
SCORE_OUTPUTS = ("Identity:0", "Identity_1:0", "Identity_2:0")
BOX_OUTPUTS = ("Identity_3:0", "Identity_4:0", "Identity_5:0")

DEFAULT_FRAMES = ("vtest-416-a.png", "vtest-416-b.png", "bikes-416.png")


def load_labels():
    with open(os.path.join(MODEL_DIR, "coco80_labels.txt"), encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def load_kinds():
    with open(os.path.join(MODEL_DIR, f"{MODEL_ID}.toml"), "rb") as f:
        return tomllib.load(f).get("kinds", {})


def make_session():
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(
        os.path.join(MODEL_DIR, MODEL_FILE), sess_options=so, providers=["CPUExecutionProvider"]
    )


def preprocess(rgb):
    """rgb: uint8 array [416, 416, 3] in RGB order -> float32 [1, 3, 416, 416] BGR normalised."""
    if rgb.shape != (SIZE, SIZE, 3):
        raise ValueError(f"expected a {SIZE}x{SIZE} RGB image, got {rgb.shape}")
    bgr = rgb[:, :, ::-1].astype(np.float32)
    x = (bgr - MEAN_BGR) / STD_BGR
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None, ...], dtype=np.float32)


def load_png(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)


def decode(outputs, score_threshold):
    """outputs: dict name -> array. Returns arrays (boxes [M,4] x1y1x2y2, scores [M], classes [M])."""
    all_boxes, all_scores, all_classes = [], [], []
    bins = np.arange(REG_MAX + 1, dtype=np.float64)
    for stride, so, bo in zip(STRIDES, SCORE_OUTPUTS, BOX_OUTPUTS):
        scores = outputs[so][0].astype(np.float64)  # [N, 80]
        dist = outputs[bo][0].astype(np.float64)  # [N, 44]
        n = scores.shape[0]
        fm = SIZE // stride
        assert n == fm * fm, (n, fm)
        cls = scores.argmax(axis=1)
        best = scores[np.arange(n), cls]
        keep = np.nonzero(best >= score_threshold)[0]
        if keep.size == 0:
            continue
        logits = dist[keep].reshape(-1, 4, REG_MAX + 1)
        logits = logits - logits.max(axis=2, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=2, keepdims=True)
        d = (p * bins).sum(axis=2) * stride  # [K, 4] left, top, right, bottom
        row = keep // fm
        col = keep % fm
        cx = (col + 0.5) * stride
        cy = (row + 0.5) * stride
        boxes = np.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], axis=1)
        boxes = np.clip(boxes, 0.0, float(SIZE))
        all_boxes.append(boxes)
        all_scores.append(best[keep])
        all_classes.append(cls[keep])
    if not all_boxes:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64)
    return np.concatenate(all_boxes), np.concatenate(all_scores), np.concatenate(all_classes)


def iou(a, b):
    """a: [4], b: [M,4]"""
    x1 = np.maximum(a[0], b[:, 0])
    y1 = np.maximum(a[1], b[:, 1])
    x2 = np.minimum(a[2], b[:, 2])
    y2 = np.minimum(a[3], b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = max(a[2] - a[0], 0) * max(a[3] - a[1], 0)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes, scores, classes, iou_threshold):
    """Greedy per-class NMS; returns indices sorted by score descending."""
    kept = []
    for c in np.unique(classes):
        idx = np.nonzero(classes == c)[0]
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        while idx.size:
            i = idx[0]
            kept.append(i)
            if idx.size == 1:
                break
            rest = idx[1:]
            idx = rest[iou(boxes[i], boxes[rest]) <= iou_threshold]
    kept = np.array(kept, dtype=np.int64)
    return kept[np.argsort(-scores[kept], kind="stable")] if kept.size else kept


def detect(session, rgb, score_threshold=0.35, nms_iou=0.6, labels=None, kinds=None):
    """Run the model on a 416x416 RGB uint8 image; returns a list of detection dicts."""
    x = preprocess(rgb)
    names = list(SCORE_OUTPUTS + BOX_OUTPUTS)
    outs = dict(zip(names, session.run(names, {INPUT_NAME: x})))
    boxes, scores, classes = decode(outs, score_threshold)
    order = nms(boxes, scores, classes, nms_iou)
    labels = labels or load_labels()
    kinds = load_kinds() if kinds is None else kinds
    dets = []
    for i in order:
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
    ap.add_argument("--threshold", type=float, default=0.35)
    ap.add_argument("--nms", type=float, default=0.6)
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "tests", "data", "reference"))
    ap.add_argument("frames", nargs="*")
    a = ap.parse_args(argv)
    frames = a.frames or [os.path.join(ROOT, "tests", "data", "frames", f) for f in DEFAULT_FRAMES]
    os.makedirs(a.out_dir, exist_ok=True)
    session = make_session()
    labels = load_labels()
    kinds = load_kinds()
    for path in frames:
        dets = detect(session, load_png(path), a.threshold, a.nms, labels, kinds)
        stem = os.path.splitext(os.path.basename(path))[0]
        rel = os.path.relpath(os.path.abspath(path), ROOT)
        doc = {
            "model": MODEL_ID,
            "frame": rel,
            "score_threshold": a.threshold,
            "nms_iou": a.nms,
            "detections": dets,
        }
        out = os.path.join(a.out_dir, f"{stem}.nanodet.json")
        with open(out, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        counts = {}
        for d in dets:
            counts[d["label"]] = counts.get(d["label"], 0) + 1
        print(f"{rel}: {len(dets)} detections {counts} -> {os.path.relpath(out, ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
