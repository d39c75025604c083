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
    m = build_block_mask(
        "fixed_stride", T, N, block_size=b, stride=stride, anchor=anchor, dense_distance=dense
    )
    assert torch.equal(m.dense_bool(), _token_fixed_stride(T, N, stride, anchor, dense))
    assert m.density == pytest.approx(_token_fixed_stride(T, N, stride, anchor, dense).float().mean().item())


def test_fixed_stride_structure_and_cost_at_the_tiny_size():
    T, N, b = 8, 128, 32  # the tiny model: 8 frames x 128 latents, block 32
    fs = build_block_mask("fixed_stride", T, N, b).frame_density()  # [T, T]
    assert fs[7].tolist() == [1, 0, 0, 1, 0, 0, 1, 1]  # anchor, d=4, d<=1 (and itself)
    assert fs[0].tolist() == [1, 1, 0, 0, 1, 0, 0, 0]  # query frame 0: itself, d=1 and d=4
    blockmask = build_block_mask("blockmask", T, N, b).density
    assert (
        build_block_mask("temporal", T, N, b).density
        < build_block_mask("fixed_stride", T, N, b).density
        < blockmask
    )
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
        assert (
            rows_same.median().item() < 0.2
        ) == consistent  # small rotation: rows stay put only when consistent


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
    from sculpt4d.models.attention.config import AttentionConfig

    assert {p.stem for p in (ROOT / "conf/experiment/ablation").glob("*.yaml")} == set(ABLATIONS)
    ref = compose_train(["experiment=tiny_4d", "seed=3"], tmp_path)
    for name, (variant, anchor) in ABLATIONS.items():
        cfg = compose_train([f"experiment=ablation/{name}", "seed=3"], tmp_path)
        # null in the YAML = the variant's default
        resolved = AttentionConfig.from_dict(OmegaConf.to_container(cfg.attention))
        assert resolved.variant == variant and resolved.anchor == anchor, name
        assert (cfg.attention.block_size, cfg.attention.backend) == (32, "dense")
        assert cfg.config_name == f"ablation_{name}_s3" and cfg.export_dir.endswith(
            f"ablation_{name}_s3/export"
        )
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
    # the sweep form: experiment=ablation/blockmask attention=<mask> names runs like the mask's experiment
    swept = compose_train(["experiment=ablation/blockmask", "attention=fixed_stride", "seed=1"], tmp_path)
    assert swept.config_name == "ablation_fixed_stride_s1" and swept.attention.block_size == 32


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


# ------------------------------------------------------------------------------ the study evaluation
def _export(path: Path, seed: int, variant: str) -> Path:
    from conftest import ATTENTION, MICRO, micro_components
    from omegaconf import OmegaConf

    from sculpt4d.hub import save_safetensors

    path.mkdir(parents=True)
    save_safetensors(micro_components(seed).state_dict(), path / "model.safetensors")
    att = (
        {**ATTENTION, "variant": variant} if variant == "blockmask" else {"variant": variant, "block_size": 8}
    )
    (path / "config.yaml").write_text(OmegaConf.to_yaml({"model": MICRO, "attention": att}))
    return path


def test_aggregate_groups_seeds_and_reports_the_spread():
    from sculpt4d.study import aggregate, format_study_table, variant_and_seed

    assert variant_and_seed("ablation_no_anchor_s12") == ("no_anchor", 12)
    assert variant_and_seed("mine") == ("mine", None)
    metrics = lambda iou: {"iou": iou, "motion_iou": iou / 2, "chamfer": 0.1, "fscore": 0.3, "jitter": 0.01,  # noqa: E731
                           "tflops": 1.0, "paper_pflops": 50.0}  # fmt: skip
    entries = {f"ablation_full_s{s}": {"attention": {"variant": "full"}, "metrics": metrics(v)}
               for s, v in ((0, 0.4), (1, 0.6))}  # fmt: skip
    entries["ablation_temporal_s0"] = {"attention": {"variant": "temporal"}, "metrics": metrics(0.2)}
    agg = aggregate(entries)
    assert list(agg) == ["full", "temporal"] and agg["full"]["seeds"] == [0, 1]
    assert agg["full"]["iou"]["mean"] == pytest.approx(0.5)
    assert agg["full"]["iou"]["std"] == pytest.approx(0.1414, abs=1e-4)  # sample std of 0.4, 0.6
    assert agg["temporal"]["iou"]["std"] == 0.0
    table = format_study_table(agg)
    assert "| full | 2 | 0.500 ± 0.141 |" in table and "| temporal | 1 | 0.200 |" in table


