"""The per-object prep stages: frames (animation -> normalised frame meshes), render (RGBA views) and sample
(tracked surface points + occupancy queries). Each writes atomically; :mod:`sculpt4d.prep.runner` records them.

Layout written under ``obj_dir`` (design.md §6 + INTERFACES extension):
    render_cond/frame_XXXX/{mesh.ply, 000.png.., transforms.json}
    geo_data/4d_sample_new.npz, geo_data/4d_volume.npz, meta.json
Every mesh.ply is already in the sequence normalisation ([-0.5, 0.5], motion kept), so renders,
transforms.json and the point clouds share one coordinate frame.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from sculpt4d.errors import InputError, MissingDependencyError
from sculpt4d.prep import sampling as S
from sculpt4d.prep.cameras import CameraRange, sample_cameras, transforms_dict
from sculpt4d.prep.meshio import frame_dir, list_frames, read_ply, write_ply
from sculpt4d.prep.params import PrepParams, object_seed
from sculpt4d.prep.watertight import field_occupancy, watertight_field
from sculpt4d.utils.io import atomic_path, write_json

Progress = Callable[[str, int, int], None]  # (stage, done, total)


# ------------------------------------------------------------------------------ animation evaluation
def load_animation(path: Path, p: PrepParams):
    """Animated mesh from a GLB with the chosen backend (AnimatedMesh-like)."""
    if p.backend == "numpy":
        from sculpt4d.prep.gltf_anim import load_animated_mesh

        return load_animated_mesh(path, num_frames=p.num_frames, clip=p.clip, allow_static=p.allow_static)
    if p.backend == "blender":
        return _blender_module().load_animated_mesh_blender(path, num_frames=p.num_frames, clip=p.clip)
    raise InputError(f"unknown animation backend {p.backend!r}; choose numpy or blender")


def _blender_module():
    """PREP-A's Blender backend (bpy in its own venv, run as a subprocess); a clear error without it."""
    from sculpt4d.prep import blender_backend as mod

    if not mod.blender_available():
        raise MissingDependencyError(
            "bpy",
            "Blender animation export (backend=blender, input_mode=hybrid|export)",
            alternative="backend=numpy input_mode=render",
            hint="make install-blender (or set SCULPT4D_BLENDER_PYTHON)",
        )
    return mod


def vertex_colors_of(am) -> np.ndarray | None:
    """Vertex colours [V,4] uint8, with the base-colour texture baked in at each vertex's UV."""
    colors = None if am.vertex_colors is None else np.asarray(am.vertex_colors, dtype=np.float64)
    tex, uvs = getattr(am, "texture", None), getattr(am, "uvs", None)
    if tex is not None and uvs is not None:
        img = np.asarray(tex.convert("RGBA"), dtype=np.float64)  # [H, W, 4]
        h, w = img.shape[:2]
        uv = np.asarray(uvs, dtype=np.float64) % 1.0
        px = img[np.clip((uv[:, 1] * h).astype(int), 0, h - 1), np.clip((uv[:, 0] * w).astype(int), 0, w - 1)]
        colors = px if colors is None else colors * px / 255.0
    return None if colors is None else np.clip(np.round(colors), 0, 255).astype(np.uint8)


def stage_frames(src: Path, obj_dir: Path, p: PrepParams, progress: Progress | None = None) -> dict:
    """Evaluate the animation, normalise the sequence, write frame_XXXX/mesh.ply and meta.json."""
    am = load_animation(src, p)
    verts = np.asarray(am.vertices, dtype=np.float64)  # [T, V, 3]
    faces = np.asarray(am.faces, dtype=np.int64)
    if verts.ndim != 3 or len(faces) == 0 or not np.isfinite(verts).all():
        raise InputError(f"{src}: animation produced no usable triangle mesh")
    centre, scale = S.sequence_normalisation([verts.reshape(-1, 3)])
    colors = vertex_colors_of(am)
    for t in range(len(verts)):
        write_ply(frame_dir(obj_dir, t) / "mesh.ply", (verts[t] - centre) / scale, faces, colors)
        if progress:
            progress("frames", t + 1, len(verts))
    extras = getattr(am, "extras", {}) or {}
    gen = _glb_generator_meta(src)
    meta = dict(
        name=obj_dir.name,
        source=str(src),
        category=gen.get("category", p.extra_meta.get("category")),
        seed=gen.get("seed", p.extra_meta.get("seed")),
        num_frames=int(len(verts)),
        clip=getattr(am, "clip_name", None),
        times=np.asarray(am.times, dtype=float).tolist(),
        num_vertices=int(verts.shape[1]),
        num_faces=int(len(faces)),
        has_colors=colors is not None,
        skinned=bool(extras.get("skinned", False)) if isinstance(extras, dict) else False,
        mesh_normalisation=dict(centre=centre.tolist(), scale=scale),
        normalisation=dict(centre=centre.tolist(), scale=scale),
    )
    write_json(obj_dir / "meta.json", meta)
    return meta


