"""The product path: Sculpt4DPipeline + predict on tiny random weights, its exports, bad inputs, checkpoints."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ATTENTION, MICRO
from conftest import micro_components as _components
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from sculpt4d.config import register_resolvers
from sculpt4d.errors import CheckpointError, InputError
from sculpt4d.hub import save_safetensors, save_sharded_bin
from sculpt4d.pipeline import Sculpt4DPipeline

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demos" / "box"
T = MICRO.sequence_length  # frames used by these tests


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """Our export format: config.yaml + model.safetensors (what train.py writes and predict.py loads)."""
    out = tmp_path_factory.mktemp("ckpt")
    save_safetensors(_components().state_dict(), out / "model.safetensors")
    (out / "config.yaml").write_text(OmegaConf.to_yaml({"model": MICRO, "attention": ATTENTION}))
    return out


def _cfg(tmp_path: Path, *overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "predict",
            overrides=[f"paths.root_dir={ROOT}", f"paths.log_dir={tmp_path}", *overrides],
            return_hydra_config=True,
        )


def _run(cfg):
    from hydra.core.hydra_config import HydraConfig

    from sculpt4d.predict import run_predict

    HydraConfig.instance().set_config(cfg)
    return run_predict(cfg)


def test_pipeline_outputs_one_mesh_per_frame_deterministically(exported):
    pipe = Sculpt4DPipeline.from_pretrained(exported)
    frames = sorted(DEMO.glob("*.png"))[:T]
    a = pipe(frames, num_steps=3, seed=1, octree_resolution=20, progress=False)
    b = pipe(frames, num_steps=3, seed=1, octree_resolution=20, progress=False)
    assert len(a.meshes) == T and a.latents.shape == (T, 32, 8)
    assert torch.equal(a.latents, b.latents)
    c = pipe(frames, num_steps=3, seed=2, octree_resolution=20, progress=False)
    assert not torch.equal(a.latents, c.latents)


@pytest.mark.parametrize("alpha", [1.0, 0.0])
def test_per_frame_batch_equals_the_model_run_on_each_frame_alone(exported, alpha):
    # per_frame=True samples the T frames as one batch of T=1 sequences: each must equal the model run on its
    # frame alone from that frame's initial noise (the loop it replaced), up to float rounding
    from sculpt4d.diffusion import EulerSampler, shared_noise

    pipe = Sculpt4DPipeline.from_pretrained(exported)
    cond = pipe.encode_condition(pipe.load_images(sorted(DEMO.glob("*.png"))[:T]))  # [1, T, L, D]
    batched = pipe.sample_latents(cond, 4, 3.0, alpha, seed=5, per_frame=True, progress=False)  # [1, T, N, C]
    vae, model = pipe.components.vae, pipe.components.model
    noise = shared_noise((1, T, vae.num_latents, vae.embed_dim), alpha, torch.Generator().manual_seed(5))
    for t in range(T):
        alone = EulerSampler(4).sample(
            model,
            noise[:, t : t + 1],
            cond[:, t : t + 1],
            torch.zeros_like(cond[:, t : t + 1]),
            3.0,
            progress=False,
        )
        torch.testing.assert_close(batched[:, t : t + 1], alone, atol=1e-5, rtol=1e-5)
    if alpha == 0.0:
        assert not torch.allclose(batched[:, 0], batched[:, 1])  # own noise per frame


def test_low_vram_samples_the_same_latents_and_leaves_the_model_as_it_was(exported, tmp_path):
    # low_vram: the CFG pair as two passes and the DiT's MLPs in token chunks (chunk size lowered here so the
    # micro model is really chunked); the latents equal the default path's up to float rounding
    import sculpt4d.pipeline as pipeline_module

    frames = sorted(DEMO.glob("*.png"))[:T]
    pipe = Sculpt4DPipeline.from_pretrained(exported)
    cond = pipe.encode_condition(pipe.load_images(frames))
    ref = pipe.sample_latents(cond, 4, 3.0, 0.5, seed=3, progress=False)
    low = Sculpt4DPipeline.from_pretrained(exported, low_vram=True)
    backbone = low.components.model.backbone
    seen = []
    hook = backbone.blocks[0].register_forward_pre_hook(
        lambda mod, args: seen.append((args[0].shape[0], mod.ff_chunk_tokens))
    )
    old = pipeline_module.LOW_VRAM_FF_TOKENS
    pipeline_module.LOW_VRAM_FF_TOKENS = 5
    try:
        out = low.sample_latents(cond, 4, 3.0, 0.5, seed=3, progress=False)
    finally:
        pipeline_module.LOW_VRAM_FF_TOKENS = old
        hook.remove()
    assert {s for s in seen} == {(T, 5)}  # B=1 per pass (T frames), chunked MLPs
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert all(blk.ff_chunk_tokens is None for blk in backbone.blocks)  # reset after sampling
    assert pipe.low_vram is False and low.with_attention("full").low_vram is True
    # predict.py: the config key reaches the pipeline
    from sculpt4d.predict import build_pipeline

    assert build_pipeline(_cfg(tmp_path, f"ckpt={exported}", "low_vram=true", "device=cpu")).low_vram


def test_first_frame_repeat_reusing_per_frame_equals_running_it_alone(exported, tmp_path):
    # evaluate takes first_frame_repeat from the per_frame run of the same sequence: frame 0 sampled in the
    # per-frame batch must give the mesh that sampling frame 0 alone gives
    from sculpt4d.evaluate import run_method
    from sculpt4d.predict import with_checkpoint_defaults

    pipe = Sculpt4DPipeline.from_pretrained(exported)
    # fp32 decoding: the claim is about sampling; bf16 decoder queries (decode_dtype auto on a CPU with AMX) can
    # round the 1e-5 latent differences of a batch to 7e-4 in a vertex
    cfg = _cfg(
        tmp_path,
        "num_steps=3",
        "octree_resolution=24",
        "progress=false",
        "decode_dtype=fp32",
        f"ckpt={exported}",
    )
    cfg = with_checkpoint_defaults(cfg, pipe.inference)
    frames = sorted(DEMO.glob("*.png"))[:T]
    pf_meshes, pf_images, pf_seconds, _ = run_method(pipe, frames, "per_frame", cfg, {"seed": 2})
    alone, _, _, flops = run_method(pipe, frames, "first_frame_repeat", cfg, {"seed": 2})
    reused, images, seconds, flops_reused = run_method(
        pipe, frames, "first_frame_repeat", cfg, {"seed": 2}, per_frame_run=(pf_meshes, pf_images, pf_seconds)
    )
    assert len(reused) == len(alone) == T and flops_reused == flops and seconds == pf_seconds / T
    assert images is pf_images
    for a, b in zip(reused, alone, strict=True):
        assert a.vertices.shape == b.vertices.shape and np.abs(a.vertices - b.vertices).max() < 1e-4
        assert np.array_equal(a.faces, b.faces)


def _decode_option_seen(pipe, key: str, option: str, checkpoint_value, call_value) -> list:
    """What ``latents_to_mesh`` receives as ``key`` from :meth:`decode` with the checkpoint's value, with the
    checkpoint's ``option`` overridden to ``checkpoint_value``, and with ``call_value`` passed to the call."""
    z = torch.zeros(1, 1, pipe.components.vae.num_latents, pipe.components.vae.embed_dim)
    seen = []
    original = pipe.components.vae.latents_to_mesh

    def spy(*args, **kwargs):
        seen.append(kwargs[key])
        return original(*args, **kwargs)

    pipe.components.vae.latents_to_mesh = spy
    pipe.decode(z, octree_resolution=16)
    pipe.inference = pipe.inference.override(**{option: checkpoint_value})
    pipe.decode(z, octree_resolution=16)
    pipe.decode(z, octree_resolution=16, **{key: call_value})
    return seen


