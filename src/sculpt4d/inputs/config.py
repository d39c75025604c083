"""The input keys of a predict config (``input``, ``remove_background``, ``video_fps``, ``start``, ``end``,
``limits``) -> :class:`~sculpt4d.inputs.frames.Frames`."""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig, ListConfig

from sculpt4d.inputs.frames import Frames, Limits, load_frames


def limits_from_config(node) -> Limits:
    return Limits(**{k: v for k, v in dict(node or {}).items() if v is not None})


def frames_from_config(cfg: DictConfig, callback: Callable[[str, int, int], None] | None = None) -> Frames:
    spec = cfg.input
    spec = [str(s) for s in spec] if isinstance(spec, ListConfig | list | tuple) else str(spec)
    opt = lambda key: None if cfg.get(key) is None else float(cfg[key])
    return load_frames(
        spec,
        int(cfg.sequence_length),
        int(cfg.get("frame_stride", 1)),
        data_dir=cfg.paths.data_dir,
        remove_background=str(cfg.get("remove_background", "auto")),
        video_fps=opt("video_fps"),
        start=opt("start"),
        end=opt("end"),
        limits=limits_from_config(cfg.get("limits")),
        progress=callback,
    )