def _glb_generator_meta(src: Path) -> dict:
    """The procedural generator's metadata stored in the GLB's scene extras, if any."""
    try:
        from sculpt4d.prep.gltf_io import GltfDocument

        doc = GltfDocument(src)
        gltf = doc.json
        for holder in (gltf.get("asset", {}), gltf, *gltf.get("scenes", [])):
            meta = (holder.get("extras") or {}).get("sculpt4d")
            if meta:
                return meta
        return {}
    except Exception:
        return {}


# ------------------------------------------------------------------------------------------ rendering
def stage_render(obj_dir: Path, p: PrepParams, progress: Progress | None = None) -> dict:
    """Render ``num_views`` RGBA views of every frame; the same cameras for all frames of an object. Their
    alpha boxes go to ``render_cond/alpha_boxes.json`` (:mod:`sculpt4d.data.alpha_boxes`)."""
    from sculpt4d.data.alpha_boxes import render_boxes, write_alpha_boxes
    from sculpt4d.prep.multiview import Renderer

    frames = list_frames(obj_dir)
    if not frames:
        raise InputError(f"{obj_dir}: no render_cond/frame_XXXX/mesh.ply (run the frames stage)")
    rng = CameraRange(tuple(p.elevation), tuple(p.azimuth), p.radius, p.fov)
    c2w = sample_cameras(p.num_views, rng, seed=object_seed(obj_dir.name, p.seed))
    tf = transforms_dict(c2w, p.fov, p.resolution, p.resolution)
    boxes = {}  # frame -> view -> alpha box: the loader's sequence crop without decoding every PNG
    with Renderer(p.resolution, p.fov, backend=p.render_backend, shading=p.shading) as r:
        for t, fd in enumerate(frames):
            v, f, c = read_ply(fd / "mesh.ply")
            imgs = r.render(v, f, c, c2w)
            for i, img in enumerate(imgs):
                with atomic_path(fd / f"{i:03d}.png") as tmp:
                    Image.fromarray(img, "RGBA").save(tmp, compress_level=1)
            write_json(fd / "transforms.json", tf)
            boxes[fd.name] = render_boxes(imgs)
            if progress:
                progress("render", t + 1, len(frames))
        backend = r.backend
    write_alpha_boxes(obj_dir, boxes)
    return dict(render_backend=backend)


# ------------------------------------------------------------------------------------------- sampling
def _frames_for_sampling(obj_dir: Path, p: PrepParams, meta: dict):
    """(rest (V,F), frames [(V,F)]) in the mesh.ply normalisation, according to ``input_mode``."""
    frames = [read_ply(fd / "mesh.ply")[:2] for fd in list_frames(obj_dir)]
    if not frames:
        raise InputError(f"{obj_dir}: no frame meshes (run the frames stage)")
    if p.input_mode == "render":
        return frames[0], frames
    if p.input_mode not in ("hybrid", "export"):
        raise InputError(f"unknown input_mode {p.input_mode!r}; choose render, hybrid or export")
    mod = _blender_module()
    src = Path(meta["source"])
    c, s = np.asarray(meta["mesh_normalisation"]["centre"]), float(meta["mesh_normalisation"]["scale"])
    first = mod.load_animated_mesh_blender(src, num_frames=1, clip=p.clip)  # its first frame is the rest pose
    rv, rf = first.vertices[0], first.faces  # Blender's topology may differ: track() re-attaches
    rest = ((np.asarray(rv, np.float64) - c) / s, np.asarray(rf, np.int64))
    if p.input_mode == "hybrid":
        return rest, frames
    am = mod.load_animated_mesh_blender(src, num_frames=len(frames), clip=p.clip)
    return rest, [((np.asarray(v, np.float64) - c) / s, np.asarray(am.faces, np.int64)) for v in am.vertices]


