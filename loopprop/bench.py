"""``loopprop bench``: the headline workloads, loopprop against vectorized NumPy (and PyTorch
eager when installed), timed side by side in one run.

Each row runs every implementation in turn, several rounds, and keeps the best time of each (the
machine is shared and noisy; the minimum is the least disturbed run). Every turn starts with an
pause and an untimed call, so that one library's spinning worker threads (OpenBLAS keeps them
busy for about 0.1 s after a call) do not land in another's timing. Ratios are
``other time / loopprop time``: above 1, loopprop is faster.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Callable

import numba
import numpy as np

from . import vectorized as vec
from .kernels.activations import (SIGMOID, TANH, _activation_backward_threads,
                                  _activation_forward_threads, activation_backward,
                                  activation_forward)
from .kernels.conv import conv2d_backward, conv2d_forward
from .kernels.dense import dense_backward, dense_forward
from . import models
from .bench_sequence import (CHAR_RNN, GPTS, attention_workload,  # noqa: F401 - asv
                             best_step_time, char_rnn_workload, gpt_workload,  # reads them
                             lstm_workload)  # as loopprop.bench.*
from .bench_torch import torch_or_none, torch_twin
from .network import Network


def best_time(fns: dict[str, Callable[[], object]], rounds: int, min_time: float = 0.05,
              settle: float = 0.15) -> dict[str, float]:
    """Best seconds per call of each function, the functions interleaved round by round."""
    for f in fns.values():  # warm up: compile, fill caches
        f()
    reps = {}
    for name, f in fns.items():
        t0 = time.perf_counter()
        f()
        dt = time.perf_counter() - t0
        reps[name] = max(1, int(min_time / max(dt, 1e-9)))
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, f in fns.items():
            # the previous implementation's worker threads (OpenBLAS, OpenMP) keep spinning on
            # the cores for a while after their last call: let them go to sleep, then make one
            # untimed call
            time.sleep(settle)
            f()
            t0 = time.perf_counter()
            for _ in range(reps[name]):
                f()
            best[name] = min(best[name], (time.perf_counter() - t0) / reps[name])
    return best


def _data(n_in: int, n_out: int, n: int, dtype, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_in, n)).astype(dtype)
    y = rng.integers(0, n_out, n)
    return X, y


def epoch_workload(sizes: list[int], batch: int, n: int, dtype: str = "float64",
                   with_torch: bool = True) -> dict[str, Callable[[], object]]:
    """One training epoch (SGD, ReLU hidden, softmax + CE) three ways, on the same data."""
    X, y = _data(sizes[0], sizes[-1], n, dtype)
    acts = ["relu"] * (len(sizes) - 2) + ["softmax"]
    net = Network(sizes, acts, "cross_entropy", dtype=dtype, seed=0)
    params = [(W.copy(), b.copy()) for W, b in net.params]
    fns: dict[str, Callable[[], object]] = {
        "loopprop": lambda: net.fit(X, y, epochs=1, batch_size=batch, lr=0.01, shuffle=False,
                                    progress=False),
        # the leanest NumPy epoch (one @ per product, no validation), not the readable twin
        "numpy": lambda: vec.train_epoch_lean(params, X, y, batch, 0.01, acts),
    }
    torch = torch_or_none() if with_torch else None
    if torch is not None:
        tdt = torch.float64 if dtype == "float64" else torch.float32
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [torch.nn.Linear(a, b).to(tdt), torch.nn.ReLU()]
        model = torch.nn.Sequential(*layers[:-1])
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        tX = torch.tensor(X.T.copy())  # torch wants examples as rows
        ty = torch.tensor(y)

        def torch_epoch():
            for s in range(0, n, batch):
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(tX[s:s + batch]), ty[s:s + batch])
                loss.backward()
                opt.step()

        fns["torch"] = torch_epoch
    return fns


def dense_workload(n_out: int, n_in: int, m: int, dtype: str, mode: str = "alloc"
                   ) -> dict[str, Callable]:
    """Dense forward + backward (``Z = W·A + b``; ``dW, db, dA_prev``): loopprop's tuned loops
    vs NumPy's ``@`` (OpenBLAS), like for like:

    * ``mode="alloc"``: both allocate their results. loopprop through ``dense_forward`` and
      ``dense_backward`` (NaN scan off, as NumPy has none), NumPy as its users write it.
    * ``mode="out"``: both write into arrays allocated once: loopprop's kernels, NumPy's
      ``np.matmul(..., out=)`` and ``np.sum(..., out=)``.
    """
    from .kernels import dense

    rng = np.random.default_rng(0)
    W = rng.standard_normal((n_out, n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    A = rng.standard_normal((n_in, m)).astype(dtype)
    dZ = rng.standard_normal((n_out, m)).astype(dtype)
    Z, dW, db, dA = (np.empty((n_out, m), dtype), np.empty_like(W), np.empty(n_out, dtype),
                     np.empty_like(A))
    Zn, dWn, dbn, dAn = np.empty_like(Z), np.empty_like(dW), np.empty_like(db), np.empty_like(dA)
    A_T = np.empty((m, n_in), dtype)
    par = numba.get_num_threads()

    if mode == "alloc":
        def loops():
            Z = dense_forward(W, b, A, check_finite=False)
            return (Z, *dense_backward(dZ, W, A, check_finite=False))

        def numpy():
            return (W @ A + b[:, None], dZ @ A.T, dZ.sum(axis=1), W.T @ dZ)
    else:
        def loops():
            dense._dense_forward_tuned(Z, W, b, A, A_T, par)
            dW[...] = 0  # the gradients accumulate: start from zero, as NumPy's are fresh
            db[...] = 0
            dA[...] = 0
            dense._dense_layer_backward(dW, db, dA, dZ, W, A, A_T, True, par)
            return Z, dW, db, dA

        def numpy():
            np.matmul(W, A, out=Zn)
            np.add(Zn, b[:, None], out=Zn)
            np.matmul(dZ, A.T, out=dWn)
            np.sum(dZ, axis=1, out=dbn)
            np.matmul(W.T, dZ, out=dAn)
            return Zn, dWn, dbn, dAn

    return {"loopprop": loops, "numpy": numpy}


def elementwise_workload(name: str, size: int, dtype: str, mode: str = "alloc"
                         ) -> dict[str, Callable]:
    """An activation forward + backward over ``size`` values (A = f(Z), dZ = dA ⊙ f'(Z)), like
    for like:

    * ``mode="alloc"``: both allocate their results. loopprop through its public functions
      (``activation_forward``, then ``activation_backward`` given the forward's ``A``, as a
      caller who has it passes it), NumPy as its users write it (``a = np.tanh(Z); dA * (1 -
      a*a)``).
    * ``mode="out"``: both write into arrays allocated once. loopprop's kernels as the epoch
      runs them (one contiguous range per thread), NumPy's ufuncs with ``out=``.
    """
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((1000, size // 1000)).astype(dtype)
    dA = rng.standard_normal(Z.shape).astype(dtype)
    A, dZ = np.empty_like(Z), np.empty_like(Z)  # loopprop's buffers
    An, dZn, T = np.empty_like(Z), np.empty_like(Z), np.empty_like(Z)  # NumPy's
    code = {"sigmoid": SIGMOID, "tanh": TANH}[name]
    threads = numba.get_num_threads()

    if mode == "alloc":
        def loops():
            A = activation_forward(name, Z, check_finite=False)
            return activation_backward(name, dA, Z, A=A, check_finite=False)

        def numpy():
            if name == "sigmoid":
                a = 1.0 / (1.0 + np.exp(-Z))  # the plain NumPy idiom (overflow-safe here)
                return dA * a * (1 - a)
            a = np.tanh(Z)
            return dA * (1 - a * a)
    else:
        def loops():
            _activation_forward_threads(A, Z, code, 0.01, threads)
            _activation_backward_threads(dZ, dA, Z, A, code, 0.01, False, threads)
            return dZ

        def numpy():
            if name == "sigmoid":
                np.negative(Z, out=An)
                np.exp(An, out=An)
                np.add(An, 1.0, out=An)
                np.reciprocal(An, out=An)  # A = σ(Z)
                np.subtract(1.0, An, out=T)
                np.multiply(T, An, out=T)
            else:
                np.tanh(Z, out=An)
                np.multiply(An, An, out=T)
                np.subtract(1.0, T, out=T)
            return np.multiply(dA, T, out=dZn)

    return {"loopprop": loops, "numpy": numpy}


#: the CNN rows: description, image shape, batch size, images per epoch
CNNS = {
    "digits": ("the digits CNN without its dropout: conv 16 → pool → conv 32 → pool → dense 10",
               (1, 8, 8), 32, 1438),
    "lenet": ("conv 16×5×5 → pool → conv 32×5×5 → pool → dense 128 → 10", (1, 28, 28), 64,
              4000),
    "resnet": ("the mnist5k residual CNN with batch norm (loopprop train --model resnet)",
               (1, 28, 28), 32, 4000),
}


def cnn_layers(name: str) -> list:
    """The layers of a CNN row (:data:`CNNS`), from :mod:`loopprop.models`: the dropout of the
    digits CNN is left out (the NumPy baseline has none)."""
    if name == "resnet":
        return models.resnet_layers("mnist5k")
    if name == "digits":
        return models.cnn_layers("digits", dropout=0)
    return models.lenet_layers()


def lean_arch(layers) -> list[tuple]:
    """``layers`` in the terms of :func:`loopprop.vectorized.cnn_epoch_lean`: ``("conv",
    padding)``, ``("relu",)``, ``("pool",)``, ``("flatten",)``, ``("dense",)``; the closing
    ``Softmax`` is the loss's."""
    from .layers import Conv2d, Dense, Flatten, MaxPool2d, ReLU, Softmax

    arch = []
    for layer in layers:
        if isinstance(layer, Conv2d):
            if layer.padding[0] != layer.padding[1] or tuple(layer.stride) != (1, 1):
                raise ValueError(f"{layer!r}: the lean NumPy epoch takes square padding, stride 1")
            arch.append(("conv", layer.padding[0]))
        elif isinstance(layer, (ReLU, MaxPool2d, Flatten, Dense)):
            arch.append({ReLU: ("relu",), MaxPool2d: ("pool",), Flatten: ("flatten",),
                         Dense: ("dense",)}[type(layer)])
        elif not isinstance(layer, Softmax) or layer is not layers[-1]:
            raise ValueError(f"{layer!r}: the lean NumPy epoch has no such layer")
    return arch


def cnn_workload(name: str, dtype: str = "float64", with_torch: bool = True
                 ) -> dict[str, Callable[[], object]]:
    """One training epoch (plain SGD, batch as in :data:`CNNS`) of a CNN: loopprop's compiled
    ``fit`` against the same network in the leanest NumPy (im2col + ``@``, examples first) and
    in PyTorch eager."""
    _, shape, batch, n = CNNS[name]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((*shape, n)).astype(dtype)
    y = rng.integers(0, 10, n)
    net = Network(cnn_layers(name), loss="cross_entropy", input_shape=shape, dtype=dtype)
    fns: dict[str, Callable[[], object]] = {
        "loopprop": lambda: net.fit(X, y, epochs=1, batch_size=batch, lr=0.01, shuffle=False,
                                    progress=False)}
    if name != "resnet":  # (no lean NumPy residual network with batch norm: torch only)
        params = [(W.copy(), b.copy()) for W, b in net.params]
        X_first = np.ascontiguousarray(np.moveaxis(X, -1, 0))  # NumPy's preferred layout
        arch = lean_arch(net.layers)
        fns["numpy"] = lambda: vec.cnn_epoch_lean(params, arch, X_first, y, batch, 0.01)
    torch = torch_or_none() if with_torch else None
    if torch is not None:
        model, _ = torch_twin(torch, net, dtype)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        tX = torch.tensor(np.ascontiguousarray(np.moveaxis(X, -1, 0)))
        ty = torch.tensor(y)

        def torch_epoch():
            for s in range(0, n, batch):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(tX[s:s + batch]),
                                                  ty[s:s + batch]).backward()
                opt.step()

        fns["torch"] = torch_epoch
    return fns


