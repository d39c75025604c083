"""Masks (pinned densities, token-level rule) and backends (each equals dense, forward and backward)."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from sculpt4d.models.attention import VARIANTS, build_block_mask, choose_backend, sparse_attention

CONF = __import__("pathlib").Path(__file__).resolve().parents[1] / "conf" / "attention"


@pytest.mark.parametrize(
    "T,anchor,expected", [(8, True, 0.5569), (16, True, 0.3575), (16, False, 0.3101), (32, True, 0.2222)]
)
def test_blockmask_pinned_densities(T, anchor, expected):
    m = build_block_mask("blockmask", T, 4096, block_size=128, anchor=anchor)
    assert round(m.density, 4) == expected
    assert m.block_density == m.density


def _token_blockmask(T, N, b, decay, anchor):
    """Independent token-level statement of the DESIGN §4 rule, reduced to blocks by 'any token pair'."""
    r = torch.arange(N)
    keep = torch.zeros(T * N // b, T * N // b, dtype=torch.bool)
    for i in range(T):
        for j in range(T):
            d = abs(i - j)
            if d <= 1 or (anchor and j == 0):
                tok = torch.ones(N, N, dtype=torch.bool)
            else:
                w = 2 ** (math.floor(math.log2(N)) + 1) / 2 ** (math.floor(math.log2(d)) + 1) * decay
                if w < b and d % round(b / w):
                    tok = torch.zeros(N, N, dtype=torch.bool)
                else:
                    tok = (r[:, None] - r[None]).abs() <= max(w, b)
            blk = tok.view(N // b, b, N // b, b).any(3).any(1)
            keep[i * N // b : (i + 1) * N // b, j * N // b : (j + 1) * N // b] = blk
    return keep


@pytest.mark.parametrize(
    "T,N,b,decay", [(9, 64, 8, 0.25), (12, 128, 16, 0.25), (6, 64, 4, 0.5), (34, 32, 8, 0.25)]
)
@pytest.mark.parametrize("anchor", [True, False])
def test_blockmask_matches_token_level_rule(T, N, b, decay, anchor):
    m = build_block_mask("blockmask", T, N, block_size=b, decay=decay, anchor=anchor)
    assert torch.equal(m.blocks, _token_blockmask(T, N, b, decay, anchor))


def test_variant_structure():
    T, N, b = 8, 256, 32
    nb = N // b
    for v in VARIANTS:  # the same-frame blocks are always kept (T=1 is the 3D model)
        m = build_block_mask(v, T, N, block_size=b)
        for i in range(T):
            assert m.blocks[i * nb : (i + 1) * nb, i * nb : (i + 1) * nb].all(), v
        assert 0 < m.density <= 1
    assert build_block_mask("full", T, N, b).density == 1.0
    assert build_block_mask("spatial", T, N, b).density == pytest.approx(1 / T)
    tm = build_block_mask("temporal", T, N, b)
    assert tm.density == pytest.approx(1 / T + (T - 1) / (T * N))  # own frame + 1 token per other frame
    fp = build_block_mask("framepack", 16, 4096, 128)
    kept = fp.frame_density()[15]  # query frame 15: nearest full, then 1/2, 1/4, ... (>= one block)
    assert kept[15] == 1 and kept[14] == 1 and kept[13] == 0.5 and kept[12] == 0.25 and kept[0] == 1 / 32
    rad = build_block_mask("radial", 16, 4096, 128)
    assert rad.frame_density()[0, 0] == 1 and rad.frame_density()[5, 0] < 1  # no anchor
    # more frames -> lower density; the anchor adds density
    assert build_block_mask("framepack", 32, 4096).density < fp.density


def test_cached_and_block_level_memory():
    a = build_block_mask("blockmask", 16, 4096)
    assert build_block_mask("blockmask", 16, 4096, block_size=128, anchor=True) is a
    assert a.patterns.numel() <= 8 * 32 * 32 and a.pair_pattern.shape == (16, 16)
    with pytest.raises(ValueError, match="unknown option"):
        build_block_mask("blockmask", 4, 256, decya=0.3)
    with pytest.raises(ValueError, match="multiple of block_size"):
        build_block_mask("blockmask", 4, 100, block_size=32)


def test_configs_compose_into_masks():
    for v in ("blockmask", "radial", "framepack", "rope", "full", "temporal"):
        cfg = yaml.safe_load((CONF / f"{v}.yaml").read_text())
        assert cfg["variant"] == v and cfg["backend"] == "auto" and "_target_" not in cfg
        cfg["block_size"] = 32
        m = build_block_mask(cfg.pop("variant"), 4, 128, **cfg)
        assert m.density > 0


def _inputs(T, N, B=2, H=2, D=8, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T * N, D, generator=g, dtype=dtype) for _ in range(3))
    kp, vp = (torch.randn(B, H, T, 1, D, generator=g, dtype=dtype) for _ in range(2))
    return q, k, v, (kp, vp)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("T,N,b", [(1, 32, 8), (7, 64, 8), (10, 32, 4)])
@pytest.mark.parametrize("prefix", [False, True])
def test_gather_equals_dense_forward_backward(variant, T, N, b, prefix):
    m = build_block_mask(variant, T, N, block_size=b)
    q, k, v, pre = _inputs(T, N)
    leaves = [q, k, v, *pre]
    for x in leaves:
        x.requires_grad_(True)
    outs, grads = [], []
    for backend in ("dense", "gather"):
        out = sparse_attention(q, k, v, m, backend, prefix_kv=pre if prefix else None)
        g = torch.autograd.grad(
            (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum(), leaves[: 5 if prefix else 3]
        )
        outs.append(out.detach())
        grads.append(g)
    torch.testing.assert_close(outs[1], outs[0], atol=1e-10, rtol=1e-10)
    for a, c in zip(*grads):
        torch.testing.assert_close(c, a, atol=1e-10, rtol=1e-10)


def test_dense_mask_is_the_attention_pattern():
    """Perturbing a masked-out key leaves the output unchanged; a kept key changes it."""
    T, N, b = 6, 32, 8
    m = build_block_mask("blockmask", T, N, block_size=b)
    q, k, v, _ = _inputs(T, N, B=1, H=1)
    dense = m.dense_bool()
    qi = 5 * N + 3  # a token of frame 5
    off = (~dense[qi]).nonzero().flatten()[0].item()
    on = dense[qi].nonzero().flatten()[-1].item()
    base = sparse_attention(q, k, v, m, "gather")[0, 0, qi]
    for idx, changes in ((off, False), (on, True)):
        v2 = v.clone()
        v2[0, 0, idx] += 10
        moved = (sparse_attention(q, k, v2, m, "gather")[0, 0, qi] - base).abs().max() > 1e-6
        assert bool(moved) == changes


def test_fp32_gather_close_to_dense_and_auto_on_cpu():
    m = build_block_mask("blockmask", 8, 64, block_size=16)
    q, k, v, pre = _inputs(8, 64, dtype=torch.float32)
    assert choose_backend(q, m, True) == "gather"
    torch.testing.assert_close(
        sparse_attention(q, k, v, m, "auto", pre),
        sparse_attention(q, k, v, m, "dense", pre),
        atol=1e-5,
        rtol=1e-5,
    )


@pytest.mark.parametrize("T,N", [(8, 128), (16, 256), (8, 512), (16, 1024)])
def test_cpu_auto_rule_is_gather_at_every_size(T, N):
    """CPU ``auto`` = gather, also at the tiny model's 8 x 128 (measured faster than dense: --crossover)."""
    m = build_block_mask("blockmask", T, N, block_size=32)
    assert choose_backend(torch.zeros(1, 1, 1, 8), m, True) == "gather"


