"""Read checkpoints into flat state dicts (never executing pickled code).

Readable layouts (a file, or a folder holding one of them):

- sharded ``pytorch_model-0000X-of-0000N.bin`` + ``pytorch_model.bin.index.json`` (the Sculpt4D release),
  or a single ``pytorch_model.bin``;
- Hunyuan3D-2.1 ``model.fp16.ckpt``: ``{"model": DiT, "vae": ShapeVAE, "conditioner": DINOv2}`` -> flat keys
  ``model.* / vae.* / conditioner.*`` (see :func:`split_hunyuan_checkpoint`);
- ``model.safetensors`` (single, or sharded with ``model.safetensors.index.json``);
- Lightning ``*.ckpt`` (``state_dict``; ``_forward_module.`` / ``module.`` prefixes stripped) and DeepSpeed
  ``{"module": ...}`` files.

Pickle-based files are read with ``torch.load(weights_only=True)``. Lightning files often also pickle
harmless Python objects (hyper-parameters, callback states): those classes are replaced by inert stub
classes (nothing is imported or called) and then dropped, so only tensors come out.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sculpt4d.checkpoints.diagnose import _SHOWN
from sculpt4d.checkpoints.keys import StateDict, strip_prefixes
from sculpt4d.checkpoints.resolve import resolve_checkpoint
from sculpt4d.errors import CheckpointError

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth")
DIR_CANDIDATES = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
    "model.fp16.safetensors",
    "model.fp16.ckpt",
    "model.ckpt",
    "model.pt",
)


def load_state_dict(path: str | os.PathLike) -> StateDict:
    """Read every tensor of a checkpoint file/folder (layouts in the module doc) into a flat dict on CPU."""
    if str(path).startswith("hf://"):
        path = resolve_checkpoint(path)
    p = Path(path).expanduser()
    if p.is_dir():
        p = _pick_file(p)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint file not found")
    name = p.name
    if name.endswith(".index.json"):
        return _load_index(p)
    if name.endswith(".safetensors"):
        return _load_safetensors(p)
    if name.endswith(PICKLE_SUFFIXES):
        return _extract_state_dict(_torch_load(p), p)
    raise CheckpointError(
        f"{p}: unknown checkpoint format (expected .safetensors, .bin, .ckpt, .pt, .pth "
        "or a *.index.json of shards)"
    )


def _pick_file(d: Path) -> Path:
    for c in DIR_CANDIDATES:
        if (d / c).is_file():
            return d / c
    files = sorted(f for f in d.iterdir() if f.is_file())
    index = [f for f in files if f.name.endswith(".index.json")]
    if len(index) == 1:
        return index[0]
    weights = [f for f in files if f.name.endswith((".safetensors", *PICKLE_SUFFIXES))]
    if len(weights) == 1:
        return weights[0]
    listing = ", ".join(f.name for f in files[:10]) or "empty"
    raise CheckpointError(
        f"{d}: cannot tell which file is the checkpoint (found: {listing}). Expected one of "
        f"{', '.join(DIR_CANDIDATES)}, or pass the file itself."
    )


def _load_index(index: Path) -> StateDict:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        assert isinstance(weight_map, dict)
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as e:
        raise CheckpointError(
            f"{index}: malformed shard index ({type(e).__name__}: {e}); expected JSON with "
            "a 'weight_map' {tensor name: shard file}"
        ) from e
    out: StateDict = {}
    for shard in dict.fromkeys(weight_map.values()):
        f = index.parent / shard
        if not f.is_file():
            raise CheckpointError(
                f"{index}: shard {shard} is missing from {index.parent} (incomplete download?)"
            )
        out.update(
            _load_safetensors(f) if shard.endswith(".safetensors") else _extract_state_dict(_torch_load(f), f)
        )
    missing = [k for k, s in weight_map.items() if k not in out]
    if missing:
        raise CheckpointError(
            f"{index}: {len(missing)} tensors listed in the index are absent from their shards "
            f"(first: {', '.join(missing[:_SHOWN])})"
        )
    return out


def _load_safetensors(f: Path) -> StateDict:
    from safetensors.torch import load_file

    try:
        return load_file(str(f), device="cpu")
    except Exception as e:  # SafetensorError / OSError: header or data corrupt
        raise CheckpointError(
            f"{f}: cannot read safetensors file ({type(e).__name__}: {e}); the file is "
            "truncated or corrupt — download/export it again."
        ) from e


def _inert_stub(full_name: str) -> type:
    """A class standing in for ``full_name`` during unpickling: absorbs arguments and state, runs nothing."""
    module, _, qualname = full_name.rpartition(".")

    def _new(cls: type, *args: Any, **kwargs: Any) -> Any:
        obj = object.__new__(cls)
        object.__setattr__(obj, "_args", args)
        return obj

    ns = {
        "__module__": module,
        "__qualname__": qualname,
        "__new__": _new,
        "__init__": lambda self, *a, **k: None,
        "__setstate__": lambda self, state: object.__setattr__(self, "_state", state),
        "__setitem__": lambda self, k, v: None,
        "append": lambda self, v: None,
        "extend": lambda self, v: None,
        "__repr__": lambda self: f"<unloaded {full_name}>",
    }
    return type(qualname.rsplit(".", 1)[-1] or "Stub", (), ns)


def blocked_globals(f: str | os.PathLike, err: Exception) -> list[str]:
    """The globals a weights-only load of ``f`` refused: from torch's message (any wording), else the file."""
    names = re.findall(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL)\s+([\w.]+)", str(err), flags=re.I)
    if not names:
        try:
            names = list(torch.serialization.get_unsafe_globals_in_checkpoint(f))
        except Exception:  # noqa: BLE001 - legacy or corrupt files: no names to report
            names = []
    return list(dict.fromkeys(names))


