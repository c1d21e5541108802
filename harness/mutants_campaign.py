"""`python -m harness mutants`: run every lock mutant (harness.mutants) until a detector kills it.

Each mutant is a copy of the package source tree with one edit, compiled once
in its own Numba cache (`HARNESS_CACHE_DIR`) by a probe subprocess, then run
as stress trials on the trial engine (harness.trials) in each locking scheme
where its edit takes effect.  A scheme's trials stop at the first kill: a
trial whose verdict is a failure (a detector's finding, a watchdog hang, a
crash or a timeout).  Compiling costs minutes, so mutants are compiled
`compile_jobs` at a time, then their trials run; a batch's caches are removed
when it is done unless a work folder was given.  Mutants run interleaved by
operator, declared equivalents last (`run_order`).  The unmutated code runs the
same trials first as the control: a kill there would make every kill suspect.

Trials alternate between two workloads (`workloads`): even trials run the
template (one reclaimer beside the allocators) without per-CPU lists, odd ones
one thread more and two reclaimers, with them.  Per-CPU lists keep most frees
of orders 0..3 away from the buddy, and so away from capture lists: a merge
that skips its re-read of the target list's use (under the capture lock) was
caught in 0 of 10 trials with them and in 10 of 10 without, at 0.11 s.  On a
machine with as many cores as the template has threads the odd trials are
oversubscribed: the OS preempts a thread anywhere, for a whole time slice,
between a check and its act, and two reclaimers' capture lists race with each
other's frees and finishes.  A merge that skips its re-check of a capture
list's phase escaped every 2-thread trial and was caught in every 3-thread,
2-reclaimer one (README, "Controlled scheduling").

The result (schema `buddy-stress-mutants`) is rewritten atomically after
every batch, so an interrupted campaign keeps every finished mutant.
"""

import concurrent.futures as cf
import dataclasses
import os
import re
import shutil
import statistics
import tempfile
import time

from harness import mutants as MU
from harness import trials as T
from harness.campaign import from_record, percentile
from harness.config import RunConfig, to_argv
from harness.mutants_equiv import EQUIVALENT
from harness.result import MUTANTS_SCHEMA, VERSION, to_json, write_atomic, write_new

COMPILE_TIMEOUT_S = 1800.0      # one cold compile of every kernel: ~100 s alone, more in parallel
KILLING = (T.VIOLATIONS, T.HANG, T.CRASH, T.TIMEOUT)
CONTROL = "control"
COMPILE_CODE = "from harness.runner import warm_up; print(round(warm_up(), 2))"


def template(seconds=5.0, seed=1, threads=2, pages=1 << 14, chaos=0.02):
    """The even trials' workload (ConfigError on bad values): one reclaimer, lockdep on,
    invariant checks every 50 ms, watchdog 2 s."""
    return RunConfig(threads=threads, reclaimers=1, seconds=seconds, seed=seed, pages=pages,
                     lockdep=True, chaos=chaos, check_ms=50, stall_s=2.0)


def workloads(template):
    """The trial workloads, used in turn: the template without per-CPU lists, then one
    thread more and two reclaimers, with the template's per-CPU lists."""
    return (dataclasses.replace(template, pcp=False),
            dataclasses.replace(template, threads=template.threads + 1, reclaimers=2))


def select(mutants, only):
    """The mutants named in `only` (ids), in generation order; ValueError names an unknown id."""
    if not only:
        return list(mutants)
    known = {m.id for m in mutants}
    for mid in only:
        if mid not in known:
            raise ValueError(f"unknown mutant {mid!r} (python -m harness mutants --list)")
    return [m for m in mutants if m.id in set(only)]


def _slug(mid):
    return re.sub(r"[^A-Za-z0-9_.-]", "_", mid)


def outcome(entry):
    """A scheme entry's outcome in words: "KILLED by <detector>" or "clean"."""
    return "KILLED by " + entry["killed_by"] if entry["killed"] else "clean"


