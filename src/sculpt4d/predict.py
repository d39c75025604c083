"""The predict task: frames / a video / a zip -> frame_XXXX.obj + sequence.glb + strip video, written atomically."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from sculpt4d.errors import InputError

if TYPE_CHECKING:
    import torch

log = logging.getLogger("sculpt4d.predict")


def resolve_device(name: str) -> torch.device:
    import torch  # here, not at the top: Ctrl-C during the heavy imports of `sculpt4d-predict` exits 130

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device={name} requested but CUDA is not available here; use device=cpu")
    return device


def build_pipeline(cfg: DictConfig):
    """The pipeline a predict/evaluate config describes."""
    from sculpt4d.models.attention.backends import BACKENDS
    from sculpt4d.models.dit.backbone import COMPILE_MODES
    from sculpt4d.pipeline import Sculpt4DPipeline

    backend = cfg.get("attention_backend")
    if backend is not None and str(backend) not in BACKENDS:
        raise InputError(f"attention_backend={backend} is not one of {', '.join(BACKENDS)} (or null)")
    compile_mode = cfg.get("compile")
    if compile_mode is not None and str(compile_mode) not in COMPILE_MODES:
        raise InputError(f"compile={compile_mode} is not one of {', '.join(COMPILE_MODES)} (or null)")
    device = resolve_device(str(cfg.device))
    pipe = Sculpt4DPipeline.from_pretrained(
        str(cfg.ckpt),
        model_cfg=cfg.model,
        attention_cfg=cfg.get("attention"),
        device=device,
        dtype=str(cfg.dtype),
        offload=bool(cfg.get("offload", False)),
        sequence_length=cfg.get("sequence_length"),
        low_vram=bool(cfg.get("low_vram", False)),
        vae_from=cfg.get("vae_ckpt"),
    )
    pipe.preprocess_cfg.update(
        rgb_mode=str(cfg.get("rgb_mode", "segment")), bg_threshold=float(cfg.get("bg_threshold", 30.0))
    )
    if backend is not None:  # same mask, another kernel: equal results up to float rounding
        pipe.components.model.backend = str(backend)
    if compile_mode is not None:
        pipe.compile(str(compile_mode))
    return pipe


def _number(cfg: DictConfig, key: str, kind: type = int) -> int | float:
    """``cfg[key]`` as ``kind``; a value of the wrong type raises :class:`InputError` naming the key."""
    value = cfg.get(key)
    try:
        if kind is int and (isinstance(value, bool) or float(value) != int(float(value))):
            raise ValueError
        return kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        what = "an integer" if kind is int else "a number"
        raise InputError(f"{key}={value} must be {what}") from None


def peek_inference_defaults(cfg: DictConfig):
    """The inference defaults of ``cfg.ckpt`` read from its ``config.yaml`` alone (no weights), or None for a
    checkpoint that must be fetched or loaded first (``hf://``, a bare weights file)."""
    from sculpt4d.inference import InferenceDefaults, conf_model_node

    ckpt = Path(str(cfg.get("ckpt", "")))
    try:
        if not (ckpt / "config.yaml").is_file():
            return None
        exported = OmegaConf.load(ckpt / "config.yaml")
        node = exported.get("model", exported)
        return InferenceDefaults.from_config(exported, fallback_model=conf_model_node(node.get("name")))
    except Exception:  # noqa: BLE001 - an unreadable config is the loader's to report
        return None


def model_node_defaults(cfg: DictConfig):
    """Inference defaults from the composed ``model`` config (used until a remote checkpoint is loaded)."""
    from sculpt4d.inference import InferenceDefaults

    node = cfg.get("model")
    return (
        InferenceDefaults.from_config({"model": OmegaConf.to_container(node, resolve=True)}) if node else None
    )


def with_checkpoint_defaults(cfg: DictConfig, inference) -> DictConfig:
    """A copy of ``cfg`` whose ``null`` inference keys (``num_steps``, ``guidance_scale``,
    ``octree_resolution``, ``decode_min_resolution``, ``mc_level``, ``sequence_length``, ``frame_stride``,
    ``noise_share_alpha``, ``noise_scale``, ``sampling_shift``, ``guidance_until``, ``num_samples``) take the
    checkpoint's values (an :class:`~sculpt4d.inference.InferenceDefaults`, e.g. ``pipeline.inference``; None changes nothing)."""
    from omegaconf import open_dict

    from sculpt4d.inference import SAMPLING_KEYS

    if inference is None:
        return cfg
    out = cfg.copy()
    with open_dict(out):
        for key in SAMPLING_KEYS:
            if out.get(key) is None:
                out[key] = getattr(inference, key)
    return out


def sampling_kwargs(cfg: DictConfig) -> dict:
    """The pipeline-call options of a predict/evaluate config (the original inference arguments).

    Out-of-range or mistyped values raise :class:`InputError` naming the key, before any work starts.
    ``null`` inference keys stay ``None``: the pipeline then uses the checkpoint's value.
    """
    from sculpt4d.models.vae.surface import ALGOS
    from sculpt4d.pipeline import DECODE_DTYPE_CHOICES, DECODE_DTYPES

    nullable = (
        "num_steps",
        "num_samples",
        "octree_resolution",
        "decode_min_resolution",
        "guidance_scale",
        "noise_share_alpha",
        "noise_scale",
        "sampling_shift",
        "guidance_until",
        "mc_level",
    )
    n = {k: None if k in nullable and cfg.get(k) is None else _number(cfg, k)
         for k in ("num_steps", "num_samples", "seed", "octree_resolution", "decode_min_resolution", "num_chunks")}  # fmt: skip
    f = {k: None if k in nullable and cfg.get(k) is None else _number(cfg, k, float)
         for k in ("guidance_scale", "noise_share_alpha", "noise_scale", "sampling_shift", "guidance_until", "mc_level")}  # fmt: skip
    decode_dtype = str(cfg.get("decode_dtype", "auto"))
    checks = {
        "num_steps": (
            n["num_steps"] is None or n["num_steps"] >= 2,
            "must be >= 2 (the Euler schedule needs two time points)",
        ),
        "guidance_scale": (
            f["guidance_scale"] is None or f["guidance_scale"] >= 0.0,
            "must be >= 0 (0 = no guidance)",
        ),
        "noise_share_alpha": (
            f["noise_share_alpha"] is None or 0.0 <= f["noise_share_alpha"] <= 1.0,
            "must lie in [0, 1]",
        ),
        "noise_scale": (
            f["noise_scale"] is None or 0.0 <= f["noise_scale"] <= 1.0,
            "must lie in [0, 1] (the initial noise's standard deviation; 1 = as trained)",
        ),
        "sampling_shift": (
            f["sampling_shift"] is None or (math.isfinite(f["sampling_shift"]) and f["sampling_shift"] > 0.0),
            "must be a number > 0 (1 = evenly spaced Euler steps, > 1 = more of them at the noisy end)",
        ),
        "num_samples": (
            n["num_samples"] is None or n["num_samples"] >= 1,
            "must be >= 1 (sequences sampled and averaged)",
        ),
        "guidance_until": (
            f["guidance_until"] is None or 0.0 <= f["guidance_until"] <= 1.0,
            "must lie in [0, 1] (the flow time after which CFG stops; 1 = every step, 0 = none)",
        ),
        "octree_resolution": (
            n["octree_resolution"] is None or n["octree_resolution"] >= 8,
            "must be >= 8 (marching-cubes grid)",
        ),
        "decode_min_resolution": (
            n["decode_min_resolution"] is None or n["decode_min_resolution"] >= 2,
            "must be >= 2 (coarsest grid of the hierarchical decode)",
        ),
        "mc_level": (
            f["mc_level"] is None or math.isfinite(f["mc_level"]),
            "must be a finite number (an occupancy logit)",
        ),
        "num_chunks": (n["num_chunks"] >= 1, "must be >= 1 (query points per decoder call)"),
        "mc_algo": (
            str(cfg.mc_algo) in ALGOS,
            f"is not a surface extractor; choose one of {', '.join(ALGOS)}",
        ),
        "decode_dtype": (
            decode_dtype in DECODE_DTYPES,
            f"must be {DECODE_DTYPE_CHOICES} (the VAE decoder's queries)",
        ),
    }
    for key, (ok, rule) in checks.items():
        if not ok:
            raise InputError(f"{key}={cfg[key]} {rule}")
    return dict(
        num_steps=n["num_steps"],
        guidance_scale=f["guidance_scale"],
        noise_share_alpha=f["noise_share_alpha"],
        noise_scale=f["noise_scale"],
        sampling_shift=f["sampling_shift"],
        guidance_until=f["guidance_until"],
        num_samples=n["num_samples"],
        seed=n["seed"],
        octree_resolution=n["octree_resolution"],
        mc_algo=str(cfg.mc_algo),
        num_chunks=n["num_chunks"],
        hierarchical=bool(cfg.hierarchical),
        largest_component=bool(cfg.largest_component),
        progress=bool(cfg.progress),
        min_resolution=n["decode_min_resolution"],
        decode_dtype=decode_dtype,
        mc_level=f["mc_level"],
    )


def model_max_frames(cfg: DictConfig) -> int | None:
    """The temporal adapter's ``max_frames``: from an exported folder's config.yaml, else the model config.

    ``None`` when it cannot be told without loading (the checkpoint loader then reports any problem).
    """
    ckpt = Path(str(cfg.get("ckpt", "")))
    try:
        node = cfg.get("model")
        if (ckpt / "config.yaml").is_file():
            exported = OmegaConf.load(ckpt / "config.yaml")
            node = exported.get("model", exported)
        adapter = node.get("adapter")
        return int(adapter.get("max_frames", 64)) if adapter is not None else None
    except Exception:  # noqa: BLE001 - unreadable or unusual configs are the loader's to report
        return None


def check_options(cfg: DictConfig) -> dict:
    """Validate every predict/evaluate key that needs no model; returns the sampling options."""
    from sculpt4d.pipeline import resolve_dtype

    kwargs = sampling_kwargs(cfg)
    length = None if cfg.get("sequence_length") is None else _number(cfg, "sequence_length")
    stride = None if cfg.get("frame_stride") is None else _number(cfg, "frame_stride")
    if length is not None and length < 1:
        raise InputError(f"sequence_length={length} must be >= 1 (the number of frames to reconstruct)")
    if stride is not None and stride < 1:
        raise InputError(f"frame_stride={stride} must be >= 1")
    limit = model_max_frames(cfg)
    if limit is not None and length is not None and length > limit and not bool(cfg.get("per_frame", False)):
        raise InputError(
            f"sequence_length={length} exceeds the model's max_frames={limit} (the temporal adapter's "
            f"limit); pass sequence_length<={limit}"
        )
    if str(cfg.get("rgb_mode", "segment")) not in ("segment", "whole"):
        raise InputError(f"rgb_mode={cfg.rgb_mode} must be segment or whole")
    if "bg_threshold" in cfg:
        _number(cfg, "bg_threshold", float)
    resolve_dtype(str(cfg.dtype), resolve_device(str(cfg.device)))
    return kwargs


def predict_output_dir(cfg: DictConfig, inputs: list[Path]) -> Path:
    """``cfg.output_dir`` after the safety checks of :func:`sculpt4d.utils.io.check_output_dir`."""
    from sculpt4d.config import hydra_job_dir
    from sculpt4d.utils.io import check_output_dir

    return check_output_dir(
        str(cfg.output_dir),
        marker="prediction.json",
        inputs=inputs,
        overwrite=bool(cfg.get("overwrite", False)),
        own_dirs=hydra_job_dir(),
    )


def run_predict(cfg: DictConfig, pipeline=None, callback=None) -> Path:
    """Run the pipeline on ``cfg.input`` and write every export into ``cfg.output_dir`` (atomically).

    Every key, the input frames and the output location are checked before the model is loaded.
    ``callback(stage, done, total)`` reports progress (the web app's bar; it may raise to cancel).
    """
    from sculpt4d import export
    from sculpt4d.inputs.config import frames_from_config
    from sculpt4d.inputs.frames import resolve
    from sculpt4d.utils.io import atomic_dir

    # the checkpoint's defaults from its config.yaml (no weights loaded), else the model config's for now
    cfg = with_checkpoint_defaults(cfg, peek_inference_defaults(cfg) or model_node_defaults(cfg))
    check_options(cfg)
    inputs = cfg.input if isinstance(cfg.input, str) else list(cfg.input)
    sources = [resolve(str(s), cfg.paths.data_dir) for s in ([inputs] if isinstance(inputs, str) else inputs)]
    output_dir = predict_output_dir(cfg, sources)
    frames = frames_from_config(cfg, callback)
    order = "lexicographic" if sorted(frames.names) == list(frames.names) else "natural"
    pipeline = pipeline or build_pipeline(cfg)
    cfg = with_checkpoint_defaults(cfg, pipeline.inference)  # a remote checkpoint's, now that it is loaded
    kwargs = sampling_kwargs(cfg)
    t0 = time.perf_counter()
    out = pipeline(frames.images, per_frame=bool(cfg.per_frame), callback=callback, **kwargs)
    total = time.perf_counter() - t0
    ex = cfg.export
    with atomic_dir(output_dir, overwrite=True) as tmp:
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
            "frame_order": order,
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


def main() -> None:
    """``python -m sculpt4d.predict`` / ``sculpt4d-predict`` / ``python predict.py``: compose
    ``conf/predict.yaml`` with the command line and run :func:`run_predict`. User errors print one line and
    exit 2, Ctrl-C exits 130 (the heavy imports included)."""
    from sculpt4d.config import hydra_main

    hydra_main("predict", run_predict)


if __name__ == "__main__":
    main()
