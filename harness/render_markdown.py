"""A night as markdown: the CI comment, and what the terminal prints after a night."""

import time

from harness import trials as T
from harness.mutants_campaign import outcome
from harness.nightly import grade

MAX_VACUITY = 10                # lines of the vacuity list in a CI comment


def when(ts):
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts)) if ts else "-"


def sec(x):
    return "-" if x is None else f"{x:.3f}s"


def rate(k, ci):
    if k is None:
        return "-"
    return f"{k:.0%} ({ci[0]:.0%}-{ci[1]:.0%})" if ci and ci[0] is not None else f"{k:.0%}"


def duration(s):
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else \
        f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def counts(night):
    runs = {}
    for r in night["records"]:
        runs.setdefault(r["kind"], {}).setdefault(r["status"], 0)
        runs[r["kind"]][r["status"]] += 1
    return runs


def headline(night):
    """The night's verdict in one line: the word of the first reason its exit status has."""
    st = night["exit_status"]
    return f"Nightly race detection, {night['label']}: **{grade(night)[1]}** (exit status {st})"


def render(night):
    c = counts(night)
    cells = c.get("cell", {})
    plan = night["plan"]
    lines = [f"## {headline(night)}", "",
             f"Budget {duration(night['budget_s'])}, elapsed {duration(night['elapsed_s'])},"
             f" {night['shards']} shard(s); {sum(cells.values())} cell trials ("
             + ", ".join(f"{n} {s}" for s, n in sorted(cells.items())) + f"),"
             f" {sum(c.get('canary', {}).values())} canary runs,"
             f" {sum(c.get('repro', {}).values())} re-runs.", "",
             f"Plan: {plan['how']}.", ""]
    lost = [r for r in night["records"] if r["status"] == T.LOST or r.get("attempts", 1) > 1]
    for r in lost:
        lines.append(f"- trial `{r['id']}`: {r['status']}"
                     f"{' after a re-run: ' + r['rerun_reason'] if r.get('rerun_reason') else ''}")
    if lost:
        lines.append("")
    b = night["buckets"]
    lines.append(f"### Buckets ({len(b)})")
    if b:
        lines += ["", "| state | bucket | trials | kill rate (95% CI) | median TTD | first seen |"
                  " last seen | reproduced | reproduce with |", "|---" * 9 + "|"]
        for x in sorted(b.values(), key=lambda x: (x["state"] not in ("new", "reopened"),
                                                    x["title"])):
            lines.append(f"| {x['state']} | {x['title']} | {x['count']}/{x.get('ran', '-')} |"
                         f" {rate(x['kill_rate'], x['kill_rate_ci'])} | {sec(x['median_ttd_s'])}"
                         f" | {when(x.get('first_seen'))} | {when(x.get('last_seen'))} |"
                         f" {x.get('reproduced', '-')} | `{x['command']}` |")
        also = [f"- {x['title']}: also seen: {'; '.join(x['also_seen'])}"
                for x in b.values() if x.get("also_seen")]
        lines += [""] + also if also else []
    else:
        lines.append("\nNo failing trial in the matrix.")
    cn = night["canaries"]
    escaped = [x for x in cn.values() if x["escaped"]]
    lines += ["", f"### Canaries: {sum(x['caught'] for x in cn.values())}/"
              f"{sum(x['runs'] for x in cn.values())} seeded-fault runs caught"
              + (f", **{len(escaped)} ESCAPED: the harness lost detection power**" if escaped
                 else "")]
    if cn:
        lines += ["", "| fault | caught | kill rate (95% CI) | median TTD | detectors that fired |",
                  "|---" * 5 + "|"]
        for x in cn.values():
            lines.append(f"| {x['fault']} | {x['caught']}/{x['runs']} |"
                         f" {rate(x['kill_rate'], x['kill_rate_ci'])} | {sec(x['median_ttd_s'])}"
                         f" | {', '.join(f'{d} {n}' for d, n in sorted(x['detectors'].items()))}"
                         " |")
        for x in escaped:
            lines += [f"- ESCAPED {x['fault']}: `{cmd}`" for cmd in x["escaped_commands"][:2]]
    lines += mutant_lines(night.get("mutants"))
    v = night["vacuity"]
    lines += ["", f"### Vacuity: {len(v)} cell(s) where a race window was never reached"]
    for cell, why in list(v.items())[:MAX_VACUITY]:
        lines.append(f"- {cell}: {'; '.join(why)}")
    if len(v) > MAX_VACUITY:
        lines.append(f"- ... and {len(v) - MAX_VACUITY} more (all of them in report.html)")
    hist = night.get("history") or {}
    perf = hist.get("perf", {})
    bad = {k: p for k, p in perf.items() if p.get("regression")}
    compared = sum(1 for p in perf.values() if "bound" in p)
    lines += ["", "### History", "",
              f"History: {hist.get('path', 'none')}, {hist.get('earlier_nights', 0)} earlier"
              f" night(s). Performance: {compared} cell(s) compared (one-sided 99% t prediction"
              f" bound on log throughput, at least 5 earlier nights, drop >= 10%);"
              f" {len(bad)} regression(s)."]
    for cell, p in bad.items():
        lines.append(f"- **regression** {cell}: {p['tonight']:,.0f} allocator ops/s vs"
                     f" {p['earlier_mean']:,.0f} (bound {p['bound']:,.0f}, -{p['drop']:.0%})")
    fixed = hist.get("fixed", [])
    if fixed:
        lines.append(f"- fixed (not seen in the last {hist['fixed_after']} nights that ran its"
                     " cells): " + "; ".join(f['title'] for f in fixed))
    quiet = hist.get("not_seen", [])
    if quiet:
        lines.append("- not seen tonight, not yet fixed: " + "; ".join(
            f"{q['title']} ({q['quiet_nights']} quiet night(s))" for q in quiet))
    if night.get("interrupted"):
        lines += ["", "INTERRUPTED: the night was stopped; finished trials are kept and the"
                  " history was not updated."]
    return "\n".join(lines) + "\n"


def mutant_lines(mutants):
    """The night's lock mutants: one row per mutant and scheme, then the control."""
    if not mutants:
        return []
    s = mutants["summary"]
    lines = ["", f"### Lock mutants: {s['killed']}/{s['run']} killed"
             + (f", **{len(s['gaps'])} SURVIVED undeclared: the harness lost detection power**"
                if s["gaps"] else ""), "",
             "| mutant | scheme | outcome | killed by | time to detection |", "|---" * 5 + "|"]
    for e in mutants["mutants"]:
        for scheme, r in (e["runs"] or {"-": None}).items():
            lines.append(f"| `{e['id']}` | {scheme} | {e['classification']} |"
                         f" {r['killed_by'] if r and r['killed'] else '-'} |"
                         f" {sec(r['ttd_s']) if r and r['killed'] else '-'} |")
    lines.append("")
    lines.append("Control (unmutated code, same trials): " + (", ".join(
        f"{sc} {outcome(r)}" for sc, r in mutants["control"].items()) or "not run"))
    return lines
