"""Seeded faults: small, realistic locking mistakes on the coalescing and capture paths.

Each fault is data here plus one named seam at exactly one site in the kernels
(`skip_block_lock = fault(z, F.FAULT_ALLOC_NO_BLOCK_LOCK)`), never a copy of a
kernel; tests/test_faults.py checks the one site.  Each declares the
detectors that must catch it (any one of them counts) and the locking
schemes in which it has an effect at all: in the zone scheme the inner
(fine) locks are no-ops, so a fault that skips, moves or reorders an inner
lock changes nothing there; logic faults act in both.
"""

from dataclasses import dataclass

from numba import njit

from harness.layout import F_FAULT, flags_row
from harness.seams import SEAMS

MIGRATING = ("migrate", "migrate+capture")     # the policies that isolate and migrate
# Migration is tried after reclaim failed, and finds an empty-able range mostly for low
# orders: the migration faults' trials want orders 4..6, so that ranges are isolated often.
MIGRATION_WORKLOAD = (("reclaim_policy", "migrate"), ("reclaim_mix", ((4, 1.0), (5, 1.0), (6, 1.0))))

(NO_FAULT, FAULT_FREE_NO_BLOCK_LOCK, FAULT_ALLOC_NO_BLOCK_LOCK, FAULT_PUSH_NO_AREA_LOCK,
 FAULT_COUNT_OUTSIDE_LOCK, FAULT_CAPTURE_PLACE_UNLOCKED, FAULT_CAPTURE_BEFORE_BLOCK,
 FAULT_AREA_THEN_BLOCK, FAULT_STALE_BUDDY_ORDER, FAULT_LOST_COALESCING,
 FAULT_IGNORE_CAPTURED_BUDDY, FAULT_TOCTOU_CAPTURE_STATE, FAULT_EARLY_UNLOCK,
 FAULT_UNLOCK_NO_WAKE, FAULT_DRAIN_NO_PCP_LOCK, FAULT_PCP_ALLOC_NO_LOCK,
 FAULT_PCP_COUNT_OUTSIDE_LOCK, FAULT_MIGRATE_NO_FREEZE, FAULT_LOOKUP_FROZEN_REF,
 FAULT_ISOLATE_LEAKS_FREE, FAULT_MERGE_CLOSED_CAPTURE) = range(21)


@dataclass(frozen=True)
class Fault:
    id: int
    name: str
    what: str            # the mistake
    goes_wrong: str      # what it breaks
    detectors: tuple     # any one must catch it: ownership, poison, invariants, lockdep, witness,
                         # watchdog
    narrow: bool         # a narrow race window: delay injection (--chaos) should help
    schemes: tuple       # locking schemes in which the fault has an effect: "fine", "zone"
    policies: tuple = ()  # reclaim policies in which it has an effect (empty: every one)
    workload: tuple = ()  # (config field, value) pairs its campaign trials use (a mix as pairs)
    pcp: bool = False    # a fault of the per-CPU lists: no effect with --no-pcp


def workload_settings(fault, policy):
    """Config changes every trial of `fault` uses (campaign, canaries): its declared
    workload, and a reclaim policy it acts in when `policy` is not one."""
    out = {k: dict(v) if k.endswith("_mix") else v for k, v in fault.workload}
    if fault.policies and out.get("reclaim_policy", policy) not in fault.policies:
        out["reclaim_policy"] = fault.policies[0]
    return out


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def fault(z, f):
    """True when seeded fault `f` is switched on for this run (read once, at its seam)."""
    return SEAMS and z[flags_row(z), F_FAULT] == f


