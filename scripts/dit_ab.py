"""Quick 3D-DiT A/B runs: cache (image, latent) pairs once, train one DiT + conditioner variant for a fixed time.

    python scripts/dit_ab.py --prepare                      # -> outputs/dit_ab/data.pt (the tiny_dit3d data path)
    python scripts/dit_ab.py --name base --minutes 4        # the shipped tiny_dit3d recipe
    python scripts/dit_ab.py --name cond5 --minutes 4 --cond-lr-scale 5

``--prepare`` builds the real ``tiny_dit3d`` experiment (its data module and its DiT3DModule initialised from the
VAE export ``--vae``), draws ``--train-batches`` training batches (random frame, random view, the dataset's own
crop and resize) and encodes their latents once; the held-out items come from ``--val-root``. A run trains the
module's DiT and conditioner on the cached pairs (same loss, CFG dropout, EMA-free) and appends one JSON line to
``--out``: steps, the held-out flow loss and cond-vs-null gap (all t, and t < 0.5: the noisy half, where the
image has to decide the shape), and the held-out query IoU of Euler + CFG samples. A measuring tool for choosing
the recipe; ``train.py`` is the training path.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from sculpt4d.config import register_resolvers
from sculpt4d.lit.vae_module import occupancy_iou

ROOT = Path(__file__).resolve().parents[1]


def build(overrides: list[str]):
    """The composed tiny_dit3d config, its data module and its LightningModule."""
    from hydra.utils import instantiate

    register_resolvers()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=tiny_dit3d", *overrides], return_hydra_config=True)
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(cfg)
    dm = instantiate(cfg.data)
    module = instantiate(cfg.lit, _recursive_=False)
    return cfg, dm, module


@torch.no_grad()
def prepare(a) -> None:
    over = [f"init_from={a.vae}", "data.num_workers=0", "data.persistent_workers=false"]
    over += [f"data.val_root={a.val_root}", "data.val_items_per_object=3", "data.max_val_objects=20"]
    over += ["data.val_batch_size=30"]
    cfg, dm, module = build(over)
    dm.setup("fit")
    module.eval()
    gen = torch.Generator().manual_seed(0)

    def collect(loader, n_batches, keep_volume):
        imgs, lats, pts, occ = [], [], [], []
        for i, batch in enumerate(loader):
            if i >= n_batches:
                break
            imgs.append(batch["images"].flatten(0, 1).half())
            lats.append(module.encode_latents(batch, gen))
            if keep_volume:
                pts.append(batch["vol_points"].flatten(0, 1))
                occ.append(batch["vol_occ"].flatten(0, 1).bool())
            print(f"batch {i}", flush=True)
        out = {"images": torch.cat(imgs), "latents": torch.cat(lats)}
        if keep_volume:
            out.update(points=torch.cat(pts), occ=torch.cat(occ))
        return out

    train = collect(dm.train_dataloader(), a.train_batches, False)
    val = collect(dm.val_dataloader(), a.val_batches, True)
    os.makedirs(os.path.dirname(a.data), exist_ok=True)
    torch.save({"train": train, "val": val, "vae": a.vae}, a.data)
    print({k: tuple(v.shape) for k, v in train.items()}, {k: tuple(v.shape) for k, v in val.items()})


@torch.no_grad()
def evaluate(module, val, steps: int, cfg_scale: float) -> dict[str, float]:
    module.eval()
    gen = torch.Generator().manual_seed(1)
    imgs, x1 = val["images"].float(), val["latents"]
    n = x1.shape[0]
    cond = module.conditioner(imgs)
    t = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    noise = torch.randn(x1.shape, generator=gen)
    per_item = {  # the training loss per item [n], with the image and with CFG's null context
        name: module.flow.loss(module.model_fn, x1, c, t=t, noise=noise, return_per_sample=True)[1]
        for name, c in (("cond", cond), ("null", torch.zeros_like(cond)))
    }
    gap = per_item["null"] - per_item["cond"]
    noisy = t < 0.5
    k = min(n, 32)
    z = module.sample(cond[:k], gen, steps, cfg_scale)
    h = module.vae.decode(module.vae.from_dit(z))
    logits = module.vae.query(h, val["points"][:k]).float()
    iou = occupancy_iou(logits, val["occ"][:k].float())
    module.train()
    return {
        "val_loss": per_item["cond"].mean().item(),
        "cond_gap": gap.mean().item(),
        "cond_gap_noisy": gap[noisy].mean().item(),
        "rel_gap_noisy": (gap[noisy].sum() / per_item["null"][noisy].sum()).item(),
        "sample_iou": iou.mean().item(),
    }


def run(a) -> None:
    data = torch.load(a.data)
    over = [f"init_from={data['vae']}", *a.set]
    cfg, _, module = build(over)
    torch.manual_seed(0)
    module.flow.timestep_sampling = a.timesteps
    module.flow.shift = a.shift
    cond_params = list(module.conditioner.parameters())
    groups = [
        {"params": list(module.model.parameters()), "lr": a.lr},
        {"params": cond_params, "lr": a.lr * a.cond_lr_scale},
    ]
    for p in cond_params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(groups, weight_decay=0.0, betas=(0.9, 0.99))
    base_lrs = [g["lr"] for g in opt.param_groups]
    tr, val = data["train"], data["val"]
    gen = torch.Generator().manual_seed(0)
    module.train()
    module.vae.eval()
    t0, step, est_total, budget = time.time(), 0, None, a.minutes * 60
    while time.time() - t0 < budget:
        el = time.time() - t0
        if step == 15:
            est_total = int(budget / (el / 15))
        frac = step / est_total if est_total else 0.0
        scale = min(1.0, (step + 1) / 20) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
        for g, lr in zip(opt.param_groups, base_lrs):
            g["lr"] = lr * scale
        idx = torch.randint(tr["latents"].shape[0], (a.bs,), generator=gen)
        x1 = tr["latents"][idx]
        cond = module.drop_condition(module.conditioner(tr["images"][idx].float()), gen)
        t = module.flow.sample_timesteps(a.bs, gen)
        loss = module.flow.loss(module.model_fn, x1, cond, t=t, noise=torch.randn(x1.shape, generator=gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            print(f"{a.name} step {step} {el:.0f}s loss {loss.item():.3f}", flush=True)
    ev = evaluate(module, val, a.sample_steps, a.cfg)
    rec = {"name": a.name, "steps": step, "minutes": a.minutes, "args": vars(a), **ev}
    print(json.dumps(rec), flush=True)
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="run")
    ap.add_argument("--minutes", type=float, default=4)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--cond-lr-scale", type=float, default=1.0)
    ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--timesteps", default="uniform")
    ap.add_argument("--shift", type=float, default=1.0)
    ap.add_argument("--sample-steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=5.0)
    ap.add_argument(
        "--set", nargs="*", default=[], help="extra Hydra overrides for the module (model.conditioner...)"
    )
    ap.add_argument("--vae", default="outputs/train_tiny/dit/tiny_vae/export")
    ap.add_argument("--val-root", default="data/tiny/benchmark")
    ap.add_argument("--train-batches", type=int, default=120)
    ap.add_argument("--val-batches", type=int, default=2)
    ap.add_argument("--data", default="outputs/dit_ab/data.pt")
    ap.add_argument("--out", default="outputs/dit_ab/results.jsonl")
    ap.add_argument("--prepare", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    if a.prepare:
        prepare(a)
    else:
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        run(a)


if __name__ == "__main__":
    main()
