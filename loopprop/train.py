"""The compiled training loop: a whole epoch -- shuffle, minibatches, forward, loss, backward,
update -- in one call to compiled code, with no Python per batch (docs/formulas.md §5, §10, §12).

The epoch knows no layer kind. It walks the *plan* (:mod:`loopprop.plan`), one row per layer,
and hands each row to the one dispatch, :func:`_forward_row` / :func:`_backward_row`, which
picks the layer's pair of row functions (``_fw_<kind>``, ``_bw_<kind>``: the views its kernels
take, built from the row's offsets, and the kernel calls) by its kind code. The dispatch is
compiled for the set of kinds the plan holds (:func:`kinds_key`, a tuple whose *type* says
which kinds are present): the kinds a network does not use are never compiled (a
dense network's first epoch compiled every kind's kernels before: 346 s). Adding a layer kind
adds its two row functions, their entries in ``_FORWARD_KINDS`` / ``_BACKWARD_KINDS`` and one
branch in each compiled dispatch, and nothing to the epoch. Everything lives in flat buffers
(``theta`` and ``grad`` for the parameters, the batch buffers of
:class:`loopprop.plan.Buffers`), so compiled code walks any stack of layers without Python
objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import types
from numba.extending import overload

from ._jit import kernel, runtime_flag
from .kernels.activations import (_activation_backward_threads, _activation_backward_tuned,
                                  _activation_forward_threads, _activation_forward_tuned)
from .kernels.attention import (_attention_backward_tuned, _attention_forward_tuned,
                                _embedding_backward_tuned, _embedding_forward_tuned,
                                _position_backward, _position_forward)
from .kernels.gemm import _gemm
from .kernels.conv import _conv2d_backward_tuned, _conv2d_forward_tuned
from .kernels.dense import _dense_layer_backward, _dense_layer_forward
from .kernels.dropout import _dropout_backward, _dropout_forward
from .kernels.norm import (_batchnorm_backward, _batchnorm_backward_eval, _batchnorm_forward,
                           _batchnorm_forward_eval, _batchnorm_update_running,
                           _layernorm_backward, _layernorm_forward)
from .kernels.residual import _residual_backward, _residual_forward
from .kernels.losses import (_mse, _sigmoid_binary_cross_entropy, _softmax_cross_entropy,
                             _softmax_cross_entropy_labels_tuned)
from .kernels.optim import (SCHEDULES, _adam_threads, _adamw_threads, _add_weight_decay,
                            _clip_grad_norm_threads, _momentum, _scheduled_lr, _sgd)
from .kernels.pool import (_avgpool2d_backward, _avgpool2d_forward, _maxpool2d_backward,
                           _maxpool2d_forward)
from .kernels.rng import _below, _shuffle
from .kernels.views import borrowed_flat, borrowed_image, borrowed_matrix
from .plan import (ACTIVATION, ATTENTION, AVGPOOL2D, BATCHNORM, C_OFF, CONV2D, DENSE, DROPOUT,
                   EMBEDDING, H0, IC_OFF, IN2_OFF, IN_OFF, IN_SIZE, KIND, LAYERNORM, MAXPOOL2D,
                   OUT_OFF, OUT_SIZE, P_OFF, POS_EMBEDDING, RESIDUAL, S_OFF, TIED_OUTPUT,
                   WF_OFF, WK_OFF)

MSE, CROSS_ENTROPY, BINARY_CROSS_ENTROPY = 0, 1, 2
LOSS_CODES = {"mse": MSE, "cross_entropy": CROSS_ENTROPY,
              "binary_cross_entropy": BINARY_CROSS_ENTROPY}
SGD, MOMENTUM, ADAM, ADAMW = 0, 1, 2, 3
OPTIMIZERS = {"sgd": SGD, "momentum": MOMENTUM, "adam": ADAM, "adamw": ADAMW}
#: the optimizer's settings, one float vector ``hyper`` (built by :class:`OptimizerState`)
(LR, BETA1, BETA2, EPS, WEIGHT_DECAY, CLIP, SCHEDULE, WARMUP, TOTAL, STEP_SIZE,
 GAMMA) = range(11)


# ---------------------------------------------------------------------------------------------
# views into the flat buffers
# ---------------------------------------------------------------------------------------------


@kernel
def _view(buf, off, rows, cols):
    """``buf[off : off + rows·cols]`` seen as a C-ordered ``(rows, cols)`` matrix (no copy, and
    no reference count to update: :func:`~loopprop.kernels.views.borrowed_matrix`; every view
    lives inside one compiled call on buffers its caller holds)."""
    return borrowed_matrix(buf, off, rows, cols)


@kernel
def _vec(buf, off, n):
    """``buf[off : off + n]`` as a vector, without a reference."""
    return borrowed_flat(borrowed_matrix(buf, off, 1, n))


@kernel
def _img(buf, off, c, h, w, m):
    """``buf[off : off + c·h·w·m]`` as an image batch ``(c, h, w, m)``, without a reference."""
    return borrowed_image(buf, off, c, h, w, m)


# ---------------------------------------------------------------------------------------------
# the one dispatch: a plan row -> its kernel pair
# ---------------------------------------------------------------------------------------------


# one pair of row functions per layer kind: what the two dispatches below call


@kernel
def _fw_dense(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, training, seed,
              threads):
    """Forward through a ``Dense`` row (:func:`_forward_row`)."""
    x_off = plan[r, IN_OFF] * mb
    y_off = plan[r, OUT_OFF] * mb
    p = plan[r, P_OFF]
    h = plan[r, H0:]
    n_in, n_out, N = h[0], h[1], h[2] * mb  # N columns: every position of every example
    _dense_layer_forward(_view(acts, y_off, n_out, N), _view(theta, p, n_out, n_in),
                         _vec(theta, p + n_out * n_in, n_out), _view(acts, x_off, n_in, N),
                         _view(cache, plan[r, C_OFF] * mb, N, n_in), threads)


@kernel
def _fw_activation(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, training,
                   seed, threads):
    """Forward through an ``Activation`` row (:func:`_forward_row`)."""
    x_off = plan[r, IN_OFF] * mb
    y_off = plan[r, OUT_OFF] * mb
    h = plan[r, H0:]
    n, N = h[1], plan[r, IN_SIZE] // h[1] * mb  # features × (positions · examples)
    _activation_forward_threads(_view(acts, y_off, n, N), _view(acts, x_off, n, N), h[0],
                                fplan[r, 0], threads)


@kernel
def _fw_conv2d(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, training, seed,
               threads):
    """Forward through a ``Conv2d`` row (:func:`_forward_row`)."""
    x_off = plan[r, IN_OFF] * mb
    y_off = plan[r, OUT_OFF] * mb
    p = plan[r, P_OFF]
    h = plan[r, H0:]
    c_in, H, W, c_out, kh, kw = h[0], h[1], h[2], h[3], h[4], h[5]
    s_h, s_w, pad_h, pad_w, H_out, W_out = h[6], h[7], h[8], h[9], h[10], h[11]
    K = c_in * kh * kw
    N = H_out * W_out * mb
    wk = plan[r, WK_OFF] * mb
    _conv2d_forward_tuned(_view(acts, y_off, c_out, N), _view(theta, p, c_out, K),
                          _vec(theta, p + c_out * K, c_out), _img(acts, x_off, c_in, H, W, mb),
                          _view(work, wk, N, K), _view(work, wk + N * K, N, c_out),
                          _view(fwork, plan[r, WF_OFF], K, c_out), kh, kw, s_h, s_w, pad_h,
                          pad_w, H_out, W_out, threads)


@kernel
def _fw_pool2d(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, training, seed,
               threads):
    """Forward through a ``MaxPool2d`` or ``AvgPool2d`` row (:func:`_forward_row`)."""
    kind = plan[r, KIND]
    x_off = plan[r, IN_OFF] * mb
    y_off = plan[r, OUT_OFF] * mb
    h = plan[r, H0:]
    C, H, W, kh, kw, s_h, s_w, H_out, W_out = h[0], h[1], h[2], h[3], h[4], h[5], h[6], \
        h[7], h[8]
    out = _img(acts, y_off, C, H_out, W_out, mb)
    if kind == MAXPOOL2D:
        _maxpool2d_forward(out, _img(icache, plan[r, IC_OFF] * mb, C, H_out, W_out, mb),
                           _img(acts, x_off, C, H, W, mb), kh, kw, s_h, s_w)
    else:
        _avgpool2d_forward(out, _img(acts, x_off, C, H, W, mb), kh, kw, s_h, s_w)


@kernel
def _fw_dropout(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, training, seed,
                threads):
    """Forward through a ``Dropout`` row (:func:`_forward_row`)."""
    x_off = plan[r, IN_OFF] * mb
    y_off = plan[r, OUT_OFF] * mb
    n = plan[r, IN_SIZE]
    out = _view(acts, y_off, n, mb)
    inp = _view(acts, x_off, n, mb)
    if training:
        _dropout_forward(out, _view(cache, plan[r, C_OFF] * mb, n, mb), inp, fplan[r, 0],
                         seed)
    else:
        _activation_forward_tuned(out, inp, 0, 0.0)  # identity: a copy


@kernel
def _fw_batchnorm(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, training,
                  seed, threads):
    """Forward through a ``BatchNorm`` row (:func:`_forward_row`)."""
    x_off = plan[r, IN_OFF] * mb
    y_off = plan[r, OUT_OFF] * mb
    p = plan[r, P_OFF]
    h = plan[r, H0:]
    C, N = h[0], h[1] * mb  # each channel over N values: a row of (C, N)
    eps, momentum = fplan[r, 0], fplan[r, 1]
    wf, s = plan[r, WF_OFF], plan[r, S_OFF]
    out = _view(acts, y_off, C, N)
    inp = _view(acts, x_off, C, N)
    gamma, beta = _vec(theta, p, C), _vec(theta, p + C, C)
    if training:
        mean, rstd = _vec(fwork, wf, C), _vec(fwork, wf + C, C)
        _batchnorm_forward(out, mean, rstd, inp, gamma, beta, eps, threads)
        _batchnorm_update_running(_vec(state, s, C), _vec(state, s + C, C), mean, rstd, eps,
                                  momentum, N)
    else:
        _batchnorm_forward_eval(out, inp, gamma, beta, _vec(state, s, C),
                                _vec(state, s + C, C), eps)


@kernel
def _fw_layernorm(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, training,
                  seed, threads):
    """Forward through a ``LayerNorm`` row (:func:`_forward_row`)."""
    x_off = plan[r, IN_OFF] * mb
    y_off = plan[r, OUT_OFF] * mb
    p = plan[r, P_OFF]
    h = plan[r, H0:]
    n, M = h[0], h[1] * mb  # each column of (n, M) over its n features
    c = plan[r, C_OFF] * mb
    _layernorm_forward(_view(acts, y_off, n, M), _vec(cache, c, M), _vec(cache, c + M, M),
                       _view(acts, x_off, n, M), _vec(theta, p, n), _vec(theta, p + n, n),
                       fplan[r, 0], threads)


@kernel
def _fw_residual(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, training, seed,
                 threads):
    """Forward through a ``Residual`` row (:func:`_forward_row`)."""
    x_off = plan[r, IN_OFF] * mb
    y_off = plan[r, OUT_OFF] * mb
    n = plan[r, IN_SIZE]
    _residual_forward(_view(acts, y_off, n, mb), _view(acts, x_off, n, mb),
                      _view(acts, plan[r, IN2_OFF] * mb, n, mb))


@kernel
def _fw_embedding(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, training,
                  seed, threads):
    """Forward through an ``Embedding`` row (:func:`_forward_row`)."""
    x_off = plan[r, IN_OFF] * mb
    y_off = plan[r, OUT_OFF] * mb
    p = plan[r, P_OFF]
    h = plan[r, H0:]
    V, d, N = h[0], h[1], h[2] * mb  # the ids are the input, (T, mb) as floats
    _embedding_forward_tuned(_view(acts, y_off, d, N), _view(theta, p, d, V),
                             _vec(acts, x_off, N))


@kernel
def _fw_position(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, training, seed,
                 threads):
    """Forward through a ``PositionEmbedding`` row (:func:`_forward_row`)."""
    x_off = plan[r, IN_OFF] * mb
    y_off = plan[r, OUT_OFF] * mb
    p = plan[r, P_OFF]
    h = plan[r, H0:]
    d, T = h[0], h[1]
    _position_forward(_view(acts, y_off, d * T, mb), _view(acts, x_off, d * T, mb),
                      _view(theta, p, d, h[2]), T)


@kernel
def _fw_attention(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, training,
                  seed, threads):
    """Forward through a ``CausalSelfAttention`` row (:func:`_forward_row`)."""

    _attention_forward_row(r, plan, theta, acts, cache, mb, threads)


@kernel
def _fw_tied_output(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, training,
                    seed, threads):
    """Forward through a ``TiedOutput`` row (:func:`_forward_row`)."""
    x_off = plan[r, IN_OFF] * mb
    y_off = plan[r, OUT_OFF] * mb
    p = plan[r, P_OFF]
    h = plan[r, H0:]
    d, V, N = h[0], h[1], h[2] * mb
    out = _view(acts, y_off, V, N)
    _zero(_vec(acts, y_off, V * N))
    _gemm(out, _view(theta, p, d, V), _view(acts, x_off, d, N), runtime_flag(True),
          runtime_flag(False), threads)




@kernel
def _fw_none(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, training, seed,
             threads):
    """A kind the plan does not hold: never called (see :func:`_forward_row`)."""
    return


@kernel
def _bw_dense(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork, mb,
              need_dx, fresh, training, threads):
    """Backward through a ``Dense`` row (:func:`_backward_row`)."""
    x_off = plan[r, IN_OFF] * mb
    y_off = plan[r, OUT_OFF] * mb
    p = plan[r, P_OFF]
    h = plan[r, H0:]
    n_in, n_out, N = h[0], h[1], h[2] * mb
    _dense_layer_backward(_view(grad, p, n_out, n_in), _vec(grad, p + n_out * n_in, n_out),
                          _view(dacts, x_off, n_in, N), _view(dacts, y_off, n_out, N),
                          _view(theta, p, n_out, n_in), _view(acts, x_off, n_in, N),
                          _view(cache, plan[r, C_OFF] * mb, N, n_in),
                          _view(fwork, plan[r, WF_OFF], n_in, n_out),
                          _view(work, plan[r, WK_OFF] * mb, N, n_out), need_dx, threads)


@kernel
def _bw_activation(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork, mb,
                   need_dx, fresh, training, threads):
    """Backward through an ``Activation`` row (:func:`_backward_row`)."""
    x_off = plan[r, IN_OFF] * mb
    y_off = plan[r, OUT_OFF] * mb
    h = plan[r, H0:]
    if need_dx:
        n, N = h[1], plan[r, IN_SIZE] // h[1] * mb
        _activation_backward_threads(_view(dacts, x_off, n, N), _view(dacts, y_off, n, N),
                                     _view(acts, x_off, n, N), _view(acts, y_off, n, N),
                                     h[0], fplan[r, 0], not fresh, threads)


@kernel
def _bw_conv2d(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork, mb,
               need_dx, fresh, training, threads):
    """Backward through a ``Conv2d`` row (:func:`_backward_row`)."""
    x_off = plan[r, IN_OFF] * mb
    y_off = plan[r, OUT_OFF] * mb
    p = plan[r, P_OFF]
    h = plan[r, H0:]
    c_in, H, W, c_out, kh, kw = h[0], h[1], h[2], h[3], h[4], h[5]
    s_h, s_w, pad_h, pad_w, H_out, W_out = h[6], h[7], h[8], h[9], h[10], h[11]
    K = c_in * kh * kw
    N = H_out * W_out * mb
    wk = plan[r, WK_OFF] * mb
    _conv2d_backward_tuned(_view(grad, p, c_out, K), _vec(grad, p + c_out * K, c_out),
                           _img(dacts, x_off, c_in, H, W, mb), _view(dacts, y_off, c_out, N),
                           _view(theta, p, c_out, K), _img(acts, x_off, c_in, H, W, mb),
                           _view(work, wk, N, K),
                           _view(work, wk + N * K, N, c_out),
                           _view(fwork, plan[r, WF_OFF] + K * c_out, 16 * K, c_out), kh, kw,
                           s_h, s_w, pad_h, pad_w, H_out, W_out, need_dx, threads)


@kernel
def _bw_pool2d(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork, mb,
               need_dx, fresh, training, threads):
    """Backward through a ``MaxPool2d`` or ``AvgPool2d`` row (:func:`_backward_row`)."""
    kind = plan[r, KIND]
    x_off = plan[r, IN_OFF] * mb
    y_off = plan[r, OUT_OFF] * mb
    h = plan[r, H0:]
    if need_dx:
        C, H, W, kh, kw, s_h, s_w, H_out, W_out = h[0], h[1], h[2], h[3], h[4], h[5], h[6], \
            h[7], h[8]
        dx = _img(dacts, x_off, C, H, W, mb)
        dy = _img(dacts, y_off, C, H_out, W_out, mb)
        if kind == MAXPOOL2D:
            _maxpool2d_backward(dx, dy, _img(icache, plan[r, IC_OFF] * mb, C, H_out, W_out,
                                             mb), kh, kw, s_h, s_w)
        else:
            _avgpool2d_backward(dx, dy, kh, kw, s_h, s_w)


@kernel
def _bw_dropout(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork, mb,
                need_dx, fresh, training, threads):
    """Backward through a ``Dropout`` row (:func:`_backward_row`)."""
    x_off = plan[r, IN_OFF] * mb
    y_off = plan[r, OUT_OFF] * mb
    if need_dx:
        n = plan[r, IN_SIZE]
        if training:
            _dropout_backward(_view(dacts, x_off, n, mb), _view(dacts, y_off, n, mb),
                              _view(cache, plan[r, C_OFF] * mb, n, mb))
        else:  # evaluation mode ran the identity: its gradient
            _activation_backward_tuned(_view(dacts, x_off, n, mb), _view(dacts, y_off, n, mb),
                                       _view(acts, x_off, n, mb), _view(acts, y_off, n, mb),
                                       0, 0.0, runtime_flag(True))


@kernel
def _bw_batchnorm(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork, mb,
                  need_dx, fresh, training, threads):
    """Backward through a ``BatchNorm`` row (:func:`_backward_row`)."""
    x_off = plan[r, IN_OFF] * mb
    y_off = plan[r, OUT_OFF] * mb
    p = plan[r, P_OFF]
    h = plan[r, H0:]
    C, N = h[0], h[1] * mb
    wf, s = plan[r, WF_OFF], plan[r, S_OFF]
    # the data's gradient is not needed for row 0, but dγ, dβ come from the same pass:
    # batch norm always writes dX (into the data's gradient region, which nothing reads)
    dx = _view(dacts, x_off, C, N)
    dy = _view(dacts, y_off, C, N)
    x = _view(acts, x_off, C, N)
    dgamma, dbeta = _vec(grad, p, C), _vec(grad, p + C, C)
    gamma = _vec(theta, p, C)
    if training:
        _batchnorm_backward(dx, dgamma, dbeta, dy, x, gamma, _vec(fwork, wf, C),
                            _vec(fwork, wf + C, C), runtime_flag(True), threads)
    else:
        _batchnorm_backward_eval(dx, dgamma, dbeta, dy, x, gamma, _vec(state, s, C),
                                 _vec(state, s + C, C), fplan[r, 0])


@kernel
def _bw_layernorm(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork, mb,
                  need_dx, fresh, training, threads):
    """Backward through a ``LayerNorm`` row (:func:`_backward_row`)."""
    x_off = plan[r, IN_OFF] * mb
    y_off = plan[r, OUT_OFF] * mb
    p = plan[r, P_OFF]
    h = plan[r, H0:]
    n, M = h[0], h[1] * mb
    c = plan[r, C_OFF] * mb
    _layernorm_backward(_view(dacts, x_off, n, M), _vec(grad, p, n), _vec(grad, p + n, n),
                        _view(dacts, y_off, n, M), _view(acts, x_off, n, M),
                        _vec(theta, p, n), _vec(cache, c, M), _vec(cache, c + M, M),
                        not fresh, threads)


@kernel
def _bw_residual(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork, mb,
                 need_dx, fresh, training, threads):
    """Backward through a ``Residual`` row (:func:`_backward_row`)."""
    x_off = plan[r, IN_OFF] * mb
    y_off = plan[r, OUT_OFF] * mb
    n = plan[r, IN_SIZE]
    _residual_backward(_view(dacts, x_off, n, mb), _view(dacts, plan[r, IN2_OFF] * mb, n, mb),
                       _view(dacts, y_off, n, mb))


@kernel
def _bw_embedding(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork, mb,
                  need_dx, fresh, training, threads):
    """Backward through an ``Embedding`` row (:func:`_backward_row`). The ids have no gradient."""
    x_off = plan[r, IN_OFF] * mb
    y_off = plan[r, OUT_OFF] * mb
    p = plan[r, P_OFF]
    h = plan[r, H0:]
    V, d, N = h[0], h[1], h[2] * mb
    _embedding_backward_tuned(_view(grad, p, d, V), _view(dacts, y_off, d, N),
                              _vec(acts, x_off, N), threads)


@kernel
def _bw_position(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork, mb,
                 need_dx, fresh, training, threads):
    """Backward through a ``PositionEmbedding`` row (:func:`_backward_row`)."""
    x_off = plan[r, IN_OFF] * mb
    y_off = plan[r, OUT_OFF] * mb
    p = plan[r, P_OFF]
    h = plan[r, H0:]
    d, T = h[0], h[1]
    _position_backward(_view(grad, p, d, h[2]),
                       _view(dacts, x_off, d * T, mb), _view(dacts, y_off, d * T, mb), T,
                       need_dx)


@kernel
def _bw_attention(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork, mb,
                  need_dx, fresh, training, threads):
    """Backward through a ``CausalSelfAttention`` row (:func:`_backward_row`)."""

    _attention_backward_row(r, plan, theta, grad, acts, dacts, cache, work, fwork, mb,
                            need_dx, threads)


@kernel
def _bw_tied_output(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork, mb,
                    need_dx, fresh, training, threads):
    """Backward through a ``TiedOutput`` row (:func:`_backward_row`)."""
    x_off = plan[r, IN_OFF] * mb
    y_off = plan[r, OUT_OFF] * mb
    p = plan[r, P_OFF]
    h = plan[r, H0:]
    d, V, N = h[0], h[1], h[2] * mb
    dz = _view(dacts, y_off, V, N)
    _gemm(_view(grad, p, d, V), _view(acts, x_off, d, N), dz, runtime_flag(False),
          runtime_flag(True), threads)
    if need_dx:
        _gemm(_view(dacts, x_off, d, N), _view(theta, p, d, V), dz, runtime_flag(False),
              runtime_flag(False), threads)




@kernel
def _bw_none(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork, mb,
             need_dx, fresh, training, threads):
    """A kind the plan does not hold: never called (see :func:`_backward_row`)."""
    return


#: (kinds, handler) for every layer kind that has work to do (FLATTEN has none)
_FORWARD_KINDS = (
    ((DENSE,), _fw_dense),
    ((ACTIVATION,), _fw_activation),
    ((CONV2D,), _fw_conv2d),
    ((MAXPOOL2D, AVGPOOL2D), _fw_pool2d),
    ((DROPOUT,), _fw_dropout),
    ((BATCHNORM,), _fw_batchnorm),
    ((LAYERNORM,), _fw_layernorm),
    ((RESIDUAL,), _fw_residual),
    ((EMBEDDING,), _fw_embedding),
    ((POS_EMBEDDING,), _fw_position),
    ((ATTENTION,), _fw_attention),
    ((TIED_OUTPUT,), _fw_tied_output),
)

_BACKWARD_KINDS = (
    ((DENSE,), _bw_dense),
    ((ACTIVATION,), _bw_activation),
    ((CONV2D,), _bw_conv2d),
    ((MAXPOOL2D, AVGPOOL2D), _bw_pool2d),
    ((DROPOUT,), _bw_dropout),
    ((BATCHNORM,), _bw_batchnorm),
    ((LAYERNORM,), _bw_layernorm),
    ((RESIDUAL,), _bw_residual),
    ((EMBEDDING,), _bw_embedding),
    ((POS_EMBEDDING,), _bw_position),
    ((ATTENTION,), _bw_attention),
    ((TIED_OUTPUT,), _bw_tied_output),
)


#: one entry per kind code (codes start at 1: entry 0 is always None)
_N_KINDS = max(max(ks) for ks, _ in _FORWARD_KINDS) + 1


def kinds_key(plan) -> tuple:
    """The layer kinds of ``plan`` as a tuple whose Numba *type* is the set: entry ``k`` is 1
    when kind ``k`` is present, ``None`` when it is not (``Tuple(none, int64, none, …)``). The
    compiled passes are built for that type (:func:`_forward_row`), so a network compiles only
    its own layers' kernels, and a call from Python finds its compiled version by the argument
    types, as for any other argument (an integer mask made literal with ``numba.literally``
    re-ran type inference up to the ``literally`` on every call from Python: 7 ms per call)."""
    present = {int(k) for k in plan[:, KIND]}
    return tuple(1 if k in present else None for k in range(_N_KINDS))


def _present(kinds) -> set:
    """The kind codes a :func:`kinds_key` type holds (compile time)."""
    return {k for k, t in enumerate(kinds.types) if not isinstance(t, types.NoneType)}


def _chosen(table, none, present):
    """The handlers of ``table`` in order, each replaced by ``none`` when none of its kinds is
    in the set ``present``."""
    return [h if set(ks) & present else none for ks, h in table]


@kernel
def _attention_forward_row(r, plan, theta, acts, cache, mb, threads):
    """A :class:`~loopprop.layers.CausalSelfAttention` row: ``QKV = W_qkv·X + b``, attention
    per head, ``Y = W_o·O + b_o`` (the cache layout is the layer's docstring's)."""
    C, T, n_head = plan[r, H0], plan[r, H0 + 1], plan[r, H0 + 2]
    N = T * mb
    p = plan[r, P_OFF]
    c = plan[r, C_OFF] * mb
    x_off = plan[r, IN_OFF] * mb
    y_off = plan[r, OUT_OFF] * mb
    qkv, probs, att = c + C * N, c + 4 * C * N, c + 4 * C * N + n_head * T * T * mb
    dh = C // n_head
    _dense_layer_forward(_view(cache, qkv, 3 * C, N), _view(theta, p, 3 * C, C),
                         _vec(theta, p + 3 * C * C, 3 * C), _view(acts, x_off, C, N),
                         _view(cache, c, N, C), threads)
    _attention_forward_tuned(_img(cache, att, n_head, dh, T, mb),
                             _img(cache, probs, n_head, T, T, mb),
                             _img(cache, qkv, n_head, dh, T, mb),
                             _img(cache, qkv + C * N, n_head, dh, T, mb),
                             _img(cache, qkv + 2 * C * N, n_head, dh, T, mb), runtime_flag(True),
                             threads)
    po = p + 3 * C * C + 3 * C
    _dense_layer_forward(_view(acts, y_off, C, N), _view(theta, po, C, C),
                         _vec(theta, po + C * C, C), _view(cache, att, C, N),
                         _view(cache, att + C * N, N, C), threads)


def _forward_row(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, training, seed,
                 threads, kinds):
    """Forward through layer ``r`` of the plan: read its input from ``acts``, write its output
    there, fill its caches (§5, §14). ``training`` switches dropout on and batch norm to
    the batch's statistics (and updates the running ones in ``state``); ``seed`` seeds
    dropout's mask.

    ``kinds`` (:func:`kinds_key` of the plan) says by its type which kinds the plan holds: the
    dispatch compiled for it calls only those, and the others' kernels are never
    compiled (a dense network's first epoch compiled every kind's: 346 s; this function is the
    pure-Python twin, run with the JIT off).
    """
    for ks, handler in _FORWARD_KINDS:
        if plan[r, KIND] in ks:
            handler(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb,
                    training, seed, threads)


@overload(_forward_row)
def _forward_row_compiled(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb,
                          training, seed, threads, kinds):
    """The compiled :func:`_forward_row` for the kinds of ``kinds``'s type."""
    if not isinstance(kinds, types.BaseTuple):
        return None
    (dense, activation, conv2d, pool2d, dropout, batchnorm, layernorm, residual, embedding,
     position, attention, tied_output) = _chosen(
        _FORWARD_KINDS, _fw_none, _present(kinds))

    def impl(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, training, seed,
             threads, kinds):
        kind = plan[r, KIND]
        if kind == DENSE:
            dense(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, training,
                  seed, threads)
        elif kind == ACTIVATION:
            activation(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, training,
                       seed, threads)
        elif kind == CONV2D:
            conv2d(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, training,
                   seed, threads)
        elif kind == MAXPOOL2D or kind == AVGPOOL2D:
            pool2d(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, training,
                   seed, threads)
        elif kind == DROPOUT:
            dropout(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, training,
                    seed, threads)
        elif kind == BATCHNORM:
            batchnorm(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, training,
                      seed, threads)
        elif kind == LAYERNORM:
            layernorm(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, training,
                      seed, threads)
        elif kind == RESIDUAL:
            residual(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, training,
                     seed, threads)
        elif kind == EMBEDDING:
            embedding(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, training,
                      seed, threads)
        elif kind == POS_EMBEDDING:
            position(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, training,
                     seed, threads)
        elif kind == ATTENTION:
            attention(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, training,
                      seed, threads)
        elif kind == TIED_OUTPUT:
            tied_output(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb,
                        training, seed, threads)
        # FLATTEN: its output is its input (plan.py gives both one offset): nothing to do

    return impl