def _study_cfg(tmp_path: Path, benchmark: Path, ckpts: dict[str, Path]):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from sculpt4d.config import register_resolvers

    register_resolvers()
    items = ",".join(f"'{k}={v}'" for k, v in ckpts.items())  # quoted: Hydra's list items hold no bare '='
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", return_hydra_config=True, overrides=[
            f"paths.root_dir={ROOT}", f"paths.log_dir={tmp_path}", f"ckpts=[{items}]", f"benchmark={benchmark}",
            f"output_dir={tmp_path / 'study'}", "max_objects=1", "num_steps=2", "octree_resolution=16",
            "metrics.n_points=500", "metrics.iou_resolution=16",
        ])  # fmt: skip
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_study_over_checkpoints_writes_table_and_plot_and_resumes(tmp_path, tiny_dataset):
    import json

    from sculpt4d.evaluate import run_task

    ckpts = {f"{v}_s{s}": _export(tmp_path / "ckpts" / f"{v}_s{s}", s, v)
             for v in ("blockmask", "full") for s in (0, 1)}  # fmt: skip
    agg = run_task(_study_cfg(tmp_path, tiny_dataset, ckpts))
    out = tmp_path / "study"
    saved = json.loads((out / "table.json").read_text())
    assert set(saved["variants"]) == set(agg) == {"blockmask", "full"}
    entries = {n: json.loads((out / n / "entry.json").read_text()) for n in ckpts}
    for variant, row in saved["variants"].items():
        assert row["seeds"] == [0, 1] and len(row["iou"]["values"]) == 2
        vals = [entries[f"{variant}_s{s}"]["metrics"]["iou"] for s in (0, 1)]
        assert row["iou"]["mean"] == pytest.approx(sum(vals) / 2)
        assert row["iou"]["std"] == pytest.approx(abs(vals[0] - vals[1]) / 2**0.5)
        assert 0.0 <= row["motion_iou"]["mean"] <= 1.0
    assert saved["variants"]["full"]["tflops"]["mean"] > saved["variants"]["blockmask"]["tflops"]["mean"]
    assert saved["variants"]["full"]["paper_pflops"]["mean"] == pytest.approx(98.4, abs=0.1)
    assert saved["variants"]["blockmask"]["paper_pflops"]["mean"] == pytest.approx(50.9, abs=0.1)
    assert saved["hashes"]["full_s1"] == entries["full_s1"]["sha256"] and len(saved["hashes"]) == 4
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| blockmask | 2 |" in (out / "table.md").read_text()
    # resume: evaluated checkpoints are reused; new weights under the same name are evaluated again
    stamps = {n: (out / n / "entry.json").stat().st_mtime_ns for n in ckpts}
    _export(tmp_path / "ckpts2" / "full_s1", 5, "full")
    ckpts["full_s1"] = tmp_path / "ckpts2" / "full_s1"
    run_task(_study_cfg(tmp_path, tiny_dataset, ckpts))
    for n in ckpts:
        assert ((out / n / "entry.json").stat().st_mtime_ns == stamps[n]) == (n != "full_s1"), n
    from sculpt4d.study import eval_settings  # other evaluation settings are not reused either

    cfg = _study_cfg(tmp_path, tiny_dataset, ckpts)
    assert json.loads((out / "full_s0" / "entry.json").read_text())["settings"] == eval_settings(cfg)
    cfg.num_steps = 3
    assert eval_settings(cfg) != json.loads((out / "full_s0" / "entry.json").read_text())["settings"]


