"""The buddy allocator: zone state as arrays, every operation a `nogil` kernel.

Layout (harness.layout).  Zone-table row `pfn` is that page's struct page.  A
block of order O is 2**O pages, naturally aligned; only its head page carries
state, order and list links, the others are TAIL.  The buddy of block B at
order O is B ^ (1 << O): #8's order-1 buddy is #10, #8's order-3 buddy is #0.
Two buddies of equal order that are both FREE (or captured) merge into one
block of order O + 1 at B & buddy; all merges stay inside one order-10 block.

Lists.  Lists 0..10 are the free lists (areas) of each order; lists 11.. are
capture lists; each has one row of the zone table (`lrow`).  Lists are doubly linked through the heads' NEXT/PREV
and LIFO: blocks are pushed at, and allocation pops, the head.

Locking (see harness.hierarchy).  Fine scheme: a head's STATE/ORDER/LIST/OWNER
are guarded by the lock of its order-10 block; a list's links, head and count
by that list's lock (area or capture); a capture list's STATE by its capture
lock.  Zone scheme: one zone lock, taken at each entry point, guards it all;
the inner lock calls then do nothing, so both schemes run the same code.
A capture list that is CLOSED (being finished) is no merge target: its
blocks belong to the finishing thread until it has carved and freed them.
A list's STATE also counts its uses (layout.GENERATION): a free that met a
captured buddy places its merged block on that list only if it is still the
same use of the row, never on a list reopened in the meantime.
"""

from numba import njit

from harness import faults as F
from harness import hierarchy as H
from harness.atomics import cas, cpu_pause, cycle_counter, sched_yield, store_release
from harness.layout import (ALLOC, A_ABORTED, A_CHAOS_HITS, A_CHAOS_RNG, CAPTURED, CLOSED, FREE,
                            F_CHAOS, F_FAULT, F_LOCKDEP, F_TRACE, GENERATION, LS_COUNT, LS_HEAD,
                            LS_MERGED, LS_OTHER, LS_OWN, LS_OWNER, LS_STATE, LS_WANTED, MAX_HELD,
                            M_AREA0, M_BLOCK0, M_CAP0, M_LIST0, M_NCAP, M_SCHEME, NAREAS, OPEN,
                            PG_LIST, PG_NEXT, PG_ORDER, PG_OWNER, PG_PREV, PG_STATE, PHASE_MASK,
                            RING, SCHEME_ZONE, TAIL, TOP, T_AUX, T_EDGE0, T_HELD, T_LOCKDEP_ERR,
                            T_NHELD, T_RING0, T_RING_POS, T_STATE, UNUSED, flags_row, meta_row)
from harness.locks import L_CLASS, lock_acquire, lock_release, lock_try
from harness.rng import bounded, step

COSTLY_ORDER = 3            # PAGE_ALLOC_COSTLY_ORDER: capture only for orders above it

OP_ALLOC, OP_FREE, OP_CAPFREE, OP_CAPSTART, OP_CAPFINISH, OP_CAPTURED = 1, 2, 3, 4, 5, 6
OP_NAMES = {OP_ALLOC: "alloc", OP_FREE: "free", OP_CAPFREE: "free-capture",
            OP_CAPSTART: "capture_start", OP_CAPFINISH: "capture_finish",
            OP_CAPTURED: "captured-other"}

NONE, ABORTED, EINVAL = -1, -2, -3


# ---------------------------------------------------------------- locking layer

@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def lockdep_note(z, t, me, lk, site):
    """Record class edges held -> lk's class (first site wins) and push lk on the held stack."""
    cls = z[lk, L_CLASS]
    n = t[me, T_STATE, T_NHELD]
    for j in range(min(n, MAX_HELD)):
        held = z[t[me, T_HELD, j], L_CLASS]
        if t[me, T_EDGE0 + held, cls] == 0:
            t[me, T_EDGE0 + held, cls] = site + 1
    if n < MAX_HELD:
        t[me, T_HELD, n] = lk
    t[me, T_STATE, T_NHELD] = n + 1


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def lockdep_forget(z, t, me, lk):
    """Pop lk from the held stack (any position); count an unlock of a lock not held."""
    n = t[me, T_STATE, T_NHELD]
    for j in range(min(n, MAX_HELD) - 1, -1, -1):
        if t[me, T_HELD, j] == lk:
            for k in range(j, min(n, MAX_HELD) - 1):
                t[me, T_HELD, k] = t[me, T_HELD, k + 1]
            t[me, T_STATE, T_NHELD] = n - 1
            return
    t[me, T_STATE, T_LOCKDEP_ERR] += 1


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def fault(z, f):
    """True when seeded fault `f` (harness.faults) is switched on for this run."""
    return z[flags_row(z), F_FAULT] == f