def _backward_row(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork, mb,
                  need_dx, fresh, training, threads, kinds):
    """Backward through layer ``r``: from the gradient of its output (in ``dacts``) add its
    parameter gradients into ``grad`` and, with ``need_dx``, the gradient of its input into
    ``dacts`` (§5). Each kernel *adds* (the README's "Conventions"). ``training`` must
    be the mode of the forward pass (dropout's mask, batch norm's statistics).

    ``fresh``: no row has written the input's gradient region yet in this pass (it holds the
    last batch's values). The activation and layer-norm kernels then *write* it (their ``acc``
    switch off: the same values as adding to zeros); for every other kind the region is zeroed
    first.

    ``kinds``: as :func:`_forward_row` (this function is the pure-Python twin).
    """
    kind = plan[r, KIND]
    if fresh and kind != ACTIVATION and kind != LAYERNORM:
        _zero(_vec(dacts, plan[r, IN_OFF] * mb, plan[r, IN_SIZE] * mb))
    for ks, handler in _BACKWARD_KINDS:
        if kind in ks:
            handler(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work,
                    fwork, mb, need_dx, fresh, training, threads)


@overload(_backward_row)
def _backward_row_compiled(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work,
                           fwork, mb, need_dx, fresh, training, threads, kinds):
    """The compiled :func:`_backward_row` for the kinds of ``kinds``'s type."""
    if not isinstance(kinds, types.BaseTuple):
        return None
    (dense, activation, conv2d, pool2d, dropout, batchnorm, layernorm, residual, embedding,
     position, attention, tied_output) = _chosen(
        _BACKWARD_KINDS, _bw_none, _present(kinds))

    def impl(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork, mb,
             need_dx, fresh, training, threads, kinds):
        kind = plan[r, KIND]
        if fresh and kind != ACTIVATION and kind != LAYERNORM:
            _zero(_vec(dacts, plan[r, IN_OFF] * mb, plan[r, IN_SIZE] * mb))
        if kind == DENSE:
            dense(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork, mb,
                  need_dx, fresh, training, threads)
        elif kind == ACTIVATION:
            activation(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork,
                       mb, need_dx, fresh, training, threads)
        elif kind == CONV2D:
            conv2d(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork, mb,
                   need_dx, fresh, training, threads)
        elif kind == MAXPOOL2D or kind == AVGPOOL2D:
            pool2d(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork, mb,
                   need_dx, fresh, training, threads)
        elif kind == DROPOUT:
            dropout(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork, mb,
                    need_dx, fresh, training, threads)
        elif kind == BATCHNORM:
            batchnorm(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork,
                      mb, need_dx, fresh, training, threads)
        elif kind == LAYERNORM:
            layernorm(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork,
                      mb, need_dx, fresh, training, threads)
        elif kind == RESIDUAL:
            residual(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork,
                     mb, need_dx, fresh, training, threads)
        elif kind == EMBEDDING:
            embedding(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork,
                      mb, need_dx, fresh, training, threads)
        elif kind == POS_EMBEDDING:
            position(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork,
                     mb, need_dx, fresh, training, threads)
        elif kind == ATTENTION:
            attention(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork,
                      mb, need_dx, fresh, training, threads)
        elif kind == TIED_OUTPUT:
            tied_output(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork,
                        mb, need_dx, fresh, training, threads)
        # FLATTEN: its output's gradient is its input's (one region): nothing to do

    return impl

