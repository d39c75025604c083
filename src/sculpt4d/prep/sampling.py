"""Consistent 4D surface sampling: points sampled once, tracked through every frame.

Points are drawn once on the rest pose as (face index, barycentric coordinates), carried to every
frame by the same face/barycentrics, then projected onto that frame's watertight mesh (closest point)
and given its unit face normal. Point i is therefore the same material point in every frame.

Topology changes (a frame whose face array differs from the current anchor's): the previous frame's
tracked points are re-attached to the new frame's mesh by closest-point projection (new face index +
barycentrics), which becomes the anchor for the following frames of that topology.

One normalisation for the whole sequence: centre of the union bbox, divided by its longest side, so
every frame lies in [-0.5, 0.5] and the motion is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import igl
import numpy as np
import trimesh

from sculpt4d.errors import InputError


@dataclass
class SurfaceSamples:
    """Points on a triangle mesh as face index + barycentric coordinates."""

    face: np.ndarray  # [N] int64
    bary: np.ndarray  # [N, 3] float64, rows sum to 1

    def points(self, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """Positions on a mesh with the same topology.  # [N, 3]"""
        tri = np.asarray(vertices, dtype=np.float64)[faces[self.face]]  # [N, 3, 3]
        return np.einsum("nk,nkd->nd", self.bary, tri)


def face_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = np.asarray(vertices, dtype=np.float64)[faces]
    return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)


def sample_uniform(
    vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator
) -> SurfaceSamples:
    """``n`` area-uniform surface samples."""
    area = face_areas(vertices, faces)
    if not np.isfinite(area).all() or area.sum() <= 0:
        raise InputError("mesh has zero surface area; cannot sample points")
    face = rng.choice(len(faces), size=n, p=area / area.sum())
    uv = rng.random((n, 2))
    flip = uv.sum(1) > 1
    uv[flip] = 1 - uv[flip]
    bary = np.stack([1 - uv.sum(1), uv[:, 0], uv[:, 1]], axis=1)
    return SurfaceSamples(face.astype(np.int64), bary)


def sharp_edges(
    vertices: np.ndarray, faces: np.ndarray, angle_deg: float = 30.0
) -> tuple[np.ndarray, np.ndarray]:
    """Edges whose dihedral angle exceeds ``angle_deg``. -> (face [E], corners [E, 2] in 0..2 of that face)

    Vertices are welded by position first, so glTF meshes split at hard edges still get adjacency.
    """
    v = np.asarray(vertices, dtype=np.float64)
    scale = float(np.ptp(v, axis=0).max()) or 1.0
    _, inv = np.unique(np.round(v / (scale * 1e-6)).astype(np.int64), axis=0, return_inverse=True)
    fw = inv.reshape(-1)[faces]  # [F, 3] welded topology, same face order
    tm = trimesh.Trimesh(v[np.unique(inv.reshape(-1), return_index=True)[1]], fw, process=False)
    if len(tm.face_adjacency) == 0:
        return np.zeros(0, np.int64), np.zeros((0, 2), np.int64)
    sharp = tm.face_adjacency_angles > np.radians(angle_deg)
    face = tm.face_adjacency[sharp, 0]
    edges = tm.face_adjacency_edges[sharp]  # [E, 2] welded vertex ids
    corners = np.stack([np.argmax(fw[face] == edges[:, k : k + 1], axis=1) for k in range(2)], axis=1)
    return face.astype(np.int64), corners.astype(np.int64)


def sample_sharp(
    vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator, angle_deg: float = 30.0
) -> tuple[SurfaceSamples, int]:
    """``n`` samples on sharp edges (length-weighted); uniform if there are none. -> (samples, #sharp edges)"""
    face, corners = sharp_edges(vertices, faces, angle_deg)
    if len(face) == 0:
        return sample_uniform(vertices, faces, n, rng), 0
    v = np.asarray(vertices, dtype=np.float64)
    a = v[faces[face, corners[:, 0]]]
    b = v[faces[face, corners[:, 1]]]
    length = np.linalg.norm(b - a, axis=1)
    if length.sum() <= 0:
        return sample_uniform(vertices, faces, n, rng), 0
    k = rng.choice(len(face), size=n, p=length / length.sum())
    t = rng.random(n)
    bary = np.zeros((n, 3))
    bary[np.arange(n), corners[k, 0]] = 1 - t
    bary[np.arange(n), corners[k, 1]] += t
    return SurfaceSamples(face[k], bary), int(len(face))


