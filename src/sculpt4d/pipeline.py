"""Sculpt4DPipeline: image sequence -> mesh sequence.

It only orchestrates (diffusers style): read + preprocess frames -> encode the condition per frame ->
sample latents for the whole sequence with the Euler flow sampler and CFG (initial noise shared across
frames) -> decode each frame's latents with the VAE -> extract a mesh per frame. Used by ``predict.py``,
the notebook and evaluation.
"""

from __future__ import annotations

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
from sculpt4d.models.factory import Components

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}
Progress = Callable[[str, int, int], None]  # (stage, done, total): "sampling" steps, "decoding" frames


def list_demos(data_dir: str | Path = "data") -> list[str]:
    demos = Path(data_dir) / "demos"
    return sorted(p.name for p in demos.iterdir() if p.is_dir()) if demos.is_dir() else []


def resolve_input_dir(spec: str | Path, data_dir: str | Path = "data") -> Path:
    """A path is tried as given, then under ``data/``; a miss lists the bundled demos."""
    for candidate in (Path(spec), Path(data_dir) / spec):
        if candidate.is_dir():
            return candidate
    demos = ", ".join(f"demos/{d}" for d in list_demos(data_dir)) or "none found"
    raise InputError(
        f"input folder '{spec}' does not exist (also looked in '{Path(data_dir) / spec}'). "
        f"Bundled demos: {demos}"
    )