@kernel
def _attention_backward_row(r, plan, theta, grad, acts, dacts, cache, work, fwork, mb, need_dx,
                            threads):
    """Backward through a :class:`~loopprop.layers.CausalSelfAttention` row: the output
    projection, attention per head, the QKV projection (each adds into its gradients)."""
    C, T, n_head = plan[r, H0], plan[r, H0 + 1], plan[r, H0 + 2]
    N = T * mb
    p = plan[r, P_OFF]
    c = plan[r, C_OFF] * mb
    w = plan[r, WK_OFF] * mb
    wf = plan[r, WF_OFF]
    x_off = plan[r, IN_OFF] * mb
    y_off = plan[r, OUT_OFF] * mb
    qkv, probs, att = c + C * N, c + 4 * C * N, c + 4 * C * N + n_head * T * T * mb
    dh = C // n_head
    datt, dqkv = w + 4 * C * N, w + 5 * C * N
    po = p + 3 * C * C + 3 * C
    _zero(_vec(work, datt, C * N))  # dO: the output projection's backward adds into it
    _dense_layer_backward(_view(grad, po, C, C), _vec(grad, po + C * C, C),
                          _view(work, datt, C, N), _view(dacts, y_off, C, N),
                          _view(theta, po, C, C), _view(cache, att, C, N),
                          _view(cache, att + C * N, N, C), _view(fwork, wf + 3 * C * C, C, C),
                          _view(work, w + 3 * C * N, N, C), runtime_flag(True), threads)
    _attention_backward_tuned(_img(work, dqkv, n_head, dh, T, mb),
                              _img(work, dqkv + C * N, n_head, dh, T, mb),
                              _img(work, dqkv + 2 * C * N, n_head, dh, T, mb),
                              _img(work, datt, n_head, dh, T, mb),
                              _img(cache, qkv, n_head, dh, T, mb),
                              _img(cache, qkv + C * N, n_head, dh, T, mb),
                              _img(cache, qkv + 2 * C * N, n_head, dh, T, mb),
                              _img(cache, probs, n_head, T, T, mb), runtime_flag(True),
                              runtime_flag(False), threads)  # dQKV written
    _dense_layer_backward(_view(grad, p, 3 * C, C), _vec(grad, p + 3 * C * C, 3 * C),
                          _view(dacts, x_off, C, N), _view(work, dqkv, 3 * C, N),
                          _view(theta, p, 3 * C, C), _view(acts, x_off, C, N),
                          _view(cache, c, N, C), _view(fwork, wf, C, 3 * C),
                          _view(work, w, N, 3 * C), need_dx, threads)


