"""The lock verbs the allocator kernels use, each named for the scheme it applies to.

    zone_enter / zone_leave        zone scheme: the one zone lock, at every entry point;
                                   nothing in the fine scheme
    fine_lock / fine_unlock /      fine scheme: the inner block, capture and area locks;
    fine_trylock                   nothing in the zone scheme (the zone lock guards it all)
    lock / unlock                  every scheme: locks outside the allocator (page-cache pool)

Every verb tells lockdep (harness.lockdep_record) when it is on and injects
chaos around the lock.  A verb that takes a lock returns False when its
wait was aborted; from then on the thread is marked aborted: it takes and
releases nothing more (so it can never drop a lock another thread holds),
and its kernels return ABORTED at once.  Every verb also feeds the
mutual-exclusion witness (harness.witness): a thread that would wait for a lock
it already holds is reported as recursive locking and does not wait (it is
marked aborted), and a release by a thread that is not the owner is named.
A kernel whose list walk goes round a cycle abandons the run the same way
(`abandon`), once the runner aborts it.
The bare build compiles all of this away but the locking itself (harness.seams).
Also here: which lock row guards what.
"""

from numba import njit

from harness import hierarchy as H
from harness.atomics import futex_wait, load_acquire
from harness.chaos import P_AFTER_UNLOCK, chaos
from harness.layout import (A_ABORTED, CTL_ABORT, F_LOCKDEP, LS_OWNER, LS_STATE, M_AREA0,
                            M_BLOCK0, M_CAP0, M_LIST0, M_POOL0, M_SCHEME, NAREAS, OPEN,
                            PCP_LIST0, PCP_LOCK0, PCP_ORDERS, PHASE_MASK, SCHEME_ZONE, T_AUX, TOP,
                            ctl_row, meta_row, pcp_row)
from harness.isolate import MODE_SHIFT
from harness.lockdep_record import lockdep_forget, lockdep_note, lockdep_note_try
from harness.locks import L_OWNER, lock_acquire, lock_release, lock_try
from harness.outline import out_of_line
from harness.seams import SEAMS, flag_on
from harness.witness import (WK_BLOCK_NOT_HELD, WK_NOT_HELD, WK_NOT_OPEN, WK_RECURSIVE,
                             WK_RELEASE_NOT_OWNER, witness)

OWNER_MASK = (1 << MODE_SHIFT) - 1      # a capture list's LS_OWNER: owner slot | mode | base
ABANDON_NAP_NS = 10_000_000             # an abandoned thread looks for the abort this often


# ---------------------------------------------------------------- which lock row guards what

@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def zone_scheme(z):
    return z[meta_row(z), M_SCHEME] == SCHEME_ZONE


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def zone_lock(z):
    return z[meta_row(z), M_BLOCK0] - 1


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def block_lock(z, pfn):
    """The lock of pfn's order-10 block: guards the page state of every head inside it."""
    return z[meta_row(z), M_BLOCK0] + (pfn >> TOP)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def area_lock(z, order):
    """The lock of free list `order`."""
    return z[meta_row(z), M_AREA0] + order


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def capture_lock(z, lst):
    """The lock of capture list `lst` (11..)."""
    return z[meta_row(z), M_CAP0] + lst - NAREAS


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def pool_lock(z):
    """The workers' page-cache pool lock."""
    return z[meta_row(z), M_POOL0]


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def list_lock(z, lst):
    """The lock that guards list `lst`'s links, head and count: a per-CPU list's pcp lock
    in both schemes; else the zone lock in the zone scheme, the area or capture lock in
    the fine one."""
    first_pcp = z[pcp_row(z), PCP_LIST0]
    if lst >= first_pcp:
        return z[pcp_row(z), PCP_LOCK0] + (lst - first_pcp) // PCP_ORDERS
    if zone_scheme(z):
        return zone_lock(z)
    return area_lock(z, lst) if lst < NAREAS else capture_lock(z, lst)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def assert_list_locked(z, t, me, lst):
    """`lockdep_assert_held` for list `lst`, when lockdep is on: `me` must hold the lock
    that guards it (a witness finding names the list, the lock and its holder).  A
    capture list must also be OPEN: once its owner has CLOSED it, its chain is the
    owner's alone (and an UNUSED row has no chain)."""
    if flag_on(z, F_LOCKDEP):
        _assert_list_locked(z, t, me, lst)


