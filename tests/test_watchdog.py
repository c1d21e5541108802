"""The watchdog: a real deadlock (the seeded area-then-block ABBA) is caught, explained
and cleaned up, through the API and the command line.

The fault makes alloc_block wait for a block lock while holding an area lock,
against free_block's block -> area: under load the two threads deadlock for
real, usually within a couple of seconds.  No lockdep is needed for this.
"""

import glob
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from conftest import running_workers

from harness import layout as L
from harness import zone as Z
from harness.runner import RunConfig, run_stress, warm_up
from harness.verdict import EXIT_HANG, grade, problems

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def warmed():
    """Compile (or load from the cache) every kernel once, before any timed run."""
    return warm_up()


@pytest.mark.timeout(120)
def test_real_deadlock_is_caught_and_explained(warmed):
    assert running_workers() == []
    t0 = time.monotonic()
    result = run_stress(RunConfig(fault="area-then-block", stall_s=1.0, seconds=20,
                                  pages=16384, threads=2, reclaimers=1, seed=1, lockdep=False))
    elapsed = time.monotonic() - t0

    assert result["outcome"] == "hang", (result["outcome"], result["detection_s"])
    assert EXIT_HANG == 3
    assert grade(result) == ("HANG", 3)
    assert any(p.startswith("watchdog: no progress") for p in problems(result))
    assert result["lockdep"] is None                    # found without the validator
    assert "watchdog" in result["detection_s"]
    assert result["detection_s"]["watchdog"] < 10
    # The call returns soon after the hang, far inside its 20 s budget (the warm-up,
    # a JIT compile or cache load, is not part of the run).
    assert elapsed - result["warmup_s"] < 12, (elapsed, result["warmup_s"])
    assert result["duration_s"] < 12

    # Who waits for whom: a cycle of both threads, each waiting for a lock the other holds.
    wait_for = result["wait_for"]
    assert sorted(wait_for["cycle"]) == [0, 1], wait_for
    assert sorted(result["stalled_threads"]) == [0, 1]
    edges = {e["thread"]: e for e in wait_for["edges"]}
    for me in wait_for["cycle"]:
        e = edges[me]
        holder = e["held_by"]
        assert holder in (0, 1) and holder != me, e
        assert e["waits_for_lock"] in wait_for["held"][holder], (e, wait_for["held"])
        assert e["waits_for_lock"].startswith(e["class"] + "[")
    assert {edges[i]["class"] for i in wait_for["cycle"]} == {"area", "block"}

    # The flight recorder keeps the last events of the stuck threads.
    traces = result["traces"]
    assert traces
    assert {e["thread"] for e in traces} <= set(result["stalled_threads"])
    assert all(set(e) >= {"thread", "op", "pfn", "order", "ns"} for e in traces)
    assert [e["ns"] for e in traces] == sorted(e["ns"] for e in traces)

    # The aborted lock waits let every worker finish: nothing is left running.
    assert result["unjoined_threads"] == []
    assert running_workers() == []


@pytest.mark.timeout(120)
def test_cli_reports_the_wait_for_cycle_and_exits_3(tmp_path, warmed):
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "stress", "--fault", "area-then-block", "--no-lockdep",
         "--stall-seconds", "1", "--seconds", "20", "--threads", "2", "--pages", "16384",
         "--report-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=90)
    elapsed = time.monotonic() - t0

    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "wait-for cycle" in proc.stdout
    assert proc.stdout.startswith("verdict: HANG")
    assert "Traceback" not in proc.stderr
    assert elapsed < 15, f"the command took {elapsed:.1f} s of its 20 s budget"
    reports = glob.glob(str(tmp_path / "stress-*.json"))
    assert len(reports) == 1
    with open(reports[0]) as f:
        saved = json.load(f)
    assert (saved["verdict"], saved["exit_status"]) == ("HANG", 3)
    assert len(saved["wait_for"]["cycle"]) == 2


def cycled_capture_list(zone):
    """A capture list whose one block links to itself, as a double placement leaves it;
    returns the call that walks it (capture_finish)."""
    c = zone.capture_start(5)
    pfn = zone.alloc(5)
    zone.free(pfn, 5, capture=c)
    zone.sections.pages[pfn, L.PG_NEXT] = pfn
    return lambda: zone.capture_finish(c)


def cycled_pcp_list(zone):
    """A per-CPU list whose tail links back to its head; returns the call that walks it to
    its tail (drain_pages)."""
    zone.free(zone.alloc(0), 0)
    blocks = zone.pcp_list(0, 0)
    assert len(blocks) >= 2
    zone.sections.pages[blocks[-1], L.PG_NEXT] = blocks[0]
    return zone.drain_pages


@pytest.mark.timeout(60)
@pytest.mark.parametrize("corrupt, pcp", [(cycled_capture_list, False),
                                          (cycled_pcp_list, True)])
def test_a_walk_round_a_cycle_waits_for_the_abort_and_ends(warmed, corrupt, pcp):
    """A list walk that goes round a cycle stops there and waits, making no progress (the
    watchdog names it stalled); the run's abort ends it, so no thread outlives its run
    spinning round the list."""
    from harness.api import Zone
    zone = Zone(pages=1 << 12, pcp=pcp, cpus=1)
    walk = corrupt(zone)
    done = []
    walker = threading.Thread(target=lambda: done.append(walk()), daemon=True)
    walker.start()
    walker.join(0.5)
    assert walker.is_alive() and done == []            # stuck at the cycle, not returned
    zone.sections.ctl[L.CTL_ABORT] = 1                  # what the watchdog's abort does
    walker.join(5.0)
    assert not walker.is_alive()
    assert done == [Z.ABORTED]
