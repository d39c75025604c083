"""One entry point, ``sparse_attention(q, k, v, mask, backend)``, over four exact backends.

q, k, v: ``[B, H, T*N, D]`` (frame-major tokens). ``prefix_kv=(k_p, v_p)``, each ``[B, H, T, P, D]``, adds
P keys per frame that every query of that frame (and only that frame) also attends to -- DiT4D uses it
for the per-frame time token. Backends:
- ``block_sparse_attn``: MIT Han Lab kernel (CUDA, fp16/bf16, head dim 32/64/128, 128-blocks; no prefix,
  no token-diagonal blocks).
- ``flex``: torch FlexAttention with a BlockMask made from the block structure (CUDA; CPU inference only).
- ``gather``: any device, autograd-safe. CPU: ``gather.py`` (strided views of the kept key runs, no key copies,
  parts merged by log-sum-exp, custom backward). Elsewhere: query blocks grouped by their number of kept key
  blocks, kept key blocks gathered, one SDPA per group (chunked). Cost and memory scale with the kept blocks.
- ``varlen``: forward only. The gather plan's key runs as the sequences of one variable-length flash call on
  CUDA (fp16/bf16), merged by log-sum-exp (``varlen.py``); one CPU flash call per sequence elsewhere.
- ``dense``: SDPA with the full token mask (the O((TN)^2) reference).
``auto``: block_sparse_attn on CUDA when importable and applicable, else flex on CUDA, else gather. On a CPU
gather also wins at the tiny model's sizes (T x N = 8 x 128 .. 16 x 512, 4 heads x 48, block 32: 0.5-0.85x the
time of dense, forward and forward+backward; ``benchmarks/attention.py --crossover`` re-measures it).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sculpt4d.errors import MissingDependencyError

from .gather import gather_attention_cpu
from .masks import BlockMask4D
from .varlen import varlen_attention

BACKENDS = ("auto", "block_sparse_attn", "flex", "gather", "varlen", "dense")
GATHER_CHUNK_BYTES = 256 * 2**20  # bound on the gathered k+v of one SDPA call
DENSE_MASK_CACHE_ELEMENTS = 2**24  # dense: token masks up to 16 MiB stay cached with their BlockMask4D


def sparse_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: BlockMask4D,
    backend: str = "auto",
    prefix_kv: tuple[Tensor, Tensor] | None = None,
    flex_options: dict[str, Any] | None = None,
) -> Tensor:
    """Attention of q over k, v restricted to ``mask`` (+ per-frame prefix keys) -> ``[B, H, T*N, D]``.

    ``flex_options``: FlexAttention ``kernel_options`` (e.g. BLOCK_M, BLOCK_N, num_warps, num_stages) for the
    flex backend; None = its own choice. ``benchmarks/attention.py --flex-options`` sweeps them."""
    B, H, L, D = q.shape
    if L != mask.T * mask.N or k.shape[2] != L:
        raise ValueError(f"q/k have {L}/{k.shape[2]} tokens but the mask is for T={mask.T} x N={mask.N}")
    if backend == "auto":
        backend = choose_backend(q, mask, prefix_kv is not None)
    if backend == "gather":
        return gather_attention(q, k, v, mask, prefix_kv)
    if backend == "dense":
        return dense_attention(q, k, v, mask, prefix_kv)
    if backend == "varlen":
        return varlen_attention(q, k, v, mask, prefix_kv)
    if backend == "flex":
        return flex_attention(q, k, v, mask, prefix_kv, flex_options)
    if backend == "block_sparse_attn":
        if prefix_kv is not None:
            raise ValueError("block_sparse_attn cannot add per-frame prefix keys; use backend flex or gather")
        return block_sparse_attn(q, k, v, mask)
    raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")


@functools.cache
def _block_sparse_func() -> Any:
    try:
        from block_sparse_attn import block_sparse_attn_func
    except ImportError:
        return None
    return block_sparse_attn_func


def choose_backend(q: Tensor, mask: BlockMask4D, has_prefix: bool = False) -> str:
    """The ``auto`` rule (see module docstring)."""
    if not q.is_cuda:
        return "gather"
    kernel_ok = (
        q.dtype in (torch.float16, torch.bfloat16)
        and q.shape[-1] in (32, 64, 128)
        and mask.block_size == 128
        and not bool(mask.diag.any())
        and not has_prefix
    )
    if kernel_ok and _block_sparse_func() is not None:
        return "block_sparse_attn"
    return "flex"


# ------------------------------------------------------------------------------------------ dense
def dense_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: BlockMask4D, prefix_kv: tuple[Tensor, Tensor] | None = None
) -> Tensor:
    """Reference: SDPA with the full ``[TN, TN(+TP)]`` boolean token mask (kept with the mask up to
    ``DENSE_MASK_CACHE_ELEMENTS``, rebuilt per call above)."""
    P = 0 if prefix_kv is None else prefix_kv[0].shape[3]
    key = ("dense", P, str(q.device))
    m = mask._plans.get(key)
    if m is None:
        m = mask.dense_bool(q.device)  # [TN, TN]
        if P:
            frame_q = torch.arange(mask.T * mask.N, device=q.device) // mask.N
            m = torch.cat([m, (frame_q[:, None] == torch.arange(mask.T * P, device=q.device) // P)], dim=1)
        if m.numel() <= DENSE_MASK_CACHE_ELEMENTS:
            mask._plans[key] = m  # [TN, TN + TP]
    if prefix_kv is not None:
        kp, vp = prefix_kv  # [B, H, T, P, D]
        k = torch.cat([k, kp.flatten(2, 3)], dim=2)
        v = torch.cat([v, vp.flatten(2, 3)], dim=2)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=m)


# ----------------------------------------------------------------------------------------- gather
def _gather_plan(mask: BlockMask4D, device: torch.device) -> list[tuple[Tensor, Tensor, int, int]]:
    """Groups of query blocks with equal (#full, #diag) kept key blocks: (rows [G], keys [G, K], nf, nd).

    Keys of a row are its full blocks then its diag blocks, each ascending."""
    key = ("gather", str(device))
    if key not in mask._plans:
        full = mask.blocks & ~mask.diag_blocks
        diag = mask.diag_blocks
        nf, nd = full.sum(1), diag.sum(1)
        sig = nf * (mask.T * mask.nb + 1) + nd
        plan = []
        for s in sig.unique().tolist():
            rows = (sig == s).nonzero().flatten()
            f, d = int(nf[rows[0]]), int(nd[rows[0]])
            kf = full[rows].nonzero()[:, 1].view(len(rows), f)
            kd = diag[rows].nonzero()[:, 1].view(len(rows), d)
            plan.append((rows.to(device), torch.cat([kf, kd], 1).to(device), f, d))
        mask._plans[key] = plan
    return mask._plans[key]


def gather_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: BlockMask4D, prefix_kv: tuple[Tensor, Tensor] | None = None
) -> Tensor:
    """Exact block-sparse attention by gathering the kept key blocks of each query-block group."""
    if q.device.type == "cpu":
        return gather_attention_cpu(q, k, v, mask, prefix_kv)
    B, H, L, D = q.shape
    b, nbt = mask.block_size, mask.T * mask.nb
    qb, kb, vb = (x.contiguous().view(B, H, nbt, b, D) for x in (q, k, v))  # [B, H, T*nb, b, D]
    P = 0 if prefix_kv is None else prefix_kv[0].shape[3]
    outs, order = [], []
    for rows, keys, nf, nd in _gather_plan(mask, q.device):
        K = keys.shape[1]
        per_row = B * H * (K * b + P) * D * q.element_size() * 2
        step = max(1, GATHER_CHUNK_BYTES // per_row)
        attn_mask = None
        if nd:
            attn_mask = torch.ones(b, K * b + P, dtype=torch.bool, device=q.device)
            attn_mask[:, nf * b : K * b] = torch.eye(b, dtype=torch.bool, device=q.device).repeat(1, nd)
        for s in range(0, len(rows), step):
            r, kk = rows[s : s + step], keys[s : s + step]  # [G], [G, K]
            G = len(r)
            qg = qb[:, :, r]  # [B, H, G, b, D]   (advanced indexing: ~2x faster than index_select here)
            kg = kb[:, :, kk.flatten()].reshape(B, H, G, K * b, D)
            vg = vb[:, :, kk.flatten()].reshape(B, H, G, K * b, D)
            if P:
                frames = r // mask.nb
                kg = torch.cat([kg, prefix_kv[0].index_select(2, frames)], dim=3)  # [B, H, G, K*b+P, D]
                vg = torch.cat([vg, prefix_kv[1].index_select(2, frames)], dim=3)
            o = F.scaled_dot_product_attention(
                qg.reshape(B, H * G, b, D),
                kg.reshape(B, H * G, K * b + P, D),
                vg.reshape(B, H * G, K * b + P, D),
                attn_mask=attn_mask,
            )
            outs.append(o.reshape(B, H, G, b, D))
            order.append(r)
    out = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]  # [B, H, T*nb, b, D] in plan order
    inv = torch.empty(nbt, dtype=torch.long, device=q.device)
    cat_rows = torch.cat(order)
    inv[cat_rows] = torch.arange(nbt, device=q.device)
    return out[:, :, inv].reshape(B, H, L, D)


# ------------------------------------------------------------------------------------------- flex
@functools.cache
def _compiled_flex() -> Any:
    from torch.nn.attention.flex_attention import flex_attention as fa

    return torch.compile(fa, dynamic=False)


def flex_block_mask(mask: BlockMask4D, P: int, device: torch.device) -> Any:
    """FlexAttention BlockMask: kept pattern blocks are 'full' blocks; diag blocks and the per-frame prefix
    (T*P keys appended after the T*N latents) are 'partial' blocks evaluated with a mask_mod."""
    key = ("flex", P, str(device))
    if key in mask._plans:
        return mask._plans[key]
    from torch.nn.attention.flex_attention import BlockMask

    T, N, b, nbt = mask.T, mask.N, mask.block_size, mask.T * mask.nb
    n_pre = -(-T * P // b)  # blocks holding the prefix keys
    full = torch.zeros(nbt, nbt + n_pre, dtype=torch.bool)
    full[:, :nbt] = mask.blocks & ~mask.diag_blocks
    part = torch.zeros_like(full)
    part[:, :nbt] = mask.diag_blocks
    for f in range(T):  # query frame f sees the prefix keys [T*N + f*P, T*N + (f+1)*P)
        lo, hi = (f * P) // b, (f * P + P - 1) // b if P else -1
        part[f * mask.nb : (f + 1) * mask.nb, nbt + lo : nbt + hi + 1] = True

    def to_idx(m: Tensor) -> tuple[Tensor, Tensor]:
        num = m.sum(1).to(torch.int32)
        idx = torch.argsort((~m).to(torch.int8), dim=1, stable=True).to(torch.int32)
        return num[None, None].to(device), idx[None, None].to(device)

    TN = T * N

    def mask_mod(b_, h_, q_idx, kv_idx):  # only evaluated inside partial blocks
        lat = kv_idx < TN
        same_token = (q_idx % N) == (kv_idx % N)
        own_prefix = ((kv_idx - TN) // max(P, 1)) == (q_idx // N)
        return torch.where(lat, same_token, own_prefix)

    kv_num, kv_idx = to_idx(part)
    full_num, full_idx = to_idx(full)
    bm = BlockMask.from_kv_blocks(
        kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=b, mask_mod=mask_mod, seq_lengths=(TN, TN + T * P)
    )
    mask._plans[key] = bm
    return bm


def flex_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: BlockMask4D,
    prefix_kv: tuple[Tensor, Tensor] | None = None,
    kernel_options: dict[str, Any] | None = None,
) -> Tensor:
    """FlexAttention (compiled; ``kernel_options`` passed to the kernel). On CPU there is no backward:
    inference only."""
    if not q.is_cuda and torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        raise ValueError("flex attention has no backward on CPU; use backend='gather' for training")
    P = 0
    if prefix_kv is not None:
        P = prefix_kv[0].shape[3]
        k = torch.cat([k, prefix_kv[0].flatten(2, 3)], dim=2)  # [B, H, T*N + T*P, D]
        v = torch.cat([v, prefix_kv[1].flatten(2, 3)], dim=2)
    return _compiled_flex()(
        q,
        k,
        v,
        block_mask=flex_block_mask(mask, P, q.device),
        kernel_options=dict(kernel_options or {}) or None,
    )


# ------------------------------------------------------------------------------ block_sparse_attn
def block_sparse_attn(q: Tensor, k: Tensor, v: Tensor, mask: BlockMask4D) -> Tensor:
    """MIT Han Lab ``block_sparse_attn_func`` (varlen layout, every head block-sparse)."""
    func = _block_sparse_func()
    if func is None:
        raise MissingDependencyError(
            "block_sparse_attn",
            "backend 'block_sparse_attn'",
            "backend='flex' or 'gather'",
            "building github.com/mit-han-lab/Block-Sparse-Attention from source (CUDA)",
        )
    B, H, L, D = q.shape
    if not (
        q.is_cuda
        and q.dtype in (torch.float16, torch.bfloat16)
        and D in (32, 64, 128)
        and mask.block_size == 128
        and not bool(mask.diag.any())
    ):
        raise ValueError(
            "block_sparse_attn needs CUDA fp16/bf16, head dim 32/64/128, block_size 128 and a "
            "block-level mask (not 'temporal')"
        )
    qf, kf, vf = (x.transpose(1, 2).reshape(B * L, H, D) for x in (q, k, v))  # [total, H, D]
    cu = torch.arange(0, (B + 1) * L, L, dtype=torch.int32, device=q.device)  # [B+1]
    head_mask_type = torch.ones(H, dtype=torch.int32, device=q.device)  # 1 = block-sparse head
    key = ("bsa", str(q.device))
    if key not in mask._plans:
        mask._plans[key] = mask.blocks.to(q.device)
    base_blockmask = mask._plans[key][None, None].expand(B, H, -1, -1).contiguous()  # [B, H, nbq, nbk]
    out = func(
        qf,
        kf,
        vf,
        cu,
        cu,
        head_mask_type,
        None,
        base_blockmask,
        L,
        L,
        0.0,
        deterministic=False,
        softmax_scale=None,
        is_causal=False,
        exact_streaming=False,
        return_attn_probs=False,
    )
    return out.view(B, L, H, D).transpose(1, 2)
