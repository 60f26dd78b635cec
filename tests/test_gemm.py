"""The packed SIMD kernel ``C += op(X)·op(Y)`` (kernels/gemm.py) that large dense layers use.

The oracle is the product taken in float64 by NumPy on the explicitly transposed operands. Shapes
straddle every block edge: the 6-row tiles, the 48-row groups of a transposed X, the 16-
(float64) and 32-column (float32) strips, the 256-long panels of p and the 512-wide panels of
columns.
"""

import itertools

import numpy as np
import pytest
from helpers import DTYPES, RTOL, assert_close, rand

from loopprop._jit import PRODUCT_MIN_WORK
from loopprop.kernels import gemm

SHAPES = [(1, 1, 1), (5, 3, 7), (6, 16, 16), (7, 17, 33), (13, 257, 15), (12, 256, 513),
          (19, 600, 40), (53, 40, 20)]  # (rows of C, length of the sum, columns of C)


def _operands(rng, nr, P, ns, dtype, x_trans, y_trans):
    X = rand(rng, (P, nr) if x_trans else (nr, P), dtype)
    Y = rand(rng, (ns, P) if y_trans else (P, ns), dtype)
    C = rand(rng, (nr, ns), dtype)
    ref = (C.astype(np.float64) + (X.T if x_trans else X).astype(np.float64)
           @ (Y.T if y_trans else Y).astype(np.float64))
    return C, X, Y, ref


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_trans,y_trans", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize("nr,P,ns", SHAPES)
def test_gemm_matches_numpy_product(rng, dtype, x_trans, y_trans, nr, P, ns):
    C, X, Y, ref = _operands(rng, nr, P, ns, dtype, x_trans, y_trans)
    gemm._gemm(C, X, Y, x_trans, y_trans, 1)
    assert C.dtype == dtype
    assert_close("C", C, ref, RTOL[np.dtype(dtype)])


@pytest.mark.parametrize("nr,ns", [(97, 70), (29, 301)])  # split by rows; by column strips
@pytest.mark.parametrize("x_trans,y_trans", [(False, False), (True, False), (False, True)])
def test_gemm_threads_give_identical_bits(rng, x_trans, y_trans, nr, ns):
    """Above PRODUCT_MIN_WORK the row tiles (or, with more columns than rows, the column
    strips) are split between threads; each element is still summed by one thread in one
    order, so the result does not depend on the thread count."""
    P = 400
    assert nr * P * ns >= PRODUCT_MIN_WORK
    C1, X, Y, ref = _operands(rng, nr, P, ns, np.float64, x_trans, y_trans)
    C2 = C1.copy()
    gemm._gemm(C1, X, Y, x_trans, y_trans, 1)
    gemm._gemm(C2, X, Y, x_trans, y_trans, 2)
    assert_close("C", C1, ref, RTOL[np.dtype(np.float64)])
    assert np.array_equal(C1, C2)


def test_gemm_leaves_nan_visible(rng):
    """No fast-math here: a NaN in X reaches exactly the row of C it belongs to."""
    C, X, Y, _ = _operands(rng, 13, 20, 18, np.float64, False, False)
    X[7, 3] = np.nan
    gemm._gemm(C, X, Y, False, False, 1)
    assert np.isnan(C[7]).all()
    assert np.isfinite(np.delete(C, 7, axis=0)).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("y_trans", [False, True])
@pytest.mark.parametrize("P,ns", [(1, 1), (15, 31), (16, 32), (17, 33), (40, 70), (300, 129)])
def test_pack_y_matches_its_formula(rng, dtype, y_trans, P, ns):
    """``Yp[t, p − p0, c] = Y[p, s0 + t·NR + c]``, zeros past ``s1``: the strips a register at a
    time (two loads per row; 16 × lanes blocks transposed in registers) and the rest value by
    value, against the formula written with NumPy slices."""
    NR = 128 // np.dtype(dtype).itemsize
    Ysrc = rand(rng, (ns, P) if y_trans else (P, ns), dtype)
    Y = Ysrc.T if y_trans else Ysrc
    for p0, p1, s0, s1 in [(0, P, 0, ns), (P // 3, P, ns // 4, ns)]:
        n_strips = -(-(s1 - s0) // NR)
        padded = np.zeros((p1 - p0, n_strips * NR), dtype)
        padded[:, :s1 - s0] = Y[p0:p1, s0:s1]
        expected = padded.reshape(p1 - p0, n_strips, NR).transpose(1, 0, 2).ravel()
        Yp = np.full(expected.size, np.nan, dtype)
        gemm._pack_y(Yp, Ysrc, y_trans, p0, p1, s0, s1, NR)
        np.testing.assert_array_equal(Yp, expected)
