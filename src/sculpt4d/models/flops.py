"""Analytic network FLOPs of the 4D DiT (matmuls as 2·m·n·k, attention as 4·Lq·Lk·D over kept blocks).

Cross-checked against ``torch.utils.flop_counter.FlopCounterMode`` by ``benchmarks/flops.py`` (gather
backend, which computes exactly the kept blocks). Used by the FLOP benchmark and by evaluation's
per-method compute column.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def forward_flops(
    cfg: Mapping[str, Any], T: int, N: int, M: int, block_density: float, lora_rank: int = 0
) -> dict[str, float]:
    """FLOPs of one DiT4D forward of one sample: ``T`` frames of ``N`` latents, ``M`` condition tokens/frame.

    ``cfg`` is the backbone's constructor config (``HunyuanDiT.config``); ``block_density`` the fraction of
    latent-latent attention pairs kept by the mask (1 for full attention, 1/T for frame-diagonal).
    """
    D, C, Dc, depth = cfg["hidden_size"], cfg["in_channels"], cfg["context_dim"], cfg["depth"]
    E, k, r = cfg["num_experts"], cfg["moe_top_k"], cfg["mlp_ratio"]
    L = T * (1 + N)  # tokens incl. one time token per frame
    f = dict(embed=2 * T * N * C * D + T * 2 * (D * r * D) * 2, final=2 * T * N * D * C)
    # latent pairs kept by the mask + each latent's own time key + the time queries
    self_pairs = (T * N) ** 2 * block_density + T * N + L
    f["self_proj"] = depth * 4 * 2 * D * D * L
    f["self_attn"] = depth * 4 * D * self_pairs
    f["cross"] = depth * (2 * 2 * D * D * L + 2 * 2 * Dc * D * T * M + 4 * D * L * M)
    n_moe = cfg["num_moe_layers"]
    f["mlp"] = (depth - n_moe) * 2 * 2 * D * r * D * L + n_moe * (
        2 * D * E * L + (k + 1) * 2 * 2 * D * r * D * L
    )
    f["skip"] = sum(1 for i in range(depth) if i > depth // 2) * 2 * 2 * D * D * L
    f["lora"] = depth * 4 * 2 * 2 * D * lora_rank * L
    f["total"] = sum(f.values())
    return f


def sampling_flops(
    model: Any,
    T: int,
    M: int,
    num_steps: int,
    guidance_scale: float,
    per_frame: bool = False,
    guidance_until: float = 1.0,
    sampling_shift: float = 1.0,
    num_samples: int = 1,
) -> float:
    """Total DiT FLOPs of one sampling run of ``model`` (a :class:`~sculpt4d.models.dit.DiT4D`).

    ``num_steps`` model calls, on a CFG pair at the steps that :class:`~sculpt4d.diffusion.EulerSampler` guides
    (``guidance_scale >= 0``, flow time below ``guidance_until``); ``per_frame`` = T runs at T=1; all of it
    ``num_samples`` times.
    """
    from sculpt4d.diffusion import EulerSampler

    cfg = model.backbone.config
    N = int(cfg["input_size"])
    rank = model.lora_rank
    sampler = EulerSampler(num_steps, shift=sampling_shift, guidance_until=guidance_until)
    calls = num_samples * (num_steps + sampler.guided_steps(guidance_scale))
    if per_frame:
        return T * calls * forward_flops(cfg, 1, N, M, 1.0, rank)["total"]
    density = model.mask(T, N).block_density
    return calls * forward_flops(cfg, T, N, M, density, rank)["total"]


#: the paper's DiT (Hunyuan3D-2.1): N = 4096 latents per frame, 1370 DINOv2 tokens per frame
PAPER_DIT: dict[str, int] = dict(input_size=4096, in_channels=64, hidden_size=2048, context_dim=1024, depth=21,
                                 num_heads=16, num_moe_layers=6, num_experts=8, moe_top_k=2, mlp_ratio=4)  # fmt: skip
PAPER_CONTEXT_TOKENS = 1370


def paper_sampling_pflops(
    attention: Mapping[str, Any], T: int = 16, num_steps: int = 50, block_size: int = 128
) -> float:
    """PFLOPs of one sampling run (``num_steps`` calls x CFG 2) of the paper-size DiT under ``attention``
    (``{"variant": ..., **mask options}``; its tiny ``block_size`` / ``backend`` are replaced by the paper's)."""
    from sculpt4d.models.attention import build_block_mask

    opts = {k: v for k, v in attention.items() if k not in ("variant", "block_size", "backend", "rope_base")}
    N = PAPER_DIT["input_size"]
    density = build_block_mask(str(attention["variant"]), T, N, block_size, **opts).block_density
    return 2 * num_steps * forward_flops(PAPER_DIT, T, N, PAPER_CONTEXT_TOKENS, density)["total"] / 1e15


def register_cpu_flash_flops() -> None:
    """Teach ``FlopCounterMode`` the CPU flash-attention op that the ``gather`` backend calls directly.

    torch counts SDPA through its public kernels only; ``aten._scaled_dot_product_flash_attention_for_cpu``
    (and its backward) get the same formula here, so a counted ``gather`` run sees the kept blocks.
    """
    from torch.utils.flop_counter import (
        flop_registry,
        register_flop_formula,
        sdpa_backward_flop_count,
        sdpa_flop_count,
    )

    fwd = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    bwd = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
    if fwd in flop_registry or fwd.default in flop_registry:
        return

    @register_flop_formula(fwd)
    def _fwd_flops(query_shape, key_shape, value_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    @register_flop_formula(bwd)
    def _bwd_flops(
        grad_out_shape, query_shape, key_shape, value_shape, *args: Any, out_shape=None, **kwargs: Any
    ) -> int:
        return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)
