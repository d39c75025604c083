"""CPU ``gather`` backend: flash-kernel calls on views of q/k/v per *part*, merged by log-sum-exp.

The kept key blocks of each query frame are split into parts, each one call of the CPU flash kernel
(``aten._scaled_dot_product_flash_attention_for_cpu``, which returns the log-sum-exp and accepts strided,
even overlapping, views):
- *frame parts*: key block runs kept by every query block of a frame (full key frames, framepack prefixes,
  the anchor), attended by the whole query frame at once, batched over frames with a frame stride;
- *row stacks*: the remaining (banded) key block runs: query block row R of every frame that keeps the same
  key run, stacked into one query sequence (a copy of those queries: the kernel is ~1.25x faster on one long
  query sequence than on a batch of single 128-token blocks) against a view of the run;
- the per-frame ``prefix_kv`` keys; and *diag* blocks (``temporal``: token r to token r), done by einsum.
Partial outputs merge exactly: out = sum_p exp(lse_p - lse) out_p, lse = logaddexp_p lse_p. The backward
calls the flash backward per part with the *merged* out and lse (P = exp(S - lse), D = rowsum(dO * O) are
then the global ones), so each part's dq/dk/dv is exact; they are summed into the gradients.
No key is copied and nothing T*N x T*N is built; the only copies are stacked queries (row stacks, and frame
groups that share their keys) and, for diag blocks, the einsum operands.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import Tensor

from .masks import BlockMask4D

# part: (src, G, q_off, q_stride, Lq, k_off, k_stride, Lk, first) in tokens; src 0 = latents, 1 = prefix keys
Part = tuple[int, int, int, int, int, int, int, int, bool]
# row stack: (segs, k_off, Lk): query blocks (block_size tokens) in strided runs seg = (q_off, q_stride, G),
# stacked into one query sequence, vs the latent keys [k_off, k_off + Lk)
Seg = tuple[int, int, int]
Stack = tuple[tuple[Seg, ...], int, int]
_fwd = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_bwd = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward


def _runs(row: Tensor) -> list[tuple[int, int]]:
    """Maximal runs [lo, hi) of True in a 1-D bool tensor."""
    d = torch.diff(torch.nn.functional.pad(row.to(torch.int8), (1, 1)))
    lo, hi = (d == 1).nonzero().flatten().tolist(), (d == -1).nonzero().flatten().tolist()
    return list(zip(lo, hi))


def _step(run: list[int]) -> int:
    """Common difference of an arithmetic progression (1 for a single frame)."""
    return run[1] - run[0] if len(run) > 1 else 1


def _progressions(frames: list[int]) -> list[list[int]]:
    """Split sorted frames into maximal arithmetic progressions (one strided view each)."""
    out: list[list[int]] = []
    for f in sorted(frames):
        last = out[-1] if out else None
        if last and (len(last) == 1 or f - last[-1] == last[1] - last[0]):
            last.append(f)
        else:
            out.append([f])
    return out


def _group(items: list[tuple[int, int, int]], nb: int, mode: str) -> dict[tuple[int, int, int], list[int]]:
    """Group items (frame i, lo, hi) by the same absolute keys (rel 0) or keys relative to the frame (rel 1)."""
    cand: dict[tuple[int, int, int], list[int]] = defaultdict(list)
    for n, (i, lo, hi) in enumerate(items):
        for rel in (0, 1):
            if mode == "greedy" or rel == (mode == "rel"):
                cand[(rel, lo - rel * i * nb, hi - rel * i * nb)].append(n)
    groups, left = {}, set(range(len(items)))
    while left:  # repeatedly take the group covering the most remaining items (relative on ties)
        g = max(cand, key=lambda c: (len(left.intersection(cand[c])), c[0]))
        groups[g] = [items[n][0] for n in cand[g] if n in left]
        left.difference_update(cand.pop(g))
    return groups


def cpu_plan(mask: BlockMask4D, P: int) -> tuple[list[Part], list[Stack], dict[int, Tensor]]:
    """(parts, stacks, diag) for ``mask`` with P prefix keys per frame; diag: block offset o -> keep [T, T, nb]."""
    key = ("gather-cpu", P)
    if key not in mask._plans:
        blk = (mask.blocks & ~mask.diag_blocks).view(mask.T, mask.nb, -1)  # [T, nb, T*nb]
        uni = blk.all(1)  # [T, T*nb] key blocks kept by every query block of the frame
        mask._plans[key] = (
            _frame_parts(mask, uni, P),
            _row_stacks(mask, blk & ~uni[:, None]),
            _diag_plan(mask),
        )
    return mask._plans[key]


def _frame_parts(mask: BlockMask4D, uni: Tensor, P: int) -> list[Part]:
    """Parts of the key runs ``uni`` [T, T*nb] kept by whole query frames, in the fewest strided calls."""
    T, nb, b, N = mask.T, mask.nb, mask.block_size, mask.N
    items = [(i, lo, hi) for i in range(T) for lo, hi in _runs(uni[i])]
    options = [_group(items, nb, mode) for mode in ("abs", "rel", "greedy")]
    groups = min(options, key=lambda g: sum(len(_progressions(f)) for f in g.values()))
    parts, covered = [], torch.zeros(T, dtype=torch.bool)
    for (rel, lo, hi), frames in sorted(groups.items()):
        for run in _progressions(frames):
            i0, G, Lk, k0 = run[0], len(run), (hi - lo) * b, (lo + rel * run[0] * nb) * b
            step = _step(run)
            first = not bool(covered[run].any())
            covered[run] = True
            if rel == 0 and step == 1:  # consecutive frames with the same keys: one query sequence
                parts.append((0, 1, i0 * N, 0, G * N, k0, 0, Lk, first))
            else:
                parts.append((0, G, i0 * N, step * N, N, k0, rel * step * N, Lk, first))
    if P:
        parts.append((1, T, 0, N, N, 0, P, P, not bool(covered.any())))
    return parts


def _row_stacks(mask: BlockMask4D, rem: Tensor) -> list[Stack]:
    """One stack per (query block row R, key run) of the remaining kept blocks ``rem`` [T, nb, T*nb]."""
    N, b = mask.N, mask.block_size
    frames: dict[tuple[int, int, int], list[int]] = defaultdict(list)
    for i, R in rem.any(2).nonzero().tolist():
        for lo, hi in _runs(rem[i, R]):
            frames[(R, lo, hi)].append(i)
    stacks = []
    for (R, lo, hi), fs in sorted(frames.items()):
        segs = tuple((run[0] * N + R * b, _step(run) * N, len(run)) for run in _progressions(fs))
        stacks.append((segs, lo * b, (hi - lo) * b))
    return stacks


def _diag_plan(mask: BlockMask4D) -> dict[int, Tensor]:
    """Block offset o -> keep [T(i), T(j), nb(R)]: block (R, R + o) of frame pair (i, j) is token-diagonal."""
    T, nb = mask.T, mask.nb
    db = mask.diag_blocks.view(T, nb, T, nb)
    diag = {}
    for o in range(-nb + 1, nb):
        keep = torch.zeros(T, T, nb, dtype=torch.bool)
        for R in range(max(0, -o), min(nb, nb - o)):
            keep[:, :, R] = db[:, R, :, R + o]
        if keep.any():
            diag[o] = keep
    return diag


def _view(x: Tensor, off: int, stride: int, G: int, L: int) -> Tensor:
    """[BH, G, L, D] strided view of x [BH, S, D] (contiguous): tokens off + g * stride + [0, L)."""
    BH, S, D = x.shape
    return x.as_strided((BH, G, L, D), (S * D, stride * D, D, 1), x.storage_offset() + off * D)


def _lview(x: Tensor, off: int, stride: int, G: int, L: int) -> Tensor:
    """[BH, G, L] strided view of x [BH, S] (contiguous)."""
    return x.as_strided((x.shape[0], G, L), (x.shape[1], stride, 1), x.storage_offset() + off)


def _add_keys(acc: Tensor, g: Tensor, off: int, stride: int, L: int) -> None:
    """acc[:, off + i*stride + t] += g[:, i, t]; the windows may overlap (stride < L), so add in steps."""
    G = g.shape[1]
    if stride == 0 or G == 1:
        _view(acc, off, 0, 1, L).add_(g.sum(1, keepdim=True))
        return
    m = -(-L // stride)  # windows i, i+m, ... are disjoint
    for r in range(min(m, G)):
        sub = g[:, r::m]
        _view(acc, off + r * stride, stride * m, sub.shape[1], L).add_(sub)


def _diag_scores(q: Tensor, k: Tensor, o: int, keep: Tensor, b: int, scale: float) -> tuple[Tensor, Tensor]:
    """Scores [BH, T, N, T] of query token (i, r) vs key token (j, r + o*b) (masked -inf) and shifted keys."""
    ks = k if o == 0 else torch.roll(k, -o * b, dims=2)  # [BH, T, N, D]; wrapped rows are masked
    s = torch.einsum("xird,xjrd->xirj", q, ks) * scale
    bias = torch.zeros(keep.shape, dtype=s.dtype, device=s.device).masked_fill_(
        ~keep.to(s.device), float("-inf")
    )
    return s + bias.permute(0, 2, 1).repeat_interleave(b, 1), ks  # bias [T, nb, T] -> [T, N, T]


def _part_fwd(
    q: Tensor, k: Tensor, v: Tensor, G: int, qo: int, qs: int, Lq: int, ko: int, ks: int, Lk: int
) -> tuple[Tensor, Tensor]:
    """Flash forward of one part -> (out [BH, G, Lq, D], lse [BH, G, Lq]). Groups sharing their keys
    (ks == 0) are stacked into one long query sequence (a small copy of q; the kernel is faster on it)."""
    qv, kv, vv = _view(q, qo, qs, G, Lq), _view(k, ko, ks, G, Lk), _view(v, ko, ks, G, Lk)
    if ks or G == 1:
        return _fwd(qv, kv, vv)
    o, lg = _fwd(qv.reshape(-1, 1, G * Lq, qv.shape[-1]), kv[:, :1], vv[:, :1])
    return o.view(qv.shape), lg.view(qv.shape[:3])


def _part_bwd(
    do: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    G: int,
    qo: int,
    qs: int,
    Lq: int,
    ko: int,
    ks: int,
    Lk: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Flash backward of one part with the merged out / lse -> (dq [BH, G, Lq, D], dk, dv [BH, G', Lk, D])."""
    qv, kv, vv = _view(q, qo, qs, G, Lq), _view(k, ko, ks, G, Lk), _view(v, ko, ks, G, Lk)
    dov, ov, lv = _view(do, qo, qs, G, Lq), _view(out, qo, qs, G, Lq), _lview(lse, qo, qs, G, Lq)
    if ks or G == 1:
        return _bwd(dov, qv, kv, vv, ov, lv, 0.0, False)
    flat = lambda x: x.reshape(x.shape[0], 1, G * Lq, *x.shape[3:])
    dq, dk, dv = _bwd(flat(dov), flat(qv), kv[:, :1], vv[:, :1], flat(ov), flat(lv), 0.0, False)
    return dq.view(qv.shape), dk, dv


