"""Batch and layer normalization kernels: naive and tuned against the vectorized twin, PyTorch
(layouts converted), centered finite differences, and an extended-precision reference where a
large mean makes a careless variance lose its digits."""

import numpy as np
import pytest
from helpers import DTYPES, RTOL, assert_close, numeric_grad, rand, torch_or_skip

import loopprop as lp
from loopprop import vectorized as vec
from loopprop.kernels import norm

#: batch norm inputs: (n, m) and (C, H, W, m); batch 2, odd sizes, channels of one value each
BN_SHAPES = [(2, 2), (5, 3), (17, 33), (3, 4, 5, 2), (6, 7, 7, 3), (1, 1, 1, 2), (4, 1, 1, 5)]
#: layer norm inputs: (n, m) and (C, T, m); one feature, more columns than a block (256)
LN_SHAPES = [(1, 3), (5, 2), (17, 33), (3, 4, 2), (7, 5, 3), (6, 300), (5, 70, 4)]
IMPLS = ["naive", "tuned"]

FORWARD = {"bn": lp.batchnorm_forward, "ln": lp.layernorm_forward}
BACKWARD = {"bn": lp.batchnorm_backward, "ln": lp.layernorm_backward}
TWIN_FORWARD = {"bn": vec.batchnorm_forward, "ln": vec.layernorm_forward}
TWIN_BACKWARD = {"bn": vec.batchnorm_backward, "ln": vec.layernorm_backward}
CASES = [("bn", s) for s in BN_SHAPES] + [("ln", s) for s in LN_SHAPES]


def case(rng, shape, dtype, offset=0.0, spread=1.0):
    X = (offset + spread * rng.standard_normal(shape)).astype(dtype)
    gamma = rand(rng, shape[0], dtype) + np.asarray(1.0, dtype)
    beta = rand(rng, shape[0], dtype)
    dY = rand(rng, shape, dtype)
    return X, gamma, beta, dY


def grad_scale(gamma, rstd, dY):
    """The natural size of dX, ``|γ|·r·|dY|``: with a batch of two, every dX cancels to
    ~ε/σ² of it (x̂ = ±1), so errors are measured against this, not against dX itself."""
    return float(np.abs(gamma).max() * np.abs(rstd).max() * np.abs(dY).max())


def assert_sum_close(name, mine, ref, dY, rtol):
    """``dγ = Σ dY·x̂`` against the size of its terms, ``Σ|dY|`` (|x̂| is about 1): where
    every x̂ is 0 (one feature in layer norm) ``dγ`` is 0, and one side may hold 1e-14."""
    floor = float(np.abs(dY.astype(np.float64)).sum() / dY.shape[0])
    mine, ref = np.asarray(mine, np.float64), np.asarray(ref, np.float64)
    err = float(np.abs(mine - ref).max())
    assert err <= rtol * max(float(np.abs(ref).max()), floor), f"{name}: {mine} vs {ref}"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("which,shape", CASES)
def test_norm_matches_vectorized_twin(rng, which, shape, dtype, impl):
    X, gamma, beta, dY = case(rng, shape, dtype)
    rtol = RTOL[np.dtype(dtype)]
    Y, mean, rstd = FORWARD[which](X, gamma, beta, impl=impl)
    Yr, mean_r, rstd_r = TWIN_FORWARD[which](X, gamma, beta)
    assert Y.dtype == mean.dtype == rstd.dtype == dtype
    assert mean.shape == mean_r.shape and rstd.shape == rstd_r.shape
    for name, mine, ref in (("Y", Y, Yr), ("mean", mean, mean_r), ("rstd", rstd, rstd_r)):
        assert_close(name, mine, ref, rtol)
    dX, dgamma, dbeta = BACKWARD[which](dY, X, gamma, mean, rstd, impl=impl)
    dXr, dgr, dbr = TWIN_BACKWARD[which](dY, X, gamma, mean_r, rstd_r)
    scale = grad_scale(gamma, rstd, dY)
    err = float(np.abs(dX.astype(np.float64) - dXr).max())
    assert err <= rtol * scale * 10, f"dX: {err:.3e} > {rtol} × {scale:.3e}"
    assert_sum_close("dgamma", dgamma, dgr, dY, rtol)
    assert_close("dbeta", dbeta, dbr, rtol)


