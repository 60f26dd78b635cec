"""Activation functions ``f`` and their derivatives ``f'`` as explicit loops (docs/formulas.md §8).

Forward, element by element (``Z``, ``A`` of shape ``(n, m)``; ``i`` neuron, ``k`` batch item)::

    A[i, k] = f(Z[i, k])

Backward, the first row of the §5 table (the ⊙ that §12's "missing activation derivative" forgets)::

    dZ[i, k] = dA[i, k] · f'(Z[i, k])

===========  ===================================  =========================================
name         f(z)                                 f'(z), written with a = f(z)
===========  ===================================  =========================================
identity     z                                    1
sigmoid      1 / (1 + e^-z)                       a·(1 − a)
tanh         tanh z                               1 − a²
relu         max(z, 0)                            1 if z > 0 else 0   (0 at z = 0, §8)
leaky_relu   z if z > 0 else α·z                  1 if z > 0 else α   (α at z = 0, §8)
gelu         z·Φ(z) = ½z(1 + erf(z/√2))          Φ(z) + z·φ(z),  φ(z) = e^{−z²/2}/√(2π)
gelu_tanh    ½z(1 + tanh(u)),                     ½(1 + t) + ½z(1 − t²)·√(2/π)(1 + 3·0.044715z²)
             u = √(2/π)(z + 0.044715z³)           with t = tanh(u) (GPT-2's approximation)
softmax      e^{z_i} / Σ_j e^{z_j}  (per column)  Jacobian-vector product, see below
===========  ===================================  =========================================

Softmax couples the neurons of one example, so its backward pass is not elementwise: for column
``k``, ``dZ[i, k] = a_i · (dA[i, k] − Σ_j a_j · dA[j, k])``. Paired with cross-entropy this
collapses to ``P − Y`` (§9); :func:`loopprop.softmax_cross_entropy` uses that shortcut.

NaN propagates as the formula says: ``f(NaN)`` and ``f'(NaN)`` are NaN for every activation (a
diverged network must not come back finite), and ``relu(−inf) = 0``, ``leaky_relu(−inf) = −inf``.
ReLU and leaky ReLU are therefore written with ``z <= 0`` as the test: NaN fails both ``z > 0``
and ``z <= 0`` and falls through to ``z`` itself.

Inside compiled code the activation is an integer code chosen with ``if/elif`` (the README's
"Conventions"). Sigmoid branches on the sign of ``z`` so ``exp`` never overflows; softmax
subtracts the column maximum.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _checks
from .._jit import kernel, prange, use_threads
from .exp import _INV_FACT, _exp
from .simd import (lanes, like, vadd, vdiv, vexp, vfma, vload, vloadn, vmin, vmul, vsplat,
                   vstore, vstoren)
from .views import borrowed_flat, borrowed_matrix

IDENTITY, SIGMOID, TANH, RELU, LEAKY_RELU, SOFTMAX, GELU, GELU_TANH = range(8)

#: activation name -> integer code used inside compiled kernels
CODES: dict[str, int] = {
    "identity": IDENTITY,
    "sigmoid": SIGMOID,
    "tanh": TANH,
    "relu": RELU,
    "leaky_relu": LEAKY_RELU,
    "softmax": SOFTMAX,
    "gelu": GELU,
    "gelu_tanh": GELU_TANH,
}

_SQRT_HALF = 0.7071067811865476  # 1/√2
_INV_SQRT_2PI = 0.3989422804014327  # 1/√(2π)
_SQRT_2_OVER_PI = 0.7978845608028654  # √(2/π)
_GELU_C = 0.044715


def activation_code(name: str, argname: str = "name") -> int:
    """The integer code of an activation name; unknown names list the valid ones."""
    return CODES[_checks.check_choice(name, argname, CODES)]


@kernel
def _sigmoid(z):
    """σ(z) = 1 / (1 + e^-z), branching on the sign so e^x never sees a large positive x."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@kernel
def _f(z, code, alpha):
    """f(z) for an elementwise activation code (softmax is handled per column)."""
    if code == SIGMOID:
        return _sigmoid(z)
    elif code == TANH:
        return math.tanh(z)
    elif code == RELU:
        return 0.0 if z <= 0 else z  # NaN is not <= 0: it stays NaN
    elif code == LEAKY_RELU:
        return alpha * z if z <= 0 else z
    elif code == GELU:
        return 0.5 * z * (1.0 + math.erf(z * _SQRT_HALF))
    elif code == GELU_TANH:
        return 0.5 * z * (1.0 + math.tanh(_SQRT_2_OVER_PI * (z + _GELU_C * z * z * z)))
    return z


