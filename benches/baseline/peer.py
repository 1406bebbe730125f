#!/usr/bin/env python3
"""The program a user would write instead of gridwatch: a straightforward Python loop over the
recorded streams with OpenCV's VideoCapture (FFmpeg) and onnxruntime, the same NanoDet model and
the same pre/post-processing (imported from scripts/reference_detections.py, the independent numpy
decoder the Rust decoder is tested against). Run by `gridwatch-bench run --baseline`.

Per camera (clips one after another, as a simple script would): grab every frame, keep the first
frame at or after each analysis slot (n / fps seconds; the frame GStreamer's
`videorate drop-only=true` keeps, checked with gst-launch on bikes.mp4 at 4 fps: 0, 0.28, 0.52,
0.76, 1.0 s), convert it (retrieve), stretch it to 416x416
with cv2.resize (INTER_LINEAR), BGR -> RGB, detect. One onnxruntime session with --threads intra-op
threads (gridwatch's workers x intra-op threads).

usage: peer.py --clip PATH:FPS [--clip ...] [--threads N] [--score 0.35] [--nms 0.6] --out JSON
Writes: per analysed frame (camera, pts, latency, stage times, detections with boxes normalised to
0..1), totals, CPU seconds and peak RSS (getrusage of this process).
"""
import argparse
import json
import os
import resource
import sys
import time

import cv2
import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import reference_detections as ref  # noqa: E402


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", action="append", required=True, help="PATH:FPS, one per camera")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--score", type=float, default=0.35)
    ap.add_argument("--nms", type=float, default=0.6)
    ap.add_argument("--max-seconds", type=float, default=None, help="stop each clip at this media time")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)

    cpu_start = cpu_seconds()
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    session = ort.InferenceSession(
        os.path.join(ref.MODEL_DIR, ref.MODEL_FILE), sess_options=so, providers=["CPUExecutionProvider"]
    )
    labels, kinds = ref.load_labels(), ref.load_kinds()
    names = list(ref.SCORE_OUTPUTS + ref.BOX_OUTPUTS)

    frames = []
    decoded = 0
    stages = {"decode": 0.0, "convert_scale": 0.0, "preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
    cpu_loop_start = cpu_seconds()
    wall_start = time.perf_counter()
    for camera, spec in enumerate(a.clip):
        path, fps = spec.rsplit(":", 1)
        fps = float(fps)
        cap = cv2.VideoCapture(path)
        if not cap.isOpened():
            sys.exit(f"cannot open {path}")
        # POS_MSEC is a float: 1.0 s may come back as 0.99999.
        early = 1e-4
        slot = 0
        while True:
            t0 = time.perf_counter()
            if not cap.grab():
                break
            t1 = time.perf_counter()
            stages["decode"] += t1 - t0
            decoded += 1
            pts = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if a.max_seconds is not None and pts > a.max_seconds:
                break
            if pts + early < slot / fps:
                continue
            while (slot + 1) / fps <= pts + early:
                slot += 1
            slot += 1
            ok, bgr = cap.retrieve()
            if not ok:
                break
            rgb = cv2.cvtColor(cv2.resize(bgr, (ref.SIZE, ref.SIZE), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
            t2 = time.perf_counter()
            x = ref.preprocess(rgb)
            t3 = time.perf_counter()
            outs = dict(zip(names, session.run(names, {ref.INPUT_NAME: x})))
            t4 = time.perf_counter()
            boxes, scores, classes = ref.decode(outs, a.score)
            order = ref.nms(boxes, scores, classes, a.nms)
            dets = []
            for i in order:
                c = int(classes[i])
                x1, y1, x2, y2 = (float(v) / ref.SIZE for v in boxes[i])
                dets.append({"class_id": c, "label": labels[c], "score": float(scores[i]), "bbox": [x1, y1, x2, y2]})
            t5 = time.perf_counter()
            stages["convert_scale"] += t2 - t1
            stages["preprocess"] += t3 - t2
            stages["inference"] += t4 - t3
            stages["postprocess"] += t5 - t4
            frames.append({
                "camera": camera,
                "pts": pts,
                # From the decoded frame being available to the detections: what gridwatch
                # measures from its appsink to the scenario stage.
                "latency_seconds": t5 - t1,
                "detections": dets,
            })
        cap.release()
    wall = time.perf_counter() - wall_start
    cpu_end = cpu_seconds()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = {
        "opencv": cv2.__version__,
        "onnxruntime": ort.__version__,
        "threads": a.threads,
        "frames_decoded": decoded,
        "frames_analysed": len(frames),
        "wall_seconds": wall,
        "cpu_seconds": cpu_end - cpu_start,
        "cpu_seconds_loop": cpu_end - cpu_loop_start,
        "max_rss_kib": usage.ru_maxrss,
        "stage_seconds_total": stages,
        "frames": frames,
    }
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
