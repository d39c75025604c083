"""Temporal jitter (design.md §7): mean_t |CD(pred_t, pred_t+1) − CD(gt_t, gt_t+1)|."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import trimesh

from sculpt4d.errors import InputError
from sculpt4d.metrics.distance import SurfaceSamples, chamfer_from_samples, sample_surface


def consecutive_chamfers(samples: Sequence[SurfaceSamples], workers: int = -1) -> np.ndarray:
    """CD between each pair of consecutive frames, shape [T-1]."""
    return np.array(
        [chamfer_from_samples(samples[t], samples[t + 1], workers) for t in range(len(samples) - 1)],
        dtype=np.float64,
    )


def jitter_from_samples(
    pred: Sequence[SurfaceSamples], gt: Sequence[SurfaceSamples], workers: int = -1
) -> float:
    """Temporal jitter from pre-sampled surfaces; 0.0 for sequences shorter than two frames."""
    if len(pred) != len(gt):
        raise InputError(
            f"temporal jitter needs as many predicted frames as ground-truth ones, got {len(pred)} vs {len(gt)}"
        )
    return jitter_from_chamfers(consecutive_chamfers(pred, workers), consecutive_chamfers(gt, workers))


def jitter_from_chamfers(pred_cd: np.ndarray, gt_cd: np.ndarray) -> float:
    """Mean |pred_cd - gt_cd| of two [T-1] consecutive-frame Chamfer series; 0.0 when they are empty."""
    return float(np.abs(pred_cd - gt_cd).mean()) if len(gt_cd) else 0.0


def temporal_jitter(
    preds: Sequence[trimesh.Trimesh | None],
    gts: Sequence[trimesh.Trimesh | None],
    n: int = 100_000,
    seed: int = 0,
    workers: int = -1,
) -> float:
    """Mean over t of |CD(pred_t, pred_t+1) − CD(gt_t, gt_t+1)| with ``n`` samples per surface.

    A prediction that moves exactly as much as the ground truth scores 0 (a static pair of sequences
    included). Every surface is sampled with the same ``seed``, so two identical consecutive frames
    are exactly 0 apart (no sampling-noise floor). Empty frames use the Chamfer worst-value convention of ``chamfer_from_samples``.
    """
    p = [sample_surface(m, n, seed) for m in preds]
    g = [sample_surface(m, n, seed) for m in gts]
    return jitter_from_samples(p, g, workers)
