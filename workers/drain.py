"""End of a clean run: give every held block and page-cache page back, single-threaded.

Afterwards a correct zone is exactly a fresh one (all order-10 blocks free),
which checks that every page was accounted for.
"""

from numba import njit

from harness import zone as Z
from harness.pageref import freeze
from workers.detectors import PAGECACHE, POISON, hand_over
from workers.held import H_ORDER, H_PFN, H_TAG
from workers.pagecache import P_CAP, P_COUNT, P_HEAD, POOL_RING, page_key


@njit(nogil=True, cache=True, _nrt=False)
def drain_held(z, t, me, held, n):
    """Free the first `n` blocks of `held` (owned by slot `me`); returns frees the zone rejected."""
    rejected = 0
    for i in range(n):
        pfn, order = held[i, H_PFN], held[i, H_ORDER]
        hand_over(z, t, me, pfn, order, me, held[i, H_TAG], -1, POISON)
        if Z.free_block(z, t, me, pfn, order, -1) != 0:
            rejected += 1
    return rejected


@njit(nogil=True, cache=True, _nrt=False)
def drain_pool(z, t, me, pool):
    """Free every page-cache page; returns frees the zone rejected."""
    rejected = 0
    for i in range(pool[P_COUNT]):
        pfn = pool[POOL_RING + (pool[P_HEAD] + i) % pool[P_CAP]]
        freeze(pool, pfn, 1)
        key = page_key(pool, pfn)
        hand_over(z, t, me, pfn, 0, PAGECACHE, key, -1, POISON)
        if Z.free_block(z, t, me, pfn, 0, -1) != 0:
            rejected += 1
    pool[P_COUNT] = 0
    return rejected
