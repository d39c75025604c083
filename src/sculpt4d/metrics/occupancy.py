"""Volumetric IoU on an occupancy grid, with inside/outside from generalised winding numbers.

``igl.fast_winding_number`` gives ~1 inside and ~0 outside a closed surface and degrades gracefully
on holes, self-intersections and open surfaces (a non-watertight prediction still gets a sensible
inside). A point is inside when ``|w| > 0.5``, so inverted face orientation does not matter.
"""

from __future__ import annotations

from collections.abc import Sequence

import igl
import numpy as np
import trimesh

from sculpt4d.metrics._mesh import clean_mesh

Bounds = tuple[Sequence[float], Sequence[float]]


def grid_points(bounds: Bounds, resolution: int) -> np.ndarray:
    """Cell centres of a ``resolution``^3 grid over the box ``bounds = (lo, hi)``, shape [R, R, R, 3]."""
    lo = np.asarray(bounds[0], dtype=np.float64).reshape(3)
    hi = np.asarray(bounds[1], dtype=np.float64).reshape(3)
    axes = [lo[i] + (np.arange(resolution) + 0.5) * (hi[i] - lo[i]) / resolution for i in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def occupancy(mesh: trimesh.Trimesh | None, points: np.ndarray) -> np.ndarray:
    """Boolean inside-ness of ``points`` [..., 3] (all False for an empty mesh)."""
    shape = points.shape[:-1]
    flat = points.reshape(-1, 3)
    inside = np.zeros(len(flat), dtype=bool)
    m = clean_mesh(mesh)
    if m is None or len(flat) == 0:
        return inside.reshape(shape)
    verts = np.ascontiguousarray(m.vertices, dtype=np.float64)
    faces = np.ascontiguousarray(m.faces, dtype=np.int64)
    # Points outside the mesh's bounding box are outside: only query the rest (a large saving).
    lo, hi = verts.min(axis=0), verts.max(axis=0)
    pad = 1e-9 + 1e-6 * float((hi - lo).max())
    cand = np.nonzero(((flat >= lo - pad) & (flat <= hi + pad)).all(axis=1))[0]
    if len(cand):
        w = igl.fast_winding_number(verts, faces, np.ascontiguousarray(flat[cand]))
        inside[cand] = np.abs(w) > 0.5
    return inside.reshape(shape)


def default_bounds(*meshes: trimesh.Trimesh | None, pad: float = 0.02) -> Bounds | None:
    """Union bounding box of the non-empty meshes, padded by ``pad`` of its longest side."""
    boxes = [m.bounds for m in (clean_mesh(x) for x in meshes) if m is not None]
    if not boxes:
        return None
    lo = np.min([b[0] for b in boxes], axis=0)
    hi = np.max([b[1] for b in boxes], axis=0)
    margin = pad * max(float((hi - lo).max()), 1e-9)
    return lo - margin, hi + margin


def volume_iou(
    a: trimesh.Trimesh | None,
    b: trimesh.Trimesh | None,
    resolution: int = 128,
    bounds: Bounds | None = None,
) -> float:
    """Intersection over union of the two meshes' occupancies on a ``resolution``^3 grid.

    ``bounds=None`` uses the padded union bounding box of both meshes (so a prediction that spills out
    of the ground-truth box is still fully counted); pass a fixed box, e.g. ``((-0.55,)*3, (0.55,)*3)``
    for normalised meshes, to compare on one grid. Two empty meshes give 1.0 (nothing to disagree on);
    one empty mesh against a non-empty one gives 0.0.
    """
    if bounds is None:
        bounds = default_bounds(a, b)
        if bounds is None:
            return 1.0
    pts = grid_points(bounds, resolution)
    occ_a = occupancy(a, pts)
    occ_b = occupancy(b, pts)
    union = int(np.logical_or(occ_a, occ_b).sum())
    if union == 0:
        return 1.0 if clean_mesh(a) is None and clean_mesh(b) is None else 0.0
    return float(np.logical_and(occ_a, occ_b).sum()) / union
