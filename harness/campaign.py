"""`python -m harness faults`: measured detection power of every seeded fault.

Each trial is a subprocess on the trial engine (harness.trials).

For every fault (and a clean control): N trials with a time budget each, with
and without delay injection; whether, when and by which detector it was
caught.  Each detected failure is re-run a few times with the same command
and the report says how often it came back: real threads never replay
exactly, so "reproduced 4/5" is the honest statement.  An interrupted
campaign keeps every finished trial and says it was interrupted.
"""

import dataclasses
import statistics
import time

from harness import faults as F
from harness import trials as T
from harness.config import to_argv
from harness.result import CAMPAIGN_SCHEMA, VERSION, to_json, write_new
from harness.runner import run_stress
from harness.verdict import EXIT_CLEAN, EXIT_VIOLATION

CLEAN = "clean"
DETECTORS = ("ownership", "poison", "invariants", "lockdep", "witness", "watchdog")
MIN_TRIALS_FOR_BOUND = 4        # the rule of three says nothing useful below this


class TrialInterrupted(Exception):
    """The user stopped the campaign during a trial; `status` is the exit status."""

    def __init__(self, status):
        super().__init__(status)
        self.status = status


def trial(cfg, warm_s):
    """One in-process run of `cfg` (for tests and the pytest fixture); a small dict of what
    happened, with the same keys the campaign keeps.  Raises TrialInterrupted."""
    try:
        result = run_stress(cfg, warm_s=warm_s)
    except KeyboardInterrupt as exc:
        from harness.signals import exit_status
        raise TrialInterrupted(exit_status(exc)) from None
    if result["outcome"] == "interrupted":
        raise TrialInterrupted(result["exit_status"])
    found = result["detection_s"]
    detectors = sorted(set(found) | {p.split(":")[0] for p in result["problems"]})
    return {"seed": cfg.seed, "chaos": cfg.chaos, "verdict": result["verdict"],
            "detected": result["verdict"] != "CLEAN", "detectors": detectors,
            "ttd_s": min(found.values()) if found else None,
            "problems": result["problems"][:3], "ops": result["totals"]["ops"],
            "command": result["command"]}


def fault_needs(fault, template):
    """Config changes a fault's trials use (harness.faults.workload_settings)."""
    return F.workload_settings(fault, template.policy) if fault else {}


