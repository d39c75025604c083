"""ShapeVAE: reference layout (keys, shapes, head layout, Fourier), FPS, sequence encoding, noise sharing."""

from __future__ import annotations

import inspect
import io
import math
import time

import numpy as np
import pytest
import torch

from sculpt4d.diffusion import shared_noise
from sculpt4d.errors import InputError
from sculpt4d.models.vae import (
    DiagonalGaussian,
    FourierEmbedder,
    QuerySelection,
    ShapeVAE,
    farthest_point_sample,
    fps_count,
)
from sculpt4d.models.vae.attention import CrossAttention, SelfAttention

TINY = dict(
    num_latents=16,
    embed_dim=8,
    width=64,
    heads=4,
    num_encoder_layers=1,
    num_decoder_layers=2,
    pc_size=320,
    downsample_ratio=20,
    logvar_max=0.0,
    scale_factor=1.0,
)


def tiny_vae(seed: int = 0, **kw) -> ShapeVAE:
    torch.manual_seed(seed)
    vae = ShapeVAE(**{**TINY, **kw}).eval()
    # Make the posterior non-degenerate: a visible logvar so sampling noise is measurable.
    with torch.no_grad():
        vae.pre_kl.bias[TINY["embed_dim"] :] = -1.0
    return vae


def random_surface(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xyz = torch.rand(*shape, 3, generator=g) * 1.8 - 0.9
    normal = torch.nn.functional.normalize(torch.randn(*shape, 3, generator=g), dim=-1)
    return torch.cat([xyz, normal, torch.zeros(*shape, 1)], dim=-1)


# ---- full-size layout on the meta device ---------------------------------------------------------------
def test_full_size_meta_state_dict_matches_reference_table():
    t0 = time.perf_counter()
    with torch.device("meta"):
        vae = ShapeVAE()
    build_s = time.perf_counter() - t0
    sd = vae.state_dict()
    assert len(sd) == 410
    assert sum(v.numel() for v in sd.values()) == 327_746_177
    expected = {
        "encoder.input_proj.weight": (1024, 55),
        "encoder.input_proj.bias": (1024,),
        "encoder.cross_attn.attn.c_q.weight": (1024, 1024),
        "encoder.cross_attn.attn.c_kv.weight": (2048, 1024),
        "encoder.cross_attn.attn.c_proj.bias": (1024,),
        "encoder.cross_attn.attn.attention.q_norm.weight": (64,),
        "encoder.cross_attn.attn.attention.k_norm.bias": (64,),
        "encoder.cross_attn.ln_3.weight": (1024,),
        "encoder.cross_attn.mlp.c_fc.weight": (4096, 1024),
        "encoder.self_attn.resblocks.7.attn.c_qkv.weight": (3072, 1024),
        "encoder.self_attn.resblocks.0.mlp.c_proj.weight": (1024, 4096),
        "encoder.ln_post.bias": (1024,),
        "pre_kl.weight": (128, 1024),
        "pre_kl.bias": (128,),
        "post_kl.weight": (1024, 64),
        "transformer.resblocks.15.attn.c_qkv.weight": (3072, 1024),
        "transformer.resblocks.15.ln_2.bias": (1024,),
        "geo_decoder.query_proj.weight": (1024, 51),
        "geo_decoder.cross_attn_decoder.attn.c_kv.weight": (2048, 1024),
        "geo_decoder.cross_attn_decoder.attn.attention.k_norm.weight": (64,),
        "geo_decoder.ln_post.weight": (1024,),
        "geo_decoder.output_proj.weight": (1, 1024),
        "geo_decoder.output_proj.bias": (1,),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    # no biases where the reference has none, no Fourier buffer, no stray blocks
    for absent in (
        "encoder.cross_attn.attn.c_q.bias",
        "encoder.self_attn.resblocks.0.attn.c_qkv.bias",
        "transformer.resblocks.16.ln_1.weight",
        "encoder.self_attn.resblocks.8.ln_1.weight",
    ):
        assert absent not in sd
    assert not any("frequencies" in k for k in sd)
    groups = {
        p: sum(v.numel() for k, v in sd.items() if k.startswith(p + "."))
        for p in ("encoder", "pre_kl", "post_kl", "transformer", "geo_decoder")
    }
    assert round(groups["encoder"] / 1e6, 2) == 113.40
    assert round(groups["transformer"] / 1e6, 2) == 201.49
    assert round(groups["geo_decoder"] / 1e6, 2) == 12.65
    assert build_s < 30.0  # meta build allocates nothing (first call pays torch's lazy imports)


def test_layernorm_eps_and_attributes():
    vae = tiny_vae()
    assert vae.encoder.ln_post.eps == 1e-5 and vae.geo_decoder.ln_post.eps == 1e-5
    assert vae.encoder.cross_attn.ln_1.eps == 1e-6
    assert vae.transformer.resblocks[0].attn.attention.q_norm.eps == 1e-6
    assert vae.scale_factor == 1.0 and vae.config["num_latents"] == 16
    default_sf = inspect.signature(ShapeVAE).parameters["scale_factor"].default
    assert default_sf == 1.0039506158752403


# ---- Fourier embedder -----------------------------------------------------------------------------------
def test_fourier_embedder_layout_and_buffer():
    emb = FourierEmbedder(num_freqs=8)
    assert emb.out_dim == 51
    assert "frequencies" not in emb.state_dict()
    x = torch.tensor([[0.1, -0.2, 0.3]])
    out = emb(x)
    f = 2.0 ** torch.arange(8)
    e = torch.cat([x[0, 0] * f, x[0, 1] * f, x[0, 2] * f])  # per coordinate contiguous
    torch.testing.assert_close(out[0], torch.cat([x[0], e.sin(), e.cos()]))
    # the buffer is recomputed after a meta build + to_empty
    with torch.device("meta"):
        meta = FourierEmbedder(num_freqs=8, include_pi=True)
    meta.to_empty(device="cpu")
    torch.testing.assert_close(meta.frequencies, f * math.pi)


# ---- attention head layout ------------------------------------------------------------------------------
def _ln(x: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    return torch.nn.functional.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, 1e-6)


def _perturb_norms(attn: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in attn.attention.parameters():
            p.add_(torch.randn_like(p) * 0.3)


def test_self_attention_per_head_interleaved_qkv():
    torch.manual_seed(0)
    W, H = 32, 4
    hd = W // H
    attn = SelfAttention(W, H, qkv_bias=False, qk_norm=True)
    _perturb_norms(attn)
    x = torch.randn(2, 5, W)
    out = attn(x)
    Wqkv = attn.c_qkv.weight  # [3W, W]
    heads = []
    for h in range(H):
        rows = Wqkv[3 * hd * h : 3 * hd * (h + 1)]  # this head's [q_h | k_h | v_h] rows
        q, k, v = (x @ rows[i * hd : (i + 1) * hd].T for i in range(3))
        q, k = _ln(q, attn.attention.q_norm), _ln(k, attn.attention.k_norm)
        heads.append(torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), -1) @ v)
    ref = torch.cat(heads, -1) @ attn.c_proj.weight.T + attn.c_proj.bias
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # the standard [all q | all k | all v] layout gives a different result
    q, k, v = (x @ Wqkv[i * W : (i + 1) * W].T for i in range(3))
    split = lambda t: t.view(2, 5, H, hd).transpose(1, 2)
    std = torch.nn.functional.scaled_dot_product_attention(
        _ln(split(q), attn.attention.q_norm), _ln(split(k), attn.attention.k_norm), split(v)
    )
    std = std.transpose(1, 2).flatten(2) @ attn.c_proj.weight.T + attn.c_proj.bias
    assert not torch.allclose(out, std, atol=1e-3)


def test_cross_attention_per_head_kv_layout():
    torch.manual_seed(1)
    W, H, Wd = 32, 4, 24
    hd = W // H
    attn = CrossAttention(W, H, data_width=Wd)
    _perturb_norms(attn)
    x, data = torch.randn(2, 3, W), torch.randn(2, 7, Wd)
    out = attn(x, data)
    q_all = x @ attn.c_q.weight.T
    heads = []
    for h in range(H):
        rows = attn.c_kv.weight[2 * hd * h : 2 * hd * (h + 1)]  # [k_h | v_h]
        k, v = data @ rows[:hd].T, data @ rows[hd:].T
        q = _ln(q_all[..., hd * h : hd * (h + 1)], attn.attention.q_norm)
        k = _ln(k, attn.attention.k_norm)
        heads.append(torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), -1) @ v)
    ref = torch.cat(heads, -1) @ attn.c_proj.weight.T + attn.c_proj.bias
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


