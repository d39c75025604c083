"""Paper-size forward passes on a CUDA GPU: time and peak memory (random weights, bf16).

1. The 3D DiT (Hunyuan3D-2.1 size, 3.05 B params): one forward at B=2 (one CFG pair), N=4096.
2. DiT4D at T frames: one forward with CFG (B=2), ``blockmask`` vs ``full``, per attention backend and per
   torch.compile mode of the blocks' regions around self-attention (``none`` = eager; ``reduce-overhead`` adds
   CUDA graphs). ``time_vs_full``: over the eager ``full`` row of the first backend at the same T.

    python benchmarks/gpu_paper_size.py --frames 8 16 --json out.json
    python benchmarks/gpu_paper_size.py --frames 16 --variants blockmask full --backends flex varlen \
        --compile none default reduce-overhead --json out.json
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import add_json_arg, print_table, write_json

from sculpt4d.models.dit import DiT4D, HunyuanDiT

PAPER = dict(
    input_size=4096,
    in_channels=64,
    hidden_size=2048,
    context_dim=1024,
    depth=21,
    num_heads=16,
    qk_norm=True,
    qk_norm_type="rms",
    qkv_bias=False,
    num_moe_layers=6,
    num_experts=8,
    moe_top_k=2,
)


def build_paper_dit(device: torch.device, dtype: torch.dtype) -> HunyuanDiT:
    with torch.device("meta"):
        dit = HunyuanDiT(**PAPER)
    dit = dit.to_empty(device=device)
    with torch.no_grad():
        for name, p in dit.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02)
    return dit.to(dtype).eval().requires_grad_(False)


def timed(fn, repeats: int = 3) -> tuple[float, float]:
    """(min seconds, peak GiB) over repeats after one warm-up."""
    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    best = float("inf")
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--variants", nargs="+", default=["blockmask", "full"])
    parser.add_argument("--backends", nargs="+", default=["auto"])
    parser.add_argument(
        "--compile", nargs="+", default=["none"], help="none | default | reduce-overhead | max-autotune ..."
    )
    parser.add_argument("--repeats", type=int, default=3)
    add_json_arg(parser)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    dev, dtype = torch.device("cuda"), torch.bfloat16
    dit = build_paper_dit(dev, dtype)
    params = sum(p.numel() for p in dit.parameters())
    rows = []
    x = torch.randn(2, 4096, 64, device=dev, dtype=dtype)
    t = torch.full((2,), 0.5, device=dev, dtype=dtype)
    cond = torch.randn(2, 1370, 1024, device=dev, dtype=dtype)
    with torch.no_grad():
        sec, mem = timed(lambda: dit(x, t, cond), args.repeats)
    rows.append(
        {
            "model": "3D DiT",
            "T": 1,
            "variant": "-",
            "backend": "sdpa",
            "compile": "none",
            "density": 1.0,
            "seconds": sec,
            "peak_GiB": mem,
            "params_B": params / 1e9,
        }
    )
    for T in args.frames:
        xs = torch.randn(2, T, 4096, 64, device=dev, dtype=dtype)
        cs = torch.randn(2, T, 1370, 1024, device=dev, dtype=dtype)
        for variant in args.variants:
            for backend in args.backends:
                for mode in args.compile:
                    if variant == "full" and (backend != args.backends[0] or mode != "none"):
                        continue  # the reference row only
                    m4d = (
                        DiT4D(dit, {"variant": variant, "block_size": 128, "backend": backend})
                        .to(dev, dtype)
                        .eval()
                    )
                    dit.compile_regions(None if mode == "none" else mode)
                    try:
                        with torch.no_grad():
                            sec, mem = timed(lambda m=m4d, a=xs, c=cs: m(a, t, c), args.repeats)
                    except (RuntimeError, ValueError) as e:  # a kernel that does not apply here
                        sec, mem = float("nan"), float("nan")
                        print(f"T={T} {variant} {backend} compile={mode}: {str(e)[:200]}")
                    rows.append(
                        {
                            "model": "DiT4D",
                            "T": T,
                            "variant": variant,
                            "backend": backend,
                            "compile": mode,
                            "density": m4d.mask(T, 4096).density,
                            "seconds": sec,
                            "peak_GiB": mem,
                            "params_B": params / 1e9,
                        }
                    )
                    del m4d
                    dit.compile_regions(None)
                    torch.cuda.empty_cache()
    for T in args.frames:
        base = next((r["seconds"] for r in rows if r["T"] == T and r["variant"] == "full"), float("nan"))
        for r in rows:
            if r["T"] == T:
                r["time_vs_full"] = r["seconds"] / base
    print_table(rows, f"paper-size forward (CFG pair, bf16) on {torch.cuda.get_device_name()}")
    if args.json:
        write_json(
            args.json, {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}
        )


if __name__ == "__main__":
    main()
