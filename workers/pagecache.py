"""The page cache: a FIFO of order-0 pages that allocators "cache" instead of freeing.

Like file pages, they give reclaimers something to reclaim, readers something to
look up and migration something to move.  Each cached page has a key (its
"file index", also its contents: the page's stamp) and a reference count
(harness.pageref).  The FIFO ring, each page's slot in it and its key are
guarded by the pool lock (class pagecache), which is never held into the
allocator; counts are atomic.
Layout: [count, head, capacity, pages, ref0, key0, slot0, -], the ring of pfns from
POOL_RING, then per pfn: its count (from ref0), key (key0), ring slot (slot0).
Invariant (quiescent): a page is on the ring exactly when its count is 1; every
other page has count 0.
"""

import numpy as np
from numba import njit

from harness import faults as F
from harness import hierarchy as H
from harness.atomics import prefetch
from harness.chaos import P_CACHE_FOUND, P_CACHE_USE, chaos
from harness.faults import fault
from harness.layout import F_OWNERSHIP, F_POISON, PG_CLAIM
from harness.lockverbs import lock, pool_lock, unlock
from harness.pageref import REF0, freeze, get_page, get_unless_zero, put_page, unfreeze
from harness.stamps import SEQ_MASK
from workers.counters import (RC_LOOKUP_HIT, RC_LOOKUP_MISS, RC_LOOKUPS, RC_RECLAIM_BUSY,
                              count_ref)
from workers.claims import owner_word, word_owner
from workers.detectors import (K_NOT_CACHED_REF, K_READ_AFTER_FREE, PAGECACHE, flag,
                               page_stamp, pagecache_tag, violation)

P_COUNT, P_HEAD, P_CAP, P_PAGES, P_REF0, P_KEY0, P_SLOT0 = range(7)
POOL_RING = 8
assert P_REF0 == REF0


def new_pool(capacity, pages):
    pool = np.zeros(POOL_RING + capacity + 3 * pages, np.int64)
    pool[P_CAP], pool[P_PAGES] = capacity, pages
    pool[P_REF0] = POOL_RING + capacity
    pool[P_KEY0] = pool[P_REF0] + pages
    pool[P_SLOT0] = pool[P_KEY0] + pages
    return pool


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def cache_key(me, seq):
    """A cached page's key: the page cache's owner field, and 7 bits mixed from the
    caching thread and its sequence (a page cached again is told from its last caching
    127 times in 128)."""
    return pagecache_tag() | ((seq + 37 * me) & SEQ_MASK)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def page_key(pool, pfn):
    """The key of cached page `pfn` (stable while the caller holds a reference or froze it)."""
    return pool[pool[P_KEY0] + pfn]


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def ring_index(pool, i):
    """Pool index of the i-th oldest entry."""
    return POOL_RING + (pool[P_HEAD] + i) % pool[P_CAP]


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def _append(pool, pfn):
    s = ring_index(pool, pool[P_COUNT])
    pool[s] = pfn
    pool[pool[P_SLOT0] + pfn] = s
    pool[P_COUNT] += 1


@njit(nogil=True, cache=True, _nrt=False)
def pool_put(z, t, me, pool, pfn, key):
    """Cache `pfn` under `key` (its stamp already written); False (nothing changed) when the
    pool is full or the run aborted.  The count goes 0 -> 1 last: then readers may come."""
    lk = pool_lock(z)
    if not lock(z, t, me, lk, H.S_POOL):
        return False
    ok = pool[P_COUNT] < pool[P_CAP]
    if ok:
        pool[pool[P_KEY0] + pfn] = key
        _append(pool, pfn)
        unfreeze(pool, pfn, 1)
    unlock(z, t, me, lk)
    return ok


@njit(nogil=True, cache=True, _nrt=False)
def pool_take(z, t, me, pool, out, n):
    """Take up to `n` of the oldest pages into `out`, each frozen first; returns how many.

    A page whose count will not freeze (a reader holds it, or a migration froze it) is
    skipped: it moves to the tail of the FIFO, as a referenced page is rotated on the LRU.
    """
    lk = pool_lock(z)
    if not lock(z, t, me, lk, H.S_POOL):
        return 0
    k = 0
    busy = 0
    for _ in range(pool[P_COUNT]):
        if k >= min(n, out.shape[0]):
            break
        pfn = pool[ring_index(pool, 0)]
        pool[P_HEAD] = (pool[P_HEAD] + 1) % pool[P_CAP]
        pool[P_COUNT] -= 1
        if freeze(pool, pfn, 1):
            out[k] = pfn
            k += 1
        else:
            _append(pool, pfn)
            busy += 1
    unlock(z, t, me, lk)
    count_ref(t, me, RC_RECLAIM_BUSY, busy)
    return k