def test_study_bad_checkpoint_is_one_message_and_exit_2(tmp_path, tiny_dataset):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "sculpt4d.evaluate", f"ckpts=['a={tmp_path / 'nope'}']", f"benchmark={tiny_dataset}",
           f"output_dir={tmp_path / 'o'}", "hydra.run.dir=" + str(tmp_path / "h")]  # fmt: skip
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ckpts: 'a=")
    assert len(proc.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------ the study script
def _script():
    from conftest import load_script

    return load_script("ablation")


def _fake_export(run) -> None:
    run.export.mkdir(parents=True)
    (run.export / "model.safetensors").write_bytes(b"weights")
    (run.export / "config.yaml").write_text("model: {}\n")


def test_plan_skips_exported_runs_and_redoes_partial_ones(tmp_path):
    ab = _script()
    assert ab.variants() == list(ABLATIONS)  # every experiment, in the table's order
    runs = ab.plan(tmp_path, ["full", "no_anchor"], [0, 1])
    assert [r.name for r in runs] == ["ablation_full_s0", "ablation_full_s1", "ablation_no_anchor_s0",
                                      "ablation_no_anchor_s1"]  # fmt: skip
    _fake_export(runs[1])
    (runs[2].dir / "checkpoints").mkdir(parents=True)  # killed mid-training: no export yet
    (runs[3].export).mkdir(parents=True)
    (runs[3].export / "config.yaml").write_text("model: {}\n")  # killed while exporting: no weights
    assert [r.done for r in runs] == [False, True, False, False]
    assert runs[1].dir == tmp_path / "dit" / "ablation_full_s1"  # = the experiment's checkpoint_dir


def test_dry_run_prints_only_the_missing_runs_and_the_evaluation(tmp_path, capsys):
    ab = _script()
    out = tmp_path / "runs"
    argv = ["--dry-run", "--out", str(out), "--results", str(tmp_path / "res"), "--variants", "full", "temporal",
            "--seeds", "0", "1", "--minutes", "2.5", "--init", str(tmp_path / "dit3d")]  # fmt: skip
    _fake_export(ab.Run("temporal", 0, out))
    assert ab.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("[ablation] 4 runs, 1 already exported, 3 to train (7.5 min of training)")
    train = [ln for ln in lines if "/train.py " in ln]
    assert len(train) == 3 and "# ablation_temporal_s0: exported, skipped" in lines
    assert "experiment=ablation/full" in train[0] and "seed=1" in train[1] and "seed=1" in train[2]
    assert all(
        "trainer.max_time=00:00:02:30" in ln and f"init_from={tmp_path / 'dit3d'}" in ln for ln in train
    )
    assert all(f"output_folder={out}" in ln for ln in train)
    evaluate = lines[-1]
    assert "-m sculpt4d.evaluate" in evaluate and f"output_dir={tmp_path / 'res'}/eval" in evaluate
    for name in ("full_s0", "full_s1", "temporal_s0", "temporal_s1"):
        assert f"ablation_{name}={out}/dit/ablation_{name}/export" in evaluate
    assert not (tmp_path / "res").exists()  # a dry run writes nothing


@pytest.mark.parametrize(
    "argv,message",
    [(["--variants", "bogus"], "unknown variant(s) ['bogus']"), (["--seeds", "0", "0"], "--seeds must be distinct"),
     (["--init", "/nonexistent/export"], "is not an export: train the 3D stage first")],
)  # fmt: skip
def test_bad_input_is_one_message_and_exit_2(tmp_path, capsys, argv, message):
    ab = _script()
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    with pytest.raises(SystemExit) as exc:
        ab.main(["--out", str(tmp_path / "o"), "--data", str(data), "--variants", "full", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_study_script_end_to_end_with_a_micro_model(tmp_path, tiny_dataset, train_cfg, capsys):
    """Two seeds of one variant really trained (2 steps, micro model) from a 3D export, evaluated, collected;
    a second call finds both exported and trains nothing."""
    import json

    from conftest import MICRO_MODEL

    from sculpt4d.lit.task import train

    init = tmp_path / "dit3d_export"
    train(train_cfg("dit3d", "train=false", f"export_dir={init}"))  # the 3D stage export (untrained)
    data = tmp_path / "data"
    data.mkdir()
    (data / "train").symlink_to(tiny_dataset)
    micro = [*MICRO_MODEL, "sequence_length=3", "data.num_volume_points=128", "data.batch_size=2",
             "data.val_batch_size=2", "data.num_workers=0", "training.warmup_steps=2", "training.val_every=1000",
             "trainer.limit_val_batches=0", "trainer.log_every_n_steps=1", "lit.val.strip=false"]  # fmt: skip
    evaluate = ["num_steps=2", "octree_resolution=16", "metrics.n_points=500", "metrics.iou_resolution=16"]
    argv = ["--data", str(data), "--init", str(init), "--out", str(tmp_path / "runs"), "--results",
            str(tmp_path / "res"), "--variants", "no_consistent_sampling", "--seeds", "0", "1", "--minutes", "3",
            "--steps", "2", "--benchmark", str(tiny_dataset), "--eval-objects", "1",
            *[f"--override={o}" for o in micro], *[f"--evaluate-override={o}" for o in evaluate]]  # fmt: skip
    ab = _script()
    assert ab.main(argv) == 0
    res = tmp_path / "res"
    for f in ("table.md", "table.json", "plot.png", "hashes.json", "loss_curves.png", "study.json"):
        assert (res / f).is_file(), f
    names = [f"ablation_no_consistent_sampling_s{s}" for s in (0, 1)]
    hashes = json.loads((res / "hashes.json").read_text())
    assert set(hashes) == set(names) and hashes[names[0]]["sha256"] != hashes[names[1]]["sha256"]
    row = json.loads((res / "table.json").read_text())["variants"]["no_consistent_sampling"]
    assert row["seeds"] == [0, 1] and row["attention"]["variant"] == "blockmask"
    for n in names:
        assert "train/loss" in (res / "loss" / f"{n}.csv").read_text().splitlines()[0]
        composed = (tmp_path / "runs" / "hydra" / n / ".hydra" / "config.yaml").read_text()
        assert "consistent_sampling: false" in composed
    stamps = [
        (tmp_path / "runs" / "dit" / n / "export" / "model.safetensors").stat().st_mtime_ns for n in names
    ]
    capsys.readouterr()
    assert ab.main(argv) == 0  # resumed: nothing left to train, the evaluations are reused
    assert "2 already exported, 0 to train" in capsys.readouterr().out
    assert stamps == [(tmp_path / "runs" / "dit" / n / "export" / "model.safetensors").stat().st_mtime_ns
                      for n in names]  # fmt: skip
