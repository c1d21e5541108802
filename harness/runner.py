"""The stress runner: build a zone, start one OS thread per worker, watch, stop, collect.

Each worker thread makes one long `nogil` call (its role's loop).  The main
thread only samples: progress, CPU time, heartbeats (the watchdog), and
every `check_ms` it parks all workers at a barrier to check the structural
invariants.  `run_stress` is the one way to run: it returns the counts
(`collect`, in the schema of harness.result) with the verdict attached by the
pure harness.verdict.grade; rendering lives in harness.report.
"""

import os
import platform
import threading
import time

import numba
import numpy as np
import psutil

from harness import layout as L
from harness.clock import Clock
from harness import boundscheck
from harness.config import ALLOC_MIX, DETECTORS, RECLAIM_MIX, RunConfig, repro_command, to_argv, \
    refuse_bare, to_dict
from harness.invariants import check_zone, pages_of
from harness.locks import L_ACQ, L_CLASS, L_CONT, L_WAIT_NS, L_OWNER, L_WORD, wake_all, \
    wake_locks
from harness import sched as S
from harness.witness import describe as describe_witness, thread_witness
from harness.tracing import thread_ring
from harness import faults as F
from harness import hierarchy as H
from harness import lockdep
from harness import race
from harness import result as R
from harness.signals import exit_status, shielded, signal_name
from workers.counters import thread_counters
from workers.detectors import thread_violations
from workers.pool import Workers

__all__ = ["ALLOC_MIX", "DETECTORS", "RECLAIM_MIX", "Run", "RunConfig", "run_stress", "warm_up"]
POLL_S = 0.005                  # the main thread's sampling period (watchdog resolution)
LOCKDEP_POLL_S = 0.2
SETTLE_S = 0.5                  # after a hang, how long the threads not in a lock wait get to exit
LOST_WAKEUP_S = 0.2             # a sleeper on a free lock this long, lock untouched: lost wakeup
ASLEEP_ON_FREE_S = 0.5          # the watchdog ends a run at once after this (no stall limit)


