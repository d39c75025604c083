"""Euler sampler for flow matching with classifier-free guidance, numerically as Hunyuan3D-2.1 (design.md §H4).

Schedule (``FlowMatchEulerDiscreteScheduler`` with the pipeline's ``sigmas = linspace(0, 1, steps)``):
``sigmas = float32(linspace(0, 1, S)) ++ [1.0]`` (S+1 values), ``timesteps = 1000 · sigmas[:S]``. Step i calls
the model with ``t = timesteps[i].to(x.dtype) / 1000`` (cast first, as upstream) and updates
``x ← (float32(x) + (σ_{i+1} − σ_i) · float32(v)).to(x.dtype)``. So S steps make S model calls and the last
one has dt = 0 (σ = 1 → 1): S − 1 effective steps of 1/(S − 1).

CFG follows upstream: when ``guidance_scale >= 0`` (and a condition is given) the model sees the batch
``[cond; uncond]`` (unconditional context = zeros unless given) and ``v = v_u + w·(v_c − v_u)``; a negative
scale disables CFG. ``skip_cfg_at_one=True`` additionally skips the doubled batch at w = 1 (then v = v_c;
equal in exact arithmetic, not bitwise). ``cfg_batch=False`` runs the pair as two calls (cond, then uncond):
the same velocities up to float rounding at half the activation memory (the ``low_vram`` mode).

``shift`` != 1 (not upstream's; 1 = the schedule above exactly) spaces the steps as training's
``timestep_shift`` spaces its timesteps: each time point's noise level s = 1 − σ becomes shift·s / (1 + (shift−1)·s),
so shift > 1 takes more, smaller steps at the noisy end, where the image decides the shape.

``guidance_until`` < 1 (not upstream's; 1 = CFG at every step) applies CFG only at the steps whose time t is below
it (t = 0 is noise) and calls the model once, conditioned, at the later steps: guidance where the image decides
the shape, none where only the surface is refined, and half the model's work there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from sculpt4d.diffusion.flow import ModelFn, shift_towards_noise
from sculpt4d.utils.interrupt import raise_if_interrupted

StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]  # (step index, t [B], x after the step)


def _zeros_like_tree(c: Any) -> Any:
    if isinstance(c, torch.Tensor):
        return torch.zeros_like(c)
    if isinstance(c, dict):
        return {k: _zeros_like_tree(v) for k, v in c.items()}
    raise TypeError(f"cannot build a zero unconditional context from {type(c).__name__}")


def _cat_tree(a: Any, b: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return torch.cat([a, b], dim=0)
    if isinstance(a, dict):
        return {k: _cat_tree(a[k], b[k]) for k in a}
    raise TypeError(f"cannot batch conditions of type {type(a).__name__}")


class EulerSampler:
    """Deterministic Euler ODE integration from noise (t=0) to data (t=1)."""

    def __init__(
        self,
        num_steps: int = 50,
        num_train_timesteps: int = 1000,
        skip_cfg_at_one: bool = False,
        cfg_batch: bool = True,
        shift: float = 1.0,
        guidance_until: float = 1.0,
    ):
        if num_steps < 2:
            raise ValueError(f"num_steps must be >= 2 (linspace(0, 1, steps)), got {num_steps}")
        if not shift > 0:
            raise ValueError(f"shift must be > 0, got {shift}")
        if not 0.0 <= guidance_until <= 1.0:
            raise ValueError(f"guidance_until must be in [0, 1], got {guidance_until}")
        self.num_steps = int(num_steps)
        self.guidance_until = float(guidance_until)
        self.shift = float(shift)
        self.num_train_timesteps = num_train_timesteps
        self.skip_cfg_at_one = skip_cfg_at_one
        self.cfg_batch = cfg_batch

    def sigmas(self) -> torch.Tensor:
        """``[S+1]`` float32: linspace(0, 1, S) (its noise levels shifted when ``shift`` != 1) followed by 1.0."""
        s = shift_towards_noise(torch.linspace(0.0, 1.0, self.num_steps, dtype=torch.float64), self.shift)
        return torch.cat([s.to(torch.float32), torch.ones(1, dtype=torch.float32)])

    def timesteps(self) -> torch.Tensor:
        """``[S]`` float32 timesteps in [0, 1000]."""
        return self.sigmas()[:-1] * self.num_train_timesteps

    def uses_cfg(self, guidance_scale: float, cond: Any) -> bool:
        """Whether :meth:`sample` runs the doubled [cond; uncond] batch (upstream: scale >= 0)."""
        if cond is None or guidance_scale < 0:
            return False
        return not (self.skip_cfg_at_one and guidance_scale == 1.0)

    def guided(self, guidance_scale: float, cond: Any = True) -> list[bool]:
        """Per step, whether it runs the CFG pair: :meth:`uses_cfg`, and its time point is below
        ``guidance_until`` (every step when it is 1)."""
        if not self.uses_cfg(guidance_scale, cond):
            return [False] * self.num_steps
        if self.guidance_until >= 1.0:
            return [True] * self.num_steps
        return [float(t) < self.guidance_until for t in self.sigmas()[:-1]]

    def guided_steps(self, guidance_scale: float) -> int:
        """How many of the steps run the CFG pair (given a condition)."""
        return sum(self.guided(guidance_scale))

    @torch.no_grad()
    def sample(
        self,
        model_fn: ModelFn,
        noise: torch.Tensor,
        cond: Any,
        uncond: Any = None,
        guidance_scale: float = 5.0,
        progress: bool = True,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        """Integrate ``dx/dt = model_fn(x, t, cond)`` from ``noise`` (any rank ``[B, ...]``) to t = 1.

        cond/uncond: tensors (or dicts of tensors) with batch dim B, e.g. ``[B, L, D]`` / ``[B, T, L, D]``;
        ``uncond=None`` means zeros. ``progress``: a rich progress bar (transient) when True.
        """
        x = noise
        b = x.shape[0]
        cfg = self.uses_cfg(guidance_scale, cond)
        if cfg and uncond is None:
            uncond = _zeros_like_tree(cond)
        paired = _cat_tree(cond, uncond) if cfg and self.cfg_batch else None
        sigmas = self.sigmas().to(x.device)
        timesteps = self.timesteps().to(x.device)
        guided_at = self.guided(guidance_scale, cond)  # [S]
        with _progress(progress, self.num_steps) as advance:
            for i in range(self.num_steps):
                raise_if_interrupted()
                guided = guided_at[i]
                batched = guided and self.cfg_batch
                xin = torch.cat([x, x], dim=0) if batched else x
                t = timesteps[i].expand(xin.shape[0]).to(x.dtype) / self.num_train_timesteps  # [B] or [2B]
                v = model_fn(xin, t, paired if batched else cond)
                if guided:
                    v_c, v_u = (v[:b], v[b:]) if batched else (v, model_fn(x, t, uncond))
                    v = v_u + guidance_scale * (v_c - v_u)
                dt = sigmas[i + 1] - sigmas[i]
                x = (x.float() + dt * v.float()).to(noise.dtype)
                if callback is not None:
                    callback(i, t[:b], x)
                advance()
        return x


class _progress:
    """Optional rich progress bar; a no-op context when disabled or rich is unavailable."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total, self._bar = enabled, total, None

    def __enter__(self) -> Callable[[], None]:
        if self.enabled:
            try:
                from rich.progress import Progress

                self._bar = Progress(transient=True)
                self._bar.__enter__()
                task = self._bar.add_task("sampling", total=self.total)
                return lambda: self._bar.advance(task)  # type: ignore[union-attr]
            except ImportError:
                self._bar = None
        return lambda: None

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