def _killer(record):
    """(first detector, every detector) of a killing trial record."""
    result = record.get("result") or {}
    found = result.get("detection_s") or {}
    if found:
        first = min(found, key=found.get)
    elif record["status"] == T.HANG:
        first = "watchdog"
    else:
        first = record["status"]            # crash or timeout: no detector spoke
    every = sorted(set(found) | {p.split(":")[0] for p in result.get("problems") or []})
    return first, every or [first]


def _trial_row(record, cfg):
    row = from_record(record, cfg)
    # A trial that could not even start (no source tree on that worker) killed nothing.
    row["killed"] = record["status"] in KILLING and not (
        record["status"] == T.CRASH and record.get("exit_code") is None)
    if row["killed"]:
        row["killed_by"], row["detectors"] = _killer(record)
    row["elapsed_s"] = record.get("elapsed_s")
    # How much the threads overlapped: a survivor of runs that barely overlapped is weak.
    row["parallelism"] = (record.get("result") or {}).get("parallelism")
    return row


def _scheme_entry(rows):
    kill = next((r for r in rows if r["killed"]), None)
    return {"trials": rows, "killed": kill is not None,
            "killed_by": kill["killed_by"] if kill else None,
            "detectors": kill["detectors"] if kill else [],
            "ttd_s": kill["ttd_s"] if kill else None}


