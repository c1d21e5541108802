"""Isolating an aligned range for migration: choose it, isolate it, audit it, end it.

A reclaimer that wants order N and still failed after reclaim picks an aligned
range of 2**N pages, isolates it (MIGRATE_ISOLATE: its free blocks move to a
capture list of kind ISOLATE, and every later free inside it lands there too, see
harness.isolate), migrates the movable pages out (workers.migrator), and ends the
isolation: it takes the range when the list holds it whole, else releases it
(the held blocks are freed normally).

Choosing (`choose_range`), as compaction would: look at up to CANDIDATES ranges at
random aligned offsets and count, with racy reads, the pages that cannot move
(allocated blocks that are not page-cache pages, captured blocks of any list, a
block larger than the range); keep the range with the fewest, ties broken by the
fewest pages to move.  Only a range with no unmovable page is tried: a page that
cannot move keeps the range from ever being whole.  The choice is a hint: the
isolation re-checks everything under the block lock, and a range that turns out
not to empty (a page allocated meanwhile, a reader holding a page) is released.

Locks: every kernel here holds the range's block lock while it reads or changes
page state inside it; isolate_range takes area and capture locks under it (block ->
area, block -> capture: declared); nothing here waits for a block lock while
holding another lock.
"""

from numba import njit

from harness import hierarchy as H
from harness import zone as Z
from harness.isolate import encode, isolation, owner_word
from harness.layout import (ALLOC, CAPTURED, FREE, L_ISOLATE, LS_MERGED, LS_OWNER, PG_LIST,
                            PG_ORDER, PG_STATE, TAIL, TOP, M_PAGES, meta_row)
from harness.lockverbs import (area_lock, block_lock, capture_lock, fine_lock, fine_unlock,
                               zone_enter, zone_leave)
from harness.pageref import page_count
from harness.rng import bounded, step

CANDIDATES = 64                 # ranges looked at per choice
NO_RANGE = -1

# isolate_range outcomes (besides a list row >= 11)
REFUSED = -4                    # the range changed since it was chosen: nothing isolated


@njit(nogil=True, cache=True, _nrt=False)
def set_list_mode(z, t, me, lst, mode, base):
    """Mark the caller's freshly opened, still empty capture list as OWN_ONLY or ISOLATE
    (of the range at `base`).  False if the run aborted."""
    if not zone_enter(z, t, me):
        return False
    lk = capture_lock(z, lst)
    if not fine_lock(z, t, me, lk, H.S_LIST_MODE):
        return False
    z[Z.lrow(z, lst), LS_OWNER] = owner_word(me, mode, base)
    fine_unlock(z, t, me, lk)
    zone_leave(z, t, me)
    return True


@njit(nogil=True, cache=True, _nrt=False)
def range_cost(z, pool, base, order):
    """(unmovable pages, movable pages) of the range, from racy reads; unmovable is
    2**order when a block larger than the range covers it."""
    end = base + (1 << order)
    for k in range(order + 1, TOP + 1):          # a larger block covering the range
        q = base & ~((1 << k) - 1)
        if z[q, PG_STATE] != TAIL and z[q, PG_ORDER] >= k:
            return 1 << order, 0
    unmovable = 0
    movable = 0
    p = base
    while p < end:
        st = z[p, PG_STATE]
        o = min(max(z[p, PG_ORDER], 0), TOP)
        if st == TAIL:
            unmovable += 1                       # a racy read mid-split or mid-merge
            p += 1
            continue
        if st == ALLOC:
            if o == 0 and page_count(pool, p) > 0:
                movable += 1
            else:
                unmovable += 1 << o
        elif st == CAPTURED:
            unmovable += 1 << o
        p += 1 << o
    return unmovable, movable


@njit(nogil=True, cache=True, _nrt=False)
def choose_range(z, pool, order, x):
    """The best of CANDIDATES random aligned ranges of `order` (see the module docstring):
    (base or NO_RANGE, rng state).  Order-10 blocks with an isolated range are skipped."""
    nranges = z[meta_row(z), M_PAGES] >> order
    best, best_cost, best_move = NO_RANGE, 1 << 62, 1 << 62
    for _ in range(min(CANDIDATES, nranges)):
        x = step(x)
        base = bounded(x, nranges) << order
        if isolation(z, base) != 0:
            continue
        unmovable, movable = range_cost(z, pool, base, order)
        if unmovable < best_cost or (unmovable == best_cost and movable < best_move):
            best, best_cost, best_move = base, unmovable, movable
    if best_cost > 0:
        return NO_RANGE, x
    return best, x


