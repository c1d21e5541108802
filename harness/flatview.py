"""`flat_view(a)`: a 2-D C-contiguous array seen as one flat row, inside the kernels.

Numba's `a.reshape(-1)` calls a helper in its runtime library to work out that no copy
is needed, about 10 ns a call here: as much as the poison detector's whole pass over a
128-page block.  A contiguous table needs no such work: the view has the same data,
rows * columns elements and one stride, built inline.
"""

from harness import jitcache  # noqa: F401  first: sets Numba's cache directory for every kernel

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def flat_view(typingctx, arr):
    """The 1-D C-contiguous view of 2-D C-contiguous `arr` (no copy, no call)."""
    if not isinstance(arr, types.Array) or arr.ndim != 2 or arr.layout != "C":
        return None
    flat = arr.copy(ndim=1, layout="C")

    def codegen(context, builder, sig, args):
        src = context.make_array(sig.args[0])(context, builder, args[0])
        dst = context.make_array(sig.return_type)(context, builder)
        rows, cols = cgutils.unpack_tuple(builder, src.shape, 2)
        context.populate_array(dst, data=src.data, shape=[builder.mul(rows, cols)],
                               strides=[src.itemsize], itemsize=src.itemsize,
                               meminfo=src.meminfo, parent=src.parent)
        return dst._getvalue()

    return flat(arr), codegen
