#!/usr/bin/env python3
"""Make the tiny procedural 4D dataset (``make data-tiny``).

    python scripts/make_tiny_data.py --out data/tiny [--n-per-category 60] [--bench-per-category 4]

The recipe (sizes, cameras, seeds, layout) is ``sculpt4d.prep.tiny``; `python -m sculpt4d.evaluate`
uses the same code to prepare a missing benchmark split. The verify stage runs on the benchmark and
ood splits (and on train with --verify-train). Exit status 1 if a train or benchmark object failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sculpt4d.prep.procedural import BENCHMARK_SEED_OFFSET, CATEGORIES  # noqa: E402
from sculpt4d.prep.tiny import (  # noqa: E402
    BENCH_PER_CATEGORY,
    DEMO_VIEW,
    TINY,
    benchmark_split_name,
    prepare_glb_split,
    prepare_procedural_split,
)
from sculpt4d.utils.io import write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/tiny")
    ap.add_argument(
        "--n-per-category", type=int, default=200, help="training sequences per category (0: none)"
    )
    ap.add_argument("--bench-per-category", type=int, default=BENCH_PER_CATEGORY)
    ap.add_argument(
        "--bench-seed-offset",
        type=int,
        default=BENCHMARK_SEED_OFFSET,
        help="first seed of the held-out split; another offset draws a fresh split into "
        "<out>/benchmark_<offset> (e.g. --n-per-category 0 --bench-seed-offset 200000)",
    )
    ap.add_argument("--categories", nargs="*", default=list(CATEGORIES))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--verify-train", action="store_true", help="also verify every train object (slower)")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument(
        "--ood",
        type=Path,
        default=None,
        help="also prepare the real animated GLBs of this folder as <out>/ood (out-of-domain benchmark), "
        "e.g. tests/assets/gltf",
    )
    args = ap.parse_args(argv)

    out = Path(args.out)
    t0 = time.perf_counter()
    stats: dict = {"params": {k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()},
                   "demo_view": DEMO_VIEW, "splits": {}}  # fmt: skip
    bench = benchmark_split_name(args.bench_seed_offset)
    offsets = {"train": 0, bench: args.bench_seed_offset}
    for split, n in (("train", args.n_per_category), (bench, args.bench_per_category)):
        if n > 0:
            verify = split != "train" or args.verify_train
            stats["splits"][split] = prepare_procedural_split(
                out,
                split,
                n,
                args.categories,
                args.workers,
                verify,
                args.overwrite,
                seed_offset=offsets[split],
            )
    if args.ood is not None:
        stats["splits"]["ood"] = prepare_glb_split(args.ood, out, args.workers, args.overwrite)
    failed = sum(s["objects"] - s["ok"] for name, s in stats["splits"].items() if name != "ood")
    total = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    stats.update(seconds=round(total, 1), bytes=size, workers=args.workers, cpu_count=os.cpu_count())
    write_json(out / "tiny_stats.json", stats)
    print(json.dumps(stats, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
