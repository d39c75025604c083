"""``varlen`` backend: the kept key runs of a block mask as the sequences of one variable-length attention call.

The plan is the ``gather`` backend's (``gather.cpu_plan``): key runs kept by whole query frames (the anchor, the
dense neighbours), banded key runs of one query block row stacked over the frames that keep them, and the
per-frame prefix keys. Each becomes a *sequence*: a list of query tokens against one run of keys. On CUDA all
sequences run in one ``aten._flash_attention_forward`` call with cumulative lengths (chunked so that the
packed copies of q/k/v stay under :data:`VARLEN_CHUNK_BYTES`), so a layer is a handful of kernels however many
runs the mask has; elsewhere each sequence is one CPU flash call (the same plan and merge, the reference the
tests check). A query token appears in several sequences; its partial results merge exactly:
``lse = logsumexp_s lse_s``, ``out = sum_s exp(lse_s - lse) out_s``.

Forward only (sampling): training uses ``gather`` on CPU and ``flex`` on CUDA. Token-diagonal blocks
(variant ``temporal``) are not supported. On CUDA the flash kernel needs fp16/bf16.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .gather import cpu_plan
from .masks import BlockMask4D

#: bound on the packed q, k, v and output of one variable-length call (bytes)
VARLEN_CHUNK_BYTES = 1 << 30


@dataclass(frozen=True)
class VarlenPlan:
    """Sequences of one mask: query tokens ``q_index[q_cu[s]:q_cu[s+1]]`` attend keys ``k_index[k_cu[s]:k_cu[s+1]]``.

    Query indices are latent tokens (0 .. T*N-1); key indices run over the latents then the prefix keys
    (T*N + f*P + p). All on the CPU, int64; offsets are moved to the device per call.
    """

    q_index: Tensor  # [Q]
    k_index: Tensor  # [K]
    q_cu: list[int]  # S + 1 cumulative query counts
    k_cu: list[int]  # S + 1 cumulative key counts

    @property
    def num_sequences(self) -> int:
        return len(self.q_cu) - 1


def _span(off: int, stride: int, G: int, L: int) -> Tensor:
    """Tokens off + g * stride + [0, L) for g < G, in that order -> [G * L]."""
    return (off + stride * torch.arange(G)[:, None] + torch.arange(L)[None]).flatten()


def varlen_plan(mask: BlockMask4D, P: int) -> VarlenPlan:
    """The sequences of ``mask`` with P prefix keys per frame (cached on the mask)."""
    key = ("varlen", P)
    if key in mask._plans:
        return mask._plans[key]
    if bool(mask.diag.any()):
        raise ValueError(
            f"the varlen backend has no token-diagonal blocks (variant {mask.variant!r}); use gather"
        )
    parts, stacks, _ = cpu_plan(mask, P)
    TN, b = mask.T * mask.N, mask.block_size
    qs: list[Tensor] = []
    ks: list[Tensor] = []
    for src, G, qo, q_stride, Lq, ko, k_stride, Lk, _ in parts:
        k_base = 0 if src == 0 else TN  # prefix keys follow the latents
        if k_stride == 0:  # every group attends the same keys: one sequence
            qs.append(_span(qo, q_stride, G, Lq))
            ks.append(_span(k_base + ko, 0, 1, Lk))
            continue
        for g in range(G):
            qs.append(_span(qo + g * q_stride, 0, 1, Lq))
            ks.append(_span(k_base + ko + g * k_stride, 0, 1, Lk))
    for segs, ko, Lk in stacks:
        qs.append(torch.cat([_span(o, s, G, b) for o, s, G in segs]))
        ks.append(_span(ko, 0, 1, Lk))
    cum = lambda xs: [0] + torch.tensor([len(x) for x in xs]).cumsum(0).tolist()
    plan = VarlenPlan(torch.cat(qs), torch.cat(ks), cum(qs), cum(ks))
    mask._plans[key] = plan
    return plan


def _chunks(plan: VarlenPlan, B: int, bytes_per_token: int) -> list[tuple[int, int]]:
    """Sequence ranges [s0, s1) whose packed tokens (all B items) stay under ``VARLEN_CHUNK_BYTES``."""
    out, s0 = [], 0
    for s in range(plan.num_sequences):
        size = B * bytes_per_token * (plan.q_cu[s + 1] - plan.q_cu[s0] + plan.k_cu[s + 1] - plan.k_cu[s0])
        if s > s0 and size > VARLEN_CHUNK_BYTES:
            out.append((s0, s))
            s0 = s
    out.append((s0, plan.num_sequences))
    return out


def _run_sequences(
    q: Tensor, k: Tensor, v: Tensor, q_cu: list[int], k_cu: list[int]
) -> tuple[Tensor, Tensor]:
    """Packed attention: q [Q, H, D], k/v [K, H, D] -> (out [Q, H, D], lse [H, Q])."""
    if q.is_cuda:
        return _flash_varlen_cuda(q, k, v, q_cu, k_cu)
    heads_first = lambda x, a, b: x[a:b].transpose(0, 1)[None]  # [L, H, D] -> [1, H, L, D]
    outs, lses = [], []
    for (qa, qb), (ka, kb) in zip(zip(q_cu, q_cu[1:]), zip(k_cu, k_cu[1:])):
        o, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            heads_first(q, qa, qb), heads_first(k, ka, kb), heads_first(v, ka, kb)
        )  # [1, H, Lq, D], [1, H, Lq]
        outs.append(o[0].transpose(0, 1))
        lses.append(lse[0])
    return torch.cat(outs), torch.cat(lses, 1)


def _flash_varlen_cuda(
    q: Tensor, k: Tensor, v: Tensor, q_cu: list[int], k_cu: list[int]
) -> tuple[Tensor, Tensor]:
    """One variable-length flash call on CUDA; its log-sum-exp normalised to [H, Q]."""
    if q.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"the varlen backend on CUDA needs fp16 or bf16 inputs, got {q.dtype}")
    cq = torch.tensor(q_cu, dtype=torch.int32, device=q.device)
    ck = torch.tensor(k_cu, dtype=torch.int32, device=q.device)
    lens_q = torch.tensor(q_cu).diff()
    max_q, max_k = int(lens_q.max()), int(torch.tensor(k_cu).diff().max())
    out, lse = torch.ops.aten._flash_attention_forward(q, k, v, cq, ck, max_q, max_k, 0.0, False, False)[:2]
    H, Q = q.shape[1], q.shape[0]
    if lse.shape == (H, Q):
        return out, lse.float()
    if lse.dim() == 3 and lse.shape[1] == H:  # padded [S, H, max_q] layout
        seq = torch.repeat_interleave(torch.arange(len(lens_q)), lens_q).to(q.device)
        pos = torch.arange(Q, device=q.device) - cq[:-1].long()[seq]
        return out, lse[seq, :, pos].T.float()
    raise RuntimeError(
        f"unexpected log-sum-exp shape {tuple(lse.shape)} from the flash kernel (H={H}, Q={Q})"
    )


class _Accumulator:
    """Running exact merge of partial attention results per (item-token, head)."""

    def __init__(self, M: int, H: int, D: int, dtype: torch.dtype, device: torch.device):
        self.num = torch.zeros(M, H, D, dtype=dtype, device=device)  # sum exp(lse_s - m) out_s
        self.den = torch.zeros(H, M, dtype=dtype, device=device)  # sum exp(lse_s - m)
        self.m = torch.full((H, M), float("-inf"), dtype=dtype, device=device)  # running max lse

    def add(self, idx: Tensor, out: Tensor, lse: Tensor) -> None:
        """Merge partial results out [Q, H, D], lse [H, Q] of tokens idx [Q] (repeats allowed)."""
        H, lse = lse.shape[0], lse.to(self.m.dtype)
        m_new = self.m.scatter_reduce(1, idx.expand(H, -1), lse, "amax")
        rescale = torch.where(torch.isinf(self.m), 0.0, torch.exp(self.m - m_new))  # [H, M]
        self.num.mul_(rescale.T[..., None])
        self.den.mul_(rescale)
        w = torch.exp(lse - m_new[:, idx])  # [H, Q]
        self.den.index_add_(1, idx, w)
        self.num.index_add_(0, idx, out.to(w.dtype) * w.T[..., None])
        self.m = m_new

    def result(self) -> Tensor:
        return self.num / self.den.T[..., None]  # [M, H, D]


def varlen_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: BlockMask4D, prefix_kv: tuple[Tensor, Tensor] | None = None
) -> Tensor:
    """Exact block-sparse attention, forward only: [B, H, T*N, D] -> [B, H, T*N, D] (see module docstring)."""
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        raise ValueError(
            "the varlen backend is forward-only; use backend='gather' (CPU) or 'flex' (CUDA) to train"
        )
    B, H, L, D = q.shape
    P = 0 if prefix_kv is None else prefix_kv[0].shape[3]
    plan = varlen_plan(mask, P)
    tokens = lambda x: x.transpose(1, 2).reshape(-1, H, D)  # [B, H, S, D] -> [B*S, H, D]
    qt = tokens(q)
    kt, vt = tokens(k), tokens(v)
    if P:
        kt = torch.cat(
            [kt.view(B, L, H, D), tokens(prefix_kv[0].flatten(2, 3)).view(B, -1, H, D)], 1
        ).flatten(0, 1)
        vt = torch.cat(
            [vt.view(B, L, H, D), tokens(prefix_kv[1].flatten(2, 3)).view(B, -1, H, D)], 1
        ).flatten(0, 1)
    Lk = L + mask.T * P  # keys per item
    acc = _Accumulator(B * L, H, D, torch.float64 if q.dtype == torch.float64 else torch.float32, q.device)
    per_token = 3 * H * D * q.element_size() + 4 * H * (D + 1)
    for s0, s1 in _chunks(plan, B, per_token):
        qa, qb, ka, kb = plan.q_cu[s0], plan.q_cu[s1], plan.k_cu[s0], plan.k_cu[s1]
        items = torch.arange(B)[:, None]
        qi = (plan.q_index[None, qa:qb] + items * L).flatten().to(q.device)  # [B*Qc]
        ki = (plan.k_index[None, ka:kb] + items * Lk).flatten().to(q.device)  # [B*Kc]
        # every item repeats the chunk's sequences; item i's packed tokens start at i * (chunk's tokens)
        q_cu = [i * (qb - qa) + c - qa for i in range(B) for c in plan.q_cu[s0:s1]] + [B * (qb - qa)]
        k_cu = [i * (kb - ka) + c - ka for i in range(B) for c in plan.k_cu[s0:s1]] + [B * (kb - ka)]
        out, lse = _run_sequences(qt[qi], kt[ki], vt[ki], q_cu, k_cu)
        acc.add(qi, out, lse)
    return acc.result().to(q.dtype).view(B, L, H, D).transpose(1, 2)