class Run:
    """One stress run's arrays and threads."""

    def __init__(self, cfg: RunConfig, progress=None):
        refuse_bare()                   # no stress run without its seams
        self.cfg, self.progress = cfg, progress
        self.z = L.new_zone_table(cfg.pages, cfg.locking,
                                  cfg.capture_lists or max(8, 2 * cfg.reclaimers),
                                  cpus=cfg.threads if cfg.pcp else 0, batch=cfg.pcp_batch,
                                  high=cfg.pcp_high)
        self.sec = L.Sections(self.z)
        self.t = L.new_thread_table(cfg.threads)
        flags = self.sec.flags
        flags[L.F_OWNERSHIP] = "ownership" in cfg.detectors
        flags[L.F_POISON] = "poison" in cfg.detectors
        flags[L.F_TRACE] = "trace" in cfg.detectors
        flags[L.F_CAPTURE_AUDIT] = "invariants" in cfg.detectors
        flags[L.F_STOP_ON_VIOLATION] = cfg.stop_on_violation
        flags[L.F_LOCKDEP] = cfg.lockdep
        flags[L.F_FAULT] = F.BY_NAME[cfg.fault].id if cfg.fault else F.NO_FAULT
        flags[L.F_CHAOS] = int(cfg.chaos * (1 << 20))
        sched = self.sec.sched
        sched[L.SC_MODE] = {"pct": L.SCHED_PCT, "pct-sites": L.SCHED_PCT_SITES}.get(
            cfg.schedule, L.SCHED_OFF)
        sched[L.SC_DEPTH], sched[L.SC_STEPS], sched[L.SC_SEED] = \
            cfg.pct_depth, cfg.pct_steps, cfg.seed
        self.workers = Workers(cfg, self.z, self.t)   # after the flags: it poisons pages
        self.epoch = 0
        self.checks, self.check_violations = 0, []
        self.samples = []
        self.outcome = "completed"
        self.interrupted_by = self.signal_exit = None
        self.ended_by = None            # time, violation, hang, interrupted, workers exited
        self.unjoined, self.stalled, self.wait_for = [], [], None
        self.asleep = {}                # (thread, lock row, acquisitions) -> first seen asleep
        self.detected_s = {}            # detector -> seconds from start to its first finding
        self.crashes = []               # a worker's exception (the bounds-checked build)
        self.thread_cpu = [0.0] * cfg.threads   # CPU seconds of each worker's one call

    def role(self, i):
        return self.workers.role(i)

    def _body(self, i):
        cpu0 = time.thread_time()
        try:
            self.workers.body(i)
        except IndexError as exc:       # only the bounds-checked build raises (harness.boundscheck)
            self.crashes.append({"thread": i, "error": str(exc), "ns": time.monotonic_ns()})
            self.sec.ctl[L.CTL_STOP] = 1
        finally:
            self.thread_cpu[i] = time.thread_time() - cpu0
            self.t[i, L.T_SCHED, L.TS_STATE] = S.DONE       # the scheduler waits for it no more

    # -- control words
    def _ctl(self, col, value):
        self.sec.ctl[col] = value
        wake_all(self.z, L.ctl_row_py(self.z), col)

    def heartbeats(self):
        return self.t[:, L.T_STATE, L.T_HEARTBEAT].copy()

    def violations_so_far(self):
        return int(self.t[:, L.T_STATE, L.T_NVIOL].sum()) + len(self.check_violations)

    def park_and_check(self, alive):
        """Park every live worker between operations, check invariants, resume."""
        self.epoch += 1
        self._ctl(L.CTL_PARK, self.epoch)
        deadline = time.monotonic() + self.cfg.stall_s
        next_lockdep = time.monotonic() + 0.05
        while True:
            if self.cfg.lockdep and time.monotonic() > next_lockdep:
                next_lockdep += 0.05            # a thread that never parks may be deadlocked:
                if self.lockdep_problems():     # lockdep can say why before the watchdog fires
                    self.detected("lockdep")
            parked = self.t[:, L.T_STATE, L.T_PARKED] == self.epoch
            if all(parked[i] or not alive[i] for i in range(self.cfg.threads)):
                break
            if self.sec.ctl[L.CTL_STOP] or time.monotonic() > deadline:
                self._ctl(L.CTL_PARK, 0)
                return time.monotonic() <= deadline
            if self.asleep_on_free_locks(time.monotonic()):
                self._ctl(L.CTL_PARK, 0)
                return False
            time.sleep(0.0005)
        found = check_zone(self.z) + self.workers.check()
        self.checks += 1
        if found:
            self.detected("invariants")
            self.check_violations += [dict(v, detector="invariants", epoch=self.epoch,
                                           ns=time.monotonic_ns()) for v in found]
            if self.cfg.stop_on_violation:
                self.sec.ctl[L.CTL_STOP] = 1
        self._ctl(L.CTL_PARK, 0)
        return True

    def detected(self, detector):
        self.detected_s.setdefault(detector, round(time.monotonic() - self.t0, 4))

    def lockdep_problems(self):
        return self.lockdep_analysis()["problems"] if self.cfg.lockdep else []

    def lockdep_analysis(self):
        return lockdep.analyze(self.t, self.cfg.locking, lambda row: lock_name(self.sec, row))

    def execute(self):
        """Run the workers to the end; returns wall seconds, CPU seconds.

        Whatever happens in the main thread (Ctrl-C, SIGTERM, a test timeout), the
        workers are told to stop before this returns or raises: no thread outlives it
        unless it is stuck in a lock wait, and then the watchdog's abort ends the wait.
        """
        cfg = self.cfg
        threads = [threading.Thread(target=self._body, args=(i,), name=f"{self.role(i)}-{i}",
                                    daemon=True) for i in range(cfg.threads)]
        proc = psutil.Process()
        cpu0 = sum(proc.cpu_times()[:2])
        self.t0 = time.monotonic()
        self.t0_ns = time.monotonic_ns()
        self.clock = Clock()
        try:
            for th in threads:
                th.start()
            self._watch(threads)
        except KeyboardInterrupt as exc:
            self.outcome = self.ended_by = "interrupted"
            self.interrupted_by = signal_name(exc)
            self.signal_exit = exit_status(exc)
        finally:
            self._stop(threads)
        wall = time.monotonic() - self.t0
        cpu = sum(proc.cpu_times()[:2]) - cpu0
        self.clock.stop()
        return wall, cpu

    def _watch(self, threads):
        """The main thread's loop: sample, watchdog, lockdep, quiescent checks."""
        cfg, t0 = self.cfg, self.t0
        next_lockdep = t0 + LOCKDEP_POLL_S
        last_beat, last_change = self.heartbeats(), np.full(cfg.threads, t0)
        next_check = t0 + cfg.check_ms / 1000 if cfg.check_ms else float("inf")
        next_sample = t0 + 1.0
        while True:
            now = time.monotonic()
            alive = [th.is_alive() for th in threads]
            if now - t0 >= cfg.seconds:
                self.ended_by = "time"
                return
            if self.sec.ctl[L.CTL_STOP] or not any(alive):
                self.ended_by = "violation" if self.sec.ctl[L.CTL_STOP] else "workers exited"
                return
            beat = self.heartbeats()
            moved = beat != last_beat
            last_change[moved] = now
            last_beat = beat
            parked = self.t[:, L.T_STATE, L.T_PARKED] != 0
            stuck = [i for i in range(cfg.threads)
                     if alive[i] and not parked[i] and now - last_change[i] > cfg.stall_s]
            stuck = stuck or self.asleep_on_free_locks(now)
            if stuck:
                self.stalled = stuck
                self.outcome = "hang"
                self.detected("watchdog")
                return
            if cfg.lockdep and now >= next_lockdep:
                next_lockdep = now + LOCKDEP_POLL_S
                if self.lockdep_problems():
                    self.detected("lockdep")
                    if cfg.stop_on_violation:
                        self.ended_by = "violation"
                        return
            if now >= next_check:
                if not self.park_and_check(alive):
                    self.outcome = "hang"
                    self.stalled = [i for i in range(cfg.threads) if alive[i] and
                                    self.t[i, L.T_STATE, L.T_PARKED] != self.epoch]
                    self.detected("watchdog")
                    return
                next_check = time.monotonic() + cfg.check_ms / 1000
            if now >= next_sample:
                self.sample(now - t0)
                next_sample += 1.0
            time.sleep(POLL_S)

    def asleep_on_free_locks(self, now):
        """Threads asleep on a lock that nobody has held or taken for ASLEEP_ON_FREE_S: a
        lost wakeup, named without waiting for the stall limit.  Polled by the watchdog
        loop and while waiting for threads to park (a sleeper never parks)."""
        seen = {}
        for i in range(self.cfg.threads):
            row = int(self.t[i, L.T_STATE, L.T_WAITING]) - 1
            if row >= 0 and self.z[row, L_OWNER] == 0:
                key = (i, row, int(self.z[row, L_ACQ]))     # (thread, lock, acquisitions)
                seen[key] = self.asleep.get(key, now)       # when first seen so
        self.asleep = seen
        return [i for (i, _, _), first in seen.items() if now - first >= ASLEEP_ON_FREE_S]

    def _stop(self, threads):
        """Stop every worker; a thread that does not stop is a hang, ended by the abort."""
        self._ctl(L.CTL_STOP, 1)
        self._ctl(L.CTL_PARK, 0)
        if self.outcome != "hang":
            deadline = time.monotonic() + min(self.cfg.stall_s, 2.0)
            for th in threads:
                if th.ident is not None:
                    th.join(timeout=max(0.0, deadline - time.monotonic()))
            if any(th.is_alive() for th in threads):     # stuck in a lock wait: a hang
                self.outcome = "hang"
                self.stalled = [i for i, th in enumerate(threads) if th.is_alive()]
                self.detected("watchdog")
        if self.outcome == "hang":
            self.ended_by = "hang"
            self._settle(threads)
            self.wait_for = self.wait_for_graph()
            self._ctl(L.CTL_ABORT, 1)                  # every lock wait gives up now
            deadline = time.monotonic() + 2.0
            while any(th.is_alive() for th in threads) and time.monotonic() < deadline:
                # Waits sleep until woken: wake every lock word, again until they are gone
                # (a waiter may have checked the abort word just before it was set).
                wake_locks(self.z, self.sec.lock0, self.sec.lock0 + len(self.sec.locks))
                for th in threads:
                    if th.ident is not None:
                        th.join(timeout=0.01)
        self.unjoined = [th.name for th in threads if th.is_alive()]

    def _settle(self, threads):
        """Let the threads that are not asleep in a lock wait see the stop and exit, so the
        wait-for graph is read while nobody else takes locks."""
        deadline = time.monotonic() + SETTLE_S
        for i, th in enumerate(threads):
            if th.ident is not None and self.t[i, L.T_STATE, L.T_WAITING] == 0:
                th.join(timeout=max(0.0, deadline - time.monotonic()))

    def sample(self, elapsed):
        c = [thread_counters(self.t, i) for i in range(self.cfg.threads)]
        s = {"t": round(elapsed, 3), "ops": sum(x["ops"] for x in c),
             "high_attempts": sum(h["attempts"] for x in c for h in x["high_order"].values()),
             "high_successes": sum(h["successes"] for x in c for h in x["high_order"].values()),
             "violations": self.violations_so_far()}
        self.samples.append(s)
        if self.progress:
            self.progress(self, s)

    def wait_for_graph(self):
        """Who holds which lock and who waits for which: edges thread -> thread.

        A sleeper on a lock nobody holds is normal for a moment (the release woke it
        and it has not run yet; on a busy machine that can take a while), so it is
        called a lost wakeup only if it is still asleep on that lock after
        LOST_WAKEUP_S and nobody took the lock in between.
        """
        locks = self.sec.locks
        lock0 = self.sec.lock0
        graph, free = [], []            # free: (edge, lock row, its acquisitions) of free locks
        for i in range(self.cfg.threads):
            row = int(self.t[i, L.T_STATE, L.T_WAITING]) - 1
            if row < 0:
                continue
            holder = int(self.z[row, L_OWNER]) - 1
            edge = {"thread": i, "waits_for_lock": lock_name(self.sec, row), "held_by": holder,
                    "class": H.CLASS_NAMES[int(self.z[row, L_CLASS])]}
            graph.append(edge)
            if holder < 0:
                free.append((edge, row, int(self.z[row, L_ACQ])))
        if free:
            time.sleep(LOST_WAKEUP_S)
        for edge, row, acquisitions in free:
            edge["lost_wakeup"] = (int(self.t[edge["thread"], L.T_STATE, L.T_WAITING]) - 1 == row
                                   and int(self.z[row, L_OWNER]) == 0
                                   and int(self.z[row, L_ACQ]) == acquisitions)
            edge["lock_word"] = int(self.z[row, L_WORD])
        cycle = find_cycle({g["thread"]: g["held_by"] for g in graph if g["held_by"] >= 0})
        return {"edges": graph, "cycle": cycle,
                "held": {i: [lock_name(self.sec, lock0 + int(r)) for r in
                             np.nonzero(locks[:, L_OWNER] == i + 1)[0]]
                         for i in range(self.cfg.threads)}}

    def finish(self):
        """Final quiescent check and drain; clean runs must end as a fresh zone."""
        end = {"final_check": [], "drain_rejected": 0, "fresh_after_drain": None}
        if self.outcome == "hang" or self.unjoined:
            return end
        end["final_check"] = check_zone(self.z) + self.workers.check()
        if end["final_check"] or self.violations_so_far():
            return end
        end["drain_rejected"] = self.workers.drain()
        counts = self.sec.lists[:L.NAREAS, L.LS_COUNT]
        end["fresh_after_drain"] = bool(counts[L.TOP] == self.cfg.pages >> L.TOP
                                        and counts[:L.TOP].sum() == 0
                                        and not check_zone(self.z))
        return end


