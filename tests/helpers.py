"""Reference helpers shared by the tests: tolerances, comparisons that print both sides, oracles.

Three independent oracles: the vectorized NumPy twin (``loopprop.vectorized``),
centered finite differences (:func:`numeric_grad`), and PyTorch autograd (:func:`torch_or_skip`).
"""

from __future__ import annotations

import numpy as np
import pytest

DTYPES = [np.float64, np.float32]
#: relative tolerance against the twin and torch: tight in float64, looser in float32
RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 2e-4}
#: shapes that include 1 and odd sizes that do not divide the 4×4 blocks or 32×32 tiles
SIZES = [1, 3, 17, 33]


def assert_close(name: str, mine, ref, rtol: float) -> None:
    """``mine`` equals ``ref`` to ``rtol`` relative to the largest entry of ``ref``.

    The scale-aware absolute floor keeps entries that cancel to near zero from failing a pure
    elementwise relative test; the message prints both sides (numpy-ml style).
    """
    mine = np.asarray(mine, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert mine.shape == ref.shape, f"{name}: shape {mine.shape} != reference {ref.shape}"
    scale = max(float(np.max(np.abs(ref))) if ref.size else 0.0, 1e-30)
    err = float(np.max(np.abs(mine - ref))) if ref.size else 0.0
    assert err <= rtol * scale, (
        f"{name}: max |mine − ref| = {err:.3e} > {rtol:g} × {scale:.3e}\n"
        f"mine:\n{mine}\nreference:\n{ref}"
    )


def rand(rng, shape, dtype=np.float64, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def numeric_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Centered finite differences ``(f(x + ε e_p) − f(x − ε e_p)) / 2ε`` for every entry p."""
    g = np.zeros_like(x, dtype=np.float64)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        idx = it.multi_index
        old = x[idx]
        x[idx] = old + eps
        fp = f()
        x[idx] = old - eps
        fm = f()
        x[idx] = old
        g[idx] = (fp - fm) / (2 * eps)
    return g


def torch_or_skip():
    """Import torch in float64 mode, or skip the test cleanly when it is not installed."""
    torch = pytest.importorskip("torch",
                                reason="torch not installed: the autograd oracle is optional")
    return torch


def run_cli(*args, cwd=None, timeout=900):
    """``python -m loopprop ARGS`` in a subprocess: its CompletedProcess (text)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "loopprop", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def one_line_error(r, pattern: str) -> None:
    """The CLI failed with exit status 2 and one line ``loopprop: error: …`` holding
    ``pattern``, and no traceback."""
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("loopprop: error:"), r.stderr
    assert pattern in lines[0], lines[0]
    assert "Traceback" not in r.stderr


def python_loop(net, X, y, epochs: int, bs: int, lr: float) -> None:
    """What ``fit(..., shuffle=False, optimizer="sgd")`` does, one Python call per step."""
    for _ in range(epochs):
        for s in range(0, X.shape[-1], bs):
            net.zero_grad()
            net.forward(X[..., s:s + bs])
            net.backward(y[s:s + bs])
            net.step(lr)


#: the hidden activations and the (loss, output activation) pairs every whole-network test runs
HIDDEN = ["identity", "sigmoid", "tanh", "relu", "leaky_relu"]
HEADS = [("mse", "identity"), ("mse", "sigmoid"), ("mse", "softmax"),
         ("cross_entropy", "softmax"), ("binary_cross_entropy", "sigmoid")]


def problem(rng, loss, sizes, m):
    """Inputs ``(sizes[0], m)`` and targets as ``loss`` takes them: labels for cross-entropy,
    0/1 for binary cross-entropy, real values for mse."""
    X = rand(rng, (sizes[0], m))
    if loss == "cross_entropy":
        return X, rng.integers(0, sizes[-1], m)
    if loss == "binary_cross_entropy":
        return X, rng.integers(0, 2, (sizes[-1], m)).astype(float)
    return X, rand(rng, (sizes[-1], m))


def python_sgd_epochs(net, X, y, epochs: int, batch_size: int, lr: float) -> None:
    """What ``fit(shuffle=False)`` with plain SGD does, as a Python loop of ``zero_grad``,
    ``forward``, ``backward`` and ``step(lr)`` over the batches in order (the last partial)."""
    n = X.shape[-1]
    for _ in range(epochs):
        for s in range(0, n, batch_size):
            net.zero_grad()
            net.forward(X[..., s:s + batch_size])
            net.backward(y[..., s:s + batch_size])
            net.step(lr)


def torch_adamw_losses(torch, forward, params: dict, decay: list, X, Y, vocab: int, steps: int,
                       lr: float, clip: float, weight_decay: float = 0.1) -> list[float]:
    """``steps`` AdamW steps (β 0.9, 0.95; decay on ``decay`` only; clipping at ``clip``) of a
    PyTorch language model ``forward(ids (m, T)) -> logits (m, T, V)`` on one batch ``X, Y``
    (``(T, m)`` each): the loss before each step, the reference a ``fit`` is held to."""
    rest = [p for p in params.values() if not any(p is q for q in decay)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=lr,
                            betas=(0.9, 0.95), eps=1e-8)
    ids, labels = torch.tensor(X.T), torch.tensor(Y.T).reshape(-1)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(forward(ids).reshape(-1, vocab), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), clip)
        opt.step()
        losses.append(loss.item())
    return losses


def assert_lm_step_equals_torch(torch, net, X, Y, forward, params: dict, grads, vocab: int,
                                rtol: float = 1e-9) -> None:
    """One step of the language model ``net`` on ``X, Y`` (``(T, m)`` each) against its PyTorch
    twin ``forward(ids (m, T)) -> logits (m, T, V)`` with leaves ``params`` by loopprop's names:
    the probabilities, the loss and every gradient by name (``grads(net)``: name → array)."""
    logits = forward(torch.tensor(X.T))
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab),
                                             torch.tensor(Y.T).reshape(-1))
    loss.backward()
    P = net.forward(X)  # (V, T, m) probabilities
    assert_close("probabilities", P,
                 torch.softmax(logits, -1).detach().numpy().transpose(2, 1, 0), rtol)
    net.zero_grad()
    ours = net.backward(Y)
    assert abs(ours - loss.item()) <= rtol * abs(loss.item())
    mine = grads(net)
    assert set(mine) == set(params)
    for name, g in mine.items():
        assert_close(name, g, params[name].grad.numpy(), rtol)
