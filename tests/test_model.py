"""Hand-worked unit tests of the reference model in tests/model.py."""

import copy
import random
import time

import pytest

from model import ModelZone

ONES = [1] * 11


def snapshot(m):
    return copy.deepcopy((m.free_lists, m.free_order, m.allocated, m.captures,
                          m.captured_in, m.next_handle))


def page_total(m):
    blocks = list(m.free_order.items()) + list(m.allocated.items())
    blocks += [(p, o) for p, (_, o) in m.captured_in.items()]
    return sum(1 << o for _, o in blocks)


def assert_consistent(m):
    """Pages are conserved, blocks don't overlap, no two free/captured buddies coexist."""
    assert page_total(m) == m.pages
    covered = set()
    for lst in (m.free_order, m.allocated, {p: o for p, (_, o) in m.captured_in.items()}):
        for pfn, order in lst.items():
            assert pfn % (1 << order) == 0
            span = set(range(pfn, pfn + (1 << order)))
            assert not covered & span
            covered |= span
    idle = dict(m.free_order)
    idle.update({p: o for p, (_, o) in m.captured_in.items()})
    for pfn, order in idle.items():
        if order < 10:
            assert idle.get(pfn ^ (1 << order)) != order


# ---- construction ----------------------------------------------------------

@pytest.mark.parametrize("pages", [0, -1024, 1000, 1536, 1024.0, None])
def test_bad_page_counts(pages):
    with pytest.raises(ValueError):
        ModelZone(pages)


def test_fresh_zone_has_highest_pfn_at_head():
    m = ModelZone(4096)
    assert m.free_counts() == [0] * 10 + [4]
    assert m.free_list(10) == [3072, 2048, 1024, 0]


# ---- alloc / free ----------------------------------------------------------

def test_alloc_splits_like_expand():
    m = ModelZone(2048)
    assert m.alloc(0) == 1024              # head of list 10 is the highest block
    assert m.free_counts() == ONES          # one upper half per order 0..9, plus pfn 0
    assert [m.free_list(k) for k in range(11)] == [
        [1025], [1026], [1028], [1032], [1040], [1056], [1088], [1152], [1280], [1536], [0]]
    assert m.alloc(0) == 1025
    assert m.free_counts() == [0] + [1] * 10


def test_alloc_takes_smallest_fitting_order():
    m = ModelZone(1024)
    assert m.alloc(0) == 0
    assert m.free_counts() == [1] * 10 + [0]
    assert m.alloc(3) == 8                  # list 3 holds pfn 8
    assert m.free_counts() == [1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0]
    assert m.alloc(2) == 4
    assert m.alloc(2) == 16                 # list 4's block 16 is split: 24 -> 3, 20 -> 2
    assert m.free_list(3) == [24]
    assert m.free_list(2) == [20]


def test_alloc_fails_when_nothing_fits():
    m = ModelZone(1024)
    assert m.alloc(10) == 0
    assert m.free_counts() == [0] * 11
    assert m.alloc(0) is None
    assert m.free_counts() == [0] * 11


def test_free_merges_back_to_fresh_state():
    m = ModelZone(2048)
    a, b = m.alloc(0), m.alloc(0)
    m.free(a, 0)                            # buddy 1025 still allocated: no merge
    assert m.free_list(0) == [1024]
    m.free(b, 0)                            # merges all the way up to (1024, 10)
    assert m.free_counts() == [0] * 10 + [2]
    assert m.free_list(10) == [1024, 0]


def test_free_lists_are_lifo():
    m = ModelZone(1024)
    assert [m.alloc(0), m.alloc(0), m.alloc(0)] == [0, 1, 2]   # 2 splits (2, 1): 3 -> list 0
    assert m.free_list(0) == [3]
    m.free(0, 0)                            # buddy 1 allocated
    assert m.free_list(0) == [0, 3]
    assert m.alloc(0) == 0


# ---- capture ---------------------------------------------------------------

def test_reclaimer_frees_merge_into_its_own_list():
    m = ModelZone(1024)
    assert m.alloc(4) == 0 and m.alloc(4) == 16
    c = m.capture_start(5)
    m.free(16, 4, capture=c)                # buddy 0 allocated: stays at order 4
    assert m.captured(c) == [(16, 4)]
    assert m.free_counts() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0]
    m.free(0, 4, capture=c)                 # merges (16,4) and then free buddies 32..512
    assert m.captured(c) == [(0, 10)]
    assert m.free_counts() == [0] * 11      # captured pages are not free


def test_normal_free_joins_capture_list_of_captured_buddy():
    m = ModelZone(1024)
    assert m.alloc(0) == 0 and m.alloc(0) == 1
    c = m.capture_start(4)
    m.free(0, 0, capture=c)
    assert m.captured(c) == [(0, 0)]
    assert m.free_counts() == [0] + [1] * 9 + [0]
    m.free(1, 0)                            # buddy 0 is captured: switch to list c
    assert m.captured(c) == [(0, 10)]
    assert m.free_counts() == [0] * 11
    assert m.capture_finish(c) == 0         # carved from 10 down to 4
    assert m.free_counts() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0]
    assert m.free_list(4) == [16] and m.free_list(9) == [512]
    m.free(0, 4)
    assert m.free_counts() == [0] * 10 + [1]