def test_dense_token_mask_is_built_once_and_reused():
    m = build_block_mask("radial", 4, 32, block_size=8)
    q, k, v, pre = _inputs(4, 32, dtype=torch.float32)
    first = sparse_attention(q, k, v, m, "dense", pre)
    cached = m._plans[("dense", 1, "cpu")]
    assert torch.equal(sparse_attention(q, k, v, m, "dense", pre), first)
    assert m._plans[("dense", 1, "cpu")] is cached
    with pytest.raises(ValueError, match="unknown attention backend"):
        sparse_attention(q, k, v, m, "triton")


def test_block_sparse_attn_missing_or_cpu_is_a_clear_error():
    m = build_block_mask("blockmask", 2, 128, block_size=128)
    q, k, v, _ = _inputs(2, 128, dtype=torch.float32)
    with pytest.raises((ImportError, ValueError), match=r"optional package 'block_sparse_attn'|needs CUDA"):
        sparse_attention(q, k, v, m, "block_sparse_attn")


@pytest.mark.slow
def test_flex_compiled_cpu_inference_equals_dense():
    """FlexAttention under torch.compile on CPU (inference only): ~1-2 min of compilation."""
    for variant in ("blockmask", "temporal"):
        m = build_block_mask(variant, 4, 64, block_size=16)
        q, k, v, pre = _inputs(4, 64, B=1, dtype=torch.float32)
        with torch.no_grad():
            for p in (None, pre):
                torch.testing.assert_close(
                    sparse_attention(q, k, v, m, "flex", p),
                    sparse_attention(q, k, v, m, "dense", p),
                    atol=2e-5,
                    rtol=2e-5,
                )
    q.requires_grad_(True)
    with pytest.raises(ValueError, match="no backward on CPU"):
        sparse_attention(q, k, v, m, "flex")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_backends_equal_dense_forward_backward(variant, dtype):
    T, N, b = 6, 256, 128
    m = build_block_mask(variant, T, N, block_size=b)
    q, k, v, pre = (
        x.cuda() if not isinstance(x, tuple) else tuple(y.cuda() for y in x)
        for x in _inputs(T, N, B=2, H=4, D=64, dtype=dtype)
    )
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    backends = ["gather", "flex"] + (
        ["block_sparse_attn"] if choose_backend(q.half(), m) == "block_sparse_attn" else []
    )
    for p in (None, pre):
        leaves = [q, k, v, *(p or ())]
        ref_leaves = [x.detach().float().requires_grad_(True) for x in leaves]
        ref = sparse_attention(*ref_leaves[:3], m, "dense", tuple(ref_leaves[3:]) or None)
        ref_grads = torch.autograd.grad(ref.square().sum(), ref_leaves)
        for be in backends:
            if be == "block_sparse_attn" and (p is not None or dtype == torch.float32):
                continue
            ls = [x.detach().clone().requires_grad_(True) for x in leaves]
            out = sparse_attention(*ls[:3], m, be, tuple(ls[3:]) or None)
            torch.testing.assert_close(out.float(), ref, **tol)
            grads = torch.autograd.grad(out.float().square().sum(), ls)
            for g, r in zip(grads, ref_grads):
                torch.testing.assert_close(g.float(), r, **{k_: 5 * v_ for k_, v_ in tol.items()})


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "temporal"])
def test_cuda_varlen_equals_dense_forward(variant):
    T, N, b = 6, 256, 128
    m = build_block_mask(variant, T, N, block_size=b)
    q, k, v, pre = (
        x.cuda() if not isinstance(x, tuple) else tuple(y.cuda() for y in x)
        for x in _inputs(T, N, B=2, H=4, D=64, dtype=torch.bfloat16)
    )
    for p in (None, pre):
        ref = sparse_attention(q.float(), k.float(), v.float(), m, "dense", p and tuple(x.float() for x in p))
        out = sparse_attention(q, k, v, m, "varlen", p)
        torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)


