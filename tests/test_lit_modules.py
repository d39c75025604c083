"""LightningModules on micro configs: what one step trains, loss goes down, EMA, export round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import fit_module
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch import Callback
from omegaconf import OmegaConf


def _fit(cfg, steps: int, callbacks=()) -> tuple[object, object]:
    module = instantiate(cfg.lit, _recursive_=False)
    return fit_module(cfg, module, steps, gradient_clip_val=1.0, callbacks=list(callbacks))


def _changed(before: dict[str, torch.Tensor], module) -> set[str]:
    after = dict(module.named_parameters())
    return {n for n, p in before.items() if not torch.equal(p, after[n].detach())}


def _snapshot(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def test_vae_step_trains_everything(train_cfg) -> None:
    cfg = train_cfg("vae")
    module = instantiate(cfg.lit, _recursive_=False)
    before = _snapshot(module)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable == set(before)  # VAE stage: every parameter trains
    _, trainer = fit_module(cfg, module, 1)
    changed = _changed(before, module)
    assert changed == trainable
    assert int(module.ema.num_updates) == 1


@pytest.mark.parametrize("train_conditioner", [True, False])
def test_dit3d_step_trains_dit_and_optionally_conditioner(train_cfg, train_conditioner: bool) -> None:
    cfg = train_cfg("dit3d", f"lit.train_conditioner={train_conditioner}")
    module = instantiate(cfg.lit, _recursive_=False)
    before = _snapshot(module)
    fit_module(cfg, module, 1)
    changed = _changed(before, module)
    assert not any(n.startswith("vae.") for n in changed)  # frozen VAE untouched
    assert any(n.startswith("model.") for n in changed)
    assert any(n.startswith("conditioner.") for n in changed) == train_conditioner
    model_params = {n for n in before if n.startswith("model.")}
    assert len(changed & model_params) > 0.9 * len(model_params)


def test_dit3d_readout_trains_the_conditioner_on_occupancy_and_is_not_exported(
    train_cfg, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    cfg = train_cfg(
        "dit3d",
        "lit.train_conditioner=true",
        "lit.readout_weight=2.0",
        "lit.readout_points=64",
        "data.load_volume=true",
    )
    module = instantiate(cfg.lit, _recursive_=False)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    cond = module.encode_condition(batch)  # [B, L, D]
    aux = module.auxiliary_terms(batch, cond, torch.Generator().manual_seed(0))
    assert set(aux) == {"readout_bce", "readout_iou"} and aux["readout_bce"] > 0
    terms = {"loss": torch.tensor(0.5), **aux}
    assert torch.allclose(module.objective(terms), 0.5 + 2.0 * aux["readout_bce"])
    # the read-out's gradient reaches the encoder's first layer (the patch embedding)
    aux["readout_bce"].backward()
    grads = {n: p.grad for n, p in module.conditioner.named_parameters() if "patch_embeddings" in n}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())
    before = _snapshot(module)
    fit_module(cfg, module, 1)
    assert any(n.startswith("readout.") for n in _changed(before, module))
    weights = load_file(str(module.export_checkpoint(tmp_path / "export") / "model.safetensors"))
    assert weights and not any(k.startswith("readout") for k in weights)


@pytest.mark.parametrize("overrides", [("lit.readout_weight=1.0",), ("lit.readout_weight=-1.0",)])
def test_dit3d_readout_refuses_a_frozen_conditioner_and_a_negative_weight(train_cfg, overrides) -> None:
    cfg = train_cfg("dit3d", "lit.train_conditioner=false", *overrides)
    with pytest.raises((InstantiationException, ValueError), match="readout_weight"):
        instantiate(cfg.lit, _recursive_=False)


def test_dit3d_readout_without_volume_queries_stops_before_the_first_batch(train_cfg) -> None:
    class Batches(Callback):
        started = 0

        def on_train_batch_start(self, *args, **kwargs) -> None:
            Batches.started += 1

    cfg = train_cfg("dit3d", "lit.train_conditioner=true", "lit.readout_weight=1.0", "data.load_volume=false")
    with pytest.raises(ValueError, match="data.load_volume: true"):
        _fit(cfg, 1, callbacks=[Batches()])
    assert Batches.started == 0  # refused when fitting starts, not at the first step


def test_sculpt4d_step_trains_only_the_adapter(train_cfg) -> None:
    cfg = train_cfg("4d", "lit.train_backbone=false")  # the paper's setting (the tiny recipe fine-tunes it)
    module = instantiate(cfg.lit, _recursive_=False)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("model.adapter.") for n in trainable)
    before = _snapshot(module)
    fit_module(cfg, module, 2)  # LoRA B is zero at init: its A factors move from the 2nd step on
    changed = _changed(before, module)
    assert changed and all(n.startswith("model.adapter.") for n in changed)
    assert "model.adapter.frame_embed" in changed
    assert module.ema is not None and set(module.ema.names) == trainable
    assert "parameters:" in module.parameter_summary() and "trainable" in module.parameter_summary()


def test_sculpt4d_can_train_the_conditioner_at_the_backbone_rate(train_cfg) -> None:
    cfg = train_cfg(
        "4d", "lit.train_conditioner=true", "lit.train_backbone=false", "lit.backbone_lr_scale=0.5"
    )
    module = instantiate(cfg.lit, _recursive_=False)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert {n.split(".")[0] for n in trainable} == {"model", "conditioner"}
    assert all(n.startswith(("model.adapter.", "conditioner.")) for n in trainable)
    groups = module.param_groups([p for p in module.parameters() if p.requires_grad])
    cond_ids = {id(p) for p in module.conditioner.parameters()}
    assert {id(p) for p in groups[1]["params"]} == cond_ids and groups[1]["lr"] == 0.5 * module.optimizer_cfg[
        "lr"
    ]
    before = _snapshot(module)
    fit_module(cfg, module, 2)
    changed = _changed(before, module)
    assert any(n.startswith("conditioner.") for n in changed)
    assert not any(n.startswith(("vae.", "model.backbone.")) for n in changed)


@pytest.mark.parametrize("weight", [0.0, 2.0])
def test_sculpt4d_objective_adds_the_weighted_motion_loss(train_cfg, weight: float) -> None:
    from sculpt4d.diffusion import motion_loss

    cfg = train_cfg("4d", f"lit.motion_loss_weight={weight}")
    module = instantiate(cfg.lit, _recursive_=False)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        x1, cond = (
            module.encode_latents(batch, g),
            module.encode_condition(batch),
        )  # [B, T, N, C], [B, T, L, D]
    t, noise = torch.tensor([0.3, 0.8]), torch.randn(x1.shape, generator=g)
    terms = module.loss_terms(x1, cond, t, noise)
    pred, target = module.flow.velocities(module.model_fn, x1, cond, t=t, noise=noise)
    assert torch.allclose(terms["loss"], module.flow.loss(module.model_fn, x1, cond, t=t, noise=noise))
    assert torch.allclose(terms["motion_loss"], motion_loss(pred, target)) and terms["motion_loss"] > 0
    assert torch.allclose(module.objective(terms), terms["loss"] + weight * terms["motion_loss"])


class _Losses(Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.values.append(float(outputs["loss"]))


def test_vae_loss_decreases(train_cfg) -> None:
    cfg = train_cfg("vae", "training.base_lr=3e-3", "data.batch_size=2", "training.steps=24")
    losses = _Losses()
    _fit(cfg, 24, [losses])
    first, last = sum(losses.values[:4]) / 4, sum(losses.values[-4:]) / 4
    assert last < 0.8 * first, losses.values


def test_export_round_trip(train_cfg, tmp_path: Path) -> None:
    """export_checkpoint writes EMA weights + the resolved model node; factory.load_exported reads it back."""
    from sculpt4d.hub import load_into, load_state_dict
    from sculpt4d.models.factory import build_components, split_components

    cfg = train_cfg("4d")
    module, _ = _fit(cfg, 2)
    out = module.export_checkpoint(tmp_path / "export")
    exported = OmegaConf.load(out / "config.yaml")
    assert exported.stage == "sculpt4d" and exported.model.vae.num_latents == 32
    assert exported.attention.variant == "blockmask" and exported.attention.block_size == 16
    inference = exported.inference  # the defaults predict.py / from_pretrained read back
    assert inference.octree_resolution == exported.model.octree_resolution
    assert inference.sequence_length == exported.model.sequence_length
    assert inference.attention == exported.attention and inference.preprocess == exported.model.preprocess
    assert {"num_steps", "guidance_scale", "frame_stride"} <= set(inference)
    comps = build_components(exported.model, exported.attention, four_d=True)
    for name, part in split_components(load_state_dict(out)).items():  # strict: every key matches
        load_into(getattr(comps, name), part, strict=True, name=name)
    sd = comps.state_dict()
    with module.ema_scope():
        for name, p in module.model.named_parameters():
            torch.testing.assert_close(sd[f"model.{name}"], p.detach())
    for name, v in module.vae.state_dict().items():
        torch.testing.assert_close(sd[f"vae.{name}"], v)
    # the EMA differs from the training weights after training (so the test above is not trivial)
    ema_b = module.ema.shadow("model.adapter.frame_embed")
    assert not torch.equal(ema_b, module.model.adapter.frame_embed.detach())


def test_stage_chain_init_from(train_cfg, tmp_path: Path) -> None:
    """vae export -> dit3d(init_from) -> its export -> sculpt4d(init_from): weights and scale_factor carry over."""
    vae_mod, _ = _fit(train_cfg("vae"), 1)
    vae_mod.vae.scale_factor = 0.5
    vae_dir = vae_mod.export_checkpoint(tmp_path / "vae")
    d3 = instantiate(
        train_cfg("dit3d", f"init_from={vae_dir}", "lit.train_conditioner=true").lit, _recursive_=False
    )
    assert d3.scale_factor == 0.5
    with vae_mod.ema_scope():
        for k, v in vae_mod.vae.state_dict().items():
            torch.testing.assert_close(d3.vae.state_dict()[k], v)
    d3_dir = d3.export_checkpoint(tmp_path / "d3")
    m4 = instantiate(train_cfg("4d", f"init_from={d3_dir}").lit, _recursive_=False)
    assert m4.scale_factor == 0.5
    for k, v in d3.model.state_dict().items():
        torch.testing.assert_close(m4.model.backbone.state_dict()[k], v)
    for k, v in d3.conditioner.state_dict().items():
        torch.testing.assert_close(m4.conditioner.state_dict()[k], v)
    with pytest.raises(Exception, match=r"no 'model\.\*' weights"):  # a VAE-only export cannot start stage 4D
        instantiate(train_cfg("4d", f"init_from={vae_dir}").lit, _recursive_=False)


def test_vae_from_swaps_the_vae_and_its_statistics_and_keeps_the_dit(train_cfg, tmp_path: Path) -> None:
    """``lit.vae_from``: the DiT and conditioner continue from ``init_from`` while the VAE (weights and
    per-channel statistics) is another export's, e.g. a VAE trained on after the DiT; the 4D stage reads it on."""
    m4, _ = _fit(train_cfg("4d"), 1)
    m4.vae.latent_mean, m4.vae.latent_std = [0.5] * 8, [2.0] * 8
    whole = m4.export_checkpoint(tmp_path / "whole")
    vae_mod, _ = _fit(train_cfg("vae", "seed=3"), 1)
    vae_mod.vae.latent_mean, vae_mod.vae.latent_std = [-1.0] * 8, [3.0] * 8
    vae_dir = vae_mod.export_checkpoint(tmp_path / "vae")
    d3 = instantiate(
        train_cfg("dit3d", f"init_from={whole}", f"lit.vae_from={vae_dir}", "lit.train_conditioner=true").lit,
        _recursive_=False,
    )
    assert d3.vae.latent_mean == [-1.0] * 8 and d3.vae.latent_std == [3.0] * 8
    with vae_mod.ema_scope():
        vae_sd = {k: v.clone() for k, v in vae_mod.vae.state_dict().items()}
    assert any(not torch.equal(v, m4.vae.state_dict()[k]) for k, v in vae_sd.items())  # two different VAEs
    for k, v in vae_sd.items():
        torch.testing.assert_close(d3.vae.state_dict()[k], v)
    with m4.ema_scope():
        for k, v in m4.model.backbone.state_dict().items():
            torch.testing.assert_close(d3.model.state_dict()[k], v)
        for k, v in m4.conditioner.state_dict().items():
            torch.testing.assert_close(d3.conditioner.state_dict()[k], v)
    d3_dir = d3.export_checkpoint(tmp_path / "d3")
    assert OmegaConf.load(d3_dir / "config.yaml").model.vae.latent_std == [3.0] * 8
    m4b = instantiate(train_cfg("4d", f"init_from={d3_dir}").lit, _recursive_=False)
    assert m4b.vae.latent_mean == [-1.0] * 8
    for k, v in vae_sd.items():
        torch.testing.assert_close(m4b.vae.state_dict()[k], v)
    from sculpt4d.hub import load_state_dict, save_safetensors

    no_vae = tmp_path / "no_vae"  # an export without vae.* weights is named, not half-loaded
    no_vae.mkdir()
    save_safetensors(
        {k: v for k, v in load_state_dict(whole).items() if k.startswith("model.")},
        no_vae / "model.safetensors",
    )
    overrides = (f"init_from={whole}", f"lit.vae_from={no_vae}", "lit.train_conditioner=true")
    with pytest.raises(Exception, match=r"vae_from .*no 'vae\.\*' weights"):
        instantiate(train_cfg("dit3d", *overrides).lit, _recursive_=False)


