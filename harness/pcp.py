"""Per-CPU page lists (Linux `struct per_cpu_pages`) above the buddy allocator.

A CPU is a worker's thread slot.  Each CPU has one list per order 0..3
(`PCP_ORDERS`), a list row of the zone table after the capture lists, and one
lock (class pcp).  A block on a per-CPU list is a head of state PCP: neither
free in the buddy sense (no merge ever takes it: merge_and_place only takes
FREE or CAPTURED buddies) nor allocated; its LIST names the per-CPU list and
its OWNER the CPU.

Sequential semantics (tests/model.py has the same, `batch` and `high` count blocks):

- alloc(order <= 3) on CPU c: if c's list of that order is empty, refill it:
  allocate up to `batch` blocks from the buddy (`alloc_block`, one at a time)
  and append them in that order, so they are served in allocation order;
  then pop the head (None if the buddy had nothing).
- free(order <= 3) on CPU c: push the block at the head of c's list; if the
  list then holds more than `high` blocks, spill `batch` of them, tail
  (coldest) first, each through `free_block`: the normal coalescing path, so
  a spilled block meets captured buddies like any other free.
- drain(c) (`drain_cpu`): every block of c's lists, orders 0..3, each list
  tail first, goes back through `free_block`.  `drain_all_pages` drains CPU
  0, 1, ... in turn.
- A free into a capture list and every order above 3 bypass the lists.

Locking.  A list's links, head and count, and the STATE/ORDER/LIST/OWNER of
the heads on it, are guarded by its CPU's pcp lock, which the owner takes on
every allocation and free and a remote drainer takes to drain (so a drain
never races the owner's push or pop).  A head moves between ALLOC and PCP
only under that lock and without its block lock: both states mean "not a
merge candidate" to every reader of the block.  Refill, spill and drain call
the buddy's entry points with the pcp lock held: pcp is the outermost class
(harness.hierarchy).

Ownership detector.  A head on a per-CPU list carries the claim `pcp_claim`
(owner PCP_OWNER), counted in its group: a block refilled from the buddy is
parked (claimed for the list like any small block, workers.claims.park), one
spilled or drained is unparked (its head's word CASed back to 0); a block its
owner frees onto the list, and one the owner allocates from it, changes hands in
place (the head's word from the owner's to the list's and back,
workers.claims.park_claimed, unpark_claimed), so a free through the lists costs
no locked instruction and an allocation one, whatever the order.
A block that enters a list while it is not the freer's, or leaves one it is not
on (taken twice, by its owner and by a drainer), is reported at once, and a
claim of a block around it fails.
"""

from numba import njit

from harness import faults as F
from harness import hierarchy as H
from harness import zone as Z
from harness.chaos import P_PCP_COUNT_LATE, P_PCP_HEAD, chaos
from harness.faults import fault
from harness.layout import (ALLOC, F_OWNERSHIP, LS_COUNT, LS_HEAD, PCP, PCP_BATCH, PCP_CPUS,
                            PCP_HIGH, PCP_LIST0, PCP_LOCK0, PCP_ORDERS, PG_LIST,
                            PG_NEXT, PG_ORDER, PG_OWNER, PG_PREV, PG_STATE, pcp_row,
                            zone_pages)
from harness.seams import flag_on
from harness.lockverbs import abandon, lock, unlock
from harness.tracing import OP_PCP_ALLOC, OP_PCP_FREE, trace
from workers.claims import owner_word, park, park_claimed, unpark, unpark_claimed, word_owner
from workers.detectors import (K_DOUBLE_ALLOC, K_NOT_OWNER, K_PCP_CLAIM, K_REJECTED_FREE,
                               PCP_OWNER, POISON, hand_over, poison_hand_over, violation)

ALL = 1 << 62                   # spill everything: a drain follows the links, not the count

# ---------------------------------------------------------------- geometry


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def pcp_cpus(z):
    """CPUs with per-CPU lists; 0 when the zone has none (DESIGN section 3 semantics)."""
    return z[pcp_row(z), PCP_CPUS]


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def pcp_list(z, cpu, order):
    """List number (for Z.lrow, push_head, unlink) of CPU `cpu`'s list of `order`."""
    return z[pcp_row(z), PCP_LIST0] + cpu * PCP_ORDERS + order


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def pcp_lock(z, cpu):
    """The lock row of CPU `cpu`'s lists."""
    return z[pcp_row(z), PCP_LOCK0] + cpu

