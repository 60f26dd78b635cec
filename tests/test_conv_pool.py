"""Convolution, pooling, dropout and GELU: every kernel against its vectorized twin, PyTorch
autograd (layouts converted: PyTorch puts examples first, loopprop last) and centered finite
differences; tuned convolution against its naive twin."""

import numpy as np
import pytest
from helpers import DTYPES, RTOL, assert_close, numeric_grad, rand, torch_or_skip

import loopprop as lp
from loopprop import _checks
from loopprop import vectorized as vec

#: (c_in, c_out, H, W, kernel, stride, padding, m): 1×1 kernels, kernels as large as the padded
#: image, strides 2 and 3, padding 0–2, odd sizes, batch 1, channel counts that divide nothing
CONV_CASES = [
    (1, 1, 1, 1, 1, 1, 0, 1),
    (3, 5, 7, 9, 3, 1, 1, 4),
    (2, 3, 6, 5, (2, 3), (2, 1), (0, 2), 3),
    (4, 6, 9, 9, 3, 3, 2, 2),
    (3, 2, 5, 5, 7, 1, 1, 1),
    (5, 7, 8, 8, 8, 1, 0, 2),
    (3, 4, 11, 7, 1, 2, 0, 5),
    (7, 9, 10, 10, 5, 2, 2, 3),
    # above DIRECT_MAX_WORK multiply-adds: the im2col + packed-product path
    (16, 32, 12, 12, 5, 1, 0, 8),
    (8, 12, 15, 13, 3, 2, 1, 16),
    # batches of at least one register tile (16 float64 / 32 float32 examples): the
    # register-blocked direct kernels, with channels (not multiples of 4) and examples left over
    (3, 5, 7, 9, 3, 1, 1, 37),
    (4, 6, 9, 9, 3, 3, 2, 40),
    (8, 8, 12, 12, 5, 1, 2, 32),
    (6, 9, 6, 5, 2, 2, 1, 67),
    # an image's lone channels (1 and 3): dW's one-channel tiles, groups of 4 and of 2 vectors
    (1, 4, 9, 9, 3, 1, 0, 32),
    (3, 8, 9, 9, 3, 1, 1, 48),
]


def conv_case(rng, case, dtype):
    c_in, c_out, H, Wd, kern, stride, pad, m = case
    kh, kw = kern if isinstance(kern, tuple) else (kern, kern)
    W = rand(rng, (c_out, c_in, kh, kw), dtype)
    b = rand(rng, c_out, dtype)
    A = rand(rng, (c_in, H, Wd, m), dtype)
    Z = vec.conv2d_forward(W, b, A, stride, pad)
    dZ = rand(rng, Z.shape, dtype)
    return W, b, A, dZ, stride, pad


def to_torch(A):
    """(C, H, W, m) -> PyTorch's (m, C, H, W)."""
    return np.ascontiguousarray(np.moveaxis(A, -1, 0))


def from_torch(A):
    return np.moveaxis(A, 0, -1)