@njit(nogil=True, cache=True, _nrt=False)
def isolate_range(z, t, me, lst, base, order):
    """Isolate the range at `base` onto the caller's empty ISOLATE list `lst`.

    Under the block lock: refused if the block already has an isolated range, if a
    block larger than the range covers it or if a captured block lies in it;
    otherwise the marker is set and each free block inside moves onto `lst`
    (CAPTURED, counted as merged pages).  Returns the pages moved, REFUSED or ABORTED.
    """
    if not zone_enter(z, t, me):
        return Z.ABORTED
    blk = block_lock(z, base)
    if not fine_lock(z, t, me, blk, H.S_ISOLATE_BLOCK):
        return Z.ABORTED
    end = base + (1 << order)
    ok = z[blk, L_ISOLATE] == 0
    for k in range(order + 1, TOP + 1):
        q = base & ~((1 << k) - 1)
        if z[q, PG_STATE] != TAIL and z[q, PG_ORDER] >= k:
            ok = False
    p = base
    while ok and p < end:
        if z[p, PG_STATE] == CAPTURED or z[p, PG_STATE] == TAIL:
            ok = False
        else:
            p += 1 << z[p, PG_ORDER]
    if not ok:
        fine_unlock(z, t, me, blk)
        zone_leave(z, t, me)
        return REFUSED
    z[blk, L_ISOLATE] = encode(lst, order, base)
    moved = 0
    p = base
    while p < end:
        o = z[p, PG_ORDER]
        if z[p, PG_STATE] == FREE:
            alk = area_lock(z, o)
            if not fine_lock(z, t, me, alk, H.S_ISOLATE_AREA):
                return Z.ABORTED
            Z.unlink(z, t, me, o, p)
            fine_unlock(z, t, me, alk)
            z[p, PG_STATE] = CAPTURED
            lk = capture_lock(z, lst)
            if not fine_lock(z, t, me, lk, H.S_ISOLATE_CAPTURE):
                return Z.ABORTED
            Z.push_head(z, t, me, lst, p)
            z[Z.lrow(z, lst), LS_MERGED] += 1 << o
            fine_unlock(z, t, me, lk)
            moved += 1 << o
        p += 1 << o
    fine_unlock(z, t, me, blk)
    zone_leave(z, t, me)
    return moved


@njit(nogil=True, cache=True, _nrt=False)
def range_movable(z, t, me, base, order, out):
    """The allocated order-0 pages inside the range, into `out` (a snapshot under the block
    lock); their number, or ABORTED."""
    if not zone_enter(z, t, me):
        return Z.ABORTED
    blk = block_lock(z, base)
    if not fine_lock(z, t, me, blk, H.S_MIGRATE_BLOCK):
        return Z.ABORTED
    n = 0
    p = base
    while p < base + (1 << order):
        o = z[p, PG_ORDER]
        if z[p, PG_STATE] == ALLOC and o == 0 and n < out.shape[0]:
            out[n] = p
            n += 1
        p += 1 << o
    fine_unlock(z, t, me, blk)
    zone_leave(z, t, me)
    return n


@njit(nogil=True, cache=True, _nrt=False)
def audit_range(z, t, me, lst, base, order):
    """Invariant detector on the caller's isolated range, under its block lock.

    Inside an isolated range no block is FREE (every free is held on `lst`), and no
    block crosses the range's boundary.  Returns (0 clean | violation kind | ABORTED,
    pfn) with kinds from workers.detectors passed in by number: 1 a free block, 2 a
    crossing block.
    """
    if not zone_enter(z, t, me):
        return Z.ABORTED, -1
    blk = block_lock(z, base)
    if not fine_lock(z, t, me, blk, H.S_AUDIT_RANGE):
        return Z.ABORTED, -1
    found, at = 0, -1
    for k in range(order + 1, TOP + 1):
        q = base & ~((1 << k) - 1)
        if found == 0 and z[q, PG_STATE] != TAIL and z[q, PG_ORDER] >= k:
            found, at = 2, q
    p = base
    while found == 0 and p < base + (1 << order):
        st = z[p, PG_STATE]
        o = z[p, PG_ORDER]
        if st == TAIL or o < 0 or o > order:
            found, at = 2, p
            break
        if st == FREE or (st == CAPTURED and z[p, PG_LIST] != lst):
            found, at = 1, p
        p += 1 << o
    fine_unlock(z, t, me, blk)
    zone_leave(z, t, me)
    return found, at


@njit(nogil=True, cache=True, _nrt=False)
def end_isolation(z, t, me, lst, base, order):
    """Clear the range's marker and finish its list: the carved block when the list held a
    block of the range's order (the range, whole), else NONE (every held block freed
    normally: the range is released); or ABORTED."""
    if not zone_enter(z, t, me):
        return Z.ABORTED
    blk = block_lock(z, base)
    if not fine_lock(z, t, me, blk, H.S_END_ISOLATION):
        return Z.ABORTED
    z[blk, L_ISOLATE] = 0
    fine_unlock(z, t, me, blk)
    zone_leave(z, t, me)
    return Z.capture_finish(z, t, me, lst)

