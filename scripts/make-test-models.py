#!/usr/bin/env python3
"""Generate tiny ONNX models that emit known YOLO-format tensors, their model cards, and an
independent numpy decoding of those tensors: the references the Rust YOLO decoders are tested
against (tests/it/decoders_yolo.rs).

For each format the model takes `images` float32 [1, 3, 64, 64] (NCHW, RGB, x / 255) and returns
a constant tensor C through `output = C + 0 * ReduceMean(images)` (the input stays connected, the
values are exactly C). The tensor holds low-score noise plus a few objects, each written as several
jittered candidates (NMS must keep one), two classes on the same box (per-class NMS keeps both), a
high-objectness/low-class row (below the threshold only after multiplication) and a box crossing
the border (clipped). Scores are kept away from the threshold (no borderline cases).

Formats (N candidates; C = 6 classes; boxes as centre + size):
  yolov5            [1, N, 5 + C]  cx, cy, w, h (input pixels), obj, classes; score = obj * class
                    N = 3 anchors * (8^2 + 4^2 + 2^2) = 252
  yolov8            [1, 4 + C, N]  cx, cy, w, h, classes (no objectness), N = 84
  yolox-raw         [1, N, 5 + C]  x, y offsets in the cell, log w, log h; cx = (x + col) * stride,
                    w = exp(w) * stride; strides 8, 16, 32, cells row-major per stride; N = 84
  yolox-decoded     [1, N, 5 + C]  like yolov5 (decode_in_inference export), N = 84

Reference decoding (numpy, float64): score = max class (x obj), keep score >= 0.25, boxes to
x1y1x2y2 clipped to [0, 64], greedy per-class NMS at IoU 0.45 (scripts/reference_detections.py),
sorted by score. Written to tests/data/models/<name>.reference.json with the label and the kind the
card's [kinds] table gives it.

usage: .venv/bin/python scripts/make-test-models.py   (needs the `onnx` package: scripts/setup)
"""
import hashlib
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_detections import nms  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "models")
SIZE = 64
STRIDES = (8, 16, 32)
THRESHOLD = 0.25
NMS_IOU = 0.45
# Label names a custom model might use; the cards map them to kinds.
LABELS = ["pedestrian", "sedan", "lorry", "e-bike", "fire", "smoke"]
KINDS = {
    "pedestrian": "person",
    "sedan": "car",
    "lorry": "truck",
    "e-bike": "motorcycle",
    "fire": "fire",
    "smoke": "smoke",
}
NC = len(LABELS)

# Objects: (class, cx, cy, w, h, class score, objectness) in input pixels.
OBJECTS = [
    (0, 12.0, 30.0, 8.0, 20.0, 0.92, 0.95),
    (0, 22.0, 31.0, 7.0, 18.0, 0.81, 0.90),
    (1, 44.0, 16.0, 22.0, 12.0, 0.88, 0.97),
    (3, 40.0, 48.0, 14.0, 10.0, 0.66, 0.85),
    (4, 58.0, 8.0, 16.0, 14.0, 0.74, 0.90),  # crosses the right and top border: clipped
    (5, 58.0, 8.0, 16.0, 14.0, 0.61, 0.90),  # same box, other class: kept by per-class NMS
]


def grid_cells():
    """(col, row, stride) per YOLOX row."""
    cells = []
    for s in STRIDES:
        n = SIZE // s
        for row in range(n):
            for col in range(n):
                cells.append((col, row, s))
    return cells


def noise_rows(rng, n):
    """Rows [n, 5 + NC] of low-score candidates in decoded form (cx, cy, w, h, obj, classes)."""
    rows = np.zeros((n, 5 + NC), dtype=np.float32)
    rows[:, 0:2] = rng.uniform(0, SIZE, (n, 2))
    rows[:, 2:4] = rng.uniform(2, 20, (n, 2))
    rows[:, 4] = rng.uniform(0.0, 0.5, n)
    rows[:, 5:] = rng.uniform(0.0, 0.2, (n, NC))  # class <= 0.2, obj * class <= 0.1
    return rows