def percentile(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def summarize(trials):
    hits = [t for t in trials if t["detected"]]
    ttd = [t["ttd_s"] for t in hits if t["ttd_s"] is not None]
    by_detector = {d: sum(d in t["detectors"] for t in trials) for d in DETECTORS}
    return {"trials": len(trials), "detected": len(hits),
            "median_ttd_s": statistics.median(ttd) if ttd else None,
            "p90_ttd_s": percentile(ttd, 0.9), "by_detector": by_detector}


def from_record(record, cfg):
    """The campaign's view of one trial subprocess record (same keys as `trial`)."""
    result = record.get("result") or {}
    found = result.get("detection_s") or {}
    problems = result.get("problems") or []
    detected = record["status"] in (T.VIOLATIONS, T.HANG)
    if record["status"] in (T.CRASH, T.TIMEOUT, T.LOST):
        problems = [f"trial {record['status']}: exit {record.get('exit_code')}"
                    f" {record.get('signal') or ''}".rstrip()]
    return {"seed": cfg.seed, "chaos": cfg.chaos, "verdict": result.get("verdict")
            or record["status"].upper(), "detected": detected,
            "detectors": sorted(set(found) | {p.split(":")[0] for p in problems}) if detected
            else [], "ttd_s": min(found.values()) if found else None,
            "problems": problems[:3], "ops": (result.get("totals") or {}).get("ops", 0),
            "command": result.get("command") or record["command"], "status": record["status"],
            "exit_code": record.get("exit_code"), "signal": record.get("signal"),
            "stderr_tail": record.get("stderr_tail", "")[-400:] if not result else ""}


def run_campaign(names, template, trials, repro, log=print, engine=None):
    """The whole campaign over `names` (faults or CLEAN), trials built from `template`.

    Every trial is a subprocess on the trial engine (harness.trials; a local
    pool unless `engine(on_record)` gives another), so a crash or a hang past
    the timeout is a recorded trial, not a dead campaign.
    """
    out = {"schema": CAMPAIGN_SCHEMA, "version": VERSION, "kind": "faults",
           "config": {"trials": trials, "budget_s": template.seconds, "chaos": template.chaos,
                      "repro": repro, "threads": template.threads, "pages": template.pages,
                      "seed": template.seed, "check_ms": template.check_ms,
                      "stall_s": template.stall_s},
           "warmup_s": None, "faults": {}, "interrupted": False}
    started = time.monotonic()
    if engine is None:
        executor, slots = T.local_executor()
        engine = lambda on_record: T.Engine(executor, slots, on_record)     # noqa: E731
    warm = T.run_trial(T.warm_trial())
    out["warmup_s"] = warm["elapsed_s"]
    configs, plan = {}, []
    for name in names:
        fault = F.BY_NAME.get(name)
        out["faults"][name] = {"what": fault.what if fault else "no fault: the control",
                               "expected": list(fault.detectors) if fault else [], "modes": {}}
        for mode, p in (("plain", 0.0), ("chaos", template.chaos)):
            out["faults"][name]["modes"][mode] = {"summary": summarize([]), "trials": []}
            for k in range(trials):
                # Per-CPU lists on exactly for their own faults: with them on, a free of
                # order 0..3 reaches the buddy only in a batch, so the buddy's race windows,
                # where the other faults live, open far less often.
                cfg = dataclasses.replace(template, seed=template.seed + k, chaos=p,
                                          fault="" if name == CLEAN else name,
                                          pcp=fault.pcp if fault else template.pcp,
                                          **fault_needs(fault, template))
                plan.append(fault_trial(f"{name}/{mode}/{k + 1}", cfg, name, mode))
                configs[plan[-1].id] = cfg
    done = {}
    modes = {(t.cell, dict(t.meta)["mode"]) for t in plan}
    said = set()

    def finished(record):           # say each (fault, mode) as soon as its trials are in
        done[record["id"]] = record
        for name, mode in sorted(modes - said):
            ids = [f"{name}/{mode}/{k + 1}" for k in range(trials)]
            if all(i in done for i in ids):
                said.add((name, mode))
                s = summarize([from_record(done[i], configs[i]) for i in ids
                               if done[i]["status"] not in (T.NOT_RUN, T.INTERRUPTED)])
                log(f"{name:<24} {mode:<6} detected {s['detected']}/{s['trials']}"
                    f"  median {fmt(s['median_ttd_s'])}  p90 {fmt(s['p90_ttd_s'])}")
    try:
        _run_all(engine, plan, finished)
        again = []
        for name, entry in out["faults"].items():
            for mode in entry["modes"]:
                ids = [f"{name}/{mode}/{k + 1}" for k in range(trials)]
                first = next((i for i in ids if i in done and
                              from_record(done[i], configs[i])["detected"]), None)
                if first and repro:
                    again += [fault_trial(f"{first}/repro-{j + 1}", configs[first], name, mode)
                              for j in range(repro)]
        _run_all(engine, again, lambda r: done.__setitem__(r["id"], r))
    except KeyboardInterrupt as exc:
        from harness.signals import exit_status
        out["interrupted"] = True
        out["exit_status"] = exit_status(exc)
        log("interrupted: the campaign keeps the trials that finished")
    for name, entry in out["faults"].items():
        for mode, m in entry["modes"].items():
            ids = [f"{name}/{mode}/{k + 1}" for k in range(trials)]
            m["trials"] = [from_record(done[i], configs[i]) for i in ids if i in done
                           and done[i]["status"] not in (T.NOT_RUN, T.INTERRUPTED)]
            m["summary"] = summarize(m["trials"])
            first = next((i for i in ids if i in done and
                          from_record(done[i], configs[i])["detected"]), None)
            reruns = [done[r] for r in done if first and r.startswith(first + "/repro-")
                      and done[r]["status"] not in (T.NOT_RUN, T.INTERRUPTED)]
            if reruns:
                hits = sum(from_record(r, configs[first])["detected"] for r in reruns)
                m["reproduced"] = f"{hits}/{len(reruns)}"
    out["elapsed_s"] = round(time.monotonic() - started, 1)
    return out


def fault_trial(trial_id, cfg, name, mode):
    return T.Trial(id=trial_id, argv=tuple(to_argv(cfg)),
                   timeout_s=T.timeout_for(cfg.seconds, cfg.stall_s), cell=name, kind="fault",
                   meta=(("mode", mode), ("seed", cfg.seed)))


def _run_all(engine, plan, on_record):
    """Run `plan` on a fresh engine, handing each record to `on_record` as it finishes."""
    if plan:
        engine(on_record).run(plan)


def fmt(seconds):
    return "-" if seconds is None else f"{seconds:.3f}s"


def escaped(campaign):
    """Faults some trial of which was not detected (and a flagged control): the findings."""
    bad = []
    for name, entry in campaign["faults"].items():
        for mode, m in entry["modes"].items():
            s = m["summary"]
            if name == CLEAN and s["detected"]:
                flagged = next(t for t in m["trials"] if t["detected"])
                bad.append(f"the clean control was flagged in {s['detected']}/{s['trials']}"
                           f" {mode} trials: {flagged['problems']}")
            elif name != CLEAN and s["detected"] < s["trials"]:
                bad.append(f"{name} ({mode}) escaped {s['trials'] - s['detected']}/{s['trials']}"
                           " trials")
    return bad


def exit_status(campaign):
    if campaign.get("interrupted"):
        return campaign["exit_status"]
    return EXIT_VIOLATION if escaped(campaign) else EXIT_CLEAN


def table(campaign):
    """The human matrix: fault x detector, kill rate, time to detection, with and without chaos."""
    head = ("| fault | expected | mode | killed | median TTD | p90 TTD | "
            + " | ".join(DETECTORS) + " | reproduced |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, entry in campaign["faults"].items():
        for mode, m in entry["modes"].items():
            s = m["summary"]
            if not s["trials"]:
                continue
            lines.append(
                f"| {name} | {','.join(entry['expected']) or '-'} | {mode} |"
                f" {s['detected']}/{s['trials']} | {fmt(s['median_ttd_s'])} |"
                f" {fmt(s['p90_ttd_s'])} | "
                + " | ".join(str(s["by_detector"][d]) for d in DETECTORS)
                + f" | {m.get('reproduced', '-')} |")
    n = campaign["config"]["trials"]
    cfg = campaign["config"]
    lines += ["", f"Trials: {cfg['budget_s']:g} s each, {cfg['threads']} threads,"
              f" {cfg['pages']} pages, quiescent checks every {cfg['check_ms']} ms (the"
              f" invariants detector's time resolution), watchdog after {cfg['stall_s']:g} s;"
              " a fault's declared workload (threads, reclaimers, policy) replaces these."]
    if n >= MIN_TRIALS_FOR_BOUND:
        lines.append(f"A clean result means 0 failures in {n} trials per mode: at 95% confidence"
                     f" the per-trial failure probability is below 3/{n} = {3 / n:.2f}"
                     " (rule of three).")
    else:
        lines.append(f"{n} trials per mode are too few to bound a failure probability"
                     f" (the rule of three needs at least {MIN_TRIALS_FOR_BOUND}).")
    bad = escaped(campaign)
    lines += [""] + ([f"FINDING: {b}" for b in bad] if bad else ["every fault was detected in"
                                                                   " every trial"])
    if campaign.get("interrupted"):
        lines.append("INTERRUPTED: the campaign was stopped; the table holds the trials that"
                     " finished")
    return "\n".join(lines)


def save_campaign(campaign, text, folder):
    """Write the campaign JSON and its markdown table under one unique stem; both paths."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = write_new(folder, f"faults-{stamp}", ".json", to_json(campaign))
    md_path = json_path[:-len(".json")] + ".md"
    from harness.result import write_atomic
    write_atomic(md_path, text + "\n")
    return json_path, md_path
