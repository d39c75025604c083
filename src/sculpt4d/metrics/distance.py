"""Surface-sample distances: Chamfer distance and F-score (design.md §7).

Both sample each surface uniformly by area (``trimesh.sample.sample_surface``, seeded) and use
``pykdtree`` for exact nearest neighbours (OpenMP; ``workers=-1``: all cores, ``n``: at most n threads): 2x
faster than scipy's ``cKDTree`` on benchmark meshes with the same distances (``benchmarks/metrics.py``).
Empty/degenerate meshes (see ``clean_mesh``): two empty meshes agree perfectly (CD 0, F 1); one empty
against a non-empty one gives the worst values ``WORST_CHAMFER`` and F 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh
from pykdtree.kdtree import KDTree
from threadpoolctl import threadpool_limits

from sculpt4d.metrics._mesh import clean_mesh

#: Chamfer distance reported when exactly one of the two meshes is empty: the diagonal of the unit cube,
#: i.e. larger than any distance between two points inside the normalised ground-truth box.
WORST_CHAMFER = float(np.sqrt(3.0))


@dataclass(frozen=True)
class SurfaceSamples:
    """Surface samples of one mesh plus its KD-tree, reusable across several comparisons."""

    points: np.ndarray  # [n, 3] float64
    tree: KDTree | None  # None when there are no points

    @property
    def empty(self) -> bool:
        return len(self.points) == 0


def _spread_bits(v: np.ndarray) -> np.ndarray:
    """The low 10 bits of ``v`` (uint64) moved to every third bit: 0b11 -> 0b1001."""
    v = (v | (v << np.uint64(16))) & np.uint64(0x030000FF)
    v = (v | (v << np.uint64(8))) & np.uint64(0x0300F00F)
    v = (v | (v << np.uint64(4))) & np.uint64(0x030C30C3)
    return (v | (v << np.uint64(2))) & np.uint64(0x09249249)


def morton_order(points: np.ndarray) -> np.ndarray:
    """The permutation that sorts ``points [n, 3]`` along a Z-order curve (10 bits per axis over their box).

    Nearby points end up nearby in memory, so nearest-neighbour queries issued in this order reuse the tree
    nodes they just visited: 1.6x faster queries on benchmark meshes than in the sampler's random order.
    """
    lo, hi = points.min(axis=0), points.max(axis=0)
    q = ((points - lo) / np.maximum(hi - lo, 1e-12) * 1023).astype(np.uint64)  # [n, 3] in 0..1023
    code = (
        _spread_bits(q[:, 0])
        | (_spread_bits(q[:, 1]) << np.uint64(1))
        | (_spread_bits(q[:, 2]) << np.uint64(2))
    )
    return np.argsort(code, kind="stable")


def sample_surface(mesh: trimesh.Trimesh | None, n: int = 100_000, seed: int = 0) -> SurfaceSamples:
    """Sample ``n`` points uniformly on the surface of ``mesh`` (no points if it is empty), stored in Z-order
    (:func:`morton_order`: the same point set, so every metric is unchanged up to float summation order)."""
    m = clean_mesh(mesh)
    if m is None or n <= 0:
        pts = np.zeros((0, 3))
    else:
        pts, _ = trimesh.sample.sample_surface(m, int(n), seed=seed)
        pts = np.asarray(pts, dtype=np.float64)
        pts = np.ascontiguousarray(pts[morton_order(pts)])
    # leafsize 16: the fastest of 8/16/32 for 100k benchmark-mesh samples (queries exact for any leafsize)
    return SurfaceSamples(points=pts, tree=KDTree(pts, leafsize=16) if len(pts) else None)


def _nn_dist(src: SurfaceSamples, dst: SurfaceSamples, workers: int) -> np.ndarray:
    """Distance from each of ``src``'s points to its nearest neighbour among ``dst``'s.  # [n_src]"""
    assert dst.tree is not None, "callers handle empty samples first"
    if workers is None or workers < 0:
        return dst.tree.query(src.points, k=1)[0]
    with threadpool_limits(max(int(workers), 1), user_api="openmp"):
        return dst.tree.query(src.points, k=1)[0]


def chamfer_from_samples(a: SurfaceSamples, b: SurfaceSamples, workers: int = -1) -> float:
    """Chamfer distance between two sampled surfaces (see ``chamfer_distance``)."""
    if a is b or (a.empty and b.empty):  # the same samples: every point is its own neighbour
        return 0.0
    if a.empty or b.empty:
        return WORST_CHAMFER
    return 0.5 * float(_nn_dist(a, b, workers).mean() + _nn_dist(b, a, workers).mean())


def chamfer_fscore_from_samples(
    pred: SurfaceSamples, gt: SurfaceSamples, tau: float = 0.05, workers: int = -1
) -> tuple[float, float]:
    """``(chamfer, fscore)`` from one pair of nearest-neighbour queries."""
    if pred is gt or (pred.empty and gt.empty):  # the same samples: all distances 0
        return 0.0, 1.0
    if pred.empty or gt.empty:
        return WORST_CHAMFER, 0.0
    d_pg = _nn_dist(pred, gt, workers)
    d_gp = _nn_dist(gt, pred, workers)
    chamfer = 0.5 * float(d_pg.mean() + d_gp.mean())
    precision = float((d_pg < tau).mean())
    recall = float((d_gp < tau).mean())
    f = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return chamfer, f


def chamfer_distance(
    a: trimesh.Trimesh | None, b: trimesh.Trimesh | None, n: int = 100_000, seed: int = 0, workers: int = -1
) -> float:
    """Mean of the two directional mean nearest-neighbour L2 distances between ``n`` surface samples each.

    Not squared. Units are the meshes' (normalise first, see ``normalize_sequence``). Both meshes are
    sampled with the same ``seed``, so identical meshes score exactly 0.
    """
    return chamfer_from_samples(sample_surface(a, n, seed), sample_surface(b, n, seed), workers)


def fscore(
    pred: trimesh.Trimesh | None,
    gt: trimesh.Trimesh | None,
    tau: float = 0.05,
    n: int = 100_000,
    seed: int = 0,
    workers: int = -1,
) -> float:
    """F-score at threshold ``tau``: harmonic mean of precision (pred samples within ``tau`` of gt)
    and recall (gt samples within ``tau`` of pred); distances strictly below ``tau`` count."""
    return chamfer_fscore_from_samples(
        sample_surface(pred, n, seed), sample_surface(gt, n, seed), tau, workers
    )[1]
