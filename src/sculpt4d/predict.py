"""The predict task: frames / a video / a zip -> frame_XXXX.obj + sequence.glb + strip video, written atomically."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from sculpt4d.errors import InputError

log = logging.getLogger("sculpt4d.predict")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device={name} requested but CUDA is not available here; use device=cpu")
    return device


def build_pipeline(cfg: DictConfig):
    """The pipeline a predict/evaluate config describes."""
    from sculpt4d.models.attention.backends import BACKENDS
    from sculpt4d.pipeline import Sculpt4DPipeline

    backend = cfg.get("attention_backend")
    if backend is not None and str(backend) not in BACKENDS:
        raise InputError(f"attention_backend={backend} is not one of {', '.join(BACKENDS)} (or null)")
    device = resolve_device(str(cfg.device))
    pipeline = Sculpt4DPipeline.from_pretrained(
        str(cfg.ckpt),
        model_cfg=cfg.model,
        attention_cfg=cfg.get("attention"),
        device=device,
        dtype=str(cfg.dtype),
        offload=bool(cfg.get("offload", False)),
        sequence_length=int(cfg.sequence_length),
    )
    if backend is not None:  # same mask, another kernel: equal results up to float rounding
        pipeline.components.model.backend = str(backend)
    return pipeline


def sampling_kwargs(cfg: DictConfig) -> dict:
    """The pipeline-call options of a predict/evaluate config (the original inference arguments).

    Out-of-range values raise :class:`InputError` naming the key, before any work starts.
    """
    checks = {
        "num_steps": (int(cfg.num_steps) >= 2, "must be >= 2 (the Euler schedule needs two time points)"),
        "noise_share_alpha": (0.0 <= float(cfg.noise_share_alpha) <= 1.0, "must lie in [0, 1]"),
        "octree_resolution": (int(cfg.octree_resolution) >= 8, "must be >= 8 (marching-cubes grid)"),
    }
    for key, (ok, rule) in checks.items():
        if not ok:
            raise InputError(f"{key}={cfg[key]} {rule}")
    return dict(
        num_steps=int(cfg.num_steps),
        guidance_scale=float(cfg.guidance_scale),
        noise_share_alpha=float(cfg.noise_share_alpha),
        seed=int(cfg.seed),
        octree_resolution=int(cfg.octree_resolution),
        mc_algo=str(cfg.mc_algo),
        num_chunks=int(cfg.num_chunks),
        hierarchical=bool(cfg.hierarchical),
        largest_component=bool(cfg.largest_component),
        progress=bool(cfg.progress),
        min_resolution=int(cfg.get("decode_min_resolution", 63)),
    )


def run_predict(cfg: DictConfig, pipeline=None, callback=None) -> Path:
    """Run the pipeline on ``cfg.input`` and write every export into ``cfg.output_dir`` (atomically).

    ``callback(stage, done, total)`` reports progress (the web app's bar; it may raise to cancel).
    """
    from sculpt4d import export
    from sculpt4d.inputs.config import frames_from_config
    from sculpt4d.utils.io import atomic_dir

    frames = frames_from_config(cfg, callback)
    pipeline = pipeline or build_pipeline(cfg)
    t0 = time.perf_counter()
    out = pipeline(frames.images, per_frame=bool(cfg.per_frame), callback=callback, **sampling_kwargs(cfg))
    total = time.perf_counter() - t0
    output_dir = Path(str(cfg.output_dir))
    ex = cfg.export
    with atomic_dir(output_dir) as tmp:
        if ex.get("inputs", True):
            frames.save(tmp / "inputs")
        if ex.obj:
            export.write_obj_sequence(out.meshes, tmp)
        if ex.glb:
            export.write_animated_glb(out.meshes, tmp / "sequence.glb", fps=float(ex.fps))
        renders = export.render_strip(out.meshes) if ex.strip_png and ex.video else None  # rendered once
        if ex.strip_png:
            export.make_strip_image(out.images, out.meshes, tmp / "strip.png", renders=renders)
        if ex.video:
            export.write_strip_video(
                out.images,
                out.meshes,
                tmp / "strip.gif",
                tmp / "strip.mp4",
                fps=float(ex.fps),
                renders=renders,
            )
        summary = {
            "input": frames.source,
            "frames": frames.names,
            "background": frames.methods,
            "ckpt": str(cfg.ckpt),
            "seconds": round(total, 3),
            "timings": {k: round(v, 3) for k, v in out.timings.items()},
            "faces_per_frame": [int(len(m.faces)) for m in out.meshes],
            "config": OmegaConf.to_container(
                OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True
            ),
        }
        (tmp / "prediction.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    log.info("wrote %d frames to %s in %.1f s", len(out.meshes), output_dir, total)
    print(f"[sculpt4d] {len(out.meshes)} meshes -> {output_dir} ({total:.1f} s)")
    return output_dir


def predict_main(cfg: DictConfig) -> Path | None:
    """Entry point body: user errors print one clear line and exit with status 2 (nothing written)."""
    from sculpt4d.config import run_user_task

    return run_user_task(run_predict, cfg)
