"""Quality vs sampling steps: ``python -m sculpt4d.evaluate`` at several ``num_steps``, one JSON + one plot.

    python scripts/steps_curve.py                                   # 10/15/25/50 steps, the whole benchmark
    python scripts/steps_curve.py --steps 10 25 --max-objects 5 --out outputs/steps_curve
    python scripts/steps_curve.py --steps 2 --max-objects 1 -- benchmark=tiny/ood   # extra evaluate overrides

Each step count is one evaluation run (its own ``summary.json`` under ``<out>/steps_<K>``) of the sampling
methods only (``--methods``, default 4d and per_frame: the reference rows do not depend on the steps).
Writes ``<out>/steps_curve.json`` (per method and step count: IoU, motion IoU, Chamfer, F-score, seconds per
sequence, DiT TFLOPs) and ``<out>/steps_curve.png`` (IoU, motion IoU and seconds against steps).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

KEYS = ("iou", "motion_iou", "chamfer", "fscore", "jitter", "seconds", "tflops")


def run_evaluate(
    steps: int, out: Path, max_objects: int | None, methods: list[str], extra: list[str]
) -> dict:
    """One ``python -m sculpt4d.evaluate`` run; returns its summary.json."""
    run_dir = out / f"steps_{steps}"
    cmd = [
        sys.executable,
        "-m",
        "sculpt4d.evaluate",
        f"num_steps={steps}",
        f"output_dir={run_dir}",
        f"methods=[{','.join(methods)}]",
        "gallery.objects=0",
        *([f"max_objects={max_objects}"] if max_objects else []),
        *extra,
    ]
    print("[steps_curve] " + " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)
    return json.loads((run_dir / "summary.json").read_text())


def curve(summaries: dict[int, dict]) -> dict[str, Any]:
    """``{method: {"steps": [...], key: [...]}}`` from the per-step summaries."""
    out: dict[str, Any] = {}
    for steps, summary in sorted(summaries.items()):
        for method, row in summary["methods"].items():
            entry = out.setdefault(method, {"steps": [], **{k: [] for k in KEYS}})
            entry["steps"].append(steps)
            for k in KEYS:
                entry[k].append(row.get(k))
    return out


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sculpt4d.evaluate import method_label

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for method, entry in data.items():
        for ax, key in zip(axes, ("iou", "motion_iou", "seconds")):
            ax.plot(entry["steps"], entry[key], marker="o", label=method_label(method))
    for ax, title in zip(axes, ("IoU ↑", "motion IoU ↑", "seconds / sequence")):
        ax.set_xlabel("sampling steps")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"[steps_curve] wrote {path}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 15, 25, 50])
    ap.add_argument(
        "--max-objects", type=int, default=None, help="evenly spaced benchmark objects (default: all)"
    )
    ap.add_argument("--methods", nargs="+", default=["4d", "per_frame"])
    ap.add_argument("--out", type=Path, default=Path("outputs/steps_curve"))
    ap.add_argument("overrides", nargs="*", help="extra evaluate overrides, after --")
    args = ap.parse_args()
    summaries = {
        s: run_evaluate(s, args.out, args.max_objects, args.methods, args.overrides) for s in args.steps
    }
    data = curve(summaries)
    payload = {
        "steps": sorted(summaries),
        "max_objects": args.max_objects,
        "overrides": args.overrides,
        "benchmark": next(iter(summaries.values()))["benchmark"],
        "wall_seconds": {s: summaries[s]["wall_seconds"] for s in sorted(summaries)},
        "methods": data,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "steps_curve.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"[steps_curve] wrote {args.out / 'steps_curve.json'}", flush=True)
    plot(data, args.out / "steps_curve.png")
    for method, entry in data.items():
        cells = "  ".join(
            f"{s}: IoU {i:.3f} motion {m:.3f} ({t:.1f} s)"
            for s, i, m, t in zip(entry["steps"], entry["iou"], entry["motion_iou"], entry["seconds"])
        )
        print(f"{method:<12} {cells}", flush=True)


if __name__ == "__main__":
    main()
