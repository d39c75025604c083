"""Animated glTF/GLB -> per-frame triangle meshes with one topology (numpy evaluator).

Implements glTF 2.0 animation (spec §3.11): node TRS channels with STEP / LINEAR (slerp for rotations)
/ CUBICSPLINE samplers, the node hierarchy, skins (inverse bind matrices, any number of JOINTS_n /
WEIGHTS_n sets), morph targets with animated weights, mesh instancing and merged primitives.

    am = load_animated_mesh("Fox.glb", num_frames=32, clip="Walk")
    am.vertices  # [T, V, 3] float32, world space (glTF axes: +Y up, metres)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sculpt4d.errors import InputError
from sculpt4d.prep.gltf_io import GltfDocument

__all__ = ["AnimatedMesh", "Clip", "list_clips", "load_animated_mesh", "evaluate_channel"]

MODE_TRIANGLES, MODE_STRIP, MODE_FAN = 4, 5, 6


@dataclass
class AnimatedMesh:
    """Per-frame meshes sharing one topology."""

    vertices: np.ndarray  # [T, V, 3] float32
    faces: np.ndarray  # [F, 3] int64
    times: np.ndarray  # [T] float64 seconds (clip time of each frame)
    vertex_colors: np.ndarray | None = None  # [V, 4] uint8 (COLOR_0 x baseColorFactor)
    uvs: np.ndarray | None = None  # [V, 2] float32 (TEXCOORD_0; 0 where a primitive has none)
    texture: Any = None  # PIL.Image | None: baseColorTexture of the first textured primitive
    face_material: np.ndarray | None = None  # [F] int64 glTF material index (-1 = none)
    clip_name: str | None = None
    source: str = ""
    extras: dict = field(default_factory=dict)  # {"parts": [{node, name, mesh, start, stop}], "skinned", ..}

    @property
    def num_frames(self) -> int:
        return int(self.vertices.shape[0])

    def frame(self, t: int):
        """Frame ``t`` as a ``trimesh.Trimesh`` (process=False: vertex order kept)."""
        import trimesh

        vc = self.vertex_colors if self.vertex_colors is not None else None
        return trimesh.Trimesh(self.vertices[t], self.faces, vertex_colors=vc, process=False)


@dataclass
class Clip:
    index: int
    name: str
    start: float  # seconds
    end: float
    channels: list[dict]  # glTF channel dicts (sampler resolved)

    @property
    def duration(self) -> float:
        return self.end - self.start


# ---------------------------------------------------------------------------- math
def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """[..., 4] (x, y, z, w), normalised here -> [..., 3, 3] rotation matrices."""
    q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
    x, y, z, w = np.moveaxis(q, -1, 0)
    m = np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        axis=-1,
    )  # fmt: skip
    return m.reshape(q.shape[:-1] + (3, 3))


def trs_matrix(t: np.ndarray, r: np.ndarray, s: np.ndarray) -> np.ndarray:
    """T·R·S: [T,3], [T,4], [T,3] -> [T,4,4]."""
    n = t.shape[0]
    m = np.zeros((n, 4, 4))
    m[:, :3, :3] = quat_to_matrix(r) * s[:, None, :]
    m[:, :3, 3] = t
    m[:, 3, 3] = 1.0
    return m


def slerp(q0: np.ndarray, q1: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Shortest-path spherical interpolation of unit quaternions: [T,4], [T,4], [T] -> [T,4]."""
    q0 = q0 / np.linalg.norm(q0, axis=-1, keepdims=True)
    q1 = q1 / np.linalg.norm(q1, axis=-1, keepdims=True)
    d = np.sum(q0 * q1, axis=-1)
    q1 = np.where(d[:, None] < 0, -q1, q1)
    d = np.abs(d)
    s = s[:, None]
    theta = np.arccos(np.clip(d, -1.0, 1.0))[:, None]
    sin_t = np.sin(theta)
    near = (d > 0.9995)[:, None]  # nearly parallel: linear + renormalise
    safe = np.where(near, 1.0, sin_t)
    a = np.where(near, 1 - s, np.sin((1 - s) * theta) / safe)
    b = np.where(near, s, np.sin(s * theta) / safe)
    out = a * q0 + b * q1
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def evaluate_channel(
    inputs: np.ndarray, outputs: np.ndarray, interpolation: str, times: np.ndarray, rotation: bool = False
) -> np.ndarray:
    """Evaluate one sampler at ``times``; clamps outside the keyframe range.

    inputs [K] seconds; outputs [K, C] (or [3K, C] for CUBICSPLINE: in-tangent, value, out-tangent).
    Returns [T, C] float64.
    """
    inputs = np.asarray(inputs, np.float64)
    outputs = np.asarray(outputs, np.float64)
    k = inputs.shape[0]
    cubic = interpolation == "CUBICSPLINE"
    if cubic:
        outputs = outputs.reshape(k, 3, -1)
        a_tan, values, b_tan = outputs[:, 0], outputs[:, 1], outputs[:, 2]
    else:
        values = outputs.reshape(k, -1)
    times = np.asarray(times, np.float64)
    if k == 1:
        return np.repeat(values[:1], len(times), axis=0)
    tc = np.clip(times, inputs[0], inputs[-1])
    i = np.clip(np.searchsorted(inputs, tc, side="right") - 1, 0, k - 2)  # segment [i, i+1]
    t0, t1 = inputs[i], inputs[i + 1]
    td = np.maximum(t1 - t0, 1e-12)
    s = (tc - t0) / td
    if interpolation == "STEP":
        out = values[np.where(tc >= t1, i + 1, i)]
    elif cubic:
        s2, s3 = s * s, s * s * s
        h00, h10, h01, h11 = 2 * s3 - 3 * s2 + 1, s3 - 2 * s2 + s, -2 * s3 + 3 * s2, s3 - s2
        out = (
            h00[:, None] * values[i]
            + (h10 * td)[:, None] * b_tan[i]
            + h01[:, None] * values[i + 1]
            + (h11 * td)[:, None] * a_tan[i + 1]
        )
        if rotation:
            out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    elif rotation:
        out = slerp(values[i], values[i + 1], s)
    else:  # LINEAR (default)
        out = values[i] * (1 - s)[:, None] + values[i + 1] * s[:, None]
    return out


