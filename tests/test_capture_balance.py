"""A capture list's page balance, checked when each use finishes; who a double allocation
overlaps."""

from harness import layout as L
from harness import zone as Z


def test_a_capture_list_that_gains_uncounted_pages_is_caught_at_its_finish():
    from harness.api import Zone
    from workers.detectors import check_capture_balance, thread_violations
    zone = Zone(pages=4096, locking="fine")
    z, t = zone.table, zone.threads
    L.Sections(z).flags[L.F_CAPTURE_AUDIT] = 1
    c = zone.capture_start(4)
    lst = zone._lists[c]
    page = zone.alloc(0)
    zone.free(page, 0, capture=c)            # counted: own 1 + merged
    assert Z.capture_finish(z, t, 0, lst) >= 0
    check_capture_balance(z, t, 0, lst)
    assert thread_violations(t, 0) == []
    # A block placed on the next use of the row behind its statistics' back (what a merge
    # that set out for an earlier use would do): the finish finds more than was counted.
    c = zone.capture_start(4)
    lst = zone._lists[c]
    stray = zone.alloc(4)
    z[stray, L.PG_STATE], z[stray, L.PG_LIST] = L.CAPTURED, lst
    Z.push_head(z, t, 0, lst, stray)
    assert Z.capture_finish(z, t, 0, lst) == stray
    check_capture_balance(z, t, 0, lst)
    (v,) = thread_violations(t, 0)
    assert v["kind"] == "capture_list_gained_pages" and (v["expected"], v["found"]) == (0, 16)


def test_a_double_allocation_says_whose_block_it_overlaps():
    from harness.verdict import describe_violation
    v = {"detector": "ownership", "kind": "double_allocation", "thread": 1, "pfn": 64,
         "order": 3, "page": 66, "expected": 1, "found": 1}
    assert describe_violation(v) == ("ownership: double_allocation: thread 1 allocated pfn 64"
                                     " (order 3), whose page 66 is inside another block of its"
                                     " own")
    assert describe_violation(dict(v, found=0)).endswith("inside a block that thread 0 holds")
