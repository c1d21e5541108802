"""CPU atomics and the few OS calls a lock needs, usable inside `nogil` Numba code.

Every atomic works on one element of a NumPy integer array, addressed as
`(array, index)` where index is an int or a tuple of ints.  All orderings are
sequentially consistent except `load_acquire` / `store_release`, which say so.
OS functions (`syscall`, `clock_gettime`, `sched_yield`) are declared by symbol
name inside the generated IR, so `cache=True` keeps working.
"""

from harness import jitcache  # noqa: F401  first: sets Numba's cache directory for every kernel
import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_MACHINE = platform.machine()
if _MACHINE in ("x86_64", "AMD64"):
    SYS_FUTEX, SYS_GETTID = 202, 186
elif _MACHINE in ("aarch64", "arm64"):
    SYS_FUTEX, SYS_GETTID = 98, 178
else:  # pragma: no cover - other CPUs are untested
    raise ImportError(f"unsupported CPU architecture {_MACHINE!r}")

FUTEX_WAIT_PRIVATE = 128
FUTEX_WAKE_PRIVATE = 129
CLOCK_MONOTONIC = 1

_i32 = ir.IntType(32)
_i64 = ir.IntType(64)
_timespec = ir.LiteralStructType([_i64, _i64])


def _element_ptr(context, builder, aryty, ary, idxty, idx):
    """Pointer to `ary[idx]`; `idx` is an integer or a tuple of integers."""
    array = context.make_array(aryty)(context, builder, ary)
    if isinstance(idxty, types.BaseTuple):
        indices = cgutils.unpack_tuple(builder, idx, len(idxty))
        itys = list(idxty)
    else:
        indices, itys = [idx], [idxty]
    indices = [context.cast(builder, i, t, types.intp) for i, t in zip(indices, itys)]
    # checked in the bounds-checked build (harness.boundscheck), like every other index
    return cgutils.get_item_pointer(context, builder, aryty, array, indices, wraparound=False,
                                    boundscheck=context.enable_boundscheck)


def _check(ary, idx, n=None):
    if not isinstance(ary, types.Array) or not isinstance(ary.dtype, types.Integer):
        raise TypeError("atomics need an integer NumPy array")
    ok = isinstance(idx, types.Integer) or (
        isinstance(idx, types.BaseTuple) and all(isinstance(t, types.Integer) for t in idx))
    if not ok:
        raise TypeError("atomics need an integer index or a tuple of them")


def _syscall(builder, *args):
    fnty = ir.FunctionType(_i64, [_i64], var_arg=True)
    fn = cgutils.get_or_insert_function(builder.module, fnty, "syscall")
    return builder.call(fn, list(args))


@intrinsic
def cas(typingctx, ary, idx, expected, new):
    """Compare-and-swap `ary[idx]`: store `new` if it holds `expected`; return the old value."""
    _check(ary, idx)
    dt = ary.dtype

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        exp = context.cast(builder, args[2], sig.args[2], dt)
        val = context.cast(builder, args[3], sig.args[3], dt)
        pair = builder.cmpxchg(ptr, exp, val, "seq_cst", "seq_cst")
        return builder.extract_value(pair, 0)

    return dt(ary, idx, expected, new), codegen


def _rmw(op):
    def impl(typingctx, ary, idx, val):
        _check(ary, idx)
        dt = ary.dtype

        def codegen(context, builder, sig, args):
            ptr = _element_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
            v = context.cast(builder, args[2], sig.args[2], dt)
            return builder.atomic_rmw(op, ptr, v, "seq_cst")

        return dt(ary, idx, val), codegen

    impl.__name__ = f"atomic_{op}"
    return intrinsic(impl)


xchg = _rmw("xchg")
xchg.__doc__ = "Atomically store a value in `ary[idx]`; return the old value."
fetch_add = _rmw("add")
fetch_add.__doc__ = "Atomically add to `ary[idx]`; return the old value."


@intrinsic
def load_acquire(typingctx, ary, idx):
    """Atomic load of `ary[idx]` with acquire ordering (never hoisted out of a loop)."""
    _check(ary, idx)
    dt = ary.dtype

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        return builder.load_atomic(ptr, "acquire", dt.bitwidth // 8)

    return dt(ary, idx), codegen


@intrinsic
def prefetch(typingctx, ary, idx):
    """Ask the CPU to bring `ary[idx]`'s cache line in for a read (a hint: no effect on
    memory or on ordering; a bad address is never dereferenced)."""
    _check(ary, idx)

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        i8p = ir.IntType(8).as_pointer()
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, _i32, _i32, _i32]),
            "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(_i32, 0), ir.Constant(_i32, 3),
                          ir.Constant(_i32, 1)])
        return context.get_dummy_value()

    return types.none(ary, idx), codegen


