"""The compiled training loop: a whole epoch -- shuffle, minibatches, forward, loss, backward,
update -- in one call to compiled code, with no Python per batch (docs/formulas.md §5, §10, §12).

The epoch knows no layer kind. It walks the *plan* (:mod:`loopprop.plan`), one row per layer,
and calls each row's forward or backward function from the :class:`~loopprop.bundles.Table`
it is given, by the row's kind code: compiled functions of one signature, each compiled
separately the first time a network uses its kind (:mod:`loopprop.dispatch`). The epoch is
therefore compiled once per dtype and serves every composition of layers; adding a layer kind
changes nothing here. Everything lives in flat buffers (:class:`~loopprop.bundles.Flat`), so
compiled code walks any stack of layers without Python objects, and the functions take a few
named bundles (:mod:`loopprop.bundles`) rather than dozens of arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba.extending import register_jitable

from ._jit import kernel, prange, runtime_flag
from .bundles import Batch, Optim, Step
from .dispatch import row_at
from .kernels.losses import (_mse, _sigmoid_binary_cross_entropy, _softmax_cross_entropy,
                             _softmax_cross_entropy_labels_tuned)
from .kernels.optim import (SCHEDULES, _adam_threads, _adamw_threads, _add_weight_decay,
                            _clip_grad_norm_threads, _momentum_threads, _scheduled_lr,
                            _sgd_threads, _zero_threads)
from .kernels.rng import _below, _shuffle
from .layers.core import Activation
from .plan import IN2_OFF, IN_OFF, IN_SIZE, KIND, OUT_OFF, OUT_SIZE, WRITES_DX
from .rows.common import _vec, _view, _zero

#: a fused loss's last row is an activation: its features are the classes
FEATURES = Activation.column("features")

MSE, CROSS_ENTROPY, BINARY_CROSS_ENTROPY = 0, 1, 2
LOSS_CODES = {"mse": MSE, "cross_entropy": CROSS_ENTROPY,
              "binary_cross_entropy": BINARY_CROSS_ENTROPY}
SGD, MOMENTUM, ADAM, ADAMW = 0, 1, 2, 3
OPTIMIZERS = {"sgd": SGD, "momentum": MOMENTUM, "adam": ADAM, "adamw": ADAMW}
#: the optimizer's settings, one float vector ``hyper`` (built by :class:`OptimizerState`)
(LR, BETA1, BETA2, EPS, WEIGHT_DECAY, CLIP, SCHEDULE, WARMUP, TOTAL, STEP_SIZE,
 GAMMA) = range(11)


# ---------------------------------------------------------------------------------------------
# compiled pieces of one step
# ---------------------------------------------------------------------------------------------


@kernel
def _step(mb, training, seed, fresh, threads, carry, col0, cols):
    """A :class:`~loopprop.bundles.Step` of exactly the types the row functions were compiled
    for (a constant argument would otherwise arrive as a literal type)."""
    return Step(int(mb), bool(training), int(seed), bool(fresh), int(threads), bool(carry),
                int(col0), int(cols))


@kernel(separate=True)
def _forward_batch(plan, fplan, b, mb, n_rows, training, seed, carry, col0, cols, threads,
                   table):
    """Forward through rows ``0 … n_rows − 1`` (§5): each row's forward function from
    ``table`` reads its input from ``b.acts``, writes its output there and fills its caches;
    ``A^(0)`` must already be at the start of ``b.acts``. A fused loss (softmax or sigmoid +
    cross-entropy) stops one row short: it starts from the last layer's input and never reads
    its output. ``training`` switches dropout on and batch norm to the batch's statistics (and
    updates the running ones in ``b.state``); ``seed`` seeds dropout's masks; ``carry``: the
    batch continues the sequences of the previous pass on these buffers (recurrent rows start
    from the states it ended with: :class:`~loopprop.bundles.Step`); ``col0``, ``cols``: the
    batch's columns are columns ``col0 …`` of ``cols`` (a data-parallel rank's share; else 0,
    ``mb``), for dropout's masks."""
    for r in range(n_rows):
        row_at(table.forward, plan[r, KIND], table.like)(
            r, plan, fplan, b, _step(mb, training, seed * 64 + r, False, threads, carry, col0,
                                     cols))


