"""Delay injection (--chaos): at race windows, with the run's probability, spin or yield a while.

The per-thread RNG and hit count live in the thread's aux row.  The same points are
the scheduling points of the controlled scheduling mode (harness.sched).
"""

from numba import njit

from harness.atomics import cpu_pause, sched_yield
from harness.layout import A_CHAOS_HITS, A_CHAOS_RNG, F_CHAOS, T_AUX, flags_row
from harness.outline import out_of_line
from harness.seams import flag_on
from harness.rng import bounded, step
from harness.sched import (P_AFTER_UNLOCK, P_CACHE_FOUND, P_CACHE_USE, P_COUNT_LATE,  # noqa: F401
                           P_MERGE_CHECK, P_PCP_COUNT_LATE, P_PCP_HEAD, P_PLACE_CHECK,
                           P_PLACE_CHECK_OWN, pct_point, scheduled)


@njit(nogil=True, cache=True, _nrt=False, forceinline=False)
@out_of_line
def _stall(z, t, me):
    x = step(t[me, T_AUX, A_CHAOS_RNG])
    t[me, T_AUX, A_CHAOS_RNG] = x
    if bounded(x, 1 << 20) < z[flags_row(z), F_CHAOS]:
        t[me, T_AUX, A_CHAOS_HITS] += 1
        x = step(x)
        t[me, T_AUX, A_CHAOS_RNG] = x
        if bounded(x, 8) == 0:
            sched_yield()
        else:
            for _ in range(bounded(step(x), 2000)):
                cpu_pause()


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def chaos(z, t, me, site):
    """Maybe stall here.  Called right before a lock, right after an unlock, and between a
    check and the act that depends on it; `site` names the point (harness.sched.POINTS).
    Under --schedule pct or pct-sites, also a scheduling point."""
    if scheduled(z):
        pct_point(z, t, me, site)
    if flag_on(z, F_CHAOS):
        _stall(z, t, me)
