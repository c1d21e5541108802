"""What both worker roles share: config fields, counters, detectors, held set, page-cache pool.

Every function here is a small inlined kernel.  Harness bookkeeping lives in
the caller's own thread row (counters, violations) or its own `held` array,
so it never races; only the allocator paths and the page-cache pool lock
are shared.

Detectors (switched by flags in the zone table):
  ownership  allocation claims every page of the block for the thread: a CAS
             from 0 on the head, check-and-set on the tails; a page already
             claimed is a double allocation, reported with both owners.
             Free checks the pages are still ours and releases them.
  poison     a free page holds POISON; allocation checks it and stamps the
             pages with a per-allocation tag, which free checks and re-poisons.
  invariants besides the runner's quiescent checks: a reclaimer audits its own
             open capture list before finishing it (`audit_capture`).
"""

import numpy as np
from numba import njit

from harness.atomics import cas, cycle_counter, futex_wait, load_acquire, store_release
from harness.layout import (CAPTURED, CTL_PARK, CTL_STOP, F_OWNERSHIP, F_POISON,
                            F_STOP_ON_VIOLATION, FREE, LS_HEAD, M_POOL0, PG_CLAIM, PG_LIST,
                            PG_NEXT, PG_ORDER, PG_STAMP, PG_STATE, T_COUNT0, T_HEARTBEAT,
                            T_NVIOL, T_PARKED, T_STATE, T_VIOL0, TOP, VIOL_ROWS, ctl_row,
                            flags_row, meta_row)
from harness import hierarchy as H
from harness.rng import bounded
from harness import zone as Z
from harness.zone import acquire, release

POISON = 0x6B6B6B6B6B6B6B6B             # Linux's POISON_FREE byte, 8 times
PAGECACHE = 1023                        # owner slot of pages parked in the page-cache pool

# cfg: one int64 array of run settings, shared read-only by all workers
CFG_CDF0 = 0                            # 11 cumulative weights (of 2**20): allocator orders
CFG_RCDF0 = 11                          # 11 cumulative weights: reclaimer wanted orders
CFG_HELD, CFG_CACHE_PCT, CFG_CAPTURE, CFG_BATCH_MUL, CFG_BATCH_MIN, CFG_RHELD = range(22, 28)
CFG_FIELDS = 32

# counters: t[me, T_COUNT0 + c // 8, c % 8]
(C_OPS, C_ALLOCS, C_ALLOC_FAIL, C_FREES, C_CACHED, C_RECLAIMS, C_RECLAIMED, C_DELIVERED,
 C_CAP_OWN, C_CAP_OTHER, C_CAP_MERGED, C_RETRY_OK, C_PARKS, C_ABORTS, C_CAP_NOSLOT) = range(15)
C_HIGH_TRY0, C_HIGH_OK0, C_HIGH_DIRECT0 = 16, 32, 48      # + order
COUNTER_NAMES = ("ops", "allocs", "alloc_failures", "frees", "to_page_cache", "reclaims",
                 "reclaimed_pages", "captures_delivered", "captured_own_pages",
                 "captured_other_pages", "captured_merged_free_pages", "retry_successes",
                 "parks", "aborts", "capture_no_slot")

# violation rows: t[me, T_VIOL0 + i, V_*]
V_KIND, V_PFN, V_ORDER, V_PAGE, V_EXPECTED, V_FOUND, V_NS, V_OP = range(8)
(K_DOUBLE_ALLOC, K_NOT_OWNER, K_POISON, K_STAMP, K_REJECTED_FREE, K_STALE_CAPTURE,
 K_UNMERGED_CAPTURE) = range(1, 8)
KIND_NAMES = {K_DOUBLE_ALLOC: "double_allocation", K_NOT_OWNER: "free_of_page_not_owned",
              K_POISON: "write_to_free_page", K_STAMP: "write_to_allocated_page",
              K_REJECTED_FREE: "allocator_rejected_valid_free",
              K_STALE_CAPTURE: "new_capture_list_not_empty",
              K_UNMERGED_CAPTURE: "captured_block_beside_free_buddy"}

# pool: [count, head, capacity, ..., ring of pfns from POOL_RING]
P_COUNT, P_HEAD, P_CAP = 0, 1, 2
POOL_RING = 8

# held: rows of (pfn, order, tag)
H_PFN, H_ORDER, H_TAG = 0, 1, 2


def order_cdf(mix):
    """Cumulative weights (out of 2**20) of orders 0..10 from {order: weight}, for draw_order."""
    w = np.array([float(mix.get(k, 0)) for k in range(11)])
    return np.round(np.cumsum(w) / w.sum() * (1 << 20)).astype(np.int64)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def count(t, me, c, n):
    t[me, T_COUNT0 + (c >> 3), c & 7] += n


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def flag(z, f):
    return z[flags_row(z), f] != 0


