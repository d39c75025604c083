"""Resolve, read, check and write checkpoints (never executing pickled code).

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
from torch import nn

from sculpt4d.errors import CheckpointError
from sculpt4d.utils.io import atomic_path, write_json

StateDict = dict[str, torch.Tensor]
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
_SHOWN = 5  # keys listed per category in error messages


# --------------------------------------------------------------------------------------------- resolve
def resolve_checkpoint(spec: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """``hf://owner/repo[@revision][/subfolder-or-file]`` (downloaded, only that subfolder) or a local path."""
    s = str(spec)
    if not s.startswith("hf://"):
        p = Path(s).expanduser()
        if not p.exists():
            raise CheckpointError(
                f"{s}: checkpoint not found (no such file or folder). Pass a local path "
                "or hf://owner/repo/subfolder."
            )
        return p.resolve()
    parts = s[len("hf://") :].strip("/").split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise CheckpointError(
            f"{s}: expected hf://owner/repo[/subfolder], e.g. hf://TencentARC/Sculpt4D/blockmask_bf16"
        )
    owner, repo = parts[0], parts[1]
    repo, _, revision = repo.partition("@")
    repo_id, sub = f"{owner}/{repo}", "/".join(parts[2:])
    patterns = [sub, f"{sub}/*"] if sub else None
    try:
        from huggingface_hub import snapshot_download

        root = snapshot_download(
            repo_id,
            revision=revision or None,
            allow_patterns=patterns,
            cache_dir=str(cache_dir) if cache_dir else None,
        )
    except Exception as e:  # the hub raises many types (offline, 404, gated, network): one clear message
        raise CheckpointError(_hub_error_message(s, repo_id, sub, e)) from e
    path = Path(root) / sub if sub else Path(root)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        raise CheckpointError(
            f"{s}: '{sub}' was not found in the Hugging Face repo {repo_id} "
            "(check the subfolder name on the repo page)."
        )
    return path


def _hub_error_message(spec: str, repo_id: str, sub: str, e: Exception) -> str:
    from huggingface_hub import constants

    name = type(e).__name__
    include = f" --include '{sub}/*'" if sub else ""
    local = f"checkpoints/{repo_id.split('/')[-1]}"
    target = f"{local}/{sub}" if sub else local
    howto = (
        f"Download it on a machine with internet (`huggingface-cli download {repo_id}{include} "
        f"--local-dir {local}`) and pass the local path {target} instead."
    )
    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in (
        "1",
        "ON",
        "YES",
        "TRUE",
    )
    if offline or name in ("OfflineModeIsEnabled", "LocalEntryNotFoundError"):
        why = (
            "offline mode (HF_HUB_OFFLINE=1) and it is not in the local Hugging Face cache"
            if offline
            else "the Hugging Face Hub cannot be reached and it is not in the local cache"
        )
    elif name in ("RepositoryNotFoundError", "GatedRepoError", "RevisionNotFoundError"):
        why = f"the repo or revision does not exist or needs access rights ({name})"
    else:
        why = f"download failed ({name}: {str(e).splitlines()[0] if str(e) else ''})"
    return f"cannot fetch {spec}: {why}. {howto}"


# ------------------------------------------------------------------------------------------------ read
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


def strip_prefixes(
    sd: Mapping[str, torch.Tensor], prefixes: tuple[str, ...] = ("_forward_module.", "module.")
) -> StateDict:
    """Remove wrapper prefixes (DeepSpeed ``_forward_module.``, DDP ``module.``) shared by every key."""
    out = dict(sd)
    changed = True
    while changed and out:
        changed = False
        for p in prefixes:
            if all(k.startswith(p) for k in out):
                out = {k[len(p) :]: v for k, v in out.items()}
                changed = True
    return out


