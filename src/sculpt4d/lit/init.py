"""The previous stage's latent statistics (``init_from``) and estimating them; the weights themselves are read
and loaded by :mod:`sculpt4d.checkpoints.load` (re-exported here: ``load_init``, ``load_part``)."""

from __future__ import annotations

import logging

import torch
from torch import nn

from sculpt4d.checkpoints.load import (  # noqa: F401  (re-exported)
    LATENT_KEYS,
    adopt_latent_stats,
    init_latent_stats,
    load_part,
    resolve_init,
)
from sculpt4d.checkpoints.load import read_parts as load_init  # noqa: F401

log = logging.getLogger(__name__)


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
