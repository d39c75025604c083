"""Write checkpoints: ``model.safetensors`` (optionally sharded + index) and sharded ``pytorch_model-*.bin``."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from sculpt4d.checkpoints.keys import StateDict
from sculpt4d.utils.io import atomic_path, write_json

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(size: int | str) -> int:
    """Bytes from ``int`` or ``"500MB"`` / ``"5GB"`` / ``"2GiB"``."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*([\d.]+)\s*([a-zA-Z]*)\s*", str(size))
    if not m or m.group(2).upper() not in _UNITS:
        raise ValueError(f"cannot parse size {size!r} (e.g. 5GB, 500MB, 1048576)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def _owning_tensors(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """Detached contiguous CPU tensors that each own exactly their storage (shared/oversized storages and
    views are cloned; safetensors refuses shared memory, torch.save would write whole storages)."""
    out: StateDict = {}
    seen: set[int] = set()
    for k, v in sd.items():
        t = v.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen or t.untyped_storage().nbytes() != t.nbytes or t.storage_offset():
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[k] = t
    return out


def _shards(sd: Mapping[str, torch.Tensor], max_bytes: int | None) -> list[StateDict]:
    shards: list[StateDict] = [{}]
    size = 0
    for k, v in sd.items():
        n = v.numel() * v.element_size()
        if max_bytes is not None and shards[-1] and size + n > max_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += n
    return shards


def _write_index(index: Path, shards: list[StateDict], names: list[str], stale_glob: str) -> None:
    total = sum(v.numel() * v.element_size() for s in shards for v in s.values())
    weight_map = {k: n for s, n in zip(shards, names) for k in s}
    write_json(index, {"metadata": {"total_size": total}, "weight_map": weight_map})
    for f in index.parent.glob(stale_glob):
        if f.name not in names:
            f.unlink()


def save_safetensors(
    sd: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    shard_size: int | str | None = None,
    *,
    max_shard_size: int | str | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write ``path`` (``*.safetensors``; a folder means ``<folder>/model.safetensors``) atomically.

    Above ``shard_size`` bytes writes ``<stem>-0000X-of-0000N.safetensors`` + ``<name>.index.json``
    instead. Returns the path to pass to :func:`load_state_dict` (the file or the index).
    """
    from safetensors.torch import save_file

    p = Path(path)
    if p.suffix != ".safetensors":
        p = p / "model.safetensors"
    limit = shard_size if shard_size is not None else max_shard_size
    tensors = _owning_tensors(sd)
    shards = _shards(tensors, parse_size(limit) if limit is not None else None)
    meta = {"format": "pt", **(metadata or {})}
    if len(shards) == 1:
        with atomic_path(p) as tmp:
            save_file(shards[0], str(tmp), metadata=meta)
        return p
    n = len(shards)
    names = [f"{p.stem}-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    for shard, fname in zip(shards, names):
        with atomic_path(p.parent / fname) as tmp:
            save_file(shard, str(tmp), metadata=meta)
    index = p.parent / f"{p.name}.index.json"
    _write_index(index, shards, names, f"{p.stem}-*-of-*.safetensors")
    return index


def save_sharded_bin(
    sd: Mapping[str, torch.Tensor], directory: str | os.PathLike, max_shard_size: int | str = "10GB"
) -> Path:
    """Write the Sculpt4D release layout: ``pytorch_model-0000X-of-0000N.bin`` + ``pytorch_model.bin.index.json``
    (always indexed, even for one shard). Shards first, index last, each atomically. Returns the index path."""
    d = Path(directory)
    tensors = _owning_tensors(sd)
    shards = _shards(tensors, parse_size(max_shard_size))
    n = len(shards)
    names = [f"pytorch_model-{i + 1:05d}-of-{n:05d}.bin" for i in range(n)]
    for shard, fname in zip(shards, names):
        with atomic_path(d / fname) as tmp:
            torch.save(shard, tmp)
    index = d / "pytorch_model.bin.index.json"
    _write_index(index, shards, names, "pytorch_model-*-of-*.bin")
    return index
