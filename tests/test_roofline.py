"""The machine's roofs (loopprop/peaks.py) and each benchmark row under them
(loopprop/bench_roofline.py, ``loopprop bench --roofline``): the measuring kernels compute what
they claim, the work counts equal counts made by hand, the fractions are the rates over the
roofs, and bad arguments are refused. No test asserts on a speed."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from loopprop import bench, bench_roofline, peaks
from loopprop.layers import Conv2d, Dense, Flatten, MaxPool2d, ReLU, Softmax
from loopprop.network import Network


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fma_chains_compute_twelve_chains_of_a_times_b(dtype):
    L = 64 // np.dtype(dtype).itemsize
    out = np.linspace(0.5, 1.5, 2 * L).astype(dtype).reshape(2, L)
    a, b = out[:, 0].astype(np.float64), out[:, 1].astype(np.float64)
    start = out.astype(np.float64)
    peaks._fma_chains(out, 7, 2)
    # each chain: c + 7·a·b per lane; twelve chains summed
    expected = 12 * (start + 7 * (a * b)[:, None])
    np.testing.assert_allclose(out, expected, rtol=1e-5 if dtype == "float32" else 1e-13)


def test_read_and_copy_kernels_read_every_value_of_their_part():
    threads = 2
    a = np.arange(2 * 4 * 8 * 3, dtype=np.float64)  # three blocks of four registers a thread
    out = np.zeros((threads, 8))
    peaks._read_parts(a, 2, threads, out)
    halves = a.reshape(threads, -1)
    np.testing.assert_array_equal(out.sum(axis=1), 2 * halves.sum(axis=1))
    dst = np.zeros_like(a)
    peaks._copy_parts(dst, a, 1, threads)
    np.testing.assert_array_equal(dst, a)


def test_peaks_are_positive_rates_and_refuse_bad_arguments():
    assert peaks.fma_peak("float32", 1, seconds=1e-4, repeats=1) > 0
    assert peaks.bandwidth(1 << 14, 1, "read", seconds=1e-4, repeats=1) > 0
    assert peaks.bandwidth(1 << 14, 1, "copy", seconds=1e-4, repeats=1) > 0
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        peaks.fma_peak("float32", 0)
    with pytest.raises(ValueError, match="at most that many"):
        peaks.fma_peak("float32", numba.get_num_threads() + 1)
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        peaks.fma_peak("int32")
    with pytest.raises(ValueError, match="kind must be 'read' or 'copy'"):
        peaks.bandwidth(1 << 20, 1, "write")
    with pytest.raises(ValueError, match="nbytes must be an integer of at least"):
        peaks.bandwidth(16, 1)


def test_buffer_sizes_follow_the_caches():
    caches = {"L1": 32 << 10, "L2": 1 << 20, "L3": 32 << 20}
    assert peaks.buffer_sizes(2, caches) == {"L2": 1 << 20, "L3": 16 << 20, "DRAM": 256 << 20}
    # a VM reporting a small slice of L3: at least four L2s per thread; DRAM at most 1 GiB
    assert peaks.buffer_sizes(1, {"L2": 2 << 20, "L3": 200 << 20}) == {
        "L2": 1 << 20, "L3": 100 << 20, "DRAM": 1 << 30}
    assert peaks.buffer_sizes(2, {"L2": 2 << 20, "L3": 8 << 20})["L3"] == 16 << 20
    assert peaks.buffer_sizes(1, {}) == {"L2": 512 << 10, "L3": 16 << 20, "DRAM": 256 << 20}


def test_work_counts_equal_counts_by_hand():
    # 784-128-10 over 6400 examples: forward and dW of both layers, dA of the second only
    assert bench_roofline.mlp_flops([784, 128, 10], 6400) == 6400 * (
        2 * 2 * 784 * 128 + 3 * 2 * 128 * 10)
    # the LSTM row: 4h(d + h) per step and example, three passes
    assert bench_roofline.lstm_flops(128, 256, 64, 32) == 6 * 4 * 256 * (128 + 256) * 64 * 32
    # its input's gradient skipped: one product of 4h·d less
    assert bench_roofline.lstm_flops(128, 256, 64, 32, first=True) == (
        6 * 4 * 256 * (128 + 256) - 2 * 4 * 256 * 128) * 64 * 32
    # causal attention: six products over the 256·257/2 pairs of each head and example
    assert bench_roofline.attention_flops(12, 64, 256, 8) == 2 * 6 * (256 * 257 // 2) * 64 * 12 * 8
    assert bench_roofline.gpt_flops(1, 4, 2, 1, 3) == 2 * 3 * (12 * 16 * 2 + 2 * 3 * 4 + 3 * 4 * 2)


def test_network_flops_counts_the_convolutions_and_dense_layers():
    net = Network([Conv2d(4, 3), ReLU(), MaxPool2d(2), Flatten(), Dense(5), Softmax()],
                  loss="cross_entropy", input_shape=(2, 8, 8))
    conv = 4 * 2 * 9 * 6 * 6  # c_out · c_in · 3·3 · 6·6 outputs
    dense = (4 * 3 * 3) * 5  # after pooling: 4 × 3 × 3 features
    assert bench_roofline.network_flops(net, 10) == 10 * (2 * 2 * conv + 3 * 2 * dense)


def test_every_bench_row_but_the_warm_start_has_work():
    names = [name for name, _ in bench.rows("float32")]
    assert names  # the generator yields names without running anything
    for name in names:
        work = bench.row_work(name, "float32")
        assert work is not None, name
        unit, amount, footprint = work
        assert unit in ("flop", "byte") and amount > 0
        assert footprint > 0 if unit == "byte" else footprint == 0
    assert bench.row_work("loopprop train --epochs 1, warm start", "float32") is None


def test_roofline_fractions_are_rates_over_roofs():
    roofs = peaks.Peaks(fma={("float32", 2): 200.0}, copy={("L3", 2): 50.0, ("DRAM", 2): 20.0},
                        read={("L3", 2): 80.0}, sizes={("L3", 2): 16 << 20}, cpu="test CPU")
    rows = [("LSTM fwd+bwd d 128, h 256, T 64, b 32", {"loopprop": 0.032, "numpy": 0.048}),
            ("tanh fwd+bwd, 10^6 values, into buffers", {"loopprop": 0.002}),
            ("loopprop train --epochs 1, warm start", {"loopprop": 1.0})]
    out = bench_roofline.roofline_rows(rows, roofs, "float32", 2, bench.row_work)
    assert [r["name"] for r in out] == [rows[0][0], rows[1][0]]  # the warm start has no roof
    lstm = bench_roofline.lstm_flops(128, 256, 64, 32)
    assert out[0]["roof_name"] == "FMA float32" and out[0]["roof"] == 200.0
    assert out[0]["fractions"]["loopprop"] == pytest.approx(lstm / 0.032 / 1e9 / 200.0)
    assert out[0]["fractions"]["numpy"] == pytest.approx(lstm / 0.048 / 1e9 / 200.0)
    level = bench_roofline.level_of(4 * 10 ** 6 * 4, 2)
    assert out[1]["roof_name"] == f"copy {level}"
    text = bench_roofline.roofline_table(out, roofs)
    assert "test CPU" in text and "LSTM fwd+bwd" in text and "warm start" not in text


def test_level_of_a_footprint():
    caches = {"L2": 1 << 20, "L3": 32 << 20}
    assert bench_roofline.level_of(1 << 20, 2, caches) == "L2"
    assert bench_roofline.level_of(4 << 20, 2, caches) == "L3"
    assert bench_roofline.level_of(64 << 20, 2, caches) == "DRAM"


def test_best_of_two_measurements_keeps_each_higher_roof():
    a = peaks.Peaks(fma={("float32", 2): 117.0}, read={("L2", 2): 210.0}, cpu="x")
    b = peaks.Peaks(fma={("float32", 2): 228.0}, read={("L2", 2): 100.0})
    best = a.best_of(b)
    assert best.fma == {("float32", 2): 228.0} and best.read == {("L2", 2): 210.0}
    assert best.cpu == "x"


@pytest.mark.heavy  # a bench row of 10^6 values: seconds compiled, a minute as Python
def test_bench_roofline_prints_the_roofs_and_the_rows_fractions(capsys, monkeypatch):
    """The CLI path: the roofs measured before and after the rows, the higher of each kept,
    and the row placed under the copy roof of its level (the measuring itself is tested
    above; here it is replaced by two fixed measurements)."""
    calls = []
    level = bench_roofline.level_of(4 * 10 ** 6 * 4, numba.get_num_threads())

    def measured(**kw):
        calls.append(kw)
        t = numba.get_num_threads()
        first = len(calls) == 1
        return peaks.Peaks(fma={("float32", t): 100.0 if first else 230.0},
                           copy={(level, t): 90.0 if first else 40.0},
                           read={(level, t): 150.0}, sizes={(level, t): 1 << 24}, cpu="fixed")

    monkeypatch.setattr(peaks, "measure_peaks", measured)
    out = bench.run(dtype="float32", quick=True, select="sigmoid fwd+bwd, 10^6 values, into",
                    roofline=True)
    printed = capsys.readouterr().out
    assert len(out) == 1 and len(calls) == 2
    roofs = printed.split("machine: fixed")[1]
    assert "230 GF/s" in roofs and "90.0 GB/s" in roofs  # the higher of the two runs
    row = [line for line in roofs.splitlines() if line.startswith("sigmoid fwd+bwd")]
    assert len(row) == 1 and f"copy {level} 90 GB/s" in row[0] and "%" in row[0]
