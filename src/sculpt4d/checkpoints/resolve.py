"""Resolve a checkpoint spec: a local path as given, or ``hf://owner/repo[/subfolder]`` (downloaded and cached)."""

from __future__ import annotations

import os
from pathlib import Path

from sculpt4d.errors import CheckpointError


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
