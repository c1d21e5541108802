"""The reclaim-policy experiment: policies x wanted-order ranges x seeds, one stress trial each.

Each trial is a `stress` subprocess on the trial engine (harness.trials), built from
one RunConfig template (every stress option passes through, so a new option such
as per-CPU lists needs nothing here), with the cell's `--reclaim-policy`, its
`--reclaim-mix` (uniform over the range) and the trial's seed.  Per cell: the
mean and a 95% confidence interval (Student's t over the seeds) of each metric in
`METRICS`.  The saved result (schema `buddy-reclaim-experiment`) is rewritten
atomically after every trial, so an interrupted experiment keeps what finished;
the table and the plot are rendered from it.
"""

import dataclasses
import math
import os
import time

from harness import trials as T
from harness.config import to_argv
from harness.result import to_json, write_atomic

SCHEMA, VERSION = "buddy-reclaim-experiment", 1
ORDER_RANGES = ((4, 6), (7, 10))

# (key, column title, scale, format): what is measured per trial, from its stress result.
METRICS = (
    ("reclaim_success", "reclaim success %", 100.0, "{:.1f}"),
    ("high_success", "high-order success %", 100.0, "{:.2f}"),
    ("ms_to_block", "ms reclaim start to block", 1.0, "{:.2f}"),
    ("moved_per_reclaim", "pages migrated / reclaim", 1.0, "{:.0f}"),
    ("captured_per_reclaim", "pages captured / reclaim", 1.0, "{:.0f}"),
    ("alloc_mops", "allocator M ops/s", 1e-6, "{:.2f}"),
)

# Student's t, two-sided 95%, by degrees of freedom (beyond 30: the normal 1.96).
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t95(df):
    return _T95[df - 1] if 1 <= df <= len(_T95) else 1.96


def mean_ci(values):
    """(mean, half-width of the 95% interval) of `values`; the half-width is None below 2."""
    xs = [v for v in values if v is not None]
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, None
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    return m, t95(len(xs) - 1) * sd / math.sqrt(len(xs))


def parse_ranges(text):
    """"4-6,7-10" -> ((4, 6), (7, 10)); ValueError with a one-line message."""
    out = []
    for part in text.split(","):
        lo, sep, hi = part.partition("-")
        try:
            lo, hi = int(lo), int(hi if sep else lo)
        except ValueError:
            raise ValueError(f"order ranges must look like 4-6,7-10, got {text!r}") from None
        if not 4 <= lo <= hi <= 10:
            raise ValueError(f"order range {part!r} must lie in 4..10 (costly orders)")
        out.append((lo, hi))
    return tuple(out)


def cell_name(policy, orders):
    return f"{policy}/{orders[0]}-{orders[1]}"


def plan(template, policies, ranges, seeds):
    """The trials: every (policy, order range) cell, one trial per seed; seed-major, so a
    change of machine load during the experiment falls on every cell alike."""
    out = []
    for k in range(seeds):
        for orders in ranges:
            for policy in policies:
                cfg = dataclasses.replace(
                    template, reclaim_policy=policy, seed=template.seed + k,
                    reclaim_mix={o: 1.0 for o in range(orders[0], orders[1] + 1)})
                out.append(T.Trial(id=f"{cell_name(policy, orders)}/{k + 1}",
                                   argv=tuple(to_argv(cfg)),
                                   timeout_s=T.timeout_for(cfg.seconds, cfg.stall_s),
                                   cell=cell_name(policy, orders), kind="cell",
                                   meta=(("policy", policy), ("orders", list(orders)),
                                         ("seed", cfg.seed))))
    return out


def measure(result):
    """The METRICS of one stress result (None where a trial had nothing to measure)."""
    tot = result["totals"]
    mig = tot.get("migration") or {}
    reclaims = tot["reclaims"]
    per = (lambda n: n / reclaims) if reclaims else (lambda n: None)
    return {
        "reclaim_success": tot["reclaim_success"],
        "high_success": tot["high_successes"] / tot["high_attempts"] if tot["high_attempts"]
        else None,
        "ms_to_block": tot.get("reclaim_to_block_ms"),
        "moved_per_reclaim": per(mig.get("migrated_pages", 0)),
        "captured_per_reclaim": per(tot["captured_own_pages"] + tot["captured_other_pages"]),
        "alloc_mops": tot["allocator_ops_per_s"],
        "reclaims": reclaims,
        "verdict": result["verdict"],
    }


