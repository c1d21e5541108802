"""Worker-side detectors: page ownership, poison, the capture audit, and the violation rows.

Switched by flags in the zone table:
  ownership  allocation claims the block for the thread (workers.claims: its head
             page's word below order 4, its first 16-page group's word above); an
             overlapping claim is a double allocation, reported with both blocks
             and both owners.  Free checks the block is still ours and releases it.
  poison     a free page holds POISON; allocation checks it and stamps the
             pages with a per-allocation tag, which free checks and re-poisons.
             A block of 2 or more pages keeps its pages' stamps in a contiguous
             array of their own, 16 bits a page (harness.layout `stamps`), so every
             page of a block is checked and stamped in one vectorized pass over its
             words, 4 pages a word; an order-0 block keeps its stamp in its own page
             row (PG_CONTENT), the line the allocator has just read, so the most
             common block costs no cache miss of its own.  Both homes of a page
             hold POISON whenever it is not in an allocated block that uses that
             home, so blocks split and merge without restamping.  Bad pages are
             looked for only on failure.  A tag names its owner exactly
             (the thread slot, or the page cache) and the allocation by its
             sequence number modulo 128 (harness.stamps: the format, decoded).
  invariants besides the runner's quiescent checks: a reclaimer audits its own
             open capture list before finishing it (`audit_capture`), and checks
             each use's page balance when it finishes (`check_capture_balance`).
A finding is recorded in the thread's own violation rows (`violation`), which
`thread_violations` decodes with the same field table.
"""

import numpy as np
from numba import njit, uint64

from harness import hierarchy as H
from harness import stamps
from harness import zone as Z
from harness.atomics import cycle_counter, store_release
from harness.config import MAX_THREADS
from harness.flatview import flat_view
from harness.layout import (CAPTURED, CS_FOUND, CS_MERGED, CS_OTHER, CS_OWN, CTL_STOP,
                            F_CAPTURE_AUDIT, F_OWNERSHIP, F_POISON, F_STOP_ON_VIOLATION, FREE,
                            LS_HEAD, PG_CONTENT, PG_LIST, PG_NEXT, PG_ORDER, PG_STATE,
                            STAMP_BITS, STAMP_DTYPE, STAMP_SHIFT, T_CAPSTAT, T_COUNT0, T_NVIOL,
                            T_STATE, T_VIOL0, TOP, VIOL_ROWS, W, ctl_row, stamp_row0)
from harness.lockverbs import block_lock, capture_lock, fine_lock, fine_unlock, zone_enter, \
    zone_leave
from harness.outline import out_of_line
from harness.seams import flag_on
from harness.stamps import POISON
from workers.claims import claim, hand_over_claim, word_owner
from workers.counters import C_OPS

PAGECACHE = 1023                        # owner slot of pages parked in the page-cache pool
PCP_OWNER = 1022                        # owner slot of blocks parked on a per-CPU list

assert MAX_THREADS < stamps.CACHE - 1, "a tag names its thread exactly"

# one violation row: t[me, T_VIOL0 + k, V_*]; an ownership finding names the other block
# by its order + 1, from bit ORDER_BITS of the order word up (0: none), and `page`, the
# first page the two blocks share (the other block's pfn is `page` with that order's low
# bits cleared)
VIOLATION_FIELDS = ("kind", "pfn", "order", "page", "expected", "found", "stamp", "at_op")
assert len(VIOLATION_FIELDS) <= W
V_KIND, V_PFN, V_ORDER, V_PAGE, V_EXPECTED, V_FOUND, V_STAMP, V_OP = range(len(VIOLATION_FIELDS))
V_NS = V_STAMP
ORDER_BITS = 8

