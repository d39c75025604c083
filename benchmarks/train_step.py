"""Where a training step of the tiny recipe spends its time: the real data loader vs. batches drawn beforehand.

    python benchmarks/train_step.py --data data/tiny/train                      # the three tiny stages
    python benchmarks/train_step.py --data data/tiny/train --stages dit3d --steps 40 --json step.json
    python benchmarks/train_step.py --data data/tiny/train --override data.num_workers=0   # loader in-process
    python benchmarks/train_step.py --data data/tiny/train --stages dit3d dit3d+cache      # cached latents vs live
    python benchmarks/train_step.py --stages dit3d+cache --cache-dir outputs/cache/bench \
        --override trainer.precision=bf16-mixed                                            # a cache kept between runs

For each stage (``experiment=tiny_<stage>``, every hyper-parameter as the recipe trains it; weights randomly
initialised: speed does not depend on them) three measurements, side by side in one process:
- ``loader``: the stage's train data loader alone (its worker process, no training beside it), seconds per
  batch, on caches as cold as at the start of a run;
- ``fit``: ``Trainer.fit`` for ``--steps`` optimizer steps on that loader (caches cold again: a fresh
  datamodule), seconds per step after ``--warmup`` steps — what ``make train-tiny`` pays;
- ``fit_preloaded``: the same fit on batches drawn beforehand (a plain list): the step's compute alone.
``loader_share`` = 1 − fit_preloaded / fit: the part of a training step lost to data loading (on a 2-core machine
the loader's worker competes with the training threads for the same cores). Validation, checkpoints and
loggers are off in every row.

A stage named ``<stage>+cache`` trains on the latent cache (``lit.cache_latents=true``: the frozen VAE's posterior
means encoded once, :mod:`sculpt4d.data.latent_cache`); its row adds ``cache_build_s``, the one-off encoding of
every object of the data (a later ``+cache`` stage loads that cache: its time is the loading), and, when the
plain stage ran too, ``speedup`` = its fit time / this one's.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from _common import ROOT, add_json_arg, print_table, write_json

STAGES = ("vae", "dit3d", "4d", "dit3d+cache", "4d+cache")
CACHE_SUFFIX = "+cache"


def compose(stage: str, data: Path, steps: int, out: Path, extra: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from sculpt4d.config import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose(
            "train",
            overrides=[
                f"experiment=tiny_{stage}",
                f"paths.root_dir={ROOT}",
                f"data.root={data}",
                f"output_folder={out}",
                "init_from=null",
                f"training.steps={steps}",
                "callbacks=none",
                "logger=[]",
                "trainer.max_time=null",
                "trainer.limit_val_batches=0",
                "+trainer.enable_checkpointing=false",
                "+trainer.enable_progress_bar=false",
                *extra,
            ],
            return_hydra_config=True,
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(out / "run")
    HydraConfig.instance().set_config(cfg)
    GlobalHydra.instance().clear()
    return cfg


class StepClock(pl.Callback):
    """The wall time at the end of every optimizer step (end to end, loader wait included)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self.stamps.append(time.perf_counter())

    def seconds_per_step(self, warmup: int) -> float:
        s = self.stamps[warmup:]
        return (s[-1] - s[0]) / max(len(s) - 1, 1)


class Preloaded:
    """Batches drawn beforehand, served as one iterable (a plain list would be read as several loaders)."""

    def __init__(self, batches: list[Any]) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def fit(cfg, loader: Any, warmup: int, latent_cache: Any = None) -> float:
    """Seconds per step of ``Trainer.fit`` over ``loader`` (a DataLoader or :class:`Preloaded` batches)."""
    from hydra.utils import instantiate

    torch.manual_seed(0)
    model = instantiate(cfg.lit, _recursive_=False)
    model.latent_cache = latent_cache  # a fit on plain loaders has no datamodule to build it from
    clock = StepClock()
    trainer = instantiate(cfg.trainer, callbacks=[clock], logger=False)
    trainer.fit(model, train_dataloaders=loader)
    return clock.seconds_per_step(warmup)


def build_cache(cfg, datamodule: Any, cache_dir: Path) -> tuple[Any, float]:
    """The latent cache of every object of ``datamodule`` for the stage's (randomly initialised, the same in
    every stage) VAE, and the seconds it took: encoding, or loading what an earlier stage encoded."""
    from hydra.utils import instantiate

    from sculpt4d.data.latent_cache import load_or_build_latent_cache

    torch.manual_seed(0)
    vae = instantiate(cfg.lit, _recursive_=False).vae
    records = list(datamodule.train_set.records) + list(datamodule.val_set.records)
    t0 = time.perf_counter()
    cache = load_or_build_latent_cache(
        vae, datamodule.train_set, records, int(cfg.lit.latent_cache_draws), cache_dir
    )
    return cache, time.perf_counter() - t0


def measure(
    stage: str, data: Path, steps: int, warmup: int, out: Path, extra: list[str], cache_dir: Path
) -> dict[str, Any]:
    from hydra.utils import instantiate

    cached = stage.endswith(CACHE_SUFFIX)
    base = stage.removesuffix(CACHE_SUFFIX)
    cache_overrides = ["lit.cache_latents=true", "lit.sample_posterior=false"] if cached else []
    cfg = compose(base, data, steps, out, [*extra, *cache_overrides])
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    latent_cache, build_s = build_cache(cfg, datamodule, cache_dir) if cached else (None, None)
    t0 = time.perf_counter()
    batches = []
    for batch in datamodule.train_dataloader():
        batches.append(batch)
        if len(batches) == steps:
            break
    loader_s = (time.perf_counter() - t0) / len(batches)
    del datamodule

    fresh = instantiate(cfg.data)  # cold caches again, as at the start of a run
    fresh.setup("fit")
    fit_s = fit(cfg, fresh.train_dataloader(), warmup, latent_cache)
    pre_s = fit(cfg, Preloaded(batches), warmup, latent_cache)
    row = {
        "stage": stage,
        "batch": int(cfg.training.batch_size),
        "steps": steps,
        "loader_s": loader_s,
        "fit_s": fit_s,
        "fit_preloaded_s": pre_s,
        "loader_share": 1.0 - pre_s / fit_s,
        "steps_per_s": 1.0 / fit_s,
    }
    if cached:
        row["cache_build_s"] = build_s
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "tiny" / "train")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per fit (and batches drawn)")
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the per-step time")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every stage")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where +cache stages keep the latent cache (default: a temporary folder); a later run with the "
        "same data and overrides loads it instead of encoding again",
    )
    add_json_arg(parser)
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"{args.data}: no such data folder (make data-tiny writes data/tiny/train)")
    if args.steps <= args.warmup + 1:
        raise SystemExit(f"--steps ({args.steps}) must exceed --warmup ({args.warmup}) + 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for stage in args.stages:
            out = Path(tmp) / stage
            cache_dir = args.cache_dir or Path(tmp) / "latent_cache"
            rows.append(
                measure(stage, args.data.resolve(), args.steps, args.warmup, out, args.override, cache_dir)
            )
    fit_by_stage = {row["stage"]: row["fit_s"] for row in rows}
    for row in rows:
        plain = fit_by_stage.get(row["stage"].removesuffix(CACHE_SUFFIX))
        if row["stage"].endswith(CACHE_SUFFIX) and plain is not None:
            row["speedup"] = plain / row["fit_s"]
    title = f"train step ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print_table(rows, title)
    write_json(args.json, {"threads": torch.get_num_threads(), "machine": platform.machine(), "rows": rows})


if __name__ == "__main__":
    main()