@kernel
def _fprime(z, a, code, alpha):
    """f'(z), written with the cached output a = f(z) where that is cheaper (docs/formulas.md
    §8)."""
    if code == SIGMOID:
        return a * (1.0 - a)
    elif code == TANH:
        return 1.0 - a * a
    elif code == RELU:
        return 1.0 if z > 0 else (0.0 if z <= 0 else z)  # f'(NaN) = NaN
    elif code == LEAKY_RELU:
        return 1.0 if z > 0 else (alpha if z <= 0 else z)
    elif code == GELU:
        # d/dz [z·Φ(z)] = Φ(z) + z·φ(z)
        return 0.5 * (1.0 + math.erf(z * _SQRT_HALF)) + z * _INV_SQRT_2PI * math.exp(-0.5 * z * z)
    elif code == GELU_TANH:
        t = math.tanh(_SQRT_2_OVER_PI * (z + _GELU_C * z * z * z))
        return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * _SQRT_2_OVER_PI * (
            1.0 + 3.0 * _GELU_C * z * z)
    return 1.0


@kernel
def _column_max(Z, k):
    """``max_i Z[i, k]``: what softmax and log-sum-exp subtract so no exponent is positive."""
    zmax = Z[0, k]
    for i in range(1, Z.shape[0]):
        if Z[i, k] > zmax:
            zmax = Z[i, k]
    return zmax


@kernel
def _softmax_columns(A, Z):
    """``A[i, k] = exp(Z[i, k] − max_j Z[j, k]) / Σ_j exp(Z[j, k] − max_j Z[j, k])``.

    Shapes: A, Z (n, m). Subtracting the column max keeps every exponent ≤ 0
    (docs/formulas.md §8, §9).
    """
    n, m = Z.shape
    if n == 0:
        return
    for k in range(m):
        zmax = _column_max(Z, k)
        total = 0.0
        for i in range(n):
            e = math.exp(Z[i, k] - zmax)
            A[i, k] = e
            total += e
        inv = 1.0 / total
        for i in range(n):
            A[i, k] *= inv


@kernel
def _activation_forward(A, Z, code, alpha):
    """``A[i, k] = f(Z[i, k])`` (docs/formulas.md §8); softmax over each column.

    Shapes: A (n, m) written; Z (n, m). ``code`` from :data:`CODES`; ``alpha`` the leaky slope.
    """
    if code == SOFTMAX:
        _softmax_columns(A, Z)
        return
    n, m = Z.shape
    for i in range(n):
        for k in range(m):
            A[i, k] = _f(Z[i, k], code, alpha)


@kernel
def _activation_backward(dZ, dA, Z, A, code, alpha):
    """``dZ[i, k] = dA[i, k] · f'(Z[i, k])`` (docs/formulas.md §5, §8).

    Softmax: ``dZ[i, k] = A[i, k] · (dA[i, k] − Σ_j A[j, k] · dA[j, k])`` (Jacobian-vector product).

    Shapes: dZ (n, m) written; dA, Z, A (n, m), A = f(Z) cached by the forward pass.
    """
    n, m = Z.shape
    if code == SOFTMAX:
        for k in range(m):
            dot = 0.0
            for j in range(n):
                dot += A[j, k] * dA[j, k]
            for i in range(n):
                dZ[i, k] = A[i, k] * (dA[i, k] - dot)
        return
    for i in range(n):
        for k in range(m):
            # forward: A[i, k] = f(Z[i, k])  ->  ∂A[i, k]/∂Z[i, k] = f'(Z[i, k])
            dZ[i, k] = dA[i, k] * _fprime(Z[i, k], A[i, k], code, alpha)


# ---------------------------------------------------------------------------------------------
# tuned kernels: the same f and f', written so that LLVM can vectorize them
# ---------------------------------------------------------------------------------------------
#
# Numba's scalar ``math.exp`` and ``math.tanh`` are calls into libm, one value at a time (SVML,
# Numba's vector math library, is not available with this llvmlite). The tuned kernels use
# :func:`~loopprop.kernels.exp._exp`, a branch-free exp made of arithmetic and one bit-cast,
# which LLVM vectorizes like any other loop body; every activation is then a flat loop with the
# dispatch hoisted out.

