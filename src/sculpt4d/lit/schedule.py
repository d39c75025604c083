"""Step-based learning-rate schedules (generative training counts optimizer steps, not epochs)."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class WarmupCosine:
    """LR multiplier: linear ``start_factor -> 1`` over ``warmup_steps``, then cosine ``1 -> min_factor`` by
    ``total_steps`` (constant ``min_factor`` after). Hunyuan3D's ``LambdaWarmUpCosineFactorScheduler`` shape.

    A callable object (not a lambda) so ``LambdaLR.state_dict`` saves its parameters with the checkpoint.
    """

    def __init__(
        self, warmup_steps: int, total_steps: int, min_factor: float = 0.01, start_factor: float = 1e-3
    ):
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_factor = float(min_factor)
        self.start_factor = float(start_factor)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.start_factor + (1.0 - self.start_factor) * step / max(1, self.warmup_steps)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: Optimizer,
    warmup_steps: int = 50,
    total_steps: int = 20000,
    min_factor: float = 0.01,
    start_factor: float = 1e-3,
) -> LambdaLR:
    """``_partial_`` scheduler node target: ``LambdaLR`` with :class:`WarmupCosine` (call it per optimizer step)."""
    return LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps, min_factor, start_factor))