def object_rows(rng):
    """Decoded rows for OBJECTS: 3 jittered candidates each (the first one exact), plus traps."""
    rows = []
    for cls, cx, cy, w, h, cs, obj in OBJECTS:
        for k in range(3):
            r = np.zeros(5 + NC, dtype=np.float32)
            r[5:] = rng.uniform(0.0, 0.1, NC)
            j = rng.uniform(-0.6, 0.6, 4) if k else np.zeros(4)
            r[0:4] = (cx + j[0], cy + j[1], w + j[2], h + j[3])
            r[4] = obj
            r[5 + cls] = cs - 0.05 * k
            rows.append(r)
    # High objectness, low class score: 0.95 * 0.2 = 0.19 < 0.25 for YOLOv5/YOLOX (YOLOv8 has no
    # objectness and sees 0.2: also below).
    trap = np.zeros(5 + NC, dtype=np.float32)
    trap[0:5] = (32.0, 56.0, 10.0, 6.0, 0.95)
    trap[5 + 2] = 0.2
    rows.append(trap)
    return np.stack(rows)


def place(rng, n, objects):
    """n noise rows with the object rows at random distinct positions."""
    rows = noise_rows(rng, n)
    at = rng.choice(n, size=len(objects), replace=False)
    rows[at] = objects
    return rows


def encode_yolox_raw(rows, cells):
    """Decoded rows -> raw YOLOX rows, each candidate moved to the cell of its stride that holds
    its centre (noise rows keep their own cell)."""
    raw = rows.copy()
    for i, (col, row, s) in enumerate(cells):
        cx, cy, w, h = rows[i, 0:4]
        raw[i, 0] = cx / s - col
        raw[i, 1] = cy / s - row
        raw[i, 2] = np.log(w / s)
        raw[i, 3] = np.log(h / s)
    return raw


def yolox_rows(rng, cells):
    """Rows whose decoded centre lies in the row's own cell (what a real YOLOX head emits)."""
    n = len(cells)
    rows = noise_rows(rng, n)
    for i, (col, row, s) in enumerate(cells):
        rows[i, 0:2] = ((col + rng.uniform(0, 1)) * s, (row + rng.uniform(0, 1)) * s)
    objs = object_rows(rng)
    used = set()
    for r in objs:
        # The stride-8 cell under the object's centre (then the next free one).
        col = min(int(r[0] // 8), SIZE // 8 - 1)
        row = min(int(r[1] // 8), SIZE // 8 - 1)
        i = row * (SIZE // 8) + col
        while i in used:
            i += 1
        used.add(i)
        rows[i] = r
    return rows


def reference(boxes_cxcywh, obj, cls_scores):
    """Independent decoding: returns detection dicts sorted by score."""
    cls_scores = cls_scores.astype(np.float64)
    c = cls_scores.argmax(axis=1)
    score = cls_scores.max(axis=1) * (obj.astype(np.float64) if obj is not None else 1.0)
    keep = np.nonzero(score >= THRESHOLD)[0]
    b = boxes_cxcywh[keep].astype(np.float64)
    xyxy = np.stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2,
                     b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], axis=1)
    xyxy = np.clip(xyxy, 0.0, float(SIZE))
    s, cl = score[keep], c[keep]
    for v in s:
        assert abs(v - THRESHOLD) > 0.02, f"borderline score {v}"
    dets = []
    for i in nms(xyxy, s, cl, NMS_IOU):
        k = int(cl[i])
        x1, y1, x2, y2 = (float(v) for v in xyxy[i])
        dets.append({
            "class_id": k, "label": LABELS[k], "kind": KINDS.get(LABELS[k], "other"),
            "score": round(float(s[i]), 6),
            "x1": round(x1, 3), "y1": round(y1, 3), "x2": round(x2, 3), "y2": round(y2, 3),
        })
    return dets


def yolox_grid_decode(raw):
    """Independent YOLOX grid decoding (as YOLOX's demo_postprocess does it)."""
    grids, expanded = [], []
    for s in STRIDES:
        n = SIZE // s
        xv, yv = np.meshgrid(np.arange(n), np.arange(n))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        expanded.append(np.full((n * n, 1), s))
    grids = np.concatenate(grids).astype(np.float64)
    expanded = np.concatenate(expanded).astype(np.float64)
    out = raw.astype(np.float64).copy()
    out[:, :2] = (out[:, :2] + grids) * expanded
    out[:, 2:4] = np.exp(out[:, 2:4]) * expanded
    return out


def make_model(tensor, output_name):
    const = numpy_helper.from_array(tensor.astype(np.float32), name="known")
    zero = numpy_helper.from_array(np.zeros((), dtype=np.float32), name="zero")
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["known", "nothing"], [output_name]),
    ]
    graph = helper.make_graph(
        nodes,
        "known_output",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, list(tensor.shape))],
        initializer=[const, zero],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="gridwatch-make-test-models"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def card_text(name, file, sha, decoder_lines, what):
    kinds = "\n".join(f'"{k}" = "{v}"' for k, v in KINDS.items())
    return f'''# Generated by scripts/make-test-models.py: do not edit.
id = "{name}"
file = "{file}"
sha256 = "{sha}"
labels = "test-labels.txt"
license = "Apache-2.0 (generated test fixture)"
provenance = """Generated by scripts/make-test-models.py: a constant {what} tensor
(output = known + 0 * ReduceMean(images)); reference decoding in {name}.reference.json."""

[input]
name = "images"
shape = [1, 3, {SIZE}, {SIZE}]
layout = "NCHW"
colour_order = "RGB"
resize = "stretch"
mean = [0.0, 0.0, 0.0]
std = [255.0, 255.0, 255.0]

[decoder]
{decoder_lines}

[kinds]
{kinds}
'''