@kernel(separate=True)
def _backward_batch(plan, fplan, b, mb, last, training, threads, table):
    """Backward from row ``last`` down to row 0 (docs/formulas.md §5): the seed must already be in
    ``b.dacts`` (the gradient of row ``last``'s output). Each row's backward function adds its
    parameter gradients into ``b.grad`` and its input's gradient into ``b.dacts`` (row 0's
    input is the data: its gradient is not computed). ``training`` must be the mode of the
    forward pass (dropout's mask, batch norm's statistics).

    The kernels *add* into their inputs' gradients; each region of ``b.dacts`` is zeroed just
    before the first row (in this order) that adds into it (:func:`_first_to_add`), where it is
    still in cache when the row adds, or written by that row when its kernel can write (the
    plan's ``WRITES_DX``; the row is told by ``Step.fresh``), instead of the whole buffer zeroed
    before the pass (1.3 ms of a 50 ms step of the small GPT, one thread over 32 MB)."""
    for r in range(last, -1, -1):
        if plan[r, IN2_OFF] >= 0 and _first_to_add(plan, r, plan[r, IN2_OFF], last):
            # a second input (a residual's skip): the first's size
            _zero(_vec(b.dacts, plan[r, IN2_OFF] * mb, plan[r, IN_SIZE] * mb))
        fresh = _first_to_add(plan, r, plan[r, IN_OFF], last)
        if fresh and plan[r, WRITES_DX] == 0:
            _zero(_vec(b.dacts, plan[r, IN_OFF] * mb, plan[r, IN_SIZE] * mb))
        row_at(table.backward, plan[r, KIND], table.like)(
            r, plan, fplan, b, _step(mb, training, 0, fresh, threads, False, 0, mb))


@kernel
def _first_to_add(plan, r, off, last):
    """Whether row ``r`` is the first row of a backward pass from row ``last`` down to add into
    the gradient region at (per-example) offset ``off``: no later row up to ``last`` reads that
    region as an input, and it is not the seeded gradient of row ``last``'s output."""
    if off == plan[last, OUT_OFF]:
        return False
    for q in range(r + 1, last + 1):
        if plan[q, IN_OFF] == off or plan[q, IN2_OFF] == off:
            return False
    return True


@kernel
def _fused(loss_code):
    """Whether the loss is fused with the last layer (softmax or sigmoid + cross-entropy): it
    then seeds the gradient of that layer's *input* (``dZ = (P − Y)/m``, docs/formulas.md §9)."""
    return loss_code != MSE


@kernel(separate=True)
def _loss_seed(plan, acts, dacts, mb, loss_code, Y, labels, one_hot, col1, col2):
    """The loss of the batch and the seed of the backward pass (docs/formulas.md §9).

    Cross-entropy and binary cross-entropy are fused with the last layer, softmax or sigmoid:
    they read its input ``Z`` and write ``dZ = (P − Y)/m`` there. MSE reads the last output
    ``A`` and writes ``dA = (A − Y)/m`` there. ``col1``, ``col2`` are per-example workspaces.
    """
    r = plan.shape[0] - 1
    if loss_code == MSE:
        n = plan[r, OUT_SIZE]
        off = plan[r, OUT_OFF] * mb
        return _mse(_view(dacts, off, n, mb), _view(acts, off, n, mb), Y)
    n = plan[r, FEATURES]  # the classes: the first axis of the output
    N = plan[r, IN_SIZE] // n * mb  # a column per example and output position
    off = plan[r, IN_OFF] * mb
    dZ = _view(dacts, off, n, N)
    Z = _view(acts, off, n, N)
    if loss_code == CROSS_ENTROPY:
        if one_hot:
            return _softmax_cross_entropy(dZ, Z, Y)
        return _softmax_cross_entropy_labels_tuned(dZ, Z, labels, col1, col2)
    return _sigmoid_binary_cross_entropy(dZ, Z, Y)