def summarize(cells, records):
    """Per cell: n, and for each metric its mean and 95% half-width, from finished trials."""
    out = {}
    for name in cells:
        rows = [r["measured"] for r in records if r["cell"] == name and r.get("measured")]
        entry = {"n": len(rows)}
        for key, *_ in METRICS:
            m, h = mean_ci([row[key] for row in rows])
            entry[key] = {"mean": m, "ci95": h}
        out[name] = entry
    return out


def run(template, policies, ranges, seeds, out_path, engine, log=print):
    """Run the experiment, saving to `out_path` after every trial; the saved dict.

    KeyboardInterrupt is re-raised after what finished has been saved."""
    trials = plan(template, policies, ranges, seeds)
    cells = list(dict.fromkeys(t.cell for t in trials))
    exp = {"schema": SCHEMA, "version": VERSION,
           "config": {"policies": list(policies), "order_ranges": [list(r) for r in ranges],
                      "seeds": seeds, "stress": to_argv(template),
                      "trial_seconds": template.seconds},
           "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "interrupted": False,
           "trials": [], "cells": summarize(cells, [])}

    def save():
        exp["cells"] = summarize(cells, exp["trials"])
        write_atomic(out_path, to_json(exp))

    def finished(record):
        res = record.pop("result", None)
        keep = {k: record.get(k) for k in ("id", "cell", "policy", "orders", "seed", "status",
                                           "exit_code", "elapsed_s", "command")}
        keep["measured"] = measure(res) if isinstance(res, dict) and "totals" in res else None
        if keep["status"] not in (T.CLEAN,):
            keep["stderr_tail"] = (record.get("stderr_tail") or "")[-500:]
        exp["trials"].append(keep)
        save()
        m = keep["measured"]
        log(f"[{len(exp['trials'])}/{len(trials)}] {record['id']}: {keep['status']}"
            + (f", reclaim success {100 * m['reclaim_success']:.1f}% of {m['reclaims']}"
               if m and m["reclaim_success"] is not None else ""))

    save()
    try:
        engine(finished).run(trials)
    except KeyboardInterrupt:
        exp["interrupted"] = True
        exp["trials"] = [t for t in exp["trials"] if t["status"] != T.NOT_RUN]
        save()
        raise
    exp["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    save()
    return exp


def fmt_cell(stat, scale, form):
    if stat["mean"] is None:
        return "-"
    text = form.format(stat["mean"] * scale)
    return text + (f" ± {form.format(stat['ci95'] * scale)}" if stat["ci95"] is not None else "")


def table(exp):
    """The markdown table of a saved experiment: one row per cell, mean ± 95% half-width."""
    head = ["policy", "wanted orders", "n"] + [title for _, title, _, _ in METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, c in exp["cells"].items():
        policy, orders = name.split("/")
        lines.append("| " + " | ".join([policy, orders, str(c["n"])] + [
            fmt_cell(c[key], scale, form) for key, _, scale, form in METRICS]) + " |")
    bad = [t for t in exp["trials"] if t["status"] != T.CLEAN]
    if bad:
        lines.append("")
        lines.append(f"{len(bad)} trial(s) not clean: " + ", ".join(
            f"{t['id']} ({t['status']})" for t in bad[:10]))
    return "\n".join(lines)


def plot(exp, path):
    """A PNG beside the table: one panel per metric, policies side by side per order range,
    error bars the 95% intervals.  Written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    policies = exp["config"]["policies"]
    ranges = [f"{a}-{b}" for a, b in exp["config"]["order_ranges"]]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    width = 0.8 / max(1, len(policies))
    for ax, (key, title, scale, _) in zip(axes.flat, METRICS):
        for i, policy in enumerate(policies):
            xs, ys, es = [], [], []
            for j, r in enumerate(ranges):
                stat = exp["cells"].get(f"{policy}/{r}", {}).get(key, {})
                if stat.get("mean") is None:
                    continue
                xs.append(j + (i - (len(policies) - 1) / 2) * width)
                ys.append(stat["mean"] * scale)
                es.append((stat["ci95"] or 0) * scale)
            ax.bar(xs, ys, width, yerr=es, capsize=3, label=policy)
        ax.set_xticks(range(len(ranges)), [f"orders {r}" for r in ranges])
        ax.set_title(title)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"reclaim policies, {exp['config']['seeds']} seeds x"
                 f" {exp['config']['trial_seconds']:g} s per cell (mean, 95% CI)")
    fig.tight_layout()
    tmp = f"{path}.tmp-{os.getpid()}.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
    return path

