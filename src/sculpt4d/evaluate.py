"""Evaluate a model on a benchmark folder (design.md §6 format): Chamfer / IoU / F-score / temporal jitter.

    python -m sculpt4d.evaluate                         # shipped tiny model, held-out procedural split
    python -m sculpt4d.evaluate benchmark=/data/bench max_objects=10 variants=[full,temporal]
    python -m sculpt4d.evaluate 'variants=["blockmask:anchor=false","blockmask:noise_share_alpha=0"]'
    python -m sculpt4d.evaluate 'ckpts=["full_s0=a/export","full_s1=b/export"]'   # a study: sculpt4d.study

Writes ``<output_dir>/per_sequence.csv`` and ``<output_dir>/summary.json`` (per method and per category:
chamfer, iou, fscore, jitter, motion IoU, seconds, memory, DiT TFLOPs) and prints a table. Methods compared in
one run: the 4D model, the same model applied per frame (T=1: the 3D baseline), the first frame's prediction
repeated (a trivial baseline), two reference rows — ``vae_reconstruction`` (the ground truth's surface
samples encoded and decoded: the latent's ceiling) and ``oracle_static`` (the ground-truth frame 0 repeated:
what a perfect but static model scores) — and optional variants run with the same weights: another attention
mask, mask options (``anchor=false``) or sampling options (``noise_share_alpha=0``), see :func:`parse_variant`.
Sequence i is sampled with seed ``seed + i``.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import trimesh
import yaml
from omegaconf import DictConfig, OmegaConf

from sculpt4d.errors import InputError

SAMPLING_KEYS = (
    "noise_share_alpha", "noise_scale", "sampling_shift", "guidance_until", "num_samples", "guidance_scale", "num_steps",
    "seed", "mc_level",
)  # fmt: skip
REFERENCE_METHODS = ("vae_reconstruction", "oracle_static")  # need the ground truth, not the model


def evenly_spaced(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (first and last included; all of them when k >= n)."""
    return sorted({int(i) for i in np.linspace(0, n - 1, min(k, n)).round()}) if k > 0 and n > 0 else []


def find_objects(root: Path) -> list[Path]:
    objs = sorted(p for p in root.iterdir() if (p / "render_cond").is_dir())
    if not objs:
        raise InputError(f"{root}: no objects (expected <obj>/render_cond/frame_XXXX/ folders)")
    return objs


def select_frames(obj_dir: Path, sequence_length: int, stride: int = 1) -> list[Path]:
    """The evaluated frame folders: every ``stride``-th from the first."""
    return sorted((obj_dir / "render_cond").glob("frame_*"))[::stride][:sequence_length]


def load_object(
    obj_dir: Path, sequence_length: int, cond_view: int, stride: int = 1
) -> tuple[list[Path], list[trimesh.Trimesh]]:
    """Input frames (one view, the same camera for every frame) and GT meshes in the VAE's frame."""
    from sculpt4d.data.dataset import POINT_SCALE  # [-0.5, 0.5] -> the VAE's box

    frame_dirs = select_frames(obj_dir, sequence_length, stride)
    if len(frame_dirs) < sequence_length:
        raise InputError(
            f"{obj_dir}: {len(frame_dirs)} frames at frame_stride={stride}, need sequence_length={sequence_length}"
        )
    meta_file = obj_dir / "meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    # mesh.ply is in the sequence's mesh normalisation; the point clouds (hence the VAE's frame) apply
    # one more (x - centre) / scale on top of it (prep.stages.stage_sample).
    norm = meta.get("sample_normalisation") or {}
    center = np.asarray(norm.get("centre", [0.0, 0.0, 0.0]), dtype=np.float64)
    scale = float(norm.get("scale", 1.0))
    frames, gts = [], []
    for fd in frame_dirs:
        frames.append(fd / f"{cond_view:03d}.png")
        mesh = trimesh.load(fd / "mesh.ply", force="mesh", process=False)
        verts = (np.asarray(mesh.vertices) - center) / scale * POINT_SCALE
        gts.append(trimesh.Trimesh(verts, np.asarray(mesh.faces), process=False))
    return frames, gts