def lock_name(sec, row):
    meta = sec.meta
    if row == sec.lock0:
        return "zone"
    for name, base, n in (("block", meta[L.M_BLOCK0], sec.pages_n >> L.TOP),
                          ("capture", meta[L.M_CAP0], sec.ncap),
                          ("area", meta[L.M_AREA0], L.NAREAS),
                          ("pcp", sec.pcp[L.PCP_LOCK0], sec.cpus)):
        if base <= row < base + n:
            return f"{name}[{row - base}]"
    return "pagecache"


def find_cycle(succ):
    """A cycle in a functional graph {node: next}, as a list of nodes, or []."""
    for start in succ:
        seen, node = [], start
        while node in succ and node not in seen:
            seen.append(node)
            node = succ[node]
        if node in seen:
            return seen[seen.index(node):]
    return []


def warm_up():
    """Compile or load every kernel a run uses, on a tiny zone; returns seconds taken.

    A signal interrupts the wait for the compile, never the compile (signals.shielded)."""
    return shielded(_warm_up)


def _warm_up():
    t0 = time.perf_counter()
    run = Run(RunConfig(threads=2, reclaimers=1, seconds=1, pages=1 << 10, check_ms=0))
    run.sec.ctl[L.CTL_STOP] = 1
    Clock()
    run._body(0)
    run._body(1)
    run.sec.ctl[L.CTL_STOP] = 0
    run.finish()
    return time.perf_counter() - t0


