"""The trial engine: a trial is a subprocess whose every ending is a record.

A hang past the timeout is killed and recorded, a crash keeps its signal and
stderr, and on a real Dask LocalCluster a worker process killed mid-trial
costs that trial one re-run, never the campaign.
"""

import os
import signal
import sys
import threading
import time

import pytest

from harness import trials as T
from harness.config import RunConfig, to_argv

PY = sys.executable


def fake(trial_id, code, timeout_s=30.0):
    return T.Trial(id=trial_id, argv=(), timeout_s=timeout_s, cell="fake",
                   command=(PY, "-c", code))


@pytest.mark.timeout(30)
def test_a_hang_past_the_timeout_is_killed_and_recorded():
    executor, slots = T.local_executor()
    seen = []
    t0 = time.monotonic()
    records = T.Engine(executor, slots, seen.append).run(
        [fake("sleeper", "import time; time.sleep(60)", timeout_s=1.0)])
    executor.shutdown()
    assert time.monotonic() - t0 < 10
    (r,) = records
    assert seen == records
    assert r["status"] == T.TIMEOUT and r["id"] == "sleeper"
    assert r["signal"] in ("SIGTERM", "SIGKILL")
    assert r["command"].endswith("time.sleep(60)'")


@pytest.mark.timeout(30)
def test_a_crash_is_a_record_with_its_signal_and_stderr():
    code = "import os, sys; sys.stderr.write('about to fall over\\n'); sys.stderr.flush();" \
           " os.kill(os.getpid(), 11)"
    executor, slots = T.local_executor()
    records = T.Engine(executor, slots).run(
        [fake("segv", code), fake("bad-exit", "import sys; sys.exit(7)")])
    executor.shutdown()
    by_id = {r["id"]: r for r in records}
    assert by_id["segv"]["status"] == T.CRASH and by_id["segv"]["signal"] == "SIGSEGV"
    assert "about to fall over" in by_id["segv"]["stderr_tail"]
    assert by_id["bad-exit"]["status"] == T.CRASH and by_id["bad-exit"]["exit_code"] == 7


@pytest.mark.timeout(30)
def test_trials_past_the_deadline_are_recorded_as_not_run():
    executor, slots = T.local_executor()
    records = T.Engine(executor, slots).run([fake("late", "pass")],
                                            deadline=time.monotonic() - 1)
    executor.shutdown()
    assert [r["status"] for r in records] == [T.NOT_RUN]


@pytest.mark.timeout(600)
def test_dask_local_cluster_runs_real_trials_and_survives_a_killed_worker():
    """Two worker processes; one is SIGKILLed while its trial runs: every trial is
    accounted for, the killed one re-run once on a worker (or recorded lost)."""
    from harness.runner import warm_up
    warm_up()                   # a cold compile takes minutes; not what this measures
    executor, slots, close, client = T.dask_executor(local_workers=2)
    try:
        assert slots == 2
        pids = client.run(os.getpid)
        trials = []
        for k in range(3):
            cfg = RunConfig(threads=2, reclaimers=1, seconds=3.0, seed=k + 1, pages=16384,
                            check_ms=100, stall_s=2.0)
            trials.append(T.Trial(id=f"real/{k + 1}", argv=tuple(to_argv(cfg)),
                                  timeout_s=T.timeout_for(3.0, 2.0), cell="real"))
        victim = sorted(pids.values())[0]
        started = []

        def kill_soon():
            time.sleep(2.5)             # the first two trials are running by now
            os.kill(victim, signal.SIGKILL)
        killer = threading.Thread(target=kill_soon)
        engine = T.Engine(executor, slots, on_start=started.append)
        killer.start()
        records = engine.run(trials)
        killer.join()
    finally:
        close()
    assert sorted(r["id"] for r in records) == ["real/1", "real/2", "real/3"]
    statuses = {r["id"]: r["status"] for r in records}
    hit = [r for r in records if r.get("attempts", 1) > 1 or r["status"] == T.LOST]
    assert hit, statuses                       # the killed worker's trial is accounted for
    for r in hit:
        assert r["status"] == T.LOST or "re-run once" in r["rerun_reason"], r
    assert all(s in (T.CLEAN, T.LOST) for s in statuses.values()), statuses
    assert sum(s == T.CLEAN for s in statuses.values()) >= 2
    assert len(started) >= 4                   # three trials and at least one re-submission
