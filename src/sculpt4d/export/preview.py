"""Previews of generated meshes: offscreen grey-Lambert renders on a white background.

Backend ``pyrender`` (OpenGL through EGL; ``PYOPENGL_PLATFORM=egl`` is set here unless the caller chose
another platform before importing) with a fallback ``splat``: a numpy point-splatting z-buffer
(dense area-uniform surface samples, Lambert-shaded by their face normals) that needs no OpenGL.
``backend="auto"`` tries pyrender once and remembers a failure for the rest of the process.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import numpy as np  # noqa: E402
import trimesh  # noqa: E402

Bounds = tuple[np.ndarray, np.ndarray]

_PYRENDER_FAILED: str | None = None
_GREY = 0.72
_AMBIENT = 0.3


def sequence_bounds(meshes: Sequence[trimesh.Trimesh]) -> Bounds:
    """Union bounding box of the non-empty meshes (a unit box at the origin if all are empty)."""
    boxes = [m.bounds for m in meshes if m is not None and len(m.faces) and np.isfinite(m.vertices).all()]
    if not boxes:
        return np.full(3, -0.5), np.full(3, 0.5)
    return np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)


def camera_pose(
    bounds: Bounds, azimuth: float = 30.0, elevation: float = 20.0, yfov: float = np.pi / 5
) -> np.ndarray:
    """Camera-to-world 4x4 (OpenGL: looks down -Z, +Y up) framing the bounding sphere of ``bounds``.

    ``azimuth`` rotates about +Y (0 = camera on +Z looking at the front), ``elevation`` looks down from above.
    """
    lo, hi = np.asarray(bounds[0], float), np.asarray(bounds[1], float)
    center = (lo + hi) / 2
    radius = max(float(np.linalg.norm(hi - lo)) / 2, 1e-6)
    dist = radius / np.sin(yfov / 2) * 1.05
    az, el = np.radians(azimuth), np.radians(elevation)
    eye = center + dist * np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])
    z = (eye - center) / np.linalg.norm(eye - center)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= max(np.linalg.norm(x), 1e-12)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, y, z, eye
    return pose


def _render_pyrender(
    meshes: Sequence[trimesh.Trimesh], poses: Sequence[np.ndarray], size: int, yfov: float
) -> list[np.ndarray]:
    import pyrender

    renderer = pyrender.OffscreenRenderer(size, size)
    try:
        material = pyrender.MetallicRoughnessMaterial(
            baseColorFactor=[_GREY, _GREY, _GREY, 1.0], metallicFactor=0.0, roughnessFactor=1.0
        )
        images = []
        for mesh, pose in zip(meshes, poses):
            scene = pyrender.Scene(bg_color=[1.0, 1.0, 1.0, 1.0], ambient_light=[_AMBIENT] * 3)
            if mesh is not None and len(mesh.faces) and np.isfinite(mesh.vertices).all():
                scene.add(pyrender.Mesh.from_trimesh(mesh, material=material, smooth=False))
            scene.add(pyrender.PerspectiveCamera(yfov=yfov, aspectRatio=1.0), pose=pose)
            scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=2.0), pose=pose)
            color, _ = renderer.render(scene)
            images.append(np.ascontiguousarray(color[..., :3]))
        return images
    finally:
        renderer.delete()


def _render_splat(mesh: trimesh.Trimesh | None, pose: np.ndarray, size: int, yfov: float) -> np.ndarray:
    """Numpy fallback: z-buffered splats of ~10 surface samples per covered pixel, Lambert-shaded."""
    image = np.ones((size, size, 3), np.float64)
    if mesh is None or len(mesh.faces) == 0 or not np.isfinite(mesh.vertices).all():
        return (image * 255).astype(np.uint8)
    world_to_cam = np.linalg.inv(pose)
    focal = size / 2 / np.tan(yfov / 2)
    # samples per unit area so that the projected surface gets ~10 samples per pixel (holes ~ e^-10)
    depth0 = np.linalg.norm(pose[:3, 3] - mesh.bounds.mean(axis=0))
    n = int(np.clip(10 * mesh.area * (focal / max(depth0, 1e-9)) ** 2, 2_000, 500_000))
    pts, fid = trimesh.sample.sample_surface(mesh, n, seed=0)
    normals = mesh.face_normals[fid]
    cam = pts @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    nrm = normals @ world_to_cam[:3, :3].T
    front = cam[:, 2] < -1e-9
    cam, nrm = cam[front], nrm[front]
    u = np.floor(size / 2 + focal * cam[:, 0] / -cam[:, 2]).astype(np.int64)
    v = np.floor(size / 2 - focal * cam[:, 1] / -cam[:, 2]).astype(np.int64)
    inside = (u >= 0) & (u < size) & (v >= 0) & (v < size)
    u, v, depth, nrm = u[inside], v[inside], -cam[inside, 2], nrm[inside]
    pix = v * size + u
    order = np.lexsort((depth, pix))  # nearest sample first within each pixel
    pix, first = np.unique(pix[order], return_index=True)
    shade = _AMBIENT + (1 - _AMBIENT) * np.abs(nrm[order][first, 2])  # light from the camera, two-sided
    flat = image.reshape(-1, 3)
    flat[pix] = (_GREY * shade)[:, None]
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def render_views(
    meshes: Sequence[trimesh.Trimesh | None],
    poses: Sequence[np.ndarray],
    size: int = 256,
    yfov: float = np.pi / 5,
    backend: str = "auto",
) -> list[np.ndarray]:
    """Render ``meshes[i]`` from camera ``poses[i]``; returns uint8 [size, size, 3] images."""
    global _PYRENDER_FAILED
    if backend not in ("auto", "pyrender", "splat"):
        raise ValueError(f"unknown render backend {backend!r} (auto | pyrender | splat)")
    if backend == "pyrender" or (backend == "auto" and _PYRENDER_FAILED is None):
        try:
            return _render_pyrender(meshes, poses, size, yfov)
        except Exception as exc:  # no EGL/OSMesa, no display, driver trouble
            if backend == "pyrender":
                raise
            _PYRENDER_FAILED = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"pyrender unavailable ({_PYRENDER_FAILED}); using the numpy splat renderer", stacklevel=2
            )
    return [_render_splat(m, p, size, yfov) for m, p in zip(meshes, poses)]


def render_strip(
    meshes: Sequence[trimesh.Trimesh | None],
    size: int = 256,
    azimuth: float = 30.0,
    elevation: float = 20.0,
    bounds: Bounds | None = None,
    backend: str = "auto",
) -> list[np.ndarray]:
    """One image per frame from one fixed camera framing the whole sequence (motion stays visible)."""
    bounds = sequence_bounds(meshes) if bounds is None else bounds
    pose = camera_pose(bounds, azimuth, elevation)
    return render_views(list(meshes), [pose] * len(meshes), size=size, backend=backend)


def render_turntable(
    meshes: trimesh.Trimesh | Sequence[trimesh.Trimesh | None],
    n_views: int = 36,
    size: int = 256,
    elevation: float = 20.0,
    bounds: Bounds | None = None,
    backend: str = "auto",
) -> list[np.ndarray]:
    """``n_views`` images from a camera circling the object once (azimuth 0..360°).

    A sequence plays while the camera turns: view i shows ``meshes[i % T]``.
    """
    seq = [meshes] if isinstance(meshes, trimesh.Trimesh) else list(meshes)
    bounds = sequence_bounds(seq) if bounds is None else bounds
    poses = [camera_pose(bounds, 360.0 * i / n_views, elevation) for i in range(n_views)]
    return render_views([seq[i % len(seq)] for i in range(n_views)], poses, size=size, backend=backend)
