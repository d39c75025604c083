"""Sequence normalisation: the ground truth's union bounding box → centre 0, longest side 1."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import trimesh

from sculpt4d.metrics._mesh import clean_mesh


def normalize_sequence(gt_meshes: Sequence[trimesh.Trimesh]) -> tuple[np.ndarray, float]:
    """Return ``(center, scale)`` of a ground-truth sequence.

    ``center`` is the centre of the bounding box of the union of all frames and ``scale`` its longest
    side, so a normalised vertex is ``(v - center) / scale`` (the convention of ``prep`` and meta.json)
    and the whole ground-truth sequence fits in [-0.5, 0.5]^3 (motion is kept). Empty or
    zero-size input gives ``(0, 1)``.
    """
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for mesh in gt_meshes:
        m = clean_mesh(mesh)
        if m is None:
            continue
        lo = np.minimum(lo, m.vertices.min(axis=0))
        hi = np.maximum(hi, m.vertices.max(axis=0))
    if not np.isfinite(lo).all():
        return np.zeros(3), 1.0
    extent = float((hi - lo).max())
    scale = extent if extent > 0 else 1.0
    return (lo + hi) / 2.0, scale


def apply_normalization(
    meshes: Sequence[trimesh.Trimesh | None], center: np.ndarray, scale: float
) -> list[trimesh.Trimesh | None]:
    """Copies of ``meshes`` with vertices ``(v - center) / scale`` (``None`` stays ``None``)."""
    center = np.asarray(center, dtype=np.float64).reshape(3)
    out: list[trimesh.Trimesh | None] = []
    for mesh in meshes:
        if mesh is None:
            out.append(None)
            continue
        verts = (np.asarray(mesh.vertices, dtype=np.float64) - center) / float(scale)
        out.append(
            trimesh.Trimesh(vertices=verts, faces=np.asarray(mesh.faces), process=False, validate=False)
        )
    return out
