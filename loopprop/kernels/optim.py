"""Parameter updates (docs/formulas.md §10): ``W_new = W_old − η·dW``, ``b_new = b_old − η·db``.

The kernels run over a flat view of one parameter array (``θ``, any shape, ``p`` its flat index),
so one loop serves ``W`` and ``b`` alike, and :class:`loopprop.Network`, which keeps every
parameter in one flat buffer, updates the whole network in a single loop.

* SGD (§10): ``θ[p] −= η · g[p]``
* momentum: ``v[p] = β · v[p] + g[p]``; ``θ[p] −= η · v[p]``
* Adam: ``m[p] = β₁ m[p] + (1 − β₁) g[p]``; ``v[p] = β₂ v[p] + (1 − β₂) g[p]²``;
  ``θ[p] −= η · m̂ / (√v̂ + ε)`` with ``m̂ = m / (1 − β₁ᵗ)``, ``v̂ = v / (1 − β₂ᵗ)``
* AdamW: ``θ[p] ← θ[p]·(1 − η·λ·d[p])``, then the Adam step (decoupled weight decay, as
  ``torch.optim.AdamW``); ``d[p]`` is 1 where weight decay applies, 0 elsewhere
* weight decay for SGD, momentum and Adam: ``g[p] += λ·d[p]·θ[p]`` before the step (L2 in the
  gradient, as ``torch.optim.SGD``/``Adam`` do)
* clipping: ``g ← g · min(1, c / (‖g‖ + 10⁻⁶))`` with ``‖g‖`` over every parameter (as
  ``torch.nn.utils.clip_grad_norm_``)
* schedules: the rate of step ``t`` (0-based) is ``η·s(t)``: linear warm-up
  ``s(t) = (t + 1)/W`` for ``t < W`` steps, then constant ``1``, step decay
  ``γ^⌊(t − W)/S⌋``, or cosine ``½(1 + cos(π·(t − W)/(T − W)))`` over the ``T`` steps of
  training

``d`` is given as *spans*: an ``(k, 2)`` array of the ``[start, end)`` ranges of the flat
vector where ``d[p] = 1`` (whole parameter arrays: weights decay, biases and normalization
gains do not), sorted and disjoint. A mask of one value per parameter would be as large as the
parameters themselves (472 MB for GPT-2 small in float32).
"""

from __future__ import annotations

import math

import numpy as np

from .. import _checks
from .._jit import kernel, prange
from .views import borrowed_flat, borrowed_matrix


@kernel(fast=True)
def _sgd(theta, grad, lr):
    """``θ[p] −= η · g[p]`` (docs/formulas.md §10). Shapes: theta, grad (P,) flat views."""
    for p in range(theta.shape[0]):
        theta[p] -= lr * grad[p]


@kernel(fast=True)
def _momentum(theta, grad, velocity, lr, beta):
    """``v[p] = β·v[p] + g[p]``; ``θ[p] −= η·v[p]``. Shapes: theta, grad, velocity (P,)."""
    for p in range(theta.shape[0]):
        velocity[p] = beta * velocity[p] + grad[p]
        theta[p] -= lr * velocity[p]


@kernel
def _adam(theta, grad, m1, m2, lr, beta1, beta2, eps, t):
    """Adam step ``t`` (1-based). Shapes: theta, grad, m1, m2 (P,).

    ``m1 = β₁ m1 + (1 − β₁) g``; ``m2 = β₂ m2 + (1 − β₂) g²``;
    ``θ −= η · (m1 / (1 − β₁ᵗ)) / (√(m2 / (1 − β₂ᵗ)) + ε)``.
    """
    c1 = 1.0 / (1.0 - beta1**t)
    c2 = 1.0 / (1.0 - beta2**t)
    for p in range(theta.shape[0]):
        g = grad[p]
        m1[p] = beta1 * m1[p] + (1.0 - beta1) * g
        m2[p] = beta2 * m2[p] + (1.0 - beta2) * g * g
        theta[p] -= lr * (m1[p] * c1) / (math.sqrt(m2[p] * c2) + eps)


