"""A process's shard of a global batch, compiled: the pieces of data-parallel training
(:mod:`loopprop.distributed`) that run between two all-reduces.

With ``N`` processes ("ranks") and a global batch of ``M`` examples, rank ``r`` takes the
columns ``lo ≤ c < hi`` of the batch (``lo = ⌊r·M/N⌋``, ``hi = ⌊(r + 1)·M/N⌋``), computes the
mean gradient over its ``m_r = hi − lo`` examples and scales it by ``m_r / M``: summed over the
ranks (one all-reduce) that is the global batch's mean gradient,
``∂L/∂θ = (1/M) Σ_k ∂L_k/∂θ = Σ_r (m_r/M) · (1/m_r) Σ_{k ∈ r} ∂L_k/∂θ`` (docs/formulas.md §12,
the gradient of a minibatch). The batch's examples come through the same permutation on every
rank, so the shards partition exactly the batch one process would take.

Each step is :func:`_shard_step` (examples) or :func:`_shard_text_step` (windows of a
corpus); then (in Python, through MPI) the gradient is summed across the ranks *and scattered*:
each rank receives the sum over its own slice of θ only (a reduce-scatter), updates that slice
(:func:`_slice_squares`, :func:`_slice_update`: the optimizer's work and its state split
between the ranks, as ZeRO's first stage does) and the slices are gathered back into every
rank's θ.
"""

from __future__ import annotations

import numpy as np

from ._jit import kernel, prange, runtime_flag
from .kernels.optim import BLOCK, _block_squares, _sum_blocks
from .plan import IN_SIZE
from .rows.common import _view, _zero
from .train import _batch, _gradient, _load_batch, _load_windows, _sum_squares, _update


@kernel(parallel=True)
def _scale_squares(grad, scale, threads):
    """``grad[p] ← scale · grad[p]`` (skipped for ``scale = 1``) and ``Σ_p grad[p]²`` after it,
    over blocks of :data:`~loopprop.kernels.optim.BLOCK` values split between ``threads``.
    The sum only says whether the gradient is finite (it is not compared across ranks).
    Shapes: grad (P,)."""
    n = grad.shape[0]
    blocks = (n + BLOCK - 1) // BLOCK
    partial = np.zeros(max(blocks, 1), np.float64)
    if threads > 1 and blocks > 1:
        for c in prange(blocks):
            partial[c] = _scale_block(grad, c * BLOCK, min(n, (c + 1) * BLOCK), scale)
    else:
        for c in range(blocks):
            partial[c] = _scale_block(grad, c * BLOCK, min(n, (c + 1) * BLOCK), scale)
    return _sum_blocks(partial)


@kernel(fast=True)
def _scale_block(grad, lo, hi, scale):
    """:func:`_scale_squares` on ``lo ≤ p < hi`` (one pass over the slice's own indices, which
    LLVM vectorizes)."""
    g = grad[lo:hi]
    s = 0.0
    if scale != 1.0:
        f = g.dtype.type(scale)
        for p in range(g.shape[0]):
            v = g[p] * f
            g[p] = v
            s += v * v
    else:
        for p in range(g.shape[0]):
            s += g[p] * g[p]
    return s


@kernel
def _shard_step(plan, fplan, b, lb, data, start, lo, hi, M, seed, threads, table):
    """This rank's part of the global batch of ``M`` examples that starts at ``start`` (of the
    examples in ``data.perm``'s order): columns ``lo ≤ c < hi`` gathered into ``A^(0)`` (with
    their targets and labels), the gradient of their mean loss
    (:func:`loopprop.train._gradient`; dropout's masks those of columns ``lo …`` of ``M``),
    scaled by ``m_r / M``. ``data.X`` is X transposed ``(n, n_0)`` (fit shuffles) or X
    ``(n_0, n)`` read in order (``perm`` is then the identity), as in
    :func:`loopprop.train._train_epoch`. An empty shard (a last batch smaller than the number
    of ranks) contributes a zero gradient. Returns ``(mean loss of the shard, correct
    predictions, Σ grad²)``."""
    mb = hi - lo
    if mb <= 0:
        _zero(b.grad)
        return 0.0, 0, 0.0
    # fit shuffles through X transposed: X itself is read in order
    Yb, lab = _load_batch(b, lb, data, start + lo, mb, runtime_flag(False), threads)
    batch = _batch(mb, Yb, lab, data.one_hot, seed, threads, False, lo, M)
    loss, correct = _gradient(plan, fplan, b, lb, batch, table)
    return loss, correct, _scale_squares(b.grad, mb / M, threads)


