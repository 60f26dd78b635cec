"""The rows of ``BatchNorm`` and ``LayerNorm`` (docs/formulas.md, "Batch normalization",
"Layer normalization")."""

from __future__ import annotations

from .._jit import runtime_flag
from ..kernels.norm import (_batchnorm_backward, _batchnorm_backward_eval, _batchnorm_forward,
                            _batchnorm_forward_eval, _batchnorm_update_running,
                            _layernorm_backward, _layernorm_forward)
from ..layers.norm import BatchNorm, LayerNorm
from ..plan import IN_OFF, OUT_OFF, S_OFF
from .common import _vec, _view


BN_C, BN_PER, BN_GAMMA, BN_BETA, BN_MEAN, BN_RSTD = BatchNorm.columns(
    "channels", "per_example", "gamma", "beta", "mean", "rstd")
LN_N, LN_STEPS, LN_GAMMA, LN_BETA, LN_MEAN, LN_RSTD = LayerNorm.columns(
    "features", "steps", "gamma", "beta", "mean", "rstd")

def batchnorm_forward(r, plan, fplan, b, s):
    """``y = γ·(x − μ_c)/σ_c + β`` per channel ``c`` over its ``N`` values; training: the
    batch's ``μ``, ``1/σ`` (kept in ``fwork`` for backward) and the running statistics
    updated with momentum ``fplan[r, 1]``; evaluation: the running ones."""
    mb = s.mb
    C, N = plan[r, BN_C], plan[r, BN_PER] * mb  # each channel over N values: a row of (C, N)
    eps, momentum = fplan[r, 0], fplan[r, 1]
    st = plan[r, S_OFF]
    out = _view(b.acts, plan[r, OUT_OFF] * mb, C, N)
    inp = _view(b.acts, plan[r, IN_OFF] * mb, C, N)
    gamma, beta = _vec(b.theta, plan[r, BN_GAMMA], C), _vec(b.theta, plan[r, BN_BETA], C)
    if s.training:
        mean, rstd = _vec(b.fwork, plan[r, BN_MEAN], C), _vec(b.fwork, plan[r, BN_RSTD], C)
        _batchnorm_forward(out, mean, rstd, inp, gamma, beta, eps, s.threads)
        _batchnorm_update_running(_vec(b.state, st, C), _vec(b.state, st + C, C), mean, rstd,
                                  eps, momentum, N)
    else:
        _batchnorm_forward_eval(out, inp, gamma, beta, _vec(b.state, st, C),
                                _vec(b.state, st + C, C), eps)


def batchnorm_backward(r, plan, fplan, b, s):
    """``dγ += Σ dy·x̂``, ``dβ += Σ dy`` and ``dx += (γ/σ)(dy − mean(dy) − x̂·mean(dy·x̂))``
    (training; evaluation: ``dx += γ·dy/σ_running``)."""
    mb = s.mb
    x_off = plan[r, IN_OFF] * mb
    C, N = plan[r, BN_C], plan[r, BN_PER] * mb
    st = plan[r, S_OFF]
    # the data's gradient is not needed for row 0, but dγ, dβ come from the same pass:
    # batch norm always writes dX (into the data's gradient region, which nothing reads)
    dx = _view(b.dacts, x_off, C, N)
    dy = _view(b.dacts, plan[r, OUT_OFF] * mb, C, N)
    x = _view(b.acts, x_off, C, N)
    dgamma, dbeta = _vec(b.grad, plan[r, BN_GAMMA], C), _vec(b.grad, plan[r, BN_BETA], C)
    gamma = _vec(b.theta, plan[r, BN_GAMMA], C)
    if s.training:
        _batchnorm_backward(dx, dgamma, dbeta, dy, x, gamma, _vec(b.fwork, plan[r, BN_MEAN], C),
                            _vec(b.fwork, plan[r, BN_RSTD], C), runtime_flag(True), s.threads)
    else:
        _batchnorm_backward_eval(dx, dgamma, dbeta, dy, x, gamma, _vec(b.state, st, C),
                                 _vec(b.state, st + C, C), fplan[r, 0])


def layernorm_forward(r, plan, fplan, b, s):
    """``y = γ ⊙ (x − μ)/σ + β`` over the ``n`` features of each of the ``M`` columns; each
    column's ``μ`` and ``1/σ`` cached."""
    mb = s.mb
    n, M = plan[r, LN_N], plan[r, LN_STEPS] * mb  # each column of (n, M) over its n features
    _layernorm_forward(_view(b.acts, plan[r, OUT_OFF] * mb, n, M),
                       _vec(b.cache, plan[r, LN_MEAN] * mb, M),
                       _vec(b.cache, plan[r, LN_RSTD] * mb, M),
                       _view(b.acts, plan[r, IN_OFF] * mb, n, M),
                       _vec(b.theta, plan[r, LN_GAMMA], n), _vec(b.theta, plan[r, LN_BETA], n),
                       fplan[r, 0], s.threads)


def layernorm_backward(r, plan, fplan, b, s):
    """``dγ += Σ dy·x̂``, ``dβ += Σ dy``, ``dx (+)= (1/σ)(g − mean(g) − x̂·mean(g·x̂))`` with
    ``g = γ ⊙ dy``; *writes* ``dx`` when ``s.fresh`` (the plan's ``WRITES_DX``)."""
    mb = s.mb
    x_off = plan[r, IN_OFF] * mb
    n, M = plan[r, LN_N], plan[r, LN_STEPS] * mb
    _layernorm_backward(_view(b.dacts, x_off, n, M), _vec(b.grad, plan[r, LN_GAMMA], n),
                        _vec(b.grad, plan[r, LN_BETA], n),
                        _view(b.dacts, plan[r, OUT_OFF] * mb, n, M), _view(b.acts, x_off, n, M),
                        _vec(b.theta, plan[r, LN_GAMMA], n),
                        _vec(b.cache, plan[r, LN_MEAN] * mb, M),
                        _vec(b.cache, plan[r, LN_RSTD] * mb, M), not s.fresh, s.threads)
