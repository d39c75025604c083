"""The ablation study: the fixed-stride mask, consistent sampling as a data option, the variant configs,
the multi-checkpoint evaluation table and the resumable study script."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sculpt4d.models.attention import build_block_mask, sparse_attention

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ fixed-stride mask
def _token_fixed_stride(T: int, N: int, stride: int, anchor: bool, dense: int) -> torch.Tensor:
    """Independent token-level statement: pair (i, j) fully kept iff d <= dense, anchor j == 0, or d % stride == 0."""
    keep = torch.zeros(T * N, T * N, dtype=torch.bool)
    for i in range(T):
        for j in range(T):
            d = abs(i - j)
            if d <= dense or (anchor and j == 0) or d % stride == 0:
                keep[i * N : (i + 1) * N, j * N : (j + 1) * N] = True
    return keep


@pytest.mark.parametrize("T,N,b", [(8, 64, 16), (13, 32, 8), (1, 32, 8)])
@pytest.mark.parametrize("stride,anchor,dense", [(4, True, 1), (3, False, 1), (2, True, 0), (5, False, 2)])
def test_fixed_stride_equals_token_level_rule(T, N, b, stride, anchor, dense):
    m = build_block_mask("fixed_stride", T, N, block_size=b, stride=stride, anchor=anchor, dense_distance=dense)
    assert torch.equal(m.dense_bool(), _token_fixed_stride(T, N, stride, anchor, dense))
    assert m.density == pytest.approx(_token_fixed_stride(T, N, stride, anchor, dense).float().mean().item())


def test_fixed_stride_structure_and_cost_at_the_tiny_size():
    T, N, b = 8, 128, 32  # the tiny model: 8 frames x 128 latents, block 32
    fs = build_block_mask("fixed_stride", T, N, b).frame_density()  # [T, T]
    assert fs[7].tolist() == [1, 0, 0, 1, 0, 0, 1, 1]  # anchor, d=4, d<=1 (and itself)
    assert fs[0].tolist() == [1, 1, 0, 0, 1, 0, 0, 0]  # query frame 0: itself, d=1 and d=4
    blockmask = build_block_mask("blockmask", T, N, b).density
    assert build_block_mask("temporal", T, N, b).density < build_block_mask("fixed_stride", T, N, b).density < blockmask
    with pytest.raises(ValueError, match="stride must be >= 1"):
        build_block_mask("fixed_stride", 4, 32, 8, stride=0)


def test_fixed_stride_gather_equals_dense():
    m = build_block_mask("fixed_stride", 9, 32, block_size=8, stride=3)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 9 * 32, 8, generator=g, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(sparse_attention(q, k, v, m, "gather"), sparse_attention(q, k, v, m, "dense"))


# ------------------------------------------------------------------------------ consistent sampling
def _pairwise(x: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x.double(), x.double())  # [P, P]


@pytest.mark.parametrize("consistent", [True, False])
def test_consistent_sampling_tracks_one_point_per_row(tiny_dataset, consistent):
    """The synthetic boxes rotate rigidly: with consistent sampling the rows keep their pairwise distances
    in every frame (row i is one surface point); drawn per frame they do not."""
    from sculpt4d.data.dataset import Objects4DDataset
    from sculpt4d.data.records import scan_object

    recs = [scan_object(p, min_frames=4, need_images=False) for p in sorted(tiny_dataset.iterdir())[:2]]
    ds = Objects4DDataset(recs, sequence_length=4, pc_size=200, pc_sharpedge_size=40, load_images=False,
                          consistent_sampling=consistent)  # fmt: skip
    for index in range(2):
        surf = ds.load_item(index, seed=7)["surface"]  # [T, P, 7]
        assert surf.shape == (4, 240, 7)
        d0 = _pairwise(surf[0, :, :3])
        for t in range(1, 4):
            err = (_pairwise(surf[t, :, :3]) - d0).abs().max().item()
            if consistent:
                assert err < 5e-3  # float16 storage
            else:
                assert err > 0.1
        rows_same = (surf[1, :, :3] - surf[0, :, :3]).norm(dim=-1)
        assert (rows_same.median().item() < 0.2) == consistent  # small rotation: rows stay put only when consistent


def test_consistent_sampling_default_keeps_the_data_stream(tiny_dataset):
    from sculpt4d.data.dataset import Objects4DDataset
    from sculpt4d.data.records import scan_object

    recs = [scan_object(sorted(tiny_dataset.iterdir())[0], min_frames=3, need_images=False)]
    a = Objects4DDataset(recs, sequence_length=3, pc_size=64, load_images=False).load_item(0, 3)
    b = Objects4DDataset(recs, sequence_length=3, pc_size=64, load_images=False, consistent_sampling=True)
    assert torch.equal(a["surface"], b.load_item(0, 3)["surface"])


# ------------------------------------------------------------------------------ variant configs
ABLATIONS = {  # experiment -> (attention variant, anchor or None)
    "blockmask": ("blockmask", True),
    "full": ("full", None),
    "temporal": ("temporal", None),
    "radial": ("radial", False),
    "framepack": ("framepack", False),
    "rope": ("rope", None),
    "fixed_stride": ("fixed_stride", True),
    "no_anchor": ("blockmask", False),
    "no_shared_noise": ("blockmask", True),
    "no_consistent_sampling": ("blockmask", True),
}


def test_every_ablation_is_the_tiny_4d_recipe_but_one_choice(tmp_path):
    from conftest import compose_train
    from omegaconf import OmegaConf

    from sculpt4d.inference import inference_node

    assert {p.stem for p in (ROOT / "conf/experiment/ablation").glob("*.yaml")} == set(ABLATIONS)
    ref = compose_train(["experiment=tiny_4d", "seed=3"], tmp_path)
    for name, (variant, anchor) in ABLATIONS.items():
        cfg = compose_train([f"experiment=ablation/{name}", "seed=3"], tmp_path)
        assert cfg.attention.variant == variant and cfg.attention.get("anchor") == anchor, name
        assert (cfg.attention.block_size, cfg.attention.backend) == (32, "dense")
        assert cfg.config_name == f"ablation_{name}_s3" and cfg.export_dir.endswith(f"ablation_{name}_s3/export")
        assert cfg.init_from == ref.init_from and cfg.init_from.endswith("dit/tiny_dit3d/export")
        for key in ("training", "trainer", "callbacks"):
            assert OmegaConf.to_container(cfg[key]) == OmegaConf.to_container(ref[key]), (name, key)
        assert (cfg.sequence_length, cfg.pc_size) == (ref.sequence_length, ref.pc_size)
        assert cfg.data.strides == ref.data.strides and cfg.seed == 3
        assert cfg.data.consistent_sampling is (name != "no_consistent_sampling")
        shared = name != "no_shared_noise"
        assert cfg.lit.flow_noise_share_alpha == ("uniform" if shared else 0.0)
        node = inference_node(OmegaConf.to_container(cfg.model, resolve=True), cfg.attention)
        assert node["noise_share_alpha"] == (1.0 if shared else 0.0)
        assert node["attention"]["variant"] == variant


def test_exported_noise_share_alpha_is_the_sampling_default(micro_checkpoint, tmp_path):
    import shutil

    from omegaconf import OmegaConf

    from sculpt4d.inference import InferenceDefaults, inference_node
    from sculpt4d.pipeline import Sculpt4DPipeline

    shutil.copy(micro_checkpoint / "model.safetensors", tmp_path / "model.safetensors")
    cfg = OmegaConf.load(micro_checkpoint / "config.yaml")
    assert InferenceDefaults.from_config(cfg).noise_share_alpha == 1.0  # older exports: shared noise
    cfg.inference = {**inference_node(cfg.model, cfg.attention), "noise_share_alpha": 0.0}
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    pipe = Sculpt4DPipeline.from_pretrained(str(tmp_path), device="cpu")
    assert pipe.inference.noise_share_alpha == 0.0
    cond = torch.randn(1, 3, pipe.components.conditioner.num_tokens, 16)  # [1, T, M, D]
    run = lambda a: pipe.sample_latents(cond, num_steps=2, noise_share_alpha=a, progress=False)  # noqa: E731
    torch.testing.assert_close(run(None), run(0.0))
    assert not torch.allclose(run(None), run(1.0))
