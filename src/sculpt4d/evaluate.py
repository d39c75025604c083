"""Evaluate a model on a benchmark folder (DESIGN §6 format): Chamfer / IoU / F-score / temporal jitter.

    python -m sculpt4d.evaluate                         # shipped tiny model, held-out procedural split
    python -m sculpt4d.evaluate benchmark=/data/bench max_objects=10 variants=[full,temporal]
    python -m sculpt4d.evaluate 'variants=["blockmask:anchor=false","blockmask:noise_share_alpha=0"]'

Writes ``<output_dir>/per_sequence.csv`` and ``<output_dir>/summary.json`` (per method: chamfer, iou,
fscore, jitter, seconds, memory, DiT TFLOPs) and prints a table. Methods compared in one run: the 4D model, the same
model applied per frame (T=1: the 3D baseline), the first frame's prediction repeated (a trivial
baseline), and optional variants run with the same weights: another attention mask, mask options
(``anchor=false``) or sampling options (``noise_share_alpha=0``), see :func:`parse_variant`.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
import yaml
from omegaconf import DictConfig, OmegaConf

from sculpt4d.errors import InputError

SAMPLING_KEYS = ("noise_share_alpha", "guidance_scale", "num_steps", "seed")
VAE_RANGE = 2.0 * 0.9999  # [-0.5, 0.5] sequence normalisation -> the VAE's [-1, 1] box


def evenly_spaced(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (first and last included; all of them when k >= n)."""
    return sorted({int(i) for i in np.linspace(0, n - 1, min(k, n)).round()}) if k > 0 and n > 0 else []


def find_objects(root: Path) -> list[Path]:
    objs = sorted(p for p in root.iterdir() if (p / "render_cond").is_dir())
    if not objs:
        raise InputError(f"{root}: no objects (expected <obj>/render_cond/frame_XXXX/ folders)")
    return objs


def load_object(
    obj_dir: Path, sequence_length: int, cond_view: int, stride: int = 1
) -> tuple[list[Path], list[trimesh.Trimesh]]:
    """Input frames (one view, the same camera for every frame) and GT meshes in the VAE's frame."""
    frame_dirs = sorted((obj_dir / "render_cond").glob("frame_*"))[::stride][:sequence_length]
    if len(frame_dirs) < sequence_length:
        raise InputError(
            f"{obj_dir}: {len(frame_dirs)} frames at frame_stride={stride}, need sequence_length={sequence_length}"
        )
    meta_file = obj_dir / "meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    # mesh.ply is in the sequence's mesh normalisation; the point clouds (hence the VAE's frame) apply
    # one more (x - centre) / scale on top of it (prep.pipeline.stage_sample).
    norm = meta.get("sample_normalisation") or {}
    center = np.asarray(norm.get("centre", [0.0, 0.0, 0.0]), dtype=np.float64)
    scale = float(norm.get("scale", 1.0))
    frames, gts = [], []
    for fd in frame_dirs:
        frames.append(fd / f"{cond_view:03d}.png")
        mesh = trimesh.load(fd / "mesh.ply", force="mesh", process=False)
        verts = (np.asarray(mesh.vertices) - center) / scale * VAE_RANGE
        gts.append(trimesh.Trimesh(verts, np.asarray(mesh.faces), process=False))
    return frames, gts


def resolve_benchmark(cfg: DictConfig) -> Path:
    """The benchmark folder: as given, then under ``data/``.

    A missing or interrupted (no ``prep_failures.json`` yet) ``tiny/benchmark`` or ``tiny/ood`` is prepared
    first with the recipe of ``make data-tiny`` (``prepare_missing``), so a fresh clone evaluates.
    """
    from sculpt4d.prep.tiny import KNOWN_SPLITS, prepare_known_split

    name, data_dir = str(cfg.benchmark), Path(str(cfg.paths.data_dir))
    for root in (Path(name), data_dir / name):
        if root.is_dir() and (name not in KNOWN_SPLITS or (root / "prep_failures.json").is_file()):
            return root
    if name in KNOWN_SPLITS and cfg.get("prepare_missing", True):
        print(f"[sculpt4d] benchmark '{name}' missing or incomplete: preparing it (< 1 min on 2 CPU cores)")
        return prepare_known_split(name, data_dir, Path(str(cfg.paths.root_dir)))
    raise InputError(
        f"benchmark folder '{name}' not found or incomplete (tried it as given and under {data_dir}); "
        "pass benchmark=<folder in the DESIGN §6 format>, or run `make data-tiny` for data/tiny/{benchmark,ood}"
    )


