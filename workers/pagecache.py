"""The page-cache pool: a FIFO of order-0 pages that allocators "cache" instead of freeing.

Like file pages, they give reclaimers something to reclaim.  Guarded by the
pool lock (class pagecache), which is never held into the allocator.
Layout: [count, head, capacity, ..., ring of pfns from POOL_RING].
"""

import numpy as np
from numba import njit

from harness import hierarchy as H
from harness.lockverbs import lock, pool_lock, unlock

P_COUNT, P_HEAD, P_CAP = 0, 1, 2
POOL_RING = 8


def new_pool(capacity):
    pool = np.zeros(POOL_RING + capacity, np.int64)
    pool[P_CAP] = capacity
    return pool


@njit(nogil=True, cache=True, _nrt=False)
def pool_put(z, t, me, pool, pfn):
    """Append `pfn`; False (nothing changed) when the pool is full or the run aborted."""
    lk = pool_lock(z)
    if not lock(z, t, me, lk, H.S_POOL):
        return False
    ok = pool[P_COUNT] < pool[P_CAP]
    if ok:
        pool[POOL_RING + (pool[P_HEAD] + pool[P_COUNT]) % pool[P_CAP]] = pfn
        pool[P_COUNT] += 1
    unlock(z, t, me, lk)
    return ok


@njit(nogil=True, cache=True, _nrt=False)
def pool_take(z, t, me, pool, out, n):
    """Move up to `n` of the oldest pages into `out`; returns how many."""
    lk = pool_lock(z)
    if not lock(z, t, me, lk, H.S_POOL):
        return 0
    k = min(n, pool[P_COUNT], out.shape[0])
    for i in range(k):
        out[i] = pool[POOL_RING + (pool[P_HEAD] + i) % pool[P_CAP]]
    pool[P_HEAD] = (pool[P_HEAD] + k) % pool[P_CAP]
    pool[P_COUNT] -= k
    unlock(z, t, me, lk)
    return k


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def pool_has_room(pool):
    return pool[P_COUNT] < pool[P_CAP]       # a racy hint; pool_put decides under the lock
