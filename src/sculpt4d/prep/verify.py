"""Sanity checks of one prepared object: report.json + report.txt + point-cloud snapshots.

Checks: exact npz keys / dtypes / shapes; finite values; centring and the [-0.5, 0.5] range of the
sequence; unit normals; cross-frame correspondence (per-point step between consecutive frames, 99th
percentile relative to the object size; outliers = points that move unlike their neighbours); renders vs transforms.json (mesh vertices
projected with the stored cameras land inside the alpha mask).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from sculpt4d.utils.io import atomic_path, write_json

KINDS = ("random_surface", "sharp_surface")
KEY_RE = re.compile(r"^frame_(\d{4})/(random_surface|sharp_surface)$")


def load_points(npz_path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """All arrays of a 4d_sample_new.npz (allow_pickle=False) and problems with its keys/dtypes/shapes."""
    problems: list[str] = []
    with np.load(npz_path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    frames = sorted({m.group(1) for k in data if (m := KEY_RE.match(k))})
    bad_keys = [k for k in data if not KEY_RE.match(k)]
    if bad_keys:
        problems.append(f"unexpected keys: {bad_keys[:5]}")
    expected = {f"frame_{f}/{kind}" for f in frames for kind in KINDS}
    if missing := sorted(expected - set(data)):
        problems.append(f"missing keys: {missing[:5]}")
    if frames and [int(f) for f in frames] != list(range(len(frames))):
        problems.append("frame numbers are not 0..T-1")
    for k, a in data.items():
        if a.dtype != np.float16 or a.ndim != 2 or a.shape[1] != 6:
            problems.append(f"{k}: dtype {a.dtype} shape {a.shape}, expected float16 (N, 6)")
    for kind in KINDS:
        ns = {data[f"frame_{f}/{kind}"].shape[0] for f in frames if f"frame_{f}/{kind}" in data}
        if len(ns) > 1:
            problems.append(f"{kind}: point count differs across frames {sorted(ns)}")
    return data, problems


def _sequence(data: dict[str, np.ndarray], kind: str) -> np.ndarray:
    frames = sorted({m.group(1) for k in data if (m := KEY_RE.match(k))})
    return np.stack([data[f"frame_{f}/{kind}"].astype(np.float32) for f in frames])  # [T, N, 6]


def _jumps(pos: np.ndarray, disp: np.ndarray, jump: float, k: int = 8) -> np.ndarray:
    """Points whose step differs from their k nearest neighbours' median step by > jump + half of it.

    Real (rigid / articulated / smooth) motion moves neighbours together; a correspondence error
    makes one point jump alone.  pos [T-1, N, 3], disp [T-1, N, 3] -> [T-1, N] bool
    """
    from scipy.spatial import cKDTree

    out = np.zeros(disp.shape[:2], dtype=bool)
    k = min(k, pos.shape[1])
    for t in range(pos.shape[0]):
        _, nn = cKDTree(pos[t]).query(pos[t], k=k)
        local = np.median(disp[t][nn.reshape(pos.shape[1], -1)], axis=1)  # [N, 3]
        dev = np.linalg.norm(disp[t] - local, axis=-1)
        out[t] = dev > jump + 0.5 * np.linalg.norm(local, axis=-1)  # large deformations move neighbours apart
    return out


def check_points(data: dict[str, np.ndarray], jump: float = 0.1) -> dict:
    """Numeric checks of the point sequences (see module docstring)."""
    out: dict = {}
    allp = np.concatenate([_sequence(data, k)[..., :3].reshape(-1, 3) for k in KINDS])
    lo, hi = allp.min(0), allp.max(0)
    out["bbox_min"], out["bbox_max"] = lo.tolist(), hi.tolist()
    out["centre"] = ((lo + hi) / 2).tolist()
    out["extent"] = float((hi - lo).max())
    out["centred"] = bool(np.abs((lo + hi) / 2).max() < 0.02)
    out["in_range"] = bool(lo.min() >= -0.5 - 1e-3 and hi.max() <= 0.5 + 1e-3)
    out["normalised"] = bool(abs(out["extent"] - 1.0) < 0.02)
    for kind in KINDS:
        seq = _sequence(data, kind)  # [T, N, 6]
        d: dict = {"frames": int(seq.shape[0]), "points": int(seq.shape[1])}
        d["finite"] = bool(np.isfinite(seq).all())
        nrm = np.linalg.norm(seq[..., 3:], axis=-1)
        d["normal_norm_max_err"] = float(np.abs(nrm - 1).max())
        d["unit_normals"] = bool(d["normal_norm_max_err"] < 5e-3)
        if seq.shape[0] > 1:
            disp = np.diff(seq[..., :3], axis=0) / max(out["extent"], 1e-9)  # [T-1, N, 3]
            step = np.linalg.norm(disp, axis=-1)  # [T-1, N]
            outl = _jumps(seq[:-1, :, :3], disp, jump)
            d["step_p99_per_pair"] = np.percentile(step, 99, axis=1).round(5).tolist()
            d["step_p99"] = float(np.percentile(step, 99))
            d["step_max"] = float(step.max())
            d["outlier_points"] = int(outl.any(0).sum())
            d["outlier_fraction"] = float(outl.any(0).mean())
            d["consistent"] = bool(d["outlier_fraction"] < 0.01)
        else:
            d["consistent"] = True
        out[kind] = d
    return out


def check_renders(obj_dir: Path, frames: int = 3, min_inside: float = 0.95, dilate: int = 2) -> dict:
    """Project each frame's mesh.ply vertices with transforms.json: fraction inside the (dilated) alpha."""
    from PIL import Image
    from scipy import ndimage

    from sculpt4d.prep.cameras import project
    from sculpt4d.prep.meshio import list_frames, read_ply

    fds = list_frames(obj_dir)
    if not fds:
        return {"ok": False, "problem": "no render_cond frames"}
    pick = sorted({0, len(fds) // 2, len(fds) - 1})[:frames]
    res: dict = {"frames_checked": [], "inside_min": 1.0, "problems": []}
    for t in pick:
        fd = fds[t]
        tf_path = fd / "transforms.json"
        if not tf_path.exists():
            res["problems"].append(f"{fd.name}: no transforms.json")
            continue
        tf = json.loads(tf_path.read_text())
        pngs = sorted(fd.glob("*.png"))
        if len(pngs) != len(tf["frames"]):
            res["problems"].append(f"{fd.name}: {len(pngs)} png vs {len(tf['frames'])} cameras")
        v, _, _ = read_ply(fd / "mesh.ply")
        for fr in tf["frames"]:
            img = np.asarray(Image.open(fd / fr["file_path"]))
            if img.shape[:2] != (tf["height"], tf["width"]) or img.ndim != 3 or img.shape[2] != 4:
                res["problems"].append(f"{fd.name}/{fr['file_path']}: shape {img.shape}")
                continue
            mask = ndimage.binary_dilation(img[..., 3] > 0, iterations=dilate)
            uv, depth = project(v, fr)
            ok = (
                (depth > 0)
                & (uv[:, 0] >= 0)
                & (uv[:, 1] >= 0)
                & (uv[:, 0] < tf["width"])
                & (uv[:, 1] < tf["height"])
            )
            if not ok.any():
                res["problems"].append(f"{fd.name}/{fr['file_path']}: mesh not in view")
                continue
            ij = uv[ok].astype(int)
            inside = float(mask[ij[:, 1], ij[:, 0]].mean())
            res["inside_min"] = min(res["inside_min"], inside)
        res["frames_checked"].append(fd.name)
    res["ok"] = not res["problems"] and res["inside_min"] >= min_inside
    return res


def snapshot(data: dict[str, np.ndarray], path: Path, max_points: int = 3000) -> None:
    """3 orthographic views (front XY, side ZY, top XZ) x first / middle / last frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seq = _sequence(data, "random_surface")
    t_pick = sorted({0, seq.shape[0] // 2, seq.shape[0] - 1})
    idx = np.random.default_rng(0).permutation(seq.shape[1])[:max_points]
    views = (("front (x,y)", 0, 1), ("side (z,y)", 2, 1), ("top (x,z)", 0, 2))
    fig, axes = plt.subplots(len(t_pick), 3, figsize=(9, 3 * len(t_pick)), squeeze=False)
    for r, t in enumerate(t_pick):
        p = seq[t, idx]
        colour = 0.5 + 0.5 * p[:, 3:6]
        for c, (title, a, b) in enumerate(views):
            ax = axes[r, c]
            ax.scatter(p[:, a], p[:, b], s=0.5, c=np.clip(colour, 0, 1))
            ax.set_xlim(-0.55, 0.55)
            ax.set_ylim(-0.55, 0.55)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"frame {t} {title}", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)


def verify_object(obj_dir: str | Path, out_dir: str | Path) -> dict:
    """Verify one prepared object; writes report.json, report.txt and snapshot.png into ``out_dir``."""
    obj_dir, out_dir = Path(obj_dir), Path(out_dir)
    rep: dict = {"object": obj_dir.name, "problems": [], "warnings": []}
    npz = obj_dir / "geo_data" / "4d_sample_new.npz"
    if npz.exists():
        data, problems = load_points(npz)
        rep["problems"] += problems
        if not problems:
            rep["points"] = check_points(data)
            pts = rep["points"]
            for flag in ("centred", "in_range", "normalised"):
                if not pts[flag]:
                    rep["problems"].append(f"points not {flag}")
            for kind in KINDS:
                for flag in ("finite", "unit_normals"):
                    if not pts[kind][flag]:
                        rep["problems"].append(f"{kind}: not {flag}")
                if not pts[kind]["consistent"]:  # parts sliding past each other also trip it: a warning
                    rep["warnings"].append(
                        f"{kind}: {pts[kind]['outlier_points']} points move unlike their neighbours "
                        f"(check the snapshot; expected near parts that move relative to each other)"
                    )
            snapshot(data, out_dir / "snapshot.png")
    else:
        rep["problems"].append("no geo_data/4d_sample_new.npz")
    if (obj_dir / "render_cond").exists():
        rep["renders"] = check_renders(obj_dir)
        if not rep["renders"]["ok"]:
            rep["problems"].append(f"renders/transforms inconsistent: {rep['renders']}")
    rep["ok"] = not rep["problems"]
    write_json(out_dir / "report.json", rep)
    with atomic_path(out_dir / "report.txt") as tmp:
        tmp.write_text(format_report(rep))
    return rep


def format_report(rep: dict) -> str:
    lines = [f"object {rep['object']}: {'OK' if rep['ok'] else 'PROBLEMS'}"]
    pts = rep.get("points")
    if pts:
        lines.append(
            f"  bbox {np.round(pts['bbox_min'], 3)} .. {np.round(pts['bbox_max'], 3)}  extent {pts['extent']:.3f}"
        )
        for kind in KINDS:
            d = pts[kind]
            lines.append(
                f"  {kind}: {d['frames']} frames x {d['points']} pts, finite={d['finite']}, "
                f"|n|-1 max {d['normal_norm_max_err']:.1e}, step p99 {d.get('step_p99', 0):.4f} "
                f"max {d.get('step_max', 0):.4f} (x size), outliers {d.get('outlier_points', 0)}"
            )
    if "renders" in rep:
        r = rep["renders"]
        lines.append(
            f"  renders: frames {r.get('frames_checked')} vertices in mask >= {r.get('inside_min', 0):.3f}"
        )
    lines += [f"  ! {p}" for p in rep["problems"]] + [f"  ? {w}" for w in rep.get("warnings", [])]
    return "\n".join(lines) + "\n"