VARLEN_VARIANTS = [v for v in VARIANTS if v != "temporal"]


@pytest.mark.parametrize("variant", VARLEN_VARIANTS)
@pytest.mark.parametrize("T,N,b", [(1, 32, 8), (7, 64, 8), (10, 32, 4), (16, 256, 32)])
@pytest.mark.parametrize("prefix", [False, True])
def test_varlen_equals_dense_forward(variant, T, N, b, prefix):
    m = build_block_mask(variant, T, N, block_size=b)
    q, k, v, pre = _inputs(T, N)
    p = pre if prefix else None
    ref = sparse_attention(q, k, v, m, "dense", prefix_kv=p)
    torch.testing.assert_close(
        sparse_attention(q, k, v, m, "varlen", prefix_kv=p), ref, atol=1e-10, rtol=1e-10
    )


def test_varlen_chunks_merge_exactly(monkeypatch):
    from sculpt4d.models.attention import varlen

    m = build_block_mask("blockmask", 12, 64, block_size=8)
    q, k, v, pre = _inputs(12, 64, B=3)
    ref = sparse_attention(q, k, v, m, "varlen", prefix_kv=pre)  # one chunk
    monkeypatch.setattr(varlen, "VARLEN_CHUNK_BYTES", 1 << 18)
    plan = varlen.varlen_plan(m, 1)
    n_chunks = len(varlen._chunks(plan, 3, 2 * 8 * (8 + 4)))  # bytes per packed query and output here
    assert 1 < n_chunks < plan.num_sequences  # several chunks, several sequences in some
    out = sparse_attention(q, k, v, m, "varlen", prefix_kv=pre)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(
        out, sparse_attention(q, k, v, m, "dense", prefix_kv=pre), atol=1e-10, rtol=1e-10
    )


