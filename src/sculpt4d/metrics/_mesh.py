"""Mesh sanitising shared by the metrics: a degenerate input never crashes a metric."""

from __future__ import annotations

import numpy as np
import trimesh


def clean_mesh(mesh: trimesh.Trimesh | None) -> trimesh.Trimesh | None:
    """Return ``mesh`` with non-finite vertices' faces dropped, or ``None`` if it has no area left.

    ``None``, meshes without faces, with NaN/inf coordinates only, or with zero surface area count as
    *empty*; each metric maps an empty mesh to its documented worst value.
    """
    if mesh is None:
        return None
    verts = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), dtype=np.int64).reshape(-1, 3)
    if len(verts) == 0 or len(faces) == 0:
        return None
    valid = (faces >= 0).all(axis=1) & (faces < len(verts)).all(axis=1)
    faces = faces[valid]
    finite = np.isfinite(verts).all(axis=1)
    if not finite.all():
        faces = faces[finite[faces].all(axis=1)]
    if len(faces) == 0:
        return None
    out = trimesh.Trimesh(vertices=verts, faces=faces, process=False, validate=False)
    area = float(out.area)
    if not np.isfinite(area) or area <= 0.0:
        return None
    return out
