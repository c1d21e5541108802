"""The buddy allocator: zone state as arrays, every operation a `nogil` kernel.

Layout (harness.layout).  Zone-table row `pfn` is that page's struct page.  A
block of order O is 2**O pages, naturally aligned; only its head page carries
state, order and list links, the others are TAIL.  The buddy of block B at
order O is B ^ (1 << O): #8's order-1 buddy is #10, #8's order-3 buddy is #0.
Two buddies of equal order that are both FREE (or captured) merge into one
block of order O + 1 at B & buddy; all merges stay inside one order-10 block.

Lists.  Lists 0..10 are the free lists (areas) of each order; lists 11.. are
capture lists; each has one row of the zone table (`lrow`).  Lists are doubly
linked through the heads' NEXT/PREV and LIFO: blocks are pushed at, and
allocation pops, the head.

Locking (see harness.hierarchy).  Fine scheme: a head's STATE/ORDER/LIST/OWNER
are guarded by the lock of its order-10 block; a list's links, head and count
by that list's lock (area or capture); a capture list's STATE by its capture
lock, and so are a capture list's statistics (own, other, merged pages).
Zone scheme: one zone lock, taken at each entry point (zone_enter), guards it
all; the inner lock verbs (fine_lock ...) then do nothing, so both schemes run
the same code.  The verbs, lockdep, chaos and the flight recorder live in
harness.lockverbs, harness.lockdep_record, harness.chaos and harness.tracing.
A capture list that is CLOSED (being finished) is no merge target: its
blocks belong to the finishing thread until it has carved and freed them.
A list's STATE also counts its uses (layout.GENERATION): a free that met a
captured buddy places its merged block on that list only if it is still the
same use of the row, never on a list reopened in the meantime.
Kinds of capture list and isolated ranges (harness.isolate): a free inside an
isolated range goes to the range's list, a merge never crosses its boundary,
and a block on an own-only list merges only with its owner's own frees.
"""

from numba import njit

from harness import faults as F
from harness import hierarchy as H
from harness.atomics import cas, store_release
from harness.chaos import P_COUNT_LATE, P_MERGE_CHECK, P_PLACE_CHECK, P_PLACE_CHECK_OWN, chaos
from harness.faults import fault
from harness.isolate import crosses_isolation, isolated_list, may_join
from harness.layout import (ALLOC, CAPTURED, CLOSED, CS_FOUND, CS_MERGED, CS_OTHER, CS_OWN, FREE,
                            GENERATION, LS_COUNT, LS_HEAD, LS_MERGED, LS_OTHER, LS_OWN, LS_OWNER,
                            LS_STATE, LS_WANTED, M_LIST0, M_NCAP, NAREAS, OPEN, PG_LIST, PG_NEXT,
                            PG_ORDER, PG_OWNER, PG_PREV, PG_STATE, PHASE_MASK, TAIL, TOP,
                            T_CAPSTAT, UNUSED, meta_row, zone_pages)
from harness.lockverbs import (abandon, area_lock, assert_block_locked, assert_list_locked,
                               block_lock, capture_lock, fine_lock, fine_trylock, fine_unlock,
                               zone_enter, zone_leave)
from harness.tracing import (OP_ALLOC, OP_CAPFINISH, OP_CAPFREE, OP_CAPSTART, OP_CAPTURED,
                             OP_FREE, trace)

COSTLY_ORDER = 3            # PAGE_ALLOC_COSTLY_ORDER: capture only for orders above it

NONE, ABORTED, EINVAL = -1, -2, -3

# Every kernel that takes a lock returns ABORTED as soon as a lock wait is aborted
# (harness.lockverbs): an aborted thread releases nothing, so there is nothing to undo.
# The entry points are forceinline on purpose: Numba compiles a kernel with the
# forceinline of the caller that compiled it first, so without the flag of their own
# whether they were inlined into a worker's loop depended on which caller compiled them
# first (the Zone API or a worker), and the bench's zone/1 loop ran at 24-36 M or 39-46 M
# ops/s from one cache to the next.

# ---------------------------------------------------------------- the entry points

