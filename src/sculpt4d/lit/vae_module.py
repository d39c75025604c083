"""``VAEModule``: point-cloud autoencoding with occupancy BCE + KL (the tiny model's first stage), and the
same loss refining only the decoder of an exported model (``train_encoder: false``)."""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from sculpt4d.lit.base import BaseLitModule
from sculpt4d.models.factory import build_components


def occupancy_iou(logits: torch.Tensor, occ: torch.Tensor) -> torch.Tensor:
    """IoU of ``logits > 0`` vs ``occ`` over query points, per item ``[B]`` (empty union -> 1)."""
    pred, gt = logits > 0, occ > 0.5
    inter = (pred & gt).sum(-1).float()
    union = (pred | gt).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


class VAEModule(BaseLitModule):
    """Train ShapeVAE: ``loss = BCE(query(decode(z)), occupancy) + kl_weight · KL`` with ``z`` a posterior sample.

    Batches need ``surface`` ``[B, T, P, 7]``, ``vol_points`` ``[B, T, M, 3]``, ``vol_occ`` ``[B, T, M]``; frames
    are encoded independently. The logvar clamp is the VAE's own (``logvar_max``: 0 for tiny = std ≤ 1, so
    the posterior mean stays decodable; with an unbounded logvar the tiny VAE's decoder learned to rely on the
    noise and decoded its posterior means to empty volumes).

    ``train_encoder=False`` freezes the encoder side (``encoder``, ``pre_kl``), so the latent space, and with it
    everything trained on it, stays as it is while the decoder (``post_kl``, ``transformer``, ``geo_decoder``)
    trains on. ``init_from`` is then required; its latent statistics are kept, and when it is a whole model its
    other parts (DiT, conditioner) and its ``config.yaml`` are carried unchanged into the export, which is that
    model with the refined decoder. ``latent_noise`` adds Gaussian noise of that std, in the DiT's standardised
    units (:meth:`ShapeVAE.to_dit`), to the training latents before decoding (validation decodes the mean).
    """

    stage = "vae"

    def __init__(
        self,
        net: DictConfig | dict,
        kl_weight: float = 1e-3,
        init_from: str | None = None,
        root_dir: str | None = None,
        train_encoder: bool = True,
        latent_noise: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(net, **kwargs)
        self.kl_weight = float(kl_weight)
        self.train_encoder = bool(train_encoder)
        self.latent_noise = float(latent_noise)
        comps = build_components(self.net_cfg, four_d=False, order=("vae",))
        self.vae = comps.vae
        self._carried: dict[str, dict[str, torch.Tensor]] = {}  # other parts of init_from, exported unchanged
        self._carried_cfg: dict[str, Any] = {}  # init_from's config.yaml when it is a whole model
        if not self.train_encoder and not init_from:
            raise ValueError(
                "lit.train_encoder=false refines the decoder of an existing VAE: set init_from=<export>"
            )
        if init_from:
            from sculpt4d.checkpoints.load import load_components, read_parts

            parts, init_cfg = read_parts(init_from, root_dir)
            load_components(comps, parts, f"init_from {init_from}", require=("vae",))
            if not self.train_encoder:
                self._keep_latent_space(parts, init_cfg)
        if not self.train_encoder:
            self.frozen = [self.vae.encoder, self.vae.pre_kl]
        self._finish_init()

    def _keep_latent_space(self, parts: dict[str, dict[str, torch.Tensor]], init_cfg: dict[str, Any]) -> None:
        """Keep ``init_from``'s latent statistics, and its other parts and config when it is a whole model."""
        from sculpt4d.lit.init import adopt_latent_stats

        adopt_latent_stats(self.vae, self.net_cfg["vae"], init_cfg)
        self._carried = {name: dict(sd) for name, sd in parts.items() if name != "vae" and sd}
        if self._carried:
            self._carried_cfg = copy.deepcopy(init_cfg)
            self._carried_cfg.pop("export", None)

    def extra_hparams(self) -> dict[str, Any]:
        return {
            "kl_weight": self.kl_weight,
            "train_encoder": self.train_encoder,
            "latent_noise": self.latent_noise,
        }

    def export_components(self) -> dict[str, torch.nn.Module]:
        return {"vae": self.vae}

    def export_config(self) -> dict[str, Any]:
        """A VAE's config; a refined whole model's is its own, unchanged (same architecture and statistics)."""
        return copy.deepcopy(self._carried_cfg) if self._carried_cfg else super().export_config()

    @torch.no_grad()
    def export_state_dict(self, use_ema: bool = True) -> dict[str, torch.Tensor]:
        out = super().export_state_dict(use_ema)
        for name, sd in self._carried.items():
            out.update({f"{name}.{key}": value.clone().contiguous() for key, value in sd.items()})
        return out

    def _forward(self, batch: dict[str, Any], generator: torch.Generator, sample: bool = True):
        surface = batch["surface"].flatten(0, 1)  # [B*T, P, 7]
        pts = batch["vol_points"].flatten(0, 1)  # [B*T, M, 3]
        occ = batch["vol_occ"].flatten(0, 1)  # [B*T, M]
        with torch.set_grad_enabled(self.train_encoder and torch.is_grad_enabled()):
            posterior, _ = self.vae.encode_posterior(surface, generator=generator)
        z = posterior.sample(generator) if sample else posterior.mode()  # [B*T, N, C]
        if sample and self.latent_noise > 0:  # the decoder learns to read latents as imprecise as a DiT's
            noise = torch.randn(z.shape, generator=generator, device=generator.device).to(z)
            z = self.vae.from_dit(self.vae.to_dit(z) + self.latent_noise * noise)
        logits = self.vae.query(self.vae.decode(z), pts).float()  # [B*T, M]
        bce = F.binary_cross_entropy_with_logits(logits, occ)
        kl = posterior.kl().float().mean()
        return logits, occ, bce, kl, posterior

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        gen = self.step_generator(self.global_step)
        logits, occ, bce, kl, posterior = self._forward(batch, gen)
        loss = bce + self.kl_weight * kl
        bs = occ.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log_dict(
            {
                "train/bce": bce,
                "train/kl": kl,
                "train/acc": ((logits > 0) == (occ > 0.5)).float().mean(),
                "train/logvar": posterior.logvar.float().mean(),
            },
            batch_size=bs,
        )
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        gen = self.step_generator(batch_idx, salt=1)
        logits, occ, bce, kl, posterior = self._forward(batch, gen, sample=False)  # decode the mean
        bs = occ.shape[0]
        self.log_dict(
            {
                "val/bce": bce,
                "val/kl": kl,
                "val/iou": occupancy_iou(logits, occ).mean(),
                "val/latent_std": posterior.mode().float().std(),
            },
            batch_size=bs,
            sync_dist=True,
        )
        if batch_idx == 0:
            self._log_meshes(batch, posterior.mode())

    @torch.no_grad()
    def _log_meshes(self, batch: dict[str, Any], z: torch.Tensor) -> None:
        if self.global_rank != 0 or not self.val_cfg.get("strip", True):
            return
        k = min(z.shape[0], max(int(self.val_cfg.get("num_samples", 1)), 1))
        meshes = self.preview_meshes(self.vae, z[:k])
        self.log_strip("val/reconstruction", meshes)
