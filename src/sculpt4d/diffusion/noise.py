"""Noise shared across the frames of a sequence (design.md §5)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def shared_noise(
    shape: Sequence[int],
    alpha: float = 1.0,
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Gaussian noise ``[B, T, ...]`` correlated across frames (dim 1).

    ``eps_t = sqrt(alpha) * eps_shared + sqrt(1 - alpha) * eps_t_own``: alpha=1 gives one noise for every
    frame, alpha=0 independent frames; every frame is marginally N(0, 1) for any alpha in [0, 1].
    Draw order (reproducibility): ``eps_shared`` ``[B, 1, ...]`` first (only if alpha > 0), then
    ``eps_own`` ``[B, T, ...]`` (only if alpha < 1); so alpha=0 equals ``torch.randn(shape, generator)``.
    The draws happen on ``generator``'s device (else on ``device``); the result is returned on ``device``.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"shared_noise needs a shape [B, T, ...] with a frame dim, got {shape}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"noise_share_alpha must be in [0, 1], got {alpha}")
    draw_on = generator.device if generator is not None else device
    alpha = float(alpha)
    out: torch.Tensor | None = None
    if alpha > 0.0:
        shared = torch.randn((shape[0], 1, *shape[2:]), generator=generator, device=draw_on, dtype=dtype)
        out = (
            shared.expand(shape).clone() if alpha == 1.0 else math.sqrt(alpha) * shared
        )  # [B,T,...]/[B,1,...]
    if alpha < 1.0:
        own = torch.randn(shape, generator=generator, device=draw_on, dtype=dtype)  # [B, T, ...]
        out = own if out is None else out + math.sqrt(1.0 - alpha) * own
    assert out is not None
    return out if device is None else out.to(device)