class Campaign:
    """The state of one campaign run; `out` is the JSON-ready result at every moment."""

    def __init__(self, mutants, template, trials, engine, compile_jobs, work_dir, log,
                 save, slots):
        self.mutants, self.template, self.trials = mutants, template, trials
        self.engine, self.compile_jobs, self.log, self.save = engine, compile_jobs, log, save
        self.keep = work_dir is not None
        self.work = work_dir            # a temporary folder is made when the run starts
        self.out = {"schema": MUTANTS_SCHEMA, "version": VERSION, "kind": "mutants",
                    "config": {"budget_s": template.seconds, "trials": trials,
                               "chaos": template.chaos, "threads": template.threads,
                               "reclaimers": template.reclaimers, "pages": template.pages,
                               "seed": template.seed, "check_ms": template.check_ms,
                               "stall_s": template.stall_s, "compile_jobs": compile_jobs,
                               "files": list(MU.KERNEL_FILES), "slots": slots,
                               "work_dir": work_dir},
                    "machine": {"cores": os.cpu_count(), "load_avg_start": _load()},
                    "control": {}, "mutants": [], "interrupted": False, "summary": {}}
        self.configs = {}
        self.workloads = workloads(template)
        self.out["config"]["odd_trials"] = {"threads": self.workloads[1].threads,
                                            "reclaimers": self.workloads[1].reclaimers}
        self.out["config"]["even_trials"] = {"pcp": self.workloads[0].pcp}

    # ---------------------------------------------------------------- plan pieces

    def _cfg(self, scheme, k):
        w = self.workloads[k % len(self.workloads)]
        return dataclasses.replace(w, locking=scheme, seed=self.template.seed + k)

    def _trial(self, tid, scheme, k, root="", env=()):
        cfg = self._cfg(scheme, k)
        self.configs[tid] = cfg
        return T.Trial(id=tid, argv=tuple(to_argv(cfg)),
                       timeout_s=T.timeout_for(cfg.seconds, cfg.stall_s),
                       cell=tid.rsplit("/", 2)[0], kind="mutant",
                       meta=(("scheme", scheme), ("seed", cfg.seed)), root=root, env=env)

    def _entry(self, m):
        entry = {**m.row(), "status": "pending", "compile_s": None, "runs": {}}
        if m.id in EQUIVALENT:
            entry["declared_equivalent"] = EQUIVALENT[m.id]
        if not m.schemes:
            entry["status"] = "no-scheme"
        return entry

    # ---------------------------------------------------------------- running

    def _run_rounds(self, groups):
        """`groups`: {(key, scheme): (make_trial(k), rows list)}; round k runs trial k of
        every group not killed yet."""
        for k in range(self.trials):
            plan = [(key, make(k)) for key, (make, rows) in groups.items()
                    if not any(r["killed"] for r in rows)]
            if not plan:
                return
            by_id = {t.id: key for key, t in plan}

            def done(record, by_id=by_id):
                if record["status"] in (T.NOT_RUN, T.INTERRUPTED):
                    return
                rows = groups[by_id[record["id"]]][1]
                rows.append(_trial_row(record, self.configs[record["id"]]))
            self.engine(done).run([t for _, t in plan])

    def control(self):
        """The unmutated code, same trials, both schemes (default kernel cache)."""
        groups = {(CONTROL, s): (lambda k, s=s: self._trial(f"{CONTROL}/{s}/{k + 1}", s, k), [])
                  for s in MU.SCHEMES}
        self._run_rounds(groups)
        self.out["control"] = {s: _scheme_entry(groups[(CONTROL, s)][1]) for s in MU.SCHEMES}
        for s, e in self.out["control"].items():
            self.log(f"control {s:<5} {'KILLED by ' + e['killed_by'] if e['killed'] else 'clean'}"
                     f" ({len(e['trials'])} trial(s))")

    def run(self):
        if not self.keep:
            self.work = tempfile.mkdtemp(prefix="harness-mutants-")
        # Every mutant is built from this snapshot, taken once: the mutants' text was
        # generated from the tree as it is now, and a campaign lasts hours.
        self.base = MU.snapshot(os.path.join(self.work, "base"))
        entries = [self._entry(m) for m in self.mutants]
        self.out["mutants"] = entries
        runnable = run_order([(m, e) for m, e in zip(self.mutants, entries) if m.schemes])
        self.log(f"mutants: {len(self.mutants)} ({len(runnable)} take effect in some scheme),"
                 f" compiled {self.compile_jobs} at a time in {self.work}")
        started = time.monotonic()
        try:
            self.control()
            self.save(self.finish(started))
            for i in range(0, len(runnable), self.compile_jobs):
                batch = runnable[i:i + self.compile_jobs]
                try:
                    self._batch(batch, i, len(runnable))
                finally:
                    if not self.keep:
                        for m, _ in batch:
                            shutil.rmtree(os.path.join(self.work, _slug(m.id)),
                                          ignore_errors=True)
                self.save(self.finish(started))
        except KeyboardInterrupt as exc:
            from harness.signals import exit_status
            self.out["interrupted"] = True
            self.out["exit_status"] = exit_status(exc)
            self.log("interrupted: the campaign keeps the mutants that finished")
            for e in entries:
                if e["status"] in ("pending", "compiling", "running"):
                    e["status"] = "not-run"
        finally:
            if not self.keep:
                shutil.rmtree(self.work, ignore_errors=True)
        return self.finish(started)

    def _batch(self, batch, first, total):
        trees = {}
        for m, e in batch:
            home = os.path.join(self.work, _slug(m.id))
            trees[m.id] = (MU.materialize(m, os.path.join(home, "src"), self.base),
                           (("HARNESS_CACHE_DIR", os.path.join(home, "cache")),))
            e["status"] = "compiling"
        names = ", ".join(m.id for m, _ in batch)
        self.log(f"[{first + 1}-{first + len(batch)}/{total}] compiling {names}")
        probes = [T.Trial(id=f"{m.id}/compile", argv=(), timeout_s=COMPILE_TIMEOUT_S,
                          kind="probe", command=("{python}", "-c", COMPILE_CODE),
                          root=trees[m.id][0], env=trees[m.id][1]) for m, _ in batch]
        compiled = {}
        pool = cf.ThreadPoolExecutor(max_workers=len(probes), thread_name_prefix="compile")
        try:
            T.Engine(pool, len(probes), lambda r: compiled.__setitem__(r["id"], r)).run(probes)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        groups = {}
        for m, e in batch:
            rec = compiled.get(f"{m.id}/compile")
            e["compile_s"] = rec["elapsed_s"] if rec else None
            if not rec or rec["status"] != T.CLEAN:
                e["status"] = "compile-error"
                e["compile_error"] = (rec or {}).get("stderr_tail", "")[-600:]
                self.log(f"{m.id}: did not compile: {e['compile_error'][-200:]}")
                continue
            e["status"] = "running"
            root, env = trees[m.id]
            for s in m.schemes:
                groups[(m.id, s)] = (lambda k, m=m, s=s, root=root, env=env: self._trial(
                    f"{m.id}/{s}/{k + 1}", s, k, root, env), [])
        self._run_rounds(groups)
        for m, e in batch:
            if e["status"] != "running":
                continue
            e["runs"] = {s: _scheme_entry(groups[(m.id, s)][1]) for s in m.schemes}
            e["status"] = "killed" if any(r["killed"] for r in e["runs"].values()) else \
                "survived"
            for s, r in e["runs"].items():
                self.log(f"{m.id:<40} {s:<5} "
                         + (f"killed by {r['killed_by']} after {_fmt(r['ttd_s'])}"
                            if r["killed"] else f"SURVIVED {len(r['trials'])} trial(s)")
                         + f"  (compile {e['compile_s']:.0f}s)")

    def finish(self, started):
        self.out["elapsed_s"] = round(time.monotonic() - started, 1)
        self.out["machine"]["load_avg_end"] = _load()
        for e in self.out["mutants"]:
            e["classification"] = classify(e)
        self.out["summary"] = summarize(self.out)
        return self.out