def test_capture_mode_takes_buddies_from_other_capture_lists():
    m = ModelZone(1024)
    assert m.alloc(0) == 0 and m.alloc(0) == 1
    c0, c1 = m.capture_start(4), m.capture_start(6)
    assert (c0, c1) == (0, 1)
    m.free(0, 0, capture=c0)
    m.free(1, 0, capture=c1)                # buddy captured on c0 is merged too
    assert m.captured(c0) == []
    assert m.captured(c1) == [(0, 10)]
    assert m.capture_finish(c0) is None
    assert m.capture_finish(c1) == 0
    assert m.free_counts() == [0] * 6 + [1] * 4 + [0]


def test_capture_list_head_first_and_finish_returns_rest():
    m = ModelZone(2048)
    assert m.alloc(10) == 1024
    assert m.alloc(0) == 0 and m.alloc(0) == 1
    c = m.capture_start(5)
    m.free(1024, 10, capture=c)
    m.free(0, 0, capture=c)                 # buddy 1 allocated
    assert m.captured(c) == [(0, 0), (1024, 10)]
    assert m.capture_finish(c) == 1024      # first block of order >= 5 is carved
    assert [m.free_list(k) for k in range(5, 11)] == [
        [1056, 32], [1088, 64], [1152, 128], [1280, 256], [1536, 512], []]
    assert m.free_list(0) == [0]            # the rest was freed normally (buddy 1 held)
    m.free(1024, 5)
    m.free(1, 0)
    assert m.free_counts() == [0] * 10 + [2]
    assert m.free_list(10) == [0, 1024]


def test_finish_without_big_enough_block_frees_everything():
    m = ModelZone(1024)
    assert m.alloc(0) == 0 and m.alloc(0) == 1
    c = m.capture_start(4)
    m.free(0, 0, capture=c)
    assert m.capture_finish(c) is None
    assert m.free_counts() == [1] * 10 + [0]
    assert m.free_list(0) == [0]


def test_handles_are_never_reused():
    m = ModelZone(1024)
    c = m.capture_start(4)
    assert m.capture_finish(c) is None
    assert m.capture_start(10) == c + 1


# ---- bad input -------------------------------------------------------------

def _busy_model():
    m = ModelZone(2048)
    assert [m.alloc(0), m.alloc(0), m.alloc(0), m.alloc(3), m.alloc(10)] == [
        1024, 1025, 1026, 1032, 0]
    m.free(1026, 0)                         # merges with free 1027 into (1026, 1)
    c = m.capture_start(4)
    m.free(1025, 0, capture=c)              # buddy 1024 still allocated
    done = m.capture_start(5)
    m.capture_finish(done)
    return m, c, done


@pytest.mark.parametrize("op", [
    lambda m, c, done: m.alloc(11),
    lambda m, c, done: m.alloc(-1),
    lambda m, c, done: m.capture_start(3),
    lambda m, c, done: m.capture_start(11),
    lambda m, c, done: m.free(1026, 0),           # double free
    lambda m, c, done: m.free(1025, 0),           # captured, not allocated
    lambda m, c, done: m.free(1032, 2),           # wrong order
    lambda m, c, done: m.free(1033, 0),           # inside an allocated block
    lambda m, c, done: m.free(2048, 0),           # out of range
    lambda m, c, done: m.free(-1, 0),
    lambda m, c, done: m.free(1032, 11),
    lambda m, c, done: m.free(0, 10, capture=done),   # finished capture list
    lambda m, c, done: m.free(0, 10, capture=99),     # unknown capture list
    lambda m, c, done: m.captured(done),
    lambda m, c, done: m.capture_finish(done),
    lambda m, c, done: m.capture_finish(99),
    lambda m, c, done: m.free_list(11),
])
def test_bad_input_raises_and_leaves_state_unchanged(op):
    m, c, done = _busy_model()
    before = snapshot(m)
    with pytest.raises(ValueError):
        op(m, c, done)
    assert snapshot(m) == before


# ---- randomized self-consistency and speed ---------------------------------

def test_random_ops_stay_consistent_and_return_to_fresh():
    rng = random.Random(1234)
    m = ModelZone(1 << 16)
    held, open_ = [], []
    start = time.perf_counter()
    for step in range(4000):
        r = rng.random()
        if r < 0.45:
            order = min(rng.choice([0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), 10)
            pfn = m.alloc(order)
            if pfn is not None:
                held.append((pfn, order))
        elif r < 0.75 and held:
            pfn, order = held.pop(rng.randrange(len(held)))
            cap = rng.choice(open_) if open_ and rng.random() < 0.4 else None
            m.free(pfn, order, capture=cap)
        elif r < 0.85 and len(open_) < 4:
            open_.append(m.capture_start(rng.randint(4, 10)))
        elif open_:
            c = open_.pop(rng.randrange(len(open_)))
            wanted = m.captures[c]["wanted"]
            pfn = m.capture_finish(c)
            if pfn is not None:
                held.append((pfn, wanted))
        if step % 500 == 0:
            assert_consistent(m)
    assert time.perf_counter() - start < 1.0
    assert_consistent(m)
    for c in open_:
        pfn = m.capture_finish(c)
        if pfn is not None:
            held.append((pfn, m.allocated[pfn]))
    for pfn, order in held:
        m.free(pfn, order)
    assert m.free_counts() == [0] * 10 + [64]
    assert_consistent(m)