@njit(nogil=True, cache=True, _nrt=False)
def violation(z, t, me, kind, pfn, order, page, expected, found):
    """Record a violation in this thread's rows; stop the run if so configured."""
    n = t[me, T_STATE, T_NVIOL]
    if n < VIOL_ROWS:
        row = T_VIOL0 + n
        t[me, row, V_KIND] = kind
        t[me, row, V_PFN] = pfn
        t[me, row, V_ORDER] = order
        t[me, row, V_PAGE] = page
        t[me, row, V_EXPECTED] = expected
        t[me, row, V_FOUND] = found
        t[me, row, V_NS] = cycle_counter()
        t[me, row, V_OP] = t[me, T_COUNT0, C_OPS]
    t[me, T_STATE, T_NVIOL] = n + 1
    if flag(z, F_STOP_ON_VIOLATION):
        store_release(z, (ctl_row(z), CTL_STOP), 1)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def claim_block(z, t, me, pfn, order, tag):
    """Detectors on allocation: claim every page for `me`, check poison, stamp `tag`."""
    npages = 1 << order
    if flag(z, F_OWNERSHIP):
        old = cas(z, (pfn, PG_CLAIM), 0, me + 1)
        if old != 0:
            violation(z, t, me, K_DOUBLE_ALLOC, pfn, order, pfn, me, old - 1)
        for p in range(pfn + 1, pfn + npages):
            old = z[p, PG_CLAIM]
            if old != 0:
                violation(z, t, me, K_DOUBLE_ALLOC, pfn, order, p, me, old - 1)
            z[p, PG_CLAIM] = me + 1
    if flag(z, F_POISON):
        for p in range(pfn, pfn + npages):
            if z[p, PG_STAMP] != POISON:
                violation(z, t, me, K_POISON, pfn, order, p, POISON, z[p, PG_STAMP])
            z[p, PG_STAMP] = tag


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def hand_over(z, t, me, pfn, order, owner, tag, new_owner, new_tag):
    """Detectors when a block changes hands: check it is `owner`'s with `tag`, give it on.

    new_owner -1 with new_tag POISON is a free (claims dropped, pages poisoned).
    """
    npages = 1 << order
    if flag(z, F_POISON):
        for p in range(pfn, pfn + npages):
            if z[p, PG_STAMP] != tag:
                violation(z, t, me, K_STAMP, pfn, order, p, tag, z[p, PG_STAMP])
            z[p, PG_STAMP] = new_tag
    if flag(z, F_OWNERSHIP):
        for p in range(pfn + npages - 1, pfn, -1):
            old = z[p, PG_CLAIM]
            if old != owner + 1:
                violation(z, t, me, K_NOT_OWNER, pfn, order, p, owner, old - 1)
            z[p, PG_CLAIM] = new_owner + 1
        old = cas(z, (pfn, PG_CLAIM), owner + 1, new_owner + 1)   # head last: publishes the rest
        if old != owner + 1:
            violation(z, t, me, K_NOT_OWNER, pfn, order, pfn, owner, old - 1)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def draw_order(cfg, base, x):
    """An order drawn from the 11 cumulative weights at cfg[base:] with random state `x`."""
    r = bounded(x, 1 << 20)
    k = 0
    while k < 10 and cfg[base + k] <= r:
        k += 1
    return k


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def make_tag(me, seq):
    return ((me + 1) << 40) | (seq & ((1 << 40) - 1))


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def pagecache_tag():
    return (PAGECACHE + 1) << 40


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def park_if_asked(z, t, me):
    """Quiescent point: while the runner asks (CTL_PARK = epoch), wait here holding no lock."""
    epoch = load_acquire(z, (ctl_row(z), CTL_PARK))
    if epoch != 0:
        _park(z, t, me, epoch)


@njit(nogil=True, cache=True, _nrt=False)
def _park(z, t, me, epoch):
    ctl = ctl_row(z)
    count(t, me, C_PARKS, 1)
    store_release(t, (me, T_STATE, T_PARKED), epoch)
    while load_acquire(z, (ctl, CTL_PARK)) == epoch and load_acquire(z, (ctl, CTL_STOP)) == 0:
        futex_wait(z, (ctl, CTL_PARK), epoch, 1_000_000)
    store_release(t, (me, T_STATE, T_PARKED), 0)