def test_decode_min_resolution_comes_from_the_checkpoint(exported, tmp_path):
    # the shipped tiny export decodes 24 -> 48 -> 96; an export without the key gets the reference's 63
    from sculpt4d.inference import InferenceDefaults

    shipped = InferenceDefaults.from_config(
        OmegaConf.load(ROOT / "data" / "checkpoints" / "tiny" / "config.yaml")
    )
    assert (shipped.octree_resolution, shipped.decode_min_resolution) == (96, 24)
    pipe = Sculpt4DPipeline.from_pretrained(exported)
    assert pipe.inference.decode_min_resolution == 63
    assert _decode_option_seen(pipe, "min_resolution", "decode_min_resolution", 4, 8) == [63, 4, 8]


def test_mc_level_comes_from_the_checkpoint_unless_overridden(exported, tmp_path):
    # the iso-level travels like decode_min_resolution: checkpoint's inference node < pipeline/predict override
    from sculpt4d.inference import InferenceDefaults
    from sculpt4d.predict import sampling_kwargs

    node = OmegaConf.load(ROOT / "data" / "checkpoints" / "tiny" / "config.yaml")
    node.inference.mc_level = -1.5
    assert InferenceDefaults.from_config(node).mc_level == -1.5
    pipe = Sculpt4DPipeline.from_pretrained(exported)
    assert pipe.inference.mc_level == 0.0  # an export without the key: the reference's probability 0.5
    assert _decode_option_seen(pipe, "mc_level", "mc_level", -1.5, 2.0) == [0.0, -1.5, 2.0]
    assert sampling_kwargs(_cfg(tmp_path))["mc_level"] is None  # null: the checkpoint's
    assert sampling_kwargs(_cfg(tmp_path, "mc_level=-1"))["mc_level"] == -1.0
    with pytest.raises(InputError, match=r"mc_level=nan must be a finite number"):
        sampling_kwargs(_cfg(tmp_path, "mc_level=nan"))


