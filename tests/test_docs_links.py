"""Every relative link in the README and docs/ points at a file that exists and, with ``#anchor``, at a heading
of that file (GitHub's heading slugs), so moving a section cannot leave a dead link behind."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "data/checkpoints/tiny/README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def heading_slugs(markdown: str) -> set[str]:
    """GitHub's anchors: lower case, punctuation other than ``-`` and ``_`` dropped, spaces to ``-``."""
    slugs = set()
    for line in markdown.splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            text = m.group(1).strip().lower()
            slugs.add(re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", text)))
    return slugs


@functools.cache
def anchors_of(doc: Path) -> set[str]:
    """The heading slugs of one file, read once however many links point into it."""
    return heading_slugs(doc.read_text())


def test_heading_slugs_follow_github():
    text = "## The tiny recipe (`make data-tiny && make train-tiny`)\n### Held-out benchmark (`x`)\n"
    assert heading_slugs(text) == {"the-tiny-recipe-make-data-tiny--make-train-tiny", "held-out-benchmark-x"}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path):
    text = doc.read_text()
    dead = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http(s), mailto
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            dead.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors_of(file):
            dead.append(target)
    assert not dead, f"{doc.relative_to(ROOT)}: dead links {dead}"