# ---------------------------------------------------------------------------- clips
def _clips(doc: GltfDocument) -> list[Clip]:
    clips = []
    for ai, anim in enumerate(doc.json.get("animations", [])):
        samplers = anim.get("samplers", [])
        channels, lo, hi = [], np.inf, -np.inf
        for ch in anim.get("channels", []):
            target = ch.get("target", {})
            if "node" not in target or target.get("path") not in (
                "translation",
                "rotation",
                "scale",
                "weights",
            ):
                continue  # e.g. KHR_animation_pointer targets: not geometry
            smp = samplers[ch["sampler"]]
            inp = doc.accessor(smp["input"])[:, 0].astype(np.float64)
            out = doc.accessor(smp["output"])
            channels.append(
                dict(
                    node=target["node"],
                    path=target["path"],
                    input=inp,
                    output=out,
                    interpolation=smp.get("interpolation", "LINEAR"),
                )
            )
            if len(inp):
                lo, hi = min(lo, float(inp.min())), max(hi, float(inp.max()))
        if channels:
            name = anim.get("name") or f"animation_{ai}"
            clips.append(Clip(ai, name, float(lo), float(hi), channels))
    return clips


def list_clips(path: str | Path) -> list[dict]:
    """Animation clips of a glTF file: ``[{"index", "name", "start", "end", "duration", "channels"}]``."""
    doc = GltfDocument(path)
    return [
        dict(
            index=c.index,
            name=c.name,
            start=c.start,
            end=c.end,
            duration=c.duration,
            channels=len(c.channels),
        )
        for c in _clips(doc)
    ]


def _select_clip(path: Path, clips: list[Clip], clip: str | int | None) -> Clip:
    names = [c.name for c in clips]
    if clip is None:
        return max(clips, key=lambda c: (c.duration, -c.index))  # longest; first on ties
    if isinstance(clip, (int, np.integer)):
        for c in clips:
            if c.index == clip:
                return c
        raise InputError(f"{path}: no animation clip with index {clip}; available: {names}")
    for c in clips:
        if c.name == clip:
            return c
    raise InputError(f"{path}: no animation clip named {clip!r}; available: {names}")


