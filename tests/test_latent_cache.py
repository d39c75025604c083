"""The latent cache: cached means equal a live encoding, reuse on disk, lookup by (object, frame), training on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MICRO, fit_module
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from sculpt4d.data import Objects4DDataset, list_object_dirs, scan_object
from sculpt4d.data.latent_cache import (
    LatentCache,
    draw_seeds,
    encode_objects,
    load_or_build_latent_cache,
)
from sculpt4d.models.vae import ShapeVAE

PC_SIZE = 256


@pytest.fixture
def records(tiny_dataset: Path):
    return [scan_object(d, min_frames=1, need_images=False) for d in list_object_dirs(str(tiny_dataset))]


@pytest.fixture
def reader(records) -> Objects4DDataset:
    return Objects4DDataset(records, sequence_length=1, pc_size=PC_SIZE, load_images=False)


def _vae(seed: int = 0) -> ShapeVAE:
    torch.manual_seed(seed)
    return instantiate(MICRO.vae).eval()  # pc_size 256


def test_cached_means_equal_a_live_sequence_encoding_and_do_not_depend_on_the_other_objects(
    records, reader
) -> None:
    vae = _vae()
    cache = encode_objects(vae, reader, records, draws=2)
    rec = records[1]
    assert cache[rec.name].shape == (2, rec.num_frames, 32, 8)  # [draws, frames, N, C]
    for k in range(2):
        rows_seed, pick_seed = draw_seeds(rec.name, k)
        surface = reader.read_surface(rec, rec.frames, np.random.default_rng(rows_seed))  # [F, P, 7]
        live = vae.encode_sequence(
            surface[None], sample_posterior=False, generator=torch.Generator().manual_seed(pick_seed)
        )[0]
        torch.testing.assert_close(cache[rec.name][k], live)
    # the two draws are different point picks of the same frames
    assert not torch.allclose(cache[rec.name][0], cache[rec.name][1])
    alone = encode_objects(vae, reader, [rec], draws=2)
    torch.testing.assert_close(alone[rec.name], cache[rec.name])


def test_the_cache_is_reused_from_disk_and_rebuilt_for_another_vae(
    records, reader, tmp_path: Path, monkeypatch
) -> None:
    import sculpt4d.data.latent_cache as lc

    first = load_or_build_latent_cache(_vae(0), reader, records, 2, tmp_path)
    files = list(tmp_path.glob("latents_*.safetensors"))
    assert len(files) == 1 and not list(tmp_path.glob(".*tmp"))

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded again although the cache is on disk")

    monkeypatch.setattr(lc, "encode_objects", no_encoding)
    again = load_or_build_latent_cache(_vae(0), reader, records, 2, tmp_path)
    assert set(again.latents) == {r.name for r in records}
    for name, z in first.latents.items():
        assert torch.equal(again.latents[name], z)
    monkeypatch.undo()
    other = load_or_build_latent_cache(_vae(1), reader, records, 2, tmp_path)  # other weights: a new file
    assert len(list(tmp_path.glob("latents_*.safetensors"))) == 2
    name = records[0].name
    assert not torch.allclose(other.latents[name], first.latents[name])
    # the query pick is part of the key, though not of the weights
    same_weights = _vae(0)
    key = lc.cache_key(same_weights, reader, records, 2)
    same_weights.fps_random_start = not same_weights.fps_random_start
    assert lc.cache_key(same_weights, reader, records, 2) != key
    assert lc.cache_key(_vae(0), reader, records, 3) != key


def test_lookup_takes_one_draw_per_item_for_every_frame_of_it() -> None:
    frames, n, c = 6, 4, 3
    base = torch.arange(2 * frames, dtype=torch.float32).view(2, frames, 1, 1).expand(2, frames, n, c)
    cache = LatentCache({"a": base.clone(), "b": base + 100})
    frame_index = torch.tensor([[0, 2, 4], [5, 3, 1]])  # [B, T]
    seen = set()
    for seed in range(20):
        z = cache.lookup(["a", "b"], frame_index, torch.Generator().manual_seed(seed))  # [B, T, N, C]
        assert z.shape == (2, 3, n, c)
        for b, offset in enumerate((0.0, 100.0)):
            values = z[b, :, 0, 0] - offset  # draw * frames + frame
            draw = int(values[0]) // frames
            assert torch.equal(values, draw * frames + frame_index[b].float())  # one draw for all its frames
            seen.add(draw)
    assert seen == {0, 1}
    with pytest.raises(Exception, match="not in the latent cache"):
        cache.lookup(["c"], frame_index[:1], torch.Generator().manual_seed(0))


@pytest.mark.parametrize("stage", ["dit3d", "4d"])
def test_flow_stages_train_on_the_cached_means_without_encoding(
    train_cfg, tmp_path: Path, stage: str
) -> None:
    cache_dir = tmp_path / "cache"
    cfg = train_cfg(
        stage, "lit.cache_latents=true", "lit.sample_posterior=false", f"lit.latent_cache_dir={cache_dir}"
    )
    module = instantiate(cfg.lit, _recursive_=False)
    _, trainer = fit_module(cfg, module, 1)
    dm = trainer.datamodule
    cache = module.latent_cache
    assert cache is not None and cache.draws == 2 and len(list(cache_dir.glob("latents_*.safetensors"))) == 1
    assert set(cache.latents) == {r.name for r in dm.train_set.records + dm.val_set.records}

    def no_encoding(*args, **kwargs):
        raise AssertionError("the VAE encoded a batch although its latents are cached")

    module.vae.encode_posterior = no_encoding
    batch = next(iter(dm.fixed_train_dataloader(1)))
    x1 = module.encode_latents(batch, torch.Generator().manual_seed(3))
    expected = cache.lookup(
        batch["object"], batch["frame_index"], torch.Generator().manual_seed(3)
    )  # [B, T, N, C]
    expected = module.vae.to_dit(expected)
    torch.testing.assert_close(x1, expected.flatten(0, 1) if stage == "dit3d" else expected)


def test_the_cache_refuses_posterior_samples(train_cfg) -> None:
    cfg = train_cfg("dit3d", "lit.cache_latents=true", "lit.sample_posterior=true")
    with pytest.raises((InstantiationException, ValueError), match="sample_posterior: false"):
        instantiate(cfg.lit, _recursive_=False)
