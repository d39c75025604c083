"""The on-disk 4D dataset (design.md §6 + ``4d_volume.npz``) as Lightning loaders."""

from sculpt4d.data.datamodule import Objects4DDataModule, ResumableDataLoader
from sculpt4d.data.dataset import POINT_SCALE, Objects4DDataset, resize_image
from sculpt4d.data.records import BadObjectError, ObjectRecord, list_object_dirs, scan_object, split_by_object
from sculpt4d.data.seeded_stream import SeededStreamSampler, item_seed

__all__ = [
    "POINT_SCALE",
    "BadObjectError",
    "ObjectRecord",
    "Objects4DDataModule",
    "Objects4DDataset",
    "ResumableDataLoader",
    "SeededStreamSampler",
    "item_seed",
    "list_object_dirs",
    "resize_image",
    "scan_object",
    "split_by_object",
]