@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def alloc_block(z, t, me, order):
    """Allocate a block of `order`: pop the head of the smallest non-empty list >= order.

    Returns its pfn, NONE when nothing fits, ABORTED if the run stopped while waiting.
    """
    if not zone_enter(z, t, me):
        return ABORTED
    wait_under_area = fault(z, F.FAULT_AREA_THEN_BLOCK)
    skip_block_lock = fault(z, F.FAULT_ALLOC_NO_BLOCK_LOCK)
    unlock_early = fault(z, F.FAULT_EARLY_UNLOCK)
    k = order
    while k <= TOP:
        if z[lrow(z, k), LS_COUNT] == 0:        # a racy hint (fine scheme), exact (zone scheme)
            k += 1
            continue
        alk = area_lock(z, k)
        if not fine_lock(z, t, me, alk, H.S_ALLOC_AREA):
            return ABORTED
        pfn = z[lrow(z, k), LS_HEAD]
        if pfn < 0:
            fine_unlock(z, t, me, alk)
            k += 1
            continue
        blk = block_lock(z, pfn)
        if wait_under_area:
            if not fine_lock(z, t, me, blk, H.S_ALLOC_BLOCK):
                return ABORTED
        elif skip_block_lock:
            pass
        elif not fine_trylock(z, t, me, blk):
            # Area is held, so we must not wait for the block lock: drop, take in order.
            fine_unlock(z, t, me, alk)
            if not fine_lock(z, t, me, blk, H.S_ALLOC_BLOCK):
                return ABORTED
            if not fine_lock(z, t, me, alk, H.S_ALLOC_AREA2):
                return ABORTED
            if z[pfn, PG_STATE] != FREE or z[pfn, PG_LIST] != k:
                fine_unlock(z, t, me, alk)
                fine_unlock(z, t, me, blk)
                continue                # it moved while unlocked: look again at this order
        unlink(z, t, me, k, pfn)
        fine_unlock(z, t, me, alk)
        held = not skip_block_lock
        if held and unlock_early:
            fine_unlock(z, t, me, blk)
            held = False
        if not expand(z, t, me, pfn, k, order):
            return ABORTED
        z[pfn, PG_STATE] = ALLOC
        z[pfn, PG_ORDER] = order
        z[pfn, PG_OWNER] = me
        if held:
            fine_unlock(z, t, me, blk)
        zone_leave(z, t, me)
        trace(z, t, me, OP_ALLOC, pfn, order)
        return pfn
    zone_leave(z, t, me)
    return NONE


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def free_block(z, t, me, pfn, order, target):
    """Free an allocated block; `target` >= 0 is the caller's own open capture list.

    Returns 0, EINVAL (zone unchanged) if pfn is not an allocated block of that
    order or the capture list is not open, or ABORTED.
    """
    if not zone_enter(z, t, me):
        return ABORTED
    blk = block_lock(z, pfn)
    skip_block_lock = fault(z, F.FAULT_FREE_NO_BLOCK_LOCK)
    if not skip_block_lock and not fine_lock(z, t, me, blk, H.S_FREE_BLOCK):
        return ABORTED
    if z[pfn, PG_STATE] != ALLOC or z[pfn, PG_ORDER] != order or \
            (target >= 0 and list_phase(z, target) != OPEN):
        if not skip_block_lock:
            fine_unlock(z, t, me, blk)
        zone_leave(z, t, me)
        return EINVAL
    z[pfn, PG_STATE] = TAIL
    z[pfn, PG_OWNER] = -1
    trace(z, t, me, OP_CAPFREE if target >= 0 else OP_FREE, pfn, order)
    iso = isolated_list(z, pfn)         # MIGRATE_ISOLATE: a free inside the range is held
    leak_isolated = fault(z, F.FAULT_ISOLATE_LEAKS_FREE)
    if iso >= 0 and not leak_isolated:
        target = iso
    use = z[lrow(z, target), LS_STATE] if target >= 0 else 0     # our own list: stays open
    other = merge_and_place(z, t, me, pfn, order, target, use)
    if other == ABORTED:
        return ABORTED
    if other > 0:
        trace(z, t, me, OP_CAPTURED, pfn, order)
    if not skip_block_lock:
        fine_unlock(z, t, me, blk)
    zone_leave(z, t, me)
    return 0