# ---------------------------------------------------------------------------------------------
# compiled pieces of one step
# ---------------------------------------------------------------------------------------------


@kernel
def _forward_batch(plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, n_rows,
                   training, seed, threads, kinds):
    """Forward through rows ``0 … n_rows − 1`` (§5); ``A^(0)`` must already be at the
    start of ``acts``. A fused loss (softmax or sigmoid + cross-entropy) stops one row short:
    it starts from the last layer's input and never reads its output. ``kinds``:
    :func:`kinds_key` of the plan (:func:`_forward_row`)."""
    for r in range(n_rows):
        _forward_row(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, mb,
                     training, seed * 64 + r, threads, kinds)


@kernel
def _backward_batch(plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork,
                    mb, last, training, threads, kinds):
    """Backward from row ``last`` down to row 0 (docs/formulas.md §5): the seed must already be in
    ``dacts`` (the gradient of row ``last``'s output). Row 0's input is the data: its gradient
    is not computed.

    The kernels *add* into their inputs' gradients; each region of ``dacts`` is zeroed just
    before the first row (in this order) that adds into it (:func:`_first_to_add`), where it is
    still in cache when the row adds, or written by that row when its kernel can write
    (:func:`_backward_row`'s ``fresh``), instead of the whole buffer zeroed before the pass
    (1.3 ms of a 50 ms step of the small GPT, one thread over 32 MB). ``kinds``: as
    :func:`_forward_batch`."""
    for r in range(last, -1, -1):
        if plan[r, IN2_OFF] >= 0 and _first_to_add(plan, r, plan[r, IN2_OFF], last):
            # a second input (a residual's skip): the first's size
            _zero(_vec(dacts, plan[r, IN2_OFF] * mb, plan[r, IN_SIZE] * mb))
        _backward_row(r, plan, fplan, theta, grad, state, acts, dacts, cache, icache, work,
                      fwork, mb, r > 0, _first_to_add(plan, r, plan[r, IN_OFF], last), training,
                      threads, kinds)


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


