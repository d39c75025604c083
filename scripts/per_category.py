"""Per-category table of an evaluation run (README results), from its ``summary.json``.

    python scripts/per_category.py docs/results/eval_benchmark.json
    python scripts/per_category.py outputs/evaluate/benchmark/summary.json --methods 4d per_frame

Prints one markdown row per category with IoU / motion IoU / Chamfer / F-score for each method (the
category means ``python -m sculpt4d.evaluate`` writes under ``categories``), then, per category, the metrics
on which the first method beats the second.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_METHODS = ("4d", "per_frame", "vae_reconstruction", "oracle_static")
HIGHER_IS_BETTER = {"iou": True, "fscore": True, "chamfer": False}


def cell(scores: dict | None) -> str:
    """``IoU / motion IoU / Chamfer / F-score`` of one method in one category ("–" if it was not run)."""
    if scores is None:
        return "–"
    return (
        f"{scores['iou']:.3f} / {scores['motion_iou']:.3f} / {scores['chamfer']:.4f} / {scores['fscore']:.3f}"
    )


def wins(a: dict, b: dict) -> list[str]:
    """Metrics on which ``a`` is strictly better than ``b``."""
    return [k for k, up in HIGHER_IS_BETTER.items() if (a[k] > b[k] if up else a[k] < b[k])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summary", type=Path, help="summary.json of python -m sculpt4d.evaluate")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    args = parser.parse_args()

    categories: dict[str, dict[str, dict]] = json.loads(args.summary.read_text())["categories"]
    print("| category | " + " | ".join(args.methods) + " |")
    print("|---" * (len(args.methods) + 1) + "|")
    for name, by_method in categories.items():
        print(f"| {name} | " + " | ".join(cell(by_method.get(m)) for m in args.methods) + " |")
    first, second = args.methods[:2]
    for name, by_method in categories.items():
        if first in by_method and second in by_method:
            better = wins(by_method[first], by_method[second])
            print(f"{name}: {first} better than {second} on {', '.join(better) or 'nothing'}")


if __name__ == "__main__":
    main()
