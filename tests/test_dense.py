"""Dense layer (guide §5): Z = W·A_prev + b and the four rows of its gradient table.

Each pass is checked against the vectorized twin, centered finite differences and torch
autograd, in both dtypes and both implementations (naive loops, tuned register-blocked loops).
"""

import itertools

import numpy as np
import pytest
from helpers import DTYPES, RTOL, SIZES, assert_close, numeric_grad, rand, torch_or_skip

import loopprop as lp
from loopprop import vectorized as vec

IMPLS = ["naive", "tuned"]
SHAPES = list(itertools.product(SIZES, SIZES, [1, 3, 17]))  # (n_out, n_in, m)


def layer(rng, n_out, n_in, m, dtype):
    return (rand(rng, (n_out, n_in), dtype), rand(rng, n_out, dtype), rand(rng, (n_in, m), dtype),
            rand(rng, (n_out, m), dtype))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_out,n_in,m", SHAPES)
def test_forward_and_backward_match_vectorized_twin(rng, impl, dtype, n_out, n_in, m):
    W, b, A_prev, dZ = layer(rng, n_out, n_in, m, dtype)
    rtol = RTOL[np.dtype(dtype)]
    Z = lp.dense_forward(W, b, A_prev, impl=impl)
    assert Z.dtype == dtype
    assert_close("Z", Z, vec.dense_forward(W, b, A_prev), rtol)
    dW, db, dA_prev = lp.dense_backward(dZ, W, A_prev, impl=impl)
    rW, rb, rA = vec.dense_backward(dZ, W, A_prev)
    assert dW.dtype == db.dtype == dA_prev.dtype == dtype
    assert_close("dW", dW, rW, rtol)
    assert_close("db", db, rb, rtol)
    assert_close("dA_prev", dA_prev, rA, rtol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_out,n_in,m", [(1, 1, 1), (5, 3, 7), (33, 17, 1), (4, 8, 4),
                                          (64, 1023, 3), (130, 70, 33), (37, 19, 1023),
                                          (33, 300, 130)])
def test_tuned_equals_naive_twin(rng, dtype, n_out, n_in, m):
    """The tuned kernels on shapes that do and do not divide the register tiles (four rows,
    one or two registers of columns, masked tails), small layers and layers large enough for
    the packed product (``PACKED_MIN_WORK``)."""
    W, b, A_prev, dZ = layer(rng, n_out, n_in, m, dtype)
    rtol = RTOL[np.dtype(dtype)]
    assert_close("Z", lp.dense_forward(W, b, A_prev, impl="tuned"),
                 lp.dense_forward(W, b, A_prev, impl="naive"), rtol)
    for name, t, n in zip(("dW", "db", "dA_prev"), lp.dense_backward(dZ, W, A_prev, impl="tuned"),
                          lp.dense_backward(dZ, W, A_prev, impl="naive")):
        assert_close(name, t, n, rtol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nr,ns,P", [(1, 1, 1), (10, 32, 32), (3, 7, 17), (40, 9, 33),
                                      (8, 40, 0), (13, 33, 5)])
@pytest.mark.parametrize("x_trans", [False, True])
def test_ab_tiles_adds_the_product(rng, dtype, nr, ns, P, x_trans):
    """``_ab_tiles`` adds ``X·Y`` (or ``Xᵀ·Y``) into what C holds (the epoch accumulates:
    a residual's gradient is in dA_prev already), on tiles and their tails: rows not a
    multiple of 4, columns not a multiple of one or two registers, an empty sum."""
    from loopprop.kernels.dense import _ab_tiles

    start, Y = rand(rng, (nr, ns), dtype), rand(rng, (P, ns), dtype)
    X = rand(rng, (P, nr) if x_trans else (nr, P), dtype)
    C = start.copy()
    _ab_tiles(C, X, Y, x_trans)
    X64 = X.astype(np.float64)
    want = start + (X64.T if x_trans else X64) @ Y.astype(np.float64)
    assert_close("C", C, want, RTOL[np.dtype(dtype)])


