"""Evaluate a list of checkpoints as one study: ``python -m sculpt4d.evaluate 'ckpts=["name=path",...]'``.

Each checkpoint (an exported folder) is evaluated like ``python -m sculpt4d.evaluate ckpt=<path>`` with the
methods of ``study.methods`` (default: the 4D model alone) into ``<output_dir>/<name>/``; a checkpoint whose
``entry.json`` there holds the same weights hash and evaluation settings is not evaluated again, so a killed
study resumes. Names ``<variant>_s<seed>`` (an ``ablation_`` prefix is dropped) are grouped by variant and
every metric is reported as mean ± sample standard deviation over the seeds. Writes ``table.md``,
``table.json`` and ``plot.png`` (IoU and motion IoU against the DiT TFLOPs of one tiny sampling run and
against the analytic PFLOPs of the paper-size DiT under the same mask, :func:`paper_sampling_pflops`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from sculpt4d.errors import InputError

#: (key, header, format) of the study table; ``paper_pflops`` is per variant, the others per checkpoint
STUDY_COLUMNS = (
    ("iou", "IoU ↑", ".3f"),
    ("motion_iou", "motion IoU ↑", ".3f"),
    ("chamfer", "Chamfer ↓", ".4f"),
    ("fscore", "F-score ↑", ".3f"),
    ("jitter", "jitter ↓", ".4f"),
    ("tflops", "tiny DiT TFLOPs", ".2f"),
    ("paper_pflops", "paper-size PFLOPs", ".1f"),
)
_SEED = re.compile(r"^(?:ablation_)?(?P<variant>.+?)(?:_s(?P<seed>\d+))?$")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_ckpts(items: Any) -> dict[str, Path]:
    """``[name=path, path, ...]`` (or a ``{name: path}`` mapping) -> ``{name: export folder}``.

    A bare path is named after its folder (``.../ablation_full_s0/export`` -> ``ablation_full_s0``)."""
    if isinstance(items, str):
        items = [items]
    pairs = list(items.items()) if hasattr(items, "items") else [_split(str(i)) for i in items]
    out: dict[str, Path] = {}
    for name, path in pairs:
        path = Path(str(path)).expanduser()
        if not (path / "model.safetensors").is_file() or not (path / "config.yaml").is_file():
            raise InputError(
                f"ckpts: '{name}={path}' is not an exported checkpoint folder (model.safetensors + config.yaml)"
            )
        if str(name) in out:
            raise InputError(f"ckpts: the name '{name}' is given twice; names must be unique")
        out[str(name)] = path
    if not out:
        raise InputError("ckpts=[] is empty; pass ckpts=[name=path,...] (exported checkpoint folders)")
    return out


def _split(item: str) -> tuple[str, str]:
    name, sep, path = item.partition("=")
    if sep:
        return name, path
    p = Path(item)
    return (p.parent.name if p.name == "export" else p.name), item


def variant_and_seed(name: str) -> tuple[str, int | None]:
    """``ablation_full_s1`` -> (``full``, 1); ``mymodel`` -> (``mymodel``, None)."""
    m = _SEED.match(name)
    assert m is not None
    return m["variant"], (int(m["seed"]) if m["seed"] is not None else None)


def checkpoint_attention(path: Path) -> dict[str, Any]:
    """The attention a checkpoint was trained with (its ``inference:`` node, else the top level)."""
    from sculpt4d.inference import InferenceDefaults

    att = InferenceDefaults.from_config(OmegaConf.load(path / "config.yaml")).attention
    return dict(att or {"variant": "blockmask"})


def aggregate(entries: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant (checkpoints grouped by :func:`variant_and_seed`): mean, std (ddof 1; 0 for one seed),
    min, max and the values of every :data:`STUDY_COLUMNS` metric, the seeds and the checkpoint names."""
    groups: dict[str, list[str]] = {}
    for name in entries:
        groups.setdefault(variant_and_seed(name)[0], []).append(name)
    out: dict[str, dict[str, Any]] = {}
    for variant, names in groups.items():
        row: dict[str, Any] = {
            "checkpoints": names,
            "seeds": [variant_and_seed(n)[1] for n in names],
            "attention": entries[names[0]]["attention"],
        }
        for key, _, _ in STUDY_COLUMNS:
            vals = [float(entries[n]["metrics"][key]) for n in names]
            finite = [v for v in vals if math.isfinite(v)]
            mean = float(np.mean(finite)) if finite else float("nan")
            std = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
            row[key] = {"mean": mean, "std": std, "min": min(vals), "max": max(vals), "values": vals}
        out[variant] = row
    return out


def format_study_table(agg: dict[str, dict[str, Any]]) -> str:
    """Markdown: one row per variant, ``mean ± std`` over its seeds."""
    header = ["variant", "seeds", *[h for _, h, _ in STUDY_COLUMNS]]
    rows = []
    for variant, r in agg.items():
        cells = [variant, str(len(r["checkpoints"]))]
        for key, _, f in STUDY_COLUMNS:
            m = r[key]
            cells.append(f"{m['mean']:{f}}" + (f" ± {m['std']:{f}}" if len(r["checkpoints"]) > 1 else ""))
        rows.append(cells)
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(c) + " |" for c in lines)


