"""SIMD registers for the tuned kernels: a 512-bit vector of float64 (8 lanes) or float32 (16
lanes). The micro-kernel of :mod:`loopprop.kernels.gemm` needs six operations (load, store,
broadcast, zero, fused multiply-add, add); attention adds a lane-wise and a horizontal maximum
(without ``nnan``, LLVM does not vectorize a ``max`` reduction by itself), a horizontal sum in
lane order, ``vsub``/``vmul``, a masked tail (``vkeep``), the exponential a register at a time
(``vexp``, the same bits as the scalar one) and the transposes between the batch layout and
one block per example (``vsplit``/``vmerge``: shuffles in registers), which the packed product's
packing uses too, with masked loads and stores (``vloadn``/``vstoren``) and a cache prefetch
(``vprefetch``).

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

from . import exp as ex

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


def _lanewise(name: str, doc: str, emit):
    """A same-shape binary intrinsic ``name(a, b)`` on two registers of one type, its code
    ``emit(builder, vec_type, a, b)`` (one LLVM instruction or ``llvm.*`` call)."""

    def typer(typingctx, a, b):
        if not (isinstance(a, Vec) and a == b):
            return None

        def codegen(context, builder, sig, args):
            return emit(builder, a, args[0], args[1])

        return a(a, b), codegen

    typer.__name__ = typer.__qualname__ = name
    typer.__doc__ = doc
    return intrinsic(typer)


def _llvm_call(op: str):
    """``emit`` for :func:`_lanewise`: a call of LLVM's ``llvm.<op>`` on the vector type."""

    def emit(builder, vt, a, b):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(a.type, [a.type] * 2),
                                            f"llvm.{op}.v{vt.lanes}f{vt.dtype.bitwidth}")
        return builder.call(fn, [a, b])

    return emit


vadd = _lanewise("vadd", "``a + b`` lane by lane.", lambda bld, vt, a, b: bld.fadd(a, b))
vsub = _lanewise("vsub", "``a − b`` lane by lane.", lambda bld, vt, a, b: bld.fsub(a, b))
vmul = _lanewise("vmul", "``a · b`` lane by lane.", lambda bld, vt, a, b: bld.fmul(a, b))
vdiv = _lanewise("vdiv", "``a / b`` lane by lane.", lambda bld, vt, a, b: bld.fdiv(a, b))
vmax = _lanewise("vmax", "``max(a, b)`` lane by lane (LLVM's ``maxnum``: a NaN lane takes the "
                 "other operand).", _llvm_call("maxnum"))
vmin = _lanewise("vmin", "``min(a, b)`` lane by lane (LLVM's ``minnum``: a NaN lane takes the "
                 "other operand).", _llvm_call("minnum"))


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

@intrinsic
def vkeep(typingctx, arr, i, n):
    """``arr[i + l] = 0`` for the lanes ``n ≤ l < lanes`` of the register at ``arr[i]``; lanes
    below ``n`` are kept (a select on a lane-index comparison: no branch, no loop)."""
    if not (_float_array(arr) and isinstance(i, types.Integer) and isinstance(n, types.Integer)):
        return None
    vt = Vec(arr.dtype)

    def codegen(context, builder, sig, args):
        llvt = context.get_value_type(vt)
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        ptr = builder.bitcast(ptr, llvt.as_pointer())
        align = arr.dtype.bitwidth // 8
        v = builder.load(ptr, align=align)
        keep = _lane_mask(builder, vt.lanes, context.cast(builder, args[2], sig.args[2],
                                                          types.int64))
        kept = builder.select(keep, v, ir.Constant(llvt, [0.0] * vt.lanes))
        builder.store(kept, ptr, align=align)
        return context.get_dummy_value()

    return types.none(arr, i, n), codegen


