"""Wall time of each attention backend per variant, side by side with dense full attention (same run).

Ratio = time / time(dense SDPA without mask); compare it with the mask density (ideal: ratio ~ density).

    python benchmarks/attention.py --quick                      # T=16, N=1024, fp32, blockmask, gather
    python benchmarks/attention.py --device cuda --sizes 16x4096 --dtypes bf16 --json out.json
    python benchmarks/attention.py --device cuda --sizes 16x4096 --dtypes bf16 --variants blockmask \
        --backends flex --flex-options BLOCK_M=64,BLOCK_N=64,num_warps=4,num_stages=3 BLOCK_M=128,BLOCK_N=64
    python benchmarks/attention.py --crossover --json crossover.json   # CPU: where ``auto`` switches dense -> gather
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _common import add_json_arg, print_table, write_json

from sculpt4d.models.attention import build_block_mask, sparse_attention
from sculpt4d.models.attention.backends import _block_sparse_func, choose_backend

CROSSOVER_SIZES = "8x64,8x128,16x128,8x256,16x256,32x128,8x512,16x512,32x256"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def q_probe(device: torch.device) -> torch.Tensor:
    return torch.zeros(1, 1, 1, 8, device=device)


def parse_backend(name: str) -> tuple[str, dict[str, int] | None]:
    """``flex[BLOCK_M=64,num_warps=8]`` -> ("flex", {"BLOCK_M": 64, "num_warps": 8}); others as given."""
    if not name.endswith("]"):
        return name, None
    kernel, _, opts = name[:-1].partition("[")
    return kernel, {k: int(v) for k, v in (kv.split("=") for kv in opts.split(",") if kv)}


def timeit(fn: Callable[[], torch.Tensor], repeats: int, device: torch.device) -> float:
    """Min wall time over ``repeats`` calls after one warm-up call (compiles / builds caches)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = add_json_arg(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default="8x1024,16x1024,8x4096,16x4096", help="comma list of TxN")
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    ap.add_argument("--variants", nargs="+", default=["blockmask", "radial", "framepack", "temporal", "full"])
    ap.add_argument(
        "--backends",
        nargs="+",
        default=None,
        help="default: gather (+flex, varlen, +block_sparse_attn on CUDA); dense = SDPA with the token mask",
    )
    ap.add_argument(
        "--flex-options",
        nargs="+",
        default=[],
        metavar="K=V,K=V",
        help="extra flex rows, one per FlexAttention kernel_options setting (e.g. BLOCK_M=64,num_warps=8)",
    )
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--dense-max-tokens", type=int, default=32768, help="skip the masked-dense backend above this T*N"
    )
    ap.add_argument("--quick", action="store_true", help="T=16, N=1024, fp32, blockmask, gather only")
    ap.add_argument(
        "--crossover",
        action="store_true",
        help="tiny-DiT sizes (B=2: a CFG pair, 4 heads x 48, block 32, the per-frame time-token prefix), "
        "small T x N: gather vs dense and the auto choice",
    )
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.crossover:
        args.sizes = args.sizes if args.sizes != ap.get_default("sizes") else CROSSOVER_SIZES
        args.dtypes, args.variants, args.backends = ["fp32"], ["blockmask"], ["gather", "dense", "auto"]
        args.heads, args.head_dim, args.block_size = 4, 48, 32
    batch, prefix = (2, 1) if args.crossover else (1, 0)
    if args.quick:
        args.sizes, args.dtypes, args.variants = "16x1024", ["fp32"], ["blockmask"]
        args.backends = args.backends or ["gather"]
    if args.backends is None:
        args.backends = ["gather"] + (
            ["flex", "varlen"] + (["block_sparse_attn"] if _block_sparse_func() else [])
            if device.type == "cuda"
            else []
        )
    torch.manual_seed(0)
    rows = []
    for size in args.sizes.split(","):
        T, N = (int(s) for s in size.lower().split("x"))
        for dn in args.dtypes:
            dt = DTYPES[dn]
            q, k, v = (
                torch.randn(batch, args.heads, T * N, args.head_dim, device=device, dtype=dt)
                for _ in range(3)
            )
            pre = (
                tuple(
                    torch.randn(batch, args.heads, T, prefix, args.head_dim, device=device, dtype=dt)
                    for _ in range(2)
                )
                if prefix
                else None
            )
            with torch.no_grad():
                base = timeit(
                    lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v), args.repeats, device
                )
                rows.append(
                    dict(
                        T=T,
                        N=N,
                        dtype=dn,
                        variant="full",
                        backend="sdpa (no mask)",
                        density=1.0,
                        seconds=round(base, 4),
                        ratio=1.0,
                        ratio_over_density=1.0,
                    )
                )
                for variant in args.variants:
                    mask = build_block_mask(variant, T, N, args.block_size)
                    for be in args.backends + [f"flex[{o}]" for o in args.flex_options]:
                        if be == "dense" and T * N > args.dense_max_tokens:
                            continue  # the token mask alone would be (T N)^2 booleans
                        row = dict(
                            T=T, N=N, dtype=dn, variant=variant, backend=be, density=round(mask.density, 4)
                        )
                        kernel, options = parse_backend(be)
                        try:
                            s = timeit(
                                lambda q=q, k=k, v=v, mask=mask, kernel=kernel, pre=pre, o=options: (
                                    sparse_attention(q, k, v, mask, kernel, pre, flex_options=o)
                                ),
                                args.repeats,
                                device,
                            )
                        except (ValueError, ImportError, RuntimeError) as e:  # e.g. kernel n/a for this case
                            rows.append({**row, "seconds": f"n/a: {str(e)[:50]}"})
                            continue
                        rows.append(
                            {
                                **row,
                                "seconds": round(s, 4),
                                "ratio": round(s / base, 4),
                                "ratio_over_density": round(s / base / mask.density, 3),
                            }
                        )
                    print_table(
                        [r for r in rows if (r["T"], r["N"], r["dtype"], r["variant"]) == (T, N, dn, variant)]
                    )
    if args.crossover:  # gather / dense per size: > 1 where dense wins
        for r in rows:
            same = [
                x for x in rows if (x["T"], x["N"]) == (r["T"], r["N"]) and isinstance(x["seconds"], float)
            ]
            t = {x["backend"]: x["seconds"] for x in same}
            if r["backend"] == "auto" and "gather" in t and "dense" in t:
                r["gather_over_dense"] = round(t["gather"] / t["dense"], 3)
                r["auto_picks"] = choose_backend(
                    q_probe(device), build_block_mask("blockmask", r["T"], r["N"], args.block_size)
                )
    title = (
        f"attention wall time (min of {args.repeats}), B=1, H={args.heads}, D={args.head_dim}, "
        f"block {args.block_size}, device {device}; ratio = time / dense SDPA"
    )
    print_table(rows, title)
    write_json(
        args.json,
        dict(
            rows=rows,
            device=str(device),
            heads=args.heads,
            head_dim=args.head_dim,
            block_size=args.block_size,
            repeats=args.repeats,
            torch=torch.__version__,
        ),
    )


if __name__ == "__main__":
    main()
