"""The training task behind ``train.py``: compose -> datamodule, module, callbacks, loggers, trainer -> fit -> export.

Resume: ``ckpt_path=last`` picks ``<checkpoint_dir>/last.ckpt`` (``checkpoint_dir`` =
``output_folder/dit/<config_name>``) and restores weights, optimizer, scheduler, EMA (buffers), step and the
data stream position (a function of the step, see :mod:`sculpt4d.data.seeded_stream`). The loggers continue
the same run: ``<checkpoint_dir>/run.json`` keeps the CSV/TensorBoard version and the W&B run id.

Multi-node (SLURM): one ``srun`` task per GPU; Lightning reads the SLURM environment, e.g.
``sbatch --nodes=2 --ntasks-per-node=8 --gpus-per-node=8 --wrap "srun python train.py experiment=paper_8
trainer.num_nodes=2 trainer.devices=8"``, or through Hydra's submitit launcher
(``python train.py -m hydra/launcher=submitit_slurm hydra.launcher.nodes=2 hydra.launcher.tasks_per_node=8
hydra.launcher.gpus_per_node=8 trainer.num_nodes=2 trainer.devices=8 experiment=paper_8``). Under SLURM/torchrun
Lightning does not re-launch the script, so Hydra sweeps stay clean (one sweep point per job).
"""

from __future__ import annotations

import collections
import json
import pathlib
import pickle
import secrets
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from sculpt4d.errors import CheckpointError, InputError
from sculpt4d.utils.instantiate import (
    extras,
    get_metric_value,
    instantiate_callbacks,
    instantiate_loggers,
    task_wrapper,
)
from sculpt4d.utils.logging import get_logger

log = get_logger(__name__)

__all__ = ["check_resume_checkpoint", "get_metric_value", "resolve_ckpt_path", "run_ids", "train"]


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``ckpt_path``: null (fresh), ``last`` (``<checkpoint_dir>/last.ckpt`` if present) or a path."""
    spec = cfg.get("ckpt_path")
    if spec in (None, "", "null"):
        return None
    if str(spec) == "last":
        last = Path(str(cfg.checkpoint_dir)) / "last.ckpt"
        if last.is_file():
            log.info(f"resuming from {last}")
            return str(last)
        log.warning(f"ckpt_path=last but {last} does not exist: starting a fresh run")
        return None
    p = Path(str(spec))
    if not p.exists():
        raise InputError(
            f"ckpt_path={spec}: no such checkpoint (use ckpt_path=last to resume {cfg.checkpoint_dir})"
        )
    return str(p)


# Globals a resume checkpoint may hold besides tensors and plain containers: harmless value types only.
RESUME_SAFE_GLOBALS: list[Any] = [collections.defaultdict, pathlib.PosixPath, pathlib.PurePosixPath]


def _global_name(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def check_resume_checkpoint(path: str | Path) -> None:
    """Refuse a resume checkpoint that needs a global outside :data:`RESUME_SAFE_GLOBALS`.

    Only the pickle's opcodes are read (nothing is executed); a refusal names the blocked global(s).
    """
    from sculpt4d.hub import refused_pickle_message

    allowed = {_global_name(g) for g in RESUME_SAFE_GLOBALS}
    try:
        with torch.serialization.safe_globals(RESUME_SAFE_GLOBALS):
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            refused_pickle_message(
                path, e, allowed="tensors, plain containers and " + ", ".join(sorted(allowed))
            )
        ) from None
    except Exception as e:  # noqa: BLE001 - truncated, corrupt or not a checkpoint
        msg = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(
            f"ckpt_path={path}: cannot read checkpoint ({type(e).__name__}: {msg}); the file is truncated, "
            "corrupt or not a Lightning checkpoint"
        ) from None


def fit_resumable(trainer: Any, model: Any, datamodule: Any, ckpt_path: str | None) -> None:
    """``trainer.fit``; a resume checkpoint loads with ``weights_only=True`` and :data:`RESUME_SAFE_GLOBALS` (a
    fresh run says ``weights_only`` too, so Lightning never falls back to unpickling)."""
    if ckpt_path is None:
        trainer.fit(model=model, datamodule=datamodule, weights_only=True)
        return
    with torch.serialization.safe_globals(RESUME_SAFE_GLOBALS):
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)


def _next_version(directory: Path) -> int:
    versions = [
        int(p.name.split("_")[1]) for p in directory.glob("version_*") if p.name.split("_")[1].isdigit()
    ]
    return max(versions, default=-1) + 1


def run_ids(cfg: DictConfig, resuming: bool) -> dict[str, Any]:
    """Logger identities of this run: reused from ``run.json`` when resuming, else new ones (and saved)."""
    ckpt_dir = Path(str(cfg.checkpoint_dir))
    info_file = ckpt_dir / "run.json"
    if resuming and info_file.is_file():
        return json.loads(info_file.read_text())
    info = {
        "version": _next_version(ckpt_dir / "csv") if (ckpt_dir / "csv").is_dir() else 0,
        "tb_version": _next_version(ckpt_dir / "tensorboard") if (ckpt_dir / "tensorboard").is_dir() else 0,
        "wandb_id": secrets.token_hex(4),
    }
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank == 0 and not cfg.trainer.get("fast_dev_run"):
        from sculpt4d.utils.io import write_json

        write_json(info_file, info)
    return info


def _apply_run_ids(cfg: DictConfig, ids: dict[str, Any]) -> None:
    """Pin the logger versions/ids so a resumed run continues the same logs."""
    if not cfg.get("logger"):
        return
    with open_dict(cfg):
        for node in cfg.logger.values():
            if not isinstance(node, DictConfig) or "_target_" not in node:
                continue
            target = str(node._target_)
            if target.endswith(("CSVLogger",)) and node.get("version") is None:
                node.version = ids["version"]
            elif target.endswith("TensorBoardLogger") and node.get("version") is None:
                node.version = ids["tb_version"]
            elif target.endswith("WandbLogger") and node.get("id") is None:
                node.id = ids["wandb_id"]
                node.resume = "allow"


def _check_strategy(cfg: DictConfig) -> None:
    """FSDP/DeepSpeed need CUDA GPUs: say so before Lightning's deeper error."""
    strategy = cfg.trainer.get("strategy")
    name = str(strategy.get("_target_", "")) if isinstance(strategy, DictConfig) else str(strategy or "")
    if any(s in name.lower() for s in ("fsdp", "deepspeed")):
        accel = str(cfg.trainer.get("accelerator", "auto"))
        if accel == "cpu" or (accel == "auto" and not torch.cuda.is_available()):
            raise InputError(
                f"trainer/strategy={name.rsplit('.', 1)[-1]} needs CUDA GPUs (Lightning refuses FSDP and "
                "DeepSpeed on CPU). On CPU use trainer/strategy=ddp (gloo) or the default."
            )


