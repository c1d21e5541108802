"""Controlled scheduling (--schedule pct): PCT over the race-window points, on real threads.

The points are the chaos points (before a lock, after an unlock, between a
check and its act).  At a point only the thread with the highest priority
proceeds; the others wait (yielding) until they are the highest runnable
thread.  Runnable means RUNNING or AT_POINT: a thread blocked in a lock wait
publishes BLOCKED, and a finished one DONE, so nobody waits for a thread
that cannot move (and a park or stop request lets every point pass).

PCT (Burckhardt, Kothari, Musuvathi, Nagarakatte, ASPLOS 2010): each round of
`steps` global points gives the threads fresh random distinct priorities
(all >= depth) and picks depth - 1 change points; the thread that executes
the j-th change point drops to priority depth - 1 - j.  For n threads and
k points a round, a bug of depth d shows with probability at least
1 / (n k^(d-1)) per round; a run is many rounds.

`--schedule pct-sites` keeps the rounds and the priorities but places the
changes by point *site* instead of by global step: change j of round r happens
at the first point of site s_j (uniform over the POINTS) that any thread
reaches in round r (claimed with one CAS on a per-round bitmask, SC_CHANGED).
A site that runs once in a thousand points, such as the window between an
unlocked check of a capture list and its lock, then gets the same chance of a
change as the lock of every free; the bound becomes 1 / (n S^(d-1)) per round
for a bug whose preemptions fall at the first point of given sites in a
round, with S = len(POINTS) sites, instead of 1 / (n k^(d-1)).

A waiting thread takes up a new round's priority as soon as the round changes,
and after a few yields it sleeps in short futex waits, so waiting threads do
not take the CPU from the one that should run.  A point never waits longer
than PATIENCE_NS (a runnable thread that reaches
no point, e.g. spinning on something the others must do): it then proceeds
and counts a timeout, so the mode can slow a run but never hang it.
"""

from numba import njit

from harness import hierarchy as H
from harness.atomics import cas, fetch_add, futex_wait, load_acquire, monotonic_ns, \
    sched_yield, store_release
from harness.layout import (CTL_ABORT, CTL_PARK, CTL_STOP, SC_CHANGED, SC_DEPTH, SC_MODE,
                            SC_SEED, SC_STEP, SC_STEPS, SCHED_OFF, SCHED_PCT_SITES, T_SCHED,
                            TS_CHANGES, TS_POINTS, TS_PRIO, TS_ROUND, TS_STATE, TS_TIMEOUTS,
                            TS_WAITS, ctl_row, sched_row)
from harness.outline import out_of_line
from harness.seams import SEAMS
from harness.rng import step

# The race-window points by site (the `site` of chaos and pct_point): before a lock, one
# site per lock call site (harness.hierarchy.SITES, same numbers), then the others.
POINTS = tuple(f"before the lock at {s}" for s in H.SITES) + (
    "after an unlock",
    "merge_and_place: between a buddy's state check and the act",
    "merge_and_place: between the unlocked check of another thread's capture list and its"
    " lock (fault seam)",
    "merge_and_place: between the unlocked check of the freeing thread's own capture list and"
    " its lock (fault seam)",
    "merge_and_place: between reading an area's count and writing it back (fault seam)",
    "pcp_alloc: between reading the list head and taking it",
    "pcp_free: between reading the count and writing it back (fault seam)",
    "pagecache lookup: found, not yet referenced",
    "pagecache lookup: the reader uses the page",
)
(P_AFTER_UNLOCK, P_MERGE_CHECK, P_PLACE_CHECK, P_PLACE_CHECK_OWN, P_COUNT_LATE, P_PCP_HEAD,
 P_PCP_COUNT_LATE, P_CACHE_FOUND, P_CACHE_USE) = range(len(H.SITES), len(POINTS))
N_POINTS = len(POINTS)