#: polynomial degrees for float32 inputs: the float64 arithmetic stays, but a shorter polynomial
#: is enough for a result that is rounded to float32 (truncation error ≤ 5e-9 relative, 0.1 ulp)
_EXP_DEGREE_F32 = 7
_EXPM1_DEGREE_F32 = 9


@kernel(inline=True)
def _sigmoid_fast(z, degree=13):
    """σ(z) with :func:`_exp`; ``e = exp(−|z|) ≤ 1`` for either sign, then a select."""
    e = _exp(-abs(np.float64(z)), degree)
    return 1.0 / (1.0 + e) if z >= 0 else e / (1.0 + e)


@kernel(inline=True)
def _tanh_fast(z, exp_degree=13, expm1_degree=15):
    """tanh z with :func:`_exp`: ``(e − 1)/(e + 1)`` with ``e = exp(2|z|)`` for |z| ≥ 0.25;
    below, ``e − 1`` would cancel, so expm1(2|z|) is its Taylor series (degree 15, error < 4e-17
    relative; degree 9 for float32 results, 5e-10), accurate down to the smallest z. Both are
    computed and one is selected: a branch here would stop LLVM from vectorizing the loop that
    calls it.
    """
    x = abs(np.float64(z))
    t = 2.0 * min(x, 20.0)  # tanh(20) is 1 in float64
    q = _INV_FACT[expm1_degree]
    for j in range(expm1_degree - 1, 0, -1):  # Horner: q·t = Σ_j t^j / j! = expm1(t)
        q = q * t + _INV_FACT[j]
    big = _exp(t, exp_degree) - 1.0
    em1 = big if x >= 0.25 else q * t
    y = em1 / (em1 + 2.0)
    return y if z >= 0 else -y


#: ``−2√(2/π)``: GELU's ``exp(−2u)`` takes ``−2u = k·(z + 0.044715z³)``
_MINUS_2K = -2 * _SQRT_2_OVER_PI


@kernel(inline=True)
def _gelu_tanh_register(x, one, c, k):
    """GPT-2's GELU on one register ``x``, ``½z(1 + tanh u)`` with ``u = √(2/π)(z +
    0.044715z³)``, computed as ``z·σ(2u) = z / (1 + e)``, ``e = exp(−2u)`` (``½(1 + tanh u) =
    σ(2u)`` exactly; no cancellation for either sign of u, where ``½(1 + tanh u)`` loses every
    digit below z ≈ −5). For very negative z, e is inf and the result −0. Constants in
    registers: ``one``, ``c = 0.044715``, ``k = −2√(2/π)``."""
    return vdiv(x, vadd(one, vexp(vmul(k, vfma(vmul(c, x), vmul(x, x), x)))))


@kernel(inline=True)
def _gelu_tanh_prime_register(x, one, c, k, c3, k2):
    """Its derivative on one register, ``σ + z·σ(1 − σ)·2√(2/π)(1 + 3·0.044715z²)`` with ``σ =
    σ(2u) = 1/(1 + e)``, where ``1 − σ = min(e·σ, 1)``: no cancellation when σ is close to 1,
    and 1 when e is inf (``inf·0`` is NaN, which ``min`` drops: the product must be 0).
    Constants as :func:`_gelu_tanh_register`, and ``c3 = 3·0.044715``, ``k2 = 2√(2/π)``."""
    e = vexp(vmul(k, vfma(vmul(c, x), vmul(x, x), x)))
    s = vdiv(one, vadd(one, e))
    r = vmin(vmul(e, s), one)
    slope = vmul(k2, vfma(c3, vmul(x, x), one))
    return vfma(vmul(x, vmul(s, r)), slope, s)


