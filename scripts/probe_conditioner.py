"""How much of each frame's shape a linear read-out of the image encoder's tokens recovers: the trained
conditioner against the same network at random initialisation, raw pixels and no image at all.

    python scripts/probe_conditioner.py [--ckpt EXPORT] [--train-objects 200] [--resolution 24] [--model] [--json PATH]

Every sequence gives ``--frames`` frames (every ``--stride``-th, as the evaluation reads them) from one camera
(view ``i mod views`` of training sequence i, view 0 of the benchmark), cropped as the checkpoint was trained. The
target is the ground-truth occupancy of a ``--resolution``³ grid over one box that holds every mesh; the
read-out is ridge regression from the features (the conditioner's tokens [L, D] flattened, or the 32² RGB
pixels), its strength chosen on every fifth training sequence held out, fitted on ``--train-objects``
training sequences and scored on the benchmark by the IoU of the predicted occupancy (> 0.5) with the truth.
A trained encoder that beats a random one by little has learned little about the shape from the flow loss;
``--model`` scores the checkpoint's own 4D samples (seed i, 20 steps) on the same grid, so a read-out that
beats them says the DiT uses less of the image than its encoder already holds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ("trained", "random", "pixels", "none")  # the read-outs compared
MODEL = "model_4d"  # --model: the checkpoint's own 4D samples on the same grid


def load_split(pipe, objects: list[Path], frames: int, stride: int, rotate_views: bool) -> dict:
    """Images ``[n, 3, S, S]``, GT meshes and category names of every frame of ``objects``, seen from camera 0
    or (``rotate_views``) from camera ``i mod views`` of sequence i."""
    from sculpt4d.evaluate import category_of, load_object

    images, meshes, cats, inputs = [], [], [], []
    for i, obj in enumerate(objects):
        views = len(list(next((obj / "render_cond").glob("frame_*")).glob("*.png")))
        paths, truths = load_object(obj, frames, i % views if rotate_views else 0, stride)
        images.append(pipe.load_images(paths))  # [T, 3, S, S], one crop box per clip
        inputs.append(paths)
        meshes += truths
        cats += [category_of(obj.name)] * len(truths)
    return {"images": torch.cat(images), "meshes": meshes, "categories": cats, "inputs": inputs}


@torch.no_grad()
def features(split: dict, kind: str, trained, random) -> np.ndarray:
    """``[n, d]`` features of one kind (``none``: an empty matrix: the read-out is the training mean)."""
    images = split["images"]
    if kind == "none":
        return np.zeros((len(images), 0), np.float32)
    if kind == "pixels":
        small = torch.nn.functional.interpolate(images, size=32, mode="area")
        return small.flatten(1).numpy()
    net = trained if kind == "trained" else random
    tokens = torch.cat([net(images[i : i + 32][None])[0] for i in range(0, len(images), 32)])  # [n, L, D]
    return tokens.flatten(1).float().numpy()


def ridge_fit(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dual-form ridge on centred data: ``(x_mean, y_mean, coef)`` with predictions ``(x' - x_mean) @ coef + y_mean``."""
    xm, ym = x.mean(0), y.mean(0)
    xc = (x - xm).astype(np.float64)
    if xc.shape[1] == 0:
        return xm, ym, np.zeros((0, y.shape[1]))
    k = xc @ xc.T
    scale = np.trace(k) / len(k)
    alpha = np.linalg.solve(k + lam * scale * np.eye(len(k)), (y - ym).astype(np.float64))
    return xm, ym, xc.T @ alpha


def ridge_predict(model: tuple[np.ndarray, np.ndarray, np.ndarray], x: np.ndarray) -> np.ndarray:
    xm, ym, coef = model
    return (x - xm) @ coef + ym if coef.shape[0] else np.broadcast_to(ym, (len(x), len(ym)))


