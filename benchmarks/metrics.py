"""Time the metrics and exports at DESIGN's default sizes (100k samples, 128^3 IoU) on this CPU.

python benchmarks/metrics.py [--frames 8] [--subdivisions 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import trimesh

from sculpt4d.export import write_animated_glb, write_obj_sequence, write_strip_video
from sculpt4d.metrics import chamfer_distance, evaluate_sequence, fscore, temporal_jitter, volume_iou


def timed(label: str, fn, *args, **kwargs):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    value = out if np.isscalar(out) else type(out).__name__
    print(f"{label:<44s} wall {dt:7.2f} s  cpu {dc:7.2f} s  -> {value}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--subdivisions", type=int, default=5)
    args = ap.parse_args()
    T = args.frames
    gts = [
        trimesh.creation.icosphere(args.subdivisions, radius=0.4).apply_translation([0.03 * t, 0, 0])
        for t in range(T)
    ]
    preds = [trimesh.creation.capsule(0.4, 0.35).apply_translation([0.025 * t, 0, 0]) for t in range(T)]
    print(f"{T} frames, gt {len(gts[0].faces)} faces, pred {len(preds[0].faces)} faces")
    timed("chamfer_distance (100k samples)", chamfer_distance, preds[0], gts[0])
    timed("fscore (100k samples)", fscore, preds[0], gts[0])
    timed("volume_iou (128^3)", volume_iou, preds[0], gts[0])
    timed(f"temporal_jitter ({T} frames, 100k)", temporal_jitter, preds, gts)
    res = timed(f"evaluate_sequence ({T} frames, 100k, 128^3)", evaluate_sequence, preds, gts)
    print({k: round(v, 4) for k, v in res.items() if k in ("chamfer", "iou", "fscore", "jitter")})
    with tempfile.TemporaryDirectory() as d:
        timed("write_obj_sequence", write_obj_sequence, gts, Path(d) / "objs")
        timed("write_animated_glb (visibility)", write_animated_glb, gts, Path(d) / "s.glb")
        timed("write_animated_glb (morph)", write_animated_glb, gts, Path(d) / "m.glb", mode="morph")
        imgs = [np.full((64, 64, 3), 200, np.uint8)] * T
        timed(
            "write_strip_video (256^2, GIF+MP4)",
            write_strip_video,
            imgs,
            gts,
            Path(d) / "a.gif",
            Path(d) / "a.mp4",
        )


if __name__ == "__main__":
    main()
