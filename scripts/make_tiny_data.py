#!/usr/bin/env python3
"""Make the tiny procedural 4D dataset (``make data-tiny``).

    python scripts/make_tiny_data.py --out data/tiny [--n-per-category 60] [--bench-per-category 4]

Layout: <out>/glb/{train,benchmark}/<category>_<seed>.glb (the animated sources) and
<out>/{train,benchmark}/<category>_<seed>/ (render_cond/, geo_data/, meta.json) in the project's
on-disk format. Train seeds are 0..n-1, benchmark seeds start at 100000 (procedural.BENCHMARK_SEED_OFFSET).

Reduced sizes: 16 frames, 8 views of 128², grid_res 64, 4096 random + 1024 sharp points, 4096 volume
samples. Cameras are restricted to elevation 10°..35° and azimuth -60°..60° around the object's front
(+Z), the range the tiny model is conditioned on; the fixed demo viewpoint (elevation 20°, azimuth 30°)
lies inside it. Rendering uses the GL-free embree backend here (4x faster than llvmpipe at 128²).
The verify stage runs on the benchmark split (and on train with --verify-train).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sculpt4d.prep.pipeline import PrepParams, discover, print_summary, run  # noqa: E402
from sculpt4d.prep.procedural import BENCHMARK_SEED_OFFSET, CATEGORIES, generate_collection  # noqa: E402
from sculpt4d.utils.io import write_json  # noqa: E402

DEMO_VIEW = {"elevation": 20.0, "azimuth": 30.0}  # inside the tiny camera range below

TINY = dict(
    num_frames=16,
    num_views=8,
    resolution=128,
    elevation=(10.0, 35.0),
    azimuth=(-60.0, 60.0),
    radius=2.0,
    fov=40.0,
    grid_res=64,
    pc_random=4096,
    pc_sharp=1024,
    volume_size=4096,
    render_backend="embree",
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/tiny")
    ap.add_argument("--n-per-category", type=int, default=60)
    ap.add_argument("--bench-per-category", type=int, default=4)
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
    splits = {
        "train": (args.n_per_category, 0),
        "benchmark": (args.bench_per_category, BENCHMARK_SEED_OFFSET),
    }
    p = PrepParams(**TINY)
    stats: dict = {"params": {k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()},
                   "demo_view": DEMO_VIEW, "splits": {}}  # fmt: skip
    failed = 0
    for split, (n, offset) in splits.items():
        if n <= 0:
            continue
        glb_dir = out / "glb" / split
        ts = time.perf_counter()
        want = [glb_dir / f"{c}_{offset + i:06d}.glb" for c in args.categories for i in range(n)]
        if args.overwrite or not all(q.exists() for q in want):
            generate_collection(glb_dir, args.categories, n, seed_offset=offset)
        t_gen = time.perf_counter() - ts
        inputs = [q for q in discover(glb_dir) if q in set(want)]
        stages = ("frames", "render", "sample") + (
            ("verify",) if split == "benchmark" or args.verify_train else ()
        )
        res = run(inputs, out / split, p, stages, workers=args.workers, overwrite=args.overwrite)
        print_summary(res, out / split)
        failed += sum(r["status"] != "ok" for r in res)
        stats["splits"][split] = dict(objects=len(res), ok=sum(r["status"] == "ok" for r in res),
                                      generate_s=round(t_gen, 1), seconds=round(time.perf_counter() - ts, 1))  # fmt: skip
    if args.ood is not None:
        ts = time.perf_counter()
        res = run(discover(args.ood), out / "ood", p, ("frames", "render", "sample", "verify"),
                  workers=args.workers, overwrite=args.overwrite)  # fmt: skip
        print_summary(res, out / "ood")
        stats["splits"]["ood"] = dict(objects=len(res), ok=sum(r["status"] == "ok" for r in res),
                                      seconds=round(time.perf_counter() - ts, 1))  # fmt: skip
    total = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    stats.update(seconds=round(total, 1), bytes=size, workers=args.workers, cpu_count=os.cpu_count())
    write_json(out / "tiny_stats.json", stats)
    print(json.dumps(stats, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
