"""The README and the docs cannot drift from the code: every fenced block of every doc is
checked -- ```python blocks run here as they stand, ```bash blocks name commands the parser
accepts and extras pyproject.toml has, an excerpt of a kernel is still in that kernel's source,
the README's layout names every module -- and the formula sections are those the layer registry
asks for."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import loopprop as lp
from loopprop.layers import registry

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
    if "mpi4py" in code:
        pytest.importorskip("mpi4py", reason='the data-parallel examples need "loopprop[dist]"')
    monkeypatch.chdir(tmp_path)  # blocks may save files
    exec(compile(code, f"{path.name} block", "exec"), {"__name__": "__readme__"})


def _all_blocks():
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            yield path, line, match.group(1), match.group(2)


def _kind(path: Path, lang: str, code: str) -> str | None:
    """How a fenced block is checked, or ``None`` when nothing checks it."""
    if lang == "python":
        return "runs"  # test_python_block_runs_as_written
    if lang == "bash":
        return "commands"  # test_bash_blocks_name_real_commands_and_extras
    if lang == "" and QUOTE.match(code):
        return "kernel excerpt"  # test_quoted_kernel_excerpts_are_in_the_source
    if lang == "" and code.startswith("loopprop/_jit.py"):
        return "layout"  # test_the_readme_layout_names_every_module, test_every_cited_file_exists
    if lang == "" and path.name == "README.md" and "test accuracy" in code:
        return "quoted output"  # tests/test_examples.py compares the README's quoted outputs
    if lang == "" and path.name == "formulas.md":
        return "formula"  # the derivations; each kernel's docstring cites its section
    return None


def test_every_block_of_every_doc_is_checked():
    unchecked = [f"{path.name}:{line} ({lang or 'plain'})"
                 for path, line, lang, code in _all_blocks() if _kind(path, lang, code) is None]
    assert not unchecked, f"blocks no test checks: {unchecked}"
    assert any(True for _ in _blocks("python")), "no ```python block found in README/docs"


def _command_lines(code: str):
    """Each command of a bash block (comments, continuations and ``&&`` chains split)."""
    for line in code.replace("\\\n", " ").splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        for part in line.split("&&"):
            yield shlex.split(part.strip())


BASH = list(_blocks("bash"))
EXTRAS = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
             ["project"]["optional-dependencies"])


@pytest.mark.parametrize("path,code", BASH)
def test_bash_blocks_name_real_commands_and_extras(path, code):
    """Every ``loopprop …`` line parses with the command's own parser (no option or choice that
    does not exist), and every ``pip install -e ".[…]"`` names extras pyproject.toml defines."""
    from loopprop.cli import build_parser

    for argv in _command_lines(code):
        while argv and "=" in argv[0] and not argv[0].startswith("-"):
            argv = argv[1:]  # VAR=value before the command
        if argv[:2] == ["mpiexec", "-n"]:
            argv = argv[3:]  # mpiexec -n N loopprop …: the command it starts
        if not argv:
            continue
        if argv[0] == "loopprop":
            try:
                build_parser().parse_args(argv[1:])
            except SystemExit as exc:
                pytest.fail(f"{path.name}: `{shlex.join(argv)}` does not parse ({exc})")
        if argv[:3] == ["pip", "install", "-e"]:
            m = re.match(r"\.\[([\w,]+)\]$", argv[3])
            assert m, argv
            unknown = set(m.group(1).split(",")) - EXTRAS
            assert not unknown, f"{path.name}: no extras {unknown} in pyproject.toml"


def test_the_command_check_can_fail():
    from loopprop.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--model", "transformer"])


def test_the_readme_layout_names_every_module():
    """The README's layout lists every module of the package (by path, or by file name on its
    folder's line), so that a newcomer finds each one there."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = next(code for _, _, lang, code in _all_blocks()
                  if lang == "" and code.startswith("loopprop/_jit.py"))
    missing = []
    for py in sorted((ROOT / "loopprop").rglob("*.py")):
        rel = py.relative_to(ROOT).as_posix()
        if py.name in ("__init__.py", "__main__.py"):
            continue
        folder = py.parent.relative_to(ROOT).as_posix() + "/"
        if rel in layout or (folder in layout and re.search(rf"(?<![\w/]){re.escape(py.name)}",
                                                            layout)):
            continue
        missing.append(rel)
    assert not missing, f"the README's layout does not name {missing}"
    assert "## Layout" in text


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
    """Each kind of the registry names its section of docs/formulas.md: it must be there."""
    heads = _headings()
    for kind in registry.REGISTRY:
        name = re.sub(r"^§[\d–§]+\s+", "", kind.formulas)
        assert name in heads, f"{kind.name}: no section \"{kind.formulas}\" in docs/formulas.md"


def test_the_sections_beyond_the_layer_kinds_are_there():
    """What the backprop guide derives besides the layers: the chain rule, one neuron, the
    losses, the optimizers, the worked example, the common mistakes and the caches."""
    heads = " ".join(_headings()).lower()
    for topic in ("chain rule", "one neuron", "losses", "optimizers", "worked example",
                  "common mistakes", "caches"):
        assert topic in heads, topic


def test_modules_named_in_the_readme_are_reachable():
    code = ("import loopprop as lp; lp.datasets.load; lp.vectorized.dense_forward; "
            "lp.diagrams.to_mermaid; lp.bench.best_time; lp.explain; lp.gradcheck")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    import re

    for name in set(re.findall(r"`loopprop\.(\w+)", readme)):
        assert hasattr(lp, name), f"the README names loopprop.{name}"