def list_frames(folder: str | Path, sequence_length: int, stride: int = 1) -> list[Path]:
    """Every ``stride``-th image of ``folder`` in sorted filename order, the first ``sequence_length`` of them."""
    folder = Path(folder)
    if stride < 1:
        raise InputError(f"frame_stride must be >= 1, got {stride}")
    frames = sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
    if not frames:
        raise InputError(
            f"{folder}: no images found (expected {', '.join(IMAGE_SUFFIXES)} files, e.g. frame_0000.png ...)"
        )
    need = (sequence_length - 1) * stride + 1
    if len(frames) < need:
        hint = f"pass sequence_length={(len(frames) - 1) // stride + 1}"
        if stride > 1:
            hint += f" or frame_stride={max(1, (len(frames) - 1) // max(sequence_length - 1, 1))}"
        raise InputError(
            f"{folder}: {len(frames)} image(s) found but the model needs {need} frames "
            f"(sequence_length={sequence_length} every frame_stride={stride}). Add {need - len(frames)} more, or "
            f"{hint}."
        )
    return frames[:need:stride]


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` = bf16 on CUDA, fp32 elsewhere (bf16 is not faster on CPU)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise InputError(f"dtype must be one of auto, bf16, fp32, fp16 (got '{name}')")
    return DTYPES[name]


@dataclass
class PipelineOutput:
    meshes: list[trimesh.Trimesh]
    latents: torch.Tensor  # [T, N, C] (DiT scale)
    images: list[Image.Image]  # preprocessed RGB inputs (what the model saw)
    timings: dict[str, float] = field(default_factory=dict)


class Sculpt4DPipeline:
    """Frames -> meshes with a frozen VAE, a 4D DiT and a per-frame image conditioner."""

    def __init__(
        self,
        components: Components,
        preprocess: dict[str, Any] | None = None,
        sequence_length: int = 8,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        offload: bool = False,
    ) -> None:
        self.components = components.eval()
        self.preprocess_cfg = {"size": 512, "border_ratio": 0.15, **(preprocess or {})}
        self.sequence_length = sequence_length
        self.device = torch.device(device)
        self.dtype = dtype
        self.offload = offload
        if not offload:
            self.components.to(self.device)

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
    ) -> Sculpt4DPipeline:
        """Load from an exported folder (config.yaml + safetensors), a local checkpoint or ``hf://``."""
        from omegaconf import OmegaConf

        from sculpt4d.hub import load_state_dict, resolve_checkpoint
        from sculpt4d.models.factory import build_components, load_component_weights, load_exported

        device = torch.device(device)
        path = resolve_checkpoint(str(spec))
        if (path / "config.yaml").is_file() if path.is_dir() else False:
            components, cfg = load_exported(path, attention_cfg)
            model_node = cfg.get("model", cfg)
        else:
            if model_cfg is None:
                raise InputError(f"{path}: a raw checkpoint needs a model config (e.g. model=sculpt4d)")
            components = build_components(model_cfg, attention_cfg, four_d=True)
            load_component_weights(components, load_state_dict(path), source=str(path))
            model_node = model_cfg
        model_node = OmegaConf.create(model_node) if not hasattr(model_node, "get") else model_node
        torch_dtype = dtype if isinstance(dtype, torch.dtype) else resolve_dtype(str(dtype), device)
        return cls(
            components,
            preprocess=dict(model_node.get("preprocess", {}) or {}),
            sequence_length=int(sequence_length or model_node.get("sequence_length", 8)),
            device=device,
            dtype=torch_dtype,
            offload=offload,
        )

    def with_attention(self, variant: str, **mask_cfg: Any) -> Sculpt4DPipeline:
        """The same weights (backbone + adapter) run under another attention variant.

        Block size and backend stay those the model was trained with; ``mask_cfg`` overrides the variant's
        own keys (anchor, decay, ...). Used for inference-time variant comparisons in evaluation.
        """
        from sculpt4d.models.dit import DiT4D

        model = self.components.model
        attention = {"variant": variant, "block_size": model.block_size, "backend": model.backend, **mask_cfg}
        swapped = DiT4D(model.backbone, attention, lora_rank=model.lora_rank, max_frames=model.max_frames)
        swapped.adapter.load_state_dict(model.adapter.state_dict())
        comps = Components(
            vae=self.components.vae, model=swapped.to(self.device), conditioner=self.components.conditioner
        )
        return Sculpt4DPipeline(
            comps, self.preprocess_cfg, self.sequence_length, self.device, self.dtype, self.offload
        )

    # ---------------------------------------------------------------- stages
    def load_images(self, frames: Sequence[str | Path | Image.Image | np.ndarray]) -> torch.Tensor:
        """Read + preprocess frames -> ``[T, 3, S, S]`` in [-1, 1] (``preprocess.crop``: per frame or one
        box for the whole sequence, as the model was trained)."""
        from sculpt4d.utils.images import load_image, preprocess_images

        images = [load_image(f) if isinstance(f, str | Path) else f for f in frames]
        return preprocess_images(
            images,
            crop=str(self.preprocess_cfg.get("crop", "frame")),
            size=int(self.preprocess_cfg["size"]),
            border_ratio=float(self.preprocess_cfg["border_ratio"]),
        )  # [T, 3, S, S]

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
        num_steps: int = 50,
        guidance_scale: float = 5.0,
        noise_share_alpha: float = 1.0,
        seed: int = 0,
        per_frame: bool = False,
        progress: bool = True,
        callback: Progress | None = None,
    ) -> torch.Tensor:
        """Euler flow sampling with CFG; returns DiT-scale latents ``[1, T, N, C]``."""
        from sculpt4d.diffusion import EulerSampler, shared_noise

        model = self._place(self.components.model)
        vae = self.components.vae
        T = cond.shape[1]
        N, C = vae.num_latents, vae.embed_dim
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        noise = shared_noise((1, T, N, C), alpha=noise_share_alpha, generator=gen).to(self.device)
        sampler = EulerSampler(num_steps=num_steps)
        uncond = torch.zeros_like(cond)

        def model_fn(x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                return model(x, t, c).float()

        runs = T if per_frame else 1

        def step_fn(run: int):
            if callback is None:
                return None
            return lambda i, t, x: callback("sampling", run * num_steps + i + 1, runs * num_steps)

        if per_frame:  # the per-frame 3D baseline: the same model applied to each frame alone (T=1)
            outs = [
                sampler.sample(
                    model_fn,
                    noise[:, t : t + 1],
                    cond[:, t : t + 1],
                    uncond[:, t : t + 1],
                    guidance_scale=guidance_scale,
                    progress=progress,
                    callback=step_fn(t),
                )
                for t in range(T)
            ]
            latents = torch.cat(outs, dim=1)
        else:
            latents = sampler.sample(
                model_fn,
                noise,
                cond,
                uncond,
                guidance_scale=guidance_scale,
                progress=progress,
                callback=step_fn(0),
            )
        self._release(model)
        return latents

    @torch.no_grad()
    def decode(
        self,
        latents: torch.Tensor,  # [1, T, N, C]
        octree_resolution: int = 256,
        mc_algo: str = "mc",
        num_chunks: int = 8000,
        hierarchical: bool = True,
        largest_component: bool = True,
        bounds: float = 1.01,
        callback: Progress | None = None,
        min_resolution: int = 63,
    ) -> list[trimesh.Trimesh]:
        """VAE-decode each frame and extract its surface (``min_resolution``: coarsest hierarchical level)."""
        vae = self._place(self.components.vae)
        z = vae.from_dit(latents[0].float())  # [T, N, C]
        meshes: list[trimesh.Trimesh] = []
        for t in range(z.shape[0]):
            mesh = vae.latents_to_mesh(
                z[t : t + 1],
                bounds=bounds,
                octree_resolution=octree_resolution,
                mc_level=0.0,
                num_chunks=num_chunks,
                mc_algo=mc_algo,
                hierarchical=hierarchical,
                min_resolution=min_resolution,
            )[0]
            if largest_component and len(mesh.faces):
                parts = mesh.split(only_watertight=False)
                if len(parts) > 1:
                    mesh = max(parts, key=lambda m: len(m.faces))
            meshes.append(mesh)
            if callback is not None:
                callback("decoding", t + 1, z.shape[0])
        self._release(vae)
        return meshes

    def __call__(
        self,
        frames: Sequence[str | Path | Image.Image | np.ndarray],
        num_steps: int = 50,
        guidance_scale: float = 5.0,
        noise_share_alpha: float = 1.0,
        seed: int = 0,
        octree_resolution: int = 256,
        mc_algo: str = "mc",
        num_chunks: int = 8000,
        hierarchical: bool = True,
        largest_component: bool = True,
        per_frame: bool = False,
        progress: bool = True,
        callback: Progress | None = None,
        min_resolution: int = 63,
    ) -> PipelineOutput:
        """``callback(stage, done, total)`` after each sampling step and each decoded frame (may raise to stop)."""
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        images = self.load_images(frames)
        cond = self.encode_condition(images)
        timings["condition_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        latents = self.sample_latents(
            cond, num_steps, guidance_scale, noise_share_alpha, seed, per_frame, progress, callback
        )
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
        )
        timings["decode_s"] = time.perf_counter() - t0
        pil = [
            Image.fromarray(((img.permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8))
            for img in images
        ]
        return PipelineOutput(meshes=meshes, latents=latents[0].cpu(), images=pil, timings=timings)
