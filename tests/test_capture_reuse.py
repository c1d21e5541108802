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


# ---------------------------------------------------------------- the list's statistics

def test_capture_statistics_change_only_under_the_capture_lock():
    # A free into capture list c merges free buddies under area locks; the pages it
    # merged used to be added to c's statistics right there, under the area lock, so
    # a concurrent update under c's lock (another free placing on c, capture_finish
    # reading them) could be lost.  Here another holder keeps c's lock while the free
    # runs: the free must wait before it touches any of c's statistics.
    import threading
    import time

    from harness.lockverbs import capture_lock
    from harness.locks import lock_acquire, lock_release

    zone = Zone(pages=4096, locking="fine")
    z, t = zone.table, zone.threads
    page = zone.alloc(0)                      # all its buddies up to order 9 are free
    c = zone.capture_start(4)
    lst = zone._lists[c]
    row = Z.lrow(z, lst)
    lk = capture_lock(z, lst)
    assert lock_acquire(z, lk, 7, t)          # "thread 7" holds c's lock
    worker = threading.Thread(target=zone.free, args=(page, 0), kwargs={"capture": c},
                              daemon=True)
    worker.start()
    deadline = time.monotonic() + 120           # includes a possible cold compile of free_block
    while t[0, L.T_STATE, L.T_WAITING] != lk + 1 and worker.is_alive():
        assert time.monotonic() < deadline, "the free never waited for the capture lock"
        time.sleep(0.001)
    seen = tuple(int(z[row, f]) for f in (L.LS_OWN, L.LS_OTHER, L.LS_MERGED, L.LS_COUNT))
    lock_release(z, lk)
    worker.join(10)
    assert not worker.is_alive()
    assert seen == (0, 0, 0, 0), "c's statistics changed while another thread held its lock"
    assert tuple(int(z[row, f]) for f in (L.LS_OWN, L.LS_OTHER, L.LS_MERGED)) == (1, 0, 1023)
    assert zone.captured(c) == [(page, 10)]
    # capture_finish hands the statistics it read under the list's lock to its caller
    assert zone.capture_finish(c) == page
    assert tuple(int(x) for x in t[0, L.T_CAPSTAT, :3]) == (1, 0, 1023)
    zone.free(page, 4)
    assert zone.check() == []


def test_capture_statistics_count_other_threads_pages():
    zone = Zone(pages=4096, locking="fine")
    a, b = zone.alloc(0), zone.alloc(0)       # buddies: a ^ 1 == b
    assert a ^ 1 == b
    c = zone.capture_start(4)
    zone.free(a, 0, capture=c)                # own: stays order 0 (b is allocated)
    zone.free(b, 0)                           # another free meets the captured buddy
    row = Z.lrow(zone.table, zone._lists[c])
    own, other, merged = (int(zone.table[row, f]) for f in (L.LS_OWN, L.LS_OTHER, L.LS_MERGED))
    assert (own, other) == (1, 1)
    assert merged == 1022                     # b's free merged up through orders 1..9
    zone.capture_finish(c)
    assert tuple(int(x) for x in zone.threads[0, L.T_CAPSTAT, :3]) == (1, 1, 1022)
