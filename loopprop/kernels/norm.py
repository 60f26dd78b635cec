"""Batch normalization and layer normalization, forward and backward, as explicit loops
(docs/formulas.md, "Batch normalization" and "Layer normalization").

Both normalize a group of values ``x_1 … x_N`` to zero mean and unit variance, then scale and
shift them by learned ``γ`` and ``β``::

    μ = (1/N) Σ_k x_k          σ² = (1/N) Σ_k (x_k − μ)²   (biased, as PyTorch normalizes)
    r = 1 / √(σ² + ε)          x̂_k = (x_k − μ) · r          y_k = γ · x̂_k + β

They differ only in *which* values form a group:

* **batch norm** -- one group per feature (row) of ``X (n, m)``: the feature over the batch;
  for images ``X (C, H, W, m)`` one group per channel over ``H·W·m`` values. Seen as a matrix
  ``(C, N)`` (a free reshape with examples on the last axis), a group is a **row**.
* **layer norm** -- one group per example, over its features: a **column** of ``X (n, m)``;
  for sequences ``X (C, T, m)`` one group per ``(t, k)`` over ``C``, i.e. a column of the
  ``(C, T·m)`` matrix.

So the kernels below take 2-D views: ``_batchnorm_*`` normalizes the rows of ``(C, N)``,
``_layernorm_*`` the columns of ``(n, M)``; the public functions reshape.

Backward, for one group (derivation in docs/formulas.md). With ``g_k = ∂L/∂y_k``::

    ∂L/∂β = Σ_k g_k          ∂L/∂γ = Σ_k g_k · x̂_k
    ∂L/∂x̂_k = γ · g_k        (for layer norm ``γ`` depends on the feature i: γ_i g_ik)
    ∂L/∂x_j = r/N · (N·∂L/∂x̂_j − Σ_k ∂L/∂x̂_k − x̂_j · Σ_k ∂L/∂x̂_k · x̂_k)

The last line is the one students get wrong: ``μ`` and ``σ`` depend on every ``x_k`` of the
group, so the gradient of one input couples every other (the two sums), and in batch norm
that couples every example of the batch. Gradients **add** into ``dX``, ``dgamma``, ``dbeta``
(the README's "Conventions").

Running statistics (batch norm in evaluation mode) follow PyTorch: with momentum ``α = 0.1``,
``μ_run ← (1 − α)·μ_run + α·μ`` and ``σ²_run ← (1 − α)·σ²_run + α·σ²·N/(N − 1)`` (the unbiased
variance), and evaluation computes ``y = γ·(x − μ_run)/√(σ²_run + ε) + β``.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _checks
from .._jit import PARALLEL_MIN_WORK, kernel, prange, runtime_flag, use_threads
from .simd import like

# ---------------------------------------------------------------------------------------------
# batch norm: normalize each row of (C, N)
# ---------------------------------------------------------------------------------------------


@kernel
def _batchnorm_forward_naive(Y, mean, rstd, X, gamma, beta, eps):
    """``μ[c] = Σ_k X[c, k] / N``; ``r[c] = 1/√(Σ_k (X[c, k] − μ[c])² / N + ε)``;
    ``Y[c, k] = γ[c]·(X[c, k] − μ[c])·r[c] + β[c]`` (docs/formulas.md, "Batch normalization").

    Shapes: ``Y, X (C, N)``; ``mean, rstd, gamma, beta (C,)``. The formula as loops: two passes
    for the statistics, one for the output.
    """
    C, N = X.shape
    for c in range(C):
        s = 0.0
        for k in range(N):
            s += X[c, k]
        mean[c] = s / N
        v = 0.0
        for k in range(N):
            v += (X[c, k] - mean[c]) * (X[c, k] - mean[c])
        rstd[c] = 1.0 / math.sqrt(v / N + eps)
        for k in range(N):
            Y[c, k] = gamma[c] * (X[c, k] - mean[c]) * rstd[c] + beta[c]


@kernel
def _batchnorm_backward_naive(dX, dgamma, dbeta, dY, X, gamma, mean, rstd):
    """``dβ[c] += Σ_k dY[c, k]``; ``dγ[c] += Σ_k dY[c, k]·x̂[c, k]``;
    ``dX[c, j] += γ[c]·r[c]/N·(N·dY[c, j] − Σ_k dY[c, k] − x̂[c, j]·Σ_k dY[c, k]·x̂[c, k])``
    with ``x̂[c, k] = (X[c, k] − μ[c])·r[c]`` (docs/formulas.md, "Batch normalization").

    Shapes: ``dX, dY, X (C, N)``; ``dgamma, dbeta, gamma, mean, rstd (C,)``. Adds.
    """
    C, N = X.shape
    for c in range(C):
        sum_g = 0.0
        sum_gx = 0.0
        for k in range(N):
            xhat = (X[c, k] - mean[c]) * rstd[c]
            sum_g += dY[c, k]
            sum_gx += dY[c, k] * xhat
        dbeta[c] += sum_g
        dgamma[c] += sum_gx
        for j in range(N):
            xhat = (X[c, j] - mean[c]) * rstd[c]
            dX[c, j] += gamma[c] * rstd[c] / N * (N * dY[c, j] - sum_g - xhat * sum_gx)


@kernel(fast=True, inline=True)
def _bn_row_forward(y, x, g, b, eps):
    """One row of :func:`_batchnorm_forward`: returns ``(μ, r)``. The sums are shifted by the
    row's first value, ``Σ (x − x_0)`` and ``Σ (x − x_0)²``, so one pass gives the variance
    without the cancellation of ``Σx² − (Σx)²/N`` when the mean is large against the spread
    (mean 10⁴, spread 10⁻²: the unshifted formula loses every digit)."""
    N = x.shape[0]
    shift = x[0]
    s1 = 0.0
    s2 = 0.0
    for k in range(N):
        d = x[k] - shift
        s1 += d
        s2 += d * d
    d_mean = s1 / N
    var = max(s2 / N - d_mean * d_mean, 0.0)
    mu = shift + d_mean
    r = 1.0 / math.sqrt(var + eps)
    scale = g * r  # y = (x − μ)·γr + β: subtracting μ first keeps a large mean exact
    for k in range(N):
        y[k] = (x[k] - mu) * scale + b
    return mu, r


@kernel(fast=True, parallel=True, separate=True)
def _batchnorm_forward(Y, mean, rstd, X, gamma, beta, eps, threads):
    """Tuned :func:`_batchnorm_forward_naive`: one pass for the statistics (shifted sums, see
    :func:`_bn_row_forward`), one for the output; rows split between threads. Same shapes."""
    C, N = X.shape
    if threads > 1 and C > 1 and X.size >= PARALLEL_MIN_WORK:
        for c in prange(C):
            mean[c], rstd[c] = _bn_row_forward(Y[c], X[c], gamma[c], beta[c], eps)
    else:
        for c in range(C):
            mean[c], rstd[c] = _bn_row_forward(Y[c], X[c], gamma[c], beta[c], eps)


@kernel(fast=True, inline=True)
def _bn_row_backward(dx, dy, x, g, mu, r, acc):
    """One row of :func:`_batchnorm_backward`: returns ``(Σ dy, Σ dy·x̂)``; ``dx`` is added to
    (``acc``) or written."""
    N = x.shape[0]
    sum_g = 0.0
    sum_gx = 0.0
    for k in range(N):
        sum_g += dy[k]
        sum_gx += dy[k] * (x[k] - mu)
    sum_gx *= r  # Σ dy·x̂
    a = g * r  # dx = a·dy − a/N·Σdy − a/N·x̂·Σ dy·x̂, with x̂ = (x − μ)·r
    c1 = a * sum_gx * r / N
    c0 = -a * sum_g / N
    if acc:
        for k in range(N):
            dx[k] += a * dy[k] - c1 * (x[k] - mu) + c0
    else:
        for k in range(N):
            dx[k] = a * dy[k] - c1 * (x[k] - mu) + c0
    return sum_g, sum_gx


@kernel(fast=True, parallel=True, separate=True)
def _batchnorm_backward(dX, dgamma, dbeta, dY, X, gamma, mean, rstd, acc, threads):
    """Tuned :func:`_batchnorm_backward_naive`: two passes per row (the two sums, then
    ``dX``, written as ``a·dY − c1·(X − μ) + c0`` per row); rows split between threads.
    ``dgamma``, ``dbeta`` add; ``dX`` adds with ``acc`` (the network's passes), else it is
    written (the public function: no zeroing pass over a fresh array)."""
    C, N = X.shape
    if threads > 1 and C > 1 and X.size >= PARALLEL_MIN_WORK:
        for c in prange(C):
            sg, sgx = _bn_row_backward(dX[c], dY[c], X[c], gamma[c], mean[c], rstd[c], acc)
            dbeta[c] += sg
            dgamma[c] += sgx
    else:
        for c in range(C):
            sg, sgx = _bn_row_backward(dX[c], dY[c], X[c], gamma[c], mean[c], rstd[c], acc)
            dbeta[c] += sg
            dgamma[c] += sgx


@kernel(fast=True)
def _batchnorm_forward_eval(Y, X, gamma, beta, running_mean, running_var, eps):
    """Evaluation mode: ``Y[c, k] = γ[c]·(X[c, k] − μ_run[c])/√(σ²_run[c] + ε) + β[c]``.
    Shapes: ``Y, X (C, N)``; the rest ``(C,)``."""
    C, N = X.shape
    for c in range(C):
        scale = gamma[c] / math.sqrt(running_var[c] + eps)
        for k in range(N):
            Y[c, k] = (X[c, k] - running_mean[c]) * scale + beta[c]


@kernel(fast=True)
def _batchnorm_backward_eval(dX, dgamma, dbeta, dY, X, gamma, running_mean, running_var, eps):
    """Backward of :func:`_batchnorm_forward_eval` (the statistics are constants there):
    ``dβ[c] += Σ_k dY``; ``dγ[c] += Σ_k dY·x̂``; ``dX[c, k] += γ[c]·r[c]·dY[c, k]``, with
    ``r = 1/√(σ²_run + ε)``, ``x̂ = (X − μ_run)·r``. Adds."""
    C, N = X.shape
    for c in range(C):
        r = 1.0 / math.sqrt(running_var[c] + eps)
        a = gamma[c] * r
        sg = 0.0
        sgx = 0.0
        for k in range(N):
            sg += dY[c, k]
            sgx += dY[c, k] * (X[c, k] - running_mean[c])
            dX[c, k] += a * dY[c, k]
        dbeta[c] += sg
        dgamma[c] += sgx * r


@kernel
def _batchnorm_update_running(running_mean, running_var, mean, rstd, eps, momentum, N):
    """``μ_run ← (1 − α)·μ_run + α·μ``; ``σ²_run ← (1 − α)·σ²_run + α·σ²·N/(N − 1)`` with
    ``σ² = 1/r² − ε`` (PyTorch's unbiased running variance). Shapes ``(C,)``."""
    for c in range(mean.shape[0]):
        var = 1.0 / (rstd[c] * rstd[c]) - eps
        running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * mean[c]
        running_var[c] = (1.0 - momentum) * running_var[c] + momentum * var * N / (N - 1)


# ---------------------------------------------------------------------------------------------
# layer norm: normalize each column of (n, M)
# ---------------------------------------------------------------------------------------------


@kernel
def _layernorm_forward_naive(Y, mean, rstd, X, gamma, beta, eps):
    """``μ[k] = Σ_i X[i, k] / n``; ``r[k] = 1/√(Σ_i (X[i, k] − μ[k])² / n + ε)``;
    ``Y[i, k] = γ[i]·(X[i, k] − μ[k])·r[k] + β[i]`` (docs/formulas.md, "Layer normalization").

    Shapes: ``Y, X (n, M)``; ``gamma, beta (n,)``; ``mean, rstd (M,)``.
    """
    n, M = X.shape
    for k in range(M):
        s = 0.0
        for i in range(n):
            s += X[i, k]
        mean[k] = s / n
        v = 0.0
        for i in range(n):
            v += (X[i, k] - mean[k]) * (X[i, k] - mean[k])
        rstd[k] = 1.0 / math.sqrt(v / n + eps)
        for i in range(n):
            Y[i, k] = gamma[i] * (X[i, k] - mean[k]) * rstd[k] + beta[i]


@kernel
def _layernorm_backward_naive(dX, dgamma, dbeta, dY, X, gamma, mean, rstd):
    """``dβ[i] += Σ_k dY[i, k]``; ``dγ[i] += Σ_k dY[i, k]·x̂[i, k]``; with
    ``ĝ[i, k] = γ[i]·dY[i, k]``:
    ``dX[j, k] += r[k]/n·(n·ĝ[j, k] − Σ_i ĝ[i, k] − x̂[j, k]·Σ_i ĝ[i, k]·x̂[i, k])``
    (docs/formulas.md, "Layer normalization").

    Shapes: ``dX, dY, X (n, M)``; ``gamma, dgamma, dbeta (n,)``; ``mean, rstd (M,)``. Adds.
    """
    n, M = X.shape
    for k in range(M):
        sum_g = 0.0
        sum_gx = 0.0
        for i in range(n):
            xhat = (X[i, k] - mean[k]) * rstd[k]
            dbeta[i] += dY[i, k]
            dgamma[i] += dY[i, k] * xhat
            sum_g += gamma[i] * dY[i, k]
            sum_gx += gamma[i] * dY[i, k] * xhat
        for j in range(n):
            xhat = (X[j, k] - mean[k]) * rstd[k]
            dX[j, k] += rstd[k] / n * (n * gamma[j] * dY[j, k] - sum_g - xhat * sum_gx)


@kernel(fast=True, separate=True)
def _ln_columns_forward(Y, mean, rstd, X, gamma, beta, eps, k0, k1):
    """Columns ``k0 ≤ k < k1`` of :func:`_layernorm_forward`: the loops run over the features
    ``i`` outside and the columns ``k`` inside, so every pass reads contiguous rows and the
    column sums are vectors (``mean``, ``rstd`` hold the running sums, shifted by the first
    row as :func:`_bn_row_forward`'s: one pass for both statistics). The block is taken as
    slices first: indices that start at 0 are known to be non-negative, which LLVM needs to
    vectorize (with ``range(k0, k1)`` each index might wrap around, and nothing vectorizes:
    4× slower)."""
    n = X.shape[0]
    w = k1 - k0
    mu = mean[k0:k1]
    r = rstd[k0:k1]
    x0 = X[0, k0:k1]
    for k in range(w):
        mu[k] = 0.0
        r[k] = 0.0
    for i in range(1, n):  # Σ_i (x − x_0) and Σ_i (x − x_0)²: one pass, shifted (see BN)
        xi = X[i, k0:k1]
        for k in range(w):
            d = xi[k] - x0[k]
            mu[k] += d
            r[k] += d * d
    for k in range(w):
        d_mean = mu[k] / n
        r[k] = 1.0 / math.sqrt(max(r[k] / n - d_mean * d_mean, 0.0) + eps)
        mu[k] = x0[k] + d_mean
    for i in range(n):
        g = gamma[i]
        b = beta[i]
        xi = X[i, k0:k1]
        yi = Y[i, k0:k1]
        for k in range(w):
            yi[k] = g * (xi[k] - mu[k]) * r[k] + b


#: columns per block in the layer-norm kernels, which are also what threads split; widths of
#: 32 to 1024 measured the same (docs/performance.md)
LN_BLOCK = 256


@kernel(fast=True, parallel=True, separate=True)
def _layernorm_forward(Y, mean, rstd, X, gamma, beta, eps, threads):
    """Tuned :func:`_layernorm_forward_naive`: blocks of :data:`LN_BLOCK` columns, features
    outside and columns inside (vectorized), blocks split between threads. Same shapes."""
    n, M = X.shape
    n_blocks = (M + LN_BLOCK - 1) // LN_BLOCK
    if threads > 1 and n_blocks > 1 and X.size >= PARALLEL_MIN_WORK:
        for blk in prange(n_blocks):
            _ln_columns_forward(Y, mean, rstd, X, gamma, beta, eps, blk * LN_BLOCK,
                                min(M, (blk + 1) * LN_BLOCK))
    else:
        for blk in range(n_blocks):
            _ln_columns_forward(Y, mean, rstd, X, gamma, beta, eps, blk * LN_BLOCK,
                                min(M, (blk + 1) * LN_BLOCK))


@kernel(fast=True, separate=True)
def _ln_columns_backward(dX, dY, X, gamma, mean, rstd, k0, k1, acc, s_g, s_gx):
    """Columns ``k0 ≤ k < k1`` of :func:`_layernorm_backward`'s ``dX`` (docs/formulas.md,
    "Layer normalization")::

        dX[i, k] = r[k]/n · (n·ĝ[i, k] − Σ_i' ĝ[i', k] − x̂[i, k] · Σ_i' ĝ[i', k]·x̂[i', k])

    with ``ĝ = γ_i·dY[i, k]`` and ``x̂ = (X[i, k] − mean[k])·rstd[k]``. Shapes: dX, dY, X
    (n, M); gamma (n,); mean, rstd (M,); s_g, s_gx scratch of at least ``k1 − k0`` values.
    The two column sums go into ``s_g``, ``s_gx``, then ``dX`` from them. Features outside,
    columns inside, as the forward's :func:`_ln_columns_forward`: each pass reads contiguous
    runs of rows (vectorized) and the block's second pass finds them in L2. (Summing a
    register of columns down the features, strided by the row length, put every row of a
    strip in one L1 set at row lengths of 4 KiB multiples: 2.5–5× slower at (128, 1024),
    (768, 256), (128, 16384) in float64, AMD Zen 4.) Each column's arithmetic is its own: the
    same bits whatever block or thread it falls in."""
    n = X.shape[0]
    w = k1 - k0
    mu = mean[k0:k1]
    r = rstd[k0:k1]
    sg = s_g[:w]
    sgx = s_gx[:w]
    for k in range(w):
        sg[k] = 0.0
        sgx[k] = 0.0
    for i in range(n):
        g = gamma[i]
        xi = X[i, k0:k1]
        dyi = dY[i, k0:k1]
        for k in range(w):
            gy = g * dyi[k]
            sg[k] += gy
            sgx[k] += gy * (xi[k] - mu[k]) * r[k]
    inv_n = like(mean, 1.0 / max(n, 1))  # in X's dtype: float32 stays float32
    for i in range(n):
        ng = like(mean, n) * gamma[i]
        xi = X[i, k0:k1]
        dyi = dY[i, k0:k1]
        dxi = dX[i, k0:k1]
        for k in range(w):
            xhat = (xi[k] - mu[k]) * r[k]
            d = r[k] * inv_n * (ng * dyi[k] - sg[k] - xhat * sgx[k])
            if acc:
                dxi[k] += d
            else:
                dxi[k] = d


@kernel(fast=True)
def _ln_params_backward(dgamma, dbeta, dY, X, mean, rstd, i0, i1):
    """Rows ``i0 ≤ i < i1``: ``dβ[i] += Σ_k dY[i, k]``, ``dγ[i] += Σ_k dY[i, k]·x̂[i, k]``."""
    M = X.shape[1]
    for i in range(i0, i1):
        xi = X[i]
        dyi = dY[i]
        sb = 0.0
        sg = 0.0
        for k in range(M):
            sb += dyi[k]
            sg += dyi[k] * (xi[k] - mean[k]) * rstd[k]
        dbeta[i] += sb
        dgamma[i] += sg


@kernel(fast=True, parallel=True, separate=True)
def _layernorm_backward(dX, dgamma, dbeta, dY, X, gamma, mean, rstd, acc, threads):
    """Tuned :func:`_layernorm_backward_naive`: ``dX`` by blocks of columns (features outside,
    columns inside: :func:`_ln_columns_backward`), then ``dγ, dβ`` by rows; both split between
    threads by what they write, one contiguous range of blocks (or rows) per thread, so that
    each thread's column sums live in one scratch pair. Blocks of :data:`LN_BLOCK` columns,
    narrower when that leaves a thread idle (768 × 256: one block, one thread). ``dgamma``,
    ``dbeta`` add; ``dX`` adds with ``acc``, else it is written."""
    n, M = X.shape
    par = threads > 1 and X.size >= PARALLEL_MIN_WORK
    width = LN_BLOCK
    if par and M < threads * LN_BLOCK:  # whole vectors of columns, every thread a block
        width = max(16, ((M + threads - 1) // threads + 15) // 16 * 16)
    n_blocks = (M + width - 1) // width
    chunks = min(threads, n_blocks) if par else 1
    scratch = np.empty((chunks, 2, width), X.dtype)
    if chunks > 1:
        for c in prange(chunks):
            for blk in range(c * n_blocks // chunks, (c + 1) * n_blocks // chunks):
                _ln_columns_backward(dX, dY, X, gamma, mean, rstd, blk * width,
                                     min(M, (blk + 1) * width), acc, scratch[c, 0],
                                     scratch[c, 1])
    else:
        for blk in range(n_blocks):
            _ln_columns_backward(dX, dY, X, gamma, mean, rstd, blk * width,
                                 min(M, (blk + 1) * width), acc, scratch[0, 0], scratch[0, 1])
    if par and n > 1:
        rows = min(threads, n)
        for t in prange(rows):
            _ln_params_backward(dgamma, dbeta, dY, X, mean, rstd, t * n // rows,
                                (t + 1) * n // rows)
    else:
        _ln_params_backward(dgamma, dbeta, dY, X, mean, rstd, 0, n)


# ---------------------------------------------------------------------------------------------
# the public functions: validate, reshape to the 2-D views, allocate, call
# ---------------------------------------------------------------------------------------------


IMPLS = ("tuned", "naive")


def check_eps(eps) -> float:
    """``eps`` > 0 and finite."""
    return _checks.check_fraction(eps, "eps", 0.0, math.inf, lo_open=True,
                                  example=" such as 1e-5 (added to the variance)")


def _params(gamma, beta, n: int, what: str, check_finite: bool):
    hint = f"expected shape ({n},): one value per {what}"
    gamma = _checks.as_float_array(gamma, "gamma", 1, check_finite=check_finite, hint=hint)
    beta = _checks.as_float_array(beta, "beta", 1, check_finite=check_finite, hint=hint)
    for name, v in (("gamma", gamma), ("beta", beta)):
        _checks.require_shape(v, name, (n,), f"one value per {what}")
    return gamma, beta


def _bn_groups(X: np.ndarray) -> tuple[int, int]:
    """``(C, N)``: channels (features) and values per channel."""
    return X.shape[0], X.size // X.shape[0] if X.shape[0] else 0


def _require_batch(N: int, shape) -> None:
    if N < 2:
        raise ValueError(
            f"X: training-mode batch norm needs more than one value per channel to estimate a "
            f"variance, got X of shape {shape} (1 value per channel: the variance is 0 and the "
            "output would be β); use a batch of at least 2 examples, as PyTorch requires")


def batchnorm_forward(X, gamma, beta, eps: float = 1e-5, *, check_finite: bool = True,
                      impl: str = "tuned", parallel: bool = True):
    """Batch normalization in training mode: ``(Y, mean, rstd)``.

    ``X (n, m)`` normalizes each feature over the batch; ``X (C, H, W, m)`` each channel over
    ``H, W, m`` (spatial). ``Y = γ·(X − mean)·rstd + β`` with ``rstd = 1/√(var + eps)`` and the
    biased variance (÷ count), as PyTorch's ``batch_norm`` in training mode. ``gamma, beta``
    have one value per feature (channel); ``mean, rstd`` too. ``impl="naive"`` runs the
    formula's loops (the reference the tuned kernel is tested against).
    """
    X = _checks.as_float_array(X, "X", (2, 4), check_finite=check_finite,
                               hint="batch norm takes (n, m) or (C, H, W, m)")
    C, N = _bn_groups(X)
    _checks.require_nonempty_batch(X, "X")
    _require_batch(N, X.shape)
    gamma, beta = _params(gamma, beta, C, "feature (channel), the first axis of X",
                          check_finite)
    _checks.same_dtype(X=X, gamma=gamma, beta=beta)
    eps = check_eps(eps)
    Y = np.empty_like(X)
    mean, rstd = np.empty(C, X.dtype), np.empty(C, X.dtype)
    X2, Y2 = X.reshape(C, N), Y.reshape(C, N)
    if _checks.check_choice(impl, "impl", IMPLS) == "naive":
        _batchnorm_forward_naive(Y2, mean, rstd, X2, gamma, beta, eps)
    else:
        _batchnorm_forward(Y2, mean, rstd, X2, gamma, beta, eps, use_threads(parallel))
    return Y, mean, rstd


def _stats(mean, rstd, shape, check_finite: bool):
    mean = _checks.as_float_array(mean, "mean", len(shape), check_finite=check_finite)
    rstd = _checks.as_float_array(rstd, "rstd", len(shape), check_finite=check_finite)
    for name, v in (("mean", mean), ("rstd", rstd)):
        _checks.require_shape(v, name, shape, "the statistics the forward pass returned")
    return mean, rstd


def batchnorm_backward(dY, X, gamma, mean, rstd, *, check_finite: bool = True,
                       impl: str = "tuned", parallel: bool = True):
    """Gradients of :func:`batchnorm_forward`: ``(dX, dgamma, dbeta)``; ``mean, rstd`` are the
    ones the forward pass returned. Every ``dX`` of a channel depends on every value of that
    channel in the batch (docs/formulas.md, "Batch normalization")."""
    X = _checks.as_float_array(X, "X", (2, 4), check_finite=check_finite,
                               hint="batch norm takes (n, m) or (C, H, W, m)")
    dY = _checks.as_float_array(dY, "dY", X.ndim, check_finite=check_finite)
    _checks.require_shape(dY, "dY", X.shape, "the shape of X")
    C, N = _bn_groups(X)
    _checks.require_nonempty_batch(X, "X")
    gamma = _checks.as_float_array(gamma, "gamma", 1, check_finite=check_finite)
    _checks.require_shape(gamma, "gamma", (C,), "one value per feature (channel)")
    mean, rstd = _stats(mean, rstd, (C,), check_finite)
    _checks.same_dtype(dY=dY, X=X, gamma=gamma, mean=mean, rstd=rstd)
    naive = _checks.check_choice(impl, "impl", IMPLS) == "naive"
    dX = np.zeros_like(X) if naive else np.empty_like(X)  # the tuned kernel writes it
    dgamma, dbeta = np.zeros(C, X.dtype), np.zeros(C, X.dtype)
    args = (dX.reshape(C, N), dgamma, dbeta, dY.reshape(C, N), X.reshape(C, N), gamma, mean,
            rstd)
    if naive:
        _batchnorm_backward_naive(*args)
    else:
        _batchnorm_backward(*args, runtime_flag(False), use_threads(parallel))
    return dX, dgamma, dbeta


def layernorm_forward(X, gamma, beta, eps: float = 1e-5, *, check_finite: bool = True,
                      impl: str = "tuned", parallel: bool = True):
    """Layer normalization: ``(Y, mean, rstd)``; each example over its features.

    ``X (n, m)`` normalizes each column over its ``n`` features; ``X (C, T, m)`` each ``(t, k)``
    over its ``C`` channels (``(C, H, W, m)``: each pixel of each example over its channels).
    ``gamma, beta (n,)`` or ``(C,)``; ``mean, rstd`` have the shape ``X.shape[1:]``. As
    PyTorch's ``layer_norm`` over the feature axis (biased variance).
    """
    X = _checks.as_float_array(X, "X", (2, 3, 4), check_finite=check_finite,
                               hint="layer norm takes (n, m), (C, T, m) or (C, H, W, m)")
    _checks.require_nonempty_batch(X, "X")
    n = X.shape[0]
    M = X.size // n if n else 0
    gamma, beta = _params(gamma, beta, n, "feature, the first axis of X", check_finite)
    _checks.same_dtype(X=X, gamma=gamma, beta=beta)
    eps = check_eps(eps)
    Y = np.empty_like(X)
    mean, rstd = np.empty(X.shape[1:], X.dtype), np.empty(X.shape[1:], X.dtype)
    args = (Y.reshape(n, M), mean.reshape(M), rstd.reshape(M), X.reshape(n, M), gamma, beta, eps)
    if _checks.check_choice(impl, "impl", IMPLS) == "naive":
        _layernorm_forward_naive(*args)
    else:
        _layernorm_forward(*args, use_threads(parallel))
    return Y, mean, rstd


def layernorm_backward(dY, X, gamma, mean, rstd, *, check_finite: bool = True,
                       impl: str = "tuned", parallel: bool = True):
    """Gradients of :func:`layernorm_forward`: ``(dX, dgamma, dbeta)``."""
    X = _checks.as_float_array(X, "X", (2, 3, 4), check_finite=check_finite,
                               hint="layer norm takes (n, m), (C, T, m) or (C, H, W, m)")
    dY = _checks.as_float_array(dY, "dY", X.ndim, check_finite=check_finite)
    _checks.require_shape(dY, "dY", X.shape, "the shape of X")
    _checks.require_nonempty_batch(X, "X")
    n = X.shape[0]
    M = X.size // n if n else 0
    gamma = _checks.as_float_array(gamma, "gamma", 1, check_finite=check_finite)
    _checks.require_shape(gamma, "gamma", (n,), "one value per feature")
    mean, rstd = _stats(mean, rstd, X.shape[1:], check_finite)
    _checks.same_dtype(dY=dY, X=X, gamma=gamma, mean=mean, rstd=rstd)
    naive = _checks.check_choice(impl, "impl", IMPLS) == "naive"
    dX = np.zeros_like(X) if naive else np.empty_like(X)  # the tuned kernel writes it
    dgamma, dbeta = np.zeros(n, X.dtype), np.zeros(n, X.dtype)
    args = (dX.reshape(n, M), dgamma, dbeta, dY.reshape(n, M), X.reshape(n, M), gamma,
            mean.reshape(M), rstd.reshape(M))
    if naive:
        _layernorm_backward_naive(*args)
    else:
        _layernorm_backward(*args, runtime_flag(False), use_threads(parallel))
    return dX, dgamma, dbeta