# ---- farthest point sampling ----------------------------------------------------------------------------
def _fps_bruteforce(pts: np.ndarray, k: int, start: int) -> list[int]:
    sel = [start]
    d = ((pts - pts[start]) ** 2).sum(-1)
    for _ in range(k - 1):
        nxt = int(np.argmax(d))
        sel.append(nxt)
        d = np.minimum(d, ((pts - pts[nxt]) ** 2).sum(-1))
    return sel


def test_fps_matches_bruteforce_and_is_deterministic():
    g = torch.Generator().manual_seed(3)
    xyz = torch.rand(3, 200, 3, generator=g)
    idx = farthest_point_sample(xyz, k=20, start_idx=torch.tensor([0, 5, 199]))
    for b, s in enumerate((0, 5, 199)):
        assert idx[b].tolist() == _fps_bruteforce(xyz[b].double().numpy(), 20, s)
    # generator-driven random start: same seed -> same picks, another seed -> another start
    a = farthest_point_sample(xyz, k=20, generator=torch.Generator().manual_seed(7))
    b = farthest_point_sample(xyz, k=20, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    starts = {
        int(farthest_point_sample(xyz, k=2, generator=torch.Generator().manual_seed(s))[0, 0])
        for s in range(6)
    }
    assert len(starts) > 1
    assert idx.shape == (3, 20) and all(len(set(r.tolist())) == 20 for r in idx)


def test_fps_picks_extreme_points_first():
    corners = torch.tensor([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)])
    interior = torch.rand(100, 3, generator=torch.Generator().manual_seed(0)) * 0.5 - 0.25
    pts = torch.cat([interior, corners])  # start at interior point 0
    idx = farthest_point_sample(pts, k=9)
    assert idx[0] == 0
    assert set(idx[1:].tolist()) == set(range(100, 108))