def run_stress(cfg: RunConfig, progress=None, warm_s=None):
    """The one way to run: warm up (unless `warm_s` says it was done), run, collect, grade.

    Returns the finalized result dict (harness.result), verdict included.
    """
    if cfg.boundscheck and not boundscheck.active():
        return run_bounds_checked(cfg)
    if warm_s is None:
        warm_s = warm_up()
    run = Run(cfg, progress)
    wall, cpu = run.execute()
    end = run.finish()
    return R.finalize(collect(run, wall, cpu, warm_s, end))


def machine():
    """What a result was measured on."""
    return {"cores": os.cpu_count(), "python": platform.python_version(),
            "numba": numba.__version__, "numpy": np.__version__, "platform": platform.platform()}


def started(seconds_ago):
    """When a result's run started, `seconds_ago` seconds before now (UTC, ISO 8601)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - seconds_ago))


def interrupted_in_warm_up(cfg: RunConfig, warm_s, exc):
    """The finalized result of a run interrupted by `exc` before it started (while the
    kernels compiled): no counts, outcome interrupted, ended by the warm-up."""
    return R.finalize({
        "schema": R.SCHEMA, "version": R.VERSION, "kind": "stress",
        "config": to_dict(cfg), "command": repro_command(cfg),
        "machine": machine(),
        "started": started(warm_s),
        "warmup_s": round(warm_s, 3), "duration_s": 0.0, "cpu_s": 0.0, "parallelism": 0.0,
        "outcome": "interrupted", "ended_by": "warm-up",
        "interrupted_by": signal_name(exc), "signal_exit": exit_status(exc),
        "totals": R.totals([], 0.0), "threads": [], "locks": {}, "checks": 0, "samples": [],
        "worker_violations": [], "invariant_violations": [], "end": {}, "traces": [],
        "detection_s": {}, "warnings": [],
    })


def run_bounds_checked(cfg, timeout=None):
    """`cfg` run by `python -m harness stress --boundscheck --json` in a bounds-checked process."""
    import json
    import subprocess
    import sys
    import tempfile
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-m", "harness", "stress", *to_argv(cfg), "--json",
                               "--report-dir", tmp], cwd=root, capture_output=True, text=True,
                              env=dict(os.environ, **{boundscheck.ENV: "1"}),
                              timeout=timeout or cfg.seconds + 900)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise RuntimeError(f"the bounds-checked run failed (exit {proc.returncode}):"
                           f" {proc.stderr.strip()[-2000:]}") from None


def collect(run, wall, cpu, warm, end):
    """The counts of a finished run, in the saved schema (no verdict: see result.finalize)."""
    cfg, t, sec = run.cfg, run.t, run.sec
    threads = []
    for i in range(cfg.threads):
        threads.append({"thread": i, "role": run.role(i), **thread_counters(t, i),
                        "violations": int(t[i, L.T_STATE, L.T_NVIOL]),
                        "cpu_s": round(run.thread_cpu[i], 3)})
    locks = sec.locks
    per_class = {}
    for k, name in enumerate(H.CLASS_NAMES):
        sel = locks[:, L_CLASS] == k
        per_class[name] = {"locks": int(sel.sum()), "acquisitions": int(locks[sel, L_ACQ].sum()),
                           "contended": int(locks[sel, L_CONT].sum()),
                           "wait_ms": round(float(locks[sel, L_WAIT_NS].sum()) / 1e6, 3)}
    events = all_events(run)
    violations = worker_violations(run)
    for v in violations:
        v["race"] = race.explain(v, events)
    lockdep_analysis = run.lockdep_analysis() if cfg.lockdep else None
    tot = R.totals(threads, wall)
    witness = witness_findings(run)
    return {
        "schema": R.SCHEMA, "version": R.VERSION, "kind": "stress",
        "config": to_dict(cfg),
        "command": repro_command(cfg),
        "machine": machine(),
        "started": started(wall),
        "warmup_s": round(warm, 3),
        "duration_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "parallelism": round(cpu / wall, 3) if wall > 0 else 0.0,
        "outcome": run.outcome,
        "ended_by": run.ended_by,
        "interrupted_by": run.interrupted_by,
        "signal_exit": run.signal_exit,
        "totals": tot,
        "threads": threads,
        "locks": per_class,
        "checks": run.checks,
        "samples": run.samples,
        "worker_violations": violations,
        "invariant_violations": run.check_violations + [dict(v, detector="invariants", epoch="final")
                                                        for v in end["final_check"]],
        "end": {k: v for k, v in end.items() if k != "final_check"},
        "stalled_threads": run.stalled,
        "wait_for": run.wait_for,
        "unjoined_threads": run.unjoined,
        "traces": flight_records(run, events),
        "lockdep": lockdep_analysis,
        "detection_s": detection_times(run, violations, lockdep_analysis),
        "detection_resolution_s": detection_resolution(cfg),
        "chaos_hits": int(t[:, L.T_AUX, L.A_CHAOS_HITS].sum()),
        "witness": witness,
        "crashes": run.crashes,
        "redzone": [int(x) for x in np.nonzero(sec.redzone)[0]],
        "schedule": schedule_stats(run),
        "warnings": warnings(cfg, run, tot, per_class, wall, cpu),
    }


def witness_findings(run):
    """The mutual-exclusion witness's findings, one per thread, each with a one-line text."""
    out = []
    for i in range(run.cfg.threads):
        w = thread_witness(run.t, i)
        if w:
            w["lock"] = lock_name(run.sec, w["lock_row"])
            site = H.SITES[w["site"]] if 0 <= w["site"] < len(H.SITES) else None
            w["text"] = describe_witness(w, lambda row: lock_name(run.sec, row), site)
            w["ns"] = run.clock.ns(w.pop("stamp"))
            out.append(w)
    return out