@njit(nogil=True, cache=True, _nrt=False)
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
def chaos(z, t, me):
    """Delay injection (--chaos): with the run's probability, spin or yield a random while.

    Called at race windows: right before a lock, right after an unlock, and
    between a check and the act that depends on it.
    """
    if z[flags_row(z), F_CHAOS] != 0:
        _stall(z, t, me)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def acquire(z, t, me, lk, site):
    """Take lock row `lk`, telling lockdep when it is on; False if the run stopped."""
    chaos(z, t, me)
    if z[flags_row(z), F_LOCKDEP] != 0:
        lockdep_note(z, t, me, lk, site)
    if lock_acquire(z, lk, me, t):
        return True
    if z[flags_row(z), F_LOCKDEP] != 0:
        lockdep_forget(z, t, me, lk)
    # Aborted: the caller may run on unlocked (the zone is no longer trusted), but from now
    # on this thread releases nothing, so it can never drop a lock another thread holds.
    t[me, T_AUX, A_ABORTED] = 1
    return False


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def release(z, t, me, lk):
    if t[me, T_AUX, A_ABORTED] != 0:
        return
    if z[flags_row(z), F_LOCKDEP] != 0:
        lockdep_forget(z, t, me, lk)
    lock_release(z, lk)
    chaos(z, t, me)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def zone_scheme(z):
    return z[meta_row(z), M_SCHEME] == SCHEME_ZONE


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def take(z, t, me, lk, site):
    """Take a fine-scheme lock (block, capture, area); a no-op in the zone scheme."""
    return True if zone_scheme(z) else acquire(z, t, me, lk, site)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def drop(z, t, me, lk):
    """Release a lock taken by take/trytake."""
    if not zone_scheme(z):
        release(z, t, me, lk)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def trytake(z, t, me, lk):
    """Trylock: joins the held stack but adds no dependency edge (it waits for nobody)."""
    if zone_scheme(z):
        return True
    if not lock_try(z, lk, me):
        return False
    if z[flags_row(z), F_LOCKDEP] != 0:
        n = t[me, T_STATE, T_NHELD]
        if n < MAX_HELD:
            t[me, T_HELD, n] = lk
        t[me, T_STATE, T_NHELD] = n + 1
    return True


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def zone_lock(z):
    return z[meta_row(z), M_BLOCK0] - 1


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def enter(z, t, me):
    """Entry-point lock: the zone lock in the zone scheme, nothing in the fine one."""
    return acquire(z, t, me, zone_lock(z), H.S_ENTER) if zone_scheme(z) else True


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def leave(z, t, me):
    if zone_scheme(z):
        release(z, t, me, zone_lock(z))


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def block_lock(z, pfn):
    return z[meta_row(z), M_BLOCK0] + (pfn >> TOP)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def area_lock(z, order):
    return z[meta_row(z), M_AREA0] + order


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def capture_lock(z, lst):
    return z[meta_row(z), M_CAP0] + lst - NAREAS


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def lrow(z, lst):
    """Zone-table row of list `lst` (0..10 free lists, 11.. capture lists)."""
    return z[meta_row(z), M_LIST0] + lst


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def list_phase(z, lst):
    """UNUSED, OPEN or CLOSED: the phase bits of capture list `lst`'s STATE."""
    return z[lrow(z, lst), LS_STATE] & PHASE_MASK


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def trace(z, t, me, op, pfn, order):
    """Append (op, pfn, order, cycle counter) to this thread's flight-recorder ring."""
    if z[flags_row(z), F_TRACE] != 0:
        pos = t[me, T_STATE, T_RING_POS]
        slot = pos % RING
        row, col = T_RING0 + (slot >> 1), (slot & 1) * 4
        t[me, row, col] = op
        t[me, row, col + 1] = pfn
        t[me, row, col + 2] = order
        t[me, row, col + 3] = cycle_counter()
        t[me, T_STATE, T_RING_POS] = pos + 1


# ---------------------------------------------------------------- list primitives
# Caller holds the list's lock and the block lock of `pfn`.

