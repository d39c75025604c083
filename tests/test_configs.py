"""Entry-point configs compose as users type them (predict / evaluate / SLURM launcher)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from sculpt4d.config import register_resolvers

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def _compose(name: str, *overrides: str, hydra: bool = False):
    register_resolvers()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(name, overrides=list(overrides), return_hydra_config=hydra)


def test_predict_defaults_match_the_original_inference_arguments():
    cfg = _compose("predict")
    assert (cfg.noise_share_alpha, cfg.mc_algo) == (None, "mc")  # null: the checkpoint's (1 unless it says)
    # null = the checkpoint's (its config.yaml `inference:` node); the paper model config keeps the originals
    assert cfg.num_steps is None and cfg.guidance_scale is None and cfg.sequence_length is None
    paper = _compose("predict", "model=sculpt4d").model
    assert (paper.num_steps, paper.guidance_scale, paper.sequence_length) == (50, 5.0, 8)
    assert "attention" not in cfg  # the checkpoint's own attention unless the user picks one


@pytest.mark.parametrize("variant", ["blockmask", "radial", "framepack", "rope", "full", "temporal"])
def test_predict_attention_override(variant):
    assert _compose("predict", f"attention={variant}").attention.variant == variant


def test_paper_model_config_and_hub_checkpoint_compose():
    cfg = _compose("predict", "model=sculpt4d", "ckpt=hf://TencentARC/Sculpt4D/blockmask_bf16", "dtype=bf16")
    assert cfg.model.dit.hidden_size == 2048 and cfg.model.vae.num_latents == 4096
    assert (
        cfg.ckpt.startswith("hf://") and cfg.octree_resolution is None and cfg.model.octree_resolution == 256
    )


def test_evaluate_composes_on_top_of_predict():
    cfg = _compose("evaluate", "max_objects=2", "variants=[full,temporal]")
    assert cfg.benchmark == "tiny/benchmark" and list(cfg.variants) == ["full", "temporal"]
    assert "first_frame_repeat" in cfg.methods and "per_frame" in cfg.methods


def test_slurm_launcher_composes_for_training():
    cfg = _compose("train", "hydra/launcher=slurm", "experiment=paper_8", "trainer.devices=8", hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == 8 and launcher.gpus_per_node == 8
