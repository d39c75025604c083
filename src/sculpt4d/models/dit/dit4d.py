"""DiT4D: a frozen Hunyuan3D-2.1 DiT run jointly over T frames + a small zero-initialised temporal adapter.

Token layout: each frame keeps the 3D layout ``[time token, N latents]`` and is one item of a ``B*T`` batch,
so skips, norms, cross-attention (frame t -> image tokens of frame t) and MLP/MoE are the 3D code. Only
self-attention is joint over the ``T*N`` latents under the variant's block mask. The time token of frame
t is a per-frame *prefix*: the latents of frame t attend to it (and only to it, not to other frames'
time tokens), and it attends to its own frame only. Hence with T=1, or a block-diagonal mask, every frame
computes exactly the 3D model.

Adapter (the only trainable parameters, all under ``adapter.``): LoRA on ``attn1.to_{q,k,v}`` and
``attn1.out_proj`` of every block (B zero; each block's :class:`JointSelfAttention`) and a frame-index embedding added to the latent tokens (zero).
Variant ``rope`` additionally rotates q/k by a (parameter-free) 1D temporal RoPE on the frame index.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sculpt4d.models.attention import AttentionConfig, BlockMask4D, build_block_mask, sparse_attention

from .backbone import HunyuanDiT
from .layers import SelfAttention


class LoRA(nn.Module):
    """``x -> B(A x) * alpha / r`` with A [r, in] random and B [out, r] zero."""

    def __init__(self, d_in: int, d_out: int, rank: int, alpha: float | None = None):
        super().__init__()
        self.A = nn.Parameter(torch.empty(rank, d_in))
        self.B = nn.Parameter(torch.zeros(d_out, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.scale = (alpha or rank) / rank

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(F.linear(x, self.A), self.B) * self.scale


class TemporalAdapter(nn.Module):
    """Per-block LoRA on the self-attention projections + a frame-index embedding (all zero at init)."""

    def __init__(self, dim: int, depth: int, rank: int, max_frames: int):
        super().__init__()
        self.lora = nn.ModuleList([JointSelfAttention(dim, rank) for _ in range(depth)])
        self.frame_embed = nn.Parameter(torch.zeros(max_frames, dim))


def temporal_rope(x: Tensor, frame: Tensor, base: float = 10000.0) -> Tensor:
    """Rotate channel pairs (2c, 2c+1) of x [..., T, L, hd] by frame * base^(-2c/hd); frame [T]."""
    hd = x.shape[-1]
    inv = base ** (-torch.arange(0, hd, 2, device=x.device, dtype=torch.float32) / hd)  # [hd/2]
    ang = frame.float()[:, None, None] * inv  # [T, 1, hd/2]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


@dataclass(frozen=True)
class FrameLayout:
    """How one forward pass lays out its ``[B*T, 1+N, D]`` tokens for the joint attention."""

    B: int
    T: int
    N: int
    mask: BlockMask4D  # over the T*N latents
    frame: Tensor  # [T] frame index (temporal RoPE)
    backend: str
    rope_base: float | None  # the rope variant's base; None elsewhere


def _latents(z: Tensor) -> Tensor:
    """[B, T, H, 1+N, hd] -> [B, H, T*N, hd]: every frame's latents in one sequence."""
    B, T, H, L, hd = z.shape
    return z[:, :, :, 1:].transpose(1, 2).reshape(B, H, T * (L - 1), hd)


def _time_tokens(z: Tensor) -> Tensor:
    """[B, T, H, 1+N, hd] -> [B, H, T, 1, hd]: each frame's time token (a per-frame prefix)."""
    return z[:, :, :, :1].transpose(1, 2)