@njit(nogil=True, cache=True, _nrt=False, forceinline=False)
@out_of_line
def _assert_list_locked(z, t, me, lst):
    lk = list_lock(z, lst)
    owner = z[lk, L_OWNER]
    if owner != me + 1:
        witness(z, t, me, WK_NOT_HELD, lk, owner - 1, lst)
    row = z[meta_row(z), M_LIST0] + lst
    if NAREAS <= lst < z[pcp_row(z), PCP_LIST0] and z[row, LS_STATE] & PHASE_MASK != OPEN:
        witness(z, t, me, WK_NOT_OPEN, capture_lock(z, lst), z[row, LS_OWNER] & OWNER_MASK, lst)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def assert_block_locked(z, t, me, pfn):
    """`lockdep_assert_held` for the pages of `pfn`, when lockdep is on: `me` must hold the
    lock of its order-10 block (the zone lock in the zone scheme)."""
    if flag_on(z, F_LOCKDEP):
        _assert_block_locked(z, t, me, pfn)


@njit(nogil=True, cache=True, _nrt=False, forceinline=False)
@out_of_line
def _assert_block_locked(z, t, me, pfn):
    lk = zone_lock(z) if zone_scheme(z) else block_lock(z, pfn)
    owner = z[lk, L_OWNER]
    if owner != me + 1:
        witness(z, t, me, WK_BLOCK_NOT_HELD, lk, owner - 1, pfn)


# ---------------------------------------------------------------- every scheme

@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def aborted(t, me):
    """True once a lock wait of this thread was aborted (the run is being torn down)."""
    return t[me, T_AUX, A_ABORTED] != 0


@njit(nogil=True, cache=True, _nrt=False, forceinline=False)
@out_of_line
def abandon(z, t, me):
    """A list walk went round a cycle (a race corrupted the links): this thread can go no
    further.  It waits, making no progress (so the watchdog names it stalled) and keeping
    its locks (so the list stays as it was found), until the run aborts; then it is
    marked aborted like a thread whose lock wait was aborted, and its caller returns
    ABORTED.  Without this it would spin round the cycle after its run had returned."""
    ctl = ctl_row(z)
    while load_acquire(z, (ctl, CTL_ABORT)) == 0:
        futex_wait(z, (ctl, CTL_ABORT), 0, ABANDON_NAP_NS)
    t[me, T_AUX, A_ABORTED] = 1


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def lock(z, t, me, lk, site):
    """Take lock row `lk` in any scheme; False if the run aborted (now or before)."""
    if aborted(t, me):
        return False
    chaos(z, t, me, site)                   # the point sites start with the lock sites
    if SEAMS and z[lk, L_OWNER] == me + 1:  # only `me` can have written me + 1
        witness(z, t, me, WK_RECURSIVE, lk, me, site)
        t[me, T_AUX, A_ABORTED] = 1
        return False
    if flag_on(z, F_LOCKDEP):
        lockdep_note(z, t, me, lk, site)
    if lock_acquire(z, lk, me, t):
        return True
    if flag_on(z, F_LOCKDEP):
        lockdep_forget(z, t, me, lk)
    t[me, T_AUX, A_ABORTED] = 1
    return False


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def unlock(z, t, me, lk):
    """Release lock row `lk` taken by `lock`; nothing once the thread was aborted."""
    if aborted(t, me):
        return
    if flag_on(z, F_LOCKDEP):
        lockdep_forget(z, t, me, lk)
    owner = z[lk, L_OWNER]
    if SEAMS and owner != me + 1:
        witness(z, t, me, WK_RELEASE_NOT_OWNER, lk, owner - 1, -1)
    lock_release(z, lk)
    chaos(z, t, me, P_AFTER_UNLOCK)


# ---------------------------------------------------------------- zone scheme

@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def zone_enter(z, t, me):
    """Entry point: the zone lock in the zone scheme, nothing in the fine one."""
    return lock(z, t, me, zone_lock(z), H.S_ENTER) if zone_scheme(z) else not aborted(t, me)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def zone_leave(z, t, me):
    if zone_scheme(z):
        unlock(z, t, me, zone_lock(z))


# ---------------------------------------------------------------- fine scheme

@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def fine_lock(z, t, me, lk, site):
    """Take an inner lock (block, capture, area); a no-op in the zone scheme."""
    return True if zone_scheme(z) else lock(z, t, me, lk, site)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def fine_unlock(z, t, me, lk):
    """Release an inner lock taken by fine_lock or fine_trylock."""
    if not zone_scheme(z):
        unlock(z, t, me, lk)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def fine_trylock(z, t, me, lk):
    """Take an inner lock only if free: joins the held stack but adds no lockdep edge."""
    if zone_scheme(z):
        return True
    if aborted(t, me) or not lock_try(z, lk, me, t):
        return False
    if flag_on(z, F_LOCKDEP):
        lockdep_note_try(z, t, me, lk)
    return True
