"""The poison detector's check-and-stamp pass (`workers.detectors.restamp`) against a
page-by-page model: every page of the block that did not hold the expected stamp is
reported once, in page order, with the value it held, and afterwards every page of the
block holds the new stamp and nothing outside it changed (stamps are 16 bits, 4 to a
word: a 2-page block shares its word with another block; a 1-page block's stamp is in its
page row instead, and the other home of every page is left alone).  And the stamp format
as a report reads it (`harness.stamps`)."""

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
# a few pages anywhere (inside the block or not) that hold something else, in one of the
# two homes of a page's contents (the page row's, or the stamp array's)
strays = st.lists(st.tuples(st.integers(0, PAGES - 1),
                            st.sampled_from([0, 0xFFFF, 1, NEW, EXPECTED ^ 1,
                                             D.make_tag.py_func(3, 9)]),
                            st.sampled_from(["contents", "stamps"])),
                  max_size=L.VIOL_ROWS, unique_by=lambda s: s[0])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks, strays)
def test_restamp_reports_exactly_the_bad_pages_and_leaves_the_block_stamped(block, bad):
    pfn, order = block
    z, t = L.new_zone_table(PAGES, "fine"), L.new_thread_table(1)
    sec = L.Sections(z)
    homes = {"contents": sec.contents, "stamps": sec.stamps}
    for home in homes.values():
        home[:] = EXPECTED
    for page, value, home in bad:
        homes[home][page] = value
    before = {name: home.copy() for name, home in homes.items()}
    D.restamp(z, t, 0, pfn, order, EXPECTED, D.K_POISON, NEW)
    mine = "contents" if order == 0 else "stamps"       # the home of this block's pages
    inside = range(pfn, pfn + (1 << order))
    want = [(p, int(before[mine][p])) for p in inside if before[mine][p] != EXPECTED]
    got = D.thread_violations(t, 0)
    assert [(v["page"], v["found"]) for v in got] == want
    assert all((v["kind"], v["pfn"], v["order"], v["expected"]) ==
               ("write_to_free_page", pfn, order, EXPECTED) for v in got)
    assert (homes[mine][pfn:pfn + (1 << order)] == NEW).all()
    outside = np.ones(PAGES, bool)
    outside[pfn:pfn + (1 << order)] = False
    for name, home in homes.items():
        unchanged = outside if name == mine else np.ones(PAGES, bool)
        assert (home[unchanged] == before[name][unchanged]).all(), name


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
    """Stamp the 2-page block at `pfn` and poison it again, `iters` times."""
    tag = D.make_tag(me, 1)
    for _ in range(iters):
        D.restamp(z, t, me, pfn, 1, D.POISON, D.K_POISON, tag)
        D.restamp(z, t, me, pfn, 1, tag, D.K_STAMP, D.POISON)


@pytest.mark.timeout(120)
def test_two_threads_stamping_pages_of_one_word_never_clobber_each_other():
    """Pages 0..3 share one word: two threads stamp the 2-page blocks at 0 and 2 at once,
    20 million times each (0.5 s).  A stamp is stored 16 bits alone: a read-modify-write of
    the whole word puts back the other thread's old stamps now and then, a false finding
    (tens of thousands of them in this test, when tried)."""
    z, t = L.new_zone_table(PAGES, "fine"), L.new_thread_table(2)
    L.Sections(z).stamps[:] = D.POISON
    restamp_loop(z, t, 0, 0, 1)
    threads = [threading.Thread(target=restamp_loop, args=(z, t, me, 2 * me, 20_000_000))
               for me in (0, 1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert D.thread_violations(t, 0) == [] and D.thread_violations(t, 1) == []
    assert (L.Sections(z).stamps == D.POISON).all()