# (kind, name, detector)
KINDS = (
    (1, "double_allocation", "ownership"),
    (2, "free_of_page_not_owned", "ownership"),
    (3, "write_to_free_page", "poison"),
    (4, "write_to_allocated_page", "poison"),
    (5, "allocator_rejected_valid_free", "invariants"),
    (6, "new_capture_list_not_empty", "invariants"),
    (7, "captured_block_beside_free_buddy", "invariants"),
    (8, "capture_list_gained_pages", "invariants"),
    (9, "pcp_claim_mismatch", "ownership"),     # harness.pcp: entered claimed / left twice
    (10, "read_after_free", "poison"),
    (11, "reference_on_page_not_cached", "ownership"),
    (12, "page_taken_during_migration", "ownership"),
    (13, "free_block_in_isolated_range", "invariants"),
    (14, "block_crosses_isolated_range", "invariants"),
)
(K_DOUBLE_ALLOC, K_NOT_OWNER, K_POISON, K_STAMP, K_REJECTED_FREE, K_STALE_CAPTURE,
 K_UNMERGED_CAPTURE, K_CAPTURE_BALANCE, K_PCP_CLAIM, K_READ_AFTER_FREE, K_NOT_CACHED_REF,
 K_MIGRATE_TAKEN, K_ISOLATED_FREE, K_ISOLATED_CROSS) = (k for k, _, _ in KINDS)
KIND_NAMES = {k: name for k, name, _ in KINDS}
KIND_DETECTORS = {k: det for k, _, det in KINDS}


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def flag(z, f):
    return flag_on(z, f)


@njit(nogil=True, cache=True, _nrt=False, forceinline=False)
@out_of_line
def violation(z, t, me, kind, pfn, order, page, expected, found, other_order=-1):
    """Record a violation in this thread's rows; stop the run if so configured.

    `other_order`: for an ownership finding, the order of the other block (-1: none)."""
    n = t[me, T_STATE, T_NVIOL]
    if n < VIOL_ROWS:
        row = T_VIOL0 + n
        t[me, row, V_KIND] = kind
        t[me, row, V_PFN] = pfn
        t[me, row, V_ORDER] = order | ((other_order + 1) << ORDER_BITS)
        t[me, row, V_PAGE] = page
        t[me, row, V_EXPECTED] = expected
        t[me, row, V_FOUND] = found
        t[me, row, V_STAMP] = cycle_counter()
        t[me, row, V_OP] = t[me, T_COUNT0, C_OPS]
    t[me, T_STATE, T_NVIOL] = n + 1
    if flag(z, F_STOP_ON_VIOLATION):
        store_release(z, (ctl_row(z), CTL_STOP), 1)


def thread_violations(t, i):
    """Thread `i`'s recorded violations (the first VIOL_ROWS), stamps as raw cycles.  An
    ownership finding also has `other_pfn`, `other_order`: the other block."""
    out = []
    for k in range(min(int(t[i, T_STATE, T_NVIOL]), VIOL_ROWS)):
        v = dict(zip(VIOLATION_FIELDS, (int(x) for x in t[i, T_VIOL0 + k])))
        kind = v["kind"]
        order, other = v["order"] & ((1 << ORDER_BITS) - 1), v["order"] >> ORDER_BITS
        out.append({"detector": KIND_DETECTORS.get(kind, "invariants"),
                    "kind": KIND_NAMES.get(kind, str(kind)), "thread": i,
                    "pfn": v["pfn"], "order": order, "page": v["page"],
                    "expected": v["expected"], "found": v["found"], "stamp": v["stamp"],
                    "at_op": v["at_op"]})
        if other:
            out[-1]["other_order"] = other - 1
            out[-1]["other_pfn"] = (v["page"] >> (other - 1)) << (other - 1)
    return out


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def make_tag(me, seq):
    """The stamp of thread slot `me`'s allocation number `seq`."""
    return ((me + 1) << stamps.SEQ_BITS) | (seq & stamps.SEQ_MASK)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def pagecache_tag():
    return stamps.CACHE << stamps.SEQ_BITS


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def _stamp0(z):
    """Index of page 0's stamp in the table seen as 16-bit stamps (`flat_view(z).view(
    STAMP_DTYPE)`, made where it is used: a kernel without NRT cannot return a view)."""
    return uint64(stamp_row0(z) * (W << STAMP_SHIFT))


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def page_stamp(z, pfn, order):
    """Page pfn's stamp (its contents) in an allocated block of `order`."""
    if order == 0:
        return z[pfn, PG_CONTENT]
    return np.int64(flat_view(z).view(STAMP_DTYPE)[_stamp0(z) + uint64(pfn)])


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def set_page_stamp(z, pfn, order, value):
    """Store page pfn's stamp in a block of `order`: in the stamp array its 16 bits alone,
    since the pages beside it may be another thread's."""
    if order == 0:
        z[pfn, PG_CONTENT] = value
    else:
        flat_view(z).view(STAMP_DTYPE)[_stamp0(z) + uint64(pfn)] = value


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def _spread(stamp):
    """A word of 4 copies of `stamp` (harness.layout: 4 stamps to a word)."""
    return stamp | (stamp << STAMP_BITS) | (stamp << 2 * STAMP_BITS) | (stamp << 3 * STAMP_BITS)


