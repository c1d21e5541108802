"""`python -m harness faults`: measured detection power of every seeded fault.

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
from harness.result import CAMPAIGN_SCHEMA, VERSION, to_json, write_new
from harness.runner import run_stress, warm_up
from harness.verdict import EXIT_CLEAN, EXIT_VIOLATION

CLEAN = "clean"
DETECTORS = ("ownership", "poison", "invariants", "lockdep", "watchdog")
MIN_TRIALS_FOR_BOUND = 4        # the rule of three says nothing useful below this


class TrialInterrupted(Exception):
    """The user stopped the campaign during a trial; `status` is the exit status."""

    def __init__(self, status):
        super().__init__(status)
        self.status = status


def trial(cfg, warm_s):
    """One run of `cfg`; a small dict of what happened.  Raises TrialInterrupted."""
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


def run_campaign(names, template, trials, repro, log=print):
    """The whole campaign over `names` (faults or CLEAN), trials built from `template`."""
    out = {"schema": CAMPAIGN_SCHEMA, "version": VERSION, "kind": "faults",
           "config": {"trials": trials, "budget_s": template.seconds, "chaos": template.chaos,
                      "repro": repro, "threads": template.threads, "pages": template.pages,
                      "seed": template.seed, "check_ms": template.check_ms,
                      "stall_s": template.stall_s},
           "warmup_s": warm_up(), "faults": {}, "interrupted": False}
    started = time.monotonic()
    try:
        for name in names:
            fault = F.BY_NAME.get(name)
            entry = {"what": fault.what if fault else "no fault: the control",
                     "expected": list(fault.detectors) if fault else [], "modes": {}}
            out["faults"][name] = entry
            for mode, p in (("plain", 0.0), ("chaos", template.chaos)):
                runs = []
                entry["modes"][mode] = m = {"summary": summarize(runs), "trials": runs}
                for k in range(trials):
                    cfg = dataclasses.replace(template, seed=template.seed + k, chaos=p,
                                              fault="" if name == CLEAN else name)
                    runs.append(trial(cfg, out["warmup_s"]))
                    m["summary"] = summarize(runs)
                first = next((r for r in runs if r["detected"]), None)
                if first and repro:
                    cfg = dataclasses.replace(template, seed=first["seed"], chaos=p,
                                              fault="" if name == CLEAN else name)
                    again = [trial(cfg, out["warmup_s"])["detected"] for _ in range(repro)]
                    m["reproduced"] = f"{sum(again)}/{repro}"
                s = m["summary"]
                log(f"{name:<24} {mode:<6} detected {s['detected']}/{s['trials']}"
                    f"  median {fmt(s['median_ttd_s'])}  p90 {fmt(s['p90_ttd_s'])}"
                    f"  {m.get('reproduced', '')}")
    except TrialInterrupted as stop:
        out["interrupted"] = True
        out["exit_status"] = stop.status
        log("interrupted: the campaign keeps the trials that finished")
    out["elapsed_s"] = round(time.monotonic() - started, 1)
    return out


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
              f" invariants detector's time resolution), watchdog after {cfg['stall_s']:g} s."]
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
