"""``Objects4DDataModule``: the on-disk 4D dataset as Lightning train/val loaders.

Objects are split into train/val by name (deterministic hash ranking, :func:`split_by_object`), or taken
from ``val_root`` / list files. Bad objects are found by a cheap scan in :meth:`setup` (npz headers, frame
folders) and at load time; each is reported by path and skipped, or raises with ``on_bad_object=raise``.

Training data is a seeded stream (:class:`SeededStreamSampler`) sized to the run (``max_steps`` ·
``accumulate_grad_batches`` · ``batch_size`` per rank); when a run resumes at step s the stream restarts
at the position of step s, so the data order equals an uninterrupted run. ``batch_size`` is per device.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from sculpt4d.data.dataset import Objects4DDataset, OnBad
from sculpt4d.data.records import BadObjectError, ObjectRecord, list_object_dirs, scan_object, split_by_object
from sculpt4d.data.seeded_stream import SeededStreamSampler, item_seed
from sculpt4d.errors import InputError

log = logging.getLogger(__name__)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers decode npz/png; leave the cores to the main process


class ResumableDataLoader(DataLoader):
    """A DataLoader Lightning treats as resumable: its position is a function of the global step.

    The stream start is set from ``trainer.global_step`` when the loader is built, so there is no state to
    restore; ``state_dict`` only records the seed so a mismatched resume is reported.
    """

    def state_dict(self) -> dict[str, Any]:
        sampler = self.sampler
        return {"seed": getattr(sampler, "seed", None), "start": getattr(sampler, "start", 0)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        seed = getattr(self.sampler, "seed", None)
        if state.get("seed") is not None and seed is not None and state["seed"] != seed:
            log.warning(
                "resuming with data seed %s but the checkpoint used %s: the data order differs",
                seed,
                state["seed"],
            )


class Objects4DDataModule(LightningDataModule):
    """Streams ``[T, P, 7]`` surfaces (+ images, + occupancy) of the on-disk format (see :mod:`.dataset`)."""

    def __init__(
        self,
        root: str | Sequence[str],
        val_root: str | Sequence[str] | None = None,
        train_list: str | None = None,
        val_list: str | None = None,
        sequence_length: int = 8,
        stride: int = 1,
        strides: Sequence[int] | None = None,
        pc_size: int = 40960,
        pc_sharpedge_size: int = 0,
        num_volume_points: int = 4096,
        load_images: bool = True,
        load_volume: bool = False,
        val_load_volume: bool = True,
        preprocess_size: int = 512,
        border_ratio: float = 0.15,
        crop: str = "frame",
        image_size: int | None = None,
        batch_size: int = 4,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        val_fraction: float = 0.05,
        num_val_objects: int | None = None,
        split_seed: int = 0,
        seed: int = 0,
        val_items_per_object: int = 1,
        max_val_objects: int | None = None,
        max_objects: int | None = None,
        num_train_samples: int | None = None,
        cache: bool = False,
        cache_images: bool = False,
        on_bad_object: OnBad = "skip",
        consistent_sampling: bool = True,
        hue_jitter: float = 0.0,
    ) -> None:
        super().__init__()
        strides = (
            [int(k) for k in strides] if strides is not None else None
        )  # plain list: resume loads weights_only
        self.save_hyperparameters(logger=False)
        self.train_set: Objects4DDataset | None = None
        self.val_set: Objects4DDataset | None = None
        self.bad_objects: list[tuple[Path, str]] = []

    # ------------------------------------------------------------------ setup
    def _scan(self, dirs: list[Path], min_frames: int, need_volume: bool) -> list[ObjectRecord]:
        hp = self.hparams
        records = []
        for d in dirs:
            try:
                records.append(
                    scan_object(d, min_frames=min_frames, need_images=hp.load_images, need_volume=need_volume)
                )
            except BadObjectError as e:
                if hp.on_bad_object == "raise":
                    raise
                self.bad_objects.append((d, str(e)))
                log.warning("skipping bad object %s: %s", d, e)
        return records

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        span = (hp.sequence_length - 1) * (min(hp.strides) if hp.strides else hp.stride) + 1
        train_dirs = list_object_dirs(hp.root, hp.train_list)
        if hp.val_root is not None or hp.val_list is not None:
            val_dirs = list_object_dirs(hp.val_root if hp.val_root is not None else hp.root, hp.val_list)
        else:
            tr, va = split_by_object(
                [d.name for d in train_dirs], hp.val_fraction, hp.num_val_objects, hp.split_seed
            )
            by_name = {d.name: d for d in train_dirs}
            train_dirs, val_dirs = [by_name[n] for n in tr], [by_name[n] for n in va]
        if hp.max_objects:
            train_dirs = train_dirs[: hp.max_objects]
        if hp.max_val_objects:
            val_dirs = val_dirs[: hp.max_val_objects]
        need_vol = hp.load_volume or hp.val_load_volume
        train_recs = self._scan(train_dirs, span, hp.load_volume)
        val_recs = self._scan(val_dirs, span, need_vol)
        if not train_recs:
            raise InputError(f"no usable training objects under {hp.root} ({len(self.bad_objects)} bad)")
        common = dict(
            sequence_length=hp.sequence_length,
            stride=hp.stride,
            strides=list(hp.strides) if hp.strides else None,
            pc_size=hp.pc_size,
            pc_sharpedge_size=hp.pc_sharpedge_size,
            num_volume_points=hp.num_volume_points,
            load_images=hp.load_images,
            preprocess_size=hp.preprocess_size,
            border_ratio=hp.border_ratio,
            crop=hp.crop,
            image_size=hp.image_size,
            cache=hp.cache,
            cache_images=hp.cache_images,
            on_bad_object=hp.on_bad_object,
            consistent_sampling=hp.consistent_sampling,
        )
        self.train_set = Objects4DDataset(
            train_recs, load_volume=hp.load_volume, random_start=True, hue_jitter=hp.hue_jitter, **common
        )
        self.val_set = Objects4DDataset(val_recs, load_volume=need_vol, random_start=False, **common)
        log.info(
            "dataset: %d train / %d val objects (%d bad skipped), T=%d stride=%d, %d+%d points",
            len(train_recs),
            len(val_recs),
            len(self.bad_objects),
            hp.sequence_length,
            hp.stride,
            hp.pc_size,
            hp.pc_sharpedge_size,
        )

    # ------------------------------------------------------------------ loaders
    def _run_geometry(self) -> tuple[int, int, int, int, int]:
        """(start position, stream length, rank, world size, accumulate) from the attached trainer."""
        hp = self.hparams
        trainer = getattr(self, "trainer", None)
        rank, world, accum, step, max_steps = 0, 1, 1, 0, -1
        if trainer is not None:
            rank, world = trainer.global_rank, trainer.world_size
            accum = int(trainer.accumulate_grad_batches)
            step, max_steps = int(trainer.global_step), int(trainer.max_steps)
        if hp.num_train_samples:
            length = int(hp.num_train_samples)
        elif max_steps and max_steps > 0:
            length = max_steps * accum * hp.batch_size
        else:
            length = 10_000_000
        return step * accum * hp.batch_size, length, rank, world, accum

    def _loader(self, dataset, sampler, batch_size: int, drop_last: bool, cls=DataLoader) -> DataLoader:
        hp = self.hparams
        return cls(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=hp.num_workers,
            pin_memory=hp.pin_memory,
            persistent_workers=hp.persistent_workers and hp.num_workers > 0,
            worker_init_fn=_worker_init if hp.num_workers > 0 else None,
        )

    def train_sampler(self) -> SeededStreamSampler:
        assert self.train_set is not None, "call setup() first"
        start, length, rank, world, _ = self._run_geometry()
        return SeededStreamSampler(
            len(self.train_set),
            seed=self.hparams.seed,
            length=length,
            start=start,
            rank=rank,
            world_size=world,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        sampler = self.train_sampler()
        if sampler.start:
            log.info(
                "resuming the data stream at sample %d (step %d)",
                sampler.start,
                sampler.start // self.hparams.batch_size,
            )
        return self._loader(self.train_set, sampler, self.hparams.batch_size, True, ResumableDataLoader)

    def fixed_train_dataloader(self, num_batches: int, batch_size: int | None = None) -> DataLoader:
        """``num_batches`` training batches from the start of the stream (independent of the trainer's step):
        e.g. to estimate the latent ``scale_factor`` after training."""
        self.setup()
        assert self.train_set is not None
        bs = batch_size or self.hparams.batch_size
        sampler = SeededStreamSampler(len(self.train_set), seed=self.hparams.seed, length=num_batches * bs)
        return self._loader(self.train_set, sampler, bs, True)

    def val_keys(self) -> list[tuple[int, int]]:
        """Fixed validation items: every val object ``val_items_per_object`` times, seeds fixed by the seed."""
        assert self.val_set is not None
        keys = []
        for j in range(self.hparams.val_items_per_object):
            for i in range(len(self.val_set)):
                keys.append((i, item_seed(self.hparams.seed + 7919, j * len(self.val_set) + i)))
        return keys

    def val_dataloader(self) -> DataLoader | list:
        self.setup()
        assert self.val_set is not None
        if len(self.val_set) == 0:
            return []
        keys = self.val_keys()
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.world_size > 1:  # shard the fixed items over ranks
            keys = keys[trainer.global_rank :: trainer.world_size]
        bs = self.hparams.val_batch_size or self.hparams.batch_size
        return self._loader(self.val_set, keys, bs, False)