@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def push_head(z, lst, pfn):
    row = lrow(z, lst)
    old = z[row, LS_HEAD]
    z[pfn, PG_NEXT] = old
    z[pfn, PG_PREV] = -1
    if old >= 0:
        z[old, PG_PREV] = pfn
    z[row, LS_HEAD] = pfn
    z[row, LS_COUNT] += 1
    z[pfn, PG_LIST] = lst


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def unlink(z, lst, pfn):
    nxt, prv = z[pfn, PG_NEXT], z[pfn, PG_PREV]
    row = lrow(z, lst)
    if prv >= 0:
        z[prv, PG_NEXT] = nxt
    else:
        z[row, LS_HEAD] = nxt
    if nxt >= 0:
        z[nxt, PG_PREV] = prv
    z[row, LS_COUNT] -= 1
    z[pfn, PG_LIST] = -1
    z[pfn, PG_NEXT] = -1
    z[pfn, PG_PREV] = -1


# ---------------------------------------------------------------- allocator kernels

@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def expand(z, t, me, pfn, high, low):
    """Split block `pfn` of order `high` down to `low`; upper halves go to the free lists.

    Caller holds pfn's block lock (all halves lie in that order-10 block).
    """
    while high > low:
        high -= 1
        half = pfn + (1 << high)
        z[half, PG_STATE] = FREE
        z[half, PG_ORDER] = high
        lk = area_lock(z, high)
        take(z, t, me, lk, H.S_EXPAND_AREA)
        push_head(z, high, half)
        drop(z, t, me, lk)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def merge_and_place(z, t, me, pfn, order, target, use):
    """`__free_one_page` / `__capture_one_page`: coalesce `pfn` and put it on a list.

    `target` < 0 is normal mode: merge FREE buddies; a CAPTURED buddy switches to
    capture mode on that buddy's list.  In capture mode a FREE or CAPTURED buddy
    (on any open list) merges and the result goes to the head of `target`, if
    `target` is still in `use` (the STATE word it had when it was chosen);
    otherwise to the free list.  Caller holds pfn's block lock; pfn's head is
    TAIL (owned, on no list).
    Returns the pages this free added to a capture list it did not start on.
    """
    pages0 = 1 << order
    switched = -1
    while order < TOP:
        buddy = pfn ^ (1 << order)
        st = z[buddy, PG_STATE]
        if st != FREE and st != CAPTURED:
            break
        if z[buddy, PG_ORDER] != order and not fault(z, F.FAULT_STALE_BUDDY_ORDER):
            break
        if st == CAPTURED and target < 0 and fault(z, F.FAULT_IGNORE_CAPTURED_BUDDY):
            break
        chaos(z, t, me)                         # between the check and the act
        if st == FREE:
            lk = area_lock(z, order)
            take(z, t, me, lk, H.S_MERGE_AREA)
            unlink(z, order, buddy)
            drop(z, t, me, lk)
            if target >= 0:
                z[lrow(z, target), LS_MERGED] += 1 << order
        else:
            lst = z[buddy, PG_LIST]
            lk = capture_lock(z, lst)
            take(z, t, me, lk, H.S_MERGE_CAPTURE)
            if list_phase(z, lst) != OPEN:
                drop(z, t, me, lk)
                break
            unlink(z, lst, buddy)
            if target < 0:
                target = lst
                switched = lst
                use = z[lrow(z, lst), LS_STATE]
            elif lst != target:
                z[lrow(z, target), LS_MERGED] += 1 << order
            drop(z, t, me, lk)
        z[buddy, PG_STATE] = TAIL
        pfn &= buddy
        order += 1
    z[pfn, PG_ORDER] = order
    if target >= 0:
        lk = capture_lock(z, target)
        unlocked = fault(z, F.FAULT_CAPTURE_PLACE_UNLOCKED)
        toctou = fault(z, F.FAULT_TOCTOU_CAPTURE_STATE)
        is_open = z[lrow(z, target), LS_STATE] == use
        if toctou:
            chaos(z, t, me)                     # between the unlocked check and the act
        if not unlocked:
            take(z, t, me, lk, H.S_PLACE_CAPTURE)
        if not toctou:
            is_open = z[lrow(z, target), LS_STATE] == use
        if is_open:
            z[pfn, PG_STATE] = CAPTURED
            push_head(z, target, pfn)
            if switched >= 0:
                z[lrow(z, target), LS_OTHER] += pages0
            if not unlocked:
                drop(z, t, me, lk)
            return pages0 if switched >= 0 else 0
        if not unlocked:
            drop(z, t, me, lk)
    z[pfn, PG_STATE] = FREE
    lk = area_lock(z, order)
    unlocked = fault(z, F.FAULT_PUSH_NO_AREA_LOCK)
    if not unlocked:
        take(z, t, me, lk, H.S_PLACE_AREA)
    push_head(z, order, pfn)
    if fault(z, F.FAULT_COUNT_OUTSIDE_LOCK):
        z[lrow(z, order), LS_COUNT] -= 1
        drop(z, t, me, lk)
        n = z[lrow(z, order), LS_COUNT]
        chaos(z, t, me)
        z[lrow(z, order), LS_COUNT] = n + 1
        return 0
    if not unlocked:
        drop(z, t, me, lk)
    return 0


