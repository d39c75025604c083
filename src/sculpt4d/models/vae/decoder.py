"""Geometry decoder: occupancy logits at query points from decoded latents (design.md §H1.5)."""

from __future__ import annotations

from torch import Tensor, nn

from .attention import ResidualCrossAttentionBlock
from .embedder import FourierEmbedder


class GeometryDecoder(nn.Module):
    """``query_proj(fourier(xyz))`` -> cross-attn to latents -> ``ln_post`` -> ``output_proj`` (1 logit).

    Logits are positive inside the shape; the surface is the 0 level set.
    """

    def __init__(
        self,
        fourier_embedder: FourierEmbedder,
        width: int,
        heads: int,
        mlp_expand_ratio: int = 4,
        downsample_ratio: int = 1,
        qkv_bias: bool = False,
        qk_norm: bool = True,
        use_ln_post: bool = True,
    ):
        super().__init__()
        if downsample_ratio != 1:
            raise NotImplementedError("geo_decoder_downsample_ratio != 1 is not used by Hunyuan3D-2.1")
        self.fourier_embedder = fourier_embedder
        self.query_proj = nn.Linear(fourier_embedder.out_dim, width)
        self.cross_attn_decoder = ResidualCrossAttentionBlock(
            width, heads, mlp_expand_ratio=mlp_expand_ratio, qkv_bias=qkv_bias, qk_norm=qk_norm
        )
        self.ln_post = nn.LayerNorm(width) if use_ln_post else nn.Identity()  # eps 1e-5
        self.output_proj = nn.Linear(width, 1)

    def latent_kv(self, latents: Tensor) -> tuple[Tensor, Tensor]:
        """The latent side of the cross-attention (keys, values ``[B, H, N, hd]``), computed once per item."""
        return self.cross_attn_decoder.data_kv(latents)

    def forward(
        self, queries: Tensor, latents: Tensor | None = None, kv: tuple[Tensor, Tensor] | None = None
    ) -> Tensor:
        # queries: [B, P, 3], latents: [B, N, W] (or their `latent_kv`) -> logits [B, P, 1]
        x = self.query_proj(self.fourier_embedder(queries))
        x = self.cross_attn_decoder(x, latents, kv=kv)
        return self.output_proj(self.ln_post(x))
