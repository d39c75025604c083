"""Shared fixtures: a tiny synthetic dataset in the on-disk format (DESIGN §6 + ``4d_volume.npz``).

``make_synthetic_dataset(root, ...)`` writes rotating boxes (one per object) with consistent surface
samples (row i = the same surface point in every frame), sharp-edge samples, occupancy queries, RGBA
renders, ``transforms.json``, ``mesh.ply`` and ``meta.json``. Use the session fixture ``tiny_dataset``
(read-only!) or call the function into your own ``tmp_path`` when a test modifies files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

_FACES = [(0, 1), (0, -1), (1, 1), (1, -1), (2, 1), (2, -1)]  # (axis, sign)


def _rot_z(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _box_surface(h: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points uniformly on the surface of the box ``[-h, h]`` and their normals (rest pose)."""
    areas = np.array([4 * h[(a + 1) % 3] * h[(a + 2) % 3] for a, _ in _FACES])
    face = rng.choice(6, n, p=areas / areas.sum())
    pts = rng.uniform(-1, 1, (n, 3)) * h
    nrm = np.zeros((n, 3))
    for f, (axis, sign) in enumerate(_FACES):
        m = face == f
        pts[m, axis] = sign * h[axis]
        nrm[m, axis] = sign
    return pts, nrm


