"""Property tests: the real Zone (both locking schemes) against tests/model.py.

Every operation is applied to the model and to one Zone per locking scheme,
with and without the lock-order validator, in lockstep; return values,
ValueErrors, free_counts(), the free lists pfn by pfn and the open capture
lists must agree after every step, and Zone.check() must report nothing.  The
validating zones' lock order must have no problems at the end.  A second
machine drives alloc and free only, with the plain-Python baseline
(harness.baseline.PyZone) in the lockstep too.  On a mismatch the assertion
message carries the concrete op sequence.  Example counts scale with the
Hypothesis profile (tests/conftest.py).
"""

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule)

from harness import Zone
from harness.baseline import PyZone
from model import ModelZone

SCHEMES = ("zone", "fine")
LOCKDEP = ("zone+lockdep", "fine+lockdep")      # the same schemes, validator on
BASELINE = "baseline"
PAGES = st.sampled_from([1024, 2048, 4096])
ORDERS = st.one_of(st.integers(0, 3), st.integers(0, 10))   # weighted toward small orders
PICK = st.integers(min_value=0, max_value=1 << 16)          # index into a list, modulo len
MAX_OPEN = 4                                                # open capture lists at a time
CHECK_EVERY = 8


def norm(value):
    """Plain-Python form of a return value, so NumPy ints and tuples/lists compare equal."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or getattr(value, "ndim", 0) > 0:
        return [norm(v) for v in value]
    return int(value)


def outcome(call):
    """("ok", value) or ("ValueError",); anything else propagates."""
    try:
        return ("ok", norm(call()))
    except ValueError:
        return ("ValueError",)


def counts(zone):
    return [int(n) for n in zone.free_counts()]


class Baseline(PyZone):
    """PyZone with the read-outs the lockstep compares (it has no capture, no checks)."""

    def free_counts(self):
        return list(self.count)

    def free_list(self, order):
        out, p = [], self.head[order]
        while p >= 0:
            out.append(p)
            p = self.next[p]
        return out


class Lockstep(RuleBasedStateMachine):
    """Model + one Zone per locking scheme (and validator setting), same op sequence.

    With BASELINE, only alloc and free are drawn and the baseline joins them;
    it takes no part in invalid ops (it checks little: not its job).
    """

    BASELINE = False

    @initialize(pages=PAGES)
    def setup(self, pages):
        self.pages = pages
        self.model = ModelZone(pages)
        self.zones = {s: Zone(pages=pages, locking=s) for s in SCHEMES}
        self.zones.update({s: Zone(pages=pages, locking=s.split("+")[0], lockdep=True)
                           for s in LOCKDEP})
        if self.BASELINE:
            self.zones[BASELINE] = Baseline(pages)
        self.log = [f"Zone(pages={pages})"]
        self.held = []         # [(pfn, order)] allocated blocks
        self.open = []         # [(model handle, {scheme: handle}, wanted)]
        self.finished = []     # [(model handle, {scheme: handle})]
        self.freed = []        # recently freed (pfn, order), for double frees
        self.steps = 0
        self.since_drain = 0

    # ---- lockstep driver --------------------------------------------------

    def do(self, desc, on_model, on_zone, same_value=True, baseline=True):
        """Apply one op everywhere; all outcomes must agree.  Returns the model's.

        With same_value=False only success vs. ValueError is compared (handles);
        with baseline=False the baseline zone (if any) sits the op out.
        """
        self.log.append(desc)
        note(desc)
        expected = outcome(lambda: on_model(self.model))
        for scheme, zone in self.zones.items():
            if scheme == BASELINE and not baseline:
                continue
            got = outcome(lambda: on_zone(scheme, zone))
            if not same_value:
                got, want = got[:1], expected[:1]
            else:
                want = expected
            assert got == want, self.report(f"{scheme}: {desc} -> {got}, model -> {want}")
        return expected

    def report(self, what):
        return what + "\nop sequence:\n  " + "\n  ".join(self.log)

    def compare_state(self):
        want = self.model.free_counts()
        for scheme, zone in self.zones.items():
            assert counts(zone) == want, self.report(
                f"{scheme}: free_counts {counts(zone)} != model {want}")
            if hasattr(zone, "free_list"):          # optional API: compare list order too
                for k in range(11):
                    got, want_k = norm(zone.free_list(k)), self.model.free_list(k)
                    assert got == want_k, self.report(
                        f"{scheme}: free_list({k}) {got} != model {want_k}")
        for mh, zh, _ in self.open:
            want = norm(self.model.captured(mh))
            for scheme, zone in self.zones.items():
                got = norm(zone.captured(zh[scheme]))
                assert got == want, self.report(f"{scheme}: captured(#{mh}) {got} != model {want}")

    def check_zones(self):
        for scheme, zone in self.zones.items():
            if scheme != BASELINE:
                bad = zone.check()
                assert list(bad) == [], self.report(f"{scheme}: check() -> {bad}")

    def teardown(self):
        """The validating zones saw every op: their lock order must have no problems."""
        for scheme in LOCKDEP:
            zone = getattr(self, "zones", {}).get(scheme)
            if zone is not None:
                problems = [p["summary"] for p in zone.lock_order()["problems"]]
                assert problems == [], self.report(f"{scheme}: lock order: {problems}")

    def invalid(self, desc, on_model, on_zone):
        """An op that must raise ValueError everywhere and change nothing."""
        before = [counts(z) for z in self.zones.values()]
        assert self.do(desc, on_model, on_zone, baseline=False) == ("ValueError",), self.report(
            f"expected ValueError: {desc}")
        after = [counts(z) for z in self.zones.values()]
        assert after == before, self.report(f"{desc} changed free_counts {before} -> {after}")

    @invariant()
    def agree(self):
        self.steps += 1
        self.since_drain += 1
        self.compare_state()
        if self.steps % CHECK_EVERY == 0:
            self.check_zones()

    # ---- valid operations -------------------------------------------------

    @rule(order=ORDERS)
    def alloc(self, order):
        res = self.do(f"alloc({order})", lambda m: m.alloc(order), lambda s, z: z.alloc(order))
        event(f"alloc order {'<=3' if order <= 3 else '>3'}: {res[1] is not None}")
        if res[1] is not None:
            self.held.append((res[1], order))

    @precondition(lambda self: self.held)
    @rule(i=PICK)
    def free(self, i):
        pfn, order = self.held.pop(i % len(self.held))
        self.do(f"free({pfn}, {order})",
                lambda m: m.free(pfn, order), lambda s, z: z.free(pfn, order))
        if any(p <= pfn < p + (1 << o) for p, (_, o) in self.model.captured_in.items()):
            event("normal free joined a capture list")
        self.freed = (self.freed + [(pfn, order)])[-16:]

    @rule(order=st.integers(0, 3), n=st.integers(2, 6))
    def alloc_burst(self, order, n):
        """Several small allocs in a row: they tend to hold buddy pairs."""
        for _ in range(n):
            self.alloc(order)

    @precondition(lambda self: not self.BASELINE and len(self.open) < MAX_OPEN)
    @rule(order=st.one_of(st.integers(4, 5), st.integers(4, 10)))
    def capture_start(self, order):
        handles = {}
        mh = self.do(f"c{self.model.next_handle} = capture_start({order})",
                     lambda m: m.capture_start(order),
                     lambda s, z: handles.setdefault(s, z.capture_start(order)),
                     same_value=False)[1]
        self.open.append((mh, handles, order))

    @precondition(lambda self: self.held and self.open)
    @rule(i=PICK, j=PICK)
    def reclaim_free(self, i, j):
        pfn, order = self.held.pop(i % len(self.held))
        mh, zh, _ = self.open[j % len(self.open)]
        self.do(f"free({pfn}, {order}, capture=c{mh})",
                lambda m: m.free(pfn, order, capture=mh),
                lambda s, z: z.free(pfn, order, capture=zh[s]))
        self.freed = (self.freed + [(pfn, order)])[-16:]

    @precondition(lambda self: self.open)
    @rule(j=PICK)
    def capture_finish(self, j):
        mh, zh, wanted = self.open.pop(j % len(self.open))
        res = self.do(f"capture_finish(c{mh})  # wanted {wanted}",
                      lambda m: m.capture_finish(mh), lambda s, z: z.capture_finish(zh[s]))
        event(f"capture_finish: {'block' if res[1] is not None else 'None'}")
        if res[1] is not None:
            self.held.append((res[1], wanted))
        self.finished = (self.finished + [(mh, zh)])[-8:]

    @precondition(lambda self: self.since_drain >= 12)
    @rule()
    def drain(self):
        """Finish every capture list, free every block: the zone must be whole again."""
        self.log.append("# drain")
        event("drain")
        while self.open:
            self.capture_finish(0)
        while self.held:
            self.free(len(self.held) - 1)
        fresh = ModelZone(self.pages).free_counts()
        assert self.model.free_counts() == fresh
        self.compare_state()
        self.check_zones()
        tops = [self.alloc_top() for _ in range(self.pages >> 10)]
        assert sorted(tops) == list(range(0, self.pages, 1024))
        for pfn in reversed(tops):                       # restores list 10's order
            self.do(f"free({pfn}, 10)", lambda m: m.free(pfn, 10), lambda s, z: z.free(pfn, 10))
        self.since_drain = 0

    def alloc_top(self):
        return self.do("alloc(10)", lambda m: m.alloc(10), lambda s, z: z.alloc(10))[1]

    # ---- invalid operations -----------------------------------------------

    BAD_PLAIN = ["alloc11", "alloc-1", "start3", "start11", "range", "finished", "unknown"]
    BAD_HELD = ["order+", "order-", "order11", "inside", "into_open"]
    BAD_NOT_HELD = ["double", "free_list", "captured"]

    @rule(kind=st.sampled_from(BAD_PLAIN + BAD_HELD + BAD_NOT_HELD), i=PICK)
    def bad(self, kind, i):
        """One invalid op: must raise ValueError everywhere and change nothing."""
        if kind in self.BAD_PLAIN:
            self.bad_plain(kind)
        elif kind in self.BAD_HELD:
            if self.held:
                self.bad_held(kind, i)
        else:
            self.bad_not_held(kind, i)

    def bad_plain(self, kind):
        if kind == "alloc11":
            self.invalid("alloc(11)", lambda m: m.alloc(11), lambda s, z: z.alloc(11))
        elif kind == "alloc-1":
            self.invalid("alloc(-1)", lambda m: m.alloc(-1), lambda s, z: z.alloc(-1))
        elif kind in ("start3", "start11"):
            order = 3 if kind == "start3" else 11
            self.invalid(f"capture_start({order})", lambda m: m.capture_start(order),
                         lambda s, z: z.capture_start(order))
        elif kind == "range":
            for pfn in (self.pages, self.pages + 1024, -1, -1024):
                self.invalid(f"free({pfn}, 0)", lambda m: m.free(pfn, 0),
                             lambda s, z: z.free(pfn, 0))
        elif kind == "finished":
            live = {zh[s] for _, zh, _ in self.open for s in zh}
            gone = [(mh, zh) for mh, zh in self.finished
                    if not any(zh[s] in live for s in zh)]        # zone may reuse handles
            if gone:
                mh, zh = gone[-1]
                self.invalid(f"captured(c{mh})  # finished", lambda m: m.captured(mh),
                             lambda s, z: z.captured(zh[s]))
                self.invalid(f"capture_finish(c{mh})  # finished",
                             lambda m: m.capture_finish(mh), lambda s, z: z.capture_finish(zh[s]))
                if self.held:
                    pfn, order = self.held[-1]
                    self.invalid(f"free({pfn}, {order}, capture=c{mh})  # finished",
                                 lambda m: m.free(pfn, order, capture=mh),
                                 lambda s, z: z.free(pfn, order, capture=zh[s]))
        elif kind == "unknown":
            live = {zh[s] for _, zh, _ in self.open for s in zh}
            for h in (1 << 20, -1):
                if h not in live:
                    self.invalid(f"captured({h})  # unknown", lambda m: m.captured(-1),
                                 lambda s, z: z.captured(h))
                    self.invalid(f"capture_finish({h})  # unknown",
                                 lambda m: m.capture_finish(-1),
                                 lambda s, z: z.capture_finish(h))

    def bad_held(self, kind, i):
        pfn, order = self.held[i % len(self.held)]
        if kind == "order+" or (kind == "order-" and order == 0):
            bad = [(pfn, order + 1)] if order < 10 else [(pfn, order - 1)]
        elif kind == "order-":
            bad = [(pfn, order - 1)]
        elif kind == "order11":
            bad = [(pfn, 11), (pfn, -1)]
        else:  # "inside" / "into_open": a head-looking pfn inside the block
            bad = [(pfn + (1 << (order - 1)), order - 1), (pfn + 1, 0)] if order else [(pfn, 1)]
        cap = self.open[i % len(self.open)] if kind == "into_open" and self.open else None
        for p, o in bad:
            if cap is None:
                self.invalid(f"free({p}, {o})  # bad", lambda m: m.free(p, o),
                             lambda s, z: z.free(p, o))
            else:
                mh, zh, _ = cap
                self.invalid(f"free({p}, {o}, capture=c{mh})  # bad",
                             lambda m: m.free(p, o, capture=mh),
                             lambda s, z: z.free(p, o, capture=zh[s]))

    def bad_not_held(self, kind, i):
        """Free a block that is not allocated: already freed, on a free list, or captured."""
        if kind == "double":
            cands = [b for b in self.freed if self.model.allocated.get(b[0]) != b[1]]
        elif kind == "free_list":
            cands = [(lst[0], k) for k in range(11) if (lst := self.model.free_list(k))]
        else:
            cands = [b for mh, _, _ in self.open for b in self.model.captured(mh)]
        if cands:
            pfn, order = cands[i % len(cands)]
            self.invalid(f"free({pfn}, {order})  # {kind}", lambda m: m.free(pfn, order),
                         lambda s, z: z.free(pfn, order))


class LockstepBaseline(Lockstep):
    BASELINE = True


# 5x and 1x the profile's example count (ci: 500 and 100).
Lockstep.TestCase.settings = settings(
    max_examples=5 * settings().max_examples, stateful_step_count=100, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestLockstep = pytest.mark.slow(Lockstep.TestCase)
LockstepBaseline.TestCase.settings = settings(
    Lockstep.TestCase.settings, max_examples=settings().max_examples)
TestLockstepBaseline = pytest.mark.slow(LockstepBaseline.TestCase)


# ---- plain tests -------------------------------------------------------------

@pytest.mark.parametrize("pages", [0, 1000, -1024, 1536])
@pytest.mark.parametrize("locking", SCHEMES)
def test_bad_page_counts_raise(pages, locking):
    with pytest.raises(ValueError):
        Zone(pages=pages, locking=locking)


@pytest.mark.parametrize("locking", ["", "global", "none", "Fine"])
def test_unknown_locking_raises(locking):
    with pytest.raises(ValueError):
        Zone(pages=1024, locking=locking)


@pytest.mark.parametrize("locking", SCHEMES)
def test_fresh_zone(locking):
    z = Zone(pages=4096, locking=locking)
    assert counts(z) == [0] * 10 + [4]
    assert list(z.check()) == []
    assert [norm(z.alloc(10)) for _ in range(5)] == [3072, 2048, 1024, 0, None]


@settings(deadline=None, max_examples=3 * settings().max_examples // 5)   # ci: 60
@given(pages=PAGES, orders=st.lists(ORDERS, max_size=80))
def test_alloc_sequence_matches_fresh_model(pages, orders):
    m = ModelZone(pages)
    zones = [Zone(pages=pages, locking=s) for s in SCHEMES]
    for order in orders:
        want = m.alloc(order)
        for z in zones:
            assert norm(z.alloc(order)) == want
            assert counts(z) == m.free_counts()
    for z in zones:
        assert list(z.check()) == []


@pytest.mark.parametrize("locking", SCHEMES)
def test_capture_scenario(locking):
    """A normal free whose buddy is captured joins the capture list (hand-worked)."""
    z = Zone(pages=1024, locking=locking)
    assert norm(z.alloc(0)) == 0 and norm(z.alloc(0)) == 1
    c0, c1 = z.capture_start(4), z.capture_start(6)
    z.free(0, 0, capture=c0)
    assert norm(z.captured(c0)) == [[0, 0]]
    assert counts(z) == [0] + [1] * 9 + [0]
    z.free(1, 0)
    assert norm(z.captured(c0)) == [[0, 10]] and norm(z.captured(c1)) == []
    assert counts(z) == [0] * 11
    assert norm(z.capture_finish(c1)) is None
    assert norm(z.capture_finish(c0)) == 0
    assert counts(z) == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0]
    assert list(z.check()) == []
    z.free(0, 4)
    assert counts(z) == [0] * 10 + [1]
    assert list(z.check()) == []
