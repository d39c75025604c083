"""Spatio-temporal attention masks over a sequence of T frames x N tokens, at block granularity.

A mask is stored per *frame pair*: ``pair_pattern[i, j]`` (query frame i, key frame j) indexes a small
table of ``[nb, nb]`` block patterns (nb = N / block_size), so memory is O(T^2 + P nb^2), never O((TN)^2).
A kept block is attended in full, except for ``diag`` patterns (variant ``temporal``), where a kept block
(R, R) only links token r of the query frame to token r of the key frame.

Variants (d = |i - j|; same-frame blocks are always kept, so T=1 is the 3D model):
- ``blockmask``: key frame 0 full (``anchor``); d <= dense_distance full; else the band |r - c| <= w(d),
  w(d) = 2^(floor(log2 N)+1) / 2^(floor(log2 d)+1) * decay, a block pair kept if any token pair in it is in
  the band. When w(d) < block the band is one block wide (w clamped to block: blocks |R - C| <= 1) and
  the pair is kept only when d % round(block / w(d)) == 0.
- ``radial``: Radial Attention: no anchor; w clamped to >= block; frames skipped when the undecayed width
  2^bitlen(N)/2^bitlen(d) < block unless d % (block / that) == 0; blocks kept by ``shrinkMaskStrict``
  (> 60 % of the non-empty columns have density > 1/3).
- ``framepack``: d <= dense_distance full; else key frame j keeps its first N / 2^(d - dense_distance)
  tokens (rounded up to >= ``min_blocks`` whole blocks; FPS order makes them a uniform subsample).
- ``full`` / ``rope``: dense (``rope`` adds a temporal RoPE on q/k, applied by the model).
- ``temporal``: own frame full; other frames: token r attends token r only.
- ``spatial``: own frame only (block diagonal): the per-frame 3D model, the baseline of evaluations.
- ``fixed_stride``: the ablation of the decaying band: key frame 0 full (``anchor``); d <= dense_distance
  full; else the pair is kept in full iff d % stride == 0 (one temporal stride for every distance).
"""

from __future__ import annotations

import math
from functools import cached_property, lru_cache
from typing import Any

import torch
from torch import Tensor

from .config import VARIANTS, AttentionConfig


class BlockMask4D:
    """Block-level mask over T frames of N tokens; see the module docstring."""

    def __init__(
        self,
        variant: str,
        T: int,
        N: int,
        block_size: int,
        pair_pattern: Tensor,
        patterns: Tensor,
        diag: Tensor,
        cfg: dict[str, Any],
    ):
        self.variant, self.T, self.N, self.block_size = variant, T, N, block_size
        self.nb = N // block_size
        self.pair_pattern = pair_pattern  # [T, T] int64 into patterns
        self.patterns = patterns  # [P, nb, nb] bool
        self.diag = diag  # [P] bool: token-diagonal inside kept blocks
        self.cfg = cfg
        self._plans: dict[Any, Any] = {}  # backend caches (per device / kind)

    def __repr__(self) -> str:
        return (
            f"BlockMask4D({self.variant}, T={self.T}, N={self.N}, block={self.block_size}, "
            f"density={self.density:.4f})"
        )

    @property
    def rope(self) -> bool:
        return self.variant == "rope"

    @cached_property
    def blocks(self) -> Tensor:
        """[T*nb, T*nb] bool block grid (query block, key block)."""
        g = self.patterns[self.pair_pattern]  # [T, T, nb, nb]
        return g.permute(0, 2, 1, 3).reshape(self.T * self.nb, self.T * self.nb)

    @cached_property
    def diag_blocks(self) -> Tensor:
        """[T*nb, T*nb] bool: kept blocks that are token-diagonal."""
        d = self.diag[self.pair_pattern][:, :, None, None] & self.patterns[self.pair_pattern]
        return d.permute(0, 2, 1, 3).reshape(self.T * self.nb, self.T * self.nb)

    @cached_property
    def block_density(self) -> float:
        """Fraction of kept blocks over the (T nb) x (T nb) grid."""
        return self.blocks.float().mean().item()

    @cached_property
    def density(self) -> float:
        """Fraction of attended token pairs over (T N)^2 (== block_density unless diag blocks exist)."""
        per = self.patterns.flatten(1).sum(1).double() * torch.where(self.diag, 1.0 / self.block_size, 1.0)
        return (per.double()[self.pair_pattern].sum() / (self.T * self.nb) ** 2).item()

    def frame_density(self) -> Tensor:
        """[T, T] fraction of token pairs kept per frame pair."""
        per = self.patterns.flatten(1).float().mean(1) * torch.where(self.diag, 1.0 / self.block_size, 1.0)
        return per[self.pair_pattern]

    def dense_bool(self, device: torch.device | str | None = None) -> Tensor:
        """[T N, T N] token mask (tests / the dense reference only: O((TN)^2) memory)."""
        b = self.block_size
        m = self.blocks.repeat_interleave(b, 0).repeat_interleave(b, 1)
        if bool(self.diag.any()):
            eye = torch.eye(b, dtype=torch.bool).repeat(self.T * self.nb, self.T * self.nb)
            m = m & (~self.diag_blocks.repeat_interleave(b, 0).repeat_interleave(b, 1) | eye)
        return m.to(device) if device is not None else m