def split_hunyuan_checkpoint(sd: Mapping[str, torch.Tensor]) -> dict[str, StateDict]:
    """Flat keys -> ``{"model", "vae", "conditioner"}`` (split at the first dot; Lightning's
    ``first_stage_model.`` / ``cond_stage_model.`` are the VAE / conditioner). Other groups (e.g.
    ``model_ema``) are kept under their own name."""
    alias = {"first_stage_model": "vae", "cond_stage_model": "conditioner"}
    out: dict[str, StateDict] = {"model": {}, "vae": {}, "conditioner": {}}
    for k, v in strip_prefixes(sd).items():
        head, _, rest = k.partition(".")
        if not rest:
            raise CheckpointError(f"checkpoint key '{k}' has no component prefix (model./vae./conditioner.)")
        out.setdefault(alias.get(head, head), {})[rest] = v
    return out


# ---------------------------------------------------------------------------------------- config inference
def _prefix_of(sd: Mapping[str, Any], suffix: str) -> str | None:
    for k in sd:
        if k.endswith(suffix) and (k == suffix or k[: -len(suffix)].endswith(".")):
            return k[: -len(suffix)]
    return None


def infer_dit_config(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``HunyuanDiT`` constructor arguments implied by a state dict's shapes (reference §2.4); {} if not a DiT."""
    p = _prefix_of(sd, "x_embedder.weight")
    if p is None:
        return {}
    g = lambda name: sd.get(p + name)  # noqa: E731
    hidden, in_ch = g("x_embedder.weight").shape
    blocks = {int(m.group(1)) for k in sd if (m := re.match(re.escape(p) + r"blocks\.(\d+)\.", k))}
    cfg: dict[str, Any] = {"in_channels": int(in_ch), "hidden_size": int(hidden), "depth": len(blocks)}
    if (w := g("blocks.0.attn2.to_k.weight")) is not None:
        cfg["context_dim"] = int(w.shape[1])
    qn = g("blocks.0.attn1.q_norm.weight")
    cfg["qk_norm"] = qn is not None
    if qn is not None:
        cfg["num_heads"] = int(hidden) // int(qn.shape[0])
        cfg["qk_norm_type"] = "layer" if g("blocks.0.attn1.q_norm.bias") is not None else "rms"
    cfg["qkv_bias"] = g("blocks.0.attn1.to_q.bias") is not None
    gates = [k for k in sd if k.startswith(p) and k.endswith("moe.gate.weight")]
    cfg["num_moe_layers"] = len(gates)
    if gates:
        cfg["num_experts"] = int(sd[gates[0]].shape[0])
    if (w := g("blocks.0.mlp.fc1.weight")) is not None:
        cfg["mlp_ratio"] = int(w.shape[0]) // int(hidden)
    return cfg


def infer_vae_config(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``ShapeVAE`` constructor arguments implied by a state dict's shapes (reference §1.6); {} if not a VAE."""
    p = _prefix_of(sd, "post_kl.weight")
    if p is None:
        return {}
    g = lambda name: sd.get(p + name)  # noqa: E731
    width, embed = g("post_kl.weight").shape
    count = lambda pat: len({m.group(1) for k in sd if (m := re.match(re.escape(p) + pat, k))})  # noqa: E731
    cfg: dict[str, Any] = {
        "embed_dim": int(embed),
        "width": int(width),
        "num_decoder_layers": count(r"transformer\.resblocks\.(\d+)\."),
    }
    if g("encoder.input_proj.weight") is not None:
        cfg["num_encoder_layers"] = count(r"encoder\.self_attn\.resblocks\.(\d+)\.")
    qn = g("transformer.resblocks.0.attn.attention.q_norm.weight")
    cfg["qk_norm"] = qn is not None
    if qn is not None:
        cfg["heads"] = int(width) // int(qn.shape[0])
    cfg["qkv_bias"] = g("transformer.resblocks.0.attn.c_qkv.bias") is not None
    if (w := g("geo_decoder.query_proj.weight")) is not None:
        cfg["num_freqs"] = (int(w.shape[1]) - 3) // 6
        if (e := g("encoder.input_proj.weight")) is not None:
            cfg["point_feats"] = int(e.shape[1]) - int(w.shape[1])
    if (w := g("geo_decoder.cross_attn_decoder.mlp.c_fc.weight")) is not None:
        cfg["geo_decoder_mlp_expand_ratio"] = int(w.shape[0]) // int(width)
    cfg["geo_decoder_ln_post"] = g("geo_decoder.ln_post.weight") is not None
    return cfg


def infer_dinov2_config(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """DINOv2 sizes (``conditioner.dinov2``) implied by a state dict's shapes; {} if not DINOv2."""
    p = _prefix_of(sd, "embeddings.patch_embeddings.projection.weight")
    if p is None:
        return {}
    w = sd[p + "embeddings.patch_embeddings.projection.weight"]
    layers = {m.group(1) for k in sd if (m := re.match(re.escape(p) + r"encoder\.layer\.(\d+)\.", k))}
    cfg: dict[str, Any] = {
        "hidden_size": int(w.shape[0]),
        "patch_size": int(w.shape[-1]),
        "num_hidden_layers": len(layers),
    }
    if (pe := sd.get(p + "embeddings.position_embeddings")) is not None:
        side = int(round((pe.shape[1] - 1) ** 0.5))
        cfg["image_size"] = side * cfg["patch_size"]
    return cfg


def _config_hint(sd: Mapping[str, torch.Tensor]) -> str:
    for fn, what in (
        (infer_dit_config, "a DiT"),
        (infer_vae_config, "a ShapeVAE"),
        (infer_dinov2_config, "DINOv2"),
    ):
        cfg = fn(sd)
        if cfg:
            args = ", ".join(f"{k}={v}" for k, v in cfg.items())
            return f" The checkpoint looks like {what} with {args} ({fn.__name__}); set these in the model config."
    return ""


# ------------------------------------------------------------------------------------------------ load into
def load_into(
    module: nn.Module, sd: Mapping[str, torch.Tensor], strict: bool = True, name: str = "model"
) -> tuple[list[str], list[str]]:
    """``module.load_state_dict(sd)`` with a readable :class:`CheckpointError` naming the problem keys.

    Shape mismatches always fail (checked before anything is copied) and suggest the config the
    checkpoint implies; missing/unexpected keys fail when ``strict`` (after the module's own load hooks,
    e.g. the conditioner's key remapping, have run; the module may then be partially loaded).
    Returns ``(missing, unexpected)``.
    """
    own = module.state_dict()
    bad = [
        (k, tuple(v.shape), tuple(own[k].shape))
        for k, v in sd.items()
        if k in own and v.shape != own[k].shape
    ]
    if bad:
        shown = "; ".join(f"{k}: checkpoint {list(a)} vs model {list(b)}" for k, a, b in bad[:_SHOWN])
        raise CheckpointError(
            f"{name}: {len(bad)} tensors have the wrong shape ({shown}"
            f"{'; ...' if len(bad) > _SHOWN else ''}).{_config_hint(sd)}"
        )
    try:
        res = module.load_state_dict(dict(sd), strict=False)
    except RuntimeError as e:  # size mismatches on keys renamed by load hooks
        raise CheckpointError(f"{name}: {str(e).strip()}{_config_hint(sd)}") from e
    missing, unexpected = list(res.missing_keys), list(res.unexpected_keys)
    if strict and (missing or unexpected):
        msg = [f"{name}: checkpoint does not match the model:"]
        for label, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                msg.append(
                    f"{len(keys)} {label} keys ({', '.join(keys[:_SHOWN])}{', ...' if len(keys) > _SHOWN else ''})"
                )
        raise CheckpointError(" ".join(msg) + "." + _config_hint(sd))
    return missing, unexpected


# ------------------------------------------------------------------------------------------------- write
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
