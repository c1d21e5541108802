"""The trial engine: every campaign trial is a subprocess, run on any `concurrent.futures.Executor`.

A `Trial` is a stress command line plus a timeout above its watchdog's.
`run_trial` (a plain function, so a Dask worker can run it too) starts
`python -m harness stress ... --json` in its own session, waits at most the
timeout, and always returns a record: the parsed result, or the exit code or
signal and the tail of stderr when the trial crashed, hung past its timeout
or was killed.  `Engine.run` submits trials to an executor (a local thread
pool by default, Dask's `Client.get_executor` for many machines), streams
records back with `as_completed`, re-submits once a trial whose worker
process died, and on Ctrl-C/SIGTERM cancels what has not started, kills the
trial subprocesses it owns and keeps every finished record.
"""

import concurrent.futures as cf
import ctypes
import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STDERR_TAIL = 2000
GRACE_S = 3.0                   # SIGTERM first (the trial writes what it has), then SIGKILL
START_ALLOWANCE_S = 45.0        # interpreter start + loading the kernel cache, above the run
CORES_PER_TRIAL = 2             # a trial's threads want whole cores
POLL_S = 0.05                   # how often the engine looks for finished trials

# Record statuses.  The first three come from a stress result; the rest are about the process.
CLEAN, VIOLATIONS, HANG = "clean", "violations", "hang"
CRASH, TIMEOUT, LOST, INTERRUPTED, NOT_RUN = "crash", "timeout", "lost", "interrupted", "not-run"
VERDICT_STATUS = {"CLEAN": CLEAN, "VIOLATIONS": VIOLATIONS, "HANG": HANG,
                  "INTERRUPTED": INTERRUPTED}


@dataclasses.dataclass(frozen=True)
class Trial:
    """One subprocess to run: `id` is stable across nights and shards (never a seed or time)."""
    id: str
    argv: tuple                 # stress options (harness.config.to_argv), or a whole command
    timeout_s: float
    cell: str = ""              # matrix cell, canary or fault name this trial belongs to
    kind: str = "cell"          # cell, canary, repro, fault
    meta: tuple = ()            # extra (key, value) pairs copied into the record
    command: tuple = ()         # if set: run this instead of the stress command (tests)
    root: str = ""              # run the package source tree here instead of this one (mutants)
    env: tuple = ()             # extra (name, value) environment pairs, e.g. HARNESS_CACHE_DIR

    def args(self, python=None):
        if self.command:
            return [python or sys.executable if a == "{python}" else a for a in self.command]
        return [python or sys.executable, "-m", "harness", "stress", *self.argv, "--json"]

    def repro(self):
        """The line a user types to re-run this trial."""
        args = self.command or ["python", "-m", "harness", "stress", *self.argv]
        line = " ".join(shlex.quote(a) for a in [*(f"{k}={v}" for k, v in self.env), *args])
        return f"cd {shlex.quote(self.root)} && {line}" if self.root else line


def timeout_for(seconds, stall_s):
    """A trial's timeout: its run, then the watchdog's own stall time twice, then start-up."""
    return round(seconds + 2 * stall_s + START_ALLOWANCE_S, 1)


# ---------------------------------------------------------------- one trial (any process)

_RUNNING = {}                   # trial id -> Popen, in this process (local pools kill these)
_RUNNING_LOCK = threading.Lock()