# ---------------------------------------------------------------- block patterns for one frame pair
def _band_rule_strict(nb: int, b: int, w: float) -> Tensor:
    """Radial's shrinkMaskStrict on the token band |r - c| <= w: > 60 % of non-empty columns dense > 1/3."""
    keep = []
    r = torch.arange(b)[:, None]
    for o in range(nb):  # the rule depends only on the block offset o = |C - R| (symmetric band)
        dens = ((r - (torch.arange(b)[None] + o * b)).abs() <= w).float().mean(0)  # [b] column densities
        nonzero = (dens > 0).sum()
        keep.append(bool(nonzero > 0) and bool((dens > 1 / 3).sum() > 0.6 * nonzero))
    keep_t = torch.tensor(keep)
    return keep_t[(torch.arange(nb)[None] - torch.arange(nb)[:, None]).abs()]


def _pair_spec(variant: str, d: int, j: int, N: int, b: int, cfg: dict[str, Any]) -> tuple[str, Any]:
    """Pattern of one frame pair: ('full'|'none'|'diag', None) | ('band', reach or strict w) | ('prefix', blocks)."""
    nb = N // b
    if d == 0 or variant in ("full", "rope"):
        return ("full", None)
    if variant == "temporal":
        return ("diag", None)
    if variant == "spatial":
        return ("none", None)
    if cfg.get("anchor") and j == 0:
        return ("full", None)
    if d <= cfg["dense_distance"]:
        return ("full", None)
    if variant == "fixed_stride":
        if int(cfg["stride"]) < 1:
            raise ValueError(f"fixed_stride: stride must be >= 1, got {cfg['stride']}")
        return ("full", None) if d % cfg["stride"] == 0 else ("none", None)
    if variant == "framepack":
        keep = N >> (d - cfg["dense_distance"]) if d - cfg["dense_distance"] < 63 else 0
        return ("prefix", min(nb, max(cfg["min_blocks"], -(-keep // b))))
    base = 2 ** (N.bit_length()) / 2 ** d.bit_length()  # 2^(floor log2 N + 1) / 2^(floor log2 d + 1)
    w = base * cfg["decay"]
    if variant == "blockmask":
        if w < b:
            return ("band", 1) if d % max(1, round(b / w)) == 0 else ("none", None)  # w clamped to b
        return ("band", (math.floor(w) - 1) // b + 1)
    if variant == "radial":
        if base < b and d % max(1, round(b / base)) != 0:
            return ("none", None)
        return ("strict", max(w, b))
    raise ValueError(f"unknown attention variant {variant!r}; choose one of {VARIANTS}")


def _spec_pattern(spec: tuple[str, Any], nb: int, b: int) -> tuple[Tensor, bool]:
    kind, arg = spec
    if kind == "full":
        return torch.ones(nb, nb, dtype=torch.bool), False
    if kind == "none":
        return torch.zeros(nb, nb, dtype=torch.bool), False
    if kind == "diag":
        return torch.eye(nb, dtype=torch.bool), True
    if kind == "band":
        return (torch.arange(nb)[None] - torch.arange(nb)[:, None]).abs() <= arg, False
    if kind == "strict":
        return _band_rule_strict(nb, b, arg), False
    if kind == "prefix":
        return (torch.arange(nb) < arg)[None].expand(nb, nb).clone(), False
    raise AssertionError(kind)


@lru_cache(maxsize=64)
def _build(variant: str, T: int, N: int, block_size: int, cfg_items: tuple) -> BlockMask4D:
    cfg = dict(cfg_items)
    nb = N // block_size
    specs: dict[tuple, int] = {}
    pair = torch.empty(T, T, dtype=torch.long)
    for i in range(T):
        for j in range(T):
            s = _pair_spec(variant, abs(i - j), j, N, block_size, cfg)
            pair[i, j] = specs.setdefault(s, len(specs))
    pats = [_spec_pattern(s, nb, block_size) for s in specs]
    patterns = torch.stack([p for p, _ in pats])
    diag = torch.tensor([dg for _, dg in pats], dtype=torch.bool)
    return BlockMask4D(variant, T, N, block_size, pair, patterns, diag, cfg)


def build_block_mask(variant: str, T: int, N: int, block_size: int = 128, **cfg: Any) -> BlockMask4D:
    """Build (cached) the block mask of ``variant`` for T frames of N tokens; ``cfg`` holds the variant's
    options (:class:`AttentionConfig`; missing or ``null`` = its default); unknown keys raise."""
    att = AttentionConfig.from_dict({**cfg, "variant": variant, "block_size": block_size})
    if att.block_size <= 0 or N % att.block_size:
        raise ValueError(f"tokens per frame N={N} must be a multiple of block_size={att.block_size}")
    options = att.mask_options()
    return _build(variant, int(T), int(N), att.block_size, tuple(sorted(options.items())))
