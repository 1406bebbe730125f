#!/usr/bin/env python3
"""Generate tests/data/clips/synthetic-fire.mp4: a synthetic straw-burning scene for the classical
fire/smoke baseline (src/scenarios/fire.rs). No real footage of straw burning with a usable
license was available, so this clip proves the path, not accuracy on real scenes.

Scene (640x360, 10 fps, 24 s, H.264 via GStreamer's x264enc, seeded: the output is reproducible):
- a static field (straw-coloured texture, darker than flame colours), sky and a road;
- from 4 s: flickering flames at x 170-230, y 190-250 (random flame-coloured ellipses, new
  shapes every frame), and a turbulent grey smoke plume above them (random soft puffs in a
  cone, x 100-300, y 30-170, new every frame) that grows until about 14 s;
- distractors that must NOT raise a case: a static orange sign (x 520-560, y 200-230) and a
  red car driving along the road (y 290-325) back and forth at 8 px per frame.

usage: .venv/bin/python scripts/make-fire-clip.py   (needs numpy and gst-launch-1.0)
"""
import os
import subprocess

import numpy as np

W, H, FPS, SECONDS = 640, 360, 10, 24
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "clips", "synthetic-fire.mp4")

rng = np.random.default_rng(20261128)
yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)

background = np.zeros((H, W, 3), np.float32)
background[:] = (118, 102, 54)  # straw field, below the flame brightness
background += rng.normal(0, 8, (H, W, 1)).astype(np.float32) * np.array([1.0, 0.9, 0.5])
background[: int(H * 0.25)] = (150, 178, 205)  # sky
background[285:330] = (88, 88, 92)  # road
background[200:230, 520:560] = (235, 125, 25)  # static orange sign
background = np.clip(background, 0, 255)


def flames(img, t):
    """Random flame-coloured ellipses around the base, new shapes each frame."""
    for _ in range(14):
        cx = 200 + rng.normal(0, 12)
        cy = 235 + rng.normal(0, 6)
        rx = rng.uniform(6, 16)
        ry = rng.uniform(15, 40)
        cy -= ry * 0.6
        mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
        heat = rng.uniform(0, 1)
        colour = np.array([255, 90 + 140 * heat, 10 + 110 * heat ** 2], np.float32)
        img[mask] = colour


def smoke(img, t):
    """A turbulent plume: soft grey puffs at random places inside a cone above the fire (new
    puffs every frame, as smoke churns); the cone grows until about 14 s."""
    grow = min(1.0, max(0.0, (t - 4.0) / 10.0))
    top = 170 - 140 * grow
    for _ in range(28):
        u = rng.uniform(0, 1)  # 0 at the fire, 1 at the top of the plume
        cy = 175 - u * (175 - top)
        cx = 200 + 20 * np.sin(t * 1.3) * u + rng.normal(0, 8 + 35 * u * (0.4 + 0.6 * grow))
        r = rng.uniform(8, 14 + 26 * u)
        a = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))) * 0.4
        a = a[..., None]
        img[:] = img * (1 - a) + np.array([196, 196, 200], np.float32) * a


def car(img, frame):
    span = W - 100
    pos = (frame * 8) % (2 * span)
    x = pos if pos < span else 2 * span - pos
    img[292:325, int(x) + 10 : int(x) + 90] = (212, 58, 30)
    img[292:300, int(x) + 30 : int(x) + 70] = (60, 70, 90)  # windows


def main():
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    gst = subprocess.Popen(
        [
            "gst-launch-1.0", "-q", "fdsrc", "fd=0", "!",
            "rawvideoparse", f"width={W}", f"height={H}", "format=rgb", f"framerate={FPS}/1", "!",
            "videoconvert", "!", "video/x-raw,format=I420", "!",
            "x264enc", "speed-preset=medium", "bitrate=400", "key-int-max=20", "!",
            "h264parse", "!", "mp4mux", "!", "filesink", f"location={OUT}",
        ],
        stdin=subprocess.PIPE,
    )
    for frame in range(FPS * SECONDS):
        t = frame / FPS
        img = background.copy()
        if t >= 4.0:
            smoke(img, t)
            flames(img, t)
        car(img, frame)
        gst.stdin.write(np.clip(img, 0, 255).astype(np.uint8).tobytes())
    gst.stdin.close()
    if gst.wait() != 0:
        raise SystemExit("gst-launch failed")
    print(OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
