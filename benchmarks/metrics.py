"""Metrics at DESIGN's sizes (100k samples, 128³ IoU) on this CPU, fast paths side by side with the reference.

    python benchmarks/metrics.py [--frames 8] [--subdivisions 5] [--resolutions 64 128] [--json PATH]

Rows:
- ``occupancy``: the R³ inside/outside grid of one watertight mesh by scanline winding numbers (the
  evaluation's path) vs ``igl.fast_winding_number`` at every cell centre (the fallback for open meshes),
  with the number of cells where they disagree (0 = identical grids).
- ``nearest neighbours``: the Chamfer / F-score queries, 100k samples each way, as the evaluation runs them
  (``pykdtree`` on Z-ordered samples) vs scipy's ``cKDTree`` on the sampler's order (the previous path), with
  the largest difference of any distance (0 up to float rounding).
- ``evaluate 3 methods``: one sequence scored against three predictions, as ``python -m sculpt4d.evaluate``
  does: ground truth sampled once (``prepare_ground_truth`` + ``score_sequence``) vs re-sampled per method
  (``evaluate_sequence``); the scores are identical.
- single metrics and exports: seconds only.
Meshes: icosphere ground truth moving along x, capsule predictions (both watertight).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import trimesh
from _common import add_json_arg, print_table, write_json
from scipy.spatial import cKDTree

from sculpt4d.export import write_animated_glb, write_obj_sequence, write_strip_video
from sculpt4d.metrics import (
    chamfer_distance,
    default_bounds,
    evaluate_sequence,
    grid_points,
    occupancy,
    prepare_ground_truth,
    scanline_occupancy,
    score_sequence,
    temporal_jitter,
    volume_iou,
)
from sculpt4d.metrics.distance import _nn_dist, sample_surface


def timed(fn, *args, **kwargs) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def nn_both_ways(a, b) -> tuple[np.ndarray, np.ndarray]:
    """The evaluation's nearest-neighbour distances a -> b and b -> a (trees built with the samples)."""
    return _nn_dist(a, b, -1), _nn_dist(b, a, -1)


def nn_both_ways_ckdtree(
    a: np.ndarray, b: np.ndarray, ta: cKDTree, tb: cKDTree
) -> tuple[np.ndarray, np.ndarray]:
    """The previous path: scipy cKDTree (leafsize 64, unbalanced) trees of the unsorted samples, queried."""
    return tb.query(a, k=1, workers=-1)[0], ta.query(b, k=1, workers=-1)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--subdivisions", type=int, default=5)
    ap.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
    add_json_arg(ap)
    args = ap.parse_args()
    T = args.frames
    gts = [
        trimesh.creation.icosphere(args.subdivisions, radius=0.4).apply_translation([0.03 * t, 0, 0])
        for t in range(T)
    ]
    preds = [
        [
            trimesh.creation.capsule(0.4, 0.35 + 0.01 * k).apply_translation([0.025 * t, 0, 0])
            for t in range(T)
        ]
        for k in range(3)
    ]
    print(f"{T} frames, gt {len(gts[0].faces)} faces, pred {len(preds[0][0].faces)} faces\n")

    occ_rows = []
    for R in args.resolutions:
        for name, mesh in (("icosphere", gts[0]), ("capsule", preds[0][0])):
            bounds = default_bounds(mesh)
            fast, t_fast = timed(scanline_occupancy, mesh, bounds, R)
            ref, t_ref = timed(occupancy, mesh, grid_points(bounds, R))
            occ_rows.append(dict(mesh=name, faces=len(mesh.faces), R=R, scanline_s=round(t_fast, 4),
                                 winding_s=round(t_ref, 3), speedup=round(t_ref / t_fast, 1),
                                 cells_differing=int((fast != ref).sum()), inside=int(ref.sum())))  # fmt: skip
    print_table(
        occ_rows, "occupancy grid of one mesh: scanline (evaluation) vs igl winding numbers (fallback)"
    )

    nn_rows = []
    for label, a_mesh, b_mesh in (("capsule vs icosphere, frame 0", preds[0][0], gts[0]),
                                  ("icosphere frame 0 vs last", gts[0], gts[-1])):  # fmt: skip
        a, b = sample_surface(a_mesh, 100_000, 0), sample_surface(b_mesh, 100_000, 0)
        raw_a, raw_b = (
            np.asarray(trimesh.sample.sample_surface(m, 100_000, seed=0)[0]) for m in (a_mesh, b_mesh)
        )
        (fa, fb), t_fast = timed(nn_both_ways, a, b)
        trees = [
            cKDTree(x, leafsize=64, balanced_tree=False) for x in (raw_a, raw_b)
        ]  # built untimed, as above
        (ra, rb), t_ref = timed(nn_both_ways_ckdtree, raw_a, raw_b, *trees)
        # the same point sets in another order: compare the sorted distances
        diff = max(float(np.abs(np.sort(f) - np.sort(r)).max()) for f, r in ((fa, ra), (fb, rb)))
        nn_rows.append(dict(pair=label, pykdtree_zorder_s=round(t_fast, 3), ckdtree_s=round(t_ref, 3),
                            speedup=round(t_ref / t_fast, 2), max_distance_diff=diff))  # fmt: skip
    print_table(nn_rows, "nearest neighbours both ways, 100k samples: evaluation path vs scipy cKDTree")

    gt = prepare_ground_truth(gts)
    once, t_once = timed(lambda: [score_sequence(p, gt) for p in preds])
    t_once += timed(prepare_ground_truth, gts)[1]
    each, t_each = timed(lambda: [evaluate_sequence(p, gts) for p in preds])
    same = all(a[k] == b[k] for a, b in zip(once, each) for k in ("chamfer", "iou", "fscore", "jitter"))
    seq_rows = [dict(case=f"evaluate 3 methods x {T} frames (100k, 128³)", gt_once_s=round(t_once, 2),
                     gt_per_method_s=round(t_each, 2), speedup=round(t_each / t_once, 2), identical=same)]  # fmt: skip
    print_table(seq_rows, "one benchmark sequence scored for three methods")

    single = [
        ("chamfer_distance (100k samples)", lambda: chamfer_distance(preds[0][0], gts[0])),
        ("volume_iou (128³, both scanline)", lambda: volume_iou(preds[0][0], gts[0])),
        (f"temporal_jitter ({T} frames, 100k)", lambda: temporal_jitter(preds[0], gts)),
    ]
    with tempfile.TemporaryDirectory() as d:
        imgs = [np.full((64, 64, 3), 200, np.uint8)] * T
        single += [
            ("write_obj_sequence", lambda: write_obj_sequence(gts, Path(d) / "objs")),
            ("write_animated_glb (visibility)", lambda: write_animated_glb(gts, Path(d) / "s.glb")),
            ("write_animated_glb (morph)", lambda: write_animated_glb(gts, Path(d) / "m.glb", mode="morph")),
            (
                "write_strip_video (256², GIF+MP4)",
                lambda: write_strip_video(imgs, gts, Path(d) / "a.gif", Path(d) / "a.mp4"),
            ),  # fmt: skip
        ]
        one_rows = [dict(operation=label, seconds=round(timed(fn)[1], 3)) for label, fn in single]
    print_table(one_rows, "single metrics and exports")
    write_json(
        args.json, dict(occupancy=occ_rows, nearest=nn_rows, sequence=seq_rows, single=one_rows, frames=T)
    )


if __name__ == "__main__":
    main()
