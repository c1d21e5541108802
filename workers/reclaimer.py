"""Direct reclaimer role: wants high-order blocks; when allocation fails, reclaims with capture.

The flow of the reclaim-capture patch: try to allocate a block of the wanted
order; on failure open a capture list, free a batch of the oldest page-cache
pages into it (their buddies freed by other threads join the list too), then
take the wanted block from the list and free the rest.  With capture off the
same pages are freed normally and the allocation is retried: the baseline
the patch improved on.  Obtained blocks are held for a while, then freed.
"""

from numba import njit

from harness import pcp as P
from harness import zone as Z
from harness.atomics import monotonic_ns
from harness.isolate import OWN_ONLY
from harness.migrate import set_list_mode
from harness.layout import (CS_MERGED, CS_OTHER, CS_OWN, F_CAPTURE_AUDIT, LS_COUNT, LS_HEAD,
                            T_CAPSTAT, T_COUNT0, T_RNG, T_STATE)
from harness.rng import bounded, step
from workers.config import (CFG_BATCH_MIN, CFG_BATCH_MUL, CFG_CAPTURE, CFG_POLICY, CFG_RCDF0,
                            CFG_RHELD, POLICY_CAPTURE_OWN, POLICY_MIGRATE, draw_order)
from workers.counters import (C_ABORTS, C_ALLOC_FAIL, C_CAP_MERGED, C_CAP_NOSLOT, C_CAP_OTHER,
                              C_CAP_OWN, C_DELIVERED, C_FREES, C_HIGH_DIRECT0, C_HIGH_OK0,
                              C_HIGH_TRY0, C_OPS, C_PCP_DRAINED, C_RECLAIMED, C_RECLAIMS,
                              C_RETRY_OK, RC_RECLAIM_OK, RC_RECLAIM_OK_NS, count, count_ref)
from workers.detectors import (K_STALE_CAPTURE, PAGECACHE, audit_capture, check_capture_balance,
                               flag, free_checked, violation)
from workers.held import held_take, keep_block
from workers.migrator import migrate_reclaim
from workers.pagecache import page_key, pool_take
from workers.park import RECLAIMER_CHECK_EVERY, beat, between_ops, park_if_asked

BATCH_MAX = 4096                # size of the `batch` scratch array a reclaimer is given


