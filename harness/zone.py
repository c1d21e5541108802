"""The buddy allocator: zone state as arrays, every operation a `nogil` kernel.

Layout.  `pages` is the struct-page array, one 64-byte row per page frame.  A
block of order O is 2**O pages, naturally aligned; only its head page carries
state, order and list links, the others are TAIL.  The buddy of block B at
order O is B ^ (1 << O): #8's order-1 buddy is #10, #8's order-3 buddy is #0.
Two buddies of equal order that are both FREE (or captured) merge into one
block of order O + 1 at B & buddy; all merges stay inside one order-10 block.

Lists.  `lists` rows 0..10 are the free lists (areas) of each order; rows
11.. are capture lists.  Lists are doubly linked through the heads' NEXT/PREV
and LIFO: blocks are pushed at, and allocation pops, the head.

Locking (see harness.hierarchy).  Fine scheme: a head's STATE/ORDER/LIST/OWNER
are guarded by the lock of its order-10 block; a list's links, head and count
by that list's lock (area or capture); a capture list's STATE by its capture
lock.  Zone scheme: one zone lock, taken at each entry point, guards it all;
the inner lock calls then do nothing, so both schemes run the same code.
A capture list that is CLOSED (being finished) is no merge target: its
blocks belong to the finishing thread until it has carved and freed them.
"""

from typing import NamedTuple

import numpy as np
from numba import njit

from harness import hierarchy as H
from harness.atomics import cas, monotonic_ns, store_release
from harness.locks import L_CLASS, lock_acquire, lock_release, lock_table, lock_try

MAX_ORDER = 11
TOP = MAX_ORDER - 1
COSTLY_ORDER = 3            # PAGE_ALLOC_COSTLY_ORDER: capture only for orders above it
NAREAS = MAX_ORDER

# struct page fields
PG_STATE, PG_ORDER, PG_LIST, PG_NEXT, PG_PREV, PG_OWNER, PG_STAMP, PG_CLAIM = range(8)
PAGE_FIELDS = 8
TAIL, FREE, CAPTURED, ALLOC = range(4)

# list rows
LS_HEAD, LS_COUNT, LS_STATE, LS_WANTED, LS_OWNER, LS_OWN, LS_OTHER, LS_MERGED = range(8)
LIST_FIELDS = 8
UNUSED, OPEN, CLOSED = range(3)

# meta (read-mostly configuration)
(M_PAGES, M_SCHEME, M_NCAP, M_BLOCK0, M_CAP0, M_AREA0, M_POOL0, M_LOCKDEP, M_TRACE,
 M_FAULT, M_CHAOS) = range(11)
META_FIELDS = 16
SCHEME_ZONE, SCHEME_FINE = 0, 1
SCHEMES = {"zone": SCHEME_ZONE, "fine": SCHEME_FINE}

# per-thread rows (threads table): lock bookkeeping first, worker counters after
T_WAITING, T_HEARTBEAT, T_RING_POS, T_RNG, T_NHELD = range(5)
T_HELD0, MAX_HELD = 5, 8
T_LOCKDEP_ERR = 13
T_USER0 = 16                # first field free for workers' counters
THREAD_FIELDS = 64

RING = 256                  # flight-recorder entries per thread
OP_ALLOC, OP_FREE, OP_CAPFREE, OP_CAPSTART, OP_CAPFINISH, OP_CAPTURED = 1, 2, 3, 4, 5, 6
OP_NAMES = {OP_ALLOC: "alloc", OP_FREE: "free", OP_CAPFREE: "free-capture",
            OP_CAPSTART: "capture_start", OP_CAPFINISH: "capture_finish",
            OP_CAPTURED: "captured-other"}

NONE, ABORTED, EINVAL = -1, -2, -3


class ZoneState(NamedTuple):
    """Shared state of one zone; every kernel takes it whole."""
    pages: np.ndarray       # (npages, PAGE_FIELDS) int64
    lists: np.ndarray       # (NAREAS + ncap, LIST_FIELDS) int64
    locks: np.ndarray       # (nlocks, LOCK_FIELDS) int64, see harness.locks
    meta: np.ndarray        # (META_FIELDS,) int64, fixed during a run
    ctl: np.ndarray         # (8,) int64: CTL_STOP, written by the runner


class ThreadTables(NamedTuple):
    """Per-thread rows, each written only by its own thread (race-free bookkeeping)."""
    threads: np.ndarray     # (nthreads, THREAD_FIELDS) int64
    ring: np.ndarray        # (nthreads, RING, 4) int64: op, pfn, order, ns
    edges: np.ndarray       # (nthreads, NCLASSES, NCLASSES) int64: first site + 1


