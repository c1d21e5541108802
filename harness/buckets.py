"""Failure buckets: a stable, normalized signature for every problem a trial shows.

The way syzbot and KCSAN title a crash: the kind of failure and where it
happened in the code, nothing that changes from run to run.  Rules:

  - a page violation: `<kind> in <op>/<op>`, the flight-recorder operations of
    the two sides of the race, sorted (`double_allocation in alloc/free`); with
    no recorded other side, `<kind> (<detector>)`;
  - a structural invariant: `invariant <kind>`, plus its named non-numeric
    fields (`state=allocated`);
  - a lock cycle: `possible deadlock: a -> b`, rotated to start at its
    alphabetically first class; an undeclared edge names its code site;
  - a hang: `deadlock: a -> b` from the wait-for cycle's lock classes
    (rotated the same way), else `hang: no progress` (what was waited for is
    in the report, not the title: it changes from one run of a hang to the next);
  - a trial that crashed or outlived its timeout: the signal or exit status.

No pfn, page, thread, seed, time or line number ever enters a signature (any
stray number is replaced by N as a last guard).  A trial belongs to one bucket,
its first finding (the detector that fired first, then the order above), the
way syzbot titles a crash by its first report: one race usually trips several
invariants after it, and those are listed under the bucket as "also seen".
Every problem is read from the same fields harness.verdict grades, so a
non-CLEAN trial always has at least one bucket.
"""

import math
import re
import statistics

from harness.trials import CRASH, TIMEOUT

_NUMBER = re.compile(r"(?<![A-Za-z_])\d+(?![A-Za-z_])")
Z95 = 1.959963984540054


def _clean(text):
    return _NUMBER.sub("N", text)


def rotate(cycle):
    """A cycle of names rotated to start at its smallest name (same cycle, one spelling)."""
    if not cycle:
        return []
    k = min(range(len(cycle)), key=lambda i: cycle[i])
    return list(cycle[k:]) + list(cycle[:k])


def signatures(record):
    """[(signature, title)] of one trial record, deduplicated, in a stable order."""
    out = []
    status, result = record.get("status"), record.get("result")
    if status == CRASH:
        why = record.get("signal") or f"exit status {record.get('exit_code')}"
        out.append(f"trial crashed: {why}")
    elif status == TIMEOUT:
        out.append("trial hung past its timeout (the watchdog did not end it)")
    if isinstance(result, dict):
        found = result.get("detection_s") or {}
        titled = result_titles(result)
        order = sorted(range(len(titled)), key=lambda k: (found.get(titled[k][0], math.inf), k))
        out += [titled[k][1] for k in order]
    seen, uniq = set(), []
    for title in out:
        title = _clean(title)
        if title not in seen:
            seen.add(title)
            uniq.append((title.lower(), title))
    return uniq


def result_titles(result):
    """[(detector, title)] of every finding in a result, in the order of the rules above."""
    titles = []
    for v in result.get("worker_violations", []):
        race = v.get("race") or {}
        ops = sorted(e["op"] for e in (race.get("this"), race.get("other")) if e)
        titles.append((v["detector"], f"{v['kind']} in {'/'.join(ops)}" if len(ops) == 2
                       else f"{v['kind']} ({v['detector']})"))
    for v in result.get("invariant_violations", []):
        if v.get("kind") == "truncated":
            continue
        named = sorted(f"{k}={x}" for k, x in v.items() if isinstance(x, str)
                       and k not in ("kind", "message", "detector", "epoch"))
        titles.append(("invariants",
                       f"invariant {v['kind']}" + (f" ({', '.join(named)})" if named else "")))
    end = result.get("end") or {}
    if end.get("drain_rejected"):
        titles.append(("drain", "drain: the zone rejected frees of held blocks"))
    if end.get("fresh_after_drain") is False:
        titles.append(("drain", "drain: the zone is not fresh after giving everything back"))
    for p in (result.get("lockdep") or {}).get("problems", []):
        titles.append(("lockdep", lockdep_title(p)))
    if result.get("outcome") == "hang":
        titles.append(("watchdog", hang_title(result.get("wait_for") or {})))
    return titles


def lockdep_title(p):
    kind = p.get("kind")
    if kind == "circular-dependency":
        return "possible deadlock: " + " -> ".join(rotate(p["cycle"]))
    if kind == "same-class-nesting":
        return f"same-class nesting: {p['cycle'][0]}"
    if kind == "undeclared-edge":
        return f"undeclared lock order: {p['held']} -> {p['taken']} in {p.get('site', '?')}"
    if kind == "sleep-while-holding":
        m = re.search(r"holding a (\w+) lock", p.get("summary", ""))
        return f"sleep while holding a {m.group(1) if m else ''} lock".replace("a  lock", "a lock")
    return f"lockdep {kind}"


def hang_title(wait_for):
    edges = {e["thread"]: e for e in wait_for.get("edges", [])}
    cycle = wait_for.get("cycle") or []
    classes = [edges[t]["class"] for t in cycle if t in edges]
    if classes:
        return "deadlock: " + " -> ".join(rotate(classes))
    return "hang: no progress"      # which locks were waited for varies from run to run


# ---------------------------------------------------------------- statistics

def wilson(k, n, z=Z95):
    """The Wilson score interval of k successes in n trials: (low, high), or (None, None)."""
    if n <= 0:
        return None, None
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


def ttd(record):
    """Seconds from start to the trial's first finding, or None."""
    found = ((record.get("result") or {}).get("detection_s") or {}).values()
    return min(found) if found else None


def group(records, keep=3):
    """{signature: bucket} over trial records of matrix cells (not canaries), each trial
    in the bucket of its first signature.

    A bucket: title, count (trials that showed it), cells, kill rate among the
    trials of those cells with its Wilson interval, median time to detection,
    the newest `keep` trials (id, command, seed) and one reproduction command.
    """
    by_cell = {}
    for r in records:
        by_cell.setdefault(r["cell"], []).append(r)
    buckets = {}
    for r in records:
        if r.get("signatures"):
            sig, title = r["signatures"][0]
            b = buckets.setdefault(sig, {"signature": sig, "title": title, "trials": [],
                                         "also": set()})
            b["trials"].append(r)
            b["also"].update(t for _, t in r["signatures"][1:])
    out = {}
    for sig, b in sorted(buckets.items()):
        trials = sorted(b["trials"], key=lambda r: r.get("started", 0))
        cells = sorted({r["cell"] for r in trials})
        ran = [r for c in cells for r in by_cell[c] if r["status"] in RAN]
        hits = len({r["id"] for r in trials})
        times = [t for t in map(ttd, trials) if t is not None]
        low, high = wilson(hits, len(ran))
        out[sig] = {"signature": sig, "title": b["title"], "count": hits, "cells": cells,
                    "ran": len(ran),
                    "kill_rate": round(hits / len(ran), 4) if ran else None,
                    "kill_rate_ci": [low, high],
                    "median_ttd_s": round(statistics.median(times), 4) if times else None,
                    "newest": [{"id": r["id"], "command": r["command"], "status": r["status"]}
                               for r in trials[-keep:]][::-1],
                    "command": trials[0]["command"], "first_trial": trials[0]["id"],
                    "also_seen": sorted(b["also"])}
    return out


RAN = ("clean", "violations", "hang", "crash", "timeout")
