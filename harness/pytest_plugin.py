"""pytest plugin: the `lockorder` fixture, for regression tests that pin the lock ordering.

    def test_my_change(lockorder):
        zone = lockorder.zone(pages=4096, locking="fine")   # a Zone with the validator on
        ...                                                  # drive it
        result = lockorder.stress(seconds=1)                 # or run the stress workers

At teardown every zone and run made through the fixture is analyzed; a
lock-order cycle, an undeclared edge, a lock held across a forbidden sleep
or an unlock of a lock not held fails the test with a lockdep-style report.
Set `lockorder.expect_problems = True` to inspect findings yourself.
Installed as a pytest11 entry point, so any project with this package gets it.
"""

import pytest


class LockOrder:
    def __init__(self):
        self.analyses, self._zones = [], []
        self.expect_problems = False

    def zone(self, pages=4096, locking="fine", **kw):
        from harness import Zone
        z = Zone(pages=pages, locking=locking, lockdep=True, **kw)
        self._zones.append(z)
        return z

    def stress(self, seconds=1.0, **kw):
        """A short stress run with the validator on; returns its result dict."""
        from harness.runner import RunConfig, run_stress
        kw.setdefault("pages", 1 << 14)
        kw.setdefault("threads", 2)
        result = run_stress(RunConfig(seconds=seconds, lockdep=True, **kw))
        self.analyses.append(result["lockdep"])
        return result

    def collect(self):
        """Analyses of everything so far (zones are re-read now)."""
        return self.analyses + [z.lock_order() for z in self._zones]


@pytest.fixture
def lockorder():
    """Run code under the lock-order validator; fail on a cycle or an undeclared edge."""
    from harness.lockdep import render
    lo = LockOrder()
    yield lo
    if lo.expect_problems:
        return
    bad = [a for a in lo.collect() if a["problems"]]
    if bad:
        pytest.fail("lock-order validator:\n" + "\n\n".join(render(a) for a in bad),
                    pytrace=False)
