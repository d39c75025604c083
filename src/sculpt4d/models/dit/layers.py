"""Building blocks of the Hunyuan3D-2.1 shape DiT (design.md §H2).

Parameter names follow ``HunYuanDiTPlain`` so the state dict loads unchanged. Two load-bearing quirks:
the per-head interleaved q/k/v layout of self-attention and the k/v layout of cross-attention (§2.2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_features(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal features ``cat(sin(t f), cos(t f))``, ``f_j = 1e4^(-j/half)`` (no flip, no shift, no x1000)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # [B, half]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)  # [B, dim]


class TimestepEmbedder(nn.Module):
    """t [B] in [0, 1] -> [B, 1, D]: a single time token (keys ``t_embedder.mlp.{0,2}``).

    ``scale`` multiplies t before the sinusoidal features: 1 = upstream (t in [0, 1] spans at most 1 rad, so
    only the highest of the ``D/2`` frequencies move); 1000 = DiT's and SD3's ``t x 1000``, where every
    frequency band moves. A property of the trained weights, so it lives in the model's config."""

    def __init__(self, hidden_size: int, scale: float = 1.0):
        super().__init__()
        if scale <= 0:
            raise ValueError(f"timestep_scale must be > 0, got {scale}")
        self.hidden_size, self.scale = hidden_size, float(scale)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, 4 * hidden_size), nn.GELU(), nn.Linear(4 * hidden_size, hidden_size)
        )

    def forward(self, t: Tensor) -> Tensor:
        emb = timestep_features(t.float() * self.scale, self.hidden_size).to(self.mlp[0].weight.dtype)
        return self.mlp(emb)[:, None]  # [B, 1, D]


def _qk_norm(head_dim: int, enabled: bool, kind: str) -> nn.Module:
    if not enabled:
        return nn.Identity()
    if kind == "rms":
        return nn.RMSNorm(head_dim, eps=1e-6)
    if kind == "layer":
        return nn.LayerNorm(head_dim, eps=1e-6)
    raise ValueError(f"qk_norm_type must be 'rms' or 'layer', got {kind!r}")


class SelfAttention(nn.Module):
    """``attn1``: q,k,v = split(cat(to_q x, to_k x, to_v x).view(B, L, H, 3 hd), hd) -- per-head interleaved."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, qk_norm: bool, qk_norm_type: str):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.to_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.to_k = nn.Linear(dim, dim, bias=qkv_bias)
        self.to_v = nn.Linear(dim, dim, bias=qkv_bias)
        self.q_norm = _qk_norm(self.head_dim, qk_norm, qk_norm_type)
        self.k_norm = _qk_norm(self.head_dim, qk_norm, qk_norm_type)
        self.out_proj = nn.Linear(dim, dim, bias=True)

    def linear(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, L, D] -> the q, k, v projections [B, L, D] each."""
        return self.to_q(x), self.to_k(x), self.to_v(x)

    def heads(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Projections [B, L, D] -> q, k, v [B, H, L, hd] (per-head interleaved split, normalised q, k)."""
        B, L, _ = q.shape
        qkv = torch.cat([q, k, v], dim=-1).view(B, L, self.num_heads, 3 * self.head_dim)
        q, k, v = qkv.split(self.head_dim, dim=-1)  # [B, L, H, hd] each
        q, k = self.q_norm(q), self.k_norm(k)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, L, D] -> q, k, v [B, H, L, hd] (normalised q, k)."""
        return self.heads(*self.linear(x))

    def forward(self, x: Tensor) -> Tensor:
        B, L, D = x.shape
        q, k, v = self.project(x)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, H, L, hd]
        return self.out_proj(out.transpose(1, 2).reshape(B, L, D))


