"""Train the tiny model end to end on CPU (``make train-tiny``): VAE -> 3D DiT -> 4D temporal adapter.

Each stage is ``python train.py experiment=tiny_<stage>`` in its own process: every hyper-parameter, the
wall-clock budget (``trainer.max_time``) included, lives in ``conf/experiment/tiny_{vae,dit3d,4d}.yaml``; this
script only passes paths, the seed and the trainer. Each writes ``<out>/dit/tiny_<stage>/`` (checkpoints, CSV
log, ``export/``); the next stage starts from the previous export (``init_from``). The VAE stage records the
per-channel statistics of its posterior means in its export's ``config.yaml``. The 3D stage trains the
conditioner jointly; the 4D stage freezes it. The optional ``decoder`` stage (``tiny_vae_decoder``) trains the
VAE decoder of the 4D export on, its encoder frozen, so the latent space stays the one the DiT learned. At the
end the last export (the decoder stage's when it ran, else the 4D stage's) is shipped to ``--ship`` (default
``data/checkpoints/tiny``: ``model.safetensors`` + ``config.yaml`` + ``metrics.json``) and the loss curves
are drawn to ``docs/images/tiny_loss_curves.png``.

    python scripts/train_tiny.py --data data/tiny                    # 57 min of training on 2 cores
    python scripts/train_tiny.py --data data/tiny --minutes 2 2 2    # a smoke run (overrides the budgets)
    python scripts/train_tiny.py --data data/tiny --only 4d          # redo a stage from the existing exports
    python scripts/train_tiny.py --trainer gpu --experiments tiny_gpu_vae tiny_gpu_dit3d tiny_gpu_4d  # on a GPU
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("vae", "dit3d", "4d", "decoder")
EXPERIMENTS = {"vae": "tiny_vae", "dit3d": "tiny_dit3d", "4d": "tiny_4d", "decoder": "tiny_vae_decoder"}
# make train-tiny's stages; the shipped model adds the decoder stage (make train-tiny-long)
RECIPE = ("vae", "dit3d", "4d")


def _hms(minutes: float) -> str:
    s = int(round(minutes * 60))
    return f"00:{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def read_csv_metrics(stage_dir: Path) -> list[dict[str, float]]:
    """Rows of the stage's newest CSV log (``csv/version_*/metrics.csv``) as floats."""
    files = sorted(
        (stage_dir / "csv").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1])
    )
    rows: list[dict[str, float]] = []
    if not files:
        return rows
    with open(files[-1], newline="") as f:
        for r in csv.DictReader(f):
            rows.append({k: float(v) for k, v in r.items() if v not in ("", None)})
    return rows


def summarise(rows: list[dict[str, float]]) -> dict[str, float]:
    """Final losses: the mean of the last 10 logged ``train/loss`` values and the last ``val/*`` values."""
    out: dict[str, float] = {}
    train = [r["train/loss"] for r in rows if "train/loss" in r]
    if train:
        out["train/loss_first"] = sum(train[:10]) / len(train[:10])
        out["train/loss_final"] = sum(train[-10:]) / len(train[-10:])
    steps = [r["step"] for r in rows if "step" in r]
    if steps:
        out["steps"] = max(steps) + 1
    for r in rows:
        for k, v in r.items():
            if k.startswith("val/"):
                out[k] = v  # the last value wins
    return out


def continued_rows(runs: list[Path]) -> tuple[list[dict[str, float]], list[float]]:
    """The CSV rows of a stage and the runs that continued it, steps made consecutive; and where each
    continuation starts."""
    rows: list[dict[str, float]] = []
    starts: list[float] = []
    offset = 0.0
    for i, d in enumerate(runs):
        part = read_csv_metrics(d)
        if i:
            starts.append(offset)
        rows += [{**r, "step": r["step"] + offset} for r in part if "step" in r]
        offset = max((r["step"] for r in rows), default=offset) + 1
    return rows, starts


