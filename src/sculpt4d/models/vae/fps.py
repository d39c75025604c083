"""Deterministic, batched farthest point sampling in pure torch (no torch_cluster)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def fps_count(n: int, ratio: float) -> int:
    """Number of points ``torch_cluster.fps`` keeps: ``ceil(float32(n) * float32(ratio))``."""
    return int(math.ceil(float(np.float32(n) * np.float32(ratio))))


def farthest_point_sample(
    xyz: Tensor,
    k: int | None = None,
    ratio: float | None = None,
    start_idx: int | Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Greedy farthest point sampling, vectorised over the batch.

    Args:
        xyz: ``[B, N, 3]`` (or ``[N, 3]``) points.
        k: number of points to pick; or give ``ratio`` (``k = ceil(float32(N)·float32(ratio))``).
        start_idx: first pick per item (int or ``[B]``). If None: a random start drawn from ``generator``
            when one is given, else index 0 (== ``torch_cluster.fps(random_start=False)``).
    Returns:
        ``[B, k]`` (or ``[k]``) int64 indices in selection order. Each next point is the argmax (first on
        ties) of the squared L2 distance to the already selected set.
    """
    squeeze = xyz.dim() == 2
    if squeeze:
        xyz = xyz[None]
    B, N, _ = xyz.shape
    if k is None:
        if ratio is None:
            raise ValueError("farthest_point_sample needs k or ratio")
        k = fps_count(N, ratio)
    if not 0 < k <= N:
        raise ValueError(f"cannot pick {k} of {N} points")
    device = xyz.device
    if start_idx is None:
        if generator is not None:
            start = torch.randint(N, (B,), generator=generator, device=generator.device).to(device)
        else:
            start = torch.zeros(B, dtype=torch.long, device=device)
    else:
        start = torch.as_tensor(start_idx, dtype=torch.long, device=device).expand(B).clone()

    pts = xyz.detach()
    batch = torch.arange(B, device=device)
    out = torch.empty(B, k, dtype=torch.long, device=device)
    min_d = torch.full((B, N), float("inf"), dtype=pts.dtype, device=device)  # [B, N]
    cur = start
    for i in range(k):
        out[:, i] = cur
        d = (pts - pts[batch, cur][:, None, :]).pow(2).sum(-1)  # [B, N]
        min_d = torch.minimum(min_d, d)
        cur = min_d.argmax(dim=1)
    return out[0] if squeeze else out
