"""The frozen VAE's posterior means of every stored frame, encoded once instead of at every training step.

The flow stages train on a VAE that never changes, yet encoding each batch's surfaces costs a quarter of a tiny
3D step. :func:`load_or_build_latent_cache` encodes every frame of a list of objects ``draws`` times — each draw
its own surface-point subset and query pick, one per sequence and shared by its frames, exactly as a live
``encode_sequence`` picks them — and keeps the posterior means; a step then looks its items' latents up by
(object, frame) and takes one draw at random (:meth:`LatentCache.lookup`). Posterior *samples* cannot be cached:
a cache serves ``sample_posterior: false`` only.

On disk: one safetensors file per (VAE weights, data, sampling settings, draws), named by the hash of all of them
(:func:`cache_key`), written atomically; a changed VAE or regenerated data gets a new file, never a stale one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sculpt4d.data.dataset import Objects4DDataset
from sculpt4d.data.records import SURFACE_FILE, ObjectRecord
from sculpt4d.errors import InputError

log = logging.getLogger(__name__)

CACHE_VERSION = "1"


@dataclass
class LatentCache:
    """``latents[object]``: ``[draws, frames, N, C]`` posterior means (VAE scale, before ``to_dit``)."""

    latents: dict[str, torch.Tensor]

    @property
    def draws(self) -> int:
        return next(iter(self.latents.values())).shape[0]

    def lookup(
        self, objects: Sequence[str], frame_index: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """The latents ``[B, T, N, C]`` of ``frame_index [B, T]`` of each of ``objects [B]``, one draw per item
        (the same for its frames, as one live pick serves a whole sequence) chosen with ``generator``."""
        draw = torch.randint(self.draws, (len(objects),), generator=generator, device=generator.device).cpu()
        out = []
        for b, name in enumerate(objects):
            if name not in self.latents:
                raise InputError(f"object {name!r} is not in the latent cache (built for other data)")
            out.append(self.latents[name][int(draw[b])][frame_index[b].cpu()])  # [T, N, C]
        return torch.stack(out)


def draw_seeds(name: str, draw: int) -> tuple[list[int], int]:
    """The seeds of draw ``draw`` of object ``name``: of its surface-point rows (numpy) and query pick (torch)."""
    crc = int(zlib.crc32(name.encode()))
    return [crc, int(draw)], crc * 64 + int(draw)


def cache_key(vae: nn.Module, dataset: Objects4DDataset, records: Sequence[ObjectRecord], draws: int) -> str:
    """sha256 over the VAE's weights and query-pick settings, the surface sampling settings, ``draws`` and each
    object's surface file."""
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION}|{draws}|{dataset.pc_size}|{dataset.pc_sharpedge_size}|".encode())
    h.update(f"{dataset.consistent_sampling}|{type(vae).__name__}|".encode())
    encoder = getattr(vae, "encoder", None)  # how the encoder picks its queries: not in its weights
    for attr in ("num_latents", "downsample_ratio", "pc_size", "pc_sharpedge_size"):
        h.update(f"{attr}={getattr(encoder, attr, None)}|".encode())
    h.update(f"fps_random_start={getattr(vae, 'fps_random_start', None)}|".encode())
    for name, tensor in sorted(vae.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    for rec in records:
        stat = (rec.path / SURFACE_FILE).stat()
        h.update(
            f"|{rec.name}|{rec.path.resolve()}|{','.join(rec.frames)}|{stat.st_size}|{stat.st_mtime_ns}".encode()
        )
    return h.hexdigest()


@torch.no_grad()
def encode_objects(
    vae: nn.Module, dataset: Objects4DDataset, records: Sequence[ObjectRecord], draws: int
) -> dict[str, torch.Tensor]:
    """``{name: [draws, frames, N, C]}``: the posterior means of every frame of ``records``, ``draws`` times.

    Draw ``k`` of an object reads ``dataset.read_surface`` and picks the query points (from frame 0, for every
    frame) with the seeds :func:`draw_seeds` gives, so an object's latents depend only on it, the VAE and ``k``.
    """
    was_training = vae.training
    vae.eval()
    device = next(vae.parameters()).device
    out: dict[str, torch.Tensor] = {}
    start, report_every = time.monotonic(), max(1, len(records) // 10)
    for i, rec in enumerate(records):
        if i and i % report_every == 0:
            elapsed = time.monotonic() - start
            log.info(
                "latent cache: %d / %d objects in %.0f s (%.0f s to go)",
                i,
                len(records),
                elapsed,
                elapsed * (len(records) - i) / i,
            )
        per_draw = []
        for k in range(draws):
            rows_seed, pick_seed = draw_seeds(rec.name, k)
            surface = dataset.read_surface(rec, rec.frames, np.random.default_rng(rows_seed))  # [F, P, 7]
            gen = torch.Generator(device=device).manual_seed(pick_seed)
            z = vae.encode_sequence(surface[None].to(device), sample_posterior=False, generator=gen)
            per_draw.append(z[0].float().cpu())  # [F, N, C]
        out[rec.name] = torch.stack(per_draw)
    vae.train(was_training)
    return out


def load_or_build_latent_cache(
    vae: nn.Module,
    dataset: Objects4DDataset,
    records: Sequence[ObjectRecord],
    draws: int,
    directory: str | Path,
) -> LatentCache:
    """The cache of ``records`` from ``directory`` when one for this VAE and data exists, else encoded and saved."""
    if draws < 1:
        raise ValueError(f"latent_cache_draws must be >= 1, got {draws}")
    if not records:
        raise InputError("the latent cache needs at least one object")
    # a reader of its own: the training set's per-process npz cache would keep every surface in memory
    reader = Objects4DDataset(
        records,
        sequence_length=1,
        pc_size=dataset.pc_size,
        pc_sharpedge_size=dataset.pc_sharpedge_size,
        load_images=False,
        consistent_sampling=dataset.consistent_sampling,
        on_bad_object="raise",
    )
    key = cache_key(vae, reader, records, draws)
    path = Path(directory) / f"latents_{key[:24]}.safetensors"
    if path.is_file():
        latents = load_file(str(path))
        log.info("latent cache: %d objects x %d draws from %s", len(latents), draws, path)
        return LatentCache(latents)
    log.info(
        "latent cache: encoding %d objects x %d draws (once for this VAE and data) ...", len(records), draws
    )
    latents = encode_objects(vae, reader, records, draws)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(latents, str(tmp), metadata={"version": CACHE_VERSION, "key": key, "draws": str(draws)})
    os.replace(tmp, path)
    log.info("latent cache: saved %s", path)
    return LatentCache(latents)