@kernel
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
    n = plan[r, H0 + 1]  # the classes: the first axis of the output
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
    n = plan[r, H0 + 1]
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


@kernel
def _update(theta, grad, opt1, opt2, decay, opt_code, hyper, t, threads):
    """Optimizer step number ``t + 1`` on the flat parameter vector (§10), in PyTorch's
    order: clip the gradient's global norm, take the step's rate from the schedule, add L2
    weight decay to the gradient (SGD, momentum, Adam) or decay the weights (AdamW), update.
    ``decay[p]`` is 1 where weight decay applies. Returns the rate used."""
    if hyper[CLIP] > 0:
        _clip_grad_norm_threads(grad, hyper[CLIP], threads)
    lr = _scheduled_lr(int(hyper[SCHEDULE]), hyper[LR], t, int(hyper[WARMUP]), int(hyper[TOTAL]),
                       int(hyper[STEP_SIZE]), hyper[GAMMA])
    wd = hyper[WEIGHT_DECAY]
    if opt_code == ADAMW:
        _adamw_threads(theta, grad, opt1, opt2, decay, lr, hyper[BETA1], hyper[BETA2],
                       hyper[EPS], t + 1, wd, threads)
        return lr
    if wd > 0:
        _add_weight_decay(grad, theta, decay, wd)
    if opt_code == SGD:
        _sgd(theta, grad, lr)
    elif opt_code == MOMENTUM:
        _momentum(theta, grad, opt1, lr, hyper[BETA1])
    else:
        _adam_threads(theta, grad, opt1, opt2, lr, hyper[BETA1], hyper[BETA2], hyper[EPS],
                      t + 1, threads)
    return lr