IDLE, RUNNING, AT_POINT, BLOCKED, DONE = 0, 1, 2, 3, 4
PATIENCE_NS = 200_000_000
YIELDS = 64                     # yields before a waiting thread sleeps in short futex waits
NAP_NS = 50_000


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def scheduled(z):
    return SEAMS and z[sched_row(z), SC_MODE] != SCHED_OFF


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def sched_publish(z, t, me, state):
    """Publish this thread's scheduling state (BLOCKED around a lock wait, ...)."""
    if scheduled(z):
        store_release(t, (me, T_SCHED, TS_STATE), state)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def _mix(seed, rnd, j):
    x = (seed * 0x9E3779B97F4A7C15 + rnd * 0xBF58476D1CE4E5B9 + j * 0x94D049BB133111EB) | 1
    return step(step(step(x))) & 0x7FFFFFFFFFFFFFFF


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def base_priority(seed, rnd, me, depth):
    """Thread `me`'s priority in round `rnd`: random, distinct (low byte), >= depth."""
    return depth + (((_mix(seed, rnd, 1000 + me) >> 20) & 0xFFFFFFFF) << 8 | (me & 0xFF))


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def change_point(seed, rnd, j, steps):
    """The point index (0..steps-1) of round `rnd` at which change j happens."""
    return (_mix(seed, rnd, j) >> 11) % steps


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def change_site(seed, rnd, j):
    """pct-sites: the point site (0..N_POINTS-1) at whose first point change j of round
    `rnd` happens."""
    return (_mix(seed, rnd, 500 + j) >> 13) % N_POINTS


@njit(nogil=True, cache=True, _nrt=False)
def _claim_change(z, s, rnd, j):
    """pct-sites: True for the one caller that takes change j of round `rnd`.  SC_CHANGED
    holds (round << 16) | the changes taken in it."""
    while True:
        old = load_acquire(z, (s, SC_CHANGED))
        taken = old & 0xFFFF if old >> 16 == rnd else 0
        if old >> 16 > rnd or taken & (1 << j):
            return False
        if cas(z, (s, SC_CHANGED), old, (rnd << 16) | taken | (1 << j)) == old:
            return True


@njit(nogil=True, cache=True, _nrt=False, forceinline=False)
@out_of_line
def pct_point(z, t, me, site):
    """One scheduling point at `site` (POINTS): take a global step, apply a change point,
    wait to be highest."""
    s = sched_row(z)
    steps, depth, seed = z[s, SC_STEPS], z[s, SC_DEPTH], z[s, SC_SEED]
    g = fetch_add(z, (s, SC_STEP), 1)
    rnd, i = g // steps, g % steps
    if rnd != t[me, T_SCHED, TS_ROUND] or t[me, T_SCHED, TS_PRIO] == 0:
        t[me, T_SCHED, TS_ROUND] = rnd
        store_release(t, (me, T_SCHED, TS_PRIO), base_priority(seed, rnd, me, depth))
    by_site = z[s, SC_MODE] == SCHED_PCT_SITES
    for j in range(depth - 1):
        if by_site:
            hit = change_site(seed, rnd, j) == site and _claim_change(z, s, rnd, j)
        else:
            hit = change_point(seed, rnd, j, steps) == i
        if hit:
            store_release(t, (me, T_SCHED, TS_PRIO), depth - 1 - j)
            t[me, T_SCHED, TS_CHANGES] += 1
    t[me, T_SCHED, TS_POINTS] += 1
    store_release(t, (me, T_SCHED, TS_STATE), AT_POINT)
    mine = t[me, T_SCHED, TS_PRIO]
    ctl = ctl_row(z)
    t0 = 0
    spins = 0
    while True:
        rnd_now = load_acquire(z, (s, SC_STEP)) // steps
        if rnd_now != t[me, T_SCHED, TS_ROUND]:         # a new round: a new priority
            t[me, T_SCHED, TS_ROUND] = rnd_now
            mine = base_priority(seed, rnd_now, me, depth)
            store_release(t, (me, T_SCHED, TS_PRIO), mine)
        highest = True
        for o in range(t.shape[0]):
            if o != me:
                st = load_acquire(t, (o, T_SCHED, TS_STATE))
                if (st == RUNNING or st == AT_POINT) and \
                        load_acquire(t, (o, T_SCHED, TS_PRIO)) > mine:
                    highest = False
                    break
        if highest:
            break
        if load_acquire(z, (ctl, CTL_STOP)) != 0 or load_acquire(z, (ctl, CTL_PARK)) != 0 \
                or load_acquire(z, (ctl, CTL_ABORT)) != 0:
            break
        if t0 == 0:
            t0 = monotonic_ns()
            t[me, T_SCHED, TS_WAITS] += 1
        elif monotonic_ns() - t0 > PATIENCE_NS:
            t[me, T_SCHED, TS_TIMEOUTS] += 1
            break
        spins += 1
        if spins < YIELDS:
            sched_yield()
        else:
            futex_wait(t, (me, T_SCHED, TS_STATE), AT_POINT, NAP_NS)
    store_release(t, (me, T_SCHED, TS_STATE), RUNNING)