def resolve_benchmark(cfg: DictConfig) -> Path:
    """The benchmark folder: as given, then under ``data/``.

    A missing or interrupted (no ``prep_failures.json`` yet) ``tiny/benchmark``, ``tiny/ood`` or fresh held-out
    split ``tiny/benchmark_<seed offset>`` is prepared first with the recipe of ``make data-tiny``
    (``prepare_missing``), so a fresh clone evaluates.
    """
    from sculpt4d.prep.tiny import is_known_split, prepare_known_split

    name, data_dir = str(cfg.benchmark), Path(str(cfg.paths.data_dir))
    for root in (Path(name), data_dir / name):
        if root.is_dir() and (not is_known_split(name) or (root / "prep_failures.json").is_file()):
            return root
    if is_known_split(name) and cfg.get("prepare_missing", True):
        print(f"[sculpt4d] benchmark '{name}' missing or incomplete: preparing it (< 1 min on 2 CPU cores)")
        return prepare_known_split(name, data_dir, Path(str(cfg.paths.root_dir)))
    raise InputError(
        f"benchmark folder '{name}' not found or incomplete (tried it as given and under {data_dir}); "
        "pass benchmark=<folder in the design.md §6 format>, or run `make data-tiny` for data/tiny/{benchmark,ood}"
    )


