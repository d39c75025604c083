"""The pieces of the tiny recipe: posterior bound, DiT latent statistics, sequence crop, strided windows,
exact-mesh labels and the motion IoU metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from sculpt4d.data.dataset import Objects4DDataset
from sculpt4d.data.records import scan_object
from sculpt4d.metrics import evaluate_sequence, motion_iou, sequence_occupancy
from sculpt4d.models.vae import ShapeVAE
from sculpt4d.models.vae.posterior import DiagonalGaussian
from sculpt4d.prep import sampling as S
from sculpt4d.utils.images import alpha_box, preprocess_images, union_box


def _logvar_grad(bound: str) -> torch.Tensor:
    raw = torch.linspace(-3.0, 6.0, 32).reshape(1, 2, 16)  # half the elements past the bound (0)
    moments = torch.cat([torch.zeros(1, 2, 16), raw], -1).requires_grad_(True)
    post = DiagonalGaussian(moments, logvar_min=-30.0, logvar_max=0.0, bound=bound)
    (post.kl().sum() + post.sample(noise=torch.ones(1, 2, 16)).sum()).backward()
    return moments.grad[..., 16:]


def test_smooth_posterior_bound_leaves_no_dead_zone():
    assert (_logvar_grad("smooth").abs() > 0).all()  # a gradient reaches every logvar element
    assert (_logvar_grad("clamp").abs() == 0).any()  # the hard clamp has a zero-gradient zone
    post = DiagonalGaussian(
        torch.cat([torch.zeros(1, 4), torch.full((1, 4), 50.0)], -1), -30, 0, bound="smooth"
    )
    assert (post.std <= 1.0).all()


def _vae(**kw) -> ShapeVAE:
    cfg = dict(num_latents=8, embed_dim=4, width=32, heads=2, num_encoder_layers=1, num_decoder_layers=1,
               num_freqs=4, pc_size=64, downsample_ratio=8)  # fmt: skip
    return ShapeVAE(**{**cfg, **kw})


def test_logvar_bias_init_starts_near_deterministic():
    vae = _vae(logvar_bias_init=-6.0, logvar_bound="smooth", logvar_max=0.0)
    assert torch.all(vae.pre_kl.bias[4:] == -6.0) and torch.all(vae.pre_kl.bias[:4] == 0.0)


def test_weight_init_reference_is_small_pytorch_is_nn_linear_default():
    ref, torch_init = _vae(), _vae(weight_init="pytorch")
    w_ref, w_pt = ref.post_kl.weight, torch_init.post_kl.weight  # [32, 4]: fan-in 4
    assert w_ref.std() < 0.25 * (1 / 32) ** 0.5 * 1.5  # N(0, (0.25/sqrt(width))^2)
    bound = 1 / 4**0.5  # nn.Linear's kaiming-uniform bound 1/sqrt(fan_in)
    assert w_pt.abs().max() <= bound and w_pt.std() > 4 * w_ref.std()
    assert torch.all(ref.pre_kl.bias == 0) and torch.any(torch_init.pre_kl.bias != 0)
    with pytest.raises(ValueError, match="weight_init"):
        _vae(weight_init="xavier")


def test_per_channel_latent_statistics_round_trip():
    mean, std = [0.5, -1.0, 0.0, 2.0], [0.1, 2.0, 1.0, 0.5]
    vae = _vae(latent_mean=mean, latent_std=std)
    z = torch.randn(3, 8, 4) * torch.tensor(std) + torch.tensor(mean)
    x = vae.to_dit(z)
    assert torch.allclose(vae.from_dit(x), z, atol=1e-6)
    assert torch.allclose(x.flatten(0, 1).mean(0), torch.zeros(4), atol=1.0)  # standardised per channel
    legacy = _vae(scale_factor=2.0)  # no statistics: the reference's global scale factor
    assert torch.allclose(legacy.to_dit(z), 2.0 * z) and torch.allclose(legacy.from_dit(2.0 * z), z)


def test_exported_latent_statistics_reach_the_next_stage(train_cfg, tmp_path):
    from hydra.utils import instantiate

    from sculpt4d.lit.init import init_latent_stats, load_init

    module = instantiate(train_cfg("vae").lit, _recursive_=False)
    C = module.vae.embed_dim
    module.vae.latent_mean, module.vae.latent_std = [0.25] * C, [3.0] * C
    module.export_checkpoint(tmp_path / "export")
    _, cfg = load_init(str(tmp_path / "export"))
    stats = init_latent_stats(cfg)
    assert stats["latent_mean"] == [0.25] * C and stats["latent_std"] == [3.0] * C
    dit = instantiate(train_cfg("dit3d", f"init_from={tmp_path / 'export'}").lit, _recursive_=False)
    z = torch.randn(2, module.vae.num_latents, C)
    assert torch.allclose(dit.vae.to_dit(z), (z - 0.25) / 3.0)  # the DiT stage trains in that space


def _frame(x0: int, size: int = 64) -> Image.Image:
    a = np.zeros((size, size, 4), np.uint8)
    a[20:40, x0 : x0 + 12] = (200, 50, 50, 255)
    return Image.fromarray(a, "RGBA")


def test_sequence_crop_keeps_the_motion_frame_crop_removes_it():
    frames = [_frame(4), _frame(40)]  # the object moves right
    per_frame = preprocess_images(frames, crop="frame", size=64)
    per_sequence = preprocess_images(frames, crop="sequence", size=64)
    assert torch.allclose(per_frame[0], per_frame[1])  # each frame recentred: the motion is lost
    assert not torch.allclose(per_sequence[0], per_sequence[1])  # one box: the object moves in the image
    assert union_box([alpha_box(np.asarray(f)) for f in frames]) == (20, 39, 4, 51)


def test_dataset_sequence_crop_uses_one_box_per_clip(tiny_dataset):
    rec = scan_object(tiny_dataset / "obj_000", min_frames=1, need_images=True)
    ds = Objects4DDataset([rec], sequence_length=3, pc_size=32, preprocess_size=32, crop="sequence")
    ds[(0, 0)]
    boxes = {frame: alpha_box(np.asarray(Image.open(ds._image_path(rec, frame, 0)))) for frame in rec.frames}
    assert ds._sequence_box(rec, 0) == union_box(list(boxes.values()))
    assert len(ds._box_cache) >= 1


def test_random_strides_cover_each_listed_rate(tiny_dataset):
    rec = scan_object(tiny_dataset / "obj_001", min_frames=1, need_images=False)
    ds = Objects4DDataset([rec], sequence_length=3, strides=[1, 2], pc_size=32, load_images=False)
    gaps = {int(np.diff(ds[(0, s)]["frame_index"].numpy())[0]) for s in range(40)}
    assert gaps == {1, 2}
    ds_long = Objects4DDataset([rec], sequence_length=3, strides=[1, 5], pc_size=32, load_images=False)
    assert {int(np.diff(ds_long[(0, s)]["frame_index"].numpy())[0]) for s in range(20)} == {
        1
    }  # 5 does not fit


def _moving_parts(angle: float) -> tuple[np.ndarray, np.ndarray]:
    """A base slab plus a lid hinged at its back edge: two closed boxes, one topology for every angle."""
    base = trimesh.creation.box(extents=(0.8, 0.3, 0.8))
    lid = trimesh.creation.box(extents=(0.8, 0.06, 0.8))
    lid.apply_translation((0, 0.03, 0.4))
    lid.apply_transform(trimesh.transformations.rotation_matrix(angle, (1, 0, 0)))
    lid.apply_translation((0, 0.15, -0.4))
    mesh = trimesh.util.concatenate([base, lid])
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


def test_exact_tracks_are_consistent_and_on_the_outer_surface():
    frames = [_moving_parts(a) for a in (0.0, 0.6, 1.2)]
    rng = np.random.default_rng(0)
    rnd, shp, n_edges = S.track_exact(frames[0], frames, 500, 100, rng)
    assert (
        n_edges > 0
        and len(rnd.points) == 3
        and rnd.points[0].shape == (500, 3)
        and shp.points[0].shape == (100, 3)
    )
    for (v, f), pts, nrm in zip(frames, rnd.points, rnd.normals):
        dist = trimesh.proximity.signed_distance(trimesh.Trimesh(v, f, process=False), pts)
        assert np.abs(dist).max() < 1e-6  # exactly on this frame's mesh
        assert np.allclose(np.linalg.norm(nrm, axis=1), 1.0)
        assert (S.occupancy(v, f, pts + 0.01 * nrm) == 0).mean() > 0.97  # outward normals, no buried points
    # consistency: the base does not move, so its points stay put; the lid's points move rigidly
    moved = np.linalg.norm(rnd.points[2] - rnd.points[0], axis=1) > 1e-9
    assert 0.4 < (~moved).mean() < 0.98
    lid0, lid2 = rnd.points[0][moved], rnd.points[2][moved]
    d0 = np.linalg.norm(lid0[:, None] - lid0[None], axis=-1)
    assert np.allclose(d0, np.linalg.norm(lid2[:, None] - lid2[None], axis=-1), atol=1e-9)
    bad = [_moving_parts(0.0), (frames[1][0][:-3], frames[1][1][:-1])]
    with pytest.raises(Exception, match="topology"):
        S.track_exact(bad[0], bad, 10, 10, rng)


@pytest.mark.parametrize("category", ["door", "box", "angle"])
def test_exact_tracks_sample_every_part_by_its_area(category, tmp_path):
    """A thin moving part (door panel, lid, hinged plate) gets its share of the samples over a whole clip: the
    buried-point test never evaluates a winding number on the surface itself (where the fast winding number's
    error dropped up to 80% of a panel's samples)."""
    from sculpt4d.prep.gltf_anim import load_animated_mesh
    from sculpt4d.prep.procedural import generate_asset

    generate_asset(category, 7, tmp_path / "a.glb")
    anim = load_animated_mesh(tmp_path / "a.glb", num_frames=16)
    frames = [(anim.vertices[t].astype(np.float64), anim.faces) for t in range(anim.num_frames)]
    rnd, _, _ = S.track_exact(frames[0], frames, 4000, 10, np.random.default_rng(0))
    v, f = frames[0]
    area = S.face_areas(v, f)
    part = trimesh.graph.connected_component_labels(trimesh.Trimesh(v, f).face_adjacency, len(f))  # welded
    assert part.max() >= 1  # several parts
    _, _, face = trimesh.proximity.closest_point(trimesh.Trimesh(v, f, process=False), rnd.points[0])
    for k in np.unique(part):
        area_share, sample_share = area[part == k].sum() / area.sum(), (part[face] == k).mean()
        if area_share > 0.15:  # no large part starved (the moving one among them); a part another one swings
            assert sample_share > 0.7 * area_share, (
                k,
                area_share,
                sample_share,
            )  # through loses its buried points


def _box(offset: float) -> trimesh.Trimesh:
    m = trimesh.creation.box(extents=(0.3, 0.3, 0.3))
    m.apply_translation((offset, 0, 0))
    return m


def test_motion_iou_static_is_zero_truth_is_one():
    gt = [_box(x) for x in (-0.2, 0.0, 0.2)]
    static = [_box(-0.2) for _ in gt]
    occ_gt = sequence_occupancy(gt, 32)
    assert motion_iou(occ_gt, occ_gt) == 1.0
    assert motion_iou(sequence_occupancy(static, 32), occ_gt) == 0.0
    half = [_box(x) for x in (-0.2, -0.1, 0.0)]  # moves the right way, half as far
    assert 0.0 < motion_iou(sequence_occupancy(half, 32), occ_gt) < 1.0
    both_static = sequence_occupancy(static, 32)
    assert motion_iou(both_static, both_static) == 1.0  # nothing moves on either side
    scores = evaluate_sequence(static, gt, n_points=2000, iou_res=32) | {}
    assert "motion_iou" not in scores  # only with a prepared motion grid (evaluation does it)


def _train_tiny_module():
    from conftest import load_script

    return load_script("train_tiny")


def test_a_continued_stage_is_one_curve_with_consecutive_steps(tmp_path):
    train_tiny = _train_tiny_module()
    runs = []
    for name, steps in (("first", (4, 9)), ("continued", (4, 9, 12))):
        d = tmp_path / name / "csv" / "version_0"
        d.mkdir(parents=True)
        lines = ["step,train/loss"] + [f"{s},{s / 10}" for s in steps]
        (d / "metrics.csv").write_text("\n".join(lines) + "\n")
        runs.append(tmp_path / name)
    rows, starts = train_tiny.continued_rows(runs)
    assert [r["step"] for r in rows] == [4, 9, 14, 19, 22]
    assert [r["train/loss"] for r in rows] == [0.4, 0.9, 0.4, 0.9, 1.2]
    assert starts == [10]


def test_train_tiny_runs_each_stage_with_its_experiment_and_init(tmp_path, monkeypatch):
    """``--experiments`` picks each stage's experiment (its folder and log are named after it), ``--init`` the
    first stage's start: the shipped model's continuation runs tiny_dit3d_long from the tiny_dit3d export."""
    import subprocess

    train_tiny = _train_tiny_module()
    (tmp_path / "data" / "train").mkdir(parents=True)
    init = tmp_path / "out" / "dit" / "tiny_dit3d" / "export"
    init.mkdir(parents=True)
    (init / "model.safetensors").write_bytes(b"")
    calls: list[list[str]] = []

    def fake_run(cmd, **kwargs):  # a stage that writes its export, except the 4D one
        calls.append(cmd)
        exp = cmd[2].split("=")[1]
        if exp != "tiny_4d_long":
            (tmp_path / "out" / "dit" / exp / "export").mkdir(parents=True)
            (tmp_path / "out" / "dit" / exp / "export" / "model.safetensors").write_bytes(b"")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(train_tiny.subprocess, "run", fake_run)
    monkeypatch.setattr(train_tiny, "plot_curves", lambda *a, **k: None)
    train_tiny.main(
        ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--ship", str(tmp_path / "ship")]
        + ["--only", "dit3d", "4d", "--experiments", "tiny_vae", "tiny_dit3d_long", "tiny_4d_long"]
        + ["--init", str(init)]
    )
    assert [c[2] for c in calls] == ["experiment=tiny_dit3d_long", "experiment=tiny_4d_long"]
    assert f"init_from={init.resolve()}" in calls[0]
    assert f"init_from={tmp_path / 'out' / 'dit' / 'tiny_dit3d_long' / 'export'}" in calls[1]
    assert (tmp_path / "out" / "tiny_dit3d_long.log").is_file() and (init / "model.safetensors").is_file()
    assert not (tmp_path / "ship").exists()  # no 4D export was written: nothing shipped


def test_train_tiny_decoder_stage_ships_the_refined_model_and_keeps_earlier_records(tmp_path, monkeypatch):
    """``--only decoder`` refines the 4D export in ``--out`` (tiny_vae_decoder from tiny_4d_long's export) and
    ships its export; the stages trained elsewhere keep the records the shipped metrics.json had."""
    import json
    import subprocess

    train_tiny = _train_tiny_module()
    (tmp_path / "data" / "train").mkdir(parents=True)
    four_d = tmp_path / "out" / "dit" / "tiny_4d_long" / "export"
    four_d.mkdir(parents=True)
    (four_d / "model.safetensors").write_bytes(b"4d")
    ship = tmp_path / "ship"
    ship.mkdir()
    old = {"stages": {"vae": {"val/iou": 0.75}, "4d": {"val/loss": 0.27}}, "scale_factor": 0.35}
    (ship / "metrics.json").write_text(json.dumps(old))
    calls: list[list[str]] = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        export = tmp_path / "out" / "dit" / cmd[2].split("=")[1] / "export"
        export.mkdir(parents=True)
        (export / "model.safetensors").write_bytes(b"refined")
        (export / "config.yaml").write_text("stage: sculpt4d\n")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(train_tiny.subprocess, "run", fake_run)
    monkeypatch.setattr(train_tiny, "plot_curves", lambda *a, **k: None)
    paths = ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--ship", str(ship)]
    experiments = ["tiny_vae", "tiny_dit3d_long", "tiny_4d_long"]  # the decoder stage keeps its default
    train_tiny.main([*paths, "--only", "decoder", "--experiments", *experiments])
    assert [c[2] for c in calls] == ["experiment=tiny_vae_decoder"]
    assert f"init_from={four_d}" in calls[0]
    assert (ship / "model.safetensors").read_bytes() == b"refined"
    shipped = json.loads((ship / "metrics.json").read_text())
    assert shipped["stages"]["vae"] == {"val/iou": 0.75, "max_steps_bound": None}
    assert shipped["stages"]["4d"]["val/loss"] == 0.27 and shipped["scale_factor"] == 0.35
    assert shipped["experiments"] == ["tiny_vae", "tiny_dit3d_long", "tiny_4d_long", "tiny_vae_decoder"]
    with pytest.raises(SystemExit):  # five experiments for four stages
        train_tiny.main(["--data", str(tmp_path / "data"), "--experiments", "a", "b", "c", "d", "e"])


def test_shipped_checkpoint_samples_with_what_its_experiment_exports(tmp_path):
    """The shipped tiny model's ``inference:`` node is the one ``experiment=tiny_4d_vae_more_2`` writes (configs
    are the source of truth: its noise_share_alpha 0.5, mc_level -1 and noise_scale 0.85 come from the experiment,
    not an edit)."""
    from pathlib import Path

    from conftest import compose_train
    from omegaconf import OmegaConf

    from sculpt4d.inference import SAMPLING_KEYS, InferenceDefaults, inference_node

    cfg = compose_train(["experiment=tiny_4d_vae_more_2"], tmp_path)
    node = inference_node(OmegaConf.to_container(cfg.model, resolve=True), cfg.attention)
    shipped = OmegaConf.load(
        Path(__file__).resolve().parents[1] / "data" / "checkpoints" / "tiny" / "config.yaml"
    )
    defaults = InferenceDefaults.from_config(shipped)  # keys added since it was exported take their defaults
    assert {k: node[k] for k in SAMPLING_KEYS} == {k: getattr(defaults, k) for k in SAMPLING_KEYS}
    assert defaults.noise_share_alpha == node["noise_share_alpha"] == 0.5
    assert defaults.num_steps == node["num_steps"] == 25  # the knee of the steps curve
    assert defaults.mc_level == node["mc_level"] == -1.0
    assert defaults.noise_scale == node["noise_scale"] == 0.85
    assert node["preprocess"] == OmegaConf.to_container(shipped.inference.preprocess)


@pytest.mark.parametrize(
    "experiment, shift, batch, starts_from",
    [
        ("tiny_dit3d", 3.0, 32, "tiny_vae"),  # the 60-minute recipe's 3D stage
        ("tiny_dit3d_uniform", 1.0, 32, "tiny_vae"),  # the shipped chain: uniform, then longer, then shifted
        ("tiny_dit3d_long", 1.0, 32, "tiny_dit3d_uniform"),
        ("tiny_dit3d_shift", 3.0, 32, "tiny_dit3d_long"),
        ("tiny_dit3d_shift_long", 3.0, 32, "tiny_dit3d"),  # the chain shifted from its first 3D stage
        ("tiny_dit3d_vae_more", 3.0, 32, "tiny_dit3d_shift"),  # the shipped 3D stage on the continued VAE
        ("tiny_dit3d_vae_more_2", 3.0, 32, "tiny_dit3d_long"),  # the shifted stage on the VAE passing 0.75
        ("tiny_dit3d_img224", 3.0, 32, "tiny_dit3d_vae_more_2"),  # the shipped 3D stage reading 224-px images
        ("tiny_dit3d_img112", 3.0, 32, "tiny_dit3d_vae_more_2"),  # its control: the same minutes at 112 px
    ],
)
def test_3d_stages_train_with_the_timesteps_their_runs_used(experiment, shift, batch, starts_from, tmp_path):
    """The recipe's 3D stage trains on shifted timesteps; the shipped model's chain, reproduced by its named
    experiments, keeps the uniform timesteps its first two 3D stages were trained with."""
    from conftest import compose_train

    cfg = compose_train([f"experiment={experiment}"], tmp_path)
    assert cfg.lit.timestep_shift == shift and cfg.lit.timestep_sampling == "uniform"
    assert cfg.training.batch_size == batch
    assert cfg.init_from.endswith(f"dit/{starts_from}/export")


def test_vae_more_chain_continues_the_dit_on_the_continued_vae(tmp_path):
    """tiny_dit3d_vae_more keeps the DiT of the shipped 3D stage and swaps in tiny_vae_more's VAE, and the 4D
    stage starts from that adapted 3D export; tiny_4d_vae_swap continues the shipped 4D export on that VAE and
    tiny_4d_vae_swap_more continues its export, which carries that VAE, so nothing is swapped in again, and
    tiny_4d_vae_swap_2 continues it with tiny_vae_more_2's VAE swapped in. All keep
    tiny_4d_long's model (surface level and initial-noise std aside), attention and training node."""
    from conftest import compose_train
    from omegaconf import OmegaConf

    dit3d = compose_train(["experiment=tiny_dit3d_vae_more"], tmp_path)
    assert dit3d.lit.vae_from.endswith("dit/tiny_vae_more/export")
    dit3d_2 = compose_train(["experiment=tiny_dit3d_vae_more_2"], tmp_path)  # the same on the next VAE
    assert dit3d_2.lit.vae_from.endswith("dit/tiny_vae_more_2/export")
    four_d = compose_train(["experiment=tiny_4d_vae_more"], tmp_path)
    assert four_d.init_from.endswith("dit/tiny_dit3d_vae_more/export")
    four_d_2 = compose_train(["experiment=tiny_4d_vae_more_2"], tmp_path)  # its export carries the VAE
    assert four_d_2.init_from.endswith("dit/tiny_dit3d_vae_more_2/export") and four_d_2.lit.vae_from is None
    swap = compose_train(["experiment=tiny_4d_vae_swap"], tmp_path)  # the shipped 4D export on the new VAE
    assert swap.init_from.endswith("dit/tiny_4d_long/export")
    assert swap.lit.vae_from.endswith("dit/tiny_vae_more/export")
    swap_more = compose_train(["experiment=tiny_4d_vae_swap_more"], tmp_path)
    assert swap_more.init_from.endswith("dit/tiny_4d_vae_swap/export") and swap_more.lit.vae_from is None
    assert swap_more.trainer.max_time == "00:00:30:00"
    swap_2 = compose_train(["experiment=tiny_4d_vae_swap_2"], tmp_path)  # the swap again, on the next VAE
    assert swap_2.init_from.endswith("dit/tiny_4d_vae_swap/export")
    assert swap_2.lit.vae_from.endswith("dit/tiny_vae_more_2/export")
    assert swap_2.trainer.max_time == swap.trainer.max_time == "00:00:20:00"
    four_d_long = compose_train(["experiment=tiny_4d_long"], tmp_path)
    for cfg in (four_d, four_d_2, swap, swap_more, swap_2):
        for key in ("model", "attention", "training"):
            node, base = (OmegaConf.to_container(c[key], resolve=True) for c in (cfg, four_d_long))
            if key == "model" and cfg is not four_d:  # meshed at another iso-level
                assert node.pop("mc_level") == -1.0
            if key == "model" and cfg is four_d_2:  # the shipped model also samples at a lower temperature
                assert node.pop("noise_scale") == 0.85
            assert node == base, key


def test_vae_continuations_chain_with_the_vae_recipe(tmp_path):
    """tiny_vae_more continues the chain's tiny_vae export and tiny_vae_more_2 its export, each for 30 minutes
    with tiny_vae_more's recipe (half tiny_vae's rate), which differs from tiny_vae only in rate, budget and start."""
    from conftest import compose_train
    from omegaconf import OmegaConf

    base, more, more_2 = (
        compose_train([f"experiment={e}"], tmp_path) for e in ("tiny_vae", "tiny_vae_more", "tiny_vae_more_2")
    )
    assert more.init_from.endswith("dit/tiny_vae/export")  # the chain's own VAE, not whatever is shipped
    assert more_2.init_from.endswith("dit/tiny_vae_more/export")
    assert more_2.trainer.max_time == more.trainer.max_time == "00:00:30:00"
    assert more_2.training.base_lr == more.training.base_lr == base.training.base_lr / 2
    for key in ("model", "data"):
        assert OmegaConf.to_container(more_2[key], resolve=True) == OmegaConf.to_container(
            base[key], resolve=True
        ), key
    lit, lit_base = (OmegaConf.to_container(c.lit, resolve=True) for c in (more_2, base))
    for node in (lit, lit_base):  # where it starts and the rate (checked above) aside
        del node["init_from"], node["optimizer"]["lr"]
    assert lit == lit_base


# what a GPU recipe stage may change against its CPU stage: scale, precision, budget, where it starts
_GPU_SCALE_KEYS = {
    "training": {"batch_size", "base_lr", "val_every", "ckpt_every", "ema_decay"},
    "trainer": {"max_time", "precision", "val_check_interval"},
    "data": {"num_workers", "val_batch_size", "batch_size"},
    # the training node's values, as the stage module reads them
    "lit": {"ema_decay", "optimizer", "scheduler", "init_from"},
}


@pytest.mark.parametrize(
    "cpu, gpu",
    [("tiny_vae", "tiny_gpu_vae"), ("tiny_dit3d", "tiny_gpu_dit3d"), ("tiny_4d_long", "tiny_gpu_4d")],
)
def test_gpu_recipe_is_the_cpu_recipe_at_another_scale(cpu, gpu, tmp_path):
    """Model, posterior, latent targets, crop, windows, noise sharing and losses are the CPU recipe's; only the
    batch, learning rate, precision, EMA, loaders and time budget change. The 4D stage is compared with
    tiny_4d_long, the shipped model's, so its export samples with the shipped defaults."""
    from conftest import compose_train
    from omegaconf import OmegaConf

    def nodes(experiment: str) -> dict:
        cfg = compose_train([f"experiment={experiment}"], tmp_path)
        keys = ("model", "attention", "stage", "sequence_length", "pc_size", *_GPU_SCALE_KEYS)
        return {
            k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
            for k in keys
        }

    a, b = nodes(cpu), nodes(gpu)
    for key in ("model", "attention", "stage", "sequence_length", "pc_size"):
        assert a[key] == b[key], key
    for key, scale in _GPU_SCALE_KEYS.items():
        assert {k: v for k, v in a[key].items() if k not in scale} == {
            k: v for k, v in b[key].items() if k not in scale
        }, key
