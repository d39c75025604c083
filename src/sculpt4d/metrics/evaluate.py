"""One call that scores a predicted sequence against its ground truth (DESIGN §7)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import trimesh

from sculpt4d.errors import InputError
from sculpt4d.metrics.distance import chamfer_fscore_from_samples, sample_surface
from sculpt4d.metrics.normalize import apply_normalization, normalize_sequence
from sculpt4d.metrics.occupancy import volume_iou
from sculpt4d.metrics.temporal import jitter_from_samples


def evaluate_sequence(
    preds: Sequence[trimesh.Trimesh | None],
    gts: Sequence[trimesh.Trimesh | None],
    n_points: int = 100_000,
    iou_res: int = 128,
    tau: float = 0.05,
    seed: int = 0,
    normalize: bool = True,
    iou_bounds: tuple[Sequence[float], Sequence[float]] | None = None,
    workers: int = -1,
) -> dict[str, Any]:
    """Chamfer, volumetric IoU, F-score@tau (means over frames) and temporal jitter of ``preds`` vs ``gts``.

    With ``normalize=True`` both sequences get the ground truth's sequence normalisation
    (``normalize_sequence``) first. Each surface is sampled once (``n_points``, the same ``seed`` for every surface,
    so identical frames give identical samples and exactly zero distance) and the samples are shared by
    Chamfer, F-score and jitter. Returns
    ``dict(chamfer, iou, fscore, jitter, per_frame=[dict(frame, chamfer, iou, fscore)], center, scale)``.
    """
    if len(preds) != len(gts):
        raise InputError(
            f"evaluate_sequence: {len(preds)} predicted frames but {len(gts)} ground-truth frames; "
            "pass sequences of equal length (trim the longer one)."
        )
    if len(gts) == 0:
        raise InputError("evaluate_sequence: empty sequences; pass at least one frame.")
    center, scale = normalize_sequence(gts) if normalize else (np.zeros(3), 1.0)
    preds_n = apply_normalization(preds, center, scale)
    gts_n = apply_normalization(gts, center, scale)

    p_samples = [sample_surface(m, n_points, seed) for m in preds_n]
    g_samples = [sample_surface(m, n_points, seed) for m in gts_n]
    per_frame = []
    for t in range(len(gts)):
        cd, f = chamfer_fscore_from_samples(p_samples[t], g_samples[t], tau, workers)
        iou = volume_iou(preds_n[t], gts_n[t], resolution=iou_res, bounds=iou_bounds)
        per_frame.append(dict(frame=t, chamfer=cd, iou=iou, fscore=f))
    return dict(
        chamfer=float(np.mean([r["chamfer"] for r in per_frame])),
        iou=float(np.mean([r["iou"] for r in per_frame])),
        fscore=float(np.mean([r["fscore"] for r in per_frame])),
        jitter=jitter_from_samples(p_samples, g_samples, workers),
        per_frame=per_frame,
        center=[float(c) for c in center],
        scale=float(scale),
    )