def _torch_layout(which, A):
    """loopprop's examples-last layout -> PyTorch's: batch norm (m, C, …), layer norm (…, n)."""
    if which == "bn":
        return np.ascontiguousarray(np.moveaxis(A, -1, 0))
    return np.ascontiguousarray(np.moveaxis(A, 0, -1))


def _from_torch(which, A):
    return np.moveaxis(A, 0, -1) if which == "bn" else np.moveaxis(A, -1, 0)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("which,shape", CASES)
def test_norm_matches_torch(rng, which, shape, impl):
    torch = torch_or_skip()
    X, gamma, beta, dY = case(rng, shape, np.float64)
    Xt = torch.tensor(_torch_layout(which, X), requires_grad=True)
    gt = torch.tensor(gamma, requires_grad=True)
    bt = torch.tensor(beta, requires_grad=True)
    if which == "bn":
        Yt = torch.nn.functional.batch_norm(Xt, None, None, gt, bt, training=True, eps=1e-5)
    else:
        Yt = torch.nn.functional.layer_norm(Xt, (shape[0],), gt, bt, eps=1e-5)
    Yt.backward(torch.tensor(_torch_layout(which, dY)))
    Y, mean, rstd = FORWARD[which](X, gamma, beta, impl=impl)
    assert_close("Y", Y, _from_torch(which, Yt.detach().numpy()), 1e-10)
    dX, dgamma, dbeta = BACKWARD[which](dY, X, gamma, mean, rstd, impl=impl)
    ref = _from_torch(which, Xt.grad.numpy())
    scale = grad_scale(gamma, rstd, dY)
    assert float(np.abs(dX - ref).max()) <= 1e-10 * scale
    assert_sum_close("dgamma", dgamma, gt.grad.numpy(), dY, 1e-10)
    assert_close("dbeta", dbeta, bt.grad.numpy(), 1e-10)


@pytest.mark.parametrize("which,shape", [("bn", (3, 4)), ("bn", (2, 3, 2, 2)), ("ln", (4, 3)),
                                         ("ln", (3, 2, 2))])
def test_norm_gradients_match_finite_differences(rng, which, shape):
    X, gamma, beta, G = case(rng, shape, np.float64)

    def loss():
        return float((FORWARD[which](X, gamma, beta)[0] * G).sum())

    _, mean, rstd = FORWARD[which](X, gamma, beta)
    dX, dgamma, dbeta = BACKWARD[which](G, X, gamma, mean, rstd)
    for name, mine, arr in (("dX", dX, X), ("dgamma", dgamma, gamma), ("dbeta", dbeta, beta)):
        assert_close(name, mine, numeric_grad(loss, arr), 1e-6)


def _reference(which, X, gamma, beta, dY, eps=1e-5):
    """The formulas in 80-bit extended precision (np.longdouble), two-pass."""
    L = np.longdouble
    if which == "bn":
        C = X.shape[0]
        X2, G2 = X.reshape(C, -1).astype(L), dY.reshape(C, -1).astype(L)
        ax, g, b = 1, gamma.astype(L)[:, None], beta.astype(L)[:, None]
    else:
        n = X.shape[0]
        X2, G2 = X.reshape(n, -1).astype(L), dY.reshape(n, -1).astype(L)
        ax, g, b = 0, gamma.astype(L)[:, None], beta.astype(L)[:, None]
    N = X2.shape[ax]
    mu = X2.mean(axis=ax, keepdims=True)
    r = 1 / np.sqrt(((X2 - mu) ** 2).mean(axis=ax, keepdims=True) + L(eps))
    xh = (X2 - mu) * r
    gh = G2 * g
    dX = r / N * (N * gh - gh.sum(axis=ax, keepdims=True)
                  - xh * (gh * xh).sum(axis=ax, keepdims=True))
    return ((g * xh + b).reshape(X.shape), dX.reshape(X.shape),  # dγ, dβ: per row of either
            (G2 * xh).sum(axis=1), G2.sum(axis=1))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("which,shape", [("bn", (3, 64)), ("bn", (4, 3, 5, 7)), ("ln", (40, 9)),
                                         ("ln", (33, 4, 3))])
