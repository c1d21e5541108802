"""Isolation and own-only capture, single-threaded, in lockstep with the model (tests/model.py).

A hypothesis state machine drives the Zone API and the pure-Python model with the
same calls (alloc, free, own frees, own-only capture lists, isolating an aligned
range, frees into it, ending it) and compares every return value, every free
list and every capture list, and runs the invariant checker after each step.
"""

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, invariant, precondition, rule,
                                 run_state_machine_as_test)

from harness import Zone
from model import ModelZone

PAGES = 4096


class IsolationLockstep(RuleBasedStateMachine):
    locking = "fine"

    def __init__(self):
        super().__init__()
        self.zone = Zone(PAGES, locking=self.locking, capture_lists=8)
        self.model = ModelZone(PAGES)
        self.held = []               # (pfn, order) allocated in both
        self.lists = []              # (zone handle, model handle, is isolation)

    @rule(order=st.integers(0, 6))
    def alloc(self, order):
        got, want = self.zone.alloc(order), self.model.alloc(order)
        assert got == want
        if got is not None:
            self.held.append((got, order))

    @precondition(lambda self: self.held)
    @rule(i=st.integers(0, 10 ** 6), into=st.integers(-1, 3))
    def free(self, i, into):
        pfn, order = self.held.pop(i % len(self.held))
        caps = [(zh, mh) for zh, mh, iso in self.lists if not iso]
        if into >= 0 and caps:
            zh, mh = caps[into % len(caps)]
            self.zone.free(pfn, order, capture=zh)
            self.model.free(pfn, order, capture=mh)
        else:
            self.zone.free(pfn, order)
            self.model.free(pfn, order)

    @precondition(lambda self: len(self.lists) < 6)
    @rule(order=st.integers(4, 8), own_only=st.booleans())
    def capture_start(self, order, own_only):
        self.lists.append((self.zone.capture_start(order, own_only=own_only),
                           self.model.capture_start(order, own_only=own_only), False))

    @precondition(lambda self: len(self.lists) < 6)
    @rule(order=st.integers(4, 8), at=st.integers(0, 10 ** 6))
    def isolate(self, order, at):
        base = (at % (PAGES >> order)) << order
        zh, mh = self.zone.isolate(base, order), self.model.isolate(base, order)
        assert (zh is None) == (mh is None), (base, order)
        if zh is not None:
            self.lists.append((zh, mh, True))

    @precondition(lambda self: self.lists)
    @rule(i=st.integers(0, 10 ** 6))
    def finish(self, i):
        zh, mh, iso = self.lists.pop(i % len(self.lists))
        if iso:
            got, want = self.zone.end_isolation(zh), self.model.end_isolation(mh)
        else:
            got, want = self.zone.capture_finish(zh), self.model.capture_finish(mh)
        assert got == want
        if got is not None:
            order = self.model.allocated[got]
            self.held.append((got, order))

    @invariant()
    def same_state(self):
        for order in range(11):
            assert self.zone.free_list(order) == self.model.free_list(order), order
        for zh, mh, _ in self.lists:
            assert self.zone.captured(zh) == self.model.captured(mh)
        assert self.zone.check() == []


class IsolationLockstepZoneLock(IsolationLockstep):
    locking = "zone"


SETTINGS = settings(max_examples=40, stateful_step_count=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.timeout(240)
@pytest.mark.parametrize("machine", [IsolationLockstep, IsolationLockstepZoneLock],
                         ids=["fine", "zone"])
def test_isolation_lockstep(machine):
    run_state_machine_as_test(machine, settings=SETTINGS)


@pytest.mark.timeout(120)
def test_isolated_range_holds_frees_and_is_taken_whole():
    """A free inside the range goes to its list, not to the free lists; a free next to it
    does not merge across; the range is taken when whole."""
    z, m = Zone(2048), ModelZone(2048)
    blocks = [z.alloc(0) for _ in range(64)]
    assert blocks == [m.alloc(0) for _ in range(64)]
    base = blocks[0] & ~15                       # the order-4 range of the first page
    inside = [p for p in blocks if p >> 4 == base >> 4]
    assert len(inside) == 16
    c, mc = z.isolate(base, 4), m.isolate(base, 4)
    for p in inside[:-1]:
        z.free(p, 0)
        m.free(p, 0)
        assert all(not (base <= q < base + 16) for o in range(11) for q in z.free_list(o))
    assert z.captured(c) == m.captured(mc) != []
    outside = base ^ 16                          # the buddy range, all allocated
    for p in [q for q in blocks if q >> 4 == outside >> 4]:
        z.free(p, 0)
        m.free(p, 0)
    assert z.free_list(4) == m.free_list(4) and outside in z.free_list(4)   # not merged in
    z.free(inside[-1], 0)
    m.free(inside[-1], 0)
    assert z.captured(c) == [(base, 4)]
    assert z.check() == []
    assert z.end_isolation(c) == m.end_isolation(mc) == base
    assert z.check() == []


@pytest.mark.timeout(60)
def test_isolation_refused_and_bad_input():
    z = Zone(2048)
    assert z.isolate(0, 4) is None               # a free order-10 block covers the range
    with pytest.raises(ValueError):
        z.isolate(8, 4)                          # not aligned
    with pytest.raises(ValueError):
        z.isolate(0, 3)                          # not a costly order
    p = z.alloc(0)
    c = z.isolate(p & ~15, 4)
    assert c is not None
    with pytest.raises(ValueError):
        z.capture_finish(c)                      # an isolation ends with end_isolation
    assert z.isolate((p & ~15) ^ 16, 4) is None  # one isolated range per order-10 block
    assert z.end_isolation(c) is None            # p is still allocated: released
    assert z.check() == []