def new_zone(pages, scheme, ncap=64):
    """A fresh zone: as if every order-10 block were freed in increasing pfn order."""
    nblocks = pages >> TOP
    meta = np.zeros(META_FIELDS, np.int64)
    meta[M_PAGES], meta[M_SCHEME], meta[M_NCAP] = pages, SCHEMES[scheme], ncap
    meta[M_BLOCK0] = 1
    meta[M_CAP0] = 1 + nblocks
    meta[M_AREA0] = meta[M_CAP0] + ncap
    meta[M_POOL0] = meta[M_AREA0] + NAREAS
    classes = np.concatenate([[H.ZONE], np.full(nblocks, H.BLOCK), np.full(ncap, H.CAPTURE),
                              np.full(NAREAS, H.AREA), [H.PAGECACHE]])
    pg = np.zeros((pages, PAGE_FIELDS), np.int64)
    pg[:, PG_LIST] = pg[:, PG_NEXT] = pg[:, PG_PREV] = pg[:, PG_OWNER] = -1
    lists = np.zeros((NAREAS + ncap, LIST_FIELDS), np.int64)
    lists[:, LS_HEAD] = -1
    heads = np.arange(0, pages, 1 << TOP)
    pg[heads, PG_STATE], pg[heads, PG_ORDER], pg[heads, PG_LIST] = FREE, TOP, TOP
    pg[heads, PG_NEXT] = heads - (1 << TOP)      # highest pfn is the head
    pg[heads[0], PG_NEXT] = -1
    pg[heads, PG_PREV] = heads + (1 << TOP)
    pg[heads[-1], PG_PREV] = -1
    lists[TOP, LS_HEAD], lists[TOP, LS_COUNT] = heads[-1], nblocks
    return ZoneState(pg, lists, lock_table(len(classes), classes), meta, np.zeros(8, np.int64))


def new_threads(nthreads):
    """Per-thread tables for `nthreads` thread slots."""
    threads = np.zeros((nthreads, THREAD_FIELDS), np.int64)
    threads[:, T_RNG] = [(i * 0x9E3779B97F4A7C15) % (1 << 62) + 1 for i in range(nthreads)]
    return ThreadTables(threads, np.zeros((nthreads, RING, 4), np.int64),
                        np.zeros((nthreads, H.NCLASSES, H.NCLASSES), np.int64))


# ---------------------------------------------------------------- locking layer

@njit(nogil=True, cache=True, _nrt=False, inline="always")
def lockdep_note(z, th, me, lk, site):
    """Record class edges held -> lk's class (first site wins) and push lk on the held stack."""
    cls = z.locks[lk, L_CLASS]
    n = th.threads[me, T_NHELD]
    for j in range(n):
        held = z.locks[th.threads[me, T_HELD0 + j], L_CLASS]
        if th.edges[me, held, cls] == 0:
            th.edges[me, held, cls] = site + 1
    if n < MAX_HELD:
        th.threads[me, T_HELD0 + n] = lk
    th.threads[me, T_NHELD] = n + 1


@njit(nogil=True, cache=True, _nrt=False, inline="always")
def lockdep_forget(z, th, me, lk):
    """Pop lk from the held stack (any position); count an unlock of a lock not held."""
    n = th.threads[me, T_NHELD]
    for j in range(min(n, MAX_HELD) - 1, -1, -1):
        if th.threads[me, T_HELD0 + j] == lk:
            for k in range(j, min(n, MAX_HELD) - 1):
                th.threads[me, T_HELD0 + k] = th.threads[me, T_HELD0 + k + 1]
            th.threads[me, T_NHELD] = n - 1
            return
    th.threads[me, T_LOCKDEP_ERR] += 1


@njit(nogil=True, cache=True, _nrt=False, inline="always")
def take(z, th, me, lk, site):
    """Take lock `lk` (a fine-scheme lock; no-op in the zone scheme)."""
    if z.meta[M_SCHEME] == SCHEME_ZONE and lk != 0:
        return True
    if z.meta[M_LOCKDEP] != 0:
        lockdep_note(z, th, me, lk, site)
    if lock_acquire(z.locks, lk, me, z.ctl, th.threads):
        return True
    if z.meta[M_LOCKDEP] != 0:
        lockdep_forget(z, th, me, lk)
    return False


