"""One animated binary glTF (.glb) for a mesh sequence, written with pygltflib (no Blender).

``mode="visibility"`` (works for any sequence): one node per frame, each with its own mesh; a single
animation with one STEP channel per node on ``scale`` shows node t (scale 1) during
[t/fps, (t+1)/fps) and hides the others (scale 0). Key times are ``k/fps`` for k = 0..T — the extra
last key holds the final frame for a full frame period so looping viewers show every frame equally
long. Without animation support a viewer shows frame 0 (the nodes' rest scale).

``mode="morph"`` (all frames share vertex count and faces): one mesh whose base is frame 0 and whose
morph target t-1 moves it to frame t; one LINEAR channel on ``weights`` (key k/fps, k = 0..T-1), so
playback interpolates smoothly between frames. Far smaller files for fixed-topology sequences.

``mode="auto"`` picks morph when the topology is shared, else visibility.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pygltflib as gl
import trimesh

from sculpt4d.errors import InputError
from sculpt4d.utils.io import atomic_path

DEFAULT_COLOR = (0.7, 0.7, 0.7, 1.0)


class _Blob:
    """Accumulates binary data and the bufferViews/accessors that describe it."""

    def __init__(self, gltf: gl.GLTF2):
        self.gltf = gltf
        self.chunks: list[bytes] = []
        self.size = 0

    def add(
        self, array: np.ndarray, accessor_type: str, target: int | None = None, minmax: bool = False
    ) -> int:
        array = np.ascontiguousarray(array)
        component = {np.dtype(np.float32): gl.FLOAT, np.dtype(np.uint32): gl.UNSIGNED_INT}[array.dtype]
        data = array.tobytes()
        view = gl.BufferView(buffer=0, byteOffset=self.size, byteLength=len(data), target=target)
        self.chunks.append(data)
        self.size += len(data)
        pad = (-self.size) % 4
        if pad:
            self.chunks.append(b"\x00" * pad)
            self.size += pad
        self.gltf.bufferViews.append(view)
        flat = array.reshape(len(array), -1)
        acc = gl.Accessor(
            bufferView=len(self.gltf.bufferViews) - 1,
            componentType=component,
            count=len(array),
            type=accessor_type,
            min=flat.min(axis=0).tolist() if minmax else None,
            max=flat.max(axis=0).tolist() if minmax else None,
        )
        self.gltf.accessors.append(acc)
        return len(self.gltf.accessors) - 1

    def finish(self) -> None:
        blob = b"".join(self.chunks)
        self.gltf.buffers = [gl.Buffer(byteLength=len(blob))]
        self.gltf.set_binary_blob(blob)


def _frame_color(colors: Any, t: int, num_vertices: int) -> tuple[tuple[float, ...], np.ndarray | None]:
    """(material RGBA, optional per-vertex RGBA float32 [V,4]) of frame ``t``."""
    if colors is None:
        return DEFAULT_COLOR, None
    try:
        single = np.asarray(colors, dtype=np.float64).ndim == 1  # one colour for all frames
    except ValueError:  # ragged: per-frame entries of different kinds
        single = False
    c = np.asarray(colors if single else colors[t], dtype=np.float64)
    if c.max(initial=0.0) > 1.0:
        c = c / 255.0
    if c.ndim == 2:
        if len(c) != num_vertices:
            raise InputError(f"colors[{t}] has {len(c)} rows but frame {t} has {num_vertices} vertices")
        rgba = np.concatenate([c[:, :3], np.ones((len(c), 1))], axis=1) if c.shape[1] == 3 else c[:, :4]
        return (1.0, 1.0, 1.0, 1.0), rgba.astype(np.float32)
    rgba = tuple(float(x) for x in c[:3]) + ((float(c[3]),) if len(c) > 3 else (1.0,))
    return rgba, None


def _material(gltf: gl.GLTF2, rgba: tuple[float, ...]) -> int:
    gltf.materials.append(
        gl.Material(
            pbrMetallicRoughness=gl.PbrMetallicRoughness(
                baseColorFactor=list(rgba), metallicFactor=0.0, roughnessFactor=0.9
            ),
            doubleSided=True,
        )
    )
    return len(gltf.materials) - 1


def _valid(mesh: trimesh.Trimesh) -> bool:
    return len(mesh.faces) > 0 and len(mesh.vertices) > 0 and bool(np.isfinite(mesh.vertices).all())


def _shared_topology(meshes: Sequence[trimesh.Trimesh]) -> bool:
    f0 = np.asarray(meshes[0].faces)
    return all(_valid(m) for m in meshes) and all(
        len(m.vertices) == len(meshes[0].vertices) and np.array_equal(np.asarray(m.faces), f0) for m in meshes
    )


def _build_visibility(
    gltf: gl.GLTF2, blob: _Blob, meshes: Sequence[trimesh.Trimesh], fps: float, colors: Any
) -> None:
    T = len(meshes)
    for t, mesh in enumerate(meshes):
        node = gl.Node(name=f"frame_{t:04d}", scale=[1.0, 1.0, 1.0] if t == 0 else [0.0, 0.0, 0.0])
        if _valid(mesh):
            rgba, vcol = _frame_color(colors, t, len(mesh.vertices))
            attrs = gl.Attributes(
                POSITION=blob.add(
                    np.asarray(mesh.vertices, np.float32), gl.VEC3, gl.ARRAY_BUFFER, minmax=True
                ),
                NORMAL=blob.add(np.asarray(mesh.vertex_normals, np.float32), gl.VEC3, gl.ARRAY_BUFFER),
            )
            if vcol is not None:
                attrs.COLOR_0 = blob.add(vcol, gl.VEC4, gl.ARRAY_BUFFER)
            idx = blob.add(np.asarray(mesh.faces, np.uint32).reshape(-1), gl.SCALAR, gl.ELEMENT_ARRAY_BUFFER)
            gltf.meshes.append(
                gl.Mesh(
                    name=f"frame_{t:04d}",
                    primitives=[gl.Primitive(attributes=attrs, indices=idx, material=_material(gltf, rgba))],
                )
            )
            node.mesh = len(gltf.meshes) - 1
        gltf.nodes.append(node)
    times = blob.add(np.arange(T + 1, dtype=np.float32) / np.float32(fps), gl.SCALAR, minmax=True)
    samplers, channels = [], []
    for t in range(T):
        visible = np.zeros((T + 1, 3), np.float32)
        visible[t] = 1.0
        if t == T - 1:
            visible[T] = 1.0
        samplers.append(
            gl.AnimationSampler(input=times, output=blob.add(visible, gl.VEC3), interpolation="STEP")
        )
        channels.append(
            gl.AnimationChannel(sampler=t, target=gl.AnimationChannelTarget(node=t, path="scale"))
        )
    gltf.animations.append(gl.Animation(name="sequence", samplers=samplers, channels=channels))
    gltf.scenes[0].nodes = list(range(T))


def _build_morph(
    gltf: gl.GLTF2, blob: _Blob, meshes: Sequence[trimesh.Trimesh], fps: float, colors: Any
) -> None:
    T = len(meshes)
    base = meshes[0]
    v0 = np.asarray(base.vertices, np.float32)
    n0 = np.asarray(base.vertex_normals, np.float32)
    rgba, vcol = _frame_color(colors, 0, len(v0))
    attrs = gl.Attributes(
        POSITION=blob.add(v0, gl.VEC3, gl.ARRAY_BUFFER, minmax=True),
        NORMAL=blob.add(n0, gl.VEC3, gl.ARRAY_BUFFER),
    )
    if vcol is not None:
        attrs.COLOR_0 = blob.add(vcol, gl.VEC4, gl.ARRAY_BUFFER)
    targets = []
    for m in meshes[1:]:
        dv = np.asarray(m.vertices, np.float32) - v0
        dn = np.asarray(m.vertex_normals, np.float32) - n0
        targets.append(
            {
                "POSITION": blob.add(dv, gl.VEC3, gl.ARRAY_BUFFER, minmax=True),
                "NORMAL": blob.add(dn, gl.VEC3, gl.ARRAY_BUFFER),
            }
        )
    idx = blob.add(np.asarray(base.faces, np.uint32).reshape(-1), gl.SCALAR, gl.ELEMENT_ARRAY_BUFFER)
    prim = gl.Primitive(
        attributes=attrs, indices=idx, material=_material(gltf, rgba), targets=targets or None
    )
    gltf.meshes.append(gl.Mesh(name="sequence", primitives=[prim], weights=[0.0] * (T - 1) or None))
    gltf.nodes.append(gl.Node(name="sequence", mesh=0))
    gltf.scenes[0].nodes = [0]
    if T > 1:
        times = blob.add(np.arange(T, dtype=np.float32) / np.float32(fps), gl.SCALAR, minmax=True)
        weights = np.zeros((T, T - 1), np.float32)
        weights[np.arange(1, T), np.arange(T - 1)] = 1.0
        sampler = gl.AnimationSampler(
            input=times, output=blob.add(weights.reshape(-1), gl.SCALAR), interpolation="LINEAR"
        )
        channel = gl.AnimationChannel(sampler=0, target=gl.AnimationChannelTarget(node=0, path="weights"))
        gltf.animations.append(gl.Animation(name="sequence", samplers=[sampler], channels=[channel]))


def write_animated_glb(
    meshes: Sequence[trimesh.Trimesh],
    path: str | os.PathLike,
    fps: float = 8.0,
    colors: Any = None,
    mode: str = "visibility",
) -> Path:
    """Write ``meshes`` as ONE animated ``.glb`` playing at ``fps`` frames per second (see module doc).

    ``colors``: None (light grey), one RGB(A) for all frames, or one entry per frame, each an RGB(A)
    (material colour) or a [V, 3|4] per-vertex colour array; values in [0, 1] (or 0..255).
    ``mode``: ``visibility`` | ``morph`` | ``auto``. Empty frames keep their node (and timing) with no mesh.
    """
    if len(meshes) == 0:
        raise InputError("write_animated_glb: no meshes to write")
    if not fps > 0:
        raise InputError(f"write_animated_glb: fps must be positive, got {fps}")
    if mode == "auto":
        mode = "morph" if _shared_topology(meshes) else "visibility"
    if mode == "morph" and not _shared_topology(meshes):
        raise InputError(
            "write_animated_glb(mode='morph') needs every frame to share vertex count and faces; use mode='visibility'"
        )
    if mode not in ("visibility", "morph"):
        raise InputError(f"write_animated_glb: unknown mode {mode!r} (visibility | morph | auto)")
    gltf = gl.GLTF2(scene=0, scenes=[gl.Scene(nodes=[])], asset=gl.Asset(generator="sculpt4d", version="2.0"))
    blob = _Blob(gltf)
    (_build_morph if mode == "morph" else _build_visibility)(gltf, blob, meshes, float(fps), colors)
    blob.finish()
    path = Path(path)
    with atomic_path(path) as tmp:
        gltf.save_binary(str(tmp))
    return path


def read_glb_animation(path: str | os.PathLike) -> dict[str, Any]:
    """Summary of an animated .glb for checks: node/mesh counts, channels, interpolations, key times."""
    gltf = gl.GLTF2().load(str(path))
    blob = gltf.binary_blob()
    out: dict[str, Any] = dict(
        nodes=len(gltf.nodes), meshes=len(gltf.meshes), animations=len(gltf.animations)
    )
    if gltf.animations:
        anim = gltf.animations[0]
        out["channels"] = [(c.target.node, c.target.path) for c in anim.channels]
        out["interpolations"] = sorted({s.interpolation for s in anim.samplers})
        acc = gltf.accessors[anim.samplers[0].input]
        view = gltf.bufferViews[acc.bufferView]
        start = (view.byteOffset or 0) + (acc.byteOffset or 0)
        out["times"] = np.frombuffer(blob, np.float32, count=acc.count, offset=start).copy()
    return out
