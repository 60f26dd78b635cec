"""Activations and their derivatives (guide §8): dZ = dA ⊙ f'(Z); softmax per column."""

import numpy as np
import pytest
from helpers import DTYPES, RTOL, SIZES, assert_close, numeric_grad, rand, torch_or_skip

import loopprop as lp
from loopprop import vectorized as vec
import numba

NAMES = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "softmax"]


def torch_activation(torch, name, z, alpha):
    F = torch.nn.functional
    return {
        "identity": lambda: z * 1,
        "sigmoid": lambda: torch.sigmoid(z),
        "tanh": lambda: torch.tanh(z),
        "relu": lambda: torch.relu(z),
        "leaky_relu": lambda: F.leaky_relu(z, alpha),
        "softmax": lambda: torch.softmax(z, dim=0),  # over each column: examples are columns
    }[name]()


IMPLS = ["tuned", "naive"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,m", [(1, 1), (3, 17), (17, 3), (33, 1)])
def test_matches_vectorized_twin(rng, impl, name, dtype, n, m):
    Z = rand(rng, (n, m), dtype, scale=3)
    dA = rand(rng, (n, m), dtype)
    rtol = RTOL[np.dtype(dtype)]
    A = lp.activation_forward(name, Z, alpha=0.05, impl=impl)
    assert A.dtype == dtype
    assert_close(f"{name} A", A, vec.activation_forward(name, Z, 0.05), rtol)
    dZ = lp.activation_backward(name, dA, Z, alpha=0.05, impl=impl)
    assert dZ.dtype == dtype
    assert_close(f"{name} dZ", dZ, vec.activation_backward(name, dA, Z, 0.05), rtol)


@pytest.mark.parametrize("name", NAMES)
def test_backward_matches_finite_differences(rng, name):
    Z = rand(rng, (4, 3), scale=2)
    G = rand(rng, (4, 3))

    def loss():
        return float((G * lp.activation_forward(name, Z, alpha=0.1)).sum())

    assert_close(f"{name} dZ", lp.activation_backward(name, G, Z, alpha=0.1),
                 numeric_grad(loss, Z), 1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,m", [(1, 1), (5, 7), (17, 33)])
def test_matches_torch_autograd(rng, name, dtype, n, m):
    """The default (tuned) kernels against torch autograd."""
    torch = torch_or_skip()
    Z = rand(rng, (n, m), dtype, scale=3)
    dA = rand(rng, (n, m), dtype)
    tz = torch.tensor(Z, requires_grad=True)
    ta = torch_activation(torch, name, tz, 0.05)
    (ta * torch.tensor(dA)).sum().backward()
    rtol = RTOL[np.dtype(dtype)]
    assert_close(f"{name} A", lp.activation_forward(name, Z, 0.05), ta.detach().numpy(), rtol)
    assert_close(f"{name} dZ", lp.activation_backward(name, dA, Z, 0.05), tz.grad.numpy(), rtol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_columns_are_distributions(rng, dtype):
    A = lp.activation_forward("softmax", rand(rng, (7, 9), dtype, scale=5))
    assert (A > 0).all()
    assert_close("column sums", A.sum(axis=0), np.ones(9), RTOL[np.dtype(dtype)])


@pytest.mark.parametrize("name", ["relu", "leaky_relu"])
def test_derivative_at_the_kink_follows_the_guide(name):
    """§8: ReLU's f'(0) is taken as 0; leaky ReLU's slope α applies for z ≤ 0."""
    dZ = lp.activation_backward(name, np.ones((1, 1)), np.zeros((1, 1)), alpha=0.2)
    assert dZ[0, 0] == (0.0 if name == "relu" else 0.2)


@pytest.mark.parametrize("size", SIZES)
def test_shapes_are_preserved(rng, size):
    Z = rand(rng, (size, 2))
    for name in NAMES:
        assert lp.activation_forward(name, Z).shape == (size, 2)


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_tuned_float32_is_within_one_ulp_of_the_exact_value(name):
    """float32 results come from float64 arithmetic with shorter polynomials: against the exact
    value (the NumPy twin in float64) they must stay within one float32 ulp (relative 2⁻²³) on
    200 000 random points where the functions bend. (The naive float32 kernel is no oracle
    here: float32 libm is itself up to ~2.7·2⁻²⁴ away from the exact value.)"""
    z = np.random.default_rng(7).uniform(-20, 20, 200_000).reshape(1, -1)
    tuned = lp.activation_forward(name, z.astype(np.float32), impl="tuned")
    exact = vec.activation_forward(name, z.astype(np.float32).astype(np.float64))
    rel = np.abs(tuned - exact) / np.abs(exact)
    assert rel.max() <= 2.0**-23, f"{name}: {rel.max():.2e} at z = {z.ravel()[rel.argmax()]}"


def test_tuned_float32_gelu_tanh_error_bounds():
    """GPT-2's GELU in float32 runs in float32 arithmetic, 16 lanes a register (``z / (1 +
    exp(−2u))``). Against the exact value (long double): within 24 ulp for |z| ≤ 4, within
    200 ulp down to z = −10 (the tail ``z·e^{2u}``: the rounding of the argument ``−2u``,
    up to 89, is amplified by its size), within 1.5 ulp for z ≥ 4; below z ≈ −10.03 ``e``
    overflows and the result is −0, off by less than 3e-38 (the float32 normal range ends at
    1.2e-38). The derivative within 3e-7
    (it is of order 1). PyTorch's float32 ``gelu(approximate="tanh")`` is 8 000 ulp off at z =
    −3 and returns 0 or noise below −4 (``½z(1 + tanh u)`` cancels)."""

    n = 4_000 if numba.config.DISABLE_JIT else 1_000_000
    rng = np.random.default_rng(13)
    z = np.concatenate([rng.uniform(-4, 4, n), rng.uniform(-12, 20, n)]).astype(np.float32)
    x = z.astype(np.longdouble)
    k, c = np.longdouble(0.7978845608028654), np.longdouble(0.044715)
    e = np.exp(-2 * k * (x + c * x**3))
    exact = x / (1 + e)
    got = lp.activation_forward("gelu_tanh", z.reshape(1, -1), impl="tuned").ravel()
    err = np.abs(got.astype(np.longdouble) - exact)
    ulp = (err / np.spacing(np.abs(exact).astype(np.float32)).astype(np.longdouble)).astype(float)
    for lo, hi, bound in [(-4, 4, 24), (-10, -4, 200), (4, 20, 1.5)]:
        band = (z >= lo) & (z <= hi)
        assert ulp[band].max() <= bound, f"[{lo}, {hi}]: {ulp[band].max():.1f} ulp"
    assert err[z < -10].max() < 3e-38
    s = 1 / (1 + e)
    slope = s + x * s * (e * s) * 2 * k * (1 + 3 * c * x * x)
    dz = lp.activation_backward("gelu_tanh", np.ones((1, z.size), np.float32), z.reshape(1, -1),
                                impl="tuned").ravel()
    assert float(np.abs(dz.astype(np.longdouble) - slope).max()) <= 3e-7


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_tuned_equals_naive_over_the_whole_range(name, dtype):
    """The vectorizable exp/tanh of the tuned kernels against libm (the naive kernels), from
    tiny to saturated values, including the 0.25 switch of tanh and exp's subnormal range."""
    z = np.concatenate([np.geomspace(1e-300, 800, 4001), [0.0, 0.25, 0.2499999, 709.5, 745.2]])
    Z = np.concatenate([z, -z]).reshape(2, -1).astype(dtype)
    naive = lp.activation_forward(name, Z, impl="naive")
    tuned = lp.activation_forward(name, Z, impl="tuned")
    tol = 4e-16 if dtype == np.float64 else 1.2e-7
    normal = np.abs(naive) >= np.finfo(dtype).tiny  # subnormals carry fewer digits
    rel = np.abs(tuned[normal].astype(float) - naive[normal]) / np.abs(naive[normal])
    worst = Z[normal][rel.argmax()]
    assert rel.max() <= tol, f"{name}: worst relative error {rel.max():.2e} at {worst}"
    assert np.max(np.abs(tuned[~normal].astype(float) - naive[~normal])) <= np.finfo(dtype).tiny
    dA = np.ones_like(Z)
    assert_close("dZ", lp.activation_backward(name, dA, Z, impl="tuned"),
                 lp.activation_backward(name, dA, Z, impl="naive"), RTOL[np.dtype(dtype)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "leaky_relu", "gelu_tanh",
                                  "softmax"])
def test_threaded_activations_split_without_changing_a_bit(rng, name, dtype):
    """The training rows run activations split across threads: every element must come out
    with the same bits as the one-call kernel, on any thread count (the GPT's GELU rows)."""

    from loopprop.kernels.activations import (ELEMENTWISE_MIN, _activation_backward_threads,
                                              _activation_backward_tuned,
                                              _activation_forward_threads,
                                              _activation_forward_tuned, activation_code)

    code = activation_code(name)
    n, m = 7, ELEMENTWISE_MIN // 3 + 5  # 2.3 × ELEMENTWISE_MIN elements: a split mid-row
    Z = (4 * rng.standard_normal((n, m))).astype(dtype)
    dA = rng.standard_normal((n, m)).astype(dtype)
    A1 = np.empty_like(Z)
    _activation_forward_tuned(A1, Z, code, 0.01)
    dZ1 = rng.standard_normal((n, m)).astype(dtype)
    dZ0 = dZ1.copy()
    _activation_backward_tuned(dZ1, dA, Z, A1, code, 0.01, True)
    for threads in range(1, numba.config.NUMBA_NUM_THREADS + 1):
        A = np.empty_like(Z)
        _activation_forward_threads(A, Z, code, 0.01, threads)
        assert np.array_equal(A, A1), threads
        dZ = dZ0.copy()
        _activation_backward_threads(dZ, dA, Z, A, code, 0.01, True, threads)
        assert np.array_equal(dZ, dZ1), threads


SPECIAL = np.array([[np.nan, np.inf, -np.inf, 0.0, -0.0, 2.5, -2.5]])


@pytest.mark.parametrize("impl", ["tuned", "naive"])
@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "tanh", "identity"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_activations_propagate_nan_and_inf_as_their_formula(impl, name, dtype):
    Z = SPECIAL.astype(dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        want = {"relu": np.maximum(Z, 0),  # NumPy: NaN stays NaN, relu(−inf) = 0
                "leaky_relu": np.where(np.isnan(Z), Z, np.where(Z > 0, Z, 0.01 * Z)),
                "sigmoid": 1 / (1 + np.exp(-Z.astype(np.float64))),
                "tanh": np.tanh(Z), "identity": Z}[name]
    got = lp.activation_forward(name, Z, impl=impl, check_finite=False)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[~np.isnan(want)], want[~np.isnan(want)], rtol=1e-6)
    dZ = lp.activation_backward(name, np.ones_like(Z), Z, impl=impl, check_finite=False)
    if name != "identity":  # identity' = 1 whatever z is: dZ = dA
        assert np.isnan(dZ[0, 0]), f"{name}'(NaN) must be NaN, got {dZ[0, 0]}"


def test_activations_match_torch_on_nan_and_inf():
    torch = torch_or_skip()
    t = torch.tensor(SPECIAL)
    for name, fn in (("relu", torch.relu), ("sigmoid", torch.sigmoid), ("tanh", torch.tanh),
                     ("leaky_relu", lambda v: torch.nn.functional.leaky_relu(v, 0.01))):
        for impl in ("tuned", "naive"):
            got = lp.activation_forward(name, SPECIAL, impl=impl, check_finite=False)
            np.testing.assert_allclose(got, fn(t).numpy(), rtol=1e-12, err_msg=f"{name} {impl}")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", NAMES + ["gelu", "gelu_tanh"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_given_the_forwards_output_equals_it_computed(rng, impl, name, dtype):
    """activation_backward(..., A=activation_forward(...)) reads A instead of computing f(Z)
    again: the same bits as without it."""
    Z = rand(rng, (5, 7), dtype, scale=3)
    dA = rand(rng, (5, 7), dtype)
    A = lp.activation_forward(name, Z, alpha=0.05, impl=impl)
    np.testing.assert_array_equal(lp.activation_backward(name, dA, Z, 0.05, A=A, impl=impl),
                                  lp.activation_backward(name, dA, Z, 0.05, impl=impl))


def test_backward_refuses_an_output_that_cannot_be_the_forwards():
    Z = np.ones((3, 4))
    with pytest.raises(ValueError, match="A .*shape"):
        lp.activation_backward("tanh", Z, Z, A=np.ones((4, 3)))
    with pytest.raises((TypeError, ValueError), match="dtype"):
        lp.activation_backward("tanh", Z, Z, A=np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match="A"):
        lp.activation_backward("tanh", Z, Z, A=np.full((3, 4), np.nan))