@kernel
def _adamw(theta, grad, m1, m2, d, lr, beta1, beta2, eps, t, weight_decay):
    """AdamW step ``t``: ``θ[p] ← θ[p]·(1 − η·λ·d)``, then :func:`_adam`'s update (the decay
    is decoupled from the moments); ``d`` is 1.0 where these parameters decay, else 0.0.
    Shapes: all (P,).

    Adam and AdamW are compiled without fast-math: with ``contract``, LLVM may fuse a
    multiply-add in the vector loop and not in its scalar remainder, so an element's bits
    would depend on where a block boundary falls; without it every element is computed the
    same way in any loop (the loops still vectorize: there is no reduction)."""
    c1 = 1.0 / (1.0 - beta1**t)
    c2 = 1.0 / (1.0 - beta2**t)
    for p in range(theta.shape[0]):
        g = grad[p]
        theta[p] *= 1.0 - lr * weight_decay * d
        m1[p] = beta1 * m1[p] + (1.0 - beta1) * g
        m2[p] = beta2 * m2[p] + (1.0 - beta2) * g * g
        theta[p] -= lr * (m1[p] * c1) / (math.sqrt(m2[p] * c2) + eps)


@kernel(fast=True)
def _add_weight_decay(grad, theta, spans, weight_decay):
    """``g[p] += λ·θ[p]`` for every ``p`` of the decayed ``spans`` (``(k, 2)``, ``[start,
    end)``): the gradient of ``½λ‖θ‖²`` over the decayed parameters (L2). Shapes: grad, theta
    (P,)."""
    for q in range(spans.shape[0]):
        for p in range(spans[q, 0], spans[q, 1]):
            grad[p] += weight_decay * theta[p]


@kernel(fast=True)
def _clip_grad_norm(grad, max_norm):
    """Scale every gradient by ``min(1, c / (‖g‖ + 10⁻⁶))``, ``‖g‖ = √(Σ_p g[p]²)`` (PyTorch's
    ``clip_grad_norm_``). Returns ``‖g‖`` before clipping. Shape: grad (P,)."""
    s = 0.0
    for p in range(grad.shape[0]):
        s += grad[p] * grad[p]
    norm = math.sqrt(s)
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        for p in range(grad.shape[0]):
            grad[p] *= coef
    return norm


#: the optimizers' parallel drivers split the flat vectors into blocks of this many values:
#: a fixed size, so that the gradient norm's partial sums (and so every bit of a clipped step)
#: do not depend on the thread count
BLOCK = 1 << 16


@kernel
def _block(v, b):
    """Block ``b`` of the flat vector ``v`` (:data:`BLOCK` values, fewer in the last), as a
    C-contiguous view typed the same in serial and in threaded loops (so both call one
    compiled specialization of the update and get the same bits)."""
    lo = b * BLOCK
    return borrowed_flat(borrowed_matrix(v, lo, 1, min(v.shape[0], lo + BLOCK) - lo))


@kernel
def _piece(v, lo, hi):
    """``v[lo:hi]`` as a C-contiguous view typed as :func:`_block`'s."""
    return borrowed_flat(borrowed_matrix(v, lo, 1, hi - lo))


@kernel
def _adamw_block(theta, grad, m1, m2, spans, lo, hi, lr, beta1, beta2, eps, t, weight_decay):
    """:func:`_adamw` on ``[lo, hi)``, cut where the decayed ``spans`` begin and end: each
    piece with its ``d`` (1.0 inside a span, 0.0 outside). The pieces depend on the block and
    the spans only, never on the thread count."""
    cur = lo
    for q in range(spans.shape[0]):
        s, e = max(spans[q, 0], lo), min(spans[q, 1], hi)
        if s >= e:
            continue
        if cur < s:
            _adamw(_piece(theta, cur, s), _piece(grad, cur, s), _piece(m1, cur, s),
                   _piece(m2, cur, s), 0.0, lr, beta1, beta2, eps, t, weight_decay)
        _adamw(_piece(theta, s, e), _piece(grad, s, e), _piece(m1, s, e), _piece(m2, s, e),
               1.0, lr, beta1, beta2, eps, t, weight_decay)
        cur = e
    if cur < hi:
        _adamw(_piece(theta, cur, hi), _piece(grad, cur, hi), _piece(m1, cur, hi),
               _piece(m2, cur, hi), 0.0, lr, beta1, beta2, eps, t, weight_decay)