@intrinsic
def vprefetch(typingctx, arr, i):
    """Ask the CPU to bring the cache line of ``arr[i]`` into L1 before it is needed (LLVM's
    ``prefetch`` for a write, kept in every cache level); a hint: it computes nothing, and an
    address past the array is harmless (the line is not read architecturally)."""
    if not (_float_array(arr) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ptr = builder.bitcast(_element_pointer(context, builder, sig.args[0], args[0], args[1]),
                              ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32]),
            "llvm.prefetch.p0i8")
        builder.call(fn, [ptr, ir.Constant(i32, 1), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.none(arr, i), codegen


@intrinsic
def vexp(typingctx, a):
    """``e^x`` in every lane: the steps of :func:`~loopprop.kernels.exp._exp_f32`
    (float32, Cephes' ``expf``) or :func:`~loopprop.kernels.exp._exp` (float64, degree
    13), written as the instructions those functions compile to without reassociation --
    clamp (a NaN passes), ``n = ⌊x·log₂e + ½⌋``, ``r = x − n·ln2_hi − n·ln2_lo`` (two fused
    steps), the polynomial by Horner, ``2^n`` from exponent bits in two halves. The same bits
    as the scalar functions (tested); LLVM vectorizes those only in some loops (rows of varying
    length add remainder loops and checks each time), this is one register per call, always."""
    if not isinstance(a, Vec):
        return None
    single = a.dtype == types.float32
    if single:
        lo_x, hi_x, log2e, ln2_hi, ln2_lo = -104.0, 89.0, ex._LOG2E_F32, ex._LN2_HI_F32, \
            ex._LN2_LO_F32
        poly, bits, bias, shift = ex._EXPF_POLY, 32, 127, 23
    else:
        lo_x, hi_x, log2e, ln2_hi, ln2_lo = -746.0, 710.0, ex._LOG2E, ex._LN2_HI, ex._LN2_LO
        poly, bits, bias, shift = ex._INV_FACT[13::-1], 64, 1023, 52
    width = a.dtype.bitwidth

    def codegen(context, builder, sig, args):
        llvt = args[0].type
        n_l = a.lanes
        ivt = ir.VectorType(ir.IntType(bits), n_l)

        def const(c):
            return ir.Constant(llvt, [float(a.dtype.cast_python_value(c))] * n_l)

        def iconst(c):
            return ir.Constant(ivt, [c] * n_l)

        def call(name, *xs):
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(llvt, [llvt] * len(xs)),
                f"llvm.{name}.v{n_l}f{width}")
            return builder.call(fn, list(xs))

        x = args[0]
        x = builder.select(builder.fcmp_ordered("<", x, const(lo_x)), const(lo_x), x)
        x = builder.select(builder.fcmp_ordered(">", x, const(hi_x)), const(hi_x), x)
        n = call("floor", call("fma", x, const(log2e), const(0.5)))
        minus_n = builder.fneg(n)
        r = call("fma", minus_n, const(ln2_hi), x)
        r = call("fma", minus_n, const(ln2_lo), r)
        p = const(poly[0])
        for c in poly[1:]:
            p = call("fma", p, r, const(c))
        if single:  # e^r = 1 + r + r²·p(r)
            p = builder.fadd(call("fma", p, builder.fmul(r, r), r), const(1.0))
        k = builder.fptosi(n, ivt)
        k1 = builder.ashr(k, iconst(1))
        s1 = builder.bitcast(builder.shl(builder.add(k1, iconst(bias)), iconst(shift)), llvt)
        s2 = builder.bitcast(builder.shl(builder.add(builder.sub(k, k1), iconst(bias)),
                                         iconst(shift)), llvt)
        return builder.fmul(builder.fmul(p, s1), s2)

    return a(a), codegen


@intrinsic
def like(typingctx, arr, x):
    """The number ``x`` converted to ``arr``'s dtype (a float32 kernel's constants stay float32:
    ``np.float32(x)`` would fix the dtype for every caller)."""
    if not (_float_array(arr) and isinstance(x, (types.Float, types.Integer))):
        return None

    def codegen(context, builder, sig, args):
        return context.cast(builder, args[1], sig.args[1], arr.dtype)

    return arr.dtype(arr, x), codegen

def _lane_mask(builder, lanes, n):
    """``<lane < n>`` for every lane: the mask of the first ``n`` lanes (``n`` an i64)."""
    ity = ir.VectorType(ir.IntType(64), lanes)
    one = builder.insert_element(ir.Constant(ity, ir.Undefined), n, ir.Constant(ir.IntType(32), 0))
    zeros = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
    count = builder.shuffle_vector(one, ir.Constant(ity, ir.Undefined), zeros)
    return builder.icmp_signed("<", ir.Constant(ity, list(range(lanes))), count)


@intrinsic
def vloadn(typingctx, arr, i, n):
    """``arr[i : i + n]`` in the first ``n`` lanes, 0 in the others (a masked load: nothing
    past ``i + n`` is read) -- the tail of a loop handled by the same instructions as its
    body, so that every element gets the same bits wherever a thread's range ends."""
    if not (_float_array(arr) and isinstance(i, types.Integer) and isinstance(n, types.Integer)):
        return None
    vt = Vec(arr.dtype)

    def codegen(context, builder, sig, args):
        llvt = context.get_value_type(vt)
        ptr = builder.bitcast(_element_pointer(context, builder, sig.args[0], args[0], args[1]),
                              llvt.as_pointer())
        mask = _lane_mask(builder, vt.lanes, context.cast(builder, args[2], sig.args[2],
                                                          types.int64))
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(llvt, [llvt.as_pointer(), ir.IntType(32),
                                                   mask.type, llvt]),
            f"llvm.masked.load.v{vt.lanes}f{arr.dtype.bitwidth}.p0v{vt.lanes}f{arr.dtype.bitwidth}")
        align = ir.Constant(ir.IntType(32), arr.dtype.bitwidth // 8)
        return builder.call(fn, [ptr, align, mask, ir.Constant(llvt, [0.0] * vt.lanes)])

    return vt(arr, i, n), codegen


@intrinsic
def vstoren(typingctx, arr, i, v, n):
    """``arr[i : i + n] = v[:n]`` (a masked store: nothing past ``i + n`` is written)."""
    if not (_float_array(arr) and isinstance(i, types.Integer) and isinstance(v, Vec)
            and v.dtype == arr.dtype and isinstance(n, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        llvt = args[2].type
        ptr = builder.bitcast(_element_pointer(context, builder, sig.args[0], args[0], args[1]),
                              llvt.as_pointer())
        mask = _lane_mask(builder, v.lanes, context.cast(builder, args[3], sig.args[3],
                                                         types.int64))
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [llvt, llvt.as_pointer(),
                                                            ir.IntType(32), mask.type]),
            f"llvm.masked.store.v{v.lanes}f{v.dtype.bitwidth}.p0v{v.lanes}f{v.dtype.bitwidth}")
        builder.call(fn, [args[2], ptr, ir.Constant(ir.IntType(32), v.dtype.bitwidth // 8), mask])
        return context.get_dummy_value()

    return types.none(arr, i, v, n), codegen



def _literal_count(m) -> int | None:
    """The value of a compile-time power of two ``1 … 32`` (an ``IntegerLiteral``), else None."""
    if isinstance(m, types.IntegerLiteral) and m.literal_value in (1, 2, 4, 8, 16, 32):
        return m.literal_value
    return None


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
    when ``add`` is True) for ``r < lanes``, ``k < m``: ``m`` registers read, one per ``k``,
    interleaved in registers and written contiguously. A constant ``add`` compiles one of the
    two; a run-time one reads the destination and selects (a write-allocating store reads its
    line anyway)."""
    count = _literal_count(m)
    if not (_float_array(dst) and _float_array(src) and dst.dtype == src.dtype
            and count is not None and isinstance(add, types.Boolean)):
        return None
    vt = Vec(src.dtype)
    align = src.dtype.bitwidth // 8
    adding = add.literal_value if isinstance(add, types.BooleanLiteral) else None

    def codegen(context, builder, sig, args):
        dst_a, d0_, src_a, s0_, sstep_, _, add_ = args
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
            if adding is None:  # chosen at run time
                reg = builder.select(add_, builder.fadd(builder.load(ptr, align=align), reg), reg)
            elif adding:
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

    def vprefetch(arr, i):  # noqa: F811
        """A hint to the cache: nothing to do in Python."""

    def vkeep(arr, i, n):  # noqa: F811
        """``arr[i + l] = 0`` for ``n ≤ l < lanes``."""
        L = _lanes(arr.dtype)
        arr[i + max(n, 0):i + L] = 0

    def vsub(a, b):  # noqa: F811
        """``a − b`` lane by lane."""
        return a - b

    def vmul(a, b):  # noqa: F811
        """``a · b`` lane by lane."""
        return a * b

    def vexp(a):  # noqa: F811
        """``e^x`` lane by lane, by the scalar exponential of the lanes' dtype."""
        f = ex._exp_f32 if a.dtype == np.float32 else ex._exp
        return np.array([f(v) for v in a], dtype=a.dtype)

    def like(arr, x):  # noqa: F811
        """``x`` as a number of ``arr``'s dtype."""
        return arr.dtype.type(x)

    def vloadn(arr, i, n):  # noqa: F811
        """``arr[i : i + n]``, zeros after."""
        v = np.zeros(_lanes(arr.dtype), arr.dtype)
        k = max(0, min(n, v.shape[0]))
        v[:k] = arr[i:i + k]
        return v

    def vstoren(arr, i, v, n):  # noqa: F811
        """``arr[i : i + n] = v[:n]``."""
        k = max(0, min(n, v.shape[0]))
        arr[i:i + k] = v[:k]

    def vdiv(a, b):  # noqa: F811
        """``a / b`` lane by lane."""
        with np.errstate(all="ignore"):
            return a / b

    def vmin(a, b):  # noqa: F811
        """``min(a, b)`` lane by lane (a NaN lane takes the other operand)."""
        return np.fmin(a, b)