def _box_edges(h: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points on the 12 edges of the box with the mean of the two adjacent face normals."""
    axis = rng.integers(0, 3, n)
    signs = rng.choice([-1.0, 1.0], (n, 3))
    pts = signs * h
    nrm = signs.copy()
    for i in range(n):
        a = axis[i]
        pts[i, a] = rng.uniform(-h[a], h[a])
        nrm[i, a] = 0.0
    return pts, nrm / np.linalg.norm(nrm, axis=1, keepdims=True)


def _render(h: np.ndarray, theta: float, view: int, size: int) -> np.ndarray:
    """An RGBA 'render': a coloured rectangle whose width follows the box's rotation."""
    img = np.zeros((size, size, 4), np.uint8)
    w = abs(h[0] * np.cos(theta)) + abs(h[1] * np.sin(theta))
    half_w = max(2, int(w / 0.5 * size * 0.45))
    half_h = max(2, int(h[2] / 0.5 * size * 0.45))
    c = size // 2
    img[c - half_h : c + half_h, c - half_w : c + half_w] = (60 + 60 * view, 120, 200 - 40 * view, 255)
    return img


def make_synthetic_dataset(
    root: str | Path,
    num_objects: int = 5,
    num_frames: int = 6,
    num_views: int = 3,
    num_points: int = 600,
    num_sharp: int = 120,
    num_volume: int = 800,
    image_size: int = 32,
    seed: int = 0,
    write_mesh: bool = True,
) -> Path:
    """Write ``num_objects`` rotating boxes under ``root``; returns ``root``."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for o in range(num_objects):
        obj = root / f"obj_{o:03d}"
        (obj / "geo_data").mkdir(parents=True, exist_ok=True)
        h = rng.uniform(0.12, 0.3, 3)
        dtheta = rng.uniform(0.1, 0.3)
        rest_pts, rest_nrm = _box_surface(h, num_points, rng)
        edge_pts, edge_nrm = _box_edges(h, num_sharp, rng)
        surf, vol = {}, {}
        for f in range(num_frames):
            key = f"frame_{f:04d}"
            r = _rot_z(f * dtheta)
            surf[f"{key}/random_surface"] = np.concatenate([rest_pts @ r.T, rest_nrm @ r.T], 1).astype(
                np.float16
            )
            surf[f"{key}/sharp_surface"] = np.concatenate([edge_pts @ r.T, edge_nrm @ r.T], 1).astype(
                np.float16
            )
            near = rest_pts[rng.integers(0, num_points, num_volume // 2)] + rng.normal(
                0, 0.02, (num_volume // 2, 3)
            )
            uni = rng.uniform(-0.55, 0.55, (num_volume - num_volume // 2, 3)) @ r  # rest frame
            q_rest = np.concatenate([near, uni])
            occ = np.all(np.abs(q_rest) <= h, axis=1)
            vol[f"{key}/points"] = (q_rest @ r.T).astype(np.float16)
            vol[f"{key}/occupancy"] = occ.astype(np.uint8)
            fdir = obj / "render_cond" / key
            fdir.mkdir(parents=True, exist_ok=True)
            frames = []
            for v in range(num_views):
                Image.fromarray(_render(h, f * dtheta, v, image_size)).save(fdir / f"{v:03d}.png")
                c2w = np.eye(4)
                c2w[:3, 3] = [0.0, -2.0, 0.0]
                frames.append(
                    {
                        "file_path": f"{v:03d}.png",
                        "transform_matrix": c2w.tolist(),
                        "fx": image_size,
                        "fy": image_size,
                        "cx": image_size / 2,
                        "cy": image_size / 2,
                    }
                )
            (fdir / "transforms.json").write_text(
                json.dumps(
                    {"camera_angle_x": 0.69, "width": image_size, "height": image_size, "frames": frames}
                )
            )
            if write_mesh:
                import trimesh

                box = trimesh.creation.box(extents=2 * h)
                box.apply_transform(np.block([[r, np.zeros((3, 1))], [np.zeros((1, 3)), np.ones((1, 1))]]))
                box.export(fdir / "mesh.ply")
        np.savez_compressed(obj / "geo_data" / "4d_sample_new.npz", **surf)
        np.savez_compressed(obj / "geo_data" / "4d_volume.npz", **vol)
        (obj / "meta.json").write_text(
            json.dumps(
                {
                    "category": "box",
                    "seed": seed,
                    "num_frames": num_frames,
                    "center": [0, 0, 0],
                    "scale": 1.0,
                    "source": "synthetic",
                }
            )
        )
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only synthetic dataset: 5 objects x 6 frames x 3 views (32 px), 600+120 points, 800 queries."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("tiny4d"))


@pytest.fixture(scope="session")
def make_dataset():
    """The :func:`make_synthetic_dataset` function, for tests that need their own (modifiable) copy."""
    return make_synthetic_dataset


# ---------------------------------------------------------------------------------------------- configs
# The micro model shared by the pipeline, predict, app and inference tests: the tiny architecture shrunk
# further so a CPU forward takes milliseconds (3 frames).
MICRO = OmegaConf.create({
    "name": "micro", "sequence_length": 3, "octree_resolution": 24,
    "vae": {"_target_": "sculpt4d.models.vae.ShapeVAE", "num_latents": 32, "embed_dim": 8, "width": 32,
            "heads": 2, "num_encoder_layers": 1, "num_decoder_layers": 1, "point_feats": 4, "pc_size": 256,
            "downsample_ratio": 8, "logvar_max": 0.0},
    "dit": {"_target_": "sculpt4d.models.dit.HunyuanDiT", "input_size": 32, "in_channels": 8, "hidden_size": 32,
            "context_dim": 16, "depth": 3, "num_heads": 2, "num_moe_layers": 1, "num_experts": 2, "moe_top_k": 2},
    "conditioner": {"_target_": "sculpt4d.models.conditioner.VideoConditioner", "image_size": 28,
                    "dinov2": {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                               "intermediate_size": 32, "patch_size": 14, "image_size": 28}},
    "adapter": {"lora_rank": 2, "max_frames": 8},
    "preprocess": {"size": 32, "border_ratio": 0.15},
})  # fmt: skip
ATTENTION = {"variant": "blockmask", "block_size": 8, "anchor": True, "decay": 0.25, "dense_distance": 1}


def micro_components(seed: int = 0):
    """The micro model's components under ``seed`` (a non-zero adapter so the 4D weights matter)."""
    torch.manual_seed(seed)
    from sculpt4d.models.factory import build_components

    comps = build_components(MICRO, ATTENTION, four_d=True)
    with torch.no_grad():  # non-zero adapter so the 4D weights matter in round trips
        for p in comps.model.adapter.parameters():
            p.normal_(0, 0.05)
    return comps.eval()


CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

# A model smaller than `model=tiny` for fast CPU tests (same architecture, every code path).
MICRO_MODEL = [
    "model.vae.num_latents=32",
    "model.vae.embed_dim=8",
    "model.vae.width=32",
    "model.vae.heads=2",
    "model.vae.num_encoder_layers=1",
    "model.vae.num_decoder_layers=1",
    "model.vae.downsample_ratio=8",  # 32 latents x 8 = 256 points
    "pc_size=256",
    "model.dit.input_size=32",
    "model.dit.in_channels=8",
    "model.dit.hidden_size=32",
    "model.dit.context_dim=32",
    "model.dit.depth=3",
    "model.dit.num_heads=2",
    "model.dit.num_moe_layers=1",
    "model.dit.num_experts=2",
    "model.conditioner.image_size=28",
    "model.conditioner.dinov2.hidden_size=32",
    "model.conditioner.dinov2.num_hidden_layers=1",
    "model.conditioner.dinov2.num_attention_heads=2",
    "model.conditioner.dinov2.intermediate_size=64",
    "model.conditioner.dinov2.image_size=28",
    "model.preprocess.size=32",
    "model.adapter.lora_rank=2",
    "attention.block_size=16",
]


def compose_train(overrides: list[str], tmp_path: Path, data_root: Path | None = None):
    """``conf/train.yaml`` composed in-process (Hydra compose API) with outputs under ``tmp_path``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from sculpt4d.config import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        extra = [f"data.root={data_root}"] if data_root is not None else []
        cfg = compose(
            config_name="train",
            overrides=[f"output_folder={tmp_path}/out", *overrides, *extra],
            return_hydra_config=True,
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.extras.print_config = False
    HydraConfig.instance().set_config(cfg)
    GlobalHydra.instance().clear()
    return cfg


@pytest.fixture
def train_cfg(tmp_path: Path, tiny_dataset: Path):
    """``train_cfg(stage, *overrides)``: a micro-model config of ``experiment=tiny_<stage>`` on the fixture data."""

    def make(stage: str = "4d", *overrides: str, micro: bool = True):
        base = [
            f"experiment=tiny_{stage}" if stage != "tiny" else "experiment=tiny",
            "init_from=null",
            "sequence_length=3",
            "data.num_volume_points=128",
            "data.batch_size=2",
            "data.val_batch_size=2",
            "logger=csv",
            "callbacks=none",
            "lit.val.num_steps=2",
            "lit.val.mesh_resolution=12",
            "lit.val.strip=false",
            "training.warmup_steps=2",
        ]
        return compose_train([*base, *(MICRO_MODEL if micro else []), *overrides], tmp_path, tiny_dataset)

    return make


@pytest.fixture(scope="session")
def micro_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported micro model (config.yaml + model.safetensors, 3 frames) that predict.py and the app load."""
    from sculpt4d.hub import save_safetensors

    out = tmp_path_factory.mktemp("micro_ckpt")
    save_safetensors(micro_components().state_dict(), out / "model.safetensors")
    (out / "config.yaml").write_text(OmegaConf.to_yaml({"model": MICRO, "attention": ATTENTION}))
    return out


def load_script(name: str):
    """``scripts/<name>.py`` as a module (registered in ``sys.modules``, so its dataclasses resolve)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def fit_module(cfg, module, steps: int, **trainer_kwargs):
    """Fit ``module`` for ``steps`` on ``cfg.data`` (CPU, no logger, checkpoints or validation; ``trainer_kwargs``
    add to the Trainer's): (module, trainer)."""
    from hydra.utils import instantiate
    from lightning.pytorch import Trainer

    dm = instantiate(cfg.data)
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        use_distributed_sampler=False,
        **trainer_kwargs,
    )
    trainer.fit(module, datamodule=dm)
    return module, trainer