def schedule_stats(run):
    """What the controlled scheduler did (None when it was off)."""
    if run.cfg.schedule == "none":
        return None
    s = run.t[:, L.T_SCHED]
    return {"mode": run.cfg.schedule, "depth": run.cfg.pct_depth, "steps": run.cfg.pct_steps,
            "points": int(s[:, L.TS_POINTS].sum()),
            "rounds": int(run.sec.sched[L.SC_STEP]) // run.cfg.pct_steps,
            "waits": int(s[:, L.TS_WAITS].sum()), "changes": int(s[:, L.TS_CHANGES].sum()),
            "timeouts": int(s[:, L.TS_TIMEOUTS].sum())}


def detection_times(run, violations, analysis):
    """Seconds from the start to the first finding of each detector that found something.

    Worker findings and lockdep problems carry the cycle-counter stamp of the moment
    they happened (exact); quiescent checks and the watchdog are timed where they fire
    (see detection_resolution).  A finding with no time is left out, never guessed.
    """
    out = dict(run.detected_s)
    exact = {}
    stamped = [(v["detector"], v["ns"]) for v in violations]
    stamped += [("witness", w["ns"]) for w in witness_findings(run)]
    stamped += [("boundscheck", c["ns"]) for c in run.crashes]
    stamped += [("lockdep", run.clock.ns(p["stamp"]))
                for p in (analysis or {}).get("problems", []) if p.get("stamp")]
    for detector, ns in stamped:
        s = round((ns - run.t0_ns) / 1e9, 6)
        exact[detector] = min(exact.get(detector, s), s)
    for detector, s in exact.items():   # a stamp beats the polled time of the same finding
        out[detector] = s if detector == "lockdep" else min(out.get(detector, s), s)
    return out


