"""`python -m harness nightly`: a time-budgeted night over the matrix, canaries, buckets, history.

Four steps, in this order (each rebuildable from the files of the one before):

  1. plan   the matrix cells x rounds, plus every canary fault x its runs, as
            trials with stable ids; a shard keeps every N-th of them; trial
            lengths come from the budget (`plan`), after the night's lock
            mutants (`pick_mutants`, split over the shards) have their share;
  2. run    the trials on the engine (harness.trials), then re-run once a few
            times the first trial of every bucket the history does not know,
            then this shard's mutants (harness.mutants_campaign, with its own
            control); writes `part-<i>-of-<N>.json` (plain files only);
  3. merge  parts -> one night: buckets, canaries, vacuity, history comparison,
            and the night written to the history database in one transaction;
            writes `night.json`;
  4. render JUnit XML, HTML, markdown and text, all from `night.json`.

Exit status of a night (`exit_status`): 0 no new bucket, every canary
caught and every mutant killed or declared equivalent; 1 a new (or reopened)
bucket, a performance regression, or a mutant finding that is not a lost
kill (a killed control, a wrong equivalence, a mutant that did not compile);
5 a canary escaped or a mutant survived undeclared (the harness lost
detection power: this wins over 1); 2 bad usage;
128+signal when interrupted; 4 when the reports could not be written.
"""

import dataclasses
import glob
import math
import os
import re
import statistics
import sys
import time

from harness import buckets as B
from harness import history as H
from harness import matrix as M
from harness import mutants as MU
from harness import mutants_campaign as MC
from harness import trials as T
from harness.config import from_dict, to_argv
from harness.faults import BY_NAME
from harness.result import ResultError, WriteError, read_json, to_json, write_atomic

PART_SCHEMA, NIGHT_SCHEMA, NIGHT_VERSION = "buddy-stress-nightly-part", "buddy-stress-nightly", 1
EXIT_OK, EXIT_FINDING, EXIT_USAGE, EXIT_WRITE, EXIT_CANARY = 0, 1, 2, 4, 5
OVERHEAD_S = 3.0         # per trial: interpreter start, kernel cache load, final checks, drain
RESERVE = 0.15           # of the budget, kept for re-runs of new buckets and stragglers
MAX_TRIAL_S = 30.0       # above this, more seeds per cell beat longer trials
MIN_TRIAL_S = 1.0
CANARY_MAX_S = 10.0      # most canaries are caught in well under a second; an escape costs
                         # this (5 s let toctou-capture-state escape on a loaded machine)
REPRO_RUNS = 3
MUTANT_COMPILE_S = 480.0 # planned per mutant build: 329-396 s measured, two at a time
KEEP_REPORTS = 3         # full results kept per bucket per night


class NightlyError(ValueError):
    """Bad input for a night (one line, exit 2)."""


# ---------------------------------------------------------------- input