def regrade(out):
    """`out` classified against the equivalence table of this code (a pure function of the
    saved outcomes and the table, like harness.verdict): `report` uses it, so a saved
    campaign is read with the current declarations."""
    out = {**out, "mutants": [dict(e) for e in out["mutants"]]}
    for e in out["mutants"]:
        e.pop("declared_equivalent", None)
        if e["id"] in EQUIVALENT:
            e["declared_equivalent"] = EQUIVALENT[e["id"]]
        e["classification"] = classify(e)
    out["summary"] = summarize(out)
    return out


def run_order(pairs):
    """(mutant, entry) pairs interleaved by operator, declared equivalents last: a campaign
    stopped early has seen every operator, and spent its time where gaps can be."""
    def rounds(group):
        by_op = [[p for p in group if p[0].operator == op] for op in MU.OPERATORS]
        return [p for k in range(max(map(len, by_op), default=0)) for ops in by_op
                for p in ops[k:k + 1]]
    return rounds([p for p in pairs if p[0].id not in EQUIVALENT]) + \
        rounds([p for p in pairs if p[0].id in EQUIVALENT])


def classify(entry):
    """What a mutant's outcome means: killed, equivalent (declared), gap, or not known."""
    status = entry["status"]
    declared = entry.get("declared_equivalent")
    if status == "killed":
        return "killed, though declared equivalent: the declaration is wrong" if declared \
            else "killed"
    if status == "no-scheme":
        return f"not run: {entry['note']}"
    if status == "survived":
        return f"equivalent: {declared}" if declared else \
            "GAP: survived every trial and is not declared equivalent"
    return status


def _overlap(entry):
    """", trials at parallelism 0.6-1.1, 2.1M ops each": how hard the survivor was tried."""
    rows = [r for run in entry["runs"].values() for r in run["trials"]]
    par = [r["parallelism"] for r in rows if r.get("parallelism") is not None]
    ops = [r["ops"] for r in rows if r.get("ops")]
    out = f" ({len(rows)} trial(s)" + (f", parallelism {min(par):.2f}-{max(par):.2f}"
                                         if par else "")
    return out + (f", {statistics.median(ops) / 1e6:.1f}M ops each)" if ops else ")")