class _ZeroVelocity(torch.nn.Module):
    """A velocity model that returns zeros: the sampler then returns its initial noise unchanged."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def _initial_noise_pipeline(exported: Path) -> tuple[Sculpt4DPipeline, torch.Tensor]:
    """The exported pipeline with a zero-velocity model, and the demo's condition ``[1, T, L, D]``."""
    pipe = Sculpt4DPipeline.from_pretrained(exported)
    cond = pipe.encode_condition(pipe.load_images(sorted(DEMO.glob("*.png"))[:T]))
    pipe.components.model = _ZeroVelocity()
    return pipe, cond


def test_noise_share_alpha_controls_initial_noise(exported):
    pipe, cond = _initial_noise_pipeline(exported)
    x_shared = pipe.sample_latents(cond, num_steps=2, noise_share_alpha=1.0, progress=False)
    x_indep = pipe.sample_latents(cond, num_steps=2, noise_share_alpha=0.0, progress=False)
    assert torch.equal(x_shared[:, 0], x_shared[:, 1])
    assert not torch.allclose(x_indep[:, 0], x_indep[:, 1])


def test_noise_scale_is_the_initial_noise_std_and_defaults_to_the_checkpoint(exported, tmp_path):
    from sculpt4d.predict import sampling_kwargs

    pipe, cond = _initial_noise_pipeline(exported)
    run = lambda s: pipe.sample_latents(cond, num_steps=2, seed=3, noise_scale=s, progress=False)  # noqa: E731
    assert pipe.inference.noise_scale == 1.0  # an export without the key samples as trained
    torch.testing.assert_close(run(0.5), 0.5 * run(None))
    assert run(0.5).std() == pytest.approx(0.5, rel=0.1)
    pipe.inference.noise_scale = 0.25  # what an export's inference: node sets
    torch.testing.assert_close(run(None), 0.25 * run(1.0))
    assert sampling_kwargs(_cfg(tmp_path))["noise_scale"] is None
    with pytest.raises(InputError, match=r"noise_scale=1.5 must lie in \[0, 1\]"):
        sampling_kwargs(_cfg(tmp_path, "noise_scale=1.5"))