class CrossAttention(nn.Module):
    """``attn2``: standard q heads; k,v = split(cat(to_k y, to_v y).view(B, M, H, 2 hd), hd)."""

    def __init__(
        self, dim: int, context_dim: int, num_heads: int, qkv_bias: bool, qk_norm: bool, qk_norm_type: str
    ):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.to_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.to_k = nn.Linear(context_dim, dim, bias=qkv_bias)
        self.to_v = nn.Linear(context_dim, dim, bias=qkv_bias)
        self.q_norm = _qk_norm(self.head_dim, qk_norm, qk_norm_type)
        self.k_norm = _qk_norm(self.head_dim, qk_norm, qk_norm_type)
        self.out_proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        B, L, D = x.shape
        M = y.shape[1]
        q = self.to_q(x).view(B, L, self.num_heads, self.head_dim)  # [B, L, H, hd]
        kv = torch.cat([self.to_k(y), self.to_v(y)], dim=-1).view(B, M, self.num_heads, 2 * self.head_dim)
        k, v = kv.split(self.head_dim, dim=-1)  # [B, M, H, hd] each
        q, k = self.q_norm(q), self.k_norm(k)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.out_proj(out.transpose(1, 2).reshape(B, L, D))


class MLP(nn.Module):
    """Dense block MLP: ``fc1`` -> exact GELU -> ``fc2``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class GELUProj(nn.Module):
    """diffusers ``GELU`` activation module: ``gelu(proj(x))`` (key ``net.0.proj``)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(dim, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x))


class FeedForward(nn.Module):
    """diffusers ``FeedForward(dim, inner_dim, activation_fn="gelu", bias=True)``: keys ``net.0.proj``, ``net.2``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.ModuleList([GELUProj(dim, hidden), nn.Dropout(0.0), nn.Linear(hidden, dim)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class MoEGate(nn.Module):
    """Softmax router; top-k weights are NOT renormalised (``norm_topk_prob=False``)."""

    def __init__(self, dim: int, num_experts: int, top_k: int):
        super().__init__()
        self.top_k = top_k
        self.weight = nn.Parameter(torch.empty(num_experts, dim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [M, D] -> (weights [M, k], expert ids [M, k], scores [M, E])."""
        scores = F.linear(x, self.weight).float().softmax(dim=-1)  # [M, E]
        weights, idx = scores.topk(self.top_k, dim=-1)  # [M, k]
        return weights, idx, scores


class MoE(nn.Module):
    """Top-k routed experts + an always-on shared expert. Tokens are routed to their experts only.

    The same code runs in training and inference (the upstream train/eval paths are mathematically
    equal). In training the DeepSeek-style load-balance loss (alpha 0.01) is left in ``aux_loss``;
    it is not added to the output.
    """

    def __init__(self, dim: int, hidden: int, num_experts: int, top_k: int, aux_alpha: float = 0.01):
        super().__init__()
        self.num_experts, self.top_k, self.aux_alpha = num_experts, top_k, aux_alpha
        self.gate = MoEGate(dim, num_experts, top_k)
        self.experts = nn.ModuleList([FeedForward(dim, hidden) for _ in range(num_experts)])
        self.shared_experts = FeedForward(dim, hidden)
        self.aux_loss: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        xf = x.reshape(-1, shape[-1])  # [M, D]
        weights, idx, scores = self.gate(xf)  # [M, k], [M, k], [M, E]
        y = self.shared_experts(xf)  # [M, D]
        flat = idx.flatten()  # [M*k] expert of each (token, slot)
        order = flat.argsort()
        counts = torch.bincount(flat, minlength=self.num_experts).tolist()
        token = order // self.top_k  # token of each sorted slot
        w = weights.flatten()[order].to(x.dtype)
        start = 0
        for e, n in enumerate(counts):
            if n:
                tok = token[start : start + n]
                y = y.index_add(0, tok, (self.experts[e](xf[tok]) * w[start : start + n, None]).to(y.dtype))
            start += n
        if self.training and torch.is_grad_enabled():
            load = torch.bincount(flat, minlength=self.num_experts).float() / (
                flat.numel() / self.num_experts
            )
            self.aux_loss = self.aux_alpha * (load * scores.mean(0)).sum()
        return y.view(shape)