CHECK_EVERY = 64                        # operations between heartbeats / park and stop checks


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def between_ops(z, t, me, ops):
    """Per-operation housekeeping, every CHECK_EVERY operations: publish the op count and a
    heartbeat, park while asked; True when the run should end."""
    if ops & (CHECK_EVERY - 1) != 0:
        return False
    t[me, T_COUNT0, C_OPS] = ops
    t[me, T_STATE, T_HEARTBEAT] += 1
    park_if_asked(z, t, me)
    return load_acquire(z, (ctl_row(z), CTL_STOP)) != 0


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def free_checked(z, t, me, pfn, order, owner, tag, target):
    """Detectors, then free (into capture list `target` if >= 0); False if the run aborted."""
    hand_over(z, t, me, pfn, order, owner, tag, -1, POISON)
    rc = Z.free_block(z, t, me, pfn, order, target)
    if rc == Z.EINVAL:
        violation(z, t, me, K_REJECTED_FREE, pfn, order, pfn, 0, 0)
    return rc != Z.ABORTED


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def held_put(held, n, pfn, order, tag):
    """Append a block to the first `n` rows of `held`; returns the new count."""
    held[n, H_PFN], held[n, H_ORDER], held[n, H_TAG] = pfn, order, tag
    return n + 1


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def keep_block(z, t, me, held, n, pfn, order, seq):
    """A block just allocated: count it, claim and stamp it with tag `seq`, hold it.

    Returns the new number of held blocks."""
    count(t, me, C_ALLOCS, 1)
    tag = make_tag(me, seq)
    claim_block(z, t, me, pfn, order, tag)
    return held_put(held, n, pfn, order, tag)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def held_take(held, n, j):
    """Remove row `j` of the first `n` (the last row moves into its place): (pfn, order, tag)."""
    pfn, order, tag = held[j, H_PFN], held[j, H_ORDER], held[j, H_TAG]
    held[j, H_PFN], held[j, H_ORDER], held[j, H_TAG] = \
        held[n - 1, H_PFN], held[n - 1, H_ORDER], held[n - 1, H_TAG]
    return pfn, order, tag


@njit(nogil=True, cache=True, _nrt=False)
def audit_capture(z, t, me, lst, scratch):
    """Invariant detector on the caller's own open capture list `lst`, under locks.

    No captured block may have a FREE buddy of its order: a free that meets a
    captured buddy joins its list.  The list is walked under its lock into
    `scratch`, then each block is checked under its block lock (never both:
    block is taken before capture).  Returns False if the run aborted.
    """
    if not Z.enter(z, t, me):
        return False
    lk = Z.capture_lock(z, lst)
    if not Z.take(z, t, me, lk, H.S_AUDIT_CAPTURE):
        Z.leave(z, t, me)
        return False
    n = 0
    p = z[Z.lrow(z, lst), LS_HEAD]
    while p >= 0 and n < scratch.shape[0]:
        scratch[n] = p
        n += 1
        p = z[p, PG_NEXT]
    Z.drop(z, t, me, lk)
    for i in range(n):
        p = scratch[i]
        blk = Z.block_lock(z, p)
        if not Z.take(z, t, me, blk, H.S_AUDIT_BLOCK):
            Z.leave(z, t, me)
            return False
        order = z[p, PG_ORDER]
        if z[p, PG_STATE] == CAPTURED and z[p, PG_LIST] == lst and order < TOP:
            buddy = p ^ (1 << order)
            if z[buddy, PG_STATE] == FREE and z[buddy, PG_ORDER] == order:
                violation(z, t, me, K_UNMERGED_CAPTURE, p, order, buddy, CAPTURED, FREE)
        Z.drop(z, t, me, blk)
    Z.leave(z, t, me)
    return True


# ---------------------------------------------------------------- page-cache pool
# A FIFO of order-0 pages that allocators "cache" instead of freeing, like file
# pages, so that reclaimers have something to reclaim.  Guarded by the pool lock,
# which is never held into the allocator.

@njit(nogil=True, cache=True, _nrt=False)
def pool_put(z, t, me, pool, pfn):
    """Append `pfn`; False (nothing changed) when the pool is full or the run aborted."""
    lk = z[meta_row(z), M_POOL0]
    if not acquire(z, t, me, lk, H.S_POOL):
        return False
    ok = pool[P_COUNT] < pool[P_CAP]
    if ok:
        pool[POOL_RING + (pool[P_HEAD] + pool[P_COUNT]) % pool[P_CAP]] = pfn
        pool[P_COUNT] += 1
    release(z, t, me, lk)
    return ok


@njit(nogil=True, cache=True, _nrt=False)
def pool_take(z, t, me, pool, out, n):
    """Move up to `n` of the oldest pages into `out`; returns how many."""
    lk = z[meta_row(z), M_POOL0]
    if not acquire(z, t, me, lk, H.S_POOL):
        return 0
    k = min(n, pool[P_COUNT], out.shape[0])
    for i in range(k):
        out[i] = pool[POOL_RING + (pool[P_HEAD] + i) % pool[P_CAP]]
    pool[P_HEAD] = (pool[P_HEAD] + k) % pool[P_CAP]
    pool[P_COUNT] -= k
    release(z, t, me, lk)
    return k


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def pool_has_room(pool):
    return pool[P_COUNT] < pool[P_CAP]       # a racy hint; pool_put decides under the lock
