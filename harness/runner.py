"""The stress runner: build a zone, start one OS thread per worker, watch, stop, collect.

Each worker thread makes one long `nogil` call (its role's loop).  The main
thread only samples: progress, CPU time, heartbeats (the watchdog), and
every `check_ms` it parks all workers at a barrier to check the structural
invariants.  The result is a plain dict of counts (see `collect`); grading
and rendering live in harness.verdict and harness.report.
"""

import os
import platform
import threading
import time
from dataclasses import asdict, dataclass, field

import numba
import numpy as np
import psutil

from harness import layout as L
from harness.clock import Clock
from harness.invariants import check_zone
from harness.locks import L_ACQ, L_CLASS, L_CONT, L_WAIT_NS, L_OWNER, wake_all
from harness.tracing import thread_ring
from harness import faults as F
from harness import hierarchy as H
from harness import lockdep
from workers.counters import thread_counters
from workers.detectors import thread_violations
from workers.pool import Workers

SCHEMA = "buddy-stress-report/1"
ALLOC_MIX = {0: 60, 1: 20, 2: 10, 3: 9.5, 9: 0.5}
RECLAIM_MIX = {4: 1, 5: 1, 6: 1, 7: 1, 8: 1, 9: 1, 10: 1}


@dataclass
class RunConfig:
    threads: int = os.cpu_count() or 2
    reclaimers: int = 1
    seconds: float = 10.0
    seed: int = 1
    pages: int = 1 << 16
    locking: str = "fine"
    capture: bool = True
    alloc_mix: dict = field(default_factory=lambda: dict(ALLOC_MIX))
    reclaim_mix: dict = field(default_factory=lambda: dict(RECLAIM_MIX))
    held: int = 2048                 # blocks an allocator holds at most
    reclaimer_held: int = 4          # high-order blocks a reclaimer holds at most
    cache_pct: int = 50              # % of freed order-0 pages that go to the page cache
    pool_fraction: float = 0.85      # page-cache capacity as a fraction of the zone
    batch_mul: int = 2               # a reclaim takes max(batch_min, batch_mul << order) pages
    batch_min: int = 32
    detectors: tuple = ("ownership", "poison", "invariants", "trace")
    check_ms: int = 500              # quiescent invariant checks every this many ms (0: end only)
    stall_s: float = 5.0             # watchdog: no heartbeat for this long is a hang
    stop_on_violation: bool = True
    lockdep: bool = False
    fault: str = ""
    chaos: float = 0.0


DETECTORS = ("ownership", "poison", "invariants", "trace")


