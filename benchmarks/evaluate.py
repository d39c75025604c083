"""Where ``python -m sculpt4d.evaluate`` spends its time, and the projected time of the whole benchmark.

    python benchmarks/evaluate.py --max-objects 2 --json evaluate.json          # shipped model, tiny/benchmark
    python benchmarks/evaluate.py --rows base,minres48 --max-objects 2            # the decoding trade-off
    python benchmarks/evaluate.py --quick                                          # self-test: tiny settings

Each row is one real ``run_evaluate`` (every configured method, unchanged metric settings unless ``--quick``)
on ``--max-objects`` evenly spaced sequences, stages timed: ``condition`` (frames read + conditioner),
``sampling``, ``volume`` (geometry-decoder queries), ``surface`` (marching cubes + largest component),
``ground_truth`` (loading + sampling + voxelising the ground truth) and ``scoring`` (Chamfer / F-score / IoU /
jitter / motion IoU of every method). ``projected_min`` = seconds per sequence × the benchmark's sequences /
60; ``ratio`` = that of ``base``. Quality columns: the mean IoU and motion IoU of the 4D model, so a speed
trade-off row (``minres<R>``: coarsest hierarchical decoding level) shows what it costs. Rows as in
``benchmarks/predict.py`` (``base``, ``steps<K>``, ``res<R>``, ``flat``, ``minres<R>``, ``threads<n>``, a
backend name).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from _common import ROOT, add_json_arg, print_table, row_settings, timing, write_json

QUICK = ["num_steps=2", "octree_resolution=32", "metrics.n_points=5000", "metrics.iou_resolution=32"]


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from sculpt4d.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(
            "evaluate", overrides=[f"paths.root_dir={ROOT}", *overrides], return_hydra_config=True
        )


def run_row(base: list[str], name: str, out_dir: Path) -> dict[str, Any]:
    from hydra.core.hydra_config import HydraConfig

    import sculpt4d.evaluate as evaluate
    import sculpt4d.metrics as metrics
    import sculpt4d.models.vae.model as vae_model
    from sculpt4d.models.vae import ShapeVAE
    from sculpt4d.pipeline import Sculpt4DPipeline

    overrides, extra = row_settings(name)
    if "backend" in extra:  # every pipeline of the run (variants included) uses this attention backend
        overrides.append(f"attention_backend={extra['backend']}")
    cfg = compose([*base, *overrides, f"output_dir={out_dir / name}", "gallery.objects=0"])
    HydraConfig.instance().set_config(cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(extra.get("threads", threads))
    t: dict[str, float] = defaultdict(float)
    try:
        with contextlib.ExitStack() as stack:
            for obj, attr, key in (
                (Sculpt4DPipeline, "load_images", "condition"),
                (Sculpt4DPipeline, "encode_condition", "condition"),
                (Sculpt4DPipeline, "sample_latents", "sampling"),
                (Sculpt4DPipeline, "decode", "decode"),
                (ShapeVAE, "_volumes", "volume"),
                (vae_model, "extract_surface", "mc"),
                (evaluate, "load_object", "ground_truth"),
                (metrics, "prepare_ground_truth", "ground_truth"),
                (metrics, "score_sequence", "scoring"),
            ):
                stack.enter_context(timing(obj, attr, t, key))
            t0 = time.perf_counter()
            summary = evaluate.run_evaluate(cfg)
            wall = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    n = int(summary[next(iter(summary))]["sequences"])
    total = len(evaluate.find_objects(evaluate.resolve_benchmark(cfg)))
    four_d = summary.get("4d", {})
    return {
        "row": name,
        "objects": n,
        "condition_s": t["condition"],
        "sampling_s": t["sampling"],
        "volume_s": t["volume"],
        "surface_s": t["decode"] - t["volume"],
        "ground_truth_s": t["ground_truth"],
        "scoring_s": t["scoring"],
        "other_s": wall - sum(t[k] for k in ("condition", "sampling", "decode", "ground_truth", "scoring")),
        "wall_s": wall,
        "projected_min": wall / n * total / 60,
        "iou_4d": four_d.get("iou", float("nan")),
        "motion_iou_4d": four_d.get("motion_iou", float("nan")),
    }


def main() -> None:
    ap = add_json_arg(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument("--rows", default="base", help="comma list (see benchmarks/predict.py)")
    ap.add_argument("--max-objects", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="1 object, 2 steps, R=32, 5k samples, 32³ IoU")
    ap.add_argument("overrides", nargs="*", help="extra evaluate overrides for every row, e.g. ckpt=...")
    args = ap.parse_args()
    names = args.rows.split(",")
    if "base" not in names:
        names.insert(0, "base")
    base = [
        f"max_objects={1 if args.quick else args.max_objects}",
        *(QUICK if args.quick else []),
        *args.overrides,
    ]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_row([*base, f"paths.log_dir={tmp}/logs"], name, Path(tmp) / "out") for name in names]
    ref = rows[0]["projected_min"]
    for r in rows:
        r["ratio"] = r["projected_min"] / ref
    env = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "overrides": base}  # fmt: skip
    print_table(rows, f"evaluate stage breakdown (seconds; projected_min = whole benchmark) on {env}")
    write_json(args.json, {"env": env, "rows": rows})


if __name__ == "__main__":
    main()
