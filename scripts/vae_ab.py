"""Quick VAE A/B runs: preload frames into memory, train one ShapeVAE variant for a fixed time, report held-out IoUs.

    python scripts/vae_ab.py --prepare --train data/tiny/train --val data/tiny/benchmark   # -> outputs/vae_ab/data.pt
    python scripts/vae_ab.py --name base --minutes 3 --init reference                      # the previous recipe
    python scripts/vae_ab.py --name pt --minutes 3 --init pytorch --bs 8 --nq 1024         # the shipped recipe

Every run appends one JSON line to ``--out``: steps, query IoU on all stored queries of 60 held-out frames, on
their uniform half and their near-surface half, BCE, and the median posterior std. The README's A/B table is
these lines. (A measuring tool for choosing the recipe, not the training path: ``train.py`` is.)
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from sculpt4d.data.dataset import POINT_SCALE
from sculpt4d.models.vae import ShapeVAE

ROOT = Path(__file__).resolve().parents[1]

torch.set_num_threads(2)


def load_seq(path, frames, pc=2048, rng=None):
    s = np.load(f"{path}/geo_data/4d_sample_new.npz")
    v = np.load(f"{path}/geo_data/4d_volume.npz")
    out = []
    for t in frames:
        fr = f"frame_{t:04d}"
        a = s[f"{fr}/random_surface"].astype(np.float32)
        idx = rng.choice(len(a), pc, replace=False)
        a = a[idx]
        a[:, :3] *= POINT_SCALE
        a[:, 3:6] /= np.linalg.norm(a[:, 3:6], axis=1, keepdims=True).clip(1e-6)
        surf = np.concatenate([a, np.zeros((pc, 1), np.float32)], 1)
        pts = v[f"{fr}/points"].astype(np.float32) * POINT_SCALE
        occ = v[f"{fr}/occupancy"].astype(np.float32)
        out.append((surf, pts, occ))
    return out


def load(root, n_seq, frames_per, seed):
    rng = np.random.default_rng(seed)
    dirs = sorted(d for d in glob.glob(f"{root}/*") if os.path.isdir(f"{d}/geo_data"))
    rng.shuffle(dirs)
    dirs = dirs[:n_seq]
    S, P, Occ = [], [], []
    for d in dirs:
        nfr = len(np.load(f"{d}/geo_data/4d_volume.npz").files) // 2
        frames = rng.choice(nfr, min(frames_per, nfr), replace=False)
        for s, p, o in load_seq(d, frames, rng=rng):
            S.append(s)
            P.append(p)
            Occ.append(o)
    return torch.from_numpy(np.stack(S)), torch.from_numpy(np.stack(P)), torch.from_numpy(np.stack(Occ))


def tiny_vae_kwargs() -> dict:
    """The shipped tiny VAE's constructor arguments (``conf/model/tiny.yaml``), without its trained statistics."""
    node = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "tiny.yaml").vae)
    return {
        k: v for k, v in node.items() if k not in ("_target_", "scale_factor", "latent_mean", "latent_std")
    }


def iou(logits, occ):
    p, g = logits > 0, occ > 0.5
    return ((p & g).sum(-1).float() / (p | g).sum(-1).float().clamp_min(1)).mean().item()