class Run:
    """One stress run's arrays and threads."""

    def __init__(self, cfg: RunConfig, progress=None):
        self.cfg, self.progress = cfg, progress
        self.z = L.new_zone_table(cfg.pages, cfg.locking, max(8, 2 * cfg.reclaimers))
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
        self.workers = Workers(cfg, self.z, self.t)   # after the flags: it poisons pages
        self.epoch = 0
        self.checks, self.check_violations = 0, []
        self.samples = []
        self.outcome = "completed"
        self.unjoined, self.stalled, self.wait_for = [], [], None
        self.detected_s = {}            # detector -> seconds from start to its first finding

    def role(self, i):
        return self.workers.role(i)

    def _body(self, i):
        self.workers.body(i)

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
            time.sleep(0.0005)
        found = check_zone(self.z)
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
        """Run the workers to the end; returns wall seconds, CPU seconds."""
        cfg = self.cfg
        threads = [threading.Thread(target=self._body, args=(i,), name=f"{self.role(i)}-{i}",
                                    daemon=True) for i in range(cfg.threads)]
        proc = psutil.Process()
        cpu0 = sum(proc.cpu_times()[:2])
        t0 = self.t0 = time.monotonic()
        self.t0_ns = time.monotonic_ns()
        self.clock = Clock()
        next_lockdep = t0 + 0.2
        for th in threads:
            th.start()
        last_beat, last_change = self.heartbeats(), np.full(cfg.threads, t0)
        next_check = t0 + cfg.check_ms / 1000 if cfg.check_ms else float("inf")
        next_sample = t0 + 1.0

        try:
            while True:
                now = time.monotonic()
                alive = [th.is_alive() for th in threads]
                if now - t0 >= cfg.seconds or self.sec.ctl[L.CTL_STOP] or not any(alive):
                    break
                beat = self.heartbeats()
                moved = beat != last_beat
                last_change[moved] = now
                last_beat = beat
                parked = self.t[:, L.T_STATE, L.T_PARKED] != 0
                stuck = [i for i in range(cfg.threads)
                         if alive[i] and not parked[i] and now - last_change[i] > cfg.stall_s]
                if stuck:
                    self.stalled = stuck
                    self.outcome = "hang"
                    self.detected("watchdog")
                    break
                if cfg.lockdep and now >= next_lockdep:
                    next_lockdep = now + 0.2
                    if self.lockdep_problems():
                        self.detected("lockdep")
                        if cfg.stop_on_violation:
                            break
                if now >= next_check:
                    if not self.park_and_check(alive):
                        self.outcome = "hang"
                        self.stalled = [i for i in range(cfg.threads) if alive[i] and
                                        self.t[i, L.T_STATE, L.T_PARKED] != self.epoch]
                        self.detected("watchdog")
                        break
                    next_check = time.monotonic() + cfg.check_ms / 1000
                if now >= next_sample:
                    self.sample(now - t0)
                    next_sample += 1.0
                time.sleep(0.005)
        except KeyboardInterrupt:
            self.outcome = "interrupted"
        self._ctl(L.CTL_STOP, 1)
        self._ctl(L.CTL_PARK, 0)
        if self.outcome != "hang":
            deadline = time.monotonic() + min(cfg.stall_s, 2.0)
            for th in threads:
                th.join(timeout=max(0.0, deadline - time.monotonic()))
            if any(th.is_alive() for th in threads):     # stuck in a lock wait: a hang
                self.outcome = "hang"
                self.stalled = [i for i, th in enumerate(threads) if th.is_alive()]
                self.detected("watchdog")
        if self.outcome == "hang":
            self.wait_for = self.wait_for_graph()
            self._ctl(L.CTL_ABORT, 1)                  # every lock wait gives up now
            for th in threads:
                th.join(timeout=2.0)
        self.unjoined = [th.name for th in threads if th.is_alive()]
        wall = time.monotonic() - t0
        cpu = sum(proc.cpu_times()[:2]) - cpu0
        self.clock.stop()
        return wall, cpu

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
        """Who holds which lock and who waits for which: edges thread -> thread."""
        locks = self.sec.locks
        lock0 = self.sec.lock0
        graph = []
        for i in range(self.cfg.threads):
            row = int(self.t[i, L.T_STATE, L.T_WAITING]) - 1
            if row < 0:
                continue
            holder = int(self.z[row, L_OWNER]) - 1
            graph.append({"thread": i, "waits_for_lock": lock_name(self.sec, row),
                          "held_by": holder,
                          "class": H.CLASS_NAMES[int(self.z[row, L_CLASS])]})
        cycle = find_cycle({g["thread"]: g["held_by"] for g in graph})
        return {"edges": graph, "cycle": cycle,
                "held": {i: [lock_name(self.sec, lock0 + int(r)) for r in
                             np.nonzero(locks[:, L_OWNER] == i + 1)[0]]
                         for i in range(self.cfg.threads)}}

    def finish(self):
        """Final quiescent check and drain; clean runs must end as a fresh zone."""
        end = {"final_check": [], "drain_rejected": 0, "fresh_after_drain": None}
        if self.outcome == "hang" or self.unjoined:
            return end
        end["final_check"] = check_zone(self.z)
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
                          ("area", meta[L.M_AREA0], L.NAREAS)):
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
    """Compile or load every kernel a run uses, on a tiny zone; returns seconds taken."""
    t0 = time.perf_counter()
    run = Run(RunConfig(threads=2, reclaimers=1, seconds=0, pages=1 << 10, check_ms=0))
    run.sec.ctl[L.CTL_STOP] = 1
    Clock()
    run._body(0)
    run._body(1)
    run.sec.ctl[L.CTL_STOP] = 0
    run.finish()
    return time.perf_counter() - t0