def _track_watertight(obj_dir: Path, p: PrepParams, rest, frames, rng, progress):
    """Samples tracked onto each frame's ``grid_res`` watertight remesh; labels from its winding field."""
    wts, fields = [], []
    for t, (v, f) in enumerate(frames):
        wv, wf, w, grid = watertight_field(v, f, p.grid_res, narrow_band=p.narrow_band)
        fields.append((w, grid))
        if len(wf) == 0:
            raise InputError(f"{obj_dir.name} frame {t}: the watertight surface is empty (the mesh encloses "
                             "no volume, e.g. a single open sheet)")  # fmt: skip
        wts.append((wv, wf))
        if progress:
            progress("watertight", t + 1, len(frames))
    rnd = S.sample_uniform(*rest, p.pc_random, rng)
    shp, n_sharp_edges = S.sample_sharp(*rest, p.pc_sharp, rng, p.sharp_angle)
    both = S.SurfaceSamples(np.concatenate([rnd.face, shp.face]), np.concatenate([rnd.bary, shp.bary]))
    tr = S.track(both, rest, frames, wts)  # one closest-point query per frame for both kinds
    nr = p.pc_random
    tr_r = S.Tracked([x[:nr] for x in tr.points], [x[:nr] for x in tr.normals], tr.topology_changes)
    tr_s = S.Tracked([x[nr:] for x in tr.points], [x[nr:] for x in tr.normals], tr.topology_changes)
    occupancy_of = [lambda q, w=w, grid=grid: field_occupancy(w, grid, q) for w, grid in fields]
    return tr_r, tr_s, n_sharp_edges, wts, occupancy_of


def stage_sample(obj_dir: Path, p: PrepParams, progress: Progress | None = None) -> dict:
    """Track random + sharp samples through every frame (``labels``: on a watertight remesh or on the exact
    frame meshes), write 4d_sample_new.npz + 4d_volume.npz (occupancy queries labelled the same way)."""
    meta = json.loads((obj_dir / "meta.json").read_text())
    rest, frames = _frames_for_sampling(obj_dir, p, meta)
    rng = np.random.default_rng(object_seed(obj_dir.name, p.seed))
    if p.labels == "exact":
        tr_r, tr_s, n_sharp_edges = S.track_exact(rest, frames, p.pc_random, p.pc_sharp, rng, p.sharp_angle)
        wts = frames
        occupancy_of = [lambda q, v=v, f=f: S.occupancy(v, f, q) for v, f in frames]
    elif p.labels == "watertight":
        tr_r, tr_s, n_sharp_edges, wts, occupancy_of = _track_watertight(
            obj_dir, p, rest, frames, rng, progress
        )
    else:
        raise InputError(f"unknown labels {p.labels!r}; choose watertight or exact")
    if progress:
        progress("sample", len(frames), len(frames))
    centre, scale = S.sequence_normalisation([*tr_r.points, *tr_s.points, *(v for v, _ in frames)])
    out: dict[str, np.ndarray] = {}
    for t in range(len(frames)):
        for key, tr in (("random_surface", tr_r), ("sharp_surface", tr_s)):
            xyz = S.normalise(tr.points[t], centre, scale)
            out[f"frame_{t:04d}/{key}"] = np.concatenate([xyz, tr.normals[t]], 1).astype(np.float16)
    with atomic_path(obj_dir / "geo_data" / "4d_sample_new.npz") as tmp:
        np.savez_compressed(tmp, **out)
    # occupancy samples: the same near-surface indices / offsets and uniform points for every frame
    m = p.volume_size
    near_idx = rng.choice(p.pc_random, size=m // 2, replace=m // 2 > p.pc_random)
    near_off = rng.normal(0.0, 0.01, size=(m // 2, 3))
    uni = rng.uniform(-0.55, 0.55, size=(m - m // 2, 3))
    vol: dict[str, np.ndarray] = {}
    for t, occupancy in enumerate(occupancy_of):
        q = np.concatenate([S.normalise(tr_r.points[t][near_idx], centre, scale) + near_off, uni]).astype(
            np.float16
        )
        vol[f"frame_{t:04d}/points"] = q
        occ = occupancy(q.astype(np.float64) * scale + centre)  # back to mesh coordinates
        vol[f"frame_{t:04d}/occupancy"] = occ.astype(np.uint8)
    with atomic_path(obj_dir / "geo_data" / "4d_volume.npz") as tmp:
        np.savez_compressed(tmp, **vol)
    # source -> npz coordinates: (x - c1)/s1 then (y - c2)/s2  ==  (x - (c1 + s1 c2)) / (s1 s2)
    c1, s1 = np.asarray(meta["mesh_normalisation"]["centre"]), float(meta["mesh_normalisation"]["scale"])
    changes = list(tr_r.topology_changes)
    meta.update(
        normalisation=dict(centre=(c1 + s1 * centre).tolist(), scale=s1 * scale),
        sample_normalisation=dict(centre=centre.tolist(), scale=scale),
        input_mode=p.input_mode,
        labels=p.labels,
        grid_res=p.grid_res if p.labels == "watertight" else None,
        pc_size=dict(random_surface=p.pc_random, sharp_surface=p.pc_sharp),
        volume_size=m,
        sharp_edges=n_sharp_edges,
        sharp_fallback_uniform=n_sharp_edges == 0,
        topology_changes=changes,
        topology_handling="reattach previous frame's points by closest-point projection" if changes else None,
        watertight_faces=[int(len(f)) for _, f in wts],
    )
    write_json(obj_dir / "meta.json", meta)
    return dict(topology_changes=changes)
