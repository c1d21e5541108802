"""Worker counters: per-thread int64 slots in the thread table's count rows, and their decoder.

Slot c is t[me, T_COUNT0 + c // 8, c % 8]: the scalar counters first, then
one slot per order for each high-order statistic, each group starting on a
row of its own.
"""

from numba import njit

from harness.layout import COUNT_REF_ROWS, COUNT_ROWS, MAX_ORDER, T_COUNT0, T_COUNT_REF0, W

COUNTERS = ("ops", "allocs", "alloc_failures", "frees", "to_page_cache", "reclaims",
            "reclaimed_pages", "captures_delivered", "captured_own_pages",
            "captured_other_pages", "captured_merged_free_pages", "retry_successes",
            "parks", "aborts", "capture_no_slot", "pcp_drained")
(C_OPS, C_ALLOCS, C_ALLOC_FAIL, C_FREES, C_CACHED, C_RECLAIMS, C_RECLAIMED, C_DELIVERED,
 C_CAP_OWN, C_CAP_OTHER, C_CAP_MERGED, C_RETRY_OK, C_PARKS, C_ABORTS,
 C_CAP_NOSLOT, C_PCP_DRAINED) = range(len(COUNTERS))
COUNTER_NAMES = COUNTERS

HIGH_ORDER = ("attempts", "successes", "direct")     # MAX_ORDER slots each: + order


def _rows(n):
    return -(-n // W) * W


# Page references, isolation and migration: t[me, T_COUNT_REF0 + c // 8, c % 8] (`count_ref`).
REF_COUNTERS = ("lookups", "lookup_hits", "lookup_misses", "reclaim_skipped_busy",
                "isolations", "isolations_refused", "migrated_pages", "migrate_busy",
                "migrate_no_target", "ranges_taken", "ranges_released", "reclaims_ok",
                "reclaims_ok_ns", "isolated_pages_held", "range_no_candidate")
(RC_LOOKUPS, RC_LOOKUP_HIT, RC_LOOKUP_MISS, RC_RECLAIM_BUSY, RC_ISOLATIONS, RC_ISO_REFUSED,
 RC_MIGRATED, RC_MIGRATE_BUSY, RC_NO_TARGET, RC_TAKEN, RC_RELEASED, RC_RECLAIM_OK,
 RC_RECLAIM_OK_NS, RC_ISO_HELD, RC_NO_CANDIDATE) = range(len(REF_COUNTERS))
assert len(REF_COUNTERS) <= COUNT_REF_ROWS * W

C_HIGH_TRY0, C_HIGH_OK0, C_HIGH_DIRECT0 = (
    _rows(len(COUNTERS)) + k * _rows(MAX_ORDER) for k in range(len(HIGH_ORDER)))
COUNTER_SLOTS = C_HIGH_DIRECT0 + _rows(MAX_ORDER)
assert COUNTER_SLOTS <= COUNT_ROWS * W, f"{COUNTER_SLOTS} counters do not fit {COUNT_ROWS} rows"
_HIGH0 = dict(zip(HIGH_ORDER, (C_HIGH_TRY0, C_HIGH_OK0, C_HIGH_DIRECT0)))


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def count(t, me, c, n):
    t[me, T_COUNT0 + (c >> 3), c & 7] += n


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def count_ref(t, me, c, n):
    t[me, T_COUNT_REF0 + (c >> 3), c & 7] += n


def thread_counters(t, i):
    """Thread `i`'s counters by name, plus `high_order` by order (orders with attempts)."""
    c = t[i, T_COUNT0:T_COUNT0 + COUNT_ROWS].reshape(-1)
    out = {name: int(c[k]) for k, name in enumerate(COUNTERS)}
    r = t[i, T_COUNT_REF0:T_COUNT_REF0 + COUNT_REF_ROWS].reshape(-1)
    out.update({name: int(r[k]) for k, name in enumerate(REF_COUNTERS)})
    out["high_order"] = {str(o): {name: int(c[base + o]) for name, base in _HIGH0.items()}
                         for o in range(MAX_ORDER) if c[C_HIGH_TRY0 + o]}
    return out