@njit(nogil=True, cache=True, _nrt=False)
def pool_switch(z, t, me, pool, old, new):
    """Migration: point `old`'s cache entry at `new` (key moves along), then unfreeze `new`.

    The caller froze `old`; False if `old` is no longer on the ring (it was taken: a
    migration that did not freeze) or the run aborted."""
    lk = pool_lock(z)
    if not lock(z, t, me, lk, H.S_POOL):
        return False
    s = pool[pool[P_SLOT0] + old]
    live = (s - POOL_RING - pool[P_HEAD]) % pool[P_CAP] < pool[P_COUNT]
    ok = s >= POOL_RING and live and pool[s] == old
    if ok:
        pool[s] = new
        pool[pool[P_SLOT0] + new] = s
        pool[pool[P_KEY0] + new] = pool[pool[P_KEY0] + old]
        unfreeze(pool, new, 1)
    unlock(z, t, me, lk)
    return ok


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def _drawn(pool, r, n):
    """The cached page that random draw `r` picks among `n` (a racy hint: `lookup` and
    `prefetch_lookup` both pick with it, so the prefetch warms the page the lookup reads)."""
    return pool[ring_index(pool, r % n)]


@njit(nogil=True, cache=True, _nrt=False)
def lookup(z, t, me, pool, r):
    """`find_get_page` of a random cached page (random draw `r`): take a reference only if
    its count is not zero, read the page twice (a reader using it), drop the reference.

    While the reference is held nobody can free the page, so the page must still be the
    cache's (ownership) and hold its key (poison); either failing is a read after free.
    """
    n = pool[P_COUNT]                   # racy hints: a stale slot is caught by the count
    if n <= 0:
        return
    count_ref(t, me, RC_LOOKUPS, 1)
    pfn = _drawn(pool, r, n)
    chaos(z, t, me, P_CACHE_FOUND)      # found, not yet referenced: the page may be frozen now
    plain_increment = fault(z, F.FAULT_LOOKUP_FROZEN_REF)
    if plain_increment:
        get_page(pool, pfn)
    elif not get_unless_zero(pool, pfn):
        count_ref(t, me, RC_LOOKUP_MISS, 1)
        return
    count_ref(t, me, RC_LOOKUP_HIT, 1)
    key = page_key(pool, pfn)
    for _ in range(2):                  # each word read once: a report names what failed
        if flag(z, F_OWNERSHIP):
            word = z[pfn, PG_CLAIM]
            if word != owner_word(PAGECACHE, 0):
                violation(z, t, me, K_NOT_CACHED_REF, pfn, 0, pfn, PAGECACHE, word_owner(word))
                break
        if flag(z, F_POISON):
            stamp = page_stamp(z, pfn, 0)
            if stamp != key:
                violation(z, t, me, K_READ_AFTER_FREE, pfn, 0, pfn, key, stamp)
                break
        chaos(z, t, me, P_CACHE_USE)    # the reader uses the page
    put_page(pool, pfn)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def prefetch_lookup(z, pool, r):
    """Warm what the detectors will read in `lookup(..., r)`, one lookup early: the page's
    row, which holds its claim word (ownership) and its contents (poison).  A random page's
    row is a cache miss when read cold, which cost the allocator more than the rest of
    those two detectors' work.  A hint only: by the time of the lookup its draw may find
    another page."""
    n = pool[P_COUNT]
    if (flag(z, F_OWNERSHIP) or flag(z, F_POISON)) and n > 0:
        prefetch(z, (_drawn(pool, r, n), PG_CLAIM))


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def pool_has_room(pool):
    return pool[P_COUNT] < pool[P_CAP]       # a racy hint; pool_put decides under the lock


def check_pagecache(z, pool):
    """Quiescent invariants of the cache: every page on the ring has count 1 and holds its
    key when poison is on; every other page has count 0.  A list of violation dicts."""
    from harness.layout import Sections
    sec = Sections(z)
    n, cap = int(pool[P_COUNT]), int(pool[P_CAP])
    # vector operations, not a loop over the ring: every worker waits, parked, meanwhile
    ring = pool[POOL_RING + (int(pool[P_HEAD]) + np.arange(n)) % cap]
    refs = pool[pool[P_REF0]:pool[P_REF0] + pool[P_PAGES]]
    want = np.zeros(len(refs), np.int64)
    want[ring] = 1
    out = []
    for pfn in np.nonzero(refs != want)[0][:16]:
        pfn = int(pfn)
        out.append({"kind": "page_ref_count", "pfn": pfn, "count": int(refs[pfn]),
                    "expected": int(want[pfn]),
                    "message": f"page {pfn} has reference count {int(refs[pfn])} at a quiescent"
                               f" point, expected {int(want[pfn])}"
                               f" ({'cached' if want[pfn] else 'not cached'})"})
    if sec.flags[F_POISON]:
        keys = pool[pool[P_KEY0]:pool[P_KEY0] + pool[P_PAGES]]
        for pfn in ring[sec.contents[ring] != keys[ring]][:1]:
            pfn = int(pfn)
            out.append({"kind": "cached_page_contents", "pfn": pfn,
                        "message": f"cached page {pfn} does not hold its key"
                                   f" {int(keys[pfn]):#x}: {int(sec.contents[pfn]):#x}"})
    return out
