"""The rows of ``BatchNorm`` and ``LayerNorm`` (docs/formulas.md, "Batch normalization",
"Layer normalization")."""

from __future__ import annotations

from .._jit import runtime_flag
from ..kernels.norm import (_batchnorm_backward, _batchnorm_backward_eval, _batchnorm_forward,
                            _batchnorm_forward_eval, _batchnorm_update_running,
                            _layernorm_backward, _layernorm_forward)
from ..plan import C_OFF, H0, IN_OFF, OUT_OFF, P_OFF, S_OFF, WF_OFF
from .common import _vec, _view


def batchnorm_forward(r, plan, fplan, b, s):
    """``y = γ·(x − μ_c)/σ_c + β`` per channel ``c`` over its ``N`` values; training: the
    batch's ``μ``, ``1/σ`` (kept in ``fwork`` for backward) and the running statistics
    updated with momentum ``fplan[r, 1]``; evaluation: the running ones."""
    mb = s.mb
    p = plan[r, P_OFF]
    h = plan[r, H0:]
    C, N = h[0], h[1] * mb  # each channel over N values: a row of (C, N)
    eps, momentum = fplan[r, 0], fplan[r, 1]
    wf, st = plan[r, WF_OFF], plan[r, S_OFF]
    out = _view(b.acts, plan[r, OUT_OFF] * mb, C, N)
    inp = _view(b.acts, plan[r, IN_OFF] * mb, C, N)
    gamma, beta = _vec(b.theta, p, C), _vec(b.theta, p + C, C)
    if s.training:
        mean, rstd = _vec(b.fwork, wf, C), _vec(b.fwork, wf + C, C)
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
    p = plan[r, P_OFF]
    h = plan[r, H0:]
    C, N = h[0], h[1] * mb
    wf, st = plan[r, WF_OFF], plan[r, S_OFF]
    # the data's gradient is not needed for row 0, but dγ, dβ come from the same pass:
    # batch norm always writes dX (into the data's gradient region, which nothing reads)
    dx = _view(b.dacts, x_off, C, N)
    dy = _view(b.dacts, plan[r, OUT_OFF] * mb, C, N)
    x = _view(b.acts, x_off, C, N)
    dgamma, dbeta = _vec(b.grad, p, C), _vec(b.grad, p + C, C)
    gamma = _vec(b.theta, p, C)
    if s.training:
        _batchnorm_backward(dx, dgamma, dbeta, dy, x, gamma, _vec(b.fwork, wf, C),
                            _vec(b.fwork, wf + C, C), runtime_flag(True), s.threads)
    else:
        _batchnorm_backward_eval(dx, dgamma, dbeta, dy, x, gamma, _vec(b.state, st, C),
                                 _vec(b.state, st + C, C), fplan[r, 0])


def layernorm_forward(r, plan, fplan, b, s):
    """``y = γ ⊙ (x − μ)/σ + β`` over the ``n`` features of each of the ``M`` columns; each
    column's ``μ`` and ``1/σ`` cached."""
    mb = s.mb
    p = plan[r, P_OFF]
    h = plan[r, H0:]
    n, M = h[0], h[1] * mb  # each column of (n, M) over its n features
    c = plan[r, C_OFF] * mb
    _layernorm_forward(_view(b.acts, plan[r, OUT_OFF] * mb, n, M), _vec(b.cache, c, M),
                       _vec(b.cache, c + M, M), _view(b.acts, plan[r, IN_OFF] * mb, n, M),
                       _vec(b.theta, p, n), _vec(b.theta, p + n, n), fplan[r, 0], s.threads)


def layernorm_backward(r, plan, fplan, b, s):
    """``dγ += Σ dy·x̂``, ``dβ += Σ dy``, ``dx (+)= (1/σ)(g − mean(g) − x̂·mean(g·x̂))`` with
    ``g = γ ⊙ dy``; *writes* ``dx`` when ``s.fresh`` (the plan's ``WRITES_DX``)."""
    mb = s.mb
    x_off = plan[r, IN_OFF] * mb
    p = plan[r, P_OFF]
    h = plan[r, H0:]
    n, M = h[0], h[1] * mb
    c = plan[r, C_OFF] * mb
    _layernorm_backward(_view(b.dacts, x_off, n, M), _vec(b.grad, p, n), _vec(b.grad, p + n, n),
                        _view(b.dacts, plan[r, OUT_OFF] * mb, n, M), _view(b.acts, x_off, n, M),
                        _vec(b.theta, p, n), _vec(b.cache, c, M), _vec(b.cache, c + M, M),
                        not s.fresh, s.threads)
