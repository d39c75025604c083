"""``varlen`` backend: the kept key runs of a block mask as the sequences of one variable-length attention call.

The plan is the ``gather`` backend's (``gather.cpu_plan``): key runs kept by whole query frames (the anchor, the
dense neighbours), banded key runs of one query block row stacked over the frames that keep them, and the
per-frame prefix keys. Each becomes a *sequence*: a list of query tokens against one contiguous run of keys. On
CUDA all sequences run in one ``aten._flash_attention_forward`` call: the queries packed (cumulative lengths,
chunked so that the packed queries and outputs stay under :data:`VARLEN_CHUNK_BYTES`), the keys read in place
(each sequence's key start as its ``cu_seqlens_k`` entry and its length in ``seqused_k``: runs may overlap and
nothing is copied but one token-major layout of k and v). A layer is a handful of kernels however many runs the
mask has. Elsewhere each sequence is one CPU flash call (the same plan and merge: the reference the tests check). A query token appears in several sequences; its partial results merge exactly:
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

#: bound on the packed queries and outputs of one variable-length call (bytes; keys are read in place)
VARLEN_CHUNK_BYTES = 1 << 30


@dataclass(frozen=True)
class VarlenPlan:
    """Sequences of one mask: query tokens ``q_index[q_cu[s]:q_cu[s+1]]`` attend keys ``k_start[s] + [0, k_len[s])``.

    Query indices are latent tokens (0 .. T*N-1); key positions run over the latents then the prefix keys
    (T*N + f*P + p). On the CPU, int64.
    """

    q_index: Tensor  # [Q]
    q_cu: list[int]  # S + 1 cumulative query counts
    k_start: Tensor  # [S]
    k_len: Tensor  # [S]

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
    queries: list[Tensor] = []
    keys: list[tuple[int, int]] = []  # (start, length)
    for src, G, qo, q_stride, Lq, ko, k_stride, Lk, _ in parts:
        k_base = 0 if src == 0 else TN  # prefix keys follow the latents
        if k_stride == 0:  # every group attends the same keys: one sequence
            queries.append(_span(qo, q_stride, G, Lq))
            keys.append((k_base + ko, Lk))
            continue
        for g in range(G):
            queries.append(_span(qo + g * q_stride, 0, 1, Lq))
            keys.append((k_base + ko + g * k_stride, Lk))
    for segs, ko, Lk in stacks:
        queries.append(torch.cat([_span(o, s, G, b) for o, s, G in segs]))
        keys.append((ko, Lk))
    q_cu = [0] + torch.tensor([len(x) for x in queries]).cumsum(0).tolist()
    k = torch.tensor(keys, dtype=torch.int64)
    plan = VarlenPlan(torch.cat(queries), q_cu, k[:, 0].contiguous(), k[:, 1].contiguous())
    mask._plans[key] = plan
    return plan


def _chunks(plan: VarlenPlan, B: int, bytes_per_query: int) -> list[tuple[int, int]]:
    """Sequence ranges [s0, s1) whose packed queries and outputs (all B items) stay under ``VARLEN_CHUNK_BYTES``."""
    out, s0 = [], 0
    for s in range(plan.num_sequences):
        if s > s0 and B * bytes_per_query * (plan.q_cu[s + 1] - plan.q_cu[s0]) > VARLEN_CHUNK_BYTES:
            out.append((s0, s))
            s0 = s
    out.append((s0, plan.num_sequences))
    return out


@dataclass(frozen=True)
class _Call:
    """One variable-length call: a chunk's sequences repeated for every batch item, as the kernel takes them."""

    q_index: Tensor  # [Qc] packed query tokens, indices into the B*L token-major queries (on the device)
    cu_q: Tensor  # [Sc + 1] int32 cumulative query counts (on the device)
    cu_k: (
        Tensor  # [Sc + 1] int32: each sequence's first key in the B*Lk token-major keys, then a closing entry
    )
    used_k: Tensor  # [Sc] int32 keys per sequence
    max_q: int
    max_k: int


