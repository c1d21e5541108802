"""The table layout: offsets derived from field tables, fit asserted, docstring exact, and the
Python-side decoders read back what the kernels wrote."""

import numpy as np
import pytest

from harness import hierarchy as H
from harness import layout as L
from harness.clock import clock_pair
from harness.config import MAX_PAGES
from harness.tracing import (CARRY_SPAN, OP_ALLOC, OP_FREE, OP_PCP_ALLOC, OP_PCP_FREE,
                             thread_ring, trace)
from workers import counters as C
from workers import detectors as D


def test_docstring_is_rendered_from_the_tables():
    assert L.render_layout() in L.__doc__
    for name, *_ in L.ZONE_ROWS + L.THREAD_ROWS:
        assert f"    {name} " in L.__doc__


def test_a_row_of_more_than_eight_fields_is_refused():
    with pytest.raises(AssertionError):
        L._fields(tuple(f"f{k}" for k in range(L.W + 1)))
    with pytest.raises(AssertionError):
        L._fields(("a", "a"))


def test_every_row_of_both_tables_is_one_cache_line():
    """Rows are 64 bytes and start on a line, whatever address NumPy hands out (it aligns
    to 16): otherwise a thread's last row and the next thread's T_STATE share a line."""
    keep = [np.zeros(k, np.int8) for k in (8, 24, 40)]     # move the allocator along
    for n in (1, 2, 3, 7):
        t = L.new_thread_table(n)
        z = L.new_zone_table(1024, "fine")
        for a in (t, z):
            assert a.ctypes.data % 64 == 0 and a.strides[-2] == 64
        assert t.shape == (n, L.T_ROWS, L.W) and not t.any()
        keep.append(np.zeros(16 * n, np.int8))
    assert keep


def test_thread_rows_are_contiguous_and_sized_from_their_tables():
    at = 0
    for name, n, fields, _ in L.THREAD_ROWS:
        assert L._T[name] == at
        assert len(fields) <= L.W
        at += n
    assert at == L.T_ROWS
    # one lockdep edge row and one edge-stamp row per lock class, each with a column per class
    assert L.T_EDGE_STAMP0 - L.T_EDGE0 == H.NCLASSES
    assert L.T_AUX - L.T_EDGE_STAMP0 == H.NCLASSES
    assert H.NCLASSES <= L.W
    assert L.T_RING0 + L.RING // L.RING_PER_ROW == L.T_COUNT_REF0     # rows appended after it
    assert L.T_COUNT_REF0 + L.COUNT_REF_ROWS == L.T_ROWS
    assert len(C.REF_COUNTERS) <= L.COUNT_REF_ROWS * L.W
    assert C.COUNTER_SLOTS <= L.COUNT_ROWS * L.W
    assert len(D.VIOLATION_FIELDS) <= L.W


def test_tail_rows_of_the_zone_table():
    z = L.new_zone_table(2048, "fine", 4)
    sec = L.Sections(z)
    assert L.ctl_row_py(z) == z.shape[0] - 5 == L.ctl_row(z)
    assert L.meta_row(z) == z.shape[0] - 4 and L.flags_row(z) == z.shape[0] - 3
    assert L.lockdep_row(z) == z.shape[0] - 6 and L.sched_row(z) == z.shape[0] - 2
    assert L.pcp_row(z) == z.shape[0] - 7 and sec.cpus == 0      # no per-CPU lists asked for
    assert not sec.redzone.any() and sec.redzone is not sec.flags
    assert sec.meta[L.M_PAGES] == 2048 and sec.meta[L.M_NCAP] == 4
    assert sec.lockdep[L.LD_ALLOWED] == L.allowed_mask("fine") != 0
    assert L.allowed_mask("zone") == 1 << (H.PCP * H.NCLASSES + H.ZONE)   # pcp -> zone only
    # every lock row has its class; the locks end right before the tail rows
    assert sec.locks.shape[0] == 1 + 2 + 4 + L.NAREAS + 1
    assert list(sec.locks[:, L.L_CLASS]) == [H.ZONE, H.BLOCK, H.BLOCK] + [H.CAPTURE] * 4 + \
        [H.AREA] * L.NAREAS + [H.PAGECACHE]


