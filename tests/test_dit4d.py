"""DiT4D: reproduces the 3D backbone frame by frame, zero-init adapter, only adapter params train."""

from __future__ import annotations

import pytest
import torch

from sculpt4d.models.attention import VARIANTS
from sculpt4d.models.dit import DiT4D, HunyuanDiT

TINY = dict(
    input_size=16,
    in_channels=8,
    hidden_size=64,
    context_dim=32,
    depth=5,
    num_heads=4,
    num_moe_layers=2,
    num_experts=4,
    moe_top_k=2,
)
B, N = 2, 16


def make(variant="blockmask", seed=0, **att):
    torch.manual_seed(seed)
    bb = HunyuanDiT(**TINY).eval()
    with torch.no_grad():
        for name, p in bb.named_parameters():
            if name.endswith("gate.weight"):
                p.mul_(20.0)  # decisive MoE routing
    m = DiT4D(bb, {"variant": variant, "block_size": 4, **att}, lora_rank=4, max_frames=8, backend="gather")
    return bb, m.eval()


def data(T, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, T, N, 8, generator=g),
        torch.rand(B, T, generator=g),
        torch.randn(B, T, 5, 32, generator=g),
    )


def per_frame(bb, x, t, c):
    return torch.stack([bb(x[:, i], t[:, i], c[:, i]) for i in range(x.shape[1])], 1)


def randomise_adapter(m):
    with torch.no_grad():
        for p in m.adapter.parameters():
            p.copy_(0.05 * torch.randn_like(p))


@pytest.mark.parametrize("variant", VARIANTS)
def test_single_frame_reproduces_3d(variant):
    bb, m = make(variant)
    x, t, c = data(1)
    with torch.no_grad():
        torch.testing.assert_close(m(x, t, c), per_frame(bb, x, t, c), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["gather", "dense"])
def test_block_diagonal_mask_reproduces_3d_at_any_T(backend):
    bb, m = make("spatial")
    m.backend = backend
    x, t, c = data(5)
    with torch.no_grad():
        torch.testing.assert_close(m(x, t, c), per_frame(bb, x, t, c), atol=1e-5, rtol=1e-5)


def test_joint_attention_couples_frames_and_time_token_stays_per_frame():
    bb, m = make("full")
    x, t, c = data(3)
    with torch.no_grad():
        out = m(x, t, c)
        assert (out - per_frame(bb, x, t, c)).abs().max() > 1e-3  # frames now interact
        x2 = x.clone()
        x2[:, 2] += 1.0
        assert (m(x2, t, c)[:, 0] - out[:, 0]).abs().max() > 1e-4  # frame 0 sees frame 2
        t2 = t.clone()  # a frame's own time matters
        t2[:, 1] += 0.5
        assert (m(x, t2, c)[:, 1] - out[:, 1]).abs().max() > 1e-4


def test_scalar_and_per_sample_timesteps():
    _, m = make()
    x, t, c = data(3)
    with torch.no_grad():
        torch.testing.assert_close(m(x, t[:, 0], c), m(x, t[:, :1].expand(B, 3), c))


@pytest.mark.parametrize("variant", ["blockmask", "rope", "temporal", "framepack"])
def test_adapter_at_init_changes_nothing(variant):
    bb, m = make(variant)
    x, t, c = data(4)
    with torch.no_grad():
        out = m(x, t, c)
        # same forward with the adapter removed: LoRA contributions and frame embedding dropped
        for lora in m.adapter.lora:
            for part in (lora.q, lora.k, lora.v, lora.o):
                part.A.zero_()
        torch.testing.assert_close(m(x, t, c), out, atol=0, rtol=0)
        randomise_adapter(m)
        assert (m(x, t, c) - out).abs().max() > 1e-4  # the adapter is wired in


def test_gather_and_dense_backends_agree_in_the_model():
    _, m = make("blockmask")
    randomise_adapter(m)
    x, t, c = data(4, seed=9)
    with torch.no_grad():
        a = m(x, t, c)
        m.backend = "dense"
        torch.testing.assert_close(m(x, t, c), a, atol=1e-5, rtol=1e-5)


def test_only_adapter_trains_and_lora_gradients():
    bb, m = make("blockmask")
    m.train()
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("adapter.") for n in trainable)
    assert not any(p.requires_grad for p in bb.parameters())
    x, t, c = data(4)
    m(x, t, c).square().mean().backward()
    assert all(p.grad is None for p in bb.parameters())
    lora = m.adapter.lora[1]
    for part in (lora.q, lora.k, lora.v, lora.o):
        assert part.B.grad is not None and part.B.grad.abs().sum() > 0  # B gets gradient at init
        assert part.A.grad is not None and part.A.grad.abs().sum() == 0  # A does not while B == 0
    assert m.adapter.frame_embed.grad[:4].abs().sum() > 0 and m.adapter.frame_embed.grad[4:].abs().sum() == 0


