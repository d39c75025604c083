"""Score a predicted sequence against its ground truth (design.md §7).

The ground truth is normalised and sampled once (:func:`prepare_ground_truth`) and can then score any
number of predictions (:func:`score_sequence`): an evaluation compares several methods per sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import trimesh

from sculpt4d.errors import InputError
from sculpt4d.metrics.cache import MeshCache
from sculpt4d.metrics.distance import SurfaceSamples, chamfer_fscore_from_samples, sample_surface
from sculpt4d.metrics.motion import motion_iou, sequence_occupancy
from sculpt4d.metrics.normalize import apply_normalization, normalize_sequence
from sculpt4d.metrics.occupancy import Bounds, volume_iou
from sculpt4d.metrics.temporal import consecutive_chamfers, jitter_from_chamfers


@dataclass(frozen=True)
class GroundTruth:
    """A ground-truth sequence in its own sequence normalisation, with its surface samples."""

    meshes: list[trimesh.Trimesh | None]  # normalised, T frames
    samples: list[SurfaceSamples]  # n_points per frame, sampled with `seed`
    consecutive: np.ndarray  # [T-1] Chamfer distance between consecutive frames
    center: np.ndarray  # [3] of the normalisation (v - center) / scale
    scale: float
    n_points: int
    seed: int
    motion_occ: np.ndarray | None = None  # [T, R, R, R] on the shared motion grid (None: no motion IoU)


def _check_lengths(n_pred: int, n_gt: int) -> None:
    if n_pred != n_gt:
        raise InputError(
            f"evaluate_sequence: {n_pred} predicted frames but {n_gt} ground-truth frames; "
            "pass sequences of equal length (trim the longer one)."
        )


def prepare_ground_truth(
    gts: Sequence[trimesh.Trimesh | None],
    n_points: int = 100_000,
    seed: int = 0,
    normalize: bool = True,
    workers: int = -1,
    motion_resolution: int | None = None,
) -> GroundTruth:
    """Normalise ``gts`` with their sequence normalisation (``normalize_sequence``) and sample them; with
    ``motion_resolution``, also voxelise every frame on the shared motion grid (for motion IoU)."""
    if len(gts) == 0:
        raise InputError("evaluate_sequence: empty sequences; pass at least one frame.")
    center, scale = normalize_sequence(gts) if normalize else (np.zeros(3), 1.0)
    meshes = apply_normalization(gts, center, scale)
    samples = [sample_surface(m, n_points, seed) for m in meshes]
    return GroundTruth(
        meshes,
        samples,
        consecutive_chamfers(samples, workers),
        np.asarray(center),
        float(scale),
        n_points,
        seed,
        sequence_occupancy(meshes, motion_resolution) if motion_resolution else None,
    )


def score_sequence(
    preds: Sequence[trimesh.Trimesh | None],
    gt: GroundTruth,
    iou_res: int = 128,
    tau: float = 0.05,
    iou_bounds: Bounds | None = None,
    workers: int = -1,
) -> dict[str, Any]:
    """Chamfer, volumetric IoU, F-score@tau (means over frames) and temporal jitter of ``preds`` vs ``gt``.

    ``preds`` get the ground truth's normalisation and sampling (same ``n_points`` and ``seed`` for every
    surface, so identical frames give identical samples and exactly zero distance); the samples are shared
    by Chamfer, F-score and jitter. Returns
    ``dict(chamfer, iou, fscore, jitter, per_frame=[dict(frame, chamfer, iou, fscore)], center, scale)``, plus
    ``motion_iou`` when the ground truth was prepared with a ``motion_resolution``.
    """
    _check_lengths(len(preds), len(gt.meshes))
    preds_n = apply_normalization(preds, gt.center, gt.scale)
    cache = MeshCache()  # repeated meshes (and ground-truth copies) are sampled / voxelised once
    for truth, samples in zip(gt.meshes, gt.samples, strict=True):
        cache.add_samples(truth, gt.n_points, gt.seed, samples)
    p_samples = [cache.samples(m, gt.n_points, gt.seed) for m in preds_n]
    per_frame = []
    for t, (pred, truth) in enumerate(zip(preds_n, gt.meshes, strict=True)):
        cd, f = chamfer_fscore_from_samples(p_samples[t], gt.samples[t], tau, workers)
        iou = volume_iou(pred, truth, resolution=iou_res, bounds=iou_bounds, occupancy_fn=cache.occupancy)
        per_frame.append(dict(frame=t, chamfer=cd, iou=iou, fscore=f))
    out = dict(
        chamfer=float(np.mean([r["chamfer"] for r in per_frame])),
        iou=float(np.mean([r["iou"] for r in per_frame])),
        fscore=float(np.mean([r["fscore"] for r in per_frame])),
        jitter=jitter_from_chamfers(consecutive_chamfers(p_samples, workers), gt.consecutive),
        per_frame=per_frame,
        center=[float(c) for c in gt.center],
        scale=gt.scale,
    )
    if gt.motion_occ is not None:
        resolution = gt.motion_occ.shape[-1]
        pred_occ = sequence_occupancy(preds_n, resolution, occupancy_fn=cache.occupancy)
        out["motion_iou"] = motion_iou(pred_occ, gt.motion_occ)
    return out


def evaluate_sequence(
    preds: Sequence[trimesh.Trimesh | None],
    gts: Sequence[trimesh.Trimesh | None],
    n_points: int = 100_000,
    iou_res: int = 128,
    tau: float = 0.05,
    seed: int = 0,
    normalize: bool = True,
    iou_bounds: Bounds | None = None,
    workers: int = -1,
) -> dict[str, Any]:
    """One prediction against one ground truth: :func:`prepare_ground_truth` + :func:`score_sequence`.

    With ``normalize=True`` both sequences get the ground truth's sequence normalisation first.
    """
    _check_lengths(len(preds), len(gts))  # before the ground truth is sampled
    gt = prepare_ground_truth(gts, n_points, seed, normalize, workers)
    return score_sequence(preds, gt, iou_res, tau, iou_bounds, workers)
