"""``HunyuanDiT``: the Hunyuan3D-2.1 shape DiT (``HunYuanDiTPlain``), state-dict compatible (design.md §H2)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from .layers import DiTBlock, FinalLayer, TimestepEmbedder

#: torch.compile modes for ``compile_regions``: ``reduce-overhead`` adds CUDA graphs on a GPU
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class HunyuanDiT(nn.Module):
    """Velocity network ``v = dit(x [B,N,C], t [B] in [0,1], cond [B,L,Dc]) -> [B,N,C]``.

    The time embedding is a prepended token (no adaLN), there is no positional embedding, blocks
    ``i > depth//2`` fuse a long skip from block ``depth-1-i``, the last ``num_moe_layers`` blocks use MoE.
    """

    def __init__(
        self,
        input_size: int = 4096,
        in_channels: int = 64,
        hidden_size: int = 2048,
        context_dim: int = 1024,
        depth: int = 21,
        num_heads: int = 16,
        qk_norm: bool = True,
        qk_norm_type: str = "rms",
        qkv_bias: bool = False,
        num_moe_layers: int = 6,
        num_experts: int = 8,
        moe_top_k: int = 2,
        mlp_ratio: int = 4,
        timestep_scale: float = 1.0,
    ):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.config = dict(
            input_size=input_size,
            in_channels=in_channels,
            hidden_size=hidden_size,
            context_dim=context_dim,
            depth=depth,
            num_heads=num_heads,
            qk_norm=qk_norm,
            qk_norm_type=qk_norm_type,
            qkv_bias=qkv_bias,
            num_moe_layers=num_moe_layers,
            num_experts=num_experts,
            moe_top_k=moe_top_k,
            mlp_ratio=mlp_ratio,
            timestep_scale=timestep_scale,
        )
        self.in_channels, self.hidden_size, self.depth, self.num_heads = (
            in_channels,
            hidden_size,
            depth,
            num_heads,
        )
        self.x_embedder = nn.Linear(in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size, timestep_scale)
        self.blocks = nn.ModuleList(
            [
                DiTBlock(
                    hidden_size,
                    context_dim,
                    num_heads,
                    qkv_bias,
                    qk_norm,
                    qk_norm_type,
                    mlp_ratio,
                    skip=i > depth // 2,
                    moe=depth - i <= num_moe_layers,
                    num_experts=num_experts,
                    top_k=moe_top_k,
                )
                for i in range(depth)
            ]
        )
        self.final_layer = FinalLayer(hidden_size, in_channels)

    def embed(self, x: Tensor, t: Tensor) -> Tensor:
        """x [B, N, C], t [B] -> h [B, 1+N, D] with the time token first."""
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        return torch.cat([self.t_embedder(t).to(x.dtype), self.x_embedder(x)], dim=1)

    def run_blocks(
        self,
        h: Tensor,
        cond: Tensor,
        self_attn: Sequence[Callable[[Tensor], Tensor]] | None = None,
    ) -> Tensor:
        """All blocks with the LIFO long skips; ``self_attn[i]`` replaces block i's self-attention."""
        skips: list[Tensor] = []
        for i, block in self.iter_blocks():
            skip = skips.pop() if block.skip_linear is not None else None
            h = block(h, cond, skip, self_attn[i] if self_attn else None)
            if i < self.depth // 2:
                skips.append(h)
        return h

    def set_ff_chunk_tokens(self, tokens: int | None) -> None:
        """Token-chunk every block's MLP / MoE at inference (see ``DiTBlock.ff_chunk_tokens``)."""
        if tokens is not None and int(tokens) < 1:
            raise ValueError(f"ff_chunk_tokens must be >= 1 or None, got {tokens}")
        for _, block in self.iter_blocks():
            block.ff_chunk_tokens = None if tokens is None else int(tokens)

    def compile_regions(self, mode: str | None) -> None:
        """Regional torch.compile of every block's non-attention parts (``DiTBlock.compile_regions``); the
        blocks share one compiled graph per region and input shape. None: back to eager."""
        if mode is not None and mode not in COMPILE_MODES:
            raise ValueError(f"compile mode {mode!r} is not one of {', '.join(COMPILE_MODES)} (or null)")
        for _, block in self.iter_blocks():
            block.compile_regions(mode)

    def iter_blocks(self) -> Iterator[tuple[int, DiTBlock]]:
        return enumerate(self.blocks)  # type: ignore[arg-type]

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        h = self.embed(x, t)  # [B, 1+N, D]
        h = self.run_blocks(h, cond.to(h.dtype))
        return self.final_layer(h)  # [B, N, C]