@kernel(parallel=True)
def _adamw_threads(theta, grad, m1, m2, spans, lr, beta1, beta2, eps, t, weight_decay,
                   threads):
    """:func:`_adamw` over blocks of :data:`BLOCK` parameters, the blocks split over the
    threads (a GPT-2-sized model: 124 M parameters, 2 GB read and written per step); the
    decayed ``spans`` as in the module docstring (:func:`_adamw_block`)."""
    n = theta.shape[0]
    blocks = (n + BLOCK - 1) // BLOCK
    if threads > 1 and blocks > 1:
        for b in prange(blocks):
            _adamw_block(theta, grad, m1, m2, spans, b * BLOCK, min(n, (b + 1) * BLOCK), lr,
                         beta1, beta2, eps, t, weight_decay)
    else:  # the same blocks in order: LLVM's vector loop splits each the same way
        for b in range(blocks):
            _adamw_block(theta, grad, m1, m2, spans, b * BLOCK, min(n, (b + 1) * BLOCK), lr,
                         beta1, beta2, eps, t, weight_decay)


@kernel(parallel=True)
def _sgd_threads(theta, grad, lr, threads):
    """:func:`_sgd` over blocks of :data:`BLOCK` parameters, split over the threads (every
    value's update is its own: the same bits on any thread count). From two blocks on: the
    MNIST-sized MLP's 10⁵ parameters took 4 % of its epoch on one thread while the other
    waited."""
    n = theta.shape[0]
    blocks = (n + BLOCK - 1) // BLOCK
    if threads > 1 and blocks > 1:
        for b in prange(blocks):
            _sgd(_block(theta, b), _block(grad, b), lr)
    else:  # the same blocks in order: one compiled specialization, the same bits
        for b in range(blocks):
            _sgd(_block(theta, b), _block(grad, b), lr)


@kernel(parallel=True)
def _zero_threads(v, threads):
    """``v[p] = 0`` for every ``p`` (a batch's gradients start from zero: docs/formulas.md
    §12), over blocks of :data:`BLOCK` values split over the threads from two blocks: the
    MNIST-sized MLP's 10⁵ gradients, zeroed on one thread at every batch, took 4.5 % of its
    epoch while the other thread waited. Shape: v (n,)."""
    n = v.shape[0]
    blocks = (n + BLOCK - 1) // BLOCK
    if threads > 1 and blocks > 1:
        for b in prange(blocks):
            _zero_block(_block(v, b))
    else:
        for b in range(blocks):
            _zero_block(_block(v, b))


@kernel
def _zero_block(v):
    """``v[p] = 0`` for every ``p`` of one block (:func:`_zero_threads`)."""
    for p in range(v.shape[0]):
        v[p] = 0.0


@kernel(parallel=True)
def _momentum_threads(theta, grad, velocity, lr, beta, threads):
    """:func:`_momentum` over blocks of :data:`BLOCK` parameters, split over the threads."""
    n = theta.shape[0]
    blocks = (n + BLOCK - 1) // BLOCK
    if threads > 1 and blocks > 1:
        for b in prange(blocks):
            _momentum(_block(theta, b), _block(grad, b), _block(velocity, b), lr, beta)
    else:
        for b in range(blocks):
            _momentum(_block(theta, b), _block(grad, b), _block(velocity, b), lr, beta)


@kernel(parallel=True)
def _adam_threads(theta, grad, m1, m2, lr, beta1, beta2, eps, t, threads):
    """:func:`_adam` over blocks of :data:`BLOCK` parameters, split over the threads."""
    n = theta.shape[0]
    blocks = (n + BLOCK - 1) // BLOCK
    if threads > 1 and blocks > 1:
        for b in prange(blocks):
            _adam(_block(theta, b), _block(grad, b), _block(m1, b), _block(m2, b), lr, beta1,
                  beta2, eps, t)
    else:
        for b in range(blocks):
            _adam(_block(theta, b), _block(grad, b), _block(m1, b), _block(m2, b), lr, beta1,
                  beta2, eps, t)


@kernel(fast=True)
def _block_squares(grad, lo, hi):
    s = 0.0
    for p in range(lo, hi):
        s += grad[p] * grad[p]
    return s


@kernel(fast=True)
def _sum_blocks(partial):
    """``Σ_b partial[b]``: the blocks' partial sums of squares added up, in the one order this
    kernel's (vectorized) loop takes -- the clipping norm of one process and of data-parallel
    ranks (loopprop/distributed.py) alike. Shape: partial (B,)."""
    s = 0.0
    for b in range(partial.shape[0]):
        s += partial[b]
    return s