def _calls(mask: BlockMask4D, P: int, B: int, bytes_per_query: int, device: torch.device) -> list[_Call]:
    """The calls of ``varlen_plan(mask, P)`` for B items (cached on the mask: built once, reused every step)."""
    key = ("varlen-calls", P, B, bytes_per_query, str(device))
    if key in mask._plans:
        return mask._plans[key]
    plan = varlen_plan(mask, P)
    L = mask.T * mask.N
    Lk = L + mask.T * P  # keys per item: the latents, then the prefix keys
    calls = []
    items = torch.arange(B)[:, None]
    for s0, s1 in _chunks(plan, B, bytes_per_query):
        qa, qb = plan.q_cu[s0], plan.q_cu[s1]
        lens_q = torch.tensor(plan.q_cu[s0 : s1 + 1]).diff().repeat(B)  # item i's sequences follow item i-1's
        k_start = (plan.k_start[None, s0:s1] + items * Lk).flatten()
        k_len = plan.k_len[s0:s1].repeat(B)
        as_int32 = lambda x: x.to(device, torch.int32)
        calls.append(
            _Call(
                q_index=(plan.q_index[None, qa:qb] + items * L).flatten().to(device),
                cu_q=as_int32(torch.cat([lens_q.new_zeros(1), lens_q.cumsum(0)])),
                cu_k=as_int32(torch.cat([k_start, k_start.new_tensor([B * Lk])])),
                used_k=as_int32(k_len),
                max_q=int(lens_q.max()),
                max_k=int(k_len.max()),
            )
        )
    mask._plans[key] = calls
    return calls


def _run_sequences(q: Tensor, k: Tensor, v: Tensor, call: _Call) -> tuple[Tensor, Tensor]:
    """Sequence s of ``call``: packed queries q[cu_q[s]:cu_q[s+1]] ([Q, H, D]) against k/v[cu_k[s] + [0, used_k[s]))
    ([K, H, D], read in place) -> (out [Q, H, D], lse [H, Q])."""
    if q.is_cuda:
        return _flash_varlen_cuda(q, k, v, call)
    heads_first = lambda x, a, n: x[a : a + n].transpose(0, 1)[None]  # [L, H, D] -> [1, H, L, D]
    cu_q, cu_k, used = call.cu_q.tolist(), call.cu_k.tolist(), call.used_k.tolist()
    outs, lses = [], []
    for qa, qb, ka, n in zip(cu_q, cu_q[1:], cu_k, used):
        o, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            heads_first(q, qa, qb - qa), heads_first(k, ka, n), heads_first(v, ka, n)
        )  # [1, H, Lq, D], [1, H, Lq]
        outs.append(o[0].transpose(0, 1))
        lses.append(lse[0])
    return torch.cat(outs), torch.cat(lses, 1)


def _flash_varlen_cuda(q: Tensor, k: Tensor, v: Tensor, call: _Call) -> tuple[Tensor, Tensor]:
    """One variable-length flash call on CUDA, keys read in place; its log-sum-exp normalised to [H, Q]."""
    if q.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"the varlen backend on CUDA needs fp16 or bf16 inputs, got {q.dtype}")
    # sequence s reads k[cu_k[s] : cu_k[s] + used_k[s]]; the last entry of cu_k only closes the list
    out, lse = torch.ops.aten._flash_attention_forward(
        q, k, v, call.cu_q, call.cu_k, call.max_q, call.max_k, 0.0, False, False, seqused_k=call.used_k
    )[:2]
    H, Q = q.shape[1], q.shape[0]
    if lse.shape == (H, Q):
        return out, lse
    if lse.dim() == 3 and lse.shape[1] == H:  # padded [S, H, max_q] layout
        lens_q = call.cu_q.diff().long()
        seq = torch.repeat_interleave(torch.arange(len(lens_q), device=q.device), lens_q)
        pos = torch.arange(Q, device=q.device) - call.cu_q[:-1].long()[seq]
        return out, lse[seq, :, pos].T
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
    bytes_per_query = H * D * (q.element_size() + 4)  # the packed query and its output
    calls = _calls(mask, P, B, bytes_per_query, q.device)  # raises for token-diagonal masks
    tokens = lambda x: x.transpose(1, 2).reshape(-1, H, D)  # [B, H, S, D] -> [B*S, H, D]
    if P:  # each frame's prefix keys after all latents: key position T*N + f*P + p
        k, v = (torch.cat([x, p.flatten(2, 3)], dim=2) for x, p in zip((k, v), prefix_kv))
    qt, kt, vt = tokens(q), tokens(k), tokens(v)
    acc = _Accumulator(B * L, H, D, torch.float64 if q.dtype == torch.float64 else torch.float32, q.device)
    for call in calls:
        out, lse = _run_sequences(qt[call.q_index], kt, vt, call)
        acc.add(call.q_index, out, lse)
    return acc.result().to(q.dtype).view(B, L, H, D).transpose(1, 2)