@kernel(inline=True)
def _gelu_tanh_rows(a, z):
    """``a[p] = gelu_tanh(z[p])`` over flat arrays, a register at a time in the arrays' dtype
    (:func:`~loopprop.kernels.simd.vexp`: 16 float32 lanes); the tail by masked loads and
    stores through the same instructions, so an element's bits do not depend on where a
    thread's range ends."""
    n = z.shape[0]
    L = lanes(z)
    one, c, k = vsplat(like(z, 1.0)), vsplat(like(z, _GELU_C)), vsplat(like(z, _MINUS_2K))
    full = n - n % L
    for p in range(0, full, L):
        vstore(a, p, _gelu_tanh_register(vload(z, p), one, c, k))
    if full < n:
        vstoren(a, full, _gelu_tanh_register(vloadn(z, full, n - full), one, c, k), n - full)


@kernel(inline=True)
def _gelu_tanh_backward_rows(dz, da, z, acc):
    """``dz[p] (+)= da[p] · gelu_tanh'(z[p])``, a register at a time like
    :func:`_gelu_tanh_rows`."""
    n = z.shape[0]
    L = lanes(z)
    one, c, k = vsplat(like(z, 1.0)), vsplat(like(z, _GELU_C)), vsplat(like(z, _MINUS_2K))
    c3, k2 = vsplat(like(z, 3 * _GELU_C)), vsplat(like(z, 2 * _SQRT_2_OVER_PI))
    full = n - n % L
    for p in range(0, full, L):
        g = vmul(vload(da, p), _gelu_tanh_prime_register(vload(z, p), one, c, k, c3, k2))
        vstore(dz, p, vadd(vload(dz, p), g) if acc else g)
    if full < n:
        r = n - full
        g = vmul(vloadn(da, full, r),
                 _gelu_tanh_prime_register(vloadn(z, full, r), one, c, k, c3, k2))
        vstoren(dz, full, vadd(vloadn(dz, full, r), g) if acc else g, r)


@kernel(separate=True)
def _activation_forward_tuned(A, Z, code, alpha):
    """``A = f(Z)`` (docs/formulas.md §5, §8), tuned: one flat, vectorizable loop per activation.

    Shapes: A (n, m) written; Z (n, m), both C-contiguous.

    The activation is chosen once, outside the loop, and the loop runs over the flat index
    ``p = i·m + k``; sigmoid and tanh use :func:`_sigmoid_fast` and :func:`_tanh_fast`, with
    float64 arithmetic in both dtypes (shorter polynomials for float32 results); GPT-2's GELU
    runs a register at a time in the arrays' own dtype (:func:`_gelu_tanh_rows`).
    Softmax couples each column and stays :func:`_softmax_columns`. No fast-math here: the
    helpers are inlined into this loop and must keep exact IEEE evaluation order (there is no
    reduction that would need ``reassoc`` to vectorize).
    """
    if code == SOFTMAX:
        _softmax_columns(A, Z)
        return
    a = borrowed_flat(A)  # flat views without reference counting (kernels/views.py)
    z = borrowed_flat(Z)
    n = z.shape[0]
    single = z.itemsize == 4  # float32 results: shorter polynomials (known when compiling)
    if code == SIGMOID and single:
        for p in range(n):
            a[p] = _sigmoid_fast(z[p], _EXP_DEGREE_F32)
    elif code == SIGMOID:
        for p in range(n):
            a[p] = _sigmoid_fast(z[p])
    elif code == TANH and single:
        for p in range(n):
            a[p] = _tanh_fast(z[p], _EXP_DEGREE_F32, _EXPM1_DEGREE_F32)
    elif code == TANH:
        for p in range(n):
            a[p] = _tanh_fast(z[p])
    elif code == RELU:
        for p in range(n):
            a[p] = 0.0 if z[p] <= 0 else z[p]  # NaN is not <= 0: it stays NaN
    elif code == LEAKY_RELU:
        for p in range(n):
            a[p] = alpha * z[p] if z[p] <= 0 else z[p]
    elif code == GELU_TANH:
        _gelu_tanh_rows(a, z)
    elif code == GELU:
        for p in range(n):
            a[p] = _f(z[p], code, alpha)
    else:
        for p in range(n):
            a[p] = z[p]