def parse_budget(text):
    """"30m", "90s", "2h", "45" (seconds) -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not m or float(m.group(1)) <= 0:
        raise NightlyError(f"--budget must look like 90s, 30m or 2h, got {text!r}")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def parse_shard(text):
    """"i/N" with 1 <= i <= N -> (i, N)."""
    m = re.fullmatch(r"(\d+)/(\d+)", str(text))
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise NightlyError(f"--shard must be i/N with 1 <= i <= N, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def night_seed(now=None):
    """Days since 1970 (UTC): every night explores new seeds, and shards of one night agree."""
    return int((now or time.time()) // 86400)


# ---------------------------------------------------------------- plan

@dataclasses.dataclass
class Plan:
    trials: list                # this shard's trials, in run order
    all_ids: list               # every trial id of the night (all shards)
    rounds: int
    trial_s: float
    canary_s: float
    slots: int
    budget_s: float
    shard: tuple
    how: str                    # the planning arithmetic, in words
    mutants: list = dataclasses.field(default_factory=list)      # this shard's mutant ids
    all_mutants: list = dataclasses.field(default_factory=list)  # the night's, all shards
    mutant_trials: int = 0
    mutant_s: float = 0.0       # wall seconds kept for this shard's mutants
    seed: int = 0


def pick_mutants(per_night, seed, mutants=None):
    """The night's mutant ids: `per_night` consecutive ones of the campaign's order
    (harness.mutants_campaign.run_order) starting at `seed * per_night`, wrapping, so
    nights with consecutive seeds (days) cover every mutant that takes effect within
    ceil(n / per_night) nights."""
    if per_night <= 0:
        return []
    mutants = MU.generate() if mutants is None else mutants
    ids = [m.id for m, _ in MC.run_order([(m, None) for m in mutants if m.schemes])]
    start = seed * per_night
    return [ids[(start + j) % len(ids)] for j in range(min(per_night, len(ids)))]


def mutant_wall_s(count, trials, slots, trial_s, overhead_s=OVERHEAD_S):
    """Wall seconds one shard spends on `count` mutants at most: builds `slots` at a time,
    then the control's and every mutant's trials in both schemes (no early kill assumed)."""
    if not count:
        return 0.0
    builds = math.ceil(count / slots) * MUTANT_COMPILE_S
    runs = (count + 1) * len(MU.SCHEMES) * trials
    return builds + math.ceil(runs / slots) * (trial_s + overhead_s)


def plan(matrix, budget_s, slots, shard=(1, 1), seed=None, rounds=None, overhead_s=OVERHEAD_S,
         trial_s=None, mutants=None):
    """The night's trials and their lengths, fitted to `budget_s` on `slots` parallel trials.

    Capacity is budget x slots x shards (shards run at once, each with the
    budget), less RESERVE for re-runs, less the wall time of the busiest shard's
    mutants (`mutant_wall_s`, their trials as long as a canary's at most) on every
    slot of every shard.  Cells cost (t + overhead) per round,
    canaries (min(t, CANARY_MAX_S) + overhead) per run.  Rounds (seeds per
    cell) are as many as fit with t <= MAX_TRIAL_S (at least 1), then t is
    the longest that fits.  Raises NightlyError if t would be below
    MIN_TRIAL_S.  `trial_s` fixes the trial length instead (the budget must still fit it).
    """
    seed = night_seed() if seed is None else seed
    i, n = shard
    night_mutants = pick_mutants(matrix.mutants_per_night, seed, mutants)
    mine_mutants = night_mutants[i - 1::n]
    mutant_s = mutant_wall_s(len(night_mutants[0::n]), matrix.mutant_trials, slots,
                             CANARY_MAX_S, overhead_s)
    capacity = (budget_s - mutant_s) * slots * n * (1 - RESERVE)
    cells, canaries = len(matrix.cells), len(matrix.canary_faults) * matrix.canary_runs

    def cost(r, t):
        return cells * r * (t + overhead_s) + canaries * (min(t, CANARY_MAX_S) + overhead_s)

    longest = trial_s or MAX_TRIAL_S
    if rounds is None:
        rounds = max(1, int((capacity - canaries * (min(longest, CANARY_MAX_S) + overhead_s))
                            // (cells * (longest + overhead_s))))
    lo, hi = 0.0, longest
    if trial_s and cost(rounds, trial_s) > capacity:
        hi = 0.0                                    # does not fit: the error below says so
    if cost(rounds, hi) <= capacity:
        t = hi
    else:
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if cost(rounds, mid) <= capacity else (lo, mid)
        t = lo
    t = math.floor(t * 10) / 10
    if t < MIN_TRIAL_S or (trial_s and t < trial_s):
        need = cost(rounds, trial_s or MIN_TRIAL_S) / (slots * n * (1 - RESERVE))
        raise NightlyError(f"--budget {budget_s:g}s is too small for {cells * rounds} cell trials"
                           f" and {canaries} canary runs"
                           + (f" after {len(night_mutants)} mutant(s) (~{mutant_s:.0f}s)"
                              if night_mutants else "")
                           + f" on {slots} slot(s): it needs at least"
                           f" {math.ceil(need + mutant_s)}s")
    canary_t = min(t, CANARY_MAX_S)
    every = []
    for r in range(rounds):
        for c in matrix.cells:
            cfg = from_dict({**c.settings, "seconds": t, "seed": seed * 1000 + r})
            every.append(T.Trial(id=f"{c.name}/{r + 1}", argv=tuple(to_argv(cfg)),
                                 timeout_s=T.timeout_for(t, cfg.stall_s), cell=c.name,
                                 kind="cell", meta=(("seed", cfg.seed), ("seconds", t),
                                                    ("round", r + 1))))
    for k in range(matrix.canary_runs):
        for fault in matrix.canary_faults:
            cfg = from_dict({**M.canary_settings(matrix, fault), "seconds": canary_t,
                             "seed": seed * 1000 + k})
            every.append(T.Trial(id=f"canary-{fault}/{k + 1}", argv=tuple(to_argv(cfg)),
                                 timeout_s=T.timeout_for(canary_t, cfg.stall_s),
                                 cell=f"canary-{fault}", kind="canary",
                                 meta=(("seed", cfg.seed), ("seconds", canary_t),
                                       ("fault", fault), ("round", k + 1))))
    mine = [tr for j, tr in enumerate(every) if j % n == i - 1]
    how = (f"budget {budget_s:.0f}s x {slots} slot(s) x {n} shard(s), {RESERVE:.0%} kept for"
           f" re-runs: {cells} cells x {rounds} round(s) of {t:g}s and {canaries} canary runs"
           f" of {canary_t:g}s, each plus ~{overhead_s:g}s start-up; this shard runs"
           f" {len(mine)} of {len(every)} trials")
    if night_mutants:
        how += (f"; then {len(mine_mutants)} of the night's {len(night_mutants)} lock mutant(s)"
                f" ({', '.join(night_mutants)}), {matrix.mutant_trials} trial(s) of"
                f" {canary_t:g}s per scheme, ~{mutant_s:.0f}s kept for them")
    return Plan(mine, [tr.id for tr in every], rounds, t, canary_t, slots, budget_s, shard, how,
                mine_mutants, night_mutants, matrix.mutant_trials,
                mutant_s if mine_mutants else 0.0, seed)


# ---------------------------------------------------------------- run

def compact(record, trials_dir=None, saved=None):
    """A trial record as the night keeps it: no full result, its signatures and numbers."""
    result = record.pop("result", None)
    if record["status"] == T.CLEAN and record.get("kind") == "probe":
        return record
    record["signatures"] = B.signatures({**record, "result": result})
    if isinstance(result, dict):
        tot = result.get("totals", {})
        record.update(
            verdict=result.get("verdict"), problems=result.get("problems", [])[:5],
            detection_s=result.get("detection_s", {}),
            ttd_s=B.ttd({"result": result}), warnings=result.get("warnings", []),
            ops_per_s=tot.get("ops_per_s"), allocator_ops_per_s=tot.get("allocator_ops_per_s"),
            reclaims=tot.get("reclaims"), captured_other_pages=tot.get("captured_other_pages"),
            locks={k: {"acquisitions": v.get("acquisitions", 0), "contended":
                       v.get("contended", 0), "wait_ms": v.get("wait_ms", 0)}
                   for k, v in result.get("locks", {}).items()},
            config={k: result.get("config", {}).get(k) for k in
                    ("threads", "reclaimers", "locking", "capture", "chaos", "lockdep",
                     "fault", "seconds", "seed")},
            race=next((v["race"]["text"] for v in result.get("worker_violations", [])
                       if v.get("race")), None))
        if trials_dir and record["status"] != T.CLEAN and saved is not None:
            fresh = [s for s, _ in record["signatures"][:1] if saved.get(s, 0) < KEEP_REPORTS]
            if fresh:
                name = re.sub(r"[^A-Za-z0-9_.-]", "_", record["id"]) + ".json"
                try:
                    os.makedirs(trials_dir, exist_ok=True)
                    write_atomic(os.path.join(trials_dir, name), to_json(result))
                    record["report"] = os.path.join("trials", name)
                    for s in fresh:
                        saved[s] = saved.get(s, 0) + 1
                except WriteError:
                    pass
    return record


class Progress:
    """Live counts on a terminal; one quiet line per finished trial otherwise."""

    def __init__(self, total, stream=sys.stderr, started=None):
        self.total, self.stream, self.tty = total, stream, stream.isatty()
        self.done = self.failures = self.active = 0
        self.started = started or time.monotonic()

    def start(self, n=1):
        self.active += n
        self.show()

    def finished(self, record):
        self.done += 1
        self.active = max(0, self.active - 1)
        bad = record["status"] not in (T.CLEAN, T.NOT_RUN) and record["kind"] != "canary" or \
            record["kind"] == "canary" and record["status"] == T.CLEAN
        self.failures += bad
        if self.tty:
            self.show()
        else:
            sig = record.get("signatures") or []
            self.stream.write(f"trial {self.done}/{self.total} {record['id']}: {record['status']}"
                              f" {record.get('elapsed_s', 0):.1f}s"
                              f"{'  ' + sig[0][1] if sig else ''}\n")
            self.stream.flush()

    def show(self):
        if not self.tty:
            return
        el = time.monotonic() - self.started
        eta = el / self.done * (self.total - self.done) if self.done else 0
        self.stream.write(f"\r[{self.done}/{self.total}] failures {self.failures}  active"
                          f" {self.active}  elapsed {_mmss(el)}  ETA {_mmss(eta)}\033[K")
        self.stream.flush()

    def end(self):
        if self.tty:
            self.stream.write("\n")


def _mmss(s):
    return f"{int(s // 60):d}:{int(s % 60):02d}"


def run_part(the_plan, engine_factory, out_dir, history_path=None, repro=REPRO_RUNS, say=print,
             matrix=None, label=None, started=None, budget_s=None):
    """Run this shard's trials and the re-runs of new buckets; write and return the part file.

    `engine_factory(on_record, on_start)` gives a trials.Engine.  On an interrupt the part
    is still written (marked interrupted) and the KeyboardInterrupt re-raised.
    """
    started = started or time.time()
    mutants = None
    deadline = time.monotonic() + the_plan.budget_s - the_plan.mutant_s - the_plan.trial_s - \
        OVERHEAD_S
    saved = {}
    progress = Progress(len(the_plan.trials))
    records = []

    def on_record(r):
        records.append(compact(r, os.path.join(out_dir, "trials"), saved))
        progress.finished(r)

    engine = engine_factory(on_record, lambda t: progress.start())
    interrupted = None
    try:
        engine.run(the_plan.trials, deadline=deadline)
        progress.end()
        known = H.known_buckets(history_path)
        found = B.group([r for r in records if r["kind"] == "cell"])
        again, firsts = [], []
        for sig, b in found.items():      # one set of re-runs per trial, however many buckets
            if sig not in known and repro and b["first_trial"] not in firsts:
                firsts.append(b["first_trial"])
        for tid in firsts:
            first = next(t for t in the_plan.trials if t.id == tid)
            again += [dataclasses.replace(first, id=f"{first.id}/repro-{k + 1}", kind="repro",
                                          meta=first.meta + (("repro_of", first.id),))
                      for k in range(repro)]
        if again:
            say(f"re-running {len(firsts)} trial(s) that found new buckets, {repro} times each")
            progress = Progress(len(again))
            engine.run(again, deadline=time.monotonic() + max(
                0.0, deadline - time.monotonic() + the_plan.trial_s))
            progress.end()
        mutants = run_mutants(the_plan, engine_factory, out_dir, say)
        if mutants and mutants.get("interrupted"):
            from harness.signals import Interrupted
            interrupted = Interrupted(mutants["exit_status"] - 128)
    except KeyboardInterrupt as exc:
        progress.end()
        interrupted = exc
    from harness.signals import exit_status
    part = {"schema": PART_SCHEMA, "version": NIGHT_VERSION, "label": label,
            "shard": list(the_plan.shard), "started": started,
            "elapsed_s": round(time.time() - started, 1), "budget_s": budget_s or the_plan.budget_s,
            "plan": {"rounds": the_plan.rounds, "trial_s": the_plan.trial_s,
                     "canary_s": the_plan.canary_s, "slots": the_plan.slots,
                     "how": the_plan.how, "all_ids": the_plan.all_ids},
            "matrix": {"source": matrix.source, "cells": [c.name for c in matrix.cells],
                       "values": {c.name: [[k, str(v)] for k, v in c.values]
                                  for c in matrix.cells},
                       "canaries": list(matrix.canary_faults), "text": matrix.text}
            if matrix else None,
            "interrupted": interrupted is not None,
            "interrupt_status": exit_status(interrupted) if interrupted else None,
            "records": records, "mutants": mutants}
    path = os.path.join(out_dir, f"part-{the_plan.shard[0]}-of-{the_plan.shard[1]}.json")
    write_atomic(path, to_json(part))
    if interrupted is not None:
        raise interrupted
    return path


def run_mutants(the_plan, engine_factory, out_dir, say=print):
    """This shard's lock mutants and their control as a mutants campaign
    (harness.mutants_campaign): its result, also saved as `mutants-<i>-of-<N>.json`
    and `.md` in `out_dir` after every build; None when the shard has none.  An
    interrupt ends the campaign, which keeps what finished (`interrupted` set)."""
    if not the_plan.mutants:
        return None
    chosen = MC.select(MU.generate(), the_plan.mutants)
    template = MC.template(seconds=the_plan.canary_s, seed=the_plan.seed * 1000)
    i, n = the_plan.shard
    save = MC.saver(os.path.join(out_dir, f"mutants-{i}-of-{n}.json"))
    say(f"lock mutants: {', '.join(m.id for m in chosen)} (each a build of its own)")
    campaign = MC.Campaign(chosen, template, the_plan.mutant_trials, engine_factory,
                           min(the_plan.slots, len(chosen)), None, say, save, the_plan.slots)
    out = campaign.run()
    save(out)
    return out


# ---------------------------------------------------------------- merge

def _load(path, what, schema):
    """The saved `what` at `path` if it has this tool's `schema` and version; NightlyError."""
    try:
        data = read_json(path, what)
    except ResultError as err:
        raise NightlyError(str(err)) from None
    if not isinstance(data, dict) or data.get("schema") != schema or \
            data.get("version") != NIGHT_VERSION:
        raise NightlyError(f"{path} is not a {what} of this tool")
    return data


def load_part(path):
    data = _load(path, "nightly shard output", PART_SCHEMA)
    if not isinstance(data.get("records"), list):
        raise NightlyError(f"{path} is not a nightly shard output of this tool")
    return data


def find_parts(dirs):
    """Every part file in `dirs` (a folder or a part file each); NightlyError if none."""
    paths = []
    for d in dirs:
        found = sorted(glob.glob(os.path.join(d, "part-*-of-*.json"))) if os.path.isdir(d) \
            else [d] if os.path.isfile(d) else []
        if not found:
            raise NightlyError(f"no shard output (part-*-of-*.json) in {d}")
        paths += found
    return paths


def canary_summary(records):
    """{fault: {runs, caught, escaped, kill_rate, ci, median_ttd_s, detectors}}."""
    out = {}
    for r in records:
        if r["kind"] != "canary" or r["status"] in (T.NOT_RUN, T.LOST, T.INTERRUPTED):
            continue
        f = r.get("fault") or r["cell"].removeprefix("canary-")
        s = out.setdefault(f, {"fault": f, "expected": list(BY_NAME[f].detectors) if f in
                               BY_NAME else [], "runs": 0, "caught": 0, "ttd": [],
                               "detectors": {}, "escaped_commands": []})
        s["runs"] += 1
        found = set((r.get("detection_s") or {}).keys()) | \
            {p.split(":")[0] for p in r.get("problems", [])}
        caught = bool(found & set(s["expected"])) or (r["status"] in (T.HANG,)
                                                      and "watchdog" in s["expected"])
        s["caught"] += caught
        if caught and r.get("ttd_s") is not None:
            s["ttd"].append(r["ttd_s"])
        if not caught:
            s["escaped_commands"].append(r["command"])
        for d in found:
            s["detectors"][d] = s["detectors"].get(d, 0) + 1
    for s in out.values():
        s["escaped"] = s["runs"] - s["caught"]
        s["kill_rate"] = round(s["caught"] / s["runs"], 4) if s["runs"] else None
        s["kill_rate_ci"] = list(B.wilson(s["caught"], s["runs"]))
        s["median_ttd_s"] = round(statistics.median(s["ttd"]), 4) if s["ttd"] else None
        s["ttd_s"] = s.pop("ttd")
    return dict(sorted(out.items()))


def vacuity(records):
    """{cell: [why a clean verdict there says little]}: race windows never reached."""
    per = {}
    for r in records:
        if r["kind"] == "cell" and r["status"] == T.CLEAN:
            per.setdefault(r["cell"], []).append(r)
    out = {}
    for cell, rs in sorted(per.items()):
        why = []
        classes = {}
        for r in rs:
            for k, v in (r.get("locks") or {}).items():
                c = classes.setdefault(k, [0, 0])
                c[0] += v["acquisitions"]
                c[1] += v["contended"]
        for k, (acq, cont) in sorted(classes.items()):
            threads = (rs[0].get("config") or {}).get("threads") or 2
            if acq and not cont and threads > 1:
                why.append(f"no contended acquisition of a {k} lock")
        cfg = rs[0].get("config") or {}
        if cfg.get("reclaimers") and not sum(r.get("reclaims") or 0 for r in rs):
            why.append("reclaim never ran")
        elif cfg.get("capture") and cfg.get("reclaimers") and \
                (cfg.get("threads") or 0) > cfg["reclaimers"] and \
                not sum(r.get("captured_other_pages") or 0 for r in rs):
            why.append("no page was captured from another thread's free")
        for w in sorted({w.split(":")[0] for r in rs for w in r.get("warnings", [])}):
            if "contended" not in w and "captured from another" not in w and \
                    "never had to reclaim" not in w:
                why.append(w)
        if why:
            out[cell] = why
    return out


def merge(part_paths, out_dir, history_path, label=None, write_history=True):
    """Merge shard outputs into one night: compare it with the history and record it there
    (one transaction; not when interrupted or `write_history` is false); write night.json.
    Returns the night (its `exit_status` included)."""
    parts = [load_part(p) for p in part_paths]
    shards = sorted({tuple(p["shard"]) for p in parts})
    if len({n for _, n in shards}) > 1 or len(shards) != len(parts):
        raise NightlyError(f"shard outputs do not belong together: {shards}")
    if len({tuple(p["plan"]["all_ids"]) for p in parts}) > 1:
        raise NightlyError("shard outputs come from different nights or matrices (their trial"
                           " lists differ)")
    H.check(history_path)
    records = [r for p in parts for r in p["records"]]
    ids = [r["id"] for r in records]
    if len(ids) != len(set(ids)):
        raise NightlyError("two shard outputs hold the same trial")
    started = min(p["started"] for p in parts)
    label = label or parts[0].get("label") or time.strftime("%Y-%m-%d %H:%M",
                                                            time.gmtime(started))
    interrupted = any(p["interrupted"] for p in parts)
    cell_records = [r for r in records if r["kind"] == "cell"]
    found = B.group(cell_records)
    for sig, b in found.items():
        origins = {r["id"] for r in cell_records if r.get("signatures")
                   and r["signatures"][0][0] == sig}
        again = [r for r in records if r["kind"] == "repro" and r.get("repro_of") in origins
                 and r["status"] not in (T.NOT_RUN, T.LOST, T.INTERRUPTED)]
        if again:
            hit = sum(any(s == sig for s, _ in r.get("signatures", [])) for r in again)
            b["reproduced"] = f"{hit}/{len(again)}"
        b["reports"] = [r["report"] for r in sorted(
            (r for r in records if r.get("report") and r["signatures"][0][0] == sig),
            key=lambda r: -r.get("started", 0))][:KEEP_REPORTS]
    canaries = canary_summary(records)
    mutants = merge_mutants(parts)
    night = {"schema": NIGHT_SCHEMA, "version": NIGHT_VERSION, "label": label,
             "started": started, "elapsed_s": max(p["elapsed_s"] for p in parts),
             "budget_s": parts[0]["budget_s"], "shards": len(parts),
             "plan": parts[0]["plan"], "matrix": parts[0]["matrix"],
             "interrupted": interrupted,
             "interrupt_status": next((p["interrupt_status"] for p in parts
                                       if p["interrupted"]), None),
             "records": records, "buckets": found, "canaries": canaries, "mutants": mutants,
             "vacuity": vacuity(records), "history": None, "trends": []}
    if write_history:
        conn = H.open_history(history_path)
        try:
            cmp = H.compare(conn, found, records)
            night["history"] = {"path": history_path, **cmp, "recorded": not interrupted}
            for sig, state in cmp["states"].items():
                found[sig]["state"] = state
            night["exit_status"] = exit_status(night)
            if not interrupted:              # an interrupted night is kept, but not history
                H.record(conn, night, records, found, cmp["states"], night["exit_status"])
            for sig, h in H.bucket_history(conn, found).items():
                found[sig].update(h)
            night["trends"] = H.trends(conn)
        finally:
            conn.close()
    for b in found.values():
        b.setdefault("state", "new")
    night["exit_status"] = exit_status(night)
    write_atomic(os.path.join(out_dir, "night.json"), to_json(night))
    return night


def merge_mutants(parts):
    """The shards' mutant campaigns as one, classified against this code's equivalence
    table (harness.mutants_campaign.regrade); a scheme's control counts as killed if any
    shard's was.  None when no shard ran a mutant."""
    outs = [p["mutants"] for p in parts if p.get("mutants")]
    if not outs:
        return None
    control = {}
    for o in outs:
        for scheme, entry in o.get("control", {}).items():
            if scheme not in control or entry.get("killed"):
                control[scheme] = entry
    return MC.regrade({**outs[0], "control": control,
                       "mutants": [e for o in outs for e in o["mutants"]],
                       "elapsed_s": max(o.get("elapsed_s") or 0 for o in outs),
                       "interrupted": any(o.get("interrupted") for o in outs)})


def exit_status(night):
    """0, 1 (new bucket, regression, mutant finding), 5 (a canary escaped or a mutant
    survived undeclared), or the interrupt's status."""
    return grade(night)[0]


def grade(night):
    """(exit status, the word a report heads with): the first reason that applies wins."""
    if night.get("interrupted"):
        return night.get("interrupt_status") or 130, "INTERRUPTED"
    mutants = (night.get("mutants") or {}).get("summary") or {}
    if any(c["escaped"] for c in night["canaries"].values()):
        return EXIT_CANARY, "CANARY ESCAPED"
    if mutants.get("gaps"):
        return EXIT_CANARY, "MUTANT SURVIVED"
    hist = night.get("history") or {}
    if any(b.get("state", "new") in ("new", "reopened") for b in night["buckets"].values()):
        return EXIT_FINDING, "NEW BUCKET"
    if any(p.get("regression") for p in hist.get("perf", {}).values()):
        return EXIT_FINDING, "PERFORMANCE REGRESSION"
    if any(mutants.get(k) for k in ("wrong_declarations", "control_killed", "compile_errors")):
        return EXIT_FINDING, "MUTANT FINDING"
    return EXIT_OK, "PASS"


def load_night(path):
    return _load(path, "night result", NIGHT_SCHEMA)


def render_all(night, out_dir):
    """Write junit.xml, report.html and summary.md beside night.json; their paths."""
    from harness import render_html, render_junit, render_markdown
    paths = {}
    for name, mod in (("junit.xml", render_junit), ("report.html", render_html),
                      ("summary.md", render_markdown)):
        path = os.path.join(out_dir, name)
        write_atomic(path, mod.render(night))
        paths[name] = path
    return paths
