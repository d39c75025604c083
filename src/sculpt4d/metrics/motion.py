"""Motion IoU: does a prediction move where the ground truth moves?

For every frame t ≥ 1 the change region of a sequence is ``occ_t XOR occ_0`` (cells that frame t fills or
empties relative to frame 0) on one grid shared by the whole sequence. Motion IoU is the mean over t ≥ 1 of
the IoU between the predicted and the ground-truth change regions. A static prediction has no change region
and scores 0 against any moving ground truth; the ground truth scores 1 against itself. A frame where neither
sequence changes counts as 1 (nothing to disagree on).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import trimesh

from sculpt4d.errors import InputError
from sculpt4d.metrics.occupancy import Bounds, OccupancyFn, occupancy_grid

#: the shared grid of normalised sequences (the ground truth spans [-0.5, 0.5]^3; 20% margin for predictions)
MOTION_BOUNDS: Bounds = (np.full(3, -0.6), np.full(3, 0.6))


def sequence_occupancy(
    meshes: Sequence[trimesh.Trimesh | None],
    resolution: int = 128,
    bounds: Bounds = MOTION_BOUNDS,
    occupancy_fn: OccupancyFn = occupancy_grid,
) -> np.ndarray:
    """Occupancy of every frame on one shared ``resolution``^3 grid.  # [T, R, R, R] bool"""
    return np.stack([occupancy_fn(m, bounds, resolution) for m in meshes])


def change_regions(occ: np.ndarray) -> np.ndarray:
    """``occ_t XOR occ_0`` for t ≥ 1.  # [T-1, R, R, R] bool"""
    return occ[1:] ^ occ[:1]


def motion_iou_per_frame(pred_occ: np.ndarray, gt_occ: np.ndarray) -> np.ndarray:
    """IoU of the change regions for t = 1..T-1.  # [T-1]"""
    if pred_occ.shape != gt_occ.shape:
        raise InputError(f"motion IoU needs equal occupancy shapes, got {pred_occ.shape} and {gt_occ.shape}")
    cp, cg = change_regions(pred_occ), change_regions(gt_occ)
    axes = tuple(range(1, cp.ndim))
    inter = np.logical_and(cp, cg).sum(axis=axes)
    union = np.logical_or(cp, cg).sum(axis=axes)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def motion_iou(pred_occ: np.ndarray, gt_occ: np.ndarray) -> float:
    """Mean motion IoU over frames t ≥ 1 (NaN for a single frame: no motion to compare)."""
    per_frame = motion_iou_per_frame(pred_occ, gt_occ)
    return float(per_frame.mean()) if len(per_frame) else float("nan")
