"""VideoConditioner (per-frame DINOv2) and Hunyuan ImageProcessorV2-style preprocessing."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sculpt4d.errors import InputError
from sculpt4d.models.conditioner import (
    VideoConditioner,
    conditioner_to_hunyuan_keys,
    hunyuan_to_conditioner_keys,
    installed_dinov2_layout,
    remap_dinov2_keys,
)
from sculpt4d.utils.images import load_image, preprocess_image, preprocess_images, segment_foreground

TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    patch_size=14,
    image_size=56,
)


@pytest.fixture(scope="module")
def cond():
    torch.manual_seed(0)
    return VideoConditioner(TINY, image_size=56).eval()


def test_sequence_and_single_shapes(cond):
    x = torch.rand(2, 3, 3, 64, 80) * 2 - 1  # [B,T,3,H,W], non-square
    f = cond(x)
    assert f.shape == (2, 3, 1 + 16, 32) and cond.num_tokens == 17
    # frames are encoded independently: the single-image path gives the same tokens
    assert torch.allclose(cond(x[:, 1]), f[:, 1], atol=1e-5)
    chunked = VideoConditioner(TINY, image_size=56, frame_chunk=2)
    chunked.load_state_dict(cond.state_dict())
    assert torch.allclose(chunked(x), f, atol=1e-5)
    u = cond.unconditional(f)
    assert u.shape == f.shape and not u.any()


def test_encoder_reads_larger_images_with_the_weights_of_a_smaller_grid(cond):
    """An encoder built for a larger input (``image_size``) with the position grid of the smaller one
    (``dinov2.image_size``, as ``experiment=tiny_dit3d_img224`` does) loads the smaller encoder's weights strictly
    and returns one token per patch of the larger image; at the smaller size it is the same encoder."""
    big = VideoConditioner(TINY, image_size=112).eval()  # 8 x 8 patches of 14 px, position grid of 4 x 4
    big.load_state_dict(cond.state_dict(), strict=True)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert big.encode(x).shape == (2, 1 + 64, 32) and big.num_tokens == 65
    big.image_size = 56
    assert torch.allclose(big.encode(x), cond.encode(x), atol=1e-6)


def test_preprocess_matches_upstream_recipe(cond):
    x = torch.rand(1, 3, 70, 84) * 2 - 1
    y = (x + 1) / 2
    y = F.interpolate(
        y, size=(56, 67), mode="bilinear", align_corners=False, antialias=True
    )  # shorter side -> 56
    y = y[..., :, 6:62]  # centre crop: round((67 - 56) / 2) = 6 (banker's rounding of 5.5)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(cond.preprocess(x), (y - mean) / std, atol=1e-6)
    # already at size: only normalisation
    z = torch.rand(1, 3, 56, 56) * 2 - 1
    assert torch.allclose(cond.preprocess(z), ((z + 1) / 2 - mean) / std, atol=1e-6)


def test_frozen_by_default_and_trainable():
    c = VideoConditioner(TINY, image_size=56)
    assert not any(p.requires_grad for p in c.parameters())
    c.train()
    assert not c.dinov2.training
    t = VideoConditioner(TINY, image_size=56, trainable=True).train()
    assert t.dinov2.training and all(p.requires_grad for p in t.parameters())
    t(torch.rand(1, 2, 3, 56, 56)).sum().backward()
    assert t.dinov2.embeddings.patch_embeddings.projection.weight.grad is not None


def test_key_remap_round_trip_loads_strictly(cond):
    sd = cond.state_dict()
    assert installed_dinov2_layout() == "v5"  # transformers 5.x here
    v4 = remap_dinov2_keys(sd, "v4")
    assert "dinov2.encoder.layer.0.attention.attention.query.weight" in v4
    assert "dinov2.encoder.layer.1.attention.output.dense.bias" in v4
    assert not any(".q_proj." in k or ".o_proj." in k for k in v4)
    assert remap_dinov2_keys(v4, "v5") == sd  # lossless round trip (same tensors, same keys)
    # 4.x-named upstream conditioner dict (Hunyuan `conditioner` entry) loads strictly into a fresh model
    hy = conditioner_to_hunyuan_keys(sd, "v4")
    assert "main_image_encoder.model.encoder.layer.0.attention.attention.key.weight" in hy
    assert "main_image_encoder.model.layernorm.weight" in hy
    assert hunyuan_to_conditioner_keys(hy) == sd
    fresh = VideoConditioner(TINY, image_size=56).eval()
    fresh.load_state_dict(hy, strict=True)
    x = torch.rand(1, 2, 3, 56, 56) * 2 - 1
    assert torch.equal(fresh(x), cond(x))
    # also: Lightning-prefixed 4.x keys into a nested conditioner, and 5.x keys as they are
    holder = torch.nn.Module()
    holder.conditioner = VideoConditioner(TINY, image_size=56)
    holder.load_state_dict({"conditioner.cond_stage_model." + k: v for k, v in hy.items()}, strict=True)
    assert torch.equal(holder.conditioner.dinov2.layernorm.weight, cond.dinov2.layernorm.weight)
    fresh.load_state_dict(sd, strict=True)


# ----------------------------------------------------------------------------------------- preprocessing
def _rgba_square(h=200, w=300, top=10, left=20, side=40, color=(255, 0, 0)):
    a = np.zeros((h, w, 4), np.uint8)
    a[top : top + side, left : left + side] = (*color, 255)
    return a


def _object_bbox(x: torch.Tensor):
    nonwhite = (x < 0.99).any(dim=0).numpy()
    rows, cols = np.nonzero(nonwhite)
    return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1


def test_recentre_off_centre_square():
    x = preprocess_image(Image.fromarray(_rgba_square()), size=300, border_ratio=0.15)
    assert x.shape == (3, 300, 300) and x.dtype == torch.float32
    # upstream: half-open bbox (39 px) scaled to int(300 * 0.85) = 255, pasted at (300 - 255) // 2 = 22
    assert _object_bbox(x) == (22, 277, 22, 277)
    assert torch.equal(x[:, 150, 150], torch.tensor([1.0, -1.0, -1.0]))  # red inside
    assert torch.equal(x[:, :20, :], torch.ones(3, 20, 300))  # white background around
    # resized output keeps the object centred with the border
    y = preprocess_image(_rgba_square(), size=128)
    r0, r1, c0, c1 = _object_bbox(y)
    assert abs(r0 - (128 - r1)) <= 1 and abs(c0 - (128 - c1)) <= 1
    assert abs((r1 - r0) - 0.85 * 128) <= 2
    assert y.min() >= -1 and y.max() <= 1


def test_rgb_plain_background_segmentation():
    rgba = _rgba_square(color=(20, 40, 200))
    rgb = rgba[..., :3].copy()
    rgb[rgba[..., 3] == 0] = (128, 128, 128)  # grey background, no alpha
    mask = segment_foreground(rgb)
    assert np.array_equal(mask, rgba[..., 3] > 0)
    assert torch.equal(preprocess_image(rgb, size=96), preprocess_image(rgba, size=96))
    # the whole-image option keeps everything (grey background becomes part of the object)
    whole = preprocess_image(rgb, size=96, rgb_mode="whole")
    r0, r1, c0, c1 = _object_bbox(whole)  # 300x200 image: width -> 0.85 * 96, height 2/3 of that
    assert abs((c1 - c0) - 0.85 * 96) <= 2 and abs((r1 - r0) - 0.85 * 96 * 199 / 299) <= 2


def test_rgb_rejections():
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="not a plain background"):
        preprocess_image(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    with pytest.raises(InputError, match="no object"):
        preprocess_image(np.full((64, 64, 3), 200, np.uint8))
    with pytest.raises(InputError, match="alpha channel is empty"):
        preprocess_image(np.zeros((64, 64, 4), np.uint8))


def test_load_image_errors_and_sequence(tmp_path):
    bad = tmp_path / "frame_0000.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="frame_0000.png"):
        load_image(bad)
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "missing.png")
    good = tmp_path / "ok.png"
    Image.fromarray(_rgba_square()).save(good)
    im = load_image(good)
    assert im.mode == "RGBA" and im.size == (300, 200)
    seq = preprocess_images([good, good], size=64)
    assert seq.shape == (2, 3, 64, 64)