def run_stress(cfg: RunConfig, progress=None):
    """Run one stress test; returns the result dict (counts only, no verdict)."""
    warm = warm_up()
    run = Run(cfg, progress)
    wall, cpu = run.execute()
    end = run.finish()
    return collect(run, wall, cpu, warm, end)


def collect(run, wall, cpu, warm, end):
    cfg, t, sec = run.cfg, run.t, run.sec
    threads = []
    for i in range(cfg.threads):
        threads.append({"thread": i, "role": run.role(i), **thread_counters(t, i),
                        "violations": int(t[i, L.T_STATE, L.T_NVIOL])})
    locks = sec.locks
    per_class = {}
    for k, name in enumerate(H.CLASS_NAMES):
        sel = locks[:, L_CLASS] == k
        per_class[name] = {"locks": int(sel.sum()), "acquisitions": int(locks[sel, L_ACQ].sum()),
                           "contended": int(locks[sel, L_CONT].sum()),
                           "wait_ms": round(float(locks[sel, L_WAIT_NS].sum()) / 1e6, 3)}
    return {
        "schema": SCHEMA,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                    "numba": numba.__version__, "numpy": np.__version__,
                    "platform": platform.platform()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - wall)),
        "warmup_s": round(warm, 3),
        "duration_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "parallelism": round(cpu / wall, 3) if wall > 0 else 0.0,
        "outcome": run.outcome,
        "threads": threads,
        "locks": per_class,
        "checks": run.checks,
        "samples": run.samples,
        "worker_violations": worker_violations(run),
        "invariant_violations": run.check_violations + [dict(v, detector="invariants", epoch="final")
                                                        for v in end["final_check"]],
        "end": {k: v for k, v in end.items() if k != "final_check"},
        "stalled_threads": run.stalled,
        "wait_for": run.wait_for,
        "unjoined_threads": run.unjoined,
        "traces": flight_records(run),
        "lockdep": run.lockdep_analysis() if cfg.lockdep else None,
        "detection_s": detection_times(run),
        "chaos_hits": int(t[:, L.T_AUX, L.A_CHAOS_HITS].sum()),
    }


def detection_times(run):
    """Seconds from the start to the first finding of each detector that found something."""
    out = dict(run.detected_s)
    for v in worker_violations(run):
        s = round((v["ns"] - run.t0_ns) / 1e9, 4)
        out[v["detector"]] = min(out.get(v["detector"], s), s)
    if run.cfg.lockdep and "lockdep" not in out and run.lockdep_problems():
        out["lockdep"] = round(time.monotonic() - run.t0, 4)
    return out


def worker_violations(run):
    return [{("ns" if k == "stamp" else k): (run.clock.ns(x) if k == "stamp" else x)
             for k, x in v.items()}
            for i in range(run.cfg.threads) for v in thread_violations(run.t, i)]


def flight_records(run, limit=40):
    """Each thread's ring merged in time order, kept to events on the pfns of violations
    (for a hang: the last events of the stuck threads)."""
    events = [{"thread": i, "op": e["op"], "pfn": e["pfn"], "order": e["order"],
               "ns": run.clock.ns(e["stamp"])}
              for i in range(run.cfg.threads) for e in thread_ring(run.t, i)]
    events.sort(key=lambda e: e["ns"])
    if run.outcome == "hang":
        stuck = set(run.stalled)
        return [e for e in events if e["thread"] in stuck][-limit:]
    spans = [(v["pfn"], v["pfn"] + (1 << v["order"])) for v in worker_violations(run)]
    for v in run.check_violations:
        if v.get("pfn", -1) >= 0 and v["kind"] not in ("list_count", "conservation"):
            spans.append((v["pfn"], v["pfn"] + 1))
        if v.get("kind") == "unmerged_buddies":
            spans.append((v["a"], v["a"] + 1))
    if not spans:
        return []

    def touches(e):
        if e["op"] == "capture_start" or e["pfn"] < 0:
            return False
        lo, hi = e["pfn"], e["pfn"] + (1 << max(0, e["order"]))
        return any(lo < b and a < hi for a, b in spans)

    return [e for e in events if touches(e)][-limit:]