@njit(nogil=True, cache=True, _nrt=False)
def alloc_block(z, t, me, order):
    """Allocate a block of `order`: pop the head of the smallest non-empty list >= order.

    Returns its pfn, NONE when nothing fits, ABORTED if the run stopped while waiting.
    """
    if not enter(z, t, me):
        return ABORTED
    k = order
    while k <= TOP:
        if z[lrow(z, k), LS_COUNT] == 0:        # a racy hint in the fine scheme, exact in the zone one
            k += 1
            continue
        alk = area_lock(z, k)
        if not take(z, t, me, alk, H.S_ALLOC_AREA):
            leave(z, t, me)
            return ABORTED
        pfn = z[lrow(z, k), LS_HEAD]
        if pfn < 0:
            drop(z, t, me, alk)
            k += 1
            continue
        blk = block_lock(z, pfn)
        if fault(z, F.FAULT_AREA_THEN_BLOCK):
            if not take(z, t, me, blk, H.S_ALLOC_BLOCK):
                drop(z, t, me, alk)
                leave(z, t, me)
                return ABORTED
        elif fault(z, F.FAULT_ALLOC_NO_BLOCK_LOCK):
            pass
        elif not trytake(z, t, me, blk):
            # Area is held, so we must not wait for the block lock: drop, take in order.
            drop(z, t, me, alk)
            if not take(z, t, me, blk, H.S_ALLOC_BLOCK):
                leave(z, t, me)
                return ABORTED
            if not take(z, t, me, alk, H.S_ALLOC_AREA2):
                drop(z, t, me, blk)
                leave(z, t, me)
                return ABORTED
            if z[pfn, PG_STATE] != FREE or z[pfn, PG_LIST] != k:
                drop(z, t, me, alk)
                drop(z, t, me, blk)
                continue                # it moved while unlocked: look again at this order
        unlink(z, k, pfn)
        drop(z, t, me, alk)
        held = not fault(z, F.FAULT_ALLOC_NO_BLOCK_LOCK)
        if held and fault(z, F.FAULT_EARLY_UNLOCK):
            drop(z, t, me, blk)
            held = False
        expand(z, t, me, pfn, k, order)
        z[pfn, PG_STATE] = ALLOC
        z[pfn, PG_ORDER] = order
        z[pfn, PG_OWNER] = me
        if held:
            drop(z, t, me, blk)
        leave(z, t, me)
        trace(z, t, me, OP_ALLOC, pfn, order)
        return pfn
    leave(z, t, me)
    return NONE


@njit(nogil=True, cache=True, _nrt=False)
def free_block(z, t, me, pfn, order, target):
    """Free an allocated block; `target` >= 0 is the caller's own open capture list.

    Returns 0, EINVAL (zone unchanged) if pfn is not an allocated block of that
    order or the capture list is not open, or ABORTED.
    """
    if not enter(z, t, me):
        return ABORTED
    blk = block_lock(z, pfn)
    locked = not fault(z, F.FAULT_FREE_NO_BLOCK_LOCK)
    if locked and not take(z, t, me, blk, H.S_FREE_BLOCK):
        leave(z, t, me)
        return ABORTED
    if z[pfn, PG_STATE] != ALLOC or z[pfn, PG_ORDER] != order or \
            (target >= 0 and list_phase(z, target) != OPEN):
        if locked:
            drop(z, t, me, blk)
        leave(z, t, me)
        return EINVAL
    z[pfn, PG_STATE] = TAIL
    z[pfn, PG_OWNER] = -1
    if target >= 0:
        z[lrow(z, target), LS_OWN] += 1 << order   # guarded: own list, only its owner frees into it
    trace(z, t, me, OP_CAPFREE if target >= 0 else OP_FREE, pfn, order)
    use = z[lrow(z, target), LS_STATE] if target >= 0 else 0     # our own list: stays open
    other = merge_and_place(z, t, me, pfn, order, target, use)
    if other > 0:
        trace(z, t, me, OP_CAPTURED, pfn, order)
    if locked:
        drop(z, t, me, blk)
    leave(z, t, me)
    return 0


