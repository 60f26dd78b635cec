"""The README and the docs cannot drift from the code: every ```python block in them runs here,
as it stands, and every excerpt of a kernel they quote is still in that kernel's source."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md",
        *sorted((ROOT / "docs").glob("*.md"))]
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


# -- citations: no file that is not in the repository, no section that is not in formulas.md --

#: text a reader may follow: the package, the tests, the examples, the docs, the benchmarks
CITING = sorted({*ROOT.glob("loopprop/**/*.py"), *ROOT.glob("tests/*.py"),
                 *ROOT.glob("examples/*.py"), *ROOT.glob("asv_bench/**/*.py"), *DOCS})
PATH = re.compile(r"(?<![\w./-])((?:loopprop|tests|docs|examples|asv_bench|\.ci)/[\w./-]*\.\w+"
                  r"|[\w-]+\.md)\b")
SECTION = re.compile(r'docs/formulas\.md, ((?:"[^"]+"(?: and )?)+)')


def _numbers() -> set[int]:
    """The section numbers of formulas.md's headings (``§5–§7`` covers 5, 6 and 7)."""
    text = (ROOT / "docs" / "formulas.md").read_text(encoding="utf-8")
    out = set()
    for a, b in re.findall(r"^#+\s*§(\d+)(?:–§(\d+))?", text, re.M):
        out.update(range(int(a), int(b or a) + 1))
    return out


def _headings() -> list[str]:
    text = (ROOT / "docs" / "formulas.md").read_text(encoding="utf-8")
    return [re.sub(r"^#+\s*(?:§[\d–]+(?:–§\d+)?\s+)?", "", ln).strip()
            for ln in text.splitlines() if ln.startswith("#")]


@pytest.mark.parametrize("path", CITING, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_cited_file_exists(path):
    """A docstring or doc that names a file names one that is in the repository (the guide
    the project started from and the design notes are not: the docs say it in their own words)."""
    text = path.read_text(encoding="utf-8")
    missing = set()
    for m in PATH.finditer(text):
        name = m.group(1).rstrip(".")
        if "*" in name or name.endswith("/"):
            continue
        where = ROOT / name if "/" in name else None
        if where is None:  # a bare Markdown file name: one of the repository's
            if not any(p.name == name for p in ROOT.rglob(name)):
                missing.add(name)
        elif not where.exists():
            missing.add(name)
    assert not missing, f"{path.relative_to(ROOT)} cites files that do not exist: {sorted(missing)}"


@pytest.mark.parametrize("path", [p for p in CITING if p.name != "test_docs.py"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_cited_formula_section_exists(path):
    heads = _headings()
    # a citation may wrap: join the lines (and a comment's or docstring's indentation)
    text = re.sub(r"\s*\n\s*(?:#\s*)?", " ", path.read_text(encoding="utf-8"))
    for m in re.finditer(r"docs/formulas\.md,? \(?(§[\d–§, ]+)", text):
        for n in re.findall(r"§(\d+)", m.group(1)):
            assert int(n) in _numbers(), f"{path.relative_to(ROOT)}: no §{n} in docs/formulas.md"
    for m in SECTION.finditer(text):
        for name in re.findall(r'"([^"]+)"', m.group(1)):
            assert name in heads, (f"{path.relative_to(ROOT)} cites docs/formulas.md, "
                                   f"\"{name}\": no such section ({heads})")


def test_no_kernel_cites_the_guide():
    """The kernels cite docs/formulas.md, not the guide the project started from."""
    offenders = [str(p.relative_to(ROOT)) for p in ROOT.glob("loopprop/**/*.py")
                 if re.search(r"\bguide\b", p.read_text(encoding="utf-8"))]
    assert not offenders, offenders


def test_every_layer_kind_has_a_formula_section():
    heads = " ".join(_headings()).lower()
    for kind in ("dense", "activations", "losses", "convolution", "pooling", "dropout",
                 "batch normalization", "layer normalization", "residual", "embeddings",
                 "attention", "optimizers", "caches"):
        assert kind in heads, kind