FAULTS = (
    Fault(FAULT_FREE_NO_BLOCK_LOCK, "free-no-block-lock",
          "free_block coalesces without taking the order-10 block lock",
          "two frees in one block merge the same buddy twice: lists and page states corrupt",
          ("invariants", "ownership", "poison", "witness"), False, ("fine",)),
    Fault(FAULT_ALLOC_NO_BLOCK_LOCK, "alloc-no-block-lock",
          "alloc_block splits and marks the head without the block lock (trylock skipped)",
          "a concurrent free in the block merges with halves being published",
          ("invariants", "ownership", "poison", "witness"), True, ("fine",)),
    Fault(FAULT_PUSH_NO_AREA_LOCK, "push-no-area-lock",
          "merge_and_place links the freed block into its free list without the area lock",
          "racing list updates lose or cross-link blocks",
          ("invariants", "ownership", "poison", "witness"), True, ("fine",)),
    Fault(FAULT_COUNT_OUTSIDE_LOCK, "count-outside-lock",
          "the free-list count is updated after the area lock is dropped",
          "lost updates: the count no longer matches the list",
          ("invariants",), True, ("fine",)),
    Fault(FAULT_CAPTURE_PLACE_UNLOCKED, "capture-place-unlocked",
          "a block is pushed onto a capture list without that list's lock",
          "the owner's own frees and other threads' frees corrupt the capture list",
          ("invariants", "ownership", "poison", "witness"), True, ("fine",)),
    Fault(FAULT_CAPTURE_BEFORE_BLOCK, "capture-before-block",
          "capture_finish keeps the capture lock while it takes block locks (inversion)",
          "capture -> block against the declared block -> capture: a possible deadlock",
          ("lockdep", "watchdog"), False, ("fine",)),
    Fault(FAULT_AREA_THEN_BLOCK, "area-then-block",
          "alloc_block waits for the block lock while holding the area lock (no trylock)",
          "ABBA with free_block (block -> area): a real deadlock under load",
          ("lockdep", "watchdog"), False, ("fine",)),
    Fault(FAULT_STALE_BUDDY_ORDER, "stale-buddy-order",
          "the merge loop trusts the buddy's state without checking its order",
          "blocks of different orders merge: pages overlap or vanish",
          ("invariants", "ownership", "poison"), False, ("fine", "zone")),
    Fault(FAULT_LOST_COALESCING, "lost-coalescing",
          "capture_finish returns the leftover blocks to the free lists without merging",
          "free buddies stay unmerged: high-order memory is lost to fragmentation",
          # Only a buddy freed while the list is being finished (CLOSED) is left beside a
          # leftover; under the zone lock nobody sees a list CLOSED, so zone runs stay clean.
          ("invariants",), False, ("fine",)),
    Fault(FAULT_IGNORE_CAPTURED_BUDDY, "ignore-captured-buddy",
          "the normal free path ignores a captured buddy instead of joining its capture list",
          "a free block sits next to its captured buddy: the capture misses pages it was owed",
          ("invariants",), False, ("fine", "zone")),
    Fault(FAULT_TOCTOU_CAPTURE_STATE, "toctou-capture-state",
          "merge_and_place checks that the target capture list is open before taking its lock",
          "a block is pushed onto a list its owner has already detached: stranded pages",
          ("invariants",), True, ("fine",)),
    Fault(FAULT_MERGE_CLOSED_CAPTURE, "merge-closed-capture",
          "merge_and_place takes a captured buddy off its capture list without re-checking,"
          " under the capture lock, that the list is still open",
          "the merge cuts a block out of the chain its finishing owner has detached: the"
          " closed list gets a head again and the finisher's walk stops early",
          # Its window: the merge waits for the capture lock while the owner closes the list.
          # With 2 threads (one reclaimer) it escaped 4 of 4 5 s trials, with PCT too; with
          # 3 threads and 2 reclaimers on 2 cores it was caught in 4 of 4, in 0.01-0.13 s.
          ("witness", "invariants"), True, ("fine",),
          workload=(("threads", 3), ("reclaimers", 2))),
    Fault(FAULT_EARLY_UNLOCK, "early-unlock",
          "alloc_block drops the block lock as soon as the head is off its list, before it"
          " splits and marks it",
          "a free in the same block merges with halves that are still being published",
          ("invariants", "ownership", "poison", "witness"), True, ("fine",)),
    Fault(FAULT_UNLOCK_NO_WAKE, "unlock-no-wake",
          "lock_release clears a contended lock word but skips the futex wake",
          "a sleeper waits on a free lock: a lost wakeup (the thread stalls until another"
          " contended unlock happens to wake it)",
          # Every lock in both schemes goes through lock_release (the zone lock included).
          ("watchdog",), False, ("fine", "zone")),
    # Per-CPU lists (harness.pcp): the pcp lock is real in both schemes, so these act in both.
    Fault(FAULT_DRAIN_NO_PCP_LOCK, "drain-no-pcp-lock",
          "drain_all_pages empties another CPU's lists without taking that CPU's pcp lock",
          "the drainer and the owner unlink the same blocks: a block is freed to the buddy"
          " and handed out by the owner, lists cross-link",
          ("ownership", "invariants", "poison", "witness"), True, ("fine", "zone"), pcp=True),
    Fault(FAULT_PCP_ALLOC_NO_LOCK, "pcp-alloc-no-lock",
          "pcp_alloc pops its own CPU's list without the pcp lock (it forgets remote drains)",
          "a block popped by the owner is also drained to the buddy: allocated twice",
          ("ownership", "invariants", "poison", "witness"), True, ("fine", "zone"), pcp=True),
    Fault(FAULT_PCP_COUNT_OUTSIDE_LOCK, "pcp-count-outside-lock",
          "pcp_free stores the per-CPU list's new count after dropping the pcp lock",
          "a remote drain in between is overwritten: the count no longer matches the list",
          ("invariants",), True, ("fine", "zone"), pcp=True),
    # Migration (harness.migrate): page references, isolation.
    Fault(FAULT_MIGRATE_NO_FREEZE, "migrate-no-freeze",
          "migration copies a page-cache page and frees it without freezing its reference"
          " count first",
          "a reader holding a reference reads a freed page; a reclaimer takes the page too",
          ("poison", "ownership", "invariants"), True, ("fine", "zone"), MIGRATING,
          MIGRATION_WORKLOAD),
    Fault(FAULT_LOOKUP_FROZEN_REF, "lookup-frozen-ref",
          "a page-cache lookup takes its reference with a plain increment, not only if the"
          " count is nonzero",
          "a reader holds a reference on a frozen page that is being freed: read after free,"
          " and a count left wrong",
          # Caught with the default workload (big reclaim batches: many pages frozen while
          # lookups read the FIFO); with the migration workload it escaped 6 of 6 trials.
          ("poison", "ownership", "invariants"), True, ("fine", "zone")),
    Fault(FAULT_ISOLATE_LEAKS_FREE, "isolate-leaks-free",
          "free_block does not send a free inside an isolated range to the range's list",
          "isolated pages reach the free lists and other allocators take them mid-migration",
          ("invariants",), False, ("fine", "zone"), MIGRATING, MIGRATION_WORKLOAD),
)
BY_NAME = {f.name: f for f in FAULTS}
