"""train.py / the train task: config composition, exact resume, CPU DDP, strategies, the multirun entry point."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from sculpt4d.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def _compose(overrides, tmp_path, data_root=None):
    from conftest import compose_train

    return compose_train(overrides, tmp_path, data_root)


# ------------------------------------------------------------------------------------------ composition
def test_configs_compose_as_typed(tmp_path: Path) -> None:
    cfg = _compose(["attention=blockmask", "trainer.devices=8"], tmp_path)
    assert cfg.trainer.devices == 8 and cfg.stage == "sculpt4d" and cfg.attention.variant == "blockmask"
    assert cfg.lit._target_ == "sculpt4d.lit.Sculpt4DModule"
    # the original release's keys keep their meaning
    assert cfg.sequence_length == 8 and cfg.pc_size == 40960 and cfg.data.pc_size == 40960
    assert cfg.training.steps == 20000 and cfg.trainer.max_steps == 20000 and cfg.training.base_lr == 5e-5
    assert cfg.lit.optimizer.lr == 5e-5 and cfg.lit.scheduler.total_steps == 20000
    assert (
        cfg.checkpoint_dir.endswith("/dit/sculpt4d_blockmask")
        and cfg.callbacks.model_checkpoint.dirpath == cfg.checkpoint_dir
    )

    p8 = _compose(["experiment=paper_8"], tmp_path)
    assert (
        p8.config_name == "4d_config_8" and p8.trainer.devices == 8 and p8.trainer.precision == "bf16-mixed"
    )
    assert p8.trainer.strategy._target_.endswith("DeepSpeedStrategy") and p8.trainer.strategy.stage == 2
    assert p8.checkpoint_dir.endswith("dit/4d_config_8") and p8.model.vae.pc_size == 40960
    p16 = _compose(["experiment=paper_16"], tmp_path)
    assert p16.sequence_length == 16 and p16.data.sequence_length == 16 and p16.model.sequence_length == 16
    for exp, variant in [("radial", "radial"), ("framepack", "framepack"), ("rope", "rope")]:
        c = _compose([f"experiment={exp}"], tmp_path)
        assert c.attention.variant == variant and c.lit.attention.variant == variant and exp in c.config_name
    # stages select module + data needs; the user's attention choice wins over the experiment's
    vae = _compose(["experiment=tiny_vae", "attention=rope"], tmp_path)
    assert (
        vae.stage == "vae"
        and vae.data.load_volume
        and not vae.data.load_images
        and vae.data.sequence_length == 1
    )
    assert vae.model.vae.num_latents == 128 and vae.pc_size == 2048 and vae.model.vae.pc_size == 2048
    d3 = _compose(["experiment=tiny_dit3d"], tmp_path)
    assert (
        d3.lit.train_conditioner
        and d3.init_from.endswith("dit/tiny_vae/export")
        and d3.data.sequence_length == 1
    )
    t4 = _compose(["experiment=tiny_4d", "attention=radial"], tmp_path)
    assert t4.attention.variant == "radial" and t4.attention.block_size == 32 and t4.data.sequence_length == 8


EXPERIMENTS = sorted(
    p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "experiment").glob("*.yaml")
)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_on_disk_composes(tmp_path: Path, experiment: str) -> None:
    """Each ``conf/experiment/*.yaml`` (globbed, so a new file is covered) composes and resolves."""
    from omegaconf import OmegaConf

    cfg = _compose([f"experiment={experiment}"], tmp_path)
    resolved = OmegaConf.to_container(
        OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True
    )
    assert resolved["lit"]["_target_"].startswith("sculpt4d.lit.") and resolved["stage"]


def test_strategy_configs_instantiate(tmp_path: Path) -> None:
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

    ddp = _compose(["trainer/strategy=ddp"], tmp_path)
    assert isinstance(instantiate(ddp.trainer.strategy), DDPStrategy)
    fsdp = _compose(["trainer/strategy=fsdp"], tmp_path)
    strat = instantiate(fsdp.trainer.strategy)
    assert isinstance(strat, FSDPStrategy)
    from sculpt4d.models.dit.layers import DiTBlock

    policy = strat.kwargs["auto_wrap_policy"]  # ModuleWrapPolicy over the DiT block class
    assert DiTBlock in getattr(policy, "_module_classes", ())
    ds = _compose(["trainer/strategy=deepspeed"], tmp_path)
    assert ds.trainer.strategy.stage == 2


def test_deepspeed_strategy_instantiates(tmp_path: Path) -> None:
    pytest.importorskip("deepspeed")
    from lightning.pytorch.strategies import DeepSpeedStrategy

    ds = _compose(["trainer/strategy=deepspeed"], tmp_path)
    assert isinstance(instantiate(ds.trainer.strategy), DeepSpeedStrategy)


@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed"])
def test_sharded_strategies_refuse_cpu_clearly(tmp_path: Path, strategy: str) -> None:
    from sculpt4d.lit.task import train

    cfg = _compose([f"trainer/strategy={strategy}", "trainer.accelerator=cpu"], tmp_path)
    with pytest.raises(InputError, match="needs CUDA GPUs"):
        train(cfg)


def test_wandb_logger_offline_and_resume_ids(tmp_path: Path) -> None:
    from sculpt4d.lit.task import _apply_run_ids

    cfg = _compose(["logger=many_loggers"], tmp_path)
    assert cfg.logger.wandb.mode == os.environ.get("WANDB_MODE", "offline") == "offline"
    _apply_run_ids(cfg, {"version": 3, "tb_version": 1, "wandb_id": "abc123"})
    assert cfg.logger.csv.version == 3 and cfg.logger.tensorboard.version == 1
    assert cfg.logger.wandb.id == "abc123" and cfg.logger.wandb.resume == "allow"


def test_optuna_search_composes(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cfg = _compose(["hparams_search=optuna", "experiment=tiny_4d"], tmp_path)
    assert cfg.optimized_metric == "val/loss" and "training.base_lr" in cfg.hydra.sweeper.params


# ------------------------------------------------------------------------------------------ resume
def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_resume_last_is_exact(train_cfg, tmp_path: Path) -> None:
    """4 steps straight == 2 steps + ckpt_path=last for 2 more: weights, EMA, optimizer, step, data stream."""
    from sculpt4d.lit.task import train

    common = [
        "callbacks=plain",
        "callbacks.progress_log.every_n_steps=1",
        "training.steps=4",
        "training.ckpt_every=2",
        "training.val_every=1000",
        "trainer.limit_val_batches=0",
        "trainer.log_every_n_steps=1",
    ]
    ref_cfg = train_cfg("4d", *common, "output_folder=" + str(tmp_path / "ref"))
    _, ref = train(ref_cfg)
    cfg1 = train_cfg("4d", *common, "trainer.max_steps=2", "output_folder=" + str(tmp_path / "res"))
    _, first = train(cfg1)
    ckpt_dir = Path(cfg1.checkpoint_dir)
    assert (ckpt_dir / "last.ckpt").is_file() and (ckpt_dir / "ckpt-00000002.ckpt").is_file()
    cfg2 = train_cfg("4d", *common, "ckpt_path=last", "output_folder=" + str(tmp_path / "res"))
    _, res = train(cfg2)

    assert ref["trainer"].global_step == res["trainer"].global_step == 4
    # the data stream restarted where step 2 left it
    sampler = res["trainer"].train_dataloader.sampler
    assert sampler.start == 2 * cfg2.data.batch_size
    ref_sampler = ref["datamodule"].train_sampler()
    assert sampler.key(sampler.start) == ref_sampler.key(sampler.start)
    m_ref, m_res = ref["model"], res["model"]
    sd_ref, sd_res = m_ref.state_dict(), m_res.state_dict()
    assert list(sd_ref) == list(sd_res)  # no missing or extra keys (zip below would hide them)
    for n, a in sd_ref.items():  # incl. EMA buffers
        torch.testing.assert_close(a, sd_res[n], rtol=0, atol=0, msg=n)
    assert int(m_res.ema.num_updates) == 4
    o_ref = ref["trainer"].optimizers[0].state_dict()["state"]
    o_res = res["trainer"].optimizers[0].state_dict()["state"]
    for k in o_ref:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(o_ref[k][key], o_res[k][key], rtol=0, atol=0)
    assert res["trainer"].lr_scheduler_configs[0].scheduler.last_epoch == 4
    # the CSV log continues the same version with both halves
    rows = _read_csv(ckpt_dir / "csv" / "version_0" / "metrics.csv")
    steps = {int(r["step"]) for r in rows if r.get("train/loss")}
    assert {0, 1, 2, 3} <= steps
    # checkpoints keep trainable + EMA weights only (the frozen parts come from init_from)
    ck = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=False)
    frozen = ("vae.", "conditioner.") + (() if cfg2.lit.train_backbone else ("model.backbone.",))
    assert not any(k.startswith(frozen) for k in ck["state_dict"])
    assert any(k.startswith("ema.") for k in ck["state_dict"])


def test_ddp_spawn_two_cpu_processes(train_cfg, tmp_path: Path) -> None:
    from sculpt4d.lit.task import train

    cfg = train_cfg(
        "vae",
        "trainer.strategy=ddp_spawn",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "training.steps=2",
        "training.ckpt_every=2",
        "training.val_every=1000",
        "trainer.limit_val_batches=0",
        "callbacks=plain",
        "export_dir=" + str(tmp_path / "export"),
    )
    train(cfg)
    ck = torch.load(Path(cfg.checkpoint_dir) / "ckpt-00000002.ckpt", map_location="cpu", weights_only=False)
    assert ck["global_step"] == 2
    assert (tmp_path / "export" / "model.safetensors").is_file()


# ------------------------------------------------------------------------------------------ entry point
def _sweep(tiny_dataset: Path, tmp_path: Path, extra: list[str]) -> None:
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        "attention=blockmask,radial,framepack,rope",
        "experiment=tiny",
        "debug=fdr",
        f"data.root={tiny_dataset}",
        f"hydra.sweep.dir={tmp_path}/sweep",
        f"output_folder={tmp_path}/out",
        *extra,
    ]
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    runs = sorted((tmp_path / "sweep").glob("[0-9]*"))
    assert len(runs) == 4
    for run, variant in zip(runs, ["blockmask", "radial", "framepack", "rope"]):
        overrides = (run / ".hydra" / "overrides.yaml").read_text()
        assert f"attention={variant}" in overrides
    assert (res.stdout + res.stderr).count("`Trainer.fit` stopped") >= 4


def test_multirun_attention_sweep_fast_dev_run(tiny_dataset: Path, tmp_path: Path) -> None:
    """The documented sweep on the fixture data (fast_dev_run: one train + one val batch each), micro model."""
    from conftest import MICRO_MODEL

    _sweep(tiny_dataset, tmp_path, MICRO_MODEL)


@pytest.mark.slow
def test_multirun_attention_sweep_as_typed(tiny_dataset: Path, tmp_path: Path) -> None:
    """Exactly the documented command (model=tiny) + data.root; ~1-3 min on 2 cores."""
    _sweep(tiny_dataset, tmp_path, [])
