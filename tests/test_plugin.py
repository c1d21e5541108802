"""The `lockorder` fixture as a user sees it: inline test files run by pytester.

Each case is a small test file run in a pytest subprocess (the plugin is
loaded there from this source tree, through its pytest11 entry point), so
what is checked is the outcome pytest prints: FAILED or PASSED, and why.
One subprocess session holds several cases, to pay its kernel cache load once.
"""

import re
import textwrap

import pytest

pytest_plugins = ["pytester"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

RUNS = """
    import pytest
    from harness import faults as F
    from harness import layout as L
    from harness.runner import warm_up

    def test_warm():
        warm_up()

    def test_clean(lockorder):
        result = lockorder.stress(seconds=0.5, seed=1)
        assert result["verdict"] == "CLEAN"

    def test_page_violations(lockorder):
        lockorder.stress(seconds=8, seed=1, fault="free-no-block-lock")

    def test_hang(lockorder):
        # Keep going past lockdep's report of the inversion, into the real deadlock.
        lockorder.stress(seconds=20, seed=1, fault="area-then-block", stall_s=1.0, reclaimers=1,
                         stop_on_violation=False)

    def test_expected_problems_are_returned(lockorder):
        lockorder.expect_problems = True
        result = lockorder.stress(seconds=8, seed=2, fault="free-no-block-lock")
        assert result["verdict"] != "CLEAN" and result["problems"]

    @pytest.mark.parametrize("kw", [dict(seconds=-5), dict(pages=1000), dict(fault="bogus"),
                                    dict(bogus=1)], ids=["seconds", "pages", "fault", "keyword"])
    def test_bad_arguments(lockorder, kw):
        lockorder.stress(**kw)

    def inverted_zone(lockorder):
        zone = lockorder.zone(pages=4096, locking="fine")
        zone.sections.flags[L.F_FAULT] = F.BY_NAME["capture-before-block"].id
        c = zone.capture_start(4)
        zone.free(zone.alloc(4), 4, capture=c)
        assert zone.capture_finish(c) is not None

    def test_zone_inversion(lockorder):
        inverted_zone(lockorder)

    def test_zone_inversion_expected(lockorder):
        lockorder.expect_problems = True
        inverted_zone(lockorder)
        assert any(a["problems"] for a in lockorder.collect())
"""


def run_inline(pytester, source, *args, timeout=200):
    pytester.makepyfile(test_inline=textwrap.dedent(source))
    result = pytester.runpytest_subprocess("-rA", "-p", "no:cacheprovider", *args,
                                           timeout=timeout)
    return result, result.stdout.str()


def section(out, test):
    """The failure section pytest prints for `test` (between its ____ header and the next)."""
    start = out.index(f"_ {test} _")
    end = out.find("\n____", start + 1)
    short = out.find("short test summary", start)
    ends = [e for e in (end, short) if e > 0]
    return out[start:min(ends)] if ends else out[start:]


def test_fixture_outcomes(pytester, harness_env, warmed):
    result, out = run_inline(pytester, RUNS)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    for name in ("test_warm", "test_clean", "test_expected_problems_are_returned",
                 "test_zone_inversion_expected"):
        assert f"PASSED test_inline.py::{name}" in out, out
    assert "ERROR test_inline.py" not in out, out               # no errors at teardown

    # A run with page violations fails the test, with its problems and reproduce command.
    assert "FAILED test_inline.py::test_page_violations" in out
    text = section(out, "test_page_violations")
    # (Corrupted lists can also stall a worker: then the verdict is HANG.)
    assert re.search(r"lockorder.stress: verdict (VIOLATIONS|HANG)", text), text
    assert any(f"  {d}:" in text for d in ("ownership", "poison", "invariants", "watchdog",
                                           "witness")), text
    assert "reproduce: python -m harness stress" in text and "--fault free-no-block-lock" in text
    assert "Traceback" not in text

    # A run that hung fails the test too.
    assert "FAILED test_inline.py::test_hang" in out
    text = section(out, "test_hang")
    assert "lockorder.stress: verdict HANG" in text, text
    assert "watchdog: no progress" in text
    assert "reproduce: python -m harness stress" in text

    # Bad arguments: a one-line message each, nothing run.
    for case, words in (("seconds", "--seconds must be in"), ("pages", "--pages must be in"),
                        ("fault", "unknown fault 'bogus'"), ("keyword", "'bogus'")):
        assert f"FAILED test_inline.py::test_bad_arguments[{case}]" in out
        text = section(out, f"test_bad_arguments[{case}]")
        assert "lockorder.stress: " in text and words in text, text
        assert "KeyError" not in text and "Traceback" not in text

    # A lock-order problem in a zone fails the test itself: FAILED, not PASSED + ERROR.
    assert "FAILED test_inline.py::test_zone_inversion" in out
    assert "PASSED test_inline.py::test_zone_inversion " not in out
    text = section(out, "test_zone_inversion")
    assert "lock-order validator:" in text
    assert "possible circular locking dependency" in text
    assert "capture_finish: block" in text
    result.assert_outcomes(passed=4, failed=7)


TIMEOUT = """
    import threading, time
    import psutil
    import pytest
    from harness.runner import warm_up

    WORKERS = ("allocator-", "reclaimer-")

    def test_warm():
        warm_up()

    @pytest.mark.timeout(3)
    def test_times_out(lockorder):
        lockorder.stress(seconds=30, seed=1)

    def test_workers_are_gone():
        alive = [t.name for t in threading.enumerate() if t.name.startswith(WORKERS)]
        assert alive == []
        proc = psutil.Process()
        cpu0, t0 = sum(proc.cpu_times()[:2]), time.monotonic()
        time.sleep(1.0)
        busy = (sum(proc.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0)
        print(f"cpu after timeout: {busy:.2f} cores")
        assert busy < 0.5, busy
"""


def test_a_timed_out_stress_call_leaves_no_workers(pytester, harness_env, warmed):
    result, out = run_inline(pytester, TIMEOUT, "-s")
    assert "FAILED test_inline.py::test_times_out" in out, out
    assert "Timeout" in out
    assert "PASSED test_inline.py::test_workers_are_gone" in out, out
    result.assert_outcomes(passed=2, failed=1)
    assert result.duration < 60, result.duration      # not the 30 s run plus a compile
