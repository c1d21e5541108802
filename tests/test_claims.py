"""Ownership claims (workers.claims) against a brute-force per-page model, and two threads
claiming overlapping blocks at once: never both silently."""

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import njit

from harness import layout as L
from harness.atomics import fetch_add, load_acquire, xchg
from harness.rng import bounded, step
from workers import claims as CL
from workers import detectors as D

pytestmark = pytest.mark.timeout(300)

PAGES = 2048                    # two order-10 blocks
OWNERS = 4


@njit(nogil=True, cache=True, _nrt=False)
def do_claim(z, t, me, pfn, order):
    D.claim_block(z, t, me, pfn, order, D.make_tag(me, 1))


@njit(nogil=True, cache=True, _nrt=False)
def do_hand_over(z, t, me, pfn, order, owner, new_owner):
    D.hand_over(z, t, me, pfn, order, owner, 0, new_owner, 0)


def fresh(threads):
    z, t = L.new_zone_table(PAGES, "fine"), L.new_thread_table(threads)
    z[L.flags_row.py_func(z), L.F_OWNERSHIP] = 1       # ownership alone: no stamps to match
    return z, t


def overlapping(held, pfn, order):
    """Brute force, page by page: {(pfn, order): owner} of the held blocks that share a
    page with block (pfn, order)."""
    pages = set(range(pfn, pfn + (1 << order)))
    return {b: o for b, o in held.items() if pages & set(range(b[0], b[0] + (1 << b[1])))}


def expected_words(held):
    """The page words and group words the held blocks must leave, from the layout rule:
    a block below order GROUP_SHIFT has its owner word on its head page and counts 1 in
    its group; a larger block's owner word is in its first group only, shifted up (the
    marker)."""
    pages, groups = np.zeros(PAGES, np.int64), np.zeros(PAGES >> L.GROUP_SHIFT, np.int64)
    for (pfn, order), owner in held.items():
        word = ((owner + 1) << 4) | order
        if order < L.GROUP_SHIFT:
            pages[pfn] = word
            groups[pfn >> L.GROUP_SHIFT] += 1
        else:
            groups[pfn >> L.GROUP_SHIFT] = word << 32
    return pages, groups


def one_finding(t, me):
    got = D.thread_violations(t, me)
    t[:, L.T_STATE, L.T_NVIOL] = 0
    return got


def check_names(v, me, pfn, order, clash):
    """`v` names block (pfn, order) and `me`, and one of the clashing blocks and its owner,
    by a page that both blocks share."""
    assert (v["pfn"], v["order"], v["expected"]) == (pfn, order, me), v
    other = (v["other_pfn"], v["other_order"])
    assert other in clash and v["found"] == clash[other], (v, clash)
    assert pfn <= v["page"] < pfn + (1 << order)
    assert other[0] <= v["page"] < other[0] + (1 << other[1])


blocks = st.integers(0, L.TOP).flatmap(
    lambda k: st.tuples(st.integers(0, (PAGES >> k) - 1).map(lambda i: i << k), st.just(k)))
steps = st.lists(st.tuples(st.sampled_from(["claim", "release", "wrong-release", "hand-over",
                                            "free-unclaimed"]),
                           st.integers(0, OWNERS - 1), blocks, st.integers(0, 1 << 30)),
                 min_size=1, max_size=60)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_claims_report_exactly_the_conflicts_of_the_page_model(ops):
    """Claims, releases and hand-overs of buddy-aligned blocks by several owners, one at a
    time.  A claim is reported iff the page model has a page of it held by another block,
    naming that block and its owner, and then changes nothing (all or nothing); a release
    by the wrong owner (or of a block nobody holds) names who holds it (-1: nobody).  A
    conflicting step is a probe: the table is restored after it, so the held blocks never
    overlap.  After every step the words are exactly what the held blocks imply."""
    z, t = fresh(OWNERS)
    sec = L.Sections(z)
    held = {}
    for what, owner, (pfn, order), pick in ops:
        if what == "claim":
            clash = overlapping(held, pfn, order)
            saved = z.copy()
            do_claim(z, t, owner, pfn, order)
            got = one_finding(t, owner)
            if not clash:
                assert got == []
                held[(pfn, order)] = owner
                continue
            assert len(got) == 1 and got[0]["kind"] == "double_allocation", (clash, got)
            check_names(got[0], owner, pfn, order, clash)
            assert np.array_equal(z, saved)                 # a failed claim took nothing
            continue
        if what == "free-unclaimed":
            clash = overlapping(held, pfn, order)
            if (pfn, order) in held:
                continue
            saved = z.copy()
            do_hand_over(z, t, owner, pfn, order, owner, -1)
            (v,) = one_finding(t, owner)
            assert v["kind"] == "free_of_page_not_owned"
            if clash:
                check_names(v, owner, pfn, order, clash)
            else:
                assert v["found"] == -1 and (v["pfn"], v["order"]) == (pfn, order)
            z[:] = saved
            continue
        if not held:
            continue
        block = sorted(held)[pick % len(held)]
        real = held[block]
        if what == "release":
            do_hand_over(z, t, owner, block[0], block[1], real, -1)
            assert one_finding(t, owner) == []
            del held[block]
        elif what == "hand-over":
            do_hand_over(z, t, owner, block[0], block[1], real, D.PAGECACHE)
            assert one_finding(t, owner) == []
            held[block] = D.PAGECACHE
        elif owner != real:
            saved = z.copy()
            do_hand_over(z, t, owner, block[0], block[1], owner, -1)
            (v,) = one_finding(t, owner)
            assert v["kind"] == "free_of_page_not_owned"
            check_names(v, owner, block[0], block[1], {block: real})
            z[:] = saved
        pages, groups = expected_words(held)
        assert np.array_equal(sec.pages[:, L.PG_CLAIM], pages)
        assert np.array_equal(sec.groups, groups)