class _RecordingVelocity(_ZeroVelocity):
    """A zero-velocity model that records the times it is called at."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        self.times.append(float(t[0]))
        return super().forward(x, t, c)


def test_sampling_shift_spaces_the_steps_and_defaults_to_the_checkpoint(exported, tmp_path):
    from sculpt4d.diffusion import EulerSampler
    from sculpt4d.predict import sampling_kwargs

    pipe, cond = _initial_noise_pipeline(exported)
    pipe.components.model = model = _RecordingVelocity()

    def times(shift: float | None) -> list[float]:
        model.times.clear()
        pipe.sample_latents(cond, num_steps=6, guidance_scale=-1.0, sampling_shift=shift, progress=False)
        return list(model.times)

    expected = lambda s: (EulerSampler(6, shift=s).timesteps() / 1000).tolist()  # noqa: E731
    assert pipe.inference.sampling_shift == 1.0  # an export without the key: upstream's even steps
    assert times(None) == pytest.approx(expected(1.0))
    assert times(3.0) == pytest.approx(expected(3.0)) and times(3.0) != pytest.approx(expected(1.0))
    pipe.inference.sampling_shift = 2.0  # what an export's inference: node sets
    assert times(None) == pytest.approx(expected(2.0))
    assert sampling_kwargs(_cfg(tmp_path))["sampling_shift"] is None
    assert sampling_kwargs(_cfg(tmp_path, "sampling_shift=2.5"))["sampling_shift"] == 2.5
    with pytest.raises(InputError, match=r"sampling_shift=0 must be a number > 0"):
        sampling_kwargs(_cfg(tmp_path, "sampling_shift=0"))


def test_guidance_until_defaults_to_the_checkpoint_and_is_validated(exported, tmp_path):
    from sculpt4d.predict import sampling_kwargs

    pipe, cond = _initial_noise_pipeline(exported)
    pipe.components.model = model = _RecordingVelocity()
    batches: list[int] = []
    model.register_forward_hook(lambda m, args, out: batches.append(args[0].shape[0]))

    def pairs(until: float | None) -> list[bool]:  # per step: did it run the [cond; uncond] pair?
        batches.clear()
        pipe.sample_latents(cond, num_steps=6, guidance_scale=5.0, guidance_until=until, progress=False)
        return [b == 2 * cond.shape[0] for b in batches]

    assert pipe.inference.guidance_until == 1.0  # an export without the key: CFG at every step, as upstream
    assert pairs(None) == [True] * 6
    assert pairs(0.5) == [True, True, True, False, False, False]  # time points 0, 0.2, ..., 1
    pipe.inference.guidance_until = 0.3  # what an export's inference: node sets
    assert pairs(None) == [True, True, False, False, False, False]
    assert sampling_kwargs(_cfg(tmp_path))["guidance_until"] is None
    assert sampling_kwargs(_cfg(tmp_path, "guidance_until=0.6"))["guidance_until"] == 0.6
    with pytest.raises(InputError, match=r"guidance_until=1.5 must lie in \[0, 1\]"):
        sampling_kwargs(_cfg(tmp_path, "guidance_until=1.5"))


def test_num_samples_draws_k_sequences_and_decodes_their_mean_occupancy(exported, tmp_path):
    from sculpt4d.models.vae.model import mean_occupancy_logit
    from sculpt4d.predict import sampling_kwargs

    pipe, cond = _initial_noise_pipeline(exported)  # zero velocity: the samples are their initial noises
    one = pipe.sample_latents(cond, num_steps=2, seed=3, progress=False)
    three = pipe.sample_latents(cond, num_steps=2, seed=3, num_samples=3, progress=False)
    assert one.shape[0] == 1 and three.shape == (3, *one.shape[1:])
    assert torch.equal(three[:1], one) and not torch.allclose(
        three[1], three[2]
    )  # the first is the K = 1 sample
    per_frame = pipe.sample_latents(cond, num_steps=2, seed=3, num_samples=3, per_frame=True, progress=False)
    assert torch.equal(per_frame, three)  # the same noises, each frame sampled alone
    pipe.inference.num_samples = 2  # what an export's inference: node sets
    assert pipe.sample_latents(cond, num_steps=2, seed=3, progress=False).shape[0] == 2

    vae = pipe.components.vae
    z = vae.from_dit(three[:, 0].float())  # [3, N, C]: frame 0 of each sample
    dense = lambda zz, ens: vae._volumes(zz, 1.01, 16, 4096, False, 0.0, ensemble=ens)  # noqa: E731
    singles = torch.stack([v.logits for v in dense(z, False)])  # [3, 17, 17, 17]
    (mean,) = dense(z, True)
    p = torch.sigmoid(singles).mean(0)
    torch.testing.assert_close(torch.sigmoid(mean.logits), p, atol=1e-5, rtol=0)
    torch.testing.assert_close(mean_occupancy_logit(singles[:1]), singles[0], atol=0, rtol=0)
    assert sampling_kwargs(_cfg(tmp_path))["num_samples"] is None
    with pytest.raises(InputError, match=r"num_samples=0 must be >= 1"):
        sampling_kwargs(_cfg(tmp_path, "num_samples=0"))


def test_predict_writes_every_export(exported, tmp_path):
    import pygltflib
    import trimesh

    out_dir = tmp_path / "box"
    cfg = _cfg(
        tmp_path,
        f"ckpt={exported}",
        f"input={DEMO}",
        f"output_dir={out_dir}",
        f"sequence_length={T}",
        "num_steps=2",
        "octree_resolution=20",
        "progress=false",
    )
    assert _run(cfg) == out_dir
    objs = sorted(out_dir.glob("frame_*.obj"))
    assert [p.name for p in objs] == [f"frame_{t:04d}.obj" for t in range(T)]
    gltf = pygltflib.GLTF2().load(str(out_dir / "sequence.glb"))
    assert len(gltf.animations) == 1 and len(gltf.animations[0].channels) == T
    assert len(trimesh.load(out_dir / "sequence.glb").geometry) >= 1
    for name in ("strip.gif", "strip.png", "prediction.json"):
        assert (out_dir / name).stat().st_size > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def _bad_input(tmp_path: Path, kind: str) -> Path:
    folder = tmp_path / kind
    folder.mkdir()
    if kind in ("few", "unreadable"):
        for t in range(2 if kind == "few" else T):
            shutil.copy(DEMO / f"frame_{t:04d}.png", folder / f"frame_{t:04d}.png")
    if kind == "unreadable":
        (folder / f"frame_{0:04d}.png").write_bytes(b"not a png")
    return folder


@pytest.mark.parametrize("kind,message", [
    ("missing", "does not exist.*demos/box"),
    ("empty", "no images found"),
    ("few", "2 image.*sequence_length=3"),
    ("unreadable", "frame_0000.png"),
])  # fmt: skip
def test_bad_inputs_fail_clearly_and_write_nothing(exported, tmp_path, kind, message):
    folder = _bad_input(tmp_path, kind) if kind != "missing" else tmp_path / "nope"
    out_dir = tmp_path / "out"
    cfg = _cfg(
        tmp_path,
        f"ckpt={exported}",
        f"input={folder}",
        f"output_dir={out_dir}",
        f"sequence_length={T}",
        "frame_stride=1",
        "num_steps=2",
        "octree_resolution=20",
        "progress=false",
    )
    with pytest.raises(InputError, match=message):
        _run(cfg)
    assert not out_dir.exists()


def test_predict_cli_errors_are_one_line(tmp_path):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    missing = subprocess.run(
        [sys.executable, "predict.py", "input=demos/nope", f"paths.log_dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert missing.returncode == 2
    assert "demos/box" in missing.stderr and "Traceback" not in missing.stderr
    unknown = subprocess.run(
        [sys.executable, "predict.py", "num_stepz=3", f"paths.log_dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert unknown.returncode != 0 and "num_stepz" in unknown.stderr
    assert not list(tmp_path.glob("predict/*/frame_*.obj"))


def _upstream_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our flat keys -> the upstream Lightning layout (first_stage_model / model / cond_stage_model)."""
    out = {}
    for k, v in sd.items():
        if k.startswith("vae."):
            out["first_stage_model." + k[4:]] = v
        elif k.startswith("conditioner.dinov2."):
            out["cond_stage_model.main_image_encoder.model." + k[len("conditioner.dinov2.") :]] = v
        else:
            out[k] = v
    return out