def plot_curves(stage_runs: dict[str, list[Path]], path: Path) -> None:
    """One panel per stage; a stage continued by later runs (``tiny_dit3d`` → ``tiny_dit3d_long``) is drawn as
    one curve with a dashed line where each continuation starts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(stage_runs), figsize=(5 * len(stage_runs), 3.6), squeeze=False)
    for ax, (stage, runs) in zip(axes[0], stage_runs.items()):
        rows, starts = continued_rows(runs)
        for x0 in starts:
            ax.axvline(x0, color="0.5", ls="--", lw=0.8)
        pts = [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]
        if pts:
            x, y = zip(*pts)
            k = max(1, len(y) // 30)
            smooth = [sum(y[max(0, i - k) : i + 1]) / len(y[max(0, i - k) : i + 1]) for i in range(len(y))]
            ax.plot(x, y, color="0.8", lw=0.8, label="train/loss")
            ax.plot(x, smooth, color="C0", lw=1.5, label="train/loss (smoothed)")
        val = [
            (r["step"], r["val/loss"] if "val/loss" in r else r.get("val/bce"))
            for r in rows
            if "val/loss" in r or "val/bce" in r
        ]
        if val:
            vx, vy = zip(*val)
            ax.plot(
                vx,
                vy,
                "o-",
                color="C3",
                lw=1.2,
                label="val/bce (mean z)" if stage in ("vae", "decoder") else "val/loss",
            )
        ax.set_title(
            {
                "vae": "1. VAE (BCE + 1e-4 KL)",
                "dit3d": "2. 3D DiT (flow matching)",
                "4d": "3. 4D adapter (flow matching)",
                "decoder": "4. VAE decoder (BCE, encoder frozen)",
            }[stage]
        )
        ax.set_xlabel("optimizer step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    plt.close(fig)


def run_stage(
    stage: str,
    args: argparse.Namespace,
    minutes: float | None,
    steps: int | None,
    init_from: Path | None,
    log_path: Path,
) -> float:
    exp = args.experiments[stage]
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        f"experiment={exp}",
        f"data.root={args.data}/train",
        f"output_folder={args.out}",
        "callbacks=plain",
        "extras.print_config=false",
        f"hydra.run.dir={args.out}/hydra/{stage}",
        f"seed={args.seed}",
        f"trainer={args.trainer}",
    ]
    if minutes is not None:
        cmd.append(f"trainer.max_time={_hms(minutes)}")
    if steps is not None:
        cmd.append(f"training.steps={steps}")
    if init_from is not None:
        cmd.append(f"init_from={init_from}")
    if args.resume:
        cmd.append("ckpt_path=last")
    cmd += args.overrides.get(stage, [])
    print(f"[train_tiny] {stage}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.run(
            cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "WANDB_MODE": "offline"}
        )
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise SystemExit(
            f"[train_tiny] stage {stage} failed (exit {proc.returncode}); log {log_path}:\n{tail}"
        )
    print(f"[train_tiny] {stage} done in {elapsed / 60:.1f} min", flush=True)
    return elapsed


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT / "data/tiny", help="tiny dataset (with train/)")
    p.add_argument("--out", type=Path, default=ROOT / "outputs/train_tiny", help="stage runs + exports")
    p.add_argument("--ship", type=Path, default=ROOT / "data/checkpoints/tiny", help="final export folder")
    p.add_argument("--plot", type=Path, default=ROOT / "docs/images/tiny_loss_curves.png")
    p.add_argument(
        "--minutes",
        type=float,
        nargs="+",
        default=None,
        metavar="MIN",
        help="override the experiments' wall-clock budgets (trainer.max_time) of the stages in order "
        "(vae dit3d 4d [decoder]), e.g. for a smoke run",
    )
    p.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="override the experiments' schedule bounds (training.steps), stages in the same order",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--trainer", default="cpu", help="trainer config of every stage: cpu | gpu (conf/trainer/)"
    )
    p.add_argument(
        "--experiments",
        nargs="+",
        default=[EXPERIMENTS[s] for s in STAGES],
        metavar="NAME",
        help="the experiment (conf/experiment/) of each stage in order (vae dit3d 4d decoder; missing ones "
        "keep their defaults); the shipped model continues the 3D stage: --only dit3d 4d decoder "
        "--experiments tiny_vae tiny_dit3d_long tiny_4d_long tiny_vae_decoder --init <tiny_dit3d export>",
    )
    p.add_argument(
        "--only", choices=STAGES, nargs="+", default=list(RECIPE), help="run only these stages (in order)"
    )
    p.add_argument("--resume", action="store_true", help="continue each stage from its last.ckpt")
    p.add_argument(
        "--init",
        type=Path,
        default=None,
        help="export the first stage run starts from (default: the previous stage's export in --out); "
        "a 4D export fine-tunes its adapter, e.g. --only 4d --init data/checkpoints/tiny",
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="STAGE:KEY=VALUE",
        help="extra Hydra override for one stage, e.g. 4d:training.batch_size=1",
    )
    args = p.parse_args(argv)
    args.data, args.out = args.data.resolve(), args.out.resolve()
    if not (args.data / "train").is_dir():
        raise SystemExit(f"{args.data}/train not found: make the tiny dataset first (make data-tiny)")
    for name, values in (
        ("--minutes", args.minutes),
        ("--steps", args.steps),
        ("--experiments", args.experiments),
    ):
        if values is not None and len(values) > len(STAGES):
            p.error(f"{name} takes at most {len(STAGES)} values ({' '.join(STAGES)})")
    args.experiments = {**EXPERIMENTS, **dict(zip(STAGES, args.experiments))}
    args.overrides = {}
    for o in args.override:
        stage, _, kv = o.partition(":")
        args.overrides.setdefault(stage, []).append(kv)

    stage_dirs = {stage: args.out / "dit" / args.experiments[stage] for stage in STAGES}
    budgets: dict[str, float | None] = {s: None for s in STAGES} | dict(zip(STAGES, args.minutes or ()))
    steps: dict[str, int | None] = {s: None for s in STAGES} | dict(zip(STAGES, args.steps or ()))
    times: dict[str, float] = {}
    prev = {
        "vae": None,
        "dit3d": stage_dirs["vae"] / "export",
        "4d": stage_dirs["dit3d"] / "export",
        "decoder": stage_dirs["4d"] / "export",
    }
    if args.init is not None:
        prev[args.only[0]] = args.init.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    t_total = time.monotonic()
    for stage in STAGES:
        if stage not in args.only:
            continue
        if not args.resume and stage_dirs[stage].exists():
            shutil.rmtree(stage_dirs[stage])  # a fresh stage: no stale checkpoints / CSV versions
        init = prev[stage]
        if init is not None and not (init / "model.safetensors").is_file():
            raise SystemExit(f"[train_tiny] {stage} needs {init} (run the previous stage first)")
        times[stage] = run_stage(
            stage, args, budgets[stage], steps[stage], init, args.out / f"{args.experiments[stage]}.log"
        )

    last = max(STAGES.index(s) for s in args.only)
    shown = STAGES[: last + 1]  # this recipe's stages, not stale later ones
    summary: dict[str, object] = {
        "stages": {},
        "data": str(args.data),
        "experiments": [args.experiments[s] for s in shown],
        "init": None if args.init is None else str(args.init),
        "seed": args.seed,
    }
    shipped = args.ship / "metrics.json"
    before = json.loads(shipped.read_text()) if shipped.is_file() else {}
    for stage in shown:
        m = summarise(read_csv_metrics(stage_dirs[stage]))
        if not m and stage not in args.only and stage in before.get("stages", {}):
            m = dict(before["stages"][stage])  # an earlier stage trained elsewhere: its shipped record stays
        if stage in times:
            m["minutes"] = round(times[stage] / 60, 2)
        m["max_steps_bound"] = steps[stage]
        summary["stages"][stage] = m  # type: ignore[index]
    vae_cfg = stage_dirs["vae"] / "export" / "config.yaml"
    if vae_cfg.is_file():
        from omegaconf import OmegaConf

        vae_node = OmegaConf.load(vae_cfg).model.vae
        summary["scale_factor"] = float(vae_node.scale_factor)
        if vae_node.get("latent_std") is not None:
            summary["latent_std"] = [round(float(x), 4) for x in vae_node.latent_std]
    for key in ("scale_factor", "latent_std"):  # the latent space of a model whose VAE stage ran elsewhere
        if key not in summary and key in before:
            summary[key] = before[key]
    summary["total_minutes"] = round((time.monotonic() - t_total) / 60, 2)
    final = stage_dirs["decoder" if "decoder" in args.only else "4d"] / "export"
    if (final / "model.safetensors").is_file():
        sys.path.insert(0, str(ROOT / "src"))
        from sculpt4d.utils.io import atomic_dir

        with atomic_dir(args.ship) as tmp:
            os.chmod(tmp, 0o755)
            for f in ("model.safetensors", "config.yaml"):
                shutil.copy2(final / f, tmp / f)
                os.chmod(tmp / f, 0o644)
            (tmp / "metrics.json").write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
        print(f"[train_tiny] shipped {final} -> {args.ship}", flush=True)
    stage_runs = {s: [stage_dirs[s]] for s in shown if (stage_dirs[s] / "csv").is_dir()}  # runs with a log
    if args.init is not None and (args.init.parent / "csv").is_dir() and args.only[0] in stage_runs:
        stage_runs[args.only[0]].insert(0, args.init.parent)  # the run this stage continued
    if stage_runs:
        plot_curves(stage_runs, args.plot)
    print(json.dumps(summary, indent=2, default=_json_default), flush=True)


def _json_default(o: object) -> object:
    return None if isinstance(o, float) and math.isnan(o) else str(o)


if __name__ == "__main__":
    main()