@pytest.mark.parametrize("order, words", [(0, 2), (3, 2), (4, 1), (7, 1), (10, 1)])
def test_a_claim_writes_its_head_below_order_four_and_one_group_word_above(order, words):
    """A claim of order k < 4 writes its head page's word and its group's count; of order
    k >= 4, its first group's word and no page; its release undoes exactly that."""
    z, t = fresh(2)
    before = z.copy()
    pfn = 1024 + (16 << order) % 1024 if order < 4 else 1024
    do_claim(z, t, 1, pfn, order)
    assert len(np.argwhere(z != before)) == words
    do_hand_over(z, t, 1, pfn, order, 1, -1)
    assert np.array_equal(z, before)


# ---------------------------------------------------------------- two threads at once

@njit(nogil=True, cache=True, _nrt=False)
def claim_loop(z, t, me, iters, seed, hold, reported, witnessed, small):
    """Claim a random block, hold it a while, release it, `iters` times: thread 1 of any
    order and thread 0 the whole order-10 block, or with `small` both a block of order
    0..3 in the first 16 pages (small claims write only their heads).  While holding,
    `hold[me]` is the iteration + 1, published by an exchange and followed by a locked read
    of `hold[other]` (Dekker): if both threads hold at once, at least one of them sees
    the other's iteration, and then, if the two blocks overlap, at least one of the two
    claims must have failed.  `reported[i]`: (failed, pfn, order) of iteration i."""
    x = seed
    other = 1 - me
    nw = 0
    fetch_add(hold, 2, 1)                     # start together
    while load_acquire(hold, 2) < 2:
        pass
    for i in range(iters):
        x = step(x)
        if small:
            order = bounded(x, L.GROUP_SHIFT)
        else:
            order = bounded(x, L.MAX_ORDER) if me == 1 else L.TOP
        x = step(x)
        pfn = bounded(x, (1 << L.GROUP_SHIFT if small else 1024) >> order) << order
        bad, q, k, w = CL.claim(z, t, me, pfn, order)
        reported[i, 0], reported[i, 1], reported[i, 2] = bad, pfn, order
        xchg(hold, me, i + 1)
        j = fetch_add(hold, other, 0)
        if j > 0 and nw < witnessed.shape[0]:
            witnessed[nw, 0] = i
            witnessed[nw, 1] = j - 1
            nw += 1
        x = step(x)
        for _ in range(bounded(x, 64)):
            load_acquire(hold, other)
        xchg(hold, me, 0)
        if not bad:                             # a failed claim took nothing
            CL.hand_over_claim(z, t, me, pfn, order, me, -1)
    return nw


@pytest.mark.parametrize("small", [False, True], ids=["any-order", "small"])
def test_two_threads_claiming_overlapping_blocks_never_both_succeed_silently(small):
    z = L.new_zone_table(1024, "fine")        # one order-10 block
    t = L.new_thread_table(2)
    iters = 200_000
    hold = np.zeros(3, np.int64)               # iteration + 1 of each thread; start gate
    reported = [np.zeros((iters, 3), np.int64) for _ in range(2)]
    witnessed = [np.zeros((iters, 2), np.int64) for _ in range(2)]
    nw = [0, 0]

    def body(me):
        nw[me] = claim_loop(z, t, me, iters, 12345 + me, hold, reported[me], witnessed[me],
                           small)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    both = 0
    for me in range(2):
        for i, j in witnessed[me][:nw[me]]:
            mine, theirs = reported[me][i], reported[1 - me][j]
            if not overlapping({(int(theirs[1]), int(theirs[2])): 0}, mine[1], mine[2]):
                continue
            both += 1
            assert mine[0] or theirs[0], (me, i, j)
    if both == 0:               # a loaded machine may never run the two at once
        pytest.skip("the two threads never held overlapping claims at the same time")
    sec = L.Sections(z)         # every claim was released: the words are zero again
    assert not sec.pages[:, L.PG_CLAIM].any() and not sec.groups.any()


def test_the_report_names_both_blocks_and_both_owners():
    """A real conflict, decoded and described: the line a person reads names who holds
    which block, including the page cache and the per-CPU lists by name."""
    from harness.verdict import OWNER_NAMES, describe_violation
    assert OWNER_NAMES[D.PAGECACHE] == "the page cache" and OWNER_NAMES[D.PCP_OWNER] == \
        "a per-CPU list"
    z, t = fresh(2)
    do_claim(z, t, 0, 1024, 5)                       # thread 0 holds 32 pages from 1024
    do_claim(z, t, 1, 1040, 0)                       # thread 1 is handed one of them
    (v,) = one_finding(t, 1)
    assert describe_violation(v) == (
        "ownership: double_allocation: thread 1 allocated pfn 1040 (order 0), whose page 1040"
        " is inside a block that thread 0 holds (pfn 1024, order 5)")
    do_hand_over(z, t, 1, 1024, 5, 1, -1)            # thread 1 frees thread 0's block
    (v,) = one_finding(t, 1)
    assert describe_violation(v) == (
        "ownership: free_of_page_not_owned: thread 1 freed pfn 1024 (order 5) as thread 1's,"
        " but thread 0 holds pfn 1024 (order 5) there")
