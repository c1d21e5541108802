"""The bare build: the kernels compiled without their seams (harness.seams), for the bench.

A process started with HARNESS_BARE=1 compiles the bare build, into a cache
directory of its own (harness.jitcache).  `python -m harness bench` re-executes
itself in such a process for its throughput table (`reexec`), so the Numba
variants are measured doing the allocator's work only; `--build full` keeps
the full build, every seam's flag off.  Array indices in the bare build are
C's (`install`): a negative index is not wrapped around to the end, which
spares a compare and a select on every access (Numba wraps signed indices as
Python does; no kernel indexes from the end on purpose, and the full and the
bounds-checked builds keep the wrap).  No stress run starts in a bare process
(harness.config.refuse_bare: the CLI's commands and the runner check).
Importing this module loads nothing else, so the decision costs nothing before
the exec.
"""

import os
import sys

ENV = "HARNESS_BARE"
BENCH_FULL_ONLY = ("--overhead", "--capture-table", "--stamps", "-h", "--help")


def active():
    """True in a process whose kernels are the bare build."""
    return os.environ.get(ENV, "") not in ("", "0")


def install():
    """Compile array indices without the negative-index wrap (in a bare process only)."""
    from numba.core import types
    from numba.np import arrayobj

    def fix_integer_index(context, builder, idxty, idx, size):
        return context.cast(builder, idx, idxty, types.intp)

    arrayobj.fix_integer_index = fix_integer_index


def reexec(argv):
    """Run `bench` (its throughput table) again in a bare process (never returns), unless
    it asks for the full build (--build full) or for a table of stress runs."""
    if active() or argv[:1] != ["bench"] or any(a in BENCH_FULL_ONLY for a in argv):
        return
    if "--build=full" in argv or any(a == "--build" and b == "full"
                                     for a, b in zip(argv, argv[1:])):
        return
    os.execve(sys.executable, [sys.executable, "-m", "harness", *argv],
              dict(os.environ, **{ENV: "1"}))