def test_decoder_stage_refines_a_whole_model_and_keeps_its_latent_space(train_cfg, tmp_path: Path) -> None:
    """``experiment=tiny_vae_decoder`` on a 4D export: only the decoder side trains; the export is that model
    (its DiT, conditioner, config and latent statistics unchanged) with the new decoder."""
    from sculpt4d.hub import load_state_dict
    from sculpt4d.models.factory import load_exported

    m4, _ = _fit(train_cfg("4d"), 1)
    m4.vae.latent_mean, m4.vae.latent_std = [0.5] * 8, [2.0] * 8
    whole = m4.export_checkpoint(tmp_path / "whole")
    cfg = train_cfg("vae_decoder", f"init_from={whole}", "training.base_lr=3e-3")
    module = instantiate(cfg.lit, _recursive_=False)
    before = _snapshot(module)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable == {n for n in before if not n.startswith(("vae.encoder.", "vae.pre_kl."))}
    fit_module(cfg, module, 2)
    changed = _changed(before, module)
    assert changed and changed <= trainable and any(n.startswith("vae.geo_decoder.") for n in changed)
    out = module.export_checkpoint(tmp_path / "refined")
    init_cfg, new_cfg = OmegaConf.load(whole / "config.yaml"), OmegaConf.load(out / "config.yaml")
    init_cfg.pop("export"), new_cfg.pop("export")
    assert new_cfg == init_cfg and new_cfg.stage == "sculpt4d" and new_cfg.model.vae.latent_std == [2.0] * 8
    old_sd, new_sd = load_state_dict(whole), load_state_dict(out)
    assert set(new_sd) == set(old_sd)
    for key, value in old_sd.items():
        same = torch.equal(new_sd[key], value)
        if key.startswith(("model.", "conditioner.", "vae.encoder.", "vae.pre_kl.")):
            assert same, key
    assert not all(torch.equal(new_sd[k], old_sd[k]) for k in old_sd if k.startswith("vae.geo_decoder."))
    comps, _ = load_exported(out)  # a whole model again, loadable by predict.py
    assert hasattr(comps.model, "adapter") and comps.vae.latent_std == [2.0] * 8
    with pytest.raises(Exception, match="train_encoder=false refines the decoder of an existing VAE"):
        instantiate(train_cfg("vae_decoder").lit, _recursive_=False)