@kernel
def _logits(plan, acts, mb):
    """The last layer's input (the logits of a fused loss), ``(n_L, positions · mb)``."""
    r = plan.shape[0] - 1
    n = plan[r, FEATURES]
    return _view(acts, plan[r, IN_OFF] * mb, n, plan[r, IN_SIZE] // n * mb)


@kernel
def _output(plan, acts, mb):
    """The network's output ``A^(L)``, ``(n_L, mb)``."""
    r = plan.shape[0] - 1
    return _view(acts, plan[r, OUT_OFF] * mb, plan[r, OUT_SIZE], mb)


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


@kernel(separate=True)
def _update(theta, grad, opt, t, threads):
    """Optimizer step number ``t + 1`` on the flat parameter vector (§10), in PyTorch's
    order: clip the gradient's global norm, take the step's rate from the schedule, add L2
    weight decay to the gradient (SGD, momentum, Adam) or decay the weights (AdamW), update.
    ``opt`` is the optimizer (:class:`~loopprop.bundles.Optim`; ``opt.decay_spans`` are the
    ``[start, end)`` ranges where weight decay applies). Returns the rate used."""
    hyper = opt.hyper
    if hyper[CLIP] > 0:
        _clip_grad_norm_threads(grad, hyper[CLIP], threads)
    lr = _scheduled_lr(int(hyper[SCHEDULE]), hyper[LR], t, int(hyper[WARMUP]), int(hyper[TOTAL]),
                       int(hyper[STEP_SIZE]), hyper[GAMMA])
    wd = hyper[WEIGHT_DECAY]
    if opt.code == ADAMW:
        _adamw_threads(theta, grad, opt.opt1, opt.opt2, opt.decay_spans, lr, hyper[BETA1],
                       hyper[BETA2], hyper[EPS], t + 1, wd, threads)
        return lr
    if wd > 0:
        _add_weight_decay(grad, theta, opt.decay_spans, wd)
    if opt.code == SGD:
        _sgd_threads(theta, grad, lr, threads)
    elif opt.code == MOMENTUM:
        _momentum_threads(theta, grad, opt.opt1, lr, hyper[BETA1], threads)
    else:
        _adam_threads(theta, grad, opt.opt1, opt.opt2, lr, hyper[BETA1], hyper[BETA2],
                      hyper[EPS], t + 1, threads)
    return lr


@kernel(fast=True)
def _sum_squares(v, start, count):
    """``Σ v[p]²`` over ``start ≤ p < start + count`` (a layer's dW, for ‖dW‖), vectorized.
    (Indexed ``v[p]`` over ``range(start, start + count)`` LLVM did not vectorize the loop:
    48–55 µs for 10⁵ values; over the slice's own indices, 8 µs.)"""
    w = v[start:start + count]
    s = 0.0
    for p in range(w.shape[0]):
        s += w[p] * w[p]
    return s


@kernel
def _gather_columns(dst, XT, perm, start):
    """``dst[j, c] = XT[perm[start + c], j]``: the batch's examples as columns, each read as one
    contiguous row of X transposed (a shuffled column of X would be ``n_0`` cache misses)."""
    n0, mb = dst.shape
    for c in range(mb):
        src = XT[perm[start + c]]
        for j in range(n0):
            dst[j, c] = src[j]


@kernel
def _copy_rows(dst, src, start, j0, j1):
    """Rows ``j0 ≤ j < j1`` of :func:`_copy_columns`."""
    mb = dst.shape[1]
    for j in range(j0, j1):
        d = dst[j]
        s = src[j, start:start + mb]
        for c in range(mb):
            d[c] = s[c]


#: values from which a batch copy is split between threads (an MNIST-sized batch, 784 × 64,
#: took 12 µs in float32 and 37 in float64 on one thread while the other waited)
COPY_MIN_VALUES = 1 << 15


@kernel(parallel=True)
def _copy_columns(dst, src, start, threads):
    """``dst[j, c] = src[j, start + c]``: a batch of examples in order (fit without shuffling,
    evaluation's chunks), each row's ``mb`` values one contiguous run; the rows split between
    ``threads`` from :data:`COPY_MIN_VALUES` values on. Shapes: dst (n_0, mb); src (n_0, n).
    (Through ``perm``, which LLVM cannot vectorize, the MNIST-sized batch took 1.4× as long in
    float64 and 2.9× in float32.)"""
    rows, mb = dst.shape
    chunks = min(threads, rows) if rows * mb >= COPY_MIN_VALUES else 1
    if chunks > 1:
        for c in prange(chunks):
            _copy_rows(dst, src, start, c * rows // chunks, (c + 1) * rows // chunks)
    else:
        _copy_rows(dst, src, start, 0, rows)


@kernel
def _gather(dst, src, perm, start):
    """``dst[j, c] = src[j, perm[start + c]]``: the batch's columns in ``perm``'s order (its
    targets; its examples too when they are shuffled but not transposed)."""
    rows, mb = dst.shape
    for j in range(rows):
        for c in range(mb):
            dst[j, c] = src[j, perm[start + c]]


@kernel
def _gather_labels(labbuf, labels, perm, start, mb):
    """``labbuf[t·mb + c] = labels[t, perm[start + c]]``: the batch's labels, one per example
    and output position, in the order of the logits' columns; returns that part of labbuf."""
    P = labels.shape[0]
    for t in range(P):
        row = labels[t]
        for c in range(mb):
            labbuf[t * mb + c] = row[perm[start + c]]
    return labbuf[:P * mb]


@kernel
def _load_batch(b, lb, data, first, mb, shuffled, threads):
    """Examples ``first … first + mb − 1`` in ``data.perm``'s order into ``A^(0)`` (the first
    region of ``b.acts``, ``(n_0, mb)``), their targets into ``lb.Ybuf`` and their labels into
    ``lb.labbuf``; returns ``(targets (n_L, mb), labels)``. ``data.X`` is X transposed ``(n,
    n_0)`` (``data.transposed``: a row per example, gathered into columns), or X ``(n_0, n)``:
    gathered through ``perm`` when ``shuffled``, else copied as a block of columns (``perm`` is
    then the identity). The epoch's batches and a rank's share of one
    (:func:`loopprop.shards._shard_step`) are loaded alike."""
    X, perm = data.X, data.perm
    n0 = X.shape[1] if data.transposed else X.shape[0]
    X0 = _view(b.acts, 0, n0, mb)
    if data.transposed:
        _gather_columns(X0, X, perm, first)
    elif shuffled:
        _gather(X0, X, perm, first)
    else:
        _copy_columns(X0, X, first, threads)
    Yb = _view(lb.Ybuf, 0, data.Y.shape[0], mb)
    _gather(Yb, data.Y, perm, first)
    return Yb, _gather_labels(lb.labbuf, data.labels, perm, first, mb)


@kernel(separate=True)
def _gradient(plan, fplan, b, lb, batch, table):
    """The gradient of the batch already in ``b.acts`` (``A^(0)``, ``batch.mb`` examples) with
    its targets ``batch.Y`` / labels ``batch.labels``: forward through the plan (§5–§6), loss
    and seed (§9), zero the gradients (§12), backward through the plan (§6) into ``b.grad``.
    Returns ``(batch loss, correct predictions)``."""
    L = plan.shape[0]
    mb, threads = batch.mb, batch.threads
    fused = _fused(lb.code)
    n_fwd = L - 1 if fused else L
    _forward_batch(plan, fplan, b, mb, n_fwd, runtime_flag(True), batch.seed, batch.carry,
                   batch.col0, batch.cols, threads, table)
    loss = _loss_seed(plan, b.acts, b.dacts, mb, lb.code, batch.Y, batch.labels, batch.one_hot,
                      lb.col1, lb.col2)
    correct = 0
    if fused:
        correct = _count_correct(_logits(plan, b.acts, mb), lb.code, batch.Y, batch.labels,
                                 batch.one_hot)
    _zero_threads(b.grad, threads)
    _backward_batch(plan, fplan, b, mb, n_fwd - 1, runtime_flag(True), threads, table)
    return loss, correct


@kernel(separate=True)
def _descend(b, opt, t, norms, threads):
    """Optimizer step number ``t + 1`` from the gradient in ``b.grad`` (§10, :func:`_update`),
    after ``norms.total[a]`` has accumulated the norm ``‖∂L/∂θ_a‖`` of every parameter array
    ``a`` (before clipping). Returns the rate used."""
    spans = norms.spans
    for a in range(spans.shape[0]):
        norms.total[a] += math.sqrt(_sum_squares(b.grad, spans[a, 0], spans[a, 1]))
    return _update(b.theta, b.grad, opt, t, threads)


@kernel(separate=True)
def _train_step(plan, fplan, b, opt, t, lb, batch, norms, table):
    """One optimizer step on the batch already in ``b.acts``: :func:`_gradient`, then
    :func:`_descend`. Returns ``(batch loss, correct predictions, rate)``."""
    loss, correct = _gradient(plan, fplan, b, lb, batch, table)
    lr = _descend(b, opt, t, norms, batch.threads)
    return loss, correct, lr


@kernel
def _train_epoch(plan, fplan, b, opt, t, lb, data, norms, run, stop, table):
    """One epoch of minibatch training, entirely compiled, for any network of this dtype (the
    rows run through ``table``).

    Per batch of ``run.batch_size``: gather the (shuffled) examples and take one
    :func:`_train_step`. The last, partial batch is used, not dropped. ``data.X`` is X,
    ``(n_0, n)``, or X transposed, ``(n, n_0)`` (``data.transposed``); ``t`` counts the
    optimizer steps taken before this epoch.
    Returns ``(Σ batch loss × batch size, correct predictions, step count, last rate)``.
    ``stop`` (one int64) set to non-zero by another thread ends the epoch after the step in
    progress (Ctrl-C: see ``loopprop/interrupt.py``).
    """
    X, perm = data.X, data.perm
    n = X.shape[0] if data.transposed else X.shape[1]
    if run.shuffle_seed >= 0:
        _shuffle(perm, run.shuffle_seed)  # Fisher–Yates, loopprop's generator (kernels/rng.py)
    total = 0.0
    correct = 0
    batch = 0
    lr = opt.hyper[LR]
    for start in range(0, n, run.batch_size):
        if stop[0] != 0:
            break
        mb = min(run.batch_size, n - start)
        Yb, lab = _load_batch(b, lb, data, start, mb, run.shuffle_seed >= 0, run.threads)
        step = _batch(mb, Yb, lab, data.one_hot, run.dropout_seed * 1048576 + batch, run.threads,
                      False, 0, mb)
        loss, right, lr = _train_step(plan, fplan, b, opt, t, lb, step, norms, table)
        total += mb * loss
        correct += right
        t += 1
        batch += 1
    return total, correct, t, lr


@kernel
def _batch(mb, Y, labels, one_hot, seed, threads, carry, col0, cols):
    """A :class:`~loopprop.bundles.Batch` of plain (non-literal) types."""
    return Batch(int(mb), Y, labels, bool(one_hot), int(seed), int(threads), bool(carry),
                 int(col0), int(cols))


@register_jitable
def _window_of(first_window, step, n_tokens, mb, T):
    """The consecutive window batch ``step`` reads when the corpus of ``n_tokens`` is cut into
    ``mb`` streams of ``L = (n_tokens − 1) // mb`` tokens: ``(first_window + step) mod
    (L // T)`` (one window when a stream is shorter). Plain Python for
    :func:`loopprop.distributed.text_epoch`, inlined here."""
    return (first_window + step) % max((n_tokens - 1) // mb // T, 1)


@kernel
def _load_windows(b, lb, corpus, rng, window, T, mb_all, lo, hi):
    """Columns ``lo ≤ k < hi`` of a batch of ``mb_all`` windows of ``corpus`` into ``A^(0)``
    ``(T, hi − lo)`` and their next tokens into ``lb.labbuf`` (``lab[i·mb + c]``, ``c = k −
    lo``); returns those labels. ``window ≥ 0``: the consecutive ``window`` of each column's
    stream, ``s = k·L + window·T`` with ``L = (n − 1) // mb_all``; ``window < 0``: a uniform
    random offset per column from ``rng``, drawn for *every* column of the batch, so that the
    generator advances alike whichever columns are kept (a rank's share,
    :func:`loopprop.shards._shard_text_step`, or all of them, :func:`_train_text_epoch`)."""
    mb = hi - lo
    span = corpus.shape[0] - T  # the last window's labels end at the corpus's last token
    stream = (corpus.shape[0] - 1) // mb_all
    X0 = _view(b.acts, 0, T, mb)
    lab = lb.labbuf[:T * mb]
    for k in range(mb_all):
        s = k * stream + window * T if window >= 0 else _below(rng, span)
        if lo <= k < hi:
            c = k - lo
            for i in range(T):
                X0[i, c] = corpus[s + i]
                lab[i * mb + c] = corpus[s + i + 1]
    return lab


@kernel
def _train_text_epoch(plan, fplan, b, opt, t, lb, corpus, n_steps, norms, run, stop, table):
    """``n_steps`` steps of a language model on windows of ``corpus`` (token ids, int),
    entirely compiled. Column ``k`` of ``A^(0) (T, mb)`` gets ``corpus[s : s + T]`` and the
    labels ``corpus[s + 1 : s + T + 1]`` (the next token at every position), then one
    :func:`_train_step` is taken. The offsets ``s``:

    * random (``run.shuffle_seed ≥ 0``): drawn uniformly for every column of every batch
      (loopprop's own generator seeded with ``run.shuffle_seed``);
    * consecutive (``run.shuffle_seed = −1``, truncated backpropagation through time): the
      corpus is cut into ``mb`` streams of ``L = (n − 1) // mb`` tokens, column ``k`` reads
      stream ``k``, and batch ``j`` its window ``w = (run.first_window + j) mod (L // T)``,
      ``s = k·L + w·T``; a window after the first carries the recurrent states over from the
      one before (``Step.carry``) while the gradient stops at the window's start.

    Returns as :func:`_train_epoch` (``correct`` counts positions; ``stop`` likewise ends it
    after the step in progress)."""
    T = plan[0, IN_SIZE]
    mb = run.batch_size
    rng = np.empty(1, np.uint64)
    rng[0] = np.uint64(max(run.shuffle_seed, 0))
    consecutive = run.shuffle_seed < 0
    Yb = _view(lb.Ybuf, 0, 0, mb)
    total = 0.0
    correct = 0
    lr = opt.hyper[LR]
    for step in range(n_steps):
        if stop[0] != 0:
            break
        w = _window_of(run.first_window, step, corpus.shape[0], mb, T)
        lab = _load_windows(b, lb, corpus, rng, w if consecutive else -1, T, mb, 0, mb)
        batch = _batch(mb, Yb, lab, False, run.dropout_seed * 1048576 + step, run.threads,
                       consecutive and w > 0, 0, mb)
        loss, right, lr = _train_step(plan, fplan, b, opt, t, lb, batch, norms, table)
        total += mb * loss
        correct += right
        t += 1
    return total, correct, t, lr


@kernel
def _evaluate(plan, fplan, b, lb, data, chunk, out, training, threads, table):
    """Forward-only pass over ``data.X (n_0, n)`` in chunks, in evaluation mode (dropout off,
    batch norm's running statistics) unless ``training`` (gradcheck's losses: the mode of
    backward): returns ``(Σ loss × chunk size, correct)``; fills ``out`` (n_L, n) with the
    output activations. Each chunk's targets are copied into ``lb.Ybuf``, so the loss kernels
    see the same contiguous arrays as in training and are compiled once."""
    X, Y = data.X, data.Y
    n = X.shape[1]
    L = plan.shape[0]
    n0 = X.shape[0]
    fused = _fused(lb.code)
    total = 0.0
    correct = 0
    for start in range(0, n, chunk):
        mb = min(chunk, n - start)
        _copy_columns(_view(b.acts, 0, n0, mb), X, start, threads)
        _forward_batch(plan, fplan, b, mb, L, training, int(0), runtime_flag(False), int(0), mb,
                       threads, table)
        Yb = _view(lb.Ybuf, 0, Y.shape[0], mb)
        for i in range(Y.shape[0]):
            for c in range(mb):
                Yb[i, c] = Y[i, start + c]
        lab = _gather_labels(lb.labbuf, data.labels, data.perm, start, mb)
        total += mb * _loss_seed(plan, b.acts, b.dacts, mb, lb.code, Yb, lab, data.one_hot,
                                 lb.col1, lb.col2)
        if fused:
            correct += _count_correct(_logits(plan, b.acts, mb), lb.code, Yb, lab,
                                      data.one_hot)
        AL = _output(plan, b.acts, mb)
        for i in range(AL.shape[0]):
            for c in range(mb):
                out[i, start + c] = AL[i, c]
    return total, correct


# ---------------------------------------------------------------------------------------------
# optimizer state and the progress bar
# ---------------------------------------------------------------------------------------------


@dataclass
class OptimizerState:
    """An optimizer's settings (the float vector ``hyper`` the compiled update reads), its step
    count and its per-parameter state vectors (flat, like theta): the velocity (momentum) or
    the two moments (Adam, AdamW)."""

    name: str
    n_params: int
    dtype: np.dtype
    lr: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    clip: float = 0.0  # 0: no clipping
    schedule: str = "constant"
    warmup: int = 0  # steps
    total: int = 1  # steps of the whole fit (the cosine's span)
    step_size: int = 1  # steps between decays of the step schedule
    gamma: float = 0.1
    t: int = 0
    opt1: np.ndarray = field(init=False)
    opt2: np.ndarray = field(init=False)
    hyper: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.opt1 = np.zeros(self.n_params if self.name != "sgd" else 0, self.dtype)
        self.opt2 = np.zeros(self.n_params if self.name in ("adam", "adamw") else 0, self.dtype)
        hyper = np.zeros(11, np.float64)
        for i, value in ((LR, self.lr), (BETA1, self.beta1), (BETA2, self.beta2), (EPS, self.eps),
                         (WEIGHT_DECAY, self.weight_decay), (CLIP, self.clip),
                         (SCHEDULE, SCHEDULES[self.schedule]), (WARMUP, self.warmup),
                         (TOTAL, self.total), (STEP_SIZE, self.step_size), (GAMMA, self.gamma)):
            hyper[i] = value  # (a fancy-indexed assignment took 5 µs of every fit)
        self.hyper = hyper

    def bundle(self, decay_spans: np.ndarray) -> Optim:
        """The compiled update's view of this optimizer, with the ``[start, end)`` ranges
        ``decay_spans`` (``(k, 2)`` int64) where weight decay applies
        (:class:`~loopprop.bundles.Optim`; the arrays are shared, not copied)."""
        return Optim(OPTIMIZERS[self.name], self.hyper, self.opt1, self.opt2, decay_spans)