def parse_variant(spec: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``"NAME[:key=value]..."`` -> (attention variant, mask overrides, sampling overrides).

    ``full``, ``blockmask:anchor=false``, ``blockmask:noise_share_alpha=0``, ``radial:decay=0.5``; the
    sampling keys are :data:`SAMPLING_KEYS`, every other key goes to the mask builder (DESIGN §4).
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


def run_method(
    pipeline, frames: list[Path], method: str, cfg: DictConfig, sampling: dict[str, Any] | None = None
) -> tuple[list[trimesh.Trimesh], list, float, float]:
    """Meshes, preprocessed input images, seconds and DiT FLOPs of one method on one sequence.

    Peak memory: reset here by the caller (:func:`sculpt4d.utils.memory.reset_peak_memory`)."""
    from sculpt4d.models.flops import sampling_flops
    from sculpt4d.predict import sampling_kwargs

    kwargs = {**sampling_kwargs(cfg), **(sampling or {})}
    model, M = pipeline.components.model, pipeline.components.conditioner.num_tokens
    t0 = time.perf_counter()
    if method == "first_frame_repeat":
        out = pipeline(frames[:1], per_frame=True, **kwargs)
        meshes = [out.meshes[0].copy() for _ in frames]
        flops = sampling_flops(model, 1, M, kwargs["num_steps"], kwargs["guidance_scale"])
    else:
        per_frame = method == "per_frame"
        out = pipeline(frames, per_frame=per_frame, **kwargs)
        meshes = out.meshes
        flops = sampling_flops(
            model, len(frames), M, kwargs["num_steps"], kwargs["guidance_scale"], per_frame=per_frame
        )
    return meshes, out.images, time.perf_counter() - t0, flops


def write_gallery(entries: list[dict[str, Any]], path: Path, size: int = 128, max_frames: int = 8) -> Path:
    """One PNG: per object, a row of input frames, the ground truth and each method's meshes.

    ``entries``: ``{"object", "images", "rows": {label: meshes}}``; every mesh row of an object is rendered
    from one camera framing that object's ground truth, so shapes and motion compare directly.
    """
    from PIL import Image, ImageDraw

    from sculpt4d.export.render import render_strip, sequence_bounds
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
    "tflops": ("DiT TFLOPs", ".2f"),
    "seconds": ("s / sequence", ".1f"),
    "memory_mb": ("peak MiB", ".0f"),
}


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
    from sculpt4d.predict import build_pipeline, check_options
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
    sampling: dict[str, dict[str, Any]] = {}
    for v in cfg.variants:
        name, mask_cfg, sampling[f"variant:{v}"] = parse_variant(str(v))
        pipelines[f"variant:{v}"] = pipelines["base"].with_attention(name, **mask_cfg)
    rows: list[dict] = []
    device = pipelines["base"].device
    gcfg = cfg.get("gallery") or {}
    gallery_objs = {objects[i].name for i in evenly_spaced(len(objects), int(gcfg.get("objects", 0) or 0))}
    gallery_methods = [str(m) for m in gcfg.get("methods", ["4d"])]
    gallery: list[dict[str, Any]] = []
    for obj in objects:
        frames, gts = load_object(
            obj, int(cfg.sequence_length), int(cfg.cond_view), int(cfg.get("frame_stride", 1))
        )
        entry: dict[str, Any] = {"object": obj.name, "images": None, "rows": {"ground truth": gts}}
        truth = prepare_ground_truth(gts, n_points=int(cfg.metrics.n_points))  # shared by every method
        for method in methods:
            pipe = pipelines.get(method, pipelines["base"])
            reset_peak_memory(device)
            meshes, images, seconds, flops = run_method(
                pipe, frames, "4d" if method.startswith("variant:") else method, cfg, sampling.get(method)
            )
            memory_mb = peak_memory_mb(device)
            m = score_sequence(
                meshes, truth, iou_res=int(cfg.metrics.iou_resolution), tau=float(cfg.metrics.fscore_tau)
            )
            rows.append(
                {
                    "object": obj.name,
                    "method": method,
                    "chamfer": m["chamfer"],
                    "iou": m["iou"],
                    "fscore": m["fscore"],
                    "jitter": m["jitter"],
                    "seconds": seconds,
                    "memory_mb": memory_mb,
                    "tflops": flops / 1e12,
                }
            )
            print(
                f"{obj.name:<28} {method:<20} CD {m['chamfer']:.4f} IoU {m['iou']:.3f} "
                f"F {m['fscore']:.3f} jitter {m['jitter']:.4f} ({seconds:.1f} s)",
                flush=True,
            )
            if obj.name in gallery_objs and method in gallery_methods:
                entry["rows"][method] = meshes
                if method != "first_frame_repeat":
                    entry["images"] = images  # all T inputs
        if obj.name in gallery_objs and entry["images"] is not None:
            gallery.append(entry)
    summary: dict[str, dict[str, float]] = {}
    for method in methods:
        sel = [r for r in rows if r["method"] == method]
        summary[method] = {
            k: float(np.mean([r[k] for r in sel]))
            for k in ("chamfer", "iou", "fscore", "jitter", "seconds", "memory_mb", "tflops")
        }
        summary[method]["sequences"] = len(sel)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "per_sequence.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)
    if gallery:
        write_gallery(gallery, out_dir / "gallery.png", size=int(gcfg.get("size", 128)))
    settings = {
        k: cfg[k] for k in ("num_steps", "guidance_scale", "octree_resolution", "frame_stride", "seed")
    }
    write_json(
        out_dir / "summary.json",
        {
            "benchmark": str(root),
            "objects": len(objects),
            "wall_seconds": time.perf_counter() - t_start,
            "overrides": task_overrides(),
            "settings": {**settings, "metrics": OmegaConf.to_container(cfg.metrics)},
            "methods": summary,
        },
    )
    print(format_table(summary))
    print(f"[sculpt4d] {len(objects)} sequences in {(time.perf_counter() - t_start) / 60:.1f} min")
    print(f"[sculpt4d] wrote {out_dir / 'summary.json'}" + (" and gallery.png" if gallery else ""))
    return summary


def main() -> None:
    from sculpt4d.config import hydra_main

    hydra_main("evaluate", run_evaluate)


if __name__ == "__main__":
    main()
