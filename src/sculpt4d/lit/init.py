"""Loading the previous stage's weights (``init_from``) and estimating the latent ``scale_factor``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from sculpt4d.errors import CheckpointError

log = logging.getLogger(__name__)


def resolve_init(spec: str | Path, root: str | Path | None = None) -> Path:
    """``init_from``: ``hf://...``, a path as given, or relative to ``root`` (the repository)."""
    from sculpt4d.hub import resolve_checkpoint

    s = str(spec)
    if not s.startswith("hf://") and not Path(s).expanduser().exists() and root is not None:
        cand = Path(root) / s
        if cand.exists():
            s = str(cand)
    return resolve_checkpoint(s)


def load_init(
    spec: str | Path, root: str | Path | None = None
) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """Read an export / checkpoint: ``({vae, model, conditioner} state dicts, its config.yaml or {})``."""
    from sculpt4d.hub import load_state_dict
    from sculpt4d.models.factory import split_components

    path = resolve_init(spec, root)
    cfg: dict[str, Any] = {}
    if path.is_dir() and (path / "config.yaml").is_file():
        cfg = OmegaConf.to_container(OmegaConf.load(path / "config.yaml"), resolve=True)  # type: ignore[assignment]
    parts = split_components(load_state_dict(path))
    log.info("init_from %s: %s", path, ", ".join(f"{k} ({len(v)} tensors)" for k, v in parts.items() if v))
    return parts, cfg


def init_scale_factor(cfg: dict) -> float | None:
    """``vae.scale_factor`` recorded in an export's config.yaml (``model.vae.scale_factor``), if any."""
    node = cfg.get("model", cfg) if cfg else {}
    vae = node.get("vae", {}) if isinstance(node, dict) else {}
    sf = vae.get("scale_factor") if isinstance(vae, dict) else None
    return float(sf) if sf is not None else None


LATENT_KEYS = ("scale_factor", "latent_mean", "latent_std")


def init_latent_stats(cfg: dict) -> dict:
    """The DiT latent statistics (``scale_factor``, ``latent_mean``, ``latent_std``) in an export's config."""
    node = cfg.get("model", cfg) if cfg else {}
    vae = node.get("vae", {}) if isinstance(node, dict) else {}
    return {k: vae[k] for k in LATENT_KEYS if isinstance(vae, dict) and vae.get(k) is not None}


def load_part(
    module: nn.Module,
    parts: dict[str, dict[str, torch.Tensor]],
    name: str,
    source: str,
    required: bool = True,
) -> bool:
    """Load ``parts[name]`` strictly into ``module``; False (or CheckpointError if required) when absent."""
    from sculpt4d.hub import load_into

    sd = parts.get(name) or {}
    if not sd:
        if required:
            raise CheckpointError(f"init_from {source}: no '{name}.*' weights (needed by this stage)")
        return False
    load_into(module, sd, strict=True, name=f"{source} [{name}]")
    return True


@torch.no_grad()
def estimate_latent_stats(vae: nn.Module, batches, max_batches: int = 16) -> dict:
    """Statistics of the VAE posterior means over training batches.

    ``scale_factor`` = 1 / global std (Stable-Diffusion/Hunyuan convention); ``latent_mean`` /
    ``latent_std``: per channel ``[C]`` lists. ``batches`` yields dicts with ``surface`` ``[B, T, P, 7]``;
    each frame is encoded alone.
    """
    values = []
    was_training = vae.training
    vae.eval()
    device = next(vae.parameters()).device
    gen = torch.Generator(device=device).manual_seed(0)
    for i, batch in enumerate(batches):
        if i >= max_batches:
            break
        surface = batch["surface"].flatten(0, 1).to(device)  # [B*T, P, 7]
        posterior, _ = vae.encode_posterior(surface, generator=gen)
        values.append(posterior.mode().float().flatten(0, -2).cpu())  # [B*T*N, C]
    vae.train(was_training)
    if not values:
        raise ValueError("estimate_latent_stats: no batches")
    z = torch.cat(values)  # [n, C]
    return {
        "scale_factor": 1.0 / max(z.std().item(), 1e-6),
        "latent_mean": z.mean(0).tolist(),
        "latent_std": z.std(0).clamp_min(1e-6).tolist(),
    }


def estimate_scale_factor(vae: nn.Module, batches, max_batches: int = 16) -> float:
    """``1 / std`` of the VAE posterior means over training batches."""
    return float(estimate_latent_stats(vae, batches, max_batches)["scale_factor"])
