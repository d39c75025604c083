"""The VAE's own ceiling, measured without meshing: grid IoU of the decoded occupancy against the exact mesh.

For each held-out sequence, the evaluated frames' surface samples are encoded (posterior means, one query-point
pick per sequence, as ``vae_reconstruction`` does) and decoded on a dense ``R``³ grid of cell centres over the
VAE's box; the ground truth is the frame mesh's own occupancy on the same grid. Besides IoU it reports where
the errors are: predicted / true volume, and the wrong voxels within ``--near`` voxels of the true surface
(the surface sits in a slightly wrong place) against those farther away (missing or invented parts).

    python scripts/vae_grid_iou.py                                            # shipped model, 20-sequence benchmark
    python scripts/vae_grid_iou.py --ckpt outputs/x/export --json outputs/vae_grid.json

A measuring tool for VAE A/Bs (the number the prototype's 0.83 refers to), not a benchmark row:
``python -m sculpt4d.evaluate 'methods=[vae_reconstruction]'`` scores the meshed reconstruction.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]


def error_split(pred: np.ndarray, truth: np.ndarray, near: float) -> dict[str, float]:
    """IoU and where the wrong voxels lie, for boolean grids ``pred`` and ``truth`` of one shape."""
    # distance of every voxel to the other side of the true surface, in voxels
    depth = np.where(truth, ndimage.distance_transform_edt(truth), ndimage.distance_transform_edt(~truth))
    false_pos, false_neg = pred & ~truth, truth & ~pred
    union = max(int((pred | truth).sum()), 1)
    return {
        "iou": float((pred & truth).sum()) / union,
        "volume_ratio": float(pred.sum()) / max(int(truth.sum()), 1),
        "false_pos_near": float((false_pos & (depth <= near)).sum()) / union,
        "false_pos_far": float((false_pos & (depth > near)).sum()) / union,
        "false_neg_near": float((false_neg & (depth <= near)).sum()) / union,
        "false_neg_far": float((false_neg & (depth > near)).sum()) / union,
    }


@torch.no_grad()
def decoded_occupancy(vae, z: torch.Tensor, points: np.ndarray, chunk: int = 32768) -> np.ndarray:
    """``z [N, C]`` (one frame's latents) -> inside-ness at ``points [..., 3]`` (logit > 0)."""
    h = vae.decode(z[None])
    flat = torch.from_numpy(points.reshape(-1, 3)).float()
    logits = torch.cat([vae.query(h, flat[i : i + chunk][None])[0] for i in range(0, len(flat), chunk)])
    return (logits > 0).numpy().reshape(points.shape[:-1])


def measure(ckpt: str, benchmark: Path, resolution: int, frames: int, stride: int, near: float) -> dict:
    from sculpt4d.evaluate import category_of, find_objects, load_object, surface_samples
    from sculpt4d.metrics.occupancy import grid_points, occupancy_grid
    from sculpt4d.pipeline import Sculpt4DPipeline

    vae = Sculpt4DPipeline.from_pretrained(ckpt, device="cpu").components.vae.eval()
    bounds = (np.full(3, -1.0), np.full(3, 1.0))
    points = grid_points(bounds, resolution)  # [R, R, R, 3]
    rows = []
    for i, obj in enumerate(find_objects(benchmark)):
        input_frames, truths = load_object(obj, frames, 0, stride)
        frame_dirs = [f.parent for f in input_frames]
        surface = surface_samples(obj, frame_dirs, int(vae.encoder.pc_size))  # [1, T, P, 7]
        gen = torch.Generator().manual_seed(i)
        z = vae.encode_sequence(surface, sample_posterior=False, generator=gen)[0]  # [T, N, C]
        for t, truth in enumerate(truths):
            pred = decoded_occupancy(vae, z[t], points)
            row = error_split(pred, occupancy_grid(truth, bounds, resolution), near)
            rows.append({"object": obj.name, "category": category_of(obj.name), "frame": t, **row})
        print(
            f"{obj.name}: grid IoU {np.mean([r['iou'] for r in rows if r['object'] == obj.name]):.3f}",
            flush=True,
        )
    return summarise(rows, ckpt, benchmark, resolution)


def summarise(rows: list[dict], ckpt: str, benchmark: Path, resolution: int) -> dict:
    from sculpt4d.evaluate import category_means

    keys = [k for k in rows[0] if k not in ("object", "category", "frame")]
    settings = {"ckpt": ckpt, "benchmark": str(benchmark), "resolution": resolution, "frames": len(rows)}
    return {**settings, **category_means(rows, keys)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", default=str(ROOT / "data" / "checkpoints" / "tiny"))
    ap.add_argument("--benchmark", type=Path, default=ROOT / "data" / "tiny" / "benchmark")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--frames", type=int, default=8, help="frames per sequence (evaluate's 8)")
    ap.add_argument("--stride", type=int, default=2, help="every k-th frame (evaluate's 2)")
    ap.add_argument("--near", type=float, default=2.0, help="voxels from the true surface that count as near")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    if not a.benchmark.is_dir():
        print(f"vae_grid_iou: {a.benchmark}: no such folder (make data-tiny, or python -m sculpt4d.evaluate)")
        return 2
    from sculpt4d.evaluate import report_category_rows

    cols = ["iou", "volume_ratio", "false_pos_near", "false_pos_far", "false_neg_near", "false_neg_far"]
    report_category_rows(measure(a.ckpt, a.benchmark, a.resolution, a.frames, a.stride, a.near), cols, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