@njit(nogil=True, cache=True, _nrt=False)
def capture_start(z, t, me, wanted):
    """Open an empty capture list for a block of order `wanted`; its list row, or NONE if all busy."""
    if not enter(z, t, me):
        return ABORTED
    for lst in range(NAREAS, NAREAS + z[meta_row(z), M_NCAP]):
        row = lrow(z, lst)
        old = z[row, LS_STATE]
        use = (old & ~PHASE_MASK) + GENERATION
        if old & PHASE_MASK == UNUSED and cas(z, (row, LS_STATE), old, use | OPEN) == old:
            lk = capture_lock(z, lst)
            if not take(z, t, me, lk, H.S_CAPSTART):
                store_release(z, (row, LS_STATE), old)
                leave(z, t, me)
                return ABORTED
            z[row, LS_WANTED] = wanted
            z[row, LS_OWNER] = me
            z[row, LS_OWN] = 0
            z[row, LS_OTHER] = 0
            z[row, LS_MERGED] = 0
            drop(z, t, me, lk)
            leave(z, t, me)
            trace(z, t, me, OP_CAPSTART, lst, wanted)
            return lst
    leave(z, t, me)
    return NONE


@njit(nogil=True, cache=True, _nrt=False)
def capture_finish(z, t, me, lst):
    """Close capture list `lst`: carve the first block >= wanted, free the others in order.

    Returns the carved pfn, NONE if no block was large enough, EINVAL if the list
    is not open, or ABORTED.  The list's row keeps its statistics until reused.
    """
    if not enter(z, t, me):
        return ABORTED
    lk = capture_lock(z, lst)
    if not take(z, t, me, lk, H.S_CAPFINISH):
        leave(z, t, me)
        return ABORTED
    if list_phase(z, lst) != OPEN:
        drop(z, t, me, lk)
        leave(z, t, me)
        return EINVAL
    use = z[lrow(z, lst), LS_STATE] & ~PHASE_MASK
    z[lrow(z, lst), LS_STATE] = use | CLOSED    # from now on no block of the chain is a merge target
    chain = z[lrow(z, lst), LS_HEAD]
    z[lrow(z, lst), LS_HEAD] = -1
    z[lrow(z, lst), LS_COUNT] = 0
    wanted = z[lrow(z, lst), LS_WANTED]
    inverted = fault(z, F.FAULT_CAPTURE_BEFORE_BLOCK)   # keeps `lk` while taking block locks
    if not inverted:
        drop(z, t, me, lk)
    got = NONE
    p = chain
    while p >= 0 and got < 0:
        if z[p, PG_ORDER] >= wanted:
            blk = block_lock(z, p)
            take(z, t, me, blk, H.S_CAPFINISH_BLOCK)
            expand(z, t, me, p, z[p, PG_ORDER], wanted)
            z[p, PG_STATE] = ALLOC
            z[p, PG_ORDER] = wanted
            z[p, PG_LIST] = -1
            z[p, PG_OWNER] = me
            drop(z, t, me, blk)
            got = p
        p = z[p, PG_NEXT]
    p = chain
    while p >= 0:
        nxt = z[p, PG_NEXT]
        if p != got:
            blk = block_lock(z, p)
            take(z, t, me, blk, H.S_CAPFINISH_BLOCK)
            z[p, PG_STATE] = TAIL
            z[p, PG_LIST] = -1
            if fault(z, F.FAULT_LOST_COALESCING):
                z[p, PG_STATE] = FREE
                alk = area_lock(z, z[p, PG_ORDER])
                take(z, t, me, alk, H.S_PLACE_AREA)
                push_head(z, z[p, PG_ORDER], p)
                drop(z, t, me, alk)
            else:
                merge_and_place(z, t, me, p, z[p, PG_ORDER], -1, 0)
            drop(z, t, me, blk)
        p = nxt
    if inverted:
        drop(z, t, me, lk)
    store_release(z, (lrow(z, lst), LS_STATE), use | UNUSED)
    leave(z, t, me)
    trace(z, t, me, OP_CAPFINISH, got, wanted)
    return got