@njit(nogil=True, cache=True, _nrt=False)
def reclaim(z, t, me, pool, batch, cfg, wanted):
    """Reclaim page-cache pages for a block of `wanted`; the block's pfn or a status code."""
    n = pool_take(z, t, me, pool, batch, max(cfg[CFG_BATCH_MIN], cfg[CFG_BATCH_MUL] << wanted))
    count(t, me, C_RECLAIMS, 1)
    count(t, me, C_RECLAIMED, n)
    lst = Z.NONE
    if cfg[CFG_CAPTURE] != 0:
        lst = Z.capture_start(z, t, me, wanted)
        if lst == Z.ABORTED:
            return Z.ABORTED
        if lst < 0:
            count(t, me, C_CAP_NOSLOT, 1)
        elif cfg[CFG_POLICY] == POLICY_CAPTURE_OWN and \
                not set_list_mode(z, t, me, lst, OWN_ONLY, 0):
            return Z.ABORTED
        elif z[Z.lrow(z, lst), LS_HEAD] != -1 or z[Z.lrow(z, lst), LS_COUNT] != 0:
            # A list must start empty: blocks left on a finished list were stranded.
            violation(z, t, me, K_STALE_CAPTURE, z[Z.lrow(z, lst), LS_HEAD], 0, lst, 0,
                      z[Z.lrow(z, lst), LS_COUNT])
    for i in range(n):
        if i & 63 == 63:
            beat(t, me)                 # a batch of up to thousands of frees is progress too
        # A page-cache page (frozen by pool_take): it must still be the cache's when freed.
        key = page_key(pool, batch[i])
        if not free_checked(z, t, me, batch[i], 0, PAGECACHE, key, lst):
            return Z.ABORTED
    # drain_all_pages: blocks parked on per-CPU lists never met the capture list; drained
    # while it is still open, they coalesce through free_block and may join it.
    drained = P.drain_all_pages(z, t, me)
    if drained == Z.ABORTED:
        return Z.ABORTED
    count(t, me, C_PCP_DRAINED, drained)
    if lst >= 0:
        park_if_asked(z, t, me)         # a quiescent point with an open capture list
        if flag(z, F_CAPTURE_AUDIT) and cfg[CFG_POLICY] != POLICY_CAPTURE_OWN and \
                not audit_capture(z, t, me, lst, batch):
            return Z.ABORTED
        pfn = Z.capture_finish(z, t, me, lst)
        if pfn == Z.ABORTED:
            return Z.ABORTED
        check_capture_balance(z, t, me, lst)
        # the list's statistics, as capture_finish read them under the list's lock
        count(t, me, C_CAP_OWN, t[me, T_CAPSTAT, CS_OWN])
        count(t, me, C_CAP_OTHER, t[me, T_CAPSTAT, CS_OTHER])
        count(t, me, C_CAP_MERGED, t[me, T_CAPSTAT, CS_MERGED])
        if pfn >= 0:
            count(t, me, C_DELIVERED, 1)
            return pfn
    pfn = Z.alloc_block(z, t, me, wanted)
    if pfn >= 0:
        count(t, me, C_RETRY_OK, 1)
    elif pfn == Z.NONE and cfg[CFG_POLICY] >= POLICY_MIGRATE:
        pfn, x = migrate_reclaim(z, t, me, pool, batch, wanted, t[me, T_STATE, T_RNG])
        t[me, T_STATE, T_RNG] = x
    return pfn


@njit(nogil=True, cache=True, _nrt=False)
def reclaimer_loop(z, t, me, pool, held, cfg, batch):
    """Run the direct-reclaimer role for thread slot `me`; returns the number of held blocks."""
    x = t[me, T_STATE, T_RNG]
    cap = min(cfg[CFG_RHELD], held.shape[0])
    n = 0
    seq = 0
    ops = 0
    while not between_ops(z, t, me, ops, RECLAIMER_CHECK_EVERY):
        ops += 1
        x = step(x)
        if n >= cap or (n > 0 and bounded(x, 2) == 0):
            x = step(x)
            pfn, order, tag = held_take(held, n, bounded(x, n))
            n -= 1
            if not free_checked(z, t, me, pfn, order, me, tag, -1):
                count(t, me, C_ABORTS, 1)
                break
            count(t, me, C_FREES, 1)
            continue
        x = step(x)
        wanted = draw_order(cfg, CFG_RCDF0, x)
        count(t, me, C_HIGH_TRY0 + wanted, 1)
        pfn = Z.alloc_block(z, t, me, wanted)
        if pfn >= 0:
            count(t, me, C_HIGH_DIRECT0 + wanted, 1)
        elif pfn == Z.NONE:
            t[me, T_STATE, T_RNG] = x
            started = monotonic_ns()
            pfn = reclaim(z, t, me, pool, batch, cfg, wanted)
            x = t[me, T_STATE, T_RNG]
            if pfn >= 0:
                count_ref(t, me, RC_RECLAIM_OK, 1)
                count_ref(t, me, RC_RECLAIM_OK_NS, monotonic_ns() - started)
        if pfn == Z.ABORTED:
            count(t, me, C_ABORTS, 1)
            break
        if pfn < 0:
            count(t, me, C_ALLOC_FAIL, 1)
            continue
        count(t, me, C_HIGH_OK0 + wanted, 1)
        seq += 1
        n = keep_block(z, t, me, held, n, pfn, wanted, seq, False)
    t[me, T_STATE, T_RNG] = x
    t[me, T_COUNT0, C_OPS] = ops
    return n