@kernel(separate=True)
def _activation_backward_tuned(dZ, dA, Z, A, code, alpha, acc):
    """``dZ = dA ⊙ f'(Z)`` (docs/formulas.md §5, §8), tuned like the forward kernel; with
    ``acc`` the result is *added* to dZ (``dZ += dA ⊙ f'(Z)``: input gradients accumulate when
    two branches read one value), without it dZ is overwritten.

    Softmax: ``dZ[i, k] (+)= A[i, k] · (dA[i, k] − Σ_j A[j, k] · dA[j, k])``.

    Shapes: dZ (n, m) written or accumulated (may be dA itself when not ``acc``); dA, Z, A
    (n, m), A = f(Z), all C-contiguous.
    """
    if code == SOFTMAX:
        n, m = Z.shape
        for k in range(m):
            dot = 0.0
            for j in range(n):
                dot += A[j, k] * dA[j, k]
            for i in range(n):
                prev = dZ[i, k] if acc else 0.0
                dZ[i, k] = prev + A[i, k] * (dA[i, k] - dot)
        return
    dz = borrowed_flat(dZ)
    da = borrowed_flat(dA)
    z = borrowed_flat(Z)
    a = borrowed_flat(A)
    n = z.shape[0]
    # `prev` is chosen outside the arithmetic (a select on a loop-invariant flag, which LLVM
    # hoists out of the loop): the loops stay flat and vectorizable either way
    if code == SIGMOID:
        for p in range(n):
            prev = dz[p] if acc else 0.0
            dz[p] = prev + da[p] * (a[p] * (1.0 - a[p]))
    elif code == TANH:
        for p in range(n):
            prev = dz[p] if acc else 0.0
            dz[p] = prev + da[p] * (1.0 - a[p] * a[p])
    # ReLU: the derivative is chosen between two constants and then multiplied, as in the naive
    # kernel. Choosing between da[p] and 0 instead puts the load of da[p] inside a branch, which
    # LLVM neither vectorizes nor turns into a select: half the branches of a fresh batch were
    # mispredicted (measured: 5 µs of a 23 µs batch of the 64-32-10 epoch).
    # The third choice, z itself, is taken only by NaN: f'(NaN) = NaN.
    elif code == RELU:
        for p in range(n):
            zp = z[p]
            prev = dz[p] if acc else 0.0
            dz[p] = prev + da[p] * (1.0 if zp > 0 else (0.0 if zp <= 0 else zp))
    elif code == LEAKY_RELU:
        for p in range(n):
            zp = z[p]
            prev = dz[p] if acc else 0.0
            dz[p] = prev + da[p] * (1.0 if zp > 0 else (alpha if zp <= 0 else zp))
    elif code == GELU_TANH:
        _gelu_tanh_backward_rows(dz, da, z, acc)
    elif code == GELU:
        for p in range(n):
            prev = dz[p] if acc else 0.0
            dz[p] = prev + da[p] * _fprime(z[p], a[p], code, alpha)
    else:
        for p in range(n):
            prev = dz[p] if acc else 0.0
            dz[p] = prev + da[p]


IMPLS = ("tuned", "naive")


#: below this many elements an activation runs on one thread (a launch costs ~10 µs)
ELEMENTWISE_MIN = 1 << 16


