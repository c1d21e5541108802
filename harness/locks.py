"""Futex-backed mutexes built from CPU atomics, usable from `nogil` Numba code.

A lock is one 64-byte row of an int64 table (one cache line per lock word):

    word     0 free, 1 locked, 2 locked and maybe waiters (Drepper's mutex 2)
    owner    thread slot + 1 of the holder, 0 when free
    acq      acquisitions          \
    cont     contended acquisitions > written only by the holder, so race-free
    wait_ns  time spent waiting    /
    klass    lock class (see harness.hierarchy), fixed at construction
    tryfail  failed trylocks (atomic add: many threads may fail at once)

Waits are abortable: a blocked thread sleeps in futex waits of at most
WAIT_SLICE_NS and gives up (returns False) once the run-wide stop word
`ctl[CTL_STOP]` is set, so a watchdog can end a deadlocked run.  While it
waits, the thread publishes the lock it waits for in `threads[tid, T_WAITING]`.
The futex works on the low 32 bits of `word` (little-endian CPUs only).
"""

import numpy as np
from numba import njit

from harness.atomics import cas, cpu_pause, fetch_add, futex_wait, futex_wake, load_acquire, \
    monotonic_ns, store_release, xchg

L_WORD, L_OWNER, L_ACQ, L_CONT, L_WAIT_NS, L_CLASS, L_TRYFAIL = range(7)
LOCK_FIELDS = 8

CTL_STOP = 0
T_WAITING = 0          # per-thread row: lock index + 1 this thread is blocked on, else 0

SPIN_LIMIT = 100       # pause-spins before sleeping; measured best on 2 cores (bench)
WAIT_SLICE_NS = 2_000_000


def lock_table(nlocks, classes):
    """A zeroed lock table of `nlocks` rows, 64-byte aligned, with each row's class set."""
    raw = np.zeros(nlocks * LOCK_FIELDS + 8, dtype=np.int64)
    skip = (-raw.ctypes.data % 64) // 8
    table = raw[skip:skip + nlocks * LOCK_FIELDS].reshape(nlocks, LOCK_FIELDS)
    table[:, L_CLASS] = classes
    return table


@njit(nogil=True, cache=True, _nrt=False, inline="always")
def lock_try(locks, i, me):
    """Take lock `i` if it is free; never waits.  Returns True on success."""
    if cas(locks, (i, L_WORD), 0, 1) == 0:
        locks[i, L_OWNER] = me + 1
        locks[i, L_ACQ] += 1
        return True
    fetch_add(locks, (i, L_TRYFAIL), 1)
    return False


@njit(nogil=True, cache=True, _nrt=False)
def _lock_slow(locks, i, me, ctl, threads):
    """Contended path: spin briefly, then sleep on the futex until free or stopped."""
    t0 = monotonic_ns()
    for _ in range(SPIN_LIMIT):
        cpu_pause()
        if load_acquire(locks, (i, L_WORD)) == 0 and cas(locks, (i, L_WORD), 0, 1) == 0:
            break
    else:
        threads[me, T_WAITING] = i + 1
        c = xchg(locks, (i, L_WORD), 2)
        while c != 0:
            if load_acquire(ctl, CTL_STOP) != 0:
                threads[me, T_WAITING] = 0
                return False
            futex_wait(locks, (i, L_WORD), 2, WAIT_SLICE_NS)
            c = xchg(locks, (i, L_WORD), 2)
        threads[me, T_WAITING] = 0
    locks[i, L_OWNER] = me + 1
    locks[i, L_ACQ] += 1
    locks[i, L_CONT] += 1
    locks[i, L_WAIT_NS] += monotonic_ns() - t0
    return True


@njit(nogil=True, cache=True, _nrt=False, inline="always")
def lock_acquire(locks, i, me, ctl, threads):
    """Take lock `i` for thread slot `me`; False if the run was stopped while waiting."""
    if cas(locks, (i, L_WORD), 0, 1) == 0:
        locks[i, L_OWNER] = me + 1
        locks[i, L_ACQ] += 1
        return True
    return _lock_slow(locks, i, me, ctl, threads)


@njit(nogil=True, cache=True, _nrt=False, inline="always")
def lock_release(locks, i):
    """Release lock `i` (held by the caller); wakes one sleeper if there may be any."""
    locks[i, L_OWNER] = 0
    if fetch_add(locks, (i, L_WORD), -1) != 1:
        store_release(locks, (i, L_WORD), 0)
        futex_wake(locks, (i, L_WORD), 1)