def _die_with_parent():
    """In the child: SIGKILL it when the process that started it dies (a lost Dask worker)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)      # PR_SET_PDEATHSIG
    except (AttributeError, OSError):
        pass


def run_trial(trial, python=None, cwd=None):
    """Run `trial` to the end or its timeout; its record (a JSON-ready dict), never raises
    for anything the trial did.  Interrupted in the calling thread (Ctrl-C, SIGTERM), it
    kills the trial's process group before the interrupt goes on."""
    started = time.time()
    record = {"id": trial.id, "cell": trial.cell, "kind": trial.kind, **dict(trial.meta),
              "command": trial.repro(), "timeout_s": trial.timeout_s,
              "host": os.uname().nodename, "started": started}
    with tempfile.TemporaryDirectory(prefix="trial-") as scratch:
        args = trial.args(python)
        if not trial.command:
            args += ["--report-dir", scratch]
        root = trial.root or ROOT
        env = dict(os.environ, **dict(trial.env), PYTHONPATH=os.pathsep.join(
            [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        try:
            proc = subprocess.Popen(args, cwd=cwd or root, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                    text=True, start_new_session=True,
                                    preexec_fn=_die_with_parent)
        except OSError as err:
            return {**record, "status": CRASH, "exit_code": None, "signal": None,
                    "stderr_tail": f"cannot start the trial: {err}", "elapsed_s": 0.0,
                    "result": None}
        with _RUNNING_LOCK:
            _RUNNING[trial.id] = proc
        timed_out = False
        try:
            out, err = proc.communicate(timeout=trial.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            out, err = _kill(proc)
        except BaseException:           # interrupted in this thread: the trial ends with it
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            with _RUNNING_LOCK:
                _RUNNING.pop(trial.id, None)
    return finish_record(record, proc.returncode, out, err, timed_out, time.time() - started)


def _signal_group(proc, sig):
    """Send `sig` to a trial's whole process group (gone already: nothing to do)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill(proc):
    """End a trial's whole process group: SIGTERM, a short grace, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, None)):
        _signal_group(proc, sig)
        try:
            return proc.communicate(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.communicate()


def kill_running():
    """Kill every trial subprocess this process started (used when the campaign stops)."""
    with _RUNNING_LOCK:
        procs = list(_RUNNING.values())
    for proc in procs:
        _signal_group(proc, signal.SIGKILL)


def finish_record(record, code, out, err, timed_out, elapsed):
    """The record of a finished process: status from the result JSON, else from how it ended."""
    result = None
    if out and out.lstrip().startswith("{"):
        try:
            result = json.loads(out)
        except ValueError:
            result = None
    sig = -code if code is not None and code < 0 else None
    record.update(exit_code=code, signal=signal.Signals(sig).name if sig else None,
                  stderr_tail=(err or "")[-STDERR_TAIL:], elapsed_s=round(elapsed, 2),
                  result=result)
    if timed_out:
        record["status"] = TIMEOUT
    elif isinstance(result, dict) and result.get("verdict") in VERDICT_STATUS:
        record["status"] = VERDICT_STATUS[result["verdict"]]
    elif code == 0 and record.get("kind") == "probe":
        record["status"] = CLEAN
    else:
        record["status"] = CRASH
    return record


def lost_record(trial, why):
    """The record of a trial whose worker died twice (or that never came back)."""
    return {"id": trial.id, "cell": trial.cell, "kind": trial.kind, **dict(trial.meta),
            "command": trial.repro(), "timeout_s": trial.timeout_s, "status": LOST,
            "exit_code": None, "signal": None, "stderr_tail": why[-STDERR_TAIL:],
            "elapsed_s": 0.0, "result": None, "host": None, "started": time.time()}


def not_run_record(trial, why):
    return {**lost_record(trial, why), "status": NOT_RUN}


# ---------------------------------------------------------------- the engine

def local_executor(cores_per_trial=CORES_PER_TRIAL):
    """The embedded pool: as many trials at once as there are whole `cores_per_trial` groups."""
    slots = max(1, (os.cpu_count() or 1) // cores_per_trial)
    return cf.ThreadPoolExecutor(max_workers=slots, thread_name_prefix="trial"), slots


def _lost_worker(exc):
    """True for an exception that says the worker process died, not the trial."""
    name = type(exc).__name__
    return name in ("KilledWorker", "CommClosedError", "FutureCancelledError") or \
        isinstance(exc, (cf.process.BrokenProcessPool, ConnectionError, EOFError))


class Engine:
    """Runs trials on an executor and hands each record to `on_record` as it finishes."""

    def __init__(self, executor, slots, on_record=None, python=None, cwd=None, reruns=1,
                 on_start=None):
        self.executor, self.slots = executor, max(1, slots)
        self.on_record = on_record or (lambda r: None)
        self.on_start = on_start or (lambda t: None)
        self.python, self.cwd, self.reruns = python, cwd, reruns
        self.records, self.interrupted, self._reruns = [], None, {}

    def _submit(self, trial):
        return self.executor.submit(run_trial, trial, self.python, self.cwd)

    def run(self, trials, deadline=None, stop=None):
        """Run `trials`; their records (finished ones only if interrupted: then the
        KeyboardInterrupt is re-raised after the pool is stopped).

        `deadline` (time.monotonic()): trials not started by then are recorded as not-run
        (the one re-run of a trial whose worker died still starts).
        `stop()`: a callable; when it returns True nothing new is started.
        """
        pending = list(trials)
        futures, attempts = {}, {}
        try:
            while pending or futures:
                while pending and len(futures) < self.slots:
                    t = pending.pop(0)
                    late = deadline is not None and time.monotonic() >= deadline
                    if (late and t.id not in attempts) or (stop is not None and stop()):
                        self._done(not_run_record(t, "the night's time budget ran out"))
                        continue
                    attempts[t.id] = attempts.get(t.id, 0) + 1
                    futures[self._submit(t)] = t
                    self.on_start(t)
                if not futures:
                    break
                done = [fut for fut in futures if fut.done()]
                if not done:
                    # A plain sleep, not cf.wait: an interrupt raised inside cf.wait's
                    # condition variable can leave its lock held, and then the pool's
                    # worker blocks forever in set_result and the exit joins it.
                    time.sleep(POLL_S)
                    continue
                for fut in done:
                    t = futures.pop(fut)
                    try:
                        record = fut.result()
                    except Exception as exc:                  # the worker, not the trial
                        if _lost_worker(exc) and attempts[t.id] <= self.reruns:
                            pending.insert(0, t)
                            self._note_rerun(t.id, exc)
                            continue
                        record = lost_record(t, f"{type(exc).__name__}: {exc}")
                    record["attempts"] = attempts[t.id]
                    if attempts[t.id] > 1:
                        record["rerun_reason"] = self._reruns.get(t.id)
                    self._done(record)
        except KeyboardInterrupt as exc:
            self.interrupted = exc
            for fut in futures:
                fut.cancel()
            kill_running()
            for fut, t in futures.items():          # what was running when the stop came
                self._done({**not_run_record(t, "the campaign was interrupted"),
                            "status": INTERRUPTED})
            for t in pending:                       # and what had not started: every trial
                self._done(not_run_record(t, "the campaign was interrupted"))
            raise
        return self.records

    def _note_rerun(self, trial_id, exc):
        self._reruns[trial_id] = (f"worker lost ({type(exc).__name__}); re-run once on"
                                  " another worker")

    def _done(self, record):
        self.records.append(record)
        self.on_record(record)


# ---------------------------------------------------------------- Dask

def dask_executor(scheduler=None, local_workers=None, timeout_s=5.0):
    """(executor, slots, close) on Dask distributed: a scheduler address or a new LocalCluster.

    Every trial asks for the resource `machine=1`, so each worker (started with
    `--resources machine=1`, one per machine) runs one trial at a time on whole
    cores.  The LocalCluster's scheduler marks a task whose worker died as
    failed at once (allowed-failures 0), so the engine, not Dask, re-runs it
    once and can say so in the record.  Raises OSError (one line) when the
    scheduler cannot be reached.
    """
    import dask
    from distributed import Client, LocalCluster
    cluster = None
    if local_workers:
        with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                              "distributed.worker.daemon": False}):
            cluster = LocalCluster(n_workers=local_workers, threads_per_worker=1,
                                   processes=True, resources={"machine": 1},
                                   dashboard_address=None, silence_logs=40)
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout=f"{timeout_s}s")
        except (OSError, TimeoutError) as err:
            raise OSError(f"cannot reach the Dask scheduler {scheduler}: {err}") from None
    workers = client.scheduler_info().get("workers", {})
    slots = sum(int(w.get("resources", {}).get("machine", 0)) for w in workers.values())
    if not slots:
        client.close()
        if cluster:
            cluster.close()
        raise OSError(f"the Dask scheduler {scheduler} has no worker with the resource"
                      " machine=1 (start workers with --resources machine=1)")
    executor = client.get_executor(resources={"machine": 1}, pure=False)

    def close():
        try:
            client.close()
        finally:
            if cluster:
                cluster.close()
    return executor, slots, close, client


def warm_trial():
    """Compile (or load from the cache) every kernel once, before any timed trial."""
    code = "from harness.runner import warm_up; print(round(warm_up(), 2))"
    return Trial(id="warm-up", argv=(), timeout_s=600.0, kind="probe",
                 command=("{python}", "-c", code))