def _stacked(x: Tensor, segs: tuple[Seg, ...], b: int) -> Tensor:
    """[BH, 1, M, *] copy of the query blocks ``segs`` of x [BH, S(, D)] (contiguous), M = b * sum(G)."""
    view = _view if x.dim() == 3 else _lview
    return torch.cat([view(x, o, s, G, b).flatten(1, 2) for o, s, G in segs], 1)[:, None]


def _unstacked(x: Tensor, segs: tuple[Seg, ...], b: int) -> list[Tensor]:
    """Split stacked rows x [BH, M, *] into per-segment [BH, G, b, *] views."""
    return [c.unflatten(1, (G, b)) for c, (_, _, G) in zip(x.split([G * b for _, _, G in segs], 1), segs)]


def _stack_fwd(
    q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, segs: tuple[Seg, ...], b: int, ko: int, Lk: int
) -> None:
    """Flash forward of one row stack vs keys [ko, ko + Lk), merged into the out / lse views of its query blocks."""
    o, lg = _fwd(
        _stacked(q, segs, b), _view(k, ko, 0, 1, Lk), _view(v, ko, 0, 1, Lk)
    )  # [BH, 1, M, D], [BH, 1, M]
    for (qo, qs, G), os, ls in zip(segs, _unstacked(o[:, 0], segs, b), _unstacked(lg[:, 0], segs, b)):
        _merge(_view(out, qo, qs, G, b), _lview(lse, qo, qs, G, b), os, ls, False)