def test_latent_noise_perturbs_training_latents_in_the_dit_space_only(train_cfg, tiny_dataset) -> None:
    """``lit.latent_noise`` changes what the training step decodes (by that std in standardised units), never
    the validation's mean decoding."""
    cfg = train_cfg("vae")
    dm = instantiate(cfg.data)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    plain = instantiate(cfg.lit, _recursive_=False)
    noisy = instantiate(train_cfg("vae", "lit.latent_noise=0.5").lit, _recursive_=False)
    noisy.load_state_dict(plain.state_dict())
    noisy.vae.latent_mean, noisy.vae.latent_std = [0.0] * 8, [4.0] * 8
    decoded: list[torch.Tensor] = []
    for module in (plain, noisy):
        module.vae.decode = lambda z, _decode=module.vae.decode: decoded.append(z) or _decode(z)
    for sample in (True, False):
        for module in (plain, noisy):
            module._forward(batch, torch.Generator().manual_seed(0), sample=sample)
    (z_plain, z_noisy), (m_plain, m_noisy) = decoded[:2], decoded[2:]
    assert (z_noisy - z_plain).std().item() == pytest.approx(0.5 * 4.0, rel=0.1)  # 0.5 std in DiT units
    torch.testing.assert_close(m_plain, m_noisy)  # the mean decoding is untouched


