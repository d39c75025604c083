"""Inference defaults travel with the checkpoint: the CLI, the notebook's calls and the Python API agree."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import ATTENTION, MICRO
from omegaconf import OmegaConf
from test_pipeline import DEMO, _cfg, _run

from sculpt4d.inference import InferenceDefaults, add_inference_node, inference_node
from sculpt4d.pipeline import Sculpt4DPipeline

# Deliberately unlike predict.yaml / conf/model/tiny.yaml so a value taken from the wrong place shows.
INFERENCE = {
    "num_steps": 2,
    "guidance_scale": 3.0,
    "octree_resolution": 16,
    "sequence_length": 2,
    "frame_stride": 3,
}


def test_precedence_inference_node_then_model_node_then_fallback_then_defaults():
    cfg = {
        "model": {"octree_resolution": 96, "frame_stride": 2, "num_steps": 7},
        "inference": {"num_steps": 9},
    }
    got = InferenceDefaults.from_config(cfg, fallback_model={"frame_stride": 4, "sequence_length": 5})
    assert (got.num_steps, got.octree_resolution, got.frame_stride, got.sequence_length) == (9, 96, 2, 5)
    assert got.guidance_scale == 5.0 and got.preprocess == {"size": 512, "border_ratio": 0.15}
    assert got.override(num_steps=None, frame_stride=1).frame_stride == 1
    node = inference_node(MICRO, ATTENTION)
    assert node["attention"] == ATTENTION and node["octree_resolution"] == MICRO.octree_resolution


@pytest.fixture(scope="module")
def exported_with_inference(tmp_path_factory, micro_checkpoint) -> Path:
    out = tmp_path_factory.mktemp("ckpt_inference")
    shutil.copy(micro_checkpoint / "model.safetensors", out / "model.safetensors")
    cfg = OmegaConf.load(micro_checkpoint / "config.yaml")
    cfg.inference = {**inference_node(cfg.model, cfg.attention), **INFERENCE}
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    return out


def test_cli_and_python_api_give_the_same_mesh(exported_with_inference, tmp_path):
    """predict.py with no inference keys and ``from_pretrained(ckpt)(folder)`` both use the checkpoint's."""
    out_dir = tmp_path / "cli"
    cfg = _cfg(tmp_path, f"ckpt={exported_with_inference}", f"input={DEMO}", f"output_dir={out_dir}",
               "progress=false", "export.video=false", "export.glb=false", "export.strip_png=false")  # fmt: skip
    _run(cfg)
    pipe = Sculpt4DPipeline.from_pretrained(exported_with_inference)
    assert pipe.inference.num_steps == 2 and pipe.sequence_length == 2
    frames = pipe.frames(DEMO)
    assert [f.name for f in frames] == [
        "frame_0000.png",
        "frame_0003.png",
    ]  # frame_stride=3 from the checkpoint
    api = pipe(DEMO, progress=False)
    import trimesh

    cli = [trimesh.load(out_dir / f"frame_{t:04d}.obj", process=False) for t in range(2)]
    assert len(api.meshes) == len(cli) == 2
    for a, b in zip(api.meshes, cli, strict=True):
        np.testing.assert_allclose(np.asarray(a.vertices), np.asarray(b.vertices), atol=1e-5)
    saved = OmegaConf.load(exported_with_inference / "config.yaml")
    assert saved.inference.octree_resolution == 16
    import json

    summary = json.loads((out_dir / "prediction.json").read_text())
    assert {k: summary["config"][k] for k in INFERENCE} == INFERENCE


def test_overrides_beat_the_checkpoint(exported_with_inference, tmp_path):
    cfg = _cfg(tmp_path, f"ckpt={exported_with_inference}", f"input={DEMO}", f"output_dir={tmp_path / 'o'}",
               "sequence_length=3", "frame_stride=1", "progress=false", "export.video=false")  # fmt: skip
    _run(cfg)
    assert len(list((tmp_path / "o").glob("frame_*.obj"))) == 3


def test_old_export_falls_back_to_its_model_node_and_gains_the_node(micro_checkpoint, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(micro_checkpoint, old)
    pipe = Sculpt4DPipeline.from_pretrained(old)
    assert pipe.inference.octree_resolution == MICRO.octree_resolution
    assert (
        pipe.sequence_length == MICRO.sequence_length and pipe.preprocess_cfg["size"] == MICRO.preprocess.size
    )
    node = add_inference_node(old, frame_stride=2)
    assert node["frame_stride"] == 2 and node["octree_resolution"] == MICRO.octree_resolution
    assert OmegaConf.load(old / "config.yaml").inference.frame_stride == 2
    assert Sculpt4DPipeline.from_pretrained(old).inference.frame_stride == 2
