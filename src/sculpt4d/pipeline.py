"""Sculpt4DPipeline: image sequence -> mesh sequence.

It only orchestrates (diffusers style): read + preprocess frames -> encode the condition per frame ->
sample latents for the whole sequence with the Euler flow sampler and CFG (initial noise shared across
frames) -> decode each frame's latents with the VAE -> extract a mesh per frame. Used by ``predict.py``,
the notebook and evaluation.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import trimesh
from PIL import Image

from sculpt4d.errors import InputError
from sculpt4d.inference import InferenceDefaults, conf_model_node
from sculpt4d.models.factory import Components
from sculpt4d.utils.images import IMAGE_SUFFIXES
from sculpt4d.utils.interrupt import raise_if_interrupted

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}
Progress = Callable[[str, int, int], None]  # (stage, done, total): "sampling" steps, "decoding" frames
#: ``low_vram``: tokens per chunk of the DiT's MLPs (paper model, bf16: a 268 MB hidden activation per chunk)
LOW_VRAM_FF_TOKENS = 16384


def list_demos(data_dir: str | Path = "data") -> list[str]:
    demos = Path(data_dir) / "demos"
    return sorted(p.name for p in demos.iterdir() if p.is_dir()) if demos.is_dir() else []


def resolve_input_dir(spec: str | Path, data_dir: str | Path = "data") -> Path:
    """A path is tried as given, then under ``data/``; a miss lists the bundled demos."""
    candidates = list(dict.fromkeys((Path(spec), Path(data_dir) / spec)))
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    for candidate in candidates:
        if candidate.exists():
            raise InputError(
                f"input={spec}: '{candidate}' is a file, not a folder of frames; pass the folder that holds "
                "the frame images (for a video, extract its frames first, e.g. ffmpeg -i clip.mp4 frames/%04d.png)"
            )
    demos = ", ".join(f"demos/{d}" for d in list_demos(data_dir)) or "none found"
    also = f" (also looked in '{candidates[1]}')" if len(candidates) > 1 else ""
    raise InputError(f"input folder '{spec}' does not exist{also}. Bundled demos: {demos}")


def _natural_key(name: str) -> list:
    """``frame10.png`` -> ``['frame', 10, '.png']``: numbers compare by value."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def sort_frames(paths: Sequence[Path]) -> tuple[list[Path], str]:
    """Frame files in natural order (``2.png`` before ``10.png``) and the order's name.

    Returns ``"lexicographic"`` when plain filename order gives the same sequence (zero-padded names),
    ``"natural"`` when numbers in the names had to be compared by value.
    """
    plain = sorted(paths, key=lambda p: p.name)
    natural = sorted(plain, key=lambda p: _natural_key(p.name))
    return natural, "lexicographic" if natural == plain else "natural"


