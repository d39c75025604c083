"""Flow-matching stages: ``DiT3DModule`` (single frames) and ``Sculpt4DModule`` (sequences, temporal adapter).

Both encode the (frozen) VAE's posterior samples (``sample_posterior``) or means in the DiT's standardised
latent space (``vae.to_dit``) as data x1, condition on per-frame
image tokens (zeroed with probability ``cond_drop_prob`` for CFG) and regress the velocity ``x1 − x0``
(design.md §H4–H5). Validation: the flow loss at fixed timesteps, then for a few items an Euler + CFG sample
(EMA weights), decoded and scored by occupancy IoU at the ground-truth query points, and a strip image.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from sculpt4d.data.latent_cache import LatentCache, load_or_build_latent_cache
from sculpt4d.diffusion import EulerSampler, FlowMatching, motion_loss, shared_noise
from sculpt4d.lit.base import BaseLitModule, to_plain
from sculpt4d.lit.vae_module import occupancy_iou
from sculpt4d.models.attention import AttentionConfig
from sculpt4d.models.factory import COMPONENTS, build_components
from sculpt4d.models.vae.decoder import GeometryDecoder

log = logging.getLogger(__name__)

# refused when fitting starts on a datamodule without them, and by any batch that lacks them
READOUT_NEEDS_VOLUME = "readout_weight > 0 needs volume queries: set data.load_volume: true"


class _FlowModule(BaseLitModule):
    """Shared parts: VAE (frozen), conditioner, velocity model, CFG dropout, validation sampling."""

    def __init__(
        self,
        net: DictConfig | dict,
        init_from: str | None = None,
        root_dir: str | None = None,
        vae_from: str | None = None,
        scale_factor: float | None = None,
        cond_drop_prob: float = 0.1,
        timestep_sampling: str = "uniform",
        timestep_shift: float = 1.0,
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        sample_posterior: bool = True,
        cache_latents: bool = False,
        latent_cache_draws: int = 2,
        latent_cache_dir: str | None = None,
        attention: DictConfig | dict | None = None,
        four_d: bool = False,
        require: tuple[str, ...] = ("vae",),
        **kwargs: Any,
    ) -> None:
        """``require``: the parts ``init_from`` must provide (others are loaded when present).

        ``cache_latents``: encode the frozen VAE's posterior means of every training and validation frame
        once, ``latent_cache_draws`` point picks each, when fitting starts (saved under ``latent_cache_dir``
        and reused while the VAE and data are unchanged; :mod:`sculpt4d.data.latent_cache`), and look each
        step's latents up instead of encoding its surfaces. Means only: needs ``sample_posterior: false``.

        Training timesteps: ``timestep_sampling`` (``uniform`` | ``logit_normal`` with ``logit_mean`` /
        ``logit_std``), then ``timestep_shift`` (> 1 trains more on the noisy end, where the image decides the
        shape; see :func:`~sculpt4d.diffusion.flow.sample_timesteps`).

        ``vae_from``: an export whose VAE (weights and latent statistics) replaces ``init_from``'s, e.g. a VAE
        trained on after the DiT: the DiT and conditioner then continue from ``init_from`` on the new latents."""
        super().__init__(net, **kwargs)
        self.init_from = init_from
        self.sample_posterior = bool(sample_posterior)
        if cache_latents and self.sample_posterior:
            raise ValueError(
                "cache_latents stores posterior means: it needs sample_posterior: false (posterior samples "
                "are drawn anew at every step)"
            )
        if cache_latents and not latent_cache_dir:
            raise ValueError("cache_latents needs latent_cache_dir (where the encoded latents are kept)")
        if latent_cache_draws < 1:
            raise ValueError(f"latent_cache_draws must be >= 1, got {latent_cache_draws}")
        self.cache_latents = bool(cache_latents)
        self.latent_cache_draws = int(latent_cache_draws)
        self.latent_cache_dir = latent_cache_dir
        self.latent_cache: LatentCache | None = None  # filled by on_fit_start
        self.cond_drop_prob = float(cond_drop_prob)
        if timestep_shift <= 0:
            raise ValueError(f"timestep_shift must be > 0, got {timestep_shift}")
        self.flow = FlowMatching(
            timestep_sampling=timestep_sampling,  # type: ignore[arg-type]
            logit_mean=float(logit_mean),
            logit_std=float(logit_std),
            shift=float(timestep_shift),
        )
        self.attention_cfg = AttentionConfig.from_dict(to_plain(attention)).to_dict()  # options filled in
        comps = build_components(
            self.net_cfg, self.attention_cfg, four_d=four_d, order=("vae", "conditioner", "model")
        )
        self.vae, self.conditioner, self.model = comps.vae, comps.conditioner, comps.model
        self.vae_from = vae_from
        stats_cfg: dict = {}  # the export whose latent statistics the VAE takes: vae_from's, else init_from's
        from sculpt4d.checkpoints.load import load_components, load_part, read_parts
        from sculpt4d.lit.init import adopt_latent_stats

        if init_from:
            parts, stats_cfg = read_parts(init_from, root_dir)
            if vae_from:  # its VAE is replaced below
                parts = {k: v for k, v in parts.items() if k != "vae"}
                require = tuple(r for r in require if r != "vae")
            load_components(comps, parts, f"init_from {init_from}", require=require)
        if vae_from:
            vae_parts, stats_cfg = read_parts(vae_from, root_dir)
            load_part(self.vae, vae_parts, "vae", f"vae_from {vae_from}")
        if stats_cfg:
            skip = ("scale_factor",) if scale_factor is not None else ()  # an explicit scale_factor wins
            adopt_latent_stats(self.vae, self.net_cfg["vae"], stats_cfg, skip=skip)
        if scale_factor is not None:
            self.vae.scale_factor = float(scale_factor)
        self.net_cfg["vae"]["scale_factor"] = float(self.vae.scale_factor)

    @property
    def scale_factor(self) -> float:
        return float(self.vae.scale_factor)

    def extra_hparams(self) -> dict[str, Any]:
        return {
            "init_from": self.init_from,
            "vae_from": self.vae_from,
            "cond_drop_prob": self.cond_drop_prob,
            "timestep_sampling": self.flow.timestep_sampling,
            "timestep_shift": self.flow.shift,
            "scale_factor": self.scale_factor,
            "sample_posterior": self.sample_posterior,
            "cache_latents": self.cache_latents,
            "latent_cache_draws": self.latent_cache_draws,
        }

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.cache_latents and self.latent_cache is None:
            self.latent_cache = self._load_latent_cache()

    def _load_latent_cache(self) -> LatentCache:
        """The training and validation objects' cached latents (rank 0 encodes a missing cache, the rest wait)."""
        dm = self.trainer.datamodule
        train_set, val_set = getattr(dm, "train_set", None), getattr(dm, "val_set", None)
        if train_set is None:
            raise ValueError("cache_latents needs the Objects4DDataModule (its train_set/val_set objects)")
        records = list(train_set.records) + (list(val_set.records) if val_set is not None else [])

        def load() -> LatentCache:
            assert self.latent_cache_dir is not None
            return load_or_build_latent_cache(
                self.vae, train_set, records, self.latent_cache_draws, self.latent_cache_dir
            )

        if self.trainer.world_size == 1:
            return load()
        cache = load() if self.global_rank == 0 else None
        self.trainer.strategy.barrier("latent_cache")
        return cache if cache is not None else load()

    def cached_latents(self, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor | None:
        """``[B, T, N, C]`` posterior means of the batch's frames from the latent cache (None without one)."""
        if self.latent_cache is None:
            return None
        z = self.latent_cache.lookup(batch["object"], batch["frame_index"], generator)
        return z.to(self.device)

    def export_components(self) -> dict[str, nn.Module]:
        return {"vae": self.vae, "model": self.model, "conditioner": self.conditioner}

    # ------------------------------------------------------------------ pieces
    def drop_condition(self, cond: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Zero the whole condition of each item with probability ``cond_drop_prob`` (CFG's null context)."""
        if self.cond_drop_prob <= 0:
            return cond
        keep = torch.rand(cond.shape[0], generator=generator, device=generator.device) >= self.cond_drop_prob
        keep = keep.to(cond.device).view(-1, *([1] * (cond.dim() - 1)))
        return cond * keep.to(cond.dtype)

    def model_fn(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.model(x, t, cond)

    def encode_latents(self, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def encode_condition(self, batch: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def noise(self, x1: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(x1.shape, generator=generator, device=generator.device).to(x1)

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        gen = self.step_generator(self.global_step)
        with torch.no_grad():
            x1 = self.encode_latents(batch, gen)
        full_cond = self.encode_condition(batch)
        cond = self.drop_condition(full_cond, gen)
        t = self.flow.sample_timesteps(x1.shape[0], gen, device=gen.device).to(x1.device)
        terms = self.loss_terms(x1, cond, t, self.noise(x1, gen))
        terms.update(self.auxiliary_terms(batch, full_cond, gen))
        self.log("train/loss", terms["loss"], prog_bar=True, batch_size=x1.shape[0])
        self.log_dict({f"train/{k}": v for k, v in terms.items() if k != "loss"}, batch_size=x1.shape[0])
        return self.objective(terms)

    def loss_terms(
        self, x1: torch.Tensor, cond: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The logged loss terms at (t, noise); ``loss`` is the flow-matching MSE."""
        return {"loss": self.flow.loss(self.model_fn, x1, cond, t=t, noise=noise)}

    def auxiliary_terms(
        self, batch: dict[str, Any], cond: torch.Tensor, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Training terms beside the flow loss, from the (undropped) condition; none here."""
        return {}

    def objective(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """What the optimiser minimises, from :meth:`loss_terms` and :meth:`auxiliary_terms`."""
        return terms["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        gen = self.step_generator(batch_idx, salt=1)  # the same noise/timesteps at every validation
        x1 = self.encode_latents(batch, gen)
        cond = self.encode_condition(batch)
        b = x1.shape[0]
        t = (torch.arange(b, device=x1.device, dtype=torch.float32) + 0.5) / b  # stratified, fixed
        noise = self.noise(x1, gen)
        terms = self.loss_terms(x1, cond, t, noise)
        null_loss = self.flow.loss(self.model_fn, x1, torch.zeros_like(cond), t=t, noise=noise)
        # how much the image is worth: the loss with CFG's null context minus the loss with the image
        terms["cond_gap"] = null_loss - terms["loss"]
        terms.update(self.auxiliary_terms(batch, cond, gen))
        self.log_dict({f"val/{k}": v for k, v in terms.items()}, batch_size=b, sync_dist=True)
        n = int(self.val_cfg.get("num_samples", 0))
        if n > 0 and batch_idx == 0 and "vol_points" in batch:
            self._validate_samples(batch, cond[:n], gen)

    @torch.no_grad()
    def sample(
        self, cond: torch.Tensor, generator: torch.Generator, num_steps: int, guidance_scale: float
    ) -> torch.Tensor:
        """Euler + CFG from noise shaped like the latents of ``cond`` (DiT scale)."""
        sampler = EulerSampler(num_steps=num_steps)
        shape = self.latent_shape(cond)
        noise = self.sample_noise(shape, generator).to(cond)
        return sampler.sample(self.model_fn, noise, cond, None, guidance_scale=guidance_scale, progress=False)

    def latent_shape(self, cond: torch.Tensor) -> tuple[int, ...]:
        raise NotImplementedError

    def sample_noise(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=generator.device)

    @torch.no_grad()
    def _validate_samples(self, batch: dict[str, Any], cond: torch.Tensor, gen: torch.Generator) -> None:
        n = cond.shape[0]
        z = self.sample(cond, gen, int(self.val_cfg["num_steps"]), float(self.val_cfg["guidance_scale"]))
        z = self.vae.from_dit(z.reshape(-1, *z.shape[-2:]))  # [n*T, N, C]
        pts = batch["vol_points"][:n].flatten(0, 1)  # [n*T, M, 3]
        occ = batch["vol_occ"][:n].flatten(0, 1)
        logits = self.vae.query(self.vae.decode(z), pts).float()
        iou = occupancy_iou(logits, occ)  # [n*T]
        self.log("val/sample_iou", iou.mean(), batch_size=n, sync_dist=True)
        if self.global_rank == 0 and self.val_cfg.get("strip", True):
            from sculpt4d.lit.visualize import tensor_to_pil

            k = min(z.shape[0], 8)  # the first sample's frames (4D) or the first samples (3D)
            meshes = self.preview_meshes(self.vae, z[:k])
            images = None
            if "images" in batch:
                images = [tensor_to_pil(im) for im in batch["images"][:n].flatten(0, 1)[:k]]
            self.log_strip("val/samples", meshes, images)


class DiT3DModule(_FlowModule):
    """Single-frame flow matching: frozen VAE, trainable 3D DiT (+ the conditioner if ``train_conditioner``).

    The paper freezes DINOv2; the tiny model has no pretrained image encoder, so its conditioner is trained
    here jointly (``train_conditioner: true``) and frozen for the 4D stage.

    ``readout_weight`` > 0 adds a dense signal for a jointly trained conditioner: a small occupancy
    decoder (the VAE decoder's design, reading the image tokens instead of shape latents) predicts each
    frame's occupancy at ``readout_points`` of its volume queries, and ``readout_weight`` × its BCE joins
    the flow loss. The read-out trains with the stage and is not exported: it only shapes the tokens.
    """

    stage = "dit3d"

    def __init__(
        self,
        net: DictConfig | dict,
        train_conditioner: bool = False,
        readout_weight: float = 0.0,
        readout_points: int = 512,
        **kwargs: Any,
    ) -> None:
        required = ("vae",) if train_conditioner else ("vae", "conditioner")
        super().__init__(net, four_d=False, require=required, **kwargs)
        if readout_weight < 0 or readout_points < 1:
            raise ValueError(
                f"readout_weight must be >= 0 and readout_points >= 1, got {readout_weight}, {readout_points}"
            )
        if readout_weight > 0 and not train_conditioner:
            raise ValueError("readout_weight > 0 trains the conditioner: set train_conditioner: true")
        self.train_conditioner = bool(train_conditioner)
        self.readout_weight = float(readout_weight)
        self.readout_points = int(readout_points)
        self.readout = self._build_readout() if self.readout_weight > 0 else None
        self.conditioner.set_trainable(self.train_conditioner)
        self.frozen = [self.vae] + ([] if self.train_conditioner else [self.conditioner])
        self._finish_init()

    def on_fit_start(self) -> None:
        dm = self.trainer.datamodule
        if (
            self.readout is not None
            and dm is not None
            and not getattr(dm, "hparams", {}).get("load_volume", True)
        ):
            # before the latent cache is built and any step runs
            raise ValueError(READOUT_NEEDS_VOLUME)
        super().on_fit_start()

    def _build_readout(self) -> GeometryDecoder:
        """Occupancy logits at xyz from the image tokens ``[B, L, D]``: width D, and the VAE's own (parameter-free)
        Fourier embedder, shared as its encoder and decoder share it."""
        cond_cfg = self.net_cfg["conditioner"]["dinov2"]
        return GeometryDecoder(
            self.vae.fourier_embedder,
            int(cond_cfg["hidden_size"]),
            heads=int(cond_cfg["num_attention_heads"]),
            mlp_expand_ratio=2,
        )

    def extra_hparams(self) -> dict[str, Any]:
        return {
            **super().extra_hparams(),
            "train_conditioner": self.train_conditioner,
            "readout_weight": self.readout_weight,
            "readout_points": self.readout_points,
        }

    def auxiliary_terms(
        self, batch: dict[str, Any], cond: torch.Tensor, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """``readout_bce`` / ``readout_iou``: the read-out's occupancy from the image tokens (if enabled)."""
        if self.readout is None:
            return {}
        if "vol_points" not in batch:
            raise ValueError(READOUT_NEEDS_VOLUME)
        points = batch["vol_points"].flatten(0, 1)  # [B*T, M, 3]
        occ = batch["vol_occ"].flatten(0, 1)  # [B*T, M]
        m = min(self.readout_points, points.shape[1])
        order = torch.rand(points.shape[:2], generator=generator, device=generator.device).argsort(dim=1)
        pick = order[:, :m].to(points.device)  # [B*T, m]: m of each frame's queries, without replacement
        points = points.gather(1, pick[..., None].expand(-1, -1, 3))  # [B*T, m, 3]
        occ = occ.gather(1, pick)  # [B*T, m]
        logits = self.readout(points, cond).squeeze(-1).float()  # [B*T, m]
        bce = F.binary_cross_entropy_with_logits(logits, occ.float())
        return {"readout_bce": bce, "readout_iou": occupancy_iou(logits.detach(), occ).mean()}

    def objective(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Flow loss + ``readout_weight`` × the read-out's BCE."""
        if self.readout is None:
            return terms["loss"]
        return terms["loss"] + self.readout_weight * terms["readout_bce"]

    def encode_latents(self, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        cached = self.cached_latents(batch, generator)  # [B, T, N, C] or None
        if cached is not None:
            return self.vae.to_dit(cached.flatten(0, 1))  # [B*T, N, C]
        surface = batch["surface"].flatten(0, 1)  # [B*T, P, 7] (T = 1 for this stage)
        z = self.vae.encode(surface, sample_posterior=self.sample_posterior, generator=generator)
        return self.vae.to_dit(z)  # [B*T, N, C]

    def encode_condition(self, batch: dict[str, Any]) -> torch.Tensor:
        images = batch["images"].flatten(0, 1)  # [B*T, 3, S, S]
        return self.conditioner(images)  # [B*T, L, D]

    def latent_shape(self, cond: torch.Tensor) -> tuple[int, ...]:
        return (cond.shape[0], self.vae.num_latents, self.vae.embed_dim)


class Sculpt4DModule(_FlowModule):
    """4D stage: frozen VAE + frozen 3D backbone + frozen conditioner; only ``model.adapter.*`` trains.

    Latents of a sequence come from ``vae.encode_sequence`` (one query-point pick per sequence, posterior
    noise shared across frames with ``noise_share_alpha``); the flow noise x0 is shared the same way
    (``flow_noise_share_alpha``, as at inference), or with a sharing drawn per sequence from U[0, 1]
    (``"uniform"``) so that the model serves any inference alpha; one timestep per sequence.
    ``train_backbone`` also trains the 3D backbone, at ``backbone_lr_scale`` × the adapter's learning rate
    (the paper freezes its 3 B-parameter backbone; a small one trained from scratch can adapt with it);
    ``train_conditioner`` the image encoder, at the same rate (the paper's DINOv2 stays frozen; the tiny
    one was trained with the 3D stage, on single frames only). ``motion_loss_weight`` adds the weighted
    :func:`~sculpt4d.diffusion.motion_loss` (each frame's velocity change from frame 0) to the flow loss.
    """

    stage = "sculpt4d"

    def __init__(
        self,
        net: DictConfig | dict,
        attention: DictConfig | dict | None = None,
        noise_share_alpha: float = 1.0,
        flow_noise_share_alpha: float | str | None = None,
        train_backbone: bool = False,
        backbone_lr_scale: float = 1.0,
        train_conditioner: bool = False,
        motion_loss_weight: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(net, attention=attention, four_d=True, require=COMPONENTS, **kwargs)
        if motion_loss_weight < 0:
            raise ValueError(f"motion_loss_weight must be >= 0, got {motion_loss_weight}")
        self.motion_loss_weight = float(motion_loss_weight)
        self.noise_share_alpha = float(noise_share_alpha)
        if flow_noise_share_alpha is None:
            flow_noise_share_alpha = noise_share_alpha
        if flow_noise_share_alpha != "uniform" and not 0.0 <= float(flow_noise_share_alpha) <= 1.0:
            raise ValueError(
                f"flow_noise_share_alpha must be in [0, 1] or 'uniform', got {flow_noise_share_alpha}"
            )
        self.flow_noise_share_alpha: float | str = (
            "uniform" if flow_noise_share_alpha == "uniform" else float(flow_noise_share_alpha)
        )
        self.train_backbone = bool(train_backbone)
        self.backbone_lr_scale = float(backbone_lr_scale)
        self.train_conditioner = bool(train_conditioner)
        self.conditioner.set_trainable(self.train_conditioner)
        for name, p in self.model.named_parameters():
            p.requires_grad_(train_backbone or name.startswith("adapter."))
        self.frozen = [self.vae]
        self.frozen += [] if train_backbone else [self.model.backbone]
        self.frozen += [] if self.train_conditioner else [self.conditioner]
        self._finish_init()

    def extra_hparams(self) -> dict[str, Any]:
        return {
            **super().extra_hparams(),
            "attention": self.attention_cfg,
            "noise_share_alpha": self.noise_share_alpha,
            "flow_noise_share_alpha": self.flow_noise_share_alpha,
            "train_backbone": self.train_backbone,
            "backbone_lr_scale": self.backbone_lr_scale,
            "train_conditioner": self.train_conditioner,
            "motion_loss_weight": self.motion_loss_weight,
        }

    def loss_terms(
        self, x1: torch.Tensor, cond: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The flow loss and ``motion_loss``: the error in each frame's change from frame 0 (x1 ``[B, T, N, C]``)."""
        pred, target = self.flow.velocities(self.model_fn, x1, cond, t=t, noise=noise)
        flow = (pred.float() - target.float()).pow(2).mean()
        return {"loss": flow, "motion_loss": motion_loss(pred, target)}

    def objective(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Flow loss + ``motion_loss_weight`` × motion loss."""
        if self.motion_loss_weight == 0:
            return terms["loss"]
        return terms["loss"] + self.motion_loss_weight * terms["motion_loss"]

    def param_groups(self, params: list[nn.Parameter]) -> list[dict[str, Any]]:
        """The adapter at the base rate; a trained backbone and conditioner at ``backbone_lr_scale`` × it."""
        pretrained = {id(p) for m in (self.model.backbone, self.conditioner) for p in m.parameters()}
        slow = [p for p in params if id(p) in pretrained]
        if not slow or self.backbone_lr_scale == 1.0:
            return super().param_groups(params)
        base_lr = float(self.optimizer_cfg["lr"])
        fast = [p for p in params if id(p) not in pretrained]
        return [{"params": fast}, {"params": slow, "lr": base_lr * self.backbone_lr_scale}]

    def export_config(self) -> dict[str, Any]:
        cfg = super().export_config()
        cfg["attention"] = self.attention_cfg
        return cfg

    def encode_latents(self, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        cached = self.cached_latents(batch, generator)  # [B, T, N, C] or None
        if cached is not None:
            return self.vae.to_dit(cached)
        z = self.vae.encode_sequence(
            batch["surface"],
            sample_posterior=self.sample_posterior,
            noise_share_alpha=self.noise_share_alpha,
            generator=generator,
        )
        return self.vae.to_dit(z)  # [B, T, N, C]

    def encode_condition(self, batch: dict[str, Any]) -> torch.Tensor:
        with torch.set_grad_enabled(self.train_conditioner and torch.is_grad_enabled()):
            return self.conditioner(batch["images"])  # [B, T, L, D]

    def noise(self, x1: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.flow_noise_share_alpha != "uniform":
            return shared_noise(x1.shape, float(self.flow_noise_share_alpha), generator).to(x1)
        shared = shared_noise(x1.shape, 1.0, generator)  # [B, T, N, C], one noise per sequence
        own = shared_noise(x1.shape, 0.0, generator)  # independent per frame
        alpha = torch.rand(x1.shape[0], generator=generator, device=generator.device)
        alpha = alpha.view(-1, *([1] * (x1.dim() - 1)))  # [B, 1, 1, 1]
        return (alpha.sqrt() * shared + (1 - alpha).sqrt() * own).to(x1)

    def sample_noise(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        alpha = self.flow_noise_share_alpha
        return shared_noise(shape, 0.5 if alpha == "uniform" else float(alpha), generator)

    def latent_shape(self, cond: torch.Tensor) -> tuple[int, ...]:
        return (cond.shape[0], cond.shape[1], self.vae.num_latents, self.vae.embed_dim)
