"""``loopprop bench``: row selection, the quick mode, the warm-start row."""

from __future__ import annotations

import pytest

from loopprop import bench


def test_bench_runs_the_rows_it_is_asked_for(capsys):
    out = bench.run(dtype="float32", quick=True, select="sigmoid fwd+bwd, 10^6 values, into")
    assert [name for name, _ in out] == ["sigmoid fwd+bwd, 10^6 values, into buffers"]
    assert set(out[0][1]) >= {"loopprop", "numpy"}
    printed = capsys.readouterr()
    assert "sigmoid fwd+bwd" in printed.out and "(running ...)" in printed.err
    with pytest.raises(ValueError, match="-k: no workload matches"):
        bench.run(quick=True, select="no such workload")


def test_quick_leaves_the_slow_rows_out_unless_named():
    names = [name for name, _ in bench.rows(quick=True)]
    slow = [n for n in names if n.startswith(bench.SLOW_ROWS)]
    assert len(slow) == 3  # LeNet, resnet, the GPT step: each a minute or more
    assert set(bench.SLOW_ROWS) <= {n[:len(s)] for n in slow for s in bench.SLOW_ROWS}


@pytest.mark.heavy  # four runs of loopprop train
def test_warm_start_imports_the_running_loopprop_from_any_folder(tmp_path, monkeypatch):
    """From a folder that holds a checkout named loopprop, the child process once imported it
    (no attribute 'Network') and the error was swallowed."""
    pytest.importorskip("sklearn")
    fake = tmp_path / "loopprop"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('the wrong loopprop')\n")
    monkeypatch.chdir(tmp_path)
    assert bench.warm_start_seconds() > 0
