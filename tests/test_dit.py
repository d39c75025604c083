"""HunyuanDiT: state-dict layout, size, and forward equal to an independent functional reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sculpt4d.models.dit import HunyuanDiT
from sculpt4d.models.dit.layers import MoE

TINY = dict(
    input_size=16,
    in_channels=8,
    hidden_size=64,
    context_dim=32,
    depth=7,
    num_heads=4,
    qk_norm=True,
    qk_norm_type="rms",
    qkv_bias=False,
    num_moe_layers=2,
    num_experts=4,
    moe_top_k=2,
)


def tiny_dit(seed: int = 0, **kw) -> HunyuanDiT:
    torch.manual_seed(seed)
    m = HunyuanDiT(**{**TINY, **kw}).eval()
    with torch.no_grad():  # non-trivial norm weights so their use is tested
        for name, p in m.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
            if name.endswith("gate.weight"):
                p.mul_(20.0)  # decisive routing (reference §7)
    return m


def test_full_size_param_count_on_meta():
    with torch.device("meta"):
        m = HunyuanDiT()
    sd = m.state_dict()
    assert len(sd) == 752
    assert sum(v.numel() for v in sd.values()) == 3_050_758_720


def test_state_dict_names_and_shapes():
    with torch.device("meta"):
        m = HunyuanDiT()
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    expected = {
        "x_embedder.weight": (2048, 64),
        "t_embedder.mlp.0.weight": (8192, 2048),
        "t_embedder.mlp.2.bias": (2048,),
        "blocks.0.attn1.to_q.weight": (2048, 2048),
        "blocks.0.attn1.q_norm.weight": (128,),
        "blocks.20.attn1.out_proj.bias": (2048,),
        "blocks.3.attn2.to_k.weight": (2048, 1024),
        "blocks.3.attn2.k_norm.weight": (128,),
        "blocks.14.mlp.fc1.weight": (8192, 2048),
        "blocks.11.skip_linear.weight": (2048, 4096),
        "blocks.20.skip_norm.bias": (2048,),
        "blocks.15.moe.gate.weight": (8, 2048),
        "blocks.15.moe.experts.7.net.0.proj.weight": (8192, 2048),
        "blocks.20.moe.shared_experts.net.2.weight": (2048, 8192),
        "final_layer.linear.weight": (64, 2048),
        "final_layer.norm_final.weight": (2048,),
    }
    for k, s in expected.items():
        assert shapes[k] == s, k
    assert not any(k.startswith("blocks.10.skip") for k in shapes)
    assert not any(k.startswith("blocks.15.mlp") or k.startswith("blocks.14.moe") for k in shapes)
    assert not any("bias" in k and ("attn1.to_" in k or "attn2.to_" in k) for k in shapes)


# ---- an independent functional reference written from reference §2.2 (explicit index arithmetic) ----
def _rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w


def _ln(x, sd, p):
    return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], eps=1e-6)


def _lin(x, sd, p):
    return F.linear(x, sd[p + ".weight"], sd.get(p + ".bias"))


def _heads(x, H, hd):
    return x.view(*x.shape[:2], H, hd).transpose(1, 2)


def ref_forward(sd, x, t, cond, depth, H, num_moe, top_k):
    D = sd["x_embedder.weight"].shape[0]
    hd, half = D // H, D // 2
    f = torch.exp(-math.log(10000) * torch.arange(half) / half)
    te = torch.cat([torch.sin(t[:, None] * f), torch.cos(t[:, None] * f)], -1)
    c = _lin(F.gelu(_lin(te, sd, "t_embedder.mlp.0")), sd, "t_embedder.mlp.2")
    h = torch.cat([c[:, None], _lin(x, sd, "x_embedder")], 1)
    skips = []
    for i in range(depth):
        p = f"blocks.{i}"
        if i > depth // 2:
            h = _ln(_lin(torch.cat([skips.pop(), h], -1), sd, p + ".skip_linear"), sd, p + ".skip_norm")
        a = _ln(h, sd, p + ".norm1")
        Q, K, V = (_lin(a, sd, f"{p}.attn1.to_{n}") for n in "qkv")
        cat = torch.cat([Q, K, V], -1)  # head j: q = cat[3hd j : 3hd j + hd], k next hd, v next hd
        q = torch.stack([cat[..., 3 * hd * j : 3 * hd * j + hd] for j in range(H)], 1)
        k = torch.stack([cat[..., 3 * hd * j + hd : 3 * hd * j + 2 * hd] for j in range(H)], 1)
        v = torch.stack([cat[..., 3 * hd * j + 2 * hd : 3 * hd * (j + 1)] for j in range(H)], 1)
        q, k = _rms(q, sd[p + ".attn1.q_norm.weight"]), _rms(k, sd[p + ".attn1.k_norm.weight"])
        o = ((q @ k.transpose(-1, -2)) / math.sqrt(hd)).softmax(-1) @ v
        h = h + _lin(o.transpose(1, 2).flatten(2), sd, p + ".attn1.out_proj")
        a = _ln(h, sd, p + ".norm2")
        q = _heads(_lin(a, sd, p + ".attn2.to_q"), H, hd)
        kv = torch.cat([_lin(cond, sd, p + ".attn2.to_k"), _lin(cond, sd, p + ".attn2.to_v")], -1)
        k = torch.stack([kv[..., 2 * hd * j : 2 * hd * j + hd] for j in range(H)], 1)
        v = torch.stack([kv[..., 2 * hd * j + hd : 2 * hd * (j + 1)] for j in range(H)], 1)
        q, k = _rms(q, sd[p + ".attn2.q_norm.weight"]), _rms(k, sd[p + ".attn2.k_norm.weight"])
        o = ((q @ k.transpose(-1, -2)) / math.sqrt(hd)).softmax(-1) @ v
        h = h + _lin(o.transpose(1, 2).flatten(2), sd, p + ".attn2.out_proj")
        a = _ln(h, sd, p + ".norm3")
        if depth - i <= num_moe:
            ff = lambda z, e: _lin(F.gelu(_lin(z, sd, f"{e}.net.0.proj")), sd, f"{e}.net.2")
            scores = F.linear(a, sd[p + ".moe.gate.weight"]).softmax(-1)  # [B, L, E]
            w, idx = scores.topk(top_k, -1)
            y = ff(a, p + ".moe.shared_experts")
            for e in range(scores.shape[-1]):  # every expert on every token, weighted by its top-k weight
                we = (w * (idx == e)).sum(-1, keepdim=True)
                y = y + we * ff(a, f"{p}.moe.experts.{e}")
            h = h + y
        else:
            h = h + _lin(F.gelu(_lin(a, sd, p + ".mlp.fc1")), sd, p + ".mlp.fc2")
        if i < depth // 2:
            skips.append(h)
    return _lin(_ln(h, sd, "final_layer.norm_final")[:, 1:], sd, "final_layer.linear")


@pytest.mark.parametrize("depth", [5, 6, 7])
def test_forward_matches_functional_reference(depth):
    m = tiny_dit(depth=depth)
    torch.manual_seed(1)
    x, t, cond = torch.randn(2, 16, 8), torch.rand(2), torch.randn(2, 5, 32)
    with torch.no_grad():
        out = m(x, t, cond)
        ref = ref_forward(m.state_dict(), x, t, cond, depth, 4, 2, 2)
    assert out.shape == (2, 16, 8)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_time_token_and_no_positional_embedding():
    m = tiny_dit()
    torch.manual_seed(2)
    x, t, cond = torch.randn(1, 16, 8), torch.rand(1), torch.randn(1, 5, 32)
    perm = torch.randperm(16)
    with torch.no_grad():
        out = m(x, t, cond)
        torch.testing.assert_close(m(x[:, perm], t, cond), out[:, perm], atol=1e-5, rtol=1e-5)
        assert (m(x, t + 0.3, cond) - out).abs().max() > 1e-4  # the time token matters


def test_moe_routed_equals_dense_and_train_equals_eval():
    torch.manual_seed(3)
    moe = MoE(32, 64, num_experts=4, top_k=2)
    x = torch.randn(3, 10, 32)
    with torch.no_grad():
        scores = moe.gate(x.reshape(-1, 32))[2]
        w, idx = scores.topk(2, -1)
        ref = moe.shared_experts(x.reshape(-1, 32))
        for e in range(4):
            ref = ref + (w * (idx == e)).sum(-1, keepdim=True) * moe.experts[e](x.reshape(-1, 32))
        torch.testing.assert_close(moe.eval()(x), ref.view(3, 10, 32), atol=1e-6, rtol=1e-6)
    out = moe.train()(x)
    torch.testing.assert_close(out.detach(), ref.view(3, 10, 32), atol=1e-6, rtol=1e-6)
    assert moe.aux_loss is not None and moe.aux_loss.item() > 0
    out.sum().backward()
    assert moe.gate.weight.grad is not None and moe.gate.weight.grad.abs().sum() > 0
    used = idx.unique().tolist()
    assert all(moe.experts[e].net[0].proj.weight.grad is not None for e in used)


def test_batch_consistency_and_backward():
    m = tiny_dit().train()
    torch.manual_seed(4)
    x, t, cond = torch.randn(3, 16, 8), torch.rand(3), torch.randn(3, 5, 32)
    out = m(x, t, cond)
    one = m(x[1:2], t[1:2], cond[1:2])
    torch.testing.assert_close(out[1:2], one, atol=1e-5, rtol=1e-5)
    out.square().mean().backward()
    assert m.blocks[0].attn1.to_q.weight.grad.abs().sum() > 0
    assert m.x_embedder.weight.grad.abs().sum() > 0


def test_timestep_scale_feeds_the_time_token_t_times_scale():
    """``timestep_scale`` k: the model at (x, t) equals the upstream model (k = 1) at (x, k t), same weights."""
    base, scaled = tiny_dit(), tiny_dit(timestep_scale=1000.0)
    scaled.load_state_dict(base.state_dict())  # no new parameters: the state dict is upstream's
    assert scaled.config["timestep_scale"] == 1000.0 and base.config["timestep_scale"] == 1.0
    torch.manual_seed(5)
    x, t, cond = torch.randn(2, 16, 8), torch.rand(2), torch.randn(2, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(scaled(x, t, cond), base(x, t * 1000.0, cond), atol=1e-5, rtol=1e-5)
        assert (scaled(x, t, cond) - base(x, t, cond)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="timestep_scale"):
        HunyuanDiT(**{**TINY, "timestep_scale": 0.0})
