"""The README and the docs cannot drift from the code: every ```python block in them runs here,
as it stands, and every excerpt of a kernel they quote is still in that kernel's source."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)


def _blocks(lang: str):
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for match in (m for m in FENCE.finditer(text) if m.group(1) == lang):
            line = text.count("\n", 0, match.start()) + 1
            yield pytest.param(path, match.group(2), id=f"{path.name}:{line}")


@pytest.mark.heavy  # trains on digits: minutes with the JIT off
@pytest.mark.parametrize("path,code", list(_blocks("python")))
def test_python_block_runs_as_written(path, code, tmp_path, monkeypatch):
    pytest.importorskip("sklearn")  # the README's examples load the bundled digits
    monkeypatch.chdir(tmp_path)  # blocks may save files
    exec(compile(code, f"{path.name} block", "exec"), {"__name__": "__readme__"})


def test_every_doc_has_at_least_one_checked_block():
    assert any(True for _ in _blocks("python")), "no ```python block found in README/docs"


QUOTE = re.compile(r"#\s*(loopprop/\S+\.py)")
EXCERPTS = [p for p in _blocks("") if QUOTE.match(p.values[1])]


def test_the_readme_quotes_a_kernel():
    assert EXCERPTS, "the README's kernel excerpt is gone (or no longer starts with its path)"


@pytest.mark.parametrize("path,code", EXCERPTS)
def test_quoted_kernel_excerpts_are_in_the_source(path, code):
    """A plain ``` block whose first line is ``# loopprop/…py …`` quotes that file: each of its
    other lines must appear in it (indentation aside), so the quote cannot go stale."""
    first, *rest = code.splitlines()
    m = QUOTE.match(first)
    source = {ln.strip() for ln in (ROOT / m.group(1)).read_text(encoding="utf-8").splitlines()}
    missing = [ln for ln in rest if ln.strip() and ln.strip() not in source]
    assert not missing, f"{path.name}: lines not found in {m.group(1)}: {missing}"
