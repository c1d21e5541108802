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


class _Stop(BaseException):
    """An interrupt of the test's own, raised by a SIGUSR1 handler in the main thread."""


@pytest.mark.timeout(30)
def test_a_trial_interrupted_in_its_own_thread_is_killed_before_the_interrupt_goes_on(
        tmp_path):
    pid_file = tmp_path / "pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid()));" \
           " time.sleep(60)"

    def interrupt_once_started():
        while not pid_file.exists() or not pid_file.read_text():
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGUSR1)

    def stop(signum, frame):
        raise _Stop()

    previous = signal.signal(signal.SIGUSR1, stop)
    try:
        threading.Thread(target=interrupt_once_started, daemon=True).start()
        with pytest.raises(_Stop):
            T.run_trial(fake("sleeper", code))
    finally:
        signal.signal(signal.SIGUSR1, previous)
    with pytest.raises(ProcessLookupError):      # gone now, not when this process exits
        os.kill(int(pid_file.read_text()), 0)
    assert T._RUNNING == {}


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
def test_nightly_on_a_dask_local_cluster_survives_a_killed_worker(tmp_path, warmed):
    """`nightly --local-cluster 2`: a real LocalCluster with two worker processes runs the
    night; one worker process is SIGKILLed while its trial runs.  The night completes, every
    trial is accounted for, and the killed one says it was re-run once (or lost)."""
    import json
    import subprocess
    import psutil
    (tmp_path / "m.toml").write_text("[axes]\nlocking = ['fine']\nchaos = [0.0, 0.02]\n"
                                     "[base]\nthreads = 2\npages = 16384\nstall_s = 2.0\n"
                                     "[canaries]\nruns = 0\n")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [PY, "-m", "harness", "nightly", "--local-cluster", "2", "--matrix",
         str(tmp_path / "m.toml"), "--budget", "60s", "--trial-seconds", "3", "--rounds", "2",
         "--history", str(tmp_path / "h.sqlite"), "--out", str(out)], cwd=T.ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    me, killed, deadline = psutil.Process(proc.pid), None, time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        for child in me.children():                   # the Dask worker processes
            try:
                if any("harness" in " ".join(g.cmdline()) and "stress" in g.cmdline()
                       for g in child.children(recursive=True)):
                    time.sleep(0.5)
                    child.kill()                      # mid-trial
                    killed = child.pid
                    break
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.2)
    stdout, stderr = proc.communicate(timeout=240)
    assert killed is not None, stderr
    assert proc.returncode == 0, stdout + stderr
    assert "engine: Dask" in stderr and "2 worker(s)" in stderr
    night = json.loads((out / "night.json").read_text())
    ids = sorted(r["id"] for r in night["records"])
    assert ids == sorted(night["plan"]["all_ids"])     # nothing lost from the night
    hit = [r for r in night["records"] if r.get("attempts", 1) > 1 or r["status"] == T.LOST]
    assert len(hit) >= 1, [(r["id"], r["status"]) for r in night["records"]]
    for r in hit:
        assert r["status"] == T.LOST or "re-run once" in r["rerun_reason"], r
    assert sum(r["status"] == T.CLEAN for r in night["records"]) >= 3