@njit(nogil=True, cache=True, _nrt=False, inline="always")
def trytake(z, th, me, lk):
    """Trylock `lk`: joins the held stack but adds no dependency edge (it waits for nobody)."""
    if z.meta[M_SCHEME] == SCHEME_ZONE and lk != 0:
        return True
    if not lock_try(z.locks, lk, me):
        return False
    if z.meta[M_LOCKDEP] != 0:
        n = th.threads[me, T_NHELD]
        if n < MAX_HELD:
            th.threads[me, T_HELD0 + n] = lk
        th.threads[me, T_NHELD] = n + 1
    return True


@njit(nogil=True, cache=True, _nrt=False, inline="always")
def drop(z, th, me, lk):
    """Release lock `lk` taken by take/trytake."""
    if z.meta[M_SCHEME] == SCHEME_ZONE and lk != 0:
        return
    if z.meta[M_LOCKDEP] != 0:
        lockdep_forget(z, th, me, lk)
    lock_release(z.locks, lk)


@njit(nogil=True, cache=True, _nrt=False, inline="always")
def enter(z, th, me):
    """Entry-point lock: the zone lock in the zone scheme, nothing in the fine one."""
    if z.meta[M_SCHEME] == SCHEME_ZONE:
        return take(z, th, me, 0, H.S_ENTER)
    return True


@njit(nogil=True, cache=True, _nrt=False, inline="always")
def leave(z, th, me):
    if z.meta[M_SCHEME] == SCHEME_ZONE:
        drop(z, th, me, 0)


@njit(nogil=True, cache=True, _nrt=False, inline="always")
def block_lock(z, pfn):
    return z.meta[M_BLOCK0] + (pfn >> TOP)


@njit(nogil=True, cache=True, _nrt=False, inline="always")
def area_lock(z, order):
    return z.meta[M_AREA0] + order


@njit(nogil=True, cache=True, _nrt=False, inline="always")
def capture_lock(z, lst):
    return z.meta[M_CAP0] + lst - NAREAS


@njit(nogil=True, cache=True, _nrt=False, inline="always")
def trace(z, th, me, op, pfn, order):
    """Append (op, pfn, order, ns) to this thread's flight-recorder ring."""
    if z.meta[M_TRACE] != 0:
        pos = th.threads[me, T_RING_POS]
        slot = pos % RING
        th.ring[me, slot, 0] = op
        th.ring[me, slot, 1] = pfn
        th.ring[me, slot, 2] = order
        th.ring[me, slot, 3] = monotonic_ns()
        th.threads[me, T_RING_POS] = pos + 1


# ---------------------------------------------------------------- list primitives
# Caller holds the list's lock and the block lock of `pfn`.

@njit(nogil=True, cache=True, _nrt=False, inline="always")
def push_head(z, lst, pfn):
    pg, ls = z.pages, z.lists
    old = ls[lst, LS_HEAD]
    pg[pfn, PG_NEXT] = old
    pg[pfn, PG_PREV] = -1
    if old >= 0:
        pg[old, PG_PREV] = pfn
    ls[lst, LS_HEAD] = pfn
    ls[lst, LS_COUNT] += 1
    pg[pfn, PG_LIST] = lst


@njit(nogil=True, cache=True, _nrt=False, inline="always")
def unlink(z, lst, pfn):
    pg, ls = z.pages, z.lists
    nxt, prv = pg[pfn, PG_NEXT], pg[pfn, PG_PREV]
    if prv >= 0:
        pg[prv, PG_NEXT] = nxt
    else:
        ls[lst, LS_HEAD] = nxt
    if nxt >= 0:
        pg[nxt, PG_PREV] = prv
    ls[lst, LS_COUNT] -= 1
    pg[pfn, PG_LIST] = -1
    pg[pfn, PG_NEXT] = -1
    pg[pfn, PG_PREV] = -1


# ---------------------------------------------------------------- allocator kernels

@njit(nogil=True, cache=True, _nrt=False)
def expand(z, th, me, pfn, high, low):
    """Split block `pfn` of order `high` down to `low`; upper halves go to the free lists.

    Caller holds pfn's block lock (all halves lie in that order-10 block).
    """
    pg = z.pages
    while high > low:
        high -= 1
        half = pfn + (1 << high)
        pg[half, PG_STATE] = FREE
        pg[half, PG_ORDER] = high
        lk = area_lock(z, high)
        take(z, th, me, lk, H.S_EXPAND_AREA)
        push_head(z, high, half)
        drop(z, th, me, lk)


