"""DiT4D: a frozen Hunyuan3D-2.1 DiT run jointly over T frames + a small zero-initialised temporal adapter.

Token layout: each frame keeps the 3D layout ``[time token, N latents]`` and is one item of a ``B*T`` batch,
so skips, norms, cross-attention (frame t -> image tokens of frame t) and MLP/MoE are the 3D code. Only
self-attention is joint over the ``T*N`` latents under the variant's block mask. The time token of frame
t is a per-frame *prefix*: the latents of frame t attend to it (and only to it, not to other frames'
time tokens), and it attends to its own frame only. Hence with T=1, or a block-diagonal mask, every frame
computes exactly the 3D model.

Adapter (the only trainable parameters, all under ``adapter.``): LoRA on ``attn1.to_{q,k,v}`` and
``attn1.out_proj`` of every block (B zero) and a frame-index embedding added to the latent tokens (zero).
Variant ``rope`` additionally rotates q/k by a (parameter-free) 1D temporal RoPE on the frame index.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sculpt4d.models.attention import build_block_mask, sparse_attention
from sculpt4d.models.attention.masks import BlockMask4D

from .backbone import HunyuanDiT
from .layers import DiTBlock


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


class BlockLoRA(nn.Module):
    def __init__(self, dim: int, rank: int):
        super().__init__()
        self.q, self.k, self.v, self.o = (LoRA(dim, dim, rank) for _ in range(4))


class TemporalAdapter(nn.Module):
    """Per-block LoRA on the self-attention projections + a frame-index embedding (all zero at init)."""

    def __init__(self, dim: int, depth: int, rank: int, max_frames: int):
        super().__init__()
        self.lora = nn.ModuleList([BlockLoRA(dim, rank) for _ in range(depth)])
        self.frame_embed = nn.Parameter(torch.zeros(max_frames, dim))


def temporal_rope(x: Tensor, frame: Tensor, base: float = 10000.0) -> Tensor:
    """Rotate channel pairs (2c, 2c+1) of x [..., T, L, hd] by frame * base^(-2c/hd); frame [T]."""
    hd = x.shape[-1]
    inv = base ** (-torch.arange(0, hd, 2, device=x.device, dtype=torch.float32) / hd)  # [hd/2]
    ang = frame.float()[:, None, None] * inv  # [T, 1, hd/2]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class DiT4D(nn.Module):
    """``v = m4d(x [B,T,N,C], t [B] or [B,T], cond [B,T,L,Dc]) -> [B,T,N,C]`` (see module docstring)."""

    def __init__(
        self,
        backbone: HunyuanDiT,
        attention: Mapping[str, Any] | None = None,
        lora_rank: int = 16,
        max_frames: int = 64,
        backend: str = "auto",
    ):
        super().__init__()
        self.backbone = backbone.requires_grad_(False)
        att = dict(attention or {"variant": "blockmask"})
        self.variant = str(att.pop("variant", "blockmask"))
        self.block_size = int(att.pop("block_size", 128))
        self.backend = str(att.pop("backend", backend) or backend)
        self.rope_base = float(att.get("rope_base", 10000.0))
        self.mask_cfg = {k: v for k, v in att.items() if k != "_target_"}
        self.max_frames = max_frames
        self.lora_rank = int(lora_rank)
        D = backbone.hidden_size
        self.adapter = TemporalAdapter(D, backbone.depth, lora_rank, max_frames)
        build_block_mask(self.variant, 1, self.block_size, self.block_size, **self.mask_cfg)  # fail fast

    def mask(self, T: int, N: int) -> BlockMask4D:
        return build_block_mask(self.variant, T, N, self.block_size, **self.mask_cfg)

    def _joint_attention(
        self, i: int, block: DiTBlock, B: int, T: int, N: int, mask: BlockMask4D, frame: Tensor
    ) -> Callable[[Tensor], Tensor]:
        attn, lora = block.attn1, self.adapter.lora[i]
        H, hd = attn.num_heads, attn.head_dim

        def hook(x: Tensor, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            return q + lora.q(x), k + lora.k(x), v + lora.v(x)

        def self_attn(x: Tensor) -> Tensor:  # x [B*T, 1+N, D] (normed)
            q, k, v = (z.view(B, T, H, 1 + N, hd) for z in attn.project(x, hook))  # [B, T, H, 1+N, hd]
            if mask.rope:
                q, k = (
                    temporal_rope(z.transpose(1, 2), frame, self.rope_base).transpose(1, 2) for z in (q, k)
                )
            lat = lambda z: z[:, :, :, 1:].transpose(1, 2).reshape(B, H, T * N, hd)  # [B, H, T*N, hd]
            pre = lambda z: z[:, :, :, :1].transpose(1, 2)  # [B, H, T, 1, hd]
            o_lat = sparse_attention(lat(q), lat(k), lat(v), mask, self.backend, prefix_kv=(pre(k), pre(v)))
            flat = lambda z: z.reshape(B * T, H, z.shape[3], hd)
            o_t = F.scaled_dot_product_attention(flat(q[:, :, :, :1]), flat(k), flat(v))  # own frame only
            o_t = o_t.view(B, T, H, 1, hd)
            o = torch.cat([o_t, o_lat.view(B, H, T, N, hd).transpose(1, 2)], dim=3)  # [B, T, H, 1+N, hd]
            o = o.permute(0, 1, 3, 2, 4).reshape(B * T, 1 + N, H * hd)
            return attn.out_proj(o) + lora.o(o)

        return self_attn

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        B, T, N, C = x.shape
        if T > self.max_frames:
            raise ValueError(f"{T} frames exceed max_frames={self.max_frames} of the temporal adapter")
        if cond.dim() != 4 or cond.shape[:2] != (B, T):
            raise ValueError(f"cond must be [B, T, L, D] = [{B}, {T}, L, D], got {tuple(cond.shape)}")
        t = t.reshape(-1, 1).expand(B, T) if t.dim() <= 1 else t  # [B, T]
        mask = self.mask(T, N)
        frame = torch.arange(T, device=x.device)
        bb = self.backbone
        h = bb.embed(x.reshape(B * T, N, C), t.reshape(B * T))  # [B*T, 1+N, D]
        fe = self.adapter.frame_embed[:T].to(h.dtype)  # [T, D]
        h = torch.cat([h[:, :1], h[:, 1:] + fe.repeat(B, 1)[:, None]], dim=1)  # frame embedding on latents
        h = bb.run_blocks(
            h,
            cond.reshape(B * T, *cond.shape[2:]).to(h.dtype),
            lambda i, blk: self._joint_attention(i, blk, B, T, N, mask, frame),
        )
        return bb.final_layer(h).view(B, T, N, C)

    def train(self, mode: bool = True) -> DiT4D:
        super().train(mode)
        self.backbone.eval()  # frozen: no train-time behaviour (e.g. MoE aux bookkeeping)
        return self
