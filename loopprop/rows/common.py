"""Views into the flat buffers, and the no-op row of a kind a network lacks."""

from __future__ import annotations

from .._jit import kernel
from ..kernels.views import borrowed_flat, borrowed_image, borrowed_matrix
from ..plan import IN_OFF, OUT_OFF, P_OFF


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


@kernel
def _offsets(plan, r, mb):
    """Row ``r``'s input and output offsets for a batch of ``mb`` (per-example offsets times
    ``mb``: :mod:`loopprop.plan`) and its parameters' offset: ``(x_off, y_off, p)``."""
    return plan[r, IN_OFF] * mb, plan[r, OUT_OFF] * mb, plan[r, P_OFF]


@kernel
def _zero(v):
    """``v[p] = 0`` for every p (a flat buffer)."""
    for p in range(v.shape[0]):
        v[p] = 0.0


def none_row(r, plan, fplan, b, s):
    """The row function of a kind a network lacks (never called) and of ``Flatten``, whose
    output is its input (one region of the plan: nothing to compute, nothing to pass back)."""
    return


def none_decode(r, plan, fplan, b, s, kv, kv_off, pos):
    """The decode function of a kind that decodes with its forward row (never called)."""
    return
