"""Attention blocks of the ShapeVAE with the reference's per-head interleaved q|k|v layout (§1.3).

Module and parameter names reproduce Hunyuan3D-2.1's state-dict keys exactly
(``attn.c_qkv``, ``attn.c_q``, ``attn.c_kv``, ``attn.c_proj``, ``attn.attention.{q,k}_norm``,
``ln_{1,2,3}``, ``mlp.c_fc``, ``mlp.c_proj``, ``resblocks.{i}``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

NORM_EPS = 1e-6  # every LayerNorm inside blocks and the qk-norm; the two `ln_post` use 1e-5


def _qk_norm(head_dim: int, enabled: bool) -> nn.Module:
    return nn.LayerNorm(head_dim, eps=NORM_EPS, elementwise_affine=True) if enabled else nn.Identity()


class QKNormAttention(nn.Module):
    """SDPA on ``[B, H, L, hd]`` tensors after LayerNorm of q and k over the head dim (no mask)."""

    def __init__(self, head_dim: int, qk_norm: bool = True):
        super().__init__()
        self.q_norm = _qk_norm(head_dim, qk_norm)
        self.k_norm = _qk_norm(head_dim, qk_norm)

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, k_normed: bool = False, q_normed: bool = False
    ) -> Tensor:
        # q: [B, H, Lq, hd]; k, v: [B, H, Lk, hd] -> [B, Lq, H*hd]; {q,k}_normed: the norm already applied
        q, k = (q if q_normed else self.q_norm(q)), (k if k_normed else self.k_norm(k))
        out = F.scaled_dot_product_attention(q, k, v)  # [B, H, Lq, hd]
        return out.transpose(1, 2).flatten(2)


class SelfAttention(nn.Module):
    """``c_qkv`` output viewed as ``[B, N, H, 3*hd]`` and split per head into ``[q_h | k_h | v_h]``."""

    def __init__(self, width: int, heads: int, qkv_bias: bool = False, qk_norm: bool = True):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = width // heads
        self.c_qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
        self.c_proj = nn.Linear(width, width)
        self.attention = QKNormAttention(self.head_dim, qk_norm)

    def forward(self, x: Tensor) -> Tensor:
        B, N, _ = x.shape
        qkv = self.c_qkv(x).view(B, N, self.heads, 3 * self.head_dim)  # [B, N, H, 3hd] per-head interleaved
        q, k, v = qkv.transpose(1, 2).split(self.head_dim, dim=-1)  # each [B, H, N, hd]
        return self.c_proj(self.attention(q, k, v))  # [B, N, W]


class CrossAttention(nn.Module):
    """Queries from ``x`` (``c_q``), keys/values from ``data`` (``c_kv`` viewed per head as ``[k_h | v_h]``)."""

    def __init__(
        self,
        width: int,
        heads: int,
        data_width: int | None = None,
        qkv_bias: bool = False,
        qk_norm: bool = True,
    ):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = width // heads
        self.c_q = nn.Linear(width, width, bias=qkv_bias)
        self.c_kv = nn.Linear(data_width or width, 2 * width, bias=qkv_bias)
        self.c_proj = nn.Linear(width, width)
        self.attention = QKNormAttention(self.head_dim, qk_norm)

    def kv(self, data: Tensor) -> tuple[Tensor, Tensor]:
        """The data side: ``k_norm``-ed keys and values, each ``[B, H, M, hd]`` (reusable across query chunks)."""
        B, M, _ = data.shape
        kv = self.c_kv(data).view(B, M, self.heads, 2 * self.head_dim)  # [B, M, H, 2hd]
        k, v = kv.transpose(1, 2).split(self.head_dim, dim=-1)  # each [B, H, M, hd]
        return self.attention.k_norm(k), v

    def forward(
        self, x: Tensor, data: Tensor | None = None, kv: tuple[Tensor, Tensor] | None = None
    ) -> Tensor:
        B, P, _ = x.shape
        k, v = self.kv(data) if kv is None else kv
        q = self.c_q(x).view(B, P, self.heads, self.head_dim)  # [B, P, H, hd]
        # q_norm over hd before the head transpose: the same numbers, without a copy of the queries
        q = self.attention.q_norm(q).transpose(1, 2)  # [B, H, P, hd]
        return self.c_proj(self.attention(q, k, v, k_normed=True, q_normed=True))  # [B, P, W]


class MLP(nn.Module):
    """``c_fc`` -> exact GELU -> ``c_proj``."""

    def __init__(self, width: int, expand_ratio: int = 4):
        super().__init__()
        self.c_fc = nn.Linear(width, width * expand_ratio)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(width * expand_ratio, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN self-attention block: ``x += attn(ln_1(x)); x += mlp(ln_2(x))``."""

    def __init__(self, width: int, heads: int, qkv_bias: bool = False, qk_norm: bool = True):
        super().__init__()
        self.attn = SelfAttention(width, heads, qkv_bias=qkv_bias, qk_norm=qk_norm)
        self.ln_1 = nn.LayerNorm(width, eps=NORM_EPS)
        self.mlp = MLP(width)
        self.ln_2 = nn.LayerNorm(width, eps=NORM_EPS)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class ResidualCrossAttentionBlock(nn.Module):
    """``x += attn(ln_1(x), ln_2(data)); x += mlp(ln_3(x))``."""

    def __init__(
        self,
        width: int,
        heads: int,
        data_width: int | None = None,
        mlp_expand_ratio: int = 4,
        qkv_bias: bool = False,
        qk_norm: bool = True,
    ):
        super().__init__()
        data_width = data_width or width
        self.attn = CrossAttention(width, heads, data_width, qkv_bias=qkv_bias, qk_norm=qk_norm)
        self.ln_1 = nn.LayerNorm(width, eps=NORM_EPS)
        self.ln_2 = nn.LayerNorm(data_width, eps=NORM_EPS)
        self.ln_3 = nn.LayerNorm(width, eps=NORM_EPS)
        self.mlp = MLP(width, mlp_expand_ratio)

    def data_kv(self, data: Tensor) -> tuple[Tensor, Tensor]:
        """Keys/values of ``data`` (see :meth:`CrossAttention.kv`): pass as ``kv`` to skip recomputing them."""
        return self.attn.kv(self.ln_2(data))

    def forward(
        self, x: Tensor, data: Tensor | None = None, kv: tuple[Tensor, Tensor] | None = None
    ) -> Tensor:
        x = x + self.attn(self.ln_1(x), kv=self.data_kv(data) if kv is None else kv)
        return x + self.mlp(self.ln_3(x))


class Transformer(nn.Module):
    """A stack of ``ResidualAttentionBlock``s under ``resblocks.{i}`` (no final norm)."""

    def __init__(self, width: int, heads: int, layers: int, qkv_bias: bool = False, qk_norm: bool = True):
        super().__init__()
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, qkv_bias=qkv_bias, qk_norm=qk_norm) for _ in range(layers)
        )

    def forward(self, x: Tensor) -> Tensor:
        for block in self.resblocks:
            x = block(x)
        return x