@njit(nogil=True, cache=True, _nrt=False)
def merge_and_place(z, th, me, pfn, order, target):
    """`__free_one_page` / `__capture_one_page`: coalesce `pfn` and put it on a list.

    `target` < 0 is normal mode: merge FREE buddies; a CAPTURED buddy switches to
    capture mode on that buddy's list.  In capture mode a FREE or CAPTURED buddy
    (on any open list) merges and the result goes to the head of `target`.
    Caller holds pfn's block lock; pfn's head is TAIL (owned, on no list).
    Returns the pages this free added to a capture list it did not start on.
    """
    pg, ls = z.pages, z.lists
    pages0 = 1 << order
    switched = -1
    while order < TOP:
        buddy = pfn ^ (1 << order)
        st = pg[buddy, PG_STATE]
        if pg[buddy, PG_ORDER] != order or (st != FREE and st != CAPTURED):
            break
        if st == FREE:
            lk = area_lock(z, order)
            take(z, th, me, lk, H.S_MERGE_AREA)
            unlink(z, order, buddy)
            drop(z, th, me, lk)
            if target >= 0:
                ls[target, LS_MERGED] += 1 << order
        else:
            lst = pg[buddy, PG_LIST]
            lk = capture_lock(z, lst)
            take(z, th, me, lk, H.S_MERGE_CAPTURE)
            if ls[lst, LS_STATE] != OPEN:
                drop(z, th, me, lk)
                break
            unlink(z, lst, buddy)
            if target < 0:
                target = lst
                switched = lst
            elif lst != target:
                ls[target, LS_MERGED] += 1 << order
            drop(z, th, me, lk)
        pg[buddy, PG_STATE] = TAIL
        pfn &= buddy
        order += 1
    pg[pfn, PG_ORDER] = order
    if target >= 0:
        lk = capture_lock(z, target)
        take(z, th, me, lk, H.S_PLACE_CAPTURE)
        if ls[target, LS_STATE] == OPEN:
            pg[pfn, PG_STATE] = CAPTURED
            push_head(z, target, pfn)
            if switched >= 0:
                ls[target, LS_OTHER] += pages0
            drop(z, th, me, lk)
            return pages0 if switched >= 0 else 0
        drop(z, th, me, lk)
    pg[pfn, PG_STATE] = FREE
    lk = area_lock(z, order)
    take(z, th, me, lk, H.S_PLACE_AREA)
    push_head(z, order, pfn)
    drop(z, th, me, lk)
    return 0


@njit(nogil=True, cache=True, _nrt=False)
def alloc_block(z, th, me, order):
    """Allocate a block of `order`: pop the head of the smallest non-empty list >= order.

    Returns its pfn, NONE when nothing fits, ABORTED if the run stopped while waiting.
    """
    if not enter(z, th, me):
        return ABORTED
    pg, ls = z.pages, z.lists
    k = order
    while k <= TOP:
        if ls[k, LS_COUNT] == 0:        # a racy hint in the fine scheme, exact in the zone one
            k += 1
            continue
        alk = area_lock(z, k)
        if not take(z, th, me, alk, H.S_ALLOC_AREA):
            leave(z, th, me)
            return ABORTED
        pfn = ls[k, LS_HEAD]
        if pfn < 0:
            drop(z, th, me, alk)
            k += 1
            continue
        blk = block_lock(z, pfn)
        if not trytake(z, th, me, blk):
            # Area is held, so we must not wait for the block lock: drop, take in order.
            drop(z, th, me, alk)
            if not take(z, th, me, blk, H.S_ALLOC_BLOCK):
                leave(z, th, me)
                return ABORTED
            if not take(z, th, me, alk, H.S_ALLOC_AREA2):
                drop(z, th, me, blk)
                leave(z, th, me)
                return ABORTED
            if pg[pfn, PG_STATE] != FREE or pg[pfn, PG_LIST] != k:
                drop(z, th, me, alk)
                drop(z, th, me, blk)
                continue                # it moved while unlocked: look again at this order
        unlink(z, k, pfn)
        drop(z, th, me, alk)
        expand(z, th, me, pfn, k, order)
        pg[pfn, PG_STATE] = ALLOC
        pg[pfn, PG_ORDER] = order
        pg[pfn, PG_OWNER] = me
        drop(z, th, me, blk)
        leave(z, th, me)
        trace(z, th, me, OP_ALLOC, pfn, order)
        return pfn
    leave(z, th, me)
    return NONE