# ---------------------------------------------------------------------------- scene graph
def _rest_trs(node: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    if "matrix" in node:
        m = np.asarray(node["matrix"], np.float64).reshape(4, 4).T  # column-major
        return np.zeros(3), np.array([0, 0, 0, 1.0]), np.ones(3), m
    t = np.asarray(node.get("translation", [0, 0, 0]), np.float64)
    r = np.asarray(node.get("rotation", [0, 0, 0, 1]), np.float64)
    s = np.asarray(node.get("scale", [1, 1, 1]), np.float64)
    return t, r, s, None


def _world_matrices(
    doc: GltfDocument, clip: Clip | None, times: np.ndarray, roots: list[int]
) -> tuple[dict[int, np.ndarray], dict[int, dict]]:
    """World matrix of every node reachable from ``roots`` ({node: [T,4,4]}) and weight channels by node."""
    nodes = doc.json.get("nodes", [])
    n_t = len(times)
    by_node: dict[int, dict[str, dict]] = {}
    if clip is not None:
        for ch in clip.channels:
            by_node.setdefault(ch["node"], {})[ch["path"]] = ch

    def local(ni: int) -> np.ndarray:
        t, r, s, mat = _rest_trs(nodes[ni])
        chans = by_node.get(ni, {})
        if mat is not None and not any(p in chans for p in ("translation", "rotation", "scale")):
            return np.broadcast_to(mat, (n_t, 4, 4))
        if mat is not None:  # animated node given as matrix (invalid per spec): decompose the rest pose
            t = mat[:3, 3].copy()
            s = np.linalg.norm(mat[:3, :3], axis=0)
            r = _matrix_to_quat(mat[:3, :3] / s)
        vals = {}
        for p, rest in (("translation", t), ("rotation", r), ("scale", s)):
            ch = chans.get(p)
            if ch is None:
                vals[p] = np.broadcast_to(rest, (n_t, rest.shape[0]))
            else:
                vals[p] = evaluate_channel(
                    ch["input"], ch["output"], ch["interpolation"], times, p == "rotation"
                )
        return trs_matrix(vals["translation"], vals["rotation"], vals["scale"])

    world: dict[int, np.ndarray] = {}
    stack = [(r, np.broadcast_to(np.eye(4), (n_t, 4, 4))) for r in roots]
    while stack:
        ni, parent = stack.pop()
        if ni in world:
            continue  # malformed graph (node used twice): keep the first path
        w = parent @ local(ni)
        world[ni] = w
        for c in nodes[ni].get("children", []):
            stack.append((c, w))
    weights = {ni: chans["weights"] for ni, chans in by_node.items() if "weights" in chans}
    return world, weights


def _matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """3x3 rotation -> (x, y, z, w)."""
    w = np.sqrt(max(0.0, 1 + m[0, 0] + m[1, 1] + m[2, 2])) / 2
    x = np.copysign(np.sqrt(max(0.0, 1 + m[0, 0] - m[1, 1] - m[2, 2])) / 2, m[2, 1] - m[1, 2])
    y = np.copysign(np.sqrt(max(0.0, 1 - m[0, 0] + m[1, 1] - m[2, 2])) / 2, m[0, 2] - m[2, 0])
    z = np.copysign(np.sqrt(max(0.0, 1 - m[0, 0] - m[1, 1] + m[2, 2])) / 2, m[1, 0] - m[0, 1])
    return np.array([x, y, z, w])


def _scene_roots(doc: GltfDocument) -> list[int]:
    scenes = doc.json.get("scenes")
    if scenes:
        return list(scenes[doc.json.get("scene", 0)].get("nodes", []))
    nodes = doc.json.get("nodes", [])
    children = {c for n in nodes for c in n.get("children", [])}
    return [i for i in range(len(nodes)) if i not in children]


# ---------------------------------------------------------------------------- primitives
def _triangles(doc: GltfDocument, prim: dict, n_vert: int) -> np.ndarray | None:
    mode = prim.get("mode", MODE_TRIANGLES)
    idx = doc.accessor(prim["indices"], normalize=False)[:, 0].astype(np.int64) if "indices" in prim else None
    if idx is None:
        idx = np.arange(n_vert, dtype=np.int64)
    if mode == MODE_TRIANGLES:
        return idx[: len(idx) // 3 * 3].reshape(-1, 3)
    if mode == MODE_STRIP:
        n = len(idx) - 2
        if n <= 0:
            return np.zeros((0, 3), np.int64)
        k = np.arange(n)
        even = k % 2 == 0
        a, b, c = idx[k], idx[k + 1], idx[k + 2]
        return np.stack([a, np.where(even, b, c), np.where(even, c, b)], axis=1)
    if mode == MODE_FAN:
        n = len(idx) - 2
        if n <= 0:
            return np.zeros((0, 3), np.int64)
        k = np.arange(n)
        return np.stack([np.full(n, idx[0]), idx[k + 1], idx[k + 2]], axis=1)
    return None  # points / lines: no surface


def _skin_matrices(doc: GltfDocument, skin: dict, world: dict[int, np.ndarray]) -> np.ndarray:
    joints = skin["joints"]
    if "inverseBindMatrices" in skin:
        ibm = doc.accessor(skin["inverseBindMatrices"]).astype(np.float64)  # [J,4,4]
    else:
        ibm = np.broadcast_to(np.eye(4), (len(joints), 4, 4))
    jw = []
    for j in joints:
        if j not in world:  # joint outside the scene: spec says joints must be in it; use rest pose
            raise InputError(f"{doc.path}: skin joint node {j} is not part of the scene")
        jw.append(world[j])
    return np.stack(jw, axis=1) @ ibm[None]  # [T,J,4,4]


def _prim_positions(
    doc: GltfDocument, prim: dict, node_idx: int, mesh: dict, world: dict, weight_ch: dict, times: np.ndarray
) -> np.ndarray:
    """World-space positions of one primitive instance: [T, V, 3] float64."""
    node = doc.json["nodes"][node_idx]
    n_t = len(times)
    attrs = prim["attributes"]
    pos = doc.accessor(attrs["POSITION"]).astype(np.float64)  # [V,3]
    targets = prim.get("targets", [])
    if targets:
        n_m = len(targets)
        ch = weight_ch.get(node_idx)
        if ch is not None:
            w = evaluate_channel(ch["input"], ch["output"], ch["interpolation"], times)
            w = w.reshape(n_t, -1)[:, :n_m]
        else:
            rest = node.get("weights", mesh.get("weights", [0.0] * n_m))
            w = np.broadcast_to(np.asarray(rest, np.float64)[:n_m], (n_t, n_m))
        deltas = np.stack(
            [
                doc.accessor(t["POSITION"]).astype(np.float64) if "POSITION" in t else np.zeros_like(pos)
                for t in targets
            ]
        )  # [M,V,3]
        pos_t = pos[None] + np.einsum("tm,mvc->tvc", w, deltas)  # [T,V,3]
    else:
        pos_t = np.broadcast_to(pos, (n_t,) + pos.shape)
    ones = np.ones(pos_t.shape[:2] + (1,))
    hom = np.concatenate([pos_t, ones], axis=-1)  # [T,V,4]
    if "skin" in node and "JOINTS_0" in attrs:
        skin = doc.json["skins"][node["skin"]]
        jm = _skin_matrices(doc, skin, world)  # [T,J,4,4]
        v = pos.shape[0]
        acc = np.zeros((n_t, v, 4, 4))
        k = 0
        while f"JOINTS_{k}" in attrs and f"WEIGHTS_{k}" in attrs:
            ji = doc.accessor(attrs[f"JOINTS_{k}"], normalize=False).astype(np.int64)  # [V,4]
            wi = doc.accessor(attrs[f"WEIGHTS_{k}"]).astype(np.float64)  # [V,4]
            for c in range(ji.shape[1]):
                nz = wi[:, c] != 0
                if nz.any():
                    acc[:, nz] += wi[nz, c][None, :, None, None] * jm[:, ji[nz, c]]
            k += 1
        # Skinned vertices are in joint space: the mesh node's own transform is ignored (spec §3.7.3).
        return np.einsum("tvij,tvj->tvi", acc, hom)[..., :3]
    return np.einsum("tij,tvj->tvi", world[node_idx], hom)[..., :3]


def _to_u8(c: np.ndarray) -> np.ndarray:
    return np.clip(np.round(c * 255.0), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------- main entry
def load_animated_mesh(
    path: str | Path,
    num_frames: int = 32,
    clip: str | int | None = None,
    allow_static: bool = False,
    times: np.ndarray | None = None,
) -> AnimatedMesh:
    """Evaluate an animated glTF/GLB at ``num_frames`` evenly spaced times of one clip.

    ``clip``: name, index or None (the longest clip). Frames span [first, last] keyframe time inclusive
    (``times`` overrides them). Every mesh instance in the default scene is merged into one mesh.
    Raises InputError for a corrupt file, no triangle meshes, or no animation (unless ``allow_static``:
    then the rest pose is repeated ``num_frames`` times).
    """
    path = Path(path)
    if num_frames < 1:
        raise InputError(f"num_frames must be >= 1, got {num_frames}")
    doc = GltfDocument(path)
    try:
        return _load(doc, num_frames, clip, allow_static, times)
    except InputError:
        raise
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise InputError(f"{path}: malformed glTF ({type(e).__name__}: {e})") from None


def _load(doc: GltfDocument, num_frames: int, clip, allow_static: bool, times) -> AnimatedMesh:
    path = doc.path
    js = doc.json
    if not js.get("meshes"):
        raise InputError(f"{path}: contains no meshes")
    clips = _clips(doc)
    chosen: Clip | None
    if not clips:
        if not allow_static:
            raise InputError(
                f"{path}: has no animation (no node TRS / morph-weight channels); "
                "pass allow_static=true (prep config key) to repeat the rest pose"
            )
        chosen = None
        frame_times = np.zeros(num_frames) if times is None else np.asarray(times, np.float64)
    else:
        chosen = _select_clip(path, clips, clip)
        frame_times = (
            np.linspace(chosen.start, chosen.end, num_frames)
            if times is None
            else np.asarray(times, np.float64)
        )
    roots = _scene_roots(doc)
    world, weight_ch = _world_matrices(doc, chosen, frame_times, roots)

    materials = js.get("materials", [])
    verts, faces, colors, uvs, fmat = [], [], [], [], []
    has_color, has_uv, texture, offset, n_inst, skinned = False, False, None, 0, 0, False
    parts: list[dict] = []  # vertex range of every mesh instance (node), in merge order
    for ni in sorted(world):
        node = js["nodes"][ni]
        if "mesh" not in node:
            continue
        mesh = js["meshes"][node["mesh"]]
        n_inst += 1
        start = offset
        for prim in mesh.get("primitives", []):
            attrs = prim.get("attributes", {})
            if "POSITION" not in attrs:
                continue
            n_v = js["accessors"][attrs["POSITION"]]["count"]
            tri = _triangles(doc, prim, n_v)
            if tri is None or len(tri) == 0:
                continue
            if tri.max() >= n_v or tri.min() < 0:
                raise InputError(f"{path}: mesh {node['mesh']} has indices out of range")
            skinned |= "skin" in node and "JOINTS_0" in attrs
            verts.append(_prim_positions(doc, prim, ni, mesh, world, weight_ch, frame_times))
            faces.append(tri + offset)
            offset += n_v
            mat_i = prim.get("material", -1)
            mat = materials[mat_i] if 0 <= mat_i < len(materials) else {}
            pbr = mat.get("pbrMetallicRoughness", {})
            factor = np.asarray(pbr.get("baseColorFactor", [1, 1, 1, 1]), np.float64)
            col = np.broadcast_to(factor, (n_v, 4)).copy()
            if "COLOR_0" in attrs:
                c0 = doc.accessor(attrs["COLOR_0"]).astype(np.float64)
                if c0.shape[1] == 3:
                    c0 = np.concatenate([c0, np.ones((n_v, 1))], axis=1)
                col *= c0
                has_color = True
            has_color |= mat_i >= 0
            colors.append(_to_u8(col))
            tex_info = pbr.get("baseColorTexture")
            uv_key = f"TEXCOORD_{tex_info.get('texCoord', 0)}" if tex_info else "TEXCOORD_0"
            if uv_key in attrs:
                uvs.append(doc.accessor(attrs[uv_key]).astype(np.float32))
                has_uv = True
            else:
                uvs.append(np.zeros((n_v, 2), np.float32))
            if texture is None and tex_info is not None:
                tex = js.get("textures", [])[tex_info["index"]]
                src = tex.get("source")
                if src is None:  # e.g. KHR_texture_basisu / EXT_texture_webp sources
                    ext = tex.get("extensions", {})
                    src = next((e.get("source") for e in ext.values() if "source" in e), None)
                if src is not None:
                    texture = doc.image(src)
            fmat.append(np.full(len(tri), mat_i, np.int64))
        parts.append(
            dict(node=ni, name=node.get("name", f"node_{ni}"), mesh=node["mesh"], start=start, stop=offset)
        )
    if not verts:
        raise InputError(f"{path}: contains no triangle meshes in its scene")
    return AnimatedMesh(
        vertices=np.concatenate(verts, axis=1).astype(np.float32),
        faces=np.concatenate(faces).astype(np.int64),
        times=frame_times,
        vertex_colors=np.concatenate(colors) if has_color else None,
        uvs=np.concatenate(uvs) if has_uv else None,
        texture=texture,
        face_material=np.concatenate(fmat),
        clip_name=chosen.name if chosen else None,
        source=str(path),
        extras=dict(num_instances=n_inst, skinned=skinned, static=chosen is None, parts=parts),
    )