def grid_iou(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-row IoU of ``pred > 0.5`` with the boolean ``truth``."""
    p, t = pred > 0.5, truth > 0.5
    union = (p | t).sum(1)
    return np.where(union > 0, (p & t).sum(1) / np.maximum(union, 1), 1.0)


def record(columns: dict[str, np.ndarray], column: str, ious: np.ndarray, note: str = "") -> None:
    """Keep one column's per-frame IoUs and print their mean."""
    columns[column] = ious
    print(f"{column:8s} benchmark grid IoU {ious.mean():.3f}{note}", flush=True)


def measure(ckpt: str, train: Path, benchmark: Path, train_objects: int, frames: int, stride: int,
            resolution: int, lambdas: list[float], model: bool = False) -> dict:  # fmt: skip
    """``{"per_category": {cat: {kind: iou}}, "all": {kind: iou}, "lambda": {kind: chosen}}``."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from sculpt4d.checkpoints.resolve import resolve_checkpoint
    from sculpt4d.evaluate import category_means, evenly_spaced, find_objects
    from sculpt4d.metrics.occupancy import occupancy_grid
    from sculpt4d.pipeline import Sculpt4DPipeline

    pipe = Sculpt4DPipeline.from_pretrained(ckpt)
    cfg = OmegaConf.load(resolve_checkpoint(str(ckpt)) / "config.yaml")
    torch.manual_seed(0)
    random = instantiate(cfg.model.conditioner).eval()  # the same network, freshly initialised
    trained = pipe.components.conditioner.eval()
    pool = find_objects(train)
    train_list = [pool[i] for i in evenly_spaced(len(pool), min(train_objects, len(pool)))]
    splits = {
        "train": load_split(pipe, train_list, frames, stride, rotate_views=True),
        "test": load_split(pipe, find_objects(benchmark), frames, stride, rotate_views=False),
    }
    everything = [m for s in splits.values() for m in s["meshes"]]
    half = 1.02 * max(float(np.abs(m.vertices).max()) for m in everything)
    bounds = (np.full(3, -half), np.full(3, half))
    for s in splits.values():
        s["occ"] = np.stack([occupancy_grid(m, bounds, resolution).ravel() for m in s["meshes"]]).astype(
            np.float32
        )
    # every 5th training sequence (every category: the list is sorted by name) is held out to choose the strength
    held = np.repeat(np.arange(len(train_list)) % 5 == 4, frames)
    columns: dict[str, np.ndarray] = {}  # per-frame IoUs of each read-out (and of the model)
    chosen: dict[str, float] = {}
    for kind in FEATURES:
        x_tr, x_te = (features(splits[k], kind, trained, random) for k in ("train", "test"))
        y_tr, y_te = splits["train"]["occ"], splits["test"]["occ"]
        holdout = {
            lam: grid_iou(
                ridge_predict(ridge_fit(x_tr[~held], y_tr[~held], lam), x_tr[held]), y_tr[held]
            ).mean()
            for lam in lambdas
        }
        best = max(holdout, key=holdout.get)
        ious = grid_iou(ridge_predict(ridge_fit(x_tr, y_tr, best), x_te), y_te)
        chosen[kind] = best
        record(columns, kind, ious, f" (ridge strength {best:g})")
    if model:  # the checkpoint's 4D samples (the evaluation's seeds and 20 steps), scored on the same grid
        preds = [
            occupancy_grid(m, bounds, resolution).ravel()
            for i, paths in enumerate(splits["test"]["inputs"])
            for m in pipe(paths, seed=i, num_steps=20, progress=False).meshes
        ]
        ious = grid_iou(np.stack(preds).astype(np.float32), splits["test"]["occ"])
        record(columns, MODEL, ious)
    rows = [
        {"category": cat, **{c: ious[i] for c, ious in columns.items()}}
        for i, cat in enumerate(splits["test"]["categories"])
    ]
    result = {**category_means(rows, list(columns)), "lambda": chosen}
    result["settings"] = {"ckpt": str(ckpt), "train_objects": len(train_list), "frames": frames,
                          "stride": stride, "resolution": resolution}  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", default=str(ROOT / "data" / "checkpoints" / "tiny"))
    ap.add_argument("--train", type=Path, default=ROOT / "data" / "tiny" / "train")
    ap.add_argument("--benchmark", type=Path, default=ROOT / "data" / "tiny" / "benchmark")
    ap.add_argument("--train-objects", type=int, default=200, help="training sequences, evenly spaced")
    ap.add_argument("--frames", type=int, default=8, help="frames per sequence (evaluate's 8)")
    ap.add_argument("--stride", type=int, default=2, help="every k-th frame (evaluate's 2)")
    ap.add_argument("--resolution", type=int, default=24, help="occupancy grid per axis")
    ap.add_argument("--lambdas", type=float, nargs="+", default=[1e-3, 1e-2, 1e-1, 1.0, 10.0])
    ap.add_argument("--model", action="store_true", help="also score the checkpoint's 4D samples on the grid")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    for folder in (a.train, a.benchmark):
        if not folder.is_dir():
            print(f"probe_conditioner: {folder}: no such folder (make data-tiny)")
            return 2
    if a.train_objects < 2:
        print(f"probe_conditioner: --train-objects {a.train_objects}: need at least 2 sequences")
        return 2
    from sculpt4d.evaluate import report_category_rows

    out = measure(a.ckpt, a.train, a.benchmark, a.train_objects, a.frames, a.stride, a.resolution, a.lambdas,
                  a.model)  # fmt: skip
    report_category_rows(out, [*FEATURES, *([MODEL] if a.model else [])], a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
