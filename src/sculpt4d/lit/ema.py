"""Exponential moving average of the trainable weights, kept as buffers (saved in every checkpoint).

Being buffers of the LightningModule, the averages move with the model between devices and are part of
``state_dict`` — so a resumed run continues the EMA exactly. Validation and export swap them in
(:meth:`ParameterEMA.swap`), as Hunyuan3D's ``LitEma``/``ema_scope``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def _buffer_name(param_name: str) -> str:
    return param_name.replace(".", "__")


class ParameterEMA(nn.Module):
    """``shadow ← d·shadow + (1−d)·param`` with ``d = min(decay, (1+n)/(10+n))`` when ``warmup``."""

    def __init__(
        self, named_params: list[tuple[str, nn.Parameter]], decay: float = 0.999, warmup: bool = True
    ):
        super().__init__()
        self.decay = float(decay)
        self.warmup = warmup
        self.names = [n for n, _ in named_params]
        for name, p in named_params:
            self.register_buffer(_buffer_name(name), p.detach().clone().float())
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def shadow(self, name: str) -> torch.Tensor:
        return getattr(self, _buffer_name(name))

    def current_decay(self) -> float:
        n = int(self.num_updates.item())
        return min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, params: dict[str, nn.Parameter]) -> None:
        d = self.current_decay()
        self.num_updates += 1
        for name in self.names:
            self.shadow(name).lerp_(params[name].detach().float(), 1.0 - d)

    @torch.no_grad()
    def _exchange(self, params: dict[str, nn.Parameter]) -> None:
        for name in self.names:
            s, p = self.shadow(name), params[name]
            tmp = p.detach().clone()
            p.copy_(s.to(p.dtype))
            s.copy_(tmp.float())

    @contextlib.contextmanager
    def swap(self, params: dict[str, nn.Parameter], enabled: bool = True) -> Iterator[None]:
        """Put the averages into ``params`` for the block; the training weights come back afterwards."""
        if not enabled or not self.names:
            yield
            return
        self._exchange(params)
        try:
            yield
        finally:
            self._exchange(params)
