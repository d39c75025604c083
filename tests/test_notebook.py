"""notebooks/quickstart.ipynb runs top to bottom on CPU with the shipped tiny model."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_notebook_executes(monkeypatch):
    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    monkeypatch.setenv("SCULPT4D_NB_STEPS", "4")  # few denoising steps: the test checks the walkthrough runs
    monkeypatch.setenv("SCULPT4D_NB_RESOLUTION", "48")
    if "MPLBACKEND" not in os.environ:
        monkeypatch.setenv("MPLBACKEND", "Agg")
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the input frames and the mesh strip
