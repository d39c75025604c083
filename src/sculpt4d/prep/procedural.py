"""Procedural animated 4D assets (GLB) for training and a held-out benchmark.

Categories (demo names of the original release in brackets): ``door``, ``gear`` [chilun10], ``angle``,
``box``, ``figure`` [fatman]. Each is built from closed primitives (watertight parts), animated with node
TRS channels (rigid parts) or a real skin (the figure), randomised from a seed, centred and scaled so the
whole motion fits a unit cube (max extent 1).

Seed convention: training assets use seeds in ``TRAIN_SEEDS`` = [0, 10000); the held-out benchmark uses
seeds >= ``BENCHMARK_SEED_OFFSET`` = 100000 (``generate_collection(..., seed_offset=100000)``), so the
two splits never share an asset.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from sculpt4d.errors import InputError
from sculpt4d.prep.gltf_build import (
    GlbBuilder,
    box,
    capsule,
    cylinder,
    ellipsoid,
    extrude,
    quat_axis_angle,
)

__all__ = [
    "CATEGORIES",
    "DEMO_NAMES",
    "TRAIN_SEEDS",
    "BENCHMARK_SEED_OFFSET",
    "generate_asset",
    "generate_collection",
]

CATEGORIES = ("door", "gear", "angle", "box", "figure")
DEMO_NAMES = {"door": "door", "gear": "chilun10", "angle": "angle", "box": "box", "figure": "fatman"}
TRAIN_SEEDS = range(0, 10000)
BENCHMARK_SEED_OFFSET = 100000
DURATION = 2.0  # seconds per clip
MIN_THIN = 0.06  # thinnest part dimension after normalisation (fraction of the max extent)

Mesh = tuple[np.ndarray, np.ndarray]  # V [n,3], F [m,3]


def _colour(rng: np.random.Generator) -> list[float]:
    """Saturated random base colour (linear RGB + alpha 1)."""
    h, s, v = rng.uniform(0, 1), rng.uniform(0.45, 0.85), rng.uniform(0.45, 0.9)
    k = (np.array([5, 3, 1]) + h * 6) % 6
    rgb = v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)
    return [*np.round(rgb, 4).tolist(), 1.0]


def _ease(u: np.ndarray) -> np.ndarray:
    return u * u * (3 - 2 * u)  # smoothstep


def _shift(m: Mesh, offset) -> Mesh:
    return m[0] + np.asarray(offset, np.float64), m[1]


def _rot(m: Mesh, axis, angle: float) -> Mesh:
    q = quat_axis_angle(axis, angle)[0]
    x, y, z, w = q
    r = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    return m[0] @ r.T, m[1]


# ------------------------------------------------------------------ categories
# Each builder fills ``b`` under ``root`` and returns (meta, thinnest raw dimension).
def _door(
    b: GlbBuilder, root: int, rng: np.random.Generator, u: np.ndarray, k: float = 1.0
) -> tuple[dict, float]:
    h = rng.uniform(0.85, 1.0)  # panel height
    w = rng.uniform(0.42, 0.6) * h  # panel width
    t = rng.uniform(0.07, 0.1) * k  # panel thickness
    fw = rng.uniform(0.08, 0.12) * k  # frame member width
    fd = t * rng.uniform(1.3, 1.8)  # frame depth
    gap = 0.01
    sill = bool(rng.uniform() < 0.5)
    c_frame, c_panel, c_knob = _colour(rng), _colour(rng), _colour(rng)
    m_frame, m_panel, m_knob = (
        b.material(c_frame, "frame"),
        b.material(c_panel, "panel"),
        b.material(c_knob, "knob"),
    )
    inner_w, inner_h = w + 2 * gap, h + 2 * gap
    y0 = -inner_h / 2
    frame = [
        box(
            [fw, inner_h + fw * (2 if sill else 1), fd],
            [-(inner_w + fw) / 2, fw * (0 if sill else 0.5) / 1, 0],
        ),
        box(
            [fw, inner_h + fw * (2 if sill else 1), fd],
            [(inner_w + fw) / 2, fw * (0 if sill else 0.5) / 1, 0],
        ),
        box([inner_w, fw, fd], [0, inner_h / 2 + fw / 2, 0]),
    ]
    if sill:
        frame.append(box([inner_w, fw, fd], [0, y0 - fw / 2, 0]))
    b.node("frame", root, b.mesh("frame", [(v, f, m_frame) for v, f in frame]))
    sign = 1.0 if rng.uniform() < 0.5 else -1.0
    angle = np.deg2rad(rng.uniform(85, 110))
    hinge_x = -w / 2 - gap
    hinge = b.node("hinge", root, translation=[hinge_x, 0, 0])
    knob_r = rng.uniform(0.035, 0.045) * k
    knob = _shift(ellipsoid([knob_r] * 3, 8, 12), [w - 0.12 * w, 0, sign * (t / 2 + knob_r * 0.6)])
    panel = b.mesh("panel", [(*box([w, h, t], [w / 2, 0, 0]), m_panel), (*knob, m_knob)])
    b.node("panel", hinge, panel)
    q = quat_axis_angle([0, 1, 0], -sign * angle * _ease(u))  # opens towards +z*sign
    b.channel(hinge, "rotation", u * DURATION, q)
    meta = dict(
        parts=dict(frame="frame", moving="panel"),
        motion=dict(
            kind="hinge", axis=[0, 1, 0], start_deg=0.0, end_deg=float(np.rad2deg(angle)), direction=sign
        ),
        dims=dict(width=w, height=h, thickness=t, frame_width=fw, sill=sill),
        colors=dict(frame=c_frame, panel=c_panel, knob=c_knob),
    )
    return meta, min(t, fw, 2 * knob_r)


def gear_outline(n_teeth: int, r_root: float, r_tip: float, samples_per_tooth: int = 8) -> np.ndarray:
    """CCW outline [n_teeth*4, 2]: trapezoidal teeth (tip ~35% of the pitch, flanks 15%)."""
    pitch = 2 * np.pi / n_teeth
    fr = np.array([0.0, 0.15, 0.5, 0.65])  # root start, tip start, tip end, root end (fraction of pitch)
    rad = np.array([r_root, r_tip, r_tip, r_root])
    ang = (np.arange(n_teeth)[:, None] + fr[None]) * pitch  # [n,4]
    r = np.broadcast_to(rad, ang.shape)
    return np.stack([(r * np.cos(ang)).ravel(), (r * np.sin(ang)).ravel()], 1)


def _gear(
    b: GlbBuilder, root: int, rng: np.random.Generator, u: np.ndarray, k: float = 1.0
) -> tuple[dict, float]:
    n_teeth = 10
    r_tip = 0.5
    r_root = r_tip * rng.uniform(0.72, 0.82)
    thick = rng.uniform(0.1, 0.16) * k
    c_gear, c_hub, c_stand = _colour(rng), _colour(rng), _colour(rng)
    m_gear, m_hub, m_stand = (
        b.material(c_gear, "gear"),
        b.material(c_hub, "hub"),
        b.material(c_stand, "stand"),
    )
    hub_r = r_root * rng.uniform(0.25, 0.35)
    hub = _rot(cylinder(hub_r, thick * 1.6, 20), [1, 0, 0], np.pi / 2)  # along z
    marker_s = rng.uniform(0.08, 0.11) * k
    marker = box([marker_s, marker_s, marker_s], [0, r_root * 0.6, thick / 2 + marker_s / 2 - 0.01])
    gear = b.mesh(
        "gear",
        [(*extrude(gear_outline(n_teeth, r_root, r_tip), thick), m_gear), (*hub, m_hub), (*marker, m_gear)],
    )
    # static stand: base block + post behind the gear up to the axle
    post_w = rng.uniform(0.08, 0.11) * k
    z_post = -(thick * 0.8 + post_w / 2)
    base_h = rng.uniform(0.07, 0.1) * k
    y_base = -r_tip - 0.08 - base_h / 2
    stand = [
        box([r_tip * 1.6, base_h, rng.uniform(0.3, 0.45)], [0, y_base, z_post]),
        box([post_w, -y_base, post_w], [0, y_base / 2, z_post]),
    ]
    b.node("stand", root, b.mesh("stand", [(v, f, m_stand) for v, f in stand]))
    total = rng.uniform(60, 150)
    while min(total % 36, 36 - total % 36) < 8:  # keep the end pose distinguishable from the start
        total = rng.uniform(60, 150)
    sign = 1.0 if rng.uniform() < 0.5 else -1.0
    spin = b.node("spin", root)
    b.node("gear", spin, gear)
    ang = np.deg2rad(total) * u * sign  # constant speed
    b.channel(spin, "rotation", u * DURATION, quat_axis_angle([0, 0, 1], ang))
    meta = dict(
        parts=dict(frame="stand", moving="gear"),
        motion=dict(kind="spin", axis=[0, 0, 1], start_deg=0.0, end_deg=float(total), direction=sign),
        dims=dict(n_teeth=n_teeth, r_tip=r_tip, r_root=r_root, thickness=thick, hub_radius=hub_r),
        colors=dict(gear=c_gear, hub=c_hub, stand=c_stand),
    )
    return meta, min(thick, post_w, base_h, marker_s)


def _angle(
    b: GlbBuilder, root: int, rng: np.random.Generator, u: np.ndarray, k: float = 1.0
) -> tuple[dict, float]:
    length = rng.uniform(0.6, 0.8)
    width = rng.uniform(0.35, 0.6)
    t = rng.uniform(0.07, 0.1) * k
    c_a, c_b, c_h = _colour(rng), _colour(rng), _colour(rng)
    m_a, m_b, m_h = b.material(c_a, "plate_a"), b.material(c_b, "plate_b"), b.material(c_h, "hinge")
    barrel = _rot(cylinder(t * 0.75, width * 1.05, 16), [1, 0, 0], np.pi / 2)  # along z
    b.node(
        "plate_a",
        root,
        b.mesh("plate_a", [(*box([length, t, width], [length / 2, 0, 0]), m_a), (*barrel, m_h)]),
    )
    hinge = b.node("hinge", root)
    b.node("plate_b", hinge, b.mesh("plate_b", [(*box([length, t, width], [length / 2, 0, 0]), m_b)]))
    a0, a1 = rng.uniform(25, 40), rng.uniform(150, 175)
    if rng.uniform() < 0.5:  # closing instead of opening
        a0, a1 = a1, a0
    ang = np.deg2rad(a0 + (a1 - a0) * _ease(u))
    b.channel(hinge, "rotation", u * DURATION, quat_axis_angle([0, 0, 1], ang))
    meta = dict(
        parts=dict(frame="plate_a", moving="plate_b"),
        motion=dict(kind="hinge", axis=[0, 0, 1], start_deg=float(a0), end_deg=float(a1), direction=1.0),
        dims=dict(length=length, width=width, thickness=t),
        colors=dict(plate_a=c_a, plate_b=c_b, hinge=c_h),
    )
    return meta, t


def _box(
    b: GlbBuilder, root: int, rng: np.random.Generator, u: np.ndarray, k: float = 1.0
) -> tuple[dict, float]:
    sx, sz = rng.uniform(0.7, 1.0), rng.uniform(0.5, 0.8)
    sy = rng.uniform(0.35, 0.6)
    t = rng.uniform(0.07, 0.09) * k  # wall thickness
    c_body, c_lid = _colour(rng), _colour(rng)
    m_body, m_lid = b.material(c_body, "body"), b.material(c_lid, "lid")
    y0 = -sy / 2
    walls = [
        box([sx, t, sz], [0, y0 + t / 2, 0]),  # bottom
        box([t, sy, sz], [-sx / 2 + t / 2, 0, 0]),
        box([t, sy, sz], [sx / 2 - t / 2, 0, 0]),
        box([sx - 2 * t, sy, t], [0, 0, -sz / 2 + t / 2]),
        box([sx - 2 * t, sy, t], [0, 0, sz / 2 - t / 2]),
    ]
    b.node("body", root, b.mesh("body", [(v, f, m_body) for v, f in walls]))
    lid_t = t * rng.uniform(1.0, 1.3)
    hinge = b.node("hinge", root, translation=[0, sy / 2, -sz / 2])
    b.node("lid", hinge, b.mesh("lid", [(*box([sx, lid_t, sz], [0, lid_t / 2, sz / 2]), m_lid)]))
    angle = rng.uniform(100, 120)
    q = quat_axis_angle([1, 0, 0], -np.deg2rad(angle) * _ease(u))  # front edge rises
    b.channel(hinge, "rotation", u * DURATION, q)
    meta = dict(
        parts=dict(frame="body", moving="lid"),
        motion=dict(kind="hinge", axis=[1, 0, 0], start_deg=0.0, end_deg=float(angle), direction=-1.0),
        dims=dict(size=[sx, sy, sz], wall=t, lid_thickness=lid_t),
        colors=dict(body=c_body, lid=c_lid),
    )
    return meta, t


def _figure(
    b: GlbBuilder, root: int, rng: np.random.Generator, u: np.ndarray, k: float = 1.0
) -> tuple[dict, float]:
    """Chubby humanoid: one skinned mesh; arms blend shoulder/elbow weights (the skin bends them)."""
    rx, ry, rz = rng.uniform(0.27, 0.34), rng.uniform(0.32, 0.4), rng.uniform(0.22, 0.28)
    head_r = rng.uniform(0.14, 0.18)
    arm_r, arm_l = rng.uniform(0.07, 0.09) * k, rng.uniform(0.45, 0.55)
    leg_r, leg_l = rng.uniform(0.09, 0.12), rng.uniform(0.38, 0.48)
    colors = dict(body=_colour(rng), head=_colour(rng), arms=_colour(rng), legs=_colour(rng))
    mats = {k: b.material(c, k) for k, c in colors.items()}
    hip_y = leg_l - 0.02
    torso_y = hip_y + ry * 0.8
    shoulder_y = torso_y + ry * 0.45
    shoulder_x = rx * np.sqrt(max(0.05, 1 - 0.45**2)) + arm_r * 0.9
    hip_x = rx * 0.45
    elbow = arm_l * 0.5
    # joint world positions at bind (identity rotations) and parents
    jpos = {
        "pelvis": [0, hip_y, 0],
        "spine": [0, torso_y, 0],
        "l_shoulder": [shoulder_x, shoulder_y, 0],
        "l_elbow": [shoulder_x, shoulder_y - elbow, 0],
        "r_shoulder": [-shoulder_x, shoulder_y, 0],
        "r_elbow": [-shoulder_x, shoulder_y - elbow, 0],
        "l_hip": [hip_x, hip_y, 0],
        "r_hip": [-hip_x, hip_y, 0],
    }
    parent = dict(spine="pelvis", l_shoulder="spine", r_shoulder="spine", l_elbow="l_shoulder", r_elbow="r_shoulder",
                  l_hip="pelvis", r_hip="pelvis")  # fmt: skip
    names = list(jpos)
    jidx = {n: i for i, n in enumerate(names)}
    nodes: dict[str, int] = {}
    for n in names:
        p = parent.get(n)
        local = np.asarray(jpos[n]) - (np.asarray(jpos[p]) if p else 0)
        nodes[n] = b.node(n, nodes[p] if p else root, translation=local)

    parts, joints, weights, groups, start = [], [], [], {}, 0

    def add(name: str, mesh: Mesh, mat: int, j0: str, j1: str | None = None, w1: np.ndarray | None = None):
        nonlocal start
        v, f = mesh
        jj = np.zeros((len(v), 4), np.uint16)
        ww = np.zeros((len(v), 4), np.float32)
        jj[:, 0], ww[:, 0] = jidx[j0], 1.0
        if j1 is not None:
            jj[:, 1] = jidx[j1]
            ww[:, 1] = w1
            ww[:, 0] = 1 - w1
        parts.append((v, f, mat))
        joints.append(jj)
        weights.append(ww)
        groups[name] = [start, start + len(v)]
        start += len(v)

    add("torso", _shift(ellipsoid([rx, ry, rz], 12, 24), [0, torso_y, 0]), mats["body"], "spine")
    add(
        "head",
        _shift(ellipsoid([head_r] * 3, 10, 20), [0, torso_y + ry + head_r * 0.7, 0]),
        mats["head"],
        "spine",
    )
    for side in ("l", "r"):
        v, f = _shift(capsule(arm_r, arm_l, rings=18), jpos[f"{side}_shoulder"])
        d = shoulder_y - v[:, 1]  # distance down the arm
        blend = arm_r * 1.2
        w_el = np.clip((d - (elbow - blend)) / (2 * blend), 0, 1)
        w_el = w_el * w_el * (3 - 2 * w_el)
        add(f"{side}_arm", (v, f), mats["arms"], f"{side}_shoulder", f"{side}_elbow", w_el)
        add(
            f"{side}_leg",
            _shift(capsule(leg_r, leg_l, rings=10), jpos[f"{side}_hip"]),
            mats["legs"],
            f"{side}_hip",
        )
    ibm = np.stack([np.eye(4) for _ in names])
    ibm[:, :3, 3] = -np.asarray([jpos[n] for n in names])
    skin = b.skin([nodes[n] for n in names], ibm, nodes["pelvis"])
    b.node("body", root, b.mesh("body", parts, joints, weights), skin=skin)

    arm_amp, leg_amp = rng.uniform(35, 50), rng.uniform(25, 40)
    elbow_amp = rng.uniform(30, 55)
    cycles = int(rng.integers(1, 3))
    phase = 2 * np.pi * cycles * u
    tk = u * DURATION
    x = [1, 0, 0]
    for side, s in (("l", 1.0), ("r", -1.0)):
        b.channel(
            nodes[f"{side}_shoulder"],
            "rotation",
            tk,
            quat_axis_angle(x, -s * np.deg2rad(arm_amp) * np.sin(phase)),
        )
        bend = np.deg2rad(10 + elbow_amp * (0.5 - 0.5 * np.cos(phase + (0 if s > 0 else np.pi))))
        b.channel(nodes[f"{side}_elbow"], "rotation", tk, quat_axis_angle(x, -bend))  # forearm forwards (+z)
        b.channel(
            nodes[f"{side}_hip"], "rotation", tk, quat_axis_angle(x, s * np.deg2rad(leg_amp) * np.sin(phase))
        )
    meta = dict(
        parts=dict(vertex_groups=groups, joints=names),
        motion=dict(
            kind="walk", arm_swing_deg=arm_amp, leg_swing_deg=leg_amp, elbow_bend_deg=elbow_amp, cycles=cycles
        ),
        dims=dict(torso_radii=[rx, ry, rz], head_radius=head_r, arm=[arm_r, arm_l], leg=[leg_r, leg_l]),
        colors=colors,
    )
    return meta, 2 * arm_r


BUILDERS: dict[str, Callable] = dict(door=_door, gear=_gear, angle=_angle, box=_box, figure=_figure)
ALIASES = {v: k for k, v in DEMO_NAMES.items()}


def _build(
    category: str, seed: int, num_keyframes: int, root_t, root_s: float, k: float
) -> tuple[GlbBuilder, int, dict, float]:
    rng = np.random.default_rng([seed, CATEGORIES.index(category)])
    b = GlbBuilder()
    root = b.node(category, None, translation=root_t, scale=[root_s] * 3)
    u = np.linspace(0.0, 1.0, num_keyframes)  # normalised keyframe times
    meta, thin = BUILDERS[category](b, root, rng, u, k)
    return b, root, meta, thin


def generate_asset(category: str, seed: int, path: str | Path, num_keyframes: int = 17) -> dict:
    """Write one animated GLB for ``category`` (or its demo name) from ``seed``; returns its metadata.

    The root node centres the motion's bounding box at the origin and scales its max extent to 1.
    """
    from sculpt4d.prep.gltf_anim import load_animated_mesh
    from sculpt4d.utils.io import atomic_path

    category = ALIASES.get(category, category)
    if category not in BUILDERS:
        raise InputError(f"unknown procedural category {category!r}; choose from {list(CATEGORIES)} "
                         f"(or demo names {list(DEMO_NAMES.values())})")  # fmt: skip
    if num_keyframes < 2:
        raise InputError(f"num_keyframes must be >= 2, got {num_keyframes}")
    path = Path(path)
    # pass 1: raw units -> measure the motion's bounding box with our own evaluator; thicken thin parts
    # (factor k) until they are >= MIN_THIN of the max extent
    k = 1.0
    for _ in range(4):
        b, root, meta, thin = _build(category, seed, num_keyframes, [0, 0, 0], 1.0, k)
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "raw.glb"
            b.save(raw, [root])
            frames = load_animated_mesh(raw, num_frames=4 * num_keyframes).vertices.astype(np.float64)
        lo, hi = frames.min((0, 1)), frames.max((0, 1))
        scale = 1.0 / float((hi - lo).max())
        if thin * scale >= MIN_THIN:
            break
        k *= MIN_THIN * 1.03 / (thin * scale)
    centre = (lo + hi) / 2
    # pass 2: same seed -> same geometry, with the normalising root transform
    b, root, meta, thin = _build(category, seed, num_keyframes, -centre * scale, scale, k)
    meta = dict(
        category=category,
        demo_name=DEMO_NAMES[category],
        seed=int(seed),
        num_keyframes=int(num_keyframes),
        duration=DURATION,
        normalisation=dict(centre=centre.tolist(), scale=scale),
        min_thickness=float(thin * scale),
        **meta,
    )
    meta = _jsonable(meta)
    with atomic_path(path) as tmp_path:
        b.save(tmp_path, [root], extras=dict(sculpt4d=meta))
    meta["path"] = str(path)
    return meta


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def generate_collection(
    out_dir: str | Path,
    categories: Sequence[str] = CATEGORIES,
    n_per_category: int = 10,
    seed_offset: int = 0,
    num_keyframes: int = 17,
) -> list[Path]:
    """Write ``n_per_category`` assets per category as ``<out_dir>/<category>_<seed:06d>.glb``.

    Seeds are ``seed_offset + i``; use 0 for training and ``BENCHMARK_SEED_OFFSET`` for the benchmark.
    An ``index.json`` next to them lists every asset's metadata.
    """
    from sculpt4d.utils.io import write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, metas = [], []
    for cat in categories:
        cat = ALIASES.get(cat, cat)
        for i in range(n_per_category):
            seed = seed_offset + i
            p = out_dir / f"{cat}_{seed:06d}.glb"
            metas.append(generate_asset(cat, seed, p, num_keyframes=num_keyframes))
            paths.append(p)
    write_json(out_dir / "index.json", dict(assets=metas))
    return paths