def test_sharded_release_checkpoint_loads_through_the_same_code(tmp_path):
    """A tiny random checkpoint in the Sculpt4D release format (sharded .bin + index) loads exactly."""
    ref = _components(seed=3)
    release = tmp_path / "blockmask_bf16"
    save_sharded_bin(_upstream_keys(ref.state_dict()), release, max_shard_size=20_000)
    shards = sorted(release.glob("pytorch_model-*.bin"))
    assert len(shards) > 1 and (release / "pytorch_model.bin.index.json").is_file()
    pipe = Sculpt4DPipeline.from_pretrained(release, model_cfg=MICRO, attention_cfg=ATTENTION)
    loaded = pipe.components.state_dict()
    for k, v in ref.state_dict().items():
        assert torch.equal(loaded[k], v), k
    frames = sorted(DEMO.glob("*.png"))[:T]
    ref_pipe = Sculpt4DPipeline(ref, preprocess=dict(MICRO.preprocess), sequence_length=T)
    a = ref_pipe.sample_latents(
        ref_pipe.encode_condition(ref_pipe.load_images(frames)), num_steps=3, progress=False
    )
    b = pipe.sample_latents(pipe.encode_condition(pipe.load_images(frames)), num_steps=3, progress=False)
    assert torch.equal(a, b)