@kernel(fast=True)
def _sum_squares(v, start, count):
    """``Σ v[p]²`` over ``start ≤ p < start + count`` (a layer's dW, for ‖dW‖), vectorized."""
    s = 0.0
    for p in range(start, start + count):
        s += v[p] * v[p]
    return s


@kernel
def _zero(v):
    """``v[p] = 0`` for every p (a flat buffer)."""
    for p in range(v.shape[0]):
        v[p] = 0.0


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
def _gather(dst, src, perm, start):
    """``dst[j, c] = src[j, perm[start + c]]``: the batch's target columns, in shuffled order."""
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
def _train_step(plan, fplan, theta, grad, state, opt1, opt2, decay, opt_code, hyper, t,
                loss_code, Yb, lab, one_hot, mb, acts, dacts, cache, icache, work, fwork, col1,
                col2, norm_spans, grad_norm, seed, threads, kinds):
    """One optimizer step on the batch already in ``acts`` (``A^(0)``, ``mb`` examples) with
    its targets ``Yb`` / labels ``lab``: forward through the plan (§5–§6), loss and seed (§9),
    zero the gradients (§12), backward through the plan (§6), update (§10, with the
    schedule's rate for step ``t``). Returns ``(batch loss, correct predictions, rate)``;
    ``grad_norm[a]`` accumulates the norm ``‖∂L/∂θ_a‖`` of parameter array ``a``, the span
    ``grad[norm_spans[a, 0] : norm_spans[a, 0] + norm_spans[a, 1]]`` (before clipping)."""
    L = plan.shape[0]
    fused = _fused(loss_code)
    n_fwd = L - 1 if fused else L
    _forward_batch(plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, n_fwd,
                   runtime_flag(True), seed, threads, kinds)
    loss = _loss_seed(plan, acts, dacts, mb, loss_code, Yb, lab, one_hot, col1, col2)
    correct = 0
    if fused:
        correct = _count_correct(_logits(plan, acts, mb), loss_code, Yb, lab, one_hot)
    _zero(grad)
    _backward_batch(plan, fplan, theta, grad, state, acts, dacts, cache, icache, work, fwork,
                    mb, n_fwd - 1, runtime_flag(True), threads, kinds)
    for a in range(norm_spans.shape[0]):
        grad_norm[a] += math.sqrt(_sum_squares(grad, norm_spans[a, 0], norm_spans[a, 1]))
    lr = _update(theta, grad, opt1, opt2, decay, opt_code, hyper, t, threads)
    return loss, correct, lr