def _load():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _fmt(s):
    return "-" if s is None else f"{s:.3f}s"


def summarize(out):
    """Kill rate, median/p90 time to detection and counts per operator."""
    ms = out["mutants"]
    ran = [e for e in ms if e["status"] in ("killed", "survived")]
    killed = [e for e in ran if e["status"] == "killed"]
    equivalent = [e for e in ran if e["status"] == "survived" and e.get("declared_equivalent")]
    gaps = [e for e in ran if e["status"] == "survived" and not e.get("declared_equivalent")]
    ttd = [r["ttd_s"] for e in killed for r in e["runs"].values()
           if r["killed"] and r["ttd_s"] is not None]
    by_op = {op: {"generated": sum(e["operator"] == op for e in ms),
                  "run": sum(e["operator"] == op for e in ran),
                  "killed": sum(e["operator"] == op for e in killed)} for op in MU.OPERATORS}
    by_detector = {}
    for e in killed:
        for r in e["runs"].values():
            if r["killed"]:
                by_detector[r["killed_by"]] = by_detector.get(r["killed_by"], 0) + 1
    compile_s = [e["compile_s"] for e in ms if e["compile_s"] is not None]
    scoring = len(ran) - len(equivalent)
    return {"generated": len(ms), "run": len(ran), "killed": len(killed),
            "kill_rate": round(len(killed) / len(ran), 4) if ran else None,
            "score": round(len(killed) / scoring, 4) if scoring else None,
            "survived": len(ran) - len(killed), "equivalent": len(equivalent),
            "gaps": [e["id"] for e in gaps],
            "wrong_declarations": [e["id"] for e in killed if e.get("declared_equivalent")],
            "no_scheme": sum(e["status"] == "no-scheme" for e in ms),
            "compile_errors": [e["id"] for e in ms if e["status"] == "compile-error"],
            "not_run": sum(e["status"] in ("not-run", "pending") for e in ms),
            "median_ttd_s": statistics.median(ttd) if ttd else None,
            "p90_ttd_s": percentile(ttd, 0.9), "ttd_samples": len(ttd),
            "kills_without_ttd": sum(1 for e in killed for r in e["runs"].values()
                                     if r["killed"] and r["ttd_s"] is None),
            "by_operator": by_op, "by_detector": dict(sorted(by_detector.items())),
            "control_killed": [s for s, r in out["control"].items() if r.get("killed")],
            "compile_median_s": statistics.median(compile_s) if compile_s else None,
            "compile_max_s": max(compile_s) if compile_s else None}


def exit_status(out):
    """0: every survivor declared equivalent, no declaration contradicted, control clean;
    1 otherwise; 128+signal when interrupted."""
    if out.get("interrupted"):
        return out.get("exit_status", 130)
    s = out["summary"]
    bad = s["gaps"] or s["wrong_declarations"] or s["control_killed"] or s["compile_errors"]
    return 1 if bad else 0


# ---------------------------------------------------------------- rendering

