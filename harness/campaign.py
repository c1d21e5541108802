"""`python -m harness faults`: measured detection power of every seeded fault.

For every fault (and a clean control): N trials with a time budget each, with
and without delay injection; whether, when and by which detector it was
caught.  Each detected failure is re-run a few times with the same command
and the report says how often it came back: real threads never replay
exactly, so "reproduced 4/5" is the honest statement.
"""

import statistics
import time

from harness import faults as F
from harness.report import repro_command
from harness.runner import Run, RunConfig, collect, warm_up
from harness.verdict import grade, problems

CLEAN = "clean"
DETECTORS = ("ownership", "poison", "invariants", "lockdep", "watchdog")


def trial(name, seed, budget, chaos, threads, pages):
    """One run of fault `name` (or the clean control); a small dict of what happened."""
    cfg = RunConfig(threads=threads, reclaimers=1, seconds=budget, seed=seed, pages=pages,
                    lockdep=True, fault="" if name == CLEAN else name, chaos=chaos,
                    check_ms=50, stall_s=2.0)
    run = Run(cfg)
    wall, cpu = run.execute()
    result = collect(run, wall, cpu, 0.0, run.finish())
    verdict, _ = grade(result)
    found = result["detection_s"]
    return {"seed": seed, "chaos": chaos, "verdict": verdict, "detected": verdict != "CLEAN",
            "detectors": sorted(found), "ttd_s": min(found.values()) if found else None,
            "problems": problems(result)[:3], "ops": sum(t["ops"] for t in result["threads"]),
            "command": repro_command(result["config"])}


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


def run_campaign(names, trials, budget, chaos, repro, threads, pages, seed, log=print):
    """The whole campaign; a JSON-ready dict."""
    out = {"config": {"trials": trials, "budget_s": budget, "chaos": chaos, "repro": repro,
                      "threads": threads, "pages": pages, "seed": seed},
           "warmup_s": warm_up(), "faults": {}}
    started = time.monotonic()
    for name in names:
        fault = F.BY_NAME.get(name)
        entry = {"what": fault.what if fault else "no fault: the control",
                 "expected": list(fault.detectors) if fault else [], "modes": {}}
        for mode, p in (("plain", 0.0), ("chaos", chaos)):
            runs = [trial(name, seed + k, budget, p, threads, pages) for k in range(trials)]
            entry["modes"][mode] = {"summary": summarize(runs), "trials": runs}
            first = next((r for r in runs if r["detected"]), None)
            if first and repro:
                again = [trial(name, first["seed"], budget, p, threads, pages)["detected"]
                         for _ in range(repro)]
                entry["modes"][mode]["reproduced"] = f"{sum(again)}/{repro}"
            s = entry["modes"][mode]["summary"]
            log(f"{name:<24} {mode:<6} detected {s['detected']}/{s['trials']}"
                f"  median {fmt(s['median_ttd_s'])}  p90 {fmt(s['p90_ttd_s'])}"
                f"  {entry['modes'][mode].get('reproduced', '')}")
        out["faults"][name] = entry
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
                bad.append(f"the clean control was flagged in {s['detected']}/{s['trials']}"
                           f" {mode} trials: {m['trials'][0]['problems']}")
            elif name != CLEAN and s["detected"] < s["trials"]:
                bad.append(f"{name} ({mode}) escaped {s['trials'] - s['detected']}/{s['trials']}"
                           " trials")
    return bad


def table(campaign):
    """The human matrix: fault x detector, kill rate, time to detection, with and without chaos."""
    head = ("| fault | expected | mode | killed | median TTD | p90 TTD | "
            + " | ".join(DETECTORS) + " | reproduced |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, entry in campaign["faults"].items():
        for mode, m in entry["modes"].items():
            s = m["summary"]
            lines.append(
                f"| {name} | {','.join(entry['expected']) or '-'} | {mode} |"
                f" {s['detected']}/{s['trials']} | {fmt(s['median_ttd_s'])} |"
                f" {fmt(s['p90_ttd_s'])} | "
                + " | ".join(str(s["by_detector"][d]) for d in DETECTORS)
                + f" | {m.get('reproduced', '-')} |")
    n = campaign["config"]["trials"]
    lines += ["", f"A clean result means 0 failures in {n} trials per mode: at 95% confidence the"
              f" per-trial failure probability is below 3/{n} = {3 / n:.2f} (rule of three)."]
    bad = escaped(campaign)
    lines += [""] + ([f"FINDING: {b}" for b in bad] if bad else ["every fault was detected in"
                                                                   " every trial"])
    return "\n".join(lines)