@pytest.mark.parametrize("variant", VARLEN_VARIANTS)
def test_varlen_plan_covers_each_kept_token_pair_once(variant):
    from sculpt4d.models.attention.varlen import varlen_plan

    T, N, b, P = 9, 64, 8, 1
    m = build_block_mask(variant, T, N, block_size=b)
    plan = varlen_plan(m, P)
    count = torch.zeros(T * N, T * N + T * P, dtype=torch.int64)
    for s in range(plan.num_sequences):
        qi = plan.q_index[plan.q_cu[s] : plan.q_cu[s + 1]]
        ki = plan.k_start[s] + torch.arange(plan.k_len[s])
        count[qi[:, None], ki[None]] += 1
    frame_q = torch.arange(T * N) // N
    expected = torch.cat([m.dense_bool(), frame_q[:, None] == torch.arange(T * P)[None] // P], 1)
    assert torch.equal(count, expected.long())


def test_varlen_is_forward_only_and_has_no_token_diagonal_blocks():
    q, k, v, _ = _inputs(4, 32)
    with pytest.raises(ValueError, match="forward-only"):
        sparse_attention(q.requires_grad_(True), k, v, build_block_mask("blockmask", 4, 32, 8), "varlen")
    with torch.no_grad(), pytest.raises(ValueError, match="token-diagonal"):
        sparse_attention(q, k, v, build_block_mask("temporal", 4, 32, 8), "varlen")


def _fwd_bwd(m, backend, leaves, prefix):
    out = sparse_attention(*leaves[:3], m, backend, prefix_kv=tuple(leaves[3:]) if prefix else None)
    w = torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)
    return out.detach(), torch.autograd.grad((out * w).sum(), leaves if prefix else leaves[:3])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("T,N,b", [(1, 48, 16), (3, 96, 32), (5, 384, 128), (4, 160, 32), (9, 80, 16)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gather_odd_shapes_equal_dense(variant, T, N, b, dtype):
    """CPU gather (strided parts merged by log-sum-exp, custom backward) == dense, fwd + bwd, +-2 prefix keys."""
    m = build_block_mask(variant, T, N, block_size=b)
    g = torch.Generator().manual_seed(T * N + b)
    q, k, v = (
        torch.randn(1, T * N, 3, 8, generator=g, dtype=dtype).transpose(1, 2) for _ in range(3)
    )  # strided
    kp, vp = (torch.randn(1, 3, T, 2, 8, generator=g, dtype=dtype) for _ in range(2))
    tol = dict(atol=1e-10, rtol=1e-10) if dtype == torch.float64 else dict(atol=2e-5, rtol=2e-5)
    for prefix in (False, True):
        leaves = [x.detach().requires_grad_(True) for x in (q, k, v, kp, vp)]
        (ref, ref_g), (out, out_g) = (_fwd_bwd(m, be, leaves, prefix) for be in ("dense", "gather"))
        torch.testing.assert_close(out, ref, **tol)
        for a, c in zip(out_g, ref_g):
            torch.testing.assert_close(a, c, **tol)


@pytest.mark.parametrize("variant", ["blockmask", "temporal", "framepack", "full"])
def test_gather_bf16_close_to_fp32_dense(variant):
    m = build_block_mask(variant, 4, 128, block_size=32)
    q, k, v, pre = _inputs(4, 128, dtype=torch.float32)
    ref = sparse_attention(q, k, v, m, "dense", pre)
    leaves = [x.bfloat16().requires_grad_(True) for x in (q, k, v, *pre)]
    out = sparse_attention(*leaves[:3], m, "gather", tuple(leaves[3:]))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)
    grads = torch.autograd.grad(out.float().square().sum(), leaves)
    assert all(gr.dtype == torch.bfloat16 and torch.isfinite(gr.float()).all() for gr in grads)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gather_cpu_plan_covers_each_kept_block_once(variant):
    """Frame parts (strided views) and row stacks tile exactly the kept non-diag blocks; diag offsets hold the rest."""
    from sculpt4d.models.attention.gather import cpu_plan

    T, N, b = 11, 256, 32
    m = build_block_mask(variant, T, N, block_size=b)
    parts, stacks, diag = cpu_plan(m, 0)
    count = torch.zeros(T * N // b, T * N // b, dtype=torch.int64)
    for _src, G, qo, qs, Lq, ko, ks, Lk, _ in parts:
        for g in range(G):
            q0, k0 = (qo + g * qs) // b, (ko + g * ks) // b
            count[q0 : q0 + Lq // b, k0 : k0 + Lk // b] += 1
    for segs, ko, Lk in stacks:
        for qo, qs, G in segs:
            for g in range(G):
                count[(qo + g * qs) // b, ko // b : (ko + Lk) // b] += 1
    assert torch.equal(count, (m.blocks & ~m.diag_blocks).long())
    assert sum(int(d.sum()) for d in diag.values()) == int(m.diag_blocks.sum())
    assert len(parts) + len(stacks) <= 2 * T * m.nb + T  # batched over frames, not one call per query block


@pytest.mark.parametrize(
    "variant", ["blockmask", "radial", "framepack", "rope", "full", "temporal", "spatial"]
)
def test_attention_config_fills_each_variants_defaults_from_one_table(variant):
    """conf/attention/<variant>.yaml names the variant's options without values; AttentionConfig fills them."""
    from sculpt4d.models.attention import VARIANT_OPTIONS, AttentionConfig

    node = yaml.safe_load((CONF / f"{variant}.yaml").read_text())
    options = {k: v for k, v in node.items() if k not in ("variant", "block_size", "backend")}
    assert set(options) == set(VARIANT_OPTIONS[variant]) and all(v is None for v in options.values())
    cfg = AttentionConfig.from_dict(node)
    assert cfg.mask_options() == VARIANT_OPTIONS[variant]
    assert cfg.to_dict() == {
        "variant": variant,
        "block_size": 128,
        **VARIANT_OPTIONS[variant],
        "backend": "auto",
    }
    assert AttentionConfig.from_dict(cfg.to_dict()) == cfg
    mask = build_block_mask(variant, 4, 256, block_size=32, **options)
    assert mask is build_block_mask(
        variant, 4, 256, block_size=32, **VARIANT_OPTIONS[variant]
    )  # same cache entry


def test_attention_config_overrides_and_typos():
    from sculpt4d.models.attention import AttentionConfig

    cfg = AttentionConfig.from_dict({"variant": "radial", "decay": 1, "_target_": "x"}, backend="gather")
    assert (cfg.decay, cfg.anchor, cfg.backend, cfg.min_blocks) == (1.0, False, "gather", None)
    assert AttentionConfig.from_dict({"backend": None}, backend="dense").backend == "dense"
    assert AttentionConfig.from_dict(None) == AttentionConfig(
        variant="blockmask", block_size=128, backend="auto"
    )
    with pytest.raises(
        ValueError, match=r"unknown option\(s\) \['decya'\] for attention variant 'blockmask'"
    ):
        AttentionConfig.from_dict({"variant": "blockmask", "decya": 0.3})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['anchor'\] for attention variant 'full'"):
        AttentionConfig(variant="full", anchor=True)
    with pytest.raises(ValueError, match="unknown attention variant 'sparse'"):
        AttentionConfig(variant="sparse")