def test_fps_count_float32_ceil():
    assert fps_count(81920, 4096 / 81920) == 4096
    assert fps_count(2048, 256 / 2048) == 256
    assert fps_count(10, 0.25) == 3
    assert farthest_point_sample(torch.rand(10, 3), ratio=0.25).shape == (3,)


# ---- encoding -------------------------------------------------------------------------------------------
def test_encode_shapes_and_too_few_points():
    vae = tiny_vae()
    s = random_surface(2, 320)
    z = vae.encode(s, generator=torch.Generator().manual_seed(0))
    assert z.shape == (2, 16, 8)
    post, sel = vae.encode_posterior(s, generator=torch.Generator().manual_seed(0))
    assert (
        isinstance(sel, QuerySelection) and sel.query_idx.shape == (2, 16) and sel.input_idx.shape == (320,)
    )
    with pytest.raises(InputError, match="320"):
        vae.encode(random_surface(1, 200))
    with pytest.raises(InputError, match="channels"):
        vae.encode(random_surface(1, 320)[..., :6])


def test_sequence_encoding_reuses_frame0_query_points():
    vae = tiny_vae()
    surf = random_surface(2, 4, 400, seed=1)
    # frames differ (motion): frame t = frame 0 shifted
    surf[:, :, :, :3] = surf[:, :1, :, :3] + torch.arange(4).view(1, 4, 1, 1) * torch.tensor(
        [0.05, -0.02, 0.0]
    )
    post, sel = vae.encode_posterior(surf, generator=torch.Generator().manual_seed(5))
    assert post.mean.shape == (2, 4, 16, 8)
    # the selection is the one picked on frame 0 with the same generator state
    ref = vae.encoder.select(surf[:, 0, :, :3], torch.Generator().manual_seed(5))
    assert torch.equal(sel.query_idx, ref.query_idx) and torch.equal(sel.input_idx, ref.input_idx)
    # and it is used for every frame: per-frame encoding with that selection reproduces each frame
    for t in range(4):
        single, _ = vae.encode_posterior(surf[:, t], query_idx=sel)
        torch.testing.assert_close(post.mean[:, t], single.mean, atol=1e-5, rtol=1e-5)
    # picking independently per frame would choose other points on a later frame
    other = vae.encoder.select(surf[:, 3, :, :3], torch.Generator().manual_seed(6))
    assert not torch.equal(other.query_idx, sel.query_idx)