def test_truncated_checkpoint_names_the_file(exported, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(exported, bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        Sculpt4DPipeline.from_pretrained(bad)


def test_rgb_on_plain_background_is_segmented(exported, tmp_path):
    """An RGB frame on white gives the same model input as its RGBA original (alpha = object mask)."""
    pipe = Sculpt4DPipeline.from_pretrained(exported)
    rgba = Image.open(DEMO.parent / "angle" / "frame_0000.png").convert("RGBA")  # object clear of the border
    rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    a, b = pipe.load_images([rgba]), pipe.load_images([rgb])
    assert float((a - b).abs().mean()) < 0.05
    assert np.isfinite(b.numpy()).all()


def test_with_attention_keeps_weights_and_changes_only_the_mask(exported):
    pipe = Sculpt4DPipeline.from_pretrained(exported)
    spatial = pipe.with_attention("spatial")
    assert spatial.components.model.variant == "spatial" and spatial.components.model.block_size == 8
    assert torch.equal(
        spatial.components.model.adapter.frame_embed, pipe.components.model.adapter.frame_embed
    )
    cond = pipe.encode_condition(pipe.load_images(sorted(DEMO.glob("*.png"))[:T]))
    a = pipe.sample_latents(cond, num_steps=3, progress=False)
    b = spatial.sample_latents(cond, num_steps=3, progress=False)
    assert not torch.allclose(a, b)  # frames exchange information only under the joint mask


def test_vae_ckpt_swaps_in_another_vae_with_its_statistics_and_keeps_the_dit(exported, tmp_path):
    """``vae_ckpt=<export>`` (Python: ``vae_from``): another export's VAE and latent statistics under this
    checkpoint's DiT and image encoder, e.g. to score a VAE trained on after the DiT with
    ``methods=[vae_reconstruction]``; an export without statistics is refused by name."""
    from sculpt4d.predict import build_pipeline

    other = _components(seed=1).vae
    stats = {"scale_factor": 0.5, "latent_mean": [0.1] * 8, "latent_std": [2.0] * 8}
    vae_dir = tmp_path / "vae"
    vae_dir.mkdir()
    save_safetensors({f"vae.{k}": v for k, v in other.state_dict().items()}, vae_dir / "model.safetensors")
    vae_node = {**OmegaConf.to_container(MICRO.vae), **stats}
    (vae_dir / "config.yaml").write_text(OmegaConf.to_yaml({"model": {"vae": vae_node}}))

    base = Sculpt4DPipeline.from_pretrained(exported)
    pipe = build_pipeline(_cfg(tmp_path, f"ckpt={exported}", f"vae_ckpt={vae_dir}", "device=cpu"))
    vae = pipe.components.vae
    assert any(not torch.equal(v, base.components.vae.state_dict()[k]) for k, v in other.state_dict().items())
    for k, v in other.state_dict().items():
        assert torch.equal(vae.state_dict()[k], v), k
    assert vae.scale_factor == 0.5 and list(vae.latent_mean) == stats["latent_mean"]
    assert list(vae.latent_std) == stats["latent_std"]
    for name in ("model", "conditioner"):
        for k, v in getattr(base.components, name).state_dict().items():
            assert torch.equal(getattr(pipe.components, name).state_dict()[k], v), k

    # bare weights: the DiT's latents would be scaled with the wrong statistics
    (vae_dir / "config.yaml").unlink()
    with pytest.raises(CheckpointError, match=r"vae.*no latent statistics"):
        Sculpt4DPipeline.from_pretrained(exported, vae_from=vae_dir)
    with pytest.raises(CheckpointError, match="nope"):
        Sculpt4DPipeline.from_pretrained(exported, vae_from=tmp_path / "nope")


def test_evaluate_end_to_end_on_a_fixture(exported, tmp_path, tiny_dataset):
    import json

    from hydra.core.hydra_config import HydraConfig

    from sculpt4d.evaluate import run_evaluate

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", return_hydra_config=True, overrides=[
            f"paths.root_dir={ROOT}", f"paths.log_dir={tmp_path}", f"ckpt={exported}", f"benchmark={tiny_dataset}",
            f"output_dir={tmp_path / 'eval'}", f"sequence_length={T}", "max_objects=2", "num_steps=2",
            "octree_resolution=20", "metrics.n_points=2000", "metrics.iou_resolution=24",
            'variants=[spatial,rope,"blockmask:anchor=false:noise_share_alpha=0"]', "gallery.objects=1",
            "gallery.methods=[4d,first_frame_repeat]", "gallery.size=32",
        ])  # fmt: skip
    HydraConfig.instance().set_config(cfg)
    summary = run_evaluate(cfg)
    no_anchor = "variant:blockmask:anchor=false:noise_share_alpha=0"
    references = {"vae_reconstruction", "oracle_static"}
    assert (
        set(summary)
        == {
            "4d",
            "per_frame",
            "first_frame_repeat",
            "variant:spatial",
            "variant:rope",
            no_anchor,
        }
        | references
    )
    for method, row in summary.items():
        assert row["sequences"] == 2 and 0.0 <= row["iou"] <= 1.0 and row["chamfer"] >= 0.0
        assert 0.0 <= row["motion_iou"] <= 1.0
        assert row["memory_mb"] > 0 and (method in references or (row["seconds"] > 0 and row["tflops"] > 0))
    # the reference rows: the ground truth's own frame 0 repeated is exact there and never moves
    assert summary["oracle_static"]["motion_iou"] == 0.0 and summary["oracle_static"]["tflops"] == 0.0
    assert summary["oracle_static"]["chamfer"] < summary["4d"]["chamfer"]
    # compute: the frame-diagonal mask < blockmask without anchor < blockmask; per frame = T runs at T=1
    assert summary["variant:spatial"]["tflops"] < summary[no_anchor]["tflops"] < summary["4d"]["tflops"]
    assert summary["4d"]["tflops"] < summary["variant:rope"]["tflops"]  # rope: dense joint attention
    assert summary["first_frame_repeat"]["tflops"] == pytest.approx(summary["per_frame"]["tflops"] / T)
    saved = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert saved["objects"] == 2 and saved["methods"]["4d"]["chamfer"] == pytest.approx(
        summary["4d"]["chamfer"]
    )
    assert saved["settings"]["metrics"] == {"n_points": 2000, "iou_resolution": 24, "fscore_tau": 0.05}
    assert saved["settings"]["num_steps"] == 2 and saved["wall_seconds"] > 0
    assert saved["settings"]["mc_level"] == 0.0  # the checkpoint's, recorded with the scores
    assert saved["settings"]["noise_scale"] == 1.0 and saved["settings"]["sampling_shift"] == 1.0
    assert len((tmp_path / "eval" / "per_sequence.csv").read_text().strip().splitlines()) == 1 + 2 * 8
    assert set(saved["categories"]["obj"]) == set(summary)  # fixture objects obj_000.. form one category
    from PIL import Image

    gallery = Image.open(
        tmp_path / "eval" / "gallery.png"
    )  # input, ground truth, 4d, first_frame_repeat rows
    assert gallery.height == 4 * 32 and gallery.width > T * 32