# ---------------------------------------------------------------- the entry points


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def on_lists(z, order):
    """Blocks of `order` are allocated from and freed to the per-CPU lists."""
    return order < PCP_ORDERS and pcp_cpus(z) > 0


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def alloc(z, t, me, order):
    """Allocate on CPU `me`: from its list for orders 0..3 when the zone has lists, else
    the buddy.  The pfn, Z.NONE or Z.ABORTED.  A block from the lists is already claimed
    for `me` when the ownership detector is on (`take`); one from the buddy is not."""
    if on_lists(z, order):
        return pcp_alloc(z, t, me, order)
    return Z.alloc_block(z, t, me, order)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def free(z, t, me, pfn, order, target):
    """Free on CPU `me`: onto its list for orders 0..3 (not into a capture list `target`
    >= 0) when the zone has lists, else through the buddy.  0, Z.EINVAL or Z.ABORTED."""
    if target < 0 and on_lists(z, order):
        return pcp_free(z, t, me, pfn, order, me)
    return Z.free_block(z, t, me, pfn, order, target)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def free_checked(z, t, me, pfn, order, owner, tag):
    """workers.detectors.free_checked through `free`: detectors, then free on CPU `me`;
    False if the run aborted.  Onto the lists, slot `owner`'s claim passes to the list in
    place (`put`), and is released only if the free is rejected."""
    if on_lists(z, order):
        poison_hand_over(z, t, me, pfn, order, tag, POISON)
        rc = pcp_free(z, t, me, pfn, order, owner)
        if rc == Z.EINVAL:
            hand_over(z, t, me, pfn, order, owner, POISON, -1, POISON)
    else:
        hand_over(z, t, me, pfn, order, owner, tag, -1, POISON)
        rc = Z.free_block(z, t, me, pfn, order, -1)
    if rc == Z.EINVAL:
        violation(z, t, me, K_REJECTED_FREE, pfn, order, pfn, 0, 0)
    return rc != Z.ABORTED


@njit(nogil=True, cache=True, _nrt=False)
def pcp_alloc(z, t, me, order):
    """Pop the head of CPU `me`'s list of `order`, refilling an empty list first."""
    lk = pcp_lock(z, me)
    skip_pcp_lock = fault(z, F.FAULT_PCP_ALLOC_NO_LOCK)      # "only my CPU uses my list"
    if not skip_pcp_lock and not lock(z, t, me, lk, H.S_PCP_ALLOC):
        return Z.ABORTED
    lst = pcp_list(z, me, order)
    row = Z.lrow(z, lst)
    if z[row, LS_HEAD] < 0 and refill(z, t, me, lst, order) == Z.ABORTED:
        return Z.ABORTED
    pfn = z[row, LS_HEAD]
    if pfn >= 0:
        chaos(z, t, me, P_PCP_HEAD)             # between reading the head and taking it
        take(z, t, me, lst, pfn, order, me)
    if not skip_pcp_lock:
        unlock(z, t, me, lk)
    if pfn < 0:
        return Z.NONE
    trace(z, t, me, OP_PCP_ALLOC, pfn, order)
    return pfn


@njit(nogil=True, cache=True, _nrt=False)
def pcp_free(z, t, me, pfn, order, owner):
    """Push an allocated block on CPU `me`'s list; spill `batch` blocks above `high`.
    Slot `owner`'s ownership claim passes to the list (`put`).

    EINVAL (zone unchanged) if pfn is not an allocated block of that order."""
    lk = pcp_lock(z, me)
    if not lock(z, t, me, lk, H.S_PCP_FREE):
        return Z.ABORTED
    if z[pfn, PG_STATE] != ALLOC or z[pfn, PG_ORDER] != order:
        unlock(z, t, me, lk)
        return Z.EINVAL
    trace(z, t, me, OP_PCP_FREE, pfn, order)
    lst = pcp_list(z, me, order)
    row = Z.lrow(z, lst)
    put(z, t, me, lst, pfn, order, owner)
    Z.push_head(z, t, me, lst, pfn)
    count_late = fault(z, F.FAULT_PCP_COUNT_OUTSIDE_LOCK)
    n = z[row, LS_COUNT]
    if count_late:
        z[row, LS_COUNT] = n - 1                # the increment moved below the unlock
    if n > z[pcp_row(z), PCP_HIGH]:
        if spill(z, t, me, lst, order, z[pcp_row(z), PCP_BATCH]) == Z.ABORTED:
            return Z.ABORTED
        n = z[row, LS_COUNT] + 1
    unlock(z, t, me, lk)
    if count_late:
        chaos(z, t, me, P_PCP_COUNT_LATE)
        z[row, LS_COUNT] = n
    return 0


@njit(nogil=True, cache=True, _nrt=False)
def drain_cpu(z, t, me, cpu):
    """Return every block on CPU `cpu`'s lists to the buddy, under that CPU's pcp lock.

    `me` may be `cpu` (the owner) or any other thread (a remote drain).  Returns
    the blocks drained, or ABORTED."""
    lk = pcp_lock(z, cpu)
    skip_pcp_lock = fault(z, F.FAULT_DRAIN_NO_PCP_LOCK)      # "the owner is busy elsewhere"
    if not skip_pcp_lock and not lock(z, t, me, lk, H.S_PCP_DRAIN):
        return Z.ABORTED
    drained = 0
    for order in range(PCP_ORDERS):
        lst = pcp_list(z, cpu, order)
        n = spill(z, t, me, lst, order, ALL)
        if n == Z.ABORTED:
            return Z.ABORTED
        drained += n
    if not skip_pcp_lock:
        unlock(z, t, me, lk)
    return drained