def image_files(folder: str | Path) -> tuple[list[Path], str]:
    """The images of ``folder`` (hidden files skipped) in frame order, and that order's name."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
    if not files:
        raise InputError(
            f"{folder}: no images found (expected {', '.join(IMAGE_SUFFIXES)} files, e.g. frame_0000.png ...)"
        )
    return sort_frames(files)


def _too_few_hint(count: int, sequence_length: int, stride: int) -> str:
    """Settings that fit ``count`` images: a shorter sequence, or a smaller stride only if one really fits."""
    hint = f"pass sequence_length={(count - 1) // stride + 1}"
    fitting = (count - 1) // (sequence_length - 1) if sequence_length > 1 else 0
    if 1 <= fitting < stride:
        return f"{hint} or frame_stride={fitting}"
    return f"{hint} (no frame_stride fits {sequence_length} frames in {count} image(s))"


def list_frames(folder: str | Path, sequence_length: int, stride: int = 1) -> list[Path]:
    """Every ``stride``-th image of ``folder`` in frame order (:func:`sort_frames`), the first ``sequence_length``."""
    folder = Path(folder)
    if stride < 1:
        raise InputError(f"frame_stride must be >= 1, got {stride}")
    if sequence_length < 1:
        raise InputError(f"sequence_length must be >= 1, got {sequence_length}")
    frames, _ = image_files(folder)
    need = (sequence_length - 1) * stride + 1
    if len(frames) < need:
        raise InputError(
            f"{folder}: {len(frames)} image(s) found but the model needs {need} frames "
            f"(sequence_length={sequence_length} every frame_stride={stride}). Add {need - len(frames)} more, or "
            f"{_too_few_hint(len(frames), sequence_length, stride)}."
        )
    return frames[:need:stride]


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` = bf16 on CUDA, fp32 elsewhere (bf16 is not faster on CPU)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise InputError(f"dtype must be one of auto, bf16, fp32, fp16 (got '{name}')")
    return DTYPES[name]


DECODE_DTYPES = ("auto", "fp32", "bf16")  # the `decode_dtype` choices
DECODE_DTYPE_CHOICES = f"{', '.join(DECODE_DTYPES[:-1])} or {DECODE_DTYPES[-1]}"  # for messages


def resolve_decode_dtype(name: str, device: torch.device) -> torch.dtype:
    """The VAE decoder's query dtype: ``auto`` = bf16 on CUDA and on CPUs with bf16 dot products
    (AVX512-BF16 or AMX), where it decodes the same benchmark scores faster; fp32 elsewhere (emulated bf16
    would be slower)."""
    if name == "auto":
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return torch.bfloat16 if device.type == "cuda" or native else torch.float32
    if name not in DECODE_DTYPES:
        raise InputError(f"decode_dtype must be {DECODE_DTYPE_CHOICES} (got '{name}')")
    return DTYPES[name]


@dataclass
class PipelineOutput:
    meshes: list[trimesh.Trimesh]
    latents: torch.Tensor  # [T, N, C] (DiT scale; the first of num_samples)
    images: list[Image.Image]  # preprocessed RGB inputs (what the model saw)
    timings: dict[str, float] = field(default_factory=dict)


class Sculpt4DPipeline:
    """Frames -> meshes with a frozen VAE, a 4D DiT and a per-frame image conditioner."""

    def __init__(
        self,
        components: Components,
        preprocess: dict[str, Any] | None = None,
        sequence_length: int | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        offload: bool = False,
        inference: InferenceDefaults | None = None,
        low_vram: bool = False,
    ) -> None:
        """``inference``: the checkpoint's defaults (:mod:`sculpt4d.inference`); ``preprocess`` and
        ``sequence_length`` override them. ``low_vram``: sample with the CFG pair as two passes and the
        DiT's MLPs over ``LOW_VRAM_FF_TOKENS`` tokens at a time (less activation memory, same latents up to
        float rounding)."""
        self.components = components.eval()
        self.inference = (inference or InferenceDefaults()).override(
            preprocess=preprocess, sequence_length=sequence_length
        )
        self.device = torch.device(device)
        self.dtype = dtype
        self.offload = offload
        self.low_vram = low_vram
        if not offload:
            self.components.to(self.device)

    @property
    def preprocess_cfg(self) -> dict[str, Any]:
        return self.inference.preprocess

    @property
    def sequence_length(self) -> int:
        return self.inference.sequence_length

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_pretrained(
        cls,
        spec: str | Path,
        model_cfg: Any | None = None,
        attention_cfg: Any | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "auto",
        offload: bool = False,
        sequence_length: int | None = None,
        low_vram: bool = False,
        vae_from: str | Path | None = None,
    ) -> Sculpt4DPipeline:
        """Load from an exported folder (config.yaml + safetensors), a local checkpoint or ``hf://``.

        The inference defaults come from the export's ``config.yaml`` (``inference:``, else its model node),
        then from ``model_cfg`` (see :class:`~sculpt4d.inference.InferenceDefaults`). ``vae_from``: another
        export whose VAE (weights and latent statistics) replaces this one's, e.g. a VAE trained on after the DiT.
        """
        from sculpt4d.checkpoints.load import load_component_weights, load_exported, load_vae_from
        from sculpt4d.checkpoints.read import load_state_dict
        from sculpt4d.checkpoints.resolve import resolve_checkpoint
        from sculpt4d.models.factory import build_components

        device = torch.device(device)
        path = resolve_checkpoint(str(spec))
        if (path / "config.yaml").is_file() if path.is_dir() else False:
            components, cfg = load_exported(path, attention_cfg)
            if model_cfg is None:
                model_cfg = conf_model_node(cfg.get("model", {}).get("name"))
            inference = InferenceDefaults.from_config(cfg, fallback_model=model_cfg)
        else:
            if model_cfg is None:
                raise InputError(f"{path}: a raw checkpoint needs a model config (e.g. model=sculpt4d)")
            components = build_components(model_cfg, attention_cfg, four_d=True)
            load_component_weights(components, load_state_dict(path), source=str(path))
            inference = InferenceDefaults.from_config({"model": model_cfg})
        if vae_from is not None:
            load_vae_from(components.vae, vae_from)  # resolved like ckpt (hf://, a path)
        if attention_cfg is not None:
            inference = inference.override(attention=attention_cfg)
        torch_dtype = dtype if isinstance(dtype, torch.dtype) else resolve_dtype(str(dtype), device)
        return cls(
            components,
            sequence_length=sequence_length,
            device=device,
            dtype=torch_dtype,
            offload=offload,
            inference=inference,
            low_vram=low_vram,
        )

    def compile(self, mode: str | None = "default") -> Sculpt4DPipeline:
        """torch.compile the DiT's regions around self-attention (``HunyuanDiT.compile_regions``; ``mode``
        ``reduce-overhead`` adds CUDA graphs on a GPU; None: eager again). The first sampling step pays the
        compilation; the latents equal eager ones up to float rounding."""
        model = self.components.model
        getattr(model, "backbone", model).compile_regions(mode)
        return self

    def with_attention(self, variant: str, **mask_cfg: Any) -> Sculpt4DPipeline:
        """The same weights (backbone + adapter) run under another attention variant.

        Block size and backend stay those the model was trained with; ``mask_cfg`` overrides the variant's
        own keys (anchor, decay, ...). Used for inference-time variant comparisons in evaluation.
        """
        from sculpt4d.models.factory import wrap_4d

        model = self.components.model
        attention = {"variant": variant, "block_size": model.block_size, "backend": model.backend, **mask_cfg}
        adapter = {"lora_rank": model.lora_rank, "max_frames": model.max_frames}
        swapped = wrap_4d(model.backbone, attention, adapter)
        swapped.adapter.load_state_dict(model.adapter.state_dict())
        comps = Components(
            vae=self.components.vae, model=swapped.to(self.device), conditioner=self.components.conditioner
        )
        return Sculpt4DPipeline(
            comps,
            device=self.device,
            dtype=self.dtype,
            offload=self.offload,
            inference=self.inference.override(attention=attention),
            low_vram=self.low_vram,
        )

    # ---------------------------------------------------------------- stages
    def load_images(self, frames: Sequence[str | Path | Image.Image | np.ndarray]) -> torch.Tensor:
        """Read + preprocess frames -> ``[T, 3, S, S]`` in [-1, 1] (``preprocess.crop``: per frame or one
        box for the whole sequence, as the model was trained); an error names the frame's file."""
        from sculpt4d.utils.images import preprocess_images

        cfg = self.preprocess_cfg
        return preprocess_images(
            frames,
            crop=str(cfg.get("crop", "frame")),
            rgb_mode=str(cfg.get("rgb_mode", "segment")),
            bg_threshold=float(cfg.get("bg_threshold", 30.0)),
            names=[str(f) if isinstance(f, str | Path) else f"frame {i}" for i, f in enumerate(frames)],
            size=int(cfg["size"]),
            border_ratio=float(cfg["border_ratio"]),
        )  # [T, 3, S, S]

    def check_length(self, num_frames: int) -> None:
        """:class:`InputError` when the temporal adapter cannot take ``num_frames`` frames."""
        limit = getattr(self.components.model, "max_frames", None)
        if limit is not None and num_frames > int(limit):
            raise InputError(
                f"sequence_length={num_frames} exceeds this model's max_frames={limit} "
                "(the temporal adapter's limit); pass sequence_length<={limit}"
            )

    def _place(self, module: torch.nn.Module) -> torch.nn.Module:
        return module.to(self.device) if self.offload else module

    def _release(self, module: torch.nn.Module) -> None:
        if self.offload:
            module.to("cpu")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    @torch.no_grad()
    def encode_condition(self, images: torch.Tensor) -> torch.Tensor:
        """``[T, 3, S, S]`` -> ``[1, T, L, D]`` conditioner tokens."""
        cond = self._place(self.components.conditioner)
        feats = cond(images[None].to(self.device))
        self._release(cond)
        return feats

    @torch.no_grad()
    def sample_latents(
        self,
        cond: torch.Tensor,  # [1, T, L, D]
        num_steps: int | None = None,
        guidance_scale: float | None = None,
        noise_share_alpha: float | None = None,
        seed: int = 0,
        per_frame: bool = False,
        progress: bool = True,
        callback: Progress | None = None,
        noise_scale: float | None = None,
        sampling_shift: float | None = None,
        guidance_until: float | None = None,
        num_samples: int | None = None,
    ) -> torch.Tensor:
        """Euler flow sampling with CFG; returns DiT-scale latents ``[K, T, N, C]``, K = ``num_samples``
        (the checkpoint's, 1 unless it says): K sequences from K initial noises drawn in turn from ``seed``'s
        generator (the first is the K = 1 sample), which :meth:`decode` averages.

        ``None`` = the checkpoint's ``num_steps`` / ``guidance_scale`` / ``noise_share_alpha`` /
        ``noise_scale`` (the initial noise's standard deviation: below 1 samples at a lower temperature) /
        ``sampling_shift`` (> 1: more of the steps at the noisy end) / ``guidance_until`` (CFG only at flow times
        below it; :class:`~sculpt4d.diffusion.EulerSampler`)."""
        from sculpt4d.diffusion import EulerSampler, shared_noise

        num_steps = self.inference.num_steps if num_steps is None else int(num_steps)
        if noise_share_alpha is None:
            noise_share_alpha = self.inference.noise_share_alpha
        guidance_scale = self.inference.guidance_scale if guidance_scale is None else float(guidance_scale)
        noise_scale = self.inference.noise_scale if noise_scale is None else float(noise_scale)
        shift = self.inference.sampling_shift if sampling_shift is None else float(sampling_shift)
        until = self.inference.guidance_until if guidance_until is None else float(guidance_until)
        K = self.inference.num_samples if num_samples is None else int(num_samples)

        model = self._place(self.components.model)
        vae = self.components.vae
        T = cond.shape[1]
        N, C = vae.num_latents, vae.embed_dim
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        noise = torch.cat(
            [shared_noise((1, T, N, C), alpha=noise_share_alpha, generator=gen) for _ in range(K)]
        )
        noise = noise.to(self.device) * noise_scale  # [K, T, N, C]
        cond = cond.expand(K, *cond.shape[1:])  # [K, T, L, D]
        sampler = EulerSampler(
            num_steps=num_steps, cfg_batch=not self.low_vram, shift=shift, guidance_until=until
        )
        backbone = getattr(model, "backbone", model)
        if self.low_vram:  # any velocity model samples; only the DiT needs to know how to chunk
            backbone.set_ff_chunk_tokens(LOW_VRAM_FF_TOKENS)
        uncond = torch.zeros_like(cond)

        def model_fn(x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                return model(x, t, c).float()

        def step_fn(i: int, t: torch.Tensor, x: torch.Tensor) -> None:
            if callback is not None:
                callback("sampling", i + 1, num_steps)

        try:
            if per_frame:
                # The per-frame 3D baseline: the same model on each frame alone (T=1), the K·T frames as one
                # batch [K·T, 1, N, C] (the same numbers as a loop over frames up to float rounding, ~1.3x sooner).
                frames_alone = lambda a: a.reshape(K * T, 1, *a.shape[2:])  # noqa: E731  [K, T, ...] -> [K·T, 1, ...]
                latents = sampler.sample(
                    model_fn,
                    frames_alone(noise),
                    frames_alone(cond),
                    frames_alone(uncond),
                    guidance_scale=guidance_scale,
                    progress=progress,
                    callback=step_fn,
                ).reshape(K, T, N, C)
            else:
                latents = sampler.sample(
                    model_fn,
                    noise,
                    cond,
                    uncond,
                    guidance_scale=guidance_scale,
                    progress=progress,
                    callback=step_fn,
                )
        finally:
            if self.low_vram:
                backbone.set_ff_chunk_tokens(None)
        self._release(model)
        return latents

    @torch.no_grad()
    def decode(
        self,
        latents: torch.Tensor,  # [K, T, N, C]
        octree_resolution: int | None = None,
        mc_algo: str = "mc",
        num_chunks: int = 8000,
        hierarchical: bool = True,
        largest_component: bool = True,
        bounds: float = 1.01,
        callback: Progress | None = None,
        min_resolution: int | None = None,
        decode_dtype: str = "auto",
        mc_level: float | None = None,
    ) -> list[trimesh.Trimesh]:
        """VAE-decode each frame and extract its surface, of the K samples' mean occupancy probability when
        K > 1 (``None`` = the checkpoint's ``octree_resolution`` /
        ``decode_min_resolution``: the coarsest hierarchical level / ``mc_level``: the occupancy logit the
        surface is drawn at). ``decode_dtype``: the geometry decoder's queries in fp32 or under bf16
        autocast (:func:`resolve_decode_dtype`)."""
        query_dtype = resolve_decode_dtype(decode_dtype, self.device)
        if octree_resolution is None:
            octree_resolution = self.inference.octree_resolution
        if min_resolution is None:
            min_resolution = self.inference.decode_min_resolution
        if mc_level is None:
            mc_level = self.inference.mc_level
        vae = self._place(self.components.vae)
        z = vae.from_dit(latents.float())  # [K, T, N, C]
        meshes: list[trimesh.Trimesh] = []
        for t in range(z.shape[1]):
            raise_if_interrupted()
            mesh = vae.latents_to_mesh(
                z[:, t],
                ensemble=True,
                bounds=bounds,
                octree_resolution=octree_resolution,
                mc_level=mc_level,
                num_chunks=num_chunks,
                mc_algo=mc_algo,
                hierarchical=hierarchical,
                largest_component=largest_component,
                min_resolution=min_resolution,
                query_dtype=query_dtype,
            )[0]
            meshes.append(mesh)
            if callback is not None:
                callback("decoding", t + 1, z.shape[1])
        self._release(vae)
        return meshes

    def frames(self, folder: str | Path, frame_stride: int | None = None) -> list[Path]:
        """The frames of ``folder`` the model reads: every ``frame_stride``-th, ``sequence_length`` of them."""
        stride = self.inference.frame_stride if frame_stride is None else int(frame_stride)
        return list_frames(folder, self.sequence_length, stride)

    def __call__(
        self,
        frames: str | Path | Sequence[str | Path | Image.Image | np.ndarray],
        num_steps: int | None = None,
        guidance_scale: float | None = None,
        noise_share_alpha: float | None = None,
        seed: int = 0,
        octree_resolution: int | None = None,
        mc_algo: str = "mc",
        num_chunks: int = 8000,
        hierarchical: bool = True,
        largest_component: bool = True,
        per_frame: bool = False,
        progress: bool = True,
        callback: Progress | None = None,
        min_resolution: int | None = None,
        decode_dtype: str = "auto",
        mc_level: float | None = None,
        noise_scale: float | None = None,
        sampling_shift: float | None = None,
        guidance_until: float | None = None,
        num_samples: int | None = None,
    ) -> PipelineOutput:
        """``frames``: a folder (read with :meth:`frames`: the checkpoint's ``sequence_length`` and
        ``frame_stride``) or the frames themselves, used as given. ``None`` options take the checkpoint's
        defaults (``pipeline.inference``). ``callback(stage, done, total)`` after each sampling step and each
        decoded frame (may raise to stop)."""
        if isinstance(frames, str | Path):
            frames = self.frames(frames)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        if not per_frame:
            self.check_length(len(frames))
        images = self.load_images(frames)
        cond = self.encode_condition(images)
        timings["condition_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        latents = self.sample_latents(
            cond, num_steps, guidance_scale, noise_share_alpha, seed, per_frame, progress, callback,
            noise_scale=noise_scale, sampling_shift=sampling_shift, guidance_until=guidance_until,
            num_samples=num_samples,
        )  # fmt: skip
        timings["sample_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        meshes = self.decode(
            latents,
            octree_resolution,
            mc_algo,
            num_chunks,
            hierarchical,
            largest_component,
            callback=callback,
            min_resolution=min_resolution,
            decode_dtype=decode_dtype,
            mc_level=mc_level,
        )
        timings["decode_s"] = time.perf_counter() - t0
        pil = [
            Image.fromarray(((img.permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8))
            for img in images
        ]
        return PipelineOutput(meshes=meshes, latents=latents[0].cpu(), images=pil, timings=timings)
