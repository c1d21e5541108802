"""Migration as part of reclaim: empty an aligned range of page-cache pages and take it.

`migrate_reclaim` is what a reclaimer with a migrating policy does when reclaim and
the retry did not give it its block: choose a range (harness.migrate.choose_range),
isolate it, migrate every movable page out of it, and take it when it is whole.

Migrating one page-cache page (`migrate_page`), like `migrate_pages` for a clean
file page: freeze its count (1 -> 0: no reader, nobody else freezing it), allocate
a target (necessarily outside the range: frees inside it are held), copy the
contents (the stamp) and the key, switch the cache entry to the target and
unfreeze it, then free the old page, which lands on the range's list.  A page
that will not freeze is busy and stays; so does the range, which is then released.
Pages of allocator threads (count 0, not cached) are unmovable.
"""

from numba import njit

from harness import faults as F
from harness import zone as Z
from harness.faults import fault
from harness.layout import F_CAPTURE_AUDIT
from harness.migrate import (NO_RANGE, REFUSED, audit_range, choose_range, end_isolation,
                             isolate_range, range_movable, set_list_mode)
from harness.isolate import ISOLATE
from harness.pageref import freeze, unfreeze
from workers.counters import (RC_ISO_HELD, RC_ISO_REFUSED, RC_ISOLATIONS, RC_MIGRATE_BUSY,
                              RC_MIGRATED, RC_NO_CANDIDATE, RC_NO_TARGET, RC_RELEASED,
                              RC_TAKEN, count_ref)
from workers.detectors import (K_ISOLATED_CROSS, K_ISOLATED_FREE, K_MIGRATE_TAKEN, PAGECACHE,
                               claim_block, flag, free_checked, hand_over, page_stamp,
                               set_page_stamp, violation)
from workers.pagecache import page_key, pool_switch
from workers.park import park_if_asked

MOVED, BUSY, NO_TARGET = 0, 1, 2


@njit(nogil=True, cache=True, _nrt=False)
def migrate_page(z, t, me, pool, pfn):
    """Move cached page `pfn` out of its isolated range: MOVED, BUSY, NO_TARGET or ABORTED."""
    skip_freeze = fault(z, F.FAULT_MIGRATE_NO_FREEZE)
    if not skip_freeze and not freeze(pool, pfn, 1):
        return BUSY
    key = page_key(pool, pfn)
    new = Z.alloc_block(z, t, me, 0)
    if new == Z.ABORTED:
        return Z.ABORTED
    if new < 0:
        if not skip_freeze:
            unfreeze(pool, pfn, 1)
        return NO_TARGET
    claim_block(z, t, me, new, 0, key)           # detectors: ours, was poisoned
    set_page_stamp(z, new, 0, page_stamp(z, pfn, 0))     # copy the contents
    hand_over(z, t, me, new, 0, me, key, PAGECACHE, key)
    if not pool_switch(z, t, me, pool, pfn, new):
        # The old page left the cache while we copied it: somebody else owns it now.
        violation(z, t, me, K_MIGRATE_TAKEN, pfn, 0, pfn, PAGECACHE, -1)
        return MOVED if free_checked(z, t, me, new, 0, PAGECACHE, key, -1) else Z.ABORTED
    if not free_checked(z, t, me, pfn, 0, PAGECACHE, key, -1):   # onto the isolated range's list
        return Z.ABORTED
    return MOVED


@njit(nogil=True, cache=True, _nrt=False)
def migrate_reclaim(z, t, me, pool, batch, wanted, x):
    """Isolate a range of order `wanted`, migrate it empty, take it: (pfn or NONE or
    ABORTED, rng state)."""
    base, x = choose_range(z, pool, wanted, x)
    if base == NO_RANGE:
        count_ref(t, me, RC_NO_CANDIDATE, 1)
        return Z.NONE, x
    lst = Z.capture_start(z, t, me, wanted)
    if lst < 0:
        return lst, x                            # NONE: no free list row; or ABORTED
    if not set_list_mode(z, t, me, lst, ISOLATE, base):
        return Z.ABORTED, x
    held = isolate_range(z, t, me, lst, base, wanted)
    if held == Z.ABORTED:
        return Z.ABORTED, x
    if held == REFUSED:
        count_ref(t, me, RC_ISO_REFUSED, 1)
        got = Z.capture_finish(z, t, me, lst)    # empty: nothing to carve or free
        return (Z.ABORTED if got == Z.ABORTED else Z.NONE), x
    count_ref(t, me, RC_ISOLATIONS, 1)
    count_ref(t, me, RC_ISO_HELD, held)
    n = range_movable(z, t, me, base, wanted, batch)
    if n == Z.ABORTED:
        return Z.ABORTED, x
    for i in range(n):
        r = migrate_page(z, t, me, pool, batch[i])
        if r == Z.ABORTED:
            return Z.ABORTED, x
        if r == MOVED:
            count_ref(t, me, RC_MIGRATED, 1)
        elif r == BUSY:
            count_ref(t, me, RC_MIGRATE_BUSY, 1)
        else:
            count_ref(t, me, RC_NO_TARGET, 1)
            break
    park_if_asked(z, t, me)                       # a quiescent point with the range isolated
    if flag(z, F_CAPTURE_AUDIT):
        kind, at = audit_range(z, t, me, lst, base, wanted)
        if kind == Z.ABORTED:
            return Z.ABORTED, x
        if kind == 1:
            violation(z, t, me, K_ISOLATED_FREE, at, wanted, base, lst, 0)
        elif kind == 2:
            violation(z, t, me, K_ISOLATED_CROSS, at, wanted, base, lst, 0)
    got = end_isolation(z, t, me, lst, base, wanted)
    if got >= 0:
        count_ref(t, me, RC_TAKEN, 1)
    elif got == Z.NONE:
        count_ref(t, me, RC_RELEASED, 1)
    return got, x

