"""Atomic file and folder writes: a crash never leaves a partial or corrupt output, and never costs a user file."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sculpt4d.errors import InputError

LEGACY_TEMP_AGE_S = 3600.0  # temp folders without a pid in their name count as stale after this long


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name keeps the suffix so writers that infer the format from it (trimesh, PIL, numpy)
    still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)  # mkstemp makes 0600 files; outputs are meant to be shared
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _temp_prefix(path: Path) -> str:
    """Our temp siblings of ``path``: ``.<name>.pid<PID>.<random>.tmp`` (the pid tells a dead run's apart)."""
    return f".{path.name}.pid{os.getpid()}."


def _temp_owner(path: Path, sibling: Path) -> int | None:
    """The pid in ``sibling``'s name if it is one of our temp folders of ``path``; 0 for the legacy naming."""
    m = re.fullmatch(
        rf"\.{re.escape(path.name)}\.(?:pid(\d+)\.)?[A-Za-z0-9_]{{8}}\.(?:old\.)?tmp", sibling.name
    )
    if m is None:
        return None
    return int(m.group(1)) if m.group(1) else 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _merge_back(old: Path, path: Path) -> None:
    """Move every entry of ``old`` that ``path`` lacks into ``path`` (or ``old`` back to ``path``); drop ``old``."""
    if not path.exists():
        os.replace(old, path)
        return
    for entry in old.iterdir():
        if not (path / entry.name).exists():
            os.replace(entry, path / entry.name)
    shutil.rmtree(old, ignore_errors=True)


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove temp folders that a killed earlier run left beside ``path``; returns what was cleaned.

    Only names of :func:`atomic_dir`'s pattern count, and only those whose run is gone (its pid is dead, or
    a legacy name older than an hour). A swapped-out earlier result (``.old.tmp``) is merged back first, so
    no file in it is lost.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    cleaned = []
    for sib in path.parent.iterdir():
        pid = _temp_owner(path, sib)
        if pid is None or not sib.is_dir():
            continue
        stale = not _alive(pid) if pid else time.time() - sib.stat().st_mtime > LEGACY_TEMP_AGE_S
        if not stale:
            continue
        if sib.name.endswith(".old.tmp"):
            _merge_back(sib, path)
        else:
            shutil.rmtree(sib, ignore_errors=True)
        cleaned.append(sib)
    return cleaned


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; it replaces ``path`` only if the block succeeds.

    An existing folder at ``path`` is swapped out in one rename; its entries the new folder does not
    hold (a user's own files) are moved back, so only same-named outputs are replaced. A file at ``path``
    is never touched (:class:`FileExistsError`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700 folders; outputs are meant to be shared
        if path.exists() and (not overwrite or not path.is_dir()):
            raise FileExistsError(f"{path} already exists")
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".old.tmp", dir=path.parent))
            os.replace(path, old)  # one rename each way: ``path`` is never half-written
            os.replace(tmp, path)
            _merge_back(old, path)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _overlaps(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` are the same folder or one lies inside the other."""
    return a == b or a in b.parents or b in a.parents


def _nearest_existing(path: Path) -> Path:
    for p in (path, *path.parents):
        if p.exists():
            return p
    return Path("/")


def probe_writable(path: Path) -> None:
    """Write and remove a temp file beside ``path`` (and in it, if it is a folder); :class:`InputError` if not."""
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise InputError(f"output_dir={path}: '{base}' is a file, so no folder can be created below it")
    for folder in (base, path) if path.is_dir() else (base,):
        try:
            fd, probe = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".probe.tmp", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise InputError(f"output_dir={path}: cannot write in '{folder}' ({e.strerror or e})") from None


def check_output_dir(
    output_dir: str | os.PathLike,
    marker: str,
    inputs: Iterable[str | os.PathLike] = (),
    overwrite: bool = False,
    own_dirs: Iterable[str | os.PathLike] = (),
) -> Path:
    """Refuse an output folder whose use would cost a user's files; probe that it is writable.

    Refused: a file; a folder that is, holds or lies inside one of ``inputs``; a non-empty folder without
    ``marker`` (the file every earlier result of this task holds) unless ``overwrite``. ``own_dirs`` are
    folders this run already owns (Hydra's job folder in a sweep).
    """
    out = Path(output_dir).expanduser()
    full = out.resolve()
    if out.is_file() or (out.exists() and not out.is_dir()):
        raise InputError(f"output_dir={out} is an existing file; pass a folder path (the file is left as is)")
    for inp in inputs:
        if _overlaps(full, Path(inp).expanduser().resolve()):
            raise InputError(
                f"output_dir={out} overlaps the input '{inp}'; writing there would replace input files — "
                "pass another output_dir"
            )
    own = {Path(d).resolve() for d in own_dirs}
    if out.is_dir() and full not in own and not overwrite and not (out / marker).is_file():
        if any(out.iterdir()):
            raise InputError(
                f"output_dir={out} is a non-empty folder that holds no earlier result ({marker}); pass "
                "another output_dir, or overwrite=true to write into it (its other files are kept)"
            )
    probe_writable(out)
    return out


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Write JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, sort_keys=False) + "\n")
