"""Array views that borrow memory without holding a reference to it.

Numba counts references to every array: a slice or a reshape makes a new array that holds one,
and creating and dropping it costs an atomic increment and decrement of the buffer's count
(``NRT_incref``/``NRT_decref``). Inside a loop over batches or tiles that adds up: the small
training epoch spent 11–13 % of its samples there, about 320 atomic updates per batch, and the
packed micro-kernel took a flat view of C for every 6 × 16 tile.

The views made here have no owner (their meminfo is NULL, so Numba's reference counting skips
them). They are safe only while the array they look into outlives them: use them for views
that live inside one compiled call on arrays its caller holds, and never return one to Python.
Never borrow a view of an array the function allocates itself: Numba frees that array after its
last *named* use, which may be the line that borrowed it (a per-thread workspace borrowed this
way had its memory handed to the next allocation: a double free).
"""

from __future__ import annotations

import numba
from numba import types
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array


@intrinsic
def borrowed_matrix(typingctx, buf, off, rows, cols):
    """``buf[off : off + rows·cols]`` as a C-ordered ``(rows, cols)`` matrix, without a
    reference (``buf`` is a 1-D C-contiguous array)."""
    if not (isinstance(buf, types.Array) and buf.ndim == 1 and buf.layout == "C"):
        return None
    matrix = types.Array(buf.dtype, 2, "C")

    def codegen(context, builder, sig, args):
        src = make_array(sig.args[0])(context, builder, args[0])
        dst = make_array(matrix)(context, builder)
        off_, rows_, cols_ = (context.cast(builder, v, t, types.intp)
                              for v, t in zip(args[1:], sig.args[1:]))
        itemsize = src.itemsize
        populate_array(dst, data=builder.gep(src.data, [off_]), shape=[rows_, cols_],
                       strides=[builder.mul(cols_, itemsize), itemsize], itemsize=itemsize,
                       meminfo=None)
        return dst._getvalue()

    return matrix(buf, off, rows, cols), codegen


@intrinsic
def borrowed_flat(typingctx, arr):
    """A C-contiguous array of any shape as one flat vector, without a reference (what
    ``arr.reshape(-1)`` gives, minus the reference count)."""
    if not (isinstance(arr, types.Array) and arr.layout == "C"):
        return None
    flat = types.Array(arr.dtype, 1, "C")

    def codegen(context, builder, sig, args):
        src = make_array(sig.args[0])(context, builder, args[0])
        dst = make_array(flat)(context, builder)
        size = context.get_constant(types.intp, 1)
        for extent in (builder.extract_value(src.shape, i) for i in range(arr.ndim)):
            size = builder.mul(size, extent)
        itemsize = src.itemsize
        populate_array(dst, data=src.data, shape=[size], strides=[itemsize], itemsize=itemsize,
                       meminfo=None)
        return dst._getvalue()

    return flat(arr), codegen


@intrinsic
def borrowed_image(typingctx, buf, off, d0, d1, d2, d3):
    """``buf[off : off + d0·d1·d2·d3]`` as a C-ordered ``(d0, d1, d2, d3)`` array (an image
    batch ``(C, H, W, m)``), without a reference (``buf`` is a 1-D C-contiguous array)."""
    if not (isinstance(buf, types.Array) and buf.ndim == 1 and buf.layout == "C"):
        return None
    image = types.Array(buf.dtype, 4, "C")

    def codegen(context, builder, sig, args):
        src = make_array(sig.args[0])(context, builder, args[0])
        dst = make_array(image)(context, builder)
        off_, *dims = (context.cast(builder, v, t, types.intp)
                       for v, t in zip(args[1:], sig.args[1:]))
        itemsize = src.itemsize
        strides = [itemsize]
        for extent in reversed(dims[1:]):
            strides.insert(0, builder.mul(strides[0], extent))
        populate_array(dst, data=builder.gep(src.data, [off_]), shape=dims, strides=strides,
                       itemsize=itemsize, meminfo=None)
        return dst._getvalue()

    return image(buf, off, d0, d1, d2, d3), codegen


if numba.config.DISABLE_JIT:
    # NUMBA_DISABLE_JIT=1 (debugging, coverage): intrinsics cannot run as Python, so the two
    # views become the ordinary NumPy views they stand for.

    def borrowed_matrix(buf, off, rows, cols):  # noqa: F811 - the pure-Python twin
        """``buf[off : off + rows·cols]`` as a C-ordered ``(rows, cols)`` view."""
        return buf[off:off + rows * cols].reshape(rows, cols)

    def borrowed_flat(arr):  # noqa: F811 - the pure-Python twin
        """A C-contiguous array as one flat view."""
        return arr.reshape(-1)

    def borrowed_image(buf, off, d0, d1, d2, d3):  # noqa: F811 - the pure-Python twin
        """``buf[off : off + d0·d1·d2·d3]`` as a C-ordered 4-D view."""
        return buf[off:off + d0 * d1 * d2 * d3].reshape(d0, d1, d2, d3)