def closest_point(
    points: np.ndarray, vertices: np.ndarray, faces: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Closest surface points and their face indices. -> ([N,3], [N])"""
    _, fi, c = igl.point_mesh_squared_distance(
        np.ascontiguousarray(points, dtype=np.float64),
        np.ascontiguousarray(vertices, dtype=np.float64),
        np.ascontiguousarray(faces, dtype=np.int64),
    )
    return np.asarray(c), np.asarray(fi, dtype=np.int64)


def reattach(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> SurfaceSamples:
    """Face index + barycentrics of the closest points of ``points`` on a (new-topology) mesh."""
    c, fi = closest_point(points, vertices, faces)
    tri = np.asarray(vertices, dtype=np.float64)[faces[fi]]
    bary = igl.barycentric_coordinates(
        np.ascontiguousarray(c), np.ascontiguousarray(tri[:, 0]), np.ascontiguousarray(tri[:, 1]),
        np.ascontiguousarray(tri[:, 2]),
    )  # fmt: skip
    bary = np.nan_to_num(np.asarray(bary, dtype=np.float64), nan=1 / 3)
    return SurfaceSamples(fi, bary)


def same_topology(f0: np.ndarray, f1: np.ndarray, nv0: int, nv1: int) -> bool:
    return nv0 == nv1 and f0.shape == f1.shape and bool(np.array_equal(f0, f1))


@dataclass
class Tracked:
    """Result of tracking one point set through a sequence (unnormalised world coordinates)."""

    points: list[np.ndarray]  # per frame [N, 3] on the watertight mesh
    normals: list[np.ndarray]  # per frame [N, 3] unit
    topology_changes: list[int] = field(default_factory=list)  # frames where points were re-attached


def track(
    samples: SurfaceSamples,
    rest: tuple[np.ndarray, np.ndarray],
    frames: list[tuple[np.ndarray, np.ndarray]],
    watertights: list[tuple[np.ndarray, np.ndarray]],
) -> Tracked:
    """Carry rest-pose samples through ``frames`` [(V_t, F_t)] and project onto ``watertights``."""
    anchor_f, anchor_nv = np.asarray(rest[1]), len(rest[0])
    prev = samples.points(*rest)  # [N, 3] unprojected positions of the previous frame
    out = Tracked([], [])
    for t, ((v, f), (wv, wf)) in enumerate(zip(frames, watertights)):
        f = np.asarray(f)
        if not same_topology(anchor_f, f, anchor_nv, len(v)):
            samples = reattach(prev, v, f)
            anchor_f, anchor_nv = f, len(v)
            out.topology_changes.append(t)
        p = samples.points(v, f)
        prev = p
        c, fi = closest_point(p, wv, wf)
        tri = np.asarray(wv, dtype=np.float64)[wf[fi]]  # [N, 3, 3]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        bad = ~np.isfinite(n).all(1) | (np.linalg.norm(n, axis=1) < 1e-20)  # degenerate faces
        if bad.any():
            n[bad] = _vertex_normal_fallback(wv, wf, fi[bad])
        out.points.append(c)
        out.normals.append(n / np.linalg.norm(n, axis=1, keepdims=True))
    return out


def _vertex_normal_fallback(v: np.ndarray, f: np.ndarray, fi: np.ndarray) -> np.ndarray:
    vn = trimesh.Trimesh(v, f, process=False).vertex_normals
    n = vn[f[fi]].sum(1)
    n[np.linalg.norm(n, axis=1) < 1e-12] = [0.0, 0.0, 1.0]
    return n


def sequence_normalisation(arrays: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """Centre of the union bbox of all arrays [*, 3] and its longest side."""
    lo = np.min([a.min(0) for a in arrays], axis=0)
    hi = np.max([a.max(0) for a in arrays], axis=0)
    size = float((hi - lo).max())
    if not np.isfinite(size) or size <= 0:
        raise InputError("degenerate sequence: zero-size bounding box")
    return 0.5 * (lo + hi), size


def normalise(points: np.ndarray, centre: np.ndarray, scale: float) -> np.ndarray:
    return np.clip((points - centre) / scale, -0.5, 0.5)


def occupancy(vertices: np.ndarray, faces: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Inside test for a closed mesh (winding number > 0.5).  # [M] bool"""
    w = igl.fast_winding_number(
        np.ascontiguousarray(vertices, dtype=np.float64),
        np.ascontiguousarray(faces, dtype=np.int64),
        np.ascontiguousarray(q, dtype=np.float64),
    )
    return np.asarray(w) > 0.5


def _face_normals(vertices: np.ndarray, faces: np.ndarray, face: np.ndarray) -> np.ndarray:
    """Unit normals of ``faces[face]``.  # [N, 3]"""
    tri = np.asarray(vertices, dtype=np.float64)[faces[face]]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return np.where(length > 1e-20, n / np.maximum(length, 1e-20), [0.0, 0.0, 1.0])


def _on_outer_surface(samples: SurfaceSamples, frames: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Samples that lie on the outer surface of every frame: not buried inside another closed part of the same
    mesh, nor on a face in contact with one.

    The winding number is taken a hair (1e-5 of the extent) off the surface along the outward face normal: 0 there
    for a point on the outer surface, 1 when another part encloses it. On the surface itself the fast (far-field)
    winding number errs by far more than a whole-mesh threshold tolerates (0.5 on the own surface, 1.5 buried), and
    a thin part that swings past another one (a door panel, a lid) lost most of its samples over a clip.  # [N] bool"""
    keep = np.ones(len(samples.face), bool)
    for v, f in frames:
        v = np.ascontiguousarray(v, dtype=np.float64)
        f = np.ascontiguousarray(f, dtype=np.int64)
        eps = 1e-5 * (float(np.ptp(v, axis=0).max()) or 1.0)
        pts = samples.points(v, f) + eps * _face_normals(v, f, samples.face)
        keep &= np.abs(np.asarray(igl.fast_winding_number(v, f, np.ascontiguousarray(pts)))) < 0.5
    return keep


def _outer_samples(
    samples: SurfaceSamples, keep: np.ndarray, n: int, rng: np.random.Generator
) -> SurfaceSamples:
    """``n`` of the kept samples (all of them first; repeats only if fewer than ``n`` are kept)."""
    idx = np.flatnonzero(keep)
    if len(idx) == 0:
        idx = np.arange(len(keep))  # nothing outside (a degenerate asset): keep the raw samples
    pick = idx[:n] if len(idx) >= n else np.concatenate([idx, rng.choice(idx, n - len(idx))])
    return SurfaceSamples(samples.face[pick], samples.bary[pick])


def track_exact(
    rest: tuple[np.ndarray, np.ndarray],
    frames: list[tuple[np.ndarray, np.ndarray]],
    n_random: int,
    n_sharp: int,
    rng: np.random.Generator,
    sharp_angle: float = 30.0,
) -> tuple[Tracked, Tracked, int]:
    """Consistent samples on the exact frame meshes (closed parts, one topology for the whole sequence).

    Points are (face, barycentric) pairs drawn on ``rest`` and evaluated on every frame's own vertices, so
    row i is exactly the same material point over time, with that frame's face normal; points buried inside
    another part in any frame are dropped (drawn with 50% headroom). -> (random, sharp, #sharp edges)
    """
    f0 = np.asarray(rest[1])
    for t, (v, f) in enumerate(frames):
        if not same_topology(f0, np.asarray(f), len(rest[0]), len(v)):
            raise InputError(
                f"frame {t} has another topology than the rest pose; exact labels need one topology for the "
                "whole sequence (use labels=watertight)"
            )
    rnd = sample_uniform(*rest, n_random + n_random // 2, rng)
    shp, n_edges = sample_sharp(*rest, n_sharp + n_sharp // 2, rng, sharp_angle)
    tracks = []
    for samples, n in ((rnd, n_random), (shp, n_sharp)):
        chosen = _outer_samples(samples, _on_outer_surface(samples, frames), n, rng)
        tracks.append(
            Tracked(
                [chosen.points(v, f) for v, f in frames],
                [_face_normals(v, f, chosen.face) for v, f in frames],
            )
        )
    return tracks[0], tracks[1], n_edges
