"""Camera placement for multi-view renders: seeded, randomly shifted Hammersley points on a sphere.

Conventions (INTERFACES.md, transforms.json): camera-to-world 4x4 in OpenGL/Blender style — the
camera looks down its local -Z axis with +Y up. Angles are in degrees; elevation is measured from the
horizontal (XZ) plane towards +Y, azimuth around +Y with 0° looking at the object's front (+Z side).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CameraRange:
    """Where cameras may be placed. Defaults cover the full sphere, as the original release."""

    elevation: tuple[float, float] = (-90.0, 90.0)  # degrees
    azimuth: tuple[float, float] = (-180.0, 180.0)  # degrees; 0 = in front of the object (+Z)
    radius: float = 2.6  # distance to the look-at point (normalised units): the unit cube's bounding sphere fits a 40° fov
    fov: float = 40.0  # full vertical = horizontal field of view, degrees (square images)


def radical_inverse(i: np.ndarray, base: int = 2) -> np.ndarray:
    """Van der Corput radical inverse of integer array ``i`` in ``base`` -> floats in [0, 1)."""
    i = np.asarray(i, dtype=np.int64).copy()
    out = np.zeros(i.shape, dtype=np.float64)
    f = 1.0 / base
    while np.any(i > 0):
        out += f * (i % base)
        i //= base
        f /= base
    return out


def hammersley(n: int, seed: int | None = 0) -> np.ndarray:
    """``n`` 2D Hammersley points in [0,1)², Cranley-Patterson shifted by a seeded random offset.  # [n, 2]"""
    idx = np.arange(n)
    pts = np.stack([(idx + 0.5) / n, radical_inverse(idx, 2)], axis=1)
    if seed is not None:
        pts = (pts + np.random.default_rng(seed).random(2)) % 1.0
    return pts


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray | None = None) -> np.ndarray:
    """Camera-to-world matrix (OpenGL: looks down -Z, +Y up) at ``eye`` looking at ``target``.  # [4, 4]"""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    up = np.array([0.0, 1.0, 0.0]) if up is None else np.asarray(up, float)
    back = eye - target
    back /= np.linalg.norm(back)
    if abs(float(back @ up)) > 0.999:  # looking straight up/down: pick another up vector
        up = np.array([0.0, 0.0, -1.0]) if back[1] > 0 else np.array([0.0, 0.0, 1.0])
    right = np.cross(up, back)
    right /= np.linalg.norm(right)
    true_up = np.cross(back, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, true_up, back, eye
    return c2w


def spherical_to_eye(elevation: float, azimuth: float, radius: float) -> np.ndarray:
    """Eye position for angles in degrees (azimuth 0 -> +Z, 90 -> +X; elevation 90 -> +Y).  # [3]"""
    el, az = math.radians(elevation), math.radians(azimuth)
    return radius * np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])


def sample_cameras(num_views: int, rng: CameraRange = CameraRange(), seed: int | None = 0) -> np.ndarray:
    """``num_views`` camera-to-world matrices on shifted Hammersley points inside ``rng``.  # [V, 4, 4]

    Area-uniform on the sphere band: sin(elevation) is uniform in [sin(el_min), sin(el_max)].
    """
    u = hammersley(num_views, seed)
    s0, s1 = (math.sin(math.radians(e)) for e in rng.elevation)
    el = np.degrees(np.arcsin(np.clip(s0 + u[:, 1] * (s1 - s0), -1.0, 1.0)))
    az = rng.azimuth[0] + u[:, 0] * (rng.azimuth[1] - rng.azimuth[0])
    return np.stack([look_at(spherical_to_eye(e, a, rng.radius), np.zeros(3)) for e, a in zip(el, az)])


def focal_from_fov(fov_deg: float, size: int) -> float:
    """Focal length in pixels for a full field of view ``fov_deg`` across ``size`` pixels."""
    return 0.5 * size / math.tan(0.5 * math.radians(fov_deg))


def transforms_dict(c2w: np.ndarray, fov_deg: float, width: int, height: int) -> dict:
    """transforms.json content (INTERFACES.md) for camera-to-world matrices ``c2w`` [V, 4, 4]."""
    f = focal_from_fov(fov_deg, width)
    frames = [
        {
            "file_path": f"{i:03d}.png",
            "transform_matrix": m.tolist(),
            "fx": f,
            "fy": f,
            "cx": width / 2.0,
            "cy": height / 2.0,
        }
        for i, m in enumerate(np.asarray(c2w, dtype=float))
    ]
    return {"camera_angle_x": math.radians(fov_deg), "width": width, "height": height, "frames": frames}


def project(points: np.ndarray, frame: dict) -> tuple[np.ndarray, np.ndarray]:
    """Project world points [P, 3] with one transforms.json frame -> pixel (u, v) [P, 2], depth [P].

    Pixel v grows downwards (image rows); depth is the positive distance along the viewing axis.
    """
    c2w = np.asarray(frame["transform_matrix"], dtype=float)
    w2c = np.linalg.inv(c2w)
    pc = points @ w2c[:3, :3].T + w2c[:3, 3]
    depth = -pc[:, 2]
    u = frame["cx"] + frame["fx"] * pc[:, 0] / depth
    v = frame["cy"] - frame["fy"] * pc[:, 1] / depth
    return np.stack([u, v], axis=1), depth