def detection_resolution(cfg):
    """How precisely each detector's time to detection is known, in seconds."""
    return {"ownership": 0.0, "poison": 0.0, "lockdep": 0.0, "witness": 0.0, "boundscheck": 0.0,
            "invariants": cfg.check_ms / 1000 if cfg.check_ms else None,
            "watchdog": POLL_S}


def warnings(cfg, run, tot, locks, wall, cpu):
    """Things that make a CLEAN verdict weaker than it looks: paths never exercised."""
    out = []
    if cfg.reclaimers and run.outcome == "completed" and tot["reclaims"] == 0:
        out.append(f"the reclaimers never had to reclaim in {wall:.1f} s on {cfg.pages} pages:"
                   " every high-order allocation succeeded directly, so reclaim and capture"
                   " were not exercised (use fewer --pages or more --seconds)")
    elif cfg.reclaimers and cfg.capture and tot["reclaims"] and not tot["captured_other_pages"] \
            and cfg.threads > cfg.reclaimers:
        out.append("no page was captured from another thread's free: the capture race window"
                   " was not reached")
    if cfg.threads > 1 and wall > 0.5 and cpu / wall < 1.2 and (os.cpu_count() or 1) > 1:
        out.append(f"threads barely overlapped (parallelism {cpu / wall:.2f}): the machine may"
                   " be busy, and races are less likely to show")
    contended = sum(c["contended"] for c in locks.values())
    if cfg.threads > 1 and run.outcome == "completed" and wall > 0.5 and contended == 0:
        out.append("no lock acquisition was contended: the threads never raced for a lock")
    return out


