"""The paper's ablation at tiny scale (``make ablation``): every variant trained on its own, then evaluated.

For each variant (``conf/experiment/ablation/<variant>.yaml``) and seed: ``python train.py
experiment=ablation/<variant> seed=<seed>`` from the same 3D export (``--init``, the tiny recipe's
``tiny_dit3d`` stage) with the same wall-clock budget, into ``<out>/dit/ablation_<variant>_s<seed>/`` (its own
``export/``). A run whose export exists is skipped, so a killed study continues with the runs not yet done; a
run killed mid-training restarts from its beginning (every run gets the whole budget). Then every export is
evaluated (``python -m sculpt4d.evaluate ckpts=[...]``, itself resumable) and ``<results>`` receives
``table.md``, ``table.json``, ``plot.png``, ``hashes.json`` (sha256 of each export's weights),
``loss_curves.png`` and ``loss/<run>.csv`` (each run's own training log) and ``study.json`` (the settings).

    python scripts/ablation.py --dry-run                             # the commands, nothing run
    python scripts/ablation.py                                       # 10 variants x seeds 0 1, 15 min each
    python scripts/ablation.py --minutes 5 --variants blockmask full temporal --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "src")]
from train_tiny import _hms, read_csv_metrics  # noqa: E402

from sculpt4d.study import sha256  # noqa: E402

CONF = ROOT / "conf" / "experiment" / "ablation"
ORDER = ("blockmask", "full", "temporal", "radial", "framepack", "rope", "fixed_stride", "no_anchor",
         "no_shared_noise", "no_consistent_sampling")  # fmt: skip
#: the paper's own ablation (its test set): CD, IoU, F-score, PFLOPs; printed beside ours, never mixed in
PAPER = {
    "no_consistent_sampling": (0.1128, 0.3375, 0.3380, 186.3),
    "no_shared_noise": (0.1051, 0.3396, 0.3342, 186.3),
    "no_sharp_edges": (0.1005, 0.3408, 0.3369, 186.3),
    "no_anchor": (0.0986, 0.3442, 0.3375, 169.8),
    "temporal": (0.2071, 0.1972, 0.1833, 60.2),
    "fixed_stride": (0.1124, 0.3298, 0.3306, 167.1),
    "full": (0.0958, 0.3466, 0.3402, 425.7),
    "blockmask": (0.0972, 0.3451, 0.3383, 186.3),
}


def variants() -> list[str]:
    """The ablation experiments on disk, in the table's order."""
    found = {p.stem for p in CONF.glob("*.yaml")}
    return [v for v in ORDER if v in found] + sorted(found - set(ORDER))


@dataclass(frozen=True)
class Run:
    variant: str
    seed: int
    out: Path

    @property
    def name(self) -> str:
        return f"ablation_{self.variant}_s{self.seed}"

    @property
    def dir(self) -> Path:  # the experiment's checkpoint_dir: ${output_folder}/dit/${config_name}
        return self.out / "dit" / self.name

    @property
    def export(self) -> Path:
        return self.dir / "export"

    @property
    def done(self) -> bool:
        return (self.export / "model.safetensors").is_file() and (self.export / "config.yaml").is_file()


def plan(out: Path, names: list[str], seeds: list[int]) -> list[Run]:
    """Every (variant, seed) run, variant-major; ``Run.done`` tells which already exported."""
    return [Run(v, s, out) for v in names for s in seeds]


def train_command(run: Run, args: argparse.Namespace) -> list[str]:
    cmd = [
        sys.executable, str(ROOT / "train.py"), f"experiment=ablation/{run.variant}", f"seed={run.seed}",
        f"data.root={args.data}/train", f"output_folder={args.out}", f"init_from={args.init}",
        "callbacks=plain", "extras.print_config=false", f"hydra.run.dir={args.out}/hydra/{run.name}",
        f"trainer={args.trainer}", f"trainer.max_time={_hms(args.minutes)}",
    ]  # fmt: skip
    if args.steps is not None:
        cmd.append(f"training.steps={args.steps}")
    return cmd + list(args.override)


def evaluate_command(runs: list[Run], args: argparse.Namespace) -> list[str]:
    ckpts = ",".join(f'"{r.name}={r.export}"' for r in runs)  # quoted: Hydra list items hold no bare '='
    return [
        sys.executable, "-m", "sculpt4d.evaluate", f"ckpts=[{ckpts}]", f"benchmark={args.benchmark}",
        f"output_dir={args.results}/eval", f"max_objects={args.eval_objects}",
        f"hydra.run.dir={args.out}/hydra/evaluate",
    ] + list(args.evaluate_override)  # fmt: skip


def train(run: Run, args: argparse.Namespace) -> None:
    if run.dir.exists():
        shutil.rmtree(run.dir)  # a run killed mid-training starts again: every run gets the whole budget
    log = args.out / "logs" / f"{run.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"[ablation] train {run.name} ({args.minutes:g} min) -> {run.export}", flush=True)
    with open(log, "w") as fh:
        proc = subprocess.run(train_command(run, args), cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                              env={**os.environ, "WANDB_MODE": "offline"})  # fmt: skip
    if proc.returncode != 0 or not run.done:
        raise SystemExit(f"[ablation] {run.name} failed (exit {proc.returncode}); log {log}:\n"
                         + log.read_text()[-3000:])  # fmt: skip


