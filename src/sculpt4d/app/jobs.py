"""One generation of the web app: the settings of a request -> a predict config -> ``run_predict``.

Gradio-free, so it is tested without a browser. The app runs exactly the code ``predict.py`` runs
(:func:`sculpt4d.predict.run_predict`) with a pipeline loaded once and a progress callback that also
carries cancellation.
"""

from __future__ import annotations

import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from sculpt4d.errors import InputError, Sculpt4DError


def attention_variants() -> list[str]:
    """``trained`` (the checkpoint's own attention) and every mask variant the same weights can run under."""
    from sculpt4d.models.attention import VARIANTS

    return ["trained", *VARIANTS]


class Cancelled(Sculpt4DError):
    """The user pressed Cancel."""


@dataclass
class Settings:
    """What the app's controls set (the predict keys of the same names; ``None`` = the checkpoint's)."""

    num_steps: int | None = None
    guidance_scale: float | None = None
    noise_share_alpha: float = 1.0
    noise_scale: float | None = None
    sampling_shift: float | None = None
    guidance_until: float | None = None
    num_samples: int | None = None
    seed: int = 0
    sequence_length: int | None = None
    frame_stride: int | None = None
    attention: str = "trained"
    octree_resolution: int | None = None
    remove_background: str = "auto"


@dataclass
class Result:
    folder: Path
    glb: Path
    strip_mp4: Path | None
    objs_zip: Path
    prediction_json: Path
    seconds: float


def zip_objs(folder: Path) -> Path:
    """``meshes.zip`` with every ``frame_XXXX.obj`` of ``folder``."""
    out = folder / "meshes.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.glob("frame_*.obj")):
            zf.write(p, p.name)
    return out


class Generator:
    """Holds the loaded pipeline; :meth:`run` is one generation (the app runs one at a time)."""

    def __init__(self, cfg: DictConfig, pipeline=None) -> None:
        self.cfg = cfg
        self._pipelines: dict[str, Any] = {}
        if pipeline is not None:
            self._pipelines["trained"] = pipeline
        self._lock = threading.Lock()

    def pipeline(self, variant: str = "trained"):
        from sculpt4d.predict import build_pipeline

        if variant not in attention_variants():
            raise InputError(f"attention must be one of {', '.join(attention_variants())} (got '{variant}')")
        if "trained" not in self._pipelines:
            self._pipelines["trained"] = build_pipeline(self.cfg)
        if variant not in self._pipelines:
            self._pipelines[variant] = self._pipelines["trained"].with_attention(variant)
        return self._pipelines[variant]

    def job_config(self, inputs: str | Sequence[str], settings: Settings, output_dir: Path) -> DictConfig:
        """The predict config of one request: the app's config with the request's input and controls."""
        cfg = OmegaConf.create(OmegaConf.to_container(self.cfg, resolve=False))
        with open_dict(cfg):
            cfg.input = inputs if isinstance(inputs, str) else list(inputs)
            cfg.output_dir = str(output_dir)
            cfg.paths.output_dir = str(output_dir)  # no Hydra run dir per request
            sampling = (
                "num_steps", "guidance_scale", "noise_share_alpha", "noise_scale", "sampling_shift", "guidance_until",
                "num_samples",
            )  # fmt: skip
            for key in (*sampling, "seed"):
                cfg[key] = getattr(settings, key)
            cfg.sequence_length = settings.sequence_length
            cfg.frame_stride = settings.frame_stride
            cfg.octree_resolution = settings.octree_resolution
            cfg.remove_background = settings.remove_background
            cfg.progress = False
            cfg.limits = OmegaConf.merge(cfg.limits, cfg.app.limits)
            cfg.pop("hydra", None)
        return cfg

    def run(
        self,
        inputs: str | Sequence[str],
        settings: Settings,
        output_dir: Path,
        progress: Callable[[str, int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Result:
        """Generate into ``output_dir`` (written atomically; nothing is left on an error or a cancel)."""
        from sculpt4d.predict import run_predict

        def callback(stage: str, done: int, total: int) -> None:
            if cancel is not None and cancel.is_set():
                raise Cancelled("generation cancelled")
            if progress is not None:
                progress(stage, done, total)

        cfg = self.job_config(inputs, settings, output_dir)
        with self._lock:
            pipeline = self.pipeline(settings.attention)
            t0 = time.perf_counter()
            folder = run_predict(cfg, pipeline=pipeline, callback=callback)
            seconds = time.perf_counter() - t0
        mp4 = folder / "strip.mp4"
        return Result(
            folder=folder,
            glb=folder / "sequence.glb",
            strip_mp4=mp4 if mp4.is_file() else None,
            objs_zip=zip_objs(folder),
            prediction_json=folder / "prediction.json",
            seconds=seconds,
        )
