"""Page references and migration of page-cache pages.

- the count protocol (get unless zero, put, freeze from an expected value, unfreeze)
  against a plain model of one counter, in any interleaving of several holders;
- the cache: a page in use is skipped by reclaim (rotated, never frozen under its reader);
- migration, single-threaded: contents (stamp) and key move to the target, the cache
  entry follows, the old page is held by the isolated range, which is taken whole;
- lookups, reclaim and migration racing on real threads: nothing lost, nothing read
  after free (every detector on), and the races really happened.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import layout as L
from harness import migrate as M
from harness import zone as Z
from harness.config import RunConfig
from harness.isolate import ISOLATE
from harness.pageref import freeze, get_unless_zero, page_count, put_page, unfreeze
from workers.migrator import BUSY, MOVED, migrate_page
from workers.pagecache import (P_COUNT, POOL_RING, check_pagecache, new_pool, page_key,
                               pool_put, pool_take)

OPS = st.lists(st.tuples(st.sampled_from(["get", "put", "freeze", "unfreeze"]),
                         st.integers(0, 3)), max_size=60)


@pytest.mark.timeout(300)
@settings(max_examples=200, deadline=None)
@given(OPS)
def test_count_protocol_matches_model(ops):
    """Holders 0..3 take and drop references; a freezer freezes from 1 and unfreezes.
    Model: count, who holds; get succeeds iff count > 0; freeze iff count == 1."""
    pool = new_pool(1, 8)
    unfreeze(pool, 3, 1)                      # a cached page: the cache's own reference
    count, holders, frozen = 1, set(), False
    for op, who in ops:
        if op == "get" and who not in holders:
            got = get_unless_zero(pool, 3)
            assert got == (count > 0)
            if got:
                count += 1
                holders.add(who)
        elif op == "put" and who in holders:
            put_page(pool, 3)
            count -= 1
            holders.discard(who)
        elif op == "freeze" and not frozen:
            ok = freeze(pool, 3, 1)
            assert ok == (count == 1)
            if ok:
                count, frozen = 0, True
                assert not holders           # frozen only with no reader
        elif op == "unfreeze" and frozen:
            unfreeze(pool, 3, 1)
            count, frozen = 1, False
        assert page_count(pool, 3) == count


def zone_with_cache(pages=4096, cached=256):
    """A zone, its thread table and a page cache of `cached` order-0 pages (keys k + 1000)."""
    z = L.new_zone_table(pages, "fine", 8)
    t = L.new_thread_table(1)
    pool = new_pool(pages, pages)
    for k in range(cached):
        p = Z.alloc_block(z, t, 0, 0)
        L.Sections(z).contents[p] = 1000 + k  # the page's contents
        assert pool_put(z, t, 0, pool, p, 1000 + k)
    return z, t, pool


def ring(pool):
    n, cap = int(pool[P_COUNT]), int(pool[2])
    return [int(pool[POOL_RING + (int(pool[1]) + i) % cap]) for i in range(n)]


@pytest.mark.timeout(120)
def test_the_quiescent_check_names_a_stray_reference_and_changed_contents():
    z, t, pool = zone_with_cache(cached=8)
    L.Sections(z).flags[L.F_POISON] = 1
    cached = ring(pool)
    assert check_pagecache(z, pool) == []
    assert get_unless_zero(pool, cached[2])              # a reference nobody dropped
    L.Sections(z).contents[cached[5]] ^= 1               # a cached page written to
    L.Sections(z).contents[cached[6]] ^= 1
    found = check_pagecache(z, pool)
    assert [(v["kind"], v["pfn"]) for v in found] == [("page_ref_count", cached[2]),
                                                      ("cached_page_contents", cached[5])]
    assert found[0]["count"] == 2 and found[0]["expected"] == 1


@pytest.mark.timeout(120)
def test_reclaim_skips_a_page_in_use():
    z, t, pool = zone_with_cache(cached=8)
    oldest = ring(pool)[:2]
    assert get_unless_zero(pool, oldest[0])   # a reader holds the oldest page
    out = np.zeros(2, np.int64)
    assert pool_take(z, t, 0, pool, out, 2) == 2
    assert oldest[0] not in out and oldest[1] in out     # skipped, the next one taken
    assert ring(pool)[-1] == oldest[0]                   # rotated to the tail
    assert page_count(pool, oldest[0]) == 2 and all(page_count(pool, p) == 0 for p in out)
    put_page(pool, oldest[0])
    for p in out:                                        # the reclaimer frees what it took
        assert Z.free_block(z, t, 0, int(p), 0, -1) == 0
    assert check_pagecache(z, pool) == []


@pytest.mark.timeout(120)
def test_migration_moves_contents_key_and_entry_and_takes_the_range():
    z, t, pool = zone_with_cache()
    before = {page_key(pool, p): p for p in ring(pool)}
    stamps = {p: int(L.Sections(z).contents[p]) for p in ring(pool)}
    base = ring(pool)[0] & ~15                           # an order-4 range of cached pages
    inside = [p for p in ring(pool) if p >> 4 == base >> 4]
    assert len(inside) == 16
    lst = Z.capture_start(z, t, 0, 4)
    assert M.set_list_mode(z, t, 0, lst, ISOLATE, base)
    assert M.isolate_range(z, t, 0, lst, base, 4) == 0
    busy = inside[3]
    assert get_unless_zero(pool, busy)                   # a reader: that page must stay
    for p in inside:
        assert migrate_page(z, t, 0, pool, p) == (BUSY if p == busy else MOVED)
    assert M.audit_range(z, t, 0, lst, base, 4) == (0, -1)
    after = {page_key(pool, p): p for p in ring(pool)}
    assert after.keys() == before.keys()                  # every entry still cached
    for key, p in before.items():
        q = after[key]
        assert (q == p) == (p not in inside or p == busy)  # moved out, except the busy one
        assert int(L.Sections(z).contents[q]) == stamps[p]  # contents copied
        assert not (base <= q < base + 16) or q == busy
        assert page_count(pool, q) == (2 if q == busy else 1)
    assert M.end_isolation(z, t, 0, lst, base, 4) == Z.NONE   # busy page: released
    put_page(pool, busy)
    assert check_pagecache(z, pool) == []
    from harness.invariants import check_zone
    assert check_zone(z) == []
    # Again, with no reader: the range empties and is taken whole.
    lst = Z.capture_start(z, t, 0, 4)
    assert M.set_list_mode(z, t, 0, lst, ISOLATE, base)
    assert M.isolate_range(z, t, 0, lst, base, 4) == 15   # the 15 held pages, now free
    assert migrate_page(z, t, 0, pool, busy) == MOVED
    assert M.end_isolation(z, t, 0, lst, base, 4) == base
    assert z[base, L.PG_STATE] == L.ALLOC and z[base, L.PG_ORDER] == 4
    assert check_pagecache(z, pool) == [] and check_zone(z) == []


@pytest.mark.timeout(240)
def test_lookups_reclaim_and_migration_race_cleanly():
    """Real threads: 2 allocators look pages up while 2 reclaimers reclaim and migrate the
    same cache; every detector on.  Nothing is read after free, the zone drains fresh."""
    from harness.runner import run_stress, warm_up
    warm_up()
    r = run_stress(RunConfig(threads=4, reclaimers=2, seconds=4, pages=16384, seed=3,
                             reclaim_policy="migrate+capture", reclaim_mix={4: 1, 5: 1, 6: 1},
                             check_ms=100, lockdep=True), warm_s=0.0)
    assert r["verdict"] == "CLEAN", r["problems"]
    assert r["end"]["fresh_after_drain"] is True
    tot = r["totals"]
    assert tot["page_refs"]["lookup_hits"] > 1000
    assert tot["migration"]["migrated_pages"] > 0 and tot["migration"]["ranges_taken"] > 0
    assert tot["reclaims"] > 0
