"""Shared helpers for the benchmark scripts: a plain-text table printer and a ``--json PATH`` writer."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Allow `python benchmarks/<name>.py` from a source checkout without `pip install -e .`.
_SRC = Path(__file__).resolve().parents[1] / "src"
if _SRC.is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

from sculpt4d.utils.io import write_json as _write_json  # noqa: E402

__all__ = ["ROOT", "add_json_arg", "format_table", "print_table", "row_settings", "timing", "write_json"]
ROOT = Path(__file__).resolve().parents[1]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def format_table(rows: list[dict[str, Any]], title: str | None = None) -> str:
    """Render ``rows`` (dicts sharing keys; missing cells print empty) as an aligned text table."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    cells = [[_fmt(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = []
    if title:
        lines.append(title)
    lines.append("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells)
    return "\n".join(lines)


def print_table(rows: list[dict[str, Any]], title: str | None = None) -> None:
    """Print ``rows`` as an aligned table (see :func:`format_table`)."""
    print(format_table(rows, title), flush=True)
    print(flush=True)


def add_json_arg(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the common ``--json PATH`` option (write the measured numbers as JSON)."""
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON to PATH")
    return parser


def write_json(path: str | os.PathLike | None, payload: Any) -> None:
    """Write ``payload`` atomically to ``path`` (no-op when ``path`` is None)."""
    if path is None:
        return
    _write_json(path, payload)
    print(f"wrote {path}", flush=True)


@contextlib.contextmanager
def timing(
    obj: Any, name: str, bucket: dict[str, float], key: str, keep: dict[str, Any] | None = None
) -> Iterator[None]:
    """Add the wall time of every call of ``obj.name`` to ``bucket[key]`` while the context is open
    (``keep[key]``: the last call's return value)."""
    original = getattr(obj, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            out = original(*args, **kwargs)
            if keep is not None:
                keep[key] = out
            return out
        finally:
            bucket[key] += time.perf_counter() - t0

    setattr(obj, name, wrapped)
    try:
        yield
    finally:
        if obj.__dict__.get(name) is wrapped and not isinstance(obj, type) and hasattr(type(obj), name):
            delattr(obj, name)  # instance attribute over a method: drop it
        else:
            setattr(obj, name, original)


def row_settings(name: str) -> tuple[list[str], dict[str, Any]]:
    """Config overrides and pipeline settings (backend, threads) of one predict/evaluate row name."""
    from sculpt4d.models.attention.backends import BACKENDS

    if name == "base":
        return [], {}
    if name in BACKENDS:
        return [], {"backend": name}
    if name == "flat":
        return ["hierarchical=false"], {}
    if name == "lowvram":
        return [], {"low_vram": True}
    if name.startswith("compile"):  # compile = torch.compile's default mode, compile-<mode> another one
        return [], {"compile": name.partition("-")[2] or "default"}
    if name in ("bf16decode", "fp32decode"):
        return [f"decode_dtype={name[:4]}"], {}
    for prefix, key in (("steps", "num_steps"), ("res", "octree_resolution"), ("chunks", "num_chunks")):
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            return [f"{key}={name[len(prefix) :]}"], {}
    if name.startswith("until") and name[5:].isdigit():  # until50: CFG only below flow time 0.50
        return [f"guidance_until={int(name[5:]) / 100:g}"], {}
    if name.startswith("samples") and name[7:].isdigit():
        return [f"num_samples={name[7:]}"], {}
    if name.startswith("minres") and name[6:].isdigit():
        return [f"decode_min_resolution={name[6:]}"], {}
    if name.startswith("threads") and name[7:].isdigit():
        return [], {"threads": int(name[7:])}
    raise SystemExit(f"unknown row '{name}'")