def test_evaluate_multirun_sweep_keeps_one_summary_per_job(exported, tmp_path, tiny_dataset):
    """`python -m sculpt4d.evaluate -m ...` as typed: each sweep job scores its variant into its own folder."""
    import json

    cmd = [sys.executable, "-m", "sculpt4d.evaluate", "-m", "variants=[full],[temporal]", "methods=[4d]",
           f"ckpt={exported}", f"benchmark={tiny_dataset}", f"sequence_length={T}", "max_objects=1", "num_steps=2",
           "octree_resolution=16", "metrics.n_points=500", "metrics.iou_resolution=16", "gallery.objects=0",
           f"paths.root_dir={ROOT}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]  # fmt: skip
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    jobs = [json.loads((tmp_path / "sweep" / str(n) / "summary.json").read_text()) for n in (0, 1)]
    for job, variant in zip(jobs, ["full", "temporal"], strict=True):
        assert f"variants=[{variant}]" in job["overrides"]
        assert set(job["methods"]) == {"4d", f"variant:{variant}"}
    assert jobs[0]["methods"]["variant:full"]["tflops"] > jobs[1]["methods"]["variant:temporal"]["tflops"]


@pytest.mark.parametrize(
    "override,message",
    [("num_steps=1", r"num_steps=1 must be >= 2"), ("noise_share_alpha=1.5", r"noise_share_alpha=1.5 must lie"),
     ("octree_resolution=4", r"octree_resolution=4 must be >= 8"),
     ("decode_min_resolution=1", r"decode_min_resolution=1 must be >= 2")],
)  # fmt: skip
def test_out_of_range_sampling_options_name_the_key(tmp_path, override, message):
    from sculpt4d.predict import sampling_kwargs

    assert sampling_kwargs(_cfg(tmp_path))["num_steps"] is None  # null: the checkpoint's
    assert (
        sampling_kwargs(_cfg(tmp_path))["min_resolution"] is None
    )  # decode_min_resolution: the checkpoint's
    assert sampling_kwargs(_cfg(tmp_path, "decode_min_resolution=48"))["min_resolution"] == 48
    with pytest.raises(InputError, match=message):
        sampling_kwargs(_cfg(tmp_path, override))


def test_parse_variant_specs():
    from sculpt4d.errors import InputError
    from sculpt4d.evaluate import parse_variant

    assert parse_variant("full") == ("full", {}, {})
    assert parse_variant("blockmask:anchor=false:decay=0.5:noise_share_alpha=0") == (
        "blockmask",
        {"anchor": False, "decay": 0.5},
        {"noise_share_alpha": 0},
    )
    assert parse_variant("blockmask:num_samples=4:guidance_until=0.5:mc_level=-1.5") == (
        "blockmask",
        {},
        {"num_samples": 4, "guidance_until": 0.5, "mc_level": -1.5},
    )
    with pytest.raises(InputError, match="not key=value"):
        parse_variant("blockmask:anchor")


def test_list_frames_takes_every_kth_frame_and_says_what_is_missing(tmp_path):
    from sculpt4d.errors import InputError
    from sculpt4d.pipeline import list_frames

    for t in range(10):
        (tmp_path / f"frame_{t:04d}.png").write_bytes(b"")
    assert [p.name for p in list_frames(tmp_path, 3, stride=4)] == [
        "frame_0000.png",
        "frame_0004.png",
        "frame_0008.png",
    ]
    assert len(list_frames(tmp_path, 10)) == 10
    with pytest.raises(
        InputError, match=r"10 image\(s\) found but the model needs 13 frames.*frame_stride=3"
    ):
        list_frames(tmp_path, 4, stride=4)


def test_attention_backend_override(tmp_path, exported):
    """``attention_backend`` swaps the kernel of the checkpoint's mask; the latents agree to float rounding."""
    from sculpt4d.predict import build_pipeline

    frames = sorted(DEMO.glob("*.png"))[:T]
    out = {}
    for backend in ("dense", "gather"):
        cfg = _cfg(tmp_path, f"ckpt={exported}", f"attention_backend={backend}", "device=cpu")
        pipe = build_pipeline(cfg)
        assert pipe.components.model.backend == backend
        out[backend] = pipe(frames, num_steps=2, seed=1, octree_resolution=16, progress=False).latents
    torch.testing.assert_close(out["gather"], out["dense"], atol=1e-4, rtol=1e-4)
    with pytest.raises(InputError, match="attention_backend=triton"):
        build_pipeline(_cfg(tmp_path, f"ckpt={exported}", "attention_backend=triton"))


def test_predict_benchmark_reads_the_checkpoint_defaults(tmp_path):
    """``benchmarks/predict.py`` runs the real job with the predict config's null keys filled from the checkpoint
    (a null ``num_steps`` once crashed it) and writes one row per option with its step count."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable,
        "benchmarks/predict.py",
        "--quick",
        "--random-weights",
        "--rows",
        "base",
        "--json",
        str(out),
    ]
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["row"] for r in rows] == ["base"] and rows[0]["steps"] == 2 and rows[0]["total_s"] > 0


def test_decode_dtype_auto_follows_the_hardware(monkeypatch) -> None:
    from sculpt4d.errors import InputError
    from sculpt4d.pipeline import resolve_decode_dtype

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_decode_dtype("fp32", cpu) == torch.float32
    assert resolve_decode_dtype("bf16", cpu) == torch.bfloat16
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    for native, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda native=native: native)
        assert resolve_decode_dtype("auto", cpu) == expected  # emulated bf16 would be slower: fp32
        assert resolve_decode_dtype("auto", cuda) == torch.bfloat16
    with pytest.raises(InputError, match="decode_dtype must be auto, fp32 or bf16"):
        resolve_decode_dtype("fp16", cpu)


def test_predict_demos_runs_each_seed_into_its_own_folder_and_stacks_the_strips(exported, tmp_path):
    """`scripts/predict_demos.py --seeds`: one predict.py run per seed, one labelled strip each in the picture."""
    import json
    import runpy

    main = runpy.run_path(str(ROOT / "scripts" / "predict_demos.py"))["main"]
    picture = tmp_path / "seeds.png"
    args = ["--demos", "box", "--seeds", "3", "5", "--out", str(tmp_path / "out"), "--picture", str(picture),
            f"ckpt={exported}", f"sequence_length={T}", "num_steps=2", "octree_resolution=16"]  # fmt: skip
    assert main(args) == 0
    strips = [tmp_path / "out" / "box" / f"seed_{s}" / "strip.png" for s in (3, 5)]
    seeds = [json.loads((p.parent / "prediction.json").read_text())["config"]["seed"] for p in strips]
    assert seeds == [3, 5]
    heights = [Image.open(p).height + 18 for p in strips]  # each strip under its 18-pixel label
    assert Image.open(picture).height == sum(heights)
    assert not list(tmp_path.glob("*.tmp.png"))
