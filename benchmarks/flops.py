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

PAPER = dict(input_size=4096, in_channels=64, hidden_size=2048, context_dim=1024, depth=21, num_heads=16,
             num_moe_layers=6, num_experts=8, moe_top_k=2, mlp_ratio=4)
VARIANTS = ("full", "blockmask", "radial", "framepack", "rope", "temporal")


def forward_flops(cfg: dict, T: int, N: int, M: int, block_density: float, block_size: int,
                  lora_rank: int = 0) -> dict[str, float]:
    """FLOPs of one DiT4D forward of one sample (T frames): matmuls as 2*m*n*k, attention as 4*Lq*Lk*D."""
    D, C, Dc, depth = cfg["hidden_size"], cfg["in_channels"], cfg["context_dim"], cfg["depth"]
    E, k, r = cfg["num_experts"], cfg["moe_top_k"], cfg["mlp_ratio"]
    L = T * (1 + N)  # tokens incl. one time token per frame
    f = dict(embed=2 * T * N * C * D + T * 2 * (D * r * D) * 2, final=2 * T * N * D * C)
    self_pairs = (T * N) ** 2 * block_density + T * N + L  # latents (kept blocks) + own time key + time queries
    f["self_proj"] = depth * 4 * 2 * D * D * L
    f["self_attn"] = depth * 4 * D * self_pairs
    f["cross"] = depth * (2 * 2 * D * D * L + 2 * 2 * Dc * D * T * M + 4 * D * L * M)
    n_moe = cfg["num_moe_layers"]
    f["mlp"] = (depth - n_moe) * 2 * 2 * D * r * D * L + n_moe * (2 * D * E * L + (k + 1) * 2 * 2 * D * r * D * L)
    f["skip"] = sum(1 for i in range(depth) if i > depth // 2) * 2 * 2 * D * D * L
    f["lora"] = depth * 4 * 2 * 2 * D * lora_rank * L
    f["total"] = sum(f.values())
    return f


def counted_small(variant: str, T: int = 4) -> tuple[float, float]:
    """(FlopCounterMode, analytic) FLOPs of a small DiT4D forward (gather backend)."""
    cfg = dict(input_size=64, in_channels=8, hidden_size=64, context_dim=32, depth=5, num_heads=4,
               num_moe_layers=2, num_experts=4, moe_top_k=2, mlp_ratio=4)
    torch.manual_seed(0)
    bb = HunyuanDiT(**cfg).eval()
    m = DiT4D(bb, {"variant": variant, "block_size": 16}, lora_rank=4, max_frames=T, backend="gather").eval()
    N, M = 64, 7
    x, t, c = torch.randn(1, T, N, 8), torch.rand(1), torch.randn(1, T, M, 32)
    # the math SDPA path decomposes into bmm's that FlopCounterMode counts (the CPU flash op is not counted)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        m(x, t, c)
    mask = build_block_mask(variant, T, N, 16)
    return float(fc.get_total_flops()), forward_flops(cfg, T, N, M, mask.block_density, 16, lora_rank=4)["total"]


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
        check.append(dict(variant=v, flop_counter=counted, analytic=analytic, rel_err=abs(counted - analytic) / counted))
    print_table(check, "cross-check: FlopCounterMode vs analytic count (small DiT4D, T=4, N=64, block 16, gather)")

    rows, calls = [], args.steps * 2  # CFG: cond + uncond batch
    for T in args.frames:
        full = None
        for v in VARIANTS:
            mask = build_block_mask(v, T, args.tokens, args.block_size)
            f = forward_flops(PAPER, T, args.tokens, args.context, mask.block_density, args.block_size)
            total = f["total"] * calls / 1e15
            full = total if v == "full" else full
            attn_full = forward_flops(PAPER, T, args.tokens, args.context, 1.0, args.block_size)["self_attn"]
            rows.append(dict(T=T, variant=v, density=round(mask.block_density, 4),
                             attn_vs_full=round(f["self_attn"] / attn_full, 4), PFLOPs=round(total, 1),
                             reduction=f"{100 * (1 - total / full):.1f}%"))
    print_table(rows, f"one sampling run: {args.steps} calls x CFG 2, N={args.tokens}, context {args.context}, "
                      f"block {args.block_size} (paper: full 425.7 -> blockmask 186.3 PFLOPs, -56%; 35% per layer)")
    fulls = [r for r in rows if r["variant"] == "full"]
    ours = [r for r in rows if r["variant"] == "blockmask"]
    best = min(fulls, key=lambda r: abs(r["PFLOPs"] - 425.7))
    red = min(ours, key=lambda r: abs(float(r["reduction"][:-1]) - 56.2))
    dens = min(ours, key=lambda r: abs(r["density"] - 0.35))
    print(f"paper full 425.7 PFLOPs -> closest T={best['T']} ({best['PFLOPs']}); paper -56% -> closest "
          f"T={red['T']} ({red['reduction']}); paper 35%/layer -> T={dens['T']} ({100 * dens['density']:.2f}%)")
    write_json(args.json, dict(check=check, rows=rows, steps=args.steps, cfg_batch=2, tokens=args.tokens,
                               context=args.context, block_size=args.block_size))


if __name__ == "__main__":
    main()
