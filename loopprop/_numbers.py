"""Numbers as the chain-rule traces print them (:mod:`loopprop.explain`,
:mod:`loopprop.explain_layers`): six significant digits, and a negative factor of a product in
parentheses so that ``a·(−b)`` reads as one product."""

from __future__ import annotations

import numpy as np


def _fmt(v: float) -> str:
    """``v`` to six significant digits."""
    return f"{v:.6g}"


def _p(v: float) -> str:
    """A factor in a product: negative numbers in parentheses, so ``a·(−b)`` reads as one."""
    return f"({_fmt(v)})" if v < 0 else _fmt(v)


def _vec(v) -> str:
    """A vector as ``[a, b, …]``."""
    return "[" + ", ".join(_fmt(float(x)) for x in np.atleast_1d(v)) + "]"