@torch.no_grad()
def evaluate(vae, val, gen_seed=0):
    vae.eval()
    S, P, Occ = val
    g = torch.Generator().manual_seed(gen_seed)
    res = {"iou_all": [], "iou_uni": [], "iou_near": [], "bce": [], "inside_pred": [], "inside_gt": []}
    for i in range(0, len(S), 16):
        post, _ = vae.encode_posterior(S[i : i + 16], generator=g)
        h = vae.decode(post.mode())
        lg = vae.query(h, P[i : i + 16]).float()
        o = Occ[i : i + 16]
        half = lg.shape[1] // 2
        res["iou_all"].append(iou(lg, o))
        res["iou_uni"].append(iou(lg[:, half:], o[:, half:]))
        res["iou_near"].append(iou(lg[:, :half], o[:, :half]))
        res["bce"].append(F.binary_cross_entropy_with_logits(lg, o).item())
        res["inside_pred"].append((lg[:, half:] > 0).float().mean().item())
        res["inside_gt"].append(o[:, half:].mean().item())
    std = post.std.median().item()
    vae.train()
    out = {k: float(np.mean(v)) for k, v in res.items()}
    out["post_std_median"] = std
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--minutes", type=float, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--kl", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--bs", type=int, default=16)
    ap.add_argument("--nq", type=int, default=2048)
    ap.add_argument("--init", choices=["reference", "pytorch"], default="reference")
    ap.add_argument("--sample", type=int, default=1)
    ap.add_argument("--wd", type=float, default=0.0)
    ap.add_argument("--set", nargs="*", default=[], help="ShapeVAE keyword overrides, KEY=JSON")
    ap.add_argument("--out", default="outputs/vae_ab/results.jsonl")
    ap.add_argument("--data", default="outputs/vae_ab/data.pt")
    ap.add_argument("--prepare", action="store_true")
    ap.add_argument("--train")
    ap.add_argument("--val")
    ap.add_argument("--eval_every", type=int, default=0)
    a = ap.parse_args()
    for path in (a.data, a.out):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if a.prepare:  # 600 training sequences x 8 frames, 20 held-out x 3
        torch.save((load(a.train, 600, 8, 0), load(a.val, 20, 3, 1)), a.data)
        return
    tr, val = torch.load(a.data)
    kw = {**tiny_vae_kwargs(), "weight_init": a.init}
    for s in a.set:
        k, v = s.split("=")
        kw[k] = json.loads(v)
    torch.manual_seed(0)
    vae = ShapeVAE(**kw)
    opt = torch.optim.AdamW(vae.parameters(), lr=a.lr, weight_decay=a.wd, betas=(0.9, 0.99))
    S, P, Occ = tr
    g = torch.Generator().manual_seed(0)
    t0 = time.time()
    step = 0
    budget = a.minutes * 60
    est_total = None
    while True:
        el = time.time() - t0
        if el > budget:
            break
        if step == 30:
            est_total = int(budget / (el / 30))
        frac = step / est_total if est_total else 0.0
        lr = (
            a.lr
            * min(1.0, (step + 1) / a.warmup)
            * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
        )
        for pg in opt.param_groups:
            pg["lr"] = lr
        idx = torch.randint(len(S), (a.bs,), generator=g)
        q = torch.randint(P.shape[1], (a.bs, a.nq), generator=g)
        pts = torch.gather(P[idx], 1, q[..., None].expand(-1, -1, 3))
        occ = torch.gather(Occ[idx], 1, q)
        post, _ = vae.encode_posterior(S[idx], generator=g)
        z = post.sample(g) if a.sample else post.mode()
        lg = vae.query(vae.decode(z), pts).float()
        bce = F.binary_cross_entropy_with_logits(lg, occ)
        kl = post.kl().float().mean()
        loss = bce + a.kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 100 == 0:
            print(f"{a.name} step {step} {el:.0f}s bce {bce.item():.3f} kl {kl.item():.2f}", flush=True)
        if a.eval_every and step % a.eval_every == 0:
            ev = evaluate(vae, val)
            print(
                f"  EVAL {step}: all {ev['iou_all']:.3f} uni {ev['iou_uni']:.3f} bce {ev['bce']:.3f}",
                flush=True,
            )
    ev = evaluate(vae, val)
    rec = dict(name=a.name, steps=step, minutes=a.minutes, args=vars(a), **ev)
    print(json.dumps(rec), flush=True)
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    torch.save(vae.state_dict(), os.path.join(os.path.dirname(a.out) or ".", f"{a.name}.pt"))


if __name__ == "__main__":
    main()
