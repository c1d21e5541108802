"""The poison detector's check-and-stamp pass (`workers.detectors.restamp`) against a
page-by-page model: every page of the block that did not hold the expected stamp is
reported once, in page order, with the value it held, and afterwards every page of the
block holds the new stamp and nothing outside it changed (stamps are 16 bits, 4 to a
word: a 1- or 2-page block shares its word with other blocks).  And the stamp format as
a report reads it (`harness.stamps`)."""

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import njit

from harness import layout as L
from harness import stamps as S
from harness.verdict import describe_violation
from workers import detectors as D

PAGES = 2048
EXPECTED, NEW = D.POISON, D.make_tag.py_func(0, 77)

blocks = st.integers(0, 10).flatmap(
    lambda order: st.tuples(st.integers(0, (PAGES >> order) - 1).map(lambda i: i << order),
                            st.just(order)))
# a few pages anywhere (inside the block or not) that hold something else
strays = st.lists(st.tuples(st.integers(0, PAGES - 1),
                            st.sampled_from([0, 0xFFFF, 1, NEW, EXPECTED ^ 1, D.make_tag.py_func(3, 9)])),
                  max_size=L.VIOL_ROWS, unique_by=lambda s: s[0])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks, strays)
def test_restamp_reports_exactly_the_bad_pages_and_leaves_the_block_stamped(block, bad):
    pfn, order = block
    z, t = L.new_zone_table(PAGES, "fine"), L.new_thread_table(1)
    stamps = L.Sections(z).stamps
    stamps[:] = EXPECTED
    for page, value in bad:
        stamps[page] = value
    before = stamps.copy()
    D.restamp(z, t, 0, pfn, order, EXPECTED, D.K_POISON, NEW)
    inside = range(pfn, pfn + (1 << order))
    want = [(p, int(before[p])) for p in inside if before[p] != EXPECTED]
    got = D.thread_violations(t, 0)
    assert [(v["page"], v["found"]) for v in got] == want
    assert all((v["kind"], v["pfn"], v["order"], v["expected"]) ==
               ("write_to_free_page", pfn, order, EXPECTED) for v in got)
    assert (stamps[pfn:pfn + (1 << order)] == NEW).all()
    outside = np.ones(PAGES, bool)
    outside[pfn:pfn + (1 << order)] = False
    assert (stamps[outside] == before[outside]).all()


def test_a_stamp_names_its_owner_and_a_report_says_whose_it_found():
    mine, theirs = D.make_tag.py_func(0, 77), D.make_tag.py_func(255, 77)
    key = D.pagecache_tag.py_func() | 5
    assert len({D.POISON, mine, theirs, key}) == 4
    assert all(0 <= s < 1 << L.STAMP_BITS for s in (D.POISON, mine, theirs, key))
    assert [S.describe(s) for s in (D.POISON, mine, theirs, key, 0)] == \
        ["poison", "thread 0's stamp", "thread 255's stamp", "the page cache's stamp",
         "0x0 (not a stamp)"]
    assert D.make_tag.py_func(3, 9) == D.make_tag.py_func(3, 9 + 128)   # modulo 128
    z, t = L.new_zone_table(PAGES, "fine"), L.new_thread_table(1)
    L.Sections(z).stamps[:] = D.POISON
    L.Sections(z).stamps[17] = theirs
    D.restamp(z, t, 0, 16, 2, D.POISON, D.K_POISON, mine)
    (v,) = D.thread_violations(t, 0)
    assert describe_violation(v) == (
        "poison: write_to_free_page: thread 0 allocated pfn 16 (order 2), whose page 17 held"
        " thread 255's stamp where it should have held poison")


@njit(nogil=True, cache=True, _nrt=False)
def restamp_loop(z, t, me, pfn, iters):
    """Stamp page `pfn` (order 0) and poison it again, `iters` times."""
    tag = D.make_tag(me, 1)
    for _ in range(iters):
        D.restamp(z, t, me, pfn, 0, D.POISON, D.K_POISON, tag)
        D.restamp(z, t, me, pfn, 0, tag, D.K_STAMP, D.POISON)


@pytest.mark.timeout(120)
def test_two_threads_stamping_pages_of_one_word_never_clobber_each_other():
    """Pages 0..3 share one word: two threads stamp pages 0 and 1 at once, 20 million
    times each (0.3 s).  A stamp is stored 16 bits alone: a read-modify-write of the whole
    word puts back the other thread's old stamp now and then, a false finding (tens of
    thousands of them in this test, when tried)."""
    z, t = L.new_zone_table(PAGES, "fine"), L.new_thread_table(2)
    L.Sections(z).stamps[:] = D.POISON
    restamp_loop(z, t, 0, 0, 1)
    threads = [threading.Thread(target=restamp_loop, args=(z, t, me, me, 20_000_000))
               for me in (0, 1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert D.thread_violations(t, 0) == [] and D.thread_violations(t, 1) == []
    assert (L.Sections(z).stamps == D.POISON).all()
