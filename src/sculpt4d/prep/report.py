"""What a prep run reports: ``prep_failures.json`` and the summary table."""

from __future__ import annotations

from pathlib import Path

from sculpt4d.utils.io import write_json


def write_failure_report(out_root: Path, results: list[dict]) -> Path:
    failed = [{k: r.get(k) for k in ("name", "source", "stage", "error", "traceback")} for r in results
              if r["status"] == "failed"]  # fmt: skip
    path = Path(out_root) / "prep_failures.json"
    write_json(path, dict(num_objects=len(results), num_failed=len(failed), failed=failed))
    return path


def print_summary(results: list[dict], out_root: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    ok = sum(r["status"] == "ok" for r in results)
    con.print(f"[bold]prep[/bold]: {ok}/{len(results)} objects ok -> {out_root}")
    failed = [r for r in results if r["status"] == "failed"]
    if failed:
        tab = Table(title=f"{len(failed)} failed (details in {Path(out_root) / 'prep_failures.json'})")
        for c in ("object", "stage", "error"):
            tab.add_column(c)
        for r in failed:
            tab.add_row(r["name"], str(r.get("stage")), r.get("error", "")[:200])
        con.print(tab)
