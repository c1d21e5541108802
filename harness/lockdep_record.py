"""Lockdep's bookkeeping inside the kernels: held stacks, first edges with their stamps.

Per thread (its own rows, so race-free): the held-lock stack, the first site
and cycle-counter stamp of each (held class, taken class) edge, the first
sleep in a lock wait while holding a NO_SLEEP class and the first unlock of
a lock not held.  harness.lockdep analyzes these rows afterwards.

A new edge the run's scheme does not declare (the zone table's allowed-edge
mask, from harness.hierarchy) stops the run at once when it stops on
violations, so an inversion is reported when it is first seen, not when it
deadlocks.  A thread whose lock wait was aborted records nothing more: its
held stack is stale, and what it does next is not the allocator's locking.
These are called only when lockdep is on, and are not inlined into the lock verbs,
so with lockdep off a lock site carries one flag test, not their loops.
"""

from numba import njit

from harness.atomics import cycle_counter, store_release
from harness.hierarchy import NCLASSES, NO_SLEEP_MASK
from harness.layout import (A_ABORTED, A_SLEPT_CLASS, A_SLEPT_HOLDING, A_SLEPT_STAMP,
                            A_SLEPT_WAITING, A_UNHELD_STAMP, CTL_STOP, F_STOP_ON_VIOLATION,
                            LD_ALLOWED, L_CLASS, MAX_HELD, T_AUX, T_EDGE0, T_EDGE_STAMP0, T_HELD,
                            T_LOCKDEP_ERR, T_NHELD, T_STATE, ctl_row, flags_row, lockdep_row)
from harness.outline import out_of_line


@njit(nogil=True, cache=True, _nrt=False)
def _first_edge(z, t, me, held, taken, site):
    """Record edge held -> taken (first site and stamp); stop the run if it is undeclared."""
    t[me, T_EDGE_STAMP0 + held, taken] = cycle_counter()
    t[me, T_EDGE0 + held, taken] = site + 1
    allowed = (z[lockdep_row(z), LD_ALLOWED] >> (held * NCLASSES + taken)) & 1
    if allowed == 0 and z[flags_row(z), F_STOP_ON_VIOLATION] != 0:
        store_release(z, (ctl_row(z), CTL_STOP), 1)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def _push(t, me, lk):
    n = t[me, T_STATE, T_NHELD]
    if n < MAX_HELD:
        t[me, T_HELD, n] = lk
    t[me, T_STATE, T_NHELD] = n + 1


@njit(nogil=True, cache=True, _nrt=False, forceinline=False)
@out_of_line
def lockdep_note(z, t, me, lk, site):
    """About to wait for lock `lk`: record class edges held -> lk's class, push lk."""
    if t[me, T_AUX, A_ABORTED] != 0:
        return
    cls = z[lk, L_CLASS]
    for j in range(min(t[me, T_STATE, T_NHELD], MAX_HELD)):
        held = z[t[me, T_HELD, j], L_CLASS]
        if t[me, T_EDGE0 + held, cls] == 0:
            _first_edge(z, t, me, held, cls, site)
    _push(t, me, lk)


@njit(nogil=True, cache=True, _nrt=False, forceinline=False)
@out_of_line
def lockdep_note_try(z, t, me, lk):
    """A trylock succeeded: push lk, but add no edge (a trylock waits for nobody)."""
    if t[me, T_AUX, A_ABORTED] == 0:
        _push(t, me, lk)


@njit(nogil=True, cache=True, _nrt=False)
def _unheld(t, me):
    if t[me, T_STATE, T_LOCKDEP_ERR] == 0:
        t[me, T_AUX, A_UNHELD_STAMP] = cycle_counter()
    t[me, T_STATE, T_LOCKDEP_ERR] += 1


@njit(nogil=True, cache=True, _nrt=False, forceinline=False)
@out_of_line
def lockdep_forget(z, t, me, lk):
    """Pop lk from the held stack (any position); count an unlock of a lock not held."""
    if t[me, T_AUX, A_ABORTED] != 0:
        return
    n = t[me, T_STATE, T_NHELD]
    for j in range(min(n, MAX_HELD) - 1, -1, -1):
        if t[me, T_HELD, j] == lk:
            for k in range(j, min(n, MAX_HELD) - 1):
                t[me, T_HELD, k] = t[me, T_HELD, k + 1]
            t[me, T_STATE, T_NHELD] = n - 1
            return
    _unheld(t, me)


@njit(nogil=True, cache=True, _nrt=False, forceinline=False)
@out_of_line
def note_sleep(z, t, me, row):
    """About to sleep for lock `row`: record it if a NO_SLEEP class is held."""
    if t[me, T_AUX, A_ABORTED] != 0:
        return
    for j in range(min(t[me, T_STATE, T_NHELD], MAX_HELD)):
        held = t[me, T_HELD, j]
        if held == row:                 # lockdep pushed the lock being taken already
            continue
        cls = z[held, L_CLASS]
        if (NO_SLEEP_MASK >> cls) & 1:
            if t[me, T_AUX, A_SLEPT_HOLDING] == 0:
                t[me, T_AUX, A_SLEPT_STAMP] = cycle_counter()
            t[me, T_AUX, A_SLEPT_HOLDING] += 1
            t[me, T_AUX, A_SLEPT_CLASS] = cls
            t[me, T_AUX, A_SLEPT_WAITING] = row