@njit(nogil=True, cache=True, _nrt=False)
def capture_start(z, t, me, wanted):
    """Open an empty capture list for a block of order `wanted`: its list row, NONE if all busy."""
    if not zone_enter(z, t, me):
        return ABORTED
    for lst in range(NAREAS, NAREAS + z[meta_row(z), M_NCAP]):
        row = lrow(z, lst)
        old = z[row, LS_STATE]
        use = (old & ~PHASE_MASK) + GENERATION
        if old & PHASE_MASK == UNUSED and cas(z, (row, LS_STATE), old, use | OPEN) == old:
            lk = capture_lock(z, lst)
            if not fine_lock(z, t, me, lk, H.S_CAPSTART):
                store_release(z, (row, LS_STATE), old)
                return ABORTED
            z[row, LS_WANTED] = wanted
            z[row, LS_OWNER] = me
            z[row, LS_OWN] = 0
            z[row, LS_OTHER] = 0
            z[row, LS_MERGED] = 0
            fine_unlock(z, t, me, lk)
            zone_leave(z, t, me)
            trace(z, t, me, OP_CAPSTART, lst, wanted)
            return lst
    zone_leave(z, t, me)
    return NONE


@njit(nogil=True, cache=True, _nrt=False)
def capture_finish(z, t, me, lst):
    """Close capture list `lst`: carve the first block >= wanted, free the others in order.

    Returns the carved pfn, NONE if no block was large enough, EINVAL if the list
    is not open, or ABORTED.  The list's statistics, final once it is closed, are
    copied under its lock into the caller's thread row (T_CAPSTAT).
    """
    if not zone_enter(z, t, me):
        return ABORTED
    lk = capture_lock(z, lst)
    if not fine_lock(z, t, me, lk, H.S_CAPFINISH):
        return ABORTED
    if list_phase(z, lst) != OPEN:
        fine_unlock(z, t, me, lk)
        zone_leave(z, t, me)
        return EINVAL
    assert_list_locked(z, t, me, lst)   # closing and detaching change the list
    row = lrow(z, lst)
    use = z[row, LS_STATE] & ~PHASE_MASK
    z[row, LS_STATE] = use | CLOSED    # from now on no block of the chain is a merge target
    t[me, T_CAPSTAT, CS_OWN] = z[row, LS_OWN]
    t[me, T_CAPSTAT, CS_OTHER] = z[row, LS_OTHER]
    t[me, T_CAPSTAT, CS_MERGED] = z[row, LS_MERGED]
    chain = z[row, LS_HEAD]
    found = 0                          # the pages this use of the list ends with (CLOSED: ours)
    blocks = 0                         # ... in this many blocks: later walks go no further
    most = zone_pages(z)
    p = chain
    while p >= 0:
        blocks += 1
        if blocks > most:              # round a cycle: a race corrupted the links
            abandon(z, t, me)
            return ABORTED
        found += 1 << z[p, PG_ORDER]
        p = z[p, PG_NEXT]
    t[me, T_CAPSTAT, CS_FOUND] = found
    z[row, LS_HEAD] = -1
    z[row, LS_COUNT] = 0
    wanted = z[row, LS_WANTED]
    keep_capture_lock = fault(z, F.FAULT_CAPTURE_BEFORE_BLOCK)   # while taking block locks
    skip_merging = fault(z, F.FAULT_LOST_COALESCING)
    if not keep_capture_lock:
        fine_unlock(z, t, me, lk)
    got = NONE
    p = chain
    left = blocks
    while p >= 0 and got < 0 and left > 0:
        left -= 1
        if z[p, PG_ORDER] >= wanted:
            blk = block_lock(z, p)
            if not fine_lock(z, t, me, blk, H.S_CAPFINISH_BLOCK):
                return ABORTED
            if not expand(z, t, me, p, z[p, PG_ORDER], wanted):
                return ABORTED
            z[p, PG_STATE] = ALLOC
            z[p, PG_ORDER] = wanted
            z[p, PG_LIST] = -1
            z[p, PG_OWNER] = me
            fine_unlock(z, t, me, blk)
            got = p
        p = z[p, PG_NEXT]
    p = chain
    left = blocks
    while p >= 0 and left > 0:
        left -= 1
        nxt = z[p, PG_NEXT]
        if p != got:
            blk = block_lock(z, p)
            if not fine_lock(z, t, me, blk, H.S_CAPFINISH_BLOCK):
                return ABORTED
            z[p, PG_STATE] = TAIL
            z[p, PG_LIST] = -1
            if skip_merging:
                z[p, PG_STATE] = FREE
                alk = area_lock(z, z[p, PG_ORDER])
                if not fine_lock(z, t, me, alk, H.S_PLACE_AREA):
                    return ABORTED
                push_head(z, t, me, z[p, PG_ORDER], p)
                fine_unlock(z, t, me, alk)
            elif merge_and_place(z, t, me, p, z[p, PG_ORDER], -1, 0) == ABORTED:
                return ABORTED
            fine_unlock(z, t, me, blk)
        p = nxt
    if keep_capture_lock:
        fine_unlock(z, t, me, lk)
    store_release(z, (row, LS_STATE), use | UNUSED)
    zone_leave(z, t, me)
    trace(z, t, me, OP_CAPFINISH, got, wanted)
    return got