@njit(nogil=True, cache=True, _nrt=False, forceinline=False)
@out_of_line
def _report_bad_stamps(z, t, me, pfn, order, expected, kind, new):
    """After `restamp`'s pass found a bad page in block (pfn, order): a `kind` violation for
    each page that held something other than `expected` (the pass left `found ^ expected ^
    new` there), which now gets `new`."""
    reported = False
    for p in range(pfn, pfn + (1 << order)):
        left = page_stamp(z, p, order)
        if left != new:
            violation(z, t, me, kind, pfn, order, p, expected, left ^ expected ^ new)
            set_page_stamp(z, p, order, new)
            reported = True
    if not reported:        # a racing writer stored exactly `new` since: still a bad page
        violation(z, t, me, kind, pfn, order, pfn, expected, new)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def restamp(z, t, me, pfn, order, expected, kind, new):
    """Check every page of block (pfn, order) holds `expected` (a `kind` violation for each
    page that does not), and stamp it `new`: one branch-free pass that stores `found ^
    expected ^ new` (`new` where the page was good, so the found value is still
    recoverable where it was not).  From order 2 up the block is whole words (4 stamps
    each, XOR keeps them apart) and the pass runs over words; from order 5 up over the
    flat table, which LLVM vectorizes, where below a vector loop's set-up costs more than
    the 1..4 words it saves.  A 2-page block stores 16 bits a page, leaving the pages
    beside it alone; a 1-page block's stamp is in its page row (PG_CONTENT).  Unsigned
    indices: no negative-index wrap is tested."""
    bad = 0
    if order == 0:
        diff = page_stamp(z, pfn, 0) ^ expected
        bad = diff
        set_page_stamp(z, pfn, 0, diff ^ new)
    elif order < STAMP_SHIFT:
        halves = flat_view(z).view(STAMP_DTYPE)
        lo = _stamp0(z) + uint64(pfn)
        for i in range(lo, lo + uint64(1 << order)):
            diff = np.int64(halves[i]) ^ expected
            bad |= diff
            halves[i] = diff ^ new
    else:
        lo = uint64(stamp_row0(z) * W + (pfn >> STAMP_SHIFT))
        hi = lo + uint64(1 << (order - STAMP_SHIFT))
        want, put = _spread(expected), _spread(new)
        if order < STAMP_SHIFT + 3:
            for i in range(lo, hi):
                r, c = i >> uint64(3), i & uint64(W - 1)
                diff = z[r, c] ^ want
                bad |= diff
                z[r, c] = diff ^ put
        else:
            words = flat_view(z)
            for i in range(lo, hi):
                diff = words[i] ^ want
                bad |= diff
                words[i] = diff ^ put
    if bad != 0:
        _report_bad_stamps(z, t, me, pfn, order, expected, kind, new)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def claim_block(z, t, me, pfn, order, tag):
    """Detectors on allocation: claim the block for `me`, check poison, stamp `tag`."""
    if flag(z, F_OWNERSHIP):
        bad, q, k, w = claim(z, t, me, pfn, order)
        if bad:
            violation(z, t, me, K_DOUBLE_ALLOC, pfn, order, max(pfn, q), me, word_owner(w), k)
    poison_claim(z, t, me, pfn, order, tag)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def poison_claim(z, t, me, pfn, order, tag):
    """The poison half of claim_block: the block must hold POISON; stamp `tag`."""
    if flag(z, F_POISON):
        restamp(z, t, me, pfn, order, POISON, K_POISON, tag)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def hand_over(z, t, me, pfn, order, owner, tag, new_owner, new_tag):
    """Detectors when a block changes hands: check it is `owner`'s with `tag`, give it on.

    new_owner -1 with new_tag POISON is a free (claim released, pages poisoned).
    """
    poison_hand_over(z, t, me, pfn, order, tag, new_tag)
    if flag(z, F_OWNERSHIP):
        bad, q, k, w = hand_over_claim(z, t, me, pfn, order, owner, new_owner)
        if bad:
            violation(z, t, me, K_NOT_OWNER, pfn, order, max(pfn, q), owner, word_owner(w), k)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def poison_hand_over(z, t, me, pfn, order, tag, new_tag):
    """The poison half of hand_over: the block must hold `tag`; stamp `new_tag`."""
    if flag(z, F_POISON):
        restamp(z, t, me, pfn, order, tag, K_STAMP, new_tag)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def free_checked(z, t, me, pfn, order, owner, tag, target):
    """Detectors, then free (into capture list `target` if >= 0); False if the run aborted."""
    hand_over(z, t, me, pfn, order, owner, tag, -1, POISON)
    rc = Z.free_block(z, t, me, pfn, order, target)
    if rc == Z.EINVAL:
        violation(z, t, me, K_REJECTED_FREE, pfn, order, pfn, 0, 0)
    return rc != Z.ABORTED


