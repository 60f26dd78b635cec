"""SIMD registers for the tuned matrix kernels: a 512-bit vector of float64 (8 lanes) or float32
(16 lanes), the six operations the micro-kernel of :mod:`loopprop.kernels.gemm` needs, and a
lane-wise and a horizontal maximum (attention's row maximum: without ``nnan``, LLVM does not
vectorize a ``max`` reduction by itself), and a horizontal sum in lane order.

LLVM vectorizes loops that Numba compiles, but it does not keep a *block of vectors* in
registers across a loop: the register-blocked product ``C[r:r+6, s:s+16] += Σ_p X[r+a, p] ·
Y[p, s:s+16]`` stays scalar, or is vectorized along ``p`` with horizontal sums (see
``kernels/dense.py``). These intrinsics let a Numba loop name the vectors itself::

    b0 = vload(yp, o)              # Y[p, s : s+8], one register
    a = vsplat(xp[q])              # X[r, p] in every lane
    c00 = vfma(a, b0, c00)         # c00 += a · b0, lane by lane

They compile to single instructions (``vmovupd``, ``vbroadcastsd``, ``vfmadd231pd``); on CPUs
without AVX-512 LLVM splits each into two 256-bit halves. Arrays passed to ``vload``/``vstore``
must be one-dimensional and contiguous; the caller keeps ``i + lanes`` in bounds (no checks:
this is the innermost loop).
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

#: bits in one vector register
BITS = 512


class Vec(types.Type):
    """A 512-bit SIMD register of ``dtype`` values (Numba type)."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.lanes = BITS // dtype.bitwidth
        super().__init__(name=f"Vec({dtype}x{self.lanes})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(),
                                                     fe_type.lanes))


def _float_array(arr) -> bool:
    return isinstance(arr, types.Array) and arr.ndim == 1 and arr.dtype in (types.float32,
                                                                           types.float64)


def _element_pointer(context, builder, arrty, arr, index):
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.gep(data, [index])


@intrinsic
def vload(typingctx, arr, i):
    """``arr[i : i + lanes]`` as one register (unaligned load)."""
    if not (_float_array(arr) and isinstance(i, types.Integer)):
        return None
    vt = Vec(arr.dtype)

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        ptr = builder.bitcast(ptr, context.get_value_type(vt).as_pointer())
        return builder.load(ptr, align=arr.dtype.bitwidth // 8)

    return vt(arr, i), codegen


@intrinsic
def vstore(typingctx, arr, i, v):
    """``arr[i : i + lanes] = v`` (unaligned store)."""
    if not (_float_array(arr) and isinstance(i, types.Integer) and isinstance(v, Vec)
            and v.dtype == arr.dtype):
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        ptr = builder.bitcast(ptr, args[2].type.as_pointer())
        builder.store(args[2], ptr, align=arr.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(arr, i, v), codegen


@intrinsic
def vsplat(typingctx, x):
    """``x`` in every lane (a broadcast)."""
    if x not in (types.float32, types.float64):
        return None
    vt = Vec(x)

    def codegen(context, builder, sig, args):
        llvt = context.get_value_type(vt)
        one = builder.insert_element(ir.Constant(llvt, ir.Undefined), args[0],
                                     ir.Constant(ir.IntType(32), 0))
        mask = ir.Constant(ir.VectorType(ir.IntType(32), vt.lanes), [0] * vt.lanes)
        return builder.shuffle_vector(one, ir.Constant(llvt, ir.Undefined), mask)

    return vt(x), codegen


@intrinsic
def vzero(typingctx, arr):
    """A register of zeros, of ``arr``'s dtype."""
    if not _float_array(arr):
        return None
    vt = Vec(arr.dtype)

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(vt), [0.0] * vt.lanes)

    return vt(arr), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """``a · b + c`` lane by lane, one rounding (fused multiply-add)."""
    if not (isinstance(a, Vec) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        llvt = args[0].type
        suffix = f"v{a.lanes}f{a.dtype.bitwidth}"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(llvt, [llvt] * 3),
                                            f"llvm.fma.{suffix}")
        return builder.call(fn, list(args))

    return a(a, b, c), codegen


@intrinsic
def vadd(typingctx, a, b):
    """``a + b`` lane by lane."""
    if not (isinstance(a, Vec) and a == b):
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])

    return a(a, b), codegen


@intrinsic
def vmax(typingctx, a, b):
    """``max(a, b)`` lane by lane (LLVM's ``maxnum``: a NaN lane takes the other operand)."""
    if not (isinstance(a, Vec) and a == b):
        return None

    def codegen(context, builder, sig, args):
        llvt = args[0].type
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(llvt, [llvt] * 2),
                                            f"llvm.maxnum.v{a.lanes}f{a.dtype.bitwidth}")
        return builder.call(fn, list(args))

    return a(a, b), codegen


@intrinsic
def vhmax(typingctx, a):
    """The largest lane of ``a`` (a horizontal maximum, one scalar)."""
    if not isinstance(a, Vec):
        return None

    def codegen(context, builder, sig, args):
        llvt = args[0].type
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(llvt.element, [llvt]),
            f"llvm.vector.reduce.fmax.v{a.lanes}f{a.dtype.bitwidth}")
        return builder.call(fn, list(args))

    return a.dtype(a), codegen


