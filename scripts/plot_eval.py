"""Quality vs compute of evaluation runs: one plot + markdown tables (README results).

Reads the ``summary.json`` of one or more ``python -m sculpt4d.evaluate`` runs, plots IoU and Chamfer against
DiT TFLOPs per sequence for every method / variant, and prints each run's table as markdown.

    python scripts/plot_eval.py outputs/evaluate/benchmark/summary.json outputs/evaluate/variants/summary.json \
        --plot docs/images/quality_vs_compute.png
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def label(method: str) -> str:
    """``variant:full`` -> ``full``; the trained model's own mask is named (``4d (blockmask)``)."""
    return "4d (blockmask)" if method == "4d" else method.removeprefix("variant:")


def markdown_table(summary: dict) -> str:
    head = "| method | Chamfer ↓ | IoU ↑ | F-score ↑ | jitter ↓ | DiT TFLOPs | s / sequence |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for method, row in summary["methods"].items():
        lines.append(
            f"| {label(method)} | {row['chamfer']:.4f} | {row['iou']:.3f} | {row['fscore']:.3f} | "
            f"{row['jitter']:.4f} | {row['tflops']:.2f} | {row['seconds']:.1f} |"
        )
    return "\n".join(lines)


def plot(summaries: list[tuple[str, dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    markers = "osD^v<>p*h"
    for k, (_, summary) in enumerate(summaries):
        for method, row in summary["methods"].items():
            for ax, metric in zip(axes, ("iou", "chamfer")):
                ax.scatter(row["tflops"], row[metric], marker=markers[k % len(markers)], s=40)
                ax.annotate(
                    label(method),
                    (row["tflops"], row[metric]),
                    fontsize=7,
                    xytext=(4, 3),
                    textcoords="offset points",
                )
    for ax, metric in zip(axes, ("IoU ↑", "Chamfer ↓")):
        ax.set_xlabel("DiT TFLOPs per 8-frame sequence (sampling, CFG pair)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fig.suptitle(" · ".join(f"{name}: {s['objects']} sequences" for name, s in summaries), fontsize=9)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("summaries", type=Path, nargs="+")
    ap.add_argument("--plot", type=Path, default=Path("docs/images/quality_vs_compute.png"))
    args = ap.parse_args()
    loaded = [(p.parent.name, json.loads(p.read_text())) for p in args.summaries]
    for name, summary in loaded:
        print(f"\n{name} ({summary['objects']} sequences, {summary['benchmark']}):\n")
        print(markdown_table(summary))
    plot(loaded, args.plot)
    print(f"\nwrote {args.plot}")


if __name__ == "__main__":
    main()
