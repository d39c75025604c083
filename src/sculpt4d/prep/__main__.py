"""Hydra CLI for data preparation: ``python -m sculpt4d.prep input=<glb|folder> output_dir=<root>``.

See conf/prep.yaml for every option (stages, input_mode, workers, shard, sizes, camera ranges).
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from sculpt4d.errors import FailedObjectsError, InputError
from sculpt4d.prep.params import PrepParams
from sculpt4d.prep.report import print_summary
from sculpt4d.prep.runner import discover, run, shard_items


def shard_spec(cfg: DictConfig) -> str | None:
    if cfg.shard is None:
        return None
    if cfg.get("shard_count") is not None:
        return f"{int(cfg.shard)}/{int(cfg.shard_count)}"
    return str(cfg.shard)


def run_prep(cfg: DictConfig) -> list[dict]:
    """Run the configured stages over the (sharded) input list; returns per-object results.

    No GLB found raises :class:`InputError` (exit 2, nothing written); failed objects raise
    :class:`FailedObjectsError` (exit 1, ``prep_failures.json`` kept) unless ``allow_failures``.
    """
    if cfg.input_mode not in ("render", "hybrid", "export"):
        raise InputError(f"input_mode must be render, hybrid or export, got {cfg.input_mode!r}")
    found = discover(cfg.input)
    if not found:
        raise InputError(f"input {cfg.input}: no .glb or .gltf file found (searched the folder recursively)")
    inputs = shard_items(found, shard_spec(cfg))
    workers = int(cfg.workers) if cfg.workers is not None else (os.cpu_count() or 1)
    out = Path(cfg.output_dir)
    results = run(
        inputs, out, PrepParams.from_config(cfg), tuple(cfg.stages), workers=workers,
        overwrite=bool(cfg.overwrite), show_progress=bool(cfg.progress),
    )  # fmt: skip
    print_summary(results, out)
    failed = sum(r["status"] == "failed" for r in results)
    if failed and not bool(cfg.get("allow_failures", False)):
        raise FailedObjectsError(
            f"prep: {failed} of {len(results)} objects failed (details in {out / 'prep_failures.json'}); "
            "pass allow_failures=true when some failures are expected"
        )
    return results


def main() -> None:
    from sculpt4d.config import hydra_main

    hydra_main("prep", run_prep, resolve=True)


if __name__ == "__main__":
    main()