def conv_workload(dtype: str = "float32", with_torch: bool = True) -> dict[str, Callable]:
    """conv2d forward + backward, 16 → 32 channels, 3×3, 28×28, no padding, batch 64:
    loopprop's public functions against ``F.conv2d`` and its autograd backward."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((32, 16, 3, 3)).astype(dtype)
    b = rng.standard_normal(32).astype(dtype)
    A = rng.standard_normal((16, 28, 28, 64)).astype(dtype)
    dZ = rng.standard_normal((32, 26, 26, 64)).astype(dtype)

    def loops():
        conv2d_forward(W, b, A, check_finite=False)
        return conv2d_backward(dZ, W, A, check_finite=False)

    fns: dict[str, Callable] = {"loopprop": loops}
    torch = torch_or_none() if with_torch else None
    if torch is not None:
        tA = torch.tensor(np.ascontiguousarray(np.moveaxis(A, -1, 0)), requires_grad=True)
        tW = torch.tensor(W, requires_grad=True)
        tb = torch.tensor(b, requires_grad=True)
        tdZ = torch.tensor(np.ascontiguousarray(np.moveaxis(dZ, -1, 0)))

        def torch_conv():
            tA.grad = tW.grad = tb.grad = None
            torch.nn.functional.conv2d(tA, tW, tb).backward(tdZ)

        fns["torch"] = torch_conv
    return fns


#: the normalization benchmarks: loopprop's layout (examples last), as the issue sizes them
NORM_SHAPES = {"256x4096": (256, 4096), "64x28x28x64": (64, 28, 28, 64)}


def norm_workload(which: str, shape: tuple, dtype: str = "float64", with_torch: bool = True
                  ) -> dict[str, Callable]:
    """Batch norm (``which="batchnorm"``, training mode) or layer norm forward + backward on
    ``X`` of ``shape`` (loopprop's layout: features first, examples last): loopprop's public
    functions against the leanest NumPy (every temporary preallocated, ``out=`` throughout)
    and PyTorch's ``batch_norm``/``layer_norm`` with autograd (its layout: examples first for
    batch norm, features last for layer norm)."""
    from .kernels.norm import (batchnorm_backward, batchnorm_forward, layernorm_backward,
                               layernorm_forward)

    rng = np.random.default_rng(0)
    X = rng.standard_normal(shape).astype(dtype)
    dY = rng.standard_normal(shape).astype(dtype)
    n = shape[0]
    g = (1.0 + rng.standard_normal(n)).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    eps = 1e-5
    bn = which == "batchnorm"
    fwd, bwd = (batchnorm_forward, batchnorm_backward) if bn else (layernorm_forward,
                                                                  layernorm_backward)

    def loops():
        _, mean, rstd = fwd(X, g, b, eps, check_finite=False)
        return bwd(dY, X, g, mean, rstd, check_finite=False)

    # NumPy: the statistics' axis of the 2-D view, and every buffer made once
    X2, dY2 = X.reshape(n, -1), dY.reshape(n, -1)
    ax, N = (1, X2.shape[1]) if bn else (0, n)
    xc, xhat, Y, dX, tmp = (np.empty_like(X2) for _ in range(5))
    col = (slice(None), None) if bn else (None, slice(None))  # broadcast a statistic
    par = (slice(None), None)  # broadcast a per-feature parameter

    def numpy():
        mu = X2.mean(axis=ax)
        np.subtract(X2, mu[col], out=xc)
        np.multiply(xc, xc, out=tmp)
        r = 1.0 / np.sqrt(tmp.mean(axis=ax) + eps)
        np.multiply(xc, r[col], out=xhat)
        np.multiply(xhat, g[par], out=Y)
        np.add(Y, b[par], out=Y)
        dbeta = dY2.sum(axis=1)
        np.multiply(dY2, xhat, out=tmp)
        dgamma = tmp.sum(axis=1)
        if bn:  # dX = γr/N·(N·dY − Σ dY − x̂·Σ dY·x̂), per row
            np.multiply(xhat, dgamma[col], out=dX)
            np.subtract(N * dY2, dX, out=dX)
            np.subtract(dX, dbeta[col], out=dX)
            np.multiply(dX, (g * r / N)[col], out=dX)
        else:  # ĝ = γ·dY; dX = r/n·(n·ĝ − Σ_i ĝ − x̂·Σ_i ĝ·x̂), per column
            np.multiply(dY2, g[par], out=tmp)
            s1 = tmp.sum(axis=0)
            np.multiply(tmp, xhat, out=dX)
            s2 = dX.sum(axis=0)
            np.multiply(xhat, s2[col], out=dX)
            np.subtract(n * tmp, dX, out=dX)
            np.subtract(dX, s1[col], out=dX)
            np.multiply(dX, (r / n)[col], out=dX)
        return dX, dgamma, dbeta

    fns: dict[str, Callable] = {"loopprop": loops, "numpy": numpy}
    torch = torch_or_none() if with_torch else None
    if torch is not None:
        F = torch.nn.functional
        if bn:  # (m, C, …): examples first
            tX = torch.tensor(np.ascontiguousarray(np.moveaxis(X, -1, 0)), requires_grad=True)
            tdY = torch.tensor(np.ascontiguousarray(np.moveaxis(dY, -1, 0)))
        else:  # (…, n): the normalized axis last
            tX = torch.tensor(np.ascontiguousarray(np.moveaxis(X, 0, -1)), requires_grad=True)
            tdY = torch.tensor(np.ascontiguousarray(np.moveaxis(dY, 0, -1)))
        tg = torch.tensor(g, requires_grad=True)
        tb = torch.tensor(b, requires_grad=True)

        def torch_norm():
            tX.grad = tg.grad = tb.grad = None
            if bn:
                out = F.batch_norm(tX, None, None, tg, tb, training=True, eps=eps)
            else:
                out = F.layer_norm(tX, (n,), tg, tb, eps=eps)
            out.backward(tdY)

        fns["torch"] = torch_norm
    return fns


def warm_start_seconds() -> float:
    """Seconds for ``loopprop train --epochs 1`` (digits) in a fresh interpreter, Numba cache and
    dataset copy filled by a first run: process start, imports, loading, the first epoch and the
    final evaluation (best of 3). Without scikit-learn, the same network on synthetic data."""
    from importlib.util import find_spec

    if find_spec("sklearn") is not None:
        cmd = [sys.executable, "-m", "loopprop", "train", "--epochs", "1", "--no-progress"]
    else:
        cmd = [sys.executable, "-c",
               "import numpy as np, loopprop as lp; "
               "X = np.random.default_rng(0).standard_normal((64, 1438)); "
               "y = np.arange(1438) % 10; "
               "lp.Network([64, 512, 10], ['relu', 'softmax'], 'cross_entropy').fit("
               "X, y, epochs=1, batch_size=32, lr=0.02, optimizer='momentum', progress=False)"]
    # the child imports the loopprop this process runs, whatever folder we are in (a checkout
    # named loopprop in the working directory once shadowed it, and the error was swallowed)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (here, os.environ.get("PYTHONPATH")) if p))

    def once() -> None:
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=here, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"warm start: {' '.join(cmd[1:3])} failed: "
                               f"{done.stderr.strip().splitlines()[-1:]}")

    once()  # fill the caches
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        once()
        best = min(best, time.perf_counter() - t0)
    return best


#: rows that take a minute or more each (their NumPy twins above all): ``--quick`` leaves them
#: out unless ``-k`` names them
SLOW_ROWS = ("CNN epoch, lenet", "CNN epoch, resnet", "GPT step", "char LSTM step")


def rows(dtype: str = "float64", quick: bool = False):
    """Yield ``(workload, thunk)`` for the headline workloads; ``thunk()`` times the row:
    ``{impl: seconds}``."""
    rounds = 3 if quick else 7
    yield ("epoch 64-32-10, batch 32, n=1797", lambda: best_time(
        epoch_workload([64, 32, 10], 32, 1797, dtype), rounds))
    yield ("epoch 784-128-10, batch 64, n=6400", lambda: best_time(
        epoch_workload([784, 128, 10], 64, 6400, dtype), rounds))
    for mode, label in (("alloc", "allocating"), ("out", "into buffers")):
        yield (f"dense fwd+bwd 1024x1024, b 256, {label}", lambda mode=mode: best_time(
            dense_workload(1024, 1024, 256, dtype, mode), rounds))
    for name in CNNS:
        yield (f"CNN epoch, {name}", lambda name=name: best_time(cnn_workload(name, dtype),
                                                                rounds))
    yield ("conv2d fwd+bwd 16→32, 3x3, 28x28, b 64", lambda: best_time(conv_workload(dtype),
                                                                         rounds))
    for which in ("batchnorm", "layernorm"):
        for label, shape in NORM_SHAPES.items():
            yield (f"{which} fwd+bwd {label}", lambda which=which, shape=shape: best_time(
                norm_workload(which, shape, dtype), rounds))
    # the best single step, every call's first step left out on both sides (gpt_workload)
    yield ("GPT step, 4 layers, 128 wide, T 64, b 16", lambda: best_step_time(
        gpt_workload("small", dtype, steps=10), rounds))
    yield ("attention fwd+bwd 12 heads x 64, T 256, b 8", lambda: best_time(
        attention_workload(dtype=dtype), rounds))
    yield ("LSTM fwd+bwd d 128, h 256, T 64, b 32", lambda: best_time(
        lstm_workload(dtype=dtype), rounds))
    yield ("char LSTM step, 2 x 256, T 64, b 32", lambda: best_step_time(
        char_rnn_workload(dtype, steps=10), rounds))
    for name in ("sigmoid", "tanh"):
        for mode, label in (("alloc", "allocating"), ("out", "into buffers")):
            yield (f"{name} fwd+bwd, 10^6 values, {label}", lambda name=name, mode=mode:
                   best_time(elementwise_workload(name, 10**6, dtype, mode), rounds))


def row_work(name: str, dtype: str) -> tuple[str, float, int] | None:
    """The work of the row ``name`` (its first column) as :mod:`loopprop.bench_roofline`
    counts it -- ``("flop", operations of the products, 0)`` or ``("byte", bytes moved at
    least, bytes its arrays occupy)`` -- or ``None`` for a row without a roof (the warm
    start)."""
    from . import bench_sequence
    from .bench_roofline import (attention_flops, gpt_flops, lstm_flops, mlp_flops,
                                 network_flops)

    size = np.dtype(dtype).itemsize
    if name.startswith("epoch 64-32-10"):
        return "flop", mlp_flops([64, 32, 10], 1797), 0
    if name.startswith("epoch 784-128-10"):
        return "flop", mlp_flops([784, 128, 10], 6400), 0
    if name.startswith("dense fwd+bwd 1024x1024"):
        return "flop", 3 * 2.0 * 1024 * 1024 * 256, 0
    if name.startswith("CNN epoch, "):
        key = name.split(", ", 1)[1]
        _, shape, _, n = CNNS[key]
        net = Network(cnn_layers(key), loss="cross_entropy", input_shape=shape,
                      dtype=dtype)
        return "flop", network_flops(net, n), 0
    if name.startswith("conv2d fwd+bwd 16→32"):
        return "flop", 3 * 2.0 * 32 * 16 * 9 * 26 * 26 * 64, 0
    if name.startswith(("batchnorm", "layernorm")):
        label = name.split()[-1]
        N = int(np.prod(NORM_SHAPES[label]))
        return "byte", 5.0 * N * size, 4 * N * size
    if name.startswith("GPT step"):
        n_layer, _, n_embd, block, batch, vocab = bench_sequence.GPTS["small"]
        return "flop", gpt_flops(n_layer, n_embd, block, batch, vocab), 0
    if name.startswith("attention fwd+bwd"):
        return "flop", attention_flops(12, 64, 256, 8), 0
    if name.startswith("LSTM fwd+bwd"):
        return "flop", lstm_flops(128, 256, 64, 32), 0
    if name.startswith("char LSTM step"):
        n_layer, hidden, n_embd, block, batch, vocab = bench_sequence.CHAR_RNN
        total = 0.0
        for i in range(n_layer):
            total += lstm_flops(n_embd if i == 0 else hidden, hidden, block, batch)
        return "flop", total + 3 * 2.0 * hidden * vocab * block * batch, 0
    if name.startswith(("sigmoid", "tanh")):
        N = 10 ** 6
        return "byte", 5.0 * N * size, 4 * N * size
    return None


def run(dtype: str = "float64", quick: bool = False, select: str | None = None,
        roofline: bool = False) -> list[tuple[str, dict[str, float]]]:
    """Print the table; return its rows. ``select``: only the rows whose name holds it
    (case-insensitive; ``"warm"`` selects the warm-start row). ``quick``: three rounds, and the
    rows of :data:`SLOW_ROWS` only when ``select`` names them. ``roofline``: measure the
    machine's peaks before and after the rows (:mod:`loopprop.peaks`; the higher of the two
    counts) and print, after the table, each row's rate as a fraction of its roof
    (:mod:`loopprop.bench_roofline`)."""
    from ._jit import WIDE_VECTORS

    print(f"loopprop bench: {dtype}, numba threads {numba.get_num_threads()}, "
          f"cpus {os.cpu_count()}, 512-bit vectors {'on' if WIDE_VECTORS else 'off'}, "
          f"numpy {np.__version__}, numba {numba.__version__}"
          + (f", torch {torch.__version__}" if (torch := torch_or_none()) else
             ", torch not installed"))
    print(f"{'workload':46s} {'loopprop':>11s} {'numpy':>11s} {'torch':>11s} "
          f"{'vs numpy':>9s} {'vs torch':>9s}", flush=True)
    pattern = select.lower() if select else None
    peaks = None
    if roofline:
        from .peaks import measure_peaks

        print("measuring the machine's peaks (FMA, read and copy bandwidth) ...", end="\r",
              file=sys.stderr, flush=True)
        peaks = measure_peaks(dtypes=(dtype,))
    out = []
    for name, thunk in rows(dtype, quick):
        if pattern is not None and pattern not in name.lower():
            continue
        if quick and pattern is None and name.startswith(SLOW_ROWS):
            continue
        print(f"{name:46s} (running ...)", end="\r", file=sys.stderr, flush=True)
        t = thunk()
        lp_t = t["loopprop"]
        cells = [f"{1e3 * t[k]:9.3f}ms" if k in t else f"{'—':>11s}"
                 for k in ("loopprop", "numpy", "torch")]
        ratios = [f"{t[k] / lp_t:8.2f}×" if k in t else f"{'—':>9s}" for k in ("numpy", "torch")]
        print(f"{name:46s} {' '.join(cells)} {' '.join(ratios)}", flush=True)
        out.append((name, t))
    name = "loopprop train --epochs 1, warm start"
    if pattern is None or pattern in name.lower() or pattern in "warm start":
        print(f"{name:46s} (running ...)", end="\r", file=sys.stderr, flush=True)
        ws = warm_start_seconds()
        print(f"{name:46s} {ws:10.3f}s")
        out.append(("warm start", {"loopprop": ws}))
    if not out:
        raise ValueError(f"-k: no workload matches {select!r}; the names are those of the "
                         "table's first column")
    print("ratios: other time / loopprop time (above 1: loopprop is faster); best of "
          f"{3 if quick else 7} interleaved rounds"
          + ("; --quick leaves out the slow rows (name them with -k)" if quick and not select
             else ""))
    if peaks is not None:
        from .bench_roofline import roofline_rows, roofline_table
        from .peaks import measure_peaks

        print("measuring the machine's peaks again ...", end="\r", file=sys.stderr, flush=True)
        peaks = peaks.best_of(measure_peaks(dtypes=(dtype,)))  # before and after the rows
        print()
        print(roofline_table(roofline_rows(out, peaks, dtype, numba.get_num_threads(),
                                           row_work), peaks))
    return out