@njit(nogil=True, cache=True, _nrt=False)
def drain_all_pages(z, t, me):
    """`drain_all_pages`: drain every CPU's lists in turn (one pcp lock at a time).

    Returns the blocks drained (0 when the zone has no lists), or ABORTED."""
    total = 0
    for cpu in range(pcp_cpus(z)):
        n = drain_cpu(z, t, me, cpu)
        if n == Z.ABORTED:
            return Z.ABORTED
        total += n
    return total

# ---------------------------------------------------------------- batches
# Caller holds the pcp lock of the list.


@njit(nogil=True, cache=True, _nrt=False)
def refill(z, t, me, lst, order):
    """`rmqueue_bulk`: append up to `batch` blocks from the buddy to empty list `lst`.

    Returns the blocks added, or ABORTED."""
    tail = -1
    added = 0
    for _ in range(z[pcp_row(z), PCP_BATCH]):
        pfn = Z.alloc_block(z, t, me, order)
        if pfn == Z.ABORTED:
            return Z.ABORTED
        if pfn < 0:
            break
        put(z, t, me, lst, pfn, order, -1)
        if tail < 0:
            Z.push_head(z, t, me, lst, pfn)
        else:
            z[tail, PG_NEXT] = pfn
            z[pfn, PG_PREV] = tail
            z[pfn, PG_NEXT] = -1
            z[pfn, PG_LIST] = lst
            z[Z.lrow(z, lst), LS_COUNT] += 1
        tail = pfn
        added += 1
    return added


@njit(nogil=True, cache=True, _nrt=False)
def spill(z, t, me, lst, order, n):
    """`free_pcppages_bulk`: free up to `n` blocks of list `lst`, tail first, through
    `free_block` (which coalesces and may capture).  Returns the blocks freed, or ABORTED.

    The walk to the tail follows the links, never the count, so a list whose count
    is wrong is still spilled exactly (the invariants report the count)."""
    p = z[Z.lrow(z, lst), LS_HEAD]
    if p < 0:
        return 0
    walked, most = 0, zone_pages(z)
    while z[p, PG_NEXT] >= 0:
        walked += 1
        if walked > most:              # round a cycle: a race corrupted the links
            abandon(z, t, me)
            return Z.ABORTED
        p = z[p, PG_NEXT]
    freed = 0
    while p >= 0 and freed < n:
        prv = z[p, PG_PREV]
        take(z, t, me, lst, p, order, -1)
        rc = Z.free_block(z, t, me, p, order, -1)
        if rc == Z.ABORTED:
            return Z.ABORTED
        freed += 1
        p = prv
    return freed

# ---------------------------------------------------------------- one block

@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def pcp_claim(order):
    """The claim word of a head of `order` on a per-CPU list."""
    return owner_word(PCP_OWNER, order)



@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def put(z, t, me, lst, pfn, order, owner):
    """An allocated block (ALLOC, owned by `me`) becomes a PCP head of list `lst`'s CPU.
    Its ownership claim: slot `owner`'s passes to the list in place (a free onto the
    lists); with `owner` -1 it had none (a refill from the buddy) and is parked."""
    z[pfn, PG_STATE] = PCP
    z[pfn, PG_ORDER] = order
    z[pfn, PG_OWNER] = (lst - z[pcp_row(z), PCP_LIST0]) // PCP_ORDERS
    if flag_on(z, F_OWNERSHIP):
        if owner >= 0:
            bad, q, k, w = park_claimed(z, pfn, order, owner, pcp_claim(order))
            if bad:
                violation(z, t, me, K_NOT_OWNER, pfn, order, max(pfn, q), owner,
                          word_owner(w), k)
        else:
            old, bad, q, k, w = park(z, pfn, order, pcp_claim(order))
            if old != 0:
                violation(z, t, me, K_PCP_CLAIM, pfn, order, pfn, 0, old)
            elif bad:
                violation(z, t, me, K_DOUBLE_ALLOC, pfn, order, max(pfn, q), PCP_OWNER,
                          word_owner(w), k)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def take(z, t, me, lst, pfn, order, new_owner):
    """Unlink PCP head `pfn` from list `lst`; it becomes ALLOC, owned by `me`.
    Its ownership claim passes to slot `new_owner` in place (an allocation from the
    lists); with `new_owner` -1 it is unparked, unclaimed (a spill to the buddy)."""
    Z.unlink(z, t, me, lst, pfn)
    z[pfn, PG_STATE] = ALLOC
    z[pfn, PG_OWNER] = me
    if flag_on(z, F_OWNERSHIP):
        parked = pcp_claim(order)
        if new_owner >= 0:
            old = unpark_claimed(z, pfn, order, parked, new_owner)
        else:
            old = unpark(z, pfn, parked)
        if old != parked:
            violation(z, t, me, K_PCP_CLAIM, pfn, order, pfn, parked, old)