def test_per_cpu_lists_get_list_rows_and_locks_after_the_others():
    z = L.new_zone_table(2048, "zone", 4, cpus=3, batch=5, high=9)
    sec = L.Sections(z)
    assert (sec.cpus, sec.pcp[L.PCP_BATCH], sec.pcp[L.PCP_HIGH]) == (3, 5, 9)
    assert sec.pcp[L.PCP_LIST0] == L.NAREAS + 4
    assert sec.lists.shape[0] == L.NAREAS + 4 + 3 * L.PCP_ORDERS
    assert (sec.lists[L.NAREAS + 4:, L.LS_HEAD] == -1).all()
    assert (sec.lists[L.NAREAS + 4:, L.LS_COUNT] == 0).all()
    first = int(sec.pcp[L.PCP_LOCK0])
    assert first == sec.meta[L.M_POOL0] + 1 and first + 3 == sec.lock0 + sec.locks.shape[0]
    assert list(z[first:first + 3, L.L_CLASS]) == [H.PCP] * 3


def test_a_violation_recorded_in_a_kernel_decodes_with_its_fields():
    z = L.new_zone_table(1024, "fine")
    t = L.new_thread_table(3)
    t[2, L.T_COUNT0, C.C_OPS] = 77
    before = clock_pair()[0]
    D.violation(z, t, 2, D.K_DOUBLE_ALLOC, 512, 3, 515, 2, 1)
    D.violation(z, t, 2, D.K_STAMP, 8, 0, 8, 11, 12)
    after = clock_pair()[0]
    got = D.thread_violations(t, 2)
    assert [set(v) for v in got] == [{"detector", "kind", "thread", "pfn", "order", "page",
                                      "expected", "found", "stamp", "at_op"}] * 2
    v = got[0]
    assert (v["detector"], v["kind"], v["thread"]) == ("ownership", "double_allocation", 2)
    assert (v["pfn"], v["order"], v["page"], v["expected"], v["found"]) == (512, 3, 515, 2, 1)
    assert v["at_op"] == 77
    assert before <= v["stamp"] <= got[1]["stamp"] <= after    # raw cycles, not converted
    assert (got[1]["detector"], got[1]["kind"]) == ("poison", "write_to_allocated_page")
    assert D.thread_violations(t, 0) == []
    assert z[L.ctl_row_py(z), L.CTL_STOP] == 0                # not asked to stop


def test_counters_decode_by_name_and_order():
    t = L.new_thread_table(2)
    C.count(t, 1, C.C_OPS, 5)
    C.count(t, 1, C.C_CAP_NOSLOT, 2)
    C.count(t, 1, C.C_HIGH_TRY0 + 9, 4)
    C.count(t, 1, C.C_HIGH_OK0 + 9, 3)
    C.count(t, 1, C.C_HIGH_DIRECT0 + 9, 1)
    got = C.thread_counters(t, 1)
    assert list(got) == list(C.COUNTERS) + list(C.REF_COUNTERS) + ["high_order"]
    assert got["ops"] == 5 and got["capture_no_slot"] == 2 and got["frees"] == 0
    assert got["high_order"] == {"9": {"attempts": 4, "successes": 3, "direct": 1}}
    assert C.thread_counters(t, 0)["high_order"] == {}