def test_large_mean_small_spread_keeps_its_digits(rng, which, shape, impl):
    """Mean 10⁴, spread 0.1: ``Σx² − (Σx)²/N`` would lose about 8 of the 16 digits of the
    variance; the kernels agree with an 80-bit reference to 1e-10."""
    X, gamma, beta, dY = case(rng, shape, np.float64, offset=1e4, spread=0.1)
    Y, mean, rstd = FORWARD[which](X, gamma, beta, impl=impl)
    dX, dgamma, dbeta = BACKWARD[which](dY, X, gamma, mean, rstd, impl=impl)
    ref = [v.astype(np.float64) for v in _reference(which, X, gamma, beta, dY)]
    for name, mine, r in zip(("Y", "dX", "dgamma", "dbeta"), (Y, dX, dgamma, dbeta), ref):
        assert_close(name, mine, r, 1e-10)
    # the oracle can fail: the textbook one-pass variance misses by far more than 1e-10
    ax = tuple(range(1, X.ndim)) if which == "bn" else 0
    one_pass = (X * X).mean(axis=ax) - X.mean(axis=ax) ** 2
    two_pass = ((X - X.mean(axis=ax, keepdims=True)) ** 2).mean(axis=ax)
    assert np.abs(one_pass - two_pass).max() > 1e-8 * np.abs(two_pass).max()


@pytest.mark.parametrize("which", ["bn", "ln"])
def test_backward_kernels_add_into_their_outputs(rng, which):
    """The README's "Conventions": input and parameter gradients accumulate."""
    X, gamma, beta, dY = case(rng, (4, 6), np.float64)
    _, mean, rstd = FORWARD[which](X, gamma, beta)
    dX, dg, db = BACKWARD[which](dY, X, gamma, mean, rstd)
    for impl in IMPLS:
        start = [rand(rng, a.shape) for a in (dX, dg, db)]
        out = [a.copy() for a in start]
        if which == "bn":
            if impl == "naive":
                norm._batchnorm_backward_naive(*out, dY, X, gamma, mean, rstd)
            else:
                norm._batchnorm_backward(*out, dY, X, gamma, mean, rstd, True, 1)
        elif impl == "naive":
            norm._layernorm_backward_naive(*out, dY, X, gamma, mean, rstd)
        else:
            norm._layernorm_backward(*out, dY, X, gamma, mean, rstd, True, 1)
        for name, o, s, g in zip(("dX", "dgamma", "dbeta"), out, start, (dX, dg, db)):
            assert_close(f"{impl} {name}", o, s + g, 1e-12)