def write(name, tensor, output_name, decoder_lines, what, dets):
    blob = make_model(tensor, output_name)
    file = f"{name}.onnx"
    with open(os.path.join(OUT, file), "wb") as f:
        f.write(blob)
    sha = hashlib.sha256(blob).hexdigest()
    with open(os.path.join(OUT, f"{name}.toml"), "w", encoding="utf-8") as f:
        f.write(card_text(name, file, sha, decoder_lines, what))
    doc = {
        "model": name,
        "frame": "black 64x64",
        "score_threshold": THRESHOLD,
        "nms_iou": NMS_IOU,
        "detections": dets,
    }
    with open(os.path.join(OUT, f"{name}.reference.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"{name}: {tensor.shape} {len(blob)} bytes, {len(dets)} reference detections "
          f"{[d['label'] for d in dets]}", file=sys.stderr)


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "test-labels.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(LABELS) + "\n")
    rng = np.random.default_rng(20261128)
    objs = object_rows(rng)

    # YOLOv5: decoded rows with objectness.
    n5 = 3 * sum((SIZE // s) ** 2 for s in STRIDES)
    v5 = place(rng, n5, objs)
    write("yolov5-test", v5[None], "output0", 'kind = "yolov5"\noutput = "output0"',
          "YOLOv5 [1, 252, 11]", reference(v5[:, 0:4], v5[:, 4], v5[:, 5:]))

    # YOLOv8: no objectness, features first.
    n8 = sum((SIZE // s) ** 2 for s in STRIDES)
    v8rows = place(rng, n8, objs)
    v8rows = np.concatenate([v8rows[:, 0:4], v8rows[:, 5:]], axis=1)  # [N, 4 + C]
    v8 = v8rows.T[None]  # [1, 4 + C, N]
    write("yolov8-test", v8, "output0", 'kind = "yolov8"\noutput = "output0"',
          "YOLOv8 [1, 10, 84]", reference(v8[0, 0:4].T, None, v8[0, 4:].T))

    # YOLOX, raw grid offsets (decoded in numpy the way YOLOX's demo does) and decoded in graph.
    cells = grid_cells()
    rows = yolox_rows(rng, cells)
    raw = encode_yolox_raw(rows, cells).astype(np.float32)
    dec = yolox_grid_decode(raw)
    write("yolox-raw-test", raw[None], "output",
          'kind = "yolox"\noutput = "output"\nstrides = [8, 16, 32]\ndecoded_in_graph = false',
          "YOLOX raw [1, 84, 11]", reference(dec[:, 0:4], dec[:, 4], dec[:, 5:]))
    rows_dec = place(rng, n8, objs)
    write("yolox-decoded-test", rows_dec[None], "output",
          'kind = "yolox"\noutput = "output"\nstrides = [8, 16, 32]\ndecoded_in_graph = true',
          "YOLOX decoded [1, 84, 11]", reference(rows_dec[:, 0:4], rows_dec[:, 4], rows_dec[:, 5:]))


if __name__ == "__main__":
    main()