@pytest.mark.parametrize("impl", ["naive", "tuned"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_vectorized_twin(rng, impl, dtype, case):
    W, b, A, dZ, stride, pad = conv_case(rng, case, dtype)
    rtol = RTOL[np.dtype(dtype)]
    Z = lp.conv2d_forward(W, b, A, stride, pad, impl=impl)
    assert Z.dtype == dtype
    assert_close("Z", Z, vec.conv2d_forward(W, b, A, stride, pad), rtol)
    for name, mine, ref in zip(("dW", "db", "dA_prev"),
                               lp.conv2d_backward(dZ, W, A, stride, pad, impl=impl),
                               vec.conv2d_backward(dZ, W, A, stride, pad)):
        assert mine.dtype == dtype
        assert_close(name, mine, ref, rtol)


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_tuned_equals_naive(rng, case):
    W, b, A, dZ, stride, pad = conv_case(rng, case, np.float64)
    assert_close("Z", lp.conv2d_forward(W, b, A, stride, pad),
                 lp.conv2d_forward(W, b, A, stride, pad, impl="naive"), 1e-12)
    for name, t, n in zip(("dW", "db", "dA_prev"), lp.conv2d_backward(dZ, W, A, stride, pad),
                          lp.conv2d_backward(dZ, W, A, stride, pad, impl="naive")):
        assert_close(name, t, n, 1e-12)


@pytest.mark.parametrize("impl", ["naive", "tuned"])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_torch(rng, impl, case):
    torch = torch_or_skip()
    W, b, A, dZ, stride, pad = conv_case(rng, case, np.float64)
    tA = torch.tensor(to_torch(A), requires_grad=True)
    tW = torch.tensor(W, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    tZ = torch.nn.functional.conv2d(tA, tW, tb, stride=stride, padding=pad)
    tZ.backward(torch.tensor(to_torch(dZ)))
    assert_close("Z", lp.conv2d_forward(W, b, A, stride, pad, impl=impl),
                 from_torch(tZ.detach().numpy()), 1e-10)
    dW, db, dA = lp.conv2d_backward(dZ, W, A, stride, pad, impl=impl)
    assert_close("dW", dW, tW.grad.numpy(), 1e-10)
    assert_close("db", db, tb.grad.numpy(), 1e-10)
    assert_close("dA_prev", dA, from_torch(tA.grad.numpy()), 1e-10)


def test_conv2d_matches_finite_differences(rng):
    W, b, A, dZ, stride, pad = conv_case(rng, (2, 3, 5, 4, 3, 2, 1, 2), np.float64)

    def loss():  # L = Σ dZ ⊙ Z, so dL/dZ = dZ
        return float((lp.conv2d_forward(W, b, A, stride, pad, impl="naive") * dZ).sum())

    dW, db, dA = lp.conv2d_backward(dZ, W, A, stride, pad)
    assert_close("dW", dW, numeric_grad(loss, W), 1e-6)
    assert_close("db", db, numeric_grad(loss, b), 1e-6)
    assert_close("dA_prev", dA, numeric_grad(loss, A), 1e-6)


@pytest.mark.parametrize("call,exc,pattern", [
    (lambda W, b, A: lp.conv2d_forward(W, b, A[0]), ValueError, "A_prev: expected a 4-D"),
    (lambda W, b, A: lp.conv2d_forward(W[:, :1], b, A), ValueError, "channels"),
    (lambda W, b, A: lp.conv2d_forward(W, b, A[:, :2, :2]), ValueError, "larger than the padded"),
    (lambda W, b, A: lp.conv2d_forward(W, b, A, stride=0), ValueError, "stride"),
    (lambda W, b, A: lp.conv2d_forward(W, b, A, padding=-1), ValueError, "padding"),
    (lambda W, b, A: lp.conv2d_forward(W, b, A, stride=1.5), TypeError, "stride"),
    (lambda W, b, A: lp.conv2d_forward(W.astype(np.float32), b, A), TypeError, "dtype"),
    (lambda W, b, A: lp.conv2d_forward(W.astype(int), b, A), TypeError, "W: expected a float"),
    (lambda W, b, A: lp.conv2d_forward(W, b, np.full_like(A, np.nan)), ValueError, "NaN"),
    (lambda W, b, A: lp.conv2d_backward(np.ones((3, 1, 1, 1)), W, A), ValueError, "dZ"),
    # a kernel with a zero side once returned the bias in a wrong-shaped array
    (lambda W, b, A: lp.conv2d_forward(W[:, :, :0], b, A), ValueError, "every side ≥ 1"),
    (lambda W, b, A: lp.conv2d_forward(W[:, :, :, :0], b, A, impl="naive"), ValueError,
     "every side ≥ 1"),
    (lambda W, b, A: lp.conv2d_backward(np.ones((3, 6, 3, 2)), W[:, :, :0], A), ValueError,
     "every side ≥ 1"),
    (lambda W, b, A: lp.conv2d_forward(W, b, A[..., :0]), ValueError, "A_prev"),
])
def test_conv2d_bad_input_gets_a_clear_error(rng, call, exc, pattern):
    W, b, A = rand(rng, (3, 2, 3, 3)), rand(rng, 3), rand(rng, (2, 5, 5, 2))
    with pytest.raises(exc, match=pattern):
        call(W, b, A)


# -- pooling ---------------------------------------------------------------------------------

POOL_CASES = [  # (C, H, W, m, size, stride)
    (1, 2, 2, 1, 2, None), (3, 7, 9, 4, 2, None), (2, 6, 6, 3, 3, 1), (2, 8, 7, 2, (2, 3), (1, 2)),
    (4, 9, 9, 5, 3, 3), (1, 5, 5, 1, 5, None), (3, 6, 6, 2, 2, 1),
]


def pool_case(rng, case, dtype):
    C, H, Wd, m, size, stride = case
    A = rand(rng, (C, H, Wd, m), dtype)
    out = vec.avgpool2d_forward(A, size, stride)
    return A, rand(rng, out.shape, dtype), size, stride


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_pooling_matches_twin_and_torch(rng, kind, dtype, case):
    A, dA, size, stride = pool_case(rng, case, dtype)
    rtol = RTOL[np.dtype(dtype)]
    fwd = getattr(lp, f"{kind}pool2d_forward")
    bwd = getattr(lp, f"{kind}pool2d_backward")
    assert_close("A", fwd(A, size, stride), getattr(vec, f"{kind}pool2d_forward")(A, size, stride),
                 rtol)
    dA_prev = bwd(dA, A, size, stride)
    assert_close("dA_prev", dA_prev,
                 getattr(vec, f"{kind}pool2d_backward")(dA, A, size, stride), rtol)
    if dtype == np.float64:
        torch = torch_or_skip()
        tA = torch.tensor(to_torch(A), requires_grad=True)
        f = torch.nn.functional.max_pool2d if kind == "max" else torch.nn.functional.avg_pool2d
        out = f(tA, size, stride)
        out.backward(torch.tensor(to_torch(dA)))
        assert_close("A (torch)", fwd(A, size, stride), from_torch(out.detach().numpy()), 1e-10)
        assert_close("dA_prev (torch)", dA_prev, from_torch(tA.grad.numpy()), 1e-10)


def test_maxpool_ties_go_to_the_first_maximum_and_overlaps_add():
    A = np.zeros((1, 3, 3, 1))
    A[0, 1, 1, 0] = 5.0  # the centre is a maximum of all four overlapping 2×2 windows
    A[0, 0, 2, 0] = 5.0  # and ties with (0, 2) in the top-right window, where (0, 2) comes
    # first in row-major window order: (0, 1), (0, 2), (1, 1), (1, 2)
    dA = np.ones((1, 2, 2, 1))
    dA_prev = lp.maxpool2d_backward(dA, A, 2, 1)
    want = np.zeros((1, 3, 3, 1))
    want[0, 1, 1, 0] = 3.0  # windows (0,0), (1,0), (1,1)
    want[0, 0, 2, 0] = 1.0  # window (0,1): the first of its two maxima
    np.testing.assert_array_equal(dA_prev, want)


def test_maxpool_propagates_nan():
    A = np.array([1.0, np.nan, 3.0, 2.0]).reshape(1, 2, 2, 1)
    assert np.isnan(lp.maxpool2d_forward(A, 2, check_finite=False)[0, 0, 0, 0])


def test_pooling_matches_finite_differences(rng):
    A, dA, size, stride = pool_case(rng, (2, 5, 5, 2, 3, 2), np.float64)
    for kind in ("max", "avg"):
        fwd = getattr(lp, f"{kind}pool2d_forward")

        def loss(fwd=fwd):
            return float((fwd(A, size, stride) * dA).sum())

        assert_close(f"{kind} dA_prev", getattr(lp, f"{kind}pool2d_backward")(dA, A, size, stride),
                     numeric_grad(loss, A), 1e-6)


@pytest.mark.parametrize("call,exc,pattern", [
    (lambda A: lp.maxpool2d_forward(A, 9), ValueError, "larger than the image"),
    (lambda A: lp.avgpool2d_forward(A, 2, 0), ValueError, "stride"),
    (lambda A: lp.maxpool2d_forward(A[0]), ValueError, "4-D"),
    (lambda A: lp.maxpool2d_backward(np.ones((2, 1, 1, 2)), A), ValueError, "dA: expected shape"),
    (lambda A: lp.avgpool2d_forward(A.astype(int)), TypeError, "float32 or float64"),
])
def test_pooling_bad_input(rng, call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call(rand(rng, (2, 4, 4, 2)))


# -- dropout and GELU ------------------------------------------------------------------------


def test_dropout_mask_values_rate_and_reproducibility():
    A = np.arange(1.0, 200_001.0).reshape(200, 1000)
    out, mask = lp.dropout_forward(A, 0.25, seed=3)
    assert set(np.unique(mask)) == {0.0, 1 / 0.75}
    assert abs((mask == 0).mean() - 0.25) < 0.005
    np.testing.assert_array_equal(out, A * mask)
    np.testing.assert_array_equal(lp.dropout_forward(A, 0.25, seed=3)[1], mask)
    assert not np.array_equal(lp.dropout_forward(A, 0.25, seed=4)[1], mask)
    dA = np.random.default_rng(0).standard_normal(A.shape)
    np.testing.assert_array_equal(lp.dropout_backward(dA, mask), vec.dropout_backward(dA, mask))
    assert np.all(lp.dropout_forward(A, 0.0, seed=1)[1] == 1.0)  # p = 0 keeps everything


def test_dropout_takes_any_integer_seed():
    """Seeds past 64 bits once failed with a Numba TypingError; below 2⁶³ the masks are the
    ones they always were (hashing only what does not fit)."""
    A = np.ones((16, 64))
    masks = [lp.dropout_forward(A, 0.5, seed)[1] for seed in (2**63, 2**64, 2**64 + 1, 10**40)]
    for mask in masks:
        assert abs((mask == 0).mean() - 0.5) < 0.1
    assert len({m.tobytes() for m in masks}) == 4
    np.testing.assert_array_equal(lp.dropout_forward(A, 0.5, 10**40)[1], masks[3])
    for seed, key in ((2**62, 2**62), (2**64, _checks.stream_seed(2**64))):
        np.testing.assert_array_equal(lp.dropout_forward(A, 0.5, seed)[1] == 0,
                                      _splitmix_dropped(key, A.size, 0.5).reshape(A.shape))


def _splitmix_dropped(seed: int, n: int, p: float) -> np.ndarray:
    """Which units the documented formula drops: ``r(seed, t) < p`` with r the top 53 bits of
    SplitMix64's output for ``seed·γ + (t + 1)·γ`` (Python integers, the JIT not involved)."""
    mask, gamma = (1 << 64) - 1, 0x9E3779B97F4A7C15
    out = np.empty(n, bool)
    for t in range(n):
        z = (seed * gamma + (t + 1) * gamma) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z ^= z >> 31
        out[t] = (z >> 11) / 2.0**53 < p
    return out


@pytest.mark.parametrize("p", [-0.1, 1.0, float("nan")])
def test_dropout_rejects_bad_p(p):
    with pytest.raises(ValueError, match="p:"):
        lp.dropout_forward(np.ones((2, 2)), p, seed=0)


@pytest.mark.parametrize("impl", ["naive", "tuned"])
@pytest.mark.parametrize("name,approximate", [("gelu", "none"), ("gelu_tanh", "tanh")])
def test_gelu_matches_torch_and_twin(rng, impl, name, approximate):
    Z = rand(rng, (7, 9), scale=3.0)
    dA = rand(rng, (7, 9))
    A = lp.activation_forward(name, Z, impl=impl)
    dZ = lp.activation_backward(name, dA, Z, impl=impl)
    assert_close("A (twin)", A, vec.activation_forward(name, Z), 1e-10)
    assert_close("dZ (twin)", dZ, vec.activation_backward(name, dA, Z), 1e-10)
    torch = torch_or_skip()
    t = torch.tensor(Z, requires_grad=True)
    a = torch.nn.functional.gelu(t, approximate=approximate)
    a.backward(torch.tensor(dA))
    assert_close("A (torch)", A, a.detach().numpy(), 1e-10)
    assert_close("dZ (torch)", dZ, t.grad.numpy(), 1e-10)
