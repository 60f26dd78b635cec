"""Data-parallel training on MPI (loopprop/distributed.py, loopprop/shards.py).

In this process: a communicator of one rank (``MPI.COMM_SELF``) takes the data-parallel path
and must give bitwise the single-process results; the refusals and the missing extra. Under
``mpiexec -n 2`` and ``-n 3`` (uneven and empty shards): ten steps of an MLP, CNN, GPT and LSTM
agree with one process to 1e-12 and are bitwise reproducible; a rank that raises, produces NaN
or is killed ends the job quickly with rank 0's message, and the saved file survives.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numba
import numpy as np
import pytest

import mpi_cases
import loopprop as lp
from loopprop import Network, models
from loopprop.distributed import shard
from loopprop.layers import BatchNorm, Dense, ReLU, Softmax

HERE = os.path.dirname(os.path.abspath(__file__))


def _mpi():
    return pytest.importorskip("mpi4py.MPI", reason="mpi4py not installed: pip install "
                               '"loopprop[dist]" runs the data-parallel tests')


def _mpiexec() -> str:
    _mpi()
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = beside if os.path.exists(beside) else shutil.which("mpiexec")
    if found is None:
        pytest.skip("no mpiexec (the mpich wheel of loopprop[dist] brings one)")
    return found


# ------------------------------------------------------------------------------ in process


@pytest.mark.parametrize("p,size", [(0, 1), (1, 2), (2, 3), (5, 3), (1, 7)])
def test_shards_partition_every_batch(p, size):
    for M in range(0, 40):
        parts = [shard(r, size, M) for r in range(size)]
        assert parts[0][0] == 0 and parts[-1][1] == M
        assert all(parts[r][1] == parts[r + 1][0] for r in range(size - 1))
        sizes = [hi - lo for lo, hi in parts]
        assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("shape", [(5, 12), (2, 3, 3, 12)])
def test_a_share_of_a_batch_draws_the_batchs_dropout_masks(shape):
    from loopprop.kernels.dropout import _dropout_forward

    A = np.random.default_rng(0).standard_normal(shape)
    whole, mask = np.empty_like(A), np.empty_like(A)
    _dropout_forward(whole, mask, A, 0.4, 77, 0, shape[-1])
    ref_out, ref_mask = lp.dropout_forward(A, 0.4, 77)  # the public function: the flat index
    assert np.array_equal(mask, ref_mask) and np.array_equal(whole, ref_out)
    for lo, hi in ((0, 5), (5, 7), (7, 12), (3, 4)):
        part = np.ascontiguousarray(A[..., lo:hi])
        out, got = np.empty_like(part), np.empty_like(part)
        _dropout_forward(out, got, part, 0.4, 77, lo, shape[-1])
        assert np.array_equal(got, mask[..., lo:hi]) and np.array_equal(out, whole[..., lo:hi])
    assert 0 < np.count_nonzero(mask) < mask.size  # some dropped, some kept


@pytest.mark.parametrize("case", ["mlp", pytest.param("wide", marks=pytest.mark.heavy), "cnn",
                                  "gpt", "lstm"])  # wide: a minute as Python (JIT off)
def test_one_rank_is_bitwise_the_single_process_fit(case):
    MPI = _mpi()
    alone, ranked = mpi_cases.CASES[case](None), mpi_cases.CASES[case](MPI.COMM_SELF)
    assert np.array_equal(alone._theta, ranked._theta)
    for key in ("loss", "grad_norm", "lr"):
        assert alone.history[key] == ranked.history[key], key


def test_one_rank_validation_and_history_match():
    MPI = _mpi()
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((6, 70)), rng.integers(0, 3, 70)
    h = [models.mlp(6, [5], 3, seed=1).fit(X, y, epochs=2, batch_size=16, progress=False,
                                           validation=(X[:, :25], y[:25]), comm=comm)
         for comm in (None, MPI.COMM_SELF)]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert h[0][key] == h[1][key], key


def test_batch_norm_is_refused_with_the_fix():
    MPI = _mpi()
    net = Network([Dense(4), BatchNorm(), ReLU(), Dense(2), Softmax()], loss="cross_entropy",
                  input_shape=(3,))
    before = net._theta.copy()
    with pytest.raises(ValueError, match="comm: BatchNorm.*LayerNorm"):
        net.fit(np.ones((3, 8)), np.zeros(8, int), epochs=1, comm=MPI.COMM_SELF)
    assert np.array_equal(net._theta, before)


def test_a_comm_that_is_not_a_communicator_is_named():
    _mpi()
    net = models.mlp(3, [4], 2)
    with pytest.raises(TypeError, match="comm: expected an mpi4py intracommunicator"):
        net.fit(np.ones((3, 8)), np.zeros(8, int), epochs=1, comm="world")


def test_without_mpi4py_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    net = models.mlp(3, [4], 2)
    with pytest.raises(ImportError, match=r"loopprop\[dist\]"):
        net.fit(np.ones((3, 8)), np.zeros(8, int), epochs=1, comm=object())


# ------------------------------------------------------------------------------ mpiexec
# (compiled code only: under NUMBA_DISABLE_JIT=1 each rank would run the kernels as Python)

needs_jit = pytest.mark.skipif(numba.config.DISABLE_JIT, reason="ranks run compiled code")


def _run(n: int, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([_mpiexec(), "-n", str(n), sys.executable, *args],
                          capture_output=True, text=True, timeout=timeout)


CASES = ["mlp", "wide", "cnn", "gpt", "lstm"]


@pytest.fixture(scope="module")
def ranked_runs(tmp_path_factory):
    """Every case trained in three launches (one launch runs them all: each launch costs
    seconds of start-up): two on two ranks, one on three. ``{run: {case: θ}}``."""
    if numba.config.DISABLE_JIT:
        pytest.skip("ranks run compiled code")
    where = tmp_path_factory.mktemp("ranked")
    runs = {}
    for n, name in ((2, "a"), (2, "b"), (3, "c")):
        r = _run(n, os.path.join(HERE, "mpi_cases.py"), ",".join(CASES),
                 str(where / f"{name}-CASE.npy"))
        assert r.returncode == 0, r.stderr
        runs[name] = {case: np.load(where / f"{name}-{case}.npy") for case in CASES}
    return runs


@needs_jit
@pytest.mark.parametrize("case", CASES)
def test_ranks_agree_with_one_process_and_repeat_bitwise(case, ranked_runs):
    alone = mpi_cases.CASES[case](None)._theta
    runs = {name: thetas[case] for name, thetas in ranked_runs.items()}
    assert np.array_equal(runs["a"], runs["b"])  # two runs on two ranks: the same bits
    for name in ("a", "c"):  # two and three ranks against one process
        np.testing.assert_allclose(runs[name], alone, rtol=0, atol=1e-12)


@needs_jit
def test_ranks_with_different_options_stop_with_rank_0s_message(tmp_path):
    r = _run(2, os.path.join(HERE, "mpi_cases.py"), "mismatch", str(tmp_path / "x-CASE.npy"),
             timeout=120)
    assert r.returncode != 0
    assert "rank 1 trains with lr = 0.02 but rank 0 with 0.01" in r.stderr


def _train(mode: str, *args: str) -> subprocess.CompletedProcess:
    return _run(2, os.path.join(HERE, "mpi_fault.py"), mode, "train", "--data-parallel",
                "--epochs", "2", "--no-progress", *args, timeout=120)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two epochs of the digits MLP on two ranks, saved: ``(path, the run)``. Only rank 0
    writes, one file."""
    if numba.config.DISABLE_JIT:
        pytest.skip("ranks run compiled code")
    where = tmp_path_factory.mktemp("trained")
    saved = where / "model.npz"
    first = _train("none", "--save", str(saved))
    assert first.returncode == 0, first.stderr
    assert sorted(os.listdir(where)) == ["model.npz"]
    assert first.stdout.count("saved ") == 1
    return saved, first