@kernel
def _train_epoch(plan, fplan, theta, grad, state, opt1, opt2, decay, opt_code, hyper, t,
                 loss_code, XT, Y, labels, one_hot, perm, shuffle_seed, batch_size, acts, dacts,
                 cache, icache, work, fwork, Ybuf, labbuf, col1, col2, norm_spans, grad_norm,
                 dropout_seed, stop, threads, kinds):
    """One epoch of minibatch training, entirely compiled, for the layer kinds ``kinds``
    (:func:`kinds_key`: the epoch is compiled for that set, with only those kernels).

    Per batch: gather the (shuffled) examples and take one :func:`_train_step`. The last,
    partial batch is used, not dropped. ``XT`` is X transposed, ``(n, n_0)``; ``t`` counts the
    optimizer steps taken before this epoch. Returns ``(Σ batch loss × batch size, correct
    predictions, step count, last rate)``; ``grad_norm[a]`` accumulates the norm of parameter
    array ``a``'s gradient for every batch (:func:`_train_step`). ``stop`` (one int64) set to
    non-zero by another thread ends the epoch after the step in progress (Ctrl-C: see
    ``loopprop/interrupt.py``).
    """
    n = XT.shape[0]
    n0 = XT.shape[1]
    if shuffle_seed >= 0:
        _shuffle(perm, shuffle_seed)  # Fisher–Yates on loopprop's own generator (kernels/rng.py)
    total = 0.0
    correct = 0
    batch = 0
    lr = hyper[LR]
    for start in range(0, n, batch_size):
        if stop[0] != 0:
            break
        mb = min(batch_size, n - start)
        _gather_columns(_view(acts, 0, n0, mb), XT, perm, start)
        Yb = _view(Ybuf, 0, Y.shape[0], mb)
        _gather(Yb, Y, perm, start)
        lab = _gather_labels(labbuf, labels, perm, start, mb)
        loss, right, lr = _train_step(plan, fplan, theta, grad, state, opt1, opt2, decay,
                                      opt_code, hyper, t, loss_code, Yb, lab, one_hot, mb, acts,
                                      dacts, cache, icache, work, fwork, col1, col2, norm_spans,
                                      grad_norm, dropout_seed * 1048576 + batch, threads,
                                      kinds)
        total += mb * loss
        correct += right
        t += 1
        batch += 1
    return total, correct, t, lr


