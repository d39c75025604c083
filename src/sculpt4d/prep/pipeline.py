"""Data preparation: per-object stages (frames -> render -> sample -> verify) and their orchestration.

Each stage writes atomically and records a ``.done/<stage>`` marker last, holding the parameters it ran
with; a rerun skips stages whose marker matches, so an interrupted run resumes where it stopped.
Objects run in a process pool (one object per task); a failing object is reported, never fatal.

Layout written under ``obj_dir`` (design.md §6 + INTERFACES extension):
    render_cond/frame_XXXX/{mesh.ply, 000.png.., transforms.json}
    geo_data/4d_sample_new.npz, geo_data/4d_volume.npz, meta.json
Every mesh.ply is already in the sequence normalisation ([-0.5, 0.5], motion kept), so renders,
transforms.json and the point clouds share one coordinate frame.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import trimesh
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from sculpt4d.errors import InputError, MissingDependencyError
from sculpt4d.prep import sampling as S
from sculpt4d.prep.cameras import CameraRange, sample_cameras, transforms_dict
from sculpt4d.prep.watertight import field_occupancy, watertight_field
from sculpt4d.utils.io import atomic_path, write_json

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class PrepParams:
    """Everything a stage's output depends on (a stage re-runs when its part changes).

    No defaults here: they live in ``conf/prep.yaml`` only; build with :meth:`from_config`.
    """

    num_frames: int
    clip: str | int | None
    backend: str  # animation evaluation: numpy | blender
    num_views: int
    resolution: int
    elevation: tuple[float, float]
    azimuth: tuple[float, float]
    radius: float
    fov: float
    shading: str  # auto | geometry | color
    render_backend: str  # auto | pyrender | embree
    input_mode: str  # render | hybrid | export
    labels: str  # watertight (a grid_res remesh; any mesh) | exact (closed parts, fixed topology)
    grid_res: int
    narrow_band: bool
    pc_random: int
    pc_sharp: int
    sharp_angle: float
    volume_size: int
    seed: int
    allow_static: bool  # an asset without animation repeats its rest pose instead of failing
    extra_meta: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: DictConfig | None = None, **overrides) -> PrepParams:
        """From the composed prep config (default: ``conf/prep.yaml``), then ``overrides`` by field name."""
        if cfg is None:
            from sculpt4d.config import CONF_DIR

            cfg = OmegaConf.load(Path(CONF_DIR) / "prep.yaml")
        pc = cfg.pc_size
        if isinstance(pc, int):  # a single number = both kinds
            pc = {"random_surface": pc, "sharp_surface": pc}
        cam = cfg.camera
        p = cls(
            num_frames=int(cfg.num_frames),
            clip=cfg.clip,
            backend=str(cfg.backend),
            num_views=int(cfg.num_views),
            resolution=int(cfg.resolution),
            elevation=tuple(float(x) for x in cam.elevation),
            azimuth=tuple(float(x) for x in cam.azimuth),
            radius=float(cam.radius),
            fov=float(cam.fov),
            shading=str(cfg.render.shading),
            render_backend=str(cfg.render.backend),
            input_mode=str(cfg.input_mode),
            labels=str(cfg.labels),
            grid_res=int(cfg.grid_res),
            narrow_band=bool(cfg.narrow_band),
            pc_random=int(pc["random_surface"]),
            pc_sharp=int(pc["sharp_surface"]),
            sharp_angle=float(cfg.sharp_angle),
            volume_size=int(cfg.volume_size),
            seed=int(cfg.seed),
            allow_static=bool(cfg.allow_static),
        )
        return replace(p, **overrides)

    def for_stage(self, stage: str) -> dict:
        keys = {
            "frames": ["num_frames", "clip", "backend"],
            "render": ["num_views", "resolution", "elevation", "azimuth", "radius", "fov", "shading", "seed"],
            "sample": ["input_mode", "labels", "grid_res", "narrow_band", "pc_random", "pc_sharp", "sharp_angle",
                       "volume_size", "seed"],
        }[stage]  # fmt: skip
        if stage == "frames" and self.allow_static:  # only when set, so earlier markers stay valid
            keys = [*keys, "allow_static"]
        d = asdict(self)
        return json.loads(json.dumps({k: d[k] for k in keys}))  # tuples -> lists, comparable with JSON


def object_seed(name: str, seed: int) -> int:
    """Deterministic per-object seed (independent of process, order and sharding)."""
    return (zlib.crc32(name.encode()) + 1_000_003 * seed) % (2**31)


def frame_dir(obj_dir: Path, t: int) -> Path:
    return obj_dir / "render_cond" / f"frame_{t:04d}"


def list_frames(obj_dir: Path) -> list[Path]:
    return sorted(p for p in (obj_dir / "render_cond").glob("frame_*") if p.is_dir())


# ------------------------------------------------------------------------------------------- mesh I/O
def write_ply(path: Path, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None) -> None:
    tm = trimesh.Trimesh(vertices, faces, vertex_colors=colors, process=False)
    with atomic_path(path) as tmp:
        tm.export(tmp, file_type="ply", encoding="binary")


def read_ply(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """-> vertices [V,3] f64, faces [F,3] i64, vertex colours [V,4] uint8 | None"""
    tm = trimesh.load(path, process=False, force="mesh")
    colors = None
    if tm.visual.kind == "vertex":
        colors = np.asarray(tm.visual.vertex_colors, dtype=np.uint8)
    return np.asarray(tm.vertices, np.float64), np.asarray(tm.faces, np.int64), colors


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


def _blender_rest_pose(mod, src: Path, clip) -> tuple[np.ndarray, np.ndarray]:
    """Rest pose from Blender: its bind-pose export when the backend has one, else its first frame."""
    if hasattr(mod, "export_rest_pose"):
        return mod.export_rest_pose(src)
    am = mod.load_animated_mesh_blender(src, num_frames=1, clip=clip)
    return am.vertices[0], am.faces


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
    """Render ``num_views`` RGBA views of every frame; the same cameras for all frames of an object."""
    from sculpt4d.prep.render import Renderer

    frames = list_frames(obj_dir)
    if not frames:
        raise InputError(f"{obj_dir}: no render_cond/frame_XXXX/mesh.ply (run the frames stage)")
    rng = CameraRange(tuple(p.elevation), tuple(p.azimuth), p.radius, p.fov)
    c2w = sample_cameras(p.num_views, rng, seed=object_seed(obj_dir.name, p.seed))
    tf = transforms_dict(c2w, p.fov, p.resolution, p.resolution)
    with Renderer(p.resolution, p.fov, backend=p.render_backend, shading=p.shading) as r:
        for t, fd in enumerate(frames):
            v, f, c = read_ply(fd / "mesh.ply")
            imgs = r.render(v, f, c, c2w)
            for i, img in enumerate(imgs):
                with atomic_path(fd / f"{i:03d}.png") as tmp:
                    Image.fromarray(img, "RGBA").save(tmp, compress_level=1)
            write_json(fd / "transforms.json", tf)
            if progress:
                progress("render", t + 1, len(frames))
        backend = r.backend
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
    rv, rf = _blender_rest_pose(mod, src, p.clip)  # Blender's topology may differ: track() re-attaches
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


# ======================================================================================= orchestration
STAGES = ("frames", "render", "sample", "verify")
DOWNSTREAM = {
    "frames": ("render", "sample", "verify"),
    "render": ("verify",),
    "sample": ("verify",),
    "verify": (),
}
GLB_SUFFIXES = (".glb", ".gltf")


def discover(inp: str | Path) -> list[Path]:
    """A GLB/glTF file, or every one below a folder, sorted by path."""
    inp = Path(inp)
    if inp.is_file():
        return [inp]
    if inp.is_dir():
        return sorted(q for q in inp.rglob("*") if q.suffix.lower() in GLB_SUFFIXES and q.is_file())
    raise InputError(f"input {inp} does not exist; pass a .glb file or a folder of them")


def parse_shard(spec: str | None) -> tuple[int, int]:
    if spec in (None, "", "null"):
        return 0, 1
    try:
        i, n = (int(x) for x in str(spec).split("/"))
    except ValueError:
        raise InputError(f"shard must look like 'i/n' (e.g. 0/4), got {spec!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise InputError(f"shard {spec!r}: need 0 <= i < n")
    return i, n


def shard_items(items: list[Path], spec: str | None) -> list[Path]:
    """Deterministic split of the sorted list: shard i of n takes items i, i+n, i+2n, ..."""
    i, n = parse_shard(spec)
    return sorted(items)[i::n]


def clean_partial(obj_dir: Path) -> int:
    """Remove temporary files/folders left by an interrupted run (atomic writes' ``.name.*tmp*``)."""
    n = 0
    if not obj_dir.exists():
        return 0
    import shutil

    for q in sorted(obj_dir.rglob(".*"), key=lambda x: -len(x.parts)):
        if ".tmp" in q.name or q.name.endswith(".old"):
            shutil.rmtree(q, ignore_errors=True) if q.is_dir() else q.unlink(missing_ok=True)
            n += 1
    return n


def _marker(obj_dir: Path, stage: str) -> Path:
    return obj_dir / ".done" / stage


def is_done(obj_dir: Path, stage: str, params: dict) -> bool:
    m = _marker(obj_dir, stage)
    if not m.exists():
        return False
    try:
        return json.loads(m.read_text()).get("params") == params
    except (OSError, json.JSONDecodeError):
        return False


def _stage_params(p: PrepParams, stage: str) -> dict:
    return {} if stage == "verify" else p.for_stage(stage)


def process_object(
    src: Path,
    out_root: Path,
    p: PrepParams,
    stages: tuple[str, ...] = STAGES,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Run the selected stages for one asset; never raises (errors are returned in the result)."""
    import shutil
    import time
    import traceback

    name = Path(src).stem
    obj_dir = Path(out_root) / name
    res: dict = dict(name=name, source=str(src), status="ok", ran=[], skipped=[], seconds={})
    stage = None
    try:
        clean_partial(obj_dir)
        for stage in STAGES:
            if stage not in stages:
                continue
            params = _stage_params(p, stage)
            if not overwrite and is_done(obj_dir, stage, params):
                res["skipped"].append(stage)
                continue
            t0 = time.perf_counter()
            for d in (stage, *DOWNSTREAM[stage]):
                _marker(obj_dir, d).unlink(missing_ok=True)
            if stage == "frames":
                shutil.rmtree(obj_dir / "render_cond", ignore_errors=True)
                stage_frames(Path(src), obj_dir, p, progress)
            elif stage == "render":
                for png in (obj_dir / "render_cond").glob("frame_*/*.png"):
                    png.unlink()
                res.update(stage_render(obj_dir, p, progress))
            elif stage == "sample":
                res.update(stage_sample(obj_dir, p, progress))
            else:
                from sculpt4d.prep.verify import verify_object

                rep = verify_object(obj_dir, obj_dir / "verify")
                res["verify_ok"] = rep["ok"]
            write_json(_marker(obj_dir, stage), dict(params=params, seconds=time.perf_counter() - t0))
            res["ran"].append(stage)
            res["seconds"][stage] = round(time.perf_counter() - t0, 3)
    except Exception as e:  # one bad asset must not kill the run
        res.update(status="failed", stage=stage, error=f"{type(e).__name__}: {e}",
                   traceback=traceback.format_exc(limit=6))  # fmt: skip
    return res


# ---- process pool with a shared progress queue
_QUEUE = None
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere); exit if it already has."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _init_worker(q, parent_pid: int | None = None) -> None:
    global _QUEUE
    if parent_pid is not None:
        die_with_parent(parent_pid)
    _QUEUE = q


def _terminate_children(signum: int, frame) -> None:
    """SIGTERM in the parent: stop every worker (and the queue manager), then exit ``128 + signum``."""
    import multiprocessing as mp
    import sys

    children = mp.active_children()
    for c in children:
        c.terminate()
    for c in children:
        c.join(timeout=5)
    print(f"prep: terminated by signal {signum}; rerun the same command to resume", file=sys.stderr)
    os._exit(128 + signum)


@contextlib.contextmanager
def _workers_die_on_sigterm() -> Iterator[None]:
    """Install :func:`_terminate_children` for SIGTERM while a pool runs (main thread only)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate_children)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _worker(src: str, out_root: str, p: PrepParams, stages: tuple[str, ...], overwrite: bool) -> dict:
    name = Path(src).stem

    def cb(stage: str, done: int, total: int) -> None:
        if _QUEUE is not None:
            _QUEUE.put((name, stage, done, total))

    return process_object(Path(src), Path(out_root), p, stages, overwrite, cb)


def run(
    inputs: list[Path],
    out_root: str | Path,
    p: PrepParams,
    stages: tuple[str, ...] = STAGES,
    workers: int = 1,
    overwrite: bool = False,
    show_progress: bool = True,
    max_rounds: int = 3,
) -> list[dict]:
    """Prepare every asset in ``inputs`` under ``out_root``; writes ``prep_failures.json``; returns results."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise InputError(f"unknown stages {sorted(unknown)}; choose from {list(STAGES)}")
    results: dict[str, dict] = {}
    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*cols, disable=not show_progress, transient=False, refresh_per_second=4) as bar:
        overall = bar.add_task("objects", total=len(inputs))
        tasks: dict[str, int] = {}

        def on_progress(name: str, stage: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(f"  {name}", total=total)
            bar.update(tasks[name], completed=done, total=total, description=f"  {name} [{stage}]")

        def finish(res: dict) -> None:
            results[res["name"]] = res
            if res["name"] in tasks:
                bar.remove_task(tasks.pop(res["name"]))
            bar.advance(overall)

        if workers <= 1 or len(inputs) <= 1:
            for src in inputs:
                finish(
                    process_object(
                        src,
                        out_root,
                        p,
                        stages,
                        overwrite,
                        lambda s, d, t, n=src.stem: on_progress(n, s, d, t),
                    )
                )
        else:
            from multiprocessing.managers import SyncManager

            ctx = mp.get_context("spawn")
            pending = [str(s) for s in inputs]
            for rnd in range(max_rounds):
                if not pending:
                    break
                mgr = SyncManager(ctx=ctx)
                mgr.start(die_with_parent, (os.getpid(),))
                with mgr, _workers_die_on_sigterm():
                    q = mgr.Queue()
                    broken: list[str] = []
                    with ProcessPoolExecutor(min(workers, len(pending)), mp_context=ctx, initializer=_init_worker,
                                             initargs=(q, os.getpid())) as ex:  # fmt: skip
                        futs = {
                            ex.submit(_worker, s, str(out_root), p, tuple(stages), overwrite): s
                            for s in pending
                        }
                        remaining = set(futs)
                        while remaining:
                            done = [f for f in remaining if f.done()]
                            while not q.empty():
                                on_progress(*q.get())
                            for f in done:
                                remaining.discard(f)
                                try:
                                    finish(f.result())
                                except BrokenProcessPool:
                                    broken.append(futs[f])
                            if remaining and not done:
                                wait(remaining, timeout=0.25, return_when=FIRST_COMPLETED)
                pending = broken
                if pending and rnd == max_rounds - 1:
                    for s in pending:
                        finish(dict(name=Path(s).stem, source=s, status="failed", stage=None,
                                    error="worker process died (crash or out of memory)", ran=[], skipped=[]))  # fmt: skip
    ordered = [results[Path(s).stem] for s in inputs if Path(s).stem in results]
    write_failure_report(out_root, ordered)
    return ordered


def write_failure_report(out_root: Path, results: list[dict]) -> Path:
    failed = [{k: r.get(k) for k in ("name", "source", "stage", "error", "traceback")} for r in results
              if r["status"] == "failed"]  # fmt: skip
    path = Path(out_root) / "prep_failures.json"
    write_json(path, dict(num_objects=len(results), num_failed=len(failed), failed=failed))
    return path


def print_summary(results: list[dict], out_root: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    ok = sum(r["status"] == "ok" for r in results)
    con.print(f"[bold]prep[/bold]: {ok}/{len(results)} objects ok -> {out_root}")
    failed = [r for r in results if r["status"] == "failed"]
    if failed:
        tab = Table(title=f"{len(failed)} failed (details in {Path(out_root) / 'prep_failures.json'})")
        for c in ("object", "stage", "error"):
            tab.add_column(c)
        for r in failed:
            tab.add_row(r["name"], str(r.get("stage")), r.get("error", "")[:200])
        con.print(tab)