def _stack_bwd(
    do: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    dq: Tensor,
    dk: Tensor,
    dv: Tensor,
    segs: tuple[Seg, ...],
    b: int,
    ko: int,
    Lk: int,
) -> None:
    """Flash backward of one row stack with the merged out / lse, added into dq and dk, dv [ko, ko + Lk)."""
    kv, vv = _view(k, ko, 0, 1, Lk), _view(v, ko, 0, 1, Lk)
    a, c, e = _bwd(
        *(_stacked(x, segs, b) for x in (do, q)),
        kv,
        vv,
        *(_stacked(x, segs, b) for x in (out, lse)),
        0.0,
        False,
    )
    for (qo, qs, G), seg in zip(segs, _unstacked(a[:, 0], segs, b)):
        _view(dq, qo, qs, G, b).add_(seg)
    _view(dk, ko, 0, 1, Lk).add_(c)
    _view(dv, ko, 0, 1, Lk).add_(e)


class _GatherCPU(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, q: Tensor, k: Tensor, v: Tensor, kp: Tensor | None, vp: Tensor | None, mask: BlockMask4D
    ) -> Tensor:  # q/k/v [BH, T*N, D] contiguous; kp/vp [BH, T*P, D]
        P = 0 if kp is None else kp.shape[1] // mask.T
        parts, stacks, diag = cpu_plan(mask, P)
        acc_t = torch.float64 if q.dtype == torch.float64 else torch.float32
        out = torch.zeros(q.shape, dtype=acc_t)  # [BH, TN, D]
        lse = torch.full(q.shape[:2], float("-inf"), dtype=acc_t)  # [BH, TN]
        for src, G, qo, qs, Lq, ko, ks, Lk, first in parts:
            kk, vv = (k, v) if src == 0 else (kp, vp)
            o, lg = _part_fwd(q, kk, vv, G, qo, qs, Lq, ko, ks, Lk)
            _merge(_view(out, qo, qs, G, Lq), _lview(lse, qo, qs, G, Lq), o, lg, first)
        for segs, ko, Lk in stacks:
            _stack_fwd(q, k, v, out, lse, segs, mask.block_size, ko, Lk)
        if diag:
            _diag_forward(q, k, v, out, lse, mask, diag)
        res = out.to(q.dtype)
        ctx.save_for_backward(q, k, v, kp, vp, res, lse)
        ctx.mask = mask
        return res

    @staticmethod
    def backward(ctx: Any, dout: Tensor) -> tuple[Tensor | None, ...]:
        q, k, v, kp, vp, out, lse = ctx.saved_tensors
        mask = ctx.mask
        parts, stacks, diag = cpu_plan(mask, 0 if kp is None else kp.shape[1] // mask.T)
        dout = dout.contiguous()
        acc_t = lse.dtype
        dq, dk, dv = (torch.zeros(x.shape, dtype=acc_t) for x in (q, k, v))
        dkp, dvp = (None, None) if kp is None else (torch.zeros(kp.shape, dtype=acc_t) for _ in range(2))
        for src, G, qo, qs, Lq, ko, ks, Lk, _ in parts:
            kk, vv, gk, gv = (k, v, dk, dv) if src == 0 else (kp, vp, dkp, dvp)
            a, c, e = _part_bwd(dout, q, kk, vv, out, lse, G, qo, qs, Lq, ko, ks, Lk)
            _view(dq, qo, qs, G, Lq).add_(a)
            _add_keys(gk, c, ko, ks, Lk)
            _add_keys(gv, e, ko, ks, Lk)
        for segs, ko, Lk in stacks:
            _stack_bwd(dout, q, k, v, out, lse, dq, dk, dv, segs, mask.block_size, ko, Lk)
        if diag:
            _diag_backward(q, k, v, out, lse, dout, dq, dk, dv, mask, diag)
        cast = lambda x: None if x is None else x.to(q.dtype)
        return cast(dq), cast(dk), cast(dv), cast(dkp), cast(dvp), None


def _merge(acc: Tensor, acc_l: Tensor, o: Tensor, lg: Tensor, first: bool) -> None:
    """Merge a part (o [BH, G, L, D], lse lg [BH, G, L]) into the running (acc, acc_l) views, in place."""
    if first:
        acc.copy_(o)
        acc_l.copy_(lg)
        return
    w = torch.sigmoid(lg - acc_l)  # exp(lg - lse_new); the old part's weight is 1 - w
    acc.lerp_(o.to(acc.dtype), w.unsqueeze(-1))
    torch.logaddexp(acc_l, lg, out=acc_l)


def _frames(x: Tensor, T: int) -> Tensor:
    return x.view(x.shape[0], T, x.shape[1] // T, x.shape[2])  # [BH, T, N, D]


def _diag_forward(
    q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, mask: BlockMask4D, diag: dict[int, Tensor]
) -> None:
    """Token-diagonal blocks (``temporal``): merged last (every row already has finite lse)."""
    T, b = mask.T, mask.block_size
    scale = q.shape[-1] ** -0.5
    q5, k5, v5 = (_frames(x.to(out.dtype), T) for x in (q, k, v))
    out5, lse4 = _frames(out, T), lse.view(lse.shape[0], T, -1)  # [BH, T, N, D], [BH, T, N]
    for o, keep in diag.items():
        s, _ = _diag_scores(q5, k5, o, keep, b, scale)  # [BH, T, N, T]
        lg = torch.logsumexp(s, -1)  # -inf where a token has no diag key
        p = torch.exp(s - torch.where(torch.isinf(lg), 0, lg).unsqueeze(-1))
        vs = v5 if o == 0 else torch.roll(v5, -o * b, dims=2)
        _merge(out5, lse4, torch.einsum("xirj,xjrd->xird", p, vs), lg, False)


def _diag_backward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    dout: Tensor,
    dq: Tensor,
    dk: Tensor,
    dv: Tensor,
    mask: BlockMask4D,
    diag: dict[int, Tensor],
) -> None:
    T, b = mask.T, mask.block_size
    scale = q.shape[-1] ** -0.5
    q5, k5, v5, do5 = (_frames(x.to(dq.dtype), T) for x in (q, k, v, dout))
    delta = (do5 * _frames(out.to(dq.dtype), T)).sum(-1, keepdim=True)  # [BH, T, N, 1] rowsum(dO * O)
    lse4 = lse.view(lse.shape[0], T, -1, 1)
    dq5, dk5, dv5 = _frames(dq, T), _frames(dk, T), _frames(dv, T)
    for o, keep in diag.items():
        s, ks = _diag_scores(q5, k5, o, keep, b, scale)
        p = torch.exp(s - lse4)  # [BH, T(i), N, T(j)] global probabilities
        vs = v5 if o == 0 else torch.roll(v5, -o * b, dims=2)
        ds = p * (torch.einsum("xird,xjrd->xirj", do5, vs) - delta)
        dq5.add_(torch.einsum("xirj,xjrd->xird", ds, ks), alpha=scale)
        gk = torch.einsum("xirj,xird->xjrd", ds, q5) * scale
        gv = torch.einsum("xirj,xird->xjrd", p, do5)
        dk5.add_(gk if o == 0 else torch.roll(gk, o * b, dims=2))
        dv5.add_(gv if o == 0 else torch.roll(gv, o * b, dims=2))


def gather_attention_cpu(
    q: Tensor, k: Tensor, v: Tensor, mask: BlockMask4D, prefix_kv: tuple[Tensor, Tensor] | None = None
) -> Tensor:
    """Exact block-sparse attention on CPU, [B, H, T*N, D] -> [B, H, T*N, D]; see the module docstring."""
    B, H, L, D = q.shape
    q3, k3, v3 = (x.contiguous().view(B * H, L, D) for x in (q, k, v))
    kp = vp = None
    if prefix_kv is not None:
        kp, vp = (x.contiguous().view(B * H, -1, D) for x in prefix_kv)  # [BH, T*P, D]
    return _GatherCPU.apply(q3, k3, v3, kp, vp, mask).view(B, H, L, D)