def parse_variant(spec: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``"NAME[:key=value]..."`` -> (attention variant, mask overrides, sampling overrides).

    ``full``, ``blockmask:anchor=false``, ``blockmask:noise_share_alpha=0``, ``radial:decay=0.5``; the
    sampling keys are :data:`SAMPLING_KEYS`, every other key goes to the mask builder (design.md §4).
    """
    name, *pairs = str(spec).split(":")
    mask_cfg: dict[str, Any] = {}
    sampling: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"variant '{spec}': '{pair}' is not key=value (e.g. blockmask:anchor=false)")
        parsed = yaml.safe_load(value)
        (sampling if key in SAMPLING_KEYS else mask_cfg)[key] = parsed
    return name, mask_cfg, sampling


def surface_samples(obj_dir: Path, frame_dirs: list[Path], pc_size: int) -> torch.Tensor:
    """The first ``pc_size`` random-surface samples of each frame as the VAE's input.  # [1, T, P, 7]"""
    from sculpt4d.data.dataset import POINT_SCALE

    path = obj_dir / "geo_data" / "4d_sample_new.npz"
    if not path.is_file():
        raise InputError(f"{path}: missing; vae_reconstruction needs the prepared surface samples")
    with np.load(path, allow_pickle=False) as z:
        frames = [z[f"{fd.name}/random_surface"][:pc_size].astype(np.float32) for fd in frame_dirs]
    pts = torch.from_numpy(np.stack(frames))  # [T, P, 6]
    xyz, normals = pts[..., :3] * POINT_SCALE, pts[..., 3:6]
    normals = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    label = torch.zeros_like(xyz[..., :1])
    return torch.cat([xyz, normals, label], dim=-1)[None]


#: the sampling options (:func:`sculpt4d.predict.sampling_kwargs`) that :meth:`Sculpt4DPipeline.decode` takes
DECODE_OPTIONS = ("octree_resolution", "mc_algo", "num_chunks", "hierarchical", "largest_component",
                  "min_resolution", "decode_dtype", "mc_level")  # fmt: skip


@torch.no_grad()
def vae_reconstruction(pipeline, surface: torch.Tensor, kwargs: dict[str, Any]) -> list[trimesh.Trimesh]:
    """Encode the ground truth's surface samples (posterior means) and decode them like a prediction.

    The encoder's query-point pick (farthest-point sampling from a random start) draws from the sequence's
    seed, so the row does not depend on what ran before it."""
    vae = pipeline.components.vae
    gen = torch.Generator().manual_seed(int(kwargs["seed"]))
    z = vae.encode_sequence(
        surface.to(pipeline.device), sample_posterior=False, generator=gen
    )  # [1, T, N, C]
    return pipeline.decode(vae.to_dit(z), **{k: kwargs[k] for k in DECODE_OPTIONS})


def run_method(
    pipeline,
    frames: list[Path],
    method: str,
    cfg: DictConfig,
    sampling: dict[str, Any] | None = None,
    truth: dict[str, Any] | None = None,
    per_frame_run: tuple[list[trimesh.Trimesh], list, float] | None = None,
) -> tuple[list[trimesh.Trimesh], list, float, float]:
    """Meshes, preprocessed input images, seconds and DiT FLOPs of one method on one sequence (``cfg`` with the
    checkpoint's defaults filled in, :func:`~sculpt4d.predict.with_checkpoint_defaults`).

    ``truth`` (``gts``: the ground-truth meshes, ``surface``: their VAE input) feeds the reference methods.
    ``per_frame_run``: the ``per_frame`` result of this sequence with the same sampling (meshes, images,
    seconds), if it ran already: ``first_frame_repeat`` then repeats its frame 0 (the same model, noise and
    condition on frame 0 alone) instead of sampling and decoding it again, and reports 1/T of its seconds.
    Peak memory: reset here by the caller (:func:`sculpt4d.utils.memory.reset_peak_memory`)."""
    from sculpt4d.models.flops import sampling_flops
    from sculpt4d.predict import sampling_kwargs

    kwargs = {**sampling_kwargs(cfg), **(sampling or {})}
    model, M = pipeline.components.model, pipeline.components.conditioner.num_tokens
    schedule = {k: kwargs[k] for k in ("guidance_until", "sampling_shift", "num_samples")}
    t0 = time.perf_counter()
    if method in REFERENCE_METHODS:
        if truth is None:
            raise ValueError(f"method {method} needs the ground truth")
        if method == "oracle_static":
            meshes = [truth["gts"][0].copy() for _ in frames]
        else:
            meshes = vae_reconstruction(pipeline, truth["surface"], kwargs)
        return meshes, [], time.perf_counter() - t0, 0.0
    if method == "first_frame_repeat":
        flops = sampling_flops(model, 1, M, kwargs["num_steps"], kwargs["guidance_scale"], **schedule)
        if per_frame_run is not None:
            first, images, seconds = per_frame_run[0][0], per_frame_run[1], per_frame_run[2] / len(frames)
            return [first.copy() for _ in frames], images, seconds, flops
        out = pipeline(frames[:1], per_frame=True, **kwargs)
        meshes = [out.meshes[0].copy() for _ in frames]
    else:
        per_frame = method == "per_frame"
        out = pipeline(frames, per_frame=per_frame, **kwargs)
        meshes = out.meshes
        flops = sampling_flops(
            model,
            len(frames),
            M,
            kwargs["num_steps"],
            kwargs["guidance_scale"],
            per_frame=per_frame,
            **schedule,
        )
    return meshes, out.images, time.perf_counter() - t0, flops


def write_gallery(entries: list[dict[str, Any]], path: Path, size: int = 128, max_frames: int = 8) -> Path:
    """One PNG: per object, a row of input frames, the ground truth and each method's meshes.

    ``entries``: ``{"object", "images", "rows": {label: meshes}}``; every mesh row of an object is rendered
    from one camera framing that object's ground truth, so shapes and motion compare directly.
    """
    from PIL import Image, ImageDraw

    from sculpt4d.export.preview import render_strip, sequence_bounds
    from sculpt4d.export.video import to_rgb
    from sculpt4d.utils.io import atomic_path

    label_w = 110
    blocks = []
    for e in entries:
        T = len(e["images"])
        idx = np.unique(np.linspace(0, T - 1, min(T, max_frames)).round().astype(int))
        bounds = sequence_bounds(e["rows"]["ground truth"])
        strips = [("input", np.concatenate([to_rgb(e["images"][i], size) for i in idx], axis=1))]
        for label, meshes in e["rows"].items():
            renders = render_strip(meshes, size=size, bounds=bounds)
            strips.append((label, np.concatenate([renders[i] for i in idx], axis=1)))
        for label, strip in strips:
            canvas = Image.new("RGB", (label_w + strip.shape[1], size), "white")
            canvas.paste(Image.fromarray(strip), (label_w, 0))
            text = f"{e['object']}\n{label}" if label == "input" else label
            ImageDraw.Draw(canvas).multiline_text((4, size // 2 - 12), text, fill="black")
            blocks.append(np.asarray(canvas))
    with atomic_path(path) as tmp:
        Image.fromarray(np.concatenate(blocks, axis=0)).save(tmp, format="PNG")
    return path


#: summary columns: (header, format); the printed table and the README's markdown tables use the same formats
COLUMNS = {
    "chamfer": ("Chamfer ↓", ".4f"),
    "iou": ("IoU ↑", ".3f"),
    "fscore": ("F-score ↑", ".3f"),
    "jitter": ("jitter ↓", ".4f"),
    "motion_iou": ("motion IoU ↑", ".3f"),
    "tflops": ("DiT TFLOPs", ".2f"),
    "seconds": ("s / sequence", ".1f"),
    "memory_mb": ("peak MiB", ".0f"),
}


def category_of(obj_name: str) -> str:
    """``door_100003`` -> ``door`` (the procedural naming); other names are their own category."""
    head, sep, tail = obj_name.rpartition("_")
    return head if sep and tail.isdigit() else obj_name


def method_label(method: str) -> str:
    """``variant:full`` -> ``full``; the trained model's own mask is named (``4d (blockmask)``)."""
    return "4d (blockmask)" if method == "4d" else method.removeprefix("variant:")


def format_table(summary: dict[str, dict[str, float]], markdown: bool = False) -> str:
    """The per-method summary as aligned text (printed by the run) or as a markdown table (README)."""
    rows = [[method_label(m)] + [format(r.get(k, float("nan")), f) for k, (_, f) in COLUMNS.items()]
            for m, r in summary.items()]  # fmt: skip
    header = ["method"] + [h for h, _ in COLUMNS.values()]
    if markdown:
        lines = [header, ["---"] * len(header), *rows]
        return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        for cells in [header, *rows]
    )


def category_means(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> dict[str, Any]:
    """``{"per_category": {category: row}, "all": row}``: the mean of each of ``columns`` over the ``rows`` of each
    ``row["category"]`` (categories sorted) and over all rows, the layout :func:`report_category_rows` prints."""
    if not rows:
        raise ValueError("category_means: no rows")
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row["category"]), []).append(row)

    def mean(group: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        return {c: float(np.mean([r[c] for r in group])) for c in columns}

    return {"per_category": {k: mean(groups[k]) for k in sorted(groups)}, "all": mean(rows)}


def report_category_rows(out: dict[str, Any], columns: Sequence[str], json_path: Path | None = None) -> None:
    """Print a diagnostic's ``{"per_category": {name: row}, "all": row}`` aligned, one line per category and one
    for all (``columns`` of each row, 3 decimals), and write it to ``json_path`` (atomically) when given."""
    from sculpt4d.utils.io import write_json

    widths = [max(14, len(c)) for c in columns]
    print(f"{'category':10s} " + " ".join(f"{c:>{w}s}" for c, w in zip(columns, widths)))
    for name, row in [*out["per_category"].items(), ("all", out["all"])]:
        print(f"{name:10s} " + " ".join(f"{row[c]:{w}.3f}" for c, w in zip(columns, widths)))
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        write_json(json_path, out, indent=1)


METRICS = ("chamfer", "iou", "fscore", "jitter", "motion_iou", "seconds", "memory_mb", "tflops")


def summarise(rows: list[dict[str, Any]], methods: list[str]) -> dict[str, dict[str, float]]:
    """Per method: the mean of every metric over its rows (NaN-aware) and the number of sequences."""
    summary: dict[str, dict[str, float]] = {}
    for method in methods:
        sel = [r for r in rows if r["method"] == method]
        if sel:
            summary[method] = {k: float(np.nanmean([r[k] for r in sel])) for k in METRICS}
            summary[method]["sequences"] = len(sel)
    return summary


def evaluate_output_dir(cfg: DictConfig, benchmark: Path) -> Path:
    """``cfg.output_dir`` after the checks of :func:`sculpt4d.utils.io.check_output_dir` (marker: summary.json)."""
    from sculpt4d.config import hydra_job_dir
    from sculpt4d.utils.io import check_output_dir

    return check_output_dir(
        str(cfg.output_dir),
        marker="summary.json",
        inputs=[benchmark],
        overwrite=bool(cfg.get("overwrite", False)),
        own_dirs=hydra_job_dir(),
    )


def run_evaluate(cfg: DictConfig) -> dict[str, dict[str, float]]:
    from sculpt4d.config import task_overrides
    from sculpt4d.metrics import prepare_ground_truth, score_sequence
    from sculpt4d.metrics.occupancy import OCCUPANCY_PATHS
    from sculpt4d.predict import build_pipeline, check_options, with_checkpoint_defaults
    from sculpt4d.utils.io import atomic_path, write_json
    from sculpt4d.utils.memory import peak_memory_mb, reset_peak_memory

    t_start = time.perf_counter()
    check_options(cfg)  # bad options fail here, before any preparation or model loading
    root = resolve_benchmark(cfg)
    out_dir = evaluate_output_dir(cfg, root)
    objects = find_objects(root)
    if cfg.max_objects:  # evenly spaced: every category stays in
        objects = [objects[i] for i in evenly_spaced(len(objects), int(cfg.max_objects))]
    methods = [str(m) for m in cfg.methods] + [f"variant:{v}" for v in cfg.variants]
    pipelines = {"base": build_pipeline(cfg)}
    cfg = with_checkpoint_defaults(cfg, pipelines["base"].inference)
    sampling: dict[str, dict[str, Any]] = {}
    for v in cfg.variants:
        name, mask_cfg, sampling[f"variant:{v}"] = parse_variant(str(v))
        pipelines[f"variant:{v}"] = pipelines["base"].with_attention(name, **mask_cfg)
    rows: list[dict] = []
    fallbacks: dict[str, int] = {}  # occupancy grids that took the winding-number fallback (open meshes)
    device = pipelines["base"].device
    gcfg = cfg.get("gallery") or {}
    gallery_objs = {objects[i].name for i in evenly_spaced(len(objects), int(gcfg.get("objects", 0) or 0))}
    gallery_methods = [str(m) for m in gcfg.get("methods", ["4d"])]
    gallery: list[dict[str, Any]] = []
    stride = int(cfg.get("frame_stride", 1))
    pc_size = int(pipelines["base"].components.vae.encoder.pc_size)
    for index, obj in enumerate(objects):
        frames, gts = load_object(obj, int(cfg.sequence_length), int(cfg.cond_view), stride)
        entry: dict[str, Any] = {"object": obj.name, "images": None, "rows": {"ground truth": gts}}
        before = OCCUPANCY_PATHS["winding"]
        truth = prepare_ground_truth(  # shared by every method
            gts, n_points=int(cfg.metrics.n_points), motion_resolution=int(cfg.metrics.iou_resolution)
        )
        fallbacks["ground truth"] = fallbacks.get("ground truth", 0) + OCCUPANCY_PATHS["winding"] - before
        references: dict[str, Any] = {"gts": gts}
        if "vae_reconstruction" in methods:
            references["surface"] = surface_samples(obj, select_frames(obj, len(frames), stride), pc_size)
        per_frame_run = None
        for method in methods:
            pipe = pipelines.get(method, pipelines["base"])
            reset_peak_memory(device)
            seed = {"seed": int(cfg.seed) + index}  # one noise draw per sequence
            meshes, images, seconds, flops = run_method(
                pipe,
                frames,
                "4d" if method.startswith("variant:") else method,
                cfg,
                {**seed, **sampling.get(method, {})},
                references,
                per_frame_run,
            )
            if method == "per_frame":
                per_frame_run = (meshes, images, seconds)
            memory_mb = peak_memory_mb(device)
            before = OCCUPANCY_PATHS["winding"]
            m = score_sequence(
                meshes, truth, iou_res=int(cfg.metrics.iou_resolution), tau=float(cfg.metrics.fscore_tau)
            )
            fallbacks[method] = fallbacks.get(method, 0) + OCCUPANCY_PATHS["winding"] - before
            rows.append(
                {
                    "object": obj.name,
                    "method": method,
                    "chamfer": m["chamfer"],
                    "iou": m["iou"],
                    "fscore": m["fscore"],
                    "jitter": m["jitter"],
                    "motion_iou": m["motion_iou"],
                    "seconds": seconds,
                    "memory_mb": memory_mb,
                    "tflops": flops / 1e12,
                }
            )
            print(
                f"{obj.name:<28} {method:<20} CD {m['chamfer']:.4f} IoU {m['iou']:.3f} "
                f"F {m['fscore']:.3f} jitter {m['jitter']:.4f} motion IoU {m['motion_iou']:.3f} ({seconds:.1f} s)",
                flush=True,
            )
            if obj.name in gallery_objs and method in gallery_methods:
                entry["rows"][method] = meshes
                if images:
                    entry["images"] = images  # all T inputs
        if obj.name in gallery_objs and entry["images"] is not None:
            gallery.append(entry)
    summary = summarise(rows, methods)
    categories = sorted({category_of(r["object"]) for r in rows})
    by_category = {
        c: summarise([r for r in rows if category_of(r["object"]) == c], methods) for c in categories
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "per_sequence.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)
    if gallery:
        write_gallery(gallery, out_dir / "gallery.png", size=int(gcfg.get("size", 128)))
    settings = {k: cfg[k] for k in (*SAMPLING_KEYS, "octree_resolution", "mc_level", "frame_stride")}
    write_json(
        out_dir / "summary.json",
        {
            "benchmark": str(root),
            "objects": len(objects),
            "wall_seconds": time.perf_counter() - t_start,
            "overrides": task_overrides(),
            "settings": {**settings, "metrics": OmegaConf.to_container(cfg.metrics)},
            "methods": summary,
            "categories": by_category,
            "iou_winding_fallbacks": fallbacks,
        },
    )
    print(format_table(summary))
    print(f"[sculpt4d] {len(objects)} sequences in {(time.perf_counter() - t_start) / 60:.1f} min")
    print(f"[sculpt4d] wrote {out_dir / 'summary.json'}" + (" and gallery.png" if gallery else ""))
    return summary


def run_task(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """``ckpts=[...]``: the study over several checkpoints (:mod:`sculpt4d.study`); else one evaluation."""
    if cfg.get("ckpts") is not None:
        from sculpt4d.study import run_study

        return run_study(cfg)
    return run_evaluate(cfg)


def main() -> None:
    from sculpt4d.config import hydra_main

    hydra_main("evaluate", run_task)


if __name__ == "__main__":
    main()