def test_validation_logs_the_condition_gap(train_cfg, monkeypatch) -> None:
    cfg = train_cfg("dit3d", "lit.val.num_samples=0")
    module = instantiate(cfg.lit, _recursive_=False)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    logged: dict[str, float] = {}
    monkeypatch.setattr(
        module, "log_dict", lambda d, **kw: logged.update({k: float(v) for k, v in d.items()})
    )
    with torch.no_grad():
        module.validation_step(batch, 0)
        gap = logged["val/cond_gap"]  # null-context loss minus the loss with the image
        assert gap != 0.0 and torch.isfinite(torch.tensor(gap))
        real = module.encode_condition
        monkeypatch.setattr(module, "encode_condition", lambda b: torch.zeros_like(real(b)))
        module.validation_step(batch, 0)  # an image worth nothing: no gap
    assert logged["val/cond_gap"] == 0.0


@pytest.mark.parametrize("stage", ["dit3d", "4d"])
def test_timestep_shift_moves_the_training_timesteps_towards_noise(train_cfg, stage: str) -> None:
    plain = instantiate(train_cfg(stage, "lit.timestep_shift=1.0").lit, _recursive_=False)
    shifted = instantiate(train_cfg(stage, "lit.timestep_shift=3.0").lit, _recursive_=False)
    t_plain = plain.flow.sample_timesteps(4000, torch.Generator().manual_seed(0))
    t_shift = shifted.flow.sample_timesteps(4000, torch.Generator().manual_seed(0))
    # the same draws, each moved to s' = 3s / (1 + 2s) on the noise level s = 1 - t
    s = 1.0 - t_plain
    assert torch.allclose(t_shift, 1.0 - 3.0 * s / (1.0 + 2.0 * s), atol=1e-6)
    assert float(t_shift.median()) == pytest.approx(0.25, abs=0.03)  # uniform's median 0.5 -> 1 - 0.75
    assert shifted.extra_hparams()["timestep_shift"] == 3.0
    with pytest.raises(InstantiationException, match="timestep_shift must be > 0"):
        instantiate(train_cfg(stage, "lit.timestep_shift=0").lit, _recursive_=False)