def render(out):
    """The markdown report of a mutants result (also what `report FILE` prints)."""
    c, s = out["config"], out["summary"]
    pct = (lambda x: "-" if x is None else f"{100 * x:.0f}%")
    lines = [f"# Lock mutants: {s['killed']}/{s['run']} killed ({pct(s['kill_rate'])}),"
             f" median time to detection {_fmt(s['median_ttd_s'])}, p90 {_fmt(s['p90_ttd_s'])}",
             "",
             f"{s['generated']} mutants of {', '.join(c['files'])}; {s['run']} run, up to"
             f" {c['trials']} trial(s) of {c['budget_s']:g}s per scheme, {c['threads']} threads"
             + (f" ({odd['threads']} threads, {odd['reclaimers']} reclaimers in odd trials)"
                if (odd := c.get("odd_trials")) else "")
             + (", no per-CPU lists in even trials" if c.get("even_trials", {}).get("pcp") is False
                else "") + ","
             f" chaos {c['chaos']:g}, seed {c['seed']}; {s['no_scheme']} take effect in no"
             f" scheme; elapsed {out.get('elapsed_s', 0):.0f}s on {out['machine']['cores']}"
             f" cores (load {out['machine'].get('load_avg_start')} at start,"
             f" {out['machine'].get('load_avg_end')} at end)."
             + (f" Compile per mutant: median {s['compile_median_s']:.0f}s, max"
                f" {s['compile_max_s']:.0f}s ({c['compile_jobs']} at a time)."
                if s["compile_median_s"] is not None else ""),
             f"Score excluding the {s['equivalent']} declared-equivalent survivors:"
             f" {pct(s['score'])}. Kills with no detection time (crash, timeout):"
             f" {s['kills_without_ttd']}.",
             "", "| operator | generated | run | killed |", "|---|---|---|---|"]
    for op, n in s["by_operator"].items():
        lines.append(f"| {op} | {n['generated']} | {n['run']} | {n['killed']} |")
    lines += ["", "Killed by (first detector): " + (", ".join(
        f"{d} {n}" for d, n in s["by_detector"].items()) or "-"), ""]
    ctrl = out.get("control") or {}
    lines.append("Control (unmutated code): " + (", ".join(
        f"{sc} {outcome(r)} ({len(r['trials'])} trial(s))" for sc, r in ctrl.items()) or "not run"))
    lines += ["", "## Kill matrix", "",
              "| mutant | operator | function | line | description | scheme | killed by |"
              " time to detection |", "|---|---|---|---|---|---|---|---|"]
    for e in out["mutants"]:
        for sc, r in e["runs"].items():
            who = ("**survived**" if not r["killed"] else
                   r["killed_by"] + (f" ({', '.join(r['detectors'])})"
                                     if r["detectors"] != [r["killed_by"]] else ""))
            lines.append(f"| `{e['id']}` | {e['operator']} | {e['function']} | {e['line']} |"
                         f" {e['description']} | {sc} | {who} | {_fmt(r['ttd_s'])} |")
    survivors = [e for e in out["mutants"] if e["status"] == "survived"]
    lines += ["", f"## Survivors ({len(survivors)})", ""]
    lines += [f"- `{e['id']}` ({e['description']}): {e['classification']}"
              f"{_overlap(e)}" for e in survivors] or ["none"]
    other = [e for e in out["mutants"] if e["status"] not in ("killed", "survived")]
    if other:
        lines += ["", f"## Not run ({len(other)})", ""]
        lines += [f"- `{e['id']}` ({e['description']}): {e['classification']}" for e in other]
    if s["wrong_declarations"]:
        lines += ["", "FINDING: declared equivalent but killed: "
                  + ", ".join(s["wrong_declarations"])]
    if s["gaps"]:
        lines += ["", "FINDING: real gaps (survived, not declared equivalent): "
                  + ", ".join(s["gaps"])]
    if s["control_killed"]:
        lines += ["", "FINDING: the unmutated control was killed in "
                  + ", ".join(s["control_killed"]) + ": kills there prove nothing"]
    if out.get("interrupted"):
        lines += ["", "INTERRUPTED: the campaign was stopped; the tables hold the mutants that"
                  " finished"]
    return "\n".join(lines)


def claim(folder, out):
    """Reserve a unique result path in `folder`, created exclusively with the result so far
    (`out`, rewritten by `saver` as the campaign goes)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return write_new(folder, f"mutants-{stamp}", ".json", to_json(out))


def saver(path):
    """Rewrite `path` atomically with the campaign so far (a partial result is a result)."""
    def save(out):
        write_atomic(path, to_json(out))
        write_atomic(path[:-len(".json")] + ".md", render(out) + "\n")
    return save
