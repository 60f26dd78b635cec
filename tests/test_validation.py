"""Bad input gets a clear TypeError/ValueError in Python, naming the argument and the fix.

Never a Numba TypingError, a crash, or a silent wrong answer.
"""

import numpy as np
import pytest

import loopprop as lp

W = np.ones((3, 4))
b = np.zeros(3)
A = np.ones((4, 5))
dZ = np.ones((3, 5))


@pytest.mark.parametrize("call,exc,pattern", [
    # wrong ndim
    (lambda: lp.dense_forward(np.ones(4), b, A), ValueError, r"W: expected a 2-D array, got 1-D"),
    (lambda: lp.dense_forward(W, b[:, None], A), ValueError, r"b: expected a 1-D.*b.ravel"),
    (lambda: lp.dense_forward(W, b, np.ones(4)), ValueError, r"A_prev: .*reshape\(-1, 1\)"),
    (lambda: lp.activation_forward("relu", np.ones(3)), ValueError, r"Z: expected a 2-D"),
    # shapes that do not chain: both shapes named
    (lambda: lp.dense_forward(W, b, np.ones((5, 5))), ValueError, r"\(3, 4\).*\(5, 5\)"),
    (lambda: lp.dense_forward(W, b, np.ones((5, 4))), ValueError, r"transposed: pass A_prev.T"),
    (lambda: lp.dense_forward(W, np.zeros(4), A), ValueError, r"b has shape \(4,\).*\(3,\)"),
    (lambda: lp.dense_backward(np.ones((2, 5)), W, A), ValueError, r"dZ has shape \(2, 5\)"),
    (lambda: lp.dense_backward(dZ, W, np.ones((4, 6))), ValueError, r"same batch size"),
    (lambda: lp.activation_backward("tanh", np.ones((2, 2)), np.ones((2, 3))), ValueError,
     r"dA: expected shape \(2, 3\)"),
    # integer arrays: suggest .astype
    (lambda: lp.dense_forward(W.astype(int), b, A), TypeError, r"W.astype\(np.float64\)"),
    (lambda: lp.activation_forward("relu", np.ones((2, 2), dtype=np.int32)), TypeError,
     r"Z: expected a float32 or float64 array, got dtype int32"),
    # mixed float32/float64
    (lambda: lp.dense_forward(W.astype(np.float32), b, A), TypeError,
     r"b is float64 but W is float32.*astype"),
    (lambda: lp.dense_backward(dZ, W, A.astype(np.float32)), TypeError, r"A_prev is float32"),
    # NaN or Inf
    (lambda: lp.dense_forward(np.full((3, 4), np.nan), b, A), ValueError,
     r"W: contains NaN or Inf.*check_finite=False"),
    (lambda: lp.mse_loss(np.full((1, 2), np.inf), np.ones((1, 2))), ValueError, r"A: contains"),
    (lambda: lp.sgd_update(np.ones(3), np.array([1, np.nan, 1.0]), 0.1), ValueError,
     r"grad: contains NaN"),
    # labels outside [0, c) or of the wrong length
    (lambda: lp.softmax_cross_entropy(np.ones((3, 2)), np.array([0, 3])), ValueError,
     r"labels must lie in \[0, 3\).*found 3"),
    (lambda: lp.softmax_cross_entropy(np.ones((3, 2)), np.array([0, -1])), ValueError,
     r"\[0, 3\).*found -1"),
    (lambda: lp.softmax_cross_entropy(np.ones((3, 2)), np.array([0, 1, 2])), ValueError,
     r"expected 2 labels.*got 3"),
    (lambda: lp.softmax_cross_entropy(np.ones((3, 2)), np.array([0.0, 1.0])), TypeError,
     r"astype\(np.int64\)"),
    # Y of the wrong shape
    (lambda: lp.softmax_cross_entropy(np.ones((3, 2)), np.ones((2, 3)) / 3), ValueError,
     r"Y: expected shape \(3, 2\).*transposed.*Y.T"),
    (lambda: lp.softmax_cross_entropy(np.ones((3, 2)), np.ones((3, 2))), ValueError,
     r"probability distribution"),
    (lambda: lp.mse_loss(np.ones((2, 3)), np.ones((2, 4))), ValueError, r"Y: expected shape"),
    (lambda: lp.sigmoid_binary_cross_entropy(np.ones((1, 3)), np.ones(3)), ValueError,
     r"reshape\(1, -1\)"),
    (lambda: lp.sigmoid_binary_cross_entropy(np.ones((1, 3)), np.full((1, 3), 2.0)), ValueError,
     r"\[0, 1\]"),
    # unknown activation: list the valid names
    (lambda: lp.activation_forward("swish", np.ones((2, 2))), ValueError,
     r"unknown value 'swish'.*identity, sigmoid, tanh, relu, leaky_relu, softmax, gelu, gelu_tanh"),
    (lambda: lp.neuron_step(1, 1, 0, 1, activation="softmax"), ValueError, r"valid names"),
    # a NaN, infinite or negative learning rate
    (lambda: lp.sgd_update(np.ones(3), np.ones(3), float("nan")), ValueError, r"lr: .*finite"),
    (lambda: lp.sgd_update(np.ones(3), np.ones(3), float("inf")), ValueError, r"lr:"),
    (lambda: lp.sgd_update(np.ones(3), np.ones(3), -0.1), ValueError, r"non-negative"),
    (lambda: lp.sgd_update(np.ones(3), np.ones(3), "fast"), TypeError,
     r"lr: expected a real number"),
    (lambda: lp.sgd_update([1.0, 2.0], np.ones(2), 0.1), TypeError, r"in place"),
    (lambda: lp.sgd_update(np.ones(3, dtype=int), np.ones(3), 0.1), TypeError, r"param"),
    (lambda: lp.sgd_update(np.ones(3), np.ones(4), 0.1), ValueError, r"grad: expected shape"),
    # a loss over an empty batch
    (lambda: lp.mse_loss(np.ones((2, 0)), np.ones((2, 0))), ValueError, r"batch is empty"),
    (lambda: lp.softmax_cross_entropy(np.ones((3, 0)), np.zeros(0, int)), ValueError, r"empty"),
    (lambda: lp.sigmoid_binary_cross_entropy(np.ones((1, 0)), np.ones((1, 0))), ValueError,
     r"empty"),
    # neuron
    (lambda: lp.neuron_step([1, 2], [1, 2, 3], 0, 1), ValueError, r"one weight per input"),
    (lambda: lp.neuron_step(1, 1, float("nan"), 1), ValueError, r"b: expected a finite"),
    (lambda: lp.dense_forward(W, b, A, impl="fast"), ValueError, r"impl: .*tuned, naive"),
])
def test_bad_input_gets_a_clear_error(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_check_finite_false_skips_the_scan():
    """The escape hatch: NaN flows through (the caller asked for it) instead of an error."""
    Z = lp.dense_forward(np.full((3, 4), np.nan), b, A, check_finite=False)
    assert np.isnan(Z).all()


def test_python_lists_are_accepted():
    Z = lp.dense_forward([[1, 2]], [0.5], [[1], [1]])
    assert Z.dtype == np.float64 and Z[0, 0] == 3.5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_finite_check_finds_one_bad_value_among_huge_finite_ones(dtype, bad):
    """The finite check is one compiled pass over Σ x·0: values near the float maximum (whose
    plain sum would overflow) pass, and a single NaN or Inf anywhere is found and located."""
    big = np.full((17, 33), np.finfo(dtype).max / 2, dtype=dtype)
    W, b = big[:, :8].copy(), big[:, 0].copy()
    lp.dense_forward(W, b, big[:8, :5].copy())  # huge but finite: accepted
    A = big[:8, :5].copy()
    A[6, 3] = bad
    with pytest.raises(ValueError, match=r"A_prev: contains NaN or Inf \(first at index \(6, 3\)"):
        lp.dense_forward(W, b, A)


def test_float32_overflow_of_inputs_is_an_error():
    net = lp.Network([1, 1], ["identity"], "mse", dtype="float32")
    with pytest.raises(ValueError, match=r"X: .*overflows float32"):
        net.predict(np.full((1, 2), 1e39))
    with pytest.raises(ValueError, match=r"Y: .*overflows float32"):
        lp.mse_loss(np.ones((1, 1), np.float32), np.full((1, 1), 1e39))


@pytest.mark.parametrize("kwargs,exc,pattern", [
    ({"alpha": float("nan")}, ValueError, "alpha"),
    ({"alpha": "abc"}, TypeError, "alpha"),
    ({"seed": -1}, ValueError, "seed"),
    ({"seed": 1.5}, TypeError, "seed"),
])
def test_network_hyperparameters_are_validated(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        lp.Network([2, 1], ["leaky_relu"], "mse", **kwargs)


@pytest.mark.parametrize("kwargs,pattern", [
    ({"optimizer": "adam", "beta1": 1.0}, "beta1"),
    ({"optimizer": "adam", "beta2": 1.0}, "beta2"),
    ({"optimizer": "adam", "eps": -1}, "eps"),
    ({"optimizer": "momentum", "momentum": float("nan")}, "momentum"),
    ({"optimizer": "momentum", "momentum": 5}, "momentum"),
    ({"seed": -1}, "seed"),
])
def test_fit_hyperparameters_are_validated(kwargs, pattern):
    net = lp.Network([2, 1], ["identity"], "mse")
    with pytest.raises(ValueError, match=pattern):
        net.fit(np.ones((2, 4)), np.ones((1, 4)), progress=False, **kwargs)


@pytest.mark.parametrize("call,exc,pattern", [
    (lambda: lp.neuron_step(1j, 0.5, 1, 1), TypeError, "x: expected a float32 or float64"),
    (lambda: lp.sgd_update(np.ones(3), np.ones(3), lr=True), TypeError, "lr: expected a real"),
    (lambda: lp.activation_forward(np.ones((300, 300)), "relu"), TypeError,
     "order of the arguments"),
])
def test_scalar_arguments_get_clear_errors(call, exc, pattern):
    with pytest.raises(exc, match=pattern) as err:
        call()
    assert len(str(err.value)) < 300  # the message never prints a whole array


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 1000, (1 << 16), (1 << 16) + 1, 3 * (1 << 16) + 5])
def test_the_finiteness_passes_find_every_nan_and_inf_in_any_block(n, dtype):
    """The one pass and the blocks shared between threads (every block's first and last value
    tried); the oracle is NumPy's isfinite."""
    from loopprop._checks import FINITE_BLOCK, _all_finite, _all_finite_blocks

    v = np.random.default_rng(n).standard_normal(n).astype(dtype)
    assert _all_finite(v) and _all_finite_blocks(v)
    places = {0, n - 1, n // 2} | {p for b in range(0, n, FINITE_BLOCK)
                                   for p in (b, min(n, b + FINITE_BLOCK) - 1)}
    for p in sorted(places):
        for bad in (np.nan, np.inf, -np.inf):
            w = v.copy()
            w[p] = bad
            assert not np.isfinite(w).all()
            assert not _all_finite(w) and not _all_finite_blocks(w), (p, bad)
    big = np.full(n, np.finfo(dtype).max, dtype)  # finite values whose sum overflows
    assert _all_finite(big) and _all_finite_blocks(big)


@pytest.mark.parametrize("offset", [-1, 0, 5])
def test_all_finite_either_side_of_the_threaded_size(offset):
    from loopprop._checks import FINITE_THREADED, all_finite

    v = np.zeros(FINITE_THREADED + offset)
    assert all_finite(v) is True
    v[-1] = np.nan
    assert all_finite(v) is False
