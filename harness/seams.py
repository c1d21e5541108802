"""The seams of the kernels: what compiles away in the bare build (harness.bare).

A seam is code that is not the allocator's work: seeded faults, chaos delays and
scheduling points, the flight recorder, lockdep and its assertions, the
mutual-exclusion witness, the ownership and poison detectors.  In the full
build each seam tests its run-time flag (`flag_on`), so one compiled build
serves every run.  In a bare process SEAMS is a compile-time False: every seam
and its flag test fold away, and the kernels do the allocator's work only, as
a kernel configured without lockdep, KASAN and fault injection does.  No stress
run starts in a bare process (harness.config.refuse_bare), so none silently loses a
detector.
"""

from numba import njit

from harness.bare import active
from harness.layout import flags_row

SEAMS = not active()    # read once, at import: Numba freezes it into every kernel


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def flag_on(z, f):
    """Run flag `f` (layout.F_*) is set; always False in the bare build."""
    return SEAMS and z[flags_row(z), f] != 0