@intrinsic
def lanes(typingctx, arr):
    """Lanes per register for ``arr``'s dtype (16 for float32, 8 for float64), a constant of
    the compiled code: ``64 // arr.itemsize`` is read from the array at run time, and offsets
    built from it would be computed (or looked up) inside the innermost loop."""
    if not _float_array(arr):
        return None
    n = BITS // arr.dtype.bitwidth

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, n)

    return types.intp(arr), codegen


@intrinsic
def vhsum(typingctx, a):
    """The sum of the lanes of ``a``, in lane order (``((a₀ + a₁) + a₂) + …``: LLVM's ordered
    ``vector.reduce.fadd``, the same bits with or without fast-math in the caller)."""
    if not isinstance(a, Vec):
        return None

    def codegen(context, builder, sig, args):
        llvt = args[0].type
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(llvt.element, [llvt.element, llvt]),
            f"llvm.vector.reduce.fadd.v{a.lanes}f{a.dtype.bitwidth}")
        return builder.call(fn, [ir.Constant(llvt.element, -0.0), args[0]])

    return a.dtype(a), codegen


def _literal_count(m) -> int | None:
    """The value of a compile-time power of two ``1 … 32`` (an ``IntegerLiteral``), else None."""
    if isinstance(m, types.IntegerLiteral) and m.literal_value in (1, 2, 4, 8, 16, 32):
        return m.literal_value
    return None


def _strided(seq, stride):
    return [seq[i::stride] for i in range(stride)]


def _deinterleave(builder, regs, lanes):
    """``regs`` hold the sequence ``x[0], x[1], …`` (``lanes`` per register, ``m`` registers,
    ``m`` a power of two); returns ``m`` registers, register ``k`` holding ``x[k], x[k + m],
    x[k + 2m], …``. Each stage splits every sequence of registers into its even and its odd
    elements, two two-source shuffles per pair of registers (one ``vpermt2ps`` each)."""
    even = ir.Constant(ir.VectorType(ir.IntType(32), lanes), list(range(0, 2 * lanes, 2)))
    odd = ir.Constant(ir.VectorType(ir.IntType(32), lanes), list(range(1, 2 * lanes, 2)))
    seqs = [(0, regs)]  # (offset of its first element in x, registers), stride implied
    while len(seqs[0][1]) > 1:
        nxt = []
        for off, rs in seqs:
            pairs = list(zip(rs[0::2], rs[1::2]))
            nxt.append((off, [builder.shuffle_vector(a, b, even) for a, b in pairs]))
            nxt.append((off + len(seqs), [builder.shuffle_vector(a, b, odd) for a, b in pairs]))
        seqs = nxt
    return [rs[0] for _, rs in sorted(seqs, key=lambda x: x[0])]


