"""The common mistakes of guide §12, each either caught by loopprop or made impossible.

Each test builds the mistake by hand, shows that finite differences expose it (so the test could
fail), and shows that loopprop's function gets it right or refuses the input.
"""

import numpy as np
import pytest
from helpers import assert_close, numeric_grad, rand

import loopprop as lp


def test_wrong_matrix_shapes_are_refused_with_the_transpose_hint(rng):
    """§12 "Wrong matrix shapes": dW = dZ·A_prevᵀ needs the transpose."""
    W, A_prev, dZ = rand(rng, (3, 4)), rand(rng, (4, 5)), rand(rng, (3, 5))
    # the mistake: forgetting the transpose does not even type-check as a matrix product
    with pytest.raises(ValueError):
        dZ @ A_prev  # noqa: B018  (3,5)·(4,5)
    # loopprop refuses a transposed A_prev and says which transpose is missing
    with pytest.raises(ValueError, match=r"A_prev looks transposed: pass A_prev.T"):
        lp.dense_backward(dZ, W, A_prev.T)
    with pytest.raises(ValueError, match=r"pass A_prev.T"):
        lp.dense_forward(W, np.zeros(3), A_prev.T)
    dW, _, _ = lp.dense_backward(dZ, W, A_prev)
    assert dW.shape == W.shape


def test_missing_activation_derivative_is_caught_by_finite_differences(rng):
    """§12 "Missing activation derivative": dZ = dA ⊙ f'(Z), never dZ = dA."""
    Z, G = rand(rng, (3, 4)), rand(rng, (3, 4))

    def loss():
        return float((G * lp.activation_forward("sigmoid", Z)).sum())

    fd = numeric_grad(loss, Z)
    wrong = G  # the mistake: passing dA straight through as dZ
    assert np.max(np.abs(wrong - fd)) > 0.1
    assert_close("dZ", lp.activation_backward("sigmoid", G, Z), fd, 1e-6)


def test_wrong_softmax_gradient_is_not_made(rng):
    """§12 "Wrong softmax gradient": softmax is not elementwise; use P − Y with cross-entropy."""
    Z = rand(rng, (4, 3))
    y = np.array([0, 2, 3])
    fd = numeric_grad(lambda: lp.softmax_cross_entropy(Z, y)[0], Z)
    # the mistake: treating softmax like a sigmoid, f'(z) = p(1 − p) elementwise
    P = lp.activation_forward("softmax", Z)
    Y = np.eye(4)[:, y]
    dA = -(Y / P) / 3  # dL/dA of cross-entropy
    wrong = dA * P * (1 - P)
    assert np.max(np.abs(wrong - fd)) > 0.01
    # loopprop: the fused shortcut and the full Jacobian-vector product both agree with FD
    _, dZ = lp.softmax_cross_entropy(Z, y)
    assert_close("dZ = (P − Y)/m", dZ, fd, 1e-6)
    assert_close("dZ via Jacobian", lp.activation_backward("softmax", dA, Z), fd, 1e-6)


def test_bias_gradient_sums_over_the_batch(rng):
    """§12 "Forgetting sum over batch": db = sum(dZ, axis=1), one entry per neuron."""
    W, b, A_prev, G = rand(rng, (3, 4)), rand(rng, 3), rand(rng, (4, 6)), rand(rng, (3, 6))
    fd = numeric_grad(lambda: float((G * lp.dense_forward(W, b, A_prev)).sum()), b)
    for wrong in (G[:, 0], G.mean(axis=1)):  # the mistakes: one example, or a mean
        assert np.max(np.abs(wrong - fd)) > 0.1
    _, db, _ = lp.dense_backward(G, W, A_prev)
    assert db.shape == (3,)
    assert_close("db", db, fd, 1e-6)


def test_loss_scaling_lives_in_one_place(rng):
    """The 1/m lives in the loss seed only: doubling the batch by repetition leaves dW unchanged."""
    W, A_prev = rand(rng, (2, 3)), rand(rng, (3, 4))
    y = np.array([0, 1, 1, 0])

    def dW_for(A, labels):
        Z = lp.dense_forward(W, np.zeros(2), A)
        _, dZ = lp.softmax_cross_entropy(Z, labels)
        return lp.dense_backward(dZ, W, A)[0]

    assert_close("dW", dW_for(np.hstack([A_prev, A_prev]), np.hstack([y, y])),
                 dW_for(A_prev, y), 1e-12)
