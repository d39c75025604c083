"""Quality vs compute of evaluation runs: one plot + markdown tables (README results).

Reads the ``summary.json`` of one or more ``python -m sculpt4d.evaluate`` runs, plots IoU and Chamfer against
DiT TFLOPs per sequence for every method / variant, and prints each run's table as markdown.

    python scripts/plot_eval.py outputs/evaluate/benchmark/summary.json outputs/evaluate/variants/summary.json \
        --plot docs/images/quality_vs_compute.png
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
from pathlib import Path

from sculpt4d.config import run_user_task
from sculpt4d.errors import InputError
from sculpt4d.evaluate import format_table, method_label


def run_name(path: Path, summary: dict) -> str:
    """The run's folder name, or a multirun job's overrides (its folder is only a job number)."""
    if path.parent.name.isdigit() and summary.get("overrides"):
        return " ".join(summary["overrides"])
    return path.parent.name


CATEGORY_METRICS = (("iou", "IoU", ".3f"), ("motion_iou", "motion IoU", ".3f"), ("chamfer", "CD", ".4f"),
                    ("fscore", "F", ".3f"))  # fmt: skip
HIGHER_IS_BETTER = {"iou": True, "fscore": True, "chamfer": False}


def per_sequence_csv(summary: Path) -> Path | None:
    """The per-sequence CSV beside a summary: ``<stem>_per_sequence.csv`` (how docs/results/ keeps them) or the
    evaluation folder's ``per_sequence.csv``; None when neither exists."""
    for candidate in (
        summary.with_name(f"{summary.stem}_per_sequence.csv"),
        summary.with_name("per_sequence.csv"),
    ):
        if candidate.is_file():
            return candidate
    return None


def category_means(per_sequence: Path) -> dict[str, dict[str, dict[str, float]]] | None:
    """``{category: {method: {metric: mean}}}`` over the sequences of each object category (objects named
    ``<category>_<seed>``), for the metrics of ``CATEGORY_METRICS`` the CSV records; None if names do not fit."""
    rows = list(csv.DictReader(per_sequence.open()))
    if not rows or not all(re.fullmatch(r"[a-z]+_\d+", r["object"]) for r in rows):
        return None
    metrics = [m for m, _, _ in CATEGORY_METRICS if m in rows[0]]
    means: dict[str, dict[str, dict[str, float]]] = {}
    for cat in sorted({r["object"].split("_")[0] for r in rows}):
        for method in dict.fromkeys(r["method"] for r in rows):
            sel = [r for r in rows if r["method"] == method and r["object"].startswith(cat + "_")]
            means.setdefault(cat, {})[method] = {m: sum(float(r[m]) for r in sel) / len(sel) for m in metrics}
    return means


def category_table(means: dict[str, dict[str, dict[str, float]]]) -> str:
    """The per-category means as markdown: one row per category, ``IoU / motion IoU / CD / F`` per method
    (the metrics that were recorded)."""
    first = next(iter(means.values()))
    methods = list(first)
    shown = [(m, name, fmt) for m, name, fmt in CATEGORY_METRICS if m in next(iter(first.values()))]
    what = " / ".join(name for _, name, _ in shown)
    lines = ["| category | " + " | ".join(f"{method_label(m)} {what}" for m in methods) + " |"]
    lines.append("|---" * (len(methods) + 1) + "|")
    for cat, by_method in means.items():
        cells = [" / ".join(format(by_method[m][k], fmt) for k, _, fmt in shown) for m in methods]
        lines.append(f"| {cat} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def category_wins(
    means: dict[str, dict[str, dict[str, float]]], a: str = "4d", b: str = "per_frame"
) -> list[str]:
    """Per category, the metrics (IoU, F-score, Chamfer) on which method ``a`` is strictly better than ``b``."""
    lines = []
    for cat, by_method in means.items():
        if a in by_method and b in by_method:
            sa, sb = by_method[a], by_method[b]
            better = [
                k
                for k, up in HIGHER_IS_BETTER.items()
                if k in sa and (sa[k] > sb[k] if up else sa[k] < sb[k])
            ]
            lines.append(f"{cat}: {a} better than {b} on {', '.join(better) or 'nothing'}")
    return lines


def plot(summaries: list[tuple[str, dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    markers = "osD^v<>p*h"
    for k, (name, summary) in enumerate(summaries):
        for method, row in summary["methods"].items():
            for ax, metric in zip(axes, ("iou", "chamfer")):
                ax.scatter(row["tflops"], row[metric], marker=markers[k % len(markers)], s=40,
                           label=name if method == next(iter(summary["methods"])) else None)  # fmt: skip
                ax.annotate(
                    method_label(method),
                    (row["tflops"], row[metric]),
                    fontsize=7,
                    xytext=(4, 3),
                    textcoords="offset points",
                )
    for ax, metric in zip(axes, ("IoU ↑", "Chamfer ↓")):
        ax.set_xlabel("DiT TFLOPs per 8-frame sequence (sampling, CFG pair)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, title="run", title_fontsize=7)
    fig.suptitle(" · ".join(f"{name}: {s['objects']} sequences" for name, s in summaries), fontsize=9)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def read_summary(path: Path) -> dict:
    """An evaluation run's ``summary.json``; :class:`InputError` naming the file and the problem otherwise."""
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(
            f"{path}: no such file (the summary.json of a python -m sculpt4d.evaluate run)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(summary, dict) or not all(k in summary for k in ("methods", "objects", "benchmark")):
        raise InputError(f"{path}: not an evaluation summary (needs 'methods', 'objects' and 'benchmark')")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("summaries", type=Path, nargs="+")
    ap.add_argument("--plot", type=Path, default=Path("docs/images/quality_vs_compute.png"))
    ap.add_argument("--no-plot", action="store_true", help="print the tables only")
    args = ap.parse_args()
    summaries = [read_summary(p) for p in args.summaries]
    loaded = [(run_name(p, s), s) for p, s in zip(args.summaries, summaries)]
    for name, summary in loaded:
        print(f"\n{name} ({summary['objects']} sequences, {summary['benchmark']}):\n")
        print(format_table(summary["methods"], markdown=True))
    for path, (name, _) in zip(args.summaries, loaded):
        csv_path = per_sequence_csv(path)
        means = category_means(csv_path) if csv_path is not None else None
        if csv_path is None:
            print(f"\n{name}: no per-sequence CSV beside {path}, so no per-category table")
        elif means:
            print(f"\n{name} per category:\n\n{category_table(means)}\n")
            print("\n".join(category_wins(means)))
    if not args.no_plot:
        plot(loaded, args.plot)
        print(f"\nwrote {args.plot}")


if __name__ == "__main__":
    run_user_task(lambda _cfg: main(), None)  # a bad summary: one line, exit 2
