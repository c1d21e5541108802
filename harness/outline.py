"""`out_of_line`: a kernel LLVM never inlines, for the rare paths of the hot kernels.

A seam's slow side (the lockdep recorder, the witness, a chaos stall, a PCT
point, the flight recorder's append, a contended lock wait, a detector's
report) sits behind a flag test, so that the path that runs with the feature
off pays the test and a branch over one call.  That holds only if the callee
stays a call.  Two things inlined it at every site instead:

- Numba compiles a callee with its caller's `forceinline` unless the callee
  sets the option itself, so everything called from a `forceinline` helper (the
  lock verbs, `chaos`, `trace`, the detectors' hooks) was force-inlined too;
- LLVM's own heuristics inline small callees wherever they are called.

So an out-of-line kernel is declared `@njit(..., forceinline=False)` over
`@out_of_line`, which gives its definition LLVM's `noinline` attribute.  The
callee is optimized as before; only where its code lives changes.  (Before,
`zone.alloc_block` was 18,337 machine instructions, now 4,163, and a cold
compile of every kernel took 432 s, now 98 s; see the README, Start-up.)
"""

from numba.core import lowering

_MARK = "_harness_out_of_line"


def out_of_line(fn):
    """Mark a kernel's Python function as never inlined (put it below `@njit(...,
    forceinline=False)`)."""
    setattr(fn, _MARK, True)
    return fn


def install():
    """Make Numba's lowering add `noinline` to the definition of every marked kernel."""
    setup = lowering.BaseLower.setup_function
    if getattr(setup, _MARK, False):
        return

    def setup_function(self, fndesc):
        setup(self, fndesc)
        if getattr(self.func_ir.func_id.func, _MARK, False):
            if "alwaysinline" in self.function.attributes:
                raise TypeError(f"{fndesc.qualname} is @out_of_line but inherited forceinline "
                                "from a caller: declare it @njit(..., forceinline=False)")
            self.function.attributes.add("noinline")

    setattr(setup_function, _MARK, True)
    lowering.BaseLower.setup_function = setup_function


install()