@pytest.mark.heavy
@pytest.mark.parametrize("which,shape", [("bn", (16, 8, 8, 1024)), ("ln", (64, 16, 1024))])
def test_threaded_paths_match_naive(rng, which, shape):
    """Above PARALLEL_MIN_WORK values the tuned kernels split rows (batch norm) or column
    blocks and rows (layer norm) between threads."""
    X, gamma, beta, dY = case(rng, shape, np.float64)
    outs = {}
    for impl in IMPLS:
        Y, mean, rstd = FORWARD[which](X, gamma, beta, impl=impl)
        outs[impl] = (Y, mean, rstd, *BACKWARD[which](dY, X, gamma, mean, rstd, impl=impl))
    for name, a, b in zip(("Y", "mean", "rstd", "dX", "dgamma", "dbeta"), outs["tuned"],
                          outs["naive"]):
        assert_close(name, a, b, 1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,M", [(64, 64 * norm.LN_BLOCK + 37), (4099, 300)])
def test_layernorm_backward_is_bitwise_the_same_on_any_thread_count(rng, dtype, n, M):
    """Layer norm's backward splits blocks of columns (``dX``) and rows (``dγ, dβ``) between
    threads, each value summed by one thread in one order: one thread and two give the same
    bits, and both equal the naive loops (65 blocks, the last one partial; or few columns,
    cut into narrower blocks so that both threads have one)."""
    from loopprop._jit import PARALLEL_MIN_WORK

    assert n * M >= PARALLEL_MIN_WORK  # the size at which the kernel splits its blocks
    X, gamma, beta, dY = case(rng, (n, M), dtype)
    _, mean, rstd = FORWARD["ln"](X, gamma, beta)
    f64 = [a.astype(np.float64) for a in (dY, X, gamma, mean, rstd)]
    ref = [np.zeros(a.shape) for a in (X, gamma, gamma)]
    norm._layernorm_backward_naive(*ref, *f64)
    outs = []
    for threads in (1, 2):
        out = [np.zeros(a.shape, dtype) for a in (X, gamma, gamma)]
        norm._layernorm_backward(*out, dY, X, gamma, mean, rstd, False, threads)
        outs.append(out)
    for name, one, two, r in zip(("dX", "dgamma", "dbeta"), *outs, ref):
        np.testing.assert_array_equal(one, two, err_msg=name)
        assert_close(name, one, r, 1e-12 if dtype == np.float64 else RTOL[np.dtype(dtype)])


@pytest.mark.parametrize("which", ["bn", "ln"])
def test_bad_input_is_a_clear_error(rng, which):
    fwd = FORWARD[which]
    X, gamma, beta, dY = case(rng, (4, 3), np.float64)
    with pytest.raises(ValueError, match=r"gamma: .*\(4,\)"):
        fwd(X, gamma[:3], beta)
    with pytest.raises(ValueError, match=r"beta: .*\(4,\)"):
        fwd(X, gamma, np.zeros((4, 1)))
    with pytest.raises(ValueError, match="eps"):
        fwd(X, gamma, beta, eps=0.0)
    with pytest.raises(ValueError, match="eps"):
        fwd(X, gamma, beta, eps=-1e-5)
    with pytest.raises(TypeError, match=r"X: expected a float32 or float64 array.*astype"):
        fwd(X.astype(np.int64), gamma, beta)
    with pytest.raises(TypeError, match="float32"):
        fwd(X.astype(np.float32), gamma, beta)
    bad = X.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"X: contains NaN"):
        fwd(bad, gamma, beta)
    with pytest.raises(ValueError, match="-D"):
        fwd(X[0], gamma, beta)
    with pytest.raises(ValueError, match="impl"):
        fwd(X, gamma, beta, impl="fast")
    _, mean, rstd = fwd(X, gamma, beta)
    with pytest.raises(ValueError, match="dY"):
        BACKWARD[which](dY[:, :2], X, gamma, mean, rstd)
    with pytest.raises(ValueError, match="mean"):
        BACKWARD[which](dY, X, gamma, mean[:-1], rstd)


def test_batchnorm_refuses_a_batch_of_one(rng):
    """One value per channel has no variance: PyTorch refuses it in training mode, so do we."""
    with pytest.raises(ValueError, match="more than one value per channel"):
        lp.batchnorm_forward(np.ones((3, 1)), np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="more than one value per channel"):
        lp.batchnorm_forward(np.ones((2, 1, 1, 1)), np.ones(2), np.zeros(2))
    # spatial batch norm with one example still has H·W values per channel
    Y, _, _ = lp.batchnorm_forward(rand(rng, (2, 3, 3, 1)), np.ones(2), np.zeros(2))
    assert np.isfinite(Y).all()


@pytest.mark.parametrize("which", ["batchnorm", "layernorm"])
@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 5, 6)])
def test_bench_norm_workloads_compute_the_same_thing(which, shape):
    """The benchmark's lean NumPy rows compute what loopprop computes (else the ratio lies)."""
    from loopprop.bench import norm_workload

    fns = norm_workload(which, shape, with_torch=False)
    for name, mine, ref in zip(("dX", "dgamma", "dbeta"), fns["loopprop"](), fns["numpy"]()):
        assert_close(name, mine.reshape(ref.shape), ref, 1e-12)
