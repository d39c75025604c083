"""Peak memory and time of one CFG sampling step of DiT4D, default vs ``low_vram`` (side by side, one run).

``low_vram`` (``predict.py low_vram=true``) runs the CFG pair as two passes of one sequence each and the
DiT's MLPs / MoEs over ``LOW_VRAM_FF_TOKENS`` tokens at a time. On a CUDA GPU the peak is
``torch.cuda.max_memory_allocated``; on the CPU each row runs in its own process and the peak is the growth of
its resident memory during the step (``ru_maxrss`` minus the resident size before it, glibc told to return every
freed buffer), i.e. the activations.

    python benchmarks/memory.py                                        # CPU: a mid-size DiT, T=16, N=1024
    python benchmarks/memory.py --device cuda --paper --frames 16 32 --json mem.json   # paper size, bf16

Rows: ``default`` and ``low_vram`` per frame count; ``peak_ratio`` / ``time_ratio`` are low_vram over default.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

import torch
from _common import add_json_arg, print_table, write_json

from sculpt4d.diffusion import EulerSampler
from sculpt4d.models.dit import DiT4D, HunyuanDiT

MID = dict(  # a CPU-sized stand-in with the paper model's layout (long skips, MoE layers, N tokens per frame)
    input_size=1024,
    in_channels=64,
    hidden_size=256,
    context_dim=128,
    depth=9,
    num_heads=4,
    qk_norm=True,
    qk_norm_type="rms",
    num_moe_layers=3,
    num_experts=4,
    moe_top_k=2,
)


def build(paper: bool, device: torch.device, dtype: torch.dtype) -> tuple[DiT4D, dict[str, Any]]:
    if paper:
        from gpu_paper_size import PAPER, build_paper_dit

        dit, arch = build_paper_dit(device, dtype), PAPER
    else:
        torch.manual_seed(0)
        dit, arch = HunyuanDiT(**MID).to(device, dtype).eval().requires_grad_(False), MID
    model = DiT4D(dit, {"variant": "blockmask", "block_size": 128 if paper else 64}).to(device, dtype).eval()
    return model, arch


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def one_step(paper: bool, device_name: str, frames: int, low_vram: bool, repeats: int) -> dict[str, Any]:
    """One CFG Euler step (two model evaluations' worth of work) in this process: seconds and peak GiB."""
    from sculpt4d.pipeline import LOW_VRAM_FF_TOKENS

    device = torch.device(device_name)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model, arch = build(paper, device, dtype)
    n, c, ctx = arch["input_size"], arch["in_channels"], arch["context_dim"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, frames, n, c, generator=g).to(device, dtype)
    cond = torch.randn(1, frames, 257 if not paper else 1370, ctx, generator=g).to(device, dtype)
    model.backbone.set_ff_chunk_tokens(LOW_VRAM_FF_TOKENS if low_vram else None)
    sampler = EulerSampler(num_steps=2, cfg_batch=not low_vram)  # 2 steps: the second has dt = 0

    def step() -> torch.Tensor:
        with torch.inference_mode():
            return sampler.sample(model, x, cond, guidance_scale=5.0, progress=False)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        step()
        sync()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    best = float("inf")
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        best = min(best, (time.perf_counter() - t0) / 2)  # per model evaluation pair (one CFG step)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {
        "frames": frames,
        "tokens": frames * n,
        "seconds_per_step": best,
        "peak_activation_GiB": peak / 2**30,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--paper", action="store_true", help="the paper-size DiT (needs a CUDA GPU)")
    parser.add_argument("--frames", type=int, nargs="+", default=[16])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--_row", help=argparse.SUPPRESS)  # internal: one CPU row in a fresh process
    add_json_arg(parser)
    args = parser.parse_args()
    if args._row:
        frames, low = json.loads(args._row)
        print(json.dumps(one_step(args.paper, args.device, frames, low, args.repeats)))
        return
    if args.paper and not args.device.startswith("cuda"):
        raise SystemExit("--paper needs --device cuda (3 B parameters)")
    # glibc keeps freed heap memory resident; with a fixed mmap threshold every tensor buffer is its own mapping,
    # returned on free, so the resident peak follows the live tensors
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    rows = []
    for frames in args.frames:
        pair = []
        for low in (False, True):
            if args.device.startswith("cuda"):
                r = one_step(args.paper, args.device, frames, low, args.repeats)
                torch.cuda.empty_cache()
            else:  # a fresh process per row: resident-memory peaks do not carry over
                cmd = [sys.executable, __file__, "--device", "cpu", "--repeats", str(args.repeats)]
                cmd += ["--_row", json.dumps([frames, low])]
                r = json.loads(
                    subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
                )
            pair.append({"mode": "low_vram" if low else "default", **r})
        pair[1]["peak_ratio"] = pair[1]["peak_activation_GiB"] / pair[0]["peak_activation_GiB"]
        pair[1]["time_ratio"] = pair[1]["seconds_per_step"] / pair[0]["seconds_per_step"]
        rows += pair
    model = "paper-size DiT4D" if args.paper else "mid-size DiT4D (CPU stand-in)"
    title = f"one CFG step, blockmask, {model} on {args.device}"
    print_table(rows, title)
    write_json(
        args.json,
        {"title": title, "torch": torch.__version__, "arch": "paper" if args.paper else MID, "rows": rows},
    )


if __name__ == "__main__":
    main()