@kernel
def _train_text_epoch(plan, fplan, theta, grad, state, opt1, opt2, decay, opt_code, hyper, t,
                      loss_code, corpus, n_steps, window_seed, batch_size, acts, dacts, cache,
                      icache, work, fwork, Ybuf, labbuf, col1, col2, norm_spans, grad_norm,
                      dropout_seed, stop, threads, kinds):
    """``n_steps`` steps of a language model on random windows of ``corpus`` (token ids, int),
    entirely compiled: each batch draws ``batch_size`` start offsets ``s`` uniformly (loopprop's
    own generator seeded with ``window_seed``), puts ``corpus[s : s + T]`` in column ``k`` of
    ``A^(0) (T, mb)`` and ``corpus[s + 1 : s + T + 1]`` in the labels (the next token at
    every position), then takes one :func:`_train_step`. Returns as :func:`_train_epoch`
    (``correct`` counts positions; ``stop`` likewise ends it after the step in progress)."""
    T = plan[0, IN_SIZE]
    mb = batch_size
    rng = np.empty(1, np.uint64)
    rng[0] = np.uint64(window_seed)
    span = corpus.shape[0] - T  # the last window's labels end at the corpus's last token
    X0 = _view(acts, 0, T, mb)
    Yb = _view(Ybuf, 0, 0, mb)
    lab = labbuf[:T * mb]
    total = 0.0
    correct = 0
    lr = hyper[LR]
    for step in range(n_steps):
        if stop[0] != 0:
            break
        for k in range(mb):
            s = _below(rng, span)
            for i in range(T):
                X0[i, k] = corpus[s + i]
                lab[i * mb + k] = corpus[s + i + 1]
        loss, right, lr = _train_step(plan, fplan, theta, grad, state, opt1, opt2, decay,
                                      opt_code, hyper, t, loss_code, Yb, lab,
                                      runtime_flag(False), mb, acts, dacts, cache, icache, work,
                                      fwork, col1, col2, norm_spans, grad_norm,
                                      dropout_seed * 1048576 + step, threads,
                                      kinds)
        total += mb * loss
        correct += right
        t += 1
    return total, correct, t, lr


@kernel
def _evaluate(plan, fplan, theta, state, loss_code, X, Y, labels, one_hot, chunk, acts, dacts,
              cache, icache, work, fwork, col1, col2, Ybuf, labbuf, perm, out, training,
              threads, kinds):
    """Forward-only pass over X in chunks, in evaluation mode (dropout off, batch norm's
    running statistics) unless ``training`` (gradcheck's losses: the mode of backward): returns
    ``(Σ loss × chunk size, correct)``; fills ``out`` (n_L, n) with the output activations.
    Each chunk's targets are copied into ``Ybuf``, so the loss kernels see the same contiguous
    arrays as in training and are compiled once."""
    n = X.shape[1]
    L = plan.shape[0]
    n0 = X.shape[0]
    fused = _fused(loss_code)
    total = 0.0
    correct = 0
    for start in range(0, n, chunk):
        mb = min(chunk, n - start)
        X0 = _view(acts, 0, n0, mb)
        for j in range(n0):
            for c in range(mb):
                X0[j, c] = X[j, start + c]
        _forward_batch(plan, fplan, theta, state, acts, cache, icache, work, fwork, mb, L,
                       training, int(0), threads, kinds)
        Yb = _view(Ybuf, 0, Y.shape[0], mb)
        for i in range(Y.shape[0]):
            for c in range(mb):
                Yb[i, c] = Y[i, start + c]
        lab = _gather_labels(labbuf, labels, perm, start, mb)
        total += mb * _loss_seed(plan, acts, dacts, mb, loss_code, Yb, lab, one_hot, col1, col2)
        if fused:
            correct += _count_correct(_logits(plan, acts, mb), loss_code, Yb, lab, one_hot)
        AL = _output(plan, acts, mb)
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
        hyper[[LR, BETA1, BETA2, EPS, WEIGHT_DECAY, CLIP, SCHEDULE, WARMUP, TOTAL, STEP_SIZE,
               GAMMA]] = [self.lr, self.beta1, self.beta2, self.eps, self.weight_decay,
                          self.clip, SCHEDULES[self.schedule], self.warmup, self.total,
                          self.step_size, self.gamma]
        self.hyper = hyper
