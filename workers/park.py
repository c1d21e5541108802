"""The park point: between operations a worker publishes progress, parks while asked, and
learns that the run should end.  The runner parks every worker (CTL_PARK = epoch) to
check invariants at a quiescent point, where no worker holds a lock."""

from numba import njit

from harness.atomics import futex_wait, load_acquire, store_release
from harness.layout import CTL_PARK, CTL_STOP, T_COUNT0, T_HEARTBEAT, T_PARKED, T_STATE, ctl_row
from harness.outline import out_of_line
from workers.counters import C_OPS, C_PARKS, count

ALLOCATOR_CHECK_EVERY = 64      # allocator operations (a few microseconds each) between checks
RECLAIMER_CHECK_EVERY = 1       # a reclaimer operation can free thousands of pages: every one


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def park_if_asked(z, t, me):
    """Quiescent point: while the runner asks (CTL_PARK = epoch), wait here holding no lock."""
    epoch = load_acquire(z, (ctl_row(z), CTL_PARK))
    if epoch != 0:
        _park(z, t, me, epoch)


@njit(nogil=True, cache=True, _nrt=False, forceinline=False)
@out_of_line
def _park(z, t, me, epoch):
    ctl = ctl_row(z)
    count(t, me, C_PARKS, 1)
    store_release(t, (me, T_STATE, T_PARKED), epoch)
    while load_acquire(z, (ctl, CTL_PARK)) == epoch and load_acquire(z, (ctl, CTL_STOP)) == 0:
        futex_wait(z, (ctl, CTL_PARK), epoch, 1_000_000)
    store_release(t, (me, T_STATE, T_PARKED), 0)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def beat(t, me):
    """Publish progress for the watchdog (a thread-private counter: no race)."""
    t[me, T_STATE, T_HEARTBEAT] += 1


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def between_ops(z, t, me, ops, every):
    """Per-operation housekeeping, every `every` (a power of two) operations: publish the op
    count and a heartbeat, park while asked; True when the run should end.  The interval
    must keep a heartbeat well inside the watchdog's stall limit even on an oversubscribed
    machine, so roles with long operations check after each one."""
    if ops & (every - 1) != 0:
        return False
    t[me, T_COUNT0, C_OPS] = ops
    beat(t, me)
    park_if_asked(z, t, me)
    return load_acquire(z, (ctl_row(z), CTL_STOP)) != 0