@kernel
def _thread_chunks(n, code, threads):
    """How many contiguous ranges an activation of ``n`` values is split into: one per thread
    from ``ELEMENTWISE_MIN`` values on, and one for softmax (it couples a column)."""
    return 1 if code == SOFTMAX else max(1, min(threads, n // ELEMENTWISE_MIN))


@kernel(parallel=True)
def _activation_forward_threads(A, Z, code, alpha, threads):
    """:func:`_activation_forward_tuned` with the flat index split into one contiguous range
    per thread (softmax, which couples a column, and small arrays run as one call). Each element
    is computed by the same instructions whatever the split (no fast-math: no contraction that
    could differ between a loop's vector body and its remainder), so the bits do not depend on
    the thread count."""
    n = Z.size
    chunks = _thread_chunks(n, code, threads)
    if chunks == 1:
        _activation_forward_tuned(A, Z, code, alpha)
        return
    a, z = borrowed_flat(A), borrowed_flat(Z)
    for c in prange(chunks):
        p0, p1 = c * n // chunks, (c + 1) * n // chunks
        _activation_forward_tuned(borrowed_matrix(a, p0, 1, p1 - p0),
                                  borrowed_matrix(z, p0, 1, p1 - p0), code, alpha)


@kernel(parallel=True)
def _activation_backward_threads(dZ, dA, Z, A, code, alpha, acc, threads):
    """:func:`_activation_backward_tuned` split like :func:`_activation_forward_threads`."""
    n = Z.size
    chunks = _thread_chunks(n, code, threads)
    if chunks == 1:
        _activation_backward_tuned(dZ, dA, Z, A, code, alpha, acc)
        return
    dz, da, z, a = borrowed_flat(dZ), borrowed_flat(dA), borrowed_flat(Z), borrowed_flat(A)
    for c in prange(chunks):
        p0, p1 = c * n // chunks, (c + 1) * n // chunks
        _activation_backward_tuned(borrowed_matrix(dz, p0, 1, p1 - p0),
                                   borrowed_matrix(da, p0, 1, p1 - p0),
                                   borrowed_matrix(z, p0, 1, p1 - p0),
                                   borrowed_matrix(a, p0, 1, p1 - p0), code, alpha, acc)


def _alpha(alpha) -> float:
    return _checks.finite_float(alpha, "alpha", " such as 0.01 (the leaky-ReLU slope)")


def activation_forward(name: str, Z, alpha: float = 0.01, *, impl: str = "tuned",
                       check_finite: bool = True) -> np.ndarray:
    """``A = f(Z)`` for ``name`` in identity, sigmoid, tanh, relu, leaky_relu, gelu, gelu_tanh,
    softmax (§8).

    ``Z`` is ``(n, m)``, examples as columns; a 1-D ``Z`` is refused so that the softmax axis is
    never guessed. ``alpha`` is the leaky-ReLU slope. ``impl``: ``"tuned"`` (vectorizable loops,
    default; from 2¹⁶ values on, one contiguous range per Numba thread, the same bits whatever
    the count) or ``"naive"`` (the formula, element by element). Returns a new ``(n, m)`` array.
    """
    code = activation_code(name)
    _checks.check_choice(impl, "impl", IMPLS)
    Z = _checks.as_float_array(Z, "Z", 2, check_finite=check_finite,
                               hint="examples are columns: use Z.reshape(-1, 1) for one example")
    A = np.empty_like(Z)
    if impl == "tuned":
        _activation_forward_threads(A, Z, code, _alpha(alpha), use_threads(True))
    else:
        _activation_forward(A, Z, code, _alpha(alpha))
    return A


def activation_backward(name: str, dA, Z, alpha: float = 0.01, *, A=None, impl: str = "tuned",
                        check_finite: bool = True) -> np.ndarray:
    """``dZ = dA ⊙ f'(Z)`` (docs/formulas.md §5, §8); softmax: the per-column Jacobian-vector
    product.

    ``dA`` and ``Z`` are ``(n, m)`` of one dtype; ``impl`` as in :func:`activation_forward`.
    Sigmoid, tanh and softmax write their derivative through the forward's output ``A = f(Z)``
    (``σ' = A(1 − A)``, ``tanh' = 1 − A²``), which this function computes from ``Z`` first --
    unless the caller passes it: ``A=activation_forward(name, Z)``, the same ``(n, m)`` array
    of the same dtype, is then read instead (it must be ``f`` of this ``Z``: it is not
    recomputed to be checked). Returns a new ``(n, m)`` array.
    """
    code = activation_code(name)
    _checks.check_choice(impl, "impl", IMPLS)
    dA = _checks.as_float_array(dA, "dA", 2, check_finite=check_finite)
    Z = _checks.as_float_array(Z, "Z", 2, check_finite=check_finite)
    _checks.same_dtype(dA=dA, Z=Z)
    _checks.require_shape(dA, "dA", Z.shape, "dA and Z must have the same shape")
    a = _alpha(alpha)
    given = A is not None
    if given:
        A = _checks.as_float_array(A, "A", 2, check_finite=check_finite,
                                   hint="A is the forward's output, activation_forward(name, Z)")
        _checks.same_dtype(Z=Z, A=A)
        _checks.require_shape(A, "A", Z.shape,
                              "A = f(Z) has Z's shape: pass activation_forward(name, Z)")
    else:
        A = np.empty_like(Z)
    dZ = np.empty_like(Z)
    if impl == "tuned":  # threads as activation_forward's
        threads = use_threads(True)
        if not given:
            _activation_forward_threads(A, Z, code, a, threads)
        _activation_backward_threads(dZ, dA, Z, A, code, a, False, threads)
    else:
        if not given:
            _activation_forward(A, Z, code, a)
        _activation_backward(dZ, dA, Z, A, code, a)
    return dZ
