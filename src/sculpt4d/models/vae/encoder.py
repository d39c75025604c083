"""Point cross-attention encoder (design.md §H1.4) and its query-point selection."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from sculpt4d.errors import InputError

from .attention import ResidualCrossAttentionBlock, Transformer
from .embedder import FourierEmbedder
from .fps import farthest_point_sample, fps_count


class QuerySelection(NamedTuple):
    """Which surface points an encoding used (both index the P points of the input surface).

    ``input_idx``: ``[K]`` the random subset fed as keys/values (one permutation shared by the batch,
    as in the reference). ``query_idx``: ``[B, M]`` the FPS-picked query points (FPS order = latent
    token order). Reusing one selection for every frame makes latent token i the same surface point
    in every frame of a consistently sampled sequence.
    """

    input_idx: Tensor
    query_idx: Tensor

    def to(self, device: torch.device | str) -> QuerySelection:
        return QuerySelection(self.input_idx.to(device), self.query_idx.to(device))


class PointCrossAttentionEncoder(nn.Module):
    """Fourier(xyz)+features -> ``input_proj`` -> cross-attn(queries, points) -> self-attn -> ``ln_post``."""

    def __init__(
        self,
        fourier_embedder: FourierEmbedder,
        num_latents: int,
        width: int,
        heads: int,
        layers: int,
        point_feats: int,
        pc_size: int,
        pc_sharpedge_size: int = 0,
        downsample_ratio: float = 20,
        qkv_bias: bool = False,
        qk_norm: bool = True,
        use_ln_post: bool = True,
    ):
        super().__init__()
        self.fourier_embedder = fourier_embedder  # shared with the VAE and the geometry decoder
        self.num_latents = num_latents
        self.point_feats = point_feats
        self.pc_size = pc_size
        self.pc_sharpedge_size = pc_sharpedge_size
        self.downsample_ratio = downsample_ratio
        self.input_proj = nn.Linear(fourier_embedder.out_dim + point_feats, width)
        self.cross_attn = ResidualCrossAttentionBlock(width, heads, qkv_bias=qkv_bias, qk_norm=qk_norm)
        self.self_attn = Transformer(width, heads, layers, qkv_bias=qkv_bias, qk_norm=qk_norm)
        self.ln_post = nn.LayerNorm(width) if use_ln_post else nn.Identity()  # eps 1e-5 (plain LayerNorm)

    # ---- query selection -------------------------------------------------------------------------
    def _parts(self, num_points: int) -> list[tuple[int, int, float]]:
        """``(offset, count, num_queries)`` for the random part and (if any) the sharp-edge part."""
        if self.pc_sharpedge_size <= 0:
            return [(0, num_points, float(self.num_latents))]
        total = self.pc_size + self.pc_sharpedge_size
        nq_rand = self.pc_size / total * self.num_latents
        return [
            (0, self.pc_size, nq_rand),
            (self.pc_size, num_points - self.pc_size, self.num_latents - nq_rand),
        ]

    def select(
        self, xyz: Tensor, generator: torch.Generator | None = None, random_start: bool = True
    ) -> QuerySelection:
        """Pick the input subset (randperm) and the FPS query points from ``xyz [B, P, 3]``.

        Randomness (permutation, FPS start) comes from ``generator`` (global RNG if None); with
        ``random_start=False`` FPS starts at the first point of the subset (== torch_cluster's
        ``random_start=False``).
        """
        B, P, _ = xyz.shape
        inputs, queries = [], []
        for offset, count, nq in self._parts(P):
            n_in = int(nq * self.downsample_ratio)
            if count < n_in or n_in <= 0:
                raise InputError(
                    f"ShapeVAE encoder needs {n_in} points in this part of the surface (num_latents × "
                    f"downsample_ratio), got {count} of {P}; sample more surface points (pc_size)."
                )
            gdev = generator.device if generator is not None else xyz.device
            perm = (
                torch.randperm(count, generator=generator, device=gdev)[:n_in].to(xyz.device) + offset
            )  # [K]
            k = fps_count(n_in, nq / n_in)
            if random_start:
                start = torch.randint(n_in, (B,), generator=generator, device=gdev).to(xyz.device)
            else:
                start = torch.zeros(B, dtype=torch.long, device=xyz.device)
            local = farthest_point_sample(xyz[:, perm], k=k, start_idx=start)  # [B, k] into perm
            inputs.append(perm)
            queries.append(perm[local])
        return QuerySelection(torch.cat(inputs), torch.cat(queries, dim=1))

    # ---- forward --------------------------------------------------------------------------------
    def embed(self, points: Tensor) -> Tensor:
        # points: [B, L, 3+F] -> [B, L, W]
        xyz, feats = points[..., :3], points[..., 3:]
        return self.input_proj(torch.cat([self.fourier_embedder(xyz), feats], dim=-1))

    def forward(self, surface: Tensor, selection: QuerySelection) -> Tensor:
        """``surface [B, P, 3+F]`` + selection -> latent features ``[B, M, W]``."""
        if surface.shape[-1] != 3 + self.point_feats:
            raise InputError(
                f"surface has {surface.shape[-1]} channels per point, expected 3 + point_feats = "
                f"{3 + self.point_feats} (xyz | normal | sharp label)"
            )
        B = surface.shape[0]
        data = surface[:, selection.input_idx.to(surface.device)]  # [B, K, 3+F]
        qidx = selection.query_idx.to(surface.device)
        if qidx.shape[0] != B:
            qidx = qidx.expand(B, -1)
        query = torch.gather(surface, 1, qidx[..., None].expand(-1, -1, surface.shape[-1]))  # [B, M, 3+F]
        lat = self.cross_attn(self.embed(query), self.embed(data))  # [B, M, W]
        lat = self.self_attn(lat)
        return self.ln_post(lat)
