"""Diagonal Gaussian posterior of the KL bottleneck (cross-frame noise: :func:`sculpt4d.diffusion.shared_noise`)."""

from __future__ import annotations

import torch
from torch import Tensor


class DiagonalGaussian:
    """``N(mean, exp(logvar))`` from ``moments = cat(mean, logvar)`` on the last dim.

    ``logvar`` is bounded to ``[logvar_min, logvar_max]`` (reference: -30/20). ``bound="clamp"`` is the
    reference's hard clamp: elements past a bound get no gradient. ``bound="smooth"`` keeps the lower clamp
    but approaches the upper bound as ``max − softplus(max − raw)``, so every element keeps a gradient (the
    tiny model bounds std ≤ 1 this way, keeping the mean decodable without a dead zone at the bound).
    """

    def __init__(
        self,
        moments: Tensor,
        logvar_min: float = -30.0,
        logvar_max: float = 20.0,
        deterministic: bool = False,
        bound: str = "clamp",
    ):
        self.mean, logvar = moments.chunk(2, dim=-1)  # [..., C] each
        if bound == "smooth":
            logvar = logvar_max - torch.nn.functional.softplus(logvar_max - logvar)
        elif bound != "clamp":
            raise ValueError(f"logvar bound must be 'clamp' or 'smooth', got {bound!r}")
        self.logvar = logvar.clamp(logvar_min, logvar_max)
        self.deterministic = deterministic
        if deterministic:  # a point mass at the mean
            self.std = torch.zeros_like(self.mean)
            self.var = torch.zeros_like(self.mean)
        else:
            self.std = torch.exp(0.5 * self.logvar)
            self.var = torch.exp(self.logvar)

    @property
    def shape(self) -> torch.Size:
        return self.mean.shape

    def mode(self) -> Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None, noise: Tensor | None = None) -> Tensor:
        """``mean + std · eps`` with ``eps`` given or drawn from ``generator``."""
        if noise is None:
            noise = torch.randn(
                self.mean.shape,
                generator=generator,
                dtype=self.mean.dtype,
                device=generator.device if generator is not None else self.mean.device,
            )
        return self.mean + self.std * noise.to(self.mean.device, self.mean.dtype)

    def kl(self) -> Tensor:
        """KL to N(0, I), averaged over all non-batch dims -> ``[B]``."""
        if self.deterministic:
            return torch.zeros(self.mean.shape[0], device=self.mean.device)
        dims = tuple(range(1, self.mean.dim()))
        return 0.5 * torch.mean(self.mean.pow(2) + self.var - 1.0 - self.logvar, dim=dims)