@njit(nogil=True, cache=True, _nrt=False)
def audit_capture(z, t, me, lst, scratch):
    """Invariant detector on the caller's own open capture list `lst`, under locks.

    No captured block may have a FREE buddy of its order: a free that meets a
    captured buddy joins its list.  The list is walked under its lock into
    `scratch`, then each block is checked under its block lock (never both:
    block is taken before capture).  Returns False if the run aborted.
    """
    if not zone_enter(z, t, me):
        return False
    lk = capture_lock(z, lst)
    if not fine_lock(z, t, me, lk, H.S_AUDIT_CAPTURE):
        return False
    n = 0
    p = z[Z.lrow(z, lst), LS_HEAD]
    while p >= 0 and n < scratch.shape[0]:
        scratch[n] = p
        n += 1
        p = z[p, PG_NEXT]
    fine_unlock(z, t, me, lk)
    for i in range(n):
        p = scratch[i]
        blk = block_lock(z, p)
        if not fine_lock(z, t, me, blk, H.S_AUDIT_BLOCK):
            return False
        order = z[p, PG_ORDER]
        if z[p, PG_STATE] == CAPTURED and z[p, PG_LIST] == lst and order < TOP:
            buddy = p ^ (1 << order)
            if z[buddy, PG_STATE] == FREE and z[buddy, PG_ORDER] == order:
                violation(z, t, me, K_UNMERGED_CAPTURE, p, order, buddy, CAPTURED, FREE)
        fine_unlock(z, t, me, blk)
    zone_leave(z, t, me)
    return True


@njit(nogil=True, cache=True, _nrt=False)
def check_capture_balance(z, t, me, lst):
    """Invariant detector when a use of capture list `lst` has just finished.

    Pages reach a list only by placements, which count them (own, other, merged);
    they leave it only by merges into another list, or at the finish.  So a use
    ends with at most the pages counted into it: more is a block placed on it
    by a free that set out for another use of the row (a reuse race).
    """
    if flag(z, F_CAPTURE_AUDIT):
        counted = t[me, T_CAPSTAT, CS_OWN] + t[me, T_CAPSTAT, CS_OTHER] + \
            t[me, T_CAPSTAT, CS_MERGED]
        found = t[me, T_CAPSTAT, CS_FOUND]
        if found > counted:
            violation(z, t, me, K_CAPTURE_BALANCE, -1, 0, lst, counted, found)
