"""Lock ordering in the zone: the one declaration that code, checker, docs and tests read.

Indentation means "held while taking"; each line names the function that takes it.

fine scheme (one lock per order-10 block, per capture list, per free-list order):

    pcp                       pcp_alloc, pcp_free (owner), drain_cpu (owner or a reclaimer)
      block                   free_block (spill, drain), alloc_block (refill, slow path)
      capture                 merge_and_place under free_block (spill, drain)
      area                    alloc_block (refill), merge_and_place, expand
    block                     free_block, alloc_block (slow path), capture_finish, audit_capture, isolate_range
      capture                 merge_and_place (buddy or target on a capture list), isolate_range
      area                    merge_and_place, expand, alloc_block (slow path), isolate_range
    capture                   capture_start, capture_finish (detach the list), audit_capture
    area                      alloc_block (find the head of a free list)
      block (trylock only)    alloc_block: a trylock waits for nobody, so adds no edge
    pagecache                 workers' page-cache pool, never held into the allocator

zone scheme (the Linux baseline: one lock for everything, per-CPU lists above it):

    pcp                       pcp_alloc, pcp_free (owner), drain_cpu (owner or a reclaimer)
      zone                    alloc_block (refill), free_block (spill, drain)
    zone                      every entry point
    pagecache                 workers' page-cache pool, never held into the allocator

A per-CPU list's lock (class pcp, one per CPU) is taken by its owner on every
allocation and free of orders 0..3, and by a reclaimer's remote drain
(drain_all_pages takes each CPU's pcp lock in turn, never two at once).

Migration (harness.migrate) takes only these edges: isolate_range, end_isolation and
audit_range hold a block lock, and isolate_range takes area and capture under it.

Rules: never hold two locks of one class; only the edges declared below may be
observed (`allowed_edges`); ranks give the global order, outermost first; never
sleep in a lock wait while holding an area lock (`NO_SLEEP`: area locks are
the zone->lock spinlocks of Linux, and every allocator needs them).
"""

ZONE, BLOCK, CAPTURE, AREA, PAGECACHE, PCP = range(6)
CLASS_NAMES = ("zone", "block", "capture", "area", "pagecache", "pcp")
NCLASSES = len(CLASS_NAMES)

# Outermost first: a class may be taken while holding only classes of lower rank.
RANK = {PCP: 0, ZONE: 1, BLOCK: 2, CAPTURE: 3, AREA: 4, PAGECACHE: 5}

NO_SLEEP = (AREA,)
NO_SLEEP_MASK = sum(1 << c for c in NO_SLEEP)

# The held-while-taking tree of each scheme, as (held, taken, function that takes it).
DECLARED = {
    "fine": (
        (PCP, BLOCK, "free_block, alloc_block"),
        (PCP, CAPTURE, "merge_and_place"),
        (PCP, AREA, "alloc_block, merge_and_place, expand"),
        (BLOCK, CAPTURE, "merge_and_place, isolate_range"),
        (BLOCK, AREA, "merge_and_place, expand, alloc_block, isolate_range"),
    ),
    "zone": (
        (PCP, ZONE, "alloc_block, free_block"),
    ),
}

# Call sites that take locks; a lockdep edge remembers the first site that made it.
SITES = (
    "enter (zone lock)",
    "alloc_block: area",
    "alloc_block: block, retaken in order",
    "alloc_block: area, retaken under block",
    "free_block: block",
    "merge_and_place: area of a free buddy",
    "merge_and_place: capture list of a captured buddy",
    "merge_and_place: capture list to place on",
    "merge_and_place: area to place on",
    "expand: area of a split half",
    "capture_start: capture",
    "capture_finish: capture",
    "capture_finish: block",
    "pagecache pool",
    "audit_capture: capture",
    "audit_capture: block",
    "pcp_alloc: pcp (owner)",
    "pcp_free: pcp (owner)",
    "drain_cpu: pcp",
    "set_list_mode: capture",
    "isolate_range: block",
    "isolate_range: area of a free block",
    "isolate_range: capture list to hold it",
    "end_isolation: block",
    "audit_range: block",
    "migrate: block of the page",
)
(S_ENTER, S_ALLOC_AREA, S_ALLOC_BLOCK, S_ALLOC_AREA2, S_FREE_BLOCK, S_MERGE_AREA,
 S_MERGE_CAPTURE, S_PLACE_CAPTURE, S_PLACE_AREA, S_EXPAND_AREA, S_CAPSTART,
 S_CAPFINISH, S_CAPFINISH_BLOCK, S_POOL, S_AUDIT_CAPTURE, S_AUDIT_BLOCK, S_PCP_ALLOC, S_PCP_FREE,
 S_PCP_DRAIN, S_LIST_MODE, S_ISOLATE_BLOCK, S_ISOLATE_AREA, S_ISOLATE_CAPTURE, S_END_ISOLATION,
 S_AUDIT_RANGE, S_MIGRATE_BLOCK) = range(len(SITES))


def allowed_edges(scheme):
    """The set of (held, taken) class pairs the declaration permits for `scheme`."""
    return {(held, taken) for held, taken, _ in DECLARED[scheme]}