@njit(nogil=True, cache=True, _nrt=False)
def free_block(z, th, me, pfn, order, target):
    """Free an allocated block; `target` >= 0 is the caller's own open capture list.

    Returns 0, EINVAL (zone unchanged) if pfn is not an allocated block of that
    order or the capture list is not open, or ABORTED.
    """
    if not enter(z, th, me):
        return ABORTED
    pg = z.pages
    blk = block_lock(z, pfn)
    if not take(z, th, me, blk, H.S_FREE_BLOCK):
        leave(z, th, me)
        return ABORTED
    if pg[pfn, PG_STATE] != ALLOC or pg[pfn, PG_ORDER] != order:
        drop(z, th, me, blk)
        leave(z, th, me)
        return EINVAL
    if target >= 0 and z.lists[target, LS_STATE] != OPEN:
        drop(z, th, me, blk)
        leave(z, th, me)
        return EINVAL
    pg[pfn, PG_STATE] = TAIL
    pg[pfn, PG_OWNER] = -1
    if target >= 0:
        z.lists[target, LS_OWN] += 1 << order   # guarded: own list, only its owner frees into it
    trace(z, th, me, OP_CAPFREE if target >= 0 else OP_FREE, pfn, order)
    other = merge_and_place(z, th, me, pfn, order, target)
    if other > 0:
        trace(z, th, me, OP_CAPTURED, pfn, order)
    drop(z, th, me, blk)
    leave(z, th, me)
    return 0


@njit(nogil=True, cache=True, _nrt=False)
def capture_start(z, th, me, wanted):
    """Open an empty capture list for a block of order `wanted`; its list row, or NONE if all busy."""
    if not enter(z, th, me):
        return ABORTED
    ls = z.lists
    for lst in range(NAREAS, NAREAS + z.meta[M_NCAP]):
        if ls[lst, LS_STATE] == UNUSED and cas(ls, (lst, LS_STATE), UNUSED, OPEN) == UNUSED:
            lk = capture_lock(z, lst)
            if not take(z, th, me, lk, H.S_CAPSTART):
                store_release(ls, (lst, LS_STATE), UNUSED)
                leave(z, th, me)
                return ABORTED
            ls[lst, LS_WANTED] = wanted
            ls[lst, LS_OWNER] = me
            ls[lst, LS_OWN] = 0
            ls[lst, LS_OTHER] = 0
            ls[lst, LS_MERGED] = 0
            drop(z, th, me, lk)
            leave(z, th, me)
            trace(z, th, me, OP_CAPSTART, lst, wanted)
            return lst
    leave(z, th, me)
    return NONE


@njit(nogil=True, cache=True, _nrt=False)
def capture_finish(z, th, me, lst):
    """Close capture list `lst`: carve the first block >= wanted, free the others in order.

    Returns the carved pfn, NONE if no block was large enough, EINVAL if the list
    is not open, or ABORTED.  The list's row keeps its statistics until reused.
    """
    if not enter(z, th, me):
        return ABORTED
    pg, ls = z.pages, z.lists
    lk = capture_lock(z, lst)
    if not take(z, th, me, lk, H.S_CAPFINISH):
        leave(z, th, me)
        return ABORTED
    if ls[lst, LS_STATE] != OPEN:
        drop(z, th, me, lk)
        leave(z, th, me)
        return EINVAL
    ls[lst, LS_STATE] = CLOSED          # from now on no block of the chain is a merge target
    chain = ls[lst, LS_HEAD]
    ls[lst, LS_HEAD] = -1
    ls[lst, LS_COUNT] = 0
    wanted = ls[lst, LS_WANTED]
    drop(z, th, me, lk)
    got = NONE
    p = chain
    while p >= 0 and got < 0:
        if pg[p, PG_ORDER] >= wanted:
            blk = block_lock(z, p)
            take(z, th, me, blk, H.S_CAPFINISH_BLOCK)
            expand(z, th, me, p, pg[p, PG_ORDER], wanted)
            pg[p, PG_STATE] = ALLOC
            pg[p, PG_ORDER] = wanted
            pg[p, PG_LIST] = -1
            pg[p, PG_OWNER] = me
            drop(z, th, me, blk)
            got = p
        p = pg[p, PG_NEXT]
    p = chain
    while p >= 0:
        nxt = pg[p, PG_NEXT]
        if p != got:
            blk = block_lock(z, p)
            take(z, th, me, blk, H.S_CAPFINISH_BLOCK)
            pg[p, PG_STATE] = TAIL
            pg[p, PG_LIST] = -1
            merge_and_place(z, th, me, p, pg[p, PG_ORDER], -1)
            drop(z, th, me, blk)
        p = nxt
    store_release(ls, (lst, LS_STATE), UNUSED)
    leave(z, th, me)
    trace(z, th, me, OP_CAPFINISH, got, wanted)
    return got
