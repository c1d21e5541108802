"""Plain allocator role: allocate from an order mix, hold, write, free; cache some order-0 pages.

One call runs the whole thread until the stop word is set.  Each step it
allocates when it holds few blocks, frees a random held block when it holds
many, and tosses a coin in between, so blocks are held for a random time.
A freed order-0 page goes to the page-cache pool instead, CFG_CACHE_PCT
percent of the time, so that reclaimers find memory to reclaim; every
CFG_LOOKUP_EVERY operations (a power of two: a mask, not a division, per
operation; 0 without a page cache) it looks a cached page up (a reader holding a
reference for a moment), racing with reclaim and migration of that page; each lookup's
random draw is made one lookup early, so the detectors' reads can be prefetched.
"""

from numba import njit

from harness import pcp as P
from harness import zone as Z
from harness.layout import T_COUNT0, T_RNG, T_STATE
from harness.rng import bounded, step
from workers.config import CFG_CACHE_PCT, CFG_CDF0, CFG_HELD, CFG_LOOKUP_EVERY, draw_order
from workers.counters import C_ABORTS, C_ALLOC_FAIL, C_CACHED, C_FREES, C_OPS, count
from workers.detectors import PAGECACHE, hand_over
from workers.held import held_take, keep_block
from workers.pagecache import cache_key, lookup, pool_has_room, pool_put, prefetch_lookup
from workers.park import ALLOCATOR_CHECK_EVERY, between_ops


@njit(nogil=True, cache=True, _nrt=False)
def allocator_loop(z, t, me, pool, held, cfg):
    """Run the allocator role for thread slot `me`; returns the number of held blocks."""
    x = t[me, T_STATE, T_RNG]
    cap = min(cfg[CFG_HELD], held.shape[0])
    n = 0
    seq = 0
    ops = 0
    x = step(x)
    look = bounded(x, 1 << 30)                  # the next lookup's draw, drawn one early
    while not between_ops(z, t, me, ops, ALLOCATOR_CHECK_EVERY):
        ops += 1
        x = step(x)
        if cfg[CFG_LOOKUP_EVERY] > 0 and ops & (cfg[CFG_LOOKUP_EVERY] - 1) == 0:
            lookup(z, t, me, pool, look)        # a reader of the page cache
            x = step(x)
            look = bounded(x, 1 << 30)
            prefetch_lookup(z, pool, look)
        if n == 0 or (n < cap // 2 and bounded(x, 4) != 0) or (n < cap and bounded(x, 2) == 0):
            x = step(x)
            order = draw_order(cfg, CFG_CDF0, x)
            pfn = P.alloc(z, t, me, order)      # this thread's per-CPU list, if the zone has them
            if pfn == Z.ABORTED:
                count(t, me, C_ABORTS, 1)
                break
            if pfn < 0:
                count(t, me, C_ALLOC_FAIL, 1)
                continue
            seq += 1
            n = keep_block(z, t, me, held, n, pfn, order, seq, P.on_lists(z, order))
        else:
            x = step(x)
            pfn, order, tag = held_take(held, n, bounded(x, n))
            n -= 1
            x = step(x)
            if order == 0 and bounded(x, 100) < cfg[CFG_CACHE_PCT] and pool_has_room(pool):
                key = cache_key(me, ops)
                hand_over(z, t, me, pfn, 0, me, tag, PAGECACHE, key)
                if pool_put(z, t, me, pool, pfn, key):
                    count(t, me, C_CACHED, 1)
                    continue
                hand_over(z, t, me, pfn, 0, PAGECACHE, key, me, tag)
            if not P.free_checked(z, t, me, pfn, order, me, tag):
                count(t, me, C_ABORTS, 1)
                break
            count(t, me, C_FREES, 1)
    t[me, T_STATE, T_RNG] = x
    t[me, T_COUNT0, C_OPS] = ops
    return n
