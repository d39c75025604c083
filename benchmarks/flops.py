"""Network FLOPs of one 4D sampling run (50 model calls x CFG batch 2) per attention variant.

Analytic count at the paper size (Hunyuan3D-2.1 DiT, N=4096 latents, 1370 DINOv2 tokens), attention
counted over the kept blocks only, cross-checked against ``torch.utils.flop_counter.FlopCounterMode`` on a
small DiT4D run with the ``gather`` backend (which computes exactly the kept blocks).

    python benchmarks/flops.py [--frames 8 16 32] [--steps 50] [--json out.json]
"""

from __future__ import annotations

import argparse

import torch
from _common import add_json_arg, print_table, write_json
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from sculpt4d.models.attention import build_block_mask
from sculpt4d.models.dit import DiT4D, HunyuanDiT
from sculpt4d.models.flops import PAPER_DIT as PAPER
from sculpt4d.models.flops import forward_flops, register_cpu_flash_flops

VARIANTS = ("full", "blockmask", "radial", "framepack", "rope", "temporal")


def counted_small(variant: str, T: int = 4) -> tuple[float, float]:
    """(FlopCounterMode, analytic) FLOPs of a small DiT4D forward (gather backend)."""
    cfg = dict(
        input_size=64,
        in_channels=8,
        hidden_size=64,
        context_dim=32,
        depth=5,
        num_heads=4,
        num_moe_layers=2,
        num_experts=4,
        moe_top_k=2,
        mlp_ratio=4,
    )
    torch.manual_seed(0)
    bb = HunyuanDiT(**cfg).eval()
    m = DiT4D(bb, {"variant": variant, "block_size": 16}, lora_rank=4, max_frames=T, backend="gather").eval()
    N, M = 64, 7
    x, t, c = torch.randn(1, T, N, 8), torch.rand(1), torch.randn(1, T, M, 32)
    register_cpu_flash_flops()  # gather calls the CPU flash op directly
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        m(x, t, c)
    mask = build_block_mask(variant, T, N, 16)
    return float(fc.get_total_flops()), forward_flops(cfg, T, N, M, mask.block_density, lora_rank=4)["total"]


def main() -> None:
    ap = add_json_arg(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--context", type=int, default=1370)
    ap.add_argument("--steps", type=int, default=50, help="model calls per sample (reference §4: 50)")
    ap.add_argument("--block-size", type=int, default=128)
    args = ap.parse_args()

    check = []
    for v in VARIANTS:
        counted, analytic = counted_small(v)
        check.append(
            dict(
                variant=v, flop_counter=counted, analytic=analytic, rel_err=abs(counted - analytic) / counted
            )
        )
    print_table(
        check, "cross-check: FlopCounterMode vs analytic count (small DiT4D, T=4, N=64, block 16, gather)"
    )

    rows, calls = [], args.steps * 2  # CFG: cond + uncond batch
    for T in args.frames:
        full = None
        for v in VARIANTS:
            mask = build_block_mask(v, T, args.tokens, args.block_size)
            f = forward_flops(PAPER, T, args.tokens, args.context, mask.block_density)
            total = f["total"] * calls / 1e15
            full = total if v == "full" else full
            attn_full = forward_flops(PAPER, T, args.tokens, args.context, 1.0)["self_attn"]
            rows.append(
                dict(
                    T=T,
                    variant=v,
                    density=round(mask.block_density, 4),
                    attn_vs_full=round(f["self_attn"] / attn_full, 4),
                    PFLOPs=round(total, 1),
                    reduction=f"{100 * (1 - total / full):.1f}%",
                )
            )
    print_table(
        rows,
        f"one sampling run: {args.steps} calls x CFG 2, N={args.tokens}, context {args.context}, "
        f"block {args.block_size} (paper: full 425.7 -> blockmask 186.3 PFLOPs, -56%; 35% per layer)",
    )
    fulls = [r for r in rows if r["variant"] == "full"]
    ours = [r for r in rows if r["variant"] == "blockmask"]
    best = min(fulls, key=lambda r: abs(r["PFLOPs"] - 425.7))
    red = min(ours, key=lambda r: abs(float(r["reduction"][:-1]) - 56.2))
    dens = min(ours, key=lambda r: abs(r["density"] - 0.35))
    print(
        f"paper full 425.7 PFLOPs -> closest T={best['T']} ({best['PFLOPs']}); paper -56% -> closest "
        f"T={red['T']} ({red['reduction']}); paper 35%/layer -> T={dens['T']} ({100 * dens['density']:.2f}%)"
    )
    write_json(
        args.json,
        dict(
            check=check,
            rows=rows,
            steps=args.steps,
            cfg_batch=2,
            tokens=args.tokens,
            context=args.context,
            block_size=args.block_size,
        ),
    )


if __name__ == "__main__":
    main()