def test_flight_recorder_ring_decodes_oldest_first():
    z = L.new_zone_table(1024, "fine")
    t = L.new_thread_table(2)
    z[L.flags_row(z), L.F_TRACE] = 1
    for k in range(L.RING + 10):
        trace(z, t, 1, OP_ALLOC if k % 2 else OP_FREE, k, k % 11)
    ring = thread_ring(t, 1)
    assert len(ring) == L.RING
    assert [e["pfn"] for e in ring] == list(range(10, L.RING + 10))
    assert ring[0] == {"op": "free", "pfn": 10, "order": 10, "stamp": ring[0]["stamp"]}
    assert ring[1]["op"] == "alloc"
    stamps = np.array([e["stamp"] for e in ring])
    assert (np.diff(stamps) >= 0).all() and stamps[0] > 0
    assert thread_ring(t, 0) == []


def test_an_event_word_keeps_op_order_and_pfn_apart_at_their_extremes():
    z = L.new_zone_table(1024, "fine")
    t = L.new_thread_table(1)
    z[L.flags_row(z), L.F_TRACE] = 1
    events = [(OP_FREE, MAX_PAGES - 1, L.TOP), (OP_PCP_ALLOC, MAX_PAGES - 1, 3),
              (OP_ALLOC, 0, 0), (OP_PCP_FREE, -1, L.TOP), (OP_ALLOC, -1, 0)]
    for op, pfn, order in events:
        trace(z, t, 0, op, pfn, order)
    got = [(e["op"], e["pfn"], e["order"], e.get("carried", False)) for e in thread_ring(t, 0)]
    assert got == [("free", MAX_PAGES - 1, L.TOP, False), ("pcp-alloc", MAX_PAGES - 1, 3, True),
                   ("alloc", 0, 0, False), ("pcp-free", -1, L.TOP, True), ("alloc", -1, 0, False)]


def test_per_cpu_list_events_carry_the_previous_stamp_between_counter_reads():
    z = L.new_zone_table(1024, "fine")
    t = L.new_thread_table(1)
    z[L.flags_row(z), L.F_TRACE] = 1
    ops = [OP_ALLOC] + [OP_PCP_FREE, OP_PCP_ALLOC] * 10 + [OP_FREE, OP_PCP_ALLOC, OP_ALLOC] \
        + [OP_PCP_FREE] * 3
    for pfn, op in enumerate(ops):
        trace(z, t, 0, op, pfn, 0)
    ring = thread_ring(t, 0)
    pcp = (OP_PCP_ALLOC, OP_PCP_FREE)
    want = [op in pcp and pos % CARRY_SPAN != 0 for pos, op in enumerate(ops)]
    assert [e.get("carried", False) for e in ring] == want
    assert [e["op"] for e in ring[:3]] == ["alloc", "pcp-free", "pcp-alloc"]
    read = [e["stamp"] for e in ring if not e.get("carried")]
    assert (np.diff(read) > 0).all()            # every one a counter read of its own
    for pos, e in enumerate(ring):
        if e.get("carried"):
            assert e["stamp"] == ring[pos - 1]["stamp"]
            later = [x["stamp"] for x in ring[pos:] if not x.get("carried")]
            assert e["until"] == (later[0] if later else None)
    assert ring[-1]["until"] is None and ring[-4]["op"] == "alloc"


def test_carried_events_whose_stamp_went_round_the_ring_are_left_out():
    z = L.new_zone_table(1024, "fine")
    t = L.new_thread_table(1)
    z[L.flags_row(z), L.F_TRACE] = 1
    extra = 4                                   # the ring keeps positions 4 .. RING + 3
    for pfn in range(L.RING + extra):
        trace(z, t, 0, OP_PCP_FREE, pfn, 0)
    ring = thread_ring(t, 0)
    first = CARRY_SPAN                          # the oldest entry with a stamp of its own
    assert [e["pfn"] for e in ring] == list(range(first, L.RING + extra))
    assert not ring[0].get("carried") and ring[1]["carried"]
    assert ring[1]["stamp"] == ring[0]["stamp"] and ring[1]["until"] == ring[CARRY_SPAN]["stamp"]
