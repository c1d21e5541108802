"""Shared fixtures, the `slow` marker's rule, and the Hypothesis profiles.

`slow` (registered in pyproject.toml): a test that takes more than ~10 s.
Besides the tests marked by hand, every test that requests `warmed` runs the
kernels on real threads (or a subprocess that does), so it is marked here;
`pytest -m "not slow"` is the quick loop.

Profiles (choose with HYPOTHESIS_PROFILE, default `ci`): `ci` is deterministic
(the same examples on every run) and bounded; `dev` is a quick loop; `deep`
searches much longer.  Tests that need more or fewer examples than the others
scale the profile's count rather than fixing their own.
"""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=100, derandomize=True, print_blob=True, **_COMMON)
settings.register_profile("dev", max_examples=20, **_COMMON)
settings.register_profile("deep", max_examples=1000, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_sessionstart(session):
    """Compile (or load from the cache) every kernel before the first test: a cold compile
    takes minutes on a small machine, and must not count against any one test's timeout.
    Subprocesses that the tests start load the same cache."""
    if session.config.option.collectonly:
        return
    import time
    from harness.runner import warm_up
    t0 = time.perf_counter()
    warm_up()
    _warm_api()
    print(f"\nkernels compiled or loaded in {time.perf_counter() - t0:.1f} s")


def _warm_api():
    """Every kernel the Zone API calls, once (with and without per-CPU lists)."""
    from harness.api import Zone
    for z in (Zone(pages=1 << 12), Zone(pages=1 << 12, pcp=True, cpus=2)):
        z.free(z.alloc(0), 0)
        c = z.capture_start(5)
        z.free(z.alloc(0), 0, capture=c)
        z.capture_finish(c)
        c = z.isolate(1 << 11, 5)
        if c is not None:
            z.end_isolation(c)
        if z.pcp:
            z.drain_pages()
            z.drain_pages(0)
        z.check()


def pytest_collection_modifyitems(items):
    for item in items:
        if "warmed" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


def sigint_as_in_a_terminal():
    """`preexec_fn` of a child that a test stops with SIGINT, as Ctrl-C would in a terminal.
    A shell starts a background job with SIGINT ignored, and a child inherits that (Python
    then never raises KeyboardInterrupt, rightly): without this, the suite run as a
    background job would find every Ctrl-C ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


WORKER_PREFIXES = ("allocator-", "reclaimer-")
WORKER_EXIT_GRACE_S = 5.0


def running_workers():
    """Worker threads of an in-process stress run that are still alive."""
    return [th.name for th in threading.enumerate()
            if th.name.startswith(WORKER_PREFIXES) and th.is_alive()]


@pytest.fixture(autouse=True)
def no_worker_outlives_its_test():
    """A run returns only after its workers ended (or says which did not): a worker still
    running after its test would race with the next test's run, so it fails the test that
    left it, not whichever test comes next."""
    yield
    deadline = time.monotonic() + WORKER_EXIT_GRACE_S
    while running_workers() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert running_workers() == [], "worker threads outlived the test"


@pytest.fixture(scope="session")
def root():
    """The source tree under test (the directory holding harness/ and tests/)."""
    return ROOT


@pytest.fixture(scope="session")
def warmed():
    """Compile (or load from the cache) every kernel once per session; returns seconds taken."""
    from harness.runner import warm_up
    return warm_up()


def run_harness(*args, timeout=90, env=None):
    """`python -m harness *args` from the source tree, captured as text."""
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def harness_cmd():
    """A function running `python -m harness *args` in a subprocess (see run_harness)."""
    return run_harness


@pytest.fixture(scope="session")
def jit_cache_base():
    """The JIT cache base of this session, read before any test changes HOME."""
    from harness import jitcache
    return jitcache.base()


@pytest.fixture
def harness_env(monkeypatch, jit_cache_base):
    """Environment for a subprocess pytest (pytester) that loads this tree's harness.

    pytester gives its subprocess a fresh HOME, so the JIT cache base is passed
    on explicitly (or every kernel compiles again), and PYTHONPATH puts this
    source tree ahead of any installed copy of the package.
    """
    monkeypatch.setenv("HARNESS_CACHE_DIR", jit_cache_base)
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", ROOT + (os.pathsep + path if path else ""))
