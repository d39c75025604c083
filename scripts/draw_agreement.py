"""How much the model's draws agree with each other, against how much they agree with the ground truth.

    python scripts/draw_agreement.py [--ckpt EXPORT] [--draws 4] [--max-objects 10] [--json PATH]

For each benchmark sequence (the evaluation's frames: view 0, every 2nd frame, 20 steps), ``--draws`` 4D
samples from seeds ``seed + i + 1000·k`` are meshed with the checkpoint's other defaults; per frame it scores
the IoU of every draw against the ground truth and of every pair of draws against each other (``--resolution``³
grids over each pair's union box). Draws that agree with each other far more than with the ground truth come
from a confident model that is wrong (bias); draws that disagree as much as they miss, from a model that samples
its category rather than the image (variance).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("draw_vs_truth", "draw_vs_draw")  # mean volume IoU of a draw with the truth, of two draws


def measure(ckpt: str, benchmark: Path, draws: int, max_objects: int, frames: int, stride: int, seed: int,
            resolution: int) -> dict:  # fmt: skip
    """``{"per_sequence": {name: row}, "per_category": {...}, "all": row}``, row = draw_vs_truth, draw_vs_draw."""
    from sculpt4d.evaluate import category_means, category_of, evenly_spaced, find_objects, load_object
    from sculpt4d.metrics.occupancy import volume_iou
    from sculpt4d.pipeline import Sculpt4DPipeline

    pipe = Sculpt4DPipeline.from_pretrained(ckpt)
    objects = find_objects(benchmark)
    objects = [objects[i] for i in evenly_spaced(len(objects), min(max_objects, len(objects)))]
    per_sequence = {}
    for i, obj in enumerate(objects):
        inputs, truths = load_object(obj, frames, 0, stride)
        meshes = [
            pipe(inputs, seed=seed + i + 1000 * k, num_steps=20, progress=False).meshes for k in range(draws)
        ]  # [K][T]
        to_truth = [volume_iou(m[t], truths[t], resolution) for m in meshes for t in range(frames)]
        pairs = [
            volume_iou(a[t], b[t], resolution)
            for a, b in itertools.combinations(meshes, 2)
            for t in range(frames)
        ]
        row = {"draw_vs_truth": float(np.mean(to_truth)), "draw_vs_draw": float(np.mean(pairs))}
        per_sequence[obj.name] = row
        print(
            f"{obj.name:<16} draw vs truth {row['draw_vs_truth']:.3f}  draw vs draw {row['draw_vs_draw']:.3f}"
        )
    rows = [{"category": category_of(name), **row} for name, row in per_sequence.items()]
    return {"per_sequence": per_sequence, **category_means(rows, COLUMNS)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", default=str(ROOT / "data" / "checkpoints" / "tiny"))
    ap.add_argument("--benchmark", type=Path, default=ROOT / "data" / "tiny" / "benchmark")
    ap.add_argument("--draws", type=int, default=4, help="samples per sequence (>= 2)")
    ap.add_argument("--max-objects", type=int, default=10, help="sequences, evenly spaced over the benchmark")
    ap.add_argument("--frames", type=int, default=8, help="frames per sequence (evaluate's 8)")
    ap.add_argument("--stride", type=int, default=2, help="every k-th frame (evaluate's 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    if not a.benchmark.is_dir():
        print(
            f"draw_agreement: {a.benchmark}: no such folder (make data-tiny, or python -m sculpt4d.evaluate)"
        )
        return 2
    if a.draws < 2:
        print(f"draw_agreement: --draws {a.draws}: need at least 2 draws to compare them")
        return 2
    from sculpt4d.evaluate import report_category_rows

    report_category_rows(
        measure(a.ckpt, a.benchmark, a.draws, a.max_objects, a.frames, a.stride, a.seed, a.resolution),
        COLUMNS,
        a.json,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
