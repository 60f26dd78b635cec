"""The rows of ``Activation``, ``Dropout`` and a residual block's closing row (docs/formulas.md
§3–§4, "Dropout", "Residual connections"): one value in, one value out."""

from __future__ import annotations

from .._jit import runtime_flag
from ..kernels.activations import (_activation_backward_threads, _activation_backward_tuned,
                                   _activation_forward_threads, _activation_forward_tuned)
from ..kernels.dropout import _dropout_backward, _dropout_forward
from ..kernels.residual import _residual_backward, _residual_forward
from ..layers.core import Activation, Dropout
from ..plan import IN2_OFF, IN_OFF, IN_SIZE, OUT_OFF
from .common import _view

CODE, FEATURES = Activation.columns("code", "features")
MASK = Dropout.column("mask")


def activation_forward(r, plan, fplan, b, s):
    """``A[i, k] = g(Z[i, k])`` (``g``: the row's activation code; the leaky slope in
    ``fplan[r, 0]``); a softmax normalizes each column of its features."""
    mb = s.mb
    n = plan[r, FEATURES]
    N = plan[r, IN_SIZE] // n * mb  # features × (positions · examples)
    _activation_forward_threads(_view(b.acts, plan[r, OUT_OFF] * mb, n, N),
                                _view(b.acts, plan[r, IN_OFF] * mb, n, N), plan[r, CODE],
                                fplan[r, 0], s.threads)


def activation_backward(r, plan, fplan, b, s):
    """``dZ[i, k] (+)= dA[i, k]·g'(Z[i, k])`` (a softmax: the Jacobian-vector product of its
    column); *writes* ``dZ`` when ``s.fresh`` (the plan's ``WRITES_DX``)."""
    if r > 0:
        mb = s.mb
        x_off = plan[r, IN_OFF] * mb
        y_off = plan[r, OUT_OFF] * mb
        n = plan[r, FEATURES]
        N = plan[r, IN_SIZE] // n * mb
        _activation_backward_threads(_view(b.dacts, x_off, n, N), _view(b.dacts, y_off, n, N),
                                     _view(b.acts, x_off, n, N), _view(b.acts, y_off, n, N),
                                     plan[r, CODE], fplan[r, 0], not s.fresh, s.threads)


def dropout_forward(r, plan, fplan, b, s):
    """Training: ``A = Z ⊙ mask / (1 − p)`` with a fresh mask (``s.seed``) cached;
    evaluation: ``A = Z``."""
    mb = s.mb
    n = plan[r, IN_SIZE]
    out = _view(b.acts, plan[r, OUT_OFF] * mb, n, mb)
    inp = _view(b.acts, plan[r, IN_OFF] * mb, n, mb)
    if s.training:
        _dropout_forward(out, _view(b.cache, plan[r, MASK] * mb, n, mb), inp, fplan[r, 0],
                         s.seed, s.col0, s.cols)
    else:
        _activation_forward_tuned(out, inp, 0, 0.0)  # identity: a copy


def dropout_backward(r, plan, fplan, b, s):
    """``dZ += dA ⊙ mask / (1 − p)`` (training) or ``dZ += dA`` (evaluation)."""
    if r > 0:
        mb = s.mb
        x_off = plan[r, IN_OFF] * mb
        y_off = plan[r, OUT_OFF] * mb
        n = plan[r, IN_SIZE]
        if s.training:
            _dropout_backward(_view(b.dacts, x_off, n, mb), _view(b.dacts, y_off, n, mb),
                              _view(b.cache, plan[r, MASK] * mb, n, mb))
        else:  # evaluation mode ran the identity: its gradient
            _activation_backward_tuned(_view(b.dacts, x_off, n, mb),
                                       _view(b.dacts, y_off, n, mb),
                                       _view(b.acts, x_off, n, mb), _view(b.acts, y_off, n, mb),
                                       0, 0.0, runtime_flag(True))


def residual_forward(r, plan, fplan, b, s):
    """``out = branch + skip``: the branch's output is the row's input, the block's input its
    second input (``IN2_OFF``)."""
    mb = s.mb
    n = plan[r, IN_SIZE]
    _residual_forward(_view(b.acts, plan[r, OUT_OFF] * mb, n, mb),
                      _view(b.acts, plan[r, IN_OFF] * mb, n, mb),
                      _view(b.acts, plan[r, IN2_OFF] * mb, n, mb))


def residual_backward(r, plan, fplan, b, s):
    """``dbranch += dout``, ``dskip += dout``: one gradient, two paths."""
    mb = s.mb
    n = plan[r, IN_SIZE]
    _residual_backward(_view(b.dacts, plan[r, IN_OFF] * mb, n, mb),
                       _view(b.dacts, plan[r, IN2_OFF] * mb, n, mb),
                       _view(b.dacts, plan[r, OUT_OFF] * mb, n, mb))
