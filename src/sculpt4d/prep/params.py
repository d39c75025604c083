"""The settings every prep stage's output depends on, built from ``conf/prep.yaml``."""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

# How exact-label sampling drops points buried in another part (prep.sampling._on_outer_surface): "offset
# winding" takes the winding number just off the surface; the first test, on the surface itself, starved thin
# moving parts of samples. Part of the sample stage's marker, so existing data is resampled by `make data-tiny`.
OUTER_SURFACE_TEST = "offset_winding"


@dataclass
class PrepParams:
    """Everything a stage's output depends on (a stage re-runs when its part changes).

    No defaults here: they live in ``conf/prep.yaml`` only; build with :meth:`from_config`.
    """

    num_frames: int
    clip: str | int | None
    backend: str  # animation evaluation: numpy | blender
    num_views: int
    resolution: int
    elevation: tuple[float, float]
    azimuth: tuple[float, float]
    radius: float
    fov: float
    shading: str  # auto | geometry | color
    render_backend: str  # auto | pyrender | embree
    input_mode: str  # render | hybrid | export
    labels: str  # watertight (a grid_res remesh; any mesh) | exact (closed parts, fixed topology)
    grid_res: int
    narrow_band: bool
    pc_random: int
    pc_sharp: int
    sharp_angle: float
    volume_size: int
    seed: int
    allow_static: bool  # an asset without animation repeats its rest pose instead of failing
    extra_meta: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: DictConfig | None = None, **overrides) -> PrepParams:
        """From the composed prep config (default: ``conf/prep.yaml``), then ``overrides`` by field name."""
        if cfg is None:
            from sculpt4d.config import CONF_DIR

            cfg = OmegaConf.load(Path(CONF_DIR) / "prep.yaml")
        pc = cfg.pc_size
        if isinstance(pc, int):  # a single number = both kinds
            pc = {"random_surface": pc, "sharp_surface": pc}
        cam = cfg.camera
        p = cls(
            num_frames=int(cfg.num_frames),
            clip=cfg.clip,
            backend=str(cfg.backend),
            num_views=int(cfg.num_views),
            resolution=int(cfg.resolution),
            elevation=tuple(float(x) for x in cam.elevation),
            azimuth=tuple(float(x) for x in cam.azimuth),
            radius=float(cam.radius),
            fov=float(cam.fov),
            shading=str(cfg.render.shading),
            render_backend=str(cfg.render.backend),
            input_mode=str(cfg.input_mode),
            labels=str(cfg.labels),
            grid_res=int(cfg.grid_res),
            narrow_band=bool(cfg.narrow_band),
            pc_random=int(pc["random_surface"]),
            pc_sharp=int(pc["sharp_surface"]),
            sharp_angle=float(cfg.sharp_angle),
            volume_size=int(cfg.volume_size),
            seed=int(cfg.seed),
            allow_static=bool(cfg.allow_static),
        )
        return replace(p, **overrides)

    def for_stage(self, stage: str) -> dict:
        keys = {
            "frames": ["num_frames", "clip", "backend"],
            "render": ["num_views", "resolution", "elevation", "azimuth", "radius", "fov", "shading", "seed"],
            "sample": ["input_mode", "labels", "grid_res", "narrow_band", "pc_random", "pc_sharp", "sharp_angle",
                       "volume_size", "seed"],
        }[stage]  # fmt: skip
        if stage == "frames" and self.allow_static:  # only when set, so earlier markers stay valid
            keys = [*keys, "allow_static"]
        d = asdict(self)
        out = {k: d[k] for k in keys}
        if stage == "sample" and self.labels == "exact":  # so samples of the earlier test are redone
            out["outer_surface_test"] = OUTER_SURFACE_TEST
        return json.loads(json.dumps(out))  # tuples -> lists, comparable with JSON


def object_seed(name: str, seed: int) -> int:
    """Deterministic per-object seed (independent of process, order and sharding)."""
    return (zlib.crc32(name.encode()) + 1_000_003 * seed) % (2**31)