def _interleave(builder, regs, lanes):
    """The inverse of :func:`_deinterleave`: register ``k`` of ``regs`` holds ``x[k], x[k + m],
    …``; returns ``x[0], x[1], …`` in ``m`` registers (two shuffles per pair, per stage)."""
    half = lanes // 2
    lo = ir.Constant(ir.VectorType(ir.IntType(32), lanes),
                     [i // 2 + (lanes if i % 2 else 0) for i in range(lanes)])
    hi = ir.Constant(ir.VectorType(ir.IntType(32), lanes),
                     [half + i // 2 + (lanes if i % 2 else 0) for i in range(lanes)])
    m = len(regs)
    seqs = {k: [regs[k]] for k in range(m)}  # offset -> registers, stride m / number of seqs
    while len(seqs) > 1:
        n = len(seqs) // 2
        merged = {}
        for off in range(n):
            out = []
            for a, b in zip(seqs[off], seqs[off + n]):
                out += [builder.shuffle_vector(a, b, lo), builder.shuffle_vector(a, b, hi)]
            merged[off] = out
        seqs = merged
    return seqs[0]


@intrinsic(prefer_literal=True)
def vsplit(typingctx, dst, d0, dstep, src, s0, m):
    """A ``lanes × m`` block transposed: ``dst[d0 + k·dstep + r] = src[s0 + r·m + k]`` for
    ``r < lanes``, ``k < m`` -- ``m`` registers read contiguously, ``m`` written, one per
    ``k``, through shuffles in registers (``m`` a compile-time power of two ``1 … 32``)."""
    count = _literal_count(m)
    if not (_float_array(dst) and _float_array(src) and dst.dtype == src.dtype
            and count is not None):
        return None
    vt = Vec(src.dtype)
    align = src.dtype.bitwidth // 8

    def codegen(context, builder, sig, args):
        dst_a, d0_, dstep_, src_a, s0_, _ = args
        llvt = context.get_value_type(vt)
        regs = []
        for i in range(count):
            off = builder.add(s0_, ir.Constant(s0_.type, i * vt.lanes))
            ptr = _element_pointer(context, builder, sig.args[3], src_a, off)
            regs.append(builder.load(builder.bitcast(ptr, llvt.as_pointer()), align=align))
        for k, reg in enumerate(_deinterleave(builder, regs, vt.lanes)):
            off = builder.add(d0_, builder.mul(dstep_, ir.Constant(dstep_.type, k)))
            ptr = _element_pointer(context, builder, sig.args[0], dst_a, off)
            builder.store(reg, builder.bitcast(ptr, llvt.as_pointer()), align=align)
        return context.get_dummy_value()

    return types.none(dst, d0, dstep, src, s0, m), codegen


@intrinsic(prefer_literal=True)
def vmerge(typingctx, dst, d0, src, s0, sstep, m, add):
    """The inverse of :func:`vsplit`: ``dst[d0 + r·m + k] = src[s0 + k·sstep + r]`` (``+=``
    when the compile-time ``add`` is True) for ``r < lanes``, ``k < m``: ``m`` registers
    read, one per ``k``, interleaved in registers and written contiguously."""
    count = _literal_count(m)
    if not (_float_array(dst) and _float_array(src) and dst.dtype == src.dtype
            and count is not None and isinstance(add, types.BooleanLiteral)):
        return None
    vt = Vec(src.dtype)
    align = src.dtype.bitwidth // 8
    adding = add.literal_value

    def codegen(context, builder, sig, args):
        dst_a, d0_, src_a, s0_, sstep_, _, _ = args
        llvt = context.get_value_type(vt)
        regs = []
        for k in range(count):
            off = builder.add(s0_, builder.mul(sstep_, ir.Constant(sstep_.type, k)))
            ptr = _element_pointer(context, builder, sig.args[2], src_a, off)
            regs.append(builder.load(builder.bitcast(ptr, llvt.as_pointer()), align=align))
        for i, reg in enumerate(_interleave(builder, regs, vt.lanes)):
            off = builder.add(d0_, ir.Constant(d0_.type, i * vt.lanes))
            ptr = builder.bitcast(_element_pointer(context, builder, sig.args[0], dst_a, off),
                                  llvt.as_pointer())
            if adding:
                reg = builder.fadd(builder.load(ptr, align=align), reg)
            builder.store(reg, ptr, align=align)
        return context.get_dummy_value()

    return types.none(dst, d0, src, s0, sstep, m, add), codegen


if numba.config.DISABLE_JIT:
    # NUMBA_DISABLE_JIT=1 (debugging, coverage): the registers become small NumPy arrays of
    # 64 bytes, and each operation the NumPy expression it compiles to.

    def _lanes(dtype) -> int:
        return BITS // 8 // np.dtype(dtype).itemsize

    def vload(arr, i):  # noqa: F811 - the pure-Python twin
        """``arr[i : i + lanes]`` (a copy)."""
        return arr[i:i + _lanes(arr.dtype)].copy()

    def vstore(arr, i, v):  # noqa: F811
        """``arr[i : i + lanes] = v``."""
        arr[i:i + v.shape[0]] = v

    def vsplat(x):  # noqa: F811
        """``x`` in every lane."""
        return np.full(_lanes(np.asarray(x).dtype), x)

    def vzero(arr):  # noqa: F811
        """Zeros of ``arr``'s dtype."""
        return np.zeros(_lanes(arr.dtype), arr.dtype)

    def vfma(a, b, c):  # noqa: F811
        """``a · b + c`` lane by lane (two roundings here, one in compiled code)."""
        return a * b + c

    def vadd(a, b):  # noqa: F811
        """``a + b`` lane by lane."""
        return a + b

    def vmax(a, b):  # noqa: F811
        """``max(a, b)`` lane by lane (a NaN lane takes the other operand)."""
        return np.fmax(a, b)

    def vhmax(a):  # noqa: F811
        """The largest lane."""
        return np.fmax.reduce(a)

    def lanes(arr):  # noqa: F811
        """Lanes per register for ``arr``'s dtype."""
        return _lanes(arr.dtype)

    def vhsum(a):  # noqa: F811
        """The sum of the lanes, in lane order."""
        total = a.dtype.type(-0.0)
        for v in a:
            total = total + v
        return total


    def vsplit(dst, d0, dstep, src, s0, m):  # noqa: F811
        """``dst[d0 + k·dstep + r] = src[s0 + r·m + k]``, ``r < lanes``, ``k < m``."""
        L = _lanes(src.dtype)
        for k in range(m):
            dst[d0 + k * dstep:d0 + k * dstep + L] = src[s0 + k:s0 + L * m:m]

    def vmerge(dst, d0, src, s0, sstep, m, add):  # noqa: F811
        """``dst[d0 + r·m + k] (+)= src[s0 + k·sstep + r]``, ``r < lanes``, ``k < m``."""
        L = _lanes(src.dtype)
        for k in range(m):
            if add:
                dst[d0 + k:d0 + L * m:m] += src[s0 + k * sstep:s0 + k * sstep + L]
            else:
                dst[d0 + k:d0 + L * m:m] = src[s0 + k * sstep:s0 + k * sstep + L]