@intrinsic
def store_release(typingctx, ary, idx, val):
    """Atomic store to `ary[idx]` with release ordering."""
    _check(ary, idx)
    dt = ary.dtype

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        v = context.cast(builder, args[2], sig.args[2], dt)
        builder.store_atomic(v, ptr, "release", dt.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(ary, idx, val), codegen


@intrinsic
def cpu_pause(typingctx):
    """The CPU's spin-wait hint (`pause` on x86-64, `yield` on ARM)."""

    def codegen(context, builder, sig, args):
        # An LLVM intrinsic, not inline asm: Numba's JIT has no assembly parser.
        if SYS_FUTEX == 202:
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(fn, [])
        else:
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [_i32]), "llvm.aarch64.hint")
            builder.call(fn, [ir.Constant(_i32, 1)])
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def futex_wait(typingctx, ary, idx, expected, timeout_ns):
    """Sleep while the low 32 bits of `ary[idx]` equal `expected`, at most `timeout_ns`.

    The word may be an int32 or (little-endian) the low half of an int64.
    Returns the raw syscall result; spurious wake-ups are allowed.
    """
    _check(ary, idx)

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        exp = builder.trunc(context.cast(builder, args[2], sig.args[2], types.int64), _i32)
        ns = context.cast(builder, args[3], sig.args[3], types.int64)
        ts = cgutils.alloca_once(builder, _timespec)
        billion = ir.Constant(_i64, 1_000_000_000)
        builder.store(builder.sdiv(ns, billion), cgutils.gep_inbounds(builder, ts, 0, 0))
        builder.store(builder.srem(ns, billion), cgutils.gep_inbounds(builder, ts, 0, 1))
        return _syscall(builder, ir.Constant(_i64, SYS_FUTEX),
                        builder.ptrtoint(ptr, _i64), ir.Constant(_i32, FUTEX_WAIT_PRIVATE),
                        exp, builder.ptrtoint(ts, _i64), ir.Constant(_i64, 0),
                        ir.Constant(_i32, 0))

    return types.int64(ary, idx, expected, timeout_ns), codegen


@intrinsic
def futex_wake(typingctx, ary, idx, count):
    """Wake up to `count` threads sleeping in `futex_wait` on `ary[idx]`."""
    _check(ary, idx)

    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        n = builder.trunc(context.cast(builder, args[2], sig.args[2], types.int64), _i32)
        return _syscall(builder, ir.Constant(_i64, SYS_FUTEX),
                        builder.ptrtoint(ptr, _i64), ir.Constant(_i32, FUTEX_WAKE_PRIVATE), n,
                        ir.Constant(_i64, 0), ir.Constant(_i64, 0), ir.Constant(_i32, 0))

    return types.int64(ary, idx, count), codegen


@intrinsic
def sched_yield(typingctx):
    """Give up the CPU (sched_yield(2))."""

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_i32, []),
                                            "sched_yield")
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def gettid(typingctx):
    """The kernel thread id of the calling thread."""

    def codegen(context, builder, sig, args):
        return _syscall(builder, ir.Constant(_i64, SYS_GETTID))

    return types.int64(), codegen


@intrinsic
def monotonic_ns(typingctx):
    """CLOCK_MONOTONIC in nanoseconds (vDSO, ~20 ns)."""

    def codegen(context, builder, sig, args):
        return _clock_ns(builder)

    return types.int64(), codegen


@intrinsic
def cycle_counter(typingctx):
    """A cheap monotonic timestamp for flight recorders: the TSC on x86-64 (~7 ns, not ns;
    see harness.clock for the conversion); CLOCK_MONOTONIC ns elsewhere."""

    def codegen(context, builder, sig, args):
        if SYS_FUTEX == 202:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_i64, []),
                                                "llvm.readcyclecounter")
            return builder.call(fn, [])
        return _clock_ns(builder)

    return types.int64(), codegen


def _clock_ns(builder):
    ts = cgutils.alloca_once(builder, _timespec)
    fnty = ir.FunctionType(_i32, [_i32, ts.type])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "clock_gettime")
    builder.call(fn, [ir.Constant(_i32, CLOCK_MONOTONIC), ts])
    sec = builder.load(cgutils.gep_inbounds(builder, ts, 0, 0))
    nsec = builder.load(cgutils.gep_inbounds(builder, ts, 0, 1))
    return builder.add(builder.mul(sec, ir.Constant(_i64, 1_000_000_000)), nsec)
