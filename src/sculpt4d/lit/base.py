"""Shared LightningModule machinery: optimizer/scheduler from ``_partial_`` nodes, EMA of the trainable
weights, frozen sub-modules kept in eval mode, per-step seeded randomness, a parameter summary, the
validation strip image and ``export_checkpoint`` (``model.safetensors`` + ``config.yaml``).

The networks are built from the Hydra ``model`` node (``net``), so an export can write the resolved node
back next to the weights (what ``predict.py`` / :func:`sculpt4d.models.factory.load_exported` read).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sculpt4d.lit.ema import ParameterEMA, _buffer_name

log = logging.getLogger(__name__)


def to_plain(cfg: Any) -> Any:
    """DictConfig/ListConfig -> plain resolved containers (safe in checkpoints and YAML)."""
    if isinstance(cfg, DictConfig) or OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def _count(params: Iterator[nn.Parameter]) -> int:
    return sum(p.numel() for p in params)


def _fmt(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


class BaseLitModule(LightningModule):
    """Subclasses build their networks, mark frozen ones (``self.frozen``), then call :meth:`_finish_init`."""

    stage: str = "base"
    components: tuple[
        str, ...
    ] = ()  # attribute names exported as ``<export name>.*`` (see export_components)

    def __init__(
        self,
        net: DictConfig | dict,
        optimizer: DictConfig | dict | None = None,
        scheduler: DictConfig | dict | None = None,
        ema_decay: float | None = 0.999,
        ema_warmup: bool = True,
        seed: int = 0,
        save_frozen: bool = True,
        val: DictConfig | dict | None = None,
    ) -> None:
        super().__init__()
        self.net_cfg: dict[str, Any] = to_plain(net)
        self.optimizer_cfg = to_plain(optimizer)
        self.scheduler_cfg = to_plain(scheduler)
        self.ema_decay = ema_decay
        self.ema_warmup = ema_warmup
        self.seed = int(seed)
        self.save_frozen = save_frozen
        self.val_cfg: dict[str, Any] = dict(to_plain(val) or {})  # the stage's `val` node (conf/stage/*.yaml)
        self.frozen: list[nn.Module] = []
        self.ema: ParameterEMA | None = None
        self._ema_swapped = False
        self._val_stack: contextlib.ExitStack | None = None
        self.generator: torch.Generator | None = None

    def _finish_init(self) -> None:
        """Freeze ``self.frozen``, create the EMA over what is left trainable, save hyperparameters."""
        for m in self.frozen:
            m.requires_grad_(False)
            m.eval()
        if self.ema_decay:
            self.ema = ParameterEMA(self.trainable_named_parameters(), self.ema_decay, self.ema_warmup)
        self.save_hyperparameters(
            {
                "stage": self.stage,
                "net": self.net_cfg,
                "optimizer": self.optimizer_cfg,
                "scheduler": self.scheduler_cfg,
                "ema_decay": self.ema_decay,
                "val": self.val_cfg,
                **self.extra_hparams(),
            }
        )

    def extra_hparams(self) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------------ parameters
    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def parameter_summary(self) -> str:
        """One line: trainable vs frozen parameter counts (per top-level component)."""
        total = _count(self.parameters())
        train = _count(p for _, p in self.trainable_named_parameters())
        parts = []
        for name, child in self.named_children():
            if name == "ema":
                continue
            n = _count(child.parameters())
            if n:
                t = _count(p for p in child.parameters() if p.requires_grad)
                parts.append(f"{name} {_fmt(t)}/{_fmt(n)}")
        ema = "" if self.ema is None else f"; EMA({self.ema.decay}) over the trainable weights"
        return (
            f"[{self.stage}] parameters: {_fmt(train)} trainable, {_fmt(total - train)} frozen "
            f"({100.0 * train / max(total, 1):.2f}% trainable; {', '.join(parts)}){ema}"
        )

    def train(self, mode: bool = True) -> BaseLitModule:
        super().train(mode)
        for m in self.frozen:  # frozen parts stay in eval mode (no dropout / running stats)
            m.eval()
        return self

    def on_fit_start(self) -> None:
        if self.global_rank == 0:
            log.info(self.parameter_summary())

    # ------------------------------------------------------------------ randomness
    def step_generator(self, step: int, salt: int = 0) -> torch.Generator:
        """A generator seeded by (seed, step, rank, salt): no RNG state to checkpoint, exact on resume."""
        seed = int(
            np.random.SeedSequence([self.seed, int(step), int(self.global_rank), salt]).generate_state(1)[0]
        )
        if self.generator is None or self.generator.device != self.device:
            self.generator = torch.Generator(device=self.device)
        return self.generator.manual_seed(seed)

    # ------------------------------------------------------------------ optimisation
    def param_groups(self, params: list[nn.Parameter]) -> list[dict[str, Any]]:
        """Optimizer parameter groups of the trainable ``params`` (one group at the configured rate)."""
        return [{"params": params}]

    def configure_optimizers(self) -> Any:
        from hydra.utils import instantiate

        model = self.trainer.model if self._trainer is not None else self
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise RuntimeError(f"[{self.stage}] nothing to train: every parameter is frozen")
        if not self.optimizer_cfg:
            raise ValueError(
                f"[{self.stage}] no optimizer config (the conf/optimizer group sets lit.optimizer)"
            )
        optimizer = instantiate(self.optimizer_cfg)(params=self.param_groups(params))
        if not self.scheduler_cfg:
            return optimizer
        scheduler = instantiate(self.scheduler_cfg)(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    # ------------------------------------------------------------------ EMA
    def _param_dict(self) -> dict[str, nn.Parameter]:
        return dict(self.named_parameters())

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:  # once per optimizer step (after gradient accumulation)
            self.ema.update(self._param_dict())

    @contextlib.contextmanager
    def ema_scope(self, enabled: bool = True) -> Iterator[None]:
        """Use the EMA weights inside the block (validation, sampling, export)."""
        if self.ema is None or not enabled or self._ema_swapped:
            yield
            return
        with self.ema.swap(self._param_dict()):
            self._ema_swapped = True
            try:
                yield
            finally:
                self._ema_swapped = False

    def on_validation_epoch_start(self) -> None:
        self._val_stack = contextlib.ExitStack()
        self._val_stack.enter_context(self.ema_scope())

    def on_validation_epoch_end(self) -> None:
        if self._val_stack is not None:
            self._val_stack.close()
            self._val_stack = None

    # ------------------------------------------------------------------ checkpoints
    def frozen_state_keys(self) -> list[str]:
        keys = []
        for name, mod in self.named_modules():
            if name and any(mod is f for f in self.frozen):
                keys.extend(f"{name}.{k}" for k in mod.state_dict())
        return keys

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        sd = checkpoint.get("state_dict")
        if sd is None:
            return
        if self._ema_swapped and self.ema is not None:  # saved mid-validation: store training weights as such
            for name in self.ema.names:
                bkey = f"ema.{_buffer_name(name)}"
                sd[name], sd[bkey] = sd[bkey].to(sd[name].dtype), sd[name].float()
        if not self.save_frozen:  # frozen weights come from init_from; keep checkpoints small
            for k in self.frozen_state_keys():
                sd.pop(k, None)
        checkpoint["sculpt4d"] = {"stage": self.stage, "frozen_saved": bool(self.save_frozen)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get("sculpt4d", {})
        if meta.get("stage", self.stage) != self.stage:
            from sculpt4d.errors import CheckpointError

            raise CheckpointError(
                f"checkpoint is from stage '{meta.get('stage')}' but this run is stage "
                f"'{self.stage}'; pass init_from=<export> to start a new stage instead"
            )
        if not meta.get("frozen_saved", True):
            self.strict_loading = False
            own = self.state_dict()
            sd = checkpoint["state_dict"]
            frozen = set(self.frozen_state_keys())
            missing = [k for k in own if k not in sd and k not in frozen]
            if missing:
                from sculpt4d.errors import CheckpointError

                raise CheckpointError(f"checkpoint lacks trainable/EMA keys {missing[:5]}")

    # ------------------------------------------------------------------ export
    def export_components(self) -> dict[str, nn.Module]:
        """``{export prefix: module}`` written by :meth:`export_checkpoint` (vae / model / conditioner)."""
        raise NotImplementedError

    def export_config(self) -> dict[str, Any]:
        """The resolved model node (+ stage, attention, sequence length) written as ``config.yaml``."""
        cfg = {"stage": self.stage, "model": dict(self.net_cfg)}
        vae = getattr(self, "vae", None)
        if vae is not None:
            stats = {"scale_factor": float(vae.scale_factor)}
            if getattr(vae, "latent_mean", None) is not None:
                stats.update(latent_mean=list(vae.latent_mean), latent_std=list(vae.latent_std))
            cfg["model"]["vae"] = {**cfg["model"]["vae"], **stats}
        return cfg

    @torch.no_grad()
    def export_state_dict(self, use_ema: bool = True) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        with self.ema_scope(enabled=use_ema):
            for prefix, module in self.export_components().items():
                for k, v in module.state_dict().items():
                    out[f"{prefix}.{k}"] = v.detach().to("cpu").clone().contiguous()
        return out

    def export_checkpoint(
        self, directory: str | Path, use_ema: bool = True, extra: dict[str, Any] | None = None
    ) -> Path:
        """Write ``<directory>/model.safetensors`` (flat ``vae.* / model.* / conditioner.*``) + ``config.yaml``.

        ``config.yaml`` holds the model node, the attention and the ``inference:`` defaults (num_steps,
        guidance_scale, octree_resolution, sequence_length, frame_stride, preprocess, attention) that
        predict.py, the notebook and ``Sculpt4DPipeline.from_pretrained`` read (:mod:`sculpt4d.inference`).

        The weights are the EMA weights when there is an EMA (``use_ema``). Written atomically.
        """
        from sculpt4d.hub import save_safetensors
        from sculpt4d.inference import inference_node
        from sculpt4d.utils.io import atomic_dir

        directory = Path(directory)
        sd = self.export_state_dict(use_ema)
        cfg = {**self.export_config(), **(extra or {})}
        cfg.setdefault("inference", inference_node(cfg["model"], cfg.get("attention")))
        cfg["export"] = {"ema": bool(use_ema and self.ema is not None), "global_step": int(self.global_step)}
        with atomic_dir(directory) as tmp:
            save_safetensors(sd, tmp / "model.safetensors", metadata={"stage": self.stage})
            (tmp / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
        log.info("exported %s weights (%d tensors) to %s", self.stage, len(sd), directory)
        return directory

    # ------------------------------------------------------------------ validation images
    @torch.no_grad()
    def preview_meshes(self, vae: nn.Module, z: torch.Tensor) -> list:
        """Flat-grid marching-cubes meshes of latents ``z`` ``[k, N, C]`` at ``val.mesh_resolution`` (warnings
        of empty grids silenced: early in training a latent may decode to nothing)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return vae.latents_to_mesh(
                z,
                octree_resolution=int(self.val_cfg["mesh_resolution"]),
                hierarchical=False,
                num_chunks=20000,
            )

    def log_strip(self, key: str, meshes: list, images: list | None = None) -> Path | None:
        """Render a mesh strip (+ inputs) to ``<log dir>/val_strips/`` and push it to image-capable loggers."""
        if self.global_rank != 0 or not self.val_cfg.get("strip", True):
            return None
        from sculpt4d.lit.visualize import save_strip

        root = Path(self.trainer.log_dir or self.trainer.default_root_dir or ".")
        path = root / "val_strips" / f"{key.replace('/', '_')}_step{self.global_step:08d}.png"
        try:
            save_strip(path, meshes, images, size=int(self.val_cfg.get("strip_size", 128)))
        except Exception as e:  # noqa: BLE001 - a rendering failure must not stop training
            log.warning("could not render the validation strip: %s", e)
            return None
        for logger in self.loggers:
            try:
                from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

                if isinstance(logger, WandbLogger):
                    logger.log_image(key=key, images=[str(path)], step=self.global_step)
                elif isinstance(logger, TensorBoardLogger):
                    from PIL import Image

                    logger.experiment.add_image(
                        key, np.asarray(Image.open(path).convert("RGB")), self.global_step, dataformats="HWC"
                    )
            except Exception as e:  # noqa: BLE001
                log.warning("could not log the strip to %s: %s", type(logger).__name__, e)
        return path