@pytest.mark.parametrize("m", [65, 300])
@pytest.mark.heavy
def test_tuned_parallel_path_equals_naive(rng, m):
    """A layer large enough to take the threaded path (≥ 2²⁰ multiply-adds), with a short batch
    (rank-4 dW) and a long one (dot-product dW)."""
    W, b, A_prev, dZ = layer(rng, 129, 257, m, np.float64)
    for name, t, n in zip(("dW", "db", "dA_prev"),
                          lp.dense_backward(dZ, W, A_prev, parallel=True),
                          lp.dense_backward(dZ, W, A_prev, impl="naive")):
        assert_close(name, t, n, 1e-12)
    assert_close("Z", lp.dense_forward(W, b, A_prev, parallel=True),
                 lp.dense_forward(W, b, A_prev, impl="naive"), 1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_backward_matches_finite_differences(rng, impl):
    """L = Σ G ⊙ Z, so dL/dZ = G; every gradient of the table against centered differences."""
    W, b, A_prev, G = layer(rng, 4, 5, 3, np.float64)

    def loss():
        return float((G * lp.dense_forward(W, b, A_prev, impl=impl)).sum())

    dW, db, dA_prev = lp.dense_backward(G, W, A_prev, impl=impl)
    assert_close("dW", dW, numeric_grad(loss, W), 1e-6)
    assert_close("db", db, numeric_grad(loss, b), 1e-6)
    assert_close("dA_prev", dA_prev, numeric_grad(loss, A_prev), 1e-6)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_out,n_in,m", [(1, 1, 1), (3, 17, 5), (33, 3, 17)])
def test_backward_matches_torch_autograd(rng, impl, dtype, n_out, n_in, m):
    torch = torch_or_skip()
    W, b, A_prev, G = layer(rng, n_out, n_in, m, dtype)
    tW, tb, tA = (torch.tensor(x, requires_grad=True) for x in (W, b, A_prev))
    tZ = tW @ tA + tb[:, None]
    (tZ * torch.tensor(G)).sum().backward()
    rtol = RTOL[np.dtype(dtype)]
    assert_close("Z", lp.dense_forward(W, b, A_prev, impl=impl), tZ.detach().numpy(), rtol)
    dW, db, dA_prev = lp.dense_backward(G, W, A_prev, impl=impl)
    assert_close("dW", dW, tW.grad.numpy(), rtol)
    assert_close("db", db, tb.grad.numpy(), rtol)
    assert_close("dA_prev", dA_prev, tA.grad.numpy(), rtol)


def test_fortran_and_strided_inputs_work(rng):
    W, b, A_prev, dZ = layer(rng, 6, 5, 4, np.float64)
    Wf = np.asfortranarray(W)
    A_big = np.zeros((5, 8))
    A_big[:, ::2] = A_prev
    A_strided = A_big[:, ::2]
    assert not A_strided.flags.c_contiguous
    assert_close("Z", lp.dense_forward(Wf, b, A_strided), vec.dense_forward(W, b, A_prev), 1e-12)
    for name, got, ref in zip(("dW", "db", "dA_prev"),
                              lp.dense_backward(np.asfortranarray(dZ), Wf, A_strided),
                              vec.dense_backward(dZ, W, A_prev)):
        assert_close(name, got, ref, 1e-12)


def test_inputs_are_not_modified(rng):
    W, b, A_prev, dZ = layer(rng, 3, 4, 5, np.float64)
    copies = [x.copy() for x in (W, b, A_prev, dZ)]
    lp.dense_forward(W, b, A_prev)
    lp.dense_backward(dZ, W, A_prev)
    for x, c in zip((W, b, A_prev, dZ), copies):
        np.testing.assert_array_equal(x, c)


@pytest.mark.parametrize("impl", ["tuned", "naive"])
@pytest.mark.parametrize("shape", [(3, 0, 4), (0, 3, 4), (3, 4, 0), (0, 0, 0)])
def test_dense_with_zero_size_dimensions_matches_numpy(impl, shape):
    n_out, n_in, m = shape
    W, b, A = np.ones((n_out, n_in)), np.arange(n_out, dtype=float), np.ones((n_in, m))
    np.testing.assert_array_equal(lp.dense_forward(W, b, A, impl=impl), W @ A + b[:, None])
    dZ = np.ones((n_out, m))
    for mine, ref in zip(lp.dense_backward(dZ, W, A, impl=impl), vec.dense_backward(dZ, W, A)):
        np.testing.assert_array_equal(mine, ref)
