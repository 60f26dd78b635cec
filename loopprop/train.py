"""The compiled training loop: a whole epoch -- shuffle, minibatches, forward, loss, backward,
update -- in one call to compiled code, with no Python per batch (guide §6, §10, §12).

A network lives in flat buffers so that compiled code can walk any number of layers without
Python objects:

* ``theta`` (P,) holds every parameter, layer after layer: ``W^(l)`` (row-major, ``n_l × n_{l-1}``)
  then ``b^(l)``; ``w_off[l]`` is where ``W^(l)`` starts. ``grad`` (P,) mirrors it.
* ``Abuf`` holds the cached activations ``A^(0) … A^(L)`` of one batch, ``Zbuf`` the cached
  pre-activations ``Z^(1) … Z^(L)`` (guide §14: what the forward pass caches, backward reads).
* ``ATbuf`` holds the same activations transposed, ``A^(0)ᵀ … A^(L−1)ᵀ`` (each ``mb × n_l``, at
  the same offsets as in Abuf): the forward pass of a small layer writes them and its
  ``dW = dZ·A_prevᵀ`` reads them (a large layer's packed kernel reads ``A^(l−1)`` in place).
* ``dbuf0``/``dbuf1`` carry ``dZ^(l)`` and ``dA^(l−1)`` backward, in turn.

Layer ``l`` of the guide (1-based) is index ``l − 1`` here; ``sizes[l]`` is ``n_l``.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from ._jit import kernel, runtime_flag
from .kernels.activations import _activation_backward_tuned, _activation_forward_tuned
from .kernels.dense import (_RANK4_MAX_SUM, _dense_backward_tuned, _dense_forward_from_T,
                            _dense_forward_tuned, _packed, _transpose)
from .kernels.losses import (_mse, _sigmoid_binary_cross_entropy, _softmax_cross_entropy,
                             _softmax_cross_entropy_labels_tuned)
from .kernels.optim import _adam, _momentum, _sgd
from .kernels.rng import _shuffle
from .kernels.views import borrowed_matrix

MSE, CROSS_ENTROPY, BINARY_CROSS_ENTROPY = 0, 1, 2
LOSS_CODES = {"mse": MSE, "cross_entropy": CROSS_ENTROPY,
              "binary_cross_entropy": BINARY_CROSS_ENTROPY}
SGD, MOMENTUM, ADAM = 0, 1, 2
OPTIMIZERS = {"sgd": SGD, "momentum": MOMENTUM, "adam": ADAM}


# ---------------------------------------------------------------------------------------------
# compiled pieces of one step
# ---------------------------------------------------------------------------------------------


@kernel
def _view(buf, off, rows, cols):
    """``buf[off : off + rows·cols]`` seen as a C-ordered ``(rows, cols)`` matrix (no copy, and
    no reference count to update: :func:`~loopprop.kernels.views.borrowed_matrix`; every view
    lives inside one compiled call on buffers its caller holds)."""
    return borrowed_matrix(buf, off, rows, cols)


@kernel
def _forward_batch(theta, sizes, w_off, codes, alpha, Zbuf, Abuf, ATbuf, mb, threads,
                   output_activation, input_transposed):
    """Forward through every layer (guide §5–§6), caching each ``Z^(l)`` and ``A^(l)`` (§14).

    ``Z^(l) = W^(l)·A^(l−1) + b^(l)``; ``A^(l) = f_l(Z^(l))``. ``A^(0)`` (the inputs, ``n_0 × mb``)
    must already sit at the start of ``Abuf``. With ``output_activation`` false the last
    ``A^(L)`` is not computed: a fused loss (softmax or sigmoid + cross-entropy) starts from
    ``Z^(L)`` and never reads it. A small layer leaves its ``A^(l−1)ᵀ`` in ATbuf for the
    backward pass (:func:`~loopprop.kernels.dense._packed`).
    With ``input_transposed`` the inputs are already at the start of ATbuf as ``(mb, n_0)`` (the
    epoch gathers them that way) and layer 1 skips its transpose.
    """
    a_off = 0
    z_off = 0
    for l in range(codes.shape[0]):
        n_in = sizes[l]
        n_out = sizes[l + 1]
        W = _view(theta, w_off[l], n_out, n_in)
        b = theta[w_off[l] + n_out * n_in:w_off[l] + n_out * n_in + n_out]
        A_prev = _view(Abuf, a_off, n_in, mb)
        Z = _view(Zbuf, z_off, n_out, mb)
        A_T = _view(ATbuf, a_off, mb, n_in)
        if l == 0 and input_transposed:
            _dense_forward_from_T(Z, W, b, A_T, threads)
        else:
            _dense_forward_tuned(Z, W, b, A_prev, A_T, threads)
        a_off += n_in * mb
        if output_activation or l < codes.shape[0] - 1:
            _activation_forward_tuned(_view(Abuf, a_off, n_out, mb), Z, codes[l], alpha)
        z_off += n_out * mb


@kernel
def _last_offsets(sizes, mb):
    """Offsets of ``A^(L)`` in Abuf and of ``Z^(L)`` in Zbuf for a batch of mb.

    Abuf holds ``A^(0) … A^(L)`` and Zbuf ``Z^(1) … Z^(L)``, each ``n_l × mb``, in order.
    """
    before_last = 0
    for l in range(sizes.shape[0] - 1):
        before_last += sizes[l] * mb  # A^(0) … A^(L−1)
    return before_last, before_last - sizes[0] * mb


@kernel
def _loss_seed(dZ, ZL, AL, code_L, loss_code, alpha, Y, labels, one_hot, col1, col2):
    """The loss of the batch and the seed ``dZ^(L)`` of the backward pass (guide §6 step 1, §9).

    Cross-entropy and binary cross-entropy are fused with softmax / sigmoid (``dZ = (P − Y)/m``);
    MSE seeds ``dA = (A − Y)/m`` and then applies ``dZ = dA ⊙ f'(Z)`` in place.
    ``col1``, ``col2`` are per-example workspaces (≥ m).
    """
    if loss_code == CROSS_ENTROPY:
        if one_hot:
            return _softmax_cross_entropy(dZ, ZL, Y)
        return _softmax_cross_entropy_labels_tuned(dZ, ZL, labels, col1, col2)
    if loss_code == BINARY_CROSS_ENTROPY:
        return _sigmoid_binary_cross_entropy(dZ, ZL, Y)
    loss = _mse(dZ, AL, Y)
    _activation_backward_tuned(dZ, dZ, ZL, AL, code_L, alpha)
    return loss


@kernel
def _backward_batch(theta, grad, sizes, w_off, codes, alpha, Zbuf, Abuf, ATbuf, dbuf0, dbuf1,
                    work_WT, work_dZT, mb, threads, input_transposed):
    """Backward from ``dZ^(L)`` (at the start of dbuf0) to layer 1 (guide §6, steps 2–3).

    For l = L … 1: ``dW^(l) += dZ^(l)·A^(l−1)ᵀ``, ``db^(l) += Σ_k dZ^(l)``, and, below the top,
    ``dA^(l−1) = W^(l)ᵀ·dZ^(l)``, ``dZ^(l−1) = dA^(l−1) ⊙ f'(Z^(l−1))``. Gradients accumulate
    into ``grad`` (guide §12: reset them with zero_grad). Reads the ``A^(l−1)ᵀ`` that the forward
    pass left in ATbuf (small layers; and ``A^(0)ᵀ`` when ``input_transposed``, as in
    :func:`_forward_batch`).
    """
    L = codes.shape[0]
    a_off = 0
    z_off = 0
    for l in range(L - 1):
        a_off += sizes[l] * mb
        z_off += sizes[l + 1] * mb
    # now a_off points at A^(L-1), z_off at Z^(L)
    cur = dbuf0
    nxt = dbuf1
    for l in range(L - 1, -1, -1):
        n_in = sizes[l]
        n_out = sizes[l + 1]
        W = _view(theta, w_off[l], n_out, n_in)
        dW = _view(grad, w_off[l], n_out, n_in)
        db = grad[w_off[l] + n_out * n_in:w_off[l] + n_out * n_in + n_out]
        dZ = _view(cur, 0, n_out, mb)
        A_prev = _view(Abuf, a_off, n_in, mb)
        dA_prev = _view(nxt, 0, n_in, mb)
        a_t_valid = (l == 0 and input_transposed) or not _packed(n_out, n_in, mb)
        _dense_backward_tuned(dW, db, dA_prev, dZ, W, A_prev, _view(ATbuf, a_off, mb, n_in),
                              _view(work_WT, 0, n_in, n_out), _view(work_dZT, 0, mb, n_out),
                              l > 0, a_t_valid, threads)
        if l > 0:
            z_off -= n_in * mb
            # dZ^(l-1) = dA^(l-1) ⊙ f'(Z^(l-1)), in place over dA^(l-1)
            _activation_backward_tuned(dA_prev, dA_prev, _view(Zbuf, z_off, n_in, mb), A_prev,
                                 codes[l - 1], alpha)
            a_off -= sizes[l - 1] * mb
            cur, nxt = nxt, cur


@kernel
def _count_correct(ZL, loss_code, Y, labels, one_hot):
    """Correct predictions: argmax vs label (cross-entropy), z > 0 vs y > ½ (binary, per output)."""
    n, m = ZL.shape
    correct = 0
    if loss_code == CROSS_ENTROPY:
        for k in range(m):
            best = 0
            top = ZL[0, k]
            for i in range(1, n):  # the running maximum in a register: no load behind a branch
                v = ZL[i, k]
                if v > top:
                    top = v
                    best = i
            if one_hot:
                truth = 0
                for i in range(1, n):
                    if Y[i, k] > Y[truth, k]:
                        truth = i
            else:
                truth = labels[k]
            if best == truth:
                correct += 1
    elif loss_code == BINARY_CROSS_ENTROPY:
        for i in range(n):
            for k in range(m):
                if (ZL[i, k] > 0) == (Y[i, k] > 0.5):
                    correct += 1
    return correct


@kernel
def _update(theta, grad, state1, state2, opt_code, lr, beta1, beta2, eps, t):
    """One optimizer step on the flat parameter vector (guide §10)."""
    if opt_code == SGD:
        _sgd(theta, grad, lr)
    elif opt_code == MOMENTUM:
        _momentum(theta, grad, state1, lr, beta1)
    else:
        _adam(theta, grad, state1, state2, lr, beta1, beta2, eps, t)


@kernel(fast=True)
def _sum_squares(v, start, count):
    """``Σ v[p]²`` over ``start ≤ p < start + count`` (a layer's dW, for ‖dW‖), vectorized."""
    s = 0.0
    for p in range(start, start + count):
        s += v[p] * v[p]
    return s


@kernel
def _gather_rows(dst, src, perm, start):
    """``dst[c, :] = src[perm[start + c], :]``: contiguous row copies (src is X transposed)."""
    mb, cols = dst.shape
    for c in range(mb):
        q = perm[start + c]
        for j in range(cols):
            dst[c, j] = src[q, j]


@kernel
def _gather(dst, src, perm, start):
    """``dst[j, c] = src[j, perm[start + c]]``: the batch's columns, in shuffled order."""
    rows, mb = dst.shape
    for j in range(rows):
        for c in range(mb):
            dst[j, c] = src[j, perm[start + c]]


@kernel
def _train_epoch(theta, grad, state1, state2, sizes, w_off, codes, alpha, loss_code,
                 XT, Y, labels, one_hot, perm, shuffle_seed, batch_size,
                 opt_code, lr, beta1, beta2, eps, t,
                 Zbuf, Abuf, ATbuf, dbuf0, dbuf1, work_WT, work_dZT, Ybuf, labbuf,
                 col1, col2, grad_norm, threads):
    """One epoch of minibatch training, entirely compiled.

    Per batch: gather the (shuffled) examples, forward (§5–§6), loss and seed (§9), zero the
    gradients (§12), backward (§6), update (§10). The last, partial batch is used, not dropped.
    ``XT`` is X transposed, ``(n, n_0)``: a shuffled example is then one contiguous row to copy,
    where a column of X would be ``n_0`` cache misses.
    Returns ``(Σ batch loss × batch size, correct predictions, optimizer step count)``;
    ``grad_norm[l]`` accumulates ``‖dW^(l)‖_F`` of every batch.
    """
    n = XT.shape[0]
    L = codes.shape[0]
    n0 = sizes[0]
    nL = sizes[L]
    if shuffle_seed >= 0:
        _shuffle(perm, shuffle_seed)  # Fisher–Yates on loopprop's own generator (kernels/rng.py)
    total = 0.0
    correct = 0
    for start in range(0, n, batch_size):
        mb = min(batch_size, n - start)
        X0_T = _view(ATbuf, 0, mb, n0)
        _gather_rows(X0_T, XT, perm, start)
        if mb > _RANK4_MAX_SUM and not _packed(sizes[1], n0, mb):
            # a small first layer with a long batch sum: its dW reads A^(0) itself (dense.py)
            _transpose(_view(Abuf, 0, n0, mb), X0_T)
        Yb = _view(Ybuf, 0, Y.shape[0], mb)
        _gather(Yb, Y, perm, start)
        for c in range(mb):
            labbuf[c] = labels[perm[start + c]]
        lab = labbuf[:mb]
        _forward_batch(theta, sizes, w_off, codes, alpha, Zbuf, Abuf, ATbuf, mb, threads,
                       loss_code == MSE, runtime_flag(True))
        aL, zL = _last_offsets(sizes, mb)
        ZL = _view(Zbuf, zL, nL, mb)
        AL = _view(Abuf, aL, nL, mb)
        total += mb * _loss_seed(_view(dbuf0, 0, nL, mb), ZL, AL, codes[L - 1], loss_code, alpha,
                                 Yb, lab, one_hot, col1, col2)
        correct += _count_correct(ZL, loss_code, Yb, lab, one_hot)
        for p in range(grad.shape[0]):
            grad[p] = 0.0
        _backward_batch(theta, grad, sizes, w_off, codes, alpha, Zbuf, Abuf, ATbuf, dbuf0, dbuf1,
                        work_WT, work_dZT, mb, threads, runtime_flag(True))
        for l in range(L):
            grad_norm[l] += math.sqrt(_sum_squares(grad, w_off[l], sizes[l] * sizes[l + 1]))
        t += 1
        _update(theta, grad, state1, state2, opt_code, lr, beta1, beta2, eps, t)
    return total, correct, t


@kernel
def _evaluate(theta, sizes, w_off, codes, alpha, loss_code, X, Y, labels, one_hot, chunk,
              Zbuf, Abuf, ATbuf, dbuf0, dbuf1, col1, col2, out, threads):
    """Forward-only pass over X in chunks: returns (Σ loss × chunk size, correct); fills
    ``out`` (n_L, n) with the output activations. Each chunk's targets are copied into dbuf1
    (free in a forward-only pass), so the loss kernels see the same contiguous arrays as in
    training and are compiled once."""
    n = X.shape[1]
    L = codes.shape[0]
    n0 = sizes[0]
    nL = sizes[L]
    total = 0.0
    correct = 0
    for start in range(0, n, chunk):
        mb = min(chunk, n - start)
        X0 = _view(Abuf, 0, n0, mb)
        for j in range(n0):
            for c in range(mb):
                X0[j, c] = X[j, start + c]
        _forward_batch(theta, sizes, w_off, codes, alpha, Zbuf, Abuf, ATbuf, mb, threads,
                       runtime_flag(True), runtime_flag(False))
        aL, zL = _last_offsets(sizes, mb)
        ZL = _view(Zbuf, zL, nL, mb)
        AL = _view(Abuf, aL, nL, mb)
        Yb = _view(dbuf1, 0, Y.shape[0], mb)
        for i in range(Y.shape[0]):
            for c in range(mb):
                Yb[i, c] = Y[i, start + c]
        lab = labels[start:start + mb]
        total += mb * _loss_seed(_view(dbuf0, 0, nL, mb), ZL, AL, codes[L - 1], loss_code,
                                 alpha, Yb, lab, one_hot, col1, col2)
        correct += _count_correct(ZL, loss_code, Yb, lab, one_hot)
        for i in range(nL):
            for c in range(mb):
                out[i, start + c] = AL[i, c]
    return total, correct


# ---------------------------------------------------------------------------------------------
# buffers and optimizer state: allocated once per fit, never per batch
# ---------------------------------------------------------------------------------------------


@dataclass
class Buffers:
    """Workspaces for batches of up to ``m`` examples through a network of ``sizes``."""

    sizes: np.ndarray
    m: int
    dtype: np.dtype
    Zbuf: np.ndarray = field(init=False)
    Abuf: np.ndarray = field(init=False)
    dbuf0: np.ndarray = field(init=False)
    dbuf1: np.ndarray = field(init=False)
    ATbuf: np.ndarray = field(init=False)
    work_WT: np.ndarray = field(init=False)
    work_dZT: np.ndarray = field(init=False)
    col1: np.ndarray = field(init=False)
    col2: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        s, m, dt = [int(v) for v in self.sizes], self.m, self.dtype
        widest = max(s)
        self.Zbuf = np.zeros(sum(s[1:]) * m, dt)
        self.Abuf = np.zeros(sum(s) * m, dt)
        self.dbuf0 = np.zeros(widest * m, dt)
        self.dbuf1 = np.zeros(widest * m, dt)
        self.ATbuf = np.zeros(sum(s[:-1]) * m, dt)
        self.work_WT = np.zeros(max(a * b for a, b in zip(s[:-1], s[1:])), dt)
        self.work_dZT = np.zeros(max(s[1:]) * m, dt)
        self.col1 = np.zeros(m, dt)
        self.col2 = np.zeros(m, np.float64)


@dataclass
class OptimizerState:
    """Optimizer name, hyper-parameters and the per-parameter state vectors (flat, like theta)."""

    name: str
    n_params: int
    dtype: np.dtype
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    t: int = 0
    state1: np.ndarray = field(init=False)
    state2: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.state1 = np.zeros(self.n_params, self.dtype)
        self.state2 = np.zeros(self.n_params if self.name == "adam" else 0, self.dtype)


class Progress:
    """A progress bar over epochs with the running loss: tqdm when installed, else a plain line."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.enabled = enabled
        self.total = total
        self.bar = None
        self.t0 = time.perf_counter()
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, unit="epoch", dynamic_ncols=True)
            except ImportError:
                self.bar = None

    def update(self, epoch: int, info: dict) -> None:
        if not self.enabled:
            return
        text = " ".join(f"{k}={v:.4f}" for k, v in info.items())
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)
        else:
            width = 24
            done = int(width * epoch / self.total)
            print(f"\repoch {epoch}/{self.total} [{'#' * done}{'.' * (width - done)}] {text} "
                  f"({time.perf_counter() - self.t0:.1f}s)", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            print(file=sys.stderr)

