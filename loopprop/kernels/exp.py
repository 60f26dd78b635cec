"""The exponential as arithmetic that LLVM vectorizes: :func:`_exp` (float64, a Taylor
polynomial of degree 13 after Cody–Waite reduction) and :func:`_exp_f32` (float32, Cephes'
``expf``), with their constants.

Numba's scalar ``math.exp`` is a call into libm, one value at a time (SVML, Numba's vector math
library, is not available with this llvmlite). These are branch-free -- a clamp, a rounding, a
polynomial by Horner and one bit-cast for ``2^n`` -- so a loop over them vectorizes like any
other loop body. The activations, the softmax and attention call them;
:func:`loopprop.kernels.simd.vexp` writes the same instructions for a whole register.
"""

from __future__ import annotations

import math

import numpy as np

from .._jit import kernel

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # fdlibm: n·LN2_HI is exact for |n| < 2²¹
_LN2_LO = 1.90821492927058770002e-10
#: 1/i! for i = 0 … 15: the Taylor coefficients of e^r and of expm1
_INV_FACT = tuple(1.0 / math.factorial(i) for i in range(16))


@kernel(inline=True)
def _exp(x, degree=13):
    """e^x in float64, vectorizable: ``e^x = 2^n · e^r`` with ``n = round(x / ln 2)``.

    ``r = x − n·ln 2`` (ln 2 in two parts, Cody–Waite) lies in [−ln2/2, ln2/2], where the Taylor
    polynomial of degree 13 is exact to 4e-18 (degree 7, for float32 results: 5e-9); ``2^n`` is
    built from its exponent bits and applied in two halves so that subnormal results and
    overflow to inf come out as IEEE says. Accuracy: within 2 ulp of libm's exp over
    [−745, 709.78]. Compiled *without* fast-math: ``reassoc`` would be free to compute
    ``p·(2^a·2^b)`` instead of ``(p·2^a)·2^b`` and overflow near x = 709. ``degree`` is a
    constant at every call site, so LLVM unrolls the Horner loop completely.
    """
    x = min(max(x, -746.0), 710.0)
    n = np.floor(x * _LOG2E + 0.5)  # a float: NaN stays NaN (math.floor would raise in Python)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = _INV_FACT[degree]
    for i in range(degree - 1, -1, -1):  # Horner: p = Σ_i r^i / i!
        p = p * r + _INV_FACT[i]
    k = np.int64(n)
    k1 = k >> 1
    s1 = np.int64((k1 + 1023) << 52).view(np.float64)
    s2 = np.int64((k - k1 + 1023) << 52).view(np.float64)
    return p * s1 * s2


#: float32 constants of :func:`_exp_f32` (Cephes' ``expf``): ln 2 as 0.693359375 (nine bits, so
#: n·LN2_HI_F32 is exact for |n| < 2¹⁵) plus a correction, and the minimax coefficients of
#: ``(e^r − 1 − r)/r²`` on [−ln2/2, ln2/2], highest degree first
_LOG2E_F32 = np.float32(_LOG2E)
_LN2_HI_F32 = np.float32(0.693359375)
_LN2_LO_F32 = np.float32(-2.12194440e-4)
_EXPF_POLY = tuple(np.float32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                                           4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))


@kernel(inline=True)
def _exp_f32(x):
    """e^x in float32 arithmetic, vectorizable: 16 lanes per 512-bit register, twice the float64
    :func:`_exp`'s, for results that are float32 anyway (attention's probabilities).

    Same steps as :func:`_exp` in float32: ``n = round(x/ln 2)``, ``r = (x − n·ln2_hi) −
    n·ln2_lo``, ``e^r = 1 + r + r²·p(r)`` (degree 5), ``2^n`` from exponent bits in two halves
    (subnormal results, overflow to inf). Accuracy: at most 1.01 ulp from the exact value over
    200 M random arguments (tests/test_attention.py holds it to 1.05) -- **only** when the
    calling kernel does not reassociate (``kernel(fast="contract")``): regrouped as ``x −
    n·(ln2_hi + ln2_lo)`` the reduction is off by up to 4.5 ulp at |x| ≈ 87. ``x`` must be a
    float32."""
    x = min(max(x, np.float32(-104.0)), np.float32(89.0))
    n = np.floor(x * _LOG2E_F32 + np.float32(0.5))
    r = (x - n * _LN2_HI_F32) - n * _LN2_LO_F32
    p = _EXPF_POLY[0]
    for i in range(1, 6):  # Horner, unrolled: the tuple index is a constant per step
        p = p * r + _EXPF_POLY[i]
    p = p * (r * r) + r + np.float32(1.0)
    k = np.int32(n)
    k1 = k >> 1
    s1 = np.int32((k1 + 127) << 23).view(np.float32)
    s2 = np.int32((k - k1 + 127) << 23).view(np.float32)
    return p * s1 * s2