def plot_losses(runs: list[Run], path: Path) -> None:
    """One panel per variant: each seed's ``train/loss`` (smoothed) and ``val/loss`` against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r.variant for r in runs))
    cols = min(5, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3 * rows), squeeze=False, sharey=True)
    for ax, variant in zip(axes.flat, names):
        for k, run in enumerate(r for r in runs if r.variant == variant):
            log = read_csv_metrics(run.dir)
            pts = [(m["step"], m["train/loss"]) for m in log if "train/loss" in m]
            if pts:
                x, y = zip(*pts)
                w = max(1, len(y) // 30)
                smooth = [
                    sum(y[max(0, i - w) : i + 1]) / len(y[max(0, i - w) : i + 1]) for i in range(len(y))
                ]
                ax.plot(x, smooth, color=f"C{k}", lw=1.3, label=f"seed {run.seed} train")
            val = [(m["step"], m["val/loss"]) for m in log if "val/loss" in m]
            if val:
                ax.plot(*zip(*val), "o--", color=f"C{k}", ms=3, lw=0.8, label=f"seed {run.seed} val")
        ax.set_title(variant, fontsize=9)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.supxlabel("optimizer step")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def collect(runs: list[Run], args: argparse.Namespace) -> None:
    """Copy the evaluation's table/plot up, write hashes.json, the loss curves and the run logs."""
    ev = args.results / "eval"
    for f in ("table.md", "table.json", "plot.png"):
        shutil.copy2(ev / f, args.results / f)
    hashes = {
        r.name: {"sha256": sha256(r.export / "model.safetensors"), "export": str(r.export)} for r in runs
    }
    (args.results / "hashes.json").write_text(json.dumps(hashes, indent=2) + "\n")
    (args.results / "loss").mkdir(exist_ok=True)
    for r in runs:
        logs = sorted((r.dir / "csv").glob("version_*/metrics.csv"))
        if logs:
            shutil.copy2(logs[-1], args.results / "loss" / f"{r.name}.csv")
    plot_losses(runs, args.results / "loss_curves.png")
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    (args.results / "study.json").write_text(
        json.dumps({"settings": settings, "paper": PAPER}, indent=2) + "\n"
    )


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT / "data/tiny", help="tiny dataset (with train/)")
    p.add_argument("--init", type=Path, default=ROOT / "outputs/train_tiny/dit/tiny_dit3d/export",
                   help="the 3D stage export every run starts from (scripts/train_tiny.py --only vae dit3d)")  # fmt: skip
    p.add_argument("--out", type=Path, default=ROOT / "outputs/ablation", help="training runs")
    p.add_argument("--results", type=Path, default=ROOT / "docs/results/ablation", help="table, plot, hashes")
    p.add_argument("--variants", nargs="+", default=None, help="default: all of conf/experiment/ablation")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--minutes", type=float, default=15.0, help="wall-clock budget of every run (tiny_4d: 15)")
    p.add_argument("--steps", type=int, default=None, help="schedule bound instead of tiny_4d's (optional)")
    p.add_argument("--trainer", default="cpu", help="cpu | gpu (conf/trainer/)")
    p.add_argument("--benchmark", default="tiny/benchmark", help="evaluate's benchmark=")
    p.add_argument("--eval-objects", type=int, default=10, help="sequences evaluated per checkpoint")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Hydra override of every training run")  # fmt: skip
    p.add_argument("--evaluate-override", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the commands, run nothing")
    args = p.parse_args(argv)
    known = variants()
    args.variants = args.variants or known
    unknown = [v for v in args.variants if v not in known]
    if unknown:
        _fail(f"unknown variant(s) {unknown}; choose from {known} (conf/experiment/ablation/)")
    if len(set(args.seeds)) < len(args.seeds) or args.minutes <= 0 or args.eval_objects < 1:
        _fail("--seeds must be distinct, --minutes > 0 and --eval-objects >= 1")
    args.data, args.init, args.out, args.results = (x.resolve() for x in (args.data, args.init, args.out,
                                                                          args.results))  # fmt: skip
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    runs = plan(args.out, args.variants, args.seeds)
    todo = [r for r in runs if not r.done]
    print(f"[ablation] {len(runs)} runs, {len(runs) - len(todo)} already exported, {len(todo)} to train "
          f"({len(todo) * args.minutes:g} min of training)", flush=True)  # fmt: skip
    if args.dry_run:
        for r in runs:
            print(f"# {r.name}: exported, skipped" if r.done else shlex.join(train_command(r, args)))
        print(shlex.join(evaluate_command(runs, args)))
        return 0
    if todo and not (args.data / "train").is_dir():
        _fail(f"{args.data}/train not found: make the tiny dataset first (make data-tiny)")
    if todo and not (args.init / "model.safetensors").is_file():
        _fail(f"--init {args.init} is not an export: train the 3D stage first "
              "(python scripts/train_tiny.py --only vae dit3d)")  # fmt: skip
    for r in todo:
        train(r, args)
    args.results.mkdir(parents=True, exist_ok=True)
    print(f"[ablation] evaluate {len(runs)} exports", flush=True)
    proc = subprocess.run(evaluate_command(runs, args), cwd=ROOT)
    if proc.returncode != 0:
        return proc.returncode
    collect(runs, args)
    print(f"[ablation] results in {args.results}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
