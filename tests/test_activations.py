"""Activations and their derivatives (guide §8): dZ = dA ⊙ f'(Z); softmax per column."""

import numpy as np
import pytest
from helpers import DTYPES, RTOL, SIZES, assert_close, numeric_grad, rand, torch_or_skip

import loopprop as lp
from loopprop import vectorized as vec

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


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,m", [(1, 1), (3, 17), (17, 3), (33, 1)])
def test_matches_vectorized_twin(rng, name, dtype, n, m):
    Z = rand(rng, (n, m), dtype, scale=3)
    dA = rand(rng, (n, m), dtype)
    rtol = RTOL[np.dtype(dtype)]
    A = lp.activation_forward(name, Z, alpha=0.05)
    assert A.dtype == dtype
    assert_close(f"{name} A", A, vec.activation_forward(name, Z, 0.05), rtol)
    dZ = lp.activation_backward(name, dA, Z, alpha=0.05)
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