def worker_violations(run):
    return [{("ns" if k == "stamp" else k): (run.clock.ns(x) if k == "stamp" else x)
             for k, x in v.items()}
            for i in range(run.cfg.threads) for v in thread_violations(run.t, i)]


def all_events(run):
    """Every thread's flight-recorder ring, merged in time order (ns on the monotonic clock;
    a stable sort, so a thread's events with one carried stamp stay in ring order).  An
    event with a carried stamp (harness.tracing) has "carried": True and "until_ns": it
    happened between "ns" and "until_ns" (None: not bounded)."""
    def event(i, e):
        out = {"thread": i, "op": e["op"], "pfn": e["pfn"], "order": e["order"],
               "ns": run.clock.ns(e["stamp"])}
        if e.get("carried"):
            out["carried"] = True
            out["until_ns"] = None if e["until"] is None else run.clock.ns(e["until"])
        return out

    events = [event(i, e) for i in range(run.cfg.threads) for e in thread_ring(run.t, i)]
    events.sort(key=lambda e: e["ns"])
    return events


def flight_records(run, events, limit=40):
    """The merged events kept for the report: those on the pages of violations (for a
    hang: the last events of the stuck threads)."""
    if run.outcome == "hang":
        stuck = set(run.stalled)
        return [e for e in events if e["thread"] in stuck][-limit:]
    spans = [(v["pfn"], v["pfn"] + (1 << v["order"])) for v in worker_violations(run)]
    spans += [(p, p + 1) for v in run.check_violations for p in pages_of(v)]
    if not spans:
        return []

    def touches(e):
        if e["op"] == "capture_start" or e["pfn"] < 0:
            return False
        lo, hi = e["pfn"], e["pfn"] + (1 << max(0, e["order"]))
        return any(lo < b and a < hi for a, b in spans)

    return [e for e in events if touches(e)][-limit:]