@kernel(fast=True, parallel=True)
def _clip_grad_norm_threads(grad, max_norm, threads):
    """:func:`_clip_grad_norm` with ``Σ g²`` taken as one partial sum per block of
    :data:`BLOCK` values (added in block order: the same bits on any number of threads) and
    the blocks split over the threads. Returns ``‖g‖`` before clipping."""
    n = grad.shape[0]
    blocks = (n + BLOCK - 1) // BLOCK
    partial = np.zeros(max(blocks, 1), np.float64)
    if threads > 1 and blocks > 1:
        for b in prange(blocks):
            partial[b] = _block_squares(grad, b * BLOCK, min(n, (b + 1) * BLOCK))
    else:
        for b in range(blocks):
            partial[b] = _block_squares(grad, b * BLOCK, min(n, (b + 1) * BLOCK))
    norm = math.sqrt(_sum_blocks(partial))
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        if threads > 1 and blocks > 1:
            for b in prange(blocks):
                for p in range(b * BLOCK, min(n, (b + 1) * BLOCK)):
                    grad[p] *= coef
        else:
            for p in range(n):
                grad[p] *= coef
    return norm


CONSTANT, STEP, COSINE = 0, 1, 2
SCHEDULES = {"constant": CONSTANT, "step": STEP, "cosine": COSINE}


@kernel
def _scheduled_lr(schedule, lr, t, warmup, total, step_size, gamma):
    """The learning rate of optimizer step ``t`` (0-based) of ``total``: linear warm-up over
    the first ``warmup`` steps, ``η·(t + 1)/warmup``; then ``η`` (constant), ``η·γ^⌊(t − W)/S⌋``
    (step, every ``step_size`` steps) or ``η·½(1 + cos(π·(t − W)/(T − W)))`` (cosine, to 0
    at the end of training)."""
    if t < warmup:
        return lr * (t + 1) / warmup
    if schedule == STEP:
        return lr * gamma ** ((t - warmup) // step_size)
    if schedule == COSINE:
        span = total - warmup
        if span <= 0:
            return lr
        return lr * 0.5 * (1.0 + math.cos(math.pi * min(t - warmup, span) / span))
    return lr


def sgd_update(param: np.ndarray, grad, lr: float, *, check_finite: bool = True) -> np.ndarray:
    """In place: ``param −= lr · grad`` (docs/formulas.md §10). Returns ``param`` for convenience.

    ``param`` must be a writeable float32/float64 NumPy array (it is updated where it lives);
    ``grad`` has the same shape and dtype (any number of dimensions, 0-d included) and may
    overlap ``param`` in memory (it is then copied first, so the result is NumPy's
    ``param -= lr * grad``). ``lr`` is a finite, non-negative number.
    """
    if not isinstance(param, np.ndarray):
        raise TypeError(
            f"param: expected a NumPy array to update in place, got {type(param).__name__}; "
            "wrap it with np.asarray(param, dtype=np.float64) and keep that array"
        )
    if not param.flags.writeable:
        raise ValueError("param: the array is read-only; pass a writeable copy (param.copy())")
    _checks.as_float_array(param, "param", param.ndim, check_finite=False)  # dtype check only
    g = _checks.as_float_array(grad, "grad", param.ndim, check_finite=check_finite)
    _checks.same_dtype(param=param, grad=g)
    _checks.require_shape(g, "grad", param.shape, "grad must match param")
    lr = _checks.check_lr(lr)
    if np.shares_memory(param, g):
        # the kernel reads grad[p] after writing param[q < p]: overlapping memory would read
        # values already updated. NumPy's ``param -= lr * grad`` computes lr·grad first.
        g = g.copy()
    if param.flags.c_contiguous or param.flags.f_contiguous:
        order = "C" if param.flags.c_contiguous else "F"
        flat = param.reshape(-1, order=order)  # a view: the update lands in param
        _sgd(flat, np.ascontiguousarray(g).reshape(-1, order="C") if order == "C"
             else np.asfortranarray(g).reshape(-1, order="F"), lr)
    else:  # a strided view: update a C copy, write it back
        tmp = np.ascontiguousarray(param)
        _sgd(tmp.reshape(-1), g.reshape(-1), lr)
        param[...] = tmp
    return param
