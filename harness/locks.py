"""Futex-backed mutexes built from CPU atomics, usable from `nogil` Numba code.

A lock is one 64-byte row of the zone table (one cache line per lock word),
with the fields of harness.layout.LOCK_FIELDS:

    word     0 free, 1 locked, 2 locked and maybe waiters (Drepper's mutex 2)
    owner    thread slot + 1 of the holder, 0 when free
    acq      acquisitions          \
    cont     contended acquisitions > written only by the holder, so race-free
    wait_ns  time spent waiting    /
    class    lock class (see harness.hierarchy), fixed at construction
    tryfail  failed trylocks (atomic add: many threads may fail at once)

Waits sleep until woken: an unlock that forgets the wake leaves its sleeper
asleep on a free lock, a hang the watchdog names ("held by nobody: lost
wakeup") instead of a few milliseconds nobody notices.  Waits are still
abortable: a blocked thread gives up (returns False) once the run-wide abort
word is set, and whoever sets it wakes every lock word (`wake_locks`), again
until the waiters are gone, so a watchdog can end a deadlocked run.  (After an abort the zone is
not trusted: the interrupted operation may be half done.)  While it waits, the thread
publishes the row it waits for in its thread row (`T_WAITING`), which the
watchdog reads to build the wait-for graph.  The futex works on the low
32 bits of `word` (little-endian CPUs only).
"""

from numba import njit

from harness.atomics import cas, cpu_pause, fetch_add, futex_wait, futex_wake, load_acquire, \
    monotonic_ns, store_release, xchg
from harness import faults as F
from harness.faults import fault
from harness.layout import (CTL_ABORT, F_LOCKDEP, L_ACQ, L_CLASS, L_CONT, L_OWNER, L_TRYFAIL,
                            L_WAIT_NS, L_WORD, T_STATE, T_WAITING, ctl_row)
from harness.seams import SEAMS, flag_on
from harness.lockdep_record import note_sleep
from harness.outline import out_of_line
from harness.sched import BLOCKED, RUNNING, sched_publish
from harness.witness import WK_EXCLUSION_LOST, witness

__all__ = ["L_WORD", "L_OWNER", "L_ACQ", "L_CONT", "L_WAIT_NS", "L_CLASS", "L_TRYFAIL",
           "lock_try", "lock_acquire", "lock_release", "wake_all", "wake_locks"]

SPIN_LIMIT = 100       # pause-spins before sleeping (bench: more spins only burn the other core)
WAIT_NS = 3600 * 1_000_000_000      # a futex wait ends by a wake; this bound is only a backstop


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def _took(z, t, row, me):
    """The lock at `row` was just taken by `me`: record the owner, count it (holder-only writes).
    The previous holder cleared the owner before it released the word: if it is still set,
    two threads hold the lock (the witness names both)."""
    old = z[row, L_OWNER]
    if SEAMS and old != 0:
        witness(z, t, me, WK_EXCLUSION_LOST, row, old - 1, -1)
    z[row, L_OWNER] = me + 1
    z[row, L_ACQ] += 1


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def lock_try(z, row, me, t):
    """Take the lock at `row` if it is free; never waits.  Returns True on success."""
    if cas(z, (row, L_WORD), 0, 1) == 0:
        _took(z, t, row, me)
        return True
    fetch_add(z, (row, L_TRYFAIL), 1)
    return False


@njit(nogil=True, cache=True, _nrt=False, forceinline=False)
@out_of_line
def _lock_slow(z, row, me, t):
    """Contended path: spin briefly, then sleep on the futex until free or stopped."""
    t0 = monotonic_ns()
    for _ in range(SPIN_LIMIT):
        cpu_pause()
        if load_acquire(z, (row, L_WORD)) == 0 and cas(z, (row, L_WORD), 0, 1) == 0:
            break
    else:
        t[me, T_STATE, T_WAITING] = row + 1
        if flag_on(z, F_LOCKDEP):
            note_sleep(z, t, me, row)
        sched_publish(z, t, me, BLOCKED)
        stop = ctl_row(z)
        c = xchg(z, (row, L_WORD), 2)
        while c != 0:
            if load_acquire(z, (stop, CTL_ABORT)) != 0:
                t[me, T_STATE, T_WAITING] = 0
                sched_publish(z, t, me, RUNNING)
                return False
            futex_wait(z, (row, L_WORD), 2, WAIT_NS)
            c = xchg(z, (row, L_WORD), 2)
        t[me, T_STATE, T_WAITING] = 0
        sched_publish(z, t, me, RUNNING)
    _took(z, t, row, me)
    z[row, L_CONT] += 1
    z[row, L_WAIT_NS] += monotonic_ns() - t0
    return True


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def lock_acquire(z, row, me, t):
    """Take the lock at `row` for thread slot `me`; False if the run stopped while waiting."""
    if cas(z, (row, L_WORD), 0, 1) == 0:
        _took(z, t, row, me)
        return True
    return _lock_slow(z, row, me, t)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def lock_release(z, row):
    """Release the lock at `row` (held by the caller); wakes one sleeper if there may be any."""
    z[row, L_OWNER] = 0
    if fetch_add(z, (row, L_WORD), -1) != 1:
        store_release(z, (row, L_WORD), 0)
        skip_wake = fault(z, F.FAULT_UNLOCK_NO_WAKE)
        if not skip_wake:
            futex_wake(z, (row, L_WORD), 1)


@njit(nogil=True, cache=True, _nrt=False)
def wake_all(z, row, col):
    """Wake every futex waiter on word (row, col): the runner's control words."""
    futex_wake(z, (row, col), 1 << 30)


@njit(nogil=True, cache=True, _nrt=False)
def wake_locks(z, first, end):
    """Wake every waiter on the lock words of rows first..end-1 (after setting CTL_ABORT)."""
    for row in range(first, end):
        futex_wake(z, (row, L_WORD), 1 << 30)
