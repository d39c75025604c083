"""Fourier positional embedding of xyz (Hunyuan3D-2.1 layout, design.md §H1.2)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn


class FourierEmbedder(nn.Module):
    """``x -> cat(x, sin(x·f), cos(x·f))`` with ``f = 2**arange(num_freqs)`` (× π if ``include_pi``).

    The per-coordinate frequencies are contiguous: ``[x·f0..x·f{F-1}, y·f0.., z·f0..]``.
    ``frequencies`` is a non-persistent buffer (absent from the state dict, like the reference); it is
    recomputed whenever the module is moved/materialised (e.g. ``to_empty`` after a meta-device build).
    """

    frequencies: Tensor

    def __init__(
        self, num_freqs: int = 8, input_dim: int = 3, include_input: bool = True, include_pi: bool = False
    ):
        super().__init__()
        self.num_freqs = num_freqs
        self.input_dim = input_dim
        self.include_input = include_input
        self.include_pi = include_pi
        self.register_buffer("frequencies", self._make_frequencies(), persistent=False)

    @property
    def out_dim(self) -> int:
        return self.input_dim * (2 * self.num_freqs + int(self.include_input))

    def _make_frequencies(
        self, device: torch.device | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        f = 2.0 ** torch.arange(self.num_freqs, dtype=torch.float32, device=device)
        if self.include_pi:
            f = f * math.pi
        return f.to(dtype)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> FourierEmbedder:
        super()._apply(fn, recurse)
        # `to_empty`/meta materialisation leaves garbage in buffers: recompute the constants in place.
        if self.frequencies.device.type != "meta":
            self.frequencies = self._make_frequencies(self.frequencies.device, self.frequencies.dtype)
        return self

    def forward(self, x: Tensor) -> Tensor:
        # x: [..., D] -> [..., D * (2F + 1)]
        if self.num_freqs == 0:
            return x
        emb = (x[..., None].contiguous() * self.frequencies).view(*x.shape[:-1], -1)  # [..., D*F]
        parts = [x, emb.sin(), emb.cos()] if self.include_input else [emb.sin(), emb.cos()]
        return torch.cat(parts, dim=-1)