def test_state_dict_roundtrip_and_names():
    _, m = make("blockmask")
    randomise_adapter(m)
    sd = m.state_dict()
    assert all(k.startswith(("backbone.", "adapter.")) for k in sd)
    assert "backbone.blocks.0.attn1.to_q.weight" in sd and "adapter.lora.0.q.B" in sd
    _, m2 = make("blockmask", seed=5)
    m2.load_state_dict(sd)
    x, t, c = data(3)
    with torch.no_grad():
        torch.testing.assert_close(m2(x, t, c), m(x, t, c), atol=0, rtol=0)


def test_bad_inputs():
    _, m = make()
    x, t, c = data(3)
    with pytest.raises(ValueError, match="cond"):
        m(x, t, c[:, 0])
    with pytest.raises(ValueError, match="max_frames"):
        m(torch.randn(1, 9, N, 8), torch.rand(1), torch.randn(1, 9, 5, 32))
    with pytest.raises(ValueError, match="unknown"):
        make("blockmask", decya=1.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("variant", ["blockmask", "temporal", "rope"])
def test_cuda_flex_model_equals_gather(variant):
    torch.manual_seed(0)
    bb = HunyuanDiT(**{**TINY, "input_size": 256}).eval()
    with torch.no_grad():
        for name, p in bb.named_parameters():
            if name.endswith("gate.weight"):
                p.mul_(20.0)  # decisive MoE routing
    bb = bb.cuda()
    m = DiT4D(bb, {"variant": variant, "block_size": 128}, lora_rank=4, max_frames=8, backend="flex").cuda()
    randomise_adapter(m)
    g = torch.Generator().manual_seed(1)
    x, t, c = (
        torch.randn(1, 4, 256, 8, generator=g),
        torch.rand(1, 4, generator=g),
        torch.randn(1, 4, 5, 32, generator=g),
    )
    x, t, c = x.cuda(), t.cuda(), c.cuda()
    out = m(x, t, c)
    out.square().mean().backward()
    grad = m.adapter.lora[2].q.B.grad.clone()
    m.zero_grad()
    m.backend = "gather"
    ref = m(x, t, c)
    ref.square().mean().backward()
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(m.adapter.lora[2].q.B.grad, grad, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("variant", ["full", "blockmask", "spatial"])
def test_analytic_flops_match_the_flop_counter(variant):
    """models.flops counts exactly what runs: FlopCounterMode on the gather backend (math SDPA, kept blocks)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from sculpt4d.models.flops import forward_flops, register_cpu_flash_flops, sampling_flops

    register_cpu_flash_flops()
    _, m = make(variant)
    T = 4
    x, t, c = data(T)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        m(x[:1], t[:1], c[:1])
    density = m.mask(T, N).block_density
    analytic = forward_flops(TINY | {"mlp_ratio": 4}, T, N, 5, density, lora_rank=4)["total"]
    assert analytic == pytest.approx(fc.get_total_flops(), rel=0.02)
    # a sampling run: steps x CFG pair; per frame = T single-frame runs (no cross-frame attention)
    run = sampling_flops(m, T, 5, num_steps=3, guidance_scale=5.0)
    assert run == pytest.approx(3 * 2 * analytic)
    single = forward_flops(TINY | {"mlp_ratio": 4}, 1, N, 5, 1.0, lora_rank=4)["total"]
    assert sampling_flops(m, T, 5, 3, 5.0, per_frame=True) == pytest.approx(T * 3 * 2 * single)
    # guidance_until 0.5: time points 0, 0.5, 1, so only the first step runs the CFG pair
    assert sampling_flops(m, T, 5, 3, 5.0, guidance_until=0.5) == pytest.approx(4 * analytic)
    assert sampling_flops(m, T, 5, 3, 5.0, num_samples=3) == pytest.approx(3 * 3 * 2 * analytic)


def test_joint_attention_modules_hold_the_adapter_keys():
    """JointSelfAttention is the per-block adapter module; the state-dict names stay adapter.lora.<i>.{q,k,v,o}."""
    from sculpt4d.models.attention import AttentionConfig
    from sculpt4d.models.dit.dit4d import JointSelfAttention

    bb, m = make("radial", decay=0.5)
    assert (
        all(isinstance(j, JointSelfAttention) for j in m.adapter.lora)
        and len(m.adapter.lora) == TINY["depth"]
    )
    adapter = sorted(k for k in m.state_dict() if not k.startswith("backbone."))
    lora = [f"adapter.lora.{i}.{p}.{w}" for i in range(TINY["depth"]) for p in "qkvo" for w in "AB"]
    assert adapter == sorted(["adapter.frame_embed", *lora])
    assert sorted(k for k in m.state_dict() if k.startswith("backbone.")) == sorted(
        f"backbone.{k}" for k in bb.state_dict()
    )
    assert m.attention == AttentionConfig(variant="radial", block_size=4, backend="gather", decay=0.5)
    m.backend = "dense"
    assert m.attention.backend == "dense" and m.attention.decay == 0.5


@pytest.mark.parametrize("chunk", [1, 7, 40])
def test_token_chunked_feed_forward_matches_the_whole_batch(chunk):
    """``set_ff_chunk_tokens`` (low_vram): MLP and MoE blocks over token chunks give the same velocities."""
    bb, m = make()
    randomise_adapter(m)
    x, t, c = data(3)
    with torch.no_grad():
        ref = m(x, t, c)
        bb.set_ff_chunk_tokens(chunk)
        assert all(blk.ff_chunk_tokens == chunk for blk in bb.blocks)
        out = m(x, t, c)
        bb.set_ff_chunk_tokens(None)
    assert any(blk.is_moe for blk in bb.blocks) and any(not blk.is_moe for blk in bb.blocks)
    assert torch.allclose(out, ref, atol=1e-5)
    # with gradients (training) the blocks run whole: MoE's balance loss needs every token at once
    bb.set_ff_chunk_tokens(chunk)
    calls = []
    handle = bb.blocks[0].mlp.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape))
    m(x, t, c)
    handle.remove()
    assert calls == [torch.Size([B * 3, 1 + N, TINY["hidden_size"]])]
    with pytest.raises(ValueError, match="ff_chunk_tokens"):
        bb.set_ff_chunk_tokens(0)


COMPILE_CHECK = """
import json, sys, torch
sys.path.insert(0, sys.argv[1])
from test_dit4d import data, make
bb, m = make()
x, t, c = data(3)
with torch.no_grad():
    for p in m.adapter.parameters():
        p.normal_(0.0, 0.05)  # a non-trivial adapter
    eager = m(x, t, c)
    bb.compile_regions("default")
    compiled = m(x, t, c)
    regions = [len(b._compiled) for b in bb.blocks]
    bb.compile_regions(None)
    undone = m(x, t, c)
print(json.dumps({"diff": (compiled - eager).abs().max().item(), "undone_equal": torch.equal(undone, eager),
                  "regions": regions, "moe": [b.is_moe for b in bb.blocks]}))
"""


def test_compiled_regions_equal_eager_and_can_be_undone():
    """Regional torch.compile (skip fusion + norm, cross-attention, MLP residuals; self-attention and MoE
    eager) gives the eager velocities up to float rounding; mode None restores the eager path exactly. Run in a
    fresh interpreter: inductor's C++ toolchain setup is sensitive to what a long test session imported before."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run(
        [sys.executable, "-c", COMPILE_CHECK, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["diff"] < 1e-5 and r["undone_equal"]
    assert r["regions"] == [2 if moe else 3 for moe in r["moe"]]
    _, m = make()
    with pytest.raises(ValueError, match="compile mode 'fast'"):
        m.backbone.compile_regions("fast")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_cuda_compiled_regions_equal_eager(mode):
    """On a GPU, compiled regions (``reduce-overhead``: with CUDA graphs), with the gather or varlen kernel, give the
    eager gather velocities (bf16 tolerance)."""
    import torch._dynamo

    torch._dynamo.reset()
    bb, m = make()
    with torch.no_grad():
        for p in m.adapter.parameters():
            p.normal_(0.0, 0.05)
    m = m.cuda().to(torch.bfloat16)
    x, t, c = (z.cuda().to(torch.bfloat16) for z in data(3))
    with torch.no_grad():
        eager = m(x, t, c).float()
        bb.compile_regions(mode)
        for backend in ("gather", "varlen"):
            m.backend = backend
            for _ in range(3):  # CUDA graphs record on a later call
                out = m(x, t, c).float()
            torch.testing.assert_close(out, eager, atol=5e-2, rtol=5e-2)
        bb.compile_regions(None)