@kernel
def _shard_text_step(plan, fplan, b, lb, corpus, rng, window, mb_all, lo, hi, seed, threads,
                     carry, table):
    """This rank's columns ``lo ≤ k < hi`` of a global batch of ``mb_all`` windows of
    ``corpus``, as :func:`loopprop.train._train_text_epoch` draws them: random offsets
    (``window < 0``) drawn for *every* column from ``rng`` (one state, advanced alike on every
    rank) and only this rank's kept; or the consecutive ``window`` of each column's stream
    (``s = k·L + window·T``, ``L = (n − 1) // mb_all``), continuing the previous window's
    recurrent states when ``carry``. Then the gradient of the shard's mean loss scaled by
    ``m_r / mb_all`` (dropout's masks those of columns ``lo …`` of ``mb_all``). Returns
    ``(mean loss per position, correct positions, Σ grad²)``."""
    mb = hi - lo
    lab = _load_windows(b, lb, corpus, rng, window, plan[0, IN_SIZE], mb_all, lo, hi)
    if mb <= 0:
        _zero(b.grad)
        return 0.0, 0, 0.0
    batch = _batch(mb, _view(lb.Ybuf, 0, 0, mb), lab, False, seed, threads, carry, lo, mb_all)
    loss, correct = _gradient(plan, fplan, b, lb, batch, table)
    return loss, correct, _scale_squares(b.grad, mb / mb_all, threads)


@kernel
def _slice_squares(part, a, spans, squares, blocks):
    """The squares a rank's slice ``part = ∂L/∂θ[a : a + len(part)]`` of the summed gradient
    holds: ``squares[k]`` ← Σ g² over the slice's share of parameter array ``k`` (``spans[k]``
    = its ``(start, count)`` in θ), as :func:`loopprop.train._sum_squares` takes it;
    ``blocks[c]`` ← Σ g² over the slice's ``c``-th block of :data:`~loopprop.kernels.optim.BLOCK`
    values (``a`` is a multiple of BLOCK: these are blocks of θ, summed as
    :func:`~loopprop.kernels.optim._clip_grad_norm_threads` sums them). With one rank these
    are the single process's sums, bit for bit. Shapes: part (P_r,), spans (K, 2),
    squares (K,), blocks (⌈P_r / BLOCK⌉,)."""
    b = a + part.shape[0]
    for k in range(spans.shape[0]):
        lo = max(spans[k, 0], a)
        hi = min(spans[k, 0] + spans[k, 1], b)
        squares[k] = _sum_squares(part, lo - a, hi - lo) if hi > lo else 0.0
    n = part.shape[0]
    for c in range(blocks.shape[0]):
        blocks[c] = _block_squares(part, c * BLOCK, min(n, (c + 1) * BLOCK))


@kernel
def _slice_update(theta, part, opt, t, norm, clip, threads):
    """Optimizer step ``t + 1`` on a rank's slice of θ from its slice ``part`` of the summed
    gradient (``opt``: the optimizer with its state vectors and decay spans cut to the slice,
    clipping off): the gradient first clipped to the global norm ``norm`` of the whole
    gradient, ``g ← g·c/(‖g‖ + 10⁻⁶)`` when that is below 1 (as
    :func:`~loopprop.kernels.optim._clip_grad_norm_threads`), then
    :func:`loopprop.train._update`. Returns the rate used. Shapes: theta, part (P_r,)."""
    if clip > 0:
        coef = clip / (norm + 1e-6)
        if coef < 1.0:
            for p in range(part.shape[0]):
                part[p] *= coef
    return _update(theta, part, opt, t, threads)
