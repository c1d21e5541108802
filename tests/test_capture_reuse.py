"""Regression: a merge bound for one use of a capture list never lands on a later use.

The race (found by the clean control of the faults campaign): a free meets a
captured buddy on list L, takes it and merges on; meanwhile L's owner finishes
L and opens the same row again; the merged block must not go onto the new use
of L.  Real threads cannot be made to interleave there on demand, so this test
puts a free in exactly that state, between choosing L and placing on it, by
calling `merge_and_place` with the STATE word it saw.
"""

import pytest
from numba import njit

from harness import Zone
from harness import layout as L
from harness import zone as Z


@njit(cache=True)
def finish_free(z, t, pfn, order, lst, use):
    """The rest of a free of `pfn` that chose list `lst` while its STATE was `use`."""
    z[pfn, L.PG_STATE] = L.TAIL
    z[pfn, L.PG_OWNER] = -1
    return Z.merge_and_place(z, t, 0, pfn, order, lst, use)


def row_state(zone, handle):
    return int(zone.table[Z.lrow(zone.table, zone._lists[handle]), L.LS_STATE])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("locking", ["fine", "zone"])
@pytest.mark.parametrize("same_use", [False, True], ids=["list-reused", "list-still-open"])
def test_merge_places_only_on_the_use_it_met(locking, same_use):
    zone = Zone(1024, locking, capture_lists=1)
    kept = zone.alloc(0)                      # the buddy stays allocated: no merging
    page = zone.alloc(0)
    assert page == kept ^ 1
    first = zone.capture_start(4)
    row = zone._lists[first]
    met = row_state(zone, first)              # the free chose this list, in this use
    if not same_use:
        assert zone.capture_finish(first) is None
        second = zone.capture_start(4)        # the only row: the same list, reused
        assert zone._lists[second] == row
        assert row_state(zone, second) != met
        current = second
    else:
        current = first

    finish_free(zone.table, zone.threads, page, 0, zone._lists[current], met)

    if same_use:
        assert zone.captured(current) == [(page, 0)]
    else:
        assert zone.captured(current) == []   # the new use starts empty ...
        assert page in zone.free_list(0)      # ... and the block went back to the free list
    assert zone.check() == []