def refused_pickle_message(f: str | os.PathLike, err: Exception, allowed: str = "tensor checkpoints") -> str:
    """One sentence for a refused unpickle: the blocked global(s), and a remedy that keeps code from running."""
    names = blocked_globals(f, err)
    what = f"it needs the global {', '.join(names)}" if names else "it is not a plain tensor checkpoint"
    return (
        f"{f}: refused to unpickle: {what}, which could run code, and only {allowed} are read "
        "(nothing in the file was executed). If the file is trusted, re-save its state dict with "
        "torch.save(model.state_dict(), ...) or as safetensors."
    )


def _torch_load(f: Path) -> Any:
    """``torch.load(weights_only=True)`` (mmap when possible); unknown globals become inert stubs."""

    def load(mmap: bool) -> Any:
        return torch.load(f, map_location="cpu", weights_only=True, mmap=mmap)

    def read() -> Any:
        try:
            return load(mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e) and "zip" not in str(e):
                raise
            return load(mmap=False)  # legacy (non-zip) torch.save format

    try:
        try:
            return read()
        except pickle.UnpicklingError as e:
            if "weights_only" not in str(e).lower() and "weights only" not in str(e).lower():
                raise
            try:
                unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(f)
            except Exception:
                unsafe = re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
            if not unsafe:
                raise
            with torch.serialization.safe_globals([_inert_stub(g) for g in unsafe]):
                return read()
    except CheckpointError:
        raise
    except pickle.UnpicklingError as e:
        raise CheckpointError(refused_pickle_message(f, e)) from None
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(
            f"{f}: cannot read checkpoint ({type(e).__name__}: {msg}); the file is truncated, "
            "corrupt or not a PyTorch checkpoint — download/export it again."
        ) from e


def _flatten(obj: Mapping, prefix: str = "") -> StateDict:
    out: StateDict = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, torch.Tensor):
            out[key] = v
        elif isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
    return out


def _extract_state_dict(obj: Any, f: Path) -> StateDict:
    """Tensors of a loaded pickle: Lightning ``state_dict``, DeepSpeed ``module``, Hunyuan nested, plain."""
    if not isinstance(obj, Mapping):
        what = (
            "a single tensor" if isinstance(obj, torch.Tensor) else f"a pickled {type(obj).__name__} object"
        )
        raise CheckpointError(
            f"{f}: not a state dict: the file holds {what} ({obj!r:.80}), expected a dict of "
            "tensors (nothing in it was executed)"
        )
    sd_obj: Any = obj
    if isinstance(obj.get("state_dict"), Mapping):
        sd_obj = obj["state_dict"]  # Lightning
    elif isinstance(obj.get("module"), Mapping) and not any(
        isinstance(v, torch.Tensor) for v in obj.values()
    ):
        sd_obj = obj["module"]  # DeepSpeed model states
    sd = _flatten(sd_obj)
    if not sd:
        raise CheckpointError(
            f"{f}: no tensors found (top-level keys: {', '.join(map(str, list(obj)[:10]))})"
        )
    return strip_prefixes(sd)
