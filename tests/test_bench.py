"""``loopprop bench``: row selection, the quick mode, the warm-start row."""

from __future__ import annotations

import pytest

from loopprop import bench
import math
import numpy as np
from loopprop import vectorized as vec


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
    assert len(slow) == 4  # LeNet, resnet, the GPT and char-LSTM steps: each a minute or more
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


@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid"])
def test_lean_numpy_epoch_equals_the_readable_twin(act):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((8, 45)), rng.integers(0, 3, 45)
    acts = [act, "softmax"]
    W1, W2 = rng.standard_normal((5, 8)), rng.standard_normal((3, 5))
    p1 = [(W1.copy(), np.zeros(5)), (W2.copy(), np.zeros(3))]
    p2 = [(W1.copy(), np.zeros(5)), (W2.copy(), np.zeros(3))]
    l1 = vec.train_epoch(p1, X, y, 7, 0.1, acts)
    l2 = vec.train_epoch_lean(p2, X, y, 7, 0.1, acts)
    assert abs(l1 - l2) <= 1e-12 * abs(l1)
    for (a, b), (c, d) in zip(p1, p2):
        np.testing.assert_allclose(c, a, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(d, b, rtol=1e-12, atol=1e-14)


def test_lean_numpy_epoch_makes_no_weight_sized_temporary_per_batch():
    """The baseline once wrote ``dW = dZ @ A.T`` and ``W -= lr * dW``: two fresh arrays the size
    of W per batch, each a new mapping above glibc's mmap threshold, whose page faults doubled
    the NumPy epoch on a VM (168 against 48 ms) and made every ratio against it depend on the
    host. Now one buffer per layer, made once: the traced peak stays near one W, not two."""
    import tracemalloc

    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((784, 64)), rng.integers(0, 10, 64)
    params = [(rng.standard_normal((512, 784)) * 0.01, np.zeros(512)),
              (rng.standard_normal((10, 512)) * 0.01, np.zeros(10))]
    w_bytes = params[0][0].nbytes  # 3.2 MB; one batch's other arrays are ~0.6 MB
    tracemalloc.start()
    try:
        vec.train_epoch_lean(params, X, y, 64, 0.01, ["relu", "softmax"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * w_bytes, f"peak {peak / 1e6:.2f} MB against W's {w_bytes / 1e6:.2f} MB"


@pytest.mark.parametrize("mode", ["alloc", "out"])
@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_bench_elementwise_workloads_compute_the_same_thing(name, mode):
    """Both sides of a benchmark row compute dZ = dA ⊙ f'(Z), like for like."""
    from loopprop.bench import elementwise_workload

    fns = elementwise_workload(name, 4000, "float64", mode)
    np.testing.assert_allclose(fns["loopprop"](), fns["numpy"](), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("mode", ["alloc", "out"])
def test_bench_dense_workloads_compute_the_same_thing(mode):
    from loopprop.bench import dense_workload

    fns = dense_workload(40, 30, 20, "float64", mode)
    for mine, ref in zip(fns["loopprop"](), fns["numpy"]()):
        np.testing.assert_allclose(mine, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.heavy  # three steps of a small GPT: minutes with the JIT off
def test_gpt_workload_reports_one_time_per_step():
    """The GPT benchmark rows time single steps and leave each call's first step out (it pays
    the optimizer moments' first touch): both sides must report one time per step."""
    from loopprop.bench import best_step_time, gpt_workload

    fns = gpt_workload("small", steps=3, with_torch=False)
    seconds = fns["loopprop"]()
    assert len(seconds) == 3 and all(s > 0 for s in seconds)
    best = best_step_time(fns, rounds=1)
    assert set(best) == {"loopprop"} and math.isfinite(best["loopprop"])
    with pytest.raises(ValueError, match="two steps"):
        best_step_time({"one": lambda: [1.0]}, rounds=1)


@pytest.mark.heavy  # trains a 2 x 256 LSTM: minutes with the JIT off
def test_char_rnn_workload_reports_one_time_per_step():
    fns = bench.char_rnn_workload(steps=3, with_torch=False)
    seconds = fns["loopprop"]()
    assert len(seconds) == 3 and min(seconds) > 0


def test_bench_lstm_workload_computes_the_same_thing():
    """The LSTM row's three implementations compute one layer's gradients: loopprop's tuned
    kernels and the lean NumPy LSTM agree (float64, a small size)."""
    from loopprop import bench

    fns = bench.lstm_workload(d=5, n_h=4, T=3, m=2, dtype="float64", with_torch=False)
    ours, lean = fns["loopprop"](), fns["numpy"]()
    for name, a, b in zip(("dW_x", "dW_h", "db", "dX", "dh0", "dc0"), ours, lean):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12, err_msg=name)