def test_identical_frames_give_identical_latents_with_shared_noise():
    vae = tiny_vae()
    frame = random_surface(1, 1, 320, seed=2)
    surf = frame.expand(1, 3, 320, 7).clone()
    z = vae.encode_sequence(surf, noise_share_alpha=1.0, generator=torch.Generator().manual_seed(0))
    assert z.shape == (1, 3, 16, 8)
    assert torch.equal(z[:, 0], z[:, 1]) and torch.equal(z[:, 0], z[:, 2])
    z0 = vae.encode_sequence(surf, noise_share_alpha=0.0, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(z0[:, 0], z0[:, 1])
    zm = vae.encode_sequence(surf, sample_posterior=False, generator=torch.Generator().manual_seed(0))
    assert torch.equal(zm[:, 0], zm[:, 2]) and not torch.allclose(zm, z)


def test_noise_share_alpha_in_posterior_sampling():
    vae = tiny_vae()
    surf = random_surface(1, 3, 320, seed=4)  # different frames
    post, _ = vae.encode_posterior(surf, generator=torch.Generator().manual_seed(1))
    for alpha, same in ((1.0, True), (0.0, False)):
        z = vae.encode_sequence(surf, noise_share_alpha=alpha, generator=torch.Generator().manual_seed(1))
        eps = (z - post.mean) / post.std  # [1, 3, 16, 8]
        assert torch.allclose(eps[:, 0], eps[:, 1], atol=1e-4) == same


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.0])
def test_encode_sequence_posterior_noise_is_shared_noise(alpha):
    """``encode_sequence``'s posterior noise is :func:`sculpt4d.diffusion.shared_noise` drawn from the
    generator right after the query-point pick (the same bits; statistics: tests/test_diffusion.py)."""
    vae = tiny_vae()
    surf = random_surface(2, 3, 320, seed=4)
    g = torch.Generator().manual_seed(7)
    post, _ = vae.encode_posterior(surf, generator=g)  # the pick draws from g
    eps = shared_noise(post.shape, alpha, g)  # [B, T, N, C]
    z = vae.encode_sequence(surf, noise_share_alpha=alpha, generator=torch.Generator().manual_seed(7))
    assert torch.equal(z, post.sample(noise=eps))


def test_posterior_logvar_clamp_and_kl():
    moments = torch.cat([torch.zeros(2, 4, 3), torch.tensor([-50.0, 3.0, 30.0]).expand(2, 4, 3)], -1)
    post = DiagonalGaussian(moments, logvar_min=-30.0, logvar_max=0.0)
    assert post.logvar.min() == -30.0 and post.logvar.max() == 0.0 and post.std.max() <= 1.0
    std_normal = DiagonalGaussian(torch.zeros(2, 4, 6))
    torch.testing.assert_close(std_normal.kl(), torch.zeros(2))
    assert (post.kl() > 0).all() and post.kl().shape == (2,)
    assert torch.equal(DiagonalGaussian(moments, deterministic=True).sample(), post.mean)
    # the tiny config's logvar_max=0 reaches the model
    vae = tiny_vae()
    with torch.no_grad():
        vae.pre_kl.bias[8:] = 5.0
    p, _ = vae.encode_posterior(random_surface(1, 320))
    assert p.std.max() <= 1.0


# ---- state dict round trip ------------------------------------------------------------------------------
def test_state_dict_roundtrip_identical_outputs():
    a, b = tiny_vae(seed=0), tiny_vae(seed=1)
    s = random_surface(2, 320, seed=9)
    xyz = torch.rand(2, 50, 3) * 2 - 1
    za = a.encode(s, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(a.query(a(za), xyz), b.query(b(za), xyz))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b.load_state_dict(torch.load(buf, weights_only=True))
    zb = b.encode(s, generator=torch.Generator().manual_seed(0))
    assert torch.equal(za, zb)
    assert torch.equal(a.query(a(za), xyz), b.query(b(zb), xyz))


def test_sharp_edge_points_get_their_own_queries():
    vae = tiny_vae(pc_size=240, pc_sharpedge_size=80)  # 12 random + 4 sharp-edge queries
    post, sel = vae.encode_posterior(random_surface(2, 320), generator=torch.Generator().manual_seed(0))
    assert post.mean.shape == (2, 16, 8) and sel.input_idx.shape == (320,)
    assert (sel.query_idx[:, :12] < 240).all() and (sel.query_idx[:, 12:] >= 240).all()
