"""Rectified-flow path and loss exactly as Hunyuan3D-2.1 trains (design.md §H4–H5).

Path ``x_t = t * x1 + (1 - t) * x0`` with x0 ~ N(0, I) noise (t=0) and x1 data (t=1); the model predicts
the velocity ``v = x1 - x0``; loss = mean squared error over all non-batch dims, then the batch mean.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch

ModelFn = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]
TimestepSampling = Literal["uniform", "logit_normal"]


def _bcast(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Broadcast per-sample ``t`` ``[B]`` (or ``[B, T]``) against ``x`` ``[B, ...]``."""
    return t.reshape(*t.shape, *([1] * (x.ndim - t.ndim))).to(x.dtype)


def shift_towards_noise(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Times ``t`` (0 = noise, 1 = data) with their noise level s = 1 - t moved to shift·s / (1 + (shift-1)·s):
    shift > 1 towards noise; the ends stay; ``t`` itself when shift == 1."""
    if shift == 1.0:
        return t
    s = 1.0 - t
    return 1.0 - shift * s / (1.0 + (shift - 1.0) * s)


def sample_timesteps(
    batch_size: int,
    kind: TimestepSampling = "uniform",
    generator: torch.Generator | None = None,
    *,
    device: torch.device | str | None = None,
    mean: float = 0.0,
    std: float = 1.0,
    shift: float = 1.0,
) -> torch.Tensor:
    """Training timesteps ``[B]`` in [0, 1].

    ``uniform``: U[0, 1] (Hunyuan's default). ``logit_normal``: sigmoid(N(mean, std)) (SD3-style).
    ``shift`` != 1 moves mass towards noise (:func:`shift_towards_noise`).
    """
    if generator is not None and device is None:
        device = generator.device
    if kind == "uniform":
        t = torch.rand(batch_size, generator=generator, device=device)
    elif kind == "logit_normal":
        t = torch.sigmoid(mean + std * torch.randn(batch_size, generator=generator, device=device))
    else:
        raise ValueError(f"unknown timestep sampling {kind!r}; use 'uniform' or 'logit_normal'")
    return shift_towards_noise(t, shift)


class FlowMatching:
    """Flow-matching training objective (velocity prediction, t=0 noise → t=1 data)."""

    def __init__(
        self,
        timestep_sampling: TimestepSampling = "uniform",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        shift: float = 1.0,
    ) -> None:
        self.timestep_sampling = timestep_sampling
        self.logit_mean = logit_mean
        self.logit_std = logit_std
        self.shift = shift

    def sample_timesteps(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """``[B]`` timesteps in [0, 1] with the configured sampler."""
        return sample_timesteps(
            batch_size,
            self.timestep_sampling,
            generator,
            device=device,
            mean=self.logit_mean,
            std=self.logit_std,
            shift=self.shift,
        )

    @staticmethod
    def path(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x_t = t·x1 + (1−t)·x0``; x0, x1 ``[B, ...]``, t ``[B]`` (or ``[B, T]`` for per-frame times)."""
        tb = _bcast(t, x1)
        return tb * x1 + (1.0 - tb) * x0

    @staticmethod
    def target(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """Velocity target ``x1 − x0``."""
        return x1 - x0

    def velocities(
        self,
        model_fn: ModelFn,
        x1: torch.Tensor,
        cond: Any,
        *,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(predicted, target) velocities at ``x_t``, both shaped like ``x1``; defaults as in :meth:`loss`."""
        if t is None:
            t = self.sample_timesteps(x1.shape[0], generator, device=x1.device)
        t = t.to(x1.device)
        if noise is None:
            noise = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        return model_fn(self.path(noise, x1, t), t, cond), self.target(noise, x1)

    def loss(
        self,
        model_fn: ModelFn,
        x1: torch.Tensor,
        cond: Any,
        *,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        weights: torch.Tensor | None = None,
        return_per_sample: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """MSE between ``model_fn(x_t, t, cond)`` and ``x1 − x0``.

        x1: data latents ``[B, ...]`` (any rank, e.g. ``[B, N, C]`` or ``[B, T, N, C]``); ``noise``
        defaults to N(0, I) from ``generator`` (pass :func:`shared_noise` for sequences); ``t`` defaults to
        :meth:`sample_timesteps`. Loss = mean over non-batch dims → ``[B]``, times ``weights`` ``[B]`` if
        given, then the batch mean. With ``return_per_sample`` also returns the unweighted ``[B]`` losses.
        """
        b = x1.shape[0]
        v, target = self.velocities(model_fn, x1, cond, t=t, noise=noise, generator=generator)
        per_sample = (v.float() - target.float()).pow(2).reshape(b, -1).mean(dim=1)  # [B]
        loss = per_sample if weights is None else per_sample * weights.to(per_sample)
        loss = loss.mean()
        return (loss, per_sample) if return_per_sample else loss


def motion_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE between predicted and target changes from the anchor frame: ``v[:, t] − v[:, 0]`` for t ≥ 1.

    pred, target: velocities ``[B, T, N, C]`` (T ≥ 2). The flow loss of a sequence is dominated by the error
    all frames share (which shape, at high noise); this term sees only what differs between frames, so
    weighting it raises the share of motion in the objective. Under one shared noise a model that copies its
    anchor frame scores ``mean |x1[:, t] − x1[:, 0]|²`` here, a perfect one 0.
    """
    d_pred = pred[:, 1:].float() - pred[:, :1].float()  # [B, T-1, N, C]
    d_target = target[:, 1:].float() - target[:, :1].float()
    return (d_pred - d_target).pow(2).mean()
