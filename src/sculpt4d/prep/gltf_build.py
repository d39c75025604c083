"""Closed mesh primitives and a small animated-GLB writer (pygltflib) for the procedural assets.

All primitives share vertices along their seams so each part is a closed, consistently wound (outward)
2-manifold: occupancy is well defined and ``trimesh`` reports it watertight.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pygltflib as gl

__all__ = ["box", "lathe", "capsule", "ellipsoid", "cylinder", "extrude", "quat_axis_angle", "GlbBuilder"]


# ------------------------------------------------------------------ closed primitives: (V[n,3], F[m,3])
def box(size, centre=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box, 8 vertices / 12 outward triangles."""
    s = np.asarray(size, np.float64) / 2
    v = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float64) * s + centre
    # vertex index = 4*(x>0) + 2*(y>0) + (z>0)
    f = np.array(
        [
            [0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5],  # -x, +x
            [0, 4, 5], [0, 5, 1], [2, 3, 7], [2, 7, 6],  # -y, +y
            [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3],  # -z, +z
        ]
    )  # fmt: skip
    return v, f


def lathe(radii, heights, segments: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Surface of revolution about +Y. ``radii[0]`` and ``radii[-1]`` must be 0 (poles) -> closed."""
    r = np.asarray(radii, np.float64)
    h = np.asarray(heights, np.float64)
    assert r[0] == 0 and r[-1] == 0 and len(r) >= 3
    a = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    rings = [
        np.stack([r[i] * np.cos(a), np.full(segments, h[i]), -r[i] * np.sin(a)], 1)
        for i in range(1, len(r) - 1)
    ]
    v = np.concatenate([[[0, h[0], 0]], *rings, [[0, h[-1], 0]]])
    n_ring, last = len(rings), len(v) - 1
    j = np.arange(segments)
    k = (j + 1) % segments
    faces = [np.stack([np.zeros(segments, int), 1 + k, 1 + j], 1)]  # bottom pole
    for i in range(n_ring - 1):
        a0, b0 = 1 + i * segments, 1 + (i + 1) * segments
        faces += [np.stack([a0 + j, a0 + k, b0 + k], 1), np.stack([a0 + j, b0 + k, b0 + j], 1)]
    top = 1 + (n_ring - 1) * segments
    faces.append(np.stack([np.full(segments, last), top + j, top + k], 1))
    return v, np.concatenate(faces)


def cylinder(radius: float, height: float, segments: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Closed cylinder along +Y centred at the origin."""
    return lathe([0, radius, radius, 0], [-height / 2, -height / 2, height / 2, height / 2], segments)


def ellipsoid(radii, rings: int = 12, segments: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Ellipsoid centred at the origin with semi-axes ``radii``."""
    th = np.linspace(-np.pi / 2, np.pi / 2, rings + 1)
    v, f = lathe(np.abs(np.cos(th)) * (np.arange(rings + 1) % rings != 0), np.sin(th), segments)
    return v * np.asarray(radii, np.float64), f


def capsule(radius: float, length: float, rings: int = 16, cap_rings: int = 4, segments: int = 20):
    """Tube of ``length`` along -Y from the origin with rounded ends (radius ``radius``); many rings for skinning."""
    cap = np.linspace(0, np.pi / 2, cap_rings + 1)[1:]
    r = [0.0, *(radius * np.sin(cap))]
    y = [0.0, *(radius * (1 - np.cos(cap)))]
    body = np.linspace(radius, length - radius, rings)[1:-1]
    r += [radius] * len(body)
    y += list(body)
    r += list(radius * np.sin(cap[::-1])) + [0.0]
    y += list(length - radius * (1 - np.cos(cap[::-1]))) + [length]
    v, f = lathe(r, -np.asarray(y), segments)
    return v, f[:, ::-1]  # heights descend: flip winding to keep normals outward


def extrude(outline: np.ndarray, depth: float) -> tuple[np.ndarray, np.ndarray]:
    """Prism from a CCW outline [n,2] in XY that is star-shaped w.r.t. the origin, Z in [-depth/2, depth/2]."""
    n = len(outline)
    zb, zt = -depth / 2, depth / 2
    v = np.concatenate(
        [
            np.c_[outline, np.full(n, zb)],
            np.c_[outline, np.full(n, zt)],
            [[0, 0, zb], [0, 0, zt]],
        ]
    )
    j = np.arange(n)
    k = (j + 1) % n
    cb, ct = 2 * n, 2 * n + 1
    faces = [
        np.stack([j, k, n + k], 1),
        np.stack([j, n + k, n + j], 1),  # sides
        np.stack([np.full(n, cb), k, j], 1),  # bottom (-z)
        np.stack([np.full(n, ct), n + j, n + k], 1),  # top (+z)
    ]
    return v, np.concatenate(faces)


def quat_axis_angle(axis, angle_rad) -> np.ndarray:
    """Quaternions (x, y, z, w) for rotations by ``angle_rad`` [K] about ``axis``: [K,4]."""
    ax = np.asarray(axis, np.float64)
    ax = ax / np.linalg.norm(ax)
    a = np.atleast_1d(np.asarray(angle_rad, np.float64))
    return np.concatenate([np.sin(a / 2)[:, None] * ax, np.cos(a / 2)[:, None]], 1)


# ------------------------------------------------------------------ writer
class GlbBuilder:
    """Accumulates nodes / meshes / materials / one skin / one animation and writes a GLB."""

    def __init__(self):
        self.g = gl.GLTF2(asset=gl.Asset(version="2.0", generator="sculpt4d.prep.procedural"))
        self.blob = bytearray()
        self.anim = gl.Animation(name="motion", channels=[], samplers=[])

    def _view(self, data: bytes, target: int | None = None) -> int:
        self.blob += b"\0" * (-len(self.blob) % 4)
        self.g.bufferViews.append(
            gl.BufferView(buffer=0, byteOffset=len(self.blob), byteLength=len(data), target=target)
        )
        self.blob += data
        return len(self.g.bufferViews) - 1

    def accessor(
        self, arr: np.ndarray, kind: str, ctype: int = gl.FLOAT, target: int | None = None, bounds=False
    ) -> int:
        dt = {
            gl.FLOAT: np.float32,
            gl.UNSIGNED_SHORT: np.uint16,
            gl.UNSIGNED_INT: np.uint32,
            gl.UNSIGNED_BYTE: np.uint8,
        }
        a = np.ascontiguousarray(arr, dtype=dt[ctype])
        count = a.shape[0]
        if kind == "MAT4":
            a = np.ascontiguousarray(a.transpose(0, 2, 1))  # column-major
        flat = a.reshape(count, -1)
        acc = gl.Accessor(
            bufferView=self._view(a.tobytes(), target), componentType=ctype, count=count, type=kind
        )
        if bounds:
            acc.min, acc.max = flat.min(0).tolist(), flat.max(0).tolist()
        self.g.accessors.append(acc)
        return len(self.g.accessors) - 1

    def material(self, rgba, name: str = "") -> int:
        pbr = gl.PbrMetallicRoughness(
            baseColorFactor=[float(c) for c in rgba], metallicFactor=0.0, roughnessFactor=0.7
        )
        self.g.materials.append(gl.Material(name=name, pbrMetallicRoughness=pbr, doubleSided=False))
        return len(self.g.materials) - 1

    def mesh(
        self, name: str, parts: list[tuple[np.ndarray, np.ndarray, int]], joints=None, weights=None
    ) -> int:
        """``parts``: [(V[n,3], F[m,3], material)], one primitive each. joints/weights: per part [n,4] or None."""
        prims = []
        for i, (v, f, mat) in enumerate(parts):
            attrs = gl.Attributes(POSITION=self.accessor(v, "VEC3", target=gl.ARRAY_BUFFER, bounds=True))
            if joints is not None:
                attrs.JOINTS_0 = self.accessor(joints[i], "VEC4", gl.UNSIGNED_SHORT, gl.ARRAY_BUFFER)
                attrs.WEIGHTS_0 = self.accessor(weights[i], "VEC4", target=gl.ARRAY_BUFFER)
            ind = self.accessor(
                np.asarray(f).reshape(-1, 1), "SCALAR", gl.UNSIGNED_INT, gl.ELEMENT_ARRAY_BUFFER
            )
            prims.append(gl.Primitive(attributes=attrs, indices=ind, material=mat, mode=gl.TRIANGLES))
        self.g.meshes.append(gl.Mesh(name=name, primitives=prims))
        return len(self.g.meshes) - 1

    def node(self, name: str, parent: int | None = None, mesh: int | None = None, translation=None, rotation=None,
             scale=None, skin: int | None = None) -> int:  # fmt: skip
        n = gl.Node(name=name, mesh=mesh, skin=skin, children=[])
        if translation is not None:
            n.translation = [float(x) for x in translation]
        if rotation is not None:
            n.rotation = [float(x) for x in rotation]
        if scale is not None:
            n.scale = [float(x) for x in scale]
        self.g.nodes.append(n)
        idx = len(self.g.nodes) - 1
        if parent is not None:
            self.g.nodes[parent].children.append(idx)
        return idx

    def skin(self, joints: list[int], inverse_bind: np.ndarray, skeleton: int) -> int:
        ibm = self.accessor(inverse_bind, "MAT4")
        self.g.skins.append(gl.Skin(joints=joints, inverseBindMatrices=ibm, skeleton=skeleton))
        return len(self.g.skins) - 1

    def channel(self, node: int, path: str, times: np.ndarray, values: np.ndarray) -> None:
        """LINEAR channel; times [K] seconds, values [K, 3|4]."""
        inp = self.accessor(np.asarray(times).reshape(-1, 1), "SCALAR", bounds=True)
        out = self.accessor(values, "VEC4" if values.shape[1] == 4 else "VEC3")
        self.anim.samplers.append(gl.AnimationSampler(input=inp, output=out, interpolation="LINEAR"))
        self.anim.channels.append(
            gl.AnimationChannel(
                sampler=len(self.anim.samplers) - 1, target=gl.AnimationChannelTarget(node=node, path=path)
            )
        )

    def save(self, path: str | Path, roots: list[int], extras: dict | None = None) -> None:
        g = self.g
        for n in g.nodes:
            if not n.children:
                n.children = None  # schema: minItems 1 when present
        g.scenes = [gl.Scene(nodes=roots)]
        g.scene = 0
        if self.anim.channels:
            g.animations = [self.anim]
        if extras:
            g.asset.extras = extras
        self.blob += b"\0" * (-len(self.blob) % 4)
        g.buffers = [gl.Buffer(byteLength=len(self.blob))]
        g.set_binary_blob(bytes(self.blob))
        g.save_binary(str(path))
