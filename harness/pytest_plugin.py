"""pytest plugin: the `lockorder` fixture, for regression tests that pin the lock ordering.

    def test_my_change(lockorder):
        zone = lockorder.zone(pages=4096, locking="fine")   # a Zone with the validator on
        ...                                                  # drive it
        result = lockorder.stress(seconds=1)                 # or run the stress workers

`stress()` fails the test at once unless the run is CLEAN: a lock-order
problem, a page violation or a hang, with the problems and the command that
reproduces the run; bad arguments fail it with their one-line message.  After
the test body, the zones made through the fixture are analyzed and a lock-order
cycle, an undeclared edge, a lock held across a forbidden sleep or an unlock
of a lock not held fails the test itself (FAILED, not an error at teardown).
Set `lockorder.expect_problems = True` to inspect findings yourself.

Installed as a pytest11 entry point, so any project with this package gets it;
loading it imports neither Numba nor the kernels.
"""

import pytest


class LockOrder:
    """What a test made under the validator: zones (re-read at the end) and run results."""

    def __init__(self):
        self.analyses, self.results, self._zones = [], [], []
        self.expect_problems = False

    def zone(self, pages=4096, locking="fine", **kw):
        """A `harness.Zone` with the validator on."""
        from harness import Zone
        z = Zone(pages=pages, locking=locking, lockdep=True, **kw)
        self._zones.append(z)
        return z

    def stress(self, seconds=1.0, **kw):
        """A short stress run with the validator on; returns its result dict.

        Fails the test unless the verdict is CLEAN (or `expect_problems` is set).
        """
        from harness.config import ConfigError, RunConfig
        from harness.runner import run_stress
        kw.setdefault("pages", 1 << 14)
        kw.setdefault("threads", 2)
        kw["lockdep"] = True
        try:
            cfg = RunConfig(seconds=seconds, **kw)
        except (ConfigError, TypeError) as exc:
            pytest.fail(f"lockorder.stress: {exc}", pytrace=False)
        result = run_stress(cfg)
        self.results.append(result)
        self.analyses.append(result["lockdep"])
        if result["verdict"] != "CLEAN" and not self.expect_problems:
            pytest.fail(describe_run(result), pytrace=False)
        return result

    def collect(self):
        """Analyses of everything so far (zones are re-read now)."""
        return [a for a in self.analyses if a] + [z.lock_order() for z in self._zones]

    def verify(self):
        """Fail the test if any analysis has problems (unless they are expected)."""
        from harness.lockdep import render
        if self.expect_problems:
            return
        bad = [a for a in self.collect() if a["problems"]]
        if bad:
            pytest.fail("lock-order validator:\n" + "\n\n".join(render(a) for a in bad),
                        pytrace=False)


def describe_run(result):
    """Why a fixture run failed: verdict, problems, lock-order report, reproduce command."""
    from harness.lockdep import render
    lines = [f"lockorder.stress: verdict {result['verdict']} (outcome {result['outcome']})"]
    lines += [f"  {p}" for p in result["problems"]]
    analysis = result.get("lockdep")
    if analysis and analysis["problems"]:
        lines += ["lock-order validator:", render(analysis)]
    lines.append(f"reproduce: {result['command']}")
    return "\n".join(lines)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """After a passing test body, check its `lockorder` zones: a problem fails the test."""
    outcome = yield
    lo = getattr(item, "funcargs", {}).get("lockorder")
    if isinstance(lo, LockOrder):
        lo.verify()
    return outcome


@pytest.fixture
def lockorder():
    """Run code under the lock-order validator; fail on a cycle or an undeclared edge."""
    return LockOrder()