class JointSelfAttention(nn.Module):
    """Self-attention of one block run jointly over the T*N latents of a sequence under the block mask.

    Holds the block's LoRA (``q``, ``k``, ``v`` on the projections, ``o`` on the output); the frozen
    ``attn1`` of the backbone is passed in. Each frame's time token is attended by its own frame's latents
    only and attends to its own frame only.
    """

    def __init__(self, dim: int, rank: int):
        super().__init__()
        self.q, self.k, self.v, self.o = (LoRA(dim, dim, rank) for _ in range(4))

    def forward(self, x: Tensor, attn: SelfAttention, lay: FrameLayout) -> Tensor:
        """x [B*T, 1+N, D] (normed) -> [B*T, 1+N, D]."""
        B, T, N, H, hd = lay.B, lay.T, lay.N, attn.num_heads, attn.head_dim
        q, k, v = attn.linear(x)  # [B*T, 1+N, D] each
        q, k, v = (
            z.view(B, T, H, 1 + N, hd) for z in attn.heads(q + self.q(x), k + self.k(x), v + self.v(x))
        )
        if lay.mask.rope:
            q, k = (
                temporal_rope(z.transpose(1, 2), lay.frame, lay.rope_base).transpose(1, 2) for z in (q, k)
            )
        prefix = (_time_tokens(k), _time_tokens(v))  # [B, H, T, 1, hd] each
        o_lat = sparse_attention(*map(_latents, (q, k, v)), lay.mask, lay.backend, prefix_kv=prefix)
        o_t = F.scaled_dot_product_attention(q[:, :, :, :1].flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1))
        o_t = o_t.view(B, T, H, 1, hd)  # time tokens: own frame only
        o = torch.cat([o_t, o_lat.view(B, H, T, N, hd).transpose(1, 2)], dim=3)  # [B, T, H, 1+N, hd]
        o = o.permute(0, 1, 3, 2, 4).reshape(B * T, 1 + N, H * hd)
        return attn.out_proj(o) + self.o(o)


class DiT4D(nn.Module):
    """``v = m4d(x [B,T,N,C], t [B] or [B,T], cond [B,T,L,Dc]) -> [B,T,N,C]`` (see module docstring)."""

    def __init__(
        self,
        backbone: HunyuanDiT,
        attention: AttentionConfig | Mapping[str, Any] | None = None,
        lora_rank: int = 16,
        max_frames: int = 64,
        backend: str = "auto",
    ):
        super().__init__()
        self.backbone = backbone.requires_grad_(False)
        self.attention = (
            attention
            if isinstance(attention, AttentionConfig)
            else AttentionConfig.from_dict(attention, backend=backend)
        )
        self.max_frames = max_frames
        self.lora_rank = int(lora_rank)
        self.adapter = TemporalAdapter(backbone.hidden_size, backbone.depth, lora_rank, max_frames)
        self.mask(1, self.block_size)  # fail fast on a bad setting

    @property
    def variant(self) -> str:
        return self.attention.variant

    @property
    def block_size(self) -> int:
        return self.attention.block_size

    @property
    def backend(self) -> str:
        return self.attention.backend

    @backend.setter
    def backend(self, value: str) -> None:
        self.attention = self.attention.with_backend(value)

    def mask(self, T: int, N: int) -> BlockMask4D:
        return build_block_mask(self.variant, T, N, self.block_size, **self.attention.mask_options())

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        B, T, N, C = x.shape
        if T > self.max_frames:
            raise ValueError(f"{T} frames exceed max_frames={self.max_frames} of the temporal adapter")
        if cond.dim() != 4 or cond.shape[:2] != (B, T):
            raise ValueError(f"cond must be [B, T, L, D] = [{B}, {T}, L, D], got {tuple(cond.shape)}")
        t = t.reshape(-1, 1).expand(B, T) if t.dim() <= 1 else t  # [B, T]
        bb = self.backbone
        lay = FrameLayout(B, T, N, self.mask(T, N), torch.arange(T, device=x.device), self.backend,
                          self.attention.rope_base)  # fmt: skip
        h = bb.embed(x.reshape(B * T, N, C), t.reshape(B * T))  # [B*T, 1+N, D]
        fe = self.adapter.frame_embed[:T].to(h.dtype)  # [T, D]
        h = torch.cat([h[:, :1], h[:, 1:] + fe.repeat(B, 1)[:, None]], dim=1)  # frame embedding on latents
        joint = [partial(j, attn=blk.attn1, lay=lay) for j, blk in zip(self.adapter.lora, bb.blocks)]
        h = bb.run_blocks(h, cond.reshape(B * T, *cond.shape[2:]).to(h.dtype), joint)
        return bb.final_layer(h).view(B, T, N, C)

    def train(self, mode: bool = True) -> DiT4D:
        super().train(mode)
        self.backbone.eval()  # frozen: no train-time behaviour (e.g. MoE aux bookkeeping)
        return self