def plot_study(agg: dict[str, dict[str, Any]], path: Path) -> Path:
    """2 x 2: IoU / motion IoU (rows) against tiny TFLOPs / paper-size PFLOPs (columns), ± std bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sculpt4d.utils.io import atomic_path

    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    for row, (metric, label) in enumerate((("iou", "IoU ↑"), ("motion_iou", "motion IoU ↑"))):
        for col, (xkey, xlabel) in enumerate(
            (("tflops", "DiT TFLOPs per sampling run (tiny model)"),
             ("paper_pflops", "DiT PFLOPs per sampling run (paper size, analytic)"))
        ):  # fmt: skip
            ax = axes[row, col]
            for i, (variant, r) in enumerate(agg.items()):
                x, y = r[xkey]["mean"], r[metric]
                ax.errorbar(x, y["mean"], yerr=y["std"], fmt="o", color=f"C{i % 10}", capsize=3)
                ax.annotate(variant, (x, y["mean"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    fig.suptitle("Ablation: quality against compute (mean ± std over seeds)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


#: evaluation keys an entry is reused under (with the weights hash)
SETTING_KEYS = ("benchmark", "max_objects", "cond_view", "frame_stride", "sequence_length", "num_steps",
                "guidance_scale", "noise_share_alpha", "octree_resolution", "decode_min_resolution", "mc_level",
                "seed", "metrics", "study")  # fmt: skip


def eval_settings(cfg: DictConfig) -> dict[str, Any]:
    """The evaluation settings of an entry (entries are reused only under the same ones)."""
    out: dict[str, Any] = {}
    for key in SETTING_KEYS:
        value = cfg.get(key)
        out[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return out


def evaluate_one(cfg: DictConfig, name: str, ckpt: Path, out_dir: Path) -> dict[str, Any]:
    """The study entry of one checkpoint: reused when ``<out_dir>/<name>/entry.json`` holds its weights hash
    and the same evaluation settings."""
    from sculpt4d.evaluate import run_evaluate
    from sculpt4d.models.flops import paper_sampling_pflops
    from sculpt4d.utils.io import write_json

    digest = sha256(ckpt / "model.safetensors")
    entry_file = out_dir / name / "entry.json"
    if entry_file.is_file():
        entry = json.loads(entry_file.read_text())
        if entry.get("sha256") == digest and entry.get("settings") == eval_settings(cfg):
            print(f"[study] {name}: already evaluated ({entry_file})", flush=True)
            return entry
    study = cfg.get("study") or {}
    methods = [str(m) for m in study.get("methods", ["4d"])]
    sub = cfg.copy()
    with open_dict(sub):
        sub.ckpts = None
        sub.ckpt = str(ckpt)
        sub.methods = methods
        sub.variants = []
        sub.output_dir = str(out_dir / name)
        sub.overwrite = True  # a stale evaluation of other weights is replaced
        sub.gallery.objects = int(study.get("gallery_objects", 0))
    print(f"[study] {name}: evaluating {ckpt}", flush=True)
    summary = run_evaluate(sub)
    attention = checkpoint_attention(ckpt)
    model_row = summary[methods[0]]
    entry = {
        "name": name,
        "ckpt": str(ckpt),
        "sha256": digest,
        "settings": eval_settings(cfg),
        "attention": attention,
        "metrics": {
            **{k: model_row[k] for k, _, _ in STUDY_COLUMNS if k in model_row},
            "paper_pflops": paper_sampling_pflops(attention, T=int(study.get("paper_frames", 16))),
        },
        "methods": summary,
    }
    write_json(entry_file, entry)
    return entry


def run_study(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """Evaluate every checkpoint of ``cfg.ckpts`` (resumable), then write the table and the plot."""
    from sculpt4d.evaluate import resolve_benchmark
    from sculpt4d.predict import check_options
    from sculpt4d.utils.io import atomic_path, check_output_dir, write_json

    ckpts = parse_ckpts(cfg.ckpts)
    check_options(cfg)
    root = resolve_benchmark(cfg)
    out_dir = check_output_dir(
        str(cfg.output_dir),
        marker="study.json",
        inputs=[root, *ckpts.values()],
        overwrite=bool(cfg.overwrite),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        out_dir / "study.json", {"benchmark": str(root), "ckpts": {k: str(v) for k, v in ckpts.items()}}
    )
    entries = {name: evaluate_one(cfg, name, path, out_dir) for name, path in ckpts.items()}
    agg = aggregate(entries)
    table = format_study_table(agg)
    with atomic_path(out_dir / "table.md") as tmp:
        tmp.write_text(
            f"Benchmark `{root}`, {len(entries)} checkpoints; mean ± sample std over seeds; paper-size "
            f"PFLOPs: analytic, T={int((cfg.get('study') or {}).get('paper_frames', 16))}, N=4096, "
            "50 steps x CFG 2.\n\n" + table + "\n"
        )
    write_json(out_dir / "table.json", {"benchmark": str(root), "variants": agg,
                                        "hashes": {n: e["sha256"] for n, e in entries.items()}})  # fmt: skip
    plot_study(agg, out_dir / "plot.png")
    print(table)
    print(f"[study] wrote {out_dir / 'table.md'}, table.json and plot.png")
    return agg