class DiTBlock(nn.Module):
    """Pre-LN block: optional long-skip fusion, self-attn, cross-attn, MLP or MoE (all LN eps 1e-6)."""

    def __init__(
        self,
        dim: int,
        context_dim: int,
        num_heads: int,
        qkv_bias: bool,
        qk_norm: bool,
        qk_norm_type: str,
        mlp_ratio: int,
        skip: bool,
        moe: bool,
        num_experts: int,
        top_k: int,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn1 = SelfAttention(dim, num_heads, qkv_bias, qk_norm, qk_norm_type)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.attn2 = CrossAttention(dim, context_dim, num_heads, qkv_bias, qk_norm, qk_norm_type)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)
        self.is_moe = moe
        if moe:
            self.moe = MoE(dim, dim * mlp_ratio, num_experts, top_k)
        else:
            self.mlp = MLP(dim, dim * mlp_ratio)
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None
        self.skip_norm = nn.LayerNorm(dim, eps=1e-6) if skip else None
        #: inference without gradients: the MLP / MoE residual runs over at most this many tokens at a time
        #: (None: all at once). Its hidden activations (4x the width) then never exist for the whole batch.
        self.ff_chunk_tokens: int | None = None
        #: ``compile_regions``: torch.compile'd versions of the regions below (empty: eager)
        self._compiled: dict[str, Callable[..., Tensor]] = {}

    def forward(
        self,
        h: Tensor,
        cond: Tensor,
        skip: Tensor | None = None,
        self_attn: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """h [B, L, D], cond [B, M, Dc] -> [B, L, D]. ``self_attn`` replaces ``attn1`` (used by DiT4D)."""
        h, x = self._region("pre_attention")(h, skip)
        h = h + (self_attn or self.attn1)(x)
        h = self._region("cross_attention_residual")(h, cond)
        return self.feed_forward_residual(h)

    # ---------------------------------------------------------------- regions (compiled together)
    def pre_attention(self, h: Tensor, skip: Tensor | None) -> tuple[Tensor, Tensor]:
        """The long skip fused in (``skip_norm(skip_linear([skip, h]))`` where the block has one), then the
        self-attention's input ``norm1(h)``: (h, x), both [B, L, D]."""
        if self.skip_linear is not None:
            h = self.skip_norm(self.skip_linear(torch.cat([skip, h], dim=-1)))
        return h, self.norm1(h)

    def cross_attention_residual(self, h: Tensor, cond: Tensor) -> Tensor:
        """``h + attn2(norm2(h), cond)`` [B, L, D]."""
        return h + self.attn2(self.norm2(h), cond)

    def mlp_residual(self, h: Tensor) -> Tensor:
        """``h + ff(norm3(h))`` [B, L, D] over all tokens at once."""
        return h + (self.moe if self.is_moe else self.mlp)(self.norm3(h))

    def compile_regions(self, mode: str | None) -> None:
        """torch.compile the block's regions around self-attention (``mode``: a torch.compile mode, e.g.
        ``default`` or ``reduce-overhead`` = CUDA graphs; None: eager again). Self-attention (block-sparse
        kernels with their own plans) and the MoE (data-dependent routing) stay eager."""
        self._compiled = {}
        if mode is None:
            return
        names = ["pre_attention", "cross_attention_residual"] + ([] if self.is_moe else ["mlp_residual"])
        for name in names:
            fn = getattr(self, name)
            self._compiled[name] = torch.compile(fn, mode=None if mode == "default" else mode, dynamic=False)

    def _region(self, name: str) -> Callable[..., Any]:
        return self._compiled[name] if name in self._compiled else getattr(self, name)

    def feed_forward_residual(self, h: Tensor) -> Tensor:
        """``h + ff(norm3(h))`` [B, L, D]; token-chunked (``ff_chunk_tokens``) when no gradient is needed.

        Every op acts on each token alone (MoE routing included), so chunks give the same numbers up to
        float rounding.
        """
        n = self.ff_chunk_tokens
        if n is None or torch.is_grad_enabled() or h.shape[0] * h.shape[1] <= n:
            return self._region("mlp_residual")(h)
        flat = h.reshape(-1, h.shape[-1])  # [B*L, D]
        out = torch.empty_like(flat)
        for s in range(0, flat.shape[0], n):
            out[s : s + n] = self._region("mlp_residual")(flat[s : s + n])
        return out.view_as(h)


class FinalLayer(nn.Module):
    """LayerNorm, then drop the time token, then project to the latent channels."""

    def __init__(self, dim: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, eps=1e-6)
        self.linear = nn.Linear(dim, out_channels)

    def forward(self, h: Tensor) -> Tensor:
        return self.linear(self.norm_final(h)[:, 1:])  # [B, L-1, C]