@needs_jit
@pytest.mark.parametrize("mode,said", [
    ("raise", "rank 1: ZeroDivisionError: injected on purpose"),
    ("nan", "rank 1: its gradient holds NaN or Inf in layer 1 (1:Dense.W)"),
    ("kill", None)])
def test_a_failing_rank_ends_the_job_and_the_saved_file_survives(mode, said, trained, tmp_path):
    saved = tmp_path / "model.npz"
    shutil.copy(trained[0], saved)
    before = saved.read_bytes()
    r = _train(mode, "--resume", str(saved), "--save", str(saved))
    assert r.returncode != 0
    if said is not None:
        lines = [line for line in r.stderr.splitlines() if line.startswith("loopprop:")]
        assert lines == [f"loopprop: error: data-parallel training stopped at step "
                         f"{mpi_fault_step()} on all 2 ranks: {said}"], r.stderr
        assert "Traceback" not in r.stderr
    else:  # killed outright: mpiexec ends the others and says which process died
        assert "Killed" in r.stdout + r.stderr
    assert saved.read_bytes() == before
    Network.load(saved)


@needs_jit
def test_an_error_on_one_rank_outside_the_steps_aborts_the_whole_job():
    r = _train("early")  # rank 0 meanwhile waits for rank 1 in Ranks.start's allgather
    assert r.returncode != 0
    said = [line for line in r.stderr.splitlines() if line.startswith("loopprop:")]
    assert said == ["loopprop: error (rank 1 of 2): injected before training"], r.stderr


def mpi_fault_step() -> int:
    import mpi_fault

    return mpi_fault.FAULT_STEP


@needs_jit
def test_resumed_data_parallel_run_continues_from_the_file(trained):
    saved, first = trained
    r = _train("none", "--resume", str(saved))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(f"resuming from {saved}") == 1
    # the same seed and options: only the weights it starts from differ
    assert _test_loss(r.stdout) < _test_loss(first.stdout)


def _test_loss(stdout: str) -> float:
    return float(stdout.split("test loss ")[1].split(",")[0])


@needs_jit
def test_ctrl_c_stops_every_rank_after_the_same_step_and_rank_0_saves(tmp_path):
    import signal
    import time

    saved = tmp_path / "model.npz"
    proc = subprocess.Popen([_mpiexec(), "-n", "2", sys.executable, "-m", "loopprop", "train",
                             "--data-parallel", "--epochs", "100000", "--no-progress",
                             "--save", str(saved)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        while "dataset digits" not in proc.stdout.readline():  # training starts
            assert proc.poll() is None, proc.stderr.read()
        time.sleep(2.0)
        proc.send_signal(signal.SIGINT)  # mpiexec passes it to every rank
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    said = [line for line in err.splitlines() if line.startswith("loopprop: interrupted in")]
    assert len(said) == 1 and f"the last complete state is saved to {saved}" in said[0], err
    Network.load(saved)