# ---------------------------------------------------------------- coalescing and splitting

@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def merge_and_place(z, t, me, pfn, order, target, use):
    """`__free_one_page` / `__capture_one_page`: coalesce `pfn` and put it on a list.

    `target` < 0 is normal mode: merge FREE buddies; a CAPTURED buddy switches to
    capture mode on that buddy's list.  In capture mode a FREE or CAPTURED buddy
    (on any open list) merges and the result goes to the head of `target`, if
    `target` is still in `use` (the STATE word it had when it was chosen);
    otherwise to the free list.  Caller holds pfn's block lock; pfn's head is
    TAIL (owned, on no list).  A capture list's statistics (own, other, merged
    pages) change only under its own capture lock, when the block is placed.
    Returns the pages this free added to a capture list it did not start on, or ABORTED.
    """
    assert_block_locked(z, t, me, pfn)
    pages0 = 1 << order
    own = target >= 0                   # the owner's own free into its list
    switched = False
    merged = 0                          # pages merged in from outside `target`
    skip_order_check = fault(z, F.FAULT_STALE_BUDDY_ORDER)
    ignore_captured = fault(z, F.FAULT_IGNORE_CAPTURED_BUDDY)
    merge_closed = fault(z, F.FAULT_MERGE_CLOSED_CAPTURE)
    while order < TOP:
        buddy = pfn ^ (1 << order)
        st = z[buddy, PG_STATE]
        if st != FREE and st != CAPTURED:
            break
        if st == CAPTURED and not may_join(z, buddy, target):
            break                       # an own-only capture list keeps its blocks
        if crosses_isolation(z, pfn, order):
            break                       # nothing merges into or out of an isolated range
        if z[buddy, PG_ORDER] != order and not skip_order_check:
            break
        if st == CAPTURED and target < 0 and ignore_captured:
            break
        chaos(z, t, me, P_MERGE_CHECK)          # between the check and the act
        if st == FREE:
            lk = area_lock(z, order)
            if not fine_lock(z, t, me, lk, H.S_MERGE_AREA):
                return ABORTED
            unlink(z, t, me, order, buddy)
            fine_unlock(z, t, me, lk)
            merged += 1 << order        # counts only if it ends on a capture list
        else:
            lst = z[buddy, PG_LIST]
            lk = capture_lock(z, lst)
            if not fine_lock(z, t, me, lk, H.S_MERGE_CAPTURE):
                return ABORTED
            if list_phase(z, lst) != OPEN and not merge_closed:
                fine_unlock(z, t, me, lk)
                break
            unlink(z, t, me, lst, buddy)
            if target < 0:
                target = lst
                switched = True
                use = z[lrow(z, lst), LS_STATE]
            elif lst != target:
                merged += 1 << order
            fine_unlock(z, t, me, lk)
        z[buddy, PG_STATE] = TAIL
        pfn &= buddy
        order += 1
    z[pfn, PG_ORDER] = order
    if target >= 0:
        lk = capture_lock(z, target)
        skip_capture_lock = fault(z, F.FAULT_CAPTURE_PLACE_UNLOCKED)
        check_before_lock = fault(z, F.FAULT_TOCTOU_CAPTURE_STATE)
        row = lrow(z, target)
        is_open = z[row, LS_STATE] == use      # unlocked: only a hint until re-read below
        # Between the unlocked check and the act.  Onto another thread's list is a site of
        # its own: the cross-thread case is the rare one, and the one that races (its
        # owner may close the list here, which the re-read under the lock must see).
        chaos(z, t, me, P_PLACE_CHECK_OWN if own else P_PLACE_CHECK)
        if not skip_capture_lock and not fine_lock(z, t, me, lk, H.S_PLACE_CAPTURE):
            return ABORTED
        if not check_before_lock:
            is_open = z[row, LS_STATE] == use
        if is_open:
            z[pfn, PG_STATE] = CAPTURED
            push_head(z, t, me, target, pfn)
            if own:
                add_pages(z, t, me, target, LS_OWN, pages0)
            elif switched:
                add_pages(z, t, me, target, LS_OTHER, pages0)
            add_pages(z, t, me, target, LS_MERGED, merged)
            if not skip_capture_lock:
                fine_unlock(z, t, me, lk)
            return pages0 if switched else 0
        if not skip_capture_lock:
            fine_unlock(z, t, me, lk)
    z[pfn, PG_STATE] = FREE
    lk = area_lock(z, order)
    skip_area_lock = fault(z, F.FAULT_PUSH_NO_AREA_LOCK)
    count_after_unlock = fault(z, F.FAULT_COUNT_OUTSIDE_LOCK)
    if not skip_area_lock and not fine_lock(z, t, me, lk, H.S_PLACE_AREA):
        return ABORTED
    push_head(z, t, me, order, pfn)
    if count_after_unlock:
        z[lrow(z, order), LS_COUNT] -= 1
        if not skip_area_lock:
            fine_unlock(z, t, me, lk)
        n = z[lrow(z, order), LS_COUNT]
        chaos(z, t, me, P_COUNT_LATE)
        z[lrow(z, order), LS_COUNT] = n + 1
        return 0
    if not skip_area_lock:
        fine_unlock(z, t, me, lk)
    return 0


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def expand(z, t, me, pfn, high, low):
    """Split block `pfn` of order `high` down to `low`; upper halves go to the free lists.

    Caller holds pfn's block lock (all halves lie in that order-10 block).
    Returns False if the run aborted.
    """
    assert_block_locked(z, t, me, pfn)
    while high > low:
        high -= 1
        half = pfn + (1 << high)
        z[half, PG_STATE] = FREE
        z[half, PG_ORDER] = high
        lk = area_lock(z, high)
        if not fine_lock(z, t, me, lk, H.S_EXPAND_AREA):
            return False
        push_head(z, t, me, high, half)
        fine_unlock(z, t, me, lk)
    return True

# ---------------------------------------------------------------- list primitives
# Caller holds the list's lock and the block lock of `pfn` (both asserted when lockdep is
# on: the list's here, the block's by merge_and_place and expand, which change pages).

@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def push_head(z, t, me, lst, pfn):
    assert_list_locked(z, t, me, lst)
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
def add_pages(z, t, me, lst, field, n):
    """Capture list `lst`'s page count `field` (LS_OWN, LS_OTHER, LS_MERGED) += n: its
    owner reads them when it closes the list, so they change under the list's lock."""
    assert_list_locked(z, t, me, lst)
    z[lrow(z, lst), field] += n


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def unlink(z, t, me, lst, pfn):
    assert_list_locked(z, t, me, lst)
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


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def lrow(z, lst):
    """Zone-table row of list `lst` (0..10 free lists, 11.. capture lists)."""
    return z[meta_row(z), M_LIST0] + lst


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def list_phase(z, lst):
    """UNUSED, OPEN or CLOSED: the phase bits of capture list `lst`'s STATE."""
    return z[lrow(z, lst), LS_STATE] & PHASE_MASK