def _check_data_roots(cfg: DictConfig) -> None:
    """A missing ``data.root`` fails in one line before any model is built."""
    from omegaconf import ListConfig

    from sculpt4d.data.records import list_object_dirs

    roots = cfg.data.get("root")
    if (
        roots is None
        or cfg.data.get("train_list")
        or not str(cfg.data.get("_target_", "")).endswith("DataModule")
    ):
        return
    roots = [str(r) for r in roots] if isinstance(roots, ListConfig | list) else [str(roots)]
    list_object_dirs(roots)


def _resolve_precision(cfg: DictConfig) -> None:
    """``precision: auto`` = bf16-mixed on CUDA, 32-true elsewhere."""
    if str(cfg.trainer.get("precision", "")) == "auto":
        accel = str(cfg.trainer.get("accelerator", "auto"))
        gpu = torch.cuda.is_available() and accel in ("auto", "gpu", "cuda")
        with open_dict(cfg):
            cfg.trainer.precision = "bf16-mixed" if gpu else "32-true"


@task_wrapper
def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit the stage ``cfg.stage``; export its weights to ``cfg.export_dir``. Returns (metrics, objects)."""
    import lightning.pytorch as pl
    from hydra.utils import instantiate

    extras(cfg)
    if cfg.get("seed") is not None:
        pl.seed_everything(int(cfg.seed), workers=True)
    _check_strategy(cfg)
    _resolve_precision(cfg)
    ckpt_path = resolve_ckpt_path(cfg)
    if ckpt_path is not None:
        check_resume_checkpoint(ckpt_path)  # before anything is built: a refused file costs nothing
    _check_data_roots(cfg)
    _apply_run_ids(cfg, run_ids(cfg, resuming=ckpt_path is not None))
    if cfg.get("float32_matmul_precision"):
        torch.set_float32_matmul_precision(str(cfg.float32_matmul_precision))

    log.info(f"stage={cfg.stage} data=<{cfg.data._target_}> root={cfg.data.get('root')}")
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.lit, _recursive_=False)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    objects = {
        "cfg": cfg,
        "datamodule": datamodule,
        "model": model,
        "callbacks": callbacks,
        "loggers": loggers,
        "trainer": trainer,
    }
    if loggers:
        hp = {
            k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
            for k, v in cfg.items()
            if k != "hydra"
        }
        hp["params/trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        hp["params/total"] = sum(p.numel() for p in model.parameters())
        for lg in loggers:
            lg.log_hyperparams(hp)

    if cfg.get("train", True):
        fit_resumable(trainer, model, datamodule, ckpt_path)
        if (
            not trainer.fast_dev_run
            and trainer.checkpoint_callback is not None
            and trainer.checkpoint_callback.dirpath
        ):
            trainer.save_checkpoint(
                Path(trainer.checkpoint_callback.dirpath) / "last.ckpt"
            )  # e.g. after max_time
    metrics = {k: v for k, v in trainer.callback_metrics.items()}

    if (
        cfg.stage == "vae"
        and cfg.training.get("scale_factor_batches", 0)
        and getattr(model, "train_encoder", True)  # a frozen encoder keeps init_from's statistics
        and not trainer.fast_dev_run
    ):
        from sculpt4d.lit.init import estimate_latent_stats

        datamodule.setup("fit")
        with model.ema_scope():
            n = int(cfg.training.scale_factor_batches)
            stats = estimate_latent_stats(model.vae, datamodule.fixed_train_dataloader(n), n)
        model.vae.scale_factor = stats["scale_factor"]
        metrics["scale_factor"] = stats["scale_factor"]
        if cfg.training.get("latent_stats", "global") == "per_channel":
            model.vae.latent_mean, model.vae.latent_std = stats["latent_mean"], stats["latent_std"]
        log.info(f"VAE latent scale_factor = 1/std(posterior means) = {stats['scale_factor']:.6f}")

    export_dir = cfg.get("export_dir")
    if export_dir and trainer.is_global_zero and not trainer.fast_dev_run:
        model.export_checkpoint(str(export_dir))
    return metrics, objects
